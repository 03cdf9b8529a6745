//! `append_if`: the semantics of conditional appends (the same as the memory
//! store's), with and without group commit; events of transactions still
//! running when the append began count; a long transaction makes it time out
//! naming that transaction; a stream moved by a younger transaction; groups
//! of conditional appends that decide each other.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use annals::memory::MemoryStore;
use annals::{
    AppendCondition, AppendOptions, EventStore, ExpectedVersion, NewEvent, Position, Query,
    QueryItem, StoreError,
};
use annals_postgres::{AppendIfTimeout, PgEventStore};
use tokio::sync::Barrier;
use uuid::Uuid;

fn event(event_type: &str, tags: &[&str]) -> NewEvent {
    let mut event = common::event(event_type, 0);
    event.tags = tags.iter().map(|t| (*t).to_owned()).collect();
    event
}

fn claim(name: &str) -> NewEvent {
    event("UsernameClaimed", &[&format!("user:{name}")])
}

/// "No event about this user after `after`."
fn about(name: &str, after: Option<Position>) -> AppendCondition {
    AppendCondition {
        fail_if_events_match: Query::new().or(QueryItem::tagged([format!("user:{name}")])),
        after,
    }
}

/// "No `UsernameReleased` event after `after`": an item without a tag, so
/// the append waits for older transactions instead of locking tags.
fn untagged(after: Option<Position>) -> AppendCondition {
    AppendCondition {
        fail_if_events_match: Query::new().or(QueryItem::types(["UsernameReleased"])),
        after,
    }
}

fn failed_at(result: Result<annals::Appended, StoreError>) -> Position {
    match result {
        Err(StoreError::ConditionFailed { position }) => position,
        other => panic!("expected ConditionFailed, got {other:?}"),
    }
}

/// A conformance-style case, for any store: when a conditional append
/// succeeds, when it fails and what it names, and that retries are answered
/// by idempotency before the condition is looked at.
async fn append_if_semantics<S: EventStore>(store: &S) {
    let none = AppendOptions::default();
    // Nothing about alice: appended.
    let first = vec![claim("alice")];
    let a = store
        .append_if("claim-1", first.clone(), about("alice", None), none.clone())
        .await
        .expect("first claim");
    assert_eq!(
        (a.first_version, a.stream_version, a.repeated),
        (1, 1, false)
    );

    // Again, with new events: fails, naming alice's claim; writes nothing.
    let again = store
        .append_if(
            "claim-2",
            vec![claim("alice")],
            about("alice", None),
            none.clone(),
        )
        .await;
    assert_eq!(failed_at(again), a.position);
    assert_eq!(store.stream_version("claim-2").await.unwrap(), 0);

    // After the claim it saw: appended.
    let b = store
        .append_if(
            "claim-2",
            vec![claim("alice")],
            about("alice", Some(a.position)),
            none.clone(),
        )
        .await
        .expect("after what it saw");
    assert!(b.position > a.position);
    // Two matching events after a position: the first is named.
    let twice = store
        .append_if(
            "claim-3",
            vec![claim("alice")],
            about("alice", None),
            none.clone(),
        )
        .await;
    assert_eq!(failed_at(twice), a.position, "the first matching event");
    let once = store
        .append_if(
            "claim-3",
            vec![claim("alice")],
            about("alice", Some(a.position)),
            none.clone(),
        )
        .await;
    assert_eq!(failed_at(once), b.position);

    // Unrelated events fail nothing: other tags, other types.
    store
        .append(
            "noise",
            ExpectedVersion::Any,
            vec![event("UsernameClaimed", &["user:bob"]), event("Other", &[])],
        )
        .await
        .expect("noise");
    let released = AppendCondition {
        fail_if_events_match: Query::new()
            .or(QueryItem::types(["UsernameReleased"]).and_tagged(["user:alice"])),
        after: None,
    };
    store
        .append_if("claim-4", vec![claim("carol")], released, none.clone())
        .await
        .expect("only released events of alice would fail it");
    store
        .append_if(
            "claim-4",
            vec![claim("dave")],
            about("dave", None),
            none.clone(),
        )
        .await
        .expect("nothing about dave");

    // No items: never fails. Every event: fails unless after the last one.
    let last = store
        .append_if(
            "claim-5",
            vec![claim("erin")],
            AppendCondition {
                fail_if_events_match: Query::new(),
                after: None,
            },
            none.clone(),
        )
        .await
        .expect("a query without items matches nothing");
    let all = store
        .append_if(
            "claim-5",
            vec![claim("erin")],
            AppendCondition {
                fail_if_events_match: Query::all(),
                after: None,
            },
            none.clone(),
        )
        .await;
    assert_eq!(
        failed_at(all),
        a.position,
        "every event: the first of the log"
    );
    let after_last = store
        .append_if(
            "claim-5",
            vec![claim("frank")],
            AppendCondition {
                fail_if_events_match: Query::all(),
                after: Some(last.position),
            },
            none.clone(),
        )
        .await
        .expect("nothing after the last event");
    assert_eq!(after_last.first_version, 2, "appended at the stream's end");

    // A retry of the first append (its events now match its own condition)
    // is answered by its event ids: repeated, the first outcome.
    let retry = store
        .append_if("claim-1", first.clone(), about("alice", None), none.clone())
        .await
        .expect("a retry by event ids");
    assert!(retry.repeated);
    assert_eq!(
        (retry.position, retry.stream_version),
        (a.position, a.stream_version)
    );
    // The same events in another stream are duplicates.
    let elsewhere = store
        .append_if("claim-6", first, about("zed", None), none.clone())
        .await;
    assert!(
        matches!(elsewhere, Err(StoreError::DuplicateEvent { ref stream, .. }) if stream == "claim-1"),
        "{elsewhere:?}"
    );

    // By command id: the retry carries new events and fails its condition,
    // but the command was recorded: repeated, the first outcome.
    let command = AppendOptions {
        command_id: Some(Uuid::now_v7()),
    };
    let g = store
        .append_if(
            "claim-7",
            vec![claim("gina")],
            about("gina", None),
            command.clone(),
        )
        .await
        .expect("with a command id");
    let retry = store
        .append_if("claim-7", vec![claim("gina")], about("gina", None), command)
        .await
        .expect("a retry by command id");
    assert!(retry.repeated);
    assert_eq!(retry.position, g.position);
    assert_eq!(store.stream_version("claim-7").await.unwrap(), 1);
}

