//! Flight search over HTTP: a table of queries whose answers the test works
//! out on its own from the commands it sent, pagination, and reading your
//! own writes with `min_position`.

mod http_support;

use std::collections::HashSet;

use axum::http::StatusCode;
use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use http_support::*;
use serde_json::{Value, json};
use uuid::Uuid;

/// A flight as the test expects to read it back.
#[derive(Debug, Clone)]
struct Model {
    id: Uuid,
    number: &'static str,
    from: &'static str,
    to: &'static str,
    departure: DateTime<Utc>,
    arrival: DateTime<Utc>,
    price: i64,
    seats_total: u32,
    seats_available: u32,
    cancelled: bool,
}

impl Model {
    fn json(&self) -> Value {
        json!({
            "id": self.id,
            "flight_number": self.number,
            "from": self.from,
            "to": self.to,
            "departure": self.departure.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "arrival": self.arrival.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "price": {"amount": self.price, "currency": "USD"},
            "seats_total": self.seats_total,
            "seats_available": self.seats_available,
            "status": if self.cancelled { "cancelled" } else { "scheduled" },
        })
    }

    fn day(&self) -> NaiveDate {
        self.departure.date_naive()
    }

    fn serves(&self, codes: &[&str]) -> bool {
        codes.contains(&self.from) || codes.contains(&self.to)
    }
}

/// Flights, all with distinct prices and departures so every order is total.
/// (number, from, to, departure, hours, seats, price in cents)
const FLIGHTS: &[(&str, &str, &str, &str, i64, u32, i64)] = &[
    ("AN100", "JFK", "LHR", "2027-03-01T18:00:00Z", 7, 180, 45000),
    ("AN101", "JFK", "LHR", "2027-03-02T18:05:00Z", 7, 180, 47000),
    ("AN102", "JFK", "LGW", "2027-03-01T21:10:00Z", 7, 200, 41000),
    ("AN103", "LHR", "JFK", "2027-03-01T09:15:00Z", 8, 180, 52000),
    ("AN104", "SFO", "SEA", "2027-03-01T07:20:00Z", 2, 150, 9900),
    ("AN105", "SFO", "LAX", "2027-03-01T12:25:00Z", 1, 150, 8900),
    ("AN106", "LAX", "SFO", "2027-03-03T06:30:00Z", 1, 150, 9500),
    ("AN107", "CDG", "FRA", "2027-03-02T10:35:00Z", 1, 150, 12000),
    ("AN108", "FRA", "CDG", "2027-03-04T10:40:00Z", 1, 150, 12500),
    (
        "AN109",
        "HND",
        "SFO",
        "2027-03-02T16:45:00Z",
        10,
        296,
        88000,
    ),
    (
        "AN110",
        "NRT",
        "LAX",
        "2027-03-05T17:50:00Z",
        10,
        296,
        91000,
    ),
    (
        "AN1234",
        "SIN",
        "SYD",
        "2027-03-03T22:55:00Z",
        8,
        296,
        61000,
    ),
    ("AN111", "BOS", "JFK", "2027-03-01T06:00:00Z", 1, 2, 15000),
    ("AN112", "JFK", "MIA", "2027-03-02T13:05:00Z", 3, 174, 19900),
    ("AN113", "MIA", "JFK", "2027-03-04T14:10:00Z", 3, 174, 20900),
    ("AN114", "LGW", "MAD", "2027-03-03T08:15:00Z", 2, 180, 7900),
    ("AN115", "DXB", "LHR", "2027-03-05T02:20:00Z", 8, 350, 64000),
    ("AN116", "LHR", "DXB", "2027-03-02T21:25:00Z", 7, 350, 66000),
    ("AN117", "JFK", "LHR", "2027-03-03T18:30:00Z", 7, 180, 43000),
    ("AN118", "SFO", "SEA", "2027-03-02T07:35:00Z", 2, 150, 10900),
    ("AN119", "YVR", "SFO", "2027-03-01T15:40:00Z", 2, 150, 13900),
    ("AN120", "SEA", "JFK", "2027-03-04T09:45:00Z", 5, 180, 30900),
    ("AN121", "AUS", "DEN", "2027-03-05T11:50:00Z", 2, 150, 14900),
    ("AN122", "DEN", "AUS", "2027-03-03T12:55:00Z", 2, 150, 14500),
    // Not a hub: any airport with an IATA code is served.
    ("AN124", "SEA", "ANC", "2027-03-04T16:00:00Z", 4, 150, 23900),
];
/// Cancelled after scheduling.
const CANCELLED: &[&str] = &["AN117", "AN118"];
/// Booked (and paid) after scheduling: (flight, seats). AN111 sells out.
const BOOKED: &[(&str, u32)] = &[("AN111", 2), ("AN120", 3)];

