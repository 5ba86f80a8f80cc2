#!/usr/bin/env bash
# Installs and starts a Docker engine unless `docker info` reaches one, then makes
# sure that the local `debian:bookworm-slim` base image exists. Idempotent: each step
# is skipped when its result is already there, and concurrent runs wait for each other.
#
# When this script starts dockerd itself, it writes the daemon's PID to
# ${KEN_DOCKERD_PIDFILE:-/tmp/ken-dockerd.pid} so that `scripts/docker-down.sh` stops
# exactly that process and nothing else.
set -euo pipefail

pidfile=${KEN_DOCKERD_PIDFILE:-/tmp/ken-dockerd.pid}
logfile=${KEN_DOCKERD_LOG:-/tmp/ken-dockerd.log}
lockfile=${KEN_DOCKER_UP_LOCK:-/tmp/ken-docker-up.lock}
# Seconds to wait until a dockerd started here accepts API requests.
start_timeout=60

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# Prints `up`, `denied` (an engine runs, but this user may not use its socket) or `down`.
engine_state() {
  local error
  if error=$(docker info 2>&1 >/dev/null); then
    echo up
  elif grep -qi 'permission denied' <<<"$error"; then
    echo denied
  else
    echo down
  fi
}

fail_socket_denied() {
  local user
  user=$(id -un)
  if [ "$(id -u)" -eq 0 ]; then
    echo "ken: the Docker engine denied root access to its socket; check DOCKER_HOST and the socket's permissions." >&2
  else
    echo "ken: a Docker engine runs, but user $user may not use its socket (/var/run/docker.sock)." >&2
    echo "ken: run as root, or add the user to the docker group (sudo usermod -aG docker $user) and log in again." >&2
  fi
  exit 1
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
  # setsid puts dockerd in its own session, so a Ctrl-C meant for this script or
  # the command that ran it does not reach the daemon. `9>&-` keeps the daemon from
  # inheriting the lock below, which would block every later run.
  as_root sh -c "setsid nohup dockerd >'$logfile' 2>&1 </dev/null & echo \$! >'$pidfile'" 9>&-
  local pid
  pid=$(cat "$pidfile")

  for _ in $(seq 1 "$start_timeout"); do
    case $(engine_state) in
      up)
        echo "ken: Docker engine is up (dockerd PID $pid)"
        return
        ;;
      denied)
        fail_socket_denied
        ;;
    esac
    if [ ! -d "/proc/$pid" ]; then
      echo "ken: dockerd (PID $pid) exited during startup; last lines of $logfile:" >&2
      tail -n 20 "$logfile" >&2 || true
      rm -f "$pidfile" 2>/dev/null || as_root rm -f "$pidfile"
      exit 1
    fi
    sleep 1
  done
  echo "ken: dockerd (PID $pid) did not answer within $start_timeout s; it keeps running," \
    "scripts/docker-down.sh stops it. Last lines of $logfile:" >&2
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
  # An EXIT trap, so that the 200 MB root file system goes away when debootstrap
  # or the import fails too.
  trap 'as_root rm -rf "$rootfs"' EXIT
  as_root debootstrap --variant=minbase bookworm "$rootfs" http://deb.debian.org/debian >/dev/null
  as_root tar -C "$rootfs" -c . | docker import - debian:bookworm-slim >/dev/null
  echo "ken: imported debian:bookworm-slim"
}

# Two runs at once would both find no engine and start two daemons. The lock is
# skipped when flock is missing or the lock file belongs to another user.
if command -v flock >/dev/null 2>&1 && (: >>"$lockfile") 2>/dev/null; then
  exec 9>>"$lockfile"
  flock 9
fi

case $(engine_state) in
  denied)
    fail_socket_denied
    ;;
  down)
    install_engine
    start_engine
    ;;
esac
build_base_image
