//! Scope strings (`mail:read`) and sets of them, well-formed by construction.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

/// Why a string is not a scope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid scope {0:?}: a scope is 1-128 characters of a-z 0-9 _ . : / * -")]
pub struct ScopeError(pub String);

/// One scope: 1–128 characters of `[a-z0-9_.:/*-]`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Scope(String);

impl Scope {
    pub fn parse(text: &str) -> Result<Self, ScopeError> {
        let ok = (1..=128).contains(&text.len())
            && text.bytes().all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b':' | b'/' | b'*' | b'-'));
        if ok {
            Ok(Self(text.to_owned()))
        } else {
            // Never echo more than a prefix of hostile input.
            Err(ScopeError(text.chars().take(64).collect()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl utoipa::PartialSchema for Scope {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .min_length(Some(1))
            .max_length(Some(128))
            .pattern(Some("^[a-z0-9_.:/*-]{1,128}$"))
            .into()
    }
}

impl utoipa::ToSchema for Scope {}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl<'de> Deserialize<'de> for Scope {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Scope::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// A set of scopes, ordered so that its encoding is canonical. Kept as one sorted slice: a cached
/// token holds its scopes, and a slice costs a fraction of a `BTreeSet`'s node for the few scopes
/// a token carries.
#[derive(Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct ScopeSet(Box<[Scope]>);

/// At most [`ScopeSet::MAX_LEN`] items as sent, duplicates counted: what the schema's
/// `maxItems` says, whether or not the duplicates collapse.
impl<'de> Deserialize<'de> for ScopeSet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let items = Vec::<Scope>::deserialize(d)?;
        if items.len() > Self::MAX_LEN {
            return Err(serde::de::Error::custom(format!("lists more than {} scopes", Self::MAX_LEN)));
        }
        Ok(items.into_iter().collect())
    }
}

impl ScopeSet {
    pub const MAX_LEN: usize = 256;

    pub fn new() -> Self {
        Self::default()
    }

    pub fn contains(&self, scope: &Scope) -> bool {
        self.0.binary_search(scope).is_ok()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Scope> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn is_subset(&self, other: &ScopeSet) -> bool {
        self.0.iter().all(|s| other.contains(s))
    }

    pub fn intersection(&self, other: &ScopeSet) -> ScopeSet {
        self.0.iter().filter(|s| other.contains(s)).cloned().collect()
    }

    /// The scopes of `self` that are not in `other`.
    pub fn difference(&self, other: &ScopeSet) -> ScopeSet {
        self.0.iter().filter(|s| !other.contains(s)).cloned().collect()
    }

    /// Canonical JSON array text, used for storage.
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.0).unwrap_or_else(|_| "[]".to_owned())
    }

    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    pub fn joined(&self, sep: &str) -> String {
        self.0.iter().map(Scope::as_str).collect::<Vec<_>>().join(sep)
    }
}

impl FromIterator<Scope> for ScopeSet {
    fn from_iter<I: IntoIterator<Item = Scope>>(iter: I) -> Self {
        let mut scopes: Vec<Scope> = iter.into_iter().collect();
        scopes.sort_unstable();
        scopes.dedup();
        ScopeSet(scopes.into_boxed_slice())
    }
}

impl fmt::Debug for ScopeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.iter()).finish()
    }
}

impl utoipa::PartialSchema for ScopeSet {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ArrayBuilder::new()
            .items(Scope::schema())
            .max_items(Some(Self::MAX_LEN))
            .description(Some("a set of scopes: duplicates collapse, answered sorted"))
            .into()
    }
}

impl utoipa::ToSchema for ScopeSet {}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[&str]) -> ScopeSet {
        items.iter().map(|s| Scope::parse(s).expect("valid scope")).collect()
    }

    #[test]
    fn well_formed_scopes_parse() {
        for ok in ["mail:read", "repo/pr:write", "a", "files.*", "x-y_z"] {
            assert!(Scope::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn scopes_with_datalog_syntax_or_odd_characters_are_refused() {
        let long = "a".repeat(129);
        for bad in ["", "Mail:read", "mail read", "a\"b", "a)", "a;b", "a\0", "é", long.as_str()] {
            assert!(Scope::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn set_operations_behave_like_sets() {
        let a = set(&["mail:read", "mail:send"]);
        let b = set(&["mail:read"]);
        assert!(b.is_subset(&a));
        assert_eq!(a.intersection(&b), b);
        assert_eq!(a.difference(&b), set(&["mail:send"]));
        assert_eq!(ScopeSet::from_json(&a.to_json()).ok(), Some(a));
    }

    #[test]
    fn a_set_is_sorted_and_without_duplicates_however_it_was_built() {
        let built = set(&["mail:send", "mail:read", "mail:send"]);
        assert_eq!(built.joined(" "), "mail:read mail:send");
        let parsed = ScopeSet::from_json(r#"["mail:send","mail:read","mail:read"]"#).expect("parses");
        assert_eq!(parsed, built);
        assert_eq!(parsed.to_json(), r#"["mail:read","mail:send"]"#);
        assert!(built.contains(&Scope::parse("mail:send").expect("scope")));
        assert!(!built.contains(&Scope::parse("mail:write").expect("scope")));
    }
}
