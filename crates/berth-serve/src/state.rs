//! What `berth serve` knows about every product, read from where berth keeps it:
//! the runtime (which slot runs which version), the proxy (which slot is live),
//! the deploy tags (who deployed what, with which tasks), the audit log (every
//! deploy, failures and rollbacks included) and the backup records.
//!
//! The collector rebuilds a [`Snapshot`] every refresh; the prober's results are
//! kept apart ([`Probes`]) and joined in when a view is built. The audit log is
//! the one source that only grows: [`DeployLog`] reads what was appended since the
//! last refresh and keeps running totals, so a refresh costs the same however long
//! the history is.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use berth_deploy::audit_tail::{Appended, AuditTail};
use berth_deploy::record::AuditRecord;
use berth_deploy::store::Store;
use berth_manifest::Manifest;
use berth_runtime::{Runtime, Slot};
use serde::Serialize;

use crate::metrics::DeployDurations;

/// Everything the server reads from.
pub struct Sources {
    pub manifest: Manifest,
    /// The directory of berth.toml.
    pub root: PathBuf,
    /// The git repository holding the deploy tags (none outside a repository).
    pub repo: Option<berth_git::Repo>,
    pub runtime: Box<dyn Runtime + Send + Sync>,
    pub store: Store,
}

/// One deploy or rollback, as the audit log recorded it.
#[derive(Debug, Clone, Serialize)]
pub struct DeployEvent {
    /// RFC 3339 UTC.
    pub at: String,
    pub unix: u64,
    /// `success` or `failure`.
    pub result: &'static str,
    /// `deploy` or `rollback`.
    pub kind: &'static str,
    pub version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    pub operator: String,
    pub tasks: Vec<String>,
    pub duration_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollback_of: Option<String>,
    /// The step a failed deploy stopped at.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_step: Option<String>,
}

/// The newest deploy tag of a product.
#[derive(Debug, Clone, Serialize)]
pub struct LastDeploy {
    pub tag: String,
    pub at: String,
    pub unix: u64,
    pub version: String,
    pub operator: Option<String>,
    pub tasks: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollback_of: Option<String>,
}

/// The newest backup of a product.
#[derive(Debug, Clone, Serialize)]
pub struct LastBackup {
    pub finished: String,
    pub finished_unix: u64,
    pub file_bytes: u64,
    pub file: String,
    /// The newest backup's off-site copy (`[backup.offsite]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offsite: Option<OffsiteView>,
    /// When the newest backup whose off-site copy succeeded was copied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offsite_last_success_unix: Option<u64>,
}

