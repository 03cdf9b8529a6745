//! `airline`: the annals showcase service and its tools.
//!
//! `airline` (or `airline serve`) serves the REST API and the gRPC flight
//! search (`proto/flights.proto`) and runs the projections in one process. With no configuration it runs the embedded
//! in-memory default: an in-memory store, the in-memory flight read model,
//! the booking saga, and a couple of hundred seeded flights.
//!
//! `airline check` reads the whole log and reports what breaks the
//! airline's invariants ([`airline::invariants`]); it exits with 1 when
//! anything does.
//!
//! With `AMQP_URL`, `serve` and `project` also publish the integration
//! events ([`airline::integration`]); `airline relay` runs only that
//! relay, and `airline notify` the notifications' consumer
//! ([`airline::notifications`]).

use std::error::Error;
use std::time::Duration;

use airline::app::Airline;
use airline::background::Background;
use airline::booking::SimulatedPayments;
use airline::config::{Config, ReadModelKind, StoreKind};
use airline::http::{AppState, Role, Tokens, router, serve};
use airline::invariants::Checker;
use airline::search::{FLIGHTS_PROJECTION, FlightReads, flight_events};
use airline::seed::seed_flights;
use airline::setup::{
    airline_on, airline_on_postgres, elastic_flights, postgres, start_notifications,
    start_projections, start_relay,
};
use annals::EventStore;
use annals::memory::MemoryStore;
use annals::projection::{ProjectionStore, checkpoint_name, wait_for_checkpoint};
use annals_postgres::PgEventStore;
use clap::{Parser, Subcommand};
use rand::Rng;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

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
    /// Serve the REST API and the gRPC flight search and run the projections
    /// in one process (the default).
    Serve(Config),
    /// Run the projections only (a projection daemon, no API).
    Project(Config),
    /// Publish the integration events only: the relay from the log to
    /// RabbitMQ (needs DATABASE_URL and AMQP_URL). Another process running
    /// the relay (`serve`, `project`) makes this one a hot standby.
    Relay(Config),
    /// Run the notifications: consume the integration events through an
    /// inbox and record a notice per booking (needs DATABASE_URL and AMQP_URL).
    Notify(Config),
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
    /// Ask for a retry of a projection's dead letters (its parked events and,
    /// for the booking saga, its dead-lettered deadlines), once their cause
    /// is fixed: the running projection applies them in order.
    Retry {
        /// `booking_saga`, or `flights` (the live search index's projection).
        projection: String,
        #[command(flatten)]
        config: Config,
    },
    /// List who holds each partition of a projection (`booking_saga`, or any
    /// projection name): owner, fencing generation, expiry.
    Claims {
        /// The projection.
        projection: String,
        #[command(flatten)]
        config: Config,
    },
    /// Move a projection's partitions away from one process, for maintenance:
    /// at its next heartbeat the owner (as `claims` lists it) gives its
    /// partitions back and takes none, and the other processes share them.
    /// `--undo` lets it take its share again.
    Drain {
        /// The projection.
        projection: String,
        /// The owner id, as `claims` prints it.
        owner: String,
        /// Let the owner take its share again.
        #[arg(long)]
        undo: bool,
        #[command(flatten)]
        config: Config,
    },
    /// Check the airline's invariants (seats, money, settled bookings, the
    /// search read model) against the whole log; exit code 1 on violations.
    Check {
        /// Skip the bookings requested in the last this many seconds (they
        /// may still be under way); 0 checks every booking.
        #[arg(long, default_value_t = 0.0)]
        grace_secs: f64,
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
        Some(Command::Relay(config)) => relay_command(config.with_environment()).await,
        Some(Command::Notify(config)) => notify_command(config.with_environment()).await,
        Some(Command::Migrate(config)) => migrate_command(config.with_environment()).await,
        Some(Command::Seed { flights, config }) => {
            seed_command(config.with_environment(), flights).await
        }
        Some(Command::Rebuild { projection, config }) => {
            rebuild_command(config.with_environment(), &projection).await
        }
        Some(Command::Retry { projection, config }) => {
            retry_command(config.with_environment(), &projection).await
        }
        Some(Command::Claims { projection, config }) => {
            claims_command(config.with_environment(), &projection).await
        }
        Some(Command::Drain {
            projection,
            owner,
            undo,
            config,
        }) => drain_command(config.with_environment(), &projection, &owner, !undo).await,
        Some(Command::Check { grace_secs, config }) => {
            check_command(config.with_environment(), grace_secs).await
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
    let grpc = bind_grpc(&config).await?;
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
                Listeners {
                    http: listener,
                    grpc,
                },
                settings,
                tokens,
                &config,
                airline_on_postgres(store, &config).await?,
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
            let airline = airline_on(MemoryStore::new(), SimulatedPayments::new(), &config);
            seed_flights(&airline, config.seed_flights, 42, |_| {}).await?;
            let listeners = Listeners {
                http: listener,
                grpc,
            };
            run_service(listeners, settings, tokens, &config, airline, shutdown).await
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
    let grpc = bind_grpc(&config).await?;
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

    let airline = airline_on(MemoryStore::new(), SimulatedPayments::new(), &config);
    let seeded = seed_flights(&airline, config.seed_flights, 42, |_| {}).await?;
    tracing::info!(flights = seeded, "seeded flights over the next 30 days");
    let shutdown = CancellationToken::new();
    watch_signals(shutdown.clone());
    let listeners = Listeners {
        http: listener,
        grpc,
    };
    run_service(listeners, settings, tokens, &config, airline, shutdown).await
}

async fn bind(config: &Config) -> Result<TcpListener> {
    TcpListener::bind(config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen).into())
}

