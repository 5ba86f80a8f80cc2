#!/usr/bin/env bash
# Runs the workspace's tests against a local Docker engine.
#
# Usage: scripts/test.sh [ARGS...]   (ARGS go to `cargo test`, e.g. a test name filter)
#
# Starts a Docker engine unless one runs (scripts/docker-up.sh), runs
# `cargo test --workspace --all-features`, then builds the benchmarks without running
# them. A dockerd that this run started is stopped at the end, also on failure or
# Ctrl-C. An engine that was already running keeps running.
#
# The environment passes through to the tests: KEN_REQUIRE_DOCKER=1 makes the tests
# that need Docker fail, instead of being skipped, when the engine is unreachable.
# Exits with the exit code of `cargo test`, or of the benchmark build when the tests
# passed.
set -euo pipefail

cd "$(dirname "$0")/.."

pidfile=${KEN_DOCKERD_PIDFILE:-/tmp/ken-dockerd.pid}
# docker-up.sh writes a new PID to the PID file only when it starts dockerd itself.
dockerd_pid_before=$(cat "$pidfile" 2>/dev/null || true)

stop_engine_if_started() {
  local dockerd_pid_now
  dockerd_pid_now=$(cat "$pidfile" 2>/dev/null || true)
  if [ -n "$dockerd_pid_now" ] && [ "$dockerd_pid_now" != "$dockerd_pid_before" ]; then
    scripts/docker-down.sh
  fi
}
trap stop_engine_if_started EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Runs a command and prints how long it took. Returns the command's exit code.
timed() {
  local label=$1
  shift
  local start=$SECONDS
  local status=0
  "$@" || status=$?
  echo "ken: $label: exit code $status after $((SECONDS - start)) s"
  return "$status"
}

if ! command -v cargo >/dev/null 2>&1; then
  echo "ken: cargo not found; install a Rust toolchain (https://rustup.rs) and run again" >&2
  exit 1
fi

total_start=$SECONDS
echo "ken: KEN_REQUIRE_DOCKER=${KEN_REQUIRE_DOCKER:-unset}"
timed "Docker engine setup" scripts/docker-up.sh

# The Modal test server runs its sandboxes in network namespaces it makes with `ip`
# (iproute2) and joins them with util-linux's unshare, nsenter and setpriv.
if ! command -v ip >/dev/null 2>&1; then
  echo "ken: installing iproute2 for the Modal test server's network namespaces"
  sudo_if_needed=()
  [ "$(id -u)" -eq 0 ] || sudo_if_needed=(sudo)
  "${sudo_if_needed[@]}" apt-get update -qq
  "${sudo_if_needed[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 >/dev/null
fi

status=0
timed "cargo test" cargo test --workspace --all-features "$@" || status=$?
if [ "$status" -eq 0 ]; then
  timed "benchmark build" cargo build --workspace --all-features --benches || status=$?
fi
echo "ken: tests finished with exit code $status after $((SECONDS - total_start)) s"
exit "$status"
