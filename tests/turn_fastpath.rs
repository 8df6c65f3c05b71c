//! `project-at turn` takes a turn's entries from their XADDs past one step's `batch`, up to
//! `fastpath::MAX_TAKEN`: every entry is projected exactly, around that bound, with refused
//! XADDs, other streams' XADDs and settings changed inside a turn. From the session-7 review.

mod common;
use common::*;

const GROUP: &str = "heat_bridge";
const POINTER: &str = "quantum:harvest:heat:latest_plan_id:";
const BY_PLAN: &str = "quantum:harvest:heat:by_plan:";

/// How many of the plans `plan(0..n)` have no by_plan key.
fn missing_by_plan(c: &mut Connection, n: usize, plan: impl Fn(usize) -> String) -> usize {
    let mut p = redis::pipe();
    for i in 0..n {
        p.cmd("EXISTS").arg(format!("{BY_PLAN}{}", plan(i)));
    }
    let found: Vec<i64> = p.query(c).expect("EXISTS");
    found.iter().filter(|&&f| f == 0).count()
}

/// A server projecting per turn, its housekeeping tick out of the way, with a first
/// decision projected.
fn turn_server(flavor: Flavor) -> Server {
    let s = Options::new(flavor)
        .without_exporter()
        .module_arg("poll-ms", "60000")
        .module_arg("project-at", "turn")
        .start();
    let mut c = s.conn();
    inject(&mut c, "W", "warm");
    wait_drained(&mut c);
    s
}

/// `project-at turn`, fast path on: pipelines of 1 to 1,500 XADDs (around `MAX_TAKEN`),
/// mixed with XADDs that fail (an ID too small, NOMKSTREAM on a missing key), XADDs on an
/// unlisted stream and explicit IDs, with `heatbridge.batch` changed between rounds. After
/// each round every entry's by_plan holds exactly its fields, each symbol's pointer names
/// its last plan, nothing is unread or pending, and the group's read counter is the
/// stream's length (nothing is deleted here).
#[test]
fn turn_pipelines_around_max_taken_project_every_entry() {
    for_each_flavor(|flavor| {
        let s = turn_server(flavor);
        let mut c = s.conn();
        let mut total = 1usize;
        let mut last_plan: std::collections::BTreeMap<String, String> = Default::default();
        let sizes = [1usize, 9, 10, 11, 999, 1000, 1001, 1500, 400, 2];
        let batches = ["10", "1", "7", "250", "3", "10", "200", "2", "10", "10"];
        for (round, (&n, batch)) in sizes.iter().zip(batches).enumerate() {
            config_set(&mut c, "heatbridge.batch", batch).expect("batch");
            let mut p = redis::pipe();
            for i in 0..n {
                let plan = format!("r{round}-{i}");
                let sym = format!("S{}", (i * 7 + round) % 13);
                let mut cmd = redis::cmd("XADD");
                cmd.arg(STREAM);
                if i % 97 == 5 {
                    cmd.arg("MAXLEN").arg("~").arg("1000000");
                }
                cmd.arg("*");
                for (k, v) in decision(&sym, &plan, &[("i", &i.to_string())]) {
                    cmd.arg(k).arg(v);
                }
                p.add_command(cmd).ignore();
                last_plan.insert(sym, plan);
                total += 1;
                if i % 50 == 17 {
                    // Refused: an ID below the stream's last one.
                    p.cmd("XADD")
                        .arg(STREAM)
                        .arg("1-1")
                        .arg("symbol")
                        .arg("X")
                        .arg("plan_id")
                        .arg("never")
                        .ignore();
                    p.cmd("XADD")
                        .arg("other:stream")
                        .arg("*")
                        .arg("symbol")
                        .arg("X")
                        .arg("plan_id")
                        .arg("other")
                        .ignore();
                    p.cmd("XADD")
                        .arg("missing:stream")
                        .arg("NOMKSTREAM")
                        .arg("*")
                        .arg("a")
                        .arg("b")
                        .ignore();
                }
            }
            // Errors in a pipeline come back as errors of the whole query: ignore them.
            let _: redis::RedisResult<redis::Value> = p.query(&mut c);
            wait_drained(&mut c);
            let len: usize = redis::cmd("XLEN").arg(STREAM).query(&mut c).expect("XLEN");
            assert_eq!(len, total, "{flavor:?} round {round}: stream length");
            assert_eq!(
                group_field(&mut c, STREAM, GROUP, "entries-read"),
                Some(total.to_string()),
                "{flavor:?} round {round}: the group's read counter"
            );
            for (sym, plan) in &last_plan {
                assert_eq!(
                    get(&mut c, &format!("{POINTER}{sym}")).as_deref(),
                    Some(plan.as_str()),
                    "{flavor:?} round {round}: pointer of {sym}"
                );
            }
            let missing = missing_by_plan(&mut c, n, |i| format!("r{round}-{i}"));
            assert_eq!(missing, 0, "{flavor:?} round {round}: by_plan keys missing");
        }
        assert!(!exists(&mut c, &format!("{BY_PLAN}never")));
        let taken: u64 = heatbridge_info(&mut c, "heatbridge_entries_from_commands_total")
            .parse()
            .expect("taken");
        eprintln!("{flavor:?}: {taken} of {total} entries taken from their commands");
    });
}

/// `project-at turn`: one pipeline of 1,800 XADDs with the fast path switched off and on,
/// `heatbridge.batch` changed, and HEATBRIDGE.* commands between them, sent as one burst.
/// Every entry is projected as stored and the group's read counter is the stream's length.
#[test]
fn fast_path_toggles_inside_a_turn_lose_nothing() {
    for_each_flavor(|flavor| {
        let s = turn_server(flavor);
        let mut c = s.conn();
        let mut p = redis::pipe();
        let mut last: std::collections::BTreeMap<String, String> = Default::default();
        for i in 0..1800 {
            match i {
                300 => {
                    p.cmd("CONFIG")
                        .arg(&["SET", "heatbridge.fast-path", "no"][..])
                        .ignore();
                }
                600 => {
                    p.cmd("CONFIG")
                        .arg(&["SET", "heatbridge.fast-path", "yes"][..])
                        .ignore();
                }
                900 => {
                    p.cmd("CONFIG")
                        .arg(&["SET", "heatbridge.batch", "3"][..])
                        .ignore();
                }
                1200 => {
                    p.cmd("HEATBRIDGE.LATEST").arg("S1").ignore();
                }
                1500 => {
                    p.cmd("CONFIG")
                        .arg(&["SET", "heatbridge.batch", "200"][..])
                        .ignore();
                }
                _ => {}
            }
            let sym = format!("S{}", i % 11);
            let plan = format!("t-{i}");
            let cmd = xadd_decision(STREAM, &sym, &plan, &[]);
            p.add_command(cmd).ignore();
            last.insert(sym, plan);
        }
        p.query::<()>(&mut c).expect("pipeline");
        wait_drained(&mut c);
        assert_eq!(missing_by_plan(&mut c, 1800, |i| format!("t-{i}")), 0);
        for (sym, plan) in &last {
            assert_eq!(
                get(&mut c, &format!("{POINTER}{sym}")).as_deref(),
                Some(plan.as_str()),
                "{flavor:?}: pointer of {sym}"
            );
        }
        assert_eq!(
            group_field(&mut c, STREAM, GROUP, "entries-read"),
            Some("1801".to_string()),
            "{flavor:?}"
        );
    });
}
