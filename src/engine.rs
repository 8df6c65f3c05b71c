//! The drain: read from the group cursor, write the lookup keys, advance the group.
//!
//! A drain step reads at most `heatbridge.batch` entries. It first finishes the entries that
//! are pending for `heatbridge.consumer` (left by the sidecar, for example), then reads the
//! entries after the group's last-delivered ID with the stream iterator and projects them in
//! stream order. The steps of one drain pass (one callback, at most [`STEP_BUDGET`]) share
//! one read of the group, one write of latest per symbol and one move of the group cursor
//! with `XGROUP SETID`, at the end, so nothing is pending and the lag is 0 afterwards. If a
//! write fails, the cursor stops before that entry, which stays in the backlog and is
//! retried on the next tick (at-least-once; projection is idempotent).
//!
//! Every write goes through a replicated call, so replicas and the AOF receive the writes
//! after the XADD that caused them. Only a writable master that is not loading drains.

use std::collections::HashMap;
use std::ffi::c_void;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use redis_module::{
    raw, CallOptions, CallOptionsBuilder, CallReply, CallResult, Context, ContextFlags, RedisString,
};

use crate::apply::{self, read_opts, Writer};
use crate::call;
use crate::capture;
use crate::clock::now_ms;
use crate::config::{self, Settings};
use crate::decision::{self, EntryId, Invalid};
use crate::guard;
use crate::health::StreamState;
use crate::ids::IdWalk;
use crate::logging::{self, RateLimit};
use crate::metrics::{Stage, METRICS};
use crate::projection::{self, Dedupe};
use crate::state;

impl decision::Bytes for RedisString {
    fn bytes(&self) -> &[u8] {
        self.as_slice()
    }
}

pub use crate::apply::rstr;

/// Longest a drain keeps the event loop before it yields to clients.
pub const STEP_BUDGET: Duration = Duration::from_millis(5);

/// Entries one step re-reads when finishing pending entries.
const MAX_PENDING_READ: usize = 1000;

/// Whether a drain timer is pending (at rest there is none).
static TIMER_PENDING: AtomicBool = AtomicBool::new(false);
/// The pending drain timer, while `TIMER_PENDING`.
static TIMER_ID: AtomicU64 = AtomicU64::new(0);
/// Whether a post-notification job is pending.
static JOB_PENDING: AtomicBool = AtomicBool::new(false);
/// 0 unknown, 1 the server has post-notification jobs, 2 it does not.
static POST_JOBS: AtomicU8 = AtomicU8::new(0);
/// Wall ms of the last housekeeping tick.
static LAST_TICK_MS: AtomicU64 = AtomicU64::new(NEVER);

/// No housekeeping tick yet: the first one runs at once (it starts catch-up at load).
const NEVER: u64 = u64::MAX;

/// The group as the last clean pass left it; see [`Known`].
static KNOWN: Mutex<Option<Known>> = Mutex::new(None);
/// True while a drain pass runs: the stream events it causes (its own XGROUP calls) are not
/// changes made behind its back.
static IN_PASS: AtomicBool = AtomicBool::new(false);

/// The group as the last drain pass left it, when that pass ended at the end of the stream
/// with nothing pending. A later pass trusts it instead of reading the group (XINFO GROUPS,
/// the largest fixed cost of a one-entry pass) only while nothing but XADDs touched the
/// stream since. That is checked three ways:
/// - every stream event on the key other than xadd (XDEL, XTRIM, XSETID, any XGROUP
///   subcommand), a role change and a load forget it. So does every housekeeping tick, so a
///   change that no event reports (another reader's XREADGROUP or XCLAIM) is seen within
///   poll-ms, as before;
/// - the stream must hold exactly `len` entries plus the XADDs counted since, and exactly
///   that many must follow `last`. A stream deleted and recreated (DEL, FLUSHALL, expiry,
///   eviction) holds at most the XADDs since and fails it, and so does any other stream put
///   in its place (RENAME, RESTORE, SWAPDB) unless it is a copy of this one at this point;
/// - the cursor move at the end of the pass must succeed, so the group must exist.
///
/// Generic keyspace events would say more, but subscribing to them makes Valkey 8.1 leave
/// clients on the wrong database after COPY ... DB and MOVE.
#[derive(Debug, Clone)]
struct Known {
    stream: String,
    group: String,
    /// The newest entry of the stream; the cursor is on it (or on a deleted later ID).
    last: EntryId,
    /// The stream's length then.
    len: u64,
    /// The group's read counter then.
    entries_read: u64,
    /// XADDs on the stream since.
    xadds: u64,
}

fn known() -> std::sync::MutexGuard<'static, Option<Known>> {
    KNOWN.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether a pass may remember the group at all (not without the command filter).
static TRUST_KNOWN: AtomicBool = AtomicBool::new(true);

/// Forgets the known group: the next pass reads it.
pub fn forget_group() {
    *known() = None;
    capture::clear();
}

/// Never remember the group (the server has no command filters to keep it honest).
pub fn distrust_known_group() {
    TRUST_KNOWN.store(false, Relaxed);
    forget_group();
}

/// A stream event other than xadd on the input stream.
pub fn on_stream_change() {
    if !IN_PASS.load(Relaxed) {
        forget_group();
    }
}

/// Marks a drain pass as running, until dropped.
struct InPass;

impl InPass {
    fn enter() -> InPass {
        IN_PASS.store(true, Relaxed);
        InPass
    }
}

impl Drop for InPass {
    fn drop(&mut self) {
        IN_PASS.store(false, Relaxed);
    }
}

static INVALID_LOG: RateLimit = RateLimit::new(1000);
static ERROR_LOG: RateLimit = RateLimit::new(1000);

/// Resets scheduling state (module load; statics survive an unload).
pub fn reset() {
    TRUST_KNOWN.store(true, Relaxed);
    forget_group();
    IN_PASS.store(false, Relaxed);
    TIMER_PENDING.store(false, Relaxed);
    JOB_PENDING.store(false, Relaxed);
    POST_JOBS.store(0, Relaxed);
    LAST_TICK_MS.store(NEVER, Relaxed);
}

/// Whether post-notification jobs are in use (known after the first XADD).
pub fn post_jobs_in_use() -> Option<bool> {
    match POST_JOBS.load(Relaxed) {
        1 => Some(true),
        2 => Some(false),
        _ => None,
    }
}

/// Whether a drain timer is pending right now.
pub fn timer_pending() -> bool {
    TIMER_PENDING.load(Relaxed)
}

fn write_opts() -> CallOptions {
    CallOptionsBuilder::new()
        .replicate()
        .verify_oom()
        .errors_as_replies()
        .build()
}

