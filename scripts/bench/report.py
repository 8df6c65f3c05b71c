"""The report: the rounds merged into one row per design, the main table, the round-by-round
ratios, the notes on the rows over three streams, the catch-up curve, the scraper and the
readers tables. Everything here goes to stdout; progress goes to stderr (load.log)."""

import statistics
import textwrap

from rows import fmt_fast
from settings import (HEATBRIDGES, MULTI, PING_INTERVAL_US, READERS_N, READERS_SECONDS,
                      ROUNDS, catchup_args)


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


def report_readers(rows):
    """The readers table (issue 13), one line per server."""
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
