//! The flight read side as the API sees it: the document shape of
//! `GET /flights/{id}`, the search parameters, and the [`FlightReads`] trait
//! that the in-memory and the Elasticsearch read models implement.

mod guard;

pub use guard::{GuardedReads, ReadGuard};

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use annals::projection::{BatchOutcome, FailedEvent, Projection, ProjectionError};
use annals::{EventFilter, RecordedEvent};
use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use annals::AggregateType;

use crate::scheduling::{Flight, FlightEvent};
use crate::values::{AirportCode, FlightNumber, Money};

/// A flight as readers see it (`GET /flights/{id}` and search results).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlightView {
    /// The flight.
    pub id: Uuid,
    /// Marketing number.
    pub flight_number: FlightNumber,
    /// Origin.
    pub from: AirportCode,
    /// Destination.
    pub to: AirportCode,
    /// Departure, UTC.
    pub departure: DateTime<Utc>,
    /// Arrival, UTC.
    pub arrival: DateTime<Utc>,
    /// Price of one seat.
    pub price: Money,
    /// Seats on the flight.
    pub seats_total: u32,
    /// Seats still on sale.
    pub seats_available: u32,
    /// `scheduled` or `cancelled`.
    pub status: FlightViewStatus,
}

/// A flight's status on the read side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlightViewStatus {
    /// On sale.
    Scheduled,
    /// Will not fly: out of search, still readable by id.
    Cancelled,
}

impl FlightView {
    /// Folds one flight event into the view: the one definition of the read
    /// model, shared by every backend. `None` before the flight is scheduled.
    pub fn fold(view: Option<FlightView>, event: &FlightEvent) -> Option<FlightView> {
        if let FlightEvent::FlightScheduled {
            flight_id,
            flight_number,
            from,
            to,
            departure,
            arrival,
            seats,
            price,
        } = event
        {
            return Some(FlightView {
                id: *flight_id,
                flight_number: flight_number.clone(),
                from: *from,
                to: *to,
                departure: *departure,
                arrival: *arrival,
                price: *price,
                seats_total: *seats,
                seats_available: *seats,
                status: FlightViewStatus::Scheduled,
            });
        }
        let mut view = view?;
        match event {
            FlightEvent::FlightScheduled { .. } => {}
            FlightEvent::FlightRescheduled { departure, arrival } => {
                view.departure = *departure;
                view.arrival = *arrival;
            }
            FlightEvent::PriceChanged { price } => view.price = *price,
            FlightEvent::SeatsReserved { seats, .. } => {
                view.seats_available = view.seats_available.saturating_sub(*seats);
            }
            FlightEvent::SeatsReleased { seats, .. } => {
                view.seats_available = (view.seats_available + seats).min(view.seats_total);
            }
            FlightEvent::FlightCancelled { .. } => view.status = FlightViewStatus::Cancelled,
        }
        Some(view)
    }

    /// The text a `q` search matches: flight number, codes, cities, airport names.
    pub fn search_text(&self) -> String {
        format!(
            "{} {} {} {} {} {} {}",
            self.flight_number,
            self.from,
            self.from.city(),
            self.from.name(),
            self.to,
            self.to.city(),
            self.to.name()
        )
    }
}

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

/// Whether a view passes a search's filters (not text, not paging).
pub fn matches(view: &FlightView, search: &FlightSearch) -> bool {
    let day = view.departure.date_naive();
    let last_day = search.date_to.or(search.date);
    view.status == FlightViewStatus::Scheduled
        && search.from.is_none_or(|from| view.from == from)
        && search.to.is_none_or(|to| view.to == to)
        && search.date.is_none_or(|d| day >= d)
        && last_day.is_none_or(|d| day <= d)
        && search.max_price.is_none_or(|p| view.price.amount <= p)
        && search.min_seats.is_none_or(|s| view.seats_available >= s)
        && search
            .q
            .as_deref()
            .is_none_or(|q| text_matches(&view.search_text(), q))
}

/// Every word of the query starts a word of the text (case-insensitive).
fn text_matches(text: &str, query: &str) -> bool {
    let words: Vec<String> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect();
    query
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .all(|q| {
            let q = q.to_lowercase();
            words.iter().any(|w| w.starts_with(&q))
        })
}

/// The in-memory read model: the same fold, kept in a map; a projection
/// that the runner keeps current.
#[derive(Clone, Default)]
pub struct MemoryFlights {
    inner: Arc<RwLock<MemoryState>>,
}

#[derive(Default)]
struct MemoryState {
    flights: HashMap<Uuid, (u64, FlightView)>,
}

