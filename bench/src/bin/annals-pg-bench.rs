//! `annals-pg-bench`: the PostgreSQL store against plain SQL on the same server.
//!
//! ```text
//! DATABASE_URL=postgres://annals:annals@127.0.0.1:5432/annals_test \
//!     cargo run --release -p annals-postgres --bin annals-pg-bench
//! ```
//!
//! Works in a fresh schema of its own, dropped at the end. Measures, in one run:
//!
//! 1. single-event appends by 8 concurrent writers on distinct streams, next to
//!    a raw baseline: the same rows by a plain parameterised `INSERT` in
//!    autocommit (insert + commit, one round trip) from 8 dedicated connections;
//! 2. 100-event batch appends by 4 concurrent writers, next to a raw baseline
//!    inserting the same 100 rows with one `INSERT ... SELECT FROM unnest(...)`
//!    statement per transaction;
//! 3. reading a 1,000-event stream: p50 and p99 latency;
//! 4. catching up with the global log (`read_all` in pages of 1,000): events/s;
//! 5. a command that decides nothing, through a `Repository`: on a kept state
//!    (`Repository::cache`, which confirms it with one read of what the stream
//!    holds after it) and on a state loaded each time, next to a raw round
//!    trip (`SELECT 1`): p50 and p99 latency;
//! 6. conditional single-event appends (`append_if`, a one-tag condition that
//!    holds) by 8 writers, next to the same tagged events appended
//!    unconditionally, in alternating rounds;
//! 7. loading a decision over a 1,000-event query (`Decider::load`:
//!    `read_query`, decode, fold), next to loading the same 1,000 events as
//!    an aggregate does (`read_stream`, decode, fold), and the two reads
//!    alone: p50 and p99 latency.
//!
//! `PG_BENCH_SECTIONS=6,7` runs only the sections listed.
//!
//! The raw baseline table is `LIKE annals_events INCLUDING ALL` (same columns,
//! defaults, constraints and indexes). Store and baseline phases alternate in
//! short rounds so that drift on the machine affects both alike.

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use annals::{EventFilter, EventStore, ExpectedVersion, Metadata, NewEvent, Payload, Position};
use annals_postgres::{NotifyMode, PgEventStore, PgStoreOptions};
use serde_json::json;
use sqlx::postgres::PgConnectOptions;
use sqlx::types::Json;
use sqlx::{ConnectOptions, Connection, PgConnection};
use uuid::Uuid;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const SINGLE_WRITERS: usize = 8;
const BATCH_WRITERS: usize = 4;
const BATCH_SIZE: usize = 100;
/// Alternating rounds per throughput comparison, and the length of each.
const ROUNDS: usize = 2;
const ROUND: Duration = Duration::from_secs(3);
const READ_STREAM_EVENTS: usize = 1_000;
const READ_SAMPLES: usize = 400;
const CATCH_UP_PAGE: usize = 1_000;

const RAW_INSERT: &str = "INSERT INTO bench_raw \
    (stream_id, stream_version, event_id, event_type, schema_version, payload, metadata) \
    VALUES ($1, $2, $3, $4, $5, $6, $7)";

const RAW_BATCH_INSERT: &str = "INSERT INTO bench_raw \
    (stream_id, stream_version, event_id, event_type, schema_version, payload, metadata) \
    SELECT $1, $2 + e.ord, e.event_id, e.event_type, e.schema_version, e.payload, e.metadata \
      FROM unnest($3::uuid[], $4::text[], $5::int[], $6::jsonb[], $7::jsonb[]) \
           WITH ORDINALITY AS e(event_id, event_type, schema_version, payload, metadata, ord)";

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let url = std::env::var("DATABASE_URL").map_err(
        |_| "set DATABASE_URL, e.g. postgres://annals:annals@127.0.0.1:5432/annals_test",
    )?;
    let base = PgConnectOptions::from_str(&url)?.disable_statement_logging();
    let schema = format!("annals_bench_{}", Uuid::new_v4().simple());
    let mut admin = base.connect().await?;
    sqlx::raw_sql(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut admin)
        .await?;
    let options = base.clone().options([("search_path", schema.as_str())]);

    let outcome = run(&options).await;

    sqlx::raw_sql(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(&mut admin)
        .await?;
    admin.close().await?;
    outcome
}

