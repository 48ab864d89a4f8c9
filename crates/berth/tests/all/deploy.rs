//! Deploys on the local runtime behind a real nginx: zero downtime under load,
//! rollbacks, broken releases, kill -9 at every step, concurrent deploys.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::support::*;

/// Two adjacent free ports (blue and green with slot_port_offset = 1), below the
/// ephemeral range so no outgoing connection takes one while a slot is down.
pub fn port_pair() -> u16 {
    // Pairs start on even ports, and no pair is handed out twice in this process,
    // so one site's green port is never another service's blue port.
    static TAKEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let p = 20000 + (rand_u16() % 6000) * 2;
        let mut taken = TAKEN.lock().unwrap();
        if taken.contains(&p) {
            continue;
        }
        let free = |q: u16| std::net::TcpListener::bind(("127.0.0.1", q)).is_ok();
        if free(p) && free(p + 1) {
            taken.push(p);
            return p;
        }
    }
}

fn rand_u16() -> u16 {
    let mut b = [0u8; 2];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut b)
        .unwrap();
    u16::from_le_bytes(b)
}

/// The example monorepo, deployable: demo-app services on free ports behind an
/// nginx of its own on a free port. Everything is stopped on drop.
pub struct Site {
    pub repo: GitRepo,
    pub http_port: u16,
    /// The project name, when the site runs on Docker Compose.
    pub compose: Option<String>,
}

impl Site {
    pub fn new(boot_delay_ms: u64) -> Self {
        Self::with(false, boot_delay_ms)
    }

    /// The same site on a real Docker Engine: images `FROM scratch` around a static demo-app.
    pub fn compose(boot_delay_ms: u64) -> Self {
        Self::with(true, boot_delay_ms)
    }

    fn with(compose: bool, boot_delay_ms: u64) -> Self {
        if compose {
            crate::compose::docker_required();
        }
        let repo = GitRepo::new();
        repo.copy_tree(&example_dir());
        let mut m = std::fs::read_to_string(repo.path().join("berth.toml")).unwrap();
        let http_port = free_port_pair_single();
        m = m.replace(
            "nginx_config = \"deploy/prod/nginx/nginx.conf\"",
            &format!("nginx_config = \"deploy/dev/nginx/nginx.conf\"\nhttp_port = {http_port}"),
        );
        m = m.replace(
            "[secret_scan]",
            "[deploy]\nruntime = \"local\"\nslot_port_offset = 1\ndrain = \"1s\"\n\n[secret_scan]",
        );
        for old in [
            "host_port = 8011",
            "host_port = 5183",
            "host_port = 8012",
            "host_port = 5184",
        ] {
            m = m.replace(old, &format!("host_port = {}", port_pair()));
        }
        // Real servers take seconds to boot; instant ones hide downtime.
        m = m.replace(
            "PRODUCT_ID = \"bestays\",",
            &format!("PRODUCT_ID = \"bestays\", DEMO_BOOT_DELAY_MS = \"{boot_delay_ms}\","),
        );
        m = m.replace(
            "PRODUCT_ID = \"realestate\",",
            &format!("PRODUCT_ID = \"realestate\", DEMO_BOOT_DELAY_MS = \"{boot_delay_ms}\","),
        );
        m = m.replace("interval = \"2s\"", "interval = \"200ms\"");
        let project = compose.then(|| format!("bt{}x{}", std::process::id(), port_pair()));
        if let Some(project) = &project {
            m = m.replace(
                "name = \"bestays-monorepo\"",
                &format!("name = \"{project}\""),
            );
            m = m.replace("runtime = \"local\"", "runtime = \"compose\"");
            m = m.replace(
                "migrate = \"demo-app migrate\"",
                "migrate = \"/demo-app migrate\"",
            );
            m = m.replace(
                "deadline = \"60s\" }",
                "deadline = \"60s\", command = [\"/demo-app\", \"health\"] }",
            );
            let bin = crate::compose::static_demo_app();
            for app in ["apps/server", "apps/frontend"] {
                std::fs::copy(&bin, repo.path().join(app).join("demo-app")).unwrap();
            }
            let dockerfile = "FROM scratch\nCOPY demo-app /demo-app\nCMD [\"/demo-app\"]\n";
            repo.write("docker/server.Dockerfile", dockerfile);
            repo.write("docker/frontend.Dockerfile", dockerfile);
        }
        repo.write("berth.toml", &m);
        let site = Self {
            repo,
            http_port,
            compose: project,
        };
        site.berth(&["render", "--env", "dev"]).assert_code(0);
        site.repo
            .commit_all("chore: the example, rendered (TASK-0-setup-bestays)");
        site
    }

