//! Reading a stream: the key's shape, its entries after the group cursor (with their fields,
//! or their IDs alone), one entry by ID, and the newest entry of a symbol.
//!
//! This replaces the crate's `StreamIterator`, whose drop calls `RM_StreamIteratorDelete`:
//! on a key opened for reading that fails (EBADF) and leaves the iterator set, so the next
//! iterator on the key cannot start; on a key opened for writing it would delete the last
//! entry read. [`IdWalk`] stops its iterator with `RM_StreamIteratorStop` and closes its key.
//!
//! `RM_StreamIteratorNextID` must not be called again before every field of the current
//! entry was consumed: the server's iterator then reads a field where it expects the next
//! entry's flags, and an assertion in `lpGetInteger` stops the server. So [`IdWalk`]
//! consumes the fields itself, with `RM_StreamIteratorNextField(key, NULL, NULL)`, which
//! moves past a field without creating a string.

use std::os::raw::c_long;
use std::ptr;
use std::sync::atomic::Ordering::Relaxed;

use redis_module::{raw, Context, RedisString};

use crate::core::decision::EntryId;
use crate::core::health::StreamState;
use crate::core::projection::TieSeen;
use crate::projector::capture;

impl crate::core::decision::Bytes for RedisString {
    fn bytes(&self) -> &[u8] {
        self.as_slice()
    }
}

/// An open stream key with a running iterator; stopped and closed when dropped.
pub struct IdWalk {
    key: *mut raw::RedisModuleKey,
    started: bool,
}

impl IdWalk {
    /// Starts a walk over the entries after `after` (exclusive), oldest first, or newest
    /// first when `reverse`. `None` if the key is missing, not a stream, or the server lacks
    /// the stream iterator API.
    pub fn after(
        ctx: &Context,
        stream: &RedisString,
        after: EntryId,
        reverse: bool,
    ) -> Option<IdWalk> {
        IdWalk::range(ctx, stream, Some(after), None, true, reverse)
    }

    /// Starts a walk over the entries from `from` to `to` (both ends included unless
    /// `exclusive`; `None` is the stream's start or end), oldest first, or newest first when
    /// `reverse`. `None` if the key is missing, not a stream, or the server lacks the stream
    /// iterator API.
    pub fn range(
        ctx: &Context,
        stream: &RedisString,
        from: Option<EntryId>,
        to: Option<EntryId>,
        exclusive: bool,
        reverse: bool,
    ) -> Option<IdWalk> {
        let key = raw::open_key(ctx.ctx, stream.inner, raw::KeyMode::READ);
        if key.is_null() {
            return None;
        }
        let mut walk = IdWalk {
            key,
            started: false,
        };
        let sid = |id: EntryId| raw::RedisModuleStreamID {
            ms: id.ms,
            seq: id.seq,
        };
        let mut from = from.map(sid);
        let mut to = to.map(sid);
        let mut flags = 0;
        if exclusive {
            flags |= raw::REDISMODULE_STREAM_ITERATOR_EXCLUSIVE as i32;
        }
        if reverse {
            flags |= raw::REDISMODULE_STREAM_ITERATOR_REVERSE as i32;
        }
        let bound = |b: &mut Option<raw::RedisModuleStreamID>| {
            b.as_mut()
                .map_or(ptr::null_mut(), |b| b as *mut raw::RedisModuleStreamID)
        };
        // SAFETY: `key` was opened above on the live context and stays open until `walk` is
        // dropped; the bounds are NULL or point to locals that outlive the call (the server
        // copies them). Start fails cleanly (ENOTSUP) on a key that is not a stream.
        let ok = unsafe {
            raw::RedisModule_StreamIteratorStart
                .is_some_and(|start| start(key, flags, bound(&mut from), bound(&mut to)) == OK)
        };
        walk.started = ok;
        ok.then_some(walk)
    }

