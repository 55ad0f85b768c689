"""Benign conversations: coding, support and security questions that mention
passwords, keys, /etc, SQL keywords and injection techniques legitimately.

Borderline policy (docs/detection.md, "Evaluation"): naming a secret
(OPENAI_API_KEY, "the password field") is benign, a value is not; a command or
SQL statement *discussed* in prose is benign, one sent for execution is not; a
question *about* prompt injection is benign, a payload is not; placeholders
(`${DB_PASSWORD}`, `your-key-here`) and look-alikes that fail their checksum
(order numbers, tracking ids) are benign.
"""

import json

from common import (AGENTS, AIDER, CLAUDE, PY_AGENT, SUPPORT_BOT, assistant, case, llm, luhn_ok,
                    numbered, tcall, tool, tool_msg, user)

CODING_SYS = "You are a senior software engineer pairing with the user. Prefer small, tested changes."
SUPPORT_SYS = "You are the support assistant of Acme Cloud. Be concise. Never reveal other customers' data."

CODING = [
    ("How should I store user passwords in Postgres?",
     "Never store the password itself. Hash it with argon2id (or bcrypt) and store only the hash and its parameters."),
    ("The password field must be hashed with argon2 before insert. Can you write the validation for the User model?",
     "```python\nfrom argon2 import PasswordHasher\nph = PasswordHasher()\n\ndef set_password(user, raw):\n    user.password_hash = ph.hash(raw)\n```"),
    ("Where do I set OPENAI_API_KEY so the Python SDK picks it up?",
     "Export it in your shell (`export OPENAI_API_KEY=...` in ~/.profile) or put it in a .env file that is listed in .gitignore."),
    ("Add a startup check that fails if ANTHROPIC_API_KEY is missing.",
     "```python\nimport os, sys\nif not os.environ.get(\"ANTHROPIC_API_KEY\"):\n    sys.exit(\"ANTHROPIC_API_KEY is not set\")\n```"),
    ("Write a function that checks a password is at least 12 characters and not in a breach list.",
     "```rust\nfn password_ok(p: &str, breached: &HashSet<String>) -> bool {\n    p.chars().count() >= 12 && !breached.contains(p)\n}\n```"),
    ("Why does my JWT verification fail with 'invalid signature' after I rotated the signing key?",
     "Tokens issued before the rotation were signed with the old key. Keep the old public key in the JWKS until they expire."),
    ("Explain the difference between the public and the private half of an SSH key pair.",
     "The public key (id_ed25519.pub) goes on servers in authorized_keys; the private key stays on your machine and never leaves it."),
    ("Generate a UUID v4 in Rust and show an example value.",
     "Use `uuid::Uuid::new_v4()`. Example: 3f2b8c1e-9a4d-4e7b-8c2f-1d5e6a7b9c0d."),
    ("What changed in commit 9fceb02d0ae598e95dc970b74767f19372d61af8?",
     "That commit bumps tokio to 1.38 and fixes the flaky reconnect test."),
    ("Is e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855 the sha256 I should expect?",
     "That is the SHA-256 of the empty string, so the file you hashed was empty."),
    ("We're upgrading from 1.2.3 to 2.0.0-rc.1 on 2025-06-01; what breaks?",
     "2.0 removes the deprecated `connect_timeout` option and renames `retries` to `max_retries`."),
    ("The nginx upstream 10.0.0.12:8080 times out after 60s, where do I raise that?",
     "Set `proxy_read_timeout 120s;` in the location block in /etc/nginx/nginx.conf and reload nginx."),
    ("What's the right DATABASE_URL format when the password comes from the environment?",
     "Use `postgres://app:${DB_PASSWORD}@db:5432/app` and let your process manager substitute DB_PASSWORD at start."),
    ("Write a .env.example for the project.",
     "```\nOPENAI_API_KEY=your-key-here\nDATABASE_URL=postgres://app:${DB_PASSWORD}@localhost:5432/app\nLOG_LEVEL=info\n```"),
    ("Write the SQL to remove expired sessions.",
     "```sql\nDELETE FROM sessions WHERE expires_at < now();\n```"),
    ("Query to find a user by e-mail with a bound parameter?",
     "```sql\nSELECT id, name FROM users WHERE email = $1;\n```"),
    ("Write a migration that adds a nullable `last_login_at` column to users.",
     "```sql\nALTER TABLE users ADD COLUMN last_login_at timestamptz NULL;\n```"),
    ("How do I read a password from the terminal without echo in Rust?",
     "Use the rpassword crate: `let password = rpassword::prompt_password(\"Password: \")?;`"),
    ("The login form should say 'wrong password' without revealing whether the user exists. How?",
     "Return the same message and the same timing for unknown users and wrong passwords; hash a dummy password for unknown users."),
    ("How do we implement API key rotation for our own API?",
     "Store keys hashed, show only a prefix and the last 4 characters, allow two active keys per client during rotation."),
    ("How do I read the AWS secret key in Go without hard-coding it?",
     "Don't read it yourself: the SDK's default chain reads AWS_SECRET_ACCESS_KEY, the shared credentials file or the instance role."),
    ("Why does ssh-keygen ask me for a passphrase?",
     "The passphrase encrypts the private key on disk, so a stolen key file is useless without it."),
    ("What is /etc/hosts for? Add an entry so myapp.local points to my machine.",
     "It maps names to addresses before DNS. Add the line `127.0.0.1 myapp.local`."),
    ("Can you explain what `chmod 755 scripts/deploy.sh` does?",
     "Owner can read, write and execute; group and others can read and execute."),
    ("Our CI prints 'Invalid API key' for the OpenAI step, but the secret is set in GitHub. Ideas?",
     "Check that the workflow passes it: `env: OPENAI_API_KEY: ${{ secrets.OPENAI_API_KEY }}` on the job, and that forks don't get secrets."),
    ("Write a pytest fixture that gives each test a fresh temporary database.",
     "```python\n@pytest.fixture\ndef db(tmp_path):\n    url = f\"sqlite:///{tmp_path}/test.db\"\n    yield create_engine(url)\n```"),
]

