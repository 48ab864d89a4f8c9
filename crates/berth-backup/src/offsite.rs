//! Off-site copies (`[backup.offsite]`) through rclone: upload each backup and its
//! record right after they are written, read back size and sha256 there, prune there
//! with the local policy, and fetch a copy back when the local one is gone.
//!
//! rclone is given every value as its own argument (never through a shell), and its
//! credentials stay in rclone's own config file: any value there that looks like a
//! credential is masked in every message berth shows or records.
//!
//! Read-back: the size from `rclone lsjson`, then `rclone hashsum sha256`, which asks
//! the backend for the hash where it can compute one (local disks; SFTP servers that
//! run `sha256sum` for rclone newer than 1.60); where it cannot (rclone 1.60's SFTP,
//! which knows MD5 and SHA-1 only; S3 and most object stores, which keep MD5; B2,
//! SHA-1), berth asks again with `--download`, which streams the copy back and hashes
//! it on this machine. The record says which (`checked_by`: `backend` or `download`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_cmd::{Cmd, Masker};
use berth_manifest::Manifest;
use serde::{Deserialize, Serialize};

use crate::BackupError;
use crate::catalog::Record;

/// The outcome of a backup's off-site copy, kept in its record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsiteCopy {
    /// `<remote>:<path>/<product>` (no credentials: those are in rclone's config).
    pub remote: String,
    pub at: String,
    pub at_unix: u64,
    pub ok: bool,
    /// How the sha256 was read back: `backend` (the remote computed it) or
    /// `download` (berth streamed the copy back and hashed it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checked_by: Option<String>,
    /// Why the copy failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One file on the remote.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RemoteFile {
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "Size")]
    pub size: i64,
    #[serde(rename = "IsDir", default)]
    pub is_dir: bool,
}

/// rclone pointed at one product's off-site directory.
pub struct Remote {
    program: PathBuf,
    config: Option<PathBuf>,
    /// `<remote>:<path>/<product>`
    pub dir: String,
    masker: Masker,
}

/// Keys of an rclone config section whose values are credentials.
fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    [
        "pass",
        "secret",
        "key",
        "token",
        "auth",
        "credential",
        "sas",
    ]
    .iter()
    .any(|w| k.contains(w))
        && k != "key_use_agent"
}

/// The credential values of an rclone config file (to mask them in output).
fn config_secrets(path: &Path) -> Masker {
    let mut m = Masker::new();
    if let Ok(text) = std::fs::read_to_string(path) {
        for line in text.lines() {
            if let Some((k, v)) = line.split_once('=')
                && is_secret_key(k.trim())
            {
                m.add(v.trim());
            }
        }
    }
    m
}

fn default_config() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("RCLONE_CONFIG") {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config/rclone/rclone.conf"))
}

impl Remote {
    /// The off-site remote of `product`, `None` when `[backup.offsite]` is not set.
    pub fn of(m: &Manifest, root: &Path, product: &str) -> Result<Option<Self>, BackupError> {
        let Some(o) = &m.backup.offsite else {
            return Ok(None);
        };
        berth_manifest::model::check_offsite_remote(&o.remote)
            .map_err(|e| BackupError::Config(format!("[backup.offsite] remote: {e}")))?;
        let config = o.config.as_ref().map(PathBuf::from);
        if let Some(c) = &config
            && c.starts_with(root)
        {
            return Err(BackupError::Config(format!(
                "[backup.offsite] config {} is inside the repository: rclone's config holds credentials, keep it outside (e.g. /etc/berth/rclone.conf)",
                c.display()
            )));
        }
        let masker = config
            .clone()
            .or_else(default_config)
            .map(|c| config_secrets(&c))
            .unwrap_or_default();
        let base = o.remote.trim_end_matches('/');
        let dir = if base.ends_with(':') {
            format!("{base}{product}")
        } else {
            format!("{base}/{product}")
        };
        Ok(Some(Self {
            program: std::env::var_os("BERTH_RCLONE")
                .map_or_else(|| PathBuf::from("rclone"), PathBuf::from),
            config,
            dir,
            masker,
        }))
    }

