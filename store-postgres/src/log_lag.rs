//! What holds readers of the global log back: [`LogLag`], from
//! [`PgEventStore::log_lag`].

use std::time::Duration;

use annals::StoreError;
use chrono::{DateTime, Utc};
use sqlx::Row;

use crate::error::{retry_lost, store_error};
use crate::handle::PgEventStore;
use crate::xid::Xid8;

const LOG_LAG: &str = include_str!("sql/log_lag.sql");
const OLDEST_TRANSACTION: &str = include_str!("sql/oldest_transaction.sql");

/// What keeps readers of the global log from the newest events.
///
/// Readers only pass events whose transaction is older than every
/// transaction still running on the server (see the [crate
/// documentation](crate)). A transaction that stays open (in any database of
/// the server, once it has written anything) holds every reader back: events
/// committed after it started are stored but not yet readable. This is the
/// price of never skipping an event; watch it, and keep transactions short.
#[derive(Debug, Clone, PartialEq)]
pub struct LogLag {
    /// Transactions from this id on are still running: readers stop before
    /// the first event labelled with it or later.
    pub horizon: u64,
    /// Committed events readers cannot see yet because an older transaction
    /// is still running.
    pub held_back_events: u64,
    /// When the oldest of those events was recorded.
    pub held_back_since: Option<DateTime<Utc>>,
    /// The oldest running transaction that has written something, if any
    /// (possibly in another database of the same server).
    pub oldest_transaction: Option<RunningTransaction>,
}

impl LogLag {
    /// How long the oldest held-back event has waited (zero when none).
    pub fn held_back_for(&self, now: DateTime<Utc>) -> Duration {
        self.held_back_since
            .and_then(|since| (now - since).to_std().ok())
            .unwrap_or_default()
    }
}

/// A running transaction, as `pg_stat_activity` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct RunningTransaction {
    /// The server process id (for `pg_terminate_backend`).
    pub pid: i32,
    /// The client's `application_name`.
    pub application_name: Option<String>,
    /// The database it runs in.
    pub database: Option<String>,
    /// `active`, `idle in transaction`, ...
    pub state: Option<String>,
    /// How long the transaction has been open.
    pub age: Duration,
}

impl std::fmt::Display for RunningTransaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pid {}", self.pid)?;
        if let Some(name) = self.application_name.as_deref().filter(|n| !n.is_empty()) {
            write!(f, " ({name:?})")?;
        }
        if let Some(database) = &self.database {
            write!(f, " in database {database:?}")?;
        }
        if let Some(state) = &self.state {
            write!(f, ", {state}")?;
        }
        write!(f, ", open for {:.1?}", self.age)
    }
}

/// The oldest running transaction with an id, other than the connection's
/// own: what holds `pg_snapshot_xmin` back (`None` when only prepared
/// transactions do, or nothing).
pub(crate) async fn oldest_transaction(
    conn: &mut sqlx::PgConnection,
) -> Result<Option<RunningTransaction>, sqlx::Error> {
    let Some(row) = sqlx::query(OLDEST_TRANSACTION).fetch_optional(conn).await? else {
        return Ok(None);
    };
    Ok(Some(RunningTransaction {
        pid: row.try_get(0)?,
        application_name: row.try_get(1)?,
        database: row.try_get(2)?,
        state: row.try_get(3)?,
        age: age(row.try_get(4)?),
    }))
}

/// A transaction's age from `pg_stat_activity`, in seconds.
fn age(seconds: Option<f64>) -> Duration {
    seconds
        .filter(|s| s.is_finite() && *s > 0.0)
        .map(Duration::from_secs_f64)
        .unwrap_or_default()
}

impl PgEventStore {
    /// What currently holds readers of the global log back: see [`LogLag`].
    ///
    /// Counting the held-back events reads the rows above the horizon, which
    /// are few unless a transaction has been open for long.
    pub async fn log_lag(&self) -> Result<LogLag, StoreError> {
        let row = retry_lost(|| sqlx::query(LOG_LAG).fetch_one(&self.inner.pool))
            .await
            .map_err(store_error)?;
        let lag = || -> Result<LogLag, sqlx::Error> {
            let horizon: Xid8 = row.try_get(0)?;
            let events: i64 = row.try_get(1)?;
            let pid: Option<i32> = row.try_get(3)?;
            let seconds: Option<f64> = row.try_get(7)?;
            let oldest_transaction = match pid {
                Some(pid) => Some(RunningTransaction {
                    pid,
                    application_name: row.try_get(4)?,
                    database: row.try_get(5)?,
                    state: row.try_get(6)?,
                    age: age(seconds),
                }),
                None => None,
            };
            Ok(LogLag {
                horizon: horizon.0,
                held_back_events: u64::try_from(events).unwrap_or(0),
                held_back_since: row.try_get(2)?,
                oldest_transaction,
            })
        };
        lag().map_err(store_error)
    }
}
