"""Workload (d): an in-memory TLS pair (ssl.SSLObject over MemoryBIO): N times
a 64-byte client write and the server's read of it. Every call goes into
libssl and none makes a syscall. Usage: tls_loop.py CERT KEY N. Runs outside
the daemon's scope: measures what its TLS uprobes cost others.
"""
import ssl
import sys

import common

cert, key, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
sctx.load_cert_chain(cert, key)
cctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
cctx.check_hostname = False
cctx.verify_mode = ssl.CERT_NONE
c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
client = cctx.wrap_bio(c_in, c_out, server_hostname="localhost")
server = sctx.wrap_bio(s_in, s_out, server_side=True)

done = set()
for _ in range(20):
    for name, obj in (("c", client), ("s", server)):
        if name in done:
            continue
        try:
            obj.do_handshake()
            done.add(name)
        except ssl.SSLWantReadError:
            pass
    s_in.write(c_out.read())
    c_in.write(s_out.read())
    if len(done) == 2:
        break
else:
    sys.exit("TLS handshake did not finish")

payload = b"x" * 64


def loop():
    cw, sr, move_in, move_out = client.write, server.read, s_in.write, c_out.read
    for _ in range(n):
        cw(payload)
        move_in(move_out())
        if len(sr(64)) != 64:
            sys.exit("short read")


common.run(n, loop)
