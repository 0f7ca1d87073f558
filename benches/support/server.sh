# Sourced by benches/http.sh and benches/callgrind-http.sh: a work directory, the bench server's
# cleanup, and waiting for it to be ready. The caller starts the server (its own way: under
# taskset, under valgrind) in the background with `--env "$work/env"`, its output in
# "$work/server.log", and sets `server` to its pid.
work=$(mktemp -d)
server=""
cleanup() {
    if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

# await_server SECONDS: waits until the server prints READY, then exports what it wrote to
# "$work/env" (ADDR, CREDENTIAL, TOKEN, …).
await_server() {
    local deadline=$(( SECONDS + $1 ))
    until grep -q READY "$work/server.log" 2>/dev/null; do
        kill -0 "$server" 2>/dev/null || { cat "$work/server.log" >&2; exit 1; }
        [ "$SECONDS" -lt "$deadline" ] || { echo "server did not start in $1 s" >&2; exit 1; }
        sleep 0.2
    done
    set -a; . "$work/env"; set +a
}
