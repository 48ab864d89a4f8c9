#!/usr/bin/env bash
# Soak: OPS consecutive deploys and rollbacks of bestays (alternating), with one of
# realestate after every fifth, under continuous load through nginx and with
# `berth serve` running: the integration test `soak::` with a larger count. It
# fails on any failed request, any leftover berth does not account for, audit or
# tag counts that differ from what ran, or serve's memory growing; it writes the
# wall time per operation over the run (by tenths) and this script prints it.
# Usage: bench/soak.sh [OPS]   (default 100: 100 of bestays, 20 of realestate)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
OPS=${1:-100}
HEADER=$(bench_header "Soak: ${OPS} deploys and rollbacks of bestays, $((OPS / 5)) of realestate, under load (local runtime)" \
    "Target: 0 failed requests; nothing left that berth does not account for (processes, checkouts beyond \`[deploy] keep\`, worktrees, ports, pid files, log files, temporary files); the audit and the tags count exactly what ran; \`berth serve\`'s RSS flat; the wall time per operation does not grow." \
    bench/soak.sh "$@")
LOG=$(mktemp)
TABLE=$(mktemp)
trap 'rm -f "$LOG" "$TABLE"' EXIT
if ! BERTH_SOAK_BESTAYS=$OPS BERTH_SOAK_TABLE=$TABLE \
    cargo test -p berth --test all -- --nocapture --test-threads 1 soak:: >"$LOG" 2>&1; then
    grep -v '^\[' "$LOG" | tail -60 >&2
    echo "bench/soak.sh: the soak test failed (log above)" >&2
    exit 1
fi
printf '%s\n\n' "$HEADER"
echo "From \`BERTH_SOAK_BESTAYS=$OPS cargo test -p berth --test all -- --nocapture --test-threads 1 soak::\`: the test passed (every target above is one of its assertions). Load while it ran: $(cut -d' ' -f1 /proc/loadavg) (1-minute load average at the end), $(nproc) cores."
echo
cat "$TABLE"
