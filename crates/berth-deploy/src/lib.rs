//! Deploys as a plan, then its execution: every mutating command first lists
//! typed steps (what `--dry-run` prints), then runs them in order, recording
//! each in the audit log. Nothing is done that the plan did not name.

pub mod audit_tail;
pub mod front_door;
pub mod health;
pub mod lock;
pub mod notify;
pub mod proxy;
pub mod record;
pub mod standby;
pub mod store;
pub mod tags;

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use berth_git::Repo;
use berth_manifest::Manifest;
use berth_runtime::{Address, Runtime, RuntimeError, Slot};
use serde::Serialize;

use crate::front_door::FrontDoor;
use crate::health::Probe;
use crate::lock::Holder;
use crate::proxy::ProxyError;
use crate::record::AuditRecord;
use crate::store::{Guard, Store};

/// One step of a deploy, with its inputs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "step", rename_all = "kebab-case")]
pub enum Step {
    Lock,
    ResolveVersion {
        commit: String,
        version: String,
    },
    Build {
        runtime: String,
        /// What building means for this runtime, as the plan says it.
        #[serde(skip)]
        summary: String,
    },
    /// The images (or local checkout) of this version are still there: nothing to build.
    Retained {
        version: String,
        /// What reusing it means for this runtime, as the plan says it.
        #[serde(skip)]
        summary: String,
    },
    Migrate {
        service: String,
    },
    StartSlot {
        slot: Slot,
        version: String,
    },
    HealthCheck {
        slot: Slot,
    },
    /// Rewrite the upstreams, `nginx -t`, graceful reload.
    Switch {
        from: Option<Slot>,
        to: Slot,
    },
    /// No proxy: stop the old version, start the new one (not zero-downtime).
    RestartInPlace {
        slot: Slot,
        version: String,
    },
    DrainAndStop {
        slot: Slot,
        drain_ms: u64,
    },
    /// The old slot keeps running without traffic for `window` after the switch: a
    /// warm standby a rollback switches back to. Whoever comes after the window stops
    /// it (see [`standby`]).
    KeepStandby {
        slot: Slot,
        window: String,
    },
    /// Rollback within the standby window: `slot` still runs `version`, warm.
    UseStandby {
        slot: Slot,
        version: String,
    },
    Tag {
        name: String,
    },
    Unlock,
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Lock => write!(f, "take the deploy lock"),
            Self::ResolveVersion { version, .. } => write!(f, "resolve the version: {version}"),
            Self::Build { summary, .. } | Self::Retained { summary, .. } => f.write_str(summary),
            Self::Migrate { service } => write!(
                f,
                "run the migration of {service} in a one-off process of the new version"
            ),
            Self::StartSlot { slot, version } => write!(f, "start the {slot} slot with {version}"),
            Self::HealthCheck { slot } => write!(f, "health-check the {slot} slot"),
            Self::Switch {
                from: Some(from),
                to,
            } => write!(
                f,
                "switch traffic {from} -> {to} (nginx -t, graceful reload)"
            ),
            Self::Switch { from: None, to } => write!(f, "send traffic to {to} (nginx -t, reload)"),
            Self::RestartInPlace { slot, version } => write!(
                f,
                "restart in place in {slot} with {version} (no [proxy]: NOT zero-downtime)"
            ),
            Self::DrainAndStop { slot, drain_ms } => {
                write!(f, "drain {drain_ms}ms, then stop the {slot} slot")
            }
            Self::KeepStandby { slot, window } => write!(
                f,
                "keep the {slot} slot running without traffic as a warm standby for {window}"
            ),
            Self::UseStandby { slot, version } => write!(
                f,
                "the {slot} slot still runs {version} as a warm standby: no build, no start, no migration"
            ),
            Self::Tag { name } => write!(f, "tag the deploy: {name}"),
            Self::Unlock => write!(f, "release the deploy lock"),
        }
    }
}

/// What is being deployed.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub product: String,
    pub commit: String,
    pub version: String,
    pub live: Option<Slot>,
    pub target: Slot,
    pub zero_downtime: bool,
    pub rollback_of: Option<String>,
    pub steps: Vec<Step>,
}

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Lock(#[from] lock::LockError),
    #[error(transparent)]
    Git(#[from] berth_git::GitError),
    /// A step failed; the report says which, with logs and probes.
    #[error("{0}")]
    Failed(String),
    /// Nothing was done: the product is locked by another deploy or held.
    #[error("{0}")]
    NotStarted(String),
}

/// Everything a deploy works with.
pub struct Context<'a> {
    pub manifest: &'a Manifest,
    pub root: PathBuf,
    pub repo: Repo,
    pub runtime: &'a dyn Runtime,
    /// Where traffic enters: which slot is live, and the switch.
    pub front_door: Box<dyn FrontDoor + 'a>,
    pub operator: String,
    pub lock_wait: Duration,
    /// Where the lock and the audit log live.
    pub store: &'a Store,
    /// Progress lines (stderr in the CLI).
    pub progress: &'a mut dyn Write,
}

