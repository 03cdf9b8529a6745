//! Both sides of the airline's integration events, on the real PostgreSQL
//! and RabbitMQ: the relay publishes `booking.confirmed` and
//! `booking.cancelled` from the log, the notifications consume them through
//! their inbox and record one notice per message; a relay that publishes
//! everything again records nothing more.

mod integration_support;

use std::time::{Duration, Instant};

use airline::background::Background;
use airline::booking::BookingEvent;
use airline::config::Config;
use airline::integration::{BOOKING_CANCELLED, RELAY};
use airline::notifications::CONSUMER;
use airline::setup::{start_notifications, start_relay};
use annals::{EventStore, Position};
use annals_postgres::PgEventStore;
use annals_rabbitmq::{Inbox, InboxStats, message_id};
use clap::Parser;
use integration_support::*;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    config: Config,
}

/// The relay and the notifications of one process, as `airline serve` (or
/// `project`) and `airline notify` start them.
async fn start(config: &Config, store: &PgEventStore) -> Background {
    let mut background = Background::new(CancellationToken::new());
    start_notifications(config, store.clone(), &mut background)
        .await
        .expect("the notifications");
    start_relay(config, store.clone(), &mut background).expect("the relay");
    background
}

/// Waits, at most 30 s, until the inbox's stats satisfy `done`.
async fn inbox_until(inbox: &Inbox, done: impl Fn(&InboxStats) -> bool) -> InboxStats {
    let started = Instant::now();
    loop {
        let stats = inbox.stats().await.expect("the inbox's stats");
        if done(&stats) {
            return stats;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the inbox did not get there within 30 s: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn rabbitmq_confirmed_and_cancelled_bookings_reach_the_notifications_once() {
    let Some(pg) = annals_testkit::postgres().await else {
        return;
    };
    let Some(rabbit) = annals_testkit::rabbitmq().await else {
        return;
    };
    let store = PgEventStore::from_pool(pg.pool().clone());
    store.migrate().await.expect("the store's schema");
    let exchange = rabbit.name("airline.events");
    let queue = rabbit.name("notifications");
    rabbit.remember(&format!("{queue}.dead-letter"));
    let config = Cli::parse_from([
        "airline",
        "--amqp-url",
        rabbit.url(),
        "--exchange",
        &exchange,
        "--notify-queue",
        &queue,
    ])
    .config;
    let inbox = Inbox::new(pg.pool().clone(), CONSUMER);

    let background = start(&config, &store).await;
    let confirmed = [
        booking(&store, vec![BookingEvent::BookingConfirmed]).await,
        booking(&store, vec![BookingEvent::BookingConfirmed]).await,
    ];
    let cancelled = booking(
        &store,
        vec![BookingEvent::BookingCancelled {
            reason: "payment declined".into(),
        }],
    )
    .await;
    // Requested only: nothing to tell anyone yet.
    let pending = booking(&store, vec![]).await;
    let stats = inbox_until(&inbox, |stats| stats.messages >= 3).await;
    assert_eq!(stats.messages, 3, "{stats:?}");

    let notices = notices_reach(&store, 3, Duration::from_secs(30)).await;
    assert_eq!(notices.len(), 3, "{notices:?}");
    assert!(!notices.contains_key(&pending));
    for id in confirmed {
        let sent = &notices[&id];
        assert_eq!(sent.len(), 1, "{sent:?}");
        assert!(
            sent[0]
                .1
                .starts_with(&format!("Booking {id} confirmed: 1 flight(s), 12900 USD")),
            "{sent:?}"
        );
    }
    assert_eq!(
        notices[&cancelled][0].1,
        format!("Booking {cancelled} cancelled: payment declined")
    );
    let cancellation = &events_of(&store, BookingEvent::BOOKING_CANCELLED).await[0];
    let mut expected = expected_confirmations(&store).await;
    expected.insert(message_id(cancellation.event_id, BOOKING_CANCELLED, 1).to_string());
    assert_eq!(inbox_ids(&store).await, expected);
    let caused: std::collections::BTreeSet<String> = notices
        .values()
        .flatten()
        .map(|(id, _)| id.clone())
        .collect();
    assert_eq!(
        caused, expected,
        "each notice names the message that caused it"
    );

    // The relay's checkpoint moved back (as after a crash before it was
    // saved): everything is published again under the same ids, and the
    // inbox drops every copy.
    background.shutdown(Duration::from_secs(10)).await;
    store
        .save_checkpoint(RELAY, Position::START)
        .await
        .expect("moving the checkpoint back");
    let background = start(&config, &store).await;
    let stats = inbox_until(&inbox, |stats| stats.duplicates >= 3).await;
    assert_eq!(
        stats,
        InboxStats {
            messages: 3,
            duplicates: 3,
            redelivered_messages: 3
        }
    );
    assert_eq!(inbox_ids(&store).await, expected);
    let again = integration_support::notices(&store).await;
    assert_eq!(again, notices, "no notice twice");

    background.shutdown(Duration::from_secs(10)).await;
    rabbit.cleanup().await;
    pg.cleanup().await;
}
