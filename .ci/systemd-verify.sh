#!/usr/bin/env bash
# Checks the systemd files in systemd/ with systemd's own tools:
#   - systemd-analyze verify on batchdrop.service (syntax, directive values, executables);
#   - systemd-sysusers and systemd-tmpfiles on batchdrop.sysusers / batchdrop.tmpfiles, applied
#     to a throw-away root directory (nothing on this machine is changed).
# systemd does not need to be running (a container is fine); its tools must be installed.
# Installs them when missing (as root, with apt). Prints a SKIP line and exits 0 only when
# they cannot be installed. Exits non-zero when a check fails.
set -euo pipefail
cd "$(dirname "$0")/.."

unit=systemd/batchdrop.service
sysusers=systemd/batchdrop.sysusers
tmpfiles=systemd/batchdrop.tmpfiles

skip() {
    echo "SKIP systemd-verify: $*"
    exit 0
}

# ---- the tools ------------------------------------------------------------------------------
# systemd brings systemd-analyze, systemd-sysusers and systemd-tmpfiles; procps brings
# /bin/kill, which the unit's ExecReload= runs (verify checks that it exists).
missing=()
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
[ -x /bin/kill ] || missing+=(procps)
if [ ${#missing[@]} -gt 0 ]; then
    [ "$(id -u)" = 0 ] || skip "${missing[*]} not installed and not running as root"
    command -v apt-get >/dev/null 2>&1 || skip "${missing[*]} not installed and no apt-get"
    echo "== installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >/tmp/systemd-verify-apt.log 2>&1; then
        tail -n 20 /tmp/systemd-verify-apt.log
        skip "apt-get could not install ${missing[*]} (log above)"
    fi
fi
systemd-analyze --version | head -n 1

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# ---- the unit -------------------------------------------------------------------------------
# verify requires every Exec*= program to exist. batchdrop is not installed here, so a copy of
# the unit points at a stub inside the temp dir; nothing else in the unit is changed, and
# everything else (/bin/kill, targets, directive values) is checked against this system.
mkdir -p "$tmp/bin"
printf '#!/bin/sh\nexit 0\n' >"$tmp/bin/batchdrop"
chmod 0755 "$tmp/bin/batchdrop"
echo "== systemd-analyze verify $unit"
bash .ci/verify-unit.sh "$unit" /usr/local/bin/batchdrop "$tmp/bin/batchdrop"

# ---- sysusers.d and tmpfiles.d ---------------------------------------------------------------
echo "== systemd-sysusers and systemd-tmpfiles --create, in a temp root"
root="$tmp/root"
mkdir -p "$root/etc"
systemd-sysusers --root="$root" "$PWD/$sysusers"  # with --root, a relative name is looked up in the root
grep -q '^batchdrop:' "$root/etc/passwd" || { echo "FAIL: $sysusers made no user batchdrop" >&2; exit 1; }
systemd-tmpfiles --root="$root" --create "$PWD/$tmpfiles"
uid=$(awk -F: '$1 == "batchdrop" { print $3 }' "$root/etc/passwd")
perms=$(stat -c '%a %u' "$root/srv/drop")
[ "$perms" = "3770 $uid" ] || { echo "FAIL: /srv/drop is '$perms', expected '3770 $uid'" >&2; exit 1; }
echo "ok: $sysusers, $tmpfiles"

echo "systemd-verify: all checks passed"
