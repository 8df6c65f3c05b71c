//! What the server allows right now, and the context helpers every callback shares: whether
//! this server may write, the database HeatBridge works in, the latency monitor.

use std::time::Duration;

use redis_module::{raw, Context, ContextFlags};

use crate::exporter::state;

/// True when this server may write: a master, not loading, writes not paused.
pub fn can_write(ctx: &Context) -> bool {
    writable(&ctx.get_flags())
}

/// A master that is not loading and whose writes are not paused.
pub fn writable(f: &ContextFlags) -> bool {
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

/// Publishes the role and loading state for health and INFO.
pub fn publish_role(ctx: &Context) {
    let f = ctx.get_flags();
    let mut p = state::published();
    p.is_master = f.contains(ContextFlags::MASTER);
    p.loading = f.contains(ContextFlags::LOADING) || f.contains(ContextFlags::ASYNC_LOADING);
}

/// A database selected for as long as the guard lives; then the context's client gets its
/// own database back. In a command context that client is the caller's, whose `SELECT` must
/// survive `HEATBRIDGE.*` (and every later command of a script that calls one).
pub struct Db<'c> {
    ctx: &'c Context,
    previous: i32,
}

impl<'c> Db<'c> {
    /// Selects database `db` (`heatbridge.db`); `None` if the server has no such database.
    pub fn select(ctx: &'c Context, db: i64) -> Option<Db<'c>> {
        let db = i32::try_from(db).ok()?;
        // SAFETY: ctx.ctx is the live context of the current callback or command;
        // GetSelectedDb only reads it and SelectDb only switches its client's database.
        let (previous, selected) = unsafe {
            let previous = raw::RedisModule_GetSelectedDb.map_or(0, |f| f(ctx.ctx));
            let selected = raw::RedisModule_SelectDb
                .is_some_and(|f| f(ctx.ctx, db) == raw::REDISMODULE_OK as i32);
            (previous, selected)
        };
        selected.then_some(Db { ctx, previous })
    }
}

impl Drop for Db<'_> {
    fn drop(&mut self) {
        // SAFETY: as in `select`; the context outlives the guard.
        unsafe {
            if let Some(f) = raw::RedisModule_SelectDb {
                f(self.ctx.ctx, self.previous);
            }
        }
    }
}

/// The error for a `heatbridge.db` the server does not have.
pub fn no_such_db(db: i64) -> String {
    format!("heatbridge.db is {db}, a database this server does not have (see `databases`)")
}

/// Reports a pass to the server's latency monitor as event `heatbridge-drain`, so that
/// `LATENCY LATEST` shows the longest pass (the server records it only at or above
/// `latency-monitor-threshold`). Timer callbacks and post-notification jobs are not timed
/// by the server itself.
pub fn latency_sample(elapsed: Duration) {
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

/// Whether the server has post-notification jobs (Redis 7.2+, Valkey 8).
pub fn post_notification_jobs() -> bool {
    // SAFETY: reading (copying) a function pointer that the module API set at load.
    let add = unsafe { raw::RedisModule_AddPostNotificationJob };
    add.is_some()
}

/// The server's `io-threads` (`None` when it cannot be read, e.g. CONFIG renamed away). It
/// cannot change at runtime.
pub fn io_threads(ctx: &Context) -> Option<i64> {
    let r: redis_module::CallResult = ctx.call_ext(
        "CONFIG",
        &crate::projector::call::read_opts(),
        &["GET", "io-threads"][..],
    );
    let mut threads = None;
    if let Ok(reply) = r {
        crate::projector::call::for_each_pair(&reply, |name, value| {
            if name == b"io-threads" {
                if let Some(n) = crate::projector::call::str_of(value)
                    .and_then(|v| std::str::from_utf8(v).ok())
                    .and_then(|v| v.parse().ok())
                {
                    threads = Some(n);
                }
            }
        });
    }
    threads
}
