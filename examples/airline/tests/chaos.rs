//! Chaos: the real `airline serve` processes, on PostgreSQL and
//! Elasticsearch, killed with SIGKILL, their search server frozen with
//! SIGSTOP, their database stopped, their payment provider down; each
//! scenario ends with the invariant checker ([`airline::invariants`]) over
//! the log, the provider's ledger and the read model.
//!
//! Built only with the `chaos` feature, and run by `scripts/test` in a phase
//! of its own, one scenario at a time, because (d) and (e) disturb servers
//! the other tests share:
//!
//! ```sh
//! cargo test -p airline --features chaos --test chaos -- --test-threads=1
//! ```
//!
//! Each scenario needs `DATABASE_URL` and `ELASTICSEARCH_URL` (its own schema
//! and index prefix, from `annals-testkit`); (d) needs `ANNALS_ES_PID` (the
//! pid of the search server's JVM, checked against what the server says),
//! (e) `ANNALS_PG_STOP` and `ANNALS_PG_START` (shell commands). A scenario
//! whose variables are missing is skipped, or fails under
//! `ANNALS_REQUIRE_SERVICES=1`. `ANNALS_CHAOS_BINARY` runs another `airline`
//! binary than the one cargo built. Each scenario's process logs are kept
//! (and their folder printed) when it fails.

mod chaos_support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use annals::EventStore;
use chaos_support::*;
use futures::StreamExt;
use serde_json::{Value, json};
use uuid::Uuid;

/// The booking saga's runner, as `/health` names it.
const SAGA: &str = "booking_saga";
/// The flight read model's runner.
const FLIGHTS: &str = "flights";

/// Waits until `server`'s runner `runner` is in `state`.
async fn runner_in(stage: &Stage, server: &Server, runner: &str, state: &str) {
    let bound = Bound::new(
        format!("{} to have {runner} {state}", server.name),
        Duration::from_secs(30),
    );
    while server.runner_state(stage, runner).await.as_deref() != Some(state) {
        bound.tick(|| server.tail()).await;
    }
}

/// Waits until `/health` answers 200.
async fn healthy(stage: &Stage, server: &Server, limit: Duration) {
    let bound = Bound::new(format!("{} to be healthy", server.name), limit);
    loop {
        let health = server.health(stage).await;
        if health.as_ref().is_some_and(|h| h.status == 200) {
            return;
        }
        bound
            .tick(|| format!("{:?}\n{}", health.map(|h| h.json), server.tail()))
            .await;
    }
}

/// Waits until every booking has left `pending`; their statuses.
async fn settled_statuses(
    stage: &Stage,
    server: &Server,
    bookings: &[Uuid],
    limit: Duration,
) -> Vec<String> {
    let bound = Bound::new("every booking to settle", limit);
    loop {
        let mut statuses = Vec::with_capacity(bookings.len());
        for &id in bookings {
            statuses.push(stage.booking_status(server, id).await);
        }
        if statuses.iter().all(|s| s != "pending") {
            return statuses;
        }
        bound
            .tick(|| {
                let pending: Vec<_> = bookings
                    .iter()
                    .zip(&statuses)
                    .filter(|(_, s)| *s == "pending")
                    .map(|(id, _)| id)
                    .collect();
                format!("still pending: {pending:?}\n{}", server.tail())
            })
            .await;
    }
}

/// The `seats` of the events of a type in a flight's stream, for a booking.
async fn seats_in(stage: &Stage, flight: Uuid, event_type: &str, booking: Uuid) -> Vec<u64> {
    stage
        .store()
        .read_stream(&format!("flight-{flight}"), 1, 10_000)
        .await
        .expect("the flight's stream")
        .into_iter()
        .filter(|e| e.event_type == event_type)
        .filter_map(|e| e.payload.decode::<Value>().ok())
        .filter(|p| p["booking_id"] == json!(booking))
        .filter_map(|p| p["seats"].as_u64())
        .collect()
}

