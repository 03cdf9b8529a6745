//! `airline`: the annals showcase service and its tools.
//!
//! `airline` (or `airline serve`) serves the REST API and runs the
//! projections in one process. With no configuration it runs the embedded
//! in-memory default: an in-memory store, the in-memory flight read model,
//! the booking saga, and a couple of hundred seeded flights.

use std::error::Error;
use std::sync::Arc;
use std::time::Duration;

use airline::app::Airline;
use airline::booking::{ResilientPayments, SimulatedPayments};
use airline::config::{Config, ReadModelKind, StoreKind};
use airline::http::{AppState, Background, Role, Tokens, router, serve};
use airline::reads::{FLIGHTS_PROJECTION, FlightReads, MemoryFlights};
use airline::scheduling::ScheduleFlight;
use airline::search::ElasticFlights;
use airline::values::Money;
use annals::CommandContext;
use annals::memory::MemoryStore;
use annals::projection::{ProjectionStore, RunnerOptions};
use annals_postgres::PgEventStore;
use chrono::{DurationRound, TimeDelta, Utc};
use clap::{Parser, Subcommand};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

type Result<T, E = Box<dyn Error + Send + Sync>> = std::result::Result<T, E>;

/// How long background tasks get to finish after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

#[derive(Parser)]
#[command(
    name = "airline",
    version,
    about = "The annals airline: flights, seats, prices and bookings, event-sourced.",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// With no subcommand: `serve` with these settings.
    #[command(flatten)]
    config: Config,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API and run the projections in one process (the default).
    Serve(Config),
    /// Run the projections only (a projection daemon, no API).
    Project(Config),
    /// Apply the database migrations (needs DATABASE_URL).
    Migrate(Config),
    /// Schedule realistic flights into the configured store.
    Seed {
        /// How many flights.
        #[arg(long, default_value_t = 1000)]
        flights: usize,
        #[command(flatten)]
        config: Config,
    },
    /// Rebuild a projection's read model from position zero (blue/green).
    Rebuild {
        /// The projection, e.g. `flights`.
        projection: String,
        #[command(flatten)]
        config: Config,
    },
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    init_tracing();
    let cli = Cli::parse();
    let outcome = match cli.command {
        None => serve_command(cli.config.with_environment()).await,
        Some(Command::Serve(config)) => serve_command(config.with_environment()).await,
        Some(Command::Project(config)) => project_command(config.with_environment()).await,
        Some(Command::Migrate(config)) => migrate_command(config.with_environment()).await,
        Some(Command::Seed { flights, config }) => {
            seed_command(config.with_environment(), flights).await
        }
        Some(Command::Rebuild { projection, config }) => {
            rebuild_command(config.with_environment(), &projection).await
        }
    };
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error}");
            eprintln!("airline: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).init();
}

// ---------------------------------------------------------------------------
// serve

async fn serve_command(config: Config) -> Result<()> {
    if config.store_kind() == StoreKind::Memory && config.read_model_kind() == ReadModelKind::Memory
    {
        return serve_embedded(config).await;
    }
    let settings = config.http_settings()?;
    let tokens = config.tokens()?.ok_or(
        "AIRLINE_TOKENS is required with a real store or read model: set \
         AIRLINE_TOKENS=\"token:role,...\" (roles: admin, agent, reader)",
    )?;
    let listener = bind(&config).await?;
    let address = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    watch_signals(shutdown.clone());
    match config.store_kind() {
        StoreKind::Postgres => {
            let store = postgres(&config).await?;
            tracing::info!(
                "airline serving on http://{address}: PostgreSQL event store, {} flight read model",
                config.read_model_kind().as_str()
            );
            run_service(
                listener,
                settings,
                tokens,
                &config,
                airline_on(store),
                shutdown,
            )
            .await
        }
        StoreKind::Memory => {
            tracing::info!(
                "airline serving on http://{address}: in-memory event store (kept only while \
                 it runs), {} flight read model",
                config.read_model_kind().as_str()
            );
            let airline = airline_on(MemoryStore::new());
            seed_flights(&airline, config.seed_flights, 42, |_| {}).await?;
            run_service(listener, settings, tokens, &config, airline, shutdown).await
        }
    }
}

