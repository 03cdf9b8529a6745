//! A [`Repository`] over the store: commands, retries on conflict,
//! idempotent commands and snapshots, with a counter aggregate of its own.

use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::Barrier;
use uuid::Uuid;

use super::helpers::*;
use crate::aggregate::{Aggregate, AggregateType, Handle};
use crate::envelope::Metadata;
use crate::event::{DomainEvent, EventError, EventType};
use crate::payload::Payload;
use crate::repository::{CommandContext, ExecuteError, Repository};
use crate::store::{EventStore, Snapshot};

const INCREMENTED: &str = "conformance.Incremented";

/// The events of the test counter.
#[derive(Debug, Clone, PartialEq)]
enum CounterEvent {
    Incremented { by: u64 },
}

impl DomainEvent for CounterEvent {
    const TYPES: &'static [EventType] = &[EventType {
        name: INCREMENTED,
        version: 1,
    }];

    fn event_type(&self) -> &'static str {
        INCREMENTED
    }

    fn schema_version(&self) -> u32 {
        1
    }

    fn encode(&self) -> Result<Payload, EventError> {
        let CounterEvent::Incremented { by } = self;
        Ok(json!({ "by": by }).into())
    }

    fn decode(
        event_type: &str,
        schema_version: u32,
        payload: &Payload,
    ) -> Result<Self, EventError> {
        if event_type != INCREMENTED {
            return Err(EventError::UnknownType {
                event_type: event_type.to_owned(),
                schema_version,
            });
        }
        if schema_version != 1 {
            return Err(EventError::UnsupportedVersion {
                event_type: event_type.to_owned(),
                schema_version,
                current: 1,
            });
        }
        #[derive(serde::Deserialize)]
        struct Fields {
            by: u64,
        }
        let Fields { by } = payload.decode().map_err(|source| EventError::Decode {
            event_type: event_type.to_owned(),
            schema_version,
            source,
        })?;
        Ok(CounterEvent::Incremented { by })
    }
}

/// A counter aggregate, written by hand.
#[derive(Debug, Default, Clone, PartialEq)]
struct Counter {
    total: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot increment by zero")]
struct ZeroIncrement;

struct Increment(u64);

impl AggregateType for Counter {
    const NAME: &'static str = "conformance_counter";

    fn snapshot(&self) -> Option<Value> {
        Some(json!({ "total": self.total }))
    }

    fn restore(state: &Value) -> Option<Self> {
        Some(Counter {
            total: state.get("total")?.as_u64()?,
        })
    }
}

impl Aggregate for Counter {
    type Event = CounterEvent;
    type Error = ZeroIncrement;

    fn apply(&mut self, event: &CounterEvent) {
        let CounterEvent::Incremented { by } = event;
        self.total += by;
    }
}

impl Handle<Increment> for Counter {
    fn handle(&self, command: &Increment) -> Result<Vec<CounterEvent>, ZeroIncrement> {
        if command.0 == 0 {
            return Err(ZeroIncrement);
        }
        Ok(vec![CounterEvent::Incremented { by: command.0 }])
    }
}

/// `Repository::execute` loads, decides, appends and reports the outcome; a
/// rejected command writes nothing.
pub async fn repository_executes_commands<S: EventStore + Clone>(store: &S) {
    let counters = Repository::<Counter, _>::new(store.clone());
    let id = Uuid::new_v4();
    let stream = Counter::stream_id(&id);

    let done = counters
        .execute(id, Increment(2))
        .await
        .expect("first increment");
    assert_eq!(
        done.events,
        [CounterEvent::Incremented { by: 2 }],
        "events of the first command"
    );
    assert_eq!(
        done.stream_version, 1,
        "stream_version after the first command"
    );
    assert!(!done.repeated);
    settle(store, done.position).await;
    assert_eq!(
        done.position,
        head(store).await,
        "the position token is the append's"
    );

    let done = counters
        .execute(id, Increment(3))
        .await
        .expect("second increment");
    assert_eq!(
        done.stream_version, 2,
        "stream_version after the second command"
    );
    let loaded = counters.load(id).await.expect("load");
    assert_eq!(
        (loaded.state.total, loaded.version),
        (5, 2),
        "state and version after two commands"
    );

    let stored = whole_stream(store, &stream).await;
    assert_eq!(
        versions(&stored),
        [1, 2],
        "versions stored by the repository"
    );
    assert_eq!(
        stored[0].event_type, INCREMENTED,
        "event type stored by the repository"
    );
    assert_eq!(
        stored[0].payload,
        json!({ "by": 2 }),
        "payload stored by the repository"
    );

    match counters.execute(id, Increment(0)).await {
        Err(ExecuteError::Rejected(ZeroIncrement)) => {}
        other => panic!("a rejected command returned {other:?}"),
    }
    assert_eq!(
        version(store, &stream).await,
        2,
        "a rejected command wrote events"
    );
}

/// Concurrent commands on one aggregate all succeed through retries, each
/// at its own version.
pub async fn repository_retries_conflicts<S: EventStore + Clone>(store: &S) {
    const COMMANDS: usize = 10;
    let counters = Repository::<Counter, _>::new(store.clone()).max_attempts(50);
    let id = Uuid::new_v4();
    let barrier = Arc::new(Barrier::new(COMMANDS));
    let tasks: Vec<_> = (0..COMMANDS)
        .map(|_| {
            let (counters, barrier) = (counters.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                counters.execute(id, Increment(1)).await
            })
        })
        .collect();
    let mut versions = Vec::new();
    for task in tasks {
        let done = join(task)
            .await
            .unwrap_or_else(|e| panic!("a concurrent increment failed: {e}"));
        versions.push(done.stream_version);
    }
    versions.sort_unstable();
    assert_eq!(
        versions,
        (1..=COMMANDS as u64).collect::<Vec<_>>(),
        "each command its own version"
    );
    let loaded = counters.load(id).await.expect("load");
    assert_eq!(
        (loaded.state.total, loaded.version),
        (COMMANDS as u64, COMMANDS as u64),
        "state and version after the concurrent commands"
    );
}

