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
    // Each deploy and the rollback answered through nginx, by the product's name.
    let answers: Vec<&str> = out
        .stdout
        .lines()
        .filter_map(|l| l.trim().strip_prefix("through nginx: "))
        .collect();
    assert_eq!(answers.len(), 3, "{}", out.snapshot());
    for a in &answers {
        assert!(
            a.starts_with('{') && a.contains("\"product\":\"bestays\""),
            "{a}\n{}",
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
    // Nothing the demo started is left running, whatever slot it ran in: no live process
    // works in the demo's directory (services run there, nginx is started with it as prefix).
    let left = processes_in(&dir);
    assert!(left.is_empty(), "demo left processes running: {left:?}");
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
        // The rollback goes back to the old slot, still running as a warm standby.
        "as a warm standby: no build, no start, no migration",
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

/// Live (non-zombie) processes whose working directory or command line is inside `dir`.
fn processes_in(dir: &std::path::Path) -> Vec<String> {
    let dir = dir.canonicalize().unwrap();
    let needle = dir.to_string_lossy().into_owned();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.parse::<u32>().is_err() {
            continue;
        }
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        if stat.is_empty()
            || stat
                .rsplit_once(')')
                .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
        {
            continue;
        }
        let cwd_inside =
            std::fs::read_link(entry.path().join("cwd")).is_ok_and(|c| c.starts_with(&dir));
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cwd_inside || cmdline.contains(&needle) {
            found.push(format!("{name}: {cmdline}"));
        }
    }
    found
}

/// The check above can see a demo process: a process started in the directory is found.
#[test]
fn processes_in_a_directory_are_found() {
    let tmp = temp_dir();
    let mut child = std::process::Command::new("sleep")
        .arg("30")
        .current_dir(tmp.path())
        .spawn()
        .unwrap();
    let found = processes_in(tmp.path());
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(processes_in(tmp.path()).is_empty());
}

/// `berth demo --runtime swarm` on a one-node swarm (its manager as DOCKER_HOST, its
/// registry named): the demo deploys, redeploys and rolls back as swarm services behind
/// nginx, and leaves nothing on the swarm: no service, secret, network or node label of
/// the demo, its images gone from the registry.
#[test]
fn demo_runs_on_a_one_node_swarm_with_runtime_swarm() {
    use berth_testkit::swarm::{Swarm, SwarmConfig};
    let started = std::time::Instant::now();
    let swarm = Swarm::start(SwarmConfig::new(1));
    let m = swarm.manager();
    let tmp = temp_dir();
    let out = berth(tmp.path())
        .args([
            "demo",
            "--runtime",
            "swarm",
            "--registry",
            swarm.registry(),
            "--dir",
            "demo",
        ])
        .env("DOCKER_HOST", m.docker_host())
        .output()
        .unwrap();
    let out = Outcome {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    out.assert_code(0);
    for expected in [
        "swarm services behind nginx",
        &format!("push them to {}", swarm.registry()),
        "is live in green",
        // The rollback goes back to the old slot, still running as a warm standby.
        "as a warm standby: no build, no start, no migration",
        "[10] done",
    ] {
        assert!(
            out.stdout.contains(expected),
            "missing `{expected}`:\n{}",
            out.snapshot()
        );
    }
    for l in out
        .stdout
        .lines()
        .filter(|l| l.contains(" ms)") || l.contains(" ms;"))
    {
        eprintln!("{}", l.trim());
    }
    let toml = std::fs::read_to_string(tmp.path().join("demo/berth.toml")).unwrap();
    let project = toml
        .lines()
        .find_map(|l| l.strip_prefix("name = \"berth-demo-"))
        .map(|r| format!("berth-demo-{}", r.trim_end_matches('"')))
        .expect("the demo's project name");
    // Nothing of the demo is left on the swarm.
    for what in [
        &["service", "ls", "--format", "{{.Name}}"][..],
        &["secret", "ls", "--format", "{{.Name}}"],
        &["network", "ls", "--format", "{{.Name}}"],
    ] {
        let left: Vec<String> = m
            .docker(what)
            .lines()
            .filter(|l| l.starts_with(&project))
            .map(str::to_string)
            .collect();
        assert!(left.is_empty(), "demo's {} left: {left:?}", what[0]);
    }
    let labels = m.docker(&[
        "node",
        "inspect",
        "self",
        "--format",
        "{{json .Spec.Labels}}",
    ]);
    assert!(
        !labels.contains("berth.demo"),
        "the demo's node label is left: {labels}"
    );
    eprintln!(
        "demo on a one-node swarm: {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// `berth demo --runtime swarm` refuses, before doing anything, an engine that is not a
/// swarm manager (the error says `docker swarm init`) and a missing registry (exit 2).
#[test]
fn demo_on_swarm_says_docker_swarm_init_and_needs_a_registry() {
    crate::compose::docker_required();
    let tmp = temp_dir();
    let out = run(tmp.path(), &["demo", "--runtime", "swarm"]);
    out.assert_code(2);
    assert!(
        out.stderr.contains("--registry HOST:PORT"),
        "{}",
        out.snapshot()
    );
    // The shared test engine is in no swarm.
    let out = run(
        tmp.path(),
        &["demo", "--runtime", "swarm", "--registry", "127.0.0.1:9"],
    );
    out.assert_code(2);
    assert!(
        out.stderr.contains("`docker swarm init`"),
        "{}",
        out.snapshot()
    );
}
