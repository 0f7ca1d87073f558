//! Types and rules of tether's domain: ids, scopes, objects, callers, errors. No I/O.

pub mod access;
pub mod caller;
pub mod error;
pub mod ids;
pub mod model;
pub mod public_url;
pub mod scope;
pub mod text;
pub mod time;

pub use access::{Reach, Visibility};
pub use caller::{Caller, Role, RoleKind};
pub use error::{Error, InternalError, Result};
pub use ids::*;
pub use model::*;
pub use public_url::PublicUrl;
pub use scope::{Scope, ScopeSet};
pub use text::{
    clean_text, required_text, CredentialTtl, DisplayName, Email, ExternalId, Label, Name, Reason, SessionTtl, UserName,
};
pub use time::Timestamp;
