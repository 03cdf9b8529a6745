//! The Elasticsearch flight read model, built from Flight events by the
//! projection runner, answers searches as the events imply (and as the
//! in-memory read model does).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use airline::scheduling::FlightEvent;
use airline::search::ElasticFlights;
use airline::search::{
    FlightReads, FlightSearch, FlightView, FlightViewStatus, MemoryFlights, ReadError, SortOrder,
};
use airline::values::{AirportCode, Money};
use annals::memory::MemoryStore;
use annals::projection::{FailurePolicy, ProjectionRunner, RunnerOptions};
use annals::{EventStore, ExpectedVersion, Metadata, NewEvent};
use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use uuid::Uuid;

/// What the events of one flight imply, worked out by hand.
#[derive(Debug, Clone)]
struct Expected {
    id: Uuid,
    number: String,
    from: AirportCode,
    to: AirportCode,
    departure: DateTime<Utc>,
    arrival: DateTime<Utc>,
    price: i64,
    seats_total: u32,
    seats_available: u32,
    cancelled: bool,
}

const ROUTES: [(&str, &str); 8] = [
    ("JFK", "LHR"),
    ("JFK", "CDG"),
    ("LHR", "JFK"),
    ("SFO", "NRT"),
    ("BOS", "LGW"),
    ("EWR", "LHR"),
    ("LAX", "SYD"),
    ("JFK", "LHR"),
];

fn code(s: &str) -> AirportCode {
    s.parse().unwrap()
}

async fn append(store: &MemoryStore, id: Uuid, events: &[FlightEvent]) {
    let events = events
        .iter()
        .map(|e| NewEvent::from_domain(e, Metadata::default()).unwrap())
        .collect();
    store
        .append(&format!("flight-{id}"), ExpectedVersion::Any, events)
        .await
        .unwrap();
}

/// 40 flights over 8 routes and a week, with reservations, releases, price
/// changes, reschedules, cancellations and one sold-out flight; the events
/// of different flights interleaved in the log.
async fn schedule_flights(store: &MemoryStore) -> BTreeMap<Uuid, Expected> {
    let base = Utc.with_ymd_and_hms(2026, 12, 1, 6, 0, 0).unwrap();
    let mut flights = BTreeMap::new();
    for i in 0..40_u32 {
        let (from, to) = ROUTES[i as usize % ROUTES.len()];
        let id = Uuid::now_v7();
        let departure =
            base + Duration::days(i64::from(i % 7)) + Duration::hours(i64::from(i % 5) * 3);
        let f = Expected {
            id,
            number: format!("AN{}", 1000 + i),
            from: code(from),
            to: code(to),
            departure,
            arrival: departure + Duration::hours(7),
            price: 20_000 + i64::from((i * 3_700) % 50_000),
            seats_total: 50 + (i % 5) * 10,
            seats_available: 50 + (i % 5) * 10,
            cancelled: false,
        };
        append(
            store,
            id,
            &[FlightEvent::FlightScheduled {
                flight_id: id,
                flight_number: f.number.parse().unwrap(),
                from: f.from,
                to: f.to,
                departure: f.departure,
                arrival: f.arrival,
                seats: f.seats_total,
                price: Money::usd(f.price),
            }],
        )
        .await;
        flights.insert(id, f);
    }
    // A second pass, so events of different flights interleave.
    let ids: Vec<Uuid> = flights.keys().copied().collect();
    for (i, id) in ids.iter().enumerate() {
        let f = flights.get_mut(id).unwrap();
        let mut events = Vec::new();
        if i % 3 == 0 {
            let booking = Uuid::now_v7();
            events.push(FlightEvent::SeatsReserved {
                booking_id: booking,
                seats: 10,
            });
            events.push(FlightEvent::SeatsReserved {
                booking_id: Uuid::now_v7(),
                seats: 5,
            });
            f.seats_available -= 15;
            if i % 2 == 0 {
                events.push(FlightEvent::SeatsReleased {
                    booking_id: booking,
                    seats: 10,
                });
                f.seats_available += 10;
            }
        }
        if i % 5 == 1 {
            f.price += 7_500;
            events.push(FlightEvent::PriceChanged {
                price: Money::usd(f.price),
            });
        }
        if i % 7 == 2 {
            f.departure += Duration::days(1);
            f.arrival += Duration::days(1);
            events.push(FlightEvent::FlightRescheduled {
                departure: f.departure,
                arrival: f.arrival,
            });
        }
        if i == 11 {
            events.push(FlightEvent::SeatsReserved {
                booking_id: Uuid::now_v7(),
                seats: f.seats_available,
            });
            f.seats_available = 0;
        }
        if i % 6 == 4 {
            events.push(FlightEvent::FlightCancelled {
                reason: "weather".into(),
            });
            f.cancelled = true;
        }
        if !events.is_empty() {
            append(store, *id, &events).await;
        }
    }
    flights
}

