//! What `berth serve` knows about every product, read from where berth keeps it:
//! the runtime (which slot runs which version), the proxy (which slot is live),
//! the deploy tags (who deployed what, with which tasks), the audit log (every
//! deploy, failures and rollbacks included) and the backup records.
//!
//! The collector rebuilds a [`Snapshot`] every refresh; the prober's results are
//! kept apart ([`Probes`]) and joined in when a view is built.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use berth_deploy::proxy::Nginx;
use berth_deploy::store::Store;
use berth_manifest::Manifest;
use berth_runtime::{Runtime, Slot, slot_port};
use serde::Serialize;

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
}

/// Probe results by (product, service).
pub type Probes = Arc<Mutex<HashMap<(String, String), Health>>>;

#[derive(Debug, Clone, Serialize)]
pub struct ServiceView {
    pub name: String,
    /// The live slot's port on this machine.
    pub port: Option<u16>,
    pub version: Option<String>,
    pub running: bool,
    /// The health path probed (none: the service has no health check).
    pub health_path: Option<String>,
    pub health: Option<Health>,
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
}

/// A product in the snapshot: its view without probes, and its deploy events.
#[derive(Debug, Clone)]
pub struct ProductState {
    pub view: ProductView,
    /// The newest deploy events (at most [`KEPT_EVENTS`]), newest first.
    pub events: Vec<DeployEvent>,
    /// Every deploy's duration, in seconds, as histogram buckets (counted once per refresh).
    pub durations: Vec<f64>,
    /// Unix time of the newest successful deploy or rollback in the audit log.
    pub last_success_unix: Option<u64>,
}

/// How many deploy events per product the page and API keep (the counters count all).
pub const KEPT_EVENTS: usize = 200;

/// Everything the collector read at `taken_unix`.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub products: Vec<ProductState>,
    pub taken_unix: u64,
    /// Problems reading a source (shown on the page, logged once each).
    pub problems: Vec<String>,
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

/// Read every source once and build a snapshot. `previous` keeps the last known
/// live slot of a product whose processes are all gone (so the prober keeps
/// probing where it last served, and reports it down).
pub fn collect(src: &Sources, previous: &Snapshot) -> Snapshot {
    let m = &src.manifest;
    let nginx = Nginx::new(m, &src.root);
    let mut problems = Vec::new();
    let audit = src
        .store
        .read_audit(None, Some("deploy"))
        .unwrap_or_else(|e| {
            problems.push(format!("audit log: {e}"));
            Vec::new()
        });
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
        let events = events_of(&audit, name);
        let deployed = !instances.is_empty()
            || !tags.is_empty()
            || events.iter().any(|e| e.result == "success");
        let alive_slot = instances.iter().find(|i| i.alive).map(|i| i.slot);
        let proxy_slot = nginx
            .as_ref()
            .and_then(|n| n.live_slot(name).ok().flatten());
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
                    port: live_slot.and_then(|s| slot_port(m, svc, s)),
                    version: inst.map(|i| i.version.clone()),
                    running: inst.is_some_and(|i| i.alive),
                    health_path: svc.health.as_ref().map(|h| h.path.clone()),
                    health: None,
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
            events
                .iter()
                .find(|e| e.result == "success")
                .map(|e| LastDeploy {
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
        let last_backup = berth_backup::latest(m, &src.root, name).map(|r| LastBackup {
            finished: r.finished.clone(),
            finished_unix: r.finished_unix,
            file_bytes: r.file_bytes,
            file: r.file.clone(),
        });
        let deploys = DeployCounts {
            success: events.iter().filter(|e| e.result == "success").count() as u64,
            failure: events.iter().filter(|e| e.result == "failure").count() as u64,
            rollbacks: events.iter().filter(|e| e.kind == "rollback").count() as u64,
        };
        let durations: Vec<f64> = events
            .iter()
            .map(|e| e.duration_ms as f64 / 1000.0)
            .collect();
        let last_success_unix = events
            .iter()
            .find(|e| e.result == "success")
            .map(|e| e.unix);
        let mut events = events;
        events.truncate(KEPT_EVENTS);
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
                deploys,
            },
            events,
            durations: crate::metrics::bucket_counts(&durations),
            last_success_unix,
        });
    }
    Snapshot {
        products,
        taken_unix: now_unix(),
        problems,
    }
}

/// The deploy outcomes of `product` in the audit log, newest first.
fn events_of(audit: &[serde_json::Value], product: &str) -> Vec<DeployEvent> {
    let s = |r: &serde_json::Value, k: &str| r[k].as_str().map(str::to_string);
    let mut out: Vec<DeployEvent> = audit
        .iter()
        .filter(|r| r["product"].as_str() == Some(product) && r["step"].as_str() == Some("deploy"))
        .map(|r| {
            let at = s(r, "at").unwrap_or_default();
            let rollback_of = s(r, "rollback_of").filter(|x| !x.is_empty());
            DeployEvent {
                unix: parse_time(&at).unwrap_or(0),
                at,
                result: if r["result"].as_str() == Some("ok") {
                    "success"
                } else {
                    "failure"
                },
                kind: if rollback_of.is_some() {
                    "rollback"
                } else {
                    "deploy"
                },
                version: s(r, "version").unwrap_or_default(),
                tag: s(r, "tag").filter(|t| !t.is_empty()),
                operator: s(r, "operator").unwrap_or_default(),
                tasks: r["tasks"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|t| t.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default(),
                duration_ms: r["duration_ms"].as_u64().unwrap_or(0),
                rollback_of,
                failed_step: s(r, "failed_step"),
            }
        })
        .collect();
    out.reverse();
    out
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

    #[test]
    fn audit_records_become_events_newest_first() {
        let audit: Vec<serde_json::Value> = [
            r#"{"product":"a","step":"lock","result":"ok"}"#,
            r#"{"product":"a","step":"deploy","result":"ok","version":"v1","at":"2026-01-01T00:00:00Z","tag":"a-deploy-1","operator":"o","tasks":["TASK-1-x"],"duration_ms":1500,"rollback_of":null}"#,
            r#"{"product":"b","step":"deploy","result":"ok","version":"v9","at":"2026-01-01T00:00:00Z"}"#,
            r#"{"product":"a","step":"deploy","result":"failed","failed_step":"health-check","version":"v2","at":"2026-01-01T00:01:00Z","duration_ms":900}"#,
            r#"{"product":"a","step":"deploy","result":"ok","version":"v1","at":"2026-01-01T00:02:00+00:00","rollback_of":"a-deploy-2","tag":"a-deploy-3"}"#,
        ]
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
        let e = events_of(&audit, "a");
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
    }

    #[test]
    fn times_with_offsets_parse() {
        assert_eq!(parse_time("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(parse_time("nonsense"), None);
    }
}
