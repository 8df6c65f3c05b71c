//! Keyspace and server event handlers: filter, skip replicas and loading, schedule the drain.
//! None of them writes; each runs inside a panic guard.
//!
//! HeatBridge subscribes to its events itself, in `init`, once the module arguments have been
//! accepted, instead of through `redis_module!`, which subscribes before `init` runs. Redis
//! 7.0's failed-load path (fixed in 7.2.4) unloads the library without unsubscribing, so a
//! load refused for a bad argument would leave the server calling into unmapped code.

use std::ffi::{c_char, c_int, c_void};

use redis_module::{raw, Context, NotifyEvent};

use crate::exporter::state;
use crate::projector::capture;
use crate::projector::registry;
use crate::projector::schedule;
use crate::support::guard;
use crate::support::logging;

fn selected_db(ctx: &Context) -> i32 {
    // SAFETY: ctx.ctx is the live context of the current callback; GetSelectedDb only reads.
    unsafe { raw::RedisModule_GetSelectedDb.map_or(0, |f| f(ctx.ctx)) }
}

/// Subscribes the stream keyspace events and the cron, loading, role and module-change server
/// events. Called once per load, after the arguments were accepted, so that nothing is
/// subscribed when the load can still fail. On an error, the server events already
/// subscribed are unsubscribed again.
pub fn subscribe(ctx: &Context) -> Result<(), String> {
    const SERVER_EVENTS: [u64; 4] = [
        raw::REDISMODULE_EVENT_CRON_LOOP,
        raw::REDISMODULE_EVENT_LOADING,
        raw::REDISMODULE_EVENT_REPLICATION_ROLE_CHANGED,
        raw::REDISMODULE_EVENT_MODULE_CHANGE,
    ];
    // SAFETY: reading function pointers that the module API set at load.
    let (Some(server), Some(keyspace)) =
        (unsafe { raw::RedisModule_SubscribeToServerEvent }, unsafe {
            raw::RedisModule_SubscribeToKeyspaceEvents
        })
    else {
        return Err("the server lacks the event subscription API".into());
    };
    let event = |id: u64| raw::RedisModuleEvent { id, dataver: 1 };
    let mut done = 0;
    for id in SERVER_EVENTS {
        // SAFETY: `ctx.ctx` is the live context of the module load; the callback is a plain
        // function of this library, unsubscribed by the server at unload.
        if unsafe { server(ctx.ctx, event(id), Some(on_server_event)) } != OK {
            break;
        }
        done += 1;
    }
    // SAFETY: as above.
    let subscribed = done == SERVER_EVENTS.len()
        && unsafe {
            keyspace(
                ctx.ctx,
                raw::REDISMODULE_NOTIFY_STREAM,
                Some(on_keyspace_event),
            )
        } == OK;
    if subscribed {
        return Ok(());
    }
    for id in SERVER_EVENTS.into_iter().take(done) {
        // SAFETY: as above; a NULL callback unsubscribes.
        unsafe { server(ctx.ctx, event(id), None) };
    }
    Err("cannot subscribe to the server's events".into())
}

const OK: c_int = raw::REDISMODULE_OK as c_int;

/// Subscribes the event loop's BEFORE_SLEEP and AFTER_SLEEP (one event) while XADDs are
/// projected once per turn, and unsubscribes it otherwise: the server then calls HeatBridge
/// twice per event-loop turn, which costs nothing worth having in `command` mode. Called at
/// load and whenever `heatbridge.project-at` changes.
pub fn follow_project_at(ctx: &Context) {
    // SAFETY: reading a function pointer that the module API set at load.
    let Some(server) = (unsafe { raw::RedisModule_SubscribeToServerEvent }) else {
        return;
    };
    let want = schedule::wants_turn_hook();
    // Never "unsubscribe" what is not subscribed: RM_SubscribeToServerEvent with a NULL
    // callback for an event the module has no listener for ADDS a listener with a NULL
    // callback, which the server then calls (a crash in beforeSleep on Redis 8.2).
    if want == schedule::turn_hook_is_subscribed() {
        return;
    }
    let event = raw::RedisModuleEvent {
        id: raw::REDISMODULE_EVENT_EVENTLOOP,
        dataver: 1,
    };
    let callback: raw::RedisModuleEventCallback = if want { Some(on_server_event) } else { None };
    // SAFETY: `ctx.ctx` is a live context of this module (the load's, or the module's own
    // detached one, of which the server reads only the module); the callback is a plain
    // function of this library, and a NULL callback unsubscribes. The server drops every
    // subscription at unload.
    let done = unsafe { server(ctx.ctx, event, callback) } == OK;
    schedule::turn_hook_subscribed(ctx, if done { want } else { !want });
    if want && !done {
        logging::warning(
            "cannot subscribe to the event loop: projecting each XADD on its own instead",
        );
    }
}

