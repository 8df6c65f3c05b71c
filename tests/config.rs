//! Every `heatbridge.*` setting on real servers (CONTRACT §2): defaults, the four ways
//! to give them (loadmodule args, redis.conf lines, `--heatbridge.*` options, CONFIG SET),
//! validation that keeps the old value, CONFIG REWRITE and a restart.

mod common;
use common::*;

use std::time::Duration;

const BY_PLAN: &str = "quantum:harvest:heat:by_plan:";

/// Every setting with its CONTRACT default.
const DEFAULTS: [(&str, &str); 16] = [
    (
        "heatbridge.stream-in",
        "quantum:stream:harvest.heat.decision",
    ),
    ("heatbridge.group", "heat_bridge"),
    ("heatbridge.consumer", "heat_bridge_1"),
    ("heatbridge.poll-ms", "500"),
    ("heatbridge.batch", "10"),
    ("heatbridge.ttl-plan-sec", "1800"),
    ("heatbridge.ttl-symbol-sec", "1800"),
    ("heatbridge.dedupe-ttl-sec", "120"),
    ("heatbridge.metrics-port", "8070"),
    ("heatbridge.health-port", "8071"),
    ("heatbridge.bind", "127.0.0.1"),
    ("heatbridge.log-level", "INFO"),
    ("heatbridge.db", "0"),
    ("heatbridge.fast-path", "yes"),
    ("heatbridge.project-at", "command"),
    ("heatbridge.catchup-step-us", "1000"),
];

/// A server started from a config file, as CONFIG REWRITE needs (the harness's).
use common::ConfFileServer as ConfServer;

/// `loadmodule <module> <args>` with the exporter off.
fn loadmodule_line(args: &str) -> String {
    format!(
        "loadmodule {} metrics-port 0 health-port 0 {args}",
        module_path().display()
    )
}

/// Every `heatbridge.*` pair from `CONFIG GET heatbridge.*`, sorted.
fn all_settings(c: &mut Connection) -> Vec<(String, String)> {
    let v: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("heatbridge.*")
        .query(c)
        .expect("CONFIG GET heatbridge.*");
    let mut pairs: Vec<(String, String)> = v
        .chunks(2)
        .map(|kv| (kv[0].clone(), kv.get(1).cloned().unwrap_or_default()))
        .collect();
    pairs.sort();
    pairs
}

/// TTL of a projected by_plan key after injecting `plan_id` on `stream`.
fn projected_ttl(c: &mut Connection, stream: &str, plan_id: &str) -> i64 {
    xadd(c, stream, "*", &decision("SYM", plan_id, &[]));
    let key = format!("{BY_PLAN}{plan_id}");
    wait_for(10, &key, || exists(c, &key));
    ttl(c, &key)
}

/// Whether MODULE LIST names heatbridge (Redis 8.2 always lists vectorset too).
fn heatbridge_loaded(c: &mut Connection) -> bool {
    let list: redis::Value = redis::cmd("MODULE")
        .arg("LIST")
        .query(c)
        .expect("MODULE LIST");
    format!("{list:?}").contains("heatbridge")
}

fn module_load(c: &mut Connection, args: &[&str]) -> Result<(), String> {
    let mut cmd = redis::cmd("MODULE");
    cmd.arg("LOAD").arg(module_path().display().to_string());
    for a in args {
        cmd.arg(*a);
    }
    cmd.query::<()>(c).map_err(|e| e.to_string())
}

#[test]
fn every_setting_with_contract_defaults_when_loaded_without_args() {
    for_each_flavor(|flavor| {
        let s = Options::new(flavor).without_module().start();
        let mut c = s.conn();
        module_load(&mut c, &[]).expect("MODULE LOAD without args");
        let got = all_settings(&mut c);
        // The default ports are shared by the whole machine: let them go at once.
        config_set(&mut c, "heatbridge.metrics-port", "0").unwrap();
        config_set(&mut c, "heatbridge.health-port", "0").unwrap();
        let on_server = |k: &str, v: &str| {
            if k == "heatbridge.project-at" {
                project_at_on(flavor, v)
            } else {
                v.to_string()
            }
        };
        let mut want: Vec<(String, String)> = DEFAULTS
            .iter()
            .map(|(k, v)| (k.to_string(), on_server(k, v)))
            .collect();
        want.sort();
        assert_eq!(got, want);
        // Each one answers CONFIG GET by its own name too.
        for (name, value) in DEFAULTS {
            if !name.ends_with("-port") {
                assert_eq!(config_get(&mut c, name), on_server(name, value), "{name}");
            }
        }
    });
}

