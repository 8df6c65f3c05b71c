//! The projection engine, and the only layer that writes keys: one projector per stream
//! ([`registry`]), when passes run ([`schedule`]), a pass over a stream ([`drain`]), the
//! consumer group ([`group`]), reading entries ([`read`], or the XADD's own arguments kept
//! by [`capture`]), applying a decision ([`apply`]) through replicated writes ([`writer`],
//! [`call`]), HEATBRIDGE.REPLAY's re-projection ([`replay`]), and what the server allows
//! right now ([`host`]: role, paused writes, the database).
//!
//! May import: `core`, `support`, `settings`, `exporter`.

pub mod apply;
pub mod call;
pub mod capture;
pub mod drain;
pub mod group;
pub mod host;
pub mod read;
pub mod registry;
pub mod replay;
pub mod schedule;
pub mod writer;
