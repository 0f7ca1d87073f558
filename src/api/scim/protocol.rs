//! The SCIM wire protocol's shared parts: the media type, error bodies, the body and credential
//! extractors whose rejections are SCIM errors, list answers and `startIndex`/`count`.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{header, request::Parts, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::api::auth::Allowed;
use crate::api::AppState;
use crate::domain::access::Capability;
use crate::domain::Error;

pub const MEDIA_TYPE: &str = "application/scim+json";
pub const ERROR_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:Error";
pub const LIST_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
pub const PATCH_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

/// Most resources one list answer holds (`count` above it is lowered to it, as RFC 7644
/// §3.4.2.4 lets a service provider do); the `filter.maxResults` of /ServiceProviderConfig.
pub const MAX_RESULTS: usize = 200;

/// A SCIM error answer (RFC 7644 §3.12): `status` as a string, `scimType` where one applies.
#[derive(Debug)]
pub struct ScimError {
    pub status: StatusCode,
    pub scim_type: Option<&'static str>,
    pub detail: String,
}

impl ScimError {
    pub fn new(status: StatusCode, scim_type: Option<&'static str>, detail: impl Into<String>) -> Self {
        ScimError { status, scim_type, detail: detail.into() }
    }

    pub fn bad(scim_type: &'static str, detail: impl Into<String>) -> Self {
        ScimError::new(StatusCode::BAD_REQUEST, Some(scim_type), detail)
    }

    pub fn invalid_filter(detail: impl Into<String>) -> Self {
        ScimError::bad("invalidFilter", detail)
    }

    pub fn invalid_value(detail: impl Into<String>) -> Self {
        ScimError::bad("invalidValue", detail)
    }

    pub fn not_found(what: &str) -> Self {
        ScimError::new(StatusCode::NOT_FOUND, None, format!("{what} not found"))
    }
}

impl From<Error> for ScimError {
    fn from(e: Error) -> Self {
        let detail = e.to_string();
        match e {
            Error::Unauthenticated(_) => ScimError::new(StatusCode::UNAUTHORIZED, None, detail),
            Error::Forbidden(_) | Error::ScopeNotGrantable(_) => ScimError::new(StatusCode::FORBIDDEN, None, detail),
            Error::NotFound(_) => ScimError::new(StatusCode::NOT_FOUND, None, detail),
            Error::InvalidRequest(_) | Error::InvalidGrant(_) => ScimError::invalid_value(detail),
            Error::UnsupportedMediaType(_) => ScimError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, None, detail),
            // Every conflict a SCIM write can meet is a taken unique value (userName, externalId).
            Error::Conflict(_) => ScimError::new(StatusCode::CONFLICT, Some("uniqueness"), detail),
            Error::PayloadTooLarge(_) => ScimError::new(StatusCode::PAYLOAD_TOO_LARGE, Some("tooLarge"), detail),
            Error::MethodNotAllowed(_) => ScimError::new(StatusCode::METHOD_NOT_ALLOWED, None, detail),
            Error::Unavailable(_) => ScimError::new(StatusCode::SERVICE_UNAVAILABLE, None, detail),
            Error::Internal(cause) => {
                // The cause is logged inside the request's span; the body says nothing of it.
                tracing::error!(cause = %cause, "internal error");
                ScimError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    None,
                    "an internal error occurred; it has been logged",
                )
            }
        }
    }
}

impl IntoResponse for ScimError {
    fn into_response(self) -> Response {
        let mut body = json!({
            "schemas": [ERROR_SCHEMA],
            "status": self.status.as_u16().to_string(),
            "detail": self.detail,
        });
        if let Some(t) = self.scim_type {
            body["scimType"] = json!(t);
        }
        let mut response = scim_json(self.status, &body);
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

pub type ScimResult<T = Response> = Result<T, ScimError>;

/// A JSON answer as `application/scim+json`.
pub fn scim_json(status: StatusCode, body: &Value) -> Response {
    let mut response = (status, axum::Json(body)).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(MEDIA_TYPE));
    response
}

/// A created resource: 201 with its `Location`.
pub fn created(body: &Value) -> Response {
    let mut response = scim_json(StatusCode::CREATED, body);
    if let Some(location) = body["meta"]["location"].as_str().and_then(|l| HeaderValue::from_str(l).ok()) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

/// The credential check of the SCIM routes: [`Allowed`], its 401/403 as SCIM errors.
pub struct ScimAllowed<C>(pub C);

impl<C: Capability> FromRequestParts<AppState> for ScimAllowed<C> {
    type Rejection = ScimError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        match Allowed::<C>::from_request_parts(parts, state).await {
            Ok(Allowed(c)) => Ok(ScimAllowed(c)),
            Err(api) => Err(ScimError::from(api.0)),
        }
    }
}

/// A request body: `application/scim+json` or `application/json`, a JSON object.
pub struct ScimBody(pub serde_json::Map<String, Value>);

impl<S: Send + Sync> FromRequest<S> for ScimBody {
    type Rejection = ScimError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !json_media_type(req.headers()) {
            return Err(ScimError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                None,
                "expected `Content-Type: application/scim+json` or `application/json`",
            ));
        }
        let bytes = axum::body::Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ScimError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    Some("tooLarge"),
                    "the request body is over the size limit",
                )
            } else {
                ScimError::invalid_syntax("the request body could not be read")
            }
        })?;
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(map)) => Ok(ScimBody(map)),
            Ok(_) => Err(ScimError::invalid_syntax("the body must be a JSON object")),
            Err(e) => Err(ScimError::invalid_syntax(format!(
                "malformed JSON: {}",
                e.to_string().chars().take(300).collect::<String>()
            ))),
        }
    }
}

