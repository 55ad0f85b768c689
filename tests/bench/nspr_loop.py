"""Workload (f): N times NSPR's `PR_Write` of 64 bytes to /dev/null and
`PR_Read` of 64 bytes from /dev/zero: the calls NSS's plaintext hooks sit
on, on descriptors that are not SSL sockets (as most NSPR I/O of an NSS
application is). Usage: nspr_loop.py N. Runs outside the daemon's scope:
measures what the NSPR uprobes cost others (zero when attached per process).
"""
import ctypes
import sys

import common

n = int(sys.argv[1])
lib = ctypes.CDLL("libnspr4.so")
lib.PR_Open.restype = ctypes.c_void_p
lib.PR_Open.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_int]
lib.PR_Write.restype = ctypes.c_int32
lib.PR_Write.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int32]
lib.PR_Read.restype = ctypes.c_int32
lib.PR_Read.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int32]
PR_RDONLY, PR_WRONLY = 0x01, 0x02
out = lib.PR_Open(b"/dev/null", PR_WRONLY, 0)
inp = lib.PR_Open(b"/dev/zero", PR_RDONLY, 0)
if not out or not inp:
    sys.exit("PR_Open failed")
buf = ctypes.create_string_buffer(64)
write, read = lib.PR_Write, lib.PR_Read


def loop():
    for _ in range(n):
        write(out, buf, 64)
        read(inp, buf, 64)


if write(out, buf, 64) != 64 or read(inp, buf, 64) != 64:
    sys.exit("PR_Write/PR_Read on /dev/null, /dev/zero failed")
common.run(n, loop)
