//! `berth restore`: checksum -> restore into a new database -> stop the product ->
//! terminate connections -> swap by renaming (one transaction) -> start and
//! health-check -> on failure, swap back. The live database is never dropped.

use std::path::Path;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use berth_manifest::Manifest;
use berth_runtime::{Runtime, Slot};
use serde::Serialize;

use crate::catalog::Record;
use crate::verify::{check_checksum, decode, restore_new};
use crate::{BackupError, pg, stamp, stream};

pub struct RestoreOptions<'a> {
    pub manifest: &'a Manifest,
    pub root: &'a Path,
    pub product: &'a str,
    pub identities: &'a [Box<dyn age::Identity>],
    pub jobs: u32,
    /// The runtime of the product's services (`None`: nothing to stop or start).
    pub runtime: Option<&'a dyn Runtime>,
    /// Also put the product's Redis keys back from the backup's Redis file.
    pub with_redis: bool,
    /// One line per step, as it starts.
    pub progress: &'a mut dyn FnMut(&str),
}

#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    pub product: String,
    pub database: String,
    pub from: String,
    /// The replaced database, kept under this name.
    pub previous_database: String,
    /// The slot that was stopped and started again.
    pub slot: Option<Slot>,
    pub version: Option<String>,
    pub tables: usize,
    pub rows: u64,
    pub redis_keys: Option<u64>,
    pub duration_ms: u64,
}

/// Give up renaming after this many tries (each after terminating connections).
const SWAP_TRIES: usize = 10;

pub fn restore(opts: &mut RestoreOptions<'_>, r: &Record) -> Result<RestoreReport, BackupError> {
    let clock = Instant::now();
    let m = opts.manifest;
    let product = opts.product;
    let db = m
        .products
        .get(product)
        .and_then(|p| p.database.as_ref())
        .ok_or_else(|| {
            BackupError::Config(format!("product `{product}` has no database to restore"))
        })?;
    if r.product != product {
        return Err(BackupError::Config(format!(
            "{} is a backup of `{}`, not of `{product}`",
            r.path().display(),
            r.product
        )));
    }
    if r.encrypted && opts.identities.is_empty() {
        return Err(BackupError::Config(format!(
            "{} is encrypted: pass the age identity with --identity FILE (or BERTH_AGE_IDENTITY)",
            r.path().display()
        )));
    }
    if opts.with_redis && r.redis.is_none() {
        return Err(BackupError::Config(format!(
            "{} has no Redis part (back up with `[backup] redis = true`)",
            r.path().display()
        )));
    }
    let url = berth_provision::postgres_admin_url(m, opts.root)
        .map_err(|e| BackupError::Config(e.to_string()))?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let ts = stamp(now).0.to_lowercase();
    let fresh = format!("{}_restore_{ts}", db.name);
    let previous = format!("{}_pre_restore_{ts}", db.name);

    // 1. Everything that can fail without touching the live database.
    (opts.progress)(&format!("check the checksum of {}", r.file));
    let t = Instant::now();
    check_checksum(r).map_err(|e| BackupError::Failed(format!("{e}; nothing was changed")))?;
    tracing::info!("checksum: {:?}", t.elapsed());
    (opts.progress)(&format!(
        "restore into a new database {fresh} (pg_restore -j {})",
        opts.jobs
    ));
    let restored = (|| {
        let (_guard, plain) = decode(r, opts.identities, "restore")?;
        restore_new(&url, r, &plain, &fresh, Some(&db.role), opts.jobs)
    })();
    if let Err(e) = restored {
        let _ = pg::session(&url, "postgres").and_then(|mut s| pg::drop_database(&mut s, &fresh));
        return Err(BackupError::Failed(format!(
            "{e}\nthe live database {} was not touched",
            db.name
        )));
    }

    debug_pause("restored", opts.progress);

    // 2. Stop the product's services so nothing writes to the old database.
    let mut live: Option<(Slot, String)> = None;
    if let Some(rt) = opts.runtime {
        let instances = rt
            .instances(product)
            .map_err(|e| BackupError::Failed(e.to_string()))?;
        let nginx_slot = berth_deploy::proxy::Nginx::new(m, opts.root)
            .and_then(|n| n.live_slot(product).ok().flatten());
        let slot = nginx_slot
            .filter(|s| instances.iter().any(|i| i.slot == *s && i.alive))
            .or_else(|| instances.iter().find(|i| i.alive).map(|i| i.slot));
        if let Some(slot) = slot {
            let version = instances
                .iter()
                .find(|i| i.slot == slot && i.alive)
                .map(|i| i.version.clone())
                .unwrap_or_default();
            (opts.progress)(&format!("stop {product} ({slot} slot, {version})"));
            if let Err(e) = rt.stop(product, slot) {
                let _ = pg::session(&url, "postgres")
                    .and_then(|mut s| pg::drop_database(&mut s, &fresh));
                let _ = rt.start(product, slot, &version);
                return Err(BackupError::Failed(format!(
                    "could not stop {product}: {e}\nthe live database {} was not touched",
                    db.name
                )));
            }
            live = Some((slot, version));
        }
    }
    let start_again = |progress: &mut dyn FnMut(&str)| -> Result<(), String> {
        let (Some(rt), Some((slot, version))) = (opts.runtime, &live) else {
            return Ok(());
        };
        progress(&format!(
            "start {product} ({slot} slot, {version}) and health-check it"
        ));
        rt.start(product, *slot, version)
            .map_err(|e| e.to_string())?;
        berth_deploy::wait_healthy(m, rt, product, *slot)
            .map(|_| ())
            .map_err(|(e, _)| e)
    };

    debug_pause("stopped", opts.progress);

    // 3. Swap: terminate what still connects, then both renames in one transaction.
    (opts.progress)(&format!(
        "swap: {} -> {previous}, {fresh} -> {}",
        db.name, db.name
    ));
    let swapped = swap(&url, &db.name, &previous, &fresh);
    if let Err(e) = swapped {
        let _ = pg::session(&url, "postgres").and_then(|mut s| pg::drop_database(&mut s, &fresh));
        let again = start_again(opts.progress);
        return Err(BackupError::Failed(format!(
            "{e}\nthe live database {} was not touched{}",
            db.name,
            again.err().map_or(String::new(), |e| format!(
                "; starting {product} again failed too: {e}"
            ))
        )));
    }

    // 4. Redis keys, then the product comes back on the restored data.
    let mut redis_keys = None;
    let after = (|| -> Result<(), String> {
        if opts.with_redis
            && let Some(part) = &r.redis
        {
            (opts.progress)(&format!("restore the Redis keys from {}", part.file));
            let input = stream::decoder(&r.dir.join(&part.file), r.encrypted, opts.identities)
                .map_err(|e| e.to_string())?;
            redis_keys = Some(
                crate::redis::restore(m, opts.root, product, input).map_err(|e| e.to_string())?,
            );
        }
        start_again(opts.progress)
    })();
    if let Err(e) = after {
        (opts.progress)(&format!("{e}; swapping the previous database back"));
        if let Some((slot, _)) = &live
            && let Some(rt) = opts.runtime
        {
            let _ = rt.stop(product, *slot);
        }
        let failed = format!("{}_failed_restore_{ts}", db.name);
        let back = swap(&url, &db.name, &failed, &previous);
        let again = start_again(opts.progress);
        return Err(BackupError::Failed(match back {
            Ok(()) => format!(
                "{e}\nthe previous database is live again; the restored one is kept as {failed}{}",
                again.err().map_or(String::new(), |e| format!(
                    " (starting {product} again failed: {e})"
                ))
            ),
            Err(b) => format!(
                "{e}\nswapping back failed too: {b}\nthe previous database is kept as {previous}"
            ),
        }));
    }
    Ok(RestoreReport {
        product: product.to_string(),
        database: db.name.clone(),
        from: r.path().display().to_string(),
        previous_database: previous,
        slot: live.as_ref().map(|(s, _)| *s),
        version: live.map(|(_, v)| v),
        tables: r.table_count,
        rows: r.tables.iter().map(|t| t.rows).sum(),
        redis_keys,
        duration_ms: clock.elapsed().as_millis() as u64,
    })
}

