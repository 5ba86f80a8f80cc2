#!/usr/bin/env bash
# Stops the dockerd that `scripts/docker-up.sh` started, by the PID it recorded.
# Does nothing when that script found an engine already running.
set -euo pipefail

pidfile=${KEN_DOCKERD_PIDFILE:-/tmp/ken-dockerd.pid}
[ -f "$pidfile" ] || exit 0
pid=$(cat "$pidfile")
if kill -0 "$pid" 2>/dev/null; then
  echo "ken: stopping dockerd (PID $pid)"
  kill -TERM "$pid"
  for _ in $(seq 1 30); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 1
  done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
fi
rm -f "$pidfile"
