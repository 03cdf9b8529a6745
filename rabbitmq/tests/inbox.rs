//! The inbox against the real PostgreSQL and RabbitMQ: one effect per
//! message id, acknowledgements after commit, bounded retries, dead letters
//! with their reason while the other messages flow.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use annals::projection::Backoff;
use annals_rabbitmq::lapin::types::AMQPValue;
use annals_rabbitmq::{
    ATTEMPTS_HEADER, CONSUMER_HEADER, DEAD_LETTER_REASON_HEADER, DEAD_LETTERED_AT_HEADER,
    EffectError, Handler, Inbox, InboxError, InboxStats, Message, Processed, Subscription,
};
use common::{amqp, header, text, wait_until};
use sqlx::{PgPool, PgTransaction};
use tokio_util::sync::CancellationToken;

/// Writes one row per message into `effects`; fails every time for the
/// message ids in `poison`, and counts its calls per message id.
#[derive(Default)]
struct Effects {
    poison: Vec<String>,
    calls: Mutex<HashMap<String, u32>>,
}

#[async_trait::async_trait]
impl Handler for Effects {
    async fn handle(
        &self,
        message: &Message,
        tx: &mut PgTransaction<'_>,
    ) -> Result<(), EffectError> {
        *self
            .calls
            .lock()
            .unwrap()
            .entry(message.message_id.clone())
            .or_default() += 1;
        sqlx::query("INSERT INTO effects (message_id, at) VALUES ($1, clock_timestamp())")
            .bind(&message.message_id)
            .execute(&mut **tx)
            .await?;
        if self.poison.contains(&message.message_id) {
            return Err(EffectError::failed(
                "the payment service refuses this booking",
            ));
        }
        Ok(())
    }
}

impl Effects {
    fn calls(&self, id: &str) -> u32 {
        self.calls.lock().unwrap().get(id).copied().unwrap_or(0)
    }
}

async fn setup(pg: &annals_testkit::PgTest) -> Inbox {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    sqlx::query("CREATE TABLE effects (message_id text NOT NULL, at timestamptz NOT NULL)")
        .execute(pg.pool())
        .await
        .unwrap();
    let inbox = Inbox::new(pg.pool().clone(), "notifications");
    inbox.migrate().await.unwrap();
    inbox.migrate().await.unwrap(); // idempotent
    inbox
}