/// The last off-site copy, as the dashboard shows it.
#[derive(Debug, Clone, Serialize)]
pub struct OffsiteView {
    pub ok: bool,
    pub at: String,
    pub at_unix: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The last probe of one service.
#[derive(Debug, Clone, Serialize)]
pub struct Health {
    /// `up` or `down`.
    pub status: &'static str,
    pub latency_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    pub checked_at: String,
    pub checked_unix: u64,
    /// Why a probe failed (connection error or status), never a response body.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The port probed.
    pub port: u16,
    /// Every address of the live slot probed this round, each with its own answer.
    pub targets: Vec<TargetHealth>,
}

/// The last probe of one address of a service (one task or instance).
#[derive(Debug, Clone, Serialize)]
pub struct TargetHealth {
    /// `host:port`.
    pub address: String,
    /// `up` or `down`.
    pub status: &'static str,
    pub latency_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// One instance of a service's live slot: a task on a node (swarm), a container or a
/// process, with where it answers and, once probed, its own health.
#[derive(Debug, Clone, Serialize)]
pub struct TaskView {
    /// Task, container or process id.
    pub id: String,
    /// The node it runs on (runtimes that spread over machines).
    pub node: Option<String>,
    /// Where it answers (`host:port`; the node's address on swarm).
    pub address: Option<String>,
    /// Its state as the runtime says it (swarm: `running`, `starting`, ...).
    pub state: Option<String>,
    pub running: bool,
    /// `up` or `down` from its own last probe; none before one.
    pub health: Option<&'static str>,
}

/// Probe results by (product, service).
pub type Probes = Arc<Mutex<HashMap<(String, String), Health>>>;

#[derive(Debug, Clone, Serialize)]
pub struct ServiceView {
    pub name: String,
    /// The port of the first address where the live slot's service answers.
    pub port: Option<u16>,
    pub version: Option<String>,
    pub running: bool,
    /// The health path probed (none: the service has no health check).
    pub health_path: Option<String>,
    pub health: Option<Health>,
    /// Memory and CPU in use against the limits, where the runtime reads them.
    pub usage: Option<berth_runtime::ResourceUsage>,
    /// Each instance of the live slot with its node, address and health.
    pub tasks: Vec<TaskView>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct DeployCounts {
    pub success: u64,
    pub failure: u64,
    pub rollbacks: u64,
}

/// One product as the API and the page show it.
#[derive(Debug, Clone, Serialize)]
pub struct ProductView {
    pub name: String,
    pub display_name: String,
    /// Whether it has ever been deployed (a deploy tag, an instance or an audited deploy).
    pub deployed: bool,
    pub live_slot: Option<Slot>,
    pub live_version: Option<String>,
    /// `up` (every probed service answers), `down`, or `unknown` (nothing to probe yet).
    pub health: &'static str,
    pub services: Vec<ServiceView>,
    pub last_deploy: Option<LastDeploy>,
    pub last_backup: Option<LastBackup>,
    pub deploys: DeployCounts,
    /// Its certificate (mode acme or files): names, expiry, days left, last error.
    pub tls: Option<berth_tls::ProductStatus>,
    /// Its old slot, still running without traffic after a switch (`[deploy] standby`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub standby: Option<berth_deploy::standby::Standby>,
}

/// A product in the snapshot: its view without probes, and its deploy events.
#[derive(Debug, Clone)]
pub struct ProductState {
    pub view: ProductView,
    /// The newest deploy events (at most [`KEPT_EVENTS`]), newest first.
    pub events: Vec<DeployEvent>,
    /// Every deploy's duration, as histogram buckets.
    pub durations: DeployDurations,
    /// Unix time of the newest successful deploy or rollback in the audit log.
    pub last_success_unix: Option<u64>,
    /// Backup runs whose off-site copy failed, over the whole audit log.
    pub offsite_failures: u64,
}

/// How many deploy events per product the page and API keep (the counters count all).
pub const KEPT_EVENTS: usize = 200;

/// One product's deploys: exact totals over the whole audit log, and its newest events.
#[derive(Debug, Clone, Default)]
pub struct Deploys {
    pub counts: DeployCounts,
    pub durations: DeployDurations,
    /// The newest successful deploy or rollback.
    pub last_success: Option<DeployEvent>,
    /// The newest [`KEPT_EVENTS`], oldest first.
    pub recent: VecDeque<DeployEvent>,
}

impl Deploys {
    fn add(&mut self, e: DeployEvent) {
        match e.result {
            "success" => self.counts.success += 1,
            _ => self.counts.failure += 1,
        }
        if e.kind == "rollback" {
            self.counts.rollbacks += 1;
        }
        self.durations.observe(e.duration_ms);
        if e.result == "success" {
            self.last_success = Some(e.clone());
        }
        if self.recent.len() == KEPT_EVENTS {
            self.recent.pop_front();
        }
        self.recent.push_back(e);
    }

