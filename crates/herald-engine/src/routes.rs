//! The routing table: every destination, grouped by tenant, with its built driver.
//!
//! Publishing matches against this in-memory copy instead of querying the store, so routing
//! costs no I/O. The API tells the engine about every change made on this node; changes made
//! on other nodes (shared store) arrive as store notices and are reloaded from the store. The
//! store stays the source of truth and the table is rebuilt from it at start.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use herald_core::destination::{Driver, Registry};
use herald_core::operator::{OPERATOR_TENANT, topic};
use herald_core::spec::Delivery;
use herald_core::{AttemptStatus, Destination, Event};
use parking_lot::RwLock;

/// [`Routes::attempt_events`] bits.
const WANTS_SUCCESS: u8 = 1;
const WANTS_FAILED: u8 = 2;

/// A destination with its driver (absent when the type is unknown or building failed).
#[derive(Clone)]
pub struct Route {
    /// The destination as stored.
    pub destination: Arc<Destination>,
    /// Its sender.
    pub driver: Option<Arc<dyn Driver>>,
    /// Its engine-level settings and signing keys, parsed once here.
    pub delivery: Arc<Delivery>,
}

/// Destinations by tenant, plus an index by id.
pub struct Routes {
    registry: Registry,
    by_tenant: RwLock<HashMap<String, Vec<Route>>>,
    /// Which `attempt.*` operator topics some enabled operator destination subscribes to,
    /// recomputed on every change, so an attempt asks one atomic load.
    attempt_events: AtomicU8,
}

impl Routes {
    /// An empty table.
    pub fn new(registry: Registry) -> Self {
        Self {
            registry,
            by_tenant: RwLock::new(HashMap::new()),
            attempt_events: AtomicU8::new(0),
        }
    }

    /// Whether an attempt with `status` must produce an `attempt.*` operator event (some
    /// enabled operator destination subscribes to its topic). Attempts to operator
    /// destinations never do.
    pub fn attempt_events(&self, status: AttemptStatus) -> bool {
        let bit = match status {
            AttemptStatus::Success => WANTS_SUCCESS,
            AttemptStatus::Failed => WANTS_FAILED,
        };
        self.attempt_events.load(Ordering::Relaxed) & bit != 0
    }

    /// Recomputes the `attempt.*` flags from the operator tenant's routes.
    fn refresh_flags(&self, map: &HashMap<String, Vec<Route>>) {
        let mut bits = 0;
        for r in map.get(OPERATOR_TENANT).into_iter().flatten() {
            let d = &r.destination;
            if d.is_enabled() {
                if d.topics.matches(topic::ATTEMPT_SUCCESS) {
                    bits |= WANTS_SUCCESS;
                }
                if d.topics.matches(topic::ATTEMPT_FAILED) {
                    bits |= WANTS_FAILED;
                }
            }
        }
        self.attempt_events.store(bits, Ordering::Relaxed);
    }

    fn build(&self, d: Destination) -> Route {
        let driver = match self.registry.get(&d.kind) {
            Some(t) => match t.build(&d) {
                Ok(drv) => Some(drv),
                Err(e) => {
                    tracing::warn!(destination_id = %d.id, error = %e, "cannot build destination driver");
                    None
                }
            },
            None => {
                tracing::warn!(destination_id = %d.id, kind = %d.kind, "destination type not compiled into this binary");
                None
            }
        };
        let delivery = Arc::new(self.registry.delivery(&d));
        Route {
            destination: Arc::new(d),
            driver,
            delivery,
        }
    }

    /// Replaces the whole table.
    pub fn load(&self, all: Vec<Destination>) {
        let mut map: HashMap<String, Vec<Route>> = HashMap::new();
        for d in all {
            map.entry(d.tenant_id.clone())
                .or_default()
                .push(self.build(d));
        }
        self.refresh_flags(&map);
        *self.by_tenant.write() = map;
    }

    /// Adds or replaces one destination.
    pub fn upsert(&self, d: Destination) {
        let route = self.build(d);
        let mut map = self.by_tenant.write();
        let list = map.entry(route.destination.tenant_id.clone()).or_default();
        match list
            .iter_mut()
            .find(|r| r.destination.id == route.destination.id)
        {
            Some(slot) => *slot = route,
            None => list.push(route),
        }
        self.refresh_flags(&map);
    }

    /// Adds or replaces one destination unless the table already holds a newer copy of it
    /// (by `updated_at`): the API's view of a change may arrive after the store's.
    pub fn upsert_if_newer(&self, d: Destination) {
        if let Some(cur) = self.get(&d.tenant_id, &d.id)
            && cur.destination.updated_at > d.updated_at
        {
            return;
        }
        self.upsert(d);
    }

    /// Sets one destination to what the store holds: `Some` replaces, `None` removes.
    pub fn set(&self, tenant_id: &str, id: &str, stored: Option<Destination>) {
        match stored {
            Some(d) => self.upsert(d),
            None => self.remove(tenant_id, id),
        }
    }

    /// Removes one destination.
    pub fn remove(&self, tenant_id: &str, id: &str) {
        let mut map = self.by_tenant.write();
        if let Some(list) = map.get_mut(tenant_id) {
            list.retain(|r| r.destination.id != id);
        }
        self.refresh_flags(&map);
    }

    /// Removes every destination of a tenant.
    pub fn remove_tenant(&self, tenant_id: &str) {
        self.by_tenant.write().remove(tenant_id);
    }

    /// Every destination in the table.
    pub fn all(&self) -> Vec<Arc<Destination>> {
        self.by_tenant
            .read()
            .values()
            .flatten()
            .map(|r| r.destination.clone())
            .collect()
    }

    /// Destinations that accept `event` and have not expired at `now`.
    pub fn matching(&self, event: &Event, now: jiff::Timestamp) -> Vec<Arc<Destination>> {
        let map = self.by_tenant.read();
        map.get(&event.tenant_id)
            .map(|l| {
                l.iter()
                    .filter(|r| r.destination.accepts(event) && !r.destination.is_expired(now))
                    .map(|r| r.destination.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// One destination's route.
    pub fn get(&self, tenant_id: &str, id: &str) -> Option<Route> {
        self.by_tenant
            .read()
            .get(tenant_id)?
            .iter()
            .find(|r| r.destination.id == id)
            .cloned()
    }
}
