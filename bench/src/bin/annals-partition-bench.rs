//! Projection scaling: the catch-up of a 100,000-event log by a projection
//! of 8 partitions run by 1, 2 and 4 daemon processes (the
//! `partition_daemon` example of `annals-postgres`: a counting read model in
//! PostgreSQL), against a raw baseline in the same run: one loop that pages
//! through the log with `read_all` and applies the same statements, with no
//! runner, claims or checkpoints.
//!
//! ```sh
//! cargo build --release -p annals-postgres --example partition_daemon
//! DATABASE_URL='postgres://annals:annals@127.0.0.1:5432/annals_test?sslmode=disable' \
//!   flock /tmp/annals-bench.lock cargo run --release -p annals-bench --bin annals-partition-bench
//! ```
//!
//! Works in a fresh schema of its own, dropped at the end. Prints, per run:
//! the wall time to the last partition's checkpoint at the head, events per
//! second, each process's CPU time (user + system, from `/proc`), and each
//! partition's events per second of its own lane.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use annals::projection::{ProjectionStore, checkpoint_name};
use annals::{EventFilter, EventStore, ExpectedVersion, Metadata, NewEvent, Position};
use annals_postgres::{PgEventStore, PgStoreOptions};
use serde_json::json;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use uuid::Uuid;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const EVENTS: usize = 100_000;
const STREAMS: usize = 1_000;
const PARTITIONS: u32 = 8;
const PROJECTION: &str = "partition_counts";

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let url = std::env::var("DATABASE_URL")?;
    let base: PgConnectOptions = url.parse()?;
    let schema = format!("annals_bench_{}", Uuid::new_v4().simple());
    let admin = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(base.clone())
        .await?;
    sqlx::raw_sql(&format!("CREATE SCHEMA {schema}"))
        .execute(&admin)
        .await?;
    let outcome = run(&url, &base, &schema).await;
    sqlx::raw_sql(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(&admin)
        .await?;
    outcome
}

