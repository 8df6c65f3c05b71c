//! Reliability: the module never crashes the server and never writes where it must not, in
//! the corners an operator or another module can drive it into: paused writes and failover,
//! a failed MODULE LOAD, calls through RedisModule_Call, a group cursor moved by hand, entries
//! finished out of stream order, configuration precedence, keys of the wrong type, fork
//! children, and MODULE UNLOAD during catch-up.

mod common;
use common::*;

use std::time::{Duration, Instant};

const BY_PLAN: &str = "quantum:harvest:heat:by_plan:";
const LATEST: &str = "quantum:harvest:heat:latest:";
const POINTER: &str = "quantum:harvest:heat:latest_plan_id:";
const DEDUPE: &str = "quantum:dedupe:p27:";

/// One field of `INFO <section>` (`name:value` lines).
fn info_field(c: &mut Connection, section: &str, name: &str) -> String {
    let text: String = redis::cmd("INFO").arg(section).query(c).expect("INFO");
    text.lines()
        .find_map(|l| {
            let (k, v) = l.trim_end().split_once(':')?;
            (k == name).then(|| v.to_string())
        })
        .unwrap_or_else(|| panic!("INFO {section} has no {name}: {text}"))
}

/// INFO's backlog; `u64::MAX` until the first housekeeping tick has counted it.
fn backlog(c: &mut Connection) -> u64 {
    info_field(c, "heatbridge", "heatbridge_backlog")
        .parse()
        .unwrap_or(u64::MAX)
}

fn module_load(c: &mut Connection, args: &[String]) -> Result<(), String> {
    let mut cmd = redis::cmd("MODULE");
    cmd.arg("LOAD").arg(module_path().display().to_string());
    for a in args {
        cmd.arg(a);
    }
    cmd.query::<()>(c).map_err(|e| e.to_string())
}

fn module_unload(c: &mut Connection) -> Result<(), String> {
    redis::cmd("MODULE")
        .arg("UNLOAD")
        .arg("heatbridge")
        .query::<()>(c)
        .map_err(|e| e.to_string())
}

/// In one transaction: an entry of `symbol` on `older` that another consumer of the group
/// reads before the module does, then a newer one on `newer`. Returns the older entry's ID.
fn older_read_by_another(c: &mut Connection, symbol: &str, older: &str, newer: &str) -> String {
    let (id, _, _): (String, redis::Value, String) = redis::pipe()
        .atomic()
        .cmd("XADD")
        .arg(STREAM)
        .arg("*")
        .arg(fields(&decision(symbol, older, &[])))
        .cmd("XREADGROUP")
        .arg(
            &[
                "GROUP",
                "heat_bridge",
                "other",
                "COUNT",
                "1",
                "STREAMS",
                STREAM,
                ">",
            ][..],
        )
        .cmd("XADD")
        .arg(STREAM)
        .arg("*")
        .arg(fields(&decision(symbol, newer, &[])))
        .query(c)
        .expect("MULTI");
    id
}

/// XCLAIMs entry `id` to the module's consumer, which then finishes it as pending.
fn claim_for_us(c: &mut Connection, id: &str) {
    let _: redis::Value = redis::cmd("XCLAIM")
        .arg(&[STREAM, "heat_bridge", "heat_bridge_1", "0", id][..])
        .query(c)
        .expect("XCLAIM");
}

/// A decision's fields as XADD arguments.
fn fields(d: &[(String, String)]) -> Vec<String> {
    d.iter().flat_map(|(k, v)| [k.clone(), v.clone()]).collect()
}

fn group_cursor(c: &mut Connection) -> (Option<String>, Option<String>) {
    (
        group_field(c, STREAM, "heat_bridge", "last-delivered-id"),
        group_field(c, STREAM, "heat_bridge", "entries-read"),
    )
}

