"""Workload (b): open + close one small file N times. Usage: open_loop.py PATH N.
Runs outside the daemon's scope: measures what its openat probe costs others.
"""
import os
import sys

import common

path, n = sys.argv[1], int(sys.argv[2])
with open(path, "w") as f:
    f.write("x\n")


def loop():
    o, c, flags = os.open, os.close, os.O_RDONLY
    for _ in range(n):
        c(o(path, flags))


common.run(n, loop)
