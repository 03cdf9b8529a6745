//! The annals schema: embedded migrations, applied in order and recorded in
//! a table of annals' own (`annals_migrations`).
//!
//! sqlx's migrator records versions in `_sqlx_migrations`, which an
//! application's own `sqlx::migrate!` uses too: in one schema, the two sets
//! of versions would meet (an application's migration 1 would be taken for
//! annals' migration 1). So annals applies its migrations itself, under an
//! advisory lock, each in a transaction with its record.

use sqlx::migrate::{MigrateError, Migration, Migrator};
use sqlx::{Connection, PgPool};

use crate::error::PgError;

/// The migrations of the annals schema (`migrations/` at the repository
/// root), embedded at build time.
static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

const CREATE: &str = include_str!("sql/create_migrations.sql");
const ADOPT: &str = include_str!("sql/adopt_migrations.sql");

/// Serialises concurrent migrations of one schema (the key is per schema).
const LOCK: &str = "SELECT pg_advisory_lock(hashtextextended(coalesce(current_schema(), '') || '/annals_migrations', 0))";
const UNLOCK: &str = "SELECT pg_advisory_unlock(hashtextextended(coalesce(current_schema(), '') || '/annals_migrations', 0))";

/// The embedded migrations, oldest first: for tools that manage schemas
/// themselves. [`PgEventStore::migrate`](crate::PgEventStore::migrate)
/// applies them.
pub fn migrations() -> impl Iterator<Item = &'static Migration> {
    MIGRATOR.iter()
}

/// Applies the migrations not yet recorded in `annals_migrations`; checks
/// that the recorded ones are unchanged.
pub(crate) async fn migrate(pool: &PgPool) -> Result<(), PgError> {
    let mut connection = pool.acquire().await.map_err(execute)?;
    sqlx::query(LOCK)
        .execute(&mut *connection)
        .await
        .map_err(execute)?;
    let outcome = apply(&mut connection).await;
    // The lock is the session's: release it before the connection goes
    // back to the pool, whatever happened.
    let unlocked = sqlx::query(UNLOCK).execute(&mut *connection).await;
    outcome?;
    unlocked.map_err(execute)?;
    Ok(())
}

async fn apply(connection: &mut sqlx::PgConnection) -> Result<(), PgError> {
    sqlx::raw_sql(CREATE)
        .execute(&mut *connection)
        .await
        .map_err(execute)?;
    let sqlx_table: Option<String> =
        sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations')::text")
            .fetch_one(&mut *connection)
            .await
            .map_err(execute)?;
    if sqlx_table.is_some() {
        let versions: Vec<i64> = migrations().map(|m| m.version).collect();
        let checksums: Vec<Vec<u8>> = migrations().map(|m| m.checksum.to_vec()).collect();
        sqlx::query(ADOPT)
            .bind(&versions)
            .bind(&checksums)
            .execute(&mut *connection)
            .await
            .map_err(execute)?;
    }
    let applied: Vec<(i64, Vec<u8>)> =
        sqlx::query_as("SELECT version, checksum FROM annals_migrations")
            .fetch_all(&mut *connection)
            .await
            .map_err(execute)?;
    for migration in migrations() {
        match applied
            .iter()
            .find(|(version, _)| *version == migration.version)
        {
            Some((_, checksum)) if *checksum == *migration.checksum => {}
            Some(_) => {
                return Err(PgError::Migrate(MigrateError::VersionMismatch(
                    migration.version,
                )));
            }
            None => run(connection, migration).await?,
        }
    }
    Ok(())
}

async fn run(connection: &mut sqlx::PgConnection, migration: &Migration) -> Result<(), PgError> {
    let failed = |error| PgError::Migrate(MigrateError::ExecuteMigration(error, migration.version));
    let mut transaction = connection.begin().await.map_err(failed)?;
    sqlx::raw_sql(&migration.sql)
        .execute(&mut *transaction)
        .await
        .map_err(failed)?;
    sqlx::query(
        "INSERT INTO annals_migrations (version, description, checksum) VALUES ($1, $2, $3)",
    )
    .bind(migration.version)
    .bind(&*migration.description)
    .bind(&*migration.checksum)
    .execute(&mut *transaction)
    .await
    .map_err(failed)?;
    transaction.commit().await.map_err(failed)?;
    tracing::info!(version = migration.version, description = %migration.description, "annals schema migrated");
    Ok(())
}

fn execute(error: sqlx::Error) -> PgError {
    PgError::Migrate(MigrateError::Execute(error))
}
