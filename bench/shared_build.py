#!/usr/bin/env python3
"""One build per shared image: both products of the example deployed after a change to
apps/server, on the compose runtime (a real Docker Engine).

Side by side in one run, each in a project of its own:
  * before: BERTH_BUILD_SHARING=off, every product builds each of its images;
  * after: images are found by their build key (context tree, Dockerfile, build args),
    so the server changed once is built once and tagged for the other product, and the
    unchanged frontend is tagged from the version before.
Builds are counted from berth's command trace (BERTH_LOG=berth::cmd=trace: each
`docker build`, and each `docker compose ... build` of older berths).
Usage: bench/shared_build.py BERTH_BINARY RUNS
"""
import os, re, shutil, socket, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BERTH = sys.argv[1]
RUNS = int(sys.argv[2]) if len(sys.argv) > 2 else 3
PRODUCTS = ["bestays", "realestate"]


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


def builds(stderr):
    return [l for l in stderr.splitlines()
            if l.startswith("TRACE ") and "berth-probe" not in l
            and ("docker build " in l or " build -> " in l)]


def seconds(line):
    """The time a traced command took (`-> exited with code 0 in 1.2s`), in seconds."""
    m = re.search(r"in ([0-9.]+)(ms|µs|ns|s)$", line.strip())
    return float(m.group(1)) * {"s": 1, "ms": 1e-3, "µs": 1e-6, "ns": 1e-9}[m.group(2)] if m else 0.0


def median(xs):
    xs = sorted(xs); n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


work = Path(tempfile.mkdtemp(prefix="berth-bench-shared-"))
static = work / "demo-app"
run(["rustc", "--edition", "2024", "-O", "-C", "target-feature=+crt-static", "--target", "x86_64-unknown-linux-gnu",
     str(ROOT / "examples/demo-app/src/main.rs"), "-o", str(static)], work)


def site(name):
    """The example as a repository of its own, project `name`, deployed once (not measured)."""
    repo = work / name
    shutil.copytree(ROOT / "examples/multi-product", repo)
    m = (repo / "berth.toml").read_text()
    m = m.replace('name = "bestays-monorepo"', f'name = "{name}"')
    m = m.replace('nginx_config = "deploy/prod/nginx/nginx.conf"',
                  f'nginx_config = "deploy/dev/nginx/nginx.conf"\nlisten = "127.0.0.1"\nhttp_port = {free_pair()}')
    m = m.replace("[secret_scan]", '[deploy]\nruntime = "compose"\nslot_port_offset = 1\ndrain = "200ms"\nstandby = "0"\n\n[secret_scan]')
    for old in ["host_port = 8011", "host_port = 5183", "host_port = 8012", "host_port = 5184"]:
        m = m.replace(old, f"host_port = {free_pair()}", 1)
    m = m.replace('migrate = "demo-app migrate"', 'migrate = "/demo-app migrate"')
    m = m.replace('interval = "2s"', 'interval = "100ms"')
    m = m.replace('deadline = "60s" }', 'deadline = "60s", command = ["/demo-app", "health"] }')
    (repo / "berth.toml").write_text(m)
    for app in ["apps/server", "apps/frontend"]:
        shutil.copy(static, repo / app / "demo-app")
        # Sources of this run only: no image an earlier run left has their build keys.
        (repo / app / "bench-run.txt").write_text(f"{name}\n")
    # The image holds its whole context, as the example's real Dockerfiles do.
    for df in ["docker/server.Dockerfile", "docker/frontend.Dockerfile"]:
        (repo / df).write_text('FROM scratch\nCOPY . /app\nCOPY demo-app /demo-app\nCMD ["/demo-app"]\n')
    git = lambda *a: run(["git", "-c", "user.name=bench", "-c", "user.email=b@b", *a], repo)
    git("init", "-q", "-b", "main")
    run([BERTH, "render", "--env", "dev"], repo)
    keys = {"BENCH_CLERK_SECRET_KEY": "sk_test_bench-not-a-real-key",
            "BENCH_OPENROUTER_API_KEY": "sk-or-v1-bench-not-a-real-key",
            "BENCH_VITE_CLERK_PUBLISHABLE_KEY": "pk_test_bench-not-a-real-key"}
    for product in PRODUCTS:
        run([BERTH, "secrets", "import", product, "--from-env", "BENCH_", "--require-all"], repo, env=keys)
    git("add", "-A"); git("commit", "-qm", "chore: bench (TASK-0-bench-bestays)")
    return repo, git


