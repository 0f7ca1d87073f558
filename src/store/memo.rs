//! Reads the commands of one PostgreSQL write batch share while each of them only appends
//! (opening a session): the calling credential's liveness, a delegation, the chain it stands on,
//! the live webhooks. They cost one round trip for the batch instead of one per command, and
//! stay true for it: an appending command changes none of them, and the first command of any
//! other kind ends the memo for the rest of the batch ([`super::tx::CommandScope::begin`]).
//!
//! They are read before the batch takes the chain lock ([`ReadAhead`]), so that the lock every
//! node's writes wait for is not held for them, and kept only if nothing they were read from
//! changed before the lock was granted; otherwise they are read again under it. On SQLite, where
//! a read costs no round trip, every read goes to the database.

use std::collections::hash_map::{Entry, HashMap};
use std::hash::Hash;
use std::sync::Arc;

use super::conn::Conn;
use super::db::db_error;
use super::tx::{Memo, Subscriber, Tx};
use crate::domain::{
    AgentId, ChainLinks, CredentialId, Delegation, DelegationId, IntegrationId, Result, Timestamp, UserId, Visibility,
};

/// What a batch's leading openings will read, read before the batch takes the chain lock.
pub(super) struct ReadAhead {
    memo: Memo,
    /// The lock row's count of changes to the tables these were read from (migration 0007),
    /// read before any of them.
    changes: i64,
    /// The first expiry of a credential found live (a caller's, a webhook's owner's): from then
    /// on, what was read is no longer what a read would find.
    live_until: Option<Timestamp>,
}

impl ReadAhead {
    /// Reads, at `now`, the liveness of `credentials`, the delegations `wanted` with their
    /// chains, and the live webhooks. Each read is a statement of its own, on a snapshot no
    /// older than the count's.
    pub(super) fn read(
        conn: &Conn,
        now: Timestamp,
        credentials: &[CredentialId],
        wanted: &[(Visibility, DelegationId)],
    ) -> Result<ReadAhead> {
        let changes = conn
            .query_row("SELECT changes FROM audit_chain_lock WHERE id = 1", rusqlite::params![], |r| r.get(0))
            .map_err(db_error)?;
        let mut memo = Memo::default();
        let mut live_until = None;
        for &id in credentials {
            if let Entry::Vacant(place) = memo.credentials.entry(id) {
                let until = super::credentials::credential_live_until(conn, id, now)?;
                live_until = earliest(live_until, until.flatten());
                place.insert(until.is_some());
            }
        }
        read_delegations_into(&mut memo, conn, wanted)?;
        let (subscribers, until) = super::webhooks::live_subscribers_until(conn, now)?;
        memo.subscribers = Some(Arc::new(subscribers));
        Ok(ReadAhead { memo, changes, live_until: earliest(live_until, until) })
    }
}

fn earliest(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

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

    /// Starts the memo from what was read ahead of the lock, if it is what a read would find
    /// now: nothing it was read from has changed since (the lock row's count of changes, as
    /// [`super::tx::Batch::begin`] found it under the lock, is `changes_at_lock`), and no
    /// credential it found live has expired by the batch's time. Otherwise the memo starts
    /// empty and every read goes to the database under the lock. Whether the reads were kept.
    pub(super) fn keep_read_ahead(&mut self, ahead: ReadAhead, changes_at_lock: i64) -> bool {
        let expired = ahead.live_until.is_some_and(|until| until <= self.now);
        let memo = self.memo.get_mut();
        if memo.is_none() || ahead.changes != changes_at_lock || expired {
            return false;
        }
        *memo = Some(ahead.memo);
        true
    }

    /// Reads the delegations `wanted` the memo lacks (each through its visibility) with the
    /// chains they stand on, one statement per visibility, before the batch's commands run:
    /// those commands then find them there.
    pub(super) fn read_delegations_ahead(&self, wanted: &[(Visibility, DelegationId)]) -> Result<()> {
        let mut memo = self.memo.borrow_mut();
        let Some(kept) = memo.as_mut() else { return Ok(()) };
        read_delegations_into(kept, self.read_conn(), wanted)
    }

    /// The live webhooks: the memo's, else read (and kept while there is a memo).
    pub(super) fn remembered_subscribers(&self) -> Result<Arc<Vec<Subscriber>>> {
        if let Some(held) = self.memo.borrow().as_ref().and_then(|m| m.subscribers.clone()) {
            return Ok(held);
        }
        let live = Arc::new(super::webhooks::live_subscribers(self.read_conn(), self.now())?);
        if let Some(memo) = &mut *self.memo.borrow_mut() {
            memo.subscribers = Some(live.clone());
        }
        Ok(live)
    }
}

/// Reads the delegations of `wanted` that `memo` lacks into it, with their chains, one statement
/// per visibility. What is not found is left out: the command reading it then finds nothing
/// either, by its own read.
fn read_delegations_into(memo: &mut Memo, conn: &Conn, wanted: &[(Visibility, DelegationId)]) -> Result<()> {
    let mut by_visibility: HashMap<Visibility, Vec<DelegationId>> = HashMap::new();
    for &(vis, id) in wanted {
        if memo.delegations.contains_key(&(id, vis)) {
            continue;
        }
        let ids = by_visibility.entry(vis).or_default();
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    for (vis, ids) in by_visibility {
        for (delegation, chain) in super::delegations::delegations_with_chains(conn, vis, &ids)? {
            memo.chains.insert((chain.user.id, chain.agent.id, chain.integration.id), chain);
            memo.delegations.insert((delegation.id, vis), delegation);
        }
    }
    Ok(())
}
