//! Deploys on a real Docker Engine with Compose v2: images built `FROM scratch`
//! around a static demo-app, blue/green projects per product, behind nginx.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Instant;

use crate::deploy::{Site, assert_in_flight_across_switch};
use crate::support::*;

/// demo-app linked statically (it is one file with no dependencies: rustc alone builds it).
pub fn static_demo_app() -> PathBuf {
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

pub fn docker_required() {
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

/// Stop and remove every compose project of a site (containers and images).
pub fn down_all(root: &Path, project: &str) {
    for product in ["bestays", "realestate"] {
        for slot in ["blue", "green"] {
            let _ = Command::new("docker")
                .args([
                    "compose",
                    "-p",
                    &format!("{project}-{product}-{slot}"),
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
        .args(["network", "rm", &format!("{project}-shared")])
        .stderr(std::process::Stdio::null())
        .status();
}

#[test]
fn compose_deploy_redeploy_rollback_with_zero_dropped_requests() {
    let site = Site::compose(2000);
    site.berth(&["deploy", "realestate", "--yes"])
        .assert_code(0);
    let out = site.berth(&["deploy", "bestays", "--yes"]);
    out.assert_code(0);
    assert!(
        out.stderr.contains("build images (compose)") && out.stderr.contains("built "),
        "{}",
        out.snapshot()
    );
    let v1 = site.head_version();
    assert_eq!(site.get("bestays.app", "/api/health"), (200, v1.clone()));
    let realestate = site.processes("realestate");
    assert_eq!(realestate.len(), 2, "{realestate:?}");

    site.repo.write("products/bestays/change.md", "x");
    site.repo.commit_all("feat: change (TASK-1-change-bestays)");
    let v2 = site.head_version();
    let load = site.load("bestays.app");
    load.wait_for_answers(20);
    site.berth(&["deploy", "bestays", "--yes"]).assert_code(0);
    assert_eq!(site.get("bestays.app", "/api/health").1, v2);
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
    assert_eq!(site.get("bestays.app", "/api/health").1, v1);
    load.wait_for_answers(20);
    let report = load.finish();
    eprintln!("zero-downtime (compose): rollback took {rollback:?}");
    report.assert_clean(300).assert_covered();
    assert_eq!(report.versions(), [v1.clone(), v2.clone()]);
    assert_in_flight_across_switch(&report, &v1, &v2);
    assert_in_flight_across_switch(&report, &v2, &v1);
    assert_eq!(
        site.processes("realestate"),
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
fn old_images_are_pruned_and_a_rollback_rebuilds_from_the_tag_when_its_image_is_gone() {
    let site = Site::compose(0);
    let m = std::fs::read_to_string(site.repo.path().join("berth.toml"))
        .unwrap()
        .replace("runtime = \"compose\"", "runtime = \"compose\"\nkeep = 1");
    site.repo.write("berth.toml", &m);
    site.repo
        .commit_all("chore: keep one image (TASK-5-keep-bestays)");
    site.berth(&["deploy", "bestays", "--yes"]).assert_code(0);
    let v1 = site.head_version();
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
    assert_eq!(site.get("bestays.app", "/api/health"), (200, v1));
}
