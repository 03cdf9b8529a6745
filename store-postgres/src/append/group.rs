//! Group commit: concurrent appends share one statement and one commit.
//!
//! Every commit waits for its WAL flush. PostgreSQL lets concurrent commits
//! share a flush, but not when they notify: a notifying transaction holds a
//! database-wide lock from before its commit record until after the flush
//! (see [`NotifyMode`](crate::NotifyMode)), so appends that notify in their
//! transaction, as the design asks, would each pay a flush of their own.
//! The store therefore collects the appends that arrive while an earlier
//! group is being written and writes them together: one statement
//! (`sql/append_group.sql`), one transaction, one flush, one notification,
//! as EventStoreDB's writer does. An idle store writes a lone append at
//! once, with the single-append statement ([`super::statement`], the one
//! module this queue builds on; the entry point, [`super`], decides which
//! appends come here).
//!
//! Each append in a group is still checked on its own: a failed expectation
//! or a recorded command id writes nothing for that append, and its caller
//! learns why from `annals_append`, as without grouping. Appends to one
//! stream never share a group (the statement moves each stream row once), so
//! a stream's appends queue behind each other. Whatever makes a group's
//! statement fail as a whole (a unique violation from a racing duplicate, a
//! deadlock with a caller's own transaction, a lost connection) sends each of
//! its appends back to run alone, so one caller's trouble never becomes
//! another's error.
//!
//! A few writer tasks take groups from one queue, each with one statement in
//! flight: while one group commits, the next one's statement runs. Groups in
//! flight never share a stream, so writers never wait for each other's row
//! locks.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use annals::{Appended, StoreError};
use sqlx::Row;
use sqlx::types::Json;
use tokio::sync::{Notify, oneshot};
use uuid::Uuid;

use super::queue::{GroupQueue, Waiting};
use super::statement::{Batch, appended_from, try_append_fast};
use crate::connections::Connections;

const APPEND_GROUP: &str = include_str!("../sql/append_group.sql");

/// Writer tasks, each with one statement in flight.
const WRITERS: usize = 2;
/// Most appends in one group.
const MAX_APPENDS: usize = 64;
/// Most events in one group.
const MAX_EVENTS: usize = 2_000;
/// Without in-transaction notifications, appends of more events than this
/// skip the group and commit on their own: their events already share a
/// commit, PostgreSQL lets their commits share flushes, and several large
/// statements run better side by side on several connections than one
/// after another. With in-transaction notifications every append is grouped:
/// notifying commits cannot share a flush.
const MAX_GROUPED_APPEND: usize = 16;

/// One append waiting for its group.
struct Request {
    stream: String,
    expected: i64,
    command_id: Option<Uuid>,
    batch: Batch,
    reply: oneshot::Sender<Reply>,
}

/// What a group did with one append; the batch comes back with it.
struct Reply {
    batch: Batch,
    outcome: Outcome,
}

/// The outcome of one append in a group.
pub(crate) enum Outcome {
    /// Written.
    Appended(Appended),
    /// Nothing written for this append: its expectation failed or its
    /// command id is recorded (`annals_append` says which).
    NotWritten,
    /// The group's statement failed as a whole (nothing of it written, or
    /// its fate unknown after a lost connection): run the append alone.
    Alone,
    /// The append was alone and failed with this error.
    Failed(sqlx::Error),
}

/// The group commit of one store: a queue of appends and a few writer tasks,
/// started on first use (on the caller's runtime) and again when their
/// runtime has gone away.
#[derive(Debug)]
pub(crate) struct GroupCommit {
    shared: Arc<Shared>,
    /// Largest append (in events) that joins groups.
    max_append: usize,
}

#[derive(Debug)]
struct Shared {
    conns: Arc<Connections>,
    /// Notified in each group's transaction ('' for none).
    channel: String,
    /// Appends waiting, and beside them the streams of the groups being
    /// written: their next appends wait, so that groups in flight never
    /// touch one stream row (no lock waits, no deadlocks between writers).
    queue: GroupQueue<Request, InFlight>,
    /// Signalled after each group: conditional appends waiting for older
    /// transactions to end look again ([`super::conditional`]).
    ended: Arc<Notify>,
}

