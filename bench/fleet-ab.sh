#!/usr/bin/env bash
# Fleet mode on and off (issue #23: fleet mode must not cost more than 20 % of B1/B2): the same
# files ingested by `batchdrop run --once` with SQLite in state_dir (off, the default) and with
# one instance on PostgreSQL (on: a throwaway PostgreSQL 15 cluster of the bench's own, set up
# as bench/fleet.sh does), against one emulator, the runs alternated (off, on, off, on, ...).
# Each run starts with the files present, on a fresh store (a new state_dir, a new database,
# created by a first, untimed run on the empty folder), and ends when the instance exits (every
# file archived after its batch's success).
#
#   bench/fleet-ab.sh                        B1 3000 and 20000 files, B2 2048 MiB, 2 pairs each
#   FLEET_AB_B1="3000" FLEET_AB_B2_MIB=512 FLEET_AB_PAIRS=3 bench/fleet-ab.sh
#
# Prints one line per run: seconds, files/s (B1) or MB/s (B2), the daemon's CPU ms per file (or
# CPU s for B2), PostgreSQL's CPU (its postmaster, background processes and reaped backends:
# part of the cost in fleet mode), the emulator's CPU, and the load average; then per scenario
# the ranges and the ratio on/off of the medians.
#
# Knobs: FLEET_AB_B1 ("3000 20000": B1 sizes; "" for none), FLEET_AB_B2_MIB (2048; 0 for none),
# FLEET_AB_PAIRS (2), FLEET_AB_MODES ("off on": the runs of each pair; "on" alone times fleet
# mode only, e.g. to compare two builds run one after the other), B1_FILE_BYTES (2048), EMU_DELAY_MS (10), FLEET_LEASE (10s), BENCH_BIN
# (the binary; default target/release/batchdrop, not built here), BENCH_KEEP=1 (keep the temp
# dir), FLEET_AB_PG_LOG=1 (log every statement with its duration: log_min_duration_statement=0;
# slows the on runs, for profiling only), FLEET_AB_PG_STATS=1 (after each on run, each table's
# rows inserted, updated, of which HOT, and dead, from pg_stat_user_tables; per file, the WAL
# written and the buffers touched). Both configs use mode = "poll" (fleet mode requires
# it), settle and max_wait 1 s, and run.sh's B2 chunking (64 MiB chunks above 128 MiB).
set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."

