//! Entries taken from the XADDs that added them (see `src/capture.rs`): a pass may project an
//! entry from the arguments its XADD carried instead of reading it back from the stream. The
//! projection must be exactly what the stream holds, whatever form the XADD took, inside
//! transactions and scripts, after refused XADDs, and when another module rewrites the
//! arguments after HeatBridge saw them.

mod common;
use common::*;

use std::collections::BTreeMap;

const BY_PLAN: &str = "quantum:harvest:heat:by_plan:";

/// An XADD's options and ID, its plan_id, and fields after the decision's.
type Form<'a> = (Vec<&'a str>, &'a str, Vec<&'a [u8]>);

/// A server whose housekeeping tick stays out of the way (it forgets the known group, and
/// entries are taken from their commands only on the known-group path).
fn quiet_server(flavor: Flavor, poll_ms: &str) -> Server {
    Options::new(flavor)
        .without_exporter()
        .module_arg("poll-ms", poll_ms)
        .start()
}

fn info(c: &mut Connection, name: &str) -> String {
    let text: String = redis::cmd("INFO").arg("heatbridge").query(c).expect("INFO");
    text.lines()
        .find_map(|l| {
            let (k, v) = l.trim_end().split_once(':')?;
            (k == format!("heatbridge_{name}")).then(|| v.to_string())
        })
        .unwrap_or_else(|| panic!("INFO heatbridge has no {name}: {text}"))
}

fn taken(c: &mut Connection) -> u64 {
    info(c, "entries_from_commands_total").parse().unwrap()
}

/// The entry `id` as the stream holds it, with later duplicates of a field winning, as in a
/// hash.
fn stream_entry(c: &mut Connection, id: &str) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let entries: Vec<(String, Vec<Vec<u8>>)> = redis::cmd("XRANGE")
        .arg(STREAM)
        .arg(id)
        .arg(id)
        .query(c)
        .expect("XRANGE");
    let (_, flat) = entries.into_iter().next().expect("the entry");
    flat.chunks(2)
        .map(|kv| (kv[0].clone(), kv[1].clone()))
        .collect()
}

