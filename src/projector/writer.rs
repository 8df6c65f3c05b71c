//! Writes the lookup keys to Redis: hashes and strings with their absolute expiry, through
//! replicated calls (so replicas and the AOF get them in order), and the strings they reuse.
//!
//! Arguments are the entry's own Redis strings, handed to the call without a copy: per
//! decision that saves some sixty string allocations over byte-slice arguments.

use std::ffi::CStr;
use std::sync::OnceLock;

use redis_module::{raw, CallReply, CallResult, Context, RedisString};

use crate::core::clock::now_ms;
use crate::core::metrics::{Stage, METRICS};
use crate::core::projection;
use crate::projector::call::{self, read_opts};
use crate::support::logging;

static FOREIGN_KEY_LOG: logging::RateLimit = logging::RateLimit::new(1000);

/// A binary-safe Redis string. `Context::create_string` goes through a `CString` and
/// panics on a NUL byte, which plan_ids and symbols may contain.
pub fn rstr(ctx: &Context, bytes: &[u8]) -> RedisString {
    RedisString::create_from_slice(ctx.ctx, bytes)
}

/// A Redis string kept for the life of the process, for the arguments every drain pass
/// passes (creating and freeing them each time costs an allocation apiece).
pub struct Kept(RedisString);

// SAFETY: a `Kept` string is created, passed to calls and retained only on the server's main
// thread (or under its lock); the statics that store it need `Sync` only because statics
// must be. The server never changes a string in place while a call holds it.
unsafe impl Send for Kept {}
unsafe impl Sync for Kept {}

impl Kept {
    /// A new kept string holding `bytes`.
    pub fn new(bytes: &[u8]) -> Kept {
        Kept(RedisString::create_from_slice(std::ptr::null_mut(), bytes))
    }

    /// A reference of the caller's own to the kept string (no copy), released on drop.
    pub fn retained(&self) -> RedisString {
        retain(&self.0)
    }
}

/// Another reference to the string `s` (no copy, unlike `RedisString::clone`), released on
/// drop. The server never changes a string that more than one owner holds in place.
pub fn retain(s: &RedisString) -> RedisString {
    raw::string_retain_string(std::ptr::null_mut(), s.inner);
    RedisString::from_redis_module_string(std::ptr::null_mut(), s.inner)
}

/// The string for `bytes`, created on first use and kept in `cell`.
pub fn kept(cell: &'static OnceLock<Kept>, bytes: &[u8]) -> &'static RedisString {
    &cell.get_or_init(|| Kept::new(bytes)).0
}

/// The decimal form of a number or an entry ID, written without an allocation.
pub struct Digits {
    buf: [u8; 41],
    start: usize,
}

impl Digits {
    /// `n` in decimal.
    pub fn of(n: u64) -> Digits {
        let mut d = Digits {
            buf: [0; 41],
            start: 41,
        };
        d.push(n);
        d
    }

    /// `<ms>-<seq>`.
    pub fn id(id: crate::core::decision::EntryId) -> Digits {
        let mut d = Digits::of(id.seq);
        d.start -= 1;
        if let Some(b) = d.buf.get_mut(d.start) {
            *b = b'-';
        }
        d.push(id.ms);
        d
    }

    /// Writes `n` in front of what is there (at most 20 digits; 41 bytes hold two and a dash).
    fn push(&mut self, mut n: u64) {
        loop {
            let Some(b) = self.start.checked_sub(1).and_then(|i| self.buf.get_mut(i)) else {
                return;
            };
            *b = b'0' + (n % 10) as u8;
            self.start -= 1;
            n /= 10;
            if n == 0 {
                return;
            }
        }
    }

    /// The digits.
    pub fn as_bytes(&self) -> &[u8] {
        self.buf.get(self.start..).unwrap_or_default()
    }
}

/// Key names up to this long are joined on the stack (a prefix, a hash tag and a plan_id or
/// symbol of up to 256 bytes fit, unless the tag is long).
const NAME_ON_STACK: usize = 384;

/// Calls `f` with `parts` joined: on the stack when they fit, else in a new Vec.
fn joined<R>(parts: [&[u8]; 3], f: impl FnOnce(&[u8]) -> R) -> R {
    let mut buf = [0u8; NAME_ON_STACK];
    let mut len = 0;
    for p in parts {
        let Some(slot) = buf.get_mut(len..len + p.len()) else {
            return f(&parts.concat());
        };
        slot.copy_from_slice(p);
        len += p.len();
    }
    f(buf.get(..len).unwrap_or_default())
}

/// The last value of field `name` in an entry, as the entry's own string.
pub fn field<'a>(fields: &'a [(RedisString, RedisString)], name: &[u8]) -> Option<&'a RedisString> {
    fields.get(position(fields, name)?).map(|(_, v)| v)
}

