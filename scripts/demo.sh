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
# The demo profile (Cargo.toml): the release build's code and features without its
# optimisation passes, so a fresh clone reaches the demo in minutes, not ten.
# The binary users install is still `cargo build --release`.
cargo build --profile demo --locked -q -p berth
exec ./target/demo/berth demo "$@"
