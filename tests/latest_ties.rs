//! Latest when decisions of one millisecond tie after the module forgot which decision a
//! latest hash holds (a reload, a restart, a role change): the decision it holds is found by
//! its content, an edited hash falls back to the newest valid decision, and a resend that
//! dedupe skipped never counts as the holder. From the session-7 review of the tie read.

mod common;
use common::*;

const GROUP: &str = "heat_bridge";
const CONSUMER: &str = "heat_bridge_1";
const LATEST: &str = "quantum:harvest:heat:latest:";
const POINTER: &str = "quantum:harvest:heat:latest_plan_id:";

/// A server whose housekeeping tick stays out of the way, with a first decision projected.
fn quiet_server(flavor: Flavor) -> Server {
    let s = Options::new(flavor)
        .without_exporter()
        .module_arg("poll-ms", "60000")
        .start();
    let mut c = s.conn();
    inject(&mut c, "W", "warm");
    wait_drained(&mut c);
    s
}

/// p1 then p2 of symbol E at IDs `p1` and `p2` (one millisecond), both projected.
fn p1_then_p2(c: &mut Connection, p1: &str, p2: &str) {
    let _: redis::Value = redis::pipe()
        .atomic()
        .cmd("XADD")
        .arg(STREAM)
        .arg(p1)
        .arg(flat(&decision("E", "p1", &[])))
        .cmd("XADD")
        .arg(STREAM)
        .arg(p2)
        .arg(flat(&decision("E", "p2", &[])))
        .query(c)
        .expect("MULTI");
    wait_drained(c);
}

/// The operator's note on the latest hash of E: then no entry holds its exact content.
fn note_on_latest(c: &mut Connection) {
    let _: i64 = redis::cmd("HSET")
        .arg(format!("{LATEST}E"))
        .arg("note")
        .arg("checked")
        .query(c)
        .expect("HSET");
}

/// E's pointer and the plan_id of its latest hash.
fn latest_of_e(c: &mut Connection) -> (Option<String>, Option<String>) {
    (
        get(c, &format!("{POINTER}E")),
        hget(c, &format!("{LATEST}E"), "plan_id"),
    )
}

/// The millisecond of a fresh entry, a little in the past (an entry time in the future
/// would expire later when projected later, which orders decisions without a tie).
fn past_ms(c: &mut Connection) -> u64 {
    let ms = server_now_ms(c) + 1;
    std::thread::sleep(std::time::Duration::from_millis(20));
    ms
}

/// Makes entry `id` pending for the module's consumer while the cursor stays at the end:
/// another consumer reads everything, the entry is claimed by the module's consumer, and
/// the rest is acknowledged. No XADD, so no pass runs until the next one.
fn make_pending(c: &mut Connection, id: &str, others: &[&str]) {
    let _: () = redis::cmd("XGROUP")
        .arg(&["SETID", STREAM, GROUP, "0"][..])
        .query(c)
        .expect("SETID");
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg(
            &[
                "GROUP", GROUP, "someone", "COUNT", "100000", "STREAMS", STREAM, ">",
            ][..],
        )
        .query(c)
        .expect("XREADGROUP");
    let _: redis::Value = redis::cmd("XCLAIM")
        .arg(&[STREAM, GROUP, CONSUMER, "0", id][..])
        .query(c)
        .expect("XCLAIM");
    let pending: Vec<Vec<redis::Value>> = redis::cmd("XPENDING")
        .arg(&[STREAM, GROUP, "-", "+", "100000", "someone"][..])
        .query(c)
        .expect("XPENDING");
    let mut ack = redis::cmd("XACK");
    ack.arg(STREAM).arg(GROUP);
    for row in pending {
        if let Some(redis::Value::BulkString(b)) = row.first() {
            ack.arg(String::from_utf8_lossy(b).to_string());
        }
    }
    let _: i64 = ack.query(c).expect("XACK");
    let _ = others;
}

fn flat(d: &[(String, String)]) -> Vec<String> {
    d.iter().flat_map(|(k, v)| [k.clone(), v.clone()]).collect()
}

