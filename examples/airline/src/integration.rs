//! The airline's integration events: the public contract other services
//! consume over RabbitMQ, published from the log by a relay
//! ([`annals_rabbitmq::Relay`]).
//!
//! The contract is its own, versioned apart from the domain events:
//!
//! | name | version | routing key | body | from |
//! |---|---|---|---|---|
//! | `booking.confirmed` | 1 | `booking.confirmed.v1` | [`BookingConfirmedV1`] | `BookingConfirmed` |
//! | `booking.cancelled` | 1 | `booking.cancelled.v1` | [`BookingCancelledV1`] | `BookingCancelled` |
//!
//! The ordering key is the booking id: a booking's events reach a consumer
//! in the order they were recorded. The domain event `BookingConfirmed`
//! carries nothing; the passenger, flights and total come from the
//! booking's `BookingRequested` (its first event, which never changes), so
//! the same event always maps to the same message.

use std::sync::Arc;

use annals::{AggregateType, EventFilter, EventStore, RecordedEvent};
use annals_rabbitmq::{IntegrationEvent, IntegrationEvents, MapError, Relay, RelayOptions};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::booking::{Booking, BookingEvent, Segment};
use crate::values::Money;

/// The relay's projection name (its checkpoint, dead letters and lease).
pub const RELAY: &str = "integration_relay";
/// The name of `booking.confirmed`.
pub const BOOKING_CONFIRMED: &str = "booking.confirmed";
/// The name of `booking.cancelled`.
pub const BOOKING_CANCELLED: &str = "booking.cancelled";

/// An amount in minor units, with its ISO 4217 currency code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoneyV1 {
    /// Minor units (cents).
    pub amount: i64,
    /// The currency, e.g. `USD`.
    pub currency: String,
}

impl From<Money> for MoneyV1 {
    fn from(money: Money) -> Self {
        Self {
            amount: money.amount,
            currency: money.currency.as_str().to_owned(),
        }
    }
}

/// Seats on one flight of a booking.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlightV1 {
    /// The flight.
    pub flight_id: Uuid,
    /// Seats booked on it.
    pub seats: u32,
    /// The price of one seat.
    pub price: MoneyV1,
}

impl From<&Segment> for FlightV1 {
    fn from(segment: &Segment) -> Self {
        Self {
            flight_id: segment.flight_id,
            seats: segment.seats,
            price: segment.price.into(),
        }
    }
}

/// `booking.confirmed` version 1: seats held and paid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BookingConfirmedV1 {
    /// The booking.
    pub booking_id: Uuid,
    /// Where to tell the passenger.
    pub passenger_email: String,
    /// The flights and seats.
    pub flights: Vec<FlightV1>,
    /// What was charged.
    pub total: MoneyV1,
}

/// `booking.cancelled` version 1: the booking ended without travel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BookingCancelledV1 {
    /// The booking.
    pub booking_id: Uuid,
    /// Where to tell the passenger.
    pub passenger_email: String,
    /// Why.
    pub reason: String,
}

/// Why a booking event cannot be mapped.
#[derive(Debug, thiserror::Error)]
enum Unmappable {
    #[error("{0:?} is not a booking stream")]
    NotABooking(String),
    #[error("booking {0} has no BookingRequested as its first event")]
    NotRequested(Uuid),
}

/// The airline's mapping from its domain events to its integration events.
/// It reads the booking's first event from `store`.
#[derive(Debug, Clone)]
pub struct AirlineEvents<S> {
    store: S,
}

impl<S: EventStore> AirlineEvents<S> {
    /// The mapping, reading bookings from `store`.
    pub fn new(store: S) -> Self {
        Self { store }
    }

    /// The booking's request: who travels, on which flights, for how much.
    async fn request(&self, event: &RecordedEvent) -> Result<(Uuid, BookingEvent), MapError> {
        let booking_id = Booking::id_of(&event.stream_id)
            .and_then(|id| id.parse::<Uuid>().ok())
            .ok_or_else(|| MapError::invalid(Unmappable::NotABooking(event.stream_id.clone())))?;
        let first = self.store.read_stream(&event.stream_id, 1, 1).await?;
        let requested = first
            .first()
            .map(RecordedEvent::decode::<BookingEvent>)
            .transpose()
            .map_err(MapError::invalid)?;
        match requested {
            Some(requested @ BookingEvent::BookingRequested { .. }) => Ok((booking_id, requested)),
            _ => Err(MapError::invalid(Unmappable::NotRequested(booking_id))),
        }
    }
}

#[async_trait::async_trait]
impl<S: EventStore> IntegrationEvents for AirlineEvents<S> {
    fn filter(&self) -> EventFilter {
        EventFilter::types([
            BookingEvent::BOOKING_CONFIRMED,
            BookingEvent::BOOKING_CANCELLED,
        ])
    }

