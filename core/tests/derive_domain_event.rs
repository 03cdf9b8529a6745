//! `#[derive(DomainEvent)]` and `#[derive(AggregateType)]` from the user's side.

use annals::{Aggregate, AggregateType, DomainEvent, EventError, EventType, Payload, UpcastError};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Release {
    seat: String,
    reason: String,
}

/// Exercises every payload shape, names, versions and serde field attributes.
#[derive(Debug, Clone, PartialEq, DomainEvent)]
enum SeatEvent {
    /// Today at v3: v1 called the passenger `name`, v2 stored the seat as a number.
    #[event(name = "SeatHeld", version = 3, upcast(v1 = v1_to_v2, v2 = upcasters::v2_to_v3))]
    Held {
        seat: String,
        passenger: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        note: Option<String>,
    },
    Released(Release),
    Closed,
    #[event(name = "fare.changed")]
    FareChanged {
        #[serde(rename = "amountCents")]
        amount_cents: i64,
        #[serde(default)]
        currency: String,
        r#type: String,
    },
    #[event(version = 2, upcast(v1 = refuse))]
    Refusing {
        n: u32,
    },
    #[serde(rename_all = "camelCase")]
    Renamed {
        passenger_name: String,
    },
    Empty {},
}

fn v1_to_v2(mut payload: Value) -> Result<Value, UpcastError> {
    let object = payload
        .as_object_mut()
        .ok_or_else(|| UpcastError::new("not an object"))?;
    let name = object
        .remove("name")
        .ok_or_else(|| UpcastError::new("no `name`"))?;
    object.insert("passenger".into(), name);
    object.insert("via".into(), json!("v1_to_v2"));
    Ok(payload)
}

mod upcasters {
    use annals::UpcastError;
    use serde_json::Value;

    pub fn v2_to_v3(mut payload: Value) -> Result<Value, UpcastError> {
        let seat = payload["seat"]
            .as_u64()
            .ok_or_else(|| UpcastError::new("`seat` is not a number"))?;
        payload["seat"] = Value::String(format!("{seat}A"));
        Ok(payload)
    }
}

fn refuse(_: Value) -> Result<Value, UpcastError> {
    Err(UpcastError::new("v1 refusals cannot be recovered"))
}

fn roundtrip(event: &SeatEvent) -> Value {
    let payload = event.encode().unwrap();
    let back = SeatEvent::decode(event.event_type(), event.schema_version(), &payload).unwrap();
    assert_eq!(&back, event);
    payload.to_value().unwrap()
}

#[test]
fn named_variant_roundtrips_as_a_plain_object() {
    let event = SeatEvent::Held {
        seat: "12A".into(),
        passenger: "Ada".into(),
        note: Some("window".into()),
    };
    assert_eq!(event.event_type(), "SeatHeld");
    assert_eq!(event.schema_version(), 3);
    assert_eq!(
        roundtrip(&event),
        json!({"seat": "12A", "passenger": "Ada", "note": "window"})
    );
}

#[test]
fn skip_serializing_if_is_forwarded() {
    let event = SeatEvent::Held {
        seat: "1C".into(),
        passenger: "Grace".into(),
        note: None,
    };
    assert_eq!(
        roundtrip(&event),
        json!({"seat": "1C", "passenger": "Grace"})
    );
}

#[test]
fn newtype_variant_payload_is_the_inner_value() {
    let event = SeatEvent::Released(Release {
        seat: "3B".into(),
        reason: "no-show".into(),
    });
    assert_eq!(event.event_type(), "Released");
    assert_eq!(
        roundtrip(&event),
        json!({"seat": "3B", "reason": "no-show"})
    );
}

#[test]
fn unit_variant_payload_is_an_empty_object() {
    let event = SeatEvent::Closed;
    assert_eq!(roundtrip(&event), json!({}));
    assert_eq!(
        SeatEvent::decode("Closed", 1, &Payload::from(&Value::Null)).unwrap(),
        event
    );
    assert_eq!(
        SeatEvent::decode("Closed", 1, &Payload::from(&json!({}))).unwrap(),
        event
    );
    let err = SeatEvent::decode("Closed", 1, &Payload::from(&json!("closed"))).unwrap_err();
    assert!(matches!(err, EventError::Decode { .. }), "{err:?}");

    assert_eq!(roundtrip(&SeatEvent::Empty {}), json!({}));
}

#[test]
fn name_override_and_field_renames() {
    let event = SeatEvent::FareChanged {
        amount_cents: 12_50,
        currency: "EUR".into(),
        r#type: "promo".into(),
    };
    assert_eq!(event.event_type(), "fare.changed");
    assert_eq!(
        roundtrip(&event),
        json!({"amountCents": 1250, "currency": "EUR", "type": "promo"})
    );
    // The variant name is not a type name once overridden.
    let err = SeatEvent::decode("FareChanged", 1, &Payload::from(&json!({}))).unwrap_err();
    assert!(matches!(err, EventError::UnknownType { .. }), "{err:?}");
}

