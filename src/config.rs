//! Every `heatbridge.*` setting: defaults, limits and validation in one place.
//!
//! Numeric settings are atomics bounded by Redis itself (MIN/MAX below); string settings
//! are validated in their setter, so an invalid `CONFIG SET` is refused with an error and
//! the old value stays in force. Every setting may be read from any thread without the
//! Redis lock (the exporter reads bind and ports).
//!
//! # Precedence: a config line wins over a module argument
//!
//! A `heatbridge.<name>` config line (redis.conf, `--heatbridge.<name>`, `MODULE LOADEX ..
//! CONFIG`, or a line CONFIG REWRITE wrote) wins over a `loadmodule` argument; an argument
//! applies only to a setting no config line gave. The server applies config lines before
//! init (`RedisModule_LoadConfigs`), and for a setting without a line it calls the setter
//! with the registered default instead. To tell the two apart even when a line equals the
//! default, every setting is registered with a default no valid value can equal
//! ([`UNSET`], [`UNSET_TEXT`], [`LevelValue::UNSET`]): the setter marks such a setting
//! unset, and init ([`apply_module_args`]) fills each unset setting from the arguments or
//! the real default. While a setting is unset its getter returns that marker too, because
//! the server skips the setter when a line equals the current value.
//!
//! The marker defaults also make CONFIG REWRITE write every setting, defaults included:
//! the server omits only values equal to the registered default. So after a rewrite, every
//! value is a config line, and a restart comes back with exactly the running values.

use std::ops::Deref;
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
/// Highest database index accepted by `heatbridge.db` (the server's `databases` bounds it
/// further: a database it does not have is reported by health).
pub const MAX_DB: i64 = 1_000_000;
/// Highest TCP port.
pub const MAX_PORT: i64 = 65535;
/// Longest stream, group or consumer name accepted.
pub const MAX_NAME_LEN: usize = 1024;
/// Lower bound of batch.
pub const MIN_BATCH: i64 = 1;
/// Lower bound of ttl-plan-sec and ttl-symbol-sec (a key must live).
pub const MIN_TTL_SEC: i64 = 1;

/// Bounds of every numeric setting, by name without the prefix: `(name, min, max)`.
pub const NUMERIC_BOUNDS: [(&str, i64, i64); 8] = [
    ("poll-ms", MIN_POLL_MS, MAX_POLL_MS),
    ("db", 0, MAX_DB),
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
    ("stream-in", validate_streams),
    ("group", validate_name),
    ("consumer", validate_name),
    ("bind", validate_bind),
];

/// Names accepted by `heatbridge.log-level` (case-insensitive, as CONFIG SET takes them).
pub const LOG_LEVELS: [&str; 4] = ["DEBUG", "INFO", "WARNING", "ERROR"];

/// The registered default of every numeric setting: below every minimum, so no config line
/// can give it (see the module doc).
pub const UNSET: i64 = -1;
/// The registered default of every string setting: no name or address may hold a control
/// character, so no valid config line can give it.
pub const UNSET_TEXT: &str = "\u{1}heatbridge:unset";

/// `heatbridge.poll-ms`
pub static POLL_MS: NumericSetting = NumericSetting::new(DEFAULT_POLL_MS);
/// `heatbridge.batch`
pub static BATCH: NumericSetting = NumericSetting::new(DEFAULT_BATCH);
/// `heatbridge.ttl-plan-sec`
pub static TTL_PLAN_SEC: NumericSetting = NumericSetting::new(DEFAULT_TTL_PLAN_SEC);
/// `heatbridge.ttl-symbol-sec`
pub static TTL_SYMBOL_SEC: NumericSetting = NumericSetting::new(DEFAULT_TTL_SYMBOL_SEC);
/// `heatbridge.dedupe-ttl-sec`
pub static DEDUPE_TTL_SEC: NumericSetting = NumericSetting::new(DEFAULT_DEDUPE_TTL_SEC);
/// `heatbridge.db`: the database that holds the streams and keys (0 in a cluster).
pub static DB: NumericSetting = NumericSetting::checked(0, check_db);
/// `heatbridge.metrics-port`: never the health port, unless both are 0.
pub static METRICS_PORT: NumericSetting =
    NumericSetting::port(DEFAULT_METRICS_PORT, "heatbridge.health-port", &HEALTH_PORT);
