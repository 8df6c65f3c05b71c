#!/usr/bin/env python3
"""Print each new heat decision of one symbol as HeatBridge projects it: no polling.

    watch_latest.py --symbol BTCUSDT [--host H] [--port P] [--db N] [--password PW]
                    [--tag T] [--cluster] [--enable-notifications] [--no-initial] [--ping S]

Copy it into a downstream service: it needs redis-py only (`pip install redis`). It
subscribes to the keyspace channel of quantum:harvest:heat:latest:<symbol> and, on each
`hset` event there (one per projected latest, docs/readers.md), reads the hash once
(HGETALL) and prints it as one JSON line, unless it holds the plan_id printed last (a REPLAY
or a repeated projection of the same decision). Values are decoded as UTF-8 with invalid
bytes replaced by U+FFFD (HeatBridge copies them byte for byte). Between events it waits on
the socket; after --ping seconds (30) without one it PINGs the subscription and takes the
link as dead when no answer comes within as long again (a half-open TCP connection gives
no error by itself; TCP keepalive is on too).

When the connection breaks (the server restarted, a network error, no answer to the PING)
it connects again (after 0.1 s, doubling up to 5 s), checks notify-keyspace-events again
(with --enable-notifications sets them again: a restart loses what CONFIG SET set unless it
is in the config file), resubscribes and reads latest once, so the decision current then is
printed (an intermediate one may be missed). redis-py's retries are turned off, so every
error reaches the watcher (redis-py would otherwise resubscribe silently, without that read
or that check). An error reply that may pass (BUSY: a script runs too long) is retried the
same way. A wrong or missing password, or a user whose ACL refuses a command the watcher
needs (NOPERM), is not retried: the watcher says so and exits 2, in cluster mode too.

The server needs keyspace events for hashes: `notify-keyspace-events` must contain K and h
(or K and A), e.g. `CONFIG SET notify-keyspace-events Kh`. Without them the watcher says so
and exits 2; --enable-notifications adds the two flags itself (it needs CONFIG SET).

What it prints is the symbol's latest decision each time it changes, not every decision:
when several decisions of the symbol are projected in one pass (a MULTI, a script, a
pipelined burst on Redis 7.0, catch-up, REPLAY) only the newest is written to latest, and
when two arrive faster than one HGETALL the first may already be superseded. A service that
must see every decision reads the stream (XREAD) instead.

--tag T: the stream carries the hash tag {T} (CONTRACT §11), so the key is
quantum:harvest:heat:latest:{T}:<symbol>. --cluster (needs --tag): keyspace events are
local to a node, so the watcher subscribes on the master that owns the key's slot (found
with CLUSTER SLOTS through any node given by --host/--port). When that connection breaks (a
failover, the node down) it finds the owner again and resubscribes. After a manual failover
(CLUSTER FAILOVER) the old owner stays up as a replica and still gets the key's events by
replication: the watcher's read there gets MOVED, and it resubscribes on the new owner too.
Since a slot moved by resharding gives no sign on the old owner's connection, it also checks
the owner every --recheck seconds (30) while no event arrives. After every resubscription it
reads latest once, as above.

--no-initial: do not print what latest holds at start (if anything); the next decision is
printed.
"""
import argparse
import json
import socket
import sys
import time

import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry

PREFIX = "quantum:harvest:heat:latest:"

# Errors after which the watcher finds the owner again and resubscribes: the node is down or
# unreachable; in a cluster, the node no longer serves the slot (MOVED: a manual failover made
# it a replica, which keeps its connections and still gets the replicated events; ASK: the
# key is being resharded away), the cluster is failing over (CLUSTERDOWN, TRYAGAIN), or no
# node could give the slot map (RedisClusterException).
RETRY = (redis.ConnectionError, redis.TimeoutError, redis.exceptions.AskError,
         redis.exceptions.ClusterDownError, redis.exceptions.TryAgainError,
         redis.exceptions.RedisClusterException)

# TCP keepalive on every connection (Linux names; elsewhere the system's defaults): a link
# whose peer vanished without a FIN/RST is reported after about 45 s of silence.
KEEPALIVE = {getattr(socket, name): v for name, v in
             (("TCP_KEEPIDLE", 30), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3))
             if hasattr(socket, name)}


