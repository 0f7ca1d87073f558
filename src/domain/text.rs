//! Free text and numbers from requests, parsed at the edge: a request body deserializes into
//! these types (serde `try_from`), so a command receives only values that are already valid.
//! `parse` is the only way in; the error names the field as the API's `detail` does.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;

use super::Error;

/// Control characters (Unicode category Cc), the characters [`char::is_control`] refuses, as a
/// regular-expression class that ECMA-262 and Python's `re` read alike.
const CONTROL: &str = r"\x00-\x1f\x7f-\x9f";
/// White space as [`str::trim`] sees it (the Unicode `White_Space` property), besides controls.
const SPACE: &str = r"\x20\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000";

/// The schema pattern of text without control characters.
pub fn free_text_pattern() -> String {
    format!("^[^{CONTROL}]*$")
}

/// The schema pattern of text without control characters and not blank.
pub fn required_text_pattern() -> String {
    format!("^[^{CONTROL}]*[^{CONTROL}{SPACE}][^{CONTROL}]*$")
}

/// A string schema: `max` characters at most, no control characters, and not blank if `required`.
pub fn text_schema(max: usize, required: bool, description: &str) -> RefOr<Schema> {
    let (min, pattern) = if required { (1, required_text_pattern()) } else { (0, free_text_pattern()) };
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(min))
        .max_length(Some(max))
        .pattern(Some(pattern))
        .description(Some(description))
        .into()
}

/// Free text from a request (names, labels, reasons): bounded and free of control characters.
pub fn clean_text(field: &str, value: &str, max: usize) -> Result<String, Error> {
    if value.chars().count() > max {
        return Err(Error::invalid(format!("`{field}` is longer than {max} characters")));
    }
    if value.chars().any(char::is_control) {
        return Err(Error::invalid(format!("`{field}` contains control characters")));
    }
    Ok(value.to_owned())
}

/// Like [`clean_text`] but also refuses an empty or blank value.
pub fn required_text(field: &str, value: &str, max: usize) -> Result<String, Error> {
    if value.trim().is_empty() {
        return Err(Error::invalid(format!("`{field}` must not be empty")));
    }
    clean_text(field, value, max)
}

macro_rules! text_type {
    ($(#[$doc:meta])* $name:ident, $field:literal, $max:literal, required = $required:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Longest value, in characters.
            pub const MAX_CHARS: usize = $max;

            /// The only way in: at most `MAX_CHARS` characters, no control characters (and, for
            /// names and external ids, not blank).
            pub fn parse(text: &str) -> Result<Self, Error> {
                let cleaned =
                    if $required { required_text($field, text, $max)? } else { clean_text($field, text, $max)? };
                Ok(Self(cleaned))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = Error;
            fn try_from(text: String) -> Result<Self, Error> {
                Self::parse(&text)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }

        impl utoipa::PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                let what = if $required { ", not blank" } else { "" };
                text_schema(
                    $max,
                    $required,
                    &format!(concat!("`", $field, "`: at most {} characters, no control characters{}"), $max, what),
                )
            }
        }

        impl utoipa::ToSchema for $name {}
    };
}

text_type!(
    /// The name of a platform, agent or integration.
    Name, "name", 200, required = true
);
text_type!(
    /// A credential's label.
    Label, "label", 200, required = false
);
text_type!(
    /// A user's display name.
    DisplayName, "display_name", 200, required = false
);
text_type!(
    /// A user's id at the identity provider.
    ExternalId, "external_id", 256, required = true
);
text_type!(
    /// A user's unique login name at the identity provider (SCIM `userName`).
    UserName, "user_name", 256, required = true
);
text_type!(
    /// A user's primary email, as the identity provider knows it (not checked for shape: identity
    /// providers send what they hold, and a signal naming it must find the user).
    Email, "email", 320, required = true
);
text_type!(
    /// Why a state change was made, as the audit log records it.
    Reason, "reason", 500, required = false
);

/// A whole number from JSON: an integer, or a number with no fraction (`90.0`), which JSON
/// Schema's `integer` also admits. Anything else is refused with `expected`.
fn whole_number<'de, D: Deserializer<'de>>(d: D, expected: &'static str) -> Result<i128, D::Error> {
    struct Whole(&'static str);

    impl serde::de::Visitor<'_> for Whole {
        type Value = i128;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }

        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<i128, E> {
            Ok(i128::from(v))
        }

        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<i128, E> {
            Ok(i128::from(v))
        }

        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<i128, E> {
            // Beyond 2^63 no field of tether's can take it anyway.
            if v.fract() == 0.0 && v.abs() < 9.2e18 {
                #[allow(clippy::cast_possible_truncation)]
                Ok(v as i128)
            } else {
                Err(E::invalid_value(serde::de::Unexpected::Float(v), &self))
            }
        }
    }

    d.deserialize_any(Whole(expected))
}

