//! Reads the PostgreSQL writer's appending commands (opening a session) share: the calling
//! credential's liveness, a delegation, the chain it stands on, the live webhooks. An appending
//! command changes none of them; the first command of any other kind ends the memo
//! ([`super::tx::CommandScope::begin`]).
//!
//! The memo outlives its batch. What it lacks is read before the next batch takes the chain lock
//! ([`Memo::read_ahead`]), so the lock every node's writes wait for is not held for reads, and a
//! delegation sessions keep being opened on is not read again at all. It is trusted under the
//! lock only while nothing it was read from has changed: migration 0007 counts every change to
//! those tables on the lock's row, and the memo starts again whenever the count is not the one
//! it was read at ([`Memo::under_lock`]). On SQLite, where a read costs no round trip, every read
//! goes to the database.

use std::collections::hash_map::{Entry, HashMap};
use std::hash::Hash;
use std::sync::Arc;

use super::conn::Conn;
use super::db::db_error;
use super::tx::{Memo, Subscriber, Tx};
use crate::domain::{
    AgentId, ChainLinks, CredentialId, Delegation, DelegationId, IntegrationId, Result, Timestamp, UserId, Visibility,
};

/// How many delegations the memo keeps between batches before it starts again empty.
const MAX_REMEMBERED: usize = 10_000;

impl Memo {
    fn at(changes: i64) -> Memo {
        Memo { changes, ..Memo::default() }
    }

    fn expires(&mut self, at: Option<Timestamp>) {
        self.live_until = match (self.live_until, at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }

    /// Reads whether the credential may act at `now` into the memo, with its expiry.
    fn read_credential(&mut self, conn: &Conn, id: CredentialId, now: Timestamp) -> Result<bool> {
        let until = super::credentials::credential_live_until(conn, id, now)?;
        self.expires(until.flatten());
        self.credentials.insert(id, until.is_some());
        Ok(until.is_some())
    }

    /// Reads the webhooks live at `now` into the memo, with their owners' first expiry.
    fn read_subscribers(&mut self, conn: &Conn, now: Timestamp) -> Result<Arc<Vec<Subscriber>>> {
        let (live, until) = super::webhooks::live_subscribers_until(conn, now)?;
        let live = Arc::new(live);
        self.expires(until);
        self.subscribers = Some(live.clone());
        Ok(live)
    }

    /// Reads, before the batch takes the chain lock and at `now`, what its leading openings will
    /// read and `memo` lacks: the liveness of `credentials`, the delegations `wanted` with their
    /// chains, the live webhooks. The lock row's count of changes is read first; if it is not the
    /// memo's, the memo starts again from it. Each read is a statement of its own, on a snapshot
    /// no older than the count's. With nothing lacking, nothing is read.
    pub(super) fn read_ahead(
        memo: &mut Option<Memo>,
        conn: &Conn,
        now: Timestamp,
        credentials: &[CredentialId],
        wanted: &[(Visibility, DelegationId)],
    ) -> Result<()> {
        let lacks = |m: &Memo| {
            m.subscribers.is_none()
                || credentials.iter().any(|id| !m.credentials.contains_key(id))
                || wanted.iter().any(|&(vis, id)| !m.delegations.contains_key(&(id, vis)))
        };
        if memo.as_ref().is_some_and(|m| !lacks(m)) {
            return Ok(());
        }
        let changes = conn
            .query_row("SELECT changes FROM audit_chain_lock WHERE id = 1", rusqlite::params![], |r| r.get(0))
            .map_err(db_error)?;
        let kept = match memo.take() {
            Some(m) if m.changes == changes && m.delegations.len() < MAX_REMEMBERED => m,
            _ => Memo::at(changes),
        };
        let kept = memo.insert(kept);
        for &id in credentials {
            if !kept.credentials.contains_key(&id) {
                kept.read_credential(conn, id, now)?;
            }
        }
        read_delegations_into(kept, conn, wanted)?;
        if kept.subscribers.is_none() {
            kept.read_subscribers(conn, now)?;
        }
        Ok(())
    }

    /// The memo a batch starts with once it holds the chain lock: `remembered` if it is what a
    /// read would find now, that is, nothing it was read from has changed since its count (the
    /// lock row's count, as [`super::tx::Batch::begin`] found it, is `changes_at_lock`) and no
    /// credential it found live has expired by the batch's time `now`; otherwise an empty one.
    /// Nothing can change while the lock is held (a change updates the lock's row), so what the
    /// batch reads into it stays true until the batch's own commands change something.
    pub(super) fn under_lock(remembered: Option<Memo>, changes_at_lock: i64, now: Timestamp) -> (Memo, bool) {
        match remembered {
            Some(m) if m.changes == changes_at_lock && m.live_until.is_none_or(|until| now < until) => (m, true),
            _ => (Memo::at(changes_at_lock), false),
        }
    }
}

impl Tx<'_> {
    /// Whether the credential may still act now ([`super::credentials::credential_is_live`]).
    pub fn credential_is_live(&self, id: CredentialId) -> Result<bool> {
        let mut memo = self.memo.borrow_mut();
        let Some(kept) = memo.as_mut() else {
            drop(memo);
            return super::credentials::credential_is_live(self.conn(), id, self.now());
        };
        match kept.credentials.get(&id) {
            Some(&live) => Ok(live),
            None => kept.read_credential(self.read_conn(), id, self.now()),
        }
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

    /// Starts the batch's memo (PostgreSQL; on SQLite there is none and `memo` is dropped).
    pub(super) fn start_memo(&mut self, memo: Memo) {
        if let Some(kept) = self.memo.get_mut() {
            *kept = memo;
        }
    }

    /// The memo, if every command of the batch only appended: still true once the batch ends,
    /// for the next one to start from. A command of another kind may have changed what it holds.
    pub(super) fn take_memo(&mut self) -> Option<Memo> {
        self.memo.get_mut().take()
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
        match &mut *self.memo.borrow_mut() {
            Some(memo) => memo.read_subscribers(self.read_conn(), self.now()),
            None => Ok(Arc::new(super::webhooks::live_subscribers_until(self.read_conn(), self.now())?.0)),
        }
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
