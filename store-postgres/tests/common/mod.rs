//! Shared helpers of the PostgreSQL store's integration tests.
#![allow(dead_code)]

use std::time::Duration;

use annals::NewEvent;
use annals::testing::new_event;
use annals_postgres::{PgEventStore, PgStoreOptions};
use annals_testkit::PgTest;
use serde_json::json;

/// A fresh schema with the annals tables and a store on it whose
/// notifications use a channel of the test's own. `None` when no server is
/// configured (the testkit skips, or fails under ANNALS_REQUIRE_SERVICES=1).
pub async fn store() -> Option<(PgTest, PgEventStore)> {
    store_with(|options| options).await
}

/// Like [`store`], with options adjusted by `configure`.
pub async fn store_with(
    configure: impl FnOnce(PgStoreOptions) -> PgStoreOptions,
) -> Option<(PgTest, PgEventStore)> {
    let pg = annals_testkit::postgres().await?;
    let store = configure(options_for(&pg))
        .from_pool(pg.pool().clone())
        .expect("store options");
    store.migrate().await.expect("migrate");
    Some((pg, store))
}

/// The options every test starts from: the test's own channel and a unique
/// listener application name.
pub fn options_for(pg: &PgTest) -> PgStoreOptions {
    PgStoreOptions::new()
        .notify_channel(pg.channel("events"))
        .listener_application_name(format!("annals-listener-{}", pg.schema()))
        .poll_interval(Duration::from_millis(200))
}

/// A small event of the given type.
pub fn event(event_type: &str, n: u64) -> NewEvent {
    new_event(event_type, json!({ "n": n }))
}

/// `count` small events.
pub fn events(count: usize) -> Vec<NewEvent> {
    (0..count as u64).map(|n| event("Ticked", n)).collect()
}
