//! Conditional appends ([`EventStore::append_if`](annals::EventStore::append_if)):
//! append unless an event matching a query was recorded after a position,
//! atomically against every writer, without SERIALIZABLE.
//!
//! A position in the log is `(label, global_position)`, an event's label is
//! at least its transaction's id and its stream's last label, and readers
//! only read below `pg_snapshot_xmin`. Every append locks the rows of its
//! events' tags in `annals_tags` (in tag order, before its stream's row:
//! `annals_lock_tags`, `migrations/0007_tag_locks.sql`) and labels its
//! events at least as high as the label a conditional append left there.
//! The check and the write are one call of `annals_append_if` (`sql/append_if.sql`),
//! for one append or a group of them ([`super::conditional_group`]). It
//! works one of two ways.
//!
//! # Conditions on tags: lock them
//!
//! When every item of every condition names a tag (a rule about an entity:
//! a username, a flight number on a day, a seat), the call runs in
//! autocommit and
//!
//! 1. locks the rows of the tags its conditions check and of its events'
//!    tags, creating the missing ones;
//! 2. in a later statement, whose snapshot is taken after the locks were
//!    granted: idempotency first (a recorded command id, or the event ids
//!    stored in order in this stream, answers the first outcome,
//!    `repeated`), then the first event matching each condition after its
//!    position, and, when there is none, the append, labelled at least the
//!    transaction's id and every label on those rows and streams (a stream
//!    labelled higher meanwhile, by an append that created it concurrently,
//!    answers `moved`: the append runs again);
//! 3. leaves that label on the rows of the checked tags, and commits.
//!
//! **Why it holds.** An event matching an item carries the item's tags, so
//! its writer locked the row of one of them, `t`, as this call did. If it
//! locked `t` first, this call waited for it to end, and the check's
//! snapshot sees its event. If it locked `t` after this call committed, it
//! read this call's label from the row: its event is labelled at least as
//! high and drew a larger global position, so it follows this call's events
//! in the log, and the condition is not about it. Two conditional appends
//! whose conditions share a tag take turns on its row; the second sees the
//! first's events. Appends that share no tag (and no stream) never wait for
//! each other. The price: appends whose events carry one tag take turns on
//! its row, as appends to one stream do, and a transaction that appended an
//! event with a tag (an append inside the caller's transaction) holds
//! conditional appends about that tag back until it ends: after
//! [`PgStoreOptions::append_if_timeout`](crate::PgStoreOptions::append_if_timeout)
//! they fail with [`AppendIfTimeout::Locked`].
//!
//! # Conditions with an item without a tag: wait for older transactions
//!
//! An item of types only (or no item at all: `Query::all()`) is about
//! events that lock nothing in common. Then the call runs in a transaction
//! whose events are labelled with **its own id** `X`, and checks only once
//! **every transaction with a smaller id has ended**:
//!
//! 1. `BEGIN`, then the call, which takes `X` and, while transactions with
//!    smaller ids are running, answers `wait` and does nothing else. (A batch
//!    of more than [`SEND_AT_ONCE`] bytes of payload starts with a bare poll
//!    instead, so that it is sent once.)
//! 2. Wait: poll `pg_snapshot_xmin(pg_current_snapshot()) >= X` in fresh
//!    statements (each takes a new snapshot), after every append of this
//!    store ends (an in-process signal; a small batch then tries the call at
//!    once) or a short sleep (100 µs, doubling up to 2 ms) for transactions
//!    of other processes; give up after `append_if_timeout` with
//!    [`AppendIfTimeout::HeldBack`] naming the oldest running transaction
//!    (`pg_stat_activity`, as [`PgEventStore::log_lag`](crate::PgEventStore::log_lag)).
//! 3. Call again: it locks the tags as above (a tag labelled above `X`, by
//!    a younger conditional append, answers `moved`), and its check's
//!    snapshot sees every committed transaction with an id below `X`; the
//!    append is labelled `X`, its streams moved only while their label is
//!    not above `X` (else `moved`).
//! 4. `COMMIT` (or `ROLLBACK` when nothing was written); `moved` runs the
//!    append again in a new transaction, whose id is larger.
//!
//! An event that precedes these in the log has a label below `X` (or `X`
//! and a smaller global position, which only this transaction writes); a
//! label is at least its writer's id, so its writer had ended before the
//! check, which saw the event; and nothing labelled below `X` can be written
//! later. The transaction holds nothing while it waits, and waits only for
//! older ids than its own, so waits never form a circle. The price: a
//! transaction that stays open anywhere on the server holds these appends
//! back, as it holds readers back.
//!
//! # Reading what was written
//!
//! A conditional append on tags may commit while an older transaction is
//! still running; its events become readable (`read_query`, `read_all`)
//! when that one ends, as an ordinary append's do.
//! [`Decider`](annals::decision::Decider) waits for that before it returns,
//! so that the next decision sees them.

