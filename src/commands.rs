//! HEATBRIDGE.* commands: argument parsing, ACL checks and replies.

use std::collections::BTreeMap;

use redis_module::redisvalue::RedisValueKey;
use redis_module::{Context, ContextFlags, RedisError, RedisResult, RedisString, RedisValue};

use crate::call;
use crate::config;
use crate::decision::{EntryId, MAX_ID_LEN};
use crate::projection::Keys;
use crate::projector;
use crate::replay;
use crate::server;
use crate::state;
use crate::writer;

/// Default COUNT of HEATBRIDGE.REPLAY.
pub const REPLAY_DEFAULT_COUNT: usize = 10_000;
/// Largest COUNT of HEATBRIDGE.REPLAY.
pub const REPLAY_MAX_COUNT: usize = 100_000;

/// Error replies, with their standard prefixes.
pub mod errors {
    /// A contained internal fault.
    pub const INTERNAL: &str = "ERR internal error in heatbridge; see the server log";
    /// REPLAY on a replica.
    pub const REPLICA: &str = "READONLY HEATBRIDGE.REPLAY runs on the master only";
    /// REPLAY while writes are paused (reached through another module's RM_Call).
    pub const PAUSED: &str =
        "TRYAGAIN HEATBRIDGE.REPLAY: writes are paused (CLIENT PAUSE WRITE or a failover)";
    /// A bad REPLAY argument.
    pub const SYNTAX: &str =
        "ERR syntax error: HEATBRIDGE.REPLAY [STREAM <stream>] [FROM <id>] [COUNT <n>]";
    /// A bad GET or LATEST argument.
    pub const LOOKUP_SYNTAX: &str = "ERR syntax error: <id> [STREAM <stream>]";
    /// A bad FROM id.
    pub const BAD_ID: &str = "ERR Invalid stream ID specified as FROM";
    /// A bad COUNT.
    pub const BAD_COUNT: &str = "ERR COUNT must be an integer from 1 to 100000";
    /// An empty or overlong plan_id/symbol.
    pub const BAD_NAME: &str = "ERR the argument must be 1 to 256 bytes";
}

/// Runs a command body inside the panic guard.
pub fn guarded(
    name: &str,
    ctx: &Context,
    args: Vec<RedisString>,
    f: fn(&Context, Vec<RedisString>) -> RedisResult,
) -> RedisResult {
    crate::guard::contain(name, Err(RedisError::Str(errors::INTERNAL)), || {
        crate::guard::fault_point("command");
        f(ctx, args)
    })
}

fn refresh_if_possible(ctx: &Context) {
    projector::refresh(ctx);
}

/// `HEATBRIDGE.HEALTH`: the health JSON.
pub fn health(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    if args.len() != 1 {
        return Err(RedisError::WrongArity);
    }
    refresh_if_possible(ctx);
    crate::guard::fault_crash_holding("crash-locked", state::published);
    Ok(RedisValue::BulkString(state::health().1))
}

/// `HEATBRIDGE.METRICS`: the Prometheus text.
pub fn metrics(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    if args.len() != 1 {
        return Err(RedisError::WrongArity);
    }
    refresh_if_possible(ctx);
    Ok(RedisValue::BulkString(state::metrics_text()))
}

/// `HEATBRIDGE.GET <plan_id> [STREAM <stream>]`: the by_plan hash.
pub fn get(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    if let Some(done) = keys_request(ctx, &args, 2, 1) {
        return done;
    }
    read_lookup(ctx, args, Keys::by_plan)
}

/// `HEATBRIDGE.LATEST <symbol> [STREAM <stream>]`: the latest hash.
pub fn latest(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    if let Some(done) = keys_request(ctx, &args, 2, 1) {
        return done;
    }
    read_lookup(ctx, args, Keys::latest)
}

/// The position of the stream after the keyword `STREAM`, looking at arguments `from`,
/// `from + step`, ... (the keyword never being the last argument).
pub fn stream_position(args: &[&[u8]], from: usize, step: usize) -> Option<usize> {
    (from..args.len().saturating_sub(1))
        .step_by(step.max(1))
        .find(|&i| {
            args.get(i)
                .is_some_and(|a| a.eq_ignore_ascii_case(b"STREAM"))
        })
        .map(|i| i + 1)
}

