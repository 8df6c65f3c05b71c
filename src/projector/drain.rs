//! The drain: read from the group cursor, write the lookup keys, advance the group.
//!
//! A drain step reads at most `heatbridge.batch` entries. It first finishes the entries that
//! are pending for `heatbridge.consumer` (left by the sidecar, for example), then reads the
//! entries after the group's last-delivered ID and projects them in stream order. The steps
//! of one drain pass (one callback, at most [`STEP_BUDGET`]) share one read of the group, one
//! write of latest per symbol and one move of the group cursor with `XGROUP SETID`, at the
//! end, so nothing is pending and the lag is 0 afterwards. If a write fails, the cursor stops
//! before that entry, which stays in the backlog and is retried on the next tick
//! (at-least-once; projection is idempotent).
//!
//! Every write goes through a replicated call, so replicas and the AOF receive the writes
//! after the XADD that caused them. Only a writable master that is not loading drains.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis_module::{Context, RedisString};

use crate::core::clock::now_ms;
use crate::core::decision::EntryId;
use crate::core::fastpath::{Known, MAX_TAKEN};
use crate::core::health::StreamState;
use crate::core::metrics::{Stage, METRICS};
use crate::projector::apply::{self, project, Latest, Projected};
use crate::projector::capture;
use crate::projector::group::{self, GroupInfo, Target};
use crate::projector::host::{self, can_write, latency_sample, Db};
use crate::projector::read::{
    self, entries_from_commands, read_after, read_one, stream_shape, Entry,
};
use crate::projector::registry::{self, Outcome};
use crate::projector::writer::{self, Digits, Writer};
use crate::settings::config::{self, Settings};
use crate::support::logging::error_limited as log_error_limited;

/// Longest a pass that serves a live XADD keeps the event loop before it yields to clients.
/// Catch-up passes take `heatbridge.catchup-step-us` instead.
pub const STEP_BUDGET: Duration = Duration::from_millis(5);

/// Drain callbacks that ran a pass, and the passes they ran (INFO heatbridge): how many
/// streams one callback visits on average.
static CALLBACKS: AtomicU64 = AtomicU64::new(0);
static PASSES: AtomicU64 = AtomicU64::new(0);

/// The drain callbacks that ran at least one pass, and the passes run, since load.
pub fn callback_counts() -> (u64, u64) {
    (CALLBACKS.load(Relaxed), PASSES.load(Relaxed))
}

/// Module load: the counts start at zero (statics survive an unload).
pub fn reset() {
    CALLBACKS.store(0, Relaxed);
    PASSES.store(0, Relaxed);
    read::TIE_READS.store(0, Relaxed);
}

/// Outcome of one drain step.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// Nothing left to read.
    CaughtUp,
    /// Entries were handled and more may follow.
    More,
    /// The step failed; the tick retries.
    Failed,
}

/// Runs one drain pass over every projected stream (`all`: the housekeeping tick) or over
/// those with something due (after an XADD, or to go on with a catch-up); see
/// [`drain_stream`]. Returns whether entries remain (the caller schedules the next pass).
/// Nothing is done on a replica, while loading, or while writes are paused.
///
/// One budget bounds the whole callback, however many streams are listed: [`STEP_BUDGET`]
/// when it serves a live XADD, `heatbridge.catchup-step-us` otherwise, and never more than
/// `catchup-step-us` for streams catching up. Streams with a live XADD go first; the
/// streams catching up share the rest, each taking a fair slice of what is left, starting
/// with the one that waited last time ([`registry::waited`]). Every stream visited gets at
/// least one step.
pub fn run(ctx: &Context, all: bool, live: bool) -> bool {
    host::publish_role(ctx);
    if !can_write(ctx) {
        return false;
    }
    let settings = config::current();
    registry::sync(&settings);
    let Some(_db) = Db::select(ctx, settings.db) else {
        // Reported by health (registry::refresh); nothing can be read or written.
        return false;
    };
    let start = Instant::now();
    let catchup = config::catchup_step();
    let deadline = start + if live { STEP_BUDGET } else { catchup };
    let (fresh, behind) = registry::pass_order(!all);
    let mut ran = false;
    let mut more = share(ctx, &settings, &fresh, !all, deadline, &mut ran);
    let deadline = deadline.min(Instant::now() + catchup);
    more |= share(ctx, &settings, &behind, !all, deadline, &mut ran);
    if ran {
        CALLBACKS.fetch_add(1, Relaxed);
        // The latency monitor sees how long the callback held the event loop.
        latency_sample(start.elapsed());
    }
    more
}

