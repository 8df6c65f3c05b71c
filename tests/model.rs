//! Seeded model check of the projection: a random driver works on a master (with a replica)
//! and, once everything is quiet, every key under the four derived prefixes, in every
//! database, must be exactly what a reference model derives from the streams' contents (and
//! the log of HEATBRIDGE.REPLAY calls) alone: values and absolute expiries (PEXPIRETIME).
//! The replica must then hold exactly the master's keys.
//!
//! The model is built on the crate's own pure files (`src/decision.rs`, `src/projection.rs`,
//! included below): `Keys::of_stream` names the keys, `Keys::parse` says which entries are
//! valid, `projection::plan` gives the expiries. On top of that it states the projection
//! rule in a few lines ([`Model::live`], [`Model::replay`]):
//!
//! - in stream order, a valid entry whose plan_id has no dedupe key yet, or one holding this
//!   very entry's ID, is projected: dedupe key = its ID, by_plan hash = its fields; any other
//!   valid entry of that plan_id is a duplicate and writes nothing;
//! - latest:{sym} is the newest projected entry of the symbol (its fields plus
//!   `last_plan_id`), latest_plan_id:{sym} its plan_id;
//! - HEATBRIDGE.REPLAY projects every valid entry of its range again (dedupe and by_plan),
//!   ignoring dedupe, and moves latest only to a newer entry.
//!
//! The seed is printed at the start, in every failure and in each server's summary line.
//! Replay a run, narrow it, or soak:
//!
//! ```text
//! MODEL_SEED=1234 cargo test --release --test model -- --nocapture
//! MODEL_SEED=1234 MODEL_OPS=2310 HEATBRIDGE_FLAVORS=redis8 cargo test --release --test model -- --nocapture
//! MODEL_SEED=1234 MODEL_SKIP=restart,reload cargo test --release --test model -- --nocapture
//! MODEL_SECS=300 cargo test --release --test model -- --nocapture
//! ```
//!
//! - `MODEL_SEED`: the seed (decimal or 0x-hex); without it a fixed seed ([`GATE_SEED`]),
//!   so the gate runs the same sequence every time. `MODEL_SEED=random` draws one.
//! - `MODEL_SECS`: seconds of operations per server (default 30).
//! - `MODEL_OPS`: run exactly that many operations instead; a failure prints the count.
//! - `MODEL_SKIP=restart,swapdb`: draw those kinds of op (named as in the summary) but do
//!   not run them, so the rest of the sequence stays the same.
//! - `MODEL_VERBOSE=1`: print every op and its outcome.
//!
//! The op sequence is a function of the seed alone; entry IDs (the server's clock) and how
//! the module's passes fall between the commands are not, so a failure may need a few
//! replays. Every entry is added with an auto ID, so entry times are never in the future and,
//! with TTLs of two hours, nothing expires during a run.

mod common;
use common::rng::Rng;
use common::*;

/// The crate's pure core, as the module's own sources (an integration test cannot link the
/// crate: its global allocator is Redis's). `core` gives them the paths they use.
#[allow(dead_code)]
#[path = "../src/core/decision.rs"]
mod decision;
#[allow(dead_code)]
#[path = "../src/core/projection.rs"]
mod projection;
mod core {
    pub(crate) use super::decision;
}

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use decision::EntryId;
use projection::{Keys, Ttls};
use redis::Value;

/// The seed of the gate's run (any fixed value; this one is the date the test was written).
const GATE_SEED: u64 = 20_261_207;
/// The untagged stream (the seed's) and a tagged one; both in `heatbridge.stream-in`.
const STREAMS: [&str; 2] = [STREAM, "quantum:stream:{m}:harvest.heat.decision"];
/// The module's default group.
const GROUP: &str = "heat_bridge";
/// Every TTL, far longer than a run: nothing expires.
const TTL_SEC: u64 = 7200;
/// Few symbols, so that latest is overwritten often.
const SYMBOLS: [&str; 6] = ["BTC", "ETH", "SOL", "XRP", "ADA", "DOGE"];
/// Every symbol an entry may carry that makes a latest key on some stream.
const LATEST_SYMBOLS: [&str; 9] = [
    "BTC", "ETH", "SOL", "XRP", "ADA", "DOGE", "{m}:SOL", "{}:SOL", "DECOY",
];
/// The four prefixes of the derived keys.
const PREFIXES: [&[u8]; 4] = [
    projection::BY_PLAN_PREFIX,
    projection::LATEST_PREFIX,
    projection::POINTER_PREFIX,
    projection::DEDUPE_PREFIX,
];
/// Op kinds drawn but not run unless `MODEL_OPEN=1`: each finds a defect still open, so the
/// gate stays green while it is fixed. Remove a kind once its defect is fixed. None is open:
/// `replay_rewind` found one (a REPLAY moved a plan's dedupe key to a later duplicate, so a
/// rewound re-read skipped the entry projected first and latest stepped back), fixed in the
/// module (`latest_stays_after_replay_and_rewind`).
const OPEN_DEFECTS: [&str; 0] = [];
/// Operations kept for a failure report.
const LOG_OPS: usize = 60;
/// A reply slower than this means the server hangs.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for a drain or a replica to catch up.
const QUIET_TIMEOUT: Duration = Duration::from_secs(120);
/// Recent entry IDs kept per stream, for SETID and REPLAY FROM.
const RECENT_IDS: usize = 400;

/// The seed: `MODEL_SEED` (decimal, 0x-hex or `random`), else [`GATE_SEED`].
fn seed() -> u64 {
    let Ok(s) = std::env::var("MODEL_SEED") else {
        return GATE_SEED;
    };
    let s = s.trim();
    if s == "random" {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        return Rng(nanos ^ u64::from(std::process::id())).next();
    }
    let parsed = match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse(),
    };
    parsed.unwrap_or_else(|_| panic!("MODEL_SEED={s} is not a number"))
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// Field-value pairs of one stream entry, binary safe, in entry order.
type Fields = Vec<(Vec<u8>, Vec<u8>)>;

fn b(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

fn show(bytes: &[u8]) -> String {
    if bytes.len() > 80 {
        let head = String::from_utf8_lossy(&bytes[..60]);
        format!("{head}...({} bytes)", bytes.len())
    } else {
        String::from_utf8_lossy(bytes).into_owned()
    }
}

/// One step of the driver. Streams are indices into [`STREAMS`].
#[derive(Debug)]
enum Op {
    /// One XADD.
    Xadd(usize, Fields),
    /// Pipelined XADDs, mixed streams.
    Burst(Vec<(usize, Fields)>),
    /// MULTI, XADDs across both streams, EXEC.
    Multi(Vec<(usize, Fields)>),
    /// One EVAL that XADDs every entry (on Redis 7.2+ and Valkey in one millisecond).
    Lua(Vec<(usize, Fields)>),
    /// A Lua script of more than 2,000 entries on one stream (one millisecond on Redis 7.2+
    /// and Valkey), its second half of one symbol, and a reset of the module's memory sent
    /// before the script's reply is read: the catch-up after the reset orders latest
    /// against a decision of the same millisecond.
    /// With `true`, the op waits for the drain and checks latest against the model.
    LuaReset(Vec<(usize, Fields)>, Reset, bool),
    /// DEBUG RELOAD.
    Reload,
    /// kill -9 and a restart from the AOF (the settings go back to the start's).
    Restart,
    /// CONFIG SET heatbridge.stream-in to these streams, in this order.
    StreamIn(Vec<usize>),
    /// CONFIG SET heatbridge.fast-path.
    FastPath(bool),
    /// CONFIG SET heatbridge.project-at turn (`true`) or command (refused on Redis 7.0).
    ProjectAt(bool),
    /// CONFIG SET heatbridge.batch.
    Batch(u64),
    /// CONFIG SET heatbridge.catchup-step-us.
    CatchupStep(u64),
    /// CONFIG SET heatbridge.db.
    Db(u8),
    /// CLIENT PAUSE <ms> WRITE from the operator's connection.
    Pause(u64),
    /// XGROUP SETID backwards: to 0 (`None`), or to a recent entry ID (the pick), never past
    /// the group's cursor.
    SetId(usize, Option<u64>),
    /// SWAPDB 0 1, a gap of some ms, SWAPDB 0 1.
    SwapDb(u64),
    /// HEATBRIDGE.REPLAY STREAM s FROM (0, or a recent ID) COUNT n, after the group drained.
    Replay {
        stream: usize,
        from: Option<u64>,
        count: u64,
    },
    /// Waits until every listed stream is drained, and checks latest against the model.
    Settle,
    /// Entries on one stream whose second half is of one symbol and reuses plan_ids of the
    /// first half; a REPLAY of the second half (its duplicates then hold their plans' dedupe
    /// keys); XGROUP SETID back before the first half (to 0 with `to_zero`); a check of
    /// latest. The re-read skips the first-half entries it projected before, as duplicates.
    ReplayRewind {
        stream: usize,
        first: Vec<Fields>,
        second: Vec<Fields>,
        to_zero: bool,
    },
}

impl Op {
    /// The name counted in the summary and used by `MODEL_SKIP`.
    fn kind(&self) -> &'static str {
        match self {
            Op::Xadd(..) => "xadd",
            Op::Burst(_) => "burst",
            Op::Multi(_) => "multi",
            Op::Lua(_) => "lua",
            Op::LuaReset(..) => "lua_reset",
            Op::Reload => "reload",
            Op::Restart => "restart",
            Op::StreamIn(_) => "stream_in",
            Op::FastPath(_) => "fast_path",
            Op::ProjectAt(_) => "project_at",
            Op::Batch(_) => "batch",
            Op::CatchupStep(_) => "catchup_step",
            Op::Db(_) => "db",
            Op::Pause(_) => "pause",
            Op::SetId(..) => "setid",
            Op::SwapDb(_) => "swapdb",
            Op::Replay { .. } => "replay",
            Op::Settle => "settle",
            Op::ReplayRewind { .. } => "replay_rewind",
        }
    }

    /// The op in the log, without whole entries.
    fn describe(&self) -> String {
        let plans = |v: &[(usize, Fields)]| {
            let per = |s: usize| v.iter().filter(|(i, _)| *i == s).count();
            format!(
                "{} entries ({} untagged, {} tagged)",
                v.len(),
                per(0),
                per(1)
            )
        };
        match self {
            Op::Xadd(s, f) => format!(
                "xadd {} plan={} symbol={}",
                if *s == 0 { "untagged" } else { "tagged" },
                show(last_field(f, b"plan_id").unwrap_or(&b"-"[..])),
                show(last_field(f, b"symbol").unwrap_or(&b"-"[..])),
            ),
            Op::Burst(v) | Op::Multi(v) | Op::Lua(v) => format!("{} {}", self.kind(), plans(v)),
            Op::LuaReset(v, r, check) => format!(
                "lua {} then {r:?}{}",
                plans(v),
                if *check { ", then a check" } else { "" }
            ),
            Op::ReplayRewind {
                stream,
                first,
                second,
                to_zero,
            } => format!(
                "replay_rewind {} {}+{} entries{}",
                if *stream == 0 { "untagged" } else { "tagged" },
                first.len(),
                second.len(),
                if *to_zero { ", SETID 0" } else { "" }
            ),
            other => format!("{other:?}"),
        }
    }
}

