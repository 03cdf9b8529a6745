//! The in-memory flight read model: the same fold, kept in a map.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use annals::projection::{BatchOutcome, FailedEvent, Projection, ProjectionError};
use annals::{AggregateType, EventFilter, RecordedEvent};
use async_trait::async_trait;
use uuid::Uuid;

use super::{
    FLIGHTS_PROJECTION, FlightPage, FlightReads, FlightSearch, FlightView, FlightViewStatus,
    MAX_LIMIT, ReadError, SortOrder, flight_events,
};
use crate::scheduling::{Flight, FlightEvent};

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