def latest_key(symbol, tag):
    return f"{PREFIX}{{{tag}}}:{symbol}" if tag else f"{PREFIX}{symbol}"


def plain(v):
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else v


class Watcher:
    def __init__(self, args):
        self.args = args
        self.key = latest_key(args.symbol, args.tag)
        self.last_plan = None
        self.initial = True  # the next read of latest is the one at start
        self.backoff = 0.1  # before the next reconnection; reset once subscribed
        self.cluster = None  # cluster mode: the slot-map client, made in node()

    def node(self):
        """A client on the server (in a cluster, the master owning the key's slot)."""
        kw = dict(password=self.args.password, decode_responses=True, protocol=2,
                  # Values are copied byte for byte from the stream: not all are UTF-8.
                  encoding_errors="replace",
                  # No silent reconnect: redis-py would otherwise retry and resubscribe by
                  # itself, and run() would never read latest again nor check the flags.
                  retry=Retry(NoBackoff(), 0), retry_on_error=[],
                  socket_connect_timeout=5, socket_timeout=10,
                  socket_keepalive=True, socket_keepalive_options=KEEPALIVE)
        if not self.args.cluster:
            return redis.Redis(host=self.args.host, port=self.args.port, db=self.args.db, **kw)
        if self.cluster is None:
            # Made here, inside run()'s retries: an unreachable seed node is retried.
            self.cluster = RedisCluster(host=self.args.host, port=self.args.port,
                                        password=self.args.password, decode_responses=True)
        self.cluster.nodes_manager.initialize()
        n = self.cluster.get_node_from_key(self.key)
        return redis.Redis(host=n.host, port=n.port, **kw)

    def check_notifications(self, r):
        try:
            flags = r.config_get("notify-keyspace-events").get("notify-keyspace-events", "")
        except (redis.ConnectionError, redis.TimeoutError):
            raise  # the node is down: find the owner again (run)
        except redis.RedisError as e:
            print(f"watch_latest: cannot read notify-keyspace-events ({e}); make sure it "
                  "contains K and h", file=sys.stderr)
            return
        if "K" in flags and ("h" in flags or "A" in flags):
            return
        if not self.args.enable_notifications:
            print(f"watch_latest: notify-keyspace-events is {flags!r} on "
                     f"{r.connection_pool.connection_kwargs.get('port')}; it must contain K "
                     "and h: CONFIG SET notify-keyspace-events Kh (or add them to what is "
                     "set, or run with --enable-notifications)", file=sys.stderr)
            sys.exit(2)
        wanted = "".join(dict.fromkeys(flags + "Kh"))
        r.config_set("notify-keyspace-events", wanted)
        print(f"watch_latest: notify-keyspace-events set to {wanted!r}", file=sys.stderr)

    def show(self, r):
        """Reads latest once and prints it if it holds another decision."""
        h = r.hgetall(self.key)
        plan = h.get("plan_id")
        if self.initial:
            # The read at start: with --no-initial, what latest holds now (maybe nothing)
            # is only remembered, and the next decision is printed whatever it is.
            self.initial = False
            if self.args.no_initial:
                self.last_plan = plan
                return
        if not h or plan == self.last_plan:
            return
        self.last_plan = plan
        print(json.dumps(h, sort_keys=True), flush=True)

    def owner_moved(self, r):
        try:
            self.cluster.nodes_manager.initialize()
            n = self.cluster.get_node_from_key(self.key)
        except redis.RedisError:
            return True
        kw = r.connection_pool.connection_kwargs
        return (n.host, int(n.port)) != (kw.get("host"), int(kw.get("port")))

    def watch_once(self):
        """Subscribes and prints until the connection breaks or (cluster) the slot moves.

        Every connection error reaches run(), which calls this again: the flags are checked
        (and set again with --enable-notifications, e.g. after a restart lost them) and
        latest is read once after each subscription."""
        r = self.node()
        ps = r.pubsub(ignore_subscribe_messages=False)
        try:
            self.check_notifications(r)
            db = 0 if self.args.cluster else self.args.db
            ps.subscribe(f"__keyspace@{db}__:{self.key}")
            first = ps.get_message(timeout=10)
            if first is None or first["type"] != "subscribe":
                raise redis.ConnectionError(f"no subscription confirmation: {first!r}")
            # Read once after subscribing: a decision projected before the subscription took
            # effect (or while the connection was down) is not missed.
            self.show(r)
            self.backoff = 0.1
            kw = r.connection_pool.connection_kwargs
            print(f"watch_latest: watching {self.key} on {kw.get('host')}:{kw.get('port')}",
                  file=sys.stderr, flush=True)
            self.listen(r, ps)
        finally:
            ps.close()
            r.close()

    def listen(self, r, ps):
        """Prints on each event; returns when (cluster) the slot moved. After each silent
        wait (--ping seconds; cluster: --recheck if shorter) it sends a PING on the
        subscription; when the next wait passes without an answer the link is taken as
        dead (a half-open TCP connection gives no error by itself)."""
        wait = self.args.ping
        if self.args.cluster:
            wait = min(wait, self.args.recheck)
        pinged = False
        while True:
            m = ps.get_message(timeout=wait)
            if m is None:
                if pinged:
                    raise redis.TimeoutError(f"no answer to PING in {wait:g} s")
                if self.args.cluster and self.owner_moved(r):
                    print("watch_latest: the slot moved; resubscribing", file=sys.stderr)
                    return
                ps.ping()
                pinged = True
                continue
            pinged = False  # anything that arrives shows the link is alive
            if m["type"] == "message" and plain(m["data"]) == "hset":
                self.show(r)

    def run(self):
        while True:
            try:
                self.watch_once()
            except redis.AuthenticationError:
                raise  # a ConnectionError too, but retrying cannot help: main() exits 2
            except redis.exceptions.RedisClusterException as e:
                # redis-py reports a refused password while reading the slot map as this.
                if refused(e):
                    raise redis.AuthenticationError(str(e)) from e
                self.wait(e)
            except RETRY as e:
                self.wait(e)
            except redis.ResponseError as e:
                if refused(e):
                    raise redis.AuthenticationError(str(e)) from e
                self.wait(e)  # BUSY and other replies that may pass

    def wait(self, e):
        """Logs `e` and sleeps before the next attempt (0.1 s, doubling up to 5 s)."""
        print(f"watch_latest: {type(e).__name__}: {e}; reconnecting in "
              f"{self.backoff:.1f} s", file=sys.stderr, flush=True)
        time.sleep(self.backoff)
        self.backoff = min(self.backoff * 2, 5.0)


