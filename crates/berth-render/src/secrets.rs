//! Per-product secret files: `.berth/secrets/<product>.env` (mode 0600, in a
//! 0700 directory, never tracked by git). berth generates the database and
//! Redis passwords there; values a person sets (API keys) are kept as they are.

use std::path::{Path, PathBuf};

use berth_cmd::Masker;
use berth_manifest::{InfraMode, Manifest, Product};
use sha2::{Digest, Sha256};

/// Where secret files live, relative to the manifest directory.
pub const SECRETS_DIR: &str = ".berth/secrets";

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("could not {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: expected NAME=value")]
    Syntax { path: String, line: usize },
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> SecretError + 'a {
    move |source| SecretError::Io {
        action,
        path: path.display().to_string(),
        source,
    }
}

/// Names in a product's secret file whose values are not secret (and common
/// enough in output that masking them would hide what happened).
pub const NOT_SECRET: &[&str] = &["REDIS_KEY_PREFIX"];

/// The password of `scheme://user:password@host...`, if the value is such a URL.
fn url_password(v: &str) -> Option<&str> {
    let (_, rest) = v.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let (userinfo, _) = authority.rsplit_once('@')?;
    let (_, pw) = userinfo.split_once(':')?;
    Some(pw).filter(|p| !p.is_empty())
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let Some(v) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The masker of a product: every value of its secret file (generated passwords,
/// the URLs derived from them, and every declared secret a person filled in).
/// Whatever berth prints or records of output it did not write passes through it.
pub fn product_masker(root: &Path, product: &str) -> Result<Masker, SecretError> {
    Ok(SecretFile::load(&product_secret_path(root, product))?.masker())
}

/// A `NAME=value` file, order preserved. Values are never printed by berth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretFile {
    pub path: PathBuf,
    entries: Vec<(String, String)>,
}

impl SecretFile {
    /// Read the file, or start an empty one if it does not exist.
    pub fn load(path: &Path) -> Result<Self, SecretError> {
        let mut entries = Vec::new();
        match std::fs::read_to_string(path) {
            Ok(text) => {
                for (i, line) in text.lines().enumerate() {
                    let t = line.trim();
                    if t.is_empty() || t.starts_with('#') {
                        continue;
                    }
                    let (k, v) = t.split_once('=').ok_or_else(|| SecretError::Syntax {
                        path: path.display().to_string(),
                        line: i + 1,
                    })?;
                    entries.push((k.trim().to_string(), v.to_string()));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("read", path)(e)),
        }
        Ok(Self {
            path: path.to_path_buf(),
            entries,
        })
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    /// Set `key`; returns whether the value changed.
    pub fn set(&mut self, key: &str, value: &str) -> bool {
        match self.entries.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) if v == value => false,
            Some((_, v)) => {
                *v = value.to_string();
                true
            }
            None => {
                self.entries.push((key.to_string(), value.to_string()));
                true
            }
        }
    }

    /// Add `key` with an empty value if missing (a secret a person must fill in).
    pub fn declare(&mut self, key: &str) -> bool {
        if self.entries.iter().any(|(k, _)| k == key) {
            return false;
        }
        self.entries.push((key.to_string(), String::new()));
        true
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(k, _)| k.as_str())
    }

    /// What must never be shown of this file: every value (but the few berth writes
    /// that are no secrets, see [`NOT_SECRET`]) and the password inside each URL,
    /// as written and percent-decoded.
    pub fn masker(&self) -> Masker {
        let mut m = Masker::new();
        for (k, v) in &self.entries {
            if NOT_SECRET.contains(&k.as_str()) {
                continue;
            }
            m.add(v.clone());
            if let Some(pw) = url_password(v) {
                m.add(percent_decode(pw));
                m.add(pw.to_string());
            }
        }
        m
    }

    /// Write atomically with mode 0600 inside a 0700 directory.
    pub fn save(&self, title: &str) -> Result<(), SecretError> {
        let mut body = format!(
            "# {title}\n# Written by berth. Never commit this file; it is git-ignored (mode 0600).\n"
        );
        for (k, v) in &self.entries {
            body.push_str(&format!("{k}={v}\n"));
        }
        write_private(&self.path, &body)
    }
}

