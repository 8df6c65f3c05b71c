//! PURE: a decision, the TTL settings and the clock become the key writes to make.
//!
//! Expiry is anchored at the entry time (the millisecond part of the entry ID), so a
//! decision projected late keeps the expiry it would have had live, and a decision older
//! than a key's TTL does not create that key.

use crate::core::decision::{self, Bytes, Decision, EntryId, Invalid};

/// Prefix of `quantum:harvest:heat:by_plan:{plan_id}` (HASH).
pub const BY_PLAN_PREFIX: &[u8] = b"quantum:harvest:heat:by_plan:";
/// Prefix of `quantum:harvest:heat:latest:{symbol}` (HASH).
pub const LATEST_PREFIX: &[u8] = b"quantum:harvest:heat:latest:";
/// Prefix of `quantum:harvest:heat:latest_plan_id:{symbol}` (STRING).
pub const POINTER_PREFIX: &[u8] = b"quantum:harvest:heat:latest_plan_id:";
/// Prefix of `quantum:dedupe:p27:{plan_id}` (STRING holding the entry ID).
pub const DEDUPE_PREFIX: &[u8] = b"quantum:dedupe:p27:";
/// Field added to the latest hash, naming the plan it came from.
pub const LAST_PLAN_ID_FIELD: &[u8] = b"last_plan_id";

/// The four prefixes of the derived keys.
pub const DERIVED_PREFIXES: [&[u8]; 4] =
    [BY_PLAN_PREFIX, LATEST_PREFIX, POINTER_PREFIX, DEDUPE_PREFIX];

/// The derived-key namespace `name` lies in, if any: a stream there could be replaced by the
/// module's own writes.
pub fn derived_namespace(name: &[u8]) -> Option<&'static [u8]> {
    DERIVED_PREFIXES.into_iter().find(|p| name.starts_with(p))
}

/// Builds `prefix` + `id` as one binary-safe key name.
pub fn key(prefix: &[u8], id: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + id.len());
    k.extend_from_slice(prefix);
    k.extend_from_slice(id);
    k
}

/// The hash tag of a key name, Redis Cluster's rule: the bytes between the first `{` and the
/// first `}` after it, when there are any.
pub fn hash_tag(name: &[u8]) -> Option<&[u8]> {
    let open = name.iter().position(|&b| b == b'{')?;
    let rest = name.get(open + 1..)?;
    let close = rest.iter().position(|&b| b == b'}')?;
    rest.get(..close).filter(|t| !t.is_empty())
}

/// Whether `id` starts with `{T}:`, T non-empty: the infix of the keys of a stream tagged
/// `{T}` (T never holds a `}`, so the first `}` ends it).
pub fn tag_prefixed(id: &[u8]) -> bool {
    id.first() == Some(&b'{')
        && id
            .iter()
            .position(|&b| b == b'}')
            .is_some_and(|close| close >= 2 && id.get(close + 1) == Some(&b':'))
}

/// The hash slot of a key name (CRC16-XMODEM of its hash tag, or of the whole name, mod
/// 16384), as Redis Cluster computes it.
pub fn key_slot(name: &[u8]) -> u16 {
    let hashed = hash_tag(name).unwrap_or(name);
    let mut crc: u16 = 0;
    for &b in hashed {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc & 0x3fff
}

/// The names of the keys derived from one stream: the seed's names for an untagged stream;
/// for a stream tagged `{T}`, the same tag right after each prefix, so that the stream, its
/// group and its keys live in one cluster slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keys {
    /// `{T}:` for a tagged stream, empty otherwise.
    infix: Vec<u8>,
}

impl Keys {
    /// The key names of stream `stream`.
    pub fn of_stream(stream: &[u8]) -> Keys {
        let infix = hash_tag(stream).map_or_else(Vec::new, |t| {
            let mut v = Vec::with_capacity(t.len() + 3);
            v.push(b'{');
            v.extend_from_slice(t);
            v.extend_from_slice(b"}:");
            v
        });
        Keys { infix }
    }

    /// Whether the stream carries a hash tag.
    pub fn tagged(&self) -> bool {
        !self.infix.is_empty()
    }

