//! The projection runner: checkpointed, batched, retried, dead-lettered, leased.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{BatchOutcome, Claim, DeadLetter, Projection, ProjectionError, ProjectionStore};
use crate::envelope::RecordedEvent;
use crate::error::{BoxError, report};
use crate::position::Position;
use crate::store::{EventFilter, EventStore, EventStream, StoreError};

/// What happens to an event that keeps failing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailurePolicy {
    /// After `max_attempts`, dead-letter it (and the later events of its stream) and go on.
    DeadLetter {
        /// Tries before dead-lettering (at least 1).
        max_attempts: u32,
    },
    /// After `max_attempts`, stop the projection at it.
    Stop {
        /// Tries before stopping (at least 1).
        max_attempts: u32,
    },
}

impl FailurePolicy {
    fn max_attempts(self) -> u32 {
        match self {
            FailurePolicy::DeadLetter { max_attempts } | FailurePolicy::Stop { max_attempts } => {
                max_attempts.max(1)
            }
        }
    }
}

/// Exponential backoff with jitter between retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// First delay.
    pub initial: Duration,
    /// Longest delay.
    pub max: Duration,
}

impl Backoff {
    /// The delays of successive retries: exponential from `initial` to
    /// `max`, with jitter, without end.
    pub fn delays(self) -> impl Iterator<Item = Duration> + Send {
        ExponentialBuilder::default()
            .with_min_delay(self.initial)
            .with_max_delay(self.max)
            .with_jitter()
            .without_max_times()
            .build()
    }
}

/// How a runner batches, retries and waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunnerOptions {
    /// Most events per batch.
    pub batch_size: usize,
    /// How long a batch waits to fill once its first event arrived.
    pub batch_delay: Duration,
    /// The least time between the starts of two batches (zero, the default:
    /// no pacing). A batch whose first event comes sooner keeps gathering
    /// events until then; a full batch goes at once. So under a steady
    /// trickle a projection pays its per-batch costs (a checkpoint save, a
    /// search index refresh) at most once per interval, a quiet projection
    /// applies a lone event at once, and one behind a backlog runs at full
    /// speed.
    pub min_batch_interval: Duration,
    /// Delays between retries of a failing batch.
    pub backoff: Backoff,
    /// What to do with an event that keeps failing.
    pub failure_policy: FailurePolicy,
    /// How often a standby runner tries to take the lease, and an idle one
    /// checks for dead letters an operator asked to retry.
    pub idle_interval: Duration,
}

impl Default for RunnerOptions {
    fn default() -> Self {
        Self {
            batch_size: 500,
            batch_delay: Duration::from_millis(20),
            min_batch_interval: Duration::ZERO,
            backoff: Backoff {
                initial: Duration::from_millis(100),
                max: Duration::from_secs(10),
            },
            failure_policy: FailurePolicy::DeadLetter { max_attempts: 3 },
            idle_interval: Duration::from_secs(1),
        }
    }
}

/// Where a runner stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RunnerState {
    /// Not started.
    #[default]
    Idle,
    /// Waiting for another process's lease (hot standby).
    Standby,
    /// Holding the lease and projecting.
    Running,
    /// Ended: shut down, or stopped at a failure.
    Stopped,
}

/// A runner's progress, for health checks, metrics and lag.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunnerProgress {
    /// Where the runner stands.
    pub state: RunnerState,
    /// The last saved checkpoint.
    pub checkpoint: Position,
    /// Events applied since start.
    pub events_applied: u64,
    /// When the newest applied event was recorded.
    pub last_event_at: Option<DateTime<Utc>>,
    /// When the oldest event read but not yet applied was recorded: set
    /// while a batch is in hand (also while it fails and is retried).
    pub pending_since: Option<DateTime<Utc>>,
    /// True when the last read found nothing more to do.
    pub caught_up: bool,
    /// Events waiting in the dead letters.
    pub dead_letters: usize,
    /// Batches retried after a failure since start.
    pub retries: u64,
    /// The last failure, if the runner is retrying.
    pub last_error: Option<String>,
    /// Who holds the claim it runs under (this runner, while it runs).
    pub owner: Option<String>,
    /// That claim's fencing generation.
    pub generation: Option<u64>,
}

