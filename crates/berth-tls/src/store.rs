//! Where berth keeps TLS material, under `.berth/tls/` beside berth.toml (never
//! committed: `berth render` makes git ignore `.berth/`):
//!
//! - `accounts/<directory>/account.json`: ACME account credentials, one per CA
//!   directory (dir 0700, file 0600);
//! - `live/<product>/{fullchain,privkey}.pem`: what nginx serves (key 0600);
//! - `state/<product>.json`: the last attempt, its error, a rate-limit backoff;
//! - `challenge/.well-known/acme-challenge/<token>`: HTTP-01 answers, only while
//!   an order is open.
//!
//! Every write is atomic (temp file with its final mode, fsync, rename, fsync dir).

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The product's record of renewal attempts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// Unix seconds of the last issue or renewal attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempt: Option<i64>,
    /// Unix seconds of the last success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success: Option<i64>,
    /// What the last attempt failed with (none when it succeeded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// No new order before this (Unix seconds): the CA's Retry-After or a rate-limit backoff.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_not_before: Option<i64>,
    /// Consecutive rate-limited attempts (the backoff doubles with each).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rate_limited: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

pub struct Store {
    pub dir: PathBuf,
}

impl Store {
    pub fn new(root: &Path) -> Self {
        Self {
            dir: root.join(".berth/tls"),
        }
    }

    /// Create `.berth/tls` traversable (nginx's workers read the challenge webroot
    /// under it; every directory below with secrets in it is 0700).
    pub fn prepare(&self) -> std::io::Result<()> {
        private_dir(&self.dir, 0o755)?;
        private_dir(
            &self.dir.join("challenge/.well-known/acme-challenge"),
            0o755,
        )?;
        for sub in ["challenge", "challenge/.well-known"] {
            std::fs::set_permissions(self.dir.join(sub), std::fs::Permissions::from_mode(0o755))?;
        }
        Ok(())
    }

    pub fn live_dir(&self, product: &str) -> PathBuf {
        self.dir.join("live").join(product)
    }
    pub fn cert_path(&self, product: &str) -> PathBuf {
        self.live_dir(product).join("fullchain.pem")
    }
    pub fn key_path(&self, product: &str) -> PathBuf {
        self.live_dir(product).join("privkey.pem")
    }
    pub fn state_path(&self, product: &str) -> PathBuf {
        self.dir.join("state").join(format!("{product}.json"))
    }
    pub fn challenge_dir(&self) -> PathBuf {
        self.dir.join("challenge/.well-known/acme-challenge")
    }

    /// The account file for a directory URL: one per CA, named after the URL.
    pub fn account_path(&self, directory_url: &str) -> PathBuf {
        let name: String = directory_url
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.dir.join("accounts").join(name).join("account.json")
    }

    pub fn state(&self, product: &str) -> State {
        std::fs::read_to_string(self.state_path(product))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default()
    }

    pub fn save_state(&self, product: &str, state: &State) -> std::io::Result<()> {
        let body = serde_json::to_string_pretty(state).map_err(std::io::Error::other)?;
        write_file(&self.state_path(product), body.as_bytes(), 0o600)
    }

    /// The served certificate chain and key, when both are there.
    pub fn live(&self, product: &str) -> Option<(String, String)> {
        let c = std::fs::read_to_string(self.cert_path(product)).ok()?;
        let k = std::fs::read_to_string(self.key_path(product)).ok()?;
        Some((c, k))
    }
}

/// Create `dir` (and its parents) with `mode`, and make sure it has that mode.
pub fn private_dir(dir: &Path, mode: u32) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
}

/// Write `path` atomically with `mode` (berth_runtime's one atomic writer), in a
/// directory made 0700 when berth creates it.
pub fn write_file(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    if !dir.exists() {
        private_dir(dir, 0o700)?;
    }
    berth_runtime::write_atomic_mode(path, contents, Some(mode))
}
