//! Decisions over a query: dynamic consistency boundaries, beside aggregates.
//!
//! An aggregate draws one consistency boundary per stream. A rule that spans
//! streams (a flight number used once a day, a passenger's bookings capped)
//! needs a boundary drawn by the rule itself: the events that matter to it,
//! selected by type and [tag](crate::DomainEvent::tags) ([`Query`]). A
//! [`Decision`] folds those events into small states ([`DecisionState`], one
//! per rule; tuples combine them), decides purely, and the [`Decider`]
//! appends what it decided on the condition that no event matching the same
//! query was recorded since it read ([`EventStore::append_if`]): on a
//! conflict it reads and decides again, a bounded number of times.
//!
//! ```
//! use annals::decision::{Decider, Decision, DecisionState};
//! use annals::memory::MemoryStore;
//! use annals::{DomainEvent, Query, QueryItem};
//!
//! #[derive(Debug, Clone, PartialEq, DomainEvent)]
//! enum AccountEvent {
//!     Registered {
//!         #[tag("username")]
//!         username: String,
//!     },
//! }
//!
//! /// Whether a username is taken: the events tagged with it.
//! struct Taken { username: String, taken: bool }
//!
//! impl DecisionState for Taken {
//!     type Event = AccountEvent;
//!     fn query(&self) -> Query {
//!         Query::new().or(QueryItem::tagged([format!("username:{}", self.username)]))
//!     }
//!     fn apply(&mut self, _: &AccountEvent) {
//!         self.taken = true;
//!     }
//! }
//!
//! struct Register { username: String }
//!
//! #[derive(Debug, thiserror::Error)]
//! #[error("username taken")]
//! struct UsernameTaken;
//!
//! impl Decision for Register {
//!     type State = Taken;
//!     type Event = AccountEvent;
//!     type Error = UsernameTaken;
//!     fn state(&self) -> Taken { Taken { username: self.username.clone(), taken: false } }
//!     fn stream(&self) -> String { format!("account-{}", self.username) }
//!     fn decide(&self, state: &Taken) -> Result<Vec<AccountEvent>, UsernameTaken> {
//!         if state.taken { return Err(UsernameTaken) }
//!         Ok(vec![AccountEvent::Registered { username: self.username.clone() }])
//!     }
//! }
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let decider = Decider::new(MemoryStore::new());
//! decider.execute(Register { username: "ada".into() }).await.unwrap();
//! assert!(decider.execute(Register { username: "ada".into() }).await.is_err());
//! decider.execute(Register { username: "grace".into() }).await.unwrap();
//! // What the rule sees now, without deciding.
//! let (ada, _) = decider.load(Taken { username: "ada".into(), taken: false }).await.unwrap();
//! assert!(ada.taken);
//! # });
//! ```

use std::time::Duration;

use crate::envelope::RecordedEvent;
use crate::event::{DomainEvent, EventError};
use crate::position::Position;
use crate::query::Query;
use crate::repository::{CommandContext, ExecuteError, Executed, encode, replay};
use crate::store::{AppendCondition, AppendOptions, EventStore, StoreError};

/// Events read per call while a decision reads its query.
const READ_PAGE: usize = 4096;
/// How long a decision waits for an event (its own, or the one its condition
/// failed on) to become readable.
const READABLE_PATIENCE: Duration = Duration::from_secs(5);

/// What one rule of a decision needs to know: a fold of the events that
/// match its query, like [`Aggregate::apply`](crate::Aggregate::apply).
///
/// Tuples of states are states too: each member folds only the events that
/// match its own query, and the decision's query is the union of theirs.
pub trait DecisionState: Send {
    /// The events it folds.
    type Event: DomainEvent;

    /// The events it depends on (built from the decision's parameters).
    fn query(&self) -> Query;

    /// Evolves the state by one event that matches its query.
    fn apply(&mut self, event: &Self::Event);

    /// Folds a recorded event that matches this state's query: decodes and
    /// applies it when it is one of the state's event types, ignores it
    /// otherwise (a query by tag alone may match events of other enums).
    /// (The [`Decider`] passes only events its read of this query returned;
    /// a tuple of states passes each member the events of its own query.)
    fn fold(&mut self, recorded: &RecordedEvent) -> Result<(), EventError> {
        let known = <Self::Event as DomainEvent>::TYPES
            .iter()
            .any(|t| t.name == recorded.event_type);
        if known {
            self.apply(&recorded.decode::<Self::Event>()?);
        }
        Ok(())
    }
}

/// The event type of combined states: none (their members fold the events).
#[derive(Debug, Clone, PartialEq, crate::DomainEvent)]
pub enum Combined {}

macro_rules! combine {
    ($($state:ident . $n:tt),+) => {
        impl<$($state: DecisionState),+> DecisionState for ($($state,)+) {
            type Event = Combined;

            fn query(&self) -> Query {
                let mut query = Query::new();
                $(query = query.union(self.$n.query());)+
                query
            }

            fn apply(&mut self, event: &Combined) {
                match *event {}
            }

            fn fold(&mut self, recorded: &RecordedEvent) -> Result<(), EventError> {
                $(
                    if self.$n.query().matches(&recorded.event_type, &recorded.tags) {
                        self.$n.fold(recorded)?;
                    }
                )+
                Ok(())
            }
        }
    };
}

combine!(A.0, B.1);
combine!(A.0, B.1, C.2);
combine!(A.0, B.1, C.2, D.3);

/// A command decided over a query instead of one aggregate's stream.
pub trait Decision: Send + Sync {
    /// What it needs to know (one state, or a tuple of them).
    type State: DecisionState;
    /// What it records.
    type Event: DomainEvent;
    /// Why it refuses (a broken business rule).
    type Error: std::error::Error + Send + Sync + 'static;

