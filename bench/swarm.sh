#!/usr/bin/env bash
# Deploy and rollback wall time on swarm next to compose, for the same product (bestays
# of the example, demo-app booting in 300 ms), N of each per runtime in one run, and
# berth's own share of a deploy: wall time minus the docker/nginx/git commands it ran
# (BERTH_LOG=berth::cmd=trace), its health-check waits and the drain. Rollbacks are
# within the warm-standby window (the previous version still runs: health check, switch).
# The ignored integration test `swarm::swarm_bench` measures and prints one line per
# operation (the swarm: three dockerd in network namespaces, berth_testkit::swarm); this
# script turns those lines into the section's table.
# Usage: bench/swarm.sh [N]   (default 5; compose needs a Docker Engine: DOCKER_HOST, or
#   bench/run.sh starts one; the swarm is started by the test, as root)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
N=${1:-5}
HEADER=$(bench_header "Swarm next to compose: deploy and rollback wall time, berth's overhead" \
    "Targets: a rollback to a retained version at most 3 s median on swarm; berth's own overhead under 5% of the deploy wall time; median of $N, both runtimes in one run; berth is the release build users install (\`cargo build --release\`), run by the integration test's harness." \
    bench/swarm.sh "$@")
LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT
# What users install: the release binary (the test harness runs it instead of its debug build).
cargo build --release --locked -q -p berth
if ! BERTH_BENCH_BIN=$PWD/target/release/berth BERTH_BENCH_N=$N cargo test -p berth --test all -- --ignored --nocapture --test-threads 1 swarm::swarm_bench >"$LOG" 2>&1; then
    tail -40 "$LOG" >&2
    echo "bench/swarm.sh: the benchmark failed (log above)" >&2
    exit 1
fi
printf '%s\n\n' "$HEADER"
python3 - "$LOG" "$N" <<'PY'
import re, sys
deploys, rollbacks = {}, {}
for line in open(sys.argv[1], errors="replace"):
    m = re.search(r"swarm bench: (\w+) deploy wall (\d+) ms, external (\d+) ms, health (\d+) ms, drain (\d+) ms, swarm (\d+) ms, steps (.*)$", line.rstrip("\n"))
    if m:
        def key(name):
            # The same step in every run: no version, tag, slot or registry address.
            name = re.sub(r"\b[0-9a-f]{12}\b", "<version>", name)
            name = re.sub(r"\S+-deploy-\d{8}-\d{6}", "<tag>", name)
            name = re.sub(r"\b(blue|green)\b", "<slot>", name)
            return re.sub(r"\d+\.\d+\.\d+\.\d+:\d+", "<registry>", name)
        steps = dict((key(k), float(v)) for k, v in (s.rsplit("=", 1) for s in m.group(7).split("|") if "=" in s))
        deploys.setdefault(m.group(1), []).append(tuple(float(x) for x in m.groups()[1:6]) + (steps,))
    m = re.search(r"swarm bench: (\w+) rollback wall (\d+) ms, warm (\w+)", line)
    if m:
        rollbacks.setdefault(m.group(1), []).append((float(m.group(2)), m.group(3) == "true"))
if not deploys or not rollbacks:
    sys.exit("bench/swarm.sh: the benchmark printed no result")
def median(xs):
    xs = sorted(xs); n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2
kinds = [k for k in ("Compose", "Swarm") if k in deploys]
print("Wall time of each command (median, min-max); a rollback within the warm-standby window.")
print("berth itself: deploy wall minus the external commands it ran (summed; commands run in")
print("parallel count twice), its health-check waits (the step less its commands), the drain (the drain step, and the")
print("drain an idle slot that served moments ago gets before it is replaced: the rollback just before each deploy) and")
print("the sleeps of its waits for Swarm until Swarm had reached the awaited state (the task's own status time: a job")
print("ended, the slot's tasks running). berth's reaction after that moment, and every other sleep, count as berth's.")
print()
print("| | " + " | ".join(k.lower() for k in kinds) + " |")
print("|---|" + "---:|" * len(kinds))
def cell(xs):
    return f"{median(xs) / 1000:.2f} s ({min(xs) / 1000:.2f}-{max(xs) / 1000:.2f})"
print("| deploy | " + " | ".join(cell([d[0] for d in deploys[k]]) for k in kinds) + " |")
print("| rollback (warm standby) | " + " | ".join(cell([r[0] for r in rollbacks.get(k, [])]) if rollbacks.get(k) else "-" for k in kinds) + " |")
own = {}
for k in kinds:
    own[k] = [w - e - h - d - s for w, e, h, d, s, _ in deploys[k]]
print("| deploy: external commands | " + " | ".join(f"{median([d[1] for d in deploys[k]]) / 1000:.2f} s" for k in kinds) + " |")
print("| deploy: health-check waits | " + " | ".join(f"{median([d[2] for d in deploys[k]]) / 1000:.2f} s" for k in kinds) + " |")
print("| deploy: drain | " + " | ".join(f"{median([d[3] for d in deploys[k]]) / 1000:.2f} s" for k in kinds) + " |")
print("| deploy: slept while Swarm worked | " + " | ".join(f"{median([d[4] for d in deploys[k]]) / 1000:.2f} s" for k in kinds) + " |")
print("| deploy: berth itself | " + " | ".join(f"{median(own[k]) / 1000:.2f} s ({100 * median(own[k]) / median([d[0] for d in deploys[k]]):.1f}%)" for k in kinds) + " |")
print("| runs | " + " | ".join(str(len(deploys[k])) for k in kinds) + " |")
print()
steps = sorted({s for k in kinds for d in deploys[k] for s in d[5]}, key=lambda s: list(deploys[kinds[-1]][-1][5]).index(s) if s in deploys[kinds[-1]][-1][5] else 99)
print("Deploy steps (median ms):")
print()
print("| step | " + " | ".join(k.lower() for k in kinds) + " |")
print("|---|" + "---:|" * len(kinds))
for s in steps:
    print(f"| {s} | " + " | ".join(f"{median([d[5][s] for d in deploys[k] if s in d[5]]):.0f}" if any(s in d[5] for d in deploys[k]) else "-" for k in kinds) + " |")
print()
sw = rollbacks.get("Swarm")
if sw:
    cold = sum(1 for _, warm in sw if not warm)
    med = median([r[0] for r in sw]) / 1000
    print(f"Rollback on swarm: median {med:.2f} s; target 3 s: {'**met**' if med <= 3 else '**not met**'}"
          + (f" ({cold} of {len(sw)} were not warm)" if cold else "") + ".  ")
for k in kinds:
    share = 100 * median(own[k]) / median([d[0] for d in deploys[k]])
    print(f"berth's overhead on {k.lower()}: {share:.1f}% of the deploy wall; target under 5%: {'**met**' if share < 5 else '**not met**'}.  ")
PY
