//! The HEATBRIDGE.* commands on real servers (CONTRACT §6): HEALTH and METRICS against the
//! exporter, GET and LATEST in RESP2 and RESP3 with ACL checks, REPLAY with paging, bounds and
//! replica refusal, the command flags, and the `INFO heatbridge` section.

mod common;
use common::*;

use std::collections::BTreeSet;

use redis::Value;

const BY_PLAN: &str = "quantum:harvest:heat:by_plan:";
const LATEST: &str = "quantum:harvest:heat:latest:";
const POINTER: &str = "quantum:harvest:heat:latest_plan_id:";

/// Runs a command and returns its raw reply, panicking on an error reply.
fn call(c: &mut Connection, args: &[&str]) -> Value {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query(c)
        .unwrap_or_else(|e| panic!("{args:?} failed: {e}"))
}

/// Runs a command that must fail and returns the error as `CODE detail`.
fn call_err(c: &mut Connection, args: &[&str]) -> String {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    match cmd.query::<Value>(c) {
        Ok(v) => panic!("{args:?} should fail, got {v:?}"),
        Err(e) => format!(
            "{} {}",
            e.code().unwrap_or("?"),
            e.detail().unwrap_or_default()
        ),
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::VerbatimString { text, .. } => text.clone(),
        Value::Int(i) => i.to_string(),
        Value::Okay => "OK".into(),
        other => panic!("not a string: {other:?}"),
    }
}

/// A RESP2 flat array of field/value pairs, sorted.
fn flat_pairs(v: &Value) -> Vec<(String, String)> {
    let Value::Array(items) = v else {
        panic!("expected a flat array in RESP2, got {v:?}");
    };
    assert_eq!(items.len() % 2, 0, "odd-length reply {items:?}");
    let mut out: Vec<(String, String)> = items
        .chunks(2)
        .map(|kv| (text(&kv[0]), text(&kv[1])))
        .collect();
    out.sort();
    out
}

/// A RESP3 map of field/value pairs, sorted.
fn map_pairs(v: &Value) -> Vec<(String, String)> {
    let Value::Map(items) = v else {
        panic!("expected a map in RESP3, got {v:?}");
    };
    let mut out: Vec<(String, String)> = items.iter().map(|(k, v)| (text(k), text(v))).collect();
    out.sort();
    out
}

/// A connection switched to RESP3.
fn resp3(s: &Server) -> Connection {
    let mut c = s.conn();
    let hello = call(&mut c, &["HELLO", "3"]);
    assert!(matches!(hello, Value::Map(_)), "HELLO 3 reply {hello:?}");
    c
}

/// A connection authenticated as `user`.
fn conn_as(s: &Server, user: &str, pass: &str) -> Connection {
    let mut c = s.conn();
    assert_eq!(text(&call(&mut c, &["AUTH", user, pass])), "OK");
    c
}

/// The series names (labels included) and every comment line of a metrics text.
fn shape(metrics: &str) -> Vec<String> {
    metrics
        .lines()
        .map(|l| {
            if l.starts_with('#') {
                l.to_string()
            } else {
                l.rsplit_once(' ')
                    .map(|(series, _)| series.to_string())
                    .unwrap_or_else(|| panic!("bad metrics line {l:?}"))
            }
        })
        .collect()
}

/// `REPLAY ...` → (re-projected, last-id).
fn replay(c: &mut Connection, args: &[&str]) -> (i64, String) {
    let mut all = vec!["HEATBRIDGE.REPLAY"];
    all.extend_from_slice(args);
    match call(c, &all) {
        Value::Array(v) if v.len() == 2 => match &v[0] {
            Value::Int(n) => (*n, text(&v[1])),
            other => panic!("REPLAY count is not an integer: {other:?}"),
        },
        other => panic!("REPLAY reply {other:?}"),
    }
}

/// `GET path` on the exporter, waiting up to 10 s for the endpoint to answer: the exporter
/// binds on its own thread, a moment after the server is ready.
fn http_get_retrying(s: &Server, port: u16, path: &str) -> (u16, String, String) {
    let mut got = None;
    let mut tries = 0;
    wait_for(10, &format!("GET {path} on port {port}"), || {
        tries += 1;
        got = s.http_get(port, path);
        got.is_some()
    });
    if tries > 1 {
        eprintln!("GET {path} answered after {tries} tries");
    }
    got.expect("a response")
}