#[tokio::test]
async fn memory_store_append_if_semantics() {
    append_if_semantics(&MemoryStore::new()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_append_if_semantics() {
    let Some((pg, store)) = common::store().await else {
        return;
    };
    append_if_semantics(&store).await;
    pg.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_append_if_semantics_without_group_commit() {
    let Some((pg, store)) = common::store_with(|o| o.group_commit(false)).await else {
        return;
    };
    append_if_semantics(&store).await;
    pg.cleanup().await;
}

/// A store whose conditional appends give up after 800 ms.
async fn impatient(group_commit: bool) -> Option<(annals_testkit::PgTest, PgEventStore)> {
    common::store_with(|o| {
        o.group_commit(group_commit)
            .append_if_timeout(Duration::from_millis(800))
    })
    .await
}

/// Opens a transaction that has an id (so every younger transaction waits
/// for it before checking a condition); returns it with its backend's pid.
async fn long_transaction(
    store: &PgEventStore,
) -> (sqlx::Transaction<'static, sqlx::Postgres>, i32) {
    let mut tx = store.pool().begin().await.expect("begin");
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut *tx)
        .await
        .expect("take an id");
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut *tx)
        .await
        .expect("pid");
    (tx, pid)
}

/// A matching event written by a transaction that was still running when the
/// conditional append began counts: the append waits for it and fails; had
/// it rolled back, the append succeeds. Ordinary appends do not wait.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_append_if_waits_for_older_transactions_and_sees_their_events() {
    for group_commit in [true, false] {
        let Some((pg, store)) = common::store_with(|o| o.group_commit(group_commit)).await else {
            return;
        };
        for commit in [true, false] {
            let name = format!("hank-{commit}");
            let (mut tx, _) = long_transaction(&store).await;
            let theirs = store
                .append_in_transaction(
                    &mut tx,
                    "older",
                    ExpectedVersion::Any,
                    vec![claim(&name)],
                    AppendOptions::default(),
                )
                .await
                .expect("append in the long transaction");
            let conditional = tokio::spawn({
                let store = store.clone();
                let name = name.clone();
                async move {
                    store
                        .append_if(
                            &name,
                            vec![claim(&name)],
                            about(&name, None),
                            Default::default(),
                        )
                        .await
                }
            });
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert!(
                !conditional.is_finished(),
                "it waits for the older transaction"
            );
            let started = Instant::now();
            store
                .append("unrelated", ExpectedVersion::Any, vec![claim("ivy")])
                .await
                .expect("an ordinary append meanwhile");
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "ordinary appends do not wait"
            );
            if commit {
                tx.commit().await.expect("commit");
                let result = conditional.await.expect("task");
                assert_eq!(
                    failed_at(result),
                    theirs.position,
                    "group commit {group_commit}"
                );
            } else {
                tx.rollback().await.expect("rollback");
                conditional
                    .await
                    .expect("task")
                    .expect("nothing matched: the older append rolled back");
            }
        }
        pg.cleanup().await;
    }
}

