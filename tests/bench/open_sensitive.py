"""Finding latency (cargo xtask bench ship): opens a private key on demand.

Usage: open_sensitive.py DIR. Prints `ready`, then for each line `open I`
on stdin opens DIR/.ssh/id_bench_I (which must exist) and prints
`I T_NS`, T_NS being the wall clock (time.time_ns) just before the open.
A line `quit` ends it. The daemon watches this process (--pid, --watch-all):
each open is a `sensitive_file` finding (rule file.ssh_keys).
"""
import os
import sys
import time

d = sys.argv[1]
print("ready", flush=True)
for line in sys.stdin:
    cmd = line.split()
    if not cmd or cmd[0] == "quit":
        break
    i = int(cmd[1])
    path = os.path.join(d, ".ssh", f"id_bench_{i}")
    t = time.time_ns()
    with open(path, "rb") as f:
        f.read(1)
    print(f"{i} {t}", flush=True)
