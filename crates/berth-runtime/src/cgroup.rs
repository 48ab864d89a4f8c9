//! Resource limits of the local runtime: a cgroup berth creates per service of a
//! product slot (memory, CPU quota, process count), on cgroup v2 (one hierarchy with
//! `cgroup.controllers`) or v1 (a hierarchy per controller under
//! `/sys/fs/cgroup/<controller>`). The service's shell joins it before it runs the
//! command, so everything the service starts is inside; the slot's stop removes it.

use std::path::{Path, PathBuf};

use berth_manifest::EffectiveLimits;

/// The directory every berth cgroup lives in, under each hierarchy's root.
const BASE: &str = "berth";
/// Where the cgroups of `cpu_priority = "background"` services live instead: an idle
/// group (`cpu.idle` 1) at the root of the hierarchy. It must sit at the root: the
/// kernel compares scheduling entities where two cgroups meet, and nginx, the
/// databases and every other process on the host are at the root, next to `berth`
/// as a whole. A non-idle task that wakes on a core this group runs on preempts it at
/// once (an idle entity yields on wakeup, not on the next tick), and the scheduler
/// counts such a core as free when it places a waking task. (One already queued may
/// still wait up to a tick: the scheduler picks by lag and deadline, not by class.)
const BACKGROUND: &str = "berth-background";
/// Where cgroups can be made on this host.
#[derive(Debug, Clone, PartialEq)]
pub enum Hierarchy {
    /// cgroup v2 mounted at `root` with the memory, cpu and pids controllers.
    V2 { root: PathBuf },
    /// cgroup v1 with one mount per controller.
    V1 {
        memory: PathBuf,
        cpu: PathBuf,
        pids: PathBuf,
        /// The cpuacct hierarchy when it is not mounted with cpu (`cpu,cpuacct`): where
        /// the CPU time used is counted.
        cpuacct: Option<PathBuf>,
    },
}

/// The host's cgroup hierarchy, or why berth cannot limit processes here.
pub fn detect() -> Result<Hierarchy, String> {
    detect_at(Path::new(CGROUP_FS))
}

/// Where cgroup file systems are mounted.
pub const CGROUP_FS: &str = "/sys/fs/cgroup";

/// The hierarchy under `fs` (`/sys/fs/cgroup` on a real host).
pub fn detect_at(fs: &Path) -> Result<Hierarchy, String> {
    let controllers = std::fs::read_to_string(fs.join("cgroup.controllers"));
    if let Ok(c) = controllers {
        let have: Vec<&str> = c.split_whitespace().collect();
        let missing: Vec<&str> = ["memory", "cpu", "pids"]
            .into_iter()
            .filter(|w| !have.contains(w))
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "cgroup v2 at {} does not offer the {} controller(s)",
                fs.display(),
                missing.join(", ")
            ));
        }
        return Ok(Hierarchy::V2 {
            root: fs.to_path_buf(),
        });
    }
    // (The root of a v1 hierarchy has no limit files of its own: its children do.)
    let v1 = |c: &str, probe: &str| {
        let dir = fs.join(c);
        (dir.join("cgroup.procs").exists() && dir.join(probe).exists()).then_some(dir)
    };
    match (
        v1("memory", "memory.limit_in_bytes"),
        v1("cpu", "cpu.cfs_period_us"),
        v1("pids", "cgroup.procs"),
    ) {
        (Some(memory), Some(cpu), Some(pids)) => {
            let cpuacct = (!cpu.join("cpuacct.usage").exists())
                .then(|| v1("cpuacct", "cpuacct.usage"))
                .flatten();
            Ok(Hierarchy::V1 {
                memory,
                cpu,
                pids,
                cpuacct,
            })
        }
        _ => Err(format!(
            "no cgroup v2 with controllers at {} and no cgroup v1 memory, cpu and pids hierarchies under it",
            fs.display()
        )),
    }
}

/// One service's cgroup: a directory per hierarchy (one on v2, three on v1).
#[derive(Debug, Clone, PartialEq)]
pub struct Cgroup {
    pub hierarchy: Hierarchy,
    pub name: String,
}

fn write(path: &Path, value: &str) -> Result<(), String> {
    std::fs::write(path, value)
        .map_err(|e| format!("could not write {value:?} to {}: {e}", path.display()))
}

fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// `key N` from a flat-keyed cgroup file (memory.events, memory.oom_control, cpu.stat).
fn keyed(path: &Path, key: &str) -> Option<u64> {
    std::fs::read_to_string(path)
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
}

/// What a cgroup reads now, against its limits.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Usage {
    pub memory_bytes: u64,
    pub memory_limit_bytes: Option<u64>,
    /// CPU time used since the cgroup was made, in microseconds.
    pub cpu_usec: u64,
    /// The CPU quota as a number of CPUs.
    pub cpus_limit: Option<f64>,
    /// Made in the idle group (`cpu_priority = "background"`).
    pub background: bool,
    pub pids: u64,
    pub pids_limit: Option<u64>,
    /// Processes the kernel killed for the memory limit.
    pub oom_kills: u64,
}

impl Cgroup {
    /// The cgroup name of `service` of `product` in `slot` for the site at `root`
    /// (several sites on one host never share one).
    pub fn name_for(root: &Path, product: &str, slot: &str, service: &str) -> String {
        // FNV-1a of the site's root: short, stable, no dependency.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in root.as_os_str().as_encoded_bytes() {
            h = (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
        }
        format!("{product}-{slot}-{service}-{:08x}", h as u32)
    }

    /// Remove every cgroup of the site at `root` (its processes gone): for test
    /// fixtures that kill a site's processes without the runtime's stop.
    pub fn remove_site(fs: &Path, root: &Path) {
        let Ok(h) = detect_at(fs) else { return };
        let suffix = Self::name_for(root, "", "", "");
        let suffix = suffix.trim_start_matches('-');
        let any = Self {
            hierarchy: h.clone(),
            name: String::new(),
        };
        let bases: Vec<PathBuf> = [BASE, BACKGROUND]
            .into_iter()
            .flat_map(|b| any.dirs_in(b))
            .collect();
        let mut names: Vec<String> = bases
            .iter()
            .flat_map(|b| std::fs::read_dir(b).into_iter().flatten().flatten())
            .filter(|e| e.path().is_dir())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.ends_with(&format!("-{suffix}")))
            .collect();
        names.sort();
        names.dedup();
        for name in names {
            let _ = Self {
                hierarchy: h.clone(),
                name,
            }
            .remove();
        }
    }

    /// The hierarchies' roots (one on v2; memory, cpu, pids and a separate cpuacct
    /// on v1).
    fn roots(&self) -> Vec<&Path> {
        match &self.hierarchy {
            Hierarchy::V2 { root } => vec![root.as_path()],
            Hierarchy::V1 {
                memory,
                cpu,
                pids,
                cpuacct,
            } => [Some(memory), Some(cpu), Some(pids), cpuacct.as_ref()]
                .into_iter()
                .flatten()
                .map(PathBuf::as_path)
                .collect(),
        }
    }

    /// The directories of this cgroup (one per hierarchy) under `base`.
    fn dirs_in(&self, base: &str) -> Vec<PathBuf> {
        self.roots()
            .into_iter()
            .map(|r| r.join(base).join(&self.name))
            .collect()
    }

    /// Whether the cgroup is a `background` one (made in the root-level idle group).
    pub fn background(&self) -> bool {
        self.dirs_in(BACKGROUND).iter().any(|d| d.exists())
    }

    /// The directories of this cgroup (one per hierarchy), wherever it was made.
    pub fn dirs(&self) -> Vec<PathBuf> {
        self.dirs_in(Self::base(self.background()))
    }

    /// Where a cgroup of that priority lives.
    fn base(background: bool) -> &'static str {
        if background { BACKGROUND } else { BASE }
    }

    /// Make the cgroup (or take the one a crashed run left) and write its limits.
    pub fn create(hierarchy: &Hierarchy, name: &str, l: &EffectiveLimits) -> Result<Self, String> {
        let cg = Self {
            hierarchy: hierarchy.clone(),
            name: name.to_string(),
        };
        let mkdir = |d: &Path| {
            std::fs::create_dir_all(d).map_err(|e| format!("could not create {}: {e}", d.display()))
        };
        let (quota, period) = l.cfs();
        let (shares, weight) = (l.cpu_shares(), l.cpu_weight());
        let background = l.cpu_priority == berth_manifest::CpuPriority::Background;
        let base = Self::base(background);
        // A service whose priority changed since its slot last ran: its old cgroup
        // (empty: the slot was stopped) goes, so one place holds it. A process left in
        // it (one that escaped its slot's stop) would keep the service in the wrong
        // place: refuse.
        cg.remove_in(Self::base(!background)).map_err(|e| {
            format!("{e}: a process outlived its slot there; stop it, then deploy again")
        })?;
        // The background group is idle: its members run on CPU time nobody else wants.
        // A kernel without cpu.idle (before Linux 5.15) gets the lowest weight instead.
        let idle = |dir: &Path, weight: (&str, u64)| {
            let f = dir.join("cpu.idle");
            if f.exists() {
                return write(&f, "1");
            }
            tracing::warn!(
                "{} has no cpu.idle (Linux 5.15 or later): background services get the lowest CPU weight instead",
                dir.display()
            );
            write(&dir.join(weight.0), &weight.1.to_string())
        };
        match hierarchy {
            Hierarchy::V2 { root } => {
                let enable = "+memory +cpu +pids";
                // The root may offer controllers to its children already (systemd does).
                let subtree = root.join("cgroup.subtree_control");
                let on = std::fs::read_to_string(&subtree).unwrap_or_default();
                if !["memory", "cpu", "pids"]
                    .iter()
                    .all(|c| on.split_whitespace().any(|w| w == *c))
                {
                    write(&subtree, enable)?;
                }
                let base = root.join(base);
                mkdir(&base)?;
                write(&base.join("cgroup.subtree_control"), enable)?;
                if background {
                    idle(
                        &base,
                        ("cpu.weight", berth_manifest::limits::LOWEST_CPU_WEIGHT),
                    )?;
                }
                let dir = base.join(name);
                mkdir(&dir)?;
                write(&dir.join("memory.max"), &l.memory.to_string())?;
                // Past its memory the service is killed, not pushed into swap.
                let swap = dir.join("memory.swap.max");
                if swap.exists() {
                    write(&swap, "0")?;
                }
                write(&dir.join("cpu.max"), &format!("{quota} {period}"))?;
                write(&dir.join("cpu.weight"), &weight.to_string())?;
                write(&dir.join("pids.max"), &l.pids.to_string())?;
            }
            Hierarchy::V1 { .. } => {
                let dirs = cg.dirs_in(base);
                for d in &dirs {
                    mkdir(d)?;
                }
                let (mem, cpu, pids) = (&dirs[0], &dirs[1], &dirs[2]);
                // (Background services share the idle group's time by their weights.)
                if background {
                    idle(
                        cpu.parent().unwrap_or(cpu),
                        ("cpu.shares", berth_manifest::limits::LOWEST_CPU_SHARES),
                    )?;
                }
                // memsw (memory + swap) may only be set at or above the memory limit:
                // lift it first when it is lower, then set both to the limit.
                let memsw = mem.join("memory.memsw.limit_in_bytes");
                if memsw.exists() {
                    let _ = write(&memsw, "-1");
                }
                write(&mem.join("memory.limit_in_bytes"), &l.memory.to_string())?;
                if memsw.exists() {
                    write(&memsw, &l.memory.to_string())?;
                }
                write(&cpu.join("cpu.cfs_period_us"), &period.to_string())?;
                write(&cpu.join("cpu.cfs_quota_us"), &quota.to_string())?;
                write(&cpu.join("cpu.shares"), &shares.to_string())?;
                write(&pids.join("pids.max"), &l.pids.to_string())?;
            }
        }
        Ok(cg)
    }

    /// The files a process writes its pid into to join this cgroup.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs()
            .into_iter()
            .map(|d| d.join("cgroup.procs"))
            .collect()
    }

    /// The pids in the cgroup now.
    pub fn pids(&self) -> Vec<u32> {
        let first = self.procs_files().into_iter().next();
        first
            .and_then(|f| std::fs::read_to_string(f).ok())
            .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }

    pub fn exists(&self) -> bool {
        self.dirs().iter().any(|d| d.exists())
    }

    /// Remove the cgroup once no process is left in it (a few tries: the kernel
    /// frees a cgroup a moment after its last process is reaped).
    pub fn remove(&self) -> Result<(), String> {
        // Both places, whatever the first says.
        match (self.remove_in(BASE), self.remove_in(BACKGROUND)) {
            (Ok(()), Ok(())) => Ok(()),
            (Err(a), Err(b)) => Err(format!("{a}; {b}")),
            (Err(e), _) | (_, Err(e)) => Err(e),
        }
    }

    fn remove_in(&self, base: &str) -> Result<(), String> {
        for d in self.dirs_in(base) {
            if !d.exists() {
                continue;
            }
            let mut last = None;
            for _ in 0..50 {
                match std::fs::remove_dir(&d) {
                    Ok(()) => {
                        last = None;
                        break;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        last = None;
                        break;
                    }
                    Err(e) => {
                        last = Some(e);
                        std::thread::sleep(std::time::Duration::from_millis(20));
                    }
                }
            }
            if let Some(e) = last {
                return Err(format!("could not remove the cgroup {}: {e}", d.display()));
            }
        }
        Ok(())
    }

    /// Usage against the limits, as the kernel counts them.
    pub fn usage(&self) -> Option<Usage> {
        let background = self.background();
        let dirs = self.dirs_in(Self::base(background));
        match &self.hierarchy {
            Hierarchy::V2 { .. } => {
                let d = &dirs[0];
                let max = |f: &str| read_u64(&d.join(f));
                let cpus = std::fs::read_to_string(d.join("cpu.max"))
                    .ok()
                    .and_then(|t| {
                        let mut w = t.split_whitespace();
                        let q: f64 = w.next()?.parse().ok()?;
                        let p: f64 = w.next()?.parse().ok()?;
                        Some(q / p)
                    });
                Some(Usage {
                    memory_bytes: read_u64(&d.join("memory.current"))?,
                    memory_limit_bytes: max("memory.max"),
                    cpu_usec: keyed(&d.join("cpu.stat"), "usage_usec").unwrap_or(0),
                    cpus_limit: cpus,
                    background,
                    pids: read_u64(&d.join("pids.current")).unwrap_or(0),
                    pids_limit: max("pids.max"),
                    oom_kills: keyed(&d.join("memory.events"), "oom_kill").unwrap_or(0),
                })
            }
            Hierarchy::V1 { .. } => {
                let (mem, cpu, pids) = (&dirs[0], &dirs[1], &dirs[2]);
                let quota = std::fs::read_to_string(cpu.join("cpu.cfs_quota_us"))
                    .ok()
                    .and_then(|t| t.trim().parse::<i64>().ok());
                let period = read_u64(&cpu.join("cpu.cfs_period_us"));
                // cpuacct shares the cpu hierarchy on most hosts (`cpu,cpuacct`), else
                // its own (the fourth directory).
                let cpuacct = dirs.get(3).unwrap_or(cpu).join("cpuacct.usage");
                let cpuacct = read_u64(&cpuacct);
                Some(Usage {
                    memory_bytes: read_u64(&mem.join("memory.usage_in_bytes"))?,
                    memory_limit_bytes: read_u64(&mem.join("memory.limit_in_bytes")),
                    cpu_usec: cpuacct.map(|ns| ns / 1000).unwrap_or(0),
                    cpus_limit: match (quota, period) {
                        (Some(q), Some(p)) if q > 0 && p > 0 => Some(q as f64 / p as f64),
                        _ => None,
                    },
                    background,
                    pids: read_u64(&pids.join("pids.current")).unwrap_or(0),
                    pids_limit: read_u64(&pids.join("pids.max")),
                    oom_kills: keyed(&mem.join("memory.oom_control"), "oom_kill").unwrap_or(0),
                })
            }
        }
    }
}

