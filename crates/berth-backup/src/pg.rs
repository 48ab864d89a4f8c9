//! PostgreSQL: pg_dump and pg_restore for the data (TLS settings passed in their
//! environment), catalog queries through `PgSession`.

use std::process::{Command, Stdio};
use std::time::Duration;

use berth_cmd::Cmd;
use berth_provision::session::{PgSession, conninfo, libpq_env};
use berth_provision::url::ServiceUrl;

use crate::BackupError;
use crate::catalog::TableCount;

/// `"name"` with embedded quotes doubled.
pub fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// A command for a PostgreSQL client program connecting to `db` (password in PGPASSWORD).
pub fn client(program: &str, url: &ServiceUrl, db: &str) -> Command {
    let mut c = Command::new(program);
    c.arg("-d")
        .arg(conninfo(url, db))
        .env("PGCONNECT_TIMEOUT", "10")
        .envs(libpq_env(url))
        .stdin(Stdio::null());
    if let Some(pw) = &url.password {
        c.env("PGPASSWORD", pw);
    }
    c
}

pub fn session(url: &ServiceUrl, db: &str) -> Result<PgSession, BackupError> {
    PgSession::open(url, Some(db)).map_err(|e| BackupError::Failed(e.to_string()))
}

pub fn query(s: &mut PgSession, sql: &str, what: &str) -> Result<Vec<String>, BackupError> {
    s.query(sql)
        .map_err(|e| BackupError::Failed(format!("could not {what}: {e}")))
}

/// `pg_dump --version`'s version.
pub fn pg_dump_version() -> Result<String, BackupError> {
    let out = Cmd::new("pg_dump", "read the pg_dump version")
        .arg("--version")
        .hint_if_missing("install the PostgreSQL client: apt-get install postgresql-client")
        .timeout(Some(Duration::from_secs(20)))
        .output()
        .map_err(|e| BackupError::Failed(e.to_string()))?;
    // `pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)`
    Ok(out
        .stdout_str()
        .split_whitespace()
        .nth(2)
        .unwrap_or("")
        .to_string())
}

/// Every user table of the connected database with its exact row count (`ONLY`, so a
/// partition's rows count once), in the session's snapshot.
pub fn table_counts(s: &mut PgSession) -> Result<Vec<TableCount>, BackupError> {
    let names = query(
        s,
        "SELECT n.nspname || chr(31) || c.relname FROM pg_class c \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind IN ('r', 'p') \
           AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
           AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%' \
           AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass \
                           AND d.objid = c.oid AND d.deptype = 'e') \
         ORDER BY n.nspname, c.relname",
        "list the tables",
    )?;
    let tables: Vec<(String, String)> = names
        .iter()
        .filter_map(|l| l.split_once('\u{1f}'))
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    if tables.is_empty() {
        return Ok(Vec::new());
    }
    let sql = tables
        .iter()
        .enumerate()
        .map(|(i, (sch, t))| {
            format!(
                "SELECT {i} AS i, count(*) AS n FROM ONLY {}.{}",
                ident(sch),
                ident(t)
            )
        })
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    let rows = query(
        s,
        &format!("SELECT i, n FROM ({sql}) x ORDER BY i"),
        "count the rows",
    )?;
    let mut out = Vec::with_capacity(tables.len());
    for (line, (schema, name)) in rows.iter().zip(&tables) {
        let rows = line
            .split_once('|')
            .and_then(|(_, n)| n.parse().ok())
            .ok_or_else(|| BackupError::Failed(format!("unexpected row count line `{line}`")))?;
        out.push(TableCount {
            schema: schema.clone(),
            name: name.clone(),
            rows,
        });
    }
    Ok(out)
}

/// What [`per_table`] does to each table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableWork {
    /// Count the rows (`count(*) FROM ONLY`) of every user table outside extensions.
    Count,
    /// `ANALYZE` every table and materialized view (planner statistics).
    Analyze,
}

