//! COMMAND DOCS and key specs of the HEATBRIDGE.* commands (`RM_SetCommandInfo`, Redis 7.0+).
//!
//! The stream that `STREAM <stream>` names is declared as a key through a keyword key spec,
//! so that `COMMAND GETKEYS` returns it, a cluster node that does not own it answers MOVED,
//! and cluster clients route the command (as a `movablekeys` command). Everything here is
//! static C strings: the server copies what it keeps, and nothing is allocated or leaked.

use std::ffi::{c_int, CStr};
use std::ptr;

use redis_module::{raw, Context};

/// The version the server checks the structures below against.
const VERSION: raw::RedisModuleCommandInfoVersion = raw::RedisModuleCommandInfoVersion {
    version: 1,
    sizeof_historyentry: std::mem::size_of::<raw::RedisModuleCommandHistoryEntry>(),
    sizeof_keyspec: std::mem::size_of::<raw::RedisModuleCommandKeySpec>(),
    sizeof_arg: std::mem::size_of::<raw::RedisModuleCommandArg>(),
};

/// The release that added the commands.
const SINCE: &CStr = c"0.1.0";

/// An argument: `name`, of `kind`, introduced by `token` if any, optional or not.
fn arg(
    name: &'static CStr,
    kind: raw::RedisModuleCommandArgType,
    token: Option<&'static CStr>,
    optional: bool,
    key_spec: Option<c_int>,
) -> raw::RedisModuleCommandArg {
    raw::RedisModuleCommandArg {
        name: name.as_ptr(),
        type_: kind,
        key_spec_index: key_spec.unwrap_or(-1),
        token: token.map_or(ptr::null(), CStr::as_ptr),
        summary: ptr::null(),
        since: ptr::null(),
        flags: if optional {
            raw::REDISMODULE_CMD_ARG_OPTIONAL as c_int
        } else {
            raw::REDISMODULE_CMD_ARG_NONE as c_int
        },
        deprecated_since: ptr::null(),
        subargs: ptr::null_mut(),
        display_text: ptr::null(),
    }
}

/// The end of an argument array.
fn no_arg() -> raw::RedisModuleCommandArg {
    raw::RedisModuleCommandArg {
        name: ptr::null(),
        type_: 0,
        key_spec_index: 0,
        token: ptr::null(),
        summary: ptr::null(),
        since: ptr::null(),
        flags: 0,
        deprecated_since: ptr::null(),
        subargs: ptr::null_mut(),
        display_text: ptr::null(),
    }
}

/// The key that follows the keyword `STREAM`, searched from argument `from` on.
fn stream_key_spec(from: c_int, flags: u32) -> raw::RedisModuleCommandKeySpec {
    raw::RedisModuleCommandKeySpec {
        notes: c"the input stream named with STREAM".as_ptr(),
        flags: u64::from(flags),
        begin_search_type: raw::RedisModuleKeySpecBeginSearchType_REDISMODULE_KSPEC_BS_KEYWORD,
        bs: raw::RedisModuleCommandKeySpec__bindgen_ty_1 {
            keyword: raw::RedisModuleCommandKeySpec__bindgen_ty_1__bindgen_ty_2 {
                keyword: c"STREAM".as_ptr(),
                startfrom: from,
            },
        },
        find_keys_type: raw::RedisModuleKeySpecFindKeysType_REDISMODULE_KSPEC_FK_RANGE,
        fk: raw::RedisModuleCommandKeySpec__bindgen_ty_2 {
            range: raw::RedisModuleCommandKeySpec__bindgen_ty_2__bindgen_ty_1 {
                lastkey: 0,
                keystep: 1,
                limit: 0,
            },
        },
    }
}

/// The end of a key spec array.
fn no_key_spec() -> raw::RedisModuleCommandKeySpec {
    raw::RedisModuleCommandKeySpec {
        notes: ptr::null(),
        flags: 0,
        begin_search_type: 0,
        bs: raw::RedisModuleCommandKeySpec__bindgen_ty_1 {
            keyword: raw::RedisModuleCommandKeySpec__bindgen_ty_1__bindgen_ty_2 {
                keyword: ptr::null(),
                startfrom: 0,
            },
        },
        find_keys_type: 0,
        fk: raw::RedisModuleCommandKeySpec__bindgen_ty_2 {
            range: raw::RedisModuleCommandKeySpec__bindgen_ty_2__bindgen_ty_1 {
                lastkey: 0,
                keystep: 0,
                limit: 0,
            },
        },
    }
}

