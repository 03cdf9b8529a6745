//! What the in-memory store promises beyond the conformance suite.

use std::time::{Duration, Instant};

use annals::memory::MemoryStore;
use annals::{
    AppendLimits, EventFilter, EventStore, ExpectedVersion, Metadata, NewEvent, Position,
    StoreError,
};
use futures::StreamExt;
use serde_json::json;
use uuid::Uuid;

fn tick() -> NewEvent {
    NewEvent {
        event_id: Uuid::now_v7(),
        event_type: "Tick".into(),
        schema_version: 1,
        payload: json!({}).into(),
        metadata: Metadata::default(),
        tags: Vec::new(),
    }
}

#[tokio::test]
async fn clones_share_the_events_and_default_is_empty() {
    let store = MemoryStore::default();
    assert!(store.is_empty());
    let clone = store.clone();
    clone
        .append("s", ExpectedVersion::NoStream, vec![tick(), tick()])
        .await
        .unwrap();
    assert_eq!(store.len(), 2);
    assert_eq!(store.stream_version("s").await.unwrap(), 2);
    assert_eq!(store.head().await.unwrap(), clone.head().await.unwrap());
    assert!(format!("{store:?}").contains("events: 2"));
    assert!(MemoryStore::new().is_empty(), "each new store is its own");
}

#[tokio::test]
async fn enforces_its_own_limits() {
    let store = MemoryStore::with_limits(AppendLimits {
        max_stream_id_len: 5,
        max_payload_bytes: 10,
        max_batch: 2,
        ..AppendLimits::default()
    });
    assert_eq!(store.limits().max_batch, 2);
    let mut big = tick();
    big.payload = json!({ "text": "more than ten bytes" }).into();
    for (stream, events) in [
        ("toolong", vec![tick()]),
        ("s", vec![tick(), tick(), tick()]),
        ("s", vec![big]),
    ] {
        let err = store
            .append(stream, ExpectedVersion::Any, events)
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::InvalidInput(_)), "{err}");
    }
    assert!(store.is_empty());
}

/// Live events arrive on the append's wake-up, not on the poll interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_wake_on_append() {
    let store = MemoryStore::new();
    let mut sub = store.subscribe(Position::START, EventFilter::all());
    let rounds = 10;
    let started = Instant::now();
    for i in 0..rounds {
        store
            .append("s", ExpectedVersion::Exact(i), vec![tick()])
            .await
            .unwrap();
        let event = tokio::time::timeout(Duration::from_secs(5), sub.next())
            .await
            .expect("a live event")
            .expect("an open subscription")
            .unwrap();
        assert_eq!(event.stream_version, i + 1);
    }
    // Polling every 500 ms would take about 2.5 s for ten events.
    assert!(
        started.elapsed() < Duration::from_millis(1200),
        "ten live events took {:?}",
        started.elapsed()
    );
}

/// Many OS threads appending at once, each with optimistic retries, lose
/// nothing; the store needs no runtime of its own for appends and reads.
#[test]
fn threads_appending_with_retries_lose_nothing() {
    let store = MemoryStore::new();
    std::thread::scope(|scope| {
        for _ in 0..4 {
            let store = store.clone();
            scope.spawn(move || {
                for _ in 0..100 {
                    loop {
                        let result = futures::executor::block_on(async {
                            let version = store.stream_version("shared").await?;
                            store
                                .append("shared", ExpectedVersion::Exact(version), vec![tick()])
                                .await
                        });
                        match result {
                            Ok(_) => break,
                            Err(StoreError::Conflict { .. }) => continue,
                            Err(other) => panic!("{other}"),
                        }
                    }
                }
            });
        }
    });
    let events = futures::executor::block_on(store.read_stream("shared", 1, usize::MAX)).unwrap();
    assert_eq!(events.len(), 400);
    assert!(events.windows(2).all(|w| w[0].position < w[1].position));
    assert!(
        events
            .iter()
            .enumerate()
            .all(|(i, e)| e.stream_version == i as u64 + 1)
    );
}
