//! End to end: the projection runner driving the Elasticsearch index writer
//! through crashes, poison and undecodable events, outages and failover.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use annals::memory::MemoryStore;
use annals::projection::{
    FailurePolicy, Projection, ProjectionRunner, ProjectionStore, RunnerError, RunnerProgress,
    RunnerState,
};
use annals::{EventStore, Position};
use annals_elastic::{IndexWriter, ReadModel, ReadModelOptions};
use annals_testkit::SearchTest;
use common::*;
use serde_json::json;
use tokio::io::copy_bidirectional;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

fn read_model(
    es: &SearchTest,
    client: annals_elastic::elasticsearch::Elasticsearch,
) -> ReadModel<Tallies> {
    ReadModel::new(client, Tallies::v(1))
        .with_prefix(es.prefix())
        .with_options(ReadModelOptions {
            build_runner: fast_runner(FailurePolicy::Stop { max_attempts: 1 }),
            ..ReadModelOptions::default()
        })
}

/// Waits (at most 30 s) until the runner's status satisfies `done`.
async fn wait_for(
    status: &mut watch::Receiver<RunnerProgress>,
    what: &str,
    done: impl Fn(&RunnerProgress) -> bool,
) -> RunnerProgress {
    let waited = tokio::time::timeout(Duration::from_secs(30), status.wait_for(|s| done(s)))
        .await
        .ok()
        .and_then(Result::ok)
        .map(|s| s.clone());
    waited.unwrap_or_else(|| panic!("timed out waiting for {what}: {:?}", *status.borrow()))
}

async fn head(store: &MemoryStore) -> Position {
    store.head().await.unwrap()
}

#[tokio::test]
async fn search_crash_after_bulk_before_checkpoint_still_applies_once() {
    let Some(es) = annals_testkit::search().await else {
        return;
    };
    let store = MemoryStore::new();
    let adds = 4;
    let expected = seed(&store, 60, adds).await;
    let tallies = read_model(&es, es.client().clone());
    // The alias over an empty index (the store gets its events afterwards in
    // real life; here the build is skipped by building from an empty store).
    tallies.prepare(&MemoryStore::new()).await.unwrap();
    let index = tallies.live_index().await.unwrap().unwrap();
    let name = tallies.projection_name(&index);

    let crashing = CrashAfterWrite::on_batch(tallies.writer_for(&index), 3);
    let options = fast_runner(FailurePolicy::Stop { max_attempts: 1 });
    let runner = ProjectionRunner::new(store.clone(), Arc::new(crashing)).with_options(options);
    match runner.catch_up().await {
        Err(RunnerError::Fatal { source, .. }) => {
            assert!(source.to_string().contains("simulated crash"), "{source}")
        }
        other => panic!("expected the simulated crash, got {other:?}"),
    }
    // Some batches are checkpointed; the crashed one is in the index, not
    // in the checkpoint.
    let checkpoint = store.load_checkpoint(&name).await.unwrap().unwrap();
    let events = all_events(&store).await;
    let checkpointed = events.iter().filter(|e| e.position <= checkpoint).count();
    assert!(
        checkpointed >= 2 && checkpointed < events.len(),
        "{checkpointed}"
    );
    let written = dump(es.client(), &index).await;
    let folded: usize = written
        .values()
        .map(|(_, d)| d["events"].as_u64().unwrap() as usize)
        .sum();
    assert!(folded > checkpointed, "the crashed batch reached the index");

    // The restarted process re-delivers the third batch: no double counting.
    let restarted = ProjectionRunner::new(store.clone(), Arc::new(tallies.writer_for(&index)))
        .with_options(options);
    assert_eq!(restarted.catch_up().await.unwrap(), head(&store).await);
    let after_crash = dump(es.client(), &index).await;
    assert_tallies(&after_crash, &expected, adds);

    // The same as a build that never crashed, versions included.
    let clean = es.index("clean");
    create_index(es.client(), &clean).await;
    let projector =
        IndexWriter::new(es.client().clone(), Arc::new(Tallies::v(1)), &clean).with_name("clean");
    ProjectionRunner::new(store.clone(), Arc::new(projector))
        .with_options(options)
        .catch_up()
        .await
        .unwrap();
    assert_eq!(dump(es.client(), &clean).await, after_crash);

    es.cleanup().await;
}

