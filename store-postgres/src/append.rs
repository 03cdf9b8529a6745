//! Appends: one statement per batch in the common case.
//!
//! The hot path (`sql/append_*.sql`, assembled below) checks the expected
//! version by moving the stream row, inserts the batch from arrays, records
//! the command id and notifies, as one statement of data-modifying CTEs in
//! autocommit mode: one round trip, one transaction. When it writes nothing,
//! the `annals_append` SQL function (`migrations/0002_append.sql`) says
//! why: a replay, a conflict with the actual version, or a duplicate id.
//! Appends inside the caller's transaction use the function directly.

use annals::{AppendOptions, Appended, ExpectedVersion, Metadata, NewEvent, Payload, StoreError};
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::types::Json;
use sqlx::{PgConnection, Postgres, Row, Transaction};
use uuid::Uuid;

use tokio::sync::oneshot;

use crate::error::{LOST_CONNECTION_RETRIES, is_connection_lost, is_unique_violation, store_error};
use crate::group::{GroupCommit, Outcome, Request};
use crate::notify::NotifyMode;
use crate::store::PgEventStore;
use crate::xid::{self, Xid8};

const APPEND: &str = include_str!("sql/append.sql");

/// The hot path: one statement of data-modifying CTEs, assembled from the
/// parts in `sql/append_*.sql`, in four variants (expectation `Exact` or
/// not, with or without a command id).
macro_rules! hot_path {
    ($stream:literal) => {
        concat!(
            "WITH\n",
            include_str!($stream),
            ",\n",
            include_str!("sql/append_events.sql"),
            include_str!("sql/append_result.sql")
        )
    };
    ($stream:literal, command) => {
        concat!(
            "WITH\n",
            include_str!($stream),
            ",\n",
            include_str!("sql/append_events.sql"),
            ",\n",
            include_str!("sql/append_command.sql"),
            include_str!("sql/append_result.sql")
        )
    };
}
const APPEND_ANY: &str = hot_path!("sql/append_stream_any.sql");
const APPEND_ANY_COMMAND: &str = hot_path!("sql/append_stream_any.sql", command);
const APPEND_EXACT: &str = hot_path!("sql/append_stream_exact.sql");
const APPEND_EXACT_COMMAND: &str = hot_path!("sql/append_stream_exact.sql", command);
const COMMAND_OUTCOME: &str = include_str!("sql/command_outcome.sql");
const STORED_EVENTS: &str = include_str!("sql/stored_events.sql");
const STREAM_VERSION: &str = "SELECT version FROM annals_streams WHERE stream_id = $1";

/// How often a pooled append runs again after losing a race (a unique
/// violation) or its connection.
const MAX_ATTEMPTS: usize = 3;

/// A query being bound.
type PgQuery<'q> = sqlx::query::Query<'q, Postgres, PgArguments>;

/// A batch as the arrays the SQL function takes.
pub(crate) struct Batch {
    pub(crate) ids: Vec<Uuid>,
    pub(crate) types: Vec<String>,
    pub(crate) schema_versions: Vec<i32>,
    pub(crate) payloads: Vec<Json<Payload>>,
    pub(crate) metadata: Vec<Json<Metadata>>,
}

impl Batch {
    /// Events in the batch.
    pub(crate) fn len(&self) -> usize {
        self.ids.len()
    }

    /// Binds the five arrays, in the order every append statement takes
    /// them (ids, types, schema versions, payloads, metadata).
    fn bind<'q>(&'q self, query: PgQuery<'q>) -> PgQuery<'q> {
        query
            .bind(&self.ids)
            .bind(&self.types)
            .bind(&self.schema_versions)
            .bind(&self.payloads)
            .bind(&self.metadata)
    }

    fn new(events: Vec<NewEvent>) -> Result<Self, StoreError> {
        let n = events.len();
        let mut batch = Batch {
            ids: Vec::with_capacity(n),
            types: Vec::with_capacity(n),
            schema_versions: Vec::with_capacity(n),
            payloads: Vec::with_capacity(n),
            metadata: Vec::with_capacity(n),
        };
        for event in events {
            let schema_version = i32::try_from(event.schema_version).map_err(|_| {
                StoreError::InvalidInput(format!(
                    "schema version {} of {} is beyond what PostgreSQL stores",
                    event.schema_version, event.event_type
                ))
            })?;
            batch.ids.push(event.event_id);
            batch.types.push(event.event_type);
            batch.schema_versions.push(schema_version);
            batch.payloads.push(Json(event.payload));
            batch.metadata.push(Json(event.metadata));
        }
        Ok(batch)
    }
}

