//! Keyspace and server event handlers: filter, skip replicas and loading, schedule the drain.
//! None of them writes; each runs inside a panic guard.

use redis_module::server_events::{LoadingSubevent, ModuleChangeSubevent, ServerRole};
use redis_module::{raw, Context, NotifyEvent};
use redis_module_macros::{
    cron_event_handler, loading_event_handler, module_changed_event_handler,
    role_changed_event_handler,
};

use crate::capture;
use crate::config;
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
            engine::on_xadd(ctx, key);
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

/// Commands that can change the group (its cursor or pending list) or put another stream under
/// the stream's name without a stream keyspace event, when one of their arguments is the
/// stream's name. Lowercase.
const KEYED_UNSEEN: [&[u8]; 12] = [
    b"xreadgroup",
    b"xclaim",
    b"xautoclaim",
    b"xack",
    b"rename",
    b"renamenx",
    b"restore",
    b"restore-asking",
    b"copy",
    b"move",
    b"del",
    b"unlink",
];

/// Commands that forget the known group whatever their arguments: they change whole
/// databases, the settings, or run queued commands (a MULTI's commands pass the filter when
/// they are queued, not when EXEC runs them). Lowercase.
const ALWAYS_UNSEEN: [&[u8]; 7] = [
    b"exec",
    b"swapdb",
    b"flushall",
    b"flushdb",
    b"config",
    b"debug",
    b"migrate",
];

/// The bytes of a filter argument, borrowed from it.
///
/// SAFETY: `fctx` must be the live filter context of the current callback; the slice is
/// valid until the filter returns.
unsafe fn filter_arg<'a>(
    fctx: *mut raw::RedisModuleCommandFilterCtx,
    pos: i32,
) -> Option<&'a [u8]> {
    let arg = raw::RedisModule_CommandFilterArgGet?(fctx, pos);
    if arg.is_null() {
        return None;
    }
    let mut len = 0usize;
    let p = raw::RedisModule_StringPtrLen?(arg, &mut len);
    if p.is_null() {
        return None;
    }
    Some(std::slice::from_raw_parts(p.cast::<u8>(), len))
}

/// Runs before every command (also inside scripts, and when MULTI queues it), except the
/// module's own calls. It forgets the known group (see `engine::Known`) before a command
/// that could change the group or the stream unseen, so the next drain pass reads the group.
/// It never changes the command.
unsafe extern "C" fn command_filter(fctx: *mut raw::RedisModuleCommandFilterCtx) {
    guard::contain("command filter", (), || {
        // SAFETY: `fctx` is the live filter context of this callback.
        let Some(name) = (unsafe { filter_arg(fctx, 0) }) else {
            capture::clear();
            return;
        };
        // SAFETY: as above.
        unsafe { capture::on_command(fctx, name, |a| config::STREAM_IN.matches(a)) };
        let is = |list: &[&[u8]]| list.iter().any(|c| c.eq_ignore_ascii_case(name));
        if is(&ALWAYS_UNSEEN) {
            engine::forget_group();
            return;
        }
        if !is(&KEYED_UNSEEN) {
            return;
        }
        // SAFETY: as above.
        let count = unsafe { raw::RedisModule_CommandFilterArgsCount.map_or(0, |f| f(fctx)) };
        let names_stream = (1..count)
            .any(|i| unsafe { filter_arg(fctx, i) }.is_some_and(|a| config::STREAM_IN.matches(a)));
        if names_stream {
            engine::forget_group();
        }
    })
}

/// Another module was loaded or unloaded: the XADD arguments the filter keeps are trusted
/// only while HeatBridge is the only module (see `capture`).
#[module_changed_event_handler]
fn on_module_changed(_ctx: &Context, _sub: ModuleChangeSubevent) {
    guard::contain("module change event", (), capture::modules_changed)
}

/// Registers [`command_filter`] (module load). The server drops it at unload.
pub fn register_command_filter(ctx: &Context) {
    // SAFETY: `ctx.ctx` is the live context of the load; the callback is a plain function
    // that stays valid while the module is loaded.
    let filter = unsafe {
        raw::RedisModule_RegisterCommandFilter.map(|f| {
            f(
                ctx.ctx,
                Some(command_filter),
                raw::REDISMODULE_CMDFILTER_NOSELF as i32,
            )
        })
    };
    if filter.is_none_or(|f| f.is_null()) {
        logging::warning(
            "command filters unavailable: every drain pass reads the group (XINFO GROUPS)",
        );
        engine::distrust_known_group();
    }
}
