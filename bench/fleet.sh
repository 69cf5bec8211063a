#!/usr/bin/env bash
# Fleet mode's backfill bench (issue #22): FLEET_FILES small JSON Lines files present in one
# shared drop folder, ingested by 1, 2 and 3 instances of `batchdrop run --once` started
# together on one PostgreSQL database (a throwaway cluster of the bench's own) and one
# emulator. Prints, per instance count: the wall-clock time until every instance exited,
# files/s, how many batches each instance created, and `uptime`'s load average. Not part of
# `bench/run.sh --quick` (it takes minutes).
#
#   bench/fleet.sh                 100000 files, instances 1 2 3, release binary
#   FLEET_FILES=20000 bench/fleet.sh
#
# Then the failover figure: two running instances, FLEET_FAILOVERS (5) times the one holding
# batches in flight is SIGKILLed; the time until another instance leased them (the issue's
# bound: lease + 5 s).
#
# Knobs: FLEET_FILES (100000), FLEET_INSTANCES ("1 2 3"), FLEET_LEASE ("10s"), EMU_DELAY_MS
# (10, the emulator's processing_delay_ms), FLEET_FAILOVERS (5; 0: none), FAILOVER_DELAY_MS
# (4000: how long the emulator keeps a batch processing in the failover part), BENCH_PROFILE (release; "dev" runs
# target/debug/batchdrop), BENCH_BIN (this binary instead, no build), BENCH_KEEP=1 (keep the
# temp dir). Needs PostgreSQL 15 in /usr/lib/postgresql/15/bin (initdb runs as the `postgres`
# user when the bench runs as root, since initdb refuses root), python3, and the toolchain.
set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."

FILES=${FLEET_FILES:-100000}
COUNTS=${FLEET_INSTANCES:-"1 2 3"}
LEASE=${FLEET_LEASE:-10s}
PROFILE=${BENCH_PROFILE:-release}
PGBIN=/usr/lib/postgresql/15/bin
log() { printf '[fleet %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
fail() {
    log "FAILED: $*"
    exit 1
}
[[ -x $PGBIN/initdb ]] || fail "PostgreSQL 15 is not in $PGBIN (Debian: apt-get install postgresql-15)"

if [[ -n ${BENCH_BIN:-} ]]; then
    BIN=$BENCH_BIN
elif [[ $PROFILE == dev ]]; then
    cargo build --bin batchdrop >&2
    BIN=$PWD/target/debug/batchdrop
else
    cargo build --release --bin batchdrop >&2
    BIN=$PWD/target/release/batchdrop
fi

T=$(mktemp -d "${TMPDIR:-/tmp}/batchdrop-fleet.XXXXXX")
chmod 755 "$T"
PIDS=()
# shellcheck source=bench/fleet-common.sh
source bench/fleet-common.sh
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    stop_postgres
    if [[ ${BENCH_KEEP:-0} == 1 ]]; then log "kept $T"; else rm -rf "$T"; fi
}
trap cleanup EXIT

start_postgres
start_emulator
PIDS+=("$EMU_PID")

# ---- one backfill per instance count --------------------------------------------------------
RESULTS=()
for n in $COUNTS; do
    run=$T/run$n
    mkdir -p "$run/drop"
    as_pg "$PGBIN/psql" -h "$T/pg" -U postgres -qc "CREATE DATABASE run$n" postgres
    python3 - "$run/drop" "$FILES" <<'PY'
import os, sys
drop, files = sys.argv[1], int(sys.argv[2])
for i in range(files):
    sub = os.path.join(drop, f"d{i // 1000:03d}")
    if i % 1000 == 0:
        os.makedirs(sub, exist_ok=True)
    with open(os.path.join(sub, f"f{i:06d}.json"), "w") as f:
        for r in range(2):
            f.write(f'{{"id": {i * 2 + r}, "name": "record {i}-{r}", "pad": "{"x" * 60}"}}\n')
PY
    for i in $(seq "$n"); do
        cat >"$run/config-$i.toml" <<TOML
state = { url = "postgres://postgres@localhost/run$n?host=$T/pg", lease = "$LEASE" }
state_dir = "$run/state-$i"
$(platform_toml)
[[watch]]
path = "$run/drop"
dataset = "bench"
mode = "poll"
settle = "1s"
TOML
    done
    sync
    log "$n instance(s): $FILES files present; starting"
    start=$(date +%s.%N)
    pids=()
    for i in $(seq "$n"); do
        "$BIN" run --once --config "$run/config-$i.toml" 2>"$run/daemon-$i.log" &
        pids+=($!)
        PIDS+=($!)
    done
    for pid in "${pids[@]}"; do wait "$pid" || fail "an instance failed (see $run/daemon-*.log)"; done
    end=$(date +%s.%N)
    load=$(uptime | sed 's/.*load average: //')
    archived=$(find "$run/drop/_archive" -name '*.json' ! -name '*.receipt.json' | wc -l)
    left=$(find "$run/drop" -path "$run/drop/_archive" -prune -o -name '*.json' -print | wc -l)
    ((archived == FILES && left == 0)) || fail "$n instance(s): $archived of $FILES archived, $left left in the drop folder"
    spread=
    for i in $(seq "$n"); do
        spread+="$(grep -c '"batch created"' "$run/daemon-$i.log" || true) "
    done
    secs=$(awk -v s="$start" -v e="$end" 'BEGIN { printf "%.1f", e - s }')
    rate=$(awk -v f="$FILES" -v s="$start" -v e="$end" 'BEGIN { printf "%.0f", f / (e - s) }')
    RESULTS+=("| $n | $FILES | $secs | $rate | ${spread% } | $load |")
    log "$n instance(s): $secs s, $rate files/s, batches per instance: ${spread% }; load $load"
    rm -rf "$run/drop"
