//! [`PartitionedRunner`]: a projection's partitions shared among runners.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::claim::{Claim, checkpoint_name, owner_id, partition_of};
use super::runner::{
    Feed, ProjectionRunner, RunnerError, RunnerOptions, RunnerProgress, RunnerState,
};
use super::{BatchOutcome, FailedEvent, Projection, ProjectionError, ProjectionStore};
use crate::envelope::RecordedEvent;
use crate::position::Position;
use crate::store::{EventFilter, EventStream, StoreError};

/// How long a partitioned runner's claims outlive its last heartbeat, by
/// default: another runner takes its partitions at most this long (plus a
/// heartbeat) after it died.
pub const DEFAULT_CLAIM_TTL: Duration = Duration::from_secs(5);

/// One partition of a projection, as a projection of its own: the events
/// of the other partitions are skipped (applied as nothing).
pub(super) struct Partition<P> {
    inner: Arc<P>,
    name: String,
    partition: u32,
    partitions: u32,
}

impl<P: Projection> Partition<P> {
    fn holds(&self, event: &RecordedEvent) -> bool {
        partition_of(&self.inner.key(event), self.partitions) == self.partition
    }
}

#[async_trait]
impl<P: Projection> Projection for Partition<P> {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn filter(&self) -> EventFilter {
        self.inner.filter()
    }

    async fn apply(&self, batch: &[RecordedEvent]) -> Result<BatchOutcome, ProjectionError> {
        let (indices, events): (Vec<usize>, Vec<RecordedEvent>) = batch
            .iter()
            .enumerate()
            .filter(|(_, event)| self.holds(event))
            .map(|(index, event)| (index, event.clone()))
            .unzip();
        if events.is_empty() {
            return Ok(BatchOutcome::applied());
        }
        let outcome = self.inner.apply(&events).await?;
        // Failures name indices into the partition's events: back to the batch's.
        let failed = outcome
            .failed
            .into_iter()
            .filter_map(|failed| {
                Some(FailedEvent {
                    index: *indices.get(failed.index)?,
                    error: failed.error,
                })
            })
            .collect();
        Ok(BatchOutcome { failed })
    }

    fn key(&self, event: &RecordedEvent) -> String {
        self.inner.key(event)
    }
}

/// The read of the log a runner's lanes share: one subscription from the
/// oldest position a lane asked for, each event handed to every lane in log
/// order (the lane of its partition applies it). A lane that asks for
/// events before the subscription's position (a new lane, or one starting
/// over after an error) makes it start again from there; the other lanes
/// skip what they were already sent.
struct SharedFeed<S> {
    store: S,
    filter: EventFilter,
    lanes: std::sync::Mutex<FeedLanes>,
    rewind: Notify,
}

/// The lanes reading from a [`SharedFeed`], and where it stands.
#[derive(Default)]
struct FeedLanes {
    /// Per partition: the last position sent (or asked for), and where to.
    senders: HashMap<u32, (Position, mpsc::Sender<Result<RecordedEvent, StoreError>>)>,
    /// Where the subscription stands: where it started, then the last
    /// event it delivered.
    at: Option<Position>,
    /// A lane asked for events before `at`.
    rewind: bool,
}

/// Events buffered per lane: a lane that falls this far behind holds the
/// shared read back (and so the other lanes).
const LANE_BUFFER: usize = 1024;

impl<S: ProjectionStore> SharedFeed<S> {
    fn lanes(&self) -> std::sync::MutexGuard<'_, FeedLanes> {
        self.lanes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers a lane's reader: its events after `after`.
    fn register(&self, partition: u32, after: Position) -> EventStream {
        let (sender, receiver) = mpsc::channel(LANE_BUFFER);
        {
            let mut lanes = self.lanes();
            lanes.senders.insert(partition, (after, sender));
            if lanes.at.is_some_and(|at| after < at) {
                lanes.rewind = true;
            }
        }
        self.rewind.notify_one();
        futures::stream::unfold(receiver, |mut receiver| async move {
            receiver.recv().await.map(|item| (item, receiver))
        })
        .boxed()
    }

