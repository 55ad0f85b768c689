#!/usr/bin/env python3
"""A local HTTPS mock LLM server for aitrail's end-to-end tests (stdlib only).

Speaks enough of four real wire formats for the official SDKs to parse them:

  OpenAI     POST /v1/chat/completions   plain JSON, or `"stream": true` SSE
                                         (chat.completion.chunk deltas, tool calls
                                         in fragments, usage chunk when
                                         stream_options.include_usage, data: [DONE])
  Anthropic  POST /v1/messages           plain JSON, or `"stream": true` SSE
                                         (message_start, content_block_start/delta/
                                         stop, ping, message_delta, message_stop)
  Responses  POST /v1/responses          OpenAI Responses API: plain JSON, or `"stream":
                                         true` SSE (response.created … output_text /
                                         function_call_arguments deltas …
                                         response.completed); previous_response_id
                                         continues a stored response
  Ollama     POST /api/chat              Ollama's native chat API: NDJSON stream
                                         (application/x-ndjson, one object per
                                         line, the last `"done": true` with
                                         prompt_eval_count / eval_count), or one
                                         JSON object with `"stream": false`; tool
                                         calls without ids, arguments as objects
  Gemini     POST /v1beta/models/{m}:generateContent          plain JSON
             POST /v1beta/models/{m}:streamGenerateContent    ?alt=sse: SSE chunks;
                                         else one JSON list of chunks
             (wire formats: see mock_apis.py)
  Other      GET /health                 {"status": "ok"}
             GET /, /index.html          a small HTML page (non-LLM traffic)
             POST /upload                reads any body, answers its size (non-LLM)

Scripted tool-using behaviour, decided only from the request's conversation:
the user prompt names a file after `FILE:` and a command after `CMD:` (each on
its own line). Step = number of tool results already in the history.
  step 0 and FILE given   -> tool call read_file   {"path": FILE}
  step 1 and CMD given    -> tool call run_command {"command": CMD}
                             (run_shell_command, Gemini CLI's shell tool, when
                             a Gemini request declares it and no run_command)
  otherwise / no tools    -> final text "done: <step> tools used"
                             (finish_reason stop / stop_reason end_turn)
Claude Code (an Anthropic request that declares its `Bash` tool and no
`run_command`): a prompt line `run: X` (or `CMD: X`) is answered at step 0 by
a tool_use of Bash {"command": X, "description": ...}, then by the final text.
  Anthropic  POST /v1/messages/count_tokens   {"input_tokens": n} (n from the
                                         request's size; what Claude Code may ask)
Usage is deterministic: input_tokens = 120 + 100*step, output_tokens = 20 + 5*step
(OpenAI: prompt_tokens / completion_tokens, total = sum). Tool call ids are
deterministic too: call_/toolu_ + 24 hex of sha256(provider, prompt, step)
(Gemini function calls carry no id). For the Responses API, step counts
function_call_output items, plus the step of the response named by
previous_response_id; for Gemini, functionResponse parts.

The tests mirror these rules in agent/tests/common/mod.rs: change both together.

Usage:
  mock_llm.py --port 0 --cert server.pem --key server.key [--no-gzip]
              [--record requests.jsonl] [--sse-delay-ms 5]
  mock_llm.py --plain --port 11434 [...]   plain HTTP, no TLS (a local model
                                           server: Ollama, vLLM, llama.cpp)
Prints `PORT <n>` on stdout once listening. Logs one line per request on
stderr. Never logs or records the Authorization / x-api-key / x-goog-api-key header
values (a Gemini key may also come as ?key=: it is not logged either).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import http.server
import json
import re
import socket
import socketserver
import ssl
import sys
import threading
import time
import urllib.parse

import mock_apis
import mock_bedrock

MAX_BODY = 64 * 1024 * 1024  # refuse bodies above this (413)
SECRET_HEADERS = {"authorization", "x-api-key", "api-key", "x-goog-api-key", "proxy-authorization",
                  "cookie"}

FILE_RE = re.compile(r"^\s*FILE:\s*(\S+)\s*$", re.MULTILINE)
CMD_RE = re.compile(r"^\s*CMD:\s*(.+?)\s*$", re.MULTILINE)
RUN_RE = re.compile(r"^\s*(?:run|CMD):\s*(.+?)\s*$", re.MULTILINE)
# The description Claude Code's Bash tool requires with every command.
BASH_DESCRIPTION = "Run the command the user asked for"

LOG_LOCK = threading.Lock()


def log(msg: str) -> None:
    with LOG_LOCK:
        sys.stderr.write(f"[mock_llm {time.strftime('%H:%M:%S')}] {msg}\n")
        sys.stderr.flush()


# ---------------------------------------------------------------- the script

def usage_for(step: int) -> tuple[int, int]:
    """Deterministic (input_tokens, output_tokens) for a reply at `step`."""
    return 120 + 100 * step, 20 + 5 * step


def stable_hex(*parts: object, n: int = 24) -> str:
    h = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).hexdigest()
    return h[:n]


def text_of(content) -> str:
    """Flatten a message content (string or list of parts/blocks) to text."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        out = []
        for part in content:
            if isinstance(part, str):
                out.append(part)
            elif isinstance(part, dict):
                if isinstance(part.get("text"), str):
                    out.append(part["text"])
                elif "content" in part:
                    out.append(text_of(part["content"]))
        return "\n".join(out)
    return ""


