//! The application layer: the one place that knows every context. It runs
//! commands, quotes prices for bookings, and delivers the booking saga's
//! commands to flights, payments and bookings.

use std::sync::Arc;
use std::time::Duration;

use annals::decision::Decider;
use annals::process::{DispatchError, Dispatcher, ProcessRunner, derive_id};
use annals::projection::ProjectionStore;
use annals::{
    AggregateType, CommandContext, ExecuteError, Handle, Position, Repository, StoreError,
};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::booking::{
    Booking, BookingError, BookingSaga, BookingStatus, CancelBooking, ConfirmBooking, Passenger,
    Payment, PaymentError, PaymentOutcome, PaymentService, RecordPayment, RecordRefund,
    RequestBooking, SagaCommand, Segment,
};
use crate::error::{AppError, DomainError};
use crate::scheduling::{
    CancelFlight, ChangePrice, Flight, FlightError, FlightStatus, ReleaseSeats, RescheduleFlight,
    ReserveSeats, ScheduleFlight,
};
use crate::values::Money;

/// What a command returns to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Done {
    /// The aggregate's id.
    pub id: Uuid,
    /// Read-your-writes token.
    pub position: Position,
    /// The aggregate's version after the command.
    pub stream_version: u64,
}

impl Done {
    /// The answer to a command on `id` that ran as `done` did.
    fn of<E>(id: Uuid, done: &annals::Executed<E>) -> Self {
        Self {
            id,
            position: done.position,
            stream_version: done.stream_version,
        }
    }
}

/// A booking to request: who travels, which flights and how many seats on
/// each, and how they pay. No prices: the airline quotes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BookingOrder {
    /// Who travels.
    pub passenger: Passenger,
    /// Which flights, how many seats.
    pub segments: Vec<SeatsOn>,
    /// The payment provider's card token.
    pub card_token: String,
}

/// Seats wanted on one flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeatsOn {
    /// The flight.
    pub flight_id: Uuid,
    /// Seats wanted.
    pub seats: u32,
}

/// A booking as clients see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BookingView {
    /// The booking.
    pub id: Uuid,
    /// `pending`, `confirmed` or `cancelled`.
    pub status: BookingStatus,
    /// Why it was cancelled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Who travels.
    pub passenger: Passenger,
    /// Flights, seats and prices.
    pub segments: Vec<Segment>,
    /// What it costs.
    pub total: Money,
}

/// The airline's write side over one store.
pub struct Airline<S> {
    store: S,
    flights: Repository<Flight, S>,
    bookings: Repository<Booking, S>,
    payments: Repository<Payment, S>,
    provider: Arc<dyn PaymentService>,
}

impl<S: Clone> Clone for Airline<S> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            flights: self.flights.clone(),
            bookings: self.bookings.clone(),
            payments: self.payments.clone(),
            provider: Arc::clone(&self.provider),
        }
    }
}

/// Aggregates (and saga instances) of each kind kept in memory between
/// commands: a flight takes a command per booking, a booking and its saga a
/// few in a row. A few hundred bytes each.
const HOT_STREAMS: usize = 20_000;