#[tokio::test]
async fn search_poison_event_is_dead_lettered_then_retried_on_request() {
    let Some(es) = annals_testkit::search().await else {
        return;
    };
    let store = MemoryStore::new();
    let adds = 2;
    let mut expected = seed(&store, 12, adds).await;
    append(
        &store,
        "0003",
        vec![
            event("Poison", json!({})),
            event("Added", json!({ "n": 100 })),
        ],
    )
    .await;
    append(&store, "0004", vec![event("Added", json!({ "n": 1 }))]).await;
    let tallies = read_model(&es, es.client().clone());
    tallies.prepare(&MemoryStore::new()).await.unwrap();
    let projector = tallies.open(&store).await.unwrap();
    let name = projector.name();
    let healed = projector.projection().healed.clone();
    let runner = Arc::new(
        ProjectionRunner::new(store.clone(), Arc::new(projector))
            .with_options(fast_runner(FailurePolicy::DeadLetter { max_attempts: 2 })),
    );
    let mut status = runner.progress();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn({
        let runner = runner.clone();
        let shutdown = shutdown.clone();
        async move { runner.run(shutdown).await }
    });
    let head = head(&store).await;
    let dead_letter_status = wait_for(
        &mut status,
        "the poison to be dead-lettered and the rest applied",
        |s| s.dead_letters == 2 && s.checkpoint == head,
    )
    .await;
    assert!(
        dead_letter_status.retries >= 1,
        "the poison was tried again before dead-lettering"
    );

    // The poison and the event behind it wait in the dead letters.
    let dead_letters = store.dead_letters(&name).await.unwrap();
    assert_eq!(dead_letters.len(), 2);
    assert_eq!(dead_letters[0].event.event_type, "Poison");
    let error = dead_letters[0].error.as_deref().unwrap();
    assert!(
        error.contains("poisoned on purpose") && error.contains("item-0003"),
        "{error}"
    );
    assert_eq!(dead_letters[0].attempts, 2);
    assert_eq!(
        (
            dead_letters[1].event.event_type.as_str(),
            dead_letters[1].error.as_deref()
        ),
        ("Added", None)
    );
    // Its document stopped before it; the others went on.
    let docs = dump(es.client(), &tallies.alias()).await;
    assert_eq!(docs["0003"].1["total"], json!(expected["0003"].1));
    expected.get_mut("0004").unwrap().1 += 1;
    assert_eq!(docs["0004"].1["total"], json!(expected["0004"].1));

    // The cause fixed, an operator asks for a retry: applied in order, once.
    healed.store(true, Ordering::SeqCst);
    assert_eq!(store.retry_dead_letters(&name).await.unwrap(), 2);
    wait_for(&mut status, "the retry", |s| s.dead_letters == 0).await;
    shutdown.cancel();
    task.await.unwrap().unwrap();
    let docs = dump(es.client(), &tallies.alias()).await;
    let (version, sick) = &docs["0003"];
    assert_eq!(sick["total"], json!(expected["0003"].1 + 100));
    assert_eq!(*version, sick["events"].as_u64().unwrap());
    assert!(store.dead_letters(&name).await.unwrap().is_empty());

    es.cleanup().await;
}

