#!/usr/bin/env bash
# Rollback time: from the start of the rollback to every request answered by the
# version rolled back to (load through a real nginx), N rollbacks in a row per case:
# within the warm-standby window (a switch), with `standby = "0"` (the old slot is
# started again: berth before the standby), and Kamal-style (the old containers
# retained stopped: `docker start`, wait until they answer, then the switch).
# The ignored integration test `standby::rollback_bench` measures and prints one
# line per case; this script turns those lines into the section's table.
# Usage: bench/rollback.sh [N]   (default 10; compose needs a Docker Engine:
#   DOCKER_HOST, or bench/run.sh starts one)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
N=${1:-10}
HEADER=$(bench_header "Rollback time: warm standby, a cold start, and a Kamal-style restart" \
    "Target: a rollback within the standby window answers with the previous version within 0.1 s plus the configured health check (one probe of the demo app here), median of $N, on compose and local; 0 failed requests during it, under about 100 req/s (the issue's load). berth here is the release build users install (\`cargo build --release\`), run by the integration test's harness." \
    bench/rollback.sh "$@")
LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT
# What users install: the release binary (the test harness runs it instead of its debug build).
cargo build --release --locked -q -p berth
if ! BERTH_BENCH_BIN=$PWD/target/release/berth BERTH_BENCH_N=$N cargo test -p berth --test all -- --ignored --nocapture --test-threads 1 standby::rollback_bench >"$LOG" 2>&1; then
    tail -40 "$LOG" >&2
    echo "bench/rollback.sh: the benchmark failed (log above)" >&2
    exit 1
fi
printf '%s\n\n' "$HEADER"
python3 - "$LOG" "$N" <<'PY'
import re, sys
rows = {}
for line in open(sys.argv[1], errors="replace"):
    m = re.search(r"rollback bench: (\w+) (\w+): median ([\d.]+) s, min ([\d.]+) s, max ([\d.]+) s, n (\d+), load (\d+) req/s", line)
    if m:
        rows[(m.group(1), m.group(2))] = tuple(float(x) for x in m.groups()[2:5]) + (int(m.group(6)), int(m.group(7)))
if not rows:
    sys.exit("bench/rollback.sh: the benchmark printed no result")
names = {"Warm": "within the standby window (switch)", "Cold": "standby = \"0\" (start the old slot)",
         "Restart": "Kamal-style (docker start the retained containers, then switch)"}
print("Time from the start of the rollback to every request answered by the previous version (every request of the run answered; none failed).")
print()
print("| runtime | rollback | median | min | max | n | load (median req/s) |")
print("|---|---|---|---|---|---|---|")
for (kind, mode), (med, lo, hi, n, rate) in rows.items():
    print(f"| {kind.lower()} | {names.get(mode, mode)} | {med:.3f} s | {lo:.3f} s | {hi:.3f} s | {n} | {rate} |")
print()
for kind in ("Local", "Compose"):
    warm = rows.get((kind, "Warm"))
    if not warm:
        continue
    parts = [f"{kind.lower()}: warm standby {warm[0]:.3f} s"]
    for mode in ("Cold", "Restart"):
        other = rows.get((kind, mode))
        if other:
            parts.append(f"{other[0] / warm[0]:.1f}x faster than {names[mode].split(' (')[0]} ({other[0]:.3f} s)")
    verdict = "**met**" if warm[0] <= 0.1 else "**not met**"
    print(", ".join(parts) + f"; target 0.1 s (+ one health probe of the demo app, milliseconds): {verdict}.  ")
PY
