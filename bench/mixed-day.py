#!/usr/bin/env python3
"""B8, a mixed day (issue #23): files of log-uniform sizes dropped over time by several writers
into a running daemon's watched folder while readers run `batchdrop status --json` every
second; then, from the platform's side (the Catalog), when each file's batch succeeded.

Run by bench/mixed-day.sh (sourced by bench/run.sh), which starts the emulator and the daemon
and reads the daemon's peak RSS. This script only drops, polls, waits and measures; it prints
one JSON object with the figures on stdout and its progress on stderr. Standard library only.

A file is "dropped" when its writer closes it: writers write in place, in 1 MiB pieces, as a
program producing the file would, so the daemon sees files still being written. Its latency is
its batch's `completed` time in the Catalog minus that instant (one machine, one clock).
"""

import argparse
import json
import math
import os
import random
import re
import subprocess
import sys
import threading
import time
import urllib.request

HEADERS = {
    "Authorization": "Bearer bench-token",
    "x-gw-ims-org-id": "bench@AdobeOrg",
    "x-api-key": "bench",
    "x-sandbox-name": "prod",
}
NAME = re.compile(r"b8-w(\d+)-(\d{6})")
# Size classes for "no file slower than 2x the p99 of its size class": decades of bytes.
CLASSES = [(0, 10_000, "< 10 KB"), (10_000, 100_000, "10-100 KB"),
           (100_000, 1_000_000, "0.1-1 MB"), (1_000_000, 10_000_000, "1-10 MB"),
           (10_000_000, 1 << 62, ">= 10 MB")]


