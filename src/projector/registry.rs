//! One projector per input stream, and the registry that holds them.
//!
//! A projector holds everything that projecting one stream needs between callbacks: the
//! stream's and group's names (and their Redis strings, kept for the life of the projector),
//! and its fast-path state ([`FastPath`]: the known group and the XADD arguments kept from
//! commands). The registry is built from the settings (`heatbridge.stream-in`,
//! `heatbridge.group`) in one place, [`sync`], and rebuilt whenever they change.
//!
//! The registry is reached only from the server's main thread (callbacks, the command
//! filter, commands), under a lock that is never held across a call into the server that
//! could call back into HeatBridge: a pass takes what it trusts at its start and gives back
//! what it learned at its end.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};

use redis_module::{Context, ContextFlags};

use crate::core::clock::now_ms;
use crate::core::fastpath::{FastPath, Known, Trusted, Wanted};
use crate::core::health::{StreamHealth, StreamState};
use crate::core::projection::Keys;
use crate::exporter::state;
use crate::projector::capture::{self, Command};
use crate::projector::group::{self, Target};
use crate::projector::host::{self, Db};
use crate::projector::read;
use crate::projector::writer::Kept;
use crate::settings::config::{self, Settings};
use crate::support::logging;

/// One stream's projector.
pub struct Projector {
    /// The stream's name.
    pub stream: Arc<str>,
    /// The group's name.
    pub group: Arc<str>,
    stream_key: Kept,
    group_key: Kept,
    keys: Keys,
    /// The fast path's state for this stream.
    pub fast: FastPath<Command>,
    /// Why this stream is not projected although listed (no hash tag in a cluster).
    problem: Option<String>,
    /// Whether a pass should look at the stream when it drains only what is due: an XADD,
    /// a change or a forgotten state since its last pass, or entries left by it.
    due: bool,
    /// Passes over this stream that failed in a row.
    failing: u64,
    /// The last pass left entries: a catch-up is under way.
    behind: bool,
    /// XADDs on the stream since its last pass began, on a server that may write. Their
    /// replies wait for the next pass, which therefore handles at least this many entries
    /// whatever its time budget (the budget bounds catch-up, not the work the XADDs did).
    owed: u64,
}

impl Projector {
    fn new(stream: &str, group: &Arc<str>, cluster: bool) -> Projector {
        let untagged = cluster && crate::core::projection::hash_tag(stream.as_bytes()).is_none();
        Projector {
            problem: untagged
                .then(|| format!("{}: not projected", config::untagged_stream_error(stream))),
            stream: Arc::from(stream),
            group: Arc::clone(group),
            stream_key: Kept::new(stream.as_bytes()),
            group_key: Kept::new(group.as_bytes()),
            keys: Keys::of_stream(stream.as_bytes()),
            fast: FastPath::default(),
            due: true,
            failing: 0,
            behind: false,
            owed: 0,
        }
    }

    /// The stream and group, for one pass or command (the names are shared, not copied).
    pub fn target(&self, consumer: &Arc<str>) -> Target {
        Target {
            stream: Arc::clone(&self.stream),
            group: Arc::clone(&self.group),
            consumer: Arc::clone(consumer),
            stream_key: self.stream_key.retained(),
            group_key: self.group_key.retained(),
            keys: self.keys.clone(),
        }
    }
}

struct Registry {
    /// `heatbridge.stream-in`, `heatbridge.group` and the cluster mode as the projectors
    /// were built from them.
    built_from: Option<(Arc<str>, Arc<str>, bool)>,
    projectors: Vec<Projector>,
    /// Each projector's position in `projectors`, by stream name: a list of thousands of
    /// streams is not searched on every XADD.
    index: Option<HashMap<String, usize>>,
    /// Where the next callback starts among the streams catching up: the first one that
    /// waited when the last callback ran out of time.
    rotation: usize,
}

impl Registry {
    fn position(&self, stream: &[u8]) -> Option<usize> {
        // A few streams are found faster by comparing names than by hashing one.
        if self.projectors.len() <= LINEAR_SEARCH_MAX {
            return self
                .projectors
                .iter()
                .position(|p| p.stream.as_bytes() == stream);
        }
        let name = std::str::from_utf8(stream).ok()?;
        self.index.as_ref()?.get(name).copied()
    }

    fn get_mut(&mut self, stream: &[u8]) -> Option<&mut Projector> {
        let i = self.position(stream)?;
        self.projectors.get_mut(i)
    }
}