async fn effects(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar("SELECT message_id FROM effects ORDER BY message_id")
        .fetch_all(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn postgres_the_inbox_runs_the_effect_of_a_message_once() {
    let Some(pg) = annals_testkit::postgres().await else {
        return;
    };
    let inbox = setup(&pg).await;
    let handler = Effects {
        poison: vec!["m-poison".into()],
        ..Effects::default()
    };
    let message = Message::new("m-1", "{}");
    assert_eq!(
        inbox.process(&message, &handler).await.unwrap(),
        Processed::Done
    );
    assert_eq!(
        inbox.process(&message, &handler).await.unwrap(),
        Processed::Duplicate
    );
    assert_eq!(
        inbox.process(&message, &handler).await.unwrap(),
        Processed::Duplicate
    );
    assert_eq!(effects(pg.pool()).await, ["m-1"]);
    assert_eq!(handler.calls("m-1"), 1);

    // A failed effect records nothing: its writes and the id roll back together.
    let poison = Message::new("m-poison", "{}");
    assert!(inbox.process(&poison, &handler).await.is_err());
    assert!(!inbox.contains("m-poison").await.unwrap());
    assert_eq!(effects(pg.pool()).await, ["m-1"]);

    // Another consumer keeps its own record of the same id.
    let other = Inbox::new(pg.pool().clone(), "billing");
    assert_eq!(
        other.process(&message, &handler).await.unwrap(),
        Processed::Done
    );
    assert_eq!(
        inbox.stats().await.unwrap(),
        InboxStats {
            messages: 1,
            duplicates: 2,
            redelivered_messages: 1
        }
    );
}

#[tokio::test]
async fn rabbitmq_the_inbox_consumes_each_message_once_and_acknowledges_after_commit() {
    let Some(pg) = annals_testkit::postgres().await else {
        return;
    };
    let Some(mq) = annals_testkit::rabbitmq().await else {
        return;
    };
    let inbox = setup(&pg).await;
    let (exchange, queue) = (mq.name("events"), mq.name("notifications"));
    mq.remember(&format!("{queue}.dead-letter"));
    let subscription = Subscription::new(mq.url(), &exchange, &queue).bind("test.#");
    let handler = Arc::new(Effects::default());
    let shutdown = CancellationToken::new();
    let consuming = tokio::spawn({
        let (inbox, handler, shutdown) = (inbox.clone(), Arc::clone(&handler), shutdown.clone());
        async move { inbox.consume(subscription, handler, shutdown).await }
    });
    let broker = amqp(mq.url()).await;
    // The consumer declares its queue; until then the exchange drops messages.
    broker.wait_for_consumer(&queue).await;

    for i in 0..20 {
        let id = format!("m-{i:02}");
        broker
            .publish(
                &exchange,
                "test.event.v1",
                Some(&id),
                &format!("k-{}", i % 3),
                "{}",
            )
            .await;
        if i % 4 == 0 {
            // The same message again, as a relay that crashed before its checkpoint sends it.
            broker
                .publish(
                    &exchange,
                    "test.event.v1",
                    Some(&id),
                    &format!("k-{}", i % 3),
                    "{}",
                )
                .await;
        }
    }
    wait_until("20 effects", Duration::from_secs(30), || async {
        let stats = inbox.stats().await.unwrap();
        stats.messages == 20 && stats.duplicates == 5
    })
    .await;
    shutdown.cancel();
    consuming.await.unwrap().unwrap();

    let ids = effects(pg.pool()).await;
    assert_eq!(ids.len(), 20, "one effect per message id: {ids:?}");
    assert!((0..20).all(|i| handler.calls(&format!("m-{i:02}")) == 1));
    // Every delivery was acknowledged: nothing came back to the queue when
    // the consumer's channel closed.
    assert_eq!(broker.ready(&queue).await, 0);
    assert_eq!(broker.ready(&format!("{queue}.dead-letter")).await, 0);
}

#[tokio::test]
async fn rabbitmq_a_poison_message_is_dead_lettered_with_its_reason_while_the_others_flow() {
    let Some(pg) = annals_testkit::postgres().await else {
        return;
    };
    let Some(mq) = annals_testkit::rabbitmq().await else {
        return;
    };
    let inbox = setup(&pg).await;
    let (exchange, queue) = (mq.name("events"), mq.name("notifications"));
    let dead_letters = format!("{queue}.dead-letter");
    mq.remember(&dead_letters);
    let mut subscription = Subscription::new(mq.url(), &exchange, &queue).bind("test.#");
    subscription.max_attempts = 3;
    subscription.retry_backoff = Backoff {
        initial: Duration::from_millis(300),
        max: Duration::from_millis(300),
    };
    // Keys on other workers than the poison message's: they must not wait for it.
    let poison_worker = subscription.worker_for("k-poison");
    let others: Vec<String> = (0..)
        .map(|i| format!("k-{i}"))
        .filter(|k| subscription.worker_for(k) != poison_worker)
        .take(6)
        .collect();

    let handler = Arc::new(Effects {
        poison: vec!["m-poison".into()],
        ..Effects::default()
    });
    let broker = amqp(mq.url()).await;
    let shutdown = CancellationToken::new();
    let consuming = tokio::spawn({
        let (inbox, handler, shutdown) = (inbox.clone(), Arc::clone(&handler), shutdown.clone());
        let subscription = subscription.clone();
        async move { inbox.consume(subscription, handler, shutdown).await }
    });
    broker.wait_for_consumer(&queue).await;

    broker
        .publish(
            &exchange,
            "test.event.v1",
            Some("m-poison"),
            "k-poison",
            r#"{"n":0}"#,
        )
        .await;
    for (i, key) in others.iter().enumerate() {
        broker
            .publish(
                &exchange,
                "test.event.v1",
                Some(&format!("m-{i}")),
                key,
                "{}",
            )
            .await;
    }
    // A message without an id cannot be processed once: dead-lettered at once.
    broker
        .publish(&exchange, "test.event.v1", None, "k-none", "{}")
        .await;

    wait_until("the dead letters", Duration::from_secs(30), || async {
        broker.ready(&dead_letters).await == 2
    })
    .await;
    shutdown.cancel();
    consuming.await.unwrap().unwrap();

    // The others went through, each once, and none waited for the poison message.
    let done = effects(pg.pool()).await;
    assert_eq!(
        done,
        (0..others.len())
            .map(|i| format!("m-{i}"))
            .collect::<Vec<_>>()
    );
    assert_eq!(handler.calls("m-poison"), 3, "tried max_attempts times");
    assert!(!inbox.contains("m-poison").await.unwrap());

    let dead = broker.drain(&dead_letters).await;
    let poison = dead
        .iter()
        .find(|d| d.properties.message_id().as_ref().map(|s| s.as_str()) == Some("m-poison"))
        .expect("the poison message in the dead letters");
    assert!(
        text(poison, DEAD_LETTER_REASON_HEADER)
            .contains("the payment service refuses this booking"),
        "{}",
        text(poison, DEAD_LETTER_REASON_HEADER)
    );
    assert_eq!(
        header(poison, ATTEMPTS_HEADER),
        Some(AMQPValue::LongLongInt(3))
    );
    assert_eq!(text(poison, CONSUMER_HEADER), "notifications");
    assert_eq!(poison.data, br#"{"n":0}"#, "the body as it came");
    let dead_lettered_at =
        chrono::DateTime::parse_from_rfc3339(&text(poison, DEAD_LETTERED_AT_HEADER)).unwrap();
    let last_other: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT max(received_at) FROM annals_inbox")
            .fetch_one(pg.pool())
            .await
            .unwrap();
    assert!(
        last_other < dead_lettered_at,
        "the others flowed while it was retried"
    );

    let anonymous = dead
        .iter()
        .find(|d| d.properties.message_id().is_none())
        .expect("the message without an id");
    assert!(text(anonymous, DEAD_LETTER_REASON_HEADER).contains("no message_id"));
    assert_eq!(
        header(anonymous, ATTEMPTS_HEADER),
        Some(AMQPValue::LongLongInt(0))
    );
    assert_eq!(broker.ready(&queue).await, 0);
}

#[tokio::test]
async fn rabbitmq_a_subscription_the_broker_refuses_is_an_error_not_a_retry_loop() {
    let Some(pg) = annals_testkit::postgres().await else {
        return;
    };
    let Some(mq) = annals_testkit::rabbitmq().await else {
        return;
    };
    let inbox = setup(&pg).await;
    let (exchange, queue) = (mq.name("events"), mq.name("notifications"));
    mq.remember(&format!("{queue}.dead-letter"));
    // The queue exists with other arguments (no dead-letter exchange).
    amqp(mq.url()).await.queue(&queue, &exchange, "#").await;
    let subscription = Subscription::new(mq.url(), &exchange, &queue);
    let outcome = tokio::time::timeout(
        Duration::from_secs(30),
        inbox.consume(
            subscription,
            Arc::new(Effects::default()),
            CancellationToken::new(),
        ),
    )
    .await
    .expect("it gives up");
    assert!(
        matches!(outcome, Err(InboxError::Subscription { .. })),
        "{outcome:?}"
    );
}
