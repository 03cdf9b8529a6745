//! Process managers (sagas): long-running processes that react to events and send commands.
//!
//! A process manager is an event-sourced aggregate of its own, one instance
//! per correlation id (stream `<name>-<correlation id>`). Inputs (events from
//! the log, deadlines, rejected commands) are decided by the pure
//! [`ProcessManager::react`] into process events; each process event says what
//! it asks of the world through [`ProcessManager::effects`]: commands to send
//! and deadlines to set. Because effects are derived from the *stored*
//! process events, they survive a crash between recording and sending.
//!
//! Idempotency comes from derived ids:
//! - an input runs as a command whose id is derived from the triggering event
//!   (or deadline), so re-delivery records nothing twice;
//! - each command sent has an id derived from the instance, the process event's
//!   version and its index, so the receiving aggregate runs it at most once
//!   (see [`CommandContext::command_id`]), and the runtime skips commands the
//!   store has already recorded;
//! - deadlines have derived ids and live in the store, so they fire after a restart.
//!
//! [`ProcessRunner`] runs a process manager as a [`Projection`]: the
//! [`ProjectionRunner`](crate::projection::ProjectionRunner) gives it a
//! checkpoint, retries, dead letters and a single-runner lease.
//! [`ProcessRunner::fire_deadlines`] fires what is due.

use std::collections::{HashMap, VecDeque};
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::aggregate::{Aggregate, Handle};
use crate::envelope::{Metadata, RecordedEvent};
use crate::error::{BoxError, report};
use crate::projection::{
    Backoff, BatchOutcome, Deadline, Projection, ProjectionError, ProjectionStore,
};
use crate::repository::{CommandContext, ExecuteError, Repository};
use crate::store::{EventFilter, StoreError};

/// What a process instance reacts to.
#[derive(Debug, Clone, PartialEq)]
pub enum Input<C> {
    /// An event from the global log.
    Event(RecordedEvent),
    /// One of its deadlines came due.
    Deadline {
        /// The deadline's name.
        name: String,
        /// When it was due.
        due_at: DateTime<Utc>,
    },
    /// A command it sent was refused.
    Rejected {
        /// The command.
        command: C,
        /// Why.
        reason: String,
    },
}

/// When a deadline falls due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// At a time the process decided (a business deadline: "the hold
    /// expires at 18:00").
    At(DateTime<Utc>),
    /// This long after the effects go out: a timeout on what the process
    /// asks of the world. It runs from when the request is sent, not from
    /// when the triggering event was recorded, so a process that reads the
    /// log late does not time out requests it has only just made.
    After(chrono::Duration),
}

/// What a process event asks of the world.
#[derive(Debug, Clone, PartialEq)]
pub struct Effects<C> {
    /// Commands to send, in order.
    pub commands: Vec<C>,
    /// Deadlines to set: name and when it falls due.
    pub deadlines: Vec<(String, Due)>,
    /// Names of the instance's pending deadlines to cancel (set earlier,
    /// no longer needed: the answer they waited for came).
    pub cancels: Vec<String>,
}

impl<C> Default for Effects<C> {
    fn default() -> Self {
        Self {
            commands: Vec::new(),
            deadlines: Vec::new(),
            cancels: Vec::new(),
        }
    }
}

impl<C> Effects<C> {
    /// No effects.
    pub fn none() -> Self {
        Self::default()
    }

    /// Sends one command.
    pub fn command(command: C) -> Self {
        Self {
            commands: vec![command],
            deadlines: Vec::new(),
            cancels: Vec::new(),
        }
    }

    /// Also sets a deadline at a given time.
    pub fn with_deadline(mut self, name: impl Into<String>, due_at: DateTime<Utc>) -> Self {
        self.deadlines.push((name.into(), Due::At(due_at)));
        self
    }

