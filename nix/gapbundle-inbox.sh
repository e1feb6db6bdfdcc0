#!/usr/bin/env bash
# gapbundle-inbox: import every bundle (*.gapb) dropped into an inbox folder exactly
# once, then file it under processed/ or failed/ beside a receipt.
#
#   gapbundle-inbox --inbox DIR --state-dir DIR [--settle SECONDS] -- IMPORT-ARGS...
#
# IMPORT-ARGS go to `gapbundle import --json` unchanged (--trust, --threshold,
# --containerd, ...). The NixOS module (nix/module.nix) runs this from a oneshot
# service that a path unit starts whenever a *.gapb file exists in the inbox; the
# script keeps going until the inbox holds no bundle, so files that arrive while it
# runs are handled by the same run.
#
# For each bundle:
#   1. wait until its size and mtime stay the same for --settle seconds (a copy
#      onto the inbox may still be running);
#   2. read its digest with `gapbundle inspect --json` (the head only);
#   3. if STATE/imported/<digest>.json exists, the bundle was imported before: do
#      not import it again, file it as a duplicate;
#   4. otherwise `gapbundle import --json IMPORT-ARGS FILE`; on success record the
#      digest (verified by import) in STATE/imported/ before anything else;
#   5. write DIR/<name>.receipt.json (the import's JSON output, exit code, time)
#      and move the bundle beside it, into processed/ (imported or duplicate) or
#      failed/ (anything else; a failed bundle can be dropped in again).
# The imported/ record lives in the state directory, not in the inbox, so wiping or
# swapping the inbox (a USB disk) never allows a second import.
#
# Every write is a temp file plus rename in the same folder, and bundles move with
# rename(2), so a crash leaves each bundle either in the inbox or filed, never half
# written. A lock (flock on STATE/inbox.lock) serializes runs: a second trigger waits
# and then finds nothing left to do. Names may contain spaces or start with a dash.
# The script exits 0 when every bundle was filed; the receipts say how each went.
set -euo pipefail

usage() {
    echo "usage: gapbundle-inbox --inbox DIR --state-dir DIR [--settle SECONDS] -- IMPORT-ARGS..." >&2
    exit 2
}

inbox=""
state=""
settle=5
while [[ $# -gt 0 ]]; do
    case $1 in
    --inbox)
        [[ $# -ge 2 ]] || usage
        inbox=$2
        shift 2
        ;;
    --state-dir)
        [[ $# -ge 2 ]] || usage
        state=$2
        shift 2
        ;;
    --settle)
        [[ $# -ge 2 && $2 =~ ^[0-9]+$ ]] || usage
        settle=$2
        shift 2
        ;;
    --)
        shift
        break
        ;;
    *) usage ;;
    esac
done
[[ -n $inbox && -n $state ]] || usage
import_args=("$@")

log() { printf 'gapbundle-inbox: %s\n' "$*"; }

mkdir -p -- "$inbox/processed" "$inbox/failed" "$state/imported"
exec 9>>"$state/inbox.lock"
flock 9

# Writes $2 (and a newline) to the file $1 atomically: temp file, then rename.
write_atomic() {
    local target=$1 tmp
    tmp=$(mktemp -- "$(dirname -- "$target")/.gapbundle-inbox.XXXXXXXX")
    printf '%s\n' "$2" >"$tmp"
    chmod 0644 -- "$tmp"
    mv -f -T -- "$tmp" "$target"
}

# Returns once the file $1 stops changing; fails if it disappeared.
wait_settled() {
    local prev="" cur
    while cur=$(stat -c '%s %Y' -- "$1" 2>/dev/null); do
        [[ $cur == "$prev" ]] && return 0
        prev=$cur
        sleep "$settle"
    done
    return 1
}

# Prints a file name in folder $1, based on $2, that neither a bundle nor a
# receipt uses yet.
free_name() {
    local dir=$1 name=$2 stem stamp candidate n=1
    candidate=$name
    if [[ -e $dir/$candidate || -e $dir/$candidate.receipt.json ]]; then
        stem=${name%.gapb}
        stamp=$(date -u +%Y%m%dT%H%M%SZ)
        candidate=$stem.$stamp.gapb
        while [[ -e $dir/$candidate || -e $dir/$candidate.receipt.json ]]; do
            n=$((n + 1))
            candidate=$stem.$stamp-$n.gapb
        done
    fi
    printf '%s\n' "$candidate"
}

is_digest() { [[ $1 =~ ^sha256:[0-9a-f]{64}$ ]]; }

# Imports (or skips) one bundle and files it.
process() {
    local file=$1 name digest="" out rc status result previous="null" dir dest receipt
    name=$(basename -- "$file")
    wait_settled "$file" || return 0

    if out=$(gapbundle inspect --json -- "$file" 2>/dev/null); then
        digest=$(jq -r '.digest // ""' <<<"$out" 2>/dev/null) || digest=""
    fi
    is_digest "$digest" || digest=""

    if [[ -n $digest && -e $state/imported/${digest#sha256:}.json ]]; then
        status=duplicate
        rc=0
        result=null
        previous=$(jq -c . <"$state/imported/${digest#sha256:}.json")
        log "$name: $digest was imported before; not importing it again"
    else
        local err
        err=$(mktemp)
        if out=$(gapbundle import --json "${import_args[@]}" -- "$file" 2>"$err"); then
            rc=0
        else
            rc=$?
        fi
        # The --json output, or null when there is none (e.g. a usage error).
        result=$(jq -c . <<<"$out" 2>/dev/null) || result=""
        [[ -n $result ]] || result=null
        if ((rc == 0)); then
            status=imported
            # The digest import verified wins over the unverified one from inspect.
            local verified
            verified=$(jq -r '.digest // ""' <<<"$result" 2>/dev/null) || verified=""
            is_digest "$verified" && digest=$verified
            log "$name: imported $digest"
        else
            status=failed
            log "$name: import failed with exit code $rc: $(tail -n 1 -- "$err")"
        fi
        previous=$(jq -n --arg s "$(tail -c 8192 -- "$err")" '$s')
        rm -f -- "$err"
    fi

    if [[ $status == failed ]]; then dir=$inbox/failed; else dir=$inbox/processed; fi
    dest=$(free_name "$dir" "$name")
    receipt=$(jq -n \
        --arg bundle "$name" --arg file "$dest" --arg original "$file" \
        --arg digest "$digest" --arg status "$status" --argjson exitCode "$rc" \
        --arg time "$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
        --argjson result "$result" --argjson extra "$previous" \
        '{bundle: $bundle, file: $file, originalPath: $original,
          digest: (if $digest == "" then null else $digest end),
          status: $status, exitCode: $exitCode, time: $time, result: $result}
         + (if $status == "duplicate" then {previousImport: $extra}
            else {stderr: $extra} end)')

    if [[ $status == imported && -n $digest ]]; then
        write_atomic "$state/imported/${digest#sha256:}.json" "$receipt"
    fi
    write_atomic "$dir/$dest.receipt.json" "$receipt"
    mv -T -- "$file" "$dir/$dest"
}

shopt -s nullglob
while :; do
    handled=0
    for file in "$inbox"/*.gapb; do
        [[ -f $file ]] || continue # e.g. a folder named x.gapb: leave it alone
        process "$file"
        handled=1
    done
    ((handled)) || break
done