    /// Reads until `stop`: subscribes from the oldest position a lane
    /// asked for, and again whenever a lane asks for older events.
    async fn run(&self, stop: CancellationToken) {
        loop {
            let from = {
                let mut lanes = self.lanes();
                lanes.rewind = false;
                // Lanes that stopped reading (their partition went elsewhere).
                lanes.senders.retain(|_, (_, sender)| !sender.is_closed());
                let from = lanes.senders.values().map(|(after, _)| *after).min();
                lanes.at = from;
                from
            };
            let Some(from) = from else {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = self.rewind.notified() => continue,
                }
            };
            let mut events = self.store.subscribe(from, self.filter.clone());
            loop {
                let item = tokio::select! {
                    biased;
                    () = stop.cancelled() => return,
                    () = self.rewind.notified() => {
                        if self.lanes().rewind { break } else { continue }
                    }
                    item = events.next() => item,
                };
                match item {
                    Some(Ok(event)) => self.deliver(event).await,
                    Some(Err(error)) => {
                        // Each lane retries on its own terms: it asks again.
                        let senders: Vec<_> = self
                            .lanes()
                            .senders
                            .drain()
                            .map(|(_, (_, sender))| sender)
                            .collect();
                        let error = error.to_string();
                        for sender in senders {
                            let _ = sender
                                .send(Err(StoreError::Unavailable(error.clone().into())))
                                .await;
                        }
                        break;
                    }
                    None => break,
                }
            }
        }
    }

    /// Hands `event` to every lane not yet past it: the lane of its
    /// partition applies it, the others skip it (so that every lane's
    /// checkpoint follows the log, not only its own partition's events).
    async fn deliver(&self, event: RecordedEvent) {
        let senders: Vec<_> = {
            let mut lanes = self.lanes();
            if lanes.rewind {
                // A lane waits for older events: nothing moves until the
                // read starts again from there (what is read now comes again).
                return;
            }
            lanes.at = Some(event.position);
            lanes
                .senders
                .values_mut()
                .filter(|(after, _)| event.position > *after)
                .map(|(after, sender)| {
                    *after = event.position;
                    sender.clone()
                })
                .collect()
        };
        for sender in senders {
            // A closed lane stopped reading (it started over, or stopped).
            let _ = sender.send(Ok(event.clone())).await;
        }
    }
}

/// One lane's view of a [`SharedFeed`].
struct LaneFeed<S> {
    shared: Arc<SharedFeed<S>>,
    partition: u32,
}

impl<S: ProjectionStore> Feed for LaneFeed<S> {
    fn events_after(&self, after: Position) -> EventStream {
        self.shared.register(self.partition, after)
    }
}

/// A running lane: its task and how to stop it.
struct Lane {
    generation: u64,
    stop: CancellationToken,
    task: JoinHandle<Result<(), RunnerError>>,
}

/// A projection run as partitions ([`Projection::partitions`]) by several
/// runners at once, in one process or several: each [`PartitionedRunner`]
/// claims its share of the partitions ([`ProjectionStore::claim`]) and runs
/// one lane per partition it holds.
///
/// A lane is a [`ProjectionRunner`] of its own over the events of its
/// partition (those whose [`Projection::key`] falls in it, by
/// [`partition_of`]): its own checkpoint and dead letters (both named
/// [`checkpoint_name`]), its own batches, retries and lag. Order holds per
/// key; events of different keys in different partitions are applied side
/// by side, in no promised order. Each lane's checkpoint saves carry its
/// claim, so a runner that lost a partition (frozen past its expiry, cut
/// off from the database) cannot move that partition's checkpoint.
///
/// The lanes of a runner share one read of the log: a subscription from the
/// oldest checkpoint among them, each event handed to every lane, applied by
/// the lane of its partition and skipped by the others (so every lane's
/// checkpoint follows the log). PostgreSQL's reads do not grow with the
/// partitions a runner holds.
pub struct PartitionedRunner<S, P> {
    store: S,
    feed: Arc<SharedFeed<S>>,
    name: String,
    owner: String,
    claim_ttl: Duration,
    // One per partition, in partition order.
    lanes: Vec<Arc<ProjectionRunner<S, Partition<P>>>>,
}