    /// The next entry's ID and fields, each field and value a new string.
    pub fn next_entry(&mut self) -> Option<(EntryId, Vec<(RedisString, RedisString)>)> {
        let mut id = raw::RedisModuleStreamID { ms: 0, seq: 0 };
        let mut numfields: c_long = 0;
        let mut fields = Vec::new();
        // SAFETY: the iterator was started on `self.key`, which is open; the out-parameters
        // point to locals. Every field of the entry is consumed before the next call to
        // NextID. Each field and value returned is a new string that the wrapper owns and
        // frees.
        unsafe {
            let (Some(next), Some(field)) = (
                raw::RedisModule_StreamIteratorNextID,
                raw::RedisModule_StreamIteratorNextField,
            ) else {
                return None;
            };
            if next(self.key, &mut id, &mut numfields) != OK {
                return None;
            }
            fields.reserve(usize::try_from(numfields).unwrap_or(0).min(1024));
            let mut name: *mut raw::RedisModuleString = ptr::null_mut();
            let mut value: *mut raw::RedisModuleString = ptr::null_mut();
            while field(self.key, &mut name, &mut value) == OK {
                if name.is_null() || value.is_null() {
                    continue;
                }
                fields.push((
                    RedisString::from_redis_module_string(ptr::null_mut(), name),
                    RedisString::from_redis_module_string(ptr::null_mut(), value),
                ));
            }
        }
        Some((
            EntryId {
                ms: id.ms,
                seq: id.seq,
            },
            fields,
        ))
    }

    /// The next entry's ID and its number of fields, with its fields skipped.
    pub fn next_id(&mut self) -> Option<(EntryId, u64)> {
        let mut id = raw::RedisModuleStreamID { ms: 0, seq: 0 };
        let mut numfields: c_long = 0;
        // SAFETY: the iterator was started on `self.key`, which is open; the out-parameters
        // point to locals. Every field of the entry is consumed (with NULL out-parameters,
        // so no string is created) before the next call to NextID.
        unsafe {
            let (Some(next), Some(field)) = (
                raw::RedisModule_StreamIteratorNextID,
                raw::RedisModule_StreamIteratorNextField,
            ) else {
                return None;
            };
            if next(self.key, &mut id, &mut numfields) != OK {
                return None;
            }
            while field(self.key, ptr::null_mut(), ptr::null_mut()) == OK {}
        }
        Some((
            EntryId {
                ms: id.ms,
                seq: id.seq,
            },
            numfields.max(0) as u64,
        ))
    }
}

/// An entry copied out of the stream.
pub struct Entry {
    /// Its ID.
    pub id: EntryId,
    /// Its fields; `None` when the ID is no longer in the stream.
    pub fields: Option<Vec<(RedisString, RedisString)>>,
}

/// Reads up to `count` entries after `after` (exclusive), in stream order. `Err` when the
/// stream cannot be read: never taken for "no entries", which would move the cursor on.
///
/// When few entries are expected (`few`: the live path, or a known lag within `count`),
/// they are read backwards from the end of the stream: a forward iterator that seeks the
/// newest entry walks its whole listpack node (up to 100 entries), while a backward one
/// reaches it at once. If more than `count` entries turn out to follow the cursor, the
/// oldest ones are read forwards as usual.
pub fn read_after(
    ctx: &Context,
    stream: &RedisString,
    after: EntryId,
    count: usize,
    few: bool,
) -> Result<Vec<Entry>, String> {
    // Nothing can follow the largest ID (and the server refuses an iterator that starts
    // after it).
    if after
        == (EntryId {
            ms: u64::MAX,
            seq: u64::MAX,
        })
    {
        return Ok(Vec::new());
    }
    let to_entry = |(id, fields)| Entry {
        id,
        fields: Some(fields),
    };
    if few {
        let mut walk = IdWalk::after(ctx, stream, after, true)
            .ok_or("cannot iterate the stream (backwards)")?;
        let mut newest = Vec::with_capacity(count.saturating_add(1).min(1024));
        while newest.len() <= count {
            let Some(e) = walk.next_entry() else { break };
            newest.push(to_entry(e));
        }
        if newest.len() <= count {
            newest.reverse();
            return Ok(newest);
        }
    }
    let mut walk = IdWalk::after(ctx, stream, after, false).ok_or("cannot iterate the stream")?;
    let mut entries = Vec::with_capacity(count.min(1024));
    while entries.len() < count {
        let Some(e) = walk.next_entry() else { break };
        entries.push(to_entry(e));
    }
    Ok(entries)
}

