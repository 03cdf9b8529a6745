//! Rehydration: load and apply a 10,000-event Flight stream from the in-memory store,
//! payloads decoded from JSON through the upcasting decode path (10% stored at v1).
//!
//! `cargo bench -p airline --bench rehydrate`

use airline::scheduling::{Flight, FlightEvent};
use airline::values::Money;
use annals::memory::MemoryStore;
use annals::{AggregateType, EventStore, ExpectedVersion, Metadata, NewEvent, Repository};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::json;
use uuid::Uuid;

const EVENTS: usize = 10_000;

fn v1(event_type: &str, payload: serde_json::Value) -> NewEvent {
    NewEvent {
        event_id: Uuid::now_v7(),
        event_type: event_type.into(),
        schema_version: 1,
        payload: payload.into(),
        metadata: Metadata::default(),
        tags: Vec::new(),
    }
}

fn current(event: &FlightEvent) -> NewEvent {
    NewEvent::from_domain(event, Metadata::default()).expect("encodes")
}

async fn seed(store: &MemoryStore, id: Uuid) {
    let mut events = vec![v1(
        "FlightScheduled",
        json!({
            "flight_id": id, "flight_number": "AN123", "from": "JFK", "to": "LHR",
            "departure": "2026-12-01T18:00:00Z", "arrival": "2026-12-02T06:00:00Z",
            "seats": 1000, "price_cents": 45000
        }),
    )];
    let mut booking = Uuid::now_v7();
    for i in 1..EVENTS {
        events.push(match i % 10 {
            0 => v1("PriceChanged", json!({ "price_cents": 40000 + i as i64 })),
            n if n % 2 == 1 => {
                booking = Uuid::now_v7();
                current(&FlightEvent::SeatsReserved {
                    booking_id: booking,
                    seats: 2,
                })
            }
            _ => current(&FlightEvent::SeatsReleased {
                booking_id: booking,
                seats: 2,
            }),
        });
    }
    let stream = Flight::stream_id(&id);
    for chunk in events.chunks(1000) {
        store
            .append(&stream, ExpectedVersion::Any, chunk.to_vec())
            .await
            .expect("appends");
    }
}

fn rehydrate(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let store = MemoryStore::new();
    let id = Uuid::now_v7();
    rt.block_on(seed(&store, id));
    let flights = Repository::<Flight, _>::new(store);
    let loaded = rt.block_on(flights.load(id)).expect("loads");
    assert_eq!(loaded.version, EVENTS as u64);
    assert!(
        loaded
            .state
            .price()
            .is_some_and(|p| p.amount > Money::usd(40000).amount)
    );

    let mut group = c.benchmark_group("rehydrate");
    group.throughput(Throughput::Elements(EVENTS as u64));
    group.bench_function("flight_10k_events_memory", |b| {
        b.to_async(&rt)
            .iter(|| async { flights.load(id).await.expect("loads") })
    });
    group.finish();
}

criterion_group!(benches, rehydrate);
criterion_main!(benches);
