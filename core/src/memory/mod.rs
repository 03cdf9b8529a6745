//! The in-memory event store.
//!
//! [`MemoryStore`] keeps everything in process memory with the same
//! semantics as the PostgreSQL store: optimistic concurrency per stream,
//! idempotent appends (by event id and by command id), a global log ordered
//! by [`Position`], catch-up-then-live subscriptions, snapshots and
//! checkpoints. Use it in tests, examples and single-process tools; it passes
//! `annals::testing::conformance` (feature `testing`).
//!
//! Each append is one "transaction": it takes the next commit number, and
//! each of its events the next global sequence number, so an event's
//! position is `Position::new(commit, sequence)` and positions strictly
//! increase in log order. Appends are atomic and visible to readers at once.
//!
//! ```
//! use annals::memory::MemoryStore;
//! use annals::{EventFilter, EventStore, ExpectedVersion, Metadata, NewEvent, Position};
//! use futures::StreamExt;
//! use serde_json::json;
//! use uuid::Uuid;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let store = MemoryStore::new();
//! let event = NewEvent {
//!     event_id: Uuid::now_v7(),
//!     event_type: "SeatReserved".into(),
//!     schema_version: 1,
//!     payload: json!({ "seat": "12A" }).into(),
//!     metadata: Metadata::default().actor("alice"),
//!     tags: vec!["seat:12A".into()],
//! };
//!
//! let done = store
//!     .append("flight-1", ExpectedVersion::NoStream, vec![event.clone()])
//!     .await
//!     .unwrap();
//! assert_eq!(done.stream_version, 1);
//!
//! // Appending the same event again is a no-op that returns the first outcome.
//! let again = store
//!     .append("flight-1", ExpectedVersion::NoStream, vec![event])
//!     .await
//!     .unwrap();
//! assert!(again.repeated);
//! assert_eq!(again.position, done.position);
//!
//! let stream = store.read_stream("flight-1", 1, 100).await.unwrap();
//! assert_eq!(stream[0].payload, json!({ "seat": "12A" }));
//!
//! // Subscriptions first catch up, then follow new appends live.
//! let mut live = store.subscribe(Position::START, EventFilter::all());
//! let first = live.next().await.unwrap().unwrap();
//! assert_eq!(first.position, done.position);
//! # });
//! ```

mod claims;
mod projection;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use async_trait::async_trait;
use chrono::Utc;
use tokio::sync::watch;
use uuid::Uuid;

use crate::envelope::{NewEvent, RecordedEvent};
use crate::position::Position;
use crate::query::Query;
use crate::store::{
    AppendCondition, AppendLimits, AppendOptions, Appended, EventFilter, EventStore, EventStream,
    ExpectedVersion, Snapshot, StoreError,
};
use crate::subscription::{SubscriptionOptions, catch_up_then_live};

/// An event store in process memory.
///
/// Cloning is cheap and every clone shares the same data, so a clone can be
/// handed to each task, repository or projection. It is safe to use from
/// many tasks and threads at once: a lock is held only for the short,
/// synchronous part of each call, never across an `.await`.
///
/// Reading a stream costs one hash lookup and one clone per event returned:
/// each stream's events are kept together, as the [`RecordedEvent`]s readers
/// receive.
///
/// ```
/// use annals::memory::MemoryStore;
/// use annals::{AppendLimits, EventStore};
///
/// let store = MemoryStore::with_limits(AppendLimits { max_batch: 100, ..AppendLimits::default() });
/// let same = store.clone(); // shares the events
/// assert_eq!(same.limits().max_batch, 100);
/// ```
#[derive(Clone)]
pub struct MemoryStore {
    shared: Arc<Shared>,
}

struct Shared {
    limits: AppendLimits,
    state: RwLock<State>,
    /// Bumped after every append, to wake subscriptions.
    wake: watch::Sender<u64>,
    /// Dead letters, leases and deadlines (see `projection.rs`).
    projections: std::sync::Mutex<projection::Projections>,
}

/// Where an event lives: its stream's slot and its index within the stream.
#[derive(Clone, Copy)]
struct Location {
    stream: usize,
    index: usize,
}

