//! The relay: a projection that publishes the integration events of the
//! log to a topic exchange, and lets its checkpoint pass only what the
//! broker confirmed.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use annals::projection::{BatchOutcome, FailedEvent, Projection, ProjectionError};
use annals::{EventFilter, Position, RecordedEvent};
use async_trait::async_trait;
use futures::StreamExt;
use lapin::options::BasicPublishOptions;
use lapin::{Channel, Confirmation, Connection};
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::broker::{self, BrokerError, Circuit};
use crate::integration::{IntegrationEvents, MapError, OutgoingMessage, short};

/// How a relay talks to the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayOptions {
    /// The topic exchange it publishes to (declared durable by the relay).
    pub exchange: String,
    /// How long connecting (and declaring the exchange) may take.
    pub connect_timeout: Duration,
    /// How long a batch may take from its first publish to its last confirm.
    pub confirm_timeout: Duration,
    /// After a failure, how long no attempt is made (the runner's backoff
    /// also spaces the retries).
    pub circuit_cooldown: Duration,
    /// How many events of a batch are mapped at once (mapping may read).
    pub map_concurrency: usize,
}

impl RelayOptions {
    /// Defaults for publishing to `exchange`: connect within 5 s, confirms
    /// within 30 s, a 1 s circuit, 16 events mapped at once.
    pub fn new(exchange: impl Into<String>) -> Self {
        Self {
            exchange: exchange.into(),
            connect_timeout: Duration::from_secs(5),
            confirm_timeout: Duration::from_secs(30),
            circuit_cooldown: Duration::from_secs(1),
            map_concurrency: 16,
        }
    }
}

/// A projection that publishes integration events to RabbitMQ.
///
/// Run it under [`ProjectionRunner`](annals::projection::ProjectionRunner),
/// which gives it its checkpoint, batches, retries with backoff, dead
/// letters, the single-runner lease and graceful shutdown. For each batch,
/// in log order, it maps the events the service publishes
/// ([`IntegrationEvents`]), publishes them to a durable topic exchange as
/// persistent messages (delivery mode 2) with a message id derived from
/// the event id ([`message_id`](crate::message_id)), waits for the broker
/// to confirm every one of them, and only then returns, so the checkpoint
/// never passes a message the broker has not taken responsibility for.
///
/// A nack, a lost connection or a confirm that does not come in time fail
/// the batch as transient: the runner publishes it again after its backoff
/// (the same ids, so consumers' inboxes drop the copies). While the broker
/// is known to be down a circuit answers at once, without an attempt. An
/// event the mapping refuses ([`MapError::Invalid`]) is reported to the
/// runner, which retries it and then dead-letters it with the later events
/// of its key.
///
/// **Order per key.** One runner publishes (the lease), one batch at a
/// time, in log order, on one channel, and waits for the whole batch's
/// confirms before the next: so the first delivery of each message to a
/// queue follows the log order. Copies published again after a failure
/// can arrive after later messages; a consumer that processes through an
/// [`Inbox`](crate::Inbox) drops them, so its effects keep the order. A
/// consumer that needs per-key order must consume a queue with one active
/// consumer (the inbox declares its queue with
/// `x-single-active-consumer`) and process a key's messages one at a time
/// (the inbox's workers are chosen by key).
///
/// **Metrics** (the `metrics` crate, label `relay`):
/// `annals_relay_published_total`, `annals_relay_confirmed_total`,
/// `annals_relay_nacked_total`, `annals_relay_republished_total` (messages
/// published again after a failed batch), `annals_relay_failed_batches_total`,
/// and the gauge `annals_relay_broker_up` (0 while the circuit is open).
/// The runner's progress ([`RunnerProgress`](annals::projection::RunnerProgress))
/// gives the lag.
pub struct Relay<M> {
    name: String,
    url: String,
    mapping: Arc<M>,
    options: RelayOptions,
    state: Mutex<State>,
}

struct State {
    session: Option<Session>,
    circuit: Circuit,
    /// The last position of a batch that failed after publishing: its
    /// messages are counted as republished when they go out again.
    unconfirmed_upto: Option<Position>,
}

