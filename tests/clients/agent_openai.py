#!/usr/bin/env python3
"""A real tool-using agent loop on the official `openai` SDK (chat completions).

  agent_openai.py --base-url https://127.0.0.1:PORT --ca ca.pem \
                  --file /path/to/file --command 'ls -l /tmp' [--stream]

The API key comes from $OPENAI_API_KEY (never from argv). Runs the model loop
until the final text answer, really executing each tool call, and prints
`FINAL: <text>` on stdout. Exit 0 on a final answer, 1 otherwise.
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import openai  # noqa: E402
from openai import OpenAI  # noqa: E402

from agentlib import (MAX_TURNS, SYSTEM_PROMPT, TOOL_SPECS, log, parse_args,  # noqa: E402
                    parse_arguments, prompt_for, run_tool, ssl_context)


def tools() -> list[dict]:
    return [{"type": "function", "function": spec} for spec in TOOL_SPECS]


def call_plain(client: OpenAI, model: str, messages: list) -> tuple[str | None, list, str]:
    r = client.chat.completions.create(model=model, messages=messages, tools=tools())
    choice = r.choices[0]
    calls = [{"id": tc.id, "name": tc.function.name, "arguments": tc.function.arguments}
             for tc in (choice.message.tool_calls or [])]
    log(f"usage prompt={r.usage.prompt_tokens} completion={r.usage.completion_tokens}")
    return choice.message.content, calls, choice.finish_reason


def call_stream(client: OpenAI, model: str, messages: list) -> tuple[str | None, list, str]:
    stream = client.chat.completions.create(model=model, messages=messages, tools=tools(),
                                            stream=True,
                                            stream_options={"include_usage": True})
    text, finish, usage = [], None, None
    calls: dict[int, dict] = {}
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            delta = choice.delta
            if delta.content:
                text.append(delta.content)
            for tc in delta.tool_calls or []:
                slot = calls.setdefault(tc.index, {"id": None, "name": "", "arguments": ""})
                if tc.id:
                    slot["id"] = tc.id
                if tc.function is not None:
                    if tc.function.name:
                        slot["name"] += tc.function.name
                    if tc.function.arguments:
                        slot["arguments"] += tc.function.arguments
            if choice.finish_reason:
                finish = choice.finish_reason
    if usage is None:
        raise RuntimeError("stream ended without a usage chunk")
    log(f"usage prompt={usage.prompt_tokens} completion={usage.completion_tokens}")
    return ("".join(text) or None), [calls[i] for i in sorted(calls)], finish


def main() -> int:
    args = parse_args(__doc__.split("\n")[1], "gpt-4o-mini")
    client = OpenAI(
        base_url=args.base_url.rstrip("/") + "/v1",
        api_key=os.environ.get("OPENAI_API_KEY"),
        http_client=openai.DefaultHttpxClient(verify=ssl_context(args.ca)),
        max_retries=0,
        timeout=60,
    )
    messages: list[dict] = [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": prompt_for(args.file, args.command, args.extra_prompt)},
    ]
    call = call_stream if args.stream else call_plain
    for turn in range(MAX_TURNS):
        text, calls, finish = call(client, args.model, messages)
        log(f"turn {turn}: finish={finish} tool_calls={[c['name'] for c in calls]}")
        if not calls:
            print(f"FINAL: {text}", flush=True)
            return 0
        messages.append({
            "role": "assistant",
            "content": text,
            "tool_calls": [{"id": c["id"], "type": "function",
                            "function": {"name": c["name"], "arguments": c["arguments"]}}
                           for c in calls],
        })
        for c in calls:
            result, _ = run_tool(c["name"], parse_arguments(c["arguments"]))
            log(f"tool {c['name']} -> {len(result)} chars")
            messages.append({"role": "tool", "tool_call_id": c["id"], "content": result})
    print("FINAL: <no final answer>", flush=True)
    return 1


if __name__ == "__main__":
    sys.exit(main())
