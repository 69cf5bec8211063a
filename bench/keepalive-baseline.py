#!/usr/bin/env python3
"""What a user does without batchdrop, written well: the platform guide's calls from one
process over one reused (keep-alive) HTTP connection, the way the platform's public Python
client works. bench/run.sh runs it beside bench/curl-baseline.sh against the same emulator.

    keepalive-baseline.py BASE_URL DATASET DIR

Every *.json file of DIR, in batches of at most 1500 (the platform's limit): create batch, PUT
each file, COMPLETE; then poll every batch until it is terminal. Prints `upload_ms N`,
`total_ms N` (create batch -> every batch terminal), `batches ID...`, `client` (which HTTP
client ran) and `cpu_ms N` (this process's CPU time) on stdout, as curl-baseline.sh does.
Exits non-zero if a call or a batch fails.

Uses `requests` (one Session) when it is installed, else the standard library's http.client
(one HTTPConnection): both keep one connection open for every call. Headers from the
environment: TOKEN, API_KEY, ORG_ID, SANDBOX; POLL_SECONDS (default 0.1).
"""

import json
import os
import sys
import time
import urllib.parse

MAX_FILES_PER_BATCH = 1500


def headers():
    return {
        "Authorization": "Bearer " + os.environ.get("TOKEN", "bench-token"),
        "x-gw-ims-org-id": os.environ.get("ORG_ID", "bench@AdobeOrg"),
        "x-api-key": os.environ.get("API_KEY", "bench"),
        "x-sandbox-name": os.environ.get("SANDBOX", "prod"),
    }


class Client:
    """One keep-alive connection to BASE_URL: `call` returns the answer's body, or exits."""

    def __init__(self, base):
        self.base = base.rstrip("/")
        self.headers = headers()
        try:
            import requests

            self.session = requests.Session()
            self.session.headers.update(self.headers)
            self.name = "requests " + requests.__version__
        except ImportError:
            import http.client

            url = urllib.parse.urlsplit(self.base)
            self.session = None
            self.connection = http.client.HTTPConnection(url.hostname, url.port or 80)
            self.prefix = url.path
            self.name = "http.client"

    def call(self, method, path, body=None, content_type=None):
        extra = {"Content-Type": content_type} if content_type else {}
        if self.session is not None:
            answer = self.session.request(method, self.base + path, data=body, headers=extra)
            status, text = answer.status_code, answer.content
        else:
            self.connection.request(
                method, self.prefix + path, body=body, headers={**self.headers, **extra}
            )
            answer = self.connection.getresponse()
            status, text = answer.status, answer.read()
        if status >= 300:
            sys.exit(f"keepalive-baseline: {method} {path} answered {status}: {text[:300]!r}")
        return text


def main():
    if len(sys.argv) != 4:
        sys.exit("usage: keepalive-baseline.py BASE_URL DATASET DIR")
    base, dataset, folder = sys.argv[1:]
    files = sorted(name for name in os.listdir(folder) if name.endswith(".json"))
    if not files:
        sys.exit(f"keepalive-baseline: no *.json file in {folder}")
    poll = float(os.environ.get("POLL_SECONDS", "0.1"))
    client = Client(base)
    start = time.monotonic()
    batches = []
    for first in range(0, len(files), MAX_FILES_PER_BATCH):
        created = client.call(
            "POST",
            "/data/foundation/import/batches",
            json.dumps({"datasetId": dataset, "inputFormat": {"format": "json"}}),
            "application/json",
        )
        batch = json.loads(created)["id"]
        batches.append(batch)
        for name in files[first : first + MAX_FILES_PER_BATCH]:
            with open(os.path.join(folder, name), "rb") as file:
                body = file.read()
            client.call(
                "PUT",
                f"/data/foundation/import/batches/{batch}/datasets/{dataset}/files/{name}",
                body,
                "application/octet-stream",
            )
        client.call("POST", f"/data/foundation/import/batches/{batch}?action=COMPLETE")
    print(f"upload_ms {int((time.monotonic() - start) * 1000)}")
    for batch in batches:
        while True:
            answer = json.loads(client.call("GET", f"/data/foundation/catalog/batches/{batch}"))
            status = answer[batch]["status"]  # the Catalog answers {id: batch}
            if status == "success":
                break
            if status in ("failed", "aborted"):
                sys.exit(f"keepalive-baseline: batch {batch} ended {status}")
            time.sleep(poll)
    print(f"total_ms {int((time.monotonic() - start) * 1000)}")
    print("batches " + " ".join(batches))
    print("client " + client.name.replace(" ", "-"))
    cpu = os.times()
    print(f"cpu_ms {int((cpu.user + cpu.system) * 1000)}")


if __name__ == "__main__":
    main()
