//! Group commit of conditional appends: concurrent
//! [`append_if`](annals::EventStore::append_if) calls share one transaction.
//!
//! Alone, each conditional append ([`super::conditional`]) would pay a
//! transaction, its locks or its wait, and a WAL flush (which, for
//! transactions that notify, PostgreSQL does one at a time). The queue here
//! ([`super::queue`], as under [`super::group`]) collects the conditional
//! appends that arrive while earlier ones are being written and runs them
//! as one call: one transaction, one statement that checks every condition
//! against the log and writes the appends whose conditions hold, one commit.
//! Two writers: one group's statement runs while the other's commits.
//!
//! The appends of a group are in the log in group order (they share the
//! call's label, and are inserted in that order), so an append's
//! condition must also hold against the events of the appends before it in
//! the group. That is decided in Rust, with [`Query::matches`](annals::Query::matches)
//! on the earlier appends' types and tags: an append whose condition matches
//! an earlier append's events is **held** (checked against the log but not
//! written); once the statement has answered, it fails with
//! [`StoreError::ConditionFailed`] at the position of the first such event
//! when that earlier append was written, and joins a later group when it was
//! not (it was repeated, or failed, itself). The others are written.
//!
//! Several appends of a group may go to one stream (a stream that many
//! decisions write to would otherwise take one transaction per append); they
//! follow each other in it in group order. A group never holds two appends
//! with the same command id or a shared event id (they would fail the
//! statement as a whole): such an append waits for a later group. Whatever
//! fails a group's transaction as a whole (a racing duplicate id, a deadlock
//! with a caller's transaction, a lost connection) sends each of its appends
//! back to run on its own; an append whose stream moved
//! ([`super::conditional`]: `moved`) joins a later group. An append's time
//! ([`PgStoreOptions::append_if_timeout`](crate::PgStoreOptions::append_if_timeout))
//! runs from when it was asked for, across groups; a group waits no longer
//! than its earliest append may.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use annals::{Appended, StoreError};
use tokio::sync::{Notify, oneshot};

use super::conditional::{Env, Failure, Member, Settled, transaction};
use super::queue::{GroupQueue, Waiting};
use crate::connections::Connections;

/// Writer tasks: two, so that one group's commit overlaps the next group's
/// statement. Groups whose conditions lock their tags run side by side
/// (waiting only where they share a tag or a stream); a group that waits for
/// older transactions waits for the other writer's too.
const WRITERS: usize = 2;
/// Most appends in one group.
const MAX_APPENDS: usize = 64;
/// Most events in one group (a larger append makes a group of its own).
const MAX_EVENTS: usize = 2_000;

/// One conditional append waiting for its group.
struct Request {
    member: Member,
    /// When the append was asked for: its time runs out `timeout` later.
    started: Instant,
    reply: oneshot::Sender<Grouped>,
}

/// What a group did with one conditional append.
pub(crate) enum Grouped {
    /// Its answer.
    Done(Result<Appended, StoreError>),
    /// Not settled, to run in a later group: its stream had moved, or it
    /// was held behind an append that was not written after all.
    Again(Member),
    /// Not settled: the group's transaction failed as a whole; run it on
    /// its own.
    Alone(Member),
}

/// The conditional group commit of one store: a queue and its writer
/// task, started on first use (on the caller's runtime) and again when
/// their runtime has gone away.
#[derive(Debug)]
pub(crate) struct ConditionalGroup {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    conns: Arc<Connections>,
    /// Notified in each group's transaction ('' for none).
    channel: String,
    /// Signalled when an append of the store ends.
    ended: Arc<Notify>,
    timeout: Duration,
    queue: GroupQueue<Request>,
}

impl ConditionalGroup {
    /// Group commit of conditional appends on `conns`, notifying `channel`
    /// in each group's transaction ('' for none), polling again when `ended`
    /// is signalled, giving up waiting after `timeout`.
    pub(crate) fn new(
        conns: Arc<Connections>,
        channel: String,
        ended: Arc<Notify>,
        timeout: Duration,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                conns,
                channel,
                ended,
                timeout,
                queue: GroupQueue::new(),
            }),
        }
    }

    /// Runs a conditional append through a group; it was asked for at
    /// `started`.
    pub(crate) async fn append(
        &self,
        member: Member,
        started: Instant,
    ) -> Result<Grouped, StoreError> {
        let (reply, answer) = oneshot::channel();
        if let Some(request) = self.submit(Request {
            member,
            started,
            reply,
        }) {
            return Ok(Grouped::Alone(request.member));
        }
        answer.await.map_err(|_| {
            // The writer went away with its runtime mid-write.
            StoreError::Unavailable(
                "the conditional append's group was dropped before it finished (its runtime \
                 shut down); whether it was written is unknown: retry with the same event ids"
                    .into(),
            )
        })
    }

    /// Queues a request. Gives it back only when no writer can be started
    /// (no Tokio runtime).
    #[must_use]
    fn submit(&self, request: Request) -> Option<Request> {
        self.shared.queue.submit(request, WRITERS, |runtime| {
            runtime.spawn(run_writer(self.shared.clone()));
        })
    }
}

