//! `airline-http-bench`: the airline service over HTTP (and its flight
//! search over gRPC) on PostgreSQL and Elasticsearch (or OpenSearch), with a
//! load generator in the same process.
//!
//! ```text
//! DATABASE_URL=postgres://annals:annals@127.0.0.1:5432/annals_test \
//! ELASTICSEARCH_URL=http://127.0.0.1:9200 \
//!     cargo run --release -p annals-bench --bin airline-http-bench
//! ```
//!
//! Environment knobs, for a shorter run (the defaults are the benchmark):
//!
//! - `HBENCH_PHASES`: the phases to run, `1` (commands), `2` (search) or
//!   `1,2` (the default). The log is seeded and the index built either way:
//!   in a full run the commands run against that index too.
//! - `HBENCH_SEARCH_SECS`: the measured window of each search run (30 s),
//!   e.g. 5 for a smoke run; the warm-up stays 3 s.
//! - `HBENCH_SEARCH_ORDER`: `rest,grpc` (the default) or `grpc,rest`, to see
//!   what going first or second does to each API's figures.
//! - `HBENCH_SETTLE_SECS`: how long to watch the booking saga after the
//!   booking window (60 s).
//!
//! Works in a fresh PostgreSQL schema and under an index prefix of its own
//! (`hbench<random>_`), both dropped at the end, also on failure. The service
//! runs in-process the way `airline serve` runs it: `PgEventStore` (default
//! pool options; its own schema and `NOTIFY` channel), the Elasticsearch
//! flight read model (`Background::elastic_flights`, `RunnerOptions::default`),
//! the booking saga (`Background::booking_saga`, deadlines every 250 ms), the
//! simulated payment provider behind `ResilientPayments`, the real axum
//! router ([`router`], with auth, limits, metrics and JSON errors) served by
//! [`serve`] on a real TCP listener on `127.0.0.1:0`, and beside it the gRPC
//! flight search ([`airline::grpc::serve`] over the same `FlightQueries`,
//! with the HTTP settings' request and drain timeouts, as `airline serve`
//! serves it on `AIRLINE_GRPC_LISTEN`) on a second listener on
//! `127.0.0.1:0`. The only setting that differs from `serve`'s defaults: the
//! rate limit is raised to a million requests per second (the layer still
//! runs on every request; gRPC has none).
//!
//! The service and the load generator run on two tokio runtimes (threads
//! named `service` and `loadgen`), so that the CPU each used can be told
//! apart; PostgreSQL and Elasticsearch CPU is read from `/proc` too. Both
//! servers run on the service's runtime and both clients (with the gRPC
//! channel's connection task) on the load generator's, so the CPU lines of
//! the two search runs read the same way.
//!
//! Figures, in the order they are printed (the run does 2 first: its
//! flights are seeded before the service starts):
//!
//! 1. **Commands over HTTP**: 32 clients (tokio tasks, each with its own
//!    keep-alive HTTP/1.1 connection) send back to back for 20 s (after 2 s
//!    of warm-up): (a) `POST /flights` as admin, then (b) `POST /bookings` as
//!    agent (one or two segments from a pool of 1,000 of the flights just
//!    scheduled, 1 to 3 seats, `tok_visa`). Requests/s, p50/p99/max latency,
//!    and every answer that is not 2xx. For bookings also: how many the saga
//!    had picked up, confirmed and cancelled (with reasons) at the end of the
//!    window, and 60 s later (`HBENCH_SETTLE_SECS` sets that wait, e.g. 900 to
//!    see how a backlog ends).
//! 2. **Search latency at a fixed rate, REST then gRPC**: 100,000 flights
//!    (`FlightScheduled`, hub-weighted routes, departures over 30 days, fares
//!    by block time) are appended to the log in transactions of 500 streams by
//!    4 writers before the service starts; the service's start then builds the
//!    index with the read model's first-build catch-up (timed until the runner
//!    is live at the head of the log). An open-loop generator then sends `GET
//!    /flights/search` at exactly 200 requests/s for 30 s (after 3 s of
//!    warm-up at the same rate): each request is scheduled at its intended
//!    send time and its latency counted from that time, so that queueing in
//!    the generator counts too. The queries mix route + day, route + day
//!    range + price cap, departure boards, free text, destination + seats,
//!    whole-day price lists of 100, and next pages (`after`) of earlier
//!    answers, with all four sorts. Right after, the same generator sends the
//!    same queries (the same sequence: one typed query, rendered into a query
//!    string or a `FlightSearchRequest` with the same filters, sort and page
//!    size; no `min_position` in either) as gRPC `SearchFlights` at the same
//!    rate, with its own 3 s warm-up and 30 s window; its next pages use the
//!    cursors of its own answers. One after the other rather than in
//!    alternating rounds: the service closes keep-alive connections idle for
//!    5 s (`header_read_timeout`), so a REST round after a gRPC round would
//!    connect again inside its window; and each run has a CPU window of its
//!    own. Before both, each API sends 8 s (its 3 s warm-up and 5 s) of a mix
//!    from another seed, not counted (the `primed` line): the first searches
//!    after the build meet Elasticsearch cold, and in smoke runs on a busy
//!    machine whichever API went first paid for it. The order still left can
//!    favour the second run: it replays filters Elasticsearch's query cache
//!    may still hold from the first (its request cache keeps no searches that
//!    return hits); `HBENCH_SEARCH_ORDER=grpc,rest` swaps them to see. REST
//!    goes through a pool of keep-alive HTTP/1.1 connections (a request takes
//!    an idle one, or opens one when all are busy), gRPC through one HTTP/2
//!    channel (one connection, the calls multiplexed on it): each API's usual
//!    client. At 200/s and a few milliseconds per search only a handful of
//!    requests are in flight, which one HTTP/2 connection carries without
//!    queueing, and both connect in the warm-up (REST again only for more
//!    requests in flight at once than before, or after a connection idled
//!    out). Both get requests/s, p50/p99/max, the answers that are not OK
//!    (non-2xx, or a gRPC status other than `OK`, by REST error code) and the
//!    same breakdown by query kind. Latency ends with the answer's body read
//!    (REST, before its JSON is parsed) or decoded (gRPC: tonic decodes the
//!    message before the call returns).
//!
//! Each phase also prints where the machine's CPU went over its measured
//! window: the service's and the load generator's threads, this run's
//! PostgreSQL backends, the search server's JVM (when it runs on this
//! machine), interrupts, and what else ran ("not ours").

mod bench_support;

use bench_support::es_json;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use airline::app::Airline;
use airline::background::{Background, RunnerInfo};
use airline::booking::{ResilientPayments, SimulatedPayments};
use airline::grpc::proto::flight_service_client::FlightServiceClient;
use airline::grpc::proto::{FlightSearchRequest, SortOrder};
use airline::grpc::{GrpcError, GrpcSettings};
use airline::http::{AppState, HttpSettings, RateLimit, Role, Tokens, router, serve};
use airline::scheduling::{Flight, FlightEvent};
use airline::search::ElasticFlights;
use airline::search::FlightReads;
use airline::values::{AirportCode, Money};
use annals::projection::{RunnerOptions, RunnerState};
use annals::{AggregateType, AppendOptions, EventStore, ExpectedVersion, Metadata, NewEvent};
use annals_elastic::elasticsearch::Elasticsearch;
use annals_elastic::elasticsearch::http::Method;
use annals_postgres::{PgEventStore, PgStoreOptions};
use chrono::{DateTime, DurationRound, NaiveDate, TimeDelta, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use sqlx::PgConnection;
use sqlx::postgres::PgConnectOptions;
use tokio::net::TcpListener;
use tokio::runtime::Handle;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};
use uuid::Uuid;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Result<T, E = BoxError> = std::result::Result<T, E>;

const ADMIN_TOKEN: &str = "hbench-admin-token";
const AGENT_TOKEN: &str = "hbench-agent-token";

