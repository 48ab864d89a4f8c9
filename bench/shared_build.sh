#!/usr/bin/env bash
# One build per shared image: both products of the example deployed after a change to
# apps/server, builds counted and wall time, with sharing off (before) and on (after).
# Usage: bench/shared_build.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
. bench/lib.sh
ensure_compose
ensure_cmd nginx nginx
if [ -z "${DOCKER_HOST:-}" ]; then
    trap stop_dockerd EXIT
    start_dockerd
fi
RUNS=${1:-3}
cargo build --release --locked -q -p berth
HEADER=$(bench_header "One build per shared image (compose runtime, real Docker Engine)" \
    "Goal: deploying both products of the example after a change to \`apps/server\` builds one image; total wall time before and after." \
    bench/shared_build.sh "$@")
OUT=$(python3 bench/shared_build.py "$PWD/target/release/berth" "$RUNS")
printf '%s\n\n%s\n' "$HEADER" "$OUT"
