//! Resource limits: `[limits]` (defaults for every service), `limits` on a product
//! (each of its services) and on a service (wins), resolved key by key by
//! [`effective_limits`]. Every value is checked while berth.toml is read, so a bad
//! one is a located error (`berth.toml:line:column`, exit 2) and a [`Manifest`] never
//! holds one.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::duration::HumanDuration;
use crate::model::Manifest;

/// CPUs when nothing sets `cpus`.
pub const DEFAULT_CPUS: f64 = 1.0;
/// Memory when nothing sets `memory`: 1 GiB.
pub const DEFAULT_MEMORY: u64 = 1 << 30;
/// Processes (and threads) when nothing sets `pids`.
pub const DEFAULT_PIDS: u64 = 1024;
/// Open files when nothing sets `nofile`.
pub const DEFAULT_NOFILE: u64 = 4096;
/// Connections of a product's PostgreSQL role when nothing sets `db_connections`.
pub const DEFAULT_DB_CONNECTIONS: u64 = 20;
/// A product's PostgreSQL `statement_timeout` when nothing sets `statement_timeout`.
pub const DEFAULT_STATEMENT_TIMEOUT: HumanDuration = HumanDuration::from_secs(60);
/// Connections `berth provision` keeps free for administrators beyond the server's own
/// `superuser_reserved_connections`, when it adds up the products' connection limits.
pub const ADMIN_RESERVE: u64 = 5;

/// `[limits]`, `[products.<name>.limits]`, `[products.<name>.services.<service>.limits]`:
/// each key is optional; a service's own value wins over its product's, which wins over
/// `[limits]`, which wins over the default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// CPUs, a number > 0 (`0.5` is half a core) [default: 1.0]: a CFS quota over a
    /// 10 ms period with a CPU weight in proportion (swarm: Docker's 100 ms period).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<Cpus>,
    /// Memory, a whole number with a unit: `B`, `KiB`, `MiB`, `GiB`, `TiB` (or `kB`, `MB`,
    /// `GB`, `TB`), e.g. `"512MiB"` [default: "1GiB"].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Memory>,
    /// Processes and threads, an integer > 0 [default: 1024].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<Count>,
    /// Open files, an integer > 0 [default: 4096].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nofile: Option<Count>,
    /// Who gets a core first when several want it [default: `normal`]. `background`
    /// is for batch-like work that must never delay a neighbour's requests (reports,
    /// imports, media): the local runtime puts the service in an idle cgroup (as
    /// systemd's `CPUWeight=idle`), so another process that wakes on its core takes
    /// the core at once, and the service runs on CPU time nobody else wants: a busy
    /// host can starve it. Compose and Kubernetes give it the lowest CPU weight
    /// (`cpu_shares` 2, a `1m` CPU request), which yields under contention but is not
    /// an idle class; swarm services have no CPU weight, so swarm refuses it. `cpus`
    /// stays its ceiling either way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_priority: Option<CpuPriority>,
    /// Connections the product's PostgreSQL role may hold at once (its role's
    /// `CONNECTION LIMIT`), an integer > 0; in `[limits]` or a product's `limits` only
    /// [default: 20].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db_connections: Option<Count>,
    /// How long one statement of the product's PostgreSQL role may run before the
    /// server cancels it (the role's `statement_timeout`), e.g. `"30s"`; at least 1ms;
    /// in `[limits]` or a product's `limits` only [default: "1m"].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statement_timeout: Option<HumanDuration>,
    /// What the local runtime does where the host cannot apply the limits (no cgroup v2
    /// or v1 memory/cpu/pids controllers berth may write, e.g. not root), and the swarm
    /// runtime where the manager's engine cannot limit a service's pids and open files
    /// (older than Docker Engine 20.10): `strict` refuses to start the service,
    /// `best-effort` starts it with a warning (on swarm: cpus and memory only); in
    /// `[limits]` only [default: `strict` when berth.toml sets any limit, else
    /// `best-effort`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enforce: Option<Enforce>,
}

/// `cpu_priority`: a service's claim on a core next to its neighbours.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum CpuPriority {
    /// A CPU weight in proportion to its `cpus`, like every process on the host.
    #[default]
    Normal,
    /// Only CPU time no normal process wants (local: an idle cgroup; containers: the
    /// lowest CPU weight).
    Background,
}

