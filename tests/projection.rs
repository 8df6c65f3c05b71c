//! Projection end to end on real servers: the seed's proof cases A–E, visibility right
//! after XADD, entry-time expiry, latest replaced whole, invalid entries, runtime TTLs.

mod common;
use common::*;

const BY_PLAN: &str = "quantum:harvest:heat:by_plan:";
const LATEST: &str = "quantum:harvest:heat:latest:";
const POINTER: &str = "quantum:harvest:heat:latest_plan_id:";
const DEDUPE: &str = "quantum:dedupe:p27:";

#[test]
fn seed_cases_a_to_e() {
    for_each_flavor(|flavor| {
        let s = Server::new(flavor);
        let mut c = s.conn();

        // A: basic injection creates the three lookup keys with the seed's fields and TTLs.
        let fields = decision("BTCUSDT", "test_a", &[]);
        let id = xadd(&mut c, STREAM, "*", &fields);
        let by_plan = hgetall(&mut c, &format!("{BY_PLAN}test_a"));
        let mut expected = fields.clone();
        expected.sort();
        assert_eq!(by_plan, expected, "by_plan holds every field of the entry");
        let t = ttl(&mut c, &format!("{BY_PLAN}test_a"));
        assert!((1795..=1800).contains(&t), "by_plan TTL {t}");
        assert_eq!(
            hget(&mut c, &format!("{LATEST}BTCUSDT"), "last_plan_id").as_deref(),
            Some("test_a")
        );
        assert_eq!(
            get(&mut c, &format!("{POINTER}BTCUSDT")).as_deref(),
            Some("test_a")
        );
        assert_eq!(get(&mut c, &format!("{DEDUPE}test_a")), Some(id));
        let t = ttl(&mut c, &format!("{DEDUPE}test_a"));
        assert!((115..=120).contains(&t), "dedupe TTL {t}");

        // B: the same plan_id again is skipped and counted.
        let before = metric(&mut c, "p27_dedupe_skips_total");
        xadd(
            &mut c,
            STREAM,
            "*",
            &decision("BTCUSDT", "test_a", &[("heat_level", "hot")]),
        );
        assert_eq!(metric(&mut c, "p27_dedupe_skips_total"), before + 1.0);
        assert_eq!(
            hget(&mut c, &format!("{BY_PLAN}test_a"), "heat_level").as_deref(),
            Some("cold"),
            "the duplicate did not overwrite"
        );

        // C: a new plan_id for the same symbol moves the latest pointer.
        xadd(
            &mut c,
            STREAM,
            "*",
            &decision(
                "BTCUSDT",
                "test_c",
                &[("out_action", "PARTIAL_50_PROPOSED")],
            ),
        );
        assert_eq!(
            get(&mut c, &format!("{POINTER}BTCUSDT")).as_deref(),
            Some("test_c")
        );
        let latest = format!("{LATEST}BTCUSDT");
        assert_eq!(
            hget(&mut c, &latest, "last_plan_id").as_deref(),
            Some("test_c")
        );
        assert_eq!(
            hget(&mut c, &latest, "out_action").as_deref(),
            Some("PARTIAL_50_PROPOSED")
        );

        // D: metrics, over HTTP and the command. Three injections, one duplicate.
        let (code, head, body) = s
            .http_get(s.metrics_port, "/metrics")
            .expect("GET /metrics");
        assert_eq!(code, 200);
        assert!(
            head.contains("text/plain; version=0.0.4; charset=utf-8"),
            "{head}"
        );
        assert_eq!(sample(&body, "p27_in_messages_total"), Some(3.0));
        assert_eq!(
            sample(&body, "p27_written_total{kind=\"by_plan\"}"),
            Some(2.0)
        );
        assert_eq!(
            sample(&body, "p27_written_total{kind=\"latest_symbol\"}"),
            Some(2.0)
        );
        assert_eq!(sample(&body, "p27_dedupe_skips_total"), Some(1.0));
        assert_eq!(sample(&body, "p27_last_ts_epoch"), Some(1735689600.0));

        // E: health, over HTTP and the command.
        let (code, head, body) = s.http_get(s.health_port, "/health").expect("GET /health");
        assert_eq!(code, 200);
        assert!(head.contains("application/json"), "{head}");
        let h: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(h["status"], "ok");
        assert_eq!(h["last_ts_epoch"], 1735689600);
        assert!(h["last_loop_ms"].is_number());
        assert_eq!(h["backlog"], 0);
        assert_eq!(health(&mut c)["status"], "ok");

        // The group shows the truth.
        assert_eq!(
            group_field(&mut c, STREAM, "heat_bridge", "pending").as_deref(),
            Some("0")
        );
        assert_eq!(
            group_field(&mut c, STREAM, "heat_bridge", "lag").as_deref(),
            Some("0")
        );
    });
}

