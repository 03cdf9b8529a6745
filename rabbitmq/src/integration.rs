//! Integration events: the public, versioned contract a service publishes,
//! mapped from its internal domain events by [`IntegrationEvents`].

use annals::error::BoxError;
use annals::{EventFilter, Payload, RecordedEvent};
use async_trait::async_trait;
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use serde::Serialize;
use uuid::Uuid;

/// The header that carries an integration event's version (a long integer).
pub const VERSION_HEADER: &str = "x-annals-version";
/// The header that carries an integration event's ordering key.
pub const KEY_HEADER: &str = "x-annals-key";
/// The header that carries the id of the domain event it was mapped from.
pub const EVENT_ID_HEADER: &str = "x-annals-event-id";

/// The namespace of [`message_id`]'s UUID v5 ids (fixed: changing it would
/// give every message a new id, and consumers would process them again).
const MESSAGE_ID_NAMESPACE: Uuid = Uuid::from_u128(0xa11e_dc7f_19e0_4fbe_b064_ce4b_ca8f_f8fa);

/// The AMQP `message_id` of the integration event `name` version `version`
/// mapped from the domain event `event_id`: a UUID v5, so the same event
/// always gives the same id, whichever process publishes it and however
/// often (a relay that crashed between the broker's confirm and its
/// checkpoint publishes the batch again with the same ids, and consumers'
/// inboxes recognise them).
///
/// ```
/// use annals_rabbitmq::message_id;
/// use uuid::Uuid;
///
/// let event = Uuid::now_v7();
/// assert_eq!(message_id(event, "booking.confirmed", 1), message_id(event, "booking.confirmed", 1));
/// assert_ne!(message_id(event, "booking.confirmed", 1), message_id(event, "booking.confirmed", 2));
/// ```
pub fn message_id(event_id: Uuid, name: &str, version: u32) -> Uuid {
    let mut seed = Vec::with_capacity(16 + name.len() + 12);
    seed.extend_from_slice(event_id.as_bytes());
    seed.extend_from_slice(name.as_bytes());
    seed.push(b'/');
    seed.extend_from_slice(version.to_string().as_bytes());
    Uuid::new_v5(&MESSAGE_ID_NAMESPACE, &seed)
}

/// One integration event: what other services may rely on, named and
/// versioned on its own (a domain event can change shape without breaking
/// them; a breaking change of the contract is a new version).
#[derive(Debug, Clone, PartialEq)]
pub struct IntegrationEvent {
    /// Its name, e.g. `booking.confirmed`: the AMQP `type` property.
    pub name: String,
    /// The version of its contract (the `x-annals-version` header).
    pub version: u32,
    /// The routing key; `None` routes by type: `<name>.v<version>`.
    pub routing_key: Option<String>,
    /// The ordering key (the `x-annals-key` header), e.g. the booking id:
    /// events of one key are published in log order.
    pub key: String,
    /// The body, JSON.
    pub payload: Payload,
}

impl IntegrationEvent {
    /// An event named `name` at `version`, for `key`, with `payload` as its body.
    pub fn new(
        name: impl Into<String>,
        version: u32,
        key: impl Into<String>,
        payload: &impl Serialize,
    ) -> Result<Self, serde_json::Error> {
        Ok(Self {
            name: name.into(),
            version,
            routing_key: None,
            key: key.into(),
            payload: Payload::from_json(serde_json::to_string(payload)?)?,
        })
    }

    /// Routes it by `routing_key` instead of by type.
    pub fn with_routing_key(mut self, routing_key: impl Into<String>) -> Self {
        self.routing_key = Some(routing_key.into());
        self
    }

    /// The routing key it is published with: the one set, or `<name>.v<version>`.
    ///
    /// ```
    /// # use annals_rabbitmq::IntegrationEvent;
    /// let event = IntegrationEvent::new("booking.confirmed", 1, "b-1", &serde_json::json!({}))?;
    /// assert_eq!(event.routing_key(), "booking.confirmed.v1");
    /// assert_eq!(event.with_routing_key("eu.booking").routing_key(), "eu.booking");
    /// # Ok::<(), serde_json::Error>(())
    /// ```
    pub fn routing_key(&self) -> String {
        match &self.routing_key {
            Some(key) => key.clone(),
            None => format!("{}.v{}", self.name, self.version),
        }
    }
}

