//! Group commit: concurrent appends share statements and commits, and each
//! is still checked and answered on its own.

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use annals::{AppendOptions, Appended, EventStore, ExpectedVersion, StoreError};
use annals_postgres::PgEventStore;
use tokio::sync::Barrier;
use uuid::Uuid;

const TASKS: usize = 40;
const ROUNDS: usize = 5;

/// What each task of a round does, by its number modulo 5, and what it must
/// be told.
#[derive(Debug, Clone, Copy)]
enum Case {
    /// `Exact(1)` on a stream at version 1: appended at version 2.
    Matches,
    /// `Exact(5)` on a stream at version 1: conflict, actual 1.
    WrongVersion,
    /// `NoStream` on a stream that exists: conflict, actual 1.
    StreamExists,
    /// `Any` on a new stream: appended at version 1.
    NewStream,
    /// A command id recorded before the round: duplicate, first outcome.
    RecordedCommand,
}

fn case(task: usize) -> Case {
    match task % 5 {
        0 => Case::Matches,
        1 => Case::WrongVersion,
        2 => Case::StreamExists,
        3 => Case::NewStream,
        _ => Case::RecordedCommand,
    }
}

/// The two events each task of a round appends.
fn round_events() -> Vec<annals::NewEvent> {
    vec![common::event("Round", 1), common::event("Round", 2)]
}

