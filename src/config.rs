//! Every `heatbridge.*` setting: defaults, limits and validation in one place.
//!
//! Numeric settings are atomics bounded by Redis itself (MIN/MAX below); string settings
//! are validated in their setter, so an invalid `CONFIG SET` is refused with an error and
//! the old value stays in force. Every setting may be read from any thread without the
//! Redis lock (the exporter reads bind and ports).

use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
use std::sync::Mutex;

use redis_module::configuration::ConfigurationContext;
use redis_module::{enum_configuration, ConfigurationValue, RedisError, RedisString};

use crate::guard;

/// Default input stream (P27_STREAM_IN).
pub const DEFAULT_STREAM: &str = "quantum:stream:harvest.heat.decision";
/// Default consumer group (P27_GROUP).
pub const DEFAULT_GROUP: &str = "heat_bridge";
/// Default consumer name (P27_CONSUMER).
pub const DEFAULT_CONSUMER: &str = "heat_bridge_1";
/// Default exporter address.
pub const DEFAULT_BIND: &str = "127.0.0.1";

/// Housekeeping period, ms (P27_POLL_MS).
pub const DEFAULT_POLL_MS: i64 = 500;
/// Lower bound of poll-ms.
pub const MIN_POLL_MS: i64 = 10;
/// Upper bound of poll-ms.
pub const MAX_POLL_MS: i64 = 60_000;
/// Entries per drain step (P27_BATCH).
pub const DEFAULT_BATCH: i64 = 10;
/// Upper bound of batch.
pub const MAX_BATCH: i64 = 10_000;
/// by_plan lifetime (P27_TTL_PLAN_SEC).
pub const DEFAULT_TTL_PLAN_SEC: i64 = 1800;
/// latest/latest_plan_id lifetime (P27_TTL_SYMBOL_SEC).
pub const DEFAULT_TTL_SYMBOL_SEC: i64 = 1800;
/// Dedupe window (P27_DEDUPE_TTL_SEC); 0 turns dedupe off.
pub const DEFAULT_DEDUPE_TTL_SEC: i64 = 120;
/// Upper bound of every TTL: ten years.
pub const MAX_TTL_SEC: i64 = 10 * 365 * 24 * 3600;
/// Prometheus endpoint port (P27_METRICS_PORT); 0 turns it off.
pub const DEFAULT_METRICS_PORT: i64 = 8070;
/// Health endpoint port (P27_HEALTH_PORT); 0 turns it off.
pub const DEFAULT_HEALTH_PORT: i64 = 8071;
/// Highest TCP port.
pub const MAX_PORT: i64 = 65535;
/// Longest stream, group or consumer name accepted.
pub const MAX_NAME_LEN: usize = 1024;

/// `heatbridge.poll-ms`
pub static POLL_MS: AtomicI64 = AtomicI64::new(DEFAULT_POLL_MS);
/// `heatbridge.batch`
pub static BATCH: AtomicI64 = AtomicI64::new(DEFAULT_BATCH);
/// `heatbridge.ttl-plan-sec`
pub static TTL_PLAN_SEC: AtomicI64 = AtomicI64::new(DEFAULT_TTL_PLAN_SEC);
/// `heatbridge.ttl-symbol-sec`
pub static TTL_SYMBOL_SEC: AtomicI64 = AtomicI64::new(DEFAULT_TTL_SYMBOL_SEC);
/// `heatbridge.dedupe-ttl-sec`
pub static DEDUPE_TTL_SEC: AtomicI64 = AtomicI64::new(DEFAULT_DEDUPE_TTL_SEC);
/// `heatbridge.metrics-port`
pub static METRICS_PORT: AtomicI64 = AtomicI64::new(DEFAULT_METRICS_PORT);
/// `heatbridge.health-port`
pub static HEALTH_PORT: AtomicI64 = AtomicI64::new(DEFAULT_HEALTH_PORT);

/// `heatbridge.stream-in`
pub static STREAM_IN: StringSetting = StringSetting::new(validate_name);
/// `heatbridge.group`
pub static GROUP: StringSetting = StringSetting::new(validate_name);
/// `heatbridge.consumer`
pub static CONSUMER: StringSetting = StringSetting::new(validate_name);
/// `heatbridge.bind`
pub static BIND: StringSetting = StringSetting::new(validate_bind);

enum_configuration! {
    /// `heatbridge.log-level` (P27_LOG_LEVEL).
    #[allow(clippy::upper_case_acronyms)]
    #[derive(Debug, PartialEq, Eq, Copy)]
    pub enum LogLevel {
        DEBUG = 0,
        INFO = 1,
        WARNING = 2,
        ERROR = 3,
    }
}

/// `heatbridge.log-level`
pub static LOG_LEVEL: Mutex<LogLevel> = Mutex::new(LogLevel::INFO);

