"""The instruments beside the load: the visibility probe (how soon a decision's key is readable
after its write returns), and the helper processes that run next to a server while a row is
measured (the PING probe of the catch-up curve, the /metrics scraper and its control HTTP
server). A helper runs this file as a separate process (`probes.py _ping|_scrape|_dummy_http`),
so that its own work is not charged to the benchmark's process."""

import json
import os
import subprocess
import sys
import tempfile
import time

import redis

from load import BY_PLAN, STREAM, SYMBOLS, fields, lua_cmd, pipeline_cmds, plan_id
from settings import PIDFILE


# The visibility probe.

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


# Helper processes, each stopped through a file.

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


def main():
    mode, args = sys.argv[1], sys.argv[2:]
    return {"_ping": ping_probe_main, "_scrape": scraper_main,
            "_dummy_http": dummy_http_main}[mode](*args)


if __name__ == "__main__":
    main()