    /// The kept events, newest first.
    pub fn newest_first(&self) -> Vec<DeployEvent> {
        self.recent.iter().rev().cloned().collect()
    }
}

/// The deploy outcomes of every product, folded in as the audit log grows: each
/// [`refresh`](Self::refresh) reads only what was appended since the one before
/// (and everything again, from nothing, when the log was truncated or replaced).
pub struct DeployLog {
    tail: AuditTail,
    /// By product; records of products that are not in the manifest are skipped.
    products: HashMap<String, Deploys>,
    /// The `backup` records, read as they are appended.
    backups: AuditTail,
    /// Backup runs whose off-site copy failed, by product (the ones in the manifest).
    offsite_failures: HashMap<String, u64>,
}

impl DeployLog {
    /// A log of `products` read from `store`'s audit log (nothing is read until the first refresh).
    pub fn new<S: AsRef<str>>(store: &Store, products: impl IntoIterator<Item = S>) -> Self {
        let products: HashMap<String, Deploys> = products
            .into_iter()
            .map(|p| (p.as_ref().to_string(), Deploys::default()))
            .collect();
        Self {
            tail: AuditTail::new(store, Some("deploy")),
            offsite_failures: products.keys().map(|p| (p.clone(), 0)).collect(),
            products,
            backups: AuditTail::new(store, Some("backup")),
        }
    }

    /// Fold in the deploys appended since the last refresh. On an error the totals
    /// read so far stay (a counter that dropped to zero would read as a reset).
    pub fn refresh(&mut self) -> Result<(), String> {
        let products = &mut self.products;
        self.tail.read(|a| match a {
            Appended::Restart => products.values_mut().for_each(|d| *d = Deploys::default()),
            Appended::Record(r) => {
                if let Some(r) = AuditRecord::from_value(&r)
                    && let Some(d) = products.get_mut(&r.product)
                {
                    d.add(event_of(&r));
                }
            }
        })?;
        let failures = &mut self.offsite_failures;
        self.backups.read(|a| match a {
            Appended::Restart => failures.values_mut().for_each(|n| *n = 0),
            Appended::Record(r) => {
                if let Some(r) = AuditRecord::from_value(&r)
                    && r.offsite.as_deref() == Some("failed")
                    && let Some(n) = failures.get_mut(&r.product)
                {
                    *n += 1;
                }
            }
        })
    }

    pub fn of(&self, product: &str) -> Option<&Deploys> {
        self.products.get(product)
    }