/// Sets the info of command `name`.
fn set(
    ctx: &Context,
    name: &CStr,
    summary: &CStr,
    complexity: &CStr,
    arity: c_int,
    key_specs: &mut [raw::RedisModuleCommandKeySpec],
    args: &mut [raw::RedisModuleCommandArg],
) -> Result<(), String> {
    let what = name.to_string_lossy();
    // SAFETY: reading function pointers that the module API set at load.
    let (Some(get), Some(set)) = (unsafe { raw::RedisModule_GetCommand }, unsafe {
        raw::RedisModule_SetCommandInfo
    }) else {
        return Err("the server cannot describe module commands".into());
    };
    // SAFETY: `ctx.ctx` is the live context of the module load and `name` a NUL-terminated
    // string; the command was registered by this module.
    let command = unsafe { get(ctx.ctx, name.as_ptr()) };
    if command.is_null() {
        return Err(format!("command {what} is not registered"));
    }
    let info = raw::RedisModuleCommandInfo {
        version: &VERSION,
        summary: summary.as_ptr(),
        complexity: complexity.as_ptr(),
        since: SINCE.as_ptr(),
        history: ptr::null_mut(),
        tips: ptr::null(),
        arity,
        key_specs: if key_specs.is_empty() {
            ptr::null_mut()
        } else {
            key_specs.as_mut_ptr()
        },
        args: if args.is_empty() {
            ptr::null_mut()
        } else {
            args.as_mut_ptr()
        },
    };
    // SAFETY: `command` belongs to this module; `info` and the arrays it points to (each
    // ending in a zeroed element) and every C string in them live until the call returns,
    // and the server copies what it keeps.
    let rc = unsafe { set(command, &info) };
    if rc == raw::REDISMODULE_OK as c_int {
        Ok(())
    } else {
        Err(format!("the server refused the info of {what}"))
    }
}

/// Describes every HEATBRIDGE.* command (module load).
pub fn describe(ctx: &Context) -> Result<(), String> {
    use raw::{
        RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_INTEGER as INTEGER,
        RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_KEY as KEY,
        RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_STRING as STRING,
    };
    let read = raw::REDISMODULE_CMD_KEY_RO | raw::REDISMODULE_CMD_KEY_ACCESS;
    set(
        ctx,
        c"heatbridge.health",
        c"The health JSON, the same as GET /health.",
        c"O(N) for the N input streams",
        1,
        &mut [],
        &mut [],
    )?;
    set(
        ctx,
        c"heatbridge.metrics",
        c"The Prometheus text, the same as GET /metrics.",
        c"O(N) for the N input streams",
        1,
        &mut [],
        &mut [],
    )?;
    for (name, summary, id) in [
        (
            c"heatbridge.get",
            c"The by_plan hash of a plan, as a map, or nil.",
            c"plan_id",
        ),
        (
            c"heatbridge.latest",
            c"The latest hash of a symbol, as a map, or nil.",
            c"symbol",
        ),
    ] {
        set(
            ctx,
            name,
            summary,
            c"O(N) for the N fields of the hash",
            -2,
            &mut [stream_key_spec(2, read), no_key_spec()],
            &mut [
                arg(id, STRING, None, false, None),
                arg(c"stream", KEY, Some(c"STREAM"), true, Some(0)),
                no_arg(),
            ],
        )?;
    }
    set(
        ctx,
        c"heatbridge.replay",
        c"Re-projects up to COUNT entries of a stream after FROM, in stream order, ignoring dedupe.",
        c"O(N) for the N entries looked at",
        -1,
        &mut [stream_key_spec(1, read), no_key_spec()],
        &mut [
            arg(c"stream", KEY, Some(c"STREAM"), true, Some(0)),
            arg(c"from", STRING, Some(c"FROM"), true, None),
            arg(c"count", INTEGER, Some(c"COUNT"), true, None),
            no_arg(),
        ],
    )
}
