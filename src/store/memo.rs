//! Reads the commands of one PostgreSQL write batch share while each of them only appends
//! (opening a session): the calling credential's liveness, a delegation, the chain it stands on,
//! the live webhooks. Read once under the batch's chain lock, they cost one round trip for the
//! batch instead of one per command inside the lock, and stay true for it: an appending command
//! changes none of them, and the first command of any other kind ends the memo for the rest of
//! the batch ([`super::tx::CommandScope::begin`]). On SQLite, where a read costs no round trip,
//! every read goes to the database.

use std::sync::Arc;

use super::tx::{Subscriber, Tx};
use crate::domain::{
    AgentId, ChainLinks, CredentialId, Delegation, DelegationId, IntegrationId, Result, UserId, Visibility,
};

impl Tx<'_> {
    /// Whether the credential may still act now ([`super::credentials::credential_is_live`]).
    pub fn credential_is_live(&self, id: CredentialId) -> Result<bool> {
        if let Some(live) = self.memo.borrow().as_ref().and_then(|m| m.credentials.get(&id).copied()) {
            return Ok(live);
        }
        let Some(memo) = &mut *self.memo.borrow_mut() else {
            return super::credentials::credential_is_live(self.conn(), id, self.now());
        };
        let live = super::credentials::credential_is_live(self.read_conn(), id, self.now())?;
        memo.credentials.insert(id, live);
        Ok(live)
    }

    /// A delegation through the caller's visibility ([`super::delegations::get_delegation`]).
    pub fn delegation(&self, vis: Visibility, id: DelegationId) -> Result<Delegation> {
        if let Some(Some((_, found))) =
            self.memo.borrow().as_ref().map(|m| m.delegations.get(&id).filter(|(read_as, _)| *read_as == vis))
        {
            return Ok(found.clone());
        }
        let Some(memo) = &mut *self.memo.borrow_mut() else {
            return super::delegations::get_delegation(self.conn(), vis, id);
        };
        let found = super::delegations::get_delegation(self.read_conn(), vis, id)?;
        memo.delegations.insert(id, (vis, found.clone()));
        Ok(found)
    }

    /// The user, agent, integration and platform a chain stands on, read past every caller's
    /// visibility ([`super::delegations::chain_rows`], whose `unscoped` this passes on).
    pub fn chain_rows(
        &self,
        unscoped: Visibility,
        user: UserId,
        agent: AgentId,
        integration: IntegrationId,
    ) -> Result<ChainLinks> {
        let key = (user, agent, integration);
        if let Some(found) = self.memo.borrow().as_ref().and_then(|m| m.chains.get(&key).cloned()) {
            return Ok(found);
        }
        let Some(memo) = &mut *self.memo.borrow_mut() else {
            return super::delegations::chain_rows(self.conn(), unscoped, user, agent, integration);
        };
        let found = super::delegations::chain_rows(self.read_conn(), unscoped, user, agent, integration)?;
        memo.chains.insert(key, found.clone());
        Ok(found)
    }

    /// The live webhooks an event is matched against.
    pub(super) fn remembered_subscribers(&self) -> Result<Arc<Vec<Subscriber>>> {
        if let Some(held) = self.memo.borrow().as_ref().and_then(|m| m.subscribers.clone()) {
            return Ok(held);
        }
        let live = Arc::new(self.live_subscribers()?);
        if let Some(memo) = &mut *self.memo.borrow_mut() {
            memo.subscribers = Some(live.clone());
        }
        Ok(live)
    }
}
