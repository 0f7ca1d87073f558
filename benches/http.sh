#!/usr/bin/env bash
# HTTP load (issue 6, item 2; issue 16): POST /v1/authorize vs POST /bench/bare (a bare axum
# endpoint in the same binary, same request JSON, answer of the same size), with wrk at
# concurrency 32 and 256, same settings, same run. Prints requests/s and latency percentiles,
# then the ratios.
#
#   bash benches/http.sh                 # hot token only: 10 s per run; half the CPUs load, half serve
#   DURATION=5 bash benches/http.sh
#   TOKENS=many bash benches/http.sh     # hot token, then 100,000 tokens at random (below)
#   TOKENS=many SESSIONS=100000 STORED=900000 bash benches/http.sh   # with 1M sessions stored
#   PIN=0 WORKERS=2 THREADS=1 bash benches/http.sh   # no CPU split (benches/support/load.sh)
#
# TOKENS=one (default): every request carries the server's first token (the cached hot path).
# TOKENS=many: the same hot-token runs first; then a warm pass presents each of the SESSIONS
# live tokens once (benches/support/warm.lua), reading the server's VmRSS before and after it;
# then every request carries a token drawn uniformly at random from all SESSIONS, so each
# request is a token seen before but rarely the last one: what a verifier in front of many
# agents sees once all have called. The bare endpoint is measured next to each kind of run, and
# each authorize figure is divided by the bare one measured beside it. STORED adds sessions that
# are stored but not live (expired or revoked, bulk-inserted before the live ones are created).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10}
TOKENS=${TOKENS:-one}
case "$TOKENS" in one) default_sessions=1000;; many) default_sessions=100000;; *) echo "TOKENS is one or many" >&2; exit 1;; esac
MODE=$TOKENS  # TOKENS itself tells post.lua which token(s) the run in progress presents
SESSIONS=${SESSIONS:-$default_sessions}
STORED=${STORED:-0}
CONCURRENCY=${CONCURRENCY:-"32 256"}
. benches/support/load.sh
. benches/support/server.sh

# The server stops by itself after a bound, in case this script is killed: its set-up (1,500 to
# 6,000 live sessions/s through the writer, busy machine or idle; 1M stored in well under a
# minute), a warm pass at no fewer than 1,000 tokens/s, and every run with its slack.
per_concurrency=2; [ "$MODE" = many ] && per_concurrency=4
runs=$(( $(wc -w <<<"$CONCURRENCY") * per_concurrency + 1 ))
setup=$(( 60 + SESSIONS / 1000 + STORED / 10000 ))
bound=$(( setup + SESSIONS / 1000 + runs * (DURATION + 5) + 60 ))
"${server_on[@]}" target/release/examples/bench_server --sessions "$SESSIONS" --stored "$STORED" \
    --workers "$WORKERS" --env "$work/env" --seconds "$bound" >"$work/server.log" 2>&1 &
server=$!
started=$SECONDS
await_server "$setup"
grep -E '^(stored|created)' "$work/server.log" >&2 || true
echo "server at $ADDR after $(( SECONDS - started )) s; allow answer $ANSWER_BYTES bytes, request $REQUEST_BYTES bytes; $SESSIONS live sessions, $STORED more stored"
check_allows

summary="$work/summary"
: >"$summary"
# The hot token: one token, cached after its first request.
export TOKENS=one
"${load_on[@]}" wrk -t"$THREADS" -c32 -d2s -s benches/support/post.lua "http://$ADDR/v1/authorize" >/dev/null  # warm-up
for c in $CONCURRENCY; do
    measure one "$c" /v1/authorize
    measure one "$c" /bench/bare
done

if [ "$MODE" = many ]; then
    # Many tokens. The warm pass first, with the server's resident memory read either side: its
    # growth over the pass, over the tokens the cache gained, is the memory one cached token
    # costs the process (allocator included; also everything else the pass leaves behind, such
    # as the last-seen entries of SESSIONS sessions, which is why the in-process
    # `cargo bench --bench authorize` figure isolates the cache).
    cached_before=$(metric tether_verified_tokens_cached)
    rss_before=$(server_rss)
    warm_start=$SECONDS
    warm_pass
    warm_seconds=$(( SECONDS - warm_start ))
    rss_after=$(server_rss)
    cached_after=$(metric tether_verified_tokens_cached)
    export TOKENS=many
    for c in $CONCURRENCY; do
        measure many "$c" /v1/authorize
        measure many "$c" /bench/bare
    done
fi
# Still allowing after the load (no run limit tripped, token not expired).
a=$(check /v1/authorize)
case "$a" in *'"decision":"allow"'*) ;; *) echo "authorize did not allow after the runs: $a" >&2; exit 1;; esac
denied=$(not_allowed)

echo
echo "machine: $(nproc) × $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); load average $(cut -d' ' -f1-3 /proc/loadavg); wrk -t$THREADS -d${DURATION}s; server workers: $WORKERS; $split; $SESSIONS live sessions, $STORED more stored"
print_summary
for c in $CONCURRENCY; do
    echo "concurrency $c: hot token: authorize / bare = $(ratio one one "$c")"
    if [ "$MODE" = many ]; then
        echo "concurrency $c: $SESSIONS tokens at random: authorize / bare = $(ratio many many "$c")"
    fi
done
if [ "$MODE" = many ]; then
    awk -v b="$rss_before" -v a="$rss_after" -v cb="$cached_before" -v ca="$cached_after" -v n="$SESSIONS" \
        -v s="$warm_seconds" -v r="$warm_rps" 'BEGIN {
        gained = ca - cb
        printf "warm pass: %d tokens once in %d s (%s req/s, every one first seen); server RSS %.1f -> %.1f MiB; verified-token cache %d -> %d\n", n, s, r, b / 1048576, a / 1048576, cb, ca
        if (gained > 0) printf "resident memory per cached token: %.0f bytes (RSS growth / tokens the cache gained)\n", (a - b) / gained
        else printf "resident memory per cached token: unknown (no tether_verified_tokens_cached gauge); RSS growth / tokens presented = %.0f bytes\n", (a - b) / n
    }'
fi
echo "authorize answers other than allow during the whole run: $denied"