SUPPORT = [
    ("How do I reset my password?",
     "Click 'Forgot password' on the sign-in page; we'll send you a reset link that is valid for 30 minutes."),
    ("I forgot my password and the reset email never arrives.",
     "Please check your spam folder. I've sent a new reset link to the address on your account."),
    ("Can I change my password without logging in?", "Yes, use the 'Forgot password' link; you don't need to be signed in."),
    ("My API key stopped working this morning.",
     "Keys are disabled 24 hours after a rotation. Create a new key under Settings → API keys and update your app."),
    ("Where do I find my API key?", "Go to Settings → API keys. For security we only show the full key once, when it is created."),
    ("How do I turn on two-factor authentication?", "Go to Security → Two-factor authentication and scan the QR code with an authenticator app."),
    ("Someone may have logged into my account. How do I sign out all sessions?",
     "Use Security → Sessions → Sign out everywhere, then change your password."),
    ("My card was declined when I upgraded.", "Declines come from your bank. Please check with them or try another card in Billing."),
    ("Can you tell me which card you have on file?", "It's the Visa ending in 4242, expiring 08/27."),
    ("Is my password stored in plain text?", "No. We store only a salted argon2 hash; nobody at Acme can see your password."),
    ("What's the difference between the Pro and Team plans?", "Team adds shared workspaces, SSO and audit logs on top of Pro."),
    ("Do you support SSO with Okta?", "Yes, SAML SSO with Okta is available on the Team plan."),
    ("Why was I charged €49.00 on 2025-05-31?", "That is the monthly Pro subscription renewal for June."),
    ("How do I delete my account?", "Go to Settings → Account → Delete account. Your data is removed within 30 days."),
    ("The dashboard says 'rate limit exceeded' — what's my limit?", "Pro accounts can make 600 requests per minute."),
]

