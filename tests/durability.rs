//! Nothing lost, nothing reprocessed: catch-up at load, loading and restarts, the sidecar's
//! group, stream faults and memory pressure, on Redis 7.0 and Valkey 8.1.

mod common;
use common::*;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BY_PLAN: &str = "quantum:harvest:heat:by_plan:";

/// XADDs `n` decisions (plan_ids `{prefix}{i}`) in pipelined chunks.
fn fill(c: &mut Connection, stream: &str, prefix: &str, n: usize) {
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let mut p = redis::pipe();
        for i in chunk {
            p.cmd("XADD")
                .arg(stream)
                .arg("*")
                .arg("symbol")
                .arg(format!("SYM{}", i % 8))
                .arg("plan_id")
                .arg(format!("{prefix}{i}"))
                .arg("ts_epoch")
                .arg("1735689600")
                .ignore();
        }
        p.query::<()>(c).expect("pipelined XADD");
    }
}

/// `XGROUP <sub> <stream> heat_bridge 0 [extra...]` on the default stream.
fn xgroup(c: &mut Connection, sub: &str, extra: &[&str]) {
    let mut cmd = redis::cmd("XGROUP");
    cmd.arg(sub).arg(STREAM).arg("heat_bridge").arg("0");
    for a in extra {
        cmd.arg(*a);
    }
    cmd.query::<()>(c).expect("XGROUP");
}

/// Sets maxmemory to half the memory in use, with noeviction: every write is refused until
/// maxmemory is set back to 0.
fn refuse_writes(c: &mut Connection) {
    let used: String = redis::cmd("INFO").arg("memory").query(c).unwrap();
    let used: u64 = used
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    config_set(c, "maxmemory-policy", "noeviction").unwrap();
    config_set(c, "maxmemory", &(used / 2).to_string()).unwrap();
}

fn count_keys(c: &mut Connection, pattern: &str) -> usize {
    let keys: Vec<Vec<u8>> = redis::cmd("KEYS").arg(pattern).query(c).expect("KEYS");
    keys.len()
}

fn module_load(c: &mut Connection, s: &Server) {
    let mut cmd = redis::cmd("MODULE");
    cmd.arg("LOAD");
    for a in s.module_load_args() {
        cmd.arg(a);
    }
    cmd.query::<()>(c).expect("MODULE LOAD");
}

fn pending(c: &mut Connection, group: &str) -> i64 {
    group_field(c, STREAM, group, "pending")
        .and_then(|v| v.parse().ok())
        .unwrap_or(-1)
}

/// A PING loop on its own connection, recording the slowest round trip.
struct Probe {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<Duration>,
}

impl Probe {
    fn start(s: &Server) -> Probe {
        let mut c = s.conn();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut worst = Duration::ZERO;
            while !flag.load(Ordering::Relaxed) {
                let t = Instant::now();
                let _: String = redis::cmd("PING").query(&mut c).expect("PING");
                worst = worst.max(t.elapsed());
            }
            worst
        });
        Probe { stop, handle }
    }

    fn finish(self) -> Duration {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().expect("probe")
    }
}

/// MODULE LOAD over a stream that already holds entries projects all of them from the group
/// cursor, in bounded steps: a concurrent PING keeps being answered. (Speed is measured by
/// the benchmark; the bound here only tells bounded steps from one long blocking pass.)
#[test]
fn catch_up_at_module_load_is_complete_and_bounded() {
    for_each_flavor(|flavor| {
        let s = Options::new(flavor).without_module().start();
        let mut c = s.conn();
        let n = 30_000;
        fill(&mut c, STREAM, "cu", n);
        let probe = Probe::start(&s);
        module_load(&mut c, &s);
        wait_for(120, "catch-up", || {
            metric(&mut c, "p27_in_messages_total") as usize >= n
        });
        let worst = probe.finish();
        wait_drained(&mut c);
        assert_eq!(count_keys(&mut c, &format!("{BY_PLAN}cu*")), n);
        assert_eq!(
            metric(&mut c, "p27_written_total{kind=\"by_plan\"}") as usize,
            n
        );
        assert_eq!(pending(&mut c, "heat_bridge"), 0);
        assert!(
            worst < Duration::from_millis(250),
            "a PING waited {worst:?} during catch-up"
        );
        // Live projection continues afterwards.
        inject(&mut c, "SYM0", "after_catch_up");
        assert!(exists(&mut c, &format!("{BY_PLAN}after_catch_up")));
    });
}

