//! Applies one decision: validates the entry, plans its writes, checks dedupe and writes its
//! dedupe and by_plan keys; latest and its pointer are written once per symbol per pass,
//! and never from an entry older than the decision they hold.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Mutex;

use redis_module::{Context, ContextFlags, RedisString};

use crate::core::decision::{EntryId, Invalid};
use crate::core::metrics::{Stage, METRICS};
use crate::core::projection::{self, Dedupe, Keys, LatestOrder, TieSeen};
use crate::projector::call;
use crate::projector::read::{self, Entry};
use crate::projector::writer::{self, Writer};
use crate::settings::config::{self, Settings};
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
        /// Where the entry's plan_id and symbol are.
        named: Named,
    },
    /// Invalid; acknowledged without writing.
    Invalid,
    /// Skipped by dedupe.
    Duplicate,
    /// Too old for every TTL.
    Expired,
}

/// Where a valid entry's plan_id and symbol are among its fields (their last occurrence, as
/// `decision::parse` found them), so that its writes need not search the fields again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Named {
    plan: usize,
    symbol: usize,
}

impl Named {
    /// The positions of the plan_id and symbol fields, if the entry has both.
    fn find(fields: &[(RedisString, RedisString)]) -> Option<Named> {
        Some(Named {
            plan: writer::position(fields, b"plan_id")?,
            symbol: writer::position(fields, b"symbol")?,
        })
    }

    /// The plan_id and symbol strings of `fields`.
    fn of(self, fields: &[(RedisString, RedisString)]) -> Option<(&RedisString, &RedisString)> {
        let value = |at: usize| fields.get(at).map(|(_, v)| v);
        Some((value(self.plan)?, value(self.symbol)?))
    }
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
    let dedupe_key = w.key(keys.parts(projection::DEDUPE_PREFIX, d.plan_id));
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
    if let Some(at) = plan.dedupe_at.filter(|_| !earlier_holds_dedupe) {
        let id = w.string(writer::Digits::id(d.id).as_bytes());
        match dedupe_kind {
            Some(kind) => w.set_string_of(&dedupe_key, kind, &id, at)?,
            None => w.set_string(&dedupe_key, &id, at)?,
        };
    }
    if let Some(at) = plan.by_plan_at {
        let key = w.key(keys.parts(projection::BY_PLAN_PREFIX, d.plan_id));
        if w.replace_hash(&key, d.fields, None, at)? {
            METRICS.count_by_plan();
        }
    }
    let lag = now.saturating_sub(d.id.ms) as f64;
    METRICS.record_projected(lag, d.ts_epoch);
    Ok(Projected::Written {
        latest_at: plan.latest_at,
        named: Named {
            plan: d.plan_at,
            symbol: d.symbol_at,
        },
    })
}

/// The newest projected entry of each symbol, whose latest keys are still to be written,
/// with their expiry.
///
/// A pass after one XADD keeps one entry: a list searched by symbol does that without an
/// allocation per symbol. Past [`LATEST_INDEX_FROM`] symbols an index by symbol finds them.
#[derive(Default)]
pub struct Latest {
    /// The kept entries, each with its expiry and where its plan_id and symbol are.
    kept: Vec<(Entry, u64, Named)>,
    /// The position in `kept` of each symbol's entry: empty while `kept` is short (it is
    /// searched), complete once built.
    index: HashMap<Vec<u8>, usize>,
}

/// Symbols kept before [`Latest`] indexes them.
const LATEST_INDEX_FROM: usize = 8;

impl Latest {
    /// Keeps `e` (projected, with its fields `named`) as its symbol's latest entry when it is
    /// newer than the one kept.
    pub fn keep(&mut self, e: Entry, at: u64, named: Named) {
        let Some((_, sym)) = e.fields.as_deref().and_then(|f| named.of(f)) else {
            return;
        };
        let sym = sym.as_slice();
        let found = if self.index.is_empty() {
            self.kept
                .iter()
                .position(|(k, _, n)| kept_symbol(k, *n) == Some(sym))
        } else {
            self.index.get(sym).copied()
        };
        match found.and_then(|i| self.kept.get_mut(i)) {
            Some(slot) if slot.0.id >= e.id => {}
            Some(slot) => *slot = (e, at, named),
            None => {
                if !self.index.is_empty() {
                    self.index.insert(sym.to_vec(), self.kept.len());
                }
                self.kept.push((e, at, named));
                if self.index.is_empty() && self.kept.len() > LATEST_INDEX_FROM {
                    self.index = self
                        .kept
                        .iter()
                        .enumerate()
                        .filter_map(|(i, (k, _, n))| Some((kept_symbol(k, *n)?.to_vec(), i)))
                        .collect();
                }
            }
        }
    }

