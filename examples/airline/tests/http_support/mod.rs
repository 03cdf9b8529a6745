//! The HTTP test harness: one way to build the app ([`test_app`]) for every
//! backend, and request helpers over `tower::ServiceExt::oneshot`.
//!
//! The test bodies only talk HTTP and read the store's head, so the same
//! tests run on any backend. Today: [`Backend::Memory`]. The place for
//! PostgreSQL + Elasticsearch is [`postgres_elastic_app`].
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use airline::app::Airline;
use airline::background::Background;
use airline::booking::{ResilientPayments, SimulatedPayments};
use airline::http::{AppState, HttpSettings, RateLimit, Role, Tokens, router};
use airline::search::{ElasticFlights, FlightQueries, MemoryFlights};
use annals::memory::MemoryStore;
use annals::projection::RunnerOptions;
use annals::{EventStore, Position};
use annals_postgres::PgStoreOptions;
use annals_testkit::{PgTest, SearchTest};
use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use uuid::Uuid;

/// Test tokens (configuration, not code, in a real deployment).
pub const ADMIN: &str = "test-admin-token";
/// May book and cancel bookings.
pub const AGENT: &str = "test-agent-token";
/// May read bookings.
pub const READER: &str = "test-reader-token";

/// Which stores the app runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// MemoryStore + MemoryFlights.
    Memory,
    /// PostgreSQL (DATABASE_URL) + Elasticsearch (ELASTICSEARCH_URL).
    PostgresElastic,
}

impl Backend {
    /// `AIRLINE_TEST_BACKEND=postgres-elastic` picks the real services;
    /// memory otherwise.
    pub fn from_env() -> Self {
        match std::env::var("AIRLINE_TEST_BACKEND").as_deref() {
            Ok("postgres-elastic") => Backend::PostgresElastic,
            _ => Backend::Memory,
        }
    }
}

/// Knobs a test may turn.
#[derive(Debug, Clone)]
pub struct Options {
    /// Rate limiting (off unless a test turns it on).
    pub rate_limit: Option<RateLimit>,
    /// How long `min_position` waits.
    pub read_wait: Duration,
    /// Body limit.
    pub body_limit: usize,
    /// Longest a request may take.
    pub request_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            rate_limit: None,
            read_wait: Duration::from_secs(5),
            body_limit: 64 * 1024,
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// A running app: its router, its store (for the head), its background tasks.
pub struct TestApp {
    router: Router,
    /// The flight queries behind the REST search, to serve them over gRPC too.
    queries: FlightQueries,
    store: Arc<dyn EventStore>,
    background: Option<Background>,
    /// The test's schema and index prefix, kept for the app's lifetime.
    services: Option<(PgTest, SearchTest)>,
}

/// An answer.
#[derive(Debug)]
pub struct Reply {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// The body as JSON (`Value::Null` when it is not JSON).
    pub json: Value,
    /// The body as text.
    pub text: String,
}

impl Reply {
    /// The error code of an error answer, asserting the error shape.
    pub fn error_code(&self) -> String {
        let error = self
            .json
            .get("error")
            .unwrap_or_else(|| panic!("not an error body: {} {}", self.status, self.text));
        let keys = keys(error);
        assert_eq!(keys, ["code", "message"], "error shape: {}", self.text);
        assert!(
            !error["message"].as_str().unwrap_or("").is_empty(),
            "empty message: {}",
            self.text
        );
        assert_eq!(
            self.headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok()),
            Some("application/json"),
            "error content type"
        );
        error["code"].as_str().unwrap_or_default().to_owned()
    }

    /// Asserts the status, returning the JSON.
    pub fn expect(&self, status: StatusCode) -> &Value {
        assert_eq!(self.status, status, "body: {}", self.text);
        &self.json
    }
}

/// The sorted keys of a JSON object.
pub fn keys(value: &Value) -> Vec<String> {
    let mut keys: Vec<String> = value
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {value}"))
        .keys()
        .cloned()
        .collect();
    keys.sort();
    keys
}

/// The app on `backend` with default options.
pub async fn test_app(backend: Backend) -> TestApp {
    test_app_with(backend, Options::default()).await
}

/// The app on `backend`.
pub async fn test_app_with(backend: Backend, options: Options) -> TestApp {
    match backend {
        Backend::Memory => memory_app(options).await,
        Backend::PostgresElastic => postgres_elastic_app(options).await,
    }
}

