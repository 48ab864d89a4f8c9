//! `berth backup [list|verify|prune]` and `berth restore`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use berth_backup::prune::{self, Item, Policy};
use berth_backup::restore::RestoreOptions;
use berth_backup::verify::{VerifyOptions, verify};
use berth_backup::{BackupError, Record, human_bytes};
use berth_cmd::progress::Progress;
use berth_deploy::lock::Holder;
use berth_deploy::record::AuditRecord;
use berth_deploy::store::Store;
use berth_manifest::Manifest;
use serde_json::json;

use crate::cli::{
    BackupArgs, BackupCommand, BackupListArgs, BackupPruneArgs, BackupVerifyArgs, Cli, RestoreArgs,
};
use crate::exit::{CliError, Result};
use crate::output::{Format, Printer};
use crate::progress::{Reporter, Shape};

struct Loaded {
    manifest: Manifest,
    root: PathBuf,
}

fn load(cli: &Cli, printer: &Printer) -> Result<Loaded> {
    let path = super::find_manifest(cli)?;
    let manifest = super::load_manifest(&path, printer)?;
    let root = super::render::absolute(&super::manifest_dir(&path));
    Ok(Loaded { manifest, root })
}

fn cli_err(e: BackupError) -> CliError {
    match e {
        BackupError::Config(m) => CliError::Config(m),
        BackupError::Failed(m) | BackupError::Damaged(m) => CliError::Failed(m),
    }
}