def refused(e):
    """Whether `e` (or what caused it) says the credentials or the ACL refuse the watcher."""
    while e is not None:
        if isinstance(e, (redis.AuthenticationError, redis.exceptions.NoPermissionError)):
            return True
        text = str(e)
        if text.startswith(("NOPERM", "WRONGPASS", "NOAUTH")) or \
                "invalid username-password pair" in text:
            return True
        e = e.__cause__ or e.__context__
    return False


def positive(text):
    v = float(text)
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, not {text}")
    return v


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--symbol", required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=6379)
    p.add_argument("--db", type=int, default=0, help="standalone only (heatbridge.db)")
    p.add_argument("--password", default=None)
    p.add_argument("--tag", default="", help="the stream's hash tag T, without braces")
    p.add_argument("--cluster", action="store_true",
                   help="Redis Cluster: subscribe on the master owning the key (needs --tag)")
    p.add_argument("--recheck", type=positive, default=30.0,
                   help="cluster: seconds without an event before checking the slot's owner "
                   "(--ping if shorter)")
    p.add_argument("--ping", type=positive, default=30.0,
                   help="seconds without an event before a PING checks the subscription; "
                   "no answer within as long again and it reconnects")
    p.add_argument("--enable-notifications", action="store_true",
                   help="add K and h to notify-keyspace-events if missing (CONFIG SET)")
    p.add_argument("--no-initial", action="store_true",
                   help="do not print the latest decision found at start")
    args = p.parse_args()
    if args.cluster and not args.tag:
        p.error("--cluster needs --tag: in a cluster every stream has a hash tag")
    try:
        Watcher(args).run()
    except redis.AuthenticationError as e:
        print(f"watch_latest: refused ({e}); check --password and the user's ACL",
              file=sys.stderr, flush=True)
        sys.exit(2)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
