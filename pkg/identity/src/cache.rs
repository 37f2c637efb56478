//! A bounded map with per-entry expiry, evicting the oldest insertion first.
//!
//! Resolution results are small (a DID document is ~1 KB) and the hot set of
//! a firehose is the accounts posting right now, so first-in-first-out
//! eviction is close enough to LRU at a fraction of the bookkeeping: one
//! `VecDeque` push per insertion, no work on reads.

use std::collections::{HashMap, VecDeque};

use tokio::time::Instant;

#[derive(Debug)]
struct Entry<V> {
    value: V,
    expires: Instant,
    /// Insertion number, to recognise this entry's slot in `order`.
    generation: u64,
}

/// A map of at most `capacity` entries, each valid until its expiry.
#[derive(Debug)]
pub(crate) struct TtlCache<V> {
    entries: HashMap<String, Entry<V>>,
    /// Keys in insertion order, with the generation they were inserted at.
    /// Slots of replaced or removed entries stay until they reach the front
    /// (or a compaction), and are skipped there.
    order: VecDeque<(String, u64)>,
    next_generation: u64,
    capacity: usize,
}

impl<V: Clone> TtlCache<V> {
    /// An empty cache holding at most `capacity` (≥ 1) entries.
    pub(crate) fn new(capacity: usize) -> TtlCache<V> {
        TtlCache {
            entries: HashMap::new(),
            order: VecDeque::new(),
            next_generation: 0,
            capacity: capacity.max(1),
        }
    }

    /// The value for `key`, if present and not expired at `now`.
    pub(crate) fn get(&self, key: &str, now: Instant) -> Option<V> {
        self.entries
            .get(key)
            .filter(|e| e.expires > now)
            .map(|e| e.value.clone())
    }

    /// Stores `value` for `key` until `expires`, evicting the oldest entries
    /// when full.
    pub(crate) fn insert(&mut self, key: &str, value: V, expires: Instant) {
        let generation = self.next_generation;
        self.next_generation += 1;
        if !self.entries.contains_key(key) {
            while self.entries.len() >= self.capacity {
                let Some((old, old_generation)) = self.order.pop_front() else {
                    break;
                };
                if self
                    .entries
                    .get(&old)
                    .is_some_and(|e| e.generation == old_generation)
                {
                    self.entries.remove(&old);
                }
            }
        }
        self.entries.insert(
            key.to_string(),
            Entry {
                value,
                expires,
                generation,
            },
        );
        self.order.push_back((key.to_string(), generation));
        // Replacements leave dead slots behind; keep `order` proportional to
        // the live entries.
        if self.order.len() > 2 * self.capacity + 16 {
            let entries = &self.entries;
            self.order
                .retain(|(k, g)| entries.get(k).is_some_and(|e| e.generation == *g));
        }
    }

    /// Forgets `key`.
    pub(crate) fn remove(&mut self, key: &str) {
        self.entries.remove(key);
    }

    /// Entries held, expired ones included until evicted or replaced.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn expiry_capacity_and_order() {
        let now = Instant::now();
        let later = now + Duration::from_secs(10);
        let mut cache = TtlCache::new(2);
        cache.insert("a", 1, later);
        cache.insert("b", 2, later);
        assert_eq!(cache.get("a", now), Some(1));
        assert_eq!(cache.get("a", later), None, "expired at its deadline");

        // Full: inserting c evicts a, the oldest.
        cache.insert("c", 3, later);
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get("a", now), None);
        assert_eq!(cache.get("b", now), Some(2));

        // Replacing b makes it the newest; d then evicts c.
        cache.insert("b", 20, later);
        cache.insert("d", 4, later);
        assert_eq!(cache.get("c", now), None);
        assert_eq!(cache.get("b", now), Some(20));
        assert_eq!(cache.get("d", now), Some(4));

        cache.remove("d");
        assert_eq!(cache.get("d", now), None);
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn replacements_do_not_grow_the_order_queue() {
        let later = Instant::now() + Duration::from_secs(10);
        let mut cache = TtlCache::new(4);
        for i in 0..10_000 {
            cache.insert("same", i, later);
        }
        assert_eq!(cache.len(), 1);
        assert!(cache.order.len() <= 2 * 4 + 16 + 1, "{}", cache.order.len());
    }
}
