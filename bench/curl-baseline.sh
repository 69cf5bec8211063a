#!/usr/bin/env bash
# What a user does without batchdrop: the platform guide's curl calls, in a shell loop.
# The benchmark (bench/run.sh) runs it against the same emulator as batchdrop, in the same run.
#
#   curl-baseline.sh files  BASE_URL DATASET DIR
#       B1: every *.json file of DIR, in batches of at most 1500 (the platform's limit):
#       create batch, PUT each file (one curl per file, as the guide shows), COMPLETE; then poll
#       every batch until it is terminal.
#   curl-baseline.sh chunks BASE_URL DATASET NAME TOTAL_BYTES CHUNK_FILE...
#       B2: one large file already split into chunk files (in order): create batch,
#       INITIALIZE, PATCH each chunk in sequence with its Content-Range, file COMPLETE,
#       batch COMPLETE, poll until terminal.
#
# Prints `upload_ms N` (files or chunks sent), `total_ms N` (create batch → every batch
# terminal), `batches ID...` and `cpu_ms N` (CPU time of the curl processes) on stdout. Exits non-zero if a call or a batch fails.
# Headers from the environment: TOKEN, API_KEY, ORG_ID, SANDBOX (any non-empty value works with
# the emulator's permissive default). POLL_SECONDS (default 0.1) is the polling interval.
set -euo pipefail
export LC_ALL=C

TOKEN=${TOKEN:-bench-token}
API_KEY=${API_KEY:-bench}
ORG_ID=${ORG_ID:-bench@AdobeOrg}
SANDBOX=${SANDBOX:-prod}
POLL_SECONDS=${POLL_SECONDS:-0.1}
MAX_FILES_PER_BATCH=1500

HEADERS=(
    -H "Authorization: Bearer $TOKEN"
    -H "x-gw-ims-org-id: $ORG_ID"
    -H "x-api-key: $API_KEY"
    -H "x-sandbox-name: $SANDBOX"
)

die() {
    echo "curl-baseline: $*" >&2
    exit 1
}

now_ms() {
    local t=${EPOCHREALTIME/./}
    echo $((t / 1000))
}

# POST /batches → the new batch's id.
create_batch() {
    local base=$1 dataset=$2 answer
    answer=$(curl -sS -f -X POST "$base/data/foundation/import/batches" "${HEADERS[@]}" \
        -H 'Content-Type: application/json' \
        -d "{\"datasetId\": \"$dataset\", \"inputFormat\": {\"format\": \"json\"}}") ||
        die "create batch failed"
    # The batch's own id is the first "id" (relatedObjects, later, holds the dataset's).
    grep -o '"id" *: *"[^"]*"' <<<"$answer" | head -n 1 | sed 's/.*"\([^"]*\)"$/\1/'
}

complete_batch() {
    curl -sS -f -o /dev/null -X POST "$1/data/foundation/import/batches/$2?action=COMPLETE" \
        "${HEADERS[@]}" || die "COMPLETE of batch $2 failed"
}

# GET /catalog/batches/{id} until success (returns 0) or failed (returns 1).
wait_batch() {
    local base=$1 id=$2 status
    while :; do
        status=$(curl -sS -f "$base/data/foundation/catalog/batches/$id" "${HEADERS[@]}" |
            grep -o '"status" *: *"[a-z]*"' | head -n 1 | sed 's/.*"\([a-z]*\)"$/\1/') ||
            die "polling batch $id failed"
        case $status in
            success) return 0 ;;
            failed | aborted) return 1 ;;
        esac
        sleep "$POLL_SECONDS"
    done
}

files() {
    local base=$1 dataset=$2 dir=$3
    local -a all=("$dir"/*.json) batches=()
    [[ -e ${all[0]} ]] || die "no *.json file in $dir"
    local start end i j id f
    start=$(now_ms)
    for ((i = 0; i < ${#all[@]}; i += MAX_FILES_PER_BATCH)); do
        id=$(create_batch "$base" "$dataset")
        [[ -n $id ]] || die "no batch id in the answer"
        batches+=("$id")
        for ((j = i; j < i + MAX_FILES_PER_BATCH && j < ${#all[@]}; j++)); do
            f=${all[j]}
            curl -sS -f -o /dev/null -X PUT \
                "$base/data/foundation/import/batches/$id/datasets/$dataset/files/${f##*/}" \
                "${HEADERS[@]}" -H 'content-type: application/octet-stream' \
                --data-binary "@$f" || die "PUT $f failed"
        done
        complete_batch "$base" "$id"
    done
    end=$(now_ms)
    echo "upload_ms $((end - start))"
    for id in "${batches[@]}"; do
        wait_batch "$base" "$id" || die "batch $id did not succeed"
    done
    echo "total_ms $(($(now_ms) - start))"
    echo "batches ${batches[*]}"
}

chunks() {
    local base=$1 dataset=$2 name=$3 total=$4
    shift 4
    local start id url offset=0 len sent_at f
    start=$(now_ms)
    id=$(create_batch "$base" "$dataset")
    [[ -n $id ]] || die "no batch id in the answer"
    url="$base/data/foundation/import/batches/$id/datasets/$dataset/files/$name"
    sent_at=$(now_ms)
    curl -sS -f -o /dev/null -X POST "$url?action=INITIALIZE" "${HEADERS[@]}" ||
        die "INITIALIZE failed"
    for f in "$@"; do
        len=$(stat -c %s "$f")
        curl -sS -f -o /dev/null -X PATCH "$url" "${HEADERS[@]}" \
            -H 'Content-Type: application/octet-stream' \
            -H "Content-Range: bytes $offset-$((offset + len - 1))/$total" \
            --data-binary "@$f" || die "PATCH $f failed"
        offset=$((offset + len))
    done
    ((offset == total)) || die "the chunks hold $offset bytes, not $total"
    curl -sS -f -o /dev/null -X POST "$url?action=COMPLETE" "${HEADERS[@]}" ||
        die "file COMPLETE failed"
    echo "upload_ms $(($(now_ms) - sent_at))"
    complete_batch "$base" "$id"
    wait_batch "$base" "$id" || die "batch $id did not succeed"
    echo "total_ms $(($(now_ms) - start))"
    echo "batches $id"
}

# CPU time (user + system) of the children so far, in ms: bash's `times`, second line.
children_cpu_ms() {
    local out
    out=$(mktemp)
    times >"$out"
    awk 'NR == 2 {
        n = split($0, t, /[ms ]+/); ms = 0
        for (i = 1; i + 1 <= n; i += 2) if (t[i] != "") ms += (t[i] * 60 + t[i + 1]) * 1000
        printf "%d\n", ms }' "$out"
    rm -f "$out"
}

case ${1:-} in
    files)
        (($# == 4)) || die "usage: $0 files BASE_URL DATASET DIR"
        files "$2" "$3" "$4"
        echo "cpu_ms $(children_cpu_ms)"
        ;;
    chunks)
        (($# >= 6)) || die "usage: $0 chunks BASE_URL DATASET NAME TOTAL_BYTES CHUNK_FILE..."
        shift
        chunks "$@"
        echo "cpu_ms $(children_cpu_ms)"
        ;;
    *) die "usage: $0 files|chunks ..." ;;
esac
