//! The documents an index writer wrote, kept in memory so that the next batch
//! folds on from them instead of fetching them back.

use std::collections::{HashMap, VecDeque};

use crate::fold::Base;

/// Documents an index writer wrote, by id, within a budget of bytes; the oldest
/// written are dropped first.
pub(crate) struct DocCache<D> {
    budget: usize,
    used: usize,
    entries: HashMap<String, Cached<D>>,
    /// Ids in the order they were written, with the write's sequence number;
    /// an id written again has a newer pair, and its older pairs are skipped.
    order: VecDeque<(String, u64)>,
    next: u64,
}

struct Cached<D> {
    version: u64,
    doc: Option<D>,
    bytes: usize,
    seq: u64,
}

impl<D: Clone> DocCache<D> {
    pub(crate) fn new(budget: usize) -> Self {
        Self {
            budget,
            used: 0,
            entries: HashMap::new(),
            order: VecDeque::new(),
            next: 0,
        }
    }

    /// The document as kept, if it is kept at a version the events from
    /// `first_version` on can be folded onto (no event between missing: one
    /// another process applied, or one of a type this projection does not
    /// read, which the fold must then see through the stored document).
    pub(crate) fn get(&self, id: &str, first_version: u64) -> Option<Base<D>> {
        let cached = self.entries.get(id)?;
        (first_version <= cached.version.saturating_add(1))
            .then(|| (cached.version, cached.doc.clone()))
    }

    pub(crate) fn insert(&mut self, id: String, version: u64, doc: Option<D>, bytes: usize) {
        if self.budget == 0 {
            return;
        }
        // Rough size: the JSON, the id twice, the bookkeeping.
        let bytes = bytes + 2 * id.len() + 64;
        let seq = self.next;
        self.next += 1;
        self.order.push_back((id.clone(), seq));
        let cached = Cached {
            version,
            doc,
            bytes,
            seq,
        };
        if let Some(old) = self.entries.insert(id, cached) {
            self.used -= old.bytes;
        }
        self.used += bytes;
        while self.used > self.budget {
            let Some((id, seq)) = self.order.pop_front() else {
                break;
            };
            if self.entries.get(&id).is_some_and(|c| c.seq == seq)
                && let Some(old) = self.entries.remove(&id)
            {
                self.used -= old.bytes;
            }
        }
        // Drop the pairs of ids written again since, now and then.
        if self.order.len() > 2 * self.entries.len() + 1024 {
            let entries = &self.entries;
            self.order
                .retain(|(id, seq)| entries.get(id).is_some_and(|c| c.seq == *seq));
        }
    }

    /// How many documents are kept, and the bytes they take.
    pub(crate) fn usage(&self) -> (usize, usize) {
        (self.entries.len(), self.used)
    }

    pub(crate) fn remove(&mut self, id: &str) {
        if let Some(old) = self.entries.remove(id) {
            self.used -= old.bytes;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_documents_within_its_budget_oldest_out_first() {
        let mut cache = DocCache::new(3 * (10 + 2 + 64));
        for (i, id) in ["a", "b", "c", "d"].into_iter().enumerate() {
            cache.insert(id.into(), 2, Some(i), 10);
        }
        assert!(cache.get("a", 3).is_none(), "the oldest went first");
        assert_eq!(cache.get("d", 3), Some((2, Some(3))));
        // Only when the next events follow on, or re-deliver.
        assert_eq!(cache.get("d", 1), Some((2, Some(3))));
        assert!(cache.get("d", 4).is_none());
        // Writing one again makes it the newest.
        cache.insert("b".into(), 3, Some(9), 10);
        cache.insert("e".into(), 1, None, 10);
        assert!(cache.get("c", 1).is_none());
        assert_eq!(cache.get("b", 4), Some((3, Some(9))));
        assert_eq!(cache.get("e", 2), Some((1, None)));
        assert!(cache.used <= cache.budget);
        cache.remove("b");
        assert!(cache.get("b", 4).is_none());
        // No budget: nothing kept.
        let mut none = DocCache::new(0);
        none.insert("a".into(), 1, Some(1), 10);
        assert!(none.get("a", 2).is_none());
    }
}
