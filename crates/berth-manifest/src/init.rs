//! `berth init --from docker-compose.yml`: turn today's single-product compose
//! file into a berth.toml. Secret values are never copied: they become names
//! under `secrets = [...]`; connection URLs become the product's `database`
//! and `redis` settings.

use indexmap::IndexMap;
use serde_norway::Value as Yaml;

use crate::diag::{Diagnostic, label_for};
use crate::secrets;
use crate::validate::slugify;

/// What the caller knows beyond the compose file.
#[derive(Debug, Clone, Default)]
pub struct InitOptions {
    /// Product name; derived from the compose file when absent.
    pub product: Option<String>,
    /// Project name; defaults to `<product>-monorepo`.
    pub project: Option<String>,
}

/// The generated manifest and what was done to get it, for the user to review.
#[derive(Debug, Clone)]
pub struct InitResult {
    pub product: String,
    pub toml: String,
    pub notes: Vec<String>,
}

#[derive(Default)]
struct Svc {
    build: Option<(String, Option<String>)>,
    image: Option<String>,
    port: Option<u16>,
    host_port: Option<u16>,
    health_path: Option<String>,
    /// `interval`, `timeout`, `retries` of the compose health check, as berth.toml writes them.
    health_timing: Vec<(&'static str, String)>,
    env: IndexMap<String, String>,
    secrets: Vec<String>,
    command: Option<String>,
}

#[derive(Default)]
struct Infra {
    image: String,
    port: Option<u16>,
}

/// Which piece of shared infrastructure a compose service is, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InfraKind {
    Postgres,
    Redis,
}

/// The repository part of an image reference, lower case, without registry, tag or
/// digest: `ghcr.io/pgvector/pgvector:pg16@sha256:...` -> `pgvector/pgvector`,
/// `postgres:15` -> `postgres`, `docker.io/library/redis` -> `redis`.
fn image_repository(image: &str) -> String {
    let image = image.trim().to_ascii_lowercase();
    let no_digest = image.split('@').next().unwrap_or("");
    let mut parts: Vec<&str> = no_digest.split('/').collect();
    // A first component with a dot or a port, or `localhost`, is a registry host.
    if parts.len() > 1
        && (parts[0].contains('.') || parts[0].contains(':') || parts[0] == "localhost")
    {
        parts.remove(0);
    }
    if parts.first() == Some(&"library") && parts.len() > 1 {
        parts.remove(0);
    }
    let last = parts.pop().unwrap_or("");
    let last = last.split(':').next().unwrap_or("");
    parts.push(last);
    parts.join("/")
}

/// The PostgreSQL family by image repository (any registry, tag or digest), with the
/// extension the image exists for.
const POSTGRES_IMAGES: &[(&str, Option<&str>)] = &[
    ("postgres", None),
    ("postgresql", None),
    ("bitnami/postgresql", None),
    ("bitnami/postgresql-repmgr", None),
    ("supabase/postgres", None),
    ("cimg/postgres", None),
    ("circleci/postgres", None),
    ("pgvector/pgvector", Some("vector")),
    ("ankane/pgvector", Some("vector")),
    ("tensorchord/pgvecto-rs", Some("vectors")),
    ("postgis/postgis", Some("postgis")),
    ("kartoza/postgis", Some("postgis")),
    ("timescale/timescaledb", Some("timescaledb")),
    ("timescale/timescaledb-ha", Some("timescaledb")),
    ("timescaledev/timescaledb", Some("timescaledb")),
    ("citusdata/citus", Some("citus")),
    ("paradedb/paradedb", Some("pg_search")),
];

/// The Redis family (and wire-compatible servers) by image repository.
const REDIS_IMAGES: &[&str] = &[
    "redis",
    "redis/redis-stack",
    "redis/redis-stack-server",
    "bitnami/redis",
    "valkey/valkey",
    "bitnami/valkey",
    "eqalpha/keydb",
    "redislabs/redisearch",
    "redislabs/rejson",
    "redislabs/redismod",
    "docker.dragonflydb.io/dragonflydb/dragonfly",
    "dragonflydb/dragonfly",
];