/// Binds the gRPC flight search's address and says where it listens (the
/// port it got, when port 0 asked for any).
async fn bind_grpc(config: &Config) -> Result<TcpListener> {
    let listener = TcpListener::bind(config.grpc_listen)
        .await
        .map_err(|e| format!("cannot listen on {} (gRPC): {e}", config.grpc_listen))?;
    // Not "listening on http://…": scripts read the REST address from that line.
    tracing::info!(
        "gRPC flight search (proto/flights.proto) on {}",
        listener.local_addr()?
    );
    Ok(listener)
}

/// Where a serving process listens.
struct Listeners {
    /// The REST API.
    http: TcpListener,
    /// The gRPC flight search.
    grpc: TcpListener,
}

/// Serves the API over any store: starts the read model's projection and
/// the booking saga, serves until a signal, then stops the server and lets
/// the runners finish their batch.
async fn run_service<S: ProjectionStore + Clone>(
    listeners: Listeners,
    settings: airline::http::HttpSettings,
    tokens: Tokens,
    config: &Config,
    airline: Airline<S>,
    shutdown: CancellationToken,
) -> Result<()> {
    let grpc_settings = config.grpc_settings()?;
    // Its own token: the runners stop only after the servers have drained.
    let mut background = Background::new(CancellationToken::new());
    let reads = start_projections(config, &airline, &mut background)?;
    let state = AppState::new(airline, reads, tokens)
        .with_settings(settings)
        .with_runners(background.runners());
    // One server failing stops the other: the process exits, as it would
    // if either had not started.
    let http = async {
        let served = serve(
            listeners.http,
            router(state.clone()),
            state.settings(),
            shutdown.clone(),
        )
        .await;
        shutdown.cancel();
        served
    };
    let grpc = async {
        let served = airline::grpc::serve(
            listeners.grpc,
            state.queries().clone(),
            &grpc_settings,
            shutdown.clone(),
        )
        .await;
        shutdown.cancel();
        served
    };
    let (http, grpc) = tokio::join!(http, grpc);
    tracing::info!("servers stopped; stopping projections");
    background.shutdown(SHUTDOWN_GRACE).await;
    tracing::info!("bye");
    http?;
    grpc?;
    Ok(())
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
    let airline = airline_on_postgres(store, &config).await?;
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

/// How often `airline relay` logs its progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// `airline relay`: the integration relay alone, until a signal.
async fn relay_command(config: Config) -> Result<()> {
    if config.store_kind() != StoreKind::Postgres {
        return Err(
            "`airline relay` needs DATABASE_URL: it publishes from the PostgreSQL log".into(),
        );
    }
    config.amqp_url()?;
    let store = postgres(&config).await?;
    let shutdown = CancellationToken::new();
    watch_signals(shutdown.clone());
    let mut background = Background::new(CancellationToken::new());
    start_relay(&config, store, &mut background)?;
    tracing::info!("airline relay running");
    let runners = background.runners();
    let mut tick = tokio::time::interval(PROGRESS_EVERY);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = tick.tick() => {
                for runner in &runners {
                    let progress = runner.progress.borrow().clone();
                    tracing::info!(
                        relay = %runner.name, state = ?progress.state, checkpoint = %progress.checkpoint,
                        published = progress.events_applied, lag_seconds = progress.lag_seconds(),
                        retries = progress.retries, last_error = progress.last_error.as_deref().unwrap_or(""),
                        "relay progress"
                    );
                }
            }
        }
    }
    background.shutdown(SHUTDOWN_GRACE).await;
    tracing::info!("bye");
    Ok(())
}

