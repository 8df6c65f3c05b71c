//! Replication: a replica with the module receives exactly the master's keys and expiries
//! and never projects on its own; a promoted replica resumes from the replicated cursor.

mod common;
use common::*;

use std::collections::BTreeMap;

fn wait_link_up(c: &mut Connection) {
    wait_for(30, "replication link up", || {
        let info: String = redis::cmd("INFO").arg("replication").query(c).unwrap();
        info.contains("master_link_status:up")
    });
}

/// A master started from `opts` and a replica of it (same flavor, the module's defaults),
/// with the replication link up.
fn with_replica(opts: Options) -> (Server, Server) {
    let flavor = opts.flavor;
    let master = opts.start();
    let replica = Options::new(flavor)
        .arg("--replicaof", &format!("127.0.0.1 {}", master.port))
        .start();
    wait_link_up(&mut replica.conn());
    (master, replica)
}

/// Type, content and absolute expiry (ms) of one key.
type Dumped = (String, Vec<Vec<u8>>, i64);

/// Every lookup and dedupe key with its type, content and absolute expiry (ms).
fn dump(c: &mut Connection) -> BTreeMap<Vec<u8>, Dumped> {
    let mut keys: Vec<Vec<u8>> = redis::cmd("KEYS")
        .arg("quantum:harvest:*")
        .query(c)
        .unwrap();
    let dedupe: Vec<Vec<u8>> = redis::cmd("KEYS").arg("quantum:dedupe:*").query(c).unwrap();
    keys.extend(dedupe);
    let mut out = BTreeMap::new();
    for k in keys {
        let t: String = redis::cmd("TYPE").arg(&k).query(c).unwrap();
        let content: Vec<Vec<u8>> = match t.as_str() {
            "hash" => {
                let mut pairs: Vec<(Vec<u8>, Vec<u8>)> =
                    redis::cmd("HGETALL").arg(&k).query(c).unwrap();
                pairs.sort();
                pairs.into_iter().flat_map(|(a, b)| [a, b]).collect()
            }
            "string" => vec![redis::cmd("GET").arg(&k).query(c).unwrap()],
            _ => Vec::new(),
        };
        let at: i64 = redis::cmd("PEXPIRETIME").arg(&k).query(c).unwrap();
        out.insert(k, (t, content, at));
    }
    out
}

#[test]
fn replica_mirrors_master_and_never_projects() {
    for_each_flavor(|flavor| {
        let (master, replica) = with_replica(Options::new(flavor));
        let (mut m, mut r) = (master.conn(), replica.conn());
        for i in 0..300 {
            let fields = decision(&format!("S{}", i % 8), &format!("rp{i}"), &[]);
            xadd(&mut m, STREAM, "*", &fields);
        }
        // A duplicate and an invalid entry replicate their (lack of) effects too.
        inject(&mut m, "S0", "rp5");
        xadd(&mut m, STREAM, "*", &[("symbol".into(), "S0".into())]);
        wait_drained(&mut m);
        let acked: i64 = redis::cmd("WAIT").arg(1).arg(5000).query(&mut m).unwrap();
        assert_eq!(acked, 1);
        let on_master = dump(&mut m);
        assert_eq!(
            on_master.len(),
            300 * 2 + 8 * 2,
            "by_plan+dedupe per plan, latest+pointer per symbol"
        );
        assert!(
            on_master.values().all(|(_, _, at)| *at > 0),
            "every lookup key expires"
        );
        assert_eq!(
            dump(&mut r),
            on_master,
            "keys, values and absolute expiries match"
        );
        // The replica's group cursor followed the master's.
        assert_eq!(
            group_field(&mut r, STREAM, "heat_bridge", "last-delivered-id"),
            group_field(&mut m, STREAM, "heat_bridge", "last-delivered-id")
        );
        assert_eq!(metric(&mut r, "p27_in_messages_total"), 0.0);
        assert_eq!(metric(&mut r, "p27_written_total{kind=\"by_plan\"}"), 0.0);
        assert_eq!(health(&mut r)["role"], "replica");
        assert!(!replica.log().contains("internal error"));

        // Failover: the promoted replica projects new entries and not the old ones.
        let _: () = redis::cmd("REPLICAOF")
            .arg("NO")
            .arg("ONE")
            .query(&mut r)
            .unwrap();
        wait_for(10, "role master", || health(&mut r)["role"] == "master");
        inject(&mut r, "S1", "after_failover");
        assert!(exists(
            &mut r,
            "quantum:harvest:heat:by_plan:after_failover"
        ));
        wait_drained(&mut r);
        assert_eq!(metric(&mut r, "p27_in_messages_total"), 1.0);
    });
}

/// A decision with fewer fields than the latest hash holds: the leftover fields are deleted
/// (HDEL) before latest's expiry is set, and the replica and a reload of the AOF end with the
/// master's exact keys, fields and expiries. Also a TTL for latest other than by_plan's.
#[test]
fn latest_losing_fields_replicates_and_reloads_the_same() {
    for_each_flavor(|flavor| {
        let (master, replica) = with_replica(
            Options::new(flavor)
                .arg("--appendonly", "yes")
                .module_arg("ttl-symbol-sec", "900"),
        );
        let (mut m, mut r) = (master.conn(), replica.conn());
        let rounds: [&[(&str, &str)]; 4] = [
            &[("note", "one extra")],
            &[],
            &[("n2", "a"), ("n3", "b")],
            &[("n3", "only this one")],
        ];
        for (i, extra) in rounds.iter().enumerate() {
            // Each decision in its own millisecond, so that each has its own expiry.
            std::thread::sleep(std::time::Duration::from_millis(2));
            xadd(
                &mut m,
                STREAM,
                "*",
                &decision("LF", &format!("lf{i}"), extra),
            );
        }
        wait_drained(&mut m);
        let latest = "quantum:harvest:heat:latest:LF";
        // Latest was given the last decision's expiry, the one its pointer got from SET
        // PXAT (HSET alone would have kept the previous decision's).
        let expiry = |c: &mut Connection, k: &str| -> i64 {
            redis::cmd("PEXPIRETIME").arg(k).query(c).unwrap()
        };
        assert_eq!(
            expiry(&mut m, latest),
            expiry(&mut m, "quantum:harvest:heat:latest_plan_id:LF")
        );
        let fields: Vec<String> = hgetall(&mut m, latest)
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert!(fields.contains(&"n3".to_string()), "{fields:?}");
        assert!(
            !fields.iter().any(|f| f == "note" || f == "n2"),
            "leftover fields were removed: {fields:?}"
        );
        let acked: i64 = redis::cmd("WAIT").arg(1).arg(5000).query(&mut m).unwrap();
        assert_eq!(acked, 1);
        let on_master = dump(&mut m);
        assert!(
            on_master.values().all(|(_, _, at)| *at > 0),
            "every key expires"
        );
        assert_eq!(dump(&mut r), on_master, "the replica holds the same");
        let _: () = redis::cmd("DEBUG").arg("LOADAOF").query(&mut m).unwrap();
        assert_eq!(
            dump(&mut m),
            on_master,
            "a reload of the AOF holds the same"
        );
    });
}
