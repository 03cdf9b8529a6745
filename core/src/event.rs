//! Domain events: stable type names, schema versions and upcasting.

use serde_json::Value;

use crate::payload::Payload;

/// A domain event type: an enum whose variants are the events one aggregate
/// (or context) emits.
///
/// Implement it with `#[derive(DomainEvent)]`; each variant gets a stable
/// *event type* name (the variant name unless `#[event(name = "...")]` says
/// otherwise) and a *schema version* (`#[event(version = N)]`, default 1). The
/// stored payload is the variant's own fields as plain JSON; type and version
/// are stored beside it, never inside it.
///
/// Older versions are upgraded on read by the variant's upcasters,
/// `#[event(version = 3, upcast(v1 = path::v1_to_v2, v2 = path::v2_to_v3))]`,
/// each an [`Upcaster`].
pub trait DomainEvent: Sized + Send + Sync + 'static {
    /// Every event type this enum holds, with its current schema version.
    const TYPES: &'static [EventType];

    /// The stable type name of this event.
    fn event_type(&self) -> &'static str;

    /// The schema version this event is written at (its current version).
    fn schema_version(&self) -> u32;

    /// The payload: the variant's fields as JSON text.
    fn encode(&self) -> Result<Payload, EventError>;

    /// Rebuilds an event from its stored type, version and payload, running
    /// the upcaster chain when the stored version is older than the current
    /// one. A payload at the current version is decoded straight from its
    /// text.
    fn decode(event_type: &str, schema_version: u32, payload: &Payload)
    -> Result<Self, EventError>;

    /// The tags this event carries, stored beside it and used by
    /// [queries](crate::query) (`#[tag]` on a field, or a variant's
    /// `#[event(tag = ...)]`, declare them to the derive). None by default.
    fn tags(&self) -> Vec<String> {
        Vec::new()
    }

    /// The names of all event types of this enum, for filtering reads.
    fn type_names() -> Vec<&'static str> {
        Self::TYPES.iter().map(|t| t.name).collect()
    }
}

/// The name and current schema version of one event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EventType {
    /// The stable type name stored with each event.
    pub name: &'static str,
    /// The schema version new events of this type are written at.
    pub version: u32,
}

/// Upgrades a stored payload by one schema version (`vN` to `vN+1`).
///
/// Upcasters work on plain JSON so that old shapes need no Rust type of
/// their own.
pub type Upcaster = fn(Value) -> Result<Value, UpcastError>;

/// Why an upcaster could not upgrade a payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UpcastError(pub String);

impl UpcastError {
    /// An upcast error with a message that says what was wrong with the payload.
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

/// Why an event could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    /// The stored type name is not one this event enum knows.
    #[error("unknown event type {event_type:?} (schema version {schema_version})")]
    UnknownType {
        /// The stored type name.
        event_type: String,
        /// The stored schema version.
        schema_version: u32,
    },
    /// The stored version is newer than the code, or no upcaster reaches it.
    #[error(
        "event type {event_type:?} stored at schema version {schema_version}, \
         but this code knows versions 1 to {current} and has no upcaster for it"
    )]
    UnsupportedVersion {
        /// The stored type name.
        event_type: String,
        /// The stored schema version.
        schema_version: u32,
        /// The version this code writes.
        current: u32,
    },
    /// An upcaster refused the payload.
    #[error("upcasting {event_type:?} from schema version {from_version} failed: {source}")]
    Upcast {
        /// The stored type name.
        event_type: String,
        /// The version the failing upcaster starts from.
        from_version: u32,
        /// What the upcaster said.
        #[source]
        source: UpcastError,
    },
    /// The payload did not match the event's fields.
    #[error(
        "payload of {event_type:?} (schema version {schema_version}) does not decode: {source}"
    )]
    Decode {
        /// The stored type name.
        event_type: String,
        /// The version the payload was decoded at (after upcasting).
        schema_version: u32,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },
    /// The event could not be turned into JSON.
    #[error("event {event_type:?} does not encode: {source}")]
    Encode {
        /// The type name.
        event_type: String,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },
}

/// Runs the upcaster chain of one event type, from `stored` up to `current`.
///
/// `chain[i]` upgrades version `i + 1` to `i + 2`. Used by the derive macro;
/// public so that hand-written [`DomainEvent`] impls can share it.
pub fn upcast(
    event_type: &str,
    stored: u32,
    current: u32,
    chain: &[Upcaster],
    payload: Value,
) -> Result<Value, EventError> {
    if stored == 0 || stored > current || chain.len() + 1 < current as usize {
        return Err(EventError::UnsupportedVersion {
            event_type: event_type.to_owned(),
            schema_version: stored,
            current,
        });
    }
    let mut value = payload;
    for version in stored..current {
        let step = chain[(version - 1) as usize];
        value = step(value).map_err(|source| EventError::Upcast {
            event_type: event_type.to_owned(),
            from_version: version,
            source,
        })?;
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn add_b(mut v: Value) -> Result<Value, UpcastError> {
        v["b"] = json!(2);
        Ok(v)
    }
    fn add_c(mut v: Value) -> Result<Value, UpcastError> {
        v["c"] = json!(3);
        Ok(v)
    }
    fn refuse(_: Value) -> Result<Value, UpcastError> {
        Err(UpcastError::new("no"))
    }

    #[test]
    fn runs_the_chain_from_the_stored_version() {
        let chain: [Upcaster; 2] = [add_b, add_c];
        let v = upcast("t", 1, 3, &chain, json!({"a": 1})).unwrap();
        assert_eq!(v, json!({"a": 1, "b": 2, "c": 3}));
        let v = upcast("t", 2, 3, &chain, json!({"a": 1})).unwrap();
        assert_eq!(v, json!({"a": 1, "c": 3}));
    }

    #[test]
    fn names_type_and_version_when_it_cannot() {
        let chain: [Upcaster; 1] = [refuse];
        let err = upcast("Seat", 4, 2, &chain, json!({})).unwrap_err();
        assert!(err.to_string().contains("\"Seat\""));
        assert!(err.to_string().contains("version 4"));
        let err = upcast("Seat", 1, 2, &chain, json!({})).unwrap_err();
        assert!(matches!(
            err,
            EventError::Upcast {
                from_version: 1,
                ..
            }
        ));
    }
}
