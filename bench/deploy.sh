#!/usr/bin/env bash
# Rollback time (berth vs the seed's checkout + rebuild + restart) and berth's own
# overhead per deploy, on the compose runtime with a Docker Engine of its own.
# Usage: bench/deploy.sh [RUNS]   (after bench/setup.sh)
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
RUNS=${1:-5}
cargo build --release --locked -q -p berth
HEADER=$(bench_header "Rollback and deploy overhead (compose runtime, real Docker Engine)" \
    "Targets: a rollback to a retained image answers within 3 s (median); berth adds at most 10% over the operations it runs." \
    bench/deploy.sh "$@")
OUT=$(python3 bench/deploy_bench.py "$PWD/target/release/berth" "$RUNS")
printf '%s\n\n%s\n' "$HEADER" "$OUT"