    /// Validates an entry of this stream: [`decision::parse`], and on an untagged stream a
    /// plan_id or symbol that does not start like a tagged stream's keys ([`tag_prefixed`]).
    /// So the key spaces of an untagged and a tagged stream never meet: `by_plan:{eu}:P1` is
    /// the `{eu}` stream's plan `P1`, never an untagged stream's plan `{eu}:P1`.
    pub fn parse<'a, F: Bytes>(
        &self,
        id: EntryId,
        fields: &'a [(F, F)],
    ) -> Result<Decision<'a, F>, Invalid> {
        let d = decision::parse(id, fields)?;
        if !self.tagged() {
            if tag_prefixed(d.plan_id) {
                return Err(Invalid::TaggedId("plan_id"));
            }
            if tag_prefixed(d.symbol) {
                return Err(Invalid::TaggedId("symbol"));
            }
        }
        Ok(d)
    }

    /// The name of the key with `prefix` (one of [`DERIVED_PREFIXES`]) for `id`, in parts:
    /// joined, they are the name. For a caller that joins them where it likes (on the stack).
    pub fn parts<'a>(&'a self, prefix: &'a [u8], id: &'a [u8]) -> [&'a [u8]; 3] {
        [prefix, &self.infix, id]
    }

    fn name(&self, prefix: &[u8], id: &[u8]) -> Vec<u8> {
        self.parts(prefix, id).concat()
    }

    /// `quantum:harvest:heat:by_plan:[{T}:]<plan_id>`.
    pub fn by_plan(&self, plan_id: &[u8]) -> Vec<u8> {
        self.name(BY_PLAN_PREFIX, plan_id)
    }

    /// `quantum:harvest:heat:latest:[{T}:]<symbol>`.
    pub fn latest(&self, symbol: &[u8]) -> Vec<u8> {
        self.name(LATEST_PREFIX, symbol)
    }

    /// `quantum:harvest:heat:latest_plan_id:[{T}:]<symbol>`.
    pub fn pointer(&self, symbol: &[u8]) -> Vec<u8> {
        self.name(POINTER_PREFIX, symbol)
    }

    /// `quantum:dedupe:p27:[{T}:]<plan_id>`.
    pub fn dedupe(&self, plan_id: &[u8]) -> Vec<u8> {
        self.name(DEDUPE_PREFIX, plan_id)
    }
}

/// How a candidate for a symbol's latest keys compares with the decision they hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LatestOrder {
    /// The candidate is newer (or latest holds nothing that tells): write it.
    Newer,
    /// Latest holds a newer decision: keep it.
    Older,
    /// Both are from the same millisecond: the stream decides.
    SameMillisecond,
}

/// Orders a candidate that would expire at `candidate_at` against the latest key's absolute
/// expiry (`PEXPIRETIME`: -2 for no key, -1 for no expiry). Both expiries are an entry time
/// plus `ttl-symbol-sec`, so with the setting unchanged they order the entries.
pub fn latest_order(candidate_at: u64, current: i64) -> LatestOrder {
    let Ok(current) = u64::try_from(current) else {
        return LatestOrder::Newer;
    };
    match candidate_at.cmp(&current) {
        std::cmp::Ordering::Greater => LatestOrder::Newer,
        std::cmp::Ordering::Less => LatestOrder::Older,
        std::cmp::Ordering::Equal => LatestOrder::SameMillisecond,
    }
}

/// Lifetimes of the keys, in milliseconds. Zero means the key is never written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ttls {
    /// by_plan lifetime.
    pub plan_ms: u64,
    /// latest and latest_plan_id lifetime.
    pub symbol_ms: u64,
    /// Dedupe window; zero turns dedupe off.
    pub dedupe_ms: u64,
}

impl Ttls {
    /// Builds the lifetimes from the configured seconds.
    pub fn from_secs(plan: u64, symbol: u64, dedupe: u64) -> Ttls {
        Ttls {
            plan_ms: plan.saturating_mul(1000),
            symbol_ms: symbol.saturating_mul(1000),
            dedupe_ms: dedupe.saturating_mul(1000),
        }
    }
}

/// What the dedupe key says about an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dedupe {
    /// No dedupe key: project.
    Fresh,
    /// The dedupe key holds this very entry's ID: a retry, project again (idempotent).
    Retry,
    /// Another entry with this plan_id was projected inside the window: skip.
    Duplicate,
}

