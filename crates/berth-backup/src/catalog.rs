//! The backup records (`<file>.json`) beside each backup file: reading and listing them.

use std::path::{Path, PathBuf};

use berth_manifest::Manifest;
use serde::{Deserialize, Serialize};

/// Rows of one table at the dump's snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableCount {
    pub schema: String,
    pub name: String,
    pub rows: u64,
}

/// The Redis part of a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedisPart {
    /// File name (beside the dump).
    pub file: String,
    pub keys: u64,
    pub file_bytes: u64,
    pub sha256: String,
}

/// The outcome of the last `berth backup verify`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verification {
    pub at: String,
    pub at_unix: u64,
    pub ok: bool,
    pub detail: String,
}

/// `<file>.json`: everything known about one backup. Never holds a password.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Record format version.
    pub format: u32,
    pub product: String,
    pub database: String,
    /// The backup file's name (in the same directory as this record).
    pub file: String,
    /// RFC 3339 UTC.
    pub started: String,
    pub started_unix: u64,
    pub finished: String,
    pub finished_unix: u64,
    /// The place of this backup among the product's (1, 2, ...): a newer backup has a
    /// greater number whatever the clock said when it was taken (a clock set back
    /// dates a newer backup before an older one). 0: written before berth numbered them.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub seq: u64,
    pub duration_ms: u64,
    pub server_version: String,
    pub pg_dump_version: String,
    /// Bytes pg_dump wrote (before compression).
    pub dump_bytes: u64,
    /// Bytes of the backup file.
    pub file_bytes: u64,
    /// sha256 of the backup file, hex.
    pub sha256: String,
    pub compression: String,
    pub level: i32,
    pub encrypted: bool,
    /// age recipients (public keys) the file is encrypted to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recipients: Vec<String>,
    pub table_count: usize,
    pub tables: Vec<TableCount>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisPart>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified: Option<Verification>,
    /// Why the Redis part is missing when `[backup] redis` asked for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_error: Option<String>,
    /// The off-site copy (`[backup.offsite]`): where, when, whether it was verified there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offsite: Option<crate::offsite::OffsiteCopy>,
    /// Set when read: where the record lives.
    #[serde(skip)]
    pub dir: PathBuf,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Record {
    /// Path of the backup file.
    pub fn path(&self) -> PathBuf {
        self.dir.join(&self.file)
    }

    /// Path of this record.
    pub fn record_path(&self) -> PathBuf {
        record_path_of(&self.path())
    }

    /// Read the record of a backup file (or the record itself).
    pub fn read(path: &Path) -> Result<Self, String> {
        let record = if path.extension().is_some_and(|e| e == "json") {
            path.to_path_buf()
        } else {
            record_path_of(path)
        };
        let text = std::fs::read_to_string(&record)
            .map_err(|e| format!("could not read the backup record {}: {e}", record.display()))?;
        let mut r: Record = serde_json::from_str(&text)
            .map_err(|e| format!("{} is not a berth backup record: {e}", record.display()))?;
        r.dir = record
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        Ok(r)
    }

    /// Whether the last verification passed (only problems of the backup itself are
    /// recorded as failures, never an unreachable server).
    pub fn verified_ok(&self) -> bool {
        self.verified.as_ref().is_some_and(|v| v.ok)
    }
}

/// `<file>.json` for a backup file.
pub fn record_path_of(file: &Path) -> PathBuf {
    let mut s = file.as_os_str().to_owned();
    s.push(".json");
    PathBuf::from(s)
}

/// The backup directory of `product`, absolute (relative settings are under `root`).
pub fn backup_dir(m: &Manifest, root: &Path, product: &str) -> PathBuf {
    let dir = m.backup_settings(product).dir;
    let p = Path::new(&dir);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        root.join(p)
    }
}

/// The backups of `product` (every product when `None`), oldest first per product.
/// Unreadable records are skipped with a warning in the log.
pub fn list(m: &Manifest, root: &Path, product: Option<&str>) -> Vec<Record> {
    let mut out = Vec::new();
    for name in m
        .products
        .keys()
        .filter(|n| product.is_none_or(|p| p == *n))
    {
        let dir = backup_dir(m, root, name);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut records: Vec<Record> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                p.extension().is_some_and(|e| e == "json")
                    && p.file_name()
                        .and_then(|f| f.to_str())
                        .is_some_and(|f| f.starts_with(&format!("{name}_")))
            })
            .filter_map(|p| match Record::read(&p) {
                Ok(r) if r.product == *name => Some(r),
                Ok(_) => None,
                Err(e) => {
                    tracing::warn!("{e}");
                    None
                }
            })
            .collect();
        sort(&mut records);
        out.extend(records);
    }
    out
}

/// Oldest first, by number first (the clock may have gone back); `x-2.dump.zst` was
/// taken after `x.dump.zst` in the same second.
pub fn sort(records: &mut [Record]) {
    records.sort_by(|a, b| {
        (
            a.seq,
            a.started_unix,
            a.finished_unix,
            a.file.len(),
            &a.file,
        )
            .cmp(&(
                b.seq,
                b.started_unix,
                b.finished_unix,
                b.file.len(),
                &b.file,
            ))
    });
}

/// The newest backup of `product`.
pub fn latest(m: &Manifest, root: &Path, product: &str) -> Option<Record> {
    list(m, root, Some(product)).pop()
}