    fn cmd(&self, summary: String) -> Cmd {
        let mut c = Cmd::new(&self.program, summary)
            .hint_if_missing("install rclone (Debian: apt install rclone)")
            .mask_with(&self.masker)
            // rclone 1.60's S3 backend refuses to start at all when AWS_CA_BUNDLE is
            // set ("unable to load custom CA bundle"); rclone takes a CA from its own
            // `ca_cert` setting instead.
            .env_remove("AWS_CA_BUNDLE")
            .timeout(Some(Duration::from_secs(3600)))
            .args([
                "--retries",
                "2",
                "--low-level-retries",
                "3",
                "--contimeout",
                "10s",
                "--timeout",
                "60s",
            ]);
        if let Some(cfg) = &self.config {
            c = c.arg("--config").arg(cfg);
        }
        c
    }

    fn path(&self, name: &str) -> String {
        format!("{}/{name}", self.dir)
    }

    fn failed(&self, e: berth_cmd::CmdError) -> BackupError {
        BackupError::Failed(self.masker.mask(&e.to_string()))
    }

    /// Copy `local` to `<dir>/<name>`.
    pub fn upload(&self, local: &Path, name: &str) -> Result<(), BackupError> {
        self.cmd(format!("upload {name} to {}", self.dir))
            .arg("copyto")
            .arg(local)
            .arg(self.path(name))
            .output()
            .map(|_| ())
            .map_err(|e| self.failed(e))
    }

    /// The files under the product's directory (empty when it does not exist yet).
    pub fn list(&self) -> Result<Vec<RemoteFile>, BackupError> {
        let out = self
            .cmd(format!("list the off-site copies in {}", self.dir))
            .args(["lsjson", "--files-only"])
            .arg(&self.dir)
            .output_unchecked()
            .map_err(|e| self.failed(e))?;
        if !out.status.success() {
            let err = out.stderr_str();
            if err.contains("directory not found") || err.contains("not found") {
                return Ok(Vec::new());
            }
            return Err(BackupError::Failed(self.masker.mask(&format!(
                "could not list the off-site copies in {}: {}",
                self.dir,
                err.trim()
            ))));
        }
        let files: Vec<RemoteFile> = serde_json::from_slice(&out.stdout)
            .map_err(|e| BackupError::Failed(format!("rclone lsjson printed no file list: {e}")))?;
        Ok(files.into_iter().filter(|f| !f.is_dir).collect())
    }

    /// sha256 of `<dir>/<name>` as the remote reports it, and how it was computed.
    pub fn sha256(&self, name: &str) -> Result<(String, &'static str), BackupError> {
        let parse = |s: &str| {
            s.split_whitespace()
                .next()
                .filter(|h| h.len() == 64 && h.chars().all(|c| c.is_ascii_hexdigit()))
                .map(str::to_ascii_lowercase)
        };
        let asked = self
            .cmd(format!("read back the sha256 of {name}"))
            .args(["hashsum", "sha256"])
            .arg(self.path(name))
            .output_unchecked()
            .map_err(|e| self.failed(e))?;
        if asked.status.success()
            && let Some(h) = parse(&asked.stdout_str())
        {
            return Ok((h, "backend"));
        }
        let out = self
            .cmd(format!("download {name} to read back its sha256"))
            .args(["hashsum", "sha256", "--download"])
            .arg(self.path(name))
            .output()
            .map_err(|e| self.failed(e))?;
        parse(&out.stdout_str())
            .map(|h| (h, "download"))
            .ok_or_else(|| {
                BackupError::Failed(format!("rclone printed no sha256 for {}", self.path(name)))
            })
    }

