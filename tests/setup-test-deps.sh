#!/usr/bin/env bash
# setup-test-deps.sh — install what aitrail's end-to-end tests need, on a fresh
# Debian 12 machine, as root. Idempotent: does nothing when all is present.
#
#   Debian packages  openssl (test PKI), curl (curl client), ca-certificates,
#                    python3 + python3-pip and nodejs only if missing
#   Python packages  tests/clients/requirements.txt (openai, anthropic SDKs),
#                    installed only if a pinned version is not already there
#   npm packages     Bun and Claude Code, the native x86-64 Linux builds, for
#                    the BoringSSL capture tests (pinned below; npm itself is
#                    installed from Debian when missing)
#
# Environment: AITRAIL_TEST_PYTHON (default python3) — the interpreter the
# tests run the clients with; the packages are installed for it.
# AITRAIL_TEST_NPM_DIR (default /var/cache/aitrail-test/npm) — where the npm
# packages go (node_modules/ under it); the tests read the same variable.
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
for pkg in openssl curl ca-certificates; do
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
if [ ${#missing[@]} -gt 0 ]; then
    if ! command -v apt-get >/dev/null 2>&1; then
        log "missing ${missing[*]} and no apt-get: install them by hand"
        exit 1
    fi
    log "apt-get install ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
    log "Debian packages present (openssl, curl, ca-certificates, python3, pip, node)"
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
# The platform packages carry the binaries themselves (the `bun` and
# `@anthropic-ai/claude-code` wrappers only pick one of them at install time),
# so they are installed directly, without install scripts.
npm_dir=${AITRAIL_TEST_NPM_DIR:-/var/cache/aitrail-test/npm}
npm_pkgs=("@oven/bun-linux-x64@1.4.5" "@anthropic-ai/claude-code-linux-x64@2.1.332")
npm_present() {
    local spec name want have
    for spec in "${npm_pkgs[@]}"; do
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
elif npm_present; then
    log "npm packages present in $npm_dir (${npm_pkgs[*]})"
else
    mkdir -p "$npm_dir"
    log "npm install --prefix $npm_dir ${npm_pkgs[*]}"
    npm install --prefix "$npm_dir" --no-audit --no-fund --ignore-scripts --loglevel=error \
        "${npm_pkgs[@]}"
    npm_present || { log "npm packages still missing after install"; exit 1; }
fi

# --- sanity ----------------------------------------------------------------
"$py" -c 'import openai, anthropic' || { log "python cannot import openai/anthropic"; exit 1; }
node -e 'require("https"); require("zlib")' || { log "node is not usable"; exit 1; }
log "ok"
