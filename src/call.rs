//! `RM_Call` for the drain's hot path.
//!
//! `Context::call_ext` builds a `CString` for the command name, a `Vec` of argument pointers,
//! and a new Redis string for every `&str` argument, then frees them all again. The drain
//! makes four or five calls per decision, so [`call`] skips that work. It takes the arguments
//! as existing Redis strings (format `v`) and a static format string, and returns the reply
//! as an owned handle that is freed on drop. Errors always come back as replies (`E`) and
//! are turned into `Err` with the server's message.
//!
//! The helpers for the crate's `CallReply` (used where a reply is walked: XINFO, XPENDING)
//! live here too.

use std::ffi::CStr;
use std::ptr::NonNull;

use redis_module::{
    raw, CallOptions, CallOptionsBuilder, CallReply, CallResult, Context, RedisString,
};

/// What kind of call: it picks the format string, which always ends in `v` and holds no
/// other argument specifier (the variadic arguments passed must match it).
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    /// A replicated write: replicate (`!`), refuse under maxmemory (`M`), errors as replies
    /// (`E`), arguments as a vector (`v`).
    Write,
    /// A read: errors as replies, arguments as a vector.
    Read,
    /// A read as the user the context carries (`C`): the server checks its ACL (command and
    /// keys) for that user, as for the same command sent by it. No `E`: a refusal before the
    /// command runs is a NULL reply with `errno` (EACCES for the ACL, ENOTSUP for a context
    /// without a user) on every server, where `E`'s error texts differ between versions.
    /// Only through [`read_as_user`].
    ReadAsUser,
}

impl Kind {
    fn format(self) -> &'static CStr {
        match self {
            Kind::Write => c"!MEv",
            Kind::Read => c"Ev",
            Kind::ReadAsUser => c"Cv",
        }
    }
}

/// [`Kind::Write`].
pub const WRITE: Kind = Kind::Write;
/// [`Kind::Read`].
pub const READ: Kind = Kind::Read;

/// Arguments up to this many are passed from the stack.
const STACK_ARGS: usize = 48;

/// A call's reply, freed on drop.
pub struct Reply(NonNull<raw::RedisModuleCallReply>);

impl Reply {
    fn kind(&self) -> i32 {
        // SAFETY: `self.0` is a live reply owned by this handle.
        unsafe { raw::RedisModule_CallReplyType.map_or(-1, |f| f(self.0.as_ptr())) }
    }

    /// The value of an integer reply.
    pub fn integer(&self) -> Option<i64> {
        if self.kind() != raw::REDISMODULE_REPLY_INTEGER as i32 {
            return None;
        }
        // SAFETY: as in `kind`; the reply is an integer.
        unsafe { raw::RedisModule_CallReplyInteger.map(|f| f(self.0.as_ptr())) }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&bytes_of(self.0)).into_owned()
    }

    /// The string elements of an array reply (a RESP2 HGETALL: field, value, ...), in order;
    /// elements of another type are left out. Empty for a reply that is not an array.
    pub fn strings(&self) -> Vec<Vec<u8>> {
        if self.kind() != raw::REDISMODULE_REPLY_ARRAY as i32 {
            return Vec::new();
        }
        // SAFETY: as in `kind`; the reply is an array.
        let len = unsafe { raw::RedisModule_CallReplyLength.map_or(0, |f| f(self.0.as_ptr())) };
        (0..len)
            .filter_map(|i| {
                // SAFETY: as in `kind`; `i` is below the array's length. The element is
                // borrowed from the array (freed with it, never on its own) and is used only
                // inside this closure, while `self` lives.
                let e = unsafe {
                    raw::RedisModule_CallReplyArrayElement
                        .map_or(std::ptr::null_mut(), |f| f(self.0.as_ptr(), i))
                };
                let e = NonNull::new(e)?;
                // SAFETY: `e` is a live element of the array (above).
                let kind = unsafe { raw::RedisModule_CallReplyType.map_or(-1, |f| f(e.as_ptr())) };
                (kind == raw::REDISMODULE_REPLY_STRING as i32).then(|| bytes_of(e))
            })
            .collect()
    }
}

