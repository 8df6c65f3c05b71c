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

fn backlog(c: &mut Connection) -> u64 {
    info_field(c, "heatbridge", "heatbridge_backlog")
        .parse()
        .expect("a number")
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

/// `n` decisions on `plan{i}` (symbols `S{i % 7}`), XADDed in pipelines of 1000.
fn xadd_many(c: &mut Connection, prefix: &str, n: usize) {
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let mut p = redis::pipe();
        for i in chunk {
            let mut cmd = redis::cmd("XADD");
            cmd.arg(STREAM).arg("*");
            for (k, v) in decision(&format!("S{}", i % 7), &format!("{prefix}{i}"), &[]) {
                cmd.arg(k).arg(v);
            }
            p.add_command(cmd).ignore();
        }
        p.query::<()>(c).expect("XADD pipeline");
    }
}

/// Panics with the server's assertion or crash report unless it answers PING.
fn assert_alive(s: &mut Server, when: &str) {
    let client = redis::Client::open(format!("redis://127.0.0.1:{}/", s.port)).expect("URL");
    let pong = client
        .get_connection_with_timeout(Duration::from_secs(2))
        .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
    if pong.is_ok() && s.alive() {
        return;
    }
    // A crashing server writes its report before it exits.
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.alive() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = s.log();
    let report: Vec<&str> = log
        .lines()
        .filter(|l| {
            l.contains("ASSERTION")
                || l.contains("==>")
                || l.contains("crashed by signal")
                || l.contains("Accessing address")
        })
        .collect();
    panic!("the server died {when}:\n{}", report.join("\n"));
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
        xadd_many(&mut c, "pz", 500);
        let cursor = group_cursor(&mut c);
        let keys: i64 = redis::cmd("DBSIZE").query(&mut c).expect("DBSIZE");
        let offset = info_field(&mut c, "replication", "master_repl_offset");
        let _: () = redis::cmd("CLIENT")
            .arg("PAUSE")
            .arg(1500)
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
            paused.elapsed() < Duration::from_millis(1400),
            "checks ran too late"
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