impl LogLevel {
    /// The matching logging threshold.
    pub fn threshold(self) -> crate::logging::Level {
        use crate::logging::Level;
        match self {
            LogLevel::DEBUG => Level::Debug,
            LogLevel::INFO => Level::Info,
            LogLevel::WARNING => Level::Warning,
            LogLevel::ERROR => Level::Error,
        }
    }
}

/// A string setting with a validator, readable from any thread.
pub struct StringSetting {
    value: Mutex<String>,
    check: fn(&str) -> Result<(), String>,
}

impl StringSetting {
    const fn new(check: fn(&str) -> Result<(), String>) -> Self {
        StringSetting {
            value: Mutex::new(String::new()),
            check,
        }
    }

    /// The current value.
    pub fn get(&self) -> String {
        self.value.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether the current value equals `bytes`, without copying it.
    pub fn matches(&self, bytes: &[u8]) -> bool {
        self.value
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_bytes()
            == bytes
    }

    /// Validates and stores `v`; on error the old value stays.
    pub fn try_set(&self, v: &str) -> Result<(), String> {
        (self.check)(v)?;
        *self.value.lock().unwrap_or_else(|e| e.into_inner()) = v.to_string();
        Ok(())
    }
}

impl ConfigurationValue<RedisString> for StringSetting {
    fn get(&self, _ctx: &ConfigurationContext) -> RedisString {
        RedisString::create(None, StringSetting::get(self).as_str())
    }

    fn set(&self, _ctx: &ConfigurationContext, val: RedisString) -> Result<(), RedisError> {
        guard::contain("config set", Err(RedisError::Str("internal error")), || {
            let s = val
                .try_as_str()
                .map_err(|_| RedisError::Str("value must be valid UTF-8"))?;
            self.try_set(s).map_err(RedisError::String)
        })
    }
}

/// Stream, group and consumer names: non-empty, bounded, no control characters.
pub fn validate_name(v: &str) -> Result<(), String> {
    if v.is_empty() {
        return Err("must not be empty".into());
    }
    if v.len() > MAX_NAME_LEN {
        return Err(format!("must be at most {MAX_NAME_LEN} bytes"));
    }
    if v.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    Ok(())
}

/// The exporter address: an IPv4 or IPv6 literal.
pub fn validate_bind(v: &str) -> Result<(), String> {
    v.parse::<std::net::IpAddr>()
        .map(|_| ())
        .map_err(|_| format!("'{v}' is not an IP address"))
}

/// A copy of the settings that one drain step uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Input stream.
    pub stream: String,
    /// Consumer group.
    pub group: String,
    /// Consumer whose pending entries are finished first.
    pub consumer: String,
    /// Entries per drain step.
    pub batch: usize,
    /// Key lifetimes.
    pub ttls: crate::projection::Ttls,
}

/// Reads the settings in force now.
pub fn current() -> Settings {
    let secs = |a: &AtomicI64| a.load(Relaxed).max(0) as u64;
    Settings {
        stream: STREAM_IN.get(),
        group: GROUP.get(),
        consumer: CONSUMER.get(),
        batch: BATCH.load(Relaxed).clamp(1, MAX_BATCH) as usize,
        ttls: crate::projection::Ttls::from_secs(
            secs(&TTL_PLAN_SEC),
            secs(&TTL_SYMBOL_SEC),
            secs(&DEDUPE_TTL_SEC),
        ),
    }
}

/// A port setting as a `u16`, 0 meaning off.
pub fn port(a: &AtomicI64) -> u16 {
    u16::try_from(a.load(Relaxed)).unwrap_or(0)
}

/// Sites named in `HEATBRIDGE_FAULT_INJECT` (comma-separated) panic on purpose.
#[cfg(feature = "fault-injection")]
pub fn fault_site_matches(site: &str) -> bool {
    std::env::var("HEATBRIDGE_FAULT_INJECT")
        .map(|v| v.split(',').any(|s| s.trim() == site))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        assert!(validate_name("quantum:stream:x").is_ok());
        assert!(validate_name("").is_err());
        assert!(validate_name("a\nb").is_err());
        assert!(validate_name(&"x".repeat(MAX_NAME_LEN + 1)).is_err());
    }

    #[test]
    fn bind_must_be_an_ip() {
        assert!(validate_bind("127.0.0.1").is_ok());
        assert!(validate_bind("0.0.0.0").is_ok());
        assert!(validate_bind("::1").is_ok());
        assert!(validate_bind("localhost").is_err());
        assert!(validate_bind("").is_err());
    }

    #[test]
    fn invalid_set_keeps_old_value() {
        let s = StringSetting::new(validate_name);
        s.try_set("a").unwrap();
        assert!(s.try_set("").is_err());
        assert_eq!(s.get(), "a");
    }

    #[test]
    fn log_levels_map() {
        assert_eq!(LogLevel::ERROR.threshold(), crate::logging::Level::Error);
        assert_eq!(LogLevel::DEBUG.threshold(), crate::logging::Level::Debug);
    }
}
