//! Herald's domain: the types every other crate speaks, plus the pure logic that decides
//! *what* happens to an event — topic and payload matching, signatures, the retry schedule.
//!
//! This crate does no I/O: no sockets, no files, no clock reads except through [`clock::Clock`].
//! It knows nothing of JSON wire shapes (the API crate owns those) or of storage.

pub mod clock;
pub mod destination;
pub mod filter;
pub mod ids;
pub mod model;
pub mod operator;
pub mod retry;
pub mod secret;
pub mod signing;
pub mod spec;
pub mod topic;

pub use clock::{Clock, ManualClock, SystemClock};
pub use model::*;
pub use secret::Secret;
