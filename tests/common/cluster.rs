//! Redis Cluster harness: three masters and three replicas on loopback, the module loaded on
//! all six, created with `redis-cli --cluster create` (Debian's redis-cli 7.0, which creates
//! Redis 8.2 and Valkey 8.1 clusters too) and killed on drop.
//!
//! Each node has its own temp dir and two free ports: its Redis port and an explicit
//! `cluster-port`, so the bus never depends on port+10000 being free. Clients that route by
//! slot are redis-py's `RedisCluster`, driven through `tests/clients/cluster_client.py`.
//! `REDIS_CLI` overrides the redis-cli binary.
//!
//! One cluster runs at a time in a test process: six servers per test on two cores are
//! enough, and failover timing stays predictable.

use super::*;

use std::collections::BTreeMap;
use std::io::BufRead;
use std::sync::MutexGuard;

/// Redis Cluster's slot count.
pub const SLOTS: u16 = 16384;

/// The slot ranges `redis-cli --cluster create` gives three masters.
pub const MASTER_RANGES: [(u16, u16); 3] = [(0, 5460), (5461, 10922), (10923, 16383)];

/// The group HeatBridge projects with (the `heatbridge.group` default).
pub const GROUP: &str = "heat_bridge";

static ONE_CLUSTER: Mutex<()> = Mutex::new(());

