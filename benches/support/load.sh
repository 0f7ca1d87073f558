# Sourced by benches/http.sh and benches/storm.sh after `cd` to the repository: splits the
# allowed CPUs between the server and wrk, installs wrk, builds the bench server, and defines
# `measure`, which runs one wrk load and appends its figures to "$summary".
#
# The load generator runs on the same machine as the server. By default the CPUs this script may
# use are split with taskset: wrk gets THREADS of them (default half, at least one) and the server
# the rest, with one runtime worker per CPU it has (WORKERS; `tether serve --workers`), so the
# server never waits for a CPU the load generator holds; every endpoint is measured the same
# way. PIN=0 lets both float on all CPUs, with WORKERS defaulting to one per CPU: on a 2-CPU
# machine, wrk's thread and two workers then want three CPUs, a worker preempted mid-request
# holds its connections for a scheduler time slice (3–4 ms), and the p99 counts how often that
# happens (docs/performance.md, row 2b).

# The CPUs this script may run on (a container or an outer taskset may allow only some).
cpu_list=()
IFS=, read -ra ranges < <(awk '/^Cpus_allowed_list/ {print $2}' /proc/self/status)
for r in "${ranges[@]}"; do
    if [[ $r == *-* ]]; then cpu_list+=($(seq "${r%-*}" "${r#*-}")); else cpu_list+=("$r"); fi
done
CPUS=${#cpu_list[@]}
THREADS=${THREADS:-$(( CPUS / 2 > 0 ? CPUS / 2 : 1 ))}
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

# Both endpoints must answer an allow of the same size before anything is measured.
check() {
    curl -s -X POST "http://$ADDR$1" -H "Authorization: Bearer $CREDENTIAL" \
        -H 'Content-Type: application/json' -d "{\"token\":\"$TOKEN\",\"scope\":\"mail:read\"}"
}
check_allows() {
    local a b
    a=$(check /v1/authorize); b=$(check /bench/bare)
    case "$a" in *'"decision":"allow"'*) ;; *) echo "authorize did not allow: $a" >&2; exit 1;; esac
    [ "${#a}" -eq "${#b}" ] || { echo "answer sizes differ: ${#a} vs ${#b}" >&2; exit 1; }
}

# Resident memory of the server process (VmRSS, bytes). taskset execs the server, so $server
# is its pid.
server_rss() { awk '/^VmRSS:/ {print $2 * 1024}' "/proc/$server/status"; }
# One line of the server's /metrics (the value), or 0 if the server does not export it.
metric() { curl -s "http://$ADDR/metrics" | awk -v m="$1" '$1 == m {print $2; found = 1} END {if (!found) print 0}'; }

# The authorize decisions other than allow the server counted so far, by reason ("none" if
# none). Under CPU starvation a policy run can pass its 25 ms time limit and deny.
not_allowed() {
    curl -s "http://$ADDR/metrics" | awk -F'[{}" ]+' '/^tether_authorize_decisions_total/ && !/"allowed"/ && $NF > 0 {
        out = out sep $3 "=" $NF; sep = ", " } END {print out == "" ? "none" : out}'
}

# The warm pass: every token of TOKENS_FILE presented once, over HTTP, at concurrency 32.
# Each wrk thread creates "$work/warm-done.<id>" after its last answer; wrk runs until its -d
# whatever its threads do, so it is interrupted (SIGINT: it stops and reports, its req/s over
# the time it actually ran) once all have. Prints its figures; sets warm_rps.
warm_pass() {
    local out="$work/wrk-warm" wrk_pid
    rm -f "$work"/warm-done.*
    WARM_THREADS=$THREADS WARM_DONE="$work/warm-done" "${load_on[@]}" wrk -t"$THREADS" -c32 -d3600s --latency \
        -s benches/support/warm.lua "http://$ADDR/v1/authorize" >"$out" &
    wrk_pid=$!
    while kill -0 "$wrk_pid" 2>/dev/null; do
        [ "$(find "$work" -maxdepth 1 -name 'warm-done.*' | wc -l)" -ge "$THREADS" ] && break
        sleep 0.1
    done
    kill -INT "$wrk_pid" 2>/dev/null || true
    wait "$wrk_pid" || true
    warm_rps=$(awk '/^Requests\/sec/ {print $2}' "$out")
    grep -E '^warm pass|Requests/sec|Non-2xx|Socket errors' "$out" >&2 || true
}

# measure LABEL CONCURRENCY PATH [SECONDS]: one wrk run with benches/support/post.lua (TOKENS
# and STORM_FILE from the environment), its output kept in "$work/wrk-LABEL-CONCURRENCY" and a
# line `LABEL CONCURRENCY PATH req/s p50 p90 p99 errors` appended to "$summary".
measure() {
    local label=$1 c=$2 path=$3 seconds=${4:-$DURATION}
    local out="$work/wrk-$label-$c"
    "${load_on[@]}" wrk -t"$THREADS" -c"$c" -d"${seconds}s" --latency -s benches/support/post.lua \
        "http://$ADDR$path" | tee "$out" >&2
    local rps p50 p90 p99 errors
    rps=$(awk '/^Requests\/sec/ {print $2}' "$out")
    p50=$(awk '$1=="50%" {print $2}' "$out"); p90=$(awk '$1=="90%" {print $2}' "$out")
    p99=$(awk '$1=="99%" {print $2}' "$out")
    errors=$(awk '/Non-2xx|Socket errors/ {print}' "$out" | tr '\n' ' ')
    echo "$label $c $path $rps $p50 $p90 $p99 ${errors:-none}" >>"$summary"
}

# print_summary: the table of every measured run.
print_summary() {
    printf '%-8s %-6s %-15s %12s %9s %9s %9s  %s\n' tokens conc path req/s p50 p90 p99 errors
    while read -r label c path rps p50 p90 p99 errors; do
        printf '%-8s %-6s %-15s %12s %9s %9s %9s  %s\n' "$label" "$c" "$path" "$rps" "$p50" "$p90" "$p99" "$errors"
    done <"$summary"
}

# ratio LABEL BARE_LABEL CONCURRENCY: authorize req/s of LABEL over bare req/s of BARE_LABEL.
ratio() {
    local auth bare
    auth=$(awk -v l="$1" -v c="$3" '$1==l && $2==c && $3=="/v1/authorize" {print $4}' "$summary")
    bare=$(awk -v l="$2" -v c="$3" '$1==l && $2==c && $3=="/bench/bare" {print $4}' "$summary")
    awk -v a="$auth" -v b="$bare" 'BEGIN {printf "%.2f", a / b}'
}