/// One `INFO` field (`name:value`), if present.
fn info_field(info: &str, name: &str) -> Option<String> {
    info.lines().find_map(|l| {
        let (k, v) = l.trim_end().split_once(':')?;
        (k == name).then(|| v.to_string())
    })
}

#[test]
fn health_is_the_same_json_as_get_health() {
    for_each_flavor(|flavor| {
        let s = Server::new(flavor);
        let mut c = s.conn();
        inject(&mut c, "BTCUSDT", "h1");
        wait_drained(&mut c);

        let raw: String = redis::cmd("HEATBRIDGE.HEALTH").query(&mut c).unwrap();
        let cmd: serde_json::Value = serde_json::from_str(&raw).expect("valid JSON");
        for field in ["status", "last_ts_epoch", "last_loop_ms", "backlog"] {
            assert!(cmd.get(field).is_some(), "{field} missing from {raw}");
        }
        assert_eq!(cmd["status"], "ok");
        assert_eq!(cmd["last_ts_epoch"], 1735689600);
        assert!(cmd["last_loop_ms"].is_number());
        assert_eq!(cmd["backlog"], 0);

        let (code, _, body) = http_get_retrying(&s, s.health_port, "/health");
        assert_eq!(code, 200);
        let http: serde_json::Value = serde_json::from_str(&body).expect("valid JSON");
        let keys = |v: &serde_json::Value| -> BTreeSet<String> {
            v.as_object().expect("object").keys().cloned().collect()
        };
        assert_eq!(keys(&cmd), keys(&http), "same fields\n{raw}\n{body}");
        for field in [
            "status",
            "last_ts_epoch",
            "backlog",
            "role",
            "stream",
            "group",
        ] {
            assert_eq!(cmd.get(field), http.get(field), "{field}\n{raw}\n{body}");
        }

        let e = call_err(&mut c, &["HEATBRIDGE.HEALTH", "extra"]);
        assert!(e.contains("wrong number of arguments"), "{e}");
    });
}

#[test]
fn metrics_is_the_same_text_as_get_metrics() {
    for_each_flavor(|flavor| {
        let s = Server::new(flavor);
        let mut c = s.conn();
        inject(&mut c, "BTCUSDT", "m1");
        inject(&mut c, "BTCUSDT", "m1");
        inject(&mut c, "ETHUSDT", "m2");
        wait_drained(&mut c);

        let cmd = metrics_text(&mut c);
        let (code, head, http) = http_get_retrying(&s, s.metrics_port, "/metrics");
        assert_eq!(code, 200);
        assert!(head.contains("text/plain; version=0.0.4"), "{head}");
        assert_eq!(shape(&cmd), shape(&http), "same series in the same order");
        for series in [
            "p27_in_messages_total",
            "p27_written_total{kind=\"by_plan\"}",
            "p27_written_total{kind=\"latest_symbol\"}",
            "p27_dedupe_skips_total",
            "p27_errors_total{stage=\"parse\"}",
            "p27_last_ts_epoch",
        ] {
            assert_eq!(sample(&cmd, series), sample(&http, series), "{series}");
        }
        assert_eq!(sample(&cmd, "p27_in_messages_total"), Some(3.0));
        assert_eq!(
            sample(&cmd, "p27_written_total{kind=\"by_plan\"}"),
            Some(2.0)
        );
        assert_eq!(sample(&cmd, "p27_dedupe_skips_total"), Some(1.0));

        let e = call_err(&mut c, &["HEATBRIDGE.METRICS", "extra"]);
        assert!(e.contains("wrong number of arguments"), "{e}");
    });
}

