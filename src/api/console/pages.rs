//! The console's pages: templates (compiled into the binary, auto-escaped) and their handlers.

use std::collections::{BTreeMap, HashMap};

use askama::Template;
use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::{check_post, Console, ConsoleError};
use crate::api::auth::Allowed;
use crate::api::AppState;
use crate::audit::AuditEvent;
use crate::domain::access::{Admin, Auditor, Capability, Owner, UserScope};
use crate::domain::*;
use crate::ops::users::Disconnect;
use crate::ops::WithReason;
use crate::store::audit_listing::{self, AuditFilter};
use crate::store::console::{self as rows, ConsoleRole};
use crate::store::{audit, coverage};

/// Renders a template; a template that fails to render (it cannot, short of a bug) is a 500 page.
pub fn html<T: Template>(page: &T) -> Response {
    match page.render() {
        Ok(body) => Html(body).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "console template failed to render");
            (StatusCode::INTERNAL_SERVER_ERROR, Html("<!doctype html><title>Error</title><p>Internal error.</p>"))
                .into_response()
        }
    }
}

/// Where each role starts.
pub fn home_path(role: ConsoleRole) -> &'static str {
    match role {
        ConsoleRole::User(_) => "/console/agents",
        ConsoleRole::Auditor => "/console/audit",
        ConsoleRole::Admin => "/console/admin",
    }
}

/// What every signed-in page's frame shows: the role's navigation and the sign-out form.
pub struct Frame {
    pub role: &'static str,
    pub csrf: String,
}

impl Frame {
    fn of(console: &Console) -> Frame {
        Frame { role: console.role_name(), csrf: console.csrf.clone() }
    }

    fn reviews(&self) -> bool {
        self.role != "user"
    }
}

fn time(t: Timestamp) -> String {
    let text = t.rfc3339();
    // "2026-12-06T10:02:11.123Z" → "2026-12-06 10:02:11 UTC": seconds are what people compare.
    match text.get(..19) {
        Some(head) if text.len() >= 20 => format!("{} UTC", head.replace('T', " ")),
        _ => text,
    }
}

fn clock_time(t: Timestamp) -> String {
    time(t).get(11..19).map(str::to_owned).unwrap_or_else(|| time(t))
}

fn scopes(set: &ScopeSet) -> String {
    let list: Vec<&str> = set.iter().map(|s| s.as_str()).collect();
    if list.is_empty() {
        "none".to_owned()
    } else {
        list.join(", ")
    }
}

#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorPage<'a> {
    pub title: &'a str,
    pub message: &'a str,
    pub signed_in: bool,
}

#[derive(Template)]
#[template(path = "continue.html")]
pub struct Continue {
    pub next: &'static str,
}

#[derive(Template)]
#[template(path = "signed_out.html")]
pub struct SignedOut {}

/// `/console`: each role's first page.
pub async fn home(console: Console) -> Redirect {
    Redirect::to(home_path(console.session.role))
}

// ---- The person's "Connected agents" ----

pub struct SessionRow {
    pub id: String,
    pub depth: usize,
    pub agent: String,
    pub started: String,
    pub last_used: String,
    pub from: String,
    pub expires: String,
    pub scopes: String,
}

pub struct DelegationView {
    pub id: String,
    pub integration_id: String,
    pub integration: String,
    pub granted: String,
    pub in_use: String,
    pub consent: String,
    pub status: &'static str,
    pub active: bool,
    pub ended: String,
    pub sessions: Vec<SessionRow>,
    pub more: usize,
}

pub struct AgentView {
    pub id: String,
    pub name: String,
    pub platform: String,
    pub status: &'static str,
    pub active: bool,
    pub delegations: Vec<DelegationView>,
}

pub struct ReceiptView {
    pub headline: String,
    pub lines: Vec<String>,
}

#[derive(Template)]
#[template(path = "agents.html")]
pub struct AgentsPage {
    pub frame: Frame,
    pub person: String,
    pub platform: Option<String>,
    pub agents: Vec<AgentView>,
    pub receipt: Option<ReceiptView>,
    pub active_sessions: i64,
}

