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
if ! cargo test -p berth --test all -- --nocapture --test-threads 1 "${FILTERS[@]}" >"$LOG" 2>&1; then
    tail -40 "$LOG" >&2
    echo "bench/zero_downtime.sh: the tests failed (log above)" >&2
    exit 1
fi
printf '%s\n\n' "$HEADER"
echo "From \`cargo test -p berth --test all -- --nocapture --test-threads 1 ${FILTERS[*]}\`: every test passed (a zero-downtime test fails on any failed request); what each printed:"
echo
python3 - "$LOG" <<'PY'
import re, sys
tests, lines = [], []
for line in open(sys.argv[1], errors="replace"):
    line = line.rstrip("\n")
    # With --nocapture a test's own lines land after "test NAME ... ", on its line or the next.
    t = re.match(r"^test (\S+) \.\.\. ", line)
    if t:
        tests.append((t.group(1), "ok"))
    m = re.search(r"((?:compose )?zero-downtime(?: \([a-z]+\))?|stop/start deploy): (.*)$", line.strip())
    if m:
        lines.append(m.groups())
if not tests:
    sys.exit("bench/zero_downtime.sh: no test ran (do the filters match any test?)")
# The script only gets here when cargo test passed: every test that ran is ok.
print("| test | result |")
print("|---|---|")
for name, result in tests:
    print(f"| `{name}` | {result} |")
print()
if lines:
    print("| printed by | line |")
    print("|---|---|")
    for label, rest in lines:
        print(f"| {label} | {rest.replace('|', '/')} |")
    print()
for label, rest in lines:
    n = re.search(r"(\d+) requests", rest)
    f = re.search(r"(\d+) failed", rest)
    if not (n and f):
        continue
    n, f = int(n.group(1)), int(f.group(1))
    if label == "stop/start deploy":
        print(f"The seed's stop/start deploy failed {f} of {n} requests ({100 * f / n:.0f}%).  " if n else "The seed's stop/start deploy sent no request.  ")
    else:
        print(f"{label}: {f} of {n} requests failed: {'**met**' if f == 0 and n > 0 else '**not met**'}.  ")
zd = [name for name, _ in tests if "zero_dropped" in name]
ok = all(r == "ok" for _, r in tests)
print(f"Target: {'**met**' if ok and zd else '**not met**'}: {len(zd)} zero-downtime test(s) passed"
      f"{'' if zd else ' (none ran)'}.")
PY
