#!/usr/bin/env python3
"""One OpenAI Responses API turn with the official `openai` SDK, plain then
streamed, against the mock (tests/mock/mock_llm.py answers /v1/responses).

    responses_sdk.py --base-url https://127.0.0.1:PORT --file PATH

The mock's first answer asks for the read_file tool; this client prints the
function calls it got, so the test can compare them with the events.
"""

from __future__ import annotations

import argparse
import os
import ssl
import sys

import openai

TOOLS = [
    {"type": "function", "name": "read_file", "description": "Read a file.",
     "parameters": {"type": "object", "properties": {"path": {"type": "string"}},
                    "required": ["path"]}},
]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--file", required=True)
    ap.add_argument("--ca", default=os.environ.get("SSL_CERT_FILE"))
    a = ap.parse_args()
    ctx = ssl.create_default_context(cafile=a.ca)
    client = openai.OpenAI(base_url=a.base_url + "/v1", max_retries=0,
                           http_client=openai.DefaultHttpxClient(verify=ctx))
    prompt = f"Read the file.\nFILE: {a.file}\n"
    r = client.responses.create(model="gpt-5-mini", input=prompt, tools=TOOLS,
                                instructions="You are the aitrail responses test.")
    calls = [o for o in r.output if o.type == "function_call"]
    print("plain", r.id, [(c.name, c.arguments) for c in calls])
    with client.responses.stream(model="gpt-5-mini", input=prompt, tools=TOOLS,
                                 instructions="You are the aitrail responses test.") as s:
        final = s.get_final_response()
    calls = [o for o in final.output if o.type == "function_call"]
    print("stream", final.id, [(c.name, c.arguments) for c in calls])
    return 0


if __name__ == "__main__":
    sys.exit(main())
