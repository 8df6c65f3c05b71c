//! `INFO heatbridge`: the counters and the state, as the INFO command shows them.

use crate::core::metrics::{self, METRICS};
use crate::exporter::state::{health, published, VERSION};

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
    let stream = crate::settings::config::STREAM_IN.get();
    let group = crate::settings::config::GROUP.get();
    let post_jobs = match crate::projector::schedule::post_jobs_in_use() {
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
        (
            "catchup_remaining",
            p.backlog()
                .map_or_else(|| "unknown".into(), |b| b.to_string()),
        ),
        ("catchup_rate", format!("{:.0}", p.catchup_rate())),
        ("health", status.as_str().to_string()),
        ("post_notification_jobs", post_jobs.to_string()),
        (
            "project_at",
            crate::projector::schedule::mode().as_str().to_string(),
        ),
        (
            "entries_from_commands",
            crate::projector::capture::status().to_string(),
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
        (
            "entries_from_commands_total",
            &crate::projector::capture::TAKEN,
        ),
        (
            "entries_from_commands_mismatch_total",
            &crate::projector::capture::MISMATCHED,
        ),
    ] {
        fields.push((k, v.load(std::sync::atomic::Ordering::Relaxed).to_string()));
    }
    for (code, v) in metrics::HTTP_CODES.iter().zip(snap.http.iter()) {
        fields.push((http_field(*code), v.to_string()));
    }
    let (callbacks, passes) = crate::projector::drain::callback_counts();
    fields.push(("drain_callbacks_total", callbacks.to_string()));
    fields.push(("drain_passes_total", passes.to_string()));
    fields.push((
        "tie_reads_total",
        crate::projector::read::TIE_READS
            .load(std::sync::atomic::Ordering::Relaxed)
            .to_string(),
    ));
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
