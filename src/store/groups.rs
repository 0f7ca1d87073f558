//! Groups: rows, members, and the permissions a user holds through them.

use super::conn::{Conn, OptionalExtension};
use rusqlite::params;

use super::db::db_error;
use super::matching::{Column, Match};
use super::query::{exec, Page, PageRequest};
use super::tx::Tx;
use crate::domain::*;

const GROUP_COLUMNS: &str = "id, display_name, external_id, permissions, created_at, modified_at";

fn group_row(r: &super::conn::Row<'_>) -> rusqlite::Result<Group> {
    Ok(Group {
        id: r.get(0)?,
        display_name: r.get(1)?,
        external_id: r.get(2)?,
        permissions: r.get(3)?,
        members: Vec::new(),
        created_at: r.get(4)?,
        modified_at: r.get(5)?,
    })
}

/// Fills each group's members.
fn with_members(conn: &Conn, mut groups: Vec<Group>) -> Result<Vec<Group>> {
    let mut st = conn
        .prepare_cached("SELECT user_id FROM group_members WHERE group_id = ?1 ORDER BY user_id")
        .map_err(db_error)?;
    for g in &mut groups {
        g.members = st
            .query_map([g.id.to_string()], |r| r.get(0))
            .map_err(db_error)?
            .collect::<super::conn::DbResult<Vec<UserId>>>()
            .map_err(db_error)?;
    }
    Ok(groups)
}

pub fn get_group(conn: &Conn, id: GroupId) -> Result<Group> {
    let group = conn
        .prepare_cached(&format!("SELECT {GROUP_COLUMNS} FROM groups WHERE id = ?1"))
        .and_then(|mut st| st.query_row([id.to_string()], group_row).optional())
        .map_err(db_error)?
        .ok_or(Error::NotFound("group"))?;
    Ok(with_members(conn, vec![group])?.remove(0))
}

pub fn list_groups(conn: &Conn, page: &PageRequest) -> Result<Page<Group>> {
    let cursor = page.cursor.clone().unwrap_or_default();
    let mut groups = conn
        .prepare_cached(&format!("SELECT {GROUP_COLUMNS} FROM groups WHERE id > ?1 ORDER BY id LIMIT ?2"))
        .and_then(|mut st| {
            st.query_map(params![cursor, (page.limit + 1) as i64], group_row)?
                .collect::<super::conn::DbResult<Vec<_>>>()
        })
        .map_err(db_error)?;
    let next_cursor = if groups.len() > page.limit {
        groups.truncate(page.limit);
        groups.last().map(|g| g.id.to_string())
    } else {
        None
    };
    Ok(Page { items: with_members(conn, groups)?, next_cursor })
}

/// The columns a SCIM filter on groups compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupColumn {
    Id,
    DisplayName,
    ExternalId,
}

impl Column for GroupColumn {
    fn sql(self) -> &'static str {
        match self {
            GroupColumn::Id => "id",
            GroupColumn::DisplayName => "display_name",
            GroupColumn::ExternalId => "external_id",
        }
    }

    fn case_exact(self) -> bool {
        // RFC 7643 §4.2 and §3.1: displayName is not case-exact; id and externalId are.
        self != GroupColumn::DisplayName
    }
}

/// One window of the groups matching a filter, oldest first, and how many match in all.
pub fn find_groups(
    conn: &Conn,
    filter: &Match<GroupColumn>,
    offset: usize,
    count: usize,
) -> Result<(usize, Vec<Group>)> {
    let mut clause = String::new();
    let mut values = Vec::new();
    filter.write(conn.dialect(), &mut clause, &mut values);
    let total: i64 = conn
        .prepare(&format!("SELECT count(*) FROM groups WHERE {clause}"))
        .and_then(|mut st| st.query_row(&values, |r| r.get(0)))
        .map_err(db_error)?;
    values.push(rusqlite::types::Value::Integer(count as i64));
    values.push(rusqlite::types::Value::Integer(i64::try_from(offset).unwrap_or(i64::MAX)));
    let groups = conn
        .prepare(&format!("SELECT {GROUP_COLUMNS} FROM groups WHERE {clause} ORDER BY id LIMIT ? OFFSET ?"))
        .and_then(|mut st| st.query_map(&values, group_row)?.collect::<super::conn::DbResult<Vec<_>>>())
        .map_err(db_error)?;
    Ok((usize::try_from(total).unwrap_or(0), with_members(conn, groups)?))
}

pub fn insert_group(tx: &Tx<'_>, g: &Group) -> Result<()> {
    exec(
        tx,
        "INSERT INTO groups (id, display_name, external_id, permissions, created_at, modified_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![g.id.to_string(), g.display_name, g.external_id, g.permissions.to_json(), g.created_at.millis(), g.modified_at.millis()],
    )
    .map(drop)
}

