//! `berth provision`: each product's database, login role and Redis ACL user,
//! created on the shared servers idempotently, with passwords taken from (or,
//! on rotation, written to) the product's secret file.

pub mod limits;
pub mod redis_session;
pub mod session;
pub mod tls;
pub mod url;
pub mod verifier;

use std::path::Path;

use berth_manifest::{InfraMode, Manifest};
use berth_render::secrets::{self, SecretFile};
use serde::Serialize;

use crate::redis_session::{RedisSession, Value};
use crate::session::{PgError, PgSession};
use crate::url::ServiceUrl;

#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Cmd(#[from] berth_cmd::CmdError),
    #[error(transparent)]
    Secret(#[from] secrets::SecretError),
    #[error("{0}")]
    Postgres(String),
    #[error("could not {action} Redis at {url}: {detail}")]
    Redis {
        action: String,
        url: String,
        detail: String,
    },
}

/// What happened to one product.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ProductReport {
    pub product: String,
    /// `created` or `existing`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    /// `set` (new role), `rotated`, `unchanged`, `reset` (the role's password did not
    /// match the secret file: set to the secret file's value), or `unknown`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub db_password: Option<&'static str>,
    /// `created` or `existing`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_user: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_password: Option<&'static str>,
    /// The role's `CONNECTION LIMIT`, as set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection_limit: Option<u64>,
    /// The role's `statement_timeout`, as set (`1m`, `30s`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub statement_timeout: Option<String>,
}

/// The admin URL for a piece of infrastructure: the environment variable named by
/// `admin_url_env` (or the default name), else, in container mode, the published
/// port with the infra secret.
fn admin_url(
    infra: &berth_manifest::InfraService,
    default_env: &str,
    scheme_user: (&str, &str),
    secret_key: &str,
    root: &Path,
) -> Result<ServiceUrl, ProvisionError> {
    let var = infra
        .admin_url_env
        .clone()
        .unwrap_or_else(|| default_env.to_string());
    if let Ok(v) = std::env::var(&var)
        && !v.is_empty()
    {
        return ServiceUrl::parse(&v).ok_or_else(|| {
            ProvisionError::Config(format!(
                "${var} is not a URL like {}://user:password@host:port",
                scheme_user.0
            ))
        });
    }
    if infra.mode == InfraMode::Container
        && let Some(port) = infra.port
    {
        let f = SecretFile::load(&secrets::infra_secret_path(root))?;
        if let Some(pw) = f.get(secret_key) {
            return Ok(ServiceUrl {
                scheme: scheme_user.0.into(),
                user: Some(scheme_user.1.into()),
                password: Some(pw.to_string()),
                host: "127.0.0.1".into(),
                port: Some(port),
                path: String::new(),
            });
        }
    }
    Err(ProvisionError::Config(format!(
        "no admin connection: set ${var} (e.g. {}://{}:<password>@<host>:<port>), or run `berth render` so container mode has its infra secrets",
        scheme_user.0, scheme_user.1
    )))
}

/// The PostgreSQL admin URL: `$BERTH_POSTGRES_ADMIN_URL` (or `admin_url_env`), else the
/// container's published port with the infra secret.
pub fn postgres_admin_url(m: &Manifest, root: &Path) -> Result<ServiceUrl, ProvisionError> {
    let infra = m.infra.postgres.as_ref().ok_or_else(|| {
        ProvisionError::Config(
            "products have databases but berth.toml has no [infra.postgres]".into(),
        )
    })?;
    admin_url(
        infra,
        "BERTH_POSTGRES_ADMIN_URL",
        ("postgresql", "postgres"),
        "POSTGRES_PASSWORD",
        root,
    )
}

/// The Redis admin URL: `$BERTH_REDIS_ADMIN_URL` (or `admin_url_env`), else the
/// container's published port with the infra secret.
pub fn redis_admin_url(m: &Manifest, root: &Path) -> Result<ServiceUrl, ProvisionError> {
    let infra = m.infra.redis.as_ref().ok_or_else(|| {
        ProvisionError::Config(
            "products have Redis key spaces but berth.toml has no [infra.redis]".into(),
        )
    })?;
    admin_url(
        infra,
        "BERTH_REDIS_ADMIN_URL",
        ("redis", "berth-admin"),
        "REDIS_ADMIN_PASSWORD",
        root,
    )
}

