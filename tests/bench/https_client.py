"""Workload (a): N small chat-completion POSTs over one keep-alive HTTPS
connection. Usage: https_client.py PORT CAFILE N. Runs in the daemon's scope.
"""
import http.client
import json
import ssl
import sys

import common

port, cafile, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
ctx = ssl.create_default_context(cafile=cafile)
body = json.dumps({
    "model": "gpt-4o-mini",
    "messages": [{"role": "user", "content": "ping"}],
}).encode()
headers = {
    "Content-Type": "application/json",
    "Authorization": "Bearer sk-bench-000000000000000000000000000000000000",
}


def one(conn):
    conn.request("POST", "/v1/chat/completions", body, headers)
    r = conn.getresponse()
    r.read()
    if r.status != 200:
        sys.exit(f"status {r.status}")


# Warm up imports, the server and TLS on a connection of its own.
warm = http.client.HTTPSConnection("127.0.0.1", port, context=ctx)
for _ in range(20):
    one(warm)
warm.close()


def loop():
    # A fresh connection, made after the daemon is ready.
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx)
    for _ in range(n):
        one(conn)
    conn.close()


common.run(n, loop)