def log(message):
    print(f"[b8 {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def get_json(url):
    request = urllib.request.Request(url, headers=HEADERS)
    with urllib.request.urlopen(request, timeout=60) as answer:
        return json.load(answer)


def sizes(count, smallest, largest, seed):
    """Log-uniform sizes: as many files of 1-10 KB as of 10-100 KB, and so on."""
    rng = random.Random(seed)
    low, high = math.log(smallest), math.log(largest)
    return [int(math.exp(rng.uniform(low, high))) for _ in range(count)]


def block_for(name):
    """About 1 MiB of JSON Lines records, the first naming the file (so no two files have the
    same content: the daemon refuses duplicates by content)."""
    lines = [json.dumps({"file": name, "line": 0}) + "\n"]
    pad = "x" * 200
    total = len(lines[0])
    line = 1
    while total < 1 << 20:
        text = json.dumps({"id": line, "pad": pad}) + "\n"
        lines.append(text)
        total += len(text)
        line += 1
    return "".join(lines).encode()


def write_file(path, size, name):
    """Writes about `size` bytes of whole records in place, in pieces of at most 1 MiB."""
    data = block_for(name)
    written = 0
    with open(path, "wb") as out:
        while True:
            piece = data[: size - written]
            whole = piece.rfind(b"\n") + 1  # whole records only
            if whole == 0:
                break
            out.write(piece[:whole])
            written += whole
    return written


def writer(number, jobs, drop, gap_s, seed, dropped, lock):
    rng = random.Random(seed * 100 + number)
    for index, size in jobs:
        if gap_s > 0:
            time.sleep(rng.expovariate(1 / gap_s))
        name = f"b8-w{number}-{index:06d}"
        written = write_file(os.path.join(drop, name + ".json"), size, name)
        with lock:
            dropped[name] = (time.time(), written)


def reader(binary, config, stop, calls, failures):
    while not stop.is_set():
        started = time.monotonic()
        done = subprocess.run([binary, "status", "--json", "--config", config],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        took = time.monotonic() - started
        if done.returncode == 0:
            try:
                json.loads(done.stdout)
                calls.append(took)
            except ValueError:
                failures.append("not JSON: " + done.stdout[:200].decode(errors="replace"))
        else:
            failures.append(f"exit {done.returncode}: " + done.stderr[-300:].decode(errors="replace"))
        stop.wait(max(0.0, 1.0 - took))


def metric(admin, name):
    text = urllib.request.urlopen(f"http://{admin}/metrics", timeout=30).read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


def platform_files(emulator, dataset):
    """Every file of the dataset the Catalog lists, with its batch: {name: [batch ids]}."""
    files, start = {}, 0
    while True:
        page = get_json(f"{emulator}/data/foundation/catalog/dataSetFiles"
                        f"?dataSetId={dataset}&limit=100&start={start}")
        if not page:
            return files
        for item in page.values():
            match = NAME.search(item.get("name", ""))
            if match:
                files.setdefault(match.group(0), []).append(item["batchId"])
        start += len(page)


def percentile(values, share):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(share * len(ordered)) - 1))]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, required=True)
    parser.add_argument("--min-bytes", type=int, default=1_000)
    parser.add_argument("--max-bytes", type=int, default=50_000_000)
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--readers", type=int, default=2)
    parser.add_argument("--gap-ms", type=float, default=20, help="mean pause between a writer's files")
    parser.add_argument("--drop", required=True)
    parser.add_argument("--binary", required=True)
    parser.add_argument("--config", required=True)
    parser.add_argument("--admin", required=True, help="the daemon's admin address (metrics)")
    parser.add_argument("--emulator", required=True)
    parser.add_argument("--dataset", default="bench")
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--seed", type=int, default=8)
    args = parser.parse_args()

    all_sizes = sizes(args.files, args.min_bytes, args.max_bytes, args.seed)
    shares = [[] for _ in range(args.writers)]
    for index, size in enumerate(all_sizes):
        shares[index % args.writers].append((index, size))
    log(f"{args.files} files, {sum(all_sizes) / 1e9:.2f} GB, {args.writers} writers, "
        f"{args.readers} status readers")

    dropped, lock = {}, threading.Lock()
    stop, calls, failures = threading.Event(), [], []
    readers = [threading.Thread(target=reader, args=(args.binary, args.config, stop, calls, failures))
               for _ in range(args.readers)]
    writers = [threading.Thread(target=writer, args=(n, shares[n], args.drop, args.gap_ms / 1000,
                                                     args.seed, dropped, lock))
               for n in range(args.writers)]
    started = time.time()
    for thread in readers + writers:
        thread.start()
    for thread in writers:
        thread.join()
    last_drop = time.time()
    log(f"all dropped in {last_drop - started:.1f} s; waiting for the daemon")
    deadline = time.monotonic() + args.timeout
    while True:
        if metric(args.admin, "batchdrop_files_failed_total"):
            sys.exit("B8: the daemon failed a file; see its log")
        if metric(args.admin, "batchdrop_files_ingested_total") >= args.files:
            break
        if time.monotonic() > deadline:
            sys.exit(f"B8: not every file ingested after {args.timeout} s")
        time.sleep(0.25)
    stop.set()
    for thread in readers:
        thread.join()

    files = platform_files(args.emulator, args.dataset)
    twice = [name for name, batches in files.items() if len(batches) > 1]
    missing = [name for name in dropped if name not in files]
    if twice or missing:
        sys.exit(f"B8: {len(missing)} file(s) missing from the platform, {len(twice)} ingested "
                 f"more than once (e.g. {(missing + twice)[:3]})")
    completed = {}
    for batch in {batches[0] for batches in files.values()}:
        answer = get_json(f"{args.emulator}/data/foundation/catalog/batches/{batch}")
        body = answer.get(batch, answer)
        if body.get("status") != "success" or "completed" not in body:
            sys.exit(f"B8: batch {batch} is {body.get('status')!r}, not success")
        completed[batch] = body["completed"] / 1000
    latency = {name: completed[files[name][0]] - at for name, (at, _) in dropped.items()}
    classes = []
    slow = []
    for low, high, label in CLASSES:
        members = [name for name, (_, size) in dropped.items() if low <= size < high]
        if not members:
            continue
        values = [latency[name] for name in members]
        p99 = percentile(values, 0.99)
        worst = max(values)
        slow += [name for name in members if latency[name] > 2 * p99]
        classes.append({"class": label, "files": len(members), "p50": percentile(values, 0.5),
                        "p99": p99, "max": worst})
    end = max(completed.values())
    total_bytes = sum(size for _, size in dropped.values())
    print(json.dumps({
        "files": len(dropped),
        "bytes": total_bytes,
        "batches": len(completed),
        "drop_s": last_drop - started,
        "wall_s": end - started,
        "after_last_drop_s": end - last_drop,
        "files_per_s": len(dropped) / (end - started),
        "mb_per_s": total_bytes / 1e6 / (end - started),
        "p50": percentile(latency.values(), 0.5),
        "p99": percentile(latency.values(), 0.99),
        "classes": classes,
        "slower_than_2x_class_p99": len(slow),
        "status_calls": len(calls),
        "status_p50_s": percentile(calls, 0.5) if calls else None,
        "status_max_s": max(calls) if calls else None,
        "status_failures": failures[:5],
    }))
    if failures:
        sys.exit(f"B8: {len(failures)} status --json call(s) failed, e.g. {failures[0]}")


if __name__ == "__main__":
    main()
