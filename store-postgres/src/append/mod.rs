//! Appends ([`EventStore::append_with`](annals::EventStore::append_with)):
//! one statement per batch in the common case.
//!
//! * [`statement`]: the statements of one append (the one-statement hot
//!   path and the `annals_append` function), the batch they bind and the
//!   decoding of their answers;
//! * [`group`]: the group commit, which writes concurrent appends as
//!   one statement and one commit, built on [`statement`] and [`queue`]
//!   (the requests waiting for a group and the writer tasks, which the
//!   conditional group commit shares);
//! * this module, the entry point: [`append_with`] sends an append through
//!   the group commit or alone, and runs it again after a lost race or
//!   connection;
//! * [`in_transaction`]: [`PgEventStore::append_in_transaction`], which
//!   calls `annals_append` inside the caller's transaction;
//! * [`conditional`]: conditional appends ([`EventStore::append_if`](annals::EventStore::append_if)),
//!   each a transaction that waits for older ones before it checks its
//!   condition, and [`conditional_group`], which runs concurrent ones as one
//!   transaction; [`append_if`] here sends them through the group or alone.

pub(crate) mod conditional;
pub(crate) mod conditional_group;
pub(crate) mod group;
mod in_transaction;
mod queue;
pub(crate) mod statement;

use std::time::Instant;

use annals::{AppendCondition, AppendOptions, Appended, ExpectedVersion, NewEvent, StoreError};

use self::conditional::{AppendIfTimeout, Env, Member, append_alone};
use self::conditional_group::Grouped;
use self::group::Outcome;
use self::statement::{Batch, call_append, expected_param, outcome, try_append_fast};
use crate::error::{LOST_CONNECTION_RETRIES, is_connection_lost, is_unique_violation, store_error};
use crate::handle::PgEventStore;
use crate::notify::NotifyMode;

/// How often a pooled append runs again after losing a race (a unique
/// violation) or its connection.
const MAX_ATTEMPTS: usize = 3;

/// Where a pooled append stands between attempts.
struct Attempts {
    /// Try the one-statement hot path (else `annals_append`).
    fast: bool,
    /// Look the event ids up first (after a lost race or connection).
    check_ids: bool,
    attempt: usize,
    reconnects: usize,
}

impl Attempts {
    /// After a failed attempt: whether to go again (and how), or the error.
    fn after(&mut self, error: sqlx::Error) -> Result<(), StoreError> {
        if self.attempt < MAX_ATTEMPTS && is_unique_violation(&error) {
            self.fast = false;
            self.check_ids = true;
            Ok(())
        } else if self.reconnects < LOST_CONNECTION_RETRIES && is_connection_lost(&error) {
            tracing::debug!(%error, "append lost its connection; trying again");
            self.reconnects += 1;
            self.fast = false;
            self.check_ids = true;
            Ok(())
        } else {
            Err(store_error(error))
        }
    }
}

/// The trait's append, in autocommit mode.
///
/// First through the group commit, when it takes the append (see
/// [`group`]); then, or instead, the one-statement hot path. When that
/// writes nothing (a conflict, a recorded command, an idempotent retry),
/// `annals_append` runs and says what happened (or appends, when the stream
/// moved meanwhile and the expectation is `Any`). After a lost race (a
/// unique violation) `annals_append` runs with the ids looked up first,
/// which turns the race into `duplicate` or `DuplicateEvent`; after a lost
/// connection it runs the same way on another connection (safe: appends are
/// idempotent by event id).
pub(crate) async fn append_with(
    store: &PgEventStore,
    stream: &str,
    expected: ExpectedVersion,
    events: Vec<NewEvent>,
    options: AppendOptions,
) -> Result<Appended, StoreError> {
    let inner = &store.inner;
    inner.limits.check(stream, &events)?;
    let expected_param = expected_param(expected)?;
    let mut batch = Batch::new(events)?;
    let mut attempts = Attempts {
        fast: true,
        check_ids: false,
        attempt: 0,
        reconnects: 0,
    };
    let group = inner.group.as_ref().filter(|g| g.takes(batch.len()));
    if let Some(group) = group {
        let (returned, grouped) = group
            .append(stream, expected_param, options.command_id, batch)
            .await?;
        batch = returned;
        match grouped {
            Outcome::Appended(done) => return Ok(announce(store, done)),
            Outcome::NotWritten => attempts.fast = false,
            Outcome::Alone => {}
            Outcome::Failed(error) => {
                attempts.attempt = 1;
                attempts.after(error)?;
            }
        }
    }
    // The channel pooled appends notify in their transaction.
    let channel = inner.notify.in_transaction(&inner.channel);
    loop {
        attempts.attempt += 1;
        let result = async {
            let mut conn = inner.conns.get().await?;
            if attempts.fast {
                let done = try_append_fast(
                    &mut conn,
                    channel,
                    stream,
                    expected_param,
                    options.command_id,
                    &batch,
                )
                .await?;
                if let Some(done) = done {
                    conn.release();
                    return Ok(Ok(done));
                }
            }
            let row = call_append(
                &mut conn,
                stream,
                expected_param,
                options.command_id,
                attempts.check_ids,
                channel,
                &batch,
            )
            .await?;
            conn.release();
            Ok::<_, sqlx::Error>(outcome(&row, stream, expected))
        }
        .await;
        match result {
            Ok(appended) => {
                // Conditional appends waiting for this transaction look again.
                inner.ended.notify_waiters();
                return Ok(announce(store, appended?));
            }
            Err(error) => attempts.after(error)?,
        }
    }
}

/// The trait's conditional append: through the conditional group commit
/// when it runs, else (or when the group sends it back) in transactions of
/// its own (see [`conditional`]).
pub(crate) async fn append_if(
    store: &PgEventStore,
    stream: &str,
    events: Vec<NewEvent>,
    condition: AppendCondition,
    options: AppendOptions,
) -> Result<Appended, StoreError> {
    let inner = &store.inner;
    inner.limits.check(stream, &events)?;
    let mut member = Member::new(stream, events, condition, options)?;
    let started = Instant::now();
    if let Some(group) = &inner.conditional {
        loop {
            match group.append(member, started).await? {
                Grouped::Done(answer) => return answer.map(|done| announce(store, done)),
                Grouped::Again(back) if started.elapsed() < inner.append_if_timeout => {
                    member = back;
                }
                Grouped::Again(back) => {
                    return Err(StoreError::Unavailable(Box::new(
                        AppendIfTimeout::StreamBusy {
                            stream: back.stream,
                            waited: started.elapsed(),
                        },
                    )));
                }
                Grouped::Alone(back) => {
                    member = back;
                    break;
                }
            }
        }
    }
    let env = Env {
        conns: &inner.conns,
        channel: inner.notify.in_transaction(&inner.channel),
        ended: &inner.ended,
        timeout: inner.append_if_timeout,
    };
    append_alone(&env, member, started)
        .await
        .map(|done| announce(store, done))
}

/// After an append: the after-commit notification, when that is the mode.
fn announce(store: &PgEventStore, appended: Appended) -> Appended {
    let inner = &store.inner;
    if inner.notify == NotifyMode::AfterCommit && !appended.repeated {
        inner.notifier.poke(&inner.pool, &inner.channel);
    }
    appended
}
