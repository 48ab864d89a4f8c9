//! `berth backup verify`: checksum, then a real restore into a scratch database whose
//! tables and row counts must match the ones recorded at backup time.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use berth_manifest::Manifest;
use berth_provision::url::ServiceUrl;
use serde::Serialize;

use crate::backup::{Partial, write_record};
use crate::catalog::{Record, Verification};
use crate::{BackupError, pg, stamp, stream};

/// Check the file against the record's checksum.
pub fn check_checksum(r: &Record) -> Result<(), String> {
    let path = r.path();
    let got = stream::sha256_file(&path)
        .map_err(|e| format!("could not read {}: {e}", path.display()))?;
    if got != r.sha256 {
        return Err(format!(
            "checksum mismatch: {} has sha256 {got}, its record says {}",
            path.display(),
            r.sha256
        ));
    }
    if let Some(redis) = &r.redis {
        let p = r.dir.join(&redis.file);
        let got =
            stream::sha256_file(&p).map_err(|e| format!("could not read {}: {e}", p.display()))?;
        if got != redis.sha256 {
            return Err(format!(
                "checksum mismatch: {} has sha256 {got}, its record says {}",
                p.display(),
                redis.sha256
            ));
        }
    }
    Ok(())
}

/// Decode the backup into a plain pg_dump archive beside it (removed when the guard drops).
pub(crate) fn decode(
    r: &Record,
    identities: &[Box<dyn age::Identity>],
    tag: &str,
) -> Result<(Partial, PathBuf), BackupError> {
    let t = Instant::now();
    let mut input = stream::decoder(&r.path(), r.encrypted, identities)?;
    let tmp = stream::partial_path(&r.dir, &format!("{}.{tag}", r.file));
    let _ = std::fs::remove_file(&tmp);
    let guard = Partial(Some(tmp.clone()));
    let mut out = stream::create_private(&tmp)
        .map_err(|e| BackupError::Failed(format!("could not create {}: {e}", tmp.display())))?;
    io::copy(&mut input, &mut out).map_err(|e| {
        BackupError::Failed(format!(
            "{} does not decompress (damaged or truncated): {e}",
            r.path().display()
        ))
    })?;
    tracing::info!(
        "decompressed {} to {}: {:?}",
        r.file,
        tmp.display(),
        t.elapsed()
    );
    Ok((guard, tmp))
}

/// Restore the archive at `plain` into a new database `target` (owned by `owner` when
/// given) and compare its tables with the record. The database is left in place.
pub(crate) fn restore_new(
    url: &ServiceUrl,
    r: &Record,
    plain: &Path,
    target: &str,
    owner: Option<&str>,
    jobs: u32,
) -> Result<(), BackupError> {
    let mut admin = pg::session(url, "postgres")?;
    let owner_sql = owner.map_or(String::new(), |o| format!(" OWNER {}", pg::ident(o)));
    pg::query(
        &mut admin,
        &format!(
            "CREATE DATABASE {}{owner_sql} TEMPLATE template0",
            pg::ident(target)
        ),
        &format!("create the database {target}"),
    )?;
    if let Some(o) = owner {
        // As `berth provision` leaves a product database: only its role may use it.
        let mut s = pg::session(url, target)?;
        pg::query(
            &mut s,
            &format!("ALTER SCHEMA public OWNER TO {}", pg::ident(o)),
            "give the public schema to the product role",
        )?;
        pg::query(
            &mut s,
            "REVOKE ALL ON SCHEMA public FROM PUBLIC",
            "restrict the public schema",
        )?;
        for sql in [
            format!(
                "REVOKE CONNECT, TEMPORARY ON DATABASE {} FROM PUBLIC",
                pg::ident(target)
            ),
            format!(
                "GRANT CONNECT, TEMPORARY ON DATABASE {} TO {}",
                pg::ident(target),
                pg::ident(o)
            ),
        ] {
            pg::query(&mut admin, &sql, "set the database grants")?;
        }
    }
    let t = Instant::now();
    pg::pg_restore(url, target, plain, jobs, owner)?;
    tracing::info!("pg_restore -j {jobs} into {target}: {:?}", t.elapsed());
    let t = Instant::now();
    let mut s = pg::session(url, target)?;
    let got = pg::table_counts(&mut s)?;
    tracing::info!("row counts of {target}: {:?}", t.elapsed());
    let problems = pg::compare_tables(&r.tables, &got);
    if !problems.is_empty() {
        return Err(BackupError::Failed(format!(
            "the restored database does not match the backup record:\n  {}",
            problems.join("\n  ")
        )));
    }
    Ok(())
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
    pub duration_ms: u64,
}

pub struct VerifyOptions<'a> {
    pub manifest: &'a Manifest,
    pub root: &'a Path,
    pub identities: &'a [Box<dyn age::Identity>],
    pub jobs: u32,
}

/// Verify one backup and record the outcome in its record.
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
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let scratch = format!("{}_verify_{}", r.database, stamp(now).0.to_lowercase());
    let outcome = (|| -> Result<(), BackupError> {
        check_checksum(&r).map_err(BackupError::Failed)?;
        let (_guard, plain) = decode(&r, opts.identities, "verify")?;
        let result = restore_new(&url, &r, &plain, &scratch, None, opts.jobs);
        let dropped =
            pg::session(&url, "postgres").and_then(|mut s| pg::drop_database(&mut s, &scratch));
        result?;
        dropped
    })();
    let problem = match outcome {
        Ok(()) => None,
        Err(BackupError::Config(e)) => return Err(BackupError::Config(e)),
        Err(BackupError::Failed(e)) => Some(e),
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
    // The record may be gone if the file was pruned meanwhile; the report still stands.
    let _ = write_record(&r);
    Ok(VerifyReport {
        file: r.path().display().to_string(),
        ok: problem.is_none(),
        problem,
        tables: r.table_count,
        rows: r.tables.iter().map(|t| t.rows).sum(),
        scratch_database: scratch,
        duration_ms: clock.elapsed().as_millis() as u64,
    })
}
