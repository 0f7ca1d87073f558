#!/usr/bin/env bash
# Several nodes on PostgreSQL (docs/performance.md, "Several nodes on PostgreSQL"): starts a
# throw-away PostgreSQL (tests/pg/start.sh) with pg_stat_statements loaded, so the cascade's
# statements are counted, and runs benches/cluster.rs (`cargo bench` builds the release binary).
# Arguments go to the bench: `bash benches/cluster.sh cascade`. The server stops on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=tests/pg/start.sh
source tests/pg/start.sh
echo "shared_preload_libraries = 'pg_stat_statements'" >>"$TETHER_TEST_PG_DATA/postgresql.conf"
if [ -n "$TETHER_TEST_PG_RUNAS" ]; then
    (cd / && runuser -u "$TETHER_TEST_PG_RUNAS" -- "$TETHER_TEST_PG_BIN/pg_ctl" -D "$TETHER_TEST_PG_DATA" -w -l "$TETHER_TEST_PG_DATA/log" restart >/dev/null)
else
    "$TETHER_TEST_PG_BIN/pg_ctl" -D "$TETHER_TEST_PG_DATA" -w -l "$TETHER_TEST_PG_DATA/log" restart >/dev/null
fi
cargo build --release --bench cluster
# The build's output is still being written back: every lease renewal and every commit waits for
# PostgreSQL's WAL flush, which then queues behind it (renewals late by seconds were seen).
sync
cargo bench --bench cluster -- "$@"
