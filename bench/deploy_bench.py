#!/usr/bin/env python3
"""Rollback time and berth's own overhead on the compose runtime (a real Docker Engine).

Side by side in one run:
  * berth rollback to the retained image: time from the command's start until the
    previous version answers through nginx;
  * the seed's rollback: `git checkout <tag>` + `docker compose build` + `docker compose up -d`
    (stop/start of the one container set), until the previous version answers;
  * berth's overhead: deploy wall time minus the time of the docker/nginx/git commands it
    ran (from BERTH_LOG=trace), minus waiting for the service to become healthy and the drain.
Usage: bench/deploy_bench.py BERTH_BINARY RUNS
"""
import json, os, re, shutil, socket, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BERTH = sys.argv[1]
RUNS = int(sys.argv[2]) if len(sys.argv) > 2 else 5

def run(cmd, cwd, env=None, check=True):
    e = dict(os.environ, BERTH_OPERATOR="bench", NO_COLOR="1")
    e.update(env or {})
    p = subprocess.run(cmd, cwd=cwd, env=e, capture_output=True, text=True)
    if check and p.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{p.stdout}\n{p.stderr}")
    return p

def free_pair():
    import random
    while True:
        p = random.randint(20000, 31000)
        try:
            for q in (p, p + 1):
                s = socket.socket(); s.bind(("127.0.0.1", q)); s.close()
            return p
        except OSError:
            continue