    /// The kept entries, oldest first.
    pub fn into_sorted(self) -> Vec<(Entry, u64)> {
        self.sorted()
            .into_iter()
            .map(|(e, at, _)| (e, at))
            .collect()
    }

    /// The kept entries with where their fields are, oldest first.
    fn sorted(mut self) -> Vec<(Entry, u64, Named)> {
        self.kept.sort_unstable_by_key(|(e, _, _)| e.id);
        self.kept
    }

    /// Splits the kept entries at `high_water`: those newer than it, whose latest keys are
    /// written as they are, and the rest, which must be compared ([`Latest::write_if_newer`]).
    pub fn split_at(self, high_water: Option<EntryId>) -> (Latest, Latest) {
        let newer = |e: &Entry| high_water.is_some_and(|hw| e.id > hw);
        // Usually every entry is newer (or none is): nothing is moved then.
        if self.kept.iter().all(|(e, _, _)| newer(e)) {
            return (self, Latest::default());
        }
        if !self.kept.iter().any(|(e, _, _)| newer(e)) {
            return (Latest::default(), self);
        }
        let (newer, rest): (Vec<_>, Vec<_>) = self.kept.into_iter().partition(|(e, _, _)| newer(e));
        let whole = |kept| Latest {
            kept,
            index: HashMap::new(),
        };
        (whole(newer), whole(rest))
    }

    /// Writes the latest keys of every kept entry, oldest first.
    pub fn write_all(self, w: &Writer, keys: &Keys) -> Result<(), String> {
        self.sorted()
            .iter()
            .try_for_each(|(e, at, named)| write_latest_named(w, keys, e, *named, *at))
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
    /// decisions of one millisecond are ordered by reading that millisecond of the stream for
    /// the entry whose decision latest holds (`read::tie_read`, `projection::tie_writes`).
    /// (That fallback assumes `ttl-symbol-sec` did not change since latest was written.)
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
        // One read per millisecond, newest first, for the entry whose decision each tied
        // symbol's latest hash holds.
        let mut held_in: BTreeMap<u64, read::Held> = BTreeMap::new();
        for (e, _) in &ties {
            let Some(sym) = symbol_of(e) else {
                continue;
            };
            let held = held_in.entry(e.id.ms).or_default();
            if !held.contains_key(sym.as_slice()) {
                let key = w.string(&keys.latest(sym.as_slice()));
                let content = call::call(ctx, c"HGETALL", call::READ, &[&key])
                    .map(|r| r.strings())
                    .unwrap_or_default();
                held.insert(sym.as_slice().to_vec(), content);
            }
        }
        let dedupe = config::DEDUPE_TTL_SEC.load(Relaxed) > 0;
        let seen: HashMap<u64, (HashMap<Vec<u8>, TieSeen>, bool)> = held_in
            .into_iter()
            .map(|(ms, held)| (ms, read::tie_read(ctx, stream, keys, ms, &held, dedupe)))
            .collect();
        for (e, at) in ties {
            let Some(sym) = symbol_of(&e) else {
                continue;
            };
            let write = match seen.get(&e.id.ms) {
                Some((symbols, complete)) => projection::tie_writes(
                    e.id,
                    symbols.get(sym.as_slice()).copied().unwrap_or_default(),
                    *complete,
                ),
                None => true,
            };
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

/// The symbol of a kept entry, as bytes.
fn kept_symbol(e: &Entry, named: Named) -> Option<&[u8]> {
    let (_, sym) = named.of(e.fields.as_deref()?)?;
    Some(sym.as_slice())
}

/// Writes the latest hash and the latest_plan_id pointer of an entry's symbol.
pub fn write_latest(w: &Writer, keys: &Keys, e: &Entry, at_ms: u64) -> Result<(), String> {
    match e.fields.as_deref().and_then(Named::find) {
        Some(named) => write_latest_named(w, keys, e, named, at_ms),
        None => Ok(()),
    }
}

/// [`write_latest`] for an entry whose plan_id and symbol are where `named` says.
fn write_latest_named(
    w: &Writer,
    keys: &Keys,
    e: &Entry,
    named: Named,
    at_ms: u64,
) -> Result<(), String> {
    let Some(fields) = &e.fields else {
        return Ok(());
    };
    let Some((plan, symbol)) = named.of(fields) else {
        return Ok(());
    };
    let symbol = symbol.as_slice();
    let key = w.key(keys.parts(projection::LATEST_PREFIX, symbol));
    // A latest key of another type is left alone, and so is the pointer, which would
    // otherwise name a plan whose latest hash was never written.
    if !w.replace_hash(&key, fields, Some(plan), at_ms)? {
        return Ok(());
    }
    // The hash holds this decision now, whatever happens to the pointer.
    remember_written(key.as_slice(), e.id, at_ms);
    let ptr = w.key(keys.parts(projection::POINTER_PREFIX, symbol));
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
