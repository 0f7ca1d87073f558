//! Typed identifiers: a type prefix and a UUIDv7, parsed once at the edge.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

/// Why a string is not an id of the expected kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected {expected} id like `{prefix}_0193…` (prefix `{prefix}_` and a UUIDv7 in hex)")]
pub struct IdError {
    pub expected: &'static str,
    pub prefix: &'static str,
}

/// Longest id prefix (`cred`).
const MAX_PREFIX: usize = 4;

/// An id's text, `<prefix>_<32 hex digits>`, in a buffer on the stack.
pub struct IdText {
    buf: [u8; MAX_PREFIX + 1 + uuid::fmt::Simple::LENGTH],
    len: usize,
}

impl IdText {
    fn new(prefix: &'static str, uuid: Uuid) -> IdText {
        let mut buf = [0u8; MAX_PREFIX + 1 + uuid::fmt::Simple::LENGTH];
        // Every prefix fits: `typed_id!` asserts it at compile time.
        let p = prefix.len();
        buf[..p].copy_from_slice(prefix.as_bytes());
        buf[p] = b'_';
        let len = p + 1 + uuid::fmt::Simple::LENGTH;
        uuid.simple().encode_lower(&mut buf[p + 1..len]);
        IdText { buf, len }
    }

    pub fn as_str(&self) -> &str {
        // ASCII by construction (a prefix literal, `_` and hex digits), so this never fails.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or_default()
    }
}

macro_rules! typed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Uuid);

        // A longer prefix would not fit `IdText`'s buffer.
        const _: () = assert!($prefix.len() <= MAX_PREFIX);

        impl $name {
            pub const PREFIX: &'static str = $prefix;
            /// The regular expression of exactly the texts `parse` accepts: the prefix, and the
            /// 32 lowercase hex digits of a UUID whose version digit is `7`.
            pub const PATTERN: &'static str = concat!("^", $prefix, "_[0-9a-f]{12}7[0-9a-f]{19}$");
            pub const KIND: &'static str = $what;

            /// A fresh id (time-ordered UUIDv7).
            pub fn generate() -> Self {
                Self(Uuid::now_v7())
            }

            pub fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            pub fn uuid(&self) -> Uuid {
                self.0
            }

            /// The only way in from text: the prefix must match and the rest must be a UUIDv7.
            pub fn parse(text: &str) -> Result<Self, IdError> {
                let err = IdError { expected: $what, prefix: $prefix };
                let rest = text
                    .strip_prefix($prefix)
                    .and_then(|r| r.strip_prefix('_'))
                    .ok_or_else(|| err.clone())?;
                if rest.len() != 32 || !rest.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                    return Err(err);
                }
                let uuid = Uuid::try_parse(rest).map_err(|_| err.clone())?;
                // Version 7, what `PATTERN` says in the OpenAPI document. The variant digit is
                // not checked: ids tether generates carry RFC 9562's, and an id of another variant
                // names nothing, so it is `not_found` where it is looked up, as it always was.
                if uuid.get_version_num() != 7 {
                    return Err(err);
                }
                Ok(Self(uuid))
            }
        }

        impl $name {
            /// The text form, `<prefix>_<32 hex digits>`, built on the stack: answers and log
            /// spans write ids on every request, and `write!` plus serde's `collect_str` went
            /// through the formatting machinery piece by piece (docs/performance.md).
            pub fn text(&self) -> IdText {
                IdText::new($prefix, self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(self.text().as_str())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(self, f)
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.text().as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Self::parse(&text).map_err(serde::de::Error::custom)
            }
        }

        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .min_length(Some($prefix.len() + 33))
                    .max_length(Some($prefix.len() + 33))
                    .pattern(Some(Self::PATTERN))
                    .description(Some(concat!("a ", $what, " id: `", $prefix, "_` and a UUIDv7 in lowercase hex")))
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {}
    };
}