    /// Backup runs of `product` whose off-site copy failed, over the whole audit log.
    pub fn offsite_failures(&self, product: &str) -> u64 {
        self.offsite_failures.get(product).copied().unwrap_or(0)
    }
}

/// Everything the collector read at `taken_unix`.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub products: Vec<ProductState>,
    pub taken_unix: u64,
    /// Problems reading a source (shown on the page, logged once each).
    pub problems: Vec<String>,
    /// Why the audit log could not be read at `taken_unix` (a state database that
    /// does not answer within the tail's timeout): the deploy totals are from before.
    pub audit_error: Option<String>,
}

impl Snapshot {
    /// Why what this snapshot shows may be out of date at `now`, empty when it is not:
    /// the collector has not finished a refresh for more than 3 periods of
    /// `refresh_secs` (a source that hangs), or the audit log could not be read.
    pub fn stale_reasons(&self, refresh_secs: u64, now: u64) -> Vec<String> {
        let mut out = Vec::new();
        let age = now.saturating_sub(self.taken_unix);
        if self.taken_unix > 0 && age > 3 * refresh_secs.max(1) {
            out.push(format!(
                "the data was collected {age}s ago (the runtime, git or the state store is slow to answer)"
            ));
        }
        if let Some(e) = &self.audit_error {
            out.push(format!(
                "the audit log could not be read, deploy totals are from before: {e}"
            ));
        }
        out
    }
}

pub type Shared = Arc<RwLock<Snapshot>>;

pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// RFC 3339 (any offset) to Unix seconds.
pub fn parse_time(s: &str) -> Option<u64> {
    s.parse::<jiff::Timestamp>()
        .ok()
        .and_then(|t| u64::try_from(t.as_second()).ok())
}

/// Read every source once (the audit log from where `log` got to) and build a
/// snapshot. `previous` keeps the last known live slot of a product whose
/// processes are all gone (so the prober keeps probing where it last served, and
/// reports it down).
pub fn collect(src: &Sources, log: &mut DeployLog, previous: &Snapshot) -> Snapshot {
    let m = &src.manifest;
    let front_door = berth_deploy::front_door::open(m, &src.root);
    let mut problems = Vec::new();
    let audit_error = log.refresh().err();
    if let Some(e) = &audit_error {
        problems.push(format!("audit log: {e}"));
    }
    let none = Deploys::default();
    let tls_status: Vec<berth_tls::ProductStatus> = berth_tls::status(m, &src.root)
        .into_iter()
        .filter(|t| t.mode != "off")
        .collect();
    let mut products = Vec::new();
    for (name, p) in &m.products {
        let instances = src.runtime.instances(name).unwrap_or_else(|e| {
            problems.push(format!("{name}: {e}"));
            Vec::new()
        });
        let tags = match &src.repo {
            Some(r) => berth_deploy::tags::history(r, name).unwrap_or_else(|e| {
                problems.push(format!("{name}: deploy tags: {e}"));
                Vec::new()
            }),
            None => Vec::new(),
        };
        let d = log.of(name).unwrap_or(&none);
        let deployed = !instances.is_empty() || !tags.is_empty() || d.counts.success > 0;
        let alive_slot = instances.iter().find(|i| i.alive).map(|i| i.slot);
        let proxy_slot = front_door.routed(name, src.runtime.as_ref()).ok().flatten();
        let before = previous
            .products
            .iter()
            .find(|x| x.view.name == *name)
            .and_then(|x| x.view.live_slot);
        // A deployed product whose processes are all gone is probed where it last ran
        // (or its first slot), so it shows down instead of unknown.
        let any_slot = instances.first().map(|i| i.slot);
        let live_slot = if deployed {
            proxy_slot
                .or(alive_slot)
                .or(before)
                .or(any_slot)
                .or(Some(Slot::Blue))
        } else {
            None
        };
        let services = p
            .services
            .iter()
            .map(|(sname, svc)| {
                let inst = live_slot.and_then(|s| {
                    instances
                        .iter()
                        .find(|i| i.slot == s && i.service == *sname)
                });
                ServiceView {
                    name: sname.clone(),
                    port: live_slot.and_then(|s| {
                        src.runtime
                            .addresses(name, sname, s)
                            .first()
                            .map(|a| a.port)
                    }),
                    version: inst.map(|i| i.version.clone()),
                    running: inst.is_some_and(|i| i.alive),
                    health_path: svc.health.as_ref().map(|h| h.path.clone()),
                    health: None,
                    usage: inst.and_then(|i| src.runtime.usage(name, i)),
                    tasks: live_slot
                        .map(|s| {
                            instances
                                .iter()
                                .filter(|i| i.slot == s && i.service == *sname)
                                .map(|i| TaskView {
                                    id: i.id.clone(),
                                    node: i.node.clone(),
                                    address: src.runtime.address_of(name, i).map(|a| a.to_string()),
                                    state: i.state.clone(),
                                    running: i.alive,
                                    health: None,
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                }
            })
            .collect::<Vec<_>>();
        let last_deploy = tags.first().map(|t| LastDeploy {
            tag: t.tag.clone(),
            at: t.date.clone(),
            unix: parse_time(&t.date).unwrap_or(0),
            version: t.version.clone(),
            operator: t.operator.clone(),
            tasks: t.tasks.clone(),
            rollback_of: t.rollback_of.clone(),
        });
        let last_deploy = last_deploy.or_else(|| {
            d.last_success.as_ref().map(|e| LastDeploy {
                tag: e.tag.clone().unwrap_or_default(),
                at: e.at.clone(),
                unix: e.unix,
                version: e.version.clone(),
                operator: Some(e.operator.clone()),
                tasks: e.tasks.clone(),
                rollback_of: e.rollback_of.clone(),
            })
        });
        let live_version = services.iter().find_map(|s| s.version.clone()).or_else(|| {
            live_slot
                .is_some()
                .then(|| last_deploy.as_ref().map(|d| d.version.clone()))
                .flatten()
        });
        let records = berth_backup::list(m, &src.root, Some(name));
        let offsite_last_success_unix = records
            .iter()
            .filter_map(|r| r.offsite.as_ref().filter(|o| o.ok).map(|o| o.at_unix))
            .max();
        let last_backup = records.last().map(|r| LastBackup {
            finished: r.finished.clone(),
            finished_unix: r.finished_unix,
            file_bytes: r.file_bytes,
            file: r.file.clone(),
            offsite: r.offsite.as_ref().map(|o| OffsiteView {
                ok: o.ok,
                at: o.at.clone(),
                at_unix: o.at_unix,
                error: o.error.clone(),
            }),
            offsite_last_success_unix,
        });
        let tls = tls_status.iter().find(|t| t.product == *name).cloned();
        // berth has no daemon of its own: each tick of `berth serve` ends a standby
        // whose window is over (under the deploy lock), then shows the one that runs.
        let standby = src.repo.as_ref().and_then(|repo| {
            let reaped = berth_deploy::standby::reap(
                m,
                repo,
                src.runtime.as_ref(),
                front_door.as_ref(),
                &src.store,
                name,
                "berth serve",
            );
            if let Err(e) = reaped {
                problems.push(format!(
                    "{name}: could not stop the expired warm standby: {e}"
                ));
            }
            berth_deploy::standby::find(m, repo, src.runtime.as_ref(), front_door.as_ref(), name)
        });
        // The live slot's tasks may have moved (a node died, the runtime rescheduled
        // them): the front door follows their addresses.
        if deployed
            && let Err(e) = berth_deploy::front_door::follow(
                front_door.as_ref(),
                src.runtime.as_ref(),
                &src.store,
                name,
                "berth serve",
            )
        {
            problems.push(format!("{name}: {e}"));
        }
        products.push(ProductState {
            view: ProductView {
                name: name.clone(),
                display_name: p.title(name).to_string(),
                deployed,
                live_slot,
                live_version,
                health: "unknown",
                services,
                last_deploy,
                last_backup,
                deploys: d.counts.clone(),
                tls,
                standby,
            },
            events: d.newest_first(),
            durations: d.durations.clone(),
            last_success_unix: d.last_success.as_ref().map(|e| e.unix),
            offsite_failures: log.offsite_failures(name),
        });
    }
    Snapshot {
        products,
        taken_unix: now_unix(),
        problems,
        audit_error,
    }
}

/// One `deploy` record of the audit log as a deploy event.
fn event_of(r: &AuditRecord) -> DeployEvent {
    let at = r.at.clone().unwrap_or_default();
    let rollback_of = r.rollback_of.clone().flatten().filter(|x| !x.is_empty());
    DeployEvent {
        unix: parse_time(&at).unwrap_or(0),
        at,
        result: if r.ok() { "success" } else { "failure" },
        kind: if rollback_of.is_some() {
            "rollback"
        } else {
            "deploy"
        },
        version: r.version.clone().unwrap_or_default(),
        tag: r.tag.clone().filter(|t| !t.is_empty()),
        operator: r.operator.clone().unwrap_or_default(),
        tasks: r.tasks.clone().unwrap_or_default(),
        duration_ms: r.duration_ms.unwrap_or(0),
        rollback_of,
        failed_step: r.failed_step.clone(),
    }
}

/// The views of the products with the latest probes joined in.
pub fn views(snapshot: &Snapshot, probes: &Probes) -> Vec<ProductView> {
    let probes = probes.lock().unwrap_or_else(|e| e.into_inner());
    snapshot
        .products
        .iter()
        .map(|p| with_probes(&p.view, &probes))
        .collect()
}

pub fn with_probes(view: &ProductView, probes: &HashMap<(String, String), Health>) -> ProductView {
    let mut v = view.clone();
    let mut any = false;
    let mut all_up = true;
    for s in &mut v.services {
        if s.health_path.is_none() || !v.deployed {
            continue;
        }
        if let Some(h) = probes.get(&(v.name.clone(), s.name.clone())) {
            any = true;
            all_up &= h.status == "up";
            for t in &mut s.tasks {
                t.health = h
                    .targets
                    .iter()
                    .find(|x| t.address.as_deref() == Some(x.address.as_str()))
                    .map(|x| x.status);
            }
            s.health = Some(h.clone());
        }
    }
    v.health = match (any, all_up) {
        (false, _) => "unknown",
        (true, true) => "up",
        (true, false) => "down",
    };
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A local store in a temp dir, and its audit log's path.
    fn local_store() -> (tempfile::TempDir, Store, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".berth/audit.jsonl");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let store = Store::Local(dir.path().to_path_buf());
        (dir, store, path)
    }

    fn append(path: &std::path::Path, text: &str) {
        use std::io::Write;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }

    #[test]
    fn audit_records_become_events_newest_first() {
        let (_dir, store, path) = local_store();
        let lines = [
            r#"{"product":"a","step":"lock","result":"ok"}"#,
            r#"{"product":"a","step":"deploy","result":"ok","version":"v1","at":"2026-01-01T00:00:00Z","tag":"a-deploy-1","operator":"o","tasks":["TASK-1-x"],"duration_ms":1500,"rollback_of":null}"#,
            r#"{"product":"b","step":"deploy","result":"ok","version":"v9","at":"2026-01-01T00:00:00Z"}"#,
            r#"{"product":"gone","step":"deploy","result":"ok","version":"v9","at":"2026-01-01T00:00:00Z"}"#,
            r#"{"product":"a","step":"deploy","result":"failed","failed_step":"health-check","version":"v2","at":"2026-01-01T00:01:00Z","duration_ms":900}"#,
            r#"{"product":"a","step":"deploy","result":"ok","version":"v1","at":"2026-01-01T00:02:00+00:00","rollback_of":"a-deploy-2","tag":"a-deploy-3"}"#,
        ];
        append(&path, &(lines.join("\n") + "\n"));
        let mut log = DeployLog::new(&store, ["a", "b"]);
        log.refresh().unwrap();
        let a = log.of("a").unwrap();
        let e = a.newest_first();
        assert_eq!(e.len(), 3);
        assert_eq!(
            (e[0].kind, e[0].result, e[0].unix),
            ("rollback", "success", 1_767_225_720)
        );
        assert_eq!(
            (e[1].result, e[1].failed_step.as_deref()),
            ("failure", Some("health-check"))
        );
        assert_eq!((e[2].kind, e[2].duration_ms), ("deploy", 1500));
        assert_eq!(e[2].tasks, ["TASK-1-x"]);
        assert_eq!(
            (a.counts.success, a.counts.failure, a.counts.rollbacks),
            (2, 1, 1)
        );
        assert_eq!(a.last_success.as_ref().unwrap().unix, 1_767_225_720);
        assert_eq!(log.of("b").unwrap().counts.success, 1);
        assert!(log.of("gone").is_none(), "not in the manifest: not kept");
    }

    /// A deploy record: every third fails, every fifth is a rollback, durations spread over the buckets.
    fn record(n: u64) -> String {
        serde_json::json!({
            "product": "a",
            "step": "deploy",
            "result": if n.is_multiple_of(3) { "failed" } else { "ok" },
            "rollback_of": if n.is_multiple_of(5) { "a-deploy-x" } else { "" },
            "version": format!("v{n}"),
            "at": format!("2026-01-01T00:{:02}:{:02}Z", n / 60 % 60, n % 60),
            "duration_ms": n * 7919 % 2_000_000,
        })
        .to_string()
            + "\n"
    }

    /// The totals of records `from..to`, counted the slow way.
    fn expected(ns: std::ops::Range<u64>) -> (DeployCounts, DeployDurations) {
        let mut c = DeployCounts::default();
        let mut d = DeployDurations::default();
        for n in ns {
            if n.is_multiple_of(3) {
                c.failure += 1;
            } else {
                c.success += 1;
            }
            if n.is_multiple_of(5) {
                c.rollbacks += 1;
            }
            d.observe(n * 7919 % 2_000_000);
        }
        (c, d)
    }

    fn totals(log: &DeployLog) -> (u64, u64, u64, DeployDurations) {
        let a = log.of("a").unwrap();
        (
            a.counts.success,
            a.counts.failure,
            a.counts.rollbacks,
            a.durations.clone(),
        )
    }

    #[test]
    fn totals_stay_exact_across_refreshes_and_start_over_when_the_log_is_truncated() {
        let (_dir, store, path) = local_store();
        let mut log = DeployLog::new(&store, ["a"]);
        let text: String = (0..150).map(record).collect();
        append(&path, &text);
        log.refresh().unwrap();
        // The rest in pieces, one of them cut in the middle of a record.
        let rest: String = (150..320).map(record).collect();
        let cut = rest.len() / 3 + 17;
        append(&path, &rest[..cut]);
        log.refresh().unwrap();
        append(&path, &rest[cut..]);
        log.refresh().unwrap();
        log.refresh().unwrap();

        let (c, d) = expected(0..320);
        assert_eq!(
            totals(&log),
            (c.success, c.failure, c.rollbacks, d.clone()),
            "every deploy counted once"
        );
        assert!(d.buckets.iter().filter(|b| **b > 0).count() > 3, "{d:?}");
        assert!(
            d.count > d.buckets.iter().sum::<u64>(),
            "some above the last bucket"
        );
        let a = log.of("a").unwrap();
        let events = a.newest_first();
        assert_eq!(events.len(), KEPT_EVENTS);
        assert_eq!(events[0].version, "v319");
        assert_eq!(events[KEPT_EVENTS - 1].version, "v120");
        assert_eq!(a.last_success.as_ref().unwrap().version, "v319");

        // The same as a reader that read it all at once.
        let mut fresh = DeployLog::new(&store, ["a"]);
        fresh.refresh().unwrap();
        assert_eq!(totals(&fresh), totals(&log));

        // Truncated and written again: the totals are the new log's.
        std::fs::write(&path, (1000..1004).map(record).collect::<String>()).unwrap();
        log.refresh().unwrap();
        let (c, d) = expected(1000..1004);
        assert_eq!(totals(&log), (c.success, c.failure, c.rollbacks, d));
        assert_eq!(log.of("a").unwrap().newest_first().len(), 4);
    }

    /// Failed off-site copies are counted from the `backup` records, per product, across
    /// refreshes; a successful copy or a backup without one does not count, and a
    /// product not in the manifest is skipped.
    #[test]
    fn failed_offsite_copies_are_counted_per_product() {
        let (_dir, store, path) = local_store();
        let mut log = DeployLog::new(&store, ["a", "b"]);
        let backup = |product: &str, offsite: Option<&str>| {
            let mut v = serde_json::json!({
                "product": product,
                "step": "backup",
                "result": if offsite == Some("failed") { "failed" } else { "ok" },
                "at": "2026-01-01T00:00:00Z",
            });
            if let Some(o) = offsite {
                v["offsite"] = o.into();
            }
            v.to_string() + "\n"
        };
        append(
            &path,
            &(backup("a", Some("failed"))
                + &backup("a", Some("ok"))
                + &backup("b", None)
                + &record(1)),
        );
        log.refresh().unwrap();
        assert_eq!(
            (log.offsite_failures("a"), log.offsite_failures("b")),
            (1, 0)
        );
        append(
            &path,
            &(backup("a", Some("failed"))
                + &backup("b", Some("failed"))
                + &backup("c", Some("failed"))),
        );
        log.refresh().unwrap();
        assert_eq!(
            (log.offsite_failures("a"), log.offsite_failures("b")),
            (2, 1)
        );
        assert_eq!(log.offsite_failures("c"), 0);
        assert_eq!(
            log.of("a").unwrap().counts.success,
            1,
            "the deploy still counts"
        );
    }

    #[test]
    fn times_with_offsets_parse() {
        assert_eq!(parse_time("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(parse_time("nonsense"), None);
    }
}
