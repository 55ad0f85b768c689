#!/usr/bin/env python3
"""A mock of the OpenAI Responses API's WebSocket mode, on the `websockets`
library (RFC 6455 framing, RFC 7692 permessage-deflate).

    mock_responses_ws.py --host 127.0.0.1 --port 0 [--cert C --key K]
                         [--record FILE] [--no-compression]
                         [--no-context-takeover] [--max-window-bits N]
                         [--fragment N] [--ping]

`GET /v1/responses` upgraded to a WebSocket. Each `response.create` client
message is answered with the `response.*` events of the SSE stream, one per
text message, ending with `response.completed` (or `error` for the model
`mock-error`). A request whose input holds no `function_call_output` is
answered with a `run_command` function call built from a `COMMAND: …` line
of the input; a request that carries the tool's output is answered with a
text that quotes it. Every answer has a reasoning summary and usage.

Wire options (for the fixtures in tests/fixtures/ws/): `--no-compression`
turns permessage-deflate off; `--no-context-takeover` accepts it with
`server_no_context_takeover; client_no_context_takeover`;
`--max-window-bits N` with `server_max_window_bits=N` (and the client's);
`--fragment N` sends every event as fragments of at most N characters;
`--ping` sends a ping between events (the client's pong is then
interleaved with its frames).

Prints `PORT <n>` once listening. Listens where told (tests: 127.0.0.1).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import sys
import uuid

from websockets.asyncio.server import serve
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory

MODEL_USAGE = {"input_tokens": 57, "output_tokens": 23}


def command_of(inp) -> str:
    text = json.dumps(inp) if not isinstance(inp, str) else inp
    for line in text.replace("\\n", "\n").splitlines():
        if "COMMAND:" in line:
            return line.split("COMMAND:", 1)[1].strip().strip('"').strip()
    return "echo hello"


def tool_output_of(inp):
    if isinstance(inp, list):
        for item in inp:
            if isinstance(item, dict) and item.get("type") == "function_call_output":
                return item
    return None


def events_for(req: dict, n: int) -> list[dict]:
    model = req.get("model", "gpt-5-mini")
    rid = f"resp_ws_{n}_{uuid.uuid4().hex[:8]}"
    if model == "mock-error":
        return [{"type": "error", "code": "invalid_request_error",
                 "message": "The model `mock-error` does not exist.", "param": "model"}]
    base = {"id": rid, "object": "response", "model": model, "status": "in_progress",
            "output": []}
    evs = [{"type": "response.created", "sequence_number": 0, "response": base},
           {"type": "response.in_progress", "sequence_number": 1, "response": base}]
    reasoning = {"type": "reasoning", "id": f"rs_{n}", "summary": []}
    evs.append({"type": "response.output_item.added", "output_index": 0, "item": reasoning})
    summary = "Deciding what to run." if n == 1 else "Reading the tool output."
    evs.append({"type": "response.reasoning_summary_text.delta", "output_index": 0,
                "summary_index": 0, "delta": summary})
    evs.append({"type": "response.reasoning_summary_text.done", "output_index": 0,
                "summary_index": 0, "text": summary})
    reasoning_done = dict(reasoning, summary=[{"type": "summary_text", "text": summary}])
    evs.append({"type": "response.output_item.done", "output_index": 0, "item": reasoning_done})
    out = tool_output_of(req.get("input"))
    if out is None:
        args = json.dumps({"command": command_of(req.get("input", ""))})
        call_id = f"call_ws_{n}"
        item = {"type": "function_call", "id": f"fc_{n}", "call_id": call_id,
                "name": "run_command", "arguments": "", "status": "in_progress"}
        evs.append({"type": "response.output_item.added", "output_index": 1, "item": item})
        half = len(args) // 2
        for part in (args[:half], args[half:]):
            evs.append({"type": "response.function_call_arguments.delta", "output_index": 1,
                        "item_id": item["id"], "delta": part})
        evs.append({"type": "response.function_call_arguments.done", "output_index": 1,
                    "item_id": item["id"], "arguments": args})
        done = dict(item, arguments=args, status="completed")
        evs.append({"type": "response.output_item.done", "output_index": 1, "item": done})
        output = [reasoning_done, done]
    else:
        text = f"The command printed: {str(out.get('output', ''))[:200]}"
        msg = {"type": "message", "id": f"msg_{n}", "role": "assistant", "status": "in_progress",
               "content": []}
        evs.append({"type": "response.output_item.added", "output_index": 1, "item": msg})
        evs.append({"type": "response.content_part.added", "output_index": 1, "content_index": 0,
                    "part": {"type": "output_text", "text": ""}})
        for i in range(0, len(text), 16):
            evs.append({"type": "response.output_text.delta", "output_index": 1,
                        "content_index": 0, "delta": text[i:i + 16]})
        done = dict(msg, status="completed",
                    content=[{"type": "output_text", "text": text, "annotations": []}])
        evs.append({"type": "response.output_item.done", "output_index": 1, "item": done})
        output = [reasoning_done, done]
    final = dict(base, status="completed", output=output,
                 usage={**MODEL_USAGE, "total_tokens": 80,
                        "output_tokens_details": {"reasoning_tokens": 7}})
    evs.append({"type": "response.completed", "sequence_number": len(evs), "response": final})
    return evs


async def fragments(ws, parts, ping, tag):
    """The fragments of one message; with `ping`, a ping after the first
    (a control frame between the fragments of a message)."""
    for k, part in enumerate(parts):
        yield part
        if ping and k == 0:
            await ws.ping(f"inside {tag}".encode())


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--record")
    ap.add_argument("--no-compression", action="store_true")
    ap.add_argument("--no-context-takeover", action="store_true")
    ap.add_argument("--max-window-bits", type=int)
    ap.add_argument("--fragment", type=int, default=0)
    ap.add_argument("--ping", action="store_true")
    a = ap.parse_args()
    asyncio.run(run(a))
    return 0


def extensions_of(a):
    if a.no_compression:
        return None, None
    kw = {}
    if a.no_context_takeover:
        kw.update(server_no_context_takeover=True, client_no_context_takeover=True)
    if a.max_window_bits:
        kw.update(server_max_window_bits=a.max_window_bits,
                  client_max_window_bits=a.max_window_bits)
    return [ServerPerMessageDeflateFactory(**kw)], "deflate"


async def run(a, ready: asyncio.Future | None = None, stop: asyncio.Future | None = None):
    ctx = None
    if a.cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(a.cert, a.key)
    counter = {"n": 0}

    async def handler(ws):
        path = ws.request.path
        auth = ws.request.headers.get("Authorization", "")
        async for raw in ws:
            try:
                req = json.loads(raw)
            except ValueError:
                continue
            if req.get("type") != "response.create":
                continue
            counter["n"] += 1
            n = counter["n"]
            if a.record:
                with open(a.record, "a", encoding="utf-8") as f:
                    f.write(json.dumps({"path": path, "authorized": auth.startswith("Bearer "),
                                        "request": req}) + "\n")
            for i, ev in enumerate(events_for(req, n)):
                text = json.dumps(ev)
                if a.fragment and len(text) > a.fragment:
                    parts = [text[j:j + a.fragment] for j in range(0, len(text), a.fragment)]
                    await ws.send(fragments(ws, parts, a.ping, f"{n}.{i}"))
                else:
                    await ws.send(text)
                if a.ping:
                    await ws.ping(f"between {n}.{i}".encode())

    extensions, compression = extensions_of(a)
    kw = {"compression": None} if extensions is None else {"extensions": extensions,
                                                             "compression": None}
    async with serve(handler, a.host, a.port, ssl=ctx, max_size=64 * 1024 * 1024, **kw) as server:
        port = server.sockets[0].getsockname()[1]
        if ready is not None:
            ready.set_result(port)
        else:
            print(f"PORT {port}", flush=True)
        if stop is not None:
            await stop
        else:
            await asyncio.Future()
    del compression


if __name__ == "__main__":
    sys.exit(main())
