#!/usr/bin/env bash
# Counts the instructions the bench server spends per HTTP request on one path, under callgrind:
#   bash benches/callgrind-http.sh [/v1/authorize|/bench/bare] [seconds of load]
# Prints instructions per request; the callgrind file is kept for
# `callgrind_annotate --inclusive=yes FILE`. Instruction counts are steady where timings on this
# shared host are not, so they are how a change of a few percent is A/B'd (docs/performance.md).
# One runtime worker, a fixed wrk load (1 thread, 4 connections); every thread of the server is
# counted from the moment the load starts to the moment it ends.
set -euo pipefail
cd "$(dirname "$0")/.."
path=${1:-/v1/authorize}
seconds=${2:-8}
for tool in valgrind callgrind_control callgrind_annotate wrk; do
    command -v "$tool" >/dev/null || { echo "needs $tool (Debian: valgrind, wrk)" >&2; exit 1; }
done
cargo build --release --example bench_server >&2
. benches/support/server.sh
out="callgrind.$(basename "$path").out"
# Instrumentation starts off (set-up under callgrind is slow enough without counting it); the
# server exits by itself after a bound.
valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$work/cg.out" \
    target/release/examples/bench_server --sessions 10 --workers 1 --env "$work/env" \
    --seconds $(( seconds + 120 )) >"$work/server.log" 2>&1 &
server=$!
await_server 600
cat >"$work/post.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("CREDENTIAL")
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"token":"' .. os.getenv("TOKEN") .. '","scope":"mail:read"}'
LUA
callgrind_control -i on "$server" >/dev/null
requests=$(wrk -t1 -c4 -d"${seconds}s" -s "$work/post.lua" "http://$ADDR$path" | awk '/requests in/ {print $1}')
callgrind_control -d "$server" >/dev/null
sleep 2
dump=$(ls "$work"/cg.out.* | head -1)
cp "$dump" "$out"
total=$(callgrind_annotate "$out" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
echo "$path: $requests requests, $total instructions, $(( total / requests )) per request; file: $out"