    pub fn berth(&self, args: &[&str]) -> Outcome {
        self.berth_env(args, &[])
    }

    pub fn berth_env(&self, args: &[&str], env: &[(&str, &str)]) -> Outcome {
        let mut c = berth(self.repo.path());
        c.args(args).env("BERTH_OPERATOR", "test-operator");
        for (k, v) in env {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        Outcome {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// The version a deploy of HEAD gets (its 12-character commit id).
    pub fn head_version(&self) -> String {
        self.repo
            .git(&["rev-parse", "--short=12", "HEAD"])
            .trim()
            .to_string()
    }

    /// Replace `from` (which must be there) with `to` in berth.toml, uncommitted;
    /// returns the text before.
    pub fn edit_manifest(&self, from: &str, to: &str) -> String {
        let before = std::fs::read_to_string(self.repo.path().join("berth.toml")).unwrap();
        assert!(before.contains(from), "berth.toml has no `{from}`");
        self.repo.write("berth.toml", &before.replace(from, to));
        before
    }

    /// bestays's demo-app exits at start from now on (a release that never becomes
    /// healthy), uncommitted; returns berth.toml as it was.
    pub fn break_bestays_at_start(&self) -> String {
        self.edit_manifest(
            "PRODUCT_ID = \"bestays\",",
            "PRODUCT_ID = \"bestays\", DEMO_EXIT_AT_START = \"1\",",
        )
    }

    /// `[state] backend = "postgres"`, committed as task `task`.
    pub fn use_postgres_state(&self, task: u32) {
        self.edit_manifest(
            "[secret_scan]",
            "[state]\nbackend = \"postgres\"\n\n[secret_scan]",
        );
        self.repo
            .commit_all(&format!("chore: shared state (TASK-{task}-state-bestays)"));
    }

    /// A new commit touching `product`'s files.
    pub fn change(&self, product: &str, n: u32) {
        self.repo
            .write(&format!("products/{product}/change-{n}.md"), "x");
        self.repo
            .commit_all(&format!("feat: change {n} (TASK-{n}-change-{product})"));
    }

    /// GET through nginx: (status, version header).
    pub fn get(&self, host: &str, path: &str) -> (u16, String) {
        get(self.http_port, host, path)
    }

    /// Every running instance of a product (pid or container id, version, start), sorted.
    pub fn processes(&self, product: &str) -> Vec<(String, String)> {
        if let Some(project) = &self.compose {
            let out = std::process::Command::new("docker")
                .args(["ps", "--no-trunc", "--filter", &format!("label=berth.product={product}")])
                .args(["--format", "{{.ID}} {{.Label \"berth.version\"}} {{.Label \"com.docker.compose.project\"}}\t{{.CreatedAt}}"])
                .output()
                .unwrap();
            let mut v: Vec<(String, String)> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| l.contains(&format!(" {project}-{product}-")))
                .filter_map(|l| {
                    l.split_once('\t')
                        .map(|(a, b)| (a.to_string(), b.to_string()))
                })
                .collect();
            v.sort();
            return v;
        }
        let mut out = Vec::new();
        for slot in ["blue", "green"] {
            let dir = self.repo.path().join(".berth/run").join(product).join(slot);
            for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                if e.path().extension().is_some_and(|x| x == "json") {
                    let text = std::fs::read_to_string(e.path()).unwrap();
                    let modified = std::fs::metadata(e.path()).unwrap().modified().unwrap();
                    out.push((text, format!("{modified:?}")));
                }
            }
        }
        out.sort();
        out
    }
}

fn free_port_pair_single() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Drop for Site {
    fn drop(&mut self) {
        let root = self.repo.path();
        let _ = std::process::Command::new("nginx")
            .args([
                "-p",
                root.to_str().unwrap(),
                "-c",
                "deploy/dev/nginx/nginx.conf",
                "-s",
                "stop",
            ])
            .stderr(std::process::Stdio::null())
            .status();
        kill_all(&root.join(".berth/run"));
        if let Some(project) = &self.compose {
            crate::compose::down_all(root, project);
        }
    }
}

fn kill_all(dir: &Path) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            kill_all(&p);
        } else if p.extension().is_some_and(|x| x == "json")
            && let Ok(v) = serde_json::from_str::<serde_json::Value>(
                &std::fs::read_to_string(&p).unwrap_or_default(),
            )
            && let Some(pid) = v["pid"].as_u64()
        {
            let _ = std::process::Command::new("kill")
                .args(["-9", "--", &format!("-{pid}")])
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

pub fn get(port: u16, host: &str, path: &str) -> (u16, String) {
    let r = (|| -> std::io::Result<(u16, String)> {
        let mut s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        )?;
        let mut buf = String::new();
        s.read_to_string(&mut buf)?;
        let status = buf
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let version = buf
            .lines()
            .find_map(|l| {
                l.strip_prefix("X-Berth-Version: ")
                    .or_else(|| l.strip_prefix("x-berth-version: "))
            })
            .unwrap_or("")
            .trim()
            .to_string();
        Ok((status, version))
    })();
    r.unwrap_or((0, String::new()))
}

