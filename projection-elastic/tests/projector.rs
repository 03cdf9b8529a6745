//! The bulk writer and the projector against a real server.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use annals::memory::MemoryStore;
use annals::projection::{Projection, ProjectionError};
use annals_elastic::elasticsearch::GetParts;
use annals_elastic::{
    BulkLimits, BulkWriter, DocWrite, IndexWriter, ItemResult, RefreshPolicy, WriterOptions,
};
use common::*;
use serde_json::{Value, json};

fn tally(id: &str, total: i64) -> Value {
    json!({ "id": id, "name": id, "total": total, "events": 1, "built_by": 1 })
}

fn index_op(id: &str, version: u64, total: i64) -> DocWrite {
    DocWrite::Index {
        id: id.into(),
        version,
        source: tally(id, total),
    }
}

#[tokio::test]
async fn search_bulk_writer_splits_and_reports_each_item() {
    let Some(es) = annals_testkit::search().await else {
        return;
    };
    let index = es.index("bulk");
    create_index(es.client(), &index).await;
    // Two operations per request, and few enough bytes that some go alone.
    let writer = BulkWriter::new(es.client().clone())
        .with_limits(BulkLimits {
            max_operations: 2,
            max_bytes: 300,
        })
        .with_refresh(RefreshPolicy::Immediate);

    let first = writer
        .write(
            &index,
            &[
                index_op("a", 1, 1),
                index_op("b", 1, 1),
                index_op("c", 5, 5),
            ],
        )
        .await
        .unwrap();
    assert_eq!(first, vec![ItemResult::Written; 3]);

    let results = writer
        .write(
            &index,
            &[
                index_op("a", 1, 100), // same version: already applied
                index_op("b", 2, 2),   // newer: written
                index_op("c", 4, 4),   // older: already applied
                DocWrite::Index {
                    id: "d".into(),
                    version: 1,
                    source: json!({ "id": "d", "total": "many" }), // the mapping refuses
                },
                DocWrite::Index {
                    id: "e".into(),
                    version: 1,
                    source: json!({ "id": "e", "colour": "red" }), // strict: no new fields
                },
                DocWrite::Delete {
                    id: "b".into(),
                    version: 3,
                },
                DocWrite::Delete {
                    id: "zz".into(),
                    version: 1,
                }, // not there: fine
                DocWrite::Delete {
                    id: "c".into(),
                    version: 5,
                }, // not newer
            ],
        )
        .await
        .unwrap();
    assert_eq!(results[0], ItemResult::AlreadyApplied);
    assert_eq!(results[1], ItemResult::Written);
    assert_eq!(results[2], ItemResult::AlreadyApplied);
    match &results[3] {
        ItemResult::Rejected {
            status: 400,
            error_type,
            reason,
        } => {
            assert_eq!(
                error_type.as_deref(),
                Some("mapper_parsing_exception"),
                "{reason}"
            );
            assert!(reason.contains("[total]"), "{reason}");
        }
        other => panic!("expected a mapping rejection, got {other:?}"),
    }
    match &results[4] {
        ItemResult::Rejected {
            status: 400,
            error_type,
            reason,
        } => {
            assert_eq!(
                error_type.as_deref(),
                Some("strict_dynamic_mapping_exception"),
                "{reason}"
            );
            assert!(reason.contains("colour"), "{reason}");
        }
        other => panic!("expected a strict mapping rejection, got {other:?}"),
    }
    assert_eq!(results[5], ItemResult::Written);
    assert_eq!(results[6], ItemResult::Written);
    assert_eq!(results[7], ItemResult::AlreadyApplied);

    let docs = dump(es.client(), &index).await;
    let summary: BTreeMap<&str, (u64, i64)> = docs
        .iter()
        .map(|(id, (v, s))| (id.as_str(), (*v, s["total"].as_i64().unwrap())))
        .collect();
    assert_eq!(summary, BTreeMap::from([("a", (1, 1)), ("c", (5, 5))]));

    // A deleted document's version is remembered (for `index.gc_deletes`):
    // replaying the write it deleted is refused.
    let replay = writer.write(&index, &[index_op("b", 2, 2)]).await.unwrap();
    assert_eq!(replay, vec![ItemResult::AlreadyApplied]);

    es.cleanup().await;
}

