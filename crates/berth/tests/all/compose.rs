//! Deploys on a real Docker Engine with Compose v2: images built `FROM scratch`
//! around a static demo-app, blue/green projects per product, behind nginx.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::deploy::{Load, get};
use crate::support::*;

/// demo-app linked statically (it is one file with no dependencies: rustc alone builds it).
fn static_demo_app() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("berth-static-demo-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("demo-app");
        let status = Command::new("rustc")
            .args([
                "--edition",
                "2024",
                "-O",
                "-C",
                "target-feature=+crt-static",
                "--target",
                "x86_64-unknown-linux-gnu",
            ])
            .arg(workspace_root().join("examples/demo-app/src/main.rs"))
            .arg("-o")
            .arg(&out)
            .status()
            .expect("rustc is required to build the static demo-app");
        assert!(status.success(), "building a static demo-app failed");
        out
    })
    .clone()
}

fn docker_required() {
    let ok = Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "a Docker Engine is required (./scripts/test.sh starts one and exports DOCKER_HOST)"
    );
    let ok = Command::new("docker")
        .args(["compose", "version"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "Docker Compose v2 is required (./scripts/test.sh installs it)"
    );
}

struct ComposeSite {
    repo: GitRepo,
    http_port: u16,
    project: String,
}

impl ComposeSite {
    fn new(boot_delay_ms: u64) -> Self {
        docker_required();
        let repo = GitRepo::new();
        repo.copy_tree(&example_dir());
        let project = format!(
            "bt{}",
            std::process::id() as u64 * 1000 + crate::deploy::port_pair() as u64 % 1000
        );
        let http_port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut m = std::fs::read_to_string(repo.path().join("berth.toml")).unwrap();
        m = m.replace(
            "name = \"bestays-monorepo\"",
            &format!("name = \"{project}\""),
        );
        m = m.replace(
            "nginx_config = \"deploy/prod/nginx/nginx.conf\"",
            &format!("nginx_config = \"deploy/dev/nginx/nginx.conf\"\nhttp_port = {http_port}"),
        );
        m = m.replace("[secret_scan]", "[deploy]\nruntime = \"compose\"\nslot_port_offset = 1\ndrain = \"1s\"\n\n[secret_scan]");
        for old in [
            "host_port = 8011",
            "host_port = 5183",
            "host_port = 8012",
            "host_port = 5184",
        ] {
            m = m.replace(old, &format!("host_port = {}", crate::deploy::port_pair()));
        }
        for p in ["bestays", "realestate"] {
            m = m.replace(
                &format!("PRODUCT_ID = \"{p}\","),
                &format!("PRODUCT_ID = \"{p}\", DEMO_BOOT_DELAY_MS = \"{boot_delay_ms}\","),
            );
        }
        m = m.replace(
            "migrate = \"demo-app migrate\"",
            "migrate = \"/demo-app migrate\"",
        );
        m = m.replace("interval = \"2s\"", "interval = \"200ms\"");
        m = m.replace(
            "deadline = \"60s\" }",
            "deadline = \"60s\", command = [\"/demo-app\", \"health\"] }",
        );
        repo.write("berth.toml", &m);
        let bin = static_demo_app();
        for app in ["apps/server", "apps/frontend"] {
            std::fs::copy(&bin, repo.path().join(app).join("demo-app")).unwrap();
        }
        let dockerfile = "FROM scratch\nCOPY demo-app /demo-app\nCMD [\"/demo-app\"]\n";
        repo.write("docker/server.Dockerfile", dockerfile);
        repo.write("docker/frontend.Dockerfile", dockerfile);
        let site = Self {
            repo,
            http_port,
            project,
        };
        site.berth(&["render", "--env", "dev"]).assert_code(0);
        site.repo
            .commit_all("chore: the example on Docker (TASK-0-setup-bestays)");
        site
    }

