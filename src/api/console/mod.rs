//! The console: server-rendered pages where a person sees and cuts their agents' access and an
//! auditor or admin reviews revocations, plus `POST /v1/console-links`, the way in.
//!
//! Sign-in is a single-use link; opening it starts a console session held in a cookie. The
//! session acts as an API credential of the person's (or auditor's, or admin's) role, so every
//! page reads and every action writes through the same capabilities and visibility as the API,
//! audited with the same actor. See docs/console.md for the security model.

mod pages;
mod tree;

use axum::extract::{FromRequestParts, State};
use axum::http::{header, request::Parts, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use hmac::Mac;
use serde::Serialize;
use utoipa::ToSchema;

use super::auth::Allowed;
use super::problem::{ApiError, ApiResult, Json};
use super::AppState;
use crate::domain::access::Capability;
use crate::domain::access::PlatformScope;
use crate::domain::*;
use crate::ops::console::{self as ops, EndReason, NewConsoleLink};
use crate::store::console::{ConsoleRole, ConsoleSession};

/// The cookie that carries a console session's secret.
const COOKIE: &str = "tether_console";
/// The console's pages live under this path; the cookie is sent nowhere else.
const BASE: &str = "/console";
/// A session's last use is written at most this often (the idle clock's resolution).
const TOUCH_EVERY_MILLIS: i64 = 60_000;

pub fn router() -> Router<AppState> {
    let pages = Router::new()
        .route("/console", get(pages::home))
        .route("/console/open", get(open))
        .route("/console/sign-out", post(sign_out))
        .route("/console/agents", get(pages::agents).post(pages::act))
        .route("/console/audit", get(pages::timeline))
        .route("/console/audit/verify", get(pages::verify))
        .route("/console/audit/export", get(pages::export))
        .route("/console/revocations/{seq}", get(pages::revocation))
        .route("/console/admin", get(pages::admin))
        .route("/console/static/console.css", get(stylesheet))
        .route("/console/static/favicon.svg", get(favicon))
        // An HTML 404 for any other console path (the API's fallback answers problem+json).
        .route("/console/{*rest}", get(console_not_found).post(console_not_found))
        .layer(axum::middleware::map_response(security_headers));
    Router::new().route("/v1/console-links", post(create_link)).merge(pages)
}

/// A new console link: open `url` within `expires_at`, once.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedConsoleLink {
    pub id: ConsoleLinkId,
    /// The sign-in URL; it holds the link's secret, shown here and never again.
    pub url: String,
    pub expires_at: Timestamp,
}

#[utoipa::path(post, operation_id = "create_console_link", path = "/v1/console-links", tag = "console", request_body = NewConsoleLink,
    responses((status = 200, body = CreatedConsoleLink)))]
pub async fn create_link(
    State(state): State<AppState>,
    Allowed(caller): Allowed<PlatformScope>,
    Json(req): Json<NewConsoleLink>,
) -> ApiResult<axum::Json<CreatedConsoleLink>> {
    let minted = state.writer.execute_as(caller.caller(), move |tx| ops::mint_link(tx, &caller, req)).await?;
    Ok(axum::Json(CreatedConsoleLink {
        id: minted.id,
        url: link_url(&state.public_url, &minted.secret),
        expires_at: minted.expires_at,
    }))
}

/// The sign-in URL of a link secret.
pub fn link_url(public_url: &PublicUrl, secret: &str) -> String {
    public_url.join(&format!("{BASE}/open?link={secret}"))
}

/// Headers every console answer carries (OWASP: HTTP headers, clickjacking, CSP cheat sheets):
/// nothing inline may run, nothing may frame the console, nothing leaks through a referrer.
async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    let set = |headers: &mut HeaderMap, name: &'static str, value: &'static str| {
        headers.insert(name, HeaderValue::from_static(value));
    };
    set(
        headers,
        "content-security-policy",
        "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'",
    );
    set(headers, "referrer-policy", "no-referrer");
    set(headers, "x-content-type-options", "nosniff");
    set(headers, "x-frame-options", "DENY");
    set(headers, "cross-origin-opener-policy", "same-origin");
    if !headers.contains_key(header::CACHE_CONTROL) {
        set(headers, "cache-control", "no-store");
    }
    response
}

async fn stylesheet() -> Response {
    let mut response = include_str!("../../../static/console.css").into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/css; charset=utf-8"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
    response
}

async fn favicon() -> Response {
    let mut response = include_str!("../../../static/favicon.svg").into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/svg+xml"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=86400"));
    response
}

async fn console_not_found() -> ConsoleError {
    ConsoleError::new(StatusCode::NOT_FOUND, "Not found", "There is no console page at this address.")
}

