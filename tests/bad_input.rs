//! Bad input never crashes, never blocks the group, and never hides the next valid entry.

mod common;
use common::*;

const BY_PLAN: &str = "quantum:harvest:heat:by_plan:";

fn xadd_raw(c: &mut Connection, fields: &[(Vec<u8>, Vec<u8>)]) -> String {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(STREAM).arg("*");
    for (k, v) in fields {
        cmd.arg(k.as_slice()).arg(v.as_slice());
    }
    cmd.query(c).expect("XADD")
}

fn f(k: &str, v: &[u8]) -> (Vec<u8>, Vec<u8>) {
    (k.as_bytes().to_vec(), v.to_vec())
}

#[test]
fn invalid_entries_are_acknowledged_counted_and_skipped() {
    for_each_flavor(|flavor| {
        let s = Options::new(flavor).without_exporter().start();
        let mut c = s.conn();
        let big = vec![b'x'; 1024 * 1024];
        let long_id = vec![b'p'; 257];
        let mut many: Vec<(Vec<u8>, Vec<u8>)> = vec![f("plan_id", b"many"), f("symbol", b"S")];
        for i in 0..5000 {
            many.push(f(&format!("f{i}"), b"v"));
        }
        let invalid: Vec<Vec<(Vec<u8>, Vec<u8>)>> = vec![
            vec![f("symbol", b"S")],
            vec![f("plan_id", b""), f("symbol", b"S")],
            vec![f("plan_id", b"nosym")],
            vec![f("plan_id", b"emptysym"), f("symbol", b"")],
            vec![f("plan_id", &long_id), f("symbol", b"S")],
            vec![
                f("plan_id", b"huge"),
                f("symbol", b"S"),
                f("debug_json", &big),
            ],
            many,
        ];
        for (i, entry) in invalid.iter().enumerate() {
            xadd_raw(&mut c, entry);
            // The next valid entry is projected right behind each invalid one.
            let ok = format!("ok{i}");
            xadd_raw(&mut c, &[f("plan_id", ok.as_bytes()), f("symbol", b"S")]);
            assert!(
                exists(&mut c, &format!("{BY_PLAN}{ok}")),
                "after invalid #{i}"
            );
        }
        assert!(!exists(&mut c, &format!("{BY_PLAN}huge")));
        assert!(!exists(&mut c, &format!("{BY_PLAN}many")));
        assert_eq!(
            metric(&mut c, "p27_errors_total{stage=\"parse\"}"),
            invalid.len() as f64
        );
        assert_eq!(
            metric(&mut c, "p27_in_messages_total"),
            2.0 * invalid.len() as f64
        );
        wait_drained(&mut c);
        // Logged, at most one line per second (plus the summary of suppressed ones).
        let lines = s.log().matches("invalid entry").count();
        assert!((1..=3).contains(&lines), "{lines} log lines");
        let mut probe = s.conn();
        let pong: String = redis::cmd("PING").query(&mut probe).unwrap();
        assert_eq!(pong, "PONG");
    });
}

/// Odd but valid values are projected byte for byte: HeatBridge is not a validator.
#[test]
fn odd_but_valid_values_are_projected() {
    for_each_flavor(|flavor| {
        let s = Options::new(flavor).without_exporter().start();
        let mut c = s.conn();
        let cases: Vec<(&[u8], &[u8])> = vec![
            (b"glob*?[a-z]", b"SYM*"),
            (b"{tag}plan", b"{BTC}"),
            (b"\x00\x01\xff\xfe", b"\xff"),
            (b"%s%n%x", b"%d"),
            (b"with space and\nnewline", b"S\r\n"),
        ];
        for (plan, sym) in &cases {
            xadd_raw(
                &mut c,
                &[
                    f("plan_id", plan),
                    f("symbol", sym),
                    f("ts_epoch", b"not-a-number"),
                ],
            );
            let mut key = BY_PLAN.as_bytes().to_vec();
            key.extend_from_slice(plan);
            let n: i64 = redis::cmd("EXISTS").arg(&key).query(&mut c).unwrap();
            assert_eq!(n, 1, "{plan:?}");
        }
        // A non-numeric ts_epoch does not move p27_last_ts_epoch.
        assert_eq!(metric(&mut c, "p27_last_ts_epoch"), 0.0);
        assert_eq!(metric(&mut c, "p27_errors_total{stage=\"parse\"}"), 0.0);
        // Glob characters were not expanded: exactly these keys exist.
        let keys: Vec<Vec<u8>> = redis::cmd("KEYS")
            .arg(format!("{BY_PLAN}*"))
            .query(&mut c)
            .unwrap();
        assert_eq!(keys.len(), cases.len());
        wait_drained(&mut c);
    });
}

