#!/usr/bin/env bash
# Installs what is missing, builds the module and runs redis-server in the foreground with
# HeatBridge loaded: Redis on 6379, /metrics on 8070 and /health on 8071 (127.0.0.1).
# Extra arguments go to redis-server, e.g. scripts/run.sh --port 6380.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
cargo build --release
exec redis-server redis.conf.example \
  --loadmodule "$PWD/target/release/libheatbridge.so" \
  --dir "${HEATBRIDGE_DATA_DIR:-/tmp}" \
  "$@"
