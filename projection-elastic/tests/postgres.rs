//! End to end on the real stores: events in PostgreSQL (dead letters and the
//! lease included), documents in Elasticsearch or OpenSearch.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use annals::EventStore;
use annals::projection::{
    FailurePolicy, Projection, ProjectionRunner, ProjectionStore, RunnerError, RunnerProgress,
    RunnerState,
};
use annals_elastic::{IndexWriter, ReadModel, ReadModelOptions};
use annals_postgres::PgEventStore;
use annals_testkit::{PgTest, SearchTest};
use common::*;
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Both servers, or `None` (skipped) when either is missing.
async fn servers() -> Option<(PgTest, PgEventStore, SearchTest)> {
    let pg = annals_testkit::postgres().await?;
    let es = annals_testkit::search().await?;
    let store = PgEventStore::options()
        .notify_channel(pg.channel("events"))
        .listener_application_name(format!("annals-listener-{}", pg.schema()))
        .poll_interval(Duration::from_millis(100))
        .from_pool(pg.pool().clone())
        .expect("store options");
    store.migrate().await.expect("migrate");
    Some((pg, store, es))
}

fn read_model(es: &SearchTest) -> ReadModel<Tallies> {
    ReadModel::new(es.client().clone(), Tallies::v(1))
        .with_prefix(es.prefix())
        .with_options(ReadModelOptions {
            build_runner: fast_runner(FailurePolicy::Stop { max_attempts: 1 }),
            ..ReadModelOptions::default()
        })
}

async fn wait_for(
    status: &mut watch::Receiver<RunnerProgress>,
    what: &str,
    done: impl Fn(&RunnerProgress) -> bool,
) -> RunnerProgress {
    let waited = tokio::time::timeout(Duration::from_secs(60), status.wait_for(|s| done(s)))
        .await
        .ok()
        .and_then(Result::ok)
        .map(|s| s.clone());
    waited.unwrap_or_else(|| panic!("timed out waiting for {what}: {:?}", *status.borrow()))
}

/// Takes the projection's claim from the runner that holds it, as when
/// that runner froze past its expiry and another claimed it: an intruder
/// holds it for a moment, then lets it go. The old holder's next write is
/// fenced. Returns whether a holder was found.
async fn steal_lease(store: &PgEventStore, projection: &str) -> bool {
    let owners = store.partition_owners(projection).await.unwrap();
    let Some(holder) = owners.first().and_then(|o| o.owner.clone()) else {
        return false;
    };
    store.release_claims(projection, &holder).await.unwrap();
    store
        .claim(projection, 1, "intruder", Duration::from_secs(60))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    store.release_claims(projection, "intruder").await.unwrap();
    true
}

struct Runner {
    task: JoinHandle<Result<(), RunnerError>>,
    status: watch::Receiver<RunnerProgress>,
}

fn spawn_runner(
    store: &PgEventStore,
    projector: IndexWriter<Tallies>,
    shutdown: &CancellationToken,
) -> Runner {
    let runner = ProjectionRunner::new(store.clone(), Arc::new(projector)).with_options(
        annals::projection::RunnerOptions {
            batch_size: 20,
            ..fast_runner(FailurePolicy::DeadLetter { max_attempts: 3 })
        },
    );
    let status = runner.progress();
    let shutdown = shutdown.clone();
    let task = tokio::spawn(async move { runner.run(shutdown).await });
    Runner { task, status }
}

