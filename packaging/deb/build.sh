#!/usr/bin/env bash
# Builds the .deb with cargo-deb and checks it: its contents (dpkg-deb -c), lintian where it
# is installed, and the unit as installed, unpacked into a scratch root (dpkg-deb -x), checked
# by `systemd-analyze verify` with the unpacked binary.
#
#   bash packaging/deb/build.sh              # release build (what to ship)
#   bash packaging/deb/build.sh --profile dev --no-build   # CI: the binary `cargo test` built
#
# The unit, man pages and completions are generated into target/deb-assets/ first, by the
# binary itself (the unit from systemd/batchdrop.service, with the binary in /usr/bin).
set -euo pipefail
cd "$(dirname "$0")/../.."

profile=release
build=1
while [ $# -gt 0 ]; do
    case "$1" in
        --profile) profile=$2; shift 2 ;;
        --no-build) build=0; shift ;;
        *) echo "usage: build.sh [--profile PROFILE] [--no-build]" >&2; exit 2 ;;
    esac
done
dir=$([ "$profile" = dev ] && echo debug || echo "$profile")
command -v cargo-deb >/dev/null 2>&1 || {
    echo "cargo-deb is not installed: cargo install --locked cargo-deb" >&2
    exit 1
}
[ "$build" = 1 ] && cargo build --profile "$profile" --bin batchdrop
bin="target/$dir/batchdrop"

assets=target/deb-assets
rm -rf "$assets"
mkdir -p "$assets/man" "$assets/completions"
sed 's#/usr/local/bin/batchdrop#/usr/bin/batchdrop#g' systemd/batchdrop.service >"$assets/batchdrop.service"
"$bin" man --out "$assets/man"
"$bin" completions bash >"$assets/completions/batchdrop"
"$bin" completions zsh >"$assets/completions/_batchdrop"
"$bin" completions fish >"$assets/completions/batchdrop.fish"

# A dev build is only packed to be checked: stripped (its debug info is most of its 160 MB)
# and compressed fast. A release build is stripped by cargo-deb and compressed with xz.
quick=()
[ "$profile" = dev ] && quick=(--strip --fast)
deb=$(cargo deb --no-build --profile "$profile" "${quick[@]}" 2>&1 | tail -n 1)
[ -f "$deb" ] || { echo "cargo deb made no package: $deb" >&2; exit 1; }
echo "== $deb"

echo "== contents"
contents=$(dpkg-deb -c "$deb")
for path in ./usr/bin/batchdrop ./usr/lib/systemd/system/batchdrop.service \
    ./usr/lib/sysusers.d/batchdrop.conf ./usr/lib/tmpfiles.d/batchdrop.conf \
    ./etc/batchdrop/config.toml ./usr/share/man/man1/batchdrop.1.gz \
    ./usr/share/man/man1/batchdrop-run.1.gz ./usr/share/bash-completion/completions/batchdrop \
    ./usr/share/zsh/vendor-completions/_batchdrop \
    ./usr/share/fish/vendor_completions.d/batchdrop.fish; do
    grep -q " $path\$" <<<"$contents" || { echo "FAIL: $deb lacks $path" >&2; exit 1; }
done
dpkg-deb -f "$deb" Package Version Depends
dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles | grep -qx /etc/batchdrop/config.toml || {
    echo "FAIL: /etc/batchdrop/config.toml is not a conffile" >&2
    exit 1
}
echo "ok: binary, unit, sysusers, tmpfiles, config (a conffile), man pages, completions"

if command -v lintian >/dev/null 2>&1; then
    echo "== lintian (informational)"
    lintian --no-tag-display-limit "$deb" || true
fi

echo "== the installed unit, in a scratch root"
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
dpkg-deb -x "$deb" "$root"
"$root/usr/bin/batchdrop" --version
# The installed unit, its /usr/bin/batchdrop pointed at the unpacked binary (the rest is
# checked against this system's targets and /bin/kill).
bash .ci/verify-unit.sh "$root/usr/lib/systemd/system/batchdrop.service" \
    /usr/bin/batchdrop "$root/usr/bin/batchdrop"
systemd-sysusers --root="$root" batchdrop.conf
systemd-tmpfiles --root="$root" --create batchdrop.conf
grep -q '^batchdrop:' "$root/etc/passwd" && [ -d "$root/srv/drop" ] || {
    echo "FAIL: the installed sysusers.d and tmpfiles.d files made no user or no /srv/drop" >&2
    exit 1
}
echo "ok: the installed sysusers.d and tmpfiles.d files apply"