fn tokens() -> Tokens {
    Tokens::new()
        .with(ADMIN, Role::Admin)
        .and_then(|t| t.with(AGENT, Role::Agent))
        .and_then(|t| t.with(READER, Role::Reader))
        .unwrap()
}

fn settings(options: &Options) -> HttpSettings {
    HttpSettings {
        rate_limit: options.rate_limit,
        read_wait: options.read_wait,
        body_limit: options.body_limit,
        request_timeout: options.request_timeout,
        ..HttpSettings::default()
    }
}

/// The booking saga runs as this many partitions in the tests' apps (one
/// process holds them all): every booking test goes through the
/// partitioned runner.
pub const SAGA_PARTITIONS: u32 = 4;

fn fast_runner() -> RunnerOptions {
    RunnerOptions {
        batch_delay: Duration::from_millis(2),
        idle_interval: Duration::from_millis(50),
        ..RunnerOptions::default()
    }
}

async fn memory_app(options: Options) -> TestApp {
    let store = MemoryStore::new();
    let provider = ResilientPayments::new(SimulatedPayments::new(), Duration::from_millis(500), 2);
    let airline = Airline::new(store.clone(), Arc::new(provider));
    let flights = Arc::new(MemoryFlights::new());
    let mut background = Background::new(CancellationToken::new());
    background.projection(store.clone(), Arc::clone(&flights), fast_runner());
    background.booking_saga(
        &airline,
        fast_runner(),
        Duration::from_millis(50),
        SAGA_PARTITIONS,
    );
    let state = AppState::new(airline, flights, tokens())
        .with_settings(settings(&options))
        .with_runners(background.runners());
    running(&background).await;
    TestApp {
        queries: state.queries().clone(),
        router: router(state),
        store: Arc::new(store),
        background: Some(background),
        services: None,
    }
}

/// Waits until every runner holds its lease and projects.
async fn running(background: &Background) {
    for mut runner in background.runners() {
        tokio::time::timeout(
            Duration::from_secs(10),
            runner
                .progress
                .wait_for(|s| s.state == annals::projection::RunnerState::Running),
        )
        .await
        .unwrap_or_else(|_| panic!("runner {} never started", runner.name))
        .unwrap();
    }
}

/// PostgreSQL + Elasticsearch: the same app over `annals-postgres` (a fresh
/// schema per test, from DATABASE_URL) and the Elasticsearch flight read
/// model (a fresh index prefix per test, from ELASTICSEARCH_URL), with the
/// same tokens, settings and runners as [`memory_app`].
async fn postgres_elastic_app(options: Options) -> TestApp {
    let pg = annals_testkit::postgres()
        .await
        .expect("AIRLINE_TEST_BACKEND=postgres-elastic needs DATABASE_URL");
    let search = annals_testkit::search()
        .await
        .expect("AIRLINE_TEST_BACKEND=postgres-elastic needs ELASTICSEARCH_URL");
    let store = PgStoreOptions::new()
        .notify_channel(pg.channel("events"))
        .listener_application_name(format!("annals-listener-{}", pg.schema()))
        .from_pool(pg.pool().clone())
        .expect("store options");
    store.migrate().await.expect("migrate");
    let provider = ResilientPayments::new(SimulatedPayments::new(), Duration::from_millis(500), 2);
    let airline = Airline::new(store.clone(), Arc::new(provider));
    let flights = Arc::new(ElasticFlights::new(
        search.client().clone(),
        search.prefix(),
    ));
    let mut background = Background::new(CancellationToken::new());
    background.elastic_flights(store.clone(), Arc::clone(&flights), fast_runner());
    background.booking_saga(
        &airline,
        fast_runner(),
        Duration::from_millis(50),
        SAGA_PARTITIONS,
    );
    let state = AppState::new(airline, flights, tokens())
        .with_settings(settings(&options))
        .with_runners(background.runners());
    running(&background).await;
    TestApp {
        queries: state.queries().clone(),
        router: router(state),
        store: Arc::new(store),
        background: Some(background),
        services: Some((pg, search)),
    }
}

impl TestApp {
    /// The app's router, to serve it over TCP (see `http_edges.rs`).
    pub fn router(&self) -> Router {
        self.router.clone()
    }

