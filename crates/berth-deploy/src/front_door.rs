//! The front door: the one place that knows which slot of a product takes its
//! traffic and moves it. nginx ([`Nginx`]) is the front door when berth.toml has a
//! `[proxy]`; without one, [`Direct`]: clients reach the slot that runs, and a
//! deploy replaces it in place. Deploy, rollback, restore, status and serve ask
//! the front door returned by [`open`], and nothing else derives the live slot.

use std::path::Path;
use std::time::{Duration, Instant};

use berth_manifest::Manifest;
use berth_runtime::{Runtime, Slot};

use crate::proxy::{Nginx, ProxyError};

/// A product answering a deliberate "come back soon" at the front door (restore).
pub struct Maintenance {
    product: String,
    live: Slot,
    /// Where the front door serves the maintenance answer.
    port: u16,
}

/// What berth asks of a front door.
pub trait FrontDoor {
    /// Whether traffic moves between slots (a deploy starts the idle slot and
    /// switches: zero downtime); false: the new version replaces the old in place.
    fn switches(&self) -> bool;

    /// The slot the front door sends the product's traffic to as configured now,
    /// whether or not anything runs there (`None`: it names no slot). Cheap: read from
    /// the front door's own configuration and the runtime's addresses, never from
    /// what runs (the prober asks it before every probe).
    fn routed(&self, product: &str, rt: &dyn Runtime) -> Result<Option<Slot>, ProxyError>;

    /// The live slot: [`FrontDoor::routed`] when the product runs there; otherwise
    /// the one slot that runs, `None` when nothing runs. Both slots running and the
    /// front door naming neither is an error: berth cannot tell which is live.
    fn live(&self, product: &str, rt: &dyn Runtime) -> Result<Option<Slot>, ProxyError>;

    /// Send the product's traffic to `slot` (the previous routing stays if this fails).
    fn switch(&self, product: &str, slot: Slot, rt: &dyn Runtime) -> Result<(), ProxyError>;

    /// Answer the product's requests with a maintenance reply while its processes
    /// are down; returns once requests already under way at `live` are finished.
    /// `None`: there is no front door to answer (clients see the product down).
    fn begin_maintenance(
        &self,
        product: &str,
        live: Slot,
        rt: &dyn Runtime,
    ) -> Result<Option<Maintenance>, ProxyError>;

    /// Send the product's traffic to its live slot again; returns once new requests
    /// reach it (not the maintenance reply).
    fn end_maintenance(&self, m: &Maintenance, rt: &dyn Runtime) -> Result<(), String>;

    /// Why a switch must not happen now (`None`: it may): the front door's
    /// configuration fails its test, or — when `serving` (some product is live
    /// behind it) — the front door is not running. Someone else broke or stopped it
    /// between deploys; a deploy would switch traffic into a front door that serves
    /// nothing (or start it with berth's config behind the operator's back).
    fn trouble(&self, serving: bool) -> Option<Trouble>;

    /// Whether the routing of `product` names other addresses than the runtime gives
    /// for the slot it routes to now (a swarm task was rescheduled onto another node).
    fn drifted(&self, product: &str, rt: &dyn Runtime) -> bool;

    /// Route `product` to the addresses its routed slot answers at now (no change of
    /// slot); true when the routing changed. For the caller that holds the product's
    /// deploy lock ([`follow`]).
    fn follow(&self, product: &str, rt: &dyn Runtime) -> Result<bool, ProxyError>;
}

/// Keep the front door on the live slot's addresses as the runtime moves them (a
/// task rescheduled after a node died): when they drifted, re-route under the
/// product's deploy lock (not waited for: a deploy that holds it switches with fresh
/// addresses itself). `berth serve` calls it on every tick. True when it re-routed.
pub fn follow(
    front_door: &dyn FrontDoor,
    rt: &dyn Runtime,
    store: &crate::store::Store,
    product: &str,
    operator: &str,
) -> Result<bool, String> {
    if !front_door.drifted(product, rt) {
        return Ok(false);
    }
    let holder = crate::lock::Holder {
        operator: operator.to_string(),
        pid: std::process::id(),
        since: crate::tags::utc_stamp(crate::standby::now_unix()).1,
        message: "pointing the front door at the live slot's new addresses".into(),
    };
    let Ok(_guard) = store.acquire(product, &holder, Duration::ZERO) else {
        return Ok(false);
    };
    // Under the lock the routed slot is settled: look again and re-route.
    front_door.follow(product, rt).map_err(|e| {
        format!("could not point the front door of {product} at its live slot's new addresses: {e}")
    })
}

