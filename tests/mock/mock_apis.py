"""OpenAI Responses API and Gemini wire formats for mock_llm.py (stdlib only).

mock_llm.py decides what the model "answers" (its Decision: a tool call or the
final text, with deterministic ids and usage); this module reads those APIs'
requests and writes their answers, following the official SDKs' types:

  Responses  openai-python types/responses: ResponseCreateParams (input items:
             messages, function_call, function_call_output), Response,
             ResponseOutputMessage / ResponseOutputText, ResponseFunctionToolCall,
             ResponseUsage, and the Response*Event stream types (event: + data:
             lines, each with type and sequence_number, ending with
             response.completed).
  Gemini     google-genai types: GenerateContentParameters (contents, parts with
             text / functionCall / functionResponse, tools.functionDeclarations),
             GenerateContentResponse (candidates, finishReason, usageMetadata,
             modelVersion, responseId). streamGenerateContent?alt=sse sends one
             response per `data:` event (CRLF CRLF), the last with finishReason
             and usage; without alt=sse it sends the same chunks as one JSON list.
"""

from __future__ import annotations

import json
import re
import threading

GEMINI_PATH = re.compile(r"^/v1(?:beta|alpha)?/models/([^/:]+):(generateContent|streamGenerateContent)$")
MAX_STORED = 10_000  # responses remembered for previous_response_id


def _chunks(s: str, n: int) -> list[str]:
    return [s[i:i + n] for i in range(0, len(s), n)] or [""]


