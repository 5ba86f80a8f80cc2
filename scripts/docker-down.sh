#!/usr/bin/env bash
# Stops the dockerd that `scripts/docker-up.sh` started, by the PID it recorded.
# Does nothing when that script found an engine already running.
set -euo pipefail

pidfile=${KEN_DOCKERD_PIDFILE:-/tmp/ken-dockerd.pid}
# Seconds to wait after SIGTERM before SIGKILL. dockerd first stops the running
# containers, which takes up to its shutdown timeout of 15 s.
stop_timeout=30

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# True while PID is a running dockerd. Checking the name keeps a PID that the kernel
# has since given to another process from being signalled.
is_dockerd() {
  [ "$(cat "/proc/$1/comm" 2>/dev/null)" = dockerd ]
}

[ -f "$pidfile" ] || exit 0
pid=$(cat "$pidfile")

if is_dockerd "$pid"; then
  echo "ken: stopping dockerd (PID $pid)"
  if ! as_root kill -TERM "$pid" && is_dockerd "$pid"; then
    echo "ken: could not send SIGTERM to dockerd (PID $pid)" >&2
    exit 1
  fi
  for _ in $(seq 1 "$stop_timeout"); do
    is_dockerd "$pid" || break
    sleep 1
  done
  if is_dockerd "$pid"; then
    echo "ken: dockerd (PID $pid) still runs after $stop_timeout s; sending SIGKILL" >&2
    if ! as_root kill -KILL "$pid" && is_dockerd "$pid"; then
      echo "ken: could not send SIGKILL to dockerd (PID $pid)" >&2
      exit 1
    fi
  fi
else
  echo "ken: PID $pid from $pidfile is not a running dockerd; removing the PID file"
fi
rm -f "$pidfile" 2>/dev/null || as_root rm -f "$pidfile"