#[tokio::test]
async fn search_bulk_writer_to_an_unreachable_server_is_transient() {
    let client = annals_elastic::connect("http://127.0.0.1:9").unwrap();
    let error = BulkWriter::new(client)
        .write("nowhere", &[index_op("a", 1, 1)])
        .await
        .unwrap_err();
    assert!(error.is_transient(), "{error}");

    let projector = IndexWriter::new(
        annals_elastic::connect("http://127.0.0.1:9").unwrap(),
        Arc::new(Tallies::v(1)),
        "nowhere",
    );
    let store = MemoryStore::new();
    seed(&store, 1, 1).await;
    let batch = all_events(&store).await;
    assert!(matches!(
        projector.apply(&batch).await,
        Err(ProjectionError::Transient(_))
    ));
}

fn projector(
    es: &annals_testkit::SearchTest,
    index: &str,
    tallies: Tallies,
) -> IndexWriter<Tallies> {
    IndexWriter::new(es.client().clone(), Arc::new(tallies), index).with_options(WriterOptions {
        bulk: BulkLimits {
            max_operations: 7,
            max_bytes: 4096,
        },
        // `dump` refreshes; waiting for the 1 s refresh would only slow the test.
        refresh: RefreshPolicy::None,
        ..WriterOptions::default()
    })
}

#[tokio::test]
async fn search_projector_applies_each_event_exactly_once() {
    let Some(es) = annals_testkit::search().await else {
        return;
    };
    let store = MemoryStore::new();
    let adds = 5;
    let expected = seed(&store, 40, adds).await;
    let batch = all_events(&store).await;
    let index = es.index("once");
    create_index(es.client(), &index).await;
    let projector = projector(&es, &index, Tallies::v(1));
    assert_eq!(projector.name(), "tallies_v1");

    assert!(projector.apply(&batch).await.unwrap().failed.is_empty());
    let once = dump(es.client(), &index).await;
    assert_tallies(&once, &expected, adds);

    // The same batch again: identical documents, versions included.
    assert!(projector.apply(&batch).await.unwrap().failed.is_empty());
    assert_eq!(dump(es.client(), &index).await, once);

    // Overlapping, re-delivered slices, in any cut: still identical.
    for (start, end) in [(0, 100), (50, 150), (10, 20), (100, batch.len())] {
        let end = end.min(batch.len());
        assert!(
            projector
                .apply(&batch[start..end])
                .await
                .unwrap()
                .failed
                .is_empty()
        );
    }
    assert_eq!(dump(es.client(), &index).await, once);

    // A fresh index fed the batch in two halves matches the one fed at once.
    let halves = es.index("halves");
    create_index(es.client(), &halves).await;
    let other = projector_for_halves(&es, &halves);
    let (a, b) = batch.split_at(batch.len() / 2);
    other.apply(a).await.unwrap();
    other.apply(b).await.unwrap();
    assert_eq!(dump(es.client(), &halves).await, once);

    es.cleanup().await;
}

fn projector_for_halves(es: &annals_testkit::SearchTest, index: &str) -> IndexWriter<Tallies> {
    projector(es, index, Tallies::v(1))
}

