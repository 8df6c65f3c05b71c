//! Walks the IDs of a stream's entries without reading their fields.
//!
//! `RM_StreamIteratorNextID` must not be called again before every field of the current
//! entry was consumed: the server's iterator then reads a field where it expects the next
//! entry's flags, and an assertion in `lpGetInteger` stops the server. So [`IdWalk`]
//! consumes the fields itself, with `RM_StreamIteratorNextField(key, NULL, NULL)`, which
//! moves past a field without creating a string.

use std::os::raw::c_long;
use std::ptr;

use redis_module::{raw, Context, RedisString};

use crate::decision::EntryId;

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
        let key = raw::open_key(ctx.ctx, stream.inner, raw::KeyMode::READ);
        if key.is_null() {
            return None;
        }
        let mut walk = IdWalk {
            key,
            started: false,
        };
        let mut from = raw::RedisModuleStreamID {
            ms: after.ms,
            seq: after.seq,
        };
        let mut flags = raw::REDISMODULE_STREAM_ITERATOR_EXCLUSIVE as i32;
        if reverse {
            flags |= raw::REDISMODULE_STREAM_ITERATOR_REVERSE as i32;
        }
        // SAFETY: `key` was opened above on the live context and stays open until `walk` is
        // dropped; `from` outlives the call (the server copies it). Start fails cleanly
        // (ENOTSUP) on a key that is not a stream.
        let ok = unsafe {
            raw::RedisModule_StreamIteratorStart
                .is_some_and(|start| start(key, flags, &mut from, ptr::null_mut()) == OK)
        };
        walk.started = ok;
        ok.then_some(walk)
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