#[test]
fn module_load_args_apply() {
    for_each_flavor(|flavor| {
        let s = Options::new(flavor).without_module().start();
        let mut c = s.conn();
        module_load(
            &mut c,
            &[
                "ttl-plan-sec",
                "60",
                "dedupe-ttl-sec",
                "0",
                "log-level",
                "WARNING",
                "metrics-port",
                "0",
                "health-port",
                "0",
            ],
        )
        .expect("MODULE LOAD with args");
        assert_eq!(config_get(&mut c, "heatbridge.ttl-plan-sec"), "60");
        assert_eq!(config_get(&mut c, "heatbridge.dedupe-ttl-sec"), "0");
        assert_eq!(config_get(&mut c, "heatbridge.log-level"), "WARNING");
        assert_eq!(config_get(&mut c, "heatbridge.metrics-port"), "0");
        let t = projected_ttl(&mut c, STREAM, "args1");
        assert!((55..=60).contains(&t), "TTL {t}");
        // dedupe-ttl-sec 0: the same plan_id again is projected, not skipped.
        xadd(
            &mut c,
            STREAM,
            "*",
            &decision("SYM", "args1", &[("heat_level", "hot")]),
        );
        wait_drained(&mut c);
        assert_eq!(
            hget(&mut c, &format!("{BY_PLAN}args1"), "heat_level").as_deref(),
            Some("hot")
        );
        assert_eq!(metric(&mut c, "p27_dedupe_skips_total"), 0.0);
    });
}

// Module args become registered defaults, which the server does not check: without
// config::check_module_redis_args in init, `ttl-plan-sec -1` loaded as -1 and `stream-in ""`
// crashed Valkey 8.1 (an unload after init with a timer pending).
#[test]
fn invalid_module_load_args_refuse_the_load() {
    for_each_flavor(|flavor| {
        let s = Options::new(flavor).without_module().start();
        let mut c = s.conn();
        for args in [
            &["ttl-plan-sec", "-1"][..],
            &["metrics-port", "65536"],
            &["stream-in", ""],
            &["log-level", "LOUD"],
            &["no-such-setting", "1"],
        ] {
            let mut all = vec!["metrics-port", "0", "health-port", "0"];
            all.extend_from_slice(args);
            let r = module_load(&mut c, &all);
            assert!(r.is_err(), "{args:?} loaded");
            assert!(!heatbridge_loaded(&mut c), "{args:?}: module left loaded");
        }
        // The server is fine and a good load still works.
        module_load(&mut c, &["metrics-port", "0", "health-port", "0"]).unwrap();
        assert_eq!(config_get(&mut c, "heatbridge.ttl-plan-sec"), "1800");
    });
}

#[test]
fn redis_conf_lines_apply() {
    for_each_flavor(|flavor| {
        let s = ConfServer::start(
            flavor,
            &[
                loadmodule_line(""),
                "heatbridge.ttl-plan-sec 77".into(),
                "heatbridge.group conf_group".into(),
                "heatbridge.log-level DEBUG".into(),
            ],
        );
        let mut c = s.conn();
        assert_eq!(config_get(&mut c, "heatbridge.ttl-plan-sec"), "77");
        assert_eq!(config_get(&mut c, "heatbridge.group"), "conf_group");
        assert_eq!(config_get(&mut c, "heatbridge.log-level"), "DEBUG");
        let t = projected_ttl(&mut c, STREAM, "conf1");
        assert!((72..=77).contains(&t), "TTL {t}");
        assert!(group_field(&mut c, STREAM, "conf_group", "name").is_some());

        // A setting line may also come before the loadmodule line.
        let s = ConfServer::start(
            flavor,
            &["heatbridge.ttl-plan-sec 78".into(), loadmodule_line("")],
        );
        let mut c = s.conn();
        assert_eq!(config_get(&mut c, "heatbridge.ttl-plan-sec"), "78");
    });
}

