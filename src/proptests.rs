//! Property tests of the pure code on untrusted input: entry parsing, key planning and
//! expiry, dedupe verdicts, entry IDs, HTTP request heads and routing, and the metrics text.
//!
//! They live inside the crate because unit tests run on the system allocator; an
//! integration test would link the Redis allocator, which aborts outside Redis. The case
//! count is proptest's default (256) unless `PROPTEST_CASES` says otherwise; see
//! `docs/fuzzing.md` for a longer run.

use std::collections::HashSet;

use proptest::collection::vec;
use proptest::prelude::*;

use crate::core::decision::{self, EntryId, Invalid, MAX_ENTRY_BYTES, MAX_FIELDS, MAX_ID_LEN};
use crate::core::http::{self, Endpoint, Parsed, Response, MAX_HEAD};
use crate::core::metrics::{self, Gauges, Snapshot};
use crate::core::projection::{self, Dedupe, Ttls};

type Fields = Vec<(Vec<u8>, Vec<u8>)>;

/// What a valid entry parses to: plan_id, symbol and ts_epoch.
type Expected = (Vec<u8>, Vec<u8>, Option<f64>);

/// Field names: mostly the ones the parser looks for, some arbitrary bytes.
fn field_name() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => Just(b"plan_id".to_vec()),
        3 => Just(b"symbol".to_vec()),
        2 => Just(b"ts_epoch".to_vec()),
        1 => Just(b"debug_json".to_vec()),
        3 => vec(any::<u8>(), 0..16),
    ]
}

/// Field values: small, around the 256-byte ID limit, or numbers.
fn field_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => vec(any::<u8>(), 0..12),
        1 => vec(any::<u8>(), (MAX_ID_LEN - 2)..=(MAX_ID_LEN + 2)),
        1 => any::<f64>().prop_map(|f| format!(" {f} ").into_bytes()),
    ]
}

/// A large value, up to 100 KiB.
fn large_value() -> impl Strategy<Value = Vec<u8>> {
    (any::<u8>(), 0..=100 * 1024usize).prop_map(|(b, n)| vec![b; n])
}

/// Entries of 0 to 200 fields, weighted towards few fields and the 64-field limit, a third
/// of them with one large field (up to 100 KiB) somewhere, so that every outcome of the
/// parser is reached (see `the_entry_generator_reaches_every_outcome`).
fn fields() -> impl Strategy<Value = Fields> {
    let pair = || (field_name(), field_value());
    let pairs = prop_oneof![
        5 => vec(pair(), 0..=10),
        2 => vec(pair(), 60..=68),
        1 => vec(pair(), 0..=200),
    ];
    let large = prop::option::weighted(
        0.33,
        (field_name(), large_value(), any::<prop::sample::Index>()),
    );
    (pairs, large).prop_map(|(mut f, large)| {
        if let Some((k, v, at)) = large {
            let i = at.index(f.len() + 1);
            f.insert(i, (k, v));
        }
        f
    })
}

/// Entries right at the limits: 60 to 70 fields and about 64 KiB in total.
fn fields_near_limits() -> impl Strategy<Value = Fields> {
    (
        60usize..=70,
        (MAX_ENTRY_BYTES - 600)..=(MAX_ENTRY_BYTES + 600),
    )
        .prop_map(|(n, total)| {
            let mut f: Fields = vec![(b"plan_id".to_vec(), b"P".to_vec())];
            f.push((b"symbol".to_vec(), b"S".to_vec()));
            for i in 2..n {
                f.push((format!("f{i:02}").into_bytes(), Vec::new()));
            }
            let used: usize = f.iter().map(|(k, v)| k.len() + v.len()).sum();
            if let Some(last) = f.last_mut() {
                last.1 = vec![b'x'; total.saturating_sub(used)];
            }
            f
        })
}

