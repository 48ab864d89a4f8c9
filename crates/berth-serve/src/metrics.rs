//! `/metrics`: the prober's live metrics, plus metrics derived on each scrape from
//! the collector's snapshot (deploys, rollbacks, live versions, backups).
//!
//! Labels are bounded: `product` and `service` come from berth.toml, `result` is
//! `success` or `failure`, and `version` appears only on the `_info` gauge, one
//! series per live service; `address` and `node` (on `berth_task_up`) name the live
//! slot's tasks, and a task's series is dropped when it is gone.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::state::Shared;

type Labels = Vec<(&'static str, String)>;

/// The `berth_task_up` label sets of each (product, service).
type TaskSeries = HashMap<(String, String), Vec<Labels>>;

const PROBE_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];
const DEPLOY_BUCKETS: [f64; 10] = [1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0];

/// Deploy durations as histogram buckets, kept as each deploy is read from the
/// audit log: exact integers (milliseconds), so the totals do not depend on the
/// order or the number of refreshes that added them, and a scrape costs the same
/// however long the history is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeployDurations {
    pub count: u64,
    pub sum_ms: u64,
    /// Deploys per bucket of [`DEPLOY_BUCKETS`] (not cumulative); the rest are above the last.
    pub buckets: [u64; DEPLOY_BUCKETS.len()],
}

impl DeployDurations {
    pub fn observe(&mut self, ms: u64) {
        self.count += 1;
        self.sum_ms = self.sum_ms.saturating_add(ms);
        if let Some(i) = DEPLOY_BUCKETS
            .iter()
            .position(|b| ms <= (*b * 1000.0) as u64)
        {
            self.buckets[i] += 1;
        }
    }
}

/// A histogram from [`DeployDurations`].
struct BucketHistogram<'a>(&'a DeployDurations);

impl EncodeMetric for BucketHistogram<'_> {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::MetricEncoder,
    ) -> Result<(), std::fmt::Error> {
        let d = self.0;
        // Counts per bucket, then +Inf (the encoder accumulates).
        let mut buckets: Vec<(f64, u64)> = DEPLOY_BUCKETS
            .iter()
            .copied()
            .zip(d.buckets.iter().copied())
            .collect();
        let within: u64 = d.buckets.iter().sum();
        buckets.push((f64::INFINITY, d.count.saturating_sub(within)));
        encoder.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            d.sum_ms as f64 / 1000.0,
            d.count,
            &buckets,
            None,
        )
    }
    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

fn probe_histogram() -> Histogram {
    Histogram::new(PROBE_BUCKETS)
}

/// The registry and the live metric handles (cheap to clone).
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    probe_seconds: Family<Labels, Histogram, fn() -> Histogram>,
    up: Family<Labels, Gauge>,
    task_up: Family<Labels, Gauge>,
    /// The `berth_task_up` series each service has, to drop those of tasks gone.
    task_series: Arc<Mutex<TaskSeries>>,
}

fn service_labels(product: &str, service: &str) -> Labels {
    vec![
        ("product", product.to_string()),
        ("service", service.to_string()),
    ]
}

impl Metrics {
    /// `refresh_secs`: the collector's period (its snapshot is stale after 3 of them).
    pub fn new(snapshot: Shared, refresh_secs: u64) -> Self {
        let mut registry = Registry::default();
        let probe_seconds: Family<Labels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(probe_histogram);
        let up: Family<Labels, Gauge> = Family::default();
        registry.register(
            "berth_product_up",
            "Whether the service's live slot answered its last health probe with 2xx (1) or not (0)",
            up.clone(),
        );
        registry.register_with_unit(
            "berth_probe_duration",
            "Time a health probe of a service's live slot took, failures included",
            Unit::Seconds,
            probe_seconds.clone(),
        );
        let task_up: Family<Labels, Gauge> = Family::default();
        registry.register(
            "berth_task_up",
            "Whether one task (instance) of the service's live slot answered its last health probe with 2xx (1) or not (0), by the address probed and the node it runs on (empty on one machine)",
            task_up.clone(),
        );
        registry.register_collector(Box::new(Derived {
            snapshot,
            refresh_secs,
        }));
        Self {
            registry: Arc::new(registry),
            probe_seconds,
            up,
            task_up,
            task_series: Arc::default(),
        }
    }