/// The next command after XADD's reply sees the keys on both servers. On Valkey
/// (post-notification jobs) even a command pipelined right behind the XADD sees them; on
/// Redis 7.0 projection runs on the next event-loop turn, before the XADD reply is sent.
#[test]
fn keys_are_readable_by_the_next_command() {
    for_each_flavor(|flavor| {
        let s = Options::new(flavor).without_exporter().start();
        let mut c = s.conn();
        for i in 0..200 {
            let plan = format!("seq_{i}");
            let _: String = redis::cmd("XADD")
                .arg(STREAM)
                .arg("*")
                .arg("symbol")
                .arg("SYM")
                .arg("plan_id")
                .arg(&plan)
                .query(&mut c)
                .unwrap();
            assert!(exists(&mut c, &format!("{BY_PLAN}{plan}")), "{plan}");
        }
        if !flavor.projects_per_command() {
            return;
        }
        for i in 0..200 {
            let plan = format!("next_{i}");
            // One pipeline: XADD, then the read, back to back on one connection.
            let (_, n): (String, i64) = redis::pipe()
                .cmd("XADD")
                .arg(STREAM)
                .arg("*")
                .arg("symbol")
                .arg("SYM")
                .arg("plan_id")
                .arg(&plan)
                .cmd("EXISTS")
                .arg(format!("{BY_PLAN}{plan}"))
                .query(&mut c)
                .unwrap();
            assert_eq!(n, 1, "{plan} not visible to the next command");
        }
    });
}

#[test]
fn expiry_is_anchored_at_the_entry_time() {
    for_each_flavor(|flavor| {
        let s = Options::new(flavor).without_exporter().start();
        let mut c = s.conn();
        let now = server_now_ms(&mut c);
        let old = now - 2_000_000;
        let late = now - 1_000_000;
        // Older than every TTL: creates no key, counted as an expired skip.
        xadd(
            &mut c,
            STREAM,
            &format!("{old}-0"),
            &decision("OLD", "too_old", &[]),
        );
        // 1000 s old: about 800 s left of the 1800 s TTL, and no dedupe key (window passed).
        xadd(
            &mut c,
            STREAM,
            &format!("{late}-0"),
            &decision("LATE", "late", &[]),
        );
        let t = ttl(&mut c, &format!("{BY_PLAN}late"));
        assert!((795..=800).contains(&t), "by_plan TTL {t}");
        let t = ttl(&mut c, &format!("{LATEST}LATE"));
        assert!((795..=800).contains(&t), "latest TTL {t}");
        let t = ttl(&mut c, &format!("{POINTER}LATE"));
        assert!((795..=800).contains(&t), "pointer TTL {t}");
        assert!(!exists(&mut c, &format!("{DEDUPE}late")));
        assert!(!exists(&mut c, &format!("{BY_PLAN}too_old")));
        assert!(!exists(&mut c, &format!("{LATEST}OLD")));
        assert_eq!(metric(&mut c, "p27_expired_skips_total"), 1.0);
        assert_eq!(metric(&mut c, "p27_in_messages_total"), 2.0);
        wait_drained(&mut c);
    });
}

#[test]
fn latest_is_replaced_whole() {
    for_each_flavor(|flavor| {
        let s = Options::new(flavor).without_exporter().start();
        let mut c = s.conn();
        let first = decision("ETHUSDT", "p1", &[("only_in_first", "x")]);
        xadd(&mut c, STREAM, "*", &first);
        assert_eq!(
            hget(&mut c, &format!("{LATEST}ETHUSDT"), "only_in_first").as_deref(),
            Some("x")
        );
        let second: Vec<(String, String)> = vec![
            ("symbol".into(), "ETHUSDT".into()),
            ("plan_id".into(), "p2".into()),
            ("heat_level".into(), "hot".into()),
        ];
        xadd(&mut c, STREAM, "*", &second);
        let latest = hgetall(&mut c, &format!("{LATEST}ETHUSDT"));
        let mut want = second.clone();
        want.push(("last_plan_id".into(), "p2".into()));
        want.sort();
        assert_eq!(latest, want, "no field of the older decision survives");
        // by_plan of the first plan is untouched.
        assert_eq!(
            hget(&mut c, &format!("{BY_PLAN}p1"), "only_in_first").as_deref(),
            Some("x")
        );
    });
}