/// Reads one entry by ID (`fields` is `None` when it is not in the stream).
pub fn read_one(ctx: &Context, stream: &RedisString, id: EntryId) -> Entry {
    let fields = IdWalk::range(ctx, stream, Some(id), Some(id), false, false)
        .and_then(|mut walk| walk.next_entry())
        .map(|(_, fields)| fields);
    Entry { id, fields }
}

/// The stream key's state and, for a stream, its length, from one open of the key.
pub fn stream_shape(ctx: &Context, stream: &RedisString) -> (StreamState, u64) {
    let inner = raw::open_key(ctx.ctx, stream.inner, raw::KeyMode::READ);
    if inner.is_null() {
        return (StreamState::Missing, 0);
    }
    // SAFETY: `inner` is a key opened just above on the live context and closed right
    // after; KeyType and ValueLength only read it.
    let (kind, len) = unsafe {
        (
            raw::RedisModule_KeyType.map_or(raw::REDISMODULE_KEYTYPE_EMPTY as i32, |f| f(inner)),
            raw::RedisModule_ValueLength.map_or(0, |f| f(inner)),
        )
    };
    raw::close_key(inner);
    if kind == raw::REDISMODULE_KEYTYPE_EMPTY as i32 {
        (StreamState::Missing, 0)
    } else if kind == raw::REDISMODULE_KEYTYPE_STREAM as i32 {
        (StreamState::Stream, len as u64)
    } else {
        (StreamState::WrongType, 0)
    }
}

/// Counts entries after the cursor when the server cannot tell the lag. It walks IDs only
/// (fields are skipped, not read) and stops at a bound, so a housekeeping tick stays cheap.
pub fn count_after(ctx: &Context, stream: &RedisString, after: EntryId) -> u64 {
    const CAP: u64 = 10_000;
    let Some(mut walk) = IdWalk::after(ctx, stream, after, false) else {
        return 0;
    };
    let mut n = 0u64;
    while n < CAP && walk.next_id().is_some() {
        n += 1;
    }
    n
}

/// The entries after `after`, built from the arguments of the XADDs that added them (see
/// [`capture`]) instead of read back from the stream: only the IDs and field counts are
/// read. `None` unless exactly as many entries follow `after` and each one's ID and field
/// count agree with its command.
pub fn entries_from_commands(
    ctx: &Context,
    stream: &RedisString,
    after: EntryId,
    commands: Vec<capture::Command>,
) -> Option<Vec<Entry>> {
    let mut walk = IdWalk::after(ctx, stream, after, true)?;
    // Newest first, one more than the commands (to tell that no other entry follows); a
    // few (a pass after one XADD reads two) on the stack.
    const ON_STACK: usize = 8;
    let wanted = commands.len() + 1;
    let mut stack = [(EntryId::ZERO, 0u64); ON_STACK];
    let mut heap;
    let slots: &mut [(EntryId, u64)] = match stack.get_mut(..wanted) {
        Some(slots) => slots,
        None => {
            heap = vec![(EntryId::ZERO, 0u64); wanted];
            &mut heap
        }
    };
    let mut read = 0;
    for slot in slots.iter_mut() {
        let Some(id) = walk.next_id() else { break };
        *slot = id;
        read += 1;
    }
    drop(walk);
    if read != commands.len() {
        return None;
    }
    let ids = slots.get(..read)?;
    let mut entries = Vec::with_capacity(ids.len());
    for (&(id, numfields), c) in ids.iter().rev().zip(commands) {
        let Some(fields) = c.into_entry(id, numfields) else {
            capture::MISMATCHED.fetch_add(1, Relaxed);
            crate::support::logging::error_limited(&format!(
                "the arguments of the XADD of entry {id} do not match it; entries are read \
                 back from the stream"
            ));
            return None;
        };
        entries.push(Entry {
            id,
            fields: Some(fields),
        });
    }
    capture::TAKEN.fetch_add(entries.len() as u64, Relaxed);
    Some(entries)
}

