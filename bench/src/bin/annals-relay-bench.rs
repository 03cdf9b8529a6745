//! `annals-relay-bench`: the integration relay (`annals-rabbitmq`) against a
//! plain lapin publisher on the same broker.
//!
//! ```text
//! DATABASE_URL=postgres://annals:annals@127.0.0.1:5432/annals_test \
//! AMQP_URL=amqp://guest:guest@127.0.0.1:5672/%2f \
//!     cargo run --release -p annals-bench --bin annals-relay-bench
//! ```
//!
//! Works in a fresh schema and under a fresh exchange and queue name of its
//! own, all deleted at the end. Measures, in one run:
//!
//! 1. **Throughput**: a backlog of 30,000 events in the log, published by a
//!    `Relay` under a `ProjectionRunner` (default options: batches of 500)
//!    from the start of the log until its checkpoint reaches the head: events
//!    published and confirmed per second. Baseline: the same 30,000 messages
//!    (built by `OutgoingMessage::new` from the same events, so the same body
//!    and properties) published by a loop on one lapin confirm channel, in
//!    batches of 500, each batch's confirms awaited before the next, as the
//!    relay does. Relay and baseline alternate, two rounds each; every
//!    message is routed to one durable queue, purged between rounds.
//! 2. **Latency**, append to delivery: 200 events/s appended one by one for
//!    10 s while the relay runs live; a consumer of the queue takes each
//!    message's append time from its body. Baseline: the same rate of
//!    messages published by the lapin loop (each confirmed before the next),
//!    publish to delivery. p50 and p99.

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use annals::projection::{ProjectionRunner, RunnerOptions};
use annals::{
    EventFilter, EventStore, ExpectedVersion, Metadata, NewEvent, Position, RecordedEvent,
};
use annals_postgres::PgEventStore;
use annals_rabbitmq::lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions, QueuePurgeOptions,
};
use annals_rabbitmq::lapin::types::FieldTable;
use annals_rabbitmq::lapin::{
    Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind,
};
use annals_rabbitmq::{
    IntegrationEvent, IntegrationEvents, MapError, OutgoingMessage, Relay, RelayOptions,
};
use futures::StreamExt;
use serde_json::{Value, json};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection as _};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Events in the backlog of the throughput phase.
const BACKLOG: usize = 30_000;
/// Events per append while the backlog is written.
const APPEND_BATCH: usize = 100;
/// The relay's batches (the runner's default), and the baseline's.
const BATCH: usize = 500;
/// Alternating rounds of the throughput comparison.
const ROUNDS: usize = 2;
/// The latency phase: events (or messages) per second, for how long.
const RATE: u64 = 200;
const LATENCY_RUN: Duration = Duration::from_secs(10);
/// Padding of each body, so that a message is about the size of the
/// airline's `booking.confirmed` v1 (about 300 bytes of JSON).
const PADDING: usize = 200;
const EVENT_TYPE: &str = "BenchEvent";

/// Publishes each `BenchEvent` as `bench.event` v1, its payload as the body.
struct Published;

#[async_trait::async_trait]
impl IntegrationEvents for Published {
    fn filter(&self) -> EventFilter {
        EventFilter::types([EVENT_TYPE])
    }

    async fn map(&self, event: &RecordedEvent) -> Result<Option<IntegrationEvent>, MapError> {
        let body = event.payload.to_value().map_err(MapError::invalid)?;
        let integration = IntegrationEvent::new("bench.event", 1, &event.stream_id, &body)
            .map_err(MapError::invalid)?;
        Ok(Some(integration))
    }
}

/// Microseconds since the Unix epoch: comparable across the tasks of this
/// process (and cheap to put in a body).
fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn body(sent_at: u64) -> Value {
    json!({
        "booking_id": Uuid::now_v7(),
        "sent_at_us": sent_at,
        "padding": "x".repeat(PADDING),
    })
}

