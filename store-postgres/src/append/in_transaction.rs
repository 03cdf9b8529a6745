//! [`PgEventStore::append_in_transaction`]: an append inside the caller's
//! transaction, through the `annals_append` SQL function.

use annals::{AppendOptions, Appended, ExpectedVersion, NewEvent, StoreError};
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use super::statement::{Batch, call_append, expected_param, outcome};
use crate::error::{is_unique_violation, store_error};
use crate::handle::PgEventStore;
use crate::notify::NotifyMode;
use crate::read::stream_version;

const STORED_EVENTS: &str = include_str!("../sql/stored_events.sql");

impl PgEventStore {
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
    /// * A `duplicate` outcome wrote nothing; the caller decides whether to
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
        let result = call_append(
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
        if let Some(row) = stored
            && let Err(duplicate @ StoreError::DuplicateEvent { .. }) =
                outcome(&row, stream, expected)
        {
            return Ok(duplicate);
        }
        Ok(StoreError::Conflict {
            stream: stream.to_owned(),
            expected,
            actual: stream_version(self, stream).await?,
        })
    }
}