/// Entries added while the server ran without the module are projected after a restart
/// with it; entries already projected are not read again.
#[test]
fn restart_with_module_projects_what_was_added_without_it() {
    for_each_flavor(|flavor| {
        // The harness restarts with SIGKILL: fsync every write so none is lost to it.
        let opts = Options::new(flavor)
            .arg("--appendonly", "yes")
            .arg("--appendfsync", "always");
        let mut s = opts.clone().start();
        let mut c = s.conn();
        fill(&mut c, STREAM, "before", 100);
        wait_drained(&mut c);
        // Restart without the module and add entries.
        s.restart_with(opts.clone().without_module());
        let mut c = s.conn();
        fill(&mut c, STREAM, "while_off", 200);
        assert!(!exists(&mut c, &format!("{BY_PLAN}while_off0")));
        // Back with the module: only the 200 new entries are read.
        s.restart_with(opts);
        let mut c = s.conn();
        wait_drained(&mut c);
        assert_eq!(count_keys(&mut c, &format!("{BY_PLAN}while_off*")), 200);
        assert_eq!(count_keys(&mut c, &format!("{BY_PLAN}before*")), 100);
        assert_eq!(metric(&mut c, "p27_in_messages_total"), 200.0);
    });
}

/// After an AOF restart every key is still there and nothing is reprocessed: the replayed
/// XADDs do not re-project, and the replayed XGROUP SETID restores the cursor.
#[test]
fn aof_restart_keeps_keys_and_reprocesses_nothing() {
    for_each_flavor(|flavor| {
        let mut s = Options::new(flavor)
            .arg("--appendonly", "yes")
            .arg("--appendfsync", "always")
            .start();
        let mut c = s.conn();
        fill(&mut c, STREAM, "aof", 500);
        wait_drained(&mut c);
        let ttl_before = ttl(&mut c, &format!("{BY_PLAN}aof1"));
        s.restart();
        let mut c = s.conn();
        assert_eq!(count_keys(&mut c, &format!("{BY_PLAN}aof*")), 500);
        assert!(ttl(&mut c, &format!("{BY_PLAN}aof1")) <= ttl_before);
        assert_eq!(
            get(&mut c, "quantum:harvest:heat:latest_plan_id:SYM3").as_deref(),
            Some("aof499")
        );
        // Give the housekeeping tick and the post-load drain time to run.
        std::thread::sleep(Duration::from_millis(1200));
        assert_eq!(metric(&mut c, "p27_in_messages_total"), 0.0);
        assert_eq!(pending(&mut c, "heat_bridge"), 0);
        assert_eq!(
            group_field(&mut c, STREAM, "heat_bridge", "lag").as_deref(),
            Some("0")
        );
        // DEBUG RELOAD (RDB save and load in place) writes nothing either.
        let _: () = redis::cmd("DEBUG").arg("RELOAD").query(&mut c).unwrap();
        std::thread::sleep(Duration::from_millis(800));
        assert_eq!(metric(&mut c, "p27_in_messages_total"), 0.0);
        assert_eq!(count_keys(&mut c, &format!("{BY_PLAN}aof*")), 500);
    });
}

