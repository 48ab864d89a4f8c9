//! Names of the databases berth creates beside a product's database, and the
//! per-product lock that serialises backup, verify, prune and restore.

use std::fs::File;
use std::path::Path;
use std::time::Duration;

use crate::BackupError;

/// PostgreSQL's identifier limit (longer names are silently truncated).
pub const MAX_IDENT: usize = 63;

/// The stem every derived name of `db` starts with: `db` itself when short enough,
/// else a prefix of it plus a hash, so `<stem>_failed_restore_<ts>` always fits.
pub fn stem(db: &str) -> String {
    // "_failed_restore_" (16) + a 16-character stamp = 32.
    const ROOM: usize = MAX_IDENT - 32;
    if db.len() <= ROOM {
        return db.to_string();
    }
    let mut h: u32 = 0x811c_9dc5;
    for b in db.bytes() {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    let mut cut = ROOM - 9;
    while !db.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}_{h:08x}", &db[..cut])
}

/// `<stem>_<kind>_<ts>`, checked to fit and to differ from `db`.
pub fn derived(db: &str, kind: &str, ts: &str) -> Result<String, BackupError> {
    let name = format!("{}_{kind}_{ts}", stem(db));
    if name.len() > MAX_IDENT || name == db {
        return Err(BackupError::Config(format!(
            "cannot name a {kind} database for `{db}` within PostgreSQL's 63 bytes"
        )));
    }
    Ok(name)
}

/// Whether `name` is a scratch database of `db` that only a running verify or
/// restore uses (`_verify_` or `_restore_`, not the kept `_pre_restore_`/`_failed_restore_`).
pub fn is_scratch(db: &str, name: &str) -> bool {
    let s = stem(db);
    ["verify", "restore"].iter().any(|kind| {
        name.strip_prefix(&format!("{s}_{kind}_"))
            .is_some_and(|ts| ts.len() == 16 && ts.as_bytes()[8] == b't' && ts.ends_with('z'))
    })
}

/// An exclusive lock on a product's backups (released on drop or when berth dies).
pub struct ProductLock {
    _file: File,
}

impl ProductLock {
    pub fn acquire(dir: &Path, product: &str, what: &str) -> Result<Self, BackupError> {
        let path = dir.join(".lock");
        let record = format!("{what}, pid {}", std::process::id());
        let file = match berth_deploy::lock::lock_file(&path, Duration::ZERO, &record, |t| {
            Some(t.trim().to_string()).filter(|t| !t.is_empty())
        }) {
            Ok(Ok(file)) => file,
            Ok(Err(holder)) => {
                return Err(BackupError::Failed(format!(
                    "another backup operation on {product} is running ({}); try again when it ends",
                    holder.as_deref().unwrap_or("pid unknown")
                )));
            }
            Err(e) => {
                return Err(BackupError::Failed(format!(
                    "could not lock {}: {e}",
                    path.display()
                )));
            }
        };
        Ok(Self { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_names_fit_and_never_equal_the_live_name() {
        let ts = "20261125t103000z";
        for len in [1usize, 20, 31, 32, 34, 40, 55, 62, 63] {
            let db: String = "d".repeat(len);
            for kind in ["verify", "restore", "pre_restore", "failed_restore"] {
                let n = derived(&db, kind, ts).unwrap();
                assert!(n.len() <= MAX_IDENT, "{n}");
                assert_ne!(n, db);
                assert_eq!(
                    is_scratch(&db, &n),
                    kind == "verify" || kind == "restore",
                    "{n}"
                );
            }
        }
        // Two long names differing only at the end get different stems.
        let a = format!("{}a", "x".repeat(60));
        let b = format!("{}b", "x".repeat(60));
        assert_ne!(stem(&a), stem(&b));
        assert_eq!(stem("bestays"), "bestays");
        assert!(!is_scratch(
            "bestays",
            "bestays_pre_restore_20261125t103000z"
        ));
        assert!(!is_scratch("bestays", "bestays_verify_notastamp"));
    }
}