/// A table's row count as the statistics have it, when they are exact, else -1 (SQL
/// over `c`, a `pg_class` row). Exact: every tuple ever inserted is live (none
/// aborted, none deleted), and no VACUUM or ANALYZE has replaced the live count with
/// an estimate. A table the statistics do not know reads 0 (as does one whose
/// sessions ran with `track_counts` off): `per_table` never takes 0 from them.
const STATS_ROWS: &str = "CASE WHEN pg_stat_get_live_tuples(c.oid) = pg_stat_get_tuples_inserted(c.oid) \
     AND pg_stat_get_tuples_deleted(c.oid) = 0 \
     AND pg_stat_get_vacuum_count(c.oid) + pg_stat_get_autovacuum_count(c.oid) \
       + pg_stat_get_analyze_count(c.oid) + pg_stat_get_autoanalyze_count(c.oid) = 0 \
     THEN pg_stat_get_live_tuples(c.oid) ELSE -1 END";

/// [`table_counts`] (`TableWork::Count`) or planner statistics (`TableWork::Analyze`)
/// over `jobs` connections to `db` at once, largest tables first (by their rows in
/// `recorded`, the backup's counts: right after a restore the catalog's page counts
/// are still zero; then by page count): each count and each ANALYZE is its own
/// statement, so they spread over the server's cores instead of running one after
/// the other. Only for a database nothing else writes to (a freshly restored one):
/// the counts are not taken in one snapshot. A count may come from the statistics
/// instead of a scan, only when they are exact and agree with `recorded` (see
/// `STATS_ROWS`); every other table is scanned. Returns the counts (empty for
/// `Analyze`).
pub fn per_table(
    url: &ServiceUrl,
    db: &str,
    jobs: u32,
    work: TableWork,
    recorded: &[TableCount],
) -> Result<Vec<TableCount>, BackupError> {
    let mut s = session(url, db)?;
    let kinds = match work {
        TableWork::Count => "'r', 'p'",
        TableWork::Analyze => "'r', 'p', 'm'",
    };
    let outside_extensions = match work {
        TableWork::Count => {
            "AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass \
                            AND d.objid = c.oid AND d.deptype = 'e')"
        }
        TableWork::Analyze => "",
    };
    // ANALYZE has no use for the statistics' counts.
    let stats = match work {
        TableWork::Count => STATS_ROWS,
        TableWork::Analyze => "-1",
    };
    let list = |s: &mut PgSession| {
        query(
            s,
            &format!(
                "SELECT n.nspname || chr(31) || c.relname || chr(31) || {stats} \
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE c.relkind IN ({kinds}) \
                   AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
                   AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%' \
                   {outside_extensions} \
                 ORDER BY c.relpages DESC, n.nspname, c.relname"
            ),
            "list the tables",
        )
        .map(|rows| {
            rows.iter()
                .filter_map(|l| {
                    let mut f = l.split('\u{1f}');
                    let (schema, name) = (f.next()?, f.next()?);
                    let live = f.next().and_then(|n| n.parse::<i64>().ok()).unwrap_or(-1);
                    Some((schema.to_string(), name.to_string(), live))
                })
                .collect::<Vec<_>>()
        })
    };
    let recorded_rows = |schema: &str, name: &str| {
        recorded
            .iter()
            .find(|t| t.schema == schema && t.name == name)
            .map(|t| t.rows)
    };
    // A table the record says has rows whose statistics do not say so yet (a backend
    // flushes them within a second, at the latest when it exits): read once more.
    let settled = |l: &[(String, String, i64)]| {
        l.iter().all(|(sch, n, stats)| match recorded_rows(sch, n) {
            Some(rows) if rows > 0 => rows as i64 == *stats,
            _ => true,
        })
    };
    let mut listed = list(&mut s)?;
    if work == TableWork::Count && !settled(&listed) {
        std::thread::sleep(std::time::Duration::from_millis(100));
        listed = list(&mut s)?;
    }
    let mut results = Vec::new();
    let mut tables: Vec<(String, String)> = Vec::new();
    for (schema, name, live) in listed {
        match recorded_rows(&schema, &name) {
            Some(rows) if work == TableWork::Count && rows > 0 && rows as i64 == live => {
                results.push(TableCount { schema, name, rows })
            }
            _ => tables.push((schema, name)),
        }
    }
    if work == TableWork::Count {
        tracing::info!(
            "row counts: {} table(s) as the statistics have them, {} scanned",
            results.len(),
            tables.len()
        );
    }
    // Stable: tables the record does not know keep the catalog's order, after the rest.
    tables.sort_by_key(|(schema, name)| {
        std::cmp::Reverse(
            recorded
                .iter()
                .find(|t| &t.schema == schema && &t.name == name)
                .map_or(0, |t| t.rows),
        )
    });
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results = std::sync::Mutex::new(results);
    let workers = (jobs.max(1) as usize).min(tables.len().max(1));
    // The session that listed the tables is the first worker's (one connection fewer).
    let mut listing = Some(s);
    std::thread::scope(|scope| -> Result<(), BackupError> {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                let kept = listing.take();
                let (next, results, tables) = (&next, &results, &tables);
                scope.spawn(move || -> Result<(), BackupError> {
                    let mut s = match kept {
                        Some(s) => s,
                        None => session(url, db)?,
                    };
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some((schema, name)) = tables.get(i) else {
                            return Ok(());
                        };
                        let table = format!("{}.{}", ident(schema), ident(name));
                        if work == TableWork::Analyze {
                            query(
                                &mut s,
                                &format!("ANALYZE {table}"),
                                "gather planner statistics",
                            )?;
                            continue;
                        }
                        let n = query(
                            &mut s,
                            &format!("SELECT count(*) FROM ONLY {table}"),
                            "count the rows",
                        )?;
                        let rows = n.first().and_then(|n| n.parse().ok()).ok_or_else(|| {
                            BackupError::Failed(format!("unexpected row count of {table}: {n:?}"))
                        })?;
                        results.lock().expect("not poisoned").push(TableCount {
                            schema: schema.clone(),
                            name: name.clone(),
                            rows,
                        });
                    }
                })
            })
            .collect();
        for h in handles {
            h.join()
                .map_err(|_| BackupError::Failed("a row count thread panicked".into()))??;
        }
        Ok(())
    })?;
    let mut out = results.into_inner().expect("not poisoned");
    out.sort_by(|a, b| (&a.schema, &a.name).cmp(&(&b.schema, &b.name)));
    Ok(out)
}

