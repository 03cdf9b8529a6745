//! A store wrapper that injects faults: operations that fail, reads that
//! come back rewritten, calls that are counted.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::watch;
use uuid::Uuid;

use crate::envelope::{NewEvent, RecordedEvent};
use crate::position::Position;
use crate::projection::{Claim, DeadLetter, Deadline, Lease, PartitionOwner, ProjectionStore};
use crate::query::Query;
use crate::store::{
    AppendCondition, AppendOptions, Appended, EventFilter, EventStore, EventStream,
    ExpectedVersion, Snapshot, StoreError,
};
use crate::subscription::{SubscriptionOptions, catch_up_then_live};

/// A store operation, to fail or count ([`Faulty`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(missing_docs)] // each is the store method of the same name
pub enum Operation {
    Append,
    CommandOutcome,
    ReadStream,
    StreamVersion,
    ReadAll,
    Head,
    SaveSnapshot,
    LoadSnapshot,
    SaveCheckpoint,
    LoadCheckpoint,
    ReadQuery,
    AppendIf,
    AddDeadLetters,
    DeadLetters,
    RemoveDeadLetters,
    RetryDeadLetters,
    TryLease,
    Claim,
    ReleaseClaims,
    PartitionOwners,
    Drain,
    SaveClaimedCheckpoint,
    AddClaimedDeadLetters,
    ScheduleDeadline,
    Deadlines,
    NextDeadline,
    ClaimDeadlines,
    CompleteDeadline,
    FailDeadline,
    CancelDeadlines,
}

type ReadRewrite = dyn Fn(Vec<RecordedEvent>, usize) -> Vec<RecordedEvent> + Send + Sync;
type AppendRewrite = dyn Fn(ExpectedVersion) -> ExpectedVersion + Send + Sync;
type ConditionRewrite = dyn Fn(AppendCondition) -> AppendCondition + Send + Sync;
type Hook = Box<dyn FnOnce() -> futures::future::BoxFuture<'static, ()> + Send>;

/// Wraps a store and passes every call through, except for the faults it
/// is told to inject; counts every call. Clones share their faults.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use annals::{EventStore, EventFilter, Position};
/// use annals::memory::MemoryStore;
/// use annals::testing::{Faulty, Operation};
///
/// let store = Faulty::new(MemoryStore::new());
/// store.fail(Operation::ReadAll, 1); // the next read_all fails as unavailable
/// assert!(store.read_all(Position::START, 10, &EventFilter::all()).await.is_err());
/// assert!(store.read_all(Position::START, 10, &EventFilter::all()).await.is_ok());
/// assert_eq!(store.calls(Operation::ReadAll), 2);
/// # });
/// ```
#[derive(Clone)]
pub struct Faulty<S> {
    inner: S,
    faults: Arc<Mutex<Faults>>,
    poll_interval: Duration,
    /// Never fires: subscriptions poll, through this wrapper's `read_all`.
    wake: watch::Receiver<u64>,
    _wake: Arc<watch::Sender<u64>>,
}

#[derive(Default)]
struct Faults {
    /// Calls to skip before failing, and how many to fail then.
    failing: HashMap<Operation, (u64, u64)>,
    calls: HashMap<Operation, u64>,
    read_all: Option<Arc<ReadRewrite>>,
    append: Option<Arc<AppendRewrite>>,
    append_if: Option<Arc<ConditionRewrite>>,
    before_append_if: Option<Hook>,
}

impl<S> Faulty<S> {
    /// `inner` with no faults; subscriptions poll every 5 ms.
    pub fn new(inner: S) -> Self {
        let (tx, rx) = watch::channel(0);
        Self {
            inner,
            faults: Arc::default(),
            poll_interval: Duration::from_millis(5),
            wake: rx,
            _wake: Arc::new(tx),
        }
    }

    /// The store inside.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// The next `times` calls of `operation` fail as unavailable (a
    /// transient [`StoreError::Unavailable`]).
    pub fn fail(&self, operation: Operation, times: u64) {
        self.fail_after(operation, 0, times);
    }

    /// After `skip` more calls of `operation` succeed, the `times` after
    /// them fail as unavailable.
    pub fn fail_after(&self, operation: Operation, skip: u64, times: u64) {
        self.faults().failing.insert(operation, (skip, times));
    }

    /// Failures still to come, over every operation.
    pub fn pending_failures(&self) -> u64 {
        self.faults().failing.values().map(|(_, times)| times).sum()
    }

    /// Rewrites what every `read_all` returns; the function gets the page
    /// and the limit asked for.
    pub fn rewrite_read_all(
        &self,
        rewrite: impl Fn(Vec<RecordedEvent>, usize) -> Vec<RecordedEvent> + Send + Sync + 'static,
    ) {
        self.faults().read_all = Some(Arc::new(rewrite));
    }

