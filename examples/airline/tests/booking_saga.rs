//! The booking saga's decisions, without a store: given its history, an
//! input (an event from another context, a deadline, a refused command)
//! yields saga events, and each saga event asks for commands and deadlines.
//!
//! Inputs are built from the other contexts' own event types and encodings
//! (`BookingEvent`, `FlightEvent::SeatsReserved`, `PaymentEvent`), so a change
//! to what they write that the saga does not read shows up here.

use airline::booking::{
    BookingEvent, BookingSaga, PAYMENT_TIMEOUT, Passenger, PaymentEvent, SagaCommand, SagaEvent,
    SagaStage, Segment,
};
use airline::scheduling::FlightEvent;
use airline::values::Money;
use annals::process::{Due, Input, ProcessManager, Trigger};
use annals::testing::given;
use annals::{DomainEvent, Metadata, Payload, Position, RecordedEvent};
use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::json;
use uuid::Uuid;

const PAYMENT_DEADLINE: &str = "payment-timeout";

fn at(seconds: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 6, 1, 9, 0, 0).unwrap() + Duration::seconds(seconds)
}

/// An event as the log hands it to the saga.
fn recorded(
    stream: String,
    event_type: &str,
    payload: impl Into<Payload>,
    seconds: i64,
) -> RecordedEvent {
    RecordedEvent {
        event_id: Uuid::now_v7(),
        stream_id: stream,
        stream_version: 1,
        position: Position::new(1, 1),
        event_type: event_type.into(),
        schema_version: 1,
        payload: payload.into(),
        metadata: Metadata::default(),
        tags: Vec::new(),
        recorded_at: at(seconds),
    }
}

fn encoded(stream: String, event: &impl DomainEvent, seconds: i64) -> RecordedEvent {
    let mut e = recorded(stream, event.event_type(), event.encode().unwrap(), seconds);
    e.schema_version = event.schema_version();
    e
}

fn on(event: RecordedEvent) -> Trigger<SagaCommand> {
    Trigger(Input::Event(event))
}

/// A booking on two flights (two seats, then one), paid with `tok_visa`.
struct Trip {
    booking: Uuid,
    first: Uuid,
    second: Uuid,
}

impl Trip {
    fn new() -> Self {
        Self {
            booking: Uuid::now_v7(),
            first: Uuid::now_v7(),
            second: Uuid::now_v7(),
        }
    }

    fn total(&self) -> Money {
        Money::usd(3 * 45000)
    }

    fn requested(&self) -> RecordedEvent {
        let segment = |flight_id, seats| Segment {
            flight_id,
            seats,
            price: Money::usd(45000),
        };
        let event = BookingEvent::BookingRequested {
            booking_id: self.booking,
            passenger: Passenger {
                name: "Ada Lovelace".into(),
                email: "ada@example.com".into(),
            },
            segments: vec![segment(self.first, 2), segment(self.second, 1)],
            total: self.total(),
            card_token: "tok_visa".into(),
        };
        encoded(format!("booking-{}", self.booking), &event, 0)
    }

    fn seats_reserved(&self, flight: Uuid, seats: u32, seconds: i64) -> RecordedEvent {
        let event = FlightEvent::SeatsReserved {
            booking_id: self.booking,
            seats,
        };
        encoded(format!("flight-{flight}"), &event, seconds)
    }

    fn paid(&self) -> RecordedEvent {
        let event = PaymentEvent::PaymentTaken {
            booking_id: self.booking,
            payment_id: "pay_1".into(),
            amount: self.total(),
        };
        encoded(format!("payment-{}", self.booking), &event, 2)
    }

    fn declined(&self) -> RecordedEvent {
        let event = PaymentEvent::PaymentDeclined {
            booking_id: self.booking,
            reason: "card declined".into(),
        };
        encoded(format!("payment-{}", self.booking), &event, 2)
    }

    fn confirmed(&self) -> RecordedEvent {
        encoded(
            format!("booking-{}", self.booking),
            &BookingEvent::BookingConfirmed,
            3,
        )
    }

