//! Readers that never poll: keyspace notifications and client-side caching (CLIENT
//! TRACKING) fed by HeatBridge's writes, checked with redis-py, the seed's own client
//! (tests/clients/readers_client.py), on every path that writes: live projection, MULTI/EXEC,
//! catch-up after MODULE LOAD and HEATBRIDGE.REPLAY. The event sequence asserted here is
//! the one docs/readers.md documents as the readers' contract; timing is never asserted,
//! waits are bounded.

mod common;
use common::watcher::Watcher;
use common::*;

use serde_json::Value;
use std::path::Path;
use std::process::Command;

const LATEST: &str = "quantum:harvest:heat:latest:";
const POINTER: &str = "quantum:harvest:heat:latest_plan_id:";
const BY_PLAN: &str = "quantum:harvest:heat:by_plan:";
const DEDUPE: &str = "quantum:dedupe:p27:";

/// Runs tests/clients/readers_client.py with `args` and parses its JSON output.
fn client(args: &[String]) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/readers_client.py");
    let out = Command::new("python3")
        .arg(script)
        .args(args)
        .output()
        .expect("python3 runs tests/clients/readers_client.py");
    assert!(
        out.status.success(),
        "readers_client.py {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("readers_client.py prints JSON")
}

/// A server with keyspace notifications on (every class, so that nothing a reader might
/// rely on is missed) and no exporter.
fn server(flavor: Flavor, module: bool) -> Server {
    let o = Options::new(flavor)
        .without_exporter()
        .arg("--notify-keyspace-events", "KEA");
    if module { o } else { o.without_module() }.start()
}

fn pair(event: &str, key: String) -> (String, String) {
    (event.to_string(), key)
}

/// One projected decision's dedupe and by_plan events.
fn plan_events(plan: &str) -> Vec<(String, String)> {
    vec![
        pair("set", format!("{DEDUPE}{plan}")),
        pair("expire", format!("{DEDUPE}{plan}")),
        pair("hset", format!("{BY_PLAN}{plan}")),
        pair("expire", format!("{BY_PLAN}{plan}")),
    ]
}

/// The events of writing a symbol's latest hash and pointer; `hdel` when the hash held
/// fields the new decision lacks.
fn latest_events(symbol: &str, hdel: bool) -> Vec<(String, String)> {
    let mut v = vec![pair("hset", format!("{LATEST}{symbol}"))];
    if hdel {
        v.push(pair("hdel", format!("{LATEST}{symbol}")));
    }
    v.extend([
        pair("expire", format!("{LATEST}{symbol}")),
        pair("set", format!("{POINTER}{symbol}")),
        pair("expire", format!("{POINTER}{symbol}")),
    ]);
    v
}

fn field<'a>(d: &'a Value, field: &str) -> &'a str {
    d[field].as_str().unwrap_or_default()
}

