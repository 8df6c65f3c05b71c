//! scripts/watch_latest.py in its `--cluster` form on real clusters (three masters, three
//! replicas, the module on all six) of Redis 7.0, Redis 8.2 and Valkey 8.1: it finds the
//! master owning `latest:{T}:<symbol>` through whichever node it is given, prints each new
//! decision of the symbol once, and follows the slot to the promoted replica after a
//! failover (docs/readers.md, Cluster). Waits are bounded; timing is never asserted.

mod common;
use common::cluster::*;
use common::watcher::Watcher;
use common::*;

/// The symbol watched, and another one on the same stream that must never be printed.
const SYMBOL: &str = "W";
const OTHER: &str = "OTHER";

/// Keyspace events for hashes on every node, replicas included: a promoted replica must
/// raise them too (docs/readers.md, Cluster).
fn notify_on_every_node(cluster: &Cluster) {
    for n in cluster.live() {
        config_set(&mut n.conn(), "notify-keyspace-events", "Kh")
            .unwrap_or_else(|e| panic!("CONFIG SET on {}: {e}", n.port));
    }
}

/// A cluster projecting one stream tagged `{tag}`, with hash keyspace events on every node
/// when `notify`; the index of the stream's owner.
fn cluster_with(flavor: Flavor, tag: &str, notify: bool) -> (Cluster, usize) {
    let stream = tagged_stream(tag);
    let cluster = ClusterOptions::new(flavor, std::slice::from_ref(&stream)).start();
    if notify {
        notify_on_every_node(&cluster);
    }
    let owner = cluster.owner(&stream);
    (cluster, owner)
}

/// A node that neither owns the tag's slot nor replicates its owner: the watcher must look
/// the owner up.
fn unrelated_node(cluster: &Cluster, owner: usize) -> usize {
    let replicas = cluster.replicas_of(owner);
    (0..cluster.nodes.len())
        .find(|&i| i != owner && !replicas.contains(&i) && cluster.master_of(i) != owner)
        .expect("a node of another shard")
}

/// XADDs a decision to the tagged stream on the node at `i` (its owner) and waits until
/// that node's latest of `symbol` holds it.
fn add(cluster: &Cluster, i: usize, tag: &str, symbol: &str, plan: &str) {
    let mut c = cluster.nodes[i].conn();
    xadd(
        &mut c,
        &tagged_stream(tag),
        "*",
        &decision(symbol, plan, &[]),
    );
    let key = latest_key(tag, symbol);
    wait_for(
        20,
        &format!("{plan} projected on {}", cluster.nodes[i].port),
        || hget(&mut c, &key, "plan_id").as_deref() == Some(plan),
    );
}

fn watcher_args(tag: &str, port: u16) -> Vec<String> {
    [
        "--cluster",
        "--tag",
        tag,
        "--symbol",
        SYMBOL,
        "--port",
        &port.to_string(),
    ]
    .map(str::to_string)
    .to_vec()
}

/// The stderr line the watcher writes once subscribed on the node with `port`.
fn watching_on(tag: &str, port: u16) -> String {
    format!("watching {} on 127.0.0.1:{port}", latest_key(tag, SYMBOL))
}

/// Given a node of another shard, the watcher subscribes on the owner, prints the symbol's
/// latest at start and then each new decision once, in order, and nothing of another
/// symbol on the same stream (same slot, same node).
#[test]
fn watch_latest_cluster_prints_each_new_decision_from_the_owner() {
    for_each_flavor(|flavor| {
        let tag = &tags_on_three_masters()[0];
        let (cluster, owner) = cluster_with(flavor, tag, true);
        let seed = unrelated_node(&cluster, owner);
        add(&cluster, owner, tag, SYMBOL, "w-0");
        let mut w = Watcher::start(&watcher_args(tag, cluster.nodes[seed].port));
        w.wait_stderr(&watching_on(tag, cluster.nodes[owner].port));
        w.expect("w-0");
        for i in 1..=4 {
            add(&cluster, owner, tag, OTHER, &format!("o-{i}"));
            add(&cluster, owner, tag, SYMBOL, &format!("w-{i}"));
            w.expect(&format!("w-{i}"));
        }
        // Nothing else came: the next line is the next decision.
        add(&cluster, owner, tag, OTHER, "o-5");
        add(&cluster, owner, tag, SYMBOL, "w-5");
        w.expect("w-5");
    });
}