/// What the parser must answer, computed independently of it.
fn expected(fields: &Fields) -> Result<Expected, Invalid> {
    if fields.len() > MAX_FIELDS {
        return Err(Invalid::TooManyFields(fields.len()));
    }
    let total: usize = fields.iter().map(|(k, v)| k.len() + v.len()).sum();
    if total > MAX_ENTRY_BYTES {
        return Err(Invalid::TooLarge(total));
    }
    let last = |name: &[u8]| {
        let mut found = None;
        for (k, v) in fields {
            if k.as_slice() == name {
                found = Some(v.clone());
            }
        }
        found
    };
    let required = |name: &'static str| match last(name.as_bytes()) {
        None => Err(Invalid::Missing(name)),
        Some(v) if v.is_empty() => Err(Invalid::Empty(name)),
        Some(v) if v.len() > MAX_ID_LEN => Err(Invalid::TooLong(name, v.len())),
        Some(v) => Ok(v),
    };
    let plan = required("plan_id")?;
    let symbol = required("symbol")?;
    let ts = last(b"ts_epoch")
        .and_then(|v| String::from_utf8(v).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|t| t.is_finite());
    Ok((plan, symbol, ts))
}

fn check_parse(id: EntryId, f: &Fields) -> Result<(), TestCaseError> {
    let got = decision::parse(id, f);
    match (got, expected(f)) {
        (Ok(d), Ok((plan, symbol, ts))) => {
            prop_assert_eq!(d.id, id);
            prop_assert_eq!(d.plan_id, plan.as_slice());
            prop_assert_eq!(d.symbol, symbol.as_slice());
            prop_assert_eq!(d.ts_epoch.map(f64::to_bits), ts.map(f64::to_bits));
            prop_assert_eq!(d.fields.len(), f.len(), "every field is kept");
            // The positions name the last plan_id and symbol fields.
            let last_at = |name: &[u8]| f.iter().rposition(|(k, _)| k.as_slice() == name);
            prop_assert_eq!(Some(d.plan_at), last_at(b"plan_id"));
            prop_assert_eq!(Some(d.symbol_at), last_at(b"symbol"));
        }
        (Err(e), Err(want)) => prop_assert_eq!(e, want),
        (got, want) => prop_assert!(false, "parse gave {:?}, expected {:?}", got, want),
    }
    Ok(())
}

fn entry_id() -> impl Strategy<Value = EntryId> {
    (any::<u64>(), any::<u64>()).prop_map(|(ms, seq)| EntryId { ms, seq })
}

/// Near-HTTP input: real and odd methods and paths, headers, garbage, truncation.
fn request_bytes() -> impl Strategy<Value = Vec<u8>> {
    let method = prop_oneof![
        Just("GET"),
        Just("HEAD"),
        Just("POST"),
        Just("PUT"),
        Just("DELETE"),
        Just("get"),
        Just("OPTIONS"),
        Just(""),
    ];
    let path = prop_oneof![
        Just("/metrics".to_string()),
        Just("/health".to_string()),
        Just("/metrics?x=1".to_string()),
        Just("/health#frag".to_string()),
        Just("/".to_string()),
        Just("/metricsx".to_string()),
        Just("*".to_string()),
        vec(any::<u8>(), 0..20).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
    ];
    let version = prop_oneof![Just("HTTP/1.1"), Just("HTTP/1.0"), Just("HTTP/2"), Just("")];
    let token = vec(prop_oneof![(b'a'..=b'z'), (b'A'..=b'Z'), Just(b'-')], 1..12);
    let header = prop_oneof![
        6 => (token, vec(b' '..=b'~', 0..40)),
        1 => (vec(any::<u8>(), 0..12), vec(any::<u8>(), 0..40)),
    ];
    let headers = prop_oneof![4 => vec(header.clone(), 0..4), 1 => vec(header, 0..40)];
    (
        method,
        path,
        version,
        headers,
        any::<bool>(),
        any::<prop::sample::Index>(),
        prop::sample::select(vec![&b"\r\n"[..], b"\n"]),
    )
        .prop_map(|(m, p, v, hs, complete, cut, eol)| {
            let mut b = format!("{m} {p} {v}").into_bytes();
            b.extend_from_slice(eol);
            for (k, val) in hs {
                b.extend_from_slice(&k);
                b.extend_from_slice(b": ");
                b.extend_from_slice(&val);
                b.extend_from_slice(eol);
            }
            b.extend_from_slice(eol);
            if !complete {
                b.truncate(cut.index(b.len() + 1));
            }
            b
        })
}