struct World {
    app: TestApp,
    flights: Vec<Model>,
}

impl World {
    /// Schedules, cancels and books through the API, keeping its own model.
    async fn new() -> Self {
        let app = test_app(Backend::from_env()).await;
        let mut flights = Vec::new();
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
            flights.push(Model {
                id,
                number,
                from,
                to,
                departure,
                arrival,
                price,
                seats_total: seats,
                seats_available: seats,
                cancelled: false,
            });
        }
        let mut world = World { app, flights };
        for number in CANCELLED {
            let id = world.flight(number).id;
            world
                .app
                .post(&format!("/flights/{id}/cancel"), Some(ADMIN), &json!({}))
                .await
                .expect(StatusCode::OK);
            world.model(number).cancelled = true;
        }
        for &(number, seats) in BOOKED {
            let id = world.flight(number).id;
            let reply = world
                .app
                .post(
                    "/bookings",
                    Some(AGENT),
                    &booking_json(&[(id, seats)], "tok_visa"),
                )
                .await;
            let booking = reply.expect(StatusCode::ACCEPTED)["id"]
                .as_str()
                .unwrap()
                .to_owned();
            let booking = settled_booking(&world.app, &booking).await;
            assert_eq!(booking["status"], "confirmed", "{booking}");
            world.model(number).seats_available -= seats;
            let left = world.flight(number).seats_available;
            flight_until(&world.app, id, |f| f["seats_available"] == left).await;
        }
        world
    }

    fn flight(&self, number: &str) -> &Model {
        self.flights.iter().find(|f| f.number == number).unwrap()
    }

    fn model(&mut self, number: &str) -> &mut Model {
        self.flights
            .iter_mut()
            .find(|f| f.number == number)
            .unwrap()
    }

    /// What a search must answer: scheduled flights passing `filter`, in `sort` order.
    fn expected(&self, filter: &dyn Fn(&Model) -> bool, sort: &str) -> Vec<Value> {
        let mut hits: Vec<&Model> = self
            .flights
            .iter()
            .filter(|f| !f.cancelled && filter(f))
            .collect();
        match sort {
            "price" => hits.sort_by_key(|f| f.price),
            "-price" => hits.sort_by_key(|f| -f.price),
            "departure" => hits.sort_by_key(|f| f.departure),
            "-departure" => hits.sort_by_key(|f| std::cmp::Reverse(f.departure)),
            other => panic!("sort {other}"),
        }
        hits.into_iter().map(Model::json).collect()
    }

    /// A search that has seen everything written so far.
    async fn search(&self, query: &str) -> Value {
        let head = self.app.head().await;
        let separator = if query.is_empty() { "" } else { "&" };
        let uri = format!("/flights/search?{query}{separator}min_position={head}");
        let reply = self.app.get(&uri).await;
        let page = reply.expect(StatusCode::OK).clone();
        assert_eq!(keys(&page), ["flights", "next", "position"], "{uri}");
        page
    }
}