    fn berth(&self, args: &[&str]) -> Outcome {
        let out = berth(self.repo.path())
            .args(args)
            .env("BERTH_OPERATOR", "test-operator")
            .output()
            .unwrap();
        Outcome {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn containers(&self, product: &str) -> Vec<String> {
        let out = Command::new("docker")
            .args([
                "ps",
                "--no-trunc",
                "--filter",
                &format!("label=berth.product={product}"),
                "--format",
                "{{.ID}} {{.CreatedAt}} {{.Label \"com.docker.compose.project\"}}",
            ])
            .output()
            .unwrap();
        let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains(&format!("{}-{product}-", self.project)))
            .map(str::to_string)
            .collect();
        v.sort();
        v
    }
}

impl Drop for ComposeSite {
    fn drop(&mut self) {
        let root: &Path = self.repo.path();
        let _ = Command::new("nginx")
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
        for product in ["bestays", "realestate"] {
            for slot in ["blue", "green"] {
                let _ = Command::new("docker")
                    .args([
                        "compose",
                        "-p",
                        &format!("{}-{product}-{slot}", self.project),
                        "-f",
                    ])
                    .arg(root.join(format!("deploy/dev/compose/{product}.yml")))
                    .args(["down", "--timeout", "1", "--rmi", "all"])
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .status();
            }
        }
        let _ = Command::new("docker")
            .args(["network", "rm", &format!("{}-shared", self.project)])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

#[test]
fn compose_deploy_redeploy_rollback_with_zero_dropped_requests() {
    let site = ComposeSite::new(2000);
    site.berth(&["deploy", "realestate", "--yes"])
        .assert_code(0);
    let out = site.berth(&["deploy", "bestays", "--yes"]);
    out.assert_code(0);
    assert!(
        out.stderr.contains("build images (compose)") && out.stderr.contains("built "),
        "{}",
        out.snapshot()
    );
    let v1 = site
        .repo
        .git(&["rev-parse", "--short=12", "HEAD"])
        .trim()
        .to_string();
    assert_eq!(
        get(site.http_port, "bestays.app", "/api/health"),
        (200, v1.clone())
    );
    let realestate = site.containers("realestate");
    assert_eq!(realestate.len(), 2, "{realestate:?}");

    site.repo.write("products/bestays/change.md", "x");
    site.repo.commit_all("feat: change (TASK-1-change-bestays)");
    let v2 = site
        .repo
        .git(&["rev-parse", "--short=12", "HEAD"])
        .trim()
        .to_string();
    let load = Load::start(site.http_port, "bestays.app");
    std::thread::sleep(Duration::from_millis(300));
    site.berth(&["deploy", "bestays", "--yes"]).assert_code(0);
    assert_eq!(get(site.http_port, "bestays.app", "/api/health").1, v2);
    let start = Instant::now();
    let out = site.berth(&["rollback", "bestays", "--yes"]);
    out.assert_code(0);
    let rollback = start.elapsed();
    assert!(
        !out.stderr.contains("no longer retained"),
        "the v1 image is retained: {}",
        out.snapshot()
    );
    assert!(
        !out.stderr.contains("built "),
        "a rollback does not rebuild: {}",
        out.snapshot()
    );
    assert_eq!(get(site.http_port, "bestays.app", "/api/health").1, v1);
    std::thread::sleep(Duration::from_millis(300));
    let (n, failures, elapsed) = load.finish();
    let rate = n as f64 / elapsed.as_secs_f64();
    eprintln!(
        "compose zero-downtime: {n} requests ({rate:.0} req/s), {} failed; rollback {rollback:?}",
        failures.len()
    );
    assert!(rate >= 100.0, "load {rate:.0} req/s");
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert_eq!(
        site.containers("realestate"),
        realestate,
        "realestate's containers were touched"
    );
    // Status reads the containers' labels.
    let s = site.berth(&["status", "bestays", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&s.stdout).unwrap();
    for svc in v["services"].as_array().unwrap() {
        assert_eq!(svc["version"], v1.as_str(), "{v}");
        assert_eq!(svc["health"], "up");
    }
}

#[test]
fn compose_broken_release_leaves_the_old_version_serving() {
    let site = ComposeSite::new(300);
    site.berth(&["deploy", "bestays", "--yes"]).assert_code(0);
    let live = get(site.http_port, "bestays.app", "/api/health").1;
    let m = std::fs::read_to_string(site.repo.path().join("berth.toml"))
        .unwrap()
        .replace(
            "PRODUCT_ID = \"bestays\",",
            "PRODUCT_ID = \"bestays\", DEMO_FAIL_HEALTH = \"1\",",
        )
        .replace(
            "interval = \"200ms\", timeout = \"1s\", retries = 3, deadline = \"60s\"",
            "interval = \"200ms\", timeout = \"1s\", retries = 3, deadline = \"4s\"",
        );
    site.repo.write("berth.toml", &m);
    // The compose file must follow berth.toml: a deploy refuses a stale one.
    site.repo.commit_all("feat: broken (TASK-2-broken-bestays)");
    let out = site.berth(&["deploy", "bestays", "--yes"]);
    out.assert_code(2);
    assert!(
        out.stderr.contains("does not match berth.toml"),
        "{}",
        out.snapshot()
    );
    site.berth(&["render", "--env", "dev"]).assert_code(0);
    site.repo
        .commit_all("chore: render (TASK-3-render-bestays)");
    let load = Load::start(site.http_port, "bestays.app");
    let out = site.berth(&["deploy", "bestays", "--yes"]);
    let (_, failures, _) = load.finish();
    out.assert_code(1);
    assert!(
        out.stderr
            .contains("failed at step `health-check the green slot`"),
        "{}",
        out.snapshot()
    );
    assert!(
        out.stderr
            .contains("last log lines of bestays.server (green)")
            && out.stderr.contains("503"),
        "{}",
        out.snapshot()
    );
    assert!(failures.is_empty(), "{} requests failed", failures.len());
    assert_eq!(
        get(site.http_port, "bestays.app", "/api/health"),
        (200, live)
    );
    assert_eq!(
        site.containers("bestays").len(),
        2,
        "the green containers were removed"
    );
}

#[test]
fn old_images_are_pruned_and_a_rollback_rebuilds_from_the_tag_when_its_image_is_gone() {
    let site = ComposeSite::new(0);
    let m = std::fs::read_to_string(site.repo.path().join("berth.toml"))
        .unwrap()
        .replace("runtime = \"compose\"", "runtime = \"compose\"\nkeep = 1");
    site.repo.write("berth.toml", &m);
    site.repo
        .commit_all("chore: keep one image (TASK-5-keep-bestays)");
    site.berth(&["deploy", "bestays", "--yes"]).assert_code(0);
    let v1 = site
        .repo
        .git(&["rev-parse", "--short=12", "HEAD"])
        .trim()
        .to_string();
    site.repo.write("products/bestays/c.md", "x");
    site.repo.commit_all("feat: c (TASK-6-c-bestays)");
    let out = site.berth(&["deploy", "bestays", "--yes"]);
    out.assert_code(0);
    assert!(
        out.stderr.contains("removed old images") && out.stderr.contains(&v1),
        "{}",
        out.snapshot()
    );
    let out = site.berth(&["rollback", "bestays", "--yes"]);
    out.assert_code(0);
    assert!(
        out.stderr
            .contains("is no longer retained: it will be rebuilt"),
        "{}",
        out.snapshot()
    );
    assert!(
        out.stderr.contains(&format!("from commit {v1}")),
        "{}",
        out.snapshot()
    );
    assert_eq!(get(site.http_port, "bestays.app", "/api/health"), (200, v1));
}
