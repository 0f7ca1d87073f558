//! The committed chain head on PostgreSQL (migration 0003): the nodes' tailers and leases read
//! `audit_chain_lock.head`, so it must follow every committed append, whether tether's writer
//! wrote it (it sets the head as it commits) or another writer did (a tether from before the
//! migration during a rolling upgrade: a trigger keeps the head then).

use std::time::Duration;

use serde_json::json;

use crate::cluster::{fresh_database, one_cluster_at_a_time};
use crate::instance::{admin_credential, ok, Server};

fn head_and_newest(client: &mut postgres::Client) -> (i64, i64) {
    let row = client
        .query_one("SELECT (SELECT head FROM audit_chain_lock), (SELECT coalesce(max(seq), 0) FROM audit_events)", &[])
        .expect("read the head");
    (row.get(0), row.get(1))
}

#[test]
fn the_committed_head_follows_every_append_by_tethers_writer_or_any_other() {
    let _turn = one_cluster_at_a_time();
    let Some(database) = fresh_database() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = Server::start(dir.path(), "127.0.0.1:0", &["--database", &database]);
    node.wait_listening(Duration::from_secs(60));
    let admin = admin_credential(dir.path());
    ok(node.address(), "POST", "/v1/platforms", &admin, json!({"name": "p"}));
    let mut client = postgres::Client::connect(&database, postgres::NoTls).expect("connect");
    let (head, newest) = head_and_newest(&mut client);
    assert!(newest > 0, "the node wrote events");
    assert_eq!(head, newest, "the writer set the head as it committed");

    // Another writer, as an older tether appends: the lock row, then a row after the newest.
    let mut tx = client.transaction().expect("begin");
    tx.batch_execute("SELECT id FROM audit_chain_lock WHERE id = 1 FOR UPDATE").expect("lock");
    tx.execute(
        "INSERT INTO audit_events (seq, id, at, actor_kind, actor_id, action, subject_kind, subject_id, details,
                                   prev_hash, hash)
         SELECT max(seq) + 1, 'evt_other_writer', 0, 'system', 'test', 'test.appended', 'test', 't', '{}', '', ''
         FROM audit_events",
        &[],
    )
    .expect("append");
    tx.commit().expect("commit");
    let (head, newest) = head_and_newest(&mut client);
    assert_eq!(head, newest, "the trigger moved the head for a writer that does not set it");
}
