//! Helpers of the RabbitMQ tests: a lapin channel, queues bound to a test
//! exchange, publishing and draining messages, bounded waits.
#![allow(dead_code)]

use std::future::Future;
use std::time::{Duration, Instant};

use annals_rabbitmq::lapin::message::Delivery;
use annals_rabbitmq::lapin::options::{
    BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use annals_rabbitmq::lapin::types::{AMQPValue, FieldTable, LongString};
use annals_rabbitmq::lapin::{
    BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind,
};
use annals_rabbitmq::{KEY_HEADER, VERSION_HEADER};

/// A connection and a channel in confirm mode.
pub struct Amqp {
    pub connection: Connection,
    pub channel: Channel,
}

pub async fn amqp(url: &str) -> Amqp {
    let connection = Connection::connect(url, ConnectionProperties::default())
        .await
        .expect("a connection to the broker");
    let channel = connection.create_channel().await.expect("a channel");
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    Amqp {
        connection,
        channel,
    }
}

impl Amqp {
    /// Declares the durable topic `exchange` (as the relay does).
    pub async fn exchange(&self, exchange: &str) {
        self.channel
            .exchange_declare(
                exchange.into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("the exchange");
    }

    /// Declares a durable queue bound to `exchange` by `pattern`.
    pub async fn queue(&self, queue: &str, exchange: &str, pattern: &str) {
        self.exchange(exchange).await;
        self.channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions::durable(),
                FieldTable::default(),
            )
            .await
            .expect("the queue");
        self.channel
            .queue_bind(
                queue.into(),
                exchange.into(),
                pattern.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("the binding");
    }

    /// Publishes a JSON body with a message id and an ordering key, and
    /// waits for the broker's confirm.
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        id: Option<&str>,
        key: &str,
        body: &str,
    ) {
        let mut headers = FieldTable::default();
        headers.insert(
            KEY_HEADER.into(),
            AMQPValue::LongString(LongString::from(key)),
        );
        headers.insert(VERSION_HEADER.into(), AMQPValue::LongLongInt(1));
        let mut properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_type("test.event".into())
            .with_headers(headers);
        if let Some(id) = id {
            properties = properties.with_message_id(id.into());
        }
        let confirm = self
            .channel
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions::default(),
                body.as_bytes(),
                properties,
            )
            .await
            .expect("publishing");
        assert!(confirm.await.expect("a confirm").is_ack());
    }

    /// Takes every message in `queue` now (acknowledged).
    pub async fn drain(&self, queue: &str) -> Vec<Delivery> {
        let mut out = Vec::new();
        while let Some(message) = self
            .channel
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await
            .expect("basic.get")
        {
            out.push(message.delivery);
        }
        out
    }

    /// Messages ready in `queue` and its consumers (a passive declaration
    /// on a channel of its own); `None` when it does not exist.
    pub async fn queue_state(&self, queue: &str) -> Option<(u32, u32)> {
        let channel = self.connection.create_channel().await.expect("a channel");
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        let state = channel
            .queue_declare(queue.into(), passive, FieldTable::default())
            .await
            .ok()
            .map(|q| (q.message_count(), q.consumer_count()));
        let _ = channel.close(200, "OK".into()).await;
        state
    }

    /// Messages ready in `queue`.
    pub async fn ready(&self, queue: &str) -> u32 {
        self.queue_state(queue).await.expect("the queue exists").0
    }

    /// Waits until `queue` has a consumer: the inbox consumes only once its
    /// queue is declared and bound, so what is published next reaches it.
    pub async fn wait_for_consumer(&self, queue: &str) {
        wait_until("the queue's consumer", Duration::from_secs(20), || async {
            self.queue_state(queue)
                .await
                .is_some_and(|(_, consumers)| consumers > 0)
        })
        .await;
    }
}

/// Polls `check` every 50 ms until it is true; panics after `limit`.
pub async fn wait_until<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(
            started.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A header's text.
pub fn header(delivery: &Delivery, name: &str) -> Option<AMQPValue> {
    delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|headers| headers.inner().get(name).cloned())
}

/// A long-string header as text.
pub fn text(delivery: &Delivery, name: &str) -> String {
    match header(delivery, name) {
        Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        other => panic!("header {name}: {other:?}"),
    }
}