#[test]
fn get_and_latest_reply_a_flat_array_in_resp2_and_a_map_in_resp3() {
    for_each_flavor(|flavor| {
        let s = Options::new(flavor).without_exporter().start();
        let mut c = s.conn();
        let fields = decision("BTCUSDT", "g1", &[("extra_field", "x")]);
        xadd(&mut c, STREAM, "*", &fields);
        wait_drained(&mut c);
        let mut expected: Vec<(String, String)> = fields.clone();
        expected.sort();
        let mut expected_latest = fields.clone();
        expected_latest.push(("last_plan_id".into(), "g1".into()));
        expected_latest.sort();
        assert_eq!(hgetall(&mut c, &format!("{BY_PLAN}g1")), expected);

        // RESP2: flat arrays equal to HGETALL; nil for a missing key.
        let got = call(&mut c, &["HEATBRIDGE.GET", "g1"]);
        assert_eq!(flat_pairs(&got), expected);
        let got = call(&mut c, &["HEATBRIDGE.LATEST", "BTCUSDT"]);
        assert_eq!(flat_pairs(&got), expected_latest);
        assert_eq!(call(&mut c, &["HEATBRIDGE.GET", "nope"]), Value::Nil);
        assert_eq!(call(&mut c, &["HEATBRIDGE.LATEST", "NOPE"]), Value::Nil);

        // RESP3: maps; nil for a missing key.
        let mut c3 = resp3(&s);
        let got = call(&mut c3, &["HEATBRIDGE.GET", "g1"]);
        assert_eq!(map_pairs(&got), expected);
        let got = call(&mut c3, &["HEATBRIDGE.LATEST", "BTCUSDT"]);
        assert_eq!(map_pairs(&got), expected_latest);
        assert_eq!(call(&mut c3, &["HEATBRIDGE.GET", "nope"]), Value::Nil);
        assert_eq!(call(&mut c3, &["HEATBRIDGE.LATEST", "NOPE"]), Value::Nil);

        // A key of another type under the derived name is not a hash: WRONGTYPE, as HGETALL.
        redis::cmd("SET")
            .arg(format!("{BY_PLAN}str"))
            .arg("v")
            .query::<()>(&mut c)
            .unwrap();
        let e = call_err(&mut c, &["HEATBRIDGE.GET", "str"]);
        assert!(e.starts_with("WRONGTYPE"), "{e}");
        let e = call_err(&mut c3, &["HEATBRIDGE.GET", "str"]);
        assert!(e.starts_with("WRONGTYPE"), "{e}");
        assert!(answers_ping(&s));

        // Arity and argument errors.
        for (args, want) in [
            (&["HEATBRIDGE.GET"][..], "wrong number of arguments"),
            (
                &["HEATBRIDGE.GET", "a", "b"][..],
                "wrong number of arguments",
            ),
            (&["HEATBRIDGE.LATEST"][..], "wrong number of arguments"),
            (
                &["HEATBRIDGE.LATEST", "a", "b"][..],
                "wrong number of arguments",
            ),
            (&["HEATBRIDGE.GET", ""][..], "ERR"),
            (&["HEATBRIDGE.LATEST", ""][..], "ERR"),
        ] {
            let e = call_err(&mut c, args);
            assert!(e.starts_with("ERR") && e.contains(want), "{args:?}: {e}");
        }
        let long = "x".repeat(257);
        let e = call_err(&mut c, &["HEATBRIDGE.GET", &long]);
        assert!(e.starts_with("ERR"), "{e}");
    });
}

/// Whether the server still answers PING.
fn answers_ping(s: &Server) -> bool {
    let mut c = s.conn();
    redis::cmd("PING").query::<String>(&mut c).is_ok()
}

#[test]
fn get_and_latest_are_binary_safe() {
    for_each_flavor(|flavor| {
        let s = Options::new(flavor).without_exporter().start();
        let mut c = s.conn();
        let plan: &[u8] = b"p*?[{}]\x00\xff";
        let sym: &[u8] = b"{BTC}\xfe";
        redis::cmd("XADD")
            .arg(STREAM)
            .arg("*")
            .arg("plan_id")
            .arg(plan)
            .arg("symbol")
            .arg(sym)
            .arg("blob")
            .arg(&b"\x00\x01\xff"[..])
            .query::<String>(&mut c)
            .unwrap();
        wait_drained(&mut c);
        let got: Vec<Vec<u8>> = redis::cmd("HEATBRIDGE.GET")
            .arg(plan)
            .query(&mut c)
            .unwrap();
        assert!(got
            .windows(2)
            .any(|w| w[0] == b"blob" && w[1] == b"\x00\x01\xff"));
        let got: Vec<Vec<u8>> = redis::cmd("HEATBRIDGE.LATEST")
            .arg(sym)
            .query(&mut c)
            .unwrap();
        assert!(got
            .windows(2)
            .any(|w| w[0] == b"last_plan_id" && w[1] == plan));
        // A glob in the argument is a literal name, never a pattern.
        let got: Value = redis::cmd("HEATBRIDGE.GET")
            .arg("p*")
            .query(&mut c)
            .unwrap();
        assert_eq!(got, Value::Nil);
    });
}

