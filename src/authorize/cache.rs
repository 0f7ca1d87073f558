//! The verified-token cache: what authorize needs of a token it has verified, found by a keyed
//! 128-bit hash of the token's text and bounded by memory, with a small tier of hot tokens kept
//! by their exact text.
//!
//! Why a keyed hash and not the text: the text is 1.4 KB and most of an entry if kept. Why a
//! 128-bit SipHash under a key drawn at start-up and never shown: an entry is a verification
//! already done, so a token of other bytes that found it would skip its signature check. Finding
//! one needs a 128-bit collision of a PRF whose key the caller does not know; a hash of part of
//! the text would not do (a holder can vary a token's bytes and keep its tail). Why a hot tier:
//! hashing 1.4 KB with SipHash costs more than the rest of a cached authorize, and one token
//! presented thousands of times a second (a busy agent) need not pay it each time.

use std::hash::Hasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use hashbrown::HashTable;
use siphasher::sip128::{Hasher128, SipHasher13};

use crate::views::Sharded;

/// The key of a token's entry: its text's keyed 128-bit hash.
pub type TokenKey = u128;

/// What a cached entry costs: its resident size as measured (allocator included), for the
/// memory bound. `bytes` is the figure for this entry.
pub trait Resident {
    fn resident_bytes(&self) -> usize;
}

/// Hits within one second after which a token also enters the hot tier.
const HOT_AFTER_HITS: u64 = 8;
/// Hot tokens per shard of the hot tier (64 shards: 512 tokens, their text included).
const HOT_PER_SHARD: usize = 8;
const SHARDS: usize = 64;
/// Entries looked at to choose one to evict.
const EVICTION_SAMPLE: usize = 8;

struct Shard<V> {
    table: HashTable<(TokenKey, Arc<V>)>,
    bytes: usize,
}

/// Entries by [`TokenKey`], at most `budget` bytes of them, plus the hot tier.
pub struct TokenCache<V> {
    shards: Box<[RwLock<Shard<V>>]>,
    hot: Sharded<Box<str>, Arc<V>>,
    budget_per_shard: usize,
    sip_keys: (u64, u64),
}

/// When an entry was last hit, and how often in that second: `second << 16 | hits`.
#[derive(Default)]
pub struct Recent(AtomicU64);

impl Recent {
    /// Marks the entry used at `second` (its first use, when it is cached).
    fn touch(&self, second: i64) {
        self.0.store((second.max(0) as u64) << 16, Ordering::Relaxed);
    }

    /// The second of the entry's last use.
    fn last_second(&self) -> u64 {
        self.0.load(Ordering::Relaxed) >> 16
    }

    /// Counts a hit at `second`; true when the entry just became hot.
    fn hit(&self, second: i64) -> bool {
        let second = (second.max(0) as u64) << 16;
        let before = self.0.load(Ordering::Relaxed);
        let hits = if before & !0xffff == second { (before & 0xffff) + 1 } else { 1 };
        // A lost update under a race only delays promotion by a hit.
        self.0.store(second | hits.min(0xffff), Ordering::Relaxed);
        hits == HOT_AFTER_HITS
    }
}

impl<V: Resident + HasRecent> TokenCache<V> {
    /// A cache holding at most `budget` bytes of entries (as their [`Resident`] cost says).
    pub fn new(budget: usize) -> Self {
        TokenCache {
            shards: (0..SHARDS).map(|_| RwLock::new(Shard { table: HashTable::new(), bytes: 0 })).collect(),
            hot: Sharded::new(SHARDS),
            budget_per_shard: budget / SHARDS,
            sip_keys: (rand::random(), rand::random()),
        }
    }

    pub fn key(&self, token: &str) -> TokenKey {
        let mut hasher = SipHasher13::new_with_keys(self.sip_keys.0, self.sip_keys.1);
        hasher.write(token.as_bytes());
        hasher.finish128().as_u128()
    }

    fn shard(&self, key: TokenKey) -> &RwLock<Shard<V>> {
        // The table places by the low bits; the shard comes from the high ones.
        &self.shards[((key >> 64) as usize) % SHARDS]
    }

    /// The entry for `token`, from the hot tier by its text or else by its key; `second` counts
    /// the hit towards the hot tier.
    pub fn get(&self, token: &str, second: i64) -> Option<Arc<V>> {
        if let Some(hot) = self.hot.get(token) {
            return Some(hot);
        }
        let key = self.key(token);
        let found = {
            let shard = self.shard(key).read().unwrap_or_else(|p| p.into_inner());
            shard.table.find(key as u64, |(k, _)| *k == key).map(|(_, v)| v.clone())
        }?;
        if found.recent().hit(second) {
            self.hot.insert_bounded(token.into(), found.clone(), HOT_PER_SHARD);
        }
        Some(found)
    }

    /// Adds `token`'s entry, used at `second`, first evicting entries of its shard until it fits
    /// the budget: of a few consecutive entries from a random place, the one used least recently. A token replaced by a refresh stops being presented
    /// and is among the first to go; random eviction would as often drop a token still in use,
    /// to be verified again at its next use.
    pub fn insert(&self, token: &str, value: Arc<V>, second: i64) {
        value.recent().touch(second);
        let key = self.key(token);
        let cost = value.resident_bytes();
        let mut shard = self.shard(key).write().unwrap_or_else(|p| p.into_inner());
        let Shard { table, bytes } = &mut *shard;
        if let Ok(existing) = table.find_entry(key as u64, |(k, _)| *k == key) {
            let ((_, old), _) = existing.remove();
            *bytes -= old.resident_bytes();
        }
        while *bytes + cost > self.budget_per_shard {
            // A window at a random place: the table's front alone would be a biased sample.
            let start = rand::random::<u32>() as usize % table.len().max(1);
            let sample = table.iter().skip(start).chain(table.iter()).take(EVICTION_SAMPLE);
            let Some(victim) = sample.min_by_key(|(_, v)| v.recent().last_second()).map(|(k, _)| *k) else { break };
            if let Ok(e) = table.find_entry(victim as u64, |(k, _)| *k == victim) {
                let ((_, old), _) = e.remove();
                *bytes -= old.resident_bytes();
            }
        }
        table.insert_unique(key as u64, (key, value), |(k, _)| *k as u64);
        *bytes += cost;
    }

