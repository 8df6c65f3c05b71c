#!/usr/bin/env python3
"""Readers of HeatBridge's keys through redis-py, for tests/readers.rs. Each run plays one
scenario against a running server and prints one JSON object on stdout; the Rust test
asserts on it. Nothing here asserts timing: waits are bounded, with generous timeouts.

  readers_client.py events PORT SCENARIO [MODULE LOAD ARGS...]
      Subscribes (PSUBSCRIBE) to the keyspace channels of the derived keys,
      __keyspace@0__:quantum:harvest:heat:* and __keyspace@0__:quantum:dedupe:p27:*, plays
      the scenario, waits until the group has nothing unread or pending, then publishes a
      sentinel on a channel it also subscribes to: pub/sub delivers in order, so once the
      sentinel is read every event the scenario raised has been read too. Prints
          {"decisions": [{"symbol", "plan_id", "id", "extra": [field names beyond the
                          seed's], "status": "new"|"dup", "batch": MULTI size}, ...]
                          in stream order,
           "events": [[event, key], ...] in arrival order}
      SCENARIO: live (one XADD at a time), multi (MULTI/EXEC of several XADDs), replay
      (HEATBRIDGE.REPLAY over decisions already projected; only the replay's events are
      recorded) or catchup (a backlog XADDed before the module is loaded, then MODULE LOAD
      with the given arguments; the server must start without the module).

  readers_client.py reads PORT MODE SCENARIO COUNT [MODULE LOAD ARGS...]
      A reader with a client-side cache of latest:<symbol> (HGETALL), in MODE:
        builtin   redis-py's own cache (protocol=3, cache_config); Redis 7.4+ only
        resp3     CLIENT TRACKING ON on the reader's RESP3 connection, pushes handled by
                  redis-py, a dict as the cache
        redirect  CLIENT TRACKING ON REDIRECT <id> to a RESP2 connection subscribed to
                  __redis__:invalidate, a dict as the cache
      The writer is another connection. For each of COUNT rounds the scenario changes the
      symbol's decision (live: one XADD; multi: MULTI/EXEC of two XADDs; replay: the key is
      overwritten by a client with a bogus plan_id, read into the cache, then
      HEATBRIDGE.REPLAY FROM 0 puts the newest decision back; catchup: MODULE UNLOAD, XADDs,
      MODULE LOAD with the given arguments). Right after the writer's last command has
      returned, the reader reads through its cache once ("first read"), then makes one round
      trip (PING) on the connection that carries its invalidations and reads through the
      cache again; if the first read was not the expected decision it reads again until it
      is, for at most 10 s. Prints
          {"rounds": n, "stale_first_reads": n, "stale_after_round_trip": n, "never_fresh": n,
           "stale_examples": [[expected, got], ...], "reads": n, "server_hgetall": n,
           "hits": n}
      where server_hgetall is HGETALL's calls from INFO commandstats: fewer than reads
      means the cache served the others.
"""
import json
import sys
import time

import redis

from decisions import decision
from redis.cache import CacheConfig

STREAM = "quantum:stream:harvest.heat.decision"
GROUP = "heat_bridge"
LATEST = "quantum:harvest:heat:latest:"
SENTINEL = "readers-test-sentinel"


