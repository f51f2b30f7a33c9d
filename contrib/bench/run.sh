#!/usr/bin/env bash
# Benchmark herd against php-fpm and spawn-fcgi behind nginx, side by side.
#
#   contrib/bench/run.sh [--duration 10s] [--connections 16] [--workers 4]
#                        [--transport unix|tcp] [--out FILE] [--no-build]
#                        [--servers php-fpm,spawn-fcgi,herd] [--keep-tmp]
#
# Every contender serves the same hello-world PHP script with the same number
# of workers, behind one private nginx, and is measured with wrk twice: with
# nginx's upstream keep-alive off and on. Contenders run one after another, so
# only one of them competes with nginx and wrk for the CPU at a time.
#
# Nothing here asserts a timing: the machine may be small and shared, so the
# script measures and prints one markdown table, nothing more.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/../.." && pwd)
HERD=$REPO/target/release/herd
PHP_CGI=/usr/bin/php-cgi8.2
PHP_FPM=php-fpm8.2

DURATION=10s
CONNECTIONS=16
WORKERS=4
TRANSPORT=unix
OUT=
BUILD=1
KEEP_TMP=0
SERVERS=php-fpm,spawn-fcgi,herd

READY_DEADLINE=15   # seconds a contender gets to answer through nginx
STOP_DEADLINE=15    # seconds a manager gets to exit after SIGTERM
CGI_STOP_DEADLINE=3 # seconds a bare php-cgi (spawn-fcgi's) gets
WARMUP=2s

usage() {
    sed -n '2,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

BENCH_NAME=run.sh
CONTENDERS=(php-fpm spawn-fcgi herd)
REQUEST_PATH=hello.php
EXPECT_BODY='Hello, world'
EXPECT_DESC='"Hello, world"'
# shellcheck source=contrib/bench/lib.sh
source "$BENCH_DIR/lib.sh"

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
        [[ $s == php-fpm || $s == spawn-fcgi || $s == herd ]] || die "unknown server in --servers: $s"
    done
}

wants() {
    [[ ,$SERVERS, == *,$1,* ]]
}

# --- setup -------------------------------------------------------------------

# Installs whatever Debian package is missing. php-cgi is found by path, not in
# PATH, because both spawn-fcgi and herd exec it by that path.
install_missing() {
    local missing=()
    command -v "$PHP_FPM" >/dev/null || missing+=(php8.2-fpm)
    [[ -x $PHP_CGI ]] || missing+=(php8.2-cgi)
    missing+=($(missing_common_packages))
    install_packages "${missing[@]}"
}

# Builds herd when the binary is missing or older than any source file.
build_herd() {
    wants herd || return 0
    build_herd_if_stale
}

# The script every contender serves (nginx passes it as SCRIPT_FILENAME).
make_www() {
    mkdir -p "$TMP/www"
    chmod 755 "$TMP/www"
    install -m 644 "$BENCH_DIR/hello.php" "$TMP/www/hello.php"
    SCRIPT_FILENAME=$TMP/www/hello.php
}

# --- contenders --------------------------------------------------------------

start_php_fpm() {
    local dir=$TMP/php-fpm
    mkdir -p "$dir"
    cat >"$dir/php-fpm.conf" <<EOF
[global]
error_log = $dir/error.log
pid = $dir/php-fpm.pid

[bench]
listen = ${ADDR[php-fpm]}
listen.mode = 0666
listen.backlog = $BACKLOG
$(run_as_lines)
pm = static
pm.max_children = $WORKERS
pm.max_requests = 0
EOF
    # -F: foreground, so $! is the master; -R: allowed to run as root.
    setsid "$PHP_FPM" -F -R -y "$dir/php-fpm.conf" >"$dir/stderr.log" 2>&1 &
    MASTER_PID=$!
    PIDS+=("$MASTER_PID")
    WORKER_PIDS=()
    LOGS=("$dir/stderr.log" "$dir/error.log")
}

# Extra [global] lines for herd (e.g. process.priority for the scale case),
# and extra lines for its pool ({dir} is herd's directory; e.g. an
# access.log with %C %M, to measure what the per-request cpu and memory
# readings cost).
HERD_GLOBAL_EXTRA=${HERD_GLOBAL_EXTRA:-}
HERD_POOL_EXTRA=${HERD_POOL_EXTRA:-}

start_herd() {
    local dir=$TMP/herd
    mkdir -p "$dir" "$dir/run"
    cat >"$dir/herd.conf" <<EOF
[global]
error_log = $dir/herd.log
; keep herd's pid, control and worker sockets private to this run
pid = $dir/herd.pid
worker.socket_dir = $dir/run
$HERD_GLOBAL_EXTRA

[bench]
listen = ${ADDR[herd]}
listen.mode = 0666
listen.backlog = $BACKLOG
$(run_as_lines)
pm = static
pm.max_children = $WORKERS
; every nginx connection may be waiting for a worker at once
pm.max_queue = $((CONNECTIONS > 1024 ? CONNECTIONS * 2 : 1024))
command = $PHP_CGI
env[PHP_FCGI_MAX_REQUESTS] = 0
${HERD_POOL_EXTRA//\{dir\}/$dir}
EOF
    start_herd_master "$dir/herd.conf"
}

# Called by bench() in lib.sh.
start_contender() {
    case $1 in
        php-fpm) start_php_fpm ;;
        # PHP_FCGI_CHILDREN unset: each php-cgi serves requests itself
        # instead of forking its own children; PHP_FCGI_MAX_REQUESTS=0: never
        # exits.
        spawn-fcgi) start_spawn_fcgi spawn-fcgi -u PHP_FCGI_CHILDREN PHP_FCGI_MAX_REQUESTS=0 -- "$PHP_CGI" ;;
        herd) start_herd ;;
    esac
}

# --- report ------------------------------------------------------------------

versions() {
    local v=()
    wants php-fpm && v+=("$("$PHP_FPM" -v | head -n 1)")
    wants spawn-fcgi && v+=("$(spawn-fcgi -v | head -n 1)" "$("$PHP_CGI" -v | head -n 1)")
    v+=("$(nginx -v 2>&1)")
    wants herd && v+=("$("$HERD" --version)")
    v+=("$(wrk_version)")
    local IFS=';'
    echo "${v[*]}" | sed 's/;/; /g'
}

report() {
    render_report php-fpm \
        "Benchmark $(date -u '+%Y-%m-%d %H:%M UTC'), nproc $(nproc), transport $TRANSPORT, $WORKERS workers, $CONNECTIONS connections, $DURATION per row (wrk -t2, ${WARMUP} warm-up), hello-world PHP via nginx" \
        "Versions: $(versions)"
}

main() {
    parse_args "$@"
    setup_traps
    install_missing
    build_herd
    make_tmp
    make_www
    assign_addresses
    start_nginx
    local s
    for s in php-fpm spawn-fcgi herd; do
        wants "$s" && bench "$s"
    done
    report
}

main "$@"