/// What forgets the module's memory of which decision latest holds.
#[derive(Clone, Copy, Debug)]
enum Reset {
    Reload,
    FastPath(bool),
    /// heatbridge.stream-in set to both streams (its value at the start).
    StreamIn,
    /// heatbridge.db set to 0.
    Db0,
    /// SWAPDB 0 1 twice.
    SwapDb,
    /// kill -9 once the script answered, and a restart from the AOF.
    Restart,
}

/// Sets every field `name` of an entry to `value`.
fn set_field(f: &mut Fields, name: &[u8], value: Vec<u8>) {
    f.iter_mut()
        .filter(|(k, _)| k == name)
        .for_each(|(_, v)| v.clone_from(&value));
}

/// The last value of field `name`, as the module reads it.
fn last_field<'a>(f: &'a Fields, name: &[u8]) -> Option<&'a [u8]> {
    f.iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_slice())
}

/// One HEATBRIDGE.REPLAY the driver made, for failure reports.
#[derive(Clone, Debug)]
struct ReplayRec {
    /// The op number.
    op: u64,
    from: EntryId,
    /// The last ID it looked at (its reply).
    last: EntryId,
}

/// What the driver knows the settings are (they go back to the start's on a restart).
#[derive(Clone, Debug)]
struct Settings {
    listed: Vec<usize>,
    db: u8,
}

impl Settings {
    fn start() -> Settings {
        Settings {
            listed: vec![0, 1],
            db: 0,
        }
    }