/// Closed-loop clients of the command phases.
const CLIENTS: usize = 32;
const COMMAND_WARM_UP: Duration = Duration::from_secs(2);
/// The measured window of each command run: `HBENCH_COMMAND_SECS`, 20 s by default.
fn command_window() -> Duration {
    static WINDOW: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *WINDOW.get_or_init(|| {
        std::env::var("HBENCH_COMMAND_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .map_or(Duration::from_secs(20), Duration::from_secs)
    })
}
const COMMAND_TARGET: f64 = 1_500.0;
/// Flights the bookings choose from.
const BOOKING_POOL: usize = 1_000;
/// Longest wait for the saga to settle every booking after the window
/// (`HBENCH_SETTLE_SECS` overrides it, to see how a backlog ends).
const SETTLE_LIMIT: Duration = Duration::from_secs(60);

const SEARCH_FLIGHTS: usize = 100_000;
const SEED_BATCH: usize = 500;
const SEED_WRITERS: usize = 4;
/// Departure days of the seeded flights: tomorrow and the 29 after.
const DAYS: i64 = 30;
const SEARCH_RATE: u32 = 200;
const SEARCH_WARM_UP: Duration = Duration::from_secs(3);
/// The measured window of each search run (`HBENCH_SEARCH_SECS` overrides
/// it, for a smoke run).
const SEARCH_WINDOW: Duration = Duration::from_secs(30);
const SEARCH_TARGET_P99: Duration = Duration::from_millis(50);
/// The measured runs' mix: the same seed for every API, so the same queries
/// in the same order.
const SEARCH_SEED: u64 = 200;
/// Priming before the measured runs, per API (after its own warm-up): the
/// first searches after the build meet Elasticsearch cold, and whichever API
/// went first paid for it.
const SEARCH_PRIMING: Duration = Duration::from_secs(5);
/// The priming's mix: other queries than the measured runs'.
const PRIMING_SEED: u64 = 199;
/// Longest the first build of the index may take.
const BUILD_LIMIT: Duration = Duration::from_secs(600);
/// Longest wait for the merges after the build, before searching.
const MERGE_LIMIT: Duration = Duration::from_secs(30);

/// The busiest hubs get four times the flights of the other hubs (so sixteen
/// times the flights on routes between them); queries pick routes the same way.
const BUSIEST: &[&str] = &[
    "LHR", "JFK", "CDG", "FRA", "DXB", "AMS", "LAX", "ORD", "ATL", "SIN", "HND", "IST",
];

/// What the environment asks of this run (see the module doc).
#[derive(Debug, Clone, Copy)]
struct Knobs {
    /// Phase 1, the commands.
    commands: bool,
    /// Phase 2, the search over REST and gRPC.
    search: bool,
    /// The measured window of each search run.
    search_window: Duration,
    /// The APIs of the search runs, in the order they run.
    search_order: [Api; 2],
}

impl Knobs {
    /// Reads the `HBENCH_*` variables; a value they do not take is an error.
    fn from_env() -> Result<Self> {
        let (commands, search) = match std::env::var("HBENCH_PHASES") {
            Err(_) => (true, true),
            Ok(phases) => {
                let mut chosen = (false, false);
                for phase in phases.split(',').map(str::trim) {
                    match phase {
                        "1" => chosen.0 = true,
                        "2" => chosen.1 = true,
                        other => {
                            return Err(format!(
                                "HBENCH_PHASES: {other:?} is not a phase (1 or 2, e.g. 1,2)"
                            )
                            .into());
                        }
                    }
                }
                chosen
            }
        };
        let search_window = match std::env::var("HBENCH_SEARCH_SECS") {
            Err(_) => SEARCH_WINDOW,
            Ok(secs) => match secs.trim().parse::<u64>() {
                Ok(secs) if secs > 0 => Duration::from_secs(secs),
                _ => {
                    return Err(
                        format!("HBENCH_SEARCH_SECS: {secs:?} is not a number of seconds").into(),
                    );
                }
            },
        };
        let search_order = match std::env::var("HBENCH_SEARCH_ORDER").as_deref() {
            Err(_) | Ok("rest,grpc") => [Api::Rest, Api::Grpc],
            Ok("grpc,rest") => [Api::Grpc, Api::Rest],
            Ok(other) => {
                return Err(format!(
                    "HBENCH_SEARCH_ORDER: {other:?} is neither rest,grpc nor grpc,rest"
                )
                .into());
            }
        };
        Ok(Self {
            commands,
            search,
            search_window,
            search_order,
        })
    }
}

fn main() -> std::process::ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let runtimes = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("service")
        .build()
        .and_then(|service| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .thread_name("loadgen")
                .build()
                .map(|loadgen| (service, loadgen))
        });
    let (service, loadgen) = match runtimes {
        Ok(runtimes) => runtimes,
        Err(error) => {
            eprintln!("airline-http-bench: cannot start the runtimes: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let outcome = service.block_on(main_inner(loadgen.handle().clone()));
    loadgen.shutdown_background();
    service.shutdown_timeout(Duration::from_secs(5));
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("airline-http-bench: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn main_inner(loadgen: Handle) -> Result<()> {
    // Before connecting: a mistyped knob fails at once.
    let knobs = Knobs::from_env()?;
    let bench_support::Servers {
        client,
        server,
        base,
        mut admin,
        run_id,
    } = bench_support::servers().await?;
    let prefix = format!("hbench{run_id}_");
    let schema = format!("annals_hbench_{run_id}");
    sqlx::raw_sql(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut admin)
        .await?;

    let outcome = run(
        &loadgen, knobs, &client, &server, &base, &mut admin, &schema, &prefix, &run_id,
    )
    .await;

    bench_support::clean_up(&client, admin, &[schema], &prefix, outcome).await
}

// ---------------------------------------------------------------------------
// the run

/// The service under test, as `airline serve` wires it.
struct Service {
    address: SocketAddr,
    /// The gRPC flight search's.
    grpc_address: SocketAddr,
    shutdown: CancellationToken,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    grpc_server: tokio::task::JoinHandle<Result<(), GrpcError>>,
    background: Background,
    flights_runner: RunnerInfo,
    saga_runner: RunnerInfo,
}

#[allow(clippy::too_many_arguments)]
async fn run(
    loadgen: &Handle,
    knobs: Knobs,
    client: &Elasticsearch,
    server: &Value,
    base: &PgConnectOptions,
    admin: &mut PgConnection,
    schema: &str,
    prefix: &str,
    run_id: &str,
) -> Result<()> {
    let store = PgStoreOptions::new()
        .notify_channel(format!("hbench_{run_id}"))
        .application_name("airline-http-bench")
        .listener_application_name("airline-http-bench-listener")
        .connect_with(base.clone().options([("search_path", schema)]))
        .await?;
    store.migrate().await?;
    let machine = Machine::probe(client, server, &store).await?;
    machine.print();

    // 1. Seed the log, then start the service: its start builds the index.
    let today = Utc::now()
        .duration_trunc(TimeDelta::days(1))
        .map_err(|e| format!("today: {e}"))?;
    let mut rng = StdRng::seed_from_u64(6);
    let airports = weighted_airports();
    let flights: Vec<FlightEvent> = (0..SEARCH_FLIGHTS)
        .map(|i| seeded_flight(&mut rng, &airports, today, i))
        .collect::<Result<_>>()?;
    let started = Instant::now();
    seed(&store, flights).await?;
    let seeded_in = started.elapsed();
    println!(
        "  seeded {SEARCH_FLIGHTS} FlightScheduled events in {:.1} s ({:.0}/s; transactions \
         of {SEED_BATCH} streams, {SEED_WRITERS} writers)",
        seeded_in.as_secs_f64(),
        SEARCH_FLIGHTS as f64 / seeded_in.as_secs_f64()
    );

    let started = Instant::now();
    let cpu_before = cpu_snapshot(admin, machine.es_pid).await;
    let service = start_service(&store, client, prefix).await?;
    let outcome = phases(
        loadgen,
        knobs,
        &service,
        &store,
        client,
        admin,
        schema,
        prefix,
        today,
        Build {
            seeded_in,
            started,
            cpu_before,
            built_in: Duration::ZERO,
            merges_waited: Duration::ZERO,
            indexed: 0,
            cpu: CpuShare::default(),
        },
        machine.es_pid,
    )
    .await;
    stop_service(service).await;
    store.close().await;
    outcome
}

#[allow(clippy::too_many_arguments)]
async fn phases(
    loadgen: &Handle,
    knobs: Knobs,
    service: &Service,
    store: &PgEventStore,
    client: &Elasticsearch,
    admin: &mut PgConnection,
    schema: &str,
    prefix: &str,
    today: DateTime<Utc>,
    mut build: Build,
    es_pid: Option<u32>,
) -> Result<()> {
    let address = service.address;

    // The first build of the index, as the service's start does it.
    wait_live(&service.flights_runner, store, BUILD_LIMIT).await?;
    build.built_in = build.started.elapsed();
    build.cpu = cpu_snapshot(admin, es_pid).await.since(&build.cpu_before);
    let alias = format!("{prefix}flights");
    build.indexed = es_json(client, Method::Get, &format!("/{alias}/_count"), None).await?["count"]
        .as_u64()
        .unwrap_or(0);
    if build.indexed != SEARCH_FLIGHTS as u64 {
        return Err(format!(
            "the index holds {} flights, not {SEARCH_FLIGHTS}",
            build.indexed
        )
        .into());
    }
    println!(
        "  service up on http://{address} (gRPC flight search on {}); index built by the read \
         model's catch-up in {:.1} s",
        service.grpc_address,
        build.built_in.as_secs_f64()
    );
    // Steady state: let the merges the bulk load started finish.
    let waiting = Instant::now();
    while waiting.elapsed() < MERGE_LIMIT {
        let stats = es_json(client, Method::Get, &format!("/{alias}/_stats/merge"), None).await?;
        if stats["_all"]["total"]["merges"]["current"].as_u64() == Some(0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    build.merges_waited = waiting.elapsed();

    // 2. Search at a fixed rate: REST, then the same queries over gRPC
    // (or the other way round).
    let mut searches = Vec::new();
    let target = |api| match api {
        Api::Rest => address,
        Api::Grpc => service.grpc_address,
    };
    if knobs.search {
        let mut primed = Vec::new();
        for api in knobs.search_order {
            let start = Instant::now() + Duration::from_millis(200);
            let load = search_load(api, target(api), today, start, SEARCH_PRIMING, PRIMING_SEED);
            let open = loadgen.spawn(load).await??;
            primed.push(format!(
                "{} p50 {} p99 {}, {} errors",
                api.name(),
                ms(percentile(&open.latencies, 0.50)),
                ms(percentile(&open.latencies, 0.99)),
                open.errors.values().sum::<usize>()
            ));
        }
        println!(
            "  primed with {} s of another mix at {SEARCH_RATE}/s per API, not counted: {}",
            (SEARCH_WARM_UP + SEARCH_PRIMING).as_secs(),
            primed.join("; ")
        );
        for api in knobs.search_order {
            println!(
                "  {}: {} s warm-up, then {} s at {SEARCH_RATE}/s (open loop, {})",
                api.name(),
                SEARCH_WARM_UP.as_secs(),
                knobs.search_window.as_secs(),
                api.connections()
            );
            let start = Instant::now() + Duration::from_millis(200);
            let window = start + SEARCH_WARM_UP;
            let load = loadgen.spawn(search_load(
                api,
                target(api),
                today,
                start,
                knobs.search_window,
                SEARCH_SEED,
            ));
            let cpu = cpu_over(admin, es_pid, window, window + knobs.search_window).await;
            let mut search = load.await??;
            search.cpu = cpu;
            searches.push((api, search));
        }
    }

    let commands = if knobs.commands {
        Some(commands(loadgen, service, store, admin, schema, es_pid).await?)
    } else {
        None
    };
    let report = Report {
        build,
        searches,
        search_window: knobs.search_window,
        commands,
    };
    report.print();
    Ok(())
}

/// Phase 1: `POST /flights`, then `POST /bookings`, then the saga watched
/// until every booking is settled or the settle limit has passed.
async fn commands(
    loadgen: &Handle,
    service: &Service,
    store: &PgEventStore,
    admin: &mut PgConnection,
    schema: &str,
    es_pid: Option<u32>,
) -> Result<Commands> {
    let address = service.address;
    // 1a. Schedule flights.
    println!(
        "  POST /flights: {CLIENTS} clients, {} s warm-up, {} s measured",
        COMMAND_WARM_UP.as_secs(),
        command_window().as_secs()
    );
    let start = Instant::now() + Duration::from_millis(200);
    let window = start + COMMAND_WARM_UP;
    let load = loadgen.spawn(closed_loop(address, Arc::new(Vec::new()), start));
    let cpu = cpu_over(admin, es_pid, window, window + command_window()).await;
    let mut schedule = load.await??;
    schedule.cpu = cpu;
    let pool: Vec<Uuid> = schedule.ids.iter().take(BOOKING_POOL).copied().collect();
    if pool.len() < BOOKING_POOL {
        return Err(format!("only {} flights scheduled for the booking pool", pool.len()).into());
    }

    // 1b. Book.
    println!(
        "  POST /bookings: {CLIENTS} clients, {} s warm-up, {} s measured",
        COMMAND_WARM_UP.as_secs(),
        command_window().as_secs()
    );
    let start = Instant::now() + Duration::from_millis(200);
    let window = start + COMMAND_WARM_UP;
    let statements_before = statements(admin).await;
    let load = loadgen.spawn(closed_loop(address, Arc::new(pool), start));
    let pending = tokio::spawn(pending_every_5s(
        schema.to_owned(),
        window,
        window + command_window(),
    ));
    let cpu = cpu_over(admin, es_pid, window, window + command_window()).await;
    let mut booking = load.await??;
    let _ = pending.await;
    booking.cpu = cpu;
    let at_end = booking_counts(admin, schema).await?;
    let settle_limit = std::env::var("HBENCH_SETTLE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(SETTLE_LIMIT, Duration::from_secs);
    println!(
        "  waiting up to {} s for the booking saga to settle every booking",
        settle_limit.as_secs()
    );
    let settle_started = Instant::now();
    let mut next_line = settle_started;
    let settled = loop {
        let counts = booking_counts(admin, schema).await?;
        if counts.confirmed + counts.cancelled >= counts.requested
            || settle_started.elapsed() > settle_limit
        {
            break counts;
        }
        if Instant::now() >= next_line {
            println!(
                "    +{:>3.0} s: of {} bookings, {} picked up by the saga, {} confirmed, {} \
                 cancelled",
                settle_started.elapsed().as_secs_f64(),
                counts.requested,
                counts.started,
                counts.confirmed,
                counts.cancelled
            );
            next_line += Duration::from_secs(10);
        }
        // Counting takes the server tens of milliseconds over a large log;
        // more often would take CPU from the saga being watched.
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let settled_after = settle_started.elapsed();
    if let (Some(before), Some(after)) = (statements_before, statements(admin).await) {
        println!(
            "  statements (pg_stat_statements calls of this role, bookings and saga, warm-up \
             included): {} for {} bookings, {:.1} per booking",
            after - before,
            settled.requested,
            (after - before) as f64 / settled.requested.max(1) as f64
        );
    }
    let reasons = cancel_reasons(admin, schema).await?;
    let saga = service.saga_runner.progress.borrow().clone();
    let head = store.head().await?;

    Ok(Commands {
        schedule,
        booking,
        at_end,
        settled,
        settled_after,
        reasons,
        saga_retries: saga.retries,
        saga_dead_letters: saga.dead_letters,
        saga_behind: saga.checkpoint < head,
    })
}

async fn start_service(
    store: &PgEventStore,
    client: &Elasticsearch,
    prefix: &str,
) -> Result<Service> {
    // `airline_on`: the write side with the simulated payment provider.
    let provider = ResilientPayments::new(SimulatedPayments::new(), Duration::from_millis(500), 2);
    let airline = Airline::new(store.clone(), Arc::new(provider));
    // `start_projections` with the elastic read model.
    let flights = Arc::new(ElasticFlights::new(client.clone(), prefix));
    let mut background = Background::new(CancellationToken::new());
    let flights_runner = background.elastic_flights(
        store.clone(),
        Arc::clone(&flights),
        RunnerOptions::default(),
    );
    // HBENCH_SAGA_PARTITIONS: the booking saga's partitions (1 by default).
    let saga_partitions = std::env::var("HBENCH_SAGA_PARTITIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let saga_runner = background.booking_saga(
        &airline,
        RunnerOptions::default(),
        Duration::from_millis(250),
        saga_partitions,
    );
    let reads: Arc<dyn FlightReads> = flights;
    let tokens = Tokens::new()
        .with(ADMIN_TOKEN, Role::Admin)
        .and_then(|t| t.with(AGENT_TOKEN, Role::Agent))?;
    let settings = HttpSettings {
        rate_limit: Some(RateLimit {
            burst: 1_000_000,
            per_second: 1_000_000.0,
        }),
        ..HttpSettings::default()
    };
    // `run_service`.
    let state = AppState::new(airline, reads, tokens)
        .with_settings(settings)
        .with_runners(background.runners());
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let grpc_listener = TcpListener::bind("127.0.0.1:0").await?;
    let grpc_address = grpc_listener.local_addr()?;
    // `Config::grpc_settings`: the HTTP layer's request and drain timeouts.
    let grpc_settings = GrpcSettings {
        request_timeout: state.settings().request_timeout,
        drain_timeout: state.settings().drain_timeout,
    };
    let shutdown = CancellationToken::new();
    let grpc_server = tokio::spawn({
        let queries = state.queries().clone();
        let shutdown = shutdown.clone();
        async move { airline::grpc::serve(grpc_listener, queries, &grpc_settings, shutdown).await }
    });
    let server = tokio::spawn({
        let settings = state.settings().clone();
        let app = router(state);
        let shutdown = shutdown.clone();
        async move { serve(listener, app, &settings, shutdown).await }
    });
    Ok(Service {
        address,
        grpc_address,
        shutdown,
        server,
        grpc_server,
        background,
        flights_runner,
        saga_runner,
    })
}

async fn stop_service(service: Service) {
    service.shutdown.cancel();
    match tokio::time::timeout(Duration::from_secs(10), service.server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(error))) => eprintln!("the server failed: {error}"),
        Ok(Err(error)) => eprintln!("the server task failed: {error}"),
        Err(_) => eprintln!("the server did not stop within 10 s"),
    }
    match tokio::time::timeout(Duration::from_secs(10), service.grpc_server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(error))) => eprintln!("the gRPC server failed: {error}"),
        Ok(Err(error)) => eprintln!("the gRPC server task failed: {error}"),
        Err(_) => eprintln!("the gRPC server did not stop within 10 s"),
    }
    service.background.shutdown(Duration::from_secs(10)).await;
}

/// Waits until the flight runner is live (the first build is done) and has
/// caught up with the head of the log.
async fn wait_live(runner: &RunnerInfo, store: &PgEventStore, limit: Duration) -> Result<()> {
    let head = store.head().await?;
    let deadline = Instant::now() + limit;
    loop {
        let status = runner.progress.borrow().clone();
        if status.state == RunnerState::Running && status.checkpoint >= head {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the flight read model was not live within {} s: {status:?}",
                limit.as_secs()
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------
// seed data

/// The hubs ([`airline::airports::HUBS`]), the busiest first-class: four
/// entries each.
fn weighted_airports() -> Vec<AirportCode> {
    let mut airports = Vec::new();
    for hub in airline::airports::HUBS {
        let Ok(code) = hub.parse::<AirportCode>() else {
            continue;
        };
        let weight = if BUSIEST.contains(hub) { 4 } else { 1 };
        airports.extend(std::iter::repeat_n(code, weight));
    }
    airports
}

fn route(rng: &mut StdRng, airports: &[AirportCode]) -> (AirportCode, AirportCode) {
    let from = airports[rng.random_range(0..airports.len())];
    loop {
        let to = airports[rng.random_range(0..airports.len())];
        if to != from {
            return (from, to);
        }
    }
}

/// One seeded flight: a weighted route, a departure in the next 30 days
/// between 06:00 and 22:55 UTC, a block time of 1 to 15 hours, a fare by
/// block time with noise ending in 9 dollars, a realistic seat count.
fn seeded_flight(
    rng: &mut StdRng,
    airports: &[AirportCode],
    today: DateTime<Utc>,
    i: usize,
) -> Result<FlightEvent> {
    let (from, to) = route(rng, airports);
    let departure = today
        + TimeDelta::days(rng.random_range(1..=DAYS))
        + TimeDelta::minutes(5 * rng.random_range(72..276));
    let minutes = 5 * rng.random_range(12..=180);
    let dollars = (59.0 + minutes as f64 * 0.9) * rng.random_range(0.8..1.45);
    let dollars = ((dollars / 10.0).floor() * 10.0 + 9.0) as i64;
    let seats = match minutes {
        m if m < 180 => [150, 174, 180][rng.random_range(0..3)],
        m if m < 480 => [180, 200, 220][rng.random_range(0..3)],
        _ => [250, 296, 350][rng.random_range(0..3)],
    };
    let carrier = ["AN", "BA", "LH", "AF", "UA", "KL"][i % 6];
    Ok(FlightEvent::FlightScheduled {
        flight_id: uuid::Builder::from_random_bytes(rng.random()).into_uuid(),
        flight_number: format!("{carrier}{}", 1 + i % 9_999).parse()?,
        from,
        to,
        departure,
        arrival: departure + TimeDelta::minutes(minutes),
        seats,
        price: Money::usd(dollars * 100),
    })
}

/// Appends one `FlightScheduled` per flight stream, [`SEED_BATCH`] streams
/// per transaction, by [`SEED_WRITERS`] writers.
async fn seed(store: &PgEventStore, flights: Vec<FlightEvent>) -> Result<()> {
    let batches: Vec<Vec<FlightEvent>> = flights
        .chunks(SEED_BATCH)
        .map(<[FlightEvent]>::to_vec)
        .collect();
    let batches = Arc::new(Mutex::new(batches));
    let mut writers = JoinSet::new();
    for _ in 0..SEED_WRITERS {
        let store = store.clone();
        let batches = Arc::clone(&batches);
        writers.spawn(async move {
            loop {
                let Some(batch) = batches.lock().unwrap_or_else(PoisonError::into_inner).pop()
                else {
                    return Ok::<(), BoxError>(());
                };
                let mut tx = store.pool().begin().await?;
                for event in &batch {
                    let FlightEvent::FlightScheduled { flight_id, .. } = event else {
                        continue;
                    };
                    let stream = <Flight as AggregateType>::stream_id(flight_id);
                    let new = NewEvent::from_domain(event, Metadata::default().actor("bench"))?;
                    store
                        .append_in_transaction(
                            &mut tx,
                            &stream,
                            ExpectedVersion::NoStream,
                            vec![new],
                            AppendOptions::default(),
                        )
                        .await?;
                }
                tx.commit().await?;
            }
        });
    }
    while let Some(done) = writers.join_next().await {
        done??;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// commands: closed loop

/// What one closed-loop phase measured.
struct Closed {
    /// Latencies of the requests sent in the window.
    latencies: Vec<Duration>,
    /// Non-2xx answers and transport errors, window and warm-up alike.
    errors: BTreeMap<String, usize>,
    /// Requests in the warm-up.
    warm_up: usize,
    /// Ids returned (all of them, warm-up included).
    ids: Vec<Uuid>,
    cpu: CpuShare,
}

/// Drives [`CLIENTS`] clients for the warm-up and the window: `POST /flights`
/// when `pool` is empty, else `POST /bookings` on flights of `pool`.
async fn closed_loop(
    address: SocketAddr,
    pool: Arc<Vec<Uuid>>,
    started: Instant,
) -> Result<Closed> {
    let window_start = started + COMMAND_WARM_UP;
    let window_end = window_start + command_window();
    let mut clients = JoinSet::new();
    for n in 0..CLIENTS {
        let pool = Arc::clone(&pool);
        clients.spawn(async move {
            let http = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .tcp_nodelay(true)
                .timeout(Duration::from_secs(30))
                .build()?;
            let mut rng = StdRng::seed_from_u64(1_000 + n as u64);
            let airports = weighted_airports();
            let today = Utc::now()
                .duration_trunc(TimeDelta::days(1))
                .map_err(|e| format!("today: {e}"))?;
            let mut latencies = Vec::new();
            let mut errors: BTreeMap<String, usize> = BTreeMap::new();
            let mut ids: Vec<Uuid> = Vec::new();
            let mut warm_up = 0;
            tokio::time::sleep_until(started.into()).await;
            let (url, token) = if pool.is_empty() {
                (format!("http://{address}/flights"), ADMIN_TOKEN)
            } else {
                (format!("http://{address}/bookings"), AGENT_TOKEN)
            };
            let mut i = 0usize;
            loop {
                let sent = Instant::now();
                if sent >= window_end {
                    break;
                }
                let body = if pool.is_empty() {
                    flight_body(&mut rng, &airports, today, n * 1_000_000 + i)
                } else {
                    booking_body(&mut rng, &pool, n, i)
                };
                i += 1;
                let answer = http
                    .post(&url)
                    .bearer_auth(token)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await;
                let outcome = match answer {
                    Ok(response) => {
                        let status = response.status();
                        match response.bytes().await {
                            Ok(bytes) if status.is_success() => Ok(bytes),
                            Ok(bytes) => Err(format!(
                                "{status}: {}",
                                error_code(&bytes).unwrap_or_default()
                            )),
                            Err(e) => Err(format!("reading the body: {e}")),
                        }
                    }
                    Err(e) => Err(format!("transport: {e}")),
                };
                let latency = sent.elapsed();
                match outcome {
                    Ok(bytes) => {
                        if let Ok(done) = serde_json::from_slice::<Value>(&bytes)
                            && let Some(id) = done["id"].as_str().and_then(|id| id.parse().ok())
                        {
                            ids.push(id);
                        }
                    }
                    Err(error) => *errors.entry(error).or_default() += 1,
                }
                if sent >= window_start {
                    latencies.push(latency);
                } else {
                    warm_up += 1;
                }
            }
            Ok::<_, BoxError>((latencies, errors, ids, warm_up))
        });
    }
    let mut result = Closed {
        latencies: Vec::new(),
        errors: BTreeMap::new(),
        warm_up: 0,
        ids: Vec::new(),
        cpu: CpuShare::default(),
    };
    while let Some(done) = clients.join_next().await {
        let (latencies, errors, ids, warm_up) = done??;
        result.latencies.extend(latencies);
        for (error, n) in errors {
            *result.errors.entry(error).or_default() += n;
        }
        result.ids.extend(ids);
        result.warm_up += warm_up;
    }
    result.latencies.sort();
    Ok(result)
}

/// How many `POST /flights` bodies were made: each gets a flight number of
/// its own (260k of them before any repeats).
static POSTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A `POST /flights` body: a realistic flight.
fn flight_body(
    rng: &mut StdRng,
    airports: &[AirportCode],
    today: DateTime<Utc>,
    n: usize,
) -> String {
    let event = seeded_flight(rng, airports, today, n).ok();
    let Some(FlightEvent::FlightScheduled {
        flight_number,
        from,
        to,
        departure,
        arrival,
        seats,
        price,
        ..
    }) = event
    else {
        unreachable!("seeded_flight makes FlightScheduled events of valid values")
    };
    // A number of its own: a number flies once a day, and the seeded
    // flights (carriers AN, BA, LH, AF, UA, KL) already fly some.
    let _ = flight_number;
    let k = POSTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let letter = char::from(b'A' + (k / 9_999 % 26) as u8);
    let flight_number = format!("Q{letter}{}", 1 + k % 9_999);
    json!({
        "flight_number": flight_number,
        "from": from,
        "to": to,
        "departure": departure,
        "arrival": arrival,
        "seats": seats,
        "price": price,
    })
    .to_string()
}

/// A `POST /bookings` body: one segment (80 %) or two, 1 to 3 seats, `tok_visa`.
fn booking_body(rng: &mut StdRng, pool: &[Uuid], client: usize, n: usize) -> String {
    let seats = [1, 1, 1, 2, 2, 3][rng.random_range(0..6)];
    let first = pool[rng.random_range(0..pool.len())];
    let mut segments = vec![json!({ "flight_id": first, "seats": seats })];
    if rng.random_bool(0.2) {
        let second = loop {
            let second = pool[rng.random_range(0..pool.len())];
            if second != first {
                break second;
            }
        };
        segments.push(json!({ "flight_id": second, "seats": seats }));
    }
    json!({
        "passenger": {
            "name": format!("Passenger {client}-{n}"),
            "email": format!("p{client}.{n}@example.com"),
        },
        "segments": segments,
        "payment": { "card_token": "tok_visa" },
    })
    .to_string()
}

fn error_code(body: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(body).ok()?;
    value["error"]["code"].as_str().map(str::to_owned)
}

/// Bookings requested, confirmed and cancelled so far, from the log.
#[derive(Debug, Clone, Copy, Default)]
struct BookingCounts {
    requested: u64,
    /// Picked up by the saga (`SagaStarted`).
    started: u64,
    confirmed: u64,
    cancelled: u64,
}

async fn booking_counts(admin: &mut PgConnection, schema: &str) -> Result<BookingCounts> {
    let rows: Vec<(String, i64)> = sqlx::query_as(&format!(
        "SELECT event_type, count(*) FROM {schema}.annals_events \
         WHERE event_type IN ('BookingRequested', 'SagaStarted', 'BookingConfirmed', \
         'BookingCancelled') \
         GROUP BY event_type"
    ))
    .fetch_all(&mut *admin)
    .await?;
    let mut counts = BookingCounts::default();
    for (kind, n) in rows {
        let n = n as u64;
        match kind.as_str() {
            "BookingRequested" => counts.requested = n,
            "SagaStarted" => counts.started = n,
            "BookingConfirmed" => counts.confirmed = n,
            _ => counts.cancelled = n,
        }
    }
    Ok(counts)
}

/// Calls of every statement this role ran, from `pg_stat_statements`;
/// `None` without the extension.
async fn statements(admin: &mut PgConnection) -> Option<i64> {
    sqlx::query_scalar(
        "SELECT sum(calls)::bigint FROM pg_stat_statements \
          WHERE userid = (SELECT oid FROM pg_roles WHERE rolname = current_user)",
    )
    .fetch_one(&mut *admin)
    .await
    .ok()
    .flatten()
}

/// Prints, every 5 s of the bookings' window, how many bookings are pending
/// (requested, not yet confirmed or cancelled), on a connection of its own.
async fn pending_every_5s(schema: String, from: Instant, to: Instant) {
    let Ok(url) = std::env::var("DATABASE_URL") else {
        return;
    };
    let Ok(mut connection) = <PgConnection as sqlx::Connection>::connect(&url).await else {
        return;
    };
    let mut at = from;
    while at <= to {
        tokio::time::sleep_until(at.into()).await;
        if let Ok(counts) = booking_counts(&mut connection, &schema).await {
            println!(
                "    {:>3.0} s into the window: {} requested, {} picked up by the saga, {} pending",
                at.duration_since(from).as_secs_f64(),
                counts.requested,
                counts.started,
                counts.requested - (counts.confirmed + counts.cancelled).min(counts.requested)
            );
        }
        at += Duration::from_secs(5);
    }
}

async fn cancel_reasons(admin: &mut PgConnection, schema: &str) -> Result<Vec<(String, i64)>> {
    Ok(sqlx::query_as(&format!(
        "SELECT coalesce(payload->>'reason', '?'), count(*) FROM {schema}.annals_events \
         WHERE event_type = 'BookingCancelled' GROUP BY 1 ORDER BY 2 DESC"
    ))
    .fetch_all(&mut *admin)
    .await?)
}

// ---------------------------------------------------------------------------
// search: open loop

/// What one search run (one API) measured.
struct Open {
    /// Latency from the intended send time, per request of the window.
    latencies: Vec<Duration>,
    /// Requests scheduled in the window.
    scheduled: usize,
    /// Answers that are not OK (non-2xx, a gRPC status other than `OK`) and
    /// transport errors, in the window and warm-up.
    errors: BTreeMap<String, usize>,
    /// Latest actual send after its intended time.
    worst_send_lag: Duration,
    /// Per query kind: requests, flights returned, empty pages, p50/p99.
    kinds: BTreeMap<&'static str, Vec<(Duration, usize)>>,
    cpu: CpuShare,
}

/// The API a search run goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Api {
    /// `GET /flights/search`.
    Rest,
    /// `FlightService/SearchFlights`.
    Grpc,
}

impl Api {
    /// How the output names it.
    fn name(self) -> &'static str {
        match self {
            Api::Rest => "GET /flights/search",
            Api::Grpc => "gRPC SearchFlights",
        }
    }

    /// How the client reaches the server.
    fn connections(self) -> &'static str {
        match self {
            Api::Rest => "keep-alive HTTP/1.1 connections",
            Api::Grpc => "one HTTP/2 channel",
        }
    }
}

/// The query kinds of the mix and their weights (per cent).
const MIX: &[(&str, u32)] = &[
    ("route + day", 30),
    ("route + days + max_price", 20),
    ("departures board", 10),
    ("free text", 15),
    ("to + days + min_seats", 10),
    ("next page (after)", 10),
    ("day by price, 100", 5),
];

/// One search of the mix, typed, so that both APIs send the same one:
/// [`SearchQuery::query_string`] for REST, [`SearchQuery::request`] for
/// gRPC. No `min_position`: the mix reads without waiting for a write.
#[derive(Debug, Clone)]
struct SearchQuery {
    from: Option<AirportCode>,
    to: Option<AirportCode>,
    date: Option<NaiveDate>,
    date_to: Option<NaiveDate>,
    /// Minor units.
    max_price: Option<i64>,
    min_seats: Option<u32>,
    /// Words separated by spaces.
    q: Option<String>,
    sort: SortOrder,
    limit: u32,
}

impl SearchQuery {
    /// No filter yet.
    fn new(sort: SortOrder, limit: u32) -> Self {
        Self {
            from: None,
            to: None,
            date: None,
            date_to: None,
            max_price: None,
            min_seats: None,
            q: None,
            sort,
            limit,
        }
    }

    /// The query string of `GET /flights/search` (without `?`); `after` is
    /// the previous page's `next`.
    fn query_string(&self, after: Option<&str>) -> String {
        let mut params = Vec::new();
        if let Some(q) = &self.q {
            params.push(format!("q={}", q.replace(' ', "+")));
        }
        if let Some(from) = self.from {
            params.push(format!("from={from}"));
        }
        if let Some(to) = self.to {
            params.push(format!("to={to}"));
        }
        if let Some(date) = self.date {
            params.push(format!("date={date}"));
        }
        if let Some(date_to) = self.date_to {
            params.push(format!("date_to={date_to}"));
        }
        if let Some(max_price) = self.max_price {
            params.push(format!("max_price={max_price}"));
        }
        if let Some(min_seats) = self.min_seats {
            params.push(format!("min_seats={min_seats}"));
        }
        params.push(format!("sort={}", sort_name(self.sort)));
        params.push(format!("limit={}", self.limit));
        // Cursors are base64url: safe in a URL as they come.
        if let Some(after) = after {
            params.push(format!("after={after}"));
        }
        params.join("&")
    }

    /// The same search as a gRPC request; `after` is the previous gRPC
    /// page's `next`.
    fn request(&self, after: Option<&str>) -> FlightSearchRequest {
        let text = |value: Option<String>| value.unwrap_or_default();
        FlightSearchRequest {
            from: text(self.from.map(|a| a.as_str().to_owned())),
            to: text(self.to.map(|a| a.as_str().to_owned())),
            date: text(self.date.map(|d| d.to_string())),
            date_to: text(self.date_to.map(|d| d.to_string())),
            max_price: self.max_price,
            min_seats: self.min_seats,
            q: text(self.q.clone()),
            sort: self.sort.into(),
            limit: Some(self.limit),
            after: text(after.map(str::to_owned)),
            min_position: String::new(),
        }
    }
}

/// A sort order's REST name (`sort=`).
fn sort_name(sort: SortOrder) -> &'static str {
    match sort {
        SortOrder::Price => "price",
        SortOrder::PriceDesc => "-price",
        SortOrder::DepartureDesc => "-departure",
        SortOrder::Departure | SortOrder::Unspecified => "departure",
    }
}

/// Any of the four orders.
fn sort(rng: &mut StdRng) -> SortOrder {
    [
        SortOrder::Price,
        SortOrder::PriceDesc,
        SortOrder::Departure,
        SortOrder::DepartureDesc,
    ][rng.random_range(0..4)]
}

fn day(rng: &mut StdRng, today: NaiveDate) -> NaiveDate {
    today + TimeDelta::days(rng.random_range(1..=DAYS))
}

/// One request of the mix.
struct Query {
    kind: &'static str,
    /// The search; a next page sends it again with `after`.
    search: SearchQuery,
    /// Keep the answer's `next` for a later next-page request.
    keep_cursor: bool,
}

/// The next query of the mix (a `next page` is picked at send time).
fn next_query(rng: &mut StdRng, airports: &[AirportCode], today: NaiveDate) -> Query {
    let total: u32 = MIX.iter().map(|(_, w)| w).sum();
    let mut roll = rng.random_range(0..total);
    let kind = MIX
        .iter()
        .find(|(_, w)| {
            if roll < *w {
                true
            } else {
                roll -= w;
                false
            }
        })
        .map_or(MIX[0].0, |(k, _)| *k);
    let (from, to) = route(rng, airports);
    let first = day(rng, today);
    let span = TimeDelta::days(rng.random_range(2..=6));
    let last = first + span;
    let search = match kind {
        "route + day" => SearchQuery {
            from: Some(from),
            to: Some(to),
            date: Some(first),
            ..SearchQuery::new(
                [SortOrder::Price, SortOrder::Departure][rng.random_range(0..2)],
                20,
            )
        },
        "route + days + max_price" => SearchQuery {
            from: Some(from),
            to: Some(to),
            date: Some(first),
            date_to: Some(last),
            max_price: Some(rng.random_range(2..=12) * 10_000),
            ..SearchQuery::new(SortOrder::Price, 20)
        },
        "departures board" => SearchQuery {
            from: Some(from),
            date: Some(first),
            ..SearchQuery::new(SortOrder::Departure, 50)
        },
        "free text" => {
            let airport = airline::airports::lookup(from.as_str());
            let q = match rng.random_range(0..4) {
                0 => airport.map_or("london".into(), |a| a.city.to_owned()),
                1 => airport.map_or("heathrow".into(), |a| a.name.to_owned()),
                2 => format!(
                    "{} {}",
                    airport.map_or("new york", |a| a.city),
                    airline::airports::lookup(to.as_str()).map_or("paris", |a| a.city)
                ),
                _ => format!(
                    "{}{}",
                    ["AN", "BA", "LH", "AF", "UA", "KL"][rng.random_range(0..6)],
                    rng.random_range(1..100)
                ),
            };
            // Punctuation ("O'Hare", "O. R. Tambo") becomes word breaks.
            let q: String = q
                .chars()
                .map(|c| if c.is_alphanumeric() { c } else { ' ' })
                .collect();
            SearchQuery {
                q: Some(q),
                date: Some(first),
                date_to: Some(last),
                ..SearchQuery::new(sort(rng), 20)
            }
        }
        "to + days + min_seats" => SearchQuery {
            to: Some(to),
            date: Some(first),
            date_to: Some(last),
            min_seats: Some(2),
            ..SearchQuery::new(sort(rng), 20)
        },
        "day by price, 100" => SearchQuery {
            date: Some(first),
            ..SearchQuery::new(sort(rng), 100)
        },
        // A next page: replaced at send time.
        _ => SearchQuery::new(SortOrder::Price, 20),
    };
    Query {
        kind,
        keep_cursor: matches!(
            kind,
            "route + days + max_price" | "free text" | "departures board"
        ),
        search,
    }
}

/// A client of one API, cloned into every request.
#[derive(Clone)]
enum SearchClient {
    Rest {
        http: reqwest::Client,
        /// `http://<address>/flights/search`.
        url: String,
    },
    Grpc(FlightServiceClient<Channel>),
}

impl SearchClient {
    /// A client of `api` on `address`; a gRPC one is connected already.
    async fn connect(api: Api, address: SocketAddr) -> Result<Self> {
        Ok(match api {
            Api::Rest => SearchClient::Rest {
                http: reqwest::Client::builder()
                    .pool_max_idle_per_host(256)
                    .tcp_nodelay(true)
                    .timeout(Duration::from_secs(30))
                    .build()?,
                url: format!("http://{address}/flights/search"),
            },
            Api::Grpc => {
                let channel = Endpoint::from_shared(format!("http://{address}"))?
                    .tcp_nodelay(true)
                    .timeout(Duration::from_secs(30))
                    .connect()
                    .await?;
                SearchClient::Grpc(FlightServiceClient::new(channel))
            }
        })
    }

    /// Sends `search` (the page after `after`); answers the latency from
    /// `intended` to the answer's end, and the number of flights and the
    /// `next` cursor of the page, or the error.
    async fn search(
        &self,
        search: &SearchQuery,
        after: Option<&str>,
        intended: Instant,
    ) -> (Duration, Result<(usize, Option<String>), String>) {
        match self {
            SearchClient::Rest { http, url } => {
                let answer = async {
                    let response = http
                        .get(format!("{url}?{}", search.query_string(after)))
                        .send()
                        .await
                        .map_err(|e| format!("transport: {e}"))?;
                    let status = response.status();
                    let bytes = response
                        .bytes()
                        .await
                        .map_err(|e| format!("reading the body: {e}"))?;
                    if !status.is_success() {
                        return Err(format!(
                            "{status}: {}",
                            error_code(&bytes).unwrap_or_default()
                        ));
                    }
                    Ok(bytes)
                }
                .await;
                let latency = intended.elapsed();
                let page = answer.map(|bytes| {
                    let page: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                    (
                        page["flights"].as_array().map_or(0, Vec::len),
                        page["next"].as_str().map(str::to_owned),
                    )
                });
                (latency, page)
            }
            SearchClient::Grpc(client) => {
                let answer = client.clone().search_flights(search.request(after)).await;
                let latency = intended.elapsed();
                let page = match answer {
                    Ok(page) => {
                        let page = page.into_inner();
                        let next = Some(page.next).filter(|next| !next.is_empty());
                        Ok((page.flights.len(), next))
                    }
                    // The message starts with the REST error code
                    // ("read_side_behind: ..."); transport errors have none.
                    Err(status) => Err(format!(
                        "{:?}: {}",
                        status.code(),
                        status.message().split(':').next().unwrap_or_default()
                    )),
                };
                (latency, page)
            }
        }
    }
}

/// One search run: the mix drawn from `seed` over `api` at [`SEARCH_RATE`],
/// open loop, for the warm-up and then `window`, from `start`.
async fn search_load(
    api: Api,
    address: SocketAddr,
    today: DateTime<Utc>,
    start: Instant,
    window: Duration,
    seed: u64,
) -> Result<Open> {
    let client = SearchClient::connect(api, address).await?;
    let airports = weighted_airports();
    let today = today.date_naive();
    let mut rng = StdRng::seed_from_u64(seed);
    // Stand-ins for next pages asked before any cursor came back, which
    // depends on timing: from a generator of their own, so that the mix's
    // sequence does not.
    let mut stand_ins = StdRng::seed_from_u64(201);
    let interval = Duration::from_secs(1) / SEARCH_RATE;
    let warm_up = (SEARCH_WARM_UP.as_secs_f64() * f64::from(SEARCH_RATE)) as usize;
    let window = (window.as_secs_f64() * f64::from(SEARCH_RATE)) as usize;
    // Cursors of earlier answers of this API: (search, next).
    let cursors: Arc<Mutex<VecDeque<(SearchQuery, String)>>> = Arc::default();
    let mut requests = JoinSet::new();
    let mut worst_send_lag = Duration::ZERO;
    for i in 0..warm_up + window {
        let mut query = next_query(&mut rng, &airports, today);
        let intended = start + interval * i as u32;
        tokio::time::sleep_until(intended.into()).await;
        let mut after = None;
        if query.kind == "next page (after)" {
            let cursor = cursors
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop_front();
            match cursor {
                Some((search, next)) => {
                    query.search = search;
                    after = Some(next);
                }
                // None yet: ask a first page that will give one.
                None => {
                    query.search = SearchQuery {
                        date: Some(day(&mut stand_ins, today)),
                        ..SearchQuery::new(SortOrder::Price, 20)
                    };
                    query.keep_cursor = true;
                }
            }
        }
        worst_send_lag = worst_send_lag.max(intended.elapsed());
        let client = client.clone();
        let cursors = Arc::clone(&cursors);
        requests.spawn(async move {
            let (latency, page) = client
                .search(&query.search, after.as_deref(), intended)
                .await;
            let found = match page {
                Ok((found, next)) => {
                    if query.keep_cursor
                        && let Some(next) = next
                    {
                        let mut cursors = cursors.lock().unwrap_or_else(PoisonError::into_inner);
                        cursors.push_back((query.search, next));
                        if cursors.len() > 1_000 {
                            cursors.pop_front();
                        }
                    }
                    Ok(found)
                }
                Err(error) => Err(error),
            };
            (i, query.kind, latency, found)
        });
    }
    let mut result = Open {
        latencies: Vec::with_capacity(window),
        scheduled: window,
        errors: BTreeMap::new(),
        worst_send_lag,
        kinds: BTreeMap::new(),
        cpu: CpuShare::default(),
    };
    while let Some(done) = requests.join_next().await {
        let (i, kind, latency, found) = done?;
        let found = found.unwrap_or_else(|error| {
            *result.errors.entry(error).or_default() += 1;
            0
        });
        if i < warm_up {
            continue;
        }
        result.latencies.push(latency);
        result.kinds.entry(kind).or_default().push((latency, found));
    }
    result.latencies.sort();
    Ok(result)
}

// ---------------------------------------------------------------------------
// CPU from /proc

/// Where CPU time goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Part {
    /// Threads of the service's runtime.
    Service,
    /// Threads of the load generator's runtime.
    Loadgen,
    /// The other threads of this process (the main thread runs the harness).
    Harness,
    /// PostgreSQL backends of this process's connections.
    Postgres,
    /// Every other PostgreSQL process (other clients, WAL writer, checkpointer, ...).
    OtherPostgres,
    /// The search server's JVM.
    Search,
}

/// CPU time so far (in `/proc` clock ticks) of the machine and of every
/// thread or process of interest, by pid or tid.
#[derive(Debug, Clone, Default)]
struct CpuSnapshot {
    at: Option<Instant>,
    machine_total: u64,
    machine_busy: u64,
    /// Interrupts and soft interrupts (loopback networking, mostly), which
    /// no process is charged for.
    machine_irq: u64,
    tasks: HashMap<u32, (Part, u64)>,
}

/// Shares of the CPU over an interval, in per cent of one core.
#[derive(Debug, Clone, Default)]
struct CpuShare {
    seconds: f64,
    machine: f64,
    irq: f64,
    parts: BTreeMap<Part, f64>,
    /// The machine's busy time no part (nor interrupts) accounts for.
    other: f64,
}

fn ticks_of_stat(stat: &str) -> Option<u64> {
    // Fields after "pid (comm) ": state is the first, utime the 12th, stime the 13th.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn ticks_of(path: &std::path::Path) -> u64 {
    std::fs::read_to_string(path.join("stat"))
        .ok()
        .and_then(|s| ticks_of_stat(&s))
        .unwrap_or(0)
}

/// A snapshot, with this process's PostgreSQL backends looked up by their
/// `application_name`.
async fn cpu_snapshot(admin: &mut PgConnection, es_pid: Option<u32>) -> CpuSnapshot {
    let ours: Vec<i32> = sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity WHERE application_name LIKE 'airline-http-bench%'",
    )
    .fetch_all(&mut *admin)
    .await
    .unwrap_or_default();
    let ours: Vec<u32> = ours.into_iter().map(|p| p as u32).collect();
    CpuSnapshot::take(es_pid, &ours)
}

/// The CPU shares from `from` to `to` (waits for both).
async fn cpu_over(
    admin: &mut PgConnection,
    es_pid: Option<u32>,
    from: Instant,
    to: Instant,
) -> CpuShare {
    tokio::time::sleep_until(from.into()).await;
    let before = cpu_snapshot(admin, es_pid).await;
    tokio::time::sleep_until(to.into()).await;
    cpu_snapshot(admin, es_pid).await.since(&before)
}

impl CpuSnapshot {
    fn take(es_pid: Option<u32>, our_backends: &[u32]) -> Self {
        let mut snapshot = CpuSnapshot {
            at: Some(Instant::now()),
            ..CpuSnapshot::default()
        };
        if let Ok(stat) = std::fs::read_to_string("/proc/stat")
            && let Some(line) = stat.lines().next()
        {
            // user nice system idle iowait irq softirq steal (guest is in user).
            let values: Vec<u64> = line
                .split_whitespace()
                .skip(1)
                .take(8)
                .filter_map(|v| v.parse().ok())
                .collect();
            snapshot.machine_total = values.iter().sum();
            let idle = values.get(3).copied().unwrap_or(0) + values.get(4).copied().unwrap_or(0);
            snapshot.machine_busy = snapshot.machine_total.saturating_sub(idle);
            snapshot.machine_irq =
                values.get(5).copied().unwrap_or(0) + values.get(6).copied().unwrap_or(0);
        }
        if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
            for task in tasks.flatten() {
                let Some(tid) = task.file_name().to_str().and_then(|n| n.parse().ok()) else {
                    continue;
                };
                let path = task.path();
                let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
                let part = if comm.starts_with("service") {
                    Part::Service
                } else if comm.starts_with("loadgen") {
                    Part::Loadgen
                } else {
                    Part::Harness
                };
                snapshot.tasks.insert(tid, (part, ticks_of(&path)));
            }
        }
        if let Ok(processes) = std::fs::read_dir("/proc") {
            for process in processes.flatten() {
                let Some(pid) = process.file_name().to_str().and_then(|n| n.parse().ok()) else {
                    continue;
                };
                let path = process.path();
                let part = if Some(pid) == es_pid {
                    Part::Search
                } else if std::fs::read_to_string(path.join("comm"))
                    .is_ok_and(|comm| comm.trim_end() == "postgres")
                {
                    if our_backends.contains(&pid) {
                        Part::Postgres
                    } else {
                        Part::OtherPostgres
                    }
                } else {
                    continue;
                };
                snapshot.tasks.insert(pid, (part, ticks_of(&path)));
            }
        }
        snapshot
    }

    /// The shares since `before`, in per cent of one core. A process that
    /// started in between counts whole; one that ended in between is lost
    /// (its time stays in `other`).
    fn since(&self, before: &CpuSnapshot) -> CpuShare {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let total = self.machine_total.saturating_sub(before.machine_total) as f64;
        if total == 0.0 {
            return CpuShare::default();
        }
        let share = |ticks: u64| ticks as f64 / total * cores * 100.0;
        let machine = share(self.machine_busy.saturating_sub(before.machine_busy));
        let mut parts: BTreeMap<Part, f64> = BTreeMap::new();
        for (id, (part, now)) in &self.tasks {
            // A backend that became ours since counts as ours for the interval.
            let then = before.tasks.get(id).map_or(0, |(_, t)| *t);
            *parts.entry(*part).or_default() += share(now.saturating_sub(then));
        }
        let irq = share(self.machine_irq.saturating_sub(before.machine_irq));
        let accounted: f64 = parts.values().sum::<f64>() + irq;
        CpuShare {
            seconds: match (self.at, before.at) {
                (Some(now), Some(then)) => (now - then).as_secs_f64(),
                _ => 0.0,
            },
            machine,
            irq,
            parts,
            other: (machine - accounted).max(0.0),
        }
    }
}

impl CpuShare {
    fn part(&self, part: Part) -> f64 {
        self.parts.get(&part).copied().unwrap_or(0.0)
    }

    fn line(&self) -> String {
        format!(
            "machine busy {:.0} % of {:.0} %: service {:.0} %, load generator {:.0} %, \
             postgres (its backends) {:.0} %, elasticsearch {:.0} %, harness {:.0} %, \
             interrupts {:.0} %; not ours: other postgres {:.0} %, everything else {:.0} % \
             (over {:.0} s)",
            self.machine,
            std::thread::available_parallelism().map_or(1, |n| n.get()) as f64 * 100.0,
            self.part(Part::Service),
            self.part(Part::Loadgen),
            self.part(Part::Postgres),
            self.part(Part::Search),
            self.part(Part::Harness),
            self.irq,
            self.part(Part::OtherPostgres),
            self.other,
            self.seconds
        )
    }
}

// ---------------------------------------------------------------------------
// the report

struct Build {
    seeded_in: Duration,
    started: Instant,
    cpu_before: CpuSnapshot,
    built_in: Duration,
    merges_waited: Duration,
    indexed: u64,
    cpu: CpuShare,
}

struct Report {
    build: Build,
    /// Phase 2 per API, in the order they ran; empty when `HBENCH_PHASES`
    /// leaves it out.
    searches: Vec<(Api, Open)>,
    search_window: Duration,
    /// Phase 1, unless `HBENCH_PHASES` leaves it out.
    commands: Option<Commands>,
}

/// What phase 1 measured.
struct Commands {
    schedule: Closed,
    booking: Closed,
    at_end: BookingCounts,
    settled: BookingCounts,
    settled_after: Duration,
    reasons: Vec<(String, i64)>,
    saga_retries: u64,
    saga_dead_letters: usize,
    saga_behind: bool,
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 10.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.0} ms")
    }
}