/// Starts a server from `lines` plus command-line `args` that must refuse to start: it exits
/// with an error of its own, not a crash, within 10 s. Returns its log.
fn refused_at_start(flavor: Flavor, lines: &[String], args: &[&str]) -> String {
    let mut opts = Options::conf_file(flavor, lines);
    opts.args = args.iter().map(|a| a.to_string()).collect();
    opts.start_refused()
}

#[test]
fn invalid_redis_conf_lines_and_options_refuse_to_start() {
    for_each_flavor(|flavor| {
        for bad in [
            "heatbridge.stream-in \"\"",
            "heatbridge.group \"\"",
            "heatbridge.consumer \"\"",
            "heatbridge.bind \"\"",
            "heatbridge.bind foo",
            "heatbridge.ttl-plan-sec -5",
            "heatbridge.metrics-port 65536",
            "heatbridge.log-level LOUD",
            "heatbridge.batch 0",
        ] {
            let log = refused_at_start(flavor, &[loadmodule_line(""), bad.to_string()], &[]);
            let name = bad.split(' ').next().unwrap_or_default();
            assert!(
                log.contains(name),
                "{bad}: the log names the setting\n{log}"
            );
        }
        refused_at_start(
            flavor,
            &[loadmodule_line("")],
            &["--heatbridge.stream-in", ""],
        );
    });
}

#[test]
fn command_line_options_apply() {
    for_each_flavor(|flavor| {
        let s = Options::new(flavor)
            .without_exporter()
            .arg("--heatbridge.ttl-plan-sec", "66")
            .arg("--heatbridge.ttl-symbol-sec", "55")
            .arg("--heatbridge.batch", "3")
            .start();
        let mut c = s.conn();
        assert_eq!(config_get(&mut c, "heatbridge.ttl-plan-sec"), "66");
        assert_eq!(config_get(&mut c, "heatbridge.ttl-symbol-sec"), "55");
        assert_eq!(config_get(&mut c, "heatbridge.batch"), "3");
        let t = projected_ttl(&mut c, STREAM, "cli1");
        assert!((61..=66).contains(&t), "TTL {t}");
        let t = ttl(&mut c, "quantum:harvest:heat:latest:SYM");
        assert!((50..=55).contains(&t), "latest TTL {t}");
    });
}