async fn run(options: &PgConnectOptions) -> Result<(), BoxError> {
    // The default options (notify in the append's transaction), and the
    // same with notifications sent after commit, on one pool.
    let store = PgStoreOptions::new()
        .max_connections(16)
        .application_name("annals-pg-bench")
        .notify_channel("annals_bench_events")
        .connect_with(options.clone())
        .await?;
    let after_commit = PgStoreOptions::new()
        .notify_channel("annals_bench_events")
        .notify_mode(NotifyMode::AfterCommit)
        .from_pool(store.pool().clone())?;
    store.migrate().await?;
    sqlx::raw_sql("CREATE TABLE bench_raw (LIKE annals_events INCLUDING ALL)")
        .execute(store.pool())
        .await?;
    print_machine(&store).await?;
    // PG_BENCH_SECTIONS=6,7 runs only those sections (default: all).
    let sections = std::env::var("PG_BENCH_SECTIONS").unwrap_or_default();
    let wanted =
        |n: u32| sections.is_empty() || sections.split(',').any(|s| s.trim() == n.to_string());

    if wanted(1) {
        // 1. Single-event appends.
        let (mut raw, mut in_tx, mut after) = (0, 0, 0);
        for round in 0..ROUNDS {
            raw += raw_single_inserts(options, round).await?;
            in_tx += store_single_appends(&store, &format!("tx-{round}")).await?;
            after += store_single_appends(&after_commit, &format!("ac-{round}")).await?;
        }
        report(
            &format!("single-event appends, {SINGLE_WRITERS} writers on distinct streams"),
            "raw INSERT + commit",
            [raw, in_tx, after],
            70.0,
        );
    }

    if wanted(2) {
        // 2. 100-event batches.
        let (mut raw, mut in_tx, mut after) = (0, 0, 0);
        for round in 0..ROUNDS {
            raw += raw_batch_inserts(options, round).await?;
            in_tx += store_batch_appends(&store, &format!("tx-{round}")).await?;
            after += store_batch_appends(&after_commit, &format!("ac-{round}")).await?;
        }
        report(
            &format!("{BATCH_SIZE}-event batch appends, {BATCH_WRITERS} writers"),
            "raw INSERT (unnest)",
            [raw, in_tx, after],
            80.0,
        );
    }

    if wanted(3) {
        // 3. Reading a 1,000-event stream.
        let stream = "read-1000";
        for chunk in 0..READ_STREAM_EVENTS / BATCH_SIZE {
            store
                .append(
                    stream,
                    ExpectedVersion::Exact((chunk * BATCH_SIZE) as u64),
                    events(BATCH_SIZE),
                )
                .await?;
        }
        for _ in 0..20 {
            store.read_stream(stream, 1, READ_STREAM_EVENTS).await?;
        }
        let mut latencies = Vec::with_capacity(READ_SAMPLES);
        for _ in 0..READ_SAMPLES {
            let started = Instant::now();
            let read = store.read_stream(stream, 1, READ_STREAM_EVENTS).await?;
            latencies.push(started.elapsed());
            if read.len() != READ_STREAM_EVENTS {
                return Err(format!("read {} events, not {READ_STREAM_EVENTS}", read.len()).into());
            }
        }
        latencies.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!();
        println!("read_stream of a {READ_STREAM_EVENTS}-event stream ({READ_SAMPLES} reads):");
        println!(
            "  p50 {:.2} ms   p99 {:.2} ms   max {:.2} ms   (target p99 < 5 ms)",
            ms(latencies[READ_SAMPLES / 2]),
            ms(latencies[READ_SAMPLES * 99 / 100]),
            ms(latencies[READ_SAMPLES - 1])
        );
    }

    if wanted(4) {
        // 4. Catching up with the global log.
        let mut after = Position::START;
        let mut read = 0usize;
        let started = Instant::now();
        loop {
            let page = store
                .read_all(after, CATCH_UP_PAGE, &EventFilter::all())
                .await?;
            let Some(last) = page.last() else { break };
            after = last.position;
            read += page.len();
        }
        let elapsed = started.elapsed();
        println!();
        println!("catch-up read of the global log (read_all, pages of {CATCH_UP_PAGE}):");
        println!(
            "  {read} events in {:.2} s = {:.0} events/s   (target >= 200,000)",
            elapsed.as_secs_f64(),
            read as f64 / elapsed.as_secs_f64()
        );
    }

    if wanted(5) {
        // 5. A command that decides nothing.
        noop_commands(&store, options).await?;
    }

    if wanted(6) {
        // 6. Conditional appends.
        let (mut plain, mut conditional) = (0, 0);
        for round in 0..ROUNDS {
            plain += tagged_appends(&store, round, false).await?;
            conditional += tagged_appends(&store, round, true).await?;
        }
        let seconds = ROUND.as_secs_f64() * ROUNDS as f64;
        println!();
        println!("single-event appends with one tag, {SINGLE_WRITERS} writers:");
        println!(
            "  unconditional (append_with)            {:>9.0} events/s",
            plain as f64 / seconds
        );
        println!(
            "  conditional, one-tag condition (append_if) {:>9.0} events/s  {:>5.1} % of unconditional   (target >= 80 %)",
            conditional as f64 / seconds,
            100.0 * conditional as f64 / plain.max(1) as f64
        );
    }

    // 7. A decision over a 1,000-event query.
    if wanted(7) {
        decision_reads(&store).await?;
    }
    store.close().await;
    Ok(())
}

