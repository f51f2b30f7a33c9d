#!/usr/bin/env bash
# Runs every chaos scenario of this directory, one after the other, and
# prints their tables and a summary.
#
#   contrib/chaos/run-all.sh [--quick] [--kill-duration D] [--reloads N]
#                            [--soak-duration D] [--soak-requests N]
#                            [--only NAME,...] [--out FILE] [--no-build]
#                            [--keep-tmp]
#
# Defaults are the issue's: 60 s of kill -9 on workers, a storm of 20
# reloads, 3 master kills, every hostile-client phase, and a soak of 30
# minutes or 10 million requests, whichever comes first. --quick: 15 s of
# kills and a 60 s soak. --only runs some of: kill9-workers, reload-storm,
# kill9-master, hostile-clients, soak. Durations: 90, 90s, 15m, 1h.
#
# Each scenario builds nothing (herd is built here once, release), stops
# every process it started (by pid) and checks that none is left. The
# exit status is 0 when no scenario flagged anything.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
KILL_DURATION=60s
RELOADS=20
SOAK_DURATION=30m
SOAK_REQUESTS=10000000
ONLY=kill9-workers,reload-storm,kill9-master,hostile-clients,soak
OUT=
BUILD=1
KEEP=()

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }

while (($#)); do
    case $1 in
        --quick) KILL_DURATION=15s; SOAK_DURATION=60s ;;
        --kill-duration) KILL_DURATION=${2:?}; shift ;;
        --reloads) RELOADS=${2:?}; shift ;;
        --soak-duration) SOAK_DURATION=${2:?}; shift ;;
        --soak-requests) SOAK_REQUESTS=${2:?}; shift ;;
        --only) ONLY=${2:?}; shift ;;
        --out) OUT=${2:?}; shift ;;
        --no-build) BUILD=0 ;;
        --keep-tmp) KEEP=(--keep-tmp) ;;
        -h|--help) usage; exit 0 ;;
        *) echo "run-all.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

if ((BUILD)); then
    (cd "$REPO" && cargo build --release --bins --examples)
fi

TMP=$(mktemp -d /tmp/herd-chaos-all.XXXXXX)
CHILD=
# A scenario stops what it started when it gets SIGTERM; pass it on.
on_signal() {
    [[ -z $CHILD ]] || kill -TERM "$CHILD" 2>/dev/null || true
    [[ -z $CHILD ]] || wait "$CHILD" 2>/dev/null || true
    rm -rf "$TMP"
    exit 130
}
trap on_signal INT TERM HUP

declare -A ARGS=(
    [kill9-workers]="--duration $KILL_DURATION"
    [reload-storm]="--reloads $RELOADS"
    [kill9-master]=""
    [hostile-clients]=""
    [soak]="--duration $SOAK_DURATION --requests $SOAK_REQUESTS"
)
SUMMARY=()
FAILED=0
for name in kill9-workers reload-storm kill9-master hostile-clients soak; do
    [[ ",$ONLY," == *",$name,"* ]] || continue
    echo "run-all.sh: $name ${ARGS[$name]}" >&2
    started=$(date +%s)
    rc=0
    # shellcheck disable=SC2086 # the knobs are words
    python3 "$HERE/$name.py" --no-build ${ARGS[$name]} "${KEEP[@]}" --out "$TMP/tables.md" >&2 &
    CHILD=$!
    wait "$CHILD" || rc=$?
    CHILD=
    took=$(($(date +%s) - started))
    case $rc in
        0) verdict=PASS ;;
        1) verdict=FLAGGED; FAILED=1 ;;
        *) verdict="ERROR (exit $rc)"; FAILED=1 ;;
    esac
    SUMMARY+=("| $name | ${ARGS[$name]:--} | $verdict | ${took} s |")
done

{
    echo
    echo "### chaos summary"
    echo
    echo "| scenario | knobs | result | took |"
    echo "|---|---|---|---|"
    printf '%s\n' "${SUMMARY[@]}"
} >>"$TMP/tables.md"
echo
echo "=================================================================="
cat "$TMP/tables.md"
[[ -z $OUT ]] || cp "$TMP/tables.md" "$OUT"
rm -rf "$TMP"
exit "$FAILED"
