//! `berth deploy|rollback|history|status|lock`.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use berth_deploy::lock::Holder;
use berth_deploy::record::AuditRecord;
use berth_deploy::store::Store;
use berth_deploy::{Context, DeployError, Plan, execute, plan, rollback_target, tags};
use berth_manifest::Manifest;
use berth_runtime::Runtime;
use serde_json::json;

use crate::cli::{
    BootArgs, Cli, DeployArgs, HistoryArgs, LockAcquireArgs, LockArgs, RollbackArgs, RuntimeArg,
    StatusArgs,
};
use crate::exit::{CliError, Result};
use crate::output::{Format, Printer};

pub(super) struct Loaded {
    pub(super) manifest: Manifest,
    pub(super) root: PathBuf,
    pub(super) repo: berth_git::Repo,
    pub(super) store: Store,
}

pub(super) fn load(cli: &Cli, printer: &Printer) -> Result<Loaded> {
    let path = super::find_manifest(cli)?;
    let manifest = super::load_manifest(&path, printer)?;
    let root = super::render::absolute(&super::manifest_dir(&path));
    let repo = super::repo_for(&path)?;
    let store = Store::from_manifest(&manifest, &root).map_err(CliError::Config)?;
    Ok(Loaded {
        manifest,
        root,
        repo,
        store,
    })
}

impl Loaded {
    fn context<'a>(
        &'a self,
        runtime: &'a dyn Runtime,
        lock_wait: Duration,
        progress: &'a mut dyn Write,
    ) -> Context<'a> {
        Context {
            manifest: &self.manifest,
            root: self.root.clone(),
            repo: self.repo.clone(),
            runtime,
            front_door: berth_deploy::front_door::open(&self.manifest, &self.root),
            operator: berth_deploy::operator(&self.repo),
            lock_wait,
            store: &self.store,
            progress,
        }
    }
}

pub(super) fn product_known(m: &Manifest, product: &str) -> Result<()> {
    if m.products.contains_key(product) {
        return Ok(());
    }
    let known: Vec<_> = m.products.keys().map(|k| format!("`{k}`")).collect();
    Err(CliError::Config(format!(
        "there is no product `{product}`; products: {}",
        known.join(", ")
    )))
}

/// The runtime to use: `--runtime`, or berth.toml's `[deploy] runtime`.
pub(super) fn runtime(l: &Loaded, arg: RuntimeArg) -> Result<Box<dyn Runtime + Send + Sync>> {
    runtime_for(&l.manifest, &l.root, arg)
}

/// [`runtime`] for a manifest at `root`.
pub(super) fn runtime_for(
    manifest: &Manifest,
    root: &Path,
    arg: RuntimeArg,
) -> Result<Box<dyn Runtime + Send + Sync>> {
    Ok(berth_runtime::open(arg.kind(), manifest, root))
}

/// A runtime's error as the CLI reports it: a failed preflight check is a configuration error.
pub(super) fn runtime_err(e: berth_runtime::RuntimeError) -> CliError {
    match e {
        berth_runtime::RuntimeError::Preflight(m) => CliError::Config(m),
        other => CliError::Failed(other.to_string()),
    }
}

/// Stop the product's warm standby if its window is over (berth has no daemon: the
/// next command on the product ends it). A failure to stop is a warning.
pub(super) fn reap_standby(l: &Loaded, rt: &dyn Runtime, product: &str, printer: &Printer) {
    let front_door = berth_deploy::front_door::open(&l.manifest, &l.root);
    match berth_deploy::standby::reap(
        &l.manifest,
        &l.repo,
        rt,
        front_door.as_ref(),
        &l.store,
        product,
        &berth_deploy::operator(&l.repo),
    ) {
        Ok(berth_deploy::standby::Reaped::Stopped(s)) => printer.status(
            "Stopped",
            &format!(
                "the warm standby of {product} ({} slot, {}): its window ended at {}",
                s.slot,
                s.version,
                s.until()
            ),
        ),
        Ok(_) => {}
        Err(e) => printer.warn(&format!(
            "could not stop the expired warm standby of {product}: {e}"
        )),
    }
}