/// A lamp: on or off. Turning on a lamp that is on decides nothing.
#[derive(Debug, Clone, PartialEq, annals::DomainEvent)]
enum LampEvent {
    TurnedOn,
}

#[derive(Debug, Default, annals::AggregateType)]
#[aggregate(name = "lamp")]
struct Lamp {
    on: bool,
}

impl annals::Aggregate for Lamp {
    type Event = LampEvent;
    type Error = std::convert::Infallible;
    fn apply(&mut self, _: &LampEvent) {
        self.on = true;
    }
}

struct TurnOn;

impl annals::Handle<TurnOn> for Lamp {
    fn handle(&self, _: &TurnOn) -> Result<Vec<LampEvent>, std::convert::Infallible> {
        Ok(if self.on {
            vec![]
        } else {
            vec![LampEvent::TurnedOn]
        })
    }
}

const NOOP_SAMPLES: usize = 2_000;

/// Section 5: latencies of a command that decides nothing.
async fn noop_commands(store: &PgEventStore, options: &PgConnectOptions) -> Result<(), BoxError> {
    let kept = annals::Repository::<Lamp, _>::new(store.clone()).cache(10);
    let loaded = annals::Repository::<Lamp, _>::new(store.clone());
    kept.execute("hall", TurnOn).await?;
    let mut raw = options.connect().await?;
    let mut samples: [Vec<Duration>; 3] = Default::default();
    for i in 0..NOOP_SAMPLES * 3 {
        let started = Instant::now();
        match i % 3 {
            0 => {
                sqlx::query("SELECT 1").execute(&mut raw).await?;
            }
            1 => {
                let done = kept.execute("hall", TurnOn).await?;
                if !done.events.is_empty() {
                    return Err("a lamp that is on was turned on again".into());
                }
            }
            _ => {
                loaded.execute("hall", TurnOn).await?;
            }
        }
        samples[i % 3].push(started.elapsed());
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!();
    println!("a command that decides nothing ({NOOP_SAMPLES} each, interleaved):");
    for (name, mut latencies) in [
        "raw round trip (SELECT 1)",
        "repository, kept state (one read)",
        "repository, state loaded each time",
    ]
    .into_iter()
    .zip(samples)
    {
        latencies.sort();
        println!(
            "  {name:<36} p50 {:.3} ms   p99 {:.3} ms",
            ms(latencies[NOOP_SAMPLES / 2]),
            ms(latencies[NOOP_SAMPLES * 99 / 100])
        );
    }
    raw.close().await?;
    Ok(())
}

/// Section 6: `SINGLE_WRITERS` writers append single events, each with a
/// tag of its own, conditionally (a condition on that tag, which holds) or
/// not, for a round; returns the events written.
async fn tagged_appends(
    store: &PgEventStore,
    round: usize,
    conditional: bool,
) -> Result<u64, BoxError> {
    let kind = if conditional { "if" } else { "plain" };
    for_a_round(SINGLE_WRITERS, |w, stop, written| {
        let store = store.clone();
        async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let tag = format!("claim:{kind}-{round}-{w}-{i}");
                let stream = format!("claims-{kind}-{round}-{w}");
                let mut e = event();
                e.tags = vec![tag.clone()];
                if conditional {
                    let condition = annals::AppendCondition {
                        fail_if_events_match: annals::Query::new()
                            .or(annals::QueryItem::tagged([tag])),
                        after: None,
                    };
                    store
                        .append_if(
                            &stream,
                            vec![e],
                            condition,
                            annals::AppendOptions::default(),
                        )
                        .await?;
                } else {
                    store.append(&stream, ExpectedVersion::Any, vec![e]).await?;
                }
                i += 1;
                written.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        }
    })
    .await
}

