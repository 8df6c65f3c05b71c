#!/usr/bin/env bash
# The one gate: installs what is missing, then formatting, clippy, the release module and
# its fault-injection twin, unit tests and every integration test on Redis 7.0, Redis 8.2
# and Valkey 8.1, and the projection suites again with the fast path off and per turn.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
cargo fmt --check
cargo clippy --release --all-targets -- -D warnings
cargo build --release --locked
cargo build --release --locked --features fault-injection --target-dir target/fault
cargo test --release --locked -- --test-threads="${TEST_THREADS:-2}"
# The projection suites again with the fast path off (heatbridge.fast-path no): every pass
# then reads the group and its entries back, and must project exactly the same.
HEATBRIDGE_FAST_PATH=no cargo test --release --test projection --test durability --test group \
  --test readers \
  --test replication --test commands --test bad_input --test reliability \
  -- --test-threads="${TEST_THREADS:-2}"
# The same suites, and the cluster, chaos and model checks, with XADDs projected once per
# event-loop turn (heatbridge.project-at turn): the same keys, visible once a reply is read.
HEATBRIDGE_PROJECT_AT=turn cargo test --release --test projection --test durability \
  --test group --test readers --test replication --test capture --test streams \
  --test catchup --test faults --test turn --test cluster --test chaos --test model \
  -- --test-threads="${TEST_THREADS:-2}"
