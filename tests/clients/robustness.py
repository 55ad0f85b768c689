#!/usr/bin/env python3
"""Hostile and non-LLM TLS traffic, then valid LLM requests (python ssl only).

  robustness.py --base-url https://127.0.0.1:PORT --ca ca.pem

The API key comes from $OPENAI_API_KEY. Steps, in order:
  1. garbage: 4 KiB of random bytes inside a TLS session (not HTTP at all)
  2. truncated: an HTTP request to /v1/chat/completions whose headers promise
     100000 body bytes, of which only a few hundred are sent before closing
  3. truncated-headers: a request line and half a header block, then close
  4. non-TLS garbage: random bytes straight to the TLS port (handshake fails)
  5. keep-alive connection A: POST /upload with a 10 MiB random body, then
     GET /index.html, then a valid chat completion (prompt ROBUST-KEEPALIVE)
  6. connection B: GET /health and GET /index.html (non-LLM)
  7. connection C: a valid chat completion (prompt ROBUST-FINAL)

The two valid requests have no tools, so the mock answers text
"done: 0 tools used" with usage 120/20. Prints `FINAL: ok` and exits 0 when
every response that should come back came back as expected.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import ssl
import sys
import time
import urllib.parse

MODEL = "gpt-4o-mini"
BIG = 10 * 1024 * 1024


def log(msg: str) -> None:
    sys.stderr.write(f"[robustness] {msg}\n")
    sys.stderr.flush()


def tls_socket(ctx: ssl.SSLContext, host: str, port: int) -> ssl.SSLSocket:
    raw = socket.create_connection((host, port), timeout=30)
    return ctx.wrap_socket(raw, server_hostname=host)


def drain(s: socket.socket, limit: float = 5.0) -> bytes:
    s.settimeout(limit)
    out = b""
    try:
        while True:
            d = s.recv(65536)
            if not d:
                break
            out += d
    except (socket.timeout, ssl.SSLError, OSError):
        pass
    return out


def chat_body(marker: str) -> bytes:
    return json.dumps({
        "model": MODEL,
        "messages": [
            {"role": "system", "content": "You are the aitrail robustness probe."},
            {"role": "user", "content": f"Say done. {marker}"},
        ],
    }).encode()


def chat(conn: http.client.HTTPSConnection, key: str, marker: str) -> dict:
    conn.request("POST", "/v1/chat/completions", body=chat_body(marker), headers={
        "Content-Type": "application/json",
        "Authorization": f"Bearer {key}",
        "Accept-Encoding": "identity",
    })
    r = conn.getresponse()
    data = r.read()
    if r.status != 200:
        raise RuntimeError(f"chat {marker}: HTTP {r.status} {data[:200]!r}")
    reply = json.loads(data)
    text = reply["choices"][0]["message"]["content"]
    if text != "done: 0 tools used":
        raise RuntimeError(f"chat {marker}: unexpected answer {text!r}")
    log(f"chat {marker}: ok ({text})")
    return reply


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--ca", default=os.environ.get("SSL_CERT_FILE"))
    args = ap.parse_args()
    key = os.environ.get("OPENAI_API_KEY", "")
    u = urllib.parse.urlsplit(args.base_url)
    host, port = u.hostname, u.port or 443
    ctx = ssl.create_default_context(cafile=args.ca)

    # 1. random bytes inside TLS
    s = tls_socket(ctx, host, port)
    s.sendall(os.urandom(4096))
    got = drain(s)
    s.close()
    log(f"garbage: server answered {got[:40]!r}")

    # 2. truncated body
    s = tls_socket(ctx, host, port)
    partial = b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "' + b"x" * 300
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\n"
              b"Host: " + f"{host}:{port}".encode() + b"\r\n"
              b"Content-Type: application/json\r\n"
              b"Authorization: Bearer " + key.encode() + b"\r\n"
              b"Content-Length: 100000\r\n\r\n" + partial)
    time.sleep(0.2)
    s.close()
    log("truncated body: sent and closed")

    # 3. truncated header block
    s = tls_socket(ctx, host, port)
    s.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: " + host.encode() + b"\r\nContent-Ty")
    time.sleep(0.2)
    s.close()
    log("truncated headers: sent and closed")

    # 4. garbage instead of a TLS handshake
    raw = socket.create_connection((host, port), timeout=10)
    raw.sendall(os.urandom(1024))
    drain(raw, 2.0)
    raw.close()
    log("non-TLS garbage: sent")

    # 5. keep-alive: 10 MiB upload, an HTML GET, then a valid chat call
    a = http.client.HTTPSConnection(host, port, context=ctx, timeout=60)
    blob = os.urandom(BIG)
    a.request("POST", "/upload", body=blob,
              headers={"Content-Type": "application/octet-stream"})
    r = a.getresponse()
    up = json.loads(r.read())
    if r.status != 200 or up.get("received") != BIG:
        raise RuntimeError(f"upload: HTTP {r.status} {up}")
    log(f"upload: {up['received']} bytes acknowledged")
    a.request("GET", "/index.html")
    r = a.getresponse()
    page = r.read()
    if r.status != 200 or b"<html" not in page:
        raise RuntimeError(f"index on keep-alive connection: HTTP {r.status}")
    chat(a, key, "ROBUST-KEEPALIVE")
    a.close()

    # 6. non-LLM GETs
    b = http.client.HTTPSConnection(host, port, context=ctx, timeout=30)
    for path in ("/health", "/index.html"):
        b.request("GET", path)
        r = b.getresponse()
        r.read()
        if r.status != 200:
            raise RuntimeError(f"GET {path}: HTTP {r.status}")
    b.close()
    log("non-LLM GETs: ok")

    # 7. the final, normal request on a fresh connection
    c = http.client.HTTPSConnection(host, port, context=ctx, timeout=30)
    chat(c, key, "ROBUST-FINAL")
    c.close()

    print("FINAL: ok", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
