//! Keyspace and server event handlers: filter, skip replicas and loading, schedule the drain.
//! None of them writes; each runs inside a panic guard.

use redis_module::server_events::{FlushSubevent, LoadingSubevent, ServerRole};
use redis_module::{raw, Context, NotifyEvent};
use redis_module_macros::{
    cron_event_handler, flush_event_handler, loading_event_handler, role_changed_event_handler,
};

use crate::engine;
use crate::guard;
use crate::logging;
use crate::state;

fn selected_db(ctx: &Context) -> i32 {
    // SAFETY: ctx.ctx is the live context of the current callback; GetSelectedDb only reads.
    unsafe { raw::RedisModule_GetSelectedDb.map_or(0, |f| f(ctx.ctx)) }
}

/// Stream and generic keyspace events on `heatbridge.stream-in` in database 0: an XADD
/// schedules a drain; anything else forgets the cached group cursor.
pub fn on_stream_event(ctx: &Context, _kind: NotifyEvent, event: &str, key: &[u8]) {
    guard::contain("keyspace event", (), || {
        if !crate::config::STREAM_IN.matches(key) || selected_db(ctx) != 0 {
            return;
        }
        guard::fault_point("event");
        if event == "xadd" {
            engine::on_xadd(ctx);
        } else {
            // XTRIM, XDEL, XGROUP, DEL, RENAME, EXPIRE...: the cached cursor may be stale.
            engine::forget_cursor();
        }
    })
}

/// The periodic housekeeping tick (no module timer, so MODULE UNLOAD is never refused).
#[cron_event_handler]
fn on_cron(ctx: &Context, _hz: u64) {
    guard::contain("cron event", (), || {
        guard::fault_point("cron");
        engine::housekeeping(ctx)
    })
}

/// After an RDB/AOF load or a full sync, catch up from the group cursor.
#[loading_event_handler]
fn on_loading(ctx: &Context, sub: LoadingSubevent) {
    guard::contain("loading event", (), || match sub {
        LoadingSubevent::Ended | LoadingSubevent::Failed => {
            engine::forget_cursor();
            state::published().loading = false;
            engine::schedule(ctx);
        }
        _ => state::published().loading = true,
    })
}

/// SWAPDB sends no keyspace event, yet it can swap another stream in under the name.
extern "C" fn on_swapdb(
    _ctx: *mut raw::RedisModuleCtx,
    _eid: raw::RedisModuleEvent,
    _subevent: u64,
    _data: *mut std::os::raw::c_void,
) {
    guard::contain("swapdb event", (), engine::forget_cursor)
}

/// Subscribes to SWAPDB, which the crate's event macros do not cover.
pub fn subscribe_swapdb(ctx: &Context) {
    // SAFETY: ctx.ctx is the live load context; the callback is a plain extern "C" fn that
    // lives as long as the module and contains every panic.
    unsafe {
        if let Some(subscribe) = raw::RedisModule_SubscribeToServerEvent {
            subscribe(
                ctx.ctx,
                raw::RedisModuleEvent {
                    id: raw::REDISMODULE_EVENT_SWAPDB,
                    dataver: 1,
                },
                Some(on_swapdb),
            );
        }
    }
}

/// FLUSHALL/FLUSHDB drop the stream and its group.
#[flush_event_handler]
fn on_flush(_ctx: &Context, _sub: FlushSubevent) {
    guard::contain("flush event", (), engine::forget_cursor)
}

/// A promoted replica resumes from the replicated group cursor.
#[role_changed_event_handler]
fn on_role_changed(ctx: &Context, role: ServerRole) {
    guard::contain("role event", (), || {
        engine::forget_cursor();
        let master = role == ServerRole::Primary;
        state::published().is_master = master;
        logging::info(if master {
            "now a master: projecting from the group cursor"
        } else {
            "now a replica: projection stops; the master's writes arrive by replication"
        });
        if master {
            engine::schedule(ctx);
        }
    })
}
