#!/usr/bin/env python3
"""Injects test heat decisions into the HeatBridge input stream and checks they are projected.

The seed's proof_p27_inject_heat_decision.py, for the module. Each decision is an XADD of the
13 seed fields; the helper then waits (at most --timeout seconds) for
quantum:harvest:heat:by_plan:{plan_id} to appear and exits 1 if it does not.

    scripts/inject.py --symbol BTCUSDT --heat_level warm \\
        --heat_action DOWNGRADE_FULL_TO_PARTIAL --out_action PARTIAL_50_PROPOSED \\
        --score 0.5 --partial 0.5
    scripts/inject.py --count 100          # a burst of 100 decisions, one pipeline

Without --plan_id, each decision gets a fresh plan_id (inject_<time>_<random>_<n>). With
--plan_id and --count N > 1, the plan_ids are <plan_id>_1 .. <plan_id>_N. Needs redis-py.
"""

import argparse
import json
import secrets
import sys
import time

try:
    import redis
except ImportError:
    sys.exit("inject.py needs redis-py: pip install redis (scripts/setup.sh installs it)")

STREAM = "quantum:stream:harvest.heat.decision"
BY_PLAN = "quantum:harvest:heat:by_plan:"


def parse_args(argv):
    p = argparse.ArgumentParser(
        description="Inject heat decisions into the HeatBridge input stream."
    )
    p.add_argument("--symbol", default="BTCUSDT", help="symbol (default BTCUSDT)")
    p.add_argument("--plan_id", default=None, help="plan ID (default: generated)")
    p.add_argument(
        "--heat_level", default="cold", help="cold | warm | hot | unknown (default cold)"
    )
    p.add_argument(
        "--heat_action",
        default="NONE",
        help="NONE | DOWNGRADE_FULL_TO_PARTIAL | HOLD_CLOSE (default NONE)",
    )
    p.add_argument(
        "--in_action",
        default="FULL_CLOSE_PROPOSED",
        help="input action (default FULL_CLOSE_PROPOSED)",
    )
    p.add_argument(
        "--out_action",
        default="FULL_CLOSE_PROPOSED",
        help="FULL_CLOSE_PROPOSED | PARTIAL_50_PROPOSED | PARTIAL_25_PROPOSED "
        "(default FULL_CLOSE_PROPOSED)",
    )
    p.add_argument("--score", type=float, default=0.2, help="heat_score 0.0-1.0 (default 0.2)")
    p.add_argument(
        "--partial",
        type=float,
        default=None,
        help="recommended_partial 0.0-1.0 (default: empty, the seed's null)",
    )
    p.add_argument("--reason", default="proof_inject", help="reason (default proof_inject)")
    p.add_argument("--host", default="localhost", help="Redis host (default localhost)")
    p.add_argument("--port", type=int, default=6379, help="Redis port (default 6379)")
    p.add_argument("--password", default=None, help="Redis password (AUTH), if any")
    p.add_argument("--stream", default=STREAM, help=f"input stream (default {STREAM})")
    p.add_argument("--count", type=int, default=1, help="decisions to inject (default 1)")
    p.add_argument(
        "--timeout",
        type=float,
        default=2.0,
        help="seconds to wait for the by_plan keys (default 2)",
    )
    p.add_argument("--quiet", action="store_true", help="print only the summary line")
    args = p.parse_args(argv)
    if args.count < 1:
        p.error("--count must be at least 1")
    return args


def plan_ids(args):
    if args.plan_id is not None and args.count == 1:
        return [args.plan_id]
    base = args.plan_id or f"inject_{int(time.time())}_{secrets.token_hex(3)}"
    return [f"{base}_{n}" for n in range(1, args.count + 1)]


def decision(args, plan_id):
    """The 13 seed fields, in the seed's order."""
    return {
        "ts_epoch": str(int(time.time())),
        "symbol": args.symbol,
        "plan_id": plan_id,
        "in_action": args.in_action,
        "out_action": args.out_action,
        "heat_level": args.heat_level,
        "heat_score": repr(args.score),
        "heat_action": args.heat_action,
        "recommended_partial": "" if args.partial is None else repr(args.partial),
        "reason": args.reason,
        "inputs_age_sec": "",
        "mode": "shadow",
        "debug_json": json.dumps({"source": "scripts/inject.py"}),
    }


def main(argv):
    args = parse_args(argv)
    r = redis.Redis(
        host=args.host,
        port=args.port,
        password=args.password,
        decode_responses=True,
        socket_timeout=10,
    )
    ids = plan_ids(args)
    try:
        pipe = r.pipeline(transaction=False)
        for pid in ids:
            pipe.xadd(args.stream, decision(args, pid))
        entry_ids = pipe.execute()
    except redis.RedisError as e:
        print(f"❌ XADD to {args.host}:{args.port} failed: {e}", file=sys.stderr)
        return 1

    missing = list(ids)
    deadline = time.monotonic() + args.timeout
    started = time.monotonic()
    try:
        while True:
            pipe = r.pipeline(transaction=False)
            for pid in missing:
                pipe.exists(BY_PLAN + pid)
            found = pipe.execute()
            missing = [pid for pid, ok in zip(missing, found) if not ok]
            if not missing or time.monotonic() >= deadline:
                break
            time.sleep(0.02)
    except redis.RedisError as e:
        print(f"❌ checking the by_plan keys failed: {e}", file=sys.stderr)
        return 1
    waited_ms = (time.monotonic() - started) * 1000

    if not args.quiet:
        for pid, eid in zip(ids, entry_ids):
            mark = "❌" if pid in missing else "✅"
            print(f"{mark} {eid} symbol={args.symbol} plan_id={pid} key={BY_PLAN}{pid}")
    ok = len(ids) - len(missing)
    if missing:
        print(
            f"❌ {ok}/{len(ids)} by_plan keys appeared within {args.timeout:g}s; "
            f"missing e.g. {BY_PLAN}{missing[0]} (is the heatbridge module loaded?)"
        )
        return 1
    print(f"✅ {ok}/{len(ids)} decisions injected and projected (checked after {waited_ms:.0f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
