//! Runtimes run a product's services in a slot (`blue` or `green`). Their state
//! is read back from the runtime itself (pid files and /proc for local
//! processes), never from a cache berth keeps.

pub mod build;
pub mod cached;
pub mod cgroup;
pub mod compose;
pub mod fake;
pub mod http;
pub mod local;
pub mod probe;
pub mod reach;
pub mod swarm;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use berth_manifest::{Manifest, Service};
use berth_render::secrets::{self, SecretFile};
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

/// Which runtime runs a product's services: berth.toml's `[deploy] runtime`, or
/// `--runtime`. The one enum for the idea; [`open`] turns it into a runtime.
pub use berth_manifest::RuntimeKind as Kind;

/// The runtime of `kind` for the manifest at `root` (`None`: berth.toml's
/// `[deploy] runtime`). `auto` is compose when a Docker Engine answers, local
/// processes otherwise.
pub fn open(
    kind: Option<Kind>,
    manifest: &Manifest,
    root: &Path,
) -> Box<dyn Runtime + Send + Sync> {
    match resolve(kind.unwrap_or(manifest.deploy.runtime)) {
        Kind::Compose => Box::new(compose::ComposeRuntime::new(
            manifest.clone(),
            root.to_path_buf(),
        )),
        Kind::Swarm => Box::new(swarm::SwarmRuntime::new(
            manifest.clone(),
            root.to_path_buf(),
        )),
        Kind::Local | Kind::Auto => {
            let mut rt = local::LocalRuntime::new(manifest.clone(), root.to_path_buf());
            // Programs built beside berth (demo-app) are found without being installed.
            if let Some(dir) = std::env::current_exe()
                .ok()
                .and_then(|e| e.parent().map(Path::to_path_buf))
            {
                rt.path_prefix.push(dir);
            }
            Box::new(rt)
        }
    }
}

/// `auto` resolved: compose when a Docker Engine answers, local otherwise.
pub fn resolve(kind: Kind) -> Kind {
    match kind {
        Kind::Auto if compose::ComposeRuntime::available() => Kind::Compose,
        Kind::Auto => Kind::Local,
        k => k,
    }
}

/// Whether `kind` can run here now on berth's environment (compose: a Docker Engine
/// answers; swarm: it is a swarm manager); the error says what is missing.
pub fn available(kind: Kind) -> Result<(), RuntimeError> {
    match kind {
        Kind::Compose if !compose::ComposeRuntime::available() => Err(RuntimeError::Preflight(
            "the compose runtime needs a Docker Engine (docker version could not reach one; set DOCKER_HOST or start dockerd)".into(),
        )),
        Kind::Swarm => swarm::environment_manager().map(drop),
        _ => Ok(()),
    }
}

/// Where a service of a slot answers: a host (name or IP) and a port.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Address {
    pub host: String,
    pub port: u16,
}

impl Address {
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self {
            host: host.into(),
            port,
        }
    }

    /// Parse `host:port` (as an upstream line names it).
    pub fn parse(s: &str) -> Option<Self> {
        let (host, port) = s.rsplit_once(':')?;
        let port = port.parse().ok()?;
        (!host.is_empty()).then(|| Self::new(host, port))
    }
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// The host port a service listens on in a slot: the one rule (blue on `host_port`,
/// green `[deploy] slot_port_offset` above it).
pub fn slot_port(m: &Manifest, svc: &Service, slot: Slot) -> Option<u16> {
    m.slot_host_port(svc, slot == Slot::Green)
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
    /// The machine it runs on, when the runtime spreads over several (swarm: the node's
    /// address).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Its state as the runtime sees it, when it says more than alive/dead (swarm: the
    /// task's state, e.g. `running`, `starting`, `failed: task: non-zero exit (3)`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
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
    /// A check before anything ran failed: the configuration must change (exit 2).
    #[error("{0}")]
    Preflight(String),
    #[error("could not {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// An I/O error of `action` on `path`, as a runtime error.
pub(crate) fn io<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> RuntimeError + 'a {
    move |source| RuntimeError::Io {
        action,
        path: path.display().to_string(),
        source,
    }
}