/// What a compose service is: by its image, else (for a service that is not built
/// from source) by the environment its server reads or the port it serves.
fn infra_kind(
    name: &str,
    image: &str,
    built: bool,
    env: &[(String, String)],
    ports: &[(u16, u16)],
) -> Option<(InfraKind, Option<&'static str>)> {
    let repo = image_repository(image);
    if let Some((_, ext)) = POSTGRES_IMAGES.iter().find(|(r, _)| *r == repo) {
        return Some((InfraKind::Postgres, *ext));
    }
    if REDIS_IMAGES.contains(&repo.as_str()) {
        return Some((InfraKind::Redis, None));
    }
    if built {
        return None;
    }
    let has = |k: &str| env.iter().any(|(n, _)| n == k);
    let serves = |p: u16| ports.iter().any(|(_, c)| *c == p);
    if [
        "POSTGRES_PASSWORD",
        "POSTGRES_DB",
        "POSTGRES_USER",
        "POSTGRESQL_PASSWORD",
        "POSTGRESQL_DATABASE",
        "PGDATA",
    ]
    .iter()
    .any(|k| has(k))
        || serves(5432)
        || (image.is_empty() && name.contains("postgres"))
    {
        return Some((InfraKind::Postgres, None));
    }
    if [
        "REDIS_PASSWORD",
        "REDIS_ARGS",
        "REDIS_AOF_ENABLED",
        "VALKEY_PASSWORD",
    ]
    .iter()
    .any(|k| has(k))
        || serves(6379)
        || (image.is_empty() && (name.contains("redis") || name.contains("valkey")))
    {
        return Some((InfraKind::Redis, None));
    }
    None
}

/// Flags that only make sense on a developer's machine, dropped from an imported
/// command: `(flag, takes a value)`.
const DEV_ONLY_FLAGS: &[(&str, bool)] = &[
    ("--reload", false),
    ("--reload-dir", true),
    ("--reload-include", true),
    ("--reload-exclude", true),
    ("--reload-delay", true),
    ("--debug", false),
    ("--use-reloader", false),
];

/// A shell word, quoted only when it needs to be.
fn shell_word(w: &str) -> String {
    if !w.is_empty()
        && w.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@%+,".contains(c))
    {
        w.to_string()
    } else {
        format!("'{}'", w.replace('\'', "'\\''"))
    }
}

/// A compose `command` (string or list) as one command line, without dev-only flags;
/// the second value lists the flags dropped.
fn import_command(cmd: &Yaml) -> Option<(String, Vec<String>)> {
    let words: Vec<String> = match cmd {
        Yaml::String(s) => s.split_whitespace().map(str::to_string).collect(),
        Yaml::Sequence(seq) => seq
            .iter()
            .filter_map(|w| match w {
                Yaml::String(s) => Some(s.clone()),
                Yaml::Number(n) => Some(n.to_string()),
                _ => None,
            })
            .collect(),
        _ => return None,
    };
    let quoted = matches!(cmd, Yaml::Sequence(_));
    let mut kept = Vec::new();
    let mut dropped = Vec::new();
    let mut it = words.into_iter();
    while let Some(w) = it.next() {
        let flag = w.split('=').next().unwrap_or("");
        match DEV_ONLY_FLAGS.iter().find(|(f, _)| *f == flag) {
            Some((_, takes_value)) => {
                if *takes_value && !w.contains('=') {
                    match it.next() {
                        Some(v) => dropped.push(format!("{w} {v}")),
                        None => dropped.push(w),
                    }
                } else {
                    dropped.push(w);
                }
            }
            None => kept.push(if quoted { shell_word(&w) } else { w }),
        }
    }
    (!kept.is_empty()).then(|| (kept.join(" "), dropped))
}

