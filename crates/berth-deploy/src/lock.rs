//! One deploy lock per product: an OS file lock (the kernel releases it if berth
//! dies, so a lock is never stale), plus optional manual holds with a message.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Who holds a lock, since when, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub operator: String,
    pub pid: u32,
    pub since: String,
    pub message: String,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "locked by {} (pid {}) since {}",
            self.operator, self.pid, self.since
        )?;
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{product} is {holder}")]
    Locked { product: String, holder: Holder },
    #[error("{product} is held by {} since {}: {} (release it with `berth lock release {product}`)", holder.operator, holder.since, holder.message)]
    Held { product: String, holder: Holder },
    #[error("could not use the lock file {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

fn dir(root: &Path) -> PathBuf {
    root.join(".berth/locks")
}

pub fn lock_path(root: &Path, product: &str) -> PathBuf {
    dir(root).join(format!("{product}.lock"))
}

pub fn hold_path(root: &Path, product: &str) -> PathBuf {
    dir(root).join(format!("{product}.hold"))
}

/// Take an exclusive OS lock on the file at `path` (created if missing), trying
/// every 100 ms for up to `wait` (zero: once). Once taken, the file says who holds
/// it: `record`. `Ok(Err(holder))` when another process keeps it: what that one
/// wrote about itself, as `parse` reads it. The holder writes that right after it
/// locks, so a loser of the race waits a moment (up to 1 s) for `parse` to accept it.
pub fn lock_file<T>(
    path: &Path,
    wait: Duration,
    record: &str,
    parse: impl Fn(&str) -> Option<T>,
) -> std::io::Result<Result<File, Option<T>>> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    let start = Instant::now();
    loop {
        match file.try_lock() {
            Ok(()) => break,
            Err(std::fs::TryLockError::WouldBlock) if start.elapsed() >= wait => {
                return Ok(Err(within_a_moment(|| {
                    let mut text = String::new();
                    let _ = file.rewind();
                    let _ = file.read_to_string(&mut text);
                    parse(&text)
                })));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(e),
        }
    }
    file.set_len(0)?;
    file.rewind()?;
    file.write_all(record.as_bytes())?;
    file.flush()?;
    Ok(Ok(file))
}

/// Try `attempt` every 50 ms for up to 1 s until it gives a value.
pub fn within_a_moment<T>(mut attempt: impl FnMut() -> Option<T>) -> Option<T> {
    for _ in 0..20 {
        if let Some(v) = attempt() {
            return Some(v);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// A held deploy lock; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct DeployLock {
    file: File,
}

impl DeployLock {
    /// Take the lock for `product`, waiting up to `wait` (zero: fail at once).
    pub fn acquire(
        root: &Path,
        product: &str,
        holder: &Holder,
        wait: Duration,
    ) -> Result<Self, LockError> {
        if let Some(h) = read_hold(root, product) {
            return Err(LockError::Held {
                product: product.to_string(),
                holder: h,
            });
        }
        let path = lock_path(root, product);
        let ioe = |source| LockError::Io {
            path: path.display().to_string(),
            source,
        };
        std::fs::create_dir_all(dir(root)).map_err(ioe)?;
        let record = serde_json::to_string(holder).expect("serializable");
        let file =
            match lock_file(&path, wait, &record, |t| serde_json::from_str(t).ok()).map_err(ioe)? {
                Ok(file) => file,
                Err(holder) => {
                    return Err(LockError::Locked {
                        product: product.to_string(),
                        holder: holder.unwrap_or(Holder {
                            operator: "another berth process".into(),
                            pid: 0,
                            since: "unknown".into(),
                            message: String::new(),
                        }),
                    });
                }
            };
        Ok(Self { file })
    }
}

impl Drop for DeployLock {
    fn drop(&mut self) {
        let _ = self.file.set_len(0);
        let _ = self.file.unlock();
    }
}

/// Who holds the OS lock right now, if anyone.
pub fn current_holder(root: &Path, product: &str) -> Option<Holder> {
    let path = lock_path(root, product);
    let mut file = OpenOptions::new().read(true).write(true).open(&path).ok()?;
    match file.try_lock() {
        Ok(()) => {
            let _ = file.unlock();
            None
        }
        Err(_) => {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            serde_json::from_str(&text).ok()
        }
    }
}

pub fn read_hold(root: &Path, product: &str) -> Option<Holder> {
    std::fs::read_to_string(hold_path(root, product))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
}

/// A manual hold: deploys of `product` refuse until it is released.
pub fn hold(root: &Path, product: &str, holder: &Holder) -> Result<(), LockError> {
    let p = hold_path(root, product);
    let ioe = |source| LockError::Io {
        path: p.display().to_string(),
        source,
    };
    if let Some(h) = read_hold(root, product) {
        return Err(LockError::Held {
            product: product.to_string(),
            holder: h,
        });
    }
    std::fs::create_dir_all(dir(root)).map_err(ioe)?;
    berth_cmd::fs::write_atomic(
        &p,
        serde_json::to_string(holder)
            .expect("serializable")
            .as_bytes(),
    )
    .map_err(ioe)
}

/// Release a manual hold; returns the hold that was released.
pub fn release(root: &Path, product: &str) -> Result<Option<Holder>, LockError> {
    let h = read_hold(root, product);
    if h.is_some() {
        let p = hold_path(root, product);
        std::fs::remove_file(&p).map_err(|source| LockError::Io {
            path: p.display().to_string(),
            source,
        })?;
    }
    Ok(h)
}
