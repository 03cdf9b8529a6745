//! `read_query`: the semantics of queries (types OR'd, tags AND'd, items
//! OR'd, after, limit, no items, every event), the same as the memory
//! store's; the gap-free bound; and the plans: selective queries use indexes.

mod common;

use annals::memory::MemoryStore;
use annals::{EventStore, ExpectedVersion, NewEvent, Position, Query, QueryItem, RecordedEvent};
use annals_postgres::PgEventStore;
use serde_json::json;
use sqlx::types::Json;
use uuid::Uuid;

fn event(event_type: &str, tags: &[&str]) -> NewEvent {
    let mut event = common::event(event_type, 0);
    event.tags = tags.iter().map(|t| (*t).to_owned()).collect();
    event
}

fn ids(events: &[RecordedEvent]) -> Vec<Uuid> {
    events.iter().map(|e| e.event_id).collect()
}

/// A conformance-style case, for any store: what `read_query` selects, in
/// which order, after what, how many.
async fn query_semantics<S: EventStore>(store: &S) {
    // Five events in three streams, in this log order.
    let e = [
        event("A", &["x"]),
        event("B", &["x", "y"]),
        event("C", &["y"]),
        event("A", &[]),
        event("B", &["x", "y", "z"]),
    ];
    let streams = ["q-1", "q-2", "q-1", "q-3", "q-2"];
    let mut positions = Vec::new();
    for (event, stream) in e.iter().zip(streams) {
        let done = store
            .append(stream, ExpectedVersion::Any, vec![event.clone()])
            .await
            .expect("append");
        positions.push(done.position);
    }
    readable(store, positions[4]).await;
    let id = |i: usize| e[i].event_id;
    let read = |query: Query, after: Position, limit: usize| async move {
        ids(&store
            .read_query(&query, after, limit)
            .await
            .expect("read_query"))
    };
    let start = Position::START;

    // Types are OR'd.
    let q = Query::new().or(QueryItem::types(["A", "B"]));
    assert_eq!(
        read(q, start, 100).await,
        [id(0), id(1), id(3), id(4)],
        "types OR'd"
    );
    // Tags are AND'd.
    let q = Query::new().or(QueryItem::tagged(["x", "y"]));
    assert_eq!(read(q, start, 100).await, [id(1), id(4)], "tags AND'd");
    // Types and tags: both.
    let q = Query::new().or(QueryItem::types(["A"]).and_tagged(["x"]));
    assert_eq!(read(q, start, 100).await, [id(0)], "types and tags");
    let q = Query::new().or(QueryItem::types(["B", "C"]).and_tagged(["y"]));
    assert_eq!(read(q, start, 100).await, [id(1), id(2), id(4)]);
    // Items are OR'd, each event once, in log order.
    let q = Query::new()
        .or(QueryItem::tagged(["z"]))
        .or(QueryItem::types(["C"]));
    assert_eq!(read(q, start, 100).await, [id(2), id(4)], "items OR'd");
    let q = Query::new()
        .or(QueryItem::tagged(["x"]))
        .or(QueryItem::tagged(["y"]))
        .or(QueryItem::types(["B"]));
    assert_eq!(
        read(q, start, 100).await,
        [id(0), id(1), id(2), id(4)],
        "an event matching several items is read once"
    );
    // After a position: strictly after.
    let q = Query::new().or(QueryItem::tagged(["x"]));
    assert_eq!(read(q.clone(), positions[1], 100).await, [id(4)], "after");
    assert_eq!(read(q.clone(), positions[0], 100).await, [id(1), id(4)]);
    assert!(read(q.clone(), positions[4], 100).await.is_empty());
    // Limit: the first ones, then the next page.
    assert_eq!(read(q.clone(), start, 2).await, [id(0), id(1)], "limit");
    assert_eq!(read(q.clone(), positions[1], 2).await, [id(4)]);
    assert!(read(q, start, 0).await.is_empty(), "limit 0");
    // No items: nothing. One empty item: every event.
    assert!(read(Query::new(), start, 100).await.is_empty(), "no items");
    assert_eq!(
        read(Query::all(), start, 100).await,
        [id(0), id(1), id(2), id(3), id(4)],
        "all"
    );
    assert_eq!(read(Query::all(), positions[2], 1).await, [id(3)]);
    // Nothing matches an unknown type or tag.
    let q = Query::new()
        .or(QueryItem::types(["Unknown"]))
        .or(QueryItem::tagged(["x", "unknown"]));
    assert!(read(q, start, 100).await.is_empty(), "unknown type or tag");
    // What was read is read with its tags and positions.
    let read = store
        .read_query(&Query::new().or(QueryItem::tagged(["z"])), start, 10)
        .await
        .expect("read_query");
    assert_eq!(read[0].tags, ["x", "y", "z"]);
    assert_eq!(read[0].position, positions[4]);
    assert_eq!(read[0].stream_id, "q-2");
}

