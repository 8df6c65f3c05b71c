//! Scheduling: when drain passes run. Never in a keyspace callback (its writes would reach
//! replicas and the AOF before the XADD): after an XADD, in a post-notification job where the
//! server has them (Redis 7.2+, Valkey), else in a 0 ms timer; a catch-up goes on in 0 ms
//! timers between passes; the housekeeping tick runs on the cron server event (a module
//! timer would make the server refuse MODULE UNLOAD).

use std::ffi::c_void;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicU8, Ordering::Relaxed};

use redis_module::{raw, Context};

use crate::projector::drain;
use crate::projector::host::can_write;
use crate::projector::registry;
use crate::settings::config;
use crate::support::guard;
use crate::support::logging;

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

/// XADDs of this event-loop turn wait for the turn's end (`heatbridge.project-at turn`).
static TURN_PENDING: AtomicBool = AtomicBool::new(false);
/// The event-loop hook that ends a turn is subscribed (see `server::events`).
static TURN_HOOK: AtomicBool = AtomicBool::new(false);
/// The server runs I/O threads that write replies before the turn's end (Redis 8 and Valkey
/// with `io-threads` above 1): there every XADD is projected in its own job instead.
static IO_THREADS_WRITE_EARLY: AtomicBool = AtomicBool::new(false);

/// Records what the server offers, at load: post-notification jobs (Redis 7.2+, Valkey 8;
/// without them `heatbridge.project-at` is fixed to `turn`), and whether I/O threads write
/// replies before the turn ends.
pub fn server_offers(post_jobs: bool, io_threads: Option<i64>) {
    POST_JOBS.store(if post_jobs { 1 } else { 2 }, Relaxed);
    config::PROJECT_AT.fix((!post_jobs).then_some(true));
    // Not known (CONFIG renamed away): assumed on, so that `turn` never promises what
    // I/O threads could break.
    IO_THREADS_WRITE_EARLY.store(post_jobs && io_threads.is_none_or(|n| n > 1), Relaxed);
}

/// How XADDs are projected now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Each XADD in its own post-notification job.
    Command,
    /// The XADDs of one event-loop turn together, at its end.
    Turn,
    /// `turn` was asked for, but I/O threads write replies before the turn ends: each XADD
    /// in its own job.
    CommandForIoThreads,
}

impl Mode {
    /// As INFO shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Command => "command",
            Mode::Turn => "turn",
            Mode::CommandForIoThreads => "command (io-threads)",
        }
    }
}

/// The mode in force.
pub fn mode() -> Mode {
    match (
        config::project_per_turn(),
        IO_THREADS_WRITE_EARLY.load(Relaxed),
    ) {
        (false, _) => Mode::Command,
        (true, false) => Mode::Turn,
        (true, true) => Mode::CommandForIoThreads,
    }
}

/// Whether the end-of-turn hook should be subscribed.
pub fn wants_turn_hook() -> bool {
    mode() == Mode::Turn
}

/// The end-of-turn hook was subscribed (`true`) or unsubscribed. XADDs of this turn that
/// waited for the hook are drained on the next event-loop turn instead.
pub fn turn_hook_subscribed(ctx: &Context, on: bool) {
    TURN_HOOK.store(on, Relaxed);
    if !on && TURN_PENDING.swap(false, Relaxed) {
        TIMER_LIVE.store(true, Relaxed);
        schedule(ctx);
    }
}

/// Whether the end-of-turn hook is subscribed.
pub fn turn_hook_is_subscribed() -> bool {
    TURN_HOOK.load(Relaxed)
}

/// The event loop is about to sleep (BEFORE_SLEEP: this turn's commands ran, their replies
/// are not written yet) or has woken up (AFTER_SLEEP: before the next turn's commands, for
/// XADDs that ran after BEFORE_SLEEP, such as clients unblocked inside `beforeSleep`):
/// projects the XADDs waiting for it.
pub fn turn_ends(ctx: &Context) {
    if !TURN_PENDING.swap(false, Relaxed) {
        return;
    }
    guard::fault_point("turn");
    run(ctx, false, true);
}

/// A setting that shapes the projectors changed (CONFIG SET of stream-in, group, db or
/// fast-path): the next cron event runs the tick at once instead of up to poll-ms later.
static SETTINGS_CHANGED: AtomicBool = AtomicBool::new(false);

/// Makes the next cron event run the housekeeping tick at once (a setting changed).
pub fn settings_changed() {
    SETTINGS_CHANGED.store(true, Relaxed);
}

/// No housekeeping tick yet: the first one runs at once (it starts catch-up at load).
const NEVER: u64 = u64::MAX;