fn reply_error(r: &CallResult) -> Option<String> {
    match r {
        Ok(_) => None,
        Err(e) => Some(e.to_utf8_string().unwrap_or_else(|| "error".into())),
    }
}

/// Logs an error at most once a second.
fn log_error_limited(msg: &str) {
    if let Some(suppressed) = ERROR_LOG.check(crate::clock::mono_ms()) {
        let extra = if suppressed > 0 {
            format!(" ({suppressed} similar lines suppressed)")
        } else {
            String::new()
        };
        logging::error(&format!("{msg}{extra}"));
    }
}

/// True when this server may write: a master, not loading, writes not paused.
pub fn can_write(ctx: &Context) -> bool {
    writable(&ctx.get_flags())
}

/// A master that is not loading and whose writes are not paused.
fn writable(f: &ContextFlags) -> bool {
    f.contains(ContextFlags::MASTER)
        && !f.contains(ContextFlags::LOADING)
        && !f.contains(ContextFlags::ASYNC_LOADING)
        && !writes_paused()
}

/// Whether the server asks modules not to write: while `CLIENT PAUSE ... WRITE` is in force
/// (which `FAILOVER` and a cluster manual failover use) or a replica is being promoted. A
/// write then would move the replication offset the failover waits on, and on every server
/// tried the propagation of it trips an assertion (`propagatePendingCommands`). Projection
/// resumes at the first housekeeping tick after the pause ends.
pub fn writes_paused() -> bool {
    // SAFETY: reading a function pointer that the module API set at load; the call only
    // reads server state.
    unsafe { raw::RedisModule_AvoidReplicaTraffic.is_some_and(|f| f() != 0) }
}

fn publish_role(ctx: &Context) {
    let f = ctx.get_flags();
    let mut p = state::published();
    p.is_master = f.contains(ContextFlags::MASTER);
    p.loading = f.contains(ContextFlags::LOADING) || f.contains(ContextFlags::ASYNC_LOADING);
}

/// Database 0 for as long as the guard lives; then the context's client gets its own
/// database back. In a command context that client is the caller's, whose `SELECT` must
/// survive `HEATBRIDGE.*` (and every later command of a script that calls one).
pub struct Db0<'c> {
    ctx: &'c Context,
    previous: i32,
}

impl<'c> Db0<'c> {
    /// Selects database 0.
    pub fn select(ctx: &'c Context) -> Db0<'c> {
        // SAFETY: ctx.ctx is the live context of the current callback or command;
        // GetSelectedDb only reads it and SelectDb only switches its client's database.
        let previous = unsafe {
            let previous = raw::RedisModule_GetSelectedDb.map_or(0, |f| f(ctx.ctx));
            if let Some(f) = raw::RedisModule_SelectDb {
                f(ctx.ctx, 0);
            }
            previous
        };
        Db0 { ctx, previous }
    }
}

impl Drop for Db0<'_> {
    fn drop(&mut self) {
        // SAFETY: as in `select`; the context outlives the guard.
        unsafe {
            if let Some(f) = raw::RedisModule_SelectDb {
                f(self.ctx.ctx, self.previous);
            }
        }
    }
}

/// Called from the keyspace notification for an XADD on the input stream. Never writes:
/// it schedules a post-notification job where the server has them, else a 0 ms timer.
pub fn on_xadd(ctx: &Context, key: &[u8]) {
    let f = ctx.get_flags();
    let writable = writable(&f);
    // An XADD that EXEC runs: the transaction's other commands passed the command filter
    // when they were queued, not when they run (and on Valkey a postponed EXEC does not pass
    // it again). EXEC's own filter call already forgot the group; this makes sure of it.
    if !writable || f.contains(ContextFlags::MULTI) {
        forget_group();
        if !writable {
            return;
        }
    }
    let counted = match known().as_mut() {
        Some(k) => {
            k.xadds += 1;
            true
        }
        None => false,
    };
    capture::on_xadd(key, counted);
    if JOB_PENDING.load(Relaxed) {
        return;
    }
    if POST_JOBS.load(Relaxed) != 2 {
        let added = ctx.add_post_notification_job(|ctx| {
            guard::contain("post-notification job", (), || {
                JOB_PENDING.store(false, Relaxed);
                guard::fault_point("job");
                drain(ctx);
            })
        });
        match added {
            Ok(redis_module::Status::Ok) => {
                POST_JOBS.store(1, Relaxed);
                JOB_PENDING.store(true, Relaxed);
                return;
            }
            _ => {
                if POST_JOBS.swap(2, Relaxed) != 2 {
                    logging::info(
                        "post-notification jobs unavailable: projecting on the next event-loop turn",
                    );
                }
            }
        }
    }
    schedule(ctx);
}

/// Schedules a drain on the next event-loop turn, unless one is pending already.
pub fn schedule(ctx: &Context) {
    if TIMER_PENDING.swap(true, Relaxed) {
        return;
    }
    // SAFETY: `ctx.ctx` is the live context of the current callback; the callback is a plain
    // function of this library and takes no data. A pending timer is cancelled before the
    // module can be unloaded (see `cancel_drain_timer`), and the server refuses to unload a
    // module that holds one.
    let id = unsafe {
        raw::RedisModule_CreateTimer
            .map(|create| create(ctx.ctx, 0, Some(on_drain_timer), ptr::null_mut()))
    };
    match id {
        Some(id) => TIMER_ID.store(id, Relaxed),
        None => TIMER_PENDING.store(false, Relaxed),
    }
}

/// The drain timer's callback.
unsafe extern "C" fn on_drain_timer(ctx: *mut raw::RedisModuleCtx, _data: *mut c_void) {
    guard::contain("drain timer", (), || {
        TIMER_PENDING.store(false, Relaxed);
        if ctx.is_null() {
            return;
        }
        guard::fault_point("timer");
        drain(&Context::new(ctx));
    })
}

/// A context of this module that outlives callbacks, for stopping the drain timer from the
/// command filter (`RM_StopTimer` wants a context of the module that made the timer). Made
/// at load, freed at unload.
static MODULE_CTX: AtomicPtr<raw::RedisModuleCtx> = AtomicPtr::new(ptr::null_mut());

/// Makes the module context that [`cancel_drain_timer`] needs (module load).
pub fn keep_module_context(ctx: &Context) {
    // SAFETY: `ctx.ctx` is the live context of the module load; the detached context it
    // returns belongs to this module and is freed in `release_module_context`.
    let detached = unsafe {
        raw::RedisModule_GetDetachedThreadSafeContext.map_or(ptr::null_mut(), |f| f(ctx.ctx))
    };
    let old = MODULE_CTX.swap(detached, Relaxed);
    free_context(old);
}