/// Compare the tables of a restored database with the ones recorded at backup time.
pub fn compare_tables(expected: &[TableCount], got: &[TableCount]) -> Vec<String> {
    let mut problems = Vec::new();
    for e in expected {
        match got
            .iter()
            .find(|g| g.schema == e.schema && g.name == e.name)
        {
            None => problems.push(format!("table {}.{} is missing", e.schema, e.name)),
            Some(g) if g.rows != e.rows => problems.push(format!(
                "table {}.{} has {} rows, {} at backup time",
                e.schema, e.name, g.rows, e.rows
            )),
            Some(_) => {}
        }
    }
    for g in got {
        if !expected
            .iter()
            .any(|e| g.schema == e.schema && g.name == e.name)
        {
            problems.push(format!(
                "table {}.{} was not in the backup",
                g.schema, g.name
            ));
        }
    }
    problems
}

fn run_restore(mut c: Command, what: &str, strict: bool) -> Result<Vec<String>, BackupError> {
    let out = c.output().map_err(|e| {
        BackupError::Failed(format!(
            "could not run pg_restore (install postgresql-client): {e}"
        ))
    })?;
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<String> = err
        .lines()
        .filter(|l| l.contains("error:") || l.contains("ERROR:"))
        .map(|l| l.trim().to_string())
        .collect();
    if !out.status.success() && strict {
        let tail: Vec<&str> = err.lines().rev().take(8).collect();
        return Err(BackupError::Damaged(format!(
            "pg_restore ({what}) failed ({}):\n{}",
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )));
    }
    Ok(lines)
}

