//! HeatBridge: a Redis module that projects the heat-decision stream into lookup keys.
//!
//! The data flows one way. An XADD on a projected stream fires a keyspace event
//! ([`server::events`]), which never writes: [`projector::schedule`] runs a drain pass after
//! the command (a post-notification job, or a 0 ms timer on Redis 7.0). The pass
//! ([`projector::drain`]) takes from the stream's projector ([`projector::registry`]) what its
//! fast path may trust, reads the group and the entries (or the XADD's own arguments), parses
//! each one ([`core::decision`]), plans its keys ([`core::projection`]) and applies them
//! ([`projector::apply`]), then moves the group cursor. Counters go to [`core::metrics`], the
//! state to [`exporter::state`], which the exporter thread and `INFO` present.
//!
//! The layers, each a folder whose `mod.rs` says what it does; a layer imports only the
//! layers before it in this list (`tests/layers.rs` checks it):
//! 1. [`core`]: pure logic, no `redis_module`;
//! 2. [`support`]: panic containment and logging;
//! 3. [`settings`]: every `heatbridge.*` setting;
//! 4. [`exporter`]: published state and the HTTP thread;
//! 5. [`projector`]: the engine, the only layer that writes keys;
//! 6. [`server`]: event handlers, commands, INFO.
//!
//! This file is the table of contents: the module definition and its thin shims.

pub mod core;
pub mod exporter;
pub mod projector;
pub mod server;
pub mod settings;
pub mod support;

#[cfg(test)]
mod proptests;

use crate::exporter::{state, thread as exporter_thread};
use crate::projector::{apply, capture, drain, host, registry, schedule};
use crate::server::{command_info, commands, events, info};
use crate::settings::{config, module_args};
use crate::support::{guard, logging};

use redis_module::configuration::{ConfigurationContext, ConfigurationFlags};
use redis_module::{redis_module, Context, InfoContext, RedisResult, RedisString, Status};
use redis_module_macros::info_command_handler;

#[cfg(not(test))]
macro_rules! allocator {
    () => {
        redis_module::alloc::RedisAlloc
    };
}
// Unit tests run outside Redis, where the Redis allocator would abort.
#[cfg(test)]
macro_rules! allocator {
    () => {
        std::alloc::System
    };
}

/// `HEATBRIDGE.HEALTH` → bulk string: the health JSON (same as `GET /health`).
fn cmd_health(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    commands::guarded("HEATBRIDGE.HEALTH", ctx, args, commands::health)
}

/// `HEATBRIDGE.METRICS` → bulk string: the Prometheus text (same as `GET /metrics`).
fn cmd_metrics(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    commands::guarded("HEATBRIDGE.METRICS", ctx, args, commands::metrics)
}

/// `HEATBRIDGE.GET <plan_id> [STREAM <stream>]` → the by_plan hash as a map, or nil.
/// ACL-checked as a read of the derived key.
fn cmd_get(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    commands::guarded("HEATBRIDGE.GET", ctx, args, commands::get)
}

/// `HEATBRIDGE.LATEST <symbol> [STREAM <stream>]` → the latest hash as a map, or nil.
/// ACL-checked as a read of the derived key.
fn cmd_latest(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    commands::guarded("HEATBRIDGE.LATEST", ctx, args, commands::latest)
}

/// `HEATBRIDGE.REPLAY [STREAM <stream>] [FROM <id>] [COUNT <n>]` → `[re-projected,
/// last-id]`. Admin.
fn cmd_replay(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    commands::guarded("HEATBRIDGE.REPLAY", ctx, args, commands::replay)
}

/// `INFO heatbridge`: counters and state. For a crash report only the counters, read
/// without a lock (the crashing thread may hold one).
#[info_command_handler]
fn info(ctx: &InfoContext, for_crash_report: bool) -> RedisResult<()> {
    if for_crash_report {
        info::add_crash_info(ctx);
        return Ok(());
    }
    guard::contain("INFO handler", Ok(()), || info::add_info(ctx))
}

fn on_exporter_setting<T>(_: &ConfigurationContext, _: &str, _: &'static T) {
    guard::contain("config change", (), exporter_thread::reconfigure)
}

