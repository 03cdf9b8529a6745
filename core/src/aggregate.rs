//! Aggregates: consistency boundaries that decide on commands and evolve from events.

use std::fmt::Display;

use serde_json::Value;

use crate::event::DomainEvent;

/// An aggregate's identity: its type name, stream naming and snapshot support.
///
/// Derive it with `#[derive(AggregateType)]` and `#[aggregate(name = "flight")]`
/// (streams `flight-<id>`; the name is required, since it is stored in every
/// stream id and must not follow renames of the Rust type); `#[aggregate(snapshot)]`
/// stores snapshots of the state through serde (bump
/// `#[aggregate(snapshot_version = N)]` when the state's shape changes, and
/// older snapshots are ignored).
pub trait AggregateType {
    /// The stable type name, the prefix of every stream of this aggregate.
    const NAME: &'static str;

    /// The schema of this aggregate's snapshots.
    const SNAPSHOT_VERSION: u32 = 1;

    /// The stream that holds the aggregate with this id: `<name>-<id>`.
    fn stream_id(id: &dyn Display) -> String {
        format!("{}-{}", Self::NAME, id)
    }

    /// The id in a stream id of this aggregate, the inverse of
    /// [`stream_id`](Self::stream_id); `None` for another aggregate's stream.
    ///
    /// ```
    /// # use annals::AggregateType;
    /// #[derive(AggregateType)]
    /// #[aggregate(name = "flight")]
    /// struct Flight;
    ///
    /// assert_eq!(Flight::id_of(&Flight::stream_id(&"AN123")), Some("AN123"));
    /// assert_eq!(Flight::id_of("booking-42"), None);
    /// assert_eq!(Flight::id_of("flights-42"), None);
    /// ```
    fn id_of(stream_id: &str) -> Option<&str> {
        stream_id.strip_prefix(Self::NAME)?.strip_prefix('-')
    }

    /// The state as a snapshot, or `None` when this aggregate takes no snapshots.
    fn snapshot(&self) -> Option<Value> {
        None
    }

    /// Rebuilds the state from a snapshot; `None` when it cannot (the
    /// repository then replays the whole stream).
    fn restore(_state: &Value) -> Option<Self>
    where
        Self: Sized,
    {
        None
    }
}

/// An event-sourced aggregate: its state is the fold of its events.
///
/// `apply` evolves the state and never fails: events are facts. Decisions
/// live in [`Handle`] implementations, one per command.
pub trait Aggregate: AggregateType + Default + Send + Sync + 'static {
    /// The events this aggregate emits.
    type Event: DomainEvent;
    /// Why a command is refused (a broken business rule).
    type Error: std::error::Error + Send + Sync + 'static;

    /// Evolves the state by one event.
    fn apply(&mut self, event: &Self::Event);
}

/// Decides on one command: pure, no I/O, so it can be retried on conflict.
///
/// Domain services the decision needs (pricing, payment policies) travel in
/// the command, so they are always explicit.
pub trait Handle<C>: Aggregate {
    /// The events that the command causes, or why it is refused.
    fn handle(&self, command: &C) -> Result<Vec<Self::Event>, Self::Error>;
}
