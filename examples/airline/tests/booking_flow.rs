//! The booking saga end to end on the in-memory store: seats, payment,
//! confirmation, compensation, overbooking and restarts.

use std::sync::Arc;
use std::time::Duration;

use airline::app::{Airline, BookingOrder, SeatsOn};
use airline::booking::{
    BookingStatus, Charge, Passenger, PaymentError, PaymentService, ResilientPayments,
    SimulatedPayments,
};
use airline::scheduling::ScheduleFlight;
use airline::values::Money;
use annals::memory::MemoryStore;
use annals::projection::{ProjectionRunner, RunnerOptions};
use annals::{CommandContext, EventFilter, EventStore, Position};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

struct World {
    airline: Airline<MemoryStore>,
    payments: SimulatedPayments,
    shutdown: CancellationToken,
}

impl World {
    fn new() -> Self {
        Self::on(MemoryStore::new(), SimulatedPayments::new())
    }

    /// A process on an existing store: a restart keeps the store, loses the tasks.
    fn on(store: MemoryStore, payments: SimulatedPayments) -> Self {
        let provider = ResilientPayments::new(payments.clone(), Duration::from_millis(500), 2);
        let airline = Airline::new(store, Arc::new(provider));
        let shutdown = CancellationToken::new();
        let saga = Arc::new(airline.saga());
        let options = RunnerOptions {
            idle_interval: Duration::from_millis(50),
            ..RunnerOptions::default()
        };
        let runner =
            ProjectionRunner::new(airline.store().clone(), Arc::clone(&saga)).with_options(options);
        let stop = shutdown.clone();
        tokio::spawn(async move { runner.run(stop).await });
        let stop = shutdown.clone();
        tokio::spawn(async move { saga.run_deadlines(Duration::from_millis(50), stop).await });
        Self {
            airline,
            payments,
            shutdown,
        }
    }

    async fn flight(&self, seats: u32) -> Uuid {
        let id = Uuid::now_v7();
        let command = ScheduleFlight {
            flight_id: id,
            flight_number: next_number(),
            from: "JFK".parse().unwrap(),
            to: "LHR".parse().unwrap(),
            departure: "2026-12-01T18:00:00Z".parse().unwrap(),
            arrival: "2026-12-02T06:00:00Z".parse().unwrap(),
            seats,
            price: Money::usd(45000),
        };
        self.airline
            .schedule_flight(command, CommandContext::default())
            .await
            .unwrap();
        id
    }

    async fn book(&self, flights: &[(Uuid, u32)], card: &str) -> Uuid {
        let request = BookingOrder {
            passenger: Passenger {
                name: "Ada Lovelace".into(),
                email: "ada@example.com".into(),
            },
            segments: flights
                .iter()
                .map(|&(flight_id, seats)| SeatsOn { flight_id, seats })
                .collect(),
            card_token: card.into(),
        };
        self.airline
            .request_booking(request, CommandContext::default())
            .await
            .unwrap()
            .id
    }

