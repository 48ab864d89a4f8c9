#!/usr/bin/env bash
# Build berth and run its main job end to end on the embedded example (`berth demo`).
# Needs Rust, git and nginx (installed if missing): no Docker.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_rust
ensure_cmd git git
ensure_cmd nginx nginx
log "building berth (and the demo's product server, demo-app)"
cargo build --release --locked -q -p berth
exec ./target/release/berth demo "$@"
