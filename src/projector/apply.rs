//! Applies one decision: validates the entry, plans its writes, checks dedupe and writes its
//! dedupe and by_plan keys; latest and its pointer are written once per symbol per pass,
//! and never from an entry older than the decision they hold.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use redis_module::{Context, ContextFlags, RedisString};

use crate::core::decision::{EntryId, Invalid};
use crate::core::metrics::{Stage, METRICS};
use crate::core::projection::{self, Dedupe, Keys, LatestOrder};
use crate::projector::call;
use crate::projector::read::{self, Entry};
use crate::projector::writer::{self, Writer};
use crate::settings::config::Settings;
use crate::support::guard;
use crate::support::logging::{self, RateLimit};

static INVALID_LOG: RateLimit = RateLimit::new(1000);

/// What happened to one entry.
#[derive(Debug, PartialEq, Eq)]
pub enum Projected {
    /// The dedupe and by_plan keys were written; latest and its pointer are still to be
    /// written, expiring at `latest_at`, when it is `Some`.
    Written {
        /// Expiry of the latest hash and pointer, if they are to be written.
        latest_at: Option<u64>,
    },
    /// Invalid; acknowledged without writing.
    Invalid,
    /// Skipped by dedupe.
    Duplicate,
    /// Too old for every TTL.
    Expired,
}

/// Projects one entry's dedupe and by_plan keys; the caller writes latest (once per symbol
/// per drain pass). `Err` only for a write failure that should be retried.
pub fn project(
    ctx: &Context,
    w: &Writer,
    keys: &Keys,
    s: &Settings,
    e: &Entry,
    now: u64,
    dedupe: bool,
) -> Result<Projected, String> {
    guard::fault_point("project");
    let parsed = match &e.fields {
        Some(fields) => keys.parse(e.id, fields),
        None => Err(Invalid::Deleted),
    };
    let d = match parsed {
        Ok(d) => d,
        Err(Invalid::Deleted) => return Ok(Projected::Invalid),
        Err(reason) => {
            METRICS.count_error(Stage::Parse, now);
            if let Some(suppressed) = INVALID_LOG.check(crate::core::clock::mono_ms()) {
                logging::warning(&format!(
                    "invalid entry {} skipped and acknowledged: {reason}{}",
                    e.id,
                    if suppressed > 0 {
                        format!(" ({suppressed} more since the last line)")
                    } else {
                        String::new()
                    }
                ));
            }
            return Ok(Projected::Invalid);
        }
    };
    let plan = projection::plan(d.id.ms, s.ttls, now);
    if plan.creates_no_key() {
        METRICS.count_expired_skip();
        return Ok(Projected::Expired);
    }
    if ctx.get_flags().contains(ContextFlags::OOM) {
        return Err("OOM: used memory is over maxmemory".into());
    }
    let dedupe_key = w.string(&keys.dedupe(d.plan_id));
    // The dedupe key's type, once read here, serves its write below.
    let mut dedupe_kind = None;
    // An earlier entry of the plan holds the dedupe key: REPLAY leaves it there.
    let mut earlier_holds_dedupe = false;
    if s.ttls.dedupe_ms > 0 {
        let (kind, existing) = writer::read_string(ctx, &dedupe_key);
        if dedupe {
            if projection::dedupe_verdict(existing.as_deref(), d.id) == Dedupe::Duplicate {
                METRICS.count_dedupe_skip();
                return Ok(Projected::Duplicate);
            }
        } else {
            // REPLAY ignores dedupe, but never moves the key to a later entry: it keeps
            // naming the earliest projected entry of the plan, so that a later re-read of the
            // stream (a rewound cursor) decides every entry as the live path did, and latest
            // never loses the decision it holds to a re-read that now skips it.
            earlier_holds_dedupe = projection::dedupe_held_by_earlier(existing.as_deref(), d.id);
        }
        dedupe_kind = Some(kind);
    }
    let Some(fields) = &e.fields else {
        return Ok(Projected::Invalid);
    };
    let Some(plan_id) = writer::field(fields, b"plan_id") else {
        return Ok(Projected::Invalid);
    };
    if let Some(at) = plan.dedupe_at.filter(|_| !earlier_holds_dedupe) {
        let id = w.string(writer::Digits::id(d.id).as_bytes());
        match dedupe_kind {
            Some(kind) => w.set_string_of(&dedupe_key, kind, &id, at)?,
            None => w.set_string(&dedupe_key, &id, at)?,
        };
    }
    if let Some(at) = plan.by_plan_at {
        let key = w.string(&keys.by_plan(plan_id.as_slice()));
        if w.replace_hash(&key, fields, None, at)? {
            METRICS.count_by_plan();
        }
    }
    let lag = now.saturating_sub(d.id.ms) as f64;
    METRICS.record_projected(lag, d.ts_epoch);
    Ok(Projected::Written {
        latest_at: plan.latest_at,
    })
}

