//! The domain error: stable codes that the API maps to problem+json in one place.

/// Everything that can go wrong in tether, by what the caller should do about it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// 401: no credential, or one that does not verify, is expired or revoked.
    #[error("{0}")]
    Unauthenticated(String),
    /// 403: the caller's role may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// 404: no such object for this caller (another tenant's object looks the same).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// 400: malformed input; the message names the field.
    #[error("{0}")]
    InvalidRequest(String),
    /// 415: the body is not JSON (or not the form the route takes).
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 403: asked for scopes the chain cannot grant; lists them.
    #[error("scopes not grantable: {}", .0.join(", "))]
    ScopeNotGrantable(Vec<String>),
    /// 400: a refresh token that is unknown, for another session, or already used.
    #[error("{0}")]
    InvalidGrant(String),
    /// 409: the object's state forbids this (a disabled user, a revoked delegation, …).
    #[error("{0}")]
    Conflict(String),
    /// 413: the body is over the size limit.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// 405: the route exists but not with this method.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// 503: the writer is shutting down or gone.
    #[error("{0}")]
    Unavailable(String),
    /// 500: a fault inside tether; the message and its causes are logged, never sent.
    #[error("internal error: {0}")]
    Internal(InternalError),
}

impl Error {
    /// The stable, machine-readable code of API.md.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Unauthenticated(_) => "unauthenticated",
            Error::Forbidden(_) => "forbidden",
            Error::NotFound(_) => "not_found",
            Error::InvalidRequest(_) | Error::UnsupportedMediaType(_) => "invalid_request",
            Error::ScopeNotGrantable(_) => "scope_not_grantable",
            Error::Conflict(_) => "conflict",
            Error::InvalidGrant(_) => "invalid_grant",
            Error::PayloadTooLarge(_) => "payload_too_large",
            Error::MethodNotAllowed(_) => "method_not_allowed",
            Error::Unavailable(_) => "unavailable",
            Error::Internal(_) => "internal",
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Error::InvalidRequest(message.into())
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Error::Conflict(message.into())
    }

    pub fn internal(message: impl std::fmt::Display) -> Self {
        Error::Internal(InternalError { message: message.to_string(), cause: None })
    }

    /// An internal error caused by `cause` (a database fault, say), which it keeps.
    pub fn internal_from(
        message: impl std::fmt::Display,
        cause: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Error::Internal(InternalError { message: message.to_string(), cause: Some(Box::new(cause)) })
    }
}

/// What went wrong inside tether, and the error that caused it, if any. Its text is the message
/// followed by every cause in the chain (`database: UNIQUE constraint failed: …`), so every log
/// line that shows the error shows why; the chain itself stays reachable through [`Self::cause`].
#[derive(Debug)]
pub struct InternalError {
    message: String,
    cause: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl InternalError {
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The error this one comes from.
    pub fn cause(&self) -> Option<&(dyn std::error::Error + Send + Sync + 'static)> {
        self.cause.as_deref()
    }
}

impl std::fmt::Display for InternalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)?;
        let mut next: Option<&(dyn std::error::Error + 'static)> = match &self.cause {
            Some(cause) => Some(cause.as_ref()),
            None => None,
        };
        while let Some(cause) = next {
            write!(f, ": {cause}")?;
            next = cause.source();
        }
        Ok(())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error and each error that caused it, `outer: inner: …`: a client library's own message
/// often hides why ("error performing TLS handshake", "client error (Connect)").
pub fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        text.push_str(": ");
        text.push_str(&e.to_string());
        cause = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn an_internal_error_keeps_its_cause_and_shows_the_whole_chain() {
        let error = Error::internal_from("database", Outer(std::io::Error::other("disk full")));
        assert_eq!(error.to_string(), "internal error: database: outer: disk full");
        let Error::Internal(internal) = &error else { panic!("{error:?}") };
        assert_eq!(internal.message(), "database");
        assert_eq!(internal.cause().map(|c| c.to_string()).as_deref(), Some("outer"));
        assert_eq!(error.code(), "internal");
        assert_eq!(Error::internal("plain").to_string(), "internal error: plain");
    }
}