    fn cancelled(&self, reason: &str) -> RecordedEvent {
        let event = BookingEvent::BookingCancelled {
            reason: reason.into(),
        };
        encoded(format!("booking-{}", self.booking), &event, 4)
    }

    fn started(&self) -> SagaEvent {
        SagaEvent::SagaStarted {
            booking_id: self.booking,
            segments: vec![
                airline::booking::SagaSegment {
                    flight_id: self.first,
                    seats: 2,
                },
                airline::booking::SagaSegment {
                    flight_id: self.second,
                    seats: 1,
                },
            ],
            amount: self.total(),
            card_token: "tok_visa".into(),
        }
    }

    fn payment_requested(&self) -> SagaEvent {
        SagaEvent::PaymentRequested {
            booking_id: self.booking,
            amount: self.total(),
            card_token: "tok_visa".into(),
        }
    }

    /// Both flights held, the card being charged.
    fn paying(&self) -> Vec<SagaEvent> {
        vec![
            self.started(),
            SagaEvent::SeatsHeld {
                flight_id: self.first,
            },
            SagaEvent::SeatsHeld {
                flight_id: self.second,
            },
            self.payment_requested(),
        ]
    }

    fn confirmed_history(&self) -> Vec<SagaEvent> {
        let mut history = self.paying();
        history.push(SagaEvent::PaymentSucceeded {
            booking_id: self.booking,
            payment_id: "pay_1".into(),
        });
        history.push(SagaEvent::SagaConfirmed);
        history
    }

    fn reserve(&self, flight_id: Uuid, seats: u32) -> SagaCommand {
        SagaCommand::ReserveSeats {
            flight_id,
            booking_id: self.booking,
            seats,
        }
    }

    fn release(&self, flight_id: Uuid) -> SagaCommand {
        SagaCommand::ReleaseSeats {
            flight_id,
            booking_id: self.booking,
        }
    }

    fn refund(&self) -> SagaCommand {
        SagaCommand::RefundPayment {
            booking_id: self.booking,
        }
    }

    fn cancel(&self, reason: &str) -> SagaCommand {
        SagaCommand::CancelBooking {
            booking_id: self.booking,
            reason: reason.into(),
        }
    }
}

/// The commands the saga events ask for, in order.
fn commands(events: &[SagaEvent]) -> Vec<SagaCommand> {
    events
        .iter()
        .flat_map(|e| BookingSaga::effects(e).commands)
        .collect()
}

fn deadlines(events: &[SagaEvent]) -> Vec<(String, Due)> {
    events
        .iter()
        .flat_map(|e| BookingSaga::effects(e).deadlines)
        .collect()
}

fn stage(history: Vec<SagaEvent>) -> SagaStage {
    given::<BookingSaga>(history).state().stage
}

#[test]
fn every_input_belongs_to_its_booking() {
    let trip = Trip::new();
    for event in [
        trip.requested(),
        trip.seats_reserved(trip.first, 2, 1),
        trip.paid(),
        trip.declined(),
        trip.confirmed(),
        trip.cancelled("changed plans"),
    ] {
        assert_eq!(
            BookingSaga::correlate(&event),
            Some(trip.booking),
            "{} of {}",
            event.event_type,
            event.stream_id
        );
        assert!(
            BookingSaga::filter().matches(&event.event_type),
            "{} is filtered out",
            event.event_type
        );
    }
    // Events the saga does not need are not read at all.
    let released = FlightEvent::SeatsReleased {
        booking_id: trip.booking,
        seats: 1,
    };
    assert!(!BookingSaga::filter().matches(released.event_type()));
}

