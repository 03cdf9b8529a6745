//! The checker on the in-memory store: a settled world keeps every
//! invariant; each invariant broken on purpose (an event appended by hand, a
//! charge made behind the saga's back) is reported, and only it.

use std::sync::Arc;
use std::time::Duration;

use annals::memory::MemoryStore;
use annals::projection::{DeadLetter, Deadline, ProjectionRunner, RunnerOptions};
use annals::{CommandContext, DomainEvent, EventStore, ExpectedVersion, Metadata, NewEvent};
use serde_json::json;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::app::{Airline, BookingOrder, SeatsOn};
use crate::booking::{Passenger, PaymentService, ResilientPayments, SagaSegment};
use crate::scheduling::ScheduleFlight;
use crate::search::MemoryFlights;

/// A settled airline on the in-memory store, its background tasks stopped
/// so that nothing repairs what a test breaks.
struct Settled {
    store: MemoryStore,
    payments: SimulatedPayments,
    flights: Arc<MemoryFlights>,
    /// 10 seats: `confirmed` holds 2 there.
    a: Uuid,
    /// 3 seats: too few for `no_seats`.
    b: Uuid,
    /// Paid and confirmed, 2 seats on `a`.
    confirmed: Uuid,
    /// Confirmed (a and b), then cancelled by the passenger: refunded.
    cancelled: Uuid,
    /// Declined card: cancelled, never charged.
    declined: Uuid,
    /// 4 seats asked of a 3-seat flight: cancelled before payment.
    no_seats: Uuid,
}

/// How long a world may take to settle.
const SETTLE: Duration = Duration::from_secs(20);

async fn flight(airline: &Airline<MemoryStore>, seats: u32) -> Uuid {
    let command = ScheduleFlight {
        flight_id: Uuid::now_v7(),
        flight_number: next_number(),
        from: "LIS".parse().expect("an airport"),
        to: "MAD".parse().expect("an airport"),
        departure: "2027-05-01T07:00:00Z".parse().expect("a time"),
        arrival: "2027-05-01T08:20:00Z".parse().expect("a time"),
        seats,
        price: Money::usd(12_900),
    };
    airline
        .schedule_flight(command, CommandContext::default())
        .await
        .expect("scheduled")
        .id
}

async fn book(airline: &Airline<MemoryStore>, segments: &[(Uuid, u32)], card: &str) -> Uuid {
    let request = BookingOrder {
        passenger: Passenger {
            name: "Grace Hopper".into(),
            email: "grace@example.com".into(),
        },
        segments: segments
            .iter()
            .map(|&(flight_id, seats)| SeatsOn { flight_id, seats })
            .collect(),
        card_token: card.into(),
    };
    airline
        .request_booking(request, CommandContext::default())
        .await
        .expect("requested")
        .id
}

