//! Booking: the Booking aggregate, payments, and the booking saga that ties
//! seats, payment and confirmation together.
//!
//! This context knows flights only by id and through the events the
//! scheduling context publishes (`SeatsReserved`); it asks for seats with its
//! own [`SagaCommand`]s, which the application maps onto scheduling's commands.

mod aggregate;
mod payment;
mod provider;
mod saga;

/// Seats one segment of a booking may ask for (the HTTP layer checks it too).
pub use aggregate::MAX_SEATS_PER_SEGMENT;
pub use aggregate::{
    Booking, BookingError, BookingEvent, BookingStatus, CancelBooking, ConfirmBooking, Passenger,
    RequestBooking, Segment,
};
pub use payment::{Payment, PaymentEvent, PaymentOutcome, RecordPayment, RecordRefund};
pub use provider::{Charge, PaymentError, PaymentService, ResilientPayments, SimulatedPayments};
pub use saga::{BookingSaga, PAYMENT_TIMEOUT, SagaCommand, SagaEvent, SagaSegment, SagaStage};
