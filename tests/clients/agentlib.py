"""Shared bits of the python test agents: the prompt, the tools, running them.

The tools are REAL: read_file opens the file with open(), run_command runs the
command through /bin/sh with subprocess and returns its output. That is what
aitrail must see in the kernel (file.open, process.exec) and link to the tool
calls it saw in the TLS plaintext.
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import subprocess
import sys

SYSTEM_PROMPT = "You are the aitrail test agent. Use the tools you are given."
MAX_TURNS = 8

TOOL_SPECS = [
    {
        "name": "read_file",
        "description": "Read a text file and return its content.",
        "parameters": {
            "type": "object",
            "properties": {"path": {"type": "string", "description": "absolute path"}},
            "required": ["path"],
        },
    },
    {
        "name": "run_command",
        "description": "Run a shell command and return its output.",
        "parameters": {
            "type": "object",
            "properties": {"command": {"type": "string"}},
            "required": ["command"],
        },
    },
]


def prompt_for(path: str, command: str, extra: str = "") -> str:
    return ("Read the file, then run the command, then say done.\n"
            f"FILE: {path}\n"
            f"CMD: {command}\n"
            + (f"{extra}\n" if extra else ""))


def parse_args(description: str, default_model: str) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--base-url", required=True,
                    help="server root, e.g. https://127.0.0.1:PORT (no /v1)")
    ap.add_argument("--ca", default=os.environ.get("SSL_CERT_FILE"),
                    help="CA bundle to trust (default: $SSL_CERT_FILE)")
    ap.add_argument("--file", required=True, help="path for the read_file tool")
    ap.add_argument("--command", required=True, help="command for the run_command tool")
    ap.add_argument("--model", default=default_model)
    ap.add_argument("--stream", action="store_true", help="use streamed responses")
    ap.add_argument("--extra-prompt", default="",
                    help="text appended to the user prompt (detection tests)")
    return ap.parse_args()


def ssl_context(ca: str | None) -> ssl.SSLContext:
    if ca:
        return ssl.create_default_context(cafile=ca)
    return ssl.create_default_context()


def log(msg: str) -> None:
    sys.stderr.write(f"[agent] {msg}\n")
    sys.stderr.flush()


def run_tool(name: str, args: dict) -> tuple[str, bool]:
    """Really execute a tool. Returns (result text, is_error)."""
    try:
        if name == "read_file":
            with open(args["path"], encoding="utf-8", errors="replace") as f:
                return f.read(), False
        if name == "run_command":
            p = subprocess.run(args["command"], shell=True, capture_output=True,
                               text=True, timeout=60)
            out = p.stdout + (("\n[stderr]\n" + p.stderr) if p.stderr else "")
            return f"exit_code={p.returncode}\n{out}", p.returncode != 0
        return f"unknown tool {name}", True
    except Exception as e:  # a tool failure is a result for the model, not a crash
        return f"error: {e.__class__.__name__}: {e}", True


def parse_arguments(text: str) -> dict:
    try:
        v = json.loads(text or "{}")
        return v if isinstance(v, dict) else {}
    except ValueError:
        return {}