fn errors_text(errors: &BTreeMap<String, usize>) -> String {
    if errors.is_empty() {
        return "none".into();
    }
    errors
        .iter()
        .map(|(e, n)| format!("{n} x {e}"))
        .collect::<Vec<_>>()
        .join("; ")
}

impl Report {
    fn print(&self) {
        println!();
        println!(
            "  {:<44} {:>8} {:>9} {:>9} {:>9} {:>9} {:>7}  target",
            "", "requests", "req/s", "p50", "p99", "max", "errors"
        );
        if let Some(commands) = &self.commands {
            commands.print_rows();
        }
        for (api, s) in &self.searches {
            let n = s.latencies.len();
            let errors: usize = s.errors.values().sum();
            let p99 = percentile(&s.latencies, 0.99);
            let verdict = if p99 < SEARCH_TARGET_P99 && errors == 0 {
                "ok"
            } else {
                "MISSED"
            };
            println!(
                "  {:<44} {n:>8} {:>9.0} {:>9} {:>9} {:>9} {errors:>7}  p99 < {} ms: {verdict}",
                format!(
                    "2  {}, {SEARCH_RATE}/s open loop, {} s",
                    api.name(),
                    self.search_window.as_secs()
                ),
                n as f64 / self.search_window.as_secs_f64(),
                ms(percentile(&s.latencies, 0.50)),
                ms(p99),
                ms(percentile(&s.latencies, 1.0)),
                SEARCH_TARGET_P99.as_millis()
            );
        }

        println!();
        if let Some(commands) = &self.commands {
            commands.print_details();
        }
        println!(
            "  2:  index of {} flights; seeding the log took {:.1} s, the service's first build \
             of the index (catch-up of {} events) {:.1} s ({:.0} events/s)",
            self.build.indexed,
            self.build.seeded_in.as_secs_f64(),
            SEARCH_FLIGHTS,
            self.build.built_in.as_secs_f64(),
            SEARCH_FLIGHTS as f64 / self.build.built_in.as_secs_f64()
        );
        println!("      build CPU: {}", self.build.cpu.line());
        println!(
            "      then waited {:.1} s for the index's merges to finish",
            self.build.merges_waited.as_secs_f64()
        );
        for (api, s) in &self.searches {
            let n = s.latencies.len();
            println!(
                "      {} ({}): {} requests scheduled, {} answered; latest send {} after its \
                 intended time; errors (warm-up included): {}",
                api.name(),
                api.connections(),
                s.scheduled,
                n,
                ms(s.worst_send_lag),
                errors_text(&s.errors)
            );
            println!(
                "      {:<28} {:>6} {:>9} {:>9} {:>9} {:>11}",
                "query kind", "share", "p50", "p99", "flights", "empty pages"
            );
            for (kind, rows) in &s.kinds {
                let mut latencies: Vec<Duration> = rows.iter().map(|r| r.0).collect();
                latencies.sort();
                let found: usize = rows.iter().map(|r| r.1).sum();
                let empty = rows.iter().filter(|r| r.1 == 0).count();
                println!(
                    "      {kind:<28} {:>5.1}% {:>9} {:>9} {:>9.1} {:>10.0}%",
                    100.0 * rows.len() as f64 / n.max(1) as f64,
                    ms(percentile(&latencies, 0.50)),
                    ms(percentile(&latencies, 0.99)),
                    found as f64 / rows.len().max(1) as f64,
                    100.0 * empty as f64 / rows.len().max(1) as f64
                );
            }
            println!("      CPU: {}", s.cpu.line());
        }
    }
}