fn ok_render() -> Response {
    Response::text(200, "rendered")
}

/// A metric or label name: `[a-zA-Z_:][a-zA-Z0-9_:]*` (labels: no colon).
fn is_name(s: &str, colon: bool) -> bool {
    let ok = |c: char, first: bool| {
        c.is_ascii_alphabetic() || c == '_' || (colon && c == ':') || (!first && c.is_ascii_digit())
    };
    let mut chars = s.chars();
    chars.next().is_some_and(|c| ok(c, true)) && chars.all(|c| ok(c, false))
}

/// Parses `{k="v",...}`: names valid, values with only `\\`, `\"` and `\n` escapes.
fn labels_ok(s: &str) -> bool {
    let Some(inner) = s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) else {
        return false;
    };
    let mut rest = inner;
    while !rest.is_empty() {
        let Some((name, after)) = rest.split_once("=\"") else {
            return false;
        };
        if !is_name(name, false) {
            return false;
        }
        let mut chars = after.char_indices();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, '\\' | '"' | 'n')) => {}
                    _ => return false,
                },
                '"' => {
                    end = Some(i);
                    break;
                }
                '\n' => return false,
                _ => {}
            }
        }
        let Some(end) = end else { return false };
        rest = &after[end + 1..];
        if let Some(r) = rest.strip_prefix(',') {
            rest = r;
        } else if !rest.is_empty() {
            return false;
        }
    }
    true
}

fn value_ok(v: &str) -> bool {
    matches!(v, "NaN" | "+Inf" | "-Inf") || v.parse::<f64>().is_ok_and(|f| f.is_finite())
}

/// Checks the exposition format line by line; returns the sample count.
fn check_exposition(text: &str) -> Result<usize, TestCaseError> {
    prop_assert!(text.ends_with('\n'), "text ends with a newline");
    let mut typed: HashSet<String> = HashSet::new();
    let mut helped: HashSet<String> = HashSet::new();
    let mut series: HashSet<String> = HashSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap_or("");
            prop_assert!(is_name(name, true), "HELP name in {:?}", line);
            prop_assert!(helped.insert(name.to_string()), "two HELP for {}", name);
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split(' ');
            let name = it.next().unwrap_or("");
            let kind = it.next().unwrap_or("");
            prop_assert!(is_name(name, true), "TYPE name in {:?}", line);
            prop_assert!(
                matches!(
                    kind,
                    "counter" | "gauge" | "histogram" | "summary" | "untyped"
                ),
                "TYPE kind in {:?}",
                line
            );
            prop_assert!(it.next().is_none(), "{:?}", line);
            prop_assert!(typed.insert(name.to_string()), "two TYPE for {}", name);
        } else {
            prop_assert!(!line.starts_with('#'), "unknown comment {:?}", line);
            let (sample, value) = line
                .rsplit_once(' ')
                .ok_or_else(|| TestCaseError::fail(format!("no value in {line:?}")))?;
            prop_assert!(value_ok(value), "value in {:?}", line);
            let (name, labels) = match sample.find('{') {
                Some(i) => sample.split_at(i),
                None => (sample, ""),
            };
            prop_assert!(is_name(name, true), "name in {:?}", line);
            prop_assert!(
                labels.is_empty() || labels_ok(labels),
                "labels in {:?}",
                line
            );
            prop_assert!(typed.contains(name), "{} has no TYPE before it", name);
            prop_assert!(series.insert(sample.to_string()), "duplicate {}", sample);
        }
    }
    Ok(series.len())
}

fn float() -> impl Strategy<Value = f64> {
    prop_oneof![
        4 => any::<f64>(),
        1 => Just(f64::NAN),
        1 => Just(f64::INFINITY),
        1 => Just(f64::NEG_INFINITY),
        1 => Just(0.0),
        1 => Just(-0.0),
        1 => Just(1e-300),
    ]
}

