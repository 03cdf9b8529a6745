//! Consuming a RabbitMQ queue through the inbox: the subscription's
//! topology, the workers (one per group of keys), acknowledgements after
//! commit, bounded retries, dead letters with their reason, reconnection.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use annals::error::report;
use annals::projection::Backoff;
use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions,
    BasicPublishOptions, BasicQosOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, Confirmation, Connection, Consumer, ExchangeKind};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{Handler, Inbox, InboxError, Message, ProcessError, Processed};
use crate::broker::{self, BrokerError};
use crate::integration::short;

/// The header of a dead letter that says why it was dead-lettered.
pub const DEAD_LETTER_REASON_HEADER: &str = "x-annals-dead-letter-reason";
/// The header of a dead letter that says how many times its effect was tried.
pub const ATTEMPTS_HEADER: &str = "x-annals-attempts";
/// The header of a dead letter that names the consumer that gave up on it.
pub const CONSUMER_HEADER: &str = "x-annals-consumer";
/// The header of a dead letter that says when it was dead-lettered (RFC 3339).
pub const DEAD_LETTERED_AT_HEADER: &str = "x-annals-dead-lettered-at";

/// Which messages a consumer receives, and how it treats them.
///
/// [`Inbox::consume`] declares (idempotently, at every connection) the
/// durable topic `exchange`, the durable `queue` bound to it by each of
/// `bindings`, and the dead letters: a durable fanout exchange and a
/// durable queue, both named [`dead_letters`](Self::dead_letters) (by
/// default `<queue>.dead-letter`); the queue names that exchange as its
/// `x-dead-letter-exchange`, so what the broker itself rejects lands there
/// too.
#[derive(Debug, Clone, PartialEq)]
pub struct Subscription {
    /// The broker, `amqp://user:pass@host:port/vhost`.
    pub url: String,
    /// The topic exchange the publisher (a relay) publishes to.
    pub exchange: String,
    /// The consumer's queue.
    pub queue: String,
    /// Routing-key patterns binding the queue to the exchange, e.g.
    /// `booking.confirmed.v1` or `booking.#`.
    pub bindings: Vec<String>,
    /// The name of the dead-letter exchange and queue.
    pub dead_letters: String,
    /// Declare the queue with `x-single-active-consumer`: with several
    /// consuming processes, one receives at a time (the others take over
    /// when it goes), so the queue's order holds. It must agree with how
    /// the queue was first declared.
    pub single_active_consumer: bool,
    /// Messages processed at once, each worker taking the messages of its
    /// keys (the `x-annals-key` header, else the message id) in queue
    /// order: so one key's messages never overtake each other.
    pub workers: usize,
    /// Unacknowledged messages the broker may send ahead (at least `workers`).
    pub prefetch: u16,
    /// Tries of a message whose effect fails ([`EffectError::Failed`](super::EffectError::Failed))
    /// before it is dead-lettered.
    pub max_attempts: u32,
    /// Delays between those tries, and between retries of transient failures.
    pub retry_backoff: Backoff,
    /// Delays between reconnections to the broker.
    pub reconnect_backoff: Backoff,
    /// How long connecting, declaring and publishing a dead letter may take.
    pub timeout: Duration,
}

impl Subscription {
    /// `queue` on the broker at `url`, bound to `exchange` (add bindings
    /// with [`bind`](Self::bind)); 4 workers, 64 prefetched, 5 attempts.
    pub fn new(
        url: impl Into<String>,
        exchange: impl Into<String>,
        queue: impl Into<String>,
    ) -> Self {
        let queue = queue.into();
        Self {
            url: url.into(),
            exchange: exchange.into(),
            dead_letters: format!("{queue}.dead-letter"),
            queue,
            bindings: Vec::new(),
            single_active_consumer: true,
            workers: 4,
            prefetch: 64,
            max_attempts: 5,
            retry_backoff: Backoff {
                initial: Duration::from_millis(100),
                max: Duration::from_secs(5),
            },
            reconnect_backoff: Backoff {
                initial: Duration::from_millis(200),
                max: Duration::from_secs(5),
            },
            timeout: Duration::from_secs(10),
        }
    }

    /// Also receives the messages routed by `pattern`.
    pub fn bind(mut self, pattern: impl Into<String>) -> Self {
        self.bindings.push(pattern.into());
        self
    }

    /// The worker (`0..workers`) that takes the messages of `key`.
    pub fn worker_for(&self, key: &str) -> usize {
        let mut hasher = DefaultHasher::new();
        key.hash(&mut hasher);
        (hasher.finish() % self.workers.max(1) as u64) as usize
    }
}