/// The documented sequence: per pass, each new decision's dedupe and by_plan events in
/// stream order, then, for each symbol, its latest events once, from its newest decision
/// in the pass, in the stream order of those newest decisions. `passes` splits the
/// decisions (in stream order) into passes.
fn expected(decisions: &[Value], passes: &[usize]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    // The extra fields each symbol's latest hash holds now.
    let mut held: std::collections::HashMap<String, Vec<String>> = Default::default();
    let mut start = 0;
    for &n in passes {
        let pass: Vec<&Value> = decisions[start..start + n]
            .iter()
            .filter(|d| field(d, "status") == "new")
            .collect();
        start += n;
        for d in &pass {
            out.extend(plan_events(field(d, "plan_id")));
        }
        for (i, d) in pass.iter().enumerate() {
            let sym = field(d, "symbol");
            if pass[i + 1..]
                .iter()
                .any(|later| field(later, "symbol") == sym)
            {
                continue;
            }
            let extra: Vec<String> = d["extra"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            let before = held
                .insert(sym.to_string(), extra.clone())
                .unwrap_or_default();
            out.extend(latest_events(
                sym,
                before.iter().any(|f| !extra.contains(f)),
            ));
        }
    }
    assert_eq!(start, decisions.len(), "the passes cover every decision");
    out
}

fn events(v: &Value) -> Vec<(String, String)> {
    v["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| (s_at(e, 0), s_at(e, 1)))
        .collect()
}

fn s_at(v: &Value, i: usize) -> String {
    v[i].as_str().unwrap_or_default().to_string()
}

fn decisions(v: &Value) -> Vec<Value> {
    v["decisions"].as_array().expect("decisions").clone()
}

fn show(ev: &[(String, String)]) -> String {
    ev.iter()
        .map(|(e, k)| format!("  {e} {k}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn assert_sequence(got: &[(String, String)], want: &[(String, String)]) {
    assert!(
        got == want,
        "keyspace events differ from the documented sequence\n--- got:\n{}\n--- want:\n{}",
        show(got),
        show(want)
    );
}

/// One XADD at a time: each projected decision raises exactly its nine (ten with `hdel`)
/// events, in stream order; a duplicate plan_id raises none.
#[test]
fn each_live_decision_raises_the_documented_events_in_stream_order() {
    for_each_flavor(|flavor| {
        let s = server(flavor, true);
        let v = client(&["events".into(), s.port.to_string(), "live".into()]);
        let d = decisions(&v);
        assert_sequence(&events(&v), &expected(&d, &vec![1; d.len()]));
    });
}

/// MULTI/EXEC: one pass at EXEC (at the next event-loop turn on 7.0): every decision's
/// by_plan events in order, then one set of latest events per symbol, from its newest.
#[test]
fn multi_exec_raises_by_plan_events_per_decision_and_latest_per_symbol() {
    for_each_flavor(|flavor| {
        let s = server(flavor, true);
        let v = client(&["events".into(), s.port.to_string(), "multi".into()]);
        let d = decisions(&v);
        let mut passes = Vec::new();
        let mut i = 0;
        while i < d.len() {
            let n = d[i]["batch"].as_u64().expect("batch") as usize;
            passes.push(n);
            i += n;
        }
        assert_sequence(&events(&v), &expected(&d, &passes));
    });
}

/// REPLAY re-projects synchronously in one pass, dedupe ignored: the same sequence as one
/// MULTI of those decisions.
#[test]
fn replay_raises_the_documented_events() {
    for_each_flavor(|flavor| {
        let s = server(flavor, true);
        let v = client(&["events".into(), s.port.to_string(), "replay".into()]);
        let d = decisions(&v);
        assert_sequence(&events(&v), &expected(&d, &[d.len()]));
    });
}

/// Catch-up after MODULE LOAD over a backlog: every decision's dedupe and by_plan events
/// exactly once in stream order; each symbol's latest events at least once and at most
/// once per decision (once per symbol per pass: how entries fall into passes is not part
/// of the contract), each set whole, the last after its newest decision's by_plan.
#[test]
fn catch_up_raises_by_plan_events_in_stream_order_and_latest_per_symbol() {
    for_each_flavor(|flavor| {
        let s = server(flavor, false);
        let mut args = vec!["events".into(), s.port.to_string(), "catchup".into()];
        args.extend(s.module_load_args());
        let v = client(&args);
        let d = decisions(&v);
        let got = events(&v);
        let plans: Vec<(String, String)> = got
            .iter()
            .filter(|(_, k)| k.starts_with(DEDUPE) || k.starts_with(BY_PLAN))
            .cloned()
            .collect();
        let want: Vec<(String, String)> = d
            .iter()
            .flat_map(|x| plan_events(field(x, "plan_id")))
            .collect();
        assert_sequence(&plans, &want);
        let mut i = 0;
        let mut groups: Vec<(String, usize)> = Vec::new();
        while i < got.len() {
            if got[i].1.starts_with(LATEST) {
                let sym = got[i].1[LATEST.len()..].to_string();
                let group = latest_events(&sym, false);
                assert_sequence(&got[i..(i + group.len()).min(got.len())], &group);
                groups.push((sym, i));
                i += group.len();
            } else {
                assert!(
                    !got[i].1.starts_with(POINTER),
                    "a pointer event outside a latest set at {i}:\n{}",
                    show(&got)
                );
                i += 1;
            }
        }
        for sym in ["A", "B", "C"] {
            let mine: Vec<&Value> = d.iter().filter(|x| field(x, "symbol") == sym).collect();
            let n = groups.iter().filter(|(g, _)| g == sym).count();
            assert!(
                (1..=mine.len()).contains(&n),
                "{sym}: {n} latest sets for {} decisions",
                mine.len()
            );
            let newest = field(mine.last().expect("decisions of the symbol"), "plan_id");
            let by_plan_at = got
                .iter()
                .position(|(e, k)| e == "hset" && *k == format!("{BY_PLAN}{newest}"))
                .expect("the newest decision's by_plan event");
            let last_set = groups
                .iter()
                .rev()
                .find(|(g, _)| g == sym)
                .expect("a set")
                .1;
            assert!(
                last_set > by_plan_at,
                "{sym}: the last latest set comes before its newest decision"
            );
        }
    });
}

/// The ways a reader tracks keys on this server: redis-py's own cache needs Redis 7.4+
/// (so Redis 8.2 here), CLIENT TRACKING works on all three.
fn modes(flavor: Flavor) -> Vec<&'static str> {
    let mut m = vec!["resp3", "redirect"];
    if flavor == Flavor::Redis8 {
        m.push("builtin");
    }
    m
}

/// Runs the reads scenario in every mode and checks what holds on every server: the cache
/// served reads, a reader always reached the new decision within the bounded wait, and a
/// round trip on the invalidation connection after the writer's reply always made the
/// next cached read fresh when the write was synchronous (`sync_write`).
fn reads(flavor: Flavor, scenario: &str, rounds: usize, sync_write: bool) -> Vec<Value> {
    let mut all = Vec::new();
    for mode in modes(flavor) {
        let s = server(flavor, true);
        let mut args = vec![
            "reads".to_string(),
            s.port.to_string(),
            mode.to_string(),
            scenario.to_string(),
            rounds.to_string(),
        ];
        args.extend(s.module_load_args());
        let v = client(&args);
        eprintln!("{flavor:?} {mode} {scenario}: {v}");
        let n = |f: &str| v[f].as_u64().unwrap_or(u64::MAX);
        assert_eq!(
            n("never_fresh"),
            0,
            "{mode}: a read never saw the new decision: {v}"
        );
        assert!(
            n("reads") >= n("server_hgetall") + rounds as u64,
            "{mode}: the cache served no reads: {v}"
        );
        if sync_write {
            assert_eq!(
                n("stale_after_round_trip"),
                0,
                "{mode}: stale after a round trip: {v}"
            );
        }
        all.push(v);
    }
    all
}

/// Live projection: a new XADD invalidates the cached latest. Where the server has
/// post-notification jobs the very first cached read after XADD returns is already the new
/// decision; on Redis 7.0 the reader gets it within the bounded wait (the projection runs
/// on the event-loop turn of the XADD, before its reply is written).
#[test]
fn a_caching_reader_sees_each_live_decision() {
    for_each_flavor(|flavor| {
        for v in reads(flavor, "live", 100, true) {
            if flavor.has_post_jobs() {
                assert_eq!(v["stale_first_reads"], 0, "{v}");
            }
        }
    });
}

/// MULTI/EXEC of two XADDs of the symbol: the reader sees the second.
#[test]
fn a_caching_reader_sees_the_newest_decision_of_a_multi() {
    for_each_flavor(|flavor| {
        for v in reads(flavor, "multi", 30, true) {
            if flavor.has_post_jobs() {
                assert_eq!(v["stale_first_reads"], 0, "{v}");
            }
        }
    });
}

/// REPLAY rewrites latest synchronously: after a client overwrote it (and the reader cached
/// the overwrite), REPLAY's rewrite invalidates it. REPLAY's reply can reach the writer a
/// moment before the invalidation reaches another socket, so only the read after a round
/// trip is asserted fresh at once (docs/readers.md).
#[test]
fn a_caching_reader_sees_latest_restored_by_replay() {
    for_each_flavor(|flavor| {
        reads(flavor, "replay", 20, true);
    });
}

/// Catch-up after MODULE LOAD runs after the command returns: the reader gets the newest
/// decision of the backlog within the bounded wait, through an invalidation.
#[test]
fn a_caching_reader_sees_decisions_projected_by_catch_up() {
    for_each_flavor(|flavor| {
        reads(flavor, "catchup", 5, false);
    });
}

/// A server with hash keyspace events (as server arguments, so a restart keeps them) when
/// `notify`, and no exporter.
fn watch_server(flavor: Flavor, notify: bool) -> Server {
    let o = Options::new(flavor).without_exporter();
    if notify {
        o.arg("--notify-keyspace-events", "Kh")
    } else {
        o
    }
    .start()
}

/// `watch_latest.py --symbol W --port <port>` and `extra` arguments.
fn watch(s: &Server, extra: &[&str]) -> Watcher {
    let mut args: Vec<String> = ["--symbol", "W", "--port", &s.port.to_string()]
        .map(str::to_string)
        .to_vec();
    args.extend(extra.iter().map(|a| a.to_string()));
    Watcher::start(&args)
}

/// scripts/watch_latest.py prints the symbol's latest at start and then each new decision
/// once, in order: not another symbol's, not a duplicate plan_id, not a REPLAY of the same
/// decision. It is given each decision before the next is added (it shows the latest
/// state; docs/readers.md says what it skips when decisions come faster).
#[test]
fn watch_latest_prints_each_new_decision() {
    for_each_flavor(|flavor| {
        let s = watch_server(flavor, true);
        let mut c = s.conn();
        inject(&mut c, "W", "w-0");
        let mut w = watch(&s, &[]);
        w.expect("w-0");
        for i in 1..=4 {
            inject(&mut c, "OTHER", &format!("o-{i}"));
            if i == 3 {
                // A duplicate plan_id is not projected: no event, nothing printed.
                inject(&mut c, "W", "w-1");
            }
            inject(&mut c, "W", &format!("w-{i}"));
            if i == 2 {
                // A REPLAY rewrites latest with what it holds: nothing new to print.
                let _: redis::Value = redis::cmd("HEATBRIDGE.REPLAY")
                    .arg("FROM")
                    .arg("0")
                    .query(&mut c)
                    .expect("REPLAY");
            }
            w.expect(&format!("w-{i}"));
        }
        // Nothing else: the next line is the next decision.
        inject(&mut c, "W", "w-5");
        w.expect("w-5");
    });
}

/// Without hash keyspace events the watcher says what to set and exits 2; with
/// --enable-notifications it sets them itself and works.
#[test]
fn watch_latest_says_what_to_set() {
    for_each_flavor(|flavor| {
        let s = watch_server(flavor, false);
        let (status, err) = watch(&s, &[]).exit();
        assert_eq!(status.code(), Some(2), "{err}");
        assert!(err.contains("notify-keyspace-events Kh"), "{err}");
        let mut w = watch(&s, &["--enable-notifications"]);
        w.wait_stderr("watching");
        let mut c = s.conn();
        let flags = config_get(&mut c, "notify-keyspace-events");
        assert!(flags.contains('K') && flags.contains('h'), "{flags:?}");
        inject(&mut c, "W", "w-1");
        w.expect("w-1");
    });
}

/// The server restarts on the same port (empty: tests run with `--save ""`; HeatBridge
/// creates its group again) and a decision is added as soon as it answers: the watcher
/// reconnects itself, reads latest once subscribed again, and prints that decision and the
/// next. With --enable-notifications the restart lost the flags it had set: it sets them
/// again.
#[test]
fn watch_latest_resubscribes_after_a_restart() {
    for_each_flavor(|flavor| {
        for notify_in_config in [true, false] {
            let mut s = watch_server(flavor, notify_in_config);
            let mut w = if notify_in_config {
                watch(&s, &[])
            } else {
                watch(&s, &["--enable-notifications"])
            };
            w.wait_stderr("watching");
            inject(&mut s.conn(), "W", "w-0");
            w.expect("w-0");
            s.restart(); // returns once the server answers PING
            inject(&mut s.conn(), "W", "w-1");
            w.expect("w-1");
            inject(&mut s.conn(), "W", "w-2");
            w.expect("w-2");
        }
    });
}

/// HeatBridge copies values byte for byte: a decision whose extra field is not UTF-8 is
/// printed (with U+FFFD in its place) and the watcher goes on.
#[test]
fn watch_latest_prints_values_that_are_not_utf8() {
    for_each_flavor(|flavor| {
        let s = watch_server(flavor, true);
        let mut w = watch(&s, &[]);
        w.wait_stderr("watching");
        let mut c = s.conn();
        let mut cmd = redis::cmd("XADD");
        cmd.arg(STREAM).arg("*");
        for (k, v) in decision("W", "w-1", &[]) {
            cmd.arg(k).arg(v);
        }
        cmd.arg("note").arg(&b"a\xff\xfeb"[..]);
        let _: String = cmd.query(&mut c).expect("XADD");
        let v = w.next_json("w-1");
        assert_eq!(v["plan_id"], "w-1", "{v}");
        assert_eq!(v["note"], "a\u{fffd}\u{fffd}b", "{v}");
        inject(&mut c, "W", "w-2");
        w.expect("w-2");
    });
}

/// --no-initial: what latest holds at start is not printed, the next decision is; and when
/// latest does not exist yet, there is nothing to skip: the first decision is printed.
#[test]
fn watch_latest_no_initial_prints_the_first_decision() {
    for_each_flavor(|flavor| {
        let s = watch_server(flavor, true);
        let mut c = s.conn();
        let mut w = watch(&s, &["--no-initial"]);
        w.wait_stderr("watching"); // written after the read at start
        inject(&mut c, "W", "first");
        w.expect("first");
        inject(&mut c, "W", "second");
        w.expect("second");
        drop(w);
        // Latest holds "second" now: a new watcher skips it and prints "third" first.
        let mut w = watch(&s, &["--no-initial"]);
        w.wait_stderr("watching");
        inject(&mut c, "W", "third");
        w.expect("third");
    });
}

/// A script that runs too long makes the server answer BUSY to the watcher's PING: the
/// watcher retries instead of dying, and prints the next decision once the script is gone.
#[test]
fn watch_latest_outlasts_a_busy_script() {
    for_each_flavor(|flavor| {
        let s = watch_server(flavor, true);
        let mut c = s.conn();
        config_set(&mut c, "busy-reply-threshold", "100").expect("busy-reply-threshold");
        let mut w = watch(&s, &["--ping", "0.3"]);
        w.wait_stderr("watching");
        let port = s.port;
        let busy = std::thread::spawn(move || {
            let mut b = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
                .and_then(|cl| cl.get_connection())
                .expect("connect");
            // Runs until SCRIPT KILL; its reply is then an error, which is expected.
            let _: redis::RedisResult<()> = redis::cmd("EVAL")
                .arg("while true do end")
                .arg(0)
                .query(&mut b);
        });
        w.wait_stderr("BUSY");
        wait_for(20, "SCRIPT KILL", || {
            redis::cmd("SCRIPT")
                .arg("KILL")
                .query::<String>(&mut s.conn())
                .is_ok()
        });
        busy.join().expect("the script's client");
        inject(&mut c, "W", "after-busy");
        w.expect("after-busy");
    });
}

/// A wrong or missing password is not retried: the watcher says it was refused and exits 2.
#[test]
fn watch_latest_exits_on_a_wrong_password() {
    for_each_flavor(|flavor| {
        let s = watch_server(flavor, true);
        config_set(&mut s.conn(), "requirepass", "right").expect("CONFIG SET requirepass");
        for extra in [&["--password", "wrong"][..], &[]] {
            let (status, err) = watch(&s, extra).exit();
            assert_eq!(status.code(), Some(2), "{extra:?}: {err}");
            assert!(err.contains("refused"), "{extra:?}: {err}");
        }
    });
}

/// --cluster: a seed node that does not answer is retried, not a crash; a refused password
/// exits 2 as in the standalone form (redis-py wraps it while reading the slot map).
#[test]
fn watch_latest_cluster_form_retries_a_seed_and_exits_on_a_wrong_password() {
    let cluster_args = |port: u16, extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = ["--cluster", "--tag", "T", "--symbol", "W", "--port"]
            .map(str::to_string)
            .to_vec();
        a.push(port.to_string());
        a.extend(extra.iter().map(|x| x.to_string()));
        a
    };
    let mut w = Watcher::start(&cluster_args(free_port(), &[]));
    w.wait_stderr("reconnecting");
    w.wait_stderr("reconnecting");
    drop(w);
    for_each_flavor(|flavor| {
        let s = watch_server(flavor, true);
        config_set(&mut s.conn(), "requirepass", "right").expect("CONFIG SET requirepass");
        let (status, err) = Watcher::start(&cluster_args(s.port, &["--password", "wrong"])).exit();
        assert_eq!(status.code(), Some(2), "{err}");
        assert!(err.contains("refused"), "{err}");
    });
}

/// A server that stops answering without closing the connection (SIGSTOP: a half-open
/// link looks the same to the watcher): the PING after --ping silent seconds gets no
/// answer, so the watcher reconnects, and prints what comes once the server is back.
#[test]
fn watch_latest_reconnects_when_the_server_stops_answering() {
    for_each_flavor(|flavor| {
        let s = watch_server(flavor, true);
        let mut w = watch(&s, &["--ping", "1"]);
        w.wait_stderr("watching");
        let pid = s.pid().expect("server running").to_string();
        let signal = |sig: &str| {
            let st = Command::new("kill")
                .args([sig, &pid])
                .status()
                .expect("kill");
            assert!(st.success(), "kill {sig} {pid}");
        };
        // Should the wait fail, the server's drop kills it, stopped or not.
        signal("-STOP");
        w.wait_stderr("no answer to PING");
        signal("-CONT");
        inject(&mut s.conn(), "W", "w-1");
        w.expect("w-1");
    });
}
