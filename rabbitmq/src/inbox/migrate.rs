//! The inbox's schema: this crate's own migrations (`rabbitmq/migrations/`),
//! applied in order and recorded in `annals_inbox_migrations`.
//!
//! Kept apart from annals' `annals_migrations` and from an application's
//! `_sqlx_migrations`, so that no two sets of versions meet in one schema.

use sqlx::migrate::{MigrateError, Migration, Migrator};
use sqlx::{Connection, PgConnection, PgPool};

use super::InboxError;

/// The migrations, embedded at build time.
static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

const CREATE: &str = "CREATE TABLE IF NOT EXISTS annals_inbox_migrations (
    version     bigint      PRIMARY KEY,
    description text        NOT NULL,
    checksum    bytea       NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)";

/// Serialises concurrent migrations of one schema (the key is per schema).
const LOCK: &str = "SELECT pg_advisory_lock(hashtextextended(coalesce(current_schema(), '') || '/annals_inbox_migrations', 0))";
const UNLOCK: &str = "SELECT pg_advisory_unlock(hashtextextended(coalesce(current_schema(), '') || '/annals_inbox_migrations', 0))";

pub(super) async fn migrate(pool: &PgPool) -> Result<(), InboxError> {
    let mut connection = pool.acquire().await.map_err(InboxError::Database)?;
    sqlx::query(LOCK)
        .execute(&mut *connection)
        .await
        .map_err(InboxError::Database)?;
    let outcome = apply(&mut connection).await;
    // The lock is the session's: release it before the connection goes back
    // to the pool, whatever happened.
    let unlocked = sqlx::query(UNLOCK).execute(&mut *connection).await;
    outcome?;
    unlocked.map_err(InboxError::Database)?;
    Ok(())
}

async fn apply(connection: &mut PgConnection) -> Result<(), InboxError> {
    sqlx::raw_sql(CREATE)
        .execute(&mut *connection)
        .await
        .map_err(InboxError::Database)?;
    let applied: Vec<(i64, Vec<u8>)> =
        sqlx::query_as("SELECT version, checksum FROM annals_inbox_migrations")
            .fetch_all(&mut *connection)
            .await
            .map_err(InboxError::Database)?;
    for migration in MIGRATOR.iter() {
        match applied
            .iter()
            .find(|(version, _)| *version == migration.version)
        {
            Some((_, checksum)) if *checksum == *migration.checksum => {}
            Some(_) => {
                return Err(InboxError::Migrate(MigrateError::VersionMismatch(
                    migration.version,
                )));
            }
            None => run(connection, migration).await?,
        }
    }
    Ok(())
}

async fn run(connection: &mut PgConnection, migration: &Migration) -> Result<(), InboxError> {
    let failed =
        |error| InboxError::Migrate(MigrateError::ExecuteMigration(error, migration.version));
    let mut transaction = connection.begin().await.map_err(failed)?;
    sqlx::raw_sql(&migration.sql)
        .execute(&mut *transaction)
        .await
        .map_err(failed)?;
    sqlx::query(
        "INSERT INTO annals_inbox_migrations (version, description, checksum) VALUES ($1, $2, $3)",
    )
    .bind(migration.version)
    .bind(&*migration.description)
    .bind(&*migration.checksum)
    .execute(&mut *transaction)
    .await
    .map_err(failed)?;
    transaction.commit().await.map_err(failed)?;
    tracing::info!(version = migration.version, description = %migration.description, "inbox schema migrated");
    Ok(())
}
