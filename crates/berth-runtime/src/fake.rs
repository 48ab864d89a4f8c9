//! An in-memory runtime for tests of what drives a runtime (the deploy executor):
//! builds, retained versions, slots and instances are entries in a table. Each
//! started service with a port answers HTTP on a loopback port of its own (a thread
//! in this process, gone when the slot stops), so a health gate probes it for real
//! and in milliseconds. A version can be made broken in each way a release breaks.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use berth_manifest::Manifest;

use crate::{Address, Instance, Runtime, RuntimeError, Slot};

/// How a version of a product is broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Broken {
    /// The build fails.
    Build,
    /// Its migration exits non-zero.
    Migration,
    /// Its processes exit right after they start.
    ExitsAtStart,
    /// It runs, but its health check answers 500 for ever.
    HealthNeverPasses,
}

struct Running {
    version: String,
    alive: bool,
    id: u64,
    address: Option<Address>,
    stop: Option<Arc<AtomicBool>>,
}

#[derive(Default)]
struct State {
    built: BTreeSet<(String, String)>,
    broken: BTreeMap<(String, String), Broken>,
    running: BTreeMap<(String, Slot, String), Running>,
    /// Every call that changed something, in order (`start bestays blue abc`).
    calls: Vec<String>,
    /// Slots where something berth did not start answers.
    occupied: BTreeSet<(String, Slot)>,
    next_id: u64,
}

/// The in-memory runtime.
pub struct FakeRuntime {
    manifest: Manifest,
    state: Mutex<State>,
}