#[test]
fn variant_rename_all_is_forwarded() {
    let event = SeatEvent::Renamed {
        passenger_name: "Ada".into(),
    };
    assert_eq!(roundtrip(&event), json!({"passengerName": "Ada"}));
}

#[test]
fn serde_default_fills_a_field_absent_from_stored_json() {
    let stored = json!({"amountCents": 900, "type": "base"});
    let event = SeatEvent::decode("fare.changed", 1, &Payload::from(&stored)).unwrap();
    assert_eq!(
        event,
        SeatEvent::FareChanged {
            amount_cents: 900,
            currency: String::new(),
            r#type: "base".into(),
        }
    );
}

#[test]
fn types_lists_every_name_with_its_current_version() {
    assert_eq!(
        SeatEvent::TYPES,
        &[
            EventType {
                name: "SeatHeld",
                version: 3
            },
            EventType {
                name: "Released",
                version: 1
            },
            EventType {
                name: "Closed",
                version: 1
            },
            EventType {
                name: "fare.changed",
                version: 1
            },
            EventType {
                name: "Refusing",
                version: 2
            },
            EventType {
                name: "Renamed",
                version: 1
            },
            EventType {
                name: "Empty",
                version: 1
            },
        ]
    );
    assert_eq!(
        SeatEvent::type_names(),
        [
            "SeatHeld",
            "Released",
            "Closed",
            "fare.changed",
            "Refusing",
            "Renamed",
            "Empty"
        ]
    );
}

#[test]
fn a_v1_payload_is_upcast_through_the_whole_chain() {
    let stored = json!({"seat": 12, "name": "Ada"});
    let event = SeatEvent::decode("SeatHeld", 1, &Payload::from(&stored)).unwrap();
    assert_eq!(
        event,
        SeatEvent::Held {
            seat: "12A".into(),
            passenger: "Ada".into(),
            note: None,
        }
    );
    assert_eq!(event.schema_version(), 3);
}

#[test]
fn a_v2_payload_runs_only_the_v2_to_v3_step() {
    // Had v1_to_v2 run it would have failed: there is no `name`.
    let stored = json!({"seat": 7, "passenger": "Grace", "note": "aisle"});
    let event = SeatEvent::decode("SeatHeld", 2, &Payload::from(&stored)).unwrap();
    assert_eq!(
        event,
        SeatEvent::Held {
            seat: "7A".into(),
            passenger: "Grace".into(),
            note: Some("aisle".into()),
        }
    );
}

#[test]
fn a_current_payload_runs_no_upcaster() {
    // v2_to_v3 would refuse a string seat.
    let stored = json!({"seat": "7A", "passenger": "Grace"});
    assert!(SeatEvent::decode("SeatHeld", 3, &Payload::from(&stored)).is_ok());
}

#[test]
fn a_version_newer_than_the_code_is_unsupported() {
    let err = SeatEvent::decode("SeatHeld", 4, &Payload::from(&json!({}))).unwrap_err();
    match &err {
        EventError::UnsupportedVersion {
            event_type,
            schema_version,
            current,
        } => {
            assert_eq!(event_type, "SeatHeld");
            assert_eq!(*schema_version, 4);
            assert_eq!(*current, 3);
        }
        other => panic!("expected UnsupportedVersion, got {other:?}"),
    }
    assert!(err.to_string().contains("\"SeatHeld\""), "{err}");
    assert!(err.to_string().contains("version 4"), "{err}");

    let err = SeatEvent::decode("Closed", 2, &Payload::from(&json!({}))).unwrap_err();
    assert!(
        matches!(err, EventError::UnsupportedVersion { current: 1, .. }),
        "{err:?}"
    );
    let err = SeatEvent::decode("Closed", 0, &Payload::from(&json!({}))).unwrap_err();
    assert!(
        matches!(err, EventError::UnsupportedVersion { .. }),
        "{err:?}"
    );
}

