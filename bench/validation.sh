# bench/run.sh's scenario V1 (issue #20): B1 and B2 again on the 20-field XDM dataset of E3
# (bench-xdm), with validate = "off" and "reject"; the issue bounds the cost of validation at
# 20 % of the throughput. Sourced by bench/run.sh (it uses its helpers: write_config,
# start_daemon, stop_daemon, wait_for, wait_logged, gen_big, row, ...); not run on its own.

# v1_config NAME VALIDATE: B1's config on the bench-xdm dataset, with `validate = VALIDATE`.
v1_config() {
    write_config "$1" 1s 1s
    sed -i "s/^dataset = \"bench\"$/dataset = \"bench-xdm\"\nvalidate = \"$2\"/" "$T/$1/config.toml"
}
# v1_checked NAME: fails the run unless the daemon of NAME had the schema to validate with.
v1_checked() {
    compgen -G "$T/$1/state/schemas/*" >/dev/null || fail "$1: no schema kept: nothing was validated"
    ! grep -q 'not checked locally' "$T/$1/daemon.log" || fail "$1: the daemon did not validate"
}
# v1_b1 VALIDATE: sets V1_MS, drop → all V1_FILES files ingested.
v1_b1() {
    local name=v1-b1-$1 t0
    gen_small "$T/$name-src" "$V1_FILES" "$B1_FILE_BYTES" "v1$1-" xdm
    v1_config "$name" "$1"
    start_daemon "$name"
    now_ms
    t0=$NOW_MS
    find "$T/$name-src" -maxdepth 1 -name '*.json' -print0 | xargs -0 mv -t "$T/$name/drop"
    POLL=0.25 wait_for "V1 B1 validate=$1" "$SCENARIO_TIMEOUT" ingested_at_least "$V1_FILES"
    now_ms
    V1_MS=$((NOW_MS - t0))
    stop_daemon "V1 B1"
    [[ $1 == off ]] || v1_checked "$name"
    rm -rf "$T/$name" "$T/$name-src"
}
# v1_b2 VALIDATE FILE: sets V1_MS, drop → the file uploaded (settle, the read that hashes and
# validates, the upload).
v1_b2() {
    local name=v1-b2-$1 t0
    v1_config "$name" "$1"
    sync
    start_daemon "$name"
    now_ms
    t0=$NOW_MS
    ln "$2" "$T/$name/drop/${2##*/}"
    wait_logged "V1 B2 validate=$1" "$SCENARIO_TIMEOUT" "$T/$name/daemon.log" '"message":"uploaded"'
    now_ms
    V1_MS=$((NOW_MS - t0))
    POLL=0.25 wait_for "V1 B2 validate=$1 ingested" "$SCENARIO_TIMEOUT" ingested_at_least 1
    stop_daemon "V1 B2"
    [[ $1 == off ]] || v1_checked "$name"
    rm -rf "$T/$name"
}
v1() {
    : "${V1_FILES:=$B1_FILES}" "${V1_MIB:=$B2_MIB}"
    log "V1: validation on vs off, B1 ($V1_FILES files) and B2 ($V1_MIB MiB) on bench-xdm"
    local off on r big=$T/v1-src/big.json
    v1_b1 off
    off=$V1_MS
    v1_b1 reject
    on=$V1_MS
    r=$(ratio "$off" "$on")
    row V1 "B1 files/s with validate = \"reject\" (20-field schema) against \"off\", $V1_FILES files" \
        "$(awk -v n="$V1_FILES" -v ms="$on" 'BEGIN { printf "%.0f", n / (ms / 1000) }') ($(secs "$on") s)" \
        "off $(awk -v n="$V1_FILES" -v ms="$off" 'BEGIN { printf "%.0f", n / (ms / 1000) }') ($(secs "$off") s)" \
        "$r×" "≥ 0.8× off" "$(met "$r >= 0.8")"
    mkdir -p "$T/v1-src"
    gen_big "$big" "$V1_MIB"
    # Older than settle for both runs: a file written just before would wait out settle in the
    # first run only (the "off" one), which hid the check's cost at 512 MiB (sessions 13-18).
    touch -d '1 minute ago' "$big"
    v1_b2 off "$big"
    off=$V1_MS
    v1_b2 reject "$big"
    on=$V1_MS
    rm -rf "$T/v1-src"
    r=$(ratio "$off" "$on")
    row V1 "B2 MB/s drop → uploaded with validate = \"reject\" against \"off\", one $V1_MIB MiB file" \
        "$(mb_s $((V1_MIB * MIB)) "$on") ($(secs "$on") s)" "off $(mb_s $((V1_MIB * MIB)) "$off") ($(secs "$off") s)" \
        "$r×" "≥ 0.8× off" "$(met "$r >= 0.8")"
}