/// The bytes of a string or error reply (empty for another type).
fn bytes_of(r: NonNull<raw::RedisModuleCallReply>) -> Vec<u8> {
    let mut len = 0usize;
    // SAFETY: `r` is a live reply (the caller's); StringPtr returns a pointer into it (valid
    // while it lives, and copied at once) and its length, or null.
    unsafe {
        let p = raw::RedisModule_CallReplyStringPtr
            .map_or(std::ptr::null(), |f| f(r.as_ptr(), &mut len));
        if p.is_null() {
            return Vec::new();
        }
        std::slice::from_raw_parts(p.cast::<u8>(), len).to_vec()
    }
}

impl Drop for Reply {
    fn drop(&mut self) {
        // SAFETY: the reply is owned by this handle and freed exactly once, here.
        unsafe {
            if let Some(free) = raw::RedisModule_FreeCallReply {
                free(self.0.as_ptr());
            }
        }
    }
}

/// Calls `cmd` with `args`.
pub fn call(ctx: &Context, cmd: &CStr, kind: Kind, args: &[&RedisString]) -> Result<Reply, String> {
    let reply = invoke(ctx, cmd, kind, args).map_err(|errno| {
        // RM_Call sets errno (ENOENT unknown command, EINVAL arity, ENOSPC OOM, EACCES ACL,
        // EROFS read-only replica, ...).
        format!(
            "{} could not be called ({})",
            cmd.to_string_lossy(),
            std::io::Error::from_raw_os_error(errno)
        )
    })?;
    if reply.kind() == raw::REDISMODULE_REPLY_ERROR as i32 {
        return Err(reply.text());
    }
    Ok(reply)
}

/// Why [`read_as_user`] has no reply.
#[derive(Debug)]
pub enum Refused {
    /// The server's ACL refused the user the command or one of its keys.
    Acl,
    /// Any other error, with the server's message.
    Error(String),
}

/// Calls the read `cmd` with `args` as the user the context carries, so that the server
/// gives it the verdict it gives the same command of that user: a client's own user, a
/// script's caller (the script client runs as its caller), the user another module's
/// `RM_Call` with `C` runs as. A context without a user (another module's `RM_Call` without
/// `C`, a module's timer) is not checked, as the server checks nothing it calls there.
pub fn read_as_user(ctx: &Context, cmd: &CStr, args: &[&RedisString]) -> Result<Reply, Refused> {
    let reply = match invoke(ctx, cmd, Kind::ReadAsUser, args) {
        Err(libc::ENOTSUP) => invoke(ctx, cmd, Kind::Read, args),
        other => other,
    };
    match reply {
        Ok(reply) if reply.kind() == raw::REDISMODULE_REPLY_ERROR as i32 => {
            let text = reply.text();
            Err(if text.starts_with("NOPERM") {
                Refused::Acl
            } else {
                Refused::Error(text)
            })
        }
        Ok(reply) => Ok(reply),
        Err(libc::EACCES) => Err(Refused::Acl),
        Err(errno) => Err(Refused::Error(format!(
            "ERR {} could not be called ({})",
            cmd.to_string_lossy(),
            std::io::Error::from_raw_os_error(errno)
        ))),
    }
}