#[test]
fn an_unknown_type_names_type_and_version() {
    let err = SeatEvent::decode("SeatTeleported", 7, &Payload::from(&json!({}))).unwrap_err();
    assert!(
        matches!(&err, EventError::UnknownType { event_type, schema_version: 7 } if event_type == "SeatTeleported"),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(message.contains("SeatTeleported"), "{message}");
    assert!(message.contains('7'), "{message}");
}

#[test]
fn a_refusing_upcaster_is_an_upcast_error() {
    let err = SeatEvent::decode("Refusing", 1, &Payload::from(&json!({"n": 1}))).unwrap_err();
    match &err {
        EventError::Upcast {
            event_type,
            from_version,
            source,
        } => {
            assert_eq!(event_type, "Refusing");
            assert_eq!(*from_version, 1);
            assert_eq!(source.0, "v1 refusals cannot be recovered");
        }
        other => panic!("expected Upcast, got {other:?}"),
    }
    assert!(SeatEvent::decode("Refusing", 2, &Payload::from(&json!({"n": 1}))).is_ok());
}

#[test]
fn a_payload_that_does_not_fit_is_a_decode_error() {
    let err = SeatEvent::decode("SeatHeld", 3, &Payload::from(&json!({"seat": "1A"}))).unwrap_err();
    match &err {
        EventError::Decode {
            event_type,
            schema_version,
            ..
        } => {
            assert_eq!(event_type, "SeatHeld");
            assert_eq!(*schema_version, 3);
        }
        other => panic!("expected Decode, got {other:?}"),
    }
    assert!(err.to_string().contains("passenger"), "{err}");
}

/// The enum may carry its own serde derive; the two do not interfere.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
#[serde(tag = "kind")]
enum AlsoSerde {
    Opened {
        #[serde(default)]
        by: String,
    },
    Shut,
}

#[test]
fn an_enum_with_its_own_serde_derive() {
    let event = AlsoSerde::Opened { by: "ops".into() };
    assert_eq!(event.encode().unwrap(), json!({"by": "ops"}));
    assert_eq!(
        serde_json::to_value(&event).unwrap(),
        json!({"kind": "Opened", "by": "ops"})
    );
    assert_eq!(
        AlsoSerde::decode("Opened", 1, &Payload::from(&json!({}))).unwrap(),
        AlsoSerde::Opened { by: String::new() }
    );
    assert_eq!(AlsoSerde::Shut.encode().unwrap(), json!({}));
}

mod with_module {
    //! `#[serde(with = ...)]` and `serialize_with` see the field through a reference.
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &u32, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&value.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, PartialEq, DomainEvent)]
enum Counted {
    Counted {
        #[serde(with = "with_module")]
        count: u32,
        #[serde(skip_serializing_if = "Vec::is_empty", default)]
        tags: Vec<String>,
    },
}

#[test]
fn serde_with_is_forwarded() {
    let event = Counted::Counted {
        count: 42,
        tags: vec![],
    };
    let payload = event.encode().unwrap();
    assert_eq!(payload, json!({"count": "42"}));
    assert_eq!(Counted::decode("Counted", 1, &payload).unwrap(), event);
}

/// Field names that the generated code also uses, and `Self::` upcaster paths.
#[derive(Debug, PartialEq, DomainEvent)]
enum Clashing {
    #[event(version = 2, upcast(v1 = Self::v1_to_v2))]
    Clashing {
        payload: String,
        source: String,
        event_type: String,
        schema_version: u32,
        chain: u8,
        inner: bool,
    },
}

impl Clashing {
    fn v1_to_v2(mut payload: Value) -> Result<Value, UpcastError> {
        payload["chain"] = json!(9);
        Ok(payload)
    }
}

#[test]
fn generated_code_does_not_clash_with_field_names() {
    let event = Clashing::Clashing {
        payload: "p".into(),
        source: "s".into(),
        event_type: "e".into(),
        schema_version: 7,
        chain: 1,
        inner: true,
    };
    let payload = event.encode().unwrap();
    assert_eq!(Clashing::decode("Clashing", 2, &payload).unwrap(), event);
    let mut old = payload.to_value().unwrap();
    old.as_object_mut().unwrap().remove("chain");
    let Clashing::Clashing { chain, .. } =
        Clashing::decode("Clashing", 1, &Payload::from(&old)).unwrap();
    assert_eq!(chain, 9);
}

/// An enum without variants still derives (and knows no types).
#[derive(Debug, DomainEvent)]
enum Nothing {}

#[test]
fn an_empty_enum_knows_no_types() {
    assert!(Nothing::TYPES.is_empty());
    let err = Nothing::decode("Anything", 1, &Payload::from(&json!({}))).unwrap_err();
    assert!(matches!(err, EventError::UnknownType { .. }));
}

// ---------------------------------------------------------------------------
// #[derive(AggregateType)]

#[derive(Debug, Default, annals::AggregateType)]
#[aggregate(name = "flight_booking")]
struct FlightBooking {
    seats: u32,
}

impl Aggregate for FlightBooking {
    type Event = SeatEvent;
    type Error = std::convert::Infallible;
    fn apply(&mut self, event: &SeatEvent) {
        if let SeatEvent::Held { .. } = event {
            self.seats += 1;
        }
    }
}