class Decision:
    """What the model 'answers' to one request."""

    def __init__(self, provider: str, prompt: str, step: int, tools_declared,
                 tool_names=frozenset(), command_tool: str = "run_command"):
        self.provider = provider
        self.step = step
        self.prompt = prompt
        file_m = FILE_RE.search(prompt)
        cmd_m = CMD_RE.search(prompt)
        script = []
        if "Bash" in tool_names and "run_command" not in tool_names:
            # Claude Code: its own Bash tool runs the command.
            run_m = RUN_RE.search(prompt)
            if run_m:
                script.append(("Bash", {"command": run_m.group(1),
                                        "description": BASH_DESCRIPTION}))
        else:
            if file_m:
                script.append(("read_file", {"path": file_m.group(1)}))
            if cmd_m:
                script.append((command_tool, {"command": cmd_m.group(1)}))
        self.tool = None  # (name, args dict)
        if tools_declared and step < len(script):
            self.tool = script[step]
        self.input_tokens, self.output_tokens = usage_for(step)
        if self.tool:
            prefix = "toolu_" if provider == "anthropic" else "call_"
            self.call_id = prefix + stable_hex(provider, prompt, step)
            self.arguments = json.dumps(self.tool[1])
            self.lead_text = f"I will use the {self.tool[0]} tool."
        else:
            self.call_id = None
            self.arguments = None
            self.lead_text = None
        self.final_text = f"done: {step} tools used"
        self.msg_id = stable_hex(provider, "msg", prompt, step)


def openai_decision(req: dict) -> Decision:
    messages = req.get("messages") or []
    prompt = ""
    for m in messages:
        if isinstance(m, dict) and m.get("role") == "user":
            prompt = text_of(m.get("content"))
            break
    step = sum(1 for m in messages if isinstance(m, dict) and m.get("role") == "tool")
    return Decision("openai", prompt, step, bool(req.get("tools")))


def anthropic_decision(req: dict) -> Decision:
    messages = req.get("messages") or []
    prompt = ""
    step = 0
    for m in messages:
        if not isinstance(m, dict):
            continue
        content = m.get("content")
        if m.get("role") == "user":
            if not prompt:
                if isinstance(content, str):
                    prompt = content
                elif isinstance(content, list):
                    prompt = "\n".join(
                        b.get("text", "") for b in content
                        if isinstance(b, dict) and b.get("type") == "text")
            if isinstance(content, list):
                step += sum(1 for b in content
                            if isinstance(b, dict) and b.get("type") == "tool_result")
    tools = req.get("tools") or []
    names = frozenset(t.get("name") for t in tools if isinstance(t, dict))
    return Decision("anthropic", prompt, step, bool(tools), names)


def count_tokens_reply(req: dict) -> dict:
    """POST /v1/messages/count_tokens: a deterministic count (about one token
    per four bytes of the request, as the API's estimates go)."""
    return {"input_tokens": max(1, len(json.dumps(req)) // 4)}


def chunks_of(s: str, n: int) -> list[str]:
    return [s[i:i + n] for i in range(0, len(s), n)] or [""]


# ---------------------------------------------------------------- OpenAI

def openai_reply(req: dict, d: Decision) -> dict:
    model = req.get("model")
    if d.tool:
        message = {
            "role": "assistant",
            "content": None,
            "tool_calls": [{
                "id": d.call_id,
                "type": "function",
                "function": {"name": d.tool[0], "arguments": d.arguments},
            }],
            "refusal": None,
            "annotations": [],
        }
        finish = "tool_calls"
    else:
        message = {"role": "assistant", "content": d.final_text, "refusal": None,
                   "annotations": []}
        finish = "stop"
    return {
        "id": "chatcmpl-" + d.msg_id,
        "object": "chat.completion",
        "created": 1764000000,
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None,
                     "finish_reason": finish}],
        "usage": {
            "prompt_tokens": d.input_tokens,
            "completion_tokens": d.output_tokens,
            "total_tokens": d.input_tokens + d.output_tokens,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                          "accepted_prediction_tokens": 0,
                                          "rejected_prediction_tokens": 0},
        },
        "service_tier": "default",
        "system_fingerprint": "fp_aitrail_mock",
    }