/// Which part of a restore a TOC entry of `pg_restore -l` belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// Extensions (and their comments): created by the admin, as only it may.
    Extension,
    /// Grants and default privileges: best effort (a grantee role may not exist here).
    Acl,
    /// Everything else: strict.
    Main,
}

/// Classify a TOC line (`215; 3079 16385 EXTENSION - postgres_fdw`); comments are `None`.
pub fn classify(line: &str) -> Option<Part> {
    if line.trim_start().starts_with(';') || line.trim().is_empty() {
        return None;
    }
    let t: Vec<&str> = line.split_whitespace().collect();
    let desc = t.get(3).copied().unwrap_or("");
    Some(match desc {
        "EXTENSION" => Part::Extension,
        "COMMENT" if t.get(5) == Some(&"EXTENSION") => Part::Extension,
        "ACL" => Part::Acl,
        "DEFAULT" if t.get(4) == Some(&"ACL") => Part::Acl,
        _ => Part::Main,
    })
}

/// One `pg_restore` run of [`pg_restore`]: which TOC part (every section of it).
#[derive(Debug, Clone, Copy)]
struct Pass {
    part: Part,
    what: &'static str,
}

/// What [`pg_restore`] did.
pub struct Restored {
    /// Grants that could not be applied here (e.g. to a role this server lacks).
    pub warnings: Vec<String>,
    /// Extensions, then the schema, the data and the post-data section (indexes,
    /// constraints, triggers, materialized view data) in one parallel run.
    pub main_ms: u64,
}

/// Restore the plain archive at `file` into `db`: extensions as the admin, then the
/// schema, the data and the post-data section in one run of `jobs` parallel jobs as
/// `role` (which then owns every object: a table's indexes build while the next
/// table's data loads), then grants best effort.
pub fn pg_restore(
    url: &ServiceUrl,
    db: &str,
    file: &std::path::Path,
    jobs: u32,
    role: Option<&str>,
) -> Result<Restored, BackupError> {
    let listing = std::process::Command::new("pg_restore")
        .arg("--list")
        .arg(file)
        .output()
        .map_err(|e| {
            BackupError::Failed(format!(
                "could not run pg_restore (install postgresql-client): {e}"
            ))
        })?;
    if !listing.status.success() {
        return Err(BackupError::Damaged(format!(
            "pg_restore cannot read the archive: {}",
            String::from_utf8_lossy(&listing.stderr).trim()
        )));
    }
    let toc = String::from_utf8_lossy(&listing.stdout).into_owned();
    let list_of = |part: Part| -> (String, bool) {
        let mut any = false;
        let text = toc
            .lines()
            .map(|l| match classify(l) {
                Some(p) if p == part => {
                    any = true;
                    l.to_string()
                }
                _ => format!(";{l}"),
            })
            .collect::<Vec<_>>()
            .join("\n");
        (text, any)
    };
    let dir = file.parent().unwrap_or(std::path::Path::new("."));
    // The list of each part, written once.
    let mut lists = Vec::new();
    for part in [Part::Extension, Part::Main, Part::Acl] {
        let (text, any) = list_of(part);
        if !any {
            continue;
        }
        let list = tempfile::Builder::new()
            .prefix(".berth-toc-")
            .tempfile_in(dir)
            .map_err(|e| BackupError::Failed(format!("could not write a restore list: {e}")))?;
        std::fs::write(list.path(), text)
            .map_err(|e| BackupError::Failed(format!("could not write a restore list: {e}")))?;
        lists.push((part, list));
    }
    let run = |pass: Pass| -> Result<Vec<String>, BackupError> {
        let Some((_, list)) = lists.iter().find(|(p, _)| *p == pass.part) else {
            return Ok(Vec::new());
        };
        let strict = pass.part != Part::Acl;
        let mut c = client("pg_restore", url, db);
        c.args(["--no-owner"])
            .arg(format!("--use-list={}", list.path().display()))
            // Index builds are the slow part of a restore: give them memory.
            .env(
                "PGOPTIONS",
                "-c maintenance_work_mem=256MB -c synchronous_commit=off",
            )
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if strict {
            c.arg("--exit-on-error");
        }
        if pass.part == Part::Main {
            c.arg(format!("--jobs={}", jobs.max(1)));
        }
        if pass.part != Part::Extension
            && let Some(r) = role
        {
            c.arg(format!("--role={r}"));
        }
        c.arg(file);
        run_restore(c, pass.what, strict)
    };
    let t = std::time::Instant::now();
    run(Pass {
        part: Part::Extension,
        what: "extensions",
    })?;
    run(Pass {
        part: Part::Main,
        what: "schema, data, indexes and constraints",
    })?;
    let main_ms = t.elapsed().as_millis() as u64;
    let warnings = run(Pass {
        part: Part::Acl,
        what: "grants",
    })?
    .into_iter()
    .map(|l| format!("a grant was not restored: {l}"))
    .collect();
    Ok(Restored { warnings, main_ms })
}