/// One entry of the global log.
#[derive(Clone, Copy)]
struct LogEntry {
    position: Position,
    at: Location,
}

#[derive(Default)]
struct State {
    /// Each stream's events, in version order (`events[i]` is version `i + 1`).
    streams: Vec<Vec<RecordedEvent>>,
    /// Stream id to its slot in `streams`.
    stream_slots: HashMap<String, usize>,
    /// The global log, in strictly increasing position order.
    log: Vec<LogEntry>,
    /// Where each stored event id lives.
    event_ids: HashMap<Uuid, Location>,
    /// The outcome of each command id that ran.
    commands: HashMap<Uuid, Appended>,
    snapshots: HashMap<String, Snapshot>,
    checkpoints: HashMap<String, Position>,
    /// The last commit number handed out.
    commit: u64,
    /// The last global sequence number handed out.
    sequence: u64,
}

impl State {
    fn stream(&self, stream: &str) -> &[RecordedEvent] {
        self.stream_slots
            .get(stream)
            .map_or(&[][..], |&slot| &self.streams[slot])
    }

    fn event(&self, at: Location) -> &RecordedEvent {
        &self.streams[at.stream][at.index]
    }

    /// The position of the first event after the condition's position that
    /// matches its query.
    fn first_match(&self, condition: &AppendCondition) -> Option<Position> {
        let start = condition
            .after
            .map_or(0, |after| self.log.partition_point(|e| e.position <= after));
        self.log[start..].iter().find_map(|entry| {
            let event = self.event(entry.at);
            condition
                .fail_if_events_match
                .matches(&event.event_type, &event.tags)
                .then_some(event.position)
        })
    }

    /// The outcome of appending `events` if every one of their ids is already
    /// stored, consecutively and in order, in `stream`; `None` if none is
    /// stored; an error if some are stored but not that way.
    fn repeated_by_event_ids(
        &self,
        stream: &str,
        events: &[NewEvent],
    ) -> Result<Option<Appended>, StoreError> {
        let Some(first) = self.event_ids.get(&events[0].event_id).copied() else {
            // The first id is new; any other id already stored is a duplicate.
            return match events[1..]
                .iter()
                .find_map(|e| self.event_ids.get(&e.event_id))
            {
                Some(&at) => Err(self.duplicate(at)),
                None => Ok(None),
            };
        };
        let same_stream = self.stream_slots.get(stream) == Some(&first.stream);
        let stored = &self.streams[first.stream];
        let in_order = same_stream
            && stored.len() >= first.index + events.len()
            && events
                .iter()
                .zip(&stored[first.index..])
                .all(|(new, old)| new.event_id == old.event_id);
        if !in_order {
            let at = events
                .iter()
                .filter_map(|e| self.event_ids.get(&e.event_id))
                .find(|at| !same_stream || at.stream != first.stream)
                .copied()
                .unwrap_or(first);
            return Err(self.duplicate(at));
        }
        let last = &stored[first.index + events.len() - 1];
        Ok(Some(Appended {
            first_version: stored[first.index].stream_version,
            stream_version: last.stream_version,
            position: last.position,
            repeated: true,
        }))
    }

    fn duplicate(&self, at: Location) -> StoreError {
        let event = self.event(at);
        StoreError::DuplicateEvent {
            event_id: event.event_id,
            stream: event.stream_id.clone(),
            stream_version: event.stream_version,
        }
    }

