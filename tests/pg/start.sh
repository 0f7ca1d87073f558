# Starts a throw-away PostgreSQL for the tests. Source it (bash): `source tests/pg/start.sh`.
#
# Installs the PostgreSQL server (Debian's `postgresql` package) if initdb is not found, creates a
# cluster in a temporary directory (user `tether`, trust auth, UTF8, locale C), starts it on a free
# loopback port and exports:
#   TETHER_TEST_DATABASE_URL  postgres://tether@127.0.0.1:PORT/postgres
#   TETHER_TEST_PG_BIN        the directory of pg_ctl, initdb, ...
#   TETHER_TEST_PG_DATA       the data directory (its postgresql.conf holds the port and socket
#                             directory, so `pg_ctl -D "$TETHER_TEST_PG_DATA" -w start` restarts it
#                             on the same address)
#   TETHER_TEST_PG_RUNAS      `postgres` when run as root (PostgreSQL refuses to run as root: run
#                             pg_ctl with `runuser -u postgres --`), empty otherwise
# An EXIT trap (chained before any existing one) stops the server and removes the directory;
# `tether_pg_stop` does the same on demand.
#
# Opt-in, after sourcing: `tether_pg_start_replica` makes a streaming standby of that server
# (pg_basebackup -R), starts it on another free loopback port and exports:
#   TETHER_TEST_REPLICA_URL   postgres://tether@127.0.0.1:PORT/postgres (read-only; a database
#                             created on the primary appears on it once replayed)
#   TETHER_TEST_REPLICA_DATA  its data directory
# Its own EXIT trap, chained before the primary's, stops and removes it first.

if ! (return 0 2>/dev/null); then
    echo "tests/pg/start.sh: source it (source tests/pg/start.sh), do not run it" >&2
    exit 2
fi

# Runs a PostgreSQL program as the cluster's owner: `postgres` when we are root.
_tether_pg_as_owner() {
    if [ "$(id -u)" = 0 ]; then
        (cd / && runuser -u postgres -- "$@")
    else
        "$@"
    fi
}

# The newest /usr/lib/postgresql/<version>/bin with an initdb, else the directory of the initdb on
# PATH (symlinks resolved). Prints nothing when there is none.
_tether_pg_find_bin() {
    local newest
    newest=$(ls -d /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n 1)
    if [ -n "$newest" ]; then
        dirname "$newest"
    elif command -v initdb >/dev/null 2>&1; then
        dirname "$(readlink -f "$(command -v initdb)")"
    fi
}

# Stops the server of a data directory and removes the directory (default: the exported one).
tether_pg_stop() {
    local dir=${1:-${TETHER_TEST_PG_DATA:-}} bin=${2:-${TETHER_TEST_PG_BIN:-}}
    [ -n "$dir" ] && [ -d "$dir" ] || return 0
    if [ -f "$dir/postmaster.pid" ]; then
        _tether_pg_as_owner "$bin/pg_ctl" -D "$dir" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    rm -rf -- "$dir" || true
}

_tether_pg_start() {
    local bin dir port sudo="" started=""
    bin=$(_tether_pg_find_bin)
    if [ -z "$bin" ]; then
        [ "$(id -u)" = 0 ] || sudo=sudo
        echo "tests/pg/start.sh: installing PostgreSQL" >&2
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq || return 1
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql \
            || return 1
        bin=$(_tether_pg_find_bin)
        [ -n "$bin" ] || { echo "tests/pg/start.sh: no initdb after installing postgresql" >&2; return 1; }
    fi

    # A short path: the server's Unix socket lives in it too (sockaddr_un holds 107 bytes).
    dir=$(mktemp -d /tmp/tether-pg.XXXXXX) || return 1
    if [ "$(id -u)" = 0 ]; then
        chown postgres: "$dir" || { rm -rf -- "$dir"; return 1; }
    fi
    if ! _tether_pg_as_owner "$bin/initdb" -D "$dir" -U tether --auth=trust --encoding=UTF8 --locale=C \
        >"$dir.initdb.log" 2>&1; then
        cat "$dir.initdb.log" >&2
        rm -rf -- "$dir" "$dir.initdb.log"
        return 1
    fi
    rm -f -- "$dir.initdb.log"

    # A free port is picked, then bound by the server: another process may take it in between,
    # so try a few.
    local attempt
    for attempt in 1 2 3; do
        port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])') \
            || break
        # In the configuration too, so a plain `pg_ctl -D dir start` comes back on the same address.
        cat >>"$dir/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