    async fn map(&self, event: &RecordedEvent) -> Result<Option<IntegrationEvent>, MapError> {
        let decoded = event.decode::<BookingEvent>().map_err(MapError::invalid)?;
        let (booking_id, requested) = self.request(event).await?;
        let BookingEvent::BookingRequested {
            passenger,
            segments,
            total,
            ..
        } = requested
        else {
            return Err(MapError::invalid(Unmappable::NotRequested(booking_id)));
        };
        let key = booking_id.to_string();
        let integration = match decoded {
            BookingEvent::BookingConfirmed => {
                let body = BookingConfirmedV1 {
                    booking_id,
                    passenger_email: passenger.email,
                    flights: segments.iter().map(FlightV1::from).collect(),
                    total: total.into(),
                };
                IntegrationEvent::new(BOOKING_CONFIRMED, 1, key, &body)
            }
            BookingEvent::BookingCancelled { reason } => {
                let body = BookingCancelledV1 {
                    booking_id,
                    passenger_email: passenger.email,
                    reason,
                };
                IntegrationEvent::new(BOOKING_CANCELLED, 1, key, &body)
            }
            BookingEvent::BookingRequested { .. } => return Ok(None),
        };
        integration.map(Some).map_err(MapError::invalid)
    }
}

/// The airline's relay over `store`, publishing to `exchange` on the broker
/// at `url`.
pub fn relay<S: EventStore + Clone>(
    store: S,
    url: &str,
    exchange: &str,
) -> Relay<AirlineEvents<S>> {
    Relay::new(
        RELAY,
        url,
        Arc::new(AirlineEvents::new(store)),
        RelayOptions::new(exchange),
    )
}

#[cfg(test)]
mod tests {
    use annals::memory::MemoryStore;
    use annals::{ExpectedVersion, Metadata, NewEvent};

    use super::*;
    use crate::booking::Passenger;

    async fn booking(store: &MemoryStore, events: &[BookingEvent]) -> (Uuid, Vec<RecordedEvent>) {
        let id = Uuid::now_v7();
        let stream = Booking::stream_id(&id);
        let new: Vec<NewEvent> = events
            .iter()
            .map(|e| NewEvent::from_domain(e, Metadata::default()).unwrap())
            .collect();
        store
            .append(&stream, ExpectedVersion::NoStream, new)
            .await
            .unwrap();
        (id, store.read_stream(&stream, 1, 10).await.unwrap())
    }

    fn requested(id: Uuid) -> BookingEvent {
        BookingEvent::BookingRequested {
            booking_id: id,
            passenger: Passenger {
                name: "Ada".into(),
                email: "ada@example.com".into(),
            },
            segments: vec![Segment {
                flight_id: Uuid::from_u128(1),
                seats: 2,
                price: Money::usd(100),
            }],
            total: Money::usd(200),
            card_token: "tok".into(),
        }
    }

    #[tokio::test]
    async fn a_confirmed_booking_is_published_with_its_passenger_flights_and_total() {
        let store = MemoryStore::new();
        let mapping = AirlineEvents::new(store.clone());
        let (id, events) = booking(
            &store,
            &[requested(Uuid::nil()), BookingEvent::BookingConfirmed],
        )
        .await;
        assert!(mapping.filter().matches(&events[1].event_type));
        assert!(!mapping.filter().matches(&events[0].event_type));
        let published = mapping.map(&events[1]).await.unwrap().unwrap();
        assert_eq!(published.name, "booking.confirmed");
        assert_eq!(published.routing_key(), "booking.confirmed.v1");
        assert_eq!(published.key, id.to_string());
        let body: BookingConfirmedV1 = published.payload.decode().unwrap();
        assert_eq!(
            body,
            BookingConfirmedV1 {
                booking_id: id,
                passenger_email: "ada@example.com".into(),
                flights: vec![FlightV1 {
                    flight_id: Uuid::from_u128(1),
                    seats: 2,
                    price: MoneyV1 {
                        amount: 100,
                        currency: "USD".into()
                    },
                }],
                total: MoneyV1 {
                    amount: 200,
                    currency: "USD".into()
                },
            }
        );
        // Mapping is deterministic: a batch published again says the same.
        assert_eq!(mapping.map(&events[1]).await.unwrap().unwrap(), published);
    }

    #[tokio::test]
    async fn a_cancellation_is_published_with_its_reason() {
        let store = MemoryStore::new();
        let mapping = AirlineEvents::new(store.clone());
        let cancelled = BookingEvent::BookingCancelled {
            reason: "payment declined".into(),
        };
        let (id, events) = booking(&store, &[requested(Uuid::nil()), cancelled]).await;
        let published = mapping.map(&events[1]).await.unwrap().unwrap();
        assert_eq!(published.routing_key(), "booking.cancelled.v1");
        let body: BookingCancelledV1 = published.payload.decode().unwrap();
        assert_eq!(body.booking_id, id);
        assert_eq!(body.reason, "payment declined");
        assert_eq!(body.passenger_email, "ada@example.com");
    }

    #[tokio::test]
    async fn a_confirmation_without_its_request_cannot_be_mapped() {
        let store = MemoryStore::new();
        let mapping = AirlineEvents::new(store.clone());
        let (_, events) = booking(&store, &[BookingEvent::BookingConfirmed]).await;
        assert!(matches!(
            mapping.map(&events[0]).await,
            Err(MapError::Invalid(_))
        ));
    }
}
