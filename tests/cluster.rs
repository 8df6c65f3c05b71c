//! Redis Cluster (CONTRACT §11): three masters and three replicas with the module on all six,
//! on Redis 7.0, Redis 8.2 and Valkey 8.1. Producers and readers go through redis-py's
//! `RedisCluster` (tests/clients/cluster_client.py); per-node checks use plain connections.

mod common;
use common::cluster::*;
use common::*;

use std::collections::{BTreeMap, BTreeSet};

/// The three tagged streams, one per master of a fresh cluster.
fn streams() -> Vec<String> {
    tags_on_three_masters()
        .iter()
        .map(|t| tagged_stream(t))
        .collect()
}

#[test]
fn cluster_comes_up_with_the_module_and_no_key() {
    for_each_flavor(|flavor| {
        let streams = streams();
        // redis-cli --cluster create refuses a node that holds a key: the module created none.
        let cluster = ClusterOptions::new(flavor, &streams).start();
        let topo = cluster.topology();
        let masters: Vec<&NodeInfo> = topo.iter().filter(|i| i.is_live_master()).collect();
        assert_eq!(masters.len(), 3, "{topo:?}");
        assert_eq!(topo.len(), 6, "{topo:?}");
        for m in &masters {
            assert_eq!(
                cluster.replicas_of(cluster.index(m.port)).len(),
                1,
                "{topo:?}"
            );
        }
        let owners: BTreeSet<usize> = streams.iter().map(|s| cluster.owner(s)).collect();
        assert_eq!(owners.len(), 3, "the streams land on three masters");
        for n in cluster.live() {
            assert_eq!(n.dbsize(), 0);
        }
    });
}

/// `XADD stream * <seed decision>` as a command for [`Cluster::rc`].
fn xadd_cmd(stream: &str, symbol: &str, plan_id: &str) -> Vec<String> {
    let mut c = vec!["XADD".to_string(), stream.to_string(), "*".to_string()];
    for (k, v) in decision(symbol, plan_id, &[]) {
        c.extend([k, v]);
    }
    c
}

fn get_cmd(plan_id: &str, stream: &str) -> Vec<String> {
    ["HEATBRIDGE.GET", plan_id, "STREAM", stream]
        .map(str::to_string)
        .to_vec()
}

fn latest_cmd(symbol: &str, stream: &str) -> Vec<String> {
    ["HEATBRIDGE.LATEST", symbol, "STREAM", stream]
        .map(str::to_string)
        .to_vec()
}

/// A HEATBRIDGE.GET/LATEST reply from a plain connection, as sorted pairs (None for nil).
fn hb_read(
    c: &mut Connection,
    cmd: &str,
    arg: &str,
    stream: &str,
) -> Option<Vec<(String, String)>> {
    let v: Option<Vec<(String, String)>> = redis::cmd(cmd)
        .arg(arg)
        .arg("STREAM")
        .arg(stream)
        .query(c)
        .unwrap_or_else(|e| panic!("{cmd} {arg} STREAM {stream}: {e}"));
    v.map(|mut p| {
        p.sort();
        p
    })
}

/// The error a plain connection gets for `args`.
fn refusal(c: &mut Connection, args: &[&str]) -> redis::RedisError {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    match cmd.query::<redis::Value>(c) {
        Err(e) => e,
        Ok(v) => panic!("{args:?} succeeded: {v:?}"),
    }
}

/// `(plan_id, symbol)` of every entry of `stream` on the node at `i`, in stream order.
fn stream_decisions(cluster: &Cluster, i: usize, stream: &str) -> Vec<(String, String, String)> {
    let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query(&mut cluster.nodes[i].conn())
        .expect("XRANGE");
    entries
        .into_iter()
        .map(|(id, fields)| {
            let field = |name: &str| {
                fields
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default()
            };
            (id, field("plan_id"), field("symbol"))
        })
        .collect()
}

