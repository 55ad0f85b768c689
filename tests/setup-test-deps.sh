#!/usr/bin/env bash
# setup-test-deps.sh — install what aitrail's end-to-end tests need, on a fresh
# Debian 12 machine, as root. Idempotent: does nothing when all is present.
#
#   Debian packages  openssl (test PKI), curl (curl client; the /metrics scrapes
#                    of agent/tests/reliability and e2e spool), ca-certificates,
#                    python3 + python3-pip and nodejs only if missing;
#                    rsyslog + rsyslog-gnutls (the syslog/CEF forwarders'
#                    receiver; the tests run their own rsyslogd, never the
#                    system's);
#                    golang-go (builds tests/clients/agent_go.go, the Go client);
#                    the other TLS stacks' clients: gnutls-bin (gnutls-cli) and
#                    wget (GnuTLS), libcurl3-gnutls and libcurl3-nss (curl's
#                    GnuTLS and NSS backends), libnss3-tools (tstclnt, certutil) and
#                    libnss3-dev + gcc + pkg-config (tests/clients/nss_client.c),
#                    a JDK (java runs tests/clients/JavaPost.java: a TLS stack
#                    aitrail does not hook, for the blind-spot test)
#   Python packages  tests/clients/requirements.txt (openai, anthropic SDKs,
#                    the ollama client for the plain-HTTP tests;
#                    boto3 for the Bedrock client and the archive's S3 checks;
#                    moto[server] for the archive's S3 tests; websockets for
#                    the Responses API WebSocket-mode client, its mock and the
#                    ws fixture recorder; for the forwarders' tests:
#                    opentelemetry-proto for the OTLP receiver,
#                    ocsf-json-schema + jsonschema for the OCSF check),
#                    installed only if a pinned version is not already there;
#                    tests/clients/requirements-mcp.txt (the official mcp SDK
#                    2.3.0, for the MCP HTTP+SSE test) into a venv of its own,
#                    $AITRAIL_TEST_CACHE/mcp-venv-2.3.0
#   npm packages     @elastic/ecs (ECS field definitions, for the forwarders'
#                    ECS check) into tests/node_modules, pinned below
#                    @openai/codex@CODEX_VERSION-linux-x64 (Codex CLI: a
#                    stripped static rustls binary), unpacked (no install
#                    scripts run) into $AITRAIL_TEST_CACHE/codex-VERSION
#                    @google/gemini-cli@GEMINI_CLI_VERSION (Gemini CLI: a
#                    bundled JavaScript program run by node, its TLS in
#                    node's OpenSSL), unpacked likewise into
#                    $AITRAIL_TEST_CACHE/gemini-cli-VERSION; its optional
#                    native modules (node-pty, keytar) are left out: the
#                    shell tool then runs commands with child_process
#                    Bun and Claude Code, the native x86-64 Linux builds, for
#                    the BoringSSL capture tests (pinned below), into
#                    $AITRAIL_TEST_NPM_DIR; npm itself is installed from
#                    Debian when missing
#
# Environment: AITRAIL_TEST_PYTHON (default python3) — the interpreter the
# tests run the clients with; the packages are installed for it.
# AITRAIL_TEST_CACHE (default ~/.cache/aitrail-tests) — where downloaded
# binaries are unpacked.
# AITRAIL_TEST_NPM_DIR (default /var/cache/aitrail-test/npm) — where the Bun
# and Claude Code packages go (node_modules/ under it); the tests read the
# same variable.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
req="$here/clients/requirements.txt"
py=${AITRAIL_TEST_PYTHON:-python3}

log() { echo "setup-test-deps: $*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        log "need root for: $*"
        return 1
    fi
}

# --- Debian packages -------------------------------------------------------
missing=()
pkg_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}
for pkg in openssl curl ca-certificates rsyslog rsyslog-gnutls libcurl3-gnutls libcurl3-nss; do
    pkg_installed "$pkg" || missing+=("$pkg")
done
if ! command -v "$py" >/dev/null 2>&1; then
    missing+=(python3)
fi
if ! "$py" -m pip --version >/dev/null 2>&1; then
    # the system python's pip; a pyenv python brings its own
    missing+=(python3-pip)
fi
if ! command -v node >/dev/null 2>&1; then
    missing+=(nodejs)
fi
if ! command -v npm >/dev/null 2>&1; then
    missing+=(npm)
fi
# Clients of the other TLS stacks (agent/tests/e2e/stacks.rs).
for pair in gnutls-cli:gnutls-bin wget:wget tstclnt:libnss3-tools certutil:libnss3-tools \
            cc:gcc pkg-config:pkg-config javac:default-jdk-headless; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
done
if ! command -v go >/dev/null 2>&1; then
    # Debian 12: Go 1.19 (register ABI, pclntab 1.18 layout)
    missing+=(golang-go)