#[test]
fn invalid_entry_then_valid_one() {
    for_each_flavor(|flavor| {
        let s = Options::new(flavor).without_exporter().start();
        let mut c = s.conn();
        let bad = vec![("symbol".to_string(), "BTC".to_string())];
        xadd(&mut c, STREAM, "*", &bad);
        xadd(&mut c, STREAM, "*", &decision("BTC", "", &[]));
        inject(&mut c, "BTC", "good");
        assert!(exists(&mut c, &format!("{BY_PLAN}good")));
        assert_eq!(metric(&mut c, "p27_errors_total{stage=\"parse\"}"), 2.0);
        assert_eq!(metric(&mut c, "p27_in_messages_total"), 3.0);
        wait_drained(&mut c);
        assert!(
            s.log().contains("invalid entry"),
            "the invalid entry is logged"
        );
    });
}

#[test]
fn runtime_config_set_of_ttls_and_dedupe_window() {
    for_each_flavor(|flavor| {
        let s = Options::new(flavor).without_exporter().start();
        let mut c = s.conn();
        config_set(&mut c, "heatbridge.ttl-plan-sec", "600").unwrap();
        config_set(&mut c, "heatbridge.ttl-symbol-sec", "300").unwrap();
        config_set(&mut c, "heatbridge.dedupe-ttl-sec", "30").unwrap();
        inject(&mut c, "SOL", "cfg1");
        let t = ttl(&mut c, &format!("{BY_PLAN}cfg1"));
        assert!((595..=600).contains(&t), "by_plan {t}");
        let t = ttl(&mut c, &format!("{LATEST}SOL"));
        assert!((295..=300).contains(&t), "latest {t}");
        let t = ttl(&mut c, &format!("{DEDUPE}cfg1"));
        assert!((25..=30).contains(&t), "dedupe {t}");

        // Dedupe off: the same plan_id is projected again.
        config_set(&mut c, "heatbridge.dedupe-ttl-sec", "0").unwrap();
        xadd(
            &mut c,
            STREAM,
            "*",
            &decision("SOL", "cfg2", &[("heat_level", "warm")]),
        );
        xadd(
            &mut c,
            STREAM,
            "*",
            &decision("SOL", "cfg2", &[("heat_level", "hot")]),
        );
        assert_eq!(
            hget(&mut c, &format!("{BY_PLAN}cfg2"), "heat_level").as_deref(),
            Some("hot")
        );
        assert!(!exists(&mut c, &format!("{DEDUPE}cfg2")));
        assert_eq!(metric(&mut c, "p27_dedupe_skips_total"), 0.0);
    });
}

#[test]
fn catch_up_after_dedupe_window_lets_the_later_entry_win() {
    for_each_flavor(|flavor| {
        let s = Options::new(flavor)
            .without_module()
            .without_exporter()
            .start();
        let mut c = s.conn();
        let now = server_now_ms(&mut c);
        // Two entries with the same plan_id, both older than the 120 s window.
        xadd(
            &mut c,
            STREAM,
            &format!("{}-0", now - 600_000),
            &decision("X", "dup", &[("v", "1")]),
        );
        xadd(
            &mut c,
            STREAM,
            &format!("{}-0", now - 500_000),
            &decision("X", "dup", &[("v", "2")]),
        );
        let mut load = vec![
            "MODULE".to_string(),
            "LOAD".to_string(),
            module_path().display().to_string(),
        ];
        load.extend(["metrics-port", "0", "health-port", "0"].map(String::from));
        let mut cmd = redis::cmd(&load[0]);
        for a in &load[1..] {
            cmd.arg(a);
        }
        cmd.query::<()>(&mut c).unwrap();
        wait_drained(&mut c);
        assert_eq!(
            hget(&mut c, &format!("{BY_PLAN}dup"), "v").as_deref(),
            Some("2")
        );
        assert_eq!(metric(&mut c, "p27_dedupe_skips_total"), 0.0);
    });
}

#[test]
fn transaction_projects_when_exec_ends() {
    for_each_flavor(|flavor| {
        let s = Options::new(flavor).without_exporter().start();
        let mut c = s.conn();
        let (_, _): (String, String) = redis::pipe()
            .atomic()
            .cmd("XADD")
            .arg(STREAM)
            .arg("*")
            .arg("symbol")
            .arg("M")
            .arg("plan_id")
            .arg("m1")
            .cmd("XADD")
            .arg(STREAM)
            .arg("*")
            .arg("symbol")
            .arg("M")
            .arg("plan_id")
            .arg("m2")
            .query(&mut c)
            .unwrap();
        assert!(exists(&mut c, &format!("{BY_PLAN}m1")));
        assert_eq!(get(&mut c, &format!("{POINTER}M")).as_deref(), Some("m2"));
        // And from a script.
        let _: String = redis::cmd("EVAL")
            .arg("return redis.call('XADD', KEYS[1], '*', 'symbol', 'L', 'plan_id', 'lua1')")
            .arg(1)
            .arg(STREAM)
            .query(&mut c)
            .unwrap();
        assert!(exists(&mut c, &format!("{BY_PLAN}lua1")));
    });
}

