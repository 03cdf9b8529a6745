//! # annals-rabbitmq
//!
//! Integration events over RabbitMQ: a service publishes an explicit,
//! versioned contract (not its domain events) from its log, and other
//! services consume it, each message's effect once.
//!
//! * **The relay** ([`Relay`]) is a projection: under annals'
//!   [`ProjectionRunner`](annals::projection::ProjectionRunner) it reads the
//!   log after its checkpoint, maps the events the service chooses
//!   ([`IntegrationEvents`]) into [`IntegrationEvent`]s, publishes them to a
//!   durable topic exchange as persistent messages with publisher confirms,
//!   and lets the checkpoint pass a batch only once the broker confirmed
//!   all of it. A nack or a lost connection retries the batch; the message
//!   id is derived from the event id ([`message_id`]), so copies published
//!   again carry the same id.
//! * **The inbox** ([`Inbox`]) is the consumer's side, on PostgreSQL: in
//!   one transaction it records a message's id (`annals_inbox`) and runs
//!   the consumer's [`Handler`] with that transaction, then acknowledges
//!   the message; an id already recorded is acknowledged without running
//!   anything. A message whose effect keeps failing is tried a bounded
//!   number of times, then published to a dead-letter queue with the
//!   reason in a header ([`DEAD_LETTER_REASON_HEADER`]) while the other
//!   messages flow.
//!
//! Together: **at least once on the wire, once in effect**. Nothing the
//! log holds is lost (the checkpoint waits for the broker's confirms,
//! persistent messages in durable queues survive a broker restart, a
//! consumer acknowledges after commit), and nothing is done twice (the
//! inbox drops the copies that retries, crashes and redeliveries make).
//!
//! ## On the wire
//!
//! | AMQP | value |
//! |---|---|
//! | exchange | [`RelayOptions::exchange`], a durable topic exchange |
//! | routing key | `<name>.v<version>`, or the mapping's choice ([`IntegrationEvent::with_routing_key`]) |
//! | body | the integration event's JSON payload |
//! | `message_id` | [`message_id`]`(event id, name, version)`, a UUID v5 |
//! | `type` | the integration event's name |
//! | `delivery_mode` | 2 (persistent) |
//! | `content_type` | `application/json` |
//! | `timestamp` | when the domain event was recorded (seconds) |
//! | `app_id` | the relay's name |
//! | `correlation_id` | the domain event's correlation id, if any |
//! | headers | [`VERSION_HEADER`] (the version), [`KEY_HEADER`] (the ordering key), [`EVENT_ID_HEADER`] (the domain event's id) |
//!
//! ## Order
//!
//! One relay runs at a time (the runner's lease); it publishes a batch in
//! log order on one channel and waits for all its confirms before the
//! next batch, so each message's first delivery to a queue follows the log
//! order. Copies published again after a failure may come after later
//! messages: the inbox drops them, so effects keep the order. A consumer
//! that needs per-key order consumes one queue with one active consumer
//! (the inbox declares its queue with `x-single-active-consumer`) and
//! processes a key's messages one at a time (the inbox hands all messages
//! of a key, its [`KEY_HEADER`], to the same worker). A message that ends
//! in the dead letters no longer holds its key back: the later messages of
//! its key are processed without it.
//!
//! ## Example
//!
//! ```no_run
//! use std::sync::Arc;
//!
//! use annals::projection::ProjectionRunner;
//! use annals::{EventFilter, RecordedEvent};
//! use annals_postgres::PgEventStore;
//! use annals_rabbitmq::{
//!     EffectError, Handler, Inbox, IntegrationEvent, IntegrationEvents, MapError, Message,
//!     Relay, RelayOptions, Subscription,
//! };
//! use serde_json::json;
//! use sqlx::PgTransaction;
//! use tokio_util::sync::CancellationToken;
//!
//! /// The publisher's contract: `flight.cancelled.v1` for each `FlightCancelled`.
//! struct Published;
//!
//! #[async_trait::async_trait]
//! impl IntegrationEvents for Published {
//!     fn filter(&self) -> EventFilter {
//!         EventFilter::types(["FlightCancelled"])
//!     }
//!
//!     async fn map(&self, event: &RecordedEvent) -> Result<Option<IntegrationEvent>, MapError> {
//!         let body = json!({ "flight": event.stream_id });
//!         let cancelled = IntegrationEvent::new("flight.cancelled", 1, &event.stream_id, &body)
//!             .map_err(MapError::invalid)?;
//!         Ok(Some(cancelled))
//!     }
//! }
//!
//! /// A consumer's effect: one row per cancelled flight.
//! struct RecordCancellation;
//!
//! #[async_trait::async_trait]
//! impl Handler for RecordCancellation {
//!     async fn handle(&self, message: &Message, tx: &mut PgTransaction<'_>) -> Result<(), EffectError> {
//!         let body: serde_json::Value = message.json().map_err(EffectError::rejected)?;
//!         sqlx::query("INSERT INTO cancellations (flight) VALUES ($1)")
//!             .bind(body["flight"].as_str())
//!             .execute(&mut **tx)
//!             .await?;
//!         Ok(())
//!     }
//! }
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let amqp = "amqp://guest:guest@127.0.0.1:5672/%2f";
//! let store = PgEventStore::connect(&std::env::var("DATABASE_URL")?).await?;
//! store.migrate().await?;
//! let shutdown = CancellationToken::new();
//!
//! // The publishing service: the relay under a projection runner.
//! let relay = Relay::new("flights-relay", amqp, Arc::new(Published), RelayOptions::new("flights"));
//! let runner = ProjectionRunner::new(store.clone(), Arc::new(relay));
//! let publishing = tokio::spawn({
//!     let shutdown = shutdown.clone();
//!     async move { runner.run(shutdown).await }
//! });
//!
//! // A consuming service: its queue, bound to what it needs, through its inbox.
//! let inbox = Inbox::new(store.pool().clone(), "cancellations");
//! inbox.migrate().await?;
//! let subscription = Subscription::new(amqp, "flights", "cancellations").bind("flight.cancelled.v1");
//! inbox.consume(subscription, Arc::new(RecordCancellation), shutdown.clone()).await?;
//! publishing.await??;
//! # Ok(())
//! # }
//! ```
//!
//! ## Metrics
//!
//! Through the `metrics` crate (install any recorder): the relay's
//! `annals_relay_published_total`, `annals_relay_confirmed_total`,
//! `annals_relay_nacked_total`, `annals_relay_republished_total`,
//! `annals_relay_failed_batches_total` and `annals_relay_broker_up`
//! (label `relay`; its lag is its runner's progress); the inbox's
//! `annals_inbox_processed_total`, `annals_inbox_duplicates_total`,
//! `annals_inbox_failures_total`, `annals_inbox_dead_lettered_total` and
//! `annals_inbox_connected` (label `consumer`).
//!
//! ## Limits
//!
//! Plain `amqp://` only (the crate builds lapin without TLS). The inbox
//! counts a message's attempts in the consuming process: a consumer that
//! restarts tries a failing message again from one. A message published
//! to an exchange no queue is bound to is dropped by the broker: declare
//! consumers' queues (run their [`Inbox::consume`] once) before the
//! events they need are published.
#![warn(missing_docs)]

mod broker;
mod inbox;
mod integration;
mod relay;

pub use broker::BrokerError;
pub use inbox::{
    ATTEMPTS_HEADER, CONSUMER_HEADER, DEAD_LETTER_REASON_HEADER, DEAD_LETTERED_AT_HEADER,
    EffectError, Handler, Inbox, InboxError, InboxStats, Message, MessageError, ProcessError,
    Processed, Subscription,
};
pub use integration::{
    EVENT_ID_HEADER, EncodeError, IntegrationEvent, IntegrationEvents, KEY_HEADER, MapError,
    OutgoingMessage, VERSION_HEADER, message_id,
};
pub use relay::{Relay, RelayOptions};

/// The AMQP client this crate is built on, for the types its API shows
/// (properties, headers).
pub use lapin;
