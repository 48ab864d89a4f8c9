//! `berth restore`: checksum -> restore into a new database -> stop the product ->
//! terminate connections -> swap by renaming (one transaction) -> [Redis keys] ->
//! start and health-check -> on failure, swap back. The live database is never dropped.

use std::path::Path;
use std::time::Instant;

use berth_manifest::Manifest;
use berth_provision::url::ServiceUrl;
use berth_runtime::{Runtime, Slot};
use serde::Serialize;

use crate::catalog::Record;
use crate::names::{self, ProductLock};
use crate::verify::{
    CREATE_PHASE, Phase, check_redis_checksum, clean_leftovers, create_new, decode, fill_new,
};
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
    pub progress: &'a dyn berth_cmd::progress::Progress,
}

#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    pub product: String,
    pub database: String,
    pub from: String,
    /// The replaced database, kept under this name (none when there was no live one).
    pub previous_database: Option<String>,
    /// The product's Redis keys before the restore, saved here.
    pub previous_redis: Option<String>,
    /// The slot that was stopped and started again.
    pub slot: Option<Slot>,
    pub version: Option<String>,
    pub tables: usize,
    pub rows: u64,
    pub redis_keys: Option<u64>,
    pub warnings: Vec<String>,
    /// Where the time went: each phase in order.
    pub phases: Vec<Phase>,
    pub duration_ms: u64,
}

/// Give up renaming after this many tries (each after terminating connections).
const SWAP_TRIES: usize = 10;