    /// The empty state, its query built from the decision's parameters.
    fn state(&self) -> Self::State;

    /// The stream the new events go to (appended at whatever its version:
    /// the query, not the stream, is the consistency boundary).
    fn stream(&self) -> String;

    /// The events the decision causes, or why it is refused. Pure.
    fn decide(&self, state: &Self::State) -> Result<Vec<Self::Event>, Self::Error>;
}

/// Runs [`Decision`]s over a store: reads the events of the decision's
/// query, decides, and appends on the condition that nothing matching the
/// query was recorded since; decides again on a conflict. A decision that
/// appended returns once its events are readable (a store may hold a
/// committed event back from readers while an older transaction runs; the
/// wait is bounded), so that the caller's next decision sees them.
#[derive(Debug, Clone)]
pub struct Decider<S> {
    store: S,
    max_attempts: u32,
}

impl<S: EventStore> Decider<S> {
    /// A decider with 5 attempts on conflict.
    pub fn new(store: S) -> Self {
        Self {
            store,
            max_attempts: 5,
        }
    }

    /// How many times a decision is tried when concurrent writers conflict (at least 1).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// The store behind this decider.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The state a decision would decide on now: every event matching the
    /// state's query, folded, and the position of the last one (`None`
    /// when none matched). Reads only; for showing what a rule sees.
    pub async fn load<St: DecisionState>(
        &self,
        mut state: St,
    ) -> Result<(St, Option<Position>), ExecuteError<std::convert::Infallible>> {
        let query = state.query();
        let after = self.read(&query, &mut state).await?;
        Ok((state, after))
    }

    /// Runs a decision.
    pub async fn execute<D: Decision>(
        &self,
        decision: D,
    ) -> Result<Executed<D::Event>, ExecuteError<D::Error>> {
        self.execute_with(decision, CommandContext::default()).await
    }

    /// Runs a decision with an idempotency key and metadata.
    pub async fn execute_with<D: Decision>(
        &self,
        decision: D,
        context: CommandContext,
    ) -> Result<Executed<D::Event>, ExecuteError<D::Error>> {
        let stream = decision.stream();
        let mut metadata = context.metadata;
        if metadata.causation_id.is_none() {
            metadata.causation_id = context.command_id;
        }
        let options = AppendOptions {
            command_id: context.command_id,
        };
        let mut attempts = 1;
        loop {
            let mut state = decision.state();
            let query = state.query();
            let after = self.read(&query, &mut state).await?;
            let events = match decision.decide(&state) {
                Ok(events) if !events.is_empty() => events,
                decided => {
                    // Nothing to append: a command id that already ran is
                    // answered as it was the first time.
                    if let Some(id) = context.command_id
                        && let Some(first) = self.store.command_outcome(id).await?
                    {
                        return replay(&self.store, &stream, &first, attempts).await;
                    }
                    return Ok(Executed {
                        events: decided.map_err(ExecuteError::Rejected)?,
                        stream_version: self.store.stream_version(&stream).await?,
                        position: after.unwrap_or(Position::START),
                        repeated: false,
                        attempts,
                    });
                }
            };
            let new = encode(&events, &metadata)?;
            let condition = AppendCondition {
                fail_if_events_match: query,
                after,
            };
            match self
                .store
                .append_if(&stream, new, condition, options.clone())
                .await
            {
                Ok(done) if done.repeated => {
                    return replay(&self.store, &stream, &done, attempts).await;
                }
                Ok(done) => {
                    // The next decision reads what this one wrote.
                    self.readable(done.position).await?;
                    return Ok(Executed {
                        events,
                        stream_version: done.stream_version,
                        position: done.position,
                        repeated: false,
                        attempts,
                    });
                }
                Err(StoreError::ConditionFailed { position }) if attempts < self.max_attempts => {
                    tracing::debug!(stream, attempts, %position, "condition failed, deciding again");
                    self.readable(position).await?;
                    attempts += 1;
                }
                Err(error) => return Err(error.into()),
            }
        }
    }

    /// Waits (a while) until the event at `position` is readable, so that the
    /// next read sees it: a store may keep a committed event from readers
    /// while a transaction older than its own is still running. Used after
    /// a decision appended (the caller's next decision sees its events) and
    /// after a condition failed (reading again before the event it failed on
    /// is readable would decide on the same state and fail on it again).
    /// After [`READABLE_PATIENCE`] it goes on regardless.
    async fn readable<E: std::error::Error + 'static>(
        &self,
        position: Position,
    ) -> Result<(), ExecuteError<E>> {
        let deadline = tokio::time::Instant::now() + READABLE_PATIENCE;
        let mut pause = Duration::from_millis(1);
        while self.store.head().await? < position && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Folds every event of `query` into `state`; the position of the last one.
    async fn read<E: std::error::Error + 'static>(
        &self,
        query: &Query,
        state: &mut impl DecisionState,
    ) -> Result<Option<Position>, ExecuteError<E>> {
        let mut after = None;
        loop {
            let page = self
                .store
                .read_query(query, after.unwrap_or(Position::START), READ_PAGE)
                .await?;
            for recorded in &page {
                state
                    .fold(recorded)
                    .map_err(|source| ExecuteError::Decode {
                        stream: recorded.stream_id.clone(),
                        stream_version: recorded.stream_version,
                        source,
                    })?;
                after = Some(recorded.position);
            }
            if page.len() < READ_PAGE {
                return Ok(after);
            }
        }
    }
}