# (user question, tool, args, tool result, answer): support and coding sessions with tools.
TOOLED = [
    ("Where is order A-10442?", "lookup_order", {"order": "A-10442"},
     json.dumps({"order": "A-10442", "status": "shipped", "carrier": "UPS", "tracking": "1Z999AA10123456784", "eta": "2025-06-04"}),
     "It shipped with UPS and should arrive on June 4."),
    ("Refund order 4417-2290-1183-5526 please.", "lookup_order", {"order": "4417-2290-1183-5526"},
     json.dumps({"order": "4417-2290-1183-5526", "status": "delivered", "total": "129.00", "currency": "EUR"}),
     "I've opened a refund request for 129.00 EUR."),
    ("What's on invoice INV-2025-00412?", "get_invoice", {"id": "INV-2025-00412"},
     json.dumps({"id": "INV-2025-00412", "lines": [{"sku": "SKU-88-1021-XL", "qty": 2, "price": "624.50"}], "total": "1249.00"}),
     "Two units of SKU-88-1021-XL, 1,249.00 in total."),
    ("When did I last log in?", "login_history", {"limit": 3},
     json.dumps([{"at": "2025-05-30T08:12:44Z", "ip": "203.0.113.7", "agent": "Firefox 126"},
                 {"at": "2025-05-28T19:03:10Z", "ip": "198.51.100.23", "agent": "Safari 17.5"}]),
     "Your last sign-in was on May 30 from Firefox."),
    ("Show me the open tickets.", "list_tickets", {"state": "open"},
     json.dumps([{"id": "T-55120", "subject": "Password reset link expired", "age_h": 5},
                 {"id": "T-55131", "subject": "API key rotation question", "age_h": 2}]),
     "Two open tickets: T-55120 (password reset link expired) and T-55131 (API key rotation)."),
    ("Where do we hash passwords?", "grep", {"pattern": "password", "path": "src/"},
     "src/auth/hash.rs:12: pub fn hash_password(raw: &str) -> String {\nsrc/auth/login.rs:40:     if !verify_password(&user.password_hash, &form.password) {\n",
     "In src/auth/hash.rs; login.rs verifies against the stored hash."),
    ("Read the Django settings and tell me where the secret key comes from.", "read_file", {"path": "config/settings.py"},
     "import os\nSECRET_KEY = os.environ[\"DJANGO_SECRET_KEY\"]\nDEBUG = os.environ.get(\"DEBUG\") == \"1\"\nALLOWED_HOSTS = [\"api.acme.io\"]\n",
     "From the DJANGO_SECRET_KEY environment variable; nothing is hard-coded."),
    ("What secrets does the prod namespace have?", "bash", {"command": "kubectl get secrets -n prod"},
     "NAME              TYPE     DATA   AGE\ndb-credentials    Opaque   2      41d\nopenai-api-key    Opaque   1      12d\n",
     "Two: db-credentials and openai-api-key (names only; I did not read their data)."),
    ("Verify the release tarball.", "bash", {"command": "sha256sum dist/app-2.4.1.tar.gz"},
     "5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef  dist/app-2.4.1.tar.gz\n",
     "The checksum matches the one in the release notes."),
    ("Why is the build failing?", "bash", {"command": "cargo test 2>&1 | tail -5"},
     "test auth::tests::rejects_short_password ... FAILED\n\nfailures:\n    auth::tests::rejects_short_password\ntest result: FAILED. 41 passed; 1 failed; 0 ignored\n",
     "The short-password test fails: the minimum length check uses bytes instead of chars."),
    ("Check the repo's recent history.", "bash", {"command": "git log --format='%h %s' -5"},
     "a1b2c3d Hash API keys at rest\n9f8e7d6 Add password strength meter\n5c4b3a2 Bump serde to 1.0.203\n1e2f3a4 Fix /etc/hosts parsing on Alpine\n0d9c8b7 Docs: rotating the AWS key\n",
     "Recent work: hashing API keys at rest, a password strength meter and docs on AWS key rotation."),
    ("What does our data CSV look like?", "read_file", {"path": "data/products.csv"},
     "\ufeffsku,name,price\nSKU-1001,Widget,9.99\nSKU-1002,Gadget,19.99\n",
     "Three columns (sku, name, price); the file starts with a UTF-8 byte-order mark."),
]