impl Drop for ConditionalGroup {
    fn drop(&mut self) {
        self.shared.queue.close();
    }
}

/// Counts a writer out when its task ends, also when its runtime drops it.
struct WriterGuard(Arc<Shared>);

impl Drop for WriterGuard {
    fn drop(&mut self) {
        drop(self.0.queue.writer_ended());
    }
}

/// A writer: takes what has queued up, runs it as one transaction, answers,
/// again.
async fn run_writer(shared: Arc<Shared>) {
    let _guard = WriterGuard(shared.clone());
    loop {
        let Some(group) = shared.queue.next_group(take_group).await else {
            return;
        };
        // The group waits no longer than its most patient append may.
        let started = group.iter().map(|r| r.started).min();
        let (members, replies): (Vec<Member>, Vec<_>) =
            group.into_iter().map(|r| (r.member, r.reply)).unzip();
        let answers = write(&shared, members, started.unwrap_or_else(Instant::now)).await;
        for (reply, answer) in replies.into_iter().zip(answers) {
            // A caller that gave up (cancelled) no longer listens.
            let _ = reply.send(answer);
        }
        // Let the callers just answered queue their next appends.
        tokio::task::yield_now().await;
    }
}

/// The next group: waiting requests in arrival order, up to the limits, none
/// sharing a command id or an event id with another. The others keep their
/// places.
fn take_group(queue: &mut Waiting<Request, ()>) -> Vec<Request> {
    let mut group: Vec<Request> = Vec::new();
    let mut events = 0;
    let mut commands = HashSet::new();
    let mut ids = HashSet::new();
    let mut kept = VecDeque::new();
    while let Some(next) = queue.requests.pop_front() {
        let member = &next.member;
        let fits = group.is_empty() || events + member.len() <= MAX_EVENTS;
        let apart = member.command_id.is_none_or(|c| !commands.contains(&c))
            && member.batch.ids.iter().all(|id| !ids.contains(id));
        if group.len() == MAX_APPENDS || !fits || !apart {
            kept.push_back(next);
            continue;
        }
        commands.extend(member.command_id);
        ids.extend(member.batch.ids.iter().copied());
        events += member.len();
        group.push(next);
    }
    queue.requests = kept;
    group
}

/// Which appends of a group to hold: those whose condition matches the
/// events of an earlier append that is not held itself.
fn holds(members: &[Member]) -> Vec<bool> {
    let mut hold: Vec<bool> = Vec::with_capacity(members.len());
    for (j, member) in members.iter().enumerate() {
        let depends = (0..j).any(|i| {
            !hold[i]
                && (0..members[i].len()).any(|place| members[i].matches(place, &member.condition))
        });
        hold.push(depends);
    }
    hold
}

/// Runs a group: each append's answer, in group order. Gives up waiting
/// once the timeout has passed since `started`.
async fn write(shared: &Shared, members: Vec<Member>, started: Instant) -> Vec<Grouped> {
    let hold = holds(&members);
    let env = Env {
        conns: &shared.conns,
        channel: &shared.channel,
        ended: &shared.ended,
        timeout: shared.timeout,
    };
    let settled = match transaction(&env, &members, &hold, started).await {
        Ok(settled) => settled,
        Err(Failure::TimedOut(timeout)) => {
            return members
                .iter()
                .map(|_| Grouped::Done(Err(StoreError::Unavailable(Box::new(timeout.clone())))))
                .collect();
        }
        Err(Failure::Sql(error)) => {
            tracing::debug!(%error, appends = members.len(), "conditional group failed; appends run alone");
            return members.into_iter().map(Grouped::Alone).collect();
        }
    };
    // The held appends fail at the first event, of the appends written
    // before them, that their condition is about.
    let failed_at: Vec<Option<annals::Position>> = (0..members.len())
        .map(|j| {
            if !matches!(settled[j], Settled::Held) {
                return None;
            }
            let condition = &members[j].condition;
            (0..j).find_map(|i| match &settled[i] {
                Settled::Written { positions, .. } => {
                    positions.iter().enumerate().find_map(|(place, &at)| {
                        let after = condition.after.is_none_or(|after| at > after);
                        (after && members[i].matches(place, condition)).then_some(at)
                    })
                }
                _ => None,
            })
        })
        .collect();
    members
        .into_iter()
        .zip(settled)
        .zip(failed_at)
        .map(|((member, settled), failed_at)| match settled {
            Settled::Written { appended, .. } => Grouped::Done(Ok(appended)),
            Settled::Answered(answer) => Grouped::Done(answer),
            Settled::Held => match failed_at {
                Some(position) => Grouped::Done(Err(StoreError::ConditionFailed { position })),
                None => Grouped::Again(member),
            },
            Settled::Again => Grouped::Again(member),
        })
        .collect()
}