/// Up to this many streams, a projector is found by comparing names; past it, through the
/// index.
const LINEAR_SEARCH_MAX: usize = 16;

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    built_from: None,
    projectors: Vec::new(),
    index: None,
    rotation: 0,
});

fn registry() -> MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether passes may trust a known group at all: only with the command filter that keeps
/// it honest.
static TRUST_KNOWN: AtomicBool = AtomicBool::new(true);

/// Never trust a known group (the server has no command filters).
pub fn distrust_known_group() {
    TRUST_KNOWN.store(false, Relaxed);
    forget_all();
}

/// Module load: no projector yet (the first use builds them), the known group trusted.
pub fn reset() {
    TRUST_KNOWN.store(true, Relaxed);
    let mut r = registry();
    r.built_from = None;
    r.projectors.clear();
    r.index = None;
    r.rotation = 0;
}

/// Builds the projectors from `s` unless they were built from the same settings: one per
/// listed stream, in the order listed.
pub fn sync(s: &Settings) {
    let cluster = config::cluster();
    let mut r = registry();
    let fresh = r.built_from.as_ref().is_some_and(|(stream, group, c)| {
        *stream == s.stream && *group == s.group && *c == cluster
    });
    if fresh {
        return;
    }
    r.projectors = s
        .streams()
        .iter()
        .map(|name| Projector::new(name, &s.group, cluster))
        .collect();
    r.index = Some(
        r.projectors
            .iter()
            .enumerate()
            .map(|(i, p)| (p.stream.to_string(), i))
            .collect(),
    );
    r.rotation = 0;
    r.built_from = Some((s.stream.clone(), s.group.clone(), cluster));
}

/// The streams one drain pass should visit, in the order they share the callback's time:
/// first those with a live XADD and no catch-up under way, in the order listed, then the
/// streams catching up, from the first one that waited last time (see [`waited`]). With
/// `only_due`, only streams with something due; otherwise every projectable stream.
pub fn pass_order(only_due: bool) -> (Vec<Arc<str>>, Vec<Arc<str>>) {
    let r = registry();
    let n = r.projectors.len();
    let start = if n == 0 { 0 } else { r.rotation % n };
    let mut live = Vec::new();
    let mut behind = Vec::new();
    for i in (start..n).chain(0..start) {
        let Some(p) = r.projectors.get(i) else {
            continue;
        };
        if p.problem.is_some() || (only_due && !p.due) {
            continue;
        }
        if p.behind {
            behind.push(Arc::clone(&p.stream));
        } else {
            live.push(Arc::clone(&p.stream));
        }
    }
    // Streams with a live XADD keep the order listed: the rotation is for catch-ups.
    live.sort_by_key(|name| r.position(name.as_bytes()));
    (live, behind)
}

/// The callback ran out of time before `stream`'s turn: the next one starts with it.
pub fn waited(stream: &str) {
    let mut r = registry();
    if let Some(i) = r.position(stream.as_bytes()) {
        r.rotation = i;
    }
}

/// The stream a command names (`STREAM <stream>`, or none), as a target: the stream must be
/// listed; without one, a standalone server takes the first listed stream and a cluster node
/// refuses (the stream decides the node).
pub fn target_for(name: Option<&[u8]>, consumer: &Arc<str>) -> Result<Target, String> {
    sync(&config::current());
    let r = registry();
    let p = match name {
        Some(name) => r
            .position(name)
            .and_then(|i| r.projectors.get(i))
            .ok_or_else(|| {
                format!(
                    "ERR HEATBRIDGE: {} is not in heatbridge.stream-in",
                    logging::show_bytes(name)
                )
            })?,
        None if config::cluster() => {
            return Err(
                "ERR HEATBRIDGE: name the stream with STREAM <stream> in a cluster".to_string(),
            )
        }
        None => r
            .projectors
            .first()
            .ok_or_else(|| "ERR HEATBRIDGE: heatbridge.stream-in names no stream".to_string())?,
    };
    Ok(p.target(consumer))
}

/// Runs `f` on the projector of stream `name`, if there is one. A stream of the settings
/// that no projector has yet (just set with CONFIG SET) syncs the registry first. (A
/// projector of a stream the settings no longer list may still answer until the next pass
/// syncs the registry: harmless, the pass drops it.)
pub fn with_stream<R>(name: &[u8], f: impl FnOnce(&mut Projector) -> R) -> Option<R> {
    let mut r = registry();
    if r.position(name).is_none() {
        // Not a stream the projectors were built for: one just listed by CONFIG SET syncs
        // them; any other key is not ours.
        drop(r);
        if !config::STREAM_IN.lists(name) {
            return None;
        }
        sync(&config::current());
        r = registry();
    }
    r.get_mut(name).map(f)
}