/// A foreign key of another type at a lookup key name is never overwritten, and it does not
/// block the stream.
#[test]
fn foreign_key_of_wrong_type_is_left_alone() {
    for_each_flavor(|flavor| {
        let s = Options::new(flavor).without_exporter().start();
        let mut c = s.conn();
        let _: () = redis::cmd("SET")
            .arg(format!("{BY_PLAN}taken"))
            .arg("user data")
            .query(&mut c)
            .unwrap();
        inject(&mut c, "S", "taken");
        inject(&mut c, "S", "next");
        assert_eq!(
            get(&mut c, &format!("{BY_PLAN}taken")).as_deref(),
            Some("user data")
        );
        assert!(exists(&mut c, &format!("{BY_PLAN}next")));
        assert_eq!(metric(&mut c, "p27_errors_total{stage=\"write\"}"), 1.0);
        wait_drained(&mut c);
    });
}

/// Values that reach C string and printf APIs: a NUL byte in CONFIG SET, printf directives
/// in a refused module argument. Each is refused with an error; the server stays up.
#[test]
fn nul_bytes_and_printf_directives_in_settings_are_refused_not_fatal() {
    for_each_flavor(|flavor| {
        let mut s = Options::new(flavor).without_exporter().start();
        let mut c = s.conn();
        for (name, value) in [
            ("heatbridge.bind", &b"1\x00x"[..]),
            ("heatbridge.stream-in", b"a\x00b"),
            ("heatbridge.bind", b"%s%s%s%s%n"),
        ] {
            let r: redis::RedisResult<()> = redis::cmd("CONFIG")
                .arg("SET")
                .arg(name)
                .arg(value)
                .query(&mut c);
            assert!(r.is_err(), "{name} {value:?} accepted");
        }
        assert_eq!(config_get(&mut c, "heatbridge.bind"), "127.0.0.1");
        let _: () = redis::cmd("MODULE")
            .arg("UNLOAD")
            .arg("heatbridge")
            .query(&mut c)
            .unwrap();
        // Module arguments with NUL bytes or printf directives: the crate used to hand
        // these to CString::new(..).unwrap() and to printf before HeatBridge saw them.
        for (name, value) in [
            ("bind", &b"%s%s%s%s%s%s%s%s"[..]),
            ("log-level", b"%s%s%s%s%s%s%s%s"),
            ("stream-in", b"a\x00b"),
            ("log-level", b"a\x00b"),
            ("ttl-plan-sec", b"%n%n\x00"),
        ] {
            let r: redis::RedisResult<()> = redis::cmd("MODULE")
                .arg("LOAD")
                .arg(module_path().display().to_string())
                .arg(name)
                .arg(value)
                .query(&mut c);
            assert!(r.is_err(), "{name} {value:?} loaded");
            assert!(s.alive(), "server died on {name} {value:?}");
        }
        assert!(s.alive(), "server died");
        let pong: String = redis::cmd("PING").query(&mut c).unwrap();
        assert_eq!(pong, "PONG");
        assert!(s.log().contains("heatbridge not loaded: invalid bind"));
    });
}
