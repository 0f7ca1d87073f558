#!/usr/bin/env bash
# Profiles the writer thread during one cascade (not the session creation before it):
#   bash benches/profile-cascade.sh [sessions] [perf.data path]
# then e.g. `perf report -i cascade.perf.data --no-children --sort symbol`.
set -euo pipefail
cd "$(dirname "$0")/.."
sessions=${1:-100000}
data=${2:-cascade.perf.data}
bin=$(cargo bench --bench writes --no-run 2>&1 | grep -oE 'target/release/deps/writes-[0-9a-f]+' | tail -1)
log=$(mktemp)
TETHER_BENCH_PAUSE=1 TETHER_BENCH_CASCADES=$sessions "$bin" --bench cascade >"$log" 2>&1 &
bench=$!
until grep -q "starts in 3 s" "$log"; do
    kill -0 "$bench" 2>/dev/null || { cat "$log"; exit 1; }
    sleep 0.2
done
writer=$(grep -l '^tether-writer$' /proc/"$bench"/task/*/comm | head -1 | cut -d/ -f5)
perf record -e cpu-clock -F 2000 --call-graph dwarf,16384 -t "$writer" -o "$data" 2>/dev/null &
perf=$!
wait "$bench"
kill -INT "$perf"
wait "$perf" || true
grep -E "cascade|writer ran" "$log"
rm -f "$log"
echo "profile: $data"
