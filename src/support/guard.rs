//! Panic containment for every FFI entry point.
//!
//! A panic that unwinds out of an `extern "C"` callback aborts redis-server. Every callback
//! the module registers (commands, keyspace and server events, timers, post-notification
//! jobs, config setters, the exporter thread) runs its body through [`contain`], which turns
//! a panic into a logged line and a counted internal error.

use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::core::metrics::METRICS;
use crate::support::logging;

/// Runs `f`, returning `fallback` if it panics. The panic is logged with `site` and counted
/// in `p27_errors_total{stage="internal"}`.
pub fn contain<T>(site: &str, fallback: T, f: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_string());
            METRICS.count_internal_error();
            logging::error(&format!("internal error contained in {site}: {what}"));
            fallback
        }
    }
}

/// Forces a panic at `site` when the crate is built with the `fault-injection` feature and
/// `heatbridge.fault-inject` names that site. Without the feature it compiles to nothing.
#[inline]
pub fn fault_point(site: &str) {
    #[cfg(feature = "fault-injection")]
    {
        if fault_site_matches(site) {
            panic!("fault injected at {site}");
        }
    }
    #[cfg(not(feature = "fault-injection"))]
    let _ = site;
}

/// Crashes the server with SIGSEGV while `hold` (a lock guard) is held, when the crate is
/// built with the `fault-injection` feature and `heatbridge.fault-inject` names `site`: the
/// crash report must still be written, so INFO for a crash report may take no lock. Without
/// the feature it compiles to nothing.
#[inline]
pub fn fault_crash_holding<G>(site: &str, hold: impl FnOnce() -> G) {
    #[cfg(feature = "fault-injection")]
    {
        if fault_site_matches(site) {
            let _held = hold();
            // SAFETY: test-only, on purpose: the server's crash handler takes over.
            unsafe {
                libc::raise(libc::SIGSEGV);
            }
        }
    }
    #[cfg(not(feature = "fault-injection"))]
    let _ = (site, hold);
}

/// Sites named in `HEATBRIDGE_FAULT_INJECT` (comma-separated) panic on purpose.
#[cfg(feature = "fault-injection")]
fn fault_site_matches(site: &str) -> bool {
    std::env::var("HEATBRIDGE_FAULT_INJECT")
        .map(|v| v.split(',').any(|s| s.trim() == site))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contain_returns_value_without_panic() {
        assert_eq!(contain("t", 0, || 5), 5);
    }

    #[test]
    fn contain_turns_panic_into_fallback_and_counts() {
        let before = METRICS.internal_errors();
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let v = contain("t", 7, || -> i32 { panic!("boom") });
        std::panic::set_hook(prev);
        assert_eq!(v, 7);
        assert!(METRICS.internal_errors() > before);
    }
}
