#!/usr/bin/env python3
"""B1's drop → all archived, phase by phase, from the daemon's JSON log (issue #23).

    b1-breakdown.py DAEMON_LOG DROP_UNIX_MS [NOTICED_UNIX_MS]

DROP_UNIX_MS is when the bench started moving the files into the drop folder; NOTICED_UNIX_MS
(optional) is when the bench saw them all archived (its /metrics poll). The log's timestamps
and the bench's clock are both CLOCK_REALTIME. Prints one `phase ms` line per phase, each from
the end of the one before:

    ready       drop → the last file recorded as settled ("ready"; the bench's `mv` included)
    sealed      → the last batch sealed (the batcher: hashing for the duplicate check, sealing)
    created     → the last batch created on the platform
    uploaded    → the last file uploaded (its PUT answered)
    completed   → the last batch COMPLETE accepted
    succeeded   → the last batch seen succeeded ("batch succeeded")
    first_done  → the first file finished (archived, receipt written); left out when files were
                  finished before the last batch succeeded (more batches than run at once)
    archived    → the last file finished
    noticed     → the bench's poll saw them all (with NOTICED_UNIX_MS): the measuring lag

then `total` (drop → last file finished) and, with NOTICED_UNIX_MS, `total_noticed`.
"""
import sys

from daemon_log import events


def main():
    log, drop = sys.argv[1], float(sys.argv[2])
    noticed = float(sys.argv[3]) if len(sys.argv) > 3 else None
    wanted = [
        ("ready", lambda m: m == "ready"),
        ("sealed", lambda m: m == "batch sealed"),
        ("created", lambda m: m == "batch created"),
        ("uploaded", lambda m: m == "uploaded"),
        ("completed", lambda m: m.startswith("batch completed")),
        ("succeeded", lambda m: m.startswith("batch succeeded")),
        ("archived", lambda m: m.startswith("file finished")),
    ]
    first, last = {}, {}
    for message, at in events(log):
        for name, matches in wanted:
            if matches(message):
                first.setdefault(name, at)
                last[name] = at
                break
    # With more batches than run at once, files of the first batches are finished while later
    # ones still upload: a "first finished" before the last success is no phase of the chain
    # (it printed a negative span); the archiving then counts from the last success.
    if "archived" in first and first["archived"] >= last.get("succeeded", 0):
        first["first_done"] = first["archived"]
        last["first_done"] = first["archived"]
    order = [
        "ready",
        "sealed",
        "created",
        "uploaded",
        "completed",
        "succeeded",
        "first_done",
        "archived",
    ]
    before = drop
    for name in order:
        if name in last:
            print(f"{name} {last[name] - before:.0f}")
            before = last[name]
    if noticed is not None and "archived" in last:
        print(f"noticed {noticed - last['archived']:.0f}")
    if "archived" in last:
        print(f"total {last['archived'] - drop:.0f}")
    if noticed is not None:
        print(f"total_noticed {noticed - drop:.0f}")


main()
