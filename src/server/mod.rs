//! The server's side: keyspace and server event handlers and the command filter
//! ([`events`]), the HEATBRIDGE.* commands ([`commands`]) and their COMMAND DOCS and key
//! specs ([`command_info`]), and `INFO heatbridge` ([`info`]). Thin: each hands the work to
//! the projector or reads published state.
//!
//! May import: every layer below (`core`, `support`, `settings`, `exporter`, `projector`).

pub mod command_info;
pub mod commands;
pub mod events;
pub mod info;
