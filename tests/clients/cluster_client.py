#!/usr/bin/env python3
"""Producers and readers through redis-py's RedisCluster, for tests/cluster.rs.

  cluster_client.py exec PORT
      Reads a JSON list of commands (each a list of strings) on stdin, runs each through
      RedisCluster (which routes it by its keys, following MOVED and ASK) and prints a JSON
      list with {"ok": reply} or {"err": text} per command.

  cluster_client.py produce PORT COUNT PREFIX STREAM...
      XADDs seed decisions round-robin over the streams until each stream has COUNT
      acknowledged entries (COUNT 0: until stdin is closed), plan_id PREFIX-<stream index>-<n>, symbol S<n % 5>. After each
      acknowledged XADD, WAIT 1 on the same node and connection tells whether a replica has
      it (skipped, -1, on a node that had no replica when first seen, e.g. a promoted one),
      and one line is printed and flushed:
          ack <stream index> <plan_id> <entry id> <node port> <replicas that confirmed>
      An XADD that fails (node down, CLUSTERDOWN during a failover, ...) is retried with the
      same plan_id after a short pause and printed as
          retry <stream index> <plan_id> <error>
      so a retried plan_id may be in the stream twice; dedupe keeps the first. Gives up
      (exit 2) when one XADD has kept failing for 30 s.
"""
import itertools
import json
import sys
import threading
import time

from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException, RedisError

from decisions import decision


def client(port):
    return RedisCluster(
        host="127.0.0.1",
        port=int(port),
        decode_responses=True,
        socket_timeout=5,
        socket_connect_timeout=2,
    )


def plain(v):
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, dict):
        return {plain(k): plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    return v


def run_exec(port):
    rc = client(port)
    out = []
    for cmd in json.load(sys.stdin):
        try:
            out.append({"ok": plain(rc.execute_command(*cmd))})
        except (RedisError, RedisClusterException) as e:
            out.append({"err": f"{type(e).__name__}: {e}"})
    print(json.dumps(out))


def run_produce(port, count, prefix, streams):
    rc = client(port)
    has_replica = {}
    stop = threading.Event()
    if count == 0:

        def watch_stdin():
            sys.stdin.read()
            stop.set()

        threading.Thread(target=watch_stdin, daemon=True).start()
    for n in itertools.count():
        if stop.is_set() or (count and n >= count):
            break
        for i, stream in enumerate(streams):
            plan_id = f"{prefix}-{i}-{n}"
            fields = decision(f"S{n % 5}", plan_id)
            failing_since = None
            while True:
                try:
                    entry_id = rc.xadd(stream, fields)
                    break
                except (RedisError, RedisClusterException) as e:
                    now = time.monotonic()
                    failing_since = failing_since or now
                    print(f"retry {i} {plan_id} {type(e).__name__}", flush=True)
                    if now - failing_since > 30:
                        sys.exit(2)
                    time.sleep(0.05)
            # WAIT counts the replicas that have this connection's last write: a
            # single-threaded RedisCluster hands the same pooled connection of the node
            # back, so it reaches the connection that ran the XADD.
            node = rc.get_node_from_key(stream)
            try:
                if node.name not in has_replica:
                    info = rc.execute_command("INFO", "replication", target_nodes=node)
                    has_replica[node.name] = info.get("connected_slaves", 0) > 0
                confirmed = -1
                if has_replica[node.name]:
                    confirmed = rc.execute_command("WAIT", 1, 1000, target_nodes=node)
            except (RedisError, RedisClusterException):
                confirmed = 0
            print(f"ack {i} {plan_id} {entry_id} {node.port} {confirmed}", flush=True)


def main():
    if len(sys.argv) >= 3 and sys.argv[1] == "exec":
        run_exec(sys.argv[2])
    elif len(sys.argv) >= 6 and sys.argv[1] == "produce":
        run_produce(sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5:])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