/// Answers the server's question "which arguments are keys?" (the commands have the
/// `getkeys-api` flag): the stream after `STREAM`. The server asks it to route and redirect
/// the command in a cluster (MOVED) and for COMMAND GETKEYS. `None` for a normal call.
fn keys_request(
    ctx: &Context,
    args: &[RedisString],
    from: usize,
    step: usize,
) -> Option<RedisResult> {
    if !ctx.is_keys_position_request() {
        return None;
    }
    let raw: Vec<&[u8]> = args.iter().map(RedisString::as_slice).collect();
    if let Some(pos) = stream_position(&raw, from, step).and_then(|p| i32::try_from(p).ok()) {
        ctx.key_at_pos(pos);
    }
    Some(Ok(RedisValue::Null))
}

/// The `STREAM <stream>` of `<id> [STREAM <stream>]`, after the command name.
fn lookup_stream(args: &[RedisString]) -> Result<(&[u8], Option<&[u8]>), RedisError> {
    match args {
        [_, id] => Ok((id.as_slice(), None)),
        [_, id, kw, stream] if kw.as_slice().eq_ignore_ascii_case(b"STREAM") => {
            Ok((id.as_slice(), Some(stream.as_slice())))
        }
        [_, _, _, _] => Err(RedisError::Str(errors::LOOKUP_SYNTAX)),
        _ => Err(RedisError::WrongArity),
    }
}

fn read_lookup(
    ctx: &Context,
    args: Vec<RedisString>,
    name: fn(&Keys, &[u8]) -> Vec<u8>,
) -> RedisResult {
    let (id, stream) = lookup_stream(&args)?;
    if id.is_empty() || id.len() > MAX_ID_LEN {
        return Err(RedisError::Str(errors::BAD_NAME));
    }
    let s = config::current();
    let t = projector::target_for(stream, &s.consumer).map_err(RedisError::String)?;
    let key = writer::rstr(ctx, &name(&t.keys, id));
    // The lookup keys live in heatbridge.db, whatever the caller selected.
    let Some(db) = server::Db::select(ctx, s.db) else {
        return Err(RedisError::String(format!(
            "ERR {}",
            server::no_such_db(s.db)
        )));
    };
    // The key is derived from the argument, so the server has not checked it: the read runs
    // as the user the context carries, and the server gives it the verdict it gives that
    // user's HGETALL of the key.
    let r = call::read_as_user(ctx, c"HGETALL", &[&key]);
    drop(db);
    match r {
        Ok(reply) => Ok(hash_reply(reply.strings())),
        Err(call::Refused::Acl) => Err(RedisError::String(format!(
            "NOPERM this user has no permissions to run 'hgetall' on the '{}' key",
            crate::logging::show_bytes(key.as_slice())
        ))),
        Err(call::Refused::Error(e)) => Err(RedisError::String(e)),
    }
}

/// The field/value list of an HGETALL reply as a map, or nil for a missing key.
fn hash_reply(flat: Vec<Vec<u8>>) -> RedisValue {
    let mut fields = flat.into_iter();
    let mut map = BTreeMap::new();
    while let (Some(k), Some(v)) = (fields.next(), fields.next()) {
        map.insert(RedisValueKey::BulkString(k), RedisValue::StringBuffer(v));
    }
    if map.is_empty() {
        RedisValue::Null
    } else {
        RedisValue::OrderedMap(map)
    }
}

/// Parsed arguments of HEATBRIDGE.REPLAY.
#[derive(Debug, PartialEq, Eq)]
pub struct ReplayArgs<'a> {
    /// The stream named with STREAM, if any.
    pub stream: Option<&'a [u8]>,
    /// Exclusive start.
    pub from: EntryId,
    /// Most entries to re-project.
    pub count: usize,
}

/// Parses `[STREAM <stream>] [FROM <id>] [COUNT <n>]` (after the command name).
pub fn parse_replay<'a>(args: &[&'a [u8]]) -> Result<ReplayArgs<'a>, &'static str> {
    let mut out = ReplayArgs {
        stream: None,
        from: EntryId::ZERO,
        count: REPLAY_DEFAULT_COUNT,
    };
    let mut it = args.iter();
    while let Some(opt) = it.next() {
        let value = it.next().ok_or(errors::SYNTAX)?;
        if opt.eq_ignore_ascii_case(b"STREAM") {
            // One stream: the server routes the command by the first one.
            if out.stream.replace(value).is_some() {
                return Err(errors::SYNTAX);
            }
        } else if opt.eq_ignore_ascii_case(b"FROM") {
            out.from = EntryId::parse(value).ok_or(errors::BAD_ID)?;
        } else if opt.eq_ignore_ascii_case(b"COUNT") {
            let n: usize = std::str::from_utf8(value)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or(errors::BAD_COUNT)?;
            if n == 0 || n > REPLAY_MAX_COUNT {
                return Err(errors::BAD_COUNT);
            }
            out.count = n;
        } else {
            return Err(errors::SYNTAX);
        }
    }
    Ok(out)
}

