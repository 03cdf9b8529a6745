//! A [`Decider`] over the store: decisions that append, are refused or
//! decide nothing, decide again after a conflicting append, race for one
//! claim, combine states, and answer a repeated command id.

use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Barrier;
use uuid::Uuid;

use super::super::helpers::*;
use super::{ALL, read_query};
use crate::decision::{Decider, Decision, DecisionState};
use crate::envelope::{Metadata, NewEvent, RecordedEvent};
use crate::position::Position;
use crate::query::{Query, QueryItem};
use crate::repository::{CommandContext, ExecuteError, Executed};
use crate::store::{Appended, EventStore, ExpectedVersion, StoreError};
use crate::testing::Faulty;

/// The events of this section's decisions.
#[derive(Debug, Clone, PartialEq, crate::DomainEvent)]
enum DcbEvent {
    #[event(name = "conformance.UsernameClaimed")]
    Claimed {
        #[tag("username")]
        username: String,
        by: u64,
    },
    #[event(name = "conformance.SeatBooked")]
    Booked {
        #[tag("flight")]
        flight: String,
        #[tag("passenger")]
        passenger: String,
        seat: u64,
    },
    #[event(name = "conformance.FlightNoted")]
    Noted {
        #[tag("flight")]
        flight: String,
    },
}

/// Events of `event_type` tagged `tag`.
fn of_type(event_type: &str, tag: String) -> Query {
    Query::new().or(QueryItem::types([event_type]).and_tagged([tag]))
}

/// Who claimed a username, if anyone.
struct Claim {
    username: String,
    by: Option<u64>,
}

impl DecisionState for Claim {
    type Event = DcbEvent;

    fn query(&self) -> Query {
        of_type(DcbEvent::CLAIMED, format!("username:{}", self.username))
    }

    fn apply(&mut self, event: &DcbEvent) {
        match event {
            DcbEvent::Claimed { username, by } if *username == self.username => {
                self.by.get_or_insert(*by);
            }
            other => panic!("the claim of {:?} folded {other:?}", self.username),
        }
    }
}

/// Claims a username for `by`: refused when another holds it, nothing to
/// do when `by` does.
struct ClaimUsername {
    username: String,
    by: u64,
}

#[derive(Debug, PartialEq, thiserror::Error)]
#[error("the username is taken by {0}")]
struct Taken(u64);

impl Decision for ClaimUsername {
    type State = Claim;
    type Event = DcbEvent;
    type Error = Taken;

    fn state(&self) -> Claim {
        Claim {
            username: self.username.clone(),
            by: None,
        }
    }

    fn stream(&self) -> String {
        format!("conformance-account-{}-{}", self.username, self.by)
    }

    fn decide(&self, state: &Claim) -> Result<Vec<DcbEvent>, Taken> {
        match state.by {
            None => Ok(vec![DcbEvent::Claimed {
                username: self.username.clone(),
                by: self.by,
            }]),
            Some(by) if by == self.by => Ok(Vec::new()),
            Some(by) => Err(Taken(by)),
        }
    }
}

/// The seats booked on a flight.
struct Seats {
    flight: String,
    taken: u64,
}

impl DecisionState for Seats {
    type Event = DcbEvent;

    fn query(&self) -> Query {
        of_type(DcbEvent::BOOKED, format!("flight:{}", self.flight))
    }

    fn apply(&mut self, event: &DcbEvent) {
        match event {
            DcbEvent::Booked { flight, .. } if *flight == self.flight => self.taken += 1,
            other => panic!("the seats of flight {:?} folded {other:?}", self.flight),
        }
    }
}

/// The bookings of a passenger, on any flight.
struct Bookings {
    passenger: String,
    count: u64,
}

impl DecisionState for Bookings {
    type Event = DcbEvent;

    fn query(&self) -> Query {
        of_type(DcbEvent::BOOKED, format!("passenger:{}", self.passenger))
    }

    fn apply(&mut self, event: &DcbEvent) {
        match event {
            DcbEvent::Booked { passenger, .. } if *passenger == self.passenger => self.count += 1,
            other => panic!("the bookings of {:?} folded {other:?}", self.passenger),
        }
    }
}