/// CRC16/XMODEM, the checksum Redis Cluster hashes keys with.
pub fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in data {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// Redis's `keyHashSlot`: the hash tag (between the first `{` and the first `}` after it,
/// when non-empty) or else the whole key, CRC16 mod 16384.
pub fn key_slot(key: &str) -> u16 {
    let b = key.as_bytes();
    let tagged = b.iter().position(|&c| c == b'{').and_then(|open| {
        let close = b[open + 1..].iter().position(|&c| c == b'}')?;
        (close > 0).then(|| &b[open + 1..open + 1 + close])
    });
    crc16(tagged.unwrap_or(b)) % SLOTS
}

/// A tagged input stream name: `quantum:stream:{tag}:harvest.heat.decision`.
pub fn tagged_stream(tag: &str) -> String {
    format!("quantum:stream:{{{tag}}}:harvest.heat.decision")
}

/// One short tag per range of [`MASTER_RANGES`], so that three streams land on three
/// different masters of a freshly created cluster.
pub fn tags_on_three_masters() -> [String; 3] {
    let candidates = (b'a'..=b'z').map(|c| (c as char).to_string());
    let mut tags: [Option<String>; 3] = [None, None, None];
    for t in candidates {
        let slot = key_slot(&tagged_stream(&t));
        if let Some(i) = MASTER_RANGES
            .iter()
            .position(|&(lo, hi)| (lo..=hi).contains(&slot))
        {
            tags[i].get_or_insert(t);
        }
    }
    tags.map(|t| t.expect("a one-letter tag in every range"))
}

/// The key HeatBridge derives from a stream tagged `{tag}` (CONTRACT §11).
pub fn by_plan_key(tag: &str, plan_id: &str) -> String {
    format!("quantum:harvest:heat:by_plan:{{{tag}}}:{plan_id}")
}

/// See [`by_plan_key`].
pub fn latest_key(tag: &str, symbol: &str) -> String {
    format!("quantum:harvest:heat:latest:{{{tag}}}:{symbol}")
}

/// See [`by_plan_key`].
pub fn latest_plan_id_key(tag: &str, symbol: &str) -> String {
    format!("quantum:harvest:heat:latest_plan_id:{{{tag}}}:{symbol}")
}

/// See [`by_plan_key`].
pub fn dedupe_key(tag: &str, plan_id: &str) -> String {
    format!("quantum:dedupe:p27:{{{tag}}}:{plan_id}")
}

/// A cluster node: a [`Server`] started as a cluster node, killed on drop.
pub struct Node {
    /// Which server.
    pub flavor: Flavor,
    /// Redis port.
    pub port: u16,
    /// Cluster bus port.
    pub bus_port: u16,
    server: Server,
}

impl Node {
    fn start(flavor: Flavor, module_args: &[String]) -> Node {
        let bus_port = free_port();
        let mut opts = Options::new(flavor)
            .without_exporter()
            .cluster_node(bus_port);
        if module_args.is_empty() {
            opts = opts.without_module();
        }
        opts.module_args = module_args.to_vec();
        let server = opts.start();
        Node {
            flavor,
            port: server.port,
            bus_port,
            server,
        }
    }

    /// A plain (non-routing) connection to this node.
    pub fn conn(&self) -> Connection {
        self.server.conn()
    }

    /// A connection that may read from this node when it is a replica (`READONLY`).
    pub fn readonly_conn(&self) -> Connection {
        let mut c = self.conn();
        let _: () = redis::cmd("READONLY").query(&mut c).expect("READONLY");
        c
    }

    /// The server log so far.
    pub fn log(&self) -> String {
        self.server.log()
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        self.server.alive()
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        self.server.kill()
    }

    /// `CLUSTER MYID`.
    pub fn id(&self) -> String {
        redis::cmd("CLUSTER")
            .arg("MYID")
            .query(&mut self.conn())
            .expect("CLUSTER MYID")
    }

    /// One `INFO` section as text.
    pub fn info(&self, section: &str) -> String {
        redis::cmd("INFO")
            .arg(section)
            .query(&mut self.conn())
            .expect("INFO")
    }

    /// A `field:value` of an `INFO` section.
    pub fn info_field(&self, section: &str, field: &str) -> Option<String> {
        let text = self.info(section);
        text.lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .map(|v| v.trim().to_string())
    }

    /// `DBSIZE`.
    pub fn dbsize(&self) -> i64 {
        redis::cmd("DBSIZE")
            .query(&mut self.conn())
            .expect("DBSIZE")
    }

    /// Every key of the node (`SCAN`).
    pub fn keys(&self) -> Vec<String> {
        let mut c = self.readonly_conn();
        let mut keys = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("COUNT")
                .arg(1000)
                .query(&mut c)
                .expect("SCAN");
            keys.extend(batch);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        keys.sort();
        keys.dedup();
        keys
    }
}

/// A line of `CLUSTER NODES`.
#[derive(Clone, Debug)]
pub struct NodeInfo {
    /// Node ID.
    pub id: String,
    /// Redis port.
    pub port: u16,
    /// Flags (`myself`, `master`, `slave`, `fail`, ...).
    pub flags: Vec<String>,
    /// The master's ID, for a replica.
    pub master: Option<String>,
    /// Owned slot ranges (inclusive), for a master.
    pub slots: Vec<(u16, u16)>,
}

impl NodeInfo {
    /// A master that has not failed.
    pub fn is_live_master(&self) -> bool {
        self.flags.iter().any(|f| f == "master")
            && !self.flags.iter().any(|f| f.starts_with("fail"))
    }

    /// Whether it owns `slot`.
    pub fn owns(&self, slot: u16) -> bool {
        self.slots.iter().any(|&(lo, hi)| (lo..=hi).contains(&slot))
    }
}

/// Parses `CLUSTER NODES` (slot ranges only; `[slot->-id]` migration marks are skipped).
pub fn parse_cluster_nodes(text: &str) -> Vec<NodeInfo> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 8 {
                return None;
            }
            let addr = f[1].split('@').next()?;
            let port = addr.rsplit(':').next()?.parse().ok()?;
            let slots = f[8..]
                .iter()
                .filter(|s| !s.starts_with('['))
                .filter_map(|s| match s.split_once('-') {
                    Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                    None => s.parse().ok().map(|x| (x, x)),
                })
                .collect();
            Some(NodeInfo {
                id: f[0].to_string(),
                port,
                flags: f[2].split(',').map(str::to_string).collect(),
                master: (f[3] != "-").then(|| f[3].to_string()),
                slots,
            })
        })
        .collect()
}

/// How to start a cluster.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// Which server.
    pub flavor: Flavor,
    /// `heatbridge.stream-in`.
    pub streams: Vec<String>,
    /// Further module `NAME VALUE` arguments.
    pub module_args: Vec<String>,
    /// Load the module on every node.
    pub module: bool,
}

impl ClusterOptions {
    /// The module on every node, reading the given streams.
    pub fn new(flavor: Flavor, streams: &[String]) -> ClusterOptions {
        ClusterOptions {
            flavor,
            streams: streams.to_vec(),
            module_args: Vec::new(),
            module: true,
        }
    }

    /// Adds a module argument pair.
    pub fn module_arg(mut self, name: &str, value: &str) -> ClusterOptions {
        self.module_args
            .extend([name.to_string(), value.to_string()]);
        self
    }