#[test]
fn acl_key_patterns_are_checked_as_a_read_of_the_derived_key() {
    for_each_flavor(|flavor| {
        let s = Options::new(flavor).without_exporter().start();
        let mut c = s.conn();
        inject(&mut c, "BTCUSDT", "acl1");
        wait_drained(&mut c);
        for args in [
            &["ACL", "SETUSER", "other", "on", ">pw", "~other:*", "+@all"][..],
            &[
                "ACL",
                "SETUSER",
                "heat",
                "on",
                ">pw",
                "~quantum:harvest:heat:*",
                "+@all",
            ],
            &[
                "ACL",
                "SETUSER",
                "writer",
                "on",
                ">pw",
                "%W~quantum:harvest:heat:*",
                "+@all",
            ],
            &[
                "ACL",
                "SETUSER",
                "reader",
                "on",
                ">pw",
                "%R~quantum:harvest:heat:*",
                "+@all",
            ],
        ] {
            assert_eq!(text(&call(&mut c, args)), "OK");
        }

        // Key patterns that exclude the lookup keys: NOPERM, even for a missing key.
        let mut other = conn_as(&s, "other", "pw");
        for args in [
            &["HEATBRIDGE.GET", "acl1"][..],
            &["HEATBRIDGE.LATEST", "BTCUSDT"],
            &["HEATBRIDGE.GET", "missing"],
        ] {
            let e = call_err(&mut other, args);
            assert!(e.starts_with("NOPERM"), "{args:?}: {e}");
        }
        // Write-only access to the keys is not enough: the check is a read.
        let mut writer = conn_as(&s, "writer", "pw");
        for args in [
            &["HEATBRIDGE.GET", "acl1"][..],
            &["HEATBRIDGE.LATEST", "BTCUSDT"],
        ] {
            let e = call_err(&mut writer, args);
            assert!(e.starts_with("NOPERM"), "{args:?}: {e}");
        }
        // Users whose patterns cover the keys read them.
        for user in ["heat", "reader"] {
            let mut u = conn_as(&s, user, "pw");
            let got = call(&mut u, &["HEATBRIDGE.GET", "acl1"]);
            assert!(
                flat_pairs(&got).contains(&("plan_id".into(), "acl1".into())),
                "{user}: {got:?}"
            );
            let got = call(&mut u, &["HEATBRIDGE.LATEST", "BTCUSDT"]);
            assert!(
                flat_pairs(&got).contains(&("last_plan_id".into(), "acl1".into())),
                "{user}: {got:?}"
            );
            assert_eq!(call(&mut u, &["HEATBRIDGE.GET", "missing"]), Value::Nil);
        }
    });
}