#[tokio::test]
async fn search_undecodable_event_is_dead_lettered_naming_the_event_and_why() {
    let Some(es) = annals_testkit::search().await else {
        return;
    };
    let store = MemoryStore::new();
    let adds = 2;
    let expected = seed(&store, 6, adds).await;
    // `n` is no number: the payload does not decode into `TallyEvent::Added`.
    append(
        &store,
        "0002",
        vec![
            event("Added", json!({ "n": "ten" })),
            event("Added", json!({ "n": 1 })),
        ],
    )
    .await;
    let tallies = read_model(&es, es.client().clone());
    tallies.prepare(&MemoryStore::new()).await.unwrap();
    let writer = tallies.open(&store).await.unwrap();
    let name = writer.name();
    ProjectionRunner::new(store.clone(), Arc::new(writer))
        .with_options(fast_runner(FailurePolicy::DeadLetter { max_attempts: 1 }))
        .catch_up()
        .await
        .unwrap();

    let dead_letters = store.dead_letters(&name).await.unwrap();
    assert_eq!(dead_letters.len(), 2, "{dead_letters:?}");
    let undecodable = &dead_letters[0];
    assert_eq!(
        (
            undecodable.event.stream_id.as_str(),
            undecodable.event.stream_version
        ),
        ("item-0002", 2 + adds as u64)
    );
    let error = undecodable.error.as_deref().unwrap();
    let version = format!("Added (schema v1) at version {}", 2 + adds);
    for part in [
        // The event: type, schema version, stream version, stream.
        "cannot decode ",
        &version,
        "of stream \"item-0002\"",
        "TallyEvent",
        // Why, and the cause underneath (serde's message).
        "payload of \"Added\" (schema version 1) does not decode",
        "invalid type: string \"ten\", expected i64",
    ] {
        assert!(error.contains(part), "{error:?} lacks {part:?}");
    }
    // The event behind it waits with it.
    assert_eq!(dead_letters[1].event.stream_version, 3 + adds as u64);
    assert_eq!(dead_letters[1].error, None);
    // Its document stopped before it; the others were built.
    let docs = dump(es.client(), &tallies.alias()).await;
    assert_eq!(docs.len(), expected.len());
    assert_eq!(docs["0002"].1["total"], json!(expected["0002"].1));
    assert_eq!(docs["0002"].0, 1 + adds as u64);

    es.cleanup().await;
}

#[tokio::test]
async fn search_stop_policy_stops_at_the_poison_event() {
    let Some(es) = annals_testkit::search().await else {
        return;
    };
    let store = MemoryStore::new();
    let adds = 2;
    let mut expected = seed(&store, 8, adds).await;
    append(&store, "0005", vec![event("Poison", json!({}))]).await;
    let after = seed_more(&store, &mut expected, adds).await;
    let tallies = read_model(&es, es.client().clone());
    tallies.prepare(&MemoryStore::new()).await.unwrap();
    let projector = tallies.open(&store).await.unwrap();
    let name = projector.name();
    let healed = projector.projection().healed.clone();
    let options = fast_runner(FailurePolicy::Stop { max_attempts: 2 });
    let runner = ProjectionRunner::new(store.clone(), Arc::new(projector)).with_options(options);
    match runner.catch_up().await {
        Err(RunnerError::Stopped {
            stream,
            event_type,
            stream_version,
            error,
            ..
        }) => {
            assert_eq!(
                (stream.as_str(), event_type.as_str()),
                ("item-0005", "Poison")
            );
            assert_eq!(stream_version, 2 + adds as u64);
            assert!(error.contains("poisoned on purpose"), "{error}");
        }
        other => panic!("expected a stop at the poison event, got {other:?}"),
    }
    let checkpoint = store.load_checkpoint(&name).await.unwrap().unwrap();
    assert!(
        checkpoint < head(&store).await,
        "the checkpoint stays before the poison"
    );

    // Fixed and restarted, it goes on from there; nothing counted twice.
    healed.store(true, Ordering::SeqCst);
    let live = tallies.live_index().await.unwrap().unwrap();
    let restarted = ProjectionRunner::new(store.clone(), Arc::new(tallies.writer_for(&live)))
        .with_options(options);
    restarted.catch_up().await.unwrap();
    let mut docs = dump(es.client(), &live).await;
    assert!(docs.contains_key(&after));
    // The healed poison counts as one more event of 0005.
    let (version, poisoned) = docs.remove("0005").unwrap();
    let events = 1 + adds as u64 + u64::from(expected["0005"].0.starts_with("renamed")) + 1;
    assert_eq!(
        (version, poisoned["events"].as_u64()),
        (events, Some(events))
    );
    assert_eq!(poisoned["total"], json!(expected["0005"].1));
    expected.remove("0005");
    assert_tallies(&docs, &expected, adds);

    es.cleanup().await;
}

