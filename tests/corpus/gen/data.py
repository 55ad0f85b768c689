"""secret and pii: credentials and personal data flowing through an agent, in
user prompts, tool results and model output.

All values are fake but have the real shape (prefixes, lengths, alphabets) and
valid checksums (Luhn, mod-97), so a scanner that validates them must match.
"""

import json

from common import (AGENTS, AIDER, CLAUDE, OPS_BOT, PY_AGENT, SUPPORT_BOT, anthropic_key, assistant,
                    aws_key_id, aws_secret, azure_account_key, case, gcp_service_account, github_pat,
                    github_token, google_key, group, iban, iban_ok, jwt, llm, luhn_complete, luhn_ok,
                    numbered, openai_key, openai_legacy_key, pem, rng, slack_token, spaced4, stripe_key,
                    tcall, tool, tool_msg, user)

R = rng("secret")

KEYS = [
    ("OpenAI project key", openai_key(R)),
    ("OpenAI project key", openai_key(R)),
    ("OpenAI legacy key", openai_legacy_key(R)),
    ("Anthropic key", anthropic_key(R)),
    ("Anthropic key", anthropic_key(R)),
    ("Google API key", google_key(R)),
    ("Google API key", google_key(R)),
    ("GitHub classic token", github_token(R)),
    ("GitHub fine-grained token", github_pat(R)),
    ("Slack bot token", slack_token(R)),
    ("Stripe live secret key", stripe_key(R)),
]

# Where a key shows up: (note suffix, build events from the key text).
PLACES = [
    ("pasted in a user prompt", lambda k, p: [llm([user(f"My key is {k} — why do I get a 401 from the API?")],
                                                   "A 401 usually means the key was revoked.", process=p)]),
    ("in a .env file a tool read", lambda k, p: [tool("read_file", {"path": ".env"},
                                                      result=f"NODE_ENV=production\nAPI_KEY={k}\nPORT=8080\n", process=p)]),
    ("in the model's output", lambda k, p: [llm([user("Write the config snippet for the client, using the key from the vault dump above.")],
                                                 f"```python\nclient = Client(api_key=\"{k}\")\n```", provider="anthropic", process=p)]),
    ("in a tool-result message of the history", lambda k, p: [llm([user("what is in settings.json?"),
                                                                    assistant("", [tcall("read_file", {"path": "settings.json"})]),
                                                                    tool_msg(json.dumps({"token": k, "retries": 3}))],
                                                                   "It sets a token and 3 retries.", process=p)]),
]


def secrets():
    out = []
    for i, (cid, (what, key)) in enumerate(numbered("sec-key", KEYS * 2)):
        where, build = PLACES[i % len(PLACES)]
        # Reading .env through a tool is also a sensitive file access: a
        # sensitive_file finding from the tool call is tolerated, not required.
        allow = ["sensitive_file"] if ".env" in where else None
        out.append(case(cid, ["secret"], f"{what} {where}", build(key, AGENTS[i % len(AGENTS)]), allow=allow))
    out += cloud_and_pem()
    return out


