//! Test support for annals: real PostgreSQL and real search servers, isolated per test.
//!
//! `annals-testkit` is a dev-dependency of the other annals crates. It never starts a
//! server itself; `scripts/test` does that (see `scripts/README.md`) and exports the
//! environment variables read here:
//!
//! | variable | meaning |
//! |---|---|
//! | `DATABASE_URL` | PostgreSQL the tests may use (`postgres://user:pass@host:port/db`). |
//! | `ELASTICSEARCH_URL` | Elasticsearch or OpenSearch the tests may use (`http://127.0.0.1:9251`). |
//! | `AMQP_URL` (or `RABBITMQ_URL`) | RabbitMQ the tests may use (`amqp://guest:guest@127.0.0.1:5673/%2f`). |
//! | `ANNALS_REQUIRE_SERVICES` | `1`: a missing or unreachable server **fails** the test (panics) instead of skipping it. Set by `scripts/test` when `CI` is set. |
//! | `ANNALS_SEARCH_FLAVOR` | `elasticsearch` (the default) or `opensearch`: what `ELASTICSEARCH_URL` is expected to be. |
//! | `ANNALS_EXPECT_SEARCH_VERSION` | Set by `scripts/test` when it started the search node itself: the exact version the smoke tests expect, and that the cluster has exactly one node. |
//! | `ANNALS_KEEP_TEST_DATA` | `1`: never drop test schemas or indexes (they are always kept when a test panics). |
//!
//! Each test gets its own namespace, so tests run in parallel against one server:
//!
//! * [`postgres()`] creates a fresh schema `t_<uuid>` and hands out a pool whose every
//!   connection has `search_path` set to it ([`PgTest`]).
//! * [`search()`] hands out a client and a fresh lowercase index prefix `t<uuid>_`
//!   ([`SearchTest`]); name every index, alias and index template of the test with it.
//! * [`rabbitmq()`] hands out the broker's URL and a fresh name prefix `t<uuid>.`
//!   ([`RabbitTest`]); name every exchange and queue of the test with [`RabbitTest::name`].
//!
//! When the test's value is dropped without a panic in flight, its schema, its
//! indexes and index templates, or its queues and exchanges, are deleted (best effort).
//! When the test panics they are kept, and their name is printed, so a failure can be
//! inspected. [`PgTest::cleanup`], [`SearchTest::cleanup`] and [`RabbitTest::cleanup`] do
//! the same explicitly and report errors.
//!
//! # The `search_` naming convention
//!
//! `scripts/test` runs the whole workspace against Elasticsearch 7.10.2, then runs it a
//! second time against OpenSearch 2.19.1 with `cargo test --workspace -- search_`, which
//! keeps only the tests whose name contains `search_`. So **every test that talks to a
//! search server must have a name starting with `search_`** (for example
//! `search_projection_rebuilds_index`), or it runs against Elasticsearch only.
//! Likewise PostgreSQL tests are named `postgres_...` by convention.
//!
//! # Example
//!
//! An integration test (`tests/*.rs`) with `annals-testkit`, `sqlx` and `tokio`
//! as dev-dependencies:
//!
//! ```no_run
//! use elasticsearch::{IndexParts, params::Refresh};
//! use serde_json::json;
//!
//! // #[tokio::test]
//! async fn postgres_counts_rows() {
//!     // `None`: no DATABASE_URL, the test is skipped (or panics under ANNALS_REQUIRE_SERVICES=1).
//!     let Some(pg) = annals_testkit::postgres().await else { return };
//!     // Unqualified names live in the test's own schema.
//!     sqlx::query("CREATE TABLE rows (id bigint PRIMARY KEY)")
//!         .execute(pg.pool())
//!         .await
//!         .unwrap();
//!     sqlx::query("INSERT INTO rows VALUES (1), (2)").execute(pg.pool()).await.unwrap();
//!     let n: i64 = sqlx::query_scalar("SELECT count(*) FROM rows")
//!         .fetch_one(pg.pool())
//!         .await
//!         .unwrap();
//!     assert_eq!(n, 2);
//!     pg.cleanup().await;
//! }
//!
//! // #[tokio::test]
//! async fn search_indexes_a_document() {
//!     let Some(es) = annals_testkit::search().await else { return };
//!     let index = es.index("flights"); // "t<uuid>_flights"
//!     es.client()
//!         .index(IndexParts::IndexId(&index, "1"))
//!         .refresh(Refresh::True)
//!         .body(json!({ "code": "LH400" }))
//!         .send()
//!         .await
//!         .unwrap()
//!         .error_for_status_code()
//!         .unwrap();
//!     es.cleanup().await;
//! }
//! # fn main() {}
//! ```