/// A running instance's resources against its limits (`berth status`, the dashboard).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct ResourceUsage {
    /// Memory in use (None: the runtime reads the limits only, e.g. a swarm task on
    /// a node berth does not talk to).
    pub memory_bytes: Option<u64>,
    pub memory_limit_bytes: Option<u64>,
    /// CPUs in use now (1.0: one core busy).
    pub cpus: Option<f64>,
    pub cpus_limit: Option<f64>,
    /// Whether it runs with `cpu_priority = "background"` (local: in the idle cgroup;
    /// compose: at the lowest CPU weight), where the runtime can tell.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub background: Option<bool>,
    pub pids: Option<u64>,
    pub pids_limit: Option<u64>,
    /// Processes the kernel killed for the memory limit (where the runtime counts them).
    pub oom_kills: Option<u64>,
}

/// What a deploy needs from a runtime. Everything that differs between engines is
/// a method here: code outside this crate never asks which runtime it has.
pub trait Runtime {
    /// The runtime's name, for people (plans, messages).
    fn name(&self) -> &'static str;
    /// What building a version means here, as a plan says it.
    fn build_summary(&self) -> String {
        format!("build images ({})", self.name())
    }
    /// What starting a retained version without a build means here, as a plan says it.
    fn retained_summary(&self, version: &str) -> String {
        format!("reuse the retained images of {version} (no build)")
    }
    /// Checks before a deploy of `product` plans anything (`dirty`: the work tree has
    /// uncommitted changes). `Err(Preflight)`: the configuration must change; `Ok`
    /// holds warnings to show.
    fn preflight(&self, _product: &str, _dirty: bool) -> Result<Vec<String>, RuntimeError> {
        Ok(Vec::new())
    }
    /// Where `service` of `product` answers in `slot`: every address traffic and
    /// health checks go to (empty: the service takes no traffic).
    fn addresses(&self, product: &str, service: &str, slot: Slot) -> Vec<Address>;
    /// Before a slot starts: nothing berth did not start may already answer where the
    /// slot will (it would pass the health check in the new version's place).
    fn slot_free(&self, _product: &str, _slot: Slot) -> Result<(), RuntimeError> {
        Ok(())
    }
    /// Remove everything the runtime made for `product`: both slots stopped, its
    /// images or checkouts, its network. Returns what was removed.
    fn teardown(&self, product: &str) -> Result<Vec<String>, RuntimeError>;
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
    /// The idle `slot` (no traffic) made to run `version` instead of whatever it runs:
    /// by default stopped, checked free ([`Runtime::slot_free`]) and started. A runtime
    /// that can update the slot's services in place does so (swarm).
    fn replace(&self, product: &str, slot: Slot, version: &str) -> Result<(), RuntimeError> {
        self.stop(product, slot)?;
        self.slot_free(product, slot)?;
        self.start(product, slot, version)
    }
    /// The product's instances, read from the runtime.
    fn instances(&self, product: &str) -> Result<Vec<Instance>, RuntimeError>;
    /// Drop any answer kept from an earlier read: the next [`Runtime::instances`] asks
    /// the runtime again (after taking a lock, under which the world may have moved).
    fn refresh(&self) {}
    /// The last `lines` lines a service wrote in a slot.
    fn logs(&self, product: &str, slot: Slot, service: &str, lines: usize) -> String;
    /// What a running instance uses against its limits, where the runtime can read it
    /// (None: it cannot, or the instance does not run).
    fn usage(&self, _product: &str, _instance: &Instance) -> Option<ResourceUsage> {
        None
    }
    /// Remove the product's images of every version not in `keep`; returns what was removed.
    fn prune(&self, _product: &str, _keep: &[String]) -> Result<Vec<String>, RuntimeError> {
        Ok(Vec::new())
    }

