//! `berth logs`: the live slot's lines tagged with product, service, slot and version,
//! secrets masked, and `-f` across a real deploy (the old slot's lines, then the new
//! slot's, none lost or doubled), on the local and compose runtimes.

use std::io::BufRead;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::deploy::Site;
use crate::support::*;

/// `check-jsonschema` validates `docs` against the committed schema `schema`.
pub fn validate_json_docs(schema: &str, docs: &[serde_json::Value]) {
    let venv = workspace_root().join("scripts/tools/venv/bin");
    let tool = berth_testkit::require_program(
        "check-jsonschema",
        &[venv.to_str().unwrap()],
        "pip install check-jsonschema",
    );
    let dir = temp_dir();
    let mut c = std::process::Command::new(tool);
    c.arg("--schemafile")
        .arg(workspace_root().join("schema").join(schema));
    for (i, d) in docs.iter().enumerate() {
        let f = dir.path().join(format!("doc-{i}.json"));
        std::fs::write(&f, serde_json::to_string(d).unwrap()).unwrap();
        c.arg(f);
    }
    let out = c.output().expect("run check-jsonschema");
    assert!(
        out.status.success(),
        "documents do not validate against schema/{schema}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The server of bestays writes `demo-app: tick <n> at <ms>` every 50 ms.
fn ticking_site(compose: bool) -> Site {
    let site = if compose {
        Site::compose(0)
    } else {
        Site::new(0)
    };
    site.edit_manifest(
        "PRODUCT_ID = \"bestays\",",
        "PRODUCT_ID = \"bestays\", DEMO_LOG_EVERY_MS = \"50\",",
    );
    site.berth(&["render", "--env", "dev"]).assert_code(0);
    site.repo
        .commit_all("chore: a ticking server (TASK-50-ticks-bestays)");
    site
}

/// `berth logs <args>` running in the background; its stdout lines arrive on the channel.
struct Follower {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    seen: Vec<serde_json::Value>,
}

impl Follower {
    fn start(site: &Site, args: &[&str]) -> Self {
        let mut child = berth(site.repo.path())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        Self {
            child,
            lines: rx,
            seen: Vec::new(),
        }
    }

    /// Read lines until one satisfies `f` (at most `limit`).
    fn until(&mut self, limit: Duration, what: &str, f: impl Fn(&serde_json::Value) -> bool) {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    let v: serde_json::Value = serde_json::from_str(&l)
                        .unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}"));
                    let hit = f(&v);
                    self.seen.push(v);
                    if hit {
                        return;
                    }
                }
                Err(_) => panic!("no line {what} within {limit:?}; seen: {:#?}", self.seen),
            }
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// (tick number, its unix ms) of a tick line.
fn tick(v: &serde_json::Value) -> Option<(u64, u128)> {
    let line = v["line"].as_str()?;
    let rest = line.strip_prefix("demo-app: tick ")?;
    let (n, ms) = rest.split_once(" at ")?;
    Some((n.parse().ok()?, ms.parse().ok()?))
}

fn follow_across_a_deploy(compose: bool) {
    let site = ticking_site(compose);
    site.berth(&["deploy", "bestays", "--yes"]).assert_code(0);
    let v1 = site.head_version();
    let mut f = Follower::start(
        &site,
        &["logs", "bestays", "server", "-f", "--format", "json"],
    );
    f.until(Duration::from_secs(30), "from blue", |v| {
        v["slot"] == "blue" && tick(v).is_some()
    });
    site.change("bestays", 51);
    let v2 = site.head_version();
    site.berth(&["deploy", "bestays", "--yes"]).assert_code(0);
    let deployed_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    // Green ticks written after the deploy (and its drain) ended.
    f.until(
        Duration::from_secs(60),
        "from green after the deploy",
        |v| v["slot"] == "green" && tick(v).is_some_and(|(_, ms)| ms > deployed_ms),
    );
    let _ = f.child.kill();
    let seen = std::mem::take(&mut f.seen);
    for v in &seen {
        assert_eq!(v["product"], "bestays", "{v}");
        assert_eq!(v["service"], "server", "{v}");
    }
    let first_green = seen.iter().position(|v| v["slot"] == "green").unwrap();
    assert!(
        seen[first_green..].iter().all(|v| v["slot"] == "green"),
        "blue lines after the first green one: {seen:#?}"
    );
    assert!(
        seen[..first_green]
            .iter()
            .all(|v| v["slot"] == "blue" && v["version"] == v1.as_str()),
        "{seen:#?}"
    );
    assert!(
        seen[first_green..]
            .iter()
            .all(|v| v["version"] == v2.as_str()),
        "{seen:#?}"
    );
    // Each slot's ticks are consecutive: nothing lost, nothing shown twice; the new
    // slot's run is shown from its first tick.
    let ticks = |slot: &str| -> Vec<(u64, u128)> {
        seen.iter()
            .filter(|v| v["slot"] == slot)
            .filter_map(tick)
            .collect()
    };
    let (blue, green) = (ticks("blue"), ticks("green"));
    for (name, t) in [("blue", &blue), ("green", &green)] {
        for w in t.windows(2) {
            assert_eq!(w[1].0, w[0].0 + 1, "{name} ticks skip or repeat: {t:?}");
        }
    }
    assert_eq!(
        green[0].0, 0,
        "the new slot's first lines are missing: {green:?}"
    );
    // No gap longer than the drain (1 s) between the old slot's last line and the new's.
    let last_blue = blue.last().unwrap().1;
    let first_green_ms = green[0].1;
    assert!(
        first_green_ms <= last_blue + 1000,
        "gap of {} ms between blue's last line and green's first",
        first_green_ms as i128 - last_blue as i128
    );
    // A sample of the lines (both slots, ticks and the rest) against the committed schema.
    let mut sample: Vec<serde_json::Value> = seen.iter().take(5).cloned().collect();
    sample.extend(seen[first_green..].iter().take(5).cloned());
    sample.extend(seen.iter().rev().take(3).cloned());
    validate_json_docs("logs.schema.json", &sample);
}

#[test]
fn logs_follow_across_a_deploy_shows_the_old_slot_then_the_new_one() {
    follow_across_a_deploy(false);
}

#[test]
fn logs_follow_across_a_deploy_shows_the_old_slot_then_the_new_one_on_compose() {
    follow_across_a_deploy(true);
}

/// Plain `berth logs`: the live slot's last lines with product, service, slot and
/// version; a secret value the service printed is masked; `--since` is refused on the
/// local runtime (its files record no times) with exit 2; an unknown service is exit 2.
#[test]
fn logs_tag_lines_and_mask_secret_values() {
    let site = Site::new(0);
    site.edit_manifest(
        "command = \"demo-app\"\n# Local runtime",
        "command = \"echo key is $CLERK_SECRET_KEY; exec demo-app\"\n# Local runtime",
    );
    site.repo
        .commit_all("chore: a server that prints its key (TASK-52-key-bestays)");
    site.berth(&["deploy", "bestays", "--yes"]).assert_code(0);
    let version = site.head_version();
    let secret = "test-bestays-clerk_secret_key";
    let out = site.berth(&["logs", "bestays", "server"]);
    out.assert_code(0);
    assert!(
        out.stdout
            .contains(&format!("bestays server blue {version} | key is ")),
        "{}",
        out.snapshot()
    );
    assert!(!out.all().contains(secret), "{}", out.snapshot());
    assert!(out.stdout.contains("listening on"), "{}", out.snapshot());
    let json = site.berth(&["logs", "bestays", "--tail", "1", "--format", "json"]);
    json.assert_code(0);
    let docs: Vec<serde_json::Value> = json
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // One line of each service.
    assert_eq!(docs.len(), 2, "{}", json.snapshot());
    validate_json_docs("logs.schema.json", &docs);
    let since = site.berth(&["logs", "bestays", "--since", "10m"]);
    since.assert_code(2);
    assert!(since.stderr.contains("--tail"), "{}", since.snapshot());
    site.berth(&["logs", "bestays", "nope"]).assert_code(2);
}