#[test]
fn config_set_takes_effect_at_once() {
    for_each_flavor(|flavor| {
        let s = Options::new(flavor).without_exporter().start();
        let mut c = s.conn();
        assert!((1795..=1800).contains(&projected_ttl(&mut c, STREAM, "set0")));

        config_set(&mut c, "heatbridge.ttl-plan-sec", "100").unwrap();
        config_set(&mut c, "heatbridge.ttl-symbol-sec", "90").unwrap();
        let t = projected_ttl(&mut c, STREAM, "set1");
        assert!((95..=100).contains(&t), "TTL {t}");
        let t = ttl(&mut c, "quantum:harvest:heat:latest_plan_id:SYM");
        assert!((85..=90).contains(&t), "pointer TTL {t}");

        // The input stream switches: the new one is projected, the old one no longer.
        let other = "other:stream:in";
        config_set(&mut c, "heatbridge.stream-in", other).unwrap();
        assert_eq!(config_get(&mut c, "heatbridge.stream-in"), other);
        let t = projected_ttl(&mut c, other, "set2");
        assert!((95..=100).contains(&t), "TTL {t}");
        assert!(group_field(&mut c, other, "heat_bridge", "name").is_some());
        xadd(&mut c, STREAM, "*", &decision("SYM", "old_stream", &[]));
        std::thread::sleep(Duration::from_millis(300));
        assert!(!exists(&mut c, &format!("{BY_PLAN}old_stream")));
        let info: String = redis::cmd("INFO").arg("heatbridge").query(&mut c).unwrap();
        assert!(
            info.contains(&format!("heatbridge_stream:{other}")),
            "{info}"
        );

        // Back to the default stream: the entry left behind is caught up.
        config_set(&mut c, "heatbridge.stream-in", STREAM).unwrap();
        xadd(&mut c, STREAM, "*", &decision("SYM", "back", &[]));
        wait_for(10, "catch-up on the old stream", || {
            exists(&mut c, &format!("{BY_PLAN}old_stream"))
                && exists(&mut c, &format!("{BY_PLAN}back"))
        });

        // A new group and consumer are used from the next entry on.
        config_set(&mut c, "heatbridge.group", "g2").unwrap();
        config_set(&mut c, "heatbridge.consumer", "c2").unwrap();
        projected_ttl(&mut c, STREAM, "set3");
        assert!(group_field(&mut c, STREAM, "g2", "name").is_some());
        wait_for(10, "g2 drained", || {
            group_field(&mut c, STREAM, "g2", "pending").as_deref() == Some("0")
                && group_field(&mut c, STREAM, "g2", "lag").as_deref() == Some("0")
        });

        // The dedupe window: off, then on again.
        config_set(&mut c, "heatbridge.dedupe-ttl-sec", "0").unwrap();
        xadd(&mut c, STREAM, "*", &decision("SYM", "dd", &[]));
        xadd(
            &mut c,
            STREAM,
            "*",
            &decision("SYM", "dd", &[("heat_level", "hot")]),
        );
        wait_for(10, "second dd projected", || {
            hget(&mut c, &format!("{BY_PLAN}dd"), "heat_level").as_deref() == Some("hot")
        });
        assert!(!exists(&mut c, "quantum:dedupe:p27:dd"));
        config_set(&mut c, "heatbridge.dedupe-ttl-sec", "50").unwrap();
        xadd(&mut c, STREAM, "*", &decision("SYM", "dd2", &[]));
        let key = "quantum:dedupe:p27:dd2";
        wait_for(10, key, || exists(&mut c, key));
        let t = ttl(&mut c, key);
        assert!((45..=50).contains(&t), "dedupe TTL {t}");

        // The rest are accepted and read back.
        for (name, value) in [
            ("heatbridge.batch", "200"),
            ("heatbridge.poll-ms", "100"),
            ("heatbridge.bind", "0.0.0.0"),
            ("heatbridge.bind", "::1"),
            ("heatbridge.bind", "127.0.0.1"),
        ] {
            config_set(&mut c, name, value).unwrap_or_else(|e| panic!("{name} {value}: {e}"));
            assert_eq!(config_get(&mut c, name), value);
        }
    });
}

#[test]
fn invalid_values_are_refused_and_the_old_value_stays() {
    for_each_flavor(|flavor| {
        let s = Options::new(flavor).without_exporter().start();
        let mut c = s.conn();
        let long = "x".repeat(2000);
        for (name, bad) in [
            ("heatbridge.ttl-plan-sec", "-1"),
            ("heatbridge.ttl-plan-sec", "0"),
            ("heatbridge.ttl-plan-sec", "abc"),
            ("heatbridge.ttl-symbol-sec", "-5"),
            ("heatbridge.dedupe-ttl-sec", "-1"),
            ("heatbridge.metrics-port", "65536"),
            ("heatbridge.metrics-port", "-1"),
            ("heatbridge.health-port", "70000"),
            ("heatbridge.stream-in", ""),
            ("heatbridge.stream-in", "a\nb"),
            ("heatbridge.stream-in", &long),
            ("heatbridge.group", ""),
            ("heatbridge.consumer", ""),
            ("heatbridge.bind", "not-an-address"),
            ("heatbridge.bind", ""),
            ("heatbridge.bind", "256.0.0.1"),
            ("heatbridge.log-level", "LOUD"),
            ("heatbridge.log-level", ""),
            ("heatbridge.batch", "0"),
            ("heatbridge.batch", "-3"),
            ("heatbridge.poll-ms", "0"),
            ("heatbridge.poll-ms", "x"),
        ] {
            let before = config_get(&mut c, name);
            let e = config_set(&mut c, name, bad).expect_err(&format!("{name} {bad:?} accepted"));
            assert!(e.contains("ERR") || e.contains("CONFIG SET failed"), "{e}");
            assert_eq!(
                config_get(&mut c, name),
                before,
                "{name} changed by {bad:?}"
            );
        }
        // Still projecting with the old values.
        let t = projected_ttl(&mut c, STREAM, "still");
        assert!((1795..=1800).contains(&t), "TTL {t}");

        // A multi-setting CONFIG SET with one bad value changes nothing.
        let r = redis::cmd("CONFIG")
            .arg("SET")
            .arg("heatbridge.ttl-plan-sec")
            .arg("42")
            .arg("heatbridge.metrics-port")
            .arg("65536")
            .query::<()>(&mut c);
        assert!(r.is_err());
        assert_eq!(config_get(&mut c, "heatbridge.ttl-plan-sec"), "1800");
    });
}

