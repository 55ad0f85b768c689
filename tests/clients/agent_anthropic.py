#!/usr/bin/env python3
"""A real tool-using agent loop on the official `anthropic` SDK (Messages API).

  agent_anthropic.py --base-url https://127.0.0.1:PORT --ca ca.pem \
                     --file /path/to/file --command 'ls -l /tmp' [--stream]

The API key comes from $ANTHROPIC_API_KEY (never from argv). --stream uses
`client.messages.stream(...)` and its final accumulated message. Runs the model
loop until the final text answer, really executing each tool call, and prints
`FINAL: <text>` on stdout. Exit 0 on a final answer, 1 otherwise.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import anthropic  # noqa: E402

from agentlib import (MAX_TURNS, SYSTEM_PROMPT, TOOL_SPECS, log, parse_args,  # noqa: E402
                    prompt_for, run_tool, ssl_context)


def tools() -> list[dict]:
    return [{"name": s["name"], "description": s["description"],
             "input_schema": s["parameters"]} for s in TOOL_SPECS]


def main() -> int:
    args = parse_args(__doc__.split("\n")[1], "claude-sonnet-4-6")
    client = anthropic.Anthropic(
        base_url=args.base_url.rstrip("/"),
        api_key=os.environ.get("ANTHROPIC_API_KEY"),
        http_client=anthropic.DefaultHttpxClient(verify=ssl_context(args.ca)),
        max_retries=0,
        timeout=60,
    )
    messages: list[dict] = [
        {"role": "user", "content": prompt_for(args.file, args.command, args.extra_prompt)},
    ]
    for turn in range(MAX_TURNS):
        params = dict(model=args.model, max_tokens=1024, system=SYSTEM_PROMPT,
                      tools=tools(), messages=messages)
        if args.stream:
            with client.messages.stream(**params) as stream:
                for _ in stream.text_stream:
                    pass
                msg = stream.get_final_message()
        else:
            msg = client.messages.create(**params)
        log(f"turn {turn}: stop={msg.stop_reason} usage in={msg.usage.input_tokens} "
            f"out={msg.usage.output_tokens}")
        uses = [b for b in msg.content if b.type == "tool_use"]
        text = "".join(b.text for b in msg.content if b.type == "text")
        if not uses:
            print(f"FINAL: {text}", flush=True)
            return 0
        messages.append({"role": "assistant",
                         "content": [b.model_dump(exclude_none=True) for b in msg.content]})
        results = []
        for u in uses:
            result, is_error = run_tool(u.name, dict(u.input or {}))
            log(f"tool {u.name} -> {len(result)} chars")
            block = {"type": "tool_result", "tool_use_id": u.id, "content": result}
            if is_error:
                block["is_error"] = True
            results.append(block)
        messages.append({"role": "user", "content": results})
    print("FINAL: <no final answer>", flush=True)
    return 1


if __name__ == "__main__":
    sys.exit(main())