/// The person or job deploying: BERTH_OPERATOR, git's user.name, or $USER.
pub fn operator(repo: &Repo) -> String {
    if let Ok(o) = std::env::var("BERTH_OPERATOR")
        && !o.is_empty()
    {
        return o;
    }
    repo.git("read user.name")
        .args(["config", "user.name"])
        .output()
        .ok()
        .map(|o| o.stdout_str().trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "unknown".into())
}

fn now_secs() -> u64 {
    berth_cmd::clock::now_unix()
}

/// The slot traffic goes to now, as the front door says.
pub fn live_slot(ctx: &Context<'_>, product: &str) -> Result<Option<Slot>, DeployError> {
    ctx.front_door
        .live(product, ctx.runtime)
        .map_err(|e| match e {
            ProxyError::Runtime(e) => DeployError::Failed(e.to_string()),
            e => DeployError::Config(e.to_string()),
        })
}

/// Build the plan for deploying `commit` (already resolved) of `product`.
pub fn plan(
    ctx: &Context<'_>,
    product: &str,
    commit: &str,
    rollback_of: Option<String>,
) -> Result<Plan, DeployError> {
    let m = ctx.manifest;
    let p = m.products.get(product).ok_or_else(|| {
        DeployError::Config(format!("there is no product `{product}` in berth.toml"))
    })?;
    let version = commit[..12.min(commit.len())].to_string();
    let live = live_slot(ctx, product)?;
    let zero_downtime = ctx.front_door.switches();
    let target = match (zero_downtime, live) {
        (true, Some(l)) => l.other(),
        (true, None) => Slot::Blue,
        (false, l) => l.unwrap_or(Slot::Blue),
    };
    let mut steps = vec![
        Step::Lock,
        Step::ResolveVersion {
            commit: commit.to_string(),
            version: version.clone(),
        },
    ];
    let window = standby::window(m, product);
    // After the switch, the old slot: a warm standby, or drained and stopped.
    let after_switch = |live: Slot| {
        if window.is_zero() {
            Step::DrainAndStop {
                slot: live,
                drain_ms: m.deploy.drain.0.as_millis() as u64,
            }
        } else {
            Step::KeepStandby {
                slot: live,
                window: berth_manifest::duration::HumanDuration(window).to_string(),
            }
        }
    };
    // A rollback to the version the warm standby runs is a switch back to it (after
    // its health check, as always). A standby that died, or whose window is over,
    // does not count: the rollback starts the slot as without one.
    if rollback_of.is_some()
        && zero_downtime
        && let Some(l) = live
        && let Some(s) = standby::find(m, &ctx.repo, ctx.runtime, ctx.front_door.as_ref(), product)
        && s.slot == l.other()
        && s.version == version
        && s.alive
        && !s.expired(standby::now_unix())
        && standby_answers(m, ctx.runtime, product, s.slot)
    {
        steps.extend([
            Step::UseStandby {
                slot: s.slot,
                version: version.clone(),
            },
            Step::HealthCheck { slot: s.slot },
            Step::Switch {
                from: live,
                to: s.slot,
            },
            after_switch(l),
            Step::Tag {
                name: format!("{product}-deploy-{}", tags::utc_stamp(now_secs()).0),
            },
            Step::Unlock,
        ]);
        return Ok(Plan {
            product: product.to_string(),
            commit: commit.to_string(),
            version,
            live,
            target: s.slot,
            zero_downtime,
            rollback_of,
            steps,
        });
    }
    if ctx.runtime.has_version(product, &version) {
        steps.push(Step::Retained {
            version: version.clone(),
            summary: ctx.runtime.retained_summary(&version),
        });
    } else {
        steps.push(Step::Build {
            runtime: ctx.runtime.name().to_string(),
            summary: ctx.runtime.build_summary(),
        });
    }
    // Migrations move forward only: a rollback starts the old code on the current schema.
    for (name, svc) in p.services.iter().filter(|_| rollback_of.is_none()) {
        if svc.migrate.is_some() {
            steps.push(Step::Migrate {
                service: name.clone(),
            });
        }
    }
    if zero_downtime {
        steps.push(Step::StartSlot {
            slot: target,
            version: version.clone(),
        });
        steps.push(Step::HealthCheck { slot: target });
        steps.push(Step::Switch {
            from: live,
            to: target,
        });
        if let Some(l) = live {
            steps.push(after_switch(l));
        }
    } else {
        steps.push(Step::RestartInPlace {
            slot: target,
            version: version.clone(),
        });
        steps.push(Step::HealthCheck { slot: target });
    }
    steps.push(Step::Tag {
        name: format!("{product}-deploy-{}", tags::utc_stamp(now_secs()).0),
    });
    steps.push(Step::Unlock);
    Ok(Plan {
        product: product.to_string(),
        commit: commit.to_string(),
        version,
        live,
        target,
        zero_downtime,
        rollback_of,
        steps,
    })
}

