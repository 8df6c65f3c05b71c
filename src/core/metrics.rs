//! Counters and gauges as relaxed atomics, updated where the work happens, and their
//! Prometheus text rendering (format 0.0.4). The exporter thread only reads them.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Content type of the metrics text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The stages that `p27_errors_total` is labelled with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Reading the stream or the group failed.
    Read = 0,
    /// Writing a lookup key failed.
    Write = 1,
    /// Advancing or acknowledging the group failed.
    Ack = 2,
    /// The entry was invalid.
    Parse = 3,
    /// A contained panic or other internal fault.
    Internal = 4,
}

const STAGES: [(Stage, &str); 5] = [
    (Stage::Read, "read"),
    (Stage::Write, "write"),
    (Stage::Ack, "ack"),
    (Stage::Parse, "parse"),
    (Stage::Internal, "internal"),
];

/// Every counter and gauge HeatBridge exports.
pub struct Metrics {
    loops: AtomicU64,
    in_messages: AtomicU64,
    written_by_plan: AtomicU64,
    written_latest: AtomicU64,
    dedupe_skips: AtomicU64,
    expired_skips: AtomicU64,
    replayed: AtomicU64,
    errors: [AtomicU64; 5],
    /// f64 bits.
    lag_ms: AtomicU64,
    /// f64 bits; NaN until an entry with a numeric ts_epoch is projected.
    last_ts_epoch: AtomicU64,
    /// f64 bits.
    last_loop_ms: AtomicU64,
    last_error_ms: AtomicU64,
    /// Exporter replies, by [`HTTP_CODES`] index.
    http: [AtomicU64; 6],
}

/// Status codes the exporter answers with, in the order `p27_exporter_requests_total` shows.
pub const HTTP_CODES: [u16; 6] = [200, 400, 404, 405, 408, 503];

/// The one set of metrics of the loaded module.
pub static METRICS: Metrics = Metrics::new();

#[allow(clippy::declare_interior_mutable_const)]
const ZERO: AtomicU64 = AtomicU64::new(0);

impl Metrics {
    const fn new() -> Metrics {
        Metrics {
            loops: ZERO,
            in_messages: ZERO,
            written_by_plan: ZERO,
            written_latest: ZERO,
            dedupe_skips: ZERO,
            expired_skips: ZERO,
            replayed: ZERO,
            errors: [ZERO, ZERO, ZERO, ZERO, ZERO],
            lag_ms: ZERO,
            last_ts_epoch: AtomicU64::new(0x7ff8_0000_0000_0000),
            last_loop_ms: ZERO,
            last_error_ms: ZERO,
            http: [ZERO, ZERO, ZERO, ZERO, ZERO, ZERO],
        }
    }

    /// Puts everything back to zero; a fresh MODULE LOAD starts from here.
    pub fn reset(&self) {
        for a in [
            &self.loops,
            &self.in_messages,
            &self.written_by_plan,
            &self.written_latest,
            &self.dedupe_skips,
            &self.expired_skips,
            &self.replayed,
            &self.lag_ms,
            &self.last_loop_ms,
            &self.last_error_ms,
        ] {
            a.store(0, Relaxed);
        }
        for e in self.errors.iter().chain(self.http.iter()) {
            e.store(0, Relaxed);
        }
        self.last_ts_epoch.store(f64::NAN.to_bits(), Relaxed);
    }