/// `airline notify`: the notifications' consumer, until a signal.
async fn notify_command(config: Config) -> Result<()> {
    if config.store_kind() != StoreKind::Postgres {
        return Err("`airline notify` needs DATABASE_URL: its inbox and notices live there".into());
    }
    config.amqp_url()?;
    let store = postgres(&config).await?;
    let shutdown = CancellationToken::new();
    watch_signals(shutdown.clone());
    let mut background = Background::new(CancellationToken::new());
    start_notifications(&config, store, &mut background).await?;
    tracing::info!(queue = %config.notify_queue, "airline notifications running");
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
    let airline = airline_on_postgres(postgres(&config).await?, &config).await?;
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

/// `airline retry <projection>`: marks its dead letters for a retry.
async fn retry_command(config: Config, projection: &str) -> Result<()> {
    let store = postgres_for(&config, "retry").await?;
    let name = match projection {
        SAGA => SAGA.to_owned(),
        FLIGHTS_PROJECTION => {
            // Dead letters are kept under the live index's projection name.
            let flights = elastic_flights(&config)?;
            let live = flights.read_model().live_index().await?;
            let index = live.ok_or("the flight index is not built yet")?;
            flights.read_model().projection_name(&index)
        }
        other => {
            return Err(format!(
                "unknown projection {other:?}: the airline's are {SAGA} and {FLIGHTS_PROJECTION}"
            )
            .into());
        }
    };
    // A partitioned saga keeps dead letters per partition.
    let partitions = if name == SAGA {
        config.saga_partitions
    } else {
        1
    };
    for partition in 0..partitions {
        let name = checkpoint_name(&name, partition, partitions);
        let count = store.retry_dead_letters(&name).await?;
        println!("{count} dead letters of {name} marked for a retry");
    }
    Ok(())
}

/// `airline drain <projection> <owner>`: the owner gives its partitions back.
async fn drain_command(
    config: Config,
    projection: &str,
    owner: &str,
    draining: bool,
) -> Result<()> {
    let store = postgres_for(&config, "drain").await?;
    if !store.drain(projection, owner, draining).await? {
        return Err(format!("{owner:?} is not among the owners of {projection}").into());
    }
    if draining {
        println!("{owner} drains {projection}: its partitions move at its next heartbeat");
    } else {
        println!("{owner} takes its share of {projection} again");
    }
    Ok(())
}

/// `airline claims <projection>`: each partition's owner, generation and
/// expiry, as the claims table says.
async fn claims_command(config: Config, projection: &str) -> Result<()> {
    let store = postgres_for(&config, "claims").await?;
    let owners = store.partition_owners(projection).await?;
    if owners.is_empty() {
        println!("{projection}: never claimed");
    }
    for partition in owners {
        let owner = partition.owner.as_deref().unwrap_or("(free)");
        let expires = partition
            .expires_at
            .map_or_else(String::new, |at| format!(" until {}", at.to_rfc3339()));
        println!(
            "{projection} partition {}: {owner}, generation {}{expires}",
            partition.partition, partition.generation
        );
    }
    Ok(())
}

/// The PostgreSQL store, for a command that works on it only (`airline
/// <command>`): an error naming the command without DATABASE_URL.
async fn postgres_for(config: &Config, command: &str) -> Result<PgEventStore> {
    if config.store_kind() != StoreKind::Postgres {
        return Err(format!("`airline {command}` needs DATABASE_URL").into());
    }
    Ok(postgres(config).await?)
}

/// The booking saga's projection name.
const SAGA: &str = <airline::booking::BookingSaga as annals::AggregateType>::NAME;

/// How long `airline check` lets the search read model catch up with the
/// log before comparing them.
const CHECK_CATCH_UP: Duration = Duration::from_secs(10);

/// `airline check`: the invariants of [`airline::invariants`] against the
/// log of `DATABASE_URL`, the simulated provider's ledger there, and, with
/// `ELASTICSEARCH_URL`, the search read model. Prints the report; fails
/// (exit code 1) when anything is broken.
async fn check_command(config: Config, grace_secs: f64) -> Result<()> {
    if config.store_kind() != StoreKind::Postgres {
        return Err("`airline check` needs DATABASE_URL: it reads the PostgreSQL log".into());
    }
    let grace = Duration::try_from_secs_f64(grace_secs)
        .map_err(|_| "--grace-secs must be a non-negative number of seconds")?;
    // Read only: no migration (a database without the annals schema fails the read).
    let store = PgEventStore::options()
        .acquire_timeout(Duration::from_secs(3))
        .connect(config.database_url()?)
        .await
        .map_err(|e| format!("cannot connect to PostgreSQL (DATABASE_URL): {e}"))?;
    let payments = SimulatedPayments::on_postgres(store.pool().clone())
        .await
        .map_err(|e| format!("cannot read the simulated payment provider's ledger: {e}"))?;
    let reads = match config.read_model_kind() {
        ReadModelKind::Elastic => Some(elastic_flights(&config)?),
        ReadModelKind::Memory => {
            println!(
                "the read model is not checked: without ELASTICSEARCH_URL it lives in the serving process"
            );
            None
        }
    };
    let mut checker = Checker::new(&store)
        .with_payments(&payments)
        .in_flight_grace(grace);
    if let Some(reads) = &reads {
        let head = store.head().await?;
        let projection = reads.projection_name();
        if let Err(error) =
            wait_for_checkpoint(&store, &projection, &flight_events(), head, CHECK_CATCH_UP).await
        {
            println!("the search read model has not caught up with the log: {error}");
        }
        checker = checker.with_reads(reads.as_ref());
    }
    let report = checker.check().await?;
    println!("{report}");
    match report.violations.len() {
        0 => Ok(()),
        n => Err(format!("{n} invariant violation(s) found").into()),
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;

    #[test]
    fn the_cli_parses_the_documented_commands() {
        for args in [
            vec!["airline"],
            vec!["airline", "--listen", "127.0.0.1:0"],
            vec!["airline", "serve", "--grpc-listen", "0"],
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
            vec!["airline", "relay"],
            vec!["airline", "notify", "--notify-workers", "8"],
            vec!["airline", "seed", "--flights", "10"],
            vec!["airline", "rebuild", "flights"],
            vec!["airline", "check"],
            vec!["airline", "retry", "booking_saga"],
            vec!["airline", "check", "--grace-secs", "30"],
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