#[test]
fn replay_reprojects_in_stream_order_ignoring_dedupe_with_entry_time_expiry() {
    for_each_flavor(|flavor| {
        let s = Options::new(flavor).without_exporter().start();
        let mut c = s.conn();

        // Nothing to replay yet: the stream does not exist.
        assert_eq!(replay(&mut c, &[]), (0, "0-0".to_string()));

        let now = server_now_ms(&mut c);
        // Older than every TTL (1800 s): creates no key, live or replayed.
        xadd(
            &mut c,
            STREAM,
            &format!("{}-0", now - 2_000_000),
            &decision("OLD", "r_old", &[]),
        );
        // 1000 s old: about 800 s of TTL left, live or replayed.
        let mid = xadd(
            &mut c,
            STREAM,
            &format!("{}-0", now - 1_000_000),
            &decision("MID", "r_mid", &[]),
        );
        let e1 = xadd(&mut c, STREAM, "*", &decision("SYM", "r1", &[]));
        let e2 = xadd(&mut c, STREAM, "*", &decision("SYM", "r2", &[]));
        // A duplicate plan_id inside the dedupe window: skipped live.
        let e3 = xadd(
            &mut c,
            STREAM,
            "*",
            &decision("SYM", "r1", &[("heat_level", "hot")]),
        );
        wait_drained(&mut c);
        assert!(!exists(&mut c, &format!("{BY_PLAN}r_old")));
        assert_eq!(metric(&mut c, "p27_dedupe_skips_total"), 1.0);
        assert_eq!(
            hget(&mut c, &format!("{BY_PLAN}r1"), "heat_level").as_deref(),
            Some("cold")
        );
        assert_eq!(get(&mut c, &format!("{POINTER}SYM")).as_deref(), Some("r2"));

        // Wipe every lookup key, then replay everything.
        for k in [
            format!("{BY_PLAN}r_mid"),
            format!("{BY_PLAN}r1"),
            format!("{BY_PLAN}r2"),
            format!("{LATEST}MID"),
            format!("{LATEST}SYM"),
            format!("{POINTER}MID"),
            format!("{POINTER}SYM"),
        ] {
            redis::cmd("DEL").arg(&k).query::<i64>(&mut c).unwrap();
        }
        let replayed_before = metric(&mut c, "p27_replayed_total");
        let (n, last) = replay(&mut c, &[]);
        assert_eq!(n, 4, "mid, e1, e2 and the duplicate e3 are re-projected");
        assert_eq!(last, e3);
        assert_eq!(metric(&mut c, "p27_replayed_total"), replayed_before + 4.0);

        // Dedupe ignored, stream order kept: e3 (the live duplicate) wins for r1 and SYM.
        assert_eq!(
            hget(&mut c, &format!("{BY_PLAN}r1"), "heat_level").as_deref(),
            Some("hot")
        );
        assert_eq!(
            hget(&mut c, &format!("{BY_PLAN}r2"), "plan_id").as_deref(),
            Some("r2")
        );
        assert_eq!(get(&mut c, &format!("{POINTER}SYM")).as_deref(), Some("r1"));
        assert_eq!(
            hget(&mut c, &format!("{LATEST}SYM"), "heat_level").as_deref(),
            Some("hot")
        );
        // Entry-time expiry: the old entry stays gone, the 1000 s old one keeps ~800 s.
        assert!(!exists(&mut c, &format!("{BY_PLAN}r_old")));
        assert!(!exists(&mut c, &format!("{LATEST}OLD")));
        let t = ttl(&mut c, &format!("{BY_PLAN}r_mid"));
        assert!((790..=800).contains(&t), "replayed r_mid TTL {t}");
        let t = ttl(&mut c, &format!("{POINTER}MID"));
        assert!((790..=800).contains(&t), "replayed MID pointer TTL {t}");
        let t = ttl(&mut c, &format!("{BY_PLAN}r2"));
        assert!((1790..=1800).contains(&t), "replayed r2 TTL {t}");

        // Paging: COUNT n looks at n entries (the stale one counts, unwritten), so each call
        // stays bounded; passing last-id back goes on from there.
        let (n, last) = replay(&mut c, &["COUNT", "2"]);
        assert_eq!(
            (n, last.as_str()),
            (1, mid.as_str()),
            "old looked at but not written, then mid"
        );
        let (n, last) = replay(&mut c, &["FROM", &last, "COUNT", "2"]);
        assert_eq!((n, last.as_str()), (2, e2.as_str()));
        let (n, last) = replay(&mut c, &["FROM", &last, "COUNT", "2"]);
        assert_eq!((n, last.as_str()), (1, e3.as_str()));
        let (n, last) = replay(&mut c, &["FROM", &last, "COUNT", "2"]);
        assert_eq!(
            (n, last.as_str()),
            (0, e3.as_str()),
            "the end: nothing more"
        );
        let (n, last) = replay(&mut c, &["from", &e2, "count", "100000"]);
        assert_eq!(
            (n, last.as_str()),
            (1, e3.as_str()),
            "options are case-insensitive"
        );
        let (n, last) = replay(&mut c, &["COUNT", "1", "FROM", &mid]);
        assert_eq!((n, last.as_str()), (1, e1.as_str()), "options in any order");
        // A FROM id without a sequence part means seq 0.
        let ms = e2.split('-').next().unwrap();
        let (n, _) = replay(&mut c, &["FROM", ms, "COUNT", "1"]);
        assert_eq!(n, 1);

        // Nothing was left pending by the replays.
        wait_drained(&mut c);
        assert!(answers_ping(&s));
    });
}

