#!/usr/bin/env python3
"""Validates OCSF events (NDJSON on a file) against the real OCSF schema.

    validate_ocsf.py VERSION FILE

The schema is OCSF's own export of that version, shipped by the PyPI package
ocsf-json-schema (pinned in tests/clients/requirements.txt), turned into a
JSON Schema (draft 2020-12) per class with the profiles each event names in
metadata.profiles: unknown attributes are refused (additionalProperties is
false), required ones enforced, enums and the OCSF types' patterns checked.
On top: type_uid = class_uid * 100 + activity_id, category_uid is the
class's, metadata.version is VERSION.

Prints one line per invalid event and "validated N events, M invalid";
exits 1 when any is invalid, 2 on a usage or setup error.
"""
import json
import sys

try:
    from jsonschema import Draft202012Validator
    from ocsf_json_schema import OcsfJsonSchemaEmbedded, get_ocsf_schema
except ImportError as e:  # the test says what to install
    print(f"validate_ocsf: {e} (tests/setup-test-deps.sh installs it)", file=sys.stderr)
    sys.exit(2)


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    version, path = sys.argv[1], sys.argv[2]
    raw = get_ocsf_schema(version=version)
    schema = OcsfJsonSchemaEmbedded(raw)
    classes = {c["uid"]: c for c in raw["classes"].values()}
    validators = {}
    count = invalid = 0
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            count += 1
            ev = json.loads(line)
            problems = []
            uid = ev.get("class_uid")
            cls = classes.get(uid)
            if cls is None:
                problems.append(f"unknown class_uid {uid!r}")
            else:
                profiles = tuple(sorted(ev.get("metadata", {}).get("profiles", [])))
                for p in profiles:
                    if p not in cls.get("profiles", []):
                        problems.append(f"profile {p!r} does not apply to {cls['name']}")
                key = (cls["name"], profiles)
                if key not in validators:
                    validators[key] = Draft202012Validator(
                        schema.get_class_schema(cls["name"], list(profiles))
                    )
                for err in sorted(validators[key].iter_errors(ev), key=lambda e: list(e.path)):
                    where = "/".join(str(p) for p in err.absolute_path) or "(top)"
                    problems.append(f"{where}: {err.message[:300]}")
                if ev.get("type_uid") != uid * 100 + ev.get("activity_id", -1):
                    problems.append(f"type_uid {ev.get('type_uid')} != class_uid*100+activity_id")
                if ev.get("category_uid") != cls.get("category_uid"):
                    problems.append(f"category_uid {ev.get('category_uid')} is not {cls.get('category_uid')}")
            if ev.get("metadata", {}).get("version") != version:
                problems.append(f"metadata.version is not {version}")
            if problems:
                invalid += 1
                uid_ = ev.get("metadata", {}).get("uid", f"line {n}")
                for p in problems:
                    print(f"{uid_} (class {uid}): {p}")
    print(f"validated {count} events, {invalid} invalid")
    return 1 if invalid else 0


if __name__ == "__main__":
    sys.exit(main())