#[test]
fn log_levels_are_accepted() {
    for_each_flavor(|flavor| {
        let s = Options::new(flavor).without_exporter().start();
        let mut c = s.conn();
        for level in ["DEBUG", "INFO", "WARNING", "ERROR"] {
            config_set(&mut c, "heatbridge.log-level", level).unwrap();
            assert_eq!(config_get(&mut c, "heatbridge.log-level"), level);
        }
        config_set(&mut c, "heatbridge.log-level", "debug").unwrap();
        assert_eq!(config_get(&mut c, "heatbridge.log-level"), "DEBUG");
        // Under ERROR an invalid entry (a WARNING line) is not logged; under DEBUG it is.
        config_set(&mut c, "heatbridge.log-level", "ERROR").unwrap();
        redis::cmd("XADD")
            .arg(STREAM)
            .arg("*")
            .arg("symbol")
            .arg("quiet")
            .query::<String>(&mut c)
            .unwrap();
        wait_drained(&mut c);
        assert_eq!(metric(&mut c, "p27_errors_total{stage=\"parse\"}"), 1.0);
        let quiet = s
            .log()
            .lines()
            .filter(|l| l.contains("missing field"))
            .count();
        assert_eq!(quiet, 0, "{}", s.log());
        config_set(&mut c, "heatbridge.log-level", "DEBUG").unwrap();
        // The invalid-entry log is limited to one line per second.
        std::thread::sleep(Duration::from_millis(1100));
        redis::cmd("XADD")
            .arg(STREAM)
            .arg("*")
            .arg("symbol")
            .arg("loud")
            .query::<String>(&mut c)
            .unwrap();
        wait_drained(&mut c);
        wait_for(5, "invalid entry logged", || {
            s.log().lines().any(|l| l.contains("missing field"))
        });
    });
}

/// The value of a `heatbridge.<name>` line in a config file.
fn conf_value(conf: &str, name: &str) -> Option<String> {
    conf.lines().find_map(|l| {
        let (k, v) = l.trim().split_once(' ')?;
        (k == name).then(|| v.trim().trim_matches('"').to_string())
    })
}

#[test]
fn config_rewrite_persists_and_a_restart_picks_it_up() {
    for_each_flavor(|flavor| {
        let mut s = ConfServer::start(
            flavor,
            &[
                loadmodule_line("ttl-plan-sec 60"),
                "heatbridge.ttl-symbol-sec 70".into(),
            ],
        );
        let mut c = s.conn();
        assert_eq!(config_get(&mut c, "heatbridge.ttl-plan-sec"), "60");
        assert_eq!(config_get(&mut c, "heatbridge.ttl-symbol-sec"), "70");
        for (name, value) in [
            ("heatbridge.ttl-plan-sec", "99"),
            ("heatbridge.ttl-symbol-sec", "88"),
            ("heatbridge.stream-in", "rewritten:stream"),
            ("heatbridge.log-level", "WARNING"),
            ("heatbridge.batch", "25"),
        ] {
            config_set(&mut c, name, value).unwrap();
        }
        redis::cmd("CONFIG")
            .arg("REWRITE")
            .query::<()>(&mut c)
            .expect("CONFIG REWRITE");
        let conf = s.conf();
        for (name, value) in [
            ("heatbridge.ttl-plan-sec", "99"),
            ("heatbridge.ttl-symbol-sec", "88"),
            ("heatbridge.stream-in", "rewritten:stream"),
            ("heatbridge.log-level", "WARNING"),
            ("heatbridge.batch", "25"),
        ] {
            assert_eq!(
                conf_value(&conf, name).as_deref(),
                Some(value),
                "{name} in\n{conf}"
            );
        }
        drop(c);

        s.restart();
        let mut c = s.conn();
        assert_eq!(config_get(&mut c, "heatbridge.ttl-symbol-sec"), "88");
        assert_eq!(
            config_get(&mut c, "heatbridge.stream-in"),
            "rewritten:stream"
        );
        assert_eq!(config_get(&mut c, "heatbridge.log-level"), "WARNING");
        assert_eq!(config_get(&mut c, "heatbridge.batch"), "25");
        // The rewritten value, not the loadmodule argument it replaced.
        assert_eq!(config_get(&mut c, "heatbridge.ttl-plan-sec"), "99");
        let t = projected_ttl(&mut c, "rewritten:stream", "rw1");
        assert!((94..=99).contains(&t), "TTL {t}");
    });
}