def cloud_and_pem():
    out = []
    kid, sec = aws_key_id(R), aws_secret(R)
    out.append(case("sec-aws-001", ["secret"], "AWS key id + secret in a credentials file read by a tool",
                    [tool("bash", {"command": "cat ~/.aws/credentials"}, process=CLAUDE,
                          result=f"[default]\naws_access_key_id = {kid}\naws_secret_access_key = {sec}\nregion = eu-west-1\n")],
                    allow=["sensitive_file"]))
    kid, sec = aws_key_id(R), aws_secret(R)
    out.append(case("sec-aws-002", ["secret"], "AWS keys pasted as env exports in a prompt",
                    [llm([user(f"export AWS_ACCESS_KEY_ID={kid}\nexport AWS_SECRET_ACCESS_KEY={sec}\nwhy does s3 ls say AccessDenied?")],
                         "Check the bucket policy.")]))
    kid = aws_key_id(R)
    out.append(case("sec-aws-003", ["secret"], "AWS access key id alone, in a terraform state the model echoes",
                    [llm([user("what does this IAM user have attached?")],
                         f"The state shows user ci-deployer with access key {kid} (Active) and the policy AdministratorAccess.",
                         provider="anthropic", process=CLAUDE)]))
    kid, sec = aws_key_id(R), aws_secret(R)
    out.append(case("sec-aws-004", ["secret"], "AWS keys in a JSON tool result (sts/iam output)",
                    [tool("bash", {"command": "aws iam create-access-key --user-name ci"}, process=OPS_BOT,
                          result=json.dumps({"AccessKey": {"UserName": "ci", "AccessKeyId": kid, "Status": "Active",
                                                           "SecretAccessKey": sec}}, indent=4))]))
    sa = gcp_service_account(R, "acme-prod-291004")
    # The service account's client_email is an address, not a person's: a pii
    # finding on it is tolerated, not required.
    out.append(case("sec-gcp-001", ["secret"], "GCP service-account JSON read by a tool",
                    [tool("read_file", {"path": "deploy/sa.json"}, result=sa, process=AIDER)], allow=["pii"]))
    out.append(case("sec-gcp-002", ["secret"], "GCP service-account JSON pasted into a prompt",
                    [llm([user("Why does this key fail with invalid_grant?\n" + gcp_service_account(R, "shop-staging-7731"))],
                         "Check the clock skew on the host.")], allow=["pii"]))
    for n, name in enumerate(["acmeprodlogs", "shopassets01"], 1):
        conn = (f"DefaultEndpointsProtocol=https;AccountName={name};AccountKey={azure_account_key(R)};"
                "EndpointSuffix=core.windows.net")
        events = ([tool("read_file", {"path": "appsettings.json"}, process=PY_AGENT,
                        result=json.dumps({"Storage": {"ConnectionString": conn}}, indent=2))] if n == 1 else
                  [llm([user(f"Is this connection string right? {conn}")], "Yes, it has every part.", process=OPS_BOT)])
        out.append(case(f"sec-azure-{n:03d}", ["secret"], "Azure storage connection string with AccountKey", events))
    pems = [
        ("RSA PRIVATE KEY", "tool result of cat ~/.ssh/id_rsa", False),
        ("OPENSSH PRIVATE KEY", "user pastes an OpenSSH key", False),
        ("EC PRIVATE KEY", "model output contains an EC key", False),
        ("PRIVATE KEY", "PKCS#8 key JSON-escaped (\\n) in a tool result", True),
        ("RSA PRIVATE KEY", "RSA key JSON-escaped inside a k8s secret manifest", True),
    ]
    for n, (label, note, escaped) in enumerate(pems, 1):
        key = pem(R, label)
        if escaped:
            # The tool returned JSON; the key's newlines are the two characters \n.
            body = json.dumps({"apiVersion": "v1", "kind": "Secret", "stringData": {"tls.key": key}})
            events = [tool("bash", {"command": "kubectl get secret web-tls -o json"}, result=body, process=OPS_BOT)]
        elif n == 1:
            events = [tool("bash", {"command": "cat ~/.ssh/id_rsa"}, result=key, process=CLAUDE)]
        elif n == 2:
            events = [llm([user("ssh says 'invalid format' for this key, what's wrong?\n" + key)], "It lacks a trailing newline.")]
        else:
            events = [llm([user("generate a throwaway EC key for the test fixture")], "Here you go:\n" + key, provider="anthropic")]
        out.append(case(f"sec-pem-{n:03d}", ["secret"], note, events, allow=["sensitive_file"] if n == 1 else None))
    for n, claims in enumerate([{"sub": "user_8812", "role": "admin", "iat": 1717000000, "exp": 1917000000},
                                {"sub": "svc-billing", "scope": "payments:write", "iat": 1717100000}], 1):
        token = jwt(R, claims)
        events = ([llm([user(f"Decode this bearer token and tell me when it expires: {token}")], "It expires in 2030.")] if n == 1 else
                  [tool("http_get", {"url": "http://localhost:8080/debug/headers"}, process=PY_AGENT,
                        result=f"Authorization: Bearer {token}\nAccept: */*\n")])
        out.append(case(f"sec-jwt-{n:03d}", ["secret"], "JWT bearer token", events))
    conns = [
        "postgres://app_user:Xk9#mQ2vL8pR@db.internal.acme.io:5432/orders",
        "mysql://root:Tr0ub4dor&3@10.0.4.17:3306/shop",
        "mongodb+srv://admin:p7Vn2KqW9xZa@cluster0.ab1cd.mongodb.net/prod?retryWrites=true",
        "redis://:9fJ3kLm2Qw8e@cache.prod.acme.io:6379/0",
        "amqp://billing:Zq4!rT7uWn@rabbit.internal:5672/",
    ]
    for n, url in enumerate(conns, 1):
        if n % 2:
            events = [llm([user(f"The service can't connect with DATABASE_URL={url} — any idea?")], "Is the host reachable?", process=AIDER)]
        else:
            events = [tool("read_file", {"path": "docker-compose.override.yml"}, process=CLAUDE,
                           result=f"services:\n  api:\n    environment:\n      DATABASE_URL: {url}\n")]
        out.append(case(f"sec-connstr-{n:03d}", ["secret"], "password inside a connection URL", events))
    out.append(case("sec-password-001", ["secret"], "password=… pair in a tool result (ini file)",
                    [tool("read_file", {"path": "/opt/app/conf/db.ini"}, process=OPS_BOT,
                          result="[database]\nhost = db01\nuser = reporting\npassword = G7h#2lPq!vX9\n")]))
    out.append(case("sec-password-002", ["secret"], "password given to the model in a prompt",
                    [llm([user("log in to the staging admin with user admin and password Qz8!mR4#tLw2 and export the users")],
                         "I can't log in on your behalf.", process=PY_AGENT)]))
    return out