/// While `CLIENT PAUSE WRITE` is in force the module writes nothing, even with a backlog to
/// catch up on; projection resumes when the pause ends. AOF is on so that every write is
/// propagated: a write during the pause trips the server's propagation assertion.
#[test]
fn paused_writes_hold_projection_until_the_pause_ends() {
    for_each_flavor(|flavor| {
        let mut s = Options::new(flavor)
            .without_exporter()
            .module_arg("poll-ms", "100")
            .arg("--appendonly", "yes")
            .start();
        let mut c = s.conn();
        inject(&mut c, "W", "warm");
        wait_drained(&mut c);
        module_unload(&mut c).expect("MODULE UNLOAD");
        xadd_pipelined(&mut c, 500, |i| format!("S{}", i % 7), |i| format!("pz{i}"));
        let cursor = group_cursor(&mut c);
        let keys: i64 = redis::cmd("DBSIZE").query(&mut c).expect("DBSIZE");
        let offset = info_field(&mut c, "replication", "master_repl_offset");
        let _: () = redis::cmd("CLIENT")
            .arg("PAUSE")
            .arg(2000)
            .arg("WRITE")
            .query(&mut c)
            .expect("CLIENT PAUSE");
        let paused = Instant::now();
        module_load(&mut c, &s.module_args()).expect("MODULE LOAD while paused");
        // Several housekeeping ticks and event-loop turns while the pause holds.
        std::thread::sleep(Duration::from_millis(700));
        assert_alive(&mut s, "while writes were paused");
        let mut r = s.conn();
        assert!(
            paused.elapsed() < Duration::from_millis(1800),
            "the checks ran after the pause had ended: nothing was tested"
        );
        assert_eq!(group_cursor(&mut r), cursor, "the group moved while paused");
        assert!(!exists(&mut r, &format!("{BY_PLAN}pz0")));
        let now_keys: i64 = redis::cmd("DBSIZE").query(&mut r).expect("DBSIZE");
        assert_eq!(now_keys, keys, "keys were written while paused");
        assert_eq!(
            info_field(&mut r, "replication", "master_repl_offset"),
            offset
        );
        wait_drained(&mut r);
        assert!(exists(&mut r, &format!("{BY_PLAN}pz499")));
        wait_for(5, "INFO backlog 0", || backlog(&mut r) == 0);
        assert_alive(&mut s, "after the pause");
    });
}

/// A MODULE LOAD refused for an invalid argument leaves nothing registered behind: stream
/// entries, other writes and cron ticks afterwards reach no code of the unloaded module, and
/// a later valid MODULE LOAD projects everything.
#[test]
fn a_refused_module_load_leaves_the_server_working() {
    for_each_flavor(|flavor| {
        let mut s = Options::new(flavor)
            .without_module()
            .without_exporter()
            .start();
        let mut c = s.conn();
        let mut bad = s.module_args();
        bad.extend(["ttl-plan-sec".to_string(), "-1".to_string()]);
        let refused = module_load(&mut c, &bad);
        assert!(refused.is_err(), "ttl-plan-sec -1 was accepted");
        let mut p = redis::pipe();
        for i in 0..5 {
            let d = decision("S", &format!("fl{i}"), &[]);
            p.cmd("XADD").arg(STREAM).arg("*").arg(fields(&d));
        }
        let other = decision("S", "elsewhere", &[]);
        p.cmd("XADD")
            .arg("some:other:stream")
            .arg("*")
            .arg(fields(&other));
        p.cmd("SET").arg("k").arg("v");
        if let Err(e) = p.query::<redis::Value>(&mut c) {
            assert_alive(
                &mut s,
                &format!("at XADD after a refused MODULE LOAD ({e})"),
            );
        }
        // Several cron ticks.
        std::thread::sleep(Duration::from_millis(1000));
        assert_alive(&mut s, "after a refused MODULE LOAD");
        let mut c = s.conn();
        module_load(&mut c, &s.module_args()).expect("MODULE LOAD with valid arguments");
        wait_drained(&mut c);
        for i in 0..5 {
            assert!(exists(&mut c, &format!("{BY_PLAN}fl{i}")));
        }
        inject(&mut c, "S", "fl_live");
        wait_for(5, "the live entry", || {
            exists(&mut c, &format!("{BY_PLAN}fl_live"))
        });
        assert_alive(&mut s, "after the valid MODULE LOAD");
    });
}

/// `CALLER.CALL`/`CALLER.CALLACL` `<cmd> args...` through RedisModule_Call.
fn call_through(c: &mut Connection, via: &str, args: &[&str]) -> redis::RedisResult<redis::Value> {
    let mut cmd = redis::cmd(via);
    for a in args {
        cmd.arg(*a);
    }
    cmd.query(c)
}

fn pairs(v: redis::Value) -> Vec<(String, String)> {
    let mut p: Vec<(String, String)> = redis::from_redis_value(&v).expect("field/value pairs");
    p.sort();
    p
}