def measure(name, env):
    repo, git = site(name)
    env = dict(env, BERTH_LOG="berth::cmd=trace")
    for product in PRODUCTS:
        run([BERTH, "deploy", product, "--yes"], repo, env)
    walls, counts, build_s = [], [], []
    for i in range(RUNS):
        (repo / f"apps/server/change-{i}.txt").write_text(f"{i}\n")
        git("add", "-A"); git("commit", "-qm", f"feat: server change {i} (TASK-{i + 1}-server-bestays)")
        t0 = time.monotonic()
        made = []
        for product in PRODUCTS:
            made += builds(run([BERTH, "deploy", product, "--yes"], repo, env).stderr)
        walls.append(time.monotonic() - t0)
        counts.append(len(made))
        build_s.append(sum(seconds(l) for l in made))
    for product in PRODUCTS:
        for slot in ["blue", "green"]:
            subprocess.run(["docker", "compose", "-p", f"{name}-{product}-{slot}", "-f", str(repo / f"deploy/dev/compose/{product}.yml"),
                            "down", "-t", "1"], cwd=repo, capture_output=True)
        subprocess.run(["docker", "network", "rm", f"{name}-{product}"], capture_output=True)
        # Every version's tag (compose's `--rmi` knows only the one it is given).
        for service in ["server", "frontend"]:
            tags = subprocess.run(["docker", "image", "ls", f"{name}-{product}-{service}", "--format", "{{.Repository}}:{{.Tag}}"],
                                  capture_output=True, text=True).stdout.split()
            if tags:
                subprocess.run(["docker", "image", "rm", *tags], capture_output=True)
    subprocess.run(["nginx", "-p", str(repo), "-c", "deploy/dev/nginx/nginx.conf", "-s", "stop"], capture_output=True)
    subprocess.run(["docker", "network", "rm", f"{name}-shared"], capture_output=True)
    return walls, counts, build_s


before = measure(f"sbb{os.getpid()}", {"BERTH_BUILD_SHARING": "off"})
after = measure(f"sba{os.getpid()}", {})
shutil.rmtree(work, ignore_errors=True)

print(f"Runs: {RUNS}; each run commits a change to apps/server, then deploys bestays and realestate "
      "(`berth deploy <product> --yes`, one after the other); images `FROM scratch` holding their context "
      "and a static demo-app; compose runtime; drain 200 ms.")
print()
print("| both products after a change to apps/server | images built per run | time in `docker build`, median | wall, median | min | max |")
print("|---|---:|---:|---:|---:|---:|")
for label, (walls, counts, build_s) in [("before: every product builds its images (`BERTH_BUILD_SHARING=off`)", before),
                                        ("after: one build per build key", after)]:
    c = "/".join(str(x) for x in sorted(set(counts)))
    print(f"| {label} | {c} | {median(build_s):.2f} s | {median(walls):.2f} s | {min(walls):.2f} s | {max(walls):.2f} s |")
print()
goal = all(c == 1 for c in after[1])
print(f"Goal (one build): {'**met**' if goal else '**not met**'} ({'/'.join(str(c) for c in after[1])} per run). "
      f"Wall time {median(before[0]):.2f} s -> {median(after[0]):.2f} s "
      f"({100 * (1 - median(after[0]) / median(before[0])):.0f}% less), of which `docker build` "
      f"{median(before[2]):.2f} s -> {median(after[2]):.2f} s. These images are `FROM scratch` copies; with real "
      "builds (the example's pip install) each build not run is that build's whole time.")