/// The newest projected entry of each symbol, whose latest keys are still to be written,
/// with their expiry.
#[derive(Default)]
pub struct Latest(HashMap<Vec<u8>, (Entry, u64)>);

impl Latest {
    /// Keeps `e` as its symbol's latest entry when it is newer than the one kept.
    pub fn keep(&mut self, e: Entry, at: u64) {
        let Some(sym) = symbol_of(&e) else {
            return;
        };
        match self.0.get_mut(sym.as_slice()) {
            Some(slot) if slot.0.id >= e.id => {}
            Some(slot) => *slot = (e, at),
            None => {
                let key = sym.as_slice().to_vec();
                self.0.insert(key, (e, at));
            }
        }
    }

    /// The kept entries, oldest first.
    pub fn into_sorted(self) -> Vec<(Entry, u64)> {
        let mut latest: Vec<(Entry, u64)> = self.0.into_values().collect();
        latest.sort_by_key(|(e, _)| e.id);
        latest
    }

    /// Splits the kept entries at `high_water`: those newer than it, whose latest keys are
    /// written as they are, and the rest, which must be compared ([`Latest::write_if_newer`]).
    pub fn split_at(self, high_water: Option<EntryId>) -> (Latest, Latest) {
        let (newer, rest): (HashMap<_, _>, HashMap<_, _>) = self
            .0
            .into_iter()
            .partition(|(_, (e, _))| high_water.is_some_and(|hw| e.id > hw));
        (Latest(newer), Latest(rest))
    }

    /// Writes the latest keys of every kept entry, oldest first.
    pub fn write_all(self, w: &Writer, keys: &Keys) -> Result<(), String> {
        self.into_sorted()
            .iter()
            .try_for_each(|(e, at)| write_latest(w, keys, e, *at))
    }

    /// Writes the latest keys of each kept entry unless the symbol's latest already holds a
    /// newer decision: for entries that may be older than what latest holds (pending
    /// entries, REPLAY, and entries up to the stream's high-water mark after the group
    /// cursor was moved back; see [`high_water`]).
    ///
    /// Which decision latest holds is known exactly when this process wrote it and its
    /// expiry is still the one written ([`LATEST_WRITTEN`]). Otherwise (after a restart, a
    /// failover or an unload) latest's absolute expiry (PEXPIRETIME), its entry's time plus
    /// `ttl-symbol-sec`, orders it against a candidate that would expire at `at`; two
    /// decisions of one millisecond are ordered by reading that millisecond of the stream
    /// from the candidate on, however many entries it holds. (That fallback assumes
    /// `ttl-symbol-sec` did not change since latest was written.)
    pub fn write_if_newer(
        self,
        ctx: &Context,
        w: &Writer,
        keys: &Keys,
        stream: &RedisString,
    ) -> Result<(), String> {
        let mut ties: Vec<(Entry, u64)> = Vec::new();
        for (e, at) in self.into_sorted() {
            let Some(sym) = symbol_of(&e) else {
                continue;
            };
            let key = keys.latest(sym.as_slice());
            let current = writer::expire_time(ctx, &w.string(&key));
            let known = u64::try_from(current).ok().and_then(|current| {
                written()
                    .get(&key)
                    .filter(|(_, written_at)| *written_at == current)
                    .map(|(id, _)| *id)
            });
            let order = match known {
                Some(id) if e.id >= id => LatestOrder::Newer,
                Some(_) => LatestOrder::Older,
                None => projection::latest_order(at, current),
            };
            match order {
                LatestOrder::Newer => write_latest(w, keys, &e, at)?,
                LatestOrder::Older => {}
                LatestOrder::SameMillisecond => ties.push((e, at)),
            }
        }
        // One read per millisecond, newest first, down to its oldest candidate at most, for
        // the entry whose decision each symbol's latest hash holds.
        let mut from: BTreeMap<u64, (u64, read::Held)> = BTreeMap::new();
        for (e, _) in &ties {
            let Some(sym) = symbol_of(e) else {
                continue;
            };
            let (seq, held) = from
                .entry(e.id.ms)
                .or_insert_with(|| (e.id.seq, HashMap::new()));
            *seq = (*seq).min(e.id.seq);
            if !held.contains_key(sym.as_slice()) {
                let key = w.string(&keys.latest(sym.as_slice()));
                let content = call::call(ctx, c"HGETALL", call::READ, &[&key])
                    .map(|r| r.strings())
                    .unwrap_or_default();
                held.insert(sym.as_slice().to_vec(), content);
            }
        }
        let newest: HashMap<u64, (HashMap<Vec<u8>, EntryId>, bool)> = from
            .into_iter()
            .map(|(ms, (seq, held))| {
                let found = read::newest_in_ms(ctx, stream, keys, EntryId { ms, seq }, &held);
                (ms, found)
            })
            .collect();
        for (e, at) in ties {
            let Some(sym) = symbol_of(&e) else {
                continue;
            };
            let write = match newest.get(&e.id.ms) {
                Some((found, complete)) => match found.get(sym.as_slice()) {
                    Some(holder) => *holder <= e.id,
                    // The read reached the candidate and no entry of that millisecond holds
                    // latest's decision: it is older.
                    None => *complete,
                },
                None => true,
            };
            // Not known (more than MAX_TIE_SCAN newer entries in that millisecond): latest,
            // which holds a decision of that very millisecond, is left as it is.
            if write {
                write_latest(w, keys, &e, at)?;
            }
        }
        Ok(())
    }
}

