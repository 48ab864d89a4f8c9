#!/usr/bin/env bash
# Install the peers the benchmarks compare berth with, into bench/.cache (git-ignored):
# hyperfine (Debian), @commitlint/cli + config-conventional and turbo (npm), cocogitto (crates.io).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
CACHE=bench/.cache
mkdir -p "$CACHE"
ensure_rust
ensure_cmd git git
ensure_cmd hyperfine hyperfine
ensure_cmd python3 python3
ensure_cmd npm npm
if [ ! -x "$CACHE/node/node_modules/.bin/commitlint" ] || [ ! -x "$CACHE/node/node_modules/.bin/turbo" ]; then
    log "installing commitlint and turbo (npm)"
    mkdir -p "$CACHE/node"
    (cd "$CACHE/node" && [ -f package.json ] || npm init -y >/dev/null)
    (cd "$CACHE/node" && npm install --silent --no-audit --no-fund \
        @commitlint/cli@20 @commitlint/config-conventional@20 turbo@2 >/dev/null)
fi
if [ ! -x "$CACHE/cargo/bin/cog" ]; then
    if command -v cog >/dev/null 2>&1; then
        mkdir -p "$CACHE/cargo/bin" && ln -sf "$(command -v cog)" "$CACHE/cargo/bin/cog"
    else
        log "installing cocogitto (cargo install, a few minutes)"
        cargo install --quiet --locked --root "$CACHE/cargo" cocogitto
    fi
fi
log "building berth (release)"
cargo build --release --locked -q -p berth
