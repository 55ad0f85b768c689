"""Workload (e): N calls of GnuTLS's hooked record functions
(`gnutls_record_send` + `gnutls_record_recv`, 64 bytes) on a client session
that never handshakes, so each returns at once with an error and makes no
syscall: all that is measured is the call, i.e. what a uprobe on it would
add. Usage: gnutls_loop.py N. Runs outside the daemon's scope: measures
what the GnuTLS uprobes cost others (zero when attached per process).
"""
import ctypes
import sys

import common

n = int(sys.argv[1])
lib = ctypes.CDLL("libgnutls.so.30")
lib.gnutls_record_send.restype = ctypes.c_ssize_t
lib.gnutls_record_send.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
lib.gnutls_record_recv.restype = ctypes.c_ssize_t
lib.gnutls_record_recv.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
GNUTLS_CLIENT = 1 << 1
session = ctypes.c_void_p()
if lib.gnutls_init(ctypes.byref(session), GNUTLS_CLIENT) != 0:
    sys.exit("gnutls_init failed")
buf = ctypes.create_string_buffer(b"x" * 64)
send, recv, s = lib.gnutls_record_send, lib.gnutls_record_recv, session


def loop():
    for _ in range(n):
        send(s, buf, 64)
        recv(s, buf, 64)


# The calls fail (no handshake): check that once, outside the loop.
if send(s, buf, 64) >= 0:
    sys.exit("gnutls_record_send succeeded without a handshake")
common.run(n, loop)