done

echo "| instances | files | s (start → every instance exited) | files/s | batches created per instance | load average at the end (1, 5, 15 min) |"
echo "|---|---|---|---|---|---|"
printf '%s\n' "${RESULTS[@]}"

# ---- failover: a killed instance's batches resume elsewhere within lease + 5 s ---------------
# Two running instances, batches kept in flight by a slow platform (the emulator holds each in
# processing for FAILOVER_DELAY_MS); FLEET_FAILOVERS times: SIGKILL the instance holding the
# most batches, and time until none is leased to it any more (another took them over),
# measured by querying the database every 100 ms.
((${FLEET_FAILOVERS:-5} > 0)) || exit 0
kill "${PIDS[0]}"
wait "${PIDS[0]}" 2>/dev/null || true
sed -i "s/^processing_delay_ms = .*/processing_delay_ms = ${FAILOVER_DELAY_MS:-4000}/" "$T/emulator.toml"
"$BIN" emulator --listen 127.0.0.1:0 --data-dir "$T/platform2" --config "$T/emulator.toml" \
    >"$T/emulator2.out" 2>"$T/emulator2.log" &
PIDS+=($!)
for _ in $(seq 600); do grep -qs 'listening on' "$T/emulator2.out" && break; sleep 0.1; done
EMU2=$(sed -n 's/.*listening on \(http[^ ]*\).*/\1/p' "$T/emulator2.out")
run=$T/failover
mkdir -p "$run/drop"
as_pg "$PGBIN/psql" -h "$T/pg" -U postgres -qc "CREATE DATABASE failover" postgres
sql() { as_pg "$PGBIN/psql" -h "$T/pg" -U postgres -d failover -Atqc "$1"; }
declare -A RUNNING=()
start_instance() { # I
    sed "s|$EMU|$EMU2|; s|/run[0-9]*?host|/failover?host|; s|state-$1\"|failover-state-$1\"|; s|$T/run[0-9]*/drop|$run/drop|; s|^settle = .*|settle = \"300ms\"\nmax_wait = \"1s\"|" \
        "$T/run${COUNTS%% *}/config-1.toml" >"$run/config-$1.toml"
    "$BIN" run --config "$run/config-$1.toml" 2>>"$run/daemon-$1.log" &
    RUNNING[$1]=$!
    PIDS+=($!)
}
start_instance 1
start_instance 2
TIMES=()
for k in $(seq "${FLEET_FAILOVERS:-5}"); do
    for f in $(seq 40); do
        printf '{"id": %d, "round": %d}\n' "$f" "$k" >"$run/drop/.k$k-$f.tmp" && mv "$run/drop/.k$k-$f.tmp" "$run/drop/k$k-$f.json"
    done
    victim= held=0
    for _ in $(seq 300); do
        for i in 1 2; do
            n=$(sql "SELECT COUNT(*) FROM batches b JOIN instances i ON i.id = b.lease_owner
                      WHERE i.pid = ${RUNNING[$i]} AND b.state IN ('creating', 'loading', 'completing', 'processing')" 2>/dev/null || echo 0)
            if ((n > held)); then victim=$i held=$n; fi
        done
        [[ -n $victim ]] && break
        sleep 0.1
    done
    [[ -n $victim ]] || fail "failover $k: no instance held a batch in flight"
    owner=$(sql "SELECT id FROM instances WHERE pid = ${RUNNING[$victim]}")
    kill -9 "${RUNNING[$victim]}"
    killed=$(date +%s.%N)
    while (($(sql "SELECT COUNT(*) FROM batches WHERE lease_owner = '$owner' AND state IN ('sealed', 'creating', 'loading', 'completing', 'processing')") > 0)); do
        sleep 0.1
    done
    took=$(awk -v s="$killed" -v e="$(date +%s.%N)" 'BEGIN { printf "%.2f", e - s }')
    TIMES+=("$took")
    log "failover $k: instance $victim killed holding $held batch(es) in flight; taken over after $took s (lease $LEASE)"
    start_instance "$victim"
    # The next round starts once the fleet drained this one's files.
    for _ in $(seq 1200); do
        [[ -z $(find "$run/drop" -maxdepth 1 -name '*.json' -print -quit) ]] && break
        sleep 0.1
    done
done
sorted=$(printf '%s\n' "${TIMES[@]}" | sort -n)
echo
echo "failover with a $LEASE lease (SIGKILL → its in-flight batches leased to another), ${#TIMES[@]} kills: $(echo $sorted | tr '\n' ' ')s; median $(echo "$sorted" | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }') s, max $(echo "$sorted" | tail -n 1) s; load $(uptime | sed 's/.*load average: //')"