/// What a product database looks like beyond its content: encoding and locale,
/// database grants, and per-database settings (`ALTER DATABASE ... SET`,
/// `ALTER ROLE ... IN DATABASE ... SET`).
#[derive(Debug, Clone, Default)]
pub struct Shape {
    pub encoding: String,
    pub collate: String,
    pub ctype: String,
    /// `GRANT <privileges> ON DATABASE` statements' (grantee, privilege); `None`: the defaults.
    pub grants: Option<Vec<(String, String)>>,
    /// (role or None for the whole database, `name=value` settings).
    pub settings: Vec<(Option<String>, Vec<String>)>,
    /// Read from the live database (else: the server's defaults, grants as provisioned).
    pub from_live: bool,
}

/// `'text'` as an SQL string literal.
pub fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The shape of `db`, or `None` when there is no such database.
pub fn read_shape(s: &mut PgSession, db: &str) -> Result<Option<Shape>, BackupError> {
    let row = query(
        s,
        &format!(
            "SELECT pg_encoding_to_char(encoding) || chr(31) || datcollate || chr(31) || datctype || chr(31) || (datacl IS NULL) \
             FROM pg_database WHERE datname = {}",
            lit(db)
        ),
        "read the database's encoding and locale",
    )?;
    let Some(row) = row.first() else {
        return Ok(None);
    };
    let f: Vec<&str> = row.split('\u{1f}').collect();
    let mut shape = Shape {
        encoding: f.first().unwrap_or(&"UTF8").to_string(),
        collate: f.get(1).unwrap_or(&"C").to_string(),
        ctype: f.get(2).unwrap_or(&"C").to_string(),
        from_live: true,
        ..Default::default()
    };
    if f.get(3) == Some(&"false") {
        let rows = query(
            s,
            &format!(
                "SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END || chr(31) || a.privilege_type \
                 FROM pg_database d, aclexplode(d.datacl) a WHERE d.datname = {}",
                lit(db)
            ),
            "read the database's grants",
        )?;
        shape.grants = Some(
            rows.iter()
                .filter_map(|r| r.split_once('\u{1f}'))
                .map(|(g, p)| (g.to_string(), p.to_string()))
                .collect(),
        );
    }
    let rows = query(
        s,
        &format!(
            "SELECT coalesce(quote_ident(pg_get_userbyid(NULLIF(s.setrole, 0))), '') || chr(31) || array_to_string(s.setconfig, chr(30)) \
             FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase WHERE d.datname = {}",
            lit(db)
        ),
        "read the database's settings",
    )?;
    for r in rows {
        if let Some((role, cfg)) = r.split_once('\u{1f}') {
            shape.settings.push((
                (!role.is_empty()).then(|| role.to_string()),
                cfg.split('\u{1e}').map(str::to_string).collect(),
            ));
        }
    }
    Ok(Some(shape))
}

