//! Changes that others make to the group or to the stream, which the module cannot hear as
//! stream events: reads and claims by other readers, RENAME and SWAPDB of another stream into
//! place, a rewind while `heatbridge.stream-in` pointed elsewhere. Whatever the module
//! remembers of the group between passes (see `engine::Known`), nothing may be skipped, and
//! latest must never go back to an older decision.

mod common;
use common::*;

const BY_PLAN: &str = "quantum:harvest:heat:by_plan:";
const POINTER: &str = "quantum:harvest:heat:latest_plan_id:";

/// Adds `name args...` to a pipeline, ignoring its reply.
fn queue(p: &mut redis::Pipeline, name: &str, args: &[&str]) {
    let c = p.cmd(name);
    for a in args {
        c.arg(*a);
    }
    c.ignore();
}

/// Adds an XADD of a seed decision to a pipeline.
fn queue_xadd(p: &mut redis::Pipeline, stream: &str, id: &str, symbol: &str, plan: &str) {
    let c = p.cmd("XADD").arg(stream).arg(id);
    for (k, v) in decision(symbol, plan, &[]) {
        c.arg(k).arg(v);
    }
    c.ignore();
}

/// Adds `XREADGROUP GROUP heat_bridge <consumer> COUNT 1 STREAMS <stream> >` to a pipeline:
/// another reader taking one entry and never acknowledging it.
fn queue_read_one(p: &mut redis::Pipeline, consumer: &str) {
    queue(
        p,
        "XREADGROUP",
        &[
            "GROUP",
            "heat_bridge",
            consumer,
            "COUNT",
            "1",
            "STREAMS",
            STREAM,
            ">",
        ],
    );
}

/// A server whose housekeeping tick (which always reads the group) stays out of the way, so
/// that every pass after the first may trust what the last one left.
fn quiet_server(flavor: Flavor) -> Server {
    Options::new(flavor)
        .without_exporter()
        .module_arg("poll-ms", "60000")
        .start()
}

fn assert_projected(c: &mut Connection, plans: &[&str]) {
    for plan in plans {
        assert!(exists(c, &format!("{BY_PLAN}{plan}")), "{plan} was skipped");
    }
}

/// Another stream with its own, older group is renamed over the input stream. It has the
/// length and the count of entries after the module's cursor that only XADDs would have
/// given. Its unread entries are projected from its own group.
#[test]
fn stream_renamed_in_is_read_from_its_own_group() {
    for_each_flavor(|flavor| {
        let s = quiet_server(flavor);
        let mut c = s.conn();
        let ms = server_now_ms(&mut c);
        xadd(
            &mut c,
            STREAM,
            &format!("{ms}-5"),
            &decision("S", "s0", &[]),
        );
        xadd(
            &mut c,
            STREAM,
            &format!("{ms}-6"),
            &decision("S", "s1", &[]),
        );
        wait_drained(&mut c);
        // T: two entries before the cursor, one after, and a group that read none.
        xadd(
            &mut c,
            "T",
            &format!("{ms}-3"),
            &decision("T", "t_old", &[]),
        );
        xadd(
            &mut c,
            "T",
            &format!("{ms}-4"),
            &decision("T", "t_pad", &[]),
        );
        xadd(
            &mut c,
            "T",
            &format!("{ms}-9"),
            &decision("T", "t_new", &[]),
        );
        let _: () = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg("T")
            .arg("heat_bridge")
            .arg("0")
            .arg("ENTRIESREAD")
            .arg("0")
            .query(&mut c)
            .unwrap();
        let mut p = redis::pipe();
        p.atomic();
        queue_xadd(&mut p, STREAM, &format!("{ms}-7"), "S", "s2");
        queue(&mut p, "RENAME", &["T", STREAM]);
        p.query::<()>(&mut c).unwrap();
        wait_drained(&mut c);
        assert_projected(&mut c, &["t_old", "t_pad", "t_new"]);
        assert_eq!(
            group_field(&mut c, STREAM, "heat_bridge", "entries-read").as_deref(),
            Some("3")
        );
    });
}

/// The same with SWAPDB inside a transaction: the stream of database 1, with its own group,
/// takes the place of the one the module knew.
#[test]
fn stream_swapped_in_is_read_from_its_own_group() {
    for_each_flavor(|flavor| {
        let s = quiet_server(flavor);
        let mut c = s.conn();
        let ms = server_now_ms(&mut c);
        xadd(
            &mut c,
            STREAM,
            &format!("{ms}-5"),
            &decision("S", "s0", &[]),
        );
        wait_drained(&mut c);
        let mut p = redis::pipe();
        p.atomic();
        queue(&mut p, "SELECT", &["1"]);
        queue_xadd(&mut p, STREAM, &format!("{ms}-3"), "T", "t_old");
        queue(
            &mut p,
            "XGROUP",
            &["CREATE", STREAM, "heat_bridge", "0", "ENTRIESREAD", "0"],
        );
        queue_xadd(&mut p, STREAM, &format!("{ms}-9"), "T", "t_new");
        queue(&mut p, "SELECT", &["0"]);
        queue_xadd(&mut p, STREAM, &format!("{ms}-7"), "S", "s1");
        queue(&mut p, "SWAPDB", &["0", "1"]);
        p.query::<()>(&mut c).unwrap();
        wait_drained(&mut c);
        assert_projected(&mut c, &["t_old", "t_new"]);
    });
}

