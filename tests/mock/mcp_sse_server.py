#!/usr/bin/env python3
"""An MCP server on the older HTTP+SSE transport (protocol 2024-11-05): the
official `mcp` Python SDK's MCPServer ("files", one tool read_file(path)) and
its SSE app (GET /sse, POST /messages/?session_id=…) under uvicorn, over TLS,
on 127.0.0.1. Needs the SDK's venv (tests/setup-test-deps.sh).

    mcp_sse_server.py --port 0 --cert PEM --key KEY [--host 127.0.0.1] [--record F]
Prints `PORT <n>` once bound. --record is accepted for the test harness's
sake and not written: the SDK's server keeps no request log.
"""

from __future__ import annotations

import argparse
import socket
import sys

import uvicorn
from mcp.server.mcpserver import MCPServer


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--record")
    a = ap.parse_args()
    if a.host != "127.0.0.1":
        print("listens on 127.0.0.1 only", file=sys.stderr)
        return 2

    server = MCPServer("files")

    @server.tool()
    def read_file(path: str) -> str:
        """Read a text file."""
        with open(path, encoding="utf-8") as f:
            return f.read()

    app = server.sse_app(host="127.0.0.1")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", a.port))
    config = uvicorn.Config(app, ssl_certfile=a.cert, ssl_keyfile=a.key, log_level="warning")
    print(f"PORT {sock.getsockname()[1]}", flush=True)
    uvicorn.Server(config).run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