/// (a) Two processes with their caches; the second one's flight is stale
/// when it takes the saga over from the first, killed, and compensates a
/// cancellation: the seats must come back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_a_failover_with_a_stale_cached_flight_releases_the_seats() {
    let started = Instant::now();
    let Some(stage) = Stage::new("a-failover").await else {
        return;
    };
    let mut a = stage.serve("a", &[]).await;
    // A started first: it holds the saga's lease (and builds the search
    // index), B waits as a hot standby.
    healthy(&stage, &a, Duration::from_secs(60)).await;
    runner_in(&stage, &a, SAGA, "running").await;
    let b = stage.serve("b", &[]).await;
    runner_in(&stage, &b, SAGA, "standby").await;
    // Read through B only once it is healthy: /health polls that met the
    // search index still missing count against B's read circuit, which then
    // refuses reads for a few seconds after the index is there.
    healthy(&stage, &b, Duration::from_secs(60)).await;

    // B schedules the flight: its cache keeps the flight at version 1.
    let (flight, _) = stage.schedule(&b, 1, 5).await;
    // A's saga reserves 2 seats (version 2, which B never sees), is paid, confirms.
    let reply = stage
        .book(&a.url, &[(flight, 2)], "tok_visa")
        .await
        .expect("an answer");
    assert_eq!(reply.status, 202, "{:?}", reply.json);
    let booking = id_of(&reply);
    let bound = Bound::new("the booking to be confirmed", Duration::from_secs(30));
    while stage.booking_status(&a, booking).await != "confirmed" {
        bound.tick(|| a.tail()).await;
    }
    let stream = format!("flight-{flight}");
    assert_eq!(
        stage.types_in(&stream).await,
        ["FlightScheduled", "SeatsReserved"]
    );

    a.kill9();
    // B cancels, takes the saga's lease over, and releases the seats
    // through its cached (stale) flight.
    let reply = stage
        .post(
            &format!("{}/bookings/{booking}/cancel", b.url),
            AGENT,
            &json!({}),
        )
        .await
        .expect("an answer");
    assert_eq!(reply.status, 200, "{:?}", reply.json);
    let bound = Bound::new(
        format!("SeatsReleased in {stream}"),
        Duration::from_secs(30),
    );
    while seats_in(&stage, flight, "SeatsReleased", booking)
        .await
        .is_empty()
    {
        let (flight_types, saga_types) = (
            stage.types_in(&stream).await,
            stage.types_in(&format!("booking_saga-{booking}")).await,
        );
        bound
            .tick(|| {
                format!(
                    "seats leaked: {stream}: {flight_types:?}; saga: {saga_types:?}\n{}",
                    b.tail()
                )
            })
            .await;
    }
    assert_eq!(
        seats_in(&stage, flight, "SeatsReleased", booking).await,
        [2]
    );
    let bound = Bound::new("the booking to be cancelled", Duration::from_secs(30));
    while stage.booking_status(&b, booking).await != "cancelled" {
        bound.tick(|| b.tail()).await;
    }
    let head = stage.store().head().await.expect("the head");
    let view = stage
        .get(
            &format!("{}/flights/{flight}?min_position={head}", b.url),
            None,
        )
        .await
        .expect("an answer");
    assert_eq!(view.status, 200, "{:?}", view.json);
    assert_eq!(view.json["seats_available"], 5, "{:?}", view.json);

    let report = stage.settled(Duration::from_secs(60)).await;
    assert!(
        stage
            .types_in(&format!("payment-{booking}"))
            .await
            .contains(&"PaymentRefunded".to_owned())
    );
    runner_in(&stage, &b, SAGA, "running").await;
    eprintln!("(a) {report} in {:.1} s", started.elapsed().as_secs_f64());
}