impl Commands {
    /// The table's rows of 1a and 1b.
    fn print_rows(&self) {
        let secs = command_window().as_secs();
        for (name, closed) in [
            (
                format!("1a POST /flights, 32 clients, {secs} s"),
                &self.schedule,
            ),
            (
                format!("1b POST /bookings, 32 clients, {secs} s"),
                &self.booking,
            ),
        ] {
            let n = closed.latencies.len();
            let rate = n as f64 / command_window().as_secs_f64();
            let errors: usize = closed.errors.values().sum();
            let verdict = if rate >= COMMAND_TARGET && errors == 0 {
                "ok"
            } else {
                "MISSED"
            };
            println!(
                "  {name:<44} {n:>8} {rate:>9.0} {:>9} {:>9} {:>9} {errors:>7}  >= {COMMAND_TARGET:.0}/s, 0 errors: {verdict}",
                ms(percentile(&closed.latencies, 0.50)),
                ms(percentile(&closed.latencies, 0.99)),
                ms(percentile(&closed.latencies, 1.0)),
            );
        }
    }

    /// The notes on 1a and 1b under the table.
    fn print_details(&self) {
        println!(
            "  1a: {} warm-up requests not counted; errors (warm-up included): {}",
            self.schedule.warm_up,
            errors_text(&self.schedule.errors)
        );
        println!("      CPU: {}", self.schedule.cpu.line());
        println!(
            "  1b: {} warm-up requests not counted; errors (warm-up included): {}",
            self.booking.warm_up,
            errors_text(&self.booking.errors)
        );
        println!(
            "      bookings accepted (202): {}; in the log at the end of the window: {} requested, \
             {} picked up by the saga, {} confirmed, {} cancelled",
            self.booking.ids.len(),
            self.at_end.requested,
            self.at_end.started,
            self.at_end.confirmed,
            self.at_end.cancelled
        );
        let settled = self.settled.confirmed + self.settled.cancelled >= self.settled.requested;
        println!(
            "      {} {:.1} s after the window: {} picked up by the saga, {} confirmed, {} \
             cancelled of {} requested{}",
            if settled {
                "all settled"
            } else {
                "NOT all settled"
            },
            self.settled_after.as_secs_f64(),
            self.settled.started,
            self.settled.confirmed,
            self.settled.cancelled,
            self.settled.requested,
            if self.reasons.is_empty() {
                String::new()
            } else {
                format!(
                    " (reasons: {})",
                    self.reasons
                        .iter()
                        .map(|(r, n)| format!("{n} x {r:?}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        );
        println!(
            "      saga: picked up {:.0} bookings/s while bookings came in, {:.0}/s after; {} \
             batch retries, {} dead_letters events, {}",
            self.at_end.started as f64 / (COMMAND_WARM_UP + command_window()).as_secs_f64(),
            self.settled.started.saturating_sub(self.at_end.started) as f64
                / self.settled_after.as_secs_f64().max(0.001),
            self.saga_retries,
            self.saga_dead_letters,
            if self.saga_behind {
                "behind the head of the log at the end"
            } else {
                "at the head of the log at the end"
            }
        );
        println!("      CPU: {}", self.booking.cpu.line());
    }
}

// ---------------------------------------------------------------------------
// the machine

struct Machine {
    lines: Vec<String>,
    es_pid: Option<u32>,
}

impl Machine {
    async fn probe(client: &Elasticsearch, server: &Value, store: &PgEventStore) -> Result<Self> {
        let (version, fsync, sync_commit): (String, String, String) = sqlx::query_as(
            "SELECT version(), current_setting('fsync'), current_setting('synchronous_commit')",
        )
        .fetch_one(store.pool())
        .await?;
        let nodes = es_json(client, Method::Get, "/_nodes/_local/jvm,process", None).await?;
        let node = nodes["nodes"]
            .as_object()
            .and_then(|nodes| nodes.values().next())
            .cloned()
            .unwrap_or(Value::Null);
        let es_pid = node["process"]["id"].as_u64().map(|p| p as u32);
        let heap = node["jvm"]["mem"]["heap_max_in_bytes"]
            .as_u64()
            .unwrap_or(0);
        let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
        let memory = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find(|l| l.starts_with("MemTotal:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|kb| kb.parse::<u64>().ok())
            })
            .unwrap_or(0);
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        let distribution = server["version"]["distribution"]
            .as_str()
            .unwrap_or("elasticsearch");
        let local =
            if es_pid.is_some_and(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists()) {
                ""
            } else {
                " (not on this machine: its CPU is not measured)"
            };
        Ok(Self {
            lines: vec![
                format!(
                    "  machine: {cores} cores, {:.1} GiB; load average at start {}",
                    memory as f64 / 1024.0 / 1024.0,
                    load.split_whitespace()
                        .take(3)
                        .collect::<Vec<_>>()
                        .join(" ")
                ),
                format!(
                    "  search: {distribution} {} (cluster {}, JVM heap {:.1} GiB, pid {}){local}",
                    server["version"]["number"].as_str().unwrap_or("?"),
                    server["cluster_name"].as_str().unwrap_or("?"),
                    heap as f64 / 1024.0 / 1024.0 / 1024.0,
                    es_pid.map_or("?".into(), |p| p.to_string())
                ),
                format!("  postgres: {version}; fsync={fsync} synchronous_commit={sync_commit}"),
            ],
            es_pid: es_pid.filter(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists()),
        })
    }

    fn print(&self) {
        println!("airline-http-bench");
        for line in &self.lines {
            println!("{line}");
        }
    }
}
