//! The nginx front door: which slot each product's upstream points at (read
//! from the upstream include nginx loads), and the switch: rewrite, `nginx -t`,
//! graceful reload — restoring the previous file if nginx rejects the new one.
//!
//! The include is state: when it is missing, unreadable, or points at a slot where
//! nothing runs, the live slot is derived from the runtime ([`Nginx::live`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_cmd::Cmd;
use berth_manifest::{Manifest, Proxy};
use berth_runtime::{Address, Instance, Runtime, Slot};

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Cmd(#[from] berth_cmd::CmdError),
    /// The runtime could not say what runs.
    #[error(transparent)]
    Runtime(#[from] berth_runtime::RuntimeError),
    #[error("could not {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// When the test of each configuration last passed in this process.
static TESTS_PASSED: std::sync::Mutex<Vec<(PathBuf, std::time::Instant)>> =
    std::sync::Mutex::new(Vec::new());

pub struct Nginx<'a> {
    pub manifest: &'a Manifest,
    pub proxy: &'a Proxy,
    pub root: PathBuf,
}

impl<'a> Nginx<'a> {
    /// The nginx of berth.toml's `[proxy]` (`None` without one). Code outside this
    /// crate gets its front door from [`crate::front_door::open`].
    pub(crate) fn new(manifest: &'a Manifest, root: &Path) -> Option<Self> {
        manifest.proxy.as_ref().map(|proxy| Self {
            manifest,
            proxy,
            root: root.to_path_buf(),
        })
    }

    fn config(&self) -> PathBuf {
        self.root.join(&self.proxy.nginx_config)
    }

    pub fn upstream_file(&self, product: &str) -> PathBuf {
        self.config()
            .parent()
            .unwrap_or(&self.root)
            .join("upstreams")
            .join(format!("{product}.conf"))
    }

    /// The slot traffic goes to: the include's slot when the product runs there;
    /// otherwise (the include missing, unreadable, or naming a slot where nothing
    /// runs) the one slot with live instances, or `None` when nothing runs. Both slots
    /// running with no usable include is an error: berth cannot tell which is live.
    pub fn live(
        &self,
        product: &str,
        instances: &[Instance],
        rt: &dyn Runtime,
    ) -> Result<Option<Slot>, ProxyError> {
        let running: Vec<Slot> = [Slot::Blue, Slot::Green]
            .into_iter()
            .filter(|s| instances.iter().any(|i| i.slot == *s && i.alive))
            .collect();
        let why = match self.live_slot(product, rt) {
            Ok(Some(s)) if running.contains(&s) => return Ok(Some(s)),
            Ok(Some(s)) => format!("points at {s}, where nothing runs"),
            Ok(None) => "names no slot of the product".to_string(),
            Err(e) => e.to_string(),
        };
        match running.as_slice() {
            [] => Ok(None),
            [one] => {
                tracing::warn!(
                    "the upstream include of {product} ({}) {why}: taking {one}, the slot that runs, as live",
                    self.upstream_file(product).display()
                );
                Ok(Some(*one))
            }
            _ => Err(ProxyError::Config(format!(
                "cannot tell which slot of {product} is live: its upstream include {} {why}, and both slots run; stop the slot that should not serve (the other is left to `berth deploy {product}`), or restore the include",
                self.upstream_file(product).display()
            ))),
        }
    }

    /// The slot the product's upstream points at, read from the include nginx loads
    /// (`Ok(None)`: the include names no slot of the product): the slot where the
    /// runtime says a service answers at an address the include names.
    pub fn live_slot(&self, product: &str, rt: &dyn Runtime) -> Result<Option<Slot>, ProxyError> {
        let path = self.upstream_file(product);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ProxyError::Config(format!(
                    "{} does not exist",
                    path.display()
                )));
            }
            Err(source) => {
                return Err(ProxyError::Io {
                    action: "read",
                    path: path.display().to_string(),
                    source,
                });
            }
        };
        let p = &self.manifest.products[product];
        for line in text.lines() {
            let Some(addr) = line
                .trim()
                .strip_prefix("server ")
                .and_then(|rest| rest.split(|c: char| c.is_whitespace() || c == ';').next())
                .and_then(Address::parse)
            else {
                continue;
            };
            for svc in p.services.keys() {
                for slot in [Slot::Blue, Slot::Green] {
                    if rt.addresses(product, svc, slot).contains(&addr) {
                        return Ok(Some(slot));
                    }
                }
            }
        }
        Ok(None)
    }

    fn command(&self, template: &str, summary: &str) -> Cmd {
        let line = template
            .replace("{root}", &self.root.display().to_string())
            .replace("{config}", &self.config().display().to_string());
        let mut parts = line.split_whitespace();
        let program = parts.next().unwrap_or("nginx").to_string();
        Cmd::new(program, summary)
            .args(parts)
            .current_dir(&self.root)
            .timeout(Some(Duration::from_secs(30)))
            .hint_if_missing("install nginx (apt-get install nginx) or set [proxy] commands")
    }

    /// The upstream include of `product` pointing at `slot`.
    pub fn upstream_body(
        &self,
        product: &str,
        slot: Slot,
        rt: &dyn Runtime,
    ) -> Result<String, ProxyError> {
        let p = &self.manifest.products[product];
        berth_render::render_upstream(self.manifest, product, p, slot.name(), &|svc, _hp| {
            servers(rt, product, svc, slot)
        })
        .map_err(|e| ProxyError::Config(e.to_string()))
    }

    /// Point the product's upstreams at `slot`, test the config, reload gracefully.
    /// nginx keeps serving the previous configuration if anything fails.
    pub fn switch(&self, product: &str, slot: Slot, rt: &dyn Runtime) -> Result<(), ProxyError> {
        let path = self.upstream_file(product);
        let previous = std::fs::read_to_string(&path).ok();
        let body = self.upstream_body(product, slot, rt)?;
        let restore = |prev: &Option<String>| {
            if let Some(prev) = prev {
                let _ = berth_runtime::write_atomic(&path, prev.as_bytes());
            }
        };
        berth_runtime::write_atomic(&path, body.as_bytes()).map_err(|source| ProxyError::Io {
            action: "write",
            path: path.display().to_string(),
            source,
        })?;
        if let Err(e) = self.test() {
            restore(&previous);
            return Err(e);
        }
        let before = self.accepting_workers();
        self.reload().inspect_err(|_| restore(&previous))?;
        // `nginx -s reload` returns once the signal is sent: the switch is done when
        // the workers of the old configuration no longer take new connections (a
        // request right after would otherwise still reach the old addresses).
        self.old_workers_stopped(&before, Duration::from_secs(10));
        Ok(())
    }

    /// The upstream include `product` needs now when its routed slot answers at other
    /// addresses than the include names (`None`: nothing to do). The include's own
    /// text decides the slot; a slot where a service answers nowhere (every task gone)
    /// is left as it is (an upstream with no server fails `nginx -t`), and so is an
    /// include that starts with what would be written (a restore's end appends its
    /// maintenance server).
    pub fn followed(
        &self,
        product: &str,
        rt: &dyn Runtime,
    ) -> Result<Option<(PathBuf, String)>, ProxyError> {
        let Some(slot) = self.live_slot(product, rt)? else {
            return Ok(None);
        };
        let p = &self.manifest.products[product];
        if p.services.iter().any(|(name, svc)| {
            svc.host_port.or(svc.port).is_some() && rt.addresses(product, name, slot).is_empty()
        }) {
            return Ok(None);
        }
        let path = self.upstream_file(product);
        let body = self.upstream_body(product, slot, rt)?;
        let current = std::fs::read_to_string(&path).unwrap_or_default();
        Ok((!current.starts_with(&body)).then_some((path, body)))
    }

    /// Run the configured test command (`nginx -t`) against berth's config.
    pub fn test(&self) -> Result<(), ProxyError> {
        self.command(&self.proxy.test_command, "test the nginx configuration")
            .output()
            .map(|_| self.passed())
            .map_err(Into::into)
    }

    /// [`Nginx::test`], unless this process saw the test of this configuration pass
    /// less than `fresh` ago (a rollback checks the front door before it plans, then
    /// again just before its switch: milliseconds apart). The switch itself always
    /// tests the configuration it installs, so a file broken in between is still
    /// never reloaded.
    pub fn test_unless_passed_within(&self, fresh: Duration) -> Result<(), ProxyError> {
        let config = self.config();
        let recent = TESTS_PASSED
            .lock()
            .is_ok_and(|t| t.iter().any(|(c, at)| *c == config && at.elapsed() < fresh));
        if recent {
            return Ok(());
        }
        self.test()
    }

    /// Remember that the test of this configuration passed now.
    fn passed(&self) {
        let config = self.config();
        if let Ok(mut t) = TESTS_PASSED.lock() {
            t.retain(|(c, _)| *c != config);
            t.push((config, std::time::Instant::now()));
        }
    }

    /// Put a product behind a deliberate maintenance answer for the time its
    /// processes are down (`berth restore`): every upstream of the product points
    /// at a server nginx itself runs, which answers `503` with `Retry-After`.
    /// The live slot's address stays in the include, marked `down` (nginx never
    /// sends to it), so the live slot is still read from the file if berth stops
    /// before [`Nginx::switch`] puts the product back. Tested and reloaded like
    /// a switch; nginx keeps the previous configuration if anything fails.
    /// Returns the maintenance server's port, for [`Nginx::end_maintenance`].
    pub fn maintenance(
        &self,
        product: &str,
        live: Slot,
        rt: &dyn Runtime,
    ) -> Result<u16, ProxyError> {
        let p = &self.manifest.products[product];
        let port = maintenance_port()?;
        let mut body = format!(
            "# {}\n# Product {product}: MAINTENANCE while berth restores it (live slot: {}).\n# The end of the restore, `berth deploy` and `berth rollback` rewrite this file.\n",
            berth_render::HEADER,
            live.name()
        );
        for (name, svc) in &p.services {
            if svc.host_port.or(svc.port).is_none() {
                continue;
            }
            let mut servers = String::new();
            for a in rt.addresses(product, name, live) {
                servers.push_str(&format!("    server {a} down;\n"));
            }
            body.push_str(&format!(
                "\nupstream {} {{\n{servers}    server 127.0.0.1:{port} max_fails=0;\n}}\n",
                berth_render::upstream_name(product, name)
            ));
        }
        body.push_str(&maintenance_server(product, port));
        self.install(&self.upstream_file(product), &body)?;
        Ok(port)
    }

    /// End a maintenance: the product's upstreams point at `live` again. The maintenance
    /// server keeps listening on `port` (until the next switch rewrites the include):
    /// nginx workers of the maintenance configuration finish the requests they hold, and
    /// those they proxy to it get its 503 with `Retry-After`, never a 502 from a closed
    /// port.
    pub fn end_maintenance(
        &self,
        product: &str,
        live: Slot,
        port: u16,
        rt: &dyn Runtime,
    ) -> Result<(), ProxyError> {
        let mut body = self.upstream_body(product, live, rt)?;
        body.push_str(&format!(
            "\n# The maintenance server of the last restore, for requests nginx workers of that\n# configuration still hold; the next deploy or rollback removes it.\n{}",
            maintenance_server(product, port)
        ));
        self.install(&self.upstream_file(product), &body)
    }

    /// The start command of berth.toml with `{root}` and `{config}` filled in, as a
    /// person would type it.
    pub fn start_command_line(&self) -> String {
        self.proxy
            .start_command
            .replace("{root}", &self.root.display().to_string())
            .replace("{config}", &self.config().display().to_string())
    }

    /// Whether an nginx runs berth's configuration: the master named by the `pid`
    /// file the configuration declares (relative paths from the directory of
    /// berth.toml, nginx's `-p`), or else a master started with this configuration.
    pub fn running(&self) -> bool {
        self.master_in_pid_file() || !self.accepting_workers().is_empty()
    }

    /// The pid of the master the `pid` file names, when it is an nginx master started
    /// with this configuration.
    fn master_pid(&self) -> Option<u32> {
        let config = self.config().display().to_string();
        let pid_file = std::fs::read_to_string(self.config())
            .ok()
            .and_then(|text| {
                text.lines().find_map(|l| {
                    l.trim()
                        .strip_prefix("pid ")
                        .and_then(|r| r.trim().strip_suffix(';'))
                        .map(|p| self.root.join(p.trim()))
                })
            })?;
        let pid: u32 = std::fs::read_to_string(pid_file)
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        (cmdline.starts_with("nginx: master process") && cmdline.contains(&config)).then_some(pid)
    }

    /// Whether the `pid` file the configuration declares names a live nginx master (what
    /// `nginx -s reload` signals).
    fn master_in_pid_file(&self) -> bool {
        let is_master = |pid: &str| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).starts_with("nginx: master process"))
                .unwrap_or(false)
        };
        let pid_file = std::fs::read_to_string(self.config())
            .ok()
            .and_then(|text| {
                text.lines().find_map(|l| {
                    l.trim()
                        .strip_prefix("pid ")
                        .and_then(|r| r.trim().strip_suffix(';'))
                        .map(|p| self.root.join(p.trim()))
                })
            });
        if let Some(pid) = pid_file
            .and_then(|f| std::fs::read_to_string(f).ok())
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
            && is_master(&pid)
        {
            return true;
        }
        false
    }

    /// The worker processes of the nginx berth runs (the master started with this config)
    /// that accept new connections now; read from /proc (empty when none is found).
    pub fn accepting_workers(&self) -> Vec<u32> {
        // The master the pid file names, when it runs this configuration: its
        // children, from one /proc file (a reload waits on this list every few ms;
        // reading all of /proc takes a hundred on a busy machine).
        if let Some(master) = self.master_pid()
            && let Ok(children) =
                std::fs::read_to_string(format!("/proc/{master}/task/{master}/children"))
        {
            return children
                .split_whitespace()
                .filter(|p| {
                    std::fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|c| {
                        String::from_utf8_lossy(&c).trim_end_matches('\0')
                            == "nginx: worker process"
                    })
                })
                .filter_map(|p| p.parse().ok())
                .collect();
        }
        let config = self.config().display().to_string();
        let cmdline = |pid: &str| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| {
                    String::from_utf8_lossy(&c)
                        .replace('\0', " ")
                        .trim()
                        .to_string()
                })
                .unwrap_or_default()
        };
        let ppid = |pid: &str| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit_once(')')
                        .and_then(|(_, r)| r.split_whitespace().nth(1).map(str::to_string))
                })
                .unwrap_or_default()
        };
        let pids: Vec<String> = std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.chars().all(|c| c.is_ascii_digit()))
            .collect();
        let masters: Vec<&String> = pids
            .iter()
            .filter(|p| {
                let c = cmdline(p);
                c.starts_with("nginx: master process") && c.contains(&config)
            })
            .collect();
        pids.iter()
            .filter(|p| cmdline(p) == "nginx: worker process" && masters.contains(&&ppid(p)))
            .filter_map(|p| p.parse().ok())
            .collect()
    }

    /// Wait (up to `within`) until none of `before` (from [`Nginx::accepting_workers`]
    /// before a reload) accepts connections any more: from then on every new connection
    /// is served by the new configuration. False on timeout.
    ///
    /// On a reload nginx's master starts the workers of the new configuration, then
    /// sleeps 100 ms before it tells the old ones to shut down gracefully: for that
    /// tenth of a second a new connection (or the next request on a kept-alive one) may
    /// still be served by the old configuration. So once as many workers of the new
    /// configuration run (their title set: initialised) as there were old ones, berth
    /// sends the old ones that same graceful shutdown (SIGQUIT) itself: they stop
    /// accepting at once and finish what they hold, exactly as after the master's own
    /// signal, which then finds them exiting. Only for the master of berth's own
    /// configuration; a failed reload starts no new workers, so nothing is signalled.
    pub fn old_workers_stopped(&self, before: &[u32], within: Duration) -> bool {
        let until = std::time::Instant::now() + within;
        let mut hasten = !before.is_empty() && self.master_pid().is_some();
        loop {
            let now = self.accepting_workers();
            let old: Vec<u32> = before.iter().copied().filter(|p| now.contains(p)).collect();
            if old.is_empty() {
                return true;
            }
            if hasten && now.len() - old.len() >= before.len() {
                hasten = false;
                // A worker that exited meanwhile is gone already.
                for pid in &old {
                    let _ = signal(
                        *pid,
                        rustix::process::Signal::QUIT,
                        "tell an old nginx worker to stop accepting (the new configuration's workers run)",
                    );
                }
                continue;
            }
            if std::time::Instant::now() >= until {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Whether a new connection through the front door reaches the product (an answer
    /// without the maintenance header) within `within`; true for a product without domains.
    pub fn front_door_answers(&self, product: &str, within: Duration) -> bool {
        let Some(domain) = self.manifest.products[product].domains.first() else {
            return true;
        };
        let until = std::time::Instant::now() + within;
        loop {
            let answered = berth_runtime::http::Client::new(Duration::from_secs(5))
                .connect_timeout(Duration::from_millis(500))
                .head(
                    &format!("http://127.0.0.1:{}/", self.proxy.http_port),
                    Some(domain),
                )
                .map(|a| a.header("x-berth-maintenance").is_none());
            if answered.unwrap_or(false) {
                return true;
            }
            if std::time::Instant::now() >= until {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Write an upstream include, `nginx -t`, reload; the previous file comes back
    /// if either fails.
    pub(crate) fn install(&self, path: &Path, body: &str) -> Result<(), ProxyError> {
        let previous = std::fs::read_to_string(path).ok();
        let restore = || {
            if let Some(prev) = &previous {
                let _ = write_atomic(path, prev);
            }
        };
        write_atomic(path, body)?;
        if let Err(e) = self
            .command(&self.proxy.test_command, "test the nginx configuration")
            .output()
        {
            restore();
            return Err(e.into());
        }
        self.reload().inspect_err(|_| restore())
    }

    /// Start nginx with berth's configuration (the `[proxy]` start command). For a
    /// front door known not to run ([`Nginx::running`]): a reload would signal the
    /// pid its stale pid file names, which after a crash may be anyone (or a zombie).
    pub fn start(&self) -> Result<(), ProxyError> {
        self.command(&self.proxy.start_command, "start nginx")
            .output()
            .map(|_| ())
            .map_err(Into::into)
    }

    /// Reload nginx, starting it when it is not running.
    pub fn reload(&self) -> Result<(), ProxyError> {
        // With the default reload command, what `nginx -s reload` does (SIGHUP to the
        // master the pid file names) without an nginx that parses the whole
        // configuration first, when that master runs this configuration.
        if self.proxy.reload_command == berth_manifest::model::DEFAULT_RELOAD_COMMAND
            && let Some(master) = self.master_pid()
            && signal(
                master,
                rustix::process::Signal::HUP,
                "signal nginx to reload its configuration",
            )
            .is_ok()
        {
            return Ok(());
        }
        match self
            .command(&self.proxy.reload_command, "reload nginx")
            .output()
        {
            Ok(_) => Ok(()),
            Err(reload) => {
                // Not running yet (first deploy): start it.
                if self
                    .command(&self.proxy.start_command, "start nginx")
                    .output()
                    .is_ok()
                {
                    return Ok(());
                }
                // Another berth (the first deploy of another product) is starting it right
                // now: its master writes the pid file after the start command returns, so
                // the reload found it empty and the start found the port taken. Wait for
                // that master, then reload it.
                let until = std::time::Instant::now() + Duration::from_secs(5);
                while std::time::Instant::now() < until {
                    if self.master_in_pid_file() {
                        return self
                            .command(&self.proxy.reload_command, "reload nginx")
                            .output()
                            .map(|_| ())
                            .map_err(Into::into);
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(reload.into())
            }
        }
    }
}

/// Send `sig` to process `pid` (a system call: a `kill` process costs milliseconds
/// on the switch's path), logged like a command with why.
fn signal(pid: u32, sig: rustix::process::Signal, why: &str) -> std::io::Result<()> {
    tracing::debug!("{why}: kill -{} {pid}", sig.as_raw());
    let target = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .ok_or_else(|| std::io::Error::other(format!("no such process id: {pid}")))?;
    rustix::process::kill_process(target, sig).map_err(|e| {
        tracing::debug!("kill -{} {pid}: {e}", sig.as_raw());
        e.into()
    })
}

/// The upstream servers of a service in a slot: where the runtime says it answers.
fn servers(rt: &dyn Runtime, product: &str, service: &str, slot: Slot) -> Vec<String> {
    rt.addresses(product, service, slot)
        .iter()
        .map(|a| a.to_string())
        .collect()
}

/// Seconds a client is told to wait (`Retry-After`) while a product is in maintenance.
pub const MAINTENANCE_RETRY_AFTER_S: u32 = 2;

/// The server block that answers a product's requests during a restore.
fn maintenance_server(product: &str, port: u16) -> String {
    format!(
        "\nserver {{\n    listen 127.0.0.1:{port};\n    default_type text/plain;\n    add_header Retry-After {MAINTENANCE_RETRY_AFTER_S} always;\n    add_header X-Berth-Maintenance {product} always;\n    return 503 \"{product} is being restored; retry in a few seconds\\n\";\n}}\n"
    )
}

/// A loopback port free right now, for the maintenance server nginx listens on.
fn maintenance_port() -> Result<u16, ProxyError> {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|source| ProxyError::Io {
            action: "find a free port for",
            path: "the maintenance server".into(),
            source,
        })
}

/// Write an include atomically (temp file, fsync, rename).
fn write_atomic(path: &Path, body: &str) -> Result<(), ProxyError> {
    berth_runtime::write_atomic(path, body.as_bytes()).map_err(|source| ProxyError::Io {
        action: "write",
        path: path.display().to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(service: &str, slot: Slot, alive: bool) -> Instance {
        Instance {
            service: service.into(),
            slot,
            version: "abc".into(),
            alive,
            id: "1".into(),
            started: None,
            port: None,
            node: None,
            state: None,
        }
    }

    /// Signals `pid` with `kill -<signal>`.
    fn signal(signal: &str, pid: u32) {
        let out = std::process::Command::new("kill")
            .args([format!("-{signal}"), pid.to_string()])
            .output()
            .unwrap();
        assert!(out.status.success(), "kill -{signal} {pid}: {out:?}");
    }

    /// A real nginx master stopped (and resumed first, if frozen) when the test ends.
    struct Master(u32);
    impl Drop for Master {
        fn drop(&mut self) {
            let _ = std::process::Command::new("kill")
                .args(["-CONT", &self.0.to_string()])
                .status();
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &self.0.to_string()])
                .status();
        }
    }

    /// After a reload, the old workers stop accepting as soon as the new configuration's
    /// workers run, not only when nginx's master has slept its 100 ms: berth tells them.
    /// Proven with the master frozen right after it started the new workers (it cannot
    /// signal anyone then); each old worker's log line names who sent its SIGQUIT. A round
    /// where the master's signal came before the freeze proves nothing and is run again.
    #[test]
    fn old_workers_stop_accepting_without_waiting_for_the_masters_pause() {
        let text = include_str!("../../../examples/multi-product/berth.toml");
        let loaded = berth_manifest::parse_str("berth.toml", text).unwrap();
        let root = tempfile::tempdir().unwrap();
        let nginx = Nginx::new(&loaded.manifest, root.path()).unwrap();
        let config = nginx.config();
        std::fs::create_dir_all(config.parent().unwrap()).unwrap();
        let log = root.path().join("error.log");
        let port = berth_testkit::free_port();
        std::fs::write(
            &config,
            format!(
                "worker_processes 2;\npid nginx.pid;\nerror_log {log} notice;\n\
                 events {{ worker_connections 64; }}\n\
                 http {{ access_log off; client_body_temp_path tmp; proxy_temp_path tmp; \
                 fastcgi_temp_path tmp; uwsgi_temp_path tmp; scgi_temp_path tmp;\n\
                 server {{ listen 127.0.0.1:{port}; return 200; }} }}\n",
                log = log.display()
            ),
        )
        .unwrap();
        let out = std::process::Command::new("nginx")
            .arg("-p")
            .arg(root.path())
            .arg("-c")
            .arg(&config)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let until = std::time::Instant::now() + Duration::from_secs(10);
        let master = loop {
            if let Some(m) = nginx.master_pid()
                && nginx.accepting_workers().len() == 2
            {
                break Master(m);
            }
            assert!(std::time::Instant::now() < until, "nginx did not start");
            std::thread::sleep(Duration::from_millis(10));
        };
        for _round in 0..10 {
            let before = nginx.accepting_workers();
            assert_eq!(before.len(), 2, "{before:?}");
            signal("HUP", master.0);
            let until = std::time::Instant::now() + Duration::from_secs(10);
            while nginx
                .accepting_workers()
                .iter()
                .filter(|p| !before.contains(p))
                .count()
                < 2
            {
                assert!(
                    std::time::Instant::now() < until,
                    "no new workers after the reload"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
            signal("STOP", master.0);
            let stopped = nginx.old_workers_stopped(&before, Duration::from_secs(5));
            signal("CONT", master.0);
            assert!(
                stopped,
                "5 s after the new workers ran (the master frozen), the old workers {before:?} still accept connections"
            );
            // Who sent each old worker its SIGQUIT: a signal is logged with its sender;
            // the master tells its workers through their channel (nothing logged).
            let text = std::fs::read_to_string(&log).unwrap();
            let told_by_berth = before.iter().all(|p| {
                let mark = format!("{p}#{p}: signal 3 (SIGQUIT) received from ");
                text.find(&mark).is_some_and(|at| {
                    !text[at + mark.len()..].starts_with(&format!("{},", master.0))
                })
            });
            if !told_by_berth {
                // The master's pause was over before it was frozen: this round proves nothing.
                continue;
            }
            return;
        }
        panic!("in 10 rounds the master always signalled its old workers before it was frozen");
    }

    /// The include decides while the product runs in its slot; otherwise the runtime
    /// does, and both slots running with no usable include is an error, never a guess.
    #[test]
    fn the_live_slot_comes_from_the_include_or_else_from_the_runtime() {
        let text = include_str!("../../../examples/multi-product/berth.toml");
        let loaded = berth_manifest::parse_str("berth.toml", text).unwrap();
        let root = tempfile::tempdir().unwrap();
        let nginx = Nginx::new(&loaded.manifest, root.path()).unwrap();
        let rt = berth_runtime::local::LocalRuntime::new(
            loaded.manifest.clone(),
            root.path().to_path_buf(),
        );
        let include = nginx.upstream_file("bestays");
        let blue = [instance("server", Slot::Blue, true)];
        let green = [instance("server", Slot::Green, true)];
        let both = [blue[0].clone(), green[0].clone()];
        let dead_blue = [instance("server", Slot::Blue, false)];

        // No include.
        assert_eq!(nginx.live("bestays", &[], &rt).unwrap(), None);
        assert_eq!(nginx.live("bestays", &dead_blue, &rt).unwrap(), None);
        assert_eq!(
            nginx.live("bestays", &green, &rt).unwrap(),
            Some(Slot::Green)
        );
        let e = nginx.live("bestays", &both, &rt).unwrap_err().to_string();
        assert!(
            e.contains("both slots run") && e.contains("does not exist"),
            "{e}"
        );

        // An include pointing at blue.
        std::fs::create_dir_all(include.parent().unwrap()).unwrap();
        std::fs::write(
            &include,
            nginx.upstream_body("bestays", Slot::Blue, &rt).unwrap(),
        )
        .unwrap();
        assert_eq!(nginx.live("bestays", &blue, &rt).unwrap(), Some(Slot::Blue));
        assert_eq!(nginx.live("bestays", &both, &rt).unwrap(), Some(Slot::Blue));
        assert_eq!(
            nginx.live("bestays", &green, &rt).unwrap(),
            Some(Slot::Green)
        );

        // Garbage.
        std::fs::write(&include, "}}} not nginx").unwrap();
        assert_eq!(
            nginx.live("bestays", &green, &rt).unwrap(),
            Some(Slot::Green)
        );
        let e = nginx.live("bestays", &both, &rt).unwrap_err().to_string();
        assert!(e.contains("names no slot"), "{e}");
    }
}
