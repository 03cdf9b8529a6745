//! `Repository::cache`: hot aggregates are not read again, and a state made
//! stale by another writer never decides a command.

use std::cell::Cell;

use annals::memory::MemoryStore;
use annals::{Aggregate, DomainEvent, ExecuteError, Handle, Repository};

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, DomainEvent)]
enum TankEvent {
    Filled { litres: u32 },
    Drained { litres: u32 },
}

thread_local! {
    /// Events folded into tank states on this thread (each test runs on a
    /// thread of its own, its runtime too).
    static FOLDED: Cell<usize> = const { Cell::new(0) };
}

fn folded() -> usize {
    FOLDED.with(Cell::get)
}

#[derive(Debug, Default, annals::AggregateType)]
#[aggregate(name = "tank")]
struct Tank {
    litres: u32,
}

#[derive(Debug, PartialEq, thiserror::Error)]
#[error("the tank holds {0} litres, and 100 at most")]
struct Overflow(u32);

impl Aggregate for Tank {
    type Event = TankEvent;
    type Error = Overflow;
    fn apply(&mut self, event: &TankEvent) {
        FOLDED.with(|n| n.set(n.get() + 1));
        match event {
            TankEvent::Filled { litres } => self.litres += litres,
            TankEvent::Drained { litres } => self.litres -= litres,
        }
    }
}

struct Fill(u32);

impl Handle<Fill> for Tank {
    fn handle(&self, Fill(litres): &Fill) -> Result<Vec<TankEvent>, Overflow> {
        if self.litres + litres > 100 {
            return Err(Overflow(self.litres + litres));
        }
        Ok(vec![TankEvent::Filled { litres: *litres }])
    }
}

/// Empties the tank; an empty tank has nothing to drain (no events).
struct Drain;

impl Handle<Drain> for Tank {
    fn handle(&self, _: &Drain) -> Result<Vec<TankEvent>, Overflow> {
        Ok(match self.litres {
            0 => vec![],
            litres => vec![TankEvent::Drained { litres }],
        })
    }
}

#[tokio::test]
async fn hot_streams_are_not_read_again_and_stale_states_decide_nothing() {
    let store = MemoryStore::new();
    let cached = Repository::<Tank, _>::new(store.clone()).cache(10);

    // Twenty commands in a row on one tank: each folds only its own event.
    let before = folded();
    for _ in 0..20 {
        cached.execute("t1", Fill(1)).await.unwrap();
    }
    assert_eq!(folded() - before, 20, "no stream read again");
    // A refused command keeps the state too.
    let refused = cached.execute("t1", Fill(90)).await;
    assert!(matches!(
        refused,
        Err(ExecuteError::Rejected(Overflow(110)))
    ));
    let before = folded();
    cached.execute("t1", Fill(1)).await.unwrap();
    assert_eq!(folded() - before, 1);

    // Another writer (another process, say) fills the tank behind the
    // cache's back. The kept state (21 litres) is stale: the command must
    // be decided on the stored stream (91 litres), and refused.
    let other = Repository::<Tank, _>::new(store.clone());
    other.execute("t1", Fill(70)).await.unwrap();
    let refused = cached.execute("t1", Fill(20)).await;
    assert!(
        matches!(refused, Err(ExecuteError::Rejected(Overflow(111)))),
        "{refused:?}"
    );
    // And from then on it works from the state it read.
    let done = cached.execute("t1", Fill(9)).await.unwrap();
    assert_eq!(done.stream_version, 23);
    assert_eq!(cached.load("t1").await.unwrap().state.litres, 100);
}

#[tokio::test]
async fn concurrent_commands_on_a_cached_stream_all_land() {
    let store = MemoryStore::new();
    let cached = Repository::<Tank, _>::new(store.clone())
        .cache(10)
        .max_attempts(50);
    let runs = (0..40).map(|_| {
        let cached = cached.clone();
        tokio::spawn(async move { cached.execute("t2", Fill(2)).await })
    });
    for run in runs {
        run.await.unwrap().unwrap();
    }
    let loaded = Repository::<Tank, _>::new(store).load("t2").await.unwrap();
    assert_eq!((loaded.version, loaded.state.litres), (40, 80));
}

#[tokio::test]
async fn a_stale_state_that_decides_nothing_is_caught_up_and_decides_again() {
    let store = MemoryStore::new();
    let cached = Repository::<Tank, _>::new(store.clone()).cache(10);
    cached.execute("t3", Fill(5)).await.unwrap();
    cached.execute("t3", Drain).await.unwrap(); // kept: empty, version 2

    // Another process fills the tank; the kept state still says empty.
    let other = Repository::<Tank, _>::new(store.clone());
    let filled = other.execute("t3", Fill(7)).await.unwrap();

    // On the kept state, Drain decides nothing: no append, so no version
    // check. The repository must notice and decide on the stored stream.
    let done = cached.execute("t3", Drain).await.unwrap();
    assert_eq!(done.events, vec![TankEvent::Drained { litres: 7 }]);
    assert_eq!(done.stream_version, 4);
    assert_eq!(
        done.attempts, 2,
        "decided on the kept state, then on the stored one"
    );
    assert_eq!(other.load("t3").await.unwrap().state.litres, 0);

    // A current kept state that decides nothing answers with its stream's
    // last position: the token of the state the decision saw.
    let again = cached.execute("t3", Drain).await.unwrap();
    assert!(again.events.is_empty());
    assert_eq!(again.stream_version, 4);
    assert_eq!(again.attempts, 1);
    assert_eq!(again.position, done.position);
    assert!(filled.position < done.position);
}

#[tokio::test]
async fn a_stale_state_that_refuses_is_caught_up_and_decides_again() {
    let store = MemoryStore::new();
    let cached = Repository::<Tank, _>::new(store.clone()).cache(10);
    cached.execute("t4", Fill(95)).await.unwrap(); // kept: 95 litres

    let other = Repository::<Tank, _>::new(store.clone());
    other.execute("t4", Drain).await.unwrap();

    // 95 + 10 overflows on the kept state; the tank is really empty.
    let done = cached.execute("t4", Fill(10)).await.unwrap();
    assert_eq!(done.stream_version, 3);
    assert_eq!(other.load("t4").await.unwrap().state.litres, 10);
    // And a refusal on a current state stands.
    let refused = cached.execute("t4", Fill(91)).await;
    assert!(matches!(
        refused,
        Err(ExecuteError::Rejected(Overflow(101)))
    ));
}
