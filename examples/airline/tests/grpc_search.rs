//! The flight search over gRPC (`proto/flights.proto`), through a client
//! generated from the proto, against a server on 127.0.0.1:0 over the same
//! app as the REST tests: the same flights as the REST search for the same
//! parameters, paging with the cursor, the streaming variant, and the
//! status codes where REST answers 400, 404 and 503, deadlines included.

mod http_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use airline::grpc::proto::flight_service_client::FlightServiceClient;
use airline::grpc::proto::{self, FlightSearchRequest, GetFlightRequest, SortOrder};
use airline::grpc::{ERROR_CODE_KEY, ERROR_DOMAIN, GrpcSettings, POSITION_METADATA};
use airline::search::{
    FlightPage, FlightQueries, FlightReads, FlightSearch, FlightView, FlightViewStatus, ReadError,
};
use annals::memory::MemoryStore;
use axum::http::StatusCode;
use chrono::{DateTime, TimeDelta, Utc};
use http_support::*;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use tonic_types::StatusExt;
use uuid::Uuid;

type Client = FlightServiceClient<Channel>;

/// A gRPC server over `queries` on a free port, and a client of it.
struct Grpc {
    channel: Channel,
    client: Client,
    shutdown: CancellationToken,
    served: JoinHandle<Result<(), airline::grpc::GrpcError>>,
}

impl Grpc {
    async fn start(queries: FlightQueries, settings: GrpcSettings) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let served =
            tokio::spawn(
                async move { airline::grpc::serve(listener, queries, &settings, token).await },
            );
        let channel = Channel::from_shared(format!("http://{address}"))
            .unwrap()
            .connect()
            .await
            .expect("connect");
        Self {
            client: FlightServiceClient::new(channel.clone()),
            channel,
            shutdown,
            served,
        }
    }

    fn client(&self) -> Client {
        self.client.clone()
    }
}

