//! Envelopes: what the store keeps around each event.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::event::{DomainEvent, EventError};
use crate::payload::Payload;
use crate::position::Position;

/// Who and what caused an event, carried alongside it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    /// Ties together everything one request or process set in motion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<Uuid>,
    /// The message (command or event) that directly caused this event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<Uuid>,
    /// Who asked: a user, a service, a process manager.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// Anything else the application wants to keep with the event.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, Value>,
}

impl Metadata {
    /// Sets the correlation id.
    pub fn correlated(mut self, id: Uuid) -> Self {
        self.correlation_id = Some(id);
        self
    }

    /// Sets the causation id.
    pub fn caused_by(mut self, id: Uuid) -> Self {
        self.causation_id = Some(id);
        self
    }

    /// Sets the actor.
    pub fn actor(mut self, actor: impl Into<String>) -> Self {
        self.actor = Some(actor.into());
        self
    }
}

/// An event on its way into the store.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// Unique id (UUID v7 by default); appending the same id again is a no-op.
    pub event_id: Uuid,
    /// The stable event type name.
    pub event_type: String,
    /// The schema version of `payload`.
    pub schema_version: u32,
    /// The event's fields as JSON text (`json!({..}).into()` builds one).
    pub payload: Payload,
    /// Correlation, causation, actor and extras.
    pub metadata: Metadata,
    /// Short strings such as `flight:0193…` that [queries](crate::query)
    /// select the event by (its domain event's [`DomainEvent::tags`]).
    pub tags: Vec<String>,
}

impl NewEvent {
    /// Encodes a domain event with a fresh UUID v7 id.
    pub fn from_domain<E: DomainEvent>(event: &E, metadata: Metadata) -> Result<Self, EventError> {
        Ok(Self {
            event_id: Uuid::now_v7(),
            event_type: event.event_type().to_owned(),
            schema_version: event.schema_version(),
            payload: event.encode()?,
            metadata,
            tags: event.tags(),
        })
    }

    /// Replaces the event id, for callers that derive ids deterministically.
    pub fn with_id(mut self, event_id: Uuid) -> Self {
        self.event_id = event_id;
        self
    }
}

/// An event as stored: the envelope every reader sees.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedEvent {
    /// Unique id of the event.
    pub event_id: Uuid,
    /// The stream it belongs to, e.g. `flight-<uuid>`.
    pub stream_id: String,
    /// Its version within the stream, starting at 1.
    pub stream_version: u64,
    /// Its place in the global log.
    pub position: Position,
    /// The stable event type name.
    pub event_type: String,
    /// The schema version the payload was written at.
    pub schema_version: u32,
    /// The event's fields as JSON text, as written (decoded when asked).
    pub payload: Payload,
    /// Correlation, causation, actor and extras.
    pub metadata: Metadata,
    /// Its tags, as appended.
    #[serde(default)]
    pub tags: Vec<String>,
    /// When the store recorded it.
    pub recorded_at: DateTime<Utc>,
}

impl RecordedEvent {
    /// Decodes the payload into a domain event, upcasting older versions.
    pub fn decode<E: DomainEvent>(&self) -> Result<E, EventError> {
        E::decode(&self.event_type, self.schema_version, &self.payload)
    }
}
