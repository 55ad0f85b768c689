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
#                    the ollama client for the plain-HTTP tests,
#                    boto3 for the Bedrock client; for the forwarders' tests:
#                    opentelemetry-proto for the OTLP receiver,
#                    ocsf-json-schema + jsonschema for the OCSF check),
#                    installed only if a pinned version is not already there
#   npm packages     @elastic/ecs (ECS field definitions, for the forwarders'
#                    ECS check) into tests/node_modules, pinned below
#                    @openai/codex@CODEX_VERSION-linux-x64 (Codex CLI: a
#                    stripped static rustls binary), unpacked (no install
#                    scripts run) into $AITRAIL_TEST_CACHE/codex-VERSION
#
# Environment: AITRAIL_TEST_PYTHON (default python3) — the interpreter the
# tests run the clients with; the packages are installed for it.
# AITRAIL_TEST_CACHE (default ~/.cache/aitrail-tests) — where downloaded
# binaries are unpacked.
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
    if ! command -v npm >/dev/null 2>&1; then
        log "apt-get install npm"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends npm
    fi
    log "npm pack @openai/codex@$codex_version-linux-x64 into $codex_dir"
    mkdir -p "$cache"
    chmod 0700 "$cache"
    tmp=$(mktemp -d "$cache/codex.XXXXXX")
    (cd "$tmp" && npm pack --silent "@openai/codex@$codex_version-linux-x64" >/dev/null)
    mkdir -p "$tmp/unpacked"
    tar -xzf "$tmp"/openai-codex-*.tgz -C "$tmp/unpacked"
    rm -rf "$codex_dir"
    mv "$tmp/unpacked" "$codex_dir"
    rm -rf "$tmp"
    "$codex_bin" --version >/dev/null || { log "the unpacked codex does not run"; exit 1; }
fi

# --- sanity ----------------------------------------------------------------
"$py" -c 'import openai, anthropic, ollama' || { log "python cannot import openai/anthropic/ollama"; exit 1; }
"$py" -c 'import jsonschema, ocsf_json_schema' || { log "python cannot import jsonschema/ocsf_json_schema"; exit 1; }
"$py" -c 'from opentelemetry.proto.collector.logs.v1 import logs_service_pb2' \
    || { log "python cannot import opentelemetry.proto"; exit 1; }
[ -x /usr/sbin/rsyslogd ] || { log "rsyslogd missing"; exit 1; }
node -e "require('$here/node_modules/@elastic/ecs/build/commonjs/ecs_flat.js')" || { log "node cannot load @elastic/ecs"; exit 1; }
node -e 'require("https"); require("zlib")' || { log "node is not usable"; exit 1; }
pkg-config --exists nss || { log "pkg-config finds no nss (libnss3-dev)"; exit 1; }
go version >/dev/null || { log "go is not usable"; exit 1; }
log "ok"