struct Session {
    // Kept so the connection stays open while the channel is used.
    connection: Connection,
    channel: Channel,
}

impl<M: IntegrationEvents> Relay<M> {
    /// The relay `name` (its checkpoint, dead letters and lease are kept
    /// under this name; also the `app_id` of its messages), publishing what
    /// `mapping` says to the broker at `url` (`amqp://user:pass@host:port/vhost`).
    pub fn new(
        name: impl Into<String>,
        url: impl Into<String>,
        mapping: Arc<M>,
        options: RelayOptions,
    ) -> Self {
        let circuit = Circuit::new(options.circuit_cooldown);
        Self {
            name: name.into(),
            url: url.into(),
            mapping,
            options,
            state: Mutex::new(State {
                session: None,
                circuit,
                unconfirmed_upto: None,
            }),
        }
    }

    /// Its options.
    pub fn options(&self) -> &RelayOptions {
        &self.options
    }

    /// Whether the circuit is closed (the last attempt, if any, reached the broker).
    pub async fn broker_up(&self) -> bool {
        !self.state.lock().await.circuit.is_open()
    }

    /// Maps the batch; the messages to publish (with the positions of
    /// their events) and the events that could not be mapped.
    async fn messages(
        &self,
        batch: &[RecordedEvent],
    ) -> Result<(Vec<(Position, OutgoingMessage)>, Vec<FailedEvent>), ProjectionError> {
        let mappings: Vec<_> = batch.iter().map(|event| self.mapping.map(event)).collect();
        let mapped: Vec<_> = futures::stream::iter(mappings)
            .buffered(self.options.map_concurrency.max(1))
            .collect()
            .await;
        let mut messages = Vec::with_capacity(batch.len());
        let mut failed = Vec::new();
        let mut blocked = HashSet::new();
        for (index, (event, mapped)) in batch.iter().zip(mapped).enumerate() {
            let key = self.mapping.key(event);
            // A key whose earlier event failed publishes nothing more in
            // this batch: the runner dead-letters the rest behind it.
            if blocked.contains(&key) {
                continue;
            }
            let error: annals::error::BoxError = match mapped {
                Ok(None) => continue,
                Ok(Some(integration)) => {
                    match OutgoingMessage::new(event, &integration, &self.name) {
                        Ok(message) => {
                            messages.push((event.position, message));
                            continue;
                        }
                        Err(error) => Box::new(error),
                    }
                }
                Err(MapError::Transient(error)) => return Err(ProjectionError::Transient(error)),
                Err(MapError::Invalid(error)) => error,
            };
            blocked.insert(key);
            failed.push(FailedEvent { index, error });
        }
        Ok((messages, failed))
    }

    /// Publishes `messages` and waits for the broker's confirms: `Ok` once
    /// every one is confirmed.
    async fn publish(&self, messages: &[(Position, OutgoingMessage)]) -> Result<(), BrokerError> {
        let mut state = self.state.lock().await;
        if let Some(upto) = state.unconfirmed_upto {
            let again = messages.iter().filter(|(at, _)| *at <= upto).count();
            self.count("annals_relay_republished_total", again);
        }
        state.circuit.check()?;
        let channel = match &state.session {
            Some(session) if broker::usable(&session.connection, &session.channel) => {
                session.channel.clone()
            }
            _ => {
                state.session = None;
                match self.open().await {
                    Ok(session) => {
                        let channel = session.channel.clone();
                        state.session = Some(session);
                        channel
                    }
                    Err(error) => {
                        state.circuit.trip();
                        self.broker_gauge(false);
                        return Err(error);
                    }
                }
            }
        };
        match self.publish_on(&channel, messages).await {
            Ok(()) => {
                state.circuit.reset();
                state.unconfirmed_upto = None;
                self.broker_gauge(true);
                Ok(())
            }
            Err(error) => {
                // Whatever the channel still holds is unknown: start afresh.
                state.session = None;
                state.circuit.trip();
                state.unconfirmed_upto = messages.last().map(|(at, _)| *at);
                self.broker_gauge(false);
                self.count("annals_relay_failed_batches_total", 1);
                Err(error)
            }
        }
    }