/// Another module may call every HEATBRIDGE command through RedisModule_Call, whose
/// temporary client has no user: the replies are those a connection gets.
#[test]
fn commands_called_by_another_module_reply_as_for_a_client() {
    for_each_flavor(|flavor| {
        let mut s = Options::new(flavor).without_exporter().start();
        let mut c = s.conn();
        load_caller_module(&s, &mut c);
        inject(&mut c, "S", "cm1");
        wait_drained(&mut c);
        let by_plan = hgetall(&mut c, &format!("{BY_PLAN}cm1"));
        let latest = hgetall(&mut c, &format!("{LATEST}S"));
        for (replayed, via) in ["CALLER.CALL", "CALLER.CALLACL"].into_iter().enumerate() {
            let when = format!("after {via} HEATBRIDGE.GET");
            let got = call_through(&mut c, via, &["HEATBRIDGE.GET", "cm1"]);
            assert_alive(&mut s, &when);
            assert_eq!(pairs(got.expect(&when)), by_plan, "{via} GET");
            let got = call_through(&mut c, via, &["HEATBRIDGE.GET", "missing"]);
            assert_alive(
                &mut s,
                &format!("after {via} HEATBRIDGE.GET of a missing plan"),
            );
            assert_eq!(
                got.expect("GET missing"),
                redis::Value::Nil,
                "{via} GET missing"
            );
            let got = call_through(&mut c, via, &["HEATBRIDGE.LATEST", "S"]);
            assert_alive(&mut s, &format!("after {via} HEATBRIDGE.LATEST"));
            assert_eq!(pairs(got.expect("LATEST")), latest, "{via} LATEST");
            let got = call_through(&mut c, via, &["HEATBRIDGE.LATEST", "NOPE"]);
            assert_alive(
                &mut s,
                &format!("after {via} HEATBRIDGE.LATEST of a missing symbol"),
            );
            assert_eq!(got.expect("LATEST missing"), redis::Value::Nil);
            let got = call_through(&mut c, via, &["HEATBRIDGE.HEALTH"]);
            assert_alive(&mut s, &format!("after {via} HEATBRIDGE.HEALTH"));
            let text: String = redis::from_redis_value(&got.expect("HEALTH")).expect("a string");
            let json: serde_json::Value = serde_json::from_str(&text).expect("health JSON");
            assert_eq!(json["status"], "ok", "{via} HEALTH: {text}");
            let got = call_through(&mut c, via, &["HEATBRIDGE.METRICS"]);
            assert_alive(&mut s, &format!("after {via} HEATBRIDGE.METRICS"));
            let text: String = redis::from_redis_value(&got.expect("METRICS")).expect("a string");
            // Projected once, and once more by each REPLAY before this one.
            assert_eq!(
                sample(&text, "p27_written_total{kind=\"by_plan\"}"),
                Some(1.0 + replayed as f64)
            );
            let got = call_through(&mut c, via, &["HEATBRIDGE.REPLAY", "COUNT", "5"]);
            assert_alive(&mut s, &format!("after {via} HEATBRIDGE.REPLAY"));
            let (n, _last): (i64, String) =
                redis::from_redis_value(&got.expect("REPLAY")).expect("[count, last-id]");
            assert_eq!(n, 1, "{via} REPLAY");
        }
    });
}

/// Every derived key of the plans `plans` and of symbol `S`.
fn delete_derived(c: &mut Connection, plans: impl Iterator<Item = String>) {
    let mut cmd = redis::cmd("DEL");
    cmd.arg(format!("{LATEST}S")).arg(format!("{POINTER}S"));
    for p in plans {
        cmd.arg(format!("{BY_PLAN}{p}")).arg(format!("{DEDUPE}{p}"));
    }
    let _: i64 = cmd.query(c).expect("DEL");
}

fn setid(c: &mut Connection, id: &str, entries_read: u64) {
    let _: () = redis::cmd("XGROUP")
        .arg("SETID")
        .arg(STREAM)
        .arg("heat_bridge")
        .arg(id)
        .arg("ENTRIESREAD")
        .arg(entries_read)
        .query(c)
        .expect("XGROUP SETID");
}

/// An operator who moves the group's cursor back (`XGROUP SETID`, with whatever ENTRIESREAD)
/// gets every entry after it projected again, in stream order.
#[test]
fn moving_the_group_cursor_back_projects_the_entries_again() {
    for_each_flavor(|flavor| {
        let s = Options::new(flavor)
            .without_exporter()
            .module_arg("poll-ms", "100")
            .start();
        let mut c = s.conn();
        let ids: Vec<String> = (1..=20)
            .map(|i| inject(&mut c, "S", &format!("mc{i}")))
            .collect();
        wait_drained(&mut c);
        let plans = || (1..=20).map(|i| format!("mc{i}"));

        // An ENTRIESREAD that disagrees with the ID: the ID is what counts.
        delete_derived(&mut c, plans());
        setid(&mut c, "0", 17);
        wait_for(5, "all 20 projected again", || {
            plans().all(|p| exists(&mut c, &format!("{BY_PLAN}{p}")))
        });
        wait_drained(&mut c);
        assert_eq!(get(&mut c, &format!("{POINTER}S")).as_deref(), Some("mc20"));
        assert_eq!(
            hget(&mut c, &format!("{LATEST}S"), "plan_id").as_deref(),
            Some("mc20")
        );

        // Back to entry 10 with its true ENTRIESREAD: 11..20 again, 1..10 untouched.
        delete_derived(&mut c, plans());
        setid(&mut c, &ids[9], 10);
        wait_for(5, "entries 11..20 projected again", || {
            (11..=20).all(|i| exists(&mut c, &format!("{BY_PLAN}mc{i}")))
        });
        wait_drained(&mut c);
        assert!((1..=10).all(|i| !exists(&mut c, &format!("{BY_PLAN}mc{i}"))));
        assert_eq!(get(&mut c, &format!("{POINTER}S")).as_deref(), Some("mc20"));
    });
}

