#!/usr/bin/env python3
"""A local HTTPS mock MCP server for aitrail's end-to-end tests (stdlib only).

Speaks MCP's HTTP transports well enough for a client to initialise, list the
tools and call them:

  Streamable HTTP (2025-03-26, 2025-06-18)
    POST /mcp        JSON-RPC 2.0, one message or a batch (array). The answer
                     is JSON or SSE as --mode says; /mcp/json and /mcp/sse
                     force one. `initialize` assigns a session
                     (Mcp-Session-Id response header); every later request
                     must carry it (400 without, 404 for an unknown one).
                     Notifications and responses alone: 202, no body.
    GET /mcp         405 (no server-initiated stream)
    DELETE /mcp      ends the session
  HTTP+SSE (2024-11-05)
    GET /sse         stream: `event: endpoint` naming /messages/?session_id=…,
                     then each answer as `event: message`
    POST /messages/?session_id=…   202 Accepted; the answer goes to the stream

Methods: initialize, ping, tools/list, tools/call, notifications/*.
Tools:
  read_file {"path"}   reads the file (the server process opens it: a real
                       effect), first 64 KiB as text; a missing or unreadable
                       file is a result with isError true.
  echo {"text"}        returns the text.
Any other tool is a JSON-RPC error -32602. With `_meta.progressToken` in SSE
mode, a notifications/progress event comes before the result.

Usage (make_cert.sh DIR writes the test PKI):
  python3 tests/mock/mock_mcp.py --cert DIR/server.pem --key DIR/server.key [--port N] [--mode sse]
prints `PORT <n>` on stdout once listening.
"""

import argparse
import http.server
import json
import queue
import ssl
import sys
import threading
import urllib.parse
import uuid

PROTOCOL_VERSIONS = ("2025-06-18", "2025-03-26", "2024-11-05")
MAX_READ = 64 * 1024

TOOLS = [
    {"name": "read_file", "title": "Read file", "description": "Read a text file",
     "inputSchema": {"type": "object", "properties": {"path": {"type": "string"}},
                     "required": ["path"]}},
    {"name": "echo", "description": "Echo the text back",
     "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}},
                     "required": ["text"]}},
]


def log(msg):
    sys.stderr.write(f"mock_mcp: {msg}\n")
    sys.stderr.flush()


def text_result(text, is_error=False):
    return {"content": [{"type": "text", "text": text}], "isError": is_error}


def call_tool(params):
    name = params.get("name")
    args = params.get("arguments") or {}
    if name == "read_file":
        path = str(args.get("path", ""))
        try:
            with open(path, "rb") as f:
                data = f.read(MAX_READ)
        except OSError as e:
            return text_result(f"cannot read {path}: {e.strerror}", True), None
        return text_result(data.decode("utf-8", "replace")), None
    if name == "echo":
        return text_result(str(args.get("text", ""))), None
    return None, {"code": -32602, "message": f"Unknown tool: {name}"}


def answer(msg, negotiated=None):
    """The response to one request message, or None for notifications and
    responses."""
    if not isinstance(msg, dict) or "method" not in msg or "id" not in msg:
        return None
    method, params, mid = msg["method"], msg.get("params") or {}, msg["id"]
    result, error = None, None
    if method == "initialize":
        asked = params.get("protocolVersion")
        version = asked if asked in PROTOCOL_VERSIONS else PROTOCOL_VERSIONS[0]
        if negotiated is not None:
            negotiated.append(version)
        result = {"protocolVersion": version,
                  "capabilities": {"tools": {"listChanged": False}},
                  "serverInfo": {"name": "aitrail-mock-mcp", "version": "0.1.0"}}
    elif method == "ping":
        result = {}
    elif method == "tools/list":
        result = {"tools": TOOLS}
    elif method == "tools/call":
        result, error = call_tool(params)
    else:
        error = {"code": -32601, "message": f"Method not found: {method}"}
    out = {"jsonrpc": "2.0", "id": mid}
    if error is not None:
        out["error"] = error
    else:
        out["result"] = result
    return out