typed_id!(PlatformId, "plt", "platform");
typed_id!(AgentId, "agt", "agent");
typed_id!(IntegrationId, "int", "integration");
typed_id!(UserId, "usr", "user");
typed_id!(DelegationId, "dlg", "delegation");
typed_id!(SessionId, "ses", "session");
typed_id!(CredentialId, "cred", "credential");
typed_id!(WebhookId, "whk", "webhook");
typed_id!(GroupId, "grp", "group");
typed_id!(
    /// A registered Shared Signals transmitter whose SETs tether receives.
    SignalSourceId,
    "src",
    "signal source"
);
typed_id!(
    /// The id of one audit event (its position in the chain is its `seq`).
    EventId,
    "evt",
    "audit event"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_round_trips_through_its_text() {
        let id = SessionId::generate();
        assert_eq!(SessionId::parse(&id.to_string()), Ok(id));
    }

    #[test]
    fn every_kind_writes_its_prefix_and_the_uuid_in_lowercase_hex_alike_in_text_json_and_logs() {
        fn check<T: fmt::Display + Serialize>(id: T, prefix: &str, uuid: Uuid) {
            let expected = format!("{prefix}_{}", uuid.simple());
            assert_eq!(id.to_string(), expected);
            assert_eq!(serde_json::to_string(&id).unwrap_or_default(), format!("\"{expected}\""));
            assert_eq!(format!("[{id:>45}]"), format!("[{expected:>45}]"), "padding is honoured");
        }
        let uuid = Uuid::now_v7();
        check(PlatformId::from_uuid(uuid), "plt", uuid);
        check(AgentId::from_uuid(uuid), "agt", uuid);
        check(IntegrationId::from_uuid(uuid), "int", uuid);
        check(UserId::from_uuid(uuid), "usr", uuid);
        check(DelegationId::from_uuid(uuid), "dlg", uuid);
        check(SessionId::from_uuid(uuid), "ses", uuid);
        check(CredentialId::from_uuid(uuid), "cred", uuid);
        check(WebhookId::from_uuid(uuid), "whk", uuid);
        check(GroupId::from_uuid(uuid), "grp", uuid);
        check(SignalSourceId::from_uuid(uuid), "src", uuid);
        check(EventId::from_uuid(uuid), "evt", uuid);
    }

    #[test]
    fn an_id_of_another_kind_is_refused() {
        let user = UserId::generate().to_string();
        assert!(SessionId::parse(&user).is_err());
    }

    #[test]
    fn malformed_ids_are_refused() {
        for bad in [
            "",
            "ses_",
            "ses_123",
            "ses_0193XXXXXXXXXXXXXXXXXXXXXXXXXXXX",
            "ses_\0",
            "ses_00000000000000000000000000000000",
            "SES_0193b4f2a1b27c3d8e9f0a1b2c3d4e5f",
            "x\"); allow if true; //",
        ] {
            assert!(SessionId::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn the_pattern_and_parse_agree_on_the_version_and_variant_digits() {
        let id = SessionId::generate().to_string();
        let pattern = |text: &str| {
            let hex = &text[4..];
            hex.len() == 32 && hex.as_bytes()[12] == b'7' && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        };
        // The 17th hex digit carries the variant, the 13th the version.
        let (head, tail) = id.split_at(4 + 16);
        for digit in ['0', '7', '8', 'b', 'c', 'f'] {
            let other = format!("{head}{digit}{}", &tail[1..]);
            assert!(SessionId::parse(&other).is_ok() && pattern(&other), "{other}");
        }
        let (head, tail) = id.split_at(4 + 12);
        for digit in ['0', '4', '8', 'f'] {
            let other = format!("{head}{digit}{}", &tail[1..]);
            assert!(SessionId::parse(&other).is_err() && !pattern(&other), "{other}");
        }
        assert!(SessionId::PATTERN.ends_with("_[0-9a-f]{12}7[0-9a-f]{19}$"));
    }

    #[test]
    fn uppercase_hex_is_refused_so_each_id_has_one_spelling() {
        let id = SessionId::generate().to_string().to_uppercase().replace("SES_", "ses_");
        assert!(SessionId::parse(&id).is_err());
    }
}
