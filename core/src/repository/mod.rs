//! Command execution: load, decide, append, retry on conflict.

mod cache;

use std::fmt::Display;
use std::marker::PhantomData;
use std::sync::Arc;

use uuid::Uuid;

use crate::aggregate::{Aggregate, Handle};
use crate::envelope::{Metadata, NewEvent, RecordedEvent};
use crate::event::{DomainEvent, EventError};
use crate::position::Position;
use crate::store::{AppendOptions, Appended, EventStore, ExpectedVersion, Snapshot, StoreError};
use cache::StateCache;

/// Events read per call while loading a stream.
const LOAD_PAGE: usize = 4096;

/// Runs commands against aggregates of type `A` kept in store `S`.
///
/// ```
/// # use annals::{Aggregate, DomainEvent, Handle, Repository, memory::MemoryStore};
/// # use serde::{Deserialize, Serialize};
/// #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
/// enum CounterEvent { Incremented { by: u32 } }
///
/// #[derive(Debug, Default, annals::AggregateType)]
/// #[aggregate(name = "counter")]
/// struct Counter { total: u64 }
///
/// #[derive(Debug, thiserror::Error)]
/// #[error("too big")]
/// struct TooBig;
///
/// impl Aggregate for Counter {
///     type Event = CounterEvent;
///     type Error = TooBig;
///     fn apply(&mut self, event: &CounterEvent) {
///         let CounterEvent::Incremented { by } = event;
///         self.total += u64::from(*by);
///     }
/// }
///
/// struct Increment(u32);
/// impl Handle<Increment> for Counter {
///     fn handle(&self, cmd: &Increment) -> Result<Vec<CounterEvent>, TooBig> {
///         if cmd.0 > 100 { return Err(TooBig) }
///         Ok(vec![CounterEvent::Incremented { by: cmd.0 }])
///     }
/// }
///
/// # tokio_test(async {
/// let counters = Repository::<Counter, _>::new(MemoryStore::new());
/// let done = counters.execute("c1", Increment(5)).await.unwrap();
/// assert_eq!(done.stream_version, 1);
/// assert_eq!(counters.load("c1").await.unwrap().state.total, 5);
/// assert!(counters.execute("c1", Increment(500)).await.is_err());
/// # });
/// # fn tokio_test(f: impl std::future::Future<Output = ()>) {
/// #     tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
/// # }
/// ```
pub struct Repository<A, S> {
    store: S,
    max_attempts: u32,
    snapshot_every: Option<u64>,
    /// Shared by clones.
    cache: Option<Arc<StateCache<A>>>,
    aggregate: PhantomData<fn() -> A>,
}

impl<A, S: Clone> Clone for Repository<A, S> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            max_attempts: self.max_attempts,
            snapshot_every: self.snapshot_every,
            cache: self.cache.clone(),
            aggregate: PhantomData,
        }
    }
}

/// An aggregate's state and the stream version it reflects.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded<A> {
    /// The folded state.
    pub state: A,
    /// The version of the last event folded in (0 = no stream).
    pub version: u64,
    /// The position of the last event folded in, when known (not for a
    /// state restored from a snapshot with no events after it).
    pub position: Option<Position>,
}

/// What a command did.
#[derive(Debug, Clone, PartialEq)]
pub struct Executed<E> {
    /// The events the command caused (the first outcome's, when repeated).
    pub events: Vec<E>,
    /// The stream version after the command.
    pub stream_version: u64,
    /// A read-your-writes token: once a projection has passed it, it has
    /// seen this command's events (for a command that wrote nothing, the
    /// events of the stream its decision saw).
    pub position: Position,
    /// True when the command id had already run and nothing was written.
    pub repeated: bool,
    /// How many times the command was decided: 1, plus one for each
    /// conflict with a concurrent writer and each kept state found stale.
    pub attempts: u32,
}

/// Per-command options: idempotency key and metadata.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CommandContext {
    /// Runs the command at most once: a second run returns the first outcome.
    pub command_id: Option<Uuid>,
    /// Stamped on every event; `causation_id` defaults to the command id.
    pub metadata: Metadata,
}

/// Why a command did not run.
#[derive(Debug, thiserror::Error)]
pub enum ExecuteError<E: std::error::Error + 'static> {
    /// The aggregate refused the command: a business rule.
    #[error("command rejected: {0}")]
    Rejected(#[source] E),
    /// The store failed, or conflicts outlasted the retries.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored event could not be decoded.
    #[error("event {stream_version} of stream {stream:?} cannot be loaded: {source}")]
    Decode {
        /// The stream being loaded.
        stream: String,
        /// The version of the event that failed.
        stream_version: u64,
        /// Why (unknown type, unsupported version, bad payload).
        #[source]
        source: EventError,
    },
    /// A new event could not be encoded.
    #[error(transparent)]
    Encode(EventError),
}

