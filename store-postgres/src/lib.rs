//! # annals-postgres
//!
//! The PostgreSQL [`EventStore`](annals::EventStore) for annals: streams with
//! optimistic concurrency, idempotent appends, a gap-free global log,
//! subscriptions woken by `LISTEN/NOTIFY`, snapshots and checkpoints, and
//! dynamic consistency boundaries: queries by event type and tag and
//! appends conditional on them.
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
//!     payload: json!({ "flight_number": "AN123" }).into(),
//!     metadata: Metadata::default().actor("ops"),
//!     tags: vec!["flight_number:AN123".into()],
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
//! ## Where things live
//!
//! The crate mirrors core: the implementation of each trait method calls the
//! function of the same name, in the module named as core's.
//!
//! | `annals` (core) | `annals-postgres` |
//! |---|---|
//! | `store`: [`EventStore`](annals::EventStore) | `store.rs`: `impl EventStore for PgEventStore`, delegating by name to the modules below |
//! | [`EventStore::append_with`](annals::EventStore::append_with) | `append/`: `mod.rs` (the entry point: group commit or alone, retries), `statement.rs` (the statements of one append, the batch, the decoding of answers), `group.rs` (the group commit queue), `in_transaction.rs` ([`PgEventStore::append_in_transaction`]) |
//! | [`EventStore::append_if`](annals::EventStore::append_if) | `append/`: `conditional.rs` (the call that locks the checked tags, or waits for older transactions, then checks and writes), `conditional_group.rs` (concurrent ones share it); `mod.rs` sends them through the group or alone |
//! | `read_stream`, `read_all`, `head`, `stream_version`, `command_outcome` | `read.rs` (and, for what holds readers back, `log_lag.rs`: [`PgEventStore::log_lag`]) |
//! | `query`: [`Query`](annals::Query), [`EventStore::read_query`](annals::EventStore::read_query) | `query.rs`: `read_query`, and a query's items as the arrays SQL takes |
//! | `subscription`: [`catch_up_then_live`](annals::subscription::catch_up_then_live) | `subscription.rs`: `subscribe`, and the `LISTEN` task that wakes subscriptions |
//! | `save_snapshot`, `load_snapshot` | `snapshot.rs` |
//! | `save_checkpoint`, `load_checkpoint` | `checkpoint.rs` |
//! | `projection`: [`ProjectionStore`](annals::projection::ProjectionStore) | `projection/`: `mod.rs` (`impl ProjectionStore`, delegating by name), `dead_letters.rs`, `claim.rs`, `lease.rs`, `deadlines.rs` |
//! | `position`: [`Position`](annals::Position) | `xid.rs`: the `xid8` column type and the position pair's parameters |
//! | `memory`: [`MemoryStore`](annals::memory::MemoryStore) | this crate as a whole: the other implementation of the same traits |
//!
//! And what only PostgreSQL needs:
//!
//! | Module | What it holds |
//! |---|---|
//! | `handle.rs` | [`PgEventStore`] and the state its clones share |
//! | `options.rs` | [`PgStoreOptions`], the defaults and the constructors |
//! | `connections.rs` | the connections appends and log reads keep between operations |
//! | `notify.rs` | [`NotifyMode`] and the after-commit notifier |
//! | `error.rs` | [`PgError`], the mapping of database errors onto [`StoreError`](annals::StoreError), retries after a lost connection |
//! | `migrate.rs` | [`migrations`] and how [`PgEventStore::migrate`] applies them |
//! | `sql/` | every statement of more than a line, named for the function that runs it (`append_*.sql` are the parts of the append hot path) |
//!
//! Dependencies run one way. `store.rs` and `projection/mod.rs` call the
//! operation modules, and nothing calls them; the operations build on
//! `handle.rs`, which needs only the leaves (`connections.rs`, `notify.rs`,
//! `error.rs`, `migrate.rs`) and the types of the group commit queues. In
//! `append/`, the group commit (`group.rs`) and the entry point (`mod.rs`)
//! both build on `statement.rs`, which uses neither; the conditional append
//! (`conditional.rs`) builds on `statement.rs` (the batch), `query.rs` (a
//! query's items as arrays) and `log_lag.rs` (the oldest transaction), and
//! its group commit (`conditional_group.rs`) on it.
//!
//! ## Schema
//!
//! [`PgEventStore::migrate`] applies the embedded migrations ([`migrations`],
//! `migrations/` in the repository, recorded in `annals_migrations`, not in
//! sqlx's `_sqlx_migrations`, which stays the application's) to the first schema of the connection's
//! `search_path`: `annals_events` (the log, each event with its `tags`, a
//! `text[]` with a GIN index), `annals_streams` (each stream's
//! version and last label), `annals_snapshots`, `annals_checkpoints`,
//! `annals_dead_letters`, `annals_processed_commands`, `annals_deadlines`,
//! and the SQL function `annals_append`.
//!
//! ## Appends: one statement, one round trip
//!
//! (`append/`.) An append sends the batch as arrays (`uuid[]`, `text[]`,
//! `int[]`, `jsonb[]`; each event's tags as a JSON array) in **one
//! statement** of data-modifying CTEs, in
//! autocommit mode, so that statement is its own transaction (no
//! `BEGIN`/`COMMIT` round trips):
//!
//! 1. `stream`: check the expectation by moving the stream row in one write:
//!    `UPDATE annals_streams SET version = version + n WHERE stream_id = $1
//!    AND version = $expected` for `Exact`, an upsert for `Any`, an insert
//!    for `NoStream`, each guarded by "this command id is not recorded".
//!    The write locks the row until commit, so appends to one stream are
//!    serialised; a failed check yields no row;
//! 2. `inserted`: `INSERT INTO annals_events ... SELECT FROM stream,
//!    unnest($ids, $types, ...) WITH ORDINALITY ORDER BY ord`: nothing when
//!    `stream` yielded no row;
//! 3. `command`: record the command id with the outcome (when there is one);
//! 4. the result row, and `pg_notify` (see [`NotifyMode`]).
//!
//! When that statement writes nothing (a conflict, a recorded command, an
//! idempotent retry) the store calls the SQL function `annals_append`, which
//! says what happened: the first outcome (`repeated`), the stream's actual
//! version ([`Conflict`](annals::StoreError::Conflict)), or where a
//! duplicate id lives ([`DuplicateEvent`](annals::StoreError::DuplicateEvent)).
//! A concurrent append of the same ids or command id can make the insert hit
//! a unique index; the statement then rolls back as a whole, and the store
//! calls `annals_append` with the ids looked up first, which turns the race
//! into `duplicate` or `DuplicateEvent`. The common case is one round trip
//! however many events the batch has; only these rarer outcomes take a
//! second.
//!
//! [`PgEventStore::append_in_transaction`] runs `annals_append` inside the
//! caller's transaction (an outbox, or any write that must commit with the
//! events).
//!
//! ## Group commit
//!
//! (`append/group.rs`.) Appends that arrive while earlier ones are being
//! written are written together: one statement of the same shape over all
//! of them (`sql/append_group.sql`), one transaction, one WAL flush, one
//! notification. Each append in a group is still checked on its own (a
//! failed expectation or a recorded command writes nothing for that append
//! and the others commit), appends to one stream never share a group, and a
//! statement that fails as a whole (a racing duplicate id) sends its appends
//! back to run alone. This matters because of the notification: PostgreSQL
//! serialises the commits of notifying transactions behind one lock held
//! across their WAL flush, so appends that each notify would each wait for
//! a flush of their own. With grouping, single-event appends from 8 writers
//! reach the throughput of plain `INSERT`s (see `BENCHMARKS.md`).
//! [`PgStoreOptions::group_commit`] turns it off.
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
//! committed (it wrote something else first, or took its id while it waited
//! for the stream row): then the events take the stream's previous label
//! (`greatest(pg_current_xact_id(), annals_streams.transaction_id)`), so the
//! log order always agrees with each stream's version order. Either label is
//! at least the writer's own id, which is all the bound needs. (Ordering by
//! the bare transaction id would let a stream's version 6 precede its
//! version 5 in the log; the stress test catches that.)
//!
//! **The trade-off:** a transaction that stays open holds every reader of the
//! global log back, once it has written anything: events committed after it
//! started are stored, but not readable until it ends (`pg_snapshot_xmin` is
//! server-wide, so this includes transactions in other databases of the same
//! server). Keep transactions short, and watch [`PgEventStore::log_lag`],
//! which reports the bound, the number of held-back events and the oldest
//! running transaction (with its pid). A notification that arrives while the
//! log is held back finds nothing readable yet; subscriptions then pick the
//! events up at their next poll, so the poll interval bounds that delay.
//!
//! ## Tags and queries
//!
//! (`query.rs`.) Events carry tags ([`NewEvent::tags`](annals::NewEvent::tags)),
//! stored in `annals_events.tags`. A [`Query`](annals::Query) is a list of
//! items, OR'd; an item matches the events of one of its types (any, when it
//! names none) that carry all its tags. [`EventStore::read_query`](annals::EventStore::read_query)
//! sends the items as arrays and looks each one up through the index that
//! suits its shape: the GIN index on `tags` (`tags @> item tags`; only tagged
//! events are in it) for a tagged item, `annals_events_type_idx` for an item
//! of types only, the primary key for an empty item (every event). It merges
//! the first `limit` events of each item in log order, and reads only below
//! `pg_snapshot_xmin`, as `read_all` does: what it returned, no event will
//! ever precede. The statements fence their per-item scans so that a `LIMIT`
//! cannot lure the planner into walking the log in order and filtering (a
//! rare tag or type would be searched for through the whole log).
//!
//! ## Conditional appends
//!
//! (`append/conditional.rs`, `migrations/0007_tag_locks.sql`.)
//! [`EventStore::append_if`](annals::EventStore::append_if) appends unless an
//! event matching a query was recorded after a position, atomically against
//! every writer, without SERIALIZABLE. `annals_tags` holds a row per tag:
//! every append locks the rows of its events' tags (in tag order, before its
//! stream's row) and labels its events at least as high as the label a
//! conditional append left on them.
//!
//! **Conditions on tags lock them.** When every item of the condition names
//! a tag (a rule about an entity: a username, a flight number on a day, a
//! seat), one call in autocommit locks the rows of the tags it checks and of
//! its events' tags, then, in a statement whose snapshot is taken after the
//! locks were granted, answers idempotent retries first (a recorded command
//! id, or the event ids stored in order in this stream: `repeated`), checks
//! for an event matching the condition after its position
//! ([`StoreError::ConditionFailed`](annals::StoreError::ConditionFailed)
//! names the first, nothing is written), writes, and leaves its label on the
//! checked tags' rows. An event matching the condition carries one of its
//! tags; its writer locked that tag's row either before (this call waited
//! for it and sees its event) or after this call committed (then it read
//! this call's label: its event follows in the log). Appends that share no
//! tag and no stream never wait for each other; appends whose events carry
//! one tag take turns on its row, as appends to one stream do.
//!
//! **Conditions with an item without a tag wait.** An item of types only
//! (or `Query::all()`) is about events that lock nothing in common: such an
//! append runs in a transaction whose events are labelled with its own id
//! `X`, and checks only once every transaction with a smaller id has ended
//! (it polls `pg_snapshot_xmin`, woken when an append of the store ends):
//! then its snapshot sees every event that can precede it, and nothing
//! labelled below `X` can be written later. It holds nothing while it waits,
//! and waits only for older ids, so waits never form a circle; a stream or
//! tag labelled above `X` meanwhile (a younger append) makes it run again in
//! a new transaction.
//!
//! **Group commit.** Concurrent conditional appends share a call
//! (`append/conditional_group.rs`, two writers): one statement checks every
//! condition against the log and writes the appends whose conditions hold.
//! The appends of a group are in the log in group order; an append whose
//! condition matches the events of an earlier append of its group is held
//! back and fails at that event's position once it is written.
//! [`PgStoreOptions::group_commit`] turns it off.
//!
//! **The trade-offs.** A transaction that appended an event with a tag (an
//! append inside the caller's transaction) holds conditional appends about
//! that tag back until it ends; a transaction that stays open anywhere on
//! the server holds conditional appends with an untagged item back, as it
//! holds readers back ([`PgEventStore::log_lag`] shows it). After
//! [`PgStoreOptions::append_if_timeout`] (10 s by default) the append fails
//! with [`StoreError::Unavailable`](annals::StoreError::Unavailable) holding
//! an [`AppendIfTimeout`] that says which. And a conditional append on tags
//! may commit while an older transaction is still running: its events become
//! readable when that one ends, as an ordinary append's do
//! ([`Decider`](annals::decision::Decider) waits for that before it returns).
//!
//! ## Subscriptions
//!
//! (`subscription.rs`.) [`EventStore::subscribe`](annals::EventStore::subscribe)
//! catches up with the log and then follows it. Appends notify (in their
//! transaction, or right after it: [`NotifyMode`]); one listener connection
//! per store wakes every subscription, reconnects after a lost connection,
//! and the poll interval ([`PgStoreOptions::poll_interval`]) covers
//! notifications lost meanwhile.
//!
//! ## Connections and failures
//!
//! (`options.rs`, `connections.rs`, `error.rs`.) Settings come from the URL
//! (`DATABASE_URL`) plus [`PgStoreOptions`] (pool size, acquire timeout,
//! application name). Appends and log reads keep their connections between
//! operations in a small cache (at most half the pool, returned to the pool
//! after 100 ms idle or when the pool closes), which saves the round trip
//! sqlx's pool spends checking every returned connection.
//!
//! When the server cannot be reached an operation fails with
//! [`StoreError::Unavailable`](annals::StoreError::Unavailable) (transient;
//! every append is one transaction, so nothing is half-written) and the
//! store works again once the server is back. An operation whose connection
//! was lost (a restart, `pg_terminate_backend`) runs again on another
//! connection; for appends that is safe because they are idempotent by event
//! id (a retry of an append that did commit answers `duplicate`). If every
//! attempt fails after the statement was sent, the append's fate is unknown
//! to the caller: retrying it with the same events settles it.
#![warn(missing_docs)]

mod append;
mod checkpoint;
mod connections;
mod error;
mod handle;
mod log_lag;
mod migrate;
pub mod notify;
mod options;
mod projection;
mod query;
mod read;
mod snapshot;
mod store;
mod subscription;
mod xid;

pub use append::conditional::AppendIfTimeout;
pub use error::PgError;
pub use handle::PgEventStore;
pub use log_lag::{LogLag, RunningTransaction};
pub use migrate::{apply_migrations, migrations};
pub use notify::NotifyMode;
pub use options::{
    DEFAULT_APPEND_IF_TIMEOUT, DEFAULT_APPLICATION_NAME, DEFAULT_CHANNEL,
    DEFAULT_LISTENER_APPLICATION_NAME, PgStoreOptions,
};
/// The `sqlx` crate this one is built on (its pool, connect options and
/// transactions are part of this crate's API).
pub use sqlx;