fn event(sent_at: u64) -> NewEvent {
    NewEvent {
        event_id: Uuid::now_v7(),
        event_type: EVENT_TYPE.into(),
        schema_version: 1,
        payload: body(sent_at).into(),
        metadata: Metadata::default(),
        tags: Vec::new(),
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let database = std::env::var("DATABASE_URL").map_err(
        |_| "set DATABASE_URL, e.g. postgres://annals:annals@127.0.0.1:5432/annals_test",
    )?;
    let amqp = std::env::var("AMQP_URL")
        .map_err(|_| "set AMQP_URL, e.g. amqp://guest:guest@127.0.0.1:5672/%2f")?;
    let base = PgConnectOptions::from_str(&database)?.disable_statement_logging();
    let id = Uuid::new_v4().simple().to_string();
    let schema = format!("annals_bench_{id}");
    let names = Names {
        exchange: format!("annals_bench_{id}.events"),
        queue: format!("annals_bench_{id}.all"),
    };
    let mut admin = base.connect().await?;
    sqlx::raw_sql(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut admin)
        .await?;
    let options = base.clone().options([("search_path", schema.as_str())]);
    let broker = Connection::connect(&amqp, ConnectionProperties::default()).await?;
    let channel = broker.create_channel().await?;

    let outcome = run(&options, &amqp, &channel, &names).await;

    let _ = channel
        .queue_delete(names.queue.as_str().into(), QueueDeleteOptions::default())
        .await;
    let _ = channel
        .exchange_delete(
            names.exchange.as_str().into(),
            ExchangeDeleteOptions::default(),
        )
        .await;
    let _ = broker.close(200, "OK".into()).await;
    sqlx::raw_sql(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(&mut admin)
        .await?;
    admin.close().await?;
    outcome
}

/// The run's exchange and queue.
#[derive(Clone)]
struct Names {
    exchange: String,
    queue: String,
}

async fn run(
    options: &PgConnectOptions,
    amqp: &str,
    channel: &Channel,
    names: &Names,
) -> Result<(), BoxError> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(8)
        .connect_with(options.clone())
        .await?;
    let store = PgEventStore::from_pool(pool);
    store.migrate().await?;
    channel
        .exchange_declare(
            names.exchange.as_str().into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_declare(
            names.queue.as_str().into(),
            QueueDeclareOptions::durable(),
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_bind(
            names.queue.as_str().into(),
            names.exchange.as_str().into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "annals-relay-bench: {BACKLOG} events, batches of {BATCH}, bodies of about {} bytes; load average {}",
        serde_json::to_vec(&body(now_micros()))?.len(),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );

    // 1. Throughput.
    for start in (0..BACKLOG).step_by(APPEND_BATCH) {
        let events = (start..(start + APPEND_BATCH).min(BACKLOG))
            .map(|_| event(0))
            .collect();
        store
            .append(
                &format!("bench-{}", start / APPEND_BATCH),
                ExpectedVersion::Any,
                events,
            )
            .await?;
    }
    let head = read_head(&store).await?;
    let messages = outgoing(&store).await?;
    let publisher = confirm_channel(amqp).await?;
    let (mut relay_time, mut raw_time) = (Duration::ZERO, Duration::ZERO);
    for round in 0..ROUNDS {
        let elapsed = relay_backlog(&store, amqp, names, &format!("relay-{round}"), head).await?;
        relay_time += elapsed;
        println!(
            "  round {round}: relay {:.0} events/s",
            rate(BACKLOG, elapsed)
        );
        purge(channel, names).await?;
        let elapsed = raw_backlog(&publisher.channel, names, &messages).await?;
        raw_time += elapsed;
        println!(
            "  round {round}: raw   {:.0} messages/s",
            rate(BACKLOG, elapsed)
        );
        purge(channel, names).await?;
    }
    let relay_rate = rate(BACKLOG * ROUNDS, relay_time);
    let raw_rate = rate(BACKLOG * ROUNDS, raw_time);
    println!(
        "throughput, published and confirmed: relay {relay_rate:.0} events/s, raw lapin loop {raw_rate:.0} messages/s ({:.1} % of raw)",
        100.0 * relay_rate / raw_rate
    );

    // 2. Latency.
    let relay = latency_relay(&store, amqp, names).await?;
    purge(channel, names).await?;
    let raw = latency_raw(&publisher.channel, amqp, names).await?;
    purge(channel, names).await?;
    let _ = publisher.connection.close(200, "OK".into()).await;
    println!(
        "latency at {RATE}/s for {LATENCY_RUN:?}: append -> delivered (relay) {}; publish -> delivered (raw) {}",
        summary(relay),
        summary(raw)
    );
    Ok(())
}

fn rate(count: usize, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64().max(f64::EPSILON)
}

/// The last position of the log.
async fn read_head(store: &PgEventStore) -> Result<Position, BoxError> {
    let all = all_events(store).await?;
    all.last()
        .map(|event| event.position)
        .ok_or_else(|| "an empty log".into())
}

async fn all_events(store: &PgEventStore) -> Result<Vec<RecordedEvent>, BoxError> {
    let filter = EventFilter::types([EVENT_TYPE]);
    let mut after = Position::START;
    let mut all = Vec::new();
    loop {
        let page = store.read_all(after, 5_000, &filter).await?;
        let Some(last) = page.last() else {
            return Ok(all);
        };
        after = last.position;
        all.extend(page);
    }
}

/// The messages the relay publishes for the log, built the relay's way.
async fn outgoing(store: &PgEventStore) -> Result<Vec<OutgoingMessage>, BoxError> {
    let mut messages = Vec::new();
    for event in all_events(store).await? {
        let integration = Published
            .map(&event)
            .await?
            .ok_or("every bench event maps")?;
        messages.push(OutgoingMessage::new(&event, &integration, "raw")?);
    }
    Ok(messages)
}

/// The baseline's publisher: one connection, one confirm channel.
struct Publisher {
    connection: Connection,
    channel: Channel,
}

async fn confirm_channel(amqp: &str) -> Result<Publisher, BoxError> {
    let connection = Connection::connect(amqp, ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    Ok(Publisher {
        connection,
        channel,
    })
}

async fn purge(channel: &Channel, names: &Names) -> Result<(), BoxError> {
    channel
        .queue_purge(names.queue.as_str().into(), QueuePurgeOptions::default())
        .await?;
    Ok(())
}

/// A relay named `name` publishes the whole log; how long until its
/// checkpoint reaches `head`.
async fn relay_backlog(
    store: &PgEventStore,
    amqp: &str,
    names: &Names,
    name: &str,
    head: Position,
) -> Result<Duration, BoxError> {
    let relay = Relay::new(
        name,
        amqp,
        Arc::new(Published),
        RelayOptions::new(names.exchange.as_str()),
    );
    let runner =
        ProjectionRunner::new(store.clone(), Arc::new(relay)).with_options(RunnerOptions {
            batch_size: BATCH,
            ..RunnerOptions::default()
        });
    let shutdown = CancellationToken::new();
    let started = Instant::now();
    let running = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { runner.run(shutdown).await }
    });
    loop {
        if store
            .load_checkpoint(name)
            .await?
            .is_some_and(|at| at >= head)
        {
            break;
        }
        if running.is_finished() {
            return Err(format!("the relay {name} stopped before the head").into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = started.elapsed();
    shutdown.cancel();
    running.await??;
    Ok(elapsed)
}

/// Publishes `messages` in batches of [`BATCH`], each batch's confirms
/// awaited before the next.
async fn raw_backlog(
    channel: &Channel,
    names: &Names,
    messages: &[OutgoingMessage],
) -> Result<Duration, BoxError> {
    let started = Instant::now();
    for batch in messages.chunks(BATCH) {
        let mut confirms = Vec::with_capacity(batch.len());
        for message in batch {
            confirms.push(
                channel
                    .basic_publish(
                        names.exchange.as_str().into(),
                        message.routing_key.clone(),
                        BasicPublishOptions::default(),
                        &message.body,
                        message.properties.clone(),
                    )
                    .await?,
            );
        }
        for confirm in futures::future::join_all(confirms).await {
            if !matches!(confirm?, Confirmation::Ack(_)) {
                return Err("a message was not confirmed".into());
            }
        }
    }
    Ok(started.elapsed())
}

/// Starts a consumer of `count` messages; returns once it consumes.
async fn consumer(
    amqp: &str,
    names: &Names,
    count: usize,
) -> Result<tokio::task::JoinHandle<Result<Vec<u64>, BoxError>>, BoxError> {
    let (ready, mut consuming) = mpsc::channel(1);
    let consumer = tokio::spawn({
        let (amqp, names) = (amqp.to_owned(), names.clone());
        async move { consume(&amqp, &names, count, ready).await }
    });
    consuming.recv().await.ok_or("the consumer started")?;
    Ok(consumer)
}

/// Consumes the queue until `count` messages came; each one's delay since
/// the `sent_at_us` of its body, in microseconds.
async fn consume(
    amqp: &str,
    names: &Names,
    count: usize,
    ready: mpsc::Sender<()>,
) -> Result<Vec<u64>, BoxError> {
    let connection = Connection::connect(amqp, ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    let mut consumer = channel
        .basic_consume(
            names.queue.as_str().into(),
            "annals-relay-bench".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    ready.send(()).await?;
    let mut delays = Vec::with_capacity(count);
    while delays.len() < count {
        let next = tokio::time::timeout(Duration::from_secs(30), consumer.next()).await;
        let delivery = match next {
            Ok(Some(delivery)) => delivery?,
            Ok(None) | Err(_) => {
                return Err(format!("{} of {count} messages came", delays.len()).into());
            }
        };
        let received = now_micros();
        let body: Value = serde_json::from_slice(&delivery.data)?;
        let sent = body["sent_at_us"]
            .as_u64()
            .ok_or("a body without sent_at_us")?;
        delays.push(received.saturating_sub(sent));
        delivery.ack(BasicAckOptions::default()).await?;
    }
    let _ = connection.close(200, "OK".into()).await;
    Ok(delays)
}

/// How many messages the latency phases send.
fn latency_count() -> usize {
    usize::try_from(RATE * LATENCY_RUN.as_secs()).unwrap_or(usize::MAX)
}

/// The relay runs live; events are appended at [`RATE`].
async fn latency_relay(
    store: &PgEventStore,
    amqp: &str,
    names: &Names,
) -> Result<Vec<u64>, BoxError> {
    // A relay that starts at the head: its checkpoint set first.
    let name = "relay-live";
    let head = read_head(store).await?;
    store.save_checkpoint(name, head).await?;
    let relay = Relay::new(
        name,
        amqp,
        Arc::new(Published),
        RelayOptions::new(names.exchange.as_str()),
    );
    let runner = ProjectionRunner::new(store.clone(), Arc::new(relay));
    let shutdown = CancellationToken::new();
    let running = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { runner.run(shutdown).await }
    });
    let count = latency_count();
    let consumer = consumer(amqp, names, count).await?;
    let mut ticks = tokio::time::interval(Duration::from_micros(1_000_000 / RATE));
    for i in 0..count {
        ticks.tick().await;
        store
            .append(
                &format!("live-{}", i % 64),
                ExpectedVersion::Any,
                vec![event(now_micros())],
            )
            .await?;
    }
    let delays = consumer.await??;
    shutdown.cancel();
    running.await??;
    Ok(delays)
}

/// Messages published at [`RATE`] by the lapin loop, each confirmed
/// before the next.
async fn latency_raw(channel: &Channel, amqp: &str, names: &Names) -> Result<Vec<u64>, BoxError> {
    let count = latency_count();
    let consumer = consumer(amqp, names, count).await?;
    let mut ticks = tokio::time::interval(Duration::from_micros(1_000_000 / RATE));
    for i in 0..count {
        ticks.tick().await;
        let body = serde_json::to_vec(&body(now_micros()))?;
        let properties = annals_rabbitmq::lapin::BasicProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(2)
            .with_message_id(Uuid::now_v7().to_string().into())
            .with_type("bench.event".into());
        let confirm = channel
            .basic_publish(
                names.exchange.as_str().into(),
                "bench.event.v1".into(),
                BasicPublishOptions::default(),
                &body,
                properties,
            )
            .await?;
        if !matches!(confirm.await?, Confirmation::Ack(_)) {
            return Err(format!("message {i} was not confirmed").into());
        }
    }
    consumer.await?
}

/// p50 and p99 of `delays` (microseconds), in milliseconds.
fn summary(mut delays: Vec<u64>) -> String {
    delays.sort_unstable();
    let at = |q: f64| {
        let index = ((delays.len() as f64 * q).ceil() as usize).clamp(1, delays.len().max(1)) - 1;
        delays.get(index).copied().unwrap_or(0) as f64 / 1000.0
    };
    format!(
        "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} messages)",
        at(0.50),
        at(0.99),
        delays.last().copied().unwrap_or(0) as f64 / 1000.0,
        delays.len()
    )
}