    /// Entries held (the hot tier's are also in the main one).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.read().unwrap_or_else(|p| p.into_inner()).table.len()).sum()
    }

    /// The entries' cost, as counted against the budget.
    pub fn bytes(&self) -> usize {
        self.shards.iter().map(|s| s.read().unwrap_or_else(|p| p.into_inner()).bytes).sum()
    }

    pub fn clear(&self) {
        for shard in self.shards.iter() {
            let mut shard = shard.write().unwrap_or_else(|p| p.into_inner());
            shard.table.clear();
            shard.bytes = 0;
        }
        self.hot.retain(|_, _| false);
    }
}

/// An entry that counts its own hits for the hot tier.
pub trait HasRecent {
    fn recent(&self) -> &Recent;
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Entry {
        bytes: usize,
        recent: Recent,
    }

    impl Resident for Entry {
        fn resident_bytes(&self) -> usize {
            self.bytes
        }
    }

    impl HasRecent for Entry {
        fn recent(&self) -> &Recent {
            &self.recent
        }
    }

    fn entry(bytes: usize) -> Arc<Entry> {
        Arc::new(Entry { bytes, recent: Recent::default() })
    }

    #[test]
    fn an_entry_is_found_by_its_exact_text_only() {
        let cache = TokenCache::new(1 << 20);
        cache.insert("token-a", entry(100), 0);

        assert!(cache.get("token-a", 0).is_some());
        assert!(cache.get("token-b", 0).is_none());
        assert!(cache.get("token-a ", 0).is_none(), "one more byte is another token");
        assert_ne!(cache.key("token-a"), cache.key("token-b"));
    }

    #[test]
    fn keys_differ_between_caches_so_a_key_seen_once_is_no_key_elsewhere() {
        let (one, two) = (TokenCache::<Entry>::new(1024), TokenCache::<Entry>::new(1024));
        assert_ne!(one.key("token"), two.key("token"));
    }

    #[test]
    fn the_cache_never_holds_more_than_its_budget() {
        let cache = TokenCache::new(SHARDS * 1000);
        for i in 0..10_000 {
            cache.insert(&format!("token-{i}"), entry(300), 0);
            assert!(cache.bytes() <= SHARDS * 1000, "{} bytes after {i}", cache.bytes());
        }
        // Each shard holds at most three 300-byte entries.
        assert!(cache.len() <= SHARDS * 3 && cache.len() >= SHARDS, "{}", cache.len());
        assert_eq!(cache.bytes(), cache.len() * 300);
    }

    #[test]
    fn eviction_drops_tokens_not_used_lately_before_those_in_use() {
        // A hundred 100-byte entries per shard, 6,400 in all: the first two kinds fit.
        let cache = TokenCache::new(SHARDS * 10_000);
        let named = |kind: &str| (0..2500).map(|i| format!("{kind}-{i}")).collect::<Vec<_>>();
        let (in_use, refreshed_away, new) = (named("in-use"), named("refreshed-away"), named("new"));
        for token in &in_use {
            cache.insert(token, entry(100), 0);
        }
        for token in &refreshed_away {
            cache.insert(token, entry(100), 5);
        }
        for token in &in_use {
            cache.get(token, 10);
        }
        for token in &new {
            cache.insert(token, entry(100), 10);
        }
        let kept = |tokens: &[String]| tokens.iter().filter(|t| cache.get(t, 11).is_some()).count();
        let (kept_in_use, kept_away) = (kept(&in_use), kept(&refreshed_away));
        // About 1,100 had to go. Evicting without regard to use would take about as many of each
        // kind (some 370); the least recently used of a sample takes the refreshed-away ones.
        assert!(kept_in_use >= 2400 && kept_away <= 1800, "kept {kept_in_use} in use and {kept_away} refreshed away");
    }

    #[test]
    fn a_token_inserted_again_is_counted_once() {
        let cache = TokenCache::new(1 << 20);
        cache.insert("token", entry(300), 0);
        cache.insert("token", entry(500), 0);
        assert_eq!((cache.len(), cache.bytes()), (1, 500));
    }

    #[test]
    fn a_token_hit_often_within_a_second_enters_the_hot_tier_and_clear_empties_both() {
        let cache = TokenCache::new(1 << 20);
        cache.insert("busy", entry(100), 7);
        for _ in 0..HOT_AFTER_HITS {
            assert!(cache.get("busy", 7).is_some());
        }
        assert!(cache.hot.get("busy").is_some(), "promoted after {HOT_AFTER_HITS} hits in second 7");

        cache.insert("calm", entry(100), 0);
        for second in 0..HOT_AFTER_HITS as i64 {
            cache.get("calm", second);
        }
        assert!(cache.hot.get("calm").is_none(), "one hit a second is not hot");

        cache.clear();
        assert!(cache.get("busy", 7).is_none());
        assert_eq!(cache.len(), 0);
    }
}
