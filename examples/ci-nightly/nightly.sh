#!/usr/bin/env bash
# A nightly CI job: build the bundle the spec and its committed lock describe, check
# it, and leave it with a JSON report for the next job (upload, publish, ...).
#
#   SPEC=bundle.yaml KEY=/run/secrets/release.sec TRUST=keys/release.pub \
#   CACHE=.cache/gapbundle OUT=out examples/ci-nightly/nightly.sh [CREATE-FLAGS...]
#
# CREATE-FLAGS are passed to `gapbundle create` as they are: how this network
# reaches its registries (--registries ci/registries.yaml, --registry-ca FILE,
# --registry-auth HOST=USER:PASS, --insecure-registry HOST, --retries N, ...).
#
# SPEC   the bundle spec; its lock (SPEC with .lock) must be committed
# KEY    the signing key (a CI secret written to a file; never commit it)
# TRUST  its public half, to verify the result the way the far side will
# CACHE  blob cache kept between runs by the CI system (restore, run, save)
# OUT    where the bundle and reports go
# GAPBUNDLE  the binary (default: gapbundle on PATH)
#
# Exit status: 0 bundle built and verified; 4 the spec, lock or key is wrong, or the
# lock is out of date (`--locked` refused to re-resolve: someone must run create
# without --locked, with --update to move tags, and commit the new lock); 5 a registry
# or chart repository failed: unreachable or timed out (worth a retry), or refused
# access, or its TLS or plain HTTP does not fit the flags (fix CREATE-FLAGS; a retry
# will not help): the error says which; 3 the fresh bundle did not verify (a bug: report it);
# anything else: failed. These are gapbundle's own exit codes, passed through.
set -euo pipefail

spec=${SPEC:-bundle.yaml}
key=${KEY:?KEY must name the secret signing key file}
trust=${TRUST:?TRUST must name the public key file}
cache=${CACHE:-.cache/gapbundle}
out=${OUT:-out}
gapbundle=${GAPBUNDLE:-gapbundle}

mkdir -p -- "$out" "$cache"

# The bundle's timestamp: the commit's, so a rerun of the same commit gives the same
# bytes (with the same lock and key); 0 outside git.
if [[ -z ${SOURCE_DATE_EPOCH:-} ]]; then
    SOURCE_DATE_EPOCH=$(git -C "$(dirname -- "$spec")" log -1 --format=%ct 2>/dev/null || echo 0)
fi
export SOURCE_DATE_EPOCH

bundle=$out/nightly.gapb
status=0
"$gapbundle" create -f "$spec" -o "$bundle" --key "$key" \
    --locked --json --cache "$cache" "$@" >"$out/create.json" || status=$?

case $status in
0) ;;
4)
    echo "nightly: bad input or the lock is out of date:" >&2
    jq -r .error "$out/create.json" >&2
    echo "nightly: if the lock is what changed, run 'gapbundle create -f $spec ...' without --locked (with --update to move tags) and commit the new lock" >&2
    exit 4
    ;;
5)
    # Not "retry later" by itself: refused access, an unknown CA or a plain-HTTP
    # registry is configuration, and the error names the flag or file that fixes it.
    echo "nightly: a registry or chart repository failed:" >&2
    jq -r .error "$out/create.json" >&2
    echo "nightly: if it could not be reached or timed out, run the job again later; otherwise fix how it is reached (flags after the script's name, or GAPBUNDLE_REGISTRIES)" >&2
    exit 5
    ;;
*)
    echo "nightly: create failed with exit code $status:" >&2
    jq -r '.error // empty' "$out/create.json" >&2 || true
    exit "$status"
    ;;
esac

# Verify like the far side will, then name the file after what it holds.
"$gapbundle" verify "$bundle" --trust "$trust" --json >"$out/verify.json"
"$gapbundle" inspect "$bundle" --json >"$out/inspect.json"
name=$(jq -r '"\(.name)-\(.version)"' "$out/inspect.json")
final=$out/$name-$(date -u +%Y%m%d).gapb
mv -f -- "$bundle" "$final"
(cd -- "$out" && sha256sum -- "$(basename -- "$final")" >"$(basename -- "$final").sha256")

jq -n --slurpfile create "$out/create.json" --slurpfile inspect "$out/inspect.json" \
    --arg bundle "$final" \
    '{bundle: $bundle, digest: $create[0].digest, size: $create[0].size,
      fetched: $create[0].fetched, cachedBlobs: $create[0].cachedBlobs,
      images: [$inspect[0].images[]?.ref], signers: $create[0].signers}' >"$out/report.json"

if [[ -n ${GITHUB_STEP_SUMMARY:-} ]]; then
    jq -r '"### Nightly bundle\n\n`\(.bundle)` \(.digest), \(.size) bytes, \(.fetched.blobs) blobs fetched"' \
        "$out/report.json" >>"$GITHUB_STEP_SUMMARY"
fi
cat "$out/report.json"
