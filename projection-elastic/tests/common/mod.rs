//! Shared by the integration tests: a small read model ("tallies"), event
//! helpers, and document dumps to compare indexes.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use annals::projection::{BatchOutcome, FailurePolicy, Projection, ProjectionError, RunnerOptions};
use annals::testing::{fast_runner_options, new_event};
use annals::{
    DomainEvent, EventFilter, EventStore, ExpectedVersion, NewEvent, Position, RecordedEvent,
};
use annals_elastic::elasticsearch::indices::{IndicesCreateParts, IndicesRefreshParts};
use annals_elastic::elasticsearch::{Elasticsearch, SearchParts};
use annals_elastic::{DocChange, DocumentProjection, FoldError, IndexWriter};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// A tally per stream `item-<id>`: `Created {name}`, `Added {n}`,
/// `Renamed {name}`, `Removed` (a hard delete), `Poison` (the fold fails
/// unless healed), `Bad` (a document the mapping refuses).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Tally {
    pub id: String,
    pub name: String,
    pub total: i64,
    /// How many events were folded in: counts re-applications.
    pub events: u64,
    /// The projection version that wrote the document.
    pub built_by: u32,
    /// Set by `Bad` to a string, which the `long` mapping refuses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<Value>,
}

/// The tallies' events, stored as `item-<id>` streams.
#[derive(Debug, DomainEvent)]
pub enum TallyEvent {
    Created { name: String },
    Added { n: i64 },
    Renamed { name: String },
    Removed,
    Poison,
    Bad,
}

pub struct Tallies {
    pub version: u32,
    /// When set, `Poison` folds like `Added {n: 0}`.
    pub healed: Arc<AtomicBool>,
}

impl Tallies {
    pub fn v(version: u32) -> Self {
        Self {
            version,
            healed: Arc::new(AtomicBool::new(false)),
        }
    }
}

impl DocumentProjection for Tallies {
    type Event = TallyEvent;
    type Doc = Tally;

    fn name(&self) -> &str {
        "tallies"
    }

    fn version(&self) -> u32 {
        self.version
    }

    fn mappings(&self) -> Value {
        json!({
            "dynamic": "strict",
            "properties": {
                "id": { "type": "keyword" },
                "name": { "type": "text", "fields": { "raw": { "type": "keyword" } } },
                "total": { "type": "long" },
                "events": { "type": "long" },
                "built_by": { "type": "integer" },
                "note": { "type": "long" }
            }
        })
    }

    fn settings(&self) -> Value {
        json!({ "number_of_shards": 1, "number_of_replicas": 0, "refresh_interval": "100ms" })
    }

    fn document_id(&self, stream_id: &str) -> Option<String> {
        stream_id.strip_prefix("item-").map(str::to_owned)
    }

    fn fold(
        &self,
        doc: Option<Tally>,
        event: &TallyEvent,
        envelope: &RecordedEvent,
    ) -> Result<DocChange<Tally>, FoldError> {
        let change = |mut doc: Tally, f: &dyn Fn(&mut Tally)| {
            f(&mut doc);
            doc.events += 1;
            doc.built_by = self.version;
            DocChange::Upsert(doc)
        };
        match (event, doc) {
            (TallyEvent::Created { name }, None) => Ok(DocChange::Upsert(Tally {
                id: self
                    .document_id(&envelope.stream_id)
                    .ok_or("not an item stream")?,
                name: name.clone(),
                total: 0,
                events: 1,
                built_by: self.version,
                note: None,
            })),
            (TallyEvent::Created { .. }, Some(_)) => Err("created twice".into()),
            (_, None) => Err("no Created before it".into()),
            (TallyEvent::Added { n }, Some(doc)) => Ok(change(doc, &|d| d.total += n)),
            (TallyEvent::Renamed { name }, Some(doc)) => {
                Ok(change(doc, &|d| d.name = name.clone()))
            }
            (TallyEvent::Removed, Some(_)) => Ok(DocChange::Delete),
            (TallyEvent::Poison, Some(doc)) if self.healed.load(Ordering::SeqCst) => {
                Ok(change(doc, &|_| {}))
            }
            (TallyEvent::Poison, Some(_)) => Err("poisoned on purpose".into()),
            (TallyEvent::Bad, Some(doc)) => {
                Ok(change(doc, &|d| d.note = Some(json!("not a number"))))
            }
        }
    }
}

pub fn event(event_type: &str, payload: Value) -> NewEvent {
    new_event(event_type, payload)
}

pub async fn append<S: EventStore>(store: &S, item: &str, events: Vec<NewEvent>) -> Position {
    store
        .append(&format!("item-{item}"), ExpectedVersion::Any, events)
        .await
        .expect("append")
        .position
}

/// `items` streams with a deterministic mix of events; returns the expected
/// (name, total) of each item.
pub async fn seed<S: EventStore>(
    store: &S,
    items: usize,
    adds: usize,
) -> BTreeMap<String, (String, i64)> {
    let mut expected = BTreeMap::new();
    for i in 0..items {
        let id = format!("{i:04}");
        let mut events = vec![event("Created", json!({ "name": format!("item {i}") }))];
        let mut total = 0;
        for k in 0..adds {
            let n = ((i * 7 + k * 3) % 11) as i64 - 3;
            total += n;
            events.push(event("Added", json!({ "n": n })));
        }
        let mut name = format!("item {i}");
        if i % 3 == 0 {
            name = format!("renamed {i}");
            events.push(event("Renamed", json!({ "name": name })));
        }
        append(store, &id, events).await;
        expected.insert(id, (name, total));
    }
    expected
}

