//! Warm standby: after a switch the old slot keeps running, without traffic, for
//! `[deploy] standby`; within that window a rollback is only a switch back to it.
//!
//! Nothing is stored: the standby is derived like everything else. It is the slot
//! the front door does not route to while something of the product still runs
//! there; it began when the newest deploy tag was written (the tag is written right
//! after the switch), and it ends `standby` later (never before the drain is over).
//! berth is a CLI with no daemon of its own, so the end is enforced by whoever comes
//! next: `berth deploy`, `berth rollback`, `berth status` and every tick of `berth
//! serve` stop a standby whose window is over ([`reap`]), under the product's deploy
//! lock, as the deploy would have (drain, then stop).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use berth_git::Repo;
use berth_manifest::Manifest;
use berth_runtime::{Runtime, Slot};
use serde::Serialize;

use crate::front_door::FrontDoor;
use crate::record::AuditRecord;
use crate::store::Store;
use crate::tags;

/// The old slot of a product, still running after a switch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Standby {
    pub product: String,
    pub slot: Slot,
    /// The version it runs.
    pub version: String,
    /// Every service of the product runs there (none died).
    pub alive: bool,
    /// When traffic left it (Unix seconds): the newest deploy tag's time.
    pub since_unix: u64,
    /// When its window ends (Unix seconds).
    pub until_unix: u64,
}

impl Standby {
    /// Whether its window is over at `now` (Unix seconds).
    pub fn expired(&self, now: u64) -> bool {
        now >= self.until_unix
    }

    /// The end of its window, RFC 3339 (UTC).
    pub fn until(&self) -> String {
        tags::utc_stamp(self.until_unix).1
    }
}

/// Unix seconds now.
pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Seconds since the epoch of an RFC 3339 time as git prints it (`%(creatordate:iso-strict)`:
/// `2026-11-30T15:06:00+01:00` or `...Z`).
pub fn parse_rfc3339(s: &str) -> Option<u64> {
    let s = s.trim();
    let num = |r: std::ops::Range<usize>| -> Option<i64> { s.get(r)?.parse().ok() };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let rest = s.get(19..)?;
    let offset = match rest {
        "Z" | "" => 0,
        r if r.len() == 6 && (r.starts_with('+') || r.starts_with('-')) => {
            let oh: i64 = r.get(1..3)?.parse().ok()?;
            let om: i64 = r.get(4..6)?.parse().ok()?;
            let o = oh * 3600 + om * 60;
            if r.starts_with('-') { -o } else { o }
        }
        _ => return None,
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + se - offset;
    u64::try_from(secs).ok()
}

/// The window of `product` as berth.toml sets it now: never shorter than the drain
/// (the old slot finishes its requests first), zero when standby is off.
pub fn window(m: &Manifest, product: &str) -> Duration {
    match m.standby(product) {
        d if d.is_zero() => d,
        d => d.max(m.deploy.drain.0),
    }
}

/// The standby of `product`, if its old slot still runs: the slot the front door
/// does not route to, with instances of the product (alive or dead) there.
pub fn find(
    m: &Manifest,
    repo: &Repo,
    rt: &dyn Runtime,
    front_door: &dyn FrontDoor,
    product: &str,
) -> Option<Standby> {
    if !front_door.switches() {
        return None;
    }
    let live = front_door.live(product, rt).ok()??;
    let idle = live.other();
    let instances = rt.instances(product).ok()?;
    let there: Vec<_> = instances.iter().filter(|i| i.slot == idle).collect();
    let first = there.first()?;
    // Every service runs there (a service may have several instances: swarm replicas),
    // and nothing there died or runs another version.
    let alive = m
        .products
        .get(product)?
        .services
        .keys()
        .all(|s| there.iter().any(|i| i.service == *s))
        && there.iter().all(|i| i.alive && i.version == first.version);
    let since_unix = tags::history(repo, product)
        .ok()
        .and_then(|h| h.into_iter().next())
        .and_then(|r| parse_rfc3339(&r.date))
        .unwrap_or(0);
    Some(Standby {
        product: product.to_string(),
        slot: idle,
        version: first.version.clone(),
        alive,
        since_unix,
        until_unix: since_unix + window(m, product).as_secs(),
    })
}

/// What [`reap`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reaped {
    /// No standby, or its window is still open.
    Nothing,
    /// The expired standby was stopped.
    Stopped(Standby),
    /// The product's deploy lock is held (a deploy runs): left to it.
    Busy,
}

/// Stop the standby of `product` if its window is over (a dead standby too), under
/// the product's deploy lock (not waited for: a deploy that holds it replaces the
/// standby itself). Recorded in the audit log as `standby-stop`.
pub fn reap(
    m: &Manifest,
    repo: &Repo,
    rt: &dyn Runtime,
    front_door: &dyn FrontDoor,
    store: &Store,
    product: &str,
    operator: &str,
) -> Result<Reaped, String> {
    let Some(s) = find(m, repo, rt, front_door, product) else {
        return Ok(Reaped::Nothing);
    };
    if !s.expired(now_unix()) {
        return Ok(Reaped::Nothing);
    }
    let holder = crate::lock::Holder {
        operator: operator.to_string(),
        pid: std::process::id(),
        since: tags::utc_stamp(now_unix()).1,
        message: format!("stopping the expired standby {} ({})", s.slot, s.version),
    };
    let mut guard = match store.acquire(product, &holder, Duration::ZERO) {
        Ok(g) => g,
        Err(_) => return Ok(Reaped::Busy),
    };
    // Under the lock, look again (not at answers kept from before it): a deploy may
    // have just replaced it.
    rt.refresh();
    let Some(s) = find(m, repo, rt, front_door, product) else {
        return Ok(Reaped::Nothing);
    };
    if !s.expired(now_unix()) {
        return Ok(Reaped::Nothing);
    }
    let result = rt.stop(product, s.slot).map_err(|e| e.to_string());
    let mut record = AuditRecord::new("standby-stop", product, operator);
    record.version = Some(s.version.clone());
    record.detail = Some(format!(
        "the warm standby {} ({}) ended at {}",
        s.slot,
        s.version,
        s.until()
    ));
    record.at = Some(tags::utc_stamp(now_unix()).1);
    record.set_result(result.is_ok());
    record.error = result.as_ref().err().cloned();
    store.record(Some(&mut guard), &record);
    result.map(|()| Reaped::Stopped(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_as_git_prints_it() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339("2026-11-30T15:06:00+00:00"),
            Some(1_796_051_160)
        );
        assert_eq!(
            parse_rfc3339("2026-11-30T16:06:00+01:00"),
            Some(1_796_051_160)
        );
        assert_eq!(
            parse_rfc3339("2026-11-30T10:06:00-05:00"),
            Some(1_796_051_160)
        );
        assert_eq!(tags::utc_stamp(1_796_051_160).1, "2026-11-30T15:06:00Z");
        assert_eq!(
            parse_rfc3339("2024-02-29T12:00:00Z").map(|s| tags::utc_stamp(s).1),
            Some("2024-02-29T12:00:00Z".into())
        );
        assert_eq!(parse_rfc3339("yesterday"), None);
    }
}