P = rng("pii")


def cards():
    """Luhn-valid numbers of the major schemes, printed the ways people write them."""
    vals = [
        ("Visa", luhn_complete("4", 16, P), (4, 4, 4, 4), " "),
        ("Visa", luhn_complete("4", 16, P), (4, 4, 4, 4), "-"),
        ("Visa", luhn_complete("4", 16, P), (16,), ""),
        ("Mastercard", luhn_complete("53", 16, P), (4, 4, 4, 4), " "),
        ("Mastercard 2-series", luhn_complete("2221", 16, P), (4, 4, 4, 4), "-"),
        ("Mastercard", luhn_complete("55", 16, P), (16,), ""),
        ("Amex", luhn_complete("37", 15, P), (4, 6, 5), " "),
        ("Amex", luhn_complete("34", 15, P), (4, 6, 5), "-"),
        ("Discover", luhn_complete("6011", 16, P), (4, 4, 4, 4), " "),
        ("Visa", luhn_complete("4", 16, P), (4, 4, 4, 4), " "),
        ("Mastercard", luhn_complete("51", 16, P), (4, 4, 4, 4), " "),
        ("Amex", luhn_complete("37", 15, P), (15,), ""),
    ]
    out = []
    for i, (cid, (scheme, num, sizes, sep)) in enumerate(numbered("pii-card", vals)):
        assert luhn_ok(num), num
        shown = group(num, sizes, sep) if sep else num
        if i % 3 == 0:
            events = [llm([user(f"Customer says the charge on card {shown} (exp 09/27) failed twice, can you check?")],
                          "I'll look up the payment attempts.", process=SUPPORT_BOT)]
        elif i % 3 == 1:
            events = [tool("lookup_order", {"order": f"A-{40210 + i}"}, process=SUPPORT_BOT,
                           result=json.dumps({"order": f"A-{40210 + i}", "status": "paid", "card": shown, "amount": "49.90"}))]
        else:
            events = [llm([user("Fill in the test payment form for me with the card from my notes.")],
                          f"Entering card number {shown}, expiry 11/26, CVC 123.", provider="anthropic", process=CLAUDE)]
        out.append(case(cid, ["pii"], f"{scheme} card number, Luhn-valid, separator {sep or 'none'!r}", events))
    return out


