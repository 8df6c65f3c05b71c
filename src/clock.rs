//! Wall-clock and monotonic time helpers.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the unix epoch (the clock that stream IDs use).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