/// Streams of the groups being written.
type InFlight = HashSet<String>;

impl GroupCommit {
    /// Group commit writing on `conns`, notifying `channel` in each group's
    /// transaction ('' for none), signalling `ended` after each group.
    pub(crate) fn new(conns: Arc<Connections>, channel: String, ended: Arc<Notify>) -> Self {
        let max_append = if channel.is_empty() {
            MAX_GROUPED_APPEND
        } else {
            MAX_EVENTS
        };
        Self {
            max_append,
            shared: Arc::new(Shared {
                conns,
                channel,
                queue: GroupQueue::new(),
                ended,
            }),
        }
    }

    /// Whether an append of `events` events joins groups.
    pub(crate) fn takes(&self, events: usize) -> bool {
        events <= self.max_append
    }

    /// Appends through a group: the first attempt of a pooled append. Gives
    /// the batch back with the outcome.
    pub(crate) async fn append(
        &self,
        stream: &str,
        expected: i64,
        command_id: Option<Uuid>,
        batch: Batch,
    ) -> Result<(Batch, Outcome), StoreError> {
        let (reply, answer) = oneshot::channel();
        let request = Request {
            stream: stream.to_owned(),
            expected,
            command_id,
            batch,
            reply,
        };
        if let Some(request) = self.submit(request) {
            return Ok((request.batch, Outcome::Alone));
        }
        match answer.await {
            Ok(reply) => Ok((reply.batch, reply.outcome)),
            // The lane went away with its runtime mid-write: the batch went
            // with it, and whether it was written is unknown.
            Err(_) => Err(StoreError::Unavailable(
                "the append's group was dropped before it finished (its runtime shut down); \
                 whether it was written is unknown: retry with the same event ids"
                    .into(),
            )),
        }
    }

    /// Queues an append. Gives the request back only when no writer can be
    /// started (no Tokio runtime).
    #[must_use]
    fn submit(&self, request: Request) -> Option<Request> {
        self.shared.queue.submit(request, WRITERS, |runtime| {
            runtime.spawn(run_writer(self.shared.clone()));
        })
    }
}

impl Drop for GroupCommit {
    fn drop(&mut self) {
        self.shared.queue.close();
    }
}

/// Counts a writer out when its task ends, also when its runtime drops it
/// mid-write: then its group's streams are released (its callers learn that
/// the outcome is unknown from their dropped reply channels).
struct WriterGuard {
    shared: Arc<Shared>,
    streams: Vec<String>,
}

impl Drop for WriterGuard {
    fn drop(&mut self) {
        let mut queue = self.shared.queue.writer_ended();
        for stream in self.streams.drain(..) {
            queue.extra.remove(&stream);
        }
    }
}

/// A writer: takes what has queued up, writes it as one group, answers, again.
async fn run_writer(shared: Arc<Shared>) {
    let mut guard = WriterGuard {
        shared: shared.clone(),
        streams: Vec::new(),
    };
    loop {
        let Some(group) = shared.queue.next_group(take_group).await else {
            return;
        };
        guard.streams = group.iter().map(|r| r.stream.clone()).collect();
        let answers = write(&shared, &group).await;
        shared.ended.notify_waiters();
        {
            let mut queue = shared.queue.lock();
            for stream in guard.streams.drain(..) {
                queue.extra.remove(&stream);
            }
        }
        for (request, outcome) in group.into_iter().zip(answers) {
            // A caller that gave up (cancelled) no longer listens.
            let _ = request.reply.send(Reply {
                batch: request.batch,
                outcome,
            });
        }
        // Let the callers just answered queue their next appends, so that
        // they make the next group instead of trickling in one by one.
        tokio::task::yield_now().await;
    }
}

/// The next group: waiting appends in arrival order, up to the limits, at
/// most one per stream and none of a stream in flight. The others keep
/// their places.
fn take_group(queue: &mut Waiting<Request, InFlight>) -> Vec<Request> {
    let mut group: Vec<Request> = Vec::new();
    let mut events = 0;
    let mut kept = VecDeque::new();
    while let Some(next) = queue.requests.pop_front() {
        let fits = group.is_empty() || events + next.batch.len() <= MAX_EVENTS;
        if group.len() == MAX_APPENDS || !fits || queue.extra.contains(&next.stream) {
            kept.push_back(next);
            continue;
        }
        queue.extra.insert(next.stream.clone());
        events += next.batch.len();
        group.push(next);
    }
    queue.requests = kept;
    group
}

