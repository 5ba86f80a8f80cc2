#!/usr/bin/env bash
# Installs and starts a Docker engine when none answers, then makes sure the local
# `debian:bookworm-slim` base image exists. Idempotent: each step is skipped when its
# result is already there.
#
# When this script starts dockerd itself, it writes the daemon's PID to
# ${KEN_DOCKERD_PIDFILE:-/tmp/ken-dockerd.pid} so that `scripts/docker-down.sh` stops
# exactly that process and nothing else.
set -euo pipefail

pidfile=${KEN_DOCKERD_PIDFILE:-/tmp/ken-dockerd.pid}
logfile=${KEN_DOCKERD_LOG:-/tmp/ken-dockerd.log}

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

engine_answers() {
  docker info >/dev/null 2>&1
}

install_engine() {
  if command -v dockerd >/dev/null 2>&1; then
    return
  fi
  echo "ken: installing the Docker engine (Debian package docker.io)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
}

start_engine() {
  echo "ken: starting dockerd (log: $logfile)"
  as_root sh -c "nohup dockerd >'$logfile' 2>&1 & echo \$! >'$pidfile'"
  for _ in $(seq 1 60); do
    if engine_answers; then
      echo "ken: Docker engine is up (dockerd PID $(cat "$pidfile"))"
      return
    fi
    sleep 1
  done
  echo "ken: dockerd did not answer within 60 s; last lines of $logfile:" >&2
  tail -n 20 "$logfile" >&2 || true
  exit 1
}

build_base_image() {
  if docker image inspect debian:bookworm-slim >/dev/null 2>&1; then
    return
  fi
  if docker pull -q debian:bookworm-slim >/dev/null 2>&1; then
    return
  fi
  echo "ken: no registry reachable; building debian:bookworm-slim from Debian's packages (about a minute)"
  if ! command -v debootstrap >/dev/null 2>&1; then
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
  fi
  rootfs=$(mktemp -d /tmp/ken-bookworm.XXXXXX)
  trap 'as_root rm -rf "$rootfs"' RETURN
  as_root debootstrap --variant=minbase bookworm "$rootfs" http://deb.debian.org/debian >/dev/null
  as_root tar -C "$rootfs" -c . | docker import - debian:bookworm-slim >/dev/null
  echo "ken: imported debian:bookworm-slim"
}

if ! engine_answers; then
  install_engine
  start_engine
fi
build_base_image
