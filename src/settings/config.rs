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

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering::Relaxed};
use std::sync::Arc;

pub use crate::settings::setting::{
    check_port_pair, running, set_running, stream_names, LevelSetting, LevelValue, LogLevel,
    NumericSetting, ProjectAtValue, StringSetting, SwitchSetting, SwitchValue, LOG_LEVEL,
    LOG_LEVEL_SETTING, UNSET, UNSET_TEXT,
};

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
/// Default `heatbridge.catchup-step-us`: how long a catch-up pass may keep the event loop.
pub const DEFAULT_CATCHUP_STEP_US: i64 = 1000;
/// Lower bound of catchup-step-us.
pub const MIN_CATCHUP_STEP_US: i64 = 100;
/// Upper bound of catchup-step-us (the live budget).
pub const MAX_CATCHUP_STEP_US: i64 = 10_000;
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
pub const NUMERIC_BOUNDS: [(&str, i64, i64); 9] = [
    ("poll-ms", MIN_POLL_MS, MAX_POLL_MS),
    ("catchup-step-us", MIN_CATCHUP_STEP_US, MAX_CATCHUP_STEP_US),
    ("db", 0, MAX_DB),
    ("batch", MIN_BATCH, MAX_BATCH),
    ("ttl-plan-sec", MIN_TTL_SEC, MAX_TTL_SEC),
    ("ttl-symbol-sec", MIN_TTL_SEC, MAX_TTL_SEC),
    ("dedupe-ttl-sec", 0, MAX_TTL_SEC),
    ("metrics-port", 0, MAX_PORT),
    ("health-port", 0, MAX_PORT),
];

/// A validator of a string setting.
pub use crate::settings::setting::Check;

/// Validators of every string setting, by name without the prefix.
pub const STRING_CHECKS: [(&str, Check); 4] = [
    ("stream-in", validate_streams),
    ("group", validate_name),
    ("consumer", validate_name),
    ("bind", validate_bind),
];

/// Names accepted by `heatbridge.log-level` (case-insensitive, as CONFIG SET takes them).
pub const LOG_LEVELS: [&str; 4] = ["DEBUG", "INFO", "WARNING", "ERROR"];

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
/// `heatbridge.catchup-step-us`: how long a catch-up pass may keep the event loop before it
/// yields to other clients. Passes that serve a live XADD are not bound by it.
pub static CATCHUP_STEP_US: NumericSetting = NumericSetting::new(DEFAULT_CATCHUP_STEP_US);
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

/// The error for a stream without a hash tag in a cluster (CONTRACT §11).
pub fn untagged_stream_error(name: &str) -> String {
    format!(
        "heatbridge.stream-in: {name} has no hash tag; in a cluster every stream needs one, \
         e.g. quantum:stream:{{heat}}:harvest.heat.decision"
    )
}

/// `heatbridge.stream-in`: one or more stream names separated by commas, each a valid name
/// outside the derived-key namespaces, none twice and no two with the same hash tag (or both
/// without: they would write the same keys); at runtime on a cluster node, each with a hash
/// tag. (A tagless name that arrives at load is kept, not projected, and reported by
/// health.) Linear in the number of names: a long list is checked with sets.
pub fn validate_streams(v: &str) -> Result<(), String> {
    if v.len() > MAX_NAME_LEN * 16 {
        return Err(format!("must be at most {} bytes", MAX_NAME_LEN * 16));
    }
    let mut seen: std::collections::HashSet<&str> = std::collections::HashSet::new();
    // The first stream of each hash tag (`None`: untagged).
    let mut tags: std::collections::HashMap<Option<&[u8]>, &str> = std::collections::HashMap::new();
    for name in stream_names(v) {
        validate_name(name).map_err(|e| {
            if name.is_empty() {
                "a stream name must not be empty".to_string()
            } else {
                e
            }
        })?;
        if let Some(prefix) = crate::core::projection::derived_namespace(name.as_bytes()) {
            return Err(format!(
                "{name} is inside the namespace of HeatBridge's own keys ({}...): its writes \
                 would replace the stream",
                String::from_utf8_lossy(prefix)
            ));
        }
        if !seen.insert(name) {
            return Err(format!("{name} is listed twice"));
        }
        // Two streams with one tag (or none) would write the same lookup keys, and each
        // would move the other's latest.
        let tag = crate::core::projection::hash_tag(name.as_bytes());
        if let Some(other) = tags.insert(tag, name) {
            return Err(format!(
                "{other} and {name} would write the same lookup keys: give each stream a hash \
                 tag of its own, e.g. quantum:stream:{{a}}:harvest.heat.decision"
            ));
        }
        if running() && cluster() && tag.is_none() {
            return Err(untagged_stream_error(name));
        }
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
            crate::support::logging::show_bytes(v.as_bytes())
        )
    })
}