    /// Writes the events; every check has passed.
    fn record(&mut self, stream: &str, events: Vec<NewEvent>) -> Appended {
        let slot = match self.stream_slots.get(stream) {
            Some(&slot) => slot,
            None => {
                self.streams.push(Vec::new());
                let slot = self.streams.len() - 1;
                self.stream_slots.insert(stream.to_owned(), slot);
                slot
            }
        };
        self.commit += 1;
        let commit = self.commit;
        let recorded_at = Utc::now();
        let base = self.streams[slot].len();
        let stream_id = stream.to_owned();
        self.streams[slot].reserve(events.len());
        self.log.reserve(events.len());
        let mut position = Position::START;
        for (i, event) in events.into_iter().enumerate() {
            self.sequence += 1;
            position = Position::new(commit, self.sequence);
            let at = Location {
                stream: slot,
                index: base + i,
            };
            self.event_ids.insert(event.event_id, at);
            self.log.push(LogEntry { position, at });
            self.streams[slot].push(RecordedEvent {
                event_id: event.event_id,
                stream_id: stream_id.clone(),
                stream_version: (base + i + 1) as u64,
                position,
                event_type: event.event_type,
                schema_version: event.schema_version,
                payload: event.payload,
                metadata: event.metadata,
                tags: event.tags,
                recorded_at,
            });
        }
        Appended {
            first_version: base as u64 + 1,
            stream_version: self.streams[slot].len() as u64,
            position,
            repeated: false,
        }
    }
}

impl MemoryStore {
    /// An empty store with the default [`AppendLimits`].
    pub fn new() -> Self {
        Self::with_limits(AppendLimits::default())
    }

    /// An empty store that refuses appends beyond these limits.
    pub fn with_limits(limits: AppendLimits) -> Self {
        let (wake, _) = watch::channel(0);
        Self {
            shared: Arc::new(Shared {
                limits,
                state: RwLock::new(State::default()),
                wake,
                projections: std::sync::Mutex::default(),
            }),
        }
    }

    /// The limits every append is checked against.
    pub fn limits(&self) -> AppendLimits {
        self.shared.limits
    }

    /// How many events the store holds.
    pub fn len(&self) -> usize {
        self.read().log.len()
    }

