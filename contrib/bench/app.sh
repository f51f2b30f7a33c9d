#!/usr/bin/env bash
# A real PHP application, side by side: DokuWiki from Debian's package,
# served by php-fpm, by php-cgi under spawn-fcgi and by herd's engines behind
# one nginx, measured with wrk: req/s, latency and the total memory (PSS) of
# every contender, with ratios to php-fpm.
#
#   contrib/bench/app.sh [--duration 10s] [--rounds 1] [--workers 8,32] [--per-worker 2] [--rate R|P%] [--out FILE]
#                        [--contenders php-fpm,spawn-fcgi,herd-exec,herd-group,herd-groups,herd-fpm]
#                        [--herd PATH] [--herd-b PATH] [--no-build] [--keep-tmp]
#
# The application: the dokuwiki package, copied with its config into the
# run's private directory (so nothing global changes and every contender
# serves the same files), data in a directory of its own, the only one the
# PHP processes (www-data) may write. One page (app-page.txt: headings,
# lists, a table, links, code) is rendered once before any contender starts;
# every measured request is served from DokuWiki's render cache, which is
# checked, with the page's content, for every contender before it is
# measured. A request loads several hundred PHP files (counted and printed).
#
# Contenders, each with W PHP processes (W from --workers) and the same PHP
# settings on the command line (OPcache on, 128 MiB, no timestamp checks):
#
#   php-fpm      pm = static, pm.max_children = W.
#   spawn-fcgi   one php-cgi with PHP_FCGI_CHILDREN=W: W PHP processes
#                forked by one parent, sharing its OPcache; no manager in the
#                request path.
#   herd-exec    herd, W php-cgi workers (today's mode): W OPcaches.
#   herd-group   herd, one worker: php-cgi with PHP_FCGI_CHILDREN=W, which
#                serves W requests at once (herd reads FCGI_MAX_CONNS).
#   herd-groups  herd, W/4 workers, each php-cgi with PHP_FCGI_CHILDREN=4.
#   herd-fpm     herd running php-fpm as its engine (`command = php-fpm8.2`):
#                one worker, a php-fpm master whose W children share one
#                OPcache, php-fpm's SAPI.
#   herd-fpm-b   the same with another herd binary (--herd-b PATH, e.g. a
#                build of an earlier commit): two builds side by side in one
#                run. Only when named in --contenders.
#   php-fpm-b    a second php-fpm, the same in every way: the control. Its
#                ratios to php-fpm show how far two identical servers differ
#                on this machine in this run, the spread every other ratio is
#                to be read against. Only when named in --contenders.
#
# Each W is measured with 2×W connections (--per-worker N: N×W; 1 gives
# php-fpm's children one connection each, so none is left waiting), nginx →
# server keep-alive off and on, one contender at a time; one markdown table per W, also written to
# --out. Unless --no-build or --herd, `cargo build --release` runs first.
#
# --rate R: instead of wrk's closed loop (each connection sends its next
# request when the last is answered, so the faster server also gets more
# load), oha sends R requests a second to every contender and times each
# from when it was due (built from crates.io into target/ the first time).
# Every contender then serves the same load, and the latencies compare at
# the same operating point. R% (e.g. 60%): that share of what php-fpm
# answers in wrk's closed loop, measured for each W before its rounds, so
# the load means the same on a slower or busier machine.
# Nothing here asserts a timing: the machine may be small and shared.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/../.." && pwd)
HERD=$REPO/target/release/herd
PHP_CGI=/usr/bin/php-cgi8.2
PHP_FPM=/usr/sbin/php-fpm8.2
WIKI_SRC=/usr/share/dokuwiki
WIKI_CONF_SRC=/etc/dokuwiki
WIKI_DATA_SRC=/var/lib/dokuwiki/data
PAGE_ID=bench
# In app-page.txt; a body without it is not the page.
MARKER=herd-bench-dokuwiki-page
GROUP_SIZE=4        # children per worker of herd-groups

DURATION=10s
ROUNDS=1
WORKERS_LIST=8,32
PER_WORKER=2
OUT=
RATE=
RATE_SPEC=
RATE_NOTE=
BUILD=1
KEEP_TMP=0
ALL_CONTENDERS=(php-fpm spawn-fcgi herd-exec herd-group herd-groups herd-fpm herd-fpm-b php-fpm-b)
SERVERS=php-fpm,spawn-fcgi,herd-exec,herd-group,herd-groups,herd-fpm
HERD_B=