impl<S> Airline<S>
where
    S: ProjectionStore + Clone,
{
    /// The airline over a store, charging through `provider`.
    pub fn new(store: S, provider: Arc<dyn PaymentService>) -> Self {
        Self {
            flights: Repository::new(store.clone())
                .max_attempts(20)
                .snapshot_every(100)
                .cache(HOT_STREAMS),
            bookings: Repository::new(store.clone()).cache(HOT_STREAMS),
            payments: Repository::new(store.clone()).cache(HOT_STREAMS),
            store,
            provider,
        }
    }

    /// The event store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The flights repository.
    pub fn flights(&self) -> &Repository<Flight, S> {
        &self.flights
    }

    /// The booking saga, ready to run as a projection.
    pub fn saga(&self) -> ProcessRunner<BookingSaga, S, SagaDispatcher<S>> {
        ProcessRunner::new(
            self.store.clone(),
            Arc::new(SagaDispatcher {
                airline: self.clone(),
            }),
        )
        .cache(HOT_STREAMS)
    }

    /// Schedules a new flight.
    ///
    /// A decision over two rules ([`ScheduleFlight`] is a
    /// [`Decision`](annals::decision::Decision)): the flight id is scheduled
    /// once, and its number flies at most once on its departure day.
    pub async fn schedule_flight(
        &self,
        command: ScheduleFlight,
        context: CommandContext,
    ) -> Result<Done, AppError> {
        let id = command.flight_id;
        // Flights scheduled before events carried tags are not found by the
        // rule's query: their stream is (unless this is a retry of the
        // command that created it, which the decider answers as it was).
        let store_error = |e: StoreError| AppError::from_execute::<FlightError>(e.into());
        let exists = self
            .store
            .stream_version(&Flight::stream_id(&id))
            .await
            .map_err(store_error)?
            > 0;
        if exists {
            let retried = match context.command_id {
                Some(command) => self
                    .store
                    .command_outcome(command)
                    .await
                    .map_err(store_error)?
                    .is_some(),
                None => false,
            };
            if !retried {
                return Err(DomainError::from(FlightError::AlreadyScheduled).into());
            }
        }
        let done = Decider::new(self.store.clone())
            .max_attempts(20)
            .execute_with(command, context)
            .await
            .map_err(AppError::from_execute)?;
        Ok(Done::of(id, &done))
    }

    /// Moves a flight.
    pub async fn reschedule_flight(
        &self,
        id: Uuid,
        command: RescheduleFlight,
        context: CommandContext,
    ) -> Result<Done, AppError> {
        self.run(&self.flights, id, command, context).await
    }

    /// Changes a flight's price.
    pub async fn change_price(
        &self,
        id: Uuid,
        command: ChangePrice,
        context: CommandContext,
    ) -> Result<Done, AppError> {
        self.run(&self.flights, id, command, context).await
    }

    /// Cancels a flight.
    pub async fn cancel_flight(
        &self,
        id: Uuid,
        command: CancelFlight,
        context: CommandContext,
    ) -> Result<Done, AppError> {
        self.run(&self.flights, id, command, context).await
    }

    /// Records a booking request at today's prices; the saga takes it from there.
    pub async fn request_booking(
        &self,
        request: BookingOrder,
        context: CommandContext,
    ) -> Result<Done, AppError> {
        let booking_id = context
            .command_id
            .map_or_else(Uuid::now_v7, |id| derive_id(id, "booking"));
        let mut segments = Vec::with_capacity(request.segments.len());
        for segment in &request.segments {
            let flight = self
                .flights
                .load(segment.flight_id)
                .await
                .map_err(AppError::from_execute)?;
            let price = match (flight.state.status(), flight.state.price()) {
                (FlightStatus::Scheduled, Some(price)) => price,
                (FlightStatus::Cancelled, _) => {
                    return Err(DomainError::from(FlightError::Cancelled).into());
                }
                _ => {
                    return Err(AppError::NotFound(format!(
                        "flight {} does not exist",
                        segment.flight_id
                    )));
                }
            };
            segments.push(Segment {
                flight_id: segment.flight_id,
                seats: segment.seats,
                price,
            });
        }
        let command = RequestBooking {
            booking_id,
            passenger: request.passenger,
            segments,
            card_token: request.card_token,
        };
        self.run(&self.bookings, booking_id, command, context).await
    }

    /// A booking as it stands now.
    pub async fn booking(&self, id: Uuid) -> Result<BookingView, AppError> {
        let loaded = self
            .bookings
            .load(id)
            .await
            .map_err(AppError::from_execute)?;
        let booking = loaded.state;
        match (booking.passenger, booking.total) {
            (Some(passenger), Some(total)) => Ok(BookingView {
                id,
                status: booking.status,
                reason: booking.reason,
                passenger,
                segments: booking.segments,
                total,
            }),
            _ => Err(AppError::NotFound(format!("booking {id} does not exist"))),
        }
    }

    /// Cancels a booking; the saga releases its seats and refunds it.
    pub async fn cancel_booking(
        &self,
        id: Uuid,
        context: CommandContext,
    ) -> Result<Done, AppError> {
        let command = CancelBooking {
            reason: "cancelled by the passenger".into(),
        };
        self.run(&self.bookings, id, command, context).await
    }

    async fn run<A, C>(
        &self,
        repository: &Repository<A, S>,
        id: Uuid,
        command: C,
        context: CommandContext,
    ) -> Result<Done, AppError>
    where
        A: Handle<C>,
        A::Error: Into<DomainError>,
        C: Send + Sync,
    {
        let done = repository
            .execute_with(id, command, context)
            .await
            .map_err(AppError::from_execute)?;
        Ok(Done::of(id, &done))
    }
}

/// Delivers the booking saga's commands: seats to flights, charges and
/// refunds to the payment provider (recording its answers), and
/// confirmations and cancellations to bookings.
pub struct SagaDispatcher<S> {
    airline: Airline<S>,
}

impl<S: ProjectionStore + Clone> SagaDispatcher<S> {
    async fn deliver<A, C>(
        &self,
        repository: &Repository<A, S>,
        id: Uuid,
        command: C,
        context: CommandContext,
    ) -> Result<(), DispatchError>
    where
        A: Handle<C>,
        C: Send + Sync,
    {
        match repository.execute_with(id, command, context).await {
            Ok(_) => Ok(()),
            Err(ExecuteError::Rejected(error)) => Err(DispatchError::Rejected(Box::new(error))),
            Err(error) => Err(DispatchError::Transient(Box::new(error))),
        }
    }
}

