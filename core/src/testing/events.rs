//! Building events for tests.

use uuid::Uuid;

use crate::envelope::{Metadata, NewEvent};
use crate::payload::Payload;

/// A new event of `event_type` at schema version 1, with a fresh id and no
/// metadata: `new_event("Ticked", json!({ "n": 1 }))`.
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
