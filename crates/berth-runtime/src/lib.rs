//! Runtimes run a product's services in a slot (`blue` or `green`). Their state
//! is read back from the runtime itself (pid files and /proc for local
//! processes), never from a cache berth keeps.

pub mod compose;
pub mod local;
pub mod probe;
pub mod reach;

use std::time::{Duration, SystemTime};

use berth_manifest::{Manifest, Service};
use serde::Serialize;

/// One of the two copies of a product's services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Slot {
    Blue,
    Green,
}

impl Slot {
    pub fn name(self) -> &'static str {
        match self {
            Self::Blue => "blue",
            Self::Green => "green",
        }
    }
    pub fn other(self) -> Self {
        match self {
            Self::Blue => Self::Green,
            Self::Green => Self::Blue,
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "blue" => Some(Self::Blue),
            "green" => Some(Self::Green),
            _ => None,
        }
    }
}

impl std::fmt::Display for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The host port a service listens on in a slot.
pub fn slot_port(m: &Manifest, svc: &Service, slot: Slot) -> Option<u16> {
    let hp = svc.host_port.or(svc.port)?;
    Some(match slot {
        Slot::Blue => hp,
        Slot::Green => hp + m.deploy.slot_port_offset,
    })
}

/// Which slot a host port belongs to, for a service.
pub fn slot_of_port(m: &Manifest, svc: &Service, port: u16) -> Option<Slot> {
    [Slot::Blue, Slot::Green]
        .into_iter()
        .find(|s| slot_port(m, svc, *s) == Some(port))
}

/// A running (or dead) instance of a service, as the runtime reports it.
#[derive(Debug, Clone, Serialize)]
pub struct Instance {
    pub service: String,
    pub slot: Slot,
    pub version: String,
    pub alive: bool,
    /// Process id or container id.
    pub id: String,
    #[serde(skip)]
    pub started: Option<SystemTime>,
    pub port: Option<u16>,
}

impl Instance {
    pub fn uptime(&self) -> Option<Duration> {
        self.started
            .and_then(|s| SystemTime::now().duration_since(s).ok())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Cmd(#[from] berth_cmd::CmdError),
    #[error("{0}")]
    Failed(String),
    #[error("could not {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// What a deploy needs from a runtime.
pub trait Runtime {
    fn name(&self) -> &'static str;
    /// Build `version` of the product's services; `Ok(None)` when there is nothing to build.
    fn build(&self, product: &str, version: &str) -> Result<Option<String>, RuntimeError>;
    /// Whether `version` can start without a build (a retained image).
    fn has_version(&self, product: &str, version: &str) -> bool;
    /// Run a service's migrate command once, as `version`.
    fn migrate(
        &self,
        product: &str,
        service: &str,
        version: &str,
        slot: Slot,
    ) -> Result<String, RuntimeError>;
    /// Start every service of the product in `slot` as `version`.
    fn start(&self, product: &str, slot: Slot, version: &str) -> Result<(), RuntimeError>;
    /// Stop every service of the product in `slot` (gracefully, then forcibly).
    fn stop(&self, product: &str, slot: Slot) -> Result<(), RuntimeError>;
    /// The product's instances, read from the runtime.
    fn instances(&self, product: &str) -> Result<Vec<Instance>, RuntimeError>;
    /// The last `lines` lines a service wrote in a slot.
    fn logs(&self, product: &str, slot: Slot, service: &str, lines: usize) -> String;
    /// Remove the product's images of every version not in `keep`; returns what was removed.
    fn prune(&self, _product: &str, _keep: &[String]) -> Result<Vec<String>, RuntimeError> {
        Ok(Vec::new())
    }
}
