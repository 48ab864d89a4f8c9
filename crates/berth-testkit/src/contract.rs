//! The runtime contract suite: one list of deploy scenarios every runtime must pass
//! (deploy, redeploy, rollback to any retained version, each broken release, a deploy
//! killed between its steps). A scenario drives a [`Harness`]; each runtime brings
//! its own harness: the in-memory fake in berth-deploy's unit tests, the real local
//! and compose runtimes (behind nginx, under load) in the integration tests.
//!
//! Scenarios only use what the harness says: the version answering through the front
//! door, the deploy tags, and whether a deploy or rollback succeeded.

/// How a release is broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Break {
    /// Its health check never answers 2xx.
    HealthNeverPasses,
    /// Its migration exits non-zero.
    MigrationFails,
    /// Its processes exit right after they start.
    ExitsAtStart,
}

impl Break {
    pub const ALL: [Break; 3] = [
        Break::HealthNeverPasses,
        Break::MigrationFails,
        Break::ExitsAtStart,
    ];

    /// What the failure report must say: the failed step's description and the cause.
    pub fn expected(self) -> (&'static str, &'static str) {
        match self {
            Break::HealthNeverPasses => ("health-check the", "did not become healthy"),
            Break::MigrationFails => ("run the migration of", "migration"),
            Break::ExitsAtStart => ("health-check the", "exited before it became healthy"),
        }
    }
}

/// What a runtime's test setup offers the scenarios. `product` is a product of the
/// harness's manifest with a health-checked, migrating service behind the front door.
pub trait Harness {
    /// The runtime's name, for messages.
    fn name(&self) -> String;
    /// Commit a good change to `product`; returns the version a deploy of it gets.
    fn change(&mut self, product: &str) -> String;
    /// Commit a change that breaks `product` in the way `how`; returns its version.
    fn change_broken(&mut self, product: &str, how: Break) -> String;
    /// Deploy the committed HEAD: `Err` holds the failure report.
    fn deploy(&mut self, product: &str) -> Result<(), String>;
    /// Roll back (to the deploy tag `to`, or the previous deploy): `Err` holds the report.
    fn rollback(&mut self, product: &str, to: Option<&str>) -> Result<(), String>;
    /// Deploy HEAD and kill berth right after step `step` (1-based) of its plan.
    /// Returns false when the plan has fewer steps.
    fn deploy_killed_after(&mut self, product: &str, step: usize) -> bool;
    /// The deploy tags of `product`, newest first: (tag, version).
    fn deploy_tags(&mut self, product: &str) -> Vec<(String, String)>;
    /// The version answering `product`'s requests through the front door now.
    fn serving(&mut self, product: &str) -> Option<String>;
}

/// A scenario: it drives the harness on one product and panics on a broken promise.
pub type Scenario = fn(&mut dyn Harness, &str);

/// Every scenario, by name.
pub const SCENARIOS: &[(&str, Scenario)] = &[
    ("deploy_and_redeploy", deploy_and_redeploy),
    (
        "rollback_to_any_retained_version",
        rollback_to_any_retained_version,
    ),
    (
        "broken_releases_keep_the_old_version",
        broken_releases_keep_the_old_version,
    ),
    (
        "killed_between_steps_keeps_serving_and_converges",
        killed_between_steps,
    ),
];

/// Run every scenario against `h` on `product`, in order (each starts from where
/// the previous left the product).
pub fn run_all(h: &mut dyn Harness, product: &str) {
    for (name, scenario) in SCENARIOS {
        eprintln!("contract [{}]: {name}", h.name());
        scenario(h, product);
    }
}

#[track_caller]
fn deployed(h: &mut dyn Harness, product: &str, version: &str) {
    if let Err(report) = h.deploy(product) {
        panic!(
            "[{}] deploy of {product} {version} failed:\n{report}",
            h.name()
        );
    }
    let serving = h.serving(product);
    assert_eq!(
        serving.as_deref(),
        Some(version),
        "[{}] after the deploy of {version}",
        h.name()
    );
    let tags = h.deploy_tags(product);
    assert_eq!(
        tags.first().map(|(_, v)| v.as_str()),
        Some(version),
        "[{}] the newest deploy tag names the deployed version: {tags:?}",
        h.name()
    );
}

/// A first deploy (or the next one), then a redeploy of a new version: each serves
/// once its deploy returns, and each is tagged.
pub fn deploy_and_redeploy(h: &mut dyn Harness, product: &str) {
    let before = h.deploy_tags(product).len();
    let v1 = h.change(product);
    deployed(h, product, &v1);
    let v2 = h.change(product);
    assert_ne!(v1, v2);
    deployed(h, product, &v2);
    assert_eq!(h.deploy_tags(product).len(), before + 2, "[{}]", h.name());
}

