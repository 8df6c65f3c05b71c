//! Wall-clock and monotonic time helpers.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the unix epoch (the clock that stream IDs use).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Milliseconds on a monotonic clock since the first call: for periods and rate limits,
/// which a wall-clock jump must not stall.
pub fn mono_ms() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_millis() as u64
}
