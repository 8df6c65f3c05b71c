//! `loadmodule` / `MODULE LOAD` arguments: checked before anything else happens at load,
//! then applied to the settings that no config line gave (see `config` for the precedence).

use std::sync::atomic::Ordering::Relaxed;

use redis_module::RedisString;

use crate::settings::config::*;

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
    let numeric: [(&str, &NumericSetting); 9] = [
        ("poll-ms", &POLL_MS),
        ("catchup-step-us", &CATCHUP_STEP_US),
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
                Some(v) => Some(v.trim().parse().map_err(|_| format!("invalid {name}"))?),
                None => None,
            };
            setting.fill(v);
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
    let unset = FAST_PATH.is_unset();
    note("fast-path", unset);
    if unset {
        FAST_PATH.fill(arg("fast-path"));
    }
    let unset = LOG_LEVEL_SETTING.is_unset();
    note("log-level", unset);
    if unset {
        let level = match arg("log-level").map(str::to_ascii_uppercase).as_deref() {
            Some("DEBUG") => LogLevel::DEBUG,
            Some("WARNING") => LogLevel::WARNING,
            Some("ERROR") => LogLevel::ERROR,
            _ => LogLevel::INFO,
        };
        LOG_LEVEL_SETTING.fill(level);
    }
    check_port_pair(METRICS_PORT.load(Relaxed), HEALTH_PORT.load(Relaxed))?;
    Ok(overridden)
}

/// [`apply_module_args`] over the arguments as the server hands them to init; logs each
/// argument that a config line overrode.
pub fn apply_module_redis_args(args: &[RedisString]) -> Result<(), String> {
    let raw: Vec<&[u8]> = args.iter().map(RedisString::as_slice).collect();
    for name in apply_module_args(&raw)? {
        crate::support::logging::info(&format!(
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
