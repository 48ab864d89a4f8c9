//! The local-process runtime: each version runs from its own checkout of its commit
//! (`.berth/versions/<product>/<version>/`, made by `build` with `git archive`, then
//! each service's `build_command`), so a rollback runs the old code for real. Each
//! service's `command` runs detached (`sh -c` in its `workdir`, its own process
//! group, so it outlives berth) from the cleared environment of [`product_env`],
//! with a pid file and a log file under `.berth/run/<product>/<slot>/`.
//!
//! A pid file records the process's start time (`/proc/<pid>/stat` field 22): berth
//! signals, and reports alive, only a process group leader whose start time matches,
//! so a stale pid file pointing at a reused pid is "dead" and never signalled.

use std::fs::OpenOptions;
use std::os::unix::process::CommandExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use berth_cmd::Cmd;
use berth_manifest::Manifest;

use crate::{
    Address, Instance, LogFrom, LogLine, LogStream, ProductEnv, Runtime, RuntimeError, Slot, io,
    product_env, slot_port,
};

pub struct LocalRuntime {
    manifest: Manifest,
    root: PathBuf,
    /// Extra directories searched for commands (e.g. where demo-app was built).
    pub path_prefix: Vec<PathBuf>,
    /// Where the cgroup file systems are ([`crate::cgroup::CGROUP_FS`]).
    pub cgroup_fs: PathBuf,
}

/// What a pid file records about a process berth started.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct PidFile {
    pid: u32,
    /// `/proc/<pid>/stat` field 22 (clock ticks after boot) when berth started it.
    #[serde(default)]
    start_ticks: Option<u64>,
    version: String,
    command: String,
    /// The length of the log file when this run started: its lines begin there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    log_from: Option<u64>,
}

impl PidFile {
    fn read(path: &Path) -> Option<Self> {
        serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
    }

    /// Is this still the process berth started (and not a zombie)?
    fn owned(&self) -> bool {
        self.start_ticks
            .is_some_and(|start| owned_alive(self.pid, start))
    }
}

/// Fields of `/proc/<pid>/stat` berth checks: state, process group, start time.
struct ProcStat {
    state: char,
    pgrp: u32,
    start_ticks: u64,
}

fn proc_stat(pid: u32) -> Option<ProcStat> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: fields 3.. follow the last `)`.
    let (_, rest) = stat.rsplit_once(')')?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(ProcStat {
        state: f.first()?.chars().next()?,
        pgrp: f.get(2)?.parse().ok()?,
        start_ticks: f.get(19)?.parse().ok()?,
    })
}

/// `pid` runs, leads its own process group, and started at `start_ticks`: the process
/// berth spawned, not another that reused its pid. A zombie has exited.
fn owned_alive(pid: u32, start_ticks: u64) -> bool {
    pid > 0
        && proc_stat(pid)
            .is_some_and(|s| s.state != 'Z' && s.pgrp == pid && s.start_ticks == start_ticks)
}

/// Signal every process of group `pgid`; only for a group whose leader berth proved
/// it started (the group lives on while any member does, so its id is not reused).
fn signal_group(pgid: u32, sig: &str) {
    let _ = Cmd::new("kill", "signal a service")
        .args([format!("-{sig}"), "--".into(), format!("-{pgid}")])
        .timeout(Some(Duration::from_secs(5)))
        .output_unchecked();
}

/// Whether a process of group `pgid` still runs (zombies do not count).
fn group_alive(pgid: u32) -> bool {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .any(|pid| proc_stat(pid).is_some_and(|s| s.state != 'Z' && s.pgrp == pgid))
}