/// A state that folds every event of one tag, counting them.
struct Tally {
    tag: String,
    seen: u64,
}

impl annals::decision::DecisionState for Tally {
    type Event = Untyped;
    fn query(&self) -> annals::Query {
        annals::Query::new().or(annals::QueryItem::tagged([self.tag.clone()]))
    }
    fn apply(&mut self, _: &Untyped) {
        self.seen += 1;
    }
}

/// The bench's `SeatsReserved` events, each payload decoded into a JSON tree
/// (what a fold that reads every field pays).
#[derive(Debug)]
struct Untyped;

impl annals::DomainEvent for Untyped {
    const TYPES: &'static [annals::EventType] = &[annals::EventType {
        name: "SeatsReserved",
        version: 1,
    }];
    fn event_type(&self) -> &'static str {
        "Untyped"
    }
    fn schema_version(&self) -> u32 {
        1
    }
    fn encode(&self) -> Result<Payload, annals::EventError> {
        Ok(Payload::from(json!({})))
    }
    fn decode(_: &str, _: u32, payload: &Payload) -> Result<Self, annals::EventError> {
        let _: serde_json::Value =
            payload
                .decode()
                .map_err(|source| annals::EventError::Decode {
                    event_type: "Untyped".into(),
                    schema_version: 1,
                    source,
                })?;
        Ok(Untyped)
    }
}

