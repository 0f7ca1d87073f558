//! Audit listings by actor and by action, read a page at a time at several page sizes, against
//! the whole log filtered by hand, a cascade's revocations included (pages starting inside one).

use std::collections::BTreeSet;

use serde_json::{json, Value};

use tether::domain::Timestamp;

use crate::helpers::*;

/// Every event, in seq order, read through unfiltered pages.
async fn whole_log(app: &TestApp) -> Vec<Value> {
    let mut events = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = app.get(&format!("/v1/audit?limit=1000{cursor}"), &app.admin).await;
        let body = page.ok();
        events.extend(body["items"].as_array().cloned().unwrap_or_default());
        match body["next_cursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => return events,
        }
    }
}

/// The seqs a listing with `query` returns when read `limit` at a time, following its cursors.
async fn listed(app: &TestApp, query: &str, limit: usize) -> Vec<i64> {
    let mut seqs = Vec::new();
    let mut cursor = String::new();
    for _ in 0..10_000 {
        let page = app.get(&format!("/v1/audit?{query}&limit={limit}{cursor}"), &app.admin).await;
        let body = page.ok();
        let items = body["items"].as_array().cloned().unwrap_or_default();
        assert!(items.len() <= limit, "{query}: a page of {limit} held {}", items.len());
        seqs.extend(items.iter().map(|e| e["seq"].as_i64().expect("seq")));
        match body["next_cursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => return seqs,
        }
    }
    panic!("{query}: the listing did not end");
}

fn seqs_where(log: &[Value], keep: impl Fn(&Value) -> bool) -> Vec<i64> {
    log.iter().filter(|e| keep(e)).map(|e| e["seq"].as_i64().expect("seq")).collect()
}

#[tokio::test]
async fn listings_by_actor_and_by_action_hold_what_the_whole_log_does_at_every_page_size() {
    let app = TestApp::new().await;
    let scene = Scene::new(&app).await;
    let second_admin = app.credential(json!({"role": "admin"})).await;
    // Triggers of three actors, each cascading: a platform revoking a session that has a
    // sub-agent session, then two admins, one of them twice, around the other's cascade.
    for (path, credential) in [
        (format!("/v1/sessions/{}/revoke", scene.s("u3").id), &scene.p1.credential),
        (format!("/v1/agents/{}/suspend", scene.b1), &second_admin),
        (format!("/v1/users/{}/disable", scene.u), &app.admin),
        (format!("/v1/delegations/{}/revoke", scene.d("v_a2_i2")), &second_admin),
        (format!("/v1/sessions/{}/revoke", scene.s("v1").id), &scene.p1.credential),
    ] {
        app.post(&path, credential, json!({"reason": "audit listing test"})).await.ok();
    }
    let log = whole_log(&app).await;
    let caused_revocations = seqs_where(&log, |e| e["action"] == "session.revoked" && !e["cause_seq"].is_null());
    assert!(caused_revocations.len() >= 8, "the scene's cascades revoked sessions: {caused_revocations:?}");
    let actors: BTreeSet<String> = log.iter().map(|e| e["actor"]["id"].as_str().expect("actor").to_owned()).collect();
    let actions: BTreeSet<String> = log.iter().map(|e| e["action"].as_str().expect("action").to_owned()).collect();

    let mut queries: Vec<(String, Vec<i64>)> = Vec::new();
    for actor in &actors {
        queries.push((format!("actor={actor}"), seqs_where(&log, |e| e["actor"]["id"] == actor.as_str())));
        for action in ["session.revoked", "session.created", "user.disabled"] {
            let expected = seqs_where(&log, |e| e["actor"]["id"] == actor.as_str() && e["action"] == action);
            queries.push((format!("actor={actor}&action={action}"), expected));
        }
    }
    for action in &actions {
        queries.push((format!("action={action}"), seqs_where(&log, |e| e["action"] == action.as_str())));
    }
    // Cursors around every trigger and every range's last event, for every actor and by action.
    let mut triggers: BTreeSet<i64> = BTreeSet::new();
    let mut lasts: BTreeSet<i64> = BTreeSet::new();
    for cause in log.iter().filter_map(|e| e["cause_seq"].as_i64()) {
        triggers.insert(cause);
        lasts.insert(seqs_where(&log, |e| e["cause_seq"] == cause).into_iter().max().expect("caused"));
    }
    // A listing of cascade revocations and one per actor, each narrowed by `extra` (kept by `keep`).
    let mut narrowed = |extra: &str, keep: &dyn Fn(&Value) -> bool| {
        queries.push((
            format!("action=session.revoked&{extra}"),
            seqs_where(&log, |e| keep(e) && e["action"] == "session.revoked"),
        ));
        for actor in &actors {
            queries.push((
                format!("actor={actor}&{extra}"),
                seqs_where(&log, |e| keep(e) && e["actor"]["id"] == actor.as_str()),
            ));
        }
    };
    for edge in triggers.iter().chain(&lasts) {
        for after in [edge - 1, *edge, edge + 1] {
            narrowed(&format!("after_seq={after}"), &|e| e["seq"].as_i64() > Some(after));
        }
    }
    // Time windows: a third of the log to two thirds, by the events' own times.
    let at = |e: &Value| Timestamp::parse_rfc3339(e["at"].as_str().expect("at")).expect("an RFC 3339 time");
    let (from, to) = (&log[log.len() / 3], &log[2 * log.len() / 3]);
    assert!(at(from) < at(to), "the scene's events span more than one millisecond");
    let window = format!(
        "since={}&until={}",
        from["at"].as_str().expect("at").replace('+', "%2B"),
        to["at"].as_str().expect("at").replace('+', "%2B")
    );
    narrowed(&window, &|e| at(e) >= at(from) && at(e) < at(to));
    for (query, expected) in &queries {
        for limit in [1, 2, 3, 7, 1000] {
            assert_eq!(&listed(&app, query, limit).await, expected, "{query}, {limit} at a time");
        }
    }
}