/// CONFIG SET of several settings in one command.
fn config_set_many(c: &mut Connection, pairs: &[(&str, &str)]) -> Result<(), String> {
    let mut cmd = redis::cmd("CONFIG");
    cmd.arg("SET");
    for (k, v) in pairs {
        cmd.arg(*k).arg(*v);
    }
    cmd.query::<()>(c).map_err(|e| e.to_string())
}

fn config_rewrite(c: &mut Connection) {
    redis::cmd("CONFIG")
        .arg("REWRITE")
        .query::<()>(c)
        .expect("CONFIG REWRITE");
}

// Before the marker defaults, the server skipped the setter for a line equal to the current
// value (the default), so init could not tell the line from no line and the argument won.
#[test]
fn a_config_line_equal_to_the_default_wins_over_a_module_argument() {
    for_each_flavor(|flavor| {
        let s = ConfServer::start(
            flavor,
            &[
                loadmodule_line("batch 20 group arg_group log-level DEBUG ttl-plan-sec 60"),
                "heatbridge.batch 10".into(),
                "heatbridge.group heat_bridge".into(),
                "heatbridge.log-level INFO".into(),
            ],
        );
        let mut c = s.conn();
        assert_eq!(config_get(&mut c, "heatbridge.batch"), "10");
        assert_eq!(config_get(&mut c, "heatbridge.group"), "heat_bridge");
        assert_eq!(config_get(&mut c, "heatbridge.log-level"), "INFO");
        // No line for it: the argument applies.
        assert_eq!(config_get(&mut c, "heatbridge.ttl-plan-sec"), "60");
        assert!(
            s.log()
                .contains("heatbridge.batch: the config line wins over the loadmodule argument"),
            "{}",
            s.log()
        );

        // The same from the command line.
        let s = Options::new(flavor)
            .without_exporter()
            .module_arg("batch", "20")
            .module_arg("dedupe-ttl-sec", "7")
            .arg("--heatbridge.batch", "10")
            .start();
        let mut c = s.conn();
        assert_eq!(config_get(&mut c, "heatbridge.batch"), "10");
        assert_eq!(config_get(&mut c, "heatbridge.dedupe-ttl-sec"), "7");
    });
}

// CONFIG REWRITE omitted a value equal to the registered default, so `batch 10` was not
// written and the restart came back with the argument, 20.
#[test]
fn config_set_to_the_default_survives_rewrite_and_restart_over_an_argument() {
    for_each_flavor(|flavor| {
        let mut s = ConfServer::start(flavor, &[loadmodule_line("batch 20 poll-ms 250")]);
        let mut c = s.conn();
        assert_eq!(config_get(&mut c, "heatbridge.batch"), "20");
        config_set(&mut c, "heatbridge.batch", "10").unwrap();
        config_rewrite(&mut c);
        assert_eq!(
            conf_value(&s.conf(), "heatbridge.batch").as_deref(),
            Some("10")
        );
        drop(c);
        s.restart();
        let mut c = s.conn();
        assert_eq!(config_get(&mut c, "heatbridge.batch"), "10");
        // The rewrite wrote the argument's value too: it is a config line now.
        assert_eq!(config_get(&mut c, "heatbridge.poll-ms"), "250");
    });
}