    /// Rewrites the expected version of every append (a store that ignores
    /// it, say).
    pub fn rewrite_append(
        &self,
        rewrite: impl Fn(ExpectedVersion) -> ExpectedVersion + Send + Sync + 'static,
    ) {
        self.faults().append = Some(Arc::new(rewrite));
    }

    /// Rewrites the condition of every conditional append (a store that
    /// ignores it, or checks it from the wrong position, say).
    pub fn rewrite_append_if(
        &self,
        rewrite: impl Fn(AppendCondition) -> AppendCondition + Send + Sync + 'static,
    ) {
        self.faults().append_if = Some(Arc::new(rewrite));
    }

    /// Runs `hook`, once, just before the next conditional append reaches
    /// the store inside: a writer slipping in between a decision's read and
    /// its append, say.
    pub fn before_next_append_if<F, Fut>(&self, hook: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        self.faults().before_append_if = Some(Box::new(move || Box::pin(hook())));
    }

    /// How many times `operation` was called, failed calls included.
    pub fn calls(&self, operation: Operation) -> u64 {
        self.faults().calls.get(&operation).copied().unwrap_or(0)
    }

    /// Forgets the call counts.
    pub fn reset_calls(&self) {
        self.faults().calls.clear();
    }

    fn faults(&self) -> std::sync::MutexGuard<'_, Faults> {
        self.faults.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts a call and fails it if a fault says so.
    fn enter(&self, operation: Operation) -> Result<(), StoreError> {
        let mut faults = self.faults();
        *faults.calls.entry(operation).or_default() += 1;
        let Some((skip, times)) = faults.failing.get_mut(&operation) else {
            return Ok(());
        };
        if *skip > 0 {
            *skip -= 1;
            return Ok(());
        }
        if *times == 0 {
            return Ok(());
        }
        *times -= 1;
        Err(StoreError::Unavailable(
            format!("injected fault: {operation:?} unavailable").into(),
        ))
    }
}

#[async_trait]
impl<S: EventStore + Clone> EventStore for Faulty<S> {
    async fn append_with(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        options: AppendOptions,
    ) -> Result<Appended, StoreError> {
        self.enter(Operation::Append)?;
        let rewrite = self.faults().append.clone();
        let expected = rewrite.map_or(expected, |rewrite| rewrite(expected));
        self.inner
            .append_with(stream, expected, events, options)
            .await
    }

    async fn command_outcome(&self, command_id: Uuid) -> Result<Option<Appended>, StoreError> {
        self.enter(Operation::CommandOutcome)?;
        self.inner.command_outcome(command_id).await
    }

    async fn read_stream(
        &self,
        stream: &str,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.enter(Operation::ReadStream)?;
        self.inner.read_stream(stream, from_version, limit).await
    }

    async fn stream_version(&self, stream: &str) -> Result<u64, StoreError> {
        self.enter(Operation::StreamVersion)?;
        self.inner.stream_version(stream).await
    }

    async fn read_all(
        &self,
        after: Position,
        limit: usize,
        filter: &EventFilter,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.enter(Operation::ReadAll)?;
        let events = self.inner.read_all(after, limit, filter).await?;
        let rewrite = self.faults().read_all.clone();
        Ok(match rewrite {
            Some(rewrite) => rewrite(events, limit),
            None => events,
        })
    }

    async fn head(&self) -> Result<Position, StoreError> {
        self.enter(Operation::Head)?;
        self.inner.head().await
    }

    fn subscribe(&self, after: Position, filter: EventFilter) -> EventStream {
        let options = SubscriptionOptions {
            page_size: 512,
            poll_interval: self.poll_interval,
        };
        catch_up_then_live(self.clone(), after, filter, self.wake.clone(), options)
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        self.enter(Operation::SaveSnapshot)?;
        self.inner.save_snapshot(snapshot).await
    }

    async fn load_snapshot(&self, stream: &str) -> Result<Option<Snapshot>, StoreError> {
        self.enter(Operation::LoadSnapshot)?;
        self.inner.load_snapshot(stream).await
    }

    async fn save_checkpoint(&self, name: &str, position: Position) -> Result<(), StoreError> {
        self.enter(Operation::SaveCheckpoint)?;
        self.inner.save_checkpoint(name, position).await
    }

    async fn load_checkpoint(&self, name: &str) -> Result<Option<Position>, StoreError> {
        self.enter(Operation::LoadCheckpoint)?;
        self.inner.load_checkpoint(name).await
    }

    async fn read_query(
        &self,
        query: &Query,
        after: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.enter(Operation::ReadQuery)?;
        self.inner.read_query(query, after, limit).await
    }