/// by_plan of the entry `id` holds exactly the entry's fields.
fn assert_projected_as_stored(c: &mut Connection, id: &str) {
    let entry = stream_entry(c, id);
    let plan = entry.get(b"plan_id".as_slice()).expect("plan_id").clone();
    let mut key = BY_PLAN.as_bytes().to_vec();
    key.extend_from_slice(&plan);
    let hash: BTreeMap<Vec<u8>, Vec<u8>> =
        redis::cmd("HGETALL").arg(&key).query(c).expect("HGETALL");
    let show = |m: &BTreeMap<Vec<u8>, Vec<u8>>| {
        m.iter()
            .map(|(k, v)| {
                format!(
                    "{}={:?}",
                    String::from_utf8_lossy(k),
                    String::from_utf8_lossy(v)
                )
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert!(
        hash == entry,
        "by_plan of entry {id}: {} but the stream holds {}",
        show(&hash),
        show(&entry)
    );
}

/// An XADD with `head` (options and ID) before a decision's fields and `tail` after them.
fn xadd_with(c: &mut Connection, head: &[&str], plan: &str, tail: &[&[u8]]) -> String {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(STREAM);
    for a in head {
        cmd.arg(*a);
    }
    for (k, v) in decision("SYM1", plan, &[]) {
        cmd.arg(k).arg(v);
    }
    for a in tail {
        cmd.arg(*a);
    }
    cmd.query(c).expect("XADD")
}

/// A first decision, so that the next passes know the group; and the module check done.
fn warm_up(c: &mut Connection) {
    inject(c, "SYM0", "warm");
    wait_drained(c);
    wait_for(10, "the module check", || {
        info(c, "entries_from_commands") == "on"
    });
}

#[test]
fn every_form_of_xadd_projects_what_the_stream_holds() {
    for_each_flavor(|flavor| {
        let s = quiet_server(flavor, "60000");
        let mut c = s.conn();
        warm_up(&mut c);
        let before = taken(&mut c);
        // Explicit IDs a little ahead of the clock, so that the XADDs with `*` before them
        // cannot have passed them.
        let now = server_now_ms(&mut c) + 1000;
        let (full, ms_only, ms_star) = (
            format!("{now}-7"),
            format!("{}", now + 1),
            format!("{}-*", now + 2),
        );
        let forms: Vec<Form> = vec![
            (vec!["*"], "f0", vec![]),
            (vec!["MAXLEN", "~", "1000", "*"], "f1", vec![]),
            (vec!["maxlen", "=", "1000", "*"], "f2", vec![]),
            (
                vec!["NOMKSTREAM", "MINID", "~", "0", "LIMIT", "10", "*"],
                "f3",
                vec![],
            ),
            (vec![full.as_str()], "f4", vec![]),
            (vec![ms_only.as_str()], "f5", vec![]),
            (vec![ms_star.as_str()], "f6", vec![]),
            // A repeated field (the last value wins in the hash), a field named like an
            // option, binary and empty values, and a number the listpack stores as one.
            (
                vec!["*"],
                "f7",
                vec![b"note", b"one", b"MAXLEN", b"5", b"note", b"two"],
            ),
            (
                vec!["*"],
                "f8",
                vec![
                    b"bin",
                    b"\x00\xff\r\n",
                    b"empty",
                    b"",
                    b"n",
                    b"007",
                    b"m",
                    b"-12",
                ],
            ),
            // The server reads options as C strings: this is MAXLEN 1000 to it. Not kept,
            // and no false alarm.
            (vec!["MAXLEN\0x", "1000", "*"], "f9", vec![]),
        ];
        let mut ids = Vec::new();
        for (head, plan, tail) in &forms {
            ids.push(xadd_with(&mut c, head, plan, tail));
        }
        wait_drained(&mut c);
        for id in &ids {
            assert_projected_as_stored(&mut c, id);
        }
        // All but the MAXLEN\0x one and possibly one more took their entries from the commands
        // (on Redis 7.0 a pass runs on a timer, which may cover two XADDs sent back to back).
        let took = taken(&mut c) - before;
        assert!(
            took + 2 >= forms.len() as u64,
            "taken {took} of {}",
            forms.len()
        );
        assert_eq!(info(&mut c, "entries_from_commands_mismatch_total"), "0");
    });
}

#[test]
fn transactions_scripts_and_refused_xadds_stay_exact() {
    for_each_flavor(|flavor| {
        let s = quiet_server(flavor, "60000");
        let mut c = s.conn();
        warm_up(&mut c);
        let mut ids: Vec<String> = Vec::new();

        // A transaction: its XADDs passed the filter when they were queued.
        let (a, b, _, d): (String, String, (), String) = redis::pipe()
            .atomic()
            .cmd("XADD")
            .arg(STREAM)
            .arg("*")
            .arg(&[("plan_id", "m1"), ("symbol", "SYM2"), ("ts_epoch", "1")][..])
            .cmd("XADD")
            .arg(STREAM)
            .arg("*")
            .arg(&[("plan_id", "m2"), ("symbol", "SYM2"), ("ts_epoch", "2")][..])
            .cmd("SET")
            .arg("unrelated")
            .arg("x")
            .cmd("XADD")
            .arg(STREAM)
            .arg("*")
            .arg(&[("plan_id", "m3"), ("symbol", "SYM3"), ("ts_epoch", "3")][..])
            .query(&mut c)
            .expect("MULTI");
        ids.extend([a, b, d]);

        // A script adding three entries.
        let script: Vec<String> = redis::cmd("EVAL")
            .arg(
                "local r = {} for i = 1, 3 do r[i] = redis.call('XADD', KEYS[1], '*', \
                 'plan_id', 'lua' .. i, 'symbol', 'SYM4', 'ts_epoch', tostring(i)) end return r",
            )
            .arg(1)
            .arg(STREAM)
            .query(&mut c)
            .expect("EVAL");
        ids.extend(script);

        // Refused XADDs (an ID below the top, an odd argument count), each followed by a
        // good one with other values: the refused arguments must never be projected.
        let refused: redis::RedisResult<String> = redis::cmd("XADD")
            .arg(STREAM)
            .arg("1-1")
            .arg(&[("plan_id", "bad1"), ("symbol", "BAD"), ("ts_epoch", "9")][..])
            .query(&mut c);
        assert!(refused.is_err());
        ids.push(xadd_with(&mut c, &["*"], "good1", &[]));
        let refused: redis::RedisResult<String> = redis::cmd("XADD")
            .arg(STREAM)
            .arg("*")
            .arg("plan_id")
            .query(&mut c);
        assert!(refused.is_err());
        ids.push(xadd_with(&mut c, &["*"], "good2", &[]));

        // Another stream with the same fields, then ours; and two clients interleaved.
        let _: String = redis::cmd("XADD")
            .arg("other:stream")
            .arg("*")
            .arg(
                &[
                    ("plan_id", "elsewhere"),
                    ("symbol", "SYM5"),
                    ("ts_epoch", "5"),
                ][..],
            )
            .query(&mut c)
            .unwrap();
        ids.push(xadd_with(&mut c, &["*"], "after_other", &[]));
        let mut c2 = s.conn();
        for i in 0..20 {
            let conn = if i % 2 == 0 { &mut c } else { &mut c2 };
            ids.push(xadd_with(conn, &["*"], &format!("two{i}"), &[]));
        }

        wait_drained(&mut c);
        for id in &ids {
            assert_projected_as_stored(&mut c, id);
        }
        for absent in ["bad1", "elsewhere"] {
            assert!(!exists(&mut c, &format!("{BY_PLAN}{absent}")), "{absent}");
        }
        assert!(taken(&mut c) > 20, "entries were taken from their commands");
        assert_eq!(info(&mut c, "entries_from_commands_mismatch_total"), "0");
    });
}

/// Builds `tests/modules/rewrite.c`, a module whose command filter rewrites XADD arguments
/// "before" into "after", into `dir`.
fn build_rewrite_module(dir: &std::path::Path) -> std::path::PathBuf {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/modules/rewrite.c");
    let out = dir.join("rewrite.so");
    let status = std::process::Command::new("cc")
        .args(["-shared", "-fPIC", "-O1", "-o"])
        .arg(&out)
        .arg(&src)
        .status()
        .expect("cc (the C compiler) runs");
    assert!(status.success(), "cc failed on {}", src.display());
    out
}

/// A module loaded after HeatBridge can rewrite an XADD's arguments after HeatBridge's filter
/// saw them. Entries are then read back from the stream, so the projection holds what the
/// stream holds; once that module is unloaded, entries are taken from their commands again.
#[test]
fn another_module_turns_it_off() {
    for_each_flavor(|flavor| {
        let s = quiet_server(flavor, "100");
        let rewrite = build_rewrite_module(s.dir());
        let mut c = s.conn();
        warm_up(&mut c);
        let loaded: redis::RedisResult<String> = redis::cmd("MODULE")
            .arg("LOAD")
            .arg(rewrite.to_str().expect("a UTF-8 path"))
            .query(&mut c);
        loaded.expect("MODULE LOAD rewrite.so");
        assert_ne!(info(&mut c, "entries_from_commands"), "on");
        let id = xadd_with(&mut c, &["*"], "rw1", &[b"word", b"before"]);
        wait_drained(&mut c);
        assert_eq!(
            hget(&mut c, &format!("{BY_PLAN}rw1"), "word").as_deref(),
            Some("after")
        );
        assert_projected_as_stored(&mut c, &id);
        wait_for(10, "the tick to see the other module", || {
            info(&mut c, "entries_from_commands") == "off"
        });
        let before = taken(&mut c);
        for i in 0..20 {
            let id = xadd_with(&mut c, &["*"], &format!("rw_off{i}"), &[b"word", b"before"]);
            wait_drained(&mut c);
            assert_projected_as_stored(&mut c, &id);
        }
        assert_eq!(
            taken(&mut c),
            before,
            "nothing taken while another module is loaded"
        );

        let _: String = redis::cmd("MODULE")
            .arg("UNLOAD")
            .arg("rewrite")
            .query(&mut c)
            .expect("MODULE UNLOAD rewrite");
        wait_for(10, "the tick to see it gone", || {
            info(&mut c, "entries_from_commands") == "on"
        });
        let before = taken(&mut c);
        for i in 0..20 {
            xadd_with(&mut c, &["*"], &format!("rw_on{i}"), &[b"word", b"before"]);
        }
        wait_drained(&mut c);
        assert_eq!(
            hget(&mut c, &format!("{BY_PLAN}rw_on19"), "word").as_deref(),
            Some("before")
        );
        assert!(
            taken(&mut c) > before,
            "taken again once the module is gone"
        );
    });
}

/// The counters start at zero with each load of the module (its statics outlive an unload).
#[test]
fn counters_start_over_at_module_load() {
    for_each_flavor(|flavor| {
        let s = quiet_server(flavor, "60000");
        let mut c = s.conn();
        warm_up(&mut c);
        for i in 0..3 {
            xadd_with(&mut c, &["*"], &format!("before_reload{i}"), &[]);
        }
        wait_drained(&mut c);
        assert!(taken(&mut c) > 0);
        let _: String = redis::cmd("MODULE")
            .arg("UNLOAD")
            .arg("heatbridge")
            .query(&mut c)
            .expect("MODULE UNLOAD");
        let mut load = redis::cmd("MODULE");
        load.arg("LOAD");
        for a in s.module_load_args() {
            load.arg(a);
        }
        let _: String = load.query(&mut c).expect("MODULE LOAD");
        assert_eq!(taken(&mut c), 0);
        assert_eq!(info(&mut c, "entries_from_commands_mismatch_total"), "0");
    });
}

/// A transaction postponed by CLIENT PAUSE (on Valkey its EXEC then runs without passing the
/// command filter again), whose queued XREADGROUP gives one of its entries to our consumer:
/// when EXEC's reply comes, both entries are projected, nothing is pending and latest shows
/// the newer one.
#[test]
fn postponed_transaction_reading_the_group_is_seen() {
    for_each_flavor(|flavor| {
        let s = quiet_server(flavor, "1000");
        let mut c = s.conn();
        warm_up(&mut c);
        create_consumer(&mut c, "heat_bridge_1");
        let _: () = redis::cmd("CLIENT")
            .arg("PAUSE")
            .arg(1500)
            .arg("WRITE")
            .query(&mut c)
            .unwrap();
        let mut c2 = s.conn();
        let mut p = redis::pipe();
        p.atomic();
        for (i, plan) in ["pause1", "pause2"].iter().enumerate() {
            let cmd = p.cmd("XADD").arg(STREAM).arg("*");
            for (k, v) in decision("PZ", plan, &[]) {
                cmd.arg(k).arg(v);
            }
            cmd.ignore();
            if i == 0 {
                p.cmd("XREADGROUP")
                    .arg(&["GROUP", "heat_bridge", "heat_bridge_1", "COUNT", "1"][..])
                    .arg(&["STREAMS", STREAM, ">"][..])
                    .ignore();
            }
        }
        // Blocks until the pause ends; a housekeeping tick passes meanwhile.
        p.query::<()>(&mut c2).expect("EXEC");
        let settled = |c: &mut Connection| {
            group_field(c, STREAM, "heat_bridge", "pending").as_deref() == Some("0")
                && group_field(c, STREAM, "heat_bridge", "lag").as_deref() == Some("0")
        };
        if flavor.has_post_jobs() {
            // Projected before EXEC's reply: no tick may help.
            assert!(settled(&mut c), "pending or lag left after EXEC");
        } else {
            wait_for(1, "the drain after EXEC", || settled(&mut c));
        }
        for plan in ["pause1", "pause2"] {
            assert!(exists(&mut c, &format!("{BY_PLAN}{plan}")), "{plan}");
        }
        assert_eq!(
            get(&mut c, "quantum:harvest:heat:latest_plan_id:PZ").as_deref(),
            Some("pause2")
        );
    });
}

/// `project-at turn`: one pass serves every XADD of an event-loop turn, often more than one
/// drain step's `batch` (10). They are taken from their commands all the same, and projected
/// exactly as the stream holds them (session 7: before, a turn of more than `batch` XADDs was
/// read back from the stream, and its pass read the group).
#[test]
fn a_turn_of_many_xadds_is_taken_from_its_commands() {
    for_each_flavor(|flavor| {
        let s = Options::new(flavor)
            .without_exporter()
            .module_arg("poll-ms", "60000")
            .module_arg("project-at", "turn")
            .start();
        let mut c = s.conn();
        warm_up(&mut c);
        let before = taken(&mut c);
        let mut ids = Vec::new();
        for round in 0..10 {
            let mut p = redis::pipe();
            for i in 0..40 {
                let cmd = xadd_decision(
                    STREAM,
                    &format!("T{}", i % 7),
                    &format!("turn-{round}-{i}"),
                    &[],
                );
                p.add_command(cmd);
            }
            let got: Vec<String> = p.query(&mut c).expect("XADD pipeline");
            ids.extend(got);
        }
        let taken = taken(&mut c) - before;
        assert!(
            taken >= 360,
            "{flavor:?}: {taken} of 400 entries taken from their commands"
        );
        for id in &ids {
            assert_projected_as_stored(&mut c, id);
        }
        assert_eq!(
            group_field(&mut c, STREAM, "heat_bridge", "lag").as_deref(),
            Some("0")
        );
    });
}