/// The embedded in-memory default: everything in this process.
async fn serve_embedded(config: Config) -> Result<()> {
    let settings = config.http_settings()?;
    let configured = config.tokens()?;
    let listener = bind(&config).await?;
    let address = listener.local_addr()?;
    // The first line a user sees says what this is and where it listens.
    tracing::info!(
        "airline running in embedded in-memory mode (no DATABASE_URL or ELASTICSEARCH_URL; \
         nothing is kept after exit), listening on http://{address}"
    );
    let tokens = match configured {
        Some(tokens) => tokens,
        None => {
            let token = random_token();
            tracing::info!(
                "AIRLINE_TOKENS is not set: generated an admin token for this run only: {token} \
                 (send it as `Authorization: Bearer {token}`; set AIRLINE_TOKENS=\"token:role,...\" \
                 to choose your own)"
            );
            Tokens::new().with(token, Role::Admin)?
        }
    };

    let airline = airline_on(MemoryStore::new());
    let seeded = seed_flights(&airline, config.seed_flights, 42, |_| {}).await?;
    tracing::info!(flights = seeded, "seeded flights over the next 30 days");
    let shutdown = CancellationToken::new();
    watch_signals(shutdown.clone());
    run_service(listener, settings, tokens, &config, airline, shutdown).await
}

async fn bind(config: &Config) -> Result<TcpListener> {
    TcpListener::bind(config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen).into())
}

/// The write side over `store`, with the simulated payment provider.
fn airline_on<S: ProjectionStore + Clone>(store: S) -> Airline<S> {
    let provider = ResilientPayments::new(SimulatedPayments::new(), Duration::from_millis(500), 2);
    Airline::new(store, Arc::new(provider))
}

/// The PostgreSQL store of `DATABASE_URL`, migrated.
async fn postgres(config: &Config) -> Result<PgEventStore> {
    let url = config.database_url()?;
    let store = PgEventStore::connect(url)
        .await
        .map_err(|e| format!("cannot connect to PostgreSQL (DATABASE_URL): {e}"))?;
    store
        .migrate()
        .await
        .map_err(|e| format!("cannot migrate the annals schema: {e}"))?;
    Ok(store)
}

/// The Elasticsearch flight read model of `ELASTICSEARCH_URL`.
fn elastic_flights(config: &Config) -> Result<Arc<ElasticFlights>> {
    let client = annals_elastic::connect(config.elasticsearch_url()?)
        .map_err(|e| format!("cannot reach Elasticsearch (ELASTICSEARCH_URL): {e}"))?;
    Ok(Arc::new(ElasticFlights::new(client, &config.index_prefix)))
}

/// Starts the configured flight read model and the booking saga in
/// `background`; returns the read side queries go to.
fn start_projections<S: ProjectionStore + Clone>(
    config: &Config,
    airline: &Airline<S>,
    background: &mut Background,
) -> Result<Arc<dyn FlightReads>> {
    let reads: Arc<dyn FlightReads> = match config.read_model_kind() {
        ReadModelKind::Memory => {
            let flights = Arc::new(MemoryFlights::new());
            background.projection(
                airline.store().clone(),
                Arc::clone(&flights),
                RunnerOptions::default(),
            );
            flights
        }
        ReadModelKind::Elastic => {
            let flights = elastic_flights(config)?;
            background.elastic_flights(
                airline.store().clone(),
                Arc::clone(&flights),
                RunnerOptions::default(),
            );
            flights
        }
    };
    background.booking_saga(
        airline,
        RunnerOptions::default(),
        Duration::from_millis(250),
    );
    Ok(reads)
}

/// Serves the API over any store: starts the read model's projection and
/// the booking saga, serves until a signal, then stops the server and lets
/// the runners finish their batch.
async fn run_service<S: ProjectionStore + Clone>(
    listener: TcpListener,
    settings: airline::http::HttpSettings,
    tokens: Tokens,
    config: &Config,
    airline: Airline<S>,
    shutdown: CancellationToken,
) -> Result<()> {
    // Its own token: the runners stop only after the server has drained.
    let mut background = Background::new(CancellationToken::new());
    let reads = start_projections(config, &airline, &mut background)?;
    let state = AppState::new(airline, reads, tokens)
        .with_settings(settings)
        .with_runners(background.runners());
    let served = serve(
        listener,
        router(state.clone()),
        state.settings(),
        shutdown.clone(),
    )
    .await;
    tracing::info!("server stopped; stopping projections");
    background.shutdown(SHUTDOWN_GRACE).await;
    tracing::info!("bye");
    served.map_err(Into::into)
}