/// Build a berth.toml from the compose YAML `text` (named `file` in errors).
pub fn from_compose(
    file: &str,
    text: &str,
    opts: &InitOptions,
) -> Result<InitResult, Vec<Diagnostic>> {
    let doc: Yaml = serde_norway::from_str(text).map_err(|e| {
        let span = e
            .location()
            .map(|l| {
                let off = l.index();
                off..off + 1
            })
            .unwrap_or(0..0);
        vec![
            Diagnostic::error("compose-syntax", format!("{file} is not valid YAML: {e}"))
                .at(label_for(file, text, span, "")),
        ]
    })?;
    let err = |msg: String, help: &str| {
        vec![Diagnostic::error("compose-import", msg).help(help.to_string())]
    };
    let Some(services) = doc.get("services").and_then(Yaml::as_mapping) else {
        return Err(err(
            format!("{file} has no `services:` mapping"),
            "pass a docker-compose file with services",
        ));
    };

    let mut notes = Vec::new();
    let mut postgres: Option<Infra> = None;
    let mut redis: Option<Infra> = None;
    let mut pg_db: Option<String> = None;
    let mut db_from_url: Option<(String, String)> = None;
    let mut redis_db: Option<u8> = None;
    let mut redis_prefix: Option<String> = None;
    let mut db_scheme: Option<String> = None;
    let mut redis_scheme: Option<String> = None;
    let mut extensions: Vec<String> = Vec::new();
    let mut product_hint: Option<String> = None;
    let mut display_name: Option<String> = None;
    let mut apps: IndexMap<String, Svc> = IndexMap::new();

    for (name, def) in services {
        let name = name.as_str().unwrap_or_default().to_string();
        let image = def
            .get("image")
            .and_then(Yaml::as_str)
            .unwrap_or_default()
            .to_string();
        let ports = published_ports(def.get("ports"));
        let env = environment(def.get("environment"));
        let built = def.get("build").is_some();
        match infra_kind(&name, &image, built, &env, &ports) {
            Some((InfraKind::Postgres, ext)) => {
                postgres = Some(Infra {
                    image: if image.is_empty() {
                        "postgres:15".into()
                    } else {
                        image
                    },
                    port: ports.first().map(|p| p.0),
                });
                if let Some(ext) = ext {
                    if !extensions.iter().any(|e| e == ext) {
                        extensions.push(ext.to_string());
                    }
                    notes.push(format!(
                        "{name}: its image provides the `{ext}` extension; `berth provision` creates it in the product's database (database.extensions)"
                    ));
                }
                for (k, v) in &env {
                    if k == "POSTGRES_DB" || k == "POSTGRESQL_DATABASE" {
                        pg_db = Some(v.clone());
                    }
                    if secrets::is_secret_name(k) {
                        notes.push(format!(
                            "{name}: {k} not copied; berth generates and stores the database passwords"
                        ));
                    }
                }
                continue;
            }
            Some((InfraKind::Redis, _)) => {
                redis = Some(Infra {
                    image: if image.is_empty() {
                        "redis:7".into()
                    } else {
                        image
                    },
                    port: ports.first().map(|p| p.0),
                });
                continue;
            }
            None => {}
        }
        if product_hint.is_none()
            && let Some(c) = def.get("container_name").and_then(Yaml::as_str)
            && let Some((first, _)) = c.split_once('-')
        {
            product_hint = Some(first.to_string());
        }
        let mut svc = Svc::default();
        match def.get("build") {
            Some(Yaml::String(ctx)) => svc.build = Some((clean_rel(ctx), None)),
            Some(b @ Yaml::Mapping(_)) => {
                let ctx = clean_rel(b.get("context").and_then(Yaml::as_str).unwrap_or("."));
                let df = b.get("dockerfile").and_then(Yaml::as_str).map(|d| {
                    if ctx == "." {
                        clean_rel(d)
                    } else {
                        format!("{ctx}/{}", clean_rel(d))
                    }
                });
                svc.build = Some((ctx, df));
            }
            _ => {}
        }
        if svc.build.is_none() && !image.is_empty() {
            svc.image = Some(image);
        }
        if let Some((host, container)) = ports.first() {
            svc.host_port = Some(*host);
            svc.port = Some(*container);
        }
        if ports.len() > 1 {
            notes.push(format!(
                "{name}: only the first published port ({}) was imported",
                ports[0].0
            ));
        }
        svc.health_path = def
            .get("healthcheck")
            .and_then(|h| h.get("test"))
            .and_then(health_path);
        if let Some(h) = def.get("healthcheck") {
            for key in ["interval", "timeout"] {
                if let Some(d) = h.get(key).and_then(Yaml::as_str)
                    && let Ok(parsed) = d.parse::<crate::duration::HumanDuration>()
                {
                    svc.health_timing.push((key, q(&parsed.to_string())));
                }
            }
            if let Some(r) = h.get("retries").and_then(Yaml::as_u64) {
                svc.health_timing.push(("retries", r.to_string()));
            }
        }
        if let Some((cmd, dropped)) = def.get("command").and_then(import_command) {
            if !dropped.is_empty() {
                notes.push(format!(
                    "{name}: command kept without {} (for development only)",
                    dropped.join(", ")
                ));
            }
            svc.command = Some(cmd);
        }
        if def.get("volumes").is_some() {
            notes.push(format!(
                "{name}: volumes (dev bind mounts) are not part of a deploy and were left out"
            ));
        }
        for (k, v) in env {
            match k.as_str() {
                "DATABASE_URL" => {
                    if let Some(parsed) = parse_db_url(&v) {
                        db_from_url = Some(parsed);
                    }
                    if let Some(scheme) = url_scheme(&v)
                        && scheme != crate::model::DEFAULT_DATABASE_SCHEME
                        && scheme.starts_with("postgres")
                    {
                        db_scheme = Some(scheme);
                    }
                    notes.push(format!("{name}: DATABASE_URL is derived from the product's [database] (role and password provisioned by berth); its value was not copied"));
                }
                "REDIS_URL" => {
                    if let Some(scheme) = url_scheme(&v)
                        && scheme != crate::model::DEFAULT_REDIS_SCHEME
                        && scheme.starts_with("redis")
                    {
                        redis_scheme = Some(scheme);
                    }
                    redis_db = v
                        .rsplit('/')
                        .next()
                        .and_then(|d| d.parse().ok())
                        .or(redis_db);
                    notes.push(format!(
                        "{name}: REDIS_URL is derived from the product's [redis]"
                    ));
                }
                "REDIS_KEY_PREFIX" => redis_prefix = Some(v),
                "APP_NAME" => {
                    display_name.get_or_insert(v.clone());
                    svc.env.insert(k, v);
                }
                "PRODUCT_ID" | "VITE_PRODUCT_ID" => {
                    product_hint = Some(v.clone());
                    svc.env.insert(k, v);
                }
                _ if is_interpolated(&v) => {
                    notes.push(format!("{name}: {k} came from the environment ({v}); listed under secrets, its value belongs in the product's secret file"));
                    svc.secrets.push(k);
                }
                _ if secrets::is_secret_name(&k) || !secrets::scan_value(&v).is_empty() => {
                    notes.push(format!(
                        "{name}: {k} holds a secret; moved to secrets (value not copied)"
                    ));
                    svc.secrets.push(k);
                }
                _ => {
                    svc.env.insert(k, v);
                }
            }
        }
        apps.insert(slugify(&name), svc);
    }

    let product = match opts.product.clone().or(product_hint).or_else(|| {
        pg_db.as_ref().map(|d| {
            ["_development", "_dev", "_local", "_test"]
                .iter()
                .fold(d.clone(), |acc, s| {
                    acc.strip_suffix(s).map(str::to_string).unwrap_or(acc)
                })
        })
    }) {
        Some(p) => slugify(&p),
        None => {
            return Err(err(
                format!("could not tell the product's name from {file}"),
                "pass it: berth init --from <file> --product <name>",
            ));
        }
    };
    if apps.is_empty() {
        return Err(err(
            format!("{file} has no application services (only databases/caches)"),
            "berth needs at least one service of the product to deploy",
        ));
    }
    // Service names like `bestays-server` lose the product prefix.
    let apps: IndexMap<String, Svc> = apps
        .into_iter()
        .map(|(k, v)| {
            let short = k
                .strip_prefix(&format!("{product}-"))
                .unwrap_or(&k)
                .to_string();
            (short, v)
        })
        .collect();

    let project = opts
        .project
        .clone()
        .unwrap_or_else(|| format!("{product}-monorepo"));
    let (db_name, db_role) = db_from_url.unwrap_or_else(|| {
        (
            pg_db.clone().unwrap_or_else(|| product.replace('-', "_")),
            format!("{}_user", product.replace('-', "_")),
        )
    });
    let mut t = String::new();
    t.push_str(&format!(
        "# berth.toml generated by `berth init --from {file}`.\n# Review it, then run `berth check`. Secret values were not copied: set them in\n# the product's untracked secret file.\n\n"
    ));
    t.push_str(&format!("[project]\nname = {}\n\n", q(&project)));
    t.push_str("[conventions]\nrequire_task = true\n\n");
    if let Some(pg) = &postgres {
        t.push_str(&format!(
            "[infra.postgres]\nmode = \"container\"\nimage = {}\n",
            q(&pg.image)
        ));
        if let Some(p) = pg.port {
            t.push_str(&format!("port = {p}\n"));
        }
        t.push('\n');
    }
    if let Some(r) = &redis {
        t.push_str(&format!(
            "[infra.redis]\nmode = \"container\"\nimage = {}\n",
            q(&r.image)
        ));
        if let Some(p) = r.port {
            t.push_str(&format!("port = {p}\n"));
        }
        t.push('\n');
    }
    let mut groups = Vec::new();
    for (sname, svc) in &apps {
        if let Some((ctx, df)) = &svc.build
            && ctx != "."
        {
            let mut paths = vec![format!("{ctx}/**")];
            if let Some(df) = df
                && !df.starts_with(&format!("{ctx}/"))
            {
                paths.push(df.clone());
            }
            t.push_str(&format!(
                "# Used by every product built from it.\n[shared.{sname}]\npaths = {}\n\n",
                list(&paths)
            ));
            groups.push(sname.clone());
        }
    }
    t.push_str(&format!("[products.{product}]\n"));
    t.push_str(&format!(
        "display_name = {}\n",
        q(&display_name.unwrap_or_else(|| title_case(&product)))
    ));
    t.push_str("# Paths only this product owns (e.g. \"products/<name>/**\").\npaths = []\n");
    t.push_str(&format!("aliases = [{}]\n", q(&product)));
    t.push_str(&format!(
        "domains = [{}]\n",
        q(&format!("{product}.localhost"))
    ));
    t.push_str(&format!("depends_on_shared = {}\n", list(&groups)));
    if postgres.is_some() || db_name.len() > 1 {
        let mut fields = vec![
            format!("name = {}", q(&db_name)),
            format!("role = {}", q(&db_role)),
        ];
        if let Some(s) = &db_scheme {
            fields.push(format!("url_scheme = {}", q(s)));
        }
        if !extensions.is_empty() {
            fields.push(format!("extensions = {}", list(&extensions)));
        }
        t.push_str(&format!("database = {{ {} }}\n", fields.join(", ")));
    }
    if redis.is_some() {
        let mut prefix = redis_prefix.unwrap_or_else(|| format!("{product}:"));
        // A prefix must end in a separator (`p1` would share keys with `p10`).
        if !prefix.is_empty() && !prefix.ends_with([':', '.', '_', '-']) {
            notes.push(format!(
                "Redis key prefix `{prefix}` becomes `{prefix}:` (a prefix ends in a separator); berth hands it to the app as REDIS_KEY_PREFIX"
            ));
            prefix.push(':');
        }
        let scheme = redis_scheme
            .as_ref()
            .map(|s| format!(", url_scheme = {}", q(s)))
            .unwrap_or_default();
        t.push_str(&format!(
            "redis = {{ db = {}, prefix = {}{scheme} }}\n",
            redis_db.unwrap_or(0),
            q(&prefix)
        ));
    }
    for (sname, svc) in &apps {
        t.push_str(&format!("\n[products.{product}.services.{sname}]\n"));
        if let Some((ctx, df)) = &svc.build {
            match df {
                Some(df) => t.push_str(&format!(
                    "build = {{ context = {}, dockerfile = {} }}\n",
                    q(ctx),
                    q(df)
                )),
                None => t.push_str(&format!("build = {{ context = {} }}\n", q(ctx))),
            }
        }
        if let Some(img) = &svc.image {
            t.push_str(&format!("image = {}\n", q(img)));
        }
        if let Some(c) = &svc.command {
            t.push_str(&format!("command = {}\n", q(c)));
        }
        if let Some(p) = svc.port {
            t.push_str(&format!("port = {p}\n"));
        }
        if let Some(p) = svc.host_port {
            t.push_str(&format!("host_port = {p}\n"));
        }
        if !svc.env.is_empty() {
            let pairs: Vec<String> = svc
                .env
                .iter()
                .map(|(k, v)| format!("{k} = {}", q(v)))
                .collect();
            t.push_str(&format!("env = {{ {} }}\n", pairs.join(", ")));
        }
        t.push_str(&format!("secrets = {}\n", list(&svc.secrets)));
        if let Some(h) = &svc.health_path {
            let mut fields = vec![format!("path = {}", q(h))];
            fields.extend(svc.health_timing.iter().map(|(k, v)| format!("{k} = {v}")));
            t.push_str(&format!("health = {{ {} }}\n", fields.join(", ")));
        }
    }
    // Nothing is written unless it passes berth's own check.
    crate::check_str("berth.toml", &t)?;
    Ok(InitResult {
        product,
        toml: t,
        notes,
    })
}