/// A transaction that stays open makes a conditional append that waits (a
/// condition item without a tag) give up after the timeout, naming it; once
/// it ends, the append goes through.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_append_if_times_out_naming_the_long_transaction() {
    for group_commit in [true, false] {
        let Some((pg, store)) = impatient(group_commit).await else {
            return;
        };
        let opened = Instant::now();
        let (tx, pid) = long_transaction(&store).await;
        let result = store
            .append_if(
                "jay",
                vec![claim("jay")],
                untagged(None),
                Default::default(),
            )
            .await;
        let Err(StoreError::Unavailable(error)) = result else {
            panic!("expected Unavailable, got {result:?}");
        };
        let message = error.to_string();
        let Some(AppendIfTimeout::HeldBack {
            waited,
            oldest_transaction: Some(oldest),
        }) = error.downcast_ref::<AppendIfTimeout>()
        else {
            panic!("expected HeldBack naming a transaction: {message}");
        };
        assert!(*waited >= Duration::from_millis(800), "{message}");
        // Ours, unless another test's transaction on the server is older.
        assert!(
            oldest.pid == pid || oldest.age >= opened.elapsed() - Duration::from_millis(100),
            "{message}"
        );
        assert!(
            message.contains(&format!("pid {}", oldest.pid)),
            "{message}"
        );
        assert_eq!(
            store.stream_version("jay").await.unwrap(),
            0,
            "nothing written"
        );
        drop(tx); // rolls back
        store
            .append_if(
                "jay",
                vec![claim("jay")],
                untagged(None),
                Default::default(),
            )
            .await
            .expect("after the long transaction");
        pg.cleanup().await;
    }
}

/// A younger transaction appends to the conditional append's stream and
/// commits while the conditional append waits (a condition item without a
/// tag): the conditional append's
/// events cannot take its transaction's id as label any more (the stream's
/// events must stay in version order), so it runs again, and lands after.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_append_if_runs_again_when_its_stream_moved() {
    for group_commit in [true, false] {
        let Some((pg, store)) = common::store_with(|o| o.group_commit(group_commit)).await else {
            return;
        };
        let (tx, _) = long_transaction(&store).await;
        let conditional = tokio::spawn({
            let store = store.clone();
            async move {
                store
                    .append_if(
                        "kim",
                        vec![claim("kim")],
                        untagged(None),
                        Default::default(),
                    )
                    .await
            }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        let younger = store
            .append(
                "kim",
                ExpectedVersion::Any,
                vec![event("Noted", &["other"])],
            )
            .await
            .expect("a younger append to the same stream");
        tx.commit().await.expect("commit");
        let done = conditional.await.expect("task").expect("appended");
        assert_eq!(done.first_version, 2);
        assert!(
            done.position > younger.position,
            "{done:?} after {younger:?}"
        );
        let stream = store.read_stream("kim", 1, 10).await.expect("read");
        assert_eq!(stream.len(), 2);
        assert!(stream[0].position < stream[1].position);
        pg.cleanup().await;
    }
}

/// Many tasks claim one name at once, round after round: in each round one
/// wins, whether the others meet its event in the log or in their group,
/// and every loser names the winner's event.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_concurrent_claims_of_one_name_have_one_winner() {
    let Some((pg, store)) = common::store().await else {
        return;
    };
    const TASKS: usize = 16;
    for round in 0..10 {
        let name = format!("round-{round}");
        let barrier = Arc::new(Barrier::new(TASKS));
        let tasks: Vec<_> = (0..TASKS)
            .map(|task| {
                let store = store.clone();
                let barrier = barrier.clone();
                let name = name.clone();
                tokio::spawn(async move {
                    barrier.wait().await;
                    store
                        .append_if(
                            &format!("{name}-{task}"),
                            vec![claim(&name)],
                            about(&name, None),
                            Default::default(),
                        )
                        .await
                })
            })
            .collect();
        let mut won = Vec::new();
        let mut lost = Vec::new();
        for task in tasks {
            match task.await.expect("task") {
                Ok(done) => won.push(done.position),
                Err(StoreError::ConditionFailed { position }) => lost.push(position),
                Err(other) => panic!("{other}"),
            }
        }
        assert_eq!(won.len(), 1, "round {round}: {won:?}");
        assert!(
            lost.iter().all(|p| *p == won[0]),
            "round {round}: {lost:?} vs {won:?}"
        );
    }
    pg.cleanup().await;
}

