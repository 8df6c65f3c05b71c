//! PURE: a snapshot of the module's state becomes the health status and its JSON.

use serde_json::{json, Map, Value};

/// Content type of the health JSON.
pub const CONTENT_TYPE: &str = "application/json";

/// How long an error keeps the status degraded.
pub const ERROR_WINDOW_MS: u64 = 60_000;
/// How far back the backlog is compared to decide that projection is not keeping up.
pub const BACKLOG_WINDOW_MS: u64 = 5_000;
/// Consecutive failed drain passes after which the status is error.
pub const FAILING_PASSES: u64 = 3;

/// The overall status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Projection keeps up and no recent errors.
    Ok,
    /// Recent errors, or a backlog that is not shrinking.
    Degraded,
    /// Not projecting.
    Error,
}

impl Status {
    /// The JSON spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Degraded => "degraded",
            Status::Error => "error",
        }
    }
    /// HTTP status code for GET /health.
    pub fn http_code(self) -> u16 {
        match self {
            Status::Error => 503,
            _ => 200,
        }
    }
    /// Numeric gauge value.
    pub fn gauge(self) -> u8 {
        self as u8
    }
}

/// What the stream key looks like.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum StreamState {
    /// Not checked yet.
    #[default]
    Unknown,
    /// No such key yet: nothing to project.
    Missing,
    /// A stream.
    Stream,
    /// A key of another type.
    WrongType,
}

/// One input stream, as health reports it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StreamHealth {
    /// Its name.
    pub name: String,
    /// Its key's state.
    pub state: StreamState,
    /// Its backlog, if known.
    pub backlog: Option<u64>,
    /// Whether this node projects it (a master owning its slot).
    pub owned: bool,
    /// Why it is not projected although it should be (no hash tag in a cluster, no such
    /// database), if so.
    pub problem: Option<String>,
}

impl StreamState {
    /// The JSON and INFO spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            StreamState::Unknown => "unknown",
            StreamState::Missing => "missing",
            StreamState::Stream => "stream",
            StreamState::WrongType => "wrongtype",
        }
    }
}

/// Everything the status depends on.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Input {
    /// Wall clock, ms.
    pub now_ms: u64,
    /// True on a master; a replica never projects.
    pub is_master: bool,
    /// True while the server loads its dataset.
    pub loading: bool,
    /// State of the stream key.
    pub stream_state: StreamState,
    /// Current backlog (unread + pending), if known.
    pub backlog: Option<u64>,
    /// Backlog at least [`BACKLOG_WINDOW_MS`] ago, if a sample that old exists.
    pub backlog_before: Option<u64>,
    /// Wall-clock ms of the last error, 0 if none.
    pub last_error_ms: u64,
    /// Drain passes that failed in a row.
    pub failing_passes: u64,
    /// ts_epoch of the last projected entry.
    pub last_ts_epoch: Option<f64>,
    /// Duration of the last drain step, ms.
    pub last_loop_ms: f64,
    /// Errors so far, all stages.
    pub errors_total: u64,
    /// Configured stream names (`heatbridge.stream-in` as given).
    pub stream: String,
    /// Each input stream.
    pub streams: Vec<StreamHealth>,
    /// Configured group name.
    pub group: String,
    /// Module version.
    pub version: String,
}

/// The status with the reasons behind it.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// The overall status.
    pub status: Status,
    /// Human-readable reasons for anything but ok.
    pub reasons: Vec<String>,
}

/// Decides the status.
pub fn evaluate(i: &Input) -> Report {
    let mut errors = Vec::new();
    let mut degraded = Vec::new();
    if i.streams.is_empty() && i.stream_state == StreamState::WrongType {
        errors.push(format!("stream key {} is not a stream", i.stream));
    }
    for st in &i.streams {
        if let Some(problem) = &st.problem {
            errors.push(problem.clone());
        } else if st.owned && st.state == StreamState::WrongType {
            errors.push(format!("stream key {} is not a stream", st.name));
        }
    }
    if i.is_master && i.failing_passes >= FAILING_PASSES {
        errors.push(format!("the last {} drain passes failed", i.failing_passes));
    }
    if i.last_error_ms != 0 && i.now_ms.saturating_sub(i.last_error_ms) < ERROR_WINDOW_MS {
        let ago = i.now_ms.saturating_sub(i.last_error_ms) / 1000;
        degraded.push(format!(
            "errors in the last 60 s (the last {ago} s ago; see p27_errors_total)"
        ));
    }
    if i.is_master && !i.loading {
        if let (Some(now), Some(before)) = (i.backlog, i.backlog_before) {
            if now > 0 && now >= before {
                degraded.push(format!(
                    "backlog {now} not shrinking (was {before} 5 s ago)"
                ));
            }
        }
    }
    let status = if !errors.is_empty() {
        Status::Error
    } else if !degraded.is_empty() {
        Status::Degraded
    } else {
        Status::Ok
    };
    errors.extend(degraded);
    Report {
        status,
        reasons: errors,
    }
}

