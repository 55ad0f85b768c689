#!/usr/bin/env python3
"""An MCP client on the older HTTP+SSE transport (protocol 2024-11-05): the
official `mcp` Python SDK's sse_client and ClientSession (its venv:
tests/setup-test-deps.sh), over python's ssl (the system libssl.so.3, which
the daemon hooks).

    mcp_sse_client.py --url https://127.0.0.1:PORT/sse --ca CA --file PATH
initialize, tools/list, one tools/call of read_file, one of a tool the
server does not have; prints `session <id>`, `result <text as repr>` and
`unknown <is_error>`.
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
import sys

import httpx2
from mcp.client.session import ClientSession
from mcp.client.sse import sse_client


async def run(a) -> int:
    ctx = ssl.create_default_context(cafile=a.ca)
    sessions: list[str] = []

    def factory(headers=None, timeout=None, auth=None):
        return httpx2.AsyncClient(headers=headers, timeout=timeout, auth=auth, verify=ctx)

    async with sse_client(a.url, httpx_client_factory=factory,
                          on_session_created=sessions.append) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            tools = await session.list_tools()
            names = [t.name for t in tools.tools]
            if "read_file" not in names:
                print(f"no read_file tool: {names}", file=sys.stderr)
                return 1
            res = await session.call_tool("read_file", {"path": a.file})
            text = "\n".join(c.text for c in res.content if getattr(c, "type", "") == "text")
            bad = await session.call_tool("delete_file", {"path": a.file})
    print(f"session {sessions[0] if sessions else ''}")
    print(f"result {text!r}")
    print(f"unknown {bool(bad.is_error)}")
    return 0 if text and not res.is_error else 1


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--ca", required=True)
    ap.add_argument("--file", required=True)
    return asyncio.run(run(ap.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