/// `heatbridge.health-port`: never the metrics port, unless both are 0.
pub static HEALTH_PORT: NumericSetting = NumericSetting::port(
    DEFAULT_HEALTH_PORT,
    "heatbridge.metrics-port",
    &METRICS_PORT,
);

/// `heatbridge.stream-in`
pub static STREAM_IN: StringSetting = StringSetting::new(DEFAULT_STREAM, validate_streams);
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

/// `heatbridge.log-level`: the level in force.
pub static LOG_LEVEL: Mutex<LogLevel> = Mutex::new(LogLevel::INFO);
/// What the server sees of `heatbridge.log-level`: [`LOG_LEVEL`], or unset during a load.
pub static LOG_LEVEL_SETTING: LevelSetting = LevelSetting {
    unset: std::sync::atomic::AtomicBool::new(false),
};

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

/// Whether the module is running (between init and unload). Before that, during a load,
/// the server applies config lines one by one, so a cross-setting check waits for init.
fn running() -> bool {
    crate::exporter::started()
}

/// A numeric setting, readable from any thread; the server checks its bounds.
pub struct NumericSetting {
    value: AtomicI64,
    default: i64,
    /// For a port: the other endpoint's setting and name, which it may not equal.
    other_port: Option<(&'static str, &'static NumericSetting)>,
    /// A further check of a value set at runtime.
    check: Option<fn(i64) -> Result<(), String>>,
}

impl NumericSetting {
    const fn new(default: i64) -> Self {
        NumericSetting {
            value: AtomicI64::new(default),
            default,
            other_port: None,
            check: None,
        }
    }

    const fn checked(default: i64, check: fn(i64) -> Result<(), String>) -> Self {
        NumericSetting {
            value: AtomicI64::new(default),
            default,
            other_port: None,
            check: Some(check),
        }
    }

    const fn port(default: i64, other: &'static str, port: &'static NumericSetting) -> Self {
        NumericSetting {
            value: AtomicI64::new(default),
            default,
            other_port: Some((other, port)),
            check: None,
        }
    }

    /// Whether the load left this setting without a config line.
    fn is_unset(&self) -> bool {
        self.value.load(Relaxed) == UNSET
    }

    /// Stores `v` unless it would put both endpoints on one port.
    fn try_set(&self, v: i64) -> Result<(), String> {
        if let Some(check) = self.check {
            check(v)?;
        }
        if let Some((name, other)) = self.other_port {
            check_port_pair(v, other.load(Relaxed)).map_err(|_| {
                format!("{name} is already {v}: the endpoints need different ports (or 0)")
            })?;
        }
        self.value.store(v, Relaxed);
        Ok(())
    }
}

impl Deref for NumericSetting {
    type Target = AtomicI64;

    fn deref(&self) -> &AtomicI64 {
        &self.value
    }
}

impl ConfigurationValue<i64> for NumericSetting {
    fn get(&self, _ctx: &ConfigurationContext) -> i64 {
        self.value.load(Relaxed)
    }

    fn set(&self, _ctx: &ConfigurationContext, v: i64) -> Result<(), RedisError> {
        guard::contain("config set", Err(RedisError::Str("internal error")), || {
            if !running() {
                // During a load: UNSET from the server means no config line; the pair of
                // ports is checked once both are known, in init.
                self.value.store(v, Relaxed);
                return Ok(());
            }
            self.try_set(v).map_err(RedisError::String)
        })
    }
}

