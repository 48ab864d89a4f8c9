//! berth's own static probe (`crates/berth-probe`), compiled into berth by the build
//! script: containers get it read-only at `/berth-probe`, so a health check needs
//! nothing from the image (no curl, wget or shell), and `berth provision` can log
//! in to PostgreSQL and Redis from inside a container of the product's network.

use std::path::{Path, PathBuf};

use crate::{RuntimeError, io};

/// The probe executable (empty when the build found no static C library).
pub const PROBE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/berth-probe"));

/// Put the probe at `<root>/.berth/bin/berth-probe` (mode 0755, written atomically;
/// left alone when it is already the same). Returns its path.
pub fn install(root: &Path) -> Result<PathBuf, RuntimeError> {
    if PROBE.is_empty() {
        return Err(RuntimeError::Failed(
            "this berth was built without its static probe (the build found no static C library: install libc6-dev and rebuild), so rendered health checks cannot run; set `health.command` on each service instead".into(),
        ));
    }
    let path = root.join(berth_render::PROBE_PATH);
    if std::fs::read(&path).is_ok_and(|b| b == PROBE) {
        return Ok(path);
    }
    let dir = path.parent().expect("PROBE_PATH has a directory");
    std::fs::create_dir_all(dir).map_err(io("create", dir))?;
    // A directory here is what docker leaves when it mounted a path that did not exist.
    if path.is_dir() {
        let _ = std::fs::remove_dir(&path);
    }
    crate::write_atomic_mode(&path, PROBE, Some(0o755)).map_err(io("write", &path))?;
    Ok(path)
}

/// A short content hash of the probe (FNV-1a), to tag the probe image by.
pub fn digest() -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in PROBE {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}
