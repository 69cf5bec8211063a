#!/usr/bin/env python3
"""pad-history.py DB N: grows the history of a stopped batchdrop's state database (SQLite) to
about N finished files, for B6 at a history of a million files without ingesting them.

Copies the finished files already there (and their events) under new ids and paths
(history-K/...), as many times as needed: the same rows, states and indexes a daemon that
ingested them would have. Batches are not copied (the copies point at the original ones).
"""
import sqlite3
import sys


def main() -> None:
    db, target = sys.argv[1], int(sys.argv[2])
    con = sqlite3.connect(db)
    cols = [row[1] for row in con.execute("PRAGMA table_info(files)") if row[1] != "id"]
    low, high, count = con.execute(
        "SELECT MIN(id), MAX(id), COUNT(*) FROM files WHERE finalized = 1"
    ).fetchone()
    if not count:
        sys.exit(f"pad-history.py: {db} has no finished files to copy")
    have = con.execute("SELECT COUNT(*) FROM files").fetchone()[0]
    stride = con.execute("SELECT MAX(id) FROM files").fetchone()[0]
    listed = ", ".join(cols)
    copied = ", ".join(
        f"'history-' || :k || '/' || {c}" if c == "rel_path" else c for c in cols
    )
    k = 0
    while have < target:
        k += 1
        shift = k * stride
        con.execute(
            f"INSERT INTO files (id, {listed}) SELECT id + :shift, {copied} FROM files"
            " WHERE finalized = 1 AND id BETWEEN :low AND :high LIMIT :n",
            {"shift": shift, "k": k, "low": low, "high": high, "n": target - have},
        )
        con.execute(
            "INSERT INTO events (at, file_id, batch_id, kind, detail)"
            " SELECT e.at, e.file_id + :shift, e.batch_id, e.kind, e.detail FROM events e"
            " WHERE e.file_id BETWEEN :low AND :high"
            " AND EXISTS (SELECT 1 FROM files f WHERE f.id = e.file_id + :shift)",
            {"shift": shift, "low": low, "high": high},
        )
        have = con.execute("SELECT COUNT(*) FROM files").fetchone()[0]
        con.commit()
    print(have)


if __name__ == "__main__":
    main()