    /// Also cancels the instance's pending deadlines of this name. A
    /// deadline that fires anyway (it was already due) reaches
    /// [`ProcessManager::react`] as usual, which should ignore it in a stage
    /// that no longer waits.
    pub fn cancelling(mut self, name: impl Into<String>) -> Self {
        self.cancels.push(name.into());
        self
    }

    /// Also sets a timeout: a deadline `after` the effects go out.
    pub fn with_timeout(mut self, name: impl Into<String>, after: chrono::Duration) -> Self {
        self.deadlines.push((name.into(), Due::After(after)));
        self
    }
}

/// A long-running process: its state is event-sourced (it is an
/// [`Aggregate`] with [`Infallible`](std::convert::Infallible) errors), and it
/// decides on inputs instead of commands.
pub trait ProcessManager: Aggregate<Error = std::convert::Infallible> {
    /// The commands it sends.
    type Command: Clone + Debug + Send + Sync + 'static;

    /// The events from the log it reacts to (filtered in the store's query).
    fn filter() -> EventFilter;

    /// The instance an event belongs to (its correlation id); `None` when the
    /// event is not for this process.
    fn correlate(event: &RecordedEvent) -> Option<Uuid>;

    /// The process events an input causes. Pure: same state and input, same events.
    fn react(&self, input: &Input<Self::Command>) -> Vec<Self::Event>;

    /// What a recorded process event asks of the world.
    fn effects(event: &Self::Event) -> Effects<Self::Command>;
}

/// An input, wrapped so it runs through [`Repository::execute_with`].
#[derive(Debug, Clone, PartialEq)]
pub struct Trigger<C>(pub Input<C>);

impl<P: ProcessManager> Handle<Trigger<P::Command>> for P {
    fn handle(
        &self,
        trigger: &Trigger<P::Command>,
    ) -> Result<Vec<P::Event>, std::convert::Infallible> {
        Ok(self.react(&trigger.0))
    }
}

/// Why a command could not be delivered.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    /// The receiver refused it (a business rule): fed back to the process
    /// as [`Input::Rejected`], with the error's [`report`] as the reason.
    #[error("rejected: {0}")]
    Rejected(#[source] BoxError),
    /// The receiver was unreachable: the input is retried later.
    #[error("transient: {0}")]
    Transient(#[source] BoxError),
}

/// Delivers a process manager's commands to their receivers (repositories,
/// external services). Each command comes with a derived command id: pass it
/// on so the receiver runs it at most once.
#[async_trait]
pub trait Dispatcher<C>: Send + Sync + 'static {
    /// Sends one command.
    async fn dispatch(&self, command: C, context: CommandContext) -> Result<(), DispatchError>;
}

/// How a process retries what fails for a reason that may pass (a receiver
/// that is down, a circuit that is open, a store that is unreachable).
///
/// Together these bound how long an instance can be stuck: an event whose
/// commands cannot be delivered is retried for `retry_for`, then reported
/// failed, and the runner's [`FailurePolicy`](crate::projection::FailurePolicy)
/// dead-letters it; a deadline that cannot fire is tried
/// `deadline_attempts` times, `deadline_retry` apart, then kept as a dead
/// letter. Either way an operator sees it (and can retry it with
/// [`ProjectionStore::retry_dead_letters`]); nothing is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessOptions {
    /// Delays between tries of an event whose commands were not delivered.
    pub retry: Backoff,
    /// How long an event's commands are retried before the event is
    /// reported as failed.
    pub retry_for: Duration,
    /// Delays between attempts at firing a deadline.
    pub deadline_retry: Backoff,
    /// Attempts at firing a deadline before it becomes a dead letter (at least 1).
    pub deadline_attempts: u32,
    /// How long a claimed deadline is reserved for its firer: a firer that
    /// dies leaves it to fire again after this.
    pub deadline_hold: Duration,
}