/// Three versions deployed; `rollback` returns to the previous one, `rollback --to`
/// to the oldest, and a deploy goes forward again.
pub fn rollback_to_any_retained_version(h: &mut dyn Harness, product: &str) {
    let mut versions = Vec::new();
    for _ in 0..3 {
        let v = h.change(product);
        deployed(h, product, &v);
        versions.push(v);
    }
    if let Err(report) = h.rollback(product, None) {
        panic!("[{}] rollback failed:\n{report}", h.name());
    }
    assert_eq!(
        h.serving(product).as_deref(),
        Some(versions[1].as_str()),
        "[{}] a rollback returns to the previous deploy",
        h.name()
    );
    let oldest = h
        .deploy_tags(product)
        .into_iter()
        .find(|(_, v)| *v == versions[0])
        .map(|(t, _)| t)
        .expect("the first version's deploy tag");
    if let Err(report) = h.rollback(product, Some(&oldest)) {
        panic!("[{}] rollback --to {oldest} failed:\n{report}", h.name());
    }
    assert_eq!(
        h.serving(product).as_deref(),
        Some(versions[0].as_str()),
        "[{}] rollback --to returns to that deploy",
        h.name()
    );
    let v = h.change(product);
    deployed(h, product, &v);
}

/// Each broken release fails with a report naming its step and cause; the old
/// version keeps serving; the next good deploy goes through.
pub fn broken_releases_keep_the_old_version(h: &mut dyn Harness, product: &str) {
    let good = h.change(product);
    deployed(h, product, &good);
    let tags = h.deploy_tags(product).len();
    for how in Break::ALL {
        let bad = h.change_broken(product, how);
        let report = match h.deploy(product) {
            Ok(()) => panic!("[{}] the {how:?} release {bad} deployed", h.name()),
            Err(r) => r,
        };
        let (step, why) = how.expected();
        assert!(
            report.contains(&format!("failed at step `{step}")),
            "[{}] {how:?}: the report names the step `{step}`:\n{report}",
            h.name()
        );
        assert!(
            report.contains(why),
            "[{}] {how:?}: the report says `{why}`:\n{report}",
            h.name()
        );
        assert_eq!(
            h.serving(product).as_deref(),
            Some(good.as_str()),
            "[{}] {how:?}: the old version keeps serving",
            h.name()
        );
        assert_eq!(
            h.deploy_tags(product).len(),
            tags,
            "[{}] {how:?}: a failed deploy is not tagged",
            h.name()
        );
    }
    let fixed = h.change(product);
    deployed(h, product, &fixed);
}

/// A deploy killed right after each of its steps: the product keeps serving, and the
/// next deploy converges with no manual unlock.
pub fn killed_between_steps(h: &mut dyn Harness, product: &str) {
    let v = h.change(product);
    deployed(h, product, &v);
    for step in 1.. {
        let next = h.change(product);
        if !h.deploy_killed_after(product, step) {
            assert!(
                step > 5,
                "[{}] the deploy ran to its end instead of pausing after step {step} (every plan has more than 5 steps)",
                h.name()
            );
            deployed(h, product, &next);
            break;
        }
        assert!(
            h.serving(product).is_some(),
            "[{}] after a kill after step {step} the product must keep serving",
            h.name()
        );
        deployed(h, product, &next);
    }
}

/// A product's warm standby as the harness reads it (berth's own view of it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StandbyView {
    pub slot: String,
    pub version: String,
    /// Every service runs in it.
    pub alive: bool,
    /// When its window ends (Unix seconds).
    pub until_unix: u64,
}

/// What the warm-standby scenarios need beyond [`Harness`]: set the window, see the
/// instances (to tell a switch from a start), and kill the standby.
pub trait StandbyHarness: Harness {
    /// Commit `[deploy] standby = "<window>"`; returns the version a deploy gets.
    fn set_standby(&mut self, product: &str, window: &str) -> String;
    /// The ids (pid or container id) of the product's running instances, sorted.
    fn instance_ids(&mut self, product: &str) -> Vec<String>;
    /// The product's warm standby, if one runs.
    fn standby(&mut self, product: &str) -> Option<StandbyView>;
    /// Kill every process of the standby (as if it crashed).
    fn kill_standby(&mut self, product: &str);
    /// Upcast, to drive the scenarios of [`Harness`].
    fn harness(&mut self) -> &mut dyn Harness;
}

/// A warm-standby scenario.
pub type StandbyScenario = fn(&mut dyn StandbyHarness, &str);