#[test]
fn config_rewrite_writes_every_setting_and_a_restart_round_trips_them() {
    for_each_flavor(|flavor| {
        let mut s = ConfServer::start(flavor, &[loadmodule_line("consumer arg_consumer")]);
        let mut c = s.conn();
        let before = all_settings(&mut c);
        config_rewrite(&mut c);
        let conf = s.conf();
        for (name, value) in &before {
            assert_eq!(
                conf_value(&conf, name).as_deref(),
                Some(value.as_str()),
                "{name} in\n{conf}"
            );
        }
        drop(c);
        s.restart();
        let mut c = s.conn();
        assert_eq!(all_settings(&mut c), before);
    });
}

#[test]
fn a_reload_forgets_the_previous_arguments() {
    for_each_flavor(|flavor| {
        let s = Options::new(flavor).without_module().start();
        let mut c = s.conn();
        let off = ["metrics-port", "0", "health-port", "0"];
        let mut args = off.to_vec();
        args.extend([
            "batch",
            "20",
            "stream-in",
            "other:stream",
            "log-level",
            "ERROR",
        ]);
        module_load(&mut c, &args).unwrap();
        config_set(&mut c, "heatbridge.ttl-plan-sec", "99").unwrap();
        let _: () = redis::cmd("MODULE")
            .arg("UNLOAD")
            .arg("heatbridge")
            .query(&mut c)
            .unwrap();
        module_load(&mut c, &off).unwrap();
        assert_eq!(config_get(&mut c, "heatbridge.batch"), "10");
        assert_eq!(config_get(&mut c, "heatbridge.stream-in"), STREAM);
        assert_eq!(config_get(&mut c, "heatbridge.log-level"), "INFO");
        assert_eq!(config_get(&mut c, "heatbridge.ttl-plan-sec"), "1800");
    });
}

// metrics-port equal to health-port was accepted, and one endpoint retried forever.
#[test]
fn the_two_endpoints_never_share_a_port() {
    for_each_flavor(|flavor| {
        let s = Server::new(flavor);
        let mut c = s.conn();
        let (m, h) = (s.metrics_port.to_string(), s.health_port.to_string());
        let e = config_set(&mut c, "heatbridge.metrics-port", &h).unwrap_err();
        assert!(e.contains("different ports"), "{e}");
        let e = config_set(&mut c, "heatbridge.health-port", &m).unwrap_err();
        assert!(e.contains("different ports"), "{e}");
        assert_eq!(config_get(&mut c, "heatbridge.metrics-port"), m);
        assert_eq!(config_get(&mut c, "heatbridge.health-port"), h);
        // A swap in one CONFIG SET: the server sets the values in order, each is checked
        // as it is set, and one refusal rolls the whole command back.
        assert!(config_set_many(
            &mut c,
            &[
                ("heatbridge.metrics-port", &h),
                ("heatbridge.health-port", &m)
            ]
        )
        .is_err());
        assert_eq!(config_get(&mut c, "heatbridge.metrics-port"), m);
        assert_eq!(config_get(&mut c, "heatbridge.health-port"), h);
        // In an order where each step is valid, it goes through (the servers refuse one
        // name twice in a command, hence two commands).
        config_set_many(
            &mut c,
            &[
                ("heatbridge.metrics-port", "0"),
                ("heatbridge.health-port", &m),
            ],
        )
        .expect("metrics off, health to the old metrics port");
        config_set(&mut c, "heatbridge.metrics-port", &h).expect("metrics to the old health port");
        assert_eq!(config_get(&mut c, "heatbridge.metrics-port"), h);
        assert_eq!(config_get(&mut c, "heatbridge.health-port"), m);
        // Both off is fine.
        config_set(&mut c, "heatbridge.metrics-port", "0").unwrap();
        config_set(&mut c, "heatbridge.health-port", "0").unwrap();

        // At load: arguments, config lines, or one of each.
        let _: () = redis::cmd("MODULE")
            .arg("UNLOAD")
            .arg("heatbridge")
            .query(&mut c)
            .unwrap();
        let p = free_port().to_string();
        assert!(module_load(&mut c, &["metrics-port", &p, "health-port", &p]).is_err());
        assert!(!heatbridge_loaded(&mut c));
        assert!(s.log().contains("the endpoints need different ports"));
        module_load(&mut c, &["metrics-port", &p, "health-port", "0"]).expect("load");

        let log = refused_at_start(
            flavor,
            &[
                format!("loadmodule {} metrics-port {p}", module_path().display()),
                format!("heatbridge.health-port {p}"),
            ],
            &[],
        );
        assert!(log.contains("the endpoints need different ports"), "{log}");
        refused_at_start(
            flavor,
            &[format!("loadmodule {}", module_path().display())],
            &[
                "--heatbridge.metrics-port",
                &p,
                "--heatbridge.health-port",
                &p,
            ],
        );
    });
}

