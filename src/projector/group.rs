//! Group I/O: the consumer group of one stream, read (XINFO GROUPS, XPENDING), created
//! (XGROUP CREATE), moved (XGROUP SETID) and acknowledged (XACK). Every write is replicated.

use std::sync::{Arc, OnceLock};

use redis_module::{CallReply, CallResult, Context, RedisString};

use crate::core::decision::EntryId;
use crate::core::projection::Keys;
use crate::projector::call::{
    self, for_each_pair, int_of, read_opts, reply_error, str_of, write_opts,
};
use crate::projector::writer::{self, rstr};
use crate::support::logging;

/// One stream and its consumer group, by name and as Redis strings (references to the ones
/// its projector keeps), for the length of one pass or command.
pub struct Target {
    /// The stream's name.
    pub stream: Arc<str>,
    /// The group's name (`heatbridge.group`).
    pub group: Arc<str>,
    /// The consumer whose pending entries are finished first (`heatbridge.consumer`).
    pub consumer: Arc<str>,
    /// The stream's name as a Redis string.
    pub stream_key: RedisString,
    /// The group's name as a Redis string.
    pub group_key: RedisString,
    /// The names of the keys derived from the stream.
    pub keys: Keys,
}

/// The group as XINFO GROUPS shows it.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct GroupInfo {
    /// Last-delivered ID (the cursor).
    pub last_id: EntryId,
    /// Entries pending in the whole group.
    pub pending: u64,
    /// Unread entries, when the server can tell.
    pub lag: Option<u64>,
    /// The group's logical read counter, when valid.
    pub entries_read: Option<u64>,
}

impl GroupInfo {
    /// The stream's entries-added counter, known when both the read counter and the lag
    /// are (a valid lag means no deletion fragments the stream after the cursor).
    pub fn entries_added(&self) -> Option<u64> {
        self.entries_read.zip(self.lag).map(|(r, l)| r + l)
    }

    /// The read counter after moving the cursor over `k` more entries, when it can be kept
    /// exact (as XREADGROUP does: only with no deletion after the cursor).
    pub fn entries_read_after(&self, k: u64) -> Option<u64> {
        self.lag.and(self.entries_read).map(|r| r + k)
    }
}

/// Reads the group's cursor, pending count and lag. `Ok(None)` when there is no such group.
pub fn read_group(ctx: &Context, s: &Target) -> Result<Option<GroupInfo>, String> {
    let r: CallResult = ctx.call_ext("XINFO", &read_opts(), &["GROUPS", &*s.stream][..]);
    let reply = r.map_err(|e| e.to_utf8_string().unwrap_or_else(|| "XINFO failed".into()))?;
    let CallReply::Array(groups) = reply else {
        return Err("unexpected XINFO GROUPS reply".into());
    };
    for g in groups.iter() {
        let Ok(fields) = g else {
            continue;
        };
        let mut ours = false;
        let mut info = GroupInfo::default();
        for_each_pair(&fields, |k, v| match k {
            b"name" => ours = str_of(v) == Some(s.group.as_bytes()),
            b"pending" => info.pending = int_of(v).unwrap_or(0).max(0) as u64,
            b"last-delivered-id" => {
                info.last_id = str_of(v).and_then(EntryId::parse).unwrap_or_default()
            }
            b"lag" => info.lag = int_of(v).map(|l| l.max(0) as u64),
            b"entries-read" => info.entries_read = int_of(v).map(|l| l.max(0) as u64),
            _ => {}
        });
        if ours {
            return Ok(Some(info));
        }
    }
    Ok(None)
}

/// Creates the group at the start of the stream (`BUSYGROUP`, a group that exists, is fine).
pub fn create_group(ctx: &Context, s: &Target) -> Result<(), String> {
    let r: CallResult = ctx.call_ext(
        "XGROUP",
        &write_opts(),
        &["CREATE", &*s.stream, &*s.group, "0", "ENTRIESREAD", "0"][..],
    );
    match reply_error(&r) {
        None => {
            logging::info(&format!("created group {} on {}", s.group, s.stream));
            Ok(())
        }
        Some(e) if e.starts_with("BUSYGROUP") => Ok(()),
        Some(e) => Err(e),
    }
}