/// Where the last field `name` of an entry is.
pub fn position(fields: &[(RedisString, RedisString)], name: &[u8]) -> Option<usize> {
    fields.iter().rposition(|(k, _)| k.as_slice() == name)
}

/// Writes the keys of decisions, holding the strings every write reuses.
pub struct Writer<'c> {
    ctx: &'c Context,
    pxat: &'static RedisString,
    last_plan_id: &'static RedisString,
}

impl<'c> Writer<'c> {
    /// A writer for one drain step or command. Writes are replicated and respect maxmemory.
    pub fn new(ctx: &'c Context) -> Writer<'c> {
        static PXAT: OnceLock<Kept> = OnceLock::new();
        static LAST_PLAN_ID: OnceLock<Kept> = OnceLock::new();
        Writer {
            ctx,
            pxat: kept(&PXAT, b"PXAT"),
            last_plan_id: kept(&LAST_PLAN_ID, projection::LAST_PLAN_ID_FIELD),
        }
    }

    /// A replicated write; returns its integer reply, if it has one.
    fn call(&self, cmd: &CStr, args: &[&RedisString]) -> Result<Option<i64>, String> {
        call::call(self.ctx, cmd, call::WRITE, args).map(|r| r.integer())
    }

    /// A Redis string for `bytes`.
    pub fn string(&self, bytes: &[u8]) -> RedisString {
        rstr(self.ctx, bytes)
    }

    /// A Redis string for the key name `parts` make (see `Keys::parts`), joined on the stack.
    pub fn key(&self, parts: [&[u8]; 3]) -> RedisString {
        joined(parts, |name| self.string(name))
    }

    /// `SET key value PXAT at`. (Doing this through the key API where the server has
    /// `RM_SetAbsExpire` measured about 1% per decision: not worth a second write path.)
    /// SET would replace a key of any type, so a key that holds another type is left alone:
    /// that is counted as a write error and skipped, as for the hashes. Returns whether the
    /// string was written.
    pub fn set_string(
        &self,
        key: &RedisString,
        value: &RedisString,
        at_ms: u64,
    ) -> Result<bool, String> {
        self.set_string_of(key, key_type(self.ctx, key), value, at_ms)
    }

    /// [`Writer::set_string`] for a key whose type this callback has just read (nothing
    /// can change it in between).
    pub fn set_string_of(
        &self,
        key: &RedisString,
        kind: KeyKind,
        value: &RedisString,
        at_ms: u64,
    ) -> Result<bool, String> {
        if !matches!(kind, KeyKind::Missing | KeyKind::String) {
            foreign_key(key, "non-string");
            return Ok(false);
        }
        let at = self.string(Digits::of(at_ms).as_bytes());
        self.call(c"SET", &[key, value, self.pxat, &at])
            .map(|_| true)
    }

    /// Makes the hash hold exactly `fields` (plus `last_plan_id` when given), expiring at
    /// `at_ms`. It is overwritten in place and only fields the new decision lacks are
    /// deleted, so the key never disappears in between. A key of another type is never
    /// overwritten: that is counted as a write error and skipped, so it cannot block the
    /// stream. Returns whether the hash was written (`false`: skipped).
    pub fn replace_hash(
        &self,
        key: &RedisString,
        fields: &[(RedisString, RedisString)],
        last_plan_id: Option<&RedisString>,
        at_ms: u64,
    ) -> Result<bool, String> {
        // HSET key field value ... [last_plan_id plan], on the stack unless the entry has
        // more fields than a seed decision's many times over.
        let argc = 1 + 2 * fields.len() + if last_plan_id.is_some() { 2 } else { 0 };
        let mut stack = [key; HSET_ON_STACK];
        let mut heap;
        let args: &mut [&RedisString] = match stack.get_mut(..argc) {
            Some(args) => args,
            None => {
                heap = vec![key; argc];
                &mut heap
            }
        };
        let rest = args.get_mut(1..).unwrap_or_default();
        if let Some((pairs, tail)) = rest.split_at_mut_checked(2 * fields.len()) {
            for (slot, (k, v)) in pairs.chunks_exact_mut(2).zip(fields) {
                if let [name, value] = slot {
                    (*name, *value) = (k, v);
                }
            }
            if let (Some(plan), [name, value]) = (last_plan_id, tail) {
                (*name, *value) = (self.last_plan_id, plan);
            }
        }
        let added = match self.call(c"HSET", args) {
            Ok(added) => added.unwrap_or(0),
            Err(msg) if msg.starts_with("WRONGTYPE") => {
                foreign_key(key, "non-hash");
                return Ok(false);
            }
            Err(msg) => return Err(msg),
        };
        // Fields of an earlier value may be left over only if the hash existed before: then
        // it holds more fields than the HSET added. A new hash (every by_plan key) is done.
        // The length is read on the key opened to set the expiry, which is set there unless
        // stale fields must go first (their HDEL replicates before the PEXPIREAT).
        let extra = last_plan_id.map(|_| projection::LAST_PLAN_ID_FIELD);
        let stale = |len: usize| len as i64 > added && len > distinct_fields(fields, extra);
        match self.set_abs_expire(key, at_ms, &stale) {
            Some(Ok(true)) => {}
            Some(Ok(false)) => {
                self.remove_stale_fields(key, fields, extra)?;
                match self.set_abs_expire(key, at_ms, &|_| false) {
                    Some(done) => drop(done?),
                    None => self.pexpireat(key, at_ms)?,
                }
            }
            Some(Err(e)) => return Err(e),
            None => {
                if stale(self.hash_len(key)) {
                    self.remove_stale_fields(key, fields, extra)?;
                }
                self.pexpireat(key, at_ms)?;
            }
        }
        Ok(true)
    }

    /// `PEXPIREAT key at_ms`, as a replicated command.
    fn pexpireat(&self, key: &RedisString, at_ms: u64) -> Result<(), String> {
        let at = self.string(Digits::of(at_ms).as_bytes());
        self.call(c"PEXPIREAT", &[key, &at]).map(drop)
    }

    /// Sets `key` to expire at `at_ms` through the key API and replicates that as
    /// `PEXPIREAT key at_ms`, with the `expire` keyspace event a command would fire. This
    /// saves a whole command call per hash. `None` where the server lacks one of the APIs
    /// (a relative expiry could land a millisecond away from the replicated absolute one),
    /// or `at_ms` is out of range: the caller then uses PEXPIREAT itself.
    ///
    /// `stale` is asked with the key's length first: when it says so, nothing is done and
    /// `Some(Ok(false))` returned (the caller removes stale fields and comes back).
    fn set_abs_expire(
        &self,
        key: &RedisString,
        at_ms: u64,
        stale: &dyn Fn(usize) -> bool,
    ) -> Option<Result<bool, String>> {
        use redis_module::raw;
        // SAFETY: reading function pointers that the module API initialised at load.
        let (set_abs, replicate, notify) = unsafe {
            (
                raw::RedisModule_SetAbsExpire?,
                raw::RedisModule_Replicate?,
                raw::RedisModule_NotifyKeyspaceEvent?,
            )
        };
        let at = i64::try_from(at_ms).ok()?;
        let inner = raw::open_key(self.ctx.ctx, key.inner, raw::KeyMode::WRITE);
        if inner.is_null() {
            return Some(Err("cannot open key to set its expiry".into()));
        }
        // SAFETY: `inner` is a key opened just above on the live context, not yet closed;
        // ValueLength only reads it.
        let len = unsafe { raw::RedisModule_ValueLength.map_or(0, |f| f(inner)) };
        if stale(len) {
            raw::close_key(inner);
            return Some(Ok(false));
        }
        // SAFETY: `inner` is a key opened for writing just above on the live context and
        // closed right after, before the replication and the event, which only use
        // `key.inner`; `key.inner` and the C string literals outlive the calls, and the
        // Replicate format "sl" matches its two arguments (a RedisModuleString* and a long
        // long).
        let rc = unsafe {
            let empty = raw::RedisModule_KeyType.map_or(0, |f| f(inner))
                == raw::REDISMODULE_KEYTYPE_EMPTY as i32;
            let rc = if empty {
                raw::REDISMODULE_OK as i32
            } else {
                set_abs(inner, at)
            };
            raw::close_key(inner);
            // Nothing to replicate or announce for a key that is not there.
            if !empty && rc == raw::REDISMODULE_OK as i32 {
                replicate(
                    self.ctx.ctx,
                    c"PEXPIREAT".as_ptr(),
                    c"sl".as_ptr(),
                    key.inner,
                    at as std::os::raw::c_longlong,
                );
                notify(
                    self.ctx.ctx,
                    raw::NotifyEvent::GENERIC.bits(),
                    c"expire".as_ptr(),
                    key.inner,
                );
            }
            rc
        };
        Some(if rc == redis_module::raw::REDISMODULE_OK as i32 {
            Ok(true)
        } else {
            Err("RM_SetAbsExpire failed".into())
        })
    }

    fn hash_len(&self, key: &RedisString) -> usize {
        value_len(self.ctx, key)
    }

    fn remove_stale_fields(
        &self,
        key: &RedisString,
        fields: &[(RedisString, RedisString)],
        extra: Option<&[u8]>,
    ) -> Result<(), String> {
        let r: CallResult = self.ctx.call_ext("HKEYS", &read_opts(), &[key][..]);
        let Ok(CallReply::Array(names)) = r else {
            return Err("HKEYS failed".into());
        };
        let stale: Vec<RedisString> = names
            .iter()
            .filter_map(|n| match n {
                Ok(CallReply::String(s)) => Some(s.as_bytes().to_vec()),
                _ => None,
            })
            .filter(|n| {
                !fields.iter().any(|(k, _)| k.as_slice() == n.as_slice())
                    && extra != Some(n.as_slice())
            })
            .map(|n| self.string(&n))
            .collect();
        if stale.is_empty() {
            return Ok(());
        }
        let mut args: Vec<&RedisString> = vec![key];
        args.extend(stale.iter());
        self.call(c"HDEL", &args).map(drop)
    }
}

/// A derived key that holds a value of another type: counted as a write error and logged
/// (at most once a second); the decision is not written there.
fn foreign_key(key: &RedisString, what: &str) {
    METRICS.count_error(Stage::Write, now_ms());
    if FOREIGN_KEY_LOG
        .check(crate::core::clock::mono_ms())
        .is_some()
    {
        logging::error(&format!(
            "{} holds a {what} value; decision not written there",
            logging::show_bytes(key.as_slice())
        ));
    }
}

/// The type of the value at a key, as far as the writes care.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    /// No such key.
    Missing,
    /// A string.
    String,
    /// A hash.
    Hash,
    /// A stream.
    Stream,
    /// Any other type.
    Other,
}