/// The keyspace notification callback.
unsafe extern "C" fn on_keyspace_event(
    ctx: *mut raw::RedisModuleCtx,
    kind: c_int,
    event: *const c_char,
    key: *mut raw::RedisModuleString,
) -> c_int {
    guard::contain("keyspace event", (), || {
        if ctx.is_null() || event.is_null() || key.is_null() {
            return;
        }
        let ctx = Context::new(ctx);
        // SAFETY: the server passes a NUL-terminated event name and the key's string, both
        // valid for the duration of the callback.
        let (event, key) = unsafe {
            (
                std::ffi::CStr::from_ptr(event).to_bytes(),
                redis_module::RedisString::string_as_slice(key),
            )
        };
        on_stream_event(&ctx, NotifyEvent::from_bits_truncate(kind), event, key);
    });
    OK
}

/// The server event callback: cron, loading, role change and module change.
unsafe extern "C" fn on_server_event(
    ctx: *mut raw::RedisModuleCtx,
    eid: raw::RedisModuleEvent,
    sub: u64,
    data: *mut c_void,
) {
    guard::contain("server event", (), || {
        if ctx.is_null() {
            return;
        }
        let ctx = Context::new(ctx);
        match eid.id {
            raw::REDISMODULE_EVENT_EVENTLOOP => schedule::turn_ends(&ctx),
            raw::REDISMODULE_EVENT_CRON_LOOP => on_cron(&ctx),
            raw::REDISMODULE_EVENT_LOADING => on_loading(&ctx, sub),
            raw::REDISMODULE_EVENT_REPLICATION_ROLE_CHANGED => on_role_changed(
                &ctx,
                sub == raw::REDISMODULE_EVENT_REPLROLECHANGED_NOW_MASTER,
            ),
            raw::REDISMODULE_EVENT_MODULE_CHANGE => {
                // SAFETY: for this event the server passes a RedisModuleModuleChange whose
                // name is a NUL-terminated string, valid during the callback.
                let name = unsafe {
                    data.cast::<raw::RedisModuleModuleChange>()
                        .as_ref()
                        .filter(|m| !m.module_name.is_null())
                        .map(|m| std::ffi::CStr::from_ptr(m.module_name).to_bytes())
                };
                capture::module_changed(
                    sub == raw::REDISMODULE_SUBEVENT_MODULE_LOADED,
                    name.unwrap_or_default(),
                    crate::core::MODULE_NAME,
                );
            }
            _ => {}
        }
    })
}

/// Stream keyspace events: an XADD on a stream of `heatbridge.stream-in` in `heatbridge.db` schedules a
/// drain. (Only stream events are subscribed: on Valkey 8.1 a module subscribed to generic or
/// new-key events makes COPY ... DB and MOVE leave the client on the other database.)
fn on_stream_event(ctx: &Context, _kind: NotifyEvent, event: &[u8], key: &[u8]) {
    if i64::from(selected_db(ctx))
        != crate::settings::config::DB.load(std::sync::atomic::Ordering::Relaxed)
    {
        return;
    }
    // The projectors know their streams: any other key is passed over there.
    if event == b"xadd" {
        if registry::xadd_event(ctx, key) {
            guard::fault_point("event");
            schedule::after_xadd(ctx);
        }
    } else {
        registry::stream_changed(key);
    }
}