/// `[limits] enforce`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Enforce {
    /// A service whose limits the host cannot apply does not start.
    Strict,
    /// It starts without them, with a warning.
    BestEffort,
}

/// Whether the local runtime must refuse to run without the limits: `[limits] enforce`,
/// else strict exactly when berth.toml writes a limit anywhere (the defaults alone do
/// not stop a host without cgroups).
pub fn enforce_strict(m: &Manifest) -> bool {
    match m.limits.as_ref().and_then(|l| l.enforce) {
        Some(e) => e == Enforce::Strict,
        None => {
            let set = |l: &Option<Limits>| {
                l.as_ref().is_some_and(|l| {
                    l.cpus.is_some()
                        || l.memory.is_some()
                        || l.pids.is_some()
                        || l.nofile.is_some()
                        || l.cpu_priority.is_some()
                })
            };
            set(&m.limits)
                || m.products
                    .values()
                    .any(|p| set(&p.limits) || p.services.values().any(|s| set(&s.limits)))
        }
    }
}

impl Limits {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// The limits one service runs with, every key resolved.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EffectiveLimits {
    /// CPUs (> 0).
    pub cpus: f64,
    /// Memory in bytes.
    pub memory: u64,
    /// Processes and threads.
    pub pids: u64,
    /// Open files.
    pub nofile: u64,
    /// Its claim on a core next to its neighbours.
    pub cpu_priority: CpuPriority,
}

/// CFS period of a CPU limit: 10 ms (the kernel's and Docker's default is 100 ms). A
/// service burning several threads spends its quota in one burst on every core at
/// once, and the other products' requests wait behind that burst: with 100 ms a
/// half-CPU service holds both cores of a 2-core machine for 25 ms per period; with
/// 10 ms, for 2.5 ms.
pub const CPU_PERIOD_US: u64 = 10_000;
/// The lowest CPU weight on cgroup v1's and Docker's scale (`cpu.shares`).
pub const LOWEST_CPU_SHARES: u64 = 2;
/// The lowest CPU weight on cgroup v2's scale (`cpu.weight`).
pub const LOWEST_CPU_WEIGHT: u64 = 1;
/// The kernel's smallest CFS quota (1 ms); a limit below a tenth of a CPU gets a longer
/// period instead, so its quota never rounds up.
const MIN_QUOTA_US: u64 = 1_000;

impl EffectiveLimits {
    /// The CFS quota and period (µs) of the CPU limit, as the local runtime's cgroup
    /// and a compose container (`cpu_quota`, `cpu_period`) get them.
    pub fn cfs(&self) -> (u64, u64) {
        let cpus = self.cpus;
        let mut period = CPU_PERIOD_US;
        while cpus * (period as f64) < MIN_QUOTA_US as f64 && period < 1_000_000 {
            period *= 10;
        }
        let quota = ((cpus * period as f64).round() as u64).max(MIN_QUOTA_US);
        (quota, period)
    }

    /// The CPU weight, proportional to the CPU limit, next to a default of 1024
    /// (cgroup v1 `cpu.shares`, Docker's `cpu_shares`): a half-CPU service yields to a
    /// one-CPU neighbour when both want the same core.
    pub fn cpu_shares(&self) -> u64 {
        ((1024.0 * self.cpus).round() as u64).clamp(LOWEST_CPU_SHARES, 262_144)
    }

    /// The weight a container gets: [`Self::cpu_shares`], or the lowest Docker takes
    /// ([`LOWEST_CPU_SHARES`]) for a `background` service (containers have no idle
    /// class).
    pub fn container_cpu_shares(&self) -> u64 {
        match self.cpu_priority {
            CpuPriority::Normal => self.cpu_shares(),
            CpuPriority::Background => LOWEST_CPU_SHARES,
        }
    }

    /// The same weight on cgroup v2's scale (`cpu.weight`, default 100, 1..=10000).
    pub fn cpu_weight(&self) -> u64 {
        ((100.0 * self.cpus).round() as u64).clamp(LOWEST_CPU_WEIGHT, 10_000)
    }
}

impl Default for EffectiveLimits {
    fn default() -> Self {
        Self {
            cpus: DEFAULT_CPUS,
            memory: DEFAULT_MEMORY,
            pids: DEFAULT_PIDS,
            nofile: DEFAULT_NOFILE,
            cpu_priority: CpuPriority::Normal,
        }
    }
}