READY_DEADLINE=30   # seconds a contender gets to answer through nginx
STOP_DEADLINE=15    # seconds a manager gets to exit after SIGTERM
CGI_STOP_DEADLINE=3 # seconds spawn-fcgi's php-cgi gets
WARMUP=2s

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
}

BENCH_NAME=app.sh
CONTENDERS=("${ALL_CONTENDERS[@]}")
TRANSPORT=unix
REQUEST_PATH="doku.php?id=$PAGE_ID"
EXPECT_BODY="*$MARKER*"
EXPECT_DESC="with DokuWiki's page ($MARKER)"
MEASURE_PSS=1
# shellcheck source=contrib/bench/lib.sh
source "$BENCH_DIR/lib.sh"
# shellcheck source=contrib/bench/dokuwiki.sh
source "$BENCH_DIR/dokuwiki.sh"
LABEL[herd-exec]='herd exec'
LABEL[herd-group]='herd group'
LABEL[herd-groups]='herd groups'
LABEL[herd-fpm]='herd fpm'
LABEL[herd-fpm-b]='herd fpm (B)'
LABEL[php-fpm-b]='php-fpm (control)'

parse_args() {
    while (($#)); do
        case $1 in
            --duration) DURATION=${2:?}; shift ;;
            --rounds) ROUNDS=${2:?}; shift ;;
            --workers) WORKERS_LIST=${2:?}; shift ;;
            --per-worker) PER_WORKER=${2:?}; shift ;;
            --rate) RATE_SPEC=${2:?}; shift ;;
            --contenders) SERVERS=${2:?}; shift ;;
            --out) OUT=${2:?}; shift ;;
            --herd) HERD=${2:?}; BUILD=0; shift ;;
            --herd-b) HERD_B=${2:?}; shift ;;
            --no-build) BUILD=0 ;;
            --keep-tmp) KEEP_TMP=1 ;;
            -h|--help) usage; exit 0 ;;
            *) usage >&2; die "unknown argument: $1" ;;
        esac
        shift
    done
    local s w max=0
    for s in ${SERVERS//,/ }; do
        [[ " ${ALL_CONTENDERS[*]} " == *" $s "* ]] || die "unknown contender in --contenders: $s"
    done
    if [[ ",$SERVERS," == *,herd-fpm-b,* ]]; then
        [[ -x $HERD_B ]] || die "herd-fpm-b runs the herd binary given with --herd-b PATH"
    fi
    for w in ${WORKERS_LIST//,/ }; do
        [[ $w =~ ^[1-9][0-9]*$ ]] || die "--workers must be positive integers separated by commas"
        if ((w > max)); then max=$w; fi
    done
    [[ $PER_WORKER =~ ^[1-9][0-9]*$ ]] || die "--per-worker must be a positive integer"
    [[ -z $RATE_SPEC || $RATE_SPEC =~ ^[1-9][0-9]*%?$ ]] ||
        die "--rate must be requests a second (a positive integer) or a share of php-fpm's (e.g. 60%)"
    if [[ $RATE_SPEC == *% ]]; then
        wants php-fpm || die "--rate $RATE_SPEC is a share of php-fpm's requests a second: include php-fpm in --contenders"
    else
        RATE=$RATE_SPEC
    fi
    # Checked (and nginx sized) for the largest W.
    WORKERS=$max
    CONNECTIONS=$((PER_WORKER * max))
    check_common_args
}

wants() {
    [[ ,$SERVERS, == *,$1,* ]]
}

wants_herd() {
    [[ ,$SERVERS, == *,herd-* ]]
}

# --- setup -------------------------------------------------------------------

install_missing() {
    local missing=()
    [[ -x $PHP_FPM ]] || missing+=(php8.2-fpm)
    [[ -x $PHP_CGI ]] || missing+=(php8.2-cgi)
    [[ -f $WIKI_SRC/doku.php ]] || missing+=(dokuwiki)
    missing+=($(missing_common_packages))
    # --no-install-recommends: DokuWiki's recommends pull in ImageMagick and
    # database modules that a page view does not use.
    ((${#missing[@]} == 0)) && return 0
    ((EUID == 0)) || die "missing packages (${missing[*]}) and not root to install them"
    log "installing ${missing[*]}"
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
}

# Builds herd when the binary is missing or older than any source file.
build_herd() {
    wants_herd || return 0
    build_herd_if_stale
}

# The PHP settings every contender gets, as `-d` options on the command
# line of php-fpm's master and of every php-cgi (herd passes its
# php_admin_value lines that way). On php-fpm's command line, not in its
# pool: OPcache sizes its memory when the master starts.
php_defines() {
    printf '%s\n' \
        opcache.enable=1 \
        opcache.memory_consumption=128 \
        opcache.validate_timestamps=0 \
        "session.save_path=$WIKI_DATA/php-sessions"
}

# --- contenders --------------------------------------------------------------

# php-fpm as contender $1 (php-fpm or its control, php-fpm-b).
start_php_fpm() {
    local name=$1 dir=$TMP/$1-w$WORKERS defs=() d
    mkdir -p "$dir"
    cat >"$dir/php-fpm.conf" <<EOF
[global]
error_log = $dir/error.log
pid = $dir/php-fpm.pid

[wiki]
listen = ${ADDR[$name]}
listen.mode = 0666
listen.backlog = $BACKLOG
$(run_as_lines)
pm = static
pm.max_children = $WORKERS
pm.max_requests = 0
EOF
    for d in $(php_defines); do defs+=(-d "$d"); done
    # -F: foreground, so $! is the master; -R: allowed to run as root.
    setsid "$PHP_FPM" -F -R -y "$dir/php-fpm.conf" "${defs[@]}" >"$dir/stderr.log" 2>&1 </dev/null &
    MASTER_PID=$!
    PIDS+=("$MASTER_PID")
    WORKER_PIDS=()
    LOGS=("$dir/stderr.log" "$dir/error.log")
}

start_spawn_fcgi_group() {
    local defs=() d
    for d in $(php_defines); do defs+=(-d "$d"); done
    FORKS=1 start_spawn_fcgi spawn-fcgi PHP_FCGI_CHILDREN="$WORKERS" PHP_FCGI_MAX_REQUESTS=0 \
        -- "$PHP_CGI" "${defs[@]}"
}

# herd's config for contender $1: $2 workers of `command = $3`, each with
# $4 PHP_FCGI_CHILDREN (0: none, the worker serves one request at a time),
# then the lines in $5.
write_herd_conf() {
    local name=$1 procs=$2 command=$3 children=$4 extra=${5:-} dir=$TMP/$1-w$WORKERS d
    mkdir -p "$dir" "$dir/run"
    {
        cat <<EOF
[global]
error_log = $dir/herd.log
; keep herd's pid, control and worker sockets private to this run
pid = $dir/herd.pid
worker.socket_dir = $dir/run
${HERD_GLOBAL_EXTRA:-}

[wiki]
listen = ${ADDR[$name]}
listen.mode = 0666
listen.backlog = $BACKLOG
$(run_as_lines)
pm = static
pm.max_children = $procs
command = $command
env[PHP_FCGI_MAX_REQUESTS] = 0
pm.status_path = /herd-bench-status
EOF
        ((children)) && echo "env[PHP_FCGI_CHILDREN] = $children"
        for d in $(php_defines); do echo "php_admin_value[${d%%=*}] = ${d#*=}"; done
        [[ -z $extra ]] || printf '%s\n' "$extra"
    } >"$dir/herd.conf"
    HERD_CONF=$dir/herd.conf
}

# herd running php-fpm as its engine: `command` names php-fpm, and its W
# children share one OPcache in one group (php.group_size defaults to
# pm.max_children). OPcache sizes its memory when the php-fpm master starts,
# so its settings go on php-fpm's command line (as for php-fpm itself); the
# pool's php_admin_value lines reach the children.
herd_fpm_lines() {
    local d args=()
    for d in $(php_defines); do args+=(-d "$d"); done
    printf 'args = %s\n' "${args[*]}"
}

write_contender_conf() {
    case $1 in
        herd-exec) write_herd_conf herd-exec "$WORKERS" "$PHP_CGI" 0 ;;
        herd-group) write_herd_conf herd-group "$WORKERS" "$PHP_CGI" 0 "php.group_size = $WORKERS" ;;
        herd-groups) write_herd_conf herd-groups "$WORKERS" "$PHP_CGI" 0 "php.group_size = $GROUP_SIZE" ;;
        herd-fpm | herd-fpm-b) write_herd_conf "$1" "$WORKERS" "$PHP_FPM" 0 "$(herd_fpm_lines)" ;;
    esac
}

