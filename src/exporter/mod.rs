//! What the outside world sees without the Redis lock: the state the main thread publishes
//! ([`state`]) and the HTTP thread that serves `/metrics` and `/health` from it
//! ([`thread`]).
//!
//! May import: `core`, `support`, `settings`.

pub mod state;
pub mod thread;