fn q(s: &str) -> String {
    toml_edit::Value::from(s).to_string().trim().to_string()
}

fn list(v: &[String]) -> String {
    format!(
        "[{}]",
        v.iter().map(|s| q(s)).collect::<Vec<_>>().join(", ")
    )
}

fn clean_rel(p: &str) -> String {
    let p = p.trim_start_matches("./").trim_end_matches('/');
    if p.is_empty() {
        ".".into()
    } else {
        p.to_string()
    }
}

pub(crate) fn title_case(slug: &str) -> String {
    slug.split('-')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
                .unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn is_interpolated(v: &str) -> bool {
    let v = v.trim();
    v.starts_with("${") || (v.starts_with('$') && v.len() > 1)
}

/// `(host, container)` pairs from a compose `ports:` list (short and long syntax).
fn published_ports(ports: Option<&Yaml>) -> Vec<(u16, u16)> {
    let mut out = Vec::new();
    for p in ports.and_then(Yaml::as_sequence).into_iter().flatten() {
        match p {
            Yaml::Mapping(_) => {
                let get = |k: &str| {
                    p.get(k)
                        .and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok()))
                };
                if let (Some(h), Some(c)) = (get("published"), get("target")) {
                    out.push((h as u16, c as u16));
                }
            }
            other => {
                let s = match other {
                    Yaml::String(s) => s.clone(),
                    Yaml::Number(n) => n.to_string(),
                    _ => continue,
                };
                let s = s.split('/').next().unwrap_or("");
                let parts: Vec<&str> = s.split(':').collect();
                let nums: Vec<Option<u16>> = parts.iter().map(|x| x.parse().ok()).collect();
                match nums.as_slice() {
                    [Some(c)] => out.push((*c, *c)),
                    [Some(h), Some(c)] | [_, Some(h), Some(c)] => out.push((*h, *c)),
                    _ => {}
                }
            }
        }
    }
    out
}