/// Whether every health-checked service of `slot` answers one probe now (a standby
/// that died or hangs does not: the rollback then starts the slot).
fn standby_answers(m: &Manifest, rt: &dyn Runtime, product: &str, slot: Slot) -> bool {
    probe_all(&health_targets(m, rt, product, slot))
        .iter()
        .all(Probe::ok)
}

/// Where each health-checked service of `slot` answers: (service, address, path,
/// timeout), in the manifest's order of services.
fn health_targets(
    m: &Manifest,
    rt: &dyn Runtime,
    product: &str,
    slot: Slot,
) -> Vec<(String, Address, String, Duration)> {
    let mut targets = Vec::new();
    for (name, svc) in &m.products[product].services {
        let Some(h) = &svc.health else { continue };
        for a in rt.addresses(product, name, slot) {
            targets.push((name.clone(), a, h.path.clone(), h.timeout.0));
        }
    }
    targets
}

/// One probe of every target at once, in the targets' order: a slot whose services
/// already answer (a warm standby, a slot that is up) costs its slowest probe, not
/// the sum of them.
fn probe_all(targets: &[(String, Address, String, Duration)]) -> Vec<Probe> {
    std::thread::scope(|s| {
        let running: Vec<_> = targets
            .iter()
            .map(|(_, a, path, timeout)| s.spawn(move || health::probe(a, path, *timeout)))
            .collect();
        running
            .into_iter()
            .map(|t| {
                t.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    })
}

/// A slot that did not become healthy: why, and the probes made.
#[derive(Debug, thiserror::Error)]
#[error("{why}")]
pub struct Unhealthy {
    pub why: String,
    pub probes: Vec<Probe>,
}

/// Wait until every service with a health check answers 2xx at every address the
/// runtime gives for it in `slot`, or its deadline passes. Returns the probes made.
pub fn wait_healthy(
    manifest: &Manifest,
    runtime: &dyn Runtime,
    product: &str,
    slot: Slot,
) -> Result<Vec<Probe>, Unhealthy> {
    let p = &manifest.products[product];
    let mut probes = Vec::new();
    // The first probe of every address at once; an address that did not answer is
    // then probed again in turn until its service's deadline.
    let targets = health_targets(manifest, runtime, product, slot);
    let mut first: Vec<Option<Probe>> = probe_all(&targets).into_iter().map(Some).collect();
    for (name, svc) in &p.services {
        let Some(h) = &svc.health else { continue };
        let start = Instant::now();
        let here = targets.iter().enumerate().filter(|(_, t)| t.0 == *name);
        for (k, (_, address, ..)) in here {
            let mut earlier = first[k].take();
            loop {
                let pr = earlier
                    .take()
                    .unwrap_or_else(|| health::probe(address, &h.path, h.timeout.0));
                let ok = pr.ok();
                probes.push(pr);
                if ok {
                    break;
                }
                // A service that exited will never become healthy: say so now.
                let dead = runtime
                    .instances(product)
                    .map(|is| {
                        is.iter()
                            .any(|i| i.slot == slot && i.service == *name && !i.alive)
                    })
                    .unwrap_or(false);
                if dead {
                    return Err(Unhealthy {
                        why: format!("{product}.{name} exited before it became healthy"),
                        probes,
                    });
                }
                if start.elapsed() >= h.deadline.0 {
                    return Err(Unhealthy {
                        why: format!(
                            "{product}.{name} did not become healthy within {} ({} probes of {})",
                            h.deadline,
                            probes.len(),
                            h.path
                        ),
                        probes,
                    });
                }
                std::thread::sleep(h.interval.0.min(Duration::from_millis(250)));
            }
        }
    }
    Ok(probes)
}

/// The versions whose images stay: the newest `[deploy] keep` deploys of the product
/// (counting `new`, the version going live, first).
fn kept_versions(ctx: &Context<'_>, product: &str, new: Option<&str>) -> Vec<String> {
    let mut keep: Vec<String> = new.map(str::to_string).into_iter().collect();
    for r in tags::history(&ctx.repo, product).unwrap_or_default() {
        // Never fewer than two: the live version and the one a rollback returns to.
        if keep.len() >= ctx.manifest.deploy.keep.max(2) {
            break;
        }
        if !keep.contains(&r.version) {
            keep.push(r.version);
        }
    }
    keep
}

/// The failure report: the step, the new slot's last 50 log lines, the last probes.
fn failure(
    ctx: &Context<'_>,
    product: &str,
    slot: Slot,
    step: &Step,
    why: &str,
    probes: &[Probe],
    started: bool,
) -> String {
    // The first line of `why` heads the report; the rest (a command's output tail)
    // comes after the one-line diagnosis, if there is one.
    let (why_head, why_tail) = why.split_once('\n').unwrap_or((why, ""));
    let mut s = format!("deploy of {product} failed at step `{step}`: {why_head}\n");
    let logs: Vec<(&String, String)> = ctx.manifest.products[product]
        .services
        .keys()
        .filter(|_| started)
        .map(|svc| (svc, ctx.runtime.logs(product, slot, svc, 50)))
        .collect();
    // A connection failure to the configured database or Redis, said in one line
    // before the tails it is buried in.
    let mut seen = why.to_string();
    for (_, l) in &logs {
        seen.push('\n');
        seen.push_str(l);
    }
    if let Some(d) = berth_runtime::reach::diagnose_connection(ctx.manifest, product, &seen) {
        s.push_str(&format!("diagnosis: {d}\n"));
    }
    if !why_tail.trim().is_empty() {
        s.push_str(why_tail.trim_end_matches('\n'));
        s.push('\n');
    }
    if started {
        s.push_str("the old version kept serving; the new slot was stopped\n");
    }
    for (svc, logs) in logs {
        s.push_str(&format!("\nlast log lines of {product}.{svc} ({slot}):\n"));
        if logs.trim().is_empty() {
            s.push_str("    (empty)\n");
        }
        for l in logs.lines() {
            s.push_str(&format!("    {l}\n"));
        }
    }
    if !probes.is_empty() {
        s.push_str("\nhealth checks:\n");
        for p in probes
            .iter()
            .rev()
            .take(5)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
        {
            s.push_str(&format!("    {p}\n"));
        }
    }
    s
}

/// The result of a successful deploy.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub product: String,
    pub version: String,
    pub slot: Slot,
    pub tag: String,
    pub tasks: Vec<String>,
    pub duration_ms: u128,
    pub steps: Vec<(String, u128)>,
}

/// Why a step of a deploy failed.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// The deploy lock could not be taken: nothing was done.
    #[error(transparent)]
    Lock(#[from] lock::LockError),
    /// The runtime failed (build, migrate, start, stop, a busy slot).
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// The front door could not switch.
    #[error(transparent)]
    FrontDoor(#[from] ProxyError),
    /// The slot did not become (or stay) healthy.
    #[error(transparent)]
    Unhealthy(#[from] Unhealthy),
    /// The deploy tag could not be written.
    #[error(transparent)]
    Tag(#[from] DeployError),
    /// The deploy lock is no longer held (the state database went away): nothing
    /// more may change what serves traffic.
    #[error("{0}")]
    LockLost(String),
}

impl StepError {
    /// The health probes behind the failure (the last ones made).
    pub fn probes(&self) -> &[Probe] {
        match self {
            Self::Unhealthy(u) => &u.probes,
            _ => &[],
        }
    }
}

/// A plan being run: what its steps took and left behind.
struct Run<'r, 'a> {
    ctx: &'r mut Context<'a>,
    plan: &'r Plan,
    start: Instant,
    lock: Option<Guard>,
    tag: String,
    tasks: Vec<String>,
    /// The new version was started (its slot is stopped again on failure).
    started_new: bool,
    /// Traffic was switched to the new slot (switched back on failure).
    switched: bool,
    /// Every value of the product's secret file, masked in what the deploy prints,
    /// records and reports: what its processes printed is theirs, not berth's.
    masker: berth_cmd::Masker,
}

impl Run<'_, '_> {
    fn product(&self) -> &str {
        &self.plan.product
    }

    fn say(&mut self, line: &str) {
        let _ = writeln!(self.ctx.progress, "[{}] {line}", self.plan.product);
    }

    fn step(&mut self, step: &Step) -> Result<(), StepError> {
        match step {
            Step::Lock => self.take_lock(),
            Step::ResolveVersion { .. } | Step::Retained { .. } | Step::UseStandby { .. } => Ok(()),
            Step::Build { .. } => self.build(),
            Step::Migrate { service } => self.migrate(service),
            Step::StartSlot { slot, .. } => self.start_idle_slot(*slot),
            Step::RestartInPlace { slot, .. } => self.restart_in_place(*slot),
            Step::HealthCheck { slot } => self.health_gate(*slot),
            Step::Switch { to, .. } => self.switch(*to),
            Step::DrainAndStop { slot, drain_ms } => {
                self.drain_and_stop(*slot, Duration::from_millis(*drain_ms))
            }
            Step::KeepStandby { .. } => self.keep_standby(),
            Step::Tag { name } => self.tag(name),
            Step::Unlock => {
                self.lock.take();
                Ok(())
            }
        }
    }

    fn take_lock(&mut self) -> Result<(), StepError> {
        let holder = Holder {
            operator: self.ctx.operator.clone(),
            pid: std::process::id(),
            since: tags::utc_stamp(now_secs()).1,
            message: format!("deploying {}", self.plan.version),
        };
        self.lock = Some(self.ctx.store.acquire(
            &self.plan.product,
            &holder,
            self.ctx.lock_wait,
        )?);
        Ok(())
    }

    fn build(&mut self) -> Result<(), StepError> {
        if let Some(note) = self.ctx.runtime.build(self.product(), &self.plan.version)? {
            let note = self.masker.mask(&note);
            self.say(&format!("    {note}"));
        }
        Ok(())
    }

    fn migrate(&mut self, service: &str) -> Result<(), StepError> {
        self.ctx.runtime.migrate(
            self.product(),
            service,
            &self.plan.version,
            self.plan.target,
        )?;
        Ok(())
    }

    fn start_idle_slot(&mut self, slot: Slot) -> Result<(), StepError> {
        let rt = self.ctx.runtime;
        // Leftovers of an interrupted deploy in the idle slot go first. A deploy killed
        // right after its switch left them with requests still in flight (the front
        // door's old workers finish theirs): drain them like any old slot.
        let leftovers = rt
            .instances(self.product())?
            .iter()
            .any(|i| i.slot == slot && i.alive);
        // A warm standby there took no traffic since the switch away from it: once the
        // drain has passed since then, it goes without another wait.
        let drained = standby::find(
            self.ctx.manifest,
            &self.ctx.repo,
            rt,
            self.ctx.front_door.as_ref(),
            self.product(),
        )
        .is_some_and(|s| {
            s.slot == slot
                && standby::now_unix().saturating_sub(s.since_unix)
                    > self.ctx.manifest.deploy.drain.0.as_secs_f64().ceil() as u64
        });
        if leftovers && !drained {
            let drain = self.ctx.manifest.deploy.drain.0;
            tracing::debug!(
                target: "berth::cmd",
                "the {slot} slot served moments ago: wait the drain ({drain:?}) for its in-flight requests"
            );
            let t = std::time::Instant::now();
            std::thread::sleep(drain);
            tracing::trace!(target: "berth::cmd", "-> drained in {:?}", t.elapsed());
        }
        // Stopped, checked free and started, or updated in place (swarm).
        self.started_new = true;
        rt.replace(self.product(), slot, &self.plan.version)?;
        Ok(())
    }

    fn restart_in_place(&mut self, slot: Slot) -> Result<(), StepError> {
        let rt = self.ctx.runtime;
        rt.stop(self.product(), slot)?;
        self.started_new = true;
        rt.start(self.product(), slot, &self.plan.version)?;
        Ok(())
    }

    fn health_gate(&mut self, slot: Slot) -> Result<(), StepError> {
        wait_healthy(self.ctx.manifest, self.ctx.runtime, self.product(), slot)?;
        Ok(())
    }

    fn switch(&mut self, to: Slot) -> Result<(), StepError> {
        // A front door someone stopped or broke since the deploy began takes no switch.
        let serving = self.plan.live.is_some()
            || front_door::serving(
                self.ctx.manifest,
                &self.ctx.repo,
                self.ctx.runtime,
                Some(self.product()),
            );
        if let Some(t) = self.ctx.front_door.trouble(serving) {
            return Err(StepError::FrontDoor(ProxyError::Config(t.to_string())));
        }
        // Only the holder of the lock switches traffic.
        self.ctx
            .store
            .still_held(self.lock.as_mut())
            .map_err(StepError::LockLost)?;
        self.ctx
            .front_door
            .switch(&self.plan.product, to, self.ctx.runtime)?;
        self.switched = true;
        // After the switch: the new slot must still answer, or traffic goes back.
        self.health_gate(to)
    }

    fn drain_and_stop(&mut self, slot: Slot, drain: Duration) -> Result<(), StepError> {
        std::thread::sleep(drain);
        self.ctx.runtime.stop(self.product(), slot)?;
        self.prune_old_images();
        Ok(())
    }

    /// The old slot keeps running; only the images beyond `keep` go (the standby's
    /// version is among the kept ones: it is the previous deploy).
    fn keep_standby(&mut self) -> Result<(), StepError> {
        self.prune_old_images();
        Ok(())
    }

    fn prune_old_images(&mut self) {
        // The newest `keep` deployed versions keep their images; older ones go.
        // Never fewer than two: the live version and the one a rollback returns to.
        let keep = kept_versions(self.ctx, self.product(), Some(&self.plan.version));
        match self.ctx.runtime.prune(self.product(), &keep) {
            Ok(removed) if !removed.is_empty() => {
                self.say(&format!("    removed old images: {}", removed.join(", ")));
            }
            Ok(_) => {}
            Err(e) => self.say(&format!("    could not prune old images: {e}")),
        }
    }

    fn tag(&mut self, name: &str) -> Result<(), StepError> {
        let (tag, tasks) = write_tag(self.ctx, self.plan, name, self.start.elapsed())?;
        self.tag = tag;
        self.tasks = tasks;
        Ok(())
    }

    /// After a failed step: traffic back to the old slot, the new slot stopped, and
    /// what this deploy built and created removed unless a kept deploy needs it.
    fn put_back(&mut self) {
        let product = self.plan.product.clone();
        if self.switched
            && self.ctx.front_door.switches()
            && let Some(old) = self.plan.live
        {
            self.say(&format!("switching traffic back to {old}"));
            if let Err(e) = self.ctx.front_door.switch(&product, old, self.ctx.runtime) {
                self.say(&format!("could not switch back: {e}"));
            }
        }
        if self.started_new && self.plan.zero_downtime && self.plan.live != Some(self.plan.target) {
            let _ = self.ctx.runtime.stop(&product, self.plan.target);
        }
        let keep = kept_versions(self.ctx, &product, None);
        if let Ok(removed) = self.ctx.runtime.prune(&product, &keep)
            && !removed.is_empty()
        {
            self.say(&format!(
                "removed what the failed deploy left: {}",
                removed.join(", ")
            ));
        }
    }

    /// The fields every audit record of this deploy carries.
    fn base_record(&self) -> AuditRecord {
        let mut record = AuditRecord::new("", &self.plan.product, &self.ctx.operator);
        record.version = Some(self.plan.version.clone());
        record.commit = Some(self.plan.commit.clone());
        record
    }

    /// The audit record of one step.
    fn audit_step(&mut self, step: &Step, ms: u128, error: Option<&str>) {
        let mut record = self.base_record();
        record.step = step_name(step);
        record.detail = Some(step.to_string());
        record.duration_ms = Some(ms as u64);
        record.at = Some(tags::utc_stamp(now_secs()).1);
        record.tag = Some(self.tag.clone());
        record.tasks = Some(self.tasks.clone());
        record.set_result(error.is_none());
        record.error = error.map(str::to_string);
        self.ctx.store.record(self.lock.as_mut(), &record);
    }

    /// The audit record of the whole deploy (`failed_step`: the step that failed).
    fn audit_deploy(&mut self, failed_step: Option<&Step>) {
        let mut record = self.base_record();
        record.step = "deploy".into();
        record.set_result(failed_step.is_none());
        match failed_step {
            None => {
                record.tag = Some(self.tag.clone());
                record.tasks = Some(self.tasks.clone());
            }
            Some(step) => record.failed_step = Some(step_name(step)),
        }
        record.rollback_of = Some(self.plan.rollback_of.clone());
        record.duration_ms = Some(self.start.elapsed().as_millis() as u64);
        record.at = Some(tags::utc_stamp(now_secs()).1);
        self.ctx.store.record(self.lock.as_mut(), &record);
    }
}

/// The name a step has in the audit log (`build`, `switch`, ...).
fn step_name(step: &Step) -> String {
    serde_json::to_value(step).expect("serializable")["step"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Unit tests' stand-in for a kill: called with the number of each step done.
#[cfg(test)]
type AfterStep = Box<dyn Fn(usize)>;

#[cfg(test)]
thread_local! {
    /// The [`AfterStep`] hook of this thread's deploys.
    static AFTER_STEP: std::cell::RefCell<Option<AfterStep>> =
        const { std::cell::RefCell::new(None) };
}

/// Test hook: hold still after step `n` (1-based) so a test can kill berth right there.
fn pause_after_step(progress: &mut dyn Write, product: &str, n: usize) {
    #[cfg(test)]
    AFTER_STEP.with(|h| {
        if let Some(h) = h.borrow().as_ref() {
            h(n)
        }
    });
    if let Ok(want) = std::env::var("BERTH_DEBUG_PAUSE_AFTER_STEP")
        && want.parse::<usize>().ok() == Some(n)
    {
        let _ = writeln!(
            progress,
            "[{product}] paused after step {n} (BERTH_DEBUG_PAUSE_AFTER_STEP)"
        );
        // With BERTH_DEBUG_RESUME_FILE: go on once that file exists (a test changes
        // the world around the paused deploy, then lets it continue).
        let resume = std::env::var_os("BERTH_DEBUG_RESUME_FILE").map(std::path::PathBuf::from);
        let until = Instant::now() + Duration::from_secs(3600);
        while Instant::now() < until && !resume.as_ref().is_some_and(|f| f.exists()) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Run a plan: each step in order, each recorded in the audit log; on a failed step,
/// traffic goes back to the old slot and the new one is stopped.
pub fn execute(ctx: &mut Context<'_>, plan: &Plan) -> Result<Outcome, DeployError> {
    let product = plan.product.as_str();
    let masker = match berth_render::secrets::product_masker(&ctx.root, product) {
        Ok(m) => m,
        Err(e) => {
            let _ = writeln!(
                ctx.progress,
                "[{product}] could not read the secret file to mask its values in output: {e}"
            );
            berth_cmd::Masker::new()
        }
    };
    let mut run = Run {
        ctx,
        plan,
        start: Instant::now(),
        lock: None,
        tag: String::new(),
        tasks: Vec::new(),
        started_new: false,
        switched: false,
        masker,
    };
    let total = plan.steps.len();
    let mut timings: Vec<(String, u128)> = Vec::new();
    for (i, step) in plan.steps.iter().enumerate() {
        let t = Instant::now();
        run.say(&format!("{}/{total} {step}", i + 1));
        tracing::debug!("step {}/{total} {} begins", i + 1, step_name(step));
        let result = run.step(step);
        pause_after_step(run.ctx.progress, product, i + 1);
        let ms = t.elapsed().as_millis();
        let err = match result {
            Ok(()) => {
                run.audit_step(step, ms, None);
                timings.push((step.to_string(), ms));
                continue;
            }
            Err(e) => e,
        };
        let why = run.masker.mask(&err.to_string());
        run.audit_step(step, ms, Some(&why));
        if matches!(err, StepError::Lock(_)) {
            return Err(DeployError::NotStarted(why));
        }
        let report = run.masker.mask(&failure(
            run.ctx,
            product,
            plan.target,
            step,
            &why,
            err.probes(),
            run.started_new,
        ));
        run.put_back();
        run.audit_deploy(Some(step));
        return Err(DeployError::Failed(report));
    }
    run.audit_deploy(None);
    Ok(Outcome {
        product: product.to_string(),
        version: plan.version.clone(),
        slot: plan.target,
        tag: run.tag.clone(),
        tasks: run.tasks.clone(),
        duration_ms: run.start.elapsed().as_millis(),
        steps: timings,
    })
}

/// Tasks in commits since the previous deploy attributed to the product, then the annotated tag.
fn write_tag(
    ctx: &Context<'_>,
    plan: &Plan,
    name: &str,
    elapsed: Duration,
) -> Result<(String, Vec<String>), DeployError> {
    let product = &plan.product;
    let history = tags::history(&ctx.repo, product)?;
    let previous = history.first().map(|r| r.tag.clone());
    let range = match history.first() {
        Some(prev) => format!("{}..{}", prev.commit, plan.commit),
        None => plan.commit.clone(),
    };
    let attributor = berth_git::attribution::Attributor::new(ctx.manifest)
        .map_err(|e| DeployError::Config(e.to_string()))?;
    let mut tasks: Vec<String> = Vec::new();
    if plan.rollback_of.is_none() {
        for c in ctx.repo.commits(&[&range])? {
            let a = attributor.attribute(&c);
            if a.products.contains(product) {
                for t in a.tasks {
                    if !tasks.contains(&t.full) {
                        tasks.push(t.full);
                    }
                }
            }
        }
    }
    tasks.reverse();
    // Tags order deploys by their name: a clock set back since the newest deploy
    // must not date this one before it. Its stamp is never older than the newest
    // tag's; in the same second, the number after it counts on (`-2`, `-3`, ...).
    let (mut base, mut n) = (name.to_string(), 2);
    if let Some(newest) = history.first() {
        let (stamp, newest_n) = tags::order_key(&newest.tag, product);
        let (mine, _) = tags::order_key(name, product);
        if mine <= stamp {
            base = format!("{product}-deploy-{stamp}");
            n = newest_n + 1;
        }
    }
    let mut tag = if n == 2 {
        base.clone()
    } else {
        format!("{base}-{n}")
    };
    while ctx.repo.resolve(&format!("refs/tags/{tag}"))?.is_some() {
        tag = format!("{base}-{n}");
        n += 1;
    }
    let mut msg = match &plan.rollback_of {
        Some(from) => format!("Rollback {product} to {} (from {from})\n\n", plan.version),
        None => format!("Deploy {product} {}\n\n", plan.version),
    };
    msg.push_str(&format!("Product: {product}\nVersion: {}\n", plan.version));
    msg.push_str(&format!(
        "Tasks: {}\n",
        if tasks.is_empty() {
            "none".to_string()
        } else {
            tasks.join(", ")
        }
    ));
    msg.push_str(&format!(
        "Previous: {}\n",
        previous.as_deref().unwrap_or("none")
    ));
    msg.push_str(&format!("Duration: {}ms\n", elapsed.as_millis()));
    msg.push_str(&format!("Operator: {}\n", ctx.operator));
    if let Some(from) = &plan.rollback_of {
        msg.push_str(&format!("Rollback-Of: {from}\n"));
    }
    // Where the new slot's tasks run now that they passed the health gate and took
    // the traffic (a runtime that spreads over machines names each task's node).
    let nodes: Vec<String> = ctx
        .runtime
        .instances(product)
        .unwrap_or_default()
        .into_iter()
        .filter(|i| i.slot == plan.target && i.alive)
        .filter_map(|i| {
            Some(
                tags::TaskNode {
                    service: i.service,
                    node: i.node?,
                }
                .to_string(),
            )
        })
        .collect();
    if !nodes.is_empty() {
        msg.push_str(&format!("Nodes: {}\n", nodes.join(", ")));
    }
    ctx.repo
        .git("write the deploy tag")
        .args([
            "-c",
            &format!("user.name={}", ctx.operator),
            "-c",
            "user.email=berth@localhost",
        ])
        .args(["tag", "-a", &tag, "-m", &msg, &plan.commit])
        .output()
        .map_err(berth_git::GitError::from)?;
    Ok((tag, tasks))
}

/// The deploy to roll back to: `to`, or the newest deploy older than the live one with another version.
pub fn rollback_target(
    ctx: &Context<'_>,
    product: &str,
    to: Option<&str>,
) -> Result<tags::DeployRecord, DeployError> {
    let history = tags::history(&ctx.repo, product)?;
    if let Some(t) = to {
        return history.into_iter().find(|r| r.tag == t).ok_or_else(|| {
            DeployError::Config(format!(
                "`{t}` is not a deploy tag of {product} (see `berth history {product}`)"
            ))
        });
    }
    let live = live_slot(ctx, product)?;
    let instances = ctx
        .runtime
        .instances(product)
        .map_err(|e| DeployError::Failed(e.to_string()))?;
    let live_version = instances
        .iter()
        .find(|i| Some(i.slot) == live && i.alive)
        .map(|i| i.version.clone())
        .or_else(|| history.first().map(|r| r.version.clone()))
        .ok_or_else(|| DeployError::Config(format!("{product} has never been deployed")))?;
    let current = history
        .iter()
        .position(|r| r.version == live_version)
        .unwrap_or(0);
    history
        .into_iter()
        .skip(current + 1)
        .find(|r| r.version != live_version)
        .ok_or_else(|| {
            DeployError::Config(format!(
                "{product} has no earlier deploy with another version to roll back to"
            ))
        })
}

#[cfg(test)]
mod tests;
