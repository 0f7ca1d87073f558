//! The attributes tether's SCIM resources hold, declared once: /Schemas is rendered from them,
//! and PATCH paths and filters are resolved against them (names case-insensitively).

use serde_json::{json, Value};

pub const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
pub const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    String,
    Boolean,
    Complex,
    Reference,
    DateTime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mutability {
    ReadOnly,
    ReadWrite,
    Immutable,
}

/// One attribute of a schema.
#[derive(Debug)]
pub struct Attr {
    pub name: &'static str,
    pub kind: Kind,
    pub multi: bool,
    pub required: bool,
    pub case_exact: bool,
    pub mutability: Mutability,
    pub unique: bool,
    pub canonical: &'static [&'static str],
    pub sub: &'static [Attr],
    pub description: &'static str,
}

const fn s(name: &'static str, description: &'static str) -> Attr {
    Attr {
        name,
        kind: Kind::String,
        multi: false,
        required: false,
        case_exact: false,
        mutability: Mutability::ReadWrite,
        unique: false,
        canonical: &[],
        sub: &[],
        description,
    }
}

const NAME_SUB: &[Attr] = &[
    s("formatted", "The full name, formatted for display."),
    s("familyName", "The family name."),
    s("givenName", "The given name."),
    s("middleName", "The middle name(s)."),
    s("honorificPrefix", "The honorific prefix(es)."),
    s("honorificSuffix", "The honorific suffix(es)."),
];

const EMAIL_SUB: &[Attr] = &[
    s("value", "The email address; the primary one is the address tether knows the user by."),
    Attr { canonical: &["work", "home", "other"], ..s("type", "A label: work, home or other.") },
    s("display", "A label for display."),
    Attr { kind: Kind::Boolean, ..s("primary", "Whether this is the primary address (at most one).") },
];

const USER_GROUP_SUB: &[Attr] = &[
    Attr { mutability: Mutability::ReadOnly, case_exact: true, ..s("value", "The group's id.") },
    Attr { kind: Kind::Reference, mutability: Mutability::ReadOnly, case_exact: true, ..s("$ref", "The group's URI.") },
    Attr { mutability: Mutability::ReadOnly, ..s("display", "The group's displayName.") },
    Attr { mutability: Mutability::ReadOnly, canonical: &["direct"], ..s("type", "Always direct.") },
];

pub const USER_ATTRS: &[Attr] = &[
    Attr {
        required: true,
        unique: true,
        ..s("userName", "Unique identifier of the user at the identity provider; compared case-insensitively.")
    },
    Attr { kind: Kind::Complex, sub: NAME_SUB, ..s("name", "The components of the user's name.") },
    s("displayName", "The name shown for the user."),
    // Required here, unlike RFC 7643's User schema: every tether user has a status, so `active`
    // cannot be removed (a POST without it makes an active user). docs/api.md names this.
    Attr {
        kind: Kind::Boolean,
        required: true,
        ..s("active", "Whether the user is active; false disables the user and ends every session of theirs.")
    },
    Attr { kind: Kind::Complex, multi: true, sub: EMAIL_SUB, ..s("emails", "Email addresses.") },
    Attr {
        kind: Kind::Complex,
        multi: true,
        mutability: Mutability::ReadOnly,
        sub: USER_GROUP_SUB,
        ..s("groups", "The groups the user is a member of; changed through the groups' members.")
    },
];

const MEMBER_SUB: &[Attr] = &[
    Attr { mutability: Mutability::Immutable, case_exact: true, ..s("value", "The member user's id.") },
    Attr {
        kind: Kind::Reference,
        mutability: Mutability::Immutable,
        case_exact: true,
        ..s("$ref", "The member's URI.")
    },
    Attr { mutability: Mutability::ReadOnly, ..s("display", "The member's displayName.") },
    Attr { mutability: Mutability::Immutable, canonical: &["User"], ..s("type", "Always User.") },
];

pub const GROUP_ATTRS: &[Attr] = &[
    Attr { required: true, ..s("displayName", "The group's name.") },
    Attr { kind: Kind::Complex, multi: true, sub: MEMBER_SUB, ..s("members", "The group's member users.") },
];

