//! The runtime contract suite (berth-testkit's `contract`) on the real runtimes:
//! local processes and Docker Compose, behind a real nginx. Every deploy, rollback
//! and kill runs under load through nginx: no request may fail, and a failed
//! deploy's requests are all answered by the old version. realestate, deployed
//! once before, is never touched.

use std::io::Read;
use std::time::{Duration, Instant};

use berth_runtime::Kind;
use berth_testkit::contract::{self, Break, Harness, StandbyHarness, StandbyView};

use crate::deploy::Site;
use crate::support::*;

struct SiteHarness {
    site: Site,
    /// berth.toml as committed before any broken release.
    base: String,
    /// A broken release changed berth.toml: the next change puts it back.
    manifest_changed: bool,
    changes: u32,
}

impl SiteHarness {
    fn new(kind: Kind) -> Self {
        let site = Site::with(kind, 300);
        let base = std::fs::read_to_string(site.repo.path().join("berth.toml")).unwrap();
        Self {
            site,
            base,
            manifest_changed: false,
            changes: 0,
        }
    }

    fn host(product: &str) -> String {
        format!("{product}.app")
    }

    /// Run `berth args` under load through nginx; the load's report must be clean
    /// (or, for a failed deploy, answered by the old version only).
    fn under_load(&mut self, product: &str, args: &[&str]) -> Outcome {
        let before = self.serving(product);
        let load = before
            .is_some()
            .then(|| self.site.load(&Self::host(product)));
        if let Some(l) = &load {
            l.wait_for_answers(10);
        }
        let out = self.site.berth(args);
        if let Some(l) = load {
            l.wait_for_answers(10);
            let report = l.finish();
            eprintln!("[{}] berth {}:", self.name(), args.join(" "));
            report.assert_clean(20).assert_covered();
            if out.code != 0 {
                assert_eq!(
                    report.versions(),
                    [before.clone().unwrap()],
                    "[{}] only the old version answered during the failed `berth {}`",
                    self.name(),
                    args.join(" ")
                );
            }
        }
        out
    }
}

impl Harness for SiteHarness {
    fn name(&self) -> String {
        format!("{:?}", self.site.runtime).to_lowercase()
    }

    fn change(&mut self, product: &str) -> String {
        if self.manifest_changed {
            self.site.repo.write("berth.toml", &self.base);
            self.site.berth(&["render", "--env", "dev"]).assert_code(0);
            self.manifest_changed = false;
        }
        self.changes += 1;
        self.site.change(product, 1000 + self.changes);
        self.site.head_version()
    }

    fn change_broken(&mut self, product: &str, how: Break) -> String {
        let switch = match how {
            Break::HealthNeverPasses => "DEMO_FAIL_HEALTH",
            Break::MigrationFails => "DEMO_FAIL_MIGRATE",
            Break::ExitsAtStart => "DEMO_EXIT_AT_START",
        };
        let marker = format!("PRODUCT_ID = \"{product}\",");
        assert!(self.base.contains(&marker));
        self.site.repo.write(
            "berth.toml",
            &self
                .base
                .replace(&marker, &format!("{marker} {switch} = \"1\",")),
        );
        // The compose files follow berth.toml.
        self.site.berth(&["render", "--env", "dev"]).assert_code(0);
        self.manifest_changed = true;
        self.changes += 1;
        self.site.repo.commit_all(&format!(
            "feat: broken {} (TASK-{}-broken-{product})",
            self.changes,
            1000 + self.changes
        ));
        self.site.head_version()
    }

    fn deploy(&mut self, product: &str) -> Result<(), String> {
        let before = self.serving(product);
        let out = self.under_load(product, &["deploy", product, "--yes"]);
        match out.code {
            0 => Ok(()),
            1 => {
                // What the report shows beyond the contract: the new slot's log tail
                // (it started unless the migration failed), and nothing of the new
                // version left running.
                if !out.stderr.contains("at step `run the migration of") {
                    assert!(
                        out.stderr
                            .contains(&format!("last log lines of {product}.server (")),
                        "{}",
                        out.snapshot()
                    );
                }
                if let Some(live) = before {
                    let leftovers: Vec<_> = self
                        .site
                        .processes(product)
                        .into_iter()
                        .filter(|(t, _)| !t.contains(&live))
                        .collect();
                    assert!(leftovers.is_empty(), "leftovers {leftovers:?}");
                }
                Err(out.stderr)
            }
            _ => panic!("unexpected exit code\n{}", out.snapshot()),
        }
    }