/// `HEATBRIDGE.REPLAY` of an older entry does not turn latest back to it.
#[test]
fn replaying_an_older_entry_keeps_latest_on_the_newest() {
    for_each_flavor(|flavor| {
        let s = Options::new(flavor).without_exporter().start();
        let mut c = s.conn();
        inject(&mut c, "S", "older");
        inject(&mut c, "S", "newer");
        wait_drained(&mut c);
        let (n, _): (i64, String) = redis::cmd("HEATBRIDGE.REPLAY")
            .arg("COUNT")
            .arg(1)
            .query(&mut c)
            .expect("REPLAY");
        assert_eq!(n, 1);
        assert_eq!(
            get(&mut c, &format!("{POINTER}S")).as_deref(),
            Some("newer")
        );
        assert_eq!(
            hget(&mut c, &format!("{LATEST}S"), "plan_id").as_deref(),
            Some("newer")
        );
    });
}

/// An entry finished from our consumer's pending list after a newer entry of the same symbol
/// was projected (it was delivered to another consumer, then XCLAIMed to ours) does not turn
/// latest back to it: with dedupe off, and with dedupe on but the newer entry's dedupe key
/// gone.
#[test]
fn finishing_an_older_pending_entry_keeps_latest_on_the_newest() {
    for_each_flavor(|flavor| {
        for dedupe in ["0", "120"] {
            eprintln!("dedupe-ttl-sec {dedupe}");
            let s = Options::new(flavor)
                .without_exporter()
                .module_arg("poll-ms", "100")
                .module_arg("dedupe-ttl-sec", dedupe)
                .start();
            let mut c = s.conn();
            inject(&mut c, "W", "warm");
            wait_drained(&mut c);
            // A reaches another consumer before the module reads it; B is read by the module.
            let older = older_read_by_another(&mut c, "S", "older", "newer");
            wait_for(5, "newer projected", || {
                get(&mut c, &format!("{POINTER}S")).as_deref() == Some("newer")
            });
            let _: i64 = redis::cmd("DEL")
                .arg(format!("{DEDUPE}newer"))
                .query(&mut c)
                .expect("DEL");
            claim_for_us(&mut c, &older);
            wait_drained(&mut c);
            assert!(
                exists(&mut c, &format!("{BY_PLAN}older")),
                "older was finished"
            );
            assert_eq!(
                get(&mut c, &format!("{POINTER}S")).as_deref(),
                Some("newer")
            );
            assert_eq!(
                hget(&mut c, &format!("{LATEST}S"), "plan_id").as_deref(),
                Some("newer")
            );
        }
    });
}

/// An explicit `heatbridge.*` setting (command line or redis.conf) wins over a loadmodule
/// argument.
#[test]
fn command_line_settings_win_over_module_arguments() {
    for_each_flavor(|flavor| {
        let s = Options::new(flavor)
            .without_exporter()
            .module_arg("batch", "20")
            .arg("--heatbridge.batch", "10")
            .start();
        let mut c = s.conn();
        assert_eq!(config_get(&mut c, "heatbridge.batch"), "10", "command line");
    });
}

/// A setting persisted by CONFIG REWRITE wins over the loadmodule argument after a restart.
#[test]
fn rewritten_settings_win_over_module_arguments_after_a_restart() {
    for_each_flavor(|flavor| {
        let line = format!(
            "loadmodule {} batch 20 metrics-port 0 health-port 0",
            module_path().display()
        );
        let mut s = ConfFileServer::start(flavor, &[line]);
        let mut c = s.conn();
        assert_eq!(config_get(&mut c, "heatbridge.batch"), "20");
        config_set(&mut c, "heatbridge.batch", "10").expect("CONFIG SET");
        let _: () = redis::cmd("CONFIG")
            .arg("REWRITE")
            .query(&mut c)
            .expect("CONFIG REWRITE");
        s.restart();
        let mut c = s.conn();
        assert_eq!(
            config_get(&mut c, "heatbridge.batch"),
            "10",
            "after CONFIG REWRITE and a restart"
        );
    });
}