def _text(content) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(p.get("text", "") for p in content
                         if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


# ---------------------------------------------------------------- Responses

class ResponseStore:
    """What each answered response was about, so that a follow-up naming it in
    previous_response_id continues the same script (bounded, oldest first)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.items: dict[str, tuple[str, int]] = {}

    def put(self, rid: str, prompt: str, step: int) -> None:
        with self.lock:
            self.items[rid] = (prompt, step)
            while len(self.items) > MAX_STORED:
                self.items.pop(next(iter(self.items)))

    def get(self, rid) -> tuple[str, int] | None:
        with self.lock:
            return self.items.get(rid)


def responses_context(req: dict, store: ResponseStore) -> tuple[str, int, bool]:
    """(prompt, step, tools declared) of a Responses API request. The step
    counts function_call_output items, plus the step of the response a
    follow-up continues (whose input holds only the new outputs)."""
    items = req.get("input")
    if isinstance(items, str):
        items = [{"role": "user", "content": items}]
    if not isinstance(items, list):
        items = []
    prompt, step = "", 0
    prev = store.get(req.get("previous_response_id"))
    if prev:
        prompt, step = prev
    for it in items:
        if not isinstance(it, dict):
            continue
        if it.get("type") == "function_call_output":
            step += 1
        if not prompt and it.get("type", "message") == "message" and it.get("role") == "user":
            prompt = _text(it.get("content"))
    return prompt, step, bool(req.get("tools"))


def _usage(d) -> dict:
    return {"input_tokens": d.input_tokens, "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": d.output_tokens, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": d.input_tokens + d.output_tokens}


def _items(d) -> list[dict]:
    if d.tool:
        return [{"id": "fc_" + d.msg_id, "type": "function_call", "status": "completed",
                 "arguments": d.arguments, "call_id": d.call_id, "name": d.tool[0]}]
    return [{"id": "msg_" + d.msg_id, "type": "message", "status": "completed", "role": "assistant",
             "content": [{"type": "output_text", "annotations": [], "logprobs": [], "text": d.final_text}]}]


def response_object(req: dict, d, status: str, output: list, usage) -> dict:
    tools = req.get("tools") if isinstance(req.get("tools"), list) else []
    return {
        "id": "resp_" + d.msg_id, "object": "response", "created_at": 1764000000, "status": status,
        "background": False, "error": None, "incomplete_details": None,
        "instructions": req.get("instructions"), "max_output_tokens": req.get("max_output_tokens"),
        "model": req.get("model"), "output": output, "parallel_tool_calls": True,
        "previous_response_id": req.get("previous_response_id"), "reasoning": {"effort": None, "summary": None},
        "store": req.get("store", True), "temperature": 1.0, "text": {"format": {"type": "text"}},
        "tool_choice": "auto", "tools": tools, "top_p": 1.0, "truncation": "disabled",
        "usage": usage, "user": req.get("user"), "metadata": {},
    }


def responses_reply(req: dict, d) -> dict:
    return response_object(req, d, "completed", _items(d), _usage(d))


def responses_stream_events(req: dict, d) -> list[bytes]:
    seq = iter(range(1 << 30))

    def ev(kind: str, **fields) -> bytes:
        data = {"type": kind, "sequence_number": next(seq), **fields}
        return f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode()

    started = response_object(req, d, "in_progress", [], None)
    out = [ev("response.created", response=started), ev("response.in_progress", response=started)]
    item = _items(d)[0]
    if d.tool:
        out.append(ev("response.output_item.added", output_index=0,
                      item=dict(item, status="in_progress", arguments="")))
        for frag in _chunks(d.arguments, 7):
            out.append(ev("response.function_call_arguments.delta", item_id=item["id"], output_index=0,
                          delta=frag))
        out.append(ev("response.function_call_arguments.done", item_id=item["id"], output_index=0,
                      arguments=d.arguments))
    else:
        out.append(ev("response.output_item.added", output_index=0,
                      item=dict(item, status="in_progress", content=[])))
        part = {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}
        out.append(ev("response.content_part.added", item_id=item["id"], output_index=0, content_index=0,
                      part=part))
        for frag in _chunks(d.final_text, 4):
            out.append(ev("response.output_text.delta", item_id=item["id"], output_index=0, content_index=0,
                          delta=frag, logprobs=[]))
        out.append(ev("response.output_text.done", item_id=item["id"], output_index=0, content_index=0,
                      text=d.final_text, logprobs=[]))
        out.append(ev("response.content_part.done", item_id=item["id"], output_index=0, content_index=0,
                      part=dict(part, text=d.final_text)))
    out.append(ev("response.output_item.done", output_index=0, item=item))
    out.append(ev("response.completed", response=responses_reply(req, d)))
    return out


# ------------------------------------------------------------------ Gemini

def gemini_context(req: dict) -> tuple[str, int, bool, str]:
    """(prompt, step, tools declared, command tool): the first user text, the
    number of functionResponse parts in the history, any functionDeclarations,
    and the tool a CMD: line asks for: run_command, or Gemini CLI's shell tool
    run_shell_command when the request declares that one and not run_command."""
    prompt, step = "", 0
    for c in req.get("contents") or []:
        if not isinstance(c, dict):
            continue
        parts = [p for p in c.get("parts") or [] if isinstance(p, dict)]
        step += sum(1 for p in parts if "functionResponse" in p or "function_response" in p)
        if not prompt and c.get("role", "user") == "user":
            prompt = "\n".join(p["text"] for p in parts if isinstance(p.get("text"), str))
    names = set()
    for t in req.get("tools") or []:
        if not isinstance(t, dict):
            continue
        decls = t.get("functionDeclarations") or t.get("function_declarations") or []
        names.update(d.get("name") for d in decls if isinstance(d, dict))
    command = "run_shell_command" if "run_shell_command" in names and "run_command" not in names \
        else "run_command"
    return prompt, step, bool(names), command


def _candidate(parts: list, finish: str | None) -> dict:
    c = {"content": {"role": "model", "parts": parts}, "index": 0}
    if finish:
        c["finishReason"] = finish
    return c


def _usage_md(d, final: bool) -> dict:
    if not final:
        return {"promptTokenCount": d.input_tokens, "totalTokenCount": d.input_tokens}
    return {"promptTokenCount": d.input_tokens, "candidatesTokenCount": d.output_tokens,
            "totalTokenCount": d.input_tokens + d.output_tokens,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": d.input_tokens}]}


def gemini_chunks(model: str, d, stream: bool) -> list[dict]:
    """The answer as GenerateContentResponse chunks (one when not streamed).
    Gemini function calls carry no id; the call arrives whole in one part."""
    base = {"modelVersion": model, "responseId": d.msg_id[:22]}
    if d.tool:
        parts = [{"functionCall": {"name": d.tool[0], "args": d.tool[1]}}]
        return [dict(base, candidates=[_candidate(parts, "STOP")], usageMetadata=_usage_md(d, True))]
    frags = _chunks(d.final_text, 6) if stream else [d.final_text]
    out = []
    for i, frag in enumerate(frags):
        last = i + 1 == len(frags)
        out.append(dict(base, candidates=[_candidate([{"text": frag}], "STOP" if last else None)],
                        usageMetadata=_usage_md(d, last)))
    return out


def gemini_sse_events(chunks: list[dict]) -> list[bytes]:
    return [b"data: " + json.dumps(c).encode() + b"\r\n\r\n" for c in chunks]


def gemini_error(status: int, msg: str) -> dict:
    """google.rpc.Status, as the Gemini API answers errors."""
    code = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
            404: "NOT_FOUND", 413: "INVALID_ARGUMENT", 429: "RESOURCE_EXHAUSTED"}.get(status, "INTERNAL")
    return {"error": {"code": status, "message": msg, "status": code}}