/// Connect to Redis at `url` (TLS for `rediss://`), authenticate and select `db`.
pub fn redis_connect(url: &ServiceUrl, db: i64) -> Result<RedisSession, ProvisionError> {
    RedisSession::open(url, db).map_err(|e| match e {
        // The URL itself is wrong: a usage error, said with the URL (redacted).
        redis_session::RedisError::Config(why) => {
            ProvisionError::Config(format!("the Redis URL {}: {why}", url.redacted()))
        }
        e => redis_err(url, "connect to")(e.to_string()),
    })
}

/// A session on the admin URL's database (TLS and timeouts as the URL says).
pub fn admin_session(url: &ServiceUrl) -> Result<PgSession, ProvisionError> {
    PgSession::open(url, None).map_err(|e| ProvisionError::Postgres(e.to_string()))
}

/// Run a provisioning script as psql would: SQL, and the three psql commands the
/// rendered `provision.sql` uses (`\set` (ignored: every error stops here),
/// `\gexec` (run each value the query returns), `\connect <db>`). Stops at the
/// first error, which names the statement.
pub fn run_script(url: &ServiceUrl, script: &str) -> Result<(), ProvisionError> {
    let fail = |sql: &str, e: PgError| {
        let first = sql
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with("--"))
            .unwrap_or("");
        ProvisionError::Postgres(format!(
            "the provisioning SQL failed on {} at `{first}`: {e}",
            url.redacted()
        ))
    };
    let mut s = admin_session(url)?;
    let mut buf = String::new();
    for line in script.lines() {
        let t = line.trim();
        if let Some(db) = t.strip_prefix("\\connect ").or(t.strip_prefix("\\c ")) {
            if !buf.trim().is_empty() {
                s.execute(&buf).map_err(|e| fail(&buf, e))?;
            }
            buf.clear();
            let db = db.trim().trim_matches('"');
            s = PgSession::open(url, Some(db))
                .map_err(|e| ProvisionError::Postgres(e.to_string()))?;
        } else if t.starts_with("\\set ") {
        } else if let Some(q) = t.strip_suffix("\\gexec") {
            buf.push_str(q);
            let rows = s.rows(&buf).map_err(|e| fail(&buf, e))?;
            for cell in rows.into_iter().flatten().flatten() {
                s.execute(&cell).map_err(|e| fail(&cell, e))?;
            }
            buf.clear();
        } else if t.starts_with('\\') {
            return Err(ProvisionError::Config(format!(
                "the provisioning SQL has a psql command berth does not run: {t}"
            )));
        } else {
            buf.push_str(line);
            buf.push('\n');
        }
    }
    if !buf.trim().is_empty() {
        s.execute(&buf).map_err(|e| fail(&buf, e))?;
    }
    Ok(())
}

pub struct Options<'a> {
    pub manifest: &'a Manifest,
    /// The manifest directory (secret files live under it).
    pub root: &'a Path,
    /// The products to provision.
    pub products: Vec<String>,
    pub rotate_passwords: bool,
}

pub fn provision(opts: &Options<'_>) -> Result<Vec<ProductReport>, ProvisionError> {
    let m = opts.manifest;
    let mut reports: Vec<ProductReport> = opts
        .products
        .iter()
        .map(|p| ProductReport {
            product: p.clone(),
            ..Default::default()
        })
        .collect();
    let with_db: Vec<&String> = opts
        .products
        .iter()
        .filter(|p| m.products[*p].database.is_some())
        .collect();
    if !with_db.is_empty() {
        let url = postgres_admin_url(m, opts.root)?;
        provision_postgres(opts, &url, &with_db, &mut reports)?;
    }
    let with_redis: Vec<&String> = opts
        .products
        .iter()
        .filter(|p| m.products[*p].redis.is_some())
        .collect();
    if !with_redis.is_empty() {
        let url = redis_admin_url(m, opts.root)?;
        provision_redis(opts, &url, &with_redis, &mut reports)?;
    }
    Ok(reports)
}

fn report<'a>(reports: &'a mut [ProductReport], p: &str) -> &'a mut ProductReport {
    reports
        .iter_mut()
        .find(|r| r.product == p)
        .expect("report for every product")
}

