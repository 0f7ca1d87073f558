//! In-memory views the writer keeps current after each commit: live sessions, credentials,
//! and the bus of committed audit events.

use hashbrown::hash_table::{Entry, HashTable};
use std::hash::{BuildHasher, Hash};
use std::sync::RwLock;

use tokio::sync::broadcast;

use crate::audit::AuditEvent;
use crate::domain::{CredentialId, SessionId, Timestamp};
use crate::store::writer::EffectSink;
use crate::store::{Effect, Withdrawn};

type Shard<K, V> = RwLock<HashTable<(K, V)>>;

/// A map split into shards, each behind its own lock: readers of different sessions never
/// contend, and a writer blocks only the one shard it touches. A key is hashed once, for its
/// shard and its place in the shard's table: the hot token tier is keyed by a token's whole text,
/// and hashing it twice showed in an authorize call's instruction count (docs/performance.md).
pub struct Sharded<K, V> {
    shards: Box<[Shard<K, V>]>,
    hasher: foldhash::fast::RandomState,
}

impl<K: Hash + Eq, V: Clone> Sharded<K, V> {
    pub fn new(shards: usize) -> Self {
        Sharded {
            shards: (0..shards.max(1)).map(|_| RwLock::new(HashTable::new())).collect(),
            hasher: foldhash::fast::RandomState::default(),
        }
    }

    /// The key's hash and its shard. A table places an entry by the hash's low bits and tags it
    /// with the top 7, so the shard comes from bits in between: one shard's keys still spread
    /// over its whole table.
    fn locate<Q: Hash + ?Sized>(&self, key: &Q) -> (u64, &Shard<K, V>) {
        let hash = self.hasher.hash_one(key);
        (hash, &self.shards[((hash >> 32) as usize) % self.shards.len()])
    }

    fn rehash(&self) -> impl Fn(&(K, V)) -> u64 + '_ {
        |(k, _)| self.hasher.hash_one(k)
    }

    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let (hash, shard) = self.locate(key);
        let shard = shard.read().unwrap_or_else(|p| p.into_inner());
        shard.find(hash, |(k, _)| k.borrow() == key).map(|(_, v)| v.clone())
    }

    pub fn insert(&self, key: K, value: V) {
        let (hash, shard) = self.locate(&key);
        self.put(&mut shard.write().unwrap_or_else(|p| p.into_inner()), hash, key, value);
    }

    /// Sets `key`'s value in a shard already locked, replacing any.
    fn put(&self, shard: &mut HashTable<(K, V)>, hash: u64, key: K, value: V) {
        match shard.entry(hash, |(k, _)| *k == key, self.rehash()) {
            Entry::Occupied(mut e) => e.get_mut().1 = value,
            Entry::Vacant(e) => {
                e.insert((key, value));
            }
        }
    }

    pub fn remove(&self, key: &K) {
        let (hash, shard) = self.locate(key);
        let mut shard = shard.write().unwrap_or_else(|p| p.into_inner());
        if let Ok(e) = shard.find_entry(hash, |(k, _)| k == key) {
            e.remove();
        }
    }

    /// Inserts unless the key is present; returns the value the map now holds for it.
    pub fn insert_if_absent(&self, key: K, value: V) -> V {
        let (hash, shard) = self.locate(&key);
        let mut shard = shard.write().unwrap_or_else(|p| p.into_inner());
        match shard.entry(hash, |(k, _)| *k == key, self.rehash()) {
            Entry::Occupied(e) => e.get().1.clone(),
            Entry::Vacant(e) => e.insert((key, value)).get().1.clone(),
        }
    }

    /// Inserts, first evicting an arbitrary entry of the shard if it holds `cap` already.
    pub fn insert_bounded(&self, key: K, value: V, cap: usize)
    where
        K: Clone,
    {
        let (hash, shard) = self.locate(&key);
        let mut shard = shard.write().unwrap_or_else(|p| p.into_inner());
        if shard.len() >= cap && shard.find(hash, |(k, _)| *k == key).is_none() {
            // Table order follows the randomly seeded hashes, so this is random eviction.
            if let Some(victim) = shard.iter().next().map(|(k, _)| k.clone()) {
                let victim_hash = self.hasher.hash_one(&victim);
                if let Ok(e) = shard.find_entry(victim_hash, |(k, _)| *k == victim) {
                    e.remove();
                }
            }
        }
        self.put(&mut shard, hash, key, value);
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.read().unwrap_or_else(|p| p.into_inner()).len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every entry for which `keep` is false.
    pub fn retain(&self, mut keep: impl FnMut(&K, &V) -> bool) {
        for shard in self.shards.iter() {
            shard.write().unwrap_or_else(|p| p.into_inner()).retain(|(k, v)| keep(k, v));
        }
    }
}

