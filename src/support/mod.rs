//! Support for every layer above: panic containment at each FFI entry point ([`guard`]) and
//! logging into the server's log with rate limits ([`logging`]).
//!
//! May import: `core`.

pub mod guard;
pub mod logging;