/// How many bookings a passenger may hold.
const PASSENGER_LIMIT: u64 = 2;

/// Books the next seat of a flight: two rules, two states.
struct Book {
    flight: String,
    passenger: String,
    capacity: u64,
}

#[derive(Debug, PartialEq, thiserror::Error)]
enum Refused {
    #[error("the flight is full")]
    Full,
    #[error("the passenger holds {0} bookings already")]
    PassengerLimit(u64),
}

impl Decision for Book {
    type State = (Seats, Bookings);
    type Event = DcbEvent;
    type Error = Refused;

    fn state(&self) -> (Seats, Bookings) {
        let seats = Seats {
            flight: self.flight.clone(),
            taken: 0,
        };
        let bookings = Bookings {
            passenger: self.passenger.clone(),
            count: 0,
        };
        (seats, bookings)
    }

    fn stream(&self) -> String {
        format!("conformance-booking-{}-{}", self.flight, self.passenger)
    }

    fn decide(&self, (seats, bookings): &(Seats, Bookings)) -> Result<Vec<DcbEvent>, Refused> {
        if bookings.count >= PASSENGER_LIMIT {
            return Err(Refused::PassengerLimit(bookings.count));
        }
        if seats.taken >= self.capacity {
            return Err(Refused::Full);
        }
        Ok(vec![DcbEvent::Booked {
            flight: self.flight.clone(),
            passenger: self.passenger.clone(),
            seat: seats.taken + 1,
        }])
    }
}

/// Notes a flight, every time: a decision that always appends.
struct NoteFlight {
    flight: String,
}

/// A state that reads nothing.
struct Nothing;

impl DecisionState for Nothing {
    type Event = DcbEvent;

    fn query(&self) -> Query {
        Query::new()
    }

    fn apply(&mut self, event: &DcbEvent) {
        panic!("an empty query folded {event:?}");
    }
}

impl Decision for NoteFlight {
    type State = Nothing;
    type Event = DcbEvent;
    type Error = std::convert::Infallible;

    fn state(&self) -> Nothing {
        Nothing
    }

    fn stream(&self) -> String {
        format!("conformance-notes-{}", self.flight)
    }

    fn decide(&self, _: &Nothing) -> Result<Vec<DcbEvent>, Self::Error> {
        let flight = self.flight.clone();
        Ok(vec![DcbEvent::Noted { flight }])
    }
}

fn claim(username: &str, by: u64) -> ClaimUsername {
    let username = username.to_owned();
    ClaimUsername { username, by }
}

fn book(flight: &str, passenger: &str, capacity: u64) -> Book {
    let (flight, passenger) = (flight.to_owned(), passenger.to_owned());
    Book {
        flight,
        passenger,
        capacity,
    }
}

fn encode(event: &DcbEvent) -> NewEvent {
    NewEvent::from_domain(event, Metadata::default()).expect("the event encodes")
}

/// The seat a booking got.
fn seat(result: Result<Executed<DcbEvent>, ExecuteError<Refused>>, what: &str) -> u64 {
    match result {
        Ok(done) => match done.events[..] {
            [DcbEvent::Booked { seat, .. }] => seat,
            ref other => panic!("{what}: decided {other:?}, not one booking"),
        },
        Err(error) => panic!("{what}: {error}"),
    }
}

/// The seats of a flight's bookings in the log, in log order.
async fn seats_booked<S: EventStore>(store: &S, flight: &str) -> Vec<u64> {
    let query = of_type(DcbEvent::BOOKED, format!("flight:{flight}"));
    let booked = read_query(store, &query, Position::START, ALL).await;
    let seat = |e: &RecordedEvent| match e.decode() {
        Ok(DcbEvent::Booked { seat, .. }) => seat,
        other => panic!("a booking of {flight:?} reads back as {other:?}"),
    };
    booked.iter().map(seat).collect()
}