    fn rollback(&mut self, product: &str, to: Option<&str>) -> Result<(), String> {
        let mut args = vec!["rollback", product, "--yes"];
        if let Some(t) = to {
            args.extend(["--to", t]);
        }
        let out = self.under_load(product, &args);
        match out.code {
            0 => Ok(()),
            _ => Err(out.snapshot()),
        }
    }

    fn deploy_killed_after(&mut self, product: &str, step: usize) -> bool {
        let load = self.site.load(&Self::host(product));
        load.wait_for_answers(10);
        let mut child = berth(self.site.repo.path())
            .args(["deploy", product, "--yes"])
            .env("BERTH_OPERATOR", "test-operator")
            .env("BERTH_DEBUG_PAUSE_AFTER_STEP", step.to_string())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Wait for the pause, or the end for steps past the plan.
        let mut err = child.stderr.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut s = String::new();
            let mut buf = [0u8; 256];
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(120) {
                match err.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        s.push_str(&String::from_utf8_lossy(&buf[..n]));
                        // The whole line: its step number may come in a later read.
                        if s.split_once("paused after step")
                            .is_some_and(|(_, rest)| rest.contains('\n'))
                        {
                            break;
                        }
                    }
                }
            }
            s
        });
        let progress = reader.join().unwrap();
        let paused = progress.contains(&format!("paused after step {step} "));
        if paused {
            // It is still there, paused, when the kill comes (else the kill proves nothing).
            assert!(
                child.try_wait().unwrap().is_none(),
                "the deploy ended instead of pausing after step {step}:\n{progress}"
            );
            child.kill().unwrap(); // SIGKILL
            let killed = child.wait().unwrap();
            assert_eq!(
                std::os::unix::process::ExitStatusExt::signal(&killed),
                Some(9),
                "{killed:?}"
            );
        } else {
            let status = child.wait().unwrap();
            assert!(status.success(), "{status:?}:\n{progress}");
        }
        load.wait_for_answers(10);
        eprintln!("[{}] kill -9 after step {step}:", self.name());
        load.finish().assert_clean(20).assert_covered();
        paused
    }

    fn deploy_tags(&mut self, product: &str) -> Vec<(String, String)> {
        let v = json(self.site.repo.path(), &["history", product], 0);
        v["deploys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                (
                    d["tag"].as_str().unwrap().to_string(),
                    d["version"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    fn serving(&mut self, product: &str) -> Option<String> {
        match self.site.get(&Self::host(product), "/api/health") {
            (200, version) if !version.is_empty() => Some(version),
            _ => None,
        }
    }
}

impl SiteHarness {
    /// The product's instances as the runtime reports them.
    fn instances(&self, product: &str) -> Vec<berth_runtime::Instance> {
        let path = self.site.repo.path().join("berth.toml");
        let m = berth_manifest::load_path(&path).unwrap().0.manifest;
        berth_runtime::open(Some(self.site.runtime), &m, self.site.repo.path())
            .instances(product)
            .unwrap()
    }
}

impl StandbyHarness for SiteHarness {
    fn set_standby(&mut self, product: &str, window: &str) -> String {
        // The `[deploy]` line the site writes (not the example's comment).
        let old = self
            .base
            .lines()
            .find(|l| l.starts_with("standby = "))
            .expect("the site's berth.toml sets standby")
            .to_string();
        self.base = self.base.replace(
            &format!("\n{old}\n"),
            &format!("\nstandby = \"{window}\"\n"),
        );
        self.manifest_changed = true;
        self.change(product)
    }

    fn instance_ids(&mut self, product: &str) -> Vec<String> {
        let mut ids: Vec<String> = self
            .instances(product)
            .into_iter()
            .filter(|i| i.alive)
            .map(|i| i.id)
            .collect();
        ids.sort();
        ids
    }

    fn standby(&mut self, product: &str) -> Option<StandbyView> {
        let v = json(self.site.repo.path(), &["status", product], 0);
        let Some(s) = v["standby"].as_array().and_then(|a| a.first()).cloned() else {
            eprintln!(
                "[{}] no standby: status {v}\ninstances {:?}\nberth.toml: {:?}",
                self.name(),
                self.instances(product),
                std::fs::read_to_string(self.site.repo.path().join("berth.toml"))
                    .unwrap()
                    .lines()
                    .filter(|l| l.contains("standby"))
                    .collect::<Vec<_>>()
            );
            return None;
        };
        Some(StandbyView {
            slot: s["slot"].as_str()?.to_string(),
            version: s["version"].as_str()?.to_string(),
            alive: s["alive"].as_bool()?,
            until_unix: s["until_unix"].as_u64()?,
        })
    }

    fn kill_standby(&mut self, product: &str) {
        let sb = self.standby(product).expect("a standby to kill");
        for i in self.instances(product) {
            if i.slot.name() != sb.slot || !i.alive {
                continue;
            }
            if self.site.compose.is_some() {
                let out = std::process::Command::new("docker")
                    .args(["kill", &i.id])
                    .output()
                    .unwrap();
                assert!(out.status.success(), "{out:?}");
            } else {
                // The process group this test's berth started (its pid file names it).
                let pid: i32 = i.id.parse().unwrap();
                let out = std::process::Command::new("kill")
                    .args(["-9", "--", &format!("-{pid}")])
                    .output()
                    .unwrap();
                assert!(out.status.success(), "{out:?}");
            }
        }
        // Until the runtime sees it dead.
        let until = Instant::now() + Duration::from_secs(20);
        while self
            .instances(product)
            .iter()
            .any(|i| i.slot.name() == sb.slot && i.alive)
        {
            assert!(Instant::now() < until, "the killed standby still runs");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn harness(&mut self) -> &mut dyn Harness {
        self
    }
}

/// The warm-standby scenarios under load: a rollback within the window is a switch
/// (the same processes before and after), a dead standby is started again, and
/// after the window the rollback starts the slot.
fn the_standby_scenarios_pass_on(kind: Kind) {
    let mut h = SiteHarness::new(kind);
    contract::run_standby(&mut h, "bestays");
}

#[test]
fn the_standby_scenarios_pass_on_local() {
    the_standby_scenarios_pass_on(Kind::Local);
}

#[test]
fn the_standby_scenarios_pass_on_compose() {
    the_standby_scenarios_pass_on(Kind::Compose);
}

fn the_contract_suite_passes_on(kind: Kind) {
    the_scenarios_pass_on(kind, |_| true);
}

/// The suite's scenarios `which` picks, on one site of `kind`.
fn the_scenarios_pass_on(kind: Kind, which: impl Fn(&str) -> bool) {
    let mut h = SiteHarness::new(kind);
    h.site
        .berth(&["deploy", "realestate", "--yes"])
        .assert_code(0);
    let realestate = h.site.processes("realestate");
    assert!(!realestate.is_empty());
    for (name, scenario) in contract::SCENARIOS.iter().filter(|(n, _)| which(n)) {
        eprintln!("contract [{}]: {name}", h.name());
        scenario(&mut h, "bestays");
    }
    assert_eq!(
        h.site.processes("realestate"),
        realestate,
        "realestate's processes were never touched"
    );
}

#[test]
fn the_contract_suite_passes_on_local() {
    the_contract_suite_passes_on(Kind::Local);
}

#[test]
fn the_contract_suite_passes_on_compose() {
    the_contract_suite_passes_on(Kind::Compose);
}

/// The suite on a real three-node swarm (`Swarm::shared`): bestays's two server tasks
/// on its two labelled workers, realestate on the manager, images through the
/// swarm's registry, the host's nginx in front.
/// A swarm deploy takes 13-17 s, so the suite runs as two tests on two sites of the one
/// swarm (their ports differ), which the test runner can run side by side: the kill
/// after every step (about 22 deploys) apart from the rest.
#[test]
fn the_contract_suite_passes_on_swarm() {
    the_scenarios_pass_on(Kind::Swarm, |n| !n.starts_with("killed_"));
}

#[test]
fn the_contract_suite_passes_on_swarm_killed_between_steps() {
    the_scenarios_pass_on(Kind::Swarm, |n| n.starts_with("killed_"));
}
