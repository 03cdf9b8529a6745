//! States of recently used aggregates, so that a command against a hot
//! stream need not read it again.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, PoisonError};

use super::Loaded;

/// Aggregate states by stream, each at the version it reflects, at most
/// `capacity` of them; the least recently stored go first.
///
/// A state is taken out while a command runs on it and stored again after
/// the append, so no state is ever copied and two commands never share one.
/// Whether a stored state is still current is not this cache's concern: the
/// repository checks a state taken from here against the store before it
/// trusts a decision made on it (see [`Repository::cache`](super::Repository::cache)).
pub(super) struct StateCache<A> {
    capacity: usize,
    inner: Mutex<Inner<A>>,
}

struct Inner<A> {
    entries: HashMap<String, (Loaded<A>, u64)>,
    /// Streams by when they were stored (sequence number).
    order: BTreeMap<u64, String>,
    next: u64,
}

impl<A> StateCache<A> {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            inner: Mutex::new(Inner {
                entries: HashMap::new(),
                order: BTreeMap::new(),
                next: 0,
            }),
        }
    }

    /// Takes the state of `stream` out, if it is kept.
    pub(super) fn take(&self, stream: &str) -> Option<Loaded<A>> {
        let mut inner = self.lock();
        let (loaded, seq) = inner.entries.remove(stream)?;
        inner.order.remove(&seq);
        Some(loaded)
    }

    /// Keeps the state of `stream`, unless a newer one is kept already.
    pub(super) fn put(&self, stream: &str, loaded: Loaded<A>) {
        if self.capacity == 0 {
            return;
        }
        let mut inner = self.lock();
        if let Some((kept, seq)) = inner.entries.get(stream) {
            if kept.version >= loaded.version {
                return;
            }
            let seq = *seq;
            inner.order.remove(&seq);
        }
        let seq = inner.next;
        inner.next += 1;
        inner.order.insert(seq, stream.to_owned());
        inner.entries.insert(stream.to_owned(), (loaded, seq));
        while inner.entries.len() > self.capacity {
            let Some((_, oldest)) = inner.order.pop_first() else {
                break;
            };
            inner.entries.remove(&oldest);
        }
    }

    /// How many states are kept.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().entries.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<A>> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(version: u64) -> Loaded<u64> {
        Loaded {
            state: version * 10,
            version,
            position: None,
        }
    }

    #[test]
    fn keeps_the_newest_state_of_each_stream_within_capacity() {
        let cache = StateCache::new(2);
        cache.put("a", at(1));
        cache.put("b", at(1));
        cache.put("a", at(0)); // older than what is kept: ignored
        cache.put("c", at(3)); // evicts the least recently stored, "a"
        assert_eq!(cache.len(), 2);
        assert!(cache.take("a").is_none());
        assert_eq!(cache.take("c").map(|l| l.state), Some(30));
        assert!(cache.take("c").is_none(), "taken out, not copied");
        cache.put("b", at(2));
        assert_eq!(cache.take("b").map(|l| l.version), Some(2));
        cache.put("d", at(1));
        cache.take("d");
        assert_eq!(cache.len(), 0);
        let none = StateCache::new(0);
        none.put("a", at(1));
        assert!(none.take("a").is_none());
    }
}
