#!/usr/bin/env python3
"""Seeds the fuzz corpus (tests/fuzz-corpus/<target>/) from the capture
fixtures, in each target's input format (agent/src/fuzz.rs). Idempotent: a
seed is named by the hash of its bytes. `cargo xtask fuzz` runs it first.

  connection, h2_connection  every tests/fixtures/{http,llm,h2,mcp,ws}/*.cap as capture
                             ops (op byte: bit 0 = inbound, bit 1 = gap; u16 LE length)
  websocket                  selector byte + capture ops: the ws fixtures whole (0x80:
                             their own upgrade), and their frames after the 101 under
                             each permessage-deflate selector
  sse, eventstream           the response bodies of the fixtures that stream them
  llm_exchange               selector byte + request body + NUL + response body
"""

import hashlib
import os
import re

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(os.path.dirname(HERE), "fixtures")
HEAD = re.compile(rb"%% (out|in) (\d+) (\d+)\n")
GAP = re.compile(rb"%% gap (out|in) (\d+)\n")


def records(raw):
    pos, out = 0, []
    while pos < len(raw):
        eol = raw.index(b"\n", pos) + 1
        line = raw[pos:eol]
        m, g = HEAD.match(line), GAP.match(line)
        if m:
            n = int(m.group(3))
            out.append(("data", m.group(1) == b"in", raw[eol:eol + n]))
            pos = eol + n + 1
        elif g:
            out.append(("gap", g.group(1) == b"in", int(g.group(2))))
            pos = eol
        else:
            pos = eol
    return out


def ops(recs):
    b = bytearray()
    for kind, inbound, val in recs:
        if kind == "gap":
            b += bytes([2 | inbound]) + min(val, 0xFFFF).to_bytes(2, "little")
            continue
        for i in range(0, max(len(val), 1), 0xFFFF):
            piece = val[i:i + 0xFFFF]
            b += bytes([inbound]) + len(piece).to_bytes(2, "little") + piece
    return bytes(b)


def body_of(stream):
    """The body after the head, de-chunked when chunked."""
    head_end = stream.find(b"\r\n\r\n")
    if head_end < 0:
        return b""
    head, body = stream[:head_end].lower(), stream[head_end + 4:]
    if b"transfer-encoding: chunked" not in head:
        return body
    out, pos = bytearray(), 0
    while True:
        eol = body.find(b"\r\n", pos)
        if eol < 0:
            break
        try:
            n = int(body[pos:eol].split(b";")[0], 16)
        except ValueError:
            break
        if n == 0:
            break
        out += body[eol + 2:eol + 2 + n]
        pos = eol + 2 + n + 2
    return bytes(out)


def after_upgrade(recs):
    """The records after the 101's head (the frames), or None."""
    for n, (kind, inbound, val) in enumerate(recs):
        if kind == "data" and inbound and val.startswith(b"HTTP/1.1 101"):
            end = val.find(b"\r\n\r\n")
            if end < 0:
                return None
            rest = val[end + 4:]
            tail = [("data", True, rest)] if rest else []
            return tail + recs[n + 1:]
    return None


def put(target, data):
    d = os.path.join(HERE, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + hashlib.sha1(data).hexdigest()), "wb") as f:
        f.write(data)


def main():
    for sub in ("http", "llm", "h2", "mcp", "ws"):
        d = os.path.join(FIXTURES, sub)
        if not os.path.isdir(d):
            continue
        for name in sorted(os.listdir(d)):
            if not name.endswith(".cap"):
                continue
            recs = records(open(os.path.join(d, name), "rb").read())
            if sub == "h2":
                put("h2_connection", ops(recs))
            if sub == "ws":
                put("websocket", b"\x80" + ops(recs))
                after = after_upgrade(recs)
                if after is not None:
                    head = b"".join(v for k, i, v in recs[:4] if k == "data" and i)
                    sel = (1 if b"permessage-deflate" in head else 0) \
                        | (2 if b"client_no_context_takeover" in head else 0) \
                        | (4 if b"server_no_context_takeover" in head else 0)
                    put("websocket", bytes([sel]) + ops(after))
            put("connection", ops(recs))
            out = b"".join(v for k, i, v in recs if k == "data" and not i)
            inn = b"".join(v for k, i, v in recs if k == "data" and i)
            resp = body_of(inn)
            if b"text/event-stream" in inn[:2000]:
                put("sse", resp)
            if b"vnd.amazon.eventstream" in inn[:2000]:
                put("eventstream", resp)
            req = body_of(out)
            if req[:1] == b"{":
                path = out.split(b" ", 2)[1] if b" " in out[:200] else b""
                sel = {b"/v1/chat/completions": 0, b"/v1/messages": 1, b"/v1/responses": 2,
                       b"/api/chat": 5, b"/api/generate": 6, b"/v1/embeddings": 7}.get(
                    path.split(b"?")[0], 0)
                ctype = 1 if b"event-stream" in inn[:2000] else 3 if b"amazon.eventstream" in inn[:2000] else 0
                put("llm_exchange", bytes([sel | ctype << 4]) + req + b"\0" + resp)


if __name__ == "__main__":
    main()