/// The limits of `service` of `product`: per key, the service's own value, else its
/// product's, else `[limits]`, else the default. A product or service that is not in
/// the manifest contributes nothing (so `effective_limits(m, p, "")` is what the
/// product's services get unless they set their own).
pub fn effective_limits(m: &Manifest, product: &str, service: &str) -> EffectiveLimits {
    let p = m.products.get(product);
    let layers: [Option<&Limits>; 3] = [
        p.and_then(|p| p.services.get(service))
            .and_then(|s| s.limits.as_ref()),
        p.and_then(|p| p.limits.as_ref()),
        m.limits.as_ref(),
    ];
    let pick = |f: &dyn Fn(&Limits) -> Option<u64>, default: u64| {
        layers
            .iter()
            .flatten()
            .find_map(|l| f(l))
            .unwrap_or(default)
    };
    EffectiveLimits {
        cpus: layers
            .iter()
            .flatten()
            .find_map(|l| l.cpus.map(|c| c.0))
            .unwrap_or(DEFAULT_CPUS),
        memory: pick(&|l| l.memory.as_ref().map(|v| v.bytes), DEFAULT_MEMORY),
        pids: pick(&|l| l.pids.map(|v| v.0), DEFAULT_PIDS),
        nofile: pick(&|l| l.nofile.map(|v| v.0), DEFAULT_NOFILE),
        cpu_priority: layers
            .iter()
            .flatten()
            .find_map(|l| l.cpu_priority)
            .unwrap_or_default(),
    }
}

/// The limits of a product's PostgreSQL role, every key resolved.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DbLimits {
    /// The role's `CONNECTION LIMIT`.
    pub connections: u64,
    /// The role's `statement_timeout`.
    pub statement_timeout: std::time::Duration,
}

/// The PostgreSQL limits of `product`'s role: its own `limits`, else `[limits]`, else
/// the defaults (a service's `limits` cannot set them: validation refuses that).
pub fn effective_db_limits(m: &Manifest, product: &str) -> DbLimits {
    let layers: [Option<&Limits>; 2] = [
        m.products.get(product).and_then(|p| p.limits.as_ref()),
        m.limits.as_ref(),
    ];
    let layers = || layers.iter().flatten();
    DbLimits {
        connections: layers()
            .find_map(|l| l.db_connections.map(|c| c.0))
            .unwrap_or(DEFAULT_DB_CONNECTIONS),
        statement_timeout: layers()
            .find_map(|l| l.statement_timeout.map(|t| t.0))
            .unwrap_or(DEFAULT_STATEMENT_TIMEOUT.0),
    }
}

/// A number of CPUs, finite and > 0.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct Cpus(pub f64);

impl Serialize for Cpus {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(self.0)
    }
}

impl<'de> Deserialize<'de> for Cpus {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Cpus;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number of CPUs > 0, e.g. 0.5 or 2")
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Cpus, E> {
                if v.is_finite() && v >= 0.001 {
                    Ok(Cpus(v))
                } else {
                    Err(E::custom(format!(
                        "cpus must be a number of CPUs > 0 (at least 0.001), e.g. 0.5 or 2; got {v}"
                    )))
                }
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Cpus, E> {
                self.visit_f64(v as f64)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Cpus, E> {
                self.visit_f64(v as f64)
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for Cpus {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Cpus".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "number",
            "description": "A number of CPUs > 0, e.g. 0.5 (half a core) or 2.",
            "minimum": 0.001,
            "examples": [0.5]
        })
    }
}

/// An integer > 0 (a count of processes or open files).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Count(pub u64);

impl Serialize for Count {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Count;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an integer > 0")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Count, E> {
                if v > 0 {
                    Ok(Count(v))
                } else {
                    Err(E::custom("expected an integer > 0, got 0"))
                }
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Count, E> {
                u64::try_from(v)
                    .map_err(|_| E::custom(format!("expected an integer > 0, got {v}")))
                    .and_then(|v| self.visit_u64(v))
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for Count {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Count".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "integer",
            "description": "An integer > 0.",
            "minimum": 1
        })
    }
}

/// An amount of memory written with its unit (`"512MiB"`), kept as written and in bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Memory {
    /// As written in berth.toml.
    pub text: String,
    pub bytes: u64,
}