/// Requests sent, the failed responses (status, version), and how long it ran.
type LoadResult = (u64, Vec<(u16, String)>, Duration);

/// Requests sent through nginx until stopped, at least 100 per second.
pub struct Load {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<LoadResult>>,
}

impl Load {
    /// Four clients, each sending one request after another.
    pub fn start(port: u16, host: &'static str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let start = Instant::now();
            let clients: Vec<_> = (0..4)
                .map(|_| {
                    let flag = flag.clone();
                    std::thread::spawn(move || {
                        let mut n = 0u64;
                        let mut failures = Vec::new();
                        let mut versions: Vec<(u16, String)> = Vec::new();
                        while !flag.load(Ordering::Relaxed)
                            && start.elapsed() < Duration::from_secs(180)
                        {
                            let (status, version) = get(port, host, "/api/health");
                            n += 1;
                            if status != 200 {
                                failures.push((status, version.clone()));
                            }
                            if versions.last().map(|v| &v.1) != Some(&version) {
                                versions.push((status, version));
                            }
                            std::thread::sleep(Duration::from_millis(2));
                        }
                        (n, failures, versions)
                    })
                })
                .collect();
            let mut n = 0;
            let mut failures = Vec::new();
            let mut versions = Vec::new();
            for c in clients {
                let (cn, cf, cv) = c.join().unwrap();
                n += cn;
                failures.extend(cf);
                versions.push(cv);
            }
            eprintln!(
                "load: {n} requests, {} failed, versions seen per client: {versions:?}",
                failures.len()
            );
            (n, failures, start.elapsed())
        });
        Self {
            stop,
            handle: Some(handle),
        }
    }

    /// Stop; returns (requests, failed responses, elapsed).
    pub fn finish(mut self) -> LoadResult {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.take().unwrap().join().unwrap()
    }
}

