"""The daemon's JSON log as the bench's breakdown scripts read it (b1-, b2-breakdown.py).

`events(path)` yields `(message, unix_ms)` for each JSON line, in order; other lines (a
panic's text, a partial last line) are skipped. The log's timestamps are CLOCK_REALTIME, the
bench's clock too.
"""
import datetime
import json


def events(path):
    for raw in open(path):
        try:
            line = json.loads(raw)
        except ValueError:
            continue
        message = line.get("fields", {}).get("message", line.get("message", ""))
        stamp = line["timestamp"].replace("Z", "+00:00")
        yield message, datetime.datetime.fromisoformat(stamp).timestamp() * 1000
