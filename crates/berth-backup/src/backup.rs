//! `berth backup <product>`: pg_dump in one snapshot, streamed through zstd (and age)
//! into a temporary file that is renamed only when complete, plus its record.

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;

use berth_manifest::Manifest;

use crate::catalog::{self, Record};
use crate::names::ProductLock;
use crate::stream::{self, CountingReader, Encoder};
use crate::{BackupError, pg, redis, stamp};

pub struct Options<'a> {
    pub manifest: &'a Manifest,
    /// The manifest directory.
    pub root: &'a Path,
    pub product: &'a str,
    /// Called with the bytes pg_dump has written so far.
    pub progress: &'a dyn berth_cmd::progress::Progress,
}

/// Removes a partial file unless disarmed.
pub(crate) struct Partial(pub Option<PathBuf>);

impl Drop for Partial {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// What a backup directory's own `.gitignore` holds: everything, itself included, so
/// database dumps inside a repository never show as changes (nor get committed) and the
/// rule itself leaves the work tree clean.
pub const GITIGNORE: &str =
    "# berth: database backups, never committed (this file ignores itself too)\n*\n";

/// Create the product's backup directory, private to the owner and git-ignored.
pub(crate) fn ensure_dir(dir: &Path) -> Result<(), BackupError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)
        .map_err(|e| BackupError::Failed(format!("could not create {}: {e}", dir.display())))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| BackupError::Failed(format!("could not restrict {}: {e}", dir.display())))?;
    let ignore = dir.join(".gitignore");
    if !ignore.exists() {
        // Two backups may start at once: each writes its own temp file, and either
        // rename leaves the same content in place. Not a `.partial` name: this runs
        // before the backup lock, and the lock holder removes `.partial` leftovers.
        let tmp = dir.join(format!(".gitignore.{}.tmp", std::process::id()));
        let written = std::fs::write(&tmp, GITIGNORE)
            .and_then(|()| std::fs::File::open(&tmp)?.sync_all())
            .and_then(|()| std::fs::rename(&tmp, &ignore));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(BackupError::Failed(format!(
                "could not write {}: {e}",
                ignore.display()
            )));
        }
    }
    Ok(())
}

/// A stem in `dir` starting with `base` that no backup file uses yet (two backups in
/// the same second get `-2`, `-3`...; the dump and its Redis part share the stem).
fn free_stem(dir: &Path, base: &str) -> String {
    let taken = |stem: &str| {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.starts_with(&format!("{stem}.")) || n.starts_with(&format!(".{stem}."))
            })
    };
    let mut stem = base.to_string();
    let mut n = 1;
    while taken(&stem) {
        n += 1;
        stem = format!("{base}-{n}");
    }
    stem
}