B1_SIZES=${FLEET_AB_B1-"3000 20000"}
B2_MIB=${FLEET_AB_B2_MIB:-2048}
PAIRS=${FLEET_AB_PAIRS:-2}
MODES=${FLEET_AB_MODES:-"off on"}
LEASE=${FLEET_LEASE:-10s}
BIN=${BENCH_BIN:-$PWD/target/release/batchdrop}
PGBIN=/usr/lib/postgresql/15/bin
MIB=1048576
log() { printf '[fleet-ab %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
fail() {
    log "FAILED: $*"
    exit 1
}
[[ -x $PGBIN/initdb ]] || fail "PostgreSQL 15 is not in $PGBIN (Debian: apt-get install postgresql-15)"
[[ -x $BIN ]] || fail "no binary at $BIN (cargo build --release --bins, or set BENCH_BIN)"
[[ -x /usr/bin/time ]] || fail "needs /usr/bin/time (Debian: apt-get install time)"

T=$(mktemp -d "${TMPDIR:-/tmp}/batchdrop-fleet-ab.XXXXXX")
chmod 755 "$T"
EMU_PID=
# shellcheck source=bench/fleet-common.sh
source bench/fleet-common.sh
cleanup() {
    [[ -z $EMU_PID ]] || kill "$EMU_PID" 2>/dev/null || true
    stop_postgres
    if [[ ${BENCH_KEEP:-0} == 1 ]]; then log "kept $T"; else rm -rf "$T"; fi
}
trap cleanup EXIT

PG_OPTS=""
[[ ${FLEET_AB_PG_LOG:-0} != 1 ]] || PG_OPTS="-c log_min_duration_statement=0"
start_postgres "$PG_OPTS"
sleep 1 # its background processes start
PG_AUX=$(pgrep -c -P "$PG_PID")
start_emulator "[limits]
max_put_bytes = $((256 * MIB))"

# ---- CPU ------------------------------------------------------------------------------------
CLK_TCK=$(getconf CLK_TCK)
# PostgreSQL's CPU ticks: the postmaster's own and its reaped children's (backends exit when
# the instance disconnects), plus its live children's (checkpointer, walwriter, ...).
pg_ticks() {
    local pid sum
    sum=$(awk '{ print $14 + $15 + $16 + $17 }' "/proc/$PG_PID/stat")
    for pid in $(pgrep -P "$PG_PID"); do
        sum=$((sum + $(awk '{ print $14 + $15 }' "/proc/$pid/stat" 2>/dev/null || echo 0)))
    done
    echo "$sum"
}
# Waits (up to 10 s) until the postmaster has no more children than its background processes
# had at start: every backend of the run before has exited and been reaped, so that its CPU is
# in the postmaster's reaped children's (a backend still exiting is in neither).
pg_quiet() {
    local i
    for i in $(seq 200); do
        (($(pgrep -c -P "$PG_PID") <= PG_AUX)) && return
        sleep 0.05
    done
    log "PostgreSQL still has $(pgrep -c -P "$PG_PID") children (at start: $PG_AUX); its CPU figure may be off"
}
emu_ticks() { awk '{ print $14 + $15 }' "/proc/$EMU_PID/stat"; }
ticks_ms() { awk -v t="$1" -v hz="$CLK_TCK" 'BEGIN { printf "%d", t * 1000 / hz }'; }

# ---- one run --------------------------------------------------------------------------------
# config NAME MODE: $T/NAME/config.toml watching $T/NAME/drop, fleet mode off or on (its own
# database NAME).
config() {
    local dir=$T/$1 state=""
    mkdir -p "$dir/drop"
    if [[ $2 == on ]]; then
        as_pg "$PGBIN/psql" -h "$T/pg" -U postgres -qc "CREATE DATABASE \"$1\"" postgres
        state="state = { url = \"postgres://postgres@localhost/$1?host=$T/pg\", lease = \"$LEASE\" }"
    fi
    cat >"$dir/config.toml" <<TOML
$state
state_dir = "$dir/state"
$(platform_toml)
[upload]
large_file_threshold = $((128 * MIB))
chunk_size = $((64 * MIB))
[defaults]
settle = "1s"
max_wait = "1s"
[[watch]]
path = "$dir/drop"
dataset = "bench"
mode = "poll"
TOML
}
# run SCENARIO MODE SRC FILES BYTES: links SRC's files into a fresh drop folder, times
# `run --once` on them; appends "SCENARIO MODE secs daemon_cpu_ms pg_cpu_ms emu_cpu_ms" to
# $T/runs and logs the run.
RUN=0
run() {
    local scenario=$1 mode=$2 src=$3 files=$4 bytes=$5
    RUN=$((RUN + 1))
    local name=r$RUN-$scenario-$mode
    config "$name" "$mode"
    # A first run on the empty folder creates the store (SQLite file or database schema: the
    # migrations), as a running daemon's store exists before files are dropped; not timed.
    local w0=$EPOCHREALTIME
    "$BIN" run --once --config "$T/$name/config.toml" 2>"$T/$name/migrate.log" ||
        fail "$name: the first run on the empty folder failed (see $T/$name/migrate.log)"
    log "$name: store created in $(awk -v a="$w0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }') s"
    cp -al "$src/." "$T/$name/drop/"
    sync
    local p0 e0 t0 t1
    pg_quiet
    local lsn0=""
    if [[ $mode == on && ${FLEET_AB_PG_STATS:-0} == 1 ]]; then
        lsn0=$(as_pg "$PGBIN/psql" -h "$T/pg" -U postgres -XAtc "SELECT pg_current_wal_lsn()" postgres)
    fi
    p0=$(pg_ticks)
    e0=$(emu_ticks)
    t0=$EPOCHREALTIME
    /usr/bin/time -f '%U %S' -o "$T/$name/time" \
        "$BIN" run --once --config "$T/$name/config.toml" 2>"$T/$name/daemon.log" ||
        fail "$name: the instance failed (see $T/$name/daemon.log)"
    t1=$EPOCHREALTIME
    local pg emu cpu secs archived left load
    pg_quiet
    pg=$(ticks_ms $(($(pg_ticks) - p0)))
    emu=$(ticks_ms $(($(emu_ticks) - e0)))
    cpu=$(awk '{ printf "%d", ($1 + $2) * 1000 }' "$T/$name/time")
    secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
    archived=$(find "$T/$name/drop/_archive" -name '*.json' ! -name '*.receipt.json' | wc -l)
    left=$(find "$T/$name/drop" -path "$T/$name/drop/_archive" -prune -o -type f -name '*.json' -print | wc -l)
    ((archived == files && left == 0)) || fail "$name: $archived of $files archived, $left left"
    load=$(cut -d' ' -f1 /proc/loadavg)
    echo "$scenario $mode $secs $cpu $pg $emu $load" >>"$T/runs"
    if ((bytes > 0)); then
        log "$name: $secs s, $(awk -v b="$bytes" -v s="$secs" 'BEGIN { printf "%.0f", b / 1e6 / s }') MB/s; CPU ms: daemon $cpu, postgres $pg, emulator $emu; load $load"
    else
        log "$name: $secs s, $(awk -v n="$files" -v s="$secs" 'BEGIN { printf "%.0f", n / s }') files/s; CPU ms/file: daemon $(awk -v c="$cpu" -v n="$files" 'BEGIN { printf "%.3f", c / n }'), postgres $(awk -v c="$pg" -v n="$files" 'BEGIN { printf "%.3f", c / n }'), emulator $(awk -v c="$emu" -v n="$files" 'BEGIN { printf "%.3f", c / n }'); load $load"
    fi
    if [[ $mode == on && ${FLEET_AB_PG_STATS:-0} == 1 ]]; then
        # How the run's writes went: HOT updates add no index entries (see docs/fleet.md).
        as_pg "$PGBIN/psql" -h "$T/pg" -U postgres -XAtF' ' -c "SELECT relname, n_tup_ins, n_tup_upd,
            n_tup_hot_upd, n_dead_tup FROM pg_stat_user_tables WHERE relname IN ('files', 'batches',
            'events', 'file_claims', 'content_claims') ORDER BY relname" "$name" |
            while read -r rel ins upd hot dead; do log "$name: $rel: $ins inserted, $upd updated ($hot HOT), $dead dead"; done
        # Load-independent measures of the server's work: WAL written, buffers touched.
        as_pg "$PGBIN/psql" -h "$T/pg" -U postgres -XAtF' ' -c "SELECT
            pg_wal_lsn_diff(pg_current_wal_lsn(), '$lsn0')::bigint / $files, (blks_hit + blks_read) / $files,
            xact_commit FROM pg_stat_database WHERE datname = '$name'" postgres |
            while read -r wal blks commits; do log "$name: per file: $wal WAL bytes, $blks buffers touched; $commits commits"; done
    fi
    rm -rf "$T/$name/drop"
}
# summary SCENARIO FILES BYTES: ranges per mode and the ratios on/off of the medians.
summary() {
    awk -v sc="$1" -v n="$2" -v bytes="$3" '
        $1 == sc { k = $2; c[k]++; s[k, c[k]] = $3; d[k, c[k]] = $4; p[k, c[k]] = $5; l[k, c[k]] = $7 }
        function med(a, k,   i, j, t, m, v) {
            m = c[k]; for (i = 1; i <= m; i++) v[i] = a[k, i]
            for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
            return m % 2 ? v[(m + 1) / 2] : (v[m / 2] + v[m / 2 + 1]) / 2
        }
        function rng(a, k, f,   i, lo, hi, x) {
            for (i = 1; i <= c[k]; i++) { x = f == "rate" ? (bytes > 0 ? bytes / 1e6 / a[k, i] : n / a[k, i]) : a[k, i] / (bytes > 0 ? 1 : n)
                if (i == 1 || x < lo) lo = x; if (i == 1 || x > hi) hi = x }
            return sprintf(bytes > 0 || f == "rate" ? "%.0f–%.0f" : "%.3f–%.3f", lo, hi)
        }
        END {
            unit = bytes > 0 ? "MB/s" : "files/s"; cu = bytes > 0 ? "CPU ms" : "CPU ms/file"
            for (m = 0; m < 2; m++) { k = m ? "on" : "off"; if (!c[k]) continue
                printf "%s fleet %-3s | %d runs | %s %s | daemon %s %s | postgres %s %s | load %s–%s\n", sc, k, c[k], unit, rng(s, k, "rate"), cu, rng(d, k, "cpu"), cu, rng(p, k, "cpu"), l[k, 1], l[k, c[k]] }
            if (!c["on"] || !c["off"]) exit
            printf "%s ratio on/off (medians): wall-clock time %.2f, throughput %.2f; daemon CPU %.2f; daemon + postgres CPU %.2f\n", sc,
                med(s, "on") / med(s, "off"), med(s, "off") / med(s, "on"), med(d, "on") / med(d, "off"),
                (med(d, "on") + med(p, "on")) / (med(d, "off") + med(p, "off"))
        }' "$T/runs"
}