impl<S, P> PartitionedRunner<S, P>
where
    S: ProjectionStore + Clone,
    P: Projection,
{
    /// A runner of `projection`'s [`partitions`](Projection::partitions),
    /// each lane with `options`, claims renewed within [`DEFAULT_CLAIM_TTL`].
    pub fn new(store: S, projection: Arc<P>, options: RunnerOptions) -> Self {
        let name = projection.name();
        let partitions = projection.partitions().max(1);
        let feed = Arc::new(SharedFeed {
            store: store.clone(),
            filter: projection.filter(),
            lanes: std::sync::Mutex::new(FeedLanes::default()),
            rewind: Notify::new(),
        });
        let lanes = (0..partitions)
            .map(|partition| {
                let lane = Partition {
                    inner: Arc::clone(&projection),
                    name: checkpoint_name(&name, partition, partitions),
                    partition,
                    partitions,
                };
                let reads = LaneFeed {
                    shared: Arc::clone(&feed),
                    partition,
                };
                Arc::new(
                    ProjectionRunner::new(store.clone(), Arc::new(lane))
                        .with_options(options)
                        .with_feed(Arc::new(reads)),
                )
            })
            .collect();
        Self {
            feed,
            store,
            owner: owner_id(&name),
            name,
            claim_ttl: DEFAULT_CLAIM_TTL,
            lanes,
        }
    }

    /// Claims outlive the last heartbeat by `ttl` (heartbeats come every
    /// third of it).
    pub fn with_claim_ttl(mut self, ttl: Duration) -> Self {
        self.claim_ttl = ttl;
        self
    }

    /// The projection's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// This runner's owner id, as the claims record it.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// How many partitions the projection has.
    pub fn partitions(&self) -> u32 {
        // One lane per partition, and at most u32::MAX of them.
        u32::try_from(self.lanes.len()).unwrap_or(u32::MAX)
    }

    /// Each partition's progress, by partition: a partition this runner does
    /// not hold reads [`Standby`](RunnerState::Standby) while it runs.
    pub fn progress(&self) -> Vec<tokio::sync::watch::Receiver<RunnerProgress>> {
        self.lanes.iter().map(|lane| lane.progress()).collect()
    }

    /// Runs until `shutdown`: beats every third of the claim time to live,
    /// starts a lane for each partition it gains and stops the lanes of
    /// partitions it loses. On shutdown each lane finishes its batch and
    /// saves its checkpoint, then the claims are given back at once.
    pub async fn run(&self, shutdown: CancellationToken) -> Result<(), RunnerError> {
        // Partitions another runner holds are this one's standbys.
        for lane in &self.lanes {
            lane.mark(RunnerState::Standby);
        }
        let reading = CancellationToken::new();
        let reader = tokio::spawn({
            let (feed, stop) = (Arc::clone(&self.feed), reading.clone());
            async move { feed.run(stop).await }
        });
        let mut lanes: HashMap<u32, Lane> = HashMap::new();
        let mut beaten = Instant::now();
        let outcome = loop {
            if let Some(error) = Self::fatal(&mut lanes).await {
                break Err(error);
            }
            match self
                .store
                .claim(&self.name, self.partitions(), &self.owner, self.claim_ttl)
                .await
            {
                Ok(claims) => {
                    beaten = Instant::now();
                    self.follow(&mut lanes, claims);
                }
                Err(error) => {
                    tracing::warn!(projection = %self.name, %error, "heartbeat failed");
                    if beaten.elapsed() >= self.claim_ttl {
                        // The claims may be someone else's by now: the lanes
                        // would be fenced anyway.
                        self.follow(&mut lanes, Vec::new());
                    }
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => break Ok(()),
                () = tokio::time::sleep(self.claim_ttl / 3) => {}
            }
        };
        for lane in lanes.values() {
            lane.stop.cancel();
        }
        for (_, lane) in lanes.drain() {
            let _ = lane.task.await;
        }
        reading.cancel();
        let _ = reader.await;
        if let Err(error) = self.store.release_claims(&self.name, &self.owner).await {
            tracing::warn!(projection = %self.name, %error, "claims not released; they expire");
        }
        for lane in &self.lanes {
            lane.mark(RunnerState::Stopped);
        }
        outcome
    }

    /// Starts the lanes of new claims (or of a claim taken anew, with a new
    /// generation) and stops those of partitions no longer held.
    fn follow(&self, lanes: &mut HashMap<u32, Lane>, claims: Vec<Claim>) {
        let held: HashMap<u32, Claim> = claims.into_iter().map(|c| (c.partition, c)).collect();
        lanes.retain(|partition, lane| {
            let keep = held
                .get(partition)
                .is_some_and(|claim| claim.generation == lane.generation)
                && !lane.task.is_finished();
            if !keep {
                tracing::info!(projection = %self.name, partition, "partition no longer held");
                lane.stop.cancel();
            }
            keep
        });
        for (partition, claim) in held {
            if lanes.contains_key(&partition) {
                continue;
            }
            let Some(runner) = self.lanes.get(partition as usize) else {
                continue;
            };
            let runner = Arc::clone(runner);
            let stop = CancellationToken::new();
            let generation = claim.generation;
            tracing::info!(projection = %self.name, partition, generation, "partition claimed");
            let task = tokio::spawn({
                let stop = stop.clone();
                async move { runner.run_claimed(claim, stop).await }
            });
            lanes.insert(
                partition,
                Lane {
                    generation,
                    stop,
                    task,
                },
            );
        }
    }

    /// The error of a lane that ended on its own, other than a fence (the
    /// partition went to another runner: not an error).
    async fn fatal(lanes: &mut HashMap<u32, Lane>) -> Option<RunnerError> {
        let ended: Vec<u32> = lanes
            .iter()
            .filter(|(_, lane)| lane.task.is_finished())
            .map(|(&partition, _)| partition)
            .collect();
        for partition in ended {
            let lane = lanes.remove(&partition)?;
            match lane.task.await {
                Ok(Ok(())) => {}
                Ok(Err(RunnerError::Store(error @ StoreError::Fenced { .. }))) => {
                    tracing::warn!(%error, "fenced: the partition went to another runner");
                }
                Ok(Err(error)) => return Some(error),
                Err(join) => {
                    return Some(RunnerError::Fatal {
                        projection: format!("partition {partition}"),
                        source: Box::new(join),
                    });
                }
            }
        }
        None
    }
}