    /// Where one instance answers (its task's node and published port on swarm): the
    /// address `berth status` and `berth serve` show and probe per instance. The
    /// default: the slot's address with the instance's port, else the slot's first.
    fn address_of(&self, product: &str, instance: &Instance) -> Option<Address> {
        let all = self.addresses(product, &instance.service, instance.slot);
        all.iter()
            .find(|a| Some(a.port) == instance.port)
            .or(all.first())
            .cloned()
    }
    /// The programs this runtime runs (`berth doctor` asks each for its version).
    fn programs(&self) -> Vec<Program> {
        Vec::new()
    }
    /// What this runtime made for this project that no product of the manifest
    /// accounts for any more (`berth doctor`): each with how to remove it.
    fn leftovers(&self) -> Vec<Leftover> {
        Vec::new()
    }
    /// How often a follower of a slot's logs asks the front door whether the live
    /// slot moved (`berth logs --follow`): cheap runtimes ask more often.
    fn follow_interval(&self) -> Duration {
        Duration::from_millis(500)
    }

    // --- Operating a running product: log streams and one-off commands (`berth logs`,
    // `berth run`). Default implementations keep runtimes without them compiling.

    /// A stream of a service's log in `slot`, starting at `from`; with `follow`, each
    /// new line as it is written until the stream is dropped. The default reads
    /// [`Runtime::logs`] once and cannot follow.
    fn log_stream(
        &self,
        product: &str,
        slot: Slot,
        service: &str,
        from: LogFrom,
        follow: bool,
    ) -> Result<LogStream, RuntimeError> {
        if follow {
            return Err(RuntimeError::Failed(format!(
                "the {} runtime cannot follow logs",
                self.name()
            )));
        }
        let lines = match from {
            LogFrom::Tail(n) => n,
            LogFrom::Since(_) | LogFrom::Run => usize::MAX,
        };
        Ok(LogStream::finished(
            self.logs(product, slot, service, lines)
                .lines()
                .map(|l| LogLine::new(None, l))
                .collect(),
        ))
    }

    /// Run `argv` once as `version` of a service in `slot`'s environment (its env and
    /// secrets, its network, its code), with berth's stdin, stdout and stderr (a TTY
    /// when `tty`); returns the command's exit code.
    fn run_once(
        &self,
        product: &str,
        _service: &str,
        _slot: Slot,
        _version: &str,
        _argv: &[String],
        _tty: bool,
    ) -> Result<i32, RuntimeError> {
        Err(RuntimeError::Failed(format!(
            "the {} runtime cannot run one-off commands (for {product})",
            self.name()
        )))
    }
}

/// A program a runtime runs, as `berth doctor` checks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    /// What the check is called (`program docker compose`).
    pub label: &'static str,
    pub program: &'static str,
    /// The arguments that make it print its version.
    pub version_args: &'static [&'static str],
    /// How to install it.
    pub fix: &'static str,
}

/// Something a runtime made that the manifest no longer accounts for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leftover {
    /// Its name (a container's).
    pub name: String,
    pub problem: String,
    pub fix: String,
}

/// Where a log stream starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFrom {
    /// The last `n` lines.
    Tail(usize),
    /// Lines written at or after this time.
    Since(SystemTime),
    /// Everything the slot's current run (its processes or containers) wrote.
    Run,
}

/// One line of a service's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// When the runtime recorded the line, if it records times (compose does; the
    /// local runtime's log files do not).
    pub at: Option<SystemTime>,
    pub text: String,
    /// Which of the service's instances wrote it, where the runtime runs several of
    /// one service in a slot (swarm: the task's id, 12 characters, as `berth status`
    /// shows it) and the node it ran on; `None` elsewhere.
    pub task: Option<String>,
    pub node: Option<String>,
}

impl LogLine {
    /// A line of the slot's one instance (local, compose).
    pub fn new(at: Option<SystemTime>, text: impl Into<String>) -> Self {
        Self {
            at,
            text: text.into(),
            task: None,
            node: None,
        }
    }
}

/// Lines of a log as they arrive. Dropping it (or [`LogStream::finish`]) stops the
/// reader; lines already written are still delivered before the channel closes.
pub struct LogStream {
    pub lines: std::sync::mpsc::Receiver<LogLine>,
    stop: Option<Box<dyn FnOnce() + Send>>,
}

