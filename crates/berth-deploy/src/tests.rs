//! The executor against the in-memory fake runtime and a fake front door: the
//! runtime contract suite (berth-testkit's `contract`), and every failure and
//! switch-back path of the executor, in milliseconds.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use berth_runtime::Slot;
use berth_runtime::fake::{Broken, FakeRuntime};
use berth_testkit::GitRepo;
use berth_testkit::contract::{self, Break, Harness};

use super::*;
use crate::front_door::{Direct, FrontDoor, Maintenance};
use crate::proxy::ProxyError;

const MANIFEST: &str = r#"[project]
name = "fake"

[deploy]
drain = "5ms"
standby = "0"

[products.bestays]
paths = ["products/bestays/**"]

[products.bestays.services.server]
command = "server"
port = 8011
host_port = 8011
migrate = "migrate"
health = { path = "/health", interval = "5ms", timeout = "200ms", deadline = "300ms" }

[products.bestays.services.worker]
command = "worker"

[products.realestate]
paths = ["products/realestate/**"]

[products.realestate.services.server]
command = "server"
port = 8012
host_port = 8012
health = { path = "/health", interval = "5ms", timeout = "200ms", deadline = "300ms" }
"#;

type OnSwitch = Arc<dyn Fn(&str, Slot) + Send + Sync>;

#[derive(Default)]
struct DoorState {
    routed: BTreeMap<String, Slot>,
    reject_switch: bool,
    /// Called after each switch (a test's way to make the new slot die right then).
    on_switch: Option<OnSwitch>,
    switches: Vec<(String, Slot)>,
}

/// A front door in memory: the slot each product's traffic goes to.
#[derive(Clone, Default)]
struct FakeDoor(Arc<Mutex<DoorState>>);

impl FakeDoor {
    fn state(&self) -> std::sync::MutexGuard<'_, DoorState> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl FrontDoor for FakeDoor {
    fn switches(&self) -> bool {
        true
    }
    fn routed(&self, product: &str, _rt: &dyn Runtime) -> Result<Option<Slot>, ProxyError> {
        Ok(self.state().routed.get(product).copied())
    }
    fn live(&self, product: &str, rt: &dyn Runtime) -> Result<Option<Slot>, ProxyError> {
        let instances = rt.instances(product)?;
        let running: Vec<Slot> = [Slot::Blue, Slot::Green]
            .into_iter()
            .filter(|s| instances.iter().any(|i| i.slot == *s && i.alive))
            .collect();
        match (self.routed(product, rt)?, running.as_slice()) {
            (Some(s), _) if running.contains(&s) => Ok(Some(s)),
            (_, []) => Ok(None),
            (_, [one]) => Ok(Some(*one)),
            _ => Err(ProxyError::Config(
                "fake: cannot tell which slot is live".into(),
            )),
        }
    }
    fn switch(&self, product: &str, slot: Slot, _rt: &dyn Runtime) -> Result<(), ProxyError> {
        let hook = {
            let mut st = self.state();
            if st.reject_switch {
                return Err(ProxyError::Config(
                    "fake: the front door rejected the new configuration".into(),
                ));
            }
            st.routed.insert(product.to_string(), slot);
            st.switches.push((product.to_string(), slot));
            st.on_switch.clone()
        };
        if let Some(h) = hook {
            h(product, slot);
        }
        Ok(())
    }
    fn begin_maintenance(
        &self,
        _product: &str,
        _live: Slot,
        _rt: &dyn Runtime,
    ) -> Result<Option<Maintenance>, ProxyError> {
        Ok(None)
    }
    fn end_maintenance(&self, _m: &Maintenance, _rt: &dyn Runtime) -> Result<(), String> {
        Ok(())
    }
    fn trouble(&self, _serving: bool) -> Option<crate::front_door::Trouble> {
        None
    }
    fn drifted(&self, _product: &str, _rt: &dyn Runtime) -> bool {
        false
    }
    fn follow(&self, _product: &str, _rt: &dyn Runtime) -> Result<bool, ProxyError> {
        Ok(false)
    }
}

/// A git repository with the fake manifest, the fake runtime and front door.
struct Fake {
    repo: GitRepo,
    manifest: Manifest,
    rt: Arc<FakeRuntime>,
    door: FakeDoor,
    /// No front door that switches: deploys restart in place.
    direct: bool,
    store: Store,
    changes: u32,
    /// The progress lines of the last deploy.
    progress: String,
}