    async fn open(&self) -> Result<Session, BrokerError> {
        let timeout = self.options.connect_timeout;
        let connection = broker::connect(&self.url, &self.name, timeout).await?;
        let channel = broker::confirm_channel(&connection, timeout).await?;
        broker::declare_exchange(&channel, &self.options.exchange, timeout).await?;
        tracing::info!(relay = %self.name, url = %broker::redact(&self.url), exchange = %self.options.exchange, "connected to the broker");
        Ok(Session {
            connection,
            channel,
        })
    }

    async fn publish_on(
        &self,
        channel: &Channel,
        messages: &[(Position, OutgoingMessage)],
    ) -> Result<(), BrokerError> {
        let timeout = self.options.confirm_timeout;
        let deadline = Instant::now() + timeout;
        let exchange = short("exchange name", self.options.exchange.as_str())?;
        let mut confirms = Vec::with_capacity(messages.len());
        // One at a time, in order: the channel keeps the order of what is
        // written to it, and so does every queue the exchange routes to.
        for (_, message) in messages {
            let publish = channel.basic_publish(
                exchange.clone(),
                message.routing_key.clone(),
                BasicPublishOptions::default(),
                &message.body,
                message.properties.clone(),
            );
            let confirm = match tokio::time::timeout_at(deadline, publish).await {
                Ok(Ok(confirm)) => confirm,
                Ok(Err(source)) => {
                    self.count("annals_relay_published_total", confirms.len());
                    return Err(BrokerError::Amqp {
                        what: "publishing",
                        source,
                    });
                }
                Err(_) => {
                    self.count("annals_relay_published_total", confirms.len());
                    return Err(BrokerError::Timeout {
                        what: "publishing",
                        timeout,
                    });
                }
            };
            confirms.push(confirm);
        }
        self.count("annals_relay_published_total", confirms.len());
        let answers = tokio::time::timeout_at(deadline, futures::future::join_all(confirms))
            .await
            .map_err(|_| BrokerError::Timeout {
                what: "the publisher confirms",
                timeout,
            })?;
        let published = answers.len();
        let mut nacked = 0;
        let mut confirmed = 0;
        let mut broken = None;
        for answer in answers {
            match answer {
                Ok(Confirmation::Ack(_)) => confirmed += 1,
                Ok(Confirmation::Nack(_)) => nacked += 1,
                // Confirms are on for this channel: an unconfirmed publish
                // is as good as lost.
                Ok(Confirmation::NotRequested) => nacked += 1,
                Err(error) => broken = Some(error),
            }
        }
        self.count("annals_relay_confirmed_total", confirmed);
        self.count("annals_relay_nacked_total", nacked);
        if let Some(source) = broken {
            return Err(BrokerError::Amqp {
                what: "waiting for the publisher confirms",
                source,
            });
        }
        if nacked > 0 {
            return Err(BrokerError::Nacked {
                count: nacked,
                published,
            });
        }
        Ok(())
    }

    fn count(&self, name: &'static str, n: usize) {
        if n > 0 {
            metrics::counter!(name, "relay" => self.name.clone()).increment(n as u64);
        }
    }

    fn broker_gauge(&self, up: bool) {
        metrics::gauge!("annals_relay_broker_up", "relay" => self.name.clone()).set(if up {
            1.0
        } else {
            0.0
        });
    }
}

#[async_trait]
impl<M: IntegrationEvents> Projection for Relay<M> {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn filter(&self) -> EventFilter {
        self.mapping.filter()
    }

    async fn apply(&self, batch: &[RecordedEvent]) -> Result<BatchOutcome, ProjectionError> {
        let (messages, failed) = self.messages(batch).await?;
        if !messages.is_empty() {
            self.publish(&messages)
                .await
                .map_err(|error| ProjectionError::Transient(Box::new(error)))?;
        }
        Ok(BatchOutcome { failed })
    }

    fn key(&self, event: &RecordedEvent) -> String {
        self.mapping.key(event)
    }
}