/// The same conditional append sent twice at once (a client's retry racing
/// the original) is written once; both are told where.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_conditional_append_racing_its_retry_is_written_once() {
    let Some((pg, store)) = common::store().await else {
        return;
    };
    for round in 0..10 {
        let name = format!("retry-{round}");
        let events = vec![claim(&name)];
        let barrier = Arc::new(Barrier::new(2));
        let tasks: Vec<_> = (0..2)
            .map(|_| {
                let store = store.clone();
                let barrier = barrier.clone();
                let events = events.clone();
                let name = name.clone();
                tokio::spawn(async move {
                    barrier.wait().await;
                    store
                        .append_if(&name, events, about(&name, None), Default::default())
                        .await
                        .expect("both are answered")
                })
            })
            .collect();
        let mut answers = Vec::new();
        for task in tasks {
            answers.push(task.await.expect("task"));
        }
        assert_eq!(answers[0].position, answers[1].position);
        assert_eq!(
            answers.iter().filter(|a| a.repeated).count(),
            1,
            "{answers:?}"
        );
        assert_eq!(store.stream_version(&name).await.unwrap(), 1);
    }
    pg.cleanup().await;
}

/// A waiting conditional append holds no lock: an older transaction that
/// appends to the same stream while it waits is not blocked by it (with a
/// lock on the stream row, each would wait for the other until the
/// timeout), and the conditional append lands after it.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_append_if_holds_no_lock_while_it_waits() {
    for group_commit in [true, false] {
        let Some((pg, store)) = common::store_with(|o| o.group_commit(group_commit)).await else {
            return;
        };
        let (mut tx, _) = long_transaction(&store).await;
        let conditional = tokio::spawn({
            let store = store.clone();
            async move {
                store
                    .append_if(
                        "lee",
                        vec![claim("lee")],
                        untagged(None),
                        Default::default(),
                    )
                    .await
            }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        let older = tokio::time::timeout(
            Duration::from_secs(2),
            store.append_in_transaction(
                &mut tx,
                "lee",
                ExpectedVersion::Any,
                vec![event("Noted", &[])],
                AppendOptions::default(),
            ),
        )
        .await
        .expect("not blocked by the waiting conditional append")
        .expect("append in the older transaction");
        assert_eq!(older.first_version, 1);
        tx.commit().await.expect("commit");
        let done = conditional.await.expect("task").expect("appended");
        assert_eq!(done.first_version, 2);
        assert!(done.position > older.position);
        pg.cleanup().await;
    }
}

/// A condition on tags locks them instead of waiting: a long transaction
/// that wrote nothing with those tags holds it back not at all, one that
/// appended an event with such a tag holds it until it ends (then the
/// append sees that event and fails), and past the timeout the append
/// gives up, saying a lock held it.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_append_if_on_tags_waits_only_for_the_writers_of_its_tags() {
    for group_commit in [true, false] {
        let Some((pg, store)) = impatient(group_commit).await else {
            return;
        };
        let (mut tx, _) = long_transaction(&store).await;
        let started = Instant::now();
        store
            .append_if(
                "may",
                vec![claim("may")],
                about("may", None),
                Default::default(),
            )
            .await
            .expect("an unrelated long transaction holds nothing back");
        assert!(started.elapsed() < Duration::from_millis(800));

        let theirs = store
            .append_in_transaction(
                &mut tx,
                "older",
                ExpectedVersion::Any,
                vec![claim("ned")],
                AppendOptions::default(),
            )
            .await
            .expect("an event with the tag, in the long transaction");
        let result = store
            .append_if(
                "ned",
                vec![claim("ned")],
                about("ned", None),
                Default::default(),
            )
            .await;
        let Err(StoreError::Unavailable(error)) = result else {
            panic!("expected Unavailable, got {result:?}");
        };
        assert!(
            matches!(
                error.downcast_ref::<AppendIfTimeout>(),
                Some(AppendIfTimeout::Locked { waited }) if *waited >= Duration::from_millis(700)
            ),
            "{error}"
        );
        assert_eq!(
            store.stream_version("ned").await.unwrap(),
            0,
            "nothing written"
        );

        let conditional = tokio::spawn({
            let store = store.clone();
            async move {
                store
                    .append_if(
                        "ned",
                        vec![claim("ned")],
                        about("ned", None),
                        Default::default(),
                    )
                    .await
            }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            !conditional.is_finished(),
            "it waits for the writer of its tag"
        );
        tx.commit().await.expect("commit");
        assert_eq!(failed_at(conditional.await.expect("task")), theirs.position);
        pg.cleanup().await;
    }
}
