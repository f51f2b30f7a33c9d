# shellcheck shell=bash
# DokuWiki for app.sh: a private copy of Debian's package, one page rendered
# into the cache before any contender starts, and the check that a
# contender serves that page from the cache (check_page). Sourced, never run.
#
# The sourcing script sets WIKI_SRC, WIKI_CONF_SRC, WIKI_DATA_SRC, PAGE_ID,
# MARKER, PHP_CGI and BENCH_DIR, and defines php_defines (the -d settings
# every PHP process gets); lib.sh provides the rest.

# DokuWiki, private to this run:
#   $WIKI        the package's files with lib/tpl and lib/plugins resolved,
#                and its config in conf/ (upstream's layout, so inc/preload.php
#                need not point at /etc/dokuwiki); read-only for the workers
#   $WIKI_DATA   the package's data dir, the page, PHP's sessions; the only
#                place the workers write. On a tmpfs of its own when run as
#                root: every view writes a session file and takes DokuWiki's
#                mkdir locks, and on a disk that made the runs wait on the
#                disk (half the req/s of a tmpfs here) and on its writeback
#                at moments no contender chose: what a process manager costs
#                would drown in it.
make_wiki() {
    WIKI=$TMP/dokuwiki
    WIKI_DATA=$TMP/wiki-data
    WIKI_DATA_FS=disk
    if ((EUID == 0)); then
        mkdir -p "$WIKI_DATA"
        if mount -t tmpfs -o size=2g,mode=0755 herd-bench "$WIKI_DATA"; then
            MOUNTS+=("$WIKI_DATA")
            WIKI_DATA_FS=tmpfs
        else
            log "no tmpfs for DokuWiki's data (mount failed): it stays on $(df --output=fstype "$TMP" | tail -n 1)"
        fi
    fi
    cp -rL "$WIKI_SRC" "$WIKI"
    cp -rL "$WIKI_CONF_SRC" "$WIKI/conf"
    install -m 644 "$WIKI_SRC/inc/preload.php.dist" "$WIKI/inc/preload.php"
    cat >"$WIKI/conf/local.php" <<EOF
<?php
// Written by contrib/bench/app.sh.
\$conf['title'] = 'herd benchmark wiki';
\$conf['license'] = 'cc-by-sa';
\$conf['useacl'] = 1;
\$conf['superuser'] = '@admin';
\$conf['savedir'] = '$WIKI_DATA';
// Links in the cached page do not depend on which contender rendered it.
\$conf['basedir'] = '/wiki/';
// Appends "<!-- cachefile ... used -->" to the page: how the checks know the
// measured request is served from the render cache.
\$conf['allowdebug'] = 1;
EOF
    # The copies are root's; the workers read them and nothing more.
    chmod -R a+rX,go-w "$WIKI"
    cp -r "$WIKI_DATA_SRC/." "$WIKI_DATA"
    mkdir -p "$WIKI_DATA/php-sessions"
    install -m 644 "$BENCH_DIR/app-page.txt" "$WIKI_DATA/pages/$PAGE_ID.txt"
    ((EUID == 0)) && chown -R www-data:www-data "$WIKI_DATA"
    chmod 755 "$WIKI_DATA"
    # DokuWiki uses a cached page only when it is strictly newer than the
    # page, the config and the parser (one-second mtimes): files copied or
    # written this second would make it render the page again and again.
    find "$WIKI" "$WIKI_DATA/pages" -exec touch -h -d '1 hour ago' {} +
    SCRIPT_FILENAME=$WIKI/doku.php
    log "DokuWiki $(cat "$WIKI/VERSION") in $WIKI: $(find "$WIKI" -name '*.php' | wc -l) PHP files"
}

# As a worker would, without a server: $1 is a php-cgi option file for
# auto_prepend_file (or empty). Prints the response; HTTP_HOST and
# SERVER_PORT as nginx passes them, since they key DokuWiki's cache.
php_cgi_request() {
    local prepend=$1 defs=() d runas=()
    for d in $(php_defines); do defs+=(-d "$d"); done
    [[ -z $prepend ]] || defs+=(-d "auto_prepend_file=$prepend")
    ((EUID == 0)) && runas=(runuser -u www-data --)
    "${runas[@]}" env -i PATH=/usr/bin:/bin REDIRECT_STATUS=200 GATEWAY_INTERFACE=CGI/1.1 \
        REQUEST_METHOD=GET SCRIPT_FILENAME="$SCRIPT_FILENAME" SCRIPT_NAME=/wiki/doku.php \
        REQUEST_URI="/wiki/doku.php?id=$PAGE_ID" QUERY_STRING="id=$PAGE_ID" \
        HTTP_HOST="127.0.0.1:$NGINX_PORT" SERVER_NAME=127.0.0.1 SERVER_PORT="$NGINX_PORT" \
        REMOTE_ADDR=127.0.0.1 SERVER_PROTOCOL=HTTP/1.1 \
        "$PHP_CGI" "${defs[@]}" 2>>"$TMP/warm.log"
}

# Renders the page once, before any contender, so that every contender
# serves it from the cache; the second request counts the PHP files a
# cached page view loads.
warm_wiki() {
    local counter=$TMP/count-files.php out
    cat >"$counter" <<'EOF'
<?php
register_shutdown_function(function () {
    file_put_contents('php://stderr', 'files=' . count(get_included_files()) . "\n");
});
EOF
    chmod 644 "$counter"
    out=$(php_cgi_request "") || true
    [[ $out == *"$MARKER"*"no cachefile used, but created"* ]] ||
        { show_logs "$TMP/warm.log"; printf '%s\n' "$out" | tail -n 20 >&2; die "DokuWiki did not render the page ($PAGE_ID)"; }
    out=$(php_cgi_request "$counter") || true
    [[ $out == *"$MARKER"*"<!-- cachefile "*" used -->"* ]] ||
        { printf "%s\n" "$out" | grep -a "cachefile\|^Status" >&2; die "DokuWiki did not serve the page from its cache"; }
    # Less the counter itself.
    PAGE_FILES=$(($(sed -n 's/^files=//p' "$TMP/warm.log" | tail -n 1) - 1))
    PAGE_BYTES=$(printf '%s' "${out#*$'\r\n\r\n'}" | wc -c)
    log "page $PAGE_ID rendered and cached: a view loads $PAGE_FILES PHP files, $PAGE_BYTES bytes of HTML"
}

# A contender starts with no session of the one before: DokuWiki starts a
# session on every view, and wrk sends no cookie, so each request leaves a
# file there.
reset_sessions() {
    rm -rf "$WIKI_DATA/php-sessions"
    mkdir -m 700 "$WIKI_DATA/php-sessions"
    ((EUID == 0)) && chown www-data:www-data "$WIKI_DATA/php-sessions"
    return 0
}

# Both locations of contender $1 must answer 200 with the whole page,
# served from DokuWiki's render cache.
check_page() {
    local s=$1 mode url body code
    for mode in off on; do
        url=$(contender_url "$s" "$mode")
        body=$(curl -s --max-time 5 -w '\n%{http_code}' "$url") || die "$s ($mode): no answer from $url"
        code=${body##*$'\n'}
        body=${body%$'\n'*}
        [[ $code == 200 ]] || die "$s ($mode): HTTP $code from $url"
        [[ $body == *"$MARKER"* && $body == *"</html>"* ]] ||
            die "$s ($mode): the answer is not the whole page (no $MARKER or </html>)"
        [[ $body == *"<!-- cachefile "*" used -->"* ]] ||
            die "$s ($mode): the page was not served from DokuWiki's render cache"
    done
}