use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use annals::{AppendCondition, AppendOptions, Appended, NewEvent, Position, StoreError};
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{Connection, Row};
use tokio::sync::Notify;
use uuid::Uuid;

use super::statement::Batch;
use crate::connections::Connections;
use crate::error::{LOST_CONNECTION_RETRIES, is_connection_lost, is_retryable_race, store_error};
use crate::log_lag::{RunningTransaction, oldest_transaction};
use crate::query::Items;
use crate::xid::{self, Xid8};

const APPEND_IF: &str = include_str!("../sql/append_if.sql");
const POLL: &str = "SELECT pg_snapshot_xmin(pg_current_snapshot()) >= pg_current_xact_id()";

/// The first pause between polls of the wait, doubled up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_micros(100);
/// The longest pause between polls.
const MAX_PAUSE: Duration = Duration::from_millis(2);
/// Up to this many bytes of payload, the first statement of a transaction is
/// the full one (it answers at once when there is nothing to wait for);
/// beyond, a bare poll first, so that a transaction that must wait does not
/// send the batch twice.
const SEND_AT_ONCE: usize = 16 * 1024;
/// How often a conditional append runs again after losing a race (a unique
/// violation: a concurrent append of its ids or command id, then answered
/// by the idempotency check; a deadlock with a caller's transaction).
const MAX_RACES: usize = 3;

/// One conditional append: where, what, and when not.
pub(crate) struct Member {
    pub(crate) stream: String,
    pub(crate) command_id: Option<Uuid>,
    pub(crate) batch: Batch,
    pub(crate) condition: AppendCondition,
}

impl Member {
    /// A conditional append of `events` to `stream` (checked against the
    /// limits already).
    pub(crate) fn new(
        stream: &str,
        events: Vec<NewEvent>,
        condition: AppendCondition,
        options: AppendOptions,
    ) -> Result<Self, StoreError> {
        Ok(Self {
            stream: stream.to_owned(),
            command_id: options.command_id,
            batch: Batch::new(events)?,
            condition,
        })
    }

    /// Events in the append.
    pub(crate) fn len(&self) -> usize {
        self.batch.len()
    }

    /// Whether the event at `place` (0-based) matches `condition`'s query.
    pub(crate) fn matches(&self, place: usize, condition: &AppendCondition) -> bool {
        condition
            .fail_if_events_match
            .matches(&self.batch.types[place], &self.batch.tags[place].0)
    }
}

/// What one transaction made of one append.
pub(crate) enum Settled {
    /// Written, with the position of each of its events.
    Written {
        appended: Appended,
        positions: Vec<Position>,
    },
    /// Answered without writing: repeated, a duplicate id, a failed condition.
    Answered(Result<Appended, StoreError>),
    /// Checked against the log but not written, as asked (`hold`).
    Held,
    /// Its stream's label had moved above the transaction's id: to run again
    /// in a new transaction.
    Again,
}

/// Why a transaction of conditional appends did not settle them.
pub(crate) enum Failure {
    /// The database failed the transaction (nothing of it was written, or,
    /// after a lost connection during the commit, its fate is unknown).
    Sql(sqlx::Error),
    /// The wait for older transactions, or for a lock, timed out (nothing
    /// written).
    TimedOut(AppendIfTimeout),
}

impl From<sqlx::Error> for Failure {
    fn from(error: sqlx::Error) -> Self {
        Failure::Sql(error)
    }
}