#[test]
fn replay_rejects_bad_arguments() {
    for_each_flavor(|flavor| {
        let s = Options::new(flavor).without_exporter().start();
        let mut c = s.conn();
        inject(&mut c, "SYM", "b1");
        wait_drained(&mut c);
        for args in [
            &["FROM"][..],
            &["COUNT"],
            &["FROM", "abc"],
            &["FROM", "1-x"],
            &["FROM", "-1"],
            &["FROM", "1-2-3"],
            &["FROM", ""],
            &["COUNT", "0"],
            &["COUNT", "100001"],
            &["COUNT", "-1"],
            &["COUNT", "x"],
            &["COUNT", "1.5"],
            &["COUNT", "99999999999999999999999"],
            &["LIMIT", "1"],
            &["FROM", "0", "COUNT"],
            &["FROM", "0", "EXTRA"],
        ] {
            let mut all = vec!["HEATBRIDGE.REPLAY"];
            all.extend_from_slice(args);
            let e = call_err(&mut c, &all);
            assert!(e.starts_with("ERR "), "{args:?}: {e}");
        }
        // The bounds themselves are accepted.
        assert_eq!(replay(&mut c, &["COUNT", "1"]).0, 1);
        assert_eq!(replay(&mut c, &["COUNT", "100000"]).0, 1);
        assert_eq!(replay(&mut c, &["FROM", "0-0"]).0, 1);

        // A stream key of the wrong type is reported, not replayed.
        let s2 = Options::new(flavor)
            .without_exporter()
            .module_arg("stream-in", "wrong:type")
            .start();
        let mut c2 = s2.conn();
        redis::cmd("SET")
            .arg("wrong:type")
            .arg("x")
            .query::<()>(&mut c2)
            .unwrap();
        let e = call_err(&mut c2, &["HEATBRIDGE.REPLAY"]);
        assert!(e.starts_with("WRONGTYPE"), "{e}");
    });
}

#[test]
fn replay_is_refused_on_a_replica() {
    for_each_flavor(|flavor| {
        let master = Options::new(flavor).without_exporter().start();
        let mut m = master.conn();
        let mut opts = Options::new(flavor).without_exporter();
        opts.args.extend([
            "--replicaof".to_string(),
            "127.0.0.1".to_string(),
            master.port.to_string(),
        ]);
        let replica = opts.start();
        let mut r = replica.conn();
        wait_for(30, "replica link up", || {
            let info: String = redis::cmd("INFO").arg("replication").query(&mut r).unwrap();
            info.contains("master_link_status:up")
        });
        inject(&mut m, "SYM", "rep1");
        wait_drained(&mut m);
        let acked: i64 = redis::cmd("WAIT").arg(1).arg(5000).query(&mut m).unwrap();
        assert_eq!(acked, 1);

        let e = call_err(&mut r, &["HEATBRIDGE.REPLAY"]);
        assert!(e.starts_with("READONLY"), "{e}");
        let e = call_err(&mut r, &["HEATBRIDGE.REPLAY", "COUNT", "1"]);
        assert!(e.starts_with("READONLY"), "{e}");
        // Bad arguments are still reported as such.
        let e = call_err(&mut r, &["HEATBRIDGE.REPLAY", "COUNT", "0"]);
        assert!(e.starts_with("ERR") || e.starts_with("READONLY"), "{e}");
        // Reads work on the replica.
        let got = call(&mut r, &["HEATBRIDGE.GET", "rep1"]);
        assert!(flat_pairs(&got).contains(&("plan_id".into(), "rep1".into())));
        let got = call(&mut r, &["HEATBRIDGE.LATEST", "SYM"]);
        assert!(flat_pairs(&got).contains(&("last_plan_id".into(), "rep1".into())));
        let h = health(&mut r);
        assert!(h["status"].is_string(), "{h}");
        // The master still replays.
        assert_eq!(replay(&mut m, &[]).0, 1);
    });
}

/// COMMAND INFO of one command: (flags, ACL categories).
fn command_info(c: &mut Connection, name: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let v = call(c, &["COMMAND", "INFO", name]);
    let Value::Array(outer) = v else {
        panic!("COMMAND INFO {name}: {v:?}")
    };
    let Some(Value::Array(info)) = outer.first() else {
        panic!("COMMAND INFO {name}: {outer:?}")
    };
    let set = |v: Option<&Value>| -> BTreeSet<String> {
        match v {
            Some(Value::Array(a)) | Some(Value::Set(a)) => a.iter().map(text).collect(),
            _ => BTreeSet::new(),
        }
    };
    // The key is derived from the argument, so no command declares keys.
    assert_eq!(
        info.get(3),
        Some(&Value::Int(0)),
        "{name} first key: {info:?}"
    );
    (set(info.get(2)), set(info.get(6)))
}