    /// The flight queries the REST search answers with (for the gRPC
    /// server of `grpc_search.rs`).
    pub fn queries(&self) -> FlightQueries {
        self.queries.clone()
    }

    /// The app's event store, to check the log.
    pub fn store(&self) -> &dyn EventStore {
        self.store.as_ref()
    }

    /// Sends a request.
    pub async fn send(&self, request: Request<Body>) -> Reply {
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("the router is infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            json,
            text,
        }
    }

    /// A request with an optional bearer token, content type and body.
    pub async fn request(
        &self,
        method: Method,
        uri: &str,
        token: Option<&str>,
        content_type: Option<&str>,
        body: impl Into<Body>,
    ) -> Reply {
        let mut builder = Request::builder().method(method).uri(uri);
        if let Some(token) = token {
            builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        if let Some(content_type) = content_type {
            builder = builder.header(header::CONTENT_TYPE, content_type);
        }
        self.send(builder.body(body.into()).unwrap()).await
    }

    /// GET without a token.
    pub async fn get(&self, uri: &str) -> Reply {
        self.request(Method::GET, uri, None, None, Body::empty())
            .await
    }

    /// GET with a token.
    pub async fn get_as(&self, uri: &str, token: &str) -> Reply {
        self.request(Method::GET, uri, Some(token), None, Body::empty())
            .await
    }

    /// POST a JSON body.
    pub async fn post(&self, uri: &str, token: Option<&str>, body: &Value) -> Reply {
        self.request(
            Method::POST,
            uri,
            token,
            Some("application/json"),
            body.to_string(),
        )
        .await
    }

    /// Stops the projection runners and the saga (as a crash of the
    /// projection side would), leaving the API up.
    pub async fn stop_projections(&mut self) {
        if let Some(background) = self.background.take() {
            background.shutdown(Duration::from_secs(10)).await;
        }
    }

    /// The store's head: unchanged when a command was refused.
    /// The head of the log once every event written so far is readable
    /// ([`PgTest::settle`]: another test's transaction may hold a
    /// PostgreSQL head back for a while).
    pub async fn head(&self) -> Position {
        if let Some((pg, _)) = &self.services {
            pg.settle().await;
        }
        self.store.head().await.expect("head")
    }

    /// Schedules a flight as admin; its id and position.
    pub async fn schedule(&self, flight: &Value) -> (Uuid, String) {
        let reply = self.post("/flights", Some(ADMIN), flight).await;
        let body = reply.expect(StatusCode::CREATED);
        (
            body["id"].as_str().unwrap().parse().unwrap(),
            body["position"].as_str().unwrap().to_owned(),
        )
    }
}

/// A `POST /flights` body.
pub fn flight_json(
    number: &str,
    from: &str,
    to: &str,
    departure: &str,
    arrival: &str,
    seats: u32,
    cents: i64,
) -> Value {
    json!({
        "flight_number": number,
        "from": from,
        "to": to,
        "departure": departure,
        "arrival": arrival,
        "seats": seats,
        "price": {"amount": cents, "currency": "USD"},
    })
}

/// The DESIGN §5.1 example flight.
pub fn example_flight() -> Value {
    flight_json(
        "AN123",
        "JFK",
        "LHR",
        "2026-12-01T18:00:00Z",
        "2026-12-02T06:00:00Z",
        180,
        45000,
    )
}

/// A `POST /bookings` body.
pub fn booking_json(segments: &[(Uuid, u32)], card: &str) -> Value {
    json!({
        "passenger": {"name": "Ada Lovelace", "email": "ada@example.com"},
        "segments": segments
            .iter()
            .map(|(id, seats)| json!({"flight_id": id, "seats": seats}))
            .collect::<Vec<_>>(),
        "payment": {"card_token": card},
    })
}

/// Polls `GET /bookings/{id}` until it is no longer pending.
pub async fn settled_booking(app: &TestApp, id: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let reply = app.get_as(&format!("/bookings/{id}"), READER).await;
        let body = reply.expect(StatusCode::OK).clone();
        if body["status"] != "pending" {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "booking {id} still pending"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Polls `GET /flights/{id}` until `check` holds.
pub async fn flight_until(app: &TestApp, id: Uuid, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let reply = app.get(&format!("/flights/{id}")).await;
        if reply.status == StatusCode::OK && check(&reply.json) {
            return reply.json;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "flight {id} never got there: {}",
            reply.text
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