    /// No module (to check the harness itself).
    pub fn without_module(mut self) -> ClusterOptions {
        self.module = false;
        self
    }

    /// Starts six nodes and creates the cluster.
    pub fn start(self) -> Cluster {
        Cluster::start(self)
    }
}

/// A running three-master, three-replica cluster; every node killed on drop.
pub struct Cluster {
    /// Which server.
    pub flavor: Flavor,
    /// The nodes, in the order given to `redis-cli --cluster create` (the first three become
    /// masters there).
    pub nodes: Vec<Node>,
    /// `heatbridge.stream-in`, one name per entry.
    pub streams: Vec<String>,
    _one: MutexGuard<'static, ()>,
}

impl Cluster {
    fn start(opts: ClusterOptions) -> Cluster {
        let one = ONE_CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
        // The exporter's ports (off) and HEATBRIDGE_FAST_PATH come from the Server harness.
        let module_args: Vec<String> = if opts.module {
            let mut a = vec!["stream-in".to_string(), opts.streams.join(",")];
            a.extend(opts.module_args.iter().cloned());
            a
        } else {
            Vec::new()
        };
        let nodes = (0..6)
            .map(|_| Node::start(opts.flavor, &module_args))
            .collect();
        let cluster = Cluster {
            flavor: opts.flavor,
            nodes,
            streams: opts.streams,
            _one: one,
        };
        for n in &cluster.nodes {
            assert_eq!(n.dbsize(), 0, "node {} holds keys before create", n.port);
        }
        let mut create = Command::new(redis_cli());
        create.arg("--cluster").arg("create");
        for n in &cluster.nodes {
            create.arg(format!("127.0.0.1:{}", n.port));
        }
        let out = create
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli must be installed");
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "redis-cli --cluster create:\n{text}");
        cluster.wait_ok();
        cluster
    }

    /// Waits until every live node says `cluster_state:ok` with all slots served and sees
    /// the others, and every live replica's link to its master is up.
    pub fn wait_ok(&self) {
        wait_for(60, "cluster_state:ok on every live node", || {
            self.live().all(|n| {
                let Ok(mut c) = n.server.try_conn() else {
                    return false;
                };
                let info: String = match redis::cmd("CLUSTER").arg("INFO").query(&mut c) {
                    Ok(i) => i,
                    Err(_) => return false,
                };
                let nodes: String = match redis::cmd("CLUSTER").arg("NODES").query(&mut c) {
                    Ok(i) => i,
                    Err(_) => return false,
                };
                let me = parse_cluster_nodes(&nodes)
                    .into_iter()
                    .find(|i| i.flags.iter().any(|f| f == "myself"));
                let repl: String = redis::cmd("INFO")
                    .arg("replication")
                    .query(&mut c)
                    .unwrap_or_default();
                let link_ok = match me {
                    Some(me) if me.master.is_some() => repl.contains("master_link_status:up"),
                    Some(_) => true,
                    None => false,
                };
                info.contains("cluster_state:ok")
                    && info.contains("cluster_slots_ok:16384")
                    && link_ok
            })
        });
    }

    /// The nodes whose process runs (not killed).
    pub fn live(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(|n| n.server.started())
    }

    /// `CLUSTER NODES` as a live node sees it.
    pub fn topology(&self) -> Vec<NodeInfo> {
        let n = self.live().next().expect("a live node");
        let text: String = redis::cmd("CLUSTER")
            .arg("NODES")
            .query(&mut n.conn())
            .expect("CLUSTER NODES");
        parse_cluster_nodes(&text)
    }

    /// The node with this port.
    pub fn node(&self, port: u16) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.port == port)
            .expect("node of port")
    }

    /// Index in [`Cluster::nodes`] of the node with this port.
    pub fn index(&self, port: u16) -> usize {
        self.nodes
            .iter()
            .position(|n| n.port == port)
            .expect("node of port")
    }

    /// Index of the master the node at `i` serves: itself, or the master it replicates.
    pub fn master_of(&self, i: usize) -> usize {
        let topo = self.topology();
        let me = topo
            .iter()
            .find(|t| t.port == self.nodes[i].port)
            .expect("node in CLUSTER NODES");
        match &me.master {
            Some(id) => self.index(topo.iter().find(|t| &t.id == id).expect("its master").port),
            None => i,
        }
    }

    /// Index of the live master that owns `slot`.
    pub fn owner_of_slot(&self, slot: u16) -> usize {
        let topo = self.topology();
        let owner = topo
            .iter()
            .find(|i| i.is_live_master() && i.owns(slot))
            .unwrap_or_else(|| panic!("no live master owns slot {slot}: {topo:?}"));
        self.index(owner.port)
    }

    /// Index of the master that projects `stream`.
    pub fn owner(&self, stream: &str) -> usize {
        self.owner_of_slot(key_slot(stream))
    }

    /// Indices of the live replicas of the node at `master`.
    pub fn replicas_of(&self, master: usize) -> Vec<usize> {
        let id = self.nodes[master].id();
        self.topology()
            .iter()
            .filter(|i| i.master.as_deref() == Some(&id) && !i.flags.iter().any(|f| f == "fail"))
            .map(|i| self.index(i.port))
            .filter(|&i| self.nodes[i].server.started())
            .collect()
    }

    /// A replica of `master`, waiting for the cluster to show one (a node busy with other
    /// work may show it a moment late).
    pub fn a_replica_of(&self, master: usize) -> usize {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(&r) = self.replicas_of(master).first() {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "master {master} shows no replica"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Port of a live node, for clients to discover the cluster from.
    pub fn seed_port(&self) -> u16 {
        self.live().next().expect("a live node").port
    }

    /// Runs `commands` through redis-py's `RedisCluster` (routed by key); each reply as JSON,
    /// or the error's text.
    pub fn rc(&self, commands: &[Vec<String>]) -> Vec<Result<serde_json::Value, String>> {
        let mut child = Command::new("python3")
            .arg(client_script())
            .arg("exec")
            .arg(self.seed_port().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3");
        let input = serde_json::to_vec(commands).expect("JSON");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(&input)
            .expect("write commands");
        let out = child.wait_with_output().expect("cluster_client.py exec");
        assert!(
            out.status.success(),
            "cluster_client.py exec failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let replies: Vec<serde_json::Value> =
            serde_json::from_slice(&out.stdout).expect("cluster_client.py output");
        replies
            .into_iter()
            .map(|r| match r.get("ok") {
                Some(v) => Ok(v.clone()),
                None => Err(r["err"].as_str().unwrap_or_default().to_string()),
            })
            .collect()
    }

    /// One command through `RedisCluster`.
    pub fn rc1(&self, command: &[&str]) -> Result<serde_json::Value, String> {
        let cmd: Vec<String> = command.iter().map(|s| s.to_string()).collect();
        self.rc(&[cmd]).remove(0)
    }

    /// Starts `cluster_client.py produce`: `count` acknowledged decisions per stream, or
    /// with 0, decisions until [`Producer::finish`].
    pub fn producer(&self, count: usize, prefix: &str, streams: &[String]) -> Producer {
        let mut child = Command::new("python3")
            .arg(client_script())
            .arg("produce")
            .arg(self.seed_port().to_string())
            .arg(count.to_string())
            .arg(prefix)
            .args(streams)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3");
        let lines = std::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
        Producer {
            stdin: child.stdin.take(),
            child,
            lines: Box::new(lines.map_while(Result::ok)),
            acks: Vec::new(),
            retries: 0,
        }
    }

    /// Panics naming every key that sits in a slot its node does not serve: a master must
    /// own the key's slot, a replica's master must.
    pub fn assert_keys_in_owned_slots(&self) {
        let topo = self.topology();
        for n in self.live() {
            let me = topo
                .iter()
                .find(|i| i.port == n.port)
                .expect("node in CLUSTER NODES");
            let owner = match &me.master {
                Some(m) => topo.iter().find(|i| &i.id == m).expect("its master"),
                None => me,
            };
            let stray: Vec<(String, u16)> = n
                .keys()
                .into_iter()
                .map(|k| {
                    let s = key_slot(&k);
                    (k, s)
                })
                .filter(|(_, s)| !owner.owns(*s))
                .collect();
            assert!(
                stray.is_empty(),
                "node {} holds keys in slots it does not serve: {:?}",
                n.port,
                &stray[..stray.len().min(20)]
            );
            // The server's own slot count must agree with ours.
            let mut c = n.readonly_conn();
            for k in n.keys().iter().take(50) {
                let s: u16 = redis::cmd("CLUSTER")
                    .arg("KEYSLOT")
                    .arg(k)
                    .query(&mut c)
                    .expect("CLUSTER KEYSLOT");
                assert_eq!(s, key_slot(k), "CRC16 of {k}");
            }
        }
    }

    /// `redis-cli --cluster check` from a live node: its output, asserting it found no error
    /// or warning.
    pub fn assert_redis_cli_check(&self) -> String {
        let out = Command::new(redis_cli())
            .arg("--cluster")
            .arg("check")
            .arg(format!("127.0.0.1:{}", self.seed_port()))
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli");
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && !text.contains("[ERR]") && !text.contains("[WARNING]"),
            "redis-cli --cluster check:\n{text}"
        );
        text
    }

    /// Moves `slot` from the node at `from` to the node at `to` the way `redis-cli --cluster
    /// reshard` does, one slot: IMPORTING on the target, MIGRATING on the source, MIGRATE
    /// until the source has no key left in it, then SETSLOT NODE on the target, the source
    /// and every other master. Returns how many keys moved.
    pub fn move_slot(&self, slot: u16, from: usize, to: usize) -> usize {
        self.move_slot_with(slot, from, to, 500, None, || {})
    }

    /// [`Cluster::move_slot`], `batch` keys per MIGRATE, `last` (when given) only once no
    /// other key is left, and `between` called after each MIGRATE (while the slot is half
    /// moved).
    pub fn move_slot_with(
        &self,
        slot: u16,
        from: usize,
        to: usize,
        batch: usize,
        last: Option<&str>,
        mut between: impl FnMut(),
    ) -> usize {
        let (src, dst) = (&self.nodes[from], &self.nodes[to]);
        let (src_id, dst_id) = (src.id(), dst.id());
        let mut s = src.conn();
        let mut d = dst.conn();
        let _: () = redis::cmd("CLUSTER")
            .arg("SETSLOT")
            .arg(slot)
            .arg("IMPORTING")
            .arg(&src_id)
            .query(&mut d)
            .expect("SETSLOT IMPORTING");
        let _: () = redis::cmd("CLUSTER")
            .arg("SETSLOT")
            .arg(slot)
            .arg("MIGRATING")
            .arg(&dst_id)
            .query(&mut s)
            .expect("SETSLOT MIGRATING");
        let mut moved = 0;
        loop {
            let keys: Vec<String> = redis::cmd("CLUSTER")
                .arg("GETKEYSINSLOT")
                .arg(slot)
                .arg(batch + 1)
                .query(&mut s)
                .expect("GETKEYSINSLOT");
            if keys.is_empty() {
                break;
            }
            let others: Vec<String> = keys
                .iter()
                .filter(|k| Some(k.as_str()) != last)
                .take(batch)
                .cloned()
                .collect();
            let keys = if others.is_empty() { keys } else { others };
            moved += keys.len();
            let _: redis::Value = redis::cmd("MIGRATE")
                .arg("127.0.0.1")
                .arg(dst.port)
                .arg("")
                .arg(0)
                .arg(10000)
                .arg("KEYS")
                .arg(&keys)
                .query(&mut s)
                .expect("MIGRATE");
            between();
        }
        let set_node = |c: &mut Connection| {
            let _: () = redis::cmd("CLUSTER")
                .arg("SETSLOT")
                .arg(slot)
                .arg("NODE")
                .arg(&dst_id)
                .query(c)
                .expect("SETSLOT NODE");
        };
        set_node(&mut d);
        set_node(&mut s);
        for i in self.topology().iter().filter(|i| i.is_live_master()) {
            if i.port != src.port && i.port != dst.port {
                set_node(&mut self.node(i.port).conn());
            }
        }
        wait_for(30, "every node agrees on the slot's new owner", || {
            self.live().all(|n| {
                let text: String = redis::cmd("CLUSTER")
                    .arg("NODES")
                    .query(&mut n.conn())
                    .unwrap_or_default();
                parse_cluster_nodes(&text)
                    .iter()
                    .any(|i| i.port == dst.port && i.owns(slot))
            })
        });
        moved
    }

    /// Waits until `stream`'s group on the node at `i` has nothing unread or pending.
    pub fn wait_drained(&self, i: usize, stream: &str) {
        let mut c = self.nodes[i].conn();
        wait_for(
            30,
            &format!("{stream} drained on {}", self.nodes[i].port),
            || {
                let lag = group_field(&mut c, stream, GROUP, "lag");
                let pending = group_field(&mut c, stream, GROUP, "pending");
                lag.as_deref() == Some("0") && pending.as_deref() == Some("0")
            },
        );
    }

    /// Waits until every replica has applied its master's whole replication stream.
    pub fn wait_replicas_synced(&self) {
        wait_for(30, "replicas caught up", || {
            self.topology()
                .iter()
                .filter(|i| i.is_live_master())
                .all(|m| {
                    let master = self.node(m.port);
                    let off = master.info_field("replication", "master_repl_offset");
                    self.replicas_of(self.index(m.port)).iter().all(|&r| {
                        self.nodes[r].info_field("replication", "slave_repl_offset") == off
                    })
                })
        });
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            n.kill();
        }
        if std::thread::panicking() {
            for n in &self.nodes {
                let log = n.log();
                let tail: Vec<&str> = log.lines().rev().take(60).collect();
                eprintln!("--- node {} log, last lines ({:?}):", n.port, self.flavor);
                for l in tail.iter().rev() {
                    eprintln!("{l}");
                }
            }
        }
    }
}

/// `redis-cli` (7.0 or later), or `REDIS_CLI`.
pub fn redis_cli() -> PathBuf {
    std::env::var("REDIS_CLI").map_or_else(|_| PathBuf::from("redis-cli"), PathBuf::from)
}

/// `tests/clients/cluster_client.py`.
pub fn client_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/cluster_client.py")
}