/// An operator rewinds the group while `heatbridge.stream-in` points elsewhere (so the module
/// hears nothing of it), then points it back. The rewind is honoured: the entries after the
/// new cursor are projected again.
#[test]
fn rewind_while_pointed_elsewhere_is_honoured() {
    for_each_flavor(|flavor| {
        let s = quiet_server(flavor);
        let mut c = s.conn();
        for plan in ["a0", "a1", "a2"] {
            inject(&mut c, "A", plan);
        }
        wait_drained(&mut c);
        inject(&mut c, "B", "b0");
        wait_drained(&mut c);
        for key in [format!("{BY_PLAN}a1"), "quantum:dedupe:p27:a1".to_string()] {
            let _: i64 = redis::cmd("DEL").arg(key).query(&mut c).unwrap();
        }
        let mut p = redis::pipe();
        p.atomic();
        queue(&mut p, "CONFIG", &["SET", "heatbridge.stream-in", "parked"]);
        queue(
            &mut p,
            "XGROUP",
            &["SETID", STREAM, "heat_bridge", "0", "ENTRIESREAD", "0"],
        );
        queue(&mut p, "CONFIG", &["SET", "heatbridge.stream-in", STREAM]);
        queue_xadd(&mut p, STREAM, "*", "C", "c0");
        p.query::<()>(&mut c).unwrap();
        wait_drained(&mut c);
        assert_projected(&mut c, &["a1", "c0"]);
    });
}

/// Our own consumer reads an entry between two XADDs (as a sidecar still running would) and
/// never acknowledges it. Both are projected, the pending one is finished, and latest stays
/// on the newer decision.
#[test]
fn entry_read_by_our_consumer_between_xadds_keeps_latest_newest() {
    for_each_flavor(|flavor| {
        let s = Options::new(flavor).without_exporter().start();
        let mut c = s.conn();
        inject(&mut c, "A", "p0");
        wait_drained(&mut c);
        create_consumer(&mut c, "heat_bridge_1");
        inject(&mut c, "B", "q1");
        wait_drained(&mut c);
        let mut p = redis::pipe();
        p.atomic();
        queue_xadd(&mut p, STREAM, "*", "A", "p1");
        queue_read_one(&mut p, "heat_bridge_1");
        queue_xadd(&mut p, STREAM, "*", "A", "p2");
        p.query::<()>(&mut c).unwrap();
        wait_drained(&mut c);
        assert_projected(&mut c, &["p1", "p2"]);
        assert_eq!(get(&mut c, &format!("{POINTER}A")).as_deref(), Some("p2"));
    });
}

/// The documented recovery for an entry another reader took: XCLAIM it to our consumer. It is
/// older than the decision latest holds by then, so latest keeps the newer one.
#[test]
fn claimed_older_entry_keeps_latest_newest() {
    for_each_flavor(|flavor| {
        let s = Options::new(flavor).without_exporter().start();
        let mut c = s.conn();
        inject(&mut c, "A", "p0");
        wait_drained(&mut c);
        let mut p = redis::pipe();
        p.atomic();
        queue_xadd(&mut p, STREAM, "*", "A", "p1");
        queue_read_one(&mut p, "other");
        p.query::<()>(&mut c).unwrap();
        let pending: Vec<(String, String, i64, i64)> = redis::cmd("XPENDING")
            .arg(STREAM)
            .arg("heat_bridge")
            .arg("-")
            .arg("+")
            .arg(10)
            .query(&mut c)
            .unwrap();
        let taken = pending
            .first()
            .map(|row| row.0.clone())
            .expect("a pending entry");
        inject(&mut c, "A", "p2");
        wait_for(10, "p2 projected", || {
            get(&mut c, &format!("{POINTER}A")).as_deref() == Some("p2")
        });
        let _: redis::Value = redis::cmd("XCLAIM")
            .arg(STREAM)
            .arg("heat_bridge")
            .arg("heat_bridge_1")
            .arg(0)
            .arg(&taken)
            .query(&mut c)
            .unwrap();
        wait_drained(&mut c);
        assert_projected(&mut c, &["p1", "p2"]);
        assert_eq!(get(&mut c, &format!("{POINTER}A")).as_deref(), Some("p2"));
    });
}