const UNITS: &[(&str, u64)] = &[
    ("B", 1),
    ("KiB", 1 << 10),
    ("MiB", 1 << 20),
    ("GiB", 1 << 30),
    ("TiB", 1 << 40),
    ("kB", 1000),
    ("KB", 1000),
    ("MB", 1000 * 1000),
    ("GB", 1000 * 1000 * 1000),
    ("TB", 1000 * 1000 * 1000 * 1000),
];

impl std::str::FromStr for Memory {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let digits = t.chars().take_while(|c| c.is_ascii_digit()).count();
        let (num, unit) = t.split_at(digits);
        let unit = unit.trim_start();
        let hint = "write a whole number with a unit: B, KiB, MiB, GiB, TiB (or kB, MB, GB, TB), e.g. \"512MiB\" or \"1GiB\"";
        let Some(&(_, factor)) = UNITS.iter().find(|(u, _)| *u == unit) else {
            let why = if num.is_empty() {
                "does not start with a number".to_string()
            } else if unit.is_empty() {
                "has no unit".to_string()
            } else {
                format!("has an unknown unit `{unit}`")
            };
            return Err(format!("invalid memory `{s}`: it {why}; {hint}"));
        };
        let n: u64 = num.parse().map_err(|_| {
            format!("invalid memory `{s}`: it does not start with a number; {hint}")
        })?;
        let bytes = n
            .checked_mul(factor)
            .ok_or_else(|| format!("invalid memory `{s}`: too large"))?;
        if bytes == 0 {
            return Err(format!("invalid memory `{s}`: it must be more than 0"));
        }
        Ok(Self {
            text: s.to_string(),
            bytes,
        })
    }
}

impl Serialize for Memory {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Memory {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Memory {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Memory".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "Memory: a whole number > 0 with a unit, B, KiB, MiB, GiB, TiB (or kB, MB, GB, TB), e.g. \"512MiB\" or \"1GiB\".",
            "pattern": "^\\s*[0-9]+\\s*(B|KiB|MiB|GiB|TiB|kB|KB|MB|GB|TB)\\s*$",
            "examples": ["512MiB"]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_period_and_weight_follow_the_cpu_limit() {
        let l = |cpus| EffectiveLimits {
            cpus,
            ..Default::default()
        };
        assert_eq!(l(0.5).cfs(), (5_000, 10_000));
        assert_eq!(l(2.0).cfs(), (20_000, 10_000));
        // Below a tenth of a CPU the period grows instead of the quota rounding up.
        assert_eq!(l(0.05).cfs(), (5_000, 100_000));
        assert_eq!(l(0.001).cfs(), (1_000, 1_000_000));
        assert_eq!((l(0.5).cpu_shares(), l(0.5).cpu_weight()), (512, 50));
        assert_eq!((l(1.0).cpu_shares(), l(1.0).cpu_weight()), (1024, 100));
        assert_eq!((l(0.001).cpu_shares(), l(0.001).cpu_weight()), (2, 1));
    }

    fn load(text: &str) -> Result<Manifest, Vec<crate::Diagnostic>> {
        crate::check_str("berth.toml", text).map(|(l, _)| l.manifest)
    }

    const LAYERED: &str = r#"[project]
name = "shop"
[limits]
cpus = 2
memory = "2GiB"
[products.a]
limits = { memory = "512MiB", pids = 50 }
[products.a.services.web]
image = "a"
limits = { cpus = 0.5 }
[products.a.services.worker]
image = "w"
limits = { cpu_priority = "background" }
[products.b.services.web]
image = "b"
"#;

    #[test]
    fn the_service_wins_then_the_product_then_limits_then_the_defaults() {
        let m = load(LAYERED).unwrap();
        assert_eq!(
            effective_limits(&m, "a", "web"),
            EffectiveLimits {
                cpus: 0.5,
                memory: 512 << 20,
                pids: 50,
                nofile: DEFAULT_NOFILE,
                cpu_priority: CpuPriority::Normal,
            }
        );
        assert_eq!(
            effective_limits(&m, "a", "worker"),
            EffectiveLimits {
                cpus: 2.0,
                memory: 512 << 20,
                pids: 50,
                nofile: 4096,
                cpu_priority: CpuPriority::Background,
            }
        );
        assert_eq!(
            effective_limits(&m, "b", "web"),
            EffectiveLimits {
                cpus: 2.0,
                memory: 2 << 30,
                pids: 1024,
                nofile: 4096,
                cpu_priority: CpuPriority::Normal,
            }
        );
        let bare =
            load("[project]\nname = \"shop\"\n[products.a.services.web]\nimage = \"a\"\n").unwrap();
        assert_eq!(
            effective_limits(&bare, "a", "web"),
            EffectiveLimits {
                cpus: 1.0,
                memory: 1 << 30,
                pids: 1024,
                nofile: 4096,
                cpu_priority: CpuPriority::Normal,
            }
        );
    }