impl LogStream {
    /// A stream fed by a reader that `stop` ends.
    pub fn new(
        lines: std::sync::mpsc::Receiver<LogLine>,
        stop: impl FnOnce() + Send + 'static,
    ) -> Self {
        Self {
            lines,
            stop: Some(Box::new(stop)),
        }
    }

    /// A stream of lines already read.
    pub fn finished(lines: Vec<LogLine>) -> Self {
        let (tx, rx) = std::sync::mpsc::channel();
        for l in lines {
            let _ = tx.send(l);
        }
        Self {
            lines: rx,
            stop: None,
        }
    }

    /// Stop reading new lines; what was written until now is still delivered, then
    /// the channel closes.
    pub fn finish(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop();
        }
    }
}

impl Drop for LogStream {
    fn drop(&mut self) {
        self.finish();
    }
}

/// The addresses of a service in a slot on this machine: its slot port on 127.0.0.1.
pub(crate) fn loopback(m: &Manifest, product: &str, service: &str, slot: Slot) -> Vec<Address> {
    m.products
        .get(product)
        .and_then(|p| p.services.get(service))
        .and_then(|svc| slot_port(m, svc, slot))
        .map(|port| vec![Address::new("127.0.0.1", port)])
        .unwrap_or_default()
}

/// Every loopback port of the slot must be free before it starts: a stranger
/// listening there would answer the health check in the new version's place.
pub(crate) fn loopback_free(m: &Manifest, product: &str, slot: Slot) -> Result<(), RuntimeError> {
    let Some(p) = m.products.get(product) else {
        return Ok(());
    };
    for (name, svc) in &p.services {
        let Some(port) = slot_port(m, svc, slot) else {
            continue;
        };
        // A process just stopped may take a moment to let go of its socket.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
            if std::time::Instant::now() >= deadline {
                return Err(RuntimeError::Failed(format!(
                    "port {port} of {product}.{name} ({slot} slot) is already in use by a process berth did not start; stop it, or change host_port / [deploy] slot_port_offset"
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(())
}

/// The environment of one product process, and the values to mask in its output.
pub struct ProductEnv {
    /// Every variable the process gets; nothing else reaches it.
    pub vars: Vec<(String, String)>,
    /// The values of the product's secret file: never printed or recorded.
    pub secret_values: Vec<String>,
}

/// Variables taken from berth's own environment: the program search path and the
/// locale. Everything else berth runs with (the operator's exports, HOME, the admin
/// URLs `berth restore` needs) stays out of product processes.
fn inherited(name: &str) -> bool {
    matches!(name, "PATH" | "LANG" | "LANGUAGE" | "TZ") || name.starts_with("LC_")
}

/// `.berth/home/<product>/` (0700): HOME of the product's processes.
pub fn product_home(root: &Path, product: &str) -> Result<PathBuf, RuntimeError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let home = root.join(".berth/home").join(product);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&home)
        .map_err(|source| RuntimeError::Io {
            action: "create",
            path: home.display().to_string(),
            source,
        })?;
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).map_err(|source| {
        RuntimeError::Io {
            action: "set the mode of",
            path: home.display().to_string(),
            source,
        }
    })?;
    Ok(home)
}

/// The one rule for the environment a product process starts with (start, migrate,
/// build, and whatever restore restarts): a cleared environment plus PATH (with
/// `path_prefix` first), the locale, TZ, HOME = `.berth/home/<product>/`, berth's
/// identity variables (BERTH_PRODUCT, BERTH_SERVICE, BERTH_VERSION; BERTH_SLOT, PORT
/// and BIND for a slot), the service's `env`, and the product's secret file.
pub fn product_env(
    m: &Manifest,
    root: &Path,
    product: &str,
    service: &str,
    slot: Option<Slot>,
    version: &str,
    path_prefix: &[PathBuf],
) -> Result<ProductEnv, RuntimeError> {
    let p = m.products.get(product).ok_or_else(|| {
        RuntimeError::Failed(format!("there is no product `{product}` in berth.toml"))
    })?;
    let s = p.services.get(service).ok_or_else(|| {
        RuntimeError::Failed(format!(
            "{product} has no service `{service}` in berth.toml"
        ))
    })?;
    let mut vars: Vec<(String, String)> = Vec::new();
    let mut set = |k: &str, v: String| {
        vars.retain(|(n, _)| n != k);
        vars.push((k.to_string(), v));
    };
    for (k, v) in std::env::vars() {
        if inherited(&k) {
            set(&k, v);
        }
    }
    let mut path: Vec<String> = path_prefix
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    path.push(std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into()));
    set("PATH", path.join(":"));
    set("HOME", product_home(root, product)?.display().to_string());
    set("BERTH_PRODUCT", product.to_string());
    set("BERTH_SERVICE", service.to_string());
    set("BERTH_VERSION", version.to_string());
    // A build runs for no slot: no BERTH_SLOT, PORT or BIND.
    if let Some(slot) = slot {
        set("BERTH_SLOT", slot.name().to_string());
    }
    if let Some(port) = slot.and_then(|slot| slot_port(m, s, slot)) {
        set("PORT", port.to_string());
        set("BIND", "127.0.0.1".into());
    }
    for (k, v) in &s.env {
        set(k, v.clone());
    }
    let file = SecretFile::load(&secrets::product_secret_path(root, product))
        .map_err(|e| RuntimeError::Failed(e.to_string()))?;
    let mut secret_values = Vec::new();
    for k in file.keys().map(str::to_string).collect::<Vec<_>>() {
        if let Some(v) = file.get(&k) {
            if !v.is_empty() {
                secret_values.push(v.to_string());
            }
            set(&k, v.to_string());
        }
    }
    // A service with its own URL scheme: its URLs replace the product's.
    if s.overrides_url_schemes() {
        let own = SecretFile::load(&secrets::service_secret_path(root, product, service))
            .map_err(|e| RuntimeError::Failed(e.to_string()))?;
        for k in own.keys().map(str::to_string).collect::<Vec<_>>() {
            if let Some(v) = own.get(&k) {
                set(&k, v.to_string());
            }
        }
    }
    Ok(ProductEnv {
        vars,
        secret_values,
    })
}

/// Write `contents` to `path` atomically: a temp file beside it, fsync, rename,
/// then fsync the directory. Creates the parent directory.
pub use berth_cmd::fs::{write_atomic, write_atomic_mode};

#[cfg(test)]
mod tests {
    use super::*;

    /// An address reads back from what it writes (`host:port`), and the local and
    /// compose runtimes give one loopback address per slot: the slot-port rule.
    #[test]
    fn addresses_follow_the_slot_port_rule() {
        let a = Address::new("10.0.0.7", 8011);
        assert_eq!(a.to_string(), "10.0.0.7:8011");
        assert_eq!(Address::parse("10.0.0.7:8011"), Some(a));
        assert_eq!(
            Address::parse("tasks.web:80"),
            Some(Address::new("tasks.web", 80))
        );
        assert_eq!(Address::parse(":80"), None);
        assert_eq!(Address::parse("host"), None);

        let text = include_str!("../../../examples/multi-product/berth.toml");
        let m = berth_manifest::parse_str("berth.toml", text)
            .unwrap()
            .manifest;
        let offset = m.deploy.slot_port_offset;
        let root = std::env::temp_dir();
        for rt in [
            Box::new(local::LocalRuntime::new(m.clone(), root.clone())) as Box<dyn Runtime>,
            Box::new(compose::ComposeRuntime::new(m.clone(), root.clone())),
        ] {
            assert_eq!(
                rt.addresses("bestays", "server", Slot::Blue),
                [Address::new("127.0.0.1", 8011)]
            );
            assert_eq!(
                rt.addresses("bestays", "server", Slot::Green),
                [Address::new("127.0.0.1", 8011 + offset)]
            );
            assert!(rt.addresses("bestays", "nope", Slot::Blue).is_empty());
        }
    }
}