/// RM_Call: the reply, or the `errno` of a NULL reply.
fn invoke(ctx: &Context, cmd: &CStr, kind: Kind, args: &[&RedisString]) -> Result<Reply, i32> {
    let flags = kind.format();
    let mut stack = [std::ptr::null_mut::<raw::RedisModuleString>(); STACK_ARGS];
    let mut heap = Vec::new();
    let argv: &mut [*mut raw::RedisModuleString] = match stack.get_mut(..args.len()) {
        Some(slots) => {
            for (slot, a) in slots.iter_mut().zip(args) {
                *slot = a.inner;
            }
            slots
        }
        None => {
            heap.extend(args.iter().map(|a| a.inner));
            &mut heap
        }
    };
    // SAFETY: reading a function pointer that the module API set at load.
    let Some(rm_call) = (unsafe { raw::RedisModule_Call }) else {
        return Err(libc::ENOSYS);
    };
    // SAFETY: `ctx.ctx` is the live context of the current callback. `cmd` and `flags` are
    // NUL-terminated and outlive the call. The format (from `Kind`) ends in `v` and has no
    // other argument specifier, so it takes exactly the
    // two variadic arguments passed: an array of `argv.len()` valid Redis strings (borrowed
    // from `args`, which outlive the call; RM_Call retains what it keeps) and its length.
    let reply = unsafe {
        rm_call(
            ctx.ctx,
            cmd.as_ptr(),
            flags.as_ptr(),
            argv.as_mut_ptr(),
            argv.len(),
        )
    };
    // errno is read at once, before anything else can change it.
    NonNull::new(reply)
        .map(Reply)
        .ok_or_else(|| std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
}

/// Whether this cluster node owns the slot of `key`. The server refuses a module's call on a
/// key of a slot the node does not serve (a NULL reply with `EPERM`, before the command
/// runs), which is asked here with a cheap read.
pub fn owns_key(ctx: &Context, key: &RedisString) -> bool {
    // SAFETY: reading a function pointer that the module API set at load.
    let Some(rm_call) = (unsafe { raw::RedisModule_Call }) else {
        return false;
    };
    let mut argv = [key.inner];
    // SAFETY: as in `call`: a live context, static NUL-terminated strings, and the format
    // `v` matched by an array of one valid string and its length.
    let reply = unsafe {
        rm_call(
            ctx.ctx,
            c"EXISTS".as_ptr(),
            c"v".as_ptr(),
            argv.as_mut_ptr(),
            argv.len(),
        )
    };
    let Some(reply) = NonNull::new(reply).map(Reply) else {
        return std::io::Error::last_os_error().raw_os_error() != Some(libc::EPERM);
    };
    drop(reply);
    true
}

/// Options for `Context::call_ext` reads: errors come back as replies.
pub fn read_opts() -> CallOptions {
    CallOptionsBuilder::new().errors_as_replies().build()
}

/// Options for `Context::call_ext` writes: replicated, refused under maxmemory, errors as
/// replies.
pub fn write_opts() -> CallOptions {
    CallOptionsBuilder::new()
        .replicate()
        .verify_oom()
        .errors_as_replies()
        .build()
}

/// The error text of a reply, if it is an error.
pub fn reply_error(r: &CallResult) -> Option<String> {
    match r {
        Ok(_) => None,
        Err(e) => Some(e.to_utf8_string().unwrap_or_else(|| "error".into())),
    }
}

/// The bytes of a string reply, borrowed from it.
pub fn str_of<'a>(r: &'a CallReply<'_>) -> Option<&'a [u8]> {
    match r {
        CallReply::String(s) => Some(s.as_bytes()),
        _ => None,
    }
}

/// The value of an integer reply.
pub fn int_of(r: &CallReply) -> Option<i64> {
    match r {
        CallReply::I64(i) => Some(i.to_i64()),
        _ => None,
    }
}

/// Calls `f` with each (name, value) pair of a flat XINFO reply. Nothing is copied: this
/// runs for every drain pass.
pub fn for_each_pair(reply: &CallReply<'_>, mut f: impl FnMut(&[u8], &CallReply<'_>)) {
    let CallReply::Array(fields) = reply else {
        return;
    };
    let mut i = 0;
    while i + 1 < fields.len() {
        if let (Some(Ok(CallReply::String(name))), Some(Ok(value))) =
            (fields.get(i), fields.get(i + 1))
        {
            f(name.as_bytes(), &value);
        }
        i += 2;
    }
}
