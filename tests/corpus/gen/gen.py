#!/usr/bin/env python3
"""Writes tests/corpus/*.jsonl, the labelled detection corpus.

    python3 tests/corpus/gen/gen.py          # rewrite the .jsonl files
    python3 tests/corpus/gen/gen.py --check  # fail if they are not up to date

Deterministic: the same script writes the same bytes (values come from seeded
PRNGs, order from the lists). Edit the lists in the modules next to this file,
run it, and commit the script and the .jsonl together. Ids are `<prefix>-NNN`
in list order, so append new variants at the end of a list to keep old ids.
"""

import json
import pathlib
import sys

# No __pycache__ next to the corpus.
sys.dont_write_bytecode = True

import behaviour  # noqa: E402  (after the flag above)
import benign_chat
import benign_misc
import benign_more
import benign_ops
import data
import heldout
import inject
import system

OUT = pathlib.Path(__file__).resolve().parent.parent

GROUPS = {
    "prompt_injection": inject.cases,
    "secret": data.secrets,
    "pii": data.pii,
    "sensitive_file": system.sensitive_files,
    "dangerous_command": system.dangerous_commands,
    "destructive_sql": system.destructive_sql,
    "exfiltration": system.exfiltration,
    "denial_of_wallet": behaviour.denial_of_wallet,
    "refusal_probing": behaviour.refusal_probing,
    "system_prompt_change": behaviour.system_prompt_change,
    "benign_chat": benign_chat.cases,
    "benign_ops": benign_ops.cases,
    "benign_misc": benign_misc.cases,
    "benign_more": benign_more.cases,
    # Scored on its own (`detect-eval --corpus tests/corpus/heldout.jsonl`);
    # loading the directory leaves it out.
    "heldout": heldout.cases,
}


def render(cases):
    # ensure_ascii: zero-width and look-alike characters show as \uXXXX in a
    # diff instead of hiding in it.
    return "".join(json.dumps(c, ensure_ascii=True, separators=(",", ":")) + "\n" for c in cases)


def main():
    check = "--check" in sys.argv[1:]
    seen, counts, stale = set(), {}, []
    for name, build in GROUPS.items():
        cases = build()
        for c in cases:
            assert c["id"] not in seen, f"duplicate id {c['id']}"
            seen.add(c["id"])
            for cls in c["expect"] or ["benign"]:
                key = f"{name}:{cls}" if name == "heldout" else cls
                counts[key] = counts.get(key, 0) + 1
        path = OUT / f"{name}.jsonl"
        text = render(cases)
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(path.name)
        else:
            path.write_text(text)
    for cls, n in sorted(counts.items()):
        print(f"{cls:22} {n}")
    held = sum(n for k, n in counts.items() if k.startswith("heldout:") and k != "heldout:benign")
    print(f"{'total cases':22} {len(seen)} (heldout.jsonl: {held} class labels, "
          f"{counts.get('heldout:benign', 0)} benign)")
    if stale:
        sys.exit(f"out of date: {', '.join(stale)} (run tests/corpus/gen/gen.py)")


if __name__ == "__main__":
    main()