/// A TCP proxy in front of the search server that can be cut: open
/// connections are dropped and new ones closed at once.
struct Proxy {
    url: String,
    up: watch::Sender<bool>,
}

impl Proxy {
    async fn start(upstream: &str) -> Proxy {
        let upstream = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (up, _) = watch::channel(true);
        let state = up.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                let mut up = state.subscribe();
                if !*up.borrow() {
                    drop(client);
                    continue;
                }
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = copy_bidirectional(&mut client, &mut server) => {}
                        _ = up.wait_for(|up| !up) => {}
                    }
                });
            }
        });
        Proxy { url, up }
    }

    fn cut(&self) {
        self.up.send_replace(false);
    }

    fn restore(&self) {
        self.up.send_replace(true);
    }
}

#[tokio::test]
async fn search_outage_is_retried_until_the_server_is_back() {
    let Some(es) = annals_testkit::search().await else {
        return;
    };
    let proxy = Proxy::start(es.url()).await;
    let through_proxy = annals_elastic::connect(&proxy.url).unwrap();
    let store = MemoryStore::new();
    let adds = 2;
    let mut expected = seed(&store, 10, adds).await;
    let tallies = read_model(&es, through_proxy);
    let projector = tallies.open(&store).await.unwrap();
    let index = projector.index().to_owned();
    let runner = Arc::new(
        ProjectionRunner::new(store.clone(), Arc::new(projector))
            .with_options(fast_runner(FailurePolicy::Stop { max_attempts: 1 })),
    );
    let mut status = runner.progress();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn({
        let runner = runner.clone();
        let shutdown = shutdown.clone();
        async move { runner.run(shutdown).await }
    });
    wait_for(&mut status, "running", |s| s.state == RunnerState::Running).await;

    proxy.cut();
    let before = head(&store).await;
    let more = seed_more(&store, &mut expected, adds).await;
    let failing = wait_for(&mut status, "failed attempts", |s| {
        s.retries >= 3 && s.last_error.is_some()
    })
    .await;
    assert_eq!(
        failing.checkpoint, before,
        "the checkpoint holds during the outage"
    );
    assert_eq!(failing.state, RunnerState::Running);
    // Nothing of the new events reached the index (read directly).
    let docs = dump(es.client(), &index).await;
    assert!(!docs.contains_key(&more));

    proxy.restore();
    let head = head(&store).await;
    wait_for(&mut status, "catching up after the outage", |s| {
        s.checkpoint == head
    })
    .await;
    shutdown.cancel();
    task.await.unwrap().unwrap();
    let docs = dump(es.client(), &index).await;
    assert_tallies(&docs, &expected, adds);

    es.cleanup().await;
}

/// One more item with `adds` events `Added {n: 1}`; `expected` follows.
/// Returns its id.
async fn seed_more(
    store: &MemoryStore,
    expected: &mut std::collections::BTreeMap<String, (String, i64)>,
    adds: usize,
) -> String {
    let id = format!("{:04}", expected.len());
    let name = format!("item {id}");
    let mut events = vec![event("Created", json!({ "name": name }))];
    events.extend((0..adds).map(|_| event("Added", json!({ "n": 1 }))));
    append(store, &id, events).await;
    expected.insert(id.clone(), (name, adds as i64));
    id
}

