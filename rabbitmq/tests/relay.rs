//! The relay against the real PostgreSQL and RabbitMQ: what it publishes,
//! in which order, with which ids, and what it does when the broker is
//! unreachable or an event cannot be mapped.

mod common;

use std::sync::Arc;
use std::time::Duration;

use annals::projection::{
    Backoff, FailurePolicy, ProjectionRunner, ProjectionStore, RunnerOptions,
};
use annals::{
    EventFilter, EventStore, ExpectedVersion, Metadata, NewEvent, Position, RecordedEvent,
};
use annals_postgres::PgEventStore;
use annals_rabbitmq::lapin::types::AMQPValue;
use annals_rabbitmq::{
    EVENT_ID_HEADER, IntegrationEvent, IntegrationEvents, KEY_HEADER, MapError, Relay,
    RelayOptions, VERSION_HEADER, message_id,
};
use common::{amqp, header, text};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Publishes `SeatsReleased` as `seats.released.v1`, except releases of no
/// seat; refuses `Poison`.
struct Published;

#[async_trait::async_trait]
impl IntegrationEvents for Published {
    fn filter(&self) -> EventFilter {
        EventFilter::types(["SeatsReleased", "Poison"])
    }

    async fn map(&self, event: &RecordedEvent) -> Result<Option<IntegrationEvent>, MapError> {
        if event.event_type == "Poison" {
            return Err(MapError::invalid("a poison event"));
        }
        let seats = event.payload.to_value().map_err(MapError::invalid)?["seats"]
            .as_u64()
            .unwrap_or(0);
        if seats == 0 {
            return Ok(None);
        }
        let body = json!({ "flight": event.stream_id, "seats": seats });
        Ok(Some(
            IntegrationEvent::new("seats.released", 1, &event.stream_id, &body)
                .map_err(MapError::invalid)?,
        ))
    }
}

async fn store(pg: &annals_testkit::PgTest) -> PgEventStore {
    let store = PgEventStore::from_pool(pg.pool().clone());
    store.migrate().await.expect("the annals schema");
    store
}

async fn append(store: &PgEventStore, stream: &str, event_type: &str, seats: u64) -> Uuid {
    let id = Uuid::now_v7();
    let event = NewEvent {
        event_id: id,
        event_type: event_type.into(),
        schema_version: 1,
        payload: json!({ "seats": seats }).into(),
        metadata: Metadata::default(),
        tags: Vec::new(),
    };
    store
        .append(stream, ExpectedVersion::Any, vec![event])
        .await
        .expect("an append");
    id
}

fn fast(max_attempts: u32) -> RunnerOptions {
    RunnerOptions {
        backoff: Backoff {
            initial: Duration::from_millis(20),
            max: Duration::from_millis(100),
        },
        failure_policy: FailurePolicy::DeadLetter { max_attempts },
        ..RunnerOptions::default()
    }
}

#[tokio::test]
async fn rabbitmq_relay_publishes_the_mapped_events_in_log_order_confirmed_and_persistent() {
    let Some(pg) = annals_testkit::postgres().await else {
        return;
    };
    let Some(mq) = annals_testkit::rabbitmq().await else {
        return;
    };
    let store = store(&pg).await;
    let (exchange, queue) = (mq.name("events"), mq.name("all"));
    let broker = amqp(mq.url()).await;
    broker.queue(&queue, &exchange, "seats.released.v1").await;

    let first = append(&store, "flight-1", "SeatsReleased", 2).await;
    let second = append(&store, "flight-2", "SeatsReleased", 3).await;
    append(&store, "flight-1", "SeatsReserved", 1).await; // not published
    append(&store, "flight-1", "SeatsReleased", 0).await; // mapped to nothing
    let third = append(&store, "flight-2", "SeatsReleased", 4).await;

    let relay = Relay::new(
        "relay",
        mq.url(),
        Arc::new(Published),
        RelayOptions::new(&exchange),
    );
    let runner = ProjectionRunner::new(store.clone(), Arc::new(relay)).with_options(fast(3));
    let checkpoint = tokio::time::timeout(Duration::from_secs(30), runner.catch_up())
        .await
        .expect("the relay catches up")
        .expect("no error");
    assert_eq!(
        checkpoint,
        store.head().await.unwrap(),
        "the checkpoint passed every event"
    );

    let messages = broker.drain(&queue).await;
    let bodies: Vec<Value> = messages
        .iter()
        .map(|m| serde_json::from_slice(&m.data).unwrap())
        .collect();
    assert_eq!(
        bodies,
        [
            json!({ "flight": "flight-1", "seats": 2 }),
            json!({ "flight": "flight-2", "seats": 3 }),
            json!({ "flight": "flight-2", "seats": 4 }),
        ],
        "in log order"
    );
    for (message, event) in messages.iter().zip([first, second, third]) {
        let p = &message.properties;
        let id = message_id(event, "seats.released", 1).to_string();
        assert_eq!(
            p.message_id().as_ref().map(|s| s.as_str()),
            Some(id.as_str())
        );
        assert_eq!(*p.delivery_mode(), Some(2), "persistent");
        assert_eq!(
            p.kind().as_ref().map(|s| s.as_str()),
            Some("seats.released")
        );
        assert_eq!(p.app_id().as_ref().map(|s| s.as_str()), Some("relay"));
        assert_eq!(message.routing_key.as_str(), "seats.released.v1");
        assert_eq!(
            header(message, VERSION_HEADER),
            Some(AMQPValue::LongLongInt(1))
        );
        assert_eq!(text(message, EVENT_ID_HEADER), event.to_string());
        assert!(text(message, KEY_HEADER).starts_with("flight-"));
    }

    // The checkpoint was saved: nothing is published twice.
    runner.catch_up().await.unwrap();
    assert!(broker.drain(&queue).await.is_empty());
}

