#!/usr/bin/env bash
# Build berth and run its main job end to end on the embedded example (`berth demo`).
# Needs Rust and git only: no Docker.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_rust
ensure_cmd git git
log "building berth"
cargo build --release --locked -q -p berth
exec ./target/release/berth demo "$@"