fn confirm(question: &str, yes: bool) -> Result<bool> {
    if yes || !std::io::stdin().is_terminal() {
        return Ok(true);
    }
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| CliError::Config(e.to_string()))?;
    Ok(matches!(line.trim(), "y" | "Y" | "yes"))
}

fn print_plan(plan: &Plan, printer: &Printer) {
    let what = match &plan.rollback_of {
        Some(from) => format!(
            "roll back {} to {} (from {from})",
            plan.product, plan.version
        ),
        None => format!("deploy {} {}", plan.product, plan.version),
    };
    printer.status("Plan", &what);
    if !plan.zero_downtime {
        printer.warn("no [proxy] in berth.toml: the new version replaces the old in place, NOT zero-downtime");
    }
    for (i, s) in plan.steps.iter().enumerate() {
        eprintln!("  {:>2}. {s}", i + 1);
    }
}

/// A deploy or rollback refuses, before anything is done, when the front door is
/// stopped or broken (by someone else, between deploys): it would switch traffic into
/// a front door that serves nothing.
fn front_door_ready(l: &Loaded, rt: &dyn Runtime, what: &str) -> Result<()> {
    let door = berth_deploy::front_door::open(&l.manifest, &l.root);
    match door.trouble(berth_deploy::front_door::serving(
        &l.manifest,
        &l.repo,
        rt,
        None,
    )) {
        Some(t) => Err(CliError::Config(format!("refusing to {what}: {t}"))),
        None => Ok(()),
    }
}

fn deploy_err(e: DeployError) -> CliError {
    match e {
        DeployError::Config(m) => CliError::Config(m),
        other => CliError::Failed(other.to_string()),
    }
}

