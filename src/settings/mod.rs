//! Every `heatbridge.*` setting: the kinds of setting as the server reads and writes them
//! ([`setting`]), the settings with their defaults, limits and validation ([`config`]), and
//! the `loadmodule` arguments ([`module_args`]).
//!
//! May import: `core`, `support`.

pub mod config;
pub mod module_args;
pub mod setting;