/// Top-level sessions shown per delegation; the rest are counted.
const SESSIONS_SHOWN: usize = 25;

fn person_of(console: &Console) -> Result<UserId, ConsoleError> {
    match console.session.role {
        ConsoleRole::User(u) => Ok(u),
        _ => Err(ConsoleError::new(
            StatusCode::FORBIDDEN,
            "Not your page",
            "Connected agents is a person's page; your console reviews and administers.",
        )),
    }
}

async fn agents_page(
    state: &AppState,
    console: &Console,
    receipt: Option<ReceiptView>,
) -> Result<Response, ConsoleError> {
    let user = person_of(console)?;
    let capability = UserScope::grant(&console.caller)?;
    let vis = capability.visibility();
    let platform = console.session.platform_id;
    let now = state.clock.now();
    // Only what the page shows is read row by row: per consent its newest top-level sessions and
    // their sub-agent sessions; counts and scopes in use come from one aggregate.
    let (person, delegations, summary, shown, platform_name) = state
        .readers
        .read(move |conn| {
            let person = crate::store::users::get_user(conn, vis, user)?;
            let delegations = rows::connected(conn, vis, user, platform)?;
            let summary = rows::session_summary(conn, vis, user, platform, now)?;
            let mut shown: HashMap<DelegationId, Vec<(Session, usize)>> = HashMap::new();
            for d in delegations.iter().filter(|d| d.delegation.status == DelegationStatus::Active) {
                let mut list = Vec::new();
                for top in rows::top_sessions(conn, vis, user, d.delegation.id, now, SESSIONS_SHOWN)? {
                    let mut stack = vec![(top, 0usize)];
                    while let Some((s, depth)) = stack.pop() {
                        if list.len() < SESSIONS_SHOWN * 4 {
                            let kids = rows::child_sessions(conn, vis, user, s.id, now)?;
                            stack.extend(kids.into_iter().rev().map(|k| (k, depth + 1)));
                        }
                        list.push((s, depth));
                    }
                }
                shown.insert(d.delegation.id, list);
            }
            // A platform mints only for a person it has delegations with: its name is on them.
            let platform_name = platform.and_then(|_| delegations.first().map(|d| d.platform_name.clone()));
            Ok((person, delegations, summary, shown, platform_name))
        })
        .await?;
    let agents_by_id: HashMap<AgentId, String> =
        delegations.iter().map(|d| (d.delegation.agent_id, d.agent_name.clone())).collect();
    let active_sessions: i64 = summary.iter().map(|s| s.active).sum();
    let summary: HashMap<DelegationId, &rows::SessionSummary> = summary.iter().map(|s| (s.delegation, s)).collect();
    let row = |s: &Session, depth: usize| SessionRow {
        id: s.id.to_string(),
        depth,
        agent: agents_by_id.get(&s.agent_id).cloned().unwrap_or_else(|| s.agent_id.to_string()),
        started: time(s.created_at),
        last_used: s.last_seen_at.map(time).unwrap_or_else(|| "not yet".to_owned()),
        from: {
            let ip = s.metadata.last_ip.clone().or_else(|| s.metadata.ip.clone());
            let ua = s.metadata.last_user_agent.clone().or_else(|| s.metadata.user_agent.clone());
            match (ip, ua) {
                (Some(ip), Some(ua)) => format!("{ip} ({ua})"),
                (Some(ip), None) => ip,
                (None, Some(ua)) => ua,
                (None, None) => "unknown".to_owned(),
            }
        },
        expires: time(s.expires_at),
        scopes: scopes(&s.scopes),
    };
    let mut agents: BTreeMap<(bool, String, AgentId), AgentView> = BTreeMap::new();
    for d in &delegations {
        let del = &d.delegation;
        let counts = summary.get(&del.id);
        let mut in_use = std::collections::BTreeSet::new();
        for set in counts.map(|c| c.scope_sets.as_slice()).unwrap_or_default() {
            set.iter().for_each(|x| {
                in_use.insert(x.as_str().to_owned());
            });
        }
        let session_rows: Vec<SessionRow> =
            shown.get(&del.id).map(|list| list.iter().map(|(s, depth)| row(s, *depth)).collect()).unwrap_or_default();
        let listed_top = shown.get(&del.id).map_or(0, |l| l.iter().filter(|(_, depth)| *depth == 0).count());
        let top_total = counts.map_or(0, |c| c.top_level).max(0) as usize;
        let active = del.status == DelegationStatus::Active;
        let view = DelegationView {
            id: del.id.to_string(),
            integration_id: del.integration_id.to_string(),
            integration: d.integration_name.clone(),
            granted: scopes(&del.scopes),
            in_use: if in_use.is_empty() {
                "none".to_owned()
            } else {
                in_use.into_iter().collect::<Vec<_>>().join(", ")
            },
            consent: time(del.created_at),
            status: del.status.as_str(),
            active,
            ended: match (del.revoked_at, &del.revoked_reason) {
                (Some(at), Some(why)) => format!("{} ({why})", time(at)),
                (Some(at), None) => time(at),
                _ => String::new(),
            },
            sessions: session_rows,
            more: top_total.saturating_sub(listed_top),
        };
        let key = (!active, d.agent_name.clone(), del.agent_id);
        let agent = agents.entry(key).or_insert_with(|| AgentView {
            id: del.agent_id.to_string(),
            name: d.agent_name.clone(),
            platform: d.platform_name.clone(),
            status: d.agent_status.as_str(),
            active: false,
            delegations: Vec::new(),
        });
        agent.active |= active;
        agent.delegations.push(view);
    }
    // An agent with an active delegation under an earlier key (inactive first seen) is merged.
    let mut merged: Vec<AgentView> = Vec::new();
    for (_, agent) in agents {
        match merged.iter_mut().find(|a| a.id == agent.id) {
            Some(existing) => {
                existing.active |= agent.active;
                existing.delegations.extend(agent.delegations);
            }
            None => merged.push(agent),
        }
    }
    for agent in &mut merged {
        agent.delegations.sort_by(|a, b| (!a.active, &a.integration).cmp(&(!b.active, &b.integration)));
    }
    let person = person.display_name.or(person.user_name).or(person.email).unwrap_or_else(|| person.id.to_string());
    let page = AgentsPage {
        frame: Frame::of(console),
        person,
        platform: platform_name,
        agents: merged,
        receipt,
        active_sessions,
    };
    Ok(html(&page))
}

