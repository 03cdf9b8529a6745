//! How one process of the airline is put together from its configuration:
//! the event store, the write side with its payment provider, the read side
//! and the background work that keeps it current.

use std::sync::Arc;
use std::time::Duration;

use annals::projection::{Backoff, ProjectionStore, RunnerOptions};
use annals_elastic::{ElasticError, ReadModel, ReadModelOptions, WriterOptions};
use annals_postgres::{PgError, PgEventStore};
use annals_rabbitmq::{Inbox, InboxError};

use crate::app::Airline;
use crate::background::Background;
use crate::booking::{ResilientPayments, SimulatedPayments};
use crate::config::{Config, ConfigError, ReadModelKind};
use crate::notifications::{self, CONSUMER};
use crate::search::{
    ElasticFlights, FlightIndex, FlightReads, GuardedReads, MemoryFlights, ReadGuard,
};

/// Why a process could not be put together.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The configuration is incomplete or wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// PostgreSQL (`DATABASE_URL`) did not answer.
    #[error("cannot connect to PostgreSQL (DATABASE_URL)")]
    Connect(#[source] PgError),
    /// The annals schema could not be migrated.
    #[error("cannot migrate the annals schema")]
    Migrate(#[source] PgError),
    /// The simulated payment provider's table could not be set up.
    #[error("cannot set up the simulated payment provider")]
    Payments(#[source] sqlx::Error),
    /// The search server (`ELASTICSEARCH_URL`) is not usable.
    #[error("cannot reach Elasticsearch (ELASTICSEARCH_URL)")]
    Search(#[source] ElasticError),
    /// The notifications' inbox could not be set up (boxed: the broker's
    /// errors are large, and every other setup result would carry them).
    #[error("cannot set up the notifications' inbox")]
    Inbox(#[source] Box<InboxError>),
}

/// The write side over `store`, charging through the simulated payment
/// provider behind its resilient client.
pub fn airline_on<S: ProjectionStore + Clone>(
    store: S,
    payments: SimulatedPayments,
    config: &Config,
) -> Airline<S> {
    if let Some(outage) = config.payments_outage() {
        tracing::warn!(
            ?outage,
            "the simulated payment provider starts with an outage"
        );
        payments.unavailable_for(outage);
    }
    let provider = ResilientPayments::new(payments, Duration::from_millis(500), 2);
    Airline::new(store, Arc::new(provider))
}

/// The airline on PostgreSQL: the simulated provider keeps its charges
/// there too, so refunds after a restart or a failover find them.
pub async fn airline_on_postgres(
    store: PgEventStore,
    config: &Config,
) -> Result<Airline<PgEventStore>, SetupError> {
    let payments = SimulatedPayments::on_postgres(store.pool().clone())
        .await
        .map_err(SetupError::Payments)?;
    Ok(airline_on(store, payments, config))
}

/// The PostgreSQL store of `DATABASE_URL`, migrated.
pub async fn postgres(config: &Config) -> Result<PgEventStore, SetupError> {
    let url = config.database_url()?;
    // A stopped database fails a command within seconds, well before the
    // request timeout.
    let store = PgEventStore::options()
        .acquire_timeout(Duration::from_secs(3))
        .connect(url)
        .await
        .map_err(SetupError::Connect)?;
    store.migrate().await.map_err(SetupError::Migrate)?;
    Ok(store)
}

/// How long a request to the search server may take.
const SEARCH_TIMEOUT: Duration = Duration::from_secs(10);

/// The Elasticsearch flight read model of `ELASTICSEARCH_URL`.
pub fn elastic_flights(config: &Config) -> Result<Arc<ElasticFlights>, SetupError> {
    // A frozen search server fails the index writer's writes (which then
    // report it and retry) instead of hanging them.
    let client = annals_elastic::connect_with_timeout(config.elasticsearch_url()?, SEARCH_TIMEOUT)
        .map_err(SetupError::Search)?;
    // The live index writer's requests carry a timeout of their own (60 s by
    // default), which overrides the client's: bound them the same way.
    let defaults = ReadModelOptions::default();
    let options = ReadModelOptions {
        live: WriterOptions {
            request_timeout: SEARCH_TIMEOUT,
            ..defaults.live
        },
        ..defaults
    };
    let read_model = ReadModel::new(client, FlightIndex)
        .with_prefix(&config.index_prefix)
        .with_options(options);
    Ok(Arc::new(ElasticFlights::from_read_model(read_model)))
}

/// Starts the configured flight read model and the booking saga in
/// `background`; returns the read side queries go to.
pub fn start_projections<S: ProjectionStore + Clone>(
    config: &Config,
    airline: &Airline<S>,
    background: &mut Background,
) -> Result<Arc<dyn FlightReads>, SetupError> {
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
        config.saga_partitions,
    );
    if config.amqp_url.is_some() {
        start_relay(config, airline.store().clone(), background)?;
    }
    Ok(Arc::new(GuardedReads::new(reads, ReadGuard::default())))
}

/// How the relay batches and retries: a broker back after a restart is
/// found within about two seconds.
pub fn relay_options() -> RunnerOptions {
    RunnerOptions {
        backoff: Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(2),
        },
        ..RunnerOptions::default()
    }
}

/// Starts the integration relay (`AMQP_URL`) in `background`.
pub fn start_relay<S: ProjectionStore + Clone>(
    config: &Config,
    store: S,
    background: &mut Background,
) -> Result<(), SetupError> {
    let url = config.amqp_url()?;
    background.relay(store, url, &config.exchange, relay_options());
    tracing::info!(exchange = %config.exchange, "publishing integration events");
    Ok(())
}

/// Migrates the notifications' inbox, declares its queue and starts its
/// consumer in `background`: the queue `AIRLINE_NOTIFY_QUEUE` on `AMQP_URL`.
pub async fn start_notifications(
    config: &Config,
    store: PgEventStore,
    background: &mut Background,
) -> Result<(), SetupError> {
    let url = config.amqp_url()?;
    let inbox = Inbox::new(store.pool().clone(), CONSUMER);
    inbox
        .migrate()
        .await
        .map_err(|error| SetupError::Inbox(Box::new(error)))?;
    let mut subscription = notifications::subscription(url, &config.exchange, &config.notify_queue);
    subscription.workers = config.notify_workers.max(1);
    subscription.prefetch = u16::try_from(subscription.workers * 16).unwrap_or(u16::MAX);
    // The queue exists before this returns: what the relay publishes from
    // then on is kept for the notifications even while they are down.
    inbox
        .declare(&subscription)
        .await
        .map_err(|error| SetupError::Inbox(Box::new(error)))?;
    background.notifications(inbox, store, subscription);
    Ok(())
}