/// An acknowledged XADD from [`Producer`].
#[derive(Clone, Debug)]
pub struct Ack {
    /// Index into the producer's streams.
    pub stream: usize,
    /// The decision's plan_id.
    pub plan_id: String,
    /// Entry ID.
    pub id: String,
    /// Port of the node that took it (as the client's slot map said after the reply).
    pub port: u16,
    /// Replicas that confirmed it with WAIT (-1: not asked, the node had no replica).
    pub confirmed: i64,
}

/// A running `cluster_client.py produce`.
pub struct Producer {
    child: Child,
    stdin: Option<std::process::ChildStdin>,
    lines: Box<dyn Iterator<Item = String> + Send>,
    /// Acknowledged XADDs so far.
    pub acks: Vec<Ack>,
    /// Failed XADD attempts so far (each retried).
    pub retries: usize,
}

impl Producer {
    /// Reads output until `f` holds for the acks so far; false when the producer ended first.
    pub fn until(&mut self, mut f: impl FnMut(&[Ack]) -> bool) -> bool {
        while !f(&self.acks) {
            let Some(line) = self.lines.next() else {
                return false;
            };
            let w: Vec<&str> = line.split_whitespace().collect();
            match w.as_slice() {
                ["ack", s, plan, id, port, conf] => self.acks.push(Ack {
                    stream: s.parse().expect("stream index"),
                    plan_id: plan.to_string(),
                    id: id.to_string(),
                    port: port.parse().expect("port"),
                    confirmed: conf.parse().expect("confirmed"),
                }),
                ["retry", ..] => self.retries += 1,
                _ => panic!("cluster_client.py produce: unexpected line {line:?}"),
            }
        }
        true
    }

    /// Stops an endless producer (closes its stdin), reads to the end and asserts it
    /// exited 0.
    pub fn finish(mut self) -> (Vec<Ack>, usize) {
        drop(self.stdin.take());
        self.until(|_| false);
        let status = self.child.wait().expect("producer");
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        assert!(
            status.success(),
            "cluster_client.py produce exited {status}:\n{err}"
        );
        (std::mem::take(&mut self.acks), self.retries)
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A map of field → value from a RESP2 flat array or a RESP3 map reply in JSON.
pub fn json_hash(v: &serde_json::Value) -> Option<BTreeMap<String, String>> {
    match v {
        serde_json::Value::Null => None,
        serde_json::Value::Object(m) => Some(
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect(),
        ),
        serde_json::Value::Array(a) => Some(
            a.chunks(2)
                .map(|kv| {
                    (
                        kv[0].as_str().unwrap_or_default().to_string(),
                        kv.get(1)
                            .and_then(|x| x.as_str())
                            .unwrap_or_default()
                            .to_string(),
                    )
                })
                .collect(),
        ),
        other => panic!("not a hash reply: {other}"),
    }
}