/// Section 7: a decision over 1,000 events against `read_stream` of them.
async fn decision_reads(store: &PgEventStore) -> Result<(), BoxError> {
    let stream = "tagged-1000";
    let tag = "bench:decision-reads";
    for chunk in 0..READ_STREAM_EVENTS / BATCH_SIZE {
        let mut batch = events(BATCH_SIZE);
        for e in &mut batch {
            e.tags = vec![tag.to_owned()];
        }
        store
            .append(
                stream,
                ExpectedVersion::Exact((chunk * BATCH_SIZE) as u64),
                batch,
            )
            .await?;
    }
    let decider = annals::decision::Decider::new(store.clone());
    let tally = || Tally {
        tag: tag.to_owned(),
        seen: 0,
    };
    let query = annals::Query::new().or(annals::QueryItem::tagged([tag]));
    let mut samples: [Vec<Duration>; 4] = Default::default();
    for i in 0..READ_SAMPLES * 4 + 40 {
        let started = Instant::now();
        let seen = match i % 4 {
            0 => store
                .read_stream(stream, 1, READ_STREAM_EVENTS)
                .await?
                .len(),
            1 => store
                .read_query(&query, Position::START, READ_STREAM_EVENTS + 1)
                .await?
                .len(),
            2 => {
                // What an aggregate's load does: read its stream, decode
                // and fold each event.
                let mut state = tally();
                for recorded in store.read_stream(stream, 1, READ_STREAM_EVENTS).await? {
                    annals::decision::DecisionState::apply(
                        &mut state,
                        &recorded.decode::<Untyped>()?,
                    );
                }
                state.seen as usize
            }
            _ => decider.load(tally()).await?.0.seen as usize,
        };
        if seen != READ_STREAM_EVENTS {
            return Err(format!("read {seen} events, not {READ_STREAM_EVENTS}").into());
        }
        if i >= 40 {
            samples[i % 4].push(started.elapsed());
        }
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!();
    println!("reading 1,000 events ({READ_SAMPLES} each, interleaved):");
    let mut p50 = [0.0; 4];
    for (k, (name, mut latencies)) in [
        "read_stream of their stream",
        "read_query of their tag",
        "aggregate load: read_stream, decode, fold",
        "decision load: read_query, decode, fold",
    ]
    .into_iter()
    .zip(samples)
    .enumerate()
    {
        latencies.sort();
        let n = latencies.len();
        p50[k] = ms(latencies[n / 2]);
        println!(
            "  {name:<42} p50 {:.2} ms   p99 {:.2} ms",
            p50[k],
            ms(latencies[n * 99 / 100])
        );
    }
    println!(
        "  read_query / read_stream p50 {:.2}; decision load / aggregate load p50 {:.2}   (target <= 1)",
        p50[1] / p50[0],
        p50[3] / p50[2]
    );
    Ok(())
}

/// Prints one throughput comparison: raw, then the store with both notify modes.
fn report(title: &str, raw_name: &str, [raw, in_tx, after]: [u64; 3], target: f64) {
    let seconds = ROUND.as_secs_f64() * ROUNDS as f64;
    let rate = |n: u64| n as f64 / seconds;
    let ratio = |n: u64| 100.0 * n as f64 / raw.max(1) as f64;
    println!();
    println!("{title}:");
    println!("  {raw_name:<36} {:>9.0} events/s", rate(raw));
    println!(
        "  {:<36} {:>9.0} events/s  {:>5.1} % of raw",
        "annals, notify in transaction (default)",
        rate(in_tx),
        ratio(in_tx)
    );
    println!(
        "  {:<36} {:>9.0} events/s  {:>5.1} % of raw   (target >= {target:.0} %)",
        "annals, notify after commit",
        rate(after),
        ratio(after)
    );
}

async fn print_machine(store: &PgEventStore) -> Result<(), BoxError> {
    let (version, fsync, sync_commit): (String, String, String) = sqlx::query_as(
        "SELECT version(), current_setting('fsync'), current_setting('synchronous_commit')",
    )
    .fetch_one(store.pool())
    .await?;
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("annals-pg-bench");
    println!("  server: {version}");
    println!("  fsync={fsync} synchronous_commit={sync_commit}; client cores: {cores}");
    println!(
        "  {ROUNDS} alternating rounds of {}s per throughput comparison",
        ROUND.as_secs()
    );
    Ok(())
}

/// A time-ordered id shaped like a UUID v7 (milliseconds, then a process-wide
/// counter), made without a `getrandom` system call per id: the generator
/// should cost the client little, for the store and the baselines alike.
fn id() -> Uuid {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    // splitmix64, so that ids of one millisecond still spread.
    let mut z = n.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    let bits = (u128::from(millis) << 80) | (u128::from(n & 0xffff) << 64) | u128::from(z);
    uuid::Builder::from_u128(bits)
        .with_variant(uuid::Variant::RFC4122)
        .with_version(uuid::Version::SortRand)
        .into_uuid()
}

/// A realistic small event: a booking-like payload and metadata.
fn event() -> NewEvent {
    NewEvent {
        event_id: id(),
        event_type: "SeatsReserved".into(),
        schema_version: 1,
        payload: json!({
            "flight_id": id(),
            "booking_id": id(),
            "seats": 2,
            "price": { "amount": 45000, "currency": "USD" },
        })
        .into(),
        metadata: Metadata::default().correlated(id()).actor("bench"),
        tags: Vec::new(),
    }
}

fn events(n: usize) -> Vec<NewEvent> {
    (0..n).map(|_| event()).collect()
}

/// Runs `writers` copies of `work` until the round ends; returns the events
/// they wrote.
async fn for_a_round<F, Fut>(writers: usize, work: F) -> Result<u64, BoxError>
where
    F: Fn(usize, Arc<AtomicBool>, Arc<AtomicU64>) -> Fut,
    Fut: std::future::Future<Output = Result<(), BoxError>> + Send + 'static,
{
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..writers)
        .map(|w| tokio::spawn(work(w, Arc::clone(&stop), Arc::clone(&written))))
        .collect();
    tokio::time::sleep(ROUND).await;
    stop.store(true, Ordering::SeqCst);
    for task in tasks {
        task.await??;
    }
    Ok(written.load(Ordering::SeqCst))
}

