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

TMP=
PIDS=()             # every process we started (or that spawn-fcgi forked for us)
FAILED=0

usage() {
    sed -n '2,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

die() {
    echo "run.sh: $*" >&2
    FAILED=1
    exit 1
}

log() {
    echo "run.sh: $*" >&2
}

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
    [[ $TRANSPORT == unix || $TRANSPORT == tcp ]] || die "--transport must be unix or tcp"
    [[ $WORKERS =~ ^[1-9][0-9]*$ ]] || die "--workers must be a positive integer"
    # wrk needs at least as many connections as threads (-t2).
    [[ $CONNECTIONS =~ ^[0-9]+$ ]] && ((CONNECTIONS >= 2)) || die "--connections must be at least 2"
    [[ $DURATION =~ ^[0-9]+[smh]?$ ]] || die "--duration must look like 10s, 1m or 30"
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
    command -v nginx >/dev/null || missing+=(nginx)
    command -v spawn-fcgi >/dev/null || missing+=(spawn-fcgi)
    command -v wrk >/dev/null || missing+=(wrk)
    command -v curl >/dev/null || missing+=(curl)
    command -v python3 >/dev/null || missing+=(python3)
    ((${#missing[@]})) || return 0
    ((EUID == 0)) || die "missing packages (${missing[*]}) and not root to install them"
    log "installing ${missing[*]}"
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
}

# Builds herd when the binary is missing or older than any source file.
build_herd() {
    wants herd || return 0
    if ((BUILD)); then
        if [[ ! -x $HERD ]] || [[ -n $(find "$REPO/src" "$REPO/Cargo.toml" "$REPO/Cargo.lock" \
                -newer "$HERD" -print 2>/dev/null | head -n 1) ]]; then
            log "building herd (cargo build --release)"
            (cd "$REPO" && cargo build --release) || die "cargo build --release failed"
        fi
    fi
    [[ -x $HERD ]] || die "$HERD is missing (run without --no-build)"
}

# Root is needed to run the workers as www-data, like a real deployment;
# without root everything simply runs as the current user.
run_as_lines() {
    if ((EUID == 0)); then
        printf 'user = www-data\ngroup = www-data\n'
    fi
}

make_tmp() {
    TMP=$(mktemp -d /tmp/herd-bench.XXXXXX)
    # nginx workers and PHP workers run as www-data: they must reach the
    # sockets and read the script.
    chmod 755 "$TMP"
    mkdir -p "$TMP/www" "$TMP/nginx" "$TMP/wrk"
    chmod 755 "$TMP/www" "$TMP/nginx" "$TMP/wrk"
    install -m 644 "$BENCH_DIR/hello.php" "$TMP/www/hello.php"
    : >"$TMP/rows.tsv"
}

# Asks the kernel for a free loopback port. Another process could take it
# before we bind it; on a private bench machine that is unlikely enough.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Where contender $1 listens, in nginx's and in the contender's own syntax.
declare -A ADDR=()
assign_addresses() {
    local s
    for s in php-fpm spawn-fcgi herd; do
        if [[ $TRANSPORT == unix ]]; then
            ADDR[$s]=$TMP/$s.sock
        else
            ADDR[$s]=127.0.0.1:$(free_port)
        fi
    done
}

nginx_addr() {
    if [[ $TRANSPORT == unix ]]; then echo "unix:${ADDR[$1]}"; else echo "${ADDR[$1]}"; fi
}

# --- processes ---------------------------------------------------------------

# True while $1 runs. A zombie counts as gone: orphans (spawn-fcgi's
# children) are reaped by init, not by us, and kill -0 still finds them.
alive() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ ${stat:0:1} != Z ]]
}

# Direct children of $1 (by parent pid, never by name).
children_of() {
    ps -o pid= --ppid "$1" 2>/dev/null | tr -d ' ' || true
}

# SIGTERM every pid given and wait up to $deadline seconds (first argument)
# for them to exit; then SIGKILL them and what they had forked.
stop_pids() {
    local deadline=$1 pid i kids=() left
    shift
    for pid in "$@"; do
        alive "$pid" || continue
        kids+=($(children_of "$pid"))
        kill -TERM "$pid" 2>/dev/null || true
    done
    for ((i = 0; i < deadline * 10; i++)); do
        left=0
        for pid in "$@"; do alive "$pid" && left=1; done
        ((left)) || break
        sleep 0.1
    done
    for pid in "$@"; do
        if alive "$pid"; then
            log "pid $pid still running ${deadline}s after SIGTERM; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        # Reap it when it is our child, so it does not linger as a zombie.
        wait "$pid" 2>/dev/null || true
    done
    # Workers a killed master left behind.
    for pid in "${kids[@]}"; do
        alive "$pid" && kill -KILL "$pid" 2>/dev/null || true
    done
    # SIGKILL is not instant: give the kernel a moment, so that nothing of
    # ours still shows up once we say we are done.
    for ((i = 0; i < 20; i++)); do
        left=0
        for pid in "$@" "${kids[@]}"; do alive "$pid" && left=1; done
        ((left)) || break
        sleep 0.1
    done
    return 0
}