fn day(s: &str) -> NaiveDate {
    s.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_answers_a_table_of_queries() {
    let w = World::new().await;
    type Filter = Box<dyn Fn(&Model) -> bool>;
    let table: Vec<(&str, &str, Filter)> = vec![
        ("", "departure", Box::new(|_| true)),
        ("from=JFK", "departure", Box::new(|f| f.from == "JFK")),
        (
            "from=jfk&to=LHR",
            "departure",
            Box::new(|f| f.from == "JFK" && f.to == "LHR"),
        ),
        ("to=SFO", "departure", Box::new(|f| f.to == "SFO")),
        (
            "from=SFO&to=SEA",
            "departure",
            Box::new(|f| f.from == "SFO" && f.to == "SEA"),
        ),
        ("from=BOS", "departure", Box::new(|f| f.from == "BOS")),
        (
            "date=2027-03-01",
            "departure",
            Box::new(|f| f.day() == day("2027-03-01")),
        ),
        (
            "date=2027-03-02&date_to=2027-03-03",
            "departure",
            Box::new(|f| f.day() >= day("2027-03-02") && f.day() <= day("2027-03-03")),
        ),
        (
            "date_to=2027-03-01",
            "departure",
            Box::new(|f| f.day() <= day("2027-03-01")),
        ),
        (
            "max_price=15000",
            "departure",
            Box::new(|f| f.price <= 15000),
        ),
        (
            "min_seats=1",
            "departure",
            Box::new(|f| f.seats_available >= 1),
        ),
        (
            "min_seats=178",
            "departure",
            Box::new(|f| f.seats_available >= 178),
        ),
        (
            "q=london",
            "departure",
            Box::new(|f| f.serves(&["LHR", "LGW"])),
        ),
        ("q=Heathrow", "departure", Box::new(|f| f.serves(&["LHR"]))),
        ("q=AN1234", "departure", Box::new(|f| f.number == "AN1234")),
        (
            "q=san%20francisco",
            "departure",
            Box::new(|f| f.serves(&["SFO"])),
        ),
        (
            "q=tokyo",
            "departure",
            Box::new(|f| f.serves(&["HND", "NRT"])),
        ),
        ("q=anchorage", "departure", Box::new(|f| f.serves(&["ANC"]))),
        (
            "q=Ted%20Stevens",
            "departure",
            Box::new(|f| f.serves(&["ANC"])),
        ),
        ("to=ANC", "departure", Box::new(|f| f.to == "ANC")),
        (
            "q=new%20york&date=2027-03-01",
            "departure",
            Box::new(|f| f.serves(&["JFK", "LGA"]) && f.day() == day("2027-03-01")),
        ),
        ("sort=price", "price", Box::new(|_| true)),
        ("sort=-price", "-price", Box::new(|_| true)),
        ("sort=departure", "departure", Box::new(|_| true)),
        ("sort=-departure", "-departure", Box::new(|_| true)),
        (
            "from=JFK&max_price=46000&sort=-price",
            "-price",
            Box::new(|f| f.from == "JFK" && f.price <= 46000),
        ),
        (
            "to=JFK&min_seats=100&sort=price",
            "price",
            Box::new(|f| f.to == "JFK" && f.seats_available >= 100),
        ),
    ];
    assert!(table.len() >= 15);
    for (query, sort, filter) in &table {
        let expected = w.expected(filter.as_ref(), sort);
        assert!(!expected.is_empty(), "query {query:?} tests nothing");
        let joined = if query.is_empty() {
            "limit=100".to_owned()
        } else {
            format!("{query}&limit=100")
        };
        let page = w.search(&joined).await;
        assert_eq!(
            page["flights"].as_array().unwrap(),
            &expected,
            "query {query:?}"
        );
        assert_eq!(page["next"], Value::Null, "query {query:?}");
    }
    // Sanity of the table itself: the sold-out flight shows up unless
    // min_seats says otherwise, the cancelled ones never do.
    let all = w.search("limit=100").await;
    let numbers: Vec<&str> = all["flights"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["flight_number"].as_str().unwrap())
        .collect();
    assert!(numbers.contains(&"AN111"));
    assert_eq!(w.flight("AN111").seats_available, 0);
    assert!(!numbers.contains(&"AN117") && !numbers.contains(&"AN118"));
    assert_eq!(numbers.len(), FLIGHTS.len() - CANCELLED.len());
    // The default page size is 20.
    let page = w.search("").await;
    assert_eq!(page["flights"].as_array().unwrap().len(), 20);
    assert!(page["next"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_flights_leave_search_but_stay_readable() {
    let w = World::new().await;
    let head = w.app.head().await;
    for number in CANCELLED {
        let model = w.flight(number);
        let reply = w
            .app
            .get(&format!("/flights/{}?min_position={head}", model.id))
            .await;
        assert_eq!(reply.expect(StatusCode::OK), &model.json());
        assert_eq!(reply.json["status"], "cancelled");
        let page = w.search(&format!("q={number}")).await;
        assert_eq!(page["flights"], json!([]), "{number}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_cover_every_result_exactly_once_in_every_order() {
    let w = World::new().await;
    for (sort, filter, limit) in [
        ("price", "", 4),
        ("-price", "", 4),
        ("departure", "", 4),
        ("-departure", "", 5),
        ("price", "from=JFK&", 1),
        ("-departure", "date=2027-03-01&date_to=2027-03-04&", 3),
    ] {
        let expected = w.expected(
            &|f: &Model| match filter {
                "from=JFK&" => f.from == "JFK",
                "date=2027-03-01&date_to=2027-03-04&" => {
                    f.day() >= day("2027-03-01") && f.day() <= day("2027-03-04")
                }
                _ => true,
            },
            sort,
        );
        let mut seen = Vec::new();
        let mut after: Option<String> = None;
        let mut pages = 0;
        loop {
            let cursor = after
                .as_ref()
                .map(|a| format!("&after={}", urlencode(a)))
                .unwrap_or_default();
            let page = w
                .search(&format!("{filter}sort={sort}&limit={limit}{cursor}"))
                .await;
            let flights = page["flights"].as_array().unwrap();
            assert!(flights.len() <= limit, "page too long");
            seen.extend(flights.iter().cloned());
            pages += 1;
            assert!(pages <= expected.len() + 1, "pagination does not end");
            match page["next"].as_str() {
                Some(next) => after = Some(next.to_owned()),
                None => break,
            }
        }
        let ids: HashSet<&str> = seen.iter().map(|f| f["id"].as_str().unwrap()).collect();
        assert_eq!(
            ids.len(),
            seen.len(),
            "{sort} {filter}: a flight came twice"
        );
        assert_eq!(
            seen, expected,
            "{sort} {filter}: not every flight once, in order"
        );
        assert!(pages >= expected.len().div_ceil(limit));
    }
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_position_right_after_a_command_always_sees_it() {
    let app = test_app(Backend::from_env()).await;
    let flight = flight_json(
        "AN900",
        "OSL",
        "HEL",
        "2027-04-01T08:00:00Z",
        "2027-04-01T09:30:00Z",
        120,
        10000,
    );
    let (id, _) = app.schedule(&flight).await;
    for round in 0..20 {
        let price = 20000 + round * 100;
        let reply = app
            .post(
                &format!("/flights/{id}/price"),
                Some(ADMIN),
                &json!({"price": {"amount": price, "currency": "USD"}}),
            )
            .await;
        let position = reply.expect(StatusCode::OK)["position"]
            .as_str()
            .unwrap()
            .to_owned();
        let page = app
            .get(&format!("/flights/search?q=AN900&min_position={position}"))
            .await;
        let page = page.expect(StatusCode::OK);
        assert_eq!(
            page["flights"][0]["price"]["amount"], price,
            "round {round}: search did not see its write"
        );
        // The answer's position is one the client can pass on.
        let again = app
            .get(&format!(
                "/flights/{id}?min_position={}",
                page["position"].as_str().unwrap()
            ))
            .await;
        assert_eq!(again.expect(StatusCode::OK)["price"]["amount"], price);
    }
}
