//! Helpers of the integration-event tests: bookings appended straight to
//! the log (requested, then confirmed or cancelled, as the saga leaves
//! them), the message ids the relay must publish for them, and what the
//! notifications recorded.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};

use airline::booking::{Booking, BookingEvent, Passenger, Segment};
use airline::integration::BOOKING_CONFIRMED;
use airline::notifications::{CONSUMER, NoticeEvent};
use airline::values::Money;
use annals::{
    AggregateType, EventFilter, EventStore, ExpectedVersion, Metadata, NewEvent, Position,
};
use annals_postgres::PgEventStore;
use annals_rabbitmq::message_id;
use futures::StreamExt;
use uuid::Uuid;

/// A booking's request: one seat on one flight, for 129 USD.
pub fn requested(booking_id: Uuid) -> BookingEvent {
    BookingEvent::BookingRequested {
        booking_id,
        passenger: Passenger {
            name: "Ada Lovelace".into(),
            email: "ada@example.com".into(),
        },
        segments: vec![Segment {
            flight_id: Uuid::from_u128(7),
            seats: 1,
            price: Money::usd(12_900),
        }],
        total: Money::usd(12_900),
        card_token: "tok_visa".into(),
    }
}

/// Appends a booking with `events` after its request; its id.
pub async fn booking(store: &PgEventStore, events: Vec<BookingEvent>) -> Uuid {
    let id = Uuid::now_v7();
    let mut all = vec![requested(id)];
    all.extend(events);
    let new = all
        .iter()
        .map(|event| NewEvent::from_domain(event, Metadata::default()).expect("an encodable event"))
        .collect();
    store
        .append(&Booking::stream_id(&id), ExpectedVersion::NoStream, new)
        .await
        .expect("appending a booking");
    id
}

/// Appends `count` confirmed bookings, `concurrency` appends at a time.
pub async fn confirmed_bookings(store: &PgEventStore, count: usize, concurrency: usize) {
    futures::stream::iter(0..count)
        .map(|_| booking(store, vec![BookingEvent::BookingConfirmed]))
        .buffer_unordered(concurrency)
        .collect::<Vec<_>>()
        .await;
}

/// Every event of `event_type` in the log, in order.
pub async fn events_of(store: &PgEventStore, event_type: &str) -> Vec<annals::RecordedEvent> {
    let filter = EventFilter::types([event_type.to_owned()]);
    let mut after = Position::START;
    let mut all = Vec::new();
    loop {
        let page = store
            .read_all(after, 5_000, &filter)
            .await
            .expect("reading the log");
        let Some(last) = page.last() else {
            return all;
        };
        after = last.position;
        all.extend(page);
    }
}

/// The message ids the relay publishes for the log's `BookingConfirmed`s.
pub async fn expected_confirmations(store: &PgEventStore) -> BTreeSet<String> {
    events_of(store, BookingEvent::BOOKING_CONFIRMED)
        .await
        .iter()
        .map(|event| message_id(event.event_id, BOOKING_CONFIRMED, 1).to_string())
        .collect()
}

/// The message ids in the notifications' inbox.
pub async fn inbox_ids(store: &PgEventStore) -> BTreeSet<String> {
    let ids: Vec<(String,)> =
        sqlx::query_as("SELECT message_id FROM annals_inbox WHERE consumer = $1")
            .bind(CONSUMER)
            .fetch_all(store.pool())
            .await
            .expect("reading the inbox");
    ids.into_iter().map(|(id,)| id).collect()
}

/// The notices recorded: per booking, the ids of the messages that caused
/// them and their subjects, in order.
pub async fn notices(store: &PgEventStore) -> BTreeMap<Uuid, Vec<(String, String)>> {
    let mut notices: BTreeMap<Uuid, Vec<(String, String)>> = BTreeMap::new();
    for event in events_of(store, "NoticeSent").await {
        let NoticeEvent::NoticeSent {
            booking_id,
            message_id,
            subject,
            ..
        } = event.decode::<NoticeEvent>().expect("a notice");
        notices
            .entry(booking_id)
            .or_default()
            .push((message_id, subject));
    }
    notices
}

/// The notices, once at least `count` of them can be read, or after
/// `limit`: the log shows a committed notice only once the transactions
/// that began before it ended (a gap-free log), so it may trail the inbox,
/// whose row is visible at its commit.
pub async fn notices_reach(
    store: &PgEventStore,
    count: usize,
    limit: std::time::Duration,
) -> BTreeMap<Uuid, Vec<(String, String)>> {
    let started = std::time::Instant::now();
    loop {
        let notices = notices(store).await;
        if notices.values().map(Vec::len).sum::<usize>() >= count || started.elapsed() > limit {
            return notices;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
