#!/usr/bin/env bash
# Refresh storm (issue 16): authorize throughput while every session's token is replaced.
#
#   bash benches/storm.sh                                  # 100,000 sessions, storm over 60 s
#   SESSIONS=10000 STORM_SECONDS=20 bash benches/storm.sh  # a quick look
#   STORED=900000 bash benches/storm.sh                    # with 1M sessions stored
#
# 1. The bench server opens SESSIONS live sessions (with tokens and refresh tokens).
# 2. Warm pass: each token presented once over HTTP (benches/support/warm.lua).
# 3. With tokens drawn uniformly at random (benches/support/post.lua, TOKENS=many), DURATION s on
#    /bench/bare, then DURATION s on /v1/authorize before the storm (calm).
# 4. The storm: `POST /bench/storm` makes the server refresh every session once through the real
#    refresh handler (`POST /v1/sessions/{id}/refresh`: writer, `refresh_session`, token mint,
#    commit), spread evenly over STORM_SECONDS, on the same runtime workers that serve
#    authorize; each new token is appended to STORM_FILE as soon as its refresh has answered.
#    wrk loads /v1/authorize for those STORM_SECONDS with random tokens, and every 64 requests
#    each wrk thread takes the new lines of STORM_FILE and presents the new token for that
#    session from then on. So during the storm authorize serves a mix of tokens already cached
#    and tokens it has never seen (about SESSIONS / STORM_SECONDS new ones a second, each first
#    presented within a few milliseconds of its refresh), while the writer commits the refreshes.
#    Old tokens stay valid until their own expiry (a refresh does not revoke them), so a request
#    that still carries one is allowed too.
# The figure: authorize req/s during the storm / bare req/s (the same random bodies, measured just
# before). Also printed: the calm ratio, how many refreshes were done in how long, how many
# requests carried a refreshed token, and the decisions other than allow during the storm.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10}
SESSIONS=${SESSIONS:-100000}
STORED=${STORED:-0}
STORM_SECONDS=${STORM_SECONDS:-60}
CONCURRENCY=${CONCURRENCY:-32}  # one value: the storm runs once (refresh tokens are single-use)
. benches/support/load.sh
. benches/support/server.sh

# The server stops by itself after a bound, in case this script is killed (see benches/http.sh).
setup=$(( 60 + SESSIONS / 1000 + STORED / 10000 ))
bound=$(( setup + SESSIONS / 1000 + 2 * (DURATION + 5) + 3 * STORM_SECONDS + 60 ))
"${server_on[@]}" target/release/examples/bench_server --sessions "$SESSIONS" --stored "$STORED" \
    --storm-seconds "$STORM_SECONDS" --workers "$WORKERS" --env "$work/env" --seconds "$bound" \
    >"$work/server.log" 2>&1 &
server=$!
started=$SECONDS
await_server "$setup"
grep -E '^(stored|created)' "$work/server.log" >&2 || true
echo "server at $ADDR after $(( SECONDS - started )) s; $SESSIONS live sessions, $STORED more stored"
check_allows

summary="$work/summary"
: >"$summary"
warm_pass
export TOKENS=many
measure many "$CONCURRENCY" /bench/bare
measure calm "$CONCURRENCY" /v1/authorize

decisions() { curl -s "http://$ADDR/metrics" | awk -v want="$1" '/^tether_authorize_decisions_total/ {
    allowed = ($1 ~ /"allowed"/); if ((want == "allowed") == allowed) n += $2 } END {print n + 0}'; }
allowed_before=$(decisions allowed); other_before=$(decisions other)
curl -sf -X POST "http://$ADDR/bench/storm" >/dev/null
STORM=1 measure storm "$CONCURRENCY" /v1/authorize "$STORM_SECONDS"
allowed_after=$(decisions allowed); other_after=$(decisions other)
status=$(curl -s "http://$ADDR/bench/storm")
# The storm may run past the load if the writer fell behind: wait for it (bounded) to say so.
deadline=$(( SECONDS + 2 * STORM_SECONDS ))
until [[ $status == *'"done":true'* ]] || [ "$SECONDS" -ge "$deadline" ]; do
    sleep 1; status=$(curl -s "http://$ADDR/bench/storm")
done

echo
echo "machine: $(nproc) × $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); load average $(cut -d' ' -f1-3 /proc/loadavg); wrk -t$THREADS; server workers: $WORKERS; $split; $SESSIONS live sessions, $STORED more stored"
echo "warm pass: $SESSIONS tokens once, $warm_rps req/s"
print_summary
echo "storm: $status"
grep -E '^storm lines read' "$work/wrk-storm-$CONCURRENCY" || true
echo "decisions during the storm run: $(( allowed_after - allowed_before )) allowed, $(( other_after - other_before )) other; whole run, other than allow: $(not_allowed)"
echo "concurrency $CONCURRENCY: calm (random tokens, no storm): authorize / bare = $(ratio calm many "$CONCURRENCY")"
echo "concurrency $CONCURRENCY: during the refresh storm: authorize / bare = $(ratio storm many "$CONCURRENCY")"
