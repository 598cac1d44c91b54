#!/usr/bin/env bash
# CI: builds the Debian package, checks its file list, installs it, starts the installed ldmd
# with /etc/ldmd/ldmd.toml (systemd is not PID 1 here: the unit is verified, not started), asks
# `ldm list` from /, and purges the package, checking that nothing is left. Needs root and a
# machine without ldmd installed.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ "$(id -u)" != 0 ]; then
    echo "deploy/deb/check.sh: needs root (dpkg -i)"; exit 1
fi
if dpkg -s ldmd >/dev/null 2>&1; then
    echo "deploy/deb/check.sh: ldmd is installed here already; not touching it"; exit 1
fi
deploy/deb/build.sh
deb=$(ls -t target/debian/ldmd_*.deb | head -1)
echo "built $deb"

listing=$(dpkg-deb -c "$deb" | awk '{print $6}')
for file in ./usr/bin/ldmd ./usr/bin/ldm ./etc/ldmd/ldmd.toml ./lib/systemd/system/ldmd.service \
    ./usr/share/man/man8/ldmd.8.gz ./usr/share/man/man1/ldm.1.gz \
    ./usr/share/bash-completion/completions/ldm ./usr/share/zsh/vendor-completions/_ldm \
    ./usr/share/fish/vendor_completions.d/ldm.fish ./usr/share/doc/ldmd/copyright; do
    grep -qx "$file" <<<"$listing" || { echo "missing from the package: $file"; echo "$listing"; exit 1; }
done
dpkg-deb -I "$deb" | grep -q "Depends: .*libc6" || { echo "no libc6 dependency"; exit 1; }

dpkg -i "$deb"
pid=
cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
    dpkg --purge ldmd >/dev/null 2>&1 || true
}
trap cleanup EXIT
systemd-analyze verify --man=no /lib/systemd/system/ldmd.service
systemd-analyze security --offline=true --threshold=20 /lib/systemd/system/ldmd.service | tail -1

out=$(mktemp -d)
(cd / && exec /usr/bin/ldmd --config /etc/ldmd/ldmd.toml --listen 127.0.0.1:0 \
    --metrics-listen off > "$out/ready" 2> "$out/log") &
pid=$!
for _ in $(seq 200); do grep -q "ldmd ready" "$out/ready" && break; sleep 0.05; done
grep -q "unix=/run/ldmd/ldmd.sock" "$out/ready" || { cat "$out/ready" "$out/log"; exit 1; }
(cd / && ldm list) | tee "$out/list"
grep -q '^primary ' "$out/list"
man -w ldmd >/dev/null 2>&1 || echo "(man is not installed here: the page is checked in the file list)"
kill -TERM "$pid"; wait "$pid"; pid=
test -d /var/lib/ldmd

dpkg --purge ldmd
for path in /usr/bin/ldmd /usr/bin/ldm /etc/ldmd /var/lib/ldmd /lib/systemd/system/ldmd.service; do
    if [ -e "$path" ]; then echo "left after purge: $path"; exit 1; fi
done
trap - EXIT
echo "the package installs, serves and purges cleanly"
