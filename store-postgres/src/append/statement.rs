//! The append statements of one append, shared by the single path
//! ([`super`]) and the group commit ([`super::group`]): the batch as bound
//! arrays, the SQL, and the decoding of what the server answers.
//!
//! The hot path (`sql/append_*.sql`, assembled by `hot_path!`) locks the
//! events' tags, checks the expected version by moving the stream row, inserts the batch from arrays,
//! records the command id and notifies, as one statement of data-modifying
//! CTEs in autocommit mode: one round trip, one transaction. When it writes
//! nothing, the `annals_append` SQL function (`migrations/0002_append.sql`,
//! called by `sql/append.sql`) says why: a replay, a conflict with the
//! actual version, or a duplicate id. Its answer, a row of outcome columns,
//! is decoded by [`outcome`].

use annals::{Appended, ExpectedVersion, Metadata, NewEvent, Payload, StoreError};
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::types::Json;
use sqlx::{PgConnection, Postgres, Row};
use uuid::Uuid;

use crate::error::store_error;
use crate::xid::{self, Xid8};

const APPEND: &str = include_str!("../sql/append.sql");

/// The hot path: one statement of data-modifying CTEs, assembled from the
/// parts in `sql/append_*.sql`, in four variants (expectation `Exact` or
/// not, with or without a command id).
macro_rules! hot_path {
    ($stream:literal) => {
        concat!(
            "WITH\n",
            include_str!("../sql/append_tags.sql"),
            ",\n",
            include_str!($stream),
            ",\n",
            include_str!("../sql/append_events.sql"),
            include_str!("../sql/append_result.sql")
        )
    };
    ($stream:literal, command) => {
        concat!(
            "WITH\n",
            include_str!("../sql/append_tags.sql"),
            ",\n",
            include_str!($stream),
            ",\n",
            include_str!("../sql/append_events.sql"),
            ",\n",
            include_str!("../sql/append_command.sql"),
            include_str!("../sql/append_result.sql")
        )
    };
}
const APPEND_ANY: &str = hot_path!("../sql/append_stream_any.sql");
const APPEND_ANY_COMMAND: &str = hot_path!("../sql/append_stream_any.sql", command);
const APPEND_EXACT: &str = hot_path!("../sql/append_stream_exact.sql");
const APPEND_EXACT_COMMAND: &str = hot_path!("../sql/append_stream_exact.sql", command);

/// A query being bound.
type PgQuery<'q> = sqlx::query::Query<'q, Postgres, PgArguments>;

/// A batch as the arrays the SQL function takes.
pub(crate) struct Batch {
    pub(crate) ids: Vec<Uuid>,
    pub(crate) types: Vec<String>,
    pub(crate) schema_versions: Vec<i32>,
    pub(crate) payloads: Vec<Json<Payload>>,
    pub(crate) metadata: Vec<Json<Metadata>>,
    /// Each event's tags, as a JSON array (SQL has no ragged arrays).
    pub(crate) tags: Vec<Json<Vec<String>>>,
}

impl Batch {
    /// Events in the batch.
    pub(crate) fn len(&self) -> usize {
        self.ids.len()
    }

    /// Binds the six arrays, in the order every append statement takes
    /// them (ids, types, schema versions, payloads, metadata, tags).
    fn bind<'q>(&'q self, query: PgQuery<'q>) -> PgQuery<'q> {
        query
            .bind(&self.ids)
            .bind(&self.types)
            .bind(&self.schema_versions)
            .bind(&self.payloads)
            .bind(&self.metadata)
            .bind(&self.tags)
    }

    pub(crate) fn new(events: Vec<NewEvent>) -> Result<Self, StoreError> {
        let n = events.len();
        let mut batch = Batch {
            ids: Vec::with_capacity(n),
            types: Vec::with_capacity(n),
            schema_versions: Vec::with_capacity(n),
            payloads: Vec::with_capacity(n),
            metadata: Vec::with_capacity(n),
            tags: Vec::with_capacity(n),
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
            batch.tags.push(Json(event.tags));
        }
        Ok(batch)
    }
}

/// The `p_expected` parameter: -1 any, 0 no stream, n exactly n.
pub(crate) fn expected_param(expected: ExpectedVersion) -> Result<i64, StoreError> {
    match expected {
        ExpectedVersion::Any => Ok(-1),
        ExpectedVersion::NoStream => Ok(0),
        ExpectedVersion::Exact(v) => i64::try_from(v)
            .map_err(|_| StoreError::InvalidInput(format!("expected version {v} is out of range"))),
    }
}

/// One row of `annals_append` (or its helpers), as an append's result.
pub(crate) fn outcome(
    row: &PgRow,
    stream: &str,
    expected: ExpectedVersion,
) -> Result<Appended, StoreError> {
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
            repeated: kind == "replayed",
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

/// Runs the append function once on `conn`; its row goes to [`outcome`].
pub(crate) async fn call_append(
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
        repeated: false,
    })
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
