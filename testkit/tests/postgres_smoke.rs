//! Smoke tests of the PostgreSQL test setup: sqlx against the real server at
//! `DATABASE_URL`, each test in its own schema.

use std::time::Duration;

use annals_testkit::postgres;
use serde_json::{Value, json};
use sqlx::postgres::{PgListener, PgPool};
use uuid::Uuid;

const RECV_TIMEOUT: Duration = Duration::from_secs(10);

async fn current_schema(pool: &PgPool) -> String {
    sqlx::query_scalar("SELECT current_schema()")
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn schema_exists(pool: &PgPool, schema: &str) -> bool {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
        .bind(schema)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn postgres_table_roundtrip_in_own_schema() {
    let Some(pg) = postgres().await else { return };
    assert!(pg.schema().starts_with("t_"), "schema {}", pg.schema());
    assert_eq!(current_schema(pg.pool()).await, pg.schema());

    sqlx::query(
        "CREATE TABLE smoke (
             seq bigserial PRIMARY KEY,
             id uuid NOT NULL UNIQUE,
             body jsonb NOT NULL,
             at timestamptz NOT NULL DEFAULT now()
         )",
    )
    .execute(pg.pool())
    .await
    .unwrap();

    let id = Uuid::new_v4();
    let body = json!({ "flight": "LH400", "seats": [1, 2, 3] });
    let seq: i64 = sqlx::query_scalar("INSERT INTO smoke (id, body) VALUES ($1, $2) RETURNING seq")
        .bind(id)
        .bind(&body)
        .fetch_one(pg.pool())
        .await
        .unwrap();
    assert_eq!(seq, 1);

    let (read_id, read_body): (Uuid, Value) =
        sqlx::query_as("SELECT id, body FROM smoke WHERE seq = $1")
            .bind(seq)
            .fetch_one(pg.pool())
            .await
            .unwrap();
    assert_eq!(read_id, id);
    assert_eq!(read_body, body);

    // A duplicate is refused by the real server.
    let duplicate = sqlx::query("INSERT INTO smoke (id, body) VALUES ($1, '{}')")
        .bind(id)
        .execute(pg.pool())
        .await
        .unwrap_err();
    assert_eq!(
        duplicate
            .as_database_error()
            .and_then(|e| e.code())
            .as_deref(),
        Some("23505"),
        "{duplicate}"
    );

    // The table is in the test's schema, not in `public`.
    let schemas: Vec<String> = sqlx::query_scalar(
        "SELECT table_schema::text FROM information_schema.tables
         WHERE table_name = 'smoke' AND table_schema IN ($1, 'public')",
    )
    .bind(pg.schema())
    .fetch_all(pg.pool())
    .await
    .unwrap();
    assert_eq!(schemas, vec![pg.schema().to_owned()]);

    pg.cleanup().await;
}

#[tokio::test]
async fn postgres_schemas_isolate_tests_and_are_dropped() {
    let Some(a) = postgres().await else { return };
    let Some(b) = postgres().await else { return };
    assert_ne!(a.schema(), b.schema());

    for (pg, rows) in [(&a, 1), (&b, 3)] {
        sqlx::query("CREATE TABLE items (n int)")
            .execute(pg.pool())
            .await
            .unwrap();
        sqlx::query("INSERT INTO items SELECT generate_series(1, $1)")
            .bind(rows)
            .execute(pg.pool())
            .await
            .unwrap();
    }

    // Pools built from the connect options or the URL land in the same schema.
    let from_options = a.pool_with(2).await;
    let from_url = PgPool::connect(b.url()).await.unwrap();
    assert_eq!(current_schema(&from_options).await, a.schema());
    assert_eq!(current_schema(&from_url).await, b.schema());
    let count = |pool: PgPool| async move {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM items")
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    assert_eq!(count(from_options.clone()).await, 1);
    assert_eq!(count(from_url.clone()).await, 3);
    from_options.close().await;
    from_url.close().await;

    // Explicit cleanup drops the schema.
    let (a_schema, b_schema) = (a.schema().to_owned(), b.schema().to_owned());
    a.cleanup().await;
    assert!(!schema_exists(b.pool(), &a_schema).await);

    // So does dropping the value (best effort, on its own connection).
    assert!(schema_exists(b.pool(), &b_schema).await);
    drop(b);
    let Some(c) = postgres().await else { return };
    assert!(!schema_exists(c.pool(), &b_schema).await);
}

#[tokio::test]
async fn postgres_listen_notify_roundtrip() {
    let Some(pg) = postgres().await else { return };
    let channel = pg.channel("smoke");

    let mut listener = PgListener::connect_with(pg.pool()).await.unwrap();
    // The listener's connection uses the same connect options, hence the same schema.
    let listener_schema: String = sqlx::query_scalar("SELECT current_schema()")
        .fetch_one(&mut listener)
        .await
        .unwrap();
    assert_eq!(listener_schema, pg.schema());
    listener.listen(&channel).await.unwrap();

    // A notification sent inside a transaction is delivered at commit, so one sent
    // outside it meanwhile arrives first.
    let mut tx = pg.pool().begin().await.unwrap();
    sqlx::query("SELECT pg_notify($1, 'in-transaction')")
        .bind(&channel)
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("SELECT pg_notify($1, 'outside')")
        .bind(&channel)
        .execute(pg.pool())
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let mut payloads = Vec::new();
    for _ in 0..2 {
        let notification = tokio::time::timeout(RECV_TIMEOUT, listener.recv())
            .await
            .expect("no notification within 10 s")
            .unwrap();
        assert_eq!(notification.channel(), channel);
        payloads.push(notification.payload().to_owned());
    }
    assert_eq!(payloads, ["outside", "in-transaction"]);

    // A rolled-back notification is never delivered: the next one is the later one.
    let mut tx = pg.pool().begin().await.unwrap();
    sqlx::query("SELECT pg_notify($1, 'rolled-back')")
        .bind(&channel)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    sqlx::query("SELECT pg_notify($1, 'after')")
        .bind(&channel)
        .execute(pg.pool())
        .await
        .unwrap();
    let notification = tokio::time::timeout(RECV_TIMEOUT, listener.recv())
        .await
        .expect("no notification within 10 s")
        .unwrap();
    assert_eq!(notification.payload(), "after");

    drop(listener);
    pg.cleanup().await;
}