/// A command id runs once through the repository, also when sent
/// concurrently: later runs return the first outcome and its events.
pub async fn repository_command_idempotency<S: EventStore + Clone>(store: &S) {
    let counters = Repository::<Counter, _>::new(store.clone()).max_attempts(50);
    let id = Uuid::new_v4();
    let command_id = Uuid::new_v4();
    let context = CommandContext {
        command_id: Some(command_id),
        metadata: Metadata::default().actor("conformance"),
    };

    let first = counters
        .execute_with(id, Increment(4), context.clone())
        .await
        .expect("first run");
    assert!(!first.repeated);
    let again = counters
        .execute_with(id, Increment(4), context.clone())
        .await
        .expect("second run");
    assert!(
        again.repeated,
        "a second run of a command is not marked repeated"
    );
    assert_eq!(again.events, first.events, "events of the repeated command");
    assert_eq!(
        (again.stream_version, again.position),
        (first.stream_version, first.position),
        "outcome of the repeated command"
    );
    assert_eq!(counters.load(id).await.expect("load").state.total, 4);

    let stored = whole_stream(store, &Counter::stream_id(&id)).await;
    assert_eq!(stored.len(), 1, "a repeated command wrote events");

    // Once the stream has moved on, a replay still answers the first outcome,
    // whether the command would now write (the append finds the id) or
    // would not (the id is looked up).
    counters
        .execute(id, Increment(1))
        .await
        .expect("another command on the stream");
    let moved = counters
        .execute_with(id, Increment(4), context.clone())
        .await
        .expect("replay after another command");
    let refused = counters
        .execute_with(id, Increment(0), context.clone())
        .await
        .expect("replay of a command that would now be refused");
    for replay in [&moved, &refused] {
        assert!(replay.repeated, "not marked repeated: {replay:?}");
        assert_eq!(
            (replay.stream_version, replay.position),
            (first.stream_version, first.position),
            "outcome of a replay after the log moved on"
        );
    }
    assert_eq!(whole_stream(store, &Counter::stream_id(&id)).await.len(), 2);
    assert_eq!(
        stored[0].metadata.causation_id,
        Some(command_id),
        "causation defaults to the command"
    );
    assert_eq!(stored[0].metadata.actor.as_deref(), Some("conformance"));
    let outcome = store
        .command_outcome(command_id)
        .await
        .expect("command_outcome");
    assert_eq!(
        outcome.map(|o| o.position),
        Some(first.position),
        "command_outcome of a command run through the repository"
    );

    // The same command sent by several clients at once runs once.
    const CLIENTS: usize = 6;
    let racing = Uuid::new_v4();
    let context = CommandContext {
        command_id: Some(Uuid::new_v4()),
        metadata: Metadata::default(),
    };
    let barrier = Arc::new(Barrier::new(CLIENTS));
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (counters, barrier, context) = (counters.clone(), barrier.clone(), context.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                counters.execute_with(racing, Increment(1), context).await
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for task in tasks {
        let done = join(task)
            .await
            .unwrap_or_else(|e| panic!("a concurrent run of one command failed: {e}"));
        outcomes.push(done);
    }
    assert_eq!(
        outcomes.iter().filter(|o| !o.repeated).count(),
        1,
        "the command ran more than once"
    );
    assert!(
        outcomes
            .iter()
            .all(|o| o.stream_version == 1 && o.position == outcomes[0].position)
    );
    assert_eq!(
        version(store, &Counter::stream_id(&racing)).await,
        1,
        "a command sent concurrently ran more than once"
    );
}

/// With snapshots on, the repository saves them through the store and loads
/// from them; a snapshot of another schema is ignored.
pub async fn repository_snapshots<S: EventStore + Clone>(store: &S) {
    let counters = Repository::<Counter, _>::new(store.clone()).snapshot_every(3);
    let id = Uuid::new_v4();
    let stream = Counter::stream_id(&id);
    for _ in 0..7 {
        counters.execute(id, Increment(1)).await.expect("increment");
    }
    let snapshot = store
        .load_snapshot(&stream)
        .await
        .expect("load_snapshot")
        .expect("a snapshot after 7 events with snapshot_every(3)");
    assert_eq!(snapshot.stream_version, 6, "version of the latest snapshot");
    assert_eq!(
        snapshot.schema_version,
        Counter::SNAPSHOT_VERSION,
        "schema of the snapshot"
    );
    assert_eq!(
        snapshot.state,
        json!({ "total": 6 }),
        "state in the snapshot"
    );
    let loaded = counters.load(id).await.expect("load");
    assert_eq!(
        (loaded.state.total, loaded.version),
        (7, 7),
        "state and version loaded from the snapshot"
    );

    store
        .save_snapshot(Snapshot {
            stream_id: stream,
            stream_version: 7,
            schema_version: Counter::SNAPSHOT_VERSION + 1,
            state: json!({ "total": 1000 }),
        })
        .await
        .expect("save_snapshot");
    let loaded = counters.load(id).await.expect("load");
    assert_eq!(
        (loaded.state.total, loaded.version),
        (7, 7),
        "a snapshot of another schema was used"
    );
}