/// Cancels `shutdown` on Ctrl-C or SIGTERM.
fn watch_signals(shutdown: CancellationToken) {
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        let terminate = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut signal) => {
                    signal.recv().await;
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot watch SIGTERM");
                    std::future::pending::<()>().await;
                }
            }
        };
        #[cfg(not(unix))]
        let terminate = std::future::pending::<()>();
        tokio::select! {
            _ = ctrl_c => tracing::info!("Ctrl-C: shutting down"),
            () = terminate => tracing::info!("SIGTERM: shutting down"),
        }
        shutdown.cancel();
    });
}

fn random_token() -> String {
    let bytes: [u8; 24] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// ---------------------------------------------------------------------------
// the other subcommands

/// `airline project`: the projection daemon (no API). Another process
/// serving the API may run the same projections: the leases make one of
/// them active and the others hot standbys.
async fn project_command(config: Config) -> Result<()> {
    if config.store_kind() != StoreKind::Postgres
        || config.read_model_kind() != ReadModelKind::Elastic
    {
        return Err(
            "`airline project` needs DATABASE_URL and ELASTICSEARCH_URL: it keeps the \
                    Elasticsearch read model current from the PostgreSQL log"
                .into(),
        );
    }
    let store = postgres(&config).await?;
    let airline = airline_on(store);
    let shutdown = CancellationToken::new();
    watch_signals(shutdown.clone());
    let mut background = Background::new(CancellationToken::new());
    start_projections(&config, &airline, &mut background)?;
    tracing::info!("airline projection daemon running (flights read model, booking saga)");
    shutdown.cancelled().await;
    background.shutdown(SHUTDOWN_GRACE).await;
    tracing::info!("bye");
    Ok(())
}

/// `airline migrate`: applies the embedded migrations.
async fn migrate_command(config: Config) -> Result<()> {
    postgres(&config).await?;
    println!("annals schema is up to date");
    Ok(())
}

/// `airline seed --flights N`: realistic flights into the configured store.
async fn seed_command(config: Config, flights: usize) -> Result<()> {
    if config.store_kind() == StoreKind::Memory {
        return Err(
            "`airline seed` needs DATABASE_URL: seeding an in-memory store that exits \
                    right after keeps nothing (`airline serve` seeds its own)"
                .into(),
        );
    }
    let airline = airline_on(postgres(&config).await?);
    let bar = indicatif::ProgressBar::new(flights as u64).with_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} seeding flights [{bar:40}] {pos}/{len} ({per_sec}, eta {eta})",
        )?
        .progress_chars("=> "),
    );
    let seed = rand::rng().random();
    let done = seed_flights(&airline, flights, seed, |n| bar.set_position(n as u64)).await?;
    bar.finish();
    println!("scheduled {done} flights");
    Ok(())
}

