#!/usr/bin/env bash
# Benchmark a Rust FastCGI application under herd and under spawn-fcgi.
#
#   contrib/bench/rust.sh [--duration 10s] [--connections 16] [--workers 4]
#                         [--transport unix|tcp] [--no-build] [--out FILE]
#                         [--servers spawn-fcgi,herd-exec,herd-preload]
#                         [--keep-tmp]
#
# The application is herd's hello example (examples/hello.rs, built on
# herd::worker; it answers "Hello from generation G, pid P"). Three
# contenders run N workers of it:
#
#   spawn-fcgi    spawn-fcgi -F N forks N hello processes on one socket and
#                 exits: no manager in the request path. The baseline.
#   herd-exec     herd, spawn = exec: the master starts each worker from the
#                 command and routes every request to an idle worker.
#   herd-preload  herd, spawn = preload: the command starts once as a
#                 preloader, which forks the N workers; routing as above.
#
# Unless --no-build, `cargo build --release --bin herd --examples` runs first.
# Both binaries are then copied into the run's private directory, so every
# contender runs the same build even when target/ is rebuilt meanwhile.
#
# As run.sh: one private nginx in front, wrk -t2 -cC -dD --latency against
# each contender with nginx's upstream keep-alive off and on, one contender
# at a time, one markdown table. Nothing here asserts a timing: the machine
# may be small and shared.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/../.." && pwd)
HERD_BUILT=$REPO/target/release/herd
HELLO_BUILT=$REPO/target/release/examples/hello
HERD=        # the copies the contenders run, set by copy_binaries
HELLO=

DURATION=10s
CONNECTIONS=16
WORKERS=4
TRANSPORT=unix
OUT=
BUILD=1
KEEP_TMP=0
SERVERS=spawn-fcgi,herd-exec,herd-preload

READY_DEADLINE=15   # seconds a contender gets to answer through nginx
STOP_DEADLINE=15    # seconds a manager gets to exit after SIGTERM
CGI_STOP_DEADLINE=3 # seconds a bare hello worker (spawn-fcgi's) gets
WARMUP=2s

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
}

BENCH_NAME=rust.sh
CONTENDERS=(spawn-fcgi herd-exec herd-preload)
REQUEST_PATH=hello
EXPECT_BODY='Hello from generation*'
EXPECT_DESC='"Hello from generation …"'
# shellcheck source=contrib/bench/lib.sh
source "$BENCH_DIR/lib.sh"
LABEL[herd-exec]='herd (spawn = exec)'
LABEL[herd-preload]='herd (spawn = preload)'

parse_args() {
    while (($#)); do
        case $1 in
            --duration) DURATION=${2:?}; shift ;;
            --connections) CONNECTIONS=${2:?}; shift ;;
            --workers) WORKERS=${2:?}; shift ;;
            --transport) TRANSPORT=${2:?}; shift ;;
            --out) OUT=${2:?}; shift ;;
            --servers) SERVERS=${2:?}; shift ;;
            --no-build) BUILD=0 ;;
            --keep-tmp) KEEP_TMP=1 ;;
            -h|--help) usage; exit 0 ;;
            *) usage >&2; die "unknown argument: $1" ;;
        esac
        shift
    done
    check_common_args
    local s
    for s in ${SERVERS//,/ }; do
        [[ " ${CONTENDERS[*]} " == *" $s "* ]] || die "unknown server in --servers: $s"
    done
}

wants() {
    [[ ,$SERVERS, == *,$1,* ]]
}

# --- setup -------------------------------------------------------------------

install_missing() {
    local missing=()
    missing=($(missing_common_packages))
    install_packages "${missing[@]}"
}