#![warn(missing_docs)]

mod postgres;
mod rabbitmq;
mod search;

pub use postgres::{PgTest, postgres};
pub use rabbitmq::{RabbitTest, rabbitmq};
pub use search::{SearchFlavor, SearchTest, search};

use std::future::Future;
use std::time::Duration;

/// `DATABASE_URL`: the PostgreSQL server tests may use.
pub const DATABASE_URL_ENV: &str = "DATABASE_URL";
/// `ELASTICSEARCH_URL`: the Elasticsearch or OpenSearch server tests may use.
pub const ELASTICSEARCH_URL_ENV: &str = "ELASTICSEARCH_URL";
/// `AMQP_URL`: the RabbitMQ broker tests may use.
pub const AMQP_URL_ENV: &str = "AMQP_URL";
/// `RABBITMQ_URL`: read when `AMQP_URL` is not set.
pub const RABBITMQ_URL_ENV: &str = "RABBITMQ_URL";
/// `ANNALS_REQUIRE_SERVICES`: when `1`, missing servers fail tests instead of skipping them.
pub const REQUIRE_SERVICES_ENV: &str = "ANNALS_REQUIRE_SERVICES";
/// `ANNALS_SEARCH_FLAVOR`: `elasticsearch` (default) or `opensearch`, what `ELASTICSEARCH_URL` is.
pub const SEARCH_FLAVOR_ENV: &str = "ANNALS_SEARCH_FLAVOR";
/// `ANNALS_EXPECT_SEARCH_VERSION`: set by `scripts/test` to the exact version of the
/// single search node it started.
pub const EXPECT_SEARCH_VERSION_ENV: &str = "ANNALS_EXPECT_SEARCH_VERSION";
/// `ANNALS_KEEP_TEST_DATA`: when `1`, test schemas and indexes are never dropped.
pub const KEEP_TEST_DATA_ENV: &str = "ANNALS_KEEP_TEST_DATA";

/// How long connecting to a server may take before it counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long dropping a test's schema or indexes may take.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether missing servers must fail tests (`ANNALS_REQUIRE_SERVICES` is set to
/// something other than empty, `0`, `false` or `no`).
pub fn services_required() -> bool {
    env_flag(REQUIRE_SERVICES_ENV)
}

/// The value of `ANNALS_EXPECT_SEARCH_VERSION`, if set: the exact search server version
/// `scripts/test` started (and the promise that the cluster has exactly one node).
pub fn expected_search_version() -> Option<String> {
    env_nonempty(EXPECT_SEARCH_VERSION_ENV)
}

fn keep_test_data() -> bool {
    env_flag(KEEP_TEST_DATA_ENV)
}

fn env_flag(name: &str) -> bool {
    match std::env::var(name) {
        Ok(v) => {
            let v = v.trim();
            !(v.is_empty()
                || v == "0"
                || v.eq_ignore_ascii_case("false")
                || v.eq_ignore_ascii_case("no"))
        }
        Err(_) => false,
    }
}

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// A server is missing: panic under `ANNALS_REQUIRE_SERVICES`, otherwise say the test
/// is skipped and return `None`.
fn unavailable<T>(service: &str, reason: &str) -> Option<T> {
    if services_required() {
        panic!(
            "{service} is required ({REQUIRE_SERVICES_ENV} is set) but {reason}. \
             Run scripts/test, which starts the servers, or point the URL at a running server."
        );
    }
    eprintln!(
        "skipping: {reason} ({service} not available; run scripts/test, or set \
         {REQUIRE_SERVICES_ENV}=1 to make this a failure)"
    );
    None
}

/// Runs the future `make` returns to completion, on a new current-thread runtime in a
/// new thread.
///
/// Used from `Drop`, which may run inside the test's runtime (where blocking on a
/// future would panic) and may not await.
fn block_on_fresh_runtime<C, F>(make: C) -> Result<(), String>
where
    C: FnOnce() -> F + Send + 'static,
    F: Future<Output = Result<(), String>>,
{
    std::thread::spawn(move || {
        let fut = make();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot build a tokio runtime: {e}"))?;
        runtime.block_on(async {
            match tokio::time::timeout(CLEANUP_TIMEOUT, fut).await {
                Ok(result) => result,
                Err(_) => Err(format!("timed out after {CLEANUP_TIMEOUT:?}")),
            }
        })
    })
    .join()
    .unwrap_or_else(|_| Err("the cleanup thread panicked".to_owned()))
}
