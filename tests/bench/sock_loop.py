"""Workload (g): send + recv of 64 bytes over a TCP loopback connection, N
times. Usage: sock_loop.py N. Runs outside the daemon's scope: measures what
the plain-HTTP socket hooks (BTF tracepoints sock_send_length and
sock_recv_length, hit by every socket send and receive on the host) cost
other processes.
"""
import socket
import sys

import common

n = int(sys.argv[1])
srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
srv.bind(("127.0.0.1", 0))
srv.listen(1)
a = socket.create_connection(srv.getsockname())
b, _ = srv.accept()
for s in (a, b):
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
msg = b"x" * 64


def loop():
    send, recv = a.send, b.recv
    for _ in range(n):
        send(msg)
        recv(64)


common.run(n, loop)