proptest! {
    /// The key spaces of an untagged stream and of any tagged stream never meet: no id an
    /// untagged stream accepts names a key that a tagged stream's id names (CONTRACT §11).
    #[test]
    fn tagged_and_untagged_key_spaces_are_disjoint(
        tag in prop_oneof![Just(b"eu".to_vec()), Just(b"{a".to_vec()), vec(any::<u8>(), 1..6)],
        tagged_id in vec(any::<u8>(), 1..12),
        untagged_id in prop_oneof![
            vec(any::<u8>(), 1..12),
            vec(prop_oneof![Just(b'{'), Just(b'}'), Just(b':'), Just(b'e')], 1..8),
        ],
    ) {
        prop_assume!(!tag.contains(&b'}'));
        let mut stream = b"s{".to_vec();
        stream.extend_from_slice(&tag);
        stream.push(b'}');
        let tagged = projection::Keys::of_stream(&stream);
        prop_assert!(tagged.tagged());
        let untagged = projection::Keys::of_stream(b"plain");
        let fields = |id: &[u8]| vec![
            (b"plan_id".to_vec(), id.to_vec()),
            (b"symbol".to_vec(), id.to_vec()),
        ];
        let f = fields(&untagged_id);
        if untagged.parse(EntryId::ZERO, &f).is_ok() {
            prop_assert_ne!(untagged.by_plan(&untagged_id), tagged.by_plan(&tagged_id));
            prop_assert_ne!(untagged.latest(&untagged_id), tagged.latest(&tagged_id));
            prop_assert_ne!(untagged.pointer(&untagged_id), tagged.pointer(&tagged_id));
            prop_assert_ne!(untagged.dedupe(&untagged_id), tagged.dedupe(&tagged_id));
        }
        // A tagged stream takes any id.
        let t = fields(&tagged_id);
        prop_assert!(tagged.parse(EntryId::ZERO, &t).is_ok() || decision::parse(EntryId::ZERO, &t).is_err());
    }

    #[test]
    fn parse_never_panics_and_follows_the_limits(id in entry_id(), f in fields()) {
        check_parse(id, &f)?;
    }

    #[test]
    fn parse_at_the_field_and_size_limits(id in entry_id(), f in fields_near_limits()) {
        check_parse(id, &f)?;
    }

    #[test]
    fn expire_at_stays_in_range(entry in any::<u64>(), ttl in any::<u64>(), now in any::<u64>()) {
        match projection::expire_at(entry, ttl, now) {
            Some(at) => {
                prop_assert!(at > now, "expiry {} not after now {}", at, now);
                prop_assert!(at <= now.saturating_add(ttl), "beyond now + ttl");
                prop_assert!(ttl > 0);
            }
            None => prop_assert!(
                ttl == 0 || entry.min(now).saturating_add(ttl) <= now,
                "a live key was dropped"
            ),
        }
    }

    #[test]
    fn plan_is_consistent_with_expire_at(
        now in 0u64..=4_000_000_000_000,
        age in -5_000_000i64..=5_000_000_000,
        plan_s in 0u64..=4000,
        symbol_s in 0u64..=4000,
        dedupe_s in 0u64..=400,
    ) {
        let entry = now.saturating_add_signed(-age);
        let t = Ttls::from_secs(plan_s, symbol_s, dedupe_s);
        let p = projection::plan(entry, t, now);
        prop_assert_eq!(p.by_plan_at, projection::expire_at(entry, t.plan_ms, now));
        prop_assert_eq!(p.latest_at, projection::expire_at(entry, t.symbol_ms, now));
        for at in [p.by_plan_at, p.latest_at, p.dedupe_at].into_iter().flatten() {
            prop_assert!(at > now);
        }
        if let Some(at) = p.by_plan_at {
            prop_assert!(at <= now + t.plan_ms);
            prop_assert_eq!(at, entry.min(now) + t.plan_ms, "anchored at the entry time");
        }
        if let Some(at) = p.latest_at {
            prop_assert!(at <= now + t.symbol_ms);
        }
        if let Some(at) = p.dedupe_at {
            prop_assert!(at <= now + t.dedupe_ms);
        }
        if p.creates_no_key() {
            prop_assert_eq!(p.dedupe_at, None, "no dedupe key without a lookup key");
        } else {
            prop_assert_eq!(p.dedupe_at, projection::expire_at(entry, t.dedupe_ms, now));
        }
    }

    #[test]
    fn expiry_at_the_ttl_boundary(
        now in 0u64..=4_000_000_000_000,
        ttl_s in 0u64..=4000,
        delta in -3i64..=3,
    ) {
        // An entry whose key expires within a few ms of now: exactly now is expired.
        let ttl = ttl_s * 1000;
        let entry = now.saturating_sub(ttl).saturating_add_signed(delta);
        let at = projection::expire_at(entry, ttl, now);
        let live = ttl > 0 && entry.min(now) + ttl > now;
        prop_assert_eq!(at.is_some(), live, "entry {} ttl {} now {}", entry, ttl, now);
        if let Some(at) = at {
            prop_assert!(at > now && at <= now + ttl);
        }
    }

    #[test]
    fn plan_never_panics_on_any_input(
        entry in any::<u64>(),
        now in any::<u64>(),
        plan_s in any::<u64>(),
        symbol_s in any::<u64>(),
        dedupe_s in any::<u64>(),
    ) {
        let t = Ttls::from_secs(plan_s, symbol_s, dedupe_s);
        let p = projection::plan(entry, t, now);
        for (at, ttl) in [(p.by_plan_at, t.plan_ms), (p.latest_at, t.symbol_ms), (p.dedupe_at, t.dedupe_ms)] {
            if let Some(at) = at {
                prop_assert!(at > now && at <= now.saturating_add(ttl));
            }
        }
    }

    #[test]
    fn key_is_prefix_then_id(prefix in vec(any::<u8>(), 0..64), id in vec(any::<u8>(), 0..600)) {
        for p in [
            projection::BY_PLAN_PREFIX,
            projection::LATEST_PREFIX,
            projection::POINTER_PREFIX,
            projection::DEDUPE_PREFIX,
            prefix.as_slice(),
        ] {
            let k = projection::key(p, &id);
            prop_assert_eq!(k.len(), p.len() + id.len());
            prop_assert_eq!(&k[..p.len()], p);
            prop_assert_eq!(&k[p.len()..], id.as_slice());
        }
    }

    #[test]
    fn dedupe_retry_iff_the_value_is_this_id(
        id in entry_id(),
        other in entry_id(),
        junk in vec(any::<u8>(), 0..40),
    ) {
        prop_assert_eq!(projection::dedupe_verdict(None, id), Dedupe::Fresh);
        let own = id.to_string();
        prop_assert_eq!(projection::dedupe_verdict(Some(own.as_bytes()), id), Dedupe::Retry);
        let other_s = other.to_string();
        let want = if other == id { Dedupe::Retry } else { Dedupe::Duplicate };
        prop_assert_eq!(projection::dedupe_verdict(Some(other_s.as_bytes()), id), want);
        let want = if EntryId::parse(&junk) == Some(id) { Dedupe::Retry } else { Dedupe::Duplicate };
        prop_assert_eq!(projection::dedupe_verdict(Some(&junk), id), want);
    }

    #[test]
    fn entry_id_round_trips_display(id in entry_id()) {
        let s = id.to_string();
        prop_assert_eq!(EntryId::parse(s.as_bytes()), Some(id));
        if id.seq == 0 {
            prop_assert_eq!(EntryId::parse(id.ms.to_string().as_bytes()), Some(id));
        }
    }

    #[test]
    fn entry_id_parse_accepts_only_digits_and_one_dash(raw in prop_oneof![
        vec(any::<u8>(), 0..30),
        vec(prop_oneof![Just(b'-'), (b'0'..=b'9')], 0..45),
    ]) {
        if let Some(id) = EntryId::parse(&raw) {
            prop_assert!(raw.iter().all(|b| b.is_ascii_digit() || *b == b'-'));
            prop_assert!(raw.iter().filter(|b| **b == b'-').count() <= 1);
            prop_assert_eq!(EntryId::parse(id.to_string().as_bytes()), Some(id));
        }
    }

    #[test]
    fn http_parse_never_panics_and_bounds_the_head(raw in prop_oneof![
        vec(any::<u8>(), 0..(2 * MAX_HEAD)),
        request_bytes(),
        (request_bytes(), MAX_HEAD - 64..2 * MAX_HEAD).prop_map(|(mut b, n)| {
            // An open-ended header that never finishes the head.
            let cut = b.windows(2).position(|w| w == b"\r\n").map_or(b.len(), |i| i + 2);
            b.truncate(cut);
            b.extend_from_slice(b"X-Pad: ");
            b.resize(b.len() + n, b'a');
            b
        }),
    ]) {
        let parsed = http::parse(&raw);
        if raw.len() > MAX_HEAD {
            prop_assert!(parsed != Parsed::Partial, "no Partial beyond {} bytes", MAX_HEAD);
        }
        if let Parsed::Request { head, allowed, path } = &parsed {
            prop_assert!(!path.contains('?') && !path.contains('#'));
            prop_assert!(!*head || *allowed, "HEAD is allowed");
            // The head ends with an empty line; httparse also takes bare LF line ends.
            let end = raw
                .windows(3)
                .position(|w| w == b"\n\r\n")
                .or_else(|| raw.windows(2).position(|w| w == b"\n\n"));
            prop_assert!(end.is_some(), "a request needs a complete head");
        }
        // Whatever was parsed gets a response, and only one of these codes.
        for ep in [Endpoint::Metrics, Endpoint::Health] {
            let r = http::route(&parsed, ep, ok_render);
            prop_assert!(matches!(r.code, 200 | 400 | 404 | 405));
            let bytes = http::serialize(&r, false);
            let status_line = format!("HTTP/1.1 {} ", r.code);
            prop_assert!(bytes.starts_with(status_line.as_bytes()), "status line");
        }
    }

    #[test]
    fn a_head_over_the_limit_is_bad(
        extra in prop_oneof![1usize..8, 1usize..MAX_HEAD],
        pad in any::<u8>(),
        complete in any::<bool>(),
    ) {
        // Over 8 KiB, an unfinished head is refused rather than waited for, and a complete
        // one is refused too.
        let mut b = b"GET /metrics HTTP/1.1\r\nX-Pad: ".to_vec();
        let pad = if pad == b'\r' || pad == b'\n' { b'a' } else { pad };
        b.resize(MAX_HEAD + extra, pad);
        if complete {
            b.extend_from_slice(b"\r\n\r\n");
        }
        prop_assert_eq!(http::parse(&b), Parsed::Bad, "head of {} bytes", b.len());
    }

    #[test]
    fn a_head_within_the_limit_is_served(len in 40usize..=MAX_HEAD) {
        let mut b = b"GET /metrics HTTP/1.1\r\nX-Pad: ".to_vec();
        b.resize(len - 4, b'a');
        b.extend_from_slice(b"\r\n\r\n");
        let parsed = http::parse(&b);
        prop_assert!(matches!(parsed, Parsed::Request { allowed: true, .. }), "{:?}", parsed);
        prop_assert_eq!(http::parse(&b[..len - 2]), Parsed::Partial);
    }

    #[test]
    fn route_gives_the_right_code(req in request_bytes()) {
        let parsed = http::parse(&req);
        for ep in [Endpoint::Metrics, Endpoint::Health] {
            let code = http::route(&parsed, ep, ok_render).code;
            let want = match &parsed {
                Parsed::Partial | Parsed::Bad => 400,
                Parsed::Request { allowed: false, .. } => 405,
                Parsed::Request { path, .. } if path != ep.path() => 404,
                Parsed::Request { .. } => 200,
            };
            prop_assert_eq!(code, want);
        }
        // From the request line itself: GET and HEAD of the endpoint path (query stripped).
        if let Parsed::Request { allowed, path, head } = &parsed {
            let line = req.split(|b| *b == b'\n').next().unwrap_or(&[]);
            let method = line.split(|b| *b == b' ').next().unwrap_or(&[]);
            prop_assert_eq!(*allowed, method == b"GET" || method == b"HEAD");
            prop_assert_eq!(*head, method == b"HEAD");
            let raw_path = line.split(|b| *b == b' ').nth(1).unwrap_or(&[]);
            prop_assert!(raw_path.starts_with(path.as_bytes()));
        }
    }

    #[test]
    fn metrics_text_is_valid_exposition(
        counters in vec(any::<u64>(), 7),
        errors in vec(any::<u64>(), 5),
        lag in float(),
        ts in prop::option::of(float()),
        loop_ms in float(),
        http_counts in vec(any::<u64>(), 16),
        backlog in prop::option::of(any::<u64>()),
        up in any::<(bool, bool)>(),
        status in 0u8..=2,
        master in any::<bool>(),
        version in vec(prop_oneof![(b'a'..=b'z'), (b'0'..=b'9'), Just(b'.'), Just(b'-')], 0..12),
    ) {
        let mut s = Snapshot {
            loops: counters[0],
            in_messages: counters[1],
            written_by_plan: counters[2],
            written_latest: counters[3],
            dedupe_skips: counters[4],
            expired_skips: counters[5],
            replayed: counters[6],
            lag_ms: lag,
            last_ts_epoch: ts,
            last_loop_ms: loop_ms,
            ..Snapshot::default()
        };
        for (slot, v) in s.errors.iter_mut().zip(&errors) {
            *slot = *v;
        }
        for (slot, v) in s.http.iter_mut().zip(&http_counts) {
            *slot = *v;
        }
        let g = Gauges {
            backlog,
            exporter_up: up,
            health_status: status,
            is_master: master,
            catchup_rate: 0.0,
    streams: Vec::new(),
};
        let version = String::from_utf8(version).unwrap_or_default();
        let text = metrics::render(&s, &g, &version);
        let n = check_exposition(&text)?;
        prop_assert!(n >= 11, "every seed series is there");
        let has = |series: &str, v: u64| text.lines().any(|l| l == format!("{series} {v}"));
        prop_assert!(has("p27_in_messages_total", s.in_messages), "in_messages");
        prop_assert!(
            has("p27_written_total{kind=\"by_plan\"}", s.written_by_plan),
            "written by_plan"
        );
        prop_assert!(has("p27_errors_total{stage=\"parse\"}", s.errors[3]), "parse errors");
    }
}

