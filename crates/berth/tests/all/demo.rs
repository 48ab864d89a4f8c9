use crate::support::*;

#[test]
fn demo_runs_end_to_end() {
    let tmp = temp_dir();
    let dir = tmp.path().join("demo");
    let out = run(tmp.path(), &["demo", "--dir", "demo"]);
    out.assert_code(0);
    for expected in [
        "[10] done",
        "ok     feat: implement login",
        "is live in blue",
        "is live in green",
        "REJECT TASK-002-database-schema",
        "affected: bestays, realestate, villas",
        "rollback",
    ] {
        assert!(
            out.stdout.contains(expected),
            "missing `{expected}`:\n{}",
            out.snapshot()
        );
    }
    // The kept directory is a real repository with deploy tags, and nothing is left running.
    let tags = std::process::Command::new("git")
        .args(["tag"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&tags.stdout).lines().count(),
        4,
        "3 bestays deploys + 1 realestate"
    );
    let m = std::fs::read_to_string(dir.join("berth.toml")).unwrap();
    assert!(m.contains("[products.villas]"));
    for json in ["bestays/blue/server.json", "realestate/blue/server.json"] {
        if let Ok(text) = std::fs::read_to_string(dir.join(".berth/run").join(json)) {
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            let pid = v["pid"].as_u64().unwrap();
            std::thread::sleep(std::time::Duration::from_millis(500));
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            assert!(
                stat.is_empty() || stat.contains(") Z"),
                "demo left {json} running"
            );
        }
    }
    // A non-empty directory is refused.
    run(tmp.path(), &["demo", "--dir", "demo"]).assert_code(2);
}

#[test]
fn demo_runs_on_docker_with_runtime_compose() {
    crate::compose::docker_required();
    let tmp = temp_dir();
    let out = run(tmp.path(), &["demo", "--runtime", "compose"]);
    out.assert_code(0);
    for expected in [
        "containers behind nginx",
        "build images (compose)",
        "is live in green",
        "reuse the retained images",
        "[10] done",
    ] {
        assert!(
            out.stdout.contains(expected),
            "missing `{expected}`:\n{}",
            out.snapshot()
        );
    }
    // Nothing of the demo is left running.
    let ps = std::process::Command::new("docker")
        .args([
            "ps",
            "--filter",
            "label=berth.product",
            "--format",
            "{{.Label \"com.docker.compose.project\"}}",
        ])
        .output()
        .unwrap();
    let left: Vec<String> = String::from_utf8_lossy(&ps.stdout)
        .lines()
        .filter(|l| l.starts_with("berth-demo-"))
        .map(str::to_string)
        .collect();
    assert!(left.is_empty(), "demo containers left running: {left:?}");
}