    async fn append_if(
        &self,
        stream: &str,
        events: Vec<NewEvent>,
        condition: AppendCondition,
        options: AppendOptions,
    ) -> Result<Appended, StoreError> {
        self.enter(Operation::AppendIf)?;
        let hook = self.faults().before_append_if.take();
        if let Some(hook) = hook {
            hook().await;
        }
        let rewrite = self.faults().append_if.clone();
        let condition = match rewrite {
            Some(rewrite) => rewrite(condition),
            None => condition,
        };
        self.inner
            .append_if(stream, events, condition, options)
            .await
    }
}

#[async_trait]
impl<S: ProjectionStore + Clone> ProjectionStore for Faulty<S> {
    async fn add_dead_letters(
        &self,
        projection: &str,
        events: Vec<DeadLetter>,
    ) -> Result<(), StoreError> {
        self.enter(Operation::AddDeadLetters)?;
        self.inner.add_dead_letters(projection, events).await
    }

    async fn dead_letters(&self, projection: &str) -> Result<Vec<DeadLetter>, StoreError> {
        self.enter(Operation::DeadLetters)?;
        self.inner.dead_letters(projection).await
    }

    async fn remove_dead_letters(
        &self,
        projection: &str,
        event_ids: &[Uuid],
    ) -> Result<(), StoreError> {
        self.enter(Operation::RemoveDeadLetters)?;
        self.inner.remove_dead_letters(projection, event_ids).await
    }

    async fn retry_dead_letters(&self, projection: &str) -> Result<u64, StoreError> {
        self.enter(Operation::RetryDeadLetters)?;
        self.inner.retry_dead_letters(projection).await
    }

    async fn try_lease(&self, projection: &str) -> Result<Option<Box<dyn Lease>>, StoreError> {
        self.enter(Operation::TryLease)?;
        self.inner.try_lease(projection).await
    }

    async fn claim(
        &self,
        projection: &str,
        partitions: u32,
        owner: &str,
        ttl: Duration,
    ) -> Result<Vec<Claim>, StoreError> {
        self.enter(Operation::Claim)?;
        self.inner.claim(projection, partitions, owner, ttl).await
    }

    async fn release_claims(&self, projection: &str, owner: &str) -> Result<(), StoreError> {
        self.enter(Operation::ReleaseClaims)?;
        self.inner.release_claims(projection, owner).await
    }

    async fn drain(
        &self,
        projection: &str,
        owner: &str,
        draining: bool,
    ) -> Result<bool, StoreError> {
        self.enter(Operation::Drain)?;
        self.inner.drain(projection, owner, draining).await
    }

    async fn partition_owners(&self, projection: &str) -> Result<Vec<PartitionOwner>, StoreError> {
        self.enter(Operation::PartitionOwners)?;
        self.inner.partition_owners(projection).await
    }

    async fn add_claimed_dead_letters(
        &self,
        claim: &Claim,
        events: Vec<DeadLetter>,
    ) -> Result<(), StoreError> {
        self.enter(Operation::AddClaimedDeadLetters)?;
        self.inner.add_claimed_dead_letters(claim, events).await
    }

    async fn save_claimed_checkpoint(
        &self,
        claim: &Claim,
        position: Position,
    ) -> Result<(), StoreError> {
        self.enter(Operation::SaveClaimedCheckpoint)?;
        self.inner.save_claimed_checkpoint(claim, position).await
    }

    async fn schedule_deadline(&self, deadline: Deadline) -> Result<(), StoreError> {
        self.enter(Operation::ScheduleDeadline)?;
        self.inner.schedule_deadline(deadline).await
    }

    async fn deadlines(&self, process: &str, limit: usize) -> Result<Vec<Deadline>, StoreError> {
        self.enter(Operation::Deadlines)?;
        self.inner.deadlines(process, limit).await
    }

    async fn next_deadline(&self, process: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.enter(Operation::NextDeadline)?;
        self.inner.next_deadline(process).await
    }

    async fn claim_deadlines(
        &self,
        process: &str,
        due_by: DateTime<Utc>,
        limit: usize,
        hold: Duration,
    ) -> Result<Vec<Deadline>, StoreError> {
        self.enter(Operation::ClaimDeadlines)?;
        self.inner
            .claim_deadlines(process, due_by, limit, hold)
            .await
    }

    async fn complete_deadline(&self, process: &str, id: Uuid) -> Result<(), StoreError> {
        self.enter(Operation::CompleteDeadline)?;
        self.inner.complete_deadline(process, id).await
    }

    async fn fail_deadline(
        &self,
        process: &str,
        id: Uuid,
        error: &str,
        retry_at: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError> {
        self.enter(Operation::FailDeadline)?;
        self.inner.fail_deadline(process, id, error, retry_at).await
    }

    async fn cancel_deadlines(
        &self,
        process: &str,
        instance: Uuid,
        name: &str,
    ) -> Result<(), StoreError> {
        self.enter(Operation::CancelDeadlines)?;
        self.inner.cancel_deadlines(process, instance, name).await
    }
}