#[test]
fn deploy_redeploy_rollback_with_zero_dropped_requests_and_realestate_untouched() {
    let site = Site::new(2000);
    site.berth(&["deploy", "realestate", "--yes"])
        .assert_code(0);
    site.berth(&["deploy", "bestays", "--yes"]).assert_code(0);
    let v1 = site.head_version();
    assert_eq!(site.get("bestays.app", "/api/health").1, v1);
    let realestate_before = site.processes("realestate");
    assert_eq!(realestate_before.len(), 2);

    site.change("bestays", 1);
    let v2 = site.head_version();
    let load = Load::start(site.http_port, "bestays.app");
    std::thread::sleep(Duration::from_millis(300));
    let out = site.berth(&["deploy", "bestays", "--yes"]);
    out.assert_code(0);
    assert!(
        out.stdout.contains("is live in green"),
        "{}",
        out.snapshot()
    );
    assert_eq!(site.get("bestays.app", "/api/health").1, v2);
    let rollback_start = Instant::now();
    let out = site.berth(&["rollback", "bestays", "--yes"]);
    out.assert_code(0);
    let rollback_time = rollback_start.elapsed();
    assert_eq!(site.get("bestays.app", "/api/health").1, v1, "rolled back");
    std::thread::sleep(Duration::from_millis(300));
    let (n, failures, elapsed) = load.finish();
    let rate = n as f64 / elapsed.as_secs_f64();
    eprintln!(
        "zero-downtime: {n} requests in {elapsed:?} ({rate:.0} req/s), {} failed; rollback took {rollback_time:?}",
        failures.len()
    );
    assert!(
        rate >= 100.0,
        "the load must be at least 100 req/s, was {rate:.0}"
    );
    assert!(
        failures.is_empty(),
        "{} requests failed during deploy/rollback: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );

    // realestate's processes were never touched.
    assert_eq!(site.processes("realestate"), realestate_before);

    // History from tags, with tasks; status from the runtime; the audit log per step.
    let h = site.berth(&["history", "bestays", "--format", "json"]);
    h.assert_code(0);
    let v: serde_json::Value = serde_json::from_str(&h.stdout).unwrap();
    let deploys = v["deploys"].as_array().unwrap();
    assert_eq!(deploys.len(), 3);
    assert_eq!(deploys[0]["version"], v1.as_str());
    assert!(deploys[0]["rollback_of"].is_string());
    assert_eq!(
        deploys[1]["tasks"],
        serde_json::json!(["TASK-1-change-bestays"])
    );
    assert_eq!(deploys[1]["previous"], deploys[2]["tag"]);
    assert_eq!(deploys[1]["operator"], "test-operator");
    let s = site.berth(&["status", "bestays", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&s.stdout).unwrap();
    for svc in v["services"].as_array().unwrap() {
        assert_eq!(svc["version"], v1.as_str());
        assert_eq!(svc["health"], "up");
        assert_eq!(svc["slot"], "blue");
    }
    let audit = std::fs::read_to_string(site.repo.path().join(".berth/audit.jsonl")).unwrap();
    let steps: Vec<serde_json::Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        steps
            .iter()
            .any(|r| r["step"] == "switch" && r["product"] == "bestays" && r["result"] == "ok")
    );
    assert!(steps.iter().all(|r| r["operator"] == "test-operator"));
}

#[test]
fn a_stop_start_deploy_drops_requests_which_is_what_berth_avoids() {
    let site = Site::new(2000);
    site.berth(&["deploy", "bestays", "--yes"]).assert_code(0);
    // The seed's way: no proxy switch, stop the old process and start the new one.
    let m = std::fs::read_to_string(site.repo.path().join("berth.toml")).unwrap();
    let without_proxy = m
        .replace("[proxy]", "[unused]")
        .replace("[unused]\n", "# no proxy\n[x_removed_proxy]\n");
    let without_proxy = strip_table(&without_proxy, "[x_removed_proxy]");
    site.repo.write("berth.toml", &without_proxy);
    site.repo
        .commit_all("chore: no proxy (TASK-2-noproxy-bestays)");
    let load = Load::start(site.http_port, "bestays.app");
    std::thread::sleep(Duration::from_millis(300));
    let out = site.berth(&["deploy", "bestays", "--yes"]);
    out.assert_code(0);
    assert!(
        out.stderr.contains("NOT zero-downtime"),
        "{}",
        out.snapshot()
    );
    std::thread::sleep(Duration::from_millis(300));
    let (n, failures, _) = load.finish();
    eprintln!("stop/start deploy: {n} requests, {} failed", failures.len());
    assert!(
        !failures.is_empty(),
        "a stop/start deploy of a 2 s boot must drop requests"
    );
}

fn strip_table(text: &str, header: &str) -> String {
    let mut out = Vec::new();
    let mut skipping = false;
    for line in text.lines() {
        if line.trim() == header {
            skipping = true;
            continue;
        }
        if skipping && line.starts_with('[') {
            skipping = false;
        }
        if !skipping {
            out.push(line);
        }
    }
    out.join("\n") + "\n"
}

/// Each broken release leaves the old version serving (no failed request) and exits 1
/// naming the step, with the new service's log tail.
#[test]
fn broken_releases_leave_the_old_version_serving() {
    broken_releases_leave_the_old_version_serving_on(Site::new(500));
}

#[test]
fn broken_releases_leave_the_old_version_serving_on_compose() {
    broken_releases_leave_the_old_version_serving_on(Site::compose(500));
}

fn broken_releases_leave_the_old_version_serving_on(site: Site) {
    site.berth(&["deploy", "bestays", "--yes"]).assert_code(0);
    let live = site.get("bestays.app", "/api/health").1;
    let cases: &[(&str, &str, &str)] = &[
        (
            "DEMO_FAIL_HEALTH",
            "health-check the green slot",
            "did not become healthy",
        ),
        (
            "DEMO_FAIL_MIGRATE",
            "run the migration of server",
            "migration 0002_add_listings failed",
        ),
        (
            "DEMO_EXIT_AT_START",
            "health-check the green slot",
            "exited before it became healthy",
        ),
        ("BAD_NGINX", "switch traffic", "nginx"),
    ];
    let base = std::fs::read_to_string(site.repo.path().join("berth.toml")).unwrap();
    for (i, (switch, step, why)) in cases.iter().enumerate() {
        let conf = site.repo.path().join("deploy/dev/nginx/berth.conf");
        let conf_before = std::fs::read_to_string(&conf).unwrap();
        if *switch == "BAD_NGINX" {
            std::fs::write(
                &conf,
                format!("{conf_before}\nthis_is_not_a_directive on;\n"),
            )
            .unwrap();
        } else {
            let m = base.replace(
                "PRODUCT_ID = \"bestays\",",
                &format!("PRODUCT_ID = \"bestays\", {switch} = \"1\","),
            );
            site.repo.write("berth.toml", &m);
            // The compose files follow berth.toml.
            site.berth(&["render", "--env", "dev"]).assert_code(0);
        }
        site.repo.commit_all(&format!(
            "feat: broken {i} (TASK-{}-broken-bestays)",
            10 + i
        ));
        let load = Load::start(site.http_port, "bestays.app");
        let out = site.berth(&["deploy", "bestays", "--yes"]);
        let (_, failures, _) = load.finish();
        out.assert_code(1);
        assert!(
            out.stderr.contains(&format!("failed at step `{step}")),
            "{switch}:\n{}",
            out.snapshot()
        );
        assert!(out.stderr.contains(why), "{switch}:\n{}", out.snapshot());
        if *switch != "DEMO_FAIL_MIGRATE" {
            assert!(
                out.stderr
                    .contains("last log lines of bestays.server (green)"),
                "{switch}:\n{}",
                out.snapshot()
            );
        }
        assert!(
            failures.is_empty(),
            "{switch}: {} requests failed",
            failures.len()
        );
        assert_eq!(
            site.get("bestays.app", "/api/health"),
            (200, live.clone()),
            "{switch}: the old version still serves"
        );
        // The new slot was stopped.
        let green: Vec<_> = site
            .processes("bestays")
            .into_iter()
            .filter(|(t, _)| !t.contains(&live))
            .collect();
        assert!(green.is_empty(), "{switch}: leftovers {green:?}");
        // Restore for the next case.
        std::fs::write(&conf, conf_before).unwrap();
        site.repo.write("berth.toml", &base);
        site.berth(&["render", "--env", "dev"]).assert_code(0);
        site.repo
            .commit_all(&format!("fix: unbreak {i} (TASK-{}-fix-bestays)", 20 + i));
    }
    // After all that, a good deploy goes through.
    site.berth(&["deploy", "bestays", "--yes"]).assert_code(0);
}

#[test]
fn kill_9_at_every_step_keeps_serving_and_the_next_deploy_converges() {
    kill_9_at_every_step_keeps_serving_and_the_next_deploy_converges_on(Site::new(300));
}

#[test]
fn kill_9_at_every_step_keeps_serving_and_the_next_deploy_converges_on_compose() {
    kill_9_at_every_step_keeps_serving_and_the_next_deploy_converges_on(Site::compose(300));
}

fn kill_9_at_every_step_keeps_serving_and_the_next_deploy_converges_on(site: Site) {
    site.berth(&["deploy", "bestays", "--yes"]).assert_code(0);
    let steps = 10;
    for step in 1..=steps {
        site.change("bestays", 100 + step);
        let mut child = berth(site.repo.path())
            .args(["deploy", "bestays", "--yes"])
            .env("BERTH_DEBUG_PAUSE_AFTER_STEP", step.to_string())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Wait for the pause (or the end, for steps past the plan).
        let mut err = child.stderr.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut s = String::new();
            let mut buf = [0u8; 256];
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(30) {
                match err.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        s.push_str(&String::from_utf8_lossy(&buf[..n]));
                        if s.contains("paused after step") {
                            break;
                        }
                    }
                }
            }
            s
        });
        let progress = reader.join().unwrap();
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        let (status, _) = site.get("bestays.app", "/api/health");
        assert_eq!(
            status, 200,
            "after kill -9 at step {step} the product must keep serving:\n{progress}"
        );
        // No manual unlock: the next deploy runs and converges.
        let out = site.berth(&["deploy", "bestays", "--yes"]);
        out.assert_code(0);
        let head = site.head_version();
        assert_eq!(
            site.get("bestays.app", "/api/health"),
            (200, head),
            "converged after a kill at step {step}"
        );
    }
}

