#!/usr/bin/env python3
"""A tool-using agent on the OpenAI Responses API's WebSocket mode: one
WebSocket (`wss://…/v1/responses`, python's ssl, permessage-deflate with
context takeover as `websockets` offers it), two turns on it.

    responses_ws.py --url wss://127.0.0.1:PORT/v1/responses --ca CA --command CMD

Turn 1: a `response.create` asking to run CMD; the model (the mock,
tests/mock/mock_responses_ws.py) answers with a `run_command` function
call. The client really runs the command (`/bin/sh -c`), then sends turn 2
on the same socket with the `function_call_output` and
`previous_response_id`, as Codex does, and prints the final answer.
Prints `CALL <call_id> <arguments>` and `RESPONSE <id>` lines for the test.
The API key comes from OPENAI_API_KEY.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import ssl
import subprocess
import sys

from websockets.asyncio.client import connect

TOOLS = [{"type": "function", "name": "run_command", "description": "Run a shell command.",
          "parameters": {"type": "object", "properties": {"command": {"type": "string"}},
                         "required": ["command"]}}]


async def turn(ws, request: dict) -> list[dict]:
    await ws.send(json.dumps(request))
    events = []
    async for raw in ws:
        ev = json.loads(raw)
        events.append(ev)
        if ev["type"] in ("response.completed", "response.failed", "response.incomplete",
                          "error"):
            break
    return events


async def main_async(a) -> int:
    ctx = ssl.create_default_context(cafile=a.ca)
    headers = {"Authorization": f"Bearer {os.environ['OPENAI_API_KEY']}",
               "OpenAI-Beta": "responses_websockets=2026-02-06"}
    async with connect(a.url, ssl=ctx, additional_headers=headers, compression="deflate",
                       ping_interval=None, max_size=16 * 1024 * 1024) as ws:
        first = {"type": "response.create", "model": "gpt-5-mini",
                 "instructions": "You are the aitrail WebSocket test agent.",
                 "input": [{"role": "user", "content": [
                     {"type": "input_text", "text": f"Run it.\nCOMMAND: {a.command}\n"}]}],
                 "tools": TOOLS, "store": False}
        evs = await turn(ws, first)
        done = next(e for e in evs if e["type"] == "response.completed")
        calls = [o for o in done["response"]["output"] if o["type"] == "function_call"]
        print("RESPONSE", done["response"]["id"], flush=True)
        outputs = []
        for c in calls:
            print("CALL", c["call_id"], c["arguments"], flush=True)
            cmd = json.loads(c["arguments"])["command"]
            run = subprocess.run(["/bin/sh", "-c", cmd], capture_output=True, text=True,
                                 timeout=30, check=False)
            outputs.append({"type": "function_call_output", "call_id": c["call_id"],
                            "output": run.stdout[-2000:]})
        second = {"type": "response.create", "model": "gpt-5-mini",
                  "previous_response_id": done["response"]["id"],
                  "input": outputs, "tools": TOOLS, "store": False}
        evs = await turn(ws, second)
        final = next(e for e in evs if e["type"] == "response.completed")
        print("RESPONSE", final["response"]["id"], flush=True)
        text = "".join(e.get("delta", "") for e in evs
                       if e["type"] == "response.output_text.delta")
        print("ANSWER", text, flush=True)
        print("EXTENSIONS", ws.response.headers.get("Sec-WebSocket-Extensions", ""), flush=True)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--ca", required=True)
    ap.add_argument("--command", required=True)
    return asyncio.run(main_async(ap.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