/// Why a domain event could not be mapped.
#[derive(Debug, thiserror::Error)]
pub enum MapError {
    /// This event cannot be mapped (its payload does not decode, what it
    /// refers to is missing): retrying cannot help. The relay reports it,
    /// and after the runner's attempts it becomes a dead letter that holds
    /// back the later events of its key.
    #[error("cannot map the event: {0}")]
    Invalid(#[source] BoxError),
    /// Something the mapping reads is unreachable: the whole batch is
    /// retried with backoff.
    #[error("cannot map the event now: {0}")]
    Transient(#[source] BoxError),
}

impl MapError {
    /// An invalid event, from any error.
    pub fn invalid(error: impl Into<BoxError>) -> Self {
        MapError::Invalid(error.into())
    }
}

impl From<annals::StoreError> for MapError {
    /// A store that could not be reached is transient; anything else it
    /// says about this event makes the event invalid.
    fn from(error: annals::StoreError) -> Self {
        if error.is_transient() {
            MapError::Transient(Box::new(error))
        } else {
            MapError::Invalid(Box::new(error))
        }
    }
}

/// Which domain events a service publishes, and as what: the explicit
/// mapping from its internal events to its public contract.
///
/// Mapping may read (a store, to add what the domain event does not carry);
/// it must be deterministic for a given event, because a batch published
/// again after a failure must carry the same messages.
///
/// ```
/// use annals::{EventFilter, RecordedEvent};
/// use annals_rabbitmq::{IntegrationEvent, IntegrationEvents, MapError};
/// use serde_json::json;
///
/// struct Published;
///
/// #[async_trait::async_trait]
/// impl IntegrationEvents for Published {
///     fn filter(&self) -> EventFilter {
///         EventFilter::types(["SeatsReleased"])
///     }
///
///     async fn map(&self, event: &RecordedEvent) -> Result<Option<IntegrationEvent>, MapError> {
///         #[derive(serde::Deserialize)]
///         struct Released { seats: u32 }
///         let released: Released = event.payload.decode().map_err(MapError::invalid)?;
///         let body = json!({ "flight": event.stream_id, "seats": released.seats });
///         Ok(Some(IntegrationEvent::new("seats.released", 1, &event.stream_id, &body)
///             .map_err(MapError::invalid)?))
///     }
/// }
/// ```
#[async_trait]
pub trait IntegrationEvents: Send + Sync + 'static {
    /// The domain events that may be published: the relay reads only these.
    fn filter(&self) -> EventFilter;

    /// The integration event for `event`, or `None` when this one is not
    /// published.
    async fn map(&self, event: &RecordedEvent) -> Result<Option<IntegrationEvent>, MapError>;

    /// The key that orders `event` among the others, before it is mapped:
    /// an event that cannot be mapped holds back the later events of its
    /// key. Its stream by default; keep it consistent with
    /// [`IntegrationEvent::key`].
    fn key(&self, event: &RecordedEvent) -> String {
        event.stream_id.clone()
    }
}

/// Why an integration event cannot become an AMQP message.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// AMQP short strings (routing keys, types, header names) hold at most 255 bytes.
    #[error("the {field} is longer than 255 bytes")]
    TooLong {
        /// Which field.
        field: &'static str,
    },
}

/// An AMQP short string, or which field is too long for one.
pub(crate) fn short(
    field: &'static str,
    value: impl Into<String>,
) -> Result<ShortString, EncodeError> {
    ShortString::try_new(value).map_err(|_| EncodeError::TooLong { field })
}

/// An integration event as the relay publishes it.
#[derive(Debug, Clone, PartialEq)]
pub struct OutgoingMessage {
    /// The message id (from [`message_id`]).
    pub message_id: Uuid,
    /// The routing key.
    pub routing_key: ShortString,
    /// The AMQP properties: JSON, persistent, the id, type, timestamp and headers.
    pub properties: BasicProperties,
    /// The body.
    pub body: Vec<u8>,
}