/// `HEATBRIDGE.REPLAY [STREAM <stream>] [FROM <id>] [COUNT <n>]`: re-projects entries,
/// ignoring dedupe.
pub fn replay(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    if let Some(done) = keys_request(ctx, &args, 1, 2) {
        return done;
    }
    let raw: Vec<&[u8]> = args.iter().skip(1).map(RedisString::as_slice).collect();
    let a = parse_replay(&raw).map_err(RedisError::Str)?;
    let flags = ctx.get_flags();
    if !flags.contains(ContextFlags::MASTER) {
        return Err(RedisError::Str(errors::REPLICA));
    }
    // Clients are paused by the server itself; another module's RM_Call is not.
    if server::writes_paused() {
        return Err(RedisError::Str(errors::PAUSED));
    }
    let s = config::current();
    let t = projector::target_for(a.stream, &s.consumer).map_err(RedisError::String)?;
    let (n, last) = replay::replay(ctx, &t, a.from, a.count).map_err(RedisError::String)?;
    Ok(RedisValue::Array(vec![
        RedisValue::Integer(n as i64),
        RedisValue::BulkString(last.to_string()),
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stream_follows_its_keyword() {
        let get: [&[u8]; 4] = [b"HEATBRIDGE.GET", b"p", b"stream", b"s"];
        assert_eq!(stream_position(&get, 2, 1), Some(3));
        // A plan_id that reads STREAM is not the keyword.
        let odd: [&[u8]; 2] = [b"HEATBRIDGE.GET", b"STREAM"];
        assert_eq!(stream_position(&odd, 2, 1), None);
        let dangling: [&[u8]; 3] = [b"HEATBRIDGE.GET", b"p", b"STREAM"];
        assert_eq!(stream_position(&dangling, 2, 1), None);
        let replay: [&[u8]; 5] = [b"HEATBRIDGE.REPLAY", b"COUNT", b"STREAM", b"STREAM", b"s"];
        assert_eq!(
            stream_position(&replay, 1, 2),
            Some(4),
            "COUNT's value is not a keyword"
        );
        let none: [&[u8]; 1] = [b"HEATBRIDGE.REPLAY"];
        assert_eq!(stream_position(&none, 1, 2), None);
    }

    #[test]
    fn a_hash_reply_pairs_fields_with_values() {
        let flat = |v: &[&str]| v.iter().map(|s| s.as_bytes().to_vec()).collect::<Vec<_>>();
        assert_eq!(
            hash_reply(Vec::new()),
            RedisValue::Null,
            "a missing key is nil"
        );
        let RedisValue::OrderedMap(m) = hash_reply(flat(&["b", "2", "a", "1", "odd"])) else {
            panic!("a map");
        };
        let got: Vec<_> = m.into_iter().collect();
        assert_eq!(
            got,
            vec![
                (
                    RedisValueKey::BulkString(b"a".to_vec()),
                    RedisValue::StringBuffer(b"1".to_vec())
                ),
                (
                    RedisValueKey::BulkString(b"b".to_vec()),
                    RedisValue::StringBuffer(b"2".to_vec())
                ),
            ]
        );
    }

    #[test]
    fn replay_args() {
        assert_eq!(
            parse_replay(&[]),
            Ok(ReplayArgs {
                stream: None,
                from: EntryId::ZERO,
                count: 10_000
            })
        );
        assert_eq!(
            parse_replay(&[b"from", b"5-1", b"COUNT", b"7"]),
            Ok(ReplayArgs {
                stream: None,
                from: EntryId { ms: 5, seq: 1 },
                count: 7
            })
        );
        assert_eq!(parse_replay(&[b"FROM"]), Err(errors::SYNTAX));
        assert_eq!(parse_replay(&[b"FROM", b"x"]), Err(errors::BAD_ID));
        assert_eq!(parse_replay(&[b"COUNT", b"0"]), Err(errors::BAD_COUNT));
        assert_eq!(parse_replay(&[b"COUNT", b"100001"]), Err(errors::BAD_COUNT));
        assert_eq!(parse_replay(&[b"COUNT", b"-1"]), Err(errors::BAD_COUNT));
        assert_eq!(parse_replay(&[b"LIMIT", b"1"]), Err(errors::SYNTAX));
        assert_eq!(
            parse_replay(&[b"STREAM", b"a", b"STREAM", b"b"]),
            Err(errors::SYNTAX)
        );
    }
}
