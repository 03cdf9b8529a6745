//! The REST API (DESIGN §5.1): routes, auth, errors, limits, metrics and the
//! OpenAPI document, over any store and any flight read model.
//!
//! [`router`] builds the whole service from an [`AppState`]: the write side
//! ([`Airline`]), the flight read side ([`FlightReads`]), the bearer tokens,
//! the projection runners to report on, and the [`HttpSettings`]. Every error
//! answer, including unknown routes, wrong methods, oversized bodies, rate
//! limiting and timeouts, has the shape `{"error": {"code", "message"}}`.

mod auth;
mod bookings;
mod error;
mod extract;
mod flights;
mod limits;
mod metrics;
mod openapi;
mod ops;
mod parse_errors;
mod server;

use std::sync::Arc;
use std::time::Duration;

use annals::projection::ProjectionStore;
use axum::Router;
use axum::routing::{get, post};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::app::Airline;
use crate::background::RunnerInfo;
use crate::search::{FlightQueries, FlightReads};

pub use auth::{
    Authorized, BookingCommands, BookingReads, Caller, FlightCommands, Policy, Role, Tokens,
    TokensError,
};
pub use bookings::{BookingRequest, PaymentDetails, SegmentRequest};
pub use error::{ApiError, ErrorBody, ErrorDetail};
pub use extract::{Id, Json, JsonOrEmpty, Query};
pub use limits::{ClientKey, RateLimit};
pub use metrics::prometheus;
pub use openapi::ApiDoc;
pub use server::serve;

/// The header that carries a command's position token.
pub const POSITION_HEADER: &str = "x-annals-position";

/// Limits and timeouts of the HTTP layer.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpSettings {
    /// Largest request body, in bytes (413 above).
    pub body_limit: usize,
    /// Longest a request may take (503 `timeout` after).
    pub request_timeout: Duration,
    /// How long a query with `min_position` waits for the read side
    /// (503 `read_side_behind` after). Keep it below `request_timeout`.
    pub read_wait: Duration,
    /// Token-bucket rate limit per client; `None` turns it off.
    pub rate_limit: Option<RateLimit>,
    /// A projection further behind than this makes `/health` answer 503.
    pub max_projection_lag: Duration,
    /// Longest a client may take to send a request's headers, from the
    /// moment the server starts reading them; the connection is closed after
    /// (no answer). It also closes idle keep-alive connections, whose next
    /// request head is awaited under the same clock.
    pub header_read_timeout: Duration,
    /// Most connections served at once. Further clients are not refused:
    /// they wait in the listen backlog until a connection closes (see
    /// [`serve`]).
    pub max_connections: usize,
    /// How long a shutdown waits for open connections to finish the requests
    /// they are serving; connections still open then are dropped.
    pub drain_timeout: Duration,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            body_limit: 64 * 1024,
            request_timeout: Duration::from_secs(10),
            read_wait: crate::app::READ_YOUR_WRITES_TIMEOUT,
            rate_limit: Some(RateLimit::default()),
            max_projection_lag: Duration::from_secs(60),
            header_read_timeout: Duration::from_secs(5),
            max_connections: 1024,
            drain_timeout: Duration::from_secs(15),
        }
    }
}

/// Everything the handlers share: cheap to clone.
pub struct AppState<S> {
    inner: Arc<Inner<S>>,
}

struct Inner<S> {
    airline: Airline<S>,
    reads: Arc<dyn FlightReads>,
    queries: FlightQueries,
    tokens: Arc<Tokens>,
    runners: Vec<RunnerInfo>,
    settings: HttpSettings,
}

impl<S> Clone for AppState<S> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<S: Clone> Clone for Inner<S> {
    fn clone(&self) -> Self {
        Self {
            airline: self.airline.clone(),
            reads: Arc::clone(&self.reads),
            queries: self.queries.clone(),
            tokens: Arc::clone(&self.tokens),
            runners: self.runners.clone(),
            settings: self.settings.clone(),
        }
    }
}

