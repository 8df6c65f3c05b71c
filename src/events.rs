//! Keyspace and server event handlers: filter, skip replicas and loading, schedule the drain.
//! None of them writes; each runs inside a panic guard.

use redis_module::server_events::{LoadingSubevent, ServerRole};
use redis_module::{raw, Context, NotifyEvent};
use redis_module_macros::{cron_event_handler, loading_event_handler, role_changed_event_handler};

use crate::engine;
use crate::guard;
use crate::logging;
use crate::state;

fn selected_db(ctx: &Context) -> i32 {
    // SAFETY: ctx.ctx is the live context of the current callback; GetSelectedDb only reads.
    unsafe { raw::RedisModule_GetSelectedDb.map_or(0, |f| f(ctx.ctx)) }
}

/// Stream keyspace events: an XADD on `heatbridge.stream-in` in database 0 schedules a
/// drain. (Only stream events are subscribed: on Valkey 8.1 a module subscribed to generic or
/// new-key events makes COPY ... DB and MOVE leave the client on the other database.)
pub fn on_stream_event(ctx: &Context, _kind: NotifyEvent, event: &str, key: &[u8]) {
    guard::contain("keyspace event", (), || {
        if !crate::config::STREAM_IN.matches(key) || selected_db(ctx) != 0 {
            return;
        }
        guard::fault_point("event");
        if event == "xadd" {
            engine::on_xadd(ctx);
        } else {
            engine::on_stream_change();
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
            engine::forget_group();
            state::published().loading = false;
            engine::schedule(ctx);
        }
        _ => state::published().loading = true,
    })
}

/// A promoted replica resumes from the replicated group cursor.
#[role_changed_event_handler]
fn on_role_changed(ctx: &Context, role: ServerRole) {
    guard::contain("role event", (), || {
        let master = role == ServerRole::Primary;
        engine::forget_group();
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
