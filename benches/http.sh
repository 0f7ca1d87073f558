#!/usr/bin/env bash
# HTTP load (issue 6, item 2): POST /v1/authorize vs POST /bench/bare (a bare axum endpoint in
# the same binary, same request JSON, answer of the same size), with wrk at concurrency 32 and 256,
# same settings, same run. Prints requests/s and latency percentiles, then the ratio.
#
#   bash benches/http.sh                 # 10 s per run; half the CPUs load, half serve
#   DURATION=5 bash benches/http.sh
#   TOKENS=many bash benches/http.sh     # cycle through all the server's sessions' tokens
#   PIN=0 WORKERS=2 THREADS=1 bash benches/http.sh   # no CPU split (see below)
#
# The load generator runs on the same machine as the server. By default the CPUs this script may
# use are split with taskset: wrk gets THREADS of them (default half, at least one) and the server
# the rest, with one runtime worker per CPU it has (WORKERS; `tether serve --workers`), so the
# server never waits for a CPU the load generator holds; both endpoints are measured the same
# way. PIN=0 lets both float on all CPUs, with WORKERS defaulting to one per CPU: on a 2-CPU
# machine, wrk's thread and two workers then want three CPUs, a worker preempted mid-request
# holds its connections for a scheduler time slice (3–4 ms), and the p99 counts how often that
# happens (docs/performance.md, row 2b).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10}
# The CPUs this script may run on (a container or an outer taskset may allow only some).
cpu_list=()
IFS=, read -ra ranges < <(awk '/^Cpus_allowed_list/ {print $2}' /proc/self/status)
for r in "${ranges[@]}"; do
    if [[ $r == *-* ]]; then cpu_list+=($(seq "${r%-*}" "${r#*-}")); else cpu_list+=("$r"); fi