/// `kill -9` in the middle of a burst of XADDs with `appendfsync always`: every entry that
/// survived in the stream is projected once the server is back.
#[test]
fn kill_9_mid_burst_loses_no_surviving_entry() {
    for_each_flavor(|flavor| {
        let mut s = Options::new(flavor)
            .arg("--appendonly", "yes")
            .arg("--appendfsync", "always")
            .start();
        let port = s.port;
        let writer = std::thread::spawn(move || {
            let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
            let Ok(mut c) = client.get_connection() else {
                return;
            };
            for i in 0..100_000 {
                let r: redis::RedisResult<String> = redis::cmd("XADD")
                    .arg(STREAM)
                    .arg("*")
                    .arg("symbol")
                    .arg("K")
                    .arg("plan_id")
                    .arg(format!("k9_{i}"))
                    .query(&mut c);
                if r.is_err() {
                    return;
                }
            }
        });
        std::thread::sleep(Duration::from_millis(400));
        s.kill();
        let _ = writer.join();
        s.restart();
        let mut c = s.conn();
        wait_drained(&mut c);
        let len: usize = redis::cmd("XLEN").arg(STREAM).query(&mut c).unwrap();
        assert!(len > 0, "the burst wrote something before the kill");
        assert_eq!(count_keys(&mut c, &format!("{BY_PLAN}k9_*")), len);
        assert_eq!(pending(&mut c, "heat_bridge"), 0);
    });
}

/// Migration from the sidecar: the group exists with entries pending for heat_bridge_1 and
/// entries not yet read. Loading the module finishes the pending ones and goes on.
#[test]
fn sidecar_group_with_pending_entries_is_finished() {
    for_each_flavor(|flavor| {
        let s = Options::new(flavor).without_module().start();
        let mut c = s.conn();
        fill(&mut c, STREAM, "side", 50);
        xgroup(&mut c, "CREATE", &[]);
        // The sidecar read 20 and acknowledged 5 of them before it stopped.
        let read: redis::Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg("heat_bridge")
            .arg("heat_bridge_1")
            .arg("COUNT")
            .arg(20)
            .arg("STREAMS")
            .arg(STREAM)
            .arg(">")
            .query(&mut c)
            .unwrap();
        drop(read);
        let ids: Vec<String> = {
            let r: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
                .arg(STREAM)
                .arg("-")
                .arg("+")
                .arg("COUNT")
                .arg(5)
                .query(&mut c)
                .unwrap();
            r.into_iter().map(|(id, _)| id).collect()
        };
        let mut ack = redis::cmd("XACK");
        ack.arg(STREAM).arg("heat_bridge");
        for id in &ids {
            ack.arg(id);
        }
        let _: i64 = ack.query(&mut c).unwrap();
        assert_eq!(pending(&mut c, "heat_bridge"), 15);
        module_load(&mut c, &s);
        wait_drained(&mut c);
        // The 5 acknowledged by the sidecar were its job; the other 45 are projected.
        assert_eq!(count_keys(&mut c, &format!("{BY_PLAN}side*")), 45);
        assert!(!exists(&mut c, &format!("{BY_PLAN}side0")));
        assert!(exists(&mut c, &format!("{BY_PLAN}side5")));
        assert!(exists(&mut c, &format!("{BY_PLAN}side49")));
        assert_eq!(metric(&mut c, "p27_in_messages_total"), 45.0);
    });
}

/// A deleted then recreated stream gets its group back; FLUSHALL likewise.
#[test]
fn stream_deleted_recreated_and_flushall() {
    for_each_flavor(|flavor| {
        let s = Options::new(flavor).without_exporter().start();
        let mut c = s.conn();
        inject(&mut c, "A", "d1");
        let _: i64 = redis::cmd("DEL").arg(STREAM).query(&mut c).unwrap();
        inject(&mut c, "A", "d2");
        assert!(exists(&mut c, &format!("{BY_PLAN}d2")));
        assert_eq!(pending(&mut c, "heat_bridge"), 0);
        let _: () = redis::cmd("FLUSHALL").query(&mut c).unwrap();
        inject(&mut c, "A", "d3");
        assert!(exists(&mut c, &format!("{BY_PLAN}d3")));
        wait_drained(&mut c);
    });
}