/// The group with this externalId (compared exactly), if any: the writer checks it before a
/// write, so a taken externalId is a 409, and the UNIQUE constraint only a safety net.
pub fn group_by_external_id(conn: &Conn, external_id: &str) -> Result<Option<GroupId>> {
    conn.prepare_cached("SELECT id FROM groups WHERE external_id = ?1")
        .and_then(|mut st| st.query_row([external_id], |r| r.get(0)).optional())
        .map_err(db_error)
}

pub fn set_group_names(tx: &Tx<'_>, id: GroupId, display_name: &str, external_id: Option<&str>) -> Result<()> {
    exec(
        tx,
        "UPDATE groups SET display_name = ?2, external_id = ?3, modified_at = ?4 WHERE id = ?1",
        params![id.to_string(), display_name, external_id, tx.now().millis()],
    )
    .map(drop)
}

pub fn set_group_permissions(tx: &Tx<'_>, id: GroupId, permissions: &ScopeSet) -> Result<()> {
    exec(
        tx,
        "UPDATE groups SET permissions = ?2, modified_at = ?3 WHERE id = ?1",
        params![id.to_string(), permissions.to_json(), tx.now().millis()],
    )
    .map(drop)
}

pub fn add_member(tx: &Tx<'_>, group: GroupId, user: UserId) -> Result<()> {
    exec(
        tx,
        "INSERT INTO group_members (group_id, user_id) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
        params![group.to_string(), user.to_string()],
    )
    .map(drop)
}

pub fn remove_member(tx: &Tx<'_>, group: GroupId, user: UserId) -> Result<()> {
    exec(
        tx,
        "DELETE FROM group_members WHERE group_id = ?1 AND user_id = ?2",
        params![group.to_string(), user.to_string()],
    )
    .map(drop)
}

pub fn touch_group(tx: &Tx<'_>, id: GroupId) -> Result<()> {
    exec(tx, "UPDATE groups SET modified_at = ?2 WHERE id = ?1", params![id.to_string(), tx.now().millis()]).map(drop)
}

pub fn delete_group(tx: &Tx<'_>, id: GroupId) -> Result<()> {
    exec(tx, "DELETE FROM group_members WHERE group_id = ?1", params![id.to_string()])?;
    exec(tx, "DELETE FROM groups WHERE id = ?1", params![id.to_string()]).map(drop)
}

/// The groups a user is in, by name.
pub fn groups_of(conn: &Conn, user: UserId) -> Result<Vec<GroupRef>> {
    conn.prepare_cached(
        "SELECT g.id, g.display_name FROM group_members m JOIN groups g ON g.id = m.group_id
         WHERE m.user_id = ?1 ORDER BY g.id",
    )
    .and_then(|mut st| {
        st.query_map([user.to_string()], |r| Ok(GroupRef { id: r.get(0)?, display_name: r.get(1)? }))?
            .collect::<super::conn::DbResult<Vec<_>>>()
    })
    .map_err(db_error)
}

/// The union of the permissions of the user's groups.
pub fn permissions_through_groups(conn: &Conn, user: UserId) -> Result<ScopeSet> {
    let sets = conn
        .prepare_cached(
            "SELECT g.permissions FROM group_members m JOIN groups g ON g.id = m.group_id WHERE m.user_id = ?1",
        )
        .and_then(|mut st| {
            st.query_map([user.to_string()], |r| r.get::<_, ScopeSet>(0))?.collect::<super::conn::DbResult<Vec<_>>>()
        })
        .map_err(db_error)?;
    Ok(sets.iter().flat_map(ScopeSet::iter).cloned().collect())
}

/// Fills a user's groups and effective permissions (own ∪ their groups').
pub fn fill_membership(conn: &Conn, user: &mut User) -> Result<()> {
    let rows = conn
        .prepare_cached(
            "SELECT g.id, g.display_name, g.permissions FROM group_members m JOIN groups g ON g.id = m.group_id
             WHERE m.user_id = ?1 ORDER BY g.id",
        )
        .and_then(|mut st| {
            st.query_map([user.id.to_string()], |r| {
                Ok((GroupRef { id: r.get(0)?, display_name: r.get(1)? }, r.get::<_, ScopeSet>(2)?))
            })?
            .collect::<super::conn::DbResult<Vec<_>>>()
        })
        .map_err(db_error)?;
    if rows.is_empty() {
        return Ok(());
    }
    user.effective_permissions =
        user.permissions.iter().chain(rows.iter().flat_map(|(_, p)| p.iter())).cloned().collect();
    user.groups = rows.into_iter().map(|(g, _)| g).collect();
    Ok(())
}
