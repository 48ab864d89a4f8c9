//! The one wall clock berth dates its records with (deploy tags, audit records,
//! backups). `BERTH_NOW` overrides it for tests of clock skew without touching the
//! machine's clock: `-3600` or `+60` (seconds from the real clock), or a Unix time.
//! Order never comes from this clock: deploys and backups carry a sequence.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch, as berth's clock says (`BERTH_NOW` honoured).
pub fn now_unix() -> u64 {
    let real = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    match std::env::var("BERTH_NOW") {
        Ok(v) => at(real, v.trim()),
        Err(_) => real,
    }
}

/// `real` as `BERTH_NOW` = `v` moves it (unparsable: `real`).
fn at(real: u64, v: &str) -> u64 {
    if let Some(n) = v.strip_prefix('-').and_then(|n| n.parse::<u64>().ok()) {
        real.saturating_sub(n)
    } else if let Some(n) = v.strip_prefix('+').and_then(|n| n.parse::<u64>().ok()) {
        real.saturating_add(n)
    } else {
        v.parse().unwrap_or(real)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn offsets_and_absolute_times() {
        assert_eq!(super::at(10_000, "-3600"), 6_400);
        assert_eq!(super::at(10_000, "+60"), 10_060);
        assert_eq!(super::at(10_000, "5"), 5);
        assert_eq!(super::at(10_000, "soon"), 10_000);
    }
}