/// Write `body` to `path` atomically, readable by its owner only.
pub fn write_private(path: &Path, body: &str) -> Result<(), SecretError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io("create", dir))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io("protect", dir))?;
    }
    berth_cmd::fs::write_atomic_mode(path, body.as_bytes(), Some(0o600)).map_err(io("write", path))
}

/// A new random password: 32 letters and digits (about 190 bits), safe in URLs and env files.
pub fn generate_password() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = [0u8; 64];
    let mut f = std::fs::File::open("/dev/urandom").expect("/dev/urandom is readable");
    std::io::Read::read_exact(&mut f, &mut bytes).expect("read /dev/urandom");
    // Rejection sampling keeps the distribution uniform (62 does not divide 256).
    let mut out = String::with_capacity(32);
    let mut pool = bytes.to_vec();
    while out.len() < 32 {
        if pool.is_empty() {
            std::io::Read::read_exact(&mut f, &mut bytes).expect("read /dev/urandom");
            pool = bytes.to_vec();
        }
        let b = pool.pop().expect("non-empty");
        if (b as usize) < 248 {
            out.push(ALPHABET[b as usize % 62] as char);
        }
    }
    out
}

/// SHA-256 hex digest, as Redis ACL `#<hash>` passwords are written.
pub fn sha256_hex(s: &str) -> String {
    let d = Sha256::digest(s.as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// Names every service of a product reads from its secret file.
pub fn secret_names(p: &Product) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    if p.database.is_some() {
        names.extend(["DATABASE_URL".to_string(), "DATABASE_PASSWORD".to_string()]);
    }
    if p.redis.is_some() {
        names.extend([
            "REDIS_URL".into(),
            "REDIS_PASSWORD".into(),
            "REDIS_KEY_PREFIX".into(),
        ]);
    }
    for s in p.services.values() {
        names.extend(s.secrets.iter().cloned());
    }
    let mut seen = std::collections::HashSet::new();
    names.retain(|n| seen.insert(n.clone()));
    names
}

/// The names berth itself generates in a product's secret file (credentials it derives
/// from the manifest and provisions); a person never sets these by hand.
pub fn generated_names(p: &Product) -> Vec<&'static str> {
    let mut names = Vec::new();
    if p.database.is_some() {
        names.extend(["DATABASE_URL", "DATABASE_PASSWORD"]);
    }
    if p.redis.is_some() {
        names.extend(["REDIS_URL", "REDIS_PASSWORD", "REDIS_KEY_PREFIX"]);
    }
    names
}

/// The secrets a product's services declare, each with the services that read it, in
/// manifest order.
pub fn declared(p: &Product) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for (service, s) in &p.services {
        for name in &s.secrets {
            match out.iter_mut().find(|(n, _)| n == name) {
                Some((_, users)) => users.push(service.clone()),
                None => out.push((name.clone(), vec![service.clone()])),
            }
        }
    }
    out
}

/// The declared secrets of `product` that have no value in its secret file, each with
/// the services that read it.
pub fn missing(
    m: &Manifest,
    root: &Path,
    product: &str,
) -> Result<Vec<(String, Vec<String>)>, SecretError> {
    let file = SecretFile::load(&product_secret_path(root, product))?;
    Ok(declared(&m.products[product])
        .into_iter()
        .filter(|(name, _)| file.get(name).is_none())
        .collect())
}

/// Remove `key`'s value, keeping the name (declared, to be set again); returns whether
/// it had one.
impl SecretFile {
    pub fn clear(&mut self, key: &str) -> bool {
        match self.entries.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) if !v.is_empty() => {
                v.clear();
                true
            }
            _ => false,
        }
    }
}

/// A derived connection URL: `<scheme>://<user>:<password>@<host>:<port>/<path>`. The
/// scheme is validated (`[a-z][a-z0-9+.-]*`), user and password are berth's own
/// (SQL identifiers, product slugs, generated letters and digits), and an IPv6 host is
/// bracketed.
pub fn service_url(
    scheme: &str,
    user: &str,
    password: &str,
    host: &str,
    port: u16,
    path: &str,
) -> String {
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    format!("{scheme}://{user}:{password}@{host}:{port}/{path}")
}

pub fn product_secret_path(root: &Path, product: &str) -> PathBuf {
    root.join(SECRETS_DIR).join(format!("{product}.env"))
}

