//! PURE: a decision, the TTL settings and the clock become the key writes to make.
//!
//! Expiry is anchored at the entry time (the millisecond part of the entry ID), so a
//! decision projected late keeps the expiry it would have had live, and a decision older
//! than a key's TTL does not create that key.

use crate::decision::EntryId;

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

/// Builds `prefix` + `id` as one binary-safe key name.
pub fn key(prefix: &[u8], id: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + id.len());
    k.extend_from_slice(prefix);
    k.extend_from_slice(id);
    k
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
