//! The flight read side as the API sees it: the search parameters, a page
//! of results, and the [`FlightReads`] port that the in-memory and the
//! Elasticsearch read models implement.

use annals::EventFilter;
use async_trait::async_trait;
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::FlightView;
use crate::scheduling::FlightEvent;
use crate::values::AirportCode;

/// The order of search results.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SortOrder {
    /// Cheapest first.
    #[serde(rename = "price")]
    PriceAsc,
    /// Dearest first.
    #[serde(rename = "-price")]
    PriceDesc,
    /// Earliest first (the default).
    #[default]
    #[serde(rename = "departure")]
    DepartureAsc,
    /// Latest first.
    #[serde(rename = "-departure")]
    DepartureDesc,
}

/// Default page size.
pub const DEFAULT_LIMIT: u32 = 20;
/// Largest page size.
pub const MAX_LIMIT: u32 = 100;

/// A flight search, validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlightSearch {
    /// Origin.
    pub from: Option<AirportCode>,
    /// Destination.
    pub to: Option<AirportCode>,
    /// First departure day (UTC).
    pub date: Option<NaiveDate>,
    /// Last departure day, inclusive (UTC); defaults to `date`.
    pub date_to: Option<NaiveDate>,
    /// Highest price, minor units.
    pub max_price: Option<i64>,
    /// Fewest seats available.
    pub min_seats: Option<u32>,
    /// Free text over flight number, codes, cities and airport names.
    pub q: Option<String>,
    /// Order.
    pub sort: SortOrder,
    /// Page size.
    pub limit: u32,
    /// The previous page's `next` cursor.
    pub after: Option<String>,
}

/// One page of results.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlightPage {
    /// The flights.
    pub flights: Vec<FlightView>,
    /// Cursor for the next page, if there is one.
    pub next: Option<String>,
}

/// Why the read side could not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// A cursor the backend did not issue.
    #[error("invalid cursor: {0}")]
    BadCursor(String),
    /// The read model has not caught up with a position in time.
    #[error("the read side is behind: {0}")]
    Behind(String),
    /// The backend is unreachable.
    #[error("read side unavailable: {0}")]
    Unavailable(String),
}

/// The flight read side.
#[async_trait]
pub trait FlightReads: Send + Sync + 'static {
    /// One flight, cancelled ones included.
    async fn flight(&self, id: Uuid) -> Result<Option<FlightView>, ReadError>;

    /// Scheduled flights matching the search, one page.
    async fn search(&self, search: &FlightSearch) -> Result<FlightPage, ReadError>;

    /// The name of the projection that feeds it: its checkpoint tells how
    /// far the read side has come (see [`annals::projection::wait_for_checkpoint`]).
    fn projection_name(&self) -> String;

    /// What the read side is and whether it answers, for `/health`.
    async fn health(&self) -> Result<String, ReadError>;
}

/// The events every flight read model handles.
pub fn flight_events() -> EventFilter {
    EventFilter::types(<FlightEvent as annals::DomainEvent>::type_names())
}

/// The name of the flight read model's projection.
pub const FLIGHTS_PROJECTION: &str = "flights";
