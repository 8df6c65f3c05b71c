//! ACLs of the HEATBRIDGE commands however they are invoked (CONTRACT §6): directly, in
//! MULTI/EXEC, from EVAL, EVAL_RO, FCALL and FCALL_RO, through another module's
//! RedisModule_Call with and without `C`, and from another module's timer with and without
//! `C` (`tests/modules/caller.c`). GET and LATEST read a key derived from their argument,
//! which the server cannot check before the command runs; the verdict on a lookup must be
//! the one the server itself gives `HGETALL` of that key issued the same way by the same
//! user, and with `STREAM` also a read (`XLEN`) of the stream. The expected verdicts are
//! asked of the server, never written down here. HEALTH, METRICS and REPLAY must reply
//! cleanly (a reply or an error) in every way, for users with and without the right to run
//! them, and the server must never crash.

mod common;
use common::*;

use std::time::{Duration, Instant};

use redis::Value;

/// A second, hash-tagged stream: lookups that name it read its tagged keys.
const TAGGED: &str = "quantum:stream:{acl}:harvest.heat.decision";

/// Runs its arguments as a command: `EVAL`/`EVAL_RO <SCRIPT> 0 <cmd> <args...>`.
const SCRIPT: &str = "return redis.call(unpack(ARGV))";

/// The same for `FCALL acl_call` and `FCALL_RO acl_call_ro` (no-writes, as FCALL_RO needs).
const LIBRARY: &str = "#!lua name=acltest
local function run(keys, args) return redis.call(unpack(args)) end
redis.register_function('acl_call', run)
redis.register_function{function_name='acl_call_ro', callback=run, flags={'no-writes'}}";

/// Every way a command can be invoked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Way {
    Direct,
    Multi,
    Eval,
    EvalRo,
    Fcall,
    FcallRo,
    /// Another module's `RM_Call(ctx, cmd, "Cv", ...)` (CALLER.CALLACL).
    ModuleAcl,
    /// Another module's `RM_Call(ctx, cmd, "v", ...)` (CALLER.CALL).
    Module,
    /// The same `"Cv"` call from another module's timer (CALLER.TIMER acl).
    TimerAcl,
    /// The same `"v"` call from another module's timer (CALLER.TIMER plain).
    Timer,
}

const WAYS: [Way; 10] = [
    Way::Direct,
    Way::Multi,
    Way::Eval,
    Way::EvalRo,
    Way::Fcall,
    Way::FcallRo,
    Way::ModuleAcl,
    Way::Module,
    Way::TimerAcl,
    Way::Timer,
];

impl Way {
    /// Ways in which the server checks the ACL of the user who asked (a connection's user, a
    /// script's caller, the user of an RM_Call with `C`).
    fn checked(self) -> bool {
        !matches!(self, Way::Module | Way::Timer | Way::TimerAcl)
    }

    fn read_only_script(self) -> bool {
        matches!(self, Way::EvalRo | Way::FcallRo)
    }
}

/// Users for the lookups: name and ACL rules. The default user runs the setup.
const USERS: [(&str, &[&str]); 5] = [
    (
        "reader",
        &["~quantum:harvest:heat:*", "~quantum:stream:*", "+@all"],
    ),
    // Denied the derived keys and the streams.
    ("other", &["~other:*", "+@all"]),
    // Allowed the derived keys, denied the streams.
    ("nostream", &["~quantum:harvest:heat:*", "+@all"]),
    // Allowed the streams, denied the derived keys.
    ("onlystream", &["~quantum:stream:*", "+@all"]),
    // Every key, but not the command HGETALL.
    ("nohgetall", &["~*", "+@all", "-hgetall"]),
];

/// A user without the right to run HEALTH, METRICS or REPLAY. REPLAY is in `@admin` where
/// the server gives module commands categories (Redis 7.2+, Valkey); Redis 7.0 gives them
/// none, so it is denied by name too.
const NO_ADMIN: (&str, &[&str]) = (
    "noadmin",
    &[
        "~*",
        "+@all",
        "-@admin",
        "-heatbridge.replay",
        "-heatbridge.health",
        "-heatbridge.metrics",
    ],
);

/// A reply, or an error as `CODE detail`.
type Outcome = Result<Value, String>;

/// What the server decided.
#[derive(Clone)]
enum Verdict {
    /// Allowed, with the field/value pairs, sorted (none for nil or an empty hash).
    Allowed(Vec<(String, String)>),
    /// Refused by the ACL, with the error.
    Denied(String),
    /// Another error, or a reply that is not a hash.
    Error(String),
}

impl Verdict {
    fn describe(&self) -> String {
        match self {
            Verdict::Allowed(pairs) => format!("allowed {pairs:?}"),
            Verdict::Denied(e) => format!("denied ({e})"),
            Verdict::Error(e) => format!("error ({e})"),
        }
    }