/// The shape of `db` if it exists, else the server's defaults (from template1).
pub fn shape_or_default(s: &mut PgSession, db: &str) -> Result<Shape, BackupError> {
    if let Some(shape) = read_shape(s, db)? {
        return Ok(shape);
    }
    let mut d = read_shape(s, "template1")?.unwrap_or(Shape {
        encoding: "UTF8".into(),
        collate: "C".into(),
        ctype: "C".into(),
        ..Default::default()
    });
    d.grants = None;
    d.settings.clear();
    d.from_live = false;
    Ok(d)
}

/// Settings whose value is a list and goes unquoted (as pg_dump treats them).
const LIST_SETTINGS: &[&str] = &[
    "search_path",
    "temp_tablespaces",
    "session_preload_libraries",
    "shared_preload_libraries",
    "local_preload_libraries",
    "unix_socket_directories",
];

/// Create `db` like `shape` (owned by `owner`), with its grants and settings.
pub fn create_database(
    s: &mut PgSession,
    db: &str,
    owner: Option<&str>,
    shape: &Shape,
) -> Result<(), BackupError> {
    let owner_sql = owner.map_or(String::new(), |o| format!(" OWNER {}", ident(o)));
    query(
        s,
        &format!(
            "CREATE DATABASE {}{owner_sql} TEMPLATE template0 ENCODING {} LC_COLLATE {} LC_CTYPE {}",
            ident(db),
            lit(&shape.encoding),
            lit(&shape.collate),
            lit(&shape.ctype)
        ),
        &format!("create the database {db}"),
    )?;
    Ok(())
}

/// Apply `shape`'s grants and settings to `db` (already created).
pub fn apply_shape(
    s: &mut PgSession,
    db: &str,
    owner: Option<&str>,
    shape: &Shape,
) -> Result<(), BackupError> {
    let d = ident(db);
    let mut sql = Vec::new();
    match (&shape.grants, owner) {
        (Some(grants), _) => {
            sql.push(format!("REVOKE ALL ON DATABASE {d} FROM PUBLIC"));
            for (grantee, privilege) in grants {
                sql.push(format!("GRANT {privilege} ON DATABASE {d} TO {grantee}"));
            }
        }
        // No live database to copy from: as `berth provision` sets it.
        (None, Some(o)) if !shape.from_live => {
            sql.push(format!(
                "REVOKE CONNECT, TEMPORARY ON DATABASE {d} FROM PUBLIC"
            ));
            sql.push(format!(
                "GRANT CONNECT, TEMPORARY ON DATABASE {d} TO {}",
                ident(o)
            ));
        }
        _ => {}
    }
    for (role, cfg) in &shape.settings {
        for kv in cfg {
            let Some((k, v)) = kv.split_once('=') else {
                continue;
            };
            let value = if LIST_SETTINGS.contains(&k) {
                v.to_string()
            } else {
                lit(v)
            };
            sql.push(match role {
                Some(r) => format!("ALTER ROLE {r} IN DATABASE {d} SET {k} = {value}"),
                None => format!("ALTER DATABASE {d} SET {k} = {value}"),
            });
        }
    }
    // One round trip (the statements run as one implicit transaction).
    if !sql.is_empty() {
        query(
            s,
            &sql.join("; "),
            "copy the database's grants and settings",
        )?;
    }
    Ok(())
}

/// The names of every database on the server.
pub fn databases(s: &mut PgSession) -> Result<Vec<String>, BackupError> {
    query(s, "SELECT datname FROM pg_database", "list the databases")
}

/// Drop `db` if it exists, terminating its connections first.
pub fn drop_database(s: &mut PgSession, db: &str) -> Result<(), BackupError> {
    query(
        s,
        &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", ident(db)),
        &format!("drop the database {db}"),
    )?;
    Ok(())
}