/// A flight event the in-memory read model could not apply.
#[derive(Debug, thiserror::Error)]
#[error("{event_type} {stream_version} of {stream}")]
struct NotApplied {
    event_type: String,
    stream_version: u64,
    stream: String,
    #[source]
    source: annals::EventError,
}

/// The events every flight read model handles.
pub fn flight_events() -> EventFilter {
    EventFilter::types(<FlightEvent as annals::DomainEvent>::type_names())
}

/// The name of the flight read model's projection.
pub const FLIGHTS_PROJECTION: &str = "flights";

impl MemoryFlights {
    /// An empty read model.
    pub fn new() -> Self {
        Self::default()
    }

    fn read<T>(&self, f: impl FnOnce(&MemoryState) -> T) -> T {
        f(&self
            .inner
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    fn sort_key(view: &FlightView, sort: SortOrder) -> (i64, Uuid) {
        let key = match sort {
            SortOrder::PriceAsc => view.price.amount,
            SortOrder::PriceDesc => -view.price.amount,
            SortOrder::DepartureAsc => view.departure.timestamp_millis(),
            SortOrder::DepartureDesc => -view.departure.timestamp_millis(),
        };
        (key, view.id)
    }
}

#[async_trait]
impl Projection for MemoryFlights {
    fn name(&self) -> String {
        FLIGHTS_PROJECTION.to_owned()
    }

    fn filter(&self) -> EventFilter {
        flight_events()
    }

    async fn apply(&self, batch: &[RecordedEvent]) -> Result<BatchOutcome, ProjectionError> {
        let mut state = self
            .inner
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut applied = BatchOutcome::applied();
        let mut failed_streams = Vec::new();
        for (index, recorded) in batch.iter().enumerate() {
            if failed_streams.contains(&recorded.stream_id) {
                continue;
            }
            let event = match recorded.decode::<FlightEvent>() {
                Ok(event) => event,
                Err(error) => {
                    failed_streams.push(recorded.stream_id.clone());
                    applied.failed.push(FailedEvent {
                        index,
                        error: Box::new(NotApplied {
                            event_type: recorded.event_type.clone(),
                            stream_version: recorded.stream_version,
                            stream: recorded.stream_id.clone(),
                            source: error,
                        }),
                    });
                    continue;
                }
            };
            let Some(id) =
                Flight::id_of(&recorded.stream_id).and_then(|id| id.parse::<Uuid>().ok())
            else {
                continue;
            };
            let current = state.flights.get(&id).cloned();
            // The stream version guards re-delivery: an event applies once.
            if current
                .as_ref()
                .is_some_and(|(v, _)| *v >= recorded.stream_version)
            {
                continue;
            }
            if let Some(view) = FlightView::fold(current.map(|(_, v)| v), &event) {
                state.flights.insert(id, (recorded.stream_version, view));
            }
        }
        Ok(applied)
    }
}

#[async_trait]
impl FlightReads for MemoryFlights {
    async fn flight(&self, id: Uuid) -> Result<Option<FlightView>, ReadError> {
        Ok(self.read(|s| s.flights.get(&id).map(|(_, v)| v.clone())))
    }

    async fn search(&self, search: &FlightSearch) -> Result<FlightPage, ReadError> {
        let after = match &search.after {
            None => None,
            Some(cursor) => {
                let (key, id) = cursor
                    .split_once('_')
                    .and_then(|(k, id)| Some((k.parse::<i64>().ok()?, id.parse::<Uuid>().ok()?)))
                    .ok_or_else(|| ReadError::BadCursor(cursor.clone()))?;
                Some((key, id))
            }
        };
        let mut hits: Vec<FlightView> = self.read(|s| {
            s.flights
                .values()
                .map(|(_, v)| v)
                .filter(|v| matches(v, search))
                .filter(|v| after.is_none_or(|a| Self::sort_key(v, search.sort) > a))
                .cloned()
                .collect()
        });
        hits.sort_by_key(|v| Self::sort_key(v, search.sort));
        let limit = search.limit.clamp(1, MAX_LIMIT) as usize;
        let more = hits.len() > limit;
        hits.truncate(limit);
        let next = more.then(|| hits.last()).flatten().map(|v| {
            let (key, id) = Self::sort_key(v, search.sort);
            format!("{key}_{id}")
        });
        Ok(FlightPage {
            flights: hits,
            next,
        })
    }

    fn projection_name(&self) -> String {
        FLIGHTS_PROJECTION.to_owned()
    }

    async fn health(&self) -> Result<String, ReadError> {
        Ok(format!(
            "memory, {} flights",
            self.read(|s| s.flights.len())
        ))
    }
}
