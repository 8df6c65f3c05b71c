//! The entry from the command that added it: the XADD arguments the command filter keeps.
//! The state that decides when they may be used is `fastpath`'s; this is the part that
//! touches the server.
//!
//! Where the server has post-notification jobs (Redis 7.2+, Valkey), a drain pass runs after every XADD
//! and projects that one entry. Reading the entry back from the stream was then the largest
//! cost left after the writes themselves: `RM_StreamIteratorNextField` creates a string for
//! every field and value (26 for a seed decision), each one allocated and freed. Yet the
//! XADD's own arguments *are* the entry: the server appends its field and value strings
//! verbatim. So:
//!
//! 1. the command filter, which sees every command just before it runs, keeps a reference to
//!    the arguments of an XADD that names the input stream (any other command drops them);
//! 2. the `xadd` keyspace event ties them to the entry it announces, but only when its key is
//!    the very string object the filter saw as the XADD's key. The server passes the
//!    command's own `argv[1]` to the event, and since the filter holds that object it cannot
//!    be freed and its address reused by another one;
//! 3. a drain pass uses them only on the known-group path (the stream holds exactly the
//!    entries the counted XADDs added, see `fastpath::Known`), only when every one of those
//!    XADDs was tied to its arguments, and only when each entry's ID and field count agree.
//!    Otherwise it reads the entries back from the stream, as before.
//!
//! Command filters run in the order they were registered. The filter sees a command's
//! arguments after the filters of modules loaded before HeatBridge (so it keeps what will
//! run), but before those of modules loaded after it, which may still rewrite them. So all of
//! this runs only while no module loaded after HeatBridge is loaded, as the module-change
//! server event tells (Redis 8's built-in modules load before any other). A module loaded
//! before HeatBridge could defeat it only by keeping the very key string of a refused XADD
//! and adding an entry under it through the key API before the next command; the ID and
//! field-count check would still have to pass. Loading HeatBridge last is therefore
//! recommended, and `heatbridge.fast-path no` turns the whole fast path off.
//!
//! The references are strings the server owns: they are taken and released only on the
//! server's main thread (the filter, keyspace events, drain passes, server events, module
//! load and unload), or under its lock. The server never changes a string that more than
//! one owner holds in place; Valkey frees such argument strings on the main thread, never in
//! an I/O thread.

use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

use redis_module::{raw, RedisString};

use crate::core::decision::EntryId;

/// More field-value pairs than this and the XADD is not kept (a seed decision has 13).
pub const MAX_PAIRS: usize = 64;

/// An XADD's arguments as the filter saw them.
pub struct Command {
    /// `argv[1]`, the key, held so that its address identifies this command's execution.
    key: RedisString,
    /// The ID argument, when it names the whole ID (`ms-seq` or `ms`).
    id: Option<EntryId>,
    /// The field and value strings, in order.
    fields: Vec<(RedisString, RedisString)>,
}

// SAFETY: a `Command` holds references to server strings. It is created, moved and dropped
// only on the server's main thread (or under the server lock); the registry that stores it
// needs `Send` only because statics must be `Sync`.
unsafe impl Send for Command {}

impl Command {
    /// Whether `key`, the key of an `xadd` event (the server's own buffer), is this command's
    /// key object: the same buffer, which no other live string can share while this one
    /// holds it. Then the event announces this command's entry.
    pub fn is_key_of_event(&self, key: &[u8]) -> bool {
        ptr::eq(self.key.as_slice(), key)
    }

    /// The entry `id` with `numfields` fields, from these arguments, if they agree with it.
    pub fn into_entry(
        self,
        id: EntryId,
        numfields: u64,
    ) -> Option<Vec<(RedisString, RedisString)>> {
        (self.fields.len() as u64 == numfields && self.id.is_none_or(|given| given == id))
            .then_some(self.fields)
    }
}

/// Modules loaded after HeatBridge and still loaded (by name).
static LATER: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// Whether commands are kept: no module was loaded after HeatBridge (or every one that was
/// has been unloaded again).
static ON: AtomicBool = AtomicBool::new(true);

/// Whether commands are kept.
pub fn enabled() -> bool {
    ON.load(Relaxed)
}