/// A decision that appends, one refused by its rule (nothing written), one
/// that decides nothing (nothing written, the position it read up to).
pub async fn dcb_decider_appends_refuses_and_decides_nothing<S: EventStore + Clone>(store: &S) {
    let decider = Decider::new(store.clone());
    let username = unique("ada");
    let done = decider.execute(claim(&username, 1)).await;
    let done = done.unwrap_or_else(|e| panic!("claiming a free username: {e}"));
    let claimed = DcbEvent::Claimed {
        username: username.clone(),
        by: 1,
    };
    assert_eq!(done.events, [claimed], "the events decided");
    assert_eq!(
        (done.stream_version, done.repeated, done.attempts),
        (1, false, 1),
        "the outcome"
    );
    settle(store, done.position).await;
    let stored = whole_stream(store, &claim(&username, 1).stream()).await;
    assert_eq!(stored.len(), 1, "events stored");
    assert_eq!(stored[0].position, done.position, "the position returned");
    assert_eq!(
        stored[0].tags,
        [format!("username:{username}")],
        "the tags stored"
    );
    let head_after = head(store).await;

    match decider.execute(claim(&username, 2)).await {
        Err(ExecuteError::Rejected(Taken(1))) => {}
        other => panic!("claiming a taken username: {other:?}"),
    }
    let nothing = decider.execute(claim(&username, 1)).await;
    let nothing = nothing.unwrap_or_else(|e| panic!("claiming one's own username again: {e}"));
    assert!(nothing.events.is_empty(), "decided {:?}", nothing.events);
    assert_eq!(
        nothing.position, done.position,
        "the position a decision of nothing read up to"
    );
    assert_eq!(
        (nothing.stream_version, nothing.repeated),
        (1, false),
        "deciding nothing"
    );
    assert_eq!(
        head(store).await,
        head_after,
        "a refusal or a decision of nothing wrote"
    );
    assert_eq!(
        version(store, &claim(&username, 2).stream()).await,
        0,
        "the refused stream"
    );

    let other = decider.execute(claim(&unique("grace"), 2)).await;
    let other = other.unwrap_or_else(|e| panic!("claiming another username: {e}"));
    assert_eq!(other.events.len(), 1, "claiming another username");
}

/// A conflicting event recorded between a decision's read and its append
/// fails the append; the decider reads and decides again (seeing it), or,
/// out of attempts, reports `ConditionFailed` naming it.
pub async fn dcb_decider_decides_again_after_a_conflict<S: EventStore + Clone>(store: &S) {
    let (flight, passengers) = (unique("flight"), ["p"; 3].map(unique));
    let decider = Decider::new(store.clone());
    let first = seat(
        decider.execute(book(&flight, &passengers[0], 3)).await,
        "a first booking",
    );
    assert_eq!(first, 1, "the first seat");

    let (p, writer) = (passengers[1].clone(), unique("conformance-interloper"));
    let slipping = DcbEvent::Booked {
        flight: flight.clone(),
        passenger: p,
        seat: 2,
    };
    let (store_with, slipped_in) = interloper(store, &writer, encode(&slipping));
    let done = Decider::new(store_with)
        .execute(book(&flight, &passengers[2], 3))
        .await;
    let done = done.unwrap_or_else(|e| panic!("a booking with a conflict: {e}"));
    assert!(
        slipped_in
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some(),
        "the conflicting booking was not appended"
    );
    assert_eq!(done.attempts, 2, "attempts of a decision with one conflict");
    let seat = DcbEvent::Booked {
        flight: flight.clone(),
        passenger: passengers[2].clone(),
        seat: 3,
    };
    assert_eq!(
        done.events,
        [seat],
        "decided again over the conflicting booking"
    );
    settle(store, done.position).await;
    let seats = seats_booked(store, &flight).await;
    assert_eq!(seats, [1, 2, 3], "the flight's bookings in the log");

    let other_flight = unique("flight");
    let slipping = DcbEvent::Booked {
        flight: other_flight.clone(),
        passenger: unique("p"),
        seat: 1,
    };
    let (store_with, slipped_in) = interloper(store, &writer, encode(&slipping));
    let once = Decider::new(store_with).max_attempts(1);
    let result = once.execute(book(&other_flight, &unique("p"), 3)).await;
    let slipped = slipped_in
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .expect("the conflicting booking was appended");
    match result {
        Err(ExecuteError::Store(StoreError::ConditionFailed { position })) => {
            assert_eq!(
                position, slipped.position,
                "ConditionFailed names another event"
            )
        }
        other => panic!("a decision out of attempts: {other:?}"),
    }
    let seats = seats_booked(store, &other_flight).await;
    assert_eq!(seats, [1], "the other flight's bookings in the log");
}

