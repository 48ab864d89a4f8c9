//! `berth backup verify`: checksum, then a real restore into a scratch database whose
//! tables and row counts must match the ones recorded at backup time. It restores the
//! way `berth restore` does (as the product role, extensions by the admin), so a
//! backup that verifies is one that restores.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Instant;

use berth_manifest::Manifest;
use berth_provision::session::PgSession;
use berth_provision::url::ServiceUrl;
use serde::Serialize;

use crate::backup::{Partial, write_record};
use crate::catalog::{self, Record, Verification};
use crate::names::{self, ProductLock};
use crate::{BackupError, pg, stamp, stream};

/// Check the file (and its Redis part) against the record's checksums.
pub fn check_checksum(r: &Record) -> Result<(), BackupError> {
    check_files(r, true)
}

/// Check the Redis part only ([`decode`] checks the main file while it decodes it).
pub(crate) fn check_redis_checksum(r: &Record) -> Result<(), BackupError> {
    check_files(r, false)
}

fn missing(path: &Path) -> BackupError {
    BackupError::Damaged(format!("{} is missing", path.display()))
}

fn mismatch(path: &Path, got: &str, want: &str) -> BackupError {
    BackupError::Damaged(format!(
        "checksum mismatch: {} has sha256 {got}, its record says {want}",
        path.display()
    ))
}

fn check_files(r: &Record, main: bool) -> Result<(), BackupError> {
    let mut files = Vec::new();
    if main {
        files.push((r.path(), r.sha256.clone()));
    }
    if let Some(redis) = &r.redis {
        files.push((r.dir.join(&redis.file), redis.sha256.clone()));
    }
    for (path, want) in files {
        let got = match stream::sha256_file(&path) {
            Ok(g) => g,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(missing(&path)),
            Err(e) => {
                return Err(BackupError::Failed(format!(
                    "could not read {}: {e}",
                    path.display()
                )));
            }
        };
        if got != want {
            return Err(mismatch(&path, &got, &want));
        }
    }
    Ok(())
}

/// Decode the backup into a plain pg_dump archive beside it (removed when the guard
/// drops), checking the file against its record's checksum as it goes: a thread
/// reads and hashes the file while this one decompresses (and decrypts) it. A file
/// whose checksum does not match is reported as such, whatever decoding made of it;
/// nothing but the temporary archive is written before the checksum is known good.
pub(crate) fn decode(
    r: &Record,
    identities: &[Box<dyn age::Identity>],
    tag: &str,
) -> Result<(Partial, PathBuf), BackupError> {
    let t = Instant::now();
    let path = r.path();
    let (raw, hasher) = match stream::hashing_reader(&path) {
        Ok(x) => x,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(missing(&path)),
        Err(e) => {
            return Err(BackupError::Failed(format!(
                "could not read {}: {e}",
                path.display()
            )));
        }
    };
    let decoded = (|| {
        match rustix::fs::statvfs(&r.dir) {
            Ok(fs) => room_for(
                r.dump_bytes,
                fs.f_bavail.saturating_mul(fs.f_frsize),
                &r.dir,
            )?,
            Err(e) => {
                tracing::debug!("could not read the free space of {}: {e}", r.dir.display())
            }
        }
        let mut input = stream::decoder_of(Box::new(raw), &path, r.encrypted, identities)?;
        let tmp = stream::partial_path(&r.dir, &format!("{}.{tag}", r.file));
        let _ = std::fs::remove_file(&tmp);
        let guard = Partial(Some(tmp.clone()));
        let mut out = stream::create_private(&tmp)
            .map_err(|e| BackupError::Failed(format!("could not create {}: {e}", tmp.display())))?;
        if let Err((reading, e)) = stream::copy_pipelined(&mut input, &mut out) {
            return Err(if reading {
                BackupError::Damaged(format!(
                    "{} does not decompress (damaged or truncated): {e}",
                    path.display()
                ))
            } else {
                BackupError::Failed(format!(
                    "could not write the decompressed archive {}: {e}",
                    tmp.display()
                ))
            });
        }
        Ok((guard, tmp))
    })();
    // Dropped by now: the decoder and its end of the channel; the thread hashes on to the end.
    let got = hasher
        .join()
        .map_err(|_| BackupError::Failed("the checksum thread panicked".into()))?
        .map_err(|e| BackupError::Failed(format!("could not read {}: {e}", path.display())))?;
    if got != r.sha256 {
        return Err(mismatch(&path, &got, &r.sha256));
    }
    let (guard, tmp) = decoded?;
    tracing::info!(
        "checked the checksum of {} and decompressed it to {}: {:?}",
        r.file,
        tmp.display(),
        t.elapsed()
    );
    Ok((guard, tmp))
}