pub async fn agents(State(state): State<AppState>, console: Console) -> Result<Response, ConsoleError> {
    agents_page(&state, &console, None).await
}

#[derive(Debug, Deserialize)]
pub struct ActForm {
    csrf: String,
    action: String,
    #[serde(default)]
    target: String,
}

/// One of the person's actions, after the confirmation: the page again, with the receipt.
pub async fn act(
    State(state): State<AppState>,
    console: Console,
    headers: HeaderMap,
    form: Result<Form<ActForm>, FormRejection>,
) -> Result<Response, ConsoleError> {
    let Form(form) =
        form.map_err(|e| ConsoleError::new(StatusCode::BAD_REQUEST, "Not a console form", e.body_text()))?;
    check_post(&state, &headers, &console, &form.csrf)?;
    let user = person_of(&console)?;
    let platform = console.session.platform_id;
    let caller = console.caller;
    let now = state.clock.now();
    let invalid = |what: &str| ConsoleError::from(Error::invalid(format!("`target` is not a {what} id")));
    // A link minted by a platform acts on that platform's objects only: the target's platform is
    // read with the person's own visibility (another person's object is "not found") and checked.
    let check_platform = |owner: PlatformId| match platform {
        Some(p) if p != owner => Err(ConsoleError::from(Error::NotFound("object"))),
        _ => Ok(()),
    };
    let reason = WithReason { reason: Some(Reason::parse("console").map_err(ConsoleError::from)?) };
    let receipt = match form.action.as_str() {
        "revoke_session" => {
            let id = SessionId::parse(&form.target).map_err(|_| invalid("session"))?;
            let owner = Owner::grant(&caller)?;
            let session = state
                .readers
                .read(move |conn| crate::store::sessions::get_session(conn, owner.visibility(), id, now))
                .await?;
            check_platform(session.platform_id)?;
            state
                .writer
                .execute_as(&caller, move |tx| crate::ops::sessions::revoke_session(tx, &owner, id, reason))
                .await?
        }
        "revoke_delegation" => {
            let id = DelegationId::parse(&form.target).map_err(|_| invalid("delegation"))?;
            let owner = Owner::grant(&caller)?;
            let delegation = state
                .readers
                .read(move |conn| crate::store::delegations::get_delegation(conn, owner.visibility(), id))
                .await?;
            check_platform(delegation.platform_id)?;
            state
                .writer
                .execute_as(&caller, move |tx| crate::ops::delegations::revoke_delegation(tx, &owner, id, reason))
                .await?
        }
        "disconnect_agent" | "disconnect_integration" => {
            let scope = UserScope::grant(&caller)?;
            let vis = scope.visibility();
            let what = if form.action == "disconnect_agent" {
                Disconnect::Agent(AgentId::parse(&form.target).map_err(|_| invalid("agent"))?)
            } else {
                Disconnect::Integration(IntegrationId::parse(&form.target).map_err(|_| invalid("integration"))?)
            };
            if platform.is_some() {
                // The person's delegations to it must all be on the link's platform.
                let delegations = state.readers.read(move |conn| rows::connected(conn, vis, user, None)).await?;
                let mine = delegations.iter().filter(|d| match what {
                    Disconnect::Agent(a) => d.delegation.agent_id == a,
                    Disconnect::Integration(i) => d.delegation.integration_id == i,
                });
                for d in mine {
                    check_platform(d.delegation.platform_id)?;
                }
            }
            state
                .writer
                .execute_as(&caller, move |tx| crate::ops::users::disconnect(tx, &scope, user, what, reason))
                .await?
        }
        "sign_out_all" => {
            if platform.is_some() {
                return Err(ConsoleError::new(
                    StatusCode::FORBIDDEN,
                    "Not from this link",
                    "A console opened from a platform's link acts on that platform's agents only: disconnect them one by one.",
                ));
            }
            let scope = UserScope::grant(&caller)?;
            state
                .writer
                .execute_as(&caller, move |tx| crate::ops::users::sign_out_all(tx, &scope, user, reason))
                .await?
        }
        _ => return Err(ConsoleError::from(Error::invalid("unknown console action"))),
    };
    let seq = receipt.cause.seq;
    let cause = state.readers.read(move |conn| audit::get_audit_event(conn, seq)).await?;
    let count = receipt.revoked.len();
    let headline = match count {
        0 => format!("Nothing was active: no session ended (recorded as event {seq})."),
        1 => format!("1 session ended at {}; the next request with its tokens is refused.", clock_time(cause.at)),
        n => format!("{n} sessions ended at {}; the next request with their tokens is refused.", clock_time(cause.at)),
    };
    let mut lines =
        vec![format!("Recorded in the audit log as event {seq} ({}), at {}.", cause.action, time(cause.at))];
    if count > 0 {
        lines.push(
            "A service that checks tokens with tether refuses them from now on. A service that checks tokens \
             offline learns of this when it next reads tether's revocation feed; until then it may accept a \
             token it already holds, at most until that token expires."
                .to_owned(),
        );
    }
    agents_page(&state, &console, Some(ReceiptView { headline, lines })).await
}

// ---- The auditor's and admin's pages ----

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
    pub tree: super::tree::Tree,
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
            let ids: Vec<SessionId> =
                report.sessions.iter().map(|s| s.session_id).take(super::tree::MAX_DRAWN).collect();
            let sessions = rows::sessions_by_id(conn, vis, &ids, now)?;
            let end = rows::cascade_end(conn, seq)?;
            let deliveries = rows::deliveries_between(conn, seq, end, 200)?;
            let causes = cause_chain(conn, &report.event)?;
            Ok((report, sessions, deliveries, causes))
        })
        .await?;
    let tree = super::tree::Tree::draw(&report, &sessions);
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