/// A console answer that is not the page asked for: an HTML page saying why, with its status.
#[derive(Debug)]
pub struct ConsoleError {
    status: StatusCode,
    title: &'static str,
    message: String,
    /// Whether to offer the way back to the console's start.
    signed_in: bool,
}

impl ConsoleError {
    fn new(status: StatusCode, title: &'static str, message: impl Into<String>) -> Self {
        ConsoleError { status, title, message: message.into(), signed_in: false }
    }

    fn signed_out(message: &str) -> Self {
        ConsoleError::new(StatusCode::UNAUTHORIZED, "Signed out", message)
    }
}

impl From<Error> for ConsoleError {
    fn from(e: Error) -> Self {
        // The same status the API would answer; an internal error says nothing of its cause
        // (ApiError logs it).
        let message = match &e {
            Error::Internal(_) => "An internal error occurred; it has been logged.".to_owned(),
            other => other.to_string(),
        };
        let status = ApiError(e).into_response().status();
        ConsoleError { status, title: "Not done", message, signed_in: true }
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let page = pages::ErrorPage { title: self.title, message: &self.message, signed_in: self.signed_in };
        (self.status, pages::html(&page)).into_response()
    }
}

/// The console session of this request: its row, the caller it acts as, and its CSRF token.
pub struct Console {
    pub session: ConsoleSession,
    pub caller: Caller,
    pub csrf: String,
}

impl Console {
    fn role_name(&self) -> &'static str {
        self.session.role.as_str()
    }
}

fn cookie_secret(headers: &HeaderMap) -> Option<String> {
    headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).find_map(|line| {
        line.split(';').map(str::trim).find_map(|pair| pair.strip_prefix(COOKIE)?.strip_prefix('=').map(str::to_owned))
    })
}

/// The synchronizer token of a session: derived from the cookie's secret, which only the
/// session's browser holds, so it needs no storage and a page of another session cannot use it.
fn csrf_token(secret: &str) -> String {
    let mut mac =
        <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(secret.as_bytes()).unwrap_or_else(|_| unreachable_hmac());
    mac.update(b"tether-console-csrf-v1");
    hex::encode(mac.finalize().into_bytes())
}

/// HMAC takes a key of any length; this is never reached.
fn unreachable_hmac() -> hmac::Hmac<sha2::Sha256> {
    <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(&[0u8; 32]).unwrap_or_else(|_| unreachable_hmac())
}

impl FromRequestParts<AppState> for Console {
    type Rejection = ConsoleError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        const PLEASE: &str = "Your console session has ended. Open a new sign-in link to continue.";
        let secret = cookie_secret(&parts.headers)
            .filter(|s| s.len() <= 64)
            .ok_or_else(|| ConsoleError::signed_out("You are not signed in to the console. Open a sign-in link."))?;
        let hash = ops::secret_hash(&secret);
        let session = state
            .readers
            .read(move |conn| crate::store::console::find_session(conn, &hash))
            .await?
            .ok_or_else(|| ConsoleError::signed_out(PLEASE))?;
        if session.ended_at.is_some() {
            return Err(ConsoleError::signed_out(PLEASE));
        }
        let caller = Caller {
            credential: session.credential_id,
            role: match session.role {
                ConsoleRole::User(u) => Role::User(u),
                ConsoleRole::Auditor => Role::Auditor,
                ConsoleRole::Admin => Role::Admin,
            },
        };
        let now = state.clock.now();
        let idle_end = session.last_used_at.plus_seconds(ops::IDLE_TIMEOUT_SECONDS);
        let ended = if session.expires_at <= now {
            Some(EndReason::Expired)
        } else if idle_end <= now {
            Some(EndReason::IdleTimeout)
        } else {
            None
        };
        if let Some(why) = ended {
            let row = session.clone();
            state.writer.execute(move |tx| ops::end_session(tx, &row, &caller, why)).await?;
            return Err(ConsoleError::signed_out(PLEASE));
        }
        if now.millis() - session.last_used_at.millis() >= TOUCH_EVERY_MILLIS {
            let id = session.id;
            state.writer.execute(move |tx| ops::touch(tx, id)).await?;
        }
        Ok(Console { csrf: csrf_token(&secret), session, caller })
    }
}

/// The origin (`scheme://host[:port]`) of the public URL: what a same-origin form post names.
fn public_origin(public_url: &PublicUrl) -> &str {
    let url = public_url.as_str();
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    match url[after_scheme..].find('/') {
        Some(i) => &url[..after_scheme + i],
        None => url,
    }
}

