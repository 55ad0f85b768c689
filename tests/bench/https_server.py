"""A minimal HTTPS server answering every POST like an OpenAI chat completion.

Usage: https_server.py CERT KEY. Listens on 127.0.0.1, an ephemeral port,
which it prints on its first stdout line. HTTP/1.1 keep-alive.
"""
import json
import ssl
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

REPLY = json.dumps({
    "id": "chatcmpl-bench",
    "object": "chat.completion",
    "created": 1764244800,
    "model": "gpt-4o-mini",
    "choices": [{
        "index": 0,
        "message": {"role": "assistant", "content": "pong"},
        "finish_reason": "stop",
    }],
    "usage": {"prompt_tokens": 9, "completion_tokens": 1, "total_tokens": 10},
}).encode()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        # Head and body in one write (one TLS record): two small writes
        # would meet Nagle and delayed ACK, 40 ms per request.
        head = (
            "HTTP/1.1 200 OK\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(REPLY)}\r\n\r\n"
        ).encode()
        self.wfile.write(head + REPLY)

    def log_message(self, *args):
        pass


def main():
    cert, key = sys.argv[1:3]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    print(srv.server_address[1], flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