/// Why a conditional append gave up, inside
/// [`StoreError::Unavailable`]: it waited as long as
/// [`PgStoreOptions::append_if_timeout`](crate::PgStoreOptions::append_if_timeout)
/// allows. Nothing was written; retrying later may succeed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AppendIfTimeout {
    /// A transaction older than the append's own stayed open: an append
    /// whose condition has an item without a tag cannot check it until that
    /// one ends (see the [crate documentation](crate#conditional-appends)).
    #[error(
        "a conditional append waited {waited:.1?} for older transactions to end; {}",
        match oldest_transaction {
            Some(t) => format!("the oldest still running is {t}: end it, or keep transactions short (PgEventStore::log_lag shows it)"),
            None => "no session shows one: look for a prepared transaction (pg_prepared_xacts)".to_owned(),
        }
    )]
    HeldBack {
        /// How long it waited.
        waited: Duration,
        /// The oldest transaction still running when it gave up.
        oldest_transaction: Option<RunningTransaction>,
    },
    /// Another transaction held the row of a tag or stream the append must
    /// lock (most likely an append inside a long transaction of the
    /// caller's) as long as the timeout allowed.
    #[error(
        "a conditional append waited {waited:.1?} for a lock on one of its tags or streams, held by another transaction (PgEventStore::log_lag shows the oldest running one)"
    )]
    Locked {
        /// How long it waited.
        waited: Duration,
    },
    /// Every attempt found its stream appended to by a younger transaction
    /// (whose events must follow the stream's earlier ones), until the time
    /// ran out.
    #[error(
        "a conditional append to {stream:?} found the stream moved by concurrent appends on every attempt for {waited:.1?}"
    )]
    StreamBusy {
        /// The stream.
        stream: String,
        /// How long it tried.
        waited: Duration,
    },
}

/// What a transaction of conditional appends needs from the store.
pub(crate) struct Env<'a> {
    pub(crate) conns: &'a Arc<Connections>,
    /// Notified in the transaction ('' for none).
    pub(crate) channel: &'a str,
    /// Signalled whenever an append of this store ends: a waiting
    /// transaction polls again then.
    pub(crate) ended: &'a Notify,
    /// How long an append may take, waits and attempts together.
    pub(crate) timeout: Duration,
}

/// The conditional appends of one transaction as the statement's arrays.
struct Params<'a> {
    streams: Vec<&'a str>,
    command_ids: Vec<Option<Uuid>>,
    counts: Vec<i32>,
    after_transactions: Vec<Xid8>,
    after_sequences: Vec<i64>,
    hold: &'a [bool],
    owners: Vec<i32>,
    places: Vec<i32>,
    ids: Vec<Uuid>,
    types: Vec<&'a str>,
    schema_versions: Vec<i32>,
    payloads: Vec<Json<&'a annals::Payload>>,
    metadata: Vec<Json<&'a annals::Metadata>>,
    tags: Vec<Json<&'a Vec<String>>>,
    items: Items,
    payload_bytes: usize,
    /// Whether some condition item names no tag: the transaction then waits
    /// for every older one instead of locking tags.
    wait: bool,
}

impl<'a> Params<'a> {
    fn new(members: &'a [Member], hold: &'a [bool]) -> Self {
        let events: usize = members.iter().map(Member::len).sum();
        let mut params = Params {
            streams: Vec::with_capacity(members.len()),
            command_ids: Vec::with_capacity(members.len()),
            counts: Vec::with_capacity(members.len()),
            after_transactions: Vec::with_capacity(members.len()),
            after_sequences: Vec::with_capacity(members.len()),
            hold,
            owners: Vec::with_capacity(events),
            places: Vec::with_capacity(events),
            ids: Vec::with_capacity(events),
            types: Vec::with_capacity(events),
            schema_versions: Vec::with_capacity(events),
            payloads: Vec::with_capacity(events),
            metadata: Vec::with_capacity(events),
            tags: Vec::with_capacity(events),
            items: Items::default(),
            payload_bytes: 0,
            wait: false,
        };
        for (k, member) in (1i32..).zip(members) {
            let batch = &member.batch;
            // No position: every stored position is above (0, 0).
            let (transaction, sequence) =
                xid::after_params(member.condition.after.unwrap_or(Position::START));
            params.streams.push(&member.stream);
            params.command_ids.push(member.command_id);
            params
                .counts
                .push(i32::try_from(batch.len()).unwrap_or(i32::MAX));
            params.after_transactions.push(transaction);
            params.after_sequences.push(sequence);
            for (place, event) in (1i32..).zip(0..batch.len()) {
                params.owners.push(k);
                params.places.push(place);
                params.ids.push(batch.ids[event]);
                params.types.push(&batch.types[event]);
                params.schema_versions.push(batch.schema_versions[event]);
                params.payloads.push(Json(&batch.payloads[event].0));
                params.payload_bytes += batch.payloads[event].0.json().len();
                params.metadata.push(Json(&batch.metadata[event].0));
                params.tags.push(Json(&batch.tags[event].0));
            }
            params.items.push(k, &member.condition.fail_if_events_match);
        }
        params.wait = params.items.tags.iter().any(|tags| tags.0.is_empty());
        params
    }

