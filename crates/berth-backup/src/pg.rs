//! PostgreSQL through its own tools: pg_dump, pg_restore, psql sessions.

use std::process::{Command, Stdio};
use std::time::Duration;

use berth_cmd::Cmd;
use berth_provision::session::{PgSession, conninfo};
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
        .stdin(Stdio::null());
    if let Some(pw) = &url.password {
        c.env("PGPASSWORD", pw);
    }
    c
}

pub fn session(url: &ServiceUrl, db: &str) -> Result<PgSession, BackupError> {
    PgSession::open(url, Some(db)).map_err(BackupError::Failed)
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

/// Run pg_restore of the plain archive at `file` into `db`, `jobs` in parallel, objects
/// owned by `role` when given.
pub fn pg_restore(
    url: &ServiceUrl,
    db: &str,
    file: &std::path::Path,
    jobs: u32,
    role: Option<&str>,
) -> Result<(), BackupError> {
    let mut c = client("pg_restore", url, db);
    c.args(["--no-owner", "--no-acl", "--exit-on-error"])
        .arg(format!("--jobs={}", jobs.max(1)))
        // Index builds are the slow part of a restore: give them memory.
        .env(
            "PGOPTIONS",
            "-c maintenance_work_mem=256MB -c synchronous_commit=off",
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(r) = role {
        c.arg(format!("--role={r}"));
    }
    c.arg(file);
    let out = c.output().map_err(|e| {
        BackupError::Failed(format!(
            "could not run pg_restore (install postgresql-client): {e}"
        ))
    })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(8).collect();
        return Err(BackupError::Failed(format!(
            "pg_restore into {db} failed ({}):\n{}",
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )));
    }
    Ok(())
}

/// Whether database `db` exists.
pub fn database_exists(s: &mut PgSession, db: &str) -> Result<bool, BackupError> {
    let rows = query(
        s,
        &format!(
            "SELECT 1 FROM pg_database WHERE datname = '{}'",
            db.replace('\'', "''")
        ),
        "look up a database",
    )?;
    Ok(!rows.is_empty())
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