/// Frees the context of [`keep_module_context`] (module unload).
pub fn release_module_context() {
    free_context(MODULE_CTX.swap(ptr::null_mut(), Relaxed));
}

fn free_context(ctx: *mut raw::RedisModuleCtx) {
    if ctx.is_null() {
        return;
    }
    // SAFETY: `ctx` came from GetDetachedThreadSafeContext and is freed exactly once, here,
    // on the main thread.
    unsafe {
        if let Some(free) = raw::RedisModule_FreeThreadSafeContext {
            free(ctx);
        }
    }
}

/// Stops a pending drain timer. `MODULE UNLOAD` runs it first (through the command filter):
/// during a long catch-up a 0 ms timer is nearly always pending, and the server refuses to
/// unload a module that holds one. If the unload fails after all, the housekeeping tick
/// carries the catch-up on.
pub fn cancel_drain_timer() {
    let ctx = MODULE_CTX.load(Relaxed);
    if ctx.is_null() || !TIMER_PENDING.load(Relaxed) {
        return;
    }
    // SAFETY: `ctx` is this module's detached context, alive until unload; the timer, if it
    // still exists, is this module's and has no data to free.
    let stopped = unsafe {
        raw::RedisModule_StopTimer.is_some_and(|stop| {
            stop(ctx, TIMER_ID.load(Relaxed), ptr::null_mut()) == raw::REDISMODULE_OK as i32
        })
    };
    if stopped {
        TIMER_PENDING.store(false, Relaxed);
    }
}

/// Outcome of one drain step.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// Nothing left to read.
    CaughtUp,
    /// Entries were handled and more may follow.
    More,
    /// The step failed; the tick retries.
    Failed,
}

/// Drains for at most [`STEP_BUDGET`], then yields to clients with a 0 ms timer if entries
/// remain. Nothing is done on a replica or while loading.
///
/// One call is one *pass*: a series of steps of at most `heatbridge.batch` entries, run inside
/// one callback. Nothing else runs between the steps of a pass, so no client, replica or AOF
/// can tell its steps apart. The pass therefore reads the group once, writes latest and its
/// pointer once per symbol (for the symbol's last projected entry), and moves the group
/// cursor once, after every other write.
pub fn drain(ctx: &Context) {
    publish_role(ctx);
    if !can_write(ctx) {
        return;
    }
    let _db = Db0::select(ctx);
    let _in_pass = InPass::enter();
    let settings = config::current();
    let start = Instant::now();
    let mut pass = Pass::new(ctx);
    pass.known = known()
        .take()
        .filter(|k| k.stream == settings.stream && k.group == settings.group);
    pass.commands = capture::take().filter(|_| pass.known.is_some());
    capture::set_limit(settings.batch);
    let mut last = loop {
        match step(ctx, &settings, &mut pass) {
            Step::More if start.elapsed() < STEP_BUDGET => {}
            Step::More => {
                schedule(ctx);
                break Step::More;
            }
            done => break done,
        }
    };
    if !pass.finish(ctx, &settings) {
        last = Step::Failed;
    }
    latency_sample(start.elapsed());
    let mut p = state::published();
    if last == Step::Failed {
        p.failing_passes += 1;
    } else {
        p.failing_passes = 0;
    }
}

/// Reports a pass to the server's latency monitor as event `heatbridge-drain`, so that
/// `LATENCY LATEST` shows the longest pass (the server records it only at or above
/// `latency-monitor-threshold`). Timer callbacks and post-notification jobs are not timed
/// by the server itself.
fn latency_sample(elapsed: Duration) {
    // SAFETY: reading a function pointer that the module API set at load; the event name is
    // a static C string.
    unsafe {
        if let Some(add) = raw::RedisModule_LatencyAddSample {
            add(
                c"heatbridge-drain".as_ptr(),
                // Rounded up, so that the monitor never understates a pass; a pass under
                // 1 ms is 0, which the monitor ignores.
                if elapsed < Duration::from_millis(1) {
                    0
                } else {
                    elapsed.as_micros().div_ceil(1000).min(i64::MAX as u128) as raw::mstime_t
                },
            );
        }
    }
}

/// Where a pass leaves the group cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cursor {
    /// The stream's last ID (`$`): every entry was read.
    End,
    /// This entry, the last one handled.
    At(EntryId),
}

/// What a drain pass carries from one step to the next; see [`drain`].
struct Pass<'c> {
    w: Writer<'c>,
    /// The group as this pass has left it, once read; `None` until then, and again after
    /// pending entries were finished (XACK changes it on the server).
    group: Option<GroupInfo>,
    /// Our consumer's pending entries are done for this pass (others' may remain).
    pending_checked: bool,
    /// The last projected entry of each symbol, with the expiry of its latest keys.
    latest: Latest,
    /// The cursor move still to make, with the group's read counter when it is known.
    advance: Option<(Cursor, Option<u64>)>,
    /// Entries read by this pass's steps, counted once they are acknowledged.
    read: u64,
    /// The group as the previous pass left it, until the first step checks it.
    known: Option<Known>,
    /// The newest entry and the read counter, when the pass reaches the end of the stream
    /// with nothing pending and an exact counter: what the next pass may trust.
    end: Option<(EntryId, u64)>,
    /// The stream's length, when the pass already knows it.
    len: Option<u64>,
    /// The arguments of the XADDs counted in `known`, when every one was kept.
    commands: Option<Vec<capture::Command>>,
}