#[test]
fn concurrent_deploys_of_one_product_lock_and_other_products_proceed() {
    concurrent_deploys_of_one_product_lock_and_other_products_proceed_on(Site::new(1500));
}

#[test]
fn concurrent_deploys_of_one_product_lock_and_other_products_proceed_on_compose() {
    concurrent_deploys_of_one_product_lock_and_other_products_proceed_on(Site::compose(1500));
}

fn concurrent_deploys_of_one_product_lock_and_other_products_proceed_on(site: Site) {
    site.change("bestays", 1);
    let mut children = Vec::new();
    for _ in 0..10 {
        children.push(
            berth(site.repo.path())
                .args(["deploy", "bestays", "--yes"])
                .env("BERTH_OPERATOR", "ci-job")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap(),
        );
    }
    std::thread::sleep(Duration::from_millis(300));
    let other = site.berth(&["deploy", "realestate", "--yes"]);
    other.assert_code(0);
    let outs: Vec<_> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    let ok = outs.iter().filter(|o| o.status.code() == Some(0)).count();
    let locked: Vec<String> = outs
        .iter()
        .filter(|o| o.status.code() == Some(1))
        .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
        .collect();
    assert_eq!(ok, 1, "exactly one deploy runs");
    assert_eq!(locked.len(), 9);
    for e in &locked {
        assert!(
            e.contains("bestays is locked by ci-job (pid ") && e.contains(" since 20"),
            "{e}"
        );
    }
    // --lock-wait waits its turn instead.
    site.change("bestays", 2);
    let a = berth(site.repo.path())
        .args(["deploy", "bestays", "--yes"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let b = site.berth(&["deploy", "bestays", "--yes", "--lock-wait", "60s"]);
    let a = a.wait_with_output().unwrap();
    assert_eq!(a.status.code(), Some(0));
    b.assert_code(0);
    // A manual hold stops deploys with its message.
    site.berth(&["lock", "acquire", "bestays", "-m", "database maintenance"])
        .assert_code(0);
    let out = site.berth(&["deploy", "bestays", "--yes"]);
    out.assert_code(1);
    assert!(
        out.stderr.contains("database maintenance"),
        "{}",
        out.snapshot()
    );
    site.berth(&["lock", "release", "bestays"]).assert_code(0);
}

#[test]
fn dry_run_plans_without_doing_and_dirty_trees_are_refused() {
    let site = Site::new(0);
    let out = site.berth(&["deploy", "bestays", "--dry-run"]);
    out.assert_code(0);
    assert!(
        out.stderr.contains("start the blue slot")
            && out.stderr.contains("tag the deploy: bestays-deploy-"),
        "{}",
        out.snapshot()
    );
    assert!(
        site.processes("bestays").is_empty(),
        "a dry run starts nothing"
    );
    assert!(site.repo.git(&["tag"]).is_empty(), "a dry run tags nothing");
    // --push-tags pushes the deploy tag to origin.
    let remote = temp_dir();
    assert!(
        std::process::Command::new("git")
            .args(["init", "-q", "--bare"])
            .arg(remote.path())
            .status()
            .unwrap()
            .success()
    );
    site.repo
        .git(&["remote", "add", "origin", remote.path().to_str().unwrap()]);
    let out = site.berth(&["deploy", "bestays", "--yes", "--push-tags"]);
    out.assert_code(0);
    let pushed = std::process::Command::new("git")
        .args(["tag"])
        .current_dir(remote.path())
        .output()
        .unwrap();
    let pushed = String::from_utf8_lossy(&pushed.stdout).to_string();
    assert!(
        pushed.starts_with("bestays-deploy-"),
        "{pushed}\n{}",
        out.snapshot()
    );
    site.repo.write("products/bestays/wip.md", "uncommitted");
    let out = site.berth(&["deploy", "bestays", "--yes"]);
    out.assert_code(2);
    assert!(
        out.stderr.contains("uncommitted changes") && out.stderr.contains("--allow-dirty"),
        "{}",
        out.snapshot()
    );
    site.berth(&["deploy", "bestays", "--yes", "--allow-dirty"])
        .assert_code(0);
}

/// `[state] backend = "postgres"`: advisory locks and the audit table on a real PostgreSQL.
#[test]
fn postgres_state_backend_locks_and_audits() {
    let pg = berth_testkit::Postgres::start();
    let site = Site::new(800);
    site.use_postgres_state(30);
    let env = [("BERTH_STATE_URL", pg.admin_url())];
    let env_ref: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();

    // Without the URL: a configuration error, nothing done.
    let out = site.berth(&["deploy", "bestays", "--yes"]);
    out.assert_code(2);
    assert!(
        out.stderr.contains("needs $BERTH_STATE_URL"),
        "{}",
        out.snapshot()
    );

    site.berth_env(&["deploy", "bestays", "--yes"], &env_ref)
        .assert_code(0);
    assert!(
        !site.repo.path().join(".berth/audit.jsonl").exists(),
        "the audit goes to PostgreSQL"
    );
    let rows = pg.admin(
        "SELECT count(*) FROM berth_audit WHERE product = 'bestays' AND record->>'result' = 'ok'",
    );
    assert!(rows.trim().parse::<u32>().unwrap() >= 8, "{rows}");
    let sw =
        pg.admin("SELECT record->>'operator' FROM berth_audit WHERE record->>'step' = 'switch'");
    assert_eq!(sw.trim(), "test-operator");

    // Concurrent deploys: the advisory lock lets one through.
    site.change("bestays", 31);
    let children: Vec<_> = (0..3)
        .map(|_| {
            berth(site.repo.path())
                .args(["deploy", "bestays", "--yes"])
                .env("BERTH_STATE_URL", pg.admin_url())
                .env("BERTH_OPERATOR", "ci-job")
                .stderr(std::process::Stdio::piped())
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    let outs: Vec<_> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    assert_eq!(outs.iter().filter(|o| o.status.success()).count(), 1);
    for o in outs.iter().filter(|o| !o.status.success()) {
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(e.contains("bestays is locked by ci-job (pid "), "{e}");
    }

    // kill -9 while holding the lock: the session ends, the lock with it.
    site.change("bestays", 32);
    let mut child = berth(site.repo.path())
        .args(["deploy", "bestays", "--yes"])
        .env("BERTH_STATE_URL", pg.admin_url())
        .env("BERTH_DEBUG_PAUSE_AFTER_STEP", "2")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let locked = site.berth_env(&["lock", "status", "bestays"], &env_ref);
    assert!(
        locked.stdout.contains("bestays: locked by"),
        "{}",
        locked.snapshot()
    );
    let _ = child.kill();
    let _ = child.wait();
    std::thread::sleep(Duration::from_millis(500));
    site.berth_env(&["deploy", "bestays", "--yes"], &env_ref)
        .assert_code(0);

    // A manual hold lives in the shared database too.
    site.berth_env(
        &["lock", "acquire", "bestays", "-m", "migrating the database"],
        &env_ref,
    )
    .assert_code(0);
    let out = site.berth_env(&["deploy", "bestays", "--yes"], &env_ref);
    out.assert_code(1);
    assert!(
        out.stderr.contains("migrating the database"),
        "{}",
        out.snapshot()
    );
    site.berth_env(&["lock", "release", "bestays"], &env_ref)
        .assert_code(0);
    site.berth_env(&["lock", "status", "bestays"], &env_ref)
        .assert_code(0);
}

#[test]
fn an_audit_record_that_cannot_be_written_is_a_warning_not_silence() {
    let site = Site::new(0);
    // Something in the log's place that cannot be appended to.
    std::fs::create_dir_all(site.repo.path().join(".berth/audit.jsonl")).unwrap();
    let out = site.berth(&["deploy", "realestate", "--yes"]);
    out.assert_code(0);
    assert!(
        out.stderr.contains("could not write the audit record to")
            && out.stderr.contains(".berth/audit.jsonl"),
        "{}",
        out.snapshot()
    );
}