fi
if ! { command -v pkg-config && pkg-config --exists nss; } >/dev/null 2>&1; then
    missing+=(libnss3-dev)
fi
if [ ${#missing[@]} -gt 0 ]; then
    if ! command -v apt-get >/dev/null 2>&1; then
        log "missing ${missing[*]} and no apt-get: install them by hand"
        exit 1
    fi
    log "apt-get install ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    # the same package may be listed twice (tstclnt and certutil)
    readarray -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
    log "Debian packages present (openssl, curl, ca-certificates, rsyslog, rsyslog-gnutls, python3, pip, node, gnutls-cli, wget, NSS tools and headers, cc, a JDK, go)"
fi

# --- Python packages -------------------------------------------------------
# Satisfied when every `name==version` line is installed at that version.
if "$py" - "$req" <<'EOF'
import sys
from importlib import metadata
ok = True
for line in open(sys.argv[1]):
    line = line.split("#", 1)[0].strip()
    if not line:
        continue
    name, _, want = line.partition("==")
    name = name.split("[", 1)[0]  # moto[server]: the extra's packages come with it
    try:
        have = metadata.version(name.strip())
    except metadata.PackageNotFoundError:
        have = None
    if have != want.strip():
        print(f"setup-test-deps: {name.strip()} {have or 'missing'} (want {want.strip()})",
              file=sys.stderr)
        ok = False
sys.exit(0 if ok else 1)
EOF
then
    log "python packages of $req present for $("$py" -c 'import sys; print(sys.executable)')"
else
    pip_args=(install -q --disable-pip-version-check -r "$req")
    # Debian's own python refuses pip installs (PEP 668) unless told otherwise;
    # this is a test machine and the packages are pinned.
    if "$py" -c 'import sys, sysconfig, os; sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_paths()["stdlib"], "EXTERNALLY-MANAGED")) else 1)'; then
        pip_args+=(--break-system-packages)
    fi
    log "$py -m pip ${pip_args[*]}"
    "$py" -m pip "${pip_args[@]}"
fi

# --- npm packages ----------------------------------------------------------
# Pinned; installed into tests/node_modules (git-ignored), no package.json.
npm_pkgs=("@elastic/ecs@9.4.0")
for spec in "${npm_pkgs[@]}"; do
    name=${spec%@*}
    want=${spec##*@}
    have=$(node -e "try{console.log(require('$here/node_modules/$name/package.json').version)}catch(e){}" 2>/dev/null || true)
    if [ "$have" = "$want" ]; then
        log "npm $name $want present"
        continue
    fi
    if ! command -v npm >/dev/null 2>&1; then
        log "apt-get install npm"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends npm
    fi
    log "npm install $spec"
    npm install --prefix "$here" --no-save --no-audit --no-fund "$spec"
done
# npm_unpack SPEC DIR: `npm pack SPEC` unpacked (no install scripts run) into
# DIR, replacing it whole; npm itself from Debian when missing.
npm_unpack() {
    local spec=$1 dir=$2 tmp
    if ! command -v npm >/dev/null 2>&1; then
        log "apt-get install npm"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends npm
    fi
    log "npm pack $spec into $dir"
    mkdir -p "$cache"
    chmod 0700 "$cache"
    tmp=$(mktemp -d "$cache/pack.XXXXXX")
    (cd "$tmp" && npm pack --silent "$spec" >/dev/null)
    mkdir -p "$tmp/unpacked"
    tar -xzf "$tmp"/*.tgz -C "$tmp/unpacked"
    rm -rf "$dir"
    mv "$tmp/unpacked" "$dir"
    rm -rf "$tmp"
}

# Codex CLI, pinned: the rustls resolver's unit tests read its binary and the
# rustls end-to-end test runs it. Change together with CODEX_VERSION in
# agent/src/capture/stacks/rustls/tests.rs and agent/tests/e2e/codex.rs.
codex_version=0.171.0
cache=${AITRAIL_TEST_CACHE:-$HOME/.cache/aitrail-tests}
codex_dir="$cache/codex-$codex_version"
codex_bin="$codex_dir/package/vendor/x86_64-unknown-linux-musl/bin/codex"
if [ -x "$codex_bin" ]; then
    log "codex $codex_version present in $codex_dir"
else
    npm_unpack "@openai/codex@$codex_version-linux-x64" "$codex_dir"
    "$codex_bin" --version >/dev/null || { log "the unpacked codex does not run"; exit 1; }
fi

# Gemini CLI, pinned: agent/tests/e2e/gemini_cli.rs runs it. Change together
# with GEMINI_CLI_VERSION there. The package is one bundle with no required
# dependencies, so the packed tarball runs as it is.
gemini_cli_version=0.61.0
gemini_dir="$cache/gemini-cli-$gemini_cli_version"
gemini_js="$gemini_dir/package/bundle/gemini.js"
if [ -f "$gemini_js" ]; then
    log "gemini-cli $gemini_cli_version present in $gemini_dir"
else
    npm_unpack "@google/gemini-cli@$gemini_cli_version" "$gemini_dir"
fi
# --version with a HOME of its own: it writes ~/.gemini even then.
vhome=$(mktemp -d)
have=$(HOME="$vhome" node "$gemini_js" --version 2>/dev/null || true)
rm -rf "$vhome"
[ "$have" = "$gemini_cli_version" ] || { log "the unpacked gemini-cli says '$have', want $gemini_cli_version"; exit 1; }

# The official MCP Python SDK, pinned with what it resolved to, in a venv of
# its own (its pins differ from requirements.txt's): the MCP HTTP+SSE
# end-to-end test runs its server and client (agent/tests/e2e/mcp_sse.rs).
mcp_venv="$cache/mcp-venv-2.3.0"
mcp_req="$here/clients/requirements-mcp.txt"
if [ -x "$mcp_venv/bin/python" ] && "$mcp_venv/bin/python" - "$mcp_req" <<'EOF'
import sys
from importlib import metadata
for line in open(sys.argv[1]):
    line = line.split("#", 1)[0].strip()
    if not line:
        continue
    name, _, want = line.partition("==")
    try:
        if metadata.version(name.strip()) != want.strip():
            sys.exit(1)
    except metadata.PackageNotFoundError:
        sys.exit(1)
EOF
then
    log "mcp SDK venv present in $mcp_venv"
else
    log "python venv $mcp_venv with $mcp_req"
    mkdir -p "$cache"
    chmod 0700 "$cache"
    "$py" -m venv "$mcp_venv"
    "$mcp_venv/bin/python" -m pip install -q --disable-pip-version-check -r "$mcp_req"
fi
"$mcp_venv/bin/python" -c 'from mcp.client.sse import sse_client; from mcp.server.mcpserver import MCPServer; import uvicorn' \
    || { log "the mcp venv cannot import the SDK's SSE client and server"; exit 1; }
# Bun and Claude Code, pinned: the BoringSSL locator's unit tests and
# agent/tests/e2e/boringssl.rs. The platform packages carry the binaries themselves (the `bun` and
# `@anthropic-ai/claude-code` wrappers only pick one of them at install time),
# so they are installed directly, without install scripts.
npm_dir=${AITRAIL_TEST_NPM_DIR:-/var/cache/aitrail-test/npm}
boring_pkgs=("@oven/bun-linux-x64@1.4.5" "@anthropic-ai/claude-code-linux-x64@2.1.332")
boring_present() {
    local spec name want have
    for spec in "${boring_pkgs[@]}"; do
        name=${spec%@*}
        want=${spec##*@}
        have=$(node -e 'try { console.log(require(process.argv[1]).version) } catch (e) {}' \
            "$npm_dir/node_modules/$name/package.json" 2>/dev/null || true)
        if [ "$have" != "$want" ]; then
            log "$name ${have:-missing} (want $want) in $npm_dir"
            return 1
        fi
    done
}
if [ "$(uname -m)" != x86_64 ]; then
    log "not x86-64: the Bun and Claude Code packages are not installed (the BoringSSL tests are x86-64 only)"
elif boring_present; then
    log "npm packages present in $npm_dir (${boring_pkgs[*]})"
else
    mkdir -p "$npm_dir"
    log "npm install --prefix $npm_dir ${boring_pkgs[*]}"
    npm install --prefix "$npm_dir" --no-audit --no-fund --ignore-scripts --loglevel=error \
        "${boring_pkgs[@]}"
    boring_present || { log "npm packages still missing after install"; exit 1; }
fi

# --- sanity ----------------------------------------------------------------
"$py" -c 'import openai, anthropic, ollama' || { log "python cannot import openai/anthropic/ollama"; exit 1; }
"$py" -c 'import moto.server, flask, boto3' || { log "python cannot import moto.server (moto[server])"; exit 1; }
"$py" -c 'import jsonschema, ocsf_json_schema' || { log "python cannot import jsonschema/ocsf_json_schema"; exit 1; }
"$py" -c 'from opentelemetry.proto.collector.logs.v1 import logs_service_pb2' \
    || { log "python cannot import opentelemetry.proto"; exit 1; }
[ -x /usr/sbin/rsyslogd ] || { log "rsyslogd missing"; exit 1; }
node -e "require('$here/node_modules/@elastic/ecs/build/commonjs/ecs_flat.js')" || { log "node cannot load @elastic/ecs"; exit 1; }
node -e 'require("https"); require("zlib")' || { log "node is not usable"; exit 1; }
pkg-config --exists nss || { log "pkg-config finds no nss (libnss3-dev)"; exit 1; }
go version >/dev/null || { log "go is not usable"; exit 1; }
log "ok"
