//! Failed authentications per client address. A wrong token (bearer header,
//! cookie or the sign-in form) counts as a failure; after [`Policy::max_failures`]
//! of them within [`Policy::window`] the address is refused every request but
//! `/healthz` (429, whatever token it sends) for [`Policy::lockout`], then starts
//! afresh. Each presented token is judged under one lock, after the request has
//! arrived whole: no answer to a locked-out address depends on what it sent, even
//! for a request that started before the lockout (a slow `/login` body). The right
//! token does not forget earlier failures (they age out of the window): otherwise
//! anyone sharing the address (a signed-in tab, a Prometheus scrape, a proxy in
//! front) would reset a guesser's count. A request with no token (or an empty
//! one: a browser before it signs in) is not a failure.
//!
//! IPv4 addresses count one by one; an IPv6 client counts by its /64 (one
//! machine usually holds a whole /64), and an IPv4-mapped IPv6 address as its
//! IPv4 address. At most [`Policy::max_clients`] addresses are remembered: when
//! full, addresses with nothing recent are forgotten first, then the one whose
//! last failure is oldest (addresses that are locked out go last).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub max_failures: usize,
    pub window: Duration,
    pub lockout: Duration,
    pub max_clients: usize,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            max_failures: 5,
            window: Duration::from_secs(60),
            lockout: Duration::from_secs(60),
            max_clients: 10_000,
        }
    }
}

/// A client as it is counted: an IPv4 address, or an IPv6 /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Client(IpAddr);

impl Client {
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => Self(ip),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self(IpAddr::V4(v4)),
                None => {
                    let s = v6.segments();
                    Self(IpAddr::V6(Ipv6Addr::new(
                        s[0], s[1], s[2], s[3], 0, 0, 0, 0,
                    )))
                }
            },
        }
    }
}

impl std::fmt::Display for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            IpAddr::V4(a) => write!(f, "{a}"),
            IpAddr::V6(a) => write!(f, "{a}/64"),
        }
    }
}

#[derive(Debug, Default)]
struct Record {
    /// Failures within the window, oldest first (at most `max_failures`).
    failures: Vec<Instant>,
    locked_until: Option<Instant>,
}

impl Record {
    fn locked(&self, now: Instant) -> bool {
        self.locked_until.is_some_and(|t| t > now)
    }

    /// Whether it still says anything at `now`: a lockout, or a failure within the window.
    fn live(&self, now: Instant, window: Duration) -> bool {
        self.locked(now) || self.failures.last().is_some_and(|t| now < *t + window)
    }

    fn last(&self) -> Option<Instant> {
        self.failures.last().copied().max(self.locked_until)
    }
}

/// What one presented token comes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The right token, from an address that is not locked out.
    Right,
    /// A wrong token, counted; `Some(lockout)` when it locked the address out.
    Wrong(Option<Duration>),
    /// The address is locked out for this long: whatever it sent is refused.
    Locked(Duration),
}

/// The failures of every client, shared by the request handlers.
#[derive(Debug, Default)]
pub struct Limiter {
    policy: Policy,
    clients: Mutex<HashMap<Client, Record>>,
}

impl Limiter {
    pub fn new(policy: Policy) -> Self {
        Self {
            policy,
            clients: Mutex::default(),
        }
    }