/// The shell lines a service's `sh` runs before its command: join the cgroup (when
/// there is one), set its open-files limit, then run the command and start it again
/// when the kernel kills it (SIGKILL: the memory limit); any other exit ends the
/// service with that status.
pub fn wrap_command(
    cg: Option<&Cgroup>,
    nofile: u64,
    strict: bool,
    who: &str,
    command: &str,
) -> String {
    let q = berth_render::shell_quote;
    let mut s = String::new();
    if let Some(cg) = cg {
        for f in cg.procs_files() {
            let f = q(&f.display().to_string());
            s.push_str(&format!(
                "echo $$ > {f} || {{ echo \"berth: {who} could not join its cgroup ({f})\" >&2; exit 125; }}\n"
            ));
        }
    }
    let on_fail = if strict { "exit 125" } else { ":" };
    s.push_str(&format!(
        "ulimit -n {nofile} || {{ echo \"berth: {who} could not set its open-files limit to {nofile}\" >&2; {on_fail}; }}\n"
    ));
    s.push_str(&format!(
        "while :; do sh -c {cmd}; s=$?; [ \"$s\" -eq 137 ] || exit \"$s\"; echo \"berth: {who} was killed (SIGKILL, e.g. past its memory limit); starting it again\" >&2; done\n",
        cmd = q(command)
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_v1_v2_or_says_why_not() {
        let d = tempfile_dir();
        assert!(detect_at(&d).unwrap_err().contains("no cgroup v2"));
        std::fs::write(d.join("cgroup.controllers"), "cpuset cpu io memory pids\n").unwrap();
        assert_eq!(detect_at(&d).unwrap(), Hierarchy::V2 { root: d.clone() });
        std::fs::write(d.join("cgroup.controllers"), "cpuset cpu io\n").unwrap();
        assert!(detect_at(&d).unwrap_err().contains("memory, pids"));
        std::fs::remove_file(d.join("cgroup.controllers")).unwrap();
        for (c, f) in [
            ("memory", "memory.limit_in_bytes"),
            ("cpu", "cpu.cfs_period_us"),
            ("pids", "cgroup.procs"),
        ] {
            std::fs::create_dir_all(d.join(c)).unwrap();
            std::fs::write(d.join(c).join(f), "").unwrap();
            std::fs::write(d.join(c).join("cgroup.procs"), "").unwrap();
        }
        assert!(matches!(detect_at(&d).unwrap(), Hierarchy::V1 { .. }));
        let _ = std::fs::remove_dir_all(&d);
    }

    /// A service whose priority changes moves between `berth` and the idle group; a
    /// process left in its old cgroup stops the move (it would keep the service in the
    /// wrong place), and `remove` clears both places. Real cgroups: needs root and
    /// cgroup v2 or v1 controllers (fails, not skips, without).
    #[test]
    fn a_cgroup_moves_with_its_priority_and_a_leftover_process_stops_the_move() {
        let h = detect().expect("cgroups (v2, or v1 memory/cpu/pids)");
        let name = format!("cgtest-move-{}", std::process::id());
        let l = |cpu_priority| EffectiveLimits {
            cpus: 0.5,
            memory: 64 << 20,
            cpu_priority,
            ..Default::default()
        };
        use berth_manifest::CpuPriority::{Background, Normal};
        let cg = Cgroup::create(&h, &name, &l(Background)).unwrap();
        assert!(cg.background() && cg.dirs_in(BASE).iter().all(|d| !d.exists()));
        let cg = Cgroup::create(&h, &name, &l(Normal)).unwrap();
        assert!(!cg.background() && cg.dirs_in(BASE).iter().all(|d| d.exists()));
        // A process left in the normal one.
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        for f in cg.procs_files() {
            std::fs::write(&f, child.id().to_string()).unwrap();
        }
        let err = Cgroup::create(&h, &name, &l(Background)).unwrap_err();
        assert!(err.contains("a process outlived its slot"), "{err}");
        assert!(cg.dirs_in(BACKGROUND).iter().all(|d| !d.exists()));
        // Both places hold one (a crash mid-move): remove() reports the busy one and
        // still clears the other.
        for d in cg.dirs_in(BACKGROUND) {
            std::fs::create_dir_all(d).unwrap();
        }
        assert!(cg.remove().is_err());
        assert!(cg.dirs_in(BACKGROUND).iter().all(|d| !d.exists()));
        child.kill().unwrap();
        child.wait().unwrap();
        cg.remove().unwrap();
        assert!(!cg.exists() && !cg.background());
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "berth-cgroup-detect-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
