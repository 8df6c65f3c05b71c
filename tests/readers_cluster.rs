//! scripts/watch_latest.py in its `--cluster` form on real clusters (three masters, three
//! replicas, the module on all six) of Redis 7.0, Redis 8.2 and Valkey 8.1: it finds the
//! master owning `latest:{T}:<symbol>` through whichever node it is given, prints each new
//! decision of the symbol once, and follows the slot to the promoted replica after a
//! failover (docs/readers.md, Cluster). Waits are bounded; timing is never asserted.

mod common;
use common::cluster::*;
use common::*;

use serde_json::Value;
use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// The symbol watched, and another one on the same stream that must never be printed.
const SYMBOL: &str = "W";
const OTHER: &str = "OTHER";

/// How long the watcher may take to print a decision or to resubscribe.
const WAIT: Duration = Duration::from_secs(20);

enum Line {
    Out(String),
    Err(String),
}

/// A running `watch_latest.py`, killed on drop (also when the test panics).
struct Watcher {
    child: Child,
    rx: Receiver<Line>,
    /// Stdout lines read while waiting for a stderr line, not yet taken.
    pending: VecDeque<String>,
    /// Every stderr line so far, for failure messages.
    log: Vec<String>,
}

impl Watcher {
    fn start(args: &[String]) -> Watcher {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/watch_latest.py");
        let mut child = Command::new("python3")
            .arg(&script)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3 runs scripts/watch_latest.py");
        let (tx, rx) = mpsc::channel();
        let out = child.stdout.take().expect("stdout");
        let tx_out = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx_out.send(Line::Out(line));
            }
        });
        let err = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx.send(Line::Err(line));
            }
        });
        Watcher {
            child,
            rx,
            pending: VecDeque::new(),
            log: Vec::new(),
        }
    }

    /// The next line within the deadline; panics (with the watcher's stderr) on timeout or
    /// when the watcher ended.
    fn recv(&mut self, deadline: Instant, what: &str) -> Line {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.rx.recv_timeout(left) {
            Ok(l) => l,
            Err(e) => {
                let status = match e {
                    RecvTimeoutError::Timeout => "still running".to_string(),
                    RecvTimeoutError::Disconnected => format!("{:?}", self.child.wait()),
                };
                panic!(
                    "watch_latest.py ({status}) gave nothing for {what}; its stderr:\n{}",
                    self.log.join("\n")
                )
            }
        }
    }

    /// The next decision printed: (plan_id, symbol).
    fn next_decision(&mut self, what: &str) -> (String, String) {
        let deadline = Instant::now() + WAIT;
        let json = loop {
            if let Some(l) = self.pending.pop_front() {
                break l;
            }
            match self.recv(deadline, what) {
                Line::Out(l) => break l,
                Line::Err(l) => {
                    eprintln!("watch_latest: {l}");
                    self.log.push(l);
                }
            }
        };
        let v: Value =
            serde_json::from_str(&json).unwrap_or_else(|e| panic!("not a JSON line ({e}): {json}"));
        let s = |f: &str| v[f].as_str().unwrap_or_default().to_string();
        (s("plan_id"), s("symbol"))
    }

    /// Asserts that the next decision printed is `plan` of [`SYMBOL`].
    fn expect(&mut self, plan: &str) {
        let (got, symbol) = self.next_decision(plan);
        assert_eq!(
            (got.as_str(), symbol.as_str()),
            (plan, SYMBOL),
            "watch_latest.py printed another decision than {plan}; its stderr:\n{}",
            self.log.join("\n")
        );
    }

    /// Waits for a stderr line containing `needle` (keeping stdout lines for later).
    fn wait_stderr(&mut self, needle: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            match self.recv(deadline, &format!("a stderr line with {needle:?}")) {
                Line::Out(l) => self.pending.push_back(l),
                Line::Err(l) => {
                    eprintln!("watch_latest: {l}");
                    let found = l.contains(needle);
                    self.log.push(l);
                    if found {
                        return;
                    }
                }
            }
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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
        let mut w = Watcher::start(&watcher_args(tag, cluster.nodes[seed].port));
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