    /// One drain step ran, taking `ms`.
    pub fn count_loop(&self, ms: f64) {
        self.loops.fetch_add(1, Relaxed);
        self.last_loop_ms.store(ms.to_bits(), Relaxed);
    }
    /// `n` entries were read from the stream.
    pub fn count_in(&self, n: u64) {
        self.in_messages.fetch_add(n, Relaxed);
    }
    /// A by_plan key was written.
    pub fn count_by_plan(&self) {
        self.written_by_plan.fetch_add(1, Relaxed);
    }
    /// A latest key (with its pointer) was written.
    pub fn count_latest(&self) {
        self.written_latest.fetch_add(1, Relaxed);
    }
    /// An entry was skipped by dedupe.
    pub fn count_dedupe_skip(&self) {
        self.dedupe_skips.fetch_add(1, Relaxed);
    }
    /// An entry was too old to create any key.
    pub fn count_expired_skip(&self) {
        self.expired_skips.fetch_add(1, Relaxed);
    }
    /// An entry was re-projected by HEATBRIDGE.REPLAY.
    pub fn count_replayed(&self, n: u64) {
        self.replayed.fetch_add(n, Relaxed);
    }
    /// An error at `stage`, at wall-clock `now_ms`.
    pub fn count_error(&self, stage: Stage, now_ms: u64) {
        if let Some(e) = self.errors.get(stage as usize) {
            e.fetch_add(1, Relaxed);
        }
        self.last_error_ms.store(now_ms, Relaxed);
    }
    /// The exporter answered with status `code`.
    pub fn count_http(&self, code: u16) {
        let slot = HTTP_CODES.iter().position(|c| *c == code);
        if let Some(a) = slot.and_then(|i| self.http.get(i)) {
            a.fetch_add(1, Relaxed);
        }
    }
    /// A contained panic.
    pub fn count_internal_error(&self) {
        self.count_error(Stage::Internal, crate::core::clock::now_ms());
    }
    /// Records the last projected entry: its lag and its ts_epoch, if numeric.
    pub fn record_projected(&self, lag_ms: f64, ts_epoch: Option<f64>) {
        self.lag_ms.store(lag_ms.to_bits(), Relaxed);
        if let Some(ts) = ts_epoch {
            self.last_ts_epoch.store(ts.to_bits(), Relaxed);
        }
    }

    /// Errors at `stage` so far.
    pub fn errors(&self, stage: Stage) -> u64 {
        self.errors
            .get(stage as usize)
            .map_or(0, |e| e.load(Relaxed))
    }
    /// Contained internal errors so far.
    pub fn internal_errors(&self) -> u64 {
        self.errors(Stage::Internal)
    }
    /// Wall-clock ms of the last error, 0 if none.
    pub fn last_error_ms(&self) -> u64 {
        self.last_error_ms.load(Relaxed)
    }

    /// A consistent-enough copy of every value, for rendering.
    pub fn snapshot(&self) -> Snapshot {
        let f = |a: &AtomicU64| f64::from_bits(a.load(Relaxed));
        Snapshot {
            loops: self.loops.load(Relaxed),
            in_messages: self.in_messages.load(Relaxed),
            written_by_plan: self.written_by_plan.load(Relaxed),
            written_latest: self.written_latest.load(Relaxed),
            dedupe_skips: self.dedupe_skips.load(Relaxed),
            expired_skips: self.expired_skips.load(Relaxed),
            replayed: self.replayed.load(Relaxed),
            errors: STAGES.map(|(s, _)| self.errors(s)),
            lag_ms: f(&self.lag_ms),
            last_ts_epoch: Some(f(&self.last_ts_epoch)).filter(|v| !v.is_nan()),
            last_loop_ms: f(&self.last_loop_ms),
            http: self.http.each_ref().map(|a| a.load(Relaxed)),
        }
    }
}

/// Values of every metric at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    /// p27_loops_total
    pub loops: u64,
    /// p27_in_messages_total
    pub in_messages: u64,
    /// p27_written_total{kind="by_plan"}
    pub written_by_plan: u64,
    /// p27_written_total{kind="latest_symbol"}
    pub written_latest: u64,
    /// p27_dedupe_skips_total
    pub dedupe_skips: u64,
    /// p27_expired_skips_total
    pub expired_skips: u64,
    /// p27_replayed_total
    pub replayed: u64,
    /// p27_errors_total by stage, in [`Stage`] order.
    pub errors: [u64; 5],
    /// p27_lag_ms
    pub lag_ms: f64,
    /// p27_last_ts_epoch (absent until known; rendered as 0)
    pub last_ts_epoch: Option<f64>,
    /// p27_last_loop_seconds, in ms
    pub last_loop_ms: f64,
    /// p27_exporter_requests_total by code, in [`HTTP_CODES`] order.
    pub http: [u64; 6],
}

impl Snapshot {
    /// Sum of errors over every stage.
    pub fn errors_total(&self) -> u64 {
        self.errors.iter().sum()
    }
}

/// State that is not a counter: published by the main thread for rendering.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Gauges {
    /// Entries not yet acknowledged by the group (unread plus pending), if known.
    pub backlog: Option<u64>,
    /// Whether each exporter endpoint is bound: (metrics, health).
    pub exporter_up: (bool, bool),
    /// 0 ok, 1 degraded, 2 error.
    pub health_status: u8,
    /// 1 on a master, 0 on a replica.
    pub is_master: bool,
    /// Entries projected per second while a backlog remains; 0 once caught up.
    pub catchup_rate: f64,
    /// Each input stream.
    pub streams: Vec<StreamGauges>,
}

