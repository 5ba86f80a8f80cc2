#!/usr/bin/env bash
# Starts the task-board demo (examples/demo-app) in a Ken sandbox and prints its URL.
#
# Usage: scripts/demo.sh [NAME]
#
# Starts a Docker engine unless one runs (scripts/docker-up.sh), builds the `ken`
# CLI, then runs `ken new` with the demo's manifest. The sandbox is named NAME
# (default: demo). When a sandbox of that name exists already, the script prints its
# URLs instead of creating another one.
set -euo pipefail

cd "$(dirname "$0")/.."

name=${1:-demo}
manifest=examples/demo-app/ken.toml
ken=target/release/ken

scripts/docker-up.sh

echo "ken: building the ken CLI (cargo build --release -p ken-cli)"
cargo build --release -p ken-cli

# The sandbox gets a clone of the committed history, so local edits are not in it.
if git rev-parse --git-dir >/dev/null 2>&1 &&
  ! git diff --quiet HEAD -- examples/demo-app 2>/dev/null; then
  echo "ken: note: examples/demo-app has uncommitted changes; the sandbox gets the committed version"
fi

# `ken urls` exits with 3 when no sandbox has that name.
urls_status=0
urls_error=$("$ken" urls "$name" 2>&1 >/dev/null) || urls_status=$?
case $urls_status in
  0)
    echo "ken: a sandbox named '$name' exists already; showing its URLs instead of creating another one"
    ;;
  3)
    "$ken" new --name "$name" --manifest "$manifest"
    ;;
  *)
    echo "$urls_error" >&2
    echo "ken: failed to check for a sandbox named '$name' (ken urls exited with $urls_status)" >&2
    exit "$urls_status"
    ;;
esac

echo
echo "The task board runs in the sandbox '$name'. Open it in a browser:"
"$ken" urls "$name"
cat <<HINTS

Next:
  list the sandboxes:       $ken list
  follow the app's log:     $ken logs $name web --follow
  query the database:       $ken exec $name -- psql -h 127.0.0.1 -U postgres -d demo -c 'SELECT count(*) FROM tasks'
  remove the sandbox:       $ken rm $name
  then stop the engine:     scripts/docker-down.sh (stops dockerd only if scripts/docker-up.sh started it)
HINTS