#[test]
fn the_entry_generator_reaches_every_outcome() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let strategy = fields();
    let mut seen: HashSet<String> = HashSet::new();
    for _ in 0..256 {
        let f = strategy
            .new_tree(&mut runner)
            .map(|t| t.current())
            .unwrap_or_default();
        let class = match expected(&f) {
            Ok((p, s, _)) if p.len() == MAX_ID_LEN || s.len() == MAX_ID_LEN => "ok at 256",
            Ok(_) if f.len() == MAX_FIELDS => "ok at 64 fields",
            Ok(_) => "ok",
            Err(Invalid::TooManyFields(n)) if n == MAX_FIELDS + 1 => "65 fields",
            Err(Invalid::TooManyFields(_)) => "too many fields",
            Err(Invalid::TooLarge(_)) => "too large",
            Err(Invalid::Missing(_)) => "missing",
            Err(Invalid::Empty(_)) => "empty",
            Err(Invalid::TooLong(_, n)) if n == MAX_ID_LEN + 1 => "257",
            Err(Invalid::TooLong(..)) => "too long",
            Err(Invalid::TaggedId(_)) => "tagged id",
            Err(Invalid::Deleted) => "deleted",
        };
        seen.insert(class.to_string());
    }
    for class in [
        "ok",
        "ok at 256",
        "ok at 64 fields",
        "65 fields",
        "too many fields",
        "too large",
        "missing",
        "empty",
        "257",
        "too long",
    ] {
        assert!(
            seen.contains(class),
            "256 cases never gave {class}: {seen:?}"
        );
    }
}

#[test]
fn exposition_checker_rejects_bad_text() {
    for bad in [
        "p27_x 1\n",
        "# TYPE p27_x counter\np27_x one\n",
        "# TYPE p27_x counter\np27_x{a=\"b} 1\n",
        "# TYPE p27_x counter\np27_x 1\np27_x 2\n",
        "# TYPE 1x counter\n1x 1\n",
        "# TYPE p27_x counter\np27_x 1",
    ] {
        assert!(check_exposition(bad).is_err(), "{bad:?} passed");
    }
    let good = "# HELP p27_x Help.\n# TYPE p27_x counter\np27_x{a=\"b\\\"c\",d=\"\"} 1\np27_x 2\n";
    assert_eq!(check_exposition(good).ok(), Some(2));
}