/// 25 entries added at once (one transaction) are one drain pass of three steps of at most
/// `heatbridge.batch` (10): every key is right, latest and its pointer are written once per
/// symbol for the pass, and the group ends with nothing pending, lag 0 and an exact read
/// counter.
#[test]
fn one_pass_writes_latest_once_per_symbol() {
    for_each_flavor(|flavor| {
        let s = Options::new(flavor).without_exporter().start();
        let mut c = s.conn();
        inject(&mut c, "A", "warmup");
        wait_drained(&mut c);
        let loops = metric(&mut c, "p27_loops_total");
        let latest = metric(&mut c, "p27_written_total{kind=\"latest_symbol\"}");
        let by_plan = metric(&mut c, "p27_written_total{kind=\"by_plan\"}");
        let read = metric(&mut c, "p27_in_messages_total");

        let symbols = ["A", "B", "C"];
        let mut pipe = redis::pipe();
        pipe.atomic();
        for i in 0..25 {
            let sym = symbols[i % 3];
            let fields = decision(sym, &format!("t{i}"), &[("heat_level", &i.to_string())]);
            let cmd = pipe.cmd("XADD").arg(STREAM).arg("*");
            for (k, v) in &fields {
                cmd.arg(k).arg(v);
            }
        }
        let _: Vec<String> = pipe.query(&mut c).expect("MULTI of 25 XADDs");
        wait_drained(&mut c);

        for i in 0..25 {
            assert!(exists(&mut c, &format!("{BY_PLAN}t{i}")), "by_plan t{i}");
        }
        for (sym, last) in [("A", 24), ("B", 22), ("C", 23)] {
            let plan = format!("t{last}");
            assert_eq!(get(&mut c, &format!("{POINTER}{sym}")), Some(plan.clone()));
            assert_eq!(
                hget(&mut c, &format!("{LATEST}{sym}"), "last_plan_id"),
                Some(plan)
            );
            assert_eq!(
                hget(&mut c, &format!("{LATEST}{sym}"), "heat_level"),
                Some(last.to_string())
            );
        }
        assert_eq!(
            metric(&mut c, "p27_loops_total") - loops,
            3.0,
            "steps of 10, 10, 5"
        );
        assert_eq!(
            metric(&mut c, "p27_written_total{kind=\"latest_symbol\"}") - latest,
            3.0,
            "one latest write per symbol for the pass"
        );
        assert_eq!(
            metric(&mut c, "p27_written_total{kind=\"by_plan\"}") - by_plan,
            25.0
        );
        assert_eq!(metric(&mut c, "p27_in_messages_total") - read, 25.0);
        assert_eq!(
            group_field(&mut c, STREAM, "heat_bridge", "entries-read").as_deref(),
            Some("26")
        );
        assert_eq!(
            group_field(&mut c, STREAM, "heat_bridge", "pending").as_deref(),
            Some("0")
        );
    });
}

#[test]
fn binary_values_are_copied_byte_for_byte() {
    for_each_flavor(|flavor| {
        let s = Options::new(flavor).without_exporter().start();
        let mut c = s.conn();
        let plan: &[u8] = b"bin\x00\xff*?[x]{tag}";
        let value: &[u8] = b"\x00\x01\xfe\r\n%s%n";
        let _: String = redis::cmd("XADD")
            .arg(STREAM)
            .arg("*")
            .arg("symbol")
            .arg(b"S\xff".as_slice())
            .arg("plan_id")
            .arg(plan)
            .arg("debug_json")
            .arg(value)
            .query(&mut c)
            .unwrap();
        let mut key = BY_PLAN.as_bytes().to_vec();
        key.extend_from_slice(plan);
        let got: Vec<u8> = redis::cmd("HGET")
            .arg(&key)
            .arg("debug_json")
            .query(&mut c)
            .unwrap();
        assert_eq!(got, value);
        let mut latest = LATEST.as_bytes().to_vec();
        latest.extend_from_slice(b"S\xff");
        let ptr: Vec<u8> = redis::cmd("HGET")
            .arg(&latest)
            .arg("last_plan_id")
            .query(&mut c)
            .unwrap();
        assert_eq!(ptr, plan);
    });
}
