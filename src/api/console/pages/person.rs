//! The person's "Connected agents" page and the actions taken from it.

use std::collections::{BTreeMap, HashMap};

use askama::Template;
use axum::extract::rejection::FormRejection;
use axum::extract::{Form, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;

use super::{clock_time, html, scopes, time, Frame};
use crate::api::console::{check_post, Console, ConsoleError};
use crate::api::AppState;
use crate::domain::access::{Capability, Owner, UserScope};
use crate::domain::*;
use crate::ops::users::Disconnect;
use crate::ops::WithReason;
use crate::store::audit;
use crate::store::console::{self as rows, ConsoleRole};

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