/// How a connection to the broker ended.
enum End {
    Shutdown,
    Broken(BrokerError),
}

/// One connection's consumer and the channel dead letters go out on.
struct Session {
    // Kept so the connection stays open while its channels are used.
    _connection: Connection,
    consumer: Consumer,
    channel: Channel,
    dead_letters: Channel,
}

/// How often a session checks that its connection is still up.
const CONNECTION_CHECK: Duration = Duration::from_secs(1);

/// What every worker shares.
struct Shared<H: ?Sized> {
    inbox: Inbox,
    subscription: Subscription,
    handler: Arc<H>,
    dead_letters: Channel,
    /// Cancelled when the connection breaks or the consumer shuts down:
    /// deliveries not yet started are left unacknowledged (the broker
    /// delivers them again).
    stop: CancellationToken,
}

impl Inbox {
    /// Consumes `subscription`'s queue until `shutdown` is cancelled,
    /// processing every message once ([`process`](Self::process)) and
    /// acknowledging it after its transaction committed.
    ///
    /// A message whose effect fails is tried `max_attempts` times with
    /// backoff, then published to the dead letters with the reason
    /// ([`DEAD_LETTER_REASON_HEADER`], [`ATTEMPTS_HEADER`],
    /// [`CONSUMER_HEADER`], [`DEAD_LETTERED_AT_HEADER`], the original
    /// properties and headers kept) and acknowledged; a message without a
    /// `message_id`, or whose handler rejects it, is dead-lettered at once.
    /// Meanwhile the other workers' messages flow. Transient failures (the
    /// database unreachable) are retried without counting.
    ///
    /// A lost connection is made again with backoff; what was delivered and
    /// not acknowledged comes again, and the inbox drops what it already
    /// processed. On shutdown the messages being processed finish; the rest
    /// go back to the queue. Returns an error only when the broker refuses
    /// the subscription itself ([`InboxError::Subscription`]).
    pub async fn consume<H: Handler + ?Sized>(
        &self,
        subscription: Subscription,
        handler: Arc<H>,
        shutdown: CancellationToken,
    ) -> Result<(), InboxError> {
        let mut delays = subscription.reconnect_backoff.delays();
        loop {
            if shutdown.is_cancelled() {
                return Ok(());
            }
            let failure = match self.open(&subscription).await {
                Ok(session) => {
                    delays = subscription.reconnect_backoff.delays();
                    connected_gauge(&self.consumer, true);
                    tracing::info!(consumer = %self.consumer, queue = %subscription.queue, "consuming");
                    match self
                        .run_session(session, &subscription, &handler, &shutdown)
                        .await
                    {
                        End::Shutdown => return Ok(()),
                        End::Broken(error) => error,
                    }
                }
                Err(error) if refused(&error) => {
                    return Err(InboxError::Subscription {
                        queue: subscription.queue.clone(),
                        source: error,
                    });
                }
                Err(error) => error,
            };
            connected_gauge(&self.consumer, false);
            let delay = delays.next().unwrap_or(subscription.reconnect_backoff.max);
            tracing::warn!(
                consumer = %self.consumer, error = %report(&failure), retry_in = ?delay,
                "the broker connection is down"
            );
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                () = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// Declares `subscription`'s queue, its bindings and its dead letters,
    /// then disconnects. [`consume`](Self::consume) declares them too; a
    /// service calls this first when its queue must exist before events are
    /// published (the broker drops what no queue is bound to).
    pub async fn declare(&self, subscription: &Subscription) -> Result<(), InboxError> {
        let timeout = subscription.timeout;
        let connection = broker::connect(&subscription.url, &self.consumer, timeout)
            .await
            .map_err(InboxError::Broker)?;
        let declared = async {
            let channel =
                broker::bounded("opening a channel", timeout, connection.create_channel()).await?;
            declare(&channel, subscription).await?;
            // Closed before its connection, which would otherwise report it.
            bounded_unit(
                "closing a channel",
                timeout,
                channel.close(200, "OK".into()),
            )
            .await
        }
        .await;
        let _ = tokio::time::timeout(timeout, connection.close(200, "OK".into())).await;
        declared.map_err(|error| {
            if refused(&error) {
                InboxError::Subscription {
                    queue: subscription.queue.clone(),
                    source: error,
                }
            } else {
                InboxError::Broker(error)
            }
        })
    }

    /// Connects, declares the topology and starts consuming.
    async fn open(&self, subscription: &Subscription) -> Result<Session, BrokerError> {
        let timeout = subscription.timeout;
        let connection = broker::connect(&subscription.url, &self.consumer, timeout).await?;
        let channel =
            broker::bounded("opening a channel", timeout, connection.create_channel()).await?;
        declare(&channel, subscription).await?;
        bounded_unit(
            "setting the prefetch",
            timeout,
            channel.basic_qos(
                subscription
                    .prefetch
                    .max(u16::try_from(subscription.workers).unwrap_or(u16::MAX)),
                BasicQosOptions::default(),
            ),
        )
        .await?;
        let consumer = broker::bounded(
            "starting the consumer",
            timeout,
            channel.basic_consume(
                short("queue name", subscription.queue.as_str())?,
                short(
                    "consumer tag",
                    format!("{}-{}", self.consumer, uuid::Uuid::new_v4().simple()),
                )?,
                BasicConsumeOptions::default(),
                FieldTable::default(),
            ),
        )
        .await?;
        let dead_letters = broker::confirm_channel(&connection, timeout).await?;
        Ok(Session {
            _connection: connection,
            consumer,
            channel,
            dead_letters,
        })
    }

    /// Hands the session's deliveries to the workers until the connection
    /// breaks or `shutdown` is cancelled; then waits for the workers.
    async fn run_session<H: Handler + ?Sized>(
        &self,
        session: Session,
        subscription: &Subscription,
        handler: &Arc<H>,
        shutdown: &CancellationToken,
    ) -> End {
        let Session {
            _connection: connection,
            mut consumer,
            channel,
            dead_letters,
        } = session;
        let shared = Arc::new(Shared {
            inbox: self.clone(),
            subscription: subscription.clone(),
            handler: Arc::clone(handler),
            dead_letters,
            stop: CancellationToken::new(),
        });
        let workers = subscription.workers.max(1);
        let room = usize::from(subscription.prefetch.max(1));
        let mut senders = Vec::with_capacity(workers);
        let mut tasks = JoinSet::new();
        for _ in 0..workers {
            let (send, receive) = mpsc::channel(room);
            senders.push(send);
            tasks.spawn(work(Arc::clone(&shared), receive));
        }
        // The consumer's stream does not always end when the connection
        // dies (seen when the broker goes down just after consuming began):
        // the connection's status is checked as well.
        let mut watchdog = tokio::time::interval(CONNECTION_CHECK);
        watchdog.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let end = loop {
            let next = tokio::select! {
                biased;
                () = shutdown.cancelled() => break End::Shutdown,
                next = consumer.next() => next,
                _ = watchdog.tick() => {
                    if broker::usable(&connection, &channel) {
                        continue;
                    }
                    break End::Broken(BrokerError::Ended("the connection"));
                }
            };
            let delivery = match next {
                Some(Ok(delivery)) => delivery,
                Some(Err(source)) => {
                    break End::Broken(BrokerError::Amqp {
                        what: "consuming",
                        source,
                    });
                }
                None => {
                    break End::Broken(BrokerError::Ended(
                        "the consumer (cancelled by the broker)",
                    ));
                }
            };
            let key = delivery_key(&delivery);
            let worker = subscription.worker_for(&key);
            // A full worker holds the dispatcher back: the prefetch bounds it.
            if senders[worker].send(delivery).await.is_err() {
                break End::Broken(BrokerError::Ended("a worker"));
            }
        };
        if let End::Shutdown = end {
            // No more deliveries; those already here and not started go
            // back to the queue when the channel closes.
            let _ = tokio::time::timeout(
                subscription.timeout,
                channel.basic_cancel(consumer.tag(), BasicCancelOptions::default()),
            )
            .await;
        }
        shared.stop.cancel();
        drop(senders);
        while tasks.join_next().await.is_some() {}
        end
    }
}

/// A worker: processes its deliveries one at a time, in order.
async fn work<H: Handler + ?Sized>(
    shared: Arc<Shared<H>>,
    mut deliveries: mpsc::Receiver<Delivery>,
) {
    while let Some(delivery) = deliveries.recv().await {
        if shared.stop.is_cancelled() {
            // Left unacknowledged: the broker delivers it again.
            continue;
        }
        handle(&shared, delivery).await;
    }
}

/// Processes one delivery: acknowledged once processed (or found already
/// processed), dead-lettered when it keeps failing.
async fn handle<H: Handler + ?Sized>(shared: &Shared<H>, delivery: Delivery) {
    let consumer = shared.inbox.consumer();
    let message = match Message::from_delivery(&delivery) {
        Ok(message) => message,
        Err(error) => {
            dead_letter(shared, &delivery, &error.to_string(), 0).await;
            return;
        }
    };
    let options = &shared.subscription;
    let mut attempts = 0;
    let mut failed_delays = options.retry_backoff.delays();
    let mut transient_delays = options.retry_backoff.delays();
    loop {
        let error = match shared.inbox.process(&message, &*shared.handler).await {
            Ok(processed) => {
                let counter = match processed {
                    Processed::Done => "annals_inbox_processed_total",
                    Processed::Duplicate => "annals_inbox_duplicates_total",
                };
                metrics::counter!(counter, "consumer" => consumer.to_owned()).increment(1);
                // Bounded: an acknowledgement on a dead connection may never
                // complete. Committed but not acknowledged, it comes again,
                // and the inbox drops it then.
                let acked = broker::bounded(
                    "acknowledging",
                    options.timeout,
                    delivery.ack(BasicAckOptions::default()),
                )
                .await;
                if let Err(error) = acked {
                    tracing::debug!(consumer, message_id = %message.message_id, error = %report(&error), "cannot acknowledge");
                }
                return;
            }
            Err(error) => error,
        };
        let delay = if error.is_transient() {
            tracing::warn!(consumer, message_id = %message.message_id, error = %report(&error), "transient failure, retrying");
            transient_delays.next()
        } else {
            attempts += 1;
            metrics::counter!("annals_inbox_failures_total", "consumer" => consumer.to_owned())
                .increment(1);
            let rejected = matches!(error, ProcessError::Effect(super::EffectError::Rejected(_)));
            if rejected || attempts >= options.max_attempts.max(1) {
                dead_letter(shared, &delivery, &report(&error), attempts).await;
                return;
            }
            tracing::warn!(consumer, message_id = %message.message_id, attempts, error = %report(&error), "the effect failed, retrying");
            failed_delays.next()
        };
        let delay = delay.unwrap_or(options.retry_backoff.max);
        tokio::select! {
            // Left unacknowledged: the broker delivers it again.
            () = shared.stop.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
    }
}

/// Publishes a copy of `delivery` to the dead letters with why, then
/// acknowledges it; when the copy cannot be published, gives it back to
/// the queue instead.
async fn dead_letter<H: Handler + ?Sized>(
    shared: &Shared<H>,
    delivery: &Delivery,
    reason: &str,
    attempts: u32,
) {
    let consumer = shared.inbox.consumer();
    let message_id = delivery
        .properties
        .message_id()
        .as_ref()
        .map(|id| id.as_str().to_owned())
        .unwrap_or_default();
    tracing::error!(
        consumer,
        message_id,
        attempts,
        reason,
        "dead-lettering the message"
    );
    let mut headers = delivery.properties.headers().clone().unwrap_or_default();
    headers.insert(
        DEAD_LETTER_REASON_HEADER.into(),
        AMQPValue::LongString(LongString::from(reason)),
    );
    headers.insert(
        ATTEMPTS_HEADER.into(),
        AMQPValue::LongLongInt(i64::from(attempts)),
    );
    headers.insert(
        CONSUMER_HEADER.into(),
        AMQPValue::LongString(LongString::from(consumer)),
    );
    headers.insert(
        DEAD_LETTERED_AT_HEADER.into(),
        AMQPValue::LongString(LongString::from(chrono::Utc::now().to_rfc3339())),
    );
    let properties = delivery.properties.clone().with_headers(headers);
    let published = publish_dead_letter(shared, delivery, properties).await;
    match published {
        Ok(()) => {
            metrics::counter!("annals_inbox_dead_lettered_total", "consumer" => consumer.to_owned())
                .increment(1);
            let timeout = shared.subscription.timeout;
            let acked = broker::bounded(
                "acknowledging",
                timeout,
                delivery.ack(BasicAckOptions::default()),
            )
            .await;
            if let Err(error) = acked {
                tracing::warn!(consumer, message_id, error = %report(&error), "dead-lettered but not acknowledged: it comes again");
            }
        }
        Err(error) => {
            tracing::error!(consumer, message_id, error = %report(&error), "cannot dead-letter: back to the queue");
            let requeue = BasicNackOptions {
                requeue: true,
                ..BasicNackOptions::default()
            };
            let _ = tokio::time::timeout(shared.subscription.timeout, delivery.nack(requeue)).await;
        }
    }
}

async fn publish_dead_letter<H: Handler + ?Sized>(
    shared: &Shared<H>,
    delivery: &Delivery,
    properties: lapin::BasicProperties,
) -> Result<(), BrokerError> {
    let timeout = shared.subscription.timeout;
    let confirm = broker::bounded(
        "publishing a dead letter",
        timeout,
        shared.dead_letters.basic_publish(
            short("exchange name", shared.subscription.dead_letters.as_str())?,
            delivery.routing_key.clone(),
            BasicPublishOptions::default(),
            &delivery.data,
            properties,
        ),
    )
    .await?;
    match broker::bounded("confirming a dead letter", timeout, confirm).await? {
        Confirmation::Ack(_) => Ok(()),
        Confirmation::Nack(_) | Confirmation::NotRequested => Err(BrokerError::Nacked {
            count: 1,
            published: 1,
        }),
    }
}

/// Declares the exchange, the dead letters, the queue and its bindings.
async fn declare(channel: &Channel, subscription: &Subscription) -> Result<(), BrokerError> {
    let timeout = subscription.timeout;
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    broker::declare_exchange(channel, &subscription.exchange, timeout).await?;
    let dead_letters = short("dead-letter name", subscription.dead_letters.as_str())?;
    broker::bounded(
        "declaring the dead-letter exchange",
        timeout,
        channel.exchange_declare(
            dead_letters.clone(),
            ExchangeKind::Fanout,
            lapin::options::ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await?;
    broker::bounded(
        "declaring the dead-letter queue",
        timeout,
        channel.queue_declare(dead_letters.clone(), durable, FieldTable::default()),
    )
    .await?;
    bounded_unit(
        "binding the dead-letter queue",
        timeout,
        channel.queue_bind(
            dead_letters.clone(),
            dead_letters.clone(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        ),
    )
    .await?;
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(LongString::from(subscription.dead_letters.as_str())),
    );
    if subscription.single_active_consumer {
        arguments.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
    }
    let queue = short("queue name", subscription.queue.as_str())?;
    broker::bounded(
        "declaring the queue",
        timeout,
        channel.queue_declare(queue.clone(), durable, arguments),
    )
    .await?;
    let exchange = short("exchange name", subscription.exchange.as_str())?;
    for pattern in &subscription.bindings {
        bounded_unit(
            "binding the queue",
            timeout,
            channel.queue_bind(
                queue.clone(),
                exchange.clone(),
                short("binding", pattern.as_str())?,
                QueueBindOptions::default(),
                FieldTable::default(),
            ),
        )
        .await?;
    }
    Ok(())
}

async fn bounded_unit(
    what: &'static str,
    timeout: Duration,
    operation: impl Future<Output = lapin::Result<()>>,
) -> Result<(), BrokerError> {
    broker::bounded(what, timeout, operation).await
}

/// The key that picks a delivery's worker: its `x-annals-key`, else its
/// message id (no order to keep), else its delivery tag.
fn delivery_key(delivery: &Delivery) -> String {
    let properties = &delivery.properties;
    properties
        .headers()
        .as_ref()
        .and_then(|headers| headers.inner().get(crate::integration::KEY_HEADER))
        .and_then(super::text)
        .or_else(|| {
            properties
                .message_id()
                .as_ref()
                .map(|id| id.as_str().to_owned())
        })
        .unwrap_or_else(|| delivery.delivery_tag.to_string())
}

/// Whether the broker refused the subscription (a channel error such as
/// different arguments or no permission), which retrying cannot fix.
fn refused(error: &BrokerError) -> bool {
    match error {
        BrokerError::Amqp { source, .. } => source.is_amqp_soft_error(),
        BrokerError::Message(_) => true,
        _ => false,
    }
}

fn connected_gauge(consumer: &str, up: bool) {
    metrics::gauge!("annals_inbox_connected", "consumer" => consumer.to_owned()).set(if up {
        1.0
    } else {
        0.0
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_key_always_goes_to_one_worker() {
        let mut subscription = Subscription::new("amqp://x", "ex", "q");
        subscription.workers = 8;
        let first = subscription.worker_for("booking-1");
        assert!(first < 8);
        assert!((0..100).all(|_| subscription.worker_for("booking-1") == first));
        let spread: std::collections::HashSet<_> = (0..200)
            .map(|i| subscription.worker_for(&format!("booking-{i}")))
            .collect();
        assert!(spread.len() > 4, "keys spread over the workers: {spread:?}");
    }

    #[test]
    fn dead_letters_are_named_after_the_queue() {
        let subscription = Subscription::new("amqp://x", "ex", "notifications").bind("booking.#");
        assert_eq!(subscription.dead_letters, "notifications.dead-letter");
        assert_eq!(subscription.bindings, ["booking.#"]);
    }
}
