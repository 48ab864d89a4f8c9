//! Per-product logical backups.
//!
//! A backup is a `pg_dump` custom-format archive (uncompressed by pg_dump), streamed
//! through multithreaded zstd (and, with recipients, age) into
//! `<dir>/<product>_<UTC stamp>.dump.zst[.age]`, written under a temporary name,
//! mode 0600, renamed only when complete, with a JSON record beside it
//! (`<file>.json`) holding its checksum, sizes, versions and the row count of every
//! table at the dump's snapshot. `verify` restores into a scratch database and
//! compares; `restore` restores into a new database and swaps it in by renaming;
//! `prune` keeps the newest backup of each recent day, week and month.

pub mod backup;
pub mod catalog;
pub mod names;
pub mod offsite;
pub mod pg;
pub mod prune;
pub mod redis;
pub mod restore;
pub mod stream;
pub mod verify;

pub use backup::{Options, backup};
pub use catalog::{Record, TableCount, latest, list};

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// Bad input or configuration (exit 2).
    #[error("{0}")]
    Config(String),
    /// The operation failed for a reason outside the backup (exit 1).
    #[error("{0}")]
    Failed(String),
    /// The backup itself is bad: checksum, decompression, archive, row counts (exit 1;
    /// recorded by verify).
    #[error("{0}")]
    Damaged(String),
}

/// Seconds since the Unix epoch.
pub fn now_unix() -> u64 {
    berth_cmd::clock::now_unix()
}

/// `20261125T103000Z` (backup file names) and `2026-11-25T10:30:00Z` for a Unix
/// time: the deploy tags' RFC 3339 form, without its separators for the compact one.
pub fn stamp(secs: u64) -> (String, String) {
    let rfc = berth_deploy::tags::utc_stamp(secs).1;
    (rfc.replace(['-', ':'], ""), rfc)
}

/// Bytes an unprivileged writer can still put on `dir`'s file system.
pub fn free_bytes(dir: &std::path::Path) -> Option<u64> {
    rustix::fs::statvfs(dir)
        .ok()
        .map(|fs| fs.f_bavail.saturating_mul(fs.f_frsize))
}

/// A size for people: `512 B`, `3.2 MiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Default parallel jobs for pg_restore: the CPU count.
pub fn default_jobs() -> u32 {
    std::thread::available_parallelism().map_or(2, |n| n.get() as u32)
}

#[cfg(test)]
mod tests {
    #[test]
    fn stamps_agree_with_jiff_across_centuries_and_leap_days() {
        assert_eq!(
            super::stamp(0),
            ("19700101T000000Z".into(), "1970-01-01T00:00:00Z".into())
        );
        // 2000-02-29 and 2100-03-01 (not a leap year), then a walk of odd steps.
        let mut t = 0u64;
        for secs in [951_782_400, 4_107_542_400].into_iter().chain(
            std::iter::from_fn(|| {
                t += 7_919 * 3_607;
                Some(t)
            })
            .take(2_000),
        ) {
            let ts = jiff::Timestamp::from_second(secs as i64).unwrap();
            assert_eq!(
                super::stamp(secs),
                (
                    ts.strftime("%Y%m%dT%H%M%SZ").to_string(),
                    ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
                ),
                "{secs}"
            );
        }
    }
}