#[tokio::test]
async fn search_standby_runner_takes_over_when_the_active_one_dies() {
    let Some(es) = annals_testkit::search().await else {
        return;
    };
    let store = MemoryStore::new();
    let adds = 1;
    let mut expected = seed(&store, 10, adds).await;
    let tallies = read_model(&es, es.client().clone());
    let first = Arc::new(
        ProjectionRunner::new(store.clone(), Arc::new(tallies.open(&store).await.unwrap()))
            .with_options(fast_runner(FailurePolicy::Stop { max_attempts: 1 })),
    );
    let second = Arc::new(
        ProjectionRunner::new(store.clone(), Arc::new(tallies.open(&store).await.unwrap()))
            .with_options(fast_runner(FailurePolicy::Stop { max_attempts: 1 })),
    );
    let (mut first_status, mut second_status) = (first.progress(), second.progress());
    let first_task = tokio::spawn({
        let first = first.clone();
        async move { first.run(CancellationToken::new()).await }
    });
    wait_for(&mut first_status, "the first runner to lead", |s| {
        s.state == RunnerState::Running
    })
    .await;
    let shutdown = CancellationToken::new();
    let second_task = tokio::spawn({
        let second = second.clone();
        let shutdown = shutdown.clone();
        async move { second.run(shutdown).await }
    });
    wait_for(&mut second_status, "the second runner to stand by", |s| {
        s.state == RunnerState::Standby
    })
    .await;

    let more = seed_more(&store, &mut expected, adds).await;
    let head1 = head(&store).await;
    wait_for(&mut first_status, "the leader to apply", |s| {
        s.checkpoint == head1
    })
    .await;
    assert_eq!(second_status.borrow().state, RunnerState::Standby);
    assert_eq!(second_status.borrow().events_applied, 0);

    // The leader's process dies: its lease goes with it.
    first_task.abort();
    let _ = first_task.await;
    let last = seed_more(&store, &mut expected, adds).await;
    let head2 = head(&store).await;
    wait_for(&mut second_status, "the standby to take over", |s| {
        s.state == RunnerState::Running && s.checkpoint == head2
    })
    .await;
    shutdown.cancel();
    second_task.await.unwrap().unwrap();
    let docs = dump(es.client(), &tallies.alias()).await;
    assert!(docs.contains_key(&more) && docs.contains_key(&last));
    assert_tallies(&docs, &expected, adds);

    es.cleanup().await;
}

#[tokio::test]
async fn search_live_runner_follows_the_alias_after_a_rebuild_elsewhere() {
    let Some(es) = annals_testkit::search().await else {
        return;
    };
    let store = MemoryStore::new();
    let adds = 2;
    let mut expected = seed(&store, 10, adds).await;
    let tallies = read_model(&es, es.client().clone());
    let runners = Arc::new(std::sync::Mutex::new(Vec::new()));
    let shutdown = CancellationToken::new();
    let task = tokio::spawn({
        let tallies = tallies.clone();
        let store = store.clone();
        let runners = runners.clone();
        let shutdown = shutdown.clone();
        async move {
            let options = fast_runner(FailurePolicy::Stop { max_attempts: 1 });
            tallies
                .run(store, options, shutdown, |runner| {
                    runners
                        .lock()
                        .unwrap()
                        .push((runner.name().to_owned(), runner.progress()));
                })
                .await
        }
    });
    let observed = |i: usize| {
        let runners = runners.clone();
        async move {
            loop {
                if let Some(found) = runners.lock().unwrap().get(i).cloned() {
                    return found;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    let (name, mut status) = observed(0).await;
    assert_eq!(name, "tallies_v1");
    let head1 = head(&store).await;
    wait_for(&mut status, "the first index to be current", |s| {
        s.checkpoint == head1
    })
    .await;

    // Another process (the CLI) rebuilds; then new events arrive.
    let built = read_model(&es, es.client().clone())
        .rebuild(&store)
        .await
        .unwrap();
    assert_eq!(built.index, es.index("tallies_v1_2"));
    let more = seed_more(&store, &mut expected, adds).await;
    let (name, mut status) = tokio::time::timeout(Duration::from_secs(30), observed(1))
        .await
        .expect("the runner did not follow the alias");
    assert_eq!(name, "tallies_v1_2");
    let head2 = head(&store).await;
    wait_for(&mut status, "the new index to be current", |s| {
        s.checkpoint == head2
    })
    .await;
    assert!(tallies.get(&more).await.unwrap().is_some());
    shutdown.cancel();
    task.await.unwrap().unwrap();
    assert_tallies(&dump(es.client(), &built.index).await, &expected, adds);

    es.cleanup().await;
}
