#!/usr/bin/env python3
"""An OTLP/HTTP logs receiver for the forwarder tests.

Decodes every POST /v1/logs with the official protobuf definitions (the
`opentelemetry-proto` package, pinned in tests/clients/requirements.txt),
independently of the Rust code that encoded it, and records what it got as
one JSON line per request (google.protobuf.json_format, proto field names,
enums as numbers; bytes are base64 and 64-bit integers strings, as in the
proto3 JSON mapping).

    otlp_receiver.py --port 0 --record requests.jsonl [--cert C --key K]
                     [--script answers.json] [--max-body N] [--token T]

Prints "PORT <n>" once listening (127.0.0.1 only). Answers, in this order:
  401 when --token is given and the request's bearer token differs;
  415 when Content-Type is not application/x-protobuf;
  400 (google.rpc.Status) when the body is not an ExportLogsServiceRequest;
  413 when the decoded body is over --max-body bytes;
  else the next entry of --script (a JSON list of
  {"status": 429, "retry_after": "1", "message": "…",
   "partial_rejected": 2}) while there is one, then 200 with an empty
  ExportLogsServiceResponse.
"""

import argparse
import gzip
import json
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2

MAX_REQUEST = 64 * 1024 * 1024


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def rpc_status(code, message):
    """google.rpc.Status {code = 1, message = 2}, encoded by hand (the
    package that ships it is not needed for two fields)."""
    m = message.encode()
    return b"\x08" + varint(code) + b"\x12" + varint(len(m)) + m


class State:
    def __init__(self, args):
        self.args = args
        self.lock = threading.Lock()
        self.script = []
        if args.script:
            with open(args.script) as f:
                self.script = json.load(f)
        self.record = open(args.record, "a", buffering=1)

    def next_answer(self):
        with self.lock:
            return self.script.pop(0) if self.script else {"status": 200}

    def write(self, entry):
        with self.lock:
            self.record.write(json.dumps(entry) + "\n")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state = None

    def log_message(self, fmt, *a):
        sys.stderr.write("otlp_receiver: " + (fmt % a) + "\n")

    def answer(self, status, body=b"", content_type="application/x-protobuf", extra=()):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        st = self.state
        length = int(self.headers.get("Content-Length", "0"))
        if length > MAX_REQUEST:
            self.answer(413, rpc_status(8, "request too large"))
            self.close_connection = True
            return
        raw = self.rfile.read(length)
        entry = {
            "t": time.time(),
            "path": self.path,
            "content_type": self.headers.get("Content-Type"),
            "content_encoding": self.headers.get("Content-Encoding"),
            "authorization": self.headers.get("Authorization"),
            "user_agent": self.headers.get("User-Agent"),
            "body_bytes": len(raw),
        }

        def done(status, body=b"", extra=()):
            entry["status"] = status
            st.write(entry)
            self.answer(status, body, extra=extra)

        if self.path != "/v1/logs":
            return done(404, rpc_status(5, "not found"))
        if st.args.token and self.headers.get("Authorization") != "Bearer " + st.args.token:
            return done(401, rpc_status(16, "bad token"))
        if self.headers.get("Content-Type") != "application/x-protobuf":
            return done(415, rpc_status(3, "want application/x-protobuf"))
        try:
            if self.headers.get("Content-Encoding") == "gzip":
                raw = gzip.decompress(raw)
            req = logs_service_pb2.ExportLogsServiceRequest()
            req.ParseFromString(raw)
        except (OSError, EOFError, DecodeError) as e:
            entry["error"] = str(e)
            return done(400, rpc_status(3, "cannot decode: %s" % e))
        entry["decoded_bytes"] = len(raw)
        if st.args.max_body and len(raw) > st.args.max_body:
            return done(413, rpc_status(8, "over %d bytes" % st.args.max_body))
        entry["records"] = sum(
            len(sl.log_records) for rl in req.resource_logs for sl in rl.scope_logs
        )
        want = st.next_answer()
        status = want.get("status", 200)
        extra = []
        if "retry_after" in want:
            extra.append(("Retry-After", str(want["retry_after"])))
        if status == 200:
            resp = logs_service_pb2.ExportLogsServiceResponse()
            if want.get("partial_rejected"):
                resp.partial_success.rejected_log_records = want["partial_rejected"]
                resp.partial_success.error_message = want.get("message", "rejected")
            # Only requests that were accepted carry their records.
            entry["request"] = json_format.MessageToDict(
                req, preserving_proto_field_name=True, use_integers_for_enums=True
            )
            return done(200, resp.SerializeToString(), extra)
        return done(status, rpc_status(14 if status >= 500 else 3, want.get("message", "scripted")), extra)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--record", required=True)
    p.add_argument("--script")
    p.add_argument("--max-body", type=int, default=0)
    p.add_argument("--token")
    args = p.parse_args()
    if args.host not in ("127.0.0.1", "::1", "localhost"):
        sys.exit("otlp_receiver: loopback only")
    Handler.state = State(args)
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    if args.cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.cert, args.key)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    print("PORT %d" % server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
