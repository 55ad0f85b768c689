#!/usr/bin/env python3
"""An MCP client over streamable HTTP (stdlib only: http.client over the
system OpenSSL): initialize, then one tools/call of read_file.

    mcp_client.py --url https://127.0.0.1:PORT/mcp --ca CA --file PATH

Prints the session id and the call's result so the test can compare.
"""

from __future__ import annotations

import argparse
import http.client
import json
import ssl
import sys
import urllib.parse


def post(conn, path, body, session=None):
    headers = {"Content-Type": "application/json",
               "Accept": "application/json, text/event-stream",
               "MCP-Protocol-Version": "2025-06-18"}
    if session:
        headers["Mcp-Session-Id"] = session
    conn.request("POST", path, json.dumps(body), headers)
    r = conn.getresponse()
    data = r.read().decode()
    return r, data


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--ca", required=True)
    ap.add_argument("--file", required=True)
    a = ap.parse_args()
    u = urllib.parse.urlsplit(a.url)
    ctx = ssl.create_default_context(cafile=a.ca)
    conn = http.client.HTTPSConnection(u.hostname, u.port, context=ctx, timeout=30)
    r, _ = post(conn, u.path, {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "aitrail-e2e", "version": "1"}}})
    session = r.getheader("Mcp-Session-Id")
    post(conn, u.path, {"jsonrpc": "2.0", "method": "notifications/initialized"}, session)
    r, data = post(conn, u.path, {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {
        "name": "read_file", "arguments": {"path": a.file}}}, session)
    print("session", session)
    print("status", r.status)
    print(data)
    return 0 if r.status == 200 else 1


if __name__ == "__main__":
    sys.exit(main())
