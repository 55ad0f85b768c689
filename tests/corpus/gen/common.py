"""Building blocks of the corpus: partial events, processes, well-formed fake values.

Partial events only carry what a case is about; the evaluator deep-merges each
one over a default event of its kind (envelope, ids, times, a default agent
process). Values that must look real to a scanner (keys, cards, IBANs) are
generated here with the right shape and checksums from a seeded PRNG, so every
run of the generator writes the same bytes.
"""

import base64
import hashlib
import json
import random
import string

# --- cases ---------------------------------------------------------------------


def case(cid, expect, note, events, allow=None):
    """One corpus case. `allow`: classes the case may raise without counting
    either way (a genuine overlap, e.g. the e-mail inside a GCP key file)."""
    c = {"id": cid, "expect": sorted(expect), "note": note, "events": events}
    if allow:
        c["allow"] = sorted(allow)
    return c


def numbered(prefix, items):
    """Ids prefix-001, prefix-002, … in list order (stable while lists only grow)."""
    return [(f"{prefix}-{i:03d}", item) for i, item in enumerate(items, 1)]


def at(seconds):
    """An RFC 3339 time `seconds` after the corpus epoch (for cases where timing matters)."""
    whole = int(seconds)
    nanos = int(round((seconds - whole) * 1e9))
    h, rem = divmod(whole, 3600)
    m, s = divmod(rem, 60)
    d, h = divmod(h, 24)
    return f"2025-06-{2 + d:02d}T{9 + h:02d}:{m:02d}:{s:02d}.{nanos:09d}Z"


# --- processes -----------------------------------------------------------------


def proc(pid, exe, args, exec_id=None, ppid=1, parent_exec_id=None, user="dev", uid=1000):
    p = {
        "pid": pid,
        "ppid": ppid,
        "uid": uid,
        "user": user,
        "comm": exe.rsplit("/", 1)[-1][:15],
        "exe": exe,
        "args": args,
        "exec_id": exec_id or f"x{pid}",
    }
    if parent_exec_id:
        p["parent_exec_id"] = parent_exec_id
    return p


# Agents as they appear on real hosts.
PY_AGENT = proc(4100, "/usr/bin/python3.11", ["python3", "agent.py"])
CLAUDE = proc(4200, "/usr/bin/node", ["node", "/usr/local/bin/claude"])
AIDER = proc(4300, "/home/dev/.local/bin/python3", ["python3", "-m", "aider"])
SUPPORT_BOT = proc(4400, "/srv/support/venv/bin/python", ["python", "-m", "supportbot"], user="svc-support", uid=998)
OPS_BOT = proc(4500, "/opt/opsagent/bin/opsagent", ["opsagent", "--config", "/etc/opsagent.toml"], user="opsagent", uid=997)
AGENTS = [PY_AGENT, CLAUDE, AIDER, SUPPORT_BOT, OPS_BOT]


def child(parent, pid, exe, args):
    """A process the agent started (a tool run through a shell, say)."""
    return proc(pid, exe, args, ppid=parent["pid"], parent_exec_id=parent["exec_id"],
                user=parent["user"], uid=parent["uid"])


# --- messages and events -------------------------------------------------------


def system(text):
    return {"role": "system", "content": text}


def user(text):
    return {"role": "user", "content": text}


def assistant(text, tool_calls=None):
    m = {"role": "assistant", "content": text}
    if tool_calls:
        m["tool_calls"] = tool_calls
    return m


def tool_msg(text, call_id="call_1"):
    return {"role": "tool", "content": text, "tool_call_id": call_id}


def tcall(name, args, call_id="call_1"):
    """A tool call as the model writes it: arguments are a JSON text."""
    return {"id": call_id, "name": name, "arguments": json.dumps(args)}


PROVIDERS = {
    "openai": ("api.openai.com", "/v1/chat/completions", "chat", "gpt-4o"),
    "anthropic": ("api.anthropic.com", "/v1/messages", "messages", "claude-sonnet-4-20250514"),
}


def llm(messages, out="", provider="openai", model=None, sys_prompt=None, tool_calls=None,
        usage=(900, 120), finish=None, refusal=None, api_user=None, process=None, time=None,
        tools=None):
    """An llm.call. `messages` is the request's whole history; for openai the
    system prompt is also its first message, as the wire format has it."""
    host, path, op, default_model = PROVIDERS[provider]
    msgs = list(messages)
    call = {
        "provider": provider,
        "operation": op,
        "server": {"host": host, "port": 443},
        "path": path,
        "model": model or default_model,
        "status": 200,
        "messages": msgs,
        "tools": tools if tools is not None else sorted({t["name"] for t in tool_calls or []}),
        "output": {"text": out, "tool_calls": tool_calls or []},
        "usage": {"input_tokens": usage[0], "output_tokens": usage[1]},
    }
    if sys_prompt is not None:
        call["system"] = {"text": sys_prompt, "sha256": hashlib.sha256(sys_prompt.encode()).hexdigest()}
        if provider == "openai":
            call["messages"] = [system(sys_prompt)] + msgs
    if finish is None:
        finish = ("tool_calls" if provider == "openai" else "tool_use") if tool_calls else (
            "stop" if provider == "openai" else "end_turn")
    call["output"]["finish_reason"] = finish
    if refusal is not None:
        call["output"]["refusal"] = refusal
    if api_user is not None:
        call["api_user"] = api_user
    return event("llm.call", "llm", call, process or PY_AGENT, time)