/// stream-in, group, db or fast-path changed: the projectors are rebuilt and drained at
/// the next cron event, not up to poll-ms later.
fn on_projection_setting<T>(_: &ConfigurationContext, _: &str, _: &'static T) {
    guard::contain("config change", (), || {
        apply::reset();
        schedule::settings_changed();
    })
}

/// project-at changed: the end-of-turn hook follows it.
fn on_project_at<T>(_: &ConfigurationContext, _: &str, _: &'static T) {
    guard::contain("config change", (), || {
        if config::running() {
            schedule::with_module_context(events::follow_project_at);
        }
    })
}

fn on_log_level(_: &ConfigurationContext, _: &str, v: &'static std::sync::Mutex<config::LogLevel>) {
    guard::contain("config change", (), || {
        let level = *v.lock().unwrap_or_else(|e| e.into_inner());
        logging::set_threshold(level.threshold());
    })
}

/// Module load: the arguments are checked first, then every static is reset (the .so may
/// have stayed mapped since an unload) and the exporter starts. Catch-up starts on the first
/// cron tick, not here: init leaves no timer behind, because a server that unloads the
/// module right after init (a config it rejected) must find nothing pending.
fn init(ctx: &Context, args: &[RedisString]) -> Status {
    guard::contain("module load", Status::Err, || {
        // Module arguments are checked and applied here, not by the crate (see
        // config::apply_module_args); an invalid one fails the load cleanly.
        if let Err(e) = module_args::apply_module_redis_args(args) {
            // Our logger, not ctx.log_*: the message holds user input, which the crate's
            // logger would use as a printf format.
            logging::warning(&format!("heatbridge not loaded: {e}"));
            return Status::Err;
        }
        crate::core::metrics::METRICS.reset();
        state::reset();
        schedule::reset();
        drain::reset();
        registry::reset();
        apply::reset();
        capture::reset();
        if let Err(e) = command_info::describe(ctx) {
            logging::warning(&format!("heatbridge not loaded: {e}"));
            return Status::Err;
        }
        config::set_cluster(
            ctx.get_flags()
                .contains(redis_module::ContextFlags::CLUSTER),
        );
        if config::cluster() && config::DB.load(std::sync::atomic::Ordering::Relaxed) != 0 {
            logging::warning("heatbridge not loaded: heatbridge.db must be 0 in a cluster");
            return Status::Err;
        }
        if let Err(e) = events::subscribe(ctx) {
            logging::warning(&format!("heatbridge not loaded: {e}"));
            return Status::Err;
        }
        events::register_command_filter(ctx);
        schedule::keep_module_context(ctx);
        schedule::server_offers(host::post_notification_jobs(), host::io_threads(ctx));
        events::follow_project_at(ctx);
        let level = *config::LOG_LEVEL.lock().unwrap_or_else(|e| e.into_inner());
        logging::set_threshold(level.threshold());
        exporter_thread::init_fd_budget(ctx);
        exporter_thread::start();
        config::set_running(true);
        exporter_thread::reconfigure();
        logging::info(&format!(
            "loaded {} on stream {} (group {})",
            state::VERSION,
            config::STREAM_IN.get(),
            config::GROUP.get()
        ));
        Status::Ok
    })
}

/// Module unload: the exporter thread is stopped and joined, freeing both ports.
fn deinit(_ctx: &Context) -> Status {
    guard::contain("module unload", Status::Ok, || {
        // A post-notification job still queued (an XADD earlier in the same MULTI/EXEC or
        // script) would run after the unload, into a module the server has let go: the
        // unload is refused, and succeeds once the job has run.
        if schedule::job_pending() {
            logging::warning(
                "MODULE UNLOAD refused: a projection is queued for the end of this command; \
                 unload again",
            );
            return Status::Err;
        }
        config::set_running(false);
        exporter_thread::stop();
        schedule::release_module_context();
        // Releases the XADD arguments still held (the statics outlive the unload).
        registry::reset();
        logging::info("unloaded");
        Status::Ok
    })
}