def wait_drained(w, timeout=30):
    """Until the group exists with nothing unread and nothing pending."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            groups = w.xinfo_groups(STREAM)
        except redis.ResponseError:
            groups = []
        for g in groups:
            if g["name"] == GROUP and g["pending"] == 0 and g.get("lag") == 0:
                return
        time.sleep(0.02)
    sys.exit("the group did not drain in time")


def module_load(w, args):
    w.execute_command("MODULE", "LOAD", *args)


class Events:
    """A keyspace-event subscriber on its own connection."""

    def __init__(self, port):
        self.r = redis.Redis(port=port, decode_responses=True)
        self.ps = self.r.pubsub()
        self.ps.psubscribe("__keyspace@0__:quantum:harvest:heat:*",
                           "__keyspace@0__:quantum:dedupe:p27:*")
        self.ps.subscribe(SENTINEL)
        # The three subscription confirmations: after them the subscriptions are in force.
        for _ in range(3):
            m = self.ps.get_message(timeout=10)
            if m is None or "subscribe" not in m["type"]:
                sys.exit(f"no subscription confirmation: {m!r}")

    def collect(self, w):
        """Every event up to a sentinel published now (after the caller waited for the
        projection to finish)."""
        w.publish(SENTINEL, "end")
        out = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            m = self.ps.get_message(timeout=1)
            if m is None:
                continue
            if m["type"] == "message" and m["channel"] == SENTINEL:
                return out
            if m["type"] == "pmessage":
                out.append([m["data"], m["channel"].split(":", 1)[1]])
        sys.exit("the sentinel never arrived")


def add(w, decisions, symbol, plan_id, **extra):
    entry_id = w.xadd(STREAM, decision(symbol, plan_id, **extra))
    decisions.append({"symbol": symbol, "plan_id": plan_id, "id": entry_id,
                      "extra": sorted(extra)})
    return entry_id


def mark_dups(decisions):
    """Marks each decision new or dup (a plan_id seen before in the dedupe window)."""
    seen = set()
    for d in decisions:
        d["status"] = "dup" if d["plan_id"] in seen else "new"
        seen.add(d["plan_id"])


def run_events(port, scenario, load_args):
    w = redis.Redis(port=port, decode_responses=True)
    decisions = []
    if scenario == "live":
        ev = Events(port)
        plan = [("A", {}), ("B", {}), ("A", {"note": "only in this one"}), ("C", {}),
                ("A", {}), ("B", {})]
        for i, (sym, extra) in enumerate(plan):
            add(w, decisions, sym, f"live-{i}", **extra)
        # A duplicate plan_id inside the dedupe window: not projected.
        add(w, decisions, "C", "live-3")
        add(w, decisions, "C", "live-7")
        mark_dups(decisions)
    elif scenario == "multi":
        ev = Events(port)
        for batch in ([("A", "m-0"), ("B", "m-1"), ("A", "m-2"), ("B", "m-1")],
                      [("C", "m-4"), ("A", "m-5")]):
            p = w.pipeline(transaction=True)
            for sym, pid in batch:
                p.xadd(STREAM, decision(sym, pid))
            for (sym, pid), entry_id in zip(batch, p.execute()):
                decisions.append({"symbol": sym, "plan_id": pid, "id": entry_id, "extra": [],
                                  "batch": len(batch)})
        mark_dups(decisions)
    elif scenario == "replay":
        for i, sym in enumerate(["A", "B", "A", "C", "B", "A"]):
            add(w, decisions, sym, f"r-{i}")
        mark_dups(decisions)
        wait_drained(w)
        ev = Events(port)
        done, last = w.execute_command("HEATBRIDGE.REPLAY", "FROM", "0", "COUNT", "100")
        if done != len(decisions):
            sys.exit(f"REPLAY re-projected {done}, expected {len(decisions)}")
    elif scenario == "catchup":
        syms = ["A", "B", "C"]
        for i in range(40):
            add(w, decisions, syms[(i * 7) % 3], f"c-{i}")
        mark_dups(decisions)
        ev = Events(port)
        module_load(w, load_args)
    else:
        sys.exit(f"no scenario {scenario}")
    wait_drained(w)
    print(json.dumps({"decisions": decisions, "events": ev.collect(w)}))


class Reader:
    """latest:<symbol> through a client-side cache."""

    def __init__(self, port, mode):
        self.mode = mode
        self.hits = 0
        self.reads = 0
        if mode == "builtin":
            self.r = redis.Redis(port=port, protocol=3, decode_responses=True,
                                 cache_config=CacheConfig())
            return
        self.cache = {}
        if mode == "resp3":
            self.r = redis.Redis(port=port, protocol=3, decode_responses=True)
            self.conn = self.r.connection_pool.get_connection()
            self.conn._parser.set_invalidation_push_handler(self._on_push)
            self.conn.send_command("CLIENT", "TRACKING", "ON")
            if self.conn.read_response() != "OK":
                sys.exit("CLIENT TRACKING ON refused")
        elif mode == "redirect":
            # The invalidation connection: a plain redis-py connection that learns its ID,
            # then subscribes.
            self.inv = redis.Redis(port=port, protocol=2, decode_responses=True) \
                .connection_pool.get_connection()
            self.inv.send_command("CLIENT", "ID")
            inv_id = self.inv.read_response()
            self.inv.send_command("SUBSCRIBE", "__redis__:invalidate")
            confirm = self.inv.read_response()
            if confirm[0] != "subscribe":
                sys.exit(f"no subscription to __redis__:invalidate: {confirm!r}")
            self.r = redis.Redis(port=port, protocol=2, decode_responses=True)
            self.conn = self.r.connection_pool.get_connection()
            self.conn.send_command("CLIENT", "TRACKING", "ON", "REDIRECT", inv_id)
            if self.conn.read_response() != "OK":
                sys.exit("CLIENT TRACKING ON REDIRECT refused")
        else:
            sys.exit(f"no mode {mode}")

    def _on_push(self, msg):
        keys = msg[1] if len(msg) > 1 else None
        if keys is None:  # a flush: everything is invalid
            self.cache.clear()
        else:
            for k in keys:
                self.cache.pop(k.decode() if isinstance(k, bytes) else k, None)

    def _drain_invalidations(self):
        if self.mode == "resp3":
            while self.conn.can_read(0):
                self.conn.read_response(push_request=True)
        else:
            while self.inv.can_read(0):
                m = self.inv.read_response()
                if m[0] == "message":
                    self._on_push(["invalidate", m[2]])

    def latest(self, symbol):
        key = LATEST + symbol
        self.reads += 1
        if self.mode == "builtin":
            return self.r.hgetall(key)
        self._drain_invalidations()
        if key in self.cache:
            self.hits += 1
            return self.cache[key]
        self.conn.send_command("HGETALL", key)
        value = self.conn.read_response()
        if isinstance(value, list):  # RESP2: a flat list
            value = dict(zip(value[::2], value[1::2]))
        self.cache[key] = value
        return value

    def sync(self):
        """A round trip on the connection that carries the invalidations: the server sends
        every invalidation it queued before this command ahead of the reply."""
        if self.mode == "builtin":
            self.r.ping()
        elif self.mode == "resp3":
            self.conn.send_command("PING")
            self.conn.read_response()
        else:
            self.inv.send_command("PING")
            while True:
                m = self.inv.read_response()
                if m[0] == "message":
                    self._on_push(["invalidate", m[2]])
                elif m[0] == "pong":
                    return

    def plan(self, symbol):
        return (self.latest(symbol) or {}).get("plan_id")


def run_reads(port, mode, scenario, count, load_args):
    w = redis.Redis(port=port, decode_responses=True)
    reader = Reader(port, mode)
    sym = "R"
    n = 0
    add(w, [], sym, "seed-0")
    wait_drained(w)
    out = {"rounds": count, "stale_first_reads": 0, "stale_after_round_trip": 0,
           "never_fresh": 0, "stale_examples": []}
    for i in range(count):
        # Fill the cache, then make sure a second read is served from it.
        reader.plan(sym)
        reader.plan(sym)
        if scenario == "live":
            expected = f"live-{i}"
            w.xadd(STREAM, decision(sym, expected))
        elif scenario == "multi":
            expected = f"multi-{i}-b"
            p = w.pipeline(transaction=True)
            p.xadd(STREAM, decision(sym, f"multi-{i}-a"))
            p.xadd(STREAM, decision(sym, expected))
            p.execute()
        elif scenario == "replay":
            expected = w.hget(LATEST + sym, "plan_id")
            w.hset(LATEST + sym, "plan_id", "bogus")
            if reader.plan(sym) != "bogus":
                # The client's own write must be seen too, after a round trip on the
                # invalidation connection: its reply can reach the writer a moment before
                # the invalidation reaches the reader's socket (an ordinary write, not
                # HeatBridge's).
                reader.sync()
                got = reader.plan(sym)
                if got != "bogus":
                    sys.exit(f"the reader missed the client's own overwrite: {got}")
            w.execute_command("HEATBRIDGE.REPLAY", "FROM", "0", "COUNT", "100000")
        elif scenario == "catchup":
            w.execute_command("MODULE", "UNLOAD", "heatbridge")
            for j in range(5):
                w.xadd(STREAM, decision(sym, f"catchup-{i}-{j}"))
            expected = f"catchup-{i}-4"
            module_load(w, load_args)
        else:
            sys.exit(f"no scenario {scenario}")
        n += 1
        got = reader.plan(sym)
        reader.sync()
        if reader.plan(sym) != expected:
            out["stale_after_round_trip"] += 1
        if got != expected:
            out["stale_first_reads"] += 1
            if len(out["stale_examples"]) < 5:
                out["stale_examples"].append([expected, got])
            deadline = time.monotonic() + 10
            while got != expected and time.monotonic() < deadline:
                time.sleep(0.005)
                got = reader.plan(sym)
            if got != expected:
                out["never_fresh"] += 1
        if scenario == "catchup":
            wait_drained(w)
    out["reads"] = reader.reads
    out["hits"] = reader.hits
    stats = w.info("commandstats").get("cmdstat_hgetall", {})
    out["server_hgetall"] = stats.get("calls", 0)
    print(json.dumps(out))


def main():
    a = sys.argv[1:]
    if len(a) >= 3 and a[0] == "events":
        run_events(int(a[1]), a[2], a[3:])
    elif len(a) >= 5 and a[0] == "reads":
        run_reads(int(a[1]), a[2], a[3], int(a[4]), a[5:])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