/// Deciders racing to claim one username: exactly one claims it; the others
/// are refused naming the winner (or, should conflicts outlast their
/// attempts, fail with `ConditionFailed`), and the log holds one claim.
pub async fn dcb_decider_concurrent_claims_have_one_winner<S: EventStore + Clone>(store: &S) {
    const DECIDERS: u64 = 8;
    let username = unique("x");
    let barrier = Arc::new(Barrier::new(DECIDERS as usize));
    let tasks: Vec<_> = (1..=DECIDERS)
        .map(|by| {
            let (decider, barrier) = (
                Decider::new(store.clone()).max_attempts(10),
                barrier.clone(),
            );
            let decision = claim(&username, by);
            tokio::spawn(async move {
                barrier.wait().await;
                (by, decider.execute(decision).await)
            })
        })
        .collect();
    let (mut winners, mut refusals) = (Vec::new(), Vec::new());
    let mut won = Position::START;
    for task in tasks {
        match join(task).await {
            (by, Ok(done)) if done.events.len() == 1 => {
                winners.push(by);
                won = done.position;
            }
            (_, Err(ExecuteError::Rejected(Taken(winner)))) => refusals.push(winner),
            (_, Err(ExecuteError::Store(StoreError::ConditionFailed { .. }))) => {}
            (by, other) => panic!("claim by {by}: {other:?}"),
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "exactly one racing decider must claim: {winners:?}"
    );
    assert!(
        refusals.iter().all(|&by| by == winners[0]),
        "refusals name {refusals:?}, not the winner {winners:?}"
    );
    settle(store, won).await;
    let claims = read_query(
        store,
        &claim(&username, 0).state().query(),
        Position::START,
        ALL,
    )
    .await;
    let decoded: Vec<DcbEvent> = claims
        .iter()
        .map(|e| e.decode().expect("decodes"))
        .collect();
    let expected = DcbEvent::Claimed {
        username,
        by: winners[0],
    };
    assert_eq!(decoded, [expected], "the claims in the log");
}

/// A decision over a tuple of states: each member folds only the events of
/// its own query (a flight's seats, a passenger's bookings; not a flight's
/// events of another type), and the decision sees both.
pub async fn dcb_decider_combines_states<S: EventStore + Clone>(store: &S) {
    let decider = Decider::new(store.clone());
    let [f, g, h] = ["flight"; 3].map(unique);
    let [p1, p2, p3] = ["p"; 3].map(unique);
    let run = |flight: &str, passenger: &str| decider.execute(book(flight, passenger, 2));

    assert_eq!(seat(run(&f, &p1).await, "p1 on f"), 1, "p1's seat on f");
    assert_eq!(
        seat(run(&g, &p1).await, "p1 on g"),
        1,
        "p1's seat on g (f's bookings apart)"
    );
    let noted = encode(&DcbEvent::Noted { flight: f.clone() });
    append(
        store,
        &unique("conformance-notes"),
        ExpectedVersion::Any,
        vec![noted],
    )
    .await;
    assert_eq!(
        seat(run(&f, &p2).await, "p2 on f"),
        2,
        "p2's seat on f (a note is no booking)"
    );
    match run(&f, &p3).await {
        Err(ExecuteError::Rejected(Refused::Full)) => {}
        other => panic!("p3 on a full flight: {other:?}"),
    }
    match run(&h, &p1).await {
        Err(ExecuteError::Rejected(Refused::PassengerLimit(2))) => {}
        other => panic!("p1's third booking: {other:?}"),
    }
    assert_eq!(seat(run(&g, &p3).await, "p3 on g"), 2, "p3's seat on g");
    let last = run(&h, &p2).await;
    let position = last.as_ref().map_or(Position::START, |done| done.position);
    assert_eq!(seat(last, "p2 on h"), 1, "p2's seat on h");
    settle(store, position).await;
    for (flight, seats) in [(&f, &[1, 2][..]), (&g, &[1, 2]), (&h, &[1])] {
        assert_eq!(seats_booked(store, flight).await, seats, "the seats booked");
    }
}

/// A decision run twice with one command id answers the first outcome,
/// `repeated`, and writes nothing: whether its second run decides nothing
/// (its own event now in its state) or decides anew (the store answers).
pub async fn dcb_decider_command_idempotency<S: EventStore + Clone>(store: &S) {
    let decider = Decider::new(store.clone());
    let with = |command: Uuid| CommandContext {
        command_id: Some(command),
        metadata: Metadata::default(),
    };
    let (username, command) = (unique("ada"), Uuid::new_v4());
    let first = decider
        .execute_with(claim(&username, 1), with(command))
        .await;
    let first = first.unwrap_or_else(|e| panic!("a first claim with a command id: {e}"));
    assert!(!first.repeated, "a first run is not a repeat");
    settle(store, first.position).await;
    let stored = whole_stream(store, &claim(&username, 1).stream()).await;
    assert_eq!(
        stored[0].metadata.causation_id,
        Some(command),
        "the causation id stored"
    );
    let head_after = head(store).await;
    let again = decider
        .execute_with(claim(&username, 1), with(command))
        .await;
    let again = again.unwrap_or_else(|e| panic!("the claim run again: {e}"));
    assert!(again.repeated, "a claim run again is not marked repeated");
    assert_eq!(again.events, first.events, "the events of a repeated claim");
    assert_eq!(
        (again.stream_version, again.position),
        (first.stream_version, first.position)
    );
    assert_eq!(head(store).await, head_after, "a repeated claim wrote");

    let (flight, command) = (unique("flight"), Uuid::new_v4());
    let note = || NoteFlight {
        flight: flight.clone(),
    };
    let first = decider.execute_with(note(), with(command)).await;
    let first = first.unwrap_or_else(|e| panic!("a first note with a command id: {e}"));
    let again = decider.execute_with(note(), with(command)).await;
    let again = again.unwrap_or_else(|e| panic!("the note run again: {e}"));
    assert!(again.repeated, "a note run again is not marked repeated");
    assert_eq!(again.events, first.events, "the events of a repeated note");
    assert_eq!(
        (again.stream_version, again.position),
        (first.stream_version, first.position)
    );
    let fresh = decider
        .execute(note())
        .await
        .unwrap_or_else(|e| panic!("a note without a command id: {e}"));
    assert_eq!(
        (fresh.stream_version, fresh.repeated),
        (2, false),
        "a note without a command id"
    );
}

/// `store` with a writer slipping in: just before the first conditional
/// append through it, `event` is appended to `stream` (as a concurrent writer
/// would between a decision's read and its append); the second half holds
/// that append's outcome once it happened.
fn interloper<S: EventStore + Clone + 'static>(
    store: &S,
    stream: &str,
    event: NewEvent,
) -> (Faulty<S>, Arc<Mutex<Option<Appended>>>) {
    let faulty = Faulty::new(store.clone());
    let slipped_in: Arc<Mutex<Option<Appended>>> = Arc::default();
    let (inner, stream, outcome) = (store.clone(), stream.to_owned(), slipped_in.clone());
    faulty.before_next_append_if(move || async move {
        let done = append(&inner, &stream, ExpectedVersion::Any, vec![event]).await;
        settle(&inner, done.position).await;
        *outcome.lock().unwrap_or_else(PoisonError::into_inner) = Some(done);
    });
    (faulty, slipped_in)
}
