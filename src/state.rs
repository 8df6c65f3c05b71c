//! State the main thread publishes for readers that must not take the Redis lock (the
//! exporter thread), and the two documents built from it: metrics text and health JSON.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

use crate::clock::now_ms;
use crate::health::{self, StreamState};
use crate::metrics::{self, Gauges, METRICS};

/// Module version shown in health and build info.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// What the main thread last saw.
#[derive(Debug, Default)]
pub struct Published {
    /// Whether this server is a master.
    pub is_master: bool,
    /// Whether the server is loading its dataset.
    pub loading: bool,
    /// State of the stream key.
    pub stream_state: StreamState,
    /// Backlog samples, (wall ms, backlog), oldest first.
    backlog: VecDeque<(u64, u64)>,
    /// Whether the latest backlog reading succeeded.
    backlog_known: bool,
    /// Drain steps failed in a row.
    pub failing_passes: u64,
    /// Human-readable status of each exporter endpoint (metrics, health).
    pub exporter_status: [String; 2],
    /// Whether each exporter endpoint is bound (metrics, health).
    pub exporter_up: [bool; 2],
}

impl Published {
    const fn new() -> Published {
        Published {
            is_master: true,
            loading: false,
            stream_state: StreamState::Unknown,
            backlog: VecDeque::new(),
            backlog_known: false,
            failing_passes: 0,
            exporter_status: [String::new(), String::new()],
            exporter_up: [false, false],
        }
    }

    /// Records a backlog reading (or `None` when it could not be read).
    pub fn record_backlog(&mut self, now: u64, backlog: Option<u64>) {
        self.backlog_known = backlog.is_some();
        let Some(b) = backlog else { return };
        self.backlog.push_back((now, b));
        // Keep one sample older than the window and everything newer.
        while self.backlog.len() > 2
            && self
                .backlog
                .get(1)
                .is_some_and(|(t, _)| now.saturating_sub(*t) >= health::BACKLOG_WINDOW_MS)
        {
            self.backlog.pop_front();
        }
        while self.backlog.len() > 256 {
            self.backlog.pop_front();
        }
    }

    /// The latest backlog, if known.
    pub fn backlog(&self) -> Option<u64> {
        if self.backlog_known {
            self.backlog.back().map(|(_, b)| *b)
        } else {
            None
        }
    }

    /// The backlog at least the health window ago.
    fn backlog_before(&self, now: u64) -> Option<u64> {
        self.backlog
            .iter()
            .rev()
            .find(|(t, _)| now.saturating_sub(*t) >= health::BACKLOG_WINDOW_MS)
            .map(|(_, b)| *b)
    }
}

static PUBLISHED: Mutex<Published> = Mutex::new(Published::new());

/// Locks the published state (never poisoned for readers: a panic elsewhere is contained).
pub fn published() -> MutexGuard<'static, Published> {
    PUBLISHED.lock().unwrap_or_else(|e| e.into_inner())
}

/// Puts the published state back to its initial value (module load).
pub fn reset() {
    *published() = Published::new();
}

/// Builds the health input from published state, metrics and settings.
pub fn health_input() -> health::Input {
    let now = now_ms();
    let snap = METRICS.snapshot();
    // Settings are read before the published state is locked: never hold two locks at once.
    let stream = crate::config::STREAM_IN.get();
    let group = crate::config::GROUP.get();
    let p = published();
    health::Input {
        now_ms: now,
        is_master: p.is_master,
        loading: p.loading,
        stream_state: p.stream_state,
        backlog: p.backlog(),
        backlog_before: p.backlog_before(now),
        last_error_ms: METRICS.last_error_ms(),
        failing_passes: p.failing_passes,
        last_ts_epoch: snap.last_ts_epoch,
        last_loop_ms: snap.last_loop_ms,
        errors_total: snap.errors_total(),
        stream,
        group,
        version: VERSION.to_string(),
    }
}

/// The health status and JSON.
pub fn health() -> (health::Status, String) {
    let input = health_input();
    let report = health::evaluate(&input);
    (report.status, health::to_json(&input, &report))
}

/// The metrics text.
pub fn metrics_text() -> String {
    let input = health_input();
    let status = health::evaluate(&input).status;
    let p = published();
    let gauges = Gauges {
        backlog: p.backlog(),
        exporter_up: (p.exporter_up[0], p.exporter_up[1]),
        health_status: status.gauge(),
        is_master: p.is_master,
    };
    drop(p);
    metrics::render(&METRICS.snapshot(), &gauges, VERSION)
}

