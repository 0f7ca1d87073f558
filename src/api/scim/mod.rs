//! SCIM 2.0 (RFC 7643, RFC 7644) at `/scim/v2`: the identity provider's door for users and groups.

pub mod filter;
pub mod patch;
pub mod protocol;
pub mod schema;