    /// Whether the store holds no events.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    // A panic while the lock is held cannot leave the state half-written
    // (every check runs before the first write), so a poisoned lock is safe
    // to keep using.
    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.shared
            .state
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.shared
            .state
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn append_now(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        options: AppendOptions,
        condition: Option<&AppendCondition>,
    ) -> Result<Appended, StoreError> {
        self.shared.limits.check(stream, &events)?;
        let mut state = self.write();
        if let Some(command_id) = options.command_id
            && let Some(first) = state.commands.get(&command_id)
        {
            return Ok(Appended {
                repeated: true,
                ..*first
            });
        }
        if let Some(first) = state.repeated_by_event_ids(stream, &events)? {
            if let Some(command_id) = options.command_id {
                state.commands.insert(
                    command_id,
                    Appended {
                        repeated: false,
                        ..first
                    },
                );
            }
            return Ok(first);
        }
        let actual = state.stream(stream).len() as u64;
        if !expected.allows(actual) {
            return Err(StoreError::Conflict {
                stream: stream.to_owned(),
                expected,
                actual,
            });
        }
        if let Some(condition) = condition {
            // Under the write lock: no other append can slip in between the
            // check and the write.
            if let Some(position) = state.first_match(condition) {
                return Err(StoreError::ConditionFailed { position });
            }
        }
        let done = state.record(stream, events);
        if let Some(command_id) = options.command_id {
            state.commands.insert(command_id, done);
        }
        drop(state);
        self.shared.wake.send_modify(|n| *n = n.wrapping_add(1));
        Ok(done)
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.read();
        f.debug_struct("MemoryStore")
            .field("events", &state.log.len())
            .field("streams", &state.streams.len())
            .field("limits", &self.shared.limits)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl EventStore for MemoryStore {
    async fn append_with(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        options: AppendOptions,
    ) -> Result<Appended, StoreError> {
        self.append_now(stream, expected, events, options, None)
    }

    async fn command_outcome(&self, command_id: Uuid) -> Result<Option<Appended>, StoreError> {
        Ok(self.read().commands.get(&command_id).copied())
    }

    async fn read_stream(
        &self,
        stream: &str,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let state = self.read();
        let events = state.stream(stream);
        let start = usize::try_from(from_version.saturating_sub(1))
            .unwrap_or(usize::MAX)
            .min(events.len());
        let end = start.saturating_add(limit).min(events.len());
        Ok(events[start..end].to_vec())
    }

    async fn stream_version(&self, stream: &str) -> Result<u64, StoreError> {
        Ok(self.read().stream(stream).len() as u64)
    }

    async fn read_all(
        &self,
        after: Position,
        limit: usize,
        filter: &EventFilter,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let state = self.read();
        let start = state.log.partition_point(|e| e.position <= after);
        let mut events = Vec::with_capacity(limit.min(state.log.len() - start));
        for entry in &state.log[start..] {
            if events.len() >= limit {
                break;
            }
            let event = state.event(entry.at);
            if filter.matches(&event.event_type) {
                events.push(event.clone());
            }
        }
        Ok(events)
    }

    async fn head(&self) -> Result<Position, StoreError> {
        Ok(self
            .read()
            .log
            .last()
            .map_or(Position::START, |e| e.position))
    }

    fn subscribe(&self, after: Position, filter: EventFilter) -> EventStream {
        catch_up_then_live(
            self.clone(),
            after,
            filter,
            self.shared.wake.subscribe(),
            SubscriptionOptions::default(),
        )
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        self.write()
            .snapshots
            .insert(snapshot.stream_id.clone(), snapshot);
        Ok(())
    }

    async fn load_snapshot(&self, stream: &str) -> Result<Option<Snapshot>, StoreError> {
        Ok(self.read().snapshots.get(stream).cloned())
    }

    async fn save_checkpoint(&self, name: &str, position: Position) -> Result<(), StoreError> {
        self.write().checkpoints.insert(name.to_owned(), position);
        Ok(())
    }

    async fn load_checkpoint(&self, name: &str) -> Result<Option<Position>, StoreError> {
        Ok(self.read().checkpoints.get(name).copied())
    }

    async fn read_query(
        &self,
        query: &Query,
        after: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let state = self.read();
        let start = state.log.partition_point(|e| e.position <= after);
        Ok(state.log[start..]
            .iter()
            .map(|entry| state.event(entry.at))
            .filter(|event| query.matches(&event.event_type, &event.tags))
            .take(limit)
            .cloned()
            .collect())
    }

    async fn append_if(
        &self,
        stream: &str,
        events: Vec<NewEvent>,
        condition: AppendCondition,
        options: AppendOptions,
    ) -> Result<Appended, StoreError> {
        self.append_now(
            stream,
            ExpectedVersion::Any,
            events,
            options,
            Some(&condition),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(kind: &str) -> NewEvent {
        NewEvent {
            event_id: Uuid::now_v7(),
            event_type: kind.into(),
            schema_version: 1,
            payload: json!({}).into(),
            metadata: Default::default(),
            tags: Vec::new(),
        }
    }

    #[tokio::test]
    async fn positions_are_commit_then_sequence() {
        let store = MemoryStore::new();
        let a = store
            .append("s", ExpectedVersion::Any, vec![event("A"), event("B")])
            .await
            .unwrap();
        let b = store
            .append("t", ExpectedVersion::Any, vec![event("C")])
            .await
            .unwrap();
        assert_eq!(a.position, Position::new(1, 2));
        assert_eq!(b.position, Position::new(2, 3));
        let all = store
            .read_all(Position::START, 10, &EventFilter::all())
            .await
            .unwrap();
        let positions: Vec<_> = all.iter().map(|e| e.position).collect();
        assert_eq!(
            positions,
            [
                Position::new(1, 1),
                Position::new(1, 2),
                Position::new(2, 3)
            ]
        );
        assert_eq!(store.len(), 3);
    }

    #[tokio::test]
    async fn limits_are_the_stores_own() {
        let store = MemoryStore::with_limits(AppendLimits {
            max_batch: 1,
            ..AppendLimits::default()
        });
        let err = store
            .append("s", ExpectedVersion::Any, vec![event("A"), event("B")])
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::InvalidInput(_)), "{err}");
        assert!(store.is_empty());
    }

    #[tokio::test]
    async fn read_stream_handles_huge_versions_and_limits() {
        let store = MemoryStore::new();
        store
            .append("s", ExpectedVersion::Any, vec![event("A"), event("B")])
            .await
            .unwrap();
        assert!(
            store
                .read_stream("s", u64::MAX, 10)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            store.read_stream("s", 0, usize::MAX).await.unwrap().len(),
            2
        );
    }
}