    /// One task's probe: `address` is where it answered, `node` the node it runs on.
    pub fn observe_task(&self, product: &str, service: &str, address: &str, node: &str, up: bool) {
        let mut l = service_labels(product, service);
        l.push(("address", address.to_string()));
        l.push(("node", node.to_string()));
        self.task_up.get_or_create(&l).set(i64::from(up));
        let mut known = self.task_series.lock().unwrap_or_else(|e| e.into_inner());
        let series = known
            .entry((product.to_string(), service.to_string()))
            .or_default();
        if !series.contains(&l) {
            series.push(l);
        }
    }

    /// Drop the task series of a service whose address is not in `live` (a task
    /// gone, rescheduled elsewhere, or a switch to the other slot).
    pub fn forget_tasks(&self, product: &str, service: &str, live: &[String]) {
        let mut known = self.task_series.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(series) = known.get_mut(&(product.to_string(), service.to_string())) {
            series.retain(|l| {
                let keep = l
                    .iter()
                    .any(|(k, v)| *k == "address" && live.iter().any(|a| a == v));
                if !keep {
                    self.task_up.remove(l);
                }
                keep
            });
        }
    }

    pub fn observe_probe(&self, product: &str, service: &str, took: Duration, up: bool) {
        let l = service_labels(product, service);
        self.probe_seconds
            .get_or_create(&l)
            .observe(took.as_secs_f64());
        self.up.get_or_create(&l).set(i64::from(up));
    }

    /// A service with nothing to probe has no `up` series (rather than a false 0).
    pub fn forget_up(&self, product: &str, service: &str) {
        self.up.remove(&service_labels(product, service));
    }

    /// The exposition: OpenMetrics text, or the Prometheus text format 0.0.4.
    pub fn encode(&self, openmetrics: bool) -> String {
        let mut out = String::with_capacity(16 * 1024);
        let r = if openmetrics {
            prometheus_client::encoding::text::encode(&mut out, &self.registry)
        } else {
            prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
        };
        if let Err(e) = r {
            tracing::error!("could not encode the metrics: {e}");
        }
        out
    }
}

pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
pub const TEXT_CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Metrics computed from the snapshot at scrape time.
#[derive(Debug)]
struct Derived {
    snapshot: Shared,
    refresh_secs: u64,
}

impl Collector for Derived {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let snap = self.snapshot.read().unwrap_or_else(|e| e.into_inner());
        let products = &snap.products;
        let product = |name: &str| -> Labels { vec![("product", name.to_string())] };

        {
            let m = encoder.encode_descriptor(
                "berth_serve_stale",
                "Whether what berth serve shows may be out of date (1): a refresh that has not finished for 3 periods, or an audit log that could not be read",
                None,
                MetricType::Gauge,
            )?;
            let stale = !snap
                .stale_reasons(self.refresh_secs, crate::state::now_unix())
                .is_empty();
            ConstGauge::new(i64::from(stale)).encode(m)?;
        }