def openai_stream_events(req: dict, d: Decision) -> list[bytes]:
    include_usage = bool((req.get("stream_options") or {}).get("include_usage"))
    base = {"id": "chatcmpl-" + d.msg_id, "object": "chat.completion.chunk",
            "created": 1764000000, "model": req.get("model"),
            "service_tier": "default", "system_fingerprint": "fp_aitrail_mock"}

    def chunk(delta: dict, finish=None) -> bytes:
        obj = dict(base)
        obj["choices"] = [{"index": 0, "delta": delta, "logprobs": None,
                           "finish_reason": finish}]
        if include_usage:
            obj["usage"] = None
        return b"data: " + json.dumps(obj).encode() + b"\n\n"

    out = []
    if d.tool:
        out.append(chunk({"role": "assistant", "content": None, "tool_calls": [{
            "index": 0, "id": d.call_id, "type": "function",
            "function": {"name": d.tool[0], "arguments": ""}}], "refusal": None}))
        for frag in chunks_of(d.arguments, 7):
            out.append(chunk({"tool_calls": [{"index": 0, "function": {"arguments": frag}}]}))
        out.append(chunk({}, "tool_calls"))
    else:
        out.append(chunk({"role": "assistant", "content": "", "refusal": None}))
        for frag in chunks_of(d.final_text, 4):
            out.append(chunk({"content": frag}))
        out.append(chunk({}, "stop"))
    if include_usage:
        obj = dict(base)
        obj["choices"] = []
        obj["usage"] = {"prompt_tokens": d.input_tokens,
                        "completion_tokens": d.output_tokens,
                        "total_tokens": d.input_tokens + d.output_tokens,
                        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                        "completion_tokens_details": {"reasoning_tokens": 0,
                                                      "audio_tokens": 0,
                                                      "accepted_prediction_tokens": 0,
                                                      "rejected_prediction_tokens": 0}}
        out.append(b"data: " + json.dumps(obj).encode() + b"\n\n")
    out.append(b"data: [DONE]\n\n")
    return out


# ---------------------------------------------------------------- Anthropic

def anthropic_reply(req: dict, d: Decision) -> dict:
    if d.tool:
        content = [
            {"type": "text", "text": d.lead_text},
            {"type": "tool_use", "id": d.call_id, "name": d.tool[0], "input": d.tool[1]},
        ]
        stop = "tool_use"
    else:
        content = [{"type": "text", "text": d.final_text}]
        stop = "end_turn"
    return {
        "id": "msg_" + d.msg_id,
        "type": "message",
        "role": "assistant",
        "model": req.get("model"),
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": {"input_tokens": d.input_tokens, "output_tokens": d.output_tokens,
                  "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                  "service_tier": "standard"},
    }


def sse(event: str, data: dict) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