/// The type of the value at `key`, from one open of the key (no command).
pub fn key_type(ctx: &Context, key: &RedisString) -> KeyKind {
    use redis_module::raw as r;
    let inner = r::open_key(ctx.ctx, key.inner, r::KeyMode::READ);
    if inner.is_null() {
        return KeyKind::Missing;
    }
    // SAFETY: `inner` is a key opened just above on the live context and closed right after;
    // KeyType only reads it.
    let kind =
        unsafe { r::RedisModule_KeyType.map_or(r::REDISMODULE_KEYTYPE_EMPTY as i32, |f| f(inner)) };
    r::close_key(inner);
    match kind {
        k if k == r::REDISMODULE_KEYTYPE_EMPTY as i32 => KeyKind::Missing,
        k if k == r::REDISMODULE_KEYTYPE_STRING as i32 => KeyKind::String,
        k if k == r::REDISMODULE_KEYTYPE_HASH as i32 => KeyKind::Hash,
        k if k == r::REDISMODULE_KEYTYPE_STREAM as i32 => KeyKind::Stream,
        _ => KeyKind::Other,
    }
}

/// The length of the value at `key` (fields of a hash, entries of a stream), 0 if none.
pub fn value_len(ctx: &Context, key: &RedisString) -> usize {
    // `RedisKey` has no length accessor (and its `to_raw_parts` closes the key it returns),
    // so the key is opened and closed here through the raw API.
    let inner = redis_module::raw::open_key(ctx.ctx, key.inner, redis_module::raw::KeyMode::READ);
    if inner.is_null() {
        return 0;
    }
    // SAFETY: `inner` is a key opened just above on the live context and not yet closed;
    // ValueLength only reads it.
    let n = unsafe { redis_module::raw::RedisModule_ValueLength.map_or(0, |f| f(inner)) };
    redis_module::raw::close_key(inner);
    n
}