done
CPUS=${#cpu_list[@]}
THREADS=${THREADS:-$(( CPUS / 2 > 0 ? CPUS / 2 : 1 ))}
SESSIONS=${SESSIONS:-1000}
CONCURRENCY=${CONCURRENCY:-"32 256"}
TOKENS=${TOKENS:-one}
PIN=${PIN:-1}
join() { local IFS=,; echo "$*"; }
# The first CPUS - THREADS allowed CPUs serve, the rest load.
if [ "$PIN" = 1 ] && [ "$CPUS" -gt "$THREADS" ]; then
    command -v taskset >/dev/null 2>&1 || { echo "taskset (util-linux) splits the CPUs; PIN=0 runs without" >&2; exit 1; }
    serve_cpus=$(( CPUS - THREADS ))
    WORKERS=${WORKERS:-$serve_cpus}
    serving=$(join "${cpu_list[@]:0:serve_cpus}"); loading=$(join "${cpu_list[@]:serve_cpus}")
    server_on=(taskset -c "$serving")
    load_on=(taskset -c "$loading")
    split="server on CPUs $serving, wrk on CPUs $loading"
else
    [ "$PIN" = 1 ] && echo "only $CPUS CPUs for $THREADS wrk threads: no split" >&2
    WORKERS=${WORKERS:-$CPUS}
    server_on=(); load_on=()
    split="server and wrk on all $CPUS CPUs"
fi

if ! command -v wrk >/dev/null 2>&1; then
    echo "installing wrk (Debian package)" >&2
    apt-get update -qq >/dev/null && apt-get install -y -qq wrk >/dev/null
fi

cargo build --release --example bench_server >&2

. benches/support/server.sh
# The server stops by itself after a bound, in case this script is killed.
runs=$(( $(wc -w <<<"$CONCURRENCY") * 2 + 2 ))
"${server_on[@]}" target/release/examples/bench_server --sessions "$SESSIONS" --workers "$WORKERS" --env "$work/env" \
    --seconds $(( runs * (DURATION + 5) + 60 )) >"$work/server.log" 2>&1 &
server=$!
await_server 120
echo "server at $ADDR; allow answer $ANSWER_BYTES bytes, request $REQUEST_BYTES bytes; $SESSIONS sessions"

cat >"$work/post.lua" <<'LUA'
local credential = os.getenv("CREDENTIAL")
local tokens = {}
if os.getenv("TOKENS") == "many" then
    for line in io.lines(os.getenv("TOKENS_FILE")) do
        if #line > 0 then tokens[#tokens + 1] = '{"token":"' .. line .. '","scope":"mail:read"}' end
    end
else
    tokens[1] = '{"token":"' .. os.getenv("TOKEN") .. '","scope":"mail:read"}'
end
wrk.method = "POST"
wrk.headers["Authorization"] = "Bearer " .. credential
wrk.headers["Content-Type"] = "application/json"
wrk.body = tokens[1]
if #tokens > 1 then
    local i = 0
    request = function()
        i = i + 1
        return wrk.format(nil, nil, nil, tokens[(i % #tokens) + 1])
    end
end
LUA

# Both endpoints must answer an allow of the same size before anything is measured.
check() {
    curl -s -X POST "http://$ADDR$1" -H "Authorization: Bearer $CREDENTIAL" \
        -H 'Content-Type: application/json' -d "{\"token\":\"$TOKEN\",\"scope\":\"mail:read\"}"
}
a=$(check /v1/authorize); b=$(check /bench/bare)
case "$a" in *'"decision":"allow"'*) ;; *) echo "authorize did not allow: $a" >&2; exit 1;; esac
[ "${#a}" -eq "${#b}" ] || { echo "answer sizes differ: ${#a} vs ${#b}" >&2; exit 1; }

export TOKENS
"${load_on[@]}" wrk -t"$THREADS" -c32 -d2s -s "$work/post.lua" "http://$ADDR/v1/authorize" >/dev/null  # warm-up

summary="$work/summary"
for c in $CONCURRENCY; do
    for path in /v1/authorize /bench/bare; do
        out="$work/wrk-$c-${path//\//_}"
        "${load_on[@]}" wrk -t"$THREADS" -c"$c" -d"${DURATION}s" --latency -s "$work/post.lua" "http://$ADDR$path" | tee "$out"
        rps=$(awk '/^Requests\/sec/ {print $2}' "$out")
        p50=$(awk '$1=="50%" {print $2}' "$out"); p90=$(awk '$1=="90%" {print $2}' "$out")
        p99=$(awk '$1=="99%" {print $2}' "$out")
        errors=$(awk '/Non-2xx|Socket errors/ {print}' "$out" | tr '\n' ' ')
        echo "$c $path $rps $p50 $p90 $p99 ${errors:-none}" >>"$summary"
    done
done
# Still allowing after the load (no run limit tripped, token not expired).
a=$(check /v1/authorize)
case "$a" in *'"decision":"allow"'*) ;; *) echo "authorize did not allow after the runs: $a" >&2; exit 1;; esac

echo
echo "machine: $(nproc) × $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); wrk -t$THREADS -d${DURATION}s; server workers: $WORKERS; $split; tokens: $TOKENS"
printf '%-6s %-15s %12s %9s %9s %9s  %s\n' conc path req/s p50 p90 p99 errors
while read -r c path rps p50 p90 p99 errors; do
    printf '%-6s %-15s %12s %9s %9s %9s  %s\n' "$c" "$path" "$rps" "$p50" "$p90" "$p99" "$errors"
done <"$summary"
for c in $CONCURRENCY; do
    auth=$(awk -v c="$c" '$1==c && $2=="/v1/authorize" {print $3}' "$summary")
    bare=$(awk -v c="$c" '$1==c && $2=="/bench/bare" {print $3}' "$summary")
    awk -v c="$c" -v a="$auth" -v b="$bare" 'BEGIN {printf "concurrency %s: authorize / bare = %.2f\n", c, a / b}'
done