/// Compares the current dedupe key value with the entry's ID.
pub fn dedupe_verdict(existing: Option<&[u8]>, id: EntryId) -> Dedupe {
    match existing {
        None => Dedupe::Fresh,
        Some(v) if EntryId::parse(v) == Some(id) => Dedupe::Retry,
        Some(_) => Dedupe::Duplicate,
    }
}

/// Whether the dedupe key holds an entry earlier than `id`: then HEATBRIDGE.REPLAY of `id`
/// leaves it as it is, so that it keeps naming the earliest projected entry of its plan.
pub fn dedupe_held_by_earlier(existing: Option<&[u8]>, id: EntryId) -> bool {
    existing
        .and_then(EntryId::parse)
        .is_some_and(|held| held < id)
}

/// Absolute expiry (unix ms) of a key with `ttl_ms` for an entry at `entry_ms`, or `None`
/// when the key must not be written (TTL zero, or already expired at `now_ms`).
/// An entry time in the future is clamped to now, so no key outlives its TTL from now.
pub fn expire_at(entry_ms: u64, ttl_ms: u64, now_ms: u64) -> Option<u64> {
    if ttl_ms == 0 {
        return None;
    }
    let at = entry_ms.min(now_ms).saturating_add(ttl_ms);
    (at > now_ms).then_some(at)
}

/// The writes for one decision: each `Some` is the absolute expiry of a key to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Plan {
    /// The dedupe key.
    pub dedupe_at: Option<u64>,
    /// The by_plan hash.
    pub by_plan_at: Option<u64>,
    /// The latest hash and the latest_plan_id pointer (they share ttl-symbol-sec).
    pub latest_at: Option<u64>,
}

impl Plan {
    /// Whether no lookup key is written (the entry is too old for every TTL).
    pub fn creates_no_key(&self) -> bool {
        self.by_plan_at.is_none() && self.latest_at.is_none()
    }
}

/// Whether a latest hash whose fields and values are `held` (as HGETALL lists them) holds the
/// decision of an entry with `fields` and `plan_id`: exactly the entry's fields (a later field
/// of the same name wins, as in the hash) plus `last_plan_id`. A latest hash holds nothing
/// else, so when no entry of a millisecond newer than a candidate matches it, the decision it
/// holds is older than the candidate.
pub fn latest_holds<B: Bytes>(held: &[Vec<u8>], fields: &[(B, B)], plan_id: &[u8]) -> bool {
    if !held.len().is_multiple_of(2) {
        return false;
    }
    let mut want: std::collections::BTreeMap<&[u8], &[u8]> =
        fields.iter().map(|(k, v)| (k.bytes(), v.bytes())).collect();
    want.insert(LAST_PLAN_ID_FIELD, plan_id);
    let got: std::collections::BTreeMap<&[u8], &[u8]> = held
        .chunks_exact(2)
        .filter_map(|kv| match kv {
            [k, v] => Some((k.as_slice(), v.as_slice())),
            _ => None,
        })
        .collect();
    got == want
}

/// What a tie read saw of one symbol in one millisecond of the stream, newest first.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TieSeen {
    /// The newest entry whose decision the latest hash holds ([`latest_holds`]), among those
    /// dedupe did not skip.
    pub holder: Option<EntryId>,
    /// The newest entry whose decision the latest hash holds, among those dedupe skipped (a
    /// resend of the very content).
    pub skipped_holder: Option<EntryId>,
    /// The newest valid entry of the symbol.
    pub newest: Option<EntryId>,
}

/// Whether a candidate of a millisecond writes latest, which holds a decision of that same
/// millisecond, from what a tie read saw of its symbol (`complete`: it read the whole
/// millisecond, else it stopped at its cap):
/// - the newest entry holding latest's content that dedupe did not skip is the decision
///   latest holds: write if it is not newer than the candidate;
/// - only skipped resends hold that content (their first entry is gone, or dedupe expired):
///   the newest of them;
/// - no entry holds it (the hash was edited): the newest valid decision of the millisecond,
///   as if the content were its own;
/// - past the cap with no holder seen: not known, latest is left as it is.
///
/// A REPLAY that wrote latest from a skipped resend of the very content leaves the same
/// stored state as the live path, which skipped it; this rule takes the live path's view.
pub fn tie_writes(candidate: EntryId, seen: TieSeen, complete: bool) -> bool {
    match (seen.holder, complete) {
        (Some(holder), _) => holder <= candidate,
        (None, false) => false,
        (None, true) => seen
            .skipped_holder
            .or(seen.newest)
            .is_none_or(|h| h <= candidate),
    }
}