build() {
    if ((BUILD)); then
        command -v cargo >/dev/null || die "cargo is missing (install Rust, or run with --no-build)"
        log "building (cargo build --release --bin herd --examples)"
        (cd "$REPO" && cargo build --release --bin herd --examples) ||
            die "cargo build --release --bin herd --examples failed"
    fi
    [[ -x $HERD_BUILT ]] || die "$HERD_BUILT is missing (run without --no-build)"
    [[ -x $HELLO_BUILT ]] || die "$HELLO_BUILT is missing (run without --no-build)"
}

# The workers run as www-data: the copies sit in the run's directory (0755).
copy_binaries() {
    mkdir -p "$TMP/bin"
    chmod 755 "$TMP/bin"
    install -m 755 "$HERD_BUILT" "$TMP/bin/herd"
    install -m 755 "$HELLO_BUILT" "$TMP/bin/hello"
    HERD=$TMP/bin/herd
    HELLO=$TMP/bin/hello
}

# --- contenders --------------------------------------------------------------

# herd with spawn = $2 ($1 is the contender's name).
start_herd() {
    local name=$1 spawn=$2 dir=$TMP/$1
    mkdir -p "$dir" "$dir/run"
    cat >"$dir/herd.conf" <<EOF
[global]
error_log = $dir/herd.log
control.listen = $dir/ctl.sock
; the sockets between herd and its workers stay private to this run too
worker.socket_dir = $dir/run

[bench]
listen = ${ADDR[$name]}
listen.mode = 0666
$(run_as_lines)
pm = static
pm.max_children = $WORKERS
command = $HELLO
spawn = $spawn
EOF
    start_herd_master "$dir/herd.conf"
}

# Called by bench() in lib.sh.
start_contender() {
    case $1 in
        # HERD_GENERATION unset, as herd's own clear_env would have it: the
        # hello workers say generation 0.
        spawn-fcgi) start_spawn_fcgi spawn-fcgi -u HERD_GENERATION -- "$HELLO" ;;
        herd-exec) start_herd herd-exec exec ;;
        herd-preload) start_herd herd-preload preload ;;
    esac
}

# --- report ------------------------------------------------------------------

# The source tree at the time of the run: its commit, and whether src/,
# examples/ or Cargo.* had uncommitted changes (with --no-build the binaries
# may be older than both).
source_version() {
    local rev dirty=
    rev=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null) || { echo "tree: no git"; return; }
    [[ -z $(git -C "$REPO" status --porcelain -- src examples Cargo.toml Cargo.lock 2>/dev/null) ]] ||
        dirty=" + uncommitted changes"
    echo "tree: git $rev$dirty"
}

versions() {
    local v=()
    wants spawn-fcgi && v+=("$(spawn-fcgi -v | head -n 1)")
    v+=("$(nginx -v 2>&1)")
    v+=("$("$HERD" --version) ($(source_version))")
    command -v rustc >/dev/null && v+=("$(rustc -V)")
    v+=("$(wrk_version)")
    local IFS=';'
    echo "${v[*]}" | sed 's/;/; /g'
}

report() {
    REPORT_FOOTER="spawn-fcgi: \`spawn-fcgi -F $WORKERS\` forks the hello workers on one socket and exits (no manager in the request path). \
herd (spawn = exec): herd's master starts each worker from \`command\` and routes every request. \
herd (spawn = preload): the same, but \`command\` starts once as a preloader that forks the workers. \
Every row: $WORKERS workers of target/release/examples/hello, pm = static."
    render_report spawn-fcgi \
        "Benchmark $(date -u '+%Y-%m-%d %H:%M UTC'), nproc $(nproc), transport $TRANSPORT, $WORKERS workers, $CONNECTIONS connections, $DURATION per row (wrk -t2, ${WARMUP} warm-up), Rust hello example (examples/hello.rs) via nginx" \
        "Versions: $(versions)"
}

main() {
    parse_args "$@"
    setup_traps
    install_missing
    build
    make_tmp
    copy_binaries
    assign_addresses
    start_nginx
    local s
    for s in "${CONTENDERS[@]}"; do
        wants "$s" && bench "$s"
    done
    report
}

main "$@"
