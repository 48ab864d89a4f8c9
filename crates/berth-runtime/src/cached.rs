//! A runtime whose [`Runtime::instances`] answers are kept until something changes:
//! for planning, which asks the same question many times (the live slot, the
//! standby, the rollback target) where each answer costs a `docker ps`.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::{Address, Instance, LogFrom, LogStream, Runtime, RuntimeError, Slot};

/// `inner`, with `instances` read once per product until a call that changes something.
pub struct CachedInstances<'a> {
    inner: &'a dyn Runtime,
    seen: Mutex<HashMap<String, Vec<Instance>>>,
}

impl<'a> CachedInstances<'a> {
    pub fn new(inner: &'a dyn Runtime) -> Self {
        Self {
            inner,
            seen: Mutex::new(HashMap::new()),
        }
    }

    fn forget(&self) {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

impl Runtime for CachedInstances<'_> {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn build_summary(&self) -> String {
        self.inner.build_summary()
    }
    fn retained_summary(&self, version: &str) -> String {
        self.inner.retained_summary(version)
    }
    fn preflight(&self, product: &str, dirty: bool) -> Result<Vec<String>, RuntimeError> {
        self.inner.preflight(product, dirty)
    }
    fn addresses(&self, product: &str, service: &str, slot: Slot) -> Vec<Address> {
        self.inner.addresses(product, service, slot)
    }
    fn slot_free(&self, product: &str, slot: Slot) -> Result<(), RuntimeError> {
        self.inner.slot_free(product, slot)
    }
    fn teardown(&self, product: &str) -> Result<Vec<String>, RuntimeError> {
        self.forget();
        self.inner.teardown(product)
    }
    fn build(&self, product: &str, version: &str) -> Result<Option<String>, RuntimeError> {
        self.forget();
        self.inner.build(product, version)
    }
    fn has_version(&self, product: &str, version: &str) -> bool {
        self.inner.has_version(product, version)
    }
    fn migrate(
        &self,
        product: &str,
        service: &str,
        version: &str,
        slot: Slot,
    ) -> Result<String, RuntimeError> {
        self.forget();
        self.inner.migrate(product, service, version, slot)
    }
    fn start(&self, product: &str, slot: Slot, version: &str) -> Result<(), RuntimeError> {
        self.forget();
        self.inner.start(product, slot, version)
    }
    fn stop(&self, product: &str, slot: Slot) -> Result<(), RuntimeError> {
        self.forget();
        self.inner.stop(product, slot)
    }
    fn replace(&self, product: &str, slot: Slot, version: &str) -> Result<(), RuntimeError> {
        self.forget();
        self.inner.replace(product, slot, version)
    }
    fn refresh(&self) {
        self.forget();
        self.inner.refresh();
    }
    fn instances(&self, product: &str) -> Result<Vec<Instance>, RuntimeError> {
        if let Some(v) = self
            .seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(product)
        {
            return Ok(v.clone());
        }
        let v = self.inner.instances(product)?;
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(product.to_string(), v.clone());
        Ok(v)
    }
    fn logs(&self, product: &str, slot: Slot, service: &str, lines: usize) -> String {
        self.inner.logs(product, slot, service, lines)
    }
    fn address_of(&self, product: &str, instance: &Instance) -> Option<Address> {
        self.inner.address_of(product, instance)
    }
    fn programs(&self) -> Vec<crate::Program> {
        self.inner.programs()
    }
    fn leftovers(&self) -> Vec<crate::Leftover> {
        self.inner.leftovers()
    }
    fn follow_interval(&self) -> std::time::Duration {
        self.inner.follow_interval()
    }
    fn prune(&self, product: &str, keep: &[String]) -> Result<Vec<String>, RuntimeError> {
        self.forget();
        self.inner.prune(product, keep)
    }
    fn log_stream(
        &self,
        product: &str,
        slot: Slot,
        service: &str,
        from: LogFrom,
        follow: bool,
    ) -> Result<LogStream, RuntimeError> {
        self.inner.log_stream(product, slot, service, from, follow)
    }
    fn run_once(
        &self,
        product: &str,
        service: &str,
        slot: Slot,
        version: &str,
        argv: &[String],
        tty: bool,
    ) -> Result<i32, RuntimeError> {
        self.forget();
        self.inner
            .run_once(product, service, slot, version, argv, tty)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Answers are kept until a change: a stop in between is seen.
    #[test]
    fn instances_are_read_again_after_a_change() {
        let text = include_str!("../../../examples/multi-product/berth.toml");
        let m = berth_manifest::parse_str("berth.toml", text)
            .unwrap()
            .manifest;
        let fake = crate::fake::FakeRuntime::new(m);
        fake.build("bestays", "v1").unwrap();
        fake.start("bestays", Slot::Blue, "v1").unwrap();
        let cached = CachedInstances::new(&fake);
        assert!(cached.instances("bestays").unwrap().iter().all(|i| i.alive));
        fake.crash("bestays", Slot::Blue);
        // Kept: the crash went around the cache.
        assert!(cached.instances("bestays").unwrap().iter().all(|i| i.alive));
        cached.stop("bestays", Slot::Blue).unwrap();
        assert!(!cached.instances("bestays").unwrap().iter().any(|i| i.alive));
    }
}