/// Drains `streams` in turn until `deadline`, each for a fair share of the time left;
/// returns whether entries remain. Once the callback has run a pass (`ran`), a stream
/// reached after the deadline waits, and the next callback starts with the first one that
/// waited; a stream with XADDs whose replies wait for its pass never waits (its pass then
/// handles just their entries).
fn share(
    ctx: &Context,
    settings: &Settings,
    streams: &[Arc<str>],
    only_due: bool,
    deadline: Instant,
    ran: &mut bool,
) -> bool {
    let mut more = false;
    let mut waited = false;
    for (i, stream) in streams.iter().enumerate() {
        let now = Instant::now();
        if *ran && now >= deadline && !registry::owed(stream) {
            if !waited {
                registry::waited(stream);
                waited = true;
            }
            more = true;
            continue;
        }
        let left = u32::try_from(streams.len() - i).unwrap_or(u32::MAX).max(1);
        let slice = deadline.saturating_duration_since(now) / left;
        more |= drain_stream(ctx, settings, stream, only_due, now + slice, ran);
    }
    more
}

/// Gives the projector back what a pass learned, even if the pass panicked (then nothing).
struct PassGuard<'a> {
    stream: &'a str,
    known: Option<Known>,
    outcome: Outcome,
}

impl Drop for PassGuard<'_> {
    fn drop(&mut self) {
        registry::end_pass(self.stream, self.known.take(), self.outcome);
    }
}

/// Drains `stream` until `until` (at least one step); returns whether entries remain.
///
/// One call is one *pass*: a series of steps of at most `heatbridge.batch` entries, run inside
/// one callback. Nothing else runs between the steps of a pass, so no client, replica or AOF
/// can tell its steps apart. The pass therefore reads the group once, writes latest and its
/// pointer once per symbol (for the symbol's last projected entry), and moves the group
/// cursor once, after every other write.
fn drain_stream(
    ctx: &Context,
    settings: &Settings,
    stream: &str,
    only_due: bool,
    until: Instant,
    ran: &mut bool,
) -> bool {
    let Some(registry::PassStart {
        trusted,
        target,
        owed,
    }) = registry::begin_pass(stream, &settings.consumer, only_due)
    else {
        return false;
    };
    *ran = true;
    PASSES.fetch_add(1, Relaxed);
    if config::cluster() && !registry::owns(ctx, &target) {
        // Another master owns the stream's slot (or it moved away): not this node's to
        // project. Nothing was trusted from this pass; the projector forgets its state.
        registry::end_pass(stream, None, Outcome::Done);
        return false;
    }
    let mut guard = PassGuard {
        stream,
        known: None,
        // A pass that panics counts as failed.
        outcome: Outcome::Failed,
    };
    let mut pass = Pass::new(ctx, target);
    pass.known = trusted.known;
    pass.commands = trusted.commands;
    // The budget bounds catch-up, never the entries of the XADDs this pass serves: a
    // transaction or a turn of thousands of XADDs is projected before any of their replies.
    let mut last = loop {
        match step(ctx, settings, &mut pass) {
            Step::More if Instant::now() < until || pass.served < owed => {}
            done => break done,
        }
    };
    let (ok, learned) = pass.finish(ctx);
    if !ok {
        last = Step::Failed;
    }
    guard.known = learned;
    guard.outcome = match last {
        Step::More => Outcome::More,
        Step::Failed => Outcome::Failed,
        Step::CaughtUp => Outcome::Done,
    };
    last == Step::More
}

/// Where a pass leaves the group cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cursor {
    /// The stream's last ID (`$`): every entry was read.
    End,
    /// This entry, the last one handled.
    At(EntryId),
}

