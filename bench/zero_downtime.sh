#!/usr/bin/env bash
# Requests dropped during deploys and rollbacks: the integration tests that deploy,
# redeploy and roll back under load through a real nginx, on both runtimes, and the
# seed's stop/start deploy of the same app, each printing one summary line
# (`<label>: N requests ..., F failed ...`). This script runs them and turns those
# lines into the section's table.
# Usage: bench/zero_downtime.sh [TEST_FILTER...]
#   (default: deploy_redeploy_rollback a_stop_start compose_deploy_redeploy;
#    the compose one needs a Docker Engine: DOCKER_HOST, or bench/run.sh starts one)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
FILTERS=("$@")
[ ${#FILTERS[@]} -gt 0 ] || FILTERS=(deploy_redeploy_rollback a_stop_start compose_deploy_redeploy)
HEADER=$(bench_header "Requests dropped during deploys and rollbacks (integration tests, load through nginx)" \
    "Target: no failed request during berth's deploys and rollbacks, on both runtimes; the seed's stop/start deploy of the same app is shown beside them." \
    bench/zero_downtime.sh "$@")
LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT
if ! cargo test -q -p berth --test all -- --nocapture --test-threads 1 "${FILTERS[@]}" >"$LOG" 2>&1; then
    tail -40 "$LOG" >&2
    echo "bench/zero_downtime.sh: the tests failed (log above)" >&2
    exit 1
fi
printf '%s\n\n' "$HEADER"
echo "From \`cargo test -p berth --test all -- --nocapture --test-threads 1 ${FILTERS[*]}\`; each test's summary line:"
echo
python3 - "$LOG" <<'PY'
import re, sys
rows = []
for line in open(sys.argv[1], errors="replace"):
    m = re.match(r"^(zero-downtime|compose zero-downtime|stop/start deploy): (.*)$", line.strip())
    if not m:
        continue
    label, rest = m.groups()
    n = re.search(r"(\d+) requests", rest)
    f = re.search(r"(\d+) failed", rest)
    rows.append((label, int(n.group(1)) if n else None, int(f.group(1)) if f else None, rest))
if not rows:
    sys.exit("bench/zero_downtime.sh: no test printed a summary line (did the filters match any test?)")
print("| test | requests | failed | summary as printed |")
print("|---|---:|---:|---|")
for label, n, f, rest in rows:
    print(f"| {label} | {n if n is not None else '?'} | {f if f is not None else '?'} | {rest} |")
print()
for label, n, f, _ in rows:
    if label == "stop/start deploy":
        share = f"{100 * f / n:.0f}%" if n else "?"
        print(f"The seed's stop/start deploy failed {f} of {n} requests ({share}).  ")
    else:
        ok = f == 0 and (n or 0) > 0
        print(f"{label}: {f} of {n} requests failed: {'**met**' if ok else '**not met**'}.  ")
PY
