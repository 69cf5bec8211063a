#!/usr/bin/env bash
# systemd-analyze verify on a copy of UNIT whose program path FROM is replaced by TO (verify
# requires every Exec*= program to exist; the real binary is not installed where CI runs).
# verify exits 0 on unknown keys or unparsable values (it only warns), so any line naming
# batchdrop counts as a failure too. Used by systemd-verify.sh and packaging/deb/build.sh.
#
#   bash .ci/verify-unit.sh UNIT FROM TO
set -euo pipefail
unit=$1 from=$2 to=$3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sed "s#$from#$to#g" "$unit" >"$tmp/batchdrop.service"
grep -q "^ExecStart=$to run --config" "$tmp/batchdrop.service" || {
    echo "FAIL: $unit has no ExecStart=$from run --config ..." >&2
    exit 1
}
set +e
out=$(systemd-analyze verify --man=no "$tmp/batchdrop.service" 2>&1)
rc=$?
set -e
[ -n "$out" ] && printf '%s\n' "$out"
if [ $rc -ne 0 ] || grep -q batchdrop <<<"$out"; then
    echo "FAIL: systemd-analyze verify $unit (exit $rc)" >&2
    exit 1
fi
echo "ok: $unit"