/// Environment as ordered pairs from the map or list form.
fn environment(env: Option<&Yaml>) -> Vec<(String, String)> {
    let scalar = |v: &Yaml| match v {
        Yaml::String(s) => s.clone(),
        Yaml::Number(n) => n.to_string(),
        Yaml::Bool(b) => b.to_string(),
        _ => String::new(),
    };
    match env {
        Some(Yaml::Mapping(m)) => m
            .iter()
            .filter_map(|(k, v)| Some((k.as_str()?.to_string(), scalar(v))))
            .collect(),
        Some(Yaml::Sequence(s)) => s
            .iter()
            .filter_map(|e| {
                let e = e.as_str()?;
                let (k, v) = e.split_once('=').unwrap_or((e, ""));
                Some((k.to_string(), v.to_string()))
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// The path a compose health check probes (`curl -f http://localhost:8011/api/health`).
fn health_path(test: &Yaml) -> Option<String> {
    let text = match test {
        Yaml::String(s) => s.clone(),
        Yaml::Sequence(s) => s
            .iter()
            .filter_map(Yaml::as_str)
            .collect::<Vec<_>>()
            .join(" "),
        _ => return None,
    };
    let i = text.find("://")?;
    let rest = &text[i + 3..];
    let slash = rest.find('/')?;
    let path: String = rest[slash..]
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != '"' && *c != '\'')
        .collect();
    Some(path)
}

/// The scheme of a URL, lower case, when it is a valid scheme (`postgresql+asyncpg`).
fn url_scheme(url: &str) -> Option<String> {
    let (scheme, _) = url.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let mut chars = scheme.chars();
    (chars.next()?.is_ascii_lowercase()
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+.-".contains(c)))
    .then_some(scheme)
}

/// `(database, role)` from `postgresql+asyncpg://user:pw@host:5432/db`.
fn parse_db_url(url: &str) -> Option<(String, String)> {
    let rest = &url[url.find("://")? + 3..];
    let (creds, host_db) = rest.rsplit_once('@')?;
    let user = creds.split(':').next()?.to_string();
    let db = host_db
        .split_once('/')?
        .1
        .split(['?', '#'])
        .next()?
        .to_string();
    (!user.is_empty() && !db.is_empty()).then_some((db, user))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_in_every_syntax() {
        let y: Yaml = serde_norway::from_str(
            "[\"8011:8011\", \"127.0.0.1:5433:5432\", 6379, \"9000:9000/tcp\", {published: 8080, target: 80}]",
        )
        .unwrap();
        assert_eq!(
            published_ports(Some(&y)),
            [
                (8011, 8011),
                (5433, 5432),
                (6379, 6379),
                (9000, 9000),
                (8080, 80)
            ]
        );
    }

    /// A compose prefix without a separator gets one, so the manifest init
    /// writes passes check (`p1` would otherwise share keys with `p10`).
    #[test]
    fn redis_prefix_gets_a_separator() {
        let compose = "services:\n  redis:\n    image: redis:7\n  server:\n    image: shop-server:1\n    environment:\n      REDIS_URL: redis://redis:6379/0\n      REDIS_KEY_PREFIX: shop\n";
        let opts = InitOptions {
            product: Some("shop".into()),
            ..Default::default()
        };
        let r = from_compose("compose.yml", compose, &opts).expect("init succeeds");
        assert!(r.toml.contains("prefix = \"shop:\""), "{}", r.toml);
        assert!(
            r.notes.iter().any(|n| n.contains("becomes `shop:`")),
            "{:?}",
            r.notes
        );
    }

    #[test]
    fn image_families_with_any_registry_tag_or_digest() {
        for (image, kind, ext) in [
            ("postgres:15", Some(InfraKind::Postgres), None),
            (
                "docker.io/library/postgres:16-alpine",
                Some(InfraKind::Postgres),
                None,
            ),
            (
                "pgvector/pgvector:pg16",
                Some(InfraKind::Postgres),
                Some("vector"),
            ),
            (
                "ghcr.io/pgvector/pgvector@sha256:0123abcd",
                Some(InfraKind::Postgres),
                Some("vector"),
            ),
            (
                "postgis/postgis:16-3.4",
                Some(InfraKind::Postgres),
                Some("postgis"),
            ),
            (
                "timescale/timescaledb:latest-pg16",
                Some(InfraKind::Postgres),
                Some("timescaledb"),
            ),
            (
                "registry.local:5000/bitnami/postgresql:16",
                Some(InfraKind::Postgres),
                None,
            ),
            (
                "supabase/postgres:15.1.0.147",
                Some(InfraKind::Postgres),
                None,
            ),
            ("redis:7-alpine", Some(InfraKind::Redis), None),
            (
                "redis/redis-stack-server:latest",
                Some(InfraKind::Redis),
                None,
            ),
            ("valkey/valkey:8", Some(InfraKind::Redis), None),
            ("bitnami/redis:7.2", Some(InfraKind::Redis), None),
            ("eqalpha/keydb", Some(InfraKind::Redis), None),
            ("myorg/postgres-backup:1", None, None),
            ("myorg/api:1", None, None),
        ] {
            assert_eq!(
                infra_kind("svc", image, false, &[], &[]),
                kind.map(|k| (k, ext)),
                "{image}"
            );
        }
        // By the server's environment or port, when the image says nothing.
        let env = vec![("POSTGRES_PASSWORD".to_string(), "x".to_string())];
        assert_eq!(
            infra_kind("db", "myorg/db:1", false, &env, &[]),
            Some((InfraKind::Postgres, None))
        );
        assert_eq!(
            infra_kind("cache", "myorg/cache:1", false, &[], &[(6380, 6379)]),
            Some((InfraKind::Redis, None))
        );
        // An application built from source that talks to Redis is not Redis.
        let env = vec![("REDIS_URL".to_string(), "redis://redis".to_string())];
        assert_eq!(infra_kind("server", "", true, &env, &[(6379, 6379)]), None);
    }

    #[test]
    fn commands_lose_dev_only_flags() {
        let y: Yaml = serde_norway::from_str(
            "uvicorn app.main:app --host 0.0.0.0 --port 8011 --reload --reload-dir app",
        )
        .unwrap();
        assert_eq!(
            import_command(&y),
            Some((
                "uvicorn app.main:app --host 0.0.0.0 --port 8011".to_string(),
                vec!["--reload".to_string(), "--reload-dir app".to_string()]
            ))
        );
        let y: Yaml =
            serde_norway::from_str("[\"sh\", \"-c\", \"alembic upgrade head && uvicorn app:app\"]")
                .unwrap();
        assert_eq!(
            import_command(&y).unwrap().0,
            "sh -c 'alembic upgrade head && uvicorn app:app'"
        );
    }

    #[test]
    fn url_schemes() {
        assert_eq!(
            url_scheme("postgresql+asyncpg://u:p@h/db").as_deref(),
            Some("postgresql+asyncpg")
        );
        assert_eq!(url_scheme("rediss://h:6379/0").as_deref(), Some("rediss"));
        assert_eq!(url_scheme("${DATABASE_URL}"), None);
    }

    #[test]
    fn db_urls() {
        assert_eq!(
            parse_db_url("postgresql+asyncpg://bestays_user:pw@postgres:5432/bestays_dev"),
            Some(("bestays_dev".into(), "bestays_user".into()))
        );
    }

    #[test]
    fn health_paths() {
        let y: Yaml = serde_norway::from_str(
            "[\"CMD\", \"curl\", \"-f\", \"http://localhost:8011/api/health\"]",
        )
        .unwrap();
        assert_eq!(health_path(&y).as_deref(), Some("/api/health"));
    }
}