pub fn backup(opts: &Options<'_>) -> Result<Record, BackupError> {
    let m = opts.manifest;
    let product = opts.product;
    let p = m.products.get(product).ok_or_else(|| {
        let known: Vec<_> = m.products.keys().map(|k| format!("`{k}`")).collect();
        BackupError::Config(format!(
            "there is no product `{product}`; products: {}",
            known.join(", ")
        ))
    })?;
    let db = p.database.as_ref().ok_or_else(|| {
        BackupError::Config(format!(
            "product `{product}` has no [products.{product}.database]: nothing to back up"
        ))
    })?;
    let settings = m.backup_settings(product);
    let recipients = stream::recipients(&settings.recipients)?;
    let url = berth_provision::postgres_admin_url(m, opts.root)
        .map_err(|e| BackupError::Config(e.to_string()))?;
    let dir = catalog::backup_dir(m, opts.root, product);
    ensure_dir(&dir)?;
    let _lock = ProductLock::acquire(&dir, product, "backup")?;
    // Under the lock no other backup, verify or restore of this product runs: every
    // partial file here is a leftover of one that was killed.
    for left in remove_partials(&dir) {
        tracing::warn!("removed {left}, left by an interrupted backup, verify or restore");
    }

    let started_unix = crate::now_unix();
    let clock = Instant::now();
    let (compact, started) = stamp(started_unix);
    let age_ext = if recipients.is_empty() { "" } else { ".age" };
    let stem = free_stem(&dir, &format!("{product}_{compact}"));
    let name = format!("{stem}.dump.zst{age_ext}");
    let pg_dump_version = pg::pg_dump_version()?;

    // One snapshot for the dump and the row counts: a transaction exports it and stays
    // open (in its own session) until pg_dump is done.
    let mut snap_session = pg::session(&url, &db.name)?;
    pg::query(
        &mut snap_session,
        "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY",
        "start the snapshot transaction",
    )?;
    let snapshot = pg::query(
        &mut snap_session,
        "SELECT pg_export_snapshot()",
        "export a snapshot",
    )?
    .pop()
    .unwrap_or_default();
    let server_version = pg::query(&mut snap_session, "SHOW server_version", "read the version")?
        .pop()
        .unwrap_or_default();

    let mut dump = pg::client("pg_dump", &url, &db.name);
    dump.args(["--format=custom", "--compress=0", "--no-sync"])
        .arg(format!("--snapshot={snapshot}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = dump.spawn().map_err(|e| {
        BackupError::Failed(format!(
            "could not run pg_dump (install postgresql-client): {e}"
        ))
    })?;
    let stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    // Count rows in the same snapshot while pg_dump streams.
    let counter = std::thread::spawn(move || {
        let counts = pg::table_counts(&mut snap_session);
        (snap_session, counts)
    });

    let tmp = stream::partial_path(&dir, &name);
    let _ = std::fs::remove_file(&tmp);
    let mut partial = Partial(Some(tmp.clone()));
    let file = stream::create_private(&tmp)
        .map_err(|e| BackupError::Failed(format!("could not create {}: {e}", tmp.display())))?;
    let written = (|| -> Result<(u64, stream::Encoded), BackupError> {
        let mut enc = Encoder::new(file, settings.level, settings.threads, &recipients)?;
        let mut reader = CountingReader {
            inner: io::BufReader::with_capacity(1 << 20, stdout),
            bytes: 0,
            progress: opts.progress,
        };
        // Errors name the file (a full disk says where); the partial file goes.
        let at = dir.join(&name);
        io::copy(&mut reader, &mut enc).map_err(stream::io_failed_at("write the backup", &at))?;
        let encoded = enc
            .finish()
            .map_err(stream::io_failed_at("finish the backup", &at))?;
        Ok((reader.bytes, encoded))
    })();
    if written.is_err() {
        let _ = child.kill();
    }
    let status = child.wait();
    let dump_err = err_reader.join().unwrap_or_default();
    let (session, counts) = counter
        .join()
        .map_err(|_| BackupError::Failed("the row counter panicked".into()))?;
    drop(session);
    let (dump_bytes, encoded) = written?;
    match status {
        Ok(s) if s.success() => {}
        other => {
            let tail: Vec<&str> = dump_err.lines().rev().take(8).collect();
            return Err(BackupError::Failed(format!(
                "pg_dump of {} failed ({}):\n{}",
                db.name,
                other.map_or_else(|e| e.to_string(), |s| s.to_string()),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            )));
        }
    }
    let tables = counts?;
    let final_path = dir.join(&name);
    std::fs::rename(&tmp, &final_path).map_err(|e| {
        BackupError::Failed(format!(
            "could not move the backup into place at {}: {e}",
            final_path.display()
        ))
    })?;
    partial.0 = None;

    // The database backup stands on its own: a Redis failure is recorded beside it.
    let (redis, redis_error) = if settings.redis && p.redis.is_some() {
        match redis::dump(m, opts.root, product, &dir, &stem, &settings, &recipients) {
            Ok(part) => (Some(part), None),
            Err(e) => (None, Some(e.to_string())),
        }
    } else {
        (None, None)
    };

    let finished_unix = crate::now_unix();
    let record = Record {
        format: 1,
        product: product.to_string(),
        database: db.name.clone(),
        file: name,
        started,
        started_unix,
        finished: stamp(finished_unix).1,
        finished_unix,
        // Under the product lock: no other backup takes a number now.
        seq: catalog::list(m, opts.root, Some(product))
            .iter()
            .map(|r| r.seq)
            .max()
            .unwrap_or(0)
            + 1,
        duration_ms: clock.elapsed().as_millis() as u64,
        server_version,
        pg_dump_version,
        dump_bytes,
        file_bytes: encoded.file_bytes,
        sha256: encoded.sha256,
        compression: "zstd".into(),
        level: settings.level,
        encrypted: !recipients.is_empty(),
        recipients: settings.recipients.clone(),
        table_count: tables.len(),
        tables,
        redis,
        redis_error,
        verified: None,
        offsite: None,
        dir: dir.clone(),
    };
    debug_pause_backup(&record);
    // A backup without its record is invisible to `backup list` and `restore latest`:
    // if the record cannot be written, the backup goes too.
    if let Err(e) = write_record(&record) {
        let mut files = vec![record.path()];
        files.extend(record.redis.as_ref().map(|r| dir.join(&r.file)));
        for f in &files {
            let _ = std::fs::remove_file(f);
        }
        return Err(BackupError::Failed(format!(
            "{e}; the backup file was removed, since without its record it could be neither listed nor restored"
        )));
    }
    Ok(record)
}

/// Remove every `.<name>.partial` file in `dir` (call only under the product lock).
/// Returns the names removed.
fn remove_partials(dir: &Path) -> Vec<String> {
    let mut removed = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.')
            && name.ends_with(".partial")
            && e.file_type().is_ok_and(|t| t.is_file())
            && std::fs::remove_file(e.path()).is_ok()
        {
            removed.push(name);
        }
    }
    removed.sort();
    removed
}

/// Test hook: `BERTH_DEBUG_PAUSE_BACKUP=dumped` holds still once the dump is in
/// place and before its record is written, until stdin closes.
fn debug_pause_backup(r: &Record) {
    if std::env::var("BERTH_DEBUG_PAUSE_BACKUP").is_ok_and(|p| p == "dumped") {
        tracing::warn!("paused: dumped {} (BERTH_DEBUG_PAUSE_BACKUP)", r.file);
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
    }
}

/// Write (or rewrite) a record beside its backup, atomically, mode 0600.
pub fn write_record(r: &Record) -> Result<(), BackupError> {
    let mut json = serde_json::to_string_pretty(r).expect("record serializes");
    json.push('\n');
    let path = r.record_path();
    stream::write_atomic(&path, json.as_bytes())
        .map_err(|e| BackupError::Failed(format!("could not write {}: {e}", path.display())))
}