impl RunnerProgress {
    /// How far behind the log the projection is, in seconds: the age of the
    /// oldest event read and not yet applied (so it keeps growing while a
    /// batch fails, even when no new events arrive), or between batches of a
    /// backlog the age of the newest applied event; 0 when caught up.
    pub fn lag_seconds(&self) -> f64 {
        let since = match (self.pending_since, self.caught_up, self.last_event_at) {
            (Some(at), _, _) | (None, false, Some(at)) => at,
            _ => return 0.0,
        };
        (Utc::now() - since).num_milliseconds().max(0) as f64 / 1000.0
    }
}

/// Why a runner ended with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// The store failed in a way retrying did not fix.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The projection reported a fatal error.
    #[error("projection {projection:?} failed: {source}")]
    Fatal {
        /// The projection.
        projection: String,
        /// What it said.
        #[source]
        source: BoxError,
    },
    /// The stop policy stopped the projection at a poison event.
    #[error(
        "projection {projection:?} stopped at event {stream_version} of {stream:?} \
         ({event_type}, position {position}): {error}"
    )]
    Stopped {
        /// The projection.
        projection: String,
        /// The event's stream.
        stream: String,
        /// The event's version.
        stream_version: u64,
        /// The event's type.
        event_type: String,
        /// The event's position.
        position: Position,
        /// Why it failed.
        error: String,
    },
}

/// Why a drive loop ended without an error.
enum Exit {
    Shutdown,
    CaughtUp,
}

/// Keeps one projection current: reads after its checkpoint, applies in
/// batches, saves the checkpoint after each applied batch.
///
/// [`run`](Self::run) holds the projection's lease so that only one process
/// writes; other processes wait as hot standby and take over when it is
/// lost. [`catch_up`](Self::catch_up) applies what is stored and returns.
pub struct ProjectionRunner<S, P> {
    // Shared with the catch-up reader task, which reads ahead of the batch
    // being applied.
    store: Arc<S>,
    projection: Arc<P>,
    name: String,
    options: RunnerOptions,
    status: watch::Sender<RunnerProgress>,
    // The lease's claim while `run` holds it: checkpoint saves carry it, so
    // that a runner that lost the lease cannot move the checkpoint.
    claim: std::sync::Mutex<Option<Claim>>,
    // A partitioned runner's lane reads live from the reader its lanes share.
    feed: Option<Arc<dyn Feed>>,
}

/// Where a partitioned runner's lane reads live: the events of its partition
/// after a position, from one read of the log shared by the lanes.
pub(super) trait Feed: Send + Sync {
    /// The lane's events after `after`, in log order.
    fn events_after(&self, after: Position) -> EventStream;
}