/// Forgets every projector's fast-path state: the next passes read the group and entries.
pub fn forget_all() {
    for p in registry().projectors.iter_mut() {
        p.fast.forget();
        p.due = true;
    }
}

/// Drops the XADDs counted for the next passes (a load or a role change: the XADDs of a
/// replica or of a server that was loading are not served, and a pass after a promotion must
/// not take them for XADDs waiting for their replies).
pub fn forget_owed() {
    for p in registry().projectors.iter_mut() {
        p.owed = 0;
    }
}

/// The command filter saw a command, `xadd_key` being the key of an XADD. Drops the XADD
/// arguments kept for a command that was refused, and keeps those of this XADD when its
/// stream's next pass may take them (`keep` holds them).
pub fn command_seen(xadd_key: Option<&[u8]>, keep: impl FnOnce() -> Option<Command>) {
    let mut r = registry();
    for p in r.projectors.iter_mut() {
        p.fast.command_seen();
    }
    let Some(key) = xadd_key else { return };
    if !capture::enabled() || !config::fast_path() {
        return;
    }
    let Some(p) = r.get_mut(key) else {
        return;
    };
    match p.fast.wants_xadd(crate::core::fastpath::MAX_TAKEN) {
        Wanted::Yes => {
            if let Some(c) = keep() {
                p.fast.xadd_kept(c);
            }
        }
        Wanted::Full => p.fast.xadd_not_kept(),
        Wanted::No => {}
    }
}

/// Forgets the fast-path state of the projectors whose stream `names` names.
pub fn forget_named(names: impl Fn(&[u8]) -> bool) {
    for p in registry().projectors.iter_mut() {
        if names(p.stream.as_bytes()) {
            p.fast.forget();
            p.due = true;
        }
    }
}

/// The `xadd` event for stream `key`. Returns whether a drain should be scheduled (the key
/// is a projected stream and the server may write).
pub fn xadd_event(ctx: &Context, key: &[u8]) -> bool {
    let f = ctx.get_flags();
    let writable = host::writable(&f);
    // An XADD that EXEC runs: the transaction's other commands passed the command filter
    // when they were queued, not when they run (and on Valkey a postponed EXEC does not pass
    // it again).
    let in_exec = f.contains(ContextFlags::MULTI);
    with_stream(key, |p| {
        p.due = true;
        if writable {
            p.owed = p.owed.saturating_add(1);
        }
        p.fast
            .xadd_event(writable, in_exec, |c| c.is_key_of_event(key))
    })
    .is_some()
        && writable
}

/// A stream event other than `xadd` on stream `key`.
pub fn stream_changed(key: &[u8]) {
    with_stream(key, |p| {
        p.due = true;
        p.fast.stream_changed()
    });
}

/// What a pass over one stream starts from; see [`begin_pass`].
pub struct PassStart {
    /// What the fast path lets the pass trust.
    pub trusted: Trusted<Command>,
    /// The stream and its group.
    pub target: Target,
    /// Entries the pass handles whatever its budget: one per XADD since the last pass.
    pub owed: u64,
}

/// A pass over stream `stream` begins: what it may trust, its target and the XADDs it
/// serves. `None` when the stream is not projected, or when `only_due` and nothing is due
/// on it (see [`Projector::due`]): a pass after one XADD looks at that XADD's stream only.
pub fn begin_pass(stream: &str, consumer: &Arc<str>, only_due: bool) -> Option<PassStart> {
    let trust = TRUST_KNOWN.load(Relaxed) && config::fast_path();
    let take_commands = trust && capture::enabled();
    let mut r = registry();
    let p = r
        .get_mut(stream.as_bytes())
        .filter(|p| p.problem.is_none() && (p.due || !only_due))?;
    p.due = false;
    Some(PassStart {
        trusted: p.fast.begin_pass(trust, take_commands),
        target: p.target(consumer),
        owed: std::mem::take(&mut p.owed),
    })
}

/// Whether XADDs on `stream` wait for its next pass (then it never waits for a later
/// callback: their replies would leave before their keys exist).
pub fn owed(stream: &str) -> bool {
    let r = registry();
    r.position(stream.as_bytes())
        .and_then(|i| r.projectors.get(i))
        .is_some_and(|p| p.owed > 0 && p.problem.is_none())
}

