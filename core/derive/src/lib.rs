//! Derive macros for [annals](https://docs.rs/annals): `#[derive(DomainEvent)]`
//! and `#[derive(AggregateType)]`.
//!
//! Use them through `annals` (`use annals::{Aggregate, DomainEvent};`), not
//! from this crate directly: the generated code refers to `::annals`.
#![warn(missing_docs)]

use proc_macro::TokenStream;
use syn::{DeriveInput, parse_macro_input};

mod aggregate;
mod domain_event;

/// Derives `annals::DomainEvent` for an enum whose variants are events.
///
/// Each variant is one *event type*. What is stored for an event is its type
/// name, its schema version and its payload; the payload is the variant's own
/// fields as a plain JSON object (type and version are never inside it).
///
/// # Variant attributes: `#[event(...)]`
///
/// | attribute | meaning | default |
/// | --- | --- | --- |
/// | `name = "..."` | the stable type name stored with the event; keep it when renaming the variant | the variant name |
/// | `version = N` | the schema version new events are written at (N ≥ 1) | `1` |
/// | `upcast(v1 = path, v2 = path, ...)` | the upcasters: `vK` upgrades a payload from version K to K + 1; each is an `annals::Upcaster`, `fn(serde_json::Value) -> Result<serde_json::Value, annals::UpcastError>` | none |
///
/// Keys can be spread over several `#[event]` attributes. A variant at
/// `version = N` must have exactly the upcasters `v1` to `v{N-1}`; anything
/// else is a compile error.
///
/// # Payloads
///
/// * **Named fields** `V { a: A, b: B }`: the payload is `{"a": .., "b": ..}`.
///   `#[serde(...)]` attributes on the fields are honoured (`default`,
///   `rename`, `alias`, `skip_serializing_if`, `with`, ...), as is a
///   `#[serde(rename_all = "...")]` on the variant. Every field type must be
///   `Serialize + DeserializeOwned`.
/// * **Newtype** `V(Inner)`: the payload is `Inner` serialized as-is (so
///   `Inner` should serialize to a JSON object).
/// * **Unit** `V`: the payload is `{}`; `{}` and `null` decode.
/// * Tuple variants with more than one field are refused: name the fields.
///
/// The enum needs no serde derive of its own (it may have one: the two do
/// not interact, and enum-level serde attributes do not affect payloads). It
/// must not be generic.
///
/// # Tags
///
/// An event's tags select it in [queries](../annals/query/index.html) (dynamic
/// consistency boundaries). `#[tag]` on a field tags the event with
/// `<field name>:<value>` (the value's `Display`), `#[tag("flight")]` with
/// `flight:<value>`; `#[event(tag = <expression>)]` on the variant adds a tag
/// computed from its fields, which the expression names directly:
/// `#[event(tag = format!("flight_number:{flight_number}@{}", departure.date_naive()))]`.
/// Tags are stored beside the event (`NewEvent::tags`), never in the payload.
///
/// # Type-name constants
///
/// Each variant also gets an associated constant holding its type name, named
/// after the variant in screaming snake case (`Held` with `name = "SeatHeld"`
/// gives `SeatEvent::HELD == "SeatHeld"`), so filters and matches on stored
/// type names are checked by the compiler:
/// `EventFilter::types([SeatEvent::HELD, SeatEvent::CLOSED])`, or
/// `match event.event_type.as_str() { SeatEvent::HELD => .., _ => .. }`.
///
/// # Decoding
///
/// `decode(type, version, payload)` picks the variant by type name. At the
/// current version it deserializes straight from the payload's JSON text
/// (`&annals::Payload`, no `serde_json::Value` in between); at an older
/// version it parses the text into a `Value` and runs the upcasters from the
/// stored version up through `annals::event::upcast` first. It fails with `EventError::UnknownType` for a
/// name it does not know, `UnsupportedVersion` for a version newer than the
/// code (or 0), `Upcast` when an upcaster refuses, and `Decode` when the
/// (upcast) payload does not fit the fields.
///
/// # Example
///
/// ```
/// use annals::{DomainEvent, UpcastError};
/// use serde_json::{json, Value};
///
/// #[derive(Debug, Clone, PartialEq, DomainEvent)]
/// pub enum SeatEvent {
///     /// Stored as type "SeatHeld", version 3; v1 and v2 payloads are upgraded on read.
///     #[event(name = "SeatHeld", version = 3, upcast(v1 = v1_to_v2, v2 = upcasters::v2_to_v3))]
///     Held {
///         seat: String,
///         passenger: String,
///         // Missing in older payloads? Default it instead of writing an upcaster.
///         #[serde(default, skip_serializing_if = "Option::is_none")]
///         note: Option<String>,
///     },
///     /// Payload: the `Release` struct as-is.
///     Released(Release),
///     /// Payload: `{}`.
///     Closed,
/// }
///
/// #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
/// pub struct Release { pub seat: String }
///
/// /// v1 called the passenger `name`.
/// fn v1_to_v2(mut payload: Value) -> Result<Value, UpcastError> {
///     let object = payload.as_object_mut().ok_or_else(|| UpcastError::new("not an object"))?;
///     let name = object.remove("name").ok_or_else(|| UpcastError::new("no `name`"))?;
///     object.insert("passenger".into(), name);
///     Ok(payload)
/// }
///
/// mod upcasters {
///     use annals::UpcastError;
///     use serde_json::Value;
///     /// v2 stored the seat as a number.
///     pub fn v2_to_v3(mut payload: Value) -> Result<Value, UpcastError> {
///         let seat = payload["seat"].as_u64().ok_or_else(|| UpcastError::new("seat"))?;
///         payload["seat"] = Value::String(seat.to_string());
///         Ok(payload)
///     }
/// }
///
/// let event = SeatEvent::Closed;
/// assert_eq!(event.event_type(), "Closed");
/// assert_eq!(event.encode().unwrap(), json!({}));
///
/// let old = json!({ "seat": 12, "name": "Ada" });
/// let event = SeatEvent::decode("SeatHeld", 1, &old.into()).unwrap();
/// assert_eq!(
///     event,
///     SeatEvent::Held { seat: "12".into(), passenger: "Ada".into(), note: None }
/// );
/// assert_eq!(event.schema_version(), 3);
/// ```
///
/// # Compile errors
///
/// The derive refuses, with a message that says what to change:
///
/// * structs, unions and generic enums;
/// * two variants with the same type name;
/// * `version = 0`;
/// * a missing upcaster: "event `X` is at version 3 but has no upcaster from
///   v2; add `v2 = path::to::fn_v2_to_v3` to its `upcast(...)`";
/// * an upcaster at or above the current version (it would never run);
/// * duplicate or unknown keys, and `upcast` keys that are not `vN`;
/// * tuple variants with several fields;
/// * `#[serde(...)]` on a newtype variant's field;
/// * `#[event(...)]` on the enum or on a field.
///
/// An upcaster of the wrong type is a type error at its path.
#[proc_macro_derive(DomainEvent, attributes(event, serde, tag))]
pub fn derive_domain_event(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    domain_event::expand(&input)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// Derives `annals::AggregateType`: an aggregate's name, stream naming and
/// (optionally) snapshots.
///
/// It does not implement `annals::Aggregate`; write that by hand (the event
/// type, the error type and `apply`), and one `annals::Handle<Command>` impl
/// per command.
///
/// # Type attributes: `#[aggregate(...)]`
///
/// | attribute | meaning | default |
/// | --- | --- | --- |
/// | `name = "..."` | `NAME`, the stable aggregate name that prefixes its streams (`<name>-<id>`) | required: it is stored data, so renaming the type must not change it |
/// | `snapshot` | implements `snapshot()` / `restore()` through serde: the type must be `Serialize + DeserializeOwned`; `restore` returns `None` for a state that does not deserialize, and the repository then replays the stream | no snapshots |
/// | `snapshot_version = N` | `SNAPSHOT_VERSION`: bump it when the state's shape changes, and older snapshots are ignored (needs `snapshot`) | `1` |
///
/// Works on structs and enums, generic ones included (with `snapshot`, the
/// impl then requires `Self: Serialize + DeserializeOwned`).
///
/// # Example
///
/// ```
/// use annals::{Aggregate, AggregateType, DomainEvent};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Clone, PartialEq, DomainEvent)]
/// pub enum BookingEvent {
///     Booked { seats: u32 },
///     Cancelled,
/// }
///
/// #[derive(Debug, Default, Serialize, Deserialize, AggregateType)]
/// #[aggregate(name = "flight_booking", snapshot, snapshot_version = 2)]
/// pub struct FlightBooking {
///     seats: u32,
///     cancelled: bool,
/// }
///
/// impl Aggregate for FlightBooking {
///     type Event = BookingEvent;
///     type Error = std::convert::Infallible;
///     fn apply(&mut self, event: &BookingEvent) {
///         match event {
///             BookingEvent::Booked { seats } => self.seats += seats,
///             BookingEvent::Cancelled => self.cancelled = true,
///         }
///     }
/// }
///
/// assert_eq!(FlightBooking::NAME, "flight_booking");
/// assert_eq!(FlightBooking::stream_id(&42), "flight_booking-42");
/// assert_eq!(FlightBooking::SNAPSHOT_VERSION, 2);
///
/// #[derive(Debug, Default, AggregateType)]
/// #[aggregate(name = "flight")]
/// pub struct FlightState { /* ... */ }
/// assert_eq!(FlightState::stream_id(&"AF123"), "flight-AF123");
/// ```
///
/// # Compile errors
///
/// Unions; a missing `name` (the message suggests the type name in snake
/// case); unknown or duplicate keys; an empty `name`; `snapshot_version = 0`;
/// `snapshot_version` without `snapshot`; `#[aggregate]` on a field or variant.
/// With `snapshot`, a type that is not `Serialize`/`Deserialize` is reported
/// at the `snapshot` keyword.
#[proc_macro_derive(AggregateType, attributes(aggregate))]
pub fn derive_aggregate(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    aggregate::expand(&input)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// Collects errors so that one compile reports all of them.
#[derive(Default)]
struct Errors(Option<syn::Error>);

impl Errors {
    fn push(&mut self, error: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(error),
            None => self.0 = Some(error),
        }
    }

    fn finish(self) -> syn::Result<()> {
        self.0.map_or(Ok(()), Err)
    }
}