/// Every event of the store the tallies read, in log order.
pub async fn all_events<S: EventStore>(store: &S) -> Vec<RecordedEvent> {
    store
        .read_all(
            Position::START,
            100_000,
            &EventFilter::types(TallyEvent::type_names()),
        )
        .await
        .expect("read_all")
}

/// Small batches, so that a test's events span several.
pub fn fast_runner(policy: FailurePolicy) -> RunnerOptions {
    RunnerOptions {
        batch_size: 50,
        ..fast_runner_options(policy)
    }
}

/// Creates an index with the tallies' mappings (refresh as usual).
pub async fn create_index(client: &Elasticsearch, index: &str) {
    let tallies = Tallies::v(1);
    let response = client
        .indices()
        .create(IndicesCreateParts::Index(index))
        .body(json!({ "settings": tallies.settings(), "mappings": tallies.mappings() }))
        .send()
        .await
        .expect("create index");
    let status = response.status_code();
    let body: Value = response.json().await.expect("json");
    assert!(status.is_success(), "{body}");
}

pub async fn refresh(client: &Elasticsearch, index: &str) {
    let response = client
        .indices()
        .refresh(IndicesRefreshParts::Index(&[index]))
        .send()
        .await
        .expect("refresh");
    assert!(response.status_code().is_success());
}

/// Every document of an index: id → (_version, _source).
pub async fn dump(client: &Elasticsearch, index: &str) -> BTreeMap<String, (u64, Value)> {
    refresh(client, index).await;
    let response = client
        .search(SearchParts::Index(&[index]))
        .body(json!({ "size": 10000, "version": true, "query": { "match_all": {} }, "sort": [{ "id": "asc" }] }))
        .send()
        .await
        .expect("search");
    let body: Value = response.json().await.expect("json");
    body["hits"]["hits"]
        .as_array()
        .unwrap_or_else(|| panic!("no hits: {body}"))
        .iter()
        .map(|hit| {
            (
                hit["_id"].as_str().unwrap().to_owned(),
                (hit["_version"].as_u64().unwrap(), hit["_source"].clone()),
            )
        })
        .collect()
}

/// Asserts the documents match the expected (name, total), each folded from
/// exactly its events (`events` = number of events of the stream).
pub fn assert_tallies(
    docs: &BTreeMap<String, (u64, Value)>,
    expected: &BTreeMap<String, (String, i64)>,
    adds: usize,
) {
    assert_eq!(docs.len(), expected.len(), "document count");
    for (id, (name, total)) in expected {
        let (version, source) = docs.get(id).unwrap_or_else(|| panic!("no document {id}"));
        let tally: Tally = serde_json::from_value(source.clone()).unwrap();
        assert_eq!(&tally.name, name, "{id}");
        assert_eq!(tally.total, *total, "{id}");
        let events = 1 + adds as u64 + u64::from(name.starts_with("renamed"));
        assert_eq!(
            tally.events, events,
            "{id}: every event folded exactly once"
        );
        assert_eq!(
            *version, events,
            "{id}: external version = last stream version"
        );
    }
}

/// Asserts every document is exactly the fold of its stream as stored:
/// each event counted once (`events`), the external version the stream's
/// last version, the total the sum of its `Added`.
pub async fn assert_match_store<S: EventStore>(store: &S, docs: &BTreeMap<String, (u64, Value)>) {
    for (id, (version, doc)) in docs {
        let stream = store
            .read_stream(&format!("item-{id}"), 1, 100_000)
            .await
            .expect("read_stream");
        let total: i64 = stream
            .iter()
            .filter(|e| e.event_type == "Added")
            .map(|e| e.payload.to_value().unwrap()["n"].as_i64().unwrap())
            .sum();
        let last = stream.last().map_or(0, |e| e.stream_version);
        assert_eq!(
            doc["events"],
            json!(stream.len()),
            "{id}: every event folded once"
        );
        assert_eq!(*version, last, "{id}: external version");
        assert_eq!(doc["total"], json!(total), "{id}: total");
    }
}

/// Writes like the index writer, then "crashes" (a fatal error) before the
/// runner can save the checkpoint, on the `crash_on`-th batch.
pub struct CrashAfterWrite {
    inner: IndexWriter<Tallies>,
    calls: AtomicUsize,
    crash_on: usize,
}

impl CrashAfterWrite {
    /// Crashes after writing its `crash_on`-th batch (1: the first).
    pub fn on_batch(inner: IndexWriter<Tallies>, crash_on: usize) -> Self {
        Self {
            inner,
            calls: AtomicUsize::new(0),
            crash_on,
        }
    }
}

#[async_trait]
impl Projection for CrashAfterWrite {
    fn name(&self) -> String {
        self.inner.name()
    }

    fn filter(&self) -> EventFilter {
        self.inner.filter()
    }

    async fn apply(&self, batch: &[RecordedEvent]) -> Result<BatchOutcome, ProjectionError> {
        let applied = self.inner.apply(batch).await?;
        if self.calls.fetch_add(1, Ordering::SeqCst) + 1 == self.crash_on {
            return Err(ProjectionError::Fatal(
                "simulated crash after the _bulk, before the checkpoint".into(),
            ));
        }
        Ok(applied)
    }
}
