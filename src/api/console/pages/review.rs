//! The auditor's and admin's pages: the audit timeline, its verification and export, one
//! revocation's coverage, and the admin's overview.

use askama::Template;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use super::{html, time, Frame};
use crate::api::auth::Allowed;
use crate::api::console::{tree, Console, ConsoleError};
use crate::api::AppState;
use crate::audit::AuditEvent;
use crate::domain::access::{Admin, Auditor, Capability};
use crate::domain::*;
use crate::store::audit_listing::{self, AuditFilter};
use crate::store::console as rows;
use crate::store::{audit, coverage};

fn reviewer(console: &Console) -> Result<Auditor, ConsoleError> {
    Auditor::grant(&console.caller)
        .map_err(|_| ConsoleError::new(StatusCode::FORBIDDEN, "Not your page", "This page is for auditors and admins."))
}

pub struct EventView {
    pub seq: i64,
    pub at: String,
    pub actor: String,
    pub action: String,
    pub subject: String,
    pub reason: String,
    pub causes: Vec<(i64, String)>,
    pub trigger: bool,
}

fn event_view(e: &AuditEvent, causes: Vec<(i64, String)>) -> EventView {
    EventView {
        seq: e.seq,
        at: time(e.at),
        actor: format!("{} {}", e.actor.kind.as_str(), e.actor.id),
        action: e.action.clone(),
        subject: format!("{} {}", e.subject.kind, e.subject.id),
        reason: e.reason.clone().unwrap_or_default(),
        causes,
        trigger: e.cause_seq.is_none() && rows::TRIGGER_ACTIONS.contains(&e.action.as_str()),
    }
}

/// Each event's causes, nearest first (a cascade is rarely more than two deep; capped anyway).
fn cause_chain(conn: &crate::store::Conn, event: &AuditEvent) -> Result<Vec<(i64, String)>> {
    let mut chain = Vec::new();
    let mut next = event.cause_seq;
    while let Some(seq) = next.filter(|_| chain.len() < 8) {
        let cause = audit::get_audit_event(conn, seq)?;
        chain.push((cause.seq, cause.action.clone()));
        next = cause.cause_seq;
    }
    Ok(chain)
}

#[derive(Debug, Default, Deserialize)]
pub struct TimelineQuery {
    #[serde(default)]
    subject: String,
    #[serde(default)]
    actor: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
    #[serde(default)]
    after: String,
}

#[derive(Template)]
#[template(path = "timeline.html")]
pub struct TimelinePage {
    pub frame: Frame,
    pub q: TimelineQuery,
    pub events: Vec<EventView>,
    pub next: Option<String>,
    pub head_seq: i64,
    pub head_hash: String,
}

/// Events a timeline page shows.
const TIMELINE_PAGE: usize = 50;

/// A time from the filter form: RFC 3339, or a `datetime-local` value read as UTC.
fn form_time(field: &str, text: &str) -> Result<Option<Timestamp>> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let full = match text.len() {
        16 => format!("{text}:00Z"),
        19 => format!("{text}Z"),
        _ => text.to_owned(),
    };
    Timestamp::parse_rfc3339(&full)
        .map(Some)
        .ok_or_else(|| Error::invalid(format!("`{field}` must be a date and time (UTC), like 2026-12-06T10:02")))
}

fn form_text(field: &str, text: &str) -> Result<Option<String>> {
    let text = text.trim();
    if text.is_empty() {
        Ok(None)
    } else {
        clean_text(field, text, 200).map(Some)
    }
}

pub async fn timeline(
    State(state): State<AppState>,
    console: Console,
    query: Result<Query<TimelineQuery>, QueryRejection>,
) -> Result<Response, ConsoleError> {
    reviewer(&console)?;
    let Query(q) = query.map_err(|e| ConsoleError::new(StatusCode::BAD_REQUEST, "Bad filter", e.body_text()))?;
    let after = match q.after.trim() {
        "" => None,
        text => {
            Some(text.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| Error::invalid("`after` must be a seq"))?)
        }
    };
    let filter = AuditFilter {
        subject: form_text("subject", &q.subject)?,
        actor: form_text("actor", &q.actor)?,
        action: form_text("action", &q.action)?,
        cause_seq: None,
        after_seq: after,
        since: form_time("since", &q.since)?,
        until: form_time("until", &q.until)?,
    };
    // A listing: the replica's, when there is one (the head shown is then the replica's too).
    let (events, next_cursor, head) = state
        .read_stale(move |conn| {
            let page = audit_listing::list_audit(conn, &filter, TIMELINE_PAGE)?;
            let mut events = Vec::with_capacity(page.items.len());
            for e in &page.items {
                events.push(event_view(e, cause_chain(conn, e)?));
            }
            Ok((events, page.next_cursor, audit::chain_head(conn)?))
        })
        .await?;
    let next = next_cursor.map(|cursor| {
        let pairs = [
            ("subject", q.subject.as_str()),
            ("actor", q.actor.as_str()),
            ("action", q.action.as_str()),
            ("since", q.since.as_str()),
            ("until", q.until.as_str()),
            ("after", cursor.as_str()),
        ];
        let encoded: Vec<String> = pairs
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| {
                format!("{k}={}", percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC))
            })
            .collect();
        format!("/console/audit?{}", encoded.join("&"))
    });
    let page = TimelinePage { frame: Frame::of(&console), q, events, next, head_seq: head.0, head_hash: head.1 };
    Ok(html(&page))
}

#[derive(Template)]
#[template(path = "verify.html")]
pub struct VerifyPage {
    pub frame: Frame,
    pub report: crate::audit::VerifyReport,
    pub kid: u32,
    pub signature: String,
}