def tool(name, args, result=None, call_id="call_1", process=None, time=None, effects=None):
    t = {"call_id": call_id, "name": name, "arguments": json.dumps(args), "effects": effects or [],
         "confidence": 0.9 if effects else 0.0}
    if result is not None:
        t["result"] = result
    return event("tool.call", "tool", t, process or PY_AGENT, time)


def execve(argv, process, filename=None, time=None):
    """A process.exec: `process` is the new process (its args are argv)."""
    p = dict(process, args=argv)
    return event("process.exec", "exec", {"filename": filename or p["exe"], "args": argv}, p, time)


FAIL = {-2: "ENOENT", -13: "EACCES", -1: "EPERM"}


def fopen(path, process=None, flags=("O_RDONLY", "O_CLOEXEC"), result=3, time=None, eid=None):
    f = {"path": path, "flags": list(flags), "result": result}
    if result < 0:
        f["error"] = FAIL[result]
    return event("file.open", "file", f, process or PY_AGENT, time, eid)


def connect(address, port=443, process=None, family=None, result=0, time=None, eid=None):
    fam = family or ("ipv6" if ":" in address else "unix" if address.startswith("/") else "ipv4")
    n = {"family": fam, "address": address, "port": port, "result": result}
    if result < 0:
        n["error"] = {-111: "ECONNREFUSED", -101: "ENETUNREACH"}[result]
    return event("net.connect", "net", n, process or PY_AGENT, time, eid)


def event(kind, member, body, process, time=None, eid=None):
    e = {"kind": kind, "process": process, member: body}
    if time is not None:
        e["time"] = time
    if eid is not None:
        e["id"] = eid
    return e


def bash_llm(prompt, command, process=None, provider="openai", sys_prompt=None):
    """The model asking for a shell command (the call that precedes a tool.call)."""
    return llm([user(prompt)], "", provider=provider, sys_prompt=sys_prompt,
               tool_calls=[tcall("bash", {"command": command})], process=process)


# --- fake values with real shapes ----------------------------------------------

ALNUM = string.ascii_letters + string.digits
URLSAFE = ALNUM + "-_"
B64 = ALNUM + "+/"


def rng(tag):
    """A PRNG per purpose: adding values of one kind never shifts another kind's."""
    return random.Random(hashlib.sha256(tag.encode()).hexdigest())


def rand(r, alphabet, n):
    return "".join(r.choice(alphabet) for _ in range(n))


def openai_key(r):
    return "sk-proj-" + rand(r, URLSAFE, 74) + "T3BlbkFJ" + rand(r, URLSAFE, 74)


def openai_legacy_key(r):
    return "sk-" + rand(r, ALNUM, 20) + "T3BlbkFJ" + rand(r, ALNUM, 20)


def anthropic_key(r):
    return "sk-ant-api03-" + rand(r, URLSAFE, 93) + "AA"


def google_key(r):
    return "AIza" + rand(r, URLSAFE, 35)


def github_token(r):
    return "ghp_" + rand(r, ALNUM, 36)


def github_pat(r):
    return "github_pat_11" + rand(r, string.ascii_uppercase + string.digits, 20) + "_" + rand(r, ALNUM, 59)


def slack_token(r):
    return f"xoxb-{r.randrange(10**11, 10**12)}-{r.randrange(10**12, 10**13)}-" + rand(r, ALNUM, 24)


def stripe_key(r):
    return "sk_live_51" + rand(r, ALNUM, 97)


def aws_key_id(r):
    return "AKIA" + rand(r, string.ascii_uppercase + "234567", 16)


def aws_secret(r):
    return rand(r, B64, 40)


def azure_account_key(r):
    return base64.b64encode(bytes(r.randrange(256) for _ in range(64))).decode()


def pem(r, label="RSA PRIVATE KEY", lines=12):
    body = base64.b64encode(bytes(r.randrange(256) for _ in range(48 * lines))).decode()
    rows = [body[i:i + 64] for i in range(0, len(body), 64)]
    return f"-----BEGIN {label}-----\n" + "\n".join(rows) + f"\n-----END {label}-----\n"


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt(r, claims):
    head = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    body = b64url(json.dumps(claims, separators=(",", ":")).encode())
    sig = b64url(bytes(r.randrange(256) for _ in range(32)))
    return f"{head}.{body}.{sig}"


def gcp_service_account(r, project):
    return json.dumps({
        "type": "service_account",
        "project_id": project,
        "private_key_id": rand(r, "0123456789abcdef", 40),
        "private_key": pem(r, "PRIVATE KEY", 16),
        "client_email": f"deployer@{project}.iam.gserviceaccount.com",
        "client_id": str(r.randrange(10**20, 10**21)),
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": "https://oauth2.googleapis.com/token",
    }, indent=2)


def luhn_complete(prefix, length, r):
    """A card number with `prefix`, random middle digits and a valid Luhn check digit."""
    digits = prefix + "".join(str(r.randrange(10)) for _ in range(length - len(prefix) - 1))
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return digits + str((10 - total % 10) % 10)


def luhn_ok(number):
    digits = [int(c) for c in number if c.isdigit()]
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def group(number, sizes, sep=" "):
    out, i = [], 0
    for s in sizes:
        out.append(number[i:i + s])
        i += s
    return sep.join(out)


def iban(country, bban):
    """An IBAN with correct mod-97 check digits."""
    moved = bban + country + "00"
    num = "".join(str(int(c, 36)) for c in moved)
    check = 98 - int(num) % 97
    return f"{country}{check:02d}{bban}"


def iban_ok(value):
    v = value.replace(" ", "")
    moved = v[4:] + v[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


def spaced4(value):
    return " ".join(value[i:i + 4] for i in range(0, len(value), 4))
