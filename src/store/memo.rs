//! Reads the commands of one PostgreSQL write batch share while each of them only appends
//! (opening a session): the calling credential's liveness, a delegation, the chain it stands on,
//! the live webhooks. Read once under the batch's chain lock, they cost one round trip for the
//! batch instead of one per command inside the lock, and stay true for it: an appending command
//! changes none of them, and the first command of any other kind ends the memo for the rest of
//! the batch ([`super::tx::CommandScope::begin`]). On SQLite, where a read costs no round trip,
//! every read goes to the database.

use std::collections::hash_map::{Entry, HashMap};
use std::hash::Hash;
use std::sync::Arc;

use super::conn::Conn;
use super::tx::{Memo, Subscriber, Tx};
use crate::domain::{
    AgentId, ChainLinks, CredentialId, Delegation, DelegationId, IntegrationId, Result, UserId, Visibility,
};

impl Tx<'_> {
    /// Whether the credential may still act now ([`super::credentials::credential_is_live`]).
    pub fn credential_is_live(&self, id: CredentialId) -> Result<bool> {
        self.remembered(|m| &mut m.credentials, id, |conn| super::credentials::credential_is_live(conn, id, self.now()))
    }

    /// A delegation through the caller's visibility ([`super::delegations::get_delegation`]).
    pub fn delegation(&self, vis: Visibility, id: DelegationId) -> Result<Delegation> {
        self.remembered(|m| &mut m.delegations, (id, vis), |conn| super::delegations::get_delegation(conn, vis, id))
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
        self.remembered(
            |m| &mut m.chains,
            (user, agent, integration),
            |conn| super::delegations::chain_rows(conn, unscoped, user, agent, integration),
        )
    }

    /// What `read` finds for `key`: the memo's answer, else read and kept in the memo's `field`
    /// (a failed read is not kept). With a memo the read goes out alone ([`Tx::read_conn`]):
    /// the command's held rows wait for the batch's end and it opens no savepoint for a read.
    /// Without one it is a statement of the command like any other ([`Tx::conn`]).
    fn remembered<K: Eq + Hash, V: Clone>(
        &self,
        field: impl FnOnce(&mut Memo) -> &mut HashMap<K, V>,
        key: K,
        read: impl FnOnce(&Conn) -> Result<V>,
    ) -> Result<V> {
        let mut memo = self.memo.borrow_mut();
        let Some(kept) = memo.as_mut() else {
            drop(memo);
            return read(self.conn());
        };
        match field(kept).entry(key) {
            Entry::Occupied(found) => Ok(found.get().clone()),
            Entry::Vacant(place) => Ok(place.insert(read(self.read_conn())?).clone()),
        }
    }

    /// Reads the delegations `wanted` into the memo (each through its visibility) with the chains
    /// they stand on, one statement per visibility, before the batch's commands run: those
    /// commands then find them there. One alone is left to its command's reads; what is not found
    /// is left out, and the command reading it then finds nothing either, by its own read.
    pub(super) fn read_delegations_ahead(&self, wanted: &[(Visibility, DelegationId)]) -> Result<()> {
        if wanted.len() < 2 {
            return Ok(());
        }
        let mut memo = self.memo.borrow_mut();
        let Some(kept) = memo.as_mut() else { return Ok(()) };
        let mut by_visibility: HashMap<Visibility, Vec<DelegationId>> = HashMap::new();
        for &(vis, id) in wanted {
            let ids = by_visibility.entry(vis).or_default();
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        for (vis, ids) in by_visibility {
            for (delegation, chain) in super::delegations::delegations_with_chains(self.read_conn(), vis, &ids)? {
                kept.chains.insert((chain.user.id, chain.agent.id, chain.integration.id), chain);
                kept.delegations.insert((delegation.id, vis), delegation);
            }
        }
        Ok(())
    }

    /// The live webhooks: the memo's, else read (and kept while there is a memo).
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