fn run_plan(
    l: &Loaded,
    rt: &dyn Runtime,
    plan: &Plan,
    lock_wait: Duration,
    format: Format,
    printer: &Printer,
) -> Result<ExitCode> {
    // The executor's step lines, shown through the one progress reporter (a spinner
    // on the current step on a terminal, plain lines otherwise).
    let reporter = crate::progress::Reporter::new(None, crate::progress::Shape::Steps);
    let mut lines = berth_cmd::progress::Lines::new(&reporter);
    let mut ctx = l.context(rt, lock_wait, &mut lines);
    let operator = ctx.operator.clone();
    let started = std::time::Instant::now();
    let result = execute(&mut ctx, plan);
    drop(ctx);
    drop(lines);
    drop(reporter);
    notify(l, plan, &result, operator, started.elapsed(), printer);
    let outcome = result.map_err(deploy_err)?;
    match format {
        Format::Json => printer.json(&serde_json::to_value(&outcome).expect("serializable")),
        Format::Text => {
            println!(
                "{} {} is live in {} ({}; {} ms){}",
                outcome.product,
                outcome.version,
                outcome.slot,
                outcome.tag,
                outcome.duration_ms,
                if outcome.tasks.is_empty() {
                    String::new()
                } else {
                    format!("; tasks: {}", outcome.tasks.join(", "))
                }
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `[notify]` after the outcome is known: failures to notify are warnings, never errors.
fn notify(
    l: &Loaded,
    plan: &Plan,
    result: &std::result::Result<berth_deploy::Outcome, DeployError>,
    operator: String,
    took: Duration,
    printer: &Printer,
) {
    // A deploy that never started (locked, held) is nobody's news.
    if l.manifest.notify.is_none() || matches!(result, Err(DeployError::NotStarted(_))) {
        return;
    }
    let event = berth_deploy::notify::Event {
        product: plan.product.clone(),
        version: plan.version.clone(),
        ok: result.is_ok(),
        rollback_of: plan.rollback_of.clone(),
        tag: result.as_ref().ok().map(|o| o.tag.clone()),
        operator,
        tasks: result.as_ref().map(|o| o.tasks.clone()).unwrap_or_default(),
        duration_ms: result
            .as_ref()
            .map(|o| o.duration_ms as u64)
            .unwrap_or(took.as_millis() as u64),
        error: result.as_ref().err().map(|e| {
            e.to_string()
                .lines()
                .next()
                .unwrap_or("")
                .chars()
                .take(300)
                .collect()
        }),
        at_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    };
    for s in berth_deploy::notify::send(&l.manifest, &event) {
        match s.error {
            None => printer.status("Notified", s.target),
            Some(e) => printer.warn(&format!(
                "could not notify {} (the deploy is not affected): {e}",
                s.target
            )),
        }
    }
}

/// Why a dirty work tree stops a deploy, and what to do. Database backups inside the
/// repository are never to be committed: they get their own advice.
fn dirty_tree_message(l: &Loaded, porcelain: &str) -> String {
    let top = l
        .repo
        .toplevel()
        .map(|t| super::render::absolute(&t))
        .unwrap_or_else(|_| l.root.clone());
    let mut backup_dirs: Vec<String> = l
        .manifest
        .products
        .keys()
        .map(|p| berth_backup::catalog::backup_dir(&l.manifest, &l.root, p))
        .chain([l.root.join(&l.manifest.backup.dir)])
        .map(|d| super::render::absolute(&d))
        .filter_map(|d| d.strip_prefix(&top).ok().map(|r| r.display().to_string()))
        .filter(|r| !r.is_empty())
        .collect();
    backup_dirs.sort();
    backup_dirs.dedup();
    let is_backup = |line: &str| {
        let path = line.get(3..).unwrap_or("").trim_matches('"');
        backup_dirs.iter().any(|d| {
            path == d
                || path.trim_end_matches('/') == d
                || path.starts_with(&format!("{d}/"))
                || d.starts_with(path) && path.ends_with('/')
        })
    };
    let lines: Vec<&str> = porcelain.lines().filter(|l| !l.trim().is_empty()).collect();
    let (backups, others): (Vec<&str>, Vec<&str>) = lines.iter().partition(|l| is_backup(l));
    let list = |v: &[&str]| {
        v.iter()
            .take(10)
            .map(|l| format!("  {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let mut msg = String::from(
        "the work tree has uncommitted changes, so the deploy would not match any commit:",
    );
    if !others.is_empty() {
        msg.push_str(&format!(
            "\n{}\ncommit or stash these changes to the source, or pass --allow-dirty",
            list(&others)
        ));
    }
    if !backups.is_empty() {
        msg.push_str(&format!(
            "\n{}\nthese are database backups: never commit them. berth writes a `.gitignore` into each backup directory it uses; for one made by an older berth, run `berth backup <product>` once or add the directory to .gitignore",
            list(&backups)
        ));
    }
    msg
}

pub fn deploy(cli: &Cli, args: &DeployArgs, printer: &Printer) -> Result<ExitCode> {
    let l = load(cli, printer)?;
    product_known(&l.manifest, &args.product)?;
    super::secrets::require_complete(&l.manifest, &l.root, &args.product)?;
    super::validate_revs(&l.repo, &[args.git_ref.as_str()])?;
    let commit = l.repo.resolve(&args.git_ref)?.expect("validated");
    let dirty = l
        .repo
        .git("check for uncommitted changes")
        .args(["status", "--porcelain"])
        .output()
        .map_err(berth_git::GitError::from)?
        .stdout_str();
    if !dirty.trim().is_empty() && !args.allow_dirty {
        return Err(CliError::Config(dirty_tree_message(&l, &dirty)));
    }
    let rt = runtime(&l, args.runtime)?;
    for warning in rt
        .preflight(&args.product, !dirty.trim().is_empty())
        .map_err(runtime_err)?
    {
        printer.warn(&warning);
    }
    if !args.dry_run {
        reap_standby(&l, rt.as_ref(), &args.product, printer);
    }
    let planning = berth_runtime::cached::CachedInstances::new(rt.as_ref());
    front_door_ready(&l, rt.as_ref(), &format!("deploy {}", args.product))?;
    let mut stderr = std::io::stderr();
    let ctx = l.context(&planning, args.lock_wait.0, &mut stderr);
    let p = plan(&ctx, &args.product, &commit, None).map_err(deploy_err)?;
    print_plan(&p, printer);
    if args.dry_run {
        if args.format == Format::Json {
            printer.json(&serde_json::to_value(&p).expect("serializable"));
        }
        return Ok(ExitCode::SUCCESS);
    }
    if !confirm(&format!("deploy {} {}?", p.product, p.version), args.yes)? {
        return Err(CliError::Failed("cancelled".into()));
    }
    super::tls::before_switch(&l.manifest, &l.root, &args.product, printer)?;
    let code = run_plan(&l, rt.as_ref(), &p, args.lock_wait.0, args.format, printer)?;
    if args.push_tags {
        let tag = tags::history(&l.repo, &args.product)?
            .into_iter()
            .next()
            .map(|r| r.tag);
        if let Some(tag) = tag {
            l.repo
                .git("push the deploy tag")
                .args(["push", "origin", &format!("refs/tags/{tag}")])
                .output()?;
            printer.status("Pushed", &tag);
        }
    }
    Ok(code)
}

pub fn rollback(cli: &Cli, args: &RollbackArgs, printer: &Printer) -> Result<ExitCode> {
    let l = load(cli, printer)?;
    product_known(&l.manifest, &args.product)?;
    super::secrets::require_complete(&l.manifest, &l.root, &args.product)?;
    let rt = runtime(&l, args.runtime)?;
    tracing::debug!("rollback: manifest, secrets and runtime loaded");
    // The standby check, the front door's check and planning ask the runtime the same
    // question many times: one answer each (a stop of an expired standby forgets it).
    let planning = berth_runtime::cached::CachedInstances::new(rt.as_ref());
    // The front door's check (its `nginx -t` is most of a warm rollback's wait before
    // the switch) runs from the start, while the runtime is asked what runs and the
    // rollback is planned, which only reads; a front door in trouble still refuses the
    // rollback before anything is done.
    let door = berth_deploy::front_door::open(&l.manifest, &l.root);
    let door = door.as_ref();
    let mut stderr = std::io::stderr();
    let (trouble, planned) = std::thread::scope(|s| {
        // The configuration's test (remembered as passed for the check below).
        let tested = s.spawn(|| door.trouble(false));
        if !args.dry_run {
            reap_standby(&l, &planning, &args.product, printer);
            tracing::debug!("rollback: standby window checked");
        }
        let serving = berth_deploy::front_door::serving(&l.manifest, &l.repo, &planning, None);
        let check = s.spawn(move || {
            tested
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                .or_else(|| door.trouble(serving))
        });
        let ctx = l.context(&planning, args.lock_wait.0, &mut stderr);
        let planned = (|| -> Result<_> {
            let target =
                rollback_target(&ctx, &args.product, args.to.as_deref()).map_err(deploy_err)?;
            let live = tags::history(&l.repo, &args.product)?
                .into_iter()
                .next()
                .map(|r| r.tag)
                .unwrap_or_default();
            tracing::debug!("rollback: target {} found", target.tag);
            let p = plan(&ctx, &args.product, &target.commit, Some(live)).map_err(deploy_err)?;
            Ok((target, p))
        })();
        let trouble = check
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (trouble, planned)
    });
    if let Some(t) = trouble {
        return Err(CliError::Config(format!(
            "refusing to roll back {}: {t}",
            args.product
        )));
    }
    tracing::debug!("rollback: front door checked, planned");
    let (target, p) = planned?;
    let warm = p
        .steps
        .iter()
        .any(|s| matches!(s, berth_deploy::Step::UseStandby { .. }));
    if !warm && !rt.has_version(&args.product, &target.version) {
        printer.warn(&format!(
            "{} is no longer retained: it will be rebuilt from {}",
            target.version, target.tag
        ));
    }
    print_plan(&p, printer);
    if args.dry_run {
        return Ok(ExitCode::SUCCESS);
    }
    if !confirm(
        &format!("roll {} back to {}?", p.product, target.tag),
        args.yes,
    )? {
        return Err(CliError::Failed("cancelled".into()));
    }
    run_plan(&l, rt.as_ref(), &p, args.lock_wait.0, args.format, printer)
}

pub fn history(cli: &Cli, args: &HistoryArgs, printer: &Printer) -> Result<ExitCode> {
    let l = load(cli, printer)?;
    product_known(&l.manifest, &args.product)?;
    let records = tags::history(&l.repo, &args.product)?;
    match args.format {
        Format::Json => printer.json(&json!({ "product": args.product, "deploys": records })),
        Format::Text => {
            if records.is_empty() {
                println!("{} has not been deployed", args.product);
            }
            for r in &records {
                let kind = if r.rollback_of.is_some() {
                    "rollback"
                } else {
                    "deploy"
                };
                let tasks = if r.tasks.is_empty() {
                    "-".to_string()
                } else {
                    r.tasks.join(", ")
                };
                println!(
                    "{}  {:<8} {}  {}  by {}  tasks: {}",
                    r.tag,
                    kind,
                    r.version,
                    r.duration.as_deref().unwrap_or("?"),
                    crate::output::esc(r.operator.as_deref().unwrap_or("?")),
                    crate::output::esc(&tasks)
                );
                if !r.nodes.is_empty() {
                    let nodes: Vec<String> = r.nodes.iter().map(|n| n.to_string()).collect();
                    println!(
                        "    healthy at the switch on: {}",
                        crate::output::esc(&nodes.join(", "))
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn status(cli: &Cli, args: &StatusArgs, printer: &Printer) -> Result<ExitCode> {
    let l = load(cli, printer)?;
    if let Some(p) = &args.product {
        product_known(&l.manifest, p)?;
    }
    let rt = runtime(&l, args.runtime)?;
    let front_door = berth_deploy::front_door::open(&l.manifest, &l.root);
    let mut rows = Vec::new();
    let mut standbys = Vec::new();
    for (name, p) in l
        .manifest
        .products
        .iter()
        .filter(|(n, _)| args.product.as_ref().is_none_or(|x| x == *n))
    {
        reap_standby(&l, rt.as_ref(), name, printer);
        if let Some(s) = berth_deploy::standby::find(
            &l.manifest,
            &l.repo,
            rt.as_ref(),
            front_door.as_ref(),
            name,
        ) {
            standbys.push(json!({
                "product": name,
                "slot": s.slot,
                "version": s.version,
                "alive": s.alive,
                "since": tags::utc_stamp(s.since_unix).1,
                "until": s.until(),
                "until_unix": s.until_unix,
            }));
        }
        let instances = rt
            .instances(name)
            .map_err(|e| CliError::Failed(e.to_string()))?;
        let live = front_door.live(name, rt.as_ref()).ok().flatten();
        let last = tags::history(&l.repo, name)?.into_iter().next();
        let backup = berth_backup::latest(&l.manifest, &l.root, name);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        for (svc_name, svc) in &p.services {
            let inst = live.and_then(|s| {
                instances
                    .iter()
                    .find(|i| i.slot == s && &i.service == svc_name)
            });
            // Every address of the service in the live slot: the first that fails
            // is reported, or the first when all answer.
            let health = match (live, &svc.health) {
                (Some(s), Some(h)) => {
                    let probes: Vec<_> = rt
                        .addresses(name, svc_name, s)
                        .iter()
                        .map(|a| berth_deploy::health::probe(a, &h.path, h.timeout.0))
                        .collect();
                    let failed = probes.iter().position(|p| !p.ok()).unwrap_or(0);
                    probes.into_iter().nth(failed)
                }
                _ => None,
            };
            // A runtime that spreads a service over machines (swarm): each task of the
            // live slot with its node, state and its own health check.
            let tasks: Vec<serde_json::Value> = live
                .map(|s| {
                    instances
                        .iter()
                        .filter(|i| i.slot == s && &i.service == svc_name && i.node.is_some())
                        .map(|i| {
                            let node = i.node.clone().unwrap_or_default();
                            let health = match (&svc.health, rt.address_of(name, i)) {
                                (Some(h), Some(a)) if i.alive => {
                                    Some(berth_deploy::health::probe(&a, &h.path, h.timeout.0).ok())
                                }
                                _ => None,
                            };
                            json!({
                                "id": i.id,
                                "node": node,
                                "state": i.state,
                                "running": i.alive,
                                "health": health.map(|ok| if ok { "up" } else { "down" }),
                            })
                        })
                        .collect()
                })
                .unwrap_or_default();
            let usage = inst.and_then(|i| rt.usage(name, i));
            rows.push(json!({
                "product": name,
                "service": svc_name,
                "usage": usage,
                "slot": live,
                "tasks": tasks,
                "version": inst.map(|i| i.version.clone()),
                "running": inst.is_some_and(|i| i.alive),
                "uptime_s": inst.and_then(|i| i.uptime()).map(|d| d.as_secs()),
                "health": health.as_ref().map(|h| if h.ok() { "up" } else { "down" }),
                "health_ms": health.as_ref().map(|h| h.millis as u64),
                "last_deploy": last.as_ref().map(|r| r.tag.clone()),
                "last_backup": backup.as_ref().map(|b| b.finished.clone()),
                "last_backup_age_s": backup.as_ref().map(|b| now.saturating_sub(b.finished_unix)),
                "last_offsite_copy": backup.as_ref().and_then(|b| b.offsite.as_ref()).map(|o| json!({
                    "ok": o.ok,
                    "at": o.at,
                    "remote": o.remote,
                    "error": o.error,
                })),
            }));
        }
    }
    let tls = super::tls::status_of(&l.manifest, &l.root, args.product.as_deref());
    // The front door itself: stopped or broken by someone else, it serves nothing.
    let trouble = front_door.trouble(berth_deploy::front_door::serving(
        &l.manifest,
        &l.repo,
        rt.as_ref(),
        None,
    ));
    let door = json!({
        "kind": if l.manifest.proxy.is_some() { "nginx" } else { "none" },
        "state": trouble.as_ref().map_or("ok", |t| t.state),
        "problem": trouble.as_ref().map(|t| t.what.clone()),
        "fix": trouble.as_ref().map(|t| t.fix.clone()),
    });
    match args.format {
        Format::Json => printer.json(
            &json!({ "services": rows, "tls": tls, "standby": standbys, "front_door": door }),
        ),
        Format::Text => {
            if let Some(t) = &trouble {
                println!("FRONT DOOR {}: {}", t.state.to_uppercase(), t.what);
                println!("  {}", t.fix);
            }
            println!(
                "{:<12} {:<10} {:<6} {:<13} {:<8} {:<9} {:<7} {:<17} {:<11} LAST DEPLOY",
                "PRODUCT",
                "SERVICE",
                "SLOT",
                "VERSION",
                "HEALTH",
                "UPTIME",
                "BACKUP",
                "MEMORY",
                "CPU"
            );
            for r in &rows {
                let s = |k: &str| r[k].as_str().unwrap_or("-").to_string();
                let uptime = r["uptime_s"]
                    .as_u64()
                    .map(|u| format!("{u}s"))
                    .unwrap_or_else(|| "-".into());
                let backup = r["last_backup_age_s"]
                    .as_u64()
                    .map(|a| format!("{} ago", super::backup::human_age(a)))
                    .unwrap_or_else(|| "never".into());
                let (memory, cpu) = usage_columns(&r["usage"]);
                println!(
                    "{:<12} {:<10} {:<6} {:<13} {:<8} {:<9} {:<7} {:<17} {:<11} {}",
                    s("product"),
                    s("service"),
                    s("slot"),
                    s("version"),
                    s("health"),
                    uptime,
                    backup,
                    memory,
                    cpu,
                    s("last_deploy")
                );
                for t in r["tasks"].as_array().into_iter().flatten() {
                    let f = |k: &str| t[k].as_str().unwrap_or("-").to_string();
                    println!(
                        "    task {} on {}: {}, health {}",
                        f("id"),
                        f("node"),
                        f("state"),
                        f("health")
                    );
                }
            }
            for sb in &standbys {
                let s = |k: &str| sb[k].as_str().unwrap_or("-").to_string();
                println!(
                    "{}: warm standby in {} ({}, no traffic) until {}{}",
                    s("product"),
                    s("slot"),
                    s("version"),
                    s("until"),
                    if sb["alive"].as_bool() == Some(true) {
                        ""
                    } else {
                        "; it died: a rollback starts it again"
                    }
                );
            }
            for r in &rows {
                let o = &r["last_offsite_copy"];
                if o["ok"] == false {
                    printer.warn(&format!(
                        "{}: the last off-site copy FAILED ({}): {}",
                        r["product"].as_str().unwrap_or(""),
                        o["at"].as_str().unwrap_or(""),
                        o["error"].as_str().unwrap_or("")
                    ));
                }
            }
            super::tls::print_status(&tls, printer);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `12.3MiB/64MiB` and `0.02/0.5` (CPUs in use / limit) from a status row's usage,
/// `-` where the runtime could not read them.
fn usage_columns(u: &serde_json::Value) -> (String, String) {
    let mib = |b: u64| {
        let m = b as f64 / (1u64 << 20) as f64;
        if m >= 1024.0 {
            format!("{:.1}GiB", m / 1024.0)
        } else {
            format!("{m:.1}MiB")
        }
    };
    let memory = match (u["memory_bytes"].as_u64(), u["memory_limit_bytes"].as_u64()) {
        (Some(used), Some(limit)) => format!("{}/{}", mib(used), mib(limit)),
        (Some(used), None) => mib(used),
        (None, Some(limit)) => format!("-/{}", mib(limit)),
        _ => "-".into(),
    };
    let mut cpu = match (u["cpus"].as_f64(), u["cpus_limit"].as_f64()) {
        (Some(c), Some(l)) => format!("{c:.2}/{l}"),
        (Some(c), None) => format!("{c:.2}"),
        (None, Some(l)) => format!("-/{l}"),
        _ => "-".into(),
    };
    if u["background"] == true {
        cpu.push_str(" background");
    }
    (memory, cpu)
}

/// `berth boot`: what a reboot stopped comes back, with no other berth command typed.
/// Each product's live slot (the one the front door's upstreams name; else the one
/// slot berth's pid files or containers are in) starts with the version that ran
/// there (else the newest deploy tag's), health-gated; then nginx with berth's
/// configuration. What runs is left alone: safe to run twice.
pub fn boot(cli: &Cli, args: &BootArgs, printer: &Printer) -> Result<ExitCode> {
    let l = load(cli, printer)?;
    let rt = runtime(&l, args.runtime)?;
    let door = berth_deploy::front_door::open(&l.manifest, &l.root);
    let mut failed = 0;
    for name in l.manifest.products.keys() {
        match boot_product(&l, rt.as_ref(), door.as_ref(), name) {
            Ok(done) => println!("{name}: {done}"),
            Err(e) => {
                printer.error(&format!("{name} did not come back: {e}"));
                failed += 1;
            }
        }
    }
    // nginx last: when it listens, the upstreams it names answer.
    if let Some(n) = berth_deploy::front_door::nginx(&l.manifest, &l.root) {
        if n.running() {
            println!("nginx: already running");
        } else {
            match n.test().and_then(|()| n.start()) {
                Ok(()) => println!(
                    "nginx: started with {}",
                    l.manifest
                        .proxy
                        .as_ref()
                        .map(|p| p.nginx_config.as_str())
                        .unwrap_or("")
                ),
                Err(e) => {
                    printer.error(&format!("nginx did not start: {e}"));
                    failed += 1;
                }
            }
        }
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn boot_product(
    l: &Loaded,
    rt: &dyn Runtime,
    door: &dyn berth_deploy::front_door::FrontDoor,
    name: &str,
) -> std::result::Result<String, String> {
    use berth_runtime::Slot;
    let instances = rt.instances(name).map_err(|e| e.to_string())?;
    let recorded: Vec<Slot> = [Slot::Blue, Slot::Green]
        .into_iter()
        .filter(|s| instances.iter().any(|i| i.slot == *s))
        .collect();
    let slot = match door.routed(name, rt).ok().flatten() {
        Some(s) => s,
        None => match recorded.as_slice() {
            [] => return Ok("never deployed: nothing to start".into()),
            [one] => *one,
            _ => {
                return Err(
                    "its front door names no slot and both slots have run: start one with `berth deploy`"
                        .into(),
                );
            }
        },
    };
    let services = l.manifest.products[name].services.len();
    let alive = instances
        .iter()
        .filter(|i| i.slot == slot && i.alive)
        .count();
    if alive >= services {
        return Ok(format!("already running in {slot}"));
    }
    let history = tags::history(&l.repo, name).map_err(|e| e.to_string())?;
    let version = instances
        .iter()
        .find(|i| i.slot == slot)
        .map(|i| i.version.clone())
        .filter(|v| !v.is_empty())
        .or_else(|| history.first().map(|r| r.version.clone()))
        .ok_or_else(|| format!("nothing says which version ran in {slot}"))?;
    let holder = Holder {
        operator: "berth boot".into(),
        pid: std::process::id(),
        since: tags::utc_stamp(berth_cmd::clock::now_unix()).1,
        message: format!("starting {version} in {slot} after a reboot"),
    };
    let mut guard = l
        .store
        .acquire(name, &holder, Duration::from_secs(60))
        .map_err(|e| e.to_string())?;
    let started = (|| {
        if !rt.has_version(name, &version) {
            rt.build(name, &version).map_err(|e| e.to_string())?;
        }
        // What is left of the slot (stale pid files, a half-started service) goes first.
        rt.stop(name, slot).map_err(|e| e.to_string())?;
        rt.start(name, slot, &version).map_err(|e| e.to_string())?;
        berth_deploy::wait_healthy(&l.manifest, rt, name, slot).map_err(|e| e.to_string())?;
        Ok::<(), String>(())
    })();
    let mut record = AuditRecord::new("boot", name, &holder.operator);
    record.version = Some(version.clone());
    record.message = Some(holder.message.clone());
    record.set_result(started.is_ok());
    record.error = started.as_ref().err().cloned();
    l.store.record(Some(&mut guard), &record);
    started.map(|()| format!("started {version} in {slot}"))
}

pub fn lock_status(cli: &Cli, args: &LockArgs, printer: &Printer) -> Result<ExitCode> {
    let l = load(cli, printer)?;
    let products: Vec<String> = match &args.product {
        Some(p) => {
            product_known(&l.manifest, p)?;
            vec![p.clone()]
        }
        None => l.manifest.products.keys().cloned().collect(),
    };
    let mut out = Vec::new();
    for p in &products {
        let deploy = l.store.current_holder(p);
        let hold = l.store.read_hold(p);
        if args.format == Format::Text {
            match (&deploy, &hold) {
                (None, None) => println!("{p}: free"),
                (Some(h), _) => println!("{p}: {h}"),
                (None, Some(h)) => println!(
                    "{p}: held by {} since {}: {}",
                    h.operator, h.since, h.message
                ),
            }
        }
        out.push(json!({ "product": p, "deploy": deploy, "hold": hold }));
    }
    if args.format == Format::Json {
        printer.json(&json!({ "locks": out }));
    }
    Ok(ExitCode::SUCCESS)
}

pub fn lock_acquire(cli: &Cli, args: &LockAcquireArgs, printer: &Printer) -> Result<ExitCode> {
    let l = load(cli, printer)?;
    product_known(&l.manifest, &args.product)?;
    let holder = Holder {
        operator: berth_deploy::operator(&l.repo),
        pid: std::process::id(),
        since: tags::utc_stamp(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        )
        .1,
        message: args.message.clone(),
    };
    l.store
        .hold(&args.product, &holder)
        .map_err(|e| CliError::Failed(e.to_string()))?;
    let mut record = AuditRecord::new("lock-hold", args.product.as_str(), &holder.operator);
    record.message = Some(holder.message.clone());
    record.set_result(true);
    l.store.record(None, &record);
    println!(
        "{} is held: deploys refuse until `berth lock release {}`",
        args.product, args.product
    );
    Ok(ExitCode::SUCCESS)
}

pub fn lock_release(cli: &Cli, args: &LockArgs, printer: &Printer) -> Result<ExitCode> {
    let l = load(cli, printer)?;
    let Some(p) = &args.product else {
        return Err(CliError::Config("name the product to release".into()));
    };
    product_known(&l.manifest, p)?;
    let released = l
        .store
        .release(p)
        .map_err(|e| CliError::Failed(e.to_string()))?;
    if let Some(h) = &released {
        let mut record =
            AuditRecord::new("lock-release", p.as_str(), &berth_deploy::operator(&l.repo));
        record.message = Some(format!(
            "released the hold of {}: {}",
            h.operator, h.message
        ));
        record.set_result(true);
        l.store.record(None, &record);
    }
    match (args.format, &released) {
        (Format::Json, _) => printer.json(&json!({
            "product": p,
            "released": released.is_some(),
            "hold": released,
        })),
        (Format::Text, Some(h)) => {
            println!("{p}: released the hold of {} ({})", h.operator, h.message)
        }
        (Format::Text, None) => println!("{p}: was not held"),
    }
    Ok(ExitCode::SUCCESS)
}