/// What is wrong with the front door, and what to run.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Trouble {
    /// `down` (not running) or `broken` (its configuration fails its test).
    pub state: &'static str,
    pub what: String,
    pub fix: String,
}

impl std::fmt::Display for Trouble {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}; {}", self.what, self.fix)
    }
}

/// Whether any product of berth.toml other than `except` has been deployed (a deploy
/// tag) and runs: the front door is expected to be serving it. A first deploy under
/// way (no tag yet) does not count: it starts the front door itself.
pub fn serving(
    manifest: &Manifest,
    repo: &berth_git::Repo,
    rt: &dyn Runtime,
    except: Option<&str>,
) -> bool {
    manifest
        .products
        .keys()
        .filter(|p| Some(p.as_str()) != except)
        .any(|p| {
            rt.instances(p)
                .map(|is| is.iter().any(|i| i.alive))
                .unwrap_or(false)
                && crate::tags::history(repo, p).is_ok_and(|h| !h.is_empty())
        })
}

/// The front door of berth.toml: nginx with a `[proxy]`, [`Direct`] without.
pub fn open<'a>(manifest: &'a Manifest, root: &Path) -> Box<dyn FrontDoor + Send + Sync + 'a> {
    match nginx(manifest, root) {
        Some(n) => Box::new(n),
        None => Box::new(Direct),
    }
}

/// The nginx of berth.toml's `[proxy]` (`None` without one), for what is about nginx
/// itself (`nginx -t`, rendering its files); everything about slots goes through [`open`].
pub fn nginx<'a>(manifest: &'a Manifest, root: &Path) -> Option<Nginx<'a>> {
    Nginx::new(manifest, root)
}

/// No proxy: the slot that runs is the one clients reach.
pub struct Direct;

fn running(product: &str, rt: &dyn Runtime) -> Result<Option<Slot>, ProxyError> {
    Ok(rt
        .instances(product)?
        .iter()
        .find(|i| i.alive)
        .map(|i| i.slot))
}

impl FrontDoor for Direct {
    fn switches(&self) -> bool {
        false
    }
    /// Nothing routes: clients reach whatever runs ([`FrontDoor::live`]).
    fn routed(&self, _product: &str, _rt: &dyn Runtime) -> Result<Option<Slot>, ProxyError> {
        Ok(None)
    }
    fn live(&self, product: &str, rt: &dyn Runtime) -> Result<Option<Slot>, ProxyError> {
        running(product, rt)
    }
    fn switch(&self, _product: &str, _slot: Slot, _rt: &dyn Runtime) -> Result<(), ProxyError> {
        Ok(())
    }
    fn begin_maintenance(
        &self,
        _product: &str,
        _live: Slot,
        _rt: &dyn Runtime,
    ) -> Result<Option<Maintenance>, ProxyError> {
        Ok(None)
    }
    fn end_maintenance(&self, _m: &Maintenance, _rt: &dyn Runtime) -> Result<(), String> {
        Ok(())
    }
    fn trouble(&self, _serving: bool) -> Option<Trouble> {
        None
    }
    fn drifted(&self, _product: &str, _rt: &dyn Runtime) -> bool {
        false
    }
    fn follow(&self, _product: &str, _rt: &dyn Runtime) -> Result<bool, ProxyError> {
        Ok(false)
    }
}

