# shellcheck shell=bash
# Sourced by bench/fleet.sh and bench/fleet-ab.sh: the throwaway PostgreSQL 15 cluster and the
# emulator both benches run against. Expects T (the bench's temp dir), BIN, PGBIN, and the
# caller's `log` and `fail`; the caller's cleanup stops what these start (`stop_postgres`, and
# EMU_PID).

as_pg() { # the cluster's tools, as the postgres user when root (initdb refuses root)
    if ((EUID == 0)); then runuser -u postgres -- "$@"; else "$@"; fi
}

# start_postgres [SERVER OPTIONS]: a cluster in $T/pg, trust on its own Unix socket only (no
# TCP listener, so nothing else on the machine can reach it); sets PG_PID (the postmaster).
start_postgres() {
    mkdir -p "$T/pg"
    if ((EUID == 0)); then chown postgres "$T/pg"; fi
    as_pg "$PGBIN/initdb" -D "$T/pg/data" -U postgres --auth=trust --no-sync -E UTF8 >"$T/initdb.log"
    as_pg "$PGBIN/pg_ctl" -D "$T/pg/data" -l "$T/pg/server.log" -w \
        -o "-k $T/pg -c listen_addresses='' -c max_connections=200 $*" start >/dev/null
    PG_PID=$(head -n 1 "$T/pg/data/postmaster.pid")
    log "PostgreSQL on $T/pg (postmaster $PG_PID)"
}

stop_postgres() {
    if [[ -f $T/pg/data/postmaster.pid ]]; then
        as_pg "$PGBIN/pg_ctl" -D "$T/pg/data" -m immediate stop >/dev/null 2>&1 || true
    fi
}

# start_emulator [TOML TABLES]: the emulator on 127.0.0.1, one dataset "bench", its processing
# pause EMU_DELAY_MS (10); sets EMU_PID and EMU (its URL) and writes the token file $T/token.
start_emulator() {
    cat >"$T/emulator.toml" <<TOML
processing_delay_ms = ${EMU_DELAY_MS:-10}
${1:-}
[[datasets]]
id = "bench"
name = "bench"
TOML
    "$BIN" emulator --listen 127.0.0.1:0 --data-dir "$T/platform" --config "$T/emulator.toml" \
        >"$T/emulator.out" 2>"$T/emulator.log" &
    EMU_PID=$!
    for _ in $(seq 600); do grep -qs 'listening on' "$T/emulator.out" && break; sleep 0.1; done
    EMU=$(sed -n 's/.*listening on \(http[^ ]*\).*/\1/p' "$T/emulator.out")
    [[ -n $EMU ]] || fail "the emulator did not start (see $T/emulator.log)"
    printf 'bench-token\n' >"$T/token"
    chmod 600 "$T/token"
    log "emulator: $EMU"
}

# platform_toml: the config head every bench shares.
# shellcheck source=bench/platform-toml.sh
source "$(dirname "${BASH_SOURCE[0]}")/platform-toml.sh"