        {
            let mut m = encoder.encode_descriptor(
                "berth_deploys",
                "Deploys and rollbacks by outcome, from the audit log",
                None,
                MetricType::Counter,
            )?;
            for p in products {
                for (result, n) in [
                    ("success", p.view.deploys.success),
                    ("failure", p.view.deploys.failure),
                ] {
                    let l: Labels = vec![
                        ("product", p.view.name.clone()),
                        ("result", result.to_string()),
                    ];
                    ConstCounter::new(n).encode(m.encode_family(&l)?)?;
                }
            }
        }
        {
            let mut m = encoder.encode_descriptor(
                "berth_rollbacks",
                "Rollbacks (successful or not), from the audit log",
                None,
                MetricType::Counter,
            )?;
            for p in products {
                let l = product(&p.view.name);
                ConstCounter::new(p.view.deploys.rollbacks).encode(m.encode_family(&l)?)?;
            }
        }
        {
            let mut m = encoder.encode_descriptor(
                "berth_deploy_duration",
                "Wall time of deploys and rollbacks, from lock to unlock, failures included",
                Some(&Unit::Seconds),
                MetricType::Histogram,
            )?;
            for p in products {
                let l = product(&p.view.name);
                BucketHistogram(&p.durations).encode(m.encode_family(&l)?)?;
            }
        }
        {
            let mut m = encoder.encode_descriptor(
                "berth_live_version_info",
                "The version each service's live slot runs (always 1)",
                None,
                MetricType::Gauge,
            )?;
            for p in products {
                for s in &p.view.services {
                    let Some(v) = s.version.as_ref().or(p.view.live_version.as_ref()) else {
                        continue;
                    };
                    if p.view.live_slot.is_none() {
                        continue;
                    }
                    let l: Labels = vec![
                        ("product", p.view.name.clone()),
                        ("service", s.name.clone()),
                        ("version", v.clone()),
                    ];
                    ConstGauge::new(1i64).encode(m.encode_family(&l)?)?;
                }
            }
        }
        {
            let mut m = encoder.encode_descriptor(
                "berth_last_deploy_timestamp",
                "Unix time of the product's last successful deploy or rollback",
                Some(&Unit::Seconds),
                MetricType::Gauge,
            )?;
            for p in products {
                let last = p
                    .last_success_unix
                    .into_iter()
                    .chain(p.view.last_deploy.as_ref().map(|d| d.unix))
                    .max();
                if let Some(t) = last.filter(|t| *t > 0) {
                    ConstGauge::new(t as i64).encode(m.encode_family(&product(&p.view.name))?)?;
                }
            }
        }
        {
            let mut m = encoder.encode_descriptor(
                "berth_standby_until_timestamp",
                "Unix time the product's warm standby (its old slot, running without traffic) is stopped; absent when none runs",
                Some(&Unit::Seconds),
                MetricType::Gauge,
            )?;
            for p in products {
                if let Some(sb) = &p.view.standby {
                    let mut l = product(&p.view.name);
                    l.push(("slot", sb.slot.to_string()));
                    l.push(("alive", sb.alive.to_string()));
                    ConstGauge::new(sb.until_unix as i64).encode(m.encode_family(&l)?)?;
                }
            }
        }
        {
            let mut m = encoder.encode_descriptor(
                "berth_last_backup_timestamp",
                "Unix time the product's newest backup finished",
                Some(&Unit::Seconds),
                MetricType::Gauge,
            )?;
            for p in products {
                if let Some(b) = &p.view.last_backup {
                    ConstGauge::new(b.finished_unix as i64)
                        .encode(m.encode_family(&product(&p.view.name))?)?;
                }
            }
        }
        {
            let mut m = encoder.encode_descriptor(
                "berth_backup_offsite_last_success_timestamp",
                "Unix time of the product's newest backup copied off-site and verified there",
                Some(&Unit::Seconds),
                MetricType::Gauge,
            )?;
            for p in products {
                if let Some(t) = p
                    .view
                    .last_backup
                    .as_ref()
                    .and_then(|b| b.offsite_last_success_unix)
                {
                    ConstGauge::new(t as i64).encode(m.encode_family(&product(&p.view.name))?)?;
                }
            }
        }
        {
            let mut m = encoder.encode_descriptor(
                "berth_backup_offsite_failed",
                "1 when the off-site copy of the product's newest backup failed, else 0",
                None,
                MetricType::Gauge,
            )?;
            for p in products {
                if let Some(o) = p.view.last_backup.as_ref().and_then(|b| b.offsite.as_ref()) {
                    ConstGauge::new(i64::from(!o.ok))
                        .encode(m.encode_family(&product(&p.view.name))?)?;
                }
            }
        }
        {
            // A counter, from the audit log: a failure stays counted when a later copy
            // succeeds or the backup is pruned (the gauge above shows the newest only).
            let mut m = encoder.encode_descriptor(
                "berth_backup_offsite_failures",
                "Backup runs whose off-site copy failed (upload, read-back or record), from the audit log",
                None,
                MetricType::Counter,
            )?;
            for p in products {
                ConstCounter::new(p.offsite_failures)
                    .encode(m.encode_family(&product(&p.view.name))?)?;
            }
        }
        {
            let mut m = encoder.encode_descriptor(
                "berth_tls_certificate_expiry_timestamp",
                "Unix time the certificate nginx serves for the product expires (mode acme or files)",
                Some(&Unit::Seconds),
                MetricType::Gauge,
            )?;
            for p in products {
                if let Some(c) = p.view.tls.as_ref().and_then(|t| t.certificate.as_ref()) {
                    ConstGauge::new(c.not_after)
                        .encode(m.encode_family(&product(&p.view.name))?)?;
                }
            }
        }
        {
            let mut m = encoder.encode_descriptor(
                "berth_backup_size",
                "Size of the product's newest backup file",
                Some(&Unit::Bytes),
                MetricType::Gauge,
            )?;
            for p in products {
                if let Some(b) = &p.view.last_backup {
                    ConstGauge::new(b.file_bytes as i64)
                        .encode(m.encode_family(&product(&p.view.name))?)?;
                }
            }
        }
        Ok(())
    }
}
