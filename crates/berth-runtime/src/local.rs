//! The local-process runtime: each service's `command` runs detached (its own
//! process group, so it outlives berth), with a pid file and a log file under
//! `.berth/run/<product>/<slot>/`. The embedded default when Docker is absent.

use std::fs::OpenOptions;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use berth_cmd::Cmd;
use berth_manifest::Manifest;
use berth_render::secrets::{self, SecretFile};

use crate::{Instance, Runtime, RuntimeError, Slot, slot_port};

pub struct LocalRuntime {
    manifest: Manifest,
    root: PathBuf,
    /// Extra directories searched for commands (e.g. where demo-app was built).
    pub path_prefix: Vec<PathBuf>,
}

fn io<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> RuntimeError + 'a {
    move |source| RuntimeError::Io {
        action,
        path: path.display().to_string(),
        source,
    }
}

impl LocalRuntime {
    pub fn new(manifest: Manifest, root: PathBuf) -> Self {
        Self {
            manifest,
            root,
            path_prefix: Vec::new(),
        }
    }

    fn dir(&self, product: &str, slot: Slot) -> PathBuf {
        self.root.join(".berth/run").join(product).join(slot.name())
    }

    /// The environment a service runs with: berth's variables, the port, its plain
    /// env, and its product's secret file (never logged).
    fn env(
        &self,
        product: &str,
        service: &str,
        slot: Slot,
        version: &str,
    ) -> Result<Vec<(String, String)>, RuntimeError> {
        let p = &self.manifest.products[product];
        let s = &p.services[service];
        let mut env = vec![
            ("BERTH_PRODUCT".to_string(), product.to_string()),
            ("BERTH_SERVICE".to_string(), service.to_string()),
            ("BERTH_SLOT".to_string(), slot.name().to_string()),
            ("BERTH_VERSION".to_string(), version.to_string()),
        ];
        if let Some(port) = slot_port(&self.manifest, s, slot) {
            env.push(("PORT".into(), port.to_string()));
            env.push(("BIND".into(), "127.0.0.1".into()));
        }
        env.extend(s.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        let file = SecretFile::load(&secrets::product_secret_path(&self.root, product))
            .map_err(|e| RuntimeError::Failed(e.to_string()))?;
        for k in file.keys().map(str::to_string).collect::<Vec<_>>() {
            if let Some(v) = file.get(&k) {
                env.push((k.clone(), v.to_string()));
            }
        }
        // A service with its own URL scheme: its URLs replace the product's.
        if s.overrides_url_schemes() {
            let own = SecretFile::load(&secrets::service_secret_path(&self.root, product, service))
                .map_err(|e| RuntimeError::Failed(e.to_string()))?;
            for k in own.keys().map(str::to_string).collect::<Vec<_>>() {
                if let Some(v) = own.get(&k) {
                    env.retain(|(n, _)| *n != k);
                    env.push((k.clone(), v.to_string()));
                }
            }
        }
        Ok(env)
    }

    fn path_env(&self) -> String {
        let mut parts: Vec<String> = self
            .path_prefix
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        parts.push(std::env::var("PATH").unwrap_or_default());
        parts.join(":")
    }

    fn command_of(&self, product: &str, service: &str) -> Result<String, RuntimeError> {
        self.manifest.products[product].services[service].command.clone().ok_or_else(|| {
            RuntimeError::Failed(format!(
                "{product}.{service} has no `command`: the local runtime runs each service's command (add `command = \"...\"`, or use the compose runtime)"
            ))
        })
    }
}

fn pid_alive(pid: u32) -> bool {
    // A zombie has exited: it only waits for its parent to reap it.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

fn signal(pid: u32, sig: &str) {
    // The process group: the service and anything it spawned.
    let _ = Cmd::new("kill", "signal a service")
        .args([format!("-{sig}"), "--".into(), format!("-{pid}")])
        .timeout(Some(Duration::from_secs(5)))
        .output_unchecked();
}

impl Runtime for LocalRuntime {
    fn name(&self) -> &'static str {
        "local"
    }

    fn build(&self, _product: &str, _version: &str) -> Result<Option<String>, RuntimeError> {
        Ok(None)
    }

    fn has_version(&self, _product: &str, _version: &str) -> bool {
        true
    }

    fn migrate(
        &self,
        product: &str,
        service: &str,
        version: &str,
        slot: Slot,
    ) -> Result<String, RuntimeError> {
        let Some(migrate) = self.manifest.products[product].services[service]
            .migrate
            .clone()
        else {
            return Ok(String::new());
        };
        let mut cmd = Cmd::new("sh", format!("run the migration of {product}.{service}"))
            .args(["-c", &migrate])
            .current_dir(&self.root)
            .env("PATH", self.path_env())
            .timeout(Some(Duration::from_secs(600)));
        for (k, v) in self.env(product, service, slot, version)? {
            if k.ends_with("PASSWORD") || k.ends_with("_URL") {
                cmd = cmd.redact(v.clone());
            }
            cmd = cmd.env(k, v);
        }
        let out = cmd.output()?;
        Ok(format!("{}{}", out.stdout_str(), out.stderr_str()))
    }

    fn start(&self, product: &str, slot: Slot, version: &str) -> Result<(), RuntimeError> {
        let dir = self.dir(product, slot);
        std::fs::create_dir_all(&dir).map_err(io("create", &dir))?;
        for service in self.manifest.products[product].services.keys() {
            let command = self.command_of(product, service)?;
            let log = dir.join(format!("{service}.log"));
            let out = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .map_err(io("open", &log))?;
            let err = out.try_clone().map_err(io("open", &log))?;
            let mut c = Command::new("sh");
            c.args(["-c", &format!("exec {command}")])
                .current_dir(&self.root)
                .env("PATH", self.path_env())
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .process_group(0);
            for (k, v) in self.env(product, service, slot, version)? {
                c.env(k, v);
            }
            tracing::debug!(target: "berth::cmd", "start {product}.{service} in {slot}: {command}");
            let child = c.spawn().map_err(|e| {
                RuntimeError::Failed(format!(
                    "could not start {product}.{service}: `{command}`: {e}"
                ))
            })?;
            let pid = child.id();
            // Reap it in the background if it dies while berth still runs (no zombie).
            std::thread::spawn(move || {
                let mut child = child;
                let _ = child.wait();
            });
            let meta = serde_json::json!({ "pid": pid, "version": version, "command": command });
            let pid_file = dir.join(format!("{service}.json"));
            std::fs::write(&pid_file, meta.to_string()).map_err(io("write", &pid_file))?;
        }
        Ok(())
    }

    fn stop(&self, product: &str, slot: Slot) -> Result<(), RuntimeError> {
        let instances: Vec<Instance> = self
            .instances(product)?
            .into_iter()
            .filter(|i| i.slot == slot)
            .collect();
        for i in instances.iter().filter(|i| i.alive) {
            if let Ok(pid) = i.id.parse() {
                signal(pid, "TERM");
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for i in &instances {
            let Ok(pid) = i.id.parse::<u32>() else {
                continue;
            };
            while pid_alive(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if pid_alive(pid) {
                signal(pid, "KILL");
                let gone = Instant::now() + Duration::from_secs(3);
                while pid_alive(pid) && Instant::now() < gone {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            let _ =
                std::fs::remove_file(self.dir(product, slot).join(format!("{}.json", i.service)));
        }
        Ok(())
    }

    fn instances(&self, product: &str) -> Result<Vec<Instance>, RuntimeError> {
        let mut out = Vec::new();
        let Some(p) = self.manifest.products.get(product) else {
            return Ok(out);
        };
        for slot in [Slot::Blue, Slot::Green] {
            let dir = self.dir(product, slot);
            for (service, svc) in &p.services {
                let f = dir.join(format!("{service}.json"));
                let Ok(text) = std::fs::read_to_string(&f) else {
                    continue;
                };
                let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
                    continue;
                };
                let pid = v["pid"].as_u64().unwrap_or(0) as u32;
                let started = std::fs::metadata(&f).and_then(|m| m.modified()).ok();
                out.push(Instance {
                    service: service.clone(),
                    slot,
                    version: v["version"].as_str().unwrap_or("").to_string(),
                    alive: pid > 0 && pid_alive(pid),
                    id: pid.to_string(),
                    started: started.or(Some(SystemTime::UNIX_EPOCH)),
                    port: slot_port(&self.manifest, svc, slot),
                });
            }
        }
        Ok(out)
    }

    fn logs(&self, product: &str, slot: Slot, service: &str, lines: usize) -> String {
        let text = std::fs::read_to_string(self.dir(product, slot).join(format!("{service}.log")))
            .unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}
