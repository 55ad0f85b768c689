#!/usr/bin/env python3
"""A real tool-using agent loop on the official `ollama` Python client
(native /api/chat, plain HTTP as a local Ollama server speaks it).

  agent_ollama.py --base-url http://127.0.0.1:11434 \
                  --file /path/to/file --command 'ls -l /tmp' [--stream]

Runs the model loop until the final text answer, really executing each tool
call, and prints `FINAL: <text>` on stdout. Exit 0 on a final answer, 1
otherwise. Ollama needs no API key.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ollama  # noqa: E402

from agentlib import (MAX_TURNS, SYSTEM_PROMPT, TOOL_SPECS, log, parse_args,  # noqa: E402
                      prompt_for, run_tool)


def tools() -> list[dict]:
    return [{"type": "function", "function": spec} for spec in TOOL_SPECS]


def call_plain(client: ollama.Client, model: str, messages: list) -> tuple[str, list]:
    r = client.chat(model=model, messages=messages, tools=tools(), stream=False)
    log(f"usage prompt={r.prompt_eval_count} completion={r.eval_count}")
    return r.message.content or "", list(r.message.tool_calls or [])


def call_stream(client: ollama.Client, model: str, messages: list) -> tuple[str, list]:
    text, calls, done = [], [], None
    for part in client.chat(model=model, messages=messages, tools=tools(), stream=True):
        if part.message.content:
            text.append(part.message.content)
        calls.extend(part.message.tool_calls or [])
        if part.done:
            done = part
    if done is None:
        raise RuntimeError("stream ended without its done line")
    log(f"usage prompt={done.prompt_eval_count} completion={done.eval_count}")
    return "".join(text), calls


def main() -> int:
    args = parse_args(__doc__.split("\n")[1], "llama3.2")
    client = ollama.Client(host=args.base_url, timeout=60)
    messages: list = [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": prompt_for(args.file, args.command, args.extra_prompt)},
    ]
    call = call_stream if args.stream else call_plain
    for turn in range(MAX_TURNS):
        text, calls = call(client, args.model, messages)
        log(f"turn {turn}: tool_calls={[c.function.name for c in calls]}")
        if not calls:
            print(f"FINAL: {text}", flush=True)
            return 0
        messages.append({"role": "assistant", "content": text, "tool_calls": calls})
        for c in calls:
            result, _ = run_tool(c.function.name, dict(c.function.arguments))
            log(f"tool {c.function.name} -> {len(result)} chars")
            messages.append({"role": "tool", "content": result, "tool_name": c.function.name})
    print("FINAL: <no final answer>", flush=True)
    return 1


if __name__ == "__main__":
    sys.exit(main())
