//! The Flight aggregate's rules, through the given/when/then test kit.

use airline::scheduling::*;
use airline::values::{AirportCode, Money};
use annals::testing::given;
use annals::{DomainEvent, Payload};
use chrono::{DateTime, Duration, Utc};
use serde_json::json;
use uuid::Uuid;

fn t(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

fn code(s: &str) -> AirportCode {
    s.parse().unwrap()
}

fn schedule(id: Uuid, seats: u32) -> ScheduleFlight {
    ScheduleFlight {
        flight_id: id,
        flight_number: "AN123".parse().unwrap(),
        from: code("JFK"),
        to: code("LHR"),
        departure: t("2026-12-01T18:00:00Z"),
        arrival: t("2026-12-02T06:00:00Z"),
        seats,
        price: Money::usd(45000),
    }
}

fn scheduled(id: Uuid, seats: u32) -> FlightEvent {
    let c = schedule(id, seats);
    FlightEvent::FlightScheduled {
        flight_id: id,
        flight_number: c.flight_number,
        from: c.from,
        to: c.to,
        departure: c.departure,
        arrival: c.arrival,
        seats,
        price: c.price,
    }
}

#[test]
fn schedules_a_new_flight() {
    let id = Uuid::now_v7();
    let flight = given::<Flight>([])
        .when(schedule(id, 180))
        .then([scheduled(id, 180)]);
    assert_eq!(flight.status(), FlightStatus::Scheduled);
    assert_eq!(flight.seats_available(), 180);
}

#[test]
fn refuses_to_schedule_twice() {
    let id = Uuid::now_v7();
    given::<Flight>([scheduled(id, 180)])
        .when(schedule(id, 180))
        .then_error(FlightError::AlreadyScheduled);
}

#[test]
fn refuses_arrival_before_departure() {
    let mut cmd = schedule(Uuid::now_v7(), 10);
    cmd.arrival = cmd.departure - Duration::hours(1);
    let (departure, arrival) = (cmd.departure, cmd.arrival);
    given::<Flight>([])
        .when(cmd)
        .then_error(FlightError::ArrivalBeforeDeparture { departure, arrival });
}

#[test]
fn refuses_same_airports_zero_seats_and_non_positive_prices() {
    let mut same = schedule(Uuid::now_v7(), 10);
    same.to = same.from;
    given::<Flight>([])
        .when(same)
        .then_error(FlightError::SameAirport(code("JFK")));

    given::<Flight>([])
        .when(schedule(Uuid::now_v7(), 0))
        .then_error(FlightError::InvalidSeats(0));

    let mut free = schedule(Uuid::now_v7(), 10);
    free.price = Money::usd(-1);
    given::<Flight>([])
        .when(free)
        .then_error(FlightError::InvalidPrice(Money::usd(-1)));
}

#[test]
fn reserves_seats_without_overbooking() {
    let id = Uuid::now_v7();
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    let reserved = FlightEvent::SeatsReserved {
        booking_id: a,
        seats: 2,
    };
    let flight = given::<Flight>([scheduled(id, 3)])
        .when(ReserveSeats {
            booking_id: a,
            seats: 2,
        })
        .then([reserved.clone()]);
    assert_eq!(flight.seats_available(), 1);
    given::<Flight>([scheduled(id, 3), reserved])
        .when(ReserveSeats {
            booking_id: b,
            seats: 2,
        })
        .then_error(FlightError::NotEnoughSeats {
            requested: 2,
            available: 1,
        });
}

#[test]
fn reserving_again_for_the_same_booking_changes_nothing() {
    let id = Uuid::now_v7();
    let a = Uuid::now_v7();
    given::<Flight>([
        scheduled(id, 3),
        FlightEvent::SeatsReserved {
            booking_id: a,
            seats: 2,
        },
    ])
    .when(ReserveSeats {
        booking_id: a,
        seats: 2,
    })
    .then([]);
}

#[test]
fn no_reservation_on_a_cancelled_or_unknown_flight() {
    let id = Uuid::now_v7();
    let cancelled = FlightEvent::FlightCancelled {
        reason: "weather".into(),
    };
    given::<Flight>([scheduled(id, 3), cancelled])
        .when(ReserveSeats {
            booking_id: Uuid::now_v7(),
            seats: 1,
        })
        .then_error(FlightError::Cancelled);
    given::<Flight>([])
        .when(ReserveSeats {
            booking_id: Uuid::now_v7(),
            seats: 1,
        })
        .then_error(FlightError::NotFound);
}

#[test]
fn releases_exactly_what_a_booking_holds_even_after_cancellation() {
    let id = Uuid::now_v7();
    let a = Uuid::now_v7();
    let history = [
        scheduled(id, 3),
        FlightEvent::SeatsReserved {
            booking_id: a,
            seats: 2,
        },
        FlightEvent::FlightCancelled {
            reason: String::new(),
        },
    ];
    let flight = given::<Flight>(history.clone())
        .when(ReleaseSeats { booking_id: a })
        .then([FlightEvent::SeatsReleased {
            booking_id: a,
            seats: 2,
        }]);
    assert_eq!(flight.reserved_for(a), 0);
    // Releasing twice is a no-op: compensation is idempotent.
    let mut twice = history.to_vec();
    twice.push(FlightEvent::SeatsReleased {
        booking_id: a,
        seats: 2,
    });
    given::<Flight>(twice)
        .when(ReleaseSeats { booking_id: a })
        .then([]);
}

#[test]
fn reschedule_and_price_rules() {
    let id = Uuid::now_v7();
    let departure = t("2026-12-03T10:00:00Z");
    given::<Flight>([scheduled(id, 3)])
        .when(RescheduleFlight {
            departure,
            arrival: departure + Duration::hours(7),
        })
        .then([FlightEvent::FlightRescheduled {
            departure,
            arrival: departure + Duration::hours(7),
        }]);
    given::<Flight>([scheduled(id, 3)])
        .when(RescheduleFlight {
            departure,
            arrival: departure,
        })
        .then_error(FlightError::ArrivalBeforeDeparture {
            departure,
            arrival: departure,
        });
    given::<Flight>([scheduled(id, 3)])
        .when(ChangePrice {
            price: Money::usd(39900),
        })
        .then([FlightEvent::PriceChanged {
            price: Money::usd(39900),
        }]);
    given::<Flight>([scheduled(id, 3)])
        .when(ChangePrice {
            price: Money::usd(45000),
        })
        .then([]);
    given::<Flight>([scheduled(id, 3)])
        .when(ChangePrice {
            price: Money::new(100, "EUR".parse().unwrap()),
        })
        .then_error(FlightError::CurrencyMismatch {
            current: "USD".into(),
            given: "EUR".into(),
        });
}

#[test]
fn cancel_is_idempotent_and_needs_a_flight() {
    let id = Uuid::now_v7();
    let cancelled = FlightEvent::FlightCancelled {
        reason: "strike".into(),
    };
    given::<Flight>([scheduled(id, 3)])
        .when(CancelFlight {
            reason: "strike".into(),
        })
        .then([cancelled.clone()]);
    given::<Flight>([scheduled(id, 3), cancelled])
        .when(CancelFlight::default())
        .then([]);
    given::<Flight>([])
        .when(CancelFlight::default())
        .then_error(FlightError::NotFound);
}

#[test]
fn stored_v1_flight_scheduled_upcasts_to_today() {
    // Exactly what the first version of the airline wrote to the store.
    let v1 = json!({
        "flight_id": "0193a0f2-6c1e-7c41-9d6b-2f4f0f6a1b11",
        "flight_number": "AN123",
        "from": "JFK",
        "to": "LHR",
        "departure": "2026-12-01T18:00:00Z",
        "arrival": "2026-12-02T06:00:00Z",
        "seats": 180,
        "price_cents": 45000
    });
    let event = FlightEvent::decode("FlightScheduled", 1, &Payload::from(&v1)).unwrap();
    let FlightEvent::FlightScheduled {
        price, seats, from, ..
    } = &event
    else {
        panic!("decoded {event:?}");
    };
    assert_eq!(*price, Money::usd(45000));
    assert_eq!((*seats, from.as_str()), (180, "JFK"));
    // Written today, it is v2 with a Money price.
    assert_eq!(event.schema_version(), 2);
    assert_eq!(
        event.encode().unwrap().to_value().unwrap()["price"],
        json!({"amount": 45000, "currency": "USD"})
    );

    let old_price = json!({ "price_cents": 39900 });
    assert_eq!(
        FlightEvent::decode("PriceChanged", 1, &Payload::from(&old_price)).unwrap(),
        FlightEvent::PriceChanged {
            price: Money::usd(39900)
        }
    );
    // A v1 payload that lacks the field names the event and the version.
    let err = FlightEvent::decode("PriceChanged", 1, &Payload::from(&json!({}))).unwrap_err();
    assert!(err.to_string().contains("PriceChanged"), "{err}");
}

#[test]
fn unknown_event_types_are_named() {
    let err = FlightEvent::decode("FlightTeleported", 3, &Payload::from(&json!({}))).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("FlightTeleported") && text.contains('3'),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_racing_schedules_of_one_number_on_one_day_exactly_one_wins() {
    use std::sync::Arc;

    let airline = Arc::new(airline::app::Airline::new(
        annals::memory::MemoryStore::new(),
        Arc::new(airline::booking::SimulatedPayments::new()),
    ));
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let airline = Arc::clone(&airline);
            tokio::spawn(async move {
                let command = schedule(Uuid::now_v7(), 100);
                airline
                    .schedule_flight(command, annals::CommandContext::default())
                    .await
            })
        })
        .collect();
    let mut won = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => won += 1,
            Err(error) => assert!(
                error.to_string().contains("already scheduled on"),
                "{error}"
            ),
        }
    }
    assert_eq!(won, 1);
}
