//! Reading a long stream from the in-memory store is cheap: one clone per event.

use std::time::Instant;

use annals::memory::MemoryStore;
use annals::{EventFilter, EventStore, ExpectedVersion, Metadata, NewEvent, Position};
use serde_json::json;
use uuid::Uuid;

fn events(count: usize) -> Vec<NewEvent> {
    (0..count)
        .map(|i| NewEvent {
            event_id: Uuid::now_v7(),
            event_type: "SeatReserved".into(),
            schema_version: 1,
            payload: json!({ "seat": format!("{}{}", i % 40, ['A', 'B', 'C', 'D'][i % 4]), "price_cents": 12_900 + i }),
            metadata: Metadata::default().correlated(Uuid::now_v7()).actor("bench"),
        })
        .collect()
}

/// Prints the read rate; asserts only that reads return everything, since
/// timings in debug builds and on busy machines mean little. Run with
/// `cargo test --release --test memory_read_speed -- --nocapture` to see it.
#[tokio::test]
async fn reads_a_10k_stream_quickly() {
    let store = MemoryStore::new();
    for chunk in events(10_000).chunks(1_000) {
        store
            .append("flight-1", ExpectedVersion::Any, chunk.to_vec())
            .await
            .unwrap();
    }
    store
        .append("flight-2", ExpectedVersion::Any, events(10))
        .await
        .unwrap();

    let rounds = 20;
    let started = Instant::now();
    for _ in 0..rounds {
        let read = store.read_stream("flight-1", 1, usize::MAX).await.unwrap();
        assert_eq!(read.len(), 10_000);
    }
    let per_second = (rounds * 10_000) as f64 / started.elapsed().as_secs_f64();
    eprintln!("read_stream: {per_second:.0} events/s");

    let started = Instant::now();
    let mut after = Position::START;
    let mut total = 0;
    loop {
        let page = store
            .read_all(after, 512, &EventFilter::all())
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        after = last.position;
        total += page.len();
    }
    assert_eq!(total, 10_010);
    let per_second = total as f64 / started.elapsed().as_secs_f64();
    eprintln!("read_all in pages of 512: {per_second:.0} events/s");
}
