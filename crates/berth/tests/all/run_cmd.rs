//! `berth run`: a one-off command in the live version's environment (the product's own
//! DATABASE_URL, not another product's, not the admin's), its exit code passed through,
//! and an audit record with the command and the code but no value; local and compose.

use sha2::Digest;

use crate::deploy::Site;
use crate::logs::validate_json_docs;

const SCRIPT: &str = "echo $DATABASE_URL | wc -c; printf %s \"$DATABASE_URL\" | sha256sum; env | grep -c ADMIN_URL; exit 7";

fn secret_value(site: &Site, product: &str, name: &str) -> String {
    let path = site
        .repo
        .path()
        .join(format!(".berth/secrets/{product}.env"));
    let f = berth_render::secrets::SecretFile::load(&path).unwrap();
    f.get(name)
        .unwrap_or_else(|| panic!("{product} has no {name}"))
        .to_string()
}

fn runs_in_the_products_own_environment(site: Site) {
    let admin = "postgresql://postgres:admin-pw-91c2@127.0.0.1:1/postgres";
    site.berth(&["deploy", "bestays", "--yes"]).assert_code(0);
    let out = site.berth_env(
        &["run", "bestays", "--", "sh", "-c", SCRIPT],
        &[("BERTH_POSTGRES_ADMIN_URL", admin)],
    );
    // The command's own exit code.
    out.assert_code(7);
    let own = secret_value(&site, "bestays", "DATABASE_URL");
    let other = secret_value(&site, "realestate", "DATABASE_URL");
    assert_ne!(own, other);
    let lines: Vec<&str> = out.stdout.lines().map(str::trim).collect();
    assert_eq!(lines.len(), 3, "{}", out.snapshot());
    assert_eq!(lines[0], (own.len() + 1).to_string(), "{}", out.snapshot());
    let hash = |s: &str| format!("{:x}", sha2::Sha256::digest(s.as_bytes()));
    assert_eq!(
        lines[1].split_whitespace().next(),
        Some(hash(&own).as_str()),
        "not bestays' DATABASE_URL (realestate's hashes to {}, the admin's to {})",
        hash(&other),
        hash(admin)
    );
    // No admin URL of any kind in its environment.
    assert_eq!(lines[2], "0", "{}", out.snapshot());
    // The audit record: who, what, when, the exit code; no value.
    let audit = std::fs::read_to_string(site.repo.path().join(".berth/audit.jsonl")).unwrap();
    let runs: Vec<serde_json::Value> = audit
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|r| r["step"] == "run")
        .collect();
    assert_eq!(runs.len(), 1, "{audit}");
    let r = &runs[0];
    assert_eq!(r["product"], "bestays");
    assert_eq!(r["operator"], "test-operator");
    assert_eq!(r["exit_code"], 7);
    assert_eq!(r["result"], "failed");
    assert_eq!(r["service"], "server");
    assert_eq!(r["slot"], "blue");
    assert_eq!(r["version"], site.head_version().as_str());
    assert_eq!(r["command"], serde_json::json!(["sh", "-c", SCRIPT]));
    assert!(r["at"].as_str().is_some_and(|a| a.ends_with('Z')), "{r}");
    for value in [own.as_str(), other.as_str(), admin] {
        assert!(!audit.contains(value), "a value reached the audit log");
    }
    validate_json_docs("audit.schema.json", &runs);
    // A command that succeeds: exit 0, recorded ok.
    site.berth(&["run", "bestays", "--", "true"]).assert_code(0);
    a_running_command_is_no_instance_of_a_slot(&site);
    // Nothing of realestate runs: no version to run as.
    let none = site.berth(&["run", "realestate", "--", "true"]);
    none.assert_code(1);
    assert!(
        none.stderr.contains("nothing of realestate runs"),
        "{}",
        none.snapshot()
    );
}

#[test]
fn run_sees_the_products_own_database_url_and_passes_its_exit_code_through() {
    runs_in_the_products_own_environment(Site::new(0));
}

#[test]
fn run_sees_the_products_own_database_url_and_passes_its_exit_code_through_on_compose() {
    let site = Site::compose(0);
    // A server image with a shell (FROM scratch has none): Debian's, with the demo-app.
    let base = crate::compose::python_base_image();
    site.repo.write(
        "docker/server.Dockerfile",
        &format!("FROM {base}\nCOPY demo-app /demo-app\nCMD [\"/demo-app\"]\n"),
    );
    site.repo
        .commit_all("chore: a server image with a shell (TASK-53-shell-bestays)");
    runs_in_the_products_own_environment(site);
}

/// Ctrl-C at the terminal reaches the whole foreground group: the command handles it,
/// and berth outlives it to audit and pass on its exit code (not die of the signal).
#[test]
fn an_interrupt_is_the_commands_to_handle_and_its_exit_code_still_passes_through() {
    use std::io::BufRead;
    use std::os::unix::process::CommandExt;
    let site = Site::new(0);
    site.berth(&["deploy", "bestays", "--yes"]).assert_code(0);
    let mut child = crate::support::berth(site.repo.path())
        .args([
            "run",
            "bestays",
            "--",
            "sh",
            "-c",
            "trap 'echo interrupted; exit 42' INT; echo ready; while :; do sleep 0.1; done",
        ])
        .env("BERTH_OPERATOR", "test-operator")
        .stdout(std::process::Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    // As a terminal does: SIGINT to every process of the foreground group.
    let pgid = child.id();
    let status = std::process::Command::new("kill")
        .args(["-INT", "--", &format!("-{pgid}")])
        .status()
        .unwrap();
    assert!(status.success());
    let code = child.wait().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    assert_eq!(
        code.code(),
        Some(42),
        "{code:?}; output after ready: {rest}"
    );
    assert!(rest.contains("interrupted"), "{rest}");
    let audit = std::fs::read_to_string(site.repo.path().join(".berth/audit.jsonl")).unwrap();
    assert!(
        audit
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .any(|r| r["step"] == "run" && r["exit_code"] == 42),
        "{audit}"
    );
}

/// While a one-off command runs (its own container on compose, labelled with the live
/// slot's service), the runtime still reports exactly the slot's instances: status, the
/// front door's live slot and the idle-slot cleanup of the next deploy read them.
fn a_running_command_is_no_instance_of_a_slot(site: &Site) {
    use std::io::BufRead;
    let root = site.repo.path();
    let text = std::fs::read_to_string(root.join("berth.toml")).unwrap();
    let m = berth_manifest::parse_str("berth.toml", &text)
        .expect("parses")
        .manifest;
    let rt = berth_runtime::open(Some(site.runtime), &m, root);
    let ids = |what: &str| -> Vec<String> {
        let mut ids: Vec<String> = rt
            .instances("bestays")
            .unwrap_or_else(|e| panic!("{what}: {e}"))
            .iter()
            .map(|i| format!("{} {} {}", i.service, i.slot, i.id))
            .collect();
        ids.sort();
        ids
    };
    let before = ids("before the run");
    assert!(!before.is_empty());
    let mut child = crate::support::berth(root)
        .args(["run", "bestays", "--", "sh", "-c", "echo ready; sleep 3"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready");
    let during = ids("while the command runs");
    assert!(child.wait().unwrap().success());
    assert_eq!(
        during, before,
        "the one-off command's process counts as an instance of the slot"
    );
}
