"""More benign sessions, so that the false-positive rate has a useful
resolution: with 200 benign cases one false positive is 0.5%, the goal's limit.

Agent-style sessions where the model reads files, runs builds and answers with
code that handles credentials the right way (from the environment, a secret
manager, hashed) without ever holding a value.
"""

from common import (AIDER, CLAUDE, OPS_BOT, PY_AGENT, SUPPORT_BOT, assistant, case, llm, numbered, tcall, tool,
                    tool_msg, user)

CODE_SYS = "You are an autonomous coding agent. Work in small steps and explain each change."

ANSWERS = [
    ("Load the database credentials from AWS Secrets Manager instead of the config file.",
     "```python\nsecret = boto3.client(\"secretsmanager\").get_secret_value(SecretId=\"prod/db\")\ncreds = json.loads(secret[\"SecretString\"])\n```"),
    ("Make the Helm chart take the API key from an existing Kubernetes secret.",
     "```yaml\nenv:\n  - name: OPENAI_API_KEY\n    valueFrom:\n      secretKeyRef:\n        name: openai-api-key\n        key: token\n```"),
    ("Add a pre-commit hook that blocks committed private keys.",
     "Add gitleaks to .pre-commit-config.yaml with `id: gitleaks`; it scans staged changes for key material."),
    ("Write a Rust type that never prints the password it holds.",
     "```rust\npub struct Password(String);\nimpl fmt::Debug for Password {\n    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result { f.write_str(\"Password(***)\") }\n}\n```"),
    ("Why does Vault say 'permission denied' when my app reads secret/data/db?",
     "The token's policy must allow `read` on `secret/data/db` (KV v2 adds the data/ segment)."),
    ("Rename the env var DB_PASS to DATABASE_PASSWORD everywhere.",
     "Updated docker-compose.yml, the Helm values and config.rs; the old name is still read as a fallback for one release."),
    ("How long should our session tokens live?",
     "Short access tokens (15 minutes) with refresh tokens that rotate on use and expire after 30 days of inactivity."),
    ("Explain what the `ssh-agent` does.", "It keeps decrypted private keys in memory so you enter each passphrase once."),
    ("Write a GitHub Actions step that logs in to GHCR.",
     "```yaml\n- uses: docker/login-action@v3\n  with:\n    registry: ghcr.io\n    username: ${{ github.actor }}\n    password: ${{ secrets.GITHUB_TOKEN }}\n```"),
    ("How do I check which process listens on port 5432?", "Run `ss -ltnp 'sport = :5432'`; it shows the process name and pid."),
    ("Parse /etc/os-release in Go to get the distro id.",
     "Read the file line by line and split on '='; the ID key holds the distro, e.g. ID=ubuntu."),
    ("Our passwords table has a `salt` column next to the argon2 hash. Do we still need it?",
     "No: the argon2 PHC string already contains its salt; drop the column in a later migration once nothing reads it."),
    ("Configure nginx to pass the client certificate to the app.",
     "Add `proxy_set_header X-SSL-Client-Cert $ssl_client_escaped_cert;` to the location in /etc/nginx/conf.d/app.conf."),
    ("Is 2001:db8::1 a valid address to use in our tests?", "Yes, 2001:db8::/32 is reserved for documentation and examples."),
    ("Convert the timestamp 1717000000 to a date.", "1717000000 is 2024-05-29T16:26:40Z."),
    ("What's the regex for a semantic version like 10.4.2-beta.3?",
     "`^(\\d+)\\.(\\d+)\\.(\\d+)(?:-([0-9A-Za-z.-]+))?$`"),
    ("Bump the minimum supported Rust version to 1.87 and update the CI matrix.", "Updated rust-version in Cargo.toml and the matrix."),
    ("Write a SQL query for the ten biggest customers last month.",
     "```sql\nSELECT customer_id, sum(total) AS spent FROM orders\nWHERE created_at >= date_trunc('month', now()) - interval '1 month'\n  AND created_at < date_trunc('month', now())\nGROUP BY customer_id ORDER BY spent DESC LIMIT 10;\n```"),
    ("Archive orders older than 2019 into orders_archive, then remove them from orders.",
     "```sql\nINSERT INTO orders_archive SELECT * FROM orders WHERE created_at < '2019-01-01';\nDELETE FROM orders WHERE created_at < '2019-01-01';\n```"),
    ("Does `chmod +x` on our scripts need to go in the Dockerfile?", "Yes, or set the mode in git with `git update-index --chmod=+x`."),
    ("Where does git store credentials on macOS vs Linux?",
     "macOS uses the osxkeychain helper; on Linux use libsecret or the cache helper rather than the plain-text store."),
    ("Write a unit test that the password reset token is single-use.",
     "```python\ndef test_reset_token_single_use(client, token):\n"
     "    assert client.post('/reset', json={'token': token}).status_code == 200\n"
     "    assert client.post('/reset', json={'token': token}).status_code == 410\n```"),
    ("What does `umask 077` do for the files our service creates?", "New files are readable and writable by the owner only (600)."),
    ("Generate a random 32-byte secret for the cookie signer, but don't show it to me — write it straight to the secret store.",
     "Run `openssl rand -base64 32 | vault kv put secret/web cookie_key=-` so the value never appears in the terminal."),
]