pub fn infra_secret_path(root: &Path) -> PathBuf {
    root.join(SECRETS_DIR).join("infra.env")
}

/// Make sure a product's secret file has everything its services read:
/// generated passwords (kept once made), connection URLs derived from them,
/// and the declared secrets (empty until a person sets them). Returns the
/// names that were added or changed.
pub fn ensure_product(
    m: &Manifest,
    root: &Path,
    name: &str,
) -> Result<(SecretFile, Vec<String>), SecretError> {
    let p = &m.products[name];
    let mut f = SecretFile::load(&product_secret_path(root, name))?;
    let mut changed = Vec::new();
    if let Some(db) = &p.database {
        if f.get("DATABASE_PASSWORD").is_none() && f.set("DATABASE_PASSWORD", &generate_password())
        {
            changed.push("DATABASE_PASSWORD".to_string());
        }
        let pw = f.get("DATABASE_PASSWORD").expect("just set").to_string();
        let (host, port) = m
            .app_address(name, "postgres")
            .unwrap_or(("localhost".into(), 5432));
        let url = service_url(db.scheme(), &db.role, &pw, &host, port, &db.name);
        if f.set("DATABASE_URL", &url) {
            changed.push("DATABASE_URL".into());
        }
    }
    if let Some(r) = &p.redis {
        if f.get("REDIS_PASSWORD").is_none() && f.set("REDIS_PASSWORD", &generate_password()) {
            changed.push("REDIS_PASSWORD".into());
        }
        let pw = f.get("REDIS_PASSWORD").expect("just set").to_string();
        let (host, port) = m
            .app_address(name, "redis")
            .unwrap_or(("localhost".into(), 6379));
        if f.set(
            "REDIS_URL",
            &service_url(r.scheme(), name, &pw, &host, port, &r.db.to_string()),
        ) {
            changed.push("REDIS_URL".into());
        }
        if f.set("REDIS_KEY_PREFIX", &r.prefix) {
            changed.push("REDIS_KEY_PREFIX".into());
        }
    }
    for s in p.services.values() {
        for k in &s.secrets {
            if f.declare(k) {
                changed.push(k.clone());
            }
        }
    }
    if !changed.is_empty() || !f.path.exists() {
        f.save(&format!("secrets of product {name}"))?;
    }
    for sname in p
        .services
        .iter()
        .filter(|(_, s)| s.overrides_url_schemes())
        .map(|(n, _)| n)
    {
        if ensure_service_urls(m, root, name, sname, &f)? {
            changed.push(format!("{sname}: DATABASE_URL/REDIS_URL"));
        }
    }
    Ok((f, changed))
}

/// `.berth/secrets/<product>.<service>.env`: the derived URLs of a service that chooses
/// its own URL scheme (`database_url_scheme`, `redis_url_scheme`), read after the
/// product's file by both runtimes. Same role, password and database as the product's.
pub fn service_secret_path(root: &Path, product: &str, service: &str) -> PathBuf {
    root.join(SECRETS_DIR)
        .join(format!("{product}.{service}.env"))
}