fsync = on
max_connections = 200
EOF
        if _tether_pg_as_owner "$bin/pg_ctl" -w -D "$dir" \
            -o "-h 127.0.0.1 -p $port -k $dir -c fsync=on -c max_connections=200" \
            -l "$dir/log" start >/dev/null; then
            started=1
            break
        fi
    done
    if [ -z "$started" ]; then
        echo "tests/pg/start.sh: PostgreSQL did not start; its log:" >&2
        cat "$dir/log" >&2 2>/dev/null
        tether_pg_stop "$dir" "$bin"
        return 1
    fi

    export TETHER_TEST_DATABASE_URL="postgres://tether@127.0.0.1:$port/postgres"
    export TETHER_TEST_PG_BIN="$bin"
    export TETHER_TEST_PG_DATA="$dir"
    if [ "$(id -u)" = 0 ]; then
        export TETHER_TEST_PG_RUNAS=postgres
    else
        export TETHER_TEST_PG_RUNAS=
    fi

    # Chain: stop this server, then run the EXIT trap that was there before, with the same $?
    # (`&& :` keeps `set -e` from exiting on the restoring subshell's status).
    local previous
    previous=$(trap -p EXIT)
    if [ -n "$previous" ]; then
        eval "set -- $previous" # trap -- 'command' EXIT
        previous=$3
    fi
    # shellcheck disable=SC2064 # expanded now: this server's directory and bin dir
    trap "_tether_pg_rc=\$?; tether_pg_stop '$dir' '$bin'; (exit \$_tether_pg_rc) && :${previous:+; $previous}" EXIT
    echo "PostgreSQL $("$bin/pg_ctl" --version | awk '{print $3}') on $TETHER_TEST_DATABASE_URL (data $dir)" >&2
}

# Makes a streaming standby of the server `_tether_pg_start` started (see the top of this file).
tether_pg_start_replica() {
    local bin=${TETHER_TEST_PG_BIN:-} primary=${TETHER_TEST_PG_DATA:-} url=${TETHER_TEST_DATABASE_URL:-}
    local dir port primary_port started=""
    if [ -z "$bin" ] || [ -z "$primary" ] || [ -z "$url" ]; then
        echo "tests/pg/start.sh: tether_pg_start_replica needs the server this script starts" >&2
        return 1
    fi
    primary_port=${url##*:}
    primary_port=${primary_port%%/*}
    # initdb's pg_hba.conf already lets loopback replicate with the cluster's auth (trust); a
    # server set up otherwise gets the line. wal_level=replica and max_wal_senders are defaults.
    if ! grep -Eq '^host[[:space:]]+replication[[:space:]]+all[[:space:]]+127\.0\.0\.1/32[[:space:]]+trust' \
        "$primary/pg_hba.conf"; then
        echo "host replication all 127.0.0.1/32 trust" >>"$primary/pg_hba.conf"
        _tether_pg_as_owner "$bin/pg_ctl" -D "$primary" reload >/dev/null || return 1
    fi

    dir=$(mktemp -d /tmp/tether-pg-replica.XXXXXX) || return 1
    if [ "$(id -u)" = 0 ]; then
        chown postgres: "$dir" || { rm -rf -- "$dir"; return 1; }
    fi
    # -R writes standby.signal and primary_conninfo: the copy starts as a standby streaming from
    # the primary. -X stream copies the WAL written meanwhile; -c fast checkpoints at once.
    if ! _tether_pg_as_owner "$bin/pg_basebackup" -h 127.0.0.1 -p "$primary_port" -U tether -D "$dir" \
        -R -X stream -c fast >"$dir.basebackup.log" 2>&1; then
        cat "$dir.basebackup.log" >&2
        rm -rf -- "$dir" "$dir.basebackup.log"
        return 1
    fi
    rm -f -- "$dir.basebackup.log"
    # The copy holds the primary's log; the standby's starts empty.
    rm -f -- "$dir/log"

    # A free port, as for the primary (another process may take it in between: try a few).
    local attempt
    for attempt in 1 2 3; do
        port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])') \
            || break
        # After the primary's lines, copied with its postgresql.conf: the last setting wins.
        cat >>"$dir/postgresql.conf" <<EOF
port = $port
unix_socket_directories = '$dir'
EOF
        if _tether_pg_as_owner "$bin/pg_ctl" -w -D "$dir" -o "-h 127.0.0.1 -p $port -k $dir" \
            -l "$dir/log" start >/dev/null; then
            started=1
            break
        fi
    done
    if [ -z "$started" ]; then
        echo "tests/pg/start.sh: the replica did not start; its log:" >&2
        cat "$dir/log" >&2 2>/dev/null
        tether_pg_stop "$dir" "$bin"
        return 1
    fi

    export TETHER_TEST_REPLICA_URL="postgres://tether@127.0.0.1:$port/postgres"
    export TETHER_TEST_REPLICA_DATA="$dir"

    # Chained as the primary's is: stop the standby, then the trap that was there before (the
    # primary's, so the standby goes first).
    local previous
    previous=$(trap -p EXIT)
    if [ -n "$previous" ]; then
        eval "set -- $previous" # trap -- 'command' EXIT
        previous=$3
    fi
    # shellcheck disable=SC2064 # expanded now: this standby's directory and bin dir
    trap "_tether_pg_rc=\$?; tether_pg_stop '$dir' '$bin'; (exit \$_tether_pg_rc) && :${previous:+; $previous}" EXIT
    echo "PostgreSQL replica on $TETHER_TEST_REPLICA_URL (data $dir), streaming from port $primary_port" >&2
}

_tether_pg_start || return 1
