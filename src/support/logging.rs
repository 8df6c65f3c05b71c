//! Logging to the Redis log, filtered by `heatbridge.log-level` and safe for any bytes.
//!
//! `redis_module::logging` hands the message to `RedisModule_Log` as the printf format and
//! unwraps a `CString`, so a `%` or a NUL byte taken from a stream entry would be undefined
//! behaviour or a panic. Here the format is always `"%s"` and the message is sanitized.

use std::ffi::CString;
use std::sync::atomic::{AtomicU8, Ordering};

/// Severity of a log line, in increasing order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Detail for debugging.
    Debug = 0,
    /// Normal operation.
    Info = 1,
    /// Something went wrong but HeatBridge goes on.
    Warning = 2,
    /// A failure an operator must look at.
    Error = 3,
}

static THRESHOLD: AtomicU8 = AtomicU8::new(Level::Info as u8);

/// Sets the lowest level that is written.
pub fn set_threshold(level: Level) {
    THRESHOLD.store(level as u8, Ordering::Relaxed);
}

/// Whether a line at `level` would be written.
pub fn enabled(level: Level) -> bool {
    level as u8 >= THRESHOLD.load(Ordering::Relaxed)
}

/// Makes `msg` printable: control bytes and NUL are escaped, length is capped.
pub fn sanitize(msg: &str) -> String {
    const MAX: usize = 1024;
    let mut out = String::with_capacity(msg.len().min(MAX) + 8);
    for ch in msg.chars() {
        if out.len() >= MAX {
            out.push_str("...");
            break;
        }
        if ch.is_control() {
            out.push_str(&ch.escape_default().to_string());
        } else {
            out.push(ch);
        }
    }
    out
}

/// Renders bytes from an entry (IDs, field values) for a log line.
pub fn show_bytes(bytes: &[u8]) -> String {
    let shown = &bytes[..bytes.len().min(64)];
    let mut s: String = shown.escape_ascii().to_string();
    if bytes.len() > shown.len() {
        s.push_str("...");
    }
    s
}

/// Writes one line at `level` if the threshold allows it.
pub fn log(level: Level, msg: &str) {
    if !enabled(level) || cfg!(test) {
        return;
    }
    let redis_level: &std::ffi::CStr = match level {
        Level::Debug => c"debug",
        Level::Info => c"notice",
        Level::Warning | Level::Error => c"warning",
    };
    let Ok(line) = CString::new(format!("<heatbridge> {}", sanitize(msg))) else {
        return;
    };
    // SAFETY: RedisModule_Log is set once the module API is initialised (we never log
    // before OnLoad). The format is a constant "%s" with exactly one C-string argument, both
    // NUL-terminated and alive for the call; a NULL context is allowed from any thread.
    unsafe {
        if let Some(f) = redis_module::raw::RedisModule_Log {
            f(
                std::ptr::null_mut(),
                redis_level.as_ptr().cast(),
                c"%s".as_ptr(),
                line.as_ptr(),
            );
        }
    }
}

/// Logs at debug level.
pub fn debug(msg: &str) {
    log(Level::Debug, msg)
}
/// Logs at info level.
pub fn info(msg: &str) {
    log(Level::Info, msg)
}
/// Logs at warning level.
pub fn warning(msg: &str) {
    log(Level::Warning, msg)
}
/// Logs at error level.
pub fn error(msg: &str) {
    log(Level::Error, msg)
}

/// Allows at most one line per period; used for per-entry problems that could flood the log.
pub struct RateLimit {
    last_ms: std::sync::atomic::AtomicU64,
    period_ms: u64,
    suppressed: std::sync::atomic::AtomicU64,
}

impl RateLimit {
    /// A limiter allowing one line per `period_ms`.
    pub const fn new(period_ms: u64) -> Self {
        RateLimit {
            last_ms: std::sync::atomic::AtomicU64::new(0),
            period_ms,
            suppressed: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Returns `Some(n)` when a line may be written now, `n` being how many were suppressed
    /// since the last one; `None` when this line must be dropped.
    pub fn check(&self, now_ms: u64) -> Option<u64> {
        let last = self.last_ms.load(Ordering::Relaxed);
        if last != 0 && now_ms.saturating_sub(last) < self.period_ms {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        self.last_ms.store(now_ms.max(1), Ordering::Relaxed);
        Some(self.suppressed.swap(0, Ordering::Relaxed))
    }
}

static ERROR_LOG: RateLimit = RateLimit::new(1000);

/// Logs an error at most once a second, saying how many similar lines were suppressed.
pub fn error_limited(msg: &str) {
    if let Some(suppressed) = ERROR_LOG.check(crate::core::clock::mono_ms()) {
        let extra = if suppressed > 0 {
            format!(" ({suppressed} similar lines suppressed)")
        } else {
            String::new()
        };
        error(&format!("{msg}{extra}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize_escapes_control_and_caps_length() {
        assert_eq!(sanitize("a\nb\0c%s"), "a\\nb\\u{0}c%s");
        assert!(sanitize(&"x".repeat(5000)).len() < 1100);
    }

    #[test]
    fn show_bytes_escapes_binary() {
        assert_eq!(show_bytes(b"ab\xff\n"), "ab\\xff\\n");
        assert!(show_bytes(&[b'a'; 100]).ends_with("..."));
    }

    #[test]
    fn rate_limit_allows_one_per_period() {
        let r = RateLimit::new(1000);
        assert_eq!(r.check(5000), Some(0));
        assert_eq!(r.check(5500), None);
        assert_eq!(r.check(5900), None);
        assert_eq!(r.check(6001), Some(2));
    }

    #[test]
    fn threshold_filters() {
        set_threshold(Level::Warning);
        assert!(!enabled(Level::Info));
        assert!(enabled(Level::Error));
        set_threshold(Level::Info);
        assert!(enabled(Level::Info));
    }
}