/// The ID that moves a group cursor to the stream's last entry.
pub const LAST_ID: &[u8] = b"$";

/// Moves the group cursor to `id` (an entry ID or [`LAST_ID`]), replicated. With
/// `entries_read` the group's read counter stays valid, so XINFO GROUPS (and the backlog)
/// know the lag even while the cursor is in the middle of the stream.
pub fn advance(
    ctx: &Context,
    s: &Target,
    id: &[u8],
    entries_read: Option<u64>,
) -> Result<(), String> {
    static SETID: OnceLock<writer::Kept> = OnceLock::new();
    static ENTRIESREAD: OnceLock<writer::Kept> = OnceLock::new();
    let id = rstr(ctx, id);
    let setid = writer::kept(&SETID, b"SETID");
    let (stream, group) = (&s.stream_key, &s.group_key);
    match entries_read {
        Some(n) => {
            let n = rstr(ctx, writer::Digits::of(n).as_bytes());
            let keyword = writer::kept(&ENTRIESREAD, b"ENTRIESREAD");
            let args = [setid, stream, group, &id, keyword, &n];
            call::call(ctx, c"XGROUP", call::WRITE, &args).map(drop)
        }
        // Without a counter, the ENTRIESREAD keyword is left out too.
        None => call::call(ctx, c"XGROUP", call::WRITE, &[setid, stream, group, &id]).map(drop),
    }
}

/// The stream's entries-added counter: from the group when it can tell, else from
/// XINFO STREAM (only after deletions fragmented the stream, or right after a restart of the
/// counter).
pub fn stream_entries_added(ctx: &Context, s: &Target, group: &GroupInfo) -> Option<u64> {
    if let Some(n) = group.entries_added() {
        return Some(n);
    }
    let r: CallResult = ctx.call_ext("XINFO", &read_opts(), &["STREAM", &*s.stream][..]);
    let Ok(reply) = r else {
        return None;
    };
    let mut added = None;
    for_each_pair(&reply, |k, v| {
        if k == b"entries-added" {
            added = int_of(v).map(|n| n.max(0) as u64);
        }
    });
    added
}

/// XLEN of the stream (0 when it cannot be read).
pub fn stream_len(ctx: &Context, s: &Target) -> u64 {
    let r: CallResult = ctx.call_ext("XLEN", &read_opts(), &[&*s.stream][..]);
    match r {
        Ok(CallReply::I64(n)) => n.to_i64().max(0) as u64,
        _ => 0,
    }
}

/// Most pending entries one step finishes.
const MAX_PENDING_READ: usize = 1000;

/// The IDs of up to `count` entries pending for the consumer, oldest first.
pub fn pending_ids(ctx: &Context, s: &Target, count: usize) -> Result<Vec<EntryId>, String> {
    let count = count.min(MAX_PENDING_READ).to_string();
    let r: CallResult = ctx.call_ext(
        "XPENDING",
        &read_opts(),
        &[
            &*s.stream,
            &*s.group,
            "-",
            "+",
            count.as_str(),
            &*s.consumer,
        ][..],
    );
    match r {
        Ok(CallReply::Array(a)) => Ok(a
            .iter()
            .filter_map(|row| match row {
                Ok(CallReply::Array(cols)) => cols
                    .get(0)
                    .and_then(|c| c.ok())
                    .and_then(|c| str_of(&c).and_then(EntryId::parse)),
                _ => None,
            })
            .collect()),
        Ok(_) => Ok(Vec::new()),
        Err(e) => Err(e.to_utf8_string().unwrap_or_default()),
    }
}

/// Acknowledges `ids` in the group, replicated.
pub fn ack(ctx: &Context, s: &Target, ids: &[String]) -> Result<(), String> {
    let mut args: Vec<&str> = vec![&*s.stream, &*s.group];
    args.extend(ids.iter().map(String::as_str));
    let r: CallResult = ctx.call_ext("XACK", &write_opts(), args.as_slice());
    reply_error(&r).map_or(Ok(()), Err)
}