#[test]
fn happy_path_reserves_both_flights_takes_payment_and_confirms() {
    let trip = Trip::new();

    // Requested: reserve seats on both flights.
    let state = given::<BookingSaga>([])
        .when(on(trip.requested()))
        .then([trip.started()]);
    assert_eq!(state.stage, SagaStage::Reserving);
    assert_eq!(
        commands(&[trip.started()]),
        [trip.reserve(trip.first, 2), trip.reserve(trip.second, 1)]
    );
    assert!(deadlines(&[trip.started()]).is_empty());

    // The first flight holds its seats: wait for the other.
    let held_first = SagaEvent::SeatsHeld {
        flight_id: trip.first,
    };
    given::<BookingSaga>([trip.started()])
        .when(on(trip.seats_reserved(trip.first, 2, 1)))
        .then([held_first.clone()]);
    assert!(commands(std::slice::from_ref(&held_first)).is_empty());

    // The second one too: charge the card, and give up 3 s after the last hold.
    let held_second = SagaEvent::SeatsHeld {
        flight_id: trip.second,
    };
    let state = given::<BookingSaga>([trip.started(), held_first.clone()])
        .when(on(trip.seats_reserved(trip.second, 1, 1)))
        .then([held_second.clone(), trip.payment_requested()]);
    assert_eq!(state.stage, SagaStage::Paying);
    assert_eq!(
        commands(&[trip.payment_requested()]),
        [SagaCommand::TakePayment {
            booking_id: trip.booking,
            amount: trip.total(),
            card_token: "tok_visa".into(),
        }]
    );
    assert_eq!(
        deadlines(&[trip.payment_requested()]),
        [(PAYMENT_DEADLINE.to_string(), Due::After(PAYMENT_TIMEOUT))]
    );

    // Paid: confirm the booking.
    let succeeded = SagaEvent::PaymentSucceeded {
        booking_id: trip.booking,
        payment_id: "pay_1".into(),
    };
    let state = given::<BookingSaga>(trip.paying())
        .when(on(trip.paid()))
        .then([succeeded.clone()]);
    assert_eq!(state.stage, SagaStage::Confirming);
    assert_eq!(
        commands(std::slice::from_ref(&succeeded)),
        [SagaCommand::ConfirmBooking {
            booking_id: trip.booking
        }]
    );

    // Confirmed: done.
    let mut history = trip.paying();
    history.push(succeeded);
    let state = given::<BookingSaga>(history.clone())
        .when(on(trip.confirmed()))
        .then([SagaEvent::SagaConfirmed]);
    assert_eq!(state.stage, SagaStage::Confirmed);
    assert!(commands(&[SagaEvent::SagaConfirmed]).is_empty());

    // The payment deadline, once paid, changes nothing.
    for history in [history, trip.confirmed_history()] {
        given::<BookingSaga>(history)
            .when(Trigger(Input::Deadline {
                name: PAYMENT_DEADLINE.into(),
                due_at: at(4),
            }))
            .then([]);
    }
}