#[tokio::test]
async fn search_postgres_failover_keeps_every_event_exactly_once() {
    let Some((pg, store, es)) = servers().await else {
        return;
    };
    seed(&store, 20, 2).await;
    let tallies = read_model(&es);
    let first = tallies.open(&store).await.unwrap();
    let name = first.name();
    let shutdown = CancellationToken::new();
    let mut runners = vec![
        spawn_runner(&store, first, &shutdown),
        spawn_runner(&store, tallies.open(&store).await.unwrap(), &shutdown),
    ];

    // Writers append all along, in small transactions.
    let writing = Arc::new(AtomicBool::new(true));
    let written = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..3)
        .map(|w| {
            let (store, writing, written) = (store.clone(), writing.clone(), written.clone());
            tokio::spawn(async move {
                let mut k = 0_usize;
                while writing.load(Ordering::SeqCst) {
                    let item = format!("{:04}", (k * 7 + w) % 20);
                    let n = (k % 5) as i64 + 1;
                    append(&store, &item, vec![event("Added", json!({ "n": n }))]).await;
                    written.fetch_add(1, Ordering::SeqCst);
                    k += 1;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        })
        .collect();

    // Leaders seen over time, by runner index.
    let leaders = Arc::new(Mutex::new(BTreeSet::new()));
    let leader = |runners: &[Runner]| {
        runners
            .iter()
            .position(|r| r.status.borrow().state == RunnerState::Running)
    };
    let wait_leader = |runners: &[Runner]| {
        let statuses: Vec<_> = runners.iter().map(|r| r.status.clone()).collect();
        async move {
            for _ in 0..3000 {
                if let Some(i) = statuses
                    .iter()
                    .position(|s| s.borrow().state == RunnerState::Running)
                {
                    return i;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!("no runner leads");
        }
    };
    let a = wait_leader(&runners).await;
    leaders.lock().unwrap().insert(a);
    tokio::time::sleep(Duration::from_millis(500)).await;

    // 1. The leader loses its claim: it must stop writing; the other takes
    //    over (or it takes the lease back).
    assert!(
        steal_lease(&store, &name).await,
        "the lease's claim was not found"
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let b = wait_leader(&runners).await;
    leaders.lock().unwrap().insert(b);

    // 2. The leader's process dies; the standby takes over.
    let dead = runners.remove(b);
    dead.task.abort();
    let _ = dead.task.await;
    let c = wait_leader(&runners).await;
    leaders.lock().unwrap().insert(c + usize::from(c >= b));
    tokio::time::sleep(Duration::from_millis(500)).await;

    writing.store(false, Ordering::SeqCst);
    for writer in writers {
        writer.await.unwrap();
    }
    assert!(written.load(Ordering::SeqCst) > 50, "the writers wrote");
    pg.settle().await;
    let head = store.head().await.unwrap();
    let mut status = runners[0].status.clone();
    wait_for(&mut status, "the survivor to catch up", |s| {
        s.checkpoint == head
    })
    .await;
    assert_eq!(leader(&runners), Some(0));
    shutdown.cancel();
    for runner in runners {
        runner.task.await.unwrap().unwrap();
    }
    assert!(
        leaders.lock().unwrap().len() >= 2,
        "leadership moved: {:?}",
        leaders.lock().unwrap()
    );
    assert!(store.dead_letters(&name).await.unwrap().is_empty());

    let docs = dump(es.client(), &tallies.alias()).await;
    assert_eq!(docs.len(), 20);
    assert_match_store(&store, &docs).await;

    es.cleanup().await;
    pg.cleanup().await;
}

#[tokio::test]
async fn search_postgres_crash_and_dead_letters() {
    let Some((pg, store, es)) = servers().await else {
        return;
    };
    seed(&store, 15, 3).await;
    append(
        &store,
        "0007",
        vec![
            event("Poison", json!({})),
            event("Added", json!({ "n": 5 })),
        ],
    )
    .await;
    append(&store, "0008", vec![event("Added", json!({ "n": 2 }))]).await;
    let tallies = read_model(&es);
    // The first build crashes after its first _bulk, before any checkpoint.
    tallies
        .prepare(&annals::memory::MemoryStore::new())
        .await
        .unwrap();
    let index = tallies.live_index().await.unwrap().unwrap();
    let crashing = CrashAfterWrite::on_batch(tallies.writer_for(&index), 1);
    let name = crashing.name();
    let options = annals::projection::RunnerOptions {
        batch_size: 1000,
        ..fast_runner(FailurePolicy::DeadLetter { max_attempts: 2 })
    };
    let crash = ProjectionRunner::new(store.clone(), Arc::new(crashing)).with_options(options);
    assert!(matches!(
        crash.catch_up().await,
        Err(RunnerError::Fatal { .. })
    ));
    assert_eq!(store.load_checkpoint(&name).await.unwrap(), None);
    let first = dump(es.client(), &index).await;
    assert_eq!(first.len(), 15, "the crashed batch reached the index");

    // Restarted: the batch again, the poison dead-lettered in PostgreSQL.
    let projector = tallies.writer_for(&index);
    let healed = projector.projection().healed.clone();
    let runner = ProjectionRunner::new(store.clone(), Arc::new(projector)).with_options(options);
    runner.catch_up().await.unwrap();
    let dead_letters = store.dead_letters(&name).await.unwrap();
    assert_eq!(dead_letters.len(), 2, "{dead_letters:?}");
    assert!(
        dead_letters[0]
            .error
            .as_deref()
            .unwrap()
            .contains("poisoned on purpose")
    );
    assert_eq!(dead_letters[0].attempts, 2);
    let mut docs = dump(es.client(), &index).await;
    let sick = docs.remove("0007").unwrap();
    assert_match_store(&store, &docs).await; // everything else exactly once
    assert_eq!(
        sick.0,
        1 + 3 + u64::from(7 % 3 == 0),
        "0007 stopped before the poison"
    );

    // Fixed; an operator asks for a retry; the live runner applies it.
    healed.store(true, Ordering::SeqCst);
    assert_eq!(store.retry_dead_letters(&name).await.unwrap(), 2);
    let projector = tallies.writer_for(&index);
    projector.projection().healed.store(true, Ordering::SeqCst);
    let live = ProjectionRunner::new(store.clone(), Arc::new(projector)).with_options(options);
    let mut status = live.progress();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { live.run(shutdown).await }
    });
    wait_for(&mut status, "running", |s| s.state == RunnerState::Running).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !store.dead_letters(&name).await.unwrap().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the retry did not happen"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    shutdown.cancel();
    task.await.unwrap().unwrap();
    assert!(store.dead_letters(&name).await.unwrap().is_empty());
    let docs = dump(es.client(), &index).await;
    assert_match_store(&store, &docs).await;

    es.cleanup().await;
    pg.cleanup().await;
}