#[async_trait]
impl<S: ProjectionStore + Clone> Dispatcher<SagaCommand> for SagaDispatcher<S> {
    async fn dispatch(
        &self,
        command: SagaCommand,
        context: CommandContext,
    ) -> Result<(), DispatchError> {
        let a = &self.airline;
        match command {
            SagaCommand::ReserveSeats {
                flight_id,
                booking_id,
                seats,
            } => {
                self.deliver(
                    &a.flights,
                    flight_id,
                    ReserveSeats { booking_id, seats },
                    context,
                )
                .await
            }
            SagaCommand::ReleaseSeats {
                flight_id,
                booking_id,
            } => {
                self.deliver(&a.flights, flight_id, ReleaseSeats { booking_id }, context)
                    .await
            }
            SagaCommand::ConfirmBooking { booking_id } => {
                self.deliver(&a.bookings, booking_id, ConfirmBooking, context)
                    .await
            }
            SagaCommand::CancelBooking { booking_id, reason } => {
                self.deliver(&a.bookings, booking_id, CancelBooking { reason }, context)
                    .await
            }
            SagaCommand::TakePayment {
                booking_id,
                amount,
                card_token,
            } => {
                // The provider may never answer: charge in the background and
                // record its answer; the saga's deadline covers silence.
                let airline = a.clone();
                tokio::spawn(async move {
                    let outcome = match airline
                        .provider
                        .charge(booking_id, amount, &card_token)
                        .await
                    {
                        Ok(payment_id) => PaymentOutcome::Taken { payment_id, amount },
                        Err(PaymentError::Declined(reason)) => PaymentOutcome::Declined { reason },
                        // No answer: the saga's deadline covers it.
                        Err(error) => {
                            tracing::warn!(%booking_id, %error, "payment provider did not answer");
                            return;
                        }
                    };
                    let record = RecordPayment {
                        booking_id,
                        outcome,
                    };
                    if let Err(error) = airline
                        .payments
                        .execute_with(booking_id, record, context)
                        .await
                    {
                        tracing::error!(%booking_id, %error, "payment answer not recorded");
                    }
                });
                Ok(())
            }
            SagaCommand::RefundPayment { booking_id } => {
                match a.provider.refund(booking_id).await {
                    Ok(amount) => {
                        self.deliver(
                            &a.payments,
                            booking_id,
                            RecordRefund { booking_id, amount },
                            context,
                        )
                        .await
                    }
                    // A final answer the saga records; anything else is retried.
                    Err(error @ PaymentError::NotCharged(_)) => {
                        Err(DispatchError::Rejected(Box::new(error)))
                    }
                    Err(error) => Err(DispatchError::Transient(Box::new(error))),
                }
            }
        }
    }
}

/// How long the HTTP layer waits for the read side on `min_position`.
pub const READ_YOUR_WRITES_TIMEOUT: Duration = Duration::from_secs(5);

impl AppError {
    /// Maps a repository error: rule violations keep their domain code.
    pub fn from_execute<E: Into<DomainError> + std::error::Error>(error: ExecuteError<E>) -> Self {
        match error {
            ExecuteError::Rejected(rule) => AppError::Domain(rule.into()),
            ExecuteError::Store(StoreError::Conflict { stream, .. }) => {
                AppError::Conflict(format!("{stream} changed concurrently; retry"))
            }
            ExecuteError::Store(StoreError::InvalidInput(reason)) => AppError::Invalid(reason),
            ExecuteError::Store(error) if error.is_transient() => {
                AppError::Unavailable(error.to_string())
            }
            other => AppError::Internal(other.to_string()),
        }
    }
}

impl From<BookingError> for DomainError {
    fn from(error: BookingError) -> Self {
        use crate::error::Kind::*;
        let (kind, code) = match &error {
            BookingError::NotFound => (NotFound, "booking_not_found"),
            BookingError::AlreadyRequested => (Conflict, "booking_exists"),
            BookingError::NoSegments => (Invalid, "no_segments"),
            BookingError::DuplicateFlight(_) => (Invalid, "duplicate_flight"),
            BookingError::InvalidSeats(_) => (Invalid, "invalid_seats"),
            BookingError::InvalidPassenger(_) => (Invalid, "invalid_passenger"),
            BookingError::MissingCardToken => (Invalid, "missing_card_token"),
            BookingError::InvalidTotal(_) => (Rule, "invalid_total"),
            BookingError::Cancelled => (Rule, "booking_cancelled"),
        };
        DomainError::new(kind, code, error.to_string())
    }
}

impl From<FlightError> for DomainError {
    fn from(error: FlightError) -> Self {
        use crate::error::Kind::*;
        let (kind, code) = match &error {
            FlightError::NotFound => (NotFound, "flight_not_found"),
            FlightError::AlreadyScheduled => (Conflict, "flight_exists"),
            FlightError::NumberTaken { .. } => (Conflict, "flight_number_taken"),
            FlightError::Cancelled => (Rule, "flight_cancelled"),
            FlightError::SameAirport(_) => (Invalid, "same_airport"),
            FlightError::ArrivalBeforeDeparture { .. } => (Invalid, "arrival_before_departure"),
            FlightError::InvalidSeats(_) => (Invalid, "invalid_seats"),
            FlightError::InvalidPrice(_) => (Invalid, "invalid_price"),
            FlightError::CurrencyMismatch { .. } => (Rule, "currency_mismatch"),
            FlightError::NotEnoughSeats { .. } => (Rule, "not_enough_seats"),
        };
        DomainError::new(kind, code, error.to_string())
    }
}

impl From<std::convert::Infallible> for DomainError {
    fn from(never: std::convert::Infallible) -> Self {
        match never {}
    }
}