/// Another module was loaded (`loaded`) or unloaded. A command filter registered by a module
/// loaded after HeatBridge runs after HeatBridge's, and may rewrite what HeatBridge kept;
/// one loaded before runs first, so HeatBridge keeps the arguments as they will run. So
/// commands are kept only while no module loaded after HeatBridge is loaded. What was kept
/// is dropped either way (a new module's filter may already have rewritten it).
pub fn module_changed(loaded: bool, name: &[u8], own_name: &str) {
    if name == own_name.as_bytes() {
        return;
    }
    let mut later = LATER.lock().unwrap_or_else(|e| e.into_inner());
    if loaded {
        later.push(name.to_vec());
    } else if let Some(at) = later.iter().position(|n| n.as_slice() == name) {
        later.swap_remove(at);
    }
    ON.store(later.is_empty(), Relaxed);
}

/// Module load: no module loaded after HeatBridge yet, counters at zero (the statics
/// survive an unload when the shared object stays mapped).
pub fn reset() {
    LATER.lock().unwrap_or_else(|e| e.into_inner()).clear();
    ON.store(true, Relaxed);
    TAKEN.store(0, Relaxed);
    MISMATCHED.store(0, Relaxed);
}

/// The position of the ID argument of `XADD key [options] <id> field value ...`, parsed
/// as the server parses it (`streamParseAddOrTrimArgsOrReply`), or `None` when the
/// arguments after it are not field-value pairs. `arg(i)` is argument `i` (0 is `XADD`).
///
/// The server compares options as C strings, so `MAXLEN\0x` is `MAXLEN` to it. An option or
/// ID argument holding a NUL byte is therefore not parsed at all (`None`).
pub fn xadd_id_pos<'a>(argc: usize, arg: impl Fn(usize) -> Option<&'a [u8]>) -> Option<usize> {
    let arg = |i: usize| arg(i).filter(|a| !a.contains(&0));
    let mut i = 2;
    while i < argc {
        let more = argc - 1 - i;
        let opt = arg(i)?;
        let is = |name: &str| opt.eq_ignore_ascii_case(name.as_bytes());
        if opt == b"*" {
            break;
        } else if (is("maxlen") || is("minid")) && more > 0 {
            let next = arg(i + 1)?;
            if more >= 2 && (next == b"~" || next == b"=") {
                i += 1;
            }
            i += 1;
        } else if is("limit") && more > 0 {
            i += 1;
        } else if is("nomkstream") {
        } else {
            break;
        }
        i += 1;
    }
    let fields = argc.checked_sub(i + 1)?;
    (i < argc && fields >= 2 && fields % 2 == 0).then_some(i)
}

/// Argument `i` of the command in `fctx`, as bytes.
///
/// # Safety
/// `fctx` must be the live filter context of the current filter callback.
unsafe fn filter_bytes<'a>(
    fctx: *mut raw::RedisModuleCommandFilterCtx,
    i: usize,
) -> Option<&'a [u8]> {
    let s = raw::RedisModule_CommandFilterArgGet?(fctx, i32::try_from(i).ok()?);
    if s.is_null() {
        return None;
    }
    let mut len = 0usize;
    let p = raw::RedisModule_StringPtrLen?(s, &mut len);
    // SAFETY: the server returns the string's buffer and its length; the buffer lives as long
    // as the argument, which outlives this filter call.
    (!p.is_null()).then(|| std::slice::from_raw_parts(p.cast::<u8>(), len))
}