/// A stream deleted and recreated inside one transaction, with entry IDs after the old
/// cursor: the module cannot see the DEL (it hears stream events only), yet it must notice
/// the new stream, recreate its group and project every entry, with no error.
#[test]
fn stream_recreated_in_one_transaction_is_noticed() {
    for_each_flavor(|flavor| {
        let s = Options::new(flavor).without_exporter().start();
        let mut c = s.conn();
        let ms = server_now_ms(&mut c);
        xadd(
            &mut c,
            STREAM,
            &format!("{ms}-1"),
            &decision("R", "r1", &[]),
        );
        wait_drained(&mut c);
        for round in 2..=3u64 {
            let mut p = redis::pipe();
            p.atomic().cmd("DEL").arg(STREAM).ignore();
            for n in 1..round {
                let cmd = p
                    .cmd("XADD")
                    .arg(STREAM)
                    .arg(format!("{ms}-{}", 10 * round + n));
                for (k, v) in decision("R", &format!("r{round}_{n}"), &[]) {
                    cmd.arg(k).arg(v);
                }
                cmd.ignore();
            }
            p.query::<()>(&mut c).expect("MULTI DEL XADD");
            wait_drained(&mut c);
            for n in 1..round {
                assert!(
                    exists(&mut c, &format!("{BY_PLAN}r{round}_{n}")),
                    "round {round}: r{round}_{n}"
                );
            }
            assert_eq!(
                group_field(&mut c, STREAM, "heat_bridge", "entries-read"),
                Some((round - 1).to_string()),
                "round {round}: the group was recreated"
            );
        }
        for stage in ["read", "write", "ack"] {
            assert_eq!(
                metric(&mut c, &format!("p27_errors_total{{stage=\"{stage}\"}}")),
                0.0,
                "{stage} errors"
            );
        }
    });
}

/// Drain passes are reported to the server's latency monitor as `heatbridge-drain` (the
/// server does not time module timers or jobs itself), so an operator sees the longest one
/// with LATENCY LATEST.
#[test]
fn drain_passes_show_in_the_latency_monitor() {
    for_each_flavor(|flavor| {
        let s = Options::new(flavor).without_exporter().start();
        let mut c = s.conn();
        config_set(&mut c, "heatbridge.stream-in", "parked").unwrap();
        fill(&mut c, STREAM, "lat", 5000);
        config_set(&mut c, "latency-monitor-threshold", "1").unwrap();
        config_set(&mut c, "heatbridge.stream-in", STREAM).unwrap();
        wait_drained(&mut c);
        // Each row: event, time, latest ms, max ms (and more on newer servers).
        let latest: Vec<Vec<redis::Value>> =
            redis::cmd("LATENCY").arg("LATEST").query(&mut c).unwrap();
        let drain = latest.iter().find(|row| {
            matches!(row.first(), Some(redis::Value::BulkString(b)) if b == b"heatbridge-drain")
        });
        assert!(
            matches!(drain.and_then(|row| row.get(3)), Some(redis::Value::Int(max)) if *max >= 1),
            "LATENCY LATEST: {latest:?}"
        );
    });
}

/// A stream key of the wrong type: health reports it, nothing crashes, and projection
/// resumes once the key is a stream again.
#[test]
fn wrong_type_stream_key_is_reported_and_recovers() {
    for_each_flavor(|flavor| {
        let s = Options::new(flavor).without_exporter().start();
        let mut c = s.conn();
        let _: () = redis::cmd("SET")
            .arg(STREAM)
            .arg("oops")
            .query(&mut c)
            .unwrap();
        let h = health(&mut c);
        assert_eq!(h["status"], "error", "{h}");
        assert!(h["reasons"].to_string().contains("not a stream"), "{h}");
        let _: i64 = redis::cmd("DEL").arg(STREAM).query(&mut c).unwrap();
        inject(&mut c, "W", "w1");
        assert!(exists(&mut c, &format!("{BY_PLAN}w1")));
        assert_ne!(health(&mut c)["status"], "error");
        assert!(s.log().contains("is not a stream"));
    });
}