/// A version is a commit id (berth uses its first 12 hex digits).
fn valid_version(version: &str) -> bool {
    (4..=40).contains(&version.len()) && version.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `workdir` as a relative path that stays inside the checkout.
fn relative_inside(workdir: &str) -> Option<PathBuf> {
    let p = Path::new(workdir);
    p.components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
        .then(|| p.to_path_buf())
}

impl LocalRuntime {
    pub fn new(manifest: Manifest, root: PathBuf) -> Self {
        Self {
            manifest,
            root,
            path_prefix: Vec::new(),
            cgroup_fs: PathBuf::from(crate::cgroup::CGROUP_FS),
        }
    }

    fn dir(&self, product: &str, slot: Slot) -> PathBuf {
        self.root.join(".berth/run").join(product).join(slot.name())
    }

    fn versions_dir(&self, product: &str) -> PathBuf {
        self.root.join(".berth/versions").join(product)
    }

    /// Where `version` of `product` is checked out.
    pub fn checkout(&self, product: &str, version: &str) -> PathBuf {
        self.versions_dir(product).join(version)
    }

    /// Written last by `build`: the checkout and its build commands are complete.
    fn ready_marker(&self, product: &str, version: &str) -> PathBuf {
        self.versions_dir(product).join(format!("{version}.ready"))
    }

    /// The directory a service's commands run in: `workdir` of the version's checkout.
    fn workdir(
        &self,
        product: &str,
        service: &str,
        version: &str,
    ) -> Result<PathBuf, RuntimeError> {
        if !self.has_version(product, version) {
            return Err(RuntimeError::Failed(format!(
                "version {version} of {product} is not built: {} is missing (a deploy builds it)",
                self.checkout(product, version).display()
            )));
        }
        self.in_checkout(product, service, version, &self.checkout(product, version))
    }

    /// `workdir` of a service inside `checkout` (the checkout itself without one).
    fn in_checkout(
        &self,
        product: &str,
        service: &str,
        version: &str,
        checkout: &Path,
    ) -> Result<PathBuf, RuntimeError> {
        let Some(w) = &self.manifest.products[product].services[service].workdir else {
            return Ok(checkout.to_path_buf());
        };
        let rel = relative_inside(w).ok_or_else(|| {
            RuntimeError::Failed(format!(
                "workdir `{w}` of {product}.{service} must be a relative path inside the repository"
            ))
        })?;
        let dir = checkout.join(rel);
        if !dir.is_dir() {
            return Err(RuntimeError::Failed(format!(
                "workdir `{w}` of {product}.{service} does not exist in version {version} ({})",
                dir.display()
            )));
        }
        Ok(dir)
    }

    fn env(
        &self,
        product: &str,
        service: &str,
        slot: Option<Slot>,
        version: &str,
    ) -> Result<ProductEnv, RuntimeError> {
        product_env(
            &self.manifest,
            &self.root,
            product,
            service,
            slot,
            version,
            &self.path_prefix,
        )
    }

    /// A shell command of a service, run to completion in `cwd` with the product's
    /// environment ([`product_env`]); secret values are masked in anything printed.
    fn shell(env: ProductEnv, script: &str, cwd: &Path, summary: String, timeout: Duration) -> Cmd {
        let mut cmd = Cmd::new("sh", summary)
            .args(["-c", script])
            .current_dir(cwd)
            .env_clear()
            .timeout(Some(timeout));
        for v in env.secret_values {
            cmd = cmd.redact(v);
        }
        for (k, v) in env.vars {
            if k.ends_with("PASSWORD") || k.ends_with("_URL") {
                cmd = cmd.redact(v.clone());
            }
            cmd = cmd.env(k, v);
        }
        cmd
    }

    fn command_of(&self, product: &str, service: &str) -> Result<String, RuntimeError> {
        self.manifest.products[product].services[service].command.clone().ok_or_else(|| {
            RuntimeError::Failed(format!(
                "{product}.{service} has no `command`: the local runtime runs each service's command (add `command = \"...\"`, or use the compose runtime)"
            ))
        })
    }

    /// The full commit id of `version`, the path of berth.toml's directory in the repository.
    fn commit_of(&self, version: &str) -> Result<(String, String), RuntimeError> {
        if !valid_version(version) {
            return Err(RuntimeError::Failed(format!(
                "version `{version}` is not a commit id"
            )));
        }
        let git = |summary: &str, args: &[&str]| {
            Cmd::new("git", summary)
                .args(args)
                .current_dir(&self.root)
                .timeout(Some(Duration::from_secs(60)))
                .output()
                .map(|o| o.stdout_str().trim().to_string())
        };
        let commit = git(
            &format!("find the commit of version {version}"),
            &[
                "rev-parse",
                "--verify",
                "--quiet",
                &format!("{version}^{{commit}}"),
            ],
        )?;
        let prefix = git(
            "find berth.toml's directory in the repository",
            &["rev-parse", "--show-prefix"],
        )?;
        Ok((commit, prefix))
    }

    /// Pid files of a slot: (service, path, record).
    /// The cgroup `service` of `product` runs in in `slot`, made with its limits (None
    /// where the host has none berth can use and enforcement is best-effort: warned),
    /// and whether its limits are enforced strictly.
    fn cgroup_for(
        &self,
        product: &str,
        slot: Slot,
        service: &str,
    ) -> Result<(Option<crate::cgroup::Cgroup>, bool), RuntimeError> {
        let strict = berth_manifest::limits::enforce_strict(&self.manifest);
        let limits = berth_manifest::effective_limits(&self.manifest, product, service);
        let name = crate::cgroup::Cgroup::name_for(&self.root, product, slot.name(), service);
        match crate::cgroup::detect_at(&self.cgroup_fs)
            .and_then(|h| crate::cgroup::Cgroup::create(&h, &name, &limits))
        {
            Ok(cg) => Ok((Some(cg), strict)),
            Err(why) if strict => Err(RuntimeError::Failed(format!(
                "cannot apply the limits of {product}.{service} on this host: {why}; run berth as root on a host with cgroup v2 (or v1 memory, cpu and pids controllers), or set [limits] enforce = \"best-effort\" in berth.toml to run without them"
            ))),
            Err(why) => {
                tracing::warn!(
                    "{product}.{service} runs without its cpu, memory and pids limits: {why} ([limits] enforce = \"best-effort\")"
                );
                Ok((None, strict))
            }
        }
    }

    /// The cgroup usage of `service` of `product` in `slot`, when it has a cgroup.
    pub fn cgroup_usage(
        &self,
        product: &str,
        slot: Slot,
        service: &str,
    ) -> Option<crate::cgroup::Usage> {
        let h = crate::cgroup::detect_at(&self.cgroup_fs).ok()?;
        let cg = crate::cgroup::Cgroup {
            hierarchy: h,
            name: crate::cgroup::Cgroup::name_for(&self.root, product, slot.name(), service),
        };
        cg.exists().then(|| cg.usage()).flatten()
    }

    fn pid_files(&self, product: &str, slot: Slot) -> Vec<(String, PathBuf, Option<PidFile>)> {
        let Some(p) = self.manifest.products.get(product) else {
            return Vec::new();
        };
        let dir = self.dir(product, slot);
        p.services
            .keys()
            .map(|s| {
                let f = dir.join(format!("{s}.json"));
                let pf = PidFile::read(&f);
                (s.clone(), f, pf)
            })
            .filter(|(_, f, _)| f.exists())
            .collect()
    }
}

impl Runtime for LocalRuntime {
    fn name(&self) -> &'static str {
        "local"
    }

    /// Reading pid files is cheap: a follower notices a switch within 200 ms.
    fn follow_interval(&self) -> Duration {
        Duration::from_millis(200)
    }

    fn build_summary(&self) -> String {
        "build: check out the version's commit under .berth/versions and run its build commands"
            .into()
    }

    fn retained_summary(&self, version: &str) -> String {
        format!("reuse the retained checkout of {version} (no build)")
    }

    fn preflight(&self, _product: &str, dirty: bool) -> Result<Vec<String>, RuntimeError> {
        Ok(if dirty {
            vec![
                "uncommitted changes are not deployed: the local runtime runs a checkout of the commit"
                    .into(),
            ]
        } else {
            Vec::new()
        })
    }

    fn addresses(&self, product: &str, service: &str, slot: Slot) -> Vec<Address> {
        crate::loopback(&self.manifest, product, service, slot)
    }

    fn slot_free(&self, product: &str, slot: Slot) -> Result<(), RuntimeError> {
        crate::loopback_free(&self.manifest, product, slot)
    }

    /// Both slots stopped, then every checkout and the run directory removed.
    fn teardown(&self, product: &str) -> Result<Vec<String>, RuntimeError> {
        let mut removed = Vec::new();
        for slot in [Slot::Blue, Slot::Green] {
            self.stop(product, slot)?;
        }
        for dir in [
            self.versions_dir(product),
            self.root.join(".berth/run").join(product),
        ] {
            if dir.exists() {
                std::fs::remove_dir_all(&dir).map_err(io("remove", &dir))?;
                removed.push(dir.display().to_string());
            }
        }
        Ok(removed)
    }

    /// Check out the version's commit under `.berth/versions/<product>/<version>/`
    /// (extracted beside it, then renamed into place), then run each service's
    /// `build_command` there; the ready marker is written last.
    fn build(&self, product: &str, version: &str) -> Result<Option<String>, RuntimeError> {
        if self.has_version(product, version) {
            return Ok(None);
        }
        let (commit, prefix) = self.commit_of(version)?;
        let dir = self.checkout(product, version);
        let parent = self.versions_dir(product);
        std::fs::create_dir_all(&parent).map_err(io("create", &parent))?;
        if dir.exists() {
            // An interrupted build: start again.
            std::fs::remove_dir_all(&dir).map_err(io("remove", &dir))?;
        }
        let partial = parent.join(format!(".{version}.partial"));
        let tar = parent.join(format!(".{version}.tar"));
        let _ = std::fs::remove_dir_all(&partial);
        std::fs::create_dir_all(&partial).map_err(io("create", &partial))?;
        let tree = if prefix.is_empty() {
            commit.clone()
        } else {
            format!("{commit}:{}", prefix.trim_end_matches('/'))
        };
        Cmd::new("git", format!("export commit {commit} for {product}"))
            .args(["archive", "--format=tar", "-o"])
            .arg(&tar)
            .arg(&tree)
            .current_dir(&self.root)
            .timeout(Some(Duration::from_secs(600)))
            .output()?;
        let extracted = Cmd::new("tar", format!("extract commit {commit} for {product}"))
            .arg("-xf")
            .arg(&tar)
            .arg("-C")
            .arg(&partial)
            .timeout(Some(Duration::from_secs(600)))
            .output();
        let _ = std::fs::remove_file(&tar);
        extracted?;
        std::fs::rename(&partial, &dir).map_err(io("rename", &partial))?;
        let mut built = Vec::new();
        for (service, svc) in &self.manifest.products[product].services {
            let Some(script) = &svc.build_command else {
                continue;
            };
            // Not marked ready yet: only the directory is needed.
            let cwd = self.in_checkout(product, service, version, &dir)?;
            Self::shell(
                self.env(product, service, None, version)?,
                script,
                &cwd,
                format!("run the build_command of {product}.{service}"),
                Duration::from_secs(1800),
            )
            .output()?;
            built.push(service.as_str());
        }
        let marker = self.ready_marker(product, version);
        crate::write_atomic(&marker, format!("{commit}\n").as_bytes())
            .map_err(io("write", &marker))?;
        let mut note = format!(
            "checked out {commit} in {}",
            dir.strip_prefix(&self.root).unwrap_or(&dir).display()
        );
        if !built.is_empty() {
            note.push_str(&format!("; ran the build_command of {}", built.join(", ")));
        }
        Ok(Some(note))
    }

    fn has_version(&self, product: &str, version: &str) -> bool {
        valid_version(version)
            && self.ready_marker(product, version).is_file()
            && self.checkout(product, version).is_dir()
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
        let out = Self::shell(
            self.env(product, service, Some(slot), version)?,
            &migrate,
            &self.workdir(product, service, version)?,
            format!("run the migration of {product}.{service}"),
            Duration::from_secs(600),
        )
        .output()?;
        Ok(format!("{}{}", out.stdout_str(), out.stderr_str()))
    }

    fn start(&self, product: &str, slot: Slot, version: &str) -> Result<(), RuntimeError> {
        let dir = self.dir(product, slot);
        std::fs::create_dir_all(&dir).map_err(io("create", &dir))?;
        for service in self.manifest.products[product].services.keys() {
            let command = self.command_of(product, service)?;
            let cwd = self.workdir(product, service, version)?;
            let env = self.env(product, service, Some(slot), version)?;
            let log = dir.join(format!("{service}.log"));
            let out = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .map_err(io("open", &log))?;
            let err = out.try_clone().map_err(io("open", &log))?;
            let log_from = out.metadata().map(|m| m.len()).ok();
            // Its limits: a cgroup of its own (memory, CPU, processes) and an open-files
            // limit; where the host cannot, a refusal or a warning (`[limits] enforce`).
            let (cg, strict) = self.cgroup_for(product, slot, service)?;
            let limits = berth_manifest::effective_limits(&self.manifest, product, service);
            let script = crate::cgroup::wrap_command(
                cg.as_ref(),
                limits.nofile,
                strict,
                &format!("{product}.{service}"),
                &command,
            );
            // The same shell as `migrate`: `cd sub && exec server` works in both.
            let mut c = Command::new("sh");
            c.args(["-c", &script])
                .current_dir(&cwd)
                .env_clear()
                .envs(env.vars)
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .process_group(0);
            tracing::debug!(target: "berth::cmd", "start {product}.{service} in {slot}: {command}");
            let mut child = c.spawn().map_err(|e| {
                RuntimeError::Failed(format!(
                    "could not start {product}.{service}: `{command}`: {e}"
                ))
            })?;
            let pid = child.id();
            // Read while the child is unreaped: its pid cannot belong to another process yet.
            let start_ticks = proc_stat(pid).map(|s| s.start_ticks);
            let Some(start_ticks) = start_ticks else {
                let _ = child.kill();
                let _ = child.wait();
                return Err(RuntimeError::Failed(format!(
                    "could not read /proc/{pid}/stat of {product}.{service} just started"
                )));
            };
            // Reap it in the background if it dies while berth still runs (no zombie).
            std::thread::spawn(move || {
                let _ = child.wait();
            });
            let meta = PidFile {
                pid,
                start_ticks: Some(start_ticks),
                version: version.to_string(),
                command,
                log_from,
            };
            let pid_file = dir.join(format!("{service}.json"));
            let body = serde_json::to_vec(&meta).expect("serializable");
            crate::write_atomic(&pid_file, &body).map_err(io("write", &pid_file))?;
        }
        Ok(())
    }

    fn stop(&self, product: &str, slot: Slot) -> Result<(), RuntimeError> {
        let files = self.pid_files(product, slot);
        // Only processes berth can prove it started are signalled; a pid file naming
        // anything else is stale and simply removed. The recorded pid leads the process
        // group of the service (`sh -c` and what it runs): the whole group is signalled,
        // and the slot is stopped once no process of it is left, not when the shell
        // is gone (its child may still hold the port the next start needs).
        let groups: Vec<u32> = files
            .iter()
            .filter_map(|(_, _, pf)| pf.as_ref().filter(|pf| pf.owned()).map(|pf| pf.pid))
            .collect();
        for pgid in &groups {
            signal_group(*pgid, "TERM");
        }
        let wait = |within: Duration| {
            let deadline = Instant::now() + within;
            while groups.iter().any(|g| group_alive(*g)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        };
        wait(Duration::from_secs(10));
        let stubborn: Vec<u32> = groups.iter().copied().filter(|g| group_alive(*g)).collect();
        if !stubborn.is_empty() {
            for pgid in &stubborn {
                signal_group(*pgid, "KILL");
            }
            wait(Duration::from_secs(3));
        }
        for (_, path, _) in &files {
            let _ = std::fs::remove_file(path);
        }
        // No cgroup outlives its slot.
        if let Ok(h) = crate::cgroup::detect_at(&self.cgroup_fs) {
            for service in self
                .manifest
                .products
                .get(product)
                .into_iter()
                .flat_map(|p| p.services.keys())
            {
                let cg = crate::cgroup::Cgroup {
                    hierarchy: h.clone(),
                    name: crate::cgroup::Cgroup::name_for(
                        &self.root,
                        product,
                        slot.name(),
                        service,
                    ),
                };
                if let Err(e) = cg.remove() {
                    tracing::warn!("{product}.{service} in {slot}: {e}");
                }
            }
        }
        Ok(())
    }

    fn instances(&self, product: &str) -> Result<Vec<Instance>, RuntimeError> {
        let mut out = Vec::new();
        let Some(p) = self.manifest.products.get(product) else {
            return Ok(out);
        };
        for slot in [Slot::Blue, Slot::Green] {
            for (service, path, pf) in self.pid_files(product, slot) {
                let Some(pf) = pf else {
                    continue;
                };
                let started = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
                out.push(Instance {
                    alive: pf.owned(),
                    service: service.clone(),
                    slot,
                    version: pf.version,
                    id: pf.pid.to_string(),
                    started: started.or(Some(SystemTime::UNIX_EPOCH)),
                    port: slot_port(&self.manifest, &p.services[&service], slot),
                    node: None,
                    state: None,
                });
            }
        }
        Ok(out)
    }

    /// From the instance's cgroup; CPU in use from two readings 200 ms apart.
    fn usage(&self, product: &str, i: &Instance) -> Option<crate::ResourceUsage> {
        if !i.alive {
            return None;
        }
        let first = self.cgroup_usage(product, i.slot, &i.service)?;
        let t = Instant::now();
        std::thread::sleep(Duration::from_millis(200));
        let u = self.cgroup_usage(product, i.slot, &i.service)?;
        let cpus = (u.cpu_usec.saturating_sub(first.cpu_usec)) as f64
            / t.elapsed().as_micros().max(1) as f64;
        Some(crate::ResourceUsage {
            memory_bytes: Some(u.memory_bytes),
            memory_limit_bytes: u.memory_limit_bytes,
            cpus: Some((cpus * 1000.0).round() / 1000.0),
            cpus_limit: u.cpus_limit,
            background: Some(u.background),
            pids: Some(u.pids),
            pids_limit: u.pids_limit,
            oom_kills: Some(u.oom_kills),
        })
    }

    fn logs(&self, product: &str, slot: Slot, service: &str, lines: usize) -> String {
        let text = std::fs::read_to_string(self.dir(product, slot).join(format!("{service}.log")))
            .unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The slot's log file from `from`, then (with `follow`) what is appended to it,
    /// read every 100 ms. The file holds no times: `LogFrom::Since` is refused.
    fn log_stream(
        &self,
        product: &str,
        slot: Slot,
        service: &str,
        from: LogFrom,
        follow: bool,
    ) -> Result<LogStream, RuntimeError> {
        let path = self.dir(product, slot).join(format!("{service}.log"));
        let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let start = match from {
            LogFrom::Since(_) => {
                return Err(RuntimeError::Failed(
                    "the local runtime's log files record no times, so --since cannot select lines: use --tail N".into(),
                ));
            }
            LogFrom::Tail(n) => tail_offset(&path, n),
            LogFrom::Run => {
                let pid_file = self.dir(product, slot).join(format!("{service}.json"));
                match PidFile::read(&pid_file) {
                    Some(pf) => pf.log_from.unwrap_or(0).min(len),
                    // Nothing started there: only what is written from now on.
                    None => len,
                }
            }
        };
        let (tx, rx) = std::sync::mpsc::channel();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(!follow));
        let stopped = stop.clone();
        std::thread::spawn(move || follow_file(&path, start, &stopped, &tx));
        Ok(LogStream::new(rx, move || {
            stop.store(true, std::sync::atomic::Ordering::SeqCst)
        }))
    }

    /// `argv` in the version's checkout (the service's `workdir`) with the cleared
    /// environment of [`product_env`] for `slot`, on berth's own terminal.
    fn run_once(
        &self,
        product: &str,
        service: &str,
        slot: Slot,
        version: &str,
        argv: &[String],
        _tty: bool,
    ) -> Result<i32, RuntimeError> {
        let Some((program, args)) = argv.split_first() else {
            return Err(RuntimeError::Failed("no command to run".into()));
        };
        let cwd = self.workdir(product, service, version)?;
        let env = self.env(product, service, Some(slot), version)?;
        let mut c = Command::new(program);
        c.args(args).current_dir(&cwd).env_clear().envs(env.vars);
        tracing::debug!(target: "berth::cmd", "run in {product}.{service} ({slot}, {version}): {program}");
        let child = c.spawn().map_err(|e| {
            RuntimeError::Failed(format!(
                "could not run `{program}` in {product}.{service} ({}): {e}",
                cwd.display()
            ))
        })?;
        Ok(exit_code(wait_in_foreground(child)?))
    }

    /// Remove the checkouts of versions not in `keep` and not run by a live instance.
    fn prune(&self, product: &str, keep: &[String]) -> Result<Vec<String>, RuntimeError> {
        let dir = self.versions_dir(product);
        let running: Vec<String> = self
            .instances(product)?
            .into_iter()
            .filter(|i| i.alive)
            .map(|i| i.version)
            .collect();
        let mut removed = Vec::new();
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Ok(removed);
        };
        let mut names: Vec<String> = entries
            .flatten()
            .filter(|e| e.path().is_dir())
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .collect();
        names.sort();
        for name in names {
            // Leftovers of an interrupted build (the deploy lock is held: none is running).
            if name.starts_with('.') && name.ends_with(".partial") {
                let _ = std::fs::remove_dir_all(dir.join(&name));
                continue;
            }
            if !valid_version(&name) || keep.contains(&name) || running.contains(&name) {
                continue;
            }
            // The marker goes first: a half-removed checkout is never taken as built.
            let _ = std::fs::remove_file(self.ready_marker(product, &name));
            let path = dir.join(&name);
            std::fs::remove_dir_all(&path).map_err(io("remove", &path))?;
            removed.push(name);
        }
        Ok(removed)
    }
}