impl<'c> Pass<'c> {
    fn new(ctx: &'c Context) -> Pass<'c> {
        Pass {
            w: Writer::new(ctx),
            group: None,
            pending_checked: false,
            latest: Latest::default(),
            advance: None,
            read: 0,
            known: None,
            end: None,
            len: None,
            commands: None,
        }
    }

    /// Writes latest and the pointers, then moves the cursor. If a latest write fails,
    /// nothing of the pass is acknowledged: the retry rewrites it all (idempotent).
    /// Returns false on a failure.
    fn finish(self, ctx: &Context, s: &Settings) -> bool {
        for (e, at) in &self.latest.into_sorted() {
            if let Err(msg) = write_latest(&self.w, e, *at) {
                METRICS.count_error(Stage::Write, now_ms());
                log_error_limited(&format!(
                    "write failed for the latest keys of entry {}: {msg}; the entries stay in \
                     the backlog and are retried",
                    e.id
                ));
                return false;
            }
        }
        let Some((to, entries_read)) = self.advance else {
            METRICS.count_in(self.read);
            return true;
        };
        let id = match to {
            Cursor::End => "$".to_string(),
            Cursor::At(id) => id.to_string(),
        };
        match advance(ctx, s, &id, entries_read) {
            Ok(()) => {
                // Counted once acknowledged: a failed move re-reads (and counts) them.
                METRICS.count_in(self.read);
                if let (true, Cursor::End, Some((last, entries_read))) =
                    (TRUST_KNOWN.load(Relaxed), to, self.end)
                {
                    let len = self
                        .len
                        .unwrap_or_else(|| stream_shape(ctx, &apply::stream_name(&s.stream)).1);
                    *known() = Some(Known {
                        stream: s.stream.clone(),
                        group: s.group.clone(),
                        last,
                        len,
                        entries_read,
                        xadds: 0,
                    });
                }
                true
            }
            Err(e) => {
                METRICS.count_error(Stage::Ack, now_ms());
                log_error_limited(&format!("cannot advance group {}: {e}", s.group));
                false
            }
        }
    }
}

/// The group as XINFO GROUPS shows it.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct GroupInfo {
    /// Last-delivered ID (the cursor).
    pub last_id: EntryId,
    /// Entries pending in the whole group.
    pub pending: u64,
    /// Unread entries, when the server can tell.
    pub lag: Option<u64>,
    /// The group's logical read counter, when valid.
    pub entries_read: Option<u64>,
}

impl GroupInfo {
    /// The stream's entries-added counter, known when both the read counter and the lag
    /// are (a valid lag means no deletion fragments the stream after the cursor).
    pub fn entries_added(&self) -> Option<u64> {
        self.entries_read.zip(self.lag).map(|(r, l)| r + l)
    }

    /// The read counter after moving the cursor over `k` more entries, when it can be kept
    /// exact (as XREADGROUP does: only with no deletion after the cursor).
    pub fn entries_read_after(&self, k: u64) -> Option<u64> {
        self.lag.and(self.entries_read).map(|r| r + k)
    }
}

/// The bytes of a string reply, borrowed from it.
pub(crate) fn str_of<'a>(r: &'a CallReply<'_>) -> Option<&'a [u8]> {
    match r {
        CallReply::String(s) => Some(s.as_bytes()),
        _ => None,
    }
}

fn int_of(r: &CallReply) -> Option<i64> {
    match r {
        CallReply::I64(i) => Some(i.to_i64()),
        _ => None,
    }
}

/// Calls `f` with each (name, value) pair of a flat XINFO reply. Nothing is copied: this
/// runs for every drain pass.
pub(crate) fn for_each_pair(reply: &CallReply<'_>, mut f: impl FnMut(&[u8], &CallReply<'_>)) {
    let CallReply::Array(fields) = reply else {
        return;
    };
    let mut i = 0;
    while i + 1 < fields.len() {
        if let (Some(Ok(CallReply::String(name))), Some(Ok(value))) =
            (fields.get(i), fields.get(i + 1))
        {
            f(name.as_bytes(), &value);
        }
        i += 2;
    }
}

/// Reads the group's cursor, pending count and lag. `Ok(None)` when there is no such group.
pub fn read_group(ctx: &Context, s: &Settings) -> Result<Option<GroupInfo>, String> {
    let r: CallResult = ctx.call_ext("XINFO", &read_opts(), &["GROUPS", s.stream.as_str()][..]);
    let reply = r.map_err(|e| e.to_utf8_string().unwrap_or_else(|| "XINFO failed".into()))?;
    let CallReply::Array(groups) = reply else {
        return Err("unexpected XINFO GROUPS reply".into());
    };
    for g in groups.iter() {
        let Ok(fields) = g else {
            continue;
        };
        let mut ours = false;
        let mut info = GroupInfo::default();
        for_each_pair(&fields, |k, v| match k {
            b"name" => ours = str_of(v) == Some(s.group.as_bytes()),
            b"pending" => info.pending = int_of(v).unwrap_or(0).max(0) as u64,
            b"last-delivered-id" => {
                info.last_id = str_of(v).and_then(EntryId::parse).unwrap_or_default()
            }
            b"lag" => info.lag = int_of(v).map(|l| l.max(0) as u64),
            b"entries-read" => info.entries_read = int_of(v).map(|l| l.max(0) as u64),
            _ => {}
        });
        if ours {
            return Ok(Some(info));
        }
    }
    Ok(None)
}

fn stream_key_state(ctx: &Context, stream: &RedisString) -> StreamState {
    stream_shape(ctx, stream).0
}

/// The stream key's state and, for a stream, its length, from one open of the key.
fn stream_shape(ctx: &Context, stream: &RedisString) -> (StreamState, u64) {
    let inner = raw::open_key(ctx.ctx, stream.inner, raw::KeyMode::READ);
    if inner.is_null() {
        return (StreamState::Missing, 0);
    }
    // SAFETY: `inner` is a key opened just above on the live context and closed right
    // after; KeyType and ValueLength only read it.
    let (kind, len) = unsafe {
        (
            raw::RedisModule_KeyType.map_or(raw::REDISMODULE_KEYTYPE_EMPTY as i32, |f| f(inner)),
            raw::RedisModule_ValueLength.map_or(0, |f| f(inner)),
        )
    };
    raw::close_key(inner);
    if kind == raw::REDISMODULE_KEYTYPE_EMPTY as i32 {
        (StreamState::Missing, 0)
    } else if kind == raw::REDISMODULE_KEYTYPE_STREAM as i32 {
        (StreamState::Stream, len as u64)
    } else {
        (StreamState::WrongType, 0)
    }
}

fn set_stream_state(st: StreamState, stream: &str) {
    let previous = std::mem::replace(&mut state::published().stream_state, st);
    // Logged after the lock is released, so the exporter never waits on a log write.
    if st == StreamState::WrongType && previous != StreamState::WrongType {
        logging::error(&format!(
            "key {stream} is not a stream: projection is paused until it is"
        ));
    }
}

/// An entry copied out of the stream.
pub struct Entry {
    /// Its ID.
    pub id: EntryId,
    /// Its fields; `None` when the ID is no longer in the stream.
    pub fields: Option<Vec<(RedisString, RedisString)>>,
}