/// What PATCH applies to for Users.
pub const USER_TARGET: super::patch::Target = super::patch::Target {
    urn: USER_SCHEMA,
    attrs: USER_ATTRS,
    // RFC 7643 §4.1 attributes tether does not hold.
    not_held: &[
        "nickName",
        "profileUrl",
        "title",
        "userType",
        "preferredLanguage",
        "locale",
        "timezone",
        "password",
        "phoneNumbers",
        "ims",
        "photos",
        "addresses",
        "entitlements",
        "roles",
        "x509Certificates",
    ],
    not_held_urns: &["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],
};

/// What PATCH applies to for Groups.
pub const GROUP_TARGET: super::patch::Target =
    super::patch::Target { urn: GROUP_SCHEMA, attrs: GROUP_ATTRS, not_held: &[], not_held_urns: &[] };

/// Attributes every resource has besides its schema's (RFC 7643 §3.1); `externalId` is the only
/// one a client writes.
pub const COMMON: &[&str] = &["id", "externalId", "meta", "schemas"];

/// An attribute by name, case-insensitively.
pub fn find<'a>(attrs: &'a [Attr], name: &str) -> Option<&'a Attr> {
    attrs.iter().find(|a| a.name.eq_ignore_ascii_case(name))
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::String => "string",
        Kind::Boolean => "boolean",
        Kind::Complex => "complex",
        Kind::Reference => "reference",
        Kind::DateTime => "dateTime",
    }
}

fn render(attr: &Attr) -> Value {
    let mut out = json!({
        "name": attr.name,
        "type": kind_name(attr.kind),
        "multiValued": attr.multi,
        "description": attr.description,
        "required": attr.required,
        "mutability": match attr.mutability {
            Mutability::ReadOnly => "readOnly",
            Mutability::ReadWrite => "readWrite",
            Mutability::Immutable => "immutable",
        },
        "returned": "default",
    });
    if matches!(attr.kind, Kind::String | Kind::Reference) {
        out["caseExact"] = json!(attr.case_exact);
        out["uniqueness"] = json!(if attr.unique { "server" } else { "none" });
    }
    if attr.kind == Kind::Reference {
        out["referenceTypes"] = json!(if attr.name == "$ref" { json!(["User", "Group"]) } else { json!(["uri"]) });
    }
    if !attr.canonical.is_empty() {
        out["canonicalValues"] = json!(attr.canonical);
    }
    if !attr.sub.is_empty() {
        out["subAttributes"] = Value::Array(attr.sub.iter().map(render).collect());
    }
    out
}

/// The /Schemas document of one schema.
pub fn schema_document(base: &str, id: &str) -> Option<Value> {
    let (name, description, attrs) = if id.eq_ignore_ascii_case(USER_SCHEMA) {
        ("User", "User Account", USER_ATTRS)
    } else if id.eq_ignore_ascii_case(GROUP_SCHEMA) {
        ("Group", "Group", GROUP_ATTRS)
    } else {
        return None;
    };
    let id = if name == "User" { USER_SCHEMA } else { GROUP_SCHEMA };
    Some(json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Schema"],
        "id": id,
        "name": name,
        "description": description,
        "attributes": attrs.iter().map(render).collect::<Vec<_>>(),
        "meta": {"resourceType": "Schema", "location": format!("{base}/Schemas/{id}")},
    }))
}

/// The /ResourceTypes document of one resource type.
pub fn resource_type_document(base: &str, name: &str) -> Option<Value> {
    let (name, endpoint, schema, description) = if name.eq_ignore_ascii_case("User") {
        ("User", "/Users", USER_SCHEMA, "The people whose agents tether governs")
    } else if name.eq_ignore_ascii_case("Group") {
        ("Group", "/Groups", GROUP_SCHEMA, "Groups whose permissions (set in tether) their members hold")
    } else {
        return None;
    };
    Some(json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ResourceType"],
        "id": name,
        "name": name,
        "endpoint": endpoint,
        "description": description,
        "schema": schema,
        "schemaExtensions": [],
        "meta": {"resourceType": "ResourceType", "location": format!("{base}/ResourceTypes/{name}")},
    }))
}

/// /ServiceProviderConfig: what tether supports, truthfully.
pub fn service_provider_config(base: &str) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
        "patch": {"supported": true},
        "bulk": {"supported": false, "maxOperations": 0, "maxPayloadSize": 0},
        "filter": {"supported": true, "maxResults": super::protocol::MAX_RESULTS},
        "changePassword": {"supported": false},
        "sort": {"supported": false},
        "etag": {"supported": false},
        "authenticationSchemes": [{
            "type": "oauthbearertoken",
            "name": "Bearer credential",
            "description": "A tether API credential of role provisioner (or admin) as `Authorization: Bearer <credential>`",
            "primary": true,
        }],
        "meta": {"resourceType": "ServiceProviderConfig", "location": format!("{base}/ServiceProviderConfig")},
    })
}
