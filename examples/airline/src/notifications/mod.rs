//! Notifications: a small consuming service of its own. It knows the
//! airline only through its integration events ([`crate::integration`],
//! over RabbitMQ), never through its domain events, and records one notice
//! per confirmed or cancelled booking (`NoticeSent` in `notice-<booking id>`)
//! through an inbox ([`annals_rabbitmq::Inbox`]): the notice is appended in
//! the inbox's transaction, so however often a message is delivered, its
//! notice is recorded once.
//!
//! `airline notify` runs it.

use annals::{Aggregate, AggregateType, AppendOptions, ExpectedVersion, Metadata, NewEvent};
use annals_postgres::PgEventStore;
use annals_rabbitmq::{EffectError, Handler, Message, Subscription};
use sqlx::PgTransaction;
use uuid::Uuid;

use crate::integration::{
    BOOKING_CANCELLED, BOOKING_CONFIRMED, BookingCancelledV1, BookingConfirmedV1,
};

/// The consumer's name in the inbox.
pub const CONSUMER: &str = "notifications";

/// What the notifications context records.
#[derive(Debug, Clone, PartialEq, annals::DomainEvent)]
pub enum NoticeEvent {
    /// A notice went to a passenger.
    NoticeSent {
        /// The booking it is about.
        booking_id: Uuid,
        /// The message that caused it.
        message_id: String,
        /// Where it went.
        email: String,
        /// What it said.
        subject: String,
    },
}

/// The notices of one booking.
#[derive(Debug, Clone, Default, PartialEq, annals::AggregateType)]
#[aggregate(name = "notice")]
pub struct Notices {
    /// Subjects sent, in order.
    pub sent: Vec<String>,
}

impl Aggregate for Notices {
    type Event = NoticeEvent;
    type Error = std::convert::Infallible;

    fn apply(&mut self, event: &NoticeEvent) {
        let NoticeEvent::NoticeSent { subject, .. } = event;
        self.sent.push(subject.clone());
    }
}

/// Why a message is not one the notifications understand.
#[derive(Debug, thiserror::Error)]
enum Unknown {
    #[error("no handler for {name:?} version {version:?}")]
    Message {
        name: Option<String>,
        version: Option<u32>,
    },
}

/// The inbox's handler: one `NoticeSent` per message, appended in the
/// inbox's transaction.
#[derive(Debug, Clone)]
pub struct Notifications {
    store: PgEventStore,
}

impl Notifications {
    /// Records notices in `store` (the database of the inbox's pool).
    pub fn new(store: PgEventStore) -> Self {
        Self { store }
    }
}

#[async_trait::async_trait]
impl Handler for Notifications {
    async fn handle(
        &self,
        message: &Message,
        tx: &mut PgTransaction<'_>,
    ) -> Result<(), EffectError> {
        let (booking_id, email, subject) = match (message.name.as_deref(), message.version) {
            (Some(BOOKING_CONFIRMED), Some(1)) => {
                let confirmed: BookingConfirmedV1 =
                    message.json().map_err(EffectError::rejected)?;
                let flights = confirmed.flights.len();
                let subject = format!(
                    "Booking {} confirmed: {flights} flight(s), {} {}",
                    confirmed.booking_id, confirmed.total.amount, confirmed.total.currency
                );
                (confirmed.booking_id, confirmed.passenger_email, subject)
            }
            (Some(BOOKING_CANCELLED), Some(1)) => {
                let cancelled: BookingCancelledV1 =
                    message.json().map_err(EffectError::rejected)?;
                let subject = format!(
                    "Booking {} cancelled: {}",
                    cancelled.booking_id, cancelled.reason
                );
                (cancelled.booking_id, cancelled.passenger_email, subject)
            }
            (name, version) => {
                return Err(EffectError::rejected(Unknown::Message {
                    name: name.map(str::to_owned),
                    version,
                }));
            }
        };
        let sent = NoticeEvent::NoticeSent {
            booking_id,
            message_id: message.message_id.clone(),
            email,
            subject,
        };
        let mut metadata = Metadata::default().actor(CONSUMER);
        if let Ok(id) = message.message_id.parse() {
            metadata = metadata.caused_by(id);
        }
        if let Some(correlation) = message
            .properties
            .correlation_id()
            .as_ref()
            .and_then(|id| id.as_str().parse().ok())
        {
            metadata = metadata.correlated(correlation);
        }
        let event = NewEvent::from_domain(&sent, metadata).map_err(EffectError::rejected)?;
        self.store
            .append_in_transaction(
                tx,
                &Notices::stream_id(&booking_id),
                ExpectedVersion::Any,
                vec![event],
                AppendOptions::default(),
            )
            .await?;
        Ok(())
    }
}

/// The notifications' subscription: `queue`, bound to the airline's
/// `exchange` for `booking.confirmed.v1` and `booking.cancelled.v1`.
pub fn subscription(url: &str, exchange: &str, queue: &str) -> Subscription {
    Subscription::new(url, exchange, queue)
        .bind(format!("{BOOKING_CONFIRMED}.v1"))
        .bind(format!("{BOOKING_CANCELLED}.v1"))
}
