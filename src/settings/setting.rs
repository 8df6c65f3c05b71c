//! The kinds of `heatbridge.*` setting as the server reads and writes them: numbers, strings,
//! the log level and yes/no switches, each readable from any thread without the Redis lock,
//! and each able to tell, during a load, a config line from no line at all (the unset
//! marker; see `config` for the precedence it serves). The settings themselves, their
//! defaults and validation are in `config`.

use std::ops::Deref;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};

use redis_module::configuration::ConfigurationContext;
use redis_module::{enum_configuration, ConfigurationValue, RedisError, RedisString};

use crate::support::guard;

/// A validator of a string setting's value.
pub type Check = fn(&str) -> Result<(), String>;

/// The registered default of every numeric setting: below every minimum, so no config line
/// can give it (see the module doc).
pub const UNSET: i64 = -1;
/// The registered default of every string setting: no name or address may hold a control
/// character, so no valid config line can give it.
pub const UNSET_TEXT: &str = "\u{1}heatbridge:unset";

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
pub static LOG_LEVEL_SETTING: LevelSetting = LevelSetting::new();

impl LogLevel {
    /// The matching logging threshold.
    pub fn threshold(self) -> crate::support::logging::Level {
        use crate::support::logging::Level;
        match self {
            LogLevel::DEBUG => Level::Debug,
            LogLevel::INFO => Level::Info,
            LogLevel::WARNING => Level::Warning,
            LogLevel::ERROR => Level::Error,
        }
    }
}

/// Whether the module is running (between init and unload).
static RUNNING: AtomicBool = AtomicBool::new(false);

/// Marks the module running (end of init) or not (unload).
pub fn set_running(on: bool) {
    RUNNING.store(on, Relaxed);
}