start_herd() {
    write_contender_conf "$1"
    if [[ $1 == herd-fpm-b ]]; then
        HERD=$HERD_B start_herd_master "$HERD_CONF"
    else
        start_herd_master "$HERD_CONF"
    fi
}

# Called by bench() in lib.sh.
start_contender() {
    reset_sessions
    # Each W starts the contender again on the same path.
    rm -f "${ADDR[$1]}"
    case $1 in
        php-fpm | php-fpm-b) start_php_fpm "$1" ;;
        spawn-fcgi) start_spawn_fcgi_group ;;
        herd-*) start_herd "$1" ;;
    esac
}

# What contender $1 runs, and the processes its PSS sums, for the footer.
describe() {
    local label=${LABEL[$1]:-$1}
    case $1 in
        php-fpm) echo "$label: pm = static, $WORKERS children (master + $WORKERS processes)." ;;
        php-fpm-b) echo "$label: a second php-fpm, the same in every way: its ratios are the noise between two identical servers." ;;
        spawn-fcgi) echo "$label: one php-cgi with PHP_FCGI_CHILDREN=$WORKERS, one OPcache, no manager in the request path (parent + $WORKERS)." ;;
        herd-exec) echo "$label: $WORKERS php-cgi workers, one OPcache each (herd + $WORKERS)." ;;
        herd-group) echo "$label: one worker, php-cgi with PHP_FCGI_CHILDREN=$WORKERS (herd + parent + $WORKERS)." ;;
        herd-groups) echo "$label: $((WORKERS / GROUP_SIZE)) × a worker of php-cgi with PHP_FCGI_CHILDREN=$GROUP_SIZE (herd + $((WORKERS / GROUP_SIZE)) × (parent + $GROUP_SIZE))." ;;
        herd-fpm) echo "$label: herd running php-fpm as its engine: one worker, a php-fpm master with $WORKERS children sharing one OPcache (herd + master + $WORKERS)." ;;
        herd-fpm-b) echo "$label: as herd fpm, run by $HERD_B ($("$HERD_B" --version))." ;;
    esac
}