/// What a drain pass carries from one step to the next; see [`drain_stream`].
struct Pass<'c> {
    w: Writer<'c>,
    /// The stream and its group.
    t: Target,
    /// The group as this pass has left it, once read; `None` until then, and again after
    /// pending entries were finished (XACK changes it on the server).
    group: Option<GroupInfo>,
    /// Our consumer's pending entries are done for this pass (others' may remain).
    pending_checked: bool,
    /// The last projected entry of each symbol, with the expiry of its latest keys.
    latest: Latest,
    /// The cursor move still to make, with the group's read counter when it is known.
    advance: Option<(Cursor, Option<u64>)>,
    /// Entries read by this pass's steps, counted once they are acknowledged.
    read: u64,
    /// Entries this pass's steps handled, pending ones included.
    served: u64,
    /// The group as the previous pass left it, until the first step checks it.
    known: Option<Known>,
    /// The newest entry and the read counter, when the pass reaches the end of the stream
    /// with nothing pending and an exact counter: what the next pass may trust.
    end: Option<(EntryId, u64)>,
    /// The stream's length, when the pass already knows it.
    len: Option<u64>,
    /// The arguments of the XADDs counted in `known`, when every one was kept.
    commands: Option<Vec<capture::Command>>,
    /// The stream's high-water mark before this pass (see `apply::high_water`): the
    /// group cursor when the first step finds none.
    high_water: Option<EntryId>,
    /// The newest entry this pass handled.
    handled: Option<EntryId>,
}

