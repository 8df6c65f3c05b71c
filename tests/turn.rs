//! `heatbridge.project-at`: `command` projects each XADD in its own post-notification job
//! (Redis 7.2+, Valkey 8); `turn` projects the XADDs of one event-loop turn together, at its
//! end, before any of their replies leaves the server. Redis 7.0 has only `turn`. Whatever
//! the mode, a client that has read an XADD's reply finds its keys; in `command` mode even a
//! command pipelined right behind the XADD does.

mod common;
use common::*;

use std::time::Duration;

fn pointer(c: &mut Connection, symbol: &str) -> Option<String> {
    get(c, &format!("quantum:harvest:heat:latest_plan_id:{symbol}"))
}

/// Every XADD's keys exist once its reply has been read: one at a time, in pipelined bursts
/// (the pipeline's replies read first), in MULTI/EXEC and in a script.
fn assert_visible_after_reply(c: &mut Connection, tag: &str) {
    for i in 0..200 {
        let plan = format!("{tag}-one-{i}");
        inject(c, "ONE", &plan);
        assert_eq!(pointer(c, "ONE").as_deref(), Some(plan.as_str()), "{plan}");
        assert!(exists(c, &format!("quantum:harvest:heat:by_plan:{plan}")));
    }
    for round in 0..20 {
        let mut p = redis::pipe();
        for i in 0..50 {
            let cmd = xadd_decision(
                STREAM,
                &format!("B{}", i % 5),
                &format!("{tag}-b{round}-{i}"),
                &[],
            );
            p.add_command(cmd).ignore();
        }
        p.query::<()>(c).expect("XADD pipeline");
        for i in 45..50 {
            let plan = format!("{tag}-b{round}-{i}");
            assert_eq!(
                pointer(c, &format!("B{}", i % 5)).as_deref(),
                Some(plan.as_str())
            );
        }
    }
    let mut p = redis::pipe();
    p.atomic();
    for i in 0..3 {
        let cmd = xadd_decision(STREAM, "MX", &format!("{tag}-multi-{i}"), &[]);
        p.add_command(cmd).ignore();
    }
    p.query::<()>(c).expect("MULTI/EXEC");
    assert_eq!(pointer(c, "MX"), Some(format!("{tag}-multi-2")));
    let _: String = redis::cmd("EVAL")
        .arg("return redis.call('XADD', KEYS[1], '*', 'symbol', 'LU', 'plan_id', ARGV[1])")
        .arg(1)
        .arg(STREAM)
        .arg(format!("{tag}-lua"))
        .query(c)
        .expect("EVAL");
    assert_eq!(pointer(c, "LU"), Some(format!("{tag}-lua")));
}

/// CONFIG GET and SET of project-at on each server: `command` by default where the server
/// has post-notification jobs, switchable both ways at runtime; `turn`, fixed, on Redis 7.0,
/// where setting `command` is refused with the reason.
#[test]
fn project_at_is_a_setting_each_server_answers_truthfully() {
    for_each_flavor(|flavor| {
        let s = Options::new(flavor).without_exporter().start();
        let mut c = s.conn();
        assert!(config_set(&mut c, "heatbridge.project-at", "later").is_err());
        if flavor.has_post_jobs() {
            let default = if per_turn() { "turn" } else { "command" };
            assert_eq!(config_get(&mut c, "heatbridge.project-at"), default);
            for (round, mode) in ["turn", "command", "turn"].into_iter().enumerate() {
                config_set(&mut c, "heatbridge.project-at", mode).unwrap();
                assert_eq!(config_get(&mut c, "heatbridge.project-at"), mode);
                assert_eq!(heatbridge_info(&mut c, "heatbridge_project_at"), mode);
                // New plan_ids each round: a repeated one would be a duplicate.
                assert_visible_after_reply(&mut c, &format!("{mode}-switch-{round}"));
            }
        } else {
            assert_eq!(config_get(&mut c, "heatbridge.project-at"), "turn");
            let e = config_set(&mut c, "heatbridge.project-at", "command").unwrap_err();
            assert!(e.contains("only turn"), "{e}");
            config_set(&mut c, "heatbridge.project-at", "turn").unwrap();
            assert_eq!(heatbridge_info(&mut c, "heatbridge_project_at"), "turn");
            assert_visible_after_reply(&mut c, "fixed-turn");
        }
        wait_drained(&mut c);
    });
}

/// In `turn` mode a client that has read the XADD's reply finds the keys, on every server;
/// as a loadmodule argument too.
#[test]
fn per_turn_keys_exist_once_the_reply_is_read() {
    for_each_flavor(|flavor| {
        let s = Options::new(flavor)
            .without_exporter()
            .module_arg("project-at", "turn")
            .start();
        let mut c = s.conn();
        assert_eq!(config_get(&mut c, "heatbridge.project-at"), "turn");
        assert_visible_after_reply(&mut c, "turn");
        wait_drained(&mut c);
        assert_eq!(metric(&mut c, "p27_errors_total{stage=\"write\"}"), 0.0);
    });
}