: >"$T/runs"
for files in $B1_SIZES; do
    src=$T/b1-$files-src
    mkdir -p "$src"
    # run.sh's gen_small: FILES JSON Lines files of about B1_FILE_BYTES bytes.
    awk -v dir="$src" -v n="$files" -v bytes="${B1_FILE_BYTES:-2048}" 'BEGIN {
        for (i = 0; i < n; i++) {
            f = sprintf("%s/b1-%07d.json", dir, i); s = 0
            for (j = 0; s < bytes; j++) {
                line = sprintf("{\"file\":%d,\"row\":%d,\"name\":\"customer %d-%d\",\"email\":\"c%d.%d@example.com\",\"score\":%d,\"active\":true}", i, j, i, j, i, j, (i * 31 + j) % 1000)
                print line > f; s += length(line) + 1
            }
            close(f)
        }
    }'
    # Let the files age past settle, as in B1 (dropped, then seen).
    sleep 1.1
    log "B1: $files files"
    for _ in $(seq "$PAIRS"); do
        for mode in $MODES; do run "b1-$files" "$mode" "$src" "$files" 0; done
    done
    rm -rf "$src"
done
if ((B2_MIB > 0)); then
    src=$T/b2-src
    mkdir -p "$src"
    awk 'BEGIN {
        for (i = 0; i < 4096; i++) {
            line = sprintf("{\"id\":%d,\"ts\":\"2026-11-29T16:%02d:%02dZ\",\"name\":\"customer %d\",\"email\":\"c%d@example.com\",\"pad\":\"", i, i % 60, i % 60, i, i)
            pad = 255 - length(line) - 2; s = ""
            while (length(s) < pad) s = s "x"
            printf "%s%s\"}\n", line, s
        }
    }' >"$T/block1"
    for _ in $(seq "$B2_MIB"); do cat "$T/block1"; done >"$src/big.json"
    sleep 1.1
    log "B2: one $B2_MIB MiB file"
    for _ in $(seq "$PAIRS"); do
        for mode in $MODES; do run b2 "$mode" "$src" 1 $((B2_MIB * MIB)); done
    done
    rm -rf "$src"
fi

echo
echo "fleet mode off (SQLite) and on (one instance, PostgreSQL 15), run --once, alternated; $(nproc) cores"
echo "scenario mode secs daemon_cpu_ms postgres_cpu_ms emulator_cpu_ms load1"
cat "$T/runs"
echo
for files in $B1_SIZES; do summary "b1-$files" "$files" 0; done
((B2_MIB <= 0)) || summary b2 1 $((B2_MIB * MIB))
