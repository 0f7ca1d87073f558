//! Groups: created and filled by the identity provider (SCIM), granted permissions by an admin.
//! A user's effective permissions are their own and their groups'; every change that can narrow
//! them (a member removed, a group deleted, a group's permissions narrowed) is a trigger with the
//! targeted cascade of a permissions change: only sessions holding a scope a member lost end.

use std::collections::BTreeSet;

use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;

use super::cascade::{noop_receipt, Cascade};
use super::users::narrow_to_effective;
use crate::audit::NewEvent;
use crate::domain::access::ManagesUsers;
use crate::domain::*;
use crate::store::groups;
use crate::store::{audit, users, Tx};

/// Most members one request may name (a SCIM POST or PUT of a group, the values of a PATCH); the
/// API layer counts them as sent.
pub const MAX_MEMBERS_PER_REQUEST: usize = 1000;

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetGroupPermissions {
    pub permissions: ScopeSet,
    pub reason: Option<Reason>,
}

/// What the identity provider says a group is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSpec {
    pub display_name: String,
    pub external_id: Option<String>,
    pub members: BTreeSet<UserId>,
}

/// Checks a group's names, and that each newly named member is a live user (members already in
/// the group are not looked up again: a PATCH of a large group costs what it adds).
fn check_spec(
    tx: &Tx<'_>,
    caller: &impl ManagesUsers,
    spec: &GroupSpec,
    this: Option<GroupId>,
    new_members: &[UserId],
) -> Result<()> {
    if spec.display_name.trim().is_empty() || spec.display_name.chars().count() > 256 {
        return Err(Error::invalid("`displayName` must be 1 to 256 characters"));
    }
    if spec.external_id.as_ref().is_some_and(|e| e.is_empty() || e.chars().count() > 256) {
        return Err(Error::invalid("`externalId` must be 1 to 256 characters"));
    }
    if let Some(ext) = &spec.external_id {
        if groups::group_by_external_id(tx.conn(), ext)?.is_some_and(|g| Some(g) != this) {
            return Err(Error::conflict(format!("a group with externalId {ext:?} exists")));
        }
    }
    for member in new_members {
        let user = users::get_user(tx.conn(), caller.visibility(), *member)
            .map_err(|_| Error::invalid(format!("member {member} is not a user")))?;
        if user.ended_at.is_some() {
            return Err(Error::invalid(format!("member {member} is not a user")));
        }
    }
    Ok(())
}

/// Creates a group with its members (no permissions: an admin grants them in tether).
pub fn create_group(tx: &mut Tx<'_>, caller: &impl ManagesUsers, spec: GroupSpec) -> Result<Group> {
    if spec.members.len() > MAX_MEMBERS_PER_REQUEST {
        return Err(Error::invalid(format!("at most {MAX_MEMBERS_PER_REQUEST} members per request")));
    }
    let members: Vec<UserId> = spec.members.iter().copied().collect();
    check_spec(tx, caller, &spec, None, &members)?;
    let group = Group {
        id: GroupId::generate(),
        display_name: spec.display_name,
        external_id: spec.external_id,
        permissions: ScopeSet::new(),
        members: spec.members.iter().copied().collect(),
        created_at: tx.now(),
        modified_at: tx.now(),
    };
    groups::insert_group(tx, &group)?;
    for m in &group.members {
        groups::add_member(tx, group.id, *m)?;
    }
    tx.audit(NewEvent::new(caller.acting_actor(), "group.created", Subject::new("group", group.id)).details(json!({
        "display_name": group.display_name, "external_id": group.external_id, "members": group.members,
    })))?;
    groups::get_group(tx.conn(), group.id)
}

