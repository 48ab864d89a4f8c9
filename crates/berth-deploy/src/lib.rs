//! Deploys as a plan, then its execution: every mutating command first lists
//! typed steps (what `--dry-run` prints), then runs them in order, recording
//! each in the audit log. Nothing is done that the plan did not name.

pub mod audit_tail;
pub mod health;
pub mod lock;
pub mod notify;
pub mod proxy;
pub mod store;
pub mod tags;

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use berth_git::Repo;
use berth_manifest::Manifest;
use berth_runtime::{Runtime, Slot, slot_port};
use serde::Serialize;

use crate::health::Probe;
use crate::lock::Holder;
use crate::proxy::Nginx;
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
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The slot traffic goes to now: the proxy's upstream, or (without a proxy) the slot that runs.
pub fn live_slot(ctx: &Context<'_>, product: &str) -> Result<Option<Slot>, DeployError> {
    let instances = ctx
        .runtime
        .instances(product)
        .map_err(|e| DeployError::Failed(e.to_string()))?;
    if let Some(nginx) = Nginx::new(ctx.manifest, &ctx.root) {
        // The proxy says where traffic goes; a slot with nothing running serves nothing
        // (before the first deploy the rendered upstream points at an empty blue), and
        // a missing or unreadable include is answered by the runtime.
        return nginx
            .live(product, &instances)
            .map_err(|e| DeployError::Config(e.to_string()));
    }
    Ok(instances.iter().find(|i| i.alive).map(|i| i.slot))
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
    let zero_downtime = m.proxy.is_some();
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
            steps.push(Step::DrainAndStop {
                slot: l,
                drain_ms: m.deploy.drain.0.as_millis() as u64,
            });
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

/// Wait until every service with a health check answers 2xx on its slot port, or
/// its deadline passes. Returns the probes made (the last few per service).
pub fn wait_healthy(
    manifest: &Manifest,
    runtime: &dyn Runtime,
    product: &str,
    slot: Slot,
) -> Result<Vec<Probe>, (String, Vec<Probe>)> {
    let p = &manifest.products[product];
    let mut probes = Vec::new();
    for (name, svc) in &p.services {
        let Some(h) = &svc.health else { continue };
        let Some(port) = slot_port(manifest, svc, slot) else {
            continue;
        };
        let start = Instant::now();
        loop {
            let pr = health::probe(port, &h.path, h.timeout.0);
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
                return Err((
                    format!("{product}.{name} exited before it became healthy"),
                    probes,
                ));
            }
            if start.elapsed() >= h.deadline.0 {
                return Err((
                    format!(
                        "{product}.{name} did not become healthy within {} ({} probes of {})",
                        h.deadline,
                        probes.len(),
                        h.path
                    ),
                    probes,
                ));
            }
            std::thread::sleep(h.interval.0.min(Duration::from_millis(250)));
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

/// Run a plan.
pub fn execute(ctx: &mut Context<'_>, plan: &Plan) -> Result<Outcome, DeployError> {
    let start = Instant::now();
    let product = plan.product.as_str();
    let total = plan.steps.len();
    let mut lock: Option<Guard> = None;
    let mut timings: Vec<(String, u128)> = Vec::new();
    let mut tag_name = String::new();
    let mut tasks: Vec<String> = Vec::new();
    let mut started_new = false;
    let mut switched = false;
    let base = serde_json::json!({
        "product": product, "version": plan.version, "commit": plan.commit, "operator": ctx.operator,
    });
    // What the product's processes and commands printed is theirs, not berth's: every
    // value of its secret file is masked in what the deploy prints, records and reports.
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
    for (i, step) in plan.steps.iter().enumerate() {
        let t = Instant::now();
        let _ = writeln!(ctx.progress, "[{product}] {}/{total} {step}", i + 1);
        let result: Result<(), (String, Vec<Probe>)> = (|| match step {
            Step::Lock => {
                let holder = Holder {
                    operator: ctx.operator.clone(),
                    pid: std::process::id(),
                    since: tags::utc_stamp(now_secs()).1,
                    message: format!("deploying {}", plan.version),
                };
                lock = Some(
                    ctx.store
                        .acquire(product, &holder, ctx.lock_wait)
                        .map_err(|e| (e.to_string(), vec![]))?,
                );
                Ok(())
            }
            Step::ResolveVersion { .. } | Step::Retained { .. } => Ok(()),
            Step::Build { .. } => match ctx.runtime.build(product, &plan.version) {
                Ok(Some(note)) => {
                    let _ = writeln!(ctx.progress, "[{product}]     {}", masker.mask(&note));
                    Ok(())
                }
                Ok(None) => Ok(()),
                Err(e) => Err((e.to_string(), vec![])),
            },
            Step::Migrate { service } => ctx
                .runtime
                .migrate(product, service, &plan.version, plan.target)
                .map(|_| ())
                .map_err(|e| (e.to_string(), vec![])),
            Step::StartSlot { slot, .. } => {
                // Leftovers of an interrupted deploy in the idle slot go first. A deploy
                // killed right after its switch left them with requests still in flight
                // (nginx's old workers finish theirs): drain them like any old slot.
                let leftovers = ctx
                    .runtime
                    .instances(product)
                    .map_err(|e| (e.to_string(), vec![]))?
                    .iter()
                    .any(|i| i.slot == *slot && i.alive);
                if leftovers {
                    std::thread::sleep(ctx.manifest.deploy.drain.0);
                }
                ctx.runtime
                    .stop(product, *slot)
                    .map_err(|e| (e.to_string(), vec![]))?;
                ctx.runtime
                    .slot_free(product, *slot)
                    .map_err(|e| (e.to_string(), vec![]))?;
                started_new = true;
                ctx.runtime
                    .start(product, *slot, &plan.version)
                    .map_err(|e| (e.to_string(), vec![]))
            }
            Step::RestartInPlace { slot, .. } => {
                ctx.runtime
                    .stop(product, *slot)
                    .map_err(|e| (e.to_string(), vec![]))?;
                started_new = true;
                ctx.runtime
                    .start(product, *slot, &plan.version)
                    .map_err(|e| (e.to_string(), vec![]))
            }
            Step::HealthCheck { slot } => {
                wait_healthy(ctx.manifest, ctx.runtime, product, *slot).map(|_| ())
            }
            Step::Switch { to, .. } => {
                let nginx =
                    Nginx::new(ctx.manifest, &ctx.root).expect("a switch step means a proxy");
                nginx
                    .switch(product, *to)
                    .map_err(|e| (e.to_string(), vec![]))?;
                switched = true;
                // After the switch: the new slot must still answer, or traffic goes back.
                wait_healthy(ctx.manifest, ctx.runtime, product, *to).map(|_| ())
            }
            Step::DrainAndStop { slot, drain_ms } => {
                std::thread::sleep(Duration::from_millis(*drain_ms));
                ctx.runtime
                    .stop(product, *slot)
                    .map_err(|e| (e.to_string(), vec![]))?;
                // The newest `keep` deployed versions keep their images; older ones go.
                // Never fewer than two: the live version and the one a rollback returns to.
                let keep = kept_versions(ctx, product, Some(&plan.version));
                match ctx.runtime.prune(product, &keep) {
                    Ok(removed) if !removed.is_empty() => {
                        let _ = writeln!(
                            ctx.progress,
                            "[{product}]     removed old images: {}",
                            removed.join(", ")
                        );
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let _ = writeln!(
                            ctx.progress,
                            "[{product}]     could not prune old images: {e}"
                        );
                    }
                }
                Ok(())
            }
            Step::Tag { name } => {
                let (n, t) = write_tag(ctx, plan, name, start.elapsed())
                    .map_err(|e| (e.to_string(), vec![]))?;
                tag_name = n;
                tasks = t;
                Ok(())
            }
            Step::Unlock => {
                lock.take();
                Ok(())
            }
        })();
        // Test hook: hold still after a step so a test can kill berth right there.
        if let Ok(n) = std::env::var("BERTH_DEBUG_PAUSE_AFTER_STEP")
            && n.parse::<usize>().ok() == Some(i + 1)
        {
            let _ = writeln!(
                ctx.progress,
                "[{product}] paused after step {} (BERTH_DEBUG_PAUSE_AFTER_STEP)",
                i + 1
            );
            std::thread::sleep(Duration::from_secs(3600));
        }
        let ms = t.elapsed().as_millis();
        let mut record = base.clone();
        record["step"] = serde_json::to_value(step).expect("serializable")["step"].clone();
        record["detail"] = serde_json::Value::String(step.to_string());
        record["duration_ms"] = (ms as u64).into();
        record["at"] = tags::utc_stamp(now_secs()).1.into();
        record["tag"] = tag_name.clone().into();
        record["tasks"] = serde_json::json!(tasks);
        match result {
            Ok(()) => {
                record["result"] = "ok".into();
                ctx.store.audit(lock.as_mut(), product, &record);
                timings.push((step.to_string(), ms));
            }
            Err((why, probes)) => {
                let why = masker.mask(&why);
                record["result"] = "failed".into();
                record["error"] = why.clone().into();
                ctx.store.audit(lock.as_mut(), product, &record);
                if matches!(step, Step::Lock) {
                    return Err(DeployError::NotStarted(why));
                }
                let report = masker.mask(&failure(
                    ctx,
                    product,
                    plan.target,
                    step,
                    &why,
                    &probes,
                    started_new,
                ));
                // Put things back: traffic to the old slot, the new slot stopped.
                if switched
                    && let (Some(nginx), Some(old)) =
                        (Nginx::new(ctx.manifest, &ctx.root), plan.live)
                {
                    let _ = writeln!(ctx.progress, "[{product}] switching traffic back to {old}");
                    if let Err(e) = nginx.switch(product, old) {
                        let _ = writeln!(ctx.progress, "[{product}] could not switch back: {e}");
                    }
                }
                if started_new && plan.zero_downtime && plan.live != Some(plan.target) {
                    let _ = ctx.runtime.stop(product, plan.target);
                }
                // What this deploy built and created goes too, unless a kept deploy
                // (the live one among them) needs it: its images, the idle network.
                let keep = kept_versions(ctx, product, None);
                if let Ok(removed) = ctx.runtime.prune(product, &keep)
                    && !removed.is_empty()
                {
                    let _ = writeln!(
                        ctx.progress,
                        "[{product}] removed what the failed deploy left: {}",
                        removed.join(", ")
                    );
                }
                let mut record = base.clone();
                record["step"] = "deploy".into();
                record["result"] = "failed".into();
                record["failed_step"] =
                    serde_json::to_value(step).expect("serializable")["step"].clone();
                record["rollback_of"] = plan.rollback_of.clone().into();
                record["duration_ms"] = (start.elapsed().as_millis() as u64).into();
                record["at"] = tags::utc_stamp(now_secs()).1.into();
                ctx.store.audit(lock.as_mut(), product, &record);
                return Err(DeployError::Failed(report));
            }
        }
    }
    let mut record = base.clone();
    record["step"] = "deploy".into();
    record["result"] = "ok".into();
    record["tag"] = tag_name.clone().into();
    record["tasks"] = serde_json::json!(tasks);
    record["rollback_of"] = plan.rollback_of.clone().into();
    record["duration_ms"] = (start.elapsed().as_millis() as u64).into();
    record["at"] = tags::utc_stamp(now_secs()).1.into();
    ctx.store.audit(lock.as_mut(), product, &record);
    Ok(Outcome {
        product: product.to_string(),
        version: plan.version.clone(),
        slot: plan.target,
        tag: tag_name,
        tasks,
        duration_ms: start.elapsed().as_millis(),
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
    // Two deploys in one second get distinct tags.
    let mut tag = name.to_string();
    let mut n = 2;
    while ctx.repo.resolve(&format!("refs/tags/{tag}"))?.is_some() {
        tag = format!("{name}-{n}");
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
