//! Identifier generation. Ids are a short type prefix plus a UUIDv7, so they sort by creation
//! time, which keeps index inserts append-only and makes ids useful as pagination tie-breakers.

use uuid::Uuid;

/// A fresh id with the given prefix, e.g. `new_id("evt")` → `evt_0193…`.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", Uuid::now_v7().simple())
}

/// Prefix for generated event ids.
pub const EVENT: &str = "evt";
/// Prefix for generated destination ids.
pub const DESTINATION: &str = "des";
/// Prefix for delivery ids.
pub const DELIVERY: &str = "dlv";
/// Prefix for attempt ids.
pub const ATTEMPT: &str = "atm";
