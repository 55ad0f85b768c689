"""Shared protocol of the benchmark workloads (driven by `cargo xtask bench`).

A workload prepares everything (imports, files, warm-up), prints `ready`,
waits for one line on stdin (the driver starts or does not start the daemon
meanwhile), runs its loop, and prints one JSON line:
{"ops": N, "cpu_s": user+sys of the loop, "wall_s": wall time of the loop}.
"""
import json
import resource
import sys
import time


def _cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def run(ops, loop):
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        sys.exit("expected `go` on stdin")
    c0, w0 = _cpu(), time.perf_counter()
    loop()
    c1, w1 = _cpu(), time.perf_counter()
    print(json.dumps({"ops": ops, "cpu_s": c1 - c0, "wall_s": w1 - w0}), flush=True)