/// An XADD that runs after the turn's end hook, inside `beforeSleep` (Redis 7.0 serves a
/// client unblocked there, with an XADD pipelined behind its BLPOP, after BEFORE_SLEEP):
/// projected before the next command, so its writer finds the keys after reading the reply.
#[test]
fn an_xadd_behind_an_unblocked_command_is_visible_after_its_reply() {
    for_each_flavor(|flavor| {
        let s = Options::new(flavor)
            .without_exporter()
            .module_arg("project-at", "turn")
            .start();
        for i in 0..30 {
            let mut blocked = s.conn();
            let mut waker = s.conn();
            let plan = format!("unblocked-{i}");
            let mut p = redis::pipe();
            p.cmd("BLPOP").arg(format!("wake{i}")).arg(5);
            let xadd = xadd_decision(STREAM, "UB", &plan, &[]);
            p.add_command(xadd);
            let (tx, rx) = std::sync::mpsc::channel();
            let h = std::thread::spawn(move || {
                let r: redis::RedisResult<(redis::Value, String)> = p.query(&mut blocked);
                let seen = pointer(&mut blocked, "UB");
                let _ = tx.send((r.is_ok(), seen));
            });
            std::thread::sleep(Duration::from_millis(30));
            let _: i64 = redis::cmd("LPUSH")
                .arg(format!("wake{i}"))
                .arg("x")
                .query(&mut waker)
                .unwrap();
            let (ok, seen) = rx.recv_timeout(Duration::from_secs(10)).expect("replies");
            h.join().expect("the blocked client");
            assert!(ok);
            assert_eq!(seen.as_deref(), Some(plan.as_str()), "{flavor:?} round {i}");
        }
    });
}