/// Refuses two endpoints on one port; 0 (off) may repeat.
pub fn check_port_pair(metrics: i64, health: i64) -> Result<(), String> {
    if metrics != 0 && metrics == health {
        return Err(format!(
            "heatbridge.metrics-port and heatbridge.health-port are both {metrics}: \
             the endpoints need different ports (or 0 to turn one off)"
        ));
    }
    Ok(())
}

/// The value `heatbridge.log-level` takes through the server: a [`LogLevel`], or
/// [`LevelValue::UNSET`], the registered default (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LevelValue(i32);

impl LevelValue {
    /// No config line gave log-level.
    pub const UNSET: LevelValue = LevelValue(-1);
}

impl TryFrom<i32> for LevelValue {
    type Error = RedisError;

    fn try_from(v: i32) -> Result<Self, RedisError> {
        if v == LevelValue::UNSET.0 || LogLevel::try_from(v).is_ok() {
            return Ok(LevelValue(v));
        }
        Err(RedisError::Str("Value is not supported"))
    }
}

impl From<LevelValue> for i32 {
    fn from(v: LevelValue) -> i32 {
        v.0
    }
}

impl EnumConfigurationValue for LevelValue {
    fn get_options(&self) -> (Vec<String>, Vec<i32>) {
        LogLevel::INFO.get_options()
    }
}

/// `heatbridge.log-level` as the server sees it; the level itself is in [`LOG_LEVEL`].
pub struct LevelSetting {
    unset: std::sync::atomic::AtomicBool,
}