/// Recomputes the whole chain (a long read: it is its own page, not part of the timeline) and
/// signs a checkpoint of the head it verified, for the auditor to keep outside tether.
pub async fn verify(State(state): State<AppState>, console: Console) -> Result<Response, ConsoleError> {
    reviewer(&console)?;
    let report = state.readers.read_long(audit::verify_audit).await?;
    let message = format!("tether-audit-checkpoint-v1:{}:{}", report.head_seq, report.head_hash);
    let (kid, signature) = state.env.api_keys.sign(message.as_bytes())?;
    Ok(html(&VerifyPage { frame: Frame::of(&console), report, kid, signature: hex::encode(signature) }))
}

/// The NDJSON export, as `GET /v1/audit/export` answers it, as a download.
pub async fn export(State(state): State<AppState>, console: Console) -> Result<Response, ConsoleError> {
    let auditor = reviewer(&console)?;
    let mut response =
        crate::api::audit::export(State(state), Allowed(auditor)).await.map_err(|e| ConsoleError::from(e.0))?;
    response.headers_mut().insert(
        axum::http::header::CONTENT_DISPOSITION,
        axum::http::HeaderValue::from_static("attachment; filename=\"tether-audit.ndjson\""),
    );
    Ok(response)
}

pub struct DeliveryView {
    pub webhook: String,
    pub url: String,
    pub event_seq: i64,
    pub status: String,
    pub attempts: i64,
    pub when: String,
}

#[derive(Template)]
#[template(path = "revocation.html")]
pub struct RevocationPage {
    pub frame: Frame,
    pub event: EventView,
    pub tree: tree::Tree,
    pub covered: usize,
    pub revoked: usize,
    pub survivors: Vec<String>,
    pub deliveries: Vec<DeliveryView>,
}

pub async fn revocation(
    State(state): State<AppState>,
    console: Console,
    seq: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Response, ConsoleError> {
    let auditor = reviewer(&console)?;
    let seq = seq
        .ok()
        .and_then(|Path(s)| s.parse::<i64>().ok())
        .filter(|n| *n >= 0)
        .ok_or_else(|| Error::invalid("the event's seq must be a non-negative integer"))?;
    let vis = auditor.visibility();
    let now = state.clock.now();
    let (report, sessions, deliveries, causes) = state
        .readers
        .read(move |conn| {
            let report = coverage::report(conn, seq)?;
            let ids: Vec<SessionId> = report.sessions.iter().map(|s| s.session_id).take(tree::MAX_DRAWN).collect();
            let sessions = rows::sessions_by_id(conn, vis, &ids, now)?;
            let end = rows::cascade_end(conn, seq)?;
            let deliveries = rows::deliveries_between(conn, seq, end, 200)?;
            let causes = cause_chain(conn, &report.event)?;
            Ok((report, sessions, deliveries, causes))
        })
        .await?;
    let tree = tree::Tree::draw(&report, &sessions);
    let page = RevocationPage {
        frame: Frame::of(&console),
        event: event_view(&report.event, causes),
        tree,
        covered: report.sessions.len(),
        revoked: report.sessions.iter().filter(|s| s.revoked_by_seq.is_some()).count(),
        survivors: report.survivors.iter().map(ToString::to_string).collect(),
        deliveries: deliveries
            .into_iter()
            .map(|d| DeliveryView {
                webhook: d.webhook_id.to_string(),
                url: d.url,
                event_seq: d.event_seq,
                status: match (d.status.as_str(), d.last_status) {
                    ("delivered", Some(code)) => format!("delivered (HTTP {code})"),
                    ("failed", Some(code)) => format!("failed (last HTTP {code})"),
                    (status, _) => status.to_owned(),
                },
                attempts: d.attempts,
                when: d.acknowledged_at.or(d.last_attempt_at).map(time).unwrap_or_else(|| "not yet".to_owned()),
            })
            .collect(),
    };
    Ok(html(&page))
}

pub struct PlatformRow {
    pub id: String,
    pub name: String,
    pub status: &'static str,
    pub live: i64,
}

pub struct FailingRow {
    pub id: String,
    pub url: String,
    pub failing: i64,
    pub error: String,
}

#[derive(Template)]
#[template(path = "admin.html")]
pub struct AdminPage {
    pub frame: Frame,
    pub users: i64,
    pub platforms: Vec<PlatformRow>,
    pub triggers: Vec<EventView>,
    pub failing: Vec<FailingRow>,
}

pub async fn admin(State(state): State<AppState>, console: Console) -> Result<Response, ConsoleError> {
    Admin::grant(&console.caller)
        .map_err(|_| ConsoleError::new(StatusCode::FORBIDDEN, "Not your page", "The overview is for admins."))?;
    let now = state.clock.now();
    let (overview, triggers) =
        state.read_stale(move |conn| Ok((rows::overview(conn, now)?, rows::recent_triggers(conn, 20)?))).await?;
    let page = AdminPage {
        frame: Frame::of(&console),
        users: overview.users,
        platforms: overview
            .platforms
            .into_iter()
            .map(|(id, name, status, live)| PlatformRow { id: id.to_string(), name, status: status.as_str(), live })
            .collect(),
        triggers: triggers.iter().map(|e| event_view(e, Vec::new())).collect(),
        failing: overview
            .failing_webhooks
            .into_iter()
            .map(|(id, url, failing, error)| FailingRow {
                id: id.to_string(),
                url,
                failing,
                error: error.unwrap_or_default(),
            })
            .collect(),
    };
    Ok(html(&page))
}
