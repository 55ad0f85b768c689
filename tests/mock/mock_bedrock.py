"""Amazon Bedrock runtime wire formats for mock_llm.py (stdlib only).

Follows the Bedrock Runtime API reference and botocore's service model
(bedrock-runtime 2023-09-30: Converse, ConverseStream, InvokeModel,
InvokeModelWithResponseStream):

  paths      POST /model/{modelId}/converse | converse-stream | invoke |
             invoke-with-response-stream  (modelId URL-encoded)
  Converse   request: messages[] (role, content[] of text / toolUse {toolUseId,
             name, input} / toolResult {toolUseId, content[] of text|json,
             status}), system[] of {text}, toolConfig.tools[].toolSpec,
             inferenceConfig. Response: output.message, stopReason, usage
             {inputTokens, outputTokens, totalTokens}, metrics {latencyMs}.
  streams    application/vnd.amazon.eventstream: binary messages (prelude with
             total and header lengths and a CRC-32, string headers
             :event-type / :content-type / :message-type, JSON payload, message
             CRC-32). ConverseStream events: messageStart, contentBlockStart,
             contentBlockDelta, contentBlockStop, messageStop, metadata; each
             payload also carries Bedrock's "p" padding field.
             InvokeModelWithResponseStream: `chunk` events whose payload is
             {"bytes": base64 of one vendor stream event}; Anthropic models
             send their Messages stream events, the last (message_stop) with
             amazon-bedrock-invocationMetrics.
  errors     JSON {"message": …} with the x-amzn-ErrorType header.
botocore checks both CRCs of every stream message, so a wrong encoding here
fails the SDK client, not only our decoder.
"""

from __future__ import annotations

import base64
import json
import re
import struct
import urllib.parse
import zlib

BEDROCK_PATH = re.compile(
    r"^/model/([^/]+)/(converse|converse-stream|invoke|invoke-with-response-stream)$")
PAD = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0"


def model_of(m: re.Match) -> str:
    return urllib.parse.unquote(m.group(1))


def event_message(headers: list[tuple[str, str]], payload: bytes) -> bytes:
    """One event-stream message with string headers."""
    h = b""
    for name, value in headers:
        n, v = name.encode(), value.encode()
        h += bytes([len(n)]) + n + b"\x07" + struct.pack(">H", len(v)) + v
    total = 16 + len(h) + len(payload)
    prelude = struct.pack(">II", total, len(h))
    msg = prelude + struct.pack(">I", zlib.crc32(prelude)) + h + payload
    return msg + struct.pack(">I", zlib.crc32(msg))


def event(kind: str, obj: dict) -> bytes:
    body = dict(obj)
    body["p"] = PAD[: 1 + len(kind) % len(PAD)]
    return event_message([(":event-type", kind), (":content-type", "application/json"),
                          (":message-type", "event")], json.dumps(body).encode())


def exception(kind: str, message: str) -> bytes:
    return event_message([(":exception-type", kind), (":content-type", "application/json"),
                          (":message-type", "exception")],
                         json.dumps({"message": message}).encode())


def _text(content) -> str:
    if not isinstance(content, list):
        return ""
    return "\n".join(b["text"] for b in content if isinstance(b, dict)
                     and isinstance(b.get("text"), str))


def converse_context(req: dict) -> tuple[str, int, bool]:
    """(first user prompt, tool results so far, tools declared)."""
    prompt, step = "", 0
    for m in req.get("messages") or []:
        if not isinstance(m, dict) or m.get("role") != "user":
            continue
        content = m.get("content")
        if not prompt:
            prompt = _text(content)
        if isinstance(content, list):
            step += sum(1 for b in content if isinstance(b, dict) and "toolResult" in b)
    tools = ((req.get("toolConfig") or {}).get("tools")) or []
    return prompt, step, bool(tools)


def validate_converse(req: dict) -> str | None:
    msgs = req.get("messages")
    if not isinstance(msgs, list) or not msgs:
        return "messages must not be empty"
    for m in msgs:
        if not isinstance(m, dict) or m.get("role") not in ("user", "assistant") \
                or not isinstance(m.get("content"), list):
            return "each message needs a role (user|assistant) and a content list"
    return None


def _usage(d) -> dict:
    return {"inputTokens": d.input_tokens, "outputTokens": d.output_tokens,
            "totalTokens": d.input_tokens + d.output_tokens}


def converse_reply(d) -> dict:
    if d.tool:
        content = [{"text": d.lead_text},
                   {"toolUse": {"toolUseId": d.call_id, "name": d.tool[0], "input": d.tool[1]}}]
        stop = "tool_use"
    else:
        content = [{"text": d.final_text}]
        stop = "end_turn"
    return {"output": {"message": {"role": "assistant", "content": content}},
            "stopReason": stop, "usage": _usage(d), "metrics": {"latencyMs": 12}}


def converse_stream(d) -> list[bytes]:
    out = [event("messageStart", {"role": "assistant"})]
    text = d.lead_text if d.tool else d.final_text
    for i in range(0, len(text), 5):
        out.append(event("contentBlockDelta", {"contentBlockIndex": 0,
                                               "delta": {"text": text[i:i + 5]}}))
    out.append(event("contentBlockStop", {"contentBlockIndex": 0}))
    if d.tool:
        out.append(event("contentBlockStart", {"contentBlockIndex": 1, "start": {
            "toolUse": {"toolUseId": d.call_id, "name": d.tool[0]}}}))
        for i in range(0, len(d.arguments), 6):
            out.append(event("contentBlockDelta", {"contentBlockIndex": 1, "delta": {
                "toolUse": {"input": d.arguments[i:i + 6]}}}))
        out.append(event("contentBlockStop", {"contentBlockIndex": 1}))
    out.append(event("messageStop", {"stopReason": "tool_use" if d.tool else "end_turn"}))
    out.append(event("metadata", {"usage": _usage(d), "metrics": {"latencyMs": 12}}))
    return out


def invoke_chunks(anthropic_events: list[bytes], d) -> list[bytes]:
    """Anthropic SSE events (event:/data: bytes) as InvokeModelWithResponseStream
    chunks; the last carries Bedrock's invocation metrics."""
    out = []
    for raw in anthropic_events:
        data = next(line[6:] for line in raw.decode().splitlines() if line.startswith("data: "))
        obj = json.loads(data)
        if obj.get("type") == "ping":
            continue  # Bedrock does not forward pings
        if obj.get("type") == "message_stop":
            obj["amazon-bedrock-invocationMetrics"] = {
                "inputTokenCount": d.input_tokens, "outputTokenCount": d.output_tokens,
                "invocationLatency": 12, "firstByteLatency": 5}
        b64 = base64.b64encode(json.dumps(obj).encode()).decode()
        out.append(event_message([(":event-type", "chunk"),
                                  (":content-type", "application/json"),
                                  (":message-type", "event")],
                                 json.dumps({"bytes": b64, "p": PAD[:7]}).encode()))
    return out