/// (b) The payment provider is down long enough for the payment client's
/// circuit to open while paid and unanswered bookings arrive at once:
/// every booking settles once it is back, with its refund (or the saga's
/// record that nothing was charged), and the next booking is paid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_b_a_payment_outage_opens_the_circuit_and_every_booking_settles() {
    const OUTAGE: Duration = Duration::from_secs(8);
    let started = Instant::now();
    let Some(stage) = Stage::new("b-payments").await else {
        return;
    };
    let outage = OUTAGE.as_secs().to_string();
    // The outage starts once the process is up, so it ends after this plus OUTAGE.
    let outage_began = Instant::now();
    let server = stage
        .serve("serve", &[("AIRLINE_PAYMENTS_OUTAGE_SECS", &outage)])
        .await;
    let (flight, _) = stage.schedule(&server, 2, 50).await;
    let cards = [
        "tok_visa",
        "tok_timeout",
        "tok_visa",
        "tok_timeout",
        "tok_visa",
        "tok_visa",
        "tok_timeout",
        "tok_visa",
    ];
    let (stage_ref, url) = (&stage, &server.url);
    let replies = futures::future::join_all(
        cards
            .iter()
            .map(|card| async move { stage_ref.book(url, &[(flight, 1)], card).await }),
    )
    .await;
    assert!(
        outage_began.elapsed() < OUTAGE - Duration::from_secs(2),
        "the bookings came too late to meet the outage: {:?} after the start",
        outage_began.elapsed()
    );
    let bookings: Vec<Uuid> = replies
        .into_iter()
        .map(|reply| {
            let reply = reply.expect("an answer");
            assert_eq!(reply.status, 202, "{:?}", reply.json);
            id_of(&reply)
        })
        .collect();

    let statuses =
        settled_statuses(&stage, &server, &bookings, OUTAGE + Duration::from_secs(60)).await;
    let settled_after = outage_began.elapsed();
    for (booking, status) in bookings.iter().zip(&statuses) {
        let payment = stage.types_in(&format!("payment-{booking}")).await;
        let saga = stage.types_in(&format!("booking_saga-{booking}")).await;
        match status.as_str() {
            "confirmed" => assert!(payment.contains(&"PaymentTaken".to_owned())),
            "cancelled" => assert!(
                payment.contains(&"PaymentRefunded".to_owned())
                    || saga.contains(&"NothingCharged".to_owned()),
                "cancelled booking {booking} neither refunded nor found uncharged: \
                 payment {payment:?}, saga {saga:?}"
            ),
            other => panic!("booking {booking} is {other}"),
        }
    }
    let log = std::fs::read_to_string(stage.dir.path().join(format!("{}.stdout", server.name)))
        .unwrap_or_default();
    assert!(
        log.contains("circuit open"),
        "the payment client's circuit never opened\n{}",
        server.tail()
    );

    // The provider is back: the next booking is paid and confirmed.
    let reply = stage
        .book(&server.url, &[(flight, 1)], "tok_visa")
        .await
        .expect("an answer");
    assert_eq!(reply.status, 202, "{:?}", reply.json);
    let paid = id_of(&reply);
    let statuses_after = settled_statuses(&stage, &server, &[paid], Duration::from_secs(30)).await;
    assert_eq!(statuses_after, ["confirmed"]);

    let report = stage.settled(Duration::from_secs(60)).await;
    eprintln!(
        "(b) {statuses:?} settled {:.1} s after the outage began; {report} in {:.1} s",
        settled_after.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}