/// Resets scheduling state (module load; statics survive an unload).
pub fn reset() {
    TURN_PENDING.store(false, Relaxed);
    TURN_HOOK.store(false, Relaxed);
    IO_THREADS_WRITE_EARLY.store(false, Relaxed);
    TIMER_PENDING.store(false, Relaxed);
    TIMER_LIVE.store(false, Relaxed);
    JOB_PENDING.store(false, Relaxed);
    POST_JOBS.store(0, Relaxed);
    LAST_TICK_MS.store(NEVER, Relaxed);
}

/// Whether a post-notification job is queued and has not run yet.
pub fn job_pending() -> bool {
    JOB_PENDING.load(Relaxed)
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

/// After an XADD on a projected stream (the keyspace event, which must not write): runs the
/// drain in a post-notification job where the server has them, else in a 0 ms timer.
pub fn after_xadd(ctx: &Context) {
    if mode() == Mode::Turn && TURN_HOOK.load(Relaxed) {
        TURN_PENDING.store(true, Relaxed);
        return;
    }
    if JOB_PENDING.load(Relaxed) {
        return;
    }
    if POST_JOBS.load(Relaxed) != 2 {
        // SAFETY: reading (copying) a function pointer that the module API set at load.
        let add = unsafe { raw::RedisModule_AddPostNotificationJob };
        // SAFETY: `ctx.ctx` is the live context of the current (keyspace event) callback. The
        // job is a plain function of this library that takes no data (NULL), and its free
        // callback does nothing, so there is nothing to allocate or free per job (the crate's
        // wrapper boxes a closure every time). MODULE UNLOAD is refused while a job is queued.
        let added = add.map(|add| unsafe {
            add(
                ctx.ctx,
                Some(on_post_job),
                ptr::null_mut(),
                Some(free_nothing),
            )
        });
        match added {
            Some(rc) if rc == raw::REDISMODULE_OK as i32 => {
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
    TIMER_LIVE.store(true, Relaxed);
    schedule(ctx);
}

/// The post-notification job that [`after_xadd`] adds: one drain pass over the streams
/// with XADDs due.
unsafe extern "C" fn on_post_job(ctx: *mut raw::RedisModuleCtx, _data: *mut c_void) {
    guard::contain("post-notification job", (), || {
        JOB_PENDING.store(false, Relaxed);
        if ctx.is_null() || !config::running() {
            return;
        }
        guard::fault_point("job");
        run(&Context::new(ctx), false, true);
    })
}

/// The free callback of a post-notification job: the job has no data.
unsafe extern "C" fn free_nothing(_data: *mut c_void) {}

/// Runs a drain pass over the streams with something due (all of them for the tick), and
/// schedules the next one when entries remain. A `live` pass serves an XADD (and keeps the
/// live budget); the others catch up (`heatbridge.catchup-step-us`).
fn run(ctx: &Context, all: bool, live: bool) {
    if drain::run(ctx, all, live) {
        schedule(ctx);
    }
}

/// The pending drain timer serves an XADD (Redis 7.0's live path), not only a catch-up.
static TIMER_LIVE: AtomicBool = AtomicBool::new(false);

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
        let live = TIMER_LIVE.swap(false, Relaxed);
        run(&Context::new(ctx), false, live);
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

/// Runs `f` with the module's own context (made at load), if there is one: for calls that
/// need a context of this module outside a callback, such as a config change.
pub fn with_module_context(f: impl FnOnce(&Context)) {
    let ctx = MODULE_CTX.load(Relaxed);
    if !ctx.is_null() {
        f(&Context::new(ctx));
    }
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

/// The periodic tick, driven by the cron server event: retries and catch-up on a master,
/// then fresh backlog and health for everyone. Runs at most every `heatbridge.poll-ms`.
pub fn housekeeping(ctx: &Context) {
    let now = crate::core::clock::mono_ms();
    let period = config::POLL_MS.load(Relaxed).max(config::MIN_POLL_MS) as u64;
    let last = LAST_TICK_MS.load(Relaxed);
    let changed = SETTINGS_CHANGED.swap(false, Relaxed);
    if !changed && last != NEVER && now.saturating_sub(last) < period {
        return;
    }
    LAST_TICK_MS.store(now, Relaxed);
    // Between commands no post-notification job can still be pending; clearing the flag
    // keeps one lost job from turning live projection into tick-driven projection.
    JOB_PENDING.store(false, Relaxed);
    // The tick always reads the group, so changes no event reports are seen within poll-ms.
    registry::forget_all();
    if can_write(ctx) && !timer_pending() {
        run(ctx, true, false);
    }
    registry::refresh(ctx);
}