/// Every warm-standby scenario, by name.
pub const STANDBY_SCENARIOS: &[(&str, StandbyScenario)] = &[
    (
        "rollback_within_the_window_starts_nothing",
        rollback_within_the_window_starts_nothing,
    ),
    (
        "a_dead_standby_is_started_again",
        a_dead_standby_is_started_again,
    ),
    (
        "rollback_after_the_window_starts_the_slot",
        rollback_after_the_window_starts_the_slot,
    ),
];

/// Run every warm-standby scenario against `h` on `product`, in order; the product's
/// standby is set to "0" at the end.
pub fn run_standby(h: &mut dyn StandbyHarness, product: &str) {
    for (name, scenario) in STANDBY_SCENARIOS {
        eprintln!("contract [{}]: {name}", h.name());
        scenario(h, product);
    }
    h.set_standby(product, "0");
}

#[track_caller]
fn rolled_back(h: &mut dyn StandbyHarness, product: &str, version: &str) {
    if let Err(report) = h.rollback(product, None) {
        panic!("[{}] rollback failed:\n{report}", h.name());
    }
    assert_eq!(
        h.serving(product).as_deref(),
        Some(version),
        "[{}] a rollback returns to the previous deploy",
        h.name()
    );
}

/// Within the window a rollback is a switch: the same processes run before and after
/// it (nothing started, nothing stopped), the version rolled away from becomes the
/// standby, and a deploy then replaces that standby (its slot gets the new version).
pub fn rollback_within_the_window_starts_nothing(h: &mut dyn StandbyHarness, product: &str) {
    let v1 = h.set_standby(product, "10m");
    deployed(h.harness(), product, &v1);
    let v2 = h.change(product);
    deployed(h.harness(), product, &v2);
    let sb = h.standby(product).unwrap_or_else(|| {
        panic!(
            "[{}] after a deploy the old slot is a warm standby",
            h.name()
        )
    });
    assert_eq!(
        (sb.version.as_str(), sb.alive),
        (v1.as_str(), true),
        "[{}]",
        h.name()
    );
    let before = h.instance_ids(product);
    rolled_back(h, product, &v1);
    assert_eq!(
        h.instance_ids(product),
        before,
        "[{}] a rollback within the window starts and stops nothing",
        h.name()
    );
    let now = h
        .standby(product)
        .expect("the rolled-away version is the standby");
    assert_eq!(now.version, v2, "[{}]", h.name());
    assert_ne!(now.slot, sb.slot, "[{}]", h.name());
    // A deploy in the window goes to the standby's slot, replacing it.
    let v3 = h.change(product);
    deployed(h.harness(), product, &v3);
    let after = h.standby(product).expect("a standby after the deploy");
    assert_eq!(
        (after.slot.as_str(), after.version.as_str()),
        (sb.slot.as_str(), v1.as_str()),
        "[{}] the deploy replaced the standby; v1 is the new standby",
        h.name()
    );
}

/// A standby that died is noticed: the rollback starts the slot again and succeeds.
pub fn a_dead_standby_is_started_again(h: &mut dyn StandbyHarness, product: &str) {
    let v1 = h.change(product);
    deployed(h.harness(), product, &v1);
    let v2 = h.change(product);
    deployed(h.harness(), product, &v2);
    let before = h.instance_ids(product);
    h.kill_standby(product);
    if let Some(sb) = h.standby(product) {
        assert!(
            !sb.alive,
            "[{}] a killed standby is not alive: {sb:?}",
            h.name()
        );
    }
    rolled_back(h, product, &v1);
    let after = h.instance_ids(product);
    assert!(
        after.iter().any(|id| !before.contains(id)),
        "[{}] the rollback started the dead standby's slot again: {before:?} -> {after:?}",
        h.name()
    );
}

/// After the window the standby is gone (or goes at the next command) and a rollback
/// starts the slot, as without a standby.
pub fn rollback_after_the_window_starts_the_slot(h: &mut dyn StandbyHarness, product: &str) {
    let v1 = h.set_standby(product, "2s");
    deployed(h.harness(), product, &v1);
    let v2 = h.change(product);
    deployed(h.harness(), product, &v2);
    // The deploy tag (the window's start) was written before the deploy returned.
    let window_end = unix_now() + 2 + 1;
    let before = h.instance_ids(product);
    // Wait for the window to end (the condition itself: the clock).
    while unix_now() <= window_end {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    rolled_back(h, product, &v1);
    let after = h.instance_ids(product);
    assert!(
        after.iter().any(|id| !before.contains(id)),
        "[{}] after the window the rollback started the slot: {before:?} -> {after:?}",
        h.name()
    );
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
