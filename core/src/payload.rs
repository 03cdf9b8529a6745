//! Payloads: an event's fields as stored JSON text, decoded when asked.

use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

/// An event's payload: its fields as JSON text, checked to be JSON but not
/// parsed into a tree. Domain events encode straight into it
/// ([`DomainEvent::encode`](crate::DomainEvent::encode)), stores keep the
/// text, and readers get it back as written.
///
/// Readers decode it straight into the type they want
/// ([`RecordedEvent::decode`](crate::RecordedEvent::decode) into a domain
/// event, [`decode`](Self::decode) into any type, [`to_value`](Self::to_value)
/// into a [`Value`]), so a projection that reads a long log builds no
/// intermediate JSON tree per event.
///
/// ```
/// use annals::Payload;
/// use serde_json::json;
///
/// let payload = Payload::from(json!({ "seats": 180 }));
/// #[derive(serde::Deserialize)]
/// struct Seats { seats: u32 }
/// assert_eq!(payload.decode::<Seats>()?.seats, 180);
/// assert_eq!(payload, json!({ "seats": 180 }));
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Payload(Box<RawValue>);

impl Payload {
    /// A payload from JSON text; an error when the text is not JSON.
    pub fn from_json(text: String) -> Result<Self, serde_json::Error> {
        RawValue::from_string(text).map(Self)
    }

    /// The JSON text.
    pub fn json(&self) -> &str {
        self.0.get()
    }

    /// Decodes the payload into `T`.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(self.json())
    }

    /// The payload as a JSON tree.
    pub fn to_value(&self) -> Result<Value, serde_json::Error> {
        self.decode()
    }

    /// Whether the payload is JSON `null`.
    pub fn is_null(&self) -> bool {
        self.json().trim() == "null"
    }
}

impl From<Box<RawValue>> for Payload {
    fn from(raw: Box<RawValue>) -> Self {
        Self(raw)
    }
}

impl From<Value> for Payload {
    fn from(value: Value) -> Self {
        Self::from(&value)
    }
}

impl From<&Value> for Payload {
    fn from(value: &Value) -> Self {
        // Serialising a `Value` cannot fail (its keys are strings), and what
        // it prints is JSON, so it is kept without being parsed again.
        match serde_json::value::to_raw_value(value) {
            Ok(raw) => Self(raw),
            Err(_) => unreachable!("a serde_json::Value always serialises"),
        }
    }
}

/// Equal when the JSON is equal (key order and spacing aside).
impl PartialEq for Payload {
    fn eq(&self, other: &Self) -> bool {
        self.json() == other.json()
            || matches!((self.to_value(), other.to_value()), (Ok(a), Ok(b)) if a == b)
    }
}

impl PartialEq<Value> for Payload {
    fn eq(&self, other: &Value) -> bool {
        self.to_value().is_ok_and(|value| value == *other)
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.json())
    }
}

impl fmt::Display for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.json())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn compares_as_json() {
        let a = Payload::from_json(r#"{"a": 1, "b": [true]}"#.into()).unwrap();
        let b = Payload::from(json!({"b": [true], "a": 1}));
        assert_eq!(a, b);
        assert_eq!(a, json!({"a": 1, "b": [true]}));
        assert_ne!(a, Payload::from(json!({"a": 2, "b": [true]})));
        assert!(Payload::from(Value::Null).is_null());
        assert!(!a.is_null());
    }

    #[test]
    fn refuses_what_is_not_json() {
        assert!(Payload::from_json("{\"a\": ".into()).is_err());
    }

    #[test]
    fn serializes_as_the_json_it_holds() {
        let payload = Payload::from(json!({"n": 1}));
        assert_eq!(serde_json::to_string(&payload).unwrap(), r#"{"n":1}"#);
        let back: Payload = serde_json::from_str(r#"{"n": 1}"#).unwrap();
        assert_eq!(back, payload);
    }
}