/// Plans the writes for an entry written at `entry_ms`.
pub fn plan(entry_ms: u64, ttls: Ttls, now_ms: u64) -> Plan {
    let by_plan_at = expire_at(entry_ms, ttls.plan_ms, now_ms);
    let latest_at = expire_at(entry_ms, ttls.symbol_ms, now_ms);
    let dedupe_at = if by_plan_at.is_none() && latest_at.is_none() {
        None
    } else {
        expire_at(entry_ms, ttls.dedupe_ms, now_ms)
    };
    Plan {
        dedupe_at,
        by_plan_at,
        latest_at,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn latest_holds_exactly_one_decision() {
        let b = |s: &str| s.as_bytes().to_vec();
        let entry = vec![
            (b("symbol"), b("BTC")),
            (b("plan_id"), b("P1")),
            (b("score"), b("1")),
            (b("score"), b("2")),
        ];
        // A latest hash as HGETALL lists it, from "field=value ...".
        let held = |pairs: &str| -> Vec<Vec<u8>> {
            pairs
                .split(' ')
                .filter(|p| !p.is_empty())
                .flat_map(|p| p.splitn(2, '=').map(b).collect::<Vec<_>>())
                .collect()
        };
        let exact = held("symbol=BTC plan_id=P1 score=2 last_plan_id=P1");
        assert!(latest_holds(&exact, &entry, b"P1"));
        // A duplicate of the plan with other content is another decision.
        let other = held("symbol=BTC plan_id=P1 score=3 last_plan_id=P1");
        assert!(!latest_holds(&other, &entry, b"P1"));
        // A field more, the earlier value of a repeated field, no pointer field.
        let more = held("symbol=BTC plan_id=P1 score=2 last_plan_id=P1 x=y");
        assert!(!latest_holds(&more, &entry, b"P1"));
        let first = held("symbol=BTC plan_id=P1 score=1 last_plan_id=P1");
        assert!(!latest_holds(&first, &entry, b"P1"));
        let bare = held("symbol=BTC plan_id=P1 score=2");
        assert!(!latest_holds(&bare, &entry, b"P1"));
        assert!(!latest_holds(&exact[..7], &entry, b"P1"), "odd length");
        assert!(!latest_holds(&held(""), &entry, b"P1"), "no latest key");
    }

    #[test]
    fn a_tie_is_settled_by_the_decision_latest_holds() {
        let id = |seq| EntryId { ms: 7, seq };
        let c = id(2);
        let seen = |holder, skipped_holder, newest| TieSeen {
            holder,
            skipped_holder,
            newest,
        };
        // Latest holds an older decision (F2: P1, candidate P2, a skipped P1 of other content).
        assert!(tie_writes(c, seen(Some(id(1)), None, Some(id(3))), true));
        // A skipped resend of the very content is not the holder (F3).
        assert!(tie_writes(
            c,
            seen(Some(id(1)), Some(id(3)), Some(id(3))),
            true
        ));
        // Latest holds a newer decision.
        assert!(!tie_writes(c, seen(Some(id(3)), None, Some(id(3))), true));
        assert!(!tie_writes(c, seen(Some(id(3)), None, Some(id(3))), false));
        // The candidate's own content.
        assert!(tie_writes(c, seen(Some(c), None, Some(c)), true));
        // Only skipped resends hold it: the newest of them.
        assert!(!tie_writes(c, seen(None, Some(id(3)), Some(id(3))), true));
        assert!(tie_writes(c, seen(None, Some(id(1)), Some(c)), true));
        // An edited hash: the newest valid decision of the millisecond.
        assert!(!tie_writes(c, seen(None, None, Some(id(3))), true));
        assert!(tie_writes(c, seen(None, None, Some(c)), true));
        // Past the cap, no holder seen: left as it is.
        assert!(!tie_writes(c, seen(None, Some(id(1)), Some(c)), false));
        assert!(!tie_writes(c, seen(None, None, None), false));
    }

    #[test]
    fn latest_is_ordered_by_its_expiry() {
        assert_eq!(latest_order(10, -2), LatestOrder::Newer, "no latest key");
        assert_eq!(
            latest_order(10, -1),
            LatestOrder::Newer,
            "no expiry tells nothing"
        );
        assert_eq!(latest_order(10, 9), LatestOrder::Newer);
        assert_eq!(latest_order(10, 11), LatestOrder::Older);
        assert_eq!(latest_order(10, 10), LatestOrder::SameMillisecond);
    }

    #[test]
    fn an_untagged_stream_refuses_ids_shaped_like_tagged_keys() {
        use crate::core::decision::{EntryId, Invalid};
        let untagged = Keys::of_stream(b"quantum:stream:harvest.heat.decision");
        let tagged = Keys::of_stream(b"quantum:stream:{eu}:harvest.heat.decision");
        let entry = |plan: &str, symbol: &str| {
            vec![
                (b"plan_id".to_vec(), plan.as_bytes().to_vec()),
                (b"symbol".to_vec(), symbol.as_bytes().to_vec()),
            ]
        };
        let e = entry("{eu}:P1", "BTC");
        assert_eq!(
            untagged.parse(EntryId::ZERO, &e),
            Err(Invalid::TaggedId("plan_id"))
        );
        assert!(tagged.parse(EntryId::ZERO, &e).is_ok());
        assert_eq!(
            untagged.parse(EntryId::ZERO, &entry("P1", "{eu}:BTC")),
            Err(Invalid::TaggedId("symbol"))
        );
        assert_eq!(
            tagged.by_plan(b"P1"),
            b"quantum:harvest:heat:by_plan:{eu}:P1"
        );
        // Not shaped like a tagged key: an empty tag, no colon, a brace later on.
        for ok in ["{}:P1", "{eu}P1", "P{eu}:1", "{eu", "{P1}"] {
            assert!(
                untagged.parse(EntryId::ZERO, &entry(ok, "S")).is_ok(),
                "{ok}"
            );
        }
        assert!(tag_prefixed(b"{{a}:x"), "the tag of s{{{{a}} is {{a");
    }

    #[test]
    fn replay_keeps_the_earliest_entry_in_the_dedupe_key() {
        let id = |ms, seq| crate::core::decision::EntryId { ms, seq };
        assert!(dedupe_held_by_earlier(Some(b"5-0"), id(6, 0)));
        assert!(dedupe_held_by_earlier(Some(b"6-0"), id(6, 1)));
        assert!(
            !dedupe_held_by_earlier(Some(b"6-1"), id(6, 1)),
            "its own ID"
        );
        assert!(
            !dedupe_held_by_earlier(Some(b"7-0"), id(6, 1)),
            "a later one"
        );
        assert!(!dedupe_held_by_earlier(None, id(6, 1)));
        assert!(!dedupe_held_by_earlier(Some(b"junk"), id(6, 1)));
    }

    #[test]
    fn hash_tags_follow_the_cluster_rule() {
        assert_eq!(hash_tag(b"quantum:stream:{heat}:x"), Some(&b"heat"[..]));
        assert_eq!(hash_tag(b"a{b}c{d}"), Some(&b"b"[..]));
        assert_eq!(
            hash_tag(b"a{}b{c}"),
            None,
            "the first {{ and the first }} after it"
        );
        assert_eq!(hash_tag(b"a}{b"), None);
        assert_eq!(hash_tag(b"{b"), None);
        assert_eq!(hash_tag(b"plain"), None);
        assert_eq!(hash_tag(b"a{{b}}"), Some(&b"{b"[..]));
    }

    #[test]
    fn slots_match_redis() {
        // Values from CLUSTER KEYSLOT.
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"123456789"), 0x31c3 & 0x3fff);
    }

    #[test]
    fn derived_keys_carry_the_stream_tag() {
        let k = Keys::of_stream(b"quantum:stream:{T}:harvest.heat.decision");
        assert_eq!(k.by_plan(b"p"), b"quantum:harvest:heat:by_plan:{T}:p");
        assert_eq!(k.latest(b"S"), b"quantum:harvest:heat:latest:{T}:S");
        assert_eq!(
            k.pointer(b"S"),
            b"quantum:harvest:heat:latest_plan_id:{T}:S"
        );
        assert_eq!(k.dedupe(b"p"), b"quantum:dedupe:p27:{T}:p");
        for name in [k.by_plan(b"p"), k.latest(b"x"), k.dedupe(b"{y}")] {
            assert_eq!(key_slot(&name), key_slot(b"quantum:stream:{T}:x"));
        }
        let seed = Keys::of_stream(b"quantum:stream:harvest.heat.decision");
        assert_eq!(seed.by_plan(b"p"), key(BY_PLAN_PREFIX, b"p"));
        assert_eq!(seed.latest(b"S"), key(LATEST_PREFIX, b"S"));
        assert_eq!(seed.pointer(b"S"), key(POINTER_PREFIX, b"S"));
        assert_eq!(seed.dedupe(b"p"), key(DEDUPE_PREFIX, b"p"));
    }

    use super::*;

    const NOW: u64 = 1_800_000_000_000;
    const T: Ttls = Ttls {
        plan_ms: 1_800_000,
        symbol_ms: 1_800_000,
        dedupe_ms: 120_000,
    };

    #[test]
    fn key_names_are_the_seeds() {
        assert_eq!(
            key(BY_PLAN_PREFIX, b"p1"),
            b"quantum:harvest:heat:by_plan:p1"
        );
        assert_eq!(
            key(LATEST_PREFIX, b"BTC"),
            b"quantum:harvest:heat:latest:BTC"
        );
        assert_eq!(
            key(POINTER_PREFIX, b"BTC"),
            b"quantum:harvest:heat:latest_plan_id:BTC"
        );
        assert_eq!(key(DEDUPE_PREFIX, b"p\xff*"), b"quantum:dedupe:p27:p\xff*");
    }

    #[test]
    fn fresh_entry_gets_full_ttl() {
        let p = plan(NOW, T, NOW);
        assert_eq!(p.by_plan_at, Some(NOW + 1_800_000));
        assert_eq!(p.latest_at, Some(NOW + 1_800_000));
        assert_eq!(p.dedupe_at, Some(NOW + 120_000));
    }

    #[test]
    fn late_entry_keeps_live_expiry() {
        let p = plan(NOW - 1_000_000, T, NOW);
        assert_eq!(p.by_plan_at, Some(NOW + 800_000));
        assert_eq!(p.dedupe_at, None, "dedupe window already passed");
        assert!(!p.creates_no_key());
    }

    #[test]
    fn entry_older_than_ttl_creates_nothing() {
        let p = plan(NOW - 2_000_000, T, NOW);
        assert!(p.creates_no_key());
        assert_eq!(p, Plan::default());
        let exact = plan(NOW - 1_800_000, T, NOW);
        assert!(exact.creates_no_key(), "expiring exactly now is expired");
    }

    #[test]
    fn ttls_are_independent() {
        let t = Ttls {
            plan_ms: 600_000,
            ..T
        };
        let p = plan(NOW - 900_000, t, NOW);
        assert_eq!(p.by_plan_at, None);
        assert_eq!(p.latest_at, Some(NOW + 900_000));
    }

    #[test]
    fn zero_ttl_turns_a_key_off() {
        let p = plan(NOW, Ttls { dedupe_ms: 0, ..T }, NOW);
        assert_eq!(p.dedupe_at, None);
        assert!(p.by_plan_at.is_some());
    }

    #[test]
    fn future_entry_is_clamped_to_now() {
        assert_eq!(expire_at(NOW + 10_000, 1000, NOW), Some(NOW + 1000));
    }

    #[test]
    fn huge_values_do_not_overflow() {
        assert_eq!(expire_at(u64::MAX, u64::MAX, u64::MAX), None);
        assert_eq!(Ttls::from_secs(u64::MAX, 1, 0).plan_ms, u64::MAX);
    }

    #[test]
    fn dedupe_verdicts() {
        let id = EntryId { ms: 5, seq: 1 };
        assert_eq!(dedupe_verdict(None, id), Dedupe::Fresh);
        assert_eq!(dedupe_verdict(Some(b"5-1"), id), Dedupe::Retry);
        assert_eq!(dedupe_verdict(Some(b"5-0"), id), Dedupe::Duplicate);
        assert_eq!(dedupe_verdict(Some(b"garbage"), id), Dedupe::Duplicate);
    }
}