impl OutgoingMessage {
    /// The message for `integration`, mapped from `event` by the relay named `app_id`.
    ///
    /// Properties: `content_type` `application/json`, `delivery_mode` 2
    /// (persistent), `message_id` ([`message_id`]), `type` (the name),
    /// `timestamp` (when the domain event was recorded), `app_id`,
    /// `correlation_id` (the domain event's, if any); headers
    /// [`VERSION_HEADER`], [`KEY_HEADER`], [`EVENT_ID_HEADER`].
    pub fn new(
        event: &RecordedEvent,
        integration: &IntegrationEvent,
        app_id: &str,
    ) -> Result<Self, EncodeError> {
        let message_id = message_id(event.event_id, &integration.name, integration.version);
        let mut headers = FieldTable::default();
        headers.insert(
            VERSION_HEADER.into(),
            AMQPValue::LongLongInt(i64::from(integration.version)),
        );
        headers.insert(
            KEY_HEADER.into(),
            AMQPValue::LongString(LongString::from(integration.key.as_str())),
        );
        headers.insert(
            EVENT_ID_HEADER.into(),
            AMQPValue::LongString(LongString::from(event.event_id.to_string())),
        );
        let mut properties = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(2)
            .with_message_id(message_id.to_string().into())
            .with_type(short("event name", integration.name.as_str())?)
            .with_timestamp(u64::try_from(event.recorded_at.timestamp()).unwrap_or(0))
            .with_app_id(short("relay name", app_id)?)
            .with_headers(headers);
        if let Some(correlation) = event.metadata.correlation_id {
            properties = properties.with_correlation_id(correlation.to_string().into());
        }
        Ok(Self {
            message_id,
            routing_key: short("routing key", integration.routing_key())?,
            properties,
            body: integration.payload.json().as_bytes().to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use annals::{Metadata, Position};
    use chrono::Utc;
    use serde_json::json;

    use super::*;

    fn recorded(event_id: Uuid) -> RecordedEvent {
        RecordedEvent {
            event_id,
            stream_id: "booking-1".into(),
            stream_version: 2,
            position: Position::default(),
            event_type: "BookingConfirmed".into(),
            schema_version: 1,
            payload: json!(null).into(),
            metadata: Metadata::default().correlated(Uuid::from_u128(7)),
            recorded_at: Utc::now(),
            tags: Vec::new(),
        }
    }

    #[test]
    fn message_ids_are_derived_from_the_event_and_the_contract() {
        let event = Uuid::from_u128(42);
        let id = message_id(event, "booking.confirmed", 1);
        assert_eq!(id, message_id(event, "booking.confirmed", 1));
        assert_eq!(id.get_version_num(), 5);
        // Fixed for good: a new id for the same event would be processed again.
        assert_eq!(
            id.to_string(),
            message_id(Uuid::from_u128(42), "booking.confirmed", 1).to_string()
        );
        assert_ne!(id, message_id(Uuid::from_u128(43), "booking.confirmed", 1));
        assert_ne!(id, message_id(event, "booking.cancelled", 1));
        assert_ne!(id, message_id(event, "booking.confirmed", 2));
        // The separator keeps name and version apart.
        assert_ne!(message_id(event, "a1", 1), message_id(event, "a", 11));
    }

    #[test]
    fn a_message_carries_the_contract_and_is_persistent() {
        let event = recorded(Uuid::from_u128(9));
        let integration =
            IntegrationEvent::new("booking.confirmed", 1, "b-1", &json!({ "total": 3 })).unwrap();
        let message = OutgoingMessage::new(&event, &integration, "relay").unwrap();
        assert_eq!(message.routing_key.as_str(), "booking.confirmed.v1");
        assert_eq!(message.body, br#"{"total":3}"#);
        let p = &message.properties;
        assert_eq!(*p.delivery_mode(), Some(2));
        assert_eq!(
            p.message_id().as_ref().map(ShortString::as_str),
            Some(
                message_id(event.event_id, "booking.confirmed", 1)
                    .to_string()
                    .as_str()
            )
        );
        assert_eq!(
            p.kind().as_ref().map(ShortString::as_str),
            Some("booking.confirmed")
        );
        assert_eq!(
            p.content_type().as_ref().map(ShortString::as_str),
            Some("application/json")
        );
        assert_eq!(
            p.correlation_id().as_ref().map(ShortString::as_str),
            Some(Uuid::from_u128(7).to_string().as_str())
        );
        let headers = p.headers().as_ref().unwrap().inner();
        assert_eq!(headers[VERSION_HEADER], AMQPValue::LongLongInt(1));
        assert_eq!(headers[KEY_HEADER], AMQPValue::LongString("b-1".into()));
        assert_eq!(
            headers[EVENT_ID_HEADER],
            AMQPValue::LongString(event.event_id.to_string().into())
        );
    }

    #[test]
    fn a_routing_key_longer_than_amqp_allows_is_refused_not_a_panic() {
        let event = recorded(Uuid::from_u128(9));
        let integration = IntegrationEvent::new("x", 1, "k", &json!({}))
            .unwrap()
            .with_routing_key("r".repeat(256));
        assert!(matches!(
            OutgoingMessage::new(&event, &integration, "relay"),
            Err(EncodeError::TooLong {
                field: "routing key"
            })
        ));
    }
}
