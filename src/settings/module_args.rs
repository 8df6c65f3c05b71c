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
            || n == "project-at"
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
        if !survives_rewrite(value.as_bytes()) {
            return Err(format!(
                "the value of {name} '{}' is empty or holds whitespace or a quote: CONFIG \
                 REWRITE writes loadmodule arguments back unquoted, which would leave a \
                 config file the server cannot start from; give it as a config line \
                 instead (heatbridge.{name} \"...\" in redis.conf, or \
                 --heatbridge.{name} on the command line)",
                crate::support::logging::show_bytes(value.as_bytes())
            ));
        }
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

/// Whether `CONFIG REWRITE` writes `value` back as the same loadmodule argument.
///
/// Redis 7.0, Redis 8.2 and Valkey 8.1 (`rewriteConfigLoadmoduleOption`) write each argument
/// after a space, as it is, without quotes; the server reads the line back with
/// `sdssplitargs`. A value survives that only if it is a single unquoted word: not empty,
/// no whitespace (`isspace`: space, tab, LF, VT, FF, CR), which would split it or be
/// skipped, no NUL, which would end it, and no `"` or `'`, which would start a quoted
/// string (unescaped differently, or "Unbalanced quotes"). Backslashes and other bytes are
/// copied verbatim in an unquoted word. (VT and FF inside a word would in fact survive;
/// they are refused for simplicity.)
pub fn survives_rewrite(value: &[u8]) -> bool {
    !value.is_empty()
        && !value.iter().any(|b| {
            matches!(
                b,
                b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | 0 | b'"' | b'\''
            )
        })
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
    let unset = PROJECT_AT.is_unset();
    note("project-at", unset);
    if unset {
        PROJECT_AT.fill(arg("project-at"));
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
    if name == "project-at" {
        if value.eq_ignore_ascii_case("command") || value.eq_ignore_ascii_case("turn") {
            return Ok(());
        }
        return Err("must be command or turn".into());
    }
    if name == "log-level" {
        if LOG_LEVELS.iter().any(|l| l.eq_ignore_ascii_case(value)) {
            return Ok(());
        }
        return Err(format!("must be one of {}", LOG_LEVELS.join(", ")));
    }
    Err("unknown setting".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;

    /// C's `isspace` in the "C" locale.
    fn c_isspace(b: u8) -> bool {
        matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
    }

    /// Redis's `sdssplitargs` (sds.c; the same in Redis 7.0, 8.2 and Valkey 8.1) over a
    /// C string: `None` where it reports unbalanced quotes.
    fn sdssplitargs(line: &[u8]) -> Option<Vec<Vec<u8>>> {
        let at = |i: usize| line.get(i).copied().unwrap_or(0);
        let hex = |b: u8| (b as char).to_digit(16);
        let mut p = 0;
        let mut out = Vec::new();
        loop {
            while at(p) != 0 && c_isspace(at(p)) {
                p += 1;
            }
            if at(p) == 0 {
                return Some(out);
            }
            let (mut inq, mut insq, mut done) = (false, false, false);
            let mut cur = Vec::new();
            while !done {
                let c = at(p);
                if inq {
                    if let (b'\\', b'x', Some(h), Some(l)) =
                        (c, at(p + 1), hex(at(p + 2)), hex(at(p + 3)))
                    {
                        cur.push((h * 16 + l) as u8);
                        p += 3;
                    } else if c == b'\\' && at(p + 1) != 0 {
                        p += 1;
                        cur.push(match at(p) {
                            b'n' => b'\n',
                            b'r' => b'\r',
                            b't' => b'\t',
                            b'b' => 8,
                            b'a' => 7,
                            o => o,
                        });
                    } else if c == b'"' {
                        if at(p + 1) != 0 && !c_isspace(at(p + 1)) {
                            return None;
                        }
                        done = true;
                    } else if c == 0 {
                        return None;
                    } else {
                        cur.push(c);
                    }
                } else if insq {
                    if c == b'\\' && at(p + 1) == b'\'' {
                        p += 1;
                        cur.push(b'\'');
                    } else if c == b'\'' {
                        if at(p + 1) != 0 && !c_isspace(at(p + 1)) {
                            return None;
                        }
                        done = true;
                    } else if c == 0 {
                        return None;
                    } else {
                        cur.push(c);
                    }
                } else {
                    match c {
                        b' ' | b'\n' | b'\r' | b'\t' | 0 => done = true,
                        b'"' => inq = true,
                        b'\'' => insq = true,
                        o => cur.push(o),
                    }
                }
                if at(p) != 0 {
                    p += 1;
                }
            }
            out.push(cur);
        }
    }

    /// What the server reads back from the loadmodule line that CONFIG REWRITE writes for
    /// `group <value>`: the file is split into lines, each trimmed, then split into words.
    fn reread(value: &[u8]) -> Option<Vec<Vec<u8>>> {
        let mut line = b"loadmodule /m/libheatbridge.so group ".to_vec();
        line.extend_from_slice(value);
        let first = line.split(|b| *b == b'\n').next().unwrap_or_default();
        let trim = |b: &u8| !matches!(b, b' ' | b'\t' | b'\r' | b'\n');
        let start = first.iter().position(trim).unwrap_or(first.len());
        let end = first.iter().rposition(trim).map_or(start, |e| e + 1);
        let trimmed = first.get(start..end).unwrap_or_default();
        let c_str = trimmed.split(|b| *b == 0).next().unwrap_or_default();
        sdssplitargs(c_str)
    }

    fn round_trips(value: &[u8]) -> bool {
        let want: Vec<Vec<u8>> = vec![
            b"loadmodule".to_vec(),
            b"/m/libheatbridge.so".to_vec(),
            b"group".to_vec(),
            value.to_vec(),
        ];
        reread(value) == Some(want)
    }

    #[test]
    fn the_reported_values_are_refused_and_plain_ones_kept() {
        for v in [
            &b"heat bridge"[..],
            b"say\"hi\"",
            b"it's",
            b"tab\there",
            b"line\nbreak",
            b"",
            b" lead",
            b"trail ",
        ] {
            assert!(!survives_rewrite(v), "{v:?}");
            assert!(!round_trips(v), "{v:?}");
        }
        for v in [
            &b"heat_bridge"[..],
            b"a\\x41",
            b"127.0.0.1",
            b"a,b",
            b"-1",
            b"\xc3\xa9",
        ] {
            assert!(survives_rewrite(v), "{v:?}");
            assert!(round_trips(v), "{v:?}");
        }
    }

    #[test]
    fn the_error_names_the_config_line() {
        let e = check_module_args(&[b"group", b"heat bridge"]).unwrap_err();
        assert!(e.contains("heatbridge.group"), "{e}");
        assert!(e.contains("CONFIG REWRITE"), "{e}");
        let e = check_module_args(&[b"consumer", b"x'y"]).unwrap_err();
        assert!(e.contains("heatbridge.consumer"), "{e}");
        assert!(check_module_args(&[b"group", b"heat_bridge"]).is_ok());
    }

    /// Bytes that matter to the config parser, and some that do not.
    fn value_byte() -> impl Strategy<Value = u8> {
        prop_oneof![
            4 => prop::sample::select(b"ab1_-.:\\x".to_vec()),
            2 => prop::sample::select(b" \t\n\r\"'\0".to_vec()),
            1 => any::<u8>(),
        ]
    }

    proptest! {
        /// A value the check accepts comes back from a rewritten file unchanged; one it
        /// refuses would not (except VT and FF inside a word, refused for simplicity).
        #[test]
        fn the_check_matches_the_config_parser(v in vec(value_byte(), 0..12)) {
            if survives_rewrite(&v) {
                prop_assert!(round_trips(&v), "{:?} accepted but changes", v);
            } else if !v.iter().any(|b| matches!(b, 0x0b | 0x0c)) {
                prop_assert!(!round_trips(&v), "{:?} refused but round-trips", v);
            }
        }
    }
}
