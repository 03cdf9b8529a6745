//! The event store contract every backend implements.

use std::fmt;

use async_trait::async_trait;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::envelope::{NewEvent, RecordedEvent};
use crate::position::Position;
use crate::query::Query;

/// What the writer believes the stream's version to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ExpectedVersion {
    /// Append whatever the stream's version.
    Any,
    /// The stream must not exist yet.
    NoStream,
    /// The stream must be exactly at this version (`Exact(0)` is the same as `NoStream`).
    Exact(u64),
}

impl ExpectedVersion {
    /// Whether a stream currently at `actual` (0 = no stream) satisfies this expectation.
    pub fn allows(self, actual: u64) -> bool {
        match self {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => actual == 0,
            ExpectedVersion::Exact(v) => v == actual,
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedVersion::Any => f.write_str("any version"),
            ExpectedVersion::NoStream => f.write_str("no stream"),
            ExpectedVersion::Exact(v) => write!(f, "version {v}"),
        }
    }
}

/// Options of one append beyond stream, expectation and events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppendOptions {
    /// The command that produced the events. A command id already recorded
    /// makes the append a no-op that returns the first outcome.
    pub command_id: Option<Uuid>,
}

/// The outcome of an append: a read-your-writes token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Appended {
    /// The stream version of the first event appended.
    pub first_version: u64,
    /// The stream version after the append (of the last event appended).
    pub stream_version: u64,
    /// The global position of the last event appended.
    pub position: Position,
    /// True when nothing was written because the events (by event id) or
    /// the command (by command id) were already stored; the fields above
    /// then describe the first outcome.
    pub repeated: bool,
}

/// Which events a global read returns. Filtering happens in the store's
/// query, not after reading.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct EventFilter {
    types: Option<Vec<String>>,
}

impl EventFilter {
    /// Every event.
    pub fn all() -> Self {
        Self { types: None }
    }

    /// Only events of these types.
    pub fn types<I, T>(types: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        Self {
            types: Some(types.into_iter().map(Into::into).collect()),
        }
    }

    /// The event types to keep, or `None` for all.
    pub fn event_types(&self) -> Option<&[String]> {
        self.types.as_deref()
    }

    /// Whether an event of this type passes the filter.
    pub fn matches(&self, event_type: &str) -> bool {
        self.types
            .as_ref()
            .is_none_or(|types| types.iter().any(|t| t == event_type))
    }
}

/// A saved aggregate state, so that loading need not replay the whole stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The stream the state was folded from.
    pub stream_id: String,
    /// The stream version the state includes.
    pub stream_version: u64,
    /// The aggregate's snapshot schema; a snapshot of another schema is ignored.
    pub schema_version: u32,
    /// The state as JSON.
    pub state: Value,
}

/// A live sequence of events, in global order.
pub type EventStream = BoxStream<'static, Result<RecordedEvent, StoreError>>;

/// Limits that every store checks before an append reaches its backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendLimits {
    /// Longest stream id, in bytes.
    pub max_stream_id_len: usize,
    /// Largest payload, in bytes of its JSON text.
    pub max_payload_bytes: usize,
    /// Most events in one append.
    pub max_batch: usize,
    /// Most tags on one event.
    pub max_tags: usize,
    /// Longest tag, in bytes.
    pub max_tag_len: usize,
}

impl Default for AppendLimits {
    fn default() -> Self {
        Self {
            max_stream_id_len: 200,
            max_payload_bytes: 1024 * 1024,
            max_batch: 10_000,
            max_tags: 32,
            max_tag_len: 200,
        }
    }
}