impl<'c> Pass<'c> {
    fn new(ctx: &'c Context, t: Target) -> Pass<'c> {
        let high_water = apply::high_water(t.stream.as_bytes());
        Pass {
            w: Writer::new(ctx),
            t,
            group: None,
            pending_checked: false,
            latest: Latest::default(),
            advance: None,
            read: 0,
            served: 0,
            known: None,
            end: None,
            len: None,
            commands: None,
            high_water,
            handled: None,
        }
    }

    /// The group cursor is `cursor`: without a high-water mark (the first pass since a
    /// reset), the mark starts there.
    fn cursor_seen(&mut self, cursor: EntryId) {
        if self.high_water.is_none() {
            self.high_water = Some(cursor);
        }
    }

    /// Writes latest and the pointers, then moves the cursor. If a latest write fails,
    /// nothing of the pass is acknowledged: the retry rewrites it all (idempotent).
    /// Returns whether it all succeeded, and the group as the next pass may trust it.
    fn finish(self, ctx: &Context) -> (bool, Option<Known>) {
        // Past the high-water mark, a symbol's newest entry of the pass is newer than every
        // decision latest holds, whether or not the pass reached the stream's end. At or
        // before it (the cursor was moved back), it may be older than latest's decision (one
        // a REPLAY or an earlier pass wrote), so it is compared.
        let keys = &self.t.keys;
        let (newer, rest) = self.latest.split_at(self.high_water);
        let written = newer
            .write_all(&self.w, keys)
            .and_then(|()| rest.write_if_newer(ctx, &self.w, keys, &self.t.stream_key));
        let stream = self.t.stream.as_bytes();
        if let Some(hw) = self.high_water {
            apply::raise_high_water(stream, hw);
        }
        if written.is_ok() {
            if let Some(id) = self.handled {
                apply::raise_high_water(stream, id);
            }
        }
        if let Err(msg) = written {
            METRICS.count_error(Stage::Write, now_ms());
            log_error_limited(&format!(
                "write failed for the latest keys: {msg}; the entries stay in the backlog and \
                 are retried"
            ));
            return (false, None);
        }
        let Some((to, entries_read)) = self.advance else {
            METRICS.count_in(self.read);
            return (true, None);
        };
        let digits;
        let id = match to {
            Cursor::End => group::LAST_ID,
            Cursor::At(id) => {
                digits = Digits::id(id);
                digits.as_bytes()
            }
        };
        match group::advance(ctx, &self.t, id, entries_read) {
            Ok(()) => {
                // Counted once acknowledged: a failed move re-reads (and counts) them.
                METRICS.count_in(self.read);
                let known = match (to, self.end) {
                    (Cursor::End, Some((last, entries_read))) => Some(Known {
                        last,
                        len: self
                            .len
                            .unwrap_or_else(|| stream_shape(ctx, &self.t.stream_key).1),
                        entries_read,
                        xadds: 0,
                    }),
                    _ => None,
                };
                (true, known)
            }
            Err(e) => {
                METRICS.count_error(Stage::Ack, now_ms());
                log_error_limited(&format!("cannot advance group {}: {e}", self.t.group));
                (false, None)
            }
        }
    }
}

/// One drain step of a pass; see the module documentation.
fn step(ctx: &Context, s: &Settings, pass: &mut Pass) -> Step {
    let started = Instant::now();
    // Another reference to the pass's string (no copy), so `pass` can be lent on.
    let stream = writer::retain(&pass.t.stream_key);
    let (st, len) = stream_shape(ctx, &stream);
    registry::publish_stream_state(st, &pass.t.stream);
    if st != StreamState::Stream {
        return Step::CaughtUp;
    }
    if let Some(k) = pass.known.take() {
        pass.cursor_seen(k.last);
        let commands = pass.commands.take();
        if let Some((group, entries)) = trust_known(ctx, &stream, len, &k, commands) {
            // The pass adds no entry, so the length stays what the next pass will check.
            pass.len = Some(len);
            // Exactly the entries the counted XADDs added follow the cursor: all were read.
            return project_step(ctx, s, pass, group, entries, true, started);
        }
    }
    let group = match pass.group.take() {
        Some(g) => g,
        None => match group::read_group(ctx, &pass.t) {
            Ok(Some(g)) => g,
            Ok(None) => match group::create_group(ctx, &pass.t)
                .and_then(|()| group::read_group(ctx, &pass.t))
            {
                Ok(g) => {
                    // A new group over entries that may have been projected already (the
                    // group destroyed, or renamed by CONFIG SET): they are read again from
                    // 0, so the mark covers them all, and each one is compared with what
                    // latest holds. Only the entries added after now are written as they
                    // are (on a new stream that is every entry but the first).
                    let last = read::last_id(ctx, &pass.t.stream_key);
                    pass.high_water = pass.high_water.max(last);
                    g.unwrap_or_default()
                }
                Err(e) => {
                    METRICS.count_error(Stage::Ack, now_ms());
                    log_error_limited(&format!("cannot create group {}: {e}", pass.t.group));
                    return Step::Failed;
                }
            },
            Err(e) => {
                METRICS.count_error(Stage::Read, now_ms());
                log_error_limited(&format!("cannot read group {}: {e}", pass.t.group));
                return Step::Failed;
            }
        },
    };
    pass.cursor_seen(group.last_id);

    if group.pending > 0 && !pass.pending_checked {
        match finish_pending(ctx, s, &pass.t) {
            Ok(0) => pass.pending_checked = true,
            Ok(n) => {
                pass.served += n as u64;
                METRICS.count_loop(started.elapsed().as_secs_f64() * 1000.0);
                return Step::More;
            }
            Err(()) => return Step::Failed,
        }
    }

    let few = group.lag.is_some_and(|l| l <= s.batch as u64);
    let entries = match read_after(ctx, &stream, group.last_id, s.batch, few) {
        Ok(entries) => entries,
        Err(e) => {
            METRICS.count_error(Stage::Read, now_ms());
            log_error_limited(&format!("cannot read {}: {e}", pass.t.stream));
            return Step::Failed;
        }
    };
    // More entries after the cursor than the group's lag says: its read counter is not what
    // the entries are (XGROUP SETID with an ENTRIESREAD of the operator's choosing). The
    // counter is then left for the server to work out, never carried forward.
    let group = match group.lag {
        Some(lag) if entries.len() as u64 > lag => GroupInfo {
            lag: None,
            entries_read: None,
            ..group
        },
        _ => group,
    };
    let all_read = entries.len() < s.batch;
    project_step(ctx, s, pass, group, entries, all_read, started)
}

/// The group as `k` knows it and the entries added since, if the stream passes the checks
/// of [`Known`]; else `None`, and the step reads the group.
fn trust_known(
    ctx: &Context,
    stream: &RedisString,
    len: u64,
    k: &Known,
    commands: Option<Vec<capture::Command>>,
) -> Option<(GroupInfo, Vec<Entry>)> {
    let added = usize::try_from(k.xadds).ok()?;
    if added == 0 || added > MAX_TAKEN || len != k.len + k.xadds {
        return None;
    }
    let entries = commands
        .filter(|c| c.len() == added)
        .and_then(|c| entries_from_commands(ctx, stream, k.last, c))
        // One more than the XADDs added, so that an entry no XADD announced shows.
        .or_else(|| read_after(ctx, stream, k.last, added + 1, true).ok())?;
    if entries.len() != added {
        return None;
    }
    let group = GroupInfo {
        last_id: k.last,
        pending: 0,
        lag: Some(k.xadds),
        entries_read: Some(k.entries_read),
    };
    Some((group, entries))
}

/// The rest of a drain step: project `entries` (read after `group`'s cursor; `all_read`:
/// every entry after it) and record in `pass` where the cursor goes.
fn project_step(
    ctx: &Context,
    s: &Settings,
    pass: &mut Pass,
    group: GroupInfo,
    entries: Vec<Entry>,
    all_read: bool,
    started: Instant,
) -> Step {
    if entries.is_empty() {
        // Nothing after the cursor, yet the group may still show a lag: the entries after it
        // were deleted (XDEL, XTRIM). Moving the cursor to the stream's last ID makes the
        // group's lag 0 again.
        if group.lag != Some(0) {
            pass.advance = Some((
                Cursor::End,
                group::stream_entries_added(ctx, &pass.t, &group),
            ));
        }
        return Step::CaughtUp;
    }
    let now = now_ms();
    let mut done: Option<EntryId> = None;
    let mut failed = false;
    // An entry whose write failed is read again on the retry; it is counted then.
    let mut handled = 0u64;
    for e in entries {
        match project(ctx, &pass.w, &pass.t.keys, s, &e, now, true) {
            Ok(Projected::Written {
                latest_at: Some(at),
                named,
            }) => {
                done = Some(e.id);
                pass.latest.keep(e, at, named);
            }
            Ok(_) => done = Some(e.id),
            Err(msg) => {
                METRICS.count_error(Stage::Write, now_ms());
                log_error_limited(&format!(
                    "write failed for entry {}: {msg}; it stays in the backlog and is retried",
                    e.id
                ));
                failed = true;
                break;
            }
        }
        handled += 1;
    }
    pass.read += handled;
    pass.served += handled;
    if let Some(last) = done {
        pass.handled = pass.handled.max(Some(last));
        let to = if !failed && all_read {
            // Every entry after the cursor was read: with no deletion after the cursor (a
            // valid lag), the read counter moves by exactly the entries handled. At the end
            // of the stream the cursor goes to `$`, the stream's last ID, which keeps the lag
            // exact even when entries after `last` were deleted.
            let counter = group
                .entries_read_after(handled)
                .or_else(|| group::stream_entries_added(ctx, &pass.t, &group));
            if group.pending == 0 {
                pass.end = counter.map(|n| (last, n));
            }
            (Cursor::End, counter)
        } else {
            (Cursor::At(last), group.entries_read_after(handled))
        };
        pass.advance = Some(to);
        pass.group = Some(GroupInfo {
            last_id: last,
            pending: group.pending,
            lag: group.lag.map(|l| l.saturating_sub(handled)),
            entries_read: group.entries_read_after(handled),
        });
    }
    METRICS.count_loop(started.elapsed().as_secs_f64() * 1000.0);
    if failed {
        Step::Failed
    } else if !all_read {
        Step::More
    } else {
        Step::CaughtUp
    }
}

/// Projects and acknowledges the entries pending for our consumer. Returns how many.
fn finish_pending(ctx: &Context, s: &Settings, t: &Target) -> Result<usize, ()> {
    let ids = match group::pending_ids(ctx, t, s.batch) {
        Ok(ids) => ids,
        Err(e) => {
            METRICS.count_error(Stage::Read, now_ms());
            log_error_limited(&format!("cannot read pending entries: {e}"));
            return Err(());
        }
    };
    if ids.is_empty() {
        return Ok(0);
    }
    let now = now_ms();
    let w = Writer::new(ctx);
    let mut acked: Vec<String> = Vec::with_capacity(ids.len());
    let mut latest = Latest::default();
    for id in &ids {
        let e = read_one(ctx, &t.stream_key, *id);
        match project(ctx, &w, &t.keys, s, &e, now, true) {
            Ok(Projected::Written {
                latest_at: Some(at),
                named,
            }) => latest.keep(e, at, named),
            Ok(_) => {}
            Err(msg) => {
                METRICS.count_error(Stage::Write, now_ms());
                log_error_limited(&format!("write failed for pending entry {id}: {msg}"));
                break;
            }
        }
        acked.push(id.to_string());
    }
    // A pending entry is usually older than entries already projected (one XCLAIMed to our
    // consumer, or left by the sidecar): latest keeps the newer decision.
    if let Err(msg) = latest.write_if_newer(ctx, &w, &t.keys, &t.stream_key) {
        METRICS.count_error(Stage::Write, now_ms());
        log_error_limited(&format!(
            "write failed for the latest keys of pending entries: {msg}"
        ));
        return Err(());
    }
    METRICS.count_in(acked.len() as u64);
    if acked.is_empty() {
        return Err(());
    }
    if let Err(e) = group::ack(ctx, t, &acked) {
        METRICS.count_error(Stage::Ack, now_ms());
        log_error_limited(&format!("XACK failed: {e}"));
        return Err(());
    }
    if acked.len() < ids.len() {
        return Err(());
    }
    Ok(acked.len())
}