impl Default for ProcessOptions {
    /// An event is retried for a minute; a deadline 10 times over about a
    /// minute and a half. A stuck instance is a dead letter within about two
    /// minutes.
    fn default() -> Self {
        Self {
            retry: Backoff {
                initial: Duration::from_millis(200),
                max: Duration::from_secs(5),
            },
            retry_for: Duration::from_secs(60),
            deadline_retry: Backoff {
                initial: Duration::from_millis(500),
                max: Duration::from_secs(15),
            },
            deadline_attempts: 10,
            deadline_hold: Duration::from_secs(30),
        }
    }
}

/// Runs a process manager over a store with a dispatcher.
pub struct ProcessRunner<P, S, D> {
    repository: Repository<P, S>,
    dispatcher: Arc<D>,
    options: ProcessOptions,
    /// When each event whose commands keep failing first failed, so that
    /// its retry budget spans the runner's re-deliveries.
    failing_since: Mutex<HashMap<Uuid, Instant>>,
    partitions: u32,
}

impl<P, S, D> ProcessRunner<P, S, D>
where
    P: ProcessManager,
    S: ProjectionStore + Clone,
    D: Dispatcher<P::Command>,
{
    /// A process manager instance store and its dispatcher.
    pub fn new(store: S, dispatcher: Arc<D>) -> Self {
        Self {
            repository: Repository::new(store).max_attempts(10),
            dispatcher,
            options: ProcessOptions::default(),
            failing_since: Mutex::new(HashMap::new()),
            partitions: 1,
        }
    }

    /// Runs as `partitions` partitions by instance (see
    /// [`Projection::partitions`]; a
    /// [`PartitionedRunner`](crate::projection::PartitionedRunner) runs
    /// them): instances in different partitions advance in parallel, in
    /// one process or several. 1 (the default) runs under a lease.
    pub fn partitions(mut self, partitions: u32) -> Self {
        self.partitions = partitions.max(1);
        self
    }

    /// Replaces the retry options.
    pub fn with_options(mut self, options: ProcessOptions) -> Self {
        self.options = options;
        self
    }

    /// Keeps the states of the `instances` most recently active process
    /// instances in memory ([`Repository::cache`]): an instance that takes
    /// several inputs in a row is read once.
    pub fn cache(mut self, instances: usize) -> Self {
        self.repository = self.repository.cache(instances);
        self
    }

    /// The repository holding process instances, to inspect their state.
    pub fn repository(&self) -> &Repository<P, S> {
        &self.repository
    }

    /// Feeds an event to its instance, then sends what the instance asks for.
    pub async fn handle_event(&self, event: &RecordedEvent) -> Result<(), ProcessError> {
        let Some(instance) = P::correlate(event) else {
            return Ok(());
        };
        let id = derive_id(event.event_id, P::NAME);
        self.run(
            instance,
            Input::Event(event.clone()),
            id,
            Some(event.event_id),
        )
        .await
    }

    /// Fires every deadline due at `now`; returns how many fired.
    ///
    /// A deadline is completed only once what it triggered is recorded and
    /// sent. One that fails is tried again later with backoff, and after
    /// [`ProcessOptions::deadline_attempts`] it becomes a dead letter.
    pub async fn fire_deadlines(&self, now: DateTime<Utc>) -> Result<usize, ProcessError> {
        let store = self.repository.store();
        if store
            .next_deadline(P::NAME)
            .await?
            .is_none_or(|at| at > now)
        {
            // The common tick: nothing due, so no need to look at the log.
            return Ok(0);
        }
        // Deadlines fire in log time: while the process has not yet read
        // events recorded before a deadline fell due, those come first (a
        // payment answered in time but not read yet must not time out).
        // Applies to a process driven by a runner, which keeps a checkpoint.
        let mut due_by = now;
        if let Some(checkpoint) = store.load_checkpoint(P::NAME).await? {
            let pending = store.read_all(checkpoint, 1, &P::filter()).await?;
            if let Some(first) = pending.first() {
                due_by = due_by.min(first.recorded_at);
            }
        }
        let claimed = store
            .claim_deadlines(P::NAME, due_by, 100, self.options.deadline_hold)
            .await?;
        // Deadlines of different instances fire side by side; each
        // instance's in order.
        let fired: Vec<Result<usize, ProcessError>> =
            futures::stream::iter(by_instance(claimed, |d: &Deadline| d.instance))
                .map(|deadlines| async move {
                    let mut fired = 0;
                    for deadline in deadlines {
                        fired += usize::from(self.fire(deadline).await?);
                    }
                    Ok(fired)
                })
                .buffer_unordered(INSTANCES_IN_PARALLEL)
                .collect()
                .await;
        fired.into_iter().sum()
    }

    /// Fires one claimed deadline; true when it is done, false when it
    /// failed and was left to retry (or dead-lettered).
    async fn fire(&self, deadline: Deadline) -> Result<bool, ProcessError> {
        let store = self.repository.store();
        let input = Input::Deadline {
            name: deadline.name.clone(),
            due_at: deadline.due_at,
        };
        match self.run(deadline.instance, input, deadline.id, None).await {
            Ok(()) => {
                store.complete_deadline(P::NAME, deadline.id).await?;
                Ok(true)
            }
            Err(error) => {
                let error = report(&error);
                let attempts = deadline.attempts.max(1);
                // A retry by an operator gives a dead letter another round.
                let retry_at = (!attempts.is_multiple_of(self.options.deadline_attempts.max(1)))
                    .then(|| {
                        let delay = self
                            .options
                            .deadline_retry
                            .delays()
                            .nth(attempts as usize - 1)
                            .unwrap_or(self.options.deadline_retry.max);
                        Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default()
                    });
                match retry_at {
                    Some(at) => tracing::warn!(
                        process = P::NAME, instance = %deadline.instance, deadline = deadline.name,
                        attempts, %error, retry_at = %at, "deadline failed, will retry"
                    ),
                    None => tracing::error!(
                        process = P::NAME, instance = %deadline.instance, deadline = deadline.name,
                        attempts, %error, "deadline failed too often: dead-lettered"
                    ),
                }
                store
                    .fail_deadline(P::NAME, deadline.id, &error, retry_at)
                    .await?;
                Ok(false)
            }
        }
    }

    /// Fires due deadlines every `interval` until `shutdown`.
    pub async fn run_deadlines(&self, interval: Duration, shutdown: CancellationToken) {
        loop {
            if let Err(error) = self.fire_deadlines(Utc::now()).await {
                tracing::warn!(process = P::NAME, %error, "deadlines not fired");
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(interval) => {}
            }
        }
    }

    /// Decides an input, records it, and works through the effects (and the
    /// inputs that rejected commands feed back) until none are left.
    async fn run(
        &self,
        instance: Uuid,
        input: Input<P::Command>,
        input_id: Uuid,
        causation: Option<Uuid>,
    ) -> Result<(), ProcessError> {
        let store = self.repository.store();
        let mut queue = VecDeque::from([(input, input_id, causation)]);
        while let Some((input, input_id, causation)) = queue.pop_front() {
            let context = CommandContext {
                command_id: Some(input_id),
                metadata: Metadata {
                    correlation_id: Some(instance),
                    causation_id: causation.or(Some(input_id)),
                    actor: Some(P::NAME.to_owned()),
                    ..Metadata::default()
                },
            };
            let executed = self
                .repository
                .execute_with(instance, Trigger(input), context)
                .await
                .map_err(ProcessError::from_execute)?;
            // Effects of events this run wrote have ids no earlier run can
            // have used (they derive from the new versions), so the store is
            // asked which already went out only when the input was repeated.
            let fresh = !executed.repeated;
            let first_version = executed.stream_version + 1 - executed.events.len() as u64;
            for (offset, event) in executed.events.iter().enumerate() {
                let version = first_version + offset as u64;
                let effects = P::effects(event);
                for (k, (name, due)) in effects.deadlines.into_iter().enumerate() {
                    let id = derive_id(instance, &format!("{version}/deadline/{k}"));
                    if !fresh && store.command_outcome(id).await?.is_some() {
                        continue; // it already fired: a re-delivery must not set it again
                    }
                    let due_at = match due {
                        Due::At(at) => at,
                        Due::After(after) => Utc::now() + after,
                    };
                    store
                        .schedule_deadline(Deadline::new(P::NAME, id, instance, name, due_at))
                        .await?;
                }
                for name in &effects.cancels {
                    store.cancel_deadlines(P::NAME, instance, name).await?;
                }
                for (k, command) in effects.commands.into_iter().enumerate() {
                    let command_id = derive_id(instance, &format!("{version}/command/{k}"));
                    if !fresh && store.command_outcome(command_id).await?.is_some() {
                        continue; // already ran before a crash or re-delivery
                    }
                    let refusal = derive_id(command_id, "rejected");
                    if !fresh && store.command_outcome(refusal).await?.is_some() {
                        // Refused before, and the refusal is recorded: feed it back again
                        // (its effects may not all have gone out) rather than
                        // sending the command again.
                        let refused = Input::Rejected {
                            command,
                            reason: String::new(),
                        };
                        queue.push_back((refused, refusal, Some(command_id)));
                        continue;
                    }
                    let context = CommandContext {
                        command_id: Some(command_id),
                        metadata: Metadata {
                            correlation_id: Some(instance),
                            causation_id: Some(input_id),
                            actor: Some(P::NAME.to_owned()),
                            ..Metadata::default()
                        },
                    };
                    match self.dispatcher.dispatch(command.clone(), context).await {
                        Ok(()) => {}
                        Err(DispatchError::Rejected(error)) => {
                            let reason = report(&*error);
                            let feedback = Input::Rejected { command, reason };
                            queue.push_back((feedback, refusal, Some(command_id)));
                        }
                        Err(DispatchError::Transient(source)) => {
                            return Err(ProcessError::Transient {
                                command: format!("{command:?}"),
                                source,
                            });
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// How many process instances one batch advances at once.
const INSTANCES_IN_PARALLEL: usize = 16;

/// A deterministic id: the same inputs give the same id, on every node, after every restart.
pub fn derive_id(base: Uuid, name: &str) -> Uuid {
    Uuid::new_v5(&base, name.as_bytes())
}

/// Why a process could not handle an input.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A command receiver was unreachable: retry later.
    #[error("{command} could not be delivered: {source}")]
    Transient {
        /// The command, as `Debug` prints it.
        command: String,
        /// Why.
        #[source]
        source: BoxError,
    },
    /// The process's own history could not be loaded or written.
    #[error("process state: {0}")]
    State(#[source] ExecuteError<std::convert::Infallible>),
}

impl ProcessError {
    fn from_execute(error: ExecuteError<std::convert::Infallible>) -> Self {
        match error {
            ExecuteError::Store(store) => ProcessError::Store(store),
            other => ProcessError::State(other),
        }
    }
}

/// An event a process could not handle, for its dead letter.
#[derive(Debug, thiserror::Error)]
#[error("{process} could not handle {event_type} {stream_version} of {stream:?}")]
struct Unhandled {
    process: &'static str,
    event_type: String,
    stream: String,
    stream_version: u64,
    #[source]
    source: ProcessError,
}

#[async_trait]
impl<P, S, D> Projection for ProcessRunner<P, S, D>
where
    P: ProcessManager,
    S: ProjectionStore + Clone,
    D: Dispatcher<P::Command>,
{
    fn name(&self) -> String {
        P::NAME.to_owned()
    }

    fn filter(&self) -> EventFilter {
        P::filter()
    }

    async fn apply(&self, batch: &[RecordedEvent]) -> Result<BatchOutcome, ProjectionError> {
        // Instances are independent: each one takes its inputs in log order,
        // different instances go side by side.
        let correlated = batch
            .iter()
            .enumerate()
            .filter_map(|(index, event)| Some((P::correlate(event)?, index)));
        let groups = by_instance(correlated, |(instance, _)| *instance);
        let outcomes: Vec<Result<(), (usize, ProcessError)>> = futures::stream::iter(groups)
            .map(|group| async move {
                for (_, index) in group {
                    self.handle_with_retries(&batch[index])
                        .await
                        .map_err(|error| (index, error))?;
                }
                Ok(())
            })
            .buffer_unordered(INSTANCES_IN_PARALLEL)
            .collect()
            .await;
        let mut applied = BatchOutcome::applied();
        for outcome in outcomes {
            let Err((index, error)) = outcome else {
                continue;
            };
            match error {
                ProcessError::Store(error) if error.is_transient() => {
                    // The store itself is down: nothing could be recorded,
                    // not even a dead letter; the runner retries.
                    return Err(ProjectionError::Transient(Box::new(error)));
                }
                source => {
                    let event = &batch[index];
                    applied.failed.push(crate::projection::FailedEvent {
                        index,
                        error: Box::new(Unhandled {
                            process: P::NAME,
                            event_type: event.event_type.clone(),
                            stream: event.stream_id.clone(),
                            stream_version: event.stream_version,
                            source,
                        }),
                    });
                }
            }
        }
        applied.failed.sort_by_key(|f| f.index);
        Ok(applied)
    }

    fn partitions(&self) -> u32 {
        self.partitions
    }

    fn key(&self, event: &RecordedEvent) -> String {
        // A dead-lettered input holds back its instance, not the stream it
        // came from (a flight's events feed many bookings).
        P::correlate(event).map_or_else(|| event.stream_id.clone(), |id| id.to_string())
    }
}

impl<P, S, D> ProcessRunner<P, S, D>
where
    P: ProcessManager,
    S: ProjectionStore + Clone,
    D: Dispatcher<P::Command>,
{
    /// Handles an event, retrying while its commands fail for a transient
    /// reason, for at most [`ProcessOptions::retry_for`] since it first
    /// failed (across re-deliveries).
    async fn handle_with_retries(&self, event: &RecordedEvent) -> Result<(), ProcessError> {
        let mut delays = self.options.retry.delays();
        loop {
            match self.handle_event(event).await {
                Err(error @ ProcessError::Transient { .. }) => {
                    let since = self.failing_since(event.event_id);
                    if since.elapsed() >= self.options.retry_for {
                        return Err(error);
                    }
                    tracing::debug!(process = P::NAME, event = %event.event_id, %error, "retrying");
                    tokio::time::sleep(delays.next().unwrap_or(self.options.retry.max)).await;
                }
                outcome => {
                    self.lock_failing().remove(&event.event_id);
                    return outcome;
                }
            }
        }
    }

    fn failing_since(&self, event_id: Uuid) -> Instant {
        let mut failing = self.lock_failing();
        if failing.len() > 10_000 {
            // Events that were dead-lettered long ago.
            let horizon = self.options.retry_for * 10;
            failing.retain(|_, since| since.elapsed() < horizon);
        }
        *failing.entry(event_id).or_insert_with(Instant::now)
    }

    fn lock_failing(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Instant>> {
        self.failing_since
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Groups items by instance, keeping their order within each instance.
fn by_instance<T>(
    items: impl IntoIterator<Item = T>,
    instance: impl Fn(&T) -> Uuid,
) -> Vec<Vec<T>> {
    let mut groups: Vec<Vec<T>> = Vec::new();
    let mut group_of: HashMap<Uuid, usize> = HashMap::new();
    for item in items {
        let group = *group_of.entry(instance(&item)).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[group].push(item);
    }
    groups
}