/// What the hot path needs to know about a session: 16 bytes of value per session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveSession {
    pub revoked: bool,
    pub expires_at: Timestamp,
}

/// Session id → live state, for every session whose tokens could still verify.
pub struct LiveView {
    sessions: Sharded<u128, LiveSession>,
}

impl Default for LiveView {
    fn default() -> Self {
        LiveView { sessions: Sharded::new(64) }
    }
}

impl LiveView {
    pub fn get(&self, id: SessionId) -> Option<LiveSession> {
        self.sessions.get(&id.uuid().as_u128())
    }

    pub fn set(&self, id: SessionId, state: LiveSession) {
        self.sessions.insert(id.uuid().as_u128(), state);
    }

    /// Sets `state` unless the view already holds the session (what it holds is newer).
    pub fn insert_if_absent(&self, id: SessionId, state: LiveSession) {
        self.sessions.insert_if_absent(id.uuid().as_u128(), state);
    }

    pub fn remove(&self, id: SessionId) {
        self.sessions.remove(&id.uuid().as_u128());
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Forgets sessions past expiry: their tokens fail their own expiry check anyway, and an
    /// unknown session is denied.
    pub fn sweep_expired(&self, now: Timestamp) {
        self.sessions.retain(|_, s| s.expires_at > now);
    }
}

/// What the API needs to know about a credential on every request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CredentialState {
    pub revoked: bool,
    pub expires_at: Option<Timestamp>,
}

impl CredentialState {
    /// Not revoked and not past its expiry at `now`.
    pub fn is_live(&self, now: Timestamp) -> bool {
        !self.revoked && self.expires_at.is_none_or(|t| t > now)
    }
}

/// The in-memory views and the event bus, fed by the writer after each commit.
pub struct Views {
    pub sessions: LiveView,
    pub credentials: Sharded<CredentialId, CredentialState>,
    pub events: broadcast::Sender<std::sync::Arc<AuditEvent>>,
    /// Signalled when webhook deliveries were committed.
    pub outbox: std::sync::Arc<tokio::sync::Notify>,
    /// Signalled when Shared Signals SETs were committed.
    pub sets: std::sync::Arc<tokio::sync::Notify>,
}

impl Default for Views {
    fn default() -> Self {
        Views {
            sessions: LiveView::default(),
            credentials: Sharded::new(8),
            events: broadcast::channel(4096).0,
            outbox: std::sync::Arc::new(tokio::sync::Notify::new()),
            sets: std::sync::Arc::new(tokio::sync::Notify::new()),
        }
    }
}

impl EffectSink for Views {
    fn apply(&self, effects: &[Effect]) {
        for effect in effects {
            match effect {
                Effect::SessionActive { id, expires_at } => {
                    self.sessions.set(*id, LiveSession { revoked: false, expires_at: *expires_at })
                }
                Effect::SessionRevoked { id, expires_at } => {
                    self.sessions.set(*id, LiveSession { revoked: true, expires_at: *expires_at })
                }
                Effect::Credential { id, revoked, expires_at } => {
                    self.credentials.insert(*id, CredentialState { revoked: *revoked, expires_at: *expires_at })
                }
                Effect::OutboxWritten => {
                    self.outbox.notify_one();
                    self.sets.notify_one();
                }
                Effect::Audited(event) => {
                    // No subscriber is fine; a lagging one is told it lagged and resumes from the store.
                    let _ = self.events.send(event.clone());
                }
            }
        }
    }

