//! # annals-postgres
//!
//! The PostgreSQL [`EventStore`](annals::EventStore) for annals: streams with
//! optimistic concurrency, idempotent appends, a gap-free global log,
//! subscriptions woken by `LISTEN/NOTIFY`, snapshots and checkpoints.
//!
//! ```no_run
//! use annals::{EventFilter, EventStore, ExpectedVersion, Metadata, NewEvent, Position};
//! use annals_postgres::PgEventStore;
//! use futures::StreamExt;
//! use serde_json::json;
//! use uuid::Uuid;
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let url = std::env::var("DATABASE_URL")?;
//! let store = PgEventStore::connect(&url).await?;
//! store.migrate().await?; // idempotent
//!
//! let event = NewEvent {
//!     event_id: Uuid::now_v7(),
//!     event_type: "FlightScheduled".into(),
//!     schema_version: 1,
//!     payload: json!({ "flight_number": "AN123" }),
//!     metadata: Metadata::default().actor("ops"),
//! };
//! let appended = store
//!     .append("flight-1", ExpectedVersion::NoStream, vec![event])
//!     .await?;
//! assert_eq!(appended.stream_version, 1);
//!
//! // Catch up from the start, then follow live appends.
//! let mut events = store.subscribe(Position::START, EventFilter::all());
//! while let Some(event) = events.next().await {
//!     let event = event?;
//!     println!("{} {} v{}", event.position, event.event_type, event.stream_version);
//!     if event.position >= appended.position {
//!         break;
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! ## Schema
//!
//! [`PgEventStore::migrate`] applies the embedded migrations ([`MIGRATOR`],
//! `migrations/` in the repository) to the first schema of the connection's
//! `search_path`: `annals_events` (the log), `annals_streams` (each stream's
//! version), `annals_snapshots`, `annals_checkpoints`, `annals_dead_letters`,
//! `annals_processed_commands`, and the SQL function `annals_append`.
//!
//! ## Appends: one round trip
//!
//! An append is one call of `annals_append` with the batch as arrays
//! (`uuid[]`, `text[]`, `int[]`, `jsonb[]`), sent in autocommit mode, so the
//! statement is its own transaction. The function
//!
//! 1. returns the first outcome when the command id was already recorded;
//! 2. checks the expected version by moving the stream row in one write:
//!    `UPDATE annals_streams SET version = version + n WHERE stream_id = $1
//!    AND version = $expected` (an upsert for `Any`, an insert for
//!    `NoStream`). That write locks the row until commit, so appends to one
//!    stream are serialised, and it fails (no row) on a conflict, which is
//!    then reported with the stream's actual version, unless the events'
//!    ids are all already stored in the stream (an idempotent retry:
//!    `replayed`);
//! 3. inserts the batch with `INSERT ... SELECT FROM unnest(...) WITH
//!    ORDINALITY`, records the command id, and calls `pg_notify`.
//!
//! A concurrent append of the same event ids or command id can still make the
//! insert hit a unique index; the whole statement then rolls back and the
//! store calls the function once more, looking the ids up first, which turns
//! the race into `replayed` or [`DuplicateEvent`](annals::StoreError::DuplicateEvent).
//! [`PgEventStore::append_in_transaction`] runs the same function inside the
//! caller's transaction (an outbox, or any write that must commit with the
//! events).
//!
//! ## The gap-free global log
//!
//! Identity values are taken before commit, so transactions commit out of
//! `global_position` order: a reader that orders by `global_position` alone
//! and remembers the last one it saw can pass an event that commits later,
//! and never see it. This store orders the log by the pair
//! `(transaction_id, global_position)` (the [`Position`](annals::Position)
//! token is that pair) and a reader only returns rows with
//! `transaction_id < pg_snapshot_xmin(pg_current_snapshot())`: older than
//! every transaction still running. Such rows are committed for good, and
//! every row written later is labelled at or above that bound, so nothing
//! can ever appear behind a position a reader has returned.
//!
//! `transaction_id` is the writing transaction's `xid8`, except when that
//! transaction took its id before an earlier append to the same stream
//! committed (it wrote something else first, or raced for the stream row):
//! then the events take the stream's previous label instead
//! (`greatest(pg_current_xact_id(), annals_streams.transaction_id)`), so the
//! log order always agrees with each stream's version order. Either label is
//! at least the writer's own id, which is what the bound needs.
//!
//! **The trade-off:** a transaction that stays open holds every reader of the
//! global log back, once it has written anything: events committed after it
//! started are stored, but not readable until it ends (`pg_snapshot_xmin` is
//! server-wide, so this includes transactions in other databases of the same
//! server). Keep transactions short, and watch [`PgEventStore::log_lag`],
//! which reports the bound, the number of held-back events and the oldest
//! running transaction (with its pid).
//!
//! ## Subscriptions
//!
//! [`EventStore::subscribe`](annals::EventStore::subscribe) catches up with
//! the log and then follows it. Appends notify in their own transaction; one
//! listener connection per store wakes every subscription, reconnects after a
//! lost connection, and the poll interval
//! ([`PgStoreOptions::poll_interval`]) covers notifications lost meanwhile.
//!
//! ## Connections and failures
//!
//! Settings come from the URL (`DATABASE_URL`) plus [`PgStoreOptions`]. When
//! the server cannot be reached an operation fails with
//! [`StoreError::Unavailable`](annals::StoreError::Unavailable) (transient,
//! nothing half-written: every append is one transaction); the store works
//! again once the server is back. An operation whose connection was lost
//! (for example dropped by a server restart) is tried once more on a fresh
//! connection; for appends that is safe because they are idempotent by event
//! id.
#![warn(missing_docs)]

mod append;
mod checkpoint;
mod error;
pub mod notify;
mod projection;
mod read;
mod snapshot;
mod store;
mod subscribe;
mod xid;

pub use error::PgError;
pub use notify::NotifyMode;
pub use read::{LogLag, RunningTransaction};
pub use store::{
    DEFAULT_APPLICATION_NAME, DEFAULT_CHANNEL, DEFAULT_LISTENER_APPLICATION_NAME, MIGRATOR,
    PgEventStore, PgStoreOptions,
};