/// What kustomize's secretGenerator of `product` reads, as `(file name, body, names)`:
/// `secrets.env` (the product's secret file with DATABASE_URL and REDIS_URL pointing at
/// the cluster's PostgreSQL and Redis) and `<service>.env` for each service with its own
/// URL scheme. Values stay as they are in the product's file: nothing is generated here.
pub fn kubernetes_env(
    m: &Manifest,
    root: &Path,
    product: &str,
) -> Result<Vec<(String, String, Vec<String>)>, SecretError> {
    let p = &m.products[product];
    let file = SecretFile::load(&product_secret_path(root, product))?;
    let url = |key: &str, scheme: &str| -> Option<String> {
        match key {
            "DATABASE_URL" => {
                let db = p.database.as_ref()?;
                let (host, port) = crate::kubernetes::cluster_address(m, "postgres");
                Some(service_url(
                    scheme,
                    &db.role,
                    file.get("DATABASE_PASSWORD")?,
                    &host,
                    port,
                    &db.name,
                ))
            }
            _ => {
                let r = p.redis.as_ref()?;
                let (host, port) = crate::kubernetes::cluster_address(m, "redis");
                Some(service_url(
                    scheme,
                    product,
                    file.get("REDIS_PASSWORD")?,
                    &host,
                    port,
                    &r.db.to_string(),
                ))
            }
        }
    };
    let header = |what: &str| {
        format!(
            "# {what}, for kustomize's secretGenerator in this cluster. Written by berth render from\n# .berth/secrets/{product}.env; never commit this file (it is git-ignored, mode 0600).\n"
        )
    };
    let mut out = Vec::new();
    let mut body = header(&format!("Secrets of product {product}"));
    let mut keys = Vec::new();
    for k in file.keys() {
        let value = match k {
            "DATABASE_URL" => p.database.as_ref().and_then(|d| url(k, d.scheme())),
            "REDIS_URL" => p.redis.as_ref().and_then(|r| url(k, r.scheme())),
            _ => None,
        }
        .or_else(|| file.get(k).map(String::from))
        .unwrap_or_default();
        body.push_str(&format!("{k}={value}\n"));
        keys.push(k.to_string());
    }
    out.push(("secrets.env".to_string(), body, keys));
    for (sname, s) in p.services.iter().filter(|(_, s)| s.overrides_url_schemes()) {
        let mut body = header(&format!("URLs of service {sname} of product {product}"));
        let mut keys = Vec::new();
        for (k, scheme) in [
            ("DATABASE_URL", s.database_url_scheme.as_deref()),
            ("REDIS_URL", s.redis_url_scheme.as_deref()),
        ] {
            if let Some(u) = scheme.and_then(|sc| url(k, sc)) {
                body.push_str(&format!("{k}={u}\n"));
                keys.push(k.to_string());
            }
        }
        out.push((format!("{sname}.env"), body, keys));
    }
    Ok(out)
}

/// Write a service's own URLs from the product's secret file; whether it changed.
fn ensure_service_urls(
    m: &Manifest,
    root: &Path,
    product: &str,
    service: &str,
    product_file: &SecretFile,
) -> Result<bool, SecretError> {
    let p = &m.products[product];
    let s = &p.services[service];
    let mut f = SecretFile::load(&service_secret_path(root, product, service))?;
    let mut changed = false;
    let rescheme = |key: &str, scheme: &str| {
        product_file
            .get(key)
            .and_then(|u| u.split_once("://"))
            .map(|(_, rest)| format!("{scheme}://{rest}"))
    };
    if p.database.is_some()
        && let Some(scheme) = &s.database_url_scheme
        && let Some(url) = rescheme("DATABASE_URL", scheme)
    {
        changed |= f.set("DATABASE_URL", &url);
    }
    if p.redis.is_some()
        && let Some(scheme) = &s.redis_url_scheme
        && let Some(url) = rescheme("REDIS_URL", scheme)
    {
        changed |= f.set("REDIS_URL", &url);
    }
    if changed || !f.path.exists() {
        f.save(&format!(
            "URLs of service {service} of product {product} (its own URL scheme)"
        ))?;
    }
    Ok(changed)
}

