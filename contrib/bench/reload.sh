#!/usr/bin/env bash
# Reload benchmark: php-fpm's SIGUSR2 against herd's rollout, behind nginx.
#
#   contrib/bench/reload.sh [--no-build] [--out FILE] [--plot FILE]
#                           [--broken php|config|both] [--keepalive off|on]
#                           [--engine php-cgi|php-fpm]
#                           [--fast-clients N] [--steady SECONDS] [--keep-tmp] [--trace]
#
# herd runs its workers as php-cgi processes (--engine php-cgi, default) or
# with php-fpm as its PHP engine (--engine php-fpm: one php-fpm of 4
# children, rolled out as one group). Both servers run the same PHP app (app.php: its version comes from
# env[APP_VERSION] in the pool config; ?burn=2000 burns 2 s of CPU) with 4
# static workers as www-data, behind one private nginx (upstream keep-alive
# off by default, as in nginx's stock fastcgi setup; --keepalive on adds
# `keepalive 16` + `fastcgi_keep_conn on`, which pins php-fpm's workers).
# Load: N fast clients (6) doing sequential requests as fast as they can,
# plus one client looping on ?burn=2000; each client is its own process,
# checks a stop flag that takes no lock, and runs without Python's cycle
# collector, so what it times is the server's and not its own pauses. After
# a steady phase the version is
# changed in the config and the server reloaded: php-fpm (with
# process_control_timeout = 10s) by kill -USR2, herd by herd ctl reload
# --wait; herd's pool checks new workers with warmup.request[] = /health.php.
# The load runs until 10 s after the rollout settled. Then the same with a
# broken deploy: --broken php (default) adds
# php_admin_value[auto_prepend_file] = /nonexistent/... to both configs, so
# every PHP request fails; --broken config adds an unknown directive (which
# makes php-fpm's master exit); both runs both.
#
# Prints one markdown table and writes a plot of latency over time during the
# reload, herd beside php-fpm (--plot, default contrib/bench/reload.png).
# --trace (implies --keep-tmp) logs every request where it passed: nginx's
# access log with its upstream timings ($TMP/nginx/<server>-access.log:
# msec, request, upstream connect, header and response time, status, URI)
# and each server's own (access.log in its run directory: duration in ms,
# worker pid, status, URI), to tell where a slow request waited.
# Nothing here asserts a timing: the machine may be small and shared.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/../.." && pwd)
HERD=$REPO/target/release/herd
PHP_CGI=/usr/bin/php-cgi8.2
PHP_FPM=php-fpm8.2

WORKERS=4
FAST_CLIENTS=6
BURN_MS=2000
STEADY=5
AFTER=10
KEEPALIVE=off
ENGINE=php-cgi
BROKEN=php
TRACE=0
OUT=
PLOT=$BENCH_DIR/reload.png
BUILD=1
KEEP_TMP=0

READY_DEADLINE=15   # seconds a server gets to answer through nginx
STOP_DEADLINE=15    # seconds a server gets to exit after SIGTERM

BENCH_NAME=reload.sh
# Processes, nginx, cleanup: shared with run.sh and rust.sh. What differs
# here (the temporary directory, nginx's config, readiness) is defined
# below, after it.
# shellcheck source=contrib/bench/lib.sh
source "$BENCH_DIR/lib.sh"

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
}