def anthropic_stream_events(req: dict, d: Decision) -> list[bytes]:
    out = [sse("message_start", {"type": "message_start", "message": {
        "id": "msg_" + d.msg_id, "type": "message", "role": "assistant",
        "model": req.get("model"), "content": [], "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": d.input_tokens, "output_tokens": 1,
                  "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                  "service_tier": "standard"}}})]
    text = d.lead_text if d.tool else d.final_text
    out.append(sse("content_block_start", {"type": "content_block_start", "index": 0,
                                           "content_block": {"type": "text", "text": ""}}))
    out.append(sse("ping", {"type": "ping"}))
    for frag in chunks_of(text, 5):
        out.append(sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                                               "delta": {"type": "text_delta", "text": frag}}))
    out.append(sse("content_block_stop", {"type": "content_block_stop", "index": 0}))
    if d.tool:
        out.append(sse("content_block_start", {"type": "content_block_start", "index": 1,
                                               "content_block": {"type": "tool_use",
                                                                 "id": d.call_id,
                                                                 "name": d.tool[0],
                                                                 "input": {}}}))
        out.append(sse("content_block_delta", {"type": "content_block_delta", "index": 1,
                                               "delta": {"type": "input_json_delta",
                                                         "partial_json": ""}}))
        for frag in chunks_of(d.arguments, 6):
            out.append(sse("content_block_delta", {"type": "content_block_delta", "index": 1,
                                                   "delta": {"type": "input_json_delta",
                                                             "partial_json": frag}}))
        out.append(sse("content_block_stop", {"type": "content_block_stop", "index": 1}))
    out.append(sse("message_delta", {"type": "message_delta",
                                     "delta": {"stop_reason": "tool_use" if d.tool else "end_turn",
                                               "stop_sequence": None},
                                     "usage": {"output_tokens": d.output_tokens}}))
    out.append(sse("message_stop", {"type": "message_stop"}))
    return out


# ---------------------------------------------------------------- HTTP

INDEX_HTML = (b"<!doctype html><html><head><title>aitrail mock</title></head>"
              b"<body><p>Not an LLM endpoint.</p></body></html>\n")


# ---------------------------------------------------------------- Ollama

def ollama_decision(req: dict) -> Decision:
    messages = req.get("messages") or []
    prompt = ""
    for m in messages:
        if isinstance(m, dict) and m.get("role") == "user":
            prompt = text_of(m.get("content"))
            break
    step = sum(1 for m in messages if isinstance(m, dict) and m.get("role") == "tool")
    d = Decision("ollama", prompt, step, bool(req.get("tools")))
    # Ollama's tool calls carry no id (ollama-python's Message.ToolCall has
    # none): the daemon names them itself.
    d.call_id = None
    return d


OLLAMA_CREATED = "2026-11-27T21:00:00.000000000Z"


def ollama_message(d: Decision, content: str, tool: bool) -> dict:
    m = {"role": "assistant", "content": content}
    if tool:
        m["tool_calls"] = [{"function": {"name": d.tool[0], "arguments": d.tool[1]}}]
    return m


def ollama_done(req: dict, d: Decision, message: dict) -> dict:
    return {"model": req.get("model"), "created_at": OLLAMA_CREATED, "message": message,
            "done_reason": "stop", "done": True, "total_duration": 123456789,
            "load_duration": 1234567, "prompt_eval_count": d.input_tokens,
            "prompt_eval_duration": 2345678, "eval_count": d.output_tokens,
            "eval_duration": 3456789}


def ollama_reply(req: dict, d: Decision) -> dict:
    if d.tool:
        return ollama_done(req, d, ollama_message(d, "", True))
    return ollama_done(req, d, ollama_message(d, d.final_text, False))


def ollama_stream_lines(req: dict, d: Decision) -> list[bytes]:
    """What `ollama serve` streams: content in pieces, a tool call whole in
    one line, then the `done` line with an empty message."""
    model = req.get("model")
    lines = []
    if d.tool:
        lines.append({"model": model, "created_at": OLLAMA_CREATED,
                      "message": ollama_message(d, "", True), "done": False})
    else:
        for piece in chunks_of(d.final_text, 4):
            lines.append({"model": model, "created_at": OLLAMA_CREATED,
                          "message": {"role": "assistant", "content": piece}, "done": False})
    lines.append(ollama_done(req, d, {"role": "assistant", "content": ""}))
    return [json.dumps(x).encode() + b"\n" for x in lines]


class BodyError(Exception):
    def __init__(self, status: int, msg: str):
        super().__init__(msg)
        self.status = status


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "aitrail-mock/1.0"
    timeout = 30  # idle keep-alive connections are closed after this

    def version_string(self):
        return self.server_version

    # quiet default logging; we log our own lines without headers
    def log_message(self, fmt, *args):  # noqa: N802 (stdlib name)
        pass

    def log_error(self, fmt, *args):
        # messages may quote attacker bytes: escape and cut them
        msg = (fmt % args).encode("utf-8", "replace").decode("ascii", "backslashreplace")
        if len(msg) > 160:
            msg = msg[:160] + "..."
        log(f"{self.client_address[0]}:{self.client_address[1]} error: {msg}")

    # -- body --------------------------------------------------------
    def read_body(self) -> bytes:
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            parts, total = [], 0
            while True:
                line = self.rfile.readline(1024)
                if not line:
                    raise BodyError(400, "truncated chunked body")
                try:
                    size = int(line.split(b";")[0].strip(), 16)
                except ValueError:
                    raise BodyError(400, "bad chunk size") from None
                if size == 0:
                    while True:  # trailers
                        t = self.rfile.readline(8192)
                        if t in (b"\r\n", b"\n", b""):
                            break
                    return b"".join(parts)
                total += size
                if total > MAX_BODY:
                    raise BodyError(413, "body too large")
                data = self.rfile.read(size)
                if len(data) != size:
                    raise BodyError(400, "truncated chunk")
                parts.append(data)
                self.rfile.readline(8)  # CRLF after chunk data
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        try:
            n = int(length)
        except ValueError:
            raise BodyError(400, "bad Content-Length") from None
        if n < 0:
            raise BodyError(400, "bad Content-Length")
        if n > MAX_BODY:
            raise BodyError(413, "body too large")
        data = self.rfile.read(n)
        if len(data) != n:
            raise BodyError(400, f"truncated body: {len(data)} of {n} bytes")
        return data

    # -- responses ---------------------------------------------------
    def wants_gzip(self) -> bool:
        if not self.server.gzip_enabled:
            return False
        ae = (self.headers.get("Accept-Encoding") or "").lower()
        return any(tok.split(";")[0].strip() == "gzip" for tok in ae.split(","))

    def send_bytes(self, status: int, body: bytes, ctype: str, extra=None,
                   compressible=True) -> None:
        encoded = False
        if compressible and self.wants_gzip():
            body = gzip.compress(body, mtime=0)
            encoded = True
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        if encoded:
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Vary", "Accept-Encoding")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.wfile.flush()

    def send_json(self, status: int, obj: dict, extra=None) -> None:
        self.send_bytes(status, json.dumps(obj).encode(), "application/json", extra)

    def send_sse(self, events: list[bytes], extra=None) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        delay = self.server.sse_delay
        for ev in events:
            # one chunk per event, written at once: one TLS record each
            self.wfile.write(b"%x\r\n" % len(ev) + ev + b"\r\n")
            self.wfile.flush()
            if delay:
                time.sleep(delay)
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def send_eventstream(self, messages: list[bytes], extra=None) -> None:
        """AWS event-stream messages, one chunk (one TLS record) each."""
        self.send_response(200)
        self.send_header("Content-Type", "application/vnd.amazon.eventstream")
        self.send_header("Transfer-Encoding", "chunked")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        for m in messages:
            self.wfile.write(b"%x\r\n" % len(m) + m + b"\r\n")
            self.wfile.flush()
            if self.server.sse_delay:
                time.sleep(self.server.sse_delay)
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def error_json(self, provider: str, status: int, msg: str) -> None:
        if provider == "bedrock":
            kind = {400: "ValidationException", 403: "AccessDeniedException",
                    404: "ResourceNotFoundException",
                    429: "ThrottlingException"}.get(status, "InternalServerException")
            self.send_json(status, {"message": msg},
                           {"x-amzn-ErrorType": f"{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/",
                            "x-amzn-RequestId": "00000000-0000-4000-8000-000000000000"})
        elif provider == "gemini":
            self.send_json(status, mock_apis.gemini_error(status, msg))
        elif provider == "anthropic":
            kind = {400: "invalid_request_error", 401: "authentication_error",
                    404: "not_found_error", 413: "request_too_large"}.get(status, "api_error")
            self.send_json(status, {"type": "error", "error": {"type": kind, "message": msg}},
                           {"request-id": "req_mock_error"})
        else:
            self.send_json(status, {"error": {"message": msg, "type": "invalid_request_error",
                                              "param": None, "code": None}})

    def note(self, status_note: str, body_len: int) -> None:
        log(f"{self.client_address[0]}:{self.client_address[1]} {self.command} {self.path.split('?')[0]} "
            f"body={body_len}B {status_note}")

    def record(self, entry: dict) -> None:
        if self.server.record_path is None:
            return
        headers = {k.lower(): ("<redacted>" if k.lower() in SECRET_HEADERS else v)
                   for k, v in self.headers.items()}
        # The path without its query (a Gemini key may ride there); the
        # query's parameter names are kept so tests can tag requests.
        path, _, query = self.path.partition("?")
        names = [p.split("=", 1)[0] for p in query.split("&") if p]
        entry = {"time": time.time(), "method": self.command, "path": path,
                 "query_names": names, "headers": headers, **entry}
        with self.server.record_lock, open(self.server.record_path, "a") as f:
            f.write(json.dumps(entry) + "\n")

    # -- verbs -------------------------------------------------------
    def do_GET(self):  # noqa: N802
        path = self.path.split("?")[0]
        if path == "/health":
            self.note("200 health", 0)
            self.record({"status": 200})
            self.send_json(200, {"status": "ok"})
        elif path in ("/", "/index.html"):
            self.note("200 html", 0)
            self.record({"status": 200})
            self.send_bytes(200, INDEX_HTML, "text/html; charset=utf-8")
        else:
            self.note("404", 0)
            self.record({"status": 404})
            self.send_json(404, {"error": {"message": "not found"}})

    def do_HEAD(self):  # noqa: N802
        self.do_GET()

    def do_POST(self):  # noqa: N802
        path, _, query = self.path.partition("?")
        gemini = mock_apis.GEMINI_PATH.match(path)
        bedrock = mock_bedrock.BEDROCK_PATH.match(path)
        provider = {"/v1/messages": "anthropic", "/v1/messages/count_tokens": "anthropic",
                    "/v1/responses": "responses", "/api/chat": "ollama"}.get(
            path, "gemini" if gemini else "bedrock" if bedrock else "openai")
        try:
            raw = self.read_body()
        except BodyError as e:
            self.close_connection = True
            self.note(f"{e.status} {e}", 0)
            self.record({"status": e.status, "error": str(e)})
            try:
                self.error_json(provider, e.status, str(e))
            except OSError:
                pass
            return
        except (OSError, ssl.SSLError) as e:
            self.close_connection = True
            self.note(f"connection lost while reading body: {e}", 0)
            return

        if path == "/upload":
            digest = hashlib.sha256(raw).hexdigest()
            self.note("200 upload", len(raw))
            self.record({"status": 200, "body_len": len(raw)})
            self.send_json(200, {"received": len(raw), "sha256": digest})
            return
        if gemini or provider == "responses":
            self.answer_new_api(provider, raw, gemini, urllib.parse.parse_qs(query))
            return
        if bedrock:
            self.answer_bedrock(bedrock, raw)
            return
        if provider == "ollama":
            self.answer_ollama(raw)
            return
        if path not in ("/v1/chat/completions", "/v1/messages", "/v1/messages/count_tokens"):
            self.note("404", len(raw))
            self.record({"status": 404, "body_len": len(raw)})
            self.error_json(provider, 404, f"unknown path {path}")
            return

        if provider == "anthropic" and not self.headers.get("x-api-key") \
                and not self.headers.get("Authorization"):
            self.note("401 no api key", len(raw))
            self.record({"status": 401})
            self.error_json(provider, 401, "missing x-api-key")
            return
        if provider == "openai" and not self.headers.get("Authorization"):
            self.note("401 no api key", len(raw))
            self.record({"status": 401})
            self.error_json(provider, 401, "missing Authorization")
            return

        try:
            req = json.loads(raw)
            if not isinstance(req, dict):
                raise ValueError("body is not a JSON object")
            if not isinstance(req.get("model"), str) or not isinstance(req.get("messages"), list):
                raise ValueError("model and messages are required")
        except (ValueError, UnicodeDecodeError) as e:
            self.note(f"400 invalid json ({e.__class__.__name__})", len(raw))
            self.record({"status": 400, "body_len": len(raw)})
            self.error_json(provider, 400, f"invalid request body: {e}"[:200])
            return

        if path == "/v1/messages/count_tokens":
            reply = count_tokens_reply(req)
            self.note(f"200 count_tokens {reply['input_tokens']}", len(raw))
            self.record({"status": 200, "provider": "anthropic", "model": req["model"],
                         "count_tokens": reply["input_tokens"]})
            self.send_json(200, reply, {"request-id": "req_count_" + stable_hex(raw)})
            return

        stream = bool(req.get("stream"))
        if provider == "openai":
            d = openai_decision(req)
            extra = {"x-request-id": "req_" + d.msg_id, "openai-processing-ms": "7"}
        else:
            d = anthropic_decision(req)
            extra = {"request-id": "req_" + d.msg_id}
        what = f"tool_call {d.tool[0]}" if d.tool else "text"
        self.note(f"200 {provider} model={req['model']} stream={stream} step={d.step} -> {what}",
                  len(raw))
        self.record({"status": 200, "provider": provider, "model": req["model"],
                     "stream": stream, "step": d.step,
                     "tool": d.tool[0] if d.tool else None, "call_id": d.call_id,
                     "arguments": d.arguments,
                     "usage": [d.input_tokens, d.output_tokens], "body": req})
        if provider == "openai":
            if stream:
                self.send_sse(openai_stream_events(req, d), extra)
            else:
                self.send_json(200, openai_reply(req, d), extra)
        else:
            if stream:
                self.send_sse(anthropic_stream_events(req, d), extra)
            else:
                self.send_json(200, anthropic_reply(req, d), extra)


    def answer_ollama(self, raw: bytes) -> None:
        """Ollama /api/chat: no key; streams NDJSON unless `"stream": false`."""
        try:
            req = json.loads(raw)
            if not isinstance(req, dict) or not isinstance(req.get("model"), str) \
                    or not isinstance(req.get("messages"), list):
                raise ValueError("model and messages are required")
        except (ValueError, UnicodeDecodeError) as e:
            self.note(f"400 invalid json ({e.__class__.__name__})", len(raw))
            self.record({"status": 400, "body_len": len(raw)})
            self.send_json(400, {"error": f"invalid request body: {e}"[:200]})
            return
        stream = req.get("stream", True) is not False
        d = ollama_decision(req)
        what = f"tool_call {d.tool[0]}" if d.tool else "text"
        self.note(f"200 ollama model={req['model']} stream={stream} step={d.step} -> {what}",
                  len(raw))
        self.record({"status": 200, "provider": "ollama", "model": req["model"],
                     "stream": stream, "step": d.step, "tool": d.tool[0] if d.tool else None,
                     "call_id": None,
                     "arguments": json.dumps(d.tool[1]) if d.tool else None,
                     "usage": [d.input_tokens, d.output_tokens], "body": req})
        if not stream:
            self.send_json(200, ollama_reply(req, d))
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for line in ollama_stream_lines(req, d):
            self.wfile.write(b"%x\r\n" % len(line) + line + b"\r\n")
            self.wfile.flush()
            if self.server.sse_delay:
                time.sleep(self.server.sse_delay)
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def answer_bedrock(self, m, raw: bytes) -> None:
        """Bedrock runtime: Converse(Stream) and InvokeModel(WithResponseStream)
        with an Anthropic model (wire formats: see mock_bedrock.py)."""
        model, action = mock_bedrock.model_of(m), m.group(2)
        auth = self.headers.get("Authorization") or ""
        if not auth.startswith("AWS4-HMAC-SHA256 Credential="):
            self.note("403 not signed", len(raw))
            self.record({"status": 403})
            self.error_json("bedrock", 403, "Missing Authentication Token")
            return
        try:
            req = json.loads(raw)
            if not isinstance(req, dict):
                raise ValueError("body is not a JSON object")
            invoke = action.startswith("invoke")
            problem = (None if not invoke or isinstance(req.get("messages"), list)
                       else "messages is required") if invoke \
                else mock_bedrock.validate_converse(req)
            if problem:
                raise ValueError(problem)
        except (ValueError, UnicodeDecodeError) as e:
            self.note(f"400 invalid request ({e})", len(raw))
            self.record({"status": 400, "body_len": len(raw)})
            self.error_json("bedrock", 400, f"invalid request body: {e}"[:200])
            return
        stream = action in ("converse-stream", "invoke-with-response-stream")
        if invoke:
            d = anthropic_decision(req)
        else:
            d = Decision("bedrock", *mock_bedrock.converse_context(req))
            if d.call_id:
                d.call_id = "tooluse_" + d.call_id.removeprefix("call_")
        what = f"tool_call {d.tool[0]}" if d.tool else "text"
        self.note(f"200 bedrock {action} model={model} step={d.step} -> {what}", len(raw))
        self.record({"status": 200, "provider": "bedrock", "model": model, "stream": stream,
                     "step": d.step, "tool": d.tool[0] if d.tool else None,
                     "call_id": d.call_id, "arguments": d.arguments,
                     "usage": [d.input_tokens, d.output_tokens], "body": req})
        extra = {"x-amzn-RequestId": stable_hex("bedrock", d.msg_id, n=32)}
        if action == "converse":
            self.send_json(200, mock_bedrock.converse_reply(d), extra)
        elif action == "converse-stream":
            self.send_eventstream(mock_bedrock.converse_stream(d), extra)
        elif action == "invoke":
            self.send_json(200, anthropic_reply(dict(req, model=model), d), extra)
        else:
            events = anthropic_stream_events(dict(req, model=model), d)
            self.send_eventstream(mock_bedrock.invoke_chunks(events, d), extra)

    def answer_new_api(self, provider: str, raw: bytes, gemini, query: dict) -> None:
        """POST /v1/responses and Gemini's generateContent methods."""
        if provider == "gemini":
            has_key = self.headers.get("x-goog-api-key") or query.get("key")
        else:
            has_key = self.headers.get("Authorization")
        if not has_key:
            # Gemini refuses a call without a key with 403 PERMISSION_DENIED.
            status = 403 if provider == "gemini" else 401
            self.note(f"{status} no api key", len(raw))
            self.record({"status": status})
            self.error_json(provider, status, "Method doesn't allow unregistered callers. "
                            "Please use an API key." if provider == "gemini" else "missing Authorization")
            return
        try:
            req = json.loads(raw)
            if not isinstance(req, dict):
                raise ValueError("body is not a JSON object")
            if provider == "gemini" and not isinstance(req.get("contents"), list):
                raise ValueError("contents is required")
            if provider == "responses" and (not isinstance(req.get("model"), str)
                                            or not isinstance(req.get("input"), (str, list))):
                raise ValueError("model and input are required")
        except (ValueError, UnicodeDecodeError) as e:
            self.note(f"400 invalid json ({e.__class__.__name__})", len(raw))
            self.record({"status": 400, "body_len": len(raw)})
            self.error_json(provider, 400, f"invalid request body: {e}"[:200])
            return
        if provider == "gemini":
            model, method = gemini.group(1), gemini.group(2)
            stream = method == "streamGenerateContent"
            prompt, step, declared, command = mock_apis.gemini_context(req)
            d = Decision("gemini", prompt, step, declared, command_tool=command)
        else:
            model, stream = req["model"], bool(req.get("stream"))
            d = Decision("responses", *mock_apis.responses_context(req, self.server.responses))
            self.server.responses.put("resp_" + d.msg_id, d.prompt, d.step)
        what = f"tool_call {d.tool[0]}" if d.tool else "text"
        self.note(f"200 {provider} model={model} stream={stream} step={d.step} -> {what}", len(raw))
        self.record({"status": 200, "provider": provider, "model": model, "stream": stream,
                     "step": d.step, "tool": d.tool[0] if d.tool else None, "call_id": d.call_id,
                     "arguments": d.arguments, "usage": [d.input_tokens, d.output_tokens], "body": req})
        extra = {"x-request-id": "req_" + d.msg_id}
        if provider == "responses":
            if stream:
                self.send_sse(mock_apis.responses_stream_events(req, d), extra)
            else:
                self.send_json(200, mock_apis.responses_reply(req, d), extra)
            return
        chunks = mock_apis.gemini_chunks(model, d, stream)
        if not stream:
            self.send_json(200, chunks[0])
        elif query.get("alt") == ["sse"]:
            self.send_sse(mock_apis.gemini_sse_events(chunks))
        else:
            self.send_json(200, chunks)


class TLSServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr, ctx: ssl.SSLContext, gzip_enabled: bool,
                 record_path: str | None, sse_delay: float):
        super().__init__(addr, Handler)
        self.ctx = ctx
        self.gzip_enabled = gzip_enabled
        self.record_path = record_path
        self.record_lock = threading.Lock()
        self.sse_delay = sse_delay
        self.responses = mock_apis.ResponseStore()

    def finish_request(self, request, client_address):
        if self.ctx is None:
            # --plain: HTTP straight on the socket.
            request.settimeout(30)
            try:
                self.RequestHandlerClass(request, client_address, self)
            except OSError as e:
                log(f"{client_address[0]}:{client_address[1]} connection error: {e}")
            return
        # The TLS handshake runs here, in the connection's own thread, so a
        # slow or broken client never blocks the accept loop.
        request.settimeout(30)
        try:
            tls = self.ctx.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as e:
            log(f"{client_address[0]}:{client_address[1]} TLS handshake failed: {e}")
            return
        try:
            self.RequestHandlerClass(tls, client_address, self)
        except (ssl.SSLError, OSError) as e:
            log(f"{client_address[0]}:{client_address[1]} connection error: {e}")
        finally:
            try:
                tls.close()
            except OSError:
                pass

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        log(f"{client_address} unhandled error: {exc!r}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0 = pick a free port")
    ap.add_argument("--cert", help="server certificate (PEM); required unless --plain")
    ap.add_argument("--key", help="server private key (PEM); required unless --plain")
    ap.add_argument("--plain", action="store_true",
                    help="plain HTTP (no TLS), as local model servers speak")
    ap.add_argument("--gzip", action=argparse.BooleanOptionalAction, default=True,
                    help="gzip non-streamed replies when the client accepts gzip "
                         "(default on)")
    ap.add_argument("--record", default=None,
                    help="append one JSON line per request (secrets redacted)")
    ap.add_argument("--sse-delay-ms", type=float, default=5.0,
                    help="pause between SSE events (default 5 ms)")
    args = ap.parse_args()

    ctx = None
    if not args.plain:
        if not args.cert or not args.key:
            ap.error("--cert and --key are required unless --plain")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(args.cert, args.key)
        ctx.set_alpn_protocols(["http/1.1"])

    srv = TLSServer((args.host, args.port), ctx, args.gzip, args.record,
                    args.sse_delay_ms / 1000.0)
    port = srv.server_address[1]
    sys.stdout.write(f"PORT {port}\n")
    sys.stdout.flush()
    scheme = "http" if args.plain else "https"
    log(f"listening on {scheme}://{args.host}:{port} gzip={args.gzip}")
    try:
        srv.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        srv.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
