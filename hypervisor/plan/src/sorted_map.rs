//! A map kept as a vector sorted by key, for the plan's short tables (slice names, cores,
//! PCI functions: at most a few hundred entries). It behaves like the `BTreeMap` it replaces
//! (lookups, `insert` returning the value it replaced, iteration in key order) with a fraction
//! of the code: the image carried each `BTreeMap` key type's insert, split and drop
//! (docs/performance.md, "Image size").

use alloc::vec::Vec;

/// A map from `K` to `V`, its entries in ascending key order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SortedMap<K, V> {
    entries: Vec<(K, V)>,
}

impl<K: Ord, V> Default for SortedMap<K, V> {
    fn default() -> Self {
        SortedMap::new()
    }
}

impl<K: Ord, V> SortedMap<K, V> {
    /// An empty map.
    pub const fn new() -> Self {
        SortedMap {
            entries: Vec::new(),
        }
    }

    fn find(&self, key: &K) -> Result<usize, usize> {
        self.entries.binary_search_by(|(k, _)| k.cmp(key))
    }

    /// The value for `key`.
    pub fn get(&self, key: &K) -> Option<&V> {
        self.find(key).ok().map(|at| &self.entries[at].1)
    }

    /// Whether `key` has a value.
    pub fn contains_key(&self, key: &K) -> bool {
        self.find(key).is_ok()
    }

    /// Sets `key`'s value; returns the value it replaced.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        match self.find(&key) {
            Ok(at) => Some(core::mem::replace(&mut self.entries[at].1, value)),
            Err(at) => {
                self.entries.insert(at, (key, value));
                None
            }
        }
    }

    /// Sets `key`'s value unless it has one.
    pub fn insert_if_absent(&mut self, key: K, value: V) {
        if let Err(at) = self.find(&key) {
            self.entries.insert(at, (key, value));
        }
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The values, in key order.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.entries.iter().map(|(_, v)| v)
    }
}

impl<K: Ord, V> Extend<(K, V)> for SortedMap<K, V> {
    fn extend<I: IntoIterator<Item = (K, V)>>(&mut self, iter: I) {
        for (k, v) in iter {
            self.insert(k, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::BTreeMap;

    #[test]
    fn behaves_like_a_btree_map() {
        let mut ours = SortedMap::new();
        let mut theirs = BTreeMap::new();
        let mut seed = 3u64;
        for i in 0..300u32 {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let key = (seed >> 58) as u8;
            match seed >> 62 {
                0 => assert_eq!(ours.insert(key, i), theirs.insert(key, i)),
                1 => {
                    ours.insert_if_absent(key, i);
                    theirs.entry(key).or_insert(i);
                }
                _ => {
                    assert_eq!(ours.get(&key), theirs.get(&key));
                    assert_eq!(ours.contains_key(&key), theirs.contains_key(&key));
                }
            }
            assert_eq!(ours.len(), theirs.len());
        }
        assert!(ours.values().eq(theirs.values()));
        ours.extend([(1, 7), (200, 8)]);
        theirs.extend([(1, 7), (200, 8)]);
        assert!(ours.values().eq(theirs.values()));
        assert!(!ours.is_empty());
    }
}
