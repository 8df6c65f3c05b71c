"""The measured rows: each design's throughput row on a fresh server (raw XADD, the pipelined
client, Lua, the HeatBridge rows, standalone-3 and the cluster), the catch-up curve, the
scraper test and the readers rows. Each returns a dict for the JSON results and report.py."""

import os
import statistics
import subprocess
import time

import redis

from load import (LATEST, STREAM, STREAMS3, SYMBOLS, Cluster, Server, fields, free_port,
                  gen_pipeline, log, pipe, pipe_parallel, wait_projected)
from probes import Helper, pct, ping_stats, probe_visibility
from settings import (CATCHUP_STEPS, HB_ARGS, HB_SO, HEATBRIDGES, HERE, MULTI, N,
                      PING_INTERVAL_US, PROBE_N, READERS_N, READERS_SECONDS, catchup_args,
                      catchup_label)


# What the module reports about itself.

FAST_PATH_FIELDS = ("entries_from_commands", "entries_from_commands_total",
                    "entries_from_commands_mismatch_total", "post_notification_jobs")


def fast_path(srv):
    """The module's account of its fast path (INFO heatbridge); fields an older build does
    not have are left out."""
    try:
        info = srv.r.info("heatbridge")
    except redis.exceptions.ResponseError:
        return {}
    return {k: info["heatbridge_" + k] for k in FAST_PATH_FIELDS if "heatbridge_" + k in info}


def fast_path_sum(nodes):
    """fast_path over several nodes: the state of the first, the counts summed."""
    per = [fast_path(n) for n in nodes]
    out = dict(per[0]) if per else {}
    for k in ("entries_from_commands_total", "entries_from_commands_mismatch_total"):
        if all(k in fp for fp in per):
            out[k] = sum(int(fp[k]) for fp in per)
    return out


def fmt_fast(fp, n):
    if not fp or "entries_from_commands" not in fp:
        return "n/a"
    out = str(fp["entries_from_commands"])
    if "entries_from_commands_total" in fp:
        out += f" ({int(fp['entries_from_commands_total']):,} of {n:,} taken"
        miss = int(fp.get("entries_from_commands_mismatch_total") or 0)
        out += f", {miss:,} mismatched)" if miss else ")"
    return out


def parse_metrics(srv):
    text = srv.r.execute_command("HEATBRIDGE.METRICS").decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            k, _, v = line.rpartition(" ")
            out[k] = float(v)
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


# The throughput rows.

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


# The catch-up curve (issue 14).

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


# The scraper test: GET latency with /metrics scraped beside it.

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


# The readers rows (issue 13).

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