cleanup() {
    local rc=$? pid
    set +e
    trap - EXIT
    ((rc)) && FAILED=1
    # Managers and workers before nginx, so nothing logs a lost upstream.
    local others=()
    for pid in "${PIDS[@]}"; do [[ $pid == "${NGINX_PID:-}" ]] || others+=("$pid"); done
    ((${#others[@]} == 0)) || stop_pids "$STOP_DEADLINE" "${others[@]}"
    [[ -z ${NGINX_PID:-} ]] || stop_pids "$STOP_DEADLINE" "$NGINX_PID"
    if [[ -n $TMP && -d $TMP ]]; then
        if ((FAILED || KEEP_TMP)); then
            log "logs and configs kept in $TMP"
        else
            rm -rf "$TMP"
        fi
    fi
}

forget_pid() {
    local keep=() p
    for p in "${PIDS[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done
    PIDS=("${keep[@]}")
}

# Prints the last lines of each log of a contender that failed.
show_logs() {
    local f
    for f in "$@"; do
        [[ -s $f ]] || continue
        echo "----- tail $f" >&2
        tail -n 20 "$f" >&2
    done
}

# --- nginx -------------------------------------------------------------------

# One nginx for every contender: /<server>/off/ reaches it over a new
# connection per request, /<server>/on/ over kept-alive connections.
write_nginx_conf() {
    local s user_line=
    ((EUID == 0)) && user_line="user www-data;"
    {
        cat <<EOF
$user_line
worker_processes 1;
daemon off;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $TMP/nginx/body;
    fastcgi_temp_path $TMP/nginx/fastcgi;
    proxy_temp_path $TMP/nginx/proxy;
    uwsgi_temp_path $TMP/nginx/uwsgi;
    scgi_temp_path $TMP/nginx/scgi;
    # wrk's connections to nginx stay open for the whole run in every row.
    keepalive_requests 1000000;
EOF
        for s in php-fpm spawn-fcgi herd; do
            cat <<EOF
    upstream ${s}_off { server $(nginx_addr "$s"); }
    upstream ${s}_on { server $(nginx_addr "$s"); keepalive 32; }
EOF
        done
        cat <<EOF
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location = /ready { return 204; }
EOF
        for s in php-fpm spawn-fcgi herd; do
            cat <<EOF
        location /$s/off/ {
            include /etc/nginx/fastcgi_params;
            fastcgi_param SCRIPT_FILENAME $TMP/www/hello.php;
            fastcgi_pass ${s}_off;
        }
        location /$s/on/ {
            include /etc/nginx/fastcgi_params;
            fastcgi_param SCRIPT_FILENAME $TMP/www/hello.php;
            fastcgi_keep_conn on;
            fastcgi_pass ${s}_on;
        }
EOF
        done
        echo "    }"
        echo "}"
    } >"$TMP/nginx/nginx.conf"
}

start_nginx() {
    NGINX_PORT=$(free_port)
    write_nginx_conf
    # -e: the error log before the config is read, so nothing touches /var/log.
    nginx -t -q -e "$TMP/nginx/error.log" -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" \
        >"$TMP/nginx/stderr.log" 2>&1 || { show_logs "$TMP/nginx/stderr.log" "$TMP/nginx/error.log"; die "nginx config test failed"; }
    nginx -e "$TMP/nginx/error.log" -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" \
        >>"$TMP/nginx/stderr.log" 2>&1 &
    NGINX_PID=$!
    PIDS+=("$NGINX_PID")
    local i
    for ((i = 0; i < READY_DEADLINE * 10; i++)); do
        curl -sf -o /dev/null --max-time 1 "http://127.0.0.1:$NGINX_PORT/ready" && return 0
        alive "$NGINX_PID" || break
        sleep 0.1
    done
    show_logs "$TMP/nginx/stderr.log" "$TMP/nginx/error.log"
    die "nginx did not come up on 127.0.0.1:$NGINX_PORT within ${READY_DEADLINE}s"
}

# --- contenders --------------------------------------------------------------
# Each start_* sets MASTER_PID (the process whose CPU and RSS would be
# measured), WORKER_PIDS (only for spawn-fcgi, whose children are orphans)
# and LOGS (what to show when it fails).

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
$(run_as_lines)
pm = static
pm.max_children = $WORKERS
pm.max_requests = 0
EOF
    # -F: foreground, so $! is the master; -R: allowed to run as root.
    "$PHP_FPM" -F -R -y "$dir/php-fpm.conf" >"$dir/stderr.log" 2>&1 &
    MASTER_PID=$!
    PIDS+=("$MASTER_PID")
    WORKER_PIDS=()
    LOGS=("$dir/stderr.log" "$dir/error.log")
}

# spawn-fcgi forks N php-cgi processes on one socket and exits (-n works only
# for a single child), so there is no manager in the request path; the
# children's pids come from its output.
start_spawn_fcgi() {
    local dir=$TMP/spawn-fcgi listen=() user=() pid
    mkdir -p "$dir"
    if [[ $TRANSPORT == unix ]]; then
        listen=(-s "${ADDR[spawn-fcgi]}" -M 0666)
    else
        listen=(-a "${ADDR[spawn-fcgi]%:*}" -p "${ADDR[spawn-fcgi]##*:}")
    fi
    ((EUID == 0)) && user=(-u www-data -g www-data)
    LOGS=("$dir/stderr.log")
    # PHP_FCGI_CHILDREN unset: each php-cgi serves requests itself instead of
    # forking its own children; PHP_FCGI_MAX_REQUESTS=0: never exits.
    env -u PHP_FCGI_CHILDREN PHP_FCGI_MAX_REQUESTS=0 \
        spawn-fcgi "${listen[@]}" "${user[@]}" -F "$WORKERS" -- "$PHP_CGI" \
        >"$dir/stderr.log" 2>&1 </dev/null &
    pid=$!
    local i
    for ((i = 0; i < READY_DEADLINE * 10; i++)); do
        alive "$pid" || break
        sleep 0.1
    done
    alive "$pid" && { kill -KILL "$pid"; show_logs "${LOGS[@]}"; die "spawn-fcgi did not finish forking within ${READY_DEADLINE}s"; }
    local rc=0
    wait "$pid" || rc=$?
    WORKER_PIDS=()
    while read -r pid; do
        WORKER_PIDS+=("$pid")
        PIDS+=("$pid")
    done < <(sed -n 's/.*child spawned successfully: PID: \([0-9]\+\).*/\1/p' "$dir/stderr.log")
    if ((rc != 0 || ${#WORKER_PIDS[@]} != WORKERS)); then
        show_logs "${LOGS[@]}"
        die "spawn-fcgi exited with $rc and spawned ${#WORKER_PIDS[@]} of $WORKERS children"
    fi
    # With no manager, "alive" means the first child.
    MASTER_PID=${WORKER_PIDS[0]}
}

start_herd() {
    local dir=$TMP/herd
    mkdir -p "$dir" "$dir/run"
    cat >"$dir/herd.conf" <<EOF
[global]
error_log = $dir/herd.log
; keep herd's pid, control and worker sockets private to this run
pid = $dir/herd.pid
worker.socket_dir = $dir/run

[bench]
listen = ${ADDR[herd]}
listen.mode = 0666
$(run_as_lines)
pm = static
pm.max_children = $WORKERS
command = $PHP_CGI
env[PHP_FCGI_MAX_REQUESTS] = 0
EOF
    "$HERD" run -c "$dir/herd.conf" >"$dir/stderr.log" 2>&1 </dev/null &
    MASTER_PID=$!
    PIDS+=("$MASTER_PID")
    WORKER_PIDS=()
    LOGS=("$dir/stderr.log" "$dir/herd.log")
}

stop_contender() {
    local pid
    if ((${#WORKER_PIDS[@]})); then
        # php-cgi ignores SIGTERM while it waits on a kept-alive connection
        # (its read loop retries on EINTR), so it gets a short grace only.
        stop_pids "$CGI_STOP_DEADLINE" "${WORKER_PIDS[@]}"
        for pid in "${WORKER_PIDS[@]}"; do forget_pid "$pid"; done
    else
        stop_pids "$STOP_DEADLINE" "$MASTER_PID"
        forget_pid "$MASTER_PID"
    fi
    # A unix socket left behind by a killed manager is harmless: each
    # contender has its own path.
}

# True when nginx answers $1 with 200 and the script's exact body.
probe() {
    local body code
    body=$(curl -s --max-time 2 -w '\n%{http_code}' "$1" 2>/dev/null) || return 1
    code=${body##*$'\n'}
    body=${body%$'\n'*}
    body=${body%$'\n'}  # the script's own trailing newline
    [[ $code == 200 && $body == "Hello, world" ]]
}

# Polls both locations of contender $1 until they answer, it dies, or the
# deadline passes.
wait_ready() {
    local s=$1 i mode ok
    for ((i = 0; i < READY_DEADLINE * 10; i++)); do
        ok=1
        for mode in off on; do
            probe "http://127.0.0.1:$NGINX_PORT/$s/$mode/hello.php" || { ok=0; break; }
        done
        ((ok)) && return 0
        if ! alive "$MASTER_PID"; then
            show_logs "${LOGS[@]}" "$TMP/nginx/error.log"
            die "$s exited before it served a request"
        fi
        sleep 0.1
    done
    show_logs "${LOGS[@]}" "$TMP/nginx/error.log"
    echo "----- last answer from nginx for /$s/$mode/hello.php:" >&2
    curl -s -i --max-time 2 "http://127.0.0.1:$NGINX_PORT/$s/$mode/hello.php" >&2 || true
    die "$s did not answer 200 \"Hello, world\" through nginx within ${READY_DEADLINE}s"
}

# --- measuring ---------------------------------------------------------------

# utime + stime of pid $1 in clock ticks (fields 14 and 15 of /proc/pid/stat;
# the command name in field 2 may hold spaces, so count after its ')').
cpu_ticks() {
    local stat rest f
    stat=$(<"/proc/$1/stat")
    rest=${stat##*) }
    read -ra f <<<"$rest"
    echo $((f[11] + f[12]))
}

rss_kb() {
    awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"
}

# Runs wrk against contender $1 in keep-alive mode $2 and appends a row.
measure() {
    local s=$1 mode=$2 url out before=- after ticks=- rss=-
    url=http://127.0.0.1:$NGINX_PORT/$s/$mode/hello.php
    out=$TMP/wrk/$s-$mode.txt
    log "$s, keep-alive $mode: warm-up $WARMUP, then $DURATION"
    wrk -t2 -c"$CONNECTIONS" -d"$WARMUP" "$url" >"$out.warmup" 2>&1 || true
    # Only herd's master sits in the request path; its cost is what we want.
    [[ $s == herd ]] && before=$(cpu_ticks "$MASTER_PID")
    wrk -t2 -c"$CONNECTIONS" -d"$DURATION" --latency "$url" >"$out" 2>&1 ||
        { show_logs "$out"; die "wrk failed against $s ($mode)"; }
    alive "$MASTER_PID" || { show_logs "${LOGS[@]}"; die "$s died during the $mode run"; }
    if [[ $s == herd ]]; then
        after=$(cpu_ticks "$MASTER_PID")
        ticks=$((after - before))
        rss=$(rss_kb "$MASTER_PID")
    fi
    printf '%s\t%s\t%s\t%s\t%s\n' "$s" "$mode" "$out" "$ticks" "$rss" >>"$TMP/rows.tsv"
}

bench() {
    local s=$1
    log "starting $s"
    case $s in
        php-fpm) start_php_fpm ;;
        spawn-fcgi) start_spawn_fcgi ;;
        herd) start_herd ;;
    esac
    wait_ready "$s"
    measure "$s" off
    measure "$s" on
    log "stopping $s"
    stop_contender
}

# --- report ------------------------------------------------------------------

versions() {
    local v=()
    wants php-fpm && v+=("$("$PHP_FPM" -v | head -n 1)")
    wants spawn-fcgi && v+=("$(spawn-fcgi -v | head -n 1)" "$("$PHP_CGI" -v | head -n 1)")
    v+=("$(nginx -v 2>&1)")
    wants herd && v+=("$("$HERD" --version)")
    v+=("$(wrk -v 2>&1 | head -n 1 | cut -d' ' -f1-2)")
    local IFS=';'
    echo "${v[*]}" | sed 's/;/; /g'
}

report() {
    local header
    header="Benchmark $(date -u '+%Y-%m-%d %H:%M UTC'), nproc $(nproc), transport $TRANSPORT, $WORKERS workers, $CONNECTIONS connections, $DURATION per row (wrk -t2, ${WARMUP} warm-up), hello-world PHP via nginx"
    # report.py fails when a wrk output could not be read; print what it
    # could make of the run all the same, then fail.
    local rc=0
    python3 "$BENCH_DIR/report.py" "$TMP/rows.tsv" --clk-tck "$(getconf CLK_TCK)" \
        --header "$header" --header "Versions: $(versions)" >"$TMP/report.md" || rc=$?
    cat "$TMP/report.md"
    [[ -z $OUT ]] || cp "$TMP/report.md" "$OUT"
    ((rc == 0)) || die "some wrk output could not be parsed (see $TMP/wrk)"
}

main() {
    parse_args "$@"
    trap cleanup EXIT
    # An interrupted run must still stop what it started.
    trap 'exit 130' INT
    trap 'exit 143' TERM HUP
    install_missing
    build_herd
    make_tmp
    assign_addresses
    start_nginx
    local s
    for s in php-fpm spawn-fcgi herd; do
        wants "$s" && bench "$s"
    done
    report
}

main "$@"
