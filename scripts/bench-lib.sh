# Shared helpers of the scripts/bench-* parts; sourced, never run. What they share:
# one release build, one work folder removed at exit, the clock (in ms) for wall time, GNU time for peak
# RSS, commands of a comparison run in turn (A B A B ...) so that a machine whose
# speed drifts slows both alike, and one result line per figure that `scripts/bench`
# gathers into a single table.
#
#   source "$(dirname "$0")/bench-lib.sh"
#   bench_init NAME DEFAULT_RUNS [WORK_PARENT]
#       sets root (the repository), runs (RUNS or DEFAULT_RUNS), gb (the release
#       binary, built once), work (a new folder under WORK_PARENT, default $TMPDIR or
#       /tmp; removed at exit after the commands given to on_exit)
#   need TOOL...               fails, naming scripts/install-test-deps, if one is missing
#   on_exit CMD                runs CMD (a string) at exit, before the work folder goes
#   once LABEL BEFORE CMD      runs BEFORE (untimed; a string), then `bash -c CMD` once;
#                              prints "WALL_S PEAK_RSS_KIB"; on failure prints CMD's
#                              stderr and exits. With BENCH_SYNC=1, a sync (untimed)
#                              comes between: an fsync at the end of CMD must not wait
#                              for what the command before it left unwritten
#   measure LABEL BEFORE CMD   CMD $runs times; prints "MEDIAN_WALL_S MAX_PEAK_RSS_KIB"
#   pair A_LABEL A_BEFORE A_CMD B_LABEL B_BEFORE B_CMD
#                              A and B in turn, $runs times each; sets pair_a, pair_b
#                              ("MEDIAN_WALL_S MAX_PEAK_RSS_KIB") and pair_ratio (the
#                              median of the per-pair A/B wall-time ratios)
#   result WORK RATIO TARGET OURS [OTHER]
#                              prints one figure and, when BENCH_RESULTS names a file,
#                              appends it there as a tab-separated row: WORK, RATIO (a
#                              number), TARGET ("<= 0.5", "< 0.05", "keep <= 0.8" or
#                              "-"), OURS and OTHER ("WALL_S PEAK_RSS_KIB" or "-")
#
# CMD strings run in `bash -c`: export the variables they use. Every command's stdout
# is discarded and its stderr kept in $work/LABEL.err.

bench_init() {
  local name=$1 default_runs=$2 parent=${3:-${TMPDIR:-/tmp}}
  root=$(cd "$(dirname "${BASH_SOURCE[1]}")/.." && pwd)
  runs=${RUNS:-$default_runs}
  need /usr/bin/time python3
  cd "$root"
  if [ -z "${BENCH_BUILT:-}" ]; then
    cargo build --release --locked --quiet
  fi
  gb="$root/target/release/gapbundle"
  work=$(mktemp -d "$parent/gapbundle-bench-$name.XXXXXX")
  bench_exit=()
  trap bench_cleanup EXIT
  export root runs gb work
}

need() {
  local t
  for t in "$@"; do
    command -v "$t" >/dev/null || {
      echo "missing $t: run scripts/install-test-deps (GNU time: apt-get install time)" >&2
      exit 1
    }
  done
}

on_exit() { bench_exit+=("$1"); }

bench_cleanup() {
  local c
  for c in "${bench_exit[@]}"; do eval "$c" || true; done
  chmod -R u+w "$work" 2>/dev/null || true
  rm -rf "$work"
}

once() {
  local label=$1 before=$2 cmd=$3
  [ -n "$before" ] && eval "$before"
  [ -n "${BENCH_SYNC:-}" ] && sync
  # The wall time from the clock's nanoseconds: GNU time's %e has 10 ms steps,
  # too coarse for a rerun of 80 ms (it showed 0.08 or 0.09). %M, the peak RSS,
  # is still GNU time's.
  local t0 t1
  t0=$(date +%s%N)
  /usr/bin/time -f '%M' -o "$work/time.out" bash -c "$cmd" >/dev/null 2>"$work/$label.err" \
    || { echo "$label failed:" >&2; cat "$work/$label.err" >&2; exit 1; }
  t1=$(date +%s%N)
  echo "$(( (t1 - t0) / 1000000 )) $(cat "$work/time.out")" | awk '{ printf "%.3f %s\n", $1 / 1000, $2 }'
}

# summary "W R W R ...": prints "MEDIAN_WALL_S MAX_PEAK_RSS_KIB".
summary() {
  python3 - "$1" <<'PY'
import statistics, sys
v = sys.argv[1].split()
walls, rss = [float(x) for x in v[0::2]], [int(x) for x in v[1::2]]
print(f"{statistics.median(walls):.3f} {max(rss)}")
PY
}

measure() {
  local label=$1 before=$2 cmd=$3 v=() i
  for i in $(seq "$runs"); do v+=($(once "$label" "$before" "$cmd")); done
  summary "${v[*]}"
}

pair() {
  local a=() b=() r=() i x y
  for i in $(seq "$runs"); do
    x=$(once "$1" "$2" "$3")
    y=$(once "$4" "$5" "$6")
    a+=($x); b+=($y)
    echo "   $1 ${x%% *} s, $4 ${y%% *} s" >&2
    r+=("$(python3 -c 'import sys; print(float(sys.argv[1]) / max(float(sys.argv[2]), 1e-3))' "${x%% *}" "${y%% *}")")
  done
  pair_a=$(summary "${a[*]}")
  pair_b=$(summary "${b[*]}")
  pair_ratio=$(python3 -c 'import statistics, sys; print(f"{statistics.median(map(float, sys.argv[1:])):.3f}")' "${r[@]}")
}

result() {
  local row
  row=$(printf '%s\t%s\t%s\t%s\t%s' "$1" "$2" "$3" "$4" "${5:--}")
  python3 "$(dirname "${BASH_SOURCE[0]}")/bench-table.py" --one "$row"
  if [ -n "${BENCH_RESULTS:-}" ]; then printf '%s\n' "$row" >> "$BENCH_RESULTS"; fi
}
