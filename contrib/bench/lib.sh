# shellcheck shell=bash
# Shared by the benchmarks (run.sh, rust.sh, reload.sh, app.sh): processes, one
# private nginx in front of every contender, readiness, wrk runs, the table.
# Sourced, never run.
#
# The sourcing script sets, before calling anything here:
#   BENCH_NAME       its own name, for messages
#   BENCH_DIR        this directory
#   CONTENDERS       array of contender names (used in nginx paths and rows)
#   LABEL[name]      optional: the name a contender has in the table
#   DURATION CONNECTIONS WORKERS TRANSPORT OUT KEEP_TMP
#   READY_DEADLINE STOP_DEADLINE CGI_STOP_DEADLINE WARMUP
#   REQUEST_PATH     what is requested below /<contender>/<off|on>/
#   SCRIPT_FILENAME  optional: the FastCGI SCRIPT_FILENAME nginx passes
#   EXPECT_BODY      a glob the whole answer body must match to be "ready"
#   EXPECT_DESC      how that body is described in an error
# and defines start_contender NAME, which starts one contender and sets
# MASTER_PID (the process that must stay alive, and whose CPU and RSS are
# measured when MASTER_MEASURED=1), WORKER_PIDS (only when the workers are
# orphans, as spawn-fcgi's are) and LOGS (what to show when it fails).
#
# Optional:
#   MEASURE_PSS=1    also sum the PSS of the contender's every process after
#                    each run (three more columns in the table)
#   ROWS             where measure() appends its rows ($TMP/rows.tsv)
#   check_contender NAME   defined by the sourcing script: called once the
#                    contender answers, before it is measured; fails the run
#                    (die) when what it serves is not what should be measured

TMP=
# File systems a bench mounted under $TMP, unmounted before it goes.
MOUNTS=()
PIDS=()             # every process we started (or that spawn-fcgi forked for us)
NGINX_PID=
FAILED=0
MASTER_PID=
MASTER_MEASURED=0
MEASURE_PSS=${MEASURE_PSS:-0}
ROWS=
WORKER_PIDS=()
LOGS=()
declare -A ADDR=()  # where contender $1 listens, in its own syntax
declare -A LABEL=()

die() {
    echo "$BENCH_NAME: $*" >&2
    FAILED=1
    exit 1
}

# Builds herd (release) when the binary is missing or older than a source
# file, unless BUILD=0; dies when there is no binary to run.
build_herd_if_stale() {
    if ((BUILD)); then
        if [[ ! -x $HERD ]] || [[ -n $(find "$REPO/src" "$REPO/Cargo.toml" "$REPO/Cargo.lock" \
                -newer "$HERD" -print 2>/dev/null | head -n 1) ]]; then
            log "building herd (cargo build --release)"
            (cd "$REPO" && cargo build --release) || die "cargo build --release failed"
        fi
    fi
    [[ -x $HERD ]] || die "$HERD is missing (run without --no-build)"
}

# Every server (nginx, each contender) and wrk start in a session of their
# own (`setsid`), as systemd starts each service: with the kernel's
# autogroups (on in Debian's kernels, and most) a session is one scheduling
# entity, and started from this script they would all share one with wrk.
# (In a script without job control a background command leads no process
# group, so setsid execs in place and $! is the server.)

# Starts herd on config $1 (checked first; its logs go beside it) as the
# contender whose master is measured.
start_herd_master() {
    local conf=$1 dir
    dir=$(dirname "$conf")
    "$HERD" check -c "$conf" >"$dir/check.log" 2>&1 ||
        { show_logs "$dir/check.log"; die "herd check refused $conf"; }
    setsid "$HERD" run -c "$conf" >"$dir/stderr.log" 2>&1 </dev/null &
    MASTER_PID=$!
    # Only herd's master sits in the request path; its cost is what we want.
    MASTER_MEASURED=1
    PIDS+=("$MASTER_PID")
    WORKER_PIDS=()
    LOGS=("$dir/stderr.log" "$dir/herd.log")
}

log() {
    echo "$BENCH_NAME: $*" >&2
}