parse_args() {
    while (($#)); do
        case $1 in
            --out) OUT=${2:?}; shift ;;
            --plot) PLOT=${2:?}; shift ;;
            --broken) BROKEN=${2:?}; shift ;;
            --keepalive) KEEPALIVE=${2:?}; shift ;;
            --engine) ENGINE=${2:?}; shift ;;
            --fast-clients) FAST_CLIENTS=${2:?}; shift ;;
            --steady) STEADY=${2:?}; shift ;;
            --no-build) BUILD=0 ;;
            --keep-tmp) KEEP_TMP=1 ;;
            --trace) TRACE=1; KEEP_TMP=1 ;;
            -h|--help) usage; exit 0 ;;
            *) usage >&2; die "unknown argument: $1" ;;
        esac
        shift
    done
    [[ $BROKEN == php || $BROKEN == config || $BROKEN == both ]] || die "--broken must be php, config or both"
    [[ $KEEPALIVE == off || $KEEPALIVE == on ]] || die "--keepalive must be off or on"
    [[ $FAST_CLIENTS =~ ^[1-9][0-9]*$ ]] || die "--fast-clients must be a positive integer"
    [[ $STEADY =~ ^[0-9]+(\.[0-9]+)?$ ]] && [[ $STEADY != 0 ]] || die "--steady must be a positive number of seconds"
    # An --out or --plot path relative to where we were called from.
    [[ -z $OUT || $OUT == /* ]] || OUT=$PWD/$OUT
    [[ $PLOT == /* ]] || PLOT=$PWD/$PLOT
}

# --- setup -------------------------------------------------------------------

install_missing() {
    local missing=()
    command -v "$PHP_FPM" >/dev/null || missing+=(php8.2-fpm)
    [[ -x $PHP_CGI ]] || missing+=(php8.2-cgi)
    command -v nginx >/dev/null || missing+=(nginx)
    command -v curl >/dev/null || missing+=(curl)
    command -v python3 >/dev/null || missing+=(python3)
    if ((${#missing[@]})); then
        ((EUID == 0)) || die "missing packages (${missing[*]}) and not root to install them"
        log "installing ${missing[*]}"
        apt-get update
        DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
    fi
    # The plot: matplotlib when pip can get it, else reload_plot.py writes
    # an SVG itself.
    if ! python3 -c 'import matplotlib' 2>/dev/null; then
        log "installing matplotlib (python3 -m pip install matplotlib)"
        python3 -m pip install --quiet matplotlib >&2 ||
            log "no matplotlib: the plot will be an SVG"
    fi
}

build_herd() {
    if ((BUILD)); then
        log "building herd (cargo build --release)"
        (cd "$REPO" && cargo build --release) || die "cargo build --release failed"
    fi
    [[ -x $HERD ]] || die "$HERD is missing (run without --no-build)"
}

make_tmp() {
    TMP=$(mktemp -d /tmp/herd-reload.XXXXXX)
    # nginx and the PHP workers run as www-data: they must reach the sockets
    # and read the scripts.
    chmod 755 "$TMP"
    mkdir -p "$TMP/www" "$TMP/nginx"
    chmod 755 "$TMP/www" "$TMP/nginx"
    install -m 644 "$BENCH_DIR/app.php" "$BENCH_DIR/health.php" "$TMP/www/"
}

# --- processes ---------------------------------------------------------------

# --- nginx -------------------------------------------------------------------

# /php-fpm/X.php and /herd/X.php reach $TMP/www/X.php on each server.
write_nginx_conf() {
    local s keep_up= keep_loc=
    if [[ $KEEPALIVE == on ]]; then
        keep_up="keepalive 16;"
        keep_loc="fastcgi_keep_conn on;"
    fi
    {
        nginx_conf_head
        echo "    keepalive_timeout 120s;"
        # shellcheck disable=SC2016 # nginx's variables, written as they are
        ((TRACE)) && echo '    log_format timing "$msec $request_time $upstream_connect_time $upstream_header_time $upstream_response_time $status $request_uri";'
        for s in php-fpm herd; do
            echo "    upstream $s { server unix:$TMP/$s.sock; $keep_up }"
        done
        cat <<EOF
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location = /ready { return 204; }
EOF
        for s in php-fpm herd; do
            cat <<EOF
        location ~ ^/$s(/[a-z]+\.php)\$ {
            include /etc/nginx/fastcgi_params;
            fastcgi_param SCRIPT_FILENAME $TMP/www\$1;
            $keep_loc
            $( ((TRACE)) && echo "access_log $TMP/nginx/$s-access.log timing;")
            fastcgi_pass $s;
        }
EOF
        done
        echo "    }"
        echo "}"
    } >"$TMP/nginx/nginx.conf"
}

# --- the servers -------------------------------------------------------------
# Each writes its config for a version ($2) plus extra pool lines ($3) to the
# path in $1. Only the version and the extra lines ever change.

php_fpm_conf() {
    local dir=$SDIR
    cat >"$1" <<EOF
[global]
error_log = $dir/error.log
pid = $dir/php-fpm.pid
; let requests in flight finish on a reload (php-fpm's default 0 kills them)
process_control_timeout = 10s

[app]
listen = $TMP/php-fpm.sock
listen.mode = 0666
user = www-data
group = www-data
pm = static
pm.max_children = $WORKERS
pm.max_requests = 0
chdir = $TMP/www
catch_workers_output = yes
env[APP_VERSION] = $2
$(trace_lines)
$3
EOF
}

# With --trace: each server logs every request, with its duration.
trace_lines() {
    ((TRACE)) || return 0
    echo "access.log = $SDIR/access.log"
    echo 'access.format = "%{mili}d %p %s %r%Q%q"'
}

herd_conf() {
    local dir=$SDIR
    cat >"$1" <<EOF
[global]
error_log = $dir/herd.log
control.listen = $dir/ctl.sock
worker.socket_dir = $dir/run
process_control_timeout = 10s

[app]
listen = $TMP/herd.sock
listen.mode = 0666
user = www-data
group = www-data
pm = static
pm.max_children = $WORKERS
command = $(herd_command)
chdir = $TMP/www
env[PHP_FCGI_MAX_REQUESTS] = 0
env[APP_VERSION] = $2
; a new worker takes traffic only once this answers 2xx through it
warmup.request[] = /health.php
$(trace_lines)
$3
EOF
}

# herd's worker program: php-cgi, or php-fpm as the engine.
herd_command() {
    case $ENGINE in
        php-fpm) command -v "$PHP_FPM" ;;
        *) echo "$PHP_CGI" ;;
    esac
}

# The change that breaks a deploy, in each server's config.
broken_lines() {
    case $1 in
        php) echo "php_admin_value[auto_prepend_file] = /nonexistent/prepend.php" ;;
        config) echo "this_directive_does_not_exist = 1" ;;
    esac
}

start_server() {
    local s=$1
    case $s in
        php-fpm)
            # -F: foreground, so $! is the master (SIGUSR2 re-execs it in
            # place: the same pid); -R: allowed to start as root.
            setsid "$PHP_FPM" -F -R -y "$SDIR/server.conf" >"$SDIR/stderr.log" 2>&1 </dev/null &
            LOGS=("$SDIR/stderr.log" "$SDIR/error.log")
            ;;
        herd)
            mkdir -p "$SDIR/run"
            setsid "$HERD" run -c "$SDIR/server.conf" >"$SDIR/stderr.log" 2>&1 </dev/null &
            LOGS=("$SDIR/stderr.log" "$SDIR/herd.log")
            ;;
    esac
    MASTER_PID=$!
    PIDS+=("$MASTER_PID")
}

# True when nginx answers /$1/$2 with 200 and a body with $3.
probe() {
    local body code
    body=$(curl -s --max-time 2 -w '\n%{http_code}' "http://127.0.0.1:$NGINX_PORT/$1/$2" 2>/dev/null) || return 1
    code=${body##*$'\n'}
    [[ $code == 200 && $body == *"$3"* ]]
}

# Every PHP process up: herd's status says so (its process counts are
# slots, so a php-fpm group of 4 counts 4); php-fpm (static) forks all of
# them before it accepts, so one answer is enough there.
all_workers_up() {
    [[ $1 == herd ]] || return 0
    "$HERD" ctl --socket "$SDIR/ctl.sock" status --json 2>/dev/null | python3 -c '
import json, sys
p = json.load(sys.stdin)["pools"][0]
ok = p["deploy"]["state"] == "stable" and p["total processes"] == int(sys.argv[1])
sys.exit(0 if ok else 1)' "$WORKERS"
}

wait_ready() {
    local s=$1 i
    for ((i = 0; i < READY_DEADLINE * 10; i++)); do
        if probe "$s" app.php "version=v1" && probe "$s" health.php "ok" && all_workers_up "$s"; then
            return 0
        fi
        if ! alive "$MASTER_PID"; then
            show_logs "${LOGS[@]}" "$TMP/nginx/error.log"
            die "$s exited before it served a request"
        fi
        sleep 0.1
    done
    show_logs "${LOGS[@]}" "$TMP/nginx/error.log"
    die "$s did not answer version=v1 through nginx within ${READY_DEADLINE}s"
}

# Runs one scenario: $1 server, $2 "reload" or "broken-php" / "broken-config".
scenario() {
    local s=$1 kind=$2 name="$1-$2" extra= broken=() reload=()
    SDIR=$TMP/$name
    mkdir -p "$SDIR"
    [[ $kind == broken-* ]] && { extra=$(broken_lines "${kind#broken-}"); broken=(--broken); }
    "${s//-/_}_conf" "$SDIR/server.conf" v1 ""
    "${s//-/_}_conf" "$SDIR/next.conf" v2 "$extra"
    log "$name: starting $s"
    start_server "$s"
    # The new config goes in place just before t0; at t0 php-fpm gets its
    # SIGUSR2 straight from the load generator, herd its herd ctl reload.
    case $s in
        php-fpm) reload=(--reload-signal "USR2:$MASTER_PID") ;;
        herd) reload=(--reload-cmd "'$HERD' ctl --socket '$SDIR/ctl.sock' reload --wait") ;;
    esac
    wait_ready "$s"
    log "$name: ${STEADY}s steady, reload to v2${extra:+ ($extra)}, then until ${AFTER}s after the rollout settled"
    # Its own session, as wrk's in lib.sh: the load is no part of a server.
    setsid python3 "$BENCH_DIR/reload_load.py" run --base "http://127.0.0.1:$NGINX_PORT/$s/" \
        --prepare-cmd "cp '$SDIR/next.conf' '$SDIR/server.conf'" "${reload[@]}" \
        --dir "$SDIR" --old v1 --new v2 \
        --fast-clients "$FAST_CLIENTS" --burn-clients 1 --burn-ms "$BURN_MS" \
        --steady "$STEADY" --after "$AFTER" "${broken[@]}" &
    local load=$! rc=0
    PIDS+=("$load")
    wait "$load" || rc=$?
    forget_pid "$load"
    ((rc == 0)) || { show_logs "${LOGS[@]}"; die "$name: the load generator failed ($rc)"; }
    sed 's/^/reload.sh:   reload command: /' "$SDIR/reload.log" >&2
    # What became of the server.
    if alive "$MASTER_PID"; then
        : >"$SDIR/outcome.txt"
    else
        rc=0
        wait "$MASTER_PID" || rc=$?
        echo "the master exited with status $rc" >"$SDIR/outcome.txt"
        log "$name: $s's master exited with status $rc"
        show_logs "${LOGS[@]}"
    fi
    if [[ $s == herd ]]; then
        grep -E 'rolling out|rollout done|deploy refused|WARN|ERROR' "$SDIR/herd.log" |
            sed 's/^/reload.sh:   herd.log: /' >&2 || true
    fi
    log "$name: stopping $s"
    stop_pids "$STOP_DEADLINE" "$MASTER_PID"
    forget_pid "$MASTER_PID"
    if ((TRACE)); then
        # This scenario's lines go with it; nginx opens a new file for the next.
        mv "$TMP/nginx/$s-access.log" "$SDIR/nginx-access.log"
        kill -USR1 "$NGINX_PID"
    fi
    local label
    case $kind in
        reload) label="$s reload" ;;
        broken-php) label="$s broken deploy (php fails)" ;;
        broken-config) label="$s broken deploy (bad directive)" ;;
    esac
    RUNS+=("$label=$SDIR")
}

# --- report ------------------------------------------------------------------

versions() {
    echo "$("$PHP_FPM" -v | head -n 1); $("$PHP_CGI" -v | head -n 1); $(nginx -v 2>&1); $("$HERD" --version)"
}

report() {
    local header rc=0
    header="Reload benchmark $(date -u '+%Y-%m-%d %H:%M UTC'), nproc $(nproc), $WORKERS workers each (pm = static), nginx → server over unix sockets, upstream keep-alive $KEEPALIVE; load: $FAST_CLIENTS fast clients + 1 client on ?burn=$BURN_MS (${BURN_MS} ms of CPU), sequential keep-alive HTTP to nginx; ${STEADY}s steady, then the reload, then ${AFTER}s after the rollout settled. Broken deploy: $BROKEN."
    python3 "$BENCH_DIR/reload_load.py" report --header "$header" \
        --header "Versions: $(versions)" "${RUNS[@]}" >"$TMP/report.md" || rc=$?
    ((TRACE)) && trace_report >>"$TMP/report.md"
    cat "$TMP/report.md"
    [[ -z $OUT ]] || cp "$TMP/report.md" "$OUT"
    ((rc == 0)) || die "the report failed"
    local plotted
    plotted=$(python3 "$BENCH_DIR/reload_plot.py" --out "$PLOT" \
        "php-fpm (SIGUSR2)=$TMP/php-fpm-reload" "herd (herd ctl reload)=$TMP/herd-reload") ||
        die "the plot failed"
    echo
    echo "Plot: $plotted"
}

# With --trace: the slowest fast request (not ?burn, not the warm-up's
# health.php) as each layer timed it. What the client saw beyond nginx's
# time was spent outside the server: in the load generator, or waiting for a
# CPU before nginx read the request.
trace_report() {
    local run label dir
    echo
    echo "Where the slowest fast request waited (--trace): as nginx timed it (\$request_time, \$upstream_response_time) and as the server's access log did (php-fpm's and herd's %d)."
    echo
    echo "| scenario | client | nginx request | nginx upstream | server |"
    echo "|---|--:|--:|--:|--:|"
    for run in "${RUNS[@]}"; do
        label=${run%%=*}
        dir=${run#*=}
        printf '| %s | %s | %s | %s | %s |\n' "$label" \
            "$(awk -F'\t' '$1 == "fast" && $3 - $2 > m { m = $3 - $2 } END { printf "%.0f ms", m * 1000 }' "$dir/requests.tsv")" \
            "$(awk '!/burn=|health\.php/ && $2 > m { m = $2 } END { printf "%.0f ms", m * 1000 }' "$dir/nginx-access.log")" \
            "$(awk '!/burn=|health\.php/ && $5 > m { m = $5 } END { printf "%.0f ms", m * 1000 }' "$dir/nginx-access.log")" \
            "$(awk '!/burn=|health\.php/ && $1 > m { m = $1 } END { printf "%.0f ms", m }' "$dir/access.log")"
    done
}

main() {
    parse_args "$@"
    setup_traps
    ((EUID == 0)) || die "run as root: the workers run as www-data, like a real deployment"
    install_missing
    build_herd
    make_tmp
    start_nginx
    RUNS=()
    scenario php-fpm reload
    scenario herd reload
    local b
    for b in php config; do
        [[ $BROKEN == "$b" || $BROKEN == both ]] || continue
        scenario php-fpm "broken-$b"
        scenario herd "broken-$b"
    done
    report
}

main "$@"
