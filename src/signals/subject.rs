//! Subject identifiers (RFC 9493, and SSF's `complex`): which of tether's users a SET or a Global
//! Token Revocation request is about, as the lookups to try in order.

use serde_json::Value;

/// A user attribute a subject can be matched on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserField {
    ExternalId,
    UserName,
    Email,
}

/// One lookup: a field and the value it must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lookup {
    pub field: UserField,
    pub value: String,
}

/// What a subject identifier asks to match: one of several identifiers of the same person
/// (`aliases`), each tried with its lookups in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    /// Each identifier's lookups; the identifiers of `aliases` are alternatives that must agree.
    pub identifiers: Vec<Vec<Lookup>>,
}

/// Why a subject cannot be matched at all (the caller decides whether that is an error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsupported(pub String);

/// Longest identifier value looked up.
const MAX_VALUE_CHARS: usize = 512;
/// Most identifiers an `aliases` subject may list.
const MAX_ALIASES: usize = 16;

fn member<'a>(subject: &'a Value, name: &str) -> Result<&'a str, Unsupported> {
    match subject.get(name).and_then(Value::as_str) {
        Some(v) if !v.is_empty() && v.chars().count() <= MAX_VALUE_CHARS => Ok(v),
        _ => Err(Unsupported(format!("the subject's `{name}` must be a string of 1 to {MAX_VALUE_CHARS} characters"))),
    }
}

/// The lookups for one simple (not `aliases`, not `complex`) identifier. `issuer` is the source's
/// issuer: an `iss_sub` from another issuer names nobody tether knows through this source.
fn simple(subject: &Value, issuer: Option<&str>) -> Result<Option<Vec<Lookup>>, Unsupported> {
    let lookup = |field, value: &str| Lookup { field, value: value.to_owned() };
    let format = subject.get("format").and_then(Value::as_str).unwrap_or_default();
    Ok(Some(match format {
        "iss_sub" => {
            let (iss, sub) = (member(subject, "iss")?, member(subject, "sub")?);
            if issuer.is_some_and(|i| i != iss) {
                return Ok(None);
            }
            vec![lookup(UserField::ExternalId, sub), lookup(UserField::UserName, sub)]
        }
        "email" => {
            let email = member(subject, "email")?;
            vec![lookup(UserField::Email, email), lookup(UserField::UserName, email)]
        }
        "opaque" => {
            let id = member(subject, "id")?;
            vec![lookup(UserField::ExternalId, id), lookup(UserField::UserName, id)]
        }
        "account" => {
            // `acct:` URIs name an account by user name (RFC 7565).
            let uri = member(subject, "uri")?;
            let name = uri
                .strip_prefix("acct:")
                .ok_or_else(|| Unsupported("an `account` subject's `uri` must be an acct: URI".into()))?;
            vec![lookup(UserField::UserName, name), lookup(UserField::Email, name)]
        }
        "" => return Err(Unsupported("the subject has no `format`".into())),
        other => {
            return Err(Unsupported(format!(
                "subject format {:?} is not supported (iss_sub, email, opaque, account, aliases, complex)",
                other.chars().take(64).collect::<String>()
            )))
        }
    }))
}

/// The lookups a subject identifier asks for. `Ok` with no identifiers: a well-formed subject
/// that can name no user of this receiver (an `iss_sub` of another issuer, a `complex` subject
/// without `user`).
pub fn wanted(subject: &Value, issuer: Option<&str>) -> Result<Wanted, Unsupported> {
    if !subject.is_object() {
        return Err(Unsupported("the subject must be a JSON object".into()));
    }
    let identifiers = match subject.get("format").and_then(Value::as_str) {
        Some("aliases") => {
            let list = subject
                .get("identifiers")
                .and_then(Value::as_array)
                .filter(|l| !l.is_empty() && l.len() <= MAX_ALIASES)
                .ok_or_else(|| Unsupported(format!("`aliases` needs 1 to {MAX_ALIASES} `identifiers`")))?;
            let mut out = Vec::new();
            for id in list {
                if matches!(id.get("format").and_then(Value::as_str), Some("aliases" | "complex")) {
                    return Err(Unsupported("`aliases` may not nest `aliases` or `complex`".into()));
                }
                out.extend(simple(id, issuer)?);
            }
            out
        }
        // SSF 1.0 §3: each member of a complex subject is a simple identifier; tether's subjects
        // are users, so `user` is the member that can match (session, device, … are ignored).
        Some("complex") => match subject.get("user") {
            Some(user) if matches!(user.get("format").and_then(Value::as_str), Some("aliases")) => {
                return wanted(user, issuer)
            }
            Some(user) => simple(user, issuer)?.into_iter().collect(),
            None => Vec::new(),
        },
        _ => simple(subject, issuer)?.into_iter().collect(),
    };
    Ok(Wanted { identifiers })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn each_format_asks_for_its_lookups() {
        let w = wanted(&json!({"format": "email", "email": "a@b.c"}), None).expect("email");
        assert_eq!(w.identifiers[0][0], Lookup { field: UserField::Email, value: "a@b.c".into() });
        let w = wanted(&json!({"format": "iss_sub", "iss": "https://idp", "sub": "00u1"}), Some("https://idp"))
            .expect("iss_sub");
        assert_eq!(w.identifiers[0][0], Lookup { field: UserField::ExternalId, value: "00u1".into() });
        let other = wanted(&json!({"format": "iss_sub", "iss": "https://else", "sub": "00u1"}), Some("https://idp"));
        assert_eq!(other.expect("well formed").identifiers.len(), 0, "another issuer's subject names nobody here");
        let complex = json!({"format": "complex", "session": {"format": "opaque", "id": "s"}, "user": {"format": "opaque", "id": "u9"}});
        assert_eq!(wanted(&complex, None).expect("complex").identifiers[0][0].value, "u9");
        let aliases = json!({"format": "aliases", "identifiers": [{"format": "email", "email": "a@b"}, {"format": "opaque", "id": "u"}]});
        assert_eq!(wanted(&aliases, None).expect("aliases").identifiers.len(), 2);
        assert_eq!(wanted(&json!({"format": "complex", "device": {}}), None).expect("no user").identifiers.len(), 0);
    }

    #[test]
    fn malformed_and_unknown_subjects_say_why() {
        for bad in [
            json!("a@b"),
            json!({"email": "a@b"}),
            json!({"format": "email"}),
            json!({"format": "email", "email": 3}),
            json!({"format": "phone_number", "phone_number": "+1"}),
            json!({"format": "aliases", "identifiers": []}),
            json!({"format": "aliases", "identifiers": [{"format": "aliases", "identifiers": []}]}),
        ] {
            assert!(wanted(&bad, None).is_err(), "{bad}");
        }
    }
}