/// `decode` writes the whole uncompressed archive beside the backup (pg_restore -j
/// needs a file it can seek in): refuse before writing a byte when `need` bytes and a
/// margin do not fit in the `free` bytes of `dir`'s file system.
fn room_for(need: u64, free: u64, dir: &Path) -> Result<(), BackupError> {
    let margin = (need / 100).max(16 << 20);
    if free >= need.saturating_add(margin) {
        return Ok(());
    }
    Err(BackupError::Failed(format!(
        "the decoded archive needs {} free in {} (pg_restore -j reads a seekable file), \
         only {} is free: free some space there, or move the backup and its .json record \
         to a larger disk and pass that path; nothing was changed",
        crate::human_bytes(need.saturating_add(margin)),
        dir.display(),
        crate::human_bytes(free)
    )))
}

/// Drop what killed runs of verify or restore left behind for `db`: scratch databases
/// and decoded archives. Only call with the product's lock held.
pub(crate) fn clean_leftovers(
    admin: &mut PgSession,
    db: &str,
    dir: &Path,
) -> Result<Vec<String>, BackupError> {
    let mut dropped = Vec::new();
    for name in pg::databases(admin)? {
        if names::is_scratch(db, &name) {
            pg::drop_database(admin, &name)?;
            dropped.push(name);
        }
    }
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if n.starts_with('.') && (n.ends_with(".verify.partial") || n.ends_with(".restore.partial"))
        {
            let _ = std::fs::remove_file(e.path());
        }
    }
    Ok(dropped)
}

/// Restore the archive at `plain` into a new database `target` shaped like `shape`
/// (owned by, and restored as, `owner` when given) and compare its tables with the
/// record: [`create_new`], then [`fill_new`]. On success the database stays; on any
/// failure after it was created it is dropped (a database this call did not create is
/// never touched). Returns warnings.
#[allow(clippy::too_many_arguments)]
pub(crate) fn restore_new(
    url: &ServiceUrl,
    r: &Record,
    plain: &Path,
    target: &str,
    owner: Option<&str>,
    shape: &pg::Shape,
    jobs: u32,
    analyze: bool,
    phases: &mut Vec<Phase>,
) -> Result<Vec<String>, BackupError> {
    let t = Instant::now();
    create_new(url, target, owner, shape)?;
    phases.push(Phase::since(CREATE_PHASE, t));
    fill_new(url, r, plain, target, owner, jobs, analyze, phases)
}

/// The phase [`create_new`] is timed as.
pub(crate) const CREATE_PHASE: &str = "create the database";

/// Create the empty database `target` shaped like `shape` (encoding, locale, grants,
/// settings), owned by `owner` with its public schema given to `owner`: on one admin
/// session (the shape's statements in one round trip) and one session to `target`
/// (both schema statements in one round trip). On a failure after the CREATE the
/// database is dropped again.
pub(crate) fn create_new(
    url: &ServiceUrl,
    target: &str,
    owner: Option<&str>,
    shape: &pg::Shape,
) -> Result<(), BackupError> {
    let mut admin = pg::session(url, "postgres")?;
    pg::create_database(&mut admin, target, owner, shape)?;
    let shaped = (|| -> Result<(), BackupError> {
        pg::apply_shape(&mut admin, target, owner, shape)?;
        if let Some(o) = owner {
            // The public schema belongs to the product role, as `berth provision` leaves it.
            let mut s = pg::session(url, target)?;
            pg::query(
                &mut s,
                &format!(
                    "ALTER SCHEMA public OWNER TO {}; REVOKE ALL ON SCHEMA public FROM PUBLIC",
                    pg::ident(o)
                ),
                "give the public schema to the product role and restrict it",
            )?;
        }
        Ok(())
    })();
    if shaped.is_err() {
        let _ = pg::drop_database(&mut admin, target);
    }
    shaped
}

/// Restore the archive at `plain` into `target` (made by [`create_new`]) as `owner`,
/// count its rows (and ANALYZE it) and compare its tables with the record. On any
/// failure the database is dropped. Returns warnings.
#[allow(clippy::too_many_arguments)]
pub(crate) fn fill_new(
    url: &ServiceUrl,
    r: &Record,
    plain: &Path,
    target: &str,
    owner: Option<&str>,
    jobs: u32,
    analyze: bool,
    phases: &mut Vec<Phase>,
) -> Result<Vec<String>, BackupError> {
    let filled = (|| -> Result<Vec<String>, BackupError> {
        let restored = pg::pg_restore(url, target, plain, jobs, owner)?;
        phases.push(Phase::of(
            &format!("pg_restore -j {jobs}: schema, data, indexes and constraints"),
            restored.main_ms,
        ));
        // The rows: the statistics' live counts where they equal the record, else a scan.
        let t = Instant::now();
        let got = pg::per_table(url, target, jobs, pg::TableWork::Count, &r.tables)?;
        phases.push(Phase::since("row counts", t));
        let problems = pg::compare_tables(&r.tables, &got);
        if !problems.is_empty() {
            return Err(BackupError::Damaged(format!(
                "the restored database does not match the backup record:\n  {}",
                problems.join("\n  ")
            )));
        }
        // pg_restore leaves the planner without statistics: with `analyze`, gather them
        // (after the indexes: an expression index's statistics need the index), so the
        // product's first queries are planned on real numbers, not guesses, until
        // autovacuum gets to it.
        if analyze {
            let t = Instant::now();
            pg::per_table(url, target, jobs, pg::TableWork::Analyze, &r.tables)?;
            phases.push(Phase::since("ANALYZE", t));
        }
        Ok(restored.warnings)
    })();
    if filled.is_err()
        && let Err(e) =
            pg::session(url, "postgres").and_then(|mut s| pg::drop_database(&mut s, target))
    {
        tracing::warn!("could not drop {target}: {e}");
    }
    filled
}