/// The checks of a state-changing request (OWASP CSRF cheat sheet): the browser must say the
/// request comes from the console's own origin (`Origin`, else `Sec-Fetch-Site`), and the form
/// must carry the session's synchronizer token.
pub fn check_post(state: &AppState, headers: &HeaderMap, console: &Console, token: &str) -> Result<(), ConsoleError> {
    let refused = |why: &str| ConsoleError::new(StatusCode::FORBIDDEN, "Refused", why);
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    let fetch_site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    // Under `Referrer-Policy: no-referrer` a browser sends `Origin: null` with a form post:
    // then `Sec-Fetch-Site` (which every current browser sends) must say same-origin.
    match (origin.filter(|o| *o != "null"), fetch_site) {
        (Some(origin), _) if origin == public_origin(&state.public_url) => {}
        (Some(_), _) => return Err(refused("This form was sent from another site; nothing was changed.")),
        (None, Some("same-origin")) => {}
        (None, Some(_)) => return Err(refused("This form was sent from another site; nothing was changed.")),
        (None, None) => return Err(refused("The browser did not say where this form came from; nothing was changed.")),
    }
    if fetch_site.is_some_and(|s| s != "same-origin") {
        return Err(refused("This form was sent from another site; nothing was changed."));
    }
    let expected = console.csrf.as_bytes();
    if token.len() != expected.len() || !bool::from(subtle::ConstantTimeEq::ct_eq(token.as_bytes(), expected)) {
        return Err(refused("The form's security token is missing or wrong (reload the page); nothing was changed."));
    }
    Ok(())
}

#[derive(Debug, serde::Deserialize)]
struct OpenQuery {
    link: Option<String>,
}

/// Opens a sign-in link: a refused link is a page that says why; an accepted one sets the
/// cookie and moves on to the console (by a same-site navigation, so the `SameSite=Strict`
/// cookie is sent with it even when the link was followed from another site).
async fn open(
    State(state): State<AppState>,
    query: Result<axum::extract::Query<OpenQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let link = query.ok().and_then(|q| q.0.link).filter(|l| !l.is_empty() && l.len() <= 64);
    let Some(link) = link else {
        return ConsoleError::new(StatusCode::BAD_REQUEST, "Not a sign-in link", "This address holds no sign-in link.")
            .into_response();
    };
    let env = state.env.clone();
    let opened = match state.writer.execute(move |tx| ops::open_link(tx, &env, &link)).await {
        Ok(opened) => opened,
        Err(e) => return ConsoleError::from(e).into_response(),
    };
    let opened = match opened {
        Ok(opened) => opened,
        Err(why) => {
            let (status, message) = match why {
                ops::LinkRefused::Used => (
                    StatusCode::GONE,
                    "This sign-in link has already been used. A link opens the console once; ask for a new one.",
                ),
                ops::LinkRefused::Expired => {
                    (StatusCode::GONE, "This sign-in link has expired (links last five minutes). Ask for a new one.")
                }
                ops::LinkRefused::Unknown => {
                    (StatusCode::NOT_FOUND, "This sign-in link is not known. Check that it was copied whole.")
                }
            };
            return ConsoleError::new(status, "Sign-in link refused", message).into_response();
        }
    };
    let secure = if state.public_url.is_https() { "; Secure" } else { "" };
    let cookie = format!(
        "{COOKIE}={}; Path={BASE}; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        opened.cookie_secret,
        ops::ABSOLUTE_LIFETIME_SECONDS
    );
    let next = pages::home_path(opened.session.role);
    let page = pages::Continue { next };
    let mut response = pages::html(&page).into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

#[derive(Debug, serde::Deserialize)]
struct CsrfForm {
    csrf: String,
}

/// Ends the console session (and the credential it acted as) and clears the cookie.
async fn sign_out(
    State(state): State<AppState>,
    console: Console,
    headers: HeaderMap,
    form: Result<axum::extract::Form<CsrfForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let form = match form {
        Ok(axum::extract::Form(form)) => form,
        Err(e) => {
            return ConsoleError::new(StatusCode::BAD_REQUEST, "Not a console form", e.body_text()).into_response()
        }
    };
    if let Err(e) = check_post(&state, &headers, &console, &form.csrf) {
        return e.into_response();
    }
    let (session, caller) = (console.session.clone(), console.caller);
    if let Err(e) = state.writer.execute(move |tx| ops::end_session(tx, &session, &caller, EndReason::SignedOut)).await
    {
        return ConsoleError::from(e).into_response();
    }
    let mut response = pages::html(&pages::SignedOut {}).into_response();
    let clear = format!("{COOKIE}=; Path={BASE}; HttpOnly; SameSite=Strict; Max-Age=0");
    if let Ok(value) = HeaderValue::from_str(&clear) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}
