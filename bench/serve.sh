#!/usr/bin/env bash
# berth serve under load: 20 products deployed as local processes (demo-app), then
#   1. /metrics and /api/products with a closed-loop keep-alive load generator
#      (bench/loadgen.rs): requests/s and latency percentiles;
#   2. a soak: the prober runs for SOAK_MINUTES while the RSS of berth serve is
#      sampled every minute.
# Usage: bench/serve.sh [LOAD_SECONDS=10] [SOAK_MINUTES=10] [CONNECTIONS=8]
# Prints Markdown tables (what bench/RESULTS.md holds).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
LOAD_SECONDS=${1:-10}
SOAK_MINUTES=${2:-10}
CONNS=${3:-8}
PRODUCTS=20
INTERVAL=500ms
TARGET=${CARGO_TARGET_DIR:-$PWD/target}
cargo build -q --release -p berth
BERTH=$TARGET/release/berth
HEADER=$(bench_header "\`berth serve\`: /metrics and /api/products under load; RSS over a ${SOAK_MINUTES}-minute probe soak" \
    "Targets: at least 2,000 req/s for \`/metrics\` and \`/api/products\` with 20 products; memory flat while probing. The load generator is \`bench/loadgen.rs\` (closed loop, keep-alive connections)." \
    bench/serve.sh "$@")
WORK=$(mktemp -d)
SERVE_PID=
cleanup() {
    [ -n "$SERVE_PID" ] && kill "$SERVE_PID" 2>/dev/null || true
    # Every demo-app the deploys started (each leads its own process group).
    for f in "$WORK"/repo/.berth/run/*/*/*.json; do
        [ -f "$f" ] || continue
        pid=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["pid"])' "$f")
        kill -9 -- "-$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
rustc -O --edition 2021 bench/loadgen.rs -o "$WORK/loadgen" 2>/dev/null

# A free even port below the ephemeral range, and a run of PRODUCTS free ports after another.
free_port() { python3 -c '
import random, socket, sys
n = int(sys.argv[1])
while True:
    p = random.randrange(20000, 30000)
    ok = True
    for q in range(p, p + n):
        s = socket.socket()
        try: s.bind(("127.0.0.1", q))
        except OSError: ok = False
        finally: s.close()
        if not ok: break
    if ok: print(p); break' "$1"; }
BASE=$(free_port $PRODUCTS)
PORT=$(free_port 1)

mkdir -p "$WORK/repo"
cd "$WORK/repo"
git init -q
git config user.name bench
git config user.email bench@localhost
{
    printf '[project]\nname = "bench-%s-products"\n\n[conventions]\nrequire_task = false\n\n' $PRODUCTS
    printf '[deploy]\nruntime = "local"\ndrain = "0s"\n\n'
    for i in $(seq 1 $PRODUCTS); do
        printf '[products.p%02d]\npaths = ["products/p%02d/**"]\n\n' "$i" "$i"
        printf '[products.p%02d.services.server]\ncommand = "demo-app"\nport = 8080\nhost_port = %d\n' "$i" $((BASE + i - 1))
        printf 'env = { PRODUCT_ID = "p%02d" }\n' "$i"
        printf 'health = { path = "/api/health", interval = "%s", timeout = "1s", deadline = "30s" }\n\n' "$INTERVAL"
        mkdir -p "products/p$(printf %02d "$i")"
        echo "p$i" > "products/p$(printf %02d "$i")/README.md"
    done
} > berth.toml
printf '.berth/\n' > .gitignore
git add -A
git commit -qm "chore: $PRODUCTS products (TASK-1-bench)"
for i in $(seq 1 $PRODUCTS); do
    BERTH_OPERATOR=bench "$BERTH" deploy "p$(printf %02d "$i")" --yes >/dev/null 2>"$WORK/deploy.log" \
        || { cat "$WORK/deploy.log"; exit 1; }
done

"$BERTH" serve --listen "127.0.0.1:$PORT" --refresh 5s 2>"$WORK/serve.log" &
SERVE_PID=$!
for _ in $(seq 1 100); do
    curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
    sleep 0.1
done
# Wait until every product has been probed up.
for _ in $(seq 1 100); do
    up=$(curl -fs "http://127.0.0.1:$PORT/metrics" | grep -c '^berth_product_up{.*} 1$' || true)
    [ "$up" -eq $PRODUCTS ] && break
    sleep 0.2
done
printf '%s\n\n' "$HEADER"
echo "Setup: $PRODUCTS products deployed as local demo-app processes, each probed every $INTERVAL;"
echo "\`berth serve\` (release build) on loopback, collector refresh 5 s; $(nproc) cores shared by the server, the load"
echo "generator and the $PRODUCTS demo-apps; $CONNS keep-alive connections, ${LOAD_SECONDS} s per endpoint."
echo "/metrics is $(curl -fs "http://127.0.0.1:$PORT/metrics" | wc -c) bytes ($(curl -fs "http://127.0.0.1:$PORT/metrics" | grep -vc '^#') samples); /api/products is $(curl -fs "http://127.0.0.1:$PORT/api/products" | wc -c) bytes."
echo
echo "| endpoint | connections | requests | errors | req/s | p50 ms | p90 ms | p99 ms | max ms |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
for path in /metrics /api/products /; do
    "$WORK/loadgen" "127.0.0.1:$PORT" "$path" "$CONNS" "$LOAD_SECONDS" | tee -a "$WORK/load.md"
done
echo
rss() { awk '/^VmRSS/ {print $2}' "/proc/$SERVE_PID/status"; }
probes() { curl -fs "http://127.0.0.1:$PORT/metrics" | awk '/^berth_probe_duration_seconds_count/ {s += $2} END {print s}'; }
echo "Soak: $SOAK_MINUTES minutes of probing ($PRODUCTS services every $INTERVAL), no other load; RSS of berth serve:"
echo
echo "| minute | RSS KiB | probes so far |"
echo "|---:|---:|---:|"
echo "| 0 | $(rss) | $(probes) |" | tee -a "$WORK/soak.md"
for m in $(seq 1 "$SOAK_MINUTES"); do
    sleep 60
    echo "| $m | $(rss) | $(probes) |" | tee -a "$WORK/soak.md"
done
echo
# Conclusions from the rows above: req/s and errors against the target, RSS growth.
python3 - "$WORK/load.md" "$WORK/soak.md" <<'PY'
import sys
load = [[c.strip() for c in l.strip().strip("|").split("|")] for l in open(sys.argv[1]) if l.startswith("|")]
for row in load:
    path, errors, rps = row[0], int(row[3]), float(row[4])
    if path in ("`/metrics`", "`/api/products`"):
        verdict = "**met**" if rps >= 2000 and errors == 0 else "**not met**"
        print(f"{path}: {rps:.0f} req/s ({rps / 2000:.1f}x the 2,000 req/s target), {errors} errors: {verdict}.  ")
soak = [[int(c) for c in l.strip().strip("|").split("|")] for l in open(sys.argv[2]) if l.startswith("|")]
first, last = soak[0][1], soak[-1][1]
line = f"RSS over the soak: {first} KiB at minute 0, {last} KiB at minute {soak[-1][0]} ({last - first:+d} KiB, {100 * (last - first) / first:+.1f}%)"
if len(soak) > 1:
    line += f"; {soak[-1][1] - soak[-2][1]:+d} KiB in the last minute"
print(line + f", after {soak[-1][2]} probes.")
PY
