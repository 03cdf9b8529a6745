//! `airline-projection-bench`: the flight read model's projection daemon on
//! PostgreSQL and Elasticsearch (or OpenSearch), against the raw `_bulk` API
//! on the same server.
//!
//! ```text
//! DATABASE_URL=postgres://annals:annals@127.0.0.1:5432/annals_test \
//! ELASTICSEARCH_URL=http://127.0.0.1:9200 \
//!     cargo run --release -p airline --bin airline-projection-bench
//! ```
//!
//! Works in fresh PostgreSQL schemas and under an index prefix of its own
//! (`pbench<random>_`), all dropped at the end, also on failure. Takes 2 to 3
//! minutes on a 2-core machine, most of it loading the log. Measures, in one
//! run:
//!
//! 1. **Catch-up.** 100,000 Flight events (5,000 flights × 20: scheduled,
//!    seats reserved and released, price changes, some reschedules, a few
//!    cancellations) are appended with batch appends and vacuumed (not
//!    timed), in two layouts of the same histories, each in its own schema:
//!    * `per-flight`: each flight's 20 events in one append, so a flight's
//!      events are adjacent in the log;
//!    * `interleaved`: each flight's history in 4 appends of 5 events, made
//!      in 4 rounds over all flights in shuffled order, so a flight's events
//!      are spread over the whole log (as bookings arriving over weeks are),
//!      and a projection batch holds a quarter of a flight's history at most.
//!
//!    The flight read model is then built the way the service builds it the
//!    first time (and rebuilds it): [`ReadModel::prepare`] with the default
//!    options, timed end to end: index created with refresh off and no
//!    replicas, `ProjectionRunner::catch_up` over
//!    `IndexWriter<FlightIndex>` (batches of
//!    `ReadModelOptions::default().build_runner.batch_size` events, folded
//!    into `_bulk` requests of at most
//!    `ReadModelOptions::default().build.bulk.max_operations` documents, two
//!    in flight while the next is folded), serving settings restored, a
//!    second catch-up, refresh, alias swap.
//!
//!    The raw baseline bulk-indexes the 5,000 final documents (folded in
//!    memory beforehand with `FlightView::fold`, the projection's own fold)
//!    with plain `_bulk` requests of 1,000 into a fresh index with the same
//!    mappings and settings, refresh off and no replicas while loading, then
//!    restores and refreshes: docs/s, and events/s as the events represented
//!    (100,000) over the elapsed time.
//!
//!    Beside them, a hand-written rebuild without annals' runner: read
//!    the whole log (`read_all`, pages of 5,000), decode and fold in memory,
//!    then load as the baseline does: the least a rebuild from the log can
//!    do, showing what reading the log costs apart from the framework.
//!
//!    All of it runs in 3 rounds: a raw baseline, then each layout built and
//!    rebuilt by hand; a last raw baseline after the last round. Medians are
//!    reported (each round's figures beside them), so that one build that
//!    meets a merge or a checkpoint on the server does not decide the result.
//!
//!    Every index is then compared with the baseline index: same documents,
//!    every `_source` equal, and in the projected ones every `_version`
//!    equal to the stream's last version.
//! 2. **Live latency.** The live runner as the service runs it
//!    ([`ElasticFlights::run`], `RunnerOptions::default()`, the default live
//!    writer options, the index at its default 1 s refresh) on the
//!    per-flight index. It starts behind a backlog of 10,000 price changes
//!    (how fast it catches up is reported), then single `PriceChanged`
//!    events are appended at 20/s for 15 s, each to another flight. A poller
//!    asks every 5 ms, for all events not seen yet: a search on the alias (an
//!    `ids` query), a realtime GET (`_mget`) on the alias, and the runner's
//!    checkpoint. Reported, from the append call: searchable (the search
//!    returns the new price), GET returns it, checkpoint past the event's
//!    position (what `min_position` waits for): p50/p99/max. The same again
//!    with the other live refresh policy (`refresh=wait_for` against the
//!    default `refresh=true`), for comparison.

mod bench_support;

use bench_support::{es_json, es_json_query};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use airline::scheduling::FlightEvent;
use airline::search::FlightView;
use airline::search::{ElasticFlights, FlightDoc, FlightIndex};
use airline::values::{AirportCode, Money};
use annals::projection::{RunnerOptions, RunnerProgress, RunnerState};
use annals::{DomainEvent, EventFilter, EventStore, ExpectedVersion, Metadata, NewEvent, Position};
use annals_elastic::elasticsearch::http::Method;
use annals_elastic::elasticsearch::{BulkParts, Elasticsearch};
use annals_elastic::{
    DocumentProjection, ReadModel, ReadModelOptions, RefreshPolicy, WriterOptions,
};
use annals_postgres::{PgEventStore, PgStoreOptions};
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use sqlx::postgres::PgConnectOptions;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Result<T, E = BoxError> = std::result::Result<T, E>;

const FLIGHTS: usize = 5_000;
const EVENTS_PER_FLIGHT: usize = 20;
const EVENTS: usize = FLIGHTS * EVENTS_PER_FLIGHT;
/// Concurrent appenders while loading the log (not timed).
const WRITERS: usize = 8;
/// Documents per `_bulk` request of the baseline: the index writer's limit.
const BASELINE_BULK: usize = 1_000;
/// Rounds of the catch-up measurement: each builds every layout once (and
/// rebuilds it by hand), after a raw baseline; medians are reported.
const ROUNDS: usize = 3;
/// Target: the projection's events/s as a share of the baseline's.
const CATCH_UP_TARGET: f64 = 60.0;

