#!/usr/bin/env python3
"""Feeds request files to a command-line TLS client's stdin, one at a time.

    feed_stdin.py --marker TEXT [--timeout S] [--settle S] REQUEST_FILE... -- COMMAND ARGS...

Starts COMMAND (gnutls-cli, openssl s_client: clients that send what they read
on stdin over one TLS connection and print what comes back), waits --settle
seconds (default 0.5), writes the first request file to its stdin, waits until its stdout holds TEXT once, writes the
next file, waits for TEXT twice, and so on; then keeps stdin open until the
command exits (the last request says `Connection: close`) so that no early
EOF makes the client hang up before the last answer is read. The command's
stdout and stderr are passed through. Exit status 0 when every answer came
(the client's own status is printed: gnutls-cli exits 1 when the server
closes without a TLS close_notify, as python's ssl server does).

The settle time is for the daemon under test: it attaches a new process's
library probes 15-25 ms after its fork (the kernel's first uprobe registration
after a pause waits for an RCU grace period), and gnutls-cli against a local
server sends what it has on stdin within that (its first request would be
missed, as docs/coverage.md says). A client of a remote API is slower than
that; this one is made as slow so that the test checks the stack, not the race.

No TLS here: this driver only moves bytes between files and pipes.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time


def main() -> int:
    argv = sys.argv[1:]
    if "--" not in argv:
        print("usage: feed_stdin.py --marker TEXT REQUEST_FILE... -- COMMAND...", file=sys.stderr)
        return 2
    cut = argv.index("--")
    ap = argparse.ArgumentParser()
    ap.add_argument("--marker", required=True)
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--settle", type=float, default=0.5)
    ap.add_argument("requests", nargs="+")
    args = ap.parse_args(argv[:cut])
    command = argv[cut + 1 :]
    marker = args.marker.encode()

    child = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    out = bytearray()
    lock = threading.Lock()

    def pump() -> None:
        assert child.stdout is not None
        while True:
            b = os.read(child.stdout.fileno(), 65536)
            if not b:
                return
            with lock:
                out.extend(b)
            sys.stdout.buffer.write(b)
            sys.stdout.buffer.flush()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    deadline = time.monotonic() + args.timeout
    assert child.stdin is not None
    time.sleep(args.settle)
    for i, path in enumerate(args.requests, start=1):
        with open(path, "rb") as f:
            child.stdin.write(f.read())
        child.stdin.flush()
        while True:
            with lock:
                seen = out.count(marker)
            if seen >= i:
                break
            if child.poll() is not None or time.monotonic() > deadline:
                print(f"feed_stdin: answer {i} never came ({seen} seen)", file=sys.stderr)
                child.kill()
                return 1
            time.sleep(0.02)
    try:
        rc = child.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        child.kill()
        rc = child.wait()
    reader.join(timeout=5)
    print(f"feed_stdin: {command[0]} exited {rc}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