/// How a pass over a stream ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every entry after the cursor was handled.
    Done,
    /// Entries remain: the stream stays due.
    More,
    /// The pass failed: the tick retries it.
    Failed,
}

/// A pass over `stream` ended, leaving `known` when it ended clean. Publishes the longest
/// run of failed passes over any stream (health turns `error` after a few).
pub fn end_pass(stream: &str, known: Option<Known>, outcome: Outcome) {
    let trust = TRUST_KNOWN.load(Relaxed) && config::fast_path();
    let mut r = registry();
    if let Some(p) = r.get_mut(stream.as_bytes()) {
        p.fast.end_pass(known.filter(|_| trust));
        p.due |= outcome == Outcome::More;
        p.behind = outcome == Outcome::More;
        p.failing = if outcome == Outcome::Failed {
            p.failing + 1
        } else {
            0
        };
    }
    let worst = r.projectors.iter().map(|p| p.failing).max().unwrap_or(0);
    drop(r);
    state::published().failing_passes = worst;
}

/// Whether this node projects the stream of `t` now: a master, and in a cluster the owner
/// of the stream's slot (the server refuses a module's call on a key of a slot the node does
/// not own, so nothing could be written there anyway).
pub fn owns(ctx: &Context, t: &Target) -> bool {
    host::can_write(ctx)
        && (!config::cluster() || crate::projector::call::owns_key(ctx, &t.stream_key))
}

/// Reads each stream's state, ownership and backlog (unread + pending), and publishes them.
pub fn refresh(ctx: &Context) {
    host::publish_role(ctx);
    if ctx.get_flags().contains(ContextFlags::LOADING) {
        return;
    }
    let s = config::current();
    sync(&s);
    let Some(_db) = Db::select(ctx, s.db) else {
        publish_db_problem(&s);
        return;
    };
    let targets: Vec<(Target, Option<String>)> = registry()
        .projectors
        .iter()
        .map(|p| (p.target(&s.consumer), p.problem.clone()))
        .collect();
    let mut streams = Vec::with_capacity(targets.len());
    let mut total: Option<u64> = Some(0);
    for (t, problem) in &targets {
        let owned = problem.is_none() && owns(ctx, t);
        let (st, _) = read::stream_shape(ctx, &t.stream_key);
        let backlog = match st {
            _ if problem.is_some() => None,
            StreamState::Stream => match group::read_group(ctx, t) {
                Ok(Some(g)) => Some(
                    g.pending
                        + g.lag
                            .unwrap_or_else(|| read::count_after(ctx, &t.stream_key, g.last_id)),
                ),
                Ok(None) => Some(group::stream_len(ctx, t)),
                Err(_) => None,
            },
            StreamState::WrongType => None,
            _ => Some(0),
        };
        if owned {
            total = total.zip(backlog).map(|(a, b)| a + b);
        }
        streams.push(StreamHealth {
            name: t.stream.to_string(),
            state: st,
            backlog,
            owned,
            problem: problem.clone(),
        });
    }
    let first = streams.first().map_or(StreamState::Unknown, |st| st.state);
    publish_stream_state(first, targets.first().map_or("", |(t, _)| &*t.stream));
    let acknowledged = crate::core::metrics::METRICS.snapshot().in_messages;
    let now = now_ms();
    let mut p = state::published();
    p.streams = streams;
    p.record_backlog(now, total);
    p.record_progress(now, acknowledged);
}

/// Health when `heatbridge.db` names a database the server does not have: every stream in
/// error.
fn publish_db_problem(s: &Settings) {
    let problem = crate::projector::host::no_such_db(s.db);
    let streams = s
        .streams()
        .into_iter()
        .map(|name| StreamHealth {
            name,
            problem: Some(problem.clone()),
            ..StreamHealth::default()
        })
        .collect();
    let mut p = state::published();
    p.streams = streams;
    p.record_backlog(now_ms(), None);
}

/// Publishes the state of the stream key, logging when it turns into another type.
pub fn publish_stream_state(st: StreamState, stream: &str) {
    let previous = std::mem::replace(&mut state::published().stream_state, st);
    // Logged after the lock is released, so the exporter never waits on a log write.
    if st == StreamState::WrongType && previous != StreamState::WrongType {
        logging::error(&format!(
            "key {stream} is not a stream: projection is paused until it is"
        ));
    }
}