#[test]
fn the_saga_reads_what_the_other_contexts_write() {
    // The payloads spelled out, as a reader of the log sees them.
    let booking = Uuid::now_v7();
    let flight = Uuid::now_v7();
    let requested = recorded(
        format!("booking-{booking}"),
        "BookingRequested",
        json!({
            "booking_id": booking,
            "passenger": { "name": "Ada Lovelace", "email": "ada@example.com" },
            "segments": [{
                "flight_id": flight,
                "seats": 2,
                "price": { "amount": 45000, "currency": "USD" }
            }],
            "total": { "amount": 90000, "currency": "USD" },
            "card_token": "tok_visa"
        }),
        0,
    );
    let started = SagaEvent::SagaStarted {
        booking_id: booking,
        segments: vec![airline::booking::SagaSegment {
            flight_id: flight,
            seats: 2,
        }],
        amount: Money::usd(90000),
        card_token: "tok_visa".into(),
    };
    given::<BookingSaga>([])
        .when(on(requested.clone()))
        .then([started.clone()]);
    // The real encoding is the same JSON.
    let trip_encoding = BookingEvent::BookingRequested {
        booking_id: booking,
        passenger: Passenger {
            name: "Ada Lovelace".into(),
            email: "ada@example.com".into(),
        },
        segments: vec![Segment {
            flight_id: flight,
            seats: 2,
            price: Money::usd(45000),
        }],
        total: Money::usd(90000),
        card_token: "tok_visa".into(),
    }
    .encode()
    .unwrap();
    assert_eq!(requested.payload, trip_encoding);

    let reserved = recorded(
        format!("flight-{flight}"),
        "SeatsReserved",
        json!({ "booking_id": booking, "seats": 2 }),
        1,
    );
    assert_eq!(BookingSaga::correlate(&reserved), Some(booking));
    let events = given::<BookingSaga>([started.clone()])
        .when(on(reserved))
        .outcome()
        .unwrap();
    assert!(
        matches!(&events[..], [SagaEvent::SeatsHeld { flight_id }, SagaEvent::PaymentRequested { amount, .. }]
            if *flight_id == flight && *amount == Money::usd(90000)),
        "{events:?}"
    );

    let mut history = vec![started];
    history.extend(events);
    let taken = recorded(
        format!("payment-{booking}"),
        "PaymentTaken",
        json!({
            "booking_id": booking,
            "payment_id": "pay_42",
            "amount": { "amount": 90000, "currency": "USD" }
        }),
        2,
    );
    assert_eq!(BookingSaga::correlate(&taken), Some(booking));
    given::<BookingSaga>(history.clone())
        .when(on(taken))
        .then([SagaEvent::PaymentSucceeded {
            booking_id: booking,
            payment_id: "pay_42".into(),
        }]);

    let declined = recorded(
        format!("payment-{booking}"),
        "PaymentDeclined",
        json!({ "booking_id": booking, "reason": "insufficient funds" }),
        2,
    );
    let events = given::<BookingSaga>(history)
        .when(on(declined))
        .outcome()
        .unwrap();
    assert!(
        matches!(&events[..], [SagaEvent::CompensationStarted { reason, .. }] if reason.contains("insufficient funds")),
        "{events:?}"
    );
}

#[test]
fn a_refused_reservation_releases_held_seats_in_reverse_and_cancels() {
    let trip = Trip::new();
    let third = Uuid::now_v7();
    let mut started = trip.started();
    if let SagaEvent::SagaStarted { segments, .. } = &mut started {
        segments.push(airline::booking::SagaSegment {
            flight_id: third,
            seats: 1,
        });
    }
    let history = vec![
        started,
        SagaEvent::SeatsHeld {
            flight_id: trip.first,
        },
        SagaEvent::SeatsHeld {
            flight_id: trip.second,
        },
    ];
    let refused = Trigger(Input::Rejected {
        command: trip.reserve(third, 1),
        reason: "only 0 seats left".into(),
    });
    let events = given::<BookingSaga>(history.clone())
        .when(refused)
        .outcome()
        .unwrap();
    let [
        SagaEvent::CompensationStarted {
            booking_id,
            reason,
            refund,
            release,
            cancel_booking,
        },
    ] = &events[..]
    else {
        panic!("expected one CompensationStarted, got {events:?}");
    };
    assert_eq!(*booking_id, trip.booking);
    assert!(reason.contains(&third.to_string()) && reason.contains("only 0 seats left"));
    assert!(!refund, "nothing was charged");
    assert_eq!(release, &[trip.second, trip.first], "last held first");
    assert!(cancel_booking);
    assert_eq!(
        commands(&events),
        [
            trip.release(trip.second),
            trip.release(trip.first),
            trip.cancel(reason)
        ]
    );

    // The cancellation comes back: done.
    let reason = reason.clone();
    let reason = &reason;
    let mut compensating = history;
    compensating.extend(events.clone());
    assert_eq!(stage(compensating.clone()), SagaStage::Compensating);
    let state = given::<BookingSaga>(compensating.clone())
        .when(on(trip.cancelled(reason)))
        .then([SagaEvent::SagaCancelled {
            reason: reason.clone(),
        }]);
    assert_eq!(state.stage, SagaStage::Cancelled);

    // A second refusal while compensating starts nothing new.
    given::<BookingSaga>(compensating)
        .when(Trigger(Input::Rejected {
            command: trip.reserve(trip.first, 2),
            reason: "late".into(),
        }))
        .then([]);

    // Refused before anything was held: only the cancellation.
    let events = given::<BookingSaga>([trip.started()])
        .when(Trigger(Input::Rejected {
            command: trip.reserve(trip.first, 2),
            reason: "flight cancelled".into(),
        }))
        .outcome()
        .unwrap();
    assert!(
        matches!(commands(&events)[..], [SagaCommand::CancelBooking { .. }]),
        "{events:?}"
    );
}

