//! `berth logs`: a product's service logs from its runtime, the live slot by default,
//! each line tagged with product, service, slot and version, secret values masked;
//! `-f` follows across deploys (the front door's switch moves it to the new slot).

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use berth_runtime::{Instance, LogFrom, LogLine, LogStream, Runtime, Slot};
use serde::Serialize;

use super::deploy::{Loaded, load, product_known, runtime};
use crate::cli::{Cli, LogsArgs};
use crate::exit::{CliError, Result};
use crate::output::{Format, Printer};

/// One line of `berth logs --format json` (its schema: `berth schema logs`).
#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LogRecord {
    pub product: String,
    pub service: String,
    /// `blue` or `green`.
    #[schemars(extend("enum" = ["blue", "green"]))]
    pub slot: String,
    /// The version the slot runs (a commit id prefix), or `-` when nothing runs there.
    pub version: String,
    /// UTC, RFC 3339 with milliseconds.
    #[schemars(extend("format" = "date-time"))]
    pub timestamp: String,
    /// `runtime`: the time the runtime recorded (compose); `read`: when berth read the
    /// line (the local runtime's log files record no times).
    pub timestamp_source: TimestampSource,
    /// Which instance of the service wrote the line, where the runtime runs several
    /// (swarm: the task id as `berth status` shows it); absent elsewhere.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// The node that instance ran on (swarm: its address); absent elsewhere.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The line, secret values masked.
    pub line: String,
}

#[derive(Debug, Clone, Copy, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TimestampSource {
    Runtime,
    Read,
}

/// The JSON schema of a `berth logs --format json` line.
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(LogRecord);
    let mut s = serde_json::to_string_pretty(&schema).expect("schema serializes");
    s.push('\n');
    s
}

/// The product's instances and its live slot: the one the front door points at, or
/// (without a proxy) the slot that runs.
pub(super) fn live(
    l: &Loaded,
    rt: &dyn Runtime,
    product: &str,
) -> Result<(Option<Slot>, Vec<Instance>)> {
    let instances = rt
        .instances(product)
        .map_err(|e| CliError::Failed(e.to_string()))?;
    let slot = berth_deploy::front_door::open(&l.manifest, &l.root)
        .live(product, rt)
        .map_err(|e| CliError::Failed(e.to_string()))?;
    Ok((slot, instances))
}

/// The version `slot` runs for `service` (or any service of it).
pub(super) fn version_in(instances: &[Instance], slot: Slot, service: &str) -> Option<String> {
    instances
        .iter()
        .find(|i| i.slot == slot && i.service == service)
        .or_else(|| instances.iter().find(|i| i.slot == slot && i.alive))
        .map(|i| i.version.clone())
}

struct Open {
    service: String,
    version: String,
    stream: LogStream,
    done: bool,
}

fn open(
    rt: &dyn Runtime,
    product: &str,
    services: &[String],
    slot: Slot,
    instances: &[Instance],
    from: LogFrom,
    follow: bool,
) -> Result<Vec<Open>> {
    services
        .iter()
        .map(|s| {
            let stream = rt
                .log_stream(product, slot, s, from, follow)
                .map_err(|e| match from {
                    LogFrom::Since(_) => CliError::Config(e.to_string()),
                    _ => CliError::Failed(e.to_string()),
                })?;
            Ok(Open {
                service: s.clone(),
                version: version_in(instances, slot, s).unwrap_or_else(|| "-".into()),
                stream,
                done: false,
            })
        })
        .collect()
}

/// `2026-11-30T12:01:02.123Z`.
fn rfc3339_millis(t: SystemTime) -> String {
    let d = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    let s = berth_deploy::tags::utc_stamp(d.as_secs()).1;
    format!("{}.{:03}Z", s.trim_end_matches('Z'), d.subsec_millis())
}

struct Out<'a> {
    product: &'a str,
    format: Format,
    masker: berth_cmd::Masker,
    stdout: std::io::StdoutLock<'static>,
}

