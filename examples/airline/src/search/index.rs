//! The flight document, its mappings and the fold that keeps it.

use annals::{AggregateType, RecordedEvent};
use annals_elastic::{DocChange, DocumentProjection, FoldError};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use super::FlightView;
use crate::scheduling::{Flight, FlightEvent};

/// A flight in the search index: the view `GET /flights/{id}` returns, plus
/// the names the text search covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlightDoc {
    /// What readers see.
    #[serde(flatten)]
    pub view: FlightView,
    /// The origin's city.
    pub from_city: String,
    /// The destination's city.
    pub to_city: String,
    /// The origin airport's name.
    pub from_airport_name: String,
    /// The destination airport's name.
    pub to_airport_name: String,
}

impl From<FlightView> for FlightDoc {
    fn from(view: FlightView) -> Self {
        Self {
            from_city: view.from.city().to_owned(),
            to_city: view.to.city().to_owned(),
            from_airport_name: view.from.name().to_owned(),
            to_airport_name: view.to.name().to_owned(),
            view,
        }
    }
}

/// The flight search index: alias `flights`, one document per flight stream
/// (`flight-<id>`), id = flight id.
#[derive(Debug, Clone, Copy, Default)]
pub struct FlightIndex;

impl FlightIndex {
    /// The read model's version: bump it when the mappings or the fold
    /// change, and the next start rebuilds `flights_v<version>` blue/green.
    /// The airport reference data counts as the fold: its cities and names
    /// are in the documents (2: the full IATA list replaced 64 hand-written
    /// hubs, whose names and some cities changed).
    pub const VERSION: u32 = 2;
}

impl DocumentProjection for FlightIndex {
    type Event = FlightEvent;
    type Doc = FlightDoc;

    fn name(&self) -> &str {
        "flights"
    }

    fn version(&self) -> u32 {
        Self::VERSION
    }

    /// Codes and statuses are keywords (exact filters), times are dates,
    /// money is a long in minor units, seats are integers. The flight
    /// number, codes, cities and airport names are also copied into
    /// `search_text`, the field free-text queries match word prefixes in.
    fn mappings(&self) -> Value {
        let searchable_keyword = json!({ "type": "keyword", "copy_to": "search_text" });
        let searchable_text = json!({ "type": "text", "copy_to": "search_text" });
        json!({
            "dynamic": "strict",
            "properties": {
                "id": { "type": "keyword" },
                "flight_number": searchable_keyword,
                "from": searchable_keyword,
                "to": searchable_keyword,
                "from_city": searchable_text,
                "to_city": searchable_text,
                "from_airport_name": searchable_text,
                "to_airport_name": searchable_text,
                "departure": { "type": "date" },
                "arrival": { "type": "date" },
                "price": {
                    "properties": {
                        "amount": { "type": "long" },
                        "currency": { "type": "keyword" }
                    }
                },
                "seats_total": { "type": "integer" },
                "seats_available": { "type": "integer" },
                "status": { "type": "keyword" },
                "search_text": { "type": "text", "index_prefixes": {} }
            }
        })
    }

    fn settings(&self) -> Value {
        json!({ "number_of_shards": 1 })
    }

    fn document_id(&self, stream_id: &str) -> Option<String> {
        let id: Uuid = Flight::id_of(stream_id)?.parse().ok()?;
        Some(id.to_string())
    }

    fn fold(
        &self,
        doc: Option<FlightDoc>,
        event: &FlightEvent,
        _: &RecordedEvent,
    ) -> Result<DocChange<FlightDoc>, FoldError> {
        let Some(doc) = doc else {
            return match FlightView::fold(None, event) {
                Some(view) => Ok(DocChange::Upsert(view.into())),
                None => Err("the flight was never scheduled (no FlightScheduled before it)".into()),
            };
        };
        let FlightDoc {
            view,
            from_city,
            to_city,
            from_airport_name,
            to_airport_name,
        } = doc;
        let airports = (view.from, view.to);
        let Some(view) = FlightView::fold(Some(view), event) else {
            return Err("the fold dropped the flight".into());
        };
        // The names go with the airports: keep them while the airports stay,
        // rather than look them up and copy them for every event.
        if (view.from, view.to) != airports {
            return Ok(DocChange::Upsert(view.into()));
        }
        Ok(DocChange::Upsert(FlightDoc {
            view,
            from_city,
            to_city,
            from_airport_name,
            to_airport_name,
        }))
    }
}
