//! Every `heatbridge.*` setting: defaults, limits and validation in one place.
//!
//! Numeric settings are atomics bounded by Redis itself (MIN/MAX below); string settings
//! are validated in their setter, so an invalid `CONFIG SET` is refused with an error and
//! the old value stays in force. Every setting may be read from any thread without the
//! Redis lock (the exporter reads bind and ports).

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering::Relaxed};
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
/// Upper bound of batch: one drain step (about 30-40 µs an entry) stays near 10 ms.
pub const MAX_BATCH: i64 = 250;
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
/// Lower bound of batch.
pub const MIN_BATCH: i64 = 1;
/// Lower bound of ttl-plan-sec and ttl-symbol-sec (a key must live).
pub const MIN_TTL_SEC: i64 = 1;

/// Bounds of every numeric setting, by name without the prefix: `(name, min, max)`.
pub const NUMERIC_BOUNDS: [(&str, i64, i64); 7] = [
    ("poll-ms", MIN_POLL_MS, MAX_POLL_MS),
    ("batch", MIN_BATCH, MAX_BATCH),
    ("ttl-plan-sec", MIN_TTL_SEC, MAX_TTL_SEC),
    ("ttl-symbol-sec", MIN_TTL_SEC, MAX_TTL_SEC),
    ("dedupe-ttl-sec", 0, MAX_TTL_SEC),
    ("metrics-port", 0, MAX_PORT),
    ("health-port", 0, MAX_PORT),
];

/// A validator of a string setting.
pub type Check = fn(&str) -> Result<(), String>;

/// Validators of every string setting, by name without the prefix.
pub const STRING_CHECKS: [(&str, Check); 4] = [
    ("stream-in", validate_name),
    ("group", validate_name),
    ("consumer", validate_name),
    ("bind", validate_bind),
];

/// Names accepted by `heatbridge.log-level` (case-insensitive, as CONFIG SET takes them).
pub const LOG_LEVELS: [&str; 4] = ["DEBUG", "INFO", "WARNING", "ERROR"];

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
pub static STREAM_IN: StringSetting = StringSetting::new(DEFAULT_STREAM, validate_name);
/// `heatbridge.group`
pub static GROUP: StringSetting = StringSetting::new(DEFAULT_GROUP, validate_name);
/// `heatbridge.consumer`
pub static CONSUMER: StringSetting = StringSetting::new(DEFAULT_CONSUMER, validate_name);
/// `heatbridge.bind`
pub static BIND: StringSetting = StringSetting::new(DEFAULT_BIND, validate_bind);

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
///
/// It holds its default until a value is set. The server compares a value from redis.conf
/// with the current one and skips the setter when they are equal, so a setting that started
/// out empty would take `heatbridge.stream-in ""` without ever validating it.
pub struct StringSetting {
    value: Mutex<Option<String>>,
    default: &'static str,
    check: Check,
}

impl StringSetting {
    const fn new(default: &'static str, check: Check) -> Self {
        StringSetting {
            value: Mutex::new(None),
            default,
            check,
        }
    }

    /// The current value.
    pub fn get(&self) -> String {
        let v = self.value.lock().unwrap_or_else(|e| e.into_inner());
        v.as_deref().unwrap_or(self.default).to_string()
    }

    /// Whether the current value equals `bytes`, without copying it.
    pub fn matches(&self, bytes: &[u8]) -> bool {
        let v = self.value.lock().unwrap_or_else(|e| e.into_inner());
        v.as_deref().unwrap_or(self.default).as_bytes() == bytes
    }