/// Reads up to `count` entries after `after` (exclusive), in stream order. `Err` when the
/// stream cannot be read: never taken for "no entries", which would move the cursor on.
///
/// When few entries are expected (`few`: the live path, or a known lag within `count`),
/// they are read backwards from the end of the stream: a forward iterator that seeks the
/// newest entry walks its whole listpack node (up to 100 entries), while a backward one
/// reaches it at once. If more than `count` entries turn out to follow the cursor, the
/// oldest ones are read forwards as usual.
fn read_after(
    ctx: &Context,
    stream: &RedisString,
    after: EntryId,
    count: usize,
    few: bool,
) -> Result<Vec<Entry>, String> {
    let to_entry = |(id, fields)| Entry {
        id,
        fields: Some(fields),
    };
    if few {
        let mut walk = IdWalk::after(ctx, stream, after, true)
            .ok_or("cannot iterate the stream (backwards)")?;
        let mut newest = Vec::with_capacity(count.saturating_add(1).min(1024));
        while newest.len() <= count {
            let Some(e) = walk.next_entry() else { break };
            newest.push(to_entry(e));
        }
        if newest.len() <= count {
            newest.reverse();
            return Ok(newest);
        }
    }
    let mut walk = IdWalk::after(ctx, stream, after, false).ok_or("cannot iterate the stream")?;
    let mut entries = Vec::with_capacity(count.min(1024));
    while entries.len() < count {
        let Some(e) = walk.next_entry() else { break };
        entries.push(to_entry(e));
    }
    Ok(entries)
}

/// Reads one entry by ID (`fields` is `None` when it is not in the stream).
fn read_one(ctx: &Context, stream: &RedisString, id: EntryId) -> Entry {
    let fields = IdWalk::range(ctx, stream, Some(id), Some(id), false, false)
        .and_then(|mut walk| walk.next_entry())
        .map(|(_, fields)| fields);
    Entry { id, fields }
}

/// One drain step of a pass; see the module documentation.
fn step(ctx: &Context, s: &Settings, pass: &mut Pass) -> Step {
    let started = Instant::now();
    let stream = apply::stream_name(&s.stream);
    let (st, len) = stream_shape(ctx, &stream);
    set_stream_state(st, &s.stream);
    if st != StreamState::Stream {
        return Step::CaughtUp;
    }
    if let Some(k) = pass.known.take() {
        let commands = pass.commands.take();
        if let Some((group, entries)) = trust_known(ctx, s, &stream, len, &k, commands) {
            // The pass adds no entry, so the length stays what the next pass will check.
            pass.len = Some(len);
            return project_step(ctx, s, pass, group, entries, started);
        }
    }
    let group = match pass.group.take() {
        Some(g) => g,
        None => match read_group(ctx, s) {
            Ok(Some(g)) => g,
            Ok(None) => match create_group(ctx, s).and_then(|()| read_group(ctx, s)) {
                Ok(g) => g.unwrap_or_default(),
                Err(e) => {
                    METRICS.count_error(Stage::Ack, now_ms());
                    log_error_limited(&format!("cannot create group {}: {e}", s.group));
                    return Step::Failed;
                }
            },
            Err(e) => {
                METRICS.count_error(Stage::Read, now_ms());
                log_error_limited(&format!("cannot read group {}: {e}", s.group));
                return Step::Failed;
            }
        },
    };

    if group.pending > 0 && !pass.pending_checked {
        match finish_pending(ctx, s, &stream) {
            Ok(0) => pass.pending_checked = true,
            Ok(_) => {
                METRICS.count_loop(started.elapsed().as_secs_f64() * 1000.0);
                return Step::More;
            }
            Err(()) => return Step::Failed,
        }
    }

    let few = group.lag.is_some_and(|l| l <= s.batch as u64);
    let entries = match read_after(ctx, &stream, group.last_id, s.batch, few) {
        Ok(entries) => entries,
        Err(e) => {
            METRICS.count_error(Stage::Read, now_ms());
            log_error_limited(&format!("cannot read {}: {e}", s.stream));
            return Step::Failed;
        }
    };
    // More entries after the cursor than the group's lag says: its read counter is not what
    // the entries are (XGROUP SETID with an ENTRIESREAD of the operator's choosing). The
    // counter is then left for the server to work out, never carried forward.
    let group = match group.lag {
        Some(lag) if entries.len() as u64 > lag => GroupInfo {
            lag: None,
            entries_read: None,
            ..group
        },
        _ => group,
    };
    project_step(ctx, s, pass, group, entries, started)
}

/// The group as `k` knows it and the entries added since, if the stream passes the checks
/// of [`Known`]; else `None`, and the step reads the group.
fn trust_known(
    ctx: &Context,
    s: &Settings,
    stream: &RedisString,
    len: u64,
    k: &Known,
    commands: Option<Vec<capture::Command>>,
) -> Option<(GroupInfo, Vec<Entry>)> {
    let added = usize::try_from(k.xadds).ok()?;
    if added == 0 || added > s.batch || len != k.len + k.xadds {
        return None;
    }
    let entries = commands
        .filter(|c| c.len() == added)
        .and_then(|c| entries_from_commands(ctx, stream, k.last, c))
        .or_else(|| read_after(ctx, stream, k.last, s.batch, true).ok())?;
    if entries.len() != added {
        return None;
    }
    let group = GroupInfo {
        last_id: k.last,
        pending: 0,
        lag: Some(k.xadds),
        entries_read: Some(k.entries_read),
    };
    Some((group, entries))
}

/// The entries after `after`, built from the arguments of the XADDs that added them (see
/// [`capture`]) instead of read back from the stream: only the IDs and field counts are
/// read. `None` unless exactly as many entries follow `after` and each one's ID and field
/// count agree with its command.
fn entries_from_commands(
    ctx: &Context,
    stream: &RedisString,
    after: EntryId,
    commands: Vec<capture::Command>,
) -> Option<Vec<Entry>> {
    let mut walk = IdWalk::after(ctx, stream, after, true)?;
    let mut ids = Vec::with_capacity(commands.len() + 1);
    while ids.len() <= commands.len() {
        let Some(id) = walk.next_id() else { break };
        ids.push(id);
    }
    drop(walk);
    if ids.len() != commands.len() {
        return None;
    }
    let mut entries = Vec::with_capacity(ids.len());
    for ((id, numfields), c) in ids.into_iter().rev().zip(commands) {
        let Some(fields) = c.into_entry(id, numfields) else {
            capture::MISMATCHED.fetch_add(1, Relaxed);
            log_error_limited(&format!(
                "the arguments of the XADD of entry {id} do not match it; entries are read \
                 back from the stream"
            ));
            return None;
        };
        entries.push(Entry {
            id,
            fields: Some(fields),
        });
    }
    capture::TAKEN.fetch_add(entries.len() as u64, Relaxed);
    Some(entries)
}