async fn store_single_appends(store: &PgEventStore, round: &str) -> Result<u64, BoxError> {
    for_a_round(SINGLE_WRITERS, |w, stop, written| {
        let store = store.clone();
        let stream = format!("single-{w}-{round}");
        async move {
            let mut version = 0;
            while !stop.load(Ordering::Relaxed) {
                let done = store
                    .append(&stream, ExpectedVersion::Exact(version), vec![event()])
                    .await?;
                version = done.stream_version;
                written.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        }
    })
    .await
}

async fn raw_single_inserts(options: &PgConnectOptions, round: usize) -> Result<u64, BoxError> {
    let mut connections = Vec::new();
    for _ in 0..SINGLE_WRITERS {
        connections.push(options.connect().await?);
    }
    let connections = Arc::new(std::sync::Mutex::new(connections));
    let written = for_a_round(SINGLE_WRITERS, |w, stop, written| {
        let connections = Arc::clone(&connections);
        async move {
            let taken = connections.lock().map_err(|_| "poisoned")?.pop();
            let mut conn: PgConnection = taken.ok_or("no connection")?;
            let stream = format!("raw-single-{round}-{w}");
            let mut version = 0i64;
            while !stop.load(Ordering::Relaxed) {
                let e = event();
                version += 1;
                sqlx::query(RAW_INSERT)
                    .bind(&stream)
                    .bind(version)
                    .bind(e.event_id)
                    .bind(&e.event_type)
                    .bind(e.schema_version as i32)
                    .bind(Json(&e.payload))
                    .bind(Json(&e.metadata))
                    .execute(&mut conn)
                    .await?;
                written.fetch_add(1, Ordering::Relaxed);
            }
            conn.close().await?;
            Ok(())
        }
    })
    .await?;
    Ok(written)
}

async fn store_batch_appends(store: &PgEventStore, round: &str) -> Result<u64, BoxError> {
    for_a_round(BATCH_WRITERS, |w, stop, written| {
        let store = store.clone();
        let stream = format!("batch-{w}-{round}");
        async move {
            let mut version = 0;
            while !stop.load(Ordering::Relaxed) {
                let done = store
                    .append(&stream, ExpectedVersion::Exact(version), events(BATCH_SIZE))
                    .await?;
                version = done.stream_version;
                written.fetch_add(BATCH_SIZE as u64, Ordering::Relaxed);
            }
            Ok(())
        }
    })
    .await
}

async fn raw_batch_inserts(options: &PgConnectOptions, round: usize) -> Result<u64, BoxError> {
    let mut connections = Vec::new();
    for _ in 0..BATCH_WRITERS {
        connections.push(options.connect().await?);
    }
    let connections = Arc::new(std::sync::Mutex::new(connections));
    for_a_round(BATCH_WRITERS, |w, stop, written| {
        let connections = Arc::clone(&connections);
        async move {
            let taken = connections.lock().map_err(|_| "poisoned")?.pop();
            let mut conn: PgConnection = taken.ok_or("no connection")?;
            let stream = format!("raw-batch-{round}-{w}");
            let mut version = 0i64;
            while !stop.load(Ordering::Relaxed) {
                let batch = events(BATCH_SIZE);
                let ids: Vec<Uuid> = batch.iter().map(|e| e.event_id).collect();
                let types: Vec<&str> = batch.iter().map(|e| e.event_type.as_str()).collect();
                let versions: Vec<i32> = batch.iter().map(|e| e.schema_version as i32).collect();
                let payloads: Vec<Json<&Payload>> =
                    batch.iter().map(|e| Json(&e.payload)).collect();
                let metadata: Vec<Json<&Metadata>> =
                    batch.iter().map(|e| Json(&e.metadata)).collect();
                sqlx::query(RAW_BATCH_INSERT)
                    .bind(&stream)
                    .bind(version)
                    .bind(&ids)
                    .bind(&types)
                    .bind(&versions)
                    .bind(&payloads)
                    .bind(&metadata)
                    .execute(&mut conn)
                    .await?;
                version += BATCH_SIZE as i64;
                written.fetch_add(BATCH_SIZE as u64, Ordering::Relaxed);
            }
            conn.close().await?;
            Ok(())
        }
    })
    .await
}
