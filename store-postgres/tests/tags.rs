//! Tags are stored and read back through every append path (the one-statement
//! hot path, the group commit statement, the `annals_append` fallback,
//! appends inside the caller's transaction, conditional appends) and every
//! read (streams, the global log, filtered, queries, dead letters).

mod common;

use std::sync::Arc;

use annals::projection::{DeadLetter, ProjectionStore};
use annals::{
    AppendCondition, AppendOptions, EventFilter, EventStore, ExpectedVersion, NewEvent, Position,
    Query, QueryItem, RecordedEvent, StoreError,
};
use annals_postgres::PgEventStore;
use annals_testkit::PgTest;
use sqlx::types::Json;
use tokio::sync::Barrier;
use uuid::Uuid;

/// An event whose tags say where it comes from, with characters that need
/// quoting in SQL arrays.
fn tagged(path: &str, n: u64) -> NewEvent {
    let mut event = common::event("Tagged", n);
    event.tags = vec![
        format!("path:{path}"),
        format!("n:{n}"),
        "quote:\"{a,b}\" \\ end".to_owned(),
        "ünïcode ✈".to_owned(),
    ];
    event
}

/// Every read of the store returns exactly these events with their tags
/// (once every event written is readable: another test's open transaction
/// holds the log's readable end back).
async fn assert_read_back(pg: &PgTest, store: &PgEventStore, expected: &[NewEvent]) {
    pg.settle().await;
    let check = |what: &str, read: &[RecordedEvent]| {
        for event in expected {
            let found = read
                .iter()
                .find(|r| r.event_id == event.event_id)
                .unwrap_or_else(|| panic!("{what}: {} not read", event.event_id));
            assert_eq!(found.tags, event.tags, "{what}: tags of {}", event.event_id);
        }
    };
    let all = store
        .read_all(Position::START, 10_000, &EventFilter::all())
        .await
        .expect("read_all");
    check("read_all", &all);
    let filtered = store
        .read_all(Position::START, 10_000, &EventFilter::types(["Tagged"]))
        .await
        .expect("read_all filtered");
    check("read_all filtered", &filtered);
    let mut streams = Vec::new();
    for stream in all.iter().map(|e| e.stream_id.clone()) {
        if !streams.contains(&stream) {
            streams.push(stream);
        }
    }
    let mut by_stream = Vec::new();
    for stream in &streams {
        by_stream.extend(store.read_stream(stream, 1, 10_000).await.expect("read"));
    }
    check("read_stream", &by_stream);
    let queried = store
        .read_query(&Query::all(), Position::START, 10_000)
        .await
        .expect("read_query");
    check("read_query", &queried);
    for event in expected.iter().filter(|e| !e.tags.is_empty()) {
        let by_tag = store
            .read_query(
                &Query::new().or(QueryItem::tagged(event.tags.clone())),
                Position::START,
                10,
            )
            .await
            .expect("read_query by tags");
        assert_eq!(
            by_tag.iter().map(|e| e.event_id).collect::<Vec<_>>(),
            [event.event_id],
            "all the tags of an event select it, and only it"
        );
    }
}

/// Without group commit every append takes the one-statement hot path; a
/// replay and a conflict go through `annals_append` and change nothing.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_tags_round_trip_through_the_hot_path_and_the_fallback() {
    let Some((pg, store)) = common::store_with(|o| o.group_commit(false)).await else {
        return;
    };
    let batch: Vec<NewEvent> = (0..3).map(|n| tagged("hot", n)).collect();
    let mut untagged = common::event("Tagged", 9);
    untagged.tags.clear();
    store
        .append("hot", ExpectedVersion::NoStream, batch.clone())
        .await
        .expect("hot path");
    store
        .append("hot", ExpectedVersion::Exact(3), vec![untagged.clone()])
        .await
        .expect("hot path, exact");

    // A replay (the ids are stored: the insert fails, annals_append answers)
    // and a conflict (annals_append says why) write nothing.
    let replayed = store
        .append("hot", ExpectedVersion::Any, batch.clone())
        .await
        .expect("replay");
    assert!(replayed.repeated);
    let conflict = store
        .append(
            "hot",
            ExpectedVersion::Exact(1),
            vec![tagged("conflict", 0)],
        )
        .await;
    assert!(matches!(
        conflict,
        Err(StoreError::Conflict { actual: 4, .. })
    ));

    let mut expected = batch;
    expected.push(untagged);
    assert_read_back(&pg, &store, &expected).await;
    pg.cleanup().await;
}

