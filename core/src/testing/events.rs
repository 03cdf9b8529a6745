//! Building events for tests.

use uuid::Uuid;

use crate::envelope::{Metadata, NewEvent};
use crate::payload::Payload;

/// A new event of `event_type` at schema version 1, with a fresh id, no
/// metadata and no tags: `new_event("Ticked", json!({ "n": 1 }))`.
pub fn new_event(event_type: &str, payload: impl Into<Payload>) -> NewEvent {
    NewEvent {
        event_id: Uuid::now_v7(),
        event_type: event_type.to_owned(),
        schema_version: 1,
        payload: payload.into(),
        metadata: Metadata::default(),
        tags: Vec::new(),
    }
}

/// A [`new_event`] carrying `tags`, in the order given, for
/// [queries](crate::query) to select it by:
/// `tagged_event("SeatHeld", json!({ "seat": "12A" }), ["flight:0193"])`.
pub fn tagged_event<I, T>(event_type: &str, payload: impl Into<Payload>, tags: I) -> NewEvent
where
    I: IntoIterator<Item = T>,
    T: Into<String>,
{
    NewEvent {
        tags: tags.into_iter().map(Into::into).collect(),
        ..new_event(event_type, payload)
    }
}