impl AppendLimits {
    /// Refuses malformed input with a clear error: empty or oversized stream
    /// ids, empty batches, blank event types, version 0, oversized payloads,
    /// too many, empty, oversized or NUL-carrying tags.
    pub fn check(&self, stream: &str, events: &[NewEvent]) -> Result<(), StoreError> {
        let invalid = |reason: String| Err(StoreError::InvalidInput(reason));
        if stream.trim().is_empty() {
            return invalid("stream id is empty".into());
        }
        if stream.len() > self.max_stream_id_len {
            return invalid(format!(
                "stream id is {} bytes, more than the limit of {}",
                stream.len(),
                self.max_stream_id_len
            ));
        }
        if events.is_empty() {
            return invalid(format!("append to {stream:?} has no events"));
        }
        if events.len() > self.max_batch {
            return invalid(format!(
                "append to {stream:?} has {} events, more than the limit of {}",
                events.len(),
                self.max_batch
            ));
        }
        for (i, event) in events.iter().enumerate() {
            if event.event_type.trim().is_empty() {
                return invalid(format!("event {i} of the append to {stream:?} has no type"));
            }
            if event.schema_version == 0 {
                return invalid(format!(
                    "event {i} ({}) has schema version 0; versions start at 1",
                    event.event_type
                ));
            }
            if events[..i].iter().any(|e| e.event_id == event.event_id) {
                return invalid(format!(
                    "event id {} appears twice in one append",
                    event.event_id
                ));
            }
            if contains_nul(event.payload.json()) {
                return invalid(format!(
                    "payload of event {i} ({}) contains a NUL character (\\u0000), which stores cannot keep",
                    event.event_type
                ));
            }
            let size = event.payload.json().len();
            if size > self.max_payload_bytes {
                return invalid(format!(
                    "payload of event {i} ({}) is {size} bytes, more than the limit of {}",
                    event.event_type, self.max_payload_bytes
                ));
            }
            if event.tags.len() > self.max_tags {
                return invalid(format!(
                    "event {i} ({}) has {} tags, more than the limit of {}",
                    event.event_type,
                    event.tags.len(),
                    self.max_tags
                ));
            }
            for tag in &event.tags {
                if tag.is_empty() || tag.len() > self.max_tag_len || tag.contains('\0') {
                    return invalid(format!(
                        "event {i} ({}) has the tag {tag:?}: tags are 1 to {} bytes, without NUL",
                        event.event_type, self.max_tag_len
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Whether JSON text holds a NUL character (in a string or key), which
/// PostgreSQL's `jsonb` refuses: refused for every store alike. In valid JSON
/// a NUL can only be the escape `\u0000`; an escaped backslash before `u0000`
/// is not one.
fn contains_nul(json: &str) -> bool {
    let bytes = json.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            if bytes[i + 1..].starts_with(b"u0000") {
                return true;
            }
            i += 2; // the escaped character is never the start of an escape
        } else {
            i += 1;
        }
    }
    false
}

/// Errors of every event store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The stream was not at the expected version.
    #[error(
        "concurrency conflict on stream {stream:?}: expected {expected}, found version {actual}"
    )]
    Conflict {
        /// The stream appended to.
        stream: String,
        /// What the writer expected.
        expected: ExpectedVersion,
        /// The stream's actual version (0 = no stream).
        actual: u64,
    },
    /// An event id is already stored elsewhere (another stream or version).
    #[error("event id {event_id} is already stored at {stream:?} version {stream_version}")]
    DuplicateEvent {
        /// The duplicate id.
        event_id: Uuid,
        /// Where it is stored.
        stream: String,
        /// At which version.
        stream_version: u64,
    },
    /// Malformed input, refused before it reached the backend.
    #[error("invalid append: {0}")]
    InvalidInput(String),
    /// The backend could not be reached. The append may or may not have
    /// happened (the connection can drop after the commit was sent): retry it
    /// with the same event ids, which makes the retry a no-op if it did.
    #[error("event store unavailable: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A conditional append's condition failed: an event matching its query
    /// was recorded after the position the decision read up to.
    #[error("append condition failed: a matching event was recorded at {position}")]
    ConditionFailed {
        /// The first such event's position.
        position: Position,
    },
    /// A runner wrote for a partition it no longer owns: another runner
    /// claimed it since (a newer generation). Nothing was written.
    #[error(
        "partition {partition} of {projection:?} is no longer claimed with generation {generation}"
    )]
    Fenced {
        /// The projection.
        projection: String,
        /// The partition.
        partition: u32,
        /// The writer's generation, now outdated.
        generation: u64,
    },
    /// Anything else the backend reported.
    #[error("event store error: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl StoreError {
    /// Whether retrying later may succeed (the backend was unreachable).
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

/// An append-only store of event streams with a global, ordered log.
///
/// Implementations must pass `annals::testing::conformance` (feature `testing`).
#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// Appends events to a stream in one atomic step, checking `expected`.
    ///
    /// Appending events whose ids are all already stored in this stream is a
    /// no-op that returns the first outcome (`repeated`); so is an append
    /// whose `command_id` was already recorded. A failed append writes nothing.
    async fn append_with(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        options: AppendOptions,
    ) -> Result<Appended, StoreError>;