/// One input stream's gauges.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StreamGauges {
    /// The stream's name.
    pub name: String,
    /// Its backlog, if known.
    pub backlog: Option<u64>,
    /// Whether this node projects it.
    pub owned: bool,
}

fn as_refs(v: &[(String, String)]) -> Vec<(&str, String)> {
    v.iter().map(|(l, x)| (l.as_str(), x.clone())).collect()
}

/// A label value in Prometheus text: backslash, double quote and newline escaped.
pub fn label_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Formats a sample value the way Prometheus reads it.
pub fn fmt_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(&str, String)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, value) in samples {
        let _ = writeln!(out, "{name}{labels} {value}");
    }
}

/// Renders every series, seed names first, all present from the start.
pub fn render(s: &Snapshot, g: &Gauges, version: &str) -> String {
    let mut o = String::with_capacity(2048);
    let n = |v: u64| v.to_string();
    family(
        &mut o,
        "p27_loops_total",
        "counter",
        "Drain steps run.",
        &[("", n(s.loops))],
    );
    family(
        &mut o,
        "p27_in_messages_total",
        "counter",
        "Entries read from the stream.",
        &[("", n(s.in_messages))],
    );
    family(
        &mut o,
        "p27_written_total",
        "counter",
        "Lookup keys written, by kind.",
        &[
            ("{kind=\"by_plan\"}", n(s.written_by_plan)),
            ("{kind=\"latest_symbol\"}", n(s.written_latest)),
        ],
    );
    family(
        &mut o,
        "p27_dedupe_skips_total",
        "counter",
        "Entries skipped because their plan_id was inside the dedupe window.",
        &[("", n(s.dedupe_skips))],
    );
    let errors: Vec<(String, String)> = STAGES
        .iter()
        .zip(s.errors.iter())
        .map(|((_, name), v)| (format!("{{stage=\"{name}\"}}"), n(*v)))
        .collect();
    let errors: Vec<(&str, String)> = errors
        .iter()
        .map(|(l, v)| (l.as_str(), v.clone()))
        .collect();
    family(
        &mut o,
        "p27_errors_total",
        "counter",
        "Errors, by stage.",
        &errors,
    );
    family(
        &mut o,
        "p27_lag_ms",
        "gauge",
        "Milliseconds from the entry time to its projection, for the last projected entry.",
        &[("", fmt_value(s.lag_ms))],
    );
    family(
        &mut o,
        "p27_last_ts_epoch",
        "gauge",
        "ts_epoch field of the last projected entry (0 until one is projected).",
        &[("", fmt_value(s.last_ts_epoch.unwrap_or(0.0)))],
    );
    family(
        &mut o,
        "p27_expired_skips_total",
        "counter",
        "Entries older than every key TTL, which created no key.",
        &[("", n(s.expired_skips))],
    );
    family(
        &mut o,
        "p27_replayed_total",
        "counter",
        "Entries re-projected by HEATBRIDGE.REPLAY.",
        &[("", n(s.replayed))],
    );
    family(
        &mut o,
        "p27_last_loop_seconds",
        "gauge",
        "Duration of the last drain step.",
        &[("", fmt_value(s.last_loop_ms / 1000.0))],
    );
    family(
        &mut o,
        "p27_backlog",
        "gauge",
        "Entries not yet acknowledged by the group: unread plus pending (-1 if unknown).",
        &[("", g.backlog.map_or_else(|| "-1".to_string(), n))],
    );
    let per_stream = |f: &dyn Fn(&StreamGauges) -> String| -> Vec<(String, String)> {
        g.streams
            .iter()
            .map(|st| (format!("{{stream=\"{}\"}}", label_value(&st.name)), f(st)))
            .collect()
    };
    let backlogs = per_stream(&|st| st.backlog.map_or_else(|| "-1".to_string(), n));
    let owned = per_stream(&|st| n(u64::from(st.owned)));
    family(
        &mut o,
        "p27_stream_backlog",
        "gauge",
        "Entries of each input stream not yet acknowledged by its group (-1 if unknown).",
        &as_refs(&backlogs),
    );
    family(
        &mut o,
        "p27_stream_owned",
        "gauge",
        "1 when this node projects the stream (a master owning its slot), else 0.",
        &as_refs(&owned),
    );
    family(
        &mut o,
        "p27_catchup_rate",
        "gauge",
        "Entries projected per second while a backlog remains (p27_backlog); 0 once caught up.",
        &[("", fmt_value(g.catchup_rate))],
    );
    family(
        &mut o,
        "p27_health_status",
        "gauge",
        "Health: 0 ok, 1 degraded, 2 error.",
        &[("", n(u64::from(g.health_status)))],
    );
    family(
        &mut o,
        "p27_master",
        "gauge",
        "1 when this server is a master that projects, 0 on a replica.",
        &[("", n(u64::from(g.is_master)))],
    );
    family(
        &mut o,
        "p27_exporter_up",
        "gauge",
        "1 when the exporter endpoint is bound.",
        &[
            ("{endpoint=\"metrics\"}", n(u64::from(g.exporter_up.0))),
            ("{endpoint=\"health\"}", n(u64::from(g.exporter_up.1))),
        ],
    );
    let http: Vec<(String, String)> = HTTP_CODES
        .iter()
        .zip(s.http.iter())
        .map(|(code, v)| (format!("{{code=\"{code}\"}}"), n(*v)))
        .collect();
    let http: Vec<(&str, String)> = http.iter().map(|(l, v)| (l.as_str(), v.clone())).collect();
    family(
        &mut o,
        "p27_exporter_requests_total",
        "counter",
        "Requests the exporter answered, by HTTP status code.",
        &http,
    );
    family(
        &mut o,
        "p27_build_info",
        "gauge",
        "Build information; always 1.",
        &[(&format!("{{version=\"{version}\"}}"), "1".to_string())],
    );
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_seed_series_is_present_at_zero() {
        let text = render(&Snapshot::default(), &Gauges::default(), "0.1.0");
        for line in [
            "p27_loops_total 0",
            "p27_in_messages_total 0",
            "p27_written_total{kind=\"by_plan\"} 0",
            "p27_written_total{kind=\"latest_symbol\"} 0",
            "p27_dedupe_skips_total 0",
            "p27_errors_total{stage=\"read\"} 0",
            "p27_errors_total{stage=\"write\"} 0",
            "p27_errors_total{stage=\"ack\"} 0",
            "p27_errors_total{stage=\"parse\"} 0",
            "p27_lag_ms 0",
            "p27_last_ts_epoch 0",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}\n{text}");
        }
    }

    #[test]
    fn one_help_and_type_per_family_and_no_duplicate_samples() {
        let text = render(&Snapshot::default(), &Gauges::default(), "v");
        let mut helps = std::collections::HashSet::new();
        let mut samples = std::collections::HashSet::new();
        for l in text.lines() {
            if let Some(rest) = l.strip_prefix("# HELP ") {
                assert!(helps.insert(rest.split(' ').next().unwrap().to_string()));
            } else if !l.starts_with('#') {
                let series = l.rsplit_once(' ').unwrap().0.to_string();
                assert!(samples.insert(series), "duplicate {l}");
            }
        }
        assert_eq!(
            text.lines().filter(|l| l.starts_with("# TYPE")).count(),
            helps.len()
        );
    }

    #[test]
    fn values_render() {
        let s = Snapshot {
            in_messages: 3,
            written_by_plan: 2,
            lag_ms: 12.5,
            last_ts_epoch: Some(1735689600.0),
            ..Default::default()
        };
        let g = Gauges {
            backlog: Some(4),
            ..Default::default()
        };
        let text = render(&s, &g, "v");
        assert!(text.contains("\np27_in_messages_total 3\n"));
        assert!(text.contains("p27_written_total{kind=\"by_plan\"} 2\n"));
        assert!(text.contains("\np27_lag_ms 12.5\n"));
        assert!(text.contains("\np27_last_ts_epoch 1735689600\n"));
        assert!(text.contains("\np27_backlog 4\n"));
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn special_floats() {
        assert_eq!(fmt_value(f64::NAN), "NaN");
        assert_eq!(fmt_value(f64::INFINITY), "+Inf");
        assert_eq!(fmt_value(0.04), "0.04");
    }

    #[test]
    fn counters_and_reset() {
        let m = Metrics::new();
        m.count_in(3);
        m.count_error(Stage::Parse, 10);
        m.record_projected(5.0, Some(7.0));
        let s = m.snapshot();
        assert_eq!(s.in_messages, 3);
        assert_eq!(s.errors[Stage::Parse as usize], 1);
        assert_eq!(s.last_ts_epoch, Some(7.0));
        assert_eq!(m.last_error_ms(), 10);
        m.reset();
        assert_eq!(
            m.snapshot(),
            Snapshot {
                last_ts_epoch: None,
                ..Default::default()
            }
        );
    }
}
