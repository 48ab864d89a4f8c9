//! The health prober: one task per service with a health check, probing the live
//! slot's port on the service's health path at its interval, with its timeout.
//! Results go to [`Probes`] and to the probe metrics.

use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_runtime::{Address, http};

use crate::metrics::Metrics;
use crate::state::{Health, Probes, Shared, Sources, TargetHealth, now_unix};

/// The shortest interval probes run at, whatever berth.toml says.
const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// Outcome of one probe: HTTP status (or the connection error) and how long it took.
pub struct ProbeResult {
    pub status: Option<u16>,
    pub error: Option<String>,
    pub elapsed: Duration,
}

/// `GET http://{address}{path}` through berth's one HTTP client, within `timeout`
/// (the answer's head only: the body is not read). Runs on a blocking thread.
pub async fn probe(address: &Address, path: &str, timeout: Duration) -> ProbeResult {
    let client = http::Client::new(timeout).user_agent("berth-serve");
    let (url, host) = (format!("http://{address}{path}"), address.host.clone());
    let start = Instant::now();
    let result = tokio::task::spawn_blocking(move || client.get(&url, Some(&host), 0))
        .await
        .unwrap_or_else(|e| Err(format!("the probe failed: {e}")));
    let elapsed = start.elapsed();
    match result {
        Ok(a) => ProbeResult {
            status: Some(a.status),
            error: None,
            elapsed,
        },
        Err(e) => ProbeResult {
            status: None,
            error: Some(e),
            elapsed,
        },
    }
}

/// Why a probe failed (the connection error, or the status), never a body.
fn detail(r: &ProbeResult, up: bool) -> Option<String> {
    match (&r.error, r.status) {
        (Some(e), _) => Some(e.chars().take(120).collect()),
        (None, Some(s)) if !up => Some(format!("HTTP {s}")),
        _ => None,
    }
}

/// Start one probing task per service with a health check. They run until the runtime stops.
pub fn spawn_all(snapshot: Shared, probes: Probes, metrics: Metrics, sources: Arc<Sources>) {
    for (product, p) in &sources.manifest.products {
        for (service, svc) in &p.services {
            let Some(h) = &svc.health else { continue };
            let (product, service) = (product.clone(), service.clone());
            let path = h.path.clone();
            let interval = h.interval.0.max(MIN_INTERVAL);
            let timeout = h.timeout.0.min(interval).max(Duration::from_millis(50));
            let (snapshot, probes, metrics) = (snapshot.clone(), probes.clone(), metrics.clone());
            let sources = sources.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    // The front door says where traffic goes now (asked every probe, so
                    // a switch is followed at once); when it names no slot, the
                    // collector's live slot. Every address of the service there is probed.
                    let deployed_slot = {
                        let s = snapshot.read().unwrap_or_else(|e| e.into_inner());
                        s.products
                            .iter()
                            .find(|x| x.view.name == product)
                            .filter(|x| x.view.deployed)
                            .map(|x| x.view.live_slot)
                    };
                    let targets: Vec<Address> = deployed_slot
                        .and_then(|known| {
                            let rt = sources.runtime.as_ref();
                            berth_deploy::front_door::open(&sources.manifest, &sources.root)
                                .routed(&product, rt)
                                .ok()
                                .flatten()
                                .or(known)
                                .map(|slot| rt.addresses(&product, &service, slot))
                        })
                        .unwrap_or_default();
                    if targets.is_empty() {
                        // Not deployed (or no live slot known yet): nothing to probe.
                        probes
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .remove(&(product.clone(), service.clone()));
                        metrics.forget_up(&product, &service);
                        metrics.forget_tasks(&product, &service, &[]);
                        continue;
                    }
                    // The node of each address, as the collector last saw the tasks.
                    let nodes: Vec<(String, String)> = {
                        let s = snapshot.read().unwrap_or_else(|e| e.into_inner());
                        s.products
                            .iter()
                            .filter(|x| x.view.name == product)
                            .flat_map(|x| x.view.services.iter())
                            .filter(|x| x.name == service)
                            .flat_map(|x| x.tasks.iter())
                            .filter_map(|t| Some((t.address.clone()?, t.node.clone()?)))
                            .collect()
                    };
                    // Every address is probed (each task's own health); the service is
                    // up when every one answers 2xx, and the first that does not is the
                    // one reported.
                    let mut reported = None;
                    let mut per_target = Vec::new();
                    for address in &targets {
                        let r = probe(address, &path, timeout).await;
                        let up = r.status.is_some_and(|s| (200..300).contains(&s));
                        let a = address.to_string();
                        let node = nodes
                            .iter()
                            .find(|(x, _)| *x == a)
                            .map_or("", |(_, n)| n.as_str());
                        metrics.observe_task(&product, &service, &a, node, up);
                        per_target.push(TargetHealth {
                            address: a,
                            status: if up { "up" } else { "down" },
                            latency_ms: (r.elapsed.as_secs_f64() * 1000.0 * 10.0).round() / 10.0,
                            detail: detail(&r, up),
                        });
                        let first_down = !up && reported.as_ref().is_none_or(|(_, _, u)| *u);
                        if reported.is_none() || first_down {
                            reported = Some((address.port, r, up));
                        }
                    }
                    let live: Vec<String> = targets.iter().map(|a| a.to_string()).collect();
                    metrics.forget_tasks(&product, &service, &live);
                    let Some((port, r, up)) = reported else {
                        continue;
                    };
                    metrics.observe_probe(&product, &service, r.elapsed, up);
                    let now = now_unix();
                    let health = Health {
                        status: if up { "up" } else { "down" },
                        latency_ms: (r.elapsed.as_secs_f64() * 1000.0 * 10.0).round() / 10.0,
                        http_status: r.status,
                        checked_at: berth_deploy::tags::utc_stamp(now).1,
                        checked_unix: now,
                        detail: detail(&r, up),
                        port,
                        targets: per_target,
                    };
                    probes
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert((product.clone(), service.clone()), health);
                }
            });
        }
    }
}
