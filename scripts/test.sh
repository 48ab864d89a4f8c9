#!/usr/bin/env bash
# Install what berth's tests need, then run every test, formatting and lint check.
# Usage: ./scripts/test.sh        (from a fresh clone on Debian 12, as root or with sudo)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_rust
ensure_cmd git git

log "cargo fmt --check"
cargo fmt --all --check

log "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --locked -q -- -D warnings

log "cargo test"
cargo test --workspace --locked