fn drop_quietly(url: &ServiceUrl, db: &str) {
    if let Err(e) = pg::session(url, "postgres").and_then(|mut s| pg::drop_database(&mut s, db)) {
        tracing::warn!("could not drop {db}: {e}");
    }
}

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
    let _lock = ProductLock::acquire(&r.dir, product, "restore")?;
    let untouched = |e: BackupError| -> BackupError {
        let msg = format!("{e}\nthe live database {} was not touched", db.name);
        match e {
            BackupError::Config(_) => BackupError::Config(msg),
            BackupError::Damaged(_) => BackupError::Damaged(msg),
            BackupError::Failed(_) => BackupError::Failed(msg),
        }
    };

    // 1. Everything that can fail without touching the live database.
    let mut phases = Vec::new();
    let t = Instant::now();
    check_redis_checksum(r).map_err(untouched)?;
    let mut admin = pg::session(&url, "postgres")?;
    for left in clean_leftovers(&mut admin, &db.name, &r.dir)? {
        opts.progress.step(&format!(
            "dropped {left}, left by an interrupted verify or restore"
        ));
    }
    // The databases this restore makes are named by the second it starts; one that ran
    // earlier in the same second kept its `_pre_restore_` under that stamp: take the next.
    let ts = loop {
        let ts = stamp(crate::now_unix()).0.to_lowercase();
        let taken = pg::databases(&mut admin)?;
        let mut free = true;
        for kind in ["restore", "pre_restore", "failed_restore"] {
            free &= !taken.contains(&names::derived(&db.name, kind, &ts)?);
        }
        if free {
            break ts;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    let fresh = names::derived(&db.name, "restore", &ts)?;
    let previous = names::derived(&db.name, "pre_restore", &ts)?;
    let shape = pg::shape_or_default(&mut admin, &db.name)?;
    let live_exists = shape.from_live;
    drop(admin);
    phases.push(Phase::since("prepare", t));
    opts.progress.step(&format!(
        "check the checksum of {} while decompressing it, and create the new database {fresh} meanwhile",
        r.file
    ));
    let warnings = (|| {
        // The new database (CREATE DATABASE, its grants, settings and schema owner: a
        // fixed cost of round trips and a WAL-logged copy of template0) is made on a
        // thread while this one checks and decompresses the archive. A bad checksum
        // drops it again; the live database is not touched either way.
        let (created, decoded) = std::thread::scope(|s| {
            let creating = s.spawn(|| {
                let t = Instant::now();
                create_new(&url, &fresh, Some(&db.role), &shape).map(|()| {
                    Phase::since(&format!("{CREATE_PHASE} (during the decompression)"), t)
                })
            });
            let t = Instant::now();
            let decoded = decode(r, opts.identities, "restore")
                .map(|d| (d, Phase::since("checksum and decompression", t)));
            let created = creating.join().unwrap_or_else(|_| {
                Err(BackupError::Failed(
                    "the thread creating the database panicked".into(),
                ))
            });
            (created, decoded)
        });
        let (_guard, plain) = match (created, decoded) {
            (Ok(creating), Ok((d, decoding))) => {
                phases.push(decoding);
                phases.push(creating);
                d
            }
            (Ok(_), Err(e)) => {
                drop_quietly(&url, &fresh);
                return Err(e);
            }
            // A damaged archive says so first; a failed CREATE dropped what it made.
            (Err(_), Err(e)) | (Err(e), Ok(_)) => return Err(e),
        };
        opts.progress.step(&format!(
            "restore into the new database {fresh} (pg_restore -j {}), check its row counts, then ANALYZE",
            opts.jobs
        ));
        fill_new(
            &url,
            r,
            &plain,
            &fresh,
            Some(&db.role),
            opts.jobs,
            true,
            &mut phases,
        )
    })()
    .map_err(untouched)?;
    for w in &warnings {
        opts.progress.step(&format!("warning: {w}"));
    }
    debug_pause("restored", opts.progress);

    // 2. Stop the product's services so nothing writes to the old database.
    let mut live: Option<(Slot, String)> = None;
    // Switched back to the live slot on every way out of this function.
    let mut maintenance: Option<Maintenance<'_>> = None;
    if let Some(rt) = opts.runtime {
        let instances = match rt.instances(product) {
            Ok(i) => i,
            Err(e) => {
                drop_quietly(&url, &fresh);
                return Err(untouched(BackupError::Failed(e.to_string())));
            }
        };
        let front_door = berth_deploy::front_door::open(m, opts.root);
        let slot = match front_door.live(product, rt) {
            Ok(slot) => slot,
            Err(e) => {
                drop_quietly(&url, &fresh);
                return Err(untouched(BackupError::Failed(e.to_string())));
            }
        };
        if let Some(slot) = slot {
            let version = instances
                .iter()
                .find(|i| i.slot == slot && i.alive)
                .map(|i| i.version.clone())
                .unwrap_or_default();
            // The front door answers 503 + Retry-After instead of a 502 while the
            // product is down; requests already under way finish before it stops.
            match front_door.begin_maintenance(product, slot, rt) {
                Ok(Some(token)) => {
                    opts.progress.step(&format!(
                        "front door: {product} answers 503 (maintenance) until it is back"
                    ));
                    maintenance = Some(Maintenance {
                        front_door,
                        runtime: rt,
                        token,
                        product,
                        slot,
                        ended: false,
                    });
                }
                Ok(None) => {}
                Err(e) => {
                    drop_quietly(&url, &fresh);
                    return Err(untouched(BackupError::Failed(format!(
                        "could not put {product} in maintenance at the front door: {e}"
                    ))));
                }
            }
            opts.progress
                .step(&format!("stop {product} ({slot} slot, {version})"));
            if let Err(e) = rt.stop(product, slot) {
                drop_quietly(&url, &fresh);
                let _ = rt.start(product, slot, &version);
                return Err(untouched(BackupError::Failed(format!(
                    "could not stop {product}: {e}"
                ))));
            }
            live = Some((slot, version));
        }
    }
    let start_again = |progress: &dyn berth_cmd::progress::Progress| -> Result<(), String> {
        let (Some(rt), Some((slot, version))) = (opts.runtime, &live) else {
            return Ok(());
        };
        progress.step(&format!(
            "start {product} ({slot} slot, {version}) and health-check it"
        ));
        rt.start(product, *slot, version)
            .map_err(|e| e.to_string())?;
        berth_deploy::wait_healthy(m, rt, product, *slot)
            .map(|_| ())
            .map_err(|e| e.why)
    };
    debug_pause("stopped", opts.progress);

    // 3. Swap: terminate what still connects, then both renames in one transaction.
    let aside = live_exists.then_some(previous.as_str());
    opts.progress.step(&match aside {
        Some(p) => format!("swap: {} -> {p}, {fresh} -> {}", db.name, db.name),
        None => format!("{fresh} -> {} (there was no live database)", db.name),
    });
    let t = Instant::now();
    let swapped = swap(&url, &db.name, aside, &fresh);
    phases.push(Phase::since("swap", t));
    if let Err(e) = swapped {
        drop_quietly(&url, &fresh);
        let again = start_again(opts.progress);
        return Err(untouched(BackupError::Failed(format!(
            "{e}{}",
            again.err().map_or(String::new(), |e| format!(
                "; starting {product} again failed too: {e}"
            ))
        ))));
    }

    // 4. Redis keys (the current ones saved first), then the product comes back.
    let mut redis_keys = None;
    let mut previous_redis = None;
    let after = (|| -> Result<(), String> {
        if opts.with_redis
            && let Some(part) = &r.redis
        {
            let snapshot = save_redis(opts.manifest, opts.root, product, r, &ts)
                .map_err(|e| format!("could not save the current Redis keys: {e}"))?;
            previous_redis = Some(r.dir.join(&snapshot).display().to_string());
            opts.progress.step(&format!(
                "restore the Redis keys from {} (the current ones saved in {snapshot})",
                part.file
            ));
            // The key space becomes exactly what `file` holds.
            let replace_keys = |file: &str| {
                crate::redis::clear(m, opts.root, product)?;
                let input = stream::decoder(&r.dir.join(file), r.encrypted, opts.identities)?;
                crate::redis::restore(m, opts.root, product, input)
            };
            match replace_keys(&part.file) {
                Ok(n) => redis_keys = Some(n),
                Err(e) => {
                    let back = replace_keys(&snapshot);
                    return Err(format!(
                        "restoring the Redis keys failed: {e}; {}",
                        match back {
                            Ok(_) => "the previous keys are back".to_string(),
                            Err(b) => format!(
                                "putting the previous keys back failed too ({b}); they are saved in {snapshot}"
                            ),
                        }
                    ));
                }
            }
        }
        start_again(opts.progress)
    })();
    if let Err(e) = after {
        opts.progress
            .step(&format!("{e}; swapping the previous database back"));
        if let Some((slot, _)) = &live
            && let Some(rt) = opts.runtime
        {
            let _ = rt.stop(product, *slot);
        }
        let failed = names::derived(&db.name, "failed_restore", &ts)?;
        let back = match aside {
            Some(prev) => swap(&url, &db.name, Some(&failed), prev),
            None => swap(&url, &db.name, None, &failed).map(|_| ()),
        };
        let again = start_again(opts.progress);
        return Err(BackupError::Failed(match (back, aside) {
            (Ok(()), Some(_)) => format!(
                "{e}\nthe previous database is live again; the restored one is kept as {failed}{}",
                again.err().map_or(String::new(), |e| format!(
                    " (starting {product} again failed: {e})"
                ))
            ),
            (Ok(()), None) => format!("{e}\nthe restored database is kept as {failed}"),
            (Err(b), _) => format!(
                "{e}\nswapping back failed too: {b}\nthe previous database is kept as {previous}"
            ),
        }));
    }
    let mut warnings = warnings;
    if let Some(mt) = maintenance.take()
        && let Err(e) = mt.end(opts.progress)
    {
        warnings.push(e);
    }
    Ok(RestoreReport {
        product: product.to_string(),
        database: db.name.clone(),
        from: r.path().display().to_string(),
        previous_database: aside.map(str::to_string),
        previous_redis,
        slot: live.as_ref().map(|(s, _)| *s),
        version: live.map(|(_, v)| v),
        tables: r.table_count,
        rows: r.tables.iter().map(|t| t.rows).sum(),
        redis_keys,
        warnings,
        phases,
        duration_ms: clock.elapsed().as_millis() as u64,
    })
}

/// The product answering 503 at the front door; ended by pointing its traffic
/// back at the live slot, explicitly on success and on drop on every failure path.
struct Maintenance<'a> {
    front_door: Box<dyn berth_deploy::front_door::FrontDoor + Send + Sync + 'a>,
    runtime: &'a dyn Runtime,
    token: berth_deploy::front_door::Maintenance,
    product: &'a str,
    slot: Slot,
    ended: bool,
}

