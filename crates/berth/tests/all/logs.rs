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
pub struct Follower {
    pub child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    pub seen: Vec<serde_json::Value>,
}

impl Follower {
    pub fn start(site: &Site, args: &[&str]) -> Self {
        let mut c = berth(site.repo.path());
        c.args(args);
        Self::spawn(c)
    }

    /// `c` (a `berth logs` command) running in the background.
    pub fn spawn(mut c: std::process::Command) -> Self {
        let mut child = c
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
    pub fn until(&mut self, limit: Duration, what: &str, f: impl Fn(&serde_json::Value) -> bool) {
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
pub fn tick(v: &serde_json::Value) -> Option<(u64, u128)> {
    let line = v["line"].as_str()?;
    let rest = line.strip_prefix("demo-app: tick ")?;
    let (n, ms) = rest.split_once(" at ")?;
    Some((n.parse().ok()?, ms.parse().ok()?))
}

pub fn now_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

/// Two deploys under one `logs -f`: blue (v1), then green (v2), then blue again (v3,
/// whose log file on the local runtime still holds v1's lines: none may come back).
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
    let mut versions = vec![v1];
    for (n, slot) in [(51, "green"), (52, "blue")] {
        site.change("bestays", n);
        versions.push(site.head_version());
        site.berth(&["deploy", "bestays", "--yes"]).assert_code(0);
        let deployed_ms = now_ms();
        // Ticks of the new slot written after the deploy (and its drain) ended.
        let version = versions.last().unwrap().clone();
        f.until(
            Duration::from_secs(60),
            "from the new slot after the deploy",
            |v| {
                v["slot"] == slot
                    && v["version"] == version.as_str()
                    && tick(v).is_some_and(|(_, ms)| ms > deployed_ms)
            },
        );
    }
    let _ = f.child.kill();
    let seen = std::mem::take(&mut f.seen);
    for v in &seen {
        assert_eq!(v["product"], "bestays", "{v}");
        assert_eq!(v["service"], "server", "{v}");
    }
    // The lines come in three runs, one per deploy, in order, never interleaved.
    let mut segments: Vec<((String, String), Vec<&serde_json::Value>)> = Vec::new();
    for v in &seen {
        let key = (
            v["slot"].as_str().unwrap().to_string(),
            v["version"].as_str().unwrap().to_string(),
        );
        match segments.last_mut() {
            Some((k, lines)) if *k == key => lines.push(v),
            _ => segments.push((key, vec![v])),
        }
    }
    let keys: Vec<(String, String)> = segments.iter().map(|(k, _)| k.clone()).collect();
    let want: Vec<(String, String)> = ["blue", "green", "blue"]
        .iter()
        .zip(&versions)
        .map(|(s, v)| (s.to_string(), v.clone()))
        .collect();
    assert_eq!(keys, want, "{seen:#?}");
    // Each run's ticks are consecutive (nothing lost, nothing shown twice), a new slot
    // is shown from its first tick, and between one run's last line and the next's
    // first there is no gap longer than the drain (1 s).
    let ticks: Vec<Vec<(u64, u128)>> = segments
        .iter()
        .map(|(_, lines)| lines.iter().filter_map(|v| tick(v)).collect())
        .collect();
    for (i, t) in ticks.iter().enumerate() {
        assert!(!t.is_empty(), "run {i} shows no tick: {seen:#?}");
        for w in t.windows(2) {
            assert_eq!(w[1].0, w[0].0 + 1, "run {i}'s ticks skip or repeat: {t:?}");
        }
        if i > 0 {
            assert_eq!(t[0].0, 0, "run {i}'s first lines are missing: {t:?}");
            let last = ticks[i - 1].last().unwrap().1;
            assert!(
                t[0].1 <= last + 1000,
                "gap of {} ms before run {i}",
                t[0].1 as i128 - last as i128
            );
        }
    }
    // A sample of the lines (every run, ticks and the rest) against the committed schema.
    let sample: Vec<serde_json::Value> = segments
        .iter()
        .flat_map(|(_, lines)| lines.iter().take(4).chain(lines.iter().rev().take(2)))
        .map(|v| (*v).clone())
        .collect();
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