/// The infra secrets (container mode): the PostgreSQL superuser and Redis admin passwords.
pub fn ensure_infra(m: &Manifest, root: &Path) -> Result<(SecretFile, Vec<String>), SecretError> {
    let mut f = SecretFile::load(&infra_secret_path(root))?;
    let mut changed = Vec::new();
    let container = |i: &Option<berth_manifest::InfraService>| {
        i.as_ref().is_some_and(|i| i.mode == InfraMode::Container)
    };
    if container(&m.infra.postgres) {
        if f.get("POSTGRES_PASSWORD").is_none() && f.set("POSTGRES_PASSWORD", &generate_password())
        {
            changed.push("POSTGRES_PASSWORD".into());
        }
        if f.set("POSTGRES_USER", "postgres") {
            changed.push("POSTGRES_USER".into());
        }
    }
    if m.infra.redis.is_some()
        && f.get("REDIS_ADMIN_PASSWORD").is_none()
        && f.set("REDIS_ADMIN_PASSWORD", &generate_password())
    {
        changed.push("REDIS_ADMIN_PASSWORD".into());
    }
    if !changed.is_empty() {
        f.save("secrets of the shared infrastructure")?;
    }
    Ok((f, changed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_long_random_and_url_safe() {
        let a = generate_password();
        let b = generate_password();
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
    }

    fn manifest(product_fields: &str) -> Manifest {
        let text = format!("[project]\nname = \"p\"\n\n[products.app]\n{product_fields}\n");
        berth_manifest::check_str("berth.toml", &text)
            .map(|(l, _)| l.manifest)
            .unwrap_or_else(|d| panic!("{d:?}"))
    }

    #[test]
    fn derived_urls_take_the_scheme() {
        assert_eq!(
            service_url("postgresql+asyncpg", "app", "pw", "postgres", 5432, "app"),
            "postgresql+asyncpg://app:pw@postgres:5432/app"
        );
        assert_eq!(
            service_url("rediss", "bestays", "pw", "::1", 6379, "2"),
            "rediss://bestays:pw@[::1]:6379/2"
        );
    }

    #[test]
    fn ensure_product_writes_the_schemes_and_keeps_the_password() {
        let m = manifest(
            "database = { name = \"app\", role = \"app_user\", url_scheme = \"postgresql+asyncpg\" }\nredis = { db = 1, prefix = \"app:\", url_scheme = \"rediss\" }",
        );
        let dir = tempfile::tempdir().unwrap();
        let (f, _) = ensure_product(&m, dir.path(), "app").unwrap();
        let pw = f.get("DATABASE_PASSWORD").unwrap().to_string();
        assert_eq!(
            f.get("DATABASE_URL").unwrap(),
            format!("postgresql+asyncpg://app_user:{pw}@localhost:5432/app")
        );
        let rpw = f.get("REDIS_PASSWORD").unwrap().to_string();
        assert_eq!(
            f.get("REDIS_URL").unwrap(),
            format!("rediss://app:{rpw}@localhost:6379/1")
        );
        // Back to the default scheme: same password, new form.
        let m = manifest("database = { name = \"app\", role = \"app_user\" }");
        let (f, changed) = ensure_product(&m, dir.path(), "app").unwrap();
        assert_eq!(changed, ["DATABASE_URL"]);
        assert_eq!(
            f.get("DATABASE_URL").unwrap(),
            format!("postgresql://app_user:{pw}@localhost:5432/app")
        );
    }

    #[test]
    fn a_service_with_its_own_scheme_gets_its_own_urls() {
        let m = manifest(
            "database = { name = \"app\", role = \"app_user\", url_scheme = \"postgresql+asyncpg\" }\n\n[products.app.services.web]\ncommand = \"x\"\n\n[products.app.services.migrate]\ncommand = \"y\"\ndatabase_url_scheme = \"postgresql+psycopg\"",
        );
        let dir = tempfile::tempdir().unwrap();
        let (f, _) = ensure_product(&m, dir.path(), "app").unwrap();
        let pw = f.get("DATABASE_PASSWORD").unwrap().to_string();
        assert!(!service_secret_path(dir.path(), "app", "web").exists());
        let own = SecretFile::load(&service_secret_path(dir.path(), "app", "migrate")).unwrap();
        assert_eq!(
            own.get("DATABASE_URL").unwrap(),
            format!("postgresql+psycopg://app_user:{pw}@localhost:5432/app")
        );
        assert_eq!(own.get("DATABASE_PASSWORD"), None, "only the URLs");
    }

    #[test]
    fn the_masker_covers_every_value_and_url_passwords_but_not_the_prefix() {
        let dir = std::env::temp_dir().join(format!("berth-masker-{}", std::process::id()));
        let path = dir.join("p.env");
        write_private(
            &path,
            "CLERK_SECRET_KEY=sk_test_abc123\nREDIS_KEY_PREFIX=bestays:\nX=1\n\
             DATABASE_URL=postgresql://u:p%40ss%2Fw0rd@h:5432/db\n",
        )
        .unwrap();
        let m = SecretFile::load(&path).unwrap().masker();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(
            m.mask("key sk_test_abc123 pw p@ss/w0rd enc p%40ss%2Fw0rd at bestays: X=1"),
            "key **** pw **** enc **** at bestays: X=1"
        );
        assert_eq!(m.mask("postgresql://u:p%40ss%2Fw0rd@h:5432/db"), "****");
    }

    #[test]
    fn sha256_matches_a_known_digest() {
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