/// The offset of the last `n` lines of the file at `path` (0 when it has fewer),
/// read backwards from its end in blocks: a large log is not read whole.
fn tail_offset(path: &Path, n: usize) -> u64 {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else {
        return 0;
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    if n == 0 {
        return len;
    }
    const BLOCK: u64 = 64 * 1024;
    let mut end = len;
    let mut seen = 0;
    // A final line without its newline still counts as a line; a final newline ends
    // the last line rather than starting another.
    let mut skip_last_newline = true;
    while end > 0 {
        let start = end.saturating_sub(BLOCK);
        let mut buf = vec![0; (end - start) as usize];
        if f.seek(SeekFrom::Start(start)).is_err() || f.read_exact(&mut buf).is_err() {
            return 0;
        }
        for i in (0..buf.len()).rev() {
            if buf[i] != b'\n' {
                skip_last_newline = false;
                continue;
            }
            if std::mem::take(&mut skip_last_newline) {
                continue;
            }
            seen += 1;
            if seen == n {
                return start + i as u64 + 1;
            }
        }
        end = start;
    }
    0
}

/// Send the lines of `path` from `offset`, then what is appended, until `stop` is set
/// (one last read follows it, so nothing written before is lost). A file that shrank
/// was truncated: reading starts again at its beginning.
fn follow_file(
    path: &Path,
    mut offset: u64,
    stop: &std::sync::atomic::AtomicBool,
    tx: &std::sync::mpsc::Sender<LogLine>,
) {
    use std::io::{Read, Seek, SeekFrom};
    let mut partial: Vec<u8> = Vec::new();
    loop {
        let last = stop.load(std::sync::atomic::Ordering::SeqCst);
        if let Ok(mut f) = std::fs::File::open(path) {
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            if len < offset {
                offset = 0;
                partial.clear();
            }
            let mut buf = Vec::new();
            if f.seek(SeekFrom::Start(offset)).is_ok() && f.read_to_end(&mut buf).is_ok() {
                offset += buf.len() as u64;
                partial.extend_from_slice(&buf);
                while let Some(nl) = partial.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = partial.drain(..=nl).collect();
                    let text = String::from_utf8_lossy(&line[..line.len() - 1])
                        .trim_end_matches('\r')
                        .to_string();
                    if tx.send(LogLine::new(None, text)).is_err() {
                        return;
                    }
                }
            }
        }
        if last {
            if !partial.is_empty() {
                let text = String::from_utf8_lossy(&partial).into_owned();
                let _ = tx.send(LogLine::new(None, text));
            }
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Wait for a one-off command that shares berth's terminal (the binary keeps Ctrl-C
/// from ending berth first: the command decides what it means).
pub(crate) fn wait_in_foreground(
    mut child: std::process::Child,
) -> Result<std::process::ExitStatus, RuntimeError> {
    child
        .wait()
        .map_err(|e| RuntimeError::Failed(format!("could not wait for the command: {e}")))
}

/// A child's exit status as a shell reports it: its code, or 128 + the signal.
pub(crate) fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each service of a slot runs in a cgroup of its own with its limits (memory, CPU
    /// quota, processes) and its open-files limit; one killed by the kernel past its
    /// memory is started again by its shell; the slot's stop leaves no cgroup behind.
    /// Needs root and cgroup v2 or v1 controllers (it fails, not skips, without).
    #[test]
    fn a_slot_runs_in_cgroups_with_its_limits_restarts_after_an_oom_kill_and_leaves_nothing() {
        let h = crate::cgroup::detect().expect("cgroups (v2, or v1 memory/cpu/pids)");
        let root = std::env::temp_dir().join(format!("berth-cgroup-local-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let version = "abcd1234";
        std::fs::create_dir_all(root.join(".berth/versions/p").join(version)).unwrap();
        std::fs::write(
            root.join(".berth/versions/p")
                .join(format!("{version}.ready")),
            "",
        )
        .unwrap();
        let text = r#"[project]
name = "cgtest"
[products.p.services.idle]
command = "exec sleep 300"
limits = { cpus = 0.5, memory = "64MiB", pids = 50, nofile = 512 }
[products.p.services.hog]
command = "a=aaaaaaaaaaaaaaaa; while :; do a=\"$a$a\"; done"
limits = { memory = "16MiB" }
[products.p.services.batch]
command = "exec sleep 300"
limits = { cpus = 0.25, cpu_priority = "background" }
"#;
        let m = berth_manifest::parse_str("berth.toml", text)
            .unwrap()
            .manifest;
        let rt = LocalRuntime::new(m, root.clone());
        // Stopped (processes and cgroups) even when an assertion fails.
        struct StopOnDrop<'a>(&'a LocalRuntime);
        impl Drop for StopOnDrop<'_> {
            fn drop(&mut self) {
                let _ = self.0.stop("p", Slot::Blue);
            }
        }
        let _guard = StopOnDrop(&rt);
        // The idle group outlives its services: make the start write cpu.idle again.
        let cpu_root = match &h {
            crate::cgroup::Hierarchy::V2 { root } => root.clone(),
            crate::cgroup::Hierarchy::V1 { cpu, .. } => cpu.clone(),
        };
        let group_idle = cpu_root.join("berth-background/cpu.idle");
        if group_idle.exists() {
            std::fs::write(&group_idle, "0").unwrap();
        }
        rt.start("p", Slot::Blue, version).unwrap();
        let cg = |service: &str| crate::cgroup::Cgroup {
            hierarchy: h.clone(),
            name: crate::cgroup::Cgroup::name_for(&root, "p", "blue", service),
        };
        let pid = PidFile::read(&root.join(".berth/run/p/blue/idle.json"))
            .unwrap()
            .pid;
        let idle = cg("idle");
        let u = idle.usage().expect("usage of the idle service's cgroup");
        assert_eq!(u.memory_limit_bytes, Some(64 << 20), "{u:?}");
        assert_eq!(u.cpus_limit, Some(0.5), "{u:?}");
        assert_eq!(u.pids_limit, Some(50), "{u:?}");
        // The service's shell and what it runs are in it.
        let deadline = Instant::now() + Duration::from_secs(10);
        while idle.pids().len() < 2 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let pids = idle.pids();
        assert!(pids.contains(&pid) && pids.len() == 2, "{pid} in {pids:?}");
        for p in &pids {
            let limits = std::fs::read_to_string(format!("/proc/{p}/limits")).unwrap();
            let line = limits
                .lines()
                .find(|l| l.starts_with("Max open files"))
                .unwrap();
            assert_eq!(
                line.split_whitespace().collect::<Vec<_>>()[3..5],
                ["512", "512"],
                "{line}"
            );
        }
        // A background service: in the idle group at the hierarchy's root, with its
        // quota; the others are not.
        let batch = cg("batch");
        assert!(batch.background() && !idle.background());
        let dirs = batch.dirs();
        let cpu_dir = match &h {
            crate::cgroup::Hierarchy::V2 { .. } => &dirs[0],
            crate::cgroup::Hierarchy::V1 { .. } => &dirs[1],
        };
        let group = cpu_dir.parent().unwrap();
        assert_eq!(group.file_name().unwrap(), "berth-background");
        assert_eq!(
            std::fs::read_to_string(group.join("cpu.idle"))
                .unwrap()
                .trim(),
            "1",
            "{}",
            group.display()
        );
        let u = batch.usage().expect("usage of the batch service's cgroup");
        assert_eq!((u.cpus_limit, u.background), (Some(0.25), true), "{u:?}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while batch.pids().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            !batch.pids().is_empty(),
            "nothing joined {}",
            cpu_dir.display()
        );
        // The hog: killed for its memory, started again, and again.
        let hog = cg("hog");
        let log = root.join(".berth/run/p/blue/hog.log");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let kills = hog.usage().map_or(0, |u| u.oom_kills);
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let restarts = text.matches("starting it again").count();
            if kills >= 2 && restarts >= 2 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "kills {kills}, restarts {restarts}: {text}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let instances = rt.instances("p").unwrap();
        assert!(instances.iter().all(|i| i.alive), "{instances:?}");

        rt.stop("p", Slot::Blue).unwrap();
        for c in [&idle, &hog, &batch] {
            for d in c.dirs() {
                assert!(!d.exists(), "{} left behind", d.display());
            }
            assert!(!c.exists() && !c.background(), "{c:?} left behind");
        }
        assert!(!group_alive(pid));
        let _ = std::fs::remove_dir_all(&root);
    }

    /// Where no cgroup can be made: limits written in berth.toml refuse to start
    /// (saying why and what to do); `enforce = "best-effort"` starts without them.
    #[test]
    fn limits_the_host_cannot_apply_refuse_to_start_unless_best_effort() {
        let root = std::env::temp_dir().join(format!("berth-cgroup-none-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let version = "abcd1234";
        std::fs::create_dir_all(root.join(".berth/versions/p").join(version)).unwrap();
        std::fs::create_dir_all(root.join("no-cgroups")).unwrap();
        std::fs::write(
            root.join(".berth/versions/p")
                .join(format!("{version}.ready")),
            "",
        )
        .unwrap();
        let run = |head: &str| {
            let text = format!(
                "[project]\nname = \"cgtest\"\n{head}[products.p.services.web]\ncommand = \"exec sleep 300\"\nlimits = {{ memory = \"64MiB\" }}\n"
            );
            let m = berth_manifest::parse_str("berth.toml", &text)
                .unwrap()
                .manifest;
            let mut rt = LocalRuntime::new(m, root.clone());
            rt.cgroup_fs = root.join("no-cgroups");
            let r = rt.start("p", Slot::Blue, version);
            let alive = rt.instances("p").unwrap().iter().any(|i| i.alive);
            rt.stop("p", Slot::Blue).unwrap();
            (r, alive)
        };
        let (r, alive) = run("");
        let e = r.unwrap_err().to_string();
        assert!(
            e.contains("cannot apply the limits of p.web on this host")
                && e.contains("enforce = \"best-effort\""),
            "{e}"
        );
        assert!(!alive);
        let (r, alive) = run("[limits]\nenforce = \"best-effort\"\n");
        r.unwrap();
        assert!(alive);
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn own_process_is_owned_and_a_wrong_start_time_is_not() {
        let mut child = Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .unwrap();
        let pid = child.id();
        let s = proc_stat(pid).unwrap();
        assert!(owned_alive(pid, s.start_ticks));
        assert!(!owned_alive(pid, s.start_ticks + 1));
        // This test's own process leads no group of its own here: not "owned".
        let me = std::process::id();
        let mine = proc_stat(me).unwrap();
        assert_eq!(mine.pgrp == me, owned_alive(me, mine.start_ticks));
        let _ = child.kill();
        let _ = child.wait();
        assert!(!owned_alive(pid, s.start_ticks));
        assert!(!owned_alive(0, 0));
    }

    #[test]
    fn tail_offsets_count_lines_from_the_end() {
        let dir = std::env::temp_dir().join(format!("berth-tail-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("a.log");
        std::fs::write(&f, "one\ntwo\nthree\n").unwrap();
        assert_eq!(tail_offset(&f, 1), 8);
        assert_eq!(tail_offset(&f, 2), 4);
        assert_eq!(tail_offset(&f, 5), 0);
        assert_eq!(tail_offset(&f, 0), 14);
        std::fs::write(&f, "one\ntwo").unwrap();
        assert_eq!(tail_offset(&f, 1), 4);
        assert_eq!(tail_offset(&dir.join("missing"), 3), 0);
        // Across block boundaries: the same as counting from the front.
        let text: String = (0..50_000).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&f, &text).unwrap();
        for n in [1, 3, 9_000, 49_999, 50_000, 60_000] {
            let from = tail_offset(&f, n) as usize;
            assert_eq!(text[from..].lines().count(), n.min(50_000), "{n}");
            assert!(from == 0 || text.as_bytes()[from - 1] == b'\n', "{n}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn workdirs_stay_inside() {
        assert!(relative_inside("apps/server").is_some());
        assert!(relative_inside("./apps").is_some());
        assert!(relative_inside("../x").is_none());
        assert!(relative_inside("/etc").is_none());
        assert!(relative_inside("apps/../../x").is_none());
    }
}