/// Appends that arrive together are written by one group statement, tags
/// included.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_tags_round_trip_through_the_group_commit() {
    let Some((pg, store)) = common::store().await else {
        return;
    };
    const TASKS: usize = 24;
    let barrier = Arc::new(Barrier::new(TASKS));
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let store = store.clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                let events = vec![
                    tagged("group", task as u64),
                    tagged("group", 100 + task as u64),
                ];
                barrier.wait().await;
                store
                    .append(
                        &format!("group-{task}"),
                        ExpectedVersion::Any,
                        events.clone(),
                    )
                    .await
                    .expect("grouped append");
                events
            })
        })
        .collect();
    let mut expected = Vec::new();
    for task in tasks {
        expected.extend(task.await.expect("task"));
    }
    let transactions: i64 =
        sqlx::query_scalar("SELECT count(DISTINCT xmin::text) FROM annals_events")
            .fetch_one(store.pool())
            .await
            .expect("count transactions");
    assert!(
        (transactions as usize) < TASKS,
        "{TASKS} appends in {transactions} transactions: no group formed"
    );
    assert_read_back(&pg, &store, &expected).await;
    pg.cleanup().await;
}

/// `append_in_transaction` runs `annals_append`, which writes the tags; so
/// does the function called directly, and its previous signature (kept for
/// processes of the previous version) writes none.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_tags_round_trip_through_annals_append() {
    let Some((pg, store)) = common::store().await else {
        return;
    };
    let in_tx = vec![tagged("in-transaction", 0), tagged("in-transaction", 1)];
    let mut tx = store.pool().begin().await.expect("begin");
    store
        .append_in_transaction(
            &mut tx,
            "in-tx",
            ExpectedVersion::NoStream,
            in_tx.clone(),
            AppendOptions::default(),
        )
        .await
        .expect("append in transaction");
    tx.commit().await.expect("commit");

    let direct = tagged("function", 0);
    let outcome: String = sqlx::query_scalar(
        "SELECT o_outcome FROM annals_append('direct', -1, NULL, true, '', $1, $2, $3, $4, $5, $6)",
    )
    .bind([direct.event_id])
    .bind([&direct.event_type])
    .bind([1_i32])
    .bind([Json(&direct.payload)])
    .bind([Json(&direct.metadata)])
    .bind([Json(&direct.tags)])
    .fetch_one(store.pool())
    .await
    .expect("annals_append");
    assert_eq!(outcome, "appended");

    let old = Uuid::now_v7();
    let outcome: String = sqlx::query_scalar(
        "SELECT o_outcome FROM annals_append('old', -1, NULL, true, '', $1, $2, $3, $4, $5)",
    )
    .bind([old])
    .bind(["Old"])
    .bind([1_i32])
    .bind([Json(serde_json::json!({}))])
    .bind([Json(serde_json::json!({}))])
    .fetch_one(store.pool())
    .await
    .expect("annals_append, the previous signature");
    assert_eq!(outcome, "appended");
    let old_tags = store.read_stream("old", 1, 1).await.expect("read")[0]
        .tags
        .clone();
    assert!(old_tags.is_empty());

    let mut expected = in_tx;
    expected.push(direct);
    assert_read_back(&pg, &store, &expected).await;
    pg.cleanup().await;
}

/// Conditional appends (alone and grouped) write tags, and dead letters read
/// their events with them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_tags_round_trip_through_conditional_appends_and_dead_letters() {
    let Some((pg, store)) = common::store().await else {
        return;
    };
    let mut expected = Vec::new();
    let tasks: Vec<_> = (0..8)
        .map(|task| {
            let store = store.clone();
            tokio::spawn(async move {
                let events = vec![tagged("conditional", task)];
                let condition = AppendCondition {
                    fail_if_events_match: Query::new()
                        .or(QueryItem::tagged([format!("nobody:{task}")])),
                    after: None,
                };
                store
                    .append_if(
                        &format!("if-{task}"),
                        events.clone(),
                        condition,
                        AppendOptions::default(),
                    )
                    .await
                    .expect("conditional append");
                events
            })
        })
        .collect();
    for task in tasks {
        expected.extend(task.await.expect("task"));
    }
    assert_read_back(&pg, &store, &expected).await;

    let event = store.read_stream("if-3", 1, 1).await.expect("read")[0].clone();
    store
        .add_dead_letters(
            "projection",
            vec![DeadLetter {
                event: event.clone(),
                error: Some("boom".into()),
                attempts: 1,
                retry_requested: false,
            }],
        )
        .await
        .expect("dead-letter");
    let letters = store
        .dead_letters("projection")
        .await
        .expect("dead letters");
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].event.tags, event.tags);
    assert!(!event.tags.is_empty());
    pg.cleanup().await;
}