/// CONFIG SET of metrics-port equal to a non-zero health-port (or the reverse) is refused,
/// and the old value stays.
#[test]
fn equal_exporter_ports_are_refused_by_config_set() {
    for_each_flavor(|flavor| {
        let s = Options::new(flavor).start();
        let mut c = s.conn();
        let health = s.health_port.to_string();
        let refused = config_set(&mut c, "heatbridge.metrics-port", &health);
        assert!(refused.is_err(), "metrics-port = health-port accepted");
        assert_eq!(
            config_get(&mut c, "heatbridge.metrics-port"),
            s.metrics_port.to_string()
        );
        let refused = config_set(
            &mut c,
            "heatbridge.health-port",
            &s.metrics_port.to_string(),
        );
        assert!(refused.is_err(), "health-port = metrics-port accepted");
        assert_eq!(config_get(&mut c, "heatbridge.health-port"), health);
    });
}

/// MODULE LOAD with metrics-port equal to a non-zero health-port is refused.
#[test]
fn equal_exporter_ports_are_refused_at_load() {
    for_each_flavor(|flavor| {
        let s = Options::new(flavor).without_module().start();
        let mut c = s.conn();
        let port = free_port().to_string();
        let args: Vec<String> = ["metrics-port", &port, "health-port", &port]
            .iter()
            .map(|a| a.to_string())
            .collect();
        assert!(
            module_load(&mut c, &args).is_err(),
            "MODULE LOAD with equal ports accepted"
        );
    });
}

/// A projection refused for a key of the wrong type is not counted as written.
#[test]
fn keys_of_the_wrong_type_are_not_counted_as_written() {
    for_each_flavor(|flavor| {
        let s = Options::new(flavor).without_exporter().start();
        let mut c = s.conn();
        let _: () = redis::cmd("SET")
            .arg(format!("{BY_PLAN}wt1"))
            .arg("x")
            .query(&mut c)
            .expect("SET");
        let _: () = redis::cmd("SET")
            .arg(format!("{LATEST}WL"))
            .arg("x")
            .query(&mut c)
            .expect("SET");
        inject(&mut c, "WT", "wt1");
        inject(&mut c, "WL", "wt2");
        inject(&mut c, "OK", "wt3");
        wait_drained(&mut c);
        let t: String = redis::cmd("TYPE")
            .arg(format!("{BY_PLAN}wt1"))
            .query(&mut c)
            .expect("TYPE");
        assert_eq!(t, "string", "the foreign key stays");
        // wt2 and wt3 wrote by_plan; wt1 and wt3 wrote latest.
        assert_eq!(metric(&mut c, "p27_written_total{kind=\"by_plan\"}"), 2.0);
        assert_eq!(
            metric(&mut c, "p27_written_total{kind=\"latest_symbol\"}"),
            2.0
        );
    });
}

fn encoding(c: &mut Connection, key: &str) -> String {
    redis::cmd("OBJECT")
        .arg("ENCODING")
        .arg(key)
        .query(c)
        .expect("OBJECT ENCODING")
}

/// Reading the dedupe key (a duplicate decision) and the latest_plan_id pointer (finishing
/// a pending entry) leaves their encodings as they were.
#[test]
fn reading_string_keys_keeps_their_encoding() {
    for_each_flavor(|flavor| {
        let s = Options::new(flavor)
            .without_exporter()
            .module_arg("poll-ms", "100")
            .start();
        let mut c = s.conn();
        inject(&mut c, "E", "enc1");
        wait_drained(&mut c);
        let dedupe_key = format!("{DEDUPE}enc1");
        let before = encoding(&mut c, &dedupe_key);
        inject(&mut c, "E", "enc1");
        wait_drained(&mut c);
        assert_eq!(metric(&mut c, "p27_dedupe_skips_total"), 1.0);
        assert_eq!(encoding(&mut c, &dedupe_key), before, "dedupe key");

        // An older entry pending for our consumer makes the module read the pointer.
        let older = older_read_by_another(&mut c, "E", "enc_old", "enc_new");
        let pointer = format!("{POINTER}E");
        wait_for(5, "enc_new projected", || {
            get(&mut c, &pointer).as_deref() == Some("enc_new")
        });
        let before = encoding(&mut c, &pointer);
        claim_for_us(&mut c, &older);
        wait_drained(&mut c);
        assert!(exists(&mut c, &format!("{BY_PLAN}enc_old")));
        assert_eq!(encoding(&mut c, &pointer), before, "latest_plan_id pointer");
    });
}