    /// Runs the statement; `lock_timeout` bounds each lock wait.
    async fn run(
        &self,
        conn: &mut sqlx::PgConnection,
        channel: &str,
        lock_timeout: Duration,
    ) -> Result<Vec<PgRow>, sqlx::Error> {
        // PostgreSQL's lock_timeout of 0 means none: wait at least 1 ms.
        let lock_timeout = format!("{}ms", lock_timeout.as_millis().max(1));
        sqlx::query(APPEND_IF)
            .bind(channel)
            .bind(&self.streams)
            .bind(&self.command_ids)
            .bind(&self.counts)
            .bind(&self.after_transactions)
            .bind(&self.after_sequences)
            .bind(self.hold)
            .bind(&self.owners)
            .bind(&self.places)
            .bind(&self.ids)
            .bind(&self.types)
            .bind(&self.schema_versions)
            .bind(&self.payloads)
            .bind(&self.metadata)
            .bind(&self.tags)
            .bind(&self.items.owners)
            .bind(&self.items.types)
            .bind(&self.items.tags)
            .bind(self.wait)
            .bind(lock_timeout)
            .fetch_all(conn)
            .await
    }
}

/// Runs conditional appends in one transaction (see the [module
/// documentation](self)): what became of each, in order. `hold[k]`: check
/// the `k`th append but do not write it. Gives up waiting once the timeout
/// has passed since `started`.
pub(crate) async fn transaction(
    env: &Env<'_>,
    members: &[Member],
    hold: &[bool],
    started: Instant,
) -> Result<Vec<Settled>, Failure> {
    let params = Params::new(members, hold);
    let mut conn = env.conns.get().await?;
    let result = run(env, &mut conn, &params, started).await;
    // Conditional appends waiting for this transaction look again.
    env.ended.notify_waiters();
    if result.is_ok() {
        conn.release();
    }
    result
}

