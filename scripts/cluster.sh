#!/usr/bin/env bash
# A local Redis Cluster with HeatBridge on every node, to try the cluster mode by hand:
# three masters on 7000-7002 and a replica of each on 7003-7005 (cluster bus on port+10000),
# data in target/cluster/<port>.
#
#   scripts/cluster.sh start   builds the module if needed, starts six nodes and creates the
#                              cluster (a fresh one each time), then prints how to use it
#   scripts/cluster.sh stop    stops the six nodes started here (by their pid files)
#   scripts/cluster.sh status  CLUSTER NODES and each node's heatbridge health
#
# Each node projects three tagged streams, one per master:
#   quantum:stream:{a}:harvest.heat.decision, ...{b}..., ...{c}...
# and serves /metrics on 8070+2i and /health on 8071+2i (node i = port 7000+i).
#
# Environment:
#   HEATBRIDGE_MODULE  use this built module instead of building one with cargo
#   REDIS_SERVER       the server binary (default redis-server; valkey-server works too)
#   REDIS_CLI          the client (default redis-cli, 7.0 or later)
set -euo pipefail
cd "$(dirname "$0")/.."

ports=(7000 7001 7002 7003 7004 7005)
data_dir="$PWD/target/cluster"
server="${REDIS_SERVER:-redis-server}"
cli="${REDIS_CLI:-redis-cli}"
streams="quantum:stream:{a}:harvest.heat.decision,quantum:stream:{b}:harvest.heat.decision,quantum:stream:{c}:harvest.heat.decision"

up() { "$cli" -p "$1" PING >/dev/null 2>&1; }

stop() {
  local port pidfile pid
  for port in "${ports[@]}"; do
    pidfile="$data_dir/$port/redis.pid"
    [ -f "$pidfile" ] || continue
    pid="$(cat "$pidfile")"
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid"
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      echo "cluster.sh: stopped $port (pid $pid)"
    fi
    rm -f "$pidfile"
  done
}

start() {
  local port i module
  for port in "${ports[@]}"; do
    if up "$port"; then
      echo "cluster.sh: something already answers on port $port (scripts/cluster.sh stop?)" >&2
      exit 1
    fi
  done
  if [ -n "${HEATBRIDGE_MODULE:-}" ]; then
    module="$(realpath "$HEATBRIDGE_MODULE")"
  else
    cargo build --release
    module="$PWD/target/release/libheatbridge.so"
  fi
  [ -f "$module" ] || { echo "cluster.sh: module $module not found" >&2; exit 1; }

  for i in "${!ports[@]}"; do
    port="${ports[$i]}"
    # A fresh cluster each time: an old nodes.conf would name nodes that no longer exist.
    rm -rf "${data_dir:?}/$port"
    mkdir -p "$data_dir/$port"
    "$server" --port "$port" --bind 127.0.0.1 --dir "$data_dir/$port" \
      --daemonize yes --pidfile "$data_dir/$port/redis.pid" --logfile "$data_dir/$port/server.log" \
      --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 5000 \
      --appendonly no --save "" \
      --loadmodule "$module" metrics-port $((8070 + 2 * i)) health-port $((8071 + 2 * i)) \
      stream-in "$streams"
  done
  for port in "${ports[@]}"; do
    for _ in $(seq 100); do up "$port" && break; sleep 0.1; done
    up "$port" || { echo "cluster.sh: node $port did not start; see $data_dir/$port/server.log" >&2; stop; exit 1; }
  done

  "$cli" --cluster create $(printf '127.0.0.1:%s ' "${ports[@]}") --cluster-replicas 1 --cluster-yes >"$data_dir/create.log" 2>&1 || {
    cat "$data_dir/create.log" >&2
    stop
    exit 1
  }
  for port in "${ports[@]}"; do
    for _ in $(seq 100); do
      "$cli" -p "$port" CLUSTER INFO | grep -q '^cluster_state:ok' && break
      sleep 0.1
    done
  done

  cat <<EOF
cluster.sh: 3 masters (7000-7002) and 3 replicas (7003-7005) with HeatBridge, data in $data_dir

Connect:   $cli -c -p 7000
Try:
  $cli -c -p 7000 XADD 'quantum:stream:{a}:harvest.heat.decision' '*' \\
      ts_epoch 1735689600 symbol BTCUSDT plan_id demo-1 heat_level hot heat_action PARTIAL_25 \\
      out_action PARTIAL_25 in_action FULL_CLOSE_PROPOSED heat_score 0.9 recommended_partial 0.25 \\
      reason demo inputs_age_sec 1 mode shadow debug_json '{}'
  $cli -c -p 7000 HEATBRIDGE.GET demo-1 STREAM 'quantum:stream:{a}:harvest.heat.decision'
  $cli -c -p 7000 HEATBRIDGE.LATEST BTCUSDT STREAM 'quantum:stream:{a}:harvest.heat.decision'
  $cli -c -p 7000 HGETALL 'quantum:harvest:heat:by_plan:{a}:demo-1'
Health of node 7000: curl -s 127.0.0.1:8071/health   (node 700i: port 8071+2i)
Stop:      scripts/cluster.sh stop
EOF
}

status() {
  local port
  "$cli" -p "${ports[0]}" CLUSTER NODES
  for port in "${ports[@]}"; do
    printf '%s: ' "$port"
    "$cli" -p "$port" HEATBRIDGE.HEALTH 2>&1 || true
  done
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: scripts/cluster.sh start|stop|status" >&2; exit 2 ;;
esac