fn refused(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(1),
    )
    .is_err()
}

/// A port the exporter gives up is closed at once, even while a fork child (BGSAVE) runs:
/// on a rebind by CONFIG SET and on MODULE UNLOAD.
#[test]
fn exporter_ports_close_while_a_fork_child_runs() {
    for_each_flavor(|flavor| {
        // Each key takes the child a second, so it outlives the checks; with a handful of
        // keys it ends on its own within seconds even if the test fails.
        let s = Options::new(flavor)
            .arg("--rdb-key-save-delay", "1000000")
            .start();
        let mut c = s.conn();
        inject(&mut c, "F", "fork1");
        wait_drained(&mut c);
        wait_for(10, "the exporter bound", || {
            s.http_get(s.metrics_port, "/metrics").is_some()
        });
        let _: String = redis::cmd("BGSAVE").query(&mut c).expect("BGSAVE");
        let new_port = free_port();
        config_set(&mut c, "heatbridge.metrics-port", &new_port.to_string())
            .expect("CONFIG SET metrics-port");
        wait_for(10, "the new port bound", || {
            s.http_get(new_port, "/metrics").is_some()
        });
        assert!(
            refused(s.metrics_port),
            "the old metrics port still accepts"
        );
        module_unload(&mut c).expect("MODULE UNLOAD");
        assert!(refused(new_port), "the metrics port accepts after unload");
        assert!(
            refused(s.health_port),
            "the health port accepts after unload"
        );
        assert_eq!(
            info_field(&mut c, "persistence", "rdb_bgsave_in_progress"),
            "1",
            "the fork child ended before the checks"
        );
    });
}

/// MODULE UNLOAD succeeds at the first attempt while a long catch-up is under way.
#[test]
fn module_unload_succeeds_during_catch_up() {
    for_each_flavor(|flavor| {
        let s = Options::new(flavor).without_exporter().start();
        let mut c = s.conn();
        inject(&mut c, "W", "warm");
        wait_drained(&mut c);
        module_unload(&mut c).expect("MODULE UNLOAD at rest");
        for chunk in 0..300 {
            let mut p = redis::pipe();
            for i in 0..1000 {
                p.cmd("XADD")
                    .arg(STREAM)
                    .arg("*")
                    .arg("symbol")
                    .arg("S")
                    .arg("plan_id")
                    .arg(format!("u{chunk}_{i}"))
                    .ignore();
            }
            p.query::<()>(&mut c).expect("XADD pipeline");
        }
        module_load(&mut c, &s.module_args()).expect("MODULE LOAD");
        wait_for(10, "catch-up under way", || {
            info_field(&mut c, "heatbridge", "heatbridge_in_messages_total") != "0"
        });
        let left = backlog(&mut c);
        assert!(
            left > 0 && left != u64::MAX,
            "catch-up ended before the unload"
        );
        module_unload(&mut c).expect("MODULE UNLOAD during catch-up");
    });
}

