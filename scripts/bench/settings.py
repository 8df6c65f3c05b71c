"""The benchmark's settings, read once from the environment when first imported.

Every knob is described in bench.py's docstring (the entry point); this module only parses
them and names the rows, so that load.py, rows.py and report.py agree on one set of values."""

import os

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

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
# The per-turn projection (heatbridge.project-at turn; issue 21), on by default. On Redis 7.0
# it is the same as "heatbridge", which is per turn there.
if os.environ.get("BENCH_TURN", "1") not in ("", "0"):
    HEATBRIDGES["heatbridge-turn"] = (HB_SO, HB_ARGS + ["project-at", "turn"])
# Rows over three tagged streams (CONTRACT §11), the load split by symbol: one standalone server
# that lists all three, and a 3-master cluster where each master owns one of them.
MULTI = ["standalone-3", "cluster"]
DESIGNS = ["raw", "pipeline", "lua"] + list(HEATBRIDGES) + MULTI
ROWS = os.environ.get("BENCH_ROWS", ",".join(DESIGNS)).split(",")
# Every server and helper process the benchmark starts writes its pid here (scripts/bench.sh
# kills them all at exit).
PIDFILE = os.environ.get("BENCH_PIDFILE")

# The readers rows (issue 13).
READERS = os.environ.get("BENCH_READERS", "")
READERS_N = int(os.environ.get("BENCH_READERS_N", "50000"))
READERS_SECONDS = float(os.environ.get("BENCH_READERS_SECONDS", "2"))


def catchup_label(step):
    budget, extra = step
    label = f"{budget / 1000:g} ms" if budget else "default"
    return label + (f" + {' '.join(extra)}" if extra else "")


def catchup_args(step):
    """The module arguments of a catch-up budget: `catchup-step-us` (none for "default") and
    the item's extra arguments."""
    budget, extra = step
    return (["catchup-step-us", str(budget)] if budget else []) + list(extra)