#[test]
fn a_declined_payment_releases_seats_and_cancels_without_refund() {
    let trip = Trip::new();
    let events = given::<BookingSaga>(trip.paying())
        .when(on(trip.declined()))
        .outcome()
        .unwrap();
    let [
        SagaEvent::CompensationStarted {
            reason,
            refund,
            release,
            cancel_booking,
            ..
        },
    ] = &events[..]
    else {
        panic!("expected one CompensationStarted, got {events:?}");
    };
    assert_eq!(reason, "payment failed: card declined");
    assert!(!refund);
    assert_eq!(release, &[trip.second, trip.first]);
    assert!(cancel_booking);
    let sent = commands(&events);
    assert_eq!(
        sent,
        [
            trip.release(trip.second),
            trip.release(trip.first),
            trip.cancel(reason)
        ]
    );
    assert!(
        !sent.contains(&trip.refund()),
        "no refund for a declined card"
    );

    // The timeout that was set for this payment no longer matters.
    let mut history = trip.paying();
    history.extend(events);
    given::<BookingSaga>(history)
        .when(Trigger(Input::Deadline {
            name: PAYMENT_DEADLINE.into(),
            due_at: at(4),
        }))
        .then([]);
}

#[test]
fn a_payment_timeout_refunds_releases_and_cancels() {
    let trip = Trip::new();
    let timeout = || {
        Trigger(Input::Deadline {
            name: PAYMENT_DEADLINE.into(),
            due_at: at(4),
        })
    };
    let events = given::<BookingSaga>(trip.paying())
        .when(timeout())
        .outcome()
        .unwrap();
    let [
        SagaEvent::CompensationStarted {
            reason,
            refund,
            cancel_booking,
            ..
        },
    ] = &events[..]
    else {
        panic!("expected one CompensationStarted, got {events:?}");
    };
    assert_eq!(reason, "payment timed out");
    assert!(refund, "the provider may have charged");
    assert!(cancel_booking);
    assert_eq!(
        commands(&events),
        [
            trip.refund(),
            trip.release(trip.second),
            trip.release(trip.first),
            trip.cancel("payment timed out"),
        ]
    );

    // Other deadlines, and the timeout outside Paying, do nothing.
    given::<BookingSaga>(trip.paying())
        .when(Trigger(Input::Deadline {
            name: "something-else".into(),
            due_at: at(4),
        }))
        .then([]);
    given::<BookingSaga>([trip.started()])
        .when(timeout())
        .then([]);

    // The payment lands after all: it is refunded.
    let mut history = trip.paying();
    history.extend(events);
    let late = given::<BookingSaga>(history.clone())
        .when(on(trip.paid()))
        .then([SagaEvent::LatePaymentRefunded {
            booking_id: trip.booking,
        }]);
    assert_eq!(late.stage, SagaStage::Compensating);
    assert_eq!(
        commands(&[SagaEvent::LatePaymentRefunded {
            booking_id: trip.booking
        }]),
        [trip.refund()]
    );
    // A late decline needs nothing.
    given::<BookingSaga>(history)
        .when(on(trip.declined()))
        .then([]);
}

