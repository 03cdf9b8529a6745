//! The index lifecycle against a real server: build behind the alias,
//! blue/green rebuilds under reads, forced rebuilds, resumed builds, queries.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use annals::memory::MemoryStore;
use annals::projection::{FailurePolicy, ProjectionRunner, RunnerError, RunnerOptions};
use annals::{EventStore, ExpectedVersion};
use annals_elastic::elasticsearch::indices::{IndicesExistsParts, IndicesGetSettingsParts};
use annals_elastic::{ElasticError, ReadModel, ReadModelOptions, SearchRequest};
use annals_testkit::SearchTest;
use common::*;
use serde_json::{Value, json};

fn read_model(es: &SearchTest, tallies: Tallies) -> ReadModel<Tallies> {
    let options = ReadModelOptions {
        build_runner: fast_runner(FailurePolicy::Stop { max_attempts: 1 }),
        ..ReadModelOptions::default()
    };
    ReadModel::new(es.client().clone(), tallies)
        .with_prefix(es.prefix())
        .with_options(options)
}

async fn exists(es: &SearchTest, index: &str) -> bool {
    es.client()
        .indices()
        .exists(IndicesExistsParts::Index(&[index]))
        .send()
        .await
        .unwrap()
        .status_code()
        .is_success()
}

async fn index_settings(es: &SearchTest, index: &str) -> Value {
    let response = es
        .client()
        .indices()
        .get_settings(IndicesGetSettingsParts::Index(&[index]))
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    body[index]["settings"]["index"].clone()
}

fn everything(size: usize) -> SearchRequest {
    SearchRequest::new(
        json!({ "match_all": {} }),
        vec![json!({ "id": "asc" })],
        size,
    )
}

#[tokio::test]
async fn search_open_builds_the_first_index_behind_the_alias() {
    let Some(es) = annals_testkit::search().await else {
        return;
    };
    let store = MemoryStore::new();
    let adds = 3;
    let mut expected = seed(&store, 30, adds).await;
    let tallies = read_model(&es, Tallies::v(1));
    assert_eq!(tallies.alias(), es.index("tallies"));
    assert_eq!(tallies.live_index().await.unwrap(), None);
    assert!(matches!(
        tallies.get("0001").await,
        Err(ElasticError::MissingIndex(_))
    ));

    let built = tallies.prepare(&store).await.unwrap().expect("a build");
    let v1 = es.index("tallies_v1");
    assert_eq!(built.index, v1);
    assert_eq!(built.previous, None);
    assert_eq!(tallies.live_index().await.unwrap(), Some(v1.clone()));
    assert_eq!(tallies.projection_name(&v1), "tallies_v1");
    assert_eq!(
        store.load_checkpoint("tallies_v1").await.unwrap(),
        Some(built.checkpoint)
    );
    assert_tallies(&dump(es.client(), &v1).await, &expected, adds);
    // Serving settings are back: the projection's replicas and refresh interval.
    let settings = index_settings(&es, &v1).await;
    assert_eq!(settings["number_of_replicas"], "0", "{settings}");
    assert_eq!(settings["refresh_interval"], "100ms", "{settings}");

    // Open again: nothing to build, a projector for the live index.
    assert_eq!(tallies.prepare(&store).await.unwrap(), None);
    let projector = tallies.open(&store).await.unwrap();
    assert_eq!(projector.index(), v1);

    // Live: new events are searchable once the checkpoint moved.
    append(&store, "0001", vec![event("Added", json!({ "n": 1000 }))]).await;
    append(
        &store,
        "new",
        vec![event("Created", json!({ "name": "new one" }))],
    )
    .await;
    let runner = ProjectionRunner::new(store.clone(), Arc::new(projector))
        .with_options(fast_runner(FailurePolicy::Stop { max_attempts: 1 }));
    runner.catch_up().await.unwrap();
    let got = tallies.get("0001").await.unwrap().unwrap();
    assert_eq!(got.total, expected["0001"].1 + 1000);
    let hit = tallies
        .search(&SearchRequest::new(
            json!({ "match": { "name": "one" } }),
            vec![json!({ "id": "asc" })],
            10,
        ))
        .await
        .unwrap();
    assert_eq!(hit.docs.len(), 1);
    assert_eq!(hit.docs[0].id, "new");
    assert_eq!(tallies.get("missing").await.unwrap(), None);

    // Pages cover every document once, in order.
    expected.insert("new".into(), ("new one".into(), 0));
    let mut seen = Vec::new();
    let mut request = everything(7);
    loop {
        let page = tallies.search(&request).await.unwrap();
        assert!(page.docs.len() <= 7);
        seen.extend(page.docs.into_iter().map(|d| d.id));
        match page.next {
            Some(next) => request = everything(7).after(next),
            None => break,
        }
    }
    let ids: Vec<String> = expected.keys().cloned().collect();
    assert_eq!(seen, ids);
    // A cursor of another sort is refused.
    let page = tallies.search(&everything(7)).await.unwrap();
    let other_sort = SearchRequest::new(
        json!({ "match_all": {} }),
        vec![json!({ "total": "asc" }), json!({ "id": "asc" })],
        7,
    )
    .after(page.next.unwrap());
    assert!(matches!(
        tallies.search(&other_sort).await,
        Err(ElasticError::InvalidCursor(_))
    ));

    es.cleanup().await;
}