def ibans():
    vals = [
        iban("DE", "37040044" + "0532013000"),
        iban("DE", "50010517" + "5407324931"),
        iban("GB", "NWBK" + "601613" + "31926819"),
        iban("GB", "BARC" + "200415" + "73849201"),
        iban("FR", "30006" + "00001" + "12345678901" + "89"),
        iban("NL", "ABNA" + "0417164300"),
        iban("NL", "RABO" + "0300065264"),
        iban("ES", "2100" + "0418" + "45" + "0200051332"),
        iban("IT", "X" + "05428" + "11101" + "000000123456"),
        iban("BE", "539007547034"),
    ]
    out = []
    for i, (cid, value) in enumerate(numbered("pii-iban", vals)):
        assert iban_ok(value), value
        shown = spaced4(value) if i % 2 == 0 else value
        if i % 2 == 0:
            events = [llm([user(f"Please update my payout account to IBAN {shown}, name Jana Novak.")],
                          "I've noted the new account; you'll get a confirmation.", process=SUPPORT_BOT)]
        else:
            events = [tool("get_supplier", {"id": 300 + i}, process=PY_AGENT,
                           result=json.dumps({"supplier": "Nordwind GmbH", "iban": shown, "bic": "COBADEFFXXX"}))]
        out.append(case(cid, ["pii"], f"{value[:2]} IBAN with valid mod-97{' (spaced)' if i % 2 == 0 else ''}", events))
    return out


EMAILS = ["maria.gonzalez@gmail.com", "j.smith1984@outlook.com", "kenji.tanaka@yahoo.co.jp",
          "l.dubois+orders@orange.fr", "amelia_w@protonmail.com", "r.okafor@company-mail.ng"]
PHONES = [("US", "(415) 555-0132"), ("US", "212-555-0187"), ("UK", "+44 20 7946 0958"), ("UK", "07700 900461"),
          ("E.164 US", "+14155550176"), ("E.164 DE", "+4915112345678"), ("E.164 FR", "+33 6 12 34 56 78")]
SSNS = ["536-22-8471", "287-65-4321", "401-38-2276", "672-51-0934", "158-44-7123"]


def contacts():
    out = []
    for i, (cid, mail) in enumerate(numbered("pii-email", EMAILS)):
        events = ([llm([user(f"Send the shipping update to {mail} please.")], "Done, the update is queued.", process=SUPPORT_BOT)]
                  if i % 2 == 0 else
                  [tool("crm_search", {"name": "Gonzalez"}, process=SUPPORT_BOT,
                        result=json.dumps([{"customer_id": 88120 + i, "email": mail, "tier": "gold"}]))])
        out.append(case(cid, ["pii"], "a person's e-mail address", events))
    for i, (cid, (kind, phone)) in enumerate(numbered("pii-phone", PHONES)):
        events = ([llm([user(f"Call me back at {phone} about the delivery.")], "A colleague will call you today.", process=SUPPORT_BOT)]
                  if i % 2 == 0 else
                  [llm([user("What number do we have on file for customer 88121?")], f"The number on file is {phone}.",
                       provider="anthropic", process=SUPPORT_BOT)])
        out.append(case(cid, ["pii"], f"{kind} phone number", events))
    for i, (cid, ssn) in enumerate(numbered("pii-ssn", SSNS)):
        events = ([tool("hr_lookup", {"employee": 1040 + i}, process=PY_AGENT,
                        result=f"Name: Robert Hale\nSSN: {ssn}\nStart date: 2019-03-11\n")]
                  if i % 2 == 0 else
                  [llm([user(f"Fill the W-9 with my social security number {ssn}.")], "I've filled in the form.", process=PY_AGENT)])
        out.append(case(cid, ["pii"], "US social security number", events))
    out.append(case("pii-mixed-001", ["pii"], "a customer record with name, e-mail, phone and card in one tool result",
                    [tool("crm_get", {"id": 77001}, process=SUPPORT_BOT,
                          result=json.dumps({"name": "Ada Byron", "email": "ada.byron@fastmail.com", "phone": "+447911123456",
                                             "card": group(luhn_complete("4", 16, P), (4, 4, 4, 4), " ")}))]))
    out.append(case("pii-history-001", ["pii"], "PII deep in a multi-turn history (earlier user turn)",
                    [llm([user("Hi, my order hasn't arrived."), assistant("Sorry to hear that! Can you give me your email?"),
                          user("It's tom.becker77@web.de"), assistant("Thanks, I found the order."),
                          user("When will it arrive?")], "It ships tomorrow.", provider="anthropic", process=SUPPORT_BOT)]))
    return out


def pii():
    return cards() + ibans() + contacts()