#[test]
fn seats_reserved_after_compensation_are_released() {
    let trip = Trip::new();
    // The second flight refused while the first flight's answer was still on its way.
    let refusal = given::<BookingSaga>([trip.started()])
        .when(Trigger(Input::Rejected {
            command: trip.reserve(trip.second, 1),
            reason: "sold out".into(),
        }))
        .outcome()
        .unwrap();
    let mut history = vec![trip.started()];
    history.extend(refusal);
    let late = SagaEvent::LateSeatsReleased {
        booking_id: trip.booking,
        flight_id: trip.first,
    };
    given::<BookingSaga>(history.clone())
        .when(on(trip.seats_reserved(trip.first, 2, 2)))
        .then([late.clone()]);
    assert_eq!(
        commands(std::slice::from_ref(&late)),
        [trip.release(trip.first)]
    );

    // Also once the saga is over.
    history.push(SagaEvent::SagaCancelled {
        reason: "sold out".into(),
    });
    assert_eq!(stage(history.clone()), SagaStage::Cancelled);
    given::<BookingSaga>(history.clone())
        .when(on(trip.seats_reserved(trip.first, 2, 2)))
        .then([late]);
    // A cancellation after the end changes nothing.
    given::<BookingSaga>(history)
        .when(on(trip.cancelled("again")))
        .then([]);
}

#[test]
fn seats_for_other_flights_or_twice_are_ignored() {
    let trip = Trip::new();
    let held_first = SagaEvent::SeatsHeld {
        flight_id: trip.first,
    };
    given::<BookingSaga>([trip.started(), held_first.clone()])
        .when(on(trip.seats_reserved(trip.first, 2, 1)))
        .then([]);
    given::<BookingSaga>([trip.started()])
        .when(on(trip.seats_reserved(Uuid::now_v7(), 2, 1)))
        .then([]);
    // Paying already: a repeated hold asks for nothing.
    given::<BookingSaga>(trip.paying())
        .when(on(trip.seats_reserved(trip.second, 1, 1)))
        .then([]);
    // Before the booking is known, nothing happens.
    given::<BookingSaga>([])
        .when(on(trip.seats_reserved(trip.first, 2, 1)))
        .then([]);
    given::<BookingSaga>([]).when(on(trip.paid())).then([]);
}

#[test]
fn a_customer_cancel_after_confirmation_refunds_and_releases_but_does_not_cancel_again() {
    let trip = Trip::new();
    let events = given::<BookingSaga>(trip.confirmed_history())
        .when(on(trip.cancelled("changed plans")))
        .outcome()
        .unwrap();
    assert_eq!(
        events,
        [
            SagaEvent::CompensationStarted {
                booking_id: trip.booking,
                reason: "changed plans".into(),
                refund: true,
                release: vec![trip.second, trip.first],
                cancel_booking: false,
            },
            SagaEvent::SagaCancelled {
                reason: "changed plans".into()
            },
        ]
    );
    let sent = commands(&events);
    assert_eq!(
        sent,
        [
            trip.refund(),
            trip.release(trip.second),
            trip.release(trip.first)
        ]
    );
    assert!(
        !sent
            .iter()
            .any(|c| matches!(c, SagaCommand::CancelBooking { .. })),
        "the booking is already cancelled"
    );
    let mut history = trip.confirmed_history();
    history.extend(events);
    assert_eq!(stage(history), SagaStage::Cancelled);
}

#[test]
fn a_customer_cancel_before_payment_releases_without_refund() {
    let trip = Trip::new();
    let held_first = SagaEvent::SeatsHeld {
        flight_id: trip.first,
    };
    let events = given::<BookingSaga>([trip.started(), held_first])
        .when(on(trip.cancelled("changed plans")))
        .outcome()
        .unwrap();
    assert_eq!(commands(&events), [trip.release(trip.first)]);
    assert!(matches!(
        events.last(),
        Some(SagaEvent::SagaCancelled { .. })
    ));

    // While paying, the charge may go through: refund as well.
    let events = given::<BookingSaga>(trip.paying())
        .when(on(trip.cancelled("changed plans")))
        .outcome()
        .unwrap();
    assert_eq!(
        commands(&events),
        [
            trip.refund(),
            trip.release(trip.second),
            trip.release(trip.first)
        ]
    );
}
