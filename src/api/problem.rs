//! problem+json (RFC 9457) answers, and the JSON, query and path extractors whose rejections
//! are problems too, so no malformed request ever gets axum's plain-text errors.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{header, request::Parts, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::domain::{
    AgentId, CredentialId, DelegationId, Error, GroupId, IntegrationId, PlatformId, SessionId, UserId, WebhookId,
};

/// The body of every error answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: &'static str,
    pub status: u16,
    pub detail: String,
    pub code: &'static str,
}

/// An [`Error`] on its way out as a response.
#[derive(Debug)]
pub struct ApiError(pub Error);

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let e = self.0;
        let (status, title) = match &e {
            Error::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, "Unauthenticated"),
            Error::Forbidden(_) => (StatusCode::FORBIDDEN, "Forbidden"),
            Error::NotFound(_) => (StatusCode::NOT_FOUND, "Not found"),
            Error::InvalidRequest(_) => (StatusCode::BAD_REQUEST, "Invalid request"),
            Error::UnsupportedMediaType(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "Unsupported media type"),
            Error::ScopeNotGrantable(_) => (StatusCode::FORBIDDEN, "Scope not grantable"),
            Error::Conflict(_) => (StatusCode::CONFLICT, "Conflict"),
            Error::InvalidGrant(_) => (StatusCode::BAD_REQUEST, "Invalid grant"),
            Error::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "Payload too large"),
            Error::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "Method not allowed"),
            Error::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "Unavailable"),
            Error::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "Internal error"),
        };
        let detail = match &e {
            // Nothing of the inside goes out; the cause is logged below, inside the request's span.
            Error::Internal(_) => "an internal error occurred; it has been logged".to_owned(),
            other => other.to_string(),
        };
        let problem = Problem {
            kind: format!("urn:tether:problem:{}", e.code()),
            title,
            status: status.as_u16(),
            detail,
            code: e.code(),
        };
        let mut response = (status, axum::Json(problem)).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Error::Internal(cause) = e {
            // Inside the request's span (the handler's future runs in it), so the line carries
            // the request id, method, path and caller; the body says nothing of the cause.
            tracing::error!(cause = %cause, "internal error");
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// JSON body extractor whose rejections are problems naming what is wrong.
pub struct Json<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !json_content_type(req.headers()) {
            return Err(ApiError(Error::UnsupportedMediaType("expected `Content-Type: application/json`".into())));
        }
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError(json_rejection(JsonRejection::BytesRejection(e))))?;
        // Every body tether takes is an object. serde would also read a struct from an array of
        // its fields in order (`["a"]` as `{"name": "a"}`), which no schema of ours admits.
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(ApiError(match serde_json::from_slice::<serde::de::IgnoredAny>(&bytes) {
                Ok(_) => Error::invalid("invalid body: expected a JSON object"),
                Err(e) => Error::invalid(format!("malformed JSON: {}", body_error_text(&e.to_string()))),
            }));
        }
        match axum::Json::<T>::from_bytes(&bytes) {
            Ok(axum::Json(value)) => Ok(Json(value)),
            Err(rejection) => Err(ApiError(json_rejection(rejection))),
        }
    }
}

/// `application/json` or `application/<anything>+json`, as axum's `Json` takes.
fn json_content_type(headers: &axum::http::HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else { return false };
    let essence = value.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    match essence.split_once('/') {
        Some(("application", subtype)) => subtype == "json" || subtype.ends_with("+json"),
        _ => false,
    }
}

fn json_rejection(rejection: JsonRejection) -> Error {
    match rejection {
        JsonRejection::JsonDataError(e) => Error::invalid(format!("invalid body: {}", body_error_text(&e.body_text()))),
        JsonRejection::JsonSyntaxError(e) => {
            Error::invalid(format!("malformed JSON: {}", body_error_text(&e.body_text())))
        }
        JsonRejection::MissingJsonContentType(_) => {
            Error::UnsupportedMediaType("expected `Content-Type: application/json`".into())
        }
        JsonRejection::BytesRejection(e) => {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                Error::PayloadTooLarge("the request body is over the size limit".into())
            } else {
                Error::invalid("the request body could not be read")
            }
        }
        other => Error::invalid(format!("invalid body: {}", other.body_text())),
    }
}