impl<S, P> ProjectionRunner<S, P>
where
    S: ProjectionStore,
    P: Projection,
{
    /// A runner with default options.
    pub fn new(store: S, projection: Arc<P>) -> Self {
        let name = projection.name();
        Self {
            store: Arc::new(store),
            projection,
            name,
            options: RunnerOptions::default(),
            status: watch::Sender::new(RunnerProgress::default()),
            claim: std::sync::Mutex::new(None),
            feed: None,
        }
    }

    /// Replaces the options.
    pub fn with_options(mut self, options: RunnerOptions) -> Self {
        self.options = options;
        self
    }

    /// Reads live from `feed` instead of the store's subscription.
    pub(super) fn with_feed(mut self, feed: Arc<dyn Feed>) -> Self {
        self.feed = Some(feed);
        self
    }

    /// The projection's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Progress updates.
    pub fn progress(&self) -> watch::Receiver<RunnerProgress> {
        self.status.subscribe()
    }

    /// Runs until `shutdown` is cancelled or the projection stops: takes the
    /// lease (waiting as hot standby while another process holds it), then
    /// projects live. A lost lease sends it back to standby. On shutdown the
    /// batch in hand is finished and its checkpoint saved.
    pub async fn run(&self, shutdown: CancellationToken) -> Result<(), RunnerError> {
        loop {
            let Some(mut lease) = self.acquire(&shutdown).await else {
                self.set(|s| s.state = RunnerState::Stopped);
                return Ok(());
            };
            tracing::info!(
                projection = %self.name, generation = lease.claim().generation,
                "lease taken, projecting"
            );
            self.hold(Some(lease.claim().clone()));
            self.set(|s| s.state = RunnerState::Running);
            let outcome = tokio::select! {
                outcome = self.drive_live(&shutdown) => Some(outcome),
                () = lease.lost() => None,
            };
            self.hold(None);
            match outcome {
                None => {
                    tracing::warn!(projection = %self.name, "lease lost, back to standby");
                    self.set(|s| s.state = RunnerState::Standby);
                }
                Some(Err(RunnerError::Store(error @ StoreError::Fenced { .. }))) => {
                    // Another runner claimed the projection while this one
                    // was away (frozen, cut off): its write was refused.
                    tracing::warn!(projection = %self.name, %error, "fenced, back to standby");
                    lease.release().await;
                    self.set(|s| s.state = RunnerState::Standby);
                }
                Some(result) => {
                    lease.release().await;
                    self.set(|s| s.state = RunnerState::Stopped);
                    return result.map(|_| ());
                }
            }
        }
    }

    /// Runs live under a claim someone else holds for it (a
    /// [`PartitionedRunner`](super::PartitionedRunner)'s lane) until `stop`:
    /// its checkpoint saves carry the claim, and a save refused as fenced
    /// ends it with that error.
    pub(super) async fn run_claimed(
        &self,
        claim: Claim,
        stop: CancellationToken,
    ) -> Result<(), RunnerError> {
        self.hold(Some(claim));
        self.set(|s| s.state = RunnerState::Running);
        let outcome = self.drive_live(&stop).await;
        self.hold(None);
        self.set(|s| s.state = RunnerState::Standby);
        outcome.map(|_| ())
    }

    /// Applies everything stored after the checkpoint, then returns the new
    /// checkpoint. Holds no lease: for tests, tools and rebuilds.
    pub async fn catch_up(&self) -> Result<Position, RunnerError> {
        self.drive(&CancellationToken::new(), true).await?;
        Ok(self.status.borrow().checkpoint)
    }

    async fn acquire(&self, shutdown: &CancellationToken) -> Option<Box<dyn super::Lease>> {
        loop {
            if shutdown.is_cancelled() {
                return None;
            }
            match self.store.try_lease(&self.name).await {
                Ok(Some(lease)) => return Some(lease),
                Ok(None) => self.set(|s| s.state = RunnerState::Standby),
                Err(error) => {
                    tracing::warn!(projection = %self.name, %error, "cannot reach the lease");
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return None,
                () = tokio::time::sleep(self.options.idle_interval) => {}
            }
        }
    }

    /// Drives live; a store that is unreachable for a while (a transient
    /// error) makes it start over from the saved checkpoint after a backoff
    /// delay, rather than end the runner.
    async fn drive_live(&self, shutdown: &CancellationToken) -> Result<Exit, RunnerError> {
        let mut delays = self.options.backoff.delays();
        loop {
            let started = Instant::now();
            match self.drive(shutdown, false).await {
                Err(RunnerError::Store(error)) if error.is_transient() => {
                    self.note_failure(&error.to_string());
                    if started.elapsed() > self.options.backoff.max {
                        delays = self.options.backoff.delays(); // a new outage
                    }
                    if !self.pause(&mut delays, shutdown).await {
                        return Ok(Exit::Shutdown);
                    }
                }
                outcome => return outcome,
            }
        }
    }

    async fn drive(
        &self,
        shutdown: &CancellationToken,
        until_caught_up: bool,
    ) -> Result<Exit, RunnerError> {
        let filter = self.projection.filter();
        let mut checkpoint = self
            .store
            .load_checkpoint(&self.name)
            .await?
            .unwrap_or_default();
        let mut blocked = self.apply_requested_retries(true).await?;
        self.set(|s| s.checkpoint = checkpoint);
        let mut events = self.source(checkpoint, &filter, until_caught_up);
        let mut delays = self.options.backoff.delays();
        // Dead letters an operator asked to retry are looked at every idle
        // interval, also when traffic never lets the runner go idle.
        let mut next_retry_check = Instant::now() + self.options.idle_interval;
        let mut last_batch: Option<Instant> = None;
        loop {
            // The first event of a batch: wait for it, or for an idle tick.
            let waited = Instant::now();
            let first = tokio::select! {
                biased;
                () = shutdown.cancelled() => return Ok(Exit::Shutdown),
                item = events.next() => item,
                () = tokio::time::sleep(self.idle_wait(until_caught_up)) => {
                    self.set(|s| s.caught_up = true);
                    // Caught up when no event it handles lies after the
                    // checkpoint (the head may be an event it does not handle).
                    if until_caught_up
                        && self.store.read_all(checkpoint, 1, &filter).await?.is_empty()
                    {
                        return Ok(Exit::CaughtUp);
                    }
                    blocked = self.apply_requested_retries(false).await?;
                    next_retry_check = Instant::now() + self.options.idle_interval;
                    continue;
                }
            };
            let mut batch = match first {
                Some(Ok(event)) => {
                    let recorded_at = event.recorded_at;
                    self.set(|s| {
                        s.caught_up = false;
                        s.pending_since = Some(recorded_at);
                    });
                    // A catch-up reads a backlog: its batches fill. (Bounded,
                    // for a batch size meant as "no limit".)
                    let room = if until_caught_up {
                        self.options.batch_size.min(1 << 16)
                    } else {
                        64
                    };
                    let mut batch = Vec::with_capacity(room);
                    batch.push(event);
                    batch
                }
                Some(Err(error)) => {
                    self.note_failure(&error.to_string());
                    self.pause(&mut delays, shutdown).await;
                    events = self.source(checkpoint, &filter, until_caught_up);
                    continue;
                }
                // A catch-up source ends once a read finds nothing more;
                // applying may have appended more since (a process manager's
                // commands), so look once more.
                None if until_caught_up => {
                    if self
                        .store
                        .read_all(checkpoint, 1, &filter)
                        .await?
                        .is_empty()
                    {
                        self.set(|s| s.caught_up = true);
                        return Ok(Exit::CaughtUp);
                    }
                    events = self.source(checkpoint, &filter, until_caught_up);
                    continue;
                }
                None => {
                    events = self.source(checkpoint, &filter, until_caught_up);
                    continue;
                }
            };
            let mut deadline = Instant::now() + self.options.batch_delay;
            if let Some(last) = last_batch {
                deadline = deadline.max(last + self.options.min_batch_interval);
            }
            let mut broken = false;
            let mut ended = false;
            while batch.len() < self.options.batch_size {
                match tokio::time::timeout_at(deadline, events.next()).await {
                    Ok(Some(Ok(event))) => batch.push(event),
                    Ok(None) if until_caught_up => {
                        ended = true;
                        break;
                    }
                    Ok(Some(Err(_)) | None) => {
                        broken = true;
                        break;
                    }
                    Err(_) => break,
                }
            }

            let read_ms = waited.elapsed().as_secs_f64() * 1e3;
            let applying = Instant::now();
            last_batch = Some(applying);
            let Some(done) = self.apply_batch(&batch, &mut blocked, shutdown).await? else {
                return Ok(Exit::Shutdown);
            };
            let apply_ms = applying.elapsed().as_secs_f64() * 1e3;
            checkpoint = done;
            let saving = Instant::now();
            self.save_checkpoint(checkpoint, shutdown).await?;
            tracing::debug!(
                projection = %self.name, events = batch.len(), %checkpoint, read_ms, apply_ms,
                save_ms = saving.elapsed().as_secs_f64() * 1e3, "batch done"
            );
            let last_at = batch.last().map(|e| e.recorded_at);
            self.set(|s| {
                s.checkpoint = checkpoint;
                s.events_applied += batch.len() as u64;
                s.last_event_at = last_at;
                s.pending_since = None;
                s.caught_up = false;
                s.last_error = None;
            });
            delays = self.options.backoff.delays();
            if ended {
                // Whatever the batch appended is read by a fresh source;
                // an empty one ends the catch-up at its first item.
                broken = true;
            }
            if broken {
                events = self.source(checkpoint, &filter, until_caught_up);
            }
            if Instant::now() >= next_retry_check {
                blocked = self.apply_requested_retries(false).await?;
                next_retry_check = Instant::now() + self.options.idle_interval;
            }
        }
    }

    /// The events after `after`. Live: the store's subscription. Catch-up:
    /// pages of `read_all` read by a task of their own, one page ahead of the
    /// batch being applied (so reading the log overlaps applying it), ending
    /// at the first empty page, i.e. without waiting for an idle tick.
    fn source(&self, after: Position, filter: &EventFilter, until_caught_up: bool) -> EventStream {
        if !until_caught_up {
            return match &self.feed {
                Some(feed) => feed.events_after(after),
                None => self.store.subscribe(after, filter.clone()),
            };
        }
        read_ahead(
            Arc::clone(&self.store),
            after,
            filter.clone(),
            self.options.batch_size.max(1),
        )
    }

    fn idle_wait(&self, until_caught_up: bool) -> Duration {
        if until_caught_up {
            // Long enough for the subscription's own reads, short enough for tests.
            self.options.batch_delay.max(Duration::from_millis(50))
        } else {
            self.options.idle_interval
        }
    }

    /// Applies a batch, retrying and dead-lettering as the policy says. Returns the
    /// checkpoint to save, or `None` when shutdown interrupted a retry.
    async fn apply_batch(
        &self,
        batch: &[RecordedEvent],
        blocked: &mut HashSet<String>,
        shutdown: &CancellationToken,
    ) -> Result<Option<Position>, RunnerError> {
        let last = batch.last().map(|e| e.position).unwrap_or_default();
        // Events of streams already dead-lettered wait behind them, unapplied. (No
        // copy of the batch when nothing is dead-lettered, the usual case.)
        let mut to_dead_letter: Vec<DeadLetter> = Vec::new();
        let runnable: Cow<'_, [RecordedEvent]> = if blocked.is_empty() {
            Cow::Borrowed(batch)
        } else {
            let (runnable, waiting): (Vec<_>, Vec<_>) = batch
                .iter()
                .cloned()
                .partition(|e| !blocked.contains(&self.projection.key(e)));
            to_dead_letter.extend(waiting.into_iter().map(waiting_behind));
            Cow::Owned(runnable)
        };

        let mut delays = self.options.backoff.delays();
        let mut attempts = 0;
        while !runnable.is_empty() {
            attempts += 1;
            let failed = match self.projection.apply(&runnable).await {
                Ok(BatchOutcome { failed }) if failed.is_empty() => break,
                Ok(BatchOutcome { failed }) => failed,
                Err(ProjectionError::Transient(error)) => {
                    self.note_failure(&report(&*error));
                    if !self.pause(&mut delays, shutdown).await {
                        return Ok(None);
                    }
                    attempts -= 1;
                    continue;
                }
                Err(ProjectionError::Fatal(source)) => {
                    return Err(RunnerError::Fatal {
                        projection: self.name.clone(),
                        source,
                    });
                }
            };
            self.note_failure(&report(&*failed[0].error));
            if attempts < self.options.failure_policy.max_attempts() {
                if !self.pause(&mut delays, shutdown).await {
                    return Ok(None);
                }
                continue;
            }
            let errors: HashMap<usize, String> = failed
                .into_iter()
                .map(|f| (f.index, report(&*f.error)))
                .collect();
            if let FailurePolicy::Stop { .. } = self.options.failure_policy {
                let index = errors.keys().copied().min().unwrap_or(0);
                let Some(poison) = runnable.get(index) else {
                    break;
                };
                // Everything before the poison event is applied: keep it.
                if let Some(before) = index.checked_sub(1).and_then(|i| runnable.get(i)) {
                    self.store_checkpoint(before.position).await?;
                    self.set(|s| s.checkpoint = before.position);
                }
                return Err(RunnerError::Stopped {
                    projection: self.name.clone(),
                    stream: poison.stream_id.clone(),
                    stream_version: poison.stream_version,
                    event_type: poison.event_type.clone(),
                    position: poison.position,
                    error: errors.get(&index).cloned().unwrap_or_default(),
                });
            }
            for (i, event) in runnable.iter().enumerate() {
                if let Some(error) = errors.get(&i) {
                    tracing::error!(
                        projection = %self.name, stream = %event.stream_id,
                        version = event.stream_version, event_type = %event.event_type,
                        %error, "dead-lettering event"
                    );
                    blocked.insert(self.projection.key(event));
                    to_dead_letter.push(DeadLetter {
                        event: event.clone(),
                        error: Some(error.clone()),
                        attempts,
                        retry_requested: false,
                    });
                } else if blocked.contains(&self.projection.key(event))
                    && self.is_after_failure(&to_dead_letter, event)
                {
                    to_dead_letter.push(waiting_behind(event.clone()));
                }
            }
            break;
        }
        if !to_dead_letter.is_empty() {
            to_dead_letter.sort_by_key(|p| p.event.position);
            match self.held() {
                Some(claim) => {
                    self.store
                        .add_claimed_dead_letters(&claim, to_dead_letter)
                        .await?
                }
                None => {
                    self.store
                        .add_dead_letters(&self.name, to_dead_letter)
                        .await?
                }
            }
            let dead_letters = self.store.dead_letters(&self.name).await?.len();
            self.set(|s| s.dead_letters = dead_letters);
        }
        Ok(Some(last))
    }

    /// Applies the dead letters an operator asked to retry (or, at start,
    /// none) and returns the streams still blocked.
    async fn apply_requested_retries(
        &self,
        at_start: bool,
    ) -> Result<HashSet<String>, RunnerError> {
        let dead_letters = self.store.dead_letters(&self.name).await?;
        let retry = !at_start && dead_letters.iter().any(|p| p.retry_requested);
        if !retry {
            self.set(|s| s.dead_letters = dead_letters.len());
            return Ok(self.keys_of(&dead_letters));
        }
        tracing::info!(projection = %self.name, events = dead_letters.len(), "retrying dead letters");
        let events: Vec<RecordedEvent> = dead_letters.iter().map(|p| p.event.clone()).collect();
        let outcome = match self.projection.apply(&events).await {
            Ok(applied) => applied,
            Err(ProjectionError::Transient(error)) => {
                self.note_failure(&report(&*error));
                return Ok(self.keys_of(&dead_letters));
            }
            Err(ProjectionError::Fatal(source)) => {
                return Err(RunnerError::Fatal {
                    projection: self.name.clone(),
                    source,
                });
            }
        };
        let errors: HashMap<usize, String> = outcome
            .failed
            .into_iter()
            .map(|f| (f.index, report(&*f.error)))
            .collect();
        let mut still_blocked = HashSet::new();
        let mut keep = Vec::new();
        let mut done = Vec::new();
        for (i, mut p) in dead_letters.into_iter().enumerate() {
            let key = self.projection.key(&p.event);
            if let Some(error) = errors.get(&i) {
                still_blocked.insert(key);
                p.error = Some(error.clone());
                p.attempts += 1;
                p.retry_requested = false;
                keep.push(p);
            } else if still_blocked.contains(&key) {
                p.error = None;
                p.retry_requested = false;
                keep.push(p);
            } else {
                done.push(p.event.event_id);
            }
        }
        if !keep.is_empty() {
            self.store.add_dead_letters(&self.name, keep).await?;
        }
        self.store.remove_dead_letters(&self.name, &done).await?;
        let left = self.store.dead_letters(&self.name).await?.len();
        self.set(|s| s.dead_letters = left);
        tracing::info!(projection = %self.name, applied = done.len(), left, "dead letters retried");
        Ok(still_blocked)
    }

    fn keys_of(&self, dead_letters: &[DeadLetter]) -> HashSet<String> {
        dead_letters
            .iter()
            .map(|p| self.projection.key(&p.event))
            .collect()
    }

    async fn save_checkpoint(
        &self,
        position: Position,
        shutdown: &CancellationToken,
    ) -> Result<(), RunnerError> {
        let mut delays = self.options.backoff.delays();
        loop {
            match self.store_checkpoint(position).await {
                Ok(()) => return Ok(()),
                Err(error) if error.is_transient() && !shutdown.is_cancelled() => {
                    self.note_failure(&error.to_string());
                    self.pause(&mut delays, shutdown).await;
                }
                Err(error) => return Err(error.into()),
            }
        }
    }

    /// Saves the checkpoint, fenced by the lease's claim while `run` holds one.
    async fn store_checkpoint(&self, position: Position) -> Result<(), StoreError> {
        match self.held() {
            Some(claim) => self.store.save_claimed_checkpoint(&claim, position).await,
            None => self.store.save_checkpoint(&self.name, position).await,
        }
    }

    /// The claim it runs under, if any.
    fn held(&self) -> Option<Claim> {
        self.claim
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Sets the state it reports (a partitioned runner's lanes it does not run).
    pub(super) fn mark(&self, state: RunnerState) {
        self.set(|s| s.state = state);
    }

    fn hold(&self, claim: Option<Claim>) {
        let (owner, generation) = claim
            .as_ref()
            .map(|c| (c.owner.clone(), c.generation))
            .unzip();
        self.set(|s| {
            s.owner = owner;
            s.generation = generation;
        });
        *self
            .claim
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = claim;
    }

    /// Sleeps the next backoff delay; false when shutdown came first.
    async fn pause(
        &self,
        delays: &mut impl Iterator<Item = Duration>,
        shutdown: &CancellationToken,
    ) -> bool {
        let delay = delays.next().unwrap_or(self.options.backoff.max);
        tokio::select! {
            () = shutdown.cancelled() => false,
            () = tokio::time::sleep(delay) => true,
        }
    }

    fn note_failure(&self, error: &str) {
        tracing::warn!(projection = %self.name, %error, "projection retrying");
        self.set(|s| {
            s.retries += 1;
            s.last_error = Some(error.to_owned());
        });
    }

    /// Whether `event` comes after a failed event of its key already set to dead-letter.
    fn is_after_failure(&self, to_dead_letter: &[DeadLetter], event: &RecordedEvent) -> bool {
        let key = self.projection.key(event);
        to_dead_letter.iter().any(|p| {
            p.error.is_some()
                && p.event.position < event.position
                && self.projection.key(&p.event) == key
        })
    }

    fn set(&self, change: impl FnOnce(&mut RunnerProgress)) {
        self.status.send_modify(change);
    }
}

fn waiting_behind(event: RecordedEvent) -> DeadLetter {
    DeadLetter {
        event,
        error: None,
        attempts: 0,
        retry_requested: false,
    }
}

/// Reads the log after `after` in pages of `page` events on a task of its
/// own, at most one page ahead of the consumer, and ends at the first empty
/// page. An error ends it after being delivered. The task stops when the
/// stream is dropped.
fn read_ahead<S: EventStore>(
    store: Arc<S>,
    after: Position,
    filter: EventFilter,
    page: usize,
) -> EventStream {
    let (pages, received) = tokio::sync::mpsc::channel::<Result<Vec<RecordedEvent>, StoreError>>(1);
    tokio::spawn(async move {
        let mut after = after;
        loop {
            let read = store.read_all(after, page, &filter).await;
            let last = match &read {
                Ok(events) => events.last().map(|e| e.position),
                Err(_) => None,
            };
            // Stop at the end of the log, after an error, or once nobody
            // listens any more.
            if pages.send(read).await.is_err() {
                return;
            }
            match last {
                Some(last) => after = last,
                None => return,
            }
        }
    });
    futures::stream::unfold(received, |mut received| async move {
        let page = received.recv().await?;
        Some((page, received))
    })
    .flat_map(|page| match page {
        Ok(events) => futures::stream::iter(events.into_iter().map(Ok)).left_stream(),
        Err(error) => futures::stream::iter(std::iter::once(Err(error))).right_stream(),
    })
    .boxed()
}
