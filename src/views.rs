//! In-memory views the writer keeps current after each commit: live sessions, credentials,
//! and the bus of committed audit events.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::RwLock;

use tokio::sync::broadcast;

use crate::audit::AuditEvent;
use crate::domain::{CredentialId, SessionId, Timestamp};
use crate::store::writer::EffectSink;
use crate::store::{Effect, Withdrawn};

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// A map split into shards, each behind its own lock: readers of different sessions never
/// contend, and a writer blocks only the one shard it touches.
pub struct Sharded<K, V> {
    shards: Box<[RwLock<FastMap<K, V>>]>,
    hasher: foldhash::fast::RandomState,
}

impl<K: Hash + Eq, V: Clone> Sharded<K, V> {
    pub fn new(shards: usize) -> Self {
        Sharded {
            shards: (0..shards.max(1)).map(|_| RwLock::new(FastMap::default())).collect(),
            hasher: foldhash::fast::RandomState::default(),
        }
    }

    fn shard<Q: Hash + ?Sized>(&self, key: &Q) -> &RwLock<FastMap<K, V>> {
        let i = (self.hasher.hash_one(key) as usize) % self.shards.len();
        &self.shards[i]
    }

    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.shard(key).read().unwrap_or_else(|p| p.into_inner()).get(key).cloned()
    }

    pub fn insert(&self, key: K, value: V) {
        self.shard(&key).write().unwrap_or_else(|p| p.into_inner()).insert(key, value);
    }

    pub fn remove(&self, key: &K) {
        self.shard(key).write().unwrap_or_else(|p| p.into_inner()).remove(key);
    }

    /// Inserts unless the key is present; returns the value the map now holds for it.
    pub fn insert_if_absent(&self, key: K, value: V) -> V {
        self.shard(&key).write().unwrap_or_else(|p| p.into_inner()).entry(key).or_insert(value).clone()
    }

    /// Inserts, first evicting an arbitrary entry of the shard if it holds `cap` already.
    pub fn insert_bounded(&self, key: K, value: V, cap: usize)
    where
        K: Clone,
    {
        let mut shard = self.shard(&key).write().unwrap_or_else(|p| p.into_inner());
        if shard.len() >= cap && !shard.contains_key(&key) {
            // The map's iteration order is randomly seeded, so this is random eviction.
            if let Some(victim) = shard.keys().next().cloned() {
                shard.remove(&victim);
            }
        }
        shard.insert(key, value);
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
            shard.write().unwrap_or_else(|p| p.into_inner()).retain(|k, v| keep(k, v));
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
    pub outbox: tokio::sync::Notify,
}

impl Default for Views {
    fn default() -> Self {
        Views {
            sessions: LiveView::default(),
            credentials: Sharded::new(8),
            events: broadcast::channel(4096).0,
            outbox: tokio::sync::Notify::new(),
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
                Effect::OutboxWritten => self.outbox.notify_one(),
                Effect::Audited(event) => {
                    // No subscriber is fine; a lagging one is told it lagged and resumes from the store.
                    let _ = self.events.send(event.clone());
                }
            }
        }
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