/// Waits until readers of the log see `position`: a transaction anywhere on
/// the server (another test's) may hold PostgreSQL's readers back a moment.
async fn readable<S: EventStore>(store: &S, position: Position) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while store.head().await.expect("head") < position {
        assert!(
            std::time::Instant::now() < deadline,
            "{position} never became readable"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn memory_store_query_semantics() {
    query_semantics(&MemoryStore::new()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_query_semantics() {
    let Some((pg, store)) = common::store().await else {
        return;
    };
    query_semantics(&store).await;
    // Items that can match nothing PostgreSQL stores (a NUL) are not sent.
    let q = Query::new()
        .or(QueryItem::tagged(["x\0"]))
        .or(QueryItem::types(["A\0"]));
    assert!(
        store
            .read_query(&q, Position::START, 10)
            .await
            .expect("read_query")
            .is_empty()
    );
    pg.cleanup().await;
}

/// A query never returns an event that a running transaction could still
/// precede: committed events labelled above an open transaction wait for it.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_read_query_is_gap_free() {
    let Some((pg, store)) = common::store().await else {
        return;
    };
    let mut tx = store.pool().begin().await.expect("begin");
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut *tx)
        .await
        .expect("take an id");
    let done = store
        .append("later", ExpectedVersion::Any, vec![event("T", &["k"])])
        .await
        .expect("append");
    let q = Query::new().or(QueryItem::tagged(["k"]));
    assert!(
        store
            .read_query(&q, Position::START, 10)
            .await
            .unwrap()
            .is_empty(),
        "held back by the open transaction"
    );
    tx.commit().await.expect("commit");
    readable(&store, done.position).await;
    assert_eq!(
        store
            .read_query(&q, Position::START, 10)
            .await
            .unwrap()
            .len(),
        1
    );
    pg.cleanup().await;
}

/// The plans of the query statements on a log of 100 000 events: a tagged
/// item goes through the GIN index on tags, an item of types only through
/// the type index, and neither reads the log from the start.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_selective_queries_use_indexes() {
    let Some((pg, store)) = common::store().await else {
        return;
    };
    fill(&store, 100_000).await;
    // sqlx has no xid8 for tests to bind: positions go as text, cast.
    let read_query =
        include_str!("../src/sql/read_query.sql").replace("($1, $2)", "($1::text::xid8, $2)");
    let explain = |types: serde_json::Value, tags: serde_json::Value| {
        let store = store.clone();
        let sql = format!("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) {read_query}");
        async move {
            let rows: Vec<String> = sqlx::query_scalar(&sql)
                .bind("0")
                .bind(0_i64)
                .bind(100_i64)
                .bind([Json(types)])
                .bind([Json(tags)])
                .fetch_all(store.pool())
                .await
                .expect("explain");
            rows.join("\n")
        }
    };
    let tagged = explain(json!([]), json!(["user:42"])).await;
    assert!(
        tagged.contains("Bitmap Index Scan on annals_events_tags_idx"),
        "{tagged}"
    );
    assert!(!tagged.contains("Seq Scan"), "{tagged}");
    let both = explain(json!(["Type0"]), json!(["flight:7", "seat:7"])).await;
    assert!(
        both.contains("Bitmap Index Scan on annals_events_tags_idx"),
        "{both}"
    );
    assert!(!both.contains("Seq Scan"), "{both}");
    // A query of one tagged item has its own statement.
    let tagged_only = include_str!("../src/sql/read_query_tagged.sql")
        .replace("($1, $2)", "($1::text::xid8, $2)");
    let rows: Vec<String> = sqlx::query_scalar(&format!(
        "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) {tagged_only}"
    ))
    .bind("0")
    .bind(0_i64)
    .bind(100_i64)
    .bind(["Type0"])
    .bind(["user:42"])
    .fetch_all(store.pool())
    .await
    .expect("explain");
    let one = rows.join("\n");
    assert!(
        one.contains("Bitmap Index Scan on annals_events_tags_idx"),
        "{one}"
    );
    assert!(!one.contains("Seq Scan"), "{one}");
    let typed = explain(json!(["Rare"]), json!([])).await;
    assert!(typed.contains("on annals_events_type_idx"), "{typed}");
    assert!(!typed.contains("Rows Removed by Filter: 100000"), "{typed}");
    assert!(!typed.contains("Seq Scan"), "{typed}");

    // The conditional append's check, one tagged condition, in a transaction
    // rolled back: the function's plans do not show in EXPLAIN, but the
    // transaction's own statistics count the scans it made.
    let append_if = include_str!("../src/sql/append_if.sql").replace("$5,", "$5::text[]::xid8[],");
    let new = event("Claimed", &["user:42"]);
    let mut tx = store.pool().begin().await.expect("begin");
    let kind: String = sqlx::query_scalar(&format!("SELECT r_kind FROM ({append_if}) a"))
        .bind("")
        .bind(["claims"])
        .bind([None::<Uuid>])
        .bind([1_i32])
        .bind(["0"])
        .bind([0_i64])
        .bind([false])
        .bind([1_i32])
        .bind([1_i32])
        .bind([new.event_id])
        .bind([&new.event_type])
        .bind([1_i32])
        .bind([Json(&new.payload)])
        .bind([Json(&new.metadata)])
        .bind([Json(&new.tags)])
        .bind([1_i32])
        .bind([Json(json!([]))])
        .bind([Json(json!(["user:42"]))])
        .bind(false)
        .bind("10000ms")
        .fetch_one(&mut *tx)
        .await
        .expect("the conditional append");
    assert_eq!(kind, "failed", "user:42 has events");
    let (seq_scans, index_scans): (i64, i64) = sqlx::query_as(
        "SELECT seq_scan, coalesce(idx_scan, 0) FROM pg_stat_xact_user_tables
          WHERE relid = 'annals_events'::regclass",
    )
    .fetch_one(&mut *tx)
    .await
    .expect("statistics");
    assert_eq!(seq_scans, 0, "the check scans no table");
    assert!(index_scans > 0, "it looks events up by index");
    tx.rollback().await.expect("rollback");
    pg.cleanup().await;
}

/// `count` events written in one statement: ten types, a user tag on a third
/// of them, flight and seat tags on another third, one event of a rare type.
async fn fill(store: &PgEventStore, count: i64) {
    sqlx::query(
        "INSERT INTO annals_events (stream_id, stream_version, event_id, event_type, schema_version, payload, tags)
         SELECT 's' || (g % 1000), g / 1000 + 1, gen_random_uuid(), 'Type' || (g % 10), 1, '{}',
                CASE WHEN g % 3 = 0 THEN ARRAY['user:' || (g % 5000), 'flight:' || (g % 200)]
                     WHEN g % 3 = 1 THEN ARRAY['flight:' || (g % 200), 'seat:' || (g % 37)]
                     ELSE '{}'::text[] END
           FROM generate_series(0, $1 - 1) g",
    )
    .bind(count)
    .execute(store.pool())
    .await
    .expect("fill");
    store
        .append("rare", ExpectedVersion::Any, vec![event("Rare", &["rare"])])
        .await
        .expect("append");
    sqlx::query("ANALYZE annals_events")
        .execute(store.pool())
        .await
        .expect("analyze");
}