    /// [`append_with`](Self::append_with) with default options.
    async fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<Appended, StoreError> {
        self.append_with(stream, expected, events, AppendOptions::default())
            .await
    }

    /// The outcome recorded for a command id, if that command already ran.
    async fn command_outcome(&self, command_id: Uuid) -> Result<Option<Appended>, StoreError>;

    /// Reads a stream's events with `stream_version >= from_version`, in order,
    /// at most `limit` of them. An unknown stream reads as empty.
    async fn read_stream(
        &self,
        stream: &str,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError>;

    /// The stream's current version (0 = no stream).
    async fn stream_version(&self, stream: &str) -> Result<u64, StoreError>;

    /// Reads the global log strictly after `after`, in position order, at most
    /// `limit` events. Never returns an event while an earlier one may still
    /// become visible: what it returned once, it will never precede.
    async fn read_all(
        &self,
        after: Position,
        limit: usize,
        filter: &EventFilter,
    ) -> Result<Vec<RecordedEvent>, StoreError>;

    /// The position of the last event readers can see (`Position::START` when empty).
    async fn head(&self) -> Result<Position, StoreError>;

    /// Every event after `after`, first those stored (catch-up), then new ones
    /// as they are committed (live). No gaps, no duplicates.
    fn subscribe(&self, after: Position, filter: EventFilter) -> EventStream;

    /// Saves (replaces) the stream's snapshot.
    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError>;

    /// The stream's latest snapshot, if any.
    async fn load_snapshot(&self, stream: &str) -> Result<Option<Snapshot>, StoreError>;

    /// Records how far the named projection (or subscriber) has processed.
    async fn save_checkpoint(&self, name: &str, position: Position) -> Result<(), StoreError>;

    /// How far the named projection has processed, if it ever saved.
    async fn load_checkpoint(&self, name: &str) -> Result<Option<Position>, StoreError>;

    /// Reads the events matching `query` strictly after `after`, in position
    /// order, at most `limit` of them, with the guarantee of
    /// [`read_all`](Self::read_all): what it returned once, no event will
    /// ever precede. Selective queries use indexes (no scan of the log).
    async fn read_query(
        &self,
        query: &Query,
        after: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError>;

    /// Appends events to a stream (at whatever its version) unless an event
    /// matching `condition.fail_if_events_match` was recorded after
    /// `condition.after` (or at all, when that is `None`): then nothing is
    /// written and the error is [`StoreError::ConditionFailed`] naming the
    /// first such event. Events recorded concurrently by other transactions
    /// count, even those not yet visible when the append began: the check
    /// and the append are atomic against every writer of matching events.
    ///
    /// Idempotent as [`append_with`](Self::append_with): an append whose
    /// event ids or command id were already recorded answers the first
    /// outcome (`repeated`) before any condition is looked at.
    async fn append_if(
        &self,
        stream: &str,
        events: Vec<NewEvent>,
        condition: AppendCondition,
        options: AppendOptions,
    ) -> Result<Appended, StoreError>;
}

/// When a conditional append ([`EventStore::append_if`]) must fail: a
/// dynamic consistency boundary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendCondition {
    /// The events the decision depended on.
    pub fail_if_events_match: Query,
    /// The position the decision read up to (the last matching event it
    /// saw); `None` when it saw none.
    pub after: Option<Position>,
}

#[cfg(test)]
mod tests {
    use super::contains_nul;

    #[test]
    fn finds_nul_escapes_and_only_them() {
        assert!(contains_nul(r#"{"note":"a\u0000b"}"#));
        assert!(contains_nul(r#"{"a\u0000":1}"#));
        assert!(contains_nul(r#"["\\\u0000"]"#), "a backslash, then a NUL");
        assert!(
            !contains_nul(r#"{"note":"\\u0000"}"#),
            "a backslash, then text"
        );
        assert!(!contains_nul(r#"{"note":"\u0001 u0000"}"#));
        assert!(!contains_nul(r#"{"n":0}"#));
        assert!(!contains_nul("\\"));
    }
}
