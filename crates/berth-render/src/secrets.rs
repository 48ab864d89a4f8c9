//! Per-product secret files: `.berth/secrets/<product>.env` (mode 0600, in a
//! 0700 directory, never tracked by git). berth generates the database and
//! Redis passwords there; values a person sets (API keys) are kept as they are.

use std::io::Write;
use std::path::{Path, PathBuf};

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
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("secret"),
        std::process::id()
    ));
    {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp).map_err(io("write", &tmp))?;
        f.write_all(body.as_bytes()).map_err(io("write", &tmp))?;
        f.sync_all().map_err(io("write", &tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(io("write", path))?;
    Ok(())
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
        let url = format!("postgresql://{}:{pw}@{host}:{port}/{}", db.role, db.name);
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
            &format!("redis://{name}:{pw}@{host}:{port}/{}", r.db),
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
    Ok((f, changed))
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

    #[test]
    fn sha256_matches_a_known_digest() {
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