/// Rename `live` to `aside` and `incoming` to `live` in one transaction, after
/// terminating the connections to both; retried while new connections race in.
fn swap(
    url: &berth_provision::url::ServiceUrl,
    live: &str,
    aside: &str,
    incoming: &str,
) -> Result<(), BackupError> {
    let mut s = pg::session(url, "postgres")?;
    let lit = |d: &str| format!("'{}'", d.replace('\'', "''"));
    let mut last = String::new();
    for _ in 0..SWAP_TRIES {
        pg::query(
            &mut s,
            &format!(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname IN ({}, {}) AND pid <> pg_backend_pid()",
                lit(live),
                lit(incoming)
            ),
            "terminate connections",
        )?;
        pg::query(&mut s, "BEGIN", "begin the swap")?;
        let renamed = pg::query(
            &mut s,
            &format!(
                "ALTER DATABASE {} RENAME TO {}",
                pg::ident(live),
                pg::ident(aside)
            ),
            "rename",
        )
        .and_then(|_| {
            pg::query(
                &mut s,
                &format!(
                    "ALTER DATABASE {} RENAME TO {}",
                    pg::ident(incoming),
                    pg::ident(live)
                ),
                "rename",
            )
        });
        match renamed {
            Ok(_) => {
                pg::query(&mut s, "COMMIT", "commit the swap")?;
                return Ok(());
            }
            Err(e) => {
                last = e.to_string();
                let _ = pg::query(&mut s, "ROLLBACK", "roll back the swap");
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
        }
    }
    Err(BackupError::Failed(format!(
        "could not swap the databases after {SWAP_TRIES} tries: {last}"
    )))
}

/// Test hook: `BERTH_DEBUG_PAUSE_RESTORE=restored|stopped` holds still at that point so
/// a test can kill berth right there.
fn debug_pause(point: &str, progress: &mut dyn FnMut(&str)) {
    if std::env::var("BERTH_DEBUG_PAUSE_RESTORE").is_ok_and(|p| p == point) {
        progress(&format!("paused: {point} (BERTH_DEBUG_PAUSE_RESTORE)"));
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}
