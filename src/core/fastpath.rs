//! PURE: the fast path's state for one stream, as one state machine.
//!
//! A drain pass normally reads the group (XINFO GROUPS) and reads its entries back from the
//! stream. Two shortcuts make a one-entry pass cheap, and both rest on one invariant: *since
//! the last clean pass, nothing but counted XADDs touched the stream or its group*.
//!
//! - **The known group.** A pass that ended at the end of the stream with nothing pending
//!   leaves [`Known`]: the cursor, the stream's length, the group's read counter. The next
//!   pass trusts it instead of reading the group, if the stream still has exactly that length
//!   plus the XADDs counted since (the drain checks this).
//! - **Entries from commands.** The command filter keeps the arguments of each XADD on the
//!   stream; the `xadd` event ties them to the entry it announces. A pass takes the entries
//!   from them (reading only IDs and field counts) when every counted XADD was tied.
//!
//! Everything that could break the invariant forgets: a stream event other than `xadd`
//! outside a pass, a command that changes the group or the stream unseen, an XADD run by EXEC
//! or on a server that may not write, a load, a role change, every housekeeping tick. What
//! may not be trusted is never taken: a forgotten known group makes the pass read the group,
//! and an untied XADD makes it read the entries back.
//!
//! The state is generic over the kept command `C`, so every transition is tested here
//! without a server; `capture::Command` is the real one.

/// Most XADDs one pass takes from the kept commands (and trusts the known group for): a
/// `project-at turn` pass serves every XADD of an event-loop turn, often more than one drain
/// step's `heatbridge.batch`. It bounds the argument strings kept alive between a turn's
/// XADDs and its pass (the stream holds a copy of each anyway, so they add at most what those
/// XADDs added to the stream, until the turn ends); past it the pass reads the group and the
/// entries back.
pub const MAX_TAKEN: usize = 1000;

/// The group as the last clean pass left it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Known {
    /// The newest entry of the stream; the cursor is on it (or on a deleted later ID).
    pub last: crate::core::decision::EntryId,
    /// The stream's length then.
    pub len: u64,
    /// The group's read counter then.
    pub entries_read: u64,
    /// XADDs on the stream since.
    pub xadds: u64,
}

/// Whether the filter should keep the arguments of an XADD on this stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wanted {
    /// Keep them.
    Yes,
    /// No: an XADD since the last pass was not tied, so the next pass reads back anyway.
    No,
    /// No: as many are kept as a pass may take; the next pass reads back.
    Full,
}

/// What one drain pass may trust, taken at its start.
#[derive(Debug)]
pub struct Trusted<C> {
    /// The group as the previous pass left it, with the XADDs counted since.
    pub known: Option<Known>,
    /// The arguments of those XADDs, in order, when every one was tied to its entry.
    pub commands: Option<Vec<C>>,
}

/// The fast path's state for one stream.
#[derive(Debug)]
pub struct FastPath<C> {
    known: Option<Known>,
    /// The last XADD on the stream the filter kept, not yet tied to an entry.
    filtered: Option<C>,
    /// The XADDs tied to their entries since the last pass began.
    matched: Vec<C>,
    /// False once an XADD since the last pass began was not tied (or too many were kept).
    complete: bool,
    /// A pass runs: the stream events it causes itself are not changes behind its back.
    in_pass: bool,
}

impl<C> Default for FastPath<C> {
    fn default() -> Self {
        FastPath {
            known: None,
            filtered: None,
            matched: Vec::new(),
            complete: false,
            in_pass: false,
        }
    }
}

impl<C> FastPath<C> {
    /// Forgets everything: the next pass reads the group and the entries.
    pub fn forget(&mut self) {
        self.known = None;
        self.filtered = None;
        self.matched.clear();
        self.complete = false;
    }

    /// A stream event other than `xadd` on the stream (XDEL, XTRIM, XSETID, XGROUP...):
    /// a change behind the pass's back unless a pass runs and made it.
    pub fn stream_changed(&mut self) {
        if !self.in_pass {
            self.forget();
        }
    }