/// XTRIM and XDEL of entries that were not projected yet: the rest are projected, the group
/// ends with nothing pending and lag 0.
#[test]
fn xdel_and_xtrim_before_projection() {
    for_each_flavor(|flavor| {
        let s = Options::new(flavor).without_exporter().start();
        let mut c = s.conn();
        // Park the module on another stream while entries pile up on the real one.
        config_set(&mut c, "heatbridge.stream-in", "parked").unwrap();
        fill(&mut c, STREAM, "t", 100);
        let ids: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
            .arg(STREAM)
            .arg("-")
            .arg("+")
            .query(&mut c)
            .unwrap();
        // Delete 10 in the middle and the very last one, and trim the first 20.
        for (id, _) in ids[40..50].iter().chain(ids.last()) {
            let _: i64 = redis::cmd("XDEL")
                .arg(STREAM)
                .arg(id)
                .query(&mut c)
                .unwrap();
        }
        let _: i64 = redis::cmd("XTRIM")
            .arg(STREAM)
            .arg("MINID")
            .arg(&ids[20].0)
            .query(&mut c)
            .unwrap();
        config_set(&mut c, "heatbridge.stream-in", STREAM).unwrap();
        wait_drained(&mut c);
        assert_eq!(
            count_keys(&mut c, &format!("{BY_PLAN}t*")),
            100 - 20 - 10 - 1
        );
        assert!(!exists(&mut c, &format!("{BY_PLAN}t45")));
        assert!(exists(&mut c, &format!("{BY_PLAN}t98")));
    });
}

/// Under maxmemory with noeviction, writes that fail are counted, their entries stay in the
/// backlog, and they are all projected once memory is freed.
#[test]
fn memory_pressure_defers_and_loses_nothing() {
    for_each_flavor(|flavor| {
        let s = Options::new(flavor).without_exporter().start();
        let mut c = s.conn();
        config_set(&mut c, "heatbridge.stream-in", "parked").unwrap();
        fill(&mut c, STREAM, "mem", 300);
        // The group normally exists already (under OOM even creating it is refused).
        xgroup(&mut c, "CREATE", &[]);
        refuse_writes(&mut c);
        config_set(&mut c, "heatbridge.stream-in", STREAM).unwrap();
        wait_for(10, "write errors", || {
            metric(&mut c, "p27_errors_total{stage=\"write\"}") >= 2.0
        });
        assert_eq!(count_keys(&mut c, &format!("{BY_PLAN}mem*")), 0);
        let h = health(&mut c);
        assert_ne!(h["status"], "ok", "{h}");
        assert!(h["backlog"].as_u64().unwrap_or(0) >= 300, "{h}");
        config_set(&mut c, "maxmemory", "0").unwrap();
        wait_drained(&mut c);
        assert_eq!(count_keys(&mut c, &format!("{BY_PLAN}mem*")), 300);
        assert_eq!(metric(&mut c, "p27_in_messages_total"), 300.0);
    });
}

/// A backlog with an entry deleted after the cursor: the server cannot tell the lag, so the
/// housekeeping tick counts the unread entries itself. Walking IDs without consuming each
/// entry's fields made the server's stream iterator misread its listpack and stop
/// redis-server on an assertion; the count must come out right instead.
#[test]
fn unknown_lag_is_counted_without_crashing() {
    for_each_flavor(|flavor| {
        let s = Options::new(flavor)
            .without_exporter()
            .module_arg("poll-ms", "100")
            .start();
        let mut c = s.conn();
        config_set(&mut c, "heatbridge.stream-in", "parked").unwrap();
        fill(&mut c, STREAM, "gap", 300);
        xgroup(&mut c, "CREATE", &["ENTRIESREAD", "0"]);
        let ids: Vec<String> = redis::cmd("XRANGE")
            .arg(STREAM)
            .arg("-")
            .arg("+")
            .query::<Vec<(String, Vec<String>)>>(&mut c)
            .unwrap()
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        let _: i64 = redis::cmd("XDEL")
            .arg(STREAM)
            .arg(&ids[150])
            .query(&mut c)
            .unwrap();
        // Writes fail under maxmemory, so the backlog stays while the ticks count it.
        refuse_writes(&mut c);
        config_set(&mut c, "heatbridge.stream-in", STREAM).unwrap();
        // Nil: the server cannot tell the lag.
        assert_eq!(
            group_field(&mut c, STREAM, "heat_bridge", "lag").as_deref(),
            Some("")
        );
        wait_for(10, "the tick to count 299 unread entries", || {
            health(&mut c)["backlog"].as_u64() == Some(299)
        });
        config_set(&mut c, "maxmemory", "0").unwrap();
        wait_drained(&mut c);
        assert_eq!(count_keys(&mut c, &format!("{BY_PLAN}gap*")), 299);
    });
}

