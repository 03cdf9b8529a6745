//! The airline's invariants, checked against the whole log: seats, money,
//! settled bookings and sagas, and the flight read model.
//!
//! [`Checker`] reads every event ([`EventStore::read_all`](annals::EventStore::read_all), in pages), folds
//! flights, bookings, payments and booking sagas from them, and reports every
//! [`Violation`] it finds in a [`Report`]:
//!
//! - **seats**: on every flight, the seats reserved minus the seats released
//!   equal the seats of its confirmed bookings on that flight; a cancelled
//!   booking holds no seats on any flight;
//! - **money**: every charge of a cancelled booking is refunded, in the log
//!   (a `PaymentTaken` without its `PaymentRefunded`) and, when given the
//!   provider's ledger ([`Checker::with_payments`]), at the provider; a
//!   confirmed booking is paid and not refunded;
//! - **settled**: no booking is still pending, no booking saga is anywhere
//!   but `Confirmed` or `Cancelled`, and the saga has no dead-lettered
//!   deadlines and no dead letters;
//! - **read model**: when given the read side ([`Checker::with_reads`]),
//!   every flight folded from the log with [`FlightView::fold`] is what the
//!   read side answers for it;
//! - every event of the airline's streams decodes.
//!
//! The checks assume the system has settled: call it once every booking had
//! time to finish (tests do after their settle time; an operator runs
//! `airline check`). Bookings requested within [`Checker::in_flight_grace`]
//! of the check are skipped instead, with their seats.
//!
//! ```
//! use airline::invariants::Checker;
//! use annals::memory::MemoryStore;
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let store = MemoryStore::new();
//! let report = Checker::new(&store).check().await.unwrap();
//! assert!(report.is_ok(), "{report}");
//! # });
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use annals::projection::ProjectionStore;
use annals::{Aggregate, AggregateType, EventFilter, Position, RecordedEvent, StoreError};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use uuid::Uuid;

use crate::booking::{
    Booking, BookingEvent, BookingSaga, BookingStatus, Payment, PaymentError, PaymentEvent,
    SagaEvent, SagaStage, SimulatedPayments,
};
use crate::scheduling::{Flight, FlightEvent};
use crate::search::{FlightReads, FlightView, ReadError};
use crate::values::Money;

/// Events read per page of the log.
const PAGE: usize = 1000;
/// Flights asked of the read side at once.
const READS_IN_PARALLEL: usize = 8;
/// Most saga deadlines looked at.
const DEADLINES: usize = 100_000;

