//! RFC 6749 client authentication for the OAuth endpoints (§2.3.1: `client_secret_basic` and
//! `client_secret_post`), besides a Bearer credential, so OAuth libraries call tether unadapted.
//! The client id is a credential's id (`cred_…`) and the client secret the credential itself.

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;

use super::auth::credential_caller;
use super::problem::ApiError;
use super::AppState;
use crate::domain::{Caller, Error};

/// An OAuth error answer (RFC 6749 section 5.2).
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct OAuthError {
    pub error: String,
    pub error_description: String,
}

pub fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    let body = OAuthError { error: error.to_owned(), error_description: description.to_owned() };
    (status, [(header::CACHE_CONTROL, "no-store")], axum::Json(body)).into_response()
}

/// How the client proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuthMethod {
    Bearer,
    ClientSecretBasic,
    ClientSecretPost,
}

/// Why client authentication failed.
#[derive(Debug)]
pub enum ClientAuthError {
    /// RFC 6749 `invalid_client`, 401; `basic` when the client tried the Authorization header,
    /// which the answer's `WWW-Authenticate: Basic` must then match.
    InvalidClient { description: String, basic: bool },
    /// No authentication at all, or a Bearer credential that failed: the API's own 401 problem.
    Bearer(ApiError),
    /// `invalid_request`, 400: two methods at once, a parameter twice, a malformed header.
    InvalidRequest(String),
}

impl IntoResponse for ClientAuthError {
    fn into_response(self) -> Response {
        match self {
            ClientAuthError::InvalidClient { description, basic } => {
                let mut answer = oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", &description);
                if basic {
                    answer
                        .headers_mut()
                        .insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Basic realm=\"tether\""));
                }
                answer
            }
            ClientAuthError::Bearer(e) => e.into_response(),
            ClientAuthError::InvalidRequest(why) => oauth_error(StatusCode::BAD_REQUEST, "invalid_request", &why),
        }
    }
}

fn invalid_client(description: &str, basic: bool) -> ClientAuthError {
    ClientAuthError::InvalidClient { description: description.to_owned(), basic }
}

/// The one value of a form parameter; given twice is refused (RFC 6749 §3.2: parameters must not
/// be included more than once).
pub fn single_param<'a>(form: &'a [(String, String)], name: &str) -> Result<Option<&'a str>, ClientAuthError> {
    let mut values = form.iter().filter(|(n, _)| n == name).map(|(_, v)| v.as_str());
    let first = values.next();
    if values.next().is_some() {
        return Err(ClientAuthError::InvalidRequest(format!(
            "the `{name}` parameter is given more than once (RFC 6749 section 3.2)"
        )));
    }
    Ok(first)
}

/// Authenticates the caller of an OAuth endpoint from the `Authorization` header (Bearer or
/// Basic) or from `client_id` and `client_secret` in the form body. Using two methods at once is
/// refused, as RFC 6749 §2.3 says a client must not.
pub async fn authenticate_client(
    state: &AppState,
    headers: &HeaderMap,
    form: &[(String, String)],
) -> Result<(Caller, ClientAuthMethod), ClientAuthError> {
    let posted_id = single_param(form, "client_id")?;
    let posted_secret = single_param(form, "client_secret")?;
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return match (posted_id, posted_secret) {
            (Some(id), Some(secret)) => {
                Ok((client(state, id, secret, false).await?, ClientAuthMethod::ClientSecretPost))
            }
            (None, Some(_)) => Err(invalid_client("`client_secret` needs its `client_id`", false)),
            _ => Err(ClientAuthError::Bearer(ApiError(Error::Unauthenticated(
                "missing `Authorization: Bearer <credential>` (or RFC 6749 client authentication)".into(),
            )))),
        };
    };
    if posted_secret.is_some() {
        return Err(ClientAuthError::InvalidRequest(
            "use one client authentication method, the Authorization header or `client_secret` in the body, \
             not both (RFC 6749 section 2.3)"
                .into(),
        ));
    }
    let value = value.to_str().map_err(|_| ClientAuthError::InvalidRequest("malformed Authorization header".into()))?;
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        let (id, secret) =
            decode_basic(rest.trim()).ok_or_else(|| invalid_client("malformed Basic credentials", true))?;
        if posted_id.is_some_and(|posted| posted != id) {
            return Err(ClientAuthError::InvalidRequest(
                "`client_id` in the body is not the client of the Authorization header".into(),
            ));
        }
        return Ok((client(state, &id, &secret, true).await?, ClientAuthMethod::ClientSecretBasic));
    }
    if scheme.eq_ignore_ascii_case("bearer") {
        let (caller, _) = credential_caller(state, rest.trim()).await.map_err(ClientAuthError::Bearer)?;
        return Ok((caller, ClientAuthMethod::Bearer));
    }
    Err(invalid_client("the Authorization scheme must be Bearer or Basic", true))
}

/// The caller whose credential is `secret`, if it is the credential of `id`.
async fn client(state: &AppState, id: &str, secret: &str, basic: bool) -> Result<Caller, ClientAuthError> {
    let (caller, _) = credential_caller(state, secret).await.map_err(|ApiError(e)| match e {
        Error::Unauthenticated(why) => invalid_client(&why, basic),
        other => invalid_client(&other.to_string(), basic),
    })?;
    if caller.credential.to_string() != id {
        return Err(invalid_client("the client secret is not the credential of this client_id", basic));
    }
    Ok(caller)
}

/// `Basic base64(urlencode(id) ":" urlencode(secret))`, RFC 6749 §2.3.1.
fn decode_basic(encoded: &str) -> Option<(String, String)> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(encoded).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (id, secret) = text.split_once(':')?;
    Some((form_decode(id)?, form_decode(secret)?))
}

/// One `application/x-www-form-urlencoded` component: `+` is a space, `%XX` a byte.
fn form_decode(text: &str) -> Option<String> {
    let spaced = text.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced).decode_utf8().ok().map(|s| s.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_form_decoded_halves_of_base64() {
        let encoded = base64::engine::general_purpose::STANDARD.encode("cred%5F1:a%3Db+c");
        assert_eq!(decode_basic(&encoded), Some(("cred_1".into(), "a=b c".into())));
        let raw = base64::engine::general_purpose::STANDARD.encode("cred_1:tok=en");
        assert_eq!(decode_basic(&raw), Some(("cred_1".into(), "tok=en".into())), "an unencoded `=` stays");
        assert_eq!(decode_basic("%%%"), None);
        assert_eq!(decode_basic(&base64::engine::general_purpose::STANDARD.encode("no-colon")), None);
    }

    #[test]
    fn a_parameter_given_twice_is_refused() {
        let form = vec![("client_id".to_owned(), "a".to_owned()), ("client_id".to_owned(), "b".to_owned())];
        assert!(matches!(single_param(&form, "client_id"), Err(ClientAuthError::InvalidRequest(_))));
        assert_eq!(single_param(&form, "client_secret").ok().flatten(), None);
    }
}