async fn run(url: &str, base: &PgConnectOptions, schema: &str) -> Result<(), BoxError> {
    let options = base.clone().options([("search_path", schema)]);
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .connect_with(options)
        .await?;
    let store = PgStoreOptions::new()
        .notify_channel(format!("{schema}_events"))
        .from_pool(pool.clone())?;
    store.migrate().await?;
    let daemon = daemon_binary()?;
    println!("annals-partition-bench");
    println!("  {EVENTS} events over {STREAMS} streams; {PARTITIONS} partitions; 2 client cores");
    seed(&store).await?;
    let head = store.head().await?;

    // Daemons' URL: the bench's schema, as a libpq/sqlx URL option.
    let separator = if url.contains('?') { '&' } else { '?' };
    let daemon_url = format!("{url}{separator}options=-c%20search_path%3D{schema}");

    let raw = raw_catch_up(&pool).await?;
    println!(
        "\n  raw baseline (one read_all loop, the same statements): {:.2} s, {:.0} events/s",
        raw.as_secs_f64(),
        EVENTS as f64 / raw.as_secs_f64()
    );
    for daemons in [1usize, 2, 4] {
        reset(&pool).await?;
        let started = Instant::now();
        let mut children: Vec<Child> = (0..daemons)
            .map(|_| {
                Command::new(&daemon)
                    .env("DATABASE_URL", &daemon_url)
                    .env("ANNALS_PARTITIONS", PARTITIONS.to_string())
                    // Heartbeats every 100 ms: daemons started together share
                    // the partitions within about that, not after seconds.
                    .env("ANNALS_CLAIM_TTL_MS", "300")
                    .env("ANNALS_CHANNEL", format!("{schema}_events"))
                    .env("RUST_LOG", "warn")
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .spawn()
            })
            .collect::<Result<_, _>>()?;
        let mut done: BTreeMap<u32, Duration> = BTreeMap::new();
        while done.len() < PARTITIONS as usize {
            for partition in 0..PARTITIONS {
                if done.contains_key(&partition) {
                    continue;
                }
                let name = checkpoint_name(PROJECTION, partition, PARTITIONS);
                if store.load_checkpoint(&name).await? == Some(head) {
                    done.insert(partition, started.elapsed());
                }
            }
            if started.elapsed() > Duration::from_secs(600) {
                return Err("the daemons did not catch up in 10 minutes".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let wall = started.elapsed();
        let cpu: Vec<f64> = children.iter().map(|c| cpu_seconds(c.id())).collect();
        for child in &mut children {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
        }
        for child in &mut children {
            let _ = child.wait();
        }
        check_counts(&pool).await?;
        let applied = per_partition(&pool).await?;
        println!(
            "\n  {daemons} daemon(s): {:.2} s to the head, {:.0} events/s ({:.0} % of raw)",
            wall.as_secs_f64(),
            EVENTS as f64 / wall.as_secs_f64(),
            100.0 * raw.as_secs_f64() / wall.as_secs_f64()
        );
        println!(
            "    CPU per process (user + system): {}",
            cpu.iter()
                .map(|c| format!("{c:.2} s"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        println!(
            "    per partition, its events / its time to the head: {}",
            done.iter()
                .map(|(p, at)| format!(
                    "{p}: {:.0}/s",
                    applied.get(p).copied().unwrap_or(0) as f64 / at.as_secs_f64()
                ))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    failover(&store, &daemon, &daemon_url, schema).await?;
    Ok(())
}

/// Two daemons with the default time to live share the partitions; one is
/// killed with SIGKILL; how long until the other owns every partition.
async fn failover(
    store: &PgEventStore,
    daemon: &std::path::Path,
    url: &str,
    schema: &str,
) -> Result<(), BoxError> {
    const TTL_MS: u64 = 2000;
    let spawn = || {
        Command::new(daemon)
            .env("DATABASE_URL", url)
            .env("ANNALS_PARTITIONS", PARTITIONS.to_string())
            .env("ANNALS_CLAIM_TTL_MS", TTL_MS.to_string())
            .env("ANNALS_CHANNEL", format!("{schema}_events"))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
    };
    let (mut victim, mut survivor) = (spawn()?, spawn()?);
    let owners = |pid: u32| {
        let store = store.clone();
        async move {
            let owned = store.partition_owners(PROJECTION).await?;
            Ok::<_, BoxError>(
                owned
                    .iter()
                    .filter(|p| {
                        p.owner
                            .as_deref()
                            .is_some_and(|o| o.contains(&format!("-{pid}-")))
                    })
                    .count(),
            )
        }
    };
    let started = Instant::now();
    while owners(victim.id()).await? != 4 || owners(survivor.id()).await? != 4 {
        if started.elapsed() > Duration::from_secs(30) {
            return Err("two daemons never shared the partitions".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    victim.kill()?;
    let killed = Instant::now();
    victim.wait()?;
    while owners(survivor.id()).await? != PARTITIONS as usize {
        if killed.elapsed() > Duration::from_secs(60) {
            return Err("the survivor never took the partitions over".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let took = killed.elapsed();
    let _ = Command::new("kill")
        .args(["-TERM", &survivor.id().to_string()])
        .status();
    let _ = survivor.wait();
    println!(
        "\n  failover: a daemon killed with SIGKILL, its 4 partitions owned by the other after {:.2} s \
         (claims' time to live {:.1} s, heartbeats every {:.2} s; bound: time to live + 5 s)",
        took.as_secs_f64(),
        TTL_MS as f64 / 1000.0,
        TTL_MS as f64 / 3000.0
    );
    Ok(())
}

fn daemon_binary() -> Result<std::path::PathBuf, BoxError> {
    let exe = std::env::current_exe()?;
    let path = exe
        .parent()
        .map(|profile| profile.join("examples").join("partition_daemon"))
        .ok_or("no target folder")?;
    if !path.exists() {
        return Err(format!(
            "{} is missing: cargo build --release -p annals-postgres --example partition_daemon",
            path.display()
        )
        .into());
    }
    Ok(path)
}

async fn seed(store: &PgEventStore) -> Result<(), BoxError> {
    let per_stream = EVENTS / STREAMS;
    for round in 0..per_stream / 10 {
        for s in 0..STREAMS {
            let events: Vec<NewEvent> = (0..10)
                .map(|i| NewEvent {
                    event_id: Uuid::now_v7(),
                    event_type: "Counted".into(),
                    schema_version: 1,
                    payload: json!({ "i": round * 10 + i }).into(),
                    metadata: Metadata::default(),
                    tags: Vec::new(),
                })
                .collect();
            store
                .append(&format!("counted-{s}"), ExpectedVersion::Any, events)
                .await?;
        }
    }
    Ok(())
}

/// Drops the read model and the projection's checkpoints and claims.
async fn reset(pool: &PgPool) -> Result<(), BoxError> {
    sqlx::raw_sql(
        "DROP TABLE IF EXISTS partition_counts;
         DELETE FROM annals_checkpoints WHERE name LIKE 'partition_counts%';
         DELETE FROM annals_claims WHERE projection = 'partition_counts';
         DELETE FROM annals_claimants WHERE projection = 'partition_counts';
         CREATE TABLE partition_counts (stream_id text PRIMARY KEY, applied bigint NOT NULL,
             last_version bigint NOT NULL, gaps bigint NOT NULL DEFAULT 0);",
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// What the daemons do, without them: pages of 500 through the log, each
/// page's runs per stream applied in one transaction.
async fn raw_catch_up(pool: &PgPool) -> Result<Duration, BoxError> {
    reset(pool).await?;
    let store = PgEventStore::from_pool(pool.clone());
    let started = Instant::now();
    let mut after = Position::START;
    loop {
        let page = store.read_all(after, 500, &EventFilter::all()).await?;
        let Some(last) = page.last() else { break };
        after = last.position;
        let mut runs: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
        for event in &page {
            runs.entry(&event.stream_id)
                .and_modify(|(_, last)| *last = event.stream_version)
                .or_insert((event.stream_version, event.stream_version));
        }
        let mut transaction = pool.begin().await?;
        for (stream, (first, last)) in runs {
            sqlx::query(
                "INSERT INTO partition_counts AS c (stream_id, applied, last_version)
                 VALUES ($1, $3 - $2 + 1, $3)
                 ON CONFLICT (stream_id) DO UPDATE
                    SET applied = c.applied + (excluded.last_version - greatest(c.last_version, $2 - 1)),
                        last_version = excluded.last_version
                  WHERE excluded.last_version > c.last_version",
            )
            .bind(stream)
            .bind(first as i64)
            .bind(last as i64)
            .execute(&mut *transaction)
            .await?;
        }
        transaction.commit().await?;
    }
    let elapsed = started.elapsed();
    check_counts(pool).await?;
    Ok(elapsed)
}

/// Every stream counted exactly as the log holds it.
async fn check_counts(pool: &PgPool) -> Result<(), BoxError> {
    let (streams, applied, wrong): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*), coalesce(sum(applied), 0)::bigint,
                count(*) FILTER (WHERE applied <> last_version OR gaps <> 0)
           FROM partition_counts",
    )
    .fetch_one(pool)
    .await?;
    if streams != STREAMS as i64 || applied != EVENTS as i64 || wrong != 0 {
        return Err(format!(
            "the read model is wrong: {streams} streams, {applied} events, {wrong} wrong"
        )
        .into());
    }
    Ok(())
}

/// Events per partition, from the read model.
async fn per_partition(pool: &PgPool) -> Result<BTreeMap<u32, i64>, BoxError> {
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT stream_id, applied FROM partition_counts")
            .fetch_all(pool)
            .await?;
    let mut counts = BTreeMap::new();
    for (stream, applied) in rows {
        *counts
            .entry(annals::projection::partition_of(&stream, PARTITIONS))
            .or_default() += applied;
    }
    Ok(counts)
}

/// A process's CPU time so far: utime + stime from `/proc/<pid>/stat`.
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return f64::NAN;
    };
    // The fields after the command name (which may hold spaces), from field 3.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime is field 14, stime 15: indices 11 and 12 after the name.
    (ticks(11) + ticks(12)) / 100.0
}