#[test]
fn command_flags_are_declared() {
    for_each_flavor(|flavor| {
        let s = Options::new(flavor).without_exporter().start();
        let mut c = s.conn();
        let (replay, _) = command_info(&mut c, "heatbridge.replay");
        for f in ["admin", "write", "denyoom"] {
            assert!(replay.contains(f), "REPLAY lacks {f}: {replay:?}");
        }
        assert!(!replay.contains("readonly"), "{replay:?}");
        for name in ["heatbridge.get", "heatbridge.latest"] {
            let (flags, _) = command_info(&mut c, name);
            assert!(flags.contains("readonly"), "{name}: {flags:?}");
            for f in ["write", "admin", "denyoom"] {
                assert!(!flags.contains(f), "{name} has {f}: {flags:?}");
            }
        }
        for name in ["heatbridge.health", "heatbridge.metrics"] {
            let (flags, _) = command_info(&mut c, name);
            assert!(flags.contains("readonly"), "{name}: {flags:?}");
            assert!(!flags.contains("write"), "{name}: {flags:?}");
        }
    });
}

#[test]
fn info_heatbridge_shows_counters_and_state() {
    for_each_flavor(|flavor| {
        let s = Server::new(flavor);
        let mut c = s.conn();
        inject(&mut c, "SYM", "i1");
        inject(&mut c, "SYM", "i1");
        redis::cmd("XADD")
            .arg(STREAM)
            .arg("*")
            .arg("symbol")
            .arg("SYM")
            .query::<String>(&mut c)
            .unwrap();
        wait_drained(&mut c);
        let info: String = redis::cmd("INFO").arg("heatbridge").query(&mut c).unwrap();
        let f = |name: &str| {
            info_field(&info, &format!("heatbridge_{name}"))
                .unwrap_or_else(|| panic!("heatbridge_{name} missing:\n{info}"))
        };
        assert_eq!(f("role"), "master");
        assert_eq!(f("stream"), STREAM);
        assert_eq!(f("group"), "heat_bridge");
        assert_eq!(f("stream_state"), "stream");
        assert_eq!(f("backlog"), "0");
        assert_eq!(f("in_messages_total"), "3");
        assert_eq!(f("written_by_plan_total"), "1");
        assert_eq!(f("written_latest_symbol_total"), "1");
        assert_eq!(f("dedupe_skips_total"), "1");
        assert_eq!(f("errors_parse_total"), "1");
        assert_eq!(f("errors_write_total"), "0");
        assert_eq!(f("last_ts_epoch"), "1735689600");
        for name in [
            "version",
            "health",
            "loops_total",
            "expired_skips_total",
            "replayed_total",
            "errors_read_total",
            "errors_ack_total",
            "lag_ms",
        ] {
            f(name);
        }
        // Exporter bind status is shown for both endpoints.
        let m = f("exporter_metrics");
        let h = f("exporter_health");
        assert!(
            m.contains(&s.metrics_port.to_string()),
            "exporter_metrics {m:?}"
        );
        assert!(
            h.contains(&s.health_port.to_string()),
            "exporter_health {h:?}"
        );
        // The section is part of INFO everything, too.
        let all: String = redis::cmd("INFO").arg("everything").query(&mut c).unwrap();
        assert!(all.contains("heatbridge_in_messages_total:3"));
    });
}

/// Whether the server supports module command ACL categories (Redis 7.2+, Valkey).
fn has_acl_categories(c: &mut Connection) -> bool {
    let info: String = redis::cmd("INFO").arg("server").query(c).unwrap();
    let v = info_field(&info, "redis_version").unwrap_or_default();
    let mut parts = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (7, 2)
}

/// REPLAY is "admin and dangerous": where the server has module ACL categories it is in
/// @dangerous, so `+@all -@dangerous` cannot run it. (Redis 7.0 gives module commands no
/// categories; there an operator denies it by name, as tests/acl.rs does.)
#[test]
fn replay_is_in_the_dangerous_category_where_categories_exist() {
    for_each_flavor(|flavor| {
        let s = Options::new(flavor).without_exporter().start();
        let mut c = s.conn();
        if !has_acl_categories(&mut c) {
            eprintln!("{flavor:?}: no module ACL categories on this server; skipped");
            return;
        }
        let (_, cats) = command_info(&mut c, "heatbridge.replay");
        for cat in ["@admin", "@dangerous", "@write"] {
            assert!(cats.contains(cat), "REPLAY lacks {cat}: {cats:?}");
        }
        for name in ["heatbridge.get", "heatbridge.latest"] {
            let (_, cats) = command_info(&mut c, name);
            assert!(cats.contains("@read"), "{name}: {cats:?}");
            assert!(!cats.contains("@dangerous"), "{name}: {cats:?}");
        }
        call(
            &mut c,
            &[
                "ACL",
                "SETUSER",
                "safe",
                "on",
                ">pw",
                "~*",
                "+@all",
                "-@dangerous",
            ],
        );
        let mut safe = conn_as(&s, "safe", "pw");
        let e = call_err(&mut safe, &["HEATBRIDGE.REPLAY"]);
        assert!(e.starts_with("NOPERM"), "{e}");
        assert_eq!(call(&mut safe, &["HEATBRIDGE.GET", "none"]), Value::Nil);
    });
}