/// A whole number in `min..=max` (see [`whole_number`]), for `#[serde(deserialize_with)]`.
fn bounded<'de, D: Deserializer<'de>>(d: D, min: i64, max: i64, expected: &'static str) -> Result<i64, D::Error> {
    let n = whole_number(d, expected)?;
    if (i128::from(min)..=i128::from(max)).contains(&n) {
        Ok(n as i64)
    } else {
        Err(serde::de::Error::custom(format!("{n} is out of range: expected {expected}")))
    }
}

/// `u32` from a whole JSON number (a key id).
pub fn deserialize_u32<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    bounded(d, 0, i64::from(u32::MAX), "an integer from 0 to 4294967295").map(|n| n as u32)
}

/// `i64` from a whole JSON number.
pub fn deserialize_i64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    bounded(d, i64::MIN, i64::MAX, "a 64-bit integer")
}

/// For an optional nested object (`context`, `metadata`): like the field's own `Deserialize`, but
/// only from a JSON object. serde's derive also reads a struct from an array of its fields in
/// order (`[null, null]`), which no schema of tether's admits.
pub fn object_only<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    match Option::<serde_json::Map<String, serde_json::Value>>::deserialize(d)? {
        None => Ok(None),
        Some(map) => serde_json::from_value(serde_json::Value::Object(map)).map(Some).map_err(serde::de::Error::custom),
    }
}

macro_rules! seconds_type {
    ($(#[$doc:meta])* $name:ident, $min:expr, $max:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
        #[serde(transparent)]
        pub struct $name(i64);

        impl $name {
            pub const MIN: i64 = $min;
            pub const MAX: i64 = $max;

            /// The only way in: `MIN..=MAX` seconds.
            pub fn parse(seconds: i64) -> Result<Self, Error> {
                if (Self::MIN..=Self::MAX).contains(&seconds) {
                    Ok(Self(seconds))
                } else {
                    Err(Error::invalid(format!("`ttl_seconds` must be between {} and {}", Self::MIN, Self::MAX)))
                }
            }

            pub fn seconds(self) -> i64 {
                self.0
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let expected = concat!("a whole number of seconds from ", stringify!($min), " to ", stringify!($max));
                let n = whole_number(d, expected)?;
                i64::try_from(n)
                    .map_err(|_| Error::invalid(format!("`ttl_seconds` must be between {} and {}", Self::MIN, Self::MAX)))
                    .and_then(Self::parse)
                    .map_err(serde::de::Error::custom)
            }
        }

        impl utoipa::PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(utoipa::openapi::KnownFormat::Int64)))
                    .minimum(Some(Self::MIN))
                    .maximum(Some(Self::MAX))
                    .description(Some(concat!("seconds, ", stringify!($min), " to ", stringify!($max))))
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {}
    };
}

seconds_type!(
    /// A session's lifetime: 1 second to 30 days (a deployment may lower the upper bound).
    SessionTtl, 1, 2_592_000
);
seconds_type!(
    /// A credential's lifetime: 1 minute to 10 years.
    CredentialTtl, 60, 315_360_000
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_must_not_be_blank_nor_hold_control_characters_nor_be_too_long() {
        assert_eq!(Name::parse("agent").map(|n| n.into_string()).ok(), Some("agent".to_owned()));
        for bad in ["", "   ", "\u{3000}", "a\u{0}b", "a\nb", &"x".repeat(201)] {
            assert!(Name::parse(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(Name::parse(&"é".repeat(200)).is_ok(), "the bound counts characters, not bytes");
    }

    #[test]
    fn a_reason_may_be_empty_but_not_hold_control_characters() {
        assert!(Reason::parse("").is_ok());
        let e = Reason::parse("bye\u{0}").err().map(|e| e.to_string()).unwrap_or_default();
        assert_eq!(e, "`reason` contains control characters");
    }

    #[test]
    fn the_schema_patterns_agree_with_parse_on_blank_and_control_text() {
        // The patterns as Rust's regex crate is not a dependency: check their building blocks.
        assert!(required_text_pattern().starts_with("^[^\\x00-\\x1f\\x7f-\\x9f]*"));
        for space in ['\u{a0}', '\u{1680}', '\u{2000}', '\u{200a}', '\u{2028}', '\u{2029}', '\u{202f}', '\u{205f}'] {
            assert!(Name::parse(&space.to_string()).is_err(), "{space:?} is blank to trim");
        }
    }

    #[test]
    fn a_ttl_is_a_whole_number_in_range_and_may_be_written_with_a_zero_fraction() {
        let ttl = |text: &str| serde_json::from_str::<SessionTtl>(text).map(SessionTtl::seconds).ok();
        assert_eq!(ttl("90"), Some(90));
        assert_eq!(ttl("90.0"), Some(90));
        assert_eq!(ttl("9e1"), Some(90));
        for bad in ["0", "-1", "1.5", "1e30", "\"60\"", "2592001", "null"] {
            assert_eq!(ttl(bad), None, "{bad} was accepted");
        }
        assert!(serde_json::from_str::<CredentialTtl>("59").is_err());
    }
}