/// One call in autocommit when the conditions lock their tags; else
/// `BEGIN`, the statement, polls until the transactions older than this one
/// have ended, the statement again, `COMMIT`.
async fn run(
    env: &Env<'_>,
    conn: &mut sqlx::PgConnection,
    params: &Params<'_>,
    started: Instant,
) -> Result<Vec<Settled>, Failure> {
    let deadline = started + env.timeout;
    let left = || deadline.saturating_duration_since(Instant::now());
    let locked = |error| lock_timed_out(error, started);
    if !params.wait {
        let rows = params
            .run(conn, env.channel, left())
            .await
            .map_err(locked)?;
        return Ok(settle(&rows, params.streams.len())?);
    }
    let mut tx = conn.begin().await?;
    // A large batch is sent once, when the wait is over; a small one at
    // once, in case there is nothing to wait for, and again whenever an
    // append of this store ends (most often the one it waited for).
    let small = params.payload_bytes <= SEND_AT_ONCE;
    let mut full = small;
    let mut pause = FIRST_PAUSE;
    let rows = loop {
        // Listen before asking, so that an append ending meanwhile still
        // wakes the wait below.
        let mut ended = pin!(env.ended.notified());
        ended.as_mut().enable();
        if full {
            let rows = params
                .run(&mut tx, env.channel, left())
                .await
                .map_err(locked)?;
            if !waits(&rows)? {
                break rows;
            }
            full = false;
        } else if sqlx::query_scalar::<_, bool>(POLL)
            .fetch_one(&mut *tx)
            .await?
        {
            // The older transactions have ended, for good: the full
            // statement will not wait.
            full = true;
            continue;
        }
        if Instant::now() >= deadline {
            let oldest_transaction = oldest_transaction(&mut tx).await?;
            tx.rollback().await?;
            return Err(Failure::TimedOut(AppendIfTimeout::HeldBack {
                waited: started.elapsed(),
                oldest_transaction,
            }));
        }
        tokio::select! {
            () = ended => full = small,
            () = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(MAX_PAUSE);
    };
    let settled = settle(&rows, params.streams.len())?;
    if settled.iter().any(|s| matches!(s, Settled::Written { .. })) {
        tx.commit().await?;
    } else {
        tx.rollback().await?;
    }
    Ok(settled)
}

/// A lock wait that ran out of time as [`AppendIfTimeout::Locked`]; any
/// other error as it is.
fn lock_timed_out(error: sqlx::Error, started: Instant) -> Failure {
    match &error {
        sqlx::Error::Database(db) if db.code().as_deref() == Some("55P03") => {
            Failure::TimedOut(AppendIfTimeout::Locked {
                waited: started.elapsed(),
            })
        }
        _ => Failure::Sql(error),
    }
}

/// Whether the statement answered only that it must wait.
fn waits(rows: &[PgRow]) -> Result<bool, sqlx::Error> {
    match rows {
        [row] => Ok(row.try_get::<String, _>(1)? == "wait"),
        _ => Ok(false),
    }
}

/// The statement's rows (one per append, in order) as outcomes.
fn settle(rows: &[PgRow], members: usize) -> Result<Vec<Settled>, sqlx::Error> {
    if rows.len() != members {
        return Err(sqlx::Error::Protocol(format!(
            "the conditional append statement answered {} rows for {members} appends",
            rows.len()
        )));
    }
    rows.iter().map(settled).collect()
}

fn settled(row: &PgRow) -> Result<Settled, sqlx::Error> {
    let kind: String = row.try_get(1)?;
    let label: Xid8 = row.try_get(2)?;
    let first_version: Option<i64> = row.try_get(3)?;
    let stream_version: Option<i64> = row.try_get(4)?;
    let transaction: Option<Xid8> = row.try_get(5)?;
    let global_position: Option<i64> = row.try_get(6)?;
    let position = match (transaction, global_position) {
        (Some(tx), Some(gp)) => xid::position(tx, gp),
        _ => Position::START,
    };
    let appended = |repeated| Appended {
        first_version: xid::version(first_version.unwrap_or(0)),
        stream_version: xid::version(stream_version.unwrap_or(0)),
        position,
        repeated,
    };
    Ok(match kind.as_str() {
        "appended" => {
            let positions: Vec<i64> = row.try_get::<Option<_>, _>(9)?.unwrap_or_default();
            Settled::Written {
                appended: appended(false),
                positions: positions
                    .into_iter()
                    .map(|gp| xid::position(label, gp))
                    .collect(),
            }
        }
        "replayed" => Settled::Answered(Ok(appended(true))),
        "duplicate" => Settled::Answered(Err(StoreError::DuplicateEvent {
            event_id: row.try_get::<Option<Uuid>, _>(7)?.unwrap_or_default(),
            stream: row.try_get::<Option<String>, _>(8)?.unwrap_or_default(),
            stream_version: xid::version(stream_version.unwrap_or(0)),
        })),
        "failed" => Settled::Answered(Err(StoreError::ConditionFailed { position })),
        "held" => Settled::Held,
        "moved" => Settled::Again,
        other => Settled::Answered(Err(StoreError::Backend(
            format!("the conditional append statement answered an unknown outcome {other:?}")
                .into(),
        ))),
    })
}

/// A conditional append in transactions of its own: runs it again after its
/// stream moved, a lost race or a lost connection, until it settles or the
/// time (counted from `started`) is up.
pub(crate) async fn append_alone(
    env: &Env<'_>,
    member: Member,
    started: Instant,
) -> Result<Appended, StoreError> {
    let (mut races, mut reconnects) = (0, 0);
    loop {
        let result = transaction(env, std::slice::from_ref(&member), &[false], started).await;
        match result {
            Ok(mut settled) => match settled.pop() {
                Some(Settled::Written { appended, .. }) => return Ok(appended),
                Some(Settled::Answered(answer)) => return answer,
                Some(Settled::Again | Settled::Held) | None => {
                    if started.elapsed() >= env.timeout {
                        return Err(StoreError::Unavailable(Box::new(
                            AppendIfTimeout::StreamBusy {
                                stream: member.stream.clone(),
                                waited: started.elapsed(),
                            },
                        )));
                    }
                }
            },
            Err(Failure::TimedOut(timeout)) => {
                return Err(StoreError::Unavailable(Box::new(timeout)));
            }
            Err(Failure::Sql(error)) => {
                if races < MAX_RACES && is_retryable_race(&error) {
                    races += 1;
                } else if reconnects < LOST_CONNECTION_RETRIES && is_connection_lost(&error) {
                    // Safe: a retry of an append that did commit answers
                    // `repeated` by its event ids.
                    tracing::debug!(%error, "conditional append lost its connection; trying again");
                    reconnects += 1;
                } else {
                    return Err(store_error(error));
                }
            }
        }
    }
}