#[tokio::test]
async fn search_version_bump_rebuilds_blue_green_while_queries_keep_working() {
    let Some(es) = annals_testkit::search().await else {
        return;
    };
    let store = MemoryStore::new();
    let adds = 6;
    let expected = seed(&store, 250, adds).await;
    let v1 = read_model(&es, Tallies::v(1));
    v1.prepare(&store).await.unwrap().expect("v1 built");
    let v1_index = es.index("tallies_v1");

    // A reader hammers the alias during the whole rebuild.
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let done = done.clone();
        let reader = v1.clone();
        tokio::spawn(async move {
            let mut built_by = BTreeSet::new();
            let mut reads = 0_u32;
            while !done.load(Ordering::SeqCst) {
                let page = reader
                    .search(&everything(20))
                    .await
                    .unwrap_or_else(|e| panic!("search {reads} failed: {e}"));
                assert_eq!(page.docs.len(), 20, "search {reads} came back short");
                built_by.extend(page.docs.iter().map(|d| d.built_by));
                let one = reader
                    .get("0042")
                    .await
                    .unwrap_or_else(|e| panic!("get {reads} failed: {e}"));
                assert!(one.is_some(), "get {reads} found nothing");
                reads += 1;
            }
            (reads, built_by)
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;

    // Small batches: a build long enough for many reads.
    let options = ReadModelOptions {
        build_runner: RunnerOptions {
            batch_size: 25,
            ..fast_runner(FailurePolicy::Stop { max_attempts: 1 })
        },
        ..ReadModelOptions::default()
    };
    let v2 = ReadModel::new(es.client().clone(), Tallies::v(2))
        .with_prefix(es.prefix())
        .with_options(options);
    let built = v2.prepare(&store).await.unwrap().expect("v2 built");
    tokio::time::sleep(Duration::from_millis(100)).await;
    done.store(true, Ordering::SeqCst);
    let (reads, built_by) = reader.await.unwrap();

    let v2_index = es.index("tallies_v2");
    assert_eq!(built.index, v2_index);
    assert_eq!(built.previous.as_deref(), Some(v1_index.as_str()));
    assert!(reads >= 5, "only {reads} reads during the rebuild");
    assert_eq!(
        built_by,
        BTreeSet::from([1, 2]),
        "the reader saw v1, then v2"
    );
    assert_eq!(v2.live_index().await.unwrap(), Some(v2_index.clone()));
    assert!(!exists(&es, &v1_index).await, "the old index is gone");
    let docs = dump(es.client(), &v2_index).await;
    assert_tallies(&docs, &expected, adds);
    assert!(docs.values().all(|(_, d)| d["built_by"] == 2));
    // The old version's checkpoint is untouched; the new one has its own.
    assert!(store.load_checkpoint("tallies_v2").await.unwrap().is_some());

    // Old code started again refuses to roll the alias back.
    match v1.prepare(&store).await {
        Err(ElasticError::NewerVersionLive {
            live_version: 2,
            ours: 1,
            ..
        }) => {}
        other => panic!("expected NewerVersionLive, got {other:?}"),
    }

    es.cleanup().await;
}

#[tokio::test]
async fn search_forced_rebuild_builds_a_fresh_generation() {
    let Some(es) = annals_testkit::search().await else {
        return;
    };
    let store = MemoryStore::new();
    let adds = 2;
    let expected = seed(&store, 20, adds).await;
    let tallies = read_model(&es, Tallies::v(1));
    tallies.prepare(&store).await.unwrap();
    let first = dump(es.client(), &es.index("tallies_v1")).await;

    let built = tallies.rebuild(&store).await.unwrap();
    assert_eq!(built.index, es.index("tallies_v1_2"));
    assert_eq!(built.previous, Some(es.index("tallies_v1")));
    assert!(!exists(&es, &es.index("tallies_v1")).await);
    assert_eq!(
        store.load_checkpoint("tallies_v1_2").await.unwrap(),
        Some(built.checkpoint)
    );
    // Same events, same fold: the same documents, versions included.
    assert_eq!(dump(es.client(), &built.index).await, first);
    assert_tallies(&first, &expected, adds);
    // A live index of a later generation is current: open does not rebuild.
    assert_eq!(tallies.prepare(&store).await.unwrap(), None);
    assert_eq!(tallies.open(&store).await.unwrap().index(), built.index);

    let again = tallies.rebuild(&store).await.unwrap();
    assert_eq!(again.index, es.index("tallies_v1_3"));
    assert!(!exists(&es, &built.index).await);

    es.cleanup().await;
}

#[tokio::test]
async fn search_interrupted_build_resumes_without_swapping_early() {
    let Some(es) = annals_testkit::search().await else {
        return;
    };
    let store = MemoryStore::new();
    let adds = 2;
    let mut expected = seed(&store, 20, adds).await;
    append(&store, "0003", vec![event("Poison", json!({}))]).await;
    let tallies = read_model(&es, Tallies::v(1));

    // The stop policy stops the build at the poison event: no alias yet.
    match tallies.prepare(&store).await {
        Err(ElasticError::Build { index, source }) => {
            assert_eq!(index, es.index("tallies_v1"));
            assert!(matches!(*source, RunnerError::Stopped { .. }), "{source}");
        }
        other => panic!("expected a failed build, got {other:?}"),
    }
    assert_eq!(tallies.live_index().await.unwrap(), None);
    assert!(exists(&es, &es.index("tallies_v1")).await);

    // Fixed, the next start resumes the same index and swaps it in.
    tallies.projection().healed.store(true, Ordering::SeqCst);
    let built = tallies.prepare(&store).await.unwrap().expect("resumed");
    assert_eq!(built.index, es.index("tallies_v1"));
    let docs = dump(es.client(), &built.index).await;
    // The healed poison folds as one more event of 0003.
    let (version, poisoned) = &docs["0003"];
    assert_eq!(poisoned["events"], json!(2 + adds as u64 + 1));
    assert_eq!(*version, 2 + adds as u64 + 1);
    expected.remove("0003");
    let mut rest = docs.clone();
    rest.remove("0003");
    assert_tallies(&rest, &expected, adds);

    es.cleanup().await;
}

#[tokio::test]
async fn search_build_ends_when_the_log_ends_with_other_events() {
    let Some(es) = annals_testkit::search().await else {
        return;
    };
    let store = MemoryStore::new();
    let expected = seed(&store, 5, 1).await;
    // The last event of the log is not one the read model reads.
    store
        .append(
            "other-1",
            ExpectedVersion::Any,
            vec![event("Unrelated", json!({}))],
        )
        .await
        .unwrap();
    let tallies = read_model(&es, Tallies::v(1));
    let built = tokio::time::timeout(Duration::from_secs(20), tallies.prepare(&store))
        .await
        .expect("the build's catch-up never ended")
        .unwrap();
    assert!(built.is_some());
    assert_tallies(
        &dump(es.client(), &es.index("tallies_v1")).await,
        &expected,
        1,
    );
    es.cleanup().await;
}

#[tokio::test]
async fn search_concurrent_starts_build_once() {
    let Some(es) = annals_testkit::search().await else {
        return;
    };
    let store = MemoryStore::new();
    let adds = 3;
    let expected = seed(&store, 60, adds).await;
    let options = ReadModelOptions {
        build_runner: RunnerOptions {
            batch_size: 20,
            ..fast_runner(FailurePolicy::Stop { max_attempts: 1 })
        },
        build_poll: Duration::from_millis(20),
        ..ReadModelOptions::default()
    };
    let one = read_model(&es, Tallies::v(1)).with_options(options);
    let two = read_model(&es, Tallies::v(1)).with_options(options);
    let (a, b) = tokio::join!(one.prepare(&store), two.prepare(&store));
    let builds: Vec<_> = [a.unwrap(), b.unwrap()].into_iter().flatten().collect();
    assert_eq!(
        builds.len(),
        1,
        "one process builds, the other waits for it"
    );
    assert_eq!(
        one.live_index().await.unwrap(),
        Some(es.index("tallies_v1"))
    );
    assert_tallies(
        &dump(es.client(), &es.index("tallies_v1")).await,
        &expected,
        adds,
    );
    es.cleanup().await;
}