impl FrontDoor for Nginx<'_> {
    fn switches(&self) -> bool {
        true
    }

    fn routed(&self, product: &str, rt: &dyn Runtime) -> Result<Option<Slot>, ProxyError> {
        self.live_slot(product, rt)
    }

    fn live(&self, product: &str, rt: &dyn Runtime) -> Result<Option<Slot>, ProxyError> {
        // The include says where traffic goes; a slot with nothing running serves
        // nothing (before the first deploy the rendered upstream points at an empty
        // blue), and a missing or unreadable include is answered by the runtime.
        let instances = rt.instances(product)?;
        Nginx::live(self, product, &instances, rt)
    }

    fn switch(&self, product: &str, slot: Slot, rt: &dyn Runtime) -> Result<(), ProxyError> {
        Nginx::switch(self, product, slot, rt)
    }

    fn begin_maintenance(
        &self,
        product: &str,
        live: Slot,
        rt: &dyn Runtime,
    ) -> Result<Option<Maintenance>, ProxyError> {
        let serving = self.accepting_workers();
        let port = self.maintenance(product, live, rt)?;
        // The workers of the live configuration finish what they hold (kept
        // connections too) before the product stops: wait the drain, and until
        // they have exited (at most 30 s more).
        std::thread::sleep(self.manifest.deploy.drain.0);
        let until = Instant::now() + Duration::from_secs(30);
        while Instant::now() < until
            && serving
                .iter()
                .any(|pid| Path::new(&format!("/proc/{pid}")).exists())
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Some(Maintenance {
            product: product.to_string(),
            live,
            port,
        }))
    }

    fn trouble(&self, serving: bool) -> Option<Trouble> {
        let config = self.root.join(&self.proxy.nginx_config);
        if let Err(e) = self.test_unless_passed_within(Duration::from_secs(2)) {
            // A missing or broken upstream include is berth's own state: the switch
            // rewrites it (and tests again before it reloads).
            let text = e.to_string();
            let upstreams = self.upstream_file("x");
            let upstreams = upstreams.parent().map(|d| d.display().to_string());
            if text.contains("upstream") || upstreams.is_some_and(|d| text.contains(&d)) {
                return None;
            }
            return Some(Trouble {
                state: "broken",
                what: format!(
                    "nginx's configuration {} fails its test: {e}",
                    config.display(),
                ),
                fix: "nothing was switched; fix the file the test names (or run `berth render` again to rewrite berth's own files), check with `berth status`, then run the deploy again".into(),
            });
        }
        if serving && !self.running() {
            return Some(Trouble {
                state: "down",
                what: format!(
                    "nginx is not running with berth's configuration {}, so no product gets traffic",
                    config.display()
                ),
                fix: format!(
                    "nothing was switched; start it (`{}`, or the unit `berth render` wrote for it), check with `berth status`, then run the deploy again",
                    self.start_command_line()
                ),
            });
        }
        None
    }

    fn drifted(&self, product: &str, rt: &dyn Runtime) -> bool {
        self.followed(product, rt).is_ok_and(|f| f.is_some())
    }

    fn follow(&self, product: &str, rt: &dyn Runtime) -> Result<bool, ProxyError> {
        let Some((path, body)) = self.followed(product, rt)? else {
            return Ok(false);
        };
        let before = self.accepting_workers();
        self.install(&path, &body)?;
        self.old_workers_stopped(&before, Duration::from_secs(10));
        tracing::info!("{product}: the front door follows its live slot's new addresses");
        Ok(true)
    }

    fn end_maintenance(&self, m: &Maintenance, rt: &dyn Runtime) -> Result<(), String> {
        let before = self.accepting_workers();
        Nginx::end_maintenance(self, &m.product, m.live, m.port, rt).map_err(|e| {
            format!(
                "could not point the front door of {} back at the {} slot (it still answers 503): {e}; run `berth deploy {}` or fix nginx and reload",
                m.product, m.live, m.product
            )
        })?;
        // berth returns once new connections reach the product again: the workers of
        // the maintenance configuration no longer accept any, and one got through.
        let within = Duration::from_secs(30);
        if !self.old_workers_stopped(&before, within)
            || !self.front_door_answers(&m.product, within)
        {
            return Err(format!(
                "30s after the reload, new requests for {} through nginx still get the maintenance answer (503)",
                m.product
            ));
        }
        Ok(())
    }
}
