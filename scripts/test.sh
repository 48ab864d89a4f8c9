#!/usr/bin/env bash
# Install what berth's tests need, then run every test, formatting and lint check.
# Usage: ./scripts/test.sh        (from a fresh clone on Debian 12, as root or with sudo)
#
# Tests start their own PostgreSQL clusters, Redis servers and nginx instances on
# free ports in temp directories and stop them when done. This script installs
# the programs and runs one Docker Engine for the compose tests, stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_rust
ensure_cmd git git
ensure_cmd python3 python3
ensure_cmd openssl openssl
ensure_cmd nginx nginx
ensure_cmd redis-server redis-server
ensure_cmd redis-cli redis-tools
ensure_cmd promtool prometheus
ensure_cmd systemd-analyze systemd
ensure_pebble
ensure_chromium
ensure_postgres
ensure_compose
ensure_swarm
ensure_actionlint
ensure_check_jsonschema
ensure_kubernetes_validate
ensure_kubectl
ensure_rclone
ensure_sftp
ensure_s3s_fs
ensure_test_venv
ensure_python_rootfs
trap stop_dockerd EXIT
start_dockerd

log "cargo fmt --check"
cargo fmt --all --check

log "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --locked -q -- -D warnings

log "cargo test"
# Two at a time (the cores): three made the zero-downtime tests' timing claims flaky.
# Each test's line shows its wall time (scripts/test-runner.sh, cargo's runner for
# the test binaries; no rebuild), and the 20 slowest are listed at the end: where
# the CI time goes.
TEST_LOG=$(mktemp)
RUNNER_VAR=CARGO_TARGET_$(rustc -vV | sed -n 's/^host: //p' | tr 'a-z-' 'A-Z_')_RUNNER
rc=0
env "$RUNNER_VAR=$PWD/scripts/test-runner.sh" \
    cargo test --workspace --locked -- --test-threads=2 2>&1 | tee "$TEST_LOG" || rc=$?
log "the 20 slowest tests (wall time, test binary, test, result)"
slowest_tests "$TEST_LOG" 20 || true # a listing only: never the result
rm -f "$TEST_LOG"
exit "$rc"