/// Fills the `INFO heatbridge` section: state first, then every counter.
/// The `heatbridge` INFO section of a crash report: the counters alone, read from atomics
/// and written with static names, so that it neither takes a lock nor allocates.
pub fn add_crash_info(ctx: &redis_module::InfoContext) {
    use redis_module::raw;
    let snap = METRICS.snapshot();
    let counters: [(&std::ffi::CStr, u64); 6] = [
        (c"loops_total", snap.loops),
        (c"in_messages_total", snap.in_messages),
        (c"written_by_plan_total", snap.written_by_plan),
        (c"written_latest_symbol_total", snap.written_latest),
        (c"errors_write_total", snap.errors[1]),
        (c"errors_internal_total", snap.errors[4]),
    ];
    // SAFETY: `ctx.ctx` is the live INFO context of this callback; the names are static C
    // strings.
    unsafe {
        let (Some(section), Some(field)) = (
            raw::RedisModule_InfoAddSection,
            raw::RedisModule_InfoAddFieldULongLong,
        ) else {
            return;
        };
        if section(ctx.ctx, c"".as_ptr().cast_mut()) != raw::REDISMODULE_OK as i32 {
            return;
        }
        for (name, value) in counters {
            field(ctx.ctx, name.as_ptr().cast_mut(), value);
        }
    }
}

pub fn add_info(ctx: &redis_module::InfoContext) -> redis_module::RedisResult<()> {
    let (status, _) = health();
    let snap = METRICS.snapshot();
    let stream = crate::config::STREAM_IN.get();
    let group = crate::config::GROUP.get();
    let post_jobs = match crate::engine::post_jobs_in_use() {
        Some(true) => "yes",
        Some(false) => "no",
        None => "unknown",
    };
    let p = published();
    let mut fields: Vec<(&str, String)> = vec![
        ("version", VERSION.to_string()),
        (
            "role",
            if p.is_master { "master" } else { "replica" }.to_string(),
        ),
        ("stream", stream),
        ("group", group),
        (
            "stream_state",
            format!("{:?}", p.stream_state).to_lowercase(),
        ),
        (
            "backlog",
            p.backlog()
                .map_or_else(|| "unknown".into(), |b| b.to_string()),
        ),
        ("health", status.as_str().to_string()),
        ("post_notification_jobs", post_jobs.to_string()),
        (
            "entries_from_commands",
            crate::capture::status().to_string(),
        ),
        ("exporter_metrics", p.exporter_status[0].clone()),
        ("exporter_health", p.exporter_status[1].clone()),
    ];
    drop(p);
    let counters: [(&str, u64); 12] = [
        ("loops_total", snap.loops),
        ("in_messages_total", snap.in_messages),
        ("written_by_plan_total", snap.written_by_plan),
        ("written_latest_symbol_total", snap.written_latest),
        ("dedupe_skips_total", snap.dedupe_skips),
        ("expired_skips_total", snap.expired_skips),
        ("replayed_total", snap.replayed),
        ("errors_read_total", snap.errors[0]),
        ("errors_write_total", snap.errors[1]),
        ("errors_ack_total", snap.errors[2]),
        ("errors_parse_total", snap.errors[3]),
        ("errors_internal_total", snap.errors[4]),
    ];
    fields.extend(counters.iter().map(|(k, v)| (*k, v.to_string())));
    for (k, v) in [
        ("entries_from_commands_total", &crate::capture::TAKEN),
        (
            "entries_from_commands_mismatch_total",
            &crate::capture::MISMATCHED,
        ),
    ] {
        fields.push((k, v.load(std::sync::atomic::Ordering::Relaxed).to_string()));
    }
    for (code, v) in metrics::HTTP_CODES.iter().zip(snap.http.iter()) {
        fields.push((http_field(*code), v.to_string()));
    }
    fields.push(("lag_ms", metrics::fmt_value(snap.lag_ms)));
    fields.push((
        "last_ts_epoch",
        metrics::fmt_value(snap.last_ts_epoch.unwrap_or(0.0)),
    ));
    let mut section = ctx.builder().add_section("stats");
    for (k, v) in fields {
        section = section.field(k, v)?;
    }
    section.build_section()?.build_info()?;
    Ok(())
}

/// The INFO field that mirrors `p27_exporter_requests_total{code}`.
fn http_field(code: u16) -> &'static str {
    match code {
        200 => "exporter_http_200_total",
        400 => "exporter_http_400_total",
        404 => "exporter_http_404_total",
        405 => "exporter_http_405_total",
        408 => "exporter_http_408_total",
        503 => "exporter_http_503_total",
        _ => "exporter_http_other_total",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backlog_window_keeps_an_old_enough_sample() {
        let mut p = Published::new();
        for t in 0..20u64 {
            p.record_backlog(t * 500, Some(100 - t));
        }
        let now = 19 * 500;
        assert_eq!(p.backlog(), Some(81));
        let before = p.backlog_before(now).unwrap();
        assert!(before > 81 && before <= 91, "{before}");
        assert!(p.backlog.len() <= 13);
        p.record_backlog(now + 1, None);
        assert_eq!(p.backlog(), None);
    }
}