fn search() -> FlightSearch {
    FlightSearch {
        limit: 100,
        ..FlightSearch::default()
    }
}

fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// The flights a search should return, in order, worked out from `Expected`.
fn expected_ids(flights: &BTreeMap<Uuid, Expected>, s: &FlightSearch) -> Vec<Uuid> {
    let last_day = s.date_to.or(s.date);
    let mut hits: Vec<&Expected> = flights
        .values()
        .filter(|f| !f.cancelled)
        .filter(|f| s.from.is_none_or(|c| f.from == c) && s.to.is_none_or(|c| f.to == c))
        .filter(|f| s.date.is_none_or(|d| f.departure.date_naive() >= d))
        .filter(|f| last_day.is_none_or(|d| f.departure.date_naive() <= d))
        .filter(|f| s.max_price.is_none_or(|p| f.price <= p))
        .filter(|f| s.min_seats.is_none_or(|n| f.seats_available >= n))
        .filter(|f| {
            let text = words(&format!(
                "{} {} {} {} {} {} {}",
                f.number,
                f.from,
                f.from.city(),
                f.from.name(),
                f.to,
                f.to.city(),
                f.to.name()
            ));
            s.q.as_deref().is_none_or(|q| {
                words(q)
                    .iter()
                    .all(|w| text.iter().any(|t| t.starts_with(w.as_str())))
            })
        })
        .collect();
    hits.sort_by_key(|f| {
        let key = match s.sort {
            SortOrder::PriceAsc => f.price,
            SortOrder::PriceDesc => -f.price,
            SortOrder::DepartureAsc => f.departure.timestamp_millis(),
            SortOrder::DepartureDesc => -f.departure.timestamp_millis(),
        };
        (key, f.id.to_string())
    });
    hits.into_iter().map(|f| f.id).collect()
}

fn ids(flights: &[FlightView]) -> Vec<Uuid> {
    flights.iter().map(|f| f.id).collect()
}

fn day(s: &str) -> NaiveDate {
    s.parse().unwrap()
}