# Connections nginx may hold: wrk's and the upstream ones for each.
NGINX_CONNECTIONS=4096
# The listen backlog every contender gets, so that a burst of connections
# is queued alike by all of them.
BACKLOG=4096

# The options every benchmark shares.
check_common_args() {
    [[ $TRANSPORT == unix || $TRANSPORT == tcp ]] || die "--transport must be unix or tcp"
    [[ $WORKERS =~ ^[1-9][0-9]*$ ]] || die "--workers must be a positive integer"
    # wrk needs at least as many connections as threads (-t2).
    [[ $CONNECTIONS =~ ^[0-9]+$ ]] && ((CONNECTIONS >= 2)) || die "--connections must be at least 2"
    [[ $DURATION =~ ^[0-9]+[smh]?$ ]] || die "--duration must look like 10s, 1m or 30"
    # Thousands of connections (the scale case) need room for them in
    # nginx, in wrk's and every server's descriptor limits.
    ((CONNECTIONS * 4 > NGINX_CONNECTIONS)) && NGINX_CONNECTIONS=$((CONNECTIONS * 4))
    ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
    return 0
}

# --- setup -------------------------------------------------------------------

# Installs the Debian packages given, when there are any.
install_packages() {
    (($#)) || return 0
    ((EUID == 0)) || die "missing packages ($*) and not root to install them"
    log "installing $*"
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y "$@"
}

# Packages for what every benchmark runs besides its contenders.
missing_common_packages() {
    command -v nginx >/dev/null || echo nginx
    command -v spawn-fcgi >/dev/null || echo spawn-fcgi
    command -v wrk >/dev/null || echo wrk
    command -v curl >/dev/null || echo curl
    command -v python3 >/dev/null || echo python3
}

# oha, the load generator of the fixed-rate runs (app.sh --rate): not a
# Debian package, so built from crates.io into target/ once (a few minutes),
# pinned, with the system's OpenSSL (its default TLS needs cmake).
OHA_VERSION=1.16.0
install_oha() {
    OHA=$REPO/target/bench-tools/bin/oha
    [[ -x $OHA ]] && "$OHA" --version 2>/dev/null | grep -q "$OHA_VERSION" && return 0
    local missing=()
    command -v pkg-config >/dev/null || missing+=(pkg-config)
    dpkg-query -W -f='${Status}' libssl-dev 2>/dev/null | grep -q 'install ok installed' || missing+=(libssl-dev)
    install_packages "${missing[@]}"
    log "building oha $OHA_VERSION (cargo install, once)"
    cargo install oha --locked --version "$OHA_VERSION" --no-default-features --features native-tls \
        --root "$REPO/target/bench-tools" >&2 || die "could not build oha"
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
    # nginx workers and the FastCGI workers run as www-data: they must reach
    # the sockets and read what the contenders run.
    chmod 755 "$TMP"
    mkdir -p "$TMP/nginx" "$TMP/wrk"
    chmod 755 "$TMP/nginx" "$TMP/wrk"
    ROWS=$TMP/rows.tsv
    : >"$ROWS"
}

# Asks the kernel for a free loopback port. Another process could take it
# before we bind it; on a private bench machine that is unlikely enough.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

assign_addresses() {
    local s
    for s in "${CONTENDERS[@]}"; do
        if [[ $TRANSPORT == unix ]]; then
            ADDR[$s]=$TMP/$s.sock
        else
            ADDR[$s]=127.0.0.1:$(free_port)
        fi
    done
}

# Where contender $1 listens, in nginx's syntax.
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

# Children of $1, their children, and so on (a preloader's workers are the
# master's grandchildren).
descendants_of() {
    local kid
    for kid in $(children_of "$1"); do
        echo "$kid"
        descendants_of "$kid"
    done
}

# SIGTERM every pid given and wait up to $deadline seconds (first argument)
# for them to exit; then SIGKILL them and what they had forked.
stop_pids() {
    local deadline=$1 pid i kids=() left
    shift
    for pid in "$@"; do
        alive "$pid" || continue
        kids+=($(descendants_of "$pid"))
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
    # Workers a killed master left behind. A master that exited cleanly
    # stopped them first; give them the same grace before the SIGKILL.
    for ((i = 0; i < 20; i++)); do
        left=0
        for pid in "${kids[@]}"; do alive "$pid" && left=1; done
        ((left)) || break
        sleep 0.1
    done
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
    local rc=$? pid mnt
    set +e
    trap - EXIT
    ((rc)) && FAILED=1
    # Managers and workers before nginx, so nothing logs a lost upstream.
    local others=()
    for pid in "${PIDS[@]}"; do [[ $pid == "${NGINX_PID:-}" ]] || others+=("$pid"); done
    ((${#others[@]} == 0)) || stop_pids "$STOP_DEADLINE" "${others[@]}"
    [[ -z ${NGINX_PID:-} ]] || stop_pids "$STOP_DEADLINE" "$NGINX_PID"
    for mnt in "${MOUNTS[@]}"; do umount "$mnt" || log "could not unmount $mnt"; done
    if [[ -n $TMP && -d $TMP ]]; then
        if ((FAILED || KEEP_TMP)); then
            log "logs and configs kept in $TMP"
        else
            rm -rf "$TMP"
        fi
    fi
}

# Stops whatever we started, however the script ends.
setup_traps() {
    trap cleanup EXIT
    # An interrupted run must still stop what it started.
    trap 'exit 130' INT
    trap 'exit 143' TERM HUP
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

# One nginx for every contender: /<contender>/off/ reaches it over a new
# connection per request, /<contender>/on/ over kept-alive connections.
# The top of every benchmark's nginx.conf, up to its upstreams: one worker,
# every path private to $TMP/nginx, no access log, client connections kept.
nginx_conf_head() {
    local user_line=
    ((EUID == 0)) && user_line="user www-data;"
    cat <<EOF
$user_line
worker_processes 1;
daemon off;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log warn;
worker_rlimit_nofile $((NGINX_CONNECTIONS * 2));
events { worker_connections $NGINX_CONNECTIONS; }
http {
    access_log off;
    client_body_temp_path $TMP/nginx/body;
    fastcgi_temp_path $TMP/nginx/fastcgi;
    proxy_temp_path $TMP/nginx/proxy;
    uwsgi_temp_path $TMP/nginx/uwsgi;
    scgi_temp_path $TMP/nginx/scgi;
    # The load generator's connections to nginx stay open for a whole run.
    keepalive_requests 1000000;
EOF
}

write_nginx_conf() {
    local s script_line=
    [[ -z ${SCRIPT_FILENAME:-} ]] || script_line="fastcgi_param SCRIPT_FILENAME $SCRIPT_FILENAME;"
    {
        nginx_conf_head
        for s in "${CONTENDERS[@]}"; do
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
        for s in "${CONTENDERS[@]}"; do
            cat <<EOF
        location /$s/off/ {
            include /etc/nginx/fastcgi_params;
            $script_line
            fastcgi_pass ${s}_off;
        }
        location /$s/on/ {
            include /etc/nginx/fastcgi_params;
            $script_line
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
    setsid nginx -e "$TMP/nginx/error.log" -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" \
        >>"$TMP/nginx/stderr.log" 2>&1 </dev/null &
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

# spawn-fcgi forks $WORKERS copies of a FastCGI program on one socket and
# exits (-n works only for a single child), so there is no manager in the
# request path; the children's pids come from its output.
#
#   [FORKS=N] start_spawn_fcgi NAME [ENV-ARGS...] -- PROGRAM [ARGS...]
#
# ENV-ARGS go to env(1) in front of spawn-fcgi (e.g. -u VAR, VAR=value), so
# the children inherit them. FORKS: how many copies, when not $WORKERS (one
# php-cgi that forks PHP_FCGI_CHILDREN itself is FORKS=1).
start_spawn_fcgi() {
    local name=$1 dir=$TMP/$1 listen=() user=() envs=() pid forks=${FORKS:-$WORKERS}
    shift
    while (($#)) && [[ $1 != -- ]]; do envs+=("$1"); shift; done
    shift
    mkdir -p "$dir"
    if [[ $TRANSPORT == unix ]]; then
        listen=(-s "${ADDR[$name]}" -M 0666)
    else
        listen=(-a "${ADDR[$name]%:*}" -p "${ADDR[$name]##*:}")
    fi
    listen+=(-b "$BACKLOG")
    ((EUID == 0)) && user=(-u www-data -g www-data)
    LOGS=("$dir/stderr.log")
    setsid env "${envs[@]}" spawn-fcgi "${listen[@]}" "${user[@]}" -F "$forks" -- "$@" \
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
    if ((rc != 0 || ${#WORKER_PIDS[@]} != forks)); then
        show_logs "${LOGS[@]}"
        die "spawn-fcgi exited with $rc and spawned ${#WORKER_PIDS[@]} of $forks children"
    fi
    # With no manager, "alive" means the first child.
    MASTER_PID=${WORKER_PIDS[0]}
    MASTER_MEASURED=0
}

stop_contender() {
    local pid
    if ((${#WORKER_PIDS[@]})); then
        # A bare worker may ignore SIGTERM while it waits on a kept-alive
        # connection (php-cgi's read loop retries on EINTR), so it gets a
        # short grace only.
        stop_pids "$CGI_STOP_DEADLINE" "${WORKER_PIDS[@]}"
        for pid in "${WORKER_PIDS[@]}"; do forget_pid "$pid"; done
    else
        stop_pids "$STOP_DEADLINE" "$MASTER_PID"
        forget_pid "$MASTER_PID"
    fi
    # A unix socket left behind by a killed manager is harmless: each
    # contender has its own path.
}

# True when nginx answers $1 with 200 and a body matching $EXPECT_BODY.
probe() {
    local body code
    body=$(curl -s --max-time 2 -w '\n%{http_code}' "$1" 2>/dev/null) || return 1
    code=${body##*$'\n'}
    body=${body%$'\n'*}
    body=${body%$'\n'}  # the program's own trailing newline
    # shellcheck disable=SC2053 # EXPECT_BODY is a glob on purpose
    [[ $code == 200 && $body == $EXPECT_BODY ]]
}

contender_url() {
    echo "http://127.0.0.1:$NGINX_PORT/$1/$2/$REQUEST_PATH"
}

# Polls both locations of contender $1 until they answer, it dies, or the
# deadline passes.
wait_ready() {
    local s=$1 i mode ok
    for ((i = 0; i < READY_DEADLINE * 10; i++)); do
        ok=1
        for mode in off on; do
            probe "$(contender_url "$s" "$mode")" || { ok=0; break; }
        done
        ((ok)) && return 0
        if ! alive "$MASTER_PID"; then
            show_logs "${LOGS[@]}" "$TMP/nginx/error.log"
            die "$s exited before it served a request"
        fi
        sleep 0.1
    done
    show_logs "${LOGS[@]}" "$TMP/nginx/error.log"
    echo "----- last answer from nginx for /$s/$mode/$REQUEST_PATH:" >&2
    curl -s -i --max-time 2 "$(contender_url "$s" "$mode")" >&2 || true
    die "$s did not answer 200 $EXPECT_DESC through nginx within ${READY_DEADLINE}s"
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

# The processes of the contender now running: the manager (or spawn-fcgi's
# orphans) and everything they forked, e.g. php-fpm's master and children,
# herd's master, its workers and the php-cgi children a worker forked.
contender_pids() {
    local roots=("$MASTER_PID") pid
    ((${#WORKER_PIDS[@]})) && roots=("${WORKER_PIDS[@]}")
    for pid in "${roots[@]}"; do
        echo "$pid"
        descendants_of "$pid"
    done
}

# "<kB> <processes>": the proportional set size of the contender's every
# process, summed (memory shared between them, as an OPcache is, counts once
# in the sum; what they share with other processes, such as libc, counts by
# their share), and how many processes that is. Pss of smaps_rollup, which
# needs Linux 4.14; a process that exits meanwhile is left out.
contender_pss() {
    local pid kb total=0 n=0
    for pid in $(contender_pids); do
        kb=$(awk '/^Pss:/ { print $2 }' "/proc/$pid/smaps_rollup" 2>/dev/null) || continue
        [[ -n $kb ]] || continue
        total=$((total + kb))
        n=$((n + 1))
    done
    echo "$total $n"
}

# wrk's request timeout: longer than any run, so no request is dropped
# from the latency figures.
WRK_TIMEOUT=${WRK_TIMEOUT:-120s}

# Runs wrk against contender $1 in keep-alive mode $2 and appends a row.
measure() {
    local s=$1 mode=$2 url out before=- after ticks=- rss=- pss=- procs=-
    url=$(contender_url "$s" "$mode")
    out=$TMP/wrk/$s-$mode${ROUND:+-r$ROUND}.txt
    log "$s, keep-alive $mode: warm-up $WARMUP, then $DURATION"
    setsid wrk -t2 -c"$CONNECTIONS" -d"$WARMUP" "$url" >"$out.warmup" 2>&1 || true
    # Only a manager in the request path is measured: its cost is what we want.
    ((MASTER_MEASURED)) && before=$(cpu_ticks "$MASTER_PID")
    # --timeout: wrk leaves a request slower than its timeout (2 s by
    # default) out of the latency figures without counting it anywhere, so
    # a server that strands some requests for seconds (php-fpm with more
    # keep-alive connections than children) would look fast. Every request
    # that completes within the run is timed.
    if [[ -n ${RATE:-} ]]; then
        # At a fixed rate (app.sh --rate): oha, each request timed from when
        # it was due. Requests still out at the end are waited for, so a
        # slow one is timed rather than cut off.
        out=${out%.txt}.json
        setsid "$OHA" -z "$DURATION" -c "$CONNECTIONS" -q "$RATE" --latency-correction \
            --wait-ongoing-requests-after-deadline --no-tui --output-format json "$url" >"$out" 2>"$out.err" ||
            { show_logs "$out.err"; die "oha failed against $s ($mode)"; }
    else
        setsid wrk -t2 -c"$CONNECTIONS" -d"$DURATION" --timeout "$WRK_TIMEOUT" --latency "$url" >"$out" 2>&1 ||
            { show_logs "$out"; die "wrk failed against $s ($mode)"; }
    fi
    alive "$MASTER_PID" || { show_logs "${LOGS[@]}"; die "$s died during the $mode run"; }
    if ((MASTER_MEASURED)); then
        after=$(cpu_ticks "$MASTER_PID")
        ticks=$((after - before))
        rss=$(rss_kb "$MASTER_PID")
    fi
    # After the run, with everything still up: what the load made resident.
    ((MEASURE_PSS)) && read -r pss procs < <(contender_pss)
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "${LABEL[$s]:-$s}" "$mode" "$out" "$ticks" "$rss" "$pss" "$procs" >>"$ROWS"
}

# Starts contender $1, measures it with keep-alive off and on, stops it.
bench() {
    local s=$1
    log "starting $s"
    MASTER_MEASURED=0
    WORKER_PIDS=()
    start_contender "$s"
    wait_ready "$s"
    if declare -F check_contender >/dev/null; then check_contender "$s"; fi
    measure "$s" off
    measure "$s" on
    log "stopping $s"
    stop_contender
}

# --- report ------------------------------------------------------------------

wrk_version() {
    wrk -v 2>&1 | head -n 1 | cut -d' ' -f1-2
}

# Prints the table, with the header lines given above it and $REPORT_FOOTER
# (if set) below it, and copies it to $OUT.
#
#   render_report BASELINE HEADER...
render_report() {
    local baseline=$1 h args=()
    shift
    for h in "$@"; do args+=(--header "$h"); done
    # report.py fails when a wrk output could not be read; print what it
    # could make of the run all the same, then fail.
    local rc=0
    python3 "$BENCH_DIR/report.py" "$ROWS" --clk-tck "$(getconf CLK_TCK)" \
        --baseline "$baseline" "${args[@]}" >"$TMP/report.md" || rc=$?
    [[ -z ${REPORT_FOOTER:-} ]] || printf '\n%s\n' "$REPORT_FOOTER" >>"$TMP/report.md"
    cat "$TMP/report.md"
    [[ -z $OUT ]] || cp "$TMP/report.md" "$OUT"
    ((rc == 0)) || die "some wrk output could not be parsed (see $TMP/wrk)"
}