# False, with a note for the report, when contender $1 cannot run here.
can_run() {

    case $1 in
        herd-groups)
            if ((WORKERS % GROUP_SIZE)); then
                NOTES+=("herd groups skipped: $WORKERS workers are not groups of $GROUP_SIZE.")
                return 1
            fi
            ;;
    esac
    return 0
}

# herd's view of contender $1: every PHP process a slot. Waits for the
# static pool to fill, and fails when herd took a group for one slot (it
# reads FCGI_MAX_CONNS from php-cgi), which would measure something else.
# Read from herd's short status page (its idle and active processes count
# the slots of ready workers): `herd ctl status`, `herd ctl metrics` and
# the full pages ask a php-fpm group's own status page, whose extra child
# php-fpm keeps ~10 s and the PSS sum would count.
check_slots() {
    local slots i
    for ((i = 0; i < READY_DEADLINE * 10; i++)); do
        slots=$("$HERD" call "${ADDR[$1]}" '/herd-bench-status?json' 2>/dev/null | tail -n 1 | python3 -c '
import json, sys
s = json.load(sys.stdin)
print(s["idle processes"] + s["active processes"])' 2>/dev/null) || slots='?'
        [[ $slots == "$WORKERS" ]] && return 0
        sleep 0.1
    done
    die "$1: herd counts $slots slots, not $WORKERS (its status page)"
}

# Called by bench() in lib.sh once contender $1 answers.
check_contender() {
    check_page "$1"
    if [[ $1 == herd-* ]]; then check_slots "$1"; fi
}

# For --rate P%: php-fpm's requests a second in wrk's closed loop (keep-alive
# on, after the warm-up), measured once for the current W; sets RATE to P%
# of it.
rate_from_php_fpm() {
    local pct=${RATE_SPEC%\%} url out rps
    log "php-fpm's capacity at W = $WORKERS, for --rate $RATE_SPEC"
    MASTER_MEASURED=0
    WORKER_PIDS=()
    start_contender php-fpm
    wait_ready php-fpm
    url=$(contender_url php-fpm on)
    out=$TMP/wrk/capacity-w$WORKERS.txt
    setsid wrk -t2 -c"$CONNECTIONS" -d"$WARMUP" "$url" >"$out.warmup" 2>&1 || true
    setsid wrk -t2 -c"$CONNECTIONS" -d"$DURATION" "$url" >"$out" 2>&1 ||
        { show_logs "$out"; die "wrk failed against php-fpm (capacity)"; }
    stop_contender
    rps=$(sed -n 's/^Requests\/sec: *\([0-9]*\).*/\1/p' "$out")
    if [[ ! $rps =~ ^[1-9][0-9]*$ ]]; then die "could not read php-fpm's requests a second from $out"; fi
    RATE=$((rps * pct / 100))
    ((RATE > 0)) || RATE=1
    RATE_NOTE=" ($pct% of the $rps php-fpm answered in wrk's closed loop just before)"
    log "--rate $RATE_SPEC: $RATE requests a second"
}

# --- report ------------------------------------------------------------------

source_version() {
    local rev dirty=
    rev=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null) || { echo "tree: no git"; return; }
    [[ -z $(git -C "$REPO" status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null) ]] ||
        dirty=" + uncommitted changes"
    echo "tree: git $rev$dirty"
}