    /// Validates and stores `v`; on error the old value stays.
    pub fn try_set(&self, v: &str) -> Result<(), String> {
        (self.check)(v)?;
        *self.value.lock().unwrap_or_else(|e| e.into_inner()) = Some(v.to_string());
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
            // The crate turns this error into a C string with an unwrap: a NUL byte in it
            // would abort the server, so NUL is refused up front and never echoed.
            if s.contains('\0') {
                return Err(RedisError::Str("value must not contain NUL bytes"));
            }
            self.try_set(s)
                .map_err(|e| RedisError::String(e.replace('\0', "\\0")))
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
    v.parse::<std::net::IpAddr>().map(|_| ()).map_err(|_| {
        format!(
            "'{}' is not an IP address",
            crate::logging::show_bytes(v.as_bytes())
        )
    })
}

/// Validates `loadmodule` / `MODULE LOAD` arguments: `NAME VALUE` pairs of known settings
/// (no prefix), each name once, each value within its limits.
///
/// Module args become the registered defaults, and the server does not refuse a default
/// that is out of bounds or that its setter rejects: `ttl-plan-sec -1` would load as -1, and
/// on Valkey 8.1 a rejected string default (`stream-in ""`) makes the server unload the
/// module after init and crash if a timer is pending. So init checks the args first and
/// fails the load cleanly.
pub fn check_module_args(args: &[&[u8]]) -> Result<(), String> {
    if !args.len().is_multiple_of(2) {
        return Err("module arguments must be NAME VALUE pairs".into());
    }
    let known = |n: &str| {
        NUMERIC_BOUNDS.iter().any(|(k, _, _)| *k == n)
            || STRING_CHECKS.iter().any(|(k, _)| *k == n)
            || n == "log-level"
    };
    let mut seen: Vec<&str> = Vec::new();
    for pair in args.chunks(2) {
        let [name, value] = pair else {
            return Err("module arguments must be NAME VALUE pairs".into());
        };
        let name = std::str::from_utf8(name)
            .map_err(|_| "a module argument name is not valid UTF-8".to_string())?;
        let value = std::str::from_utf8(value)
            .map_err(|_| format!("the value of {name} is not valid UTF-8"))?;
        if !known(name) {
            return Err(format!("unknown setting '{name}'"));
        }
        if seen.contains(&name) {
            return Err(format!("setting '{name}' is given twice"));
        }
        seen.push(name);
        // The server finds a setting's value as the word after its name's first occurrence,
        // so a value that is also a setting name would be misread.
        if known(value) {
            return Err(format!(
                "the value of {name} may not be a setting name ('{value}'); use CONFIG SET"
            ));
        }
        check_value(name, value).map_err(|e| format!("invalid {name} '{value}': {e}"))?;
    }
    Ok(())
}

/// Checks the module arguments, then applies them as defaults: a setting that a config line
/// (`heatbridge.<name>` in redis.conf, `--heatbridge.<name>`, or one written by CONFIG
/// REWRITE) already moved off its default keeps that value.
///
/// The crate's own handling of module arguments (`module_args_as_configuration`) hands them
/// to `CString::new(..).unwrap()` and to printf-style logging before HeatBridge's code runs,
/// so a NUL byte or a `%` in one crashed the server at load. They are parsed here instead.
pub fn apply_module_args(args: &[&[u8]]) -> Result<(), String> {
    check_module_args(args)?;
    let numeric: [(&str, &AtomicI64, i64); 7] = [
        ("poll-ms", &POLL_MS, DEFAULT_POLL_MS),
        ("batch", &BATCH, DEFAULT_BATCH),
        ("ttl-plan-sec", &TTL_PLAN_SEC, DEFAULT_TTL_PLAN_SEC),
        ("ttl-symbol-sec", &TTL_SYMBOL_SEC, DEFAULT_TTL_SYMBOL_SEC),
        ("dedupe-ttl-sec", &DEDUPE_TTL_SEC, DEFAULT_DEDUPE_TTL_SEC),
        ("metrics-port", &METRICS_PORT, DEFAULT_METRICS_PORT),
        ("health-port", &HEALTH_PORT, DEFAULT_HEALTH_PORT),
    ];
    let strings: [(&str, &StringSetting); 4] = [
        ("stream-in", &STREAM_IN),
        ("group", &GROUP),
        ("consumer", &CONSUMER),
        ("bind", &BIND),
    ];
    for pair in args.chunks(2) {
        let [name, value] = pair else { continue };
        let (Ok(name), Ok(value)) = (std::str::from_utf8(name), std::str::from_utf8(value)) else {
            continue;
        };
        if let Some((_, atomic, default)) = numeric.iter().find(|(n, _, _)| *n == name) {
            let v: i64 = value
                .trim()
                .parse()
                .map_err(|_| format!("invalid {name}"))?;
            if atomic.load(Relaxed) == *default {
                atomic.store(v, Relaxed);
            }
        } else if let Some((_, setting)) = strings.iter().find(|(n, _)| *n == name) {
            if setting.get() == setting.default {
                setting
                    .try_set(value)
                    .map_err(|e| format!("invalid {name}: {e}"))?;
            }
        } else if name == "log-level" {
            let mut level = LOG_LEVEL.lock().unwrap_or_else(|e| e.into_inner());
            if *level == LogLevel::INFO {
                *level = match value.to_ascii_uppercase().as_str() {
                    "DEBUG" => LogLevel::DEBUG,
                    "WARNING" => LogLevel::WARNING,
                    "ERROR" => LogLevel::ERROR,
                    _ => LogLevel::INFO,
                };
            }
        }
    }
    Ok(())
}

/// [`apply_module_args`] over the arguments as the server hands them to init.
pub fn apply_module_redis_args(args: &[RedisString]) -> Result<(), String> {
    let raw: Vec<&[u8]> = args.iter().map(RedisString::as_slice).collect();
    apply_module_args(&raw)
}

/// [`check_module_args`] over the arguments as the server hands them to init.
pub fn check_module_redis_args(args: &[RedisString]) -> Result<(), String> {
    let raw: Vec<&[u8]> = args.iter().map(RedisString::as_slice).collect();
    check_module_args(&raw)
}

/// Validates one value of a known setting (name without the prefix).
pub fn check_value(name: &str, value: &str) -> Result<(), String> {
    if let Some((_, min, max)) = NUMERIC_BOUNDS.iter().find(|(k, _, _)| *k == name) {
        let v: i64 = value
            .trim()
            .parse()
            .map_err(|_| "not an integer".to_string())?;
        if v < *min || v > *max {
            return Err(format!("must be between {min} and {max}"));
        }
        return Ok(());
    }
    if let Some((_, check)) = STRING_CHECKS.iter().find(|(k, _)| *k == name) {
        return check(value);
    }
    if name == "log-level" {
        if LOG_LEVELS.iter().any(|l| l.eq_ignore_ascii_case(value)) {
            return Ok(());
        }
        return Err(format!("must be one of {}", LOG_LEVELS.join(", ")));
    }
    Err("unknown setting".into())
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
        batch: batch(),
        ttls: crate::projection::Ttls::from_secs(
            secs(&TTL_PLAN_SEC),
            secs(&TTL_SYMBOL_SEC),
            secs(&DEDUPE_TTL_SEC),
        ),
    }
}