/// (c) `kill -9` in the middle of a burst of bookings on flights with too
/// few seats, then a restart: every acknowledged booking settles, seats and
/// money add up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_c_kill_9_in_a_burst_loses_no_acknowledged_booking() {
    const BEFORE: usize = 220;
    const AFTER: usize = 80;
    const KILL_AT: usize = 90;
    let started = Instant::now();
    let Some(stage) = Stage::new("c-burst").await else {
        return;
    };
    let mut first = stage.serve("first", &[]).await;
    let mut flights = Vec::new();
    for n in 0..5 {
        flights.push(stage.schedule(&first, 10 + n, 12).await.0);
    }
    // 300 bookings of 1 or 2 seats for 60 seats: most find none left.
    let requests: Vec<(Uuid, u32, &str)> = (0..BEFORE + AFTER)
        .map(|i| {
            let card = match i {
                i if i % 40 == 7 => "tok_timeout",
                i if i % 4 == 1 => "tok_declined",
                _ => "tok_visa",
            };
            (flights[i % flights.len()], 1 + u32::from(i % 3 == 0), card)
        })
        .collect();

    let acked = AtomicUsize::new(0);
    let url = first.url.clone();
    let burst = futures::stream::iter(&requests[..BEFORE])
        .map(|&(flight, seats, card)| {
            let (stage, url, acked) = (&stage, &url, &acked);
            async move {
                let reply = stage.book(url, &[(flight, seats)], card).await;
                if reply.as_ref().is_ok_and(|r| r.status == 202) {
                    acked.fetch_add(1, Ordering::SeqCst);
                }
                reply
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>();
    let killer = async {
        let bound = Bound::new(
            format!("{KILL_AT} bookings acknowledged"),
            Duration::from_secs(120),
        );
        while acked.load(Ordering::SeqCst) < KILL_AT {
            bound.check(|| first.tail());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        first.kill9();
    };
    let (replies, ()) = tokio::join!(burst, killer);
    let mut bookings = Vec::new();
    let (mut unanswered, mut refused) = (0, Vec::new());
    for reply in replies {
        match reply {
            Ok(reply) if reply.status == 202 => bookings.push(id_of(&reply)),
            Ok(reply) => refused.push((reply.status, reply.json)),
            Err(_) => unanswered += 1,
        }
    }
    let acked_before = bookings.len();
    assert!(unanswered > 0, "the kill came after the burst");
    assert!(refused.is_empty(), "answers other than 202: {refused:?}");

    let second = stage.serve("second", &[]).await;
    let replies: Vec<_> = futures::stream::iter(&requests[BEFORE..])
        .map(|&(flight, seats, card)| {
            let (stage, url) = (&stage, &second.url);
            async move { stage.book(url, &[(flight, seats)], card).await }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    for reply in replies {
        let reply = reply.expect("an answer");
        assert_eq!(reply.status, 202, "{:?}", reply.json);
        bookings.push(id_of(&reply));
    }

    let statuses = settled_statuses(&stage, &second, &bookings, Duration::from_secs(120)).await;
    let confirmed = statuses.iter().filter(|s| *s == "confirmed").count();
    let report = stage.settled(Duration::from_secs(60)).await;
    eprintln!(
        "(c) {acked_before} acknowledged before the kill, {unanswered} unanswered, {} after the \
         restart; {confirmed} confirmed; {report} in {:.1} s",
        bookings.len() - acked_before,
        started.elapsed().as_secs_f64()
    );
}

/// (d) The search server frozen (SIGSTOP) under a serving process: health
/// and searches answer fast, writes go on, and once it is thawed the read
/// model catches up and equals a rebuild.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_d_a_frozen_search_server_fails_reads_fast_and_the_read_model_converges() {
    let started = Instant::now();
    let Some(pid) = control(ES_PID_ENV, "chaos (d)") else {
        return;
    };
    let pid: i32 = pid
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{ES_PID_ENV}={pid} is not a pid"));
    let Some(stage) = Stage::new("d-search-frozen").await else {
        return;
    };
    // Never freeze a process that is not the search server in use.
    assert_eq!(
        search_pid(&stage).await,
        Some(i64::from(pid)),
        "{ES_PID_ENV} is not the pid of the search server at {}",
        search_url()
    );
    let server = stage.serve("serve", &[]).await;
    healthy(&stage, &server, Duration::from_secs(60)).await;
    let (flight, position) = stage.schedule(&server, 3, 20).await;
    let view = stage
        .get(
            &format!("{}/flights/{flight}?min_position={position}", server.url),
            None,
        )
        .await
        .expect("an answer");
    assert_eq!(view.status, 200, "{:?}", view.json);
    let search = format!("{}/flights/search?from=LIS&to=MAD", server.url);
    let found = stage.get(&search, None).await.expect("an answer");
    assert_eq!(found.status, 200, "{:?}", found.json);

    let mut frozen = Freeze::new(pid);
    let frozen_at = Instant::now();
    let health = server.health(&stage).await.expect("an answer");
    assert!(
        health.elapsed < Duration::from_secs(2),
        "{:?}",
        health.elapsed
    );
    assert_eq!(health.status, 503, "{:?}", health.json);
    assert_eq!(health.json["read_side"]["ok"], false, "{:?}", health.json);
    assert!(
        health.json["read_side"]["error"]
            .as_str()
            .is_some_and(|e| !e.is_empty()),
        "{:?}",
        health.json
    );
    assert_eq!(health.json["store"]["ok"], true, "{:?}", health.json);

    // A search waits for the read side's timeout; once the breaker opens,
    // it is refused at once.
    let mut waits = Vec::new();
    let fast = loop {
        let reply = stage.get(&search, None).await.expect("an answer");
        assert_eq!(reply.status, 503, "{:?}", reply.json);
        assert_eq!(reply.code(), "read_side_unavailable", "{:?}", reply.json);
        assert!(
            reply.elapsed < Duration::from_secs(5),
            "{:?}",
            reply.elapsed
        );
        waits.push(reply.elapsed);
        if reply.elapsed < Duration::from_millis(500) {
            break reply.elapsed;
        }
        assert!(waits.len() < 6, "the breaker never opened: {waits:?}");
    };
    let by_id = stage
        .get(&format!("{}/flights/{flight}", server.url), None)
        .await
        .expect("an answer");
    assert_eq!((by_id.status, by_id.code()), (503, "read_side_unavailable"));
    assert!(
        by_id.elapsed < Duration::from_millis(500),
        "{:?}",
        by_id.elapsed
    );

    // Writes go on: the write side and the saga need PostgreSQL only.
    stage.schedule(&server, 4, 20).await;
    let reply = stage
        .book(&server.url, &[(flight, 2)], "tok_visa")
        .await
        .expect("an answer");
    assert_eq!(reply.status, 202, "{:?}", reply.json);
    let booking = id_of(&reply);
    let statuses = settled_statuses(&stage, &server, &[booking], Duration::from_secs(30)).await;
    assert_eq!(statuses, ["confirmed"]);
    // The read model's runner says it cannot apply.
    let bound = Bound::new(
        "the flight read model to report its failure",
        Duration::from_secs(40),
    );
    loop {
        let health = server.health(&stage).await;
        let flights = health.as_ref().and_then(|h| {
            h.json["projections"]
                .as_array()?
                .iter()
                .find(|p| p["name"] == FLIGHTS)
                .cloned()
        });
        if flights.as_ref().is_some_and(|f| f["ok"] == false) {
            break;
        }
        bound.tick(|| format!("{flights:?}")).await;
    }
    frozen.thaw();
    let frozen_for = frozen_at.elapsed();

    let bound = Bound::new("searches to answer again", Duration::from_secs(60));
    loop {
        let reply = stage.get(&search, None).await;
        if reply.as_ref().is_ok_and(|r| r.status == 200) {
            break;
        }
        bound.tick(|| format!("{reply:?}")).await;
    }
    let head = stage.store().head().await.expect("the head");
    let bound = Bound::new("the booked seats on the read side", Duration::from_secs(60));
    loop {
        let view = stage
            .get(
                &format!("{}/flights/{flight}?min_position={head}", server.url),
                None,
            )
            .await;
        if view
            .as_ref()
            .is_ok_and(|v| v.status == 200 && v.json["seats_available"] == 18)
        {
            break;
        }
        bound.tick(|| format!("{view:?}")).await;
    }
    let report = stage.settled(Duration::from_secs(60)).await;
    eprintln!(
        "(d) frozen {:.1} s; searches waited {waits:?}, then {fast:?}; {report} in {:.1} s",
        frozen_for.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}

/// One booking request of the light load, and what came of it.
struct Sent {
    at: Instant,
    reply: Result<Reply, String>,
}

/// (e) PostgreSQL stopped for 20 s under a light load of bookings: requests
/// fail fast with 503, the service recovers by itself once the database is
/// back, and nothing acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_e_a_database_outage_answers_503_fast_and_loses_nothing() {
    const DOWN_FOR: Duration = Duration::from_secs(20);
    let started = Instant::now();
    let Some(stop) = control(PG_STOP_ENV, "chaos (e)") else {
        return;
    };
    let Some(start) = control(PG_START_ENV, "chaos (e)") else {
        return;
    };
    let Some(stage) = Stage::new("e-postgres-down").await else {
        return;
    };
    let server = stage.serve("serve", &[]).await;
    healthy(&stage, &server, Duration::from_secs(60)).await;
    let mut flights = Vec::new();
    for n in 0..3 {
        flights.push(stage.schedule(&server, 20 + n, 40).await.0);
    }

    let done = AtomicBool::new(false);
    let load = async {
        let mut sent = Vec::new();
        let mut i = 0;
        while !done.load(Ordering::SeqCst) {
            let card = if i % 4 == 3 {
                "tok_declined"
            } else {
                "tok_visa"
            };
            let at = Instant::now();
            let reply = stage
                .book(&server.url, &[(flights[i % flights.len()], 1)], card)
                .await;
            sent.push(Sent { at, reply });
            i += 1;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        sent
    };
    let chaos = async {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let mut outage = Outage::begin(&stop, &start);
        let down_at = Instant::now();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let health = server.health(&stage).await.expect("an answer");
        tokio::time::sleep(DOWN_FOR.saturating_sub(down_at.elapsed())).await;
        outage.end();
        let up_at = Instant::now();
        healthy(&stage, &server, Duration::from_secs(60)).await;
        let recovered_in = up_at.elapsed();
        tokio::time::sleep(Duration::from_secs(3)).await;
        done.store(true, Ordering::SeqCst);
        (down_at, up_at, health, recovered_in)
    };
    let (sent, (down_at, up_at, health, recovered_in)) = tokio::join!(load, chaos);

    assert!(
        health.elapsed < Duration::from_secs(2),
        "{:?}",
        health.elapsed
    );
    assert_eq!(health.status, 503, "{:?}", health.json);
    assert_eq!(health.json["store"]["ok"], false, "{:?}", health.json);

    let mut bookings = Vec::new();
    let (mut during, mut slowest) = (0, Duration::ZERO);
    for Sent { at, reply } in &sent {
        let reply = reply
            .as_ref()
            .unwrap_or_else(|e| panic!("a request got no answer: {e}"));
        slowest = slowest.max(reply.elapsed);
        match reply.status {
            202 => bookings.push(id_of(reply)),
            503 => {
                assert!(
                    reply.elapsed < Duration::from_secs(5),
                    "a 503 took {:?}: {:?}",
                    reply.elapsed,
                    reply.json
                );
                during += 1;
            }
            other => panic!("{other}: {:?}", reply.json),
        }
        // Sent and answered while the database was down: refused.
        if *at > down_at && *at + reply.elapsed < up_at {
            assert_eq!(reply.status, 503, "{:?}", reply.json);
        }
    }
    assert!(during > 0, "no request met the outage");
    assert!(
        sent.iter()
            .any(|s| s.at > up_at && s.reply.as_ref().is_ok_and(|r| r.status == 202)),
        "no booking was acknowledged after the database came back"
    );
    // Everything acknowledged is in the log (flights before the outage,
    // bookings before and after), and the bookings settle.
    let store = stage.store();
    for flight in &flights {
        let events = store
            .read_stream(&format!("flight-{flight}"), 1, 1)
            .await
            .expect("the flight's stream");
        assert_eq!(
            events.len(),
            1,
            "scheduled flight {flight} is not in the log"
        );
    }
    for booking in &bookings {
        let events = store
            .read_stream(&format!("booking-{booking}"), 1, 1)
            .await
            .expect("the booking's stream");
        assert_eq!(
            events.len(),
            1,
            "acknowledged booking {booking} is not in the log"
        );
    }
    let statuses = settled_statuses(&stage, &server, &bookings, Duration::from_secs(90)).await;
    let report = stage.settled(Duration::from_secs(60)).await;
    eprintln!(
        "(e) {} requests, {during} refused with 503 (slowest answer {slowest:?}), {} acknowledged \
         ({} confirmed); healthy {:.1} s after the restart; {report} in {:.1} s",
        sent.len(),
        bookings.len(),
        statuses.iter().filter(|s| *s == "confirmed").count(),
        recovered_in.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}

/// (f) The process running the saga frozen (SIGSTOP) past its lease's time
/// to live while bookings keep arriving through another: the other takes
/// the saga over. Woken, the frozen one finds its claim gone (its renewal
/// finds the new owner, or its checkpoint save is refused as fenced) and
/// goes back to standby instead of running beside the new holder; every
/// booking settles, seats and money add up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_f_a_frozen_lease_holder_is_fenced_when_it_wakes() {
    const BOOKINGS: usize = 60;
    let started = Instant::now();
    let Some(stage) = Stage::new("f-fenced").await else {
        return;
    };
    let a = stage.serve("a", &[]).await;
    healthy(&stage, &a, Duration::from_secs(60)).await;
    runner_in(&stage, &a, SAGA, "running").await;
    let b = stage.serve("b", &[]).await;
    runner_in(&stage, &b, SAGA, "standby").await;
    healthy(&stage, &b, Duration::from_secs(60)).await;
    let mut flights = Vec::new();
    for n in 0..3 {
        flights.push(stage.schedule(&b, 30 + n, 40).await.0);
    }
    let book = |i: usize| {
        let (stage, url, flight) = (&stage, &b.url, flights[i % flights.len()]);
        async move {
            let reply = stage
                .book(url, &[(flight, 1)], "tok_visa")
                .await
                .expect("an answer");
            assert_eq!(reply.status, 202, "{:?}", reply.json);
            id_of(&reply)
        }
    };

    // Half the bookings, then A freezes while its saga works on them.
    let mut bookings: Vec<Uuid> = futures::stream::iter(0..BOOKINGS / 2)
        .map(book)
        .buffer_unordered(8)
        .collect()
        .await;
    let mut frozen = Freeze::new(a.pid());
    let frozen_at = Instant::now();
    bookings.extend(
        futures::stream::iter(BOOKINGS / 2..BOOKINGS)
            .map(book)
            .buffer_unordered(8)
            .collect::<Vec<_>>()
            .await,
    );
    runner_in(&stage, &b, SAGA, "running").await;
    let took_over = frozen_at.elapsed();
    // Past the time to live, so that whatever A had in hand is stale.
    tokio::time::sleep(Duration::from_secs(1)).await;
    frozen.thaw();

    runner_in(&stage, &a, SAGA, "standby").await;
    for _ in 0..10 {
        assert_eq!(
            a.runner_state(&stage, SAGA).await.as_deref(),
            Some("standby"),
            "the woken holder runs the saga again beside the new one\n{}",
            a.tail()
        );
        assert_eq!(
            b.runner_state(&stage, SAGA).await.as_deref(),
            Some("running")
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let log = a.log();
    assert!(
        log.contains("fenced, back to standby") || log.contains("lease taken by another runner"),
        "the woken holder did not learn it lost its lease\n{}",
        a.tail()
    );

    let statuses = settled_statuses(&stage, &b, &bookings, Duration::from_secs(120)).await;
    let confirmed = statuses.iter().filter(|s| *s == "confirmed").count();
    let report = stage.settled(Duration::from_secs(60)).await;
    eprintln!(
        "(f) {} bookings, {confirmed} confirmed; B took over {:.1} s after the freeze; {report} in {:.1} s",
        bookings.len(),
        took_over.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}