impl LevelSetting {
    fn level(&self) -> LogLevel {
        *LOG_LEVEL.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl ConfigurationValue<LevelValue> for LevelSetting {
    fn get(&self, _ctx: &ConfigurationContext) -> LevelValue {
        if self.unset.load(Relaxed) {
            return LevelValue::UNSET;
        }
        LevelValue(self.level().into())
    }

    fn set(&self, _ctx: &ConfigurationContext, v: LevelValue) -> Result<(), RedisError> {
        guard::contain("config set", Err(RedisError::Str("internal error")), || {
            if v == LevelValue::UNSET {
                if running() {
                    return Err(RedisError::Str("Value is not supported"));
                }
                self.unset.store(true, Relaxed);
                return Ok(());
            }
            let level = LogLevel::try_from(v.0)?;
            *LOG_LEVEL.lock().unwrap_or_else(|e| e.into_inner()) = level;
            self.unset.store(false, Relaxed);
            Ok(())
        })
    }
}

/// A string setting with a validator, readable from any thread.
///
/// It holds its default until a value is set. The server compares a value from redis.conf
/// with the current one and skips the setter when they are equal, so a setting that started
/// out empty would take `heatbridge.stream-in ""` without ever validating it.
pub struct StringSetting {
    value: Mutex<Slot>,
    default: &'static str,
    check: Check,
}

/// What a [`StringSetting`] holds.
enum Slot {
    /// Its default.
    Default,
    /// Its default, and the load gave it no config line.
    Unset,
    /// A value that was set.
    Value(String),
}

impl StringSetting {
    const fn new(default: &'static str, check: Check) -> Self {
        StringSetting {
            value: Mutex::new(Slot::Default),
            default,
            check,
        }
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Slot> {
        self.value.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current value.
    pub fn get(&self) -> String {
        match &*self.slot() {
            Slot::Value(v) => v.clone(),
            Slot::Default | Slot::Unset => self.default.to_string(),
        }
    }

    /// Whether `bytes` is one of the comma-separated names of the current value, without
    /// copying it.
    pub fn lists(&self, bytes: &[u8]) -> bool {
        match &*self.slot() {
            Slot::Value(v) => stream_names(v).any(|n| n.as_bytes() == bytes),
            Slot::Default | Slot::Unset => {
                stream_names(self.default).any(|n| n.as_bytes() == bytes)
            }
        }
    }

    /// Whether the current value equals `bytes`, without copying it.
    pub fn matches(&self, bytes: &[u8]) -> bool {
        match &*self.slot() {
            Slot::Value(v) => v.as_bytes() == bytes,
            Slot::Default | Slot::Unset => self.default.as_bytes() == bytes,
        }
    }

    /// Validates and stores `v`; on error the old value stays.
    pub fn try_set(&self, v: &str) -> Result<(), String> {
        (self.check)(v)?;
        *self.slot() = Slot::Value(v.to_string());
        Ok(())
    }

    fn is_unset(&self) -> bool {
        matches!(*self.slot(), Slot::Unset)
    }

    /// Back to the default (a load without a config line or argument for it).
    fn reset(&self) {
        *self.slot() = Slot::Default;
    }
}

impl ConfigurationValue<RedisString> for StringSetting {
    fn get(&self, _ctx: &ConfigurationContext) -> RedisString {
        if self.is_unset() {
            return RedisString::create(None, UNSET_TEXT);
        }
        RedisString::create(None, StringSetting::get(self).as_str())
    }

    fn set(&self, _ctx: &ConfigurationContext, val: RedisString) -> Result<(), RedisError> {
        guard::contain("config set", Err(RedisError::Str("internal error")), || {
            let s = val
                .try_as_str()
                .map_err(|_| RedisError::Str("value must be valid UTF-8"))?;
            if s == UNSET_TEXT && !running() {
                *self.slot() = Slot::Unset;
                return Ok(());
            }
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

/// Whether the server runs in cluster mode (set at load).
static CLUSTER: AtomicBool = AtomicBool::new(false);

/// Records whether the server runs in cluster mode (module load).
pub fn set_cluster(on: bool) {
    CLUSTER.store(on, Relaxed);
}

/// Whether the server runs in cluster mode.
pub fn cluster() -> bool {
    CLUSTER.load(Relaxed)
}

/// The stream names of a `heatbridge.stream-in` value: separated by commas, surrounding
/// spaces ignored.
pub fn stream_names(list: &str) -> impl Iterator<Item = &str> {
    list.split(',').map(str::trim)
}

/// The error for a stream without a hash tag in a cluster (CONTRACT §11).
pub fn untagged_stream_error(name: &str) -> String {
    format!(
        "heatbridge.stream-in: {name} has no hash tag; in a cluster every stream needs one, \
         e.g. quantum:stream:{{heat}}:harvest.heat.decision"
    )
}

/// `heatbridge.stream-in`: one or more stream names separated by commas, each a valid name,
/// none twice; at runtime on a cluster node, each with a hash tag. (A tagless name that
/// arrives at load is kept, not projected, and reported by health.)
pub fn validate_streams(v: &str) -> Result<(), String> {
    if v.len() > MAX_NAME_LEN * 16 {
        return Err(format!("must be at most {} bytes", MAX_NAME_LEN * 16));
    }
    let mut seen: Vec<&str> = Vec::new();
    for name in stream_names(v) {
        validate_name(name).map_err(|e| {
            if name.is_empty() {
                "a stream name must not be empty".to_string()
            } else {
                e
            }
        })?;
        if seen.contains(&name) {
            return Err(format!("{name} is listed twice"));
        }
        if running() && cluster() && crate::projection::hash_tag(name.as_bytes()).is_none() {
            return Err(untagged_stream_error(name));
        }
        seen.push(name);
    }
    Ok(())
}

/// `heatbridge.db` set at runtime: 0 in a cluster, where only database 0 exists.
fn check_db(v: i64) -> Result<(), String> {
    if cluster() && v != 0 {
        return Err("heatbridge.db must be 0 in a cluster".into());
    }
    Ok(())
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
            || n == "fast-path"
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

/// Checks the module arguments, then settles every setting for init: one that a config
/// line gave keeps it; one the load left unset takes its argument, or else its default.
/// Then the two ports must differ. Returns the settings whose argument a config line
/// overrode, so that init can say so.
///
/// The crate's own handling of module arguments (`module_args_as_configuration`) hands them
/// to `CString::new(..).unwrap()` and to printf-style logging before HeatBridge's code runs,
/// so a NUL byte or a `%` in one crashed the server at load. They are parsed here instead.
pub fn apply_module_args(args: &[&[u8]]) -> Result<Vec<String>, String> {
    check_module_args(args)?;
    let arg = |name: &str| {
        args.chunks(2).find_map(|pair| match pair {
            [n, v] if *n == name.as_bytes() => std::str::from_utf8(v).ok(),
            _ => None,
        })
    };
    let mut overridden = Vec::new();
    let mut note = |name: &str, unset: bool| {
        if !unset && arg(name).is_some() {
            overridden.push(format!("heatbridge.{name}"));
        }
    };
    let numeric: [(&str, &NumericSetting); 8] = [
        ("poll-ms", &POLL_MS),
        ("db", &DB),
        ("batch", &BATCH),
        ("ttl-plan-sec", &TTL_PLAN_SEC),
        ("ttl-symbol-sec", &TTL_SYMBOL_SEC),
        ("dedupe-ttl-sec", &DEDUPE_TTL_SEC),
        ("metrics-port", &METRICS_PORT),
        ("health-port", &HEALTH_PORT),
    ];
    for (name, setting) in numeric {
        let unset = setting.is_unset();
        note(name, unset);
        if unset {
            let v = match arg(name) {
                Some(v) => v.trim().parse().map_err(|_| format!("invalid {name}"))?,
                None => setting.default,
            };
            setting.value.store(v, Relaxed);
        }
    }
    let strings: [(&str, &StringSetting); 4] = [
        ("stream-in", &STREAM_IN),
        ("group", &GROUP),
        ("consumer", &CONSUMER),
        ("bind", &BIND),
    ];
    for (name, setting) in strings {
        let unset = setting.is_unset();
        note(name, unset);
        if unset {
            match arg(name) {
                Some(v) => setting
                    .try_set(v)
                    .map_err(|e| format!("invalid {name}: {e}"))?,
                None => setting.reset(),
            }
        }
    }
    let unset = FAST_PATH.unset.load(Relaxed);
    note("fast-path", unset);
    if unset {
        FAST_PATH.fill(arg("fast-path"));
    }
    let unset = LOG_LEVEL_SETTING.unset.load(Relaxed);
    note("log-level", unset);
    if unset {
        let level = match arg("log-level").map(str::to_ascii_uppercase).as_deref() {
            Some("DEBUG") => LogLevel::DEBUG,
            Some("WARNING") => LogLevel::WARNING,
            Some("ERROR") => LogLevel::ERROR,
            _ => LogLevel::INFO,
        };
        *LOG_LEVEL.lock().unwrap_or_else(|e| e.into_inner()) = level;
        LOG_LEVEL_SETTING.unset.store(false, Relaxed);
    }
    check_port_pair(METRICS_PORT.load(Relaxed), HEALTH_PORT.load(Relaxed))?;
    Ok(overridden)
}

/// [`apply_module_args`] over the arguments as the server hands them to init; logs each
/// argument that a config line overrode.
pub fn apply_module_redis_args(args: &[RedisString]) -> Result<(), String> {
    let raw: Vec<&[u8]> = args.iter().map(RedisString::as_slice).collect();
    for name in apply_module_args(&raw)? {
        crate::logging::info(&format!(
            "{name}: the config line wins over the loadmodule argument"
        ));
    }
    Ok(())
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
    if name == "fast-path" {
        if value.eq_ignore_ascii_case("yes") || value.eq_ignore_ascii_case("no") {
            return Ok(());
        }
        return Err("must be yes or no".into());
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
    /// `heatbridge.stream-in` as given (see [`Settings::streams`]).
    pub stream: String,
    /// The database that holds the streams and keys.
    pub db: i64,
    /// Consumer group.
    pub group: String,
    /// Consumer whose pending entries are finished first.
    pub consumer: String,
    /// Entries per drain step.
    pub batch: usize,
    /// Key lifetimes.
    pub ttls: crate::projection::Ttls,
}

impl Settings {
    /// The input streams, in the order listed.
    pub fn streams(&self) -> Vec<String> {
        stream_names(&self.stream).map(str::to_string).collect()
    }
}

/// Reads the settings in force now.
pub fn current() -> Settings {
    let secs = |a: &AtomicI64| a.load(Relaxed).max(0) as u64;
    Settings {
        stream: STREAM_IN.get(),
        db: DB.load(Relaxed).max(0),
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
pub static FAST_PATH: SwitchSetting = SwitchSetting {
    on: AtomicBool::new(true),
    unset: AtomicBool::new(false),
    default: true,
};

/// Whether the fast path is on.
pub fn fast_path() -> bool {
    FAST_PATH.on.load(Relaxed)
}

/// The value a yes/no setting takes through the server: no (0), yes (1), or
/// [`SwitchValue::UNSET`], the registered default (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SwitchValue(i32);

impl SwitchValue {
    /// No config line gave the setting.
    pub const UNSET: SwitchValue = SwitchValue(-1);
}

impl TryFrom<i32> for SwitchValue {
    type Error = RedisError;

    fn try_from(v: i32) -> Result<Self, RedisError> {
        if (-1..=1).contains(&v) {
            return Ok(SwitchValue(v));
        }
        Err(RedisError::Str("Value is not supported"))
    }
}

impl From<SwitchValue> for i32 {
    fn from(v: SwitchValue) -> i32 {
        v.0
    }
}

impl EnumConfigurationValue for SwitchValue {
    fn get_options(&self) -> (Vec<String>, Vec<i32>) {
        (vec!["no".into(), "yes".into()], vec![0, 1])
    }
}

/// A yes/no setting, readable from any thread.
pub struct SwitchSetting {
    on: AtomicBool,
    unset: AtomicBool,
    default: bool,
}

impl SwitchSetting {
    /// Fills the setting at load when no config line gave it: from a module argument
    /// (`yes`/`no`), else its default.
    fn fill(&self, arg: Option<&str>) {
        let on = arg.map_or(self.default, |v| v.eq_ignore_ascii_case("yes"));
        self.on.store(on, Relaxed);
        self.unset.store(false, Relaxed);
    }
}

impl ConfigurationValue<SwitchValue> for SwitchSetting {
    fn get(&self, _ctx: &ConfigurationContext) -> SwitchValue {
        if self.unset.load(Relaxed) {
            return SwitchValue::UNSET;
        }
        SwitchValue(i32::from(self.on.load(Relaxed)))
    }

    fn set(&self, _ctx: &ConfigurationContext, v: SwitchValue) -> Result<(), RedisError> {
        guard::contain("config set", Err(RedisError::Str("internal error")), || {
            if v == SwitchValue::UNSET {
                if running() {
                    return Err(RedisError::Str("Value is not supported"));
                }
                self.unset.store(true, Relaxed);
                return Ok(());
            }
            self.on.store(v.0 == 1, Relaxed);
            self.unset.store(false, Relaxed);
            Ok(())
        })
    }
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
    fn the_two_ports_differ_unless_off() {
        assert!(check_port_pair(8070, 8071).is_ok());
        assert!(check_port_pair(0, 0).is_ok());
        assert!(check_port_pair(0, 8071).is_ok());
        let e = check_port_pair(9000, 9000).unwrap_err();
        assert!(e.contains("both 9000"), "{e}");

        static A: NumericSetting = NumericSetting::port(1, "b", &B);
        static B: NumericSetting = NumericSetting::port(2, "a", &A);
        assert!(A.try_set(2).is_err());
        assert_eq!(A.load(Relaxed), 1, "a refused value leaves the old one");
        assert!(B.try_set(1).is_err());
        A.try_set(0).unwrap();
        B.try_set(1).unwrap();
        B.try_set(0).unwrap();
    }

    #[test]
    fn the_markers_are_no_valid_value() {
        for (name, _, _) in NUMERIC_BOUNDS {
            assert!(check_value(name, &UNSET.to_string()).is_err(), "{name}");
        }
        for (name, check) in STRING_CHECKS {
            assert!(check(UNSET_TEXT).is_err(), "{name}");
        }
        assert!(LogLevel::try_from(LevelValue::UNSET.0).is_err());
        assert!(LevelValue::try_from(-1).is_ok());
        assert!(LevelValue::try_from(3).is_ok());
        assert!(LevelValue::try_from(4).is_err());
        assert!(!LevelValue::UNSET.get_options().1.contains(&-1));
    }

    #[test]
    fn a_string_setting_left_unset_by_the_load_reads_as_its_default() {
        let s = StringSetting::new("d", validate_name);
        *s.slot() = Slot::Unset;
        assert!(s.is_unset());
        assert_eq!(s.get(), "d");
        assert!(s.matches(b"d"));
        s.try_set("x").unwrap();
        assert!(!s.is_unset());
        s.reset();
        assert_eq!(s.get(), "d");
    }

    // The only unit test that touches the real settings.
    #[test]
    fn init_fills_unset_settings_from_arguments_and_keeps_config_lines() {
        // As LoadConfigs leaves them: batch and stream-in without a line, poll-ms and
        // group from a line equal to their default, log-level without a line.
        BATCH.store(UNSET, Relaxed);
        TTL_PLAN_SEC.store(UNSET, Relaxed);
        POLL_MS.store(DEFAULT_POLL_MS, Relaxed);
        *STREAM_IN.slot() = Slot::Unset;
        *GROUP.slot() = Slot::Default;
        LOG_LEVEL_SETTING.unset.store(true, Relaxed);
        for s in [
            &TTL_SYMBOL_SEC,
            &DEDUPE_TTL_SEC,
            &METRICS_PORT,
            &HEALTH_PORT,
        ] {
            s.store(UNSET, Relaxed);
        }
        for s in [&CONSUMER, &BIND] {
            *s.slot() = Slot::Unset;
        }
        let words = [
            "batch",
            "20",
            "poll-ms",
            "40",
            "stream-in",
            "a:s",
            "group",
            "g",
            "log-level",
            "error",
        ];
        let raw: Vec<&[u8]> = words.iter().map(|w| w.as_bytes()).collect();
        let overridden = apply_module_args(&raw).unwrap();
        assert_eq!(overridden, ["heatbridge.poll-ms", "heatbridge.group"]);
        assert_eq!(BATCH.load(Relaxed), 20);
        assert_eq!(POLL_MS.load(Relaxed), DEFAULT_POLL_MS);
        assert_eq!(TTL_PLAN_SEC.load(Relaxed), DEFAULT_TTL_PLAN_SEC);
        assert_eq!(METRICS_PORT.load(Relaxed), DEFAULT_METRICS_PORT);
        assert_eq!(STREAM_IN.get(), "a:s");
        assert_eq!(GROUP.get(), DEFAULT_GROUP);
        assert_eq!(BIND.get(), DEFAULT_BIND);
        assert_eq!(*LOG_LEVEL.lock().unwrap(), LogLevel::ERROR);
        assert!(!LOG_LEVEL_SETTING.unset.load(Relaxed));

        // A line and an argument that put both endpoints on one port fail the load.
        METRICS_PORT.store(9000, Relaxed);
        HEALTH_PORT.store(UNSET, Relaxed);
        let raw: [&[u8]; 2] = [b"health-port", b"9000"];
        assert!(apply_module_args(&raw)
            .unwrap_err()
            .contains("different ports"));
    }

    #[test]
    fn log_levels_map() {
        assert_eq!(LogLevel::ERROR.threshold(), crate::logging::Level::Error);
        assert_eq!(LogLevel::DEBUG.threshold(), crate::logging::Level::Debug);
    }
}