/// Asserts that every entry of `stream` is projected on its owner (its by_plan key read
/// through RedisCluster), that every plan in `required` is among them, and that each
/// symbol's latest is its last entry in stream order. Returns how many plans were checked.
fn assert_stream_projected(cluster: &Cluster, tag: &str, required: &[String]) -> usize {
    let stream = tagged_stream(tag);
    let owner = cluster.owner(&stream);
    cluster.wait_drained(owner, &stream);
    let entries = stream_decisions(cluster, owner, &stream);
    let in_stream: BTreeSet<&str> = entries.iter().map(|(_, p, _)| p.as_str()).collect();
    let missing: Vec<&String> = required
        .iter()
        .filter(|p| !in_stream.contains(p.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "acknowledged decisions missing from {stream} on its owner: {missing:?}"
    );
    let plans: Vec<&str> = in_stream.iter().copied().collect();
    let cmds: Vec<Vec<String>> = plans
        .iter()
        .map(|p| vec!["HGETALL".to_string(), by_plan_key(tag, p)])
        .collect();
    let unprojected: Vec<(&str, String)> = plans
        .iter()
        .zip(cluster.rc(&cmds))
        .filter_map(|(p, r)| match r {
            Ok(v) => match json_hash(&v) {
                Some(h) if h.get("plan_id").map(String::as_str) == Some(p) => None,
                other => Some((*p, format!("{other:?}"))),
            },
            Err(e) => Some((*p, e)),
        })
        .collect();
    assert!(
        unprojected.is_empty(),
        "{} of {} entries of {stream} not projected, e.g. {:?}",
        unprojected.len(),
        plans.len(),
        &unprojected[..unprojected.len().min(10)]
    );
    // A retried XADD may repeat a plan_id; dedupe skips the repeat, so only each plan's
    // first entry can be a symbol's latest.
    let mut seen = BTreeSet::new();
    let mut last: BTreeMap<&str, &str> = BTreeMap::new();
    for (_, p, s) in &entries {
        if seen.insert(p.as_str()) {
            last.insert(s, p);
        }
    }
    let cmds: Vec<Vec<String>> = last
        .keys()
        .map(|s| vec!["GET".to_string(), latest_plan_id_key(tag, s)])
        .collect();
    for ((s, p), r) in last.iter().zip(cluster.rc(&cmds)) {
        assert_eq!(
            r.unwrap_or_else(|e| panic!("GET latest_plan_id {s}: {e}")),
            serde_json::json!(p),
            "latest plan of {s} on {stream}"
        );
    }
    plans.len()
}

/// Asserts `p27_stream_owned{stream=...}` on every live node: 1 on the stream's owner only.
fn assert_owned_metrics(cluster: &Cluster) {
    for s in &cluster.streams {
        let owner = cluster.owner(s);
        for (i, n) in cluster.nodes.iter().enumerate() {
            if !cluster.live().any(|l| l.port == n.port) {
                continue;
            }
            let text = metrics_text(&mut n.conn());
            let owned = sample(&text, &format!("p27_stream_owned{{stream=\"{s}\"}}"));
            let want = if i == owner { 1.0 } else { 0.0 };
            assert_eq!(
                owned,
                Some(want),
                "p27_stream_owned of {s} on {}:\n{text}",
                n.port
            );
            assert!(
                sample(&text, &format!("p27_stream_backlog{{stream=\"{s}\"}}")).is_some(),
                "p27_stream_backlog of {s} on {}:\n{text}",
                n.port
            );
        }
    }
}

/// Health's `streams` entry for `stream`.
fn health_stream(h: &serde_json::Value, stream: &str) -> serde_json::Value {
    h["streams"]
        .as_array()
        .and_then(|a| a.iter().find(|e| e["name"] == stream))
        .cloned()
        .unwrap_or_else(|| panic!("health lists no stream {stream}: {h}"))
}

/// Decision `p-<stream>-<n>` of the producer has symbol `S<n % 5>`.
fn symbol_of(plan_id: &str) -> String {
    let n: usize = plan_id
        .rsplit('-')
        .next()
        .and_then(|n| n.parse().ok())
        .expect("producer plan_id");
    format!("S{}", n % 5)
}

/// Starts a cluster on the three tagged streams and writes, through RedisCluster, 30
/// decisions per stream plus one plan_id (`shared`, symbol SX) on all three; waits until
/// every owner has drained.
fn projected_cluster(flavor: Flavor) -> (Cluster, Vec<Ack>) {
    let streams = streams();
    let cluster = ClusterOptions::new(flavor, &streams).start();
    let (acks, _) = cluster.producer(30, "p", &streams).finish();
    assert_eq!(acks.len(), 90);
    let shared: Vec<Vec<String>> = streams
        .iter()
        .map(|s| xadd_cmd(s, "SX", "shared"))
        .collect();
    for r in cluster.rc(&shared) {
        r.expect("XADD shared");
    }
    for s in &streams {
        cluster.wait_drained(cluster.owner(s), s);
    }
    (cluster, acks)
}

#[test]
fn each_stream_projects_on_its_owner_with_tagged_keys() {
    for_each_flavor(|flavor| {
        let tags = tags_on_three_masters();
        let (cluster, acks) = projected_cluster(flavor);
        let streams = cluster.streams.clone();

        // Exactly the tagged keys, on the owner and its replica only. The shared plan_id
        // is projected on all three: dedupe is per tag.
        let mut expected: Vec<Vec<String>> = Vec::new();
        for (i, s) in streams.iter().enumerate() {
            let tag = &tags[i];
            let mut keys = vec![s.clone()];
            let plans = acks
                .iter()
                .filter(|a| a.stream == i)
                .map(|a| a.plan_id.as_str());
            for p in plans.chain(["shared"]) {
                keys.extend([by_plan_key(tag, p), dedupe_key(tag, p)]);
            }
            for sym in ["S0", "S1", "S2", "S3", "S4", "SX"] {
                keys.extend([latest_key(tag, sym), latest_plan_id_key(tag, sym)]);
            }
            expected.push(keys);
        }
        cluster.wait_replicas_synced();
        for m in 0..cluster.nodes.len() {
            let master = cluster.master_of(m);
            let mut want: Vec<String> = streams
                .iter()
                .enumerate()
                .filter(|(_, s)| cluster.owner(s) == master)
                .flat_map(|(i, _)| expected[i].clone())
                .collect();
            want.sort();
            assert_eq!(
                cluster.nodes[m].keys(),
                want,
                "keys of node {}",
                cluster.nodes[m].port
            );
        }
        cluster.assert_keys_in_owned_slots();

        // Values, read by key through RedisCluster.
        for (i, s) in streams.iter().enumerate() {
            let tag = &tags[i];
            let mine: Vec<&Ack> = acks.iter().filter(|a| a.stream == i).collect();
            let mut cmds: Vec<Vec<String>> = Vec::new();
            for a in &mine {
                cmds.push(vec!["HGETALL".into(), by_plan_key(tag, &a.plan_id)]);
                cmds.push(vec!["GET".into(), dedupe_key(tag, &a.plan_id)]);
            }
            let r = cluster.rc(&cmds);
            for (a, r) in mine.iter().zip(r.chunks(2)) {
                let h = json_hash(r[0].as_ref().expect("HGETALL")).expect("by_plan");
                assert_eq!(h.get("plan_id"), Some(&a.plan_id), "{s}");
                assert_eq!(h.get("symbol"), Some(&symbol_of(&a.plan_id)), "{s}");
                assert_eq!(h.len(), 13, "the seed's fields: {h:?}");
                assert_eq!(r[1].as_ref().expect("GET dedupe"), &serde_json::json!(a.id));
            }
            assert_stream_projected(&cluster, tag, &[]);
            // n = 25..29 are each symbol's last: S3's is 28.
            let last = format!("p-{i}-28");
            let r = cluster.rc(&[vec!["HGETALL".into(), latest_key(tag, "S3")]]);
            let latest = json_hash(r[0].as_ref().expect("HGETALL latest")).expect("latest");
            assert_eq!(latest.get("plan_id"), Some(&last));
            assert_eq!(latest.get("last_plan_id"), Some(&last));
        }

        // Metrics and health per stream, on every node.
        assert_owned_metrics(&cluster);
        for (i, n) in cluster.nodes.iter().enumerate() {
            let h = health(&mut n.conn());
            for s in &streams {
                let e = health_stream(&h, s);
                assert!(
                    e.get("state").is_some() && e.get("backlog").is_some(),
                    "{e}"
                );
                if cluster.owner(s) == i {
                    assert_eq!(e["backlog"], 0, "{e}");
                }
            }
            if cluster.master_of(i) == i {
                assert_eq!(h["status"], "ok", "node {}: {h}", n.port);
            }
        }
    });
}

#[test]
fn commands_route_by_stream_and_replicas_serve_them() {
    for_each_flavor(|flavor| {
        let tags = tags_on_three_masters();
        let (cluster, _) = projected_cluster(flavor);
        let streams = cluster.streams.clone();

        // Key specs: the stream is the command's key.
        let mut any = cluster.nodes[0].conn();
        for cmd in ["HEATBRIDGE.GET", "HEATBRIDGE.LATEST"] {
            let keys: Result<Vec<String>, _> = redis::cmd("COMMAND")
                .arg("GETKEYS")
                .arg(cmd)
                .arg("x")
                .arg("STREAM")
                .arg(&streams[0])
                .query(&mut any);
            assert_eq!(
                keys.map_err(|e| e.to_string()),
                Ok(vec![streams[0].clone()]),
                "COMMAND GETKEYS {cmd} x STREAM {}",
                streams[0]
            );
        }

        // Through RedisCluster: routed to the owner, equal to the keys they read.
        for (i, s) in streams.iter().enumerate() {
            let tag = &tags[i];
            let plan = format!("p-{i}-7");
            let r = cluster.rc(&[
                get_cmd(&plan, s),
                vec!["HGETALL".into(), by_plan_key(tag, &plan)],
                latest_cmd("S3", s),
                vec!["HGETALL".into(), latest_key(tag, "S3")],
                get_cmd("shared", s),
                get_cmd("nope", s),
                latest_cmd("nope", s),
            ]);
            let r: Vec<serde_json::Value> = r
                .into_iter()
                .map(|x| x.unwrap_or_else(|e| panic!("through RedisCluster on {s}: {e}")))
                .collect();
            let got = json_hash(&r[0]).expect("HEATBRIDGE.GET");
            assert_eq!(got.get("plan_id"), Some(&plan));
            assert_eq!(Some(got), json_hash(&r[1]));
            let latest = json_hash(&r[2]).expect("HEATBRIDGE.LATEST");
            assert_eq!(latest.get("plan_id"), Some(&format!("p-{i}-28")));
            assert_eq!(Some(latest), json_hash(&r[3]));
            let shared = json_hash(&r[4]).expect("shared");
            assert_eq!(shared.get("symbol").map(String::as_str), Some("SX"));
            assert_eq!(r[5], serde_json::Value::Null);
            assert_eq!(r[6], serde_json::Value::Null);
        }

        for (i, s) in streams.iter().enumerate() {
            let owner = cluster.owner(s);
            let plan = format!("p-{i}-7");
            // Another master redirects to the owner.
            let other = (0..cluster.nodes.len())
                .find(|&j| j != owner && cluster.master_of(j) == j)
                .expect("another master");
            for cmd in ["HEATBRIDGE.GET", "HEATBRIDGE.LATEST"] {
                let e = refusal(&mut cluster.nodes[other].conn(), &[cmd, &plan, "STREAM", s]);
                let want = format!("{} 127.0.0.1:{}", key_slot(s), cluster.nodes[owner].port);
                assert_eq!(
                    (e.code(), e.detail()),
                    (Some("MOVED"), Some(want.as_str())),
                    "{cmd} on a master that does not own {s}: {e}"
                );
            }
            // In a cluster the stream must be named.
            let mut o = cluster.nodes[owner].conn();
            for args in [
                vec!["HEATBRIDGE.GET", plan.as_str()],
                vec!["HEATBRIDGE.LATEST", "S0"],
                vec!["HEATBRIDGE.REPLAY"],
            ] {
                let e = refusal(&mut o, &args);
                assert!(
                    e.to_string()
                        .contains("HEATBRIDGE: name the stream with STREAM <stream> in a cluster"),
                    "{args:?}: {e}"
                );
            }
            // Replicas (READONLY) serve the same replies.
            let mut r = cluster.nodes[cluster.a_replica_of(owner)].readonly_conn();
            cluster.wait_replicas_synced();
            for (cmd, arg) in [
                ("HEATBRIDGE.GET", plan.as_str()),
                ("HEATBRIDGE.LATEST", "S2"),
                ("HEATBRIDGE.GET", "shared"),
            ] {
                let on_master = hb_read(&mut o, cmd, arg, s);
                assert!(on_master.is_some(), "{cmd} {arg} on the owner");
                assert_eq!(
                    hb_read(&mut r, cmd, arg, s),
                    on_master,
                    "{cmd} {arg} on the replica"
                );
            }
        }

        // A stream that is not listed, routed to its owner by RedisCluster.
        let unlisted = tagged_stream("unlisted");
        let e = cluster
            .rc1(&["HEATBRIDGE.GET", "p-0-1", "STREAM", &unlisted])
            .expect_err("unlisted stream");
        assert!(
            e.contains(&format!(
                "HEATBRIDGE: {unlisted} is not in heatbridge.stream-in"
            )),
            "{e}"
        );
    });
}

/// The plans that must survive: acknowledged by a node that is still alive, or confirmed by
/// a replica (WAIT) before their node died. An XADD its dead master never passed to a
/// replica is lost by Redis's asynchronous replication, not by HeatBridge.
fn required_plans(acks: &[Ack], stream: usize, dead_port: Option<u16>) -> Vec<String> {
    acks.iter()
        .filter(|a| a.stream == stream && (Some(a.port) != dead_port || a.confirmed >= 1))
        .map(|a| a.plan_id.clone())
        .collect()
}

#[test]
fn failover_loses_no_acknowledged_decision() {
    for_each_flavor(|flavor| {
        let tags = tags_on_three_masters();
        let streams = streams();
        let mut cluster = ClusterOptions::new(flavor, &streams).start();
        let victim = cluster.owner(&streams[0]);
        let heir = cluster.a_replica_of(victim);
        let dead_port = cluster.nodes[victim].port;

        let heir_port = cluster.nodes[heir].port;
        let mut producer = cluster.producer(0, "f", &streams);
        let count = |a: &[Ack], s: usize| a.iter().filter(|a| a.stream == s).count();
        assert!(
            producer.until(|a| count(a, 0) >= 100),
            "producer ended early"
        );
        cluster.nodes[victim].kill();
        // Until the promoted replica has taken 100 decisions of its own.
        let promoted = |a: &[Ack]| {
            a.iter()
                .filter(|a| a.stream == 0 && a.port == heir_port)
                .count()
        };
        assert!(
            producer.until(|a| promoted(a) >= 100),
            "producer ended early"
        );
        // Whether the client retried (and how often) is redis-py's business, not
        // HeatBridge's: what the test asserts is that decisions were acknowledged by the
        // old master and by the promoted replica, and that every one of them is projected.
        let (acks, retries) = producer.finish();
        let before = acks.iter().filter(|a| a.port == dead_port).count();
        let confirmed = acks
            .iter()
            .filter(|a| a.port == dead_port && a.confirmed >= 1)
            .count();
        assert!(
            confirmed * 10 >= before * 9 && before >= 100,
            "{confirmed} of {before} acknowledged XADDs on the old master reached its replica"
        );

        eprintln!(
            "{} acks, {retries} failed attempts, {before} on the old master ({confirmed} confirmed)",
            acks.len()
        );
        cluster.wait_ok();
        assert_eq!(cluster.owner(&streams[0]), heir, "the replica took over");
        for (i, tag) in tags.iter().enumerate() {
            let required = required_plans(&acks, i, Some(dead_port));
            let checked = assert_stream_projected(&cluster, tag, &required);
            assert!(checked >= required.len());
        }
        assert_owned_metrics(&cluster);
        cluster.assert_keys_in_owned_slots();
        let h = health(&mut cluster.nodes[heir].conn());
        assert_eq!(health_stream(&h, &streams[0])["backlog"], 0, "{h}");
    });
}

#[test]
fn reshard_moves_projection_with_the_slot() {
    for_each_flavor(|flavor| {
        let tags = tags_on_three_masters();
        let streams = streams();
        let cluster = ClusterOptions::new(flavor, &streams).start();
        let moving = &streams[1];
        let slot = key_slot(moving);
        let from = cluster.owner(moving);
        let to = cluster.owner(&streams[2]);

        let to_port = cluster.nodes[to].port;
        let mut producer = cluster.producer(0, "r", &streams);
        let count = |a: &[Ack], s: usize| a.iter().filter(|a| a.stream == s).count();
        assert!(
            producer.until(|a| count(a, 1) >= 150),
            "producer ended early"
        );
        // Small batches, the stream last, and decisions acknowledged between batches: the
        // producer writes to the stream while it sits on the old owner with the slot
        // MIGRATING, and after it moved, through ASK, while the new owner is only IMPORTING.
        let mut during = 0;
        let moved = cluster.move_slot_with(slot, from, to, 50, Some(moving), || {
            let n = count(&producer.acks, 1) + 5;
            assert!(producer.until(|a| count(a, 1) >= n), "producer ended early");
            during += 5;
        });
        // Until the new owner has taken 50 decisions after the move.
        let moved_on = |a: &[Ack]| {
            a.iter()
                .filter(|a| a.stream == 1 && a.port == to_port)
                .count()
        };
        assert!(
            producer.until(|a| moved_on(a) >= 50),
            "producer ended early"
        );
        let (acks, _) = producer.finish();
        eprintln!(
            "{moved} keys moved, {during} decisions acknowledged meanwhile; {} acks in all",
            acks.len()
        );
        assert!(moved > 2 * 150, "the stream and its keys moved: {moved}");

        assert_eq!(cluster.owner(moving), to);
        for (i, tag) in tags.iter().enumerate() {
            assert_stream_projected(&cluster, tag, &required_plans(&acks, i, None));
        }
        cluster.wait_replicas_synced();
        for n in [from, cluster.a_replica_of(from)] {
            let left: i64 = redis::cmd("CLUSTER")
                .arg("COUNTKEYSINSLOT")
                .arg(slot)
                .query(&mut cluster.nodes[n].conn())
                .expect("COUNTKEYSINSLOT");
            assert_eq!(
                left, 0,
                "keys left in slot {slot} on {}",
                cluster.nodes[n].port
            );
        }
        cluster.assert_keys_in_owned_slots();
        cluster.assert_redis_cli_check();
        assert_owned_metrics(&cluster);
    });
}

#[test]
fn untagged_stream_is_refused_and_never_projected() {
    for_each_flavor(|flavor| {
        let untagged = STREAM.to_string();
        // Loaded by module argument: the nodes still start, hold no key and form a cluster.
        let cluster = ClusterOptions::new(flavor, std::slice::from_ref(&untagged)).start();
        for n in cluster.live() {
            let h = health(&mut n.conn());
            assert_eq!(h["status"], "error", "node {}: {h}", n.port);
            assert_eq!(health_stream(&h, &untagged)["state"], "error", "{h}");
            // The reason, beside the list of streams, names the stream and the rule.
            let mut rest = h.clone();
            rest.as_object_mut()
                .expect("health object")
                .remove("streams");
            let rest = rest.to_string();
            assert!(
                rest.contains(&untagged) && rest.contains("hash tag"),
                "node {}: {h}",
                n.port
            );
        }
        let xadds: Vec<Vec<String>> = (0..20)
            .map(|i| xadd_cmd(&untagged, &format!("S{}", i % 4), &format!("u{i}")))
            .collect();
        for r in cluster.rc(&xadds) {
            r.expect("XADD");
        }
        // Nothing to wait for when nothing happens: give projection (next event-loop turn on
        // Redis 7.0, housekeeping ticks elsewhere) time to do something wrong.
        std::thread::sleep(std::time::Duration::from_millis(1500));
        cluster.wait_replicas_synced();
        let owner = cluster.owner(&untagged);
        for (i, n) in cluster.nodes.iter().enumerate() {
            let want: Vec<String> = if cluster.master_of(i) == owner {
                vec![untagged.clone()]
            } else {
                Vec::new()
            };
            assert_eq!(n.keys(), want, "keys of node {}", n.port);
        }
        assert_eq!(
            group_field(&mut cluster.nodes[owner].conn(), &untagged, GROUP, "name"),
            None,
            "no group on an unprojected stream"
        );

        // A tagged name is accepted, and projected by its owner.
        let tagged = tagged_stream("heat");
        for n in cluster.live() {
            config_set(&mut n.conn(), "heatbridge.stream-in", &tagged).expect("tagged");
        }
        for r in cluster.rc(&[xadd_cmd(&tagged, "S0", "t1")]) {
            r.expect("XADD");
        }
        assert_stream_projected(&cluster, "heat", &["t1".to_string()]);
        let h = health(&mut cluster.nodes[cluster.owner(&tagged)].conn());
        assert_eq!(h["status"], "ok", "{h}");
        // CONFIG SET refuses untagged names, alone or in a list, on masters and replicas
        // (set over a tagged value, so that no server can skip it as unchanged).
        let rule = "has no hash tag; in a cluster every stream needs one, e.g. quantum:stream:{heat}:harvest.heat.decision";
        for n in cluster.live() {
            let mut c = n.conn();
            let e = config_set(&mut c, "heatbridge.stream-in", &untagged).expect_err("untagged");
            assert!(
                e.contains(&format!("heatbridge.stream-in: {untagged} {rule}")),
                "{e}"
            );
            let list = format!("{}, quantum:stream:plain", tagged_stream("x"));
            let e = config_set(&mut c, "heatbridge.stream-in", &list).expect_err("a list");
            assert!(
                e.contains(&format!(
                    "heatbridge.stream-in: quantum:stream:plain {rule}"
                )),
                "{e}"
            );
            assert_eq!(config_get(&mut c, "heatbridge.stream-in"), tagged);
            assert!(
                config_set(&mut c, "heatbridge.db", "1").is_err(),
                "heatbridge.db must stay 0 in a cluster"
            );
        }

        cluster.assert_keys_in_owned_slots();
    });
}