impl Drop for Grpc {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Flights: (number, from, to, departure, hours, seats, price in cents).
/// AN205 and AN206 cost the same, as do AN210 and AN211: ties are broken by
/// id, the same way on both APIs.
const FLIGHTS: &[(&str, &str, &str, &str, i64, u32, i64)] = &[
    ("AN200", "JFK", "LHR", "2027-05-01T18:00:00Z", 7, 180, 45000),
    ("AN201", "JFK", "LHR", "2027-05-02T18:05:00Z", 7, 180, 47000),
    ("AN202", "JFK", "LGW", "2027-05-01T21:10:00Z", 7, 200, 41000),
    ("AN203", "LHR", "JFK", "2027-05-01T09:15:00Z", 8, 180, 52000),
    ("AN204", "SFO", "SEA", "2027-05-01T07:20:00Z", 2, 150, 9900),
    ("AN205", "SFO", "LAX", "2027-05-01T12:25:00Z", 1, 150, 8900),
    ("AN206", "LAX", "SFO", "2027-05-03T06:30:00Z", 1, 150, 8900),
    ("AN207", "CDG", "FRA", "2027-05-02T10:35:00Z", 1, 150, 12000),
    ("AN208", "FRA", "CDG", "2027-05-04T10:40:00Z", 1, 150, 12500),
    (
        "AN209",
        "HND",
        "SFO",
        "2027-05-02T16:45:00Z",
        10,
        296,
        88000,
    ),
    (
        "AN210",
        "NRT",
        "LAX",
        "2027-05-05T17:50:00Z",
        10,
        296,
        61000,
    ),
    ("AN211", "SIN", "SYD", "2027-05-03T22:55:00Z", 8, 296, 61000),
    ("AN212", "BOS", "JFK", "2027-05-01T06:00:00Z", 1, 2, 15000),
    ("AN213", "JFK", "MIA", "2027-05-02T13:05:00Z", 3, 174, 19900),
    ("AN214", "MIA", "JFK", "2027-05-04T14:10:00Z", 3, 174, 20900),
    ("AN215", "LGW", "MAD", "2027-05-03T08:15:00Z", 2, 180, 7900),
    ("AN216", "DXB", "LHR", "2027-05-05T02:20:00Z", 8, 350, 64000),
    ("AN217", "JFK", "LHR", "2027-05-03T18:30:00Z", 7, 180, 43000),
    ("AN218", "SFO", "SEA", "2027-05-02T07:35:00Z", 2, 150, 10900),
    ("AN219", "SEA", "ANC", "2027-05-04T16:00:00Z", 4, 150, 23900),
];
/// Cancelled after scheduling: out of search, still readable by id.
const CANCELLED: &[&str] = &["AN217", "AN218"];
/// Sold out by a booking.
const SOLD_OUT: &str = "AN212";

/// The app of the REST tests with the flights above, and the gRPC server
/// over its queries.
struct World {
    app: TestApp,
    grpc: Grpc,
    ids: Vec<(&'static str, Uuid)>,
}

impl World {
    async fn new() -> Self {
        let app = test_app(Backend::from_env()).await;
        let mut ids = Vec::new();
        for &(number, from, to, departure, hours, seats, price) in FLIGHTS {
            let departure: DateTime<Utc> = departure.parse().unwrap();
            let arrival = departure + TimeDelta::hours(hours);
            let body = flight_json(
                number,
                from,
                to,
                &departure.to_rfc3339(),
                &arrival.to_rfc3339(),
                seats,
                price,
            );
            let (id, _) = app.schedule(&body).await;
            ids.push((number, id));
        }
        let world = World {
            grpc: Grpc::start(app.queries(), GrpcSettings::default()).await,
            app,
            ids,
        };
        for number in CANCELLED {
            let id = world.id(number);
            world
                .app
                .post(&format!("/flights/{id}/cancel"), Some(ADMIN), &json!({}))
                .await
                .expect(StatusCode::OK);
        }
        let id = world.id(SOLD_OUT);
        let reply = world
            .app
            .post(
                "/bookings",
                Some(AGENT),
                &booking_json(&[(id, 2)], "tok_visa"),
            )
            .await;
        let booking = reply.expect(StatusCode::ACCEPTED)["id"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(
            settled_booking(&world.app, &booking).await["status"],
            "confirmed"
        );
        flight_until(&world.app, id, |f| f["seats_available"] == 0).await;
        world
    }

    fn id(&self, number: &str) -> Uuid {
        self.ids.iter().find(|(n, _)| *n == number).unwrap().1
    }

    /// The REST answer to `params` (plus `min_position` at the head).
    async fn rest(&self, params: &[(&str, &str)]) -> Value {
        let head = self.app.head().await.to_string();
        let mut all = params.to_vec();
        all.push(("min_position", &head));
        let reply = self
            .app
            .get(&format!("/flights/search?{}", query(&all)))
            .await;
        reply.expect(StatusCode::OK).clone()
    }

    /// The gRPC answer to the same `params` (plus `min_position` at the head).
    async fn grpc(&self, params: &[(&str, &str)]) -> proto::FlightSearchResponse {
        let mut request = grpc_request(params);
        request.min_position = self.app.head().await.to_string();
        self.grpc
            .client()
            .search_flights(request)
            .await
            .unwrap_or_else(|status| panic!("{params:?}: {status:?}"))
            .into_inner()
    }
}

/// A REST query string.
fn query(params: &[(&str, &str)]) -> String {
    params
        .iter()
        .map(|(k, v)| format!("{k}={}", urlencode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The gRPC request with the same parameters as the REST query.
fn grpc_request(params: &[(&str, &str)]) -> FlightSearchRequest {
    let mut request = FlightSearchRequest::default();
    for &(key, value) in params {
        match key {
            "from" => request.from = value.into(),
            "to" => request.to = value.into(),
            "date" => request.date = value.into(),
            "date_to" => request.date_to = value.into(),
            "max_price" => request.max_price = Some(value.parse().unwrap()),
            "min_seats" => request.min_seats = Some(value.parse().unwrap()),
            "q" => request.q = value.into(),
            "sort" => {
                request.sort = match value {
                    "price" => SortOrder::Price.into(),
                    "-price" => SortOrder::PriceDesc.into(),
                    "departure" => SortOrder::Departure.into(),
                    "-departure" => SortOrder::DepartureDesc.into(),
                    // Not an order the proto defines.
                    _ => 99,
                }
            }
            "limit" => request.limit = Some(value.parse().unwrap()),
            "after" => request.after = value.into(),
            "min_position" => request.min_position = value.into(),
            other => panic!("no such parameter {other}"),
        }
    }
    request
}

/// A flight as both APIs must show it: every field of the REST JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Row {
    id: String,
    number: String,
    from: String,
    to: String,
    departure: DateTime<Utc>,
    arrival: DateTime<Utc>,
    amount: i64,
    currency: String,
    seats_total: u64,
    seats_available: u64,
    status: String,
}

fn text(value: &Value) -> String {
    value
        .as_str()
        .unwrap_or_else(|| panic!("{value}"))
        .to_owned()
}

fn rest_row(flight: &Value) -> Row {
    Row {
        id: text(&flight["id"]),
        number: text(&flight["flight_number"]),
        from: text(&flight["from"]),
        to: text(&flight["to"]),
        departure: text(&flight["departure"]).parse().unwrap(),
        arrival: text(&flight["arrival"]).parse().unwrap(),
        amount: flight["price"]["amount"].as_i64().unwrap(),
        currency: text(&flight["price"]["currency"]),
        seats_total: flight["seats_total"].as_u64().unwrap(),
        seats_available: flight["seats_available"].as_u64().unwrap(),
        status: text(&flight["status"]),
    }
}

fn instant(timestamp: Option<prost_types::Timestamp>) -> DateTime<Utc> {
    let timestamp = timestamp.expect("a timestamp");
    DateTime::from_timestamp(timestamp.seconds, u32::try_from(timestamp.nanos).unwrap()).unwrap()
}

fn grpc_row(flight: &proto::FlightView) -> Row {
    let price = flight.price.clone().expect("a price");
    let status = match proto::FlightStatus::try_from(flight.status) {
        Ok(proto::FlightStatus::Scheduled) => "scheduled",
        Ok(proto::FlightStatus::Cancelled) => "cancelled",
        other => panic!("status {other:?}"),
    };
    Row {
        id: flight.id.clone(),
        number: flight.flight_number.clone(),
        from: flight.from.clone(),
        to: flight.to.clone(),
        departure: instant(flight.departure),
        arrival: instant(flight.arrival),
        amount: price.amount,
        currency: price.currency,
        seats_total: flight.seats_total.into(),
        seats_available: flight.seats_available.into(),
        status: status.to_owned(),
    }
}

fn rest_rows(page: &Value) -> Vec<Row> {
    page["flights"]
        .as_array()
        .unwrap()
        .iter()
        .map(rest_row)
        .collect()
}

fn grpc_rows(flights: &[proto::FlightView]) -> Vec<Row> {
    flights.iter().map(grpc_row).collect()
}

/// The cases of the table: every filter, each sort, text search, and
/// combinations. Each must find something.
const CASES: &[&[(&str, &str)]] = &[
    &[],
    &[("from", "JFK")],
    &[("from", "jfk"), ("to", "LHR")],
    &[("to", "SFO")],
    &[("from", "SFO"), ("to", "SEA")],
    &[("to", "ANC")],
    &[("date", "2027-05-01")],
    &[("date", "2027-05-02"), ("date_to", "2027-05-03")],
    &[("date_to", "2027-05-01")],
    &[("max_price", "15000")],
    &[("max_price", "0")],
    &[("min_seats", "1")],
    &[("min_seats", "178")],
    &[("q", "london")],
    &[("q", "Heathrow")],
    &[("q", "AN211")],
    &[("q", "san francisco")],
    &[("q", "tokyo")],
    &[("q", "Ted Stevens")],
    &[("q", "new york"), ("date", "2027-05-01")],
    &[("sort", "price")],
    &[("sort", "-price")],
    &[("sort", "departure")],
    &[("sort", "-departure")],
    &[("from", "JFK"), ("max_price", "46000"), ("sort", "-price")],
    &[("to", "JFK"), ("min_seats", "100"), ("sort", "price")],
    &[("q", "  "), ("from", " "), ("after", "")],
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_flights_as_the_rest_search_for_the_same_parameters() {
    let w = World::new().await;
    let mut found_nothing = Vec::new();
    for params in CASES {
        let mut all = params.to_vec();
        all.push(("limit", "100"));
        let rest = w.rest(&all).await;
        let grpc = w.grpc(&all).await;
        let expected = rest_rows(&rest);
        assert_eq!(grpc_rows(&grpc.flights), expected, "{params:?}");
        assert_eq!(rest["next"], Value::Null, "{params:?}");
        assert_eq!(grpc.next, "", "{params:?}");
        assert!(grpc.position.parse::<annals::Position>().is_ok());
        if expected.is_empty() {
            found_nothing.push(query(params));
        }
    }
    // `max_price=0` finds nothing, on purpose; every other case finds something.
    assert_eq!(found_nothing, ["max_price=0"]);

    // The table means something: cancelled flights never show, the sold-out
    // one shows unless min_seats says otherwise.
    let all = w.grpc(&[("limit", "100")]).await;
    let numbers: Vec<&str> = all
        .flights
        .iter()
        .map(|f| f.flight_number.as_str())
        .collect();
    assert_eq!(numbers.len(), FLIGHTS.len() - CANCELLED.len());
    assert!(numbers.contains(&SOLD_OUT));
    assert!(!CANCELLED.iter().any(|c| numbers.contains(c)));
    let seats = w.grpc(&[("min_seats", "1"), ("limit", "100")]).await;
    assert!(!seats.flights.iter().any(|f| f.flight_number == SOLD_OUT));

    // The first page of the default size (20), with its cursor.
    let rest = w.rest(&[("sort", "price")]).await;
    let grpc = w.grpc(&[("sort", "price")]).await;
    assert_eq!(grpc.flights.len(), FLIGHTS.len() - CANCELLED.len());
    assert_eq!(grpc_rows(&grpc.flights), rest_rows(&rest));
    assert_eq!((grpc.next.as_str(), &rest["next"]), ("", &Value::Null));
    let rest = w.rest(&[("sort", "price"), ("limit", "5")]).await;
    let grpc = w.grpc(&[("sort", "price"), ("limit", "5")]).await;
    assert_eq!(grpc_rows(&grpc.flights), rest_rows(&rest));
    assert_eq!(grpc.next, text(&rest["next"]), "the same cursor");
}

/// Pages through a search over gRPC with `after`.
async fn all_pages(w: &World, params: &[(&str, &str)], limit: &str) -> Vec<proto::FlightView> {
    let mut seen = Vec::new();
    let mut after = String::new();
    for _ in 0..=FLIGHTS.len() {
        let mut all = params.to_vec();
        all.push(("limit", limit));
        if !after.is_empty() {
            all.push(("after", &after));
        }
        let page = w.grpc(&all).await;
        assert!(
            page.flights.len() <= limit.parse().unwrap(),
            "page too long"
        );
        seen.extend(page.flights);
        if page.next.is_empty() {
            return seen;
        }
        after = page.next;
    }
    panic!("{params:?}: paging does not end");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_and_the_stream_together_equal_the_unpaged_answer() {
    let w = World::new().await;
    let searches: &[(&[(&str, &str)], &str)] = &[
        (&[("sort", "price")], "4"),
        (&[("sort", "-price")], "3"),
        (&[("sort", "departure")], "5"),
        (&[("sort", "-departure")], "1"),
        (&[("from", "JFK"), ("sort", "price")], "1"),
        (&[("date", "2027-05-01"), ("date_to", "2027-05-04")], "2"),
        (&[("q", "london")], "2"),
    ];
    let mut client = w.grpc.client();
    for &(params, limit) in searches {
        let mut unpaged = params.to_vec();
        unpaged.push(("limit", "100"));
        let whole = grpc_rows(&w.grpc(&unpaged).await.flights);
        assert_eq!(whole, rest_rows(&w.rest(&unpaged).await), "{params:?}");
        assert!(whole.len() > 1, "{params:?} pages nothing");

        let paged = grpc_rows(&all_pages(&w, params, limit).await);
        assert_eq!(paged, whole, "{params:?} by {limit}: pages");

        // The stream, reading pages of `limit`, and of its default size.
        for page_size in [Some(limit), None] {
            let mut request = grpc_request(params);
            request.limit = page_size.map(|l| l.parse().unwrap());
            request.min_position = w.app.head().await.to_string();
            let response = client.stream_flights(request).await.unwrap();
            let position = response
                .metadata()
                .get(POSITION_METADATA)
                .expect("position");
            assert!(
                position
                    .to_str()
                    .unwrap()
                    .parse::<annals::Position>()
                    .is_ok()
            );
            let mut stream = response.into_inner();
            let mut streamed = Vec::new();
            while let Some(flight) = stream.message().await.unwrap() {
                streamed.push(flight);
            }
            assert_eq!(
                grpc_rows(&streamed),
                whole,
                "{params:?} streamed by {page_size:?}"
            );
        }
    }
    // A stream may start after a cursor.
    let first = w.grpc(&[("sort", "price"), ("limit", "4")]).await;
    let mut request = grpc_request(&[("sort", "price"), ("after", &first.next)]);
    request.limit = Some(3);
    let mut stream = client.stream_flights(request).await.unwrap().into_inner();
    let mut rest_of_them = Vec::new();
    while let Some(flight) = stream.message().await.unwrap() {
        rest_of_them.push(flight);
    }
    let whole = w.grpc(&[("sort", "price"), ("limit", "100")]).await.flights;
    assert_eq!(grpc_rows(&rest_of_them), grpc_rows(&whole[4..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_flight_answers_as_the_rest_lookup() {
    let w = World::new().await;
    let head = w.app.head().await.to_string();
    let mut client = w.grpc.client();
    for number in ["AN200", CANCELLED[0], SOLD_OUT] {
        let id = w.id(number);
        let rest = w
            .app
            .get(&format!("/flights/{id}?min_position={head}"))
            .await;
        let response = client
            .get_flight(GetFlightRequest {
                id: id.to_string(),
                min_position: head.clone(),
            })
            .await
            .unwrap();
        assert!(response.metadata().get(POSITION_METADATA).is_some());
        assert_eq!(
            grpc_row(response.get_ref()),
            rest_row(rest.expect(StatusCode::OK)),
            "{number}"
        );
    }
    let unknown = Uuid::now_v7();
    let rest = w.app.get(&format!("/flights/{unknown}")).await;
    assert_eq!(rest.status, StatusCode::NOT_FOUND);
    let status = client
        .get_flight(GetFlightRequest {
            id: unknown.to_string(),
            min_position: String::new(),
        })
        .await
        .unwrap_err();
    assert_error(&status, Code::NotFound, &rest.error_code());

    for (id, min_position) in [
        ("not-a-uuid", ""),
        ("01890a5dac96774bbcceb302099a8057", ""),
        ("01890a5d-ac96-774b-bcce-b302099a8057", "x"),
    ] {
        let rest = w
            .app
            .get(&format!("/flights/{id}?min_position={min_position}"))
            .await;
        assert_eq!(rest.status, StatusCode::BAD_REQUEST, "{id}");
        let status = client
            .get_flight(GetFlightRequest {
                id: id.into(),
                min_position: min_position.into(),
            })
            .await
            .unwrap_err();
        assert_error(&status, Code::InvalidArgument, &rest.error_code());
    }
}

/// The status has `code` and carries the REST error code `error`.
fn assert_error(status: &Status, code: Code, error: &str) {
    assert_eq!(status.code(), code, "{status:?}");
    assert!(
        status.message().starts_with(&format!("{error}: ")),
        "{error}: {status:?}"
    );
    let info = status.get_details_error_info().expect("ErrorInfo");
    assert_eq!(
        info.metadata.get(ERROR_CODE_KEY).map(String::as_str),
        Some(error)
    );
    assert_eq!(info.reason, error.to_ascii_uppercase());
    assert_eq!(info.domain, ERROR_DOMAIN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_argument_where_rest_answers_400() {
    let app = test_app(Backend::from_env()).await;
    let grpc = Grpc::start(app.queries(), GrpcSettings::default()).await;
    let long_text = "x".repeat(201);
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("from", "XXX")], "invalid_airport"),
        (&[("to", "12")], "invalid_airport"),
        (&[("date", "2026-13-01")], "invalid_date"),
        (&[("date", "tomorrow")], "invalid_date"),
        (&[("date_to", "2026-1-1x")], "invalid_date"),
        (&[("date", "2026-1-05")], "invalid_date"),
        (
            &[("date", "2026-12-02"), ("date_to", "2026-12-01")],
            "invalid_date_range",
        ),
        (&[("max_price", "-1")], "invalid_price"),
        (&[("q", &long_text)], "invalid_text"),
        (&[("sort", "cheapest")], "invalid_sort"),
        (&[("limit", "101")], "invalid_limit"),
        (&[("limit", "0")], "invalid_limit"),
        (&[("after", "garbage")], "invalid_cursor"),
        (&[("min_position", "yesterday")], "invalid_position"),
        (&[("min_position", "1.2.3")], "invalid_position"),
        (&[("min_position", "+1.2")], "invalid_position"),
    ];
    let mut client = grpc.client();
    for &(params, code) in cases {
        let reply = app.get(&format!("/flights/search?{}", query(params))).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{params:?}: {}",
            reply.text
        );
        assert_eq!(reply.error_code(), code, "{params:?}");
        let status = client
            .search_flights(grpc_request(params))
            .await
            .unwrap_err();
        assert_error(&status, Code::InvalidArgument, code);
        // The stream validates alike, before it starts.
        let status = client
            .stream_flights(grpc_request(params))
            .await
            .map(|_| ())
            .unwrap_err();
        assert_error(&status, Code::InvalidArgument, code);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_side_behind_is_deadline_exceeded_within_the_clients_deadline() {
    let read_wait = Duration::from_millis(1500);
    let app = test_app_with(
        Backend::from_env(),
        Options {
            read_wait,
            ..Options::default()
        },
    )
    .await;
    let grpc = Grpc::start(app.queries(), GrpcSettings::default()).await;
    let mut client = grpc.client();
    let far = "999999999.0";

    let rest = app
        .get(&format!("/flights/search?min_position={far}"))
        .await;
    assert_eq!(rest.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(rest.error_code(), "read_side_behind");

    // A deadline shorter than the wait: answered before it, DEADLINE_EXCEEDED.
    let deadline = Duration::from_millis(800);
    let mut request = Request::new(grpc_request(&[("min_position", far)]));
    request.set_timeout(deadline);
    let started = Instant::now();
    let status = client.search_flights(request).await.unwrap_err();
    assert_error(&status, Code::DeadlineExceeded, "read_side_behind");
    assert!(started.elapsed() < deadline, "{:?}", started.elapsed());

    let mut request = Request::new(GetFlightRequest {
        id: Uuid::now_v7().to_string(),
        min_position: far.into(),
    });
    request.set_timeout(deadline);
    let status = client.get_flight(request).await.unwrap_err();
    assert_error(&status, Code::DeadlineExceeded, "read_side_behind");

    let mut request = Request::new(grpc_request(&[("min_position", far)]));
    request.set_timeout(deadline);
    let status = client
        .stream_flights(request)
        .await
        .map(|_| ())
        .unwrap_err();
    assert_error(&status, Code::DeadlineExceeded, "read_side_behind");

    // A deadline longer than the wait, or none: the server's wait ends
    // first, UNAVAILABLE as REST's 503.
    let mut request = Request::new(grpc_request(&[("min_position", far)]));
    request.set_timeout(Duration::from_secs(8));
    let started = Instant::now();
    let status = client.search_flights(request).await.unwrap_err();
    assert_error(&status, Code::Unavailable, "read_side_behind");
    assert!(started.elapsed() >= read_wait);
    let status = client
        .search_flights(grpc_request(&[("min_position", far)]))
        .await
        .unwrap_err();
    assert_error(&status, Code::Unavailable, "read_side_behind");
}

/// A read side that never answers; with `first_page`, it answers the
/// first page of a search (one flight, and a cursor) and hangs on the next.
struct Frozen {
    first_page: bool,
}

fn a_flight() -> FlightView {
    FlightView {
        id: Uuid::now_v7(),
        flight_number: "AN1".parse().unwrap(),
        from: "JFK".parse().unwrap(),
        to: "LHR".parse().unwrap(),
        departure: "2027-05-01T18:00:00Z".parse().unwrap(),
        arrival: "2027-05-02T06:00:00Z".parse().unwrap(),
        price: airline::values::Money::usd(45_000),
        seats_total: 10,
        seats_available: 10,
        status: FlightViewStatus::Scheduled,
    }
}

#[async_trait::async_trait]
impl FlightReads for Frozen {
    async fn flight(&self, _: Uuid) -> Result<Option<FlightView>, ReadError> {
        std::future::pending().await
    }
    async fn search(&self, search: &FlightSearch) -> Result<FlightPage, ReadError> {
        if self.first_page && search.after.is_none() {
            return Ok(FlightPage {
                flights: vec![a_flight()],
                next: Some("more".into()),
            });
        }
        std::future::pending().await
    }
    fn projection_name(&self) -> String {
        "flights".into()
    }
    async fn health(&self) -> Result<String, ReadError> {
        Ok("frozen".into())
    }
}

fn frozen(first_page: bool) -> FlightQueries {
    FlightQueries::new(
        Arc::new(MemoryStore::new()),
        Arc::new(Frozen { first_page }),
        Duration::from_secs(5),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_side_that_hangs_is_deadline_exceeded_not_a_hang() {
    let queries = frozen(false);
    let settings = GrpcSettings {
        request_timeout: Duration::from_secs(2),
        ..GrpcSettings::default()
    };
    let grpc = Grpc::start(queries, settings).await;
    let mut client = grpc.client();
    let deadline = Duration::from_millis(600);

    let mut request = Request::new(FlightSearchRequest::default());
    request.set_timeout(deadline);
    let started = Instant::now();
    let status = client.search_flights(request).await.unwrap_err();
    assert_error(&status, Code::DeadlineExceeded, "timeout");
    assert!(started.elapsed() < deadline, "{:?}", started.elapsed());

    let mut request = Request::new(GetFlightRequest {
        id: Uuid::now_v7().to_string(),
        min_position: String::new(),
    });
    request.set_timeout(deadline);
    let status = client.get_flight(request).await.unwrap_err();
    assert_error(&status, Code::DeadlineExceeded, "timeout");

    // A stream reads its first page before it answers.
    let mut request = Request::new(FlightSearchRequest::default());
    request.set_timeout(deadline);
    let status = client
        .stream_flights(request)
        .await
        .map(|_| ())
        .unwrap_err();
    assert_error(&status, Code::DeadlineExceeded, "timeout");

    // Without a deadline, the server's request timeout ends the call, as
    // REST's 503 `timeout`.
    let started = Instant::now();
    let status = client
        .search_flights(FlightSearchRequest::default())
        .await
        .unwrap_err();
    assert_error(&status, Code::Unavailable, "timeout");
    assert!(started.elapsed() >= Duration::from_secs(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_ends_with_the_clients_deadline() {
    let grpc = Grpc::start(frozen(true), GrpcSettings::default()).await;
    let mut client = grpc.client();
    let deadline = Duration::from_millis(600);
    let mut request = Request::new(FlightSearchRequest::default());
    request.set_timeout(deadline);
    let started = Instant::now();
    let mut stream = client.stream_flights(request).await.unwrap().into_inner();
    let first = stream
        .message()
        .await
        .unwrap()
        .expect("the first page's flight");
    assert_eq!(first.flight_number, "AN1");
    let status = stream.message().await.unwrap_err();
    assert_error(&status, Code::DeadlineExceeded, "timeout");
    let elapsed = started.elapsed();
    assert!(elapsed < deadline && elapsed > deadline / 2, "{elapsed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_describes_the_service_and_shutdown_stops_the_server() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let app = test_app(Backend::Memory).await;
    let grpc = Grpc::start(app.queries(), GrpcSettings::default()).await;
    let mut reflection = ServerReflectionClient::new(grpc.channel.clone());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = reflection
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let answer = answers.message().await.unwrap().expect("an answer");
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("{answer:?}");
    };
    let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&"flights.FlightService"), "{names:?}");

    let mut grpc = grpc;
    drop(answers);
    grpc.shutdown.cancel();
    let stopped = tokio::time::timeout(Duration::from_secs(20), &mut grpc.served).await;
    stopped.expect("the server stopped").unwrap().unwrap();
}