/// The rest of a drain step: project `entries` (read after `group`'s cursor) and record in
/// `pass` where the cursor goes.
fn project_step(
    ctx: &Context,
    s: &Settings,
    pass: &mut Pass,
    group: GroupInfo,
    entries: Vec<Entry>,
    started: Instant,
) -> Step {
    if entries.is_empty() {
        // Nothing after the cursor, yet the group may still show a lag: the entries after it
        // were deleted (XDEL, XTRIM). Moving the cursor to the stream's last ID makes the
        // group's lag 0 again.
        if group.lag != Some(0) {
            pass.advance = Some((Cursor::End, stream_entries_added(ctx, s, &group)));
        }
        return Step::CaughtUp;
    }
    let now = now_ms();
    let mut done: Option<EntryId> = None;
    let mut failed = false;
    // Entries whose latest keys are still to be written (index, expiry).
    let mut latest: Vec<(usize, u64)> = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        match project(ctx, &pass.w, s, e, now, true) {
            Ok(Projected::Written {
                latest_at: Some(at),
            }) => {
                latest.push((i, at));
                done = Some(e.id);
            }
            Ok(_) => done = Some(e.id),
            Err(msg) => {
                METRICS.count_error(Stage::Write, now_ms());
                log_error_limited(&format!(
                    "write failed for entry {}: {msg}; it stays in the backlog and is retried",
                    e.id
                ));
                failed = true;
                break;
            }
        }
    }
    let read = entries.len();
    // An entry whose write failed is read again on the retry; it is counted then.
    let handled = entries.iter().take_while(|e| Some(e.id) <= done).count() as u64;
    pass.read += handled;
    let mut marks = latest.into_iter().peekable();
    for (i, e) in entries.into_iter().enumerate() {
        if let Some((_, at)) = marks.next_if(|(j, _)| *j == i) {
            pass.latest.keep(e, at);
        }
    }
    if let Some(last) = done {
        let to = if !failed && read < s.batch {
            // Every entry after the cursor was read: with no deletion after the cursor (a
            // valid lag), the read counter moves by exactly the entries handled. At the end
            // of the stream the cursor goes to `$`, the stream's last ID, which keeps the lag
            // exact even when entries after `last` were deleted.
            let counter = group
                .entries_read_after(handled)
                .or_else(|| stream_entries_added(ctx, s, &group));
            if group.pending == 0 {
                pass.end = counter.map(|n| (last, n));
            }
            (Cursor::End, counter)
        } else {
            (Cursor::At(last), group.entries_read_after(handled))
        };
        pass.advance = Some(to);
        pass.group = Some(GroupInfo {
            last_id: last,
            pending: group.pending,
            lag: group.lag.map(|l| l.saturating_sub(handled)),
            entries_read: group.entries_read_after(handled),
        });
    }
    METRICS.count_loop(started.elapsed().as_secs_f64() * 1000.0);
    if failed {
        Step::Failed
    } else if read >= s.batch {
        Step::More
    } else {
        Step::CaughtUp
    }
}

fn create_group(ctx: &Context, s: &Settings) -> Result<(), String> {
    let r: CallResult = ctx.call_ext(
        "XGROUP",
        &write_opts(),
        &[
            "CREATE",
            s.stream.as_str(),
            s.group.as_str(),
            "0",
            "ENTRIESREAD",
            "0",
        ][..],
    );
    match reply_error(&r) {
        None => {
            logging::info(&format!("created group {} on {}", s.group, s.stream));
            Ok(())
        }
        Some(e) if e.starts_with("BUSYGROUP") => Ok(()),
        Some(e) => Err(e),
    }
}

/// Moves the group cursor to `id` (an entry ID or `$`), replicated. With `entries_read`
/// the group's read counter stays valid, so XINFO GROUPS (and the backlog) know the lag
/// even while the cursor is in the middle of the stream.
fn advance(ctx: &Context, s: &Settings, id: &str, entries_read: Option<u64>) -> Result<(), String> {
    static SETID: OnceLock<apply::Kept> = OnceLock::new();
    static ENTRIESREAD: OnceLock<apply::Kept> = OnceLock::new();
    static GROUP_NAME: Mutex<Option<(String, apply::Kept)>> = Mutex::new(None);
    let stream = apply::stream_name(&s.stream);
    let group = apply::named(&GROUP_NAME, &s.group);
    let id = rstr(ctx, id.as_bytes());
    let setid = apply::kept(&SETID, b"SETID");
    match entries_read {
        Some(n) => {
            let n = rstr(ctx, n.to_string().as_bytes());
            let keyword = apply::kept(&ENTRIESREAD, b"ENTRIESREAD");
            let args = [setid, &stream, &group, &id, keyword, &n];
            call::call(ctx, c"XGROUP", call::WRITE, &args).map(drop)
        }
        // Without a counter, the ENTRIESREAD keyword is left out too.
        None => call::call(ctx, c"XGROUP", call::WRITE, &[setid, &stream, &group, &id]).map(drop),
    }
}

/// The stream's entries-added counter: from the group when it can tell, else from
/// XINFO STREAM (only after deletions fragmented the stream, or right after a restart of the
/// counter).
fn stream_entries_added(ctx: &Context, s: &Settings, group: &GroupInfo) -> Option<u64> {
    if let Some(n) = group.entries_added() {
        return Some(n);
    }
    let r: CallResult = ctx.call_ext("XINFO", &read_opts(), &["STREAM", s.stream.as_str()][..]);
    let Ok(reply) = r else {
        return None;
    };
    let mut added = None;
    for_each_pair(&reply, |k, v| {
        if k == b"entries-added" {
            added = int_of(v).map(|n| n.max(0) as u64);
        }
    });
    added
}