impl<A, S> Repository<A, S>
where
    A: Aggregate,
    S: EventStore,
{
    /// A repository with 5 attempts on conflict and no snapshots.
    pub fn new(store: S) -> Self {
        Self {
            store,
            max_attempts: 5,
            snapshot_every: None,
            cache: None,
            aggregate: PhantomData,
        }
    }

    /// Keeps the states of the `streams` most recently written aggregates
    /// in memory (clones of this repository share them), so that the next
    /// command against one does not read its stream again. Worth it for
    /// streams that take many commands in a row (a flight's seats, a process
    /// instance); 0 keeps none.
    ///
    /// A kept state may be stale when other processes write the same
    /// streams. No decision made on a stale state is ever reported:
    /// - a command that appends is checked by the append itself (its
    ///   expected version is the kept state's), and on a conflict it is
    ///   decided again on the stream as stored, at no extra cost when the
    ///   state was current;
    /// - a command that appends nothing (it decides no events, or the
    ///   aggregate refuses it) is confirmed by reading what the stream holds
    ///   after the kept version, one read; if there is anything, the state
    ///   catches up and the command is decided again.
    pub fn cache(mut self, streams: usize) -> Self {
        self.cache = (streams > 0).then(|| Arc::new(StateCache::new(streams)));
        self
    }

    /// How many times a command is tried when concurrent writers conflict (at least 1).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// Saves a snapshot whenever a stream's version crosses a multiple of
    /// `every` (for aggregates that support snapshots).
    pub fn snapshot_every(mut self, every: u64) -> Self {
        self.snapshot_every = (every > 0).then_some(every);
        self
    }

    /// The store behind this repository.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Loads an aggregate: its events folded from the start, or, with
    /// [`snapshot_every`](Self::snapshot_every), its latest snapshot (when
    /// the aggregate supports snapshots and the snapshot is of its current
    /// schema version) and the events after it. Never from the
    /// [`cache`](Self::cache): a load always reads the store.
    pub async fn load(&self, id: impl Display) -> Result<Loaded<A>, ExecuteError<A::Error>> {
        self.load_stream(&A::stream_id(&id)).await
    }

    /// Runs a command against the aggregate with this id.
    pub async fn execute<C>(
        &self,
        id: impl Display,
        command: C,
    ) -> Result<Executed<A::Event>, ExecuteError<A::Error>>
    where
        A: Handle<C>,
        C: Send + Sync,
    {
        self.execute_with(id, command, CommandContext::default())
            .await
    }

    /// Runs a command with an idempotency key and metadata.
    ///
    /// On a concurrency conflict the aggregate is reloaded and the command
    /// decided again, up to the configured number of attempts.
    pub async fn execute_with<C>(
        &self,
        id: impl Display,
        command: C,
        context: CommandContext,
    ) -> Result<Executed<A::Event>, ExecuteError<A::Error>>
    where
        A: Handle<C>,
        C: Send + Sync,
    {
        let stream = A::stream_id(&id);
        let mut metadata = context.metadata;
        if metadata.causation_id.is_none() {
            metadata.causation_id = context.command_id;
        }
        let options = AppendOptions {
            command_id: context.command_id,
        };

        // The state to decide on: the kept one first (if any), then the
        // stream as stored.
        let mut next = self.cache.as_ref().and_then(|cache| cache.take(&stream));
        let mut kept = next.is_some();
        let mut attempts = 1;
        loop {
            let mut loaded = match next.take() {
                Some(loaded) => loaded,
                None => {
                    kept = false;
                    self.load_stream(&stream).await?
                }
            };
            let events = match loaded.state.handle(&command) {
                Ok(events) if !events.is_empty() => events,
                decided => {
                    // Nothing to append, so no version check will tell
                    // whether a kept state was current: ask the store for
                    // what came after it (one read, beside the command-id
                    // lookup). A command id that already ran is found by
                    // the append in the common case; only a run that
                    // writes nothing looks its first outcome up.
                    let (newer, first) = futures::join!(
                        async {
                            match kept {
                                true => self.catch_up(&stream, &mut loaded).await,
                                false => Ok(false),
                            }
                        },
                        self.first_outcome(context.command_id)
                    );
                    if let Some(first) = first? {
                        return replay(&self.store, &stream, &first, attempts).await;
                    }
                    if newer? {
                        tracing::debug!(stream, "kept state was stale, deciding again");
                        kept = false;
                        next = Some(loaded);
                        attempts += 1;
                        continue;
                    }
                    let decided = decided.map_err(ExecuteError::Rejected);
                    let position = match loaded.position {
                        Some(position) => position,
                        None => self.store.head().await?,
                    };
                    let stream_version = loaded.version;
                    self.keep(&stream, loaded);
                    return Ok(Executed {
                        events: decided?,
                        stream_version,
                        position,
                        repeated: false,
                        attempts,
                    });
                }
            };
            let new = encode(&events, &metadata)?;
            let expected = ExpectedVersion::Exact(loaded.version);
            match self
                .store
                .append_with(&stream, expected, new, options.clone())
                .await
            {
                Ok(done) if done.repeated => {
                    return replay(&self.store, &stream, &done, attempts).await;
                }
                Ok(done) => {
                    let Loaded {
                        mut state, version, ..
                    } = loaded;
                    for event in &events {
                        state.apply(event);
                    }
                    self.maybe_snapshot(&stream, &state, version, done.stream_version)
                        .await;
                    let loaded = Loaded {
                        state,
                        version: done.stream_version,
                        position: Some(done.position),
                    };
                    self.keep(&stream, loaded);
                    return Ok(Executed {
                        events,
                        stream_version: done.stream_version,
                        position: done.position,
                        repeated: false,
                        attempts,
                    });
                }
                Err(StoreError::Conflict { .. }) if attempts < self.max_attempts => {
                    tracing::debug!(stream, attempts, "conflict, deciding again");
                    attempts += 1;
                }
                Err(error) => return Err(error.into()),
            }
        }
    }

    /// Keeps a state for the next command on its stream (with a cache).
    fn keep(&self, stream: &str, loaded: Loaded<A>) {
        if let Some(cache) = &self.cache {
            cache.put(stream, loaded);
        }
    }

    async fn load_stream(&self, stream: &str) -> Result<Loaded<A>, ExecuteError<A::Error>> {
        let mut loaded = Loaded {
            state: A::default(),
            version: 0,
            position: Some(Position::START),
        };
        if self.snapshot_every.is_some()
            && let Some(snapshot) = self.store.load_snapshot(stream).await?
            && snapshot.schema_version == A::SNAPSHOT_VERSION
            && let Some(state) = A::restore(&snapshot.state)
        {
            loaded = Loaded {
                state,
                version: snapshot.stream_version,
                position: None,
            };
        }
        self.catch_up(stream, &mut loaded).await?;
        Ok(loaded)
    }

    /// Folds the events stored after `loaded` into it; true when there were any.
    async fn catch_up(
        &self,
        stream: &str,
        loaded: &mut Loaded<A>,
    ) -> Result<bool, ExecuteError<A::Error>> {
        let mut newer = false;
        loop {
            let page = self
                .store
                .read_stream(stream, loaded.version + 1, LOAD_PAGE)
                .await?;
            let full = page.len() == LOAD_PAGE;
            for recorded in &page {
                loaded.state.apply(&decode::<A::Event, A::Error>(recorded)?);
                loaded.version = recorded.stream_version;
                loaded.position = Some(recorded.position);
                newer = true;
            }
            if !full {
                return Ok(newer);
            }
        }
    }

    /// The recorded outcome of a command id, if it ran before.
    async fn first_outcome(
        &self,
        command_id: Option<Uuid>,
    ) -> Result<Option<Appended>, StoreError> {
        match command_id {
            Some(id) => self.store.command_outcome(id).await,
            None => Ok(None),
        }
    }

    async fn maybe_snapshot(&self, stream: &str, state: &A, before: u64, after: u64) {
        let Some(every) = self.snapshot_every else {
            return;
        };
        if before / every == after / every {
            return;
        }
        let Some(value) = state.snapshot() else {
            return;
        };
        let snapshot = Snapshot {
            stream_id: stream.to_owned(),
            stream_version: after,
            schema_version: A::SNAPSHOT_VERSION,
            state: value,
        };
        // A snapshot is an optimisation: failing to save one must not fail the command.
        if let Err(error) = self.store.save_snapshot(snapshot).await {
            tracing::warn!(stream, %error, "snapshot not saved");
        }
    }
}

