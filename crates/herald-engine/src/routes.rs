//! The routing table: every destination, grouped by tenant, with its built driver.
//!
//! Publishing matches against this in-memory copy instead of querying the store, so routing
//! costs no I/O. The API tells the engine about every change made on this node; changes made
//! on other nodes (shared store) arrive as store notices and are reloaded from the store. The
//! store stays the source of truth and the table is rebuilt from it at start.

use std::collections::HashMap;
use std::sync::Arc;

use herald_core::destination::{Driver, Registry};
use herald_core::spec::Delivery;
use herald_core::{Destination, Event};
use parking_lot::RwLock;

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
}

impl Routes {
    /// An empty table.
    pub fn new(registry: Registry) -> Self {
        Self {
            registry,
            by_tenant: RwLock::new(HashMap::new()),
        }
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
        if let Some(list) = self.by_tenant.write().get_mut(tenant_id) {
            list.retain(|r| r.destination.id != id);
        }
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