fn provision_postgres(
    opts: &Options<'_>,
    url: &ServiceUrl,
    products: &[&String],
    reports: &mut [ProductReport],
) -> Result<(), ProvisionError> {
    let m = opts.manifest;
    let dbs: Vec<_> = products
        .iter()
        .map(|p| m.products[*p].database.clone().expect("filtered"))
        .collect();
    let quote = |v: Vec<&str>| {
        v.iter()
            .map(|s| format!("'{s}'"))
            .collect::<Vec<_>>()
            .join(",")
    };
    let query = format!(
        "SELECT 'role:' || rolname FROM pg_roles WHERE rolname IN ({}) UNION ALL SELECT 'db:' || datname FROM pg_database WHERE datname IN ({})",
        quote(dbs.iter().map(|d| d.role.as_str()).collect()),
        quote(dbs.iter().map(|d| d.name.as_str()).collect()),
    );
    let mut session = admin_session(url)?;
    let existing: std::collections::HashSet<String> = session
        .query(&query)
        .map_err(|e| {
            ProvisionError::Postgres(format!(
                "could not read existing databases and roles on {}: {e}",
                url.redacted()
            ))
        })?
        .into_iter()
        .collect();
    // Every product's connection limit (not only these products') must fit in the
    // server's max_connections: checked before anything is applied.
    let settings: Vec<u64> = session
        .query(limits::SERVER_LIMITS_QUERY)
        .map_err(|e| {
            ProvisionError::Postgres(format!(
                "could not read max_connections on {}: {e}",
                url.redacted()
            ))
        })?
        .iter()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    if let [max, reserved] = settings[..] {
        limits::check_fits(m, max, reserved).map_err(ProvisionError::Config)?;
    }
    let stored = stored_passwords(
        &mut session,
        &dbs.iter().map(|d| d.role.as_str()).collect::<Vec<_>>(),
    );
    drop(session);

    // The rendered SQL for just these products, then the passwords (as SCRAM verifiers:
    // the plain password never reaches the server, its logs or psql's command line).
    let mut subset = m.clone();
    subset.products.retain(|k, _| products.contains(&k));
    let files = berth_render::render(&berth_render::RenderInput {
        manifest: &subset,
        env: berth_render::Env::Prod,
        root_from_out: ".".into(),
        out_from_root: ".".into(),
    })
    .map_err(|e| ProvisionError::Config(e.to_string()))?;
    let mut script = files
        .into_iter()
        .find(|f| f.path == "postgres/provision.sql")
        .map(|f| f.contents)
        .unwrap_or_default();
    let mut restore: Vec<SecretFile> = Vec::new();
    let mut password_lines = Vec::new();
    for (p, db) in products.iter().zip(&dbs) {
        let role_existed = existing.contains(&format!("role:{}", db.role));
        let known = SecretFile::load(&secrets::product_secret_path(opts.root, p))?
            .get("DATABASE_PASSWORD")
            .is_some();
        let (mut file, _) = secrets::ensure_product(m, opts.root, p)?;
        let r = report(reports, p);
        r.database = Some(if existing.contains(&format!("db:{}", db.name)) {
            "existing"
        } else {
            "created"
        });
        r.role = Some(if role_existed { "existing" } else { "created" });
        let action = if opts.rotate_passwords {
            restore.push(file.clone());
            let pw = secrets::generate_password();
            file.set("DATABASE_PASSWORD", &pw);
            file.save(&format!("secrets of product {p}"))?;
            let (f2, _) = secrets::ensure_product(m, opts.root, p)?;
            file = f2;
            "rotated"
        } else if role_existed && !known {
            // Someone else made this role: its password is not berth's to change unasked.
            "unknown"
        } else if role_existed {
            // The secret file is berth's source of truth and what the app logs in with:
            // a role whose password no longer matches it (a fresh render, a restored
            // secret file, a hand-made change) would refuse the app, so set it.
            let pw = file
                .get("DATABASE_PASSWORD")
                .expect("ensure_product made one");
            match stored
                .as_ref()
                .and_then(|s| s.get(&db.role))
                .map(|v| verifier::matches(v, &db.role, pw))
            {
                Some(Some(false)) | Some(None) => "reset",
                // Not readable (the admin is not a superuser): nothing to compare.
                None => "unchanged",
                Some(Some(true)) => "unchanged",
            }
        } else {
            "set"
        };
        r.db_password = Some(action);
        if matches!(action, "set" | "rotated" | "reset") {
            let pw = file
                .get("DATABASE_PASSWORD")
                .expect("ensure_product made one");
            let verifier = postgres_protocol::password::scram_sha_256(pw.as_bytes());
            password_lines.push(format!(
                "ALTER ROLE \"{}\" PASSWORD '{verifier}';\n",
                db.role
            ));
        }
    }
    script.push_str("\n-- each role's limits\n");
    for (p, db) in products.iter().zip(&dbs) {
        let l = berth_manifest::effective_db_limits(m, p);
        for stmt in limits::role_limit_statements(&db.role, &l) {
            script.push_str(&stmt);
            script.push('\n');
        }
        let r = report(reports, p);
        r.connection_limit = Some(l.connections);
        r.statement_timeout = Some(limits::timeout_text(&l));
    }
    script.push_str("\n-- passwords (SCRAM verifiers)\n");
    for l in &password_lines {
        script.push_str(l);
    }
    let applied = run_script(url, &script);
    if let Err(e) = applied {
        // Nothing half-done: a rotated password the server did not take is put back.
        for f in &restore {
            let _ = f.save(&format!(
                "secrets of product {}",
                f.path.file_stem().and_then(|s| s.to_str()).unwrap_or("")
            ));
        }
        return Err(e);
    }
    Ok(())
}