/// Two decisions of one symbol in one millisecond, p1 then p2, both projected: latest holds
/// p2. An operator adds a field to the latest hash (a note), and the module forgets which
/// decision latest holds (DEBUG RELOAD). The older p1 then comes back as a pending entry of
/// the module's consumer. Its expiry ties with latest's, and the tie read by content finds
/// no entry of that millisecond whose exact content latest holds (the note), so it takes
/// latest's decision for older than p1 and writes p1 over p2: latest and the pointer step
/// back to an older decision (before b50b9f8 the newest valid entry, p2, held it).
#[test]
fn an_edited_latest_hash_is_not_stepped_back_by_an_older_pending_entry() {
    for_each_flavor(|flavor| {
        let s = quiet_server(flavor);
        let mut c = s.conn();
        let ms = past_ms(&mut c);
        let p1 = format!("{ms}-1");
        let p2 = format!("{ms}-2");
        p1_then_p2(&mut c, &p1, &p2);
        assert_eq!(get(&mut c, &format!("{POINTER}E")).as_deref(), Some("p2"));
        // The operator's note on the latest hash.
        note_on_latest(&mut c);
        let _: () = redis::cmd("DEBUG")
            .arg("RELOAD")
            .query(&mut c)
            .expect("DEBUG RELOAD");
        make_pending(&mut c, &p1, &[]);
        assert_eq!(
            group_field(&mut c, STREAM, GROUP, "pending").as_deref(),
            Some("1")
        );
        // An XADD of another symbol runs a pass, which finishes the pending p1 first.
        inject(&mut c, "OTHER", "o1");
        wait_drained(&mut c);
        assert_eq!(
            latest_of_e(&mut c),
            (Some("p2".to_string()), Some("p2".to_string())),
            "{flavor:?}: latest of E after the older p1 was finished"
        );
    });
}

/// The same step back through HEATBRIDGE.REPLAY: an operator notes something on the latest
/// hash, the server restarts from its RDB (the module forgets which decision latest holds),
/// and a REPLAY of the older decision p1 alone writes p1 over p2, although "a REPLAY of an
/// old range raises no latest event for a symbol whose latest is newer" (docs/readers.md).
#[test]
fn an_edited_latest_hash_is_not_stepped_back_by_a_replay_of_an_older_decision() {
    for_each_flavor(|flavor| {
        let mut s = quiet_server(flavor);
        let mut c = s.conn();
        let ms = past_ms(&mut c);
        let p0 = format!("{ms}-0");
        let p1 = format!("{ms}-1");
        let p2 = format!("{ms}-2");
        p1_then_p2(&mut c, &p1, &p2);
        note_on_latest(&mut c);
        let _: () = redis::cmd("SAVE").query(&mut c).expect("SAVE");
        s.restart();
        let mut c = s.conn();
        let _: redis::Value = redis::cmd("HEATBRIDGE.REPLAY")
            .arg("FROM")
            .arg(&p0)
            .arg("COUNT")
            .arg(1)
            .query(&mut c)
            .expect("REPLAY");
        assert_eq!(
            latest_of_e(&mut c),
            (Some("p2".to_string()), Some("p2".to_string())),
            "{flavor:?}: latest of E after a REPLAY of the older p1"
        );
    });
}

/// Three decisions of one symbol in one millisecond: p1, p2, then p1 again, a resend that
/// dedupe skips (with other content, and with the very same content, which is what a
/// producer's retry sends). p1 is projected alone; the module then forgets what it wrote
/// (DEBUG RELOAD), and p2 and the resend come back as pending entries of the module's
/// consumer. Latest must name p2, the newest projected decision: the tie read that orders
/// decisions of one millisecond must not take the skipped resend for the decision latest
/// holds (review finding F2 of session 6, and the identical resend found by session 7's
/// review).
#[test]
fn a_skipped_resend_does_not_hold_latest_back_in_a_tie() {
    for_each_flavor(|flavor| {
        for resend in [&[("heat_score", "0.75")][..], &[]] {
            let s = quiet_server(flavor);
            let mut c = s.conn();
            let ms = past_ms(&mut c);
            xadd(
                &mut c,
                STREAM,
                &format!("{ms}-1"),
                &decision("TIE", "p1", &[]),
            );
            wait_drained(&mut c);
            assert_eq!(get(&mut c, &format!("{POINTER}TIE")).as_deref(), Some("p1"));
            let _: () = redis::cmd("DEBUG")
                .arg("RELOAD")
                .query(&mut c)
                .expect("DEBUG RELOAD");
            let _: redis::Value = redis::pipe()
                .atomic()
                .cmd("XADD")
                .arg(STREAM)
                .arg(format!("{ms}-2"))
                .arg(flat(&decision("TIE", "p2", &[])))
                .cmd("XADD")
                .arg(STREAM)
                .arg(format!("{ms}-3"))
                .arg(flat(&decision("TIE", "p1", resend)))
                .cmd("XREADGROUP")
                .arg(
                    &[
                        "GROUP", GROUP, CONSUMER, "COUNT", "2", "STREAMS", STREAM, ">",
                    ][..],
                )
                .query(&mut c)
                .expect("MULTI");
            wait_drained(&mut c);
            let what = format!("{flavor:?}, resend {resend:?}");
            assert_eq!(metric(&mut c, "p27_dedupe_skips_total"), 1.0, "{what}");
            assert_eq!(
                get(&mut c, &format!("{POINTER}TIE")).as_deref(),
                Some("p2"),
                "{what}"
            );
            assert_eq!(
                hget(&mut c, &format!("{LATEST}TIE"), "plan_id").as_deref(),
                Some("p2"),
                "{what}"
            );
        }
    });
}