/// serde's message without axum's preamble, bounded so hostile input is not echoed at length.
fn body_error_text(text: &str) -> String {
    let text = text.strip_prefix("Failed to deserialize the JSON body into the target type: ").unwrap_or(text);
    let text = text.strip_prefix("Failed to parse the request body as JSON: ").unwrap_or(text);
    text.chars().take(300).collect()
}

/// Query-string extractor with problem rejections.
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Query(value)),
            Err(QueryRejection::FailedToDeserializeQueryString(e)) => {
                Err(ApiError(Error::invalid(format!("invalid query: {}", body_error_text(&e.body_text())))))
            }
            Err(other) => Err(ApiError(Error::invalid(format!("invalid query: {}", other.body_text())))),
        }
    }
}

/// Typed path parameters: the segments of the route's `{…}` placeholders, each parsed into its
/// type (an id, a key id), so a handler receives only valid values. A segment that is not UTF-8
/// once percent-decoded, or does not parse, is a problem+json 400 naming the parameter's kind.
pub struct Path<T>(pub T);

/// One path parameter's type, parsed from its segment.
pub trait PathParam: Sized {
    fn parse_segment(text: &str) -> Result<Self, String>;
}

macro_rules! id_path_params {
    ($($id:ty),+) => {$(
        impl PathParam for $id {
            fn parse_segment(text: &str) -> Result<Self, String> {
                <$id>::parse(text).map_err(|e| e.to_string())
            }
        }
    )+};
}

id_path_params!(PlatformId, AgentId, IntegrationId, UserId, DelegationId, SessionId, CredentialId, WebhookId, GroupId);

/// A key id in a path: digits of a `u32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyId(pub u32);

impl PathParam for KeyId {
    fn parse_segment(text: &str) -> Result<Self, String> {
        text.parse().map(KeyId).map_err(|_| "a key id is a positive integer".to_owned())
    }
}

/// All of a route's path parameters, in the order of the route's placeholders.
pub trait PathParams: Sized {
    fn from_segments(segments: &[String]) -> Result<Self, String>;
}

impl<T: PathParam> PathParams for T {
    fn from_segments(segments: &[String]) -> Result<Self, String> {
        match segments {
            [one] => T::parse_segment(one),
            _ => Err(format!("expected 1 parameter, got {}", segments.len())),
        }
    }
}

impl<A: PathParam, B: PathParam> PathParams for (A, B) {
    fn from_segments(segments: &[String]) -> Result<Self, String> {
        match segments {
            [a, b] => Ok((A::parse_segment(a)?, B::parse_segment(b)?)),
            _ => Err(format!("expected 2 parameters, got {}", segments.len())),
        }
    }
}

impl<S: Send + Sync, T: PathParams> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let segments = match axum::extract::Path::<Vec<String>>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(segments)) => segments,
            Err(rejection) => {
                return Err(ApiError(Error::invalid(format!("path parameter: {}", rejection.body_text()))))
            }
        };
        T::from_segments(&segments).map(Path).map_err(|why| ApiError(Error::invalid(format!("path parameter: {why}"))))
    }
}

/// Like [`Json`], but an empty body reads as `T::default()` (for `{reason?}` bodies).
pub struct OptionalJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let declared_empty = req.headers().get(header::CONTENT_LENGTH).is_some_and(|v| v.as_bytes() == b"0");
        if declared_empty {
            return Ok(OptionalJson(T::default()));
        }
        if req.headers().contains_key(header::CONTENT_TYPE) {
            return Json::<T>::from_request(req, state).await.map(|Json(v)| OptionalJson(v));
        }
        // No type: the body must really be empty. A chunked body has no length to declare it,
        // so it is read (within the body limit) rather than assumed absent.
        let (parts, body) = req.into_parts();
        let bytes = axum::body::Bytes::from_request(Request::from_parts(parts.clone(), body), state)
            .await
            .map_err(|e| ApiError(json_rejection(JsonRejection::BytesRejection(e))))?;
        if bytes.is_empty() {
            return Ok(OptionalJson(T::default()));
        }
        Json::<T>::from_request(Request::from_parts(parts, axum::body::Body::from(bytes)), state)
            .await
            .map(|Json(v)| OptionalJson(v))
    }
}