/// Projects and acknowledges the entries pending for our consumer. Returns how many.
fn finish_pending(ctx: &Context, s: &Settings, stream: &RedisString) -> Result<usize, ()> {
    let count = s.batch.min(MAX_PENDING_READ).to_string();
    let r: CallResult = ctx.call_ext(
        "XPENDING",
        &read_opts(),
        &[
            s.stream.as_str(),
            s.group.as_str(),
            "-",
            "+",
            count.as_str(),
            s.consumer.as_str(),
        ][..],
    );
    let ids: Vec<EntryId> = match r {
        Ok(CallReply::Array(a)) => a
            .iter()
            .filter_map(|row| match row {
                Ok(CallReply::Array(cols)) => cols
                    .get(0)
                    .and_then(|c| c.ok())
                    .and_then(|c| str_of(&c).and_then(EntryId::parse)),
                _ => None,
            })
            .collect(),
        Ok(_) => Vec::new(),
        Err(e) => {
            METRICS.count_error(Stage::Read, now_ms());
            log_error_limited(&format!(
                "cannot read pending entries: {}",
                e.to_utf8_string().unwrap_or_default()
            ));
            return Err(());
        }
    };
    if ids.is_empty() {
        return Ok(0);
    }
    let now = now_ms();
    let w = Writer::new(ctx);
    let mut acked: Vec<String> = Vec::with_capacity(ids.len());
    let mut latest = Latest::default();
    for id in &ids {
        let e = read_one(ctx, stream, *id);
        match project(ctx, &w, s, &e, now, true) {
            Ok(Projected::Written {
                latest_at: Some(at),
            }) => latest.keep(e, at),
            Ok(_) => {}
            Err(msg) => {
                METRICS.count_error(Stage::Write, now_ms());
                log_error_limited(&format!("write failed for pending entry {id}: {msg}"));
                break;
            }
        }
        acked.push(id.to_string());
    }
    // A pending entry is usually older than entries already projected (one XCLAIMed to our
    // consumer, or left by the sidecar): latest keeps the newer decision.
    if let Err(msg) = latest.write_if_newest(ctx, &w, stream) {
        METRICS.count_error(Stage::Write, now_ms());
        log_error_limited(&format!(
            "write failed for the latest keys of pending entries: {msg}"
        ));
        return Err(());
    }
    METRICS.count_in(acked.len() as u64);
    if acked.is_empty() {
        return Err(());
    }
    let mut args: Vec<&str> = vec![s.stream.as_str(), s.group.as_str()];
    args.extend(acked.iter().map(String::as_str));
    let r: CallResult = ctx.call_ext("XACK", &write_opts(), args.as_slice());
    if let Some(e) = reply_error(&r) {
        METRICS.count_error(Stage::Ack, now_ms());
        log_error_limited(&format!("XACK failed: {e}"));
        return Err(());
    }
    if acked.len() < ids.len() {
        return Err(());
    }
    Ok(acked.len())
}

/// What happened to one entry.
#[derive(Debug, PartialEq, Eq)]
pub enum Projected {
    /// The dedupe and by_plan keys were written; latest and its pointer are still to be
    /// written, expiring at `latest_at`, when it is `Some`.
    Written {
        /// Expiry of the latest hash and pointer, if they are to be written.
        latest_at: Option<u64>,
    },
    /// Invalid; acknowledged without writing.
    Invalid,
    /// Skipped by dedupe.
    Duplicate,
    /// Too old for every TTL.
    Expired,
}

/// Projects one entry's dedupe and by_plan keys; the caller writes latest (once per symbol
/// per drain pass). `Err` only for a write failure that should be retried.
pub fn project(
    ctx: &Context,
    w: &Writer,
    s: &Settings,
    e: &Entry,
    now: u64,
    dedupe: bool,
) -> Result<Projected, String> {
    guard::fault_point("project");
    let parsed = match &e.fields {
        Some(fields) => decision::parse(e.id, fields),
        None => Err(Invalid::Deleted),
    };
    let d = match parsed {
        Ok(d) => d,
        Err(Invalid::Deleted) => return Ok(Projected::Invalid),
        Err(reason) => {
            METRICS.count_error(Stage::Parse, now);
            if let Some(suppressed) = INVALID_LOG.check(crate::clock::mono_ms()) {
                logging::warning(&format!(
                    "invalid entry {} skipped and acknowledged: {reason}{}",
                    e.id,
                    if suppressed > 0 {
                        format!(" ({suppressed} more since the last line)")
                    } else {
                        String::new()
                    }
                ));
            }
            return Ok(Projected::Invalid);
        }
    };
    let plan = projection::plan(d.id.ms, s.ttls, now);
    if plan.creates_no_key() {
        METRICS.count_expired_skip();
        return Ok(Projected::Expired);
    }
    if ctx.get_flags().contains(ContextFlags::OOM) {
        return Err("OOM: used memory is over maxmemory".into());
    }
    let dedupe_key = w.string(&projection::key(projection::DEDUPE_PREFIX, d.plan_id));
    if dedupe && s.ttls.dedupe_ms > 0 {
        let existing = apply::read_string(ctx, &dedupe_key);
        if projection::dedupe_verdict(existing.as_deref(), d.id) == Dedupe::Duplicate {
            METRICS.count_dedupe_skip();
            return Ok(Projected::Duplicate);
        }
    }
    let Some(fields) = &e.fields else {
        return Ok(Projected::Invalid);
    };
    let Some(plan_id) = apply::field(fields, b"plan_id") else {
        return Ok(Projected::Invalid);
    };
    if let Some(at) = plan.dedupe_at {
        let id = w.string(d.id.to_string().as_bytes());
        w.set_string(&dedupe_key, &id, at)?;
    }
    if let Some(at) = plan.by_plan_at {
        let key = w.string(&projection::key(
            projection::BY_PLAN_PREFIX,
            plan_id.as_slice(),
        ));
        if w.replace_hash(&key, fields, None, at)? {
            METRICS.count_by_plan();
        }
    }
    let lag = now.saturating_sub(d.id.ms) as f64;
    METRICS.record_projected(lag, d.ts_epoch);
    Ok(Projected::Written {
        latest_at: plan.latest_at,
    })
}

/// The newest projected entry of each symbol, whose latest keys are still to be written,
/// with their expiry.
#[derive(Default)]
struct Latest(HashMap<Vec<u8>, (Entry, u64)>);

impl Latest {
    /// Keeps `e` as its symbol's latest entry when it is newer than the one kept.
    fn keep(&mut self, e: Entry, at: u64) {
        let Some(sym) = e.fields.as_deref().and_then(|f| apply::field(f, b"symbol")) else {
            return;
        };
        match self.0.get_mut(sym.as_slice()) {
            Some(slot) if slot.0.id >= e.id => {}
            Some(slot) => *slot = (e, at),
            None => {
                let key = sym.as_slice().to_vec();
                self.0.insert(key, (e, at));
            }
        }
    }

    /// The kept entries, oldest first.
    fn into_sorted(self) -> Vec<(Entry, u64)> {
        let mut latest: Vec<(Entry, u64)> = self.0.into_values().collect();
        latest.sort_by_key(|(e, _)| e.id);
        latest
    }