    /// The filter saw a command: an XADD kept earlier that no event claimed was refused.
    pub fn command_seen(&mut self) {
        self.filtered = None;
    }

    /// Whether to keep the arguments of the XADD the filter sees, when a pass may take at
    /// most `limit` entries from commands.
    pub fn wants_xadd(&self, limit: usize) -> Wanted {
        if !self.complete {
            Wanted::No
        } else if self.matched.len() >= limit {
            Wanted::Full
        } else {
            Wanted::Yes
        }
    }

    /// The filter kept an XADD's arguments (after [`FastPath::wants_xadd`] said yes).
    pub fn xadd_kept(&mut self, command: C) {
        self.filtered = Some(command);
    }

    /// The filter could not keep an XADD that a pass would have needed.
    pub fn xadd_not_kept(&mut self) {
        self.complete = false;
    }

    /// The `xadd` event for the stream. `writable`: the server may write (a master, not
    /// loading, writes not paused); `in_exec`: EXEC or a script runs it (its commands passed
    /// the filter when queued, not now); `is_its_command`: whether a kept command is the one
    /// that added this entry (its key is the event's very key object).
    pub fn xadd_event(
        &mut self,
        writable: bool,
        in_exec: bool,
        is_its_command: impl FnOnce(&C) -> bool,
    ) {
        if !writable || in_exec {
            self.forget();
            if !writable {
                return;
            }
        }
        let counted = match self.known.as_mut() {
            Some(k) => {
                k.xadds += 1;
                true
            }
            None => false,
        };
        match self.filtered.take() {
            Some(c) if counted && self.complete && is_its_command(&c) => self.matched.push(c),
            _ => self.complete = false,
        }
    }

    /// A pass begins: takes what it may trust (nothing of the known group unless `trust`,
    /// no command unless `take_commands`), and starts counting XADDs for the next pass.
    pub fn begin_pass(&mut self, trust: bool, take_commands: bool) -> Trusted<C> {
        self.in_pass = true;
        let known = self.known.take().filter(|_| trust);
        let complete = std::mem::replace(&mut self.complete, true);
        let matched = std::mem::take(&mut self.matched);
        let commands = (take_commands && complete && known.is_some() && !matched.is_empty())
            .then_some(matched);
        Trusted { known, commands }
    }

    /// A pass ended, leaving `known` when it ended clean at the end of the stream.
    pub fn end_pass(&mut self, known: Option<Known>) {
        self.in_pass = false;
        self.known = known;
    }

    /// Whether a pass runs.
    pub fn in_pass(&self) -> bool {
        self.in_pass
    }