fn decode<E: DomainEvent, R: std::error::Error + 'static>(
    recorded: &RecordedEvent,
) -> Result<E, ExecuteError<R>> {
    recorded
        .decode::<E>()
        .map_err(|source| ExecuteError::Decode {
            stream: recorded.stream_id.clone(),
            stream_version: recorded.stream_version,
            source,
        })
}

/// Decided events as the store takes them, each with `metadata`.
pub(crate) fn encode<E: DomainEvent, R: std::error::Error + 'static>(
    events: &[E],
    metadata: &Metadata,
) -> Result<Vec<NewEvent>, ExecuteError<R>> {
    events
        .iter()
        .map(|e| NewEvent::from_domain(e, metadata.clone()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(ExecuteError::Encode)
}

/// A repeated command's answer: its first outcome, with the events it
/// recorded, read back from `stream`.
pub(crate) async fn replay<
    S: EventStore + ?Sized,
    E: DomainEvent,
    R: std::error::Error + 'static,
>(
    store: &S,
    stream: &str,
    first: &Appended,
    attempts: u32,
) -> Result<Executed<E>, ExecuteError<R>> {
    let count = (first.stream_version + 1).saturating_sub(first.first_version) as usize;
    let recorded = store
        .read_stream(stream, first.first_version, count)
        .await?;
    let events = recorded
        .iter()
        .map(decode::<E, R>)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Executed {
        events,
        stream_version: first.stream_version,
        position: first.position,
        repeated: true,
        attempts,
    })
}