    /// Writes the latest keys of each kept entry that no later entry of the stream
    /// supersedes (see [`crate::ids::newest_of_symbols`]): for entries behind the stream's
    /// end (pending entries, REPLAY), whose symbol may have newer decisions.
    fn write_if_newest(
        self,
        ctx: &Context,
        w: &Writer,
        stream: &RedisString,
    ) -> Result<(), String> {
        let latest = self.into_sorted();
        if latest.is_empty() {
            return Ok(());
        }
        let candidates: Vec<(Vec<u8>, EntryId)> = latest
            .iter()
            .filter_map(|(e, _)| {
                let sym = e
                    .fields
                    .as_deref()
                    .and_then(|f| apply::field(f, b"symbol"))?;
                Some((sym.as_slice().to_vec(), e.id))
            })
            .collect();
        let newest =
            crate::ids::newest_of_symbols(ctx, stream, &candidates, crate::ids::NEWEST_SCAN_BUDGET);
        for ((e, at), newest) in latest.iter().zip(newest) {
            if newest {
                write_latest(w, e, *at)?;
            }
        }
        Ok(())
    }
}

/// Writes the latest hash and the latest_plan_id pointer of an entry's symbol.
pub fn write_latest(w: &Writer, e: &Entry, at_ms: u64) -> Result<(), String> {
    let Some(fields) = &e.fields else {
        return Ok(());
    };
    let (Some(plan), Some(symbol)) = (
        apply::field(fields, b"plan_id"),
        apply::field(fields, b"symbol"),
    ) else {
        return Ok(());
    };
    let key = w.string(&projection::key(
        projection::LATEST_PREFIX,
        symbol.as_slice(),
    ));
    // A latest key of another type is left alone, and so is the pointer, which would
    // otherwise name a plan whose latest hash was never written.
    if !w.replace_hash(&key, fields, Some(plan), at_ms)? {
        return Ok(());
    }
    let ptr = w.string(&projection::key(
        projection::POINTER_PREFIX,
        symbol.as_slice(),
    ));
    w.set_string(&ptr, plan, at_ms)?;
    METRICS.count_latest();
    Ok(())
}

/// Most bytes of fields one HEATBRIDGE.REPLAY re-projects: its writes reach replicas as one
/// transaction, which must stay well inside a replica's output buffer.
pub const REPLAY_MAX_BYTES: usize = 32 * 1024 * 1024;

/// Re-projects the entries after `from`, in stream order, ignoring dedupe. It looks at no
/// more than `count` entries and stops after [`REPLAY_MAX_BYTES`] of fields, so one call
/// stays bounded in time and size; the caller pages on with the returned last ID.
/// Returns how many entries were written and the last ID looked at.
pub fn replay(ctx: &Context, from: EntryId, count: usize) -> Result<(u64, EntryId), String> {
    let _db = Db0::select(ctx);
    let s = config::current();
    let stream = rstr(ctx, s.stream.as_bytes());
    match stream_key_state(ctx, &stream) {
        StreamState::Stream => {}
        StreamState::WrongType => return Err("WRONGTYPE input stream key is not a stream".into()),
        _ => return Ok((0, from)),
    }
    let mut last = from;
    let mut written = 0u64;
    let mut examined = 0usize;
    let mut bytes = 0usize;
    let now = now_ms();
    let w = Writer::new(ctx);
    let mut latest = Latest::default();
    'chunks: while examined < count {
        let chunk = read_after(ctx, &stream, last, (count - examined).min(1000), false)?;
        if chunk.is_empty() {
            break;
        }
        for e in chunk {
            last = e.id;
            examined += 1;
            bytes += e.fields.as_deref().map_or(0, |f| {
                f.iter()
                    .map(|(k, v)| k.as_slice().len() + v.as_slice().len())
                    .sum()
            });
            if let Projected::Written { latest_at } = project(ctx, &w, &s, &e, now, false)? {
                written += 1;
                if let Some(at) = latest_at {
                    latest.keep(e, at);
                }
            }
            if bytes >= REPLAY_MAX_BYTES {
                break 'chunks;
            }
        }
    }
    // Latest goes to the newest entry re-projected for each symbol, unless the stream holds
    // a newer decision of that symbol: latest never moves back.
    latest.write_if_newest(ctx, &w, &stream)?;
    METRICS.count_replayed(written);
    Ok((written, last))
}

/// Reads the backlog (unread + pending) and the stream state, and publishes them.
pub fn refresh(ctx: &Context) {
    publish_role(ctx);
    let f = ctx.get_flags();
    if f.contains(ContextFlags::LOADING) {
        return;
    }
    let _db = Db0::select(ctx);
    let s = config::current();
    let stream = rstr(ctx, s.stream.as_bytes());
    let st = stream_key_state(ctx, &stream);
    set_stream_state(st, &s.stream);
    let backlog = match st {
        StreamState::Stream => match read_group(ctx, &s) {
            Ok(Some(g)) => Some(
                g.pending
                    + g.lag
                        .unwrap_or_else(|| count_after(ctx, &stream, g.last_id)),
            ),
            Ok(None) => Some(stream_len(ctx, &s)),
            Err(_) => None,
        },
        StreamState::WrongType => None,
        _ => Some(0),
    };
    state::published().record_backlog(now_ms(), backlog);
}

/// Counts entries after the cursor when the server cannot tell the lag. It walks IDs only
/// (fields are skipped, not read) and stops at a bound, so a housekeeping tick stays cheap.
fn count_after(ctx: &Context, stream: &RedisString, after: EntryId) -> u64 {
    const CAP: u64 = 10_000;
    let Some(mut walk) = IdWalk::after(ctx, stream, after, false) else {
        return 0;
    };
    let mut n = 0u64;
    while n < CAP && walk.next_id().is_some() {
        n += 1;
    }
    n
}

fn stream_len(ctx: &Context, s: &Settings) -> u64 {
    let r: CallResult = ctx.call_ext("XLEN", &read_opts(), &[s.stream.as_str()][..]);
    match r {
        Ok(CallReply::I64(n)) => n.to_i64().max(0) as u64,
        _ => 0,
    }
}

/// The periodic tick, driven by the cron server event: retries and catch-up on a master,
/// then fresh backlog and health for everyone. Runs at most every `heatbridge.poll-ms`.
pub fn housekeeping(ctx: &Context) {
    let now = crate::clock::mono_ms();
    let period = config::POLL_MS.load(Relaxed).max(config::MIN_POLL_MS) as u64;
    let last = LAST_TICK_MS.load(Relaxed);
    if last != NEVER && now.saturating_sub(last) < period {
        return;
    }
    LAST_TICK_MS.store(now, Relaxed);
    // Between commands no post-notification job can still be pending; clearing the flag
    // keeps one lost job from turning live projection into tick-driven projection.
    JOB_PENDING.store(false, Relaxed);
    // The tick always reads the group, so changes no event reports are seen within poll-ms.
    forget_group();
    if can_write(ctx) && !timer_pending() {
        drain(ctx);
    }
    refresh(ctx);
}