/// The arguments of the XADD in `fctx`, held, if they parse.
///
/// # Safety
/// `fctx` must be the live filter context of the current filter callback, and its command an
/// XADD.
pub unsafe fn hold_xadd(fctx: *mut raw::RedisModuleCommandFilterCtx) -> Option<Command> {
    let (get, count, hold) = (
        raw::RedisModule_CommandFilterArgGet?,
        raw::RedisModule_CommandFilterArgsCount?,
        raw::RedisModule_HoldString?,
    );
    let argc = usize::try_from(count(fctx)).ok()?;
    let string = |i: usize| -> Option<*mut raw::RedisModuleString> {
        let s = get(fctx, i32::try_from(i).ok()?);
        (!s.is_null()).then_some(s)
    };
    let bytes = |i: usize| filter_bytes(fctx, i);
    let id_pos = xadd_id_pos(argc, bytes)?;
    let pairs = (argc - id_pos - 1) / 2;
    if pairs > MAX_PAIRS {
        return None;
    }
    let held = |i: usize| -> Option<RedisString> {
        let s = hold(ptr::null_mut(), string(i)?);
        (!s.is_null()).then(|| RedisString::from_redis_module_string(ptr::null_mut(), s))
    };
    let key = held(1)?;
    // The key's identity is its object: a copy (HoldString copies a stack-allocated
    // string) would never match the event, which is safe.
    let id = bytes(id_pos)
        .filter(|b| *b != b"*")
        .and_then(EntryId::parse);
    let mut fields = Vec::with_capacity(pairs);
    for p in 0..pairs {
        let at = id_pos + 1 + 2 * p;
        fields.push((held(at)?, held(at + 1)?));
    }
    Some(Command { key, id, fields })
}

/// Entries a pass took from the commands that added them.
pub static TAKEN: AtomicU64 = AtomicU64::new(0);
/// Times the kept arguments did not agree with the entries (then read back instead).
pub static MISMATCHED: AtomicU64 = AtomicU64::new(0);

/// `on`, or `off` while a module loaded after HeatBridge is loaded, for INFO.
pub fn status() -> &'static str {
    if enabled() {
        "on"
    } else {
        "off"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(args: &[&str]) -> Option<usize> {
        xadd_id_pos(args.len(), |i| args.get(i).map(|s| s.as_bytes()))
    }

    #[test]
    fn id_position_follows_the_server_grammar() {
        assert_eq!(pos(&["XADD", "s", "*", "f", "v"]), Some(2));
        assert_eq!(pos(&["XADD", "s", "1-1", "f", "v", "g", "w"]), Some(2));
        assert_eq!(pos(&["xadd", "s", "NOMKSTREAM", "*", "f", "v"]), Some(3));
        assert_eq!(pos(&["XADD", "s", "MAXLEN", "10", "*", "f", "v"]), Some(4));
        assert_eq!(
            pos(&["XADD", "s", "maxlen", "~", "10", "*", "f", "v"]),
            Some(5)
        );
        assert_eq!(
            pos(&["XADD", "s", "MINID", "=", "5", "7-0", "f", "v"]),
            Some(5)
        );
        assert_eq!(
            pos(&["XADD", "s", "MAXLEN", "~", "10", "LIMIT", "5", "*", "f", "v"]),
            Some(7)
        );
        assert_eq!(
            pos(&[
                "XADD",
                "s",
                "NOMKSTREAM",
                "MINID",
                "~",
                "1",
                "LIMIT",
                "9",
                "*",
                "a",
                "b"
            ]),
            Some(8)
        );
        // Field names after the ID are never options.
        assert_eq!(pos(&["XADD", "s", "*", "MAXLEN", "1"]), Some(2));
    }

    #[test]
    fn malformed_xadds_are_not_kept() {
        assert_eq!(pos(&["XADD", "s"]), None);
        assert_eq!(pos(&["XADD", "s", "*"]), None);
        assert_eq!(pos(&["XADD", "s", "*", "f"]), None);
        assert_eq!(pos(&["XADD", "s", "*", "f", "v", "g"]), None);
        assert_eq!(pos(&["XADD", "s", "MAXLEN", "10"]), None);
        assert_eq!(pos(&["XADD", "s", "NOMKSTREAM"]), None);
        // "MAXLEN" as the last argument is parsed as the ID (and refused by the server).
        assert_eq!(pos(&["XADD", "s", "MAXLEN"]), None);
        // The server reads options as C strings: "MAXLEN\0x" is MAXLEN to it, and "*\0" is
        // "*". Such XADDs are not kept.
        assert_eq!(pos(&["XADD", "s", "MAXLEN\0x", "100", "*", "f", "v"]), None);
        assert_eq!(pos(&["XADD", "s", "*\0", "f", "v"]), None);
        assert_eq!(
            pos(&["XADD", "s", "MAXLEN", "~\0", "10", "*", "f", "v"]),
            None
        );
        // Fields and values may hold anything.
        assert_eq!(pos(&["XADD", "s", "*", "f\0", "\0v"]), Some(2));
    }
}