/// HEATBRIDGE.* commands leave the caller's selected database alone, and GET/LATEST read
/// the lookup keys in database 0 whatever the caller selected.
#[test]
fn commands_keep_the_callers_database() {
    for_each_flavor(|flavor| {
        let s = Options::new(flavor).without_exporter().start();
        let mut c = s.conn();
        inject(&mut c, "DBSYM", "db_plan");
        let _: () = redis::cmd("SELECT").arg(5).query(&mut c).unwrap();
        for cmd in [
            &["HEATBRIDGE.HEALTH"][..],
            &["HEATBRIDGE.METRICS"],
            &["HEATBRIDGE.REPLAY", "COUNT", "1"],
        ] {
            let _ = call(&mut c, cmd);
        }
        assert_ne!(call(&mut c, &["HEATBRIDGE.GET", "db_plan"]), Value::Nil);
        assert_ne!(call(&mut c, &["HEATBRIDGE.LATEST", "DBSYM"]), Value::Nil);
        let _: () = redis::cmd("SET")
            .arg("probe")
            .arg("x")
            .query(&mut c)
            .unwrap();
        let in_5: i64 = redis::cmd("EXISTS").arg("probe").query(&mut c).unwrap();
        assert_eq!(in_5, 1, "the client is still on database 5");
        let _: () = redis::cmd("SELECT").arg(0).query(&mut c).unwrap();
        let in_0: i64 = redis::cmd("EXISTS").arg("probe").query(&mut c).unwrap();
        assert_eq!(in_0, 0);
    });
}

/// REPLAY looks at no more than COUNT entries, written or not, so a call stays bounded
/// over a stream of stale entries; the caller pages with the returned last ID.
#[test]
fn replay_examines_at_most_count_entries() {
    for_each_flavor(|flavor| {
        let s = Options::new(flavor).without_exporter().start();
        let mut c = s.conn();
        let now = server_now_ms(&mut c);
        let mut ids = Vec::new();
        for i in 0..5u64 {
            let id = format!("{}-0", now - 5_000_000 + i);
            xadd(
                &mut c,
                STREAM,
                &id,
                &decision("OLD", &format!("old{i}"), &[]),
            );
            ids.push(id);
        }
        inject(&mut c, "NEW", "fresh");
        let (n, last) = replay(&mut c, &["COUNT", "2"]);
        assert_eq!((n, last.as_str()), (0, ids[1].as_str()));
        let (n, _) = replay(&mut c, &["FROM", &ids[4], "COUNT", "10"]);
        assert_eq!(n, 1);
    });
}

/// Loading HeatBridge must not change which database a client is on after COPY ... DB or
/// MOVE. (Valkey 8.1 does move the client when a module subscribes to generic or new-key
/// events, so HeatBridge subscribes to stream events only.)
#[test]
fn copy_and_move_leave_the_client_on_its_database() {
    for_each_flavor(|flavor| {
        let s = Options::new(flavor).without_exporter().start();
        let mut c = s.conn();
        for cmd in [&["COPY", "k", "k2", "DB", "1"][..], &["MOVE", "m", "2"]] {
            let _: () = redis::cmd("SELECT").arg(0).query(&mut c).unwrap();
            let _: () = redis::cmd("SET")
                .arg(cmd[1])
                .arg("v")
                .query(&mut c)
                .unwrap();
            let _ = call(&mut c, cmd);
            let _: () = redis::cmd("SET")
                .arg("probe")
                .arg("x")
                .query(&mut c)
                .unwrap();
            let _: () = redis::cmd("SELECT").arg(0).query(&mut c).unwrap();
            let n: i64 = redis::cmd("EXISTS").arg("probe").query(&mut c).unwrap();
            assert_eq!(n, 1, "after {cmd:?} the client left database 0");
            let _: i64 = redis::cmd("DEL").arg("probe").query(&mut c).unwrap();
        }
    });
}
