//! Search: the flight read side.
//!
//! One view of a flight ([`FlightView`]), folded from the [`FlightEvent`]s
//! by every backend with the same fold; the port the API reads through
//! ([`FlightReads`]: a flight by id, cancelled ones included, and searches
//! over scheduled flights); its two implementations, in memory
//! ([`MemoryFlights`]) and on Elasticsearch or OpenSearch ([`ElasticFlights`],
//! whose documents [`FlightIndex`] folds and whose queries [`search_request`]
//! builds); and the guard that keeps the API answering when the backend does
//! not ([`GuardedReads`]). What every API shares: the search parameters and
//! their validation ([`SearchInput`]), and the queries themselves, with
//! read-your-writes ([`FlightQueries`]).
//!
//! [`FlightEvent`]: crate::scheduling::FlightEvent

mod elastic;
mod guard;
mod index;
mod memory;
mod params;
mod queries;
mod query;
mod reads;
mod view;

pub use elastic::ElasticFlights;
pub use guard::{GuardedReads, ReadGuard};
pub use index::{FlightDoc, FlightIndex};
pub use memory::{MemoryFlights, matches};
pub use params::{
    MAX_CURSOR, MAX_TEXT, Raw, SearchError, SearchInput, flight_id, position, sort_order,
};
pub use queries::{Answer, FlightQueries, QueryError};
pub use query::search_request;
pub use reads::{
    DEFAULT_LIMIT, FLIGHTS_PROJECTION, FlightPage, FlightReads, FlightSearch, MAX_LIMIT, ReadError,
    SortOrder, flight_events,
};
pub use view::{FlightView, FlightViewStatus};