/// The owner is killed and its replica promoted: the watcher's connection breaks, it finds
/// the new owner, resubscribes there, and prints the decisions the new master projects,
/// without printing again the one it printed before the failover. No node has keyspace
/// events configured: --enable-notifications sets them on each node it subscribes to, the
/// promoted replica included.
#[test]
fn watch_latest_cluster_follows_a_failover() {
    for_each_flavor(|flavor| {
        let tag = &tags_on_three_masters()[0];
        let (mut cluster, owner) = cluster_with(flavor, tag, false);
        let heir = cluster.a_replica_of(owner);
        let seed = unrelated_node(&cluster, owner);
        add(&cluster, owner, tag, SYMBOL, "w-0");
        let mut args = watcher_args(tag, cluster.nodes[seed].port);
        args.push("--enable-notifications".into());
        let mut w = Watcher::start(&args);
        w.wait_stderr(&watching_on(tag, cluster.nodes[owner].port));
        w.expect("w-0");
        add(&cluster, owner, tag, SYMBOL, "w-1");
        w.expect("w-1");
        // The replica holds w-1 before its master dies: nothing acknowledged is lost here.
        cluster.wait_replicas_synced();
        cluster.nodes[owner].kill();
        cluster.wait_ok();
        assert_eq!(
            cluster.owner(&tagged_stream(tag)),
            heir,
            "the replica took over"
        );
        w.wait_stderr(&watching_on(tag, cluster.nodes[heir].port));
        let flags = config_get(&mut cluster.nodes[heir].conn(), "notify-keyspace-events");
        assert!(
            flags.contains('K') && flags.contains('h'),
            "notify-keyspace-events on the promoted replica: {flags:?}"
        );
        for i in 2..=4 {
            add(&cluster, heir, tag, OTHER, &format!("o-{i}"));
            add(&cluster, heir, tag, SYMBOL, &format!("w-{i}"));
            w.expect(&format!("w-{i}"));
        }
    });
}

/// CLUSTER FAILOVER on the owner's replica: the old owner stays up as a replica, so the
/// watcher's connection does not break. The next event of the symbol still reaches it there
/// (replicated), its read gets MOVED, and it resubscribes on the new owner and prints the
/// decision from there.
#[test]
fn watch_latest_cluster_follows_a_manual_failover() {
    for_each_flavor(|flavor| {
        let tag = &tags_on_three_masters()[0];
        let (cluster, owner) = cluster_with(flavor, tag, true);
        let heir = cluster.a_replica_of(owner);
        let seed = unrelated_node(&cluster, owner);
        add(&cluster, owner, tag, SYMBOL, "w-0");
        // The owner is also rechecked every 3 s: should the demoted owner get w-2 by a full
        // resync (no event), the watcher still moves within the wait.
        let mut args = watcher_args(tag, cluster.nodes[seed].port);
        args.extend(["--recheck", "3"].map(str::to_string));
        let mut w = Watcher::start(&args);
        w.wait_stderr(&watching_on(tag, cluster.nodes[owner].port));
        w.expect("w-0");
        add(&cluster, owner, tag, SYMBOL, "w-1");
        w.expect("w-1");
        let _: () = redis::cmd("CLUSTER")
            .arg("FAILOVER")
            .query(&mut cluster.nodes[heir].conn())
            .expect("CLUSTER FAILOVER");
        wait_for(30, "the replica took over", || {
            cluster.owner(&tagged_stream(tag)) == heir
        });
        cluster.wait_ok();
        add(&cluster, heir, tag, OTHER, "o-2");
        add(&cluster, heir, tag, SYMBOL, "w-2");
        w.wait_stderr(&watching_on(tag, cluster.nodes[heir].port));
        w.expect("w-2");
        for i in 3..=4 {
            add(&cluster, heir, tag, OTHER, &format!("o-{i}"));
            add(&cluster, heir, tag, SYMBOL, &format!("w-{i}"));
            w.expect(&format!("w-{i}"));
        }
    });
}