impl Fake {
    fn new() -> Self {
        let repo = GitRepo::new();
        repo.write("berth.toml", MANIFEST);
        repo.commit_all("chore: the fake site");
        let manifest = berth_manifest::parse_str("berth.toml", MANIFEST)
            .unwrap_or_else(|d| panic!("the fake manifest is valid: {d:?}"))
            .manifest;
        let rt = Arc::new(FakeRuntime::new(manifest.clone()));
        let store = Store::from_manifest(&manifest, repo.path()).unwrap();
        Self {
            repo,
            manifest,
            rt,
            door: FakeDoor::default(),
            direct: false,
            store,
            changes: 0,
            progress: String::new(),
        }
    }

    fn head(&self) -> String {
        self.repo.git(&["rev-parse", "HEAD"]).trim().to_string()
    }

    /// Run `f` with a deploy context.
    fn with_ctx<T>(&mut self, f: impl FnOnce(&mut Context<'_>) -> T) -> T {
        let mut progress: Vec<u8> = Vec::new();
        let front_door: Box<dyn FrontDoor> = if self.direct {
            Box::new(Direct)
        } else {
            Box::new(self.door.clone())
        };
        let out = {
            let mut ctx = Context {
                manifest: &self.manifest,
                root: self.repo.path().to_path_buf(),
                repo: berth_git::Repo::open(self.repo.path()).unwrap(),
                runtime: self.rt.as_ref(),
                front_door,
                operator: "test-operator".into(),
                lock_wait: Duration::ZERO,
                store: &self.store,
                progress: &mut progress,
            };
            f(&mut ctx)
        };
        self.progress = String::from_utf8_lossy(&progress).into_owned();
        out
    }

    fn deploy_commit(
        &mut self,
        product: &str,
        commit: &str,
        rollback_of: Option<String>,
    ) -> Result<Outcome, DeployError> {
        self.with_ctx(|ctx| {
            let p = plan(ctx, product, commit, rollback_of)?;
            execute(ctx, &p)
        })
    }

    fn plan_head(&mut self, product: &str) -> Plan {
        let head = self.head();
        self.with_ctx(|ctx| plan(ctx, product, &head, None).unwrap())
    }

    fn deploy_head(&mut self, product: &str) -> Result<Outcome, DeployError> {
        let head = self.head();
        self.deploy_commit(product, &head, None)
    }

    /// The audit records written so far.
    fn audit(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.repo.path().join(".berth/audit.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Which version answers `product`'s health path where the front door points.
    fn answering(&self, product: &str) -> Option<String> {
        let rt: &dyn Runtime = self.rt.as_ref();
        let slot = if self.direct {
            Direct.live(product, rt).ok().flatten()
        } else {
            self.door.routed(product, rt).ok().flatten()
        }?;
        let addresses = rt.addresses(product, "server", slot);
        let first = addresses.first()?;
        let p = health::probe(first, "/health", Duration::from_secs(1));
        if !p.ok() {
            eprintln!("answering {product} in {slot}: {p}");
        }
        p.ok().then(|| p.detail.clone())
    }
}

impl Harness for Fake {
    fn name(&self) -> String {
        "fake".into()
    }
    fn change(&mut self, product: &str) -> String {
        self.changes += 1;
        self.repo.write(
            &format!("products/{product}/change-{}.md", self.changes),
            "x",
        );
        let commit = self
            .repo
            .commit_all(&format!("feat: change {}", self.changes));
        commit[..12].to_string()
    }
    fn change_broken(&mut self, product: &str, how: Break) -> String {
        let v = self.change(product);
        let how = match how {
            Break::HealthNeverPasses => Broken::HealthNeverPasses,
            Break::MigrationFails => Broken::Migration,
            Break::ExitsAtStart => Broken::ExitsAtStart,
        };
        self.rt.break_version(product, &v, how);
        v
    }
    fn deploy(&mut self, product: &str) -> Result<(), String> {
        self.deploy_head(product)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
    fn rollback(&mut self, product: &str, to: Option<&str>) -> Result<(), String> {
        let (target, live) = self.with_ctx(|ctx| {
            let target = rollback_target(ctx, product, to).map_err(|e| e.to_string())?;
            let live = tags::history(&ctx.repo, product)
                .map_err(|e| e.to_string())?
                .into_iter()
                .next()
                .map(|r| r.tag)
                .unwrap_or_default();
            Ok::<_, String>((target, live))
        })?;
        self.deploy_commit(product, &target.commit, Some(live))
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
    fn deploy_killed_after(&mut self, product: &str, step: usize) -> bool {
        AFTER_STEP.with(|h| {
            *h.borrow_mut() = Some(Box::new(move |n| {
                if n == step {
                    // The stand-in for kill -9: unwind out of the executor here.
                    std::panic::resume_unwind(Box::new(format!("killed after step {step}")));
                }
            }))
        });
        let killed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _ = self.deploy_head(product);
        }))
        .is_err();
        AFTER_STEP.with(|h| *h.borrow_mut() = None);
        killed
    }
    fn deploy_tags(&mut self, product: &str) -> Vec<(String, String)> {
        let repo = berth_git::Repo::open(self.repo.path()).unwrap();
        tags::history(&repo, product)
            .unwrap()
            .into_iter()
            .map(|r| (r.tag, r.version))
            .collect()
    }
    fn serving(&mut self, product: &str) -> Option<String> {
        self.answering(product)
    }
}

/// The contract suite on the fake runtime; realestate, deployed once before, is
/// never touched (same instances, same slot) while bestays goes through it all.
#[test]
fn the_contract_suite_passes_on_the_fake_runtime() {
    let mut f = Fake::new();
    let re = f.change("realestate");
    f.deploy_head("realestate").unwrap();
    let before = f.rt.instances("realestate").unwrap();
    contract::run_all(&mut f, "bestays");
    let after = f.rt.instances("realestate").unwrap();
    assert_eq!(
        before.iter().map(|i| &i.id).collect::<Vec<_>>(),
        after.iter().map(|i| &i.id).collect::<Vec<_>>()
    );
    assert_eq!(f.answering("realestate"), Some(re));
}

/// A product another deploy holds: nothing runs, nothing is recorded as a deploy.
#[test]
fn a_held_lock_starts_nothing() {
    let mut f = Fake::new();
    f.change("bestays");
    let holder = lock::Holder {
        operator: "someone".into(),
        pid: 1,
        since: "2026-01-01T00:00:00Z".into(),
        message: "hands off".into(),
    };
    f.store.hold("bestays", &holder).unwrap();
    let e = f.deploy_head("bestays").unwrap_err();
    assert!(matches!(e, DeployError::NotStarted(_)), "{e}");
    assert_eq!(f.rt.calls(), Vec::<String>::new());
    let audit = f.audit();
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(
        (audit[0]["step"].as_str(), audit[0]["result"].as_str()),
        (Some("lock"), Some("failed"))
    );
}

/// A build that fails: the old version keeps serving, no slot was started or stopped.
#[test]
fn a_failed_build_changes_nothing_that_runs() {
    let mut f = Fake::new();
    let good = f.change("bestays");
    f.deploy_head("bestays").unwrap();
    let bad = f.change("bestays");
    f.rt.break_version("bestays", &bad, Broken::Build);
    let calls = f.rt.calls().len();
    let e = f.deploy_head("bestays").unwrap_err().to_string();
    assert!(e.contains("failed at step `build images (fake)`"), "{e}");
    assert!(
        !e.contains("the old version kept serving"),
        "nothing was started:\n{e}"
    );
    let after: Vec<String> = f.rt.calls()[calls..].to_vec();
    assert_eq!(after, [format!("build bestays {bad}")]);
    assert_eq!(f.answering("bestays"), Some(good));
}

/// The front door rejects the switch: traffic stays on the old slot, the new slot
/// is stopped, the failure names the switch.
#[test]
fn a_rejected_switch_keeps_the_old_slot_and_stops_the_new() {
    let mut f = Fake::new();
    let good = f.change("bestays");
    f.deploy_head("bestays").unwrap();
    f.change("bestays");
    f.door.state().reject_switch = true;
    let e = f.deploy_head("bestays").unwrap_err().to_string();
    assert!(
        e.contains("failed at step `switch traffic blue -> green"),
        "{e}"
    );
    assert!(e.contains("rejected the new configuration"), "{e}");
    assert_eq!(f.door.state().routed.get("bestays"), Some(&Slot::Blue));
    assert_eq!(f.rt.running_version("bestays", Slot::Green), None);
    assert_eq!(f.answering("bestays"), Some(good));
}

/// The new slot dies right after the switch: the check after the switch fails,
/// traffic goes back to the old slot, and the new one is stopped.
#[test]
fn a_slot_that_dies_after_the_switch_is_switched_back() {
    let mut f = Fake::new();
    let good = f.change("bestays");
    f.deploy_head("bestays").unwrap();
    f.change("bestays");
    let rt = f.rt.clone();
    f.door.state().on_switch = Some(Arc::new(move |product, slot| {
        if slot == Slot::Green {
            rt.crash(product, slot);
        }
    }));
    let e = f.deploy_head("bestays").unwrap_err().to_string();
    assert!(
        e.contains("failed at step `switch traffic blue -> green"),
        "{e}"
    );
    assert!(e.contains("exited before it became healthy"), "{e}");
    assert!(
        f.progress.contains("switching traffic back to blue"),
        "{}",
        f.progress
    );
    let switches = f.door.state().switches.clone();
    assert_eq!(
        switches[switches.len() - 2..],
        [
            ("bestays".to_string(), Slot::Green),
            ("bestays".to_string(), Slot::Blue)
        ]
    );
    assert_eq!(f.rt.running_version("bestays", Slot::Green), None);
    assert_eq!(f.answering("bestays"), Some(good));
}

/// A stranger answering where the idle slot would: the deploy stops before starting
/// anything there, and says why.
#[test]
fn a_busy_idle_slot_stops_the_deploy_before_it_starts() {
    let mut f = Fake::new();
    let good = f.change("bestays");
    f.deploy_head("bestays").unwrap();
    f.change("bestays");
    f.rt.occupy("bestays", Slot::Green);
    let e = f.deploy_head("bestays").unwrap_err().to_string();
    assert!(e.contains("failed at step `start the green slot"), "{e}");
    assert!(
        e.contains("already in use by a process berth did not start"),
        "{e}"
    );
    assert!(
        !f.rt
            .calls()
            .iter()
            .any(|c| c.starts_with("start bestays green"))
    );
    assert_eq!(f.answering("bestays"), Some(good));
}

/// A front door that does not switch: the plan restarts in place (and says it is
/// not zero-downtime), and a broken release there is reported like any other.
#[test]
fn without_a_switching_front_door_a_deploy_restarts_in_place() {
    let mut f = Fake::new();
    f.direct = true;
    let v1 = f.change("bestays");
    f.deploy_head("bestays").unwrap();
    assert_eq!(f.answering("bestays"), Some(v1));
    let v2 = f.change("bestays");
    let p = f.plan_head("bestays");
    assert!(!p.zero_downtime);
    assert!(p.steps.contains(&Step::RestartInPlace {
        slot: Slot::Blue,
        version: v2.clone()
    }));
    assert!(!p.steps.iter().any(|s| matches!(s, Step::Switch { .. })));
    f.deploy_head("bestays").unwrap();
    assert_eq!(f.answering("bestays"), Some(v2));
    let v3 = f.change("bestays");
    f.rt.break_version("bestays", &v3, Broken::HealthNeverPasses);
    let e = f.deploy_head("bestays").unwrap_err().to_string();
    assert!(
        e.contains("failed at step `health-check the blue slot`"),
        "{e}"
    );
}

/// The audit records of a deploy and of a failed one: one per step, by the step
/// names the audit log always had, then the deploy's own record.
#[test]
fn audit_records_name_each_step_and_the_deploy() {
    let mut f = Fake::new();
    f.change("bestays");
    f.deploy_head("bestays").unwrap();
    let bad = f.change("bestays");
    f.rt.break_version("bestays", &bad, Broken::Migration);
    f.deploy_head("bestays").unwrap_err();
    let audit = f.audit();
    let steps: Vec<(&str, &str)> = audit
        .iter()
        .map(|r| (r["step"].as_str().unwrap(), r["result"].as_str().unwrap()))
        .collect();
    assert_eq!(
        steps,
        [
            ("lock", "ok"),
            ("resolve-version", "ok"),
            ("build", "ok"),
            ("migrate", "ok"),
            ("start-slot", "ok"),
            ("health-check", "ok"),
            ("switch", "ok"),
            ("tag", "ok"),
            ("unlock", "ok"),
            ("deploy", "ok"),
            ("lock", "ok"),
            ("resolve-version", "ok"),
            ("build", "ok"),
            ("migrate", "failed"),
            ("deploy", "failed"),
        ]
    );
    let failed = &audit[audit.len() - 1];
    assert_eq!(failed["failed_step"], "migrate");
    assert_eq!(failed["version"], bad.as_str());
    let ok = &audit[9];
    assert!(
        ok["tag"].as_str().unwrap().starts_with("bestays-deploy-"),
        "{ok}"
    );
}

impl contract::StandbyHarness for Fake {
    fn set_standby(&mut self, product: &str, window: &str) -> String {
        self.manifest.deploy.standby = window.parse().unwrap();
        self.change(product)
    }
    fn instance_ids(&mut self, product: &str) -> Vec<String> {
        let mut ids: Vec<String> = self
            .rt
            .instances(product)
            .unwrap()
            .into_iter()
            .filter(|i| i.alive)
            .map(|i| i.id)
            .collect();
        ids.sort();
        ids
    }
    fn standby(&mut self, product: &str) -> Option<contract::StandbyView> {
        let repo = berth_git::Repo::open(self.repo.path()).unwrap();
        let s = standby::find(&self.manifest, &repo, self.rt.as_ref(), &self.door, product)?;
        Some(contract::StandbyView {
            slot: s.slot.to_string(),
            version: s.version,
            alive: s.alive,
            until_unix: s.until_unix,
        })
    }
    fn kill_standby(&mut self, product: &str) {
        let s = self.standby(product).expect("a standby to kill");
        self.rt.crash(product, Slot::parse(&s.slot).unwrap());
    }
    fn harness(&mut self) -> &mut dyn Harness {
        self
    }
}

/// The warm-standby scenarios of the contract suite on the fake runtime, and what
/// only the fake can see: a rollback within the window calls nothing on the runtime
/// that changes something (no start, no stop, no build, no migration).
#[test]
fn the_standby_scenarios_pass_on_the_fake_runtime() {
    let mut f = Fake::new();
    contract::run_standby(&mut f, "bestays");
}

/// Within the window: the rollback's plan is a switch to the standby, and executing
/// it changes nothing in the runtime. The old slot stays a standby after a deploy
/// (no stop), and `standby = "0"` stops it as before.
#[test]
fn a_rollback_within_the_window_is_only_a_switch() {
    use contract::StandbyHarness;
    let mut f = Fake::new();
    let v1 = f.set_standby("bestays", "10m");
    f.deploy_head("bestays").unwrap();
    f.change("bestays");
    f.deploy_head("bestays").unwrap();
    let calls = f.rt.calls();
    assert!(
        calls
            .last()
            .is_some_and(|c| c.starts_with("start bestays green")),
        "the deploy stopped nothing after its start: the old slot is a standby: {calls:?}"
    );
    assert_eq!(
        f.rt.running_version("bestays", Slot::Blue),
        Some(v1.clone())
    );
    let plan = f.plan_head("bestays");
    assert!(
        plan.steps.iter().any(|s| matches!(
            s,
            Step::KeepStandby {
                slot: Slot::Green,
                ..
            }
        )),
        "{:?}",
        plan.steps
    );
    let before = f.rt.calls().len();
    f.rollback("bestays", None).unwrap();
    let during: Vec<String> = f.rt.calls()[before..].to_vec();
    assert_eq!(
        during,
        Vec::<String>::new(),
        "the rollback changed the runtime"
    );
    assert!(
        f.progress
            .contains("as a warm standby: no build, no start, no migration"),
        "{}",
        f.progress
    );
    assert_eq!(f.answering("bestays"), Some(v1));
    // Off: the old slot is drained and stopped by the deploy itself.
    f.set_standby("bestays", "0");
    f.deploy_head("bestays").unwrap();
    assert!(f.standby("bestays").is_none(), "{:?}", f.rt.calls());
}