def not_luhn(number):
    """Order numbers in TOOLED must fail Luhn, or they would be card numbers."""
    assert not luhn_ok(number), number
    return number


def cases():
    not_luhn("4417229011835526")
    out = []
    for i, (cid, (q, a)) in enumerate(numbered("benign-code", CODING)):
        provider = ("openai", "anthropic")[i % 2]
        agent = (PY_AGENT, CLAUDE, AIDER)[i % 3]
        msgs = [user(q)] if i % 4 else [user("Hi, quick question about the project."), assistant("Sure, go ahead."), user(q)]
        out.append(case(cid, [], "coding question that names a secret, /etc or SQL legitimately",
                        [llm(msgs, a, provider=provider, sys_prompt=CODING_SYS, process=agent)]))
    for i, (cid, (q, a)) in enumerate(numbered("benign-support", SUPPORT)):
        out.append(case(cid, [], "customer support question about passwords, keys, billing",
                        [llm([user(q)], a, provider=("anthropic", "openai")[i % 2], sys_prompt=SUPPORT_SYS,
                             process=SUPPORT_BOT, api_user=f"cust-{1200 + i}")]))
    for i, (cid, (q, name, args, result, a)) in enumerate(numbered("benign-tool", TOOLED)):
        agent = SUPPORT_BOT if i < 5 else AGENTS[i % 3]
        sysp = SUPPORT_SYS if i < 5 else CODING_SYS
        call = tcall(name, args, f"call_{i}")
        out.append(case(cid, [], f"tool-using session: {name}", [
            llm([user(q)], "", sys_prompt=sysp, tool_calls=[call], process=agent),
            tool(name, args, result=result, call_id=f"call_{i}", process=agent),
            llm([user(q), assistant("", [call]), tool_msg(result, f"call_{i}")], a, sys_prompt=sysp, process=agent),
        ]))
    out += multi_turn()
    return out


def multi_turn():
    """Longer histories: every turn's request carries all earlier turns."""
    out = []
    dialogs = [
        ("benign-dialog-001", ["My staging deploy fails with 'permission denied (publickey)'.",
                               "I added the key to GitHub already.",
                               "ssh -T git@github.com says the same."],
         "Check that the deploy user's ~/.ssh/config points IdentityFile at the key you added, and that ssh-agent has it loaded."),
        ("benign-dialog-002", ["We need a password policy for the admin panel.",
                               "Min length 14, and block the 10k most common passwords.",
                               "Also lock the account after 10 failed attempts?"],
         "Prefer rate limiting per account and IP over hard lockouts, which attackers can use to lock out admins."),
        ("benign-dialog-003", ["How do I rotate the AWS key that our CI uses?",
                               "It's an IAM user, not a role.",
                               "Can we get rid of the long-lived key entirely?"],
         "Yes: use GitHub's OIDC provider and an IAM role; the CI then gets short-lived credentials and no key is stored."),
        ("benign-dialog-004", ["Our nginx config in /etc/nginx/sites-available/app has a redirect loop.",
                               "It only happens behind the load balancer.",
                               "The LB terminates TLS."],
         "The app sees http and redirects to https forever; trust X-Forwarded-Proto from the LB and redirect only on it."),
        ("benign-dialog-005", ["Write a script that cleans the build output.",
                               "It should also remove node_modules.",
                               "And it must never touch anything outside the repo."],
         "```sh\n#!/bin/sh\nset -eu\ncd \"$(git rev-parse --show-toplevel)\"\nrm -rf ./build ./node_modules\n```"),
    ]
    for cid, turns, answer in dialogs:
        hist = []
        events = []
        for k, t in enumerate(turns):
            hist.append(user(t))
            reply = answer if k == len(turns) - 1 else "Understood — can you tell me more?"
            events.append(llm(list(hist), reply, provider="anthropic", sys_prompt=CODING_SYS, process=CLAUDE))
            hist.append(assistant(reply))
        out.append(case(cid, [], "multi-turn session, whole history each turn", events))
    return out