    fn clients(&self) -> std::sync::MutexGuard<'_, HashMap<Client, Record>> {
        self.clients.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `Err(how long)` while `client` is locked out.
    pub fn check(&self, client: Client, now: Instant) -> Result<(), Duration> {
        let mut clients = self.clients();
        let Some(r) = clients.get(&client) else {
            return Ok(());
        };
        match r.locked_until {
            Some(until) if until > now => Err(until - now),
            Some(_) => {
                // The lockout is over: start afresh.
                clients.remove(&client);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Judge one presented token (`right`: whether it matched) from `client`, under
    /// one lock with the lockout check.
    pub fn judge(&self, client: Client, now: Instant, right: bool) -> Verdict {
        let mut clients = self.clients();
        if let Some(until) = clients
            .get(&client)
            .and_then(|r| r.locked_until)
            .filter(|until| *until > now)
        {
            return Verdict::Locked(until - now);
        }
        if right {
            return Verdict::Right;
        }
        Verdict::Wrong(self.count(&mut clients, client, now))
    }

    /// Count a wrong token from `client` (see [`Limiter::judge`]). `Some(lockout)` when
    /// this failure locked the client out (once per lockout, for the caller to log).
    pub fn fail(&self, client: Client, now: Instant) -> Option<Duration> {
        match self.judge(client, now, false) {
            Verdict::Wrong(locked) => locked,
            Verdict::Right | Verdict::Locked(_) => None,
        }
    }

    fn count(
        &self,
        clients: &mut HashMap<Client, Record>,
        client: Client,
        now: Instant,
    ) -> Option<Duration> {
        let p = self.policy;
        if !clients.contains_key(&client) && clients.len() >= p.max_clients {
            clients.retain(|_, r| r.live(now, p.window));
            if clients.len() >= p.max_clients
                && let Some(oldest) = clients
                    .iter()
                    .min_by_key(|(_, r)| (r.locked(now), r.last()))
                    .map(|(c, _)| *c)
            {
                clients.remove(&oldest);
            }
        }
        let r = clients.entry(client).or_default();
        r.locked_until = None;
        r.failures.retain(|t| now < *t + p.window);
        r.failures.push(now);
        if r.failures.len() < p.max_failures {
            return None;
        }
        r.failures.clear();
        r.locked_until = Some(now + p.lockout);
        Some(p.lockout)
    }

    pub fn policy(&self) -> Policy {
        self.policy
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.clients().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Client {
        Client::of(s.parse().unwrap())
    }

    fn policy() -> Policy {
        Policy {
            max_failures: 5,
            window: Duration::from_secs(60),
            lockout: Duration::from_secs(60),
            max_clients: 100,
        }
    }

    #[test]
    fn five_failures_within_the_window_lock_the_address_out_until_the_lockout_ends() {
        let l = Limiter::new(policy());
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let a = ip("192.0.2.1");
        for i in 0..4 {
            assert_eq!(l.fail(a, t0 + s(i)), None, "failure {}", i + 1);
            assert_eq!(l.check(a, t0 + s(i)), Ok(()));
        }
        assert_eq!(l.fail(a, t0 + s(10)), Some(s(60)), "the fifth locks");
        assert_eq!(l.check(a, t0 + s(10)), Err(s(60)));
        assert_eq!(l.check(a, t0 + s(40)), Err(s(30)));
        assert_eq!(l.fail(a, t0 + s(41)), None, "logged once per lockout");
        assert_eq!(
            l.judge(a, t0 + s(50), true),
            Verdict::Locked(s(20)),
            "the right token is refused too, and does not lift it"
        );
        assert_eq!(l.check(a, t0 + s(50)), Err(s(20)));
        assert_eq!(l.check(ip("192.0.2.2"), t0 + s(10)), Ok(()), "others pass");
        // Over: a fresh start (four more failures do not lock).
        assert_eq!(l.check(a, t0 + s(70)), Ok(()));
        for i in 0..4 {
            assert_eq!(l.fail(a, t0 + s(71 + i)), None);
        }
        assert_eq!(l.check(a, t0 + s(75)), Ok(()));
    }

    #[test]
    fn failures_age_out_of_the_window_and_the_right_token_does_not_forget_them() {
        let l = Limiter::new(policy());
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let a = ip("192.0.2.1");
        for i in 0..4 {
            l.fail(a, t0 + s(i));
        }
        // The first four are more than 60 s old by now.
        assert_eq!(l.fail(a, t0 + s(61)), None);
        assert_eq!(l.fail(a, t0 + s(62)), None);
        assert_eq!(l.fail(a, t0 + s(63)), None);
        assert_eq!(l.fail(a, t0 + s(64)), None, "four within the window");
        // Someone at the same address (a signed-in tab, a scrape) shows the right
        // token: that is no reason to forgive the guesses.
        assert_eq!(l.judge(a, t0 + s(64), true), Verdict::Right);
        assert_eq!(
            l.judge(a, t0 + s(65), false),
            Verdict::Wrong(Some(s(60))),
            "the fifth within the window locks"
        );
        assert_eq!(l.judge(a, t0 + s(66), true), Verdict::Locked(s(59)));
    }

    #[test]
    fn ipv6_counts_by_64_and_mapped_ipv4_as_ipv4() {
        assert_eq!(ip("2001:db8:1:2:aaaa::1"), ip("2001:db8:1:2:bbbb::9"));
        assert_ne!(ip("2001:db8:1:2::1"), ip("2001:db8:1:3::1"));
        assert_eq!(ip("::ffff:192.0.2.7"), ip("192.0.2.7"));
        assert_eq!(ip("2001:db8:1:2:aaaa::1").to_string(), "2001:db8:1:2::/64");
        let l = Limiter::new(policy());
        let t0 = Instant::now();
        for i in 0..5u16 {
            l.fail(
                Client::of(IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, i))),
                t0,
            );
        }
        assert!(
            l.check(ip("2001:db8::ffff"), t0).is_err(),
            "one /64, one count"
        );
    }

    #[test]
    fn the_map_stays_bounded_and_keeps_locked_out_addresses_longest() {
        let l = Limiter::new(policy());
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let locked = ip("192.0.2.1");
        for _ in 0..5 {
            l.fail(locked, t0 + s(30));
        }
        // Stale entries are pruned first.
        for i in 0..99u32 {
            l.fail(Client::of(IpAddr::V4(i.into())), t0);
        }
        assert_eq!(l.len(), 100);
        l.fail(ip("198.51.100.1"), t0 + s(61));
        assert_eq!(l.len(), 2, "the stale ones went; the locked one stays");
        // Full of recent failures: the oldest unlocked one goes, never the locked one.
        for i in 0..500u32 {
            l.fail(Client::of(IpAddr::V4((1000 + i).into())), t0 + s(62));
            assert!(l.len() <= 100);
        }
        assert_eq!(l.len(), 100);
        assert!(l.check(locked, t0 + s(62)).is_err(), "still locked out");
    }
}
