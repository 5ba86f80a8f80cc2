#!/usr/bin/env bash
# The baseline for the launch benchmark: the demo project's launch done by hand with
# the docker CLI, one step after the other, as a team would script it without Ken.
#
# Usage: launch-demo.sh IMAGE NETWORK REPO
# Starts a container from IMAGE on NETWORK, clones the committed history of the git
# repository REPO into it, starts Postgres, creates the schema, starts the web app,
# seeds the database, waits until the app responds on its published port, then removes
# the container.
set -euo pipefail

image=$1
network=$2
repo=$3
app=/workspace/repo/examples/demo-app
env=(-e DATABASE_URL=postgresql://postgres@127.0.0.1:5432/demo)

bundle=$(mktemp /tmp/ken-bench-bundle.XXXXXX)
cid=$(docker run -d --init --network "$network" -p 127.0.0.1::8080 \
  --label ken.bench=baseline "${env[@]}" "$image" sleep infinity)
cleanup() {
  docker rm -f "$cid" >/dev/null 2>&1 || true
  rm -f "$bundle"
}
trap cleanup EXIT

wait_for() {
  for _ in $(seq 1 600); do
    if docker exec "$cid" bash -c "$1" >/dev/null 2>&1; then
      return 0
    fi
    sleep 0.1
  done
  echo "baseline: timed out waiting for: $1" >&2
  exit 1
}

git -C "$repo" bundle create "$bundle" HEAD 2>/dev/null
docker cp -q "$bundle" "$cid:/tmp/repo.bundle"
docker exec "$cid" git -c advice.detachedHead=false clone -q /tmp/repo.bundle /workspace/repo
docker exec "$cid" rm /tmp/repo.bundle

docker exec -d -u postgres "$cid" sh -c \
  'exec /usr/lib/postgresql/15/bin/postgres -D /var/lib/postgresql/15/main -c config_file=/etc/postgresql/15/main/postgresql.conf >/tmp/postgres.log 2>&1'
wait_for 'exec 3<>/dev/tcp/127.0.0.1/5432'

docker exec -w "$app" "$cid" sh -c '
  set -e
  createdb -h 127.0.0.1 -U postgres demo
  psql -q -h 127.0.0.1 -U postgres -d demo -v ON_ERROR_STOP=1 --single-transaction -f db/schema.sql'

docker exec -d -w "$app" "${env[@]}" "$cid" sh -c 'exec python3 app.py >/tmp/web.log 2>&1'
wait_for 'exec 3<>/dev/tcp/127.0.0.1/8080; printf "GET /healthz HTTP/1.0\r\n\r\n" >&3; read -r _ s _ <&3; [ "$s" = 200 ]'

docker exec -i -u postgres -w "$app" "$cid" \
  psql -q -X -v ON_ERROR_STOP=1 --single-transaction -d demo -f - <"$repo/examples/demo-app/db/seed.sql" >/dev/null

port=$(docker port "$cid" 8080/tcp | head -n 1 | sed 's/.*://')
for _ in $(seq 1 100); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    exit 0
  fi
  sleep 0.1
done
echo "baseline: the app did not respond on 127.0.0.1:$port" >&2
exit 1