const LIVE_RATE: u32 = 20;
const LIVE_DURATION: Duration = Duration::from_secs(15);
const LIVE_POLL: Duration = Duration::from_millis(5);
/// An event not seen after this long counts as missed.
const LIVE_GIVE_UP: Duration = Duration::from_secs(10);
const LIVE_TARGET_P99: Duration = Duration::from_millis(1_500);
/// The backlog the live runner starts behind: flights × events each.
const BACKLOG_FLIGHTS: usize = 1_000;
const BACKLOG_EVENTS_PER_FLIGHT: usize = 10;
const BACKLOG_GIVE_UP: Duration = Duration::from_secs(120);

/// A history in the log: how its events are grouped into appends, and the
/// order of those appends.
#[derive(Debug, Clone, Copy)]
struct Layout {
    name: &'static str,
    /// Appends per flight; each is one round over all flights.
    chunks: usize,
}

const LAYOUTS: [Layout; 2] = [
    Layout {
        name: "per-flight",
        chunks: 1,
    },
    Layout {
        name: "interleaved",
        chunks: 4,
    },
];

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match main_inner().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("airline-projection-bench: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn main_inner() -> Result<()> {
    // The library's logs (build progress, runner retries) with RUST_LOG=info.
    if std::env::var_os("RUST_LOG").is_some() {
        let filter = tracing_subscriber::EnvFilter::from_default_env();
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    let bench_support::Servers {
        client,
        server,
        base,
        mut admin,
        run_id,
    } = bench_support::servers().await?;
    let prefix = format!("pbench{run_id}_");
    let schemas: Vec<String> = LAYOUTS
        .iter()
        .map(|l| format!("annals_pbench_{run_id}_{}", l.name.replace('-', "_")))
        .collect();
    for schema in &schemas {
        sqlx::raw_sql(&format!("CREATE SCHEMA {schema}"))
            .execute(&mut admin)
            .await?;
    }

    let outcome = run(&client, &server, &base, &schemas, &prefix, &run_id).await;

    bench_support::clean_up(&client, admin, &schemas, &prefix, outcome).await
}

// ---------------------------------------------------------------------------
// the run

async fn run(
    client: &Elasticsearch,
    server: &Value,
    base: &PgConnectOptions,
    schemas: &[String],
    prefix: &str,
    run_id: &str,
) -> Result<()> {
    let mut stores = Vec::new();
    for (layout, schema) in LAYOUTS.iter().zip(schemas) {
        let store = PgStoreOptions::new()
            .max_connections(16)
            .application_name("airline-projection-bench")
            .notify_channel(format!("pbench_{run_id}_{}", layout.chunks))
            .connect_with(base.clone().options([("search_path", schema.as_str())]))
            .await?;
        store.migrate().await?;
        stores.push(store);
    }
    print_machine(server, &stores[0]).await?;

    // The histories, and the documents they fold into.
    let mut rng = StdRng::seed_from_u64(5);
    let flights: Arc<Vec<History>> = Arc::new((0..FLIGHTS).map(|i| history(&mut rng, i)).collect());
    let expected: Vec<(String, u64, Value)> = flights
        .iter()
        .map(|h| {
            let doc = fold(&h.events)?;
            Ok((
                h.id.to_string(),
                h.events.len() as u64,
                serde_json::to_value(doc)?,
            ))
        })
        .collect::<Result<_>>()?;
    let counts = event_counts(&flights);
    println!("  log: {EVENTS} events, {FLIGHTS} flights x {EVENTS_PER_FLIGHT}: {counts}");

    for (layout, store) in LAYOUTS.iter().zip(&stores) {
        let started = Instant::now();
        append_all(store, &flights, layout.chunks, &mut rng).await?;
        println!(
            "  appended the {} layout ({} appends) in {:.1} s (not timed in the results)",
            layout.name,
            FLIGHTS * layout.chunks,
            started.elapsed().as_secs_f64()
        );
    }

    // A log that has been there a while: vacuumed (hint bits set, visibility
    // map current) rather than autovacuumed in the middle of a build.
    for store in &stores {
        for table in ["annals_events", "annals_streams"] {
            sqlx::raw_sql(&format!("VACUUM (ANALYZE) {table}"))
                .execute(store.pool())
                .await?;
        }
    }

    // 1. Catch-up, in rounds. A raw baseline before each round and after the
    // last, so that drift on the machine affects both alike.
    let mut baselines = Vec::new();
    let mut rows = Vec::new();
    for round in 0..ROUNDS {
        baselines.push(baseline(client, &format!("{prefix}baseline_{round}"), &expected).await?);
        for (i, (layout, store)) in LAYOUTS.iter().zip(&stores).enumerate() {
            let read_model = ReadModel::new(client.clone(), FlightIndex)
                .with_prefix(format!("{prefix}r{round}_{i}_"));
            let started = Instant::now();
            let built = read_model
                .prepare(store)
                .await
                .map_err(|e| format!("building the {} index: {e}", layout.name))?
                .ok_or("the alias already served the current version: nothing was built")?;
            let elapsed = started.elapsed();
            rows.push(Row {
                name: format!("annals projection, {} log", layout.name),
                index: built.index.clone(),
                elapsed,
                ops: index_ops(client, &built.index).await?,
                versions: true,
            });
            let index = format!("{prefix}handwritten_{round}_{i}");
            let elapsed = hand_written_rebuild(client, store, &index).await?;
            rows.push(Row {
                name: format!("hand-written rebuild, {} log", layout.name),
                ops: index_ops(client, &index).await?,
                index,
                elapsed,
                versions: false,
            });
        }
    }
    let last_baseline = format!("{prefix}baseline_{ROUNDS}");
    baselines.push(baseline(client, &last_baseline, &expected).await?);

    // Equal to the baseline?
    let reference = all_documents(client, &last_baseline).await?;
    check_against_expected("baseline", &reference, &expected, false)?;
    for row in &rows {
        let found = all_documents(client, &row.index).await?;
        check_against_expected(&row.name, &found, &expected, row.versions)?;
        if found
            .iter()
            .map(|d| (&d.0, &d.2))
            .ne(reference.iter().map(|d| (&d.0, &d.2)))
        {
            return Err(
                format!("the index of {} differs from the baseline index", row.name).into(),
            );
        }
    }

    let mut times: Vec<Duration> = baselines.iter().map(|b| b.0).collect();
    times.sort();
    let baseline_time = times[times.len() / 2];
    let rate = |n: usize, d: Duration| n as f64 / d.as_secs_f64();
    let baseline_events = rate(EVENTS, baseline_time);
    println!();
    let build = ReadModelOptions::default();
    println!(
        "1. catch-up of {EVENTS} events into a fresh index: a first build (ReadModel::prepare, \
         end to end: create with refresh off, ProjectionRunner::catch_up over \
         IndexWriter<FlightIndex> in batches of {} events ({} ms batch delay), _bulk of <= {} \
         documents, restore, refresh, alias swap)",
        build.build_runner.batch_size,
        build.build_runner.batch_delay.as_millis(),
        build.build.bulk.max_operations
    );
    println!(
        "   {:<40} {:>9} {:>10} {:>10} {:>9}     each round",
        "", "index ops", "median", "events/s", "of raw"
    );
    let mut names: Vec<&str> = Vec::new();
    for row in &rows {
        if !names.contains(&row.name.as_str()) {
            names.push(&row.name);
        }
    }
    for name in names {
        let runs: Vec<&Row> = rows.iter().filter(|r| r.name == name).collect();
        let mut times: Vec<Duration> = runs.iter().map(|r| r.elapsed).collect();
        times.sort();
        let median = times[times.len() / 2];
        let events = rate(EVENTS, median);
        let share = 100.0 * events / baseline_events;
        let mark = if runs[0].versions {
            verdict(share >= CATCH_UP_TARGET)
        } else {
            ""
        };
        let each = runs
            .iter()
            .map(|r| {
                format!(
                    "{:.2} s = {:.1} %",
                    r.elapsed.as_secs_f64(),
                    100.0 * rate(EVENTS, r.elapsed) / baseline_events
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        println!(
            "   {:<40} {:>9} {:>8.2} s {:>10.0} {:>7.1} %  {mark:<6} {each}",
            name,
            runs[0].ops,
            median.as_secs_f64(),
            events,
            share,
        );
    }
    println!(
        "   {:<40} {:>9} {:>8.2} s {:>10.0} {:>9}",
        "raw _bulk of the final documents",
        baselines[0].1,
        baseline_time.as_secs_f64(),
        baseline_events,
        "100 %"
    );
    println!(
        "   raw: {:.0} docs/s, {FLIGHTS} documents, median of {} ({}); target: \
         projection >= {CATCH_UP_TARGET:.0} % of raw in events/s (medians of {ROUNDS} rounds)",
        rate(FLIGHTS, baseline_time),
        times.len(),
        times
            .iter()
            .map(|t| format!("{:.2} s", t.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "   verified: every index above holds the {FLIGHTS} documents, every _source equal to \
         the raw index's; the projected ones with _version = the stream's last version"
    );

    // 2. Live latency, on the per-flight read model: as the service runs it,
    // then with the alternative live refresh policy. (`--catch-up-only`
    // skips it.)
    if std::env::args().any(|a| a == "--catch-up-only") {
        for store in stores {
            store.close().await;
        }
        return Ok(());
    }
    let live_prefix = format!("{prefix}r0_0_");
    let mut rng = StdRng::seed_from_u64(20);
    let mut targets: Vec<&History> = flights.iter().filter(|h| !h.cancelled()).collect();
    targets.shuffle(&mut rng);
    let per_run = (LIVE_RATE as u64 * LIVE_DURATION.as_secs()) as usize;
    for (i, (label, options)) in live_variants().into_iter().enumerate() {
        let read_model = ReadModel::new(client.clone(), FlightIndex)
            .with_prefix(&live_prefix)
            .with_options(options);
        let mine = targets
            .get(i * per_run..(i + 1) * per_run)
            .ok_or("not enough flights for the live runs")?;
        let backlog_start = 2 * per_run + i * BACKLOG_FLIGHTS;
        let backlog = targets
            .get(backlog_start..backlog_start + BACKLOG_FLIGHTS)
            .ok_or("not enough flights for the backlogs")?;
        let live = live_latency(
            ElasticFlights::from_read_model(read_model),
            stores[0].clone(),
            mine,
            backlog,
        )
        .await?;
        live.print(label);
    }
    for store in stores {
        store.close().await;
    }
    Ok(())
}

fn verdict(ok: bool) -> &'static str {
    if ok { "ok" } else { "MISSED" }
}

async fn print_machine(server: &Value, store: &PgEventStore) -> Result<()> {
    let (version, fsync, sync_commit): (String, String, String) = sqlx::query_as(
        "SELECT version(), current_setting('fsync'), current_setting('synchronous_commit')",
    )
    .fetch_one(store.pool())
    .await?;
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let distribution = server["version"]["distribution"]
        .as_str()
        .unwrap_or("elasticsearch");
    println!("airline-projection-bench");
    println!(
        "  search: {distribution} {} (cluster {})",
        server["version"]["number"].as_str().unwrap_or("?"),
        server["cluster_name"].as_str().unwrap_or("?")
    );
    println!("  postgres: {version}");
    println!("  fsync={fsync} synchronous_commit={sync_commit}; client cores: {cores}");
    Ok(())
}

// ---------------------------------------------------------------------------
// histories

struct History {
    id: Uuid,
    events: Vec<FlightEvent>,
}

impl History {
    fn stream(&self) -> String {
        format!("flight-{}", self.id)
    }

    fn cancelled(&self) -> bool {
        matches!(
            self.events.last(),
            Some(FlightEvent::FlightCancelled { .. })
        )
    }
}

/// One flight's 20 events: scheduled, then bookings taking and releasing
/// seats, fare changes, the odd reschedule, and now and then a cancellation
/// at the end.
fn history(rng: &mut StdRng, number: usize) -> History {
    let hubs = airline::airports::HUBS;
    let pick = |rng: &mut StdRng| -> AirportCode {
        hubs[rng.random_range(0..hubs.len())]
            .parse()
            .unwrap_or_else(|_| unreachable!("hubs are reference airports"))
    };
    let from = pick(rng);
    let to = loop {
        let to = pick(rng);
        if to != from {
            break to;
        }
    };
    let id = uuid::Builder::from_random_bytes(rng.random()).into_uuid();
    let today = Utc::now()
        .duration_trunc(TimeDelta::days(1))
        .unwrap_or_else(|_| Utc::now());
    let mut departure: DateTime<Utc> = today
        + TimeDelta::days(rng.random_range(1..=60))
        + TimeDelta::minutes(5 * rng.random_range(72..276));
    let block = TimeDelta::minutes(5 * rng.random_range(12..=170));
    let seats = [150, 174, 180, 220, 296, 350][rng.random_range(0..6)];
    let mut price = rng.random_range(60..1_500) * 100 + 99 - 100;
    let airline = ["AN", "BA", "LH", "AF", "UA", "KL"][number % 6];
    let flight_number = format!("{airline}{}", 1 + number % 9_999)
        .parse()
        .unwrap_or_else(|_| unreachable!("valid flight number"));
    let mut events = vec![FlightEvent::FlightScheduled {
        flight_id: id,
        flight_number,
        from,
        to,
        departure,
        arrival: departure + block,
        seats,
        price: Money::usd(price),
    }];
    let mut available = seats;
    let mut held: Vec<(Uuid, u32)> = Vec::new();
    while events.len() < EVENTS_PER_FLIGHT {
        if events.len() == EVENTS_PER_FLIGHT - 1 && rng.random_bool(0.03) {
            events.push(FlightEvent::FlightCancelled {
                reason: "operational reasons".into(),
            });
            continue;
        }
        let roll = rng.random_range(0..100);
        let event = match roll {
            0..55 => {
                let wanted = rng.random_range(1..=4);
                if wanted > available {
                    continue;
                }
                let booking_id = uuid::Builder::from_random_bytes(rng.random()).into_uuid();
                available -= wanted;
                held.push((booking_id, wanted));
                FlightEvent::SeatsReserved {
                    booking_id,
                    seats: wanted,
                }
            }
            55..70 if !held.is_empty() => {
                let (booking_id, released) = held.swap_remove(rng.random_range(0..held.len()));
                available += released;
                FlightEvent::SeatsReleased {
                    booking_id,
                    seats: released,
                }
            }
            55..93 => {
                let factor = rng.random_range(0.85..1.2);
                price = (((price as f64 * factor) / 100.0).round() as i64 * 100 - 1).max(2_999);
                FlightEvent::PriceChanged {
                    price: Money::usd(price),
                }
            }
            _ => {
                departure += TimeDelta::minutes(30 * rng.random_range(1..=6));
                FlightEvent::FlightRescheduled {
                    departure,
                    arrival: departure + block,
                }
            }
        };
        events.push(event);
    }
    History { id, events }
}

fn fold(events: &[FlightEvent]) -> Result<FlightDoc> {
    let view = events
        .iter()
        .fold(None, FlightView::fold)
        .ok_or("a history that folds to nothing")?;
    Ok(view.into())
}

fn event_counts(flights: &[History]) -> String {
    let mut counts = std::collections::BTreeMap::<&str, usize>::new();
    for event in flights.iter().flat_map(|h| &h.events) {
        let name = match event {
            FlightEvent::FlightScheduled { .. } => "scheduled",
            FlightEvent::FlightRescheduled { .. } => "rescheduled",
            FlightEvent::PriceChanged { .. } => "price changes",
            FlightEvent::SeatsReserved { .. } => "reserves",
            FlightEvent::SeatsReleased { .. } => "releases",
            FlightEvent::FlightCancelled { .. } => "cancelled",
        };
        *counts.entry(name).or_default() += 1;
    }
    counts
        .iter()
        .map(|(name, n)| format!("{n} {name}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Appends every history in `chunks` appends per flight: round `r` appends
/// chunk `r` of every flight, flights in a fresh shuffled order, by
/// [`WRITERS`] concurrent writers.
async fn append_all(
    store: &PgEventStore,
    flights: &Arc<Vec<History>>,
    chunks: usize,
    rng: &mut StdRng,
) -> Result<()> {
    let per_chunk = EVENTS_PER_FLIGHT / chunks;
    for round in 0..chunks {
        let mut order: Vec<usize> = (0..flights.len()).collect();
        order.shuffle(rng);
        let mut writers = JoinSet::new();
        for writer in 0..WRITERS {
            let mine: Vec<usize> = order
                .iter()
                .copied()
                .skip(writer)
                .step_by(WRITERS)
                .collect();
            let store = store.clone();
            let flights = Arc::clone(flights);
            writers.spawn(async move {
                for i in mine {
                    let history = &flights[i];
                    let start = round * per_chunk;
                    let end = if round + 1 == chunks {
                        history.events.len()
                    } else {
                        start + per_chunk
                    };
                    let events = history.events[start..end]
                        .iter()
                        .map(|e| NewEvent::from_domain(e, Metadata::default().actor("bench")))
                        .collect::<Result<Vec<_>, _>>()?;
                    let expected = if start == 0 {
                        ExpectedVersion::NoStream
                    } else {
                        ExpectedVersion::Exact(start as u64)
                    };
                    store.append(&history.stream(), expected, events).await?;
                }
                Ok::<(), BoxError>(())
            });
        }
        while let Some(done) = writers.join_next().await {
            done??;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// the raw baseline

/// One projected or hand-built index of the catch-up table.
struct Row {
    name: String,
    index: String,
    elapsed: Duration,
    ops: u64,
    /// Whether its documents carry the stream version as `_version`.
    versions: bool,
}

/// Bulk-indexes the final documents into a fresh `index` the way a build
/// does, with plain `_bulk` requests: created with the projection's mappings
/// and settings plus refresh off and no replicas, loaded, settings restored,
/// refreshed. Returns the time taken and the index operations done.
async fn baseline(
    client: &Elasticsearch,
    index: &str,
    docs: &[(String, u64, Value)],
) -> Result<(Duration, u64)> {
    let started = Instant::now();
    create_loading_index(client, index).await?;
    bulk_load(client, index, docs).await?;
    finish_loading(client, index).await?;
    let elapsed = started.elapsed();
    Ok((elapsed, index_ops(client, index).await?))
}

/// A rebuild written by hand, without annals' runner and index writer: reads
/// the whole log (`read_all` in pages of 5,000), decodes and folds every
/// event in memory with `FlightView::fold`, then loads the final documents
/// as [`baseline`] does. The least work a rebuild from the log can do.
async fn hand_written_rebuild(
    client: &Elasticsearch,
    store: &PgEventStore,
    index: &str,
) -> Result<Duration> {
    let started = Instant::now();
    create_loading_index(client, index).await?;
    let filter = EventFilter::types(FlightEvent::type_names());
    let mut views: HashMap<String, (u64, Option<FlightView>)> = HashMap::new();
    let mut after = Position::START;
    loop {
        let page = store.read_all(after, 5_000, &filter).await?;
        let Some(last) = page.last() else { break };
        after = last.position;
        for recorded in &page {
            let event: FlightEvent = recorded.decode()?;
            let id = FlightIndex
                .document_id(&recorded.stream_id)
                .ok_or("an event of no flight")?;
            let (version, view) = views.entry(id).or_default();
            *view = FlightView::fold(view.take(), &event);
            *version = recorded.stream_version;
        }
    }
    let docs = views
        .into_iter()
        .map(|(id, (version, view))| {
            let doc = FlightDoc::from(view.ok_or("a flight that was never scheduled")?);
            Ok((id, version, serde_json::to_value(doc)?))
        })
        .collect::<Result<Vec<_>>>()?;
    bulk_load(client, index, &docs).await?;
    finish_loading(client, index).await?;
    Ok(started.elapsed())
}

/// Creates `index` with the flight mappings and settings, refresh off and no
/// replicas, as a build does.
async fn create_loading_index(client: &Elasticsearch, index: &str) -> Result<()> {
    let projection = FlightIndex;
    let mut settings = projection.settings();
    settings["refresh_interval"] = json!("-1");
    settings["number_of_replicas"] = json!(0);
    es_json(
        client,
        Method::Put,
        &format!("/{index}"),
        Some(json!({ "settings": settings, "mappings": projection.mappings() })),
    )
    .await?;
    Ok(())
}

/// Plain `_bulk` index requests of [`BASELINE_BULK`] documents.
async fn bulk_load(
    client: &Elasticsearch,
    index: &str,
    docs: &[(String, u64, Value)],
) -> Result<()> {
    for chunk in docs.chunks(BASELINE_BULK) {
        let mut body: Vec<String> = Vec::with_capacity(chunk.len() * 2);
        for (id, _, source) in chunk {
            body.push(json!({ "index": { "_id": id } }).to_string());
            body.push(source.to_string());
        }
        let response = client
            .bulk(BulkParts::Index(index))
            .body(body)
            .send()
            .await?;
        let status = response.status_code();
        let answer: Value = response.json().await?;
        if !status.is_success() || answer["errors"] != false {
            return Err(format!("_bulk into {index} answered {status}: {answer}").into());
        }
    }
    Ok(())
}

/// Restores the serving settings and refreshes, as a build does.
async fn finish_loading(client: &Elasticsearch, index: &str) -> Result<()> {
    es_json(
        client,
        Method::Put,
        &format!("/{index}/_settings"),
        Some(json!({ "index.refresh_interval": null, "index.number_of_replicas": null })),
    )
    .await?;
    es_json(client, Method::Post, &format!("/{index}/_refresh"), None).await?;
    Ok(())
}

/// Index operations (`index_total`) done on an index's primaries.
async fn index_ops(client: &Elasticsearch, index: &str) -> Result<u64> {
    let stats = es_json(
        client,
        Method::Get,
        &format!("/{index}/_stats/indexing"),
        None,
    )
    .await?;
    stats["indices"][index]["primaries"]["indexing"]["index_total"]
        .as_u64()
        .ok_or_else(|| format!("no index_total in the stats of {index}: {stats}").into())
}

/// Every document of an index: `(id, _version, _source)`, by id.
async fn all_documents(client: &Elasticsearch, index: &str) -> Result<Vec<(String, u64, Value)>> {
    let mut docs = Vec::new();
    let mut after: Option<Value> = None;
    loop {
        let mut body = json!({
            "query": { "match_all": {} },
            "sort": [{ "id": "asc" }],
            "size": 1_000,
            "version": true,
        });
        if let Some(after) = &after {
            body["search_after"] = after.clone();
        }
        let page = es_json(
            client,
            Method::Post,
            &format!("/{index}/_search"),
            Some(body),
        )
        .await?;
        let hits = page["hits"]["hits"]
            .as_array()
            .ok_or_else(|| format!("no hits from {index}: {page}"))?;
        let Some(last) = hits.last() else { break };
        after = Some(last["sort"].clone());
        for hit in hits {
            let id = hit["_id"].as_str().ok_or("a hit without _id")?.to_owned();
            let version = hit["_version"].as_u64().ok_or("a hit without _version")?;
            docs.push((id, version, hit["_source"].clone()));
        }
    }
    Ok(docs)
}

/// The index holds exactly the expected documents; `versions`: with the
/// stream's last version as `_version` too.
fn check_against_expected(
    what: &str,
    found: &[(String, u64, Value)],
    expected: &[(String, u64, Value)],
    versions: bool,
) -> Result<()> {
    if found.len() != expected.len() {
        return Err(format!(
            "the {what} index holds {} documents, not {}",
            found.len(),
            expected.len()
        )
        .into());
    }
    let mut expected: Vec<&(String, u64, Value)> = expected.iter().collect();
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    for (doc, want) in found.iter().zip(expected) {
        if doc.0 != want.0 || doc.2 != want.2 {
            return Err(format!(
                "the {what} index holds {:?} = {}, expected {:?} = {}",
                doc.0, doc.2, want.0, want.2
            )
            .into());
        }
        if versions && doc.1 != want.1 {
            return Err(format!(
                "document {:?} of the {what} index has version {}, expected {}",
                doc.0, doc.1, want.1
            )
            .into());
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// live latency

/// One appended event and when it was seen where.
struct Probe {
    id: String,
    price: i64,
    sent: Instant,
    position: Option<Position>,
    appended: Option<Duration>,
    search: Option<Duration>,
    get: Option<Duration>,
    checkpoint: Option<Duration>,
}

impl Probe {
    fn done(&self) -> bool {
        self.search.is_some() && self.get.is_some() && self.checkpoint.is_some()
    }
}

struct Live {
    index: String,
    refresh: RefreshPolicy,
    backlog_events: usize,
    backlog_time: Duration,
    probes: Vec<Probe>,
    runner_retries: u64,
}

/// The live configurations measured: the service's, and the alternative
/// refresh policy.
fn live_variants() -> Vec<(&'static str, ReadModelOptions)> {
    let service = ReadModelOptions::default();
    let other = match service.live.refresh {
        RefreshPolicy::WaitFor => RefreshPolicy::Immediate,
        _ => RefreshPolicy::WaitFor,
    };
    let alternative = ReadModelOptions {
        live: WriterOptions {
            refresh: other,
            ..service.live
        },
        ..service
    };
    vec![
        ("as the service runs it", service),
        ("for comparison", alternative),
    ]
}

async fn live_latency(
    flights: ElasticFlights,
    store: PgEventStore,
    targets: &[&History],
    backlog: &[&History],
) -> Result<Live> {
    let flights = Arc::new(flights);
    let alias = flights.read_model().alias();
    let index = flights
        .read_model()
        .live_index()
        .await?
        .ok_or("no live index after the build")?;
    let client = flights.read_model().client().clone();
    let refresh = flights.read_model().options().live.refresh;

    // A backlog for the live runner to catch up with when it starts.
    let head = append_backlog(&store, backlog).await?;
    let backlog_events = backlog.len() * BACKLOG_EVENTS_PER_FLIGHT;

    // The live runner, as the service runs it.
    let started = Instant::now();
    let shutdown = CancellationToken::new();
    // Stops the runner also when this returns early with an error.
    let _stop_runner = shutdown.clone().drop_guard();
    let status: Arc<Mutex<Option<watch::Receiver<RunnerProgress>>>> = Arc::default();
    let runner = {
        let flights = Arc::clone(&flights);
        let store = store.clone();
        let shutdown = shutdown.clone();
        let status = Arc::clone(&status);
        tokio::spawn(async move {
            flights
                .run(store, RunnerOptions::default(), shutdown, |runner| {
                    *status.lock().unwrap_or_else(PoisonError::into_inner) =
                        Some(runner.progress());
                })
                .await
        })
    };
    let mut status = {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let current = status
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            if let Some(status) = current {
                break status;
            }
            if runner.is_finished() || Instant::now() > deadline {
                return Err("the live runner did not start within 30 s".into());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    let caught_up = tokio::time::timeout(
        BACKLOG_GIVE_UP,
        status.wait_for(|s| s.state == RunnerState::Running && s.checkpoint >= head),
    )
    .await
    .is_ok_and(|waited| waited.is_ok());
    if !caught_up {
        return Err(format!(
            "the live runner did not catch up with a backlog of {backlog_events} events within \
             {} s",
            BACKLOG_GIVE_UP.as_secs()
        )
        .into());
    }
    let backlog_time = started.elapsed();

    let probes: Arc<Mutex<Vec<Probe>>> = Arc::default();
    let appending_done = CancellationToken::new();
    // Warm up: the poller's searches wake the shard from search-idle.
    let poller = tokio::spawn(poll(
        client.clone(),
        alias.clone(),
        Arc::clone(&probes),
        status.clone(),
        appending_done.clone(),
    ));
    tokio::time::sleep(Duration::from_secs(1)).await;

    let mut ticks = tokio::time::interval(Duration::from_secs(1) / LIVE_RATE);
    for (i, history) in targets.iter().enumerate() {
        ticks.tick().await;
        let price = 900_000 + i as i64 * 100;
        let event = NewEvent::from_domain(
            &FlightEvent::PriceChanged {
                price: Money::usd(price),
            },
            Metadata::default().actor("bench"),
        )?;
        let sent = Instant::now();
        let slot = {
            let mut probes = probes.lock().unwrap_or_else(PoisonError::into_inner);
            probes.push(Probe {
                id: history.id.to_string(),
                price,
                sent,
                position: None,
                appended: None,
                search: None,
                get: None,
                checkpoint: None,
            });
            probes.len() - 1
        };
        let expected = ExpectedVersion::Exact(history.events.len() as u64);
        let appended = store
            .append(&history.stream(), expected, vec![event])
            .await?;
        let mut probes = probes.lock().unwrap_or_else(PoisonError::into_inner);
        probes[slot].position = Some(appended.position);
        probes[slot].appended = Some(sent.elapsed());
    }
    appending_done.cancel();
    poller.await??;

    shutdown.cancel();
    let runner_retries = status.borrow().retries;
    runner
        .await?
        .map_err(|e| format!("the live runner failed: {e}"))?;
    let probes = std::mem::take(&mut *probes.lock().unwrap_or_else(PoisonError::into_inner));
    Ok(Live {
        index,
        refresh,
        backlog_events,
        backlog_time,
        probes,
        runner_retries,
    })
}

/// Appends [`BACKLOG_EVENTS_PER_FLIGHT`] price changes to each flight, one
/// append per flight, by [`WRITERS`] writers; returns the last position.
async fn append_backlog(store: &PgEventStore, flights: &[&History]) -> Result<Position> {
    let mut writers = JoinSet::new();
    for writer in 0..WRITERS {
        let mine: Vec<String> = flights
            .iter()
            .skip(writer)
            .step_by(WRITERS)
            .map(|h| h.stream())
            .collect();
        let store = store.clone();
        writers.spawn(async move {
            let mut last = Position::START;
            for (n, stream) in mine.into_iter().enumerate() {
                let events = (0..BACKLOG_EVENTS_PER_FLIGHT)
                    .map(|k| {
                        let price = Money::usd(500_000 + (n * 10 + k) as i64 * 100);
                        NewEvent::from_domain(
                            &FlightEvent::PriceChanged { price },
                            Metadata::default().actor("bench"),
                        )
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let appended = store.append(&stream, ExpectedVersion::Any, events).await?;
                last = last.max(appended.position);
            }
            Ok::<Position, BoxError>(last)
        });
    }
    let mut head = Position::START;
    while let Some(done) = writers.join_next().await {
        head = head.max(done??);
    }
    Ok(head)
}

/// Every [`LIVE_POLL`]: one search and one `_mget` on the alias for every
/// probe not seen yet, and a look at the runner's checkpoint. Ends when the
/// appends are over and every probe is seen or given up.
async fn poll(
    client: Elasticsearch,
    alias: String,
    probes: Arc<Mutex<Vec<Probe>>>,
    status: watch::Receiver<RunnerProgress>,
    appending_done: CancellationToken,
) -> Result<()> {
    let mut ticks = tokio::time::interval(LIVE_POLL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let pending: Vec<(usize, String)> = {
            let mut probes = probes.lock().unwrap_or_else(PoisonError::into_inner);
            let checkpoint = status.borrow().checkpoint;
            let now = Instant::now();
            for probe in probes.iter_mut() {
                if probe.checkpoint.is_none() && probe.position.is_some_and(|p| checkpoint >= p) {
                    probe.checkpoint = Some(now - probe.sent);
                }
            }
            probes
                .iter()
                .enumerate()
                .filter(|(_, p)| !p.done() && p.sent.elapsed() < LIVE_GIVE_UP)
                .map(|(i, p)| (i, p.id.clone()))
                .collect()
        };
        if pending.is_empty() {
            if appending_done.is_cancelled() {
                return Ok(());
            }
            // Keep the shard out of search-idle, as a serving index is.
            let body = json!({ "size": 0 });
            es_json(
                &client,
                Method::Post,
                &format!("/{alias}/_search"),
                Some(body),
            )
            .await?;
            continue;
        }
        let ids: Vec<&str> = pending.iter().map(|(_, id)| id.as_str()).collect();
        let search = async {
            let body = json!({
                "query": { "ids": { "values": ids } },
                "_source": ["price.amount"],
                "size": ids.len(),
            });
            let answer = es_json(
                &client,
                Method::Post,
                &format!("/{alias}/_search"),
                Some(body),
            )
            .await;
            (Instant::now(), answer)
        };
        let get = async {
            let answer = es_json_query(
                &client,
                Method::Post,
                &format!("/{alias}/_mget"),
                &[("_source", "price.amount")],
                Some(json!({ "ids": ids })),
            )
            .await;
            (Instant::now(), answer)
        };
        let ((searched_at, searched), (got_at, got)) = tokio::join!(search, get);
        let searched = searched?;
        let got = got?;
        let prices = |docs: &Value| -> Vec<(String, i64)> {
            docs.as_array()
                .map(|docs| {
                    docs.iter()
                        .filter_map(|d| {
                            Some((
                                d["_id"].as_str()?.to_owned(),
                                d["_source"]["price"]["amount"].as_i64()?,
                            ))
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        let in_search = prices(&searched["hits"]["hits"]);
        let in_get = prices(&got["docs"]);
        let mut probes = probes.lock().unwrap_or_else(PoisonError::into_inner);
        for (i, _) in &pending {
            let probe = &mut probes[*i];
            let seen = |found: &[(String, i64)]| {
                found
                    .iter()
                    .any(|(id, price)| *id == probe.id && *price == probe.price)
            };
            if probe.search.is_none() && seen(&in_search) {
                probe.search = Some(searched_at - probe.sent);
            }
            if probe.get.is_none() && seen(&in_get) {
                probe.get = Some(got_at - probe.sent);
            }
        }
    }
}

impl Live {
    fn print(&self, label: &str) {
        let n = self.probes.len();
        let refresh = match self.refresh {
            RefreshPolicy::WaitFor => "refresh=wait_for",
            RefreshPolicy::Immediate => "refresh=true",
            _ => "no refresh parameter",
        };
        println!();
        println!(
            "2. live latency, {label}: {n} single PriceChanged appends at {LIVE_RATE}/s, each to \
             another flight; live runner ElasticFlights::run (RunnerOptions::default: batches of \
             <= 500, 20 ms batch delay), live _bulk with {refresh}, index {} at its default 1 s \
             refresh; polled every {} ms",
            self.index,
            LIVE_POLL.as_millis()
        );
        println!(
            "   {:<44} {:>6} {:>9} {:>9} {:>9} {:>7}",
            "from the append call until", "seen", "p50", "p99", "max", ""
        );
        let row =
            |name: &str, pick: &dyn Fn(&Probe) -> Option<Duration>, target: Option<Duration>| {
                let mut seen: Vec<Duration> = self.probes.iter().filter_map(pick).collect();
                seen.sort();
                let missed = n - seen.len();
                let q = |p: f64| -> String {
                    if seen.is_empty() {
                        return "-".into();
                    }
                    // Nearest rank; a missed probe counts as the slowest.
                    let rank = ((p * n as f64).ceil() as usize).clamp(1, n);
                    match seen.get(rank - 1) {
                        Some(d) => format!("{:.0} ms", d.as_secs_f64() * 1000.0),
                        None => format!("> {} s", LIVE_GIVE_UP.as_secs()),
                    }
                };
                let max = if missed > 0 {
                    format!("> {} s", LIVE_GIVE_UP.as_secs())
                } else {
                    q(1.0)
                };
                let p99 = if seen.is_empty() {
                    None
                } else {
                    let rank = ((0.99 * n as f64).ceil() as usize).clamp(1, n);
                    seen.get(rank - 1).copied()
                };
                let verdict = match target {
                    Some(t) => match p99 {
                        Some(p) if p < t => format!("ok (p99 < {:.1} s)", t.as_secs_f64()),
                        _ => format!("MISSED (p99 < {:.1} s)", t.as_secs_f64()),
                    },
                    None => String::new(),
                };
                println!(
                    "   {name:<44} {:>6} {:>9} {:>9} {:>9}  {verdict}",
                    format!("{}/{n}", seen.len()),
                    q(0.50),
                    q(0.99),
                    max
                );
            };
        row(
            "append committed (PgEventStore::append)",
            &|p| p.appended,
            None,
        );
        row(
            "searchable: _search on the alias has it",
            &|p| p.search,
            Some(LIVE_TARGET_P99),
        );
        row("GET by id (realtime _mget) has it", &|p| p.get, None);
        row(
            "runner checkpoint past it (min_position)",
            &|p| p.checkpoint,
            None,
        );
        println!(
            "   live runner starting behind a backlog of {} events ({} appends of {}): caught up \
             in {:.2} s = {:.0} events/s",
            self.backlog_events,
            self.backlog_events / BACKLOG_EVENTS_PER_FLIGHT,
            BACKLOG_EVENTS_PER_FLIGHT,
            self.backlog_time.as_secs_f64(),
            self.backlog_events as f64 / self.backlog_time.as_secs_f64()
        );
        println!("   runner retries during the run: {}", self.runner_retries);
    }
}
