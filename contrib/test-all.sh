#!/usr/bin/env bash
# Runs herd's whole test suite on a fresh Debian machine: installs what the
# tests need when it is missing (php-cgi, php-fpm, nginx, haproxy, the
# FastCGI libraries of the interop tests, and what the packaging tests
# build and read the package with), then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
[ -x /usr/bin/php-cgi8.2 ] || missing+=(php8.2-cgi)
# php-fpm runs beside herd in the tests, on the same requests.
[ -x /usr/sbin/php-fpm8.2 ] || missing+=(php8.2-fpm)
[ -x /usr/sbin/nginx ] || missing+=(nginx)
[ -x /usr/sbin/haproxy ] || missing+=(haproxy)
# tests/frontends.rs puts Apache's mod_proxy_fcgi, lighttpd and Caddy in
# front, as nginx.
[ -x /usr/sbin/apache2 ] || missing+=(apache2)
[ -x /usr/sbin/lighttpd ] || missing+=(lighttpd)
[ -x /usr/bin/caddy ] || missing+=(caddy)
# systemd's own socket activation tool starts herd in tests/systemd.rs.
[ -x /usr/bin/systemd-socket-activate ] || missing+=(systemd)
command -v python3 >/dev/null || missing+=(python3 python3-pip)
# tests/interop.rs runs workers written with libraries no one here wrote:
# Perl FCGI and FCGI::ProcManager, a libfcgi C program it builds with gcc,
# a Go program it builds with go, and flup (below) on the system's
# python3, which `nobody` can run.
[ -x /usr/bin/python3 ] || missing+=(python3)
perl -MFCGI -e1 2>/dev/null || missing+=(libfcgi-perl)
perl -MFCGI::ProcManager -e1 2>/dev/null || missing+=(libfcgi-procmanager-perl)
[ -e /usr/include/fcgiapp.h ] || missing+=(libfcgi-dev)
command -v gcc >/dev/null || missing+=(gcc)
command -v go >/dev/null || missing+=(golang-go)
# fcgiwrap runs git's git-http-backend, a CGI program, behind nginx.
[ -x /usr/sbin/fcgiwrap ] || missing+=(fcgiwrap)
command -v git >/dev/null || missing+=(git)
[ -e /usr/include/stdio.h ] || missing+=(libc6-dev)
# tests/deb.rs builds the package with contrib/deb/build.sh.
command -v dpkg-shlibdeps >/dev/null || missing+=(dpkg-dev)
command -v strip >/dev/null || missing+=(binutils)
# tests/packaging.rs rotates herd's logs with the shipped snippet.
[ -x /usr/sbin/logrotate ] || missing+=(logrotate)
# tests/generate.rs renders the man pages and runs the completion scripts
# in the shells they are for.
[ -x /usr/bin/man ] || missing+=(man-db)
[ -x /usr/bin/zsh ] || missing+=(zsh)
[ -x /usr/bin/fish ] || missing+=(fish)
if [ ${#missing[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "installing: ${missing[*]}" >&2
    # Packages must not start their services: the tests run their own
    # nginx on loopback ports and must leave nothing behind.
    policy=/usr/sbin/policy-rc.d
    added_policy=""
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
        $sudo chmod 755 "$policy"
        added_policy=1
    fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    [ -z "$added_policy" ] || $sudo rm -f "$policy"
fi

# The status tests check herd's OpenMetrics output with the reference parser.
if ! python3 -c 'import prometheus_client' 2>/dev/null; then
    python3 -m pip install --quiet prometheus_client 2>/dev/null ||
        python3 -m pip install --quiet --break-system-packages prometheus_client
fi

# The interop tests run a WSGI app on flup, which Debian does not package.
if ! python3 -c 'import flup' 2>/dev/null; then
    python3 -m pip install --quiet flup 2>/dev/null ||
        python3 -m pip install --quiet --break-system-packages flup
fi

if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --no-fail-fast
else
    cargo test --no-fail-fast
fi