impl Out<'_> {
    /// Print one line; `false` when stdout is gone (a closed pipe ends `berth logs`).
    fn line(&mut self, o: &Open, slot: Slot, l: LogLine) -> bool {
        let text = self.masker.mask(&l.text);
        let r = match self.format {
            Format::Text => {
                // On swarm, which task (and node) of the service wrote it.
                let from = match (&l.task, &l.node) {
                    (Some(t), Some(n)) => format!(" {t}@{n}"),
                    (Some(t), None) => format!(" {t}"),
                    _ => String::new(),
                };
                writeln!(
                    self.stdout,
                    "{} {} {} {}{from} | {text}",
                    self.product, o.service, slot, o.version
                )
            }
            Format::Json => {
                let rec = LogRecord {
                    product: self.product.to_string(),
                    service: o.service.clone(),
                    slot: slot.name().to_string(),
                    version: o.version.clone(),
                    timestamp: rfc3339_millis(l.at.unwrap_or_else(SystemTime::now)),
                    timestamp_source: if l.at.is_some() {
                        TimestampSource::Runtime
                    } else {
                        TimestampSource::Read
                    },
                    task: l.task.clone(),
                    node: l.node.clone(),
                    line: text,
                };
                writeln!(
                    self.stdout,
                    "{}",
                    serde_json::to_string(&rec).expect("serializes")
                )
            }
        };
        r.and_then(|_| self.stdout.flush()).is_ok()
    }
}

pub fn run(cli: &Cli, args: &LogsArgs, printer: &Printer) -> Result<ExitCode> {
    let l = load(cli, printer)?;
    let product = args.product.as_str();
    product_known(&l.manifest, product)?;
    let p = &l.manifest.products[product];
    let services: Vec<String> = match &args.service {
        Some(s) if p.services.contains_key(s) => vec![s.clone()],
        Some(s) => {
            let known: Vec<_> = p.services.keys().map(|k| format!("`{k}`")).collect();
            return Err(CliError::Config(format!(
                "{product} has no service `{s}`; its services: {}",
                known.join(", ")
            )));
        }
        None => p.services.keys().cloned().collect(),
    };
    let rt = runtime(&l, args.runtime)?;
    let masker = berth_render::secrets::product_masker(&l.root, product)
        .map_err(|e| CliError::Config(e.to_string()))?;
    let (live_slot, instances) = live(&l, rt.as_ref(), product)?;
    let mut slot = match (args.slot, live_slot) {
        (Some(s), _) => s.slot(),
        (None, Some(s)) => s,
        (None, None) => {
            return Err(CliError::Failed(format!(
                "nothing of {product} runs, so no slot is live: deploy it, or name a slot with --slot"
            )));
        }
    };
    let from = match &args.since {
        Some(d) => LogFrom::Since(SystemTime::now() - d.0),
        None => LogFrom::Tail(args.tail.unwrap_or(100)),
    };
    let mut streams = open(
        rt.as_ref(),
        product,
        &services,
        slot,
        &instances,
        from,
        args.follow,
    )?;
    let mut out = Out {
        product,
        format: args.format,
        masker,
        stdout: std::io::stdout().lock(),
    };
    // The front door is asked this often whether the live slot moved.
    let every = rt.follow_interval();
    let mut asked = Instant::now();
    loop {
        let mut got = false;
        for o in streams.iter_mut() {
            loop {
                match o.stream.lines.try_recv() {
                    Ok(line) => {
                        got = true;
                        if !out.line(o, slot, line) {
                            return Ok(ExitCode::SUCCESS);
                        }
                    }
                    Err(std::sync::mpsc::TryRecvError::Empty) => break,
                    Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                        o.done = true;
                        break;
                    }
                }
            }
        }
        let all_done = streams.iter().all(|o| o.done);
        if !args.follow && all_done {
            return Ok(ExitCode::SUCCESS);
        }
        if args.follow && args.slot.is_none() && asked.elapsed() >= every {
            asked = Instant::now();
            // A moment when the live slot cannot be told (nginx mid-reload) is not the end.
            if let Ok((Some(now), instances)) = live(&l, rt.as_ref(), product)
                && now != slot
            {
                // The old slot's lines up to the switch, then the new slot's whole run.
                for o in streams.iter_mut() {
                    o.stream.finish();
                }
                for o in &streams {
                    while let Ok(line) = o.stream.lines.recv() {
                        if !out.line(o, slot, line) {
                            return Ok(ExitCode::SUCCESS);
                        }
                    }
                }
                tracing::info!("{product}: the live slot is now {now}");
                slot = now;
                streams = open(
                    rt.as_ref(),
                    product,
                    &services,
                    slot,
                    &instances,
                    LogFrom::Run,
                    true,
                )?;
                continue;
            }
        }
        if args.follow && args.slot.is_some() && all_done {
            return Ok(ExitCode::SUCCESS);
        }
        if !got {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