impl Maintenance<'_> {
    fn end(mut self, progress: &dyn berth_cmd::progress::Progress) -> Result<(), String> {
        progress.step(&format!(
            "front door: {} serves the {} slot again",
            self.product, self.slot
        ));
        self.ended = true;
        self.switch_back()
    }

    fn switch_back(&self) -> Result<(), String> {
        self.front_door.end_maintenance(&self.token, self.runtime)
    }
}

impl Drop for Maintenance<'_> {
    fn drop(&mut self) {
        if !self.ended
            && let Err(e) = self.switch_back()
        {
            tracing::warn!("{e}");
        }
    }
}

/// Save the product's current Redis keys beside the backup, encrypted like it.
fn save_redis(
    m: &Manifest,
    root: &Path,
    product: &str,
    r: &Record,
    ts: &str,
) -> Result<String, BackupError> {
    let recipients = stream::recipients(&r.recipients)?;
    let settings = m.backup_settings(product);
    let stem = format!("{product}_{}_pre_restore", ts.to_uppercase());
    let part = crate::redis::dump(m, root, product, &r.dir, &stem, &settings, &recipients)?;
    Ok(part.file)
}

/// Rename `live` to `aside` (when there is one) and `incoming` to `live` in one
/// transaction, after terminating the connections to both; retried while new
/// connections race in.
fn swap(
    url: &ServiceUrl,
    live: &str,
    aside: Option<&str>,
    incoming: &str,
) -> Result<(), BackupError> {
    let mut s = pg::session(url, "postgres")?;
    let mut last = String::new();
    for _ in 0..SWAP_TRIES {
        pg::query(
            &mut s,
            &format!(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname IN ({}, {}) AND pid <> pg_backend_pid()",
                pg::lit(live),
                pg::lit(incoming)
            ),
            "terminate connections",
        )?;
        // Both renames in one round trip: the statements of one simple query run as
        // one implicit transaction, so both happen or (on any error) neither does.
        let mut renames = Vec::new();
        if let Some(a) = aside {
            renames.push(format!(
                "ALTER DATABASE {} RENAME TO {}",
                pg::ident(live),
                pg::ident(a)
            ));
        }
        renames.push(format!(
            "ALTER DATABASE {} RENAME TO {}",
            pg::ident(incoming),
            pg::ident(live)
        ));
        match pg::query(&mut s, &renames.join("; "), "rename") {
            Ok(_) => return Ok(()),
            Err(e) => {
                last = e.to_string();
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
fn debug_pause(point: &str, progress: &dyn berth_cmd::progress::Progress) {
    if std::env::var("BERTH_DEBUG_PAUSE_RESTORE").is_ok_and(|p| p == point) {
        progress.step(&format!("paused: {point} (BERTH_DEBUG_PAUSE_RESTORE)"));
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}