    fn wants_events(&self) -> bool {
        self.events.receiver_count() > 0
    }

    fn session_expiry(&self, id: crate::domain::SessionId) -> Option<crate::domain::Timestamp> {
        self.sessions.get(id).map(|s| s.expires_at)
    }

    fn withdraw(&self, effects: &[Effect]) -> Withdrawn {
        let mut withdrawn = Withdrawn::default();
        for effect in effects {
            match effect {
                Effect::SessionRevoked { id, expires_at } => {
                    let before = self.sessions.get(*id).map(|s| (s.revoked, s.expires_at));
                    withdrawn.sessions.push((*id, before));
                    self.sessions.set(*id, LiveSession { revoked: true, expires_at: *expires_at });
                }
                Effect::Credential { id, revoked: true, expires_at } => {
                    let before = self.credentials.get(id).map(|c| (c.revoked, c.expires_at));
                    withdrawn.credentials.push((*id, before));
                    self.credentials.insert(*id, CredentialState { revoked: true, expires_at: *expires_at });
                }
                _ => {}
            }
        }
        withdrawn
    }

    fn restore(&self, withdrawn: Withdrawn) {
        // Newest first, so a session withdrawn twice in one batch ends as it was before both.
        for (id, before) in withdrawn.sessions.into_iter().rev() {
            match before {
                Some((revoked, expires_at)) => self.sessions.set(id, LiveSession { revoked, expires_at }),
                None => self.sessions.remove(id),
            }
        }
        for (id, before) in withdrawn.credentials.into_iter().rev() {
            match before {
                Some((revoked, expires_at)) => self.credentials.insert(id, CredentialState { revoked, expires_at }),
                None => self.credentials.remove(&id),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sharded_map_finds_replaces_removes_and_bounds_its_entries() {
        let map: Sharded<Box<str>, u32> = Sharded::new(4);
        for i in 0..100 {
            map.insert(format!("token-{i}").into(), i);
        }
        assert_eq!(map.len(), 100);
        assert_eq!(map.get("token-42"), Some(42), "found by a borrowed &str");
        map.insert("token-42".into(), 4200);
        assert_eq!((map.get("token-42"), map.len()), (Some(4200), 100), "replaced, not added");
        map.remove(&"token-42".into());
        assert_eq!((map.get("token-42"), map.len()), (None, 99));
        map.retain(|_, v| v % 2 == 0);
        assert_eq!(map.len(), 49);
        assert!((0..100).all(|i| map.get(format!("token-{i}").as_str()).is_some() == (i % 2 == 0 && i != 42)));

        let bounded: Sharded<Box<str>, u32> = Sharded::new(1);
        for i in 0..10 {
            bounded.insert_bounded(format!("t{i}").into(), i, 4);
            assert_eq!(bounded.get(format!("t{i}").as_str()), Some(i), "the new entry is kept");
            assert!(bounded.len() <= 4, "at most the cap: {}", bounded.len());
        }
        bounded.insert_bounded("t9".into(), 90, 4);
        assert_eq!((bounded.get("t9"), bounded.len()), (Some(90), 4), "a present key is replaced, nothing evicted");
    }

    #[test]
    fn insert_if_absent_keeps_what_is_there() {
        let map: Sharded<u32, CredentialState> = Sharded::new(2);
        let revoked = CredentialState { revoked: true, expires_at: None };
        let stale = CredentialState { revoked: false, expires_at: None };
        map.insert(7, revoked);
        assert_eq!(map.insert_if_absent(7, stale), revoked, "an older read never undoes a revocation");
        assert_eq!(map.get(&7), Some(revoked));
        assert_eq!(map.insert_if_absent(8, stale), stale);
        assert_eq!(map.get(&8), Some(stale));
    }
}
