//! The booking flow over HTTP: the saga confirms paid bookings, cancels
//! declined and unanswered ones with a reason, and releases seats when a
//! booking is cancelled; bookings are personal data and need a token.

mod http_support;

use axum::http::StatusCode;
use http_support::*;
use serde_json::json;
use uuid::Uuid;

async fn flight(app: &TestApp, seats: u32) -> Uuid {
    // A number of its own: a number flies once a day.
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(450);
    let number = format!(
        "AN{}",
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let body = flight_json(
        &number,
        "LIS",
        "MAD",
        "2027-05-01T07:00:00Z",
        "2027-05-01T08:20:00Z",
        seats,
        12900,
    );
    app.schedule(&body).await.0
}

async fn book(app: &TestApp, segments: &[(Uuid, u32)], card: &str) -> String {
    let reply = app
        .post("/bookings", Some(AGENT), &booking_json(segments, card))
        .await;
    let body = reply.expect(StatusCode::ACCEPTED);
    assert_eq!(keys(body), ["id", "position"]);
    body["id"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paid_booking_is_confirmed_and_holds_its_seats() {
    let app = test_app(Backend::from_env()).await;
    let (a, b) = (flight(&app, 10).await, flight(&app, 10).await);
    let id = book(&app, &[(a, 2), (b, 1)], "tok_visa").await;
    // Right after the request it is pending (or already further along).
    let first = app.get_as(&format!("/bookings/{id}"), READER).await;
    let status = first.expect(StatusCode::OK)["status"].clone();
    assert!(["pending", "confirmed"].contains(&status.as_str().unwrap()));

    let booking = settled_booking(&app, &id).await;
    assert_eq!(booking["status"], "confirmed", "{booking}");
    assert_eq!(booking["id"], id.as_str());
    assert!(booking.get("reason").is_none(), "{booking}");
    assert_eq!(
        booking["total"],
        json!({"amount": 12900 * 3, "currency": "USD"})
    );
    flight_until(&app, a, |f| f["seats_available"] == 8).await;
    flight_until(&app, b, |f| f["seats_available"] == 9).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declined_card_cancels_the_booking_with_a_reason() {
    let app = test_app(Backend::from_env()).await;
    let a = flight(&app, 10).await;
    let id = book(&app, &[(a, 4)], "tok_declined").await;
    let booking = settled_booking(&app, &id).await;
    assert_eq!(booking["status"], "cancelled", "{booking}");
    assert!(
        booking["reason"].as_str().unwrap().contains("declined"),
        "{booking}"
    );
    // The seats come back.
    flight_until(&app, a, |f| f["seats_available"] == 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_payment_provider_times_out_and_cancels() {
    let app = test_app(Backend::from_env()).await;
    let a = flight(&app, 5).await;
    let id = book(&app, &[(a, 1)], "tok_timeout").await;
    let booking = settled_booking(&app, &id).await;
    assert_eq!(booking["status"], "cancelled", "{booking}");
    assert!(
        booking["reason"].as_str().unwrap().contains("timed out"),
        "{booking}"
    );
    flight_until(&app, a, |f| f["seats_available"] == 5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_seats_than_left_cancels_the_booking() {
    let app = test_app(Backend::from_env()).await;
    let a = flight(&app, 3).await;
    let id = book(&app, &[(a, 4)], "tok_visa").await;
    let booking = settled_booking(&app, &id).await;
    assert_eq!(booking["status"], "cancelled", "{booking}");
    assert!(booking["reason"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_cancels_a_confirmed_booking_and_the_seats_return() {
    let app = test_app(Backend::from_env()).await;
    let a = flight(&app, 6).await;
    let id = book(&app, &[(a, 2)], "tok_visa").await;
    assert_eq!(settled_booking(&app, &id).await["status"], "confirmed");
    flight_until(&app, a, |f| f["seats_available"] == 4).await;

    let reply = app
        .post(&format!("/bookings/{id}/cancel"), Some(AGENT), &json!({}))
        .await;
    let body = reply.expect(StatusCode::OK);
    assert_eq!(keys(body), ["id", "position"]);
    assert_eq!(
        reply.headers["x-annals-position"].to_str().unwrap(),
        body["position"].as_str().unwrap()
    );
    let booking = app.get_as(&format!("/bookings/{id}"), READER).await;
    assert_eq!(booking.expect(StatusCode::OK)["status"], "cancelled");
    flight_until(&app, a, |f| f["seats_available"] == 6).await;
    // Cancelling again changes nothing and still answers 200.
    let head = app.head().await;
    let again = app
        .post(&format!("/bookings/{id}/cancel"), Some(ADMIN), &json!({}))
        .await;
    again.expect(StatusCode::OK);
    assert_eq!(app.head().await, head);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_a_booking_needs_a_token() {
    let app = test_app(Backend::from_env()).await;
    let a = flight(&app, 6).await;
    let id = book(&app, &[(a, 1)], "tok_visa").await;
    let reply = app.get(&format!("/bookings/{id}")).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.error_code(), "unauthorized");
    let reply = app.get_as(&format!("/bookings/{id}"), "stolen-guess").await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.error_code(), "unauthorized");
    for token in [READER, AGENT, ADMIN] {
        let reply = app.get_as(&format!("/bookings/{id}"), token).await;
        assert_eq!(reply.status, StatusCode::OK, "{token}");
        assert_eq!(reply.json["passenger"]["email"], "ada@example.com");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_last_seat_goes_to_exactly_one_of_twenty_concurrent_requests() {
    let app = std::sync::Arc::new(test_app(Backend::from_env()).await);
    let a = flight(&app, 1).await;
    let mut requests = Vec::new();
    for _ in 0..20 {
        let app = std::sync::Arc::clone(&app);
        requests.push(tokio::spawn(async move {
            book(&app, &[(a, 1)], "tok_visa").await
        }));
    }
    let mut ids = Vec::new();
    for request in requests {
        ids.push(request.await.unwrap());
    }
    let mut confirmed = 0;
    for id in &ids {
        let booking = settled_booking(&app, id).await;
        match booking["status"].as_str() {
            Some("confirmed") => confirmed += 1,
            Some("cancelled") => assert!(
                booking["reason"].as_str().unwrap_or("").contains("seats"),
                "{booking}"
            ),
            _ => panic!("unsettled: {booking}"),
        }
    }
    assert_eq!(confirmed, 1, "exactly one booking gets the last seat");

    // The read model agrees with the event log.
    let log = app
        .store()
        .read_stream(&format!("flight-{a}"), 1, 1000)
        .await
        .unwrap();
    let count = |t: &str| log.iter().filter(|e| e.event_type == t).count();
    assert_eq!(
        count("SeatsReserved") - count("SeatsReleased"),
        1,
        "{log:?}"
    );
    flight_until(&app, a, |f| {
        f["seats_available"] == 0 && f["seats_total"] == 1
    })
    .await;
}