/// Whether the module is running (between init and unload). Before that, during a load,
/// the server applies config lines one by one, so a cross-setting check waits for init.
pub fn running() -> bool {
    RUNNING.load(Relaxed)
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
    pub const fn new(default: i64) -> Self {
        NumericSetting {
            value: AtomicI64::new(default),
            default,
            other_port: None,
            check: None,
        }
    }

    pub const fn checked(default: i64, check: fn(i64) -> Result<(), String>) -> Self {
        NumericSetting {
            value: AtomicI64::new(default),
            default,
            other_port: None,
            check: Some(check),
        }
    }

    pub const fn port(default: i64, other: &'static str, port: &'static NumericSetting) -> Self {
        NumericSetting {
            value: AtomicI64::new(default),
            default,
            other_port: Some((other, port)),
            check: None,
        }
    }

    /// Whether the load left this setting without a config line.
    pub fn is_unset(&self) -> bool {
        self.value.load(Relaxed) == UNSET
    }

    /// Fills the setting at load when no config line gave it: from a module argument, else
    /// its default.
    pub fn fill(&self, arg: Option<i64>) {
        self.value.store(arg.unwrap_or(self.default), Relaxed);
    }

    /// Stores `v` unless it would put both endpoints on one port.
    pub(crate) fn try_set(&self, v: i64) -> Result<(), String> {
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

impl Default for LevelSetting {
    fn default() -> Self {
        LevelSetting::new()
    }
}

impl LevelSetting {
    /// A level setting, not unset.
    pub const fn new() -> LevelSetting {
        LevelSetting {
            unset: AtomicBool::new(false),
        }
    }

    /// Whether the load left it without a config line.
    pub fn is_unset(&self) -> bool {
        self.unset.load(Relaxed)
    }

    /// Marks it as given no config line (tests of the load).
    #[cfg(test)]
    pub fn mark_unset(&self) {
        self.unset.store(true, Relaxed);
    }

    /// Fills it at load when no config line gave it.
    pub fn fill(&self, level: LogLevel) {
        *LOG_LEVEL.lock().unwrap_or_else(|e| e.into_inner()) = level;
        self.unset.store(false, Relaxed);
    }
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
    /// The default as a shared string, made on first use.
    shared_default: OnceLock<Arc<str>>,
    check: Check,
}

/// What a [`StringSetting`] holds.
pub(crate) enum Slot {
    /// Its default.
    Default,
    /// Its default, and the load gave it no config line.
    Unset,
    /// A value that was set.
    Value(Arc<str>),
}

impl StringSetting {
    pub const fn new(default: &'static str, check: Check) -> Self {
        StringSetting {
            value: Mutex::new(Slot::Default),
            default,
            shared_default: OnceLock::new(),
            check,
        }
    }

    pub(crate) fn slot(&self) -> std::sync::MutexGuard<'_, Slot> {
        self.value.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current value.
    pub fn get(&self) -> String {
        match &*self.slot() {
            Slot::Value(v) => v.to_string(),
            Slot::Default | Slot::Unset => self.default.to_string(),
        }
    }

    /// The current value, shared: no copy (for what reads it on every drain pass).
    pub fn shared(&self) -> Arc<str> {
        match &*self.slot() {
            Slot::Value(v) => Arc::clone(v),
            Slot::Default | Slot::Unset => {
                Arc::clone(self.shared_default.get_or_init(|| Arc::from(self.default)))
            }
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
        *self.slot() = Slot::Value(Arc::from(v));
        Ok(())
    }

    pub fn is_unset(&self) -> bool {
        matches!(*self.slot(), Slot::Unset)
    }

    /// Back to the default (a load without a config line or argument for it).
    pub fn reset(&self) {
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

/// The stream names of a `heatbridge.stream-in` value: separated by commas, surrounding
/// spaces ignored.
pub fn stream_names(list: &str) -> impl Iterator<Item = &str> {
    list.split(',').map(str::trim)
}

/// A value a two-way setting takes through the server: off (0), on (1), or `UNSET`, the
/// registered default (see the module doc). One type per pair of words.
pub trait TwoWay:
    Copy + PartialEq + TryFrom<i32, Error = RedisError> + Into<i32> + EnumConfigurationValue
{
    /// No config line gave the setting.
    const UNSET: Self;
    /// The value for `on`.
    fn of(on: bool) -> Self;
}

/// Declares the value type of a two-way setting whose words are `$off` and `$on`.
macro_rules! two_way {
    ($(#[$doc:meta])* $name:ident, $off:literal, $on:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub struct $name(i32);

        impl $name {
            /// No config line gave the setting.
            pub const UNSET: $name = $name(-1);
        }

        impl TryFrom<i32> for $name {
            type Error = RedisError;

            fn try_from(v: i32) -> Result<Self, RedisError> {
                if (-1..=1).contains(&v) {
                    return Ok($name(v));
                }
                Err(RedisError::Str("Value is not supported"))
            }
        }

        impl From<$name> for i32 {
            fn from(v: $name) -> i32 {
                v.0
            }
        }

        impl EnumConfigurationValue for $name {
            fn get_options(&self) -> (Vec<String>, Vec<i32>) {
                (vec![$off.into(), $on.into()], vec![0, 1])
            }
        }

        impl TwoWay for $name {
            const UNSET: Self = $name::UNSET;

            fn of(on: bool) -> Self {
                $name(i32::from(on))
            }
        }
    };
}

two_way!(
    /// The value of a yes/no setting (`heatbridge.fast-path`).
    SwitchValue,
    "no",
    "yes"
);
two_way!(
    /// The value of `heatbridge.project-at`: `command` or `turn`.
    ProjectAtValue,
    "command",
    "turn"
);

/// A two-way setting, readable from any thread. The server may fix it to one value
/// ([`SwitchSetting::fix`]): it then reads as that value whatever was set, and CONFIG SET of
/// the other is refused.
pub struct SwitchSetting {
    on: AtomicBool,
    unset: AtomicBool,
    default: bool,
    /// The word that means on, for a module argument.
    on_word: &'static str,
    /// 0: not fixed; 1: fixed off; 2: fixed on.
    fixed: std::sync::atomic::AtomicU8,
    /// Why it is fixed, for the error of a refused CONFIG SET.
    fixed_why: &'static str,
}

impl SwitchSetting {
    /// A switch that is `default` until set; `on_word` is its "on" value in a module
    /// argument (the other word is off).
    pub const fn new(default: bool, on_word: &'static str) -> SwitchSetting {
        SwitchSetting::fixable(default, on_word, "")
    }

    /// A switch the server may fix to one value, for the reason `fixed_why`.
    pub const fn fixable(
        default: bool,
        on_word: &'static str,
        fixed_why: &'static str,
    ) -> SwitchSetting {
        SwitchSetting {
            on: AtomicBool::new(default),
            unset: AtomicBool::new(false),
            default,
            on_word,
            fixed: std::sync::atomic::AtomicU8::new(0),
            fixed_why,
        }
    }

    /// Whether it is on (its fixed value, when fixed).
    pub fn is_on(&self) -> bool {
        match self.fixed.load(Relaxed) {
            1 => false,
            2 => true,
            _ => self.on.load(Relaxed),
        }
    }

    /// Fixes it to `value` (`None`: not fixed), for a server that has only one way (module
    /// load).
    pub fn fix(&self, value: Option<bool>) {
        self.fixed
            .store(value.map_or(0, |on| if on { 2 } else { 1 }), Relaxed);
    }

    /// Whether the load left it without a config line.
    pub fn is_unset(&self) -> bool {
        self.unset.load(Relaxed)
    }

    /// Fills the setting at load when no config line gave it: from a module argument (its
    /// on word, else off), else its default.
    pub fn fill(&self, arg: Option<&str>) {
        let on = arg.map_or(self.default, |v| v.eq_ignore_ascii_case(self.on_word));
        self.on.store(on, Relaxed);
        self.unset.store(false, Relaxed);
    }
}

impl<V: TwoWay> ConfigurationValue<V> for SwitchSetting {
    fn get(&self, _ctx: &ConfigurationContext) -> V {
        if self.unset.load(Relaxed) {
            return V::UNSET;
        }
        V::of(self.is_on())
    }

    fn set(&self, _ctx: &ConfigurationContext, v: V) -> Result<(), RedisError> {
        guard::contain("config set", Err(RedisError::Str("internal error")), || {
            if v == V::UNSET {
                if running() {
                    return Err(RedisError::Str("Value is not supported"));
                }
                self.unset.store(true, Relaxed);
                return Ok(());
            }
            let on = v == V::of(true);
            let fixed = self.fixed.load(Relaxed);
            if running() && fixed != 0 && on != (fixed == 2) {
                return Err(RedisError::Str(self.fixed_why));
            }
            self.on.store(on, Relaxed);
            self.unset.store(false, Relaxed);
            Ok(())
        })
    }
}