    /// Upload `local` as `name`, then read back its size and sha256 there.
    pub fn put_verified(
        &self,
        local: &Path,
        name: &str,
        bytes: u64,
        sha256: &str,
    ) -> Result<&'static str, BackupError> {
        self.upload(local, name)?;
        let listed = self.list()?;
        let size = listed.iter().find(|f| f.name == name).map(|f| f.size);
        if size != Some(bytes as i64) {
            return Err(BackupError::Failed(format!(
                "the off-site copy {} has {} bytes, the backup {bytes}",
                self.path(name),
                size.map_or_else(|| "no file and no".to_string(), |s| s.to_string())
            )));
        }
        let (got, how) = self.sha256(name)?;
        if got != sha256 {
            return Err(BackupError::Failed(format!(
                "the off-site copy {} reads back sha256 {got}, the backup has {sha256}",
                self.path(name)
            )));
        }
        Ok(how)
    }

    /// Copy `<dir>/<name>` to `dest` (through a partial file renamed when complete).
    pub fn download(&self, name: &str, dest: &Path) -> Result<(), BackupError> {
        let dir = dest.parent().unwrap_or(Path::new("."));
        let tmp = crate::stream::partial_path(dir, name);
        let _ = std::fs::remove_file(&tmp);
        let mut partial = crate::backup::Partial(Some(tmp.clone()));
        self.cmd(format!("fetch {name} from {}", self.dir))
            .arg("copyto")
            .arg(self.path(name))
            .arg(&tmp)
            .output()
            .map_err(|e| self.failed(e))?;
        std::fs::rename(&tmp, dest).map_err(|e| {
            BackupError::Failed(format!("could not move {} into place: {e}", dest.display()))
        })?;
        partial.0 = None;
        Ok(())
    }

    /// The text of `<dir>/<name>` (a record).
    pub fn cat(&self, name: &str) -> Result<String, BackupError> {
        self.cmd(format!("read {name} from {}", self.dir))
            .arg("cat")
            .arg(self.path(name))
            .output()
            .map(|o| o.stdout_str())
            .map_err(|e| self.failed(e))
    }

    /// Delete `<dir>/<name>`.
    pub fn delete(&self, name: &str) -> Result<(), BackupError> {
        self.cmd(format!("delete the off-site copy {name}"))
            .arg("deletefile")
            .arg(self.path(name))
            .output()
            .map(|_| ())
            .map_err(|e| self.failed(e))
    }

    /// The records of the off-site copies, oldest first, read from the remote (their
    /// `dir` set to `local_dir`, where a fetched copy goes).
    pub fn records(&self, product: &str, local_dir: &Path) -> Result<Vec<Record>, BackupError> {
        let mut out = Vec::new();
        for f in self.list()? {
            if !(f.name.starts_with(&format!("{product}_")) && f.name.ends_with(".json")) {
                continue;
            }
            let text = self.cat(&f.name)?;
            match serde_json::from_str::<Record>(&text) {
                Ok(mut r) if r.product == product => {
                    r.dir = local_dir.to_path_buf();
                    out.push(r);
                }
                Ok(_) => {}
                Err(e) => tracing::warn!("{}: not a berth backup record: {e}", self.path(&f.name)),
            }
        }
        crate::catalog::sort(&mut out);
        Ok(out)
    }
}

