#!/usr/bin/env python3
"""A stand-in for the aitrail daemon, to test the e2e HARNESS only.

It captures nothing. It speaks the daemon's test interface
(`agent --pid P --sink file:PATH`, READY=1 on $NOTIFY_SOCKET, exit 0 on
SIGTERM) and, at SIGTERM, fabricates the events a correct daemon would write,
from the mock server's record (<run dir>/mock/requests.jsonl). Running the e2e
tests against it checks that the harness and its assertions accept a correct
event stream:

  AITRAIL_E2E_DAEMON_BIN=tests/mock/fake_daemon.py \
      cargo test -p aitrail --test e2e -- --include-ignored --test-threads=1

Set FAKE_DAEMON_BREAK=<what> to make it wrong on purpose and see the
harness's failure messages (what: trace, effects, usage, secret, exit).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import sys
import time
import uuid

BREAK = os.environ.get("FAKE_DAEMON_BREAK", "")


def hexid(*parts, n=16):
    return hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()[:n]


def now():
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int((t % 1) * 1e9):09d}Z"


def text_of(c):
    if c is None:
        return ""
    if isinstance(c, str):
        return c
    out = []
    for p in c:
        if isinstance(p, dict):
            if isinstance(p.get("text"), str):
                out.append(p["text"])
            elif "content" in p:
                out.append(text_of(p["content"]))
    return "\n".join(out)


def flatten(provider, body):
    """Request history -> (system, messages) as in agent/src/event.rs."""
    msgs, system = [], None
    if provider == "anthropic":
        if body.get("system"):
            system = text_of(body["system"])
        for m in body.get("messages", []):
            c = m.get("content")
            if isinstance(c, list):
                texts, calls = [], []
                for b in c:
                    if b.get("type") == "tool_result":
                        msgs.append({"role": "tool", "content": text_of(b.get("content")),
                                     "tool_call_id": b.get("tool_use_id")})
                    elif b.get("type") == "tool_use":
                        calls.append({"id": b["id"], "name": b["name"],
                                      "arguments": json.dumps(b.get("input", {}))})
                    elif b.get("type") == "text":
                        texts.append(b.get("text", ""))
                if texts or calls:
                    msg = {"role": m["role"], "content": "\n".join(texts)}
                    if calls:
                        msg["tool_calls"] = calls
                    msgs.append(msg)
            else:
                msgs.append({"role": m["role"], "content": text_of(c)})
        tools = [t["name"] for t in body.get("tools", [])]
    else:
        for m in body.get("messages", []):
            msg = {"role": m["role"], "content": text_of(m.get("content"))}
            if m.get("tool_call_id"):
                msg["tool_call_id"] = m["tool_call_id"]
            if m.get("tool_calls"):
                msg["tool_calls"] = [{"id": t["id"], "name": t["function"]["name"],
                                      "arguments": t["function"]["arguments"]}
                                     for t in m["tool_calls"]]
            msgs.append(msg)
        tools = [t["function"]["name"] for t in body.get("tools", [])]
    return system, msgs, tools


def main():
    args = sys.argv[1:]
    assert args and args[0] == "agent", args
    pid = int(args[args.index("--pid") + 1])
    sink = args[args.index("--sink") + 1]
    assert sink.startswith("file:")
    path = sink[5:]
    run_dir = os.path.dirname(os.path.dirname(path))
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    sys.stderr.write(f"fake daemon: pid scope {pid}, sink {path}\n")
    ns = os.environ.get("NOTIFY_SOCKET")
    if ns:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        s.sendto(b"STATUS=attached\nREADY=1", ns)
    while not stop:
        time.sleep(0.05)

    recs = []
    rp = os.path.join(run_dir, "mock", "requests.jsonl")
    if os.path.exists(rp):
        recs = [json.loads(line) for line in open(rp) if line.strip()]
    llm = [r for r in recs if r.get("status") == 200 and r.get("provider")]
    host = {"name": socket.gethostname(), "id": "fake"}
    proc = {"pid": pid, "ppid": os.getpid(), "uid": 0, "comm": "client", "exe": "/x",
            "args": [], "exec_id": hexid("exec", pid)}
    trace = hexid("trace", pid, n=32)
    events = []

    def ev(kind, span, parent=None, **member):
        e = {"v": 1, "id": str(uuid.uuid4()), "time": now(), "kind": kind, "host": host,
             "trace_id": trace, "span_id": span, "severity": "info", "process": proc}
        if parent:
            e["parent_span_id"] = parent
        e.update(member)
        events.append(e)
        return e

    port = 0
    for i, r in enumerate(llm):
        body = r["body"]
        system, msgs, tools = flatten(r["provider"], body)
        span = hexid("llm", i)
        tool_calls = []
        if r["tool"]:
            tool_calls = [{"id": r["call_id"], "name": r["tool"], "arguments": r["arguments"]}]
        anth = r["provider"] == "anthropic"
        if r["tool"]:
            text = f"I will use the {r['tool']} tool." if anth else ""
            finish = "tool_use" if anth else "tool_calls"
        else:
            text = f"done: {r['step']} tools used"
            finish = "end_turn" if anth else "stop"
        usage = {"input_tokens": r["usage"][0], "output_tokens": r["usage"][1]}
        if BREAK == "usage":
            usage["output_tokens"] += 1
        hdr_host = r["headers"].get("host", "127.0.0.1:0")
        port = int(hdr_host.rsplit(":", 1)[1]) if ":" in hdr_host else 443
        key = "sk-…cdef#0badc0de"
        llmm = {"provider": r["provider"], "operation": "messages" if anth else "chat",
                "role": "client", "server": {"host": "127.0.0.1", "port": port},
                "path": r["path"], "model": r["model"], "stream": r["stream"], "status": 200,
                "messages": msgs, "tools": tools, "api_key_id": key,
                "output": {"text": text, "finish_reason": finish, "tool_calls": tool_calls},
                "usage": usage, "truncated": False}
        if system:
            llmm["system"] = {"text": system, "sha256": hashlib.sha256(system.encode()).hexdigest()}
        e = ev("llm.call", span, **{"llm": llmm})
        if BREAK == "trace" and i == 1:
            e["trace_id"] = hexid("other", n=32)
        if r["tool"]:
            tspan = hexid("tool", i)
            args = json.loads(r["arguments"])
            result = None
            if i + 1 < len(llm):
                _, nmsgs, _ = flatten(llm[i + 1]["provider"], llm[i + 1]["body"])
                for m in nmsgs:
                    if m.get("tool_call_id") == r["call_id"]:
                        result = m["content"]
            effects = []
            if result is not None:  # the agent really ran it
                if r["tool"] == "read_file":
                    fx = ev("file.open", hexid("fx", i), tspan,
                            file={"path": args["path"], "flags": ["O_RDONLY", "O_CLOEXEC"],
                                  "result": 3})
                else:
                    argv = args["command"].split()
                    fx = ev("process.exec", hexid("fx", i), tspan,
                            exec={"filename": "/usr/bin/" + argv[0], "args": argv})
                if BREAK != "effects":
                    effects.append(fx["id"])
            ev("tool.call", tspan, span,
               tool={"call_id": r["call_id"], "name": r["tool"], "arguments": r["arguments"],
                     "result": result, "effects": effects, "confidence": 0.9})
    counters = {"http_parse_errors": 2} if any(r.get("status", 200) >= 400 for r in recs) else {}
    ev("agent.health", hexid("health"), health={
        "uptime_s": 1, "events_emitted": len(events) + 1, "records_received": 0,
        "dropped": {}, "counters": counters, "bytes_shipped": 0, "spool_depth": 0})
    with open(path, "w") as f:
        for e in events:
            f.write(json.dumps(e, ensure_ascii=False) + "\n")
    if BREAK == "secret":
        sys.stderr.write("fake daemon: leaked Bearer sk-test-AITRAIL-SECRET-0123456789abcdef\n")
    return 3 if BREAK == "exit" else 0


if __name__ == "__main__":
    sys.exit(main())