/// The symbol of an entry, as the entry's own string.
fn symbol_of(e: &Entry) -> Option<&RedisString> {
    e.fields
        .as_deref()
        .and_then(|f| writer::field(f, b"symbol"))
}

/// Writes the latest hash and the latest_plan_id pointer of an entry's symbol.
pub fn write_latest(w: &Writer, keys: &Keys, e: &Entry, at_ms: u64) -> Result<(), String> {
    let Some(fields) = &e.fields else {
        return Ok(());
    };
    let (Some(plan), Some(symbol)) = (
        writer::field(fields, b"plan_id"),
        writer::field(fields, b"symbol"),
    ) else {
        return Ok(());
    };
    let key = w.string(&keys.latest(symbol.as_slice()));
    // A latest key of another type is left alone, and so is the pointer, which would
    // otherwise name a plan whose latest hash was never written.
    if !w.replace_hash(&key, fields, Some(plan), at_ms)? {
        return Ok(());
    }
    // The hash holds this decision now, whatever happens to the pointer.
    remember_written(key.as_slice(), e.id, at_ms);
    let ptr = w.string(&keys.pointer(symbol.as_slice()));
    w.set_string(&ptr, plan, at_ms)?;
    METRICS.count_latest();
    Ok(())
}

/// Most latest keys whose decision is remembered; past it the memory starts over (the
/// expiry then orders decisions, as after a restart).
const MAX_REMEMBERED: usize = 50_000;

/// The decision (entry ID) this process last wrote into each latest key, with the expiry it
/// gave the key: while the key still expires then, it holds that decision.
static LATEST_WRITTEN: Mutex<BTreeMap<Vec<u8>, (EntryId, u64)>> = Mutex::new(BTreeMap::new());

fn written() -> std::sync::MutexGuard<'static, BTreeMap<Vec<u8>, (EntryId, u64)>> {
    LATEST_WRITTEN.lock().unwrap_or_else(|e| e.into_inner())
}

fn remember_written(key: &[u8], id: EntryId, at_ms: u64) {
    let mut m = written();
    if m.len() >= MAX_REMEMBERED && !m.contains_key(key) {
        m.clear();
    }
    match m.get_mut(key) {
        Some(slot) => *slot = (id, at_ms),
        None => {
            m.insert(key.to_vec(), (id, at_ms));
        }
    }
}

/// Each stream's high-water mark: the newest entry this process knows latest may have been
/// written from (the group cursor when first seen, then every entry projected or replayed).
/// An entry after it is newer, in stream order, than every decision latest holds, so its
/// latest keys are written without a comparison. Entries at or before it are compared: they
/// come back only when the cursor was moved back (XGROUP SETID), from pending entries, or
/// through REPLAY.
///
/// After a reset (below) the mark starts again at the group cursor, which assumes the
/// cursor was not moved back before the reset. If it was, latest may step back while the
/// catch-up re-projects the older entries; it is exact again once the catch-up reaches the
/// stream's end, since each symbol's newest entry comes last.
static HIGH_WATER: Mutex<BTreeMap<Vec<u8>, EntryId>> = Mutex::new(BTreeMap::new());

fn high_waters() -> std::sync::MutexGuard<'static, BTreeMap<Vec<u8>, EntryId>> {
    HIGH_WATER.lock().unwrap_or_else(|e| e.into_inner())
}

/// The high-water mark of `stream`, if this process has one since the last reset.
pub fn high_water(stream: &[u8]) -> Option<EntryId> {
    high_waters().get(stream).copied()
}

/// Raises the high-water mark of `stream` to `id` (never lowers it).
pub fn raise_high_water(stream: &[u8], id: EntryId) {
    let mut m = high_waters();
    match m.get_mut(stream) {
        Some(hw) => *hw = (*hw).max(id),
        None => {
            m.insert(stream.to_vec(), id);
        }
    }
}

/// Forgets which decisions latest holds: at module load (the statics survive an unload), and
/// whenever the data set may have been replaced under the keys (a load, a full resync, a
/// role change, FLUSH*, SWAPDB, DEBUG, a change of the database or the streams). Until latest is written again, its expiry orders decisions.
pub fn reset() {
    written().clear();
    high_waters().clear();
}
