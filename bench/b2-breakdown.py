#!/usr/bin/env python3
"""B2's end-to-end time, phase by phase, from the daemon's JSON log (issue #23).

    b2-breakdown.py DAEMON_LOG DROP_UNIX_MS [CATALOG_JSON]

DROP_UNIX_MS is when the bench linked the file into the drop folder; CATALOG_JSON (optional)
is the emulator's Catalog answer for the batch, whose `started` and `completed` times (unix ms)
give its processing. Prints one `phase ms` line per phase, each from the end of the one before:

    ready      drop → the file recorded as settled ("ready")
    sealed     → its batch sealed (the batcher's max_wait, or at once: full, or seal_bytes reached)
    created    → the batch created on the platform
    sent       → the file's last byte acknowledged and the file COMPLETE ("file sent")
    uploaded   → its hash done, as the read was or later ("uploaded")
    completed  → the batch COMPLETE accepted
    started    → the platform's processing started (Catalog `started`; with CATALOG_JSON)
    processed  → the platform's processing done (Catalog `completed`)
    seen       → the daemon's poll that saw the success ("batch succeeded")
"""
import json
import sys

from daemon_log import events


def main():
    log, drop = sys.argv[1], float(sys.argv[2])
    catalog = json.load(open(sys.argv[3])) if len(sys.argv) > 3 else None
    marks = {}
    wanted = [
        ("ready", lambda m: m == "ready"),
        ("sealed", lambda m: m == "batch sealed"),
        ("created", lambda m: m == "batch created"),
        ("sent", lambda m: m == "file sent"),
        ("uploaded", lambda m: m == "uploaded"),
        ("completed", lambda m: m.startswith("batch completed")),
        ("seen", lambda m: m.startswith("batch succeeded")),
    ]
    for message, at in events(log):
        for name, matches in wanted:
            if name not in marks and matches(message):
                marks[name] = at
    if catalog is not None:
        # The Catalog's batch object, alone or keyed by its id.
        batch = catalog if "completed" in catalog else next(iter(catalog.values()))
        marks["started"] = float(batch["started"])
        marks["processed"] = float(batch["completed"])
    order = ["ready", "sealed", "created", "sent", "uploaded", "completed", "started", "processed", "seen"]
    before = drop
    for name in order:
        if name in marks:
            print(f"{name} {marks[name] - before:.0f}")
            before = marks[name]
    if "seen" in marks:
        print(f"total {marks['seen'] - drop:.0f}")


main()
