#!/usr/bin/env bash
# The one gate: installs what is missing, then formatting, clippy, the release module and
# its fault-injection twin, unit tests and every integration test on Redis 7.0, Redis 8.2
# and Valkey 8.1.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
cargo fmt --check
cargo clippy --release --all-targets -- -D warnings
cargo build --release
cargo build --release --features fault-injection --target-dir target/fault
cargo test --release -- --test-threads="${TEST_THREADS:-2}"