impl FakeRuntime {
    pub fn new(manifest: Manifest) -> Self {
        Self {
            manifest,
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Make `version` of `product` broken in the way `how`.
    pub fn break_version(&self, product: &str, version: &str, how: Broken) {
        self.state()
            .broken
            .insert((product.into(), version.into()), how);
    }

    /// The calls that changed something, in order.
    pub fn calls(&self) -> Vec<String> {
        self.state().calls.clone()
    }

    /// The version running (alive) in a slot, if every service of the product runs it.
    pub fn running_version(&self, product: &str, slot: Slot) -> Option<String> {
        let st = self.state();
        let mut versions = st
            .running
            .iter()
            .filter(|((p, s, _), r)| p == product && *s == slot && r.alive)
            .map(|(_, r)| r.version.clone());
        let first = versions.next()?;
        versions.all(|v| v == first).then_some(first)
    }

    /// The processes of a slot die (as if killed by someone else).
    pub fn crash(&self, product: &str, slot: Slot) {
        let mut st = self.state();
        st.calls.push(format!("crash {product} {slot}"));
        for ((p, s, _), r) in st.running.iter_mut() {
            if p == product && *s == slot {
                r.alive = false;
                if let Some(stop) = r.stop.take() {
                    stop.store(true, Ordering::SeqCst);
                }
            }
        }
    }

    /// A process berth did not start answers where `slot` of `product` would.
    pub fn occupy(&self, product: &str, slot: Slot) {
        self.state().occupied.insert((product.to_string(), slot));
    }

    /// Forget a built version (as if its images were removed by hand).
    pub fn forget_version(&self, product: &str, version: &str) {
        self.state()
            .built
            .remove(&(product.to_string(), version.to_string()));
    }

    fn broken(&self, product: &str, version: &str) -> Option<Broken> {
        self.state()
            .broken
            .get(&(product.to_string(), version.to_string()))
            .copied()
    }

    fn services(&self, product: &str) -> Result<Vec<String>, RuntimeError> {
        self.manifest
            .products
            .get(product)
            .map(|p| p.services.keys().cloned().collect())
            .ok_or_else(|| RuntimeError::Failed(format!("there is no product `{product}`")))
    }
}

/// Answer HTTP on a loopback port until `stop` is set: `status` to every request.
fn serve(status: u16, version: String) -> Result<(Address, Arc<AtomicBool>), RuntimeError> {
    let listener = TcpListener::bind(("127.0.0.1", 0))
        .map_err(|e| RuntimeError::Failed(format!("fake: bind a loopback port: {e}")))?;
    let port = listener
        .local_addr()
        .map_err(|e| RuntimeError::Failed(e.to_string()))?
        .port();
    listener
        .set_nonblocking(true)
        .map_err(|e| RuntimeError::Failed(e.to_string()))?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    std::thread::spawn(move || {
        while !flag.load(Ordering::SeqCst) {
            match listener.accept() {
                Ok((mut s, _)) => {
                    let _ = s.set_nonblocking(false);
                    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
                    // The whole request head first: a client may write it in pieces,
                    // and closing with unread bytes would reset the connection.
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let body = format!("{version}\n");
                    let _ = write!(
                        s,
                        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                }
                Err(_) => std::thread::sleep(Duration::from_millis(2)),
            }
        }
    });
    Ok((Address::new("127.0.0.1", port), stop))
}

impl Runtime for FakeRuntime {
    fn name(&self) -> &'static str {
        "fake"
    }

    fn build(&self, product: &str, version: &str) -> Result<Option<String>, RuntimeError> {
        self.state()
            .calls
            .push(format!("build {product} {version}"));
        if self.broken(product, version) == Some(Broken::Build) {
            return Err(RuntimeError::Failed(format!(
                "fake: the build of {product} {version} failed"
            )));
        }
        self.state()
            .built
            .insert((product.to_string(), version.to_string()));
        Ok(Some(format!("built {product} {version}")))
    }

    fn has_version(&self, product: &str, version: &str) -> bool {
        self.state()
            .built
            .contains(&(product.to_string(), version.to_string()))
    }

    fn migrate(
        &self,
        product: &str,
        service: &str,
        version: &str,
        _slot: Slot,
    ) -> Result<String, RuntimeError> {
        self.state()
            .calls
            .push(format!("migrate {product}.{service} {version}"));
        if self.broken(product, version) == Some(Broken::Migration) {
            return Err(RuntimeError::Failed(format!(
                "fake: the migration of {product}.{service} {version} exited 1"
            )));
        }
        Ok(String::new())
    }

    fn start(&self, product: &str, slot: Slot, version: &str) -> Result<(), RuntimeError> {
        if !self.has_version(product, version) {
            return Err(RuntimeError::Failed(format!(
                "fake: {product} {version} is not built"
            )));
        }
        let broken = self.broken(product, version);
        let p = &self.manifest.products[product];
        let mut started = Vec::new();
        for name in self.services(product)? {
            let takes_traffic = p.services[&name].host_port.or(p.services[&name].port);
            let alive = broken != Some(Broken::ExitsAtStart);
            let status = if broken == Some(Broken::HealthNeverPasses) {
                500
            } else {
                200
            };
            let (address, stop) = match takes_traffic {
                Some(_) => {
                    let (a, s) = serve(status, version.to_string())?;
                    if !alive {
                        // Exited at start: its address refuses connections.
                        s.store(true, Ordering::SeqCst);
                    }
                    (Some(a), Some(s))
                }
                None => (None, None),
            };
            started.push((name, alive, address, stop));
        }
        let mut st = self.state();
        st.calls.push(format!("start {product} {slot} {version}"));
        for (name, alive, address, stop) in started {
            st.next_id += 1;
            let id = st.next_id;
            if let Some(old) = st.running.insert(
                (product.to_string(), slot, name),
                Running {
                    version: version.to_string(),
                    alive,
                    id,
                    address,
                    stop,
                },
            ) && let Some(s) = old.stop
            {
                s.store(true, Ordering::SeqCst);
            }
        }
        Ok(())
    }

    fn stop(&self, product: &str, slot: Slot) -> Result<(), RuntimeError> {
        let mut st = self.state();
        st.calls.push(format!("stop {product} {slot}"));
        let keys: Vec<_> = st
            .running
            .keys()
            .filter(|(p, s, _)| p == product && *s == slot)
            .cloned()
            .collect();
        for k in keys {
            if let Some(r) = st.running.remove(&k)
                && let Some(s) = r.stop
            {
                s.store(true, Ordering::SeqCst);
            }
        }
        Ok(())
    }

    fn instances(&self, product: &str) -> Result<Vec<Instance>, RuntimeError> {
        let st = self.state();
        Ok(st
            .running
            .iter()
            .filter(|((p, _, _), _)| p == product)
            .map(|((_, slot, service), r)| Instance {
                service: service.clone(),
                slot: *slot,
                version: r.version.clone(),
                alive: r.alive,
                id: r.id.to_string(),
                started: Some(SystemTime::now()),
                port: r.address.as_ref().map(|a| a.port),
                node: None,
                state: None,
            })
            .collect())
    }

    fn logs(&self, product: &str, slot: Slot, service: &str, _lines: usize) -> String {
        let st = self.state();
        match st
            .running
            .get(&(product.to_string(), slot, service.to_string()))
        {
            Some(r) if !r.alive => format!("fake: {product}.{service} {} exited 1", r.version),
            Some(r) => format!("fake: {product}.{service} {} listening", r.version),
            None => String::new(),
        }
    }

    fn addresses(&self, product: &str, service: &str, slot: Slot) -> Vec<Address> {
        self.state()
            .running
            .get(&(product.to_string(), slot, service.to_string()))
            .and_then(|r| r.address.clone())
            .into_iter()
            .collect()
    }

    fn slot_free(&self, product: &str, slot: Slot) -> Result<(), RuntimeError> {
        if self.state().occupied.contains(&(product.to_string(), slot)) {
            return Err(RuntimeError::Failed(format!(
                "fake: the {slot} slot of {product} is already in use by a process berth did not start"
            )));
        }
        Ok(())
    }

    fn prune(&self, product: &str, keep: &[String]) -> Result<Vec<String>, RuntimeError> {
        let mut st = self.state();
        let running: Vec<String> = st
            .running
            .iter()
            .filter(|((p, _, _), r)| p == product && r.alive)
            .map(|(_, r)| r.version.clone())
            .collect();
        let gone: Vec<(String, String)> = st
            .built
            .iter()
            .filter(|(p, v)| p == product && !keep.contains(v) && !running.contains(v))
            .cloned()
            .collect();
        for g in &gone {
            st.built.remove(g);
        }
        Ok(gone.into_iter().map(|(_, v)| v).collect())
    }

    fn teardown(&self, product: &str) -> Result<Vec<String>, RuntimeError> {
        self.stop(product, Slot::Blue)?;
        self.stop(product, Slot::Green)?;
        self.prune(product, &[])
    }
}