versions() {
    local v=()
    v+=("DokuWiki $(cat "$WIKI/VERSION") (Debian dokuwiki $(dpkg-query -W -f='${Version}' dokuwiki 2>/dev/null || echo '?'))")
    v+=("$("$PHP_FPM" -v | head -n 1)")
    v+=("$(spawn-fcgi -v | head -n 1)")
    v+=("$(nginx -v 2>&1)")
    wants_herd && v+=("$("$HERD" --version) ($(source_version))")
    v+=("$(wrk_version)")
    [[ -z $RATE_SPEC ]] || v+=("$("$OHA" --version | head -n 1)")
    local IFS=';'
    echo "${v[*]}" | sed 's/;/; /g'
}

# One table for the current W, appended to $TMP/app-report.md.
report_workers() {
    local s opcache
    opcache=$(php_defines | grep '^opcache' | tr '\n' ' ')
    REPORT_FOOTER=
    for s in "${RAN[@]}"; do REPORT_FOOTER+="$(describe "$s") "; done
    REPORT_FOOTER+="Every PHP process: \`${opcache% }\`, sessions in DokuWiki's data directory$( ((EUID == 0)) && echo ", user www-data"). DokuWiki's data directory (its cache, locks and the sessions) on a ${WIKI_DATA_FS}$( [[ $WIKI_DATA_FS == tmpfs ]] && echo " of its own"); sessions emptied before each contender starts."
    ((${#NOTES[@]} == 0)) || REPORT_FOOTER+=$'\n\n'"${NOTES[*]}"
    OUT='' render_report php-fpm \
        "Benchmark $(date -u '+%Y-%m-%d %H:%M UTC'), nproc $(nproc), $WORKERS PHP processes per contender, $CONNECTIONS connections, $DURATION per row ($( [[ -n $RATE ]] && echo "oha at $RATE requests a second$RATE_NOTE, after a ${WARMUP} wrk warm-up" || echo "wrk -t2, ${WARMUP} warm-up")), unix sockets; DokuWiki page \`$PAGE_ID\` from its render cache ($PAGE_FILES PHP files a view, $PAGE_BYTES bytes) via nginx" \
        "Versions: $(versions)" >/dev/null
    printf '\n### %s PHP processes, %s connections\n\n' "$WORKERS" "$CONNECTIONS" | tee -a "$TMP/app-report.md"
    tee -a "$TMP/app-report.md" <"$TMP/report.md"
}

main() {
    parse_args "$@"
    setup_traps
    install_missing
    [[ -z $RATE_SPEC ]] || install_oha
    build_herd
    make_tmp
    make_wiki
    assign_addresses
    start_nginx
    warm_wiki
    : >"$TMP/app-report.md"
    local w s
    for w in ${WORKERS_LIST//,/ }; do
        WORKERS=$w
        CONNECTIONS=$((PER_WORKER * w))
        ROWS=$TMP/rows-w$w.tsv
        : >"$ROWS"
        NOTES=()
        RAN=()
        [[ $RATE_SPEC != *% ]] || rate_from_php_fpm
        local round
        local order
        for ((round = 1; round <= ROUNDS; round++)); do
            ROUND=$round
            # Every other round in reverse, so no contender always runs
            # right after the same other one (or always first).
            order=("${CONTENDERS[@]}")
            ((round % 2)) || mapfile -t order < <(printf '%s\n' "${CONTENDERS[@]}" | tac)
            for s in "${order[@]}"; do
                { wants "$s" && can_run "$s"; } || continue
                bench "$s"
                ((round > 1)) || RAN+=("$s")
            done
        done
        report_workers
    done
    [[ -z $OUT ]] || cp "$TMP/app-report.md" "$OUT"
}

main "$@"