#[tokio::test]
async fn search_flights_answer_as_the_events_imply() {
    let Some(es) = annals_testkit::search().await else {
        return;
    };
    let store = MemoryStore::new();
    let flights = schedule_flights(&store).await;

    let elastic = ElasticFlights::new(es.client().clone(), es.prefix());
    let projector = elastic.open(&store).await.unwrap();
    assert_eq!(elastic.projection_name(), "flights_v2");
    // Later events reach the live index through the runner.
    let late = Uuid::now_v7();
    let mut late_flight = flights.values().next().unwrap().clone();
    late_flight.id = late;
    late_flight.number = "ZZ9".into();
    late_flight.from = code("FRA");
    late_flight.to = code("MUC");
    append(
        &store,
        late,
        &[FlightEvent::FlightScheduled {
            flight_id: late,
            flight_number: "ZZ9".parse().unwrap(),
            from: late_flight.from,
            to: late_flight.to,
            departure: late_flight.departure,
            arrival: late_flight.arrival,
            seats: late_flight.seats_total,
            price: Money::usd(late_flight.price),
        }],
    )
    .await;
    let late_seats = late_flight.seats_total;
    late_flight.seats_available = late_seats;
    let mut flights = flights;
    flights.insert(late, late_flight);

    let options = RunnerOptions {
        failure_policy: FailurePolicy::Stop { max_attempts: 1 },
        ..RunnerOptions::default()
    };
    ProjectionRunner::new(store.clone(), Arc::new(projector))
        .with_options(options)
        .catch_up()
        .await
        .unwrap();
    // The in-memory read model, fed the same events, to compare with.
    let memory = MemoryFlights::new();
    ProjectionRunner::new(store.clone(), Arc::new(memory.clone()))
        .with_options(options)
        .catch_up()
        .await
        .unwrap();

    // By id: every flight, cancelled ones included, as the events left it.
    for f in flights.values() {
        let view = elastic
            .flight(f.id)
            .await
            .unwrap()
            .expect("every flight is readable by id");
        assert_eq!(view.flight_number.as_str(), f.number);
        assert_eq!((view.from, view.to), (f.from, f.to));
        assert_eq!((view.departure, view.arrival), (f.departure, f.arrival));
        assert_eq!(view.price, Money::usd(f.price));
        assert_eq!(
            (view.seats_total, view.seats_available),
            (f.seats_total, f.seats_available)
        );
        let status = if f.cancelled {
            FlightViewStatus::Cancelled
        } else {
            FlightViewStatus::Scheduled
        };
        assert_eq!(view.status, status);
        assert_eq!(Some(view), memory.flight(f.id).await.unwrap());
    }
    assert_eq!(elastic.flight(Uuid::now_v7()).await.unwrap(), None);

    let jfk = Some(code("JFK"));
    let lhr = Some(code("LHR"));
    let searches: Vec<(&str, FlightSearch)> = vec![
        ("everything", search()),
        (
            "route",
            FlightSearch {
                from: jfk,
                to: lhr,
                ..search()
            },
        ),
        (
            "origin",
            FlightSearch {
                from: jfk,
                ..search()
            },
        ),
        (
            "destination",
            FlightSearch {
                to: lhr,
                ..search()
            },
        ),
        (
            "one day",
            FlightSearch {
                date: Some(day("2026-12-03")),
                ..search()
            },
        ),
        (
            "a day range",
            FlightSearch {
                date: Some(day("2026-12-02")),
                date_to: Some(day("2026-12-04")),
                ..search()
            },
        ),
        (
            "until a day",
            FlightSearch {
                date_to: Some(day("2026-12-02")),
                ..search()
            },
        ),
        (
            "cheap",
            FlightSearch {
                max_price: Some(35_000),
                ..search()
            },
        ),
        (
            "seats",
            FlightSearch {
                min_seats: Some(50),
                ..search()
            },
        ),
        (
            "any seat",
            FlightSearch {
                min_seats: Some(1),
                ..search()
            },
        ),
        (
            "city",
            FlightSearch {
                q: Some("London".into()),
                ..search()
            },
        ),
        (
            "two-word city",
            FlightSearch {
                q: Some("new york".into()),
                ..search()
            },
        ),
        (
            "airport name",
            FlightSearch {
                q: Some("heathrow".into()),
                ..search()
            },
        ),
        (
            "word prefix",
            FlightSearch {
                q: Some("Lond".into()),
                ..search()
            },
        ),
        (
            "city and airport",
            FlightSearch {
                q: Some("london gatwick".into()),
                ..search()
            },
        ),
        (
            "flight number",
            FlightSearch {
                q: Some("an1005".into()),
                ..search()
            },
        ),
        (
            "airport code",
            FlightSearch {
                q: Some("nrt".into()),
                ..search()
            },
        ),
        (
            "one-letter word",
            FlightSearch {
                q: Some("John F Kennedy".into()),
                ..search()
            },
        ),
        (
            "nothing",
            FlightSearch {
                q: Some("atlantis".into()),
                ..search()
            },
        ),
        (
            "cheapest first",
            FlightSearch {
                sort: SortOrder::PriceAsc,
                ..search()
            },
        ),
        (
            "dearest first",
            FlightSearch {
                sort: SortOrder::PriceDesc,
                ..search()
            },
        ),
        (
            "latest first",
            FlightSearch {
                sort: SortOrder::DepartureDesc,
                ..search()
            },
        ),
        (
            "combined",
            FlightSearch {
                from: jfk,
                date: Some(day("2026-12-01")),
                date_to: Some(day("2026-12-05")),
                max_price: Some(60_000),
                min_seats: Some(40),
                sort: SortOrder::PriceDesc,
                ..search()
            },
        ),
    ];
    let mut nonempty = 0;
    for (what, s) in &searches {
        let want = expected_ids(&flights, s);
        let page = elastic
            .search(s)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(ids(&page.flights), want, "{what}: {s:?}");
        assert_eq!(page.next, None, "{what}: all on one page");
        let in_memory = memory.search(s).await.unwrap();
        assert_eq!(
            page.flights, in_memory.flights,
            "{what}: elastic and memory agree"
        );
        nonempty += usize::from(!want.is_empty());
    }
    assert!(
        nonempty >= 18,
        "the data set exercises the searches ({nonempty})"
    );
    // Sanity of the data set itself.
    let cancelled: BTreeSet<Uuid> = flights
        .values()
        .filter(|f| f.cancelled)
        .map(|f| f.id)
        .collect();
    assert!(!cancelled.is_empty());
    let all = elastic.search(&search()).await.unwrap();
    assert_eq!(all.flights.len(), flights.len() - cancelled.len());
    assert!(all.flights.iter().all(|f| !cancelled.contains(&f.id)));
    assert!(
        all.flights.iter().any(|f| f.seats_available == 0),
        "sold out flights stay in search"
    );

    // Pages of 4 with the cursor cover every result exactly once, in order.
    for sort in [
        SortOrder::PriceAsc,
        SortOrder::PriceDesc,
        SortOrder::DepartureAsc,
        SortOrder::DepartureDesc,
    ] {
        let full = FlightSearch { sort, ..search() };
        let want = expected_ids(&flights, &full);
        let mut seen = Vec::new();
        let mut page_search = FlightSearch {
            limit: 4,
            ..full.clone()
        };
        let mut pages = 0;
        loop {
            let page = elastic.search(&page_search).await.unwrap();
            assert!(page.flights.len() <= 4);
            seen.extend(ids(&page.flights));
            pages += 1;
            assert!(
                pages <= want.len() / 4 + 1,
                "{sort:?}: the cursor does not advance"
            );
            match page.next {
                Some(next) => page_search.after = Some(next),
                None => break,
            }
        }
        assert_eq!(seen, want, "{sort:?}");
        assert_eq!(
            pages,
            want.len().div_ceil(4),
            "{sort:?}: no empty last page"
        );
    }

    // A cursor from another sort, or garbage, is a bad cursor.
    let first = elastic
        .search(&FlightSearch {
            limit: 2,
            sort: SortOrder::PriceAsc,
            ..search()
        })
        .await
        .unwrap();
    let by_departure = FlightSearch {
        limit: 2,
        after: first.next.clone(),
        ..search()
    };
    assert!(matches!(
        elastic.search(&by_departure).await,
        Err(ReadError::BadCursor(_))
    ));
    let garbage = FlightSearch {
        after: Some("%%%".into()),
        ..search()
    };
    assert!(matches!(
        elastic.search(&garbage).await,
        Err(ReadError::BadCursor(_))
    ));

    assert!(elastic.health().await.unwrap().contains("flights_v2"));
    es.cleanup().await;
}

#[tokio::test]
async fn search_flight_index_is_rebuilt_on_demand() {
    let Some(es) = annals_testkit::search().await else {
        return;
    };
    let store = MemoryStore::new();
    let flights = schedule_flights(&store).await;
    let elastic = ElasticFlights::new(es.client().clone(), es.prefix());
    elastic.open(&store).await.unwrap();
    let before = elastic.search(&search()).await.unwrap();
    assert_eq!(
        before.flights.len(),
        flights.values().filter(|f| !f.cancelled).count()
    );

    let built = elastic.rebuild(&store).await.unwrap();
    assert_eq!(built.index, es.index("flights_v2_2"));
    assert_eq!(elastic.projection_name(), "flights_v2_2");
    assert_eq!(elastic.search(&search()).await.unwrap(), before);
    es.cleanup().await;
}
