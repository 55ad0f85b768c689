#!/usr/bin/env python3
"""A real tool-using agent loop on the official AWS SDK (boto3 `bedrock-runtime`).

  agent_bedrock.py --base-url https://127.0.0.1:PORT --ca ca.pem \
                   --file /path/to/file --command 'ls -l /tmp' [--stream] [--invoke]

Default: the Converse API (`converse`, or `converse_stream` with --stream).
--invoke: InvokeModel with an Anthropic model's Messages body (`invoke_model`,
or `invoke_model_with_response_stream` with --stream). Credentials come from
$AWS_ACCESS_KEY_ID / $AWS_SECRET_ACCESS_KEY (never from argv); requests are
SigV4-signed by botocore, streams are decoded and CRC-checked by botocore.
Runs the model loop until the final text answer, really executing each tool
call, and prints `FINAL: <text>` on stdout. Exit 0 on a final answer, 1
otherwise.
"""

from __future__ import annotations

import base64
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import boto3  # noqa: E402
from botocore.config import Config  # noqa: E402

from agentlib import (MAX_TURNS, SYSTEM_PROMPT, TOOL_SPECS, log, parse_args,  # noqa: E402
                      prompt_for, run_tool)

CONVERSE_MODEL = "anthropic.claude-3-5-sonnet-20240620-v1:0"


def converse_turn(client, args, messages):
    params = dict(
        modelId=args.model,
        system=[{"text": SYSTEM_PROMPT}],
        messages=messages,
        inferenceConfig={"maxTokens": 1024},
        toolConfig={"tools": [{"toolSpec": {"name": s["name"], "description": s["description"],
                                            "inputSchema": {"json": s["parameters"]}}}
                              for s in TOOL_SPECS]},
    )
    if not args.stream:
        r = client.converse(**params)
        return r["output"]["message"]["content"], r["stopReason"], r["usage"]
    r = client.converse_stream(**params)
    blocks: dict[int, dict] = {}
    stop, usage = None, {}
    for ev in r["stream"]:
        if "contentBlockStart" in ev:
            s = ev["contentBlockStart"]
            tu = s["start"]["toolUse"]
            blocks[s["contentBlockIndex"]] = {"toolUse": {"toolUseId": tu["toolUseId"],
                                                          "name": tu["name"], "input": ""}}
        elif "contentBlockDelta" in ev:
            d = ev["contentBlockDelta"]
            b = blocks.setdefault(d["contentBlockIndex"], {"text": ""})
            if "text" in d["delta"]:
                b["text"] += d["delta"]["text"]
            elif "toolUse" in d["delta"]:
                b["toolUse"]["input"] += d["delta"]["toolUse"]["input"]
        elif "messageStop" in ev:
            stop = ev["messageStop"]["stopReason"]
        elif "metadata" in ev:
            usage = ev["metadata"]["usage"]
    content = []
    for _, b in sorted(blocks.items()):
        if "toolUse" in b:
            b["toolUse"]["input"] = json.loads(b["toolUse"]["input"] or "{}")
        content.append(b)
    return content, stop, usage


def converse_loop(client, args) -> int:
    messages = [{"role": "user",
                 "content": [{"text": prompt_for(args.file, args.command, args.extra_prompt)}]}]
    for turn in range(MAX_TURNS):
        content, stop, usage = converse_turn(client, args, messages)
        log(f"turn {turn}: stop={stop} usage in={usage.get('inputTokens')} "
            f"out={usage.get('outputTokens')}")
        uses = [b["toolUse"] for b in content if "toolUse" in b]
        if not uses:
            print("FINAL: " + "".join(b.get("text", "") for b in content), flush=True)
            return 0
        messages.append({"role": "assistant", "content": content})
        results = []
        for u in uses:
            result, is_error = run_tool(u["name"], dict(u["input"] or {}))
            log(f"tool {u['name']} -> {len(result)} chars")
            results.append({"toolResult": {"toolUseId": u["toolUseId"],
                                           "content": [{"text": result}],
                                           "status": "error" if is_error else "success"}})
        messages.append({"role": "user", "content": results})
    print("FINAL: <no final answer>", flush=True)
    return 1


def invoke_turn(client, args, messages):
    body = json.dumps({
        "anthropic_version": "bedrock-2023-05-31", "max_tokens": 1024,
        "system": SYSTEM_PROMPT, "messages": messages,
        "tools": [{"name": s["name"], "description": s["description"],
                   "input_schema": s["parameters"]} for s in TOOL_SPECS]})
    if not args.stream:
        r = client.invoke_model(modelId=args.model, body=body,
                                contentType="application/json", accept="application/json")
        msg = json.loads(r["body"].read())
        return msg["content"], msg["stop_reason"]
    r = client.invoke_model_with_response_stream(modelId=args.model, body=body,
                                                 contentType="application/json")
    blocks: dict[int, dict] = {}
    stop = None
    for ev in r["body"]:
        e = json.loads(base64.b64decode(ev["chunk"]["bytes"])
                       if isinstance(ev["chunk"]["bytes"], str) else ev["chunk"]["bytes"])
        if e["type"] == "content_block_start":
            blocks[e["index"]] = dict(e["content_block"], _json="")
        elif e["type"] == "content_block_delta":
            b = blocks[e["index"]]
            if e["delta"]["type"] == "text_delta":
                b["text"] += e["delta"]["text"]
            else:
                b["_json"] += e["delta"]["partial_json"]
        elif e["type"] == "message_delta":
            stop = e["delta"]["stop_reason"]
    content = []
    for _, b in sorted(blocks.items()):
        raw = b.pop("_json")
        if b["type"] == "tool_use":
            b["input"] = json.loads(raw or "{}")
        content.append(b)
    return content, stop


def invoke_loop(client, args) -> int:
    messages = [{"role": "user", "content": prompt_for(args.file, args.command, args.extra_prompt)}]
    for turn in range(MAX_TURNS):
        content, stop = invoke_turn(client, args, messages)
        log(f"turn {turn}: stop={stop}")
        uses = [b for b in content if b["type"] == "tool_use"]
        if not uses:
            print("FINAL: " + "".join(b.get("text", "") for b in content), flush=True)
            return 0
        messages.append({"role": "assistant", "content": content})
        results = []
        for u in uses:
            result, is_error = run_tool(u["name"], dict(u["input"] or {}))
            log(f"tool {u['name']} -> {len(result)} chars")
            block = {"type": "tool_result", "tool_use_id": u["id"], "content": result}
            if is_error:
                block["is_error"] = True
            results.append(block)
        messages.append({"role": "user", "content": results})
    print("FINAL: <no final answer>", flush=True)
    return 1


def main() -> int:
    invoke = "--invoke" in sys.argv
    if invoke:
        sys.argv.remove("--invoke")
    args = parse_args(__doc__.split("\n")[1], CONVERSE_MODEL)
    client = boto3.client(
        "bedrock-runtime", region_name="us-east-1", endpoint_url=args.base_url.rstrip("/"),
        verify=args.ca, config=Config(retries={"max_attempts": 1}, read_timeout=60))
    return invoke_loop(client, args) if invoke else converse_loop(client, args)


if __name__ == "__main__":
    sys.exit(main())
