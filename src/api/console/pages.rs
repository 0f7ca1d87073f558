//! The console's pages: templates (compiled into the binary, auto-escaped) and their handlers.
//! What every page shares is here; the pages themselves are in the child modules.

mod person;
mod review;

pub use person::{act, agents};
pub use review::{admin, export, revocation, timeline, verify};

use askama::Template;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};

use super::Console;
use crate::domain::*;
use crate::store::console::ConsoleRole;

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
