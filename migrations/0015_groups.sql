-- Groups (SCIM /Groups): a group grants its permissions to its members; a user's effective
-- permissions are their own and those of every group they are in (docs/api.md, "Groups").
-- Also the SCIM attributes of users that tether keeps only to give them back (name, every email).

CREATE TABLE groups (
    id           TEXT PRIMARY KEY,
    display_name TEXT NOT NULL,
    -- The identity provider's id of the group, compared exactly (SCIM caseExact).
    external_id  TEXT UNIQUE,
    -- Canonical JSON array of scopes, set by an admin through PUT /v1/groups/{id}/permissions.
    permissions  TEXT NOT NULL DEFAULT '[]',
    created_at   INTEGER NOT NULL,
    modified_at  INTEGER NOT NULL
) STRICT;
CREATE INDEX groups_by_display_name ON groups (display_name COLLATE NOCASE);

-- Membership; a group's members are users. Deleting a group deletes its rows here (its history
-- is in the audit log).
CREATE TABLE group_members (
    group_id TEXT NOT NULL REFERENCES groups(id),
    user_id  TEXT NOT NULL REFERENCES users(id),
    PRIMARY KEY (group_id, user_id)
) STRICT, WITHOUT ROWID;
-- A user's groups, for their effective permissions on every session and delegation check.
CREATE INDEX group_members_by_user ON group_members (user_id, group_id);

-- What a SCIM client sent that tether does not otherwise hold, given back on reads: the `name`
-- object and the whole `emails` list (the primary address is also users.email). `modified_at`
-- is meta.lastModified of SCIM answers.
CREATE TABLE user_scim_attributes (
    user_id     TEXT PRIMARY KEY REFERENCES users(id),
    attributes  TEXT NOT NULL,
    modified_at INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