/// Runs the rounds; returns how many transactions wrote the appended events
/// and how many appends wrote them.
async fn mixed_rounds(store: &PgEventStore) -> (i64, i64) {
    let mut written = 0;
    for round in 0..ROUNDS {
        // Before the round: every stream at version 1, and the commands of
        // the `RecordedCommand` tasks recorded.
        let mut recorded: HashMap<usize, (Uuid, Appended)> = HashMap::new();
        for task in 0..TASKS {
            let stream = format!("r{round}-{task}");
            if matches!(case(task), Case::NewStream) {
                continue;
            }
            let command_id = Uuid::now_v7();
            let first = store
                .append_with(
                    &stream,
                    ExpectedVersion::NoStream,
                    common::events(1),
                    AppendOptions {
                        command_id: Some(command_id),
                    },
                )
                .await
                .expect("set-up append");
            recorded.insert(task, (command_id, first));
        }
        let recorded = Arc::new(recorded);
        let barrier = Arc::new(Barrier::new(TASKS));
        let tasks: Vec<_> = (0..TASKS)
            .map(|task| {
                let store = store.clone();
                let barrier = barrier.clone();
                let recorded = recorded.clone();
                tokio::spawn(async move {
                    let stream = format!("r{round}-{task}");
                    let (expected, options) = match case(task) {
                        Case::Matches => (ExpectedVersion::Exact(1), AppendOptions::default()),
                        Case::WrongVersion => (ExpectedVersion::Exact(5), AppendOptions::default()),
                        Case::StreamExists => (ExpectedVersion::NoStream, AppendOptions::default()),
                        Case::NewStream => (ExpectedVersion::Any, AppendOptions::default()),
                        Case::RecordedCommand => (
                            ExpectedVersion::Exact(1),
                            AppendOptions {
                                command_id: Some(recorded[&task].0),
                            },
                        ),
                    };
                    barrier.wait().await;
                    let result = store
                        .append_with(&stream, expected, round_events(), options)
                        .await;
                    (task, stream, result)
                })
            })
            .collect();
        for joined in futures::future::join_all(tasks).await {
            let (task, stream, result) = joined.expect("task");
            match (case(task), result) {
                (Case::Matches, Ok(done)) => {
                    assert_eq!((done.first_version, done.stream_version), (2, 3));
                    assert!(!done.repeated);
                    written += 1;
                }
                (Case::NewStream, Ok(done)) => {
                    assert_eq!((done.first_version, done.stream_version), (1, 2));
                    written += 1;
                }
                (
                    Case::WrongVersion,
                    Err(StoreError::Conflict {
                        actual, expected, ..
                    }),
                ) => {
                    assert_eq!((actual, expected), (1, ExpectedVersion::Exact(5)));
                }
                (Case::StreamExists, Err(StoreError::Conflict { actual, .. })) => {
                    assert_eq!(actual, 1);
                }
                (Case::RecordedCommand, Ok(done)) => {
                    let first = recorded[&task].1;
                    assert!(done.repeated, "{stream}: {done:?}");
                    assert_eq!(done.stream_version, first.stream_version);
                    assert_eq!(done.position, first.position);
                }
                (case, other) => panic!("{stream} ({case:?}): unexpected {other:?}"),
            }
            // Nothing but what the task was told is in its stream.
            let versions: Vec<u64> = store
                .read_stream(&stream, 1, 100)
                .await
                .expect("read")
                .iter()
                .map(|e| e.stream_version)
                .collect();
            let expected_versions: Vec<u64> = match case(task) {
                Case::Matches => vec![1, 2, 3],
                Case::NewStream => vec![1, 2],
                _ => vec![1],
            };
            assert_eq!(versions, expected_versions, "{stream}");
        }
    }
    let transactions: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT xmin::text) FROM annals_events WHERE event_type = 'Round'",
    )
    .fetch_one(store.pool())
    .await
    .expect("count transactions");
    (transactions, written)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_group_commit_answers_each_append_of_a_group_on_its_own() {
    let Some((pg, store)) = common::store().await else {
        return;
    };
    let (transactions, appends) = mixed_rounds(&store).await;
    assert_eq!(appends, (ROUNDS * TASKS * 2 / 5) as i64);
    // Appends that arrived together shared transactions.
    assert!(
        transactions < appends,
        "{appends} appends in {transactions} transactions: no group formed"
    );
    pg.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_without_group_commit_each_append_has_its_own_transaction() {
    let Some((pg, store)) = common::store_with(|o| o.group_commit(false)).await else {
        return;
    };
    let (transactions, appends) = mixed_rounds(&store).await;
    assert_eq!(transactions, appends);
    pg.cleanup().await;
}

/// Two appends of the same event id to different streams, among others, all
/// at once: one wins, the other is told where the event is, and the rest of
/// the group is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_group_commit_survives_a_duplicate_id_racing_within_a_group() {
    let Some((pg, store)) = common::store().await else {
        return;
    };
    for round in 0..10 {
        let shared = common::event("Shared", round);
        let barrier = Arc::new(Barrier::new(12));
        let tasks: Vec<_> = (0..12)
            .map(|task| {
                let store = store.clone();
                let barrier = barrier.clone();
                let events = if task < 2 {
                    vec![shared.clone()]
                } else {
                    common::events(3)
                };
                tokio::spawn(async move {
                    let stream = format!("dup{round}-{task}");
                    barrier.wait().await;
                    let result = store
                        .append(&stream, ExpectedVersion::NoStream, events)
                        .await;
                    (task, stream, result)
                })
            })
            .collect();
        let mut winners = Vec::new();
        let mut told = Vec::new();
        for joined in futures::future::join_all(tasks).await {
            let (task, stream, result) = joined.expect("task");
            match (task < 2, result) {
                (false, Ok(done)) => assert_eq!(done.stream_version, 3, "{stream}"),
                (true, Ok(_)) => winners.push(stream),
                (
                    true,
                    Err(StoreError::DuplicateEvent {
                        event_id,
                        stream: at,
                        ..
                    }),
                ) => {
                    assert_eq!(event_id, shared.event_id);
                    told.push(at);
                }
                (_, other) => panic!("{stream}: unexpected {other:?}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
        assert_eq!(
            told, winners,
            "round {round}: the loser is told the winner's stream"
        );
        let loser_version = store
            .stream_version(&format!(
                "dup{round}-{}",
                if winners[0].ends_with("-0") { 1 } else { 0 }
            ))
            .await
            .expect("version");
        assert_eq!(
            loser_version, 0,
            "round {round}: nothing written for the loser"
        );
    }
    pg.cleanup().await;
}