impl ScimError {
    pub fn invalid_syntax(detail: impl Into<String>) -> Self {
        ScimError::bad("invalidSyntax", detail)
    }
}

fn json_media_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else { return false };
    let essence = value.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    essence == "application/json" || essence == MEDIA_TYPE
}

/// `startIndex` and `count` after validation (RFC 7644 §3.4.2.4): 1-based; a `startIndex` below 1
/// is 1; a negative `count` is 0; `count` above [`MAX_RESULTS`] is lowered to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start_index: usize,
    pub count: usize,
}

impl Window {
    pub fn parse(start_index: Option<&str>, count: Option<&str>) -> ScimResult<Window> {
        let int = |name: &str, text: Option<&str>| -> ScimResult<Option<i64>> {
            match text {
                None => Ok(None),
                Some(t) => t
                    .trim()
                    .parse::<i64>()
                    .map(Some)
                    .map_err(|_| ScimError::invalid_value(format!("`{name}` must be an integer"))),
            }
        };
        let start = int("startIndex", start_index)?.unwrap_or(1).max(1);
        let count = int("count", count)?.unwrap_or(MAX_RESULTS as i64).clamp(0, MAX_RESULTS as i64);
        Ok(Window { start_index: usize::try_from(start).unwrap_or(usize::MAX), count: count as usize })
    }

    /// The SQL offset of the window.
    pub fn offset(&self) -> usize {
        self.start_index - 1
    }
}

/// A ListResponse.
pub fn list_response(total: usize, window: Window, resources: Vec<Value>) -> Response {
    scim_json(
        StatusCode::OK,
        &json!({
            "schemas": [LIST_SCHEMA],
            "totalResults": total,
            "startIndex": window.start_index,
            "itemsPerPage": resources.len(),
            "Resources": resources,
        }),
    )
}

/// The base URL of SCIM as tether advertises it (`--public-url`), for `meta.location`.
pub fn base_url(state: &AppState) -> String {
    state.public_url.join("/scim/v2")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_is_one_based_and_bounded() {
        assert_eq!(Window::parse(None, None).ok(), Some(Window { start_index: 1, count: MAX_RESULTS }));
        assert_eq!(Window::parse(Some("0"), Some("-5")).ok(), Some(Window { start_index: 1, count: 0 }));
        assert_eq!(Window::parse(Some("3"), Some("100000")).ok(), Some(Window { start_index: 3, count: MAX_RESULTS }));
        assert!(Window::parse(Some("x"), None).is_err());
    }
}

/// `attributes` / `excludedAttributes` (RFC 7644 §3.4.2.5, §3.9): which attributes an answer
/// carries. `id` and `schemas` are always returned.
#[derive(Debug, Clone, Default)]
pub struct Projection {
    include: Option<Vec<super::filter::AttrPath>>,
    exclude: Vec<super::filter::AttrPath>,
}

impl Projection {
    pub fn parse(attributes: Option<&str>, excluded: Option<&str>) -> ScimResult<Projection> {
        let list = |name: &str, text: Option<&str>| -> ScimResult<Option<Vec<super::filter::AttrPath>>> {
            let Some(text) = text.filter(|t| !t.trim().is_empty()) else { return Ok(None) };
            text.split(',')
                .map(|p| match super::filter::parse_path(p.trim()) {
                    Ok(path) if path.filter.is_none() => Ok(path.attr),
                    _ => Err(ScimError::invalid_value(format!("`{name}`: `{}` is not an attribute path", p.trim()))),
                })
                .collect::<ScimResult<Vec<_>>>()
                .map(Some)
        };
        Ok(Projection {
            include: list("attributes", attributes)?,
            exclude: list("excludedAttributes", excluded)?.unwrap_or_default(),
        })
    }

    /// Narrows one resource as asked.
    pub fn apply(&self, resource: &mut Value) {
        let Value::Object(map) = resource else { return };
        let always = |k: &str| k == "id" || k == "schemas";
        if let Some(include) = &self.include {
            let keys: Vec<String> = map.keys().cloned().collect();
            for key in keys {
                if always(&key) {
                    continue;
                }
                let wanted: Vec<&super::filter::AttrPath> =
                    include.iter().filter(|p| p.attr.eq_ignore_ascii_case(&key)).collect();
                if wanted.is_empty() {
                    map.remove(&key);
                } else if wanted.iter().all(|p| p.sub.is_some()) {
                    let subs: Vec<&str> = wanted.iter().filter_map(|p| p.sub.as_deref()).collect();
                    if let Some(v) = map.get_mut(&key) {
                        keep_subs(v, &subs);
                    }
                }
            }
        }
        for path in &self.exclude {
            let Some(key) = map.keys().find(|k| k.eq_ignore_ascii_case(&path.attr)).cloned() else { continue };
            if always(&key) {
                continue;
            }
            match &path.sub {
                None => {
                    map.remove(&key);
                }
                Some(sub) => {
                    if let Some(v) = map.get_mut(&key) {
                        drop_sub(v, sub);
                    }
                }
            }
        }
    }
}

fn keep_subs(value: &mut Value, subs: &[&str]) {
    match value {
        Value::Array(items) => items.iter_mut().for_each(|i| keep_subs(i, subs)),
        Value::Object(o) => o.retain(|k, _| subs.iter().any(|s| s.eq_ignore_ascii_case(k))),
        _ => {}
    }
}

fn drop_sub(value: &mut Value, sub: &str) {
    match value {
        Value::Array(items) => items.iter_mut().for_each(|i| drop_sub(i, sub)),
        Value::Object(o) => o.retain(|k, _| !k.eq_ignore_ascii_case(sub)),
        _ => {}
    }
}