/// The value of the string at `key`, if there is one. The key API's `RM_StringDMA` is not
/// used: even for reading it turns an embedded string into a raw one, swapping the value
/// under other readers (and firing an unlink event to other modules). A key that does not
/// exist, the common case, is told by opening it, without a command.
/// Also returns the key's type, which a write that follows in the same callback may reuse
/// ([`Writer::set_string_of`]).
pub fn read_string(ctx: &Context, key: &RedisString) -> (KeyKind, Option<Vec<u8>>) {
    let kind = key_type(ctx, key);
    if kind != KeyKind::String {
        return (kind, None);
    }
    let r: CallResult = ctx.call_ext("GET", &read_opts(), &[key][..]);
    match r {
        Ok(CallReply::String(s)) => (kind, Some(s.as_bytes().to_vec())),
        _ => (kind, None),
    }
}

/// The absolute expiry of `key` in ms (`PEXPIRETIME`): -2 when there is no key, -1 when it
/// does not expire.
pub fn expire_time(ctx: &Context, key: &RedisString) -> i64 {
    let r: CallResult = ctx.call_ext("PEXPIRETIME", &read_opts(), &[key][..]);
    match r {
        Ok(CallReply::I64(n)) => n.to_i64(),
        _ => -2,
    }
}

/// Arguments of an HSET passed from the stack (a seed decision's latest hash takes 29).
const HSET_ON_STACK: usize = 48;

/// Number of distinct field names among `fields` and `extra`.
fn distinct_fields(fields: &[(RedisString, RedisString)], extra: Option<&[u8]>) -> usize {
    let names: Vec<&[u8]> = fields
        .iter()
        .map(|(k, _)| k.as_slice())
        .chain(extra)
        .collect();
    names
        .iter()
        .enumerate()
        .filter(|(i, k)| !names.get(i + 1..).unwrap_or_default().contains(k))
        .count()
}

#[cfg(test)]
mod tests {
    use super::Digits;
    use crate::core::decision::EntryId;

    #[test]
    fn digits_match_display() {
        for n in [0, 1, 9, 10, 99, 100, 1_700_000_000_123, u64::MAX] {
            assert_eq!(Digits::of(n).as_bytes(), n.to_string().as_bytes());
        }
        for (ms, seq) in [(0, 0), (1_700_000_000_123, 7), (u64::MAX, u64::MAX)] {
            let id = EntryId { ms, seq };
            assert_eq!(Digits::id(id).as_bytes(), id.to_string().as_bytes());
        }
    }
}