    /// Whether the group is known (for INFO and tests).
    pub fn knows_group(&self) -> bool {
        self.known.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::decision::EntryId;

    /// A kept command: its key's identity and a label.
    #[derive(Debug, Clone, PartialEq)]
    struct Cmd(u32);

    fn known() -> Known {
        Known {
            last: EntryId { ms: 5, seq: 0 },
            len: 5,
            entries_read: 5,
            xadds: 0,
        }
    }

    /// A state after a clean pass: the group is known and a new pass may take commands.
    fn clean() -> FastPath<Cmd> {
        let mut f = FastPath::default();
        let t = f.begin_pass(true, true);
        assert!(t.known.is_none() && t.commands.is_none());
        f.end_pass(Some(known()));
        f
    }

    /// The filter keeps `c` and its event ties it.
    fn xadd(f: &mut FastPath<Cmd>, c: u32) {
        f.command_seen();
        assert_eq!(f.wants_xadd(10), Wanted::Yes);
        f.xadd_kept(Cmd(c));
        f.xadd_event(true, false, |k| k.0 == c);
    }

    #[test]
    fn tied_xadds_are_taken_by_the_next_pass() {
        let mut f = clean();
        xadd(&mut f, 1);
        xadd(&mut f, 2);
        let t = f.begin_pass(true, true);
        assert_eq!(t.known.map(|k| k.xadds), Some(2));
        assert_eq!(t.commands, Some(vec![Cmd(1), Cmd(2)]));
        assert!(f.in_pass());
        f.end_pass(Some(known()));
        assert!(!f.in_pass());
    }

    #[test]
    fn an_untied_xadd_makes_the_pass_read_back() {
        let mut f = clean();
        xadd(&mut f, 1);
        // The event's key is not the kept command's: another execution.
        f.command_seen();
        f.xadd_kept(Cmd(2));
        f.xadd_event(true, false, |_| false);
        assert_eq!(f.wants_xadd(10), Wanted::No);
        let t = f.begin_pass(true, true);
        assert_eq!(t.known.map(|k| k.xadds), Some(2), "still counted");
        assert!(t.commands.is_none());
    }

    #[test]
    fn an_xadd_event_without_a_kept_command_makes_the_pass_read_back() {
        let mut f = clean();
        f.command_seen();
        f.xadd_event(true, false, |_| true);
        assert!(f.begin_pass(true, true).commands.is_none());
    }

    #[test]
    fn a_refused_xadd_is_dropped_by_the_next_command() {
        let mut f = clean();
        f.command_seen();
        f.xadd_kept(Cmd(9));
        // XADD refused: no event; the next command comes.
        f.command_seen();
        xadd(&mut f, 1);
        assert_eq!(f.begin_pass(true, true).commands, Some(vec![Cmd(1)]));
    }

    #[test]
    fn foreign_changes_forget_the_group() {
        let mut f = clean();
        xadd(&mut f, 1);
        f.stream_changed();
        let t = f.begin_pass(true, true);
        assert!(t.known.is_none() && t.commands.is_none());

        let mut f = clean();
        xadd(&mut f, 1);
        f.forget();
        let t = f.begin_pass(true, true);
        assert!(t.known.is_none() && t.commands.is_none());
    }

    #[test]
    fn the_pass_own_stream_events_are_not_foreign() {
        let mut f = clean();
        let _ = f.begin_pass(true, true);
        f.stream_changed();
        f.end_pass(Some(known()));
        xadd(&mut f, 1);
        assert!(f.begin_pass(true, true).known.is_some());
    }

    #[test]
    fn exec_and_unwritable_servers_forget() {
        let mut f = clean();
        f.command_seen();
        f.xadd_kept(Cmd(1));
        f.xadd_event(true, true, |_| true);
        let t = f.begin_pass(true, true);
        assert!(t.known.is_none() && t.commands.is_none());

        let mut f = clean();
        f.xadd_event(false, false, |_| true);
        assert!(!f.knows_group());
    }

    #[test]
    fn a_full_pass_stops_keeping() {
        let mut f = clean();
        f.command_seen();
        assert_eq!(f.wants_xadd(0), Wanted::Full);
        f.xadd_not_kept();
        assert_eq!(f.wants_xadd(10), Wanted::No);
        f.xadd_event(true, false, |_| true);
        assert!(f.begin_pass(true, true).commands.is_none());
    }

    #[test]
    fn switched_off_nothing_is_trusted() {
        let mut f = clean();
        xadd(&mut f, 1);
        let t = f.begin_pass(false, true);
        assert!(t.known.is_none() && t.commands.is_none());

        let mut f = clean();
        xadd(&mut f, 1);
        let t = f.begin_pass(true, false);
        assert!(t.known.is_some() && t.commands.is_none());
    }

    #[test]
    fn an_unclean_pass_leaves_nothing_known() {
        let mut f = clean();
        xadd(&mut f, 1);
        let _ = f.begin_pass(true, true);
        f.end_pass(None);
        xadd(&mut f, 2);
        let t = f.begin_pass(true, true);
        assert!(t.known.is_none() && t.commands.is_none());
    }
}