def sse(obj, event="message"):
    return f"event: {event}\ndata: {json.dumps(obj, separators=(',', ':'))}\n\n".encode()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "mock-mcp/0.1"

    def log_message(self, fmt, *args):
        log(f"{self.client_address[0]} {fmt % args}")

    def send_body(self, status, body=b"", ctype="application/json", headers=()):
        self.send_response(status)
        if body:
            self.send_header("Content-Type", ctype)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def send_json(self, status, obj, headers=()):
        self.send_body(status, json.dumps(obj, separators=(",", ":")).encode(),
                       headers=headers)

    def rpc_error(self, status, code, message):
        self.send_json(status, {"jsonrpc": "2.0", "id": None,
                                "error": {"code": code, "message": message}})

    def read_body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def do_GET(self):
        path = urllib.parse.urlsplit(self.path).path
        if path == "/sse":
            return self.legacy_stream()
        if path.startswith("/mcp"):
            return self.send_body(405, headers=[("Allow", "POST, DELETE")])
        self.send_body(404, b"not found", "text/plain")

    def do_DELETE(self):
        sid = self.headers.get("Mcp-Session-Id")
        with self.server.lock:
            known = self.server.sessions.pop(sid, None) is not None
        self.send_body(200 if known else 404)

    def record(self, methods):
        """One line per POST: its JSON-RPC methods (the test's ground truth)."""
        if self.server.record_path is None:
            return
        with self.server.lock, open(self.server.record_path, "a") as f:
            f.write(json.dumps({"path": self.path.split("?")[0], "methods": methods}) + "\n")

    def do_POST(self):
        url = urllib.parse.urlsplit(self.path)
        body = self.read_body()
        if url.path.rstrip("/") == "/messages":
            return self.legacy_post(url, body)
        if url.path not in ("/mcp", "/mcp/json", "/mcp/sse"):
            return self.send_body(404, b"not found", "text/plain")
        mode = {"/mcp/json": "json", "/mcp/sse": "sse"}.get(url.path, self.server.mode)
        try:
            msg = json.loads(body)
        except ValueError:
            return self.rpc_error(400, -32700, "Parse error")
        batch = isinstance(msg, list)
        msgs = msg if batch else [msg]
        self.record([m.get("method") for m in msgs if isinstance(m, dict)])
        is_init = any(isinstance(m, dict) and m.get("method") == "initialize" for m in msgs)
        headers = []
        if is_init:
            sid = uuid.uuid4().hex
            with self.server.lock:
                self.server.sessions[sid] = True
            headers.append(("Mcp-Session-Id", sid))
        else:
            sid = self.headers.get("Mcp-Session-Id")
            if not sid:
                return self.rpc_error(400, -32000, "Bad Request: Mcp-Session-Id required")
            with self.server.lock:
                if sid not in self.server.sessions:
                    return self.rpc_error(404, -32001, "Session not found")
        answers = [a for a in (answer(m) for m in msgs) if a is not None]
        if not answers:
            return self.send_body(202)
        if mode == "json":
            return self.send_json(200, answers if batch else answers[0], headers)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        for m, a in zip([m for m in msgs if answer(m) is not None], answers):
            token = ((m.get("params") or {}).get("_meta") or {}).get("progressToken")
            if token is not None:
                self.write_chunk(sse({"jsonrpc": "2.0", "method": "notifications/progress",
                                      "params": {"progressToken": token, "progress": 1, "total": 1}}))
            self.write_chunk(sse(a))
        self.wfile.write(b"0\r\n\r\n")

    def write_chunk(self, data):
        self.wfile.write(b"%x\r\n" % len(data) + data + b"\r\n")
        self.wfile.flush()

    # ---------------------------------------------- HTTP+SSE (2024-11-05)

    def legacy_stream(self):
        sid = uuid.uuid4().hex
        q = queue.Queue()
        with self.server.lock:
            self.server.streams[sid] = q
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            self.write_chunk(f"event: endpoint\ndata: /messages/?session_id={sid}\n\n".encode())
            while True:
                try:
                    item = q.get(timeout=15)
                except queue.Empty:
                    self.write_chunk(b": ping\n\n")
                    continue
                if item is None:
                    break
                self.write_chunk(sse(item))
            self.wfile.write(b"0\r\n\r\n")
        except OSError:
            pass
        finally:
            with self.server.lock:
                self.server.streams.pop(sid, None)

    def legacy_post(self, url, body):
        sid = (urllib.parse.parse_qs(url.query).get("session_id") or [""])[0]
        with self.server.lock:
            q = self.server.streams.get(sid)
        if q is None:
            return self.send_body(404, b"Could not find session", "text/plain")
        try:
            msg = json.loads(body)
        except ValueError:
            return self.send_body(400, b"Could not parse message", "text/plain")
        for m in msg if isinstance(msg, list) else [msg]:
            a = answer(m)
            if a is not None:
                q.put(a)
        self.send_body(202, b"Accepted", "text/plain; charset=utf-8")


class TLSServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr, ctx, mode, record_path=None):
        super().__init__(addr, Handler)
        self.ctx = ctx
        self.mode = mode
        self.record_path = record_path
        self.lock = threading.Lock()
        self.sessions = {}
        self.streams = {}

    def finish_request(self, request, client_address):
        # Handshake in the connection's own thread, as mock_llm.py does.
        request.settimeout(60)
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0 = pick a free port")
    ap.add_argument("--cert", required=True, help="server certificate (PEM)")
    ap.add_argument("--key", required=True, help="server private key (PEM)")
    ap.add_argument("--mode", choices=("json", "sse"), default="json",
                    help="how POST /mcp answers requests (default json)")
    ap.add_argument("--record", help="append each POST's JSON-RPC methods to this file")
    args = ap.parse_args()

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(args.cert, args.key)
    ctx.set_alpn_protocols(["http/1.1"])

    srv = TLSServer((args.host, args.port), ctx, args.mode, args.record)
    port = srv.server_address[1]
    sys.stdout.write(f"PORT {port}\n")
    sys.stdout.flush()
    log(f"listening on https://{args.host}:{port} mode={args.mode}")
    try:
        srv.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        srv.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