/// The `p_expected` parameter: -1 any, 0 no stream, n exactly n.
fn expected_param(expected: ExpectedVersion) -> Result<i64, StoreError> {
    match expected {
        ExpectedVersion::Any => Ok(-1),
        ExpectedVersion::NoStream => Ok(0),
        ExpectedVersion::Exact(v) => i64::try_from(v)
            .map_err(|_| StoreError::InvalidInput(format!("expected version {v} is out of range"))),
    }
}

/// One row of `annals_append` (or its helpers), as an append's result.
fn outcome(row: &PgRow, stream: &str, expected: ExpectedVersion) -> Result<Appended, StoreError> {
    let decode = |e: sqlx::Error| store_error(e);
    let kind: String = row.try_get(0).map_err(decode)?;
    let first_version: Option<i64> = row.try_get(1).map_err(decode)?;
    let stream_version: Option<i64> = row.try_get(2).map_err(decode)?;
    let transaction: Option<Xid8> = row.try_get(3).map_err(decode)?;
    let global_position: Option<i64> = row.try_get(4).map_err(decode)?;
    let event_id: Option<Uuid> = row.try_get(5).map_err(decode)?;
    let event_stream: Option<String> = row.try_get(6).map_err(decode)?;
    let stream_version = xid::version(stream_version.unwrap_or(0));
    let position = match (transaction, global_position) {
        (Some(tx), Some(gp)) => xid::position(tx, gp),
        _ => annals::Position::START,
    };
    match kind.as_str() {
        "appended" | "replayed" => Ok(Appended {
            first_version: xid::version(first_version.unwrap_or(0)),
            stream_version,
            position,
            replayed: kind == "replayed",
        }),
        "conflict" => Err(StoreError::Conflict {
            stream: stream.to_owned(),
            expected,
            actual: stream_version,
        }),
        "duplicate" => Err(StoreError::DuplicateEvent {
            event_id: event_id.unwrap_or_default(),
            stream: event_stream.unwrap_or_default(),
            stream_version,
        }),
        other => Err(StoreError::Backend(
            format!("annals_append answered an unknown outcome {other:?}").into(),
        )),
    }
}

/// The hot path: one statement that appends when the expectation holds
/// and the command id is new (`Ok(Some)`), and otherwise writes nothing
/// (`Ok(None)`). `channel` is notified in the transaction ('' sends none).
pub(crate) async fn try_append_fast(
    conn: &mut PgConnection,
    channel: &str,
    stream: &str,
    expected: i64,
    command_id: Option<Uuid>,
    batch: &Batch,
) -> Result<Option<Appended>, sqlx::Error> {
    let sql = match (expected > 0, command_id.is_some()) {
        (true, false) => APPEND_EXACT,
        (true, true) => APPEND_EXACT_COMMAND,
        (false, false) => APPEND_ANY,
        (false, true) => APPEND_ANY_COMMAND,
    };
    let row = sqlx::query(sql)
        .bind(stream)
        .bind(expected)
        .bind(command_id)
        .bind(channel);
    let row = batch.bind(row).fetch_optional(conn).await?;
    row.map(|row| appended_from(&row, 0)).transpose()
}

/// A written append from the hot path's result columns, starting at
/// `first`: first version, stream version, transaction label, position.
pub(crate) fn appended_from(row: &PgRow, first: usize) -> Result<Appended, sqlx::Error> {
    let first_version: i64 = row.try_get(first)?;
    let stream_version: i64 = row.try_get(first + 1)?;
    let transaction: Xid8 = row.try_get(first + 2)?;
    let global_position: i64 = row.try_get(first + 3)?;
    Ok(Appended {
        first_version: xid::version(first_version),
        stream_version: xid::version(stream_version),
        position: xid::position(transaction, global_position),
        replayed: false,
    })
}

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