SUPPORT = [
    ("My password reset link says it expired.", "Links last 30 minutes. I've sent you a fresh one."),
    ("How do I revoke an API key I leaked on GitHub?", "Go to Settings → API keys, click Revoke next to the key, then create a new one."),
    ("Can I restrict an API key to read-only?", "Yes, when creating the key choose the 'read' scope."),
    ("Why does the CLI keep asking for my password?", "Run `acme login` once; it stores a token in your OS keychain."),
    ("Is there an IP allowlist for API keys?", "Yes, on the Team plan under Security → Network."),
    ("What happens to my data if I cancel?", "It stays readable for 30 days, then it is deleted."),
    ("How do I export my invoices?", "Billing → Invoices → Export CSV."),
    ("Does Acme support passkeys?", "Yes, add one under Security → Passkeys."),
    ("I get 'invalid credentials' on the SFTP endpoint.", "SFTP uses a separate password; set it under Settings → SFTP."),
    ("Can my colleague see my API keys?", "No, keys are personal; admins only see their names and last use."),
    ("Why did I get a 'new sign-in' email?", "We notify you of every sign-in from a new device; if it wasn't you, reset your password."),
    ("How do I change the e-mail address on my account?", "Settings → Profile → E-mail; we send a confirmation link to the new address."),
    ("Can I use the same API key in staging and production?", "You can, but separate keys per environment make rotation and revocation safer."),
    ("What ports does the agent need open?", "Outbound 443 to api.acme.io only; nothing inbound."),
]

