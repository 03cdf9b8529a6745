//! Smoke test of the RabbitMQ test setup: lapin against the real broker at
//! `AMQP_URL`, the test's names under its own prefix.

use annals_testkit::rabbitmq;
use lapin::options::{BasicGetOptions, BasicPublishOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};

#[tokio::test]
async fn rabbitmq_queue_roundtrip_under_the_test_prefix_then_cleaned_up() {
    let Some(mq) = rabbitmq().await else { return };
    let queue = mq.name("smoke");
    assert!(queue.starts_with(mq.prefix()) && mq.prefix().starts_with('t'));
    let connection = Connection::connect(mq.url(), ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions::durable(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    channel
        .basic_publish(
            "".into(),
            queue.as_str().into(),
            BasicPublishOptions::default(),
            b"hello",
            BasicProperties::default(),
        )
        .await
        .unwrap();
    let got = loop {
        if let Some(message) = channel
            .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            break message;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(got.delivery.data, b"hello");

    mq.cleanup().await;
    // The queue is gone: a passive declaration fails.
    let channel = connection.create_channel().await.unwrap();
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    assert!(
        channel
            .queue_declare(queue.as_str().into(), passive, FieldTable::default())
            .await
            .is_err()
    );
}