/// Writes a group: each append's outcome, in group order.
async fn write(shared: &Shared, group: &[Request]) -> Vec<Outcome> {
    if let [request] = group {
        return vec![write_alone(shared, request).await];
    }
    match write_group(shared, group).await {
        Ok(written) => written
            .into_iter()
            .map(|done| done.map_or(Outcome::NotWritten, Outcome::Appended))
            .collect(),
        Err(error) => {
            tracing::debug!(%error, appends = group.len(), "group append failed; appends run alone");
            group.iter().map(|_| Outcome::Alone).collect()
        }
    }
}

/// A lone append, with the single-append statement.
async fn write_alone(shared: &Shared, request: &Request) -> Outcome {
    let result = async {
        let mut conn = shared.conns.get().await?;
        let done = try_append_fast(
            &mut conn,
            &shared.channel,
            &request.stream,
            request.expected,
            request.command_id,
            &request.batch,
        )
        .await?;
        conn.release();
        Ok::<_, sqlx::Error>(done)
    }
    .await;
    match result {
        Ok(Some(done)) => Outcome::Appended(done),
        Ok(None) => Outcome::NotWritten,
        Err(error) => Outcome::Failed(error),
    }
}

/// Runs the group statement: for each append, in group order, what was
/// written (`None`: nothing).
async fn write_group(
    shared: &Shared,
    group: &[Request],
) -> Result<Vec<Option<Appended>>, sqlx::Error> {
    let events: usize = group.iter().map(|r| r.batch.len()).sum();
    let mut streams = Vec::with_capacity(group.len());
    let mut expected = Vec::with_capacity(group.len());
    let mut command_ids = Vec::with_capacity(group.len());
    let mut counts = Vec::with_capacity(group.len());
    let mut appends = Vec::with_capacity(events);
    let mut places = Vec::with_capacity(events);
    let mut ids = Vec::with_capacity(events);
    let mut types = Vec::with_capacity(events);
    let mut schema_versions = Vec::with_capacity(events);
    let mut payloads = Vec::with_capacity(events);
    let mut metadata = Vec::with_capacity(events);
    let mut tags = Vec::with_capacity(events);
    for (k, request) in (1i64..).zip(group) {
        let batch = &request.batch;
        streams.push(request.stream.as_str());
        expected.push(request.expected);
        command_ids.push(request.command_id);
        counts.push(i32::try_from(batch.len()).unwrap_or(i32::MAX));
        for (i, event) in (1i32..).zip(0..batch.len()) {
            appends.push(k);
            places.push(i);
            ids.push(batch.ids[event]);
            types.push(batch.types[event].as_str());
            schema_versions.push(batch.schema_versions[event]);
            payloads.push(Json(&batch.payloads[event].0));
            metadata.push(Json(&batch.metadata[event].0));
            tags.push(Json(&batch.tags[event].0));
        }
    }
    let mut conn = shared.conns.get().await?;
    let rows = sqlx::query(APPEND_GROUP)
        .bind(&streams)
        .bind(&expected)
        .bind(&command_ids)
        .bind(&counts)
        .bind(shared.channel.as_str())
        .bind(&appends)
        .bind(&places)
        .bind(&ids)
        .bind(&types)
        .bind(&schema_versions)
        .bind(&payloads)
        .bind(&metadata)
        .bind(&tags)
        .fetch_all(&mut *conn)
        .await?;
    conn.release();
    let mut written = Vec::new();
    written.resize_with(group.len(), || None);
    for row in rows {
        let k: i64 = row.try_get(0)?;
        let slot = usize::try_from(k - 1).ok().and_then(|k| written.get_mut(k));
        if let Some(slot) = slot {
            *slot = Some(appended_from(&row, 1)?);
        }
    }
    Ok(written)
}