/// Makes a group what `spec` says (SCIM PUT, and PATCH after its operations are applied). Removed
/// members lose what the group granted them: one `group.members_changed` trigger, with the
/// targeted cascade for each of them. `None` for the receipt when the members did not change.
pub fn replace_group(
    tx: &mut Tx<'_>,
    caller: &impl ManagesUsers,
    id: GroupId,
    spec: GroupSpec,
) -> Result<(Group, Option<Receipt>)> {
    let group = groups::get_group(tx.conn(), id)?;
    let before: BTreeSet<UserId> = group.members.iter().copied().collect();
    let added: Vec<UserId> = spec.members.difference(&before).copied().collect();
    let removed: Vec<UserId> = before.difference(&spec.members).copied().collect();
    check_spec(tx, caller, &spec, Some(id), &added)?;
    let subject = Subject::new("group", id);
    if group.display_name != spec.display_name || group.external_id != spec.external_id {
        groups::set_group_names(tx, id, &spec.display_name, spec.external_id.as_deref())?;
        tx.audit(NewEvent::new(caller.acting_actor(), "group.updated", subject.clone()).details(json!({
            "display_name": spec.display_name, "external_id": spec.external_id,
        })))?;
    }
    if added.is_empty() && removed.is_empty() {
        return Ok((groups::get_group(tx.conn(), id)?, None));
    }
    let removed_users =
        removed.iter().map(|u| users::get_user(tx.conn(), caller.visibility(), *u)).collect::<Result<Vec<_>>>()?;
    for u in &added {
        groups::add_member(tx, id, *u)?;
    }
    for u in &removed {
        groups::remove_member(tx, id, *u)?;
    }
    groups::touch_group(tx, id)?;
    let trigger = NewEvent::new(caller.acting_actor(), "group.members_changed", subject)
        .details(json!({"added": added, "removed": removed, "display_name": spec.display_name}));
    let mut cascade = Cascade::start(tx, trigger)?;
    for user in &removed_users {
        narrow_to_effective(tx, caller, &mut cascade, user)?;
    }
    let receipt = cascade.receipt(tx)?;
    Ok((groups::get_group(tx.conn(), id)?, Some(receipt)))
}

/// Takes an ended user out of its groups (SCIM DELETE), recorded by the caller's event. The user
/// was disabled in the same command, so this revokes nothing more and is no trigger of its own.
pub fn leave_groups(tx: &mut Tx<'_>, user: UserId, groups: &[GroupId]) -> Result<()> {
    for group in groups {
        groups::remove_member(tx, *group, user)?;
        groups::touch_group(tx, *group)?;
    }
    Ok(())
}

/// Deletes a group: its members lose what it granted (`group.deleted`, with the cascade).
pub fn delete_group(tx: &mut Tx<'_>, caller: &impl ManagesUsers, id: GroupId) -> Result<Receipt> {
    let group = groups::get_group(tx.conn(), id)?;
    let members = group
        .members
        .iter()
        .map(|u| users::get_user(tx.conn(), caller.visibility(), *u))
        .collect::<Result<Vec<_>>>()?;
    groups::delete_group(tx, id)?;
    let trigger = NewEvent::new(caller.acting_actor(), "group.deleted", Subject::new("group", id)).details(json!({
        "display_name": group.display_name, "external_id": group.external_id, "members": group.members,
        "permissions": group.permissions,
    }));
    let mut cascade = Cascade::start(tx, trigger)?;
    for user in &members {
        narrow_to_effective(tx, caller, &mut cascade, user)?;
    }
    cascade.receipt(tx)
}

/// Sets what a group grants its members. Narrowing is a permissions change for every member:
/// only sessions holding a scope a member no longer has (through this group, another, or their
/// own permissions) end.
pub fn set_group_permissions<C: ManagesUsers>(
    tx: &mut Tx<'_>,
    caller: &C,
    id: GroupId,
    req: SetGroupPermissions,
) -> Result<(Group, Receipt)> {
    let reason = req.reason.map(Reason::into_string);
    let group = groups::get_group(tx.conn(), id)?;
    let subject = Subject::new("group", id);
    if group.permissions == req.permissions {
        let earlier =
            audit::last_event_for(tx.conn(), &id.to_string(), &["group.permissions_changed", "group.created"])?;
        return Ok((group, noop_receipt(tx, earlier, subject)));
    }
    let members = group
        .members
        .iter()
        .map(|u| users::get_user(tx.conn(), caller.visibility(), *u))
        .collect::<Result<Vec<_>>>()?;
    let removed = group.permissions.difference(&req.permissions);
    let added = req.permissions.difference(&group.permissions);
    groups::set_group_permissions(tx, id, &req.permissions)?;
    let trigger =
        NewEvent::new(caller.acting_actor(), "group.permissions_changed", subject).reason(reason).details(json!({
            "removed": removed, "added": added, "permissions": req.permissions,
        }));
    let mut cascade = Cascade::start(tx, trigger)?;
    if !removed.is_empty() {
        for user in &members {
            narrow_to_effective(tx, caller, &mut cascade, user)?;
        }
    }
    let receipt = cascade.receipt(tx)?;
    Ok((groups::get_group(tx.conn(), id)?, receipt))
}