/// With I/O threads, Redis 8 and Valkey write replies before the turn ends: `turn` falls
/// back to a job per XADD there (INFO says so), and the keys are visible even to a command
/// pipelined right behind the XADD. Redis 7.0's threaded reads run before the turn's end
/// hook, so it stays per turn.
#[test]
fn under_io_threads_the_guarantee_holds() {
    for_each_flavor(|flavor| {
        let mut opts = Options::new(flavor)
            .without_exporter()
            .module_arg("project-at", "turn")
            .arg("--io-threads", "4");
        if flavor == Flavor::Redis {
            opts = opts.arg("--io-threads-do-reads", "yes");
        }
        let s = opts.start();
        let mut c = s.conn();
        let want = if flavor.has_post_jobs() {
            "command (io-threads)"
        } else {
            "turn"
        };
        assert_eq!(heatbridge_info(&mut c, "heatbridge_project_at"), want);
        assert_visible_after_reply(&mut c, "io");
        // Several clients at once, so that the I/O threads are busy.
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let mut c = s.conn();
                std::thread::spawn(move || {
                    for i in 0..300 {
                        let plan = format!("io-{t}-{i}");
                        let (_, seen): (String, Option<String>) = redis::pipe()
                            .cmd("XADD")
                            .arg(STREAM)
                            .arg("*")
                            .arg("symbol")
                            .arg(format!("T{t}"))
                            .arg("plan_id")
                            .arg(&plan)
                            .cmd("GET")
                            .arg(format!("quantum:harvest:heat:latest_plan_id:T{t}"))
                            .query(&mut c)
                            .expect("XADD and GET");
                        let after = pointer(&mut c, &format!("T{t}"));
                        assert_eq!(after.as_deref(), Some(plan.as_str()), "after the reply");
                        if flavor.has_post_jobs() {
                            assert_eq!(seen.as_deref(), Some(plan.as_str()), "pipelined");
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().expect("a client thread");
        }
        wait_drained(&mut c);
    });
}

/// Switching from `turn` to `command` in the very turn of an XADD: the XADD, whose
/// projection waited for the end of the turn, is projected before the next turn's commands,
/// so the writer finds its keys once both replies are read (review, session 6: it waited for
/// the housekeeping tick).
#[test]
fn switching_to_command_keeps_the_turn_that_waited() {
    for_each_flavor(|flavor| {
        if !flavor.has_post_jobs() {
            return; // Redis 7.0 has only turn.
        }
        let s = Options::new(flavor).without_exporter().start();
        let mut c = s.conn();
        let mut other = s.conn();
        for i in 0..20 {
            config_set(&mut c, "heatbridge.project-at", "turn").unwrap();
            let plan = format!("switch-{i}");
            let xadd = xadd_decision(STREAM, "SW", &plan, &[]);
            let mut p = redis::pipe();
            p.add_command(xadd)
                .ignore()
                .cmd("CONFIG")
                .arg("SET")
                .arg("heatbridge.project-at")
                .arg("command")
                .ignore();
            p.query::<()>(&mut c).expect("XADD and CONFIG SET");
            assert_eq!(
                pointer(&mut other, "SW").as_deref(),
                Some(plan.as_str()),
                "{i}"
            );
        }
    });
}

/// A transaction or script of thousands of XADDs (far more projection work than the 5 ms a
/// live pass may otherwise keep the event loop): every one of its decisions is projected
/// before its reply leaves, in both modes. The budget bounds catch-up, never the XADDs a
/// pass serves (found in session 7: the rest waited for the next turn, after the reply).
#[test]
fn a_large_transaction_is_visible_after_its_reply() {
    const N: usize = 3000;
    for_each_flavor(|flavor| {
        let modes: &[&str] = if flavor.has_post_jobs() {
            &["command", "turn"]
        } else {
            &["turn"]
        };
        for mode in modes {
            let s = Options::new(flavor)
                .without_exporter()
                .module_arg("project-at", mode)
                .start();
            let mut c = s.conn();
            let plan = |how: &str, i: usize| format!("big-{mode}-{how}-{i}");
            let mut p = redis::pipe();
            p.atomic();
            for i in 0..N {
                let cmd = xadd_decision(STREAM, &format!("S{}", i % 50), &plan("multi", i), &[]);
                p.add_command(cmd).ignore();
            }
            p.query::<()>(&mut c).expect("MULTI/EXEC");
            assert_all_projected(&mut c, N, |i| plan("multi", i), flavor, mode);
            let script = "for i = 1, tonumber(ARGV[2]) do \
                 redis.call('XADD', KEYS[1], '*', 'symbol', 'S' .. ((i - 1) % 50), \
                 'plan_id', ARGV[1] .. (i - 1)) end return 1";
            let _: i64 = redis::cmd("EVAL")
                .arg(script)
                .arg(1)
                .arg(STREAM)
                .arg(format!("big-{mode}-lua-"))
                .arg(N)
                .query(&mut c)
                .expect("EVAL");
            assert_all_projected(&mut c, N, |i| plan("lua", i), flavor, mode);
        }
    });
}

/// Right after the reply: the pointer of each of the 50 symbols names its last plan, and
/// every plan's by_plan hash exists.
fn assert_all_projected(
    c: &mut Connection,
    n: usize,
    plan: impl Fn(usize) -> String,
    flavor: Flavor,
    mode: &str,
) {
    let mut p = redis::pipe();
    for s in 0..50 {
        p.cmd("GET")
            .arg(format!("quantum:harvest:heat:latest_plan_id:S{s}"));
    }
    for i in 0..n {
        p.cmd("EXISTS")
            .arg(format!("quantum:harvest:heat:by_plan:{}", plan(i)));
    }
    let (pointers, found): (Vec<Option<String>>, Vec<i64>) = {
        let v: Vec<redis::Value> = p.query(c).expect("reads");
        let (a, b) = v.split_at(50);
        (
            a.iter()
                .map(|v| redis::from_redis_value(v).expect("GET"))
                .collect(),
            b.iter()
                .map(|v| redis::from_redis_value(v).expect("EXISTS"))
                .collect(),
        )
    };
    for (s, got) in pointers.iter().enumerate() {
        let last = (0..n).rev().find(|i| i % 50 == s).map(&plan);
        assert_eq!(got, &last, "{flavor:?} {mode}: pointer of S{s}");
    }
    let missing = found.iter().filter(|&&f| f == 0).count();
    assert_eq!(
        missing, 0,
        "{flavor:?} {mode}: by_plan keys missing after the reply"
    );
}

/// One transaction over two listed streams, the first one's part far over the live budget:
/// the second stream's XADD does not wait for a later callback either.
#[test]
fn a_large_transaction_over_two_streams_is_visible_after_its_reply() {
    const A: &str = "quantum:stream:{a}:harvest.heat.decision";
    const B: &str = "quantum:stream:{b}:harvest.heat.decision";
    for_each_flavor(|flavor| {
        let s = Options::new(flavor)
            .without_exporter()
            .arg("--heatbridge.stream-in", &format!("{A},{B}"))
            .start();
        let mut c = s.conn();
        for round in 0..3 {
            let mut p = redis::pipe();
            p.atomic();
            for i in 0..2000 {
                let cmd = xadd_decision(A, "BIG", &format!("a-{round}-{i}"), &[]);
                p.add_command(cmd).ignore();
            }
            let cmd = xadd_decision(B, "ONE", &format!("b-{round}"), &[]);
            p.add_command(cmd).ignore();
            p.query::<()>(&mut c).expect("MULTI/EXEC");
            assert_eq!(
                get(&mut c, "quantum:harvest:heat:latest_plan_id:{b}:ONE"),
                Some(format!("b-{round}")),
                "{flavor:?} round {round}"
            );
            assert_eq!(
                get(&mut c, "quantum:harvest:heat:latest_plan_id:{a}:BIG"),
                Some(format!("a-{round}-1999")),
                "{flavor:?} round {round}"
            );
        }
    });
}