/// The ID of the stream's newest entry, if it has one.
pub fn last_id(ctx: &Context, stream: &RedisString) -> Option<EntryId> {
    IdWalk::range(ctx, stream, None, None, false, true)?
        .next_id()
        .map(|(id, _)| id)
}

/// Entries walked by tie reads since load (INFO heatbridge `tie_reads_total`).
pub static TIE_READS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Most entries one tie read walks: past it, a symbol not seen yet is not known.
pub const MAX_TIE_SCAN: usize = 10_000;

/// The content of each symbol's latest hash, as HGETALL lists it, by symbol.
pub type Held = std::collections::HashMap<Vec<u8>, Vec<Vec<u8>>>;

/// What each symbol of `held` (the content of its latest hash, as HGETALL lists it) has in
/// millisecond `ms` of the stream ([`TieSeen`]), read newest first; the second value says
/// whether the read covered the whole millisecond. It stops as soon as every symbol's holder
/// was found (the first one is the newest), or after [`MAX_TIE_SCAN`] entries.
///
/// Content counts, not validity alone: a duplicate that dedupe skipped never wrote latest
/// (review finding F2, session 6), and a resend of the very content that dedupe skipped is
/// told apart by its plan's dedupe key naming another entry (`dedupe`: dedupe is on).
///
/// [`TieSeen`]: crate::core::projection::TieSeen
pub fn tie_read(
    ctx: &Context,
    stream: &RedisString,
    keys: &crate::core::projection::Keys,
    ms: u64,
    held: &Held,
    dedupe: bool,
) -> (std::collections::HashMap<Vec<u8>, TieSeen>, bool) {
    let from = EntryId { ms, seq: 0 };
    let to = EntryId { ms, seq: u64::MAX };
    let mut seen: std::collections::HashMap<Vec<u8>, TieSeen> = std::collections::HashMap::new();
    let Some(mut walk) = IdWalk::range(ctx, stream, Some(from), Some(to), false, true) else {
        return (seen, true);
    };
    let mut found = 0;
    let mut walked = 0;
    while found < held.len() {
        if walked == MAX_TIE_SCAN {
            return (seen, false);
        }
        let Some((id, fields)) = walk.next_entry() else {
            break;
        };
        walked += 1;
        TIE_READS.fetch_add(1, Relaxed);
        let Ok(d) = keys.parse(id, &fields) else {
            continue;
        };
        let Some(content) = held.get(d.symbol) else {
            continue;
        };
        let s = seen.entry(d.symbol.to_vec()).or_default();
        if s.holder.is_some() {
            continue;
        }
        s.newest.get_or_insert(id);
        if !crate::core::projection::latest_holds(content, &fields, d.plan_id) {
            continue;
        }
        if dedupe && skipped_by_dedupe(ctx, keys, d.plan_id, id) {
            s.skipped_holder.get_or_insert(id);
        } else {
            s.holder = Some(id);
            found += 1;
        }
    }
    (seen, true)
}

/// Whether dedupe skipped entry `id` of plan `plan_id`: the plan's dedupe key names another
/// entry.
fn skipped_by_dedupe(
    ctx: &Context,
    keys: &crate::core::projection::Keys,
    plan_id: &[u8],
    id: EntryId,
) -> bool {
    let key = crate::projector::writer::rstr(ctx, &keys.dedupe(plan_id));
    let (_, value) = crate::projector::writer::read_string(ctx, &key);
    value.is_some_and(|v| EntryId::parse(&v) != Some(id))
}

const OK: i32 = raw::REDISMODULE_OK as i32;

impl Drop for IdWalk {
    fn drop(&mut self) {
        // SAFETY: `self.key` is the key opened in `after`, still open; the iterator (if
        // started) is stopped before the key is closed, and neither is used again.
        unsafe {
            if self.started {
                if let Some(stop) = raw::RedisModule_StreamIteratorStop {
                    stop(self.key);
                }
            }
        }
        raw::close_key(self.key);
    }
}