def version_at(port, host):
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=2)
        s.sendall(f"GET /api/health HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        s.close()
        m = re.search(rb'"version":"([^"]+)"', data)
        return m.group(1).decode() if m and b" 200 " in data.split(b"\r\n")[0] else None
    except OSError:
        return None

def until_answers(port, host, version, t0, limit=120):
    while time.monotonic() - t0 < limit:
        if version_at(port, host) == version:
            return time.monotonic() - t0
        time.sleep(0.01)
    sys.exit(f"{version} never answered on {port}")

def median(xs):
    xs = sorted(xs); n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2

work = Path(tempfile.mkdtemp(prefix="berth-bench-"))
repo = work / "repo"
shutil.copytree(ROOT / "examples/multi-product", repo)
static = work / "demo-app"
run(["rustc", "--edition", "2024", "-O", "-C", "target-feature=+crt-static", "--target", "x86_64-unknown-linux-gnu",
     str(ROOT / "examples/demo-app/src/main.rs"), "-o", str(static)], work)
http_port = free_pair()
m = (repo / "berth.toml").read_text()
m = m.replace('name = "bestays-monorepo"', f'name = "bench{os.getpid()}"')
m = m.replace('nginx_config = "deploy/prod/nginx/nginx.conf"', f'nginx_config = "deploy/dev/nginx/nginx.conf"\nhttp_port = {http_port}')
m = m.replace("[secret_scan]", '[deploy]\nruntime = "compose"\nslot_port_offset = 1\ndrain = "500ms"\n\n[secret_scan]')
for old in ["host_port = 8011", "host_port = 5183", "host_port = 8012", "host_port = 5184"]:
    m = m.replace(old, f"host_port = {free_pair()}", 1)
m = m.replace('migrate = "demo-app migrate"', 'migrate = "/demo-app migrate"')
m = m.replace('interval = "2s"', 'interval = "100ms"')
m = m.replace('deadline = "60s" }', 'deadline = "60s", command = ["/demo-app", "health"] }')
(repo / "berth.toml").write_text(m)
for app in ["apps/server", "apps/frontend"]:
    shutil.copy(static, repo / app / "demo-app")
for df in ["docker/server.Dockerfile", "docker/frontend.Dockerfile"]:
    (repo / df).write_text('FROM scratch\nCOPY demo-app /demo-app\nCMD ["/demo-app"]\n')
git = lambda *a: run(["git", "-c", "user.name=bench", "-c", "user.email=b@b", *a], repo)
git("init", "-q", "-b", "main")
run([BERTH, "render", "--env", "dev"], repo)
# The declared secrets get (fake) values, from the environment, as an operator's CI would
# give them: deploys refuse while one is missing.
keys = {"BENCH_CLERK_SECRET_KEY": "sk_test_bench-not-a-real-key",
        "BENCH_OPENROUTER_API_KEY": "sk-or-v1-bench-not-a-real-key",
        "BENCH_VITE_CLERK_PUBLISHABLE_KEY": "pk_test_bench-not-a-real-key"}
for product in ["bestays", "realestate"]:
    run([BERTH, "secrets", "import", product, "--from-env", "BENCH_", "--require-all"], repo, env=keys)
git("add", "-A"); git("commit", "-qm", "chore: bench (TASK-0-bench-bestays)")
run([BERTH, "deploy", "bestays", "--yes"], repo)
v1 = git("rev-parse", "--short=12", "HEAD").stdout.strip()
tag1 = run(["git", "tag", "--sort=-refname"], repo).stdout.split()[0]
(repo / "products/bestays/b.md").write_text("x")
git("add", "-A"); git("commit", "-qm", "feat: b (TASK-1-b-bestays)")
run([BERTH, "deploy", "bestays", "--yes"], repo)
v2 = git("rev-parse", "--short=12", "HEAD").stdout.strip()

berth_times, overheads = [], []
for i in range(RUNS):
    t0 = time.monotonic()
    p = subprocess.Popen([BERTH, "rollback", "bestays", "--yes", "--to", tag1], cwd=repo, env=dict(os.environ, BERTH_OPERATOR="bench"),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    berth_times.append(until_answers(http_port, "bestays.app", v1, t0))
    p.wait()
    # Forward again, measured for overhead: every external command's time from the trace log.
    t0 = time.monotonic()
    out = run([BERTH, "deploy", "bestays", "--yes", "--format", "json"], repo, env={"BERTH_LOG": "berth::cmd=trace"})
    wall = (time.monotonic() - t0) * 1000
    steps = dict((name, ms) for name, ms in json.loads(out.stdout)["steps"])
    ext = sum(float(x) * {"ms": 1, "s": 1000, "µs": 0.001, "ns": 1e-6}[u]
              for x, u in re.findall(r"-> exited with code 0 in ([0-9.]+)(ms|µs|ns|s)\b", out.stderr))
    waits = sum(ms for name, ms in steps.items() if name.startswith("health-check") or name.startswith("switch") or name.startswith("drain"))
    # Switch and drain include external commands too: count the commands once.
    switch_and_drain_ext = 0
    overheads.append((wall, ext, steps))

# The seed's rollback: checkout the old tag, rebuild, restart (one container set, no proxy).
seed_port = free_pair()
seed = work / "seed"
shutil.copytree(repo, seed, ignore=shutil.ignore_patterns(".berth"))
compose = seed / "seed-compose.yml"
compose.write_text(f"""services:
  server:
    build: {{ context: apps/server, dockerfile: ../../docker/server.Dockerfile }}
    image: bench-seed-server:current
    environment: {{ PORT: "8011", BERTH_VERSION: "${{SEED_VERSION}}" }}
    ports: ["127.0.0.1:{seed_port}:8011"]
    init: true
""")
def seed_deploy(ref, version):
    run(["git", "checkout", "-q", ref], seed)
    env = {"SEED_VERSION": version}
    run(["docker", "compose", "-p", f"seed{os.getpid()}", "-f", str(compose), "build"], seed, env)
    run(["docker", "compose", "-p", f"seed{os.getpid()}", "-f", str(compose), "up", "-d"], seed, env)
seed_deploy("main", v2)
until_answers(seed_port, "x", v2, time.monotonic())
seed_times = []
for i in range(RUNS):
    t0 = time.monotonic()
    seed_deploy(tag1, v1)
    seed_times.append(until_answers(seed_port, "x", v1, t0))
    seed_deploy("main", v2)
    until_answers(seed_port, "x", v2, time.monotonic())
run(["docker", "compose", "-p", f"seed{os.getpid()}", "-f", str(compose), "down", "--rmi", "all", "-t", "1"], seed, check=False)

print(f"Runs: {RUNS}; demo-app boots instantly; compose runtime; nginx in front; drain 500 ms.")
print()
print("| rollback to the previous version | median | min | max | ratio to berth |")
print("|---|---:|---:|---:|---:|")
b, s = median(berth_times), median(seed_times)
print(f"| `berth rollback` (retained image, blue/green switch) | {b:.2f} s | {min(berth_times):.2f} s | {max(berth_times):.2f} s | 1.0x |")
print(f"| seed: `git checkout` + `docker compose build` + `up -d` | {s:.2f} s | {min(seed_times):.2f} s | {max(seed_times):.2f} s | {s / b:.1f}x |")
print()
print("berth's own overhead in a deploy (median of the runs): wall time minus the docker/nginx/git commands it ran")
print("(from BERTH_LOG=trace), minus health-check waits and the drain sleep.")
print()
walls = [w for w, _, _ in overheads]
exts = [e for _, e, _ in overheads]
healths = [sum(ms for n, ms in st.items() if n.startswith("health-check")) for _, _, st in overheads]
drains = [500.0] * len(overheads)
berth_own = [w - e - h - d for w, e, h, d in zip(walls, exts, healths, drains)]
print("| deploy | median |")
print("|---|---:|")
print(f"| wall time | {median(walls):.0f} ms |")
print(f"| external commands (docker compose, docker, nginx, git) | {median(exts):.0f} ms |")
print(f"| waiting for health checks | {median(healths):.0f} ms |")
print(f"| drain (configured) | 500 ms |")
print(f"| berth itself | {median(berth_own):.0f} ms ({100 * median(berth_own) / median(walls):.1f}% of wall) |")
print()
share = 100 * median(berth_own) / median(walls)
print(f"Rollback target (median at most 3 s): {'**met**' if b <= 3 else '**not met**'} ({b:.2f} s). "
      f"Overhead target (berth itself at most 10% of the deploy): {'**met**' if share <= 10 else '**not met**'} ({share:.1f}%).")
print()
print("Per step (last run):")
print()
print("| step | ms |")
print("|---|---:|")
for name, ms in overheads[-1][2].items():
    print(f"| {name} | {ms} |")
for slot in ["blue", "green"]:
    for product in ["bestays"]:
        subprocess.run(["docker", "compose", "-p", f"bench{os.getpid()}-{product}-{slot}", "-f", str(repo / f"deploy/dev/compose/{product}.yml"),
                        "down", "--rmi", "all", "-t", "1"], cwd=repo, capture_output=True)
subprocess.run(["nginx", "-p", str(repo), "-c", "deploy/dev/nginx/nginx.conf", "-s", "stop"], capture_output=True)
subprocess.run(["docker", "network", "rm", f"bench{os.getpid()}-shared"], capture_output=True)
shutil.rmtree(work, ignore_errors=True)