redis_module! {
    name: "heatbridge",
    version: 1,
    allocator: (allocator!(), allocator!()),
    data_types: [],
    init: init,
    deinit: deinit,
    commands: [
        // ACL categories are optional (the last item): redis-module registers them where
        // the server supports them (7.2+, Valkey 8) and skips them on Redis 7.0, which gives
        // module commands no categories at all: there REPLAY is denied by name
        // (docs/reference.md).
        ["heatbridge.health", cmd_health, "readonly allow-loading allow-stale", 0, 0, 0, "", "read"],
        ["heatbridge.metrics", cmd_metrics, "readonly allow-loading allow-stale", 0, 0, 0, "", "read"],
        ["heatbridge.get", cmd_get, "readonly allow-stale getkeys-api", 0, 0, 0, "", "read"],
        ["heatbridge.latest", cmd_latest, "readonly allow-stale getkeys-api", 0, 0, 0, "", "read"],
        ["heatbridge.replay", cmd_replay, "write deny-oom admin getkeys-api", 0, 0, 0, "", "admin dangerous write"],
    ],
    configurations: [
        // Every registered default is a marker no config line can give (config::UNSET...):
        // init tells settings given by a config line from those to take a module argument
        // or the real default (config::DEFAULT_*). See the precedence in src/settings/config.rs.
        i64: [
            ["poll-ms", &config::POLL_MS, config::UNSET, config::MIN_POLL_MS, config::MAX_POLL_MS, ConfigurationFlags::DEFAULT, None],
            ["batch", &config::BATCH, config::UNSET, config::MIN_BATCH, config::MAX_BATCH, ConfigurationFlags::DEFAULT, None],
            ["ttl-plan-sec", &config::TTL_PLAN_SEC, config::UNSET, config::MIN_TTL_SEC, config::MAX_TTL_SEC, ConfigurationFlags::DEFAULT, None],
            ["ttl-symbol-sec", &config::TTL_SYMBOL_SEC, config::UNSET, config::MIN_TTL_SEC, config::MAX_TTL_SEC, ConfigurationFlags::DEFAULT, None],
            ["dedupe-ttl-sec", &config::DEDUPE_TTL_SEC, config::UNSET, 0, config::MAX_TTL_SEC, ConfigurationFlags::DEFAULT, None],
            ["metrics-port", &config::METRICS_PORT, config::UNSET, 0, config::MAX_PORT, ConfigurationFlags::DEFAULT, Some(Box::new(on_exporter_setting))],
            ["health-port", &config::HEALTH_PORT, config::UNSET, 0, config::MAX_PORT, ConfigurationFlags::DEFAULT, Some(Box::new(on_exporter_setting))],
            ["catchup-step-us", &config::CATCHUP_STEP_US, config::UNSET, config::MIN_CATCHUP_STEP_US, config::MAX_CATCHUP_STEP_US, ConfigurationFlags::DEFAULT, None],
            ["db", &config::DB, config::UNSET, 0, config::MAX_DB, ConfigurationFlags::DEFAULT, Some(Box::new(on_projection_setting))],
        ],
        string: [
            ["stream-in", &config::STREAM_IN, config::UNSET_TEXT, ConfigurationFlags::DEFAULT, Some(Box::new(on_projection_setting))],
            ["group", &config::GROUP, config::UNSET_TEXT, ConfigurationFlags::DEFAULT, Some(Box::new(on_projection_setting))],
            ["consumer", &config::CONSUMER, config::UNSET_TEXT, ConfigurationFlags::DEFAULT, None],
            ["bind", &config::BIND, config::UNSET_TEXT, ConfigurationFlags::DEFAULT, Some(Box::new(on_exporter_setting))],
        ],
        bool: [],
        enum: [
            ["fast-path", &config::FAST_PATH, config::SwitchValue::UNSET, ConfigurationFlags::DEFAULT, Some(Box::new(on_projection_setting))],
            ["project-at", &config::PROJECT_AT, config::ProjectAtValue::UNSET, ConfigurationFlags::DEFAULT, Some(Box::new(on_project_at))],
            ["log-level", &config::LOG_LEVEL_SETTING, config::LevelValue::UNSET, ConfigurationFlags::DEFAULT,
                Some(Box::new(|ctx: &ConfigurationContext, name: &str, _: &'static config::LevelSetting| on_log_level(ctx, name, &config::LOG_LEVEL)))],
        ],
        module_args_as_configuration: false,
    ]
}
