#!/usr/bin/env bash
# What one collector refresh of `berth serve` costs with a long audit log, for this
# tree and optionally an older commit (the "before"): a repository whose
# .berth/audit.jsonl holds LINES records is served with --refresh 2s, then
#   - first answer: from start to the first /healthz answer (the first refresh,
#     a full read of the log, runs before the server listens);
#   - CPU per refresh: the CPU time of berth serve and the programs it waited for
#     (git), /proc/PID/stat, over the refreshes seen in WINDOW seconds (a refresh
#     is seen when /api/products' collected_unix changes) while one deploy is
#     appended to the log every second;
#   - exact: whether berth_deploys_total then sums to the deploys in the log.
# Two logs: as berth writes them (10 records a deploy, one of them the outcome)
# and one of deploy outcomes only (every line parsed).
# Usage: bench/serve_refresh.sh [LINES=200000] [BEFORE_COMMIT] [WINDOW=20]
# Prints a Markdown table (what bench/RESULTS.md holds).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
LINES=${1:-200000}
BEFORE=${2:-}
WINDOW=${3:-20}
TARGET=${CARGO_TARGET_DIR:-$PWD/target}
HEADER=$(bench_header "One collector refresh of \`berth serve\` with a $LINES-record audit log${BEFORE:+, this tree vs $BEFORE}" \
    "Goal: a refresh costs the same with a long audit log as with a short one (only what was appended is read); the first answer comes after one full read." \
    bench/serve_refresh.sh "$@")
cargo build -q --release -p berth
NOW_BIN=$TARGET/release/berth
NOW_REV=$(git rev-parse --short HEAD)
if [ -n "$(git status --porcelain -- crates Cargo.lock)" ]; then NOW_REV="$NOW_REV+changes"; fi
BUILDS=("$NOW_REV=$NOW_BIN")
if [ -n "$BEFORE" ]; then
    rev=$(git rev-parse --short "$BEFORE")
    dir=bench/.cache/serve-refresh/$rev
    if [ ! -x "$dir/target/release/berth" ]; then
        mkdir -p "$dir/src"
        git archive "$rev" | tar -x -C "$dir/src"
        (cd "$dir/src" && CARGO_TARGET_DIR="$PWD/../target" cargo build -q --release -p berth)
    fi
    BUILDS=("$rev=$PWD/$dir/target/release/berth" "${BUILDS[@]}")
fi

WORK=$(mktemp -d)
SERVE_PID=
cleanup() {
    [ -n "$SERVE_PID" ] && kill "$SERVE_PID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

# The log generator and the measurement.
cat > "$WORK/bench.py" <<'PY'
import json, os, random, sys, threading, time, urllib.request

STEPS = ["lock", "resolve-version", "build", "start", "health-check", "switch", "drain", "tag", "unlock"]

def stamp(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))

def deploy(f, n, with_steps):
    """One deploy of p1 or p2 as berth records it (every 7th fails, every 11th is a rollback)."""
    product = "p1" if n % 2 else "p2"
    base = {"product": product, "version": f"{n:012x}", "commit": f"{n:040x}", "operator": "bench"}
    t = 1_700_000_000 + n * 60
    tag = f"{product}-deploy-{n}"
    if with_steps:
        for s in STEPS:
            r = dict(base, step=s, detail=f"{s} of {product}", duration_ms=n % 900, at=stamp(t),
                     tag=tag, tasks=[f"TASK-{n}-x-{product}"], result="ok")
            f.write(json.dumps(r, separators=(",", ":")) + "\n")
    ok = n % 7 != 0
    r = dict(base, step="deploy", result="ok" if ok else "failed", tag=tag if ok else "",
             tasks=[f"TASK-{n}-x-{product}"], rollback_of=f"{product}-deploy-{n - 1}" if n % 11 == 0 else None,
             duration_ms=(n * 7919) % 400_000, at=stamp(t))
    if not ok:
        r["failed_step"] = "health-check"
    f.write(json.dumps(r, separators=(",", ":")) + "\n")