/// One broken invariant.
#[derive(Debug, Clone, PartialEq)]
pub enum Violation {
    /// A flight holds more or fewer seats than its confirmed bookings.
    FlightSeats {
        /// The flight.
        flight_id: Uuid,
        /// Seats reserved minus seats released, over its whole stream.
        held: i64,
        /// Seats of the confirmed bookings on it.
        confirmed: i64,
    },
    /// A cancelled booking still holds seats on a flight.
    CancelledHoldsSeats {
        /// The booking.
        booking_id: Uuid,
        /// The flight.
        flight_id: Uuid,
        /// Seats reserved minus seats released for it there.
        seats: i64,
    },
    /// The log records a charge of a cancelled booking and no refund.
    ChargeNotRefunded {
        /// The booking.
        booking_id: Uuid,
        /// What was charged.
        amount: Money,
    },
    /// The payment provider charged a cancelled booking and did not refund it.
    ProviderChargeNotRefunded {
        /// The booking.
        booking_id: Uuid,
        /// What the provider charged.
        amount: Money,
    },
    /// A confirmed booking has no charge standing in the log.
    ConfirmedNotPaid {
        /// The booking.
        booking_id: Uuid,
    },
    /// A booking is still pending after the settle time.
    BookingPending {
        /// The booking.
        booking_id: Uuid,
    },
    /// A booking saga is neither confirmed nor cancelled after the settle time.
    SagaUnsettled {
        /// The booking (the saga instance).
        booking_id: Uuid,
        /// Where it stopped.
        stage: SagaStage,
    },
    /// A deadline of the booking saga failed too often and waits for an operator.
    DeadLetteredDeadline {
        /// The saga instance.
        instance: Uuid,
        /// The deadline's name.
        name: String,
        /// Attempts made.
        attempts: u32,
        /// Why the last one failed.
        error: Option<String>,
    },
    /// An event the booking saga set aside (a dead letter).
    DeadLetteredSagaEvent {
        /// The event.
        event_id: Uuid,
        /// Its type.
        event_type: String,
        /// Its stream.
        stream_id: String,
        /// Why it failed (`None`: it waits behind an earlier one).
        error: Option<String>,
    },
    /// The read side's flight is not the one folded from the log.
    ReadModelDiffers {
        /// The flight.
        flight_id: Uuid,
        /// The fold of its events.
        expected: Box<FlightView>,
        /// What the read side answered (`None`: no such flight).
        found: Option<Box<FlightView>>,
    },
    /// An event of the airline's streams does not decode.
    Undecodable {
        /// Its stream.
        stream_id: String,
        /// Its version there.
        stream_version: u64,
        /// Why.
        error: String,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::FlightSeats {
                flight_id,
                held,
                confirmed,
            } => write!(
                f,
                "flight {flight_id} holds {held} seats (reserved minus released) but its \
                 confirmed bookings have {confirmed}"
            ),
            Violation::CancelledHoldsSeats {
                booking_id,
                flight_id,
                seats,
            } => write!(
                f,
                "cancelled booking {booking_id} still holds {seats} seats on flight {flight_id}"
            ),
            Violation::ChargeNotRefunded { booking_id, amount } => write!(
                f,
                "cancelled booking {booking_id} was charged {amount} and the log has no refund"
            ),
            Violation::ProviderChargeNotRefunded { booking_id, amount } => write!(
                f,
                "the payment provider charged cancelled booking {booking_id} {amount} and did \
                 not refund it"
            ),
            Violation::ConfirmedNotPaid { booking_id } => write!(
                f,
                "confirmed booking {booking_id} has no charge standing in the log"
            ),
            Violation::BookingPending { booking_id } => {
                write!(f, "booking {booking_id} is still pending")
            }
            Violation::SagaUnsettled { booking_id, stage } => write!(
                f,
                "the saga of booking {booking_id} is unsettled (stage {stage:?})"
            ),
            Violation::DeadLetteredDeadline {
                instance,
                name,
                attempts,
                error,
            } => write!(
                f,
                "deadline {name} of saga {instance} is dead-lettered after {attempts} attempts: {}",
                error.as_deref().unwrap_or("no error recorded")
            ),
            Violation::DeadLetteredSagaEvent {
                event_id,
                event_type,
                stream_id,
                error,
            } => write!(
                f,
                "the saga dead-lettered {event_type} {event_id} of {stream_id}: {}",
                error
                    .as_deref()
                    .unwrap_or("waiting behind an earlier dead letter")
            ),
            Violation::ReadModelDiffers {
                flight_id,
                expected,
                found,
            } => match found {
                Some(found) => write!(
                    f,
                    "the read side's flight {flight_id} differs from the log's: \
                     expected {expected:?}, found {found:?}"
                ),
                None => write!(
                    f,
                    "the read side has no flight {flight_id}; the log has {expected:?}"
                ),
            },
            Violation::Undecodable {
                stream_id,
                stream_version,
                error,
            } => write!(
                f,
                "event {stream_version} of {stream_id} does not decode: {error}"
            ),
        }
    }
}

/// What a check found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    /// Events read from the log.
    pub events: u64,
    /// Flights in the log.
    pub flights: usize,
    /// Bookings in the log, the skipped ones included.
    pub bookings: usize,
    /// Bookings skipped because they were requested within the grace period.
    pub in_flight: usize,
    /// Every violation found: undecodable events, seats, money, the provider,
    /// unsettled bookings and sagas, the saga's dead letters, the read side;
    /// each kind by id.
    pub violations: Vec<Violation>,
}

impl Report {
    /// True when nothing is broken.
    pub fn is_ok(&self) -> bool {
        self.violations.is_empty()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "checked {} events: {} flights, {} bookings",
            self.events, self.flights, self.bookings
        )?;
        if self.in_flight > 0 {
            write!(f, " ({} in flight, skipped)", self.in_flight)?;
        }
        match self.violations.len() {
            0 => write!(f, "; no violations"),
            n => {
                write!(f, "; {n} violation{}:", if n == 1 { "" } else { "s" })?;
                for violation in &self.violations {
                    write!(f, "\n  - {violation}")?;
                }
                Ok(())
            }
        }
    }
}