/// `heatbridge.fast-path`: take entries from the XADDs that added them, and trust the group
/// as the last pass left it, where that is safe (see `fastpath`). `no` reads every group
/// and every entry back, for an operator ruling the fast path out in an incident.
pub static FAST_PATH: AtomicBool = AtomicBool::new(true);

/// Whether the fast path is on.
pub fn fast_path() -> bool {
    FAST_PATH.load(Relaxed)
}

/// `heatbridge.batch`, within its bounds.
pub fn batch() -> usize {
    BATCH.load(Relaxed).clamp(MIN_BATCH, MAX_BATCH) as usize
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
    fn setter_errors_never_carry_a_nul_byte() {
        for v in ["1\0x", "\0", "%s\0%n"] {
            for check in [validate_bind, validate_name] {
                if let Err(e) = check(v) {
                    assert!(!e.contains('\0'), "{e:?}");
                }
            }
        }
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
        let s = StringSetting::new("d", validate_name);
        assert!(s.try_set("").is_err());
        assert_eq!(s.get(), "d", "the default until a value is set");
        assert!(s.matches(b"d"));
        s.try_set("a").unwrap();
        assert!(s.try_set("").is_err());
        assert_eq!(s.get(), "a");
        assert!(s.matches(b"a") && !s.matches(b"d"));
    }

    #[test]
    fn string_settings_start_at_their_defaults() {
        assert_eq!(validate_name(DEFAULT_STREAM), Ok(()));
        assert_eq!(validate_bind(DEFAULT_BIND), Ok(()));
        let fresh = StringSetting::new(DEFAULT_STREAM, validate_name);
        assert_eq!(fresh.get(), DEFAULT_STREAM);
    }

    fn args(words: &[&str]) -> Result<(), String> {
        let raw: Vec<&[u8]> = words.iter().map(|w| w.as_bytes()).collect();
        check_module_args(&raw)
    }

    #[test]
    fn good_module_args_pass() {
        assert!(args(&[]).is_ok());
        assert!(args(&[
            "ttl-plan-sec",
            "60",
            "metrics-port",
            "0",
            "health-port",
            "0"
        ])
        .is_ok());
        assert!(args(&["stream-in", "s:x", "group", "g", "consumer", "c"]).is_ok());
        assert!(args(&["bind", "::1", "log-level", "debug", "dedupe-ttl-sec", "0"]).is_ok());
        assert!(args(&["batch", "250", "poll-ms", "10", "ttl-symbol-sec", "1"]).is_ok());
        assert!(args(&["batch", "251"]).is_err());
    }

    #[test]
    fn bad_module_args_are_refused() {
        for bad in [
            &["ttl-plan-sec"][..],
            &["ttl-plan-sec", "-1"],
            &["ttl-plan-sec", "0"],
            &["ttl-symbol-sec", "315360001"],
            &["dedupe-ttl-sec", "-1"],
            &["metrics-port", "65536"],
            &["health-port", "-1"],
            &["batch", "0"],
            &["poll-ms", "9"],
            &["poll-ms", "x"],
            &["stream-in", ""],
            &["group", "a\nb"],
            &["consumer", ""],
            &["bind", "foo"],
            &["log-level", "LOUD"],
            &["no-such", "1"],
            &["heatbridge.batch", "5"],
            &["batch", "5", "batch", "6"],
            &["group", "batch", "batch", "5"],
        ] {
            assert!(args(bad).is_err(), "{bad:?} accepted");
        }
        let raw: [&[u8]; 2] = [b"stream-in", b"\xff"];
        assert!(check_module_args(&raw).is_err());
    }

    #[test]
    fn numeric_bounds_cover_every_numeric_setting() {
        for (name, min, max) in NUMERIC_BOUNDS {
            assert!(check_value(name, &min.to_string()).is_ok(), "{name}");
            assert!(check_value(name, &max.to_string()).is_ok(), "{name}");
            assert!(check_value(name, &(min - 1).to_string()).is_err(), "{name}");
            assert!(check_value(name, &(max + 1).to_string()).is_err(), "{name}");
        }
    }

    #[test]
    fn log_levels_map() {
        assert_eq!(LogLevel::ERROR.threshold(), crate::logging::Level::Error);
        assert_eq!(LogLevel::DEBUG.threshold(), crate::logging::Level::Debug);
    }
}