/// The group belongs to HeatBridge, but an operator may move it: a rewind with XGROUP SETID
/// is honoured by the very next drain (every step reads the group), and the re-read entries
/// are projected again (retries are idempotent).
#[test]
fn operator_rewind_of_the_group_is_honoured() {
    for_each_flavor(|flavor| {
        let s = Options::new(flavor).without_exporter().start();
        let mut c = s.conn();
        fill(&mut c, STREAM, "rw", 5);
        wait_drained(&mut c);
        assert_eq!(metric(&mut c, "p27_in_messages_total"), 5.0);
        xgroup(&mut c, "SETID", &[]);
        inject(&mut c, "SYM0", "rw_next");
        wait_drained(&mut c);
        assert_eq!(metric(&mut c, "p27_in_messages_total"), 11.0);
        assert_eq!(
            metric(&mut c, "p27_dedupe_skips_total"),
            0.0,
            "own-ID retries"
        );
        assert_eq!(count_keys(&mut c, &format!("{BY_PLAN}rw*")), 6);
    });
}

/// SWAPDB sends no keyspace event, yet it swaps another stream (with its own group) in under
/// the name: nothing of it may be skipped.
#[test]
fn swapdb_brings_in_another_stream_and_nothing_is_skipped() {
    for_each_flavor(|flavor| {
        let s = Options::new(flavor).without_exporter().start();
        let mut c = s.conn();
        // Explicit IDs: the other stream's entries come before the module's cursor, and only
        // one entry follows it after the swap, as if nothing but one XADD had happened.
        let ms = server_now_ms(&mut c);
        for (n, plan) in ["e0", "e1", "e2"].iter().enumerate() {
            xadd(
                &mut c,
                STREAM,
                &format!("{ms}-{}", 10 + n),
                &decision("SYM0", plan, &[]),
            );
        }
        wait_drained(&mut c);
        let mut other = s.conn();
        let _: () = redis::cmd("SELECT").arg(1).query(&mut other).unwrap();
        xgroup(&mut other, "CREATE", &["MKSTREAM"]);
        for (n, plan) in ["f0", "f1"].iter().enumerate() {
            xadd(
                &mut other,
                STREAM,
                &format!("{ms}-{}", 1 + n),
                &decision("SYM0", plan, &[]),
            );
        }
        xadd(
            &mut c,
            STREAM,
            &format!("{ms}-20"),
            &decision("SYM0", "e_after", &[]),
        );
        wait_drained(&mut c);
        let _: () = redis::cmd("SWAPDB").arg(0).arg(1).query(&mut c).unwrap();
        xadd(
            &mut c,
            STREAM,
            &format!("{ms}-30"),
            &decision("SYM0", "g_after_swap", &[]),
        );
        wait_drained(&mut c);
        for plan in ["f0", "f1", "g_after_swap"] {
            assert!(
                exists(&mut c, &format!("{BY_PLAN}{plan}")),
                "{plan} skipped"
            );
        }
        assert_eq!(
            group_field(&mut c, STREAM, "heat_bridge", "lag").as_deref(),
            Some("0")
        );
    });
}