/// The stored password (`pg_authid.rolpassword`, a SCRAM verifier) of each role that
/// has one; `None` when the admin may not read `pg_authid` (not a superuser). Never logged.
fn stored_passwords(
    s: &mut PgSession,
    roles: &[&str],
) -> Option<std::collections::HashMap<String, String>> {
    let list = roles
        .iter()
        .map(|r| format!("'{r}'"))
        .collect::<Vec<_>>()
        .join(",");
    let rows = s
        .rows(&format!(
            "SELECT rolname, coalesce(rolpassword, '') FROM pg_authid WHERE rolname IN ({list})"
        ))
        .ok()?;
    Some(
        rows.into_iter()
            .filter_map(|r| match r.as_slice() {
                [Some(r), Some(v)] => Some((r.clone(), v.clone())),
                _ => None,
            })
            .collect(),
    )
}

pub fn redis_err(url: &ServiceUrl, action: &str) -> impl Fn(String) -> ProvisionError {
    let (u, a) = (url.redacted(), action.to_string());
    move |detail| ProvisionError::Redis {
        action: a.clone(),
        url: u.clone(),
        detail,
    }
}

/// The password hashes `ACL GETUSER` lists for a user.
fn password_hashes(user: &Value) -> Vec<String> {
    let Value::Array(items) = user else {
        return Vec::new();
    };
    let mut it = items.iter();
    while let Some(k) = it.next() {
        let v = it.next();
        if matches!(k, Value::BulkString(b) if b == b"passwords")
            && let Some(Value::Array(pws)) = v
        {
            return pws
                .iter()
                .filter_map(|p| match p {
                    Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
                    _ => None,
                })
                .collect();
        }
    }
    Vec::new()
}

fn provision_redis(
    opts: &Options<'_>,
    url: &ServiceUrl,
    products: &[&String],
    reports: &mut [ProductReport],
) -> Result<(), ProvisionError> {
    let m = opts.manifest;
    let mut conn = redis_connect(url, 0)?;
    let acl = redis_err(url, "set ACL users on");
    for p in products {
        let prefix = &m.products[*p].redis.as_ref().expect("filtered").prefix;
        let user = conn
            .command(&["ACL", "GETUSER", p.as_str()])
            .map_err(|e| acl(e.to_string()))?;
        let existed = user != Value::Nil;
        let current = password_hashes(&user);
        let (mut file, _) = secrets::ensure_product(m, opts.root, p)?;
        let mut hash =
            secrets::sha256_hex(file.get("REDIS_PASSWORD").expect("ensure_product made one"));
        let action = if opts.rotate_passwords {
            file.set("REDIS_PASSWORD", &secrets::generate_password());
            file.save(&format!("secrets of product {p}"))?;
            file = secrets::ensure_product(m, opts.root, p)?.0;
            hash = secrets::sha256_hex(file.get("REDIS_PASSWORD").expect("just set"));
            "rotated"
        } else if current.contains(&hash) {
            "unchanged"
        } else if current.is_empty() {
            "set"
        } else {
            // A password berth does not know: not berth's to replace unasked.
            "unknown"
        };
        let mut args: Vec<String> = vec!["ACL".into(), "SETUSER".into(), p.to_string()];
        if action != "unknown" {
            args.extend(["reset".into(), format!("#{hash}")]);
        }
        args.push("on".into());
        args.extend(
            berth_render::redis_user_rules(prefix)
                .split_whitespace()
                .map(str::to_string),
        );
        conn.command(&args).map_err(|e| acl(e.to_string()))?;
        let r = report(reports, p);
        r.redis_user = Some(if existed { "existing" } else { "created" });
        r.redis_password = Some(action);
    }
    // Persist when the server has an ACL file; a server without one keeps users in memory.
    match conn.command(&["ACL", "SAVE"]) {
        Err(redis_session::RedisError::Server(e)) => {
            tracing::info!("ACL SAVE: {e} (users stay in memory until the server restarts)")
        }
        Err(e) => return Err(acl(e.to_string())),
        Ok(_) => {}
    }
    Ok(())
}