fn number(v: f64) -> Value {
    if v.fract() == 0.0 && v.abs() < 9.0e15 {
        json!(v as i64)
    } else {
        serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number)
    }
}

/// The health JSON: the seed's four fields first, then the extras.
pub fn to_json(i: &Input, r: &Report) -> String {
    let mut m = Map::new();
    m.insert("status".into(), json!(r.status.as_str()));
    m.insert(
        "last_ts_epoch".into(),
        i.last_ts_epoch.map_or(Value::Null, number),
    );
    m.insert(
        "last_loop_ms".into(),
        number((i.last_loop_ms * 1000.0).round() / 1000.0),
    );
    m.insert(
        "backlog".into(),
        i.backlog.map_or(Value::Null, |b| json!(b)),
    );
    m.insert(
        "role".into(),
        json!(if i.is_master { "master" } else { "replica" }),
    );
    m.insert("loading".into(), json!(i.loading));
    m.insert("stream".into(), json!(i.stream));
    m.insert("stream_state".into(), json!(i.stream_state.as_str()));
    let streams: Vec<Value> = i
        .streams
        .iter()
        .map(|st| {
            json!({
                "name": st.name,
                "state": if st.problem.is_some() { "error" } else { st.state.as_str() },
                "backlog": st.backlog,
                "owned": st.owned,
            })
        })
        .collect();
    m.insert("streams".into(), Value::Array(streams));
    m.insert("group".into(), json!(i.group));
    m.insert("errors".into(), json!(i.errors_total));
    m.insert("reasons".into(), json!(r.reasons));
    m.insert("version".into(), json!(i.version));
    Value::Object(m).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Input {
        Input {
            now_ms: 1_000_000,
            is_master: true,
            stream_state: StreamState::Stream,
            backlog: Some(0),
            stream: "s".into(),
            group: "g".into(),
            ..Default::default()
        }
    }

    #[test]
    fn ok_when_idle() {
        let r = evaluate(&base());
        assert_eq!(r.status, Status::Ok);
        assert!(r.reasons.is_empty());
        assert_eq!(r.status.http_code(), 200);
    }

    #[test]
    fn recent_error_degrades_then_clears() {
        let mut i = base();
        i.last_error_ms = i.now_ms - 59_000;
        let r = evaluate(&i);
        assert_eq!(r.status, Status::Degraded);
        assert_eq!(r.status.http_code(), 200);
        assert!(
            r.reasons[0].contains("the last 59 s ago"),
            "{:?}",
            r.reasons
        );
        i.last_error_ms = i.now_ms - 61_000;
        assert_eq!(evaluate(&i).status, Status::Ok);
    }

    #[test]
    fn backlog_not_shrinking_degrades() {
        let mut i = base();
        i.backlog = Some(10);
        i.backlog_before = Some(10);
        assert_eq!(evaluate(&i).status, Status::Degraded);
        i.backlog_before = Some(20);
        assert_eq!(evaluate(&i).status, Status::Ok);
        i.backlog_before = None;
        assert_eq!(evaluate(&i).status, Status::Ok);
        i.is_master = false;
        i.backlog_before = Some(1);
        assert_eq!(
            evaluate(&i).status,
            Status::Ok,
            "a replica does not project"
        );
    }

    #[test]
    fn wrong_type_and_failing_passes_are_errors() {
        let mut i = base();
        i.stream_state = StreamState::WrongType;
        let r = evaluate(&i);
        assert_eq!(r.status, Status::Error);
        assert_eq!(r.status.http_code(), 503);
        assert!(r.reasons[0].contains("not a stream"));
        let mut i = base();
        i.failing_passes = FAILING_PASSES;
        assert_eq!(evaluate(&i).status, Status::Error);
    }

    #[test]
    fn json_has_seed_fields() {
        let mut i = base();
        i.last_ts_epoch = Some(1735689600.0);
        i.last_loop_ms = 0.0412;
        let v: Value = serde_json::from_str(&to_json(&i, &evaluate(&i))).unwrap();
        assert_eq!(v["status"], "ok");
        assert_eq!(v["last_ts_epoch"], 1735689600);
        assert_eq!(v["last_loop_ms"], 0.041);
        assert_eq!(v["backlog"], 0);
        assert_eq!(v["role"], "master");
        let text = to_json(&i, &evaluate(&i));
        assert!(text.starts_with("{\"status\":\"ok\",\"last_ts_epoch\":1735689600,"));
    }

    #[test]
    fn json_nulls_when_unknown() {
        let mut i = base();
        i.backlog = None;
        let v: Value = serde_json::from_str(&to_json(&i, &evaluate(&i))).unwrap();
        assert!(v["last_ts_epoch"].is_null());
        assert!(v["backlog"].is_null());
    }
}