/// A copy of the settings that one drain step uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// `heatbridge.stream-in` as given (see [`Settings::streams`]).
    pub stream: Arc<str>,
    /// The database that holds the streams and keys.
    pub db: i64,
    /// Consumer group.
    pub group: Arc<str>,
    /// Consumer whose pending entries are finished first.
    pub consumer: Arc<str>,
    /// Entries per drain step.
    pub batch: usize,
    /// Key lifetimes.
    pub ttls: crate::core::projection::Ttls,
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
        stream: STREAM_IN.shared(),
        db: DB.load(Relaxed).max(0),
        group: GROUP.shared(),
        consumer: CONSUMER.shared(),
        batch: batch(),
        ttls: crate::core::projection::Ttls::from_secs(
            secs(&TTL_PLAN_SEC),
            secs(&TTL_SYMBOL_SEC),
            secs(&DEDUPE_TTL_SEC),
        ),
    }
}

/// `heatbridge.fast-path`: take entries from the XADDs that added them, and trust the group
/// as the last pass left it, where that is safe (see `fastpath`). `no` reads every group
/// and every entry back, for an operator ruling the fast path out in an incident.
pub static FAST_PATH: SwitchSetting = SwitchSetting::new(true, "yes");

/// `heatbridge.project-at`: `command` (off; the default) projects each XADD in its own
/// post-notification job, so even a command pipelined right behind the XADD on the same
/// connection sees the keys; `turn` (on) projects the XADDs of one event-loop turn together,
/// before any of their replies leaves the server. A server without post-notification jobs
/// (Redis 7.0) has only `turn`: the setting is fixed there.
pub static PROJECT_AT: SwitchSetting = SwitchSetting::fixable(
    false,
    "turn",
    "heatbridge.project-at: this server has no post-notification jobs (Redis 7.0), so it \
     projects once per event-loop turn: only turn",
);

/// Whether XADDs are projected once per event-loop turn.
pub fn project_per_turn() -> bool {
    PROJECT_AT.is_on()
}

/// Whether the fast path is on.
pub fn fast_path() -> bool {
    FAST_PATH.is_on()
}

/// `heatbridge.catchup-step-us`, within its bounds.
pub fn catchup_step() -> std::time::Duration {
    let us = CATCHUP_STEP_US
        .load(Relaxed)
        .clamp(MIN_CATCHUP_STEP_US, MAX_CATCHUP_STEP_US);
    std::time::Duration::from_micros(us.unsigned_abs())
}

/// `heatbridge.batch`, within its bounds.
pub fn batch() -> usize {
    BATCH.load(Relaxed).clamp(MIN_BATCH, MAX_BATCH) as usize
}

/// A port setting as a `u16`, 0 meaning off.
pub fn port(a: &AtomicI64) -> u16 {
    u16::try_from(a.load(Relaxed)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::module_args::*;
    use crate::settings::setting::Slot;
    use redis_module::EnumConfigurationValue;

    #[test]
    fn names_are_validated() {
        assert!(validate_name("quantum:stream:x").is_ok());
        assert!(validate_name("").is_err());
        assert!(validate_name("a\nb").is_err());
        assert!(validate_name(&"x".repeat(MAX_NAME_LEN + 1)).is_err());
    }

    #[test]
    fn streams_inside_the_derived_namespaces_are_refused() {
        for name in [
            "quantum:harvest:heat:latest_plan_id:BTC",
            "quantum:harvest:heat:latest:BTC",
            "quantum:harvest:heat:by_plan:p1",
            "quantum:dedupe:p27:{a}:p1",
        ] {
            let e = validate_streams(name).expect_err(name);
            assert!(e.contains("namespace"), "{e}");
            let listed = format!("quantum:stream:{{ok}}:x, {name}");
            assert!(validate_streams(&listed).is_err(), "{listed}");
        }
        assert!(validate_streams("quantum:harvest:heat:x").is_ok());
    }

    #[test]
    fn a_long_stream_list_is_checked_in_linear_time() {
        let names: Vec<String> = (0..2300).map(|i| format!("{{{i}}}")).collect();
        let list = names.join(",");
        assert!(list.len() <= MAX_NAME_LEN * 16);
        assert!(validate_streams(&list).is_ok());
        let twice = format!("{list},{{7}}");
        assert!(validate_streams(&twice)
            .unwrap_err()
            .contains("listed twice"));
        let same_tag = format!("{list},x{{7}}");
        assert!(validate_streams(&same_tag)
            .unwrap_err()
            .contains("the same lookup keys"));
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
        assert!(LogLevel::try_from(i32::from(LevelValue::UNSET)).is_err());
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
        LOG_LEVEL_SETTING.mark_unset();
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
        assert!(!LOG_LEVEL_SETTING.is_unset());

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
        assert_eq!(
            LogLevel::ERROR.threshold(),
            crate::support::logging::Level::Error
        );
        assert_eq!(
            LogLevel::DEBUG.threshold(),
            crate::support::logging::Level::Debug
        );
    }
}
