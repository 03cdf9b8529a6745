//! The core conformance suites (event store and projection store) against
//! `PgEventStore`, one fresh schema per case.

mod common;

use std::sync::Arc;

use annals::testing::conformance;
use annals_postgres::NotifyMode;
use annals_testkit::PgTest;
use tokio::sync::Mutex;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_passes_the_conformance_suite() {
    run_suite(Suite::EventStore, NotifyMode::InTransaction).await;
}

/// The same with notifications sent after commit: subscriptions must still
/// see everything, woken by the store's notifier.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_passes_the_conformance_suite_with_notify_after_commit() {
    run_suite(Suite::EventStore, NotifyMode::AfterCommit).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_passes_the_projection_store_conformance_suite() {
    run_suite(Suite::ProjectionStore, NotifyMode::InTransaction).await;
}

/// Which of core's suites to run.
enum Suite {
    EventStore,
    ProjectionStore,
}

async fn run_suite(suite: Suite, mode: NotifyMode) {
    // Checks the server is there (skips or fails as the testkit decides).
    let Some((first, _)) = common::store_with(|o| o.notify_mode(mode)).await else {
        return;
    };
    // Cases run one after the other: each new case's factory call drops the
    // previous case's schema and closes its pool, so connections stay few.
    let previous: Arc<Mutex<Option<PgTest>>> = Arc::new(Mutex::new(Some(first)));
    let factory = || {
        let previous = Arc::clone(&previous);
        async move {
            if let Some(done) = previous.lock().await.take() {
                done.cleanup().await;
            }
            let (pg, store) = common::store_with(|o| o.notify_mode(mode))
                .await
                .expect("the server answered a moment ago");
            *previous.lock().await = Some(pg);
            store
        }
    };
    match suite {
        Suite::EventStore => conformance::run(factory).await,
        Suite::ProjectionStore => conformance::run_projection_store(factory).await,
    }
    if let Some(last) = previous.lock().await.take() {
        last.cleanup().await;
    }
}
