#!/usr/bin/env bash
# Builds target/debian/herd_<version>-<revision>_<arch>.deb: the herd binary,
# the systemd units, an example /etc/herd/herd.conf and the logrotate
# snippet (conffiles), the man pages and the bash, zsh and fish completions
# (made by the binary itself: herd generate), and the docs. Run from
# anywhere on Debian or Ubuntu with Rust installed:
#
#   contrib/deb/build.sh            # then: dpkg -c / dpkg -I the .deb
#   REVISION=2 contrib/deb/build.sh
#   HERD_BIN=path/to/herd OUT=dir contrib/deb/build.sh
#                                   # package that binary instead of a fresh
#                                   # release build, into dir (the tests)
#
# It uses dpkg-deb on a staging directory rather than cargo-deb: cargo-deb
# reads its settings from [package.metadata.deb] in Cargo.toml, which would
# put the packaging into the crate's manifest, and it is one more tool to
# fetch; dpkg-deb, dpkg-shlibdeps and strip are on every Debian machine
# (dpkg-dev, binutils).
set -euo pipefail
cd "$(dirname "$0")/../.."

tools=(dpkg-deb dpkg-shlibdeps strip gzip)
[ -n "${HERD_BIN:-}" ] || tools+=(cargo)
for tool in "${tools[@]}"; do
    command -v "$tool" >/dev/null || {
        echo "build.sh: $tool is missing (apt install dpkg-dev binutils; Rust from rustup)" >&2
        exit 1
    }
done

version=$(sed -n 's/^version *= *"\(.*\)"/\1/p' Cargo.toml | head -1)
revision=${REVISION:-1}
arch=$(dpkg --print-architecture)
out=${OUT:-target/debian}
stage=$(mktemp -d "${TMPDIR:-/tmp}/herd-deb.XXXXXX")
trap 'rm -rf "$stage"' EXIT
chmod 0755 "$stage"

bin=${HERD_BIN:-}
if [ -z "$bin" ]; then
    cargo build --release --locked --bin herd
    bin=target/release/herd
fi

# The tree, as installed.
install -D -m 0755 "$bin" "$stage/usr/bin/herd"
# The release profile keeps line tables for backtraces; the package ships
# a stripped binary, as Debian's tools do.
strip --strip-unneeded "$stage/usr/bin/herd"
install -D -m 0644 contrib/systemd/herd.service "$stage/lib/systemd/system/herd.service"
install -D -m 0644 contrib/systemd/herd.socket "$stage/lib/systemd/system/herd.socket"
install -D -m 0644 contrib/systemd/herd.conf "$stage/etc/herd/herd.conf"
install -D -m 0644 contrib/logrotate/herd "$stage/etc/logrotate.d/herd"
# Where the logrotate snippet looks for access logs and slowlogs.
install -d -m 0755 "$stage/var/log/herd"

# Man pages and completions, from the binary being packaged.
man="$stage/usr/share/man/man1"
install -d -m 0755 "$man"
"$stage/usr/bin/herd" generate man "$man"
chmod 0644 "$man"/*.1
gzip -9n "$man"/*.1
completions() { # shell, installed path
    install -d -m 0755 "$(dirname "$stage/$2")"
    "$stage/usr/bin/herd" generate completions "$1" > "$stage/$2"
    chmod 0644 "$stage/$2"
}
completions bash usr/share/bash-completion/completions/herd
completions zsh usr/share/zsh/vendor-completions/_herd
completions fish usr/share/fish/vendor_completions.d/herd.fish
doc="$stage/usr/share/doc/herd"
install -D -m 0644 README.md "$doc/README.md"
install -D -m 0644 config/php.conf "$doc/examples/php.conf"
install -D -m 0644 config/php-cgi.conf "$doc/examples/php-cgi.conf"
install -D -m 0644 contrib/nginx/herd.conf "$doc/examples/nginx/herd.conf"
install -D -m 0644 contrib/nginx/herd-php.conf "$doc/examples/nginx/herd-php.conf"
install -D -m 0644 contrib/haproxy/haproxy.cfg "$doc/examples/haproxy.cfg"
cat > "$doc/copyright" <<EOF
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: herd

Files: *
License: $(sed -n 's/^license *= *"\(.*\)"/\1/p' Cargo.toml | head -1)
EOF
chmod 0644 "$doc/copyright"

# What the binary links against (libc6, libgcc-s1), as dpkg-shlibdeps
# computes it; it wants a debian/control to run beside.
shlibs=$(
    cd "$stage"
    mkdir -p debian
    printf 'Source: herd\n\nPackage: herd\nArchitecture: any\n' > debian/control
    dpkg-shlibdeps -O usr/bin/herd 2>/dev/null | sed -n 's/^shlibs:Depends=//p'
    rm -rf debian
)
depends=${shlibs:-libc6}
size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)

mkdir -p "$stage/DEBIAN"
cat > "$stage/DEBIAN/control" <<EOF
Package: herd
Version: $version-$revision
Architecture: $arch
Maintainer: herd maintainers <herd@localhost>
Installed-Size: $size
Depends: $depends
Recommends: nginx | haproxy
Suggests: php-cgi
Section: httpd
Priority: optional
Description: FastCGI process manager with zero-downtime deploys
 herd runs pools of FastCGI workers (php-cgi, Perl FCGI scripts, libfcgi
 programs) behind nginx or HAProxy, routes every request to the best idle
 worker itself, and replaces workers generation by generation, so that a
 deploy, a rollback or a restart never drops a request. It reads php-fpm's
 config dialect and keeps php-fpm's status formats and signals.
 .
 This package installs /usr/bin/herd, the systemd units herd.service
 (Type=notify, reload with herd ctl reload --wait, graceful stop) and
 herd.socket (socket activation), an example /etc/herd/herd.conf, a
 logrotate snippet, man pages and bash, zsh and fish completions.
EOF
printf '%s\n' /etc/herd/herd.conf /etc/logrotate.d/herd > "$stage/DEBIAN/conffiles"

# Maintainer scripts. The service is not enabled or started on install:
# edit /etc/herd/herd.conf first, then
#   systemctl enable --now herd.socket herd.service
# On upgrade, a running herd hands over to the new binary without dropping
# a connection (herd ctl upgrade).
cat > "$stage/DEBIAN/postinst" <<'EOF'
#!/bin/sh
set -e
if [ "$1" = configure ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload || true
    if [ -n "$2" ] && systemctl is-active --quiet herd.service; then
        if ! herd ctl -c /etc/herd/herd.conf upgrade; then
            echo "herd: the running master kept the old binary; run: systemctl restart herd" >&2
        fi
    fi
fi
exit 0
EOF
cat > "$stage/DEBIAN/prerm" <<'EOF'
#!/bin/sh
set -e
if [ "$1" = remove ] && [ -d /run/systemd/system ]; then
    systemctl stop herd.service herd.socket || true
    systemctl disable herd.service herd.socket >/dev/null 2>&1 || true
fi
exit 0
EOF
cat > "$stage/DEBIAN/postrm" <<'EOF'
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || true
fi
exit 0
EOF
chmod 0755 "$stage/DEBIAN/postinst" "$stage/DEBIAN/prerm" "$stage/DEBIAN/postrm"

mkdir -p "$out"
deb="$out/herd_${version}-${revision}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >/dev/null
echo "$deb"