#[derive(Debug, Default, annals::AggregateType)]
#[aggregate(name = "flight")]
struct FlightState;

#[derive(Debug, Default, PartialEq, Serialize, Deserialize, annals::AggregateType)]
#[aggregate(name = "ledger", snapshot, snapshot_version = 3)]
struct Ledger {
    entries: Vec<String>,
    total: i64,
}

#[derive(Debug, Default, PartialEq, Serialize, Deserialize, annals::AggregateType)]
#[aggregate(name = "door", snapshot)]
enum Door {
    #[default]
    Closed,
    Open {
        by: String,
    },
}

#[derive(Debug, Default, annals::AggregateType)]
#[aggregate(name = "http_session")]
struct HTTPSession;

#[derive(Debug, Default, Serialize, Deserialize, annals::AggregateType)]
#[aggregate(name = "generic", snapshot)]
struct Generic<T> {
    value: T,
}

#[test]
fn aggregate_name_defaults_to_snake_case() {
    assert_eq!(FlightBooking::NAME, "flight_booking");
    assert_eq!(HTTPSession::NAME, "http_session");
    assert_eq!(Door::NAME, "door");
    assert_eq!(FlightBooking::SNAPSHOT_VERSION, 1);
    assert_eq!(FlightBooking::default().snapshot(), None);
    assert!(FlightBooking::restore(&json!({"seats": 1})).is_none());
}

#[test]
fn aggregate_name_override() {
    assert_eq!(FlightState::NAME, "flight");
    assert_eq!(Generic::<u8>::NAME, "generic");
}

#[test]
fn stream_id_is_name_dash_id() {
    assert_eq!(FlightBooking::stream_id(&42), "flight_booking-42");
    assert_eq!(FlightState::stream_id(&"AF123"), "flight-AF123");
}

#[test]
fn snapshot_roundtrips_through_serde() {
    assert_eq!(Ledger::SNAPSHOT_VERSION, 3);
    let ledger = Ledger {
        entries: vec!["a".into(), "b".into()],
        total: -7,
    };
    let snapshot = ledger.snapshot().unwrap();
    assert_eq!(snapshot, json!({"entries": ["a", "b"], "total": -7}));
    assert_eq!(Ledger::restore(&snapshot), Some(ledger));
    assert_eq!(Ledger::restore(&json!({"entries": 1})), None);

    let door = Door::Open { by: "ops".into() };
    assert_eq!(Door::restore(&door.snapshot().unwrap()), Some(door));

    let generic = Generic { value: 5u8 };
    assert_eq!(
        Generic::<u8>::restore(&generic.snapshot().unwrap()).map(|g| g.value),
        Some(5)
    );
}

#[test]
fn each_variant_has_a_checked_type_name_constant() {
    assert_eq!(SeatEvent::HELD, "SeatHeld");
    assert_eq!(SeatEvent::RELEASED, "Released");
    assert_eq!(SeatEvent::FARE_CHANGED, "fare.changed");
    assert_eq!(
        SeatEvent::HELD,
        SeatEvent::Held {
            seat: "1A".into(),
            passenger: "Ada".into(),
            note: None
        }
        .event_type()
    );
    // Usable as patterns and in filters.
    let kind = |name: &str| match name {
        SeatEvent::HELD => "held",
        SeatEvent::CLOSED => "closed",
        _ => "other",
    };
    assert_eq!(kind("SeatHeld"), "held");
    assert!(annals::EventFilter::types([SeatEvent::CLOSED]).matches("Closed"));
}

#[derive(Debug, Clone, PartialEq, DomainEvent)]
enum Tagged {
    Scheduled {
        #[tag("flight")]
        flight_id: String,
        #[tag]
        number: String,
        day: u32,
    },
    #[event(tag = format!("day:{day}"), tag = "fixed")]
    Moved {
        day: u32,
    },
    Plain,
}

#[test]
fn fields_and_expressions_tag_events() {
    let scheduled = Tagged::Scheduled {
        flight_id: "0193".into(),
        number: "AN123".into(),
        day: 1,
    };
    assert_eq!(scheduled.tags(), ["flight:0193", "number:AN123"]);
    assert_eq!(Tagged::Moved { day: 7 }.tags(), ["day:7", "fixed"]);
    assert!(Tagged::Plain.tags().is_empty());
    // Tags travel beside the payload, never in it.
    let new = annals::NewEvent::from_domain(&scheduled, annals::Metadata::default()).unwrap();
    assert_eq!(new.tags, ["flight:0193", "number:AN123"]);
    assert_eq!(
        new.payload.to_value().unwrap(),
        json!({ "flight_id": "0193", "number": "AN123", "day": 1 })
    );
}
