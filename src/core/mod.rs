//! PURE: what needs no server. An entry becomes a decision ([`decision`]); a decision, the
//! TTLs and the clock become the keys to write and their expiry ([`projection`]); the fast
//! path's state machine ([`fastpath`]); the health verdict ([`health`]); the counters and
//! their Prometheus text ([`metrics`]); HTTP request heads and responses ([`http`]); the
//! clocks ([`clock`]).
//!
//! May import: nothing of the crate outside `core`, and never `redis_module`: unit and
//! property tests run all of it on the system allocator, without a server. `tests/layers.rs`
//! keeps it so.

pub mod clock;
pub mod decision;
pub mod fastpath;
pub mod health;
pub mod http;
pub mod metrics;
pub mod projection;

/// The module's name, as MODULE LIST shows it.
pub const MODULE_NAME: &str = "heatbridge";
