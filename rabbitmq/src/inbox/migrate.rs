//! The inbox's schema: this crate's own migrations (`rabbitmq/migrations/`),
//! applied in order and recorded in `annals_inbox_migrations`.
//!
//! Kept apart from annals' `annals_migrations` and from an application's
//! `_sqlx_migrations`, so that no two sets of versions meet in one schema;
//! applied by annals-postgres' runner ([`annals_postgres::apply_migrations`]).

use sqlx::PgPool;
use sqlx::migrate::Migrator;

use super::InboxError;

/// The migrations, embedded at build time.
static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Where the inbox records the versions it applied.
const TABLE: &str = "annals_inbox_migrations";

pub(super) async fn migrate(pool: &PgPool) -> Result<(), InboxError> {
    annals_postgres::apply_migrations(pool, &MIGRATOR, TABLE)
        .await
        .map_err(InboxError::Migrate)
}