/// `value` as a double-quoted word of a config file (what `sdssplitargs` reads back as
/// `value`).
fn conf_quoted(value: &str) -> String {
    let mut q = String::from("\"");
    for ch in value.chars() {
        match ch {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            '\t' => q.push_str("\\t"),
            c => q.push(c),
        }
    }
    q.push('"');
    q
}

/// Values a quoted config word can hold but that Redis writes back unquoted into the
/// loadmodule line.
const UNWRITABLE: [&str; 4] = ["heat bridge", "it's", "say\"hi\"", "tab\there"];

// Redis 7.0, 8.2 and Valkey 8.1 write loadmodule arguments back unquoted on CONFIG REWRITE:
// `group "heat bridge"` loaded, the rewrite made it `group heat bridge`, and the restart
// aborted ("module arguments must be NAME VALUE pairs", or "Unbalanced quotes" for a quote).
// Such values are refused at load, in redis.conf and by MODULE LOAD, pointing to the
// heatbridge.* line, which CONFIG REWRITE quotes correctly.
#[test]
fn loadmodule_values_that_config_rewrite_cannot_write_back_are_refused() {
    for_each_flavor(|flavor| {
        for value in UNWRITABLE {
            let line = loadmodule_line(&format!("group {}", conf_quoted(value)));
            let log = refused_at_start(flavor, &[line], &[]);
            assert!(log.contains("heatbridge.group"), "{value:?}:\n{log}");
        }
        let s = Options::new(flavor).without_module().start();
        let mut c = s.conn();
        for value in UNWRITABLE {
            let r = module_load(
                &mut c,
                &["metrics-port", "0", "health-port", "0", "consumer", value],
            );
            assert!(r.is_err(), "{value:?} loaded");
            assert!(!heatbridge_loaded(&mut c), "{value:?}: module left loaded");
        }
        assert!(s.log().contains("heatbridge.consumer"), "{}", s.log());
    });
}

// What the refusal points to: the same values as heatbridge.* lines, and plain words as
// loadmodule arguments, come back exactly after CONFIG REWRITE and a restart.
#[test]
fn config_lines_with_spaces_and_quotes_survive_rewrite_and_restart() {
    for_each_flavor(|flavor| {
        let mut s = ConfServer::start(
            flavor,
            &[
                loadmodule_line("consumer plain_arg-1 batch 17"),
                format!("heatbridge.group {}", conf_quoted(UNWRITABLE[0])),
            ],
        );
        let mut c = s.conn();
        assert_eq!(config_get(&mut c, "heatbridge.group"), UNWRITABLE[0]);
        // (A tab is no valid group name in any form.)
        for value in UNWRITABLE.into_iter().take(3) {
            config_set(&mut c, "heatbridge.group", value).unwrap();
            config_rewrite(&mut c);
            drop(c);
            s.restart();
            c = s.conn();
            assert_eq!(config_get(&mut c, "heatbridge.group"), value);
            assert_eq!(config_get(&mut c, "heatbridge.consumer"), "plain_arg-1");
            assert_eq!(config_get(&mut c, "heatbridge.batch"), "17");
        }
    });
}