    fn same(&self, other: &Verdict) -> bool {
        match (self, other) {
            (Verdict::Allowed(a), Verdict::Allowed(b)) => a == b,
            (Verdict::Denied(_), Verdict::Denied(_)) | (Verdict::Error(_), Verdict::Error(_)) => {
                true
            }
            _ => false,
        }
    }

    /// Allowed iff both are: the verdict of a command that reads both keys.
    fn and(self, other: Verdict) -> Verdict {
        match (self, other) {
            (e @ Verdict::Error(_), _) | (_, e @ Verdict::Error(_)) => e,
            (d @ Verdict::Denied(_), _) | (_, d @ Verdict::Denied(_)) => d,
            (a, Verdict::Allowed(_)) => a,
        }
    }
}

/// Whether an error is the server's ACL refusal: a NOPERM reply, the refusal of a command
/// inside a script (Redis 7.0: "The user executing the script can't ...", Redis 8.2 and
/// Valkey: "ACL failure in script: ..."), or a NULL RM_Call reply with EACCES.
fn is_acl_refusal(e: &str) -> bool {
    e.starts_with("NOPERM")
        || e.contains("ACL failure in script")
        || e.contains("The user executing the script can't")
        || e.contains(&format!("(errno {EACCES}"))
}

/// EACCES on Linux.
const EACCES: i32 = 13;

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        Value::Okay => Some("OK".into()),
        _ => None,
    }
}

fn verdict(o: &Outcome) -> Verdict {
    match o {
        Err(e) if is_acl_refusal(e) => Verdict::Denied(e.clone()),
        Err(e) => Verdict::Error(e.clone()),
        Ok(Value::Nil) => Verdict::Allowed(Vec::new()),
        Ok(Value::Array(items)) if items.len() % 2 == 0 => {
            let mut pairs = Vec::new();
            for kv in items.chunks(2) {
                match (text(&kv[0]), text(&kv[1])) {
                    (Some(k), Some(v)) => pairs.push((k, v)),
                    _ => return Verdict::Error(format!("not a hash: {items:?}")),
                }
            }
            pairs.sort();
            Verdict::Allowed(pairs)
        }
        Ok(v) => Verdict::Error(format!("not a hash: {v:?}")),
    }
}

fn err_text(e: &redis::RedisError) -> String {
    format!(
        "{} {}",
        e.code().unwrap_or("?"),
        e.detail().unwrap_or_default()
    )
}

fn query(c: &mut Connection, args: &[String]) -> Outcome {
    let mut cmd = redis::cmd(&args[0]);
    for a in &args[1..] {
        cmd.arg(a);
    }
    cmd.query::<Value>(c).map_err(|e| err_text(&e))
}