/// Send a freshly written backup (its file, its Redis part, then its record with the
/// outcome) off-site. The outcome is written into the local record either way.
pub fn send(remote: &Remote, record: &mut Record) -> Result<(), BackupError> {
    let result = (|| -> Result<&'static str, BackupError> {
        let how = remote.put_verified(
            &record.path(),
            &record.file,
            record.file_bytes,
            &record.sha256,
        )?;
        if let Some(r) = &record.redis {
            remote.put_verified(&record.dir.join(&r.file), &r.file, r.file_bytes, &r.sha256)?;
        }
        Ok(how)
    })();
    let now = crate::now_unix();
    record.offsite = Some(OffsiteCopy {
        remote: remote.dir.clone(),
        at: crate::stamp(now).1,
        at_unix: now,
        ok: result.is_ok(),
        checked_by: result.as_ref().ok().map(|h| h.to_string()),
        error: result.as_ref().err().map(ToString::to_string),
    });
    crate::backup::write_record(record)?;
    result?;
    let rec_name = record
        .record_path()
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let json = std::fs::read(record.record_path()).map_err(|e| {
        BackupError::Failed(format!(
            "could not read back {}: {e}",
            record.record_path().display()
        ))
    })?;
    let sha = crate::stream::hex(&<sha2::Sha256 as sha2::Digest>::digest(&json));
    let upload = remote.put_verified(&record.record_path(), &rec_name, json.len() as u64, &sha);
    if let Err(e) = upload {
        if let Some(o) = record.offsite.as_mut() {
            o.ok = false;
            o.checked_by = None;
            o.error = Some(format!("the record's upload failed: {e}"));
        }
        crate::backup::write_record(record)?;
        return Err(e);
    }
    Ok(())
}

/// Make sure the backup file of `record` is here: when it is gone and an off-site copy
/// exists, fetch it and check its sha256 against the record. Returns whether it was
/// fetched.
pub fn fetch_if_missing(
    m: &Manifest,
    root: &Path,
    record: &Record,
    with_redis: bool,
) -> Result<bool, BackupError> {
    let mut wanted = vec![(record.file.clone(), record.sha256.clone())];
    if with_redis && let Some(r) = &record.redis {
        wanted.push((r.file.clone(), r.sha256.clone()));
    }
    let missing: Vec<_> = wanted
        .into_iter()
        .filter(|(f, _)| !record.dir.join(f).exists())
        .collect();
    if missing.is_empty() {
        return Ok(false);
    }
    let Some(remote) = Remote::of(m, root, &record.product)? else {
        return Ok(false);
    };
    crate::backup::ensure_dir(&record.dir)?;
    for (file, sha) in missing {
        let dest = record.dir.join(&file);
        remote.download(&file, &dest)?;
        let got = crate::stream::sha256_file(&dest)
            .map_err(|e| BackupError::Failed(format!("could not read {}: {e}", dest.display())))?;
        if got != sha {
            let _ = std::fs::remove_file(&dest);
            return Err(BackupError::Damaged(format!(
                "the off-site copy of {file} has sha256 {got}, its record says {sha}: not used"
            )));
        }
        tracing::info!("fetched {file} from {} (sha256 matches)", remote.dir);
    }
    if !record.record_path().exists() {
        crate::backup::write_record(record)?;
    }
    Ok(true)
}

/// The stem of a backup file name (`bestays_20261130T030000Z` of
/// `bestays_20261130T030000Z.dump.zst.age.json`).
pub fn stem_of(name: &str) -> &str {
    name.split_once('.').map_or(name, |(s, _)| s)
}

/// When the backup named `stem` (`<product>_20261130T030000Z[-2]`) started, from its
/// name.
pub fn started_of(product: &str, stem: &str) -> Option<u64> {
    let stamp = stem.strip_prefix(&format!("{product}_"))?;
    let stamp = stamp.split_once('-').map_or(stamp, |(s, _)| s);
    let t = jiff::civil::DateTime::strptime("%Y%m%dT%H%M%SZ", stamp).ok()?;
    let ts = t.to_zoned(jiff::tz::TimeZone::UTC).ok()?.timestamp();
    u64::try_from(ts.as_second()).ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn backup_names_give_their_start_time_and_stem() {
        assert_eq!(
            super::started_of("bestays", "bestays_19700101T000100Z-2"),
            Some(60)
        );
        assert_eq!(super::started_of("bestays", "other_19700101T000100Z"), None);
        assert_eq!(
            super::stem_of("bestays_19700101T000100Z.dump.zst.age.json"),
            "bestays_19700101T000100Z"
        );
    }
}
