//! The REST API (DESIGN §5.1) over HTTP: every route's happy path with its
//! exact JSON shape, the bad-input matrix (status, code, nothing written),
//! auth, limits, health, metrics and the OpenAPI document.

mod http_support;

use std::time::Duration;

use airline::http::RateLimit;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use http_support::*;
use serde_json::{Value, json};
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_with_the_contract_shapes() {
    let app = test_app(Backend::from_env()).await;

    // POST /flights: 201 {"id","position","stream_version"} and the header.
    let reply = app.post("/flights", Some(ADMIN), &example_flight()).await;
    let done = reply.expect(StatusCode::CREATED).clone();
    assert_eq!(keys(&done), ["id", "position", "stream_version"]);
    assert_eq!(done["stream_version"], 1);
    let position = done["position"].as_str().unwrap().to_owned();
    assert_eq!(
        reply
            .headers
            .get("x-annals-position")
            .unwrap()
            .to_str()
            .unwrap(),
        position
    );
    let id = done["id"].as_str().unwrap().to_owned();
    id.parse::<Uuid>().unwrap();

    // GET /flights/{id}, reading our write.
    let flight = app
        .get(&format!("/flights/{id}?min_position={position}"))
        .await
        .expect(StatusCode::OK)
        .clone();
    assert_eq!(
        flight,
        json!({
            "id": id, "flight_number": "AN123", "from": "JFK", "to": "LHR",
            "departure": "2026-12-01T18:00:00Z", "arrival": "2026-12-02T06:00:00Z",
            "price": {"amount": 45000, "currency": "USD"},
            "seats_total": 180, "seats_available": 180, "status": "scheduled",
        })
    );

    // Reschedule, price, cancel: 200 {"id","position","stream_version"}.
    let moved = json!({"departure": "2026-12-01T20:00:00Z", "arrival": "2026-12-02T08:00:00Z"});
    let reply = app
        .post(&format!("/flights/{id}/reschedule"), Some(ADMIN), &moved)
        .await;
    let done = reply.expect(StatusCode::OK);
    assert_eq!(keys(done), ["id", "position", "stream_version"]);
    assert_eq!(done["stream_version"], 2);
    assert_eq!(done["id"], id.as_str());

    let price = json!({"price": {"amount": 39900, "currency": "USD"}});
    let reply = app
        .post(&format!("/flights/{id}/price"), Some(ADMIN), &price)
        .await;
    let done = reply.expect(StatusCode::OK).clone();
    assert_eq!(keys(&done), ["id", "position", "stream_version"]);
    assert_eq!(done["stream_version"], 3);
    let position = done["position"].as_str().unwrap();
    let flight = app
        .get(&format!("/flights/{id}?min_position={position}"))
        .await
        .expect(StatusCode::OK)
        .clone();
    assert_eq!(flight["departure"], "2026-12-01T20:00:00Z");
    assert_eq!(flight["arrival"], "2026-12-02T08:00:00Z");
    assert_eq!(flight["price"], json!({"amount": 39900, "currency": "USD"}));

    // Search: {"flights","next","position"}.
    let page = app
        .get(&format!("/flights/search?from=JFK&min_position={position}"))
        .await
        .expect(StatusCode::OK)
        .clone();
    assert_eq!(keys(&page), ["flights", "next", "position"]);
    assert_eq!(page["flights"].as_array().unwrap().len(), 1);
    assert_eq!(page["flights"][0], flight);
    assert_eq!(page["next"], Value::Null);
    assert!(page["position"].is_string());

    // POST /bookings: 202 {"id","position"}; GET /bookings/{id}; cancel: 200 {"id","position"}.
    let reply = app
        .post(
            "/bookings",
            Some(AGENT),
            &booking_json(&[(id.parse().unwrap(), 2)], "tok_visa"),
        )
        .await;
    let accepted = reply.expect(StatusCode::ACCEPTED).clone();
    assert_eq!(keys(&accepted), ["id", "position"]);
    assert_eq!(
        reply
            .headers
            .get("x-annals-position")
            .unwrap()
            .to_str()
            .unwrap(),
        accepted["position"].as_str().unwrap()
    );
    let booking_id = accepted["id"].as_str().unwrap().to_owned();
    let booking = settled_booking(&app, &booking_id).await;
    assert_eq!(
        keys(&booking),
        ["id", "passenger", "segments", "status", "total"]
    );
    assert_eq!(booking["status"], "confirmed");
    assert_eq!(
        booking["passenger"],
        json!({"name": "Ada Lovelace", "email": "ada@example.com"})
    );
    assert_eq!(
        booking["segments"],
        json!([{"flight_id": id, "seats": 2, "price": {"amount": 39900, "currency": "USD"}}])
    );
    assert_eq!(
        booking["total"],
        json!({"amount": 79800, "currency": "USD"})
    );
    let reply = app
        .post(
            &format!("/bookings/{booking_id}/cancel"),
            Some(AGENT),
            &json!({}),
        )
        .await;
    let cancelled = reply.expect(StatusCode::OK);
    assert_eq!(keys(cancelled), ["id", "position"]);
    assert_eq!(cancelled["id"], booking_id.as_str());

    // Cancel the flight with `{}`; it leaves search and stays readable.
    let reply = app
        .post(&format!("/flights/{id}/cancel"), Some(ADMIN), &json!({}))
        .await;
    let done = reply.expect(StatusCode::OK).clone();
    assert_eq!(keys(&done), ["id", "position", "stream_version"]);
    let position = done["position"].as_str().unwrap();
    let flight = app
        .get(&format!("/flights/{id}?min_position={position}"))
        .await;
    assert_eq!(flight.expect(StatusCode::OK)["status"], "cancelled");
    let page = app
        .get(&format!("/flights/search?from=JFK&min_position={position}"))
        .await;
    assert_eq!(page.expect(StatusCode::OK)["flights"], json!([]));

    // Operations.
    assert_eq!(app.get("/health").await.status, StatusCode::OK);
    let metrics = app.get("/metrics").await;
    assert_eq!(metrics.status, StatusCode::OK);
    assert!(
        metrics
            .headers
            .get(header::CONTENT_TYPE)
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    assert_eq!(
        app.get("/openapi.json").await.expect(StatusCode::OK)["openapi"],
        "3.1.0"
    );
}

/// One refused request: what is sent and what must come back.
struct Refused {
    what: &'static str,
    method: Method,
    uri: String,
    token: Option<&'static str>,
    content_type: Option<&'static str>,
    body: String,
    status: StatusCode,
    code: &'static str,
}

fn post(what: &'static str, uri: &str, token: Option<&'static str>, body: Value) -> Refused {
    Refused {
        what,
        method: Method::POST,
        uri: uri.to_owned(),
        token,
        content_type: Some("application/json"),
        body: body.to_string(),
        status: StatusCode::BAD_REQUEST,
        code: "",
    }
}

impl Refused {
    fn is(mut self, status: StatusCode, code: &'static str) -> Self {
        self.status = status;
        self.code = code;
        self
    }

    fn raw(mut self, body: &str) -> Self {
        self.body = body.to_owned();
        self
    }

    fn content_type(mut self, content_type: Option<&'static str>) -> Self {
        self.content_type = content_type;
        self
    }

    fn method(mut self, method: Method) -> Self {
        self.method = method;
        self
    }
}

/// The example flight with one field replaced.
fn flight_with(field: &str, value: Value) -> Value {
    let mut flight = example_flight();
    flight[field] = value;
    flight
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_with_its_status_and_code_and_writes_nothing() {
    use StatusCode as S;
    let app = test_app(Backend::from_env()).await;
    let (flight, _) = app.schedule(&example_flight()).await;
    // Another number: a number flies once a day.
    let (cancelled, _) = app
        .schedule(&flight_with("flight_number", json!("AN124")))
        .await;
    app.post(
        &format!("/flights/{cancelled}/cancel"),
        Some(ADMIN),
        &json!({}),
    )
    .await
    .expect(S::OK);
    let unknown = Uuid::now_v7();
    let price = |uri: String| format!("/flights/{uri}/price");
    let usd = |amount: i64| json!({"price": {"amount": amount, "currency": "USD"}});
    let mut unknown_field = example_flight();
    unknown_field["gate"] = json!("B7");
    let mut missing = example_flight();
    missing.as_object_mut().unwrap().remove("seats");
    let mut extra_money_field = example_flight();
    extra_money_field["price"]["tax"] = json!(10);
    let mut big = example_flight();
    big["padding"] = json!("x".repeat(70 * 1024));

    let cases = vec![
        post("malformed JSON", "/flights", Some(ADMIN), json!(null))
            .raw(r#"{"flight_number": "AN1""#)
            .is(S::BAD_REQUEST, "malformed_json"),
        post("trailing garbage", "/flights", Some(ADMIN), json!(null))
            .raw(&format!("{} x", example_flight()))
            .is(S::BAD_REQUEST, "malformed_json"),
        post("not an object", "/flights", Some(ADMIN), json!([1, 2]))
            .is(S::BAD_REQUEST, "invalid_body"),
        post("unknown field", "/flights", Some(ADMIN), unknown_field)
            .is(S::BAD_REQUEST, "unknown_field"),
        post(
            "unknown money field",
            "/flights",
            Some(ADMIN),
            extra_money_field,
        )
        .is(S::BAD_REQUEST, "unknown_field"),
        post("missing field", "/flights", Some(ADMIN), missing).is(S::BAD_REQUEST, "missing_field"),
        post(
            "unknown airport",
            "/flights",
            Some(ADMIN),
            flight_with("from", json!("XXX")),
        )
        .is(S::BAD_REQUEST, "invalid_airport"),
        post(
            "short airport code",
            "/flights",
            Some(ADMIN),
            flight_with("to", json!("LH")),
        )
        .is(S::BAD_REQUEST, "invalid_airport"),
        post(
            "bad flight number",
            "/flights",
            Some(ADMIN),
            flight_with("flight_number", json!("A1")),
        )
        .is(S::BAD_REQUEST, "invalid_flight_number"),
        post(
            "bad currency",
            "/flights",
            Some(ADMIN),
            flight_with("price", json!({"amount": 100, "currency": "usd"})),
        )
        .is(S::BAD_REQUEST, "invalid_currency"),
        post(
            "negative price",
            "/flights",
            Some(ADMIN),
            flight_with("price", json!({"amount": -100, "currency": "USD"})),
        )
        .is(S::BAD_REQUEST, "invalid_price"),
        post(
            "zero price",
            "/flights",
            Some(ADMIN),
            flight_with("price", json!({"amount": 0, "currency": "USD"})),
        )
        .is(S::BAD_REQUEST, "invalid_price"),
        post(
            "no seats",
            "/flights",
            Some(ADMIN),
            flight_with("seats", json!(0)),
        )
        .is(S::BAD_REQUEST, "invalid_seats"),
        post(
            "negative seats",
            "/flights",
            Some(ADMIN),
            flight_with("seats", json!(-5)),
        )
        .is(S::BAD_REQUEST, "invalid_seats"),
        post(
            "arrival before departure",
            "/flights",
            Some(ADMIN),
            flight_with("arrival", json!("2026-12-01T17:00:00Z")),
        )
        .is(S::BAD_REQUEST, "arrival_before_departure"),
        post(
            "same airport",
            "/flights",
            Some(ADMIN),
            flight_with("to", json!("JFK")),
        )
        .is(S::BAD_REQUEST, "same_airport"),
        post(
            "bad time",
            "/flights",
            Some(ADMIN),
            flight_with("departure", json!("tomorrow")),
        )
        .is(S::BAD_REQUEST, "invalid_time"),
        post("text/plain", "/flights", Some(ADMIN), example_flight())
            .content_type(Some("text/plain"))
            .is(S::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
        post("no content type", "/flights", Some(ADMIN), example_flight())
            .content_type(None)
            .is(S::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
        post("oversized body", "/flights", Some(ADMIN), big)
            .is(S::PAYLOAD_TOO_LARGE, "payload_too_large"),
        post("no token", "/flights", None, example_flight()).is(S::UNAUTHORIZED, "unauthorized"),
        post(
            "unknown token",
            "/flights",
            Some("not-a-token"),
            example_flight(),
        )
        .is(S::UNAUTHORIZED, "unauthorized"),
        post(
            "no token, bad body: 401 first",
            "/flights",
            None,
            json!(null),
        )
        .raw("{")
        .is(S::UNAUTHORIZED, "unauthorized"),
        post("agent schedules", "/flights", Some(AGENT), example_flight())
            .is(S::FORBIDDEN, "forbidden"),
        post(
            "reader schedules",
            "/flights",
            Some(READER),
            example_flight(),
        )
        .is(S::FORBIDDEN, "forbidden"),
        post(
            "agent changes a price",
            &price(flight.to_string()),
            Some(AGENT),
            usd(100),
        )
        .is(S::FORBIDDEN, "forbidden"),
        post(
            "agent cancels a flight",
            &format!("/flights/{flight}/cancel"),
            Some(AGENT),
            json!({}),
        )
        .is(S::FORBIDDEN, "forbidden"),
        post(
            "reader books",
            "/bookings",
            Some(READER),
            booking_json(&[(flight, 1)], "tok_visa"),
        )
        .is(S::FORBIDDEN, "forbidden"),
        post(
            "bad uuid in path",
            &price("not-a-uuid".into()),
            Some(ADMIN),
            usd(100),
        )
        .is(S::BAD_REQUEST, "invalid_id"),
        post(
            "unknown flight: price",
            &price(unknown.to_string()),
            Some(ADMIN),
            usd(100),
        )
        .is(S::NOT_FOUND, "flight_not_found"),
        post(
            "unknown flight: reschedule",
            &format!("/flights/{unknown}/reschedule"),
            Some(ADMIN),
            json!({"departure": "2026-12-01T20:00:00Z", "arrival": "2026-12-02T08:00:00Z"}),
        )
        .is(S::NOT_FOUND, "flight_not_found"),
        post(
            "unknown flight: cancel",
            &format!("/flights/{unknown}/cancel"),
            Some(ADMIN),
            json!({}),
        )
        .is(S::NOT_FOUND, "flight_not_found"),
        post(
            "negative new price",
            &price(flight.to_string()),
            Some(ADMIN),
            usd(-1),
        )
        .is(S::BAD_REQUEST, "invalid_price"),
        post(
            "price in another currency",
            &price(flight.to_string()),
            Some(ADMIN),
            json!({"price": {"amount": 100, "currency": "EUR"}}),
        )
        .is(S::UNPROCESSABLE_ENTITY, "currency_mismatch"),
        post(
            "price of a cancelled flight",
            &price(cancelled.to_string()),
            Some(ADMIN),
            usd(100),
        )
        .is(S::UNPROCESSABLE_ENTITY, "flight_cancelled"),
        post(
            "reschedule backwards",
            &format!("/flights/{flight}/reschedule"),
            Some(ADMIN),
            json!({"departure": "2026-12-01T20:00:00Z", "arrival": "2026-12-01T08:00:00Z"}),
        )
        .is(S::BAD_REQUEST, "arrival_before_departure"),
        post(
            "cancel reason not text",
            &format!("/flights/{flight}/cancel"),
            Some(ADMIN),
            json!({"reason": 5}),
        )
        .is(S::BAD_REQUEST, "invalid_value"),
        post(
            "book an unknown flight",
            "/bookings",
            Some(AGENT),
            booking_json(&[(unknown, 1)], "tok_visa"),
        )
        .is(S::NOT_FOUND, "flight_not_found"),
        post(
            "book a cancelled flight",
            "/bookings",
            Some(AGENT),
            booking_json(&[(cancelled, 1)], "tok_visa"),
        )
        .is(S::UNPROCESSABLE_ENTITY, "flight_cancelled"),
        post(
            "book no seats",
            "/bookings",
            Some(AGENT),
            booking_json(&[(flight, 0)], "tok_visa"),
        )
        .is(S::BAD_REQUEST, "invalid_seats"),
        post(
            "book no flights",
            "/bookings",
            Some(AGENT),
            booking_json(&[], "tok_visa"),
        )
        .is(S::BAD_REQUEST, "no_segments"),
        post(
            "book without a card",
            "/bookings",
            Some(AGENT),
            booking_json(&[(flight, 1)], " "),
        )
        .is(S::BAD_REQUEST, "missing_card_token"),
        post("book with a bad e-mail", "/bookings", Some(AGENT), {
            let mut b = booking_json(&[(flight, 1)], "tok_visa");
            b["passenger"]["email"] = json!("nobody");
            b
        })
        .is(S::BAD_REQUEST, "invalid_passenger"),
        post("book with a bad flight id", "/bookings", Some(AGENT), {
            let mut b = booking_json(&[(flight, 1)], "tok_visa");
            b["segments"][0]["flight_id"] = json!("AN123");
            b
        })
        .is(S::BAD_REQUEST, "invalid_id"),
        post(
            "cancel an unknown booking",
            &format!("/bookings/{unknown}/cancel"),
            Some(AGENT),
            json!({}),
        )
        .is(S::NOT_FOUND, "booking_not_found"),
        post(
            "cancel a booking with fields",
            &format!("/bookings/{unknown}/cancel"),
            Some(AGENT),
            json!({"why": "x"}),
        )
        .is(S::BAD_REQUEST, "unknown_field"),
        post(
            "bad idempotency key",
            "/flights",
            Some(ADMIN),
            example_flight(),
        )
        .is(S::BAD_REQUEST, "invalid_idempotency_key"),
        post("unknown route", "/planes", Some(ADMIN), json!({})).is(S::NOT_FOUND, "not_found"),
        post("wrong method", "/flights/search", Some(ADMIN), json!({}))
            .is(S::METHOD_NOT_ALLOWED, "method_not_allowed"),
        post(
            "DELETE a flight",
            &format!("/flights/{flight}"),
            Some(ADMIN),
            json!({}),
        )
        .method(Method::DELETE)
        .is(S::METHOD_NOT_ALLOWED, "method_not_allowed"),
    ];
    assert!(cases.len() >= 45);
    for case in cases {
        let head = app.head().await;
        let mut request = Request::builder()
            .method(case.method.clone())
            .uri(&case.uri);
        if let Some(token) = case.token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        if let Some(content_type) = case.content_type {
            request = request.header(header::CONTENT_TYPE, content_type);
        }
        if case.what == "bad idempotency key" {
            request = request.header("idempotency-key", "not-a-uuid");
        }
        let reply = app.send(request.body(Body::from(case.body)).unwrap()).await;
        assert_eq!(reply.status, case.status, "{}: {}", case.what, reply.text);
        assert_eq!(
            reply.error_code(),
            case.code,
            "{}: {}",
            case.what,
            reply.text
        );
        assert_eq!(
            app.head().await,
            head,
            "{}: something was written",
            case.what
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_queries_are_refused_with_their_codes() {
    let app = test_app_with(
        Backend::from_env(),
        Options {
            read_wait: Duration::from_millis(300),
            ..Options::default()
        },
    )
    .await;
    let cases = [
        ("/flights/search?from=XXX", "invalid_airport"),
        ("/flights/search?to=12", "invalid_airport"),
        ("/flights/search?date=2026-13-01", "invalid_date"),
        ("/flights/search?date=tomorrow", "invalid_date"),
        ("/flights/search?date_to=2026-1-1x", "invalid_date"),
        (
            "/flights/search?date=2026-12-02&date_to=2026-12-01",
            "invalid_date_range",
        ),
        ("/flights/search?max_price=-1", "invalid_price"),
        ("/flights/search?max_price=cheap", "invalid_price"),
        ("/flights/search?min_seats=-2", "invalid_seats"),
        ("/flights/search?sort=cheapest", "invalid_sort"),
        ("/flights/search?limit=101", "invalid_limit"),
        ("/flights/search?limit=0", "invalid_limit"),
        ("/flights/search?limit=ten", "invalid_limit"),
        ("/flights/search?after=garbage", "invalid_cursor"),
        ("/flights/search?min_position=yesterday", "invalid_position"),
        ("/flights/search?min_position=1.2.3", "invalid_position"),
        ("/flights/search?colour=red", "invalid_query"),
        ("/flights/not-a-uuid", "invalid_id"),
        (
            "/flights/01890a5d-ac96-774b-bcce-b302099a8057?min_position=x",
            "invalid_position",
        ),
        (
            "/flights/01890a5d-ac96-774b-bcce-b302099a8057?sort=price",
            "invalid_query",
        ),
    ];
    for (uri, code) in cases {
        let reply = app.get(uri).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{uri}: {}",
            reply.text
        );
        assert_eq!(reply.error_code(), code, "{uri}");
    }
    let unknown = Uuid::now_v7();
    let reply = app.get(&format!("/flights/{unknown}")).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.error_code(), "flight_not_found");
    let reply = app.get_as(&format!("/bookings/{unknown}"), READER).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.error_code(), "booking_not_found");
    let reply = app.get_as("/bookings/nope", READER).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.error_code(), "invalid_id");

    // A position the log never reaches: the bounded wait ends in 503.
    let started = std::time::Instant::now();
    let reply = app.get("/flights/search?min_position=999999.999999").await;
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        reply.text
    );
    assert_eq!(reply.error_code(), "read_side_behind");
    assert!(started.elapsed() >= Duration::from_millis(300));
    let reply = app
        .get(&format!("/flights/{unknown}?min_position=999999.999999"))
        .await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.error_code(), "read_side_behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_decide_who_may_do_what() {
    let app = test_app(Backend::from_env()).await;
    let (flight, _) = app.schedule(&example_flight()).await;
    // Flight commands: admin only.
    for (token, status) in [
        (READER, StatusCode::FORBIDDEN),
        (AGENT, StatusCode::FORBIDDEN),
        (ADMIN, StatusCode::OK),
    ] {
        let reply = app
            .post(
                &format!("/flights/{flight}/price"),
                Some(token),
                &json!({"price": {"amount": 50000, "currency": "USD"}}),
            )
            .await;
        assert_eq!(reply.status, status, "{token}: {}", reply.text);
    }
    // Bookings: agent and admin book; everyone with a token reads.
    let mut bookings = Vec::new();
    for (token, status) in [
        (READER, StatusCode::FORBIDDEN),
        (AGENT, StatusCode::ACCEPTED),
        (ADMIN, StatusCode::ACCEPTED),
    ] {
        let reply = app
            .post(
                "/bookings",
                Some(token),
                &booking_json(&[(flight, 1)], "tok_visa"),
            )
            .await;
        assert_eq!(reply.status, status, "{token}: {}", reply.text);
        if status == StatusCode::ACCEPTED {
            bookings.push(reply.json["id"].as_str().unwrap().to_owned());
        }
    }
    for booking in &bookings {
        for token in [READER, AGENT, ADMIN] {
            let reply = app.get_as(&format!("/bookings/{booking}"), token).await;
            assert_eq!(reply.status, StatusCode::OK, "{token}");
        }
        let reply = app.get(&format!("/bookings/{booking}")).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        assert_eq!(reply.error_code(), "unauthorized");
        assert!(reply.headers.contains_key(header::WWW_AUTHENTICATE));
        let reply = app
            .post(
                &format!("/bookings/{booking}/cancel"),
                Some(READER),
                &json!({}),
            )
            .await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN);
    }
    // Flight queries are open.
    assert_eq!(app.get("/flights/search").await.status, StatusCode::OK);
    let position = app.head().await;
    assert_eq!(
        app.get(&format!("/flights/{flight}?min_position={position}"))
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_runs_a_command_once() {
    let app = test_app(Backend::from_env()).await;
    let key = Uuid::now_v7().to_string();
    let send = || {
        let request = Request::post("/flights")
            .header(header::AUTHORIZATION, format!("Bearer {ADMIN}"))
            .header(header::CONTENT_TYPE, "application/json")
            .header("idempotency-key", &key)
            .body(Body::from(example_flight().to_string()))
            .unwrap();
        app.send(request)
    };
    let first = send().await;
    let head = app.head().await;
    let second = send().await;
    assert_eq!(first.expect(StatusCode::CREATED), &second.json);
    assert_eq!(app.head().await, head, "the retry wrote again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_commands_take_an_empty_body_or_a_reason() {
    let app = test_app(Backend::from_env()).await;
    let (a, _) = app.schedule(&example_flight()).await;
    let (b, _) = app
        .schedule(&flight_with("flight_number", json!("AN124")))
        .await;
    let reply = app
        .request(
            Method::POST,
            &format!("/flights/{a}/cancel"),
            Some(ADMIN),
            None,
            Body::empty(),
        )
        .await;
    reply.expect(StatusCode::OK);
    let reply = app
        .post(
            &format!("/flights/{b}/cancel"),
            Some(ADMIN),
            &json!({"reason": "crew strike"}),
        )
        .await;
    let position = reply.expect(StatusCode::OK)["position"]
        .as_str()
        .unwrap()
        .to_owned();
    let flight = app
        .get(&format!("/flights/{b}?min_position={position}"))
        .await;
    assert_eq!(flight.expect(StatusCode::OK)["status"], "cancelled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_are_refused_before_they_are_read() {
    let app = test_app_with(
        Backend::from_env(),
        Options {
            body_limit: 1024,
            ..Options::default()
        },
    )
    .await;
    let head = app.head().await;
    let mut flight = example_flight();
    flight["padding"] = json!("x".repeat(2048));
    let body = flight.to_string();
    // Announced by Content-Length: refused up front.
    let request = Request::post("/flights")
        .header(header::AUTHORIZATION, format!("Bearer {ADMIN}"))
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, body.len())
        .body(Body::from(body.clone()))
        .unwrap();
    let reply = app.send(request).await;
    assert_eq!(
        reply.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        reply.text
    );
    assert_eq!(reply.error_code(), "payload_too_large");
    // Streamed without a length: refused while reading.
    let reply = app.post("/flights", Some(ADMIN), &flight).await;
    assert_eq!(
        reply.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        reply.text
    );
    assert_eq!(reply.error_code(), "payload_too_large");
    assert_eq!(app.head().await, head);
    // Within the limit it goes through.
    app.schedule(&example_flight()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limiting_answers_429_after_the_burst() {
    let app = test_app_with(
        Backend::from_env(),
        Options {
            rate_limit: Some(RateLimit {
                burst: 5,
                per_second: 0.1,
            }),
            ..Options::default()
        },
    )
    .await;
    // Anonymous clients without connection info share one bucket.
    for i in 0..5 {
        let reply = app.get("/flights/search").await;
        assert_eq!(reply.status, StatusCode::OK, "request {i}: {}", reply.text);
    }
    let reply = app.get("/flights/search").await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(reply.error_code(), "rate_limited");
    let retry: u64 = reply.headers[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1);
    // A known token has a bucket of its own; a made-up one does not.
    let reply = app.get_as("/flights/search", READER).await;
    assert_eq!(reply.status, StatusCode::OK);
    let reply = app.get_as("/flights/search", "made-up").await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    // Commands are limited too, and nothing is written.
    for _ in 0..5 {
        app.post("/flights", Some(AGENT), &example_flight()).await;
    }
    let head = app.head().await;
    let reply = app.post("/flights", Some(AGENT), &example_flight()).await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(app.head().await, head);
    // Health and metrics are not limited.
    for _ in 0..10 {
        let reply = app.get("/health").await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_the_store_the_read_side_and_each_projection() {
    let app = test_app(Backend::from_env()).await;
    let (_, position) = app.schedule(&example_flight()).await;
    app.get(&format!("/flights/search?min_position={position}"))
        .await
        .expect(StatusCode::OK);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let health = loop {
        let reply = app.get("/health").await;
        if reply.status == StatusCode::OK {
            break reply.json;
        }
        assert!(tokio::time::Instant::now() < deadline, "{}", reply.text);
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(health["status"], "ok");
    assert_eq!(health["store"]["ok"], true);
    assert_eq!(health["read_side"]["ok"], true);
    let projections = health["projections"].as_array().unwrap();
    let names: Vec<&str> = projections
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"flights"), "{names:?}");
    // The saga runs as partitions, each a runner of its own.
    for partition in 0..http_support::SAGA_PARTITIONS {
        let name = format!("booking_saga#{partition}/{}", http_support::SAGA_PARTITIONS);
        assert!(names.contains(&name.as_str()), "{names:?}");
    }
    for projection in projections {
        assert_eq!(projection["state"], "running", "{projection}");
        assert_eq!(projection["ok"], true);
        assert!(projection["lag_seconds"].is_number());
        assert!(projection["checkpoint"].is_string());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_answers_503_when_a_projection_has_stopped() {
    let mut app = test_app_with(
        Backend::from_env(),
        Options {
            read_wait: Duration::from_millis(300),
            ..Options::default()
        },
    )
    .await;
    assert_eq!(app.get("/health").await.status, StatusCode::OK);
    app.stop_projections().await;
    let reply = app.get("/health").await;
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        reply.text
    );
    assert_eq!(reply.json["status"], "unavailable");
    assert_eq!(reply.json["store"]["ok"], true);
    for projection in reply.json["projections"].as_array().unwrap() {
        assert_eq!(projection["state"], "stopped");
        assert_eq!(projection["ok"], false);
    }
    // With the projections down, reading a new write answers 503 in time.
    let (_, position) = app.schedule(&example_flight()).await;
    let reply = app
        .get(&format!("/flights/search?min_position={position}"))
        .await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.error_code(), "read_side_behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_takes_too_long_times_out_with_503() {
    let app = test_app_with(
        Backend::from_env(),
        Options {
            request_timeout: Duration::from_millis(200),
            read_wait: Duration::from_secs(5),
            ..Options::default()
        },
    )
    .await;
    let started = std::time::Instant::now();
    let reply = app.get("/flights/search?min_position=999999.999999").await;
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        reply.text
    );
    assert_eq!(reply.error_code(), "timeout");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_commands_requests_and_projection_lag() {
    let app = test_app(Backend::from_env()).await;
    let (flight, position) = app.schedule(&example_flight()).await;
    app.post(
        &format!("/flights/{flight}/price"),
        Some(ADMIN),
        &json!({"price": {"amount": -1, "currency": "USD"}}),
    )
    .await;
    app.get(&format!("/flights/search?min_position={position}"))
        .await
        .expect(StatusCode::OK);
    app.get("/nowhere").await;
    let metrics = app.get("/metrics").await;
    let text = metrics.text;
    for expected in [
        "annals_commands_total{",
        "command=\"schedule_flight\"",
        "outcome=\"ok\"",
        "command=\"change_price\"",
        "outcome=\"invalid\"",
        "annals_command_duration_seconds_bucket{",
        "http_requests_total{",
        "route=\"/flights/search\"",
        "route=\"/flights/{id}/price\"",
        "route=\"unmatched\"",
        "status=\"404\"",
        "http_request_duration_seconds_bucket{",
        "annals_projection_lag_seconds{projection=\"flights\"}",
        "annals_projection_lag_seconds{projection=\"booking_saga#0/4\"}",
        "annals_projection_checkpoint{projection=\"flights\"}",
        "annals_projection_lag_events{projection=\"flights\"}",
        "annals_projection_up{projection=\"flights\"}",
        "annals_store_head",
    ] {
        assert!(text.contains(expected), "no {expected} in\n{text}");
    }
}

/// The (method, path) pairs of DESIGN §5.
const ROUTES: &[(&str, &str)] = &[
    ("post", "/flights"),
    ("post", "/flights/{id}/reschedule"),
    ("post", "/flights/{id}/price"),
    ("post", "/flights/{id}/cancel"),
    ("post", "/bookings"),
    ("get", "/bookings/{id}"),
    ("post", "/bookings/{id}/cancel"),
    ("get", "/flights/search"),
    ("get", "/flights/{id}"),
    ("get", "/health"),
    ("get", "/metrics"),
    ("get", "/openapi.json"),
];

/// The property names of a component schema.
fn schema_properties(doc: &Value, name: &str) -> Vec<String> {
    let schema = &doc["components"]["schemas"][name];
    keys(&schema["properties"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_lists_every_route_and_matches_the_json() {
    let app = test_app(Backend::from_env()).await;
    let doc = app
        .get("/openapi.json")
        .await
        .expect(StatusCode::OK)
        .clone();
    let paths = doc["paths"].as_object().unwrap();
    let mut listed: Vec<(String, String)> = paths
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .filter(|k| ["get", "post", "put", "patch", "delete"].contains(&k.as_str()))
                .map(move |method| (method.clone(), path.clone()))
        })
        .collect();
    listed.sort();
    let mut expected: Vec<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    expected.sort();
    assert_eq!(listed, expected);

    // Commands document the bearer scheme, their body and the error shape.
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    assert_eq!(
        doc["paths"]["/flights"]["post"]["security"][0]["bearer"],
        json!([])
    );
    assert!(doc["paths"]["/flights"]["post"]["requestBody"].is_object());
    assert_eq!(
        doc["paths"]["/flights"]["post"]["responses"]["400"]["$ref"],
        "#/components/responses/BadRequest"
    );
    assert_eq!(
        doc["components"]["responses"]["BadRequest"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/ErrorBody"
    );
    assert_eq!(schema_properties(&doc, "ErrorBody"), ["error"]);
    assert_eq!(schema_properties(&doc, "ErrorDetail"), ["code", "message"]);
    let params: Vec<&str> = doc["paths"]["/flights/search"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for name in [
        "from",
        "to",
        "date",
        "date_to",
        "max_price",
        "min_seats",
        "q",
        "sort",
        "limit",
        "after",
        "min_position",
    ] {
        assert!(params.contains(&name), "search parameter {name} missing");
    }

    // The documented schemas have exactly the fields the API sends.
    let (flight, position) = app.schedule(&example_flight()).await;
    let done = app
        .post(
            &format!("/flights/{flight}/price"),
            Some(ADMIN),
            &json!({"price": {"amount": 100, "currency": "USD"}}),
        )
        .await;
    assert_eq!(schema_properties(&doc, "Done"), keys(&done.json));
    let view = app
        .get(&format!("/flights/{flight}?min_position={position}"))
        .await;
    assert_eq!(schema_properties(&doc, "Flight"), keys(&view.json));
    assert_eq!(schema_properties(&doc, "Money"), keys(&view.json["price"]));
    let page = app.get("/flights/search").await;
    assert_eq!(schema_properties(&doc, "SearchPage"), keys(&page.json));
    assert_eq!(
        schema_properties(&doc, "ScheduleFlight"),
        keys(&example_flight())
    );
    let accepted = app
        .post(
            "/bookings",
            Some(AGENT),
            &booking_json(&[(flight, 1)], "tok_declined"),
        )
        .await;
    assert_eq!(schema_properties(&doc, "Accepted"), keys(&accepted.json));
    assert_eq!(
        schema_properties(&doc, "BookingRequest"),
        keys(&booking_json(&[(flight, 1)], "tok_visa"))
    );
    let booking = settled_booking(&app, accepted.json["id"].as_str().unwrap()).await;
    // `reason` is documented and present on a cancelled booking.
    assert_eq!(schema_properties(&doc, "Booking"), keys(&booking));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flight_number_flies_once_a_day() {
    let app = test_app(Backend::from_env()).await;
    app.schedule(&example_flight()).await;
    // Another flight, the same number, the same day: refused, nothing written.
    let again = app.post("/flights", Some(ADMIN), &example_flight()).await;
    again.expect(StatusCode::CONFLICT);
    assert_eq!(again.error_code(), "flight_number_taken");
    // The next day, or another number the same day: scheduled.
    let next_day = flight_with("departure", json!("2026-12-02T18:00:00Z"));
    let mut next_day = next_day;
    next_day["arrival"] = json!("2026-12-03T06:00:00Z");
    app.schedule(&next_day).await;
    app.schedule(&flight_with("flight_number", json!("AN125")))
        .await;
}
