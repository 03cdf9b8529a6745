//! The annals schema: embedded migrations, applied in order and recorded in
//! a table of annals' own (`annals_migrations`).
//!
//! sqlx's migrator records versions in `_sqlx_migrations`, which an
//! application's own `sqlx::migrate!` uses too: in one schema, the two sets
//! of versions would meet (an application's migration 1 would be taken for
//! annals' migration 1). So annals applies its migrations itself, under an
//! advisory lock, each in a transaction with its record; crates that keep
//! tables of their own in the same database do the same with
//! [`apply_migrations`] and a migrations table of their own.

use sqlx::migrate::{MigrateError, Migration, Migrator};
use sqlx::{Connection, PgPool};

use crate::error::PgError;

/// The migrations of the annals schema (`migrations/` at the repository
/// root), embedded at build time.
static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// annals' own migrations table.
const TABLE: &str = "annals_migrations";
const CREATE: &str = include_str!("sql/create_migrations.sql");
const ADOPT: &str = include_str!("sql/adopt_migrations.sql");

/// Serialises concurrent migrations of one schema and table (the key is per
/// schema and table; `$1` the table).
const LOCK: &str =
    "SELECT pg_advisory_lock(hashtextextended(coalesce(current_schema(), '') || '/' || $1, 0))";
const UNLOCK: &str =
    "SELECT pg_advisory_unlock(hashtextextended(coalesce(current_schema(), '') || '/' || $1, 0))";

/// The embedded migrations, oldest first: for tools that manage schemas
/// themselves. [`PgEventStore::migrate`](crate::PgEventStore::migrate)
/// applies them.
pub fn migrations() -> impl Iterator<Item = &'static Migration> {
    MIGRATOR.iter()
}

/// Applies the migrations not yet recorded in `annals_migrations`; checks
/// that the recorded ones are unchanged.
pub(crate) async fn migrate(pool: &PgPool) -> Result<(), PgError> {
    locked(pool, &MIGRATOR, TABLE, true)
        .await
        .map_err(PgError::Migrate)
}

/// Applies the migrations of `migrator` not yet recorded in `table` (a
/// migrations table of the caller's own, created when missing, with
/// `annals_migrations`' columns), in order, each in a transaction with its
/// record, under an advisory lock per schema and table; checks that the
/// recorded ones are unchanged. For crates that keep tables beside the
/// annals schema (the RabbitMQ inbox), so that their versions never meet
/// annals' or an application's.
///
/// `table` is an identifier the caller owns (written into the statements
/// as it is), not input.
pub async fn apply_migrations(
    pool: &PgPool,
    migrator: &Migrator,
    table: &str,
) -> Result<(), MigrateError> {
    locked(pool, migrator, table, false).await
}

async fn locked(
    pool: &PgPool,
    migrator: &Migrator,
    table: &str,
    adopt: bool,
) -> Result<(), MigrateError> {
    let mut connection = pool.acquire().await.map_err(MigrateError::Execute)?;
    sqlx::query(LOCK)
        .bind(table)
        .execute(&mut *connection)
        .await
        .map_err(MigrateError::Execute)?;
    let outcome = apply(&mut connection, migrator, table, adopt).await;
    // The lock is the session's: release it before the connection goes
    // back to the pool, whatever happened.
    let unlocked = sqlx::query(UNLOCK)
        .bind(table)
        .execute(&mut *connection)
        .await;
    outcome?;
    unlocked.map_err(MigrateError::Execute)?;
    Ok(())
}

async fn apply(
    connection: &mut sqlx::PgConnection,
    migrator: &Migrator,
    table: &str,
    adopt: bool,
) -> Result<(), MigrateError> {
    let create = CREATE.replace(TABLE, table);
    sqlx::raw_sql(&create)
        .execute(&mut *connection)
        .await
        .map_err(MigrateError::Execute)?;
    if adopt {
        adopt_sqlx_records(connection).await?;
    }
    let applied: Vec<(i64, Vec<u8>)> =
        sqlx::query_as(&format!("SELECT version, checksum FROM {table}"))
            .fetch_all(&mut *connection)
            .await
            .map_err(MigrateError::Execute)?;
    for migration in migrator.iter() {
        match applied
            .iter()
            .find(|(version, _)| *version == migration.version)
        {
            Some((_, checksum)) if *checksum == *migration.checksum => {}
            Some(_) => return Err(MigrateError::VersionMismatch(migration.version)),
            None => run(connection, migration, table).await?,
        }
    }
    Ok(())
}

/// annals 0.1 recorded its versions in `_sqlx_migrations`: carried over once.
async fn adopt_sqlx_records(connection: &mut sqlx::PgConnection) -> Result<(), MigrateError> {
    let sqlx_table: Option<String> =
        sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations')::text")
            .fetch_one(&mut *connection)
            .await
            .map_err(MigrateError::Execute)?;
    if sqlx_table.is_some() {
        let versions: Vec<i64> = migrations().map(|m| m.version).collect();
        let checksums: Vec<Vec<u8>> = migrations().map(|m| m.checksum.to_vec()).collect();
        sqlx::query(ADOPT)
            .bind(&versions)
            .bind(&checksums)
            .execute(&mut *connection)
            .await
            .map_err(MigrateError::Execute)?;
    }
    Ok(())
}

async fn run(
    connection: &mut sqlx::PgConnection,
    migration: &Migration,
    table: &str,
) -> Result<(), MigrateError> {
    let failed = |error| MigrateError::ExecuteMigration(error, migration.version);
    let mut transaction = connection.begin().await.map_err(failed)?;
    sqlx::raw_sql(&migration.sql)
        .execute(&mut *transaction)
        .await
        .map_err(failed)?;
    sqlx::query(&format!(
        "INSERT INTO {table} (version, description, checksum) VALUES ($1, $2, $3)"
    ))
    .bind(migration.version)
    .bind(&*migration.description)
    .bind(&*migration.checksum)
    .execute(&mut *transaction)
    .await
    .map_err(failed)?;
    transaction.commit().await.map_err(failed)?;
    tracing::info!(table, version = migration.version, description = %migration.description, "schema migrated");
    Ok(())
}
