#!/usr/bin/env bash
# Installs what is missing, builds the module and runs redis-server in the foreground with
# HeatBridge loaded from redis.conf.example: Redis on 6379, /metrics on 8070 and /health on
# 8071 (127.0.0.1).
#
# The example's loadmodule line names the deployment path; this script runs a copy of it,
# written to the data directory, whose loadmodule line names the module built here.
#
# Extra arguments go to redis-server, e.g. scripts/run.sh --port 6380 --heatbridge.batch 50.
# Environment:
#   HEATBRIDGE_DATA_DIR  Redis dir (AOF, RDB, the generated redis.conf); default target/run
#   HEATBRIDGE_MODULE    use this built module instead of building one with cargo
#   REDIS_SERVER         the server binary (default redis-server; valkey-server works too)
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
if [ -n "${HEATBRIDGE_MODULE:-}" ]; then
  module="$(realpath "$HEATBRIDGE_MODULE")"
else
  cargo build --release
  module="$PWD/target/release/libheatbridge.so"
fi
[ -f "$module" ] || { echo "run.sh: module $module not found" >&2; exit 1; }

data_dir="${HEATBRIDGE_DATA_DIR:-$PWD/target/run}"
mkdir -p "$data_dir"
data_dir="$(realpath "$data_dir")"
conf="$data_dir/redis.conf"

# Same file, with the built module in place of the deployment path (quoted, so that a path
# with spaces survives Redis's config parser).
MODULE="$module" awk '
  /^loadmodule[ \t]/ { print "loadmodule \"" ENVIRON["MODULE"] "\""; n++; next }
  { print }
  END { exit n == 1 ? 0 : 1 }
' redis.conf.example >"$conf" || {
  echo "run.sh: redis.conf.example must have exactly one loadmodule line" >&2
  exit 1
}

echo "run.sh: redis-server $conf (dir $data_dir)"
exec "${REDIS_SERVER:-redis-server}" "$conf" --dir "$data_dir" "$@"