    async fn settled(&self, booking: Uuid) -> airline::app::BookingView {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let view = self.airline.booking(booking).await.unwrap();
            if view.status != BookingStatus::Pending {
                // Let compensation finish its last commands.
                tokio::time::sleep(Duration::from_millis(200)).await;
                return self.airline.booking(booking).await.unwrap();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "booking {booking} still pending"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn seats_left(&self, flight: Uuid) -> u32 {
        self.airline
            .flights()
            .load(flight)
            .await
            .unwrap()
            .state
            .seats_available()
    }

    async fn types_in(&self, stream: &str) -> Vec<String> {
        let events = self
            .airline
            .store()
            .read_stream(stream, 1, 1000)
            .await
            .unwrap();
        events.into_iter().map(|e| e.event_type).collect()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paid_booking_is_confirmed_and_holds_its_seats() {
    let w = World::new();
    let (a, b) = (w.flight(10).await, w.flight(10).await);
    let booking = w.book(&[(a, 2), (b, 1)], "tok_visa").await;
    let view = w.settled(booking).await;
    assert_eq!(view.status, BookingStatus::Confirmed, "{view:?}");
    assert_eq!(view.total, Money::usd(45000 * 3));
    assert_eq!((w.seats_left(a).await, w.seats_left(b).await), (8, 9));
    let charge = w.payments.charge_of(booking).await.unwrap();
    assert_eq!(
        charge,
        Some(Charge {
            amount: Money::usd(135000),
            refunded: false
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declined_card_cancels_the_booking_and_frees_the_seats() {
    let w = World::new();
    let (a, b) = (w.flight(10).await, w.flight(10).await);
    let booking = w.book(&[(a, 2), (b, 3)], "tok_declined").await;
    let view = w.settled(booking).await;
    assert_eq!(view.status, BookingStatus::Cancelled);
    assert!(
        view.reason.as_deref().unwrap_or("").contains("declined"),
        "{view:?}"
    );
    assert_eq!((w.seats_left(a).await, w.seats_left(b).await), (10, 10));
    // Every compensation step is in the log, in reverse order of the forward steps.
    let saga = w.types_in(&format!("booking_saga-{booking}")).await;
    assert!(
        saga.contains(&"CompensationStarted".to_string()),
        "{saga:?}"
    );
    for flight in [a, b] {
        assert_eq!(
            w.types_in(&format!("flight-{flight}")).await,
            ["FlightScheduled", "SeatsReserved", "SeatsReleased"]
        );
    }
    assert_eq!(
        w.types_in(&format!("booking-{booking}")).await,
        ["BookingRequested", "BookingCancelled"]
    );
    assert_eq!(w.payments.charge_of(booking).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_payment_provider_times_out_and_compensates() {
    let w = World::new();
    let flight = w.flight(5).await;
    let started = tokio::time::Instant::now();
    let booking = w.book(&[(flight, 2)], "tok_timeout").await;
    let view = w.settled(booking).await;
    assert_eq!(view.status, BookingStatus::Cancelled);
    assert!(
        view.reason.as_deref().unwrap_or("").contains("timed out"),
        "{view:?}"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "the timeout fired early"
    );
    assert_eq!(w.seats_left(flight).await, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flaky_provider_is_retried() {
    let w = World::new();
    let flight = w.flight(5).await;
    w.payments.fail_next(2);
    let booking = w.book(&[(flight, 1)], "tok_visa").await;
    assert_eq!(w.settled(booking).await.status, BookingStatus::Confirmed);
    assert!(w.payments.calls() >= 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_seat_goes_to_exactly_one_of_twenty() {
    let w = Arc::new(World::new());
    let flight = w.flight(1).await;
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let w = Arc::clone(&w);
        tasks.push(tokio::spawn(async move {
            w.book(&[(flight, 1)], "tok_visa").await
        }));
    }
    let mut bookings = Vec::new();
    for task in tasks {
        bookings.push(task.await.unwrap());
    }
    let mut confirmed = 0;
    for booking in bookings {
        match w.settled(booking).await.status {
            BookingStatus::Confirmed => confirmed += 1,
            BookingStatus::Cancelled => {}
            other => panic!("booking ended {other:?}"),
        }
    }
    assert_eq!(confirmed, 1);
    assert_eq!(w.seats_left(flight).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saga_stopped_while_waiting_for_payment_times_out_after_a_restart() {
    let store = MemoryStore::new();
    let payments = SimulatedPayments::new();
    let first = World::on(store.clone(), payments.clone());
    let flight = first.flight(3).await;
    // Payments hang: the saga dies between "seats held" and "paid".
    payments.set_delay(Duration::from_secs(60));
    let booking = first.book(&[(flight, 1)], "tok_visa").await;
    let saga_stream = format!("booking_saga-{booking}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !first
        .types_in(&saga_stream)
        .await
        .contains(&"PaymentRequested".to_string())
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "saga never asked for payment"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(first);
    // The dead process's charge gives up after its three timed-out attempts;
    // then the provider is healthy again, so the refund can go through.
    while payments.calls() < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "charge attempts never ended"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    payments.set_delay(Duration::ZERO);

    // The deadline was stored: the new process fires it and compensates.
    let second = World::on(store, payments);
    let view = second.settled(booking).await;
    assert_eq!(view.status, BookingStatus::Cancelled, "{view:?}");
    assert!(
        view.reason.as_deref().unwrap_or("").contains("timed out"),
        "{view:?}"
    );
    assert_eq!(second.seats_left(flight).await, 3);
    let all = second
        .airline
        .store()
        .read_all(Position::START, 10_000, &EventFilter::all())
        .await
        .unwrap();
    let count = |t: &str| all.iter().filter(|e| e.event_type == t).count();
    assert_eq!(
        count("SeatsReserved"),
        1,
        "seats reserved twice after the restart"
    );
    assert_eq!(
        count("PaymentRequested"),
        1,
        "payment requested twice after the restart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_booking_made_while_the_saga_was_down_completes_when_it_is_back() {
    let store = MemoryStore::new();
    let payments = SimulatedPayments::new();
    let provider = ResilientPayments::new(payments.clone(), Duration::from_millis(500), 2);
    let offline = Airline::new(store.clone(), Arc::new(provider));
    let flight = Uuid::now_v7();
    offline
        .schedule_flight(
            ScheduleFlight {
                flight_id: flight,
                flight_number: "AN7".parse().unwrap(),
                from: "SFO".parse().unwrap(),
                to: "SEA".parse().unwrap(),
                departure: "2026-12-01T08:00:00Z".parse().unwrap(),
                arrival: "2026-12-01T10:00:00Z".parse().unwrap(),
                seats: 4,
                price: Money::usd(9900),
            },
            CommandContext::default(),
        )
        .await
        .unwrap();
    let request = BookingOrder {
        passenger: Passenger {
            name: "Grace Hopper".into(),
            email: "grace@example.com".into(),
        },
        segments: vec![SeatsOn {
            flight_id: flight,
            seats: 2,
        }],
        card_token: "tok_visa".into(),
    };
    let booking = offline
        .request_booking(request, CommandContext::default())
        .await
        .unwrap()
        .id;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        offline.booking(booking).await.unwrap().status,
        BookingStatus::Pending
    );

    let online = World::on(store, payments);
    assert_eq!(
        online.settled(booking).await.status,
        BookingStatus::Confirmed
    );
    assert_eq!(online.seats_left(flight).await, 2);
}

/// A saga that reads the log late (a backlog) still gives the payment
/// provider its whole timeout: the deadline runs from when the saga asks for
/// payment, not from when the seats it waited for were reserved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_saga_times_payments_from_when_it_asks() {
    use annals::projection::ProjectionStore;
    use chrono::Utc;

    let store = MemoryStore::new();
    let payments = SimulatedPayments::new();
    let provider = ResilientPayments::new(payments.clone(), Duration::from_millis(500), 2);
    let airline = Airline::new(store.clone(), Arc::new(provider));
    let world = World {
        airline: airline.clone(),
        payments,
        shutdown: CancellationToken::new(),
    };
    let flight = world.flight(3).await;
    let booking = world.book(&[(flight, 1)], "tok_visa").await;
    let saga = airline.saga();
    let read = |event_type: &'static str| {
        let store = store.clone();
        async move {
            store
                .read_all(Position::START, 1_000, &EventFilter::all())
                .await
                .unwrap()
                .into_iter()
                .find(|e| e.event_type == event_type)
                .unwrap_or_else(|| panic!("no {event_type} in the log"))
        }
    };
    saga.handle_event(&read("BookingRequested").await)
        .await
        .unwrap();
    // The seats were reserved an hour before the saga gets to read it.
    let mut reserved = read("SeatsReserved").await;
    reserved.recorded_at -= chrono::Duration::hours(1);
    let asked = Utc::now();
    saga.handle_event(&reserved).await.unwrap();

    let later = store.deadlines("booking_saga", 10).await.unwrap();
    assert_eq!(later.len(), 1, "{later:?}");
    assert_eq!(later[0].instance, booking);
    assert!(
        later[0].due_at >= asked + airline::booking::PAYMENT_TIMEOUT,
        "{later:?}"
    );
    world.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulated_provider_on_postgres_refunds_what_it_charged_before_a_restart() {
    let Some(pg) = annals_testkit::postgres().await else {
        return;
    };
    let (paid, never) = (Uuid::now_v7(), Uuid::now_v7());
    {
        let before = SimulatedPayments::on_postgres(pg.pool().clone())
            .await
            .unwrap();
        before
            .charge(paid, Money::usd(4200), "tok_visa")
            .await
            .unwrap();
        // Charging again charges once.
        before
            .charge(paid, Money::usd(4200), "tok_visa")
            .await
            .unwrap();
    } // the process goes away

    let after = SimulatedPayments::on_postgres(pg.pool().clone())
        .await
        .unwrap();
    assert_eq!(after.refund(paid).await, Ok(Money::usd(4200)));
    assert_eq!(after.refund(paid).await, Ok(Money::usd(4200)), "idempotent");
    assert_eq!(
        after.charge_of(paid).await.unwrap(),
        Some(Charge {
            amount: Money::usd(4200),
            refunded: true
        })
    );
    // Nothing charged: an answer the saga handles, never a silent skip.
    assert_eq!(
        after.refund(never).await,
        Err(PaymentError::NotCharged(never))
    );
    pg.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_of_a_charge_that_never_happened_is_recorded_by_the_saga() {
    let w = World::new();
    let flight = w.flight(4).await;
    let booking = w.book(&[(flight, 1)], "tok_timeout").await;
    let view = w.settled(booking).await;
    assert_eq!(view.status, BookingStatus::Cancelled);
    let saga = w.types_in(&format!("booking_saga-{booking}")).await;
    assert!(saga.contains(&"NothingCharged".to_string()), "{saga:?}");
    assert_eq!(w.seats_left(flight).await, 4);
}

/// A flight number no other flight of this test process has: a number
/// flies once a day.
fn next_number() -> airline::values::FlightNumber {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(100);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("AN{n}").parse().expect("a flight number")
}
