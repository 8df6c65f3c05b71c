//! State the main thread publishes for readers that must not take the Redis lock (the
//! exporter thread), and the two documents built from it: metrics text and health JSON.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

use crate::core::clock::now_ms;
use crate::core::health::{self, StreamState};
use crate::core::metrics::{self, Gauges, METRICS};

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
    /// Entries acknowledged so far, sampled with the backlog: (wall ms, count), oldest first.
    progress: VecDeque<(u64, u64)>,
    /// Whether the latest backlog reading succeeded.
    backlog_known: bool,
    /// Drain steps failed in a row.
    pub failing_passes: u64,
    /// Human-readable status of each exporter endpoint (metrics, health).
    pub exporter_status: [String; 2],
    /// Whether each exporter endpoint is bound (metrics, health).
    pub exporter_up: [bool; 2],
    /// Each input stream, as the last refresh saw it.
    pub streams: Vec<health::StreamHealth>,
}

impl Published {
    const fn new() -> Published {
        Published {
            is_master: true,
            loading: false,
            stream_state: StreamState::Unknown,
            backlog: VecDeque::new(),
            progress: VecDeque::new(),
            backlog_known: false,
            failing_passes: 0,
            exporter_status: [String::new(), String::new()],
            exporter_up: [false, false],
            streams: Vec::new(),
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

    /// Records how many entries were acknowledged so far, for the catch-up rate.
    pub fn record_progress(&mut self, now: u64, acknowledged: u64) {
        self.progress.push_back((now, acknowledged));
        while self.progress.len() > 2
            && self
                .progress
                .get(1)
                .is_some_and(|(t, _)| now.saturating_sub(*t) >= health::BACKLOG_WINDOW_MS)
        {
            self.progress.pop_front();
        }
        while self.progress.len() > 256 {
            self.progress.pop_front();
        }
    }

    /// Entries projected per second over the last few seconds while a backlog remains (a
    /// catch-up), 0 once caught up or before two samples a second apart.
    pub fn catchup_rate(&self) -> f64 {
        if self.backlog().is_none_or(|b| b == 0) {
            return 0.0;
        }
        match (self.progress.front(), self.progress.back()) {
            (Some((t0, n0)), Some((t1, n1))) if t1.saturating_sub(*t0) >= 1000 => {
                n1.saturating_sub(*n0) as f64 * 1000.0 / t1.saturating_sub(*t0) as f64
            }
            _ => 0.0,
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
    let stream = crate::settings::config::STREAM_IN.get();
    let group = crate::settings::config::GROUP.get();
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
        streams: p.streams.clone(),
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
        catchup_rate: p.catchup_rate(),
        streams: p
            .streams
            .iter()
            .map(|st| metrics::StreamGauges {
                name: st.name.clone(),
                backlog: st.backlog,
                owned: st.owned,
            })
            .collect(),
    };
    drop(p);
    metrics::render(&METRICS.snapshot(), &gauges, VERSION)
}

/// Fills the `INFO heatbridge` section: state first, then every counter.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catchup_rate_counts_entries_per_second_while_a_backlog_remains() {
        let mut p = Published::new();
        p.record_backlog(0, Some(1000));
        p.record_progress(0, 0);
        assert_eq!(p.catchup_rate(), 0.0, "one sample");
        p.record_backlog(2000, Some(600));
        p.record_progress(2000, 400);
        assert_eq!(p.catchup_rate(), 200.0);
        p.record_backlog(2500, Some(0));
        p.record_progress(2500, 1000);
        assert_eq!(p.catchup_rate(), 0.0, "caught up");
    }

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
