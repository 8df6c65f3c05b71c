#!/usr/bin/env python3
"""Instructions per decision from profile.sh's callgrind reports: the inclusive cost of the
command (or of the module's drain) divided by the number of decisions.

    profile_summary.py <profile dir> <decisions>
"""
import os
import re
import sys

out, n = sys.argv[1], int(sys.argv[2])
LINE = re.compile(r"\s*([\d,]+) \(\s*[\d.]+%\)\s+(?:[^:\s]*:)?(\S+)")


def incl(design, *names):
    """Largest inclusive cost of a function called one of `names` (exact), 0 if absent."""
    path = os.path.join(out, design, "inclusive.txt")
    best = 0
    if os.path.exists(path):
        for line in open(path):
            m = LINE.match(line)
            if m and m.group(2) in names:
                best = max(best, int(m.group(1).replace(",", "")))
    return best


def either(*names):
    """The cost under the first name the profile has (the module's functions moved between
    files as it grew: the current name first, then the older ones)."""
    return max(incl("heatbridge", n) for n in names)


rows = [
    ("raw XADD (xaddCommand)", incl("raw", "xaddCommand")),
    ("Lua (fcallCommand, XADD included)", incl("lua", "fcallCommand")),
    ("HeatBridge: the client's XADD", incl("heatbridge", "xaddCommand")),
    ("HeatBridge: drain (all projection)", either("heatbridge::projector::drain::run", "heatbridge::drain::run", "heatbridge::engine::drain")),
    ("  project (parse, dedupe, by_plan)", either("heatbridge::projector::apply::project", "heatbridge::apply::project", "heatbridge::engine::project")),
    ("  write_latest (latest, pointer)", either("heatbridge::projector::apply::write_latest", "heatbridge::apply::write_latest", "heatbridge::engine::write_latest")),
    ("    replace_hash (by_plan+latest)", either("heatbridge::projector::writer::Writer::replace_hash", "heatbridge::writer::Writer::replace_hash", "heatbridge::apply::Writer::replace_hash")),
    ("    set_string (dedupe+pointer)", either("heatbridge::projector::writer::Writer::set_string", "heatbridge::writer::Writer::set_string", "heatbridge::apply::Writer::set_string")),
    ("    decision::parse", either("heatbridge::core::decision::parse", "heatbridge::decision::parse")),
    ("  read_after (entries read back)", either("heatbridge::projector::read::read_after", "heatbridge::read::read_after", "heatbridge::engine::read_after")),
    ("  IDs read (entries from commands)", incl("heatbridge", "VM_StreamIteratorNextID", "RM_StreamIteratorNextID")),
    ("  command filter (all commands)", either("heatbridge::server::events::command_filter", "heatbridge::events::command_filter")),
    ("  keyspace event (XADDs tied)", either("heatbridge::server::events::on_keyspace_event", "heatbridge::events::on_keyspace_event")),
    ("  read_group (XINFO GROUPS)", either("heatbridge::projector::group::read_group", "heatbridge::group::read_group", "heatbridge::engine::read_group")),
    ("  RM_Call, all (incl. command)", incl("heatbridge", "RM_Call", "VM_Call")),
    ("  hsetCommand, all", incl("heatbridge", "hsetCommand")),
    ("HeatBridge: housekeeping refresh", either("heatbridge::projector::registry::refresh", "heatbridge::projector::refresh", "heatbridge::engine::refresh")),
]
print(f"instructions per decision (callgrind Ir / {n}):")
for name, v in rows:
    print(f"  {name:38s} {v / n:10.0f}")