/// `3h`, `2d`: how long ago.
pub fn human_age(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

fn audit(l: &Loaded, record: AuditRecord) {
    match Store::from_manifest(&l.manifest, &l.root) {
        Ok(store) => store.record(None, &record),
        Err(e) => tracing::warn!("no audit record written: {e}"),
    }
}

fn operator(root: &Path) -> String {
    match berth_git::Repo::discover(root) {
        Ok(Some(r)) => berth_deploy::operator(&r),
        _ => std::env::var("BERTH_OPERATOR")
            .or_else(|_| std::env::var("USER"))
            .unwrap_or_else(|_| "unknown".into()),
    }
}

fn known(m: &Manifest, product: &str) -> Result<()> {
    super::deploy::product_known(m, product)
}

pub fn run(cli: &Cli, args: &BackupArgs, printer: &Printer) -> Result<ExitCode> {
    match &args.command {
        Some(BackupCommand::List(a)) => return list(cli, a, printer),
        Some(BackupCommand::Verify(a)) => return verify_cmd(cli, a, printer),
        Some(BackupCommand::Prune(a)) => return prune_cmd(cli, a, printer),
        None => {}
    }
    let l = load(cli, printer)?;
    let products: Vec<String> = match &args.product {
        Some(p) => {
            known(&l.manifest, p)?;
            vec![p.clone()]
        }
        None => l
            .manifest
            .products
            .iter()
            .filter(|(n, p)| p.database.is_some() && l.manifest.backup_settings(n).enabled)
            .map(|(n, _)| n.clone())
            .collect(),
    };
    if products.is_empty() {
        return Err(CliError::Config(
            "no product has a database: nothing to back up".into(),
        ));
    }
    let mut done = Vec::new();
    let mut failed = Vec::new();
    for product in &products {
        let progress = Reporter::new(Some(product), Shape::Bytes);
        let result = berth_backup::backup(&berth_backup::Options {
            manifest: &l.manifest,
            root: &l.root,
            product,
            progress: &progress,
        });
        drop(progress);
        let mut entry = AuditRecord::new("backup", product.as_str(), &operator(&l.root));
        // The off-site copy is part of the run: a backup that could not leave the
        // machine is a failed run (its local file and record stay).
        let result = result.map(|mut r| {
            match berth_backup::offsite::Remote::of(&l.manifest, &l.root, product) {
                Ok(Some(remote)) => {
                    let sent = berth_backup::offsite::send(&remote, &mut r);
                    (r, sent.err())
                }
                Ok(None) => (r, None),
                Err(e) => (r, Some(e)),
            }
        });
        match result {
            Ok((r, offsite_err)) => {
                entry.set_result(offsite_err.is_none());
                entry.file = Some(r.path().display().to_string());
                entry.bytes = Some(r.file_bytes);
                if let Some(o) = &r.offsite {
                    entry.offsite = Some(if o.ok { "ok" } else { "failed" }.to_string());
                    entry.offsite_remote = Some(o.remote.clone());
                }
                if let Some(e) = &offsite_err {
                    entry.error = Some(format!("the off-site copy failed: {e}"));
                }
                audit(&l, entry);
                if args.format == Format::Text {
                    println!(
                        "{product}: {} ({} from {} dumped, {} tables, {:.1}s{})",
                        r.path().display(),
                        human_bytes(r.file_bytes),
                        human_bytes(r.dump_bytes),
                        r.table_count,
                        r.duration_ms as f64 / 1000.0,
                        if r.encrypted { ", encrypted" } else { "" }
                    );
                    if let Some(redis) = &r.redis {
                        println!(
                            "{product}: {} ({} Redis keys)",
                            r.dir.join(&redis.file).display(),
                            redis.keys
                        );
                    }
                }
                if args.format == Format::Text
                    && let Some(o) = r.offsite.as_ref().filter(|o| o.ok)
                {
                    println!(
                        "{product}: copied to {} (size and sha256 read back{})",
                        o.remote,
                        if o.checked_by.as_deref() == Some("download") {
                            " by downloading it"
                        } else {
                            ""
                        }
                    );
                }
                done.push(record_json(&r));
                if let Some(e) = &offsite_err {
                    let msg = format!(
                        "the backup {} is complete here, but its off-site copy failed: {e}",
                        r.file
                    );
                    if products.len() == 1 {
                        if args.format == Format::Json {
                            printer.json(&json!({ "backups": done, "failed": [{"product": product, "error": msg}] }));
                        }
                        return Err(CliError::Failed(msg));
                    }
                    printer.error(&format!("{product}: {msg}"));
                    failed.push(json!({"product": product, "error": msg}));
                }
                if let Some(e) = &r.redis_error {
                    printer.error(&format!(
                        "{product}: the database backup is complete, but its Redis part failed: {e}"
                    ));
                    failed.push(json!({"product": product, "error": e}));
                }
            }
            Err(e) => {
                entry.set_result(false);
                entry.error = Some(e.to_string());
                audit(&l, entry);
                if products.len() == 1 || matches!(e, BackupError::Config(_)) {
                    if args.format == Format::Json {
                        printer.json(&json!({ "backups": done, "failed": [{"product": product, "error": e.to_string()}] }));
                    }
                    return Err(cli_err(e));
                }
                printer.error(&format!("{product}: {e}"));
                failed.push(json!({"product": product, "error": e.to_string()}));
            }
        }
    }
    if args.format == Format::Json {
        printer.json(&json!({ "backups": done, "failed": failed }));
    }
    Ok(if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn record_json(r: &Record) -> serde_json::Value {
    let mut v = serde_json::to_value(r).expect("record serializes");
    v["path"] = r.path().display().to_string().into();
    v
}

fn list(cli: &Cli, args: &BackupListArgs, printer: &Printer) -> Result<ExitCode> {
    let l = load(cli, printer)?;
    if let Some(p) = &args.product {
        known(&l.manifest, p)?;
    }
    if args.offsite {
        return list_offsite(&l, args, printer);
    }
    let records = berth_backup::list(&l.manifest, &l.root, args.product.as_deref());
    match args.format {
        Format::Json => {
            let v: Vec<_> = records.iter().map(record_json).collect();
            printer.json(&json!({ "backups": v }));
        }
        Format::Text => {
            if records.is_empty() {
                println!("no backups");
                return Ok(ExitCode::SUCCESS);
            }
            println!(
                "{:<12} {:<20} {:>6} {:>10} {:>7} {:<9} FILE",
                "PRODUCT", "FINISHED", "AGE", "SIZE", "TABLES", "VERIFIED"
            );
            let now = berth_backup::now_unix();
            for r in &records {
                let verified = match &r.verified {
                    Some(v) if v.ok => "ok",
                    Some(_) => "FAILED",
                    None => "-",
                };
                let missing = if r.path().exists() {
                    ""
                } else {
                    " (file missing)"
                };
                println!(
                    "{:<12} {:<20} {:>6} {:>10} {:>7} {:<9} {}{}{missing}",
                    r.product,
                    r.finished,
                    human_age(now.saturating_sub(r.finished_unix)),
                    human_bytes(r.file_bytes),
                    r.table_count,
                    verified,
                    r.file,
                    if r.encrypted { " (age)" } else { "" }
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `berth backup list --offsite`: the records on each product's remote.
fn list_offsite(l: &Loaded, args: &BackupListArgs, printer: &Printer) -> Result<ExitCode> {
    if l.manifest.backup.offsite.is_none() {
        return Err(CliError::Config(
            "berth.toml has no [backup.offsite]: there are no off-site copies to list".into(),
        ));
    }
    let mut rows = Vec::new();
    let mut errors = Vec::new();
    for product in l
        .manifest
        .products
        .iter()
        .filter(|(n, p)| {
            p.database.is_some() && args.product.as_ref().is_none_or(|want| want == *n)
        })
        .map(|(n, _)| n)
    {
        let remote = berth_backup::offsite::Remote::of(&l.manifest, &l.root, product)
            .map_err(cli_err)?
            .expect("offsite is set");
        let dir = berth_backup::catalog::backup_dir(&l.manifest, &l.root, product);
        match remote.records(product, &dir) {
            Ok(records) => rows.extend(records.into_iter().map(|r| (remote.dir.clone(), r))),
            Err(e) => {
                printer.error(&format!("{product}: {e}"));
                errors.push(json!({"product": product, "error": e.to_string()}));
            }
        }
    }
    match args.format {
        Format::Json => {
            let v: Vec<_> = rows
                .iter()
                .map(|(remote, r)| {
                    let mut v = serde_json::to_value(r).expect("record serializes");
                    v["remote_path"] = format!("{remote}/{}", r.file).into();
                    v["local"] = r.path().exists().into();
                    v
                })
                .collect();
            printer.json(&json!({ "backups": v, "errors": errors }));
        }
        Format::Text => {
            if rows.is_empty() && errors.is_empty() {
                println!("no off-site copies");
            } else if !rows.is_empty() {
                println!(
                    "{:<12} {:<20} {:>6} {:>10} {:<6} REMOTE",
                    "PRODUCT", "FINISHED", "AGE", "SIZE", "LOCAL"
                );
                let now = berth_backup::now_unix();
                for (remote, r) in &rows {
                    println!(
                        "{:<12} {:<20} {:>6} {:>10} {:<6} {remote}/{}",
                        r.product,
                        r.finished,
                        human_age(now.saturating_sub(r.finished_unix)),
                        human_bytes(r.file_bytes),
                        if r.path().exists() { "yes" } else { "no" },
                        r.file,
                    );
                }
            }
        }
    }
    Ok(if errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn identities(path: &Option<PathBuf>) -> Result<Vec<Box<dyn age::Identity>>> {
    match path {
        Some(p) => berth_backup::stream::identities(p).map_err(cli_err),
        None => Ok(Vec::new()),
    }
}

/// A backup named on the command line: a file, its record, or `latest` of a product.
fn resolve_record(l: &Loaded, product: Option<&str>, file: &Path) -> Result<Record> {
    if file == Path::new("latest") {
        let p = product.expect("latest needs a product");
        if let Some(r) = berth_backup::latest(&l.manifest, &l.root, p) {
            return Ok(r);
        }
        // No record here (the backup directory is gone): the newest off-site copy.
        if let Some(remote) =
            berth_backup::offsite::Remote::of(&l.manifest, &l.root, p).map_err(cli_err)?
        {
            let dir = berth_backup::catalog::backup_dir(&l.manifest, &l.root, p);
            if let Some(r) = remote.records(p, &dir).map_err(cli_err)?.pop() {
                return Ok(r);
            }
        }
        return Err(CliError::Config(format!("{p} has no backups yet")));
    }
    let record = berth_backup::catalog::record_path_of(file);
    if !file.exists() && record.exists() {
        // The file is gone but its record stays: an off-site copy may bring it back.
        return Record::read(&record).map_err(CliError::Config);
    }
    if !file.exists() {
        return Err(CliError::Config(format!(
            "{}: no such backup file",
            file.display()
        )));
    }
    Record::read(file).map_err(CliError::Config)
}

/// When the backup file is gone here, fetch its off-site copy (sha256 checked
/// against the record) so verify and restore can go on as usual.
fn fetch_offsite(m: &Manifest, root: &Path, r: &Record, with_redis: bool) -> Result<()> {
    if berth_backup::offsite::fetch_if_missing(m, root, r, with_redis).map_err(cli_err)? {
        eprintln!(
            "{}: the local copy was gone; fetched it from off-site (sha256 matches its record)",
            r.file
        );
    }
    Ok(())
}

fn verify_cmd(cli: &Cli, args: &BackupVerifyArgs, printer: &Printer) -> Result<ExitCode> {
    let l = load(cli, printer)?;
    if let Some(p) = &args.latest {
        known(&l.manifest, p)?;
    }
    let r = match (&args.file, &args.latest) {
        (Some(f), _) => resolve_record(&l, None, f)?,
        (None, Some(p)) => resolve_record(&l, Some(p), Path::new("latest"))?,
        (None, None) => unreachable!("clap requires one"),
    };
    let ids = identities(&args.identity)?;
    fetch_offsite(&l.manifest, &l.root, &r, false)?;
    let product = r.product.clone();
    let progress = Reporter::new(Some(&product), Shape::Steps);
    progress.step(&format!(
        "verify {}: checksum, then a restore into a scratch database",
        r.file
    ));
    let report = verify(
        &VerifyOptions {
            manifest: &l.manifest,
            root: &l.root,
            identities: &ids,
            jobs: args.jobs.unwrap_or_else(berth_backup::default_jobs),
        },
        r,
    )
    .map_err(cli_err)?;
    drop(progress);
    let mut entry = AuditRecord::new("backup-verify", product.as_str(), &operator(&l.root));
    entry.file = Some(report.file.clone());
    entry.set_result(report.ok);
    entry.error = report.problem.clone();
    audit(&l, entry);
    match args.format {
        Format::Json => printer.json(&serde_json::to_value(&report).expect("serializes")),
        Format::Text if report.ok => println!(
            "{}: ok (sha256 matches; restored into {} and dropped; {} tables, {} rows match; {:.1}s)",
            report.file,
            report.scratch_database,
            report.tables,
            report.rows,
            report.duration_ms as f64 / 1000.0
        ),
        Format::Text => {}
    }
    if let Some(p) = &report.problem {
        return Err(CliError::Failed(format!(
            "{} failed verification: {p}",
            report.file
        )));
    }
    Ok(ExitCode::SUCCESS)
}

fn prune_cmd(cli: &Cli, args: &BackupPruneArgs, printer: &Printer) -> Result<ExitCode> {
    let l = load(cli, printer)?;
    if let Some(p) = &args.product {
        known(&l.manifest, p)?;
    }
    let now = berth_backup::now_unix();
    let mut rows = Vec::new();
    let mut errors = Vec::new();
    for product in l
        .manifest
        .products
        .keys()
        .filter(|k| args.product.as_ref().is_none_or(|p| p == *k))
    {
        let s = l.manifest.backup_settings(product);
        let policy = Policy {
            keep_days: args.keep_days.unwrap_or(s.keep_days),
            keep_weeks: args.keep_weeks.unwrap_or(s.keep_weeks),
            keep_months: args.keep_months.unwrap_or(s.keep_months),
        };
        // Files of interrupted backups (berth killed mid-write) older than a day.
        let dir = berth_backup::catalog::backup_dir(&l.manifest, &l.root, product);
        // No backup, verify or restore of this product may run while files go.
        let _lock = if dir.is_dir() {
            Some(
                berth_backup::names::ProductLock::acquire(&dir, product, "backup prune")
                    .map_err(cli_err)?,
            )
        } else {
            None
        };
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|a| a > Duration::from_secs(86_400));
            if name.starts_with('.') && name.ends_with(".partial") && old {
                let mut deleted = false;
                if args.yes {
                    match std::fs::remove_file(e.path()) {
                        Ok(()) => deleted = true,
                        Err(err) => {
                            errors.push(format!("could not delete {}: {err}", e.path().display()))
                        }
                    }
                }
                rows.push(json!({
                    "product": product,
                    "file": e.path().display().to_string(),
                    "keep": false,
                    "deleted": deleted,
                    "reason": "left by an interrupted backup",
                    "bytes": e.metadata().map(|m| m.len()).unwrap_or(0),
                }));
            }
        }
        let records = berth_backup::list(&l.manifest, &l.root, Some(product));
        let items: Vec<Item> = records
            .iter()
            .map(|r| Item {
                seq: r.seq,
                unix: r.started_unix,
                verified: r.verified_ok(),
            })
            .collect();
        let decisions = prune::select(&items, now, policy);
        for (r, d) in records.iter().zip(decisions) {
            let mut deleted = false;
            if !d.keep && args.yes {
                match prune::delete(r) {
                    Ok(()) => deleted = true,
                    Err(e) => errors.push(format!("could not delete {}: {e}", r.path().display())),
                }
            }
            rows.push(json!({
                "product": product,
                "file": r.path().display().to_string(),
                "started": r.started,
                "keep": d.keep,
                "deleted": deleted,
                "reason": d.reason,
                "bytes": r.file_bytes,
            }));
        }
    }
    // The same policy off-site: the remote's copies are named like the local ones.
    for product in l
        .manifest
        .products
        .keys()
        .filter(|k| args.product.as_ref().is_none_or(|p| p == *k))
    {
        let Some(remote) =
            berth_backup::offsite::Remote::of(&l.manifest, &l.root, product).map_err(cli_err)?
        else {
            continue;
        };
        let s = l.manifest.backup_settings(product);
        let policy = Policy {
            keep_days: args.keep_days.unwrap_or(s.keep_days),
            keep_weeks: args.keep_weeks.unwrap_or(s.keep_weeks),
            keep_months: args.keep_months.unwrap_or(s.keep_months),
        };
        let files = match remote.list() {
            Ok(f) => f,
            Err(e) => {
                errors.push(format!("{product}: off-site: {e}"));
                continue;
            }
        };
        let local: Vec<Record> = berth_backup::list(&l.manifest, &l.root, Some(product));
        let mut copies: Vec<(String, u64, u64)> = files
            .iter()
            .filter(|f| f.name.contains(".dump.zst") && !f.name.ends_with(".json"))
            .filter_map(|f| {
                let stem = berth_backup::offsite::stem_of(&f.name);
                let unix = berth_backup::offsite::started_of(product, stem)?;
                Some((stem.to_string(), unix, f.size.max(0) as u64))
            })
            .collect();
        copies.sort_by(|a, b| (a.1, a.0.len(), &a.0).cmp(&(b.1, b.0.len(), &b.0)));
        let items: Vec<Item> = copies
            .iter()
            .map(|(stem, unix, _)| Item {
                // The local record's number where there is one (a copy whose local record
                // is gone is older than every kept one).
                seq: local
                    .iter()
                    .find(|r| berth_backup::offsite::stem_of(&r.file) == stem)
                    .map_or(0, |r| r.seq),
                unix: *unix,
                verified: local
                    .iter()
                    .any(|r| berth_backup::offsite::stem_of(&r.file) == stem && r.verified_ok()),
            })
            .collect();
        for ((stem, _, bytes), d) in copies.iter().zip(prune::select(&items, now, policy)) {
            let mut deleted = false;
            if !d.keep && args.yes {
                let mut ok = true;
                // The record last: a copy without its record is never listed.
                let mut names: Vec<&str> = files
                    .iter()
                    .map(|f| f.name.as_str())
                    .filter(|n| berth_backup::offsite::stem_of(n) == stem)
                    .collect();
                names.sort_by_key(|n| n.ends_with(".json"));
                for n in names {
                    if let Err(e) = remote.delete(n) {
                        errors.push(format!("{product}: off-site: {e}"));
                        ok = false;
                        break;
                    }
                }
                deleted = ok;
            }
            rows.push(json!({
                "product": product,
                "file": format!("{}/{stem}", remote.dir),
                "offsite": true,
                "keep": d.keep,
                "deleted": deleted,
                "reason": d.reason,
                "bytes": bytes,
            }));
        }
    }
    let going: Vec<_> = rows.iter().filter(|r| r["keep"] == false).collect();
    let freed: u64 = going.iter().filter_map(|r| r["bytes"].as_u64()).sum();
    match args.format {
        Format::Json => printer.json(&json!({ "dry_run": !args.yes, "backups": rows })),
        Format::Text => {
            for r in &rows {
                let verb = match (r["keep"].as_bool(), r["deleted"].as_bool()) {
                    (Some(true), _) => "keep",
                    (_, Some(true)) => "deleted",
                    _ if args.yes => "FAILED",
                    _ => "would delete",
                };
                println!(
                    "{verb:<12} {}  ({})",
                    r["file"].as_str().unwrap_or(""),
                    r["reason"].as_str().unwrap_or("")
                );
            }
            if going.is_empty() {
                println!("nothing to prune");
            } else if args.yes {
                println!(
                    "deleted {} backups, {} freed",
                    going.len(),
                    human_bytes(freed)
                );
            } else {
                println!(
                    "dry run: {} backups ({}) would be deleted; run again with --yes to delete them",
                    going.len(),
                    human_bytes(freed)
                );
            }
        }
    }
    if !errors.is_empty() {
        return Err(CliError::Failed(errors.join("\n")));
    }
    Ok(ExitCode::SUCCESS)
}

pub fn restore(cli: &Cli, args: &RestoreArgs, printer: &Printer) -> Result<ExitCode> {
    let l = super::deploy::load(cli, printer)?;
    known(&l.manifest, &args.product)?;
    let light = Loaded {
        manifest: l.manifest.clone(),
        root: l.root.clone(),
    };
    let r = resolve_record(&light, Some(&args.product), &args.file)?;
    let ids = identities(&args.identity)?;
    fetch_offsite(&l.manifest, &l.root, &r, args.with_redis)?;
    let db = l.manifest.products[&args.product]
        .database
        .as_ref()
        .map(|d| d.name.clone())
        .ok_or_else(|| CliError::Config(format!("product `{}` has no database", args.product)))?;
    if !args.yes {
        if !std::io::stdin().is_terminal() {
            return Err(CliError::Config(format!(
                "restore replaces the database {db} of {}: pass --yes to confirm (stdin is not a terminal)",
                args.product
            )));
        }
        eprintln!(
            "This replaces the database {db} of {} with {} (taken {}).\nThe current database is kept as {db}_pre_restore_<ts>. Type the product name to continue:",
            args.product, r.file, r.finished
        );
        let mut answer = String::new();
        let _ = std::io::stdin().read_line(&mut answer);
        if answer.trim() != args.product {
            return Err(CliError::Config(
                "not confirmed; nothing was changed".into(),
            ));
        }
    }
    let rt = super::deploy::runtime(&l, args.runtime)?;
    let op = berth_deploy::operator(&l.repo);
    let holder = Holder {
        operator: op.clone(),
        pid: std::process::id(),
        since: berth_backup::stamp(berth_backup::now_unix()).1,
        message: format!("restore from {}", r.file),
    };
    // No deploy may start (or run) while the database is swapped.
    let mut guard = l
        .store
        .acquire(&args.product, &holder, Duration::from_secs(0))
        .map_err(|e| CliError::Failed(e.to_string()))?;
    let progress = Reporter::new(Some(&args.product), Shape::Steps);
    let result = berth_backup::restore::restore(
        &mut RestoreOptions {
            manifest: &l.manifest,
            root: &l.root,
            product: &args.product,
            identities: &ids,
            jobs: args.jobs.unwrap_or_else(berth_backup::default_jobs),
            runtime: Some(rt.as_ref()),
            with_redis: args.with_redis,
            progress: &progress,
        },
        &r,
    );
    let mut entry = AuditRecord::new("restore", args.product.as_str(), &op);
    entry.file = Some(r.path().display().to_string());
    match &result {
        Ok(rep) => {
            entry.set_result(true);
            entry.previous_database = rep.previous_database.clone();
        }
        Err(e) => {
            entry.set_result(false);
            entry.error = Some(e.to_string());
        }
    }
    l.store.record(Some(&mut guard), &entry);
    drop(guard);
    let rep = result.map_err(cli_err)?;
    match args.format {
        Format::Json => printer.json(&serde_json::to_value(&rep).expect("serializes")),
        Format::Text => {
            println!(
                "{}: restored {} from {} ({} tables, {} rows{}) in {:.1}s",
                rep.product,
                rep.database,
                rep.from,
                rep.tables,
                rep.rows,
                rep.redis_keys
                    .map_or(String::new(), |k| format!(", {k} Redis keys")),
                rep.duration_ms as f64 / 1000.0
            );
            println!(
                "time: {}",
                rep.phases
                    .iter()
                    .map(|p| format!("{} {:.2}s", p.name, p.ms as f64 / 1000.0))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            if let Some(prev) = &rep.previous_database {
                println!(
                    "the previous database is kept as {prev}; drop it when satisfied: DROP DATABASE \"{prev}\";"
                );
            }
            if let Some(prev) = &rep.previous_redis {
                println!("the previous Redis keys are saved in {prev}");
            }
            for w in &rep.warnings {
                printer.warn(w);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
