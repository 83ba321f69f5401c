#!/bin/sh
# Three watchroute instances on one PostgreSQL database behind nginx, on this machine:
#   deploy/cluster.sh postgresql://postgres@127.0.0.1:5432/watchroute
# then http://127.0.0.1:8000 (the dashboard at /ui). Ctrl-C stops them all.
set -eu
database=${1:-${WATCHROUTE_DATABASE:-postgresql://postgres@127.0.0.1:5432/watchroute}}
here=$(cd "$(dirname "$0")" && pwd)
bin=${WATCHROUTE_BIN:-$here/../.venv/bin/watchroute}
prefix=$(mktemp -d)
cp "$here/nginx.conf" "$prefix/nginx.conf"
pids=""
trap 'kill $pids 2>/dev/null; rm -rf "$prefix"' EXIT INT TERM
for port in 8001 8002 8003; do
    "$bin" serve --database "$database" --port "$port" &
    pids="$pids $!"
done
nginx -p "$prefix" -c "$prefix/nginx.conf" -g "daemon off;" &
pids="$pids $!"
echo "watchroute on $database behind http://127.0.0.1:8000 (instances on 8001-8003)"
wait