impl<S: ProjectionStore + Clone> AppState<S> {
    /// The state over a write side, a flight read side and the accepted
    /// tokens, with default [`HttpSettings`] and no runners to report on.
    pub fn new(airline: Airline<S>, reads: Arc<dyn FlightReads>, tokens: Tokens) -> Self {
        let settings = HttpSettings::default();
        let queries = FlightQueries::new(
            Arc::new(airline.store().clone()),
            Arc::clone(&reads),
            settings.read_wait,
        );
        Self {
            inner: Arc::new(Inner {
                airline,
                reads,
                queries,
                tokens: Arc::new(tokens),
                runners: Vec::new(),
                settings,
            }),
        }
    }

    /// Replaces the settings.
    pub fn with_settings(mut self, settings: HttpSettings) -> Self {
        let inner = Arc::make_mut(&mut self.inner);
        inner.queries = FlightQueries::new(
            Arc::new(inner.airline.store().clone()),
            Arc::clone(&inner.reads),
            settings.read_wait,
        );
        inner.settings = settings;
        self
    }

    /// Adds projection runners whose status `/health` and `/metrics` report.
    pub fn with_runners(mut self, runners: impl IntoIterator<Item = RunnerInfo>) -> Self {
        Arc::make_mut(&mut self.inner).runners.extend(runners);
        self
    }

    /// The write side.
    pub fn airline(&self) -> &Airline<S> {
        &self.inner.airline
    }

    /// The flight read side.
    pub fn reads(&self) -> &Arc<dyn FlightReads> {
        &self.inner.reads
    }

    /// The flight queries (shared with the gRPC API), waiting at most
    /// [`HttpSettings::read_wait`] for a `min_position`.
    pub fn queries(&self) -> &FlightQueries {
        &self.inner.queries
    }

    /// The accepted tokens.
    pub fn tokens(&self) -> &Arc<Tokens> {
        &self.inner.tokens
    }

    /// The runners reported on.
    pub fn runners(&self) -> &[RunnerInfo] {
        &self.inner.runners
    }

    /// The settings.
    pub fn settings(&self) -> &HttpSettings {
        &self.inner.settings
    }
}

/// The whole API: exactly the routes of DESIGN §5, with auth, rate limits,
/// body limit, timeout, tracing, metrics and JSON errors everywhere.
///
/// Serve it with connect info (see [`serve`]) so rate limiting can key
/// anonymous clients by peer address; without it (as under
/// `tower::ServiceExt::oneshot`) anonymous clients share one bucket.
pub fn router<S: ProjectionStore + Clone>(state: AppState<S>) -> Router {
    // Install the recorder before the first request records anything.
    prometheus();
    let settings = state.settings().clone();
    let rate_limit = settings
        .rate_limit
        .and_then(|limit| limits::layer(limit, Arc::clone(state.tokens())));
    let api = Router::new()
        .route("/flights", post(flights::schedule::<S>))
        .route("/flights/search", get(flights::search::<S>))
        .route("/flights/{id}", get(flights::flight::<S>))
        .route("/flights/{id}/reschedule", post(flights::reschedule::<S>))
        .route("/flights/{id}/price", post(flights::change_price::<S>))
        .route("/flights/{id}/cancel", post(flights::cancel::<S>))
        .route("/bookings", post(bookings::request::<S>))
        .route("/bookings/{id}", get(bookings::booking::<S>))
        .route("/bookings/{id}/cancel", post(bookings::cancel::<S>))
        .layer(tower::util::option_layer(rate_limit));
    let operations = Router::new()
        .route("/health", get(ops::health::<S>))
        .route("/metrics", get(ops::metrics::<S>))
        .route("/openapi.json", get(ops::openapi));
    api.merge(operations)
        .fallback(ops::no_route)
        .method_not_allowed_fallback(ops::no_method)
        .layer(RequestBodyLimitLayer::new(settings.body_limit))
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            settings.request_timeout,
        ))
        .layer(TraceLayer::new_for_http())
        .layer(axum::middleware::from_fn(metrics::track_http))
        .layer(axum::middleware::map_response(error::json_errors))
        .with_state(state)
}
