//! HEATBRIDGE.REPLAY: re-projects a range of the stream, synchronously, in stream order,
//! ignoring dedupe, with entry-time expiry; latest never moves back to an older decision.

use redis_module::Context;

use crate::core::clock::now_ms;
use crate::core::decision::EntryId;
use crate::core::health::StreamState;
use crate::core::metrics::METRICS;
use crate::projector::apply::{project, Latest, Projected};
use crate::projector::group::Target;
use crate::projector::host::Db;
use crate::projector::read::{read_after, stream_shape};
use crate::projector::writer::Writer;
use crate::settings::config;

/// Most bytes of fields one HEATBRIDGE.REPLAY re-projects: its writes reach replicas as one
/// transaction, which must stay well inside a replica's output buffer.
pub const REPLAY_MAX_BYTES: usize = 32 * 1024 * 1024;

/// Re-projects the entries after `from`, in stream order, ignoring dedupe. It looks at no
/// more than `count` entries and stops after [`REPLAY_MAX_BYTES`] of fields, so one call
/// stays bounded in time and size; the caller pages on with the returned last ID.
/// Returns how many entries were written and the last ID looked at.
pub fn replay(
    ctx: &Context,
    t: &Target,
    from: EntryId,
    count: usize,
) -> Result<(u64, EntryId), String> {
    let s = config::current();
    let Some(_db) = Db::select(ctx, s.db) else {
        return Err(format!("ERR {}", crate::projector::host::no_such_db(s.db)));
    };
    let stream = &t.stream_key;
    match stream_shape(ctx, stream).0 {
        StreamState::Stream => {}
        StreamState::WrongType => return Err("WRONGTYPE input stream key is not a stream".into()),
        _ => return Ok((0, from)),
    }
    let mut last = from;
    let mut written = 0u64;
    let mut examined = 0usize;
    let mut bytes = 0usize;
    let now = now_ms();
    let w = Writer::new(ctx);
    let mut latest = Latest::default();
    'chunks: while examined < count {
        let chunk = read_after(ctx, stream, last, (count - examined).min(1000), false)?;
        if chunk.is_empty() {
            break;
        }
        for e in chunk {
            last = e.id;
            examined += 1;
            bytes += e.fields.as_deref().map_or(0, |f| {
                f.iter()
                    .map(|(k, v)| k.as_slice().len() + v.as_slice().len())
                    .sum()
            });
            if let Projected::Written { latest_at, named } =
                project(ctx, &w, &t.keys, &s, &e, now, false)?
            {
                written += 1;
                if let Some(at) = latest_at {
                    latest.keep(e, at, named);
                }
            }
            if bytes >= REPLAY_MAX_BYTES {
                break 'chunks;
            }
        }
    }
    // Latest goes to the newest entry re-projected for each symbol, unless the stream holds
    // a newer decision of that symbol: latest never moves back.
    latest.write_if_newer(ctx, &w, &t.keys, stream)?;
    // Latest may now hold a decision past the group cursor: the catch-up that reaches it
    // compares instead of writing over it.
    if written > 0 {
        crate::projector::apply::raise_high_water(t.stream.as_bytes(), last);
    }
    METRICS.count_replayed(written);
    Ok((written, last))
}