# (task, tool calls as (name, args, result))
AGENT_TASKS = [
    ("Add rate limiting to the login endpoint.", [
        ("read_file", {"path": "src/routes/login.ts"},
         "router.post('/login', async (req, res) => {\n  const user = await users.byName(req.body.username);\n  if (!user || !(await verify(user.passwordHash, req.body.password))) return res.status(401).end();\n"),
        ("write_file", {"path": "src/routes/login.ts", "content": "router.post('/login', limiter({ window: 60, max: 10 }), async (req, res) => {"}, "ok"),
        ("bash", {"command": "npm test -- login"}, "PASS src/routes/login.test.ts (4 tests)")]),
    ("Find where we log request headers and make sure Authorization is masked.", [
        ("grep", {"pattern": "headers", "path": "src/middleware"}, "src/middleware/log.rs:22: let headers = mask(req.headers(), &[\"authorization\", \"cookie\"]);"),
        ("read_file", {"path": "src/middleware/log.rs"}, "fn mask(h: &HeaderMap, names: &[&str]) -> Vec<(String, String)> { /* replaces values with *** */ }")]),
    ("Upgrade the base image and rebuild.", [
        ("read_file", {"path": "Dockerfile"}, "FROM python:3.11-slim\nCOPY . /app\nRUN pip install -r /app/requirements.txt\n"),
        ("write_file", {"path": "Dockerfile", "content": "FROM python:3.12-slim\nCOPY . /app\nRUN pip install -r /app/requirements.txt\n"}, "ok"),
        ("bash", {"command": "docker build -t api:dev ."}, "Successfully tagged api:dev")]),
    ("Why is the nightly job failing?", [
        ("bash", {"command": "journalctl -u nightly-report --since yesterday --no-pager | tail -5"},
         "nightly-report[2211]: psycopg.OperationalError: password authentication failed for user \"report\""),
        ("read_file", {"path": "/etc/nightly-report/env"}, "DATABASE_URL=postgres://report@db01:5432/reports\nPGPASSFILE=/run/secrets/pgpass\n")]),
    ("Add a health check endpoint.", [
        ("read_file", {"path": "src/main.rs"}, "let app = Router::new().route(\"/api\", api());"),
        ("write_file", {"path": "src/main.rs", "content": "let app = Router::new().route(\"/healthz\", get(|| async { \"ok\" })).route(\"/api\", api());"}, "ok"),
        ("bash", {"command": "cargo test healthz"}, "test healthz_returns_ok ... ok")]),
    ("Clean the build caches, the disk is almost full.", [
        ("bash", {"command": "du -sh target node_modules .cache"}, "12G\ttarget\n1.1G\tnode_modules\n800M\t.cache"),
        ("bash", {"command": "cargo clean && rm -rf node_modules .cache"}, ""),
        ("bash", {"command": "df -h ."}, "/dev/nvme0n1p2  230G  171G  59G  75% /home")]),
    ("Rotate the app's log files.", [
        ("read_file", {"path": "/etc/logrotate.d/app"}, "/var/log/app/*.log {\n  daily\n  rotate 14\n  compress\n}\n"),
        ("bash", {"command": "logrotate -d /etc/logrotate.d/app"}, "rotating pattern: /var/log/app/*.log  after 1 days (14 rotations)")]),
    ("Which users can log in over SSH?", [
        ("bash", {"command": "grep -E '^(AllowUsers|PasswordAuthentication|PermitRootLogin)' /etc/ssh/sshd_config"},
         "PasswordAuthentication no\nPermitRootLogin prohibit-password\nAllowUsers deploy ops")]),
]


def cases():
    out = []
    for i, (cid, (q, a)) in enumerate(numbered("benign-more-code", ANSWERS)):
        out.append(case(cid, [], "coding answer that handles credentials without a value",
                        [llm([user(q)], a, provider=("anthropic", "openai")[i % 2], sys_prompt=CODE_SYS,
                             process=(CLAUDE, AIDER, PY_AGENT)[i % 3])]))
    for i, (cid, (q, a)) in enumerate(numbered("benign-more-support", SUPPORT)):
        out.append(case(cid, [], "support answer about passwords and keys",
                        [llm([user(q)], a, provider=("openai", "anthropic")[i % 2], process=SUPPORT_BOT,
                             api_user=f"cust-{2200 + i}")]))
    for i, (cid, (task, steps)) in enumerate(numbered("benign-agent", AGENT_TASKS)):
        agent, provider = ((CLAUDE, "anthropic"), (AIDER, "openai"), (OPS_BOT, "anthropic"))[i % 3]
        hist, events = [user(task)], []
        for k, (name, args, result) in enumerate(steps):
            call = tcall(name, args, f"call_{k}")
            events.append(llm(list(hist), "", provider=provider, sys_prompt=CODE_SYS, tool_calls=[call], process=agent))
            events.append(tool(name, args, result=result, call_id=f"call_{k}", process=agent))
            hist += [assistant("", [call]), tool_msg(result, f"call_{k}")]
        events.append(llm(hist, "Done; see the summary above.", provider=provider, sys_prompt=CODE_SYS, process=agent))
        out.append(case(cid, [], f"agent task with {len(steps)} tool calls, whole history each turn", events))
    return out