#[tokio::test]
async fn rabbitmq_relay_holds_its_checkpoint_while_the_broker_is_unreachable() {
    let Some(pg) = annals_testkit::postgres().await else {
        return;
    };
    let Some(mq) = annals_testkit::rabbitmq().await else {
        return;
    };
    let store = store(&pg).await;
    let (exchange, queue) = (mq.name("events"), mq.name("all"));
    append(&store, "flight-1", "SeatsReleased", 2).await;

    // Nothing listens on port 1.
    let mut options = RelayOptions::new(&exchange);
    options.circuit_cooldown = Duration::from_millis(300);
    let down = Arc::new(Relay::new(
        "relay",
        "amqp://guest:guest@127.0.0.1:1/%2f",
        Arc::new(Published),
        options,
    ));
    let runner = ProjectionRunner::new(store.clone(), Arc::clone(&down)).with_options(fast(3));
    let progress = runner.progress();
    let shutdown = CancellationToken::new();
    let running = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { runner.run(shutdown).await }
    });
    common::wait_until("the relay to retry", Duration::from_secs(20), || {
        let progress = progress.clone();
        async move { progress.borrow().retries >= 3 }
    })
    .await;
    let status = progress.borrow().clone();
    assert_eq!(
        status.checkpoint,
        Position::START,
        "nothing confirmed, nothing passed"
    );
    assert!(status.pending_since.is_some(), "the batch is still in hand");
    let error = status.last_error.unwrap_or_default();
    assert!(
        error.contains("cannot connect") || error.contains("circuit open"),
        "{error}"
    );
    assert!(!down.broker_up().await);
    shutdown.cancel();
    running.await.unwrap().unwrap();
    assert_eq!(store.load_checkpoint("relay").await.unwrap(), None);

    // The broker at its real address: everything goes out.
    let broker = amqp(mq.url()).await;
    broker.queue(&queue, &exchange, "#").await;
    let relay = Relay::new(
        "relay",
        mq.url(),
        Arc::new(Published),
        RelayOptions::new(&exchange),
    );
    ProjectionRunner::new(store.clone(), Arc::new(relay))
        .with_options(fast(3))
        .catch_up()
        .await
        .unwrap();
    assert_eq!(broker.drain(&queue).await.len(), 1);
}

#[tokio::test]
async fn rabbitmq_an_event_that_cannot_be_mapped_is_dead_lettered_with_the_rest_of_its_key() {
    let Some(pg) = annals_testkit::postgres().await else {
        return;
    };
    let Some(mq) = annals_testkit::rabbitmq().await else {
        return;
    };
    let store = store(&pg).await;
    let (exchange, queue) = (mq.name("events"), mq.name("all"));
    let broker = amqp(mq.url()).await;
    broker.queue(&queue, &exchange, "#").await;

    let before = append(&store, "flight-1", "SeatsReleased", 1).await;
    let poison = append(&store, "flight-1", "Poison", 0).await;
    let behind = append(&store, "flight-1", "SeatsReleased", 2).await;
    let other = append(&store, "flight-2", "SeatsReleased", 3).await;

    let relay = Relay::new(
        "relay",
        mq.url(),
        Arc::new(Published),
        RelayOptions::new(&exchange),
    );
    ProjectionRunner::new(store.clone(), Arc::new(relay))
        .with_options(fast(2))
        .catch_up()
        .await
        .unwrap();

    let ids: Vec<String> = broker
        .drain(&queue)
        .await
        .iter()
        .filter_map(|m| {
            m.properties
                .message_id()
                .as_ref()
                .map(|s| s.as_str().to_owned())
        })
        .collect();
    let id = |event| message_id(event, "seats.released", 1).to_string();
    // Each attempt at the batch published what it could again, with the same ids.
    let distinct: std::collections::BTreeSet<_> = ids.iter().cloned().collect();
    assert_eq!(distinct, [id(before), id(other)].into_iter().collect());
    assert!(
        !ids.contains(&id(behind)),
        "held back behind the poison event"
    );

    let dead = store.dead_letters("relay").await.unwrap();
    let events: Vec<Uuid> = dead.iter().map(|d| d.event.event_id).collect();
    assert_eq!(events, [poison, behind]);
    assert!(
        dead[0]
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("a poison event")
    );
    assert_eq!(dead[1].error, None, "waiting behind it");
}