    fn drains(&self, stream: usize) -> bool {
        self.db == 0 && self.listed.contains(&stream)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Who {
    Producer,
    Operator,
}

/// The master, its replica, the clients and the op log.
struct World {
    flavor: Flavor,
    seed: u64,
    rng: Rng,
    master: Server,
    replica: Server,
    producer: Option<Connection>,
    operator: Option<Connection>,
    settings: Settings,
    next_plan: u64,
    /// Recent entry IDs of each stream, from XADD replies.
    ids: [VecDeque<String>; 2],
    /// The model of each stream's key space.
    models: [Model; 2],
    /// Checkpoints passed (latest compared with the model mid-run).
    checkpoints: u64,
    log: VecDeque<String>,
    ops: u64,
    counts: BTreeMap<&'static str, u64>,
    skip: Vec<String>,
    /// Run the ops of [`OPEN_DEFECTS`] too (`MODEL_OPEN=1`).
    open: bool,
    verbose: bool,
    note: String,
}

/// The module arguments of both servers.
fn options(flavor: Flavor) -> Options {
    let ttl = TTL_SEC.to_string();
    Options::new(flavor)
        .without_exporter()
        .arg("--appendonly", "yes")
        .arg("--appendfsync", "always")
        .module_arg("stream-in", &STREAMS.join(","))
        .module_arg("ttl-plan-sec", &ttl)
        .module_arg("ttl-symbol-sec", &ttl)
        .module_arg("dedupe-ttl-sec", &ttl)
        .module_arg("poll-ms", "100")
}

impl World {
    fn new(flavor: Flavor, seed: u64) -> World {
        let master = options(flavor).start();
        let replica = options(flavor).start();
        let mut w = World {
            flavor,
            seed,
            rng: Rng(seed),
            master,
            replica,
            producer: None,
            operator: None,
            settings: Settings::start(),
            next_plan: 0,
            ids: [VecDeque::new(), VecDeque::new()],
            models: [Model::new(STREAMS[0]), Model::new(STREAMS[1])],
            checkpoints: 0,
            log: VecDeque::new(),
            ops: 0,
            counts: BTreeMap::new(),
            skip: std::env::var("MODEL_SKIP")
                .unwrap_or_default()
                .split(',')
                .map(|k| k.trim().to_string())
                .filter(|k| !k.is_empty())
                .collect(),
            open: env_u64("MODEL_OPEN").is_some_and(|v| v > 0),
            verbose: env_u64("MODEL_VERBOSE").is_some_and(|v| v > 0),
            note: String::new(),
        };
        let port = w.master.port.to_string();
        let mut rc = w.replica.conn();
        let r: Result<(), String> = redis::cmd("REPLICAOF")
            .arg("127.0.0.1")
            .arg(&port)
            .query(&mut rc)
            .map_err(|e| e.to_string());
        if let Err(e) = r {
            w.fail(&format!("REPLICAOF refused: {e}"));
        }
        w
    }

    // ---- clients --------------------------------------------------------------------------

    fn conn(&mut self, who: Who) -> &mut Connection {
        let port = self.master.port;
        let slot = match who {
            Who::Producer => &mut self.producer,
            Who::Operator => &mut self.operator,
        };
        if slot.is_none() {
            let c = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
                .and_then(|cl| cl.get_connection_with_timeout(Duration::from_secs(5)));
            match c {
                Ok(c) => {
                    c.set_read_timeout(Some(REPLY_TIMEOUT)).ok();
                    *slot = Some(c);
                }
                Err(e) => {
                    let why = format!("cannot connect to the master: {e}");
                    self.fail(&why)
                }
            }
        }
        match who {
            Who::Producer => self.producer.as_mut(),
            Who::Operator => self.operator.as_mut(),
        }
        .unwrap_or_else(|| unreachable!())
    }

    /// A command on the master. A timeout or a dead server fails the run; other errors are
    /// returned.
    fn q<T: redis::FromRedisValue>(&mut self, who: Who, c: &redis::Cmd) -> Result<T, String> {
        let r = c.query::<T>(self.conn(who));
        self.settle_reply(who, r)
    }

    /// A pipeline on the master, as [`World::q`].
    fn qp<T: redis::FromRedisValue>(&mut self, who: Who, p: &redis::Pipeline) -> Result<T, String> {
        let r = p.query::<T>(self.conn(who));
        self.settle_reply(who, r)
    }

    fn settle_reply<T>(&mut self, who: Who, r: redis::RedisResult<T>) -> Result<T, String> {
        match r {
            Ok(v) => Ok(v),
            Err(e) if e.is_timeout() => self.fail(&format!(
                "no reply within {REPLY_TIMEOUT:?}: the server hangs"
            )),
            Err(e) if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() => {
                match who {
                    Who::Producer => self.producer = None,
                    Who::Operator => self.operator = None,
                }
                if !self.master.alive() {
                    self.fail(&format!("the master died: {e}"));
                }
                Err(e.to_string())
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// A command on a fresh connection to the replica.
    fn on_replica<T: redis::FromRedisValue>(&mut self, c: &redis::Cmd) -> Result<T, String> {
        let port = self.replica.port;
        let mut conn = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
            .and_then(|cl| cl.get_connection_with_timeout(Duration::from_secs(5)))
            .map_err(|e| e.to_string())?;
        conn.set_read_timeout(Some(REPLY_TIMEOUT)).ok();
        c.query(&mut conn).map_err(|e| e.to_string())
    }

    // ---- drawing ops ----------------------------------------------------------------------

    /// Draws the next op.
    fn pick(&mut self) -> Op {
        type Draw = fn(&mut World) -> Op;
        let table: [(u64, Draw); 19] = [
            (400, |w| {
                let s = w.stream();
                Op::Xadd(s, w.entry(8))
            }),
            (60, |w| {
                let n = w.rng.range(10, 300);
                Op::Burst(w.entries(n, 4))
            }),
            (60, |w| {
                // Now and then a transaction far over the live budget (session 7): its
                // pass serves every XADD of it, whatever the time.
                let n = if w.rng.chance(10) {
                    w.rng.range(500, 2500)
                } else {
                    w.rng.range(2, 12)
                };
                Op::Multi(w.entries(n, 5))
            }),
            (14, |w| {
                let n = if w.rng.chance(25) {
                    w.rng.range(1000, 3000)
                } else {
                    w.rng.range(100, 1000)
                };
                Op::Lua(w.entries(n, 3))
            }),
            (6, |w| {
                let n = w.rng.range(2001, 4000);
                let s = w.stream();
                let focus = SYMBOLS[w.rng.below(SYMBOLS.len() as u64) as usize];
                let mut v: Vec<(usize, Fields)> = (0..n).map(|_| (s, w.entry(2))).collect();
                for (_, f) in v.iter_mut().skip(n as usize / 2) {
                    f.iter_mut()
                        .filter(|(k, _)| k == b"symbol")
                        .for_each(|(_, x)| *x = b(focus));
                }
                let reset = match w.rng.below(6) {
                    0 => Reset::Reload,
                    1 => Reset::FastPath(w.rng.chance(50)),
                    2 => Reset::StreamIn,
                    3 => Reset::Db0,
                    4 => Reset::SwapDb,
                    _ => Reset::Restart,
                };
                Op::LuaReset(v, reset, w.rng.chance(50))
            }),
            (3, |_| Op::Reload),
            (2, |_| Op::Restart),
            (8, |w| {
                Op::StreamIn(match w.rng.below(6) {
                    0 | 1 => vec![0, 1],
                    2 => vec![1, 0],
                    3 => vec![0],
                    _ => vec![1],
                })
            }),
            (6, |w| Op::FastPath(w.rng.chance(50))),
            (6, |w| Op::ProjectAt(w.rng.chance(50))),
            (8, |w| {
                Op::Batch(match w.rng.below(5) {
                    0 => 1,
                    1 => 250,
                    2 => 10,
                    _ => w.rng.range(1, 250),
                })
            }),
            (5, |w| Op::CatchupStep(w.rng.range(100, 10_000))),
            (6, |w| Op::Db(u8::from(w.rng.chance(50)))),
            (12, |w| Op::Pause(w.rng.range(10, 400))),
            (10, |w| {
                let s = w.rng.below(2) as usize;
                let pick = w.rng.next();
                Op::SetId(s, (!w.rng.chance(15)).then_some(pick))
            }),
            (4, |w| Op::SwapDb(w.rng.range(0, 150))),
            (8, |w| {
                let stream = w.rng.below(2) as usize;
                let pick = w.rng.next();
                let from = (!w.rng.chance(20)).then_some(pick);
                let count = if w.rng.chance(30) {
                    w.rng.range(1, 20)
                } else {
                    w.rng.range(1, 5000)
                };
                Op::Replay {
                    stream,
                    from,
                    count,
                }
            }),
            (8, |_| Op::Settle),
            (5, |w| {
                let stream = w.stream();
                let n1 = w.rng.range(3, 60);
                let first: Vec<Fields> = (0..n1).map(|_| w.entry(2)).collect();
                let focus = SYMBOLS[w.rng.below(SYMBOLS.len() as u64) as usize];
                let n2 = w.rng.range(3, 120);
                let second = (0..n2)
                    .map(|_| {
                        let mut f = w.entry(2);
                        set_field(&mut f, b"symbol", b(focus));
                        let reuse = w.rng.below(first.len() as u64) as usize;
                        if w.rng.chance(50) {
                            if let Some(p) = last_field(&first[reuse], b"plan_id") {
                                let p = p.to_vec();
                                set_field(&mut f, b"plan_id", p);
                            }
                        }
                        f
                    })
                    .collect();
                Op::ReplayRewind {
                    stream,
                    first,
                    second,
                    to_zero: w.rng.chance(30),
                }
            }),
        ];
        let total: u64 = table.iter().map(|(n, _)| n).sum();
        let mut r = self.rng.below(total);
        for (n, f) in table {
            if r < n {
                return f(self);
            }
            r -= n;
        }
        Op::Settle
    }

    /// A stream: the untagged one 65% of the time.
    fn stream(&mut self) -> usize {
        usize::from(!self.rng.chance(65))
    }

    fn entries(&mut self, n: u64, invalid_pct: u64) -> Vec<(usize, Fields)> {
        (0..n)
            .map(|_| {
                let s = self.stream();
                (s, self.entry(invalid_pct))
            })
            .collect()
    }

    /// An entry: valid with many shapes, invalid `invalid_pct` percent of the time.
    fn entry(&mut self, invalid_pct: u64) -> Fields {
        let plan = match self.rng.below(100) {
            // Fresh: a new by_plan key, and a new latest for its symbol.
            0..=49 => {
                self.next_plan += 1;
                format!("p{}", self.next_plan).into_bytes()
            }
            // A pool that repeats (dedupe), renewed every 150 ops so that first occurrences,
            // which write latest, keep coming.
            50..=87 => format!("P{}.{}", self.ops / 150, self.rng.below(30)).into_bytes(),
            // Shaped like a tagged stream's keys: invalid on the untagged stream.
            88..=95 => format!("{{m}}:P{}.{}", self.ops / 150, self.rng.below(10)).into_bytes(),
            // The longest valid plan_id.
            96 | 97 => {
                let mut p = vec![b'L'; 254];
                p.extend_from_slice(format!("{:02}", self.rng.below(20)).as_bytes());
                p
            }
            // Binary.
            _ => format!("bin\0\u{7f}\u{ff}{}", self.rng.below(10)).into_bytes(),
        };
        let symbol = match self.rng.below(100) {
            0..=3 => b("{m}:SOL"),
            4 => b("{}:SOL"),
            _ => b(SYMBOLS[self.rng.below(SYMBOLS.len() as u64) as usize]),
        };
        let level = ["cold", "warm", "hot"][self.rng.below(3) as usize];
        let mut f: Fields = vec![
            (
                b("ts_epoch"),
                (1_735_689_600 + self.rng.below(1_000_000))
                    .to_string()
                    .into_bytes(),
            ),
            (b("symbol"), symbol),
            (b("plan_id"), plan),
            (b("heat_level"), b(level)),
            (
                b("heat_score"),
                format!("0.{}", self.rng.below(1000)).into_bytes(),
            ),
        ];
        // Shapes that make latest lose or gain fields, and fields named twice.
        match self.rng.below(100) {
            0..=11 => {
                for i in 0..self.rng.range(1, 6) {
                    f.push((format!("x{i}").into_bytes(), b("v")));
                }
            }
            12..=16 => f.push((b("heat_level"), b("twice"))),
            17..=19 => f.push((b("last_plan_id"), b("from-the-entry"))),
            20..=22 => f.insert(0, (b("plan_id"), b("decoy"))),
            23 | 24 => f.insert(0, (b("symbol"), b("DECOY"))),
            25 | 26 => {
                f.push((Vec::new(), Vec::new()));
                f.push((b("empty"), Vec::new()));
            }
            27 | 28 => f.push((vec![0, 0xff, b'\n'], vec![0xfe, 0, 0x80])),
            29 => f.retain(|(k, _)| k != b"heat_score" && k != b"ts_epoch"),
            _ => {}
        }
        if self.rng.chance(invalid_pct) {
            self.spoil(&mut f);
        }
        f
    }

    /// Makes an entry invalid.
    fn spoil(&mut self, f: &mut Fields) {
        let set = |f: &mut Fields, name: &[u8], v: Vec<u8>| {
            f.iter_mut()
                .filter(|(k, _)| k == name)
                .for_each(|(_, x)| *x = v.clone());
        };
        match self.rng.below(9) {
            0 => f.retain(|(k, _)| k != b"plan_id"),
            1 => f.retain(|(k, _)| k != b"symbol"),
            2 => set(f, b"plan_id", Vec::new()),
            3 => set(f, b"symbol", Vec::new()),
            4 => set(f, b"plan_id", vec![b'q'; 257]),
            5 => set(f, b"symbol", vec![b's'; 257]),
            6 | 7 => {
                for i in 0..self.rng.range(60, 70) {
                    f.push((format!("many{i}").into_bytes(), b("x")));
                }
            }
            // Over 64 KiB, rarely (it is large).
            _ => {
                if self.rng.chance(20) {
                    f.push((b("big"), vec![b'z'; 66 * 1024]));
                } else {
                    f.push((b("plan_id"), Vec::new()));
                }
            }
        }
    }

    // ---- running ops ----------------------------------------------------------------------

    fn apply(&mut self, op: Op) {
        self.ops += 1;
        let mut line = format!("#{} {}", self.ops, op.describe());
        *self.counts.entry(op.kind()).or_default() += 1;
        let open = OPEN_DEFECTS.contains(&op.kind()) && !self.open;
        let outcome = if open || self.skip.iter().any(|k| k == op.kind()) {
            format!(
                "skipped ({})",
                if open {
                    "an open defect; MODEL_OPEN=1 runs it"
                } else {
                    "MODEL_SKIP"
                }
            )
        } else {
            if self.log.len() == LOG_OPS {
                self.log.pop_front();
            }
            // Logged before it runs, so a crash report shows it.
            self.log.push_back(line.clone());
            self.run_op(op)
        };
        line.push_str(" -> ");
        line.push_str(&outcome);
        if self.verbose {
            eprintln!("{line}");
        }
        if let Some(last) = self.log.back_mut() {
            if last.starts_with(&format!("#{} ", self.ops)) {
                *last = line;
            }
        }
        if !self.master.alive() {
            self.fail("the master died");
        }
        if !self.replica.alive() {
            self.fail("the replica died");
        }
    }

    fn run_op(&mut self, op: Op) -> String {
        match op {
            Op::Xadd(s, f) => {
                let id: String = self
                    .q(Who::Producer, &xadd_cmd(STREAMS[s], &f))
                    .unwrap_or_else(|e| self.fail(&format!("XADD refused: {e}")));
                self.remember(s, id.clone());
                id
            }
            Op::Burst(v) => self.pipeline(&v, false),
            Op::Multi(v) => self.pipeline(&v, true),
            Op::Lua(v) => {
                let c = lua_cmd(&v);
                let r = self
                    .q(Who::Producer, &c)
                    .unwrap_or_else(|e| self.fail(&format!("EVAL refused: {e}")));
                self.lua_done(r)
            }
            Op::LuaReset(v, reset, check) => {
                let out = self.lua_reset(&v, reset);
                if check {
                    self.checkpoint_all();
                }
                out
            }
            Op::Reload => {
                let r: Result<(), String> = self.q(Who::Operator, &cmd(&["DEBUG", "RELOAD"]));
                format!("{r:?}")
            }
            Op::Restart => {
                self.producer = None;
                self.operator = None;
                let restarted = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    self.master.restart();
                }));
                if restarted.is_err() {
                    self.fail("the master did not come back from the AOF");
                }
                self.settings = Settings::start();
                "restarted".into()
            }
            Op::StreamIn(list) => {
                let v: Vec<&str> = list.iter().map(|i| STREAMS[*i]).collect();
                let r = self.config("stream-in", &v.join(","));
                if r.is_ok() {
                    self.settings.listed = list;
                }
                format!("{r:?}")
            }
            Op::FastPath(on) => format!(
                "{:?}",
                self.config("fast-path", if on { "yes" } else { "no" })
            ),
            Op::ProjectAt(turn) => format!(
                "{:?}",
                self.config("project-at", if turn { "turn" } else { "command" })
            ),
            Op::Batch(n) => format!("{:?}", self.config("batch", &n.to_string())),
            Op::CatchupStep(n) => format!("{:?}", self.config("catchup-step-us", &n.to_string())),
            Op::Db(db) => {
                let r = self.config("db", &db.to_string());
                if r.is_ok() {
                    self.settings.db = db;
                }
                format!("{r:?}")
            }
            Op::Pause(ms) => {
                let r: Result<(), String> = self.q(
                    Who::Operator,
                    &cmd(&["CLIENT", "PAUSE", &ms.to_string(), "WRITE"]),
                );
                format!("{r:?}")
            }
            Op::SetId(s, pick) => self.setid(s, pick),
            Op::SwapDb(gap) => {
                let r1: Result<(), String> = self.q(Who::Operator, &cmd(&["SWAPDB", "0", "1"]));
                std::thread::sleep(Duration::from_millis(gap));
                let r2: Result<(), String> = self.q(Who::Operator, &cmd(&["SWAPDB", "0", "1"]));
                if r1.is_ok() && r2.is_err() {
                    self.fail(&format!("SWAPDB back refused: {r2:?}"));
                }
                format!("{r1:?} {r2:?}")
            }
            Op::Replay {
                stream,
                from,
                count,
            } => self.replay(stream, from, count),
            Op::Settle => {
                self.checkpoint_all();
                "drained; latest as the model says".into()
            }
            Op::ReplayRewind {
                stream,
                first,
                second,
                to_zero,
            } => self.replay_rewind(stream, &first, &second, to_zero),
        }
    }

    fn remember(&mut self, s: usize, id: String) {
        let q = &mut self.ids[s];
        if q.len() == RECENT_IDS {
            q.pop_front();
        }
        q.push_back(id);
    }

    fn recent_id(&self, s: usize, pick: u64) -> Option<String> {
        let q = &self.ids[s];
        if q.is_empty() {
            return None;
        }
        q.get((pick % q.len() as u64) as usize).cloned()
    }

    fn config(&mut self, name: &str, value: &str) -> Result<(), String> {
        self.q(
            Who::Operator,
            &cmd(&["CONFIG", "SET", &format!("heatbridge.{name}"), value]),
        )
    }

    /// Remembers the IDs a script answered (first and last of each stream).
    fn lua_done(&mut self, ids: Vec<String>) -> String {
        for (i, id) in ids.iter().enumerate() {
            if !id.is_empty() {
                self.remember(i / 2, id.clone());
            }
        }
        ids.join(" ")
    }

    fn lua_reset(&mut self, v: &[(usize, Fields)], reset: Reset) -> String {
        let script = lua_cmd(v).get_packed_command();
        let reset_cmds: Vec<redis::Cmd> = match reset {
            Reset::Reload => vec![cmd(&["DEBUG", "RELOAD"])],
            Reset::FastPath(on) => vec![cmd(&[
                "CONFIG",
                "SET",
                "heatbridge.fast-path",
                if on { "yes" } else { "no" },
            ])],
            Reset::StreamIn => vec![cmd(&[
                "CONFIG",
                "SET",
                "heatbridge.stream-in",
                &STREAMS.join(","),
            ])],
            Reset::Db0 => vec![cmd(&["CONFIG", "SET", "heatbridge.db", "0"])],
            Reset::SwapDb => vec![cmd(&["SWAPDB", "0", "1"]), cmd(&["SWAPDB", "0", "1"])],
            Reset::Restart => Vec::new(),
        };
        // Pipelined on one connection: the server runs the reset right after the script
        // (and, on Redis 7.2+ and Valkey, after the script's first drain pass).
        let mut packed = script;
        for c in &reset_cmds {
            packed.extend(c.get_packed_command());
        }
        let sent = self.conn(Who::Producer).send_packed_command(&packed);
        if let Err(e) = self.settle_reply(Who::Producer, sent) {
            self.fail(&format!("EVAL not sent: {e}"));
        }
        let r = self.conn(Who::Producer).recv_response();
        let r = self
            .settle_reply(Who::Producer, r)
            .and_then(|v| v.extract_error().map_err(|e| e.to_string()))
            .and_then(|v| redis::from_redis_value::<Vec<String>>(&v).map_err(|e| e.to_string()))
            .unwrap_or_else(|e| self.fail(&format!("EVAL refused: {e}")));
        let mut out = self.lua_done(r);
        for _ in &reset_cmds {
            let got = self.conn(Who::Producer).recv_response();
            let got = self
                .settle_reply(Who::Producer, got)
                .and_then(|v| v.extract_error().map_err(|e| e.to_string()));
            out.push_str(&format!("; {got:?}"));
        }
        match reset {
            Reset::StreamIn => self.settings.listed = vec![0, 1],
            Reset::Db0 => self.settings.db = 0,
            Reset::Restart => out.push_str(&format!("; {}", self.run_op(Op::Restart))),
            _ => {}
        }
        out
    }

    /// XGROUP SETID backwards: to 0 or to a recent ID, but never past the group's cursor.
    fn setid(&mut self, s: usize, pick: Option<u64>) -> String {
        let stream = STREAMS[s];
        let c = self.conn(Who::Operator);
        let cursor = group_field(c, stream, GROUP, "last-delivered-id");
        let Some(cursor) = cursor.and_then(|c| EntryId::parse(c.as_bytes())) else {
            return "no group".into();
        };
        let to = match pick.and_then(|p| self.recent_id(s, p)) {
            Some(id) => match EntryId::parse(id.as_bytes()) {
                Some(id) if id < cursor => id,
                _ => cursor,
            },
            None => EntryId::ZERO,
        };
        let r: Result<(), String> = self.q(
            Who::Operator,
            &cmd(&["XGROUP", "SETID", stream, GROUP, &to.to_string()]),
        );
        if r.is_ok() {
            self.models[s].rewind(to);
        }
        format!("{to} (cursor was {cursor}): {r:?}")
    }

    fn replay(&mut self, s: usize, from: Option<u64>, count: u64) -> String {
        let stream = STREAMS[s];
        let from = from
            .and_then(|p| self.recent_id(s, p))
            .and_then(|id| EntryId::parse(id.as_bytes()))
            .unwrap_or(EntryId::ZERO);
        let drains = self.settings.drains(s);
        if drains {
            // Every entry so far projected, and latest as the model says.
            self.checkpoint(s);
        }
        let c = cmd(&[
            "HEATBRIDGE.REPLAY",
            "STREAM",
            stream,
            "FROM",
            &from.to_string(),
            "COUNT",
            &count.to_string(),
        ]);
        let r: Result<(u64, String), String> = self.q(Who::Operator, &c);
        match r {
            Ok((written, last)) => {
                let Some(last) = EntryId::parse(last.as_bytes()) else {
                    self.fail(&format!("REPLAY answered a last ID {last:?}"))
                };
                if !drains && written > 0 {
                    self.fail(&format!(
                        "REPLAY of {stream} wrote {written} entries while the module does not \
                         project it (settings {:?})",
                        self.settings
                    ));
                }
                if drains {
                    let want = self.models[s].replay(from, last);
                    self.models[s].replays.push(ReplayRec {
                        op: self.ops,
                        from,
                        last,
                    });
                    if want != written {
                        self.fail(&format!(
                            "REPLAY of {stream} FROM {from} (to {last}) wrote {written} entries, \
                             the model {want}"
                        ));
                    }
                }
                format!("FROM {from} COUNT {count}: wrote {written}, last {last}")
            }
            Err(e) if drains => self.fail(&format!("REPLAY refused: {e}")),
            Err(e) => format!("FROM {from} COUNT {count}: {e}"),
        }
    }

    /// Whether stream `s` has nothing left for the module: no stream, or lag 0, nothing
    /// pending and the cursor on the stream's last ID.
    fn drained(&mut self, s: usize) -> bool {
        let stream = STREAMS[s];
        let c = self.conn(Who::Operator);
        if !exists(c, stream) {
            return true;
        }
        let lag = group_field(c, stream, GROUP, "lag");
        let pending = group_field(c, stream, GROUP, "pending");
        let delivered = group_field(c, stream, GROUP, "last-delivered-id");
        lag.as_deref() == Some("0")
            && pending.as_deref() == Some("0")
            && delivered.is_some()
            && delivered == stream_field(c, stream, "last-generated-id")
    }

    fn wait_drained(&mut self, s: usize) {
        let deadline = Instant::now() + QUIET_TIMEOUT;
        while !self.drained(s) {
            if Instant::now() > deadline {
                let stream = STREAMS[s];
                let c = self.conn(Who::Operator);
                let state = format!(
                    "lag {:?} pending {:?} last-delivered-id {:?} last-generated-id {:?}",
                    group_field(c, stream, GROUP, "lag"),
                    group_field(c, stream, GROUP, "pending"),
                    group_field(c, stream, GROUP, "last-delivered-id"),
                    stream_field(c, stream, "last-generated-id"),
                );
                self.fail(&format!(
                    "{stream} not drained in {QUIET_TIMEOUT:?} (settings {:?}): {state}",
                    self.settings
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn replay_rewind(
        &mut self,
        s: usize,
        first: &[Fields],
        second: &[Fields],
        to_zero: bool,
    ) -> String {
        let stream = STREAMS[s];
        let mut p = redis::pipe();
        for f in first.iter().chain(second) {
            p.add_command(xadd_cmd(stream, f));
        }
        let ids: Vec<String> = self
            .qp(Who::Producer, &p)
            .unwrap_or_else(|e| self.fail(&format!("XADD pipeline refused: {e}")));
        let parse = |i: usize| ids.get(i).and_then(|id| EntryId::parse(id.as_bytes()));
        let (Some(start), Some(middle)) = (parse(0), parse(first.len() - 1)) else {
            self.fail(&format!("XADD answered {ids:?}"));
        };
        if let Some(id) = ids.last() {
            self.remember(s, id.clone());
        }
        if !self.settings.drains(s) {
            return format!(
                "{} .. {}; not projected now",
                start,
                ids.last().map_or("", |s| s)
            );
        }
        self.checkpoint(s);
        let c = cmd(&[
            "HEATBRIDGE.REPLAY",
            "STREAM",
            stream,
            "FROM",
            &middle.to_string(),
            "COUNT",
            &second.len().to_string(),
        ]);
        let (written, last): (u64, String) = self
            .q(Who::Operator, &c)
            .unwrap_or_else(|e| self.fail(&format!("REPLAY refused: {e}")));
        let last = EntryId::parse(last.as_bytes()).unwrap_or_default();
        let want = self.models[s].replay(middle, last);
        self.models[s].replays.push(ReplayRec {
            op: self.ops,
            from: middle,
            last,
        });
        if want != written {
            self.fail(&format!(
                "REPLAY of {stream} FROM {middle} (to {last}) wrote {written} entries, the model \
                 {want}"
            ));
        }
        // Back to just before the first half.
        let to = if to_zero {
            EntryId::ZERO
        } else if start.seq > 0 {
            EntryId {
                ms: start.ms,
                seq: start.seq - 1,
            }
        } else {
            EntryId {
                ms: start.ms - 1,
                seq: u64::MAX,
            }
        };
        let r: Result<(), String> = self.q(
            Who::Operator,
            &cmd(&["XGROUP", "SETID", stream, GROUP, &to.to_string()]),
        );
        if r.is_ok() {
            self.models[s].rewind(to);
        }
        let done = format!(
            "{start} .. {}; REPLAY FROM {middle} wrote {written}, last {last}; SETID {to}: {r:?}",
            ids.last().map_or("", |s| s)
        );
        self.progress(&done);
        self.checkpoint(s);
        format!("{done}; latest as the model says")
    }

    /// XADDs of `v` (stream, fields) in one pipeline, or in MULTI/EXEC when `atomic`.
    fn pipeline(&mut self, v: &[(usize, Fields)], atomic: bool) -> String {
        let mut p = redis::pipe();
        if atomic {
            p.atomic();
        }
        for (s, f) in v {
            p.add_command(xadd_cmd(STREAMS[*s], f));
        }
        let what = if atomic {
            "MULTI/EXEC"
        } else {
            "XADD pipeline"
        };
        let ids: Vec<String> = self
            .qp(Who::Producer, &p)
            .unwrap_or_else(|e| self.fail(&format!("{what} refused: {e}")));
        for ((s, _), id) in v.iter().zip(&ids) {
            self.remember(*s, id.clone());
        }
        format!(
            "{} .. {}",
            ids.first().map_or("", |s| s),
            ids.last().map_or("", |s| s)
        )
    }

    /// Adds what an op did so far to its log line, for a failure in the middle of it.
    fn progress(&mut self, what: &str) {
        let tag = format!("#{} ", self.ops);
        if let Some(last) = self.log.back_mut() {
            if last.starts_with(&tag) {
                last.push_str(" [");
                last.push_str(what);
                last.push(']');
            }
        }
    }

    /// Waits until stream `s` is drained, feeds the model what was added, and compares the
    /// latest keys and pointers of the stream with the model's.
    fn checkpoint(&mut self, s: usize) {
        self.wait_drained(s);
        let c = self.operator.take();
        let mut c = c.unwrap_or_else(|| self.master.conn());
        self.models[s].feed(&mut c);
        let now = server_now_ms(&mut c);
        self.operator = Some(c);
        self.checkpoints += 1;
        let keys = self.models[s].keys.clone();
        // On the untagged stream, `{m}:SOL` names the tagged stream's keys: not this one's.
        let symbols: Vec<&str> = LATEST_SYMBOLS
            .into_iter()
            .filter(|sym| keys.tagged() || !projection::tag_prefixed(sym.as_bytes()))
            .collect();
        let mut p = redis::pipe();
        for sym in &symbols {
            let (l, ptr) = (keys.latest(sym.as_bytes()), keys.pointer(sym.as_bytes()));
            p.cmd("HGETALL").arg(&l).cmd("PEXPIRETIME").arg(&l);
            p.cmd("GET").arg(&ptr).cmd("PEXPIRETIME").arg(&ptr);
        }
        let got: Vec<Value> = self
            .qp(Who::Operator, &p)
            .unwrap_or_else(|e| self.fail(&format!("reading latest: {e}")));
        let mut lines = Vec::new();
        for (sym, v) in symbols.iter().zip(got.chunks(4)) {
            let at = |v: &Value| match v {
                Value::Int(n) => *n,
                _ => -4,
            };
            let hash: Vec<(Vec<u8>, Vec<u8>)> = redis::from_redis_value(&v[0]).unwrap_or_default();
            let ptr: Option<Vec<u8>> = redis::from_redis_value(&v[2]).unwrap_or_default();
            let got_latest =
                (at(&v[1]) != -2).then(|| (Val::Hash(hash.into_iter().collect()), at(&v[1])));
            let got_ptr = ptr.map(|p| (Val::Str(p), at(&v[3])));
            let m = &self.models[s];
            let want = m.expected_latest(sym.as_bytes(), now);
            let (want_latest, want_ptr) = match want {
                Some((l, p)) => (Some(l), Some(p)),
                None => (None, None),
            };
            if got_latest != want_latest || got_ptr != want_ptr {
                lines.push(format!(
                    "{}: want {} / {}, got {} / {}\n    {}",
                    show(&keys.latest(sym.as_bytes())),
                    want_latest.as_ref().map_or("none".into(), show_val),
                    want_ptr.as_ref().map_or("none".into(), show_val),
                    got_latest.as_ref().map_or("none".into(), show_val),
                    got_ptr.as_ref().map_or("none".into(), show_val),
                    explain_latest(m, sym.as_bytes(), got_latest.as_ref())
                ));
            }
        }
        if !lines.is_empty() {
            self.fail(&format!(
                "checkpoint {} on {}: latest differs from the model ({} entries read)\n  {}",
                self.checkpoints,
                STREAMS[s],
                self.models[s].entries.len(),
                lines.join("\n  ")
            ));
        }
    }

    /// [`World::checkpoint`] of every stream the module projects now.
    fn checkpoint_all(&mut self) {
        for s in 0..2 {
            if self.settings.drains(s) {
                self.checkpoint(s);
            }
        }
    }

    // ---- failures -------------------------------------------------------------------------

    fn fail(&mut self, why: &str) -> ! {
        panic!("{}", self.report(why));
    }

    fn report(&mut self, why: &str) -> String {
        let mut s = format!(
            "MODEL FAILURE on {:?}, seed={} (replay: MODEL_SEED={} MODEL_OPS={} \
             HEATBRIDGE_FLAVORS={}): {why}\nsettings {:?}; {}\n--- last {} ops:\n",
            self.flavor,
            self.seed,
            self.seed,
            self.ops,
            self.flavor.name(),
            self.settings,
            self.note,
            self.log.len()
        );
        for l in &self.log {
            s.push_str(l);
            s.push('\n');
        }
        for (name, srv) in [("master", &mut self.master), ("replica", &mut self.replica)] {
            let alive = srv.alive();
            s.push_str(&format!(
                "--- {name} (port {}, alive={alive}) log:\n{}\n",
                srv.port,
                log_excerpt(&srv.log())
            ));
        }
        s
    }
}

fn cmd(args: &[&str]) -> redis::Cmd {
    let mut c = redis::cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    c
}

/// One EVAL that XADDs every entry; it answers the first and last ID of each stream.
fn lua_cmd(v: &[(usize, Fields)]) -> redis::Cmd {
    const SCRIPT: &str = "local i = 1 local ids = {'', '', '', ''} \
        while i <= #ARGV do \
          local k = tonumber(ARGV[i]) local n = tonumber(ARGV[i + 1]) \
          local id = redis.call('XADD', KEYS[k], '*', unpack(ARGV, i + 2, i + 1 + n)) \
          if ids[2 * k - 1] == '' then ids[2 * k - 1] = id end \
          ids[2 * k] = id \
          i = i + 2 + n \
        end return ids";
    let mut c = redis::cmd("EVAL");
    c.arg(SCRIPT).arg(2).arg(STREAMS[0]).arg(STREAMS[1]);
    for (s, f) in v {
        c.arg(s + 1).arg(f.len() * 2);
        for (k, x) in f {
            c.arg(k).arg(x);
        }
    }
    c
}

fn xadd_cmd(stream: &str, fields: &Fields) -> redis::Cmd {
    let mut c = redis::cmd("XADD");
    c.arg(stream).arg("*");
    for (k, v) in fields {
        c.arg(k).arg(v);
    }
    c
}

/// A field of XINFO STREAM.
fn stream_field(c: &mut Connection, stream: &str, field: &str) -> Option<String> {
    let v: Vec<Value> = redis::cmd("XINFO")
        .arg("STREAM")
        .arg(stream)
        .query(c)
        .ok()?;
    v.chunks(2).find_map(|kv| match kv {
        [Value::BulkString(k), v] if k == field.as_bytes() => match v {
            Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
            Value::SimpleString(s) => Some(s.clone()),
            Value::Int(i) => Some(i.to_string()),
            _ => None,
        },
        _ => None,
    })
}

/// The lines that explain a crash: those around the bug report; otherwise the last lines.
fn log_excerpt(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    let report = lines.iter().position(|l| l.contains("BUG REPORT START"));
    let range = match report {
        Some(at) => {
            let trace = lines[at..]
                .iter()
                .position(|l| l.contains("STACK TRACE"))
                .map_or(at, |t| at + t);
            at.saturating_sub(20)..(trace + 30).min(lines.len())
        }
        None => lines.len().saturating_sub(30)..lines.len(),
    };
    lines[range].join("\n")
}

// ---- the model ------------------------------------------------------------------------------

/// A stream entry as XRANGE returns it.
struct Entry {
    id: EntryId,
    fields: Fields,
}

/// A key's value as read back.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Val {
    Hash(BTreeMap<Vec<u8>, Vec<u8>>),
    Str(Vec<u8>),
    /// Another type, by name.
    Other(String),
}

/// A key's value and absolute expiry (PEXPIRETIME).
type KeyState = (Val, i64);

/// Keys by (database, name).
type Dump = BTreeMap<(u32, Vec<u8>), KeyState>;

/// The model of one stream's key space, fed the stream's entries in order as the driver
/// reads them back (the streams only grow: nothing is deleted or trimmed).
struct Model {
    stream: &'static str,
    keys: Keys,
    /// The stream's entries read so far, in order.
    entries: Vec<Entry>,
    /// How many of `entries` the live rule has seen.
    fed: usize,
    /// Per plan_id, the entry its dedupe key holds: the earliest projected (index into
    /// `entries`).
    dedupe: HashMap<Vec<u8>, usize>,
    /// Per plan_id, the entry its by_plan hash holds: the last one written.
    by_plan: HashMap<Vec<u8>, usize>,
    /// Per symbol, the entry latest holds.
    latest: HashMap<Vec<u8>, usize>,
    /// The REPLAYs made, for failure reports.
    replays: Vec<ReplayRec>,
    valid: usize,
    duplicates: usize,
}

impl Model {
    fn new(stream: &'static str) -> Model {
        Model {
            stream,
            keys: Keys::of_stream(stream.as_bytes()),
            entries: Vec::new(),
            fed: 0,
            dedupe: HashMap::new(),
            by_plan: HashMap::new(),
            latest: HashMap::new(),
            replays: Vec::new(),
            valid: 0,
            duplicates: 0,
        }
    }

    /// (plan_id, symbol) of entry `i` if it is valid on this stream.
    fn parse(&self, i: usize) -> Option<(Vec<u8>, Vec<u8>)> {
        let e = &self.entries[i];
        self.keys
            .parse(e.id, &e.fields)
            .ok()
            .map(|d| (d.plan_id.to_vec(), d.symbol.to_vec()))
    }

    fn newer_latest(&mut self, sym: Vec<u8>, i: usize) {
        let slot = self.latest.entry(sym).or_insert(i);
        *slot = (*slot).max(i);
    }

    /// The live rule for entry `i`.
    fn live(&mut self, i: usize) {
        let Some((plan, sym)) = self.parse(i) else {
            return;
        };
        self.valid += 1;
        match self.dedupe.get(&plan) {
            Some(&j) if j != i => self.duplicates += 1,
            _ => {
                self.dedupe.insert(plan.clone(), i);
                self.by_plan.insert(plan, i);
                self.newer_latest(sym, i);
            }
        }
    }

    /// Reads the entries added since the last read, and applies the live rule to them: the
    /// caller knows the module has projected them all (the group is drained).
    fn feed(&mut self, c: &mut Connection) {
        let start = self
            .entries
            .last()
            .map_or_else(|| "-".to_string(), |e| format!("({}", e.id));
        self.entries.extend(read_stream(c, self.stream, start));
        while self.fed < self.entries.len() {
            self.live(self.fed);
            self.fed += 1;
        }
    }

    /// The group's cursor moved back to `to`: the module reads the entries after it again
    /// with the live rule, which (the dedupe keys holding each plan's earliest projected
    /// entry) projects again exactly the entries it projected before, so each one's by_plan
    /// is written again; dedupe and latest stay.
    fn rewind(&mut self, to: EntryId) {
        let start = self.entries.partition_point(|e| e.id <= to);
        for i in start..self.fed {
            if let Some((plan, _)) = self.parse(i) {
                if self.dedupe.get(&plan) == Some(&i) {
                    self.by_plan.insert(plan, i);
                }
            }
        }
    }

    /// HEATBRIDGE.REPLAY of (from, last]: every valid entry's by_plan written again, and its
    /// dedupe key where no earlier entry holds it; latest moves to the newest of each symbol
    /// if that is newer. Returns how many it wrote.
    fn replay(&mut self, from: EntryId, last: EntryId) -> u64 {
        let start = self.entries.partition_point(|e| e.id <= from);
        let mut written = 0;
        let mut newest: HashMap<Vec<u8>, usize> = HashMap::new();
        for i in start..self.entries.len() {
            if self.entries[i].id > last {
                break;
            }
            if let Some((plan, sym)) = self.parse(i) {
                written += 1;
                // REPLAY writes by_plan ignoring dedupe, but leaves the dedupe key on the
                // earliest projected entry of the plan.
                let held = self.dedupe.entry(plan.clone()).or_insert(i);
                *held = (*held).min(i);
                self.by_plan.insert(plan, i);
                newest.insert(sym, i);
            }
        }
        for (sym, i) in newest {
            self.newer_latest(sym, i);
        }
        written
    }

    /// The latest hash and the pointer the model expects for `sym`, if any.
    fn expected_latest(&self, sym: &[u8], now: u64) -> Option<(KeyState, KeyState)> {
        let &i = self.latest.get(sym)?;
        let e = &self.entries[i];
        let at = expiry(projection::plan(e.id.ms, ttls(), now).latest_at);
        let plan = self.parse(i).map(|(p, _)| p).unwrap_or_default();
        let mut h = hash_of(&e.fields);
        h.insert(projection::LAST_PLAN_ID_FIELD.to_vec(), plan.clone());
        Some(((Val::Hash(h), at), (Val::Str(plan), at)))
    }

    /// The keys the model expects, in database 0.
    fn expected(&self, now: u64) -> Dump {
        let mut out = Dump::new();
        for (plan, &i) in &self.dedupe {
            let e = &self.entries[i];
            let p = projection::plan(e.id.ms, ttls(), now);
            out.insert(
                (0, self.keys.dedupe(plan)),
                (Val::Str(e.id.to_string().into_bytes()), expiry(p.dedupe_at)),
            );
        }
        for (plan, &i) in &self.by_plan {
            let e = &self.entries[i];
            let p = projection::plan(e.id.ms, ttls(), now);
            out.insert(
                (0, self.keys.by_plan(plan)),
                (Val::Hash(hash_of(&e.fields)), expiry(p.by_plan_at)),
            );
        }
        for sym in self.latest.keys() {
            if let Some((h, ptr)) = self.expected_latest(sym, now) {
                out.insert((0, self.keys.latest(sym)), h);
                out.insert((0, self.keys.pointer(sym)), ptr);
            }
        }
        out
    }
}

/// The TTLs of the run.
fn ttls() -> Ttls {
    Ttls::from_secs(TTL_SEC, TTL_SEC, TTL_SEC)
}

/// PEXPIRETIME of a key the model plans to write (-3: planned not to be written, which no
/// key shows).
fn expiry(at: Option<u64>) -> i64 {
    at.map_or(-3, |v| v as i64)
}

/// An entry's fields as a hash holds them: the last value of a name wins.
fn hash_of(fields: &Fields) -> BTreeMap<Vec<u8>, Vec<u8>> {
    fields.iter().cloned().collect()
}

/// The entries of `stream` from `start` (an XRANGE start) on, on a connection in
/// database 0.
fn read_stream(c: &mut Connection, stream: &str, mut start: String) -> Vec<Entry> {
    let mut out = Vec::new();
    loop {
        let rows: Vec<(String, Vec<Vec<u8>>)> = redis::cmd("XRANGE")
            .arg(stream)
            .arg(&start)
            .arg("+")
            .arg("COUNT")
            .arg(5000)
            .query(c)
            .unwrap_or_else(|e| panic!("XRANGE {stream}: {e}"));
        let Some(last) = rows.last().map(|r| r.0.clone()) else {
            break;
        };
        for (id, flat) in rows {
            let id = EntryId::parse(id.as_bytes()).unwrap_or_else(|| panic!("entry ID {id}"));
            let fields = flat
                .chunks(2)
                .filter_map(|kv| match kv {
                    [k, v] => Some((k.clone(), v.clone())),
                    _ => None,
                })
                .collect();
            out.push(Entry { id, fields });
        }
        start = format!("({last}");
    }
    out
}

/// Every key under the four prefixes in every database of the server on `port`.
fn dump(port: u16) -> Result<Dump, String> {
    let mut c = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
        .and_then(|cl| cl.get_connection_with_timeout(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    c.set_read_timeout(Some(Duration::from_secs(60))).ok();
    let dbs: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("databases")
        .query(&mut c)
        .map_err(|e| e.to_string())?;
    let dbs: u32 = dbs.get(1).and_then(|n| n.parse().ok()).unwrap_or(16);
    let mut out = Dump::new();
    for db in 0..dbs {
        redis::cmd("SELECT")
            .arg(db)
            .query::<()>(&mut c)
            .map_err(|e| e.to_string())?;
        let mut names = Vec::new();
        let mut cursor = 0u64;
        loop {
            let (next, batch): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg("quantum:*")
                .arg("COUNT")
                .arg(5000)
                .query(&mut c)
                .map_err(|e| e.to_string())?;
            names.extend(
                batch
                    .into_iter()
                    .filter(|k| PREFIXES.iter().any(|p| k.starts_with(p))),
            );
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        names.sort();
        names.dedup();
        for chunk in names.chunks(1000) {
            let mut p = redis::pipe();
            for k in chunk {
                p.cmd("TYPE").arg(k).cmd("PEXPIRETIME").arg(k);
            }
            let meta: Vec<Value> = p.query(&mut c).map_err(|e| e.to_string())?;
            let mut p = redis::pipe();
            let mut kinds = Vec::new();
            for (k, m) in chunk.iter().zip(meta.chunks(2)) {
                let t = match &m[0] {
                    Value::SimpleString(s) => s.clone(),
                    Value::Okay => "OK".into(),
                    other => format!("{other:?}"),
                };
                let at = match &m[1] {
                    Value::Int(n) => *n,
                    _ => -4,
                };
                match t.as_str() {
                    "hash" => p.cmd("HGETALL").arg(k),
                    "string" => p.cmd("GET").arg(k),
                    _ => p.cmd("ECHO").arg(&t),
                };
                kinds.push((k.clone(), t, at));
            }
            let values: Vec<Value> = p.query(&mut c).map_err(|e| e.to_string())?;
            for ((k, t, at), v) in kinds.into_iter().zip(values) {
                let val = match t.as_str() {
                    "hash" => {
                        let pairs: Vec<(Vec<u8>, Vec<u8>)> =
                            redis::from_redis_value(&v).map_err(|e| e.to_string())?;
                        Val::Hash(pairs.into_iter().collect())
                    }
                    "string" => Val::Str(redis::from_redis_value(&v).map_err(|e| e.to_string())?),
                    "none" => continue,
                    other => Val::Other(other.to_string()),
                };
                out.insert((db, k), (val, at));
            }
        }
    }
    Ok(out)
}

fn show_val(v: &KeyState) -> String {
    let (val, at) = v;
    let body = match val {
        Val::Hash(h) => {
            let mut s: Vec<String> = h
                .iter()
                .map(|(k, v)| format!("{}={}", show(k), show(v)))
                .collect();
            if s.len() > 12 {
                let n = s.len();
                s.truncate(12);
                s.push(format!("...({n} fields)"));
            }
            format!("hash{{{}}}", s.join(" "))
        }
        Val::Str(s) => format!("{:?}", show(s)),
        Val::Other(t) => format!("<{t}>"),
    };
    format!("{body} @{at}")
}

/// Lines for every difference between `want` and `got`: (missing, extra, different) counts
/// and up to `limit` described.
fn diff(want: &Dump, got: &Dump, limit: usize) -> (usize, usize, usize, Vec<String>) {
    let mut lines = Vec::new();
    let (mut missing, mut extra, mut differ) = (0, 0, 0);
    for (k, v) in want {
        match got.get(k) {
            None => {
                missing += 1;
                if lines.len() < limit {
                    lines.push(format!(
                        "missing db{} {}: want {}",
                        k.0,
                        show(&k.1),
                        show_val(v)
                    ));
                }
            }
            Some(g) if g != v => {
                differ += 1;
                if lines.len() < limit {
                    lines.push(format!(
                        "differs db{} {}:\n      want {}\n      got  {}",
                        k.0,
                        show(&k.1),
                        show_val(v),
                        show_val(g)
                    ));
                }
            }
            Some(_) => {}
        }
    }
    for (k, v) in got {
        if !want.contains_key(k) {
            extra += 1;
            if lines.len() < limit {
                lines.push(format!("extra db{} {}: {}", k.0, show(&k.1), show_val(v)));
            }
        }
    }
    (missing, extra, differ, lines)
}

/// For a latest key that differs: which entry the model wants, which entry the key holds
/// (found by its fields among the symbol's entries), and how many entries share each one's
/// millisecond.
fn explain_latest(m: &Model, sym: &[u8], got: Option<&KeyState>) -> String {
    let Some(&want) = m.latest.get(sym) else {
        return format!("latest {}: the model has no latest", show(sym));
    };
    let same_ms = |i: usize| {
        let ms = m.entries[i].id.ms;
        m.entries.iter().filter(|e| e.id.ms == ms).count()
    };
    let held = got.and_then(|(v, _)| match v {
        Val::Hash(h) => (0..m.entries.len()).rev().find(|&i| {
            m.parse(i).is_some_and(|(p, s)| {
                s == sym && {
                    let mut mine = hash_of(&m.entries[i].fields);
                    mine.insert(projection::LAST_PLAN_ID_FIELD.to_vec(), p);
                    &mine == h
                }
            })
        }),
        _ => None,
    });
    let w = &m.entries[want];
    let mut s = format!(
        "latest {}: want entry {} ({} entries in its ms), ",
        show(sym),
        w.id,
        same_ms(want)
    );
    match held {
        Some(h) => {
            let e = &m.entries[h];
            let between = m.entries[h + 1..=want.max(h)]
                .iter()
                .filter(|x| m.keys.parse(x.id, &x.fields).is_ok_and(|d| d.symbol == sym))
                .count();
            let dup = m
                .parse(h)
                .map(|(p, _)| m.dedupe.get(&p) != Some(&h))
                .unwrap_or(false);
            s.push_str(&format!(
                "holds entry {} ({} entries in its ms; {} valid entries of the symbol after \
                 it up to the wanted one; projected in the model: {})",
                e.id,
                same_ms(h),
                between,
                !dup
            ));
        }
        None => s.push_str("holds no entry of the symbol with those fields"),
    }
    let near: Vec<String> = m
        .replays
        .iter()
        .filter(|r| r.from < w.id && w.id <= r.last)
        .map(|r| format!("#{}", r.op))
        .collect();
    if !near.is_empty() {
        s.push_str(&format!(
            "; the wanted entry was replayed by {}",
            near.join(",")
        ));
    }
    s
}

// ---- quiescence and checks ------------------------------------------------------------------

fn info_field(port: u16, field: &str) -> Option<String> {
    let mut c = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
        .and_then(|cl| cl.get_connection_with_timeout(Duration::from_secs(5)))
        .ok()?;
    c.set_read_timeout(Some(REPLY_TIMEOUT)).ok();
    let text: String = redis::cmd("INFO").arg("replication").query(&mut c).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|s| s.trim().to_string())
}

/// One server's summary.
struct Summary {
    ops: u64,
    entries: [usize; 2],
    valid: [usize; 2],
    duplicates: [usize; 2],
    keys: usize,
    replays: usize,
    checkpoints: u64,
    counts: BTreeMap<&'static str, u64>,
    secs: f64,
}

fn quiesce(w: &mut World) {
    w.producer = None;
    let _: Result<(), String> = w.q(Who::Operator, &cmd(&["CLIENT", "UNPAUSE"]));
    for (name, value) in [("stream-in", STREAMS.join(",")), ("db", "0".into())] {
        if let Err(e) = w.config(name, &value) {
            w.fail(&format!(
                "quiesce: CONFIG SET heatbridge.{name} {value}: {e}"
            ));
        }
    }
    w.settings.listed = vec![0, 1];
    w.settings.db = 0;
    for s in 0..2 {
        w.wait_drained(s);
    }
    // The replica: linked, not syncing, and past the master's whole replication stream.
    let deadline = Instant::now() + QUIET_TIMEOUT;
    let (mp, rp) = (w.master.port, w.replica.port);
    loop {
        let target: i64 = info_field(mp, "master_repl_offset")
            .and_then(|v| v.parse().ok())
            .unwrap_or(i64::MAX);
        let up = info_field(rp, "master_link_status").as_deref() == Some("up")
            && info_field(rp, "master_sync_in_progress").as_deref() == Some("0");
        let reached: i64 = info_field(rp, "slave_repl_offset")
            .and_then(|v| v.parse().ok())
            .unwrap_or(-1);
        if up && reached >= target {
            w.note = format!("replica at offset {reached} of {target}");
            break;
        }
        if Instant::now() > deadline {
            w.fail(&format!(
                "quiesce: the replica did not catch up in {QUIET_TIMEOUT:?}: link up {up}, \
                 offset {reached} of {target}"
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn check(w: &mut World, started: Instant) -> Summary {
    // Streams first, then the keys: nothing writes at rest, so the two agree.
    let mut c = w.master.conn();
    for m in w.models.iter_mut() {
        m.feed(&mut c);
    }
    let now = server_now_ms(&mut c);
    let mut want = Dump::new();
    for m in &w.models {
        want.extend(m.expected(now));
    }
    let got = dump(w.master.port).unwrap_or_else(|e| w.fail(&format!("reading the master: {e}")));
    let (missing, extra, differ, mut lines) = diff(&want, &got, 20);
    if missing + extra + differ > 0 {
        // Explain the latest keys that differ.
        for m in &w.models {
            for sym in m.latest.keys() {
                let k = (0, m.keys.latest(sym));
                if got.get(&k) != want.get(&k) {
                    lines.push(explain_latest(m, sym, got.get(&k)));
                }
            }
        }
        lines.truncate(60);
        let why = format!(
            "the master's keys differ from the model: {missing} missing, {extra} extra, {differ} \
             different (of {} wanted); entries untagged {} tagged {}\n  {}",
            want.len(),
            w.models[0].entries.len(),
            w.models[1].entries.len(),
            lines.join("\n  ")
        );
        w.fail(&why);
    }
    let on_replica =
        dump(w.replica.port).unwrap_or_else(|e| w.fail(&format!("reading the replica: {e}")));
    let (missing, extra, differ, lines) = diff(&got, &on_replica, 20);
    if missing + extra + differ > 0 {
        w.fail(&format!(
            "the replica differs from the master: {missing} keys missing, {extra} extra, \
             {differ} different\n  {}",
            lines.join("\n  ")
        ));
    }
    // The streams too.
    for stream in STREAMS {
        let on_master = stream_field(w.conn(Who::Operator), stream, "last-generated-id");
        let len_m: i64 = w.q(Who::Operator, &cmd(&["XLEN", stream])).unwrap_or(-1);
        let on_r: Option<String> = {
            let port = w.replica.port;
            redis::Client::open(format!("redis://127.0.0.1:{port}/"))
                .and_then(|cl| cl.get_connection_with_timeout(Duration::from_secs(5)))
                .ok()
                .and_then(|mut c| stream_field(&mut c, stream, "last-generated-id"))
        };
        let len_r: i64 = w.on_replica(&cmd(&["XLEN", stream])).unwrap_or(-1);
        if (on_master.clone(), len_m) != (on_r.clone(), len_r) {
            w.fail(&format!(
                "{stream}: master has {len_m} entries up to {on_master:?}, the replica {len_r} \
                 up to {on_r:?}"
            ));
        }
    }
    let pick = |f: fn(&Model) -> usize| [f(&w.models[0]), f(&w.models[1])];
    Summary {
        ops: w.ops,
        entries: pick(|m| m.entries.len()),
        valid: pick(|m| m.valid),
        duplicates: pick(|m| m.duplicates),
        keys: want.len(),
        replays: w.models[0].replays.len() + w.models[1].replays.len(),
        checkpoints: w.checkpoints,
        counts: std::mem::take(&mut w.counts),
        secs: started.elapsed().as_secs_f64(),
    }
}

fn run(flavor: Flavor, seed: u64, secs: u64) -> Summary {
    let started = Instant::now();
    let mut w = World::new(flavor, seed);
    let limit = env_u64("MODEL_OPS");
    let deadline = started + Duration::from_secs(secs);
    loop {
        let done = match limit {
            Some(n) => w.ops >= n,
            None => Instant::now() >= deadline,
        };
        if done {
            break;
        }
        let op = w.pick();
        w.apply(op);
    }
    quiesce(&mut w);
    check(&mut w, started)
}

#[test]
fn projection_matches_the_model() {
    let seed = seed();
    let secs = env_u64("MODEL_SECS").unwrap_or(30);
    eprintln!("model: seed={seed} secs={secs} (replay: MODEL_SEED={seed})");
    let failed = std::cell::RefCell::new(Vec::new());
    for_each_flavor(|flavor| {
        // One server's failure must not hide what the others would find.
        let outcome =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(flavor, seed, secs)));
        match outcome {
            Ok(s) => {
                let kinds: Vec<String> = s.counts.iter().map(|(k, n)| format!("{k}={n}")).collect();
                eprintln!(
                    "model {flavor:?}: seed={seed} ops={} in {:.1}s; entries untagged={} \
                     (valid {}, duplicates {}) tagged={} (valid {}, duplicates {}); keys={}; \
                     replays={}; checkpoints={}; {}",
                    s.ops,
                    s.secs,
                    s.entries[0],
                    s.valid[0],
                    s.duplicates[0],
                    s.entries[1],
                    s.valid[1],
                    s.duplicates[1],
                    s.keys,
                    s.replays,
                    s.checkpoints,
                    kinds.join(" ")
                );
            }
            Err(_) => failed.borrow_mut().push(flavor),
        }
    });
    let failed = failed.into_inner();
    assert!(
        failed.is_empty(),
        "model check failed on {failed:?} with seed={seed} (replay: MODEL_SEED={seed}); see the \
         reports above"
    );
}

/// The smallest reproduction of the defect the `replay_rewind` op found. Plan Q is projected
/// first for symbol S (entry 1, latest of S); a later entry of Q for symbol T is a duplicate.
/// REPLAY of that entry alone used to make Q's dedupe key hold it, and a rewind of the group
/// to 0 then re-read entry 1 as a duplicate, so the pass's newest entry of S was entry 0 and
/// latest of S went back to it. REPLAY now leaves the dedupe key on the earliest entry.
#[test]
fn latest_stays_after_replay_and_rewind() {
    for_each_flavor(|flavor| {
        let s = Options::new(flavor).without_exporter().start();
        let mut c = s.conn();
        let e0 = xadd(&mut c, STREAM, "*", &decision("S", "R", &[]));
        let e1 = xadd(&mut c, STREAM, "*", &decision("S", "Q", &[]));
        let e2 = xadd(&mut c, STREAM, "*", &decision("T", "Q", &[]));
        wait_drained(&mut c);
        assert_eq!(
            get(&mut c, "quantum:harvest:heat:latest_plan_id:S").as_deref(),
            Some("Q")
        );
        let (n, last): (u64, String) = redis::cmd("HEATBRIDGE.REPLAY")
            .arg("FROM")
            .arg(&e1)
            .arg("COUNT")
            .arg(1)
            .query(&mut c)
            .expect("REPLAY");
        assert_eq!((n, last.as_str()), (1, e2.as_str()));
        assert_eq!(
            get(&mut c, "quantum:dedupe:p27:Q").as_deref(),
            Some(e1.as_str()),
            "REPLAY leaves the dedupe key on the earliest projected entry"
        );
        assert_eq!(
            hget(&mut c, "quantum:harvest:heat:by_plan:Q", "symbol").as_deref(),
            Some("T"),
            "REPLAY writes by_plan ignoring dedupe"
        );
        let _: () = redis::cmd("XGROUP")
            .arg("SETID")
            .arg(STREAM)
            .arg("heat_bridge")
            .arg("0")
            .query(&mut c)
            .expect("XGROUP SETID");
        wait_drained(&mut c);
        assert_eq!(
            get(&mut c, "quantum:harvest:heat:latest_plan_id:S").as_deref(),
            Some("Q"),
            "latest of S went back from entry {e1} to {e0} on {flavor:?}"
        );
    });
}