/// How long one phase of a restore or verify took.
#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    pub name: String,
    pub ms: u64,
}

impl Phase {
    pub fn since(name: &str, t: Instant) -> Self {
        Self::of(name, t.elapsed().as_millis() as u64)
    }

    pub fn of(name: &str, ms: u64) -> Self {
        tracing::info!("{name}: {ms} ms");
        Self {
            name: name.to_string(),
            ms,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub file: String,
    pub ok: bool,
    /// Why not, when not ok.
    pub problem: Option<String>,
    pub tables: usize,
    pub rows: u64,
    pub scratch_database: String,
    pub warnings: Vec<String>,
    pub duration_ms: u64,
}

pub struct VerifyOptions<'a> {
    pub manifest: &'a Manifest,
    pub root: &'a Path,
    pub identities: &'a [Box<dyn age::Identity>],
    pub jobs: u32,
}

/// Verify one backup and record the outcome in its record (problems of the backup
/// itself only: a server that cannot be reached says nothing about the file).
pub fn verify(opts: &VerifyOptions<'_>, mut r: Record) -> Result<VerifyReport, BackupError> {
    let clock = Instant::now();
    if r.encrypted && opts.identities.is_empty() {
        return Err(BackupError::Config(format!(
            "{} is encrypted: pass the age identity with --identity FILE (or BERTH_AGE_IDENTITY)",
            r.path().display()
        )));
    }
    let url = berth_provision::postgres_admin_url(opts.manifest, opts.root)
        .map_err(|e| BackupError::Config(e.to_string()))?;
    let _lock = ProductLock::acquire(&r.dir, &r.product, "backup verify")?;
    let now = crate::now_unix();
    let scratch = names::derived(&r.database, "verify", &stamp(now).0.to_lowercase())?;
    // Restore as the product would be restored: as its role, when it still has one.
    let role = opts
        .manifest
        .products
        .get(&r.product)
        .and_then(|p| p.database.as_ref())
        .filter(|d| d.name == r.database)
        .map(|d| d.role.clone());
    let outcome = (|| -> Result<Vec<String>, BackupError> {
        check_redis_checksum(&r)?;
        let mut admin = pg::session(&url, "postgres")?;
        clean_leftovers(&mut admin, &r.database, &r.dir)?;
        let shape = pg::shape_or_default(&mut admin, &r.database)?;
        let (_guard, plain) = decode(&r, opts.identities, "verify")?;
        let warnings = restore_new(
            &url,
            &r,
            &plain,
            &scratch,
            role.as_deref(),
            &shape,
            opts.jobs,
            false,
            &mut Vec::new(),
        )?;
        pg::drop_database(&mut admin, &scratch)?;
        Ok(warnings)
    })();
    let (problem, warnings) = match outcome {
        Ok(w) => (None, w),
        Err(BackupError::Damaged(e)) => (Some(e), Vec::new()),
        Err(other) => return Err(other),
    };
    let (_, at) = stamp(now);
    r.verified = Some(Verification {
        at,
        at_unix: now,
        ok: problem.is_none(),
        detail: problem.clone().unwrap_or_else(|| {
            format!(
                "checksum ok; restored {} tables, row counts match",
                r.table_count
            )
        }),
    });
    // Under the lock, so a prune cannot have removed it meanwhile; never recreate one.
    if catalog::record_path_of(&r.path()).exists() {
        write_record(&r)?;
    }
    Ok(VerifyReport {
        file: r.path().display().to_string(),
        ok: problem.is_none(),
        problem,
        tables: r.table_count,
        rows: r.tables.iter().map(|t| t.rows).sum(),
        scratch_database: scratch,
        warnings,
        duration_ms: clock.elapsed().as_millis() as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_decoded_archive_must_fit_with_a_margin() {
        const MIB: u64 = 1 << 20;
        let dir = Path::new("/backups/shop");
        assert!(room_for(100 * MIB, 200 * MIB, dir).is_ok());
        // The margin is 16 MiB or 1%, whichever is larger.
        assert!(room_for(100 * MIB, 116 * MIB, dir).is_ok());
        assert!(room_for(100 * MIB, 116 * MIB - 1, dir).is_err());
        assert!(room_for(10_000 * MIB, 10_099 * MIB, dir).is_err());
        assert!(room_for(10_000 * MIB, 10_100 * MIB, dir).is_ok());
        let Err(BackupError::Failed(msg)) = room_for(100 * MIB, 50 * MIB, dir) else {
            panic!("no room must be refused");
        };
        assert!(
            msg.contains("needs 116.0 MiB free in /backups/shop")
                && msg.contains("only 50.0 MiB is free")
                && msg.contains("nothing was changed"),
            "{msg}"
        );
    }
}
