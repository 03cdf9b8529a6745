//! Errors of connecting and migrating, and the mapping of database errors
//! onto [`StoreError`].

use annals::StoreError;

/// Errors of setting the store up: connecting and migrating.
///
/// Once the store runs, its operations answer with [`StoreError`] like every
/// other store: [`StoreError::Unavailable`] when the server cannot be reached
/// (retry later; nothing was written), [`StoreError::Backend`] otherwise.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// The connection URL could not be parsed.
    #[error("invalid PostgreSQL URL: {0}")]
    InvalidUrl(#[source] sqlx::Error),
    /// The server could not be reached or refused the connection.
    #[error("cannot connect to PostgreSQL: {0}")]
    Connect(#[source] sqlx::Error),
    /// Applying the migrations failed.
    #[error("cannot migrate the annals schema: {0}")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    /// An option is out of range.
    #[error("invalid store option: {0}")]
    InvalidOption(String),
}

/// SQLSTATE of a unique violation.
pub(crate) const UNIQUE_VIOLATION: &str = "23505";

/// Whether the error is a unique violation (a lost race with a concurrent
/// append of the same ids or command id).
pub(crate) fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.code().as_deref() == Some(UNIQUE_VIOLATION))
}

/// Whether the error is a lost race that running the transaction again
/// settles: a unique violation (a concurrent append of the same ids or
/// command id, which the idempotency check then answers), a deadlock or a
/// serialization failure.
pub(crate) fn is_retryable_race(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db)
        if matches!(db.code().as_deref(), Some(UNIQUE_VIOLATION | "40P01" | "40001")))
}

/// Whether the error means the server could not be reached or went away:
/// lost or refused connections, pool timeouts, shutdowns and terminated
/// backends. Such failures are transient.
pub(crate) fn is_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // 08: connection exception; 57P01..57P05: admin shutdown, crash
            // shutdown, cannot connect now, database dropped, idle timeout;
            // 53300: too many connections.
            code.starts_with("08")
                || matches!(&*code, "57P01" | "57P02" | "57P03" | "57P05" | "53300")
        }),
        _ => false,
    }
}

/// Whether the connection the operation ran on was lost (as opposed to no
/// connection being available at all): the operation may succeed at once on
/// another connection, for example after the server dropped idle ones.
pub(crate) fn is_connection_lost(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_) | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|code| code.starts_with("08") || matches!(&*code, "57P01" | "57P05")),
        _ => false,
    }
}

/// How often an operation whose connection was lost runs again on another
/// one. Connections the server dropped while idle in the pool (a restart,
/// `pg_terminate_backend`) each fail one attempt, fast.
pub(crate) const LOST_CONNECTION_RETRIES: usize = 10;

/// Runs an operation, and runs it again (up to [`LOST_CONNECTION_RETRIES`]
/// times) when its connection was lost. For reads and idempotent writes.
pub(crate) async fn retry_lost<T, F, Fut>(mut operation: F) -> Result<T, sqlx::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, sqlx::Error>>,
{
    let mut retries = 0;
    loop {
        match operation().await {
            Err(error) if retries < LOST_CONNECTION_RETRIES && is_connection_lost(&error) => {
                tracing::debug!(%error, "lost a connection; trying again on another");
                retries += 1;
            }
            other => return other,
        }
    }
}

/// No connection could be had in time: the server is down or unreachable,
/// or every connection of the pool is busy.
#[derive(Debug, thiserror::Error)]
#[error(
    "no PostgreSQL connection within the acquire timeout: the server is down or unreachable, \
     or every pooled connection is busy"
)]
struct NoConnection(#[source] sqlx::Error);

/// Maps a database error onto the store's error type.
pub(crate) fn store_error(error: sqlx::Error) -> StoreError {
    if matches!(error, sqlx::Error::PoolTimedOut) {
        StoreError::Unavailable(Box::new(NoConnection(error)))
    } else if is_unavailable(&error) {
        StoreError::Unavailable(Box::new(error))
    } else {
        StoreError::Backend(Box::new(error))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_connections_are_unavailable() {
        let io = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
        assert!(store_error(io).is_transient());
        assert!(store_error(sqlx::Error::PoolTimedOut).is_transient());
        assert!(!store_error(sqlx::Error::RowNotFound).is_transient());
    }
}