fn strs(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// What the last CALLER.TIMER call got, parsed back from caller.c's text form.
fn timer_outcome(text: &str) -> Outcome {
    if let Some(errno) = text.strip_prefix("!errno ") {
        return Err(format!("ERR timer: NULL reply (errno {errno})"));
    }
    let (kind, rest) = text.split_at(1.min(text.len()));
    match kind {
        "-" => Err(rest.to_string()),
        "+" => Ok(Value::BulkString(rest.as_bytes().to_vec())),
        ":" => rest.parse().map(Value::Int).map_err(|_| text.to_string()),
        "_" => Ok(Value::Nil),
        "*" => {
            let mut lines = text.lines();
            lines.next();
            lines
                .map(timer_outcome)
                .collect::<Result<_, _>>()
                .map(Value::Array)
        }
        _ => Err(format!("unparsable timer result {text:?}")),
    }
}

/// Runs `args` (a command and its arguments) the way `way` says, as the user of `c`.
fn run(c: &mut Connection, way: Way, args: &[&str]) -> Outcome {
    let args = strs(args);
    let wrap = |head: &[&str]| {
        strs(head)
            .into_iter()
            .chain(args.iter().cloned())
            .collect::<Vec<_>>()
    };
    match way {
        Way::Direct => query(c, &args),
        Way::Multi => {
            query(c, &strs(&["MULTI"])).expect("MULTI");
            let queued = query(c, &args);
            let exec = query(c, &strs(&["EXEC"]));
            // A command refused when queued (unknown, arity, ACL of the command and its
            // declared keys) aborts the transaction: its own error is the verdict.
            queued?;
            match exec? {
                Value::Array(mut items) if items.len() == 1 => match items.remove(0) {
                    Value::ServerError(e) => {
                        Err(format!("{} {}", e.code(), e.details().unwrap_or_default()))
                    }
                    v => Ok(v),
                },
                other => Err(format!("EXEC replied {other:?}")),
            }
        }
        Way::Eval => query(c, &wrap(&["EVAL", SCRIPT, "0"])),
        Way::EvalRo => query(c, &wrap(&["EVAL_RO", SCRIPT, "0"])),
        Way::Fcall => query(c, &wrap(&["FCALL", "acl_call", "0"])),
        Way::FcallRo => query(c, &wrap(&["FCALL_RO", "acl_call_ro", "0"])),
        Way::ModuleAcl => query(c, &wrap(&["CALLER.CALLACL"])),
        Way::Module => query(c, &wrap(&["CALLER.CALL"])),
        Way::TimerAcl | Way::Timer => {
            let mode = if way == Way::TimerAcl { "acl" } else { "plain" };
            let started = query(c, &wrap(&["CALLER.TIMER", mode]));
            assert_eq!(started, Ok(Value::Okay), "CALLER.TIMER {args:?}");
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match query(c, &strs(&["CALLER.RESULT"])) {
                    Ok(Value::Nil) => {}
                    Ok(v) => {
                        let t = text(&v).expect("CALLER.RESULT is a string");
                        return timer_outcome(&t);
                    }
                    Err(e) => panic!("CALLER.RESULT: {e}"),
                }
                assert!(Instant::now() < deadline, "the timer never ran {args:?}");
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }
}

fn conn_as(s: &Server, user: &str) -> Connection {
    let mut c = s.conn();
    let ok: String = redis::cmd("AUTH")
        .arg(user)
        .arg("pw")
        .query(&mut c)
        .expect("AUTH");
    assert_eq!(ok, "OK");
    c
}

fn setup(flavor: Flavor) -> Server {
    let s = Options::new(flavor)
        .without_exporter()
        .module_arg("stream-in", &format!("{STREAM},{TAGGED}"))
        .start();
    let mut c = s.conn();
    load_caller_module(&s, &mut c);
    let _: String = redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg("REPLACE")
        .arg(LIBRARY)
        .query(&mut c)
        .expect("FUNCTION LOAD");
    for (user, rules) in USERS.iter().chain([&NO_ADMIN]) {
        let mut cmd = redis::cmd("ACL");
        cmd.arg("SETUSER")
            .arg(*user)
            .arg("on")
            .arg(">pw")
            .arg(*rules);
        let _: () = cmd.query(&mut c).expect("ACL SETUSER");
    }
    xadd(&mut c, STREAM, "*", &decision("S", "p1", &[]));
    xadd(
        &mut c,
        TAGGED,
        "*",
        &decision("S", "p1", &[("reason", "tagged")]),
    );
    wait_for(10, "both streams projected", || {
        exists(&mut c, "quantum:harvest:heat:by_plan:p1")
            && exists(&mut c, "quantum:harvest:heat:latest:{acl}:S")
            && exists(&mut c, "quantum:harvest:heat:by_plan:{acl}:p1")
            && exists(&mut c, "quantum:harvest:heat:latest:S")
    });
    s
}

/// The verdict on HEATBRIDGE.GET/LATEST equals the server's own verdict on HGETALL of the
/// derived key (and XLEN of the stream with STREAM) issued the same way by the same user,
/// and what is allowed is the right hash.
#[test]
fn lookups_get_the_servers_verdict_for_a_read_of_their_keys_in_every_way() {
    for_each_flavor(|flavor| {
        let mut s = setup(flavor);
        let mut admin = s.conn();
        // (command, argument, stream, derived key)
        let lookups = [
            (
                "HEATBRIDGE.GET",
                "p1",
                None,
                "quantum:harvest:heat:by_plan:p1",
            ),
            (
                "HEATBRIDGE.GET",
                "none",
                None,
                "quantum:harvest:heat:by_plan:none",
            ),
            (
                "HEATBRIDGE.LATEST",
                "S",
                None,
                "quantum:harvest:heat:latest:S",
            ),
            (
                "HEATBRIDGE.GET",
                "p1",
                Some(TAGGED),
                "quantum:harvest:heat:by_plan:{acl}:p1",
            ),
            (
                "HEATBRIDGE.GET",
                "none",
                Some(TAGGED),
                "quantum:harvest:heat:by_plan:{acl}:none",
            ),
            (
                "HEATBRIDGE.LATEST",
                "S",
                Some(TAGGED),
                "quantum:harvest:heat:latest:{acl}:S",
            ),
        ];
        let truth: Vec<Vec<(String, String)>> = lookups
            .iter()
            .map(|(_, _, _, key)| hgetall(&mut admin, key))
            .collect();
        assert!(truth[0].contains(&("plan_id".into(), "p1".into())));
        assert!(truth[3].contains(&("reason".into(), "tagged".into())));
        assert_ne!(truth[0], truth[3], "the tagged stream's keys differ");
        let mut mismatches = Vec::new();
        let mut seen = [0usize; 3];
        for (user, _) in USERS {
            let mut c = conn_as(&s, user);
            for way in WAYS {
                for ((cmd, arg, stream, key), truth) in lookups.iter().zip(&truth) {
                    let mut args = vec![*cmd, *arg];
                    if let Some(st) = stream {
                        args.extend(["STREAM", st]);
                    }
                    let got = verdict(&run(&mut c, way, &args));
                    let mut expected = verdict(&run(&mut c, way, &["HGETALL", key]));
                    if let Some(st) = stream {
                        let xlen = match run(&mut c, way, &["XLEN", st]) {
                            Ok(Value::Int(_)) => Verdict::Allowed(Vec::new()),
                            other => verdict(&other),
                        };
                        expected = expected.and(xlen);
                    }
                    if let Verdict::Allowed(data) = &expected {
                        assert_eq!(data, truth, "{user} {way:?} HGETALL {key}");
                    }
                    if !got.same(&expected) {
                        mismatches.push(format!(
                            "{user} {way:?} {args:?}: got {}, the server's verdict on \
                             HGETALL {key}{} is {}",
                            got.describe(),
                            if stream.is_some() { " and XLEN" } else { "" },
                            expected.describe()
                        ));
                    }
                    seen[match got {
                        Verdict::Allowed(_) => 0,
                        Verdict::Denied(_) => 1,
                        Verdict::Error(_) => 2,
                    }] += 1;
                }
                assert_alive(&mut s, &format!("after {user} {way:?}"));
            }
        }
        assert!(
            mismatches.is_empty(),
            "{} of {} lookups differ from the server's own verdict:\n{}",
            mismatches.len(),
            USERS.len() * WAYS.len() * lookups.len(),
            mismatches.join("\n")
        );
        // The matrix has all three verdicts, so it compares something.
        eprintln!("verdicts allowed/denied/error: {seen:?}");
        assert!(seen.iter().all(|&n| n > 0), "verdicts seen {seen:?}");
    });
}

/// HEALTH, METRICS and REPLAY in every way, for a user with the right to run them and one
/// without: a clean reply or error each time, refused where the server refuses the command
/// itself, and the server alive.
#[test]
fn health_metrics_and_replay_reply_cleanly_in_every_way() {
    for_each_flavor(|flavor| {
        let mut s = setup(flavor);
        for (user, allowed) in [("reader", true), (NO_ADMIN.0, false)] {
            let mut c = conn_as(&s, user);
            for way in WAYS {
                for args in [
                    &["HEATBRIDGE.HEALTH"][..],
                    &["HEATBRIDGE.METRICS"],
                    &["HEATBRIDGE.REPLAY", "COUNT", "5"],
                    &["HEATBRIDGE.REPLAY", "STREAM", TAGGED, "COUNT", "5"],
                ] {
                    let got = run(&mut c, way, args);
                    assert_alive(&mut s, &format!("after {user} {way:?} {args:?}"));
                    let what = format!("{user} {way:?} {args:?}: {got:?}");
                    let replay = args[0] == "HEATBRIDGE.REPLAY";
                    match &got {
                        Ok(v) if replay => {
                            let Value::Array(items) = v else {
                                panic!("{what}: not [count, last-id]");
                            };
                            assert!(
                                matches!(items.as_slice(), [Value::Int(1), id] if text(id).is_some()),
                                "{what}: not [1, last-id]"
                            );
                        }
                        Ok(v) => {
                            let t = text(v).unwrap_or_else(|| panic!("{what}: not a string"));
                            if args[0] == "HEATBRIDGE.HEALTH" {
                                let json: serde_json::Value = serde_json::from_str(&t)
                                    .unwrap_or_else(|e| panic!("{what}: {e}"));
                                assert!(json["status"].is_string(), "{what}");
                            } else {
                                assert!(t.contains("p27_in_messages_total"), "{what}");
                            }
                        }
                        Err(e) => assert!(!e.is_empty(), "{what}"),
                    }
                    // Unchecked ways run as no user; a timer cannot call with "C".
                    let may = match way {
                        Way::Module | Way::Timer => Some(true),
                        Way::TimerAcl => Some(false),
                        _ => None,
                    };
                    let expect_ok = may.unwrap_or(allowed && !(replay && way.read_only_script()));
                    assert_eq!(got.is_ok(), expect_ok, "{what}");
                    if way.checked() && !allowed {
                        assert!(is_acl_refusal(got.as_ref().unwrap_err()), "{what}");
                    }
                }
            }
        }
    });
}