def generate(path, lines, with_steps):
    per = 10 if with_steps else 1
    with open(path, "w") as f:
        for n in range(1, lines // per + 1):
            deploy(f, n, with_steps)
    return lines // per

def get(port, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=60) as r:
        return r.read().decode()

def cpu(pid):
    """utime + stime + cutime + cstime of pid, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")

def rss(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS"))

def measure(pid, port, window, path, deploys, with_steps):
    taken = lambda: json.loads(get(port, "/api/products"))["collected_unix"]
    t = taken()
    while taken() == t:
        time.sleep(0.02)
    t = taken()
    c0 = cpu(pid)
    stop = time.time() + window
    n = deploys
    refreshes, c1 = 0, c0
    next_append = time.time()
    while time.time() < stop:
        if time.time() >= next_append:
            n += 1
            with open(path, "a") as f:
                deploy(f, n, with_steps)
            next_append += 1
        time.sleep(0.02)
        x = taken()
        if x != t:
            refreshes, t, c1 = refreshes + 1, x, cpu(pid)
    # Let one more refresh read the last appends, then compare the totals.
    t = taken()
    while taken() == t:
        time.sleep(0.02)
    metrics = get(port, "/metrics")
    total = sum(float(l.split()[-1]) for l in metrics.splitlines() if l.startswith("berth_deploys_total{"))
    return (c1 - c0) / max(refreshes, 1), refreshes, int(total) == n, n, rss(pid)

if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "generate":
        print(generate(sys.argv[2], int(sys.argv[3]), sys.argv[4] == "steps"))
    else:
        pid, port, window, path, deploys, kind = sys.argv[2:8]
        per, n_refresh, exact, n, kib = measure(int(pid), int(port), float(window), path, int(deploys), kind == "steps")
        print(f"{per * 1000:.0f} {n_refresh} {'yes' if exact else 'NO'} {n} {kib}")
PY

# A random port below the ephemeral range (32768+), never bound and released to test it:
# when berth serve cannot listen on it, it is started again on another.
random_port() { echo $((20000 + RANDOM % 12000)); }

mkdir -p "$WORK/repo/.berth"
cd "$WORK/repo"
git init -q
git config user.name bench
git config user.email bench@localhost
{
    printf '[project]\nname = "refresh-bench"\n\n[conventions]\nrequire_task = false\n\n[deploy]\nruntime = "local"\n\n'
    for p in p1 p2; do
        printf '[products.%s]\npaths = ["%s/**"]\n\n' "$p" "$p"
        printf '[products.%s.services.server]\ncommand = "demo-app"\nport = 8080\nhost_port = %d\n\n' "$p" "$(random_port)"
    done
} > berth.toml
mkdir p1 p2 && echo 1 > p1/README && echo 2 > p2/README
printf '.berth/\n' > .gitignore
git add -A
git commit -qm "chore: two products (TASK-1-bench)"

printf '%s\n\n' "$HEADER"
echo "A log of $LINES records in .berth/audit.jsonl; \`berth serve --refresh 2s\` (release build), $(nproc) cores; one deploy"
echo "appended every second for ${WINDOW} s. CPU per refresh: berth serve's and the git it runs, averaged over the refreshes seen."
echo
echo "| build | audit log | deploys | log MB | first answer s | CPU per refresh ms | refreshes | totals exact | RSS KiB |"
echo "|---|---|---:|---:|---:|---:|---:|---|---:|"
for kind in steps outcomes; do
    for build in "${BUILDS[@]}"; do
        label=${build%%=*}
        bin=${build#*=}
        deploys=$(python3 "$WORK/bench.py" generate .berth/audit.jsonl "$LINES" "$kind")
        mb=$(python3 -c "import os; print(f'{os.path.getsize(\".berth/audit.jsonl\") / 1e6:.0f}')")
        started=0
        for _ in $(seq 1 10); do
            port=$(random_port)
            start=$(date +%s.%N)
            "$bin" serve --listen "127.0.0.1:$port" --refresh 2s 2>"$WORK/serve.log" &
            SERVE_PID=$!
            until curl -fs "http://127.0.0.1:$port/healthz" >/dev/null 2>&1; do
                kill -0 "$SERVE_PID" 2>/dev/null || break
                sleep 0.01
            done
            if kill -0 "$SERVE_PID" 2>/dev/null; then started=1; break; fi
            SERVE_PID=
        done
        [ "$started" -eq 1 ] || { cat "$WORK/serve.log" >&2; echo "berth serve did not start on any of 10 ports" >&2; exit 1; }
        first=$(python3 -c "import time; print(f'{time.time() - $start:.2f}')")
        read -r per refreshes exact total kib < <(python3 "$WORK/bench.py" measure "$SERVE_PID" "$port" "$WINDOW" .berth/audit.jsonl "$deploys" "$kind")
        kill "$SERVE_PID"
        wait "$SERVE_PID" 2>/dev/null || true
        SERVE_PID=
        what=$([ "$kind" = steps ] && echo "as berth writes it (10 records a deploy)" || echo "deploy outcomes only")
        echo "| $label | $what | $deploys | $mb | $first | $per | $refreshes | $exact ($total) | $kib |"
        printf '%s\t%s\t%s\t%s\t%s\n' "$label" "$kind" "$per" "$exact" "$kib" >> "$WORK/rows.tsv"
    done
done
echo
# Conclusions from the rows above.
python3 - "$WORK/rows.tsv" <<'PY'
import sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
builds = list(dict.fromkeys(r[0] for r in rows))
kinds = {"steps": "as berth writes it", "outcomes": "deploy outcomes only"}
for kind, what in kinds.items():
    these = {r[0]: r for r in rows if r[1] == kind}
    parts = [f"{b}: {these[b][2]} ms CPU per refresh, {these[b][4]} KiB RSS" for b in builds if b in these]
    line = f"Log {what}: " + "; ".join(parts)
    if len(builds) == 2 and all(b in these for b in builds):
        a, b = (float(these[x][2]) for x in builds)
        if b > 0:
            line += f" ({builds[0]} costs {a / b:.1f}x {builds[1]} per refresh)"
    print(line + ".  ")
exact = all(r[3] == "yes" for r in rows)
print(f"Totals matched the log on {'every run' if exact else 'NOT every run'} ({sum(r[3] == 'yes' for r in rows)} of {len(rows)}).")
PY