    #[test]
    fn memory_units() {
        for (text, bytes) in [
            ("512MiB", 512u64 << 20),
            ("1GiB", 1 << 30),
            ("64 MiB", 64 << 20),
            ("1000B", 1000),
            ("2GB", 2_000_000_000),
            ("3kB", 3000),
        ] {
            assert_eq!(text.parse::<Memory>().unwrap().bytes, bytes, "{text}");
        }
        for bad in [
            "512",
            "512mb",
            "1.5GiB",
            "GiB",
            "0MiB",
            "-1GiB",
            "1 gigabyte",
            "",
        ] {
            assert!(bad.parse::<Memory>().is_err(), "{bad}");
        }
    }

    /// Each bad value is an error located at the value (line:column), saying what is wrong.
    #[test]
    fn bad_values_are_located_errors() {
        for (line, bad, says) in [
            (
                "memory = \"512MB\"",
                "memory = \"512mb\"",
                "unknown unit `mb`",
            ),
            ("memory = \"512MB\"", "memory = \"512\"", "has no unit"),
            (
                "cpus = 0.5",
                "cpus = 0",
                "cpus must be a number of CPUs > 0",
            ),
            (
                "cpus = 0.5",
                "cpus = -1.5",
                "cpus must be a number of CPUs > 0",
            ),
            ("pids = 10", "pids = 0", "integer > 0"),
            ("nofile = 10", "nofile = -3", "integer > 0"),
            ("nofile = 10", "nofile = \"many\"", "integer > 0"),
            ("cpus = 0.5", "cpu = 0.5", "unknown field `cpu`"),
            (
                "cpu_priority = \"background\"",
                "cpu_priority = \"idle\"",
                "unknown variant `idle`, expected `normal` or `background`",
            ),
        ] {
            let good = format!(
                "[project]\nname = \"shop\"\n[products.a.services.web]\nimage = \"a\"\n[products.a.services.web.limits]\n{line}\n"
            );
            load(&good).unwrap_or_else(|d| panic!("{line}: {d:?}"));
            let text = good.replace(line, bad);
            let diags = load(&text).expect_err(bad);
            let d = &diags[0];
            assert!(d.message.contains(says), "{bad}: {}", d.message);
            let at = d.primary.as_ref().expect("located");
            assert_eq!(at.line, 6, "{bad}: {d:?}");
            let col = if bad.starts_with("cpu =") {
                1
            } else {
                bad.find('=').unwrap() + 3
            };
            assert_eq!(at.column, col, "{bad}: {d:?}");
        }
        // In [limits] and on a product too.
        let top = "[project]\nname = \"shop\"\n[limits]\nmemory = \"1 gigabyte\"\n";
        let d = &load(top).unwrap_err()[0];
        assert_eq!(d.location().unwrap(), "berth.toml:4:10");
        let product = "[project]\nname = \"shop\"\n[products.a]\nlimits = { pids = 0 }\n";
        let d = &load(product).unwrap_err()[0];
        assert_eq!(d.location().unwrap(), "berth.toml:4:19");
    }

    #[test]
    fn db_limits_come_from_the_product_then_limits_then_the_defaults() {
        let m = load(
            "[project]\nname = \"shop\"\n[limits]\ndb_connections = 30\n[products.a]\nlimits = { db_connections = 5, statement_timeout = \"2s\" }\n[products.a.services.web]\nimage = \"a\"\n[products.b.services.web]\nimage = \"b\"\n",
        )
        .unwrap();
        assert_eq!(
            effective_db_limits(&m, "a"),
            DbLimits {
                connections: 5,
                statement_timeout: std::time::Duration::from_secs(2)
            }
        );
        assert_eq!(
            effective_db_limits(&m, "b"),
            DbLimits {
                connections: 30,
                statement_timeout: std::time::Duration::from_secs(60)
            }
        );
    }

