#!/usr/bin/env python3
"""Server CPU time per decision: what the server itself spends, user plus system time from
/proc/<pid>/stat, for the same load sent with redis-cli --pipe. Wall-clock rates on a shared
2-core machine swing by 10% from round to round; the server's own CPU time per decision
moves by about 2%, so it tells small changes apart where bench.py's rates cannot.

    scripts/bench/cpu.py [redis|redis8|valkey] ROW...

A ROW is `pipeline` (the client's 8 commands per decision, no module), `lua` (FCALL of
scripts/bench/heatbench.lua), or the path of a HeatBridge build (plain XADDs, the module
loaded with its defaults), optionally followed by module arguments after commas, e.g.
`target/release/libheatbridge.so,project-at,turn`. The rows run interleaved, CPU_ROUNDS times (3); each line gives
one run. BENCH_N sets the load (50000). Every server is killed at exit.

The measure ends when the pipe is done, and so is the projection: a post-notification job
(Redis 8.2 and Valkey 8.1, `project-at command`) or the end of the event-loop turn (Redis
7.0, and `project-at turn`) runs before the XADD's reply leaves.

CPU_SEQUENTIAL=1 sends the XADDs one at a time instead, each after the previous reply (a
producer that waits for every reply; HeatBridge rows only, CPU_SEQUENTIAL_N of them, 20000):
server CPU per XADD and XADDs per second, for comparing the modes under that producer.
"""

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("BENCH_N", "50000")
from load import (KINDS, STREAM, fields, free_port, gen_lua, gen_pipeline, gen_xadd,  # noqa: E402
                  plan_id, resp, server_binary)

N = int(os.environ["BENCH_N"])
SEQUENTIAL = os.environ.get("CPU_SEQUENTIAL") == "1"
SEQUENTIAL_N = int(os.environ.get("CPU_SEQUENTIAL_N", "20000"))
ROUNDS = max(1, int(os.environ.get("CPU_ROUNDS", "3")))
LUA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "heatbench.lua")


def cpu_seconds(pid):
    """User plus system CPU time of process `pid`, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cli(port, *args, stdin=None):
    return subprocess.run(["redis-cli", "-p", str(port), *args], stdin=stdin,
                          capture_output=True, check=False).stdout.strip()


def send_one_at_a_time(port, n):
    """XADDs `n` decisions on one connection, each after the previous reply."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        f = sock.makefile("rb")
        for i in range(n):
            sock.sendall(resp([b"XADD", STREAM, b"*"] + fields(i, plan_id(i))))
            head = f.readline()
            if head.startswith(b"$"):
                f.read(int(head[1:]) + 2)
            elif not head.startswith(b"+"):
                sys.exit(f"XADD refused: {head!r}")


def run(kind, row, tmp):
    """One fresh server, one load: (server CPU us per decision, decisions/s, DBSIZE)."""
    module, *module_args = row.split(",")
    load = os.path.join(tmp, f"{os.path.basename(module)}.resp")
    if row == "pipeline":
        gen_pipeline(load, N)  # PXATs must be ahead of the clock: made per run
    elif not os.path.exists(load):
        (gen_lua if row == "lua" else gen_xadd)(load, N)
    port = free_port()
    args = [server_binary(kind), "--port", str(port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--dir", tempfile.mkdtemp(dir=tmp)]
    if row not in ("pipeline", "lua"):
        args += ["--loadmodule", module, "metrics-port", "0", "health-port", "0", *module_args]
    server = subprocess.Popen(args, stdout=subprocess.DEVNULL)
    try:
        deadline = time.time() + 10
        while cli(port, "PING") != b"PONG":
            if time.time() > deadline or server.poll() is not None:
                sys.exit(f"{kind}: the server did not start: {' '.join(args)}")
            time.sleep(0.05)
        if row == "lua":
            with open(LUA, "rb") as f:
                cli(port, "-x", "FUNCTION", "LOAD", "REPLACE", stdin=f)
        before, start = cpu_seconds(server.pid), time.time()
        if SEQUENTIAL:
            send_one_at_a_time(port, SEQUENTIAL_N)
        else:
            with open(load, "rb") as f:
                subprocess.run(["redis-cli", "-p", str(port), "--pipe"], stdin=f,
                               capture_output=True, check=False)
        wall, cpu = time.time() - start, cpu_seconds(server.pid) - before
        n = SEQUENTIAL_N if SEQUENTIAL else N
        return cpu * 1e6 / n, n / wall, cli(port, "DBSIZE").decode()
    finally:
        server.kill()
        server.wait()


def main():
    if len(sys.argv) < 3 or sys.argv[1] not in KINDS:
        sys.exit(__doc__)
    # SIGTERM unwinds like an exception, so the server and the temp dir go too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    kind, rows = sys.argv[1], sys.argv[2:]
    if SEQUENTIAL and any(r in ("pipeline", "lua") for r in rows):
        sys.exit("CPU_SEQUENTIAL=1 compares HeatBridge rows only")
    with tempfile.TemporaryDirectory(prefix="heatcpu-") as tmp:
        for r in range(ROUNDS):
            for row in rows:
                us, rate, size = run(kind, row, tmp)
                name = ",".join([os.path.basename(row.split(",")[0])] + row.split(",")[1:])
                unit = "XADD" if SEQUENTIAL else "decision"
                print(f"{kind} round {r + 1} {name:<34} server CPU "
                      f"{us:6.2f} us/{unit}  {rate:9,.0f}/s  DBSIZE {size}", flush=True)


if __name__ == "__main__":
    main()
