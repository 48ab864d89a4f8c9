#!/usr/bin/env bash
# Rollback time (berth vs the seed's checkout + rebuild + restart) and berth's own
# overhead per deploy, on the compose runtime with a Docker Engine of its own.
# Usage: bench/deploy.sh [RUNS]   (after bench/setup.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_compose
ensure_cmd nginx nginx
if [ -z "${DOCKER_HOST:-}" ]; then
    trap stop_dockerd EXIT
    start_dockerd
fi
python3 bench/deploy_bench.py "$PWD/target/release/berth" "${1:-5}"
