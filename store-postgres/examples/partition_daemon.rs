//! A projection daemon that runs its share of a partitioned projection on
//! PostgreSQL: start several, and they split the partitions among them,
//! take over from one that dies or freezes, and give theirs back on SIGTERM.
//!
//! The projection counts each stream's events in a table (`partition_counts`:
//! events applied, the last version applied, events seen out of order), the
//! way a read model that must apply each event once would: an event at or
//! below the last version is a redelivery and changes nothing. The chaos test
//! (`tests/partition_chaos.rs`) runs four of these and checks the counts
//! against the log.
//!
//! ```sh
//! DATABASE_URL=postgres://annals:annals@127.0.0.1:5432/annals_test \
//!   cargo run -p annals-postgres --example partition_daemon
//! ```
//!
//! Environment: `DATABASE_URL`, `ANNALS_PARTITIONS` (8), `ANNALS_CLAIM_TTL_MS`
//! (2000), `ANNALS_CHANNEL` (the store's notification channel).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use annals::projection::{
    BatchOutcome, PartitionedRunner, Projection, ProjectionError, RunnerOptions,
};
use annals::{EventFilter, RecordedEvent};
use annals_postgres::PgStoreOptions;
use async_trait::async_trait;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio_util::sync::CancellationToken;

/// Per stream: how many events were applied, the last version applied, and
/// how many arrived after a gap (order broken).
const TABLE: &str = "CREATE TABLE IF NOT EXISTS partition_counts (
    stream_id    text PRIMARY KEY,
    applied      bigint NOT NULL,
    last_version bigint NOT NULL,
    gaps         bigint NOT NULL DEFAULT 0
)";

/// Applies a run of one stream's events, versions $2 to $3 ($4: whether the
/// run itself skipped a version): what lies above the last version applied
/// is counted, the rest is a redelivery; a run that starts above the next
/// version is a gap.
const APPLY: &str = "INSERT INTO partition_counts AS c (stream_id, applied, last_version, gaps)
VALUES ($1, $3 - $2 + 1, $3, CASE WHEN $2 = 1 AND NOT $4 THEN 0 ELSE 1 END)
ON CONFLICT (stream_id) DO UPDATE
   SET applied = c.applied + (excluded.last_version - greatest(c.last_version, $2 - 1)),
       last_version = excluded.last_version,
       gaps = c.gaps + CASE WHEN $2 <= c.last_version + 1 AND NOT $4 THEN 0 ELSE 1 END
 WHERE excluded.last_version > c.last_version";

struct Counting {
    pool: PgPool,
    partitions: u32,
}

#[async_trait]
impl Projection for Counting {
    fn name(&self) -> String {
        "partition_counts".into()
    }

    fn filter(&self) -> EventFilter {
        EventFilter::all()
    }

    fn partitions(&self) -> u32 {
        self.partitions
    }

    async fn apply(&self, batch: &[RecordedEvent]) -> Result<BatchOutcome, ProjectionError> {
        let transient = |e: sqlx::Error| ProjectionError::Transient(Box::new(e));
        // Each stream's events in the batch, in log order: (first, last, gap).
        let mut runs: BTreeMap<&str, (u64, u64, bool)> = BTreeMap::new();
        for event in batch {
            let version = event.stream_version;
            runs.entry(&event.stream_id)
                .and_modify(|(_, last, gap)| {
                    *gap |= version != *last + 1;
                    *last = version;
                })
                .or_insert((version, version, false));
        }
        let mut transaction = self.pool.begin().await.map_err(transient)?;
        for (stream, (first, last, gap)) in runs {
            sqlx::query(APPLY)
                .bind(stream)
                .bind(i64::try_from(first).unwrap_or(i64::MAX))
                .bind(i64::try_from(last).unwrap_or(i64::MAX))
                .bind(gap)
                .execute(&mut *transaction)
                .await
                .map_err(transient)?;
        }
        transaction.commit().await.map_err(transient)?;
        Ok(BatchOutcome::applied())
    }
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let url = std::env::var("DATABASE_URL")?;
    let partitions = u32::try_from(env_or("ANNALS_PARTITIONS", 8))?;
    let ttl = Duration::from_millis(env_or("ANNALS_CLAIM_TTL_MS", 2000));
    let pool = PgPoolOptions::new()
        .max_connections(6)
        .connect(&url)
        .await?;
    if let Err(error) = sqlx::query(TABLE).execute(&pool).await {
        // Daemons starting together race to create it: one of them does,
        // the others fail on the catalog (a unique violation, or the row
        // type already there: 42710).
        let raced = error
            .as_database_error()
            .is_some_and(|e| e.is_unique_violation() || e.code().as_deref() == Some("42710"));
        if !raced {
            return Err(error.into());
        }
    }
    let mut options = PgStoreOptions::new();
    if let Ok(channel) = std::env::var("ANNALS_CHANNEL") {
        options = options.notify_channel(channel);
    }
    let store = options.from_pool(pool.clone())?;
    let projection = Arc::new(Counting { pool, partitions });
    let runner = PartitionedRunner::new(
        store,
        projection,
        RunnerOptions {
            batch_size: 500,
            batch_delay: Duration::from_millis(5),
            idle_interval: Duration::from_millis(200),
            ..RunnerOptions::default()
        },
    )
    .with_claim_ttl(ttl);
    println!("owner {}", runner.owner());
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        stop.cancel();
    });
    runner.run(shutdown).await?;
    Ok(())
}