async fn status_until(
    airline: &Airline<MemoryStore>,
    booking: Uuid,
    wanted: BookingStatus,
) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + SETTLE;
    loop {
        let status = airline
            .booking(booking)
            .await
            .map_err(|e| e.to_string())?
            .status;
        if status == wanted {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("booking {booking} is {status:?}, not {wanted:?}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Schedules two flights, books (paid, declined, no seats, cancelled by the
/// passenger and, with `timeout`, unanswered), waits until the checker is
/// satisfied, and stops the saga and the read model.
async fn settled(timeout: bool) -> Settled {
    let store = MemoryStore::new();
    let payments = SimulatedPayments::new();
    let provider = ResilientPayments::new(payments.clone(), Duration::from_millis(500), 2);
    let airline = Airline::new(store.clone(), Arc::new(provider));
    let flights = Arc::new(MemoryFlights::new());
    let shutdown = CancellationToken::new();
    let options = RunnerOptions {
        idle_interval: Duration::from_millis(20),
        ..RunnerOptions::default()
    };
    let saga = Arc::new(airline.saga());
    let saga_runner = ProjectionRunner::new(store.clone(), Arc::clone(&saga)).with_options(options);
    let read_model =
        ProjectionRunner::new(store.clone(), Arc::clone(&flights)).with_options(options);
    let (stop_saga, stop_reads, stop_deadlines) =
        (shutdown.clone(), shutdown.clone(), shutdown.clone());
    let tasks: Vec<JoinHandle<()>> = vec![
        tokio::spawn(async move {
            let _ = saga_runner.run(stop_saga).await;
        }),
        tokio::spawn(async move {
            let _ = read_model.run(stop_reads).await;
        }),
        tokio::spawn(async move {
            saga.run_deadlines(Duration::from_millis(20), stop_deadlines)
                .await;
        }),
    ];

    let (a, b) = (flight(&airline, 10).await, flight(&airline, 3).await);
    let confirmed = book(&airline, &[(a, 2)], "tok_visa").await;
    let cancelled = book(&airline, &[(a, 1), (b, 1)], "tok_visa").await;
    let declined = book(&airline, &[(a, 2)], "tok_declined").await;
    let no_seats = book(&airline, &[(b, 4)], "tok_visa").await;
    if timeout {
        book(&airline, &[(a, 1)], "tok_timeout").await;
    }
    status_until(&airline, cancelled, BookingStatus::Confirmed)
        .await
        .expect("confirmed");
    airline
        .cancel_booking(cancelled, CommandContext::default())
        .await
        .expect("cancelled");

    let deadline = tokio::time::Instant::now() + SETTLE;
    loop {
        let report = Checker::new(&store)
            .with_payments(&payments)
            .with_reads(flights.as_ref())
            .check()
            .await
            .expect("checked");
        if report.is_ok() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not settled: {report}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    shutdown.cancel();
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("stopped in time")
            .expect("no panic");
    }
    Settled {
        store,
        payments,
        flights,
        a,
        b,
        confirmed,
        cancelled,
        declined,
        no_seats,
    }
}

impl Settled {
    /// The violations, read model aside (events appended by hand change
    /// flights the stopped read model no longer follows).
    async fn violations(&self) -> Vec<Violation> {
        let report = Checker::new(&self.store)
            .with_payments(&self.payments)
            .check()
            .await
            .expect("checked");
        report.violations
    }

    async fn append<E: DomainEvent>(&self, stream: String, event: &E) {
        let new = NewEvent::from_domain(event, Metadata::default()).expect("encoded");
        self.store
            .append(&stream, ExpectedVersion::Any, vec![new])
            .await
            .expect("appended");
    }

    async fn seats_reserved(&self, flight: Uuid, booking_id: Uuid, seats: u32) {
        let event = FlightEvent::SeatsReserved { booking_id, seats };
        self.append(format!("flight-{flight}"), &event).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settled_world_keeps_every_invariant() {
    let world = settled(true).await;
    let report = Checker::new(&world.store)
        .with_payments(&world.payments)
        .with_reads(world.flights.as_ref())
        .check()
        .await
        .unwrap();
    assert!(report.is_ok(), "{report}");
    assert_eq!(
        (report.flights, report.bookings, report.in_flight),
        (2, 5, 0)
    );
    assert!(report.to_string().ends_with("no violations"), "{report}");
    // The refunds the invariants speak of were really made.
    let refunded = world.payments.charge_of(world.cancelled).await.unwrap();
    assert!(refunded.is_some_and(|c| c.refunded));
    assert_eq!(
        world.payments.charge_of(world.declined).await.unwrap(),
        None
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seats_reserved_behind_the_bookings_break_the_flight() {
    let world = settled(false).await;
    world.seats_reserved(world.a, Uuid::now_v7(), 2).await;
    // `confirmed` holds 2 on a; `cancelled` held 1 and released it.
    assert_eq!(
        world.violations().await,
        [Violation::FlightSeats {
            flight_id: world.a,
            held: 4,
            confirmed: 2,
        }]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_booking_holding_seats_is_reported() {
    let world = settled(false).await;
    world.seats_reserved(world.b, world.declined, 1).await;
    assert_eq!(
        world.violations().await,
        [
            Violation::FlightSeats {
                flight_id: world.b,
                held: 1,
                confirmed: 0,
            },
            Violation::CancelledHoldsSeats {
                booking_id: world.declined,
                flight_id: world.b,
                seats: 1,
            },
        ]
    );

    // The flight's sum made right again by a release for some other
    // booking: the cancelled booking's seats are still reported, on their own.
    let release = FlightEvent::SeatsReleased {
        booking_id: Uuid::now_v7(),
        seats: 1,
    };
    world.append(format!("flight-{}", world.b), &release).await;
    assert_eq!(
        world.violations().await,
        [Violation::CancelledHoldsSeats {
            booking_id: world.declined,
            flight_id: world.b,
            seats: 1,
        }]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_charge_of_a_cancelled_booking_without_refund_is_reported() {
    let world = settled(false).await;
    let amount = Money::usd(51_600);
    let taken = PaymentEvent::PaymentTaken {
        booking_id: world.no_seats,
        payment_id: "pay_by_hand".into(),
        amount,
    };
    world
        .append(format!("payment-{}", world.no_seats), &taken)
        .await;
    assert_eq!(
        world.violations().await,
        [Violation::ChargeNotRefunded {
            booking_id: world.no_seats,
            amount,
        }]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_charge_of_a_cancelled_booking_without_refund_is_reported() {
    let world = settled(false).await;
    let amount = Money::usd(25_800);
    // Charged behind the saga's back: the log knows nothing of it.
    world
        .payments
        .charge(world.declined, amount, "tok_visa")
        .await
        .unwrap();
    assert_eq!(
        world.violations().await,
        [Violation::ProviderChargeNotRefunded {
            booking_id: world.declined,
            amount,
        }]
    );
    // Without the ledger, only the log is checked.
    let report = Checker::new(&world.store).check().await.unwrap();
    assert!(report.is_ok(), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirmed_booking_refunded_is_reported() {
    let world = settled(false).await;
    let refunded = PaymentEvent::PaymentRefunded {
        booking_id: world.confirmed,
        amount: Money::usd(25_800),
    };
    world
        .append(format!("payment-{}", world.confirmed), &refunded)
        .await;
    assert_eq!(
        world.violations().await,
        [Violation::ConfirmedNotPaid {
            booking_id: world.confirmed,
        }]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_booking_is_reported_unless_in_flight() {
    let world = settled(false).await;
    let booking_id = Uuid::now_v7();
    let requested = BookingEvent::BookingRequested {
        booking_id,
        passenger: Passenger {
            name: "Ada".into(),
            email: "ada@example.com".into(),
        },
        segments: vec![],
        total: Money::usd(0),
        card_token: "tok_visa".into(),
    };
    world
        .append(format!("booking-{booking_id}"), &requested)
        .await;
    assert_eq!(
        world.violations().await,
        [Violation::BookingPending { booking_id }]
    );

    // Requested a moment ago: under way, not stuck.
    let report = Checker::new(&world.store)
        .in_flight_grace(Duration::from_secs(3600))
        .check()
        .await
        .unwrap();
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.in_flight, report.bookings);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsettled_saga_is_reported() {
    let world = settled(false).await;
    let booking_id = Uuid::now_v7();
    let started = SagaEvent::SagaStarted {
        booking_id,
        segments: vec![SagaSegment {
            flight_id: world.b,
            seats: 1,
        }],
        amount: Money::usd(12_900),
        card_token: "tok_visa".into(),
    };
    world
        .append(format!("booking_saga-{booking_id}"), &started)
        .await;
    assert_eq!(
        world.violations().await,
        [Violation::SagaUnsettled {
            booking_id,
            stage: SagaStage::Reserving,
        }]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_of_the_saga_are_reported() {
    let world = settled(false).await;
    let process = <BookingSaga as AggregateType>::NAME;
    let (id, instance) = (Uuid::now_v7(), Uuid::now_v7());
    let due = Utc::now() - chrono::Duration::seconds(5);
    world
        .store
        .schedule_deadline(Deadline::new(process, id, instance, "payment-timeout", due))
        .await
        .unwrap();
    let claimed = world
        .store
        .claim_deadlines(process, Utc::now(), 10, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    world
        .store
        .fail_deadline(process, id, "provider down", None)
        .await
        .unwrap();

    let dead_letters = world
        .store
        .read_stream(&format!("booking-{}", world.confirmed), 1, 1)
        .await
        .unwrap()
        .remove(0);
    let event_id = dead_letters.event_id;
    world
        .store
        .add_dead_letters(
            process,
            vec![DeadLetter {
                event: dead_letters,
                error: Some("boom".into()),
                attempts: 3,
                retry_requested: false,
            }],
        )
        .await
        .unwrap();

    assert_eq!(
        world.violations().await,
        [
            Violation::DeadLetteredDeadline {
                instance,
                name: "payment-timeout".into(),
                attempts: 1,
                error: Some("provider down".into()),
            },
            Violation::DeadLetteredSagaEvent {
                event_id,
                event_type: "BookingRequested".into(),
                stream_id: format!("booking-{}", world.confirmed),
                error: Some("boom".into()),
            },
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_model_behind_the_log_is_reported() {
    let world = settled(false).await;
    let before = world.flights.flight(world.a).await.unwrap().unwrap();
    let price = Money::usd(9_900);
    world
        .append(
            format!("flight-{}", world.a),
            &FlightEvent::PriceChanged { price },
        )
        .await;
    let report = Checker::new(&world.store)
        .with_reads(world.flights.as_ref())
        .check()
        .await
        .unwrap();
    let expected = FlightView {
        price,
        ..before.clone()
    };
    assert_eq!(
        report.violations,
        [Violation::ReadModelDiffers {
            flight_id: world.a,
            expected: Box::new(expected),
            found: Some(Box::new(before)),
        }]
    );
    assert!(report.to_string().contains("1 violation:"), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_that_does_not_decode_is_reported() {
    let world = settled(false).await;
    let stream = format!("flight-{}", world.b);
    let odd = NewEvent {
        event_id: Uuid::now_v7(),
        event_type: "SeatsSold".into(),
        schema_version: 1,
        payload: json!({ "seats": 1 }).into(),
        metadata: Metadata::default(),
        tags: Vec::new(),
    };
    let done = world
        .store
        .append(&stream, ExpectedVersion::Any, vec![odd])
        .await
        .unwrap();
    let violations = world.violations().await;
    let [
        Violation::Undecodable {
            stream_id,
            stream_version,
            error,
        },
    ] = violations.as_slice()
    else {
        panic!("{violations:?}");
    };
    assert_eq!((stream_id, *stream_version), (&stream, done.stream_version));
    assert!(error.contains("SeatsSold"), "{error}");
}

/// A flight number no other flight of this test process has: a number
/// flies once a day.
fn next_number() -> crate::values::FlightNumber {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(100);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("AN{n}").parse().expect("a flight number")
}