impl PgEventStore {
    /// Runs the append function once on `conn`.
    #[allow(clippy::too_many_arguments)]
    async fn call_append(
        &self,
        conn: &mut PgConnection,
        stream: &str,
        expected: i64,
        command_id: Option<Uuid>,
        check_ids: bool,
        channel: &str,
        batch: &Batch,
    ) -> Result<PgRow, sqlx::Error> {
        let query = sqlx::query(APPEND)
            .bind(stream)
            .bind(expected)
            .bind(command_id)
            .bind(check_ids)
            .bind(channel);
        batch.bind(query).fetch_one(conn).await
    }

    /// The trait's append, in autocommit mode.
    ///
    /// First the one-statement hot path. When it writes nothing (a conflict,
    /// a recorded command, an idempotent retry), `annals_append` runs and
    /// says what happened (or appends, when the stream moved meanwhile and
    /// the expectation is `Any`). After a lost race (a unique violation)
    /// `annals_append` runs with the ids looked up first, which turns the
    /// race into `replayed` or `DuplicateEvent`; after a lost connection it
    /// runs the same way on another connection (safe: appends are idempotent
    /// by event id).
    pub(crate) async fn append_pooled(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        options: AppendOptions,
    ) -> Result<Appended, StoreError> {
        self.inner.limits.check(stream, &events)?;
        let expected_param = expected_param(expected)?;
        let mut batch = Batch::new(events)?;
        let mut attempts = Attempts {
            fast: true,
            check_ids: false,
            attempt: 0,
            reconnects: 0,
        };
        let group = self.inner.group.as_ref().filter(|g| g.takes(batch.len()));
        if let Some(group) = group {
            let (returned, grouped) = self
                .append_grouped(group, stream, expected_param, options.command_id, batch)
                .await?;
            batch = returned;
            match grouped {
                Outcome::Appended(done) => return Ok(self.announce(done)),
                Outcome::NotWritten => attempts.fast = false,
                Outcome::Alone => {}
                Outcome::Failed(error) => {
                    attempts.attempt = 1;
                    attempts.after(error)?;
                }
            }
        }
        loop {
            attempts.attempt += 1;
            let result = async {
                let mut conn = self.inner.conns.get().await?;
                if attempts.fast {
                    let done = try_append_fast(
                        &mut conn,
                        self.in_transaction_channel(),
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
                let row = self
                    .call_append(
                        &mut conn,
                        stream,
                        expected_param,
                        options.command_id,
                        attempts.check_ids,
                        self.in_transaction_channel(),
                        &batch,
                    )
                    .await?;
                conn.release();
                Ok::<_, sqlx::Error>(outcome(&row, stream, expected))
            }
            .await;
            match result {
                Ok(appended) => return Ok(self.announce(appended?)),
                Err(error) => attempts.after(error)?,
            }
        }
    }

    /// The channel pooled appends notify in their transaction.
    fn in_transaction_channel(&self) -> &str {
        self.inner.notify.in_transaction(&self.inner.channel)
    }

    /// After an append: the after-commit notification, when that is the mode.
    fn announce(&self, appended: Appended) -> Appended {
        if self.inner.notify == NotifyMode::AfterCommit && !appended.replayed {
            self.inner
                .notifier
                .poke(&self.inner.pool, &self.inner.channel);
        }
        appended
    }

    /// The first attempt of a pooled append, through the group commit.
    /// Gives the batch back with the outcome.
    async fn append_grouped(
        &self,
        group: &GroupCommit,
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
        if let Some(request) = group.submit(request) {
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

    /// Appends inside the caller's transaction, atomically with whatever
    /// else it writes (an outbox, a read model kept in the same database).
    ///
    /// The same checks as [`EventStore::append_with`](annals::EventStore::append_with)
    /// apply, and the notification goes out when the transaction commits.
    /// The returned position is valid once the transaction has committed;
    /// until then readers of the global log wait for the transaction (see the
    /// [crate documentation](crate) on long transactions).
    ///
    /// Differences from the pooled append:
    /// * The event ids are always looked up first (the function cannot retry
    ///   inside the caller's transaction).
    /// * A `replayed` outcome wrote nothing; the caller decides whether to
    ///   commit its own writes.
    /// * Losing a race with a concurrent append of the same stream, ids or
    ///   command id aborts the transaction (PostgreSQL rolls it back on the
    ///   unique violation): the error is then [`StoreError::Conflict`] or
    ///   [`StoreError::DuplicateEvent`], and the caller must roll back.
    ///
    /// ```no_run
    /// # async fn example(store: annals_postgres::PgEventStore, event: annals::NewEvent)
    /// # -> Result<(), Box<dyn std::error::Error>> {
    /// use annals::{AppendOptions, ExpectedVersion};
    ///
    /// let mut tx = store.pool().begin().await?;
    /// sqlx::query("INSERT INTO outbox (topic, body) VALUES ($1, $2)")
    ///     .bind("flights")
    ///     .bind("{}")
    ///     .execute(&mut *tx)
    ///     .await?;
    /// let appended = store
    ///     .append_in_transaction(&mut tx, "flight-1", ExpectedVersion::Any, vec![event], AppendOptions::default())
    ///     .await?;
    /// tx.commit().await?;
    /// println!("appended at {}", appended.position);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn append_in_transaction(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        options: AppendOptions,
    ) -> Result<Appended, StoreError> {
        self.inner.limits.check(stream, &events)?;
        let expected_param = expected_param(expected)?;
        let batch = Batch::new(events)?;
        let result = self
            .call_append(
                tx,
                stream,
                expected_param,
                options.command_id,
                true,
                // The store cannot see the caller's commit: notify inside it.
                match self.inner.notify {
                    NotifyMode::Off => "",
                    NotifyMode::InTransaction | NotifyMode::AfterCommit => &self.inner.channel,
                },
                &batch,
            )
            .await;
        match result {
            Ok(row) => outcome(&row, stream, expected),
            Err(error) if is_unique_violation(&error) => {
                // The transaction is aborted; explain the race from outside it.
                Err(self
                    .explain_lost_race(stream, expected, &batch.ids)
                    .await
                    .unwrap_or_else(|_| store_error(error)))
            }
            Err(error) => Err(store_error(error)),
        }
    }

    /// After an append inside a transaction lost a race: which error tells
    /// the caller what happened, as seen by a fresh connection.
    async fn explain_lost_race(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        ids: &[Uuid],
    ) -> Result<StoreError, StoreError> {
        let pool = &self.inner.pool;
        let stored = sqlx::query(STORED_EVENTS)
            .bind(stream)
            .bind(ids)
            .fetch_optional(pool)
            .await
            .map_err(store_error)?;
        if let Some(row) = stored {
            if let Err(duplicate @ StoreError::DuplicateEvent { .. }) =
                outcome(&row, stream, expected)
            {
                return Ok(duplicate);
            }
        }
        Ok(StoreError::Conflict {
            stream: stream.to_owned(),
            expected,
            actual: self.current_version(stream).await?,
        })
    }

    /// The outcome recorded for a command id.
    pub(crate) async fn load_command_outcome(
        &self,
        command_id: Uuid,
    ) -> Result<Option<Appended>, StoreError> {
        let row = sqlx::query(COMMAND_OUTCOME)
            .bind(command_id)
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(store_error)?;
        row.map(|row| outcome(&row, "", ExpectedVersion::Any))
            .transpose()
    }

    /// The stream's current version (0 = no stream).
    pub(crate) async fn current_version(&self, stream: &str) -> Result<u64, StoreError> {
        let version: Option<i64> = sqlx::query_scalar(STREAM_VERSION)
            .bind(stream)
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(store_error)?;
        Ok(version.map_or(0, xid::version))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_versions_map_to_the_function_parameter() {
        assert_eq!(expected_param(ExpectedVersion::Any).unwrap(), -1);
        assert_eq!(expected_param(ExpectedVersion::NoStream).unwrap(), 0);
        assert_eq!(expected_param(ExpectedVersion::Exact(0)).unwrap(), 0);
        assert_eq!(expected_param(ExpectedVersion::Exact(7)).unwrap(), 7);
        assert!(expected_param(ExpectedVersion::Exact(u64::MAX)).is_err());
    }
}