#[tokio::test]
async fn search_projector_stops_a_document_at_its_failing_event() {
    let Some(es) = annals_testkit::search().await else {
        return;
    };
    let store = MemoryStore::new();
    append(
        &store,
        "ok",
        vec![
            event("Created", json!({"name": "ok"})),
            event("Added", json!({"n": 1})),
        ],
    )
    .await;
    append(
        &store,
        "sick",
        vec![
            event("Created", json!({"name": "sick"})),
            event("Added", json!({"n": 1})),
            event("Poison", json!({})),
            event("Added", json!({"n": 10})),
        ],
    )
    .await;
    append(&store, "ok", vec![event("Added", json!({"n": 2}))]).await;
    append(&store, "orphan", vec![event("Added", json!({"n": 2}))]).await;
    let batch = all_events(&store).await;
    let index = es.index("poison");
    create_index(es.client(), &index).await;
    let projector = projector(&es, &index, Tallies::v(1));

    let applied = projector.apply(&batch).await.unwrap();
    let failed: Vec<(usize, String)> = applied
        .failed
        .iter()
        .map(|f| (f.index, annals::error::report(&*f.error)))
        .collect();
    assert_eq!(failed.len(), 2, "{failed:?}");
    let (poison, error) = &failed[0];
    assert_eq!(batch[*poison].event_type, "Poison");
    for part in ["Poison", "version 3", "item-sick", "poisoned on purpose"] {
        assert!(error.contains(part), "{error:?} lacks {part:?}");
    }
    let (orphan, error) = &failed[1];
    assert_eq!(batch[*orphan].stream_id, "item-orphan");
    assert!(error.contains("no Created before it"), "{error}");

    // The state before the failure is written; nothing after it.
    let docs = dump(es.client(), &index).await;
    let (version, sick) = &docs["sick"];
    assert_eq!((*version, sick["total"].as_i64()), (2, Some(1)));
    let (version, ok) = &docs["ok"];
    assert_eq!((*version, ok["total"].as_i64()), (3, Some(3)));
    assert!(!docs.contains_key("orphan"));

    // Healed, the same batch applies the rest, once (the orphan still fails).
    projector
        .projection()
        .healed
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let applied = projector.apply(&batch).await.unwrap();
    let failed: Vec<usize> = applied.failed.iter().map(|f| f.index).collect();
    assert_eq!(failed, vec![*orphan]);
    let docs = dump(es.client(), &index).await;
    let (version, sick) = &docs["sick"];
    assert_eq!(
        (*version, sick["total"].as_i64(), sick["events"].as_i64()),
        (4, Some(11), Some(4))
    );
    assert_eq!(docs["ok"].0, 3);

    es.cleanup().await;
}

#[tokio::test]
async fn search_projector_reports_mapping_errors_with_the_server_reason() {
    let Some(es) = annals_testkit::search().await else {
        return;
    };
    let store = MemoryStore::new();
    append(
        &store,
        "fine",
        vec![event("Created", json!({"name": "fine"}))],
    )
    .await;
    append(
        &store,
        "bad",
        vec![
            event("Created", json!({"name": "bad"})),
            event("Added", json!({"n": 4})),
            event("Bad", json!({})),
        ],
    )
    .await;
    let batch = all_events(&store).await;
    let index = es.index("mapping");
    create_index(es.client(), &index).await;
    let projector = projector(&es, &index, Tallies::v(1));

    let applied = projector.apply(&batch).await.unwrap();
    assert_eq!(applied.failed.len(), 1, "{:?}", applied.failed);
    let failed = &applied.failed[0];
    // The document's first event of the batch carries the failure: the
    // whole document state was refused.
    assert_eq!(batch[failed.index].stream_id, "item-bad");
    assert_eq!(batch[failed.index].stream_version, 1);
    let error = annals::error::report(&*failed.error);
    for part in ["mapper_parsing_exception", "[note]", "item-bad", "400"] {
        assert!(error.contains(part), "{error:?} lacks {part:?}");
    }
    let docs = dump(es.client(), &index).await;
    assert!(docs.contains_key("fine"));
    assert!(!docs.contains_key("bad"));

    es.cleanup().await;
}