/// The periodic housekeeping tick (no module timer, so MODULE UNLOAD is never refused).
fn on_cron(ctx: &Context) {
    guard::fault_point("cron");
    crate::exporter::thread::refresh_fd_budget(ctx);
    schedule::housekeeping(ctx)
}

/// After an RDB/AOF load or a full sync, catch up from the group cursor.
fn on_loading(ctx: &Context, sub: u64) {
    match sub {
        raw::REDISMODULE_SUBEVENT_LOADING_ENDED | raw::REDISMODULE_SUBEVENT_LOADING_FAILED => {
            registry::forget_all();
            registry::forget_owed();
            crate::projector::apply::reset();
            state::published().loading = false;
            schedule::schedule(ctx);
        }
        _ => state::published().loading = true,
    }
}

/// A promoted replica resumes from the replicated group cursor.
fn on_role_changed(ctx: &Context, master: bool) {
    registry::forget_all();
    registry::forget_owed();
    crate::projector::apply::reset();
    state::published().is_master = master;
    logging::info(if master {
        "now a master: projecting from the group cursor"
    } else {
        "now a replica: projection stops; the master's writes arrive by replication"
    });
    if master {
        schedule::schedule(ctx);
    }
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

/// Commands that replace or empty whole databases under the lookup keys. Lowercase.
const DATA_REPLACED: [&[u8]; 4] = [b"swapdb", b"flushall", b"flushdb", b"debug"];

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
/// module's own calls. It forgets the known group (see `fastpath`) before a command
/// that could change the group or the stream unseen, so the next drain pass reads the group.
/// It never changes the command.
unsafe extern "C" fn command_filter(fctx: *mut raw::RedisModuleCommandFilterCtx) {
    guard::contain("command filter", (), || {
        // SAFETY: `fctx` is the live filter context of this callback.
        let Some(name) = (unsafe { filter_arg(fctx, 0) }) else {
            registry::forget_all();
            return;
        };
        let is_xadd = name.eq_ignore_ascii_case(b"xadd");
        // SAFETY: as above (argument 1 of an XADD is its key).
        let xadd_key = if is_xadd {
            unsafe { filter_arg(fctx, 1) }
        } else {
            None
        };
        // SAFETY: as above; the command is an XADD whenever `keep` is called.
        registry::command_seen(xadd_key, || unsafe { capture::hold_xadd(fctx) });
        if is_xadd {
            return;
        }
        let is = |list: &[&[u8]]| list.iter().any(|c| c.eq_ignore_ascii_case(name));
        if name.eq_ignore_ascii_case(b"module") {
            // SAFETY: as above.
            let (sub, module) = unsafe { (filter_arg(fctx, 1), filter_arg(fctx, 2)) };
            if sub.is_some_and(|a| a.eq_ignore_ascii_case(b"unload"))
                && module
                    .is_some_and(|a| a.eq_ignore_ascii_case(crate::core::MODULE_NAME.as_bytes()))
            {
                schedule::cancel_drain_timer();
            }
            return;
        }
        if is(&ALWAYS_UNSEEN) {
            registry::forget_all();
            // Whole databases replaced or emptied: which decision a latest key holds is
            // known again only once HeatBridge writes it.
            if is(&DATA_REPLACED) {
                crate::projector::apply::reset();
            }
            return;
        }
        if !is(&KEYED_UNSEEN) {
            return;
        }
        // SAFETY: as above.
        let count = unsafe { raw::RedisModule_CommandFilterArgsCount.map_or(0, |f| f(fctx)) };
        // SAFETY: as above; the arguments outlive this callback.
        let args: Vec<&[u8]> = (1..count)
            .filter_map(|i| unsafe { filter_arg(fctx, i) })
            .collect();
        registry::forget_named(|stream| args.contains(&stream));
    })
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
        registry::distrust_known_group();
    }
}
