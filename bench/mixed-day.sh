# bench/run.sh's scenario B8 (issue #23), a mixed day: B8_FILES files of B8_MIN_BYTES to
# B8_MAX_BYTES (log-uniform) written in place by B8_WRITERS writers, each pausing B8_GAP_MS on
# average between files, while B8_READERS readers run `batchdrop status --json` every second.
# Figures: throughput, drop → batch success p50/p99 (the batch's `completed` time in the
# Catalog), per size class, peak RSS, and how many files took over twice their class's p99.
# The drop and measuring is bench/mixed-day.py's. Sourced by bench/run.sh (it uses its
# helpers: write_config, start_daemon, stop_daemon, row, ...); not run on its own.
#
# Files are deleted after success (`after_success = "delete"`): the emulator keeps a copy of
# every byte, and the issue's 50,000 files of up to 50 MB average 4.6 MB (230 GB). When the
# disk cannot hold the emulator's copy, B8 runs fewer files (noted under the table).

b8() {
    command -v python3 >/dev/null || {
        NOTES+=("B8: no python3 here: the mixed day did not run.")
        return
    }
    local files=$B8_FILES mean need avail out
    mean=$(awk -v lo="$B8_MIN_BYTES" -v hi="$B8_MAX_BYTES" 'BEGIN { printf "%d", (hi - lo) / log(hi / lo) }')
    avail=$(($(df -Pk "$T" | awk 'NR == 2 { print $4 }') * 1024))
    # The emulator's copy of everything, plus what is in flight: at most 60 % of the free space.
    need=$((files * mean * 13 / 10))
    if ((need > avail * 6 / 10)); then
        files=$((avail * 6 / 10 * 10 / 13 / mean))
        ((files >= 20)) || fail "B8: $((avail >> 30)) GiB free is too little for files of ~$((mean / 1000)) KB"
        NOTES+=("B8 ran $files files, not $B8_FILES: $((avail >> 30)) GiB free, files of $((mean / 1000)) KB on average.")
    fi
    log "B8: $files files of $B8_MIN_BYTES to $B8_MAX_BYTES bytes (log-uniform), $B8_WRITERS writers, $B8_READERS status readers"
    write_config b8 2s 5s # the daemon's defaults
    printf 'after_success = "delete"\n' >>"$T/b8/config.toml"
    start_daemon b8
    out=$T/b8/figures.json
    python3 "$ROOT/bench/mixed-day.py" --files "$files" --min-bytes "$B8_MIN_BYTES" \
        --max-bytes "$B8_MAX_BYTES" --writers "$B8_WRITERS" --readers "$B8_READERS" \
        --gap-ms "$B8_GAP_MS" --drop "$T/b8/drop" --binary "$BIN" --config "$T/b8/config.toml" \
        --admin "$ADMIN" --emulator "$EMU" --timeout "$SCENARIO_TIMEOUT" >"$out" ||
        fail "B8: bench/mixed-day.py failed (daemon log: $T/b8/daemon.log)"
    local rss
    rss=$(peak_rss_kib "$DAEMON_PID")
    stop_daemon B8
    # One row per figure, read from the script's JSON with python3 (already needed here).
    local figures
    figures=$(python3 - "$out" <<'EOF'
import json, sys
f = json.load(open(sys.argv[1]))
print(f"{f['files']}\t{f['bytes'] / 1e9:.2f}\t{f['batches']}\t{f['files_per_s']:.0f}\t{f['mb_per_s']:.0f}"
      f"\t{f['wall_s']:.1f}\t{f['drop_s']:.1f}\t{f['after_last_drop_s']:.1f}\t{f['p50']:.2f}\t{f['p99']:.2f}"
      f"\t{f['slower_than_2x_class_p99']}\t{f['status_calls']}\t{f['status_p50_s']:.2f}\t{f['status_max_s']:.2f}")
for c in f["classes"]:
    print(f"class\t{c['class']}\t{c['files']}\t{c['p50']:.2f}\t{c['p99']:.2f}\t{c['max']:.2f}")
EOF
    )
    local n gb batches fps mbs wall drop tail p50 p99 slow calls sp50 smax
    IFS=$'\t' read -r n gb batches fps mbs wall drop tail p50 p99 slow calls sp50 smax <<<"$(head -n 1 <<<"$figures")"
    row B8 "mixed day: $n files ($gb GB, log-uniform $B8_MIN_BYTES B–$((B8_MAX_BYTES / 1000000)) MB) by $B8_WRITERS writers, $B8_READERS \`status --json\` readers each second; files/s and MB/s, first drop → last batch success" \
        "$fps files/s, $mbs MB/s ($wall s; drops took $drop s, the last success came $tail s after the last drop; $batches batch(es))" "-" "-" "-" ""
    row B8 "… drop → batch success, s: p50 / p99" "$p50 / $p99" "-" "-" "-" ""
    local label count cp50 cp99 cmax
    while IFS=$'\t' read -r _ label count cp50 cp99 cmax; do
        row B8 "… size class $label ($count files): p50 / p99 / max, s" "$cp50 / $cp99 / $cmax" "-" "-" "max ≤ 2× p99" \
            "$(met "$cmax <= 2 * $cp99")"
    done < <(tail -n +2 <<<"$figures")
    row B8 "… files slower than 2× their size class's p99" "$slow" "-" "-" "0" "$(met "$slow == 0")"
    row B8 "… peak RSS MiB" "$(mib "$rss")" "-" "-" "-" ""
    row B8 "… \`status --json\` while it ran: calls, p50 / max s" "$calls, $sp50 / $smax" "-" "-" "-" ""
}