#[tokio::test]
async fn search_projector_to_a_missing_index_is_fatal() {
    let Some(es) = annals_testkit::search().await else {
        return;
    };
    let store = MemoryStore::new();
    seed(&store, 2, 1).await;
    let index = es.index("never_created");
    let projector = projector(&es, &index, Tallies::v(1));
    match projector.apply(&all_events(&store).await).await {
        Err(ProjectionError::Fatal(error)) => {
            assert!(error.to_string().contains(&index), "{error}")
        }
        other => panic!("expected a fatal error, got {other:?}"),
    }
    // And nothing was auto-created.
    let response = es
        .client()
        .get(GetParts::IndexId(&index, "0000"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status_code().as_u16(), 404);
    es.cleanup().await;
}

/// Items whose events are spread over the log: `rounds` appends per item,
/// one round over all items at a time.
async fn seed_interleaved(store: &MemoryStore, items: usize, rounds: usize) {
    for round in 0..rounds {
        for i in 0..items {
            let mut events = Vec::new();
            if round == 0 {
                events.push(event("Created", json!({ "name": format!("item {i}") })));
            }
            events.push(event("Added", json!({ "n": (i + round) as i64 % 5 - 2 })));
            if (i + round) % 4 == 0 {
                events.push(event("Renamed", json!({ "name": format!("r{round} {i}") })));
            }
            append(store, &format!("{i:04}"), events).await;
        }
    }
}

fn cached_projector(
    es: &annals_testkit::SearchTest,
    index: &str,
    cache_bytes: usize,
) -> IndexWriter<Tallies> {
    let plain = projector(es, index, Tallies::v(1));
    let options = WriterOptions {
        cache_bytes,
        concurrent_requests: 2,
        ..plain.options()
    };
    plain.with_options(options)
}

#[tokio::test]
async fn search_projector_cache_matches_a_clean_build_and_survives_redelivery() {
    let Some(es) = annals_testkit::search().await else {
        return;
    };
    let store = MemoryStore::new();
    seed_interleaved(&store, 30, 4).await;
    let batch = all_events(&store).await;

    // The reference: one batch, no cache.
    let clean = es.index("clean");
    create_index(es.client(), &clean).await;
    projector(&es, &clean, Tallies::v(1))
        .apply(&batch)
        .await
        .unwrap();
    let reference = dump(es.client(), &clean).await;
    assert_eq!(reference.len(), 30);

    // Room for every document, and room for a few only (older ones are
    // dropped and fetched again): small batches, re-deliveries of
    // overlapping slices, equal to the clean build.
    for (name, budget) in [("roomy", 1 << 20), ("tight", 600)] {
        let index = es.index(name);
        create_index(es.client(), &index).await;
        let cached = cached_projector(&es, &index, budget);
        for chunk in batch.chunks(17) {
            assert!(cached.apply(chunk).await.unwrap().failed.is_empty());
        }
        let (docs, bytes) = cached.cached();
        assert!(
            bytes <= budget,
            "{name}: {bytes} bytes kept, budget {budget}"
        );
        if name == "roomy" {
            assert_eq!(docs, 30);
        }
        for (start, end) in [(0, 40), (25, 90), (60, batch.len())] {
            assert!(
                cached
                    .apply(&batch[start..end])
                    .await
                    .unwrap()
                    .failed
                    .is_empty()
            );
        }
        assert_eq!(dump(es.client(), &index).await, reference, "{name}");

        // A crash mid-build: a new projector (nothing kept) re-applies from
        // an earlier point.
        let restarted = cached_projector(&es, &index, budget);
        for chunk in batch[batch.len() / 3..].chunks(23) {
            assert!(restarted.apply(chunk).await.unwrap().failed.is_empty());
        }
        assert_eq!(
            dump(es.client(), &index).await,
            reference,
            "{name}, restarted"
        );
    }

    // Another writer applies the middle of the log meanwhile (a lost lease):
    // what this projector kept is then behind, and it must not fold on from
    // it over the events it did not see.
    let index = es.index("shared");
    create_index(es.client(), &index).await;
    let first = cached_projector(&es, &index, 1 << 20);
    let other = cached_projector(&es, &index, 1 << 20);
    let (a, rest) = batch.split_at(batch.len() / 3);
    let (b, c) = rest.split_at(rest.len() / 2);
    first.apply(a).await.unwrap();
    other.apply(b).await.unwrap();
    assert!(first.apply(c).await.unwrap().failed.is_empty());
    assert_eq!(dump(es.client(), &index).await, reference, "two writers");

    es.cleanup().await;
}