    /// The role's limits on a service, a zero timeout, a zero count: located errors.
    #[test]
    fn db_limits_on_a_service_or_out_of_range_are_located_errors() {
        let base = "[project]\nname = \"shop\"\n[products.a.services.web]\nimage = \"a\"\n";
        let d = &load(&format!("{base}limits = {{ db_connections = 5 }}\n")).unwrap_err()[0];
        assert!(
            d.message.contains("limits the product's PostgreSQL role"),
            "{d:?}"
        );
        assert_eq!(d.location().unwrap(), "berth.toml:5:12");
        let d = &load(&format!(
            "{base}limits = {{ statement_timeout = \"1s\" }}\n"
        ))
        .unwrap_err()[0];
        assert!(d.message.contains("`statement_timeout`"), "{d:?}");
        let d = &load(&format!("{base}[limits]\nstatement_timeout = \"0s\"\n")).unwrap_err()[0];
        assert!(d.message.contains("under a millisecond"), "{d:?}");
        assert_eq!(d.location().unwrap(), "berth.toml:6:21");
        let d = &load(&format!("{base}[limits]\ndb_connections = 0\n")).unwrap_err()[0];
        assert!(d.message.contains("integer > 0"), "{d:?}");
        assert_eq!(d.location().unwrap(), "berth.toml:6:18");
    }

    /// A background service is fine on every runtime with a CPU weight; swarm has
    /// none, so it is a located error there, wherever the key is written.
    #[test]
    fn background_priority_is_refused_on_swarm_only() {
        let base = "[project]\nname = \"shop\"\n[products.a.services.web]\nimage = \"a\"\nlimits = { cpu_priority = \"background\" }\n";
        for runtime in ["local", "compose", "auto"] {
            let m = load(&format!("{base}[deploy]\nruntime = \"{runtime}\"\n")).unwrap();
            assert_eq!(
                effective_limits(&m, "a", "web").cpu_priority,
                CpuPriority::Background
            );
        }
        let swarm = "[deploy]\nruntime = \"swarm\"\n[deploy.swarm]\nregistry = \"reg:5000\"\n";
        let d = &load(&format!("{base}{swarm}")).unwrap_err()[0];
        assert!(
            d.message.contains("cannot be applied by the swarm runtime"),
            "{d:?}"
        );
        assert_eq!(d.location().unwrap(), "berth.toml:5:27");
        let top = "[project]\nname = \"shop\"\n[products.a.services.web]\nimage = \"a\"\n[limits]\ncpu_priority = \"background\"\n";
        let d = &load(&format!("{top}{swarm}")).unwrap_err()[0];
        assert_eq!(d.location().unwrap(), "berth.toml:6:16", "{d:?}");
    }

    #[test]
    fn enforce_is_strict_when_limits_are_written_and_only_in_limits() {
        let base = "[project]\nname = \"shop\"\n[products.a.services.web]\nimage = \"a\"\n";
        assert!(!enforce_strict(&load(base).unwrap()), "defaults alone");
        assert!(enforce_strict(
            &load(&format!("{base}limits = {{ pids = 9 }}\n")).unwrap()
        ));
        // The role's limits are not the host's business.
        assert!(!enforce_strict(
            &load(&format!("{base}[limits]\ndb_connections = 9\n")).unwrap()
        ));
        assert!(!enforce_strict(
            &load(&format!(
                "{base}limits = {{ pids = 9 }}\n[limits]\nenforce = \"best-effort\"\n"
            ))
            .unwrap()
        ));
        assert!(enforce_strict(
            &load(&format!("{base}[limits]\nenforce = \"strict\"\n")).unwrap()
        ));
        let d = &load(&format!("{base}limits = {{ enforce = \"strict\" }}\n")).unwrap_err()[0];
        assert!(
            d.message
                .contains("`enforce` is set for every product, in [limits]"),
            "{d:?}"
        );
        let d = &load(&format!("{base}[limits]\nenforce = \"sometimes\"\n")).unwrap_err()[0];
        assert!(d.message.contains("unknown variant `sometimes`"), "{d:?}");
        assert_eq!(d.location().unwrap(), "berth.toml:6:11");
    }
}
