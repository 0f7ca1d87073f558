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
    /// 500: a fault inside tether; the message is logged, never sent.
    #[error("internal error: {0}")]
    Internal(String),
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
        Error::Internal(message.to_string())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