/// `airline rebuild <projection>`: a blue/green rebuild of a read model.
async fn rebuild_command(config: Config, projection: &str) -> Result<()> {
    if projection != FLIGHTS_PROJECTION {
        return Err(format!(
            "unknown projection {projection:?}: the airline's read models are: {FLIGHTS_PROJECTION}"
        )
        .into());
    }
    if config.store_kind() != StoreKind::Postgres
        || config.read_model_kind() != ReadModelKind::Elastic
    {
        return Err("`airline rebuild flights` needs DATABASE_URL and ELASTICSEARCH_URL".into());
    }
    let store = postgres(&config).await?;
    let flights = elastic_flights(&config)?;
    let started = std::time::Instant::now();
    let built = flights
        .rebuild(&store)
        .await
        .map_err(|e| format!("rebuild failed: {e}"))?;
    println!(
        "rebuilt {projection} into {} in {:.1} s; the alias now points at it",
        built.index,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// seed data

/// Where each airport of the reference list is (latitude, longitude), for
/// realistic durations and prices.
const COORDINATES: &[(&str, f64, f64)] = &[
    ("AMS", 52.31, 4.76),
    ("ATH", 37.94, 23.94),
    ("ATL", 33.64, -84.43),
    ("AUS", 30.19, -97.67),
    ("BCN", 41.30, 2.08),
    ("BER", 52.36, 13.50),
    ("BKK", 13.69, 100.75),
    ("BOG", 4.70, -74.15),
    ("BOS", 42.36, -71.01),
    ("BRU", 50.90, 4.48),
    ("CDG", 49.01, 2.55),
    ("CPH", 55.62, 12.66),
    ("CPT", -33.96, 18.60),
    ("DEL", 28.56, 77.10),
    ("DEN", 39.86, -104.67),
    ("DFW", 32.90, -97.04),
    ("DOH", 25.27, 51.61),
    ("DUB", 53.43, -6.25),
    ("DXB", 25.25, 55.36),
    ("EWR", 40.69, -74.17),
    ("EZE", -34.82, -58.54),
    ("FCO", 41.80, 12.25),
    ("FRA", 50.03, 8.57),
    ("GIG", -22.81, -43.25),
    ("GRU", -23.43, -46.47),
    ("HEL", 60.32, 24.96),
    ("HKG", 22.31, 113.92),
    ("HND", 35.55, 139.78),
    ("IAD", 38.95, -77.46),
    ("ICN", 37.46, 126.44),
    ("IST", 41.26, 28.74),
    ("JFK", 40.64, -73.78),
    ("JNB", -26.14, 28.25),
    ("LAS", 36.08, -115.15),
    ("LAX", 33.94, -118.41),
    ("LGA", 40.78, -73.87),
    ("LGW", 51.15, -0.19),
    ("LHR", 51.47, -0.45),
    ("LIS", 38.77, -9.13),
    ("MAD", 40.49, -3.57),
    ("MAN", 53.35, -2.28),
    ("MEL", -37.67, 144.84),
    ("MEX", 19.44, -99.07),
    ("MIA", 25.79, -80.29),
    ("MUC", 48.35, 11.79),
    ("MXP", 45.63, 8.72),
    ("NRT", 35.77, 140.39),
    ("ORD", 41.97, -87.91),
    ("OSL", 60.19, 11.10),
    ("PEK", 40.08, 116.58),
    ("PHX", 33.43, -112.01),
    ("PRG", 50.10, 14.26),
    ("PVG", 31.14, 121.81),
    ("SEA", 47.45, -122.31),
    ("SFO", 37.62, -122.38),
    ("SIN", 1.36, 103.99),
    ("SYD", -33.94, 151.18),
    ("TLV", 32.01, 34.89),
    ("VIE", 48.11, 16.57),
    ("WAW", 52.17, 20.97),
    ("YUL", 45.47, -73.74),
    ("YVR", 49.19, -123.18),
    ("YYZ", 43.68, -79.63),
    ("ZRH", 47.46, 8.55),
];

/// Great-circle distance in kilometres.
fn distance_km(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (lat1, lon1) = (a.0.to_radians(), a.1.to_radians());
    let (lat2, lon2) = (b.0.to_radians(), b.1.to_radians());
    let h = ((lat2 - lat1) / 2.0).sin().powi(2)
        + lat1.cos() * lat2.cos() * ((lon2 - lon1) / 2.0).sin().powi(2);
    2.0 * 6371.0 * h.sqrt().asin()
}

/// One generated flight.
fn generate_flight(rng: &mut StdRng, number: u32) -> Option<ScheduleFlight> {
    let known: Vec<_> = COORDINATES
        .iter()
        .filter(|(code, ..)| airline::airports::lookup(code).is_some())
        .collect();
    if known.len() < 2 {
        return None;
    }
    // Pick a route 300 to 12,000 km long (no hops across town, no impossible legs).
    let (from, to, km) = loop {
        let a = known[rng.random_range(0..known.len())];
        let b = known[rng.random_range(0..known.len())];
        let km = distance_km((a.1, a.2), (b.1, b.2));
        if (300.0..=12_000.0).contains(&km) {
            break (a.0, b.0, km);
        }
    };
    // Block time: cruise at ~830 km/h plus taxi and climb, to 5 minutes.
    let minutes = ((km / 830.0 * 60.0 + 35.0) / 5.0).round() as i64 * 5;
    let day = rng.random_range(1..=30);
    let slot = rng.random_range(6 * 12..23 * 12); // 06:00 to 22:55 UTC, 5-minute slots
    let today = Utc::now().duration_trunc(TimeDelta::days(1)).ok()?;
    let departure = today + TimeDelta::days(day) + TimeDelta::minutes(slot * 5);
    let arrival = departure + TimeDelta::minutes(minutes);
    // Fares: a base plus a rate per kilometre, with demand noise, ending in 9 dollars.
    let dollars = (59.0 + km * 0.085) * rng.random_range(0.8..1.45);
    let dollars = ((dollars / 10.0).floor() * 10.0 + 9.0) as i64;
    let seats = match km {
        k if k < 1_500.0 => [150, 174, 180][rng.random_range(0..3)],
        k if k < 5_000.0 => [180, 200, 220][rng.random_range(0..3)],
        _ => [250, 296, 350][rng.random_range(0..3)],
    };
    Some(ScheduleFlight {
        flight_id: Uuid::now_v7(),
        flight_number: format!("AN{number}").parse().ok()?,
        from: from.parse().ok()?,
        to: to.parse().ok()?,
        departure,
        arrival,
        seats,
        price: Money::usd(dollars * 100),
    })
}

/// Schedules `count` realistic flights over the airports of the reference
/// list in the next 30 days, prices in USD; `progress` hears each one.
/// Deterministic routes and fares for a given `seed`.
async fn seed_flights<S: ProjectionStore + Clone>(
    airline: &Airline<S>,
    count: usize,
    seed: u64,
    mut progress: impl FnMut(usize),
) -> Result<usize> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut scheduled = 0;
    for i in 0..count {
        let number = 100 + (i as u32 % 9_900);
        let Some(command) = generate_flight(&mut rng, number) else {
            break;
        };
        airline
            .schedule_flight(command, CommandContext::default())
            .await
            .map_err(|e| format!("seeding flight {number}: {e}"))?;
        scheduled += 1;
        progress(scheduled);
    }
    Ok(scheduled)
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;

    #[test]
    fn every_reference_airport_has_coordinates() {
        for airport in airline::airports::AIRPORTS {
            assert!(
                COORDINATES.iter().any(|(code, ..)| *code == airport.code),
                "{} has no coordinates",
                airport.code
            );
        }
    }

    #[test]
    fn generated_flights_are_plausible() {
        let mut rng = StdRng::seed_from_u64(7);
        for number in 100..400 {
            let flight = generate_flight(&mut rng, number).unwrap();
            assert_ne!(flight.from, flight.to);
            let hours = (flight.arrival - flight.departure).num_minutes() as f64 / 60.0;
            assert!((0.9..16.0).contains(&hours), "{hours} h");
            assert!(flight.departure > Utc::now());
            assert!(flight.departure < Utc::now() + TimeDelta::days(32));
            assert!((5_000..500_000).contains(&flight.price.amount));
            assert_eq!(flight.price.amount % 100, 0);
        }
    }

    #[test]
    fn the_cli_parses_the_documented_commands() {
        for args in [
            vec!["airline"],
            vec!["airline", "--listen", "127.0.0.1:0"],
            vec![
                "airline",
                "serve",
                "--store",
                "memory",
                "--read-model",
                "memory",
            ],
            vec!["airline", "project"],
            vec!["airline", "migrate"],
            vec!["airline", "seed", "--flights", "10"],
            vec!["airline", "rebuild", "flights"],
        ] {
            Cli::try_parse_from(&args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        }
        assert!(Cli::try_parse_from(["airline", "serve", "--store", "mongo"]).is_err());
    }

    #[test]
    fn addresses_parse() {
        let cli = Cli::try_parse_from(["airline", "--listen", "0.0.0.0:9000"]).unwrap();
        assert_eq!(
            cli.config.listen,
            "0.0.0.0:9000".parse::<SocketAddr>().unwrap()
        );
    }
}