/// FAILOVER under steady XADD traffic completes promptly: the module writes nothing while
/// the master waits for its replica, and the promoted replica projects new entries.
#[test]
fn failover_completes_under_traffic() {
    for_each_flavor(|flavor| {
        let mut master = Options::new(flavor)
            .without_exporter()
            .module_arg("poll-ms", "100")
            .arg("--repl-diskless-sync-delay", "0")
            .start();
        let replica = Options::new(flavor)
            .without_exporter()
            .module_arg("poll-ms", "100")
            .arg("--replicaof", &format!("127.0.0.1 {}", master.port))
            .start();
        let mut m = master.conn();
        let mut r = replica.conn();
        wait_for(30, "replication link up", || {
            info_field(&mut r, "replication", "master_link_status") == "up"
        });
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let producer = {
            let stop = stop.clone();
            let mut p = master.conn();
            std::thread::spawn(move || {
                let mut i = 0u64;
                // XADDs block while writes are paused and fail once the master is a replica.
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let d = decision(&format!("S{}", i % 5), &format!("fo{i}"), &[]);
                    if redis::cmd("XADD")
                        .arg(STREAM)
                        .arg("*")
                        .arg(fields(&d))
                        .query::<String>(&mut p)
                        .is_err()
                    {
                        break;
                    }
                    i += 1;
                    std::thread::sleep(Duration::from_millis(1));
                }
                i
            })
        };
        wait_for(10, "traffic projected", || {
            exists(&mut m, &format!("{BY_PLAN}fo50"))
        });
        // An XADD just before FAILOVER in one pipeline: the server runs both in one
        // event-loop turn, so the XADD's projection, where it is deferred (Redis 7.0),
        // comes due while the failover holds writes.
        let both: redis::RedisResult<(String, String)> = redis::pipe()
            .cmd("XADD")
            .arg(STREAM)
            .arg("*")
            .arg(fields(&decision("S0", "before_failover", &[])))
            .cmd("FAILOVER")
            .arg("TIMEOUT")
            .arg(5000)
            .query(&mut m);
        if let Err(e) = &both {
            assert_alive(&mut master, &format!("at FAILOVER ({e})"));
        }
        assert_eq!(both.expect("XADD and FAILOVER").1, "OK");
        let started = Instant::now();
        let role = |c: &mut Connection| info_field(c, "replication", "role");
        let mut promoted = false;
        while started.elapsed() < Duration::from_secs(6) {
            assert_alive(&mut master, "during FAILOVER");
            if role(&mut r) == "master" {
                promoted = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let sent = producer.join().expect("producer");
        assert!(promoted, "the replica was not promoted within 6 s");
        let mut m = master.conn();
        wait_for(5, "the old master a replica", || role(&mut m) == "slave");
        assert!(sent > 50);
        inject(&mut r, "S0", "after_failover");
        wait_for(5, "the new master projects", || {
            exists(&mut r, &format!("{BY_PLAN}after_failover"))
        });
        assert_alive(&mut master, "after FAILOVER");
    });
}

/// An entry left pending for our consumer far behind the cursor (25,000 later entries of
/// other symbols) is finished with its latest keys, in a pass that stays short: the check
/// that latest holds nothing newer does not scan the stream (review, session 4: the bounded
/// backward scan gave up, skipped latest for good and took 44 ms).
#[test]
fn a_pending_entry_far_behind_the_cursor_gets_its_latest() {
    for_each_flavor(|flavor| {
        let s = Options::new(flavor)
            .without_module()
            .without_exporter()
            .start();
        let mut c = s.conn();
        xadd(&mut c, STREAM, "*", &decision("A", "pa", &[]));
        let _: () = redis::cmd("XGROUP")
            .arg(&["CREATE", STREAM, "heat_bridge", "0"][..])
            .query(&mut c)
            .expect("XGROUP CREATE");
        let _: redis::Value = redis::cmd("XREADGROUP")
            .arg(&["GROUP", "heat_bridge", "heat_bridge_1", "COUNT", "1"][..])
            .arg(&["STREAMS", STREAM, ">"][..])
            .query(&mut c)
            .expect("XREADGROUP");
        xadd_pipelined(&mut c, 25_000, |_| "B".into(), |i| format!("pb{i:06}"));
        let _: () = redis::cmd("XGROUP")
            .arg(&["SETID", STREAM, "heat_bridge", "$"][..])
            .query(&mut c)
            .expect("SETID");
        module_load(
            &mut c,
            &[
                "metrics-port".into(),
                "0".into(),
                "health-port".into(),
                "0".into(),
            ],
        )
        .expect("MODULE LOAD");
        wait_drained(&mut c);
        assert!(exists(&mut c, &format!("{BY_PLAN}pa")));
        assert_eq!(get(&mut c, &format!("{POINTER}A")).as_deref(), Some("pa"));
        assert_eq!(
            hget(&mut c, &format!("{LATEST}A"), "plan_id").as_deref(),
            Some("pa")
        );
    });
}

/// Moving the cursor back over a long stream re-projects it in many short passes; none of
/// them may put an older decision into latest (review, session 4: every catch-up pass wrote
/// its own newest entry, so latest went back tens of times).
#[test]
fn a_rewound_catch_up_never_moves_latest_back() {
    for_each_flavor(|flavor| {
        let s = Options::new(flavor).without_exporter().start();
        let mut c = s.conn();
        xadd_pipelined(&mut c, 30_000, |_| "R".into(), |i| format!("p{i:06}"));
        wait_drained(&mut c);
        let newest = "p029999";
        assert_eq!(get(&mut c, &format!("{POINTER}R")).as_deref(), Some(newest));
        let _: () = redis::cmd("XGROUP")
            .arg(&["SETID", STREAM, "heat_bridge", "0"][..])
            .query(&mut c)
            .expect("SETID 0");
        let mut reader = s.conn();
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut seen = 0;
        while Instant::now() < deadline {
            let p = get(&mut reader, &format!("{POINTER}R"));
            assert_eq!(
                p.as_deref(),
                Some(newest),
                "latest went back during catch-up"
            );
            seen += 1;
        }
        assert!(seen > 10);
        wait_drained(&mut c);
        assert_eq!(get(&mut c, &format!("{POINTER}R")).as_deref(), Some(newest));
    });
}

/// A cursor on the largest possible ID is the end of the stream, not a read error.
#[test]
fn a_cursor_on_the_largest_id_is_the_end() {
    for_each_flavor(|flavor| {
        let s = Options::new(flavor)
            .without_exporter()
            .module_arg("poll-ms", "50")
            .start();
        let mut c = s.conn();
        let max = "18446744073709551615-18446744073709551615";
        xadd(&mut c, STREAM, max, &decision("M", "pmax", &[]));
        wait_drained(&mut c);
        assert!(exists(&mut c, &format!("{BY_PLAN}pmax")));
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(metric(&mut c, "p27_errors_total{stage=\"read\"}"), 0.0);
        assert_ne!(health(&mut c)["status"], "error");
    });
}

/// Latest keeps its newest decision across a change of `ttl-symbol-sec` (review, session 4:
/// ordering by expiry alone took the longer TTL for a newer decision, both ways).
#[test]
fn latest_survives_a_change_of_its_ttl() {
    for_each_flavor(|flavor| {
        let s = Options::new(flavor)
            .without_exporter()
            .module_arg("ttl-symbol-sec", "60")
            .start();
        let mut c = s.conn();
        // Raised, then an older entry replayed: latest stays on the newer one.
        inject(&mut c, "TT", "t_old");
        inject(&mut c, "TT", "t_new");
        wait_drained(&mut c);
        config_set(&mut c, "heatbridge.ttl-symbol-sec", "1800").unwrap();
        let _: (i64, String) = redis::cmd("HEATBRIDGE.REPLAY")
            .arg("COUNT")
            .arg(1)
            .query(&mut c)
            .unwrap();
        assert_eq!(
            get(&mut c, &format!("{POINTER}TT")).as_deref(),
            Some("t_new")
        );
        // Lowered, then a newer entry finished from our consumer's pending list: it is
        // written.
        inject(&mut c, "TL", "l_old");
        wait_drained(&mut c);
        config_set(&mut c, "heatbridge.ttl-symbol-sec", "60").unwrap();
        let mut t = redis::pipe();
        t.atomic();
        let mut x = redis::cmd("XADD");
        x.arg(STREAM).arg("*");
        for (k, v) in decision("TL", "l_new", &[]) {
            x.arg(k).arg(v);
        }
        t.add_command(x).ignore();
        t.cmd("XREADGROUP")
            .arg(&["GROUP", "heat_bridge", "heat_bridge_1", "COUNT", "5"][..])
            .arg(&["STREAMS", STREAM, ">"][..])
            .ignore();
        t.query::<()>(&mut c).unwrap();
        wait_drained(&mut c);
        assert_eq!(
            get(&mut c, &format!("{POINTER}TL")).as_deref(),
            Some("l_new")
        );
    });
}

/// MULTI, XADD, MODULE UNLOAD, EXEC: the XADD queued a post-notification job for the end of
/// the EXEC, which would run after the unload, into a module the server has let go (fresh
/// review, session 6). The unload is refused; the entry is projected; a later unload works.
#[test]
fn module_unload_is_refused_while_a_projection_is_queued() {
    for_each_flavor(|flavor| {
        if !flavor.projects_per_command() {
            return; // No job: per turn, the unload drops the hook and the tick catches up.
        }
        let s = Options::new(flavor).without_exporter().start();
        let mut c = s.conn();
        inject(&mut c, "U", "before");
        let mut xadd = redis::cmd("XADD");
        xadd.arg(STREAM).arg("*");
        for (k, v) in decision("U", "queued", &[]) {
            xadd.arg(k).arg(v);
        }
        let mut p = redis::pipe();
        p.atomic()
            .add_command(xadd)
            .cmd("MODULE")
            .arg("UNLOAD")
            .arg("heatbridge");
        let r: redis::RedisResult<redis::Value> = p.query(&mut c);
        eprintln!("{flavor:?}: EXEC answered {r:?}");
        let modules: redis::Value = redis::cmd("MODULE").arg("LIST").query(&mut c).unwrap();
        assert!(
            format!("{modules:?}").contains("heatbridge"),
            "the module is still loaded: {modules:?}"
        );
        assert!(s.log().contains("MODULE UNLOAD refused"), "{}", s.log());
        assert_eq!(
            get(&mut c, "quantum:harvest:heat:latest_plan_id:U").as_deref(),
            Some("queued")
        );
        let _: () = redis::cmd("MODULE")
            .arg("UNLOAD")
            .arg("heatbridge")
            .query(&mut c)
            .expect("a later MODULE UNLOAD");
    });
}
