#!/usr/bin/env bash
# Every benchmark, one command, one report: php-fpm, spawn-fcgi (no manager
# in the path) and herd with php-cgi behind nginx with wrk, keep-alive off
# and on, with 4 and 32 workers; a real application (DokuWiki) under
# php-fpm, spawn-fcgi and herd's engines, with 8 and 32 PHP processes and
# their total memory; the reload and broken-deploy scenarios (with the
# latency-over-time plot); the Rust example under herd and spawn-fcgi; and
# the scale case, 256 workers and 5,000 connections.
#
#   contrib/bench/all.sh [--duration 10s] [--out FILE]
#
# The machine is measured as it is: on a shared one, run it twice.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/../.." && pwd)
DURATION=10s
OUT=$REPO/target/bench-report.md
while (($#)); do
    case $1 in
        --duration) DURATION=${2:?}; shift ;;
        --out) OUT=${2:?}; shift ;;
        *) echo "usage: $0 [--duration 10s] [--out FILE]" >&2; exit 2 ;;
    esac
    shift
done

(cd "$REPO" && cargo build --release --bin herd --examples)
mkdir -p "$(dirname "$OUT")"
: >"$OUT"
section() {
    printf '\n## %s\n\n' "$1" | tee -a "$OUT"
}

section "PHP hello world, 4 workers, 16 connections (unix sockets)"
"$BENCH_DIR/run.sh" --no-build --duration "$DURATION" --workers 4 --connections 16 | tee -a "$OUT"
section "PHP hello world, 4 workers, 16 connections (TCP)"
"$BENCH_DIR/run.sh" --no-build --duration "$DURATION" --workers 4 --connections 16 --transport tcp | tee -a "$OUT"
section "PHP hello world, 32 workers, 64 connections (unix sockets)"
"$BENCH_DIR/run.sh" --no-build --duration "$DURATION" --workers 32 --connections 64 | tee -a "$OUT"
section "A real application: DokuWiki, 8 and 32 PHP processes (unix sockets)"
"$BENCH_DIR/app.sh" --no-build --duration "$DURATION" --workers 8,32 | tee -a "$OUT"
section "Reload and broken deploy under mixed load"
"$BENCH_DIR/reload.sh" --no-build | tee -a "$OUT"
section "Rust hello example (herd::worker)"
"$BENCH_DIR/rust.sh" --no-build --duration "$DURATION" | tee -a "$OUT"
section "Scale: 256 workers, 5,000 connections (herd's master at process.priority = -10)"
# With 256 busy workers the master, which relays every request, would wait
# its turn behind them; process.priority (php-fpm's directive) favours it.
HERD_GLOBAL_EXTRA="process.priority = -10" \
    "$BENCH_DIR/run.sh" --no-build --duration "$DURATION" --workers 256 --connections 5000 | tee -a "$OUT"
echo "report written to $OUT" >&2