/// Why a check could not be completed (nothing is known about the invariants).
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The event store failed.
    #[error("cannot read the log: {0}")]
    Store(#[from] StoreError),
    /// The payment provider's ledger could not be read.
    #[error("cannot read the payment provider's ledger: {0}")]
    Payments(#[from] PaymentError),
    /// The read side could not be read.
    #[error("cannot read the read side: {0}")]
    Reads(#[from] ReadError),
}

/// Checks the airline's invariants against a store's log (see the
/// [module documentation](self)).
pub struct Checker<'a, S> {
    store: &'a S,
    payments: Option<&'a SimulatedPayments>,
    reads: Option<&'a dyn FlightReads>,
    grace: Duration,
}

impl<'a, S: ProjectionStore> Checker<'a, S> {
    /// Checks the log of `store`, and the booking saga's deadlines and dead
    /// letters there.
    pub fn new(store: &'a S) -> Self {
        Self {
            store,
            payments: None,
            reads: None,
            grace: Duration::ZERO,
        }
    }

    /// Also checks that the provider refunded every charge of a cancelled booking.
    pub fn with_payments(mut self, payments: &'a SimulatedPayments) -> Self {
        self.payments = Some(payments);
        self
    }

    /// Also checks that the read side equals a clean rebuild from the log.
    /// Let it catch up first: a read side behind the log differs from it.
    pub fn with_reads(mut self, reads: &'a dyn FlightReads) -> Self {
        self.reads = Some(reads);
        self
    }

    /// Skips the bookings requested less than `grace` before the check
    /// (they may still be under way), and their seats. Zero (the default)
    /// checks every booking.
    pub fn in_flight_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Reads the whole log and reports every violation.
    pub async fn check(&self) -> Result<Report, CheckError> {
        let started = Utc::now();
        let mut world = World::default();
        let mut after = Position::START;
        loop {
            let page = self
                .store
                .read_all(after, PAGE, &EventFilter::all())
                .await?;
            for event in &page {
                world.record(event);
            }
            match page.last() {
                Some(last) if page.len() == PAGE => after = last.position,
                Some(_) | None => break,
            }
        }
        let settled_before = chrono::Duration::from_std(self.grace)
            .ok()
            .and_then(|grace| started.checked_sub_signed(grace))
            .unwrap_or(started);

        let mut violations = world.decode_errors.clone();
        violations.extend(world.seats(settled_before));
        violations.extend(world.money(settled_before));
        if let Some(payments) = self.payments {
            violations.extend(world.provider(payments, settled_before).await?);
        }
        violations.extend(world.settled(settled_before));
        violations.extend(self.saga_dead_letters().await?);
        if let Some(reads) = self.reads {
            violations.extend(world.read_side(reads).await?);
        }
        Ok(Report {
            events: world.events,
            flights: world.flights.len(),
            bookings: world.bookings.len(),
            in_flight: world
                .bookings
                .values()
                .filter(|b| !b.settled_by(settled_before))
                .count(),
            violations,
        })
    }

    async fn saga_dead_letters(&self) -> Result<Vec<Violation>, CheckError> {
        let process = <BookingSaga as AggregateType>::NAME;
        let mut violations: Vec<Violation> = self
            .store
            .deadlines(process, DEADLINES)
            .await?
            .into_iter()
            .filter(|d| d.dead_lettered)
            .map(|d| Violation::DeadLetteredDeadline {
                instance: d.instance,
                name: d.name,
                attempts: d.attempts,
                error: d.error,
            })
            .collect();
        violations.extend(
            self.store
                .dead_letters(process)
                .await?
                .into_iter()
                .map(|p| Violation::DeadLetteredSagaEvent {
                    event_id: p.event.event_id,
                    event_type: p.event.event_type,
                    stream_id: p.event.stream_id,
                    error: p.error,
                }),
        );
        Ok(violations)
    }
}

/// A flight as folded from the log.
#[derive(Default)]
struct FlightFacts {
    view: Option<FlightView>,
    /// Seats reserved minus released, per booking.
    held: BTreeMap<Uuid, i64>,
}

/// A booking as folded from the log.
#[derive(Default)]
struct BookingFacts {
    state: Booking,
    requested_at: Option<DateTime<Utc>>,
}

impl BookingFacts {
    /// Requested before `settled_before` (so it had time to settle), or
    /// never requested at all (events without a request are checked too).
    fn settled_by(&self, settled_before: DateTime<Utc>) -> bool {
        self.requested_at.is_none_or(|at| at < settled_before)
    }
}

/// Everything the checks need, folded from the log in one pass.
#[derive(Default)]
struct World {
    events: u64,
    flights: BTreeMap<Uuid, FlightFacts>,
    bookings: BTreeMap<Uuid, BookingFacts>,
    payments: BTreeMap<Uuid, Payment>,
    sagas: BTreeMap<Uuid, BookingSaga>,
    decode_errors: Vec<Violation>,
}

/// The id of `stream` when it is `<name>-<uuid>`.
fn id_in(stream: &str, name: &str) -> Option<Uuid> {
    stream.strip_prefix(name)?.strip_prefix('-')?.parse().ok()
}

impl World {
    fn record(&mut self, event: &RecordedEvent) {
        self.events += 1;
        let stream = event.stream_id.as_str();
        let outcome = if let Some(id) = id_in(stream, <Flight as AggregateType>::NAME) {
            event
                .decode::<FlightEvent>()
                .map(|decoded| self.flight(id, &decoded))
        } else if let Some(id) = id_in(stream, <Booking as AggregateType>::NAME) {
            event.decode::<BookingEvent>().map(|decoded| {
                let booking = self.bookings.entry(id).or_default();
                if matches!(decoded, BookingEvent::BookingRequested { .. }) {
                    booking.requested_at = Some(event.recorded_at);
                }
                booking.state.apply(&decoded);
            })
        } else if let Some(id) = id_in(stream, <Payment as AggregateType>::NAME) {
            event
                .decode::<PaymentEvent>()
                .map(|decoded| self.payments.entry(id).or_default().apply(&decoded))
        } else if let Some(id) = id_in(stream, <BookingSaga as AggregateType>::NAME) {
            event
                .decode::<SagaEvent>()
                .map(|decoded| self.sagas.entry(id).or_default().apply(&decoded))
        } else {
            Ok(())
        };
        if let Err(error) = outcome {
            self.decode_errors.push(Violation::Undecodable {
                stream_id: event.stream_id.clone(),
                stream_version: event.stream_version,
                error: error.to_string(),
            });
        }
    }

    fn flight(&mut self, id: Uuid, event: &FlightEvent) {
        let flight = self.flights.entry(id).or_default();
        match event {
            FlightEvent::SeatsReserved { booking_id, seats } => {
                *flight.held.entry(*booking_id).or_default() += i64::from(*seats);
            }
            FlightEvent::SeatsReleased { booking_id, seats } => {
                *flight.held.entry(*booking_id).or_default() -= i64::from(*seats);
            }
            _ => {}
        }
        flight.view = FlightView::fold(flight.view.take(), event);
    }

    /// Whether the booking's seats and state count: bookings too young to
    /// have settled are left out (bookings absent from the log count).
    fn counts(&self, booking_id: &Uuid, settled_before: DateTime<Utc>) -> bool {
        self.bookings
            .get(booking_id)
            .is_none_or(|b| b.settled_by(settled_before))
    }

    fn seats(&self, settled_before: DateTime<Utc>) -> Vec<Violation> {
        // Seats the confirmed bookings have, per flight.
        let mut confirmed: BTreeMap<Uuid, i64> = BTreeMap::new();
        for booking in self.bookings.values() {
            if booking.state.status == BookingStatus::Confirmed
                && booking.settled_by(settled_before)
            {
                for segment in &booking.state.segments {
                    *confirmed.entry(segment.flight_id).or_default() += i64::from(segment.seats);
                }
            }
        }
        let flights: BTreeSet<Uuid> = self
            .flights
            .keys()
            .chain(confirmed.keys())
            .copied()
            .collect();
        let mut violations = Vec::new();
        for flight_id in flights {
            let held: i64 = self.flights.get(&flight_id).map_or(0, |flight| {
                flight
                    .held
                    .iter()
                    .filter(|(booking, _)| self.counts(booking, settled_before))
                    .map(|(_, seats)| seats)
                    .sum()
            });
            let confirmed = confirmed.get(&flight_id).copied().unwrap_or(0);
            if held != confirmed {
                violations.push(Violation::FlightSeats {
                    flight_id,
                    held,
                    confirmed,
                });
            }
        }
        // Every reservation once, not every flight for every booking.
        let mut held_by_cancelled: Vec<(Uuid, Uuid, i64)> = self
            .flights
            .iter()
            .flat_map(|(flight_id, flight)| {
                flight
                    .held
                    .iter()
                    .map(move |(booking_id, seats)| (*booking_id, *flight_id, *seats))
            })
            .filter(|(booking_id, _, seats)| {
                *seats != 0
                    && self.bookings.get(booking_id).is_some_and(|b| {
                        b.state.status == BookingStatus::Cancelled && b.settled_by(settled_before)
                    })
            })
            .collect();
        held_by_cancelled.sort_unstable();
        violations.extend(
            held_by_cancelled
                .into_iter()
                .map(
                    |(booking_id, flight_id, seats)| Violation::CancelledHoldsSeats {
                        booking_id,
                        flight_id,
                        seats,
                    },
                ),
        );
        violations
    }

    fn money(&self, settled_before: DateTime<Utc>) -> Vec<Violation> {
        let mut violations = Vec::new();
        for (booking_id, booking) in &self.bookings {
            if !booking.settled_by(settled_before) {
                continue;
            }
            let standing = self.payments.get(booking_id).and_then(|p| p.taken);
            match (booking.state.status, standing) {
                (BookingStatus::Cancelled, Some(amount)) => {
                    violations.push(Violation::ChargeNotRefunded {
                        booking_id: *booking_id,
                        amount,
                    });
                }
                (BookingStatus::Confirmed, None) => {
                    violations.push(Violation::ConfirmedNotPaid {
                        booking_id: *booking_id,
                    });
                }
                _ => {}
            }
        }
        violations
    }

    async fn provider(
        &self,
        payments: &SimulatedPayments,
        settled_before: DateTime<Utc>,
    ) -> Result<Vec<Violation>, CheckError> {
        let mut violations = Vec::new();
        for (booking_id, booking) in &self.bookings {
            if booking.state.status != BookingStatus::Cancelled
                || !booking.settled_by(settled_before)
            {
                continue;
            }
            if let Some(charge) = payments.charge_of(*booking_id).await?
                && !charge.refunded
            {
                violations.push(Violation::ProviderChargeNotRefunded {
                    booking_id: *booking_id,
                    amount: charge.amount,
                });
            }
        }
        Ok(violations)
    }

    fn settled(&self, settled_before: DateTime<Utc>) -> Vec<Violation> {
        let pending = self
            .bookings
            .iter()
            .filter(|(_, b)| {
                b.state.status == BookingStatus::Pending && b.settled_by(settled_before)
            })
            .map(|(id, _)| Violation::BookingPending { booking_id: *id });
        let unsettled = self
            .sagas
            .iter()
            .filter(|(id, saga)| {
                !matches!(saga.stage, SagaStage::Confirmed | SagaStage::Cancelled)
                    && self.counts(id, settled_before)
            })
            .map(|(id, saga)| Violation::SagaUnsettled {
                booking_id: *id,
                stage: saga.stage,
            });
        pending.chain(unsettled).collect()
    }

    async fn read_side(&self, reads: &dyn FlightReads) -> Result<Vec<Violation>, CheckError> {
        let expected: Vec<(Uuid, &FlightView)> = self
            .flights
            .iter()
            .filter_map(|(id, flight)| Some((*id, flight.view.as_ref()?)))
            .collect();
        let answers: Vec<Result<Option<Violation>, ReadError>> = futures::stream::iter(expected)
            .map(|(flight_id, expected)| async move {
                let found = reads.flight(flight_id).await?;
                Ok(
                    (found.as_ref() != Some(expected)).then(|| Violation::ReadModelDiffers {
                        flight_id,
                        expected: Box::new(expected.clone()),
                        found: found.map(Box::new),
                    }),
                )
            })
            .buffered(READS_IN_PARALLEL)
            .collect()
            .await;
        let mut violations = Vec::new();
        for answer in answers {
            violations.extend(answer?);
        }
        Ok(violations)
    }
}

#[cfg(test)]
mod tests;
