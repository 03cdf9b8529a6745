//! The read model author's trait, and the projector that runs it through
//! `_mget` and `_bulk`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use annals::EventFilter;
use annals::RecordedEvent;
use annals::projection::{Applied, Failed, Projection, ProjectionError};
use async_trait::async_trait;
use elasticsearch::{Elasticsearch, MgetParts};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::bulk::{BulkLimits, BulkWriter, DocWrite, ItemResult, RefreshPolicy};
use crate::error::{ElasticError, describe_error, json_body};

/// A read model kept in an Elasticsearch (or OpenSearch) index, one document
/// per stream, written by a pure fold over the stream's events.
///
/// The fold ([`apply`](Self::apply)) takes the current document and one
/// event and says what the document becomes. It must be pure (no I/O, no
/// clock): the [`ElasticProjector`] runs each event exactly once against the
/// stored document, using the document's external version (the stream
/// version of the last event folded into it) to skip events already applied.
/// Counters such as seats left are therefore computed from the document, not
/// incremented blindly.
///
/// ```
/// use annals::RecordedEvent;
/// use annals_elastic::{DocChange, ElasticProjection};
/// use serde::{Deserialize, Serialize};
/// use serde_json::{json, Value};
///
/// #[derive(Clone, Serialize, Deserialize)]
/// struct Counter { id: String, clicks: u64 }
///
/// struct Clicks;
///
/// impl ElasticProjection for Clicks {
///     type Doc = Counter;
///     fn name(&self) -> &str { "clicks" }
///     fn version(&self) -> u32 { 1 }
///     fn mappings(&self) -> Value {
///         json!({ "dynamic": "strict", "properties": {
///             "id": { "type": "keyword" }, "clicks": { "type": "long" } } })
///     }
///     fn event_types(&self) -> Vec<String> { vec!["Clicked".into()] }
///     fn document_id(&self, event: &RecordedEvent) -> Option<String> {
///         event.stream_id.strip_prefix("button-").map(str::to_owned)
///     }
///     fn apply(&self, doc: Option<Counter>, event: &RecordedEvent) -> Result<DocChange<Counter>, String> {
///         let id = self.document_id(event).ok_or("not a button stream")?;
///         let mut doc = doc.unwrap_or(Counter { id, clicks: 0 });
///         doc.clicks += 1;
///         Ok(DocChange::Upsert(doc))
///     }
/// }
/// ```
pub trait ElasticProjection: Send + Sync + 'static {
    /// The document type, as stored in `_source`.
    type Doc: Serialize + DeserializeOwned + Clone + Send + Sync;

    /// The read model's name: the alias queries use (behind a prefix), e.g.
    /// `flights`. Lowercase, valid in an index name.
    fn name(&self) -> &str;

    /// The projection's version. Bump it when the mappings, settings or the
    /// fold change: the next start rebuilds into `<name>_v<version>`
    /// (blue/green) while the old index keeps serving.
    fn version(&self) -> u32;

    /// The index mappings (the body of `mappings` at index creation).
    /// `"dynamic": "strict"` is recommended.
    fn mappings(&self) -> Value;

    /// Index settings, e.g. `{"number_of_shards": 1}`; empty by default.
    fn settings(&self) -> Value {
        json!({})
    }

    /// The event types this read model handles; only these are read.
    fn event_types(&self) -> Vec<String>;

    /// The document an event feeds, or `None` to ignore the event.
    ///
    /// Every event feeding one document must come from one stream: the
    /// stream version is the document's external version. (An event of a
    /// second stream feeding the same document is reported as failed.)
    fn document_id(&self, event: &RecordedEvent) -> Option<String>;

    /// Folds one event into the document (`None`: there is none yet, or it
    /// was deleted). An `Err` marks the event as failed: the runner retries
    /// it and eventually parks it (or stops), and later events of its stream
    /// wait behind it.
    fn apply(
        &self,
        doc: Option<Self::Doc>,
        event: &RecordedEvent,
    ) -> Result<DocChange<Self::Doc>, String>;
}

/// What a fold step does to the document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DocChange<D> {
    /// The document becomes this (created or replaced).
    Upsert(D),
    /// The document goes away. Prefer a soft delete (a status field in an
    /// upserted document): Elasticsearch forgets a deleted document's version
    /// after `index.gc_deletes` (60 s by default), and a replay of the
    /// stream's older events after that would bring the document back.
    Delete,
    /// The event does not change the document.
    Unchanged,
}

/// How an [`ElasticProjector`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProjectorOptions {
    /// Limits of one `_bulk` request.
    pub bulk: BulkLimits,
    /// When written documents become searchable:
    /// [`RefreshPolicy::Immediate`] by default, so that a saved checkpoint
    /// means searchable documents without tying each batch to the index's
    /// refresh interval (with [`RefreshPolicy::WaitFor`] the live runner
    /// could apply one batch per refresh interval, and a search would see
    /// an event only up to two intervals after its append).
    pub refresh: RefreshPolicy,
    /// Timeout of each request.
    pub request_timeout: Duration,
}

impl Default for ProjectorOptions {
    fn default() -> Self {
        Self {
            bulk: BulkLimits::default(),
            refresh: RefreshPolicy::Immediate,
            request_timeout: Duration::from_secs(60),
        }
    }
}

/// Runs an [`ElasticProjection`] as an [`annals::projection::Projection`]
/// writing into one concrete index.
///
/// Each batch: the events are grouped by document, in log order; one `_mget`
/// fetches the current documents with their `_version`; per document, events
/// with `stream_version <= _version` are skipped (already applied), the rest
/// are folded; the resulting documents go out through `_bulk` with
/// `version_type=external` and the stream version of the last event folded.
/// So a batch delivered twice, or written concurrently by two runners, has
/// the effect of one delivery.
///
/// Failures:
/// * a fold error at an event reports that event as [`Failed`]; the document
///   keeps the state reached before it, and later events of the document in
///   the batch are not applied (the runner parks them behind it);
/// * a bulk item refused with a 4xx (a mapping or parsing error) reports the
///   document's first folded event as [`Failed`] with the server's reason;
///   a 409 counts as already applied;
/// * a 429 or 5xx item, an unreachable server or an error status of a whole
///   request is [`ProjectionError::Transient`]: the runner retries the batch;
/// * a missing index (deleted, or replaced by a rebuild in another process)
///   is [`ProjectionError::Fatal`]: restart to follow the alias.
///
/// Normally built by [`ReadModel::open`](crate::ReadModel::open); build one
/// directly to write into an index you manage yourself.
pub struct ElasticProjector<P: ElasticProjection> {
    client: Elasticsearch,
    projection: Arc<P>,
    index: String,
    name: String,
    options: ProjectorOptions,
    writer: BulkWriter,
}

impl<P: ElasticProjection> ElasticProjector<P> {
    /// A projector writing into `index`, with checkpoint name
    /// `<name>_v<version>` and default options.
    pub fn new(client: Elasticsearch, projection: Arc<P>, index: impl Into<String>) -> Self {
        let name = format!("{}_v{}", projection.name(), projection.version());
        let options = ProjectorOptions::default();
        Self {
            writer: writer(&client, options),
            client,
            projection,
            index: index.into(),
            name,
            options,
        }
    }

    /// Replaces the projection name (the key of its checkpoint, dead letters
    /// and lease).
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Replaces the options.
    pub fn with_options(mut self, options: ProjectorOptions) -> Self {
        self.options = options;
        self.writer = writer(&self.client, options);
        self
    }

    /// The index written to.
    pub fn index(&self) -> &str {
        &self.index
    }

    /// The read model.
    pub fn projection(&self) -> &Arc<P> {
        &self.projection
    }

    /// The options in force.
    pub fn options(&self) -> ProjectorOptions {
        self.options
    }

    /// Fetches the current documents and their versions.
    async fn current(&self, ids: &[&str]) -> Result<HashMap<String, Stored>, ProjectionError> {
        let operation = format!("_mget of {} documents from {:?}", ids.len(), self.index);
        let response = self
            .client
            .mget(MgetParts::Index(&self.index))
            .request_timeout(self.options.request_timeout)
            .body(json!({ "ids": ids }))
            .send()
            .await;
        let body = json_body(&operation, response)
            .await
            .map_err(|e| to_projection_error(&self.index, e))?;
        let docs = body["docs"].as_array().ok_or_else(|| {
            ProjectionError::Transient(format!("unexpected answer to {operation}: {body}"))
        })?;
        let mut current = HashMap::new();
        for doc in docs {
            if let Some(error) = doc.get("error") {
                let (ty, reason) = describe_error(error);
                return Err(if ty.as_deref() == Some("index_not_found_exception") {
                    missing_index(&self.index)
                } else {
                    ProjectionError::Transient(format!("{operation}: {reason}"))
                });
            }
            if doc["found"] != true {
                continue;
            }
            let (Some(id), Some(version)) = (doc["_id"].as_str(), doc["_version"].as_u64()) else {
                return Err(ProjectionError::Transient(format!(
                    "unexpected document in the answer to {operation}: {doc}"
                )));
            };
            current.insert(
                id.to_owned(),
                Stored {
                    version,
                    source: doc["_source"].clone(),
                },
            );
        }
        Ok(current)
    }
}

fn writer(client: &Elasticsearch, options: ProjectorOptions) -> BulkWriter {
    BulkWriter::new(client.clone())
        .with_limits(options.bulk)
        .with_refresh(options.refresh)
        .with_timeout(options.request_timeout)
}

fn missing_index(index: &str) -> ProjectionError {
    ProjectionError::Fatal(format!(
        "index {index:?} does not exist (deleted, or replaced by a rebuild): \
         reopen the read model to follow its alias"
    ))
}

fn to_projection_error(index: &str, error: ElasticError) -> ProjectionError {
    match error {
        ElasticError::MissingIndex(_) => missing_index(index),
        e if e.is_transient() => ProjectionError::Transient(e.to_string()),
        e => ProjectionError::Fatal(e.to_string()),
    }
}

/// A document as stored: its external version and `_source`.
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    pub(crate) version: u64,
    pub(crate) source: Value,
}

/// The writes a batch needs, and the events that failed.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    /// The writes, one per changed document.
    pub(crate) writes: Vec<DocWrite>,
    /// For each write, the batch index of the first event folded into it.
    pub(crate) first_event: Vec<usize>,
    /// Events that failed to fold.
    pub(crate) failed: Vec<Failed>,
}

/// The documents a batch touches, in order of first appearance, each with the
/// batch indexes of its events in log order. Events of a second stream
/// feeding an already grouped document fail.
fn group<P: ElasticProjection>(
    projection: &P,
    batch: &[RecordedEvent],
    failed: &mut Vec<Failed>,
) -> Vec<(String, Vec<usize>)> {
    let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
    let mut by_id: HashMap<String, usize> = HashMap::new();
    for (i, event) in batch.iter().enumerate() {
        let Some(id) = projection.document_id(event) else {
            continue;
        };
        match by_id.get(&id) {
            Some(&g) => {
                let first = &batch[groups[g].1[0]];
                if first.stream_id != event.stream_id {
                    failed.push(Failed {
                        index: i,
                        error: format!(
                            "{} feeds document {id:?}, which stream {:?} already feeds: \
                             a document of {:?} must be fed by one stream only",
                            describe_event(event),
                            first.stream_id,
                            projection.name()
                        ),
                    });
                    continue;
                }
                groups[g].1.push(i);
            }
            None => {
                by_id.insert(id.clone(), groups.len());
                groups.push((id, vec![i]));
            }
        }
    }
    groups
}

/// Folds each document's new events (pure: no I/O).
pub(crate) fn plan<P: ElasticProjection>(
    projection: &P,
    batch: &[RecordedEvent],
    groups: Vec<(String, Vec<usize>)>,
    current: &HashMap<String, Stored>,
    mut failed: Vec<Failed>,
) -> Plan {
    let mut plan = Plan::default();
    for (id, events) in groups {
        let (mut doc, stored_version) = match current.get(&id) {
            None => (None, 0),
            Some(stored) => match serde_json::from_value::<P::Doc>(stored.source.clone()) {
                Ok(doc) => (Some(doc), stored.version),
                Err(e) => {
                    // The stored document no longer decodes: a fold changed
                    // shape without a version bump. Fail its first new event.
                    if let Some(&i) = events
                        .iter()
                        .find(|&&i| batch[i].stream_version > stored.version)
                    {
                        failed.push(Failed {
                            index: i,
                            error: format!(
                                "cannot apply {}: stored document {id:?} (version {}) does \
                                 not decode: {e}",
                                describe_event(&batch[i]),
                                stored.version
                            ),
                        });
                    }
                    continue;
                }
            },
        };
        let mut changed = false;
        let mut first = None;
        let mut last_version = stored_version;
        for &i in &events {
            let event = &batch[i];
            if event.stream_version <= stored_version {
                continue; // already in the document
            }
            match projection.apply(doc.clone(), event) {
                Ok(DocChange::Upsert(new)) => {
                    doc = Some(new);
                    changed = true;
                }
                Ok(DocChange::Delete) => {
                    doc = None;
                    changed = true;
                }
                Ok(DocChange::Unchanged) => {}
                Err(why) => {
                    failed.push(Failed {
                        index: i,
                        error: format!("cannot apply {}: {why}", describe_event(event)),
                    });
                    break;
                }
            }
            first.get_or_insert(i);
            last_version = event.stream_version;
        }
        let Some(first) = first.filter(|_| changed) else {
            continue;
        };
        let write = match doc {
            Some(doc) => match serde_json::to_value(&doc) {
                Ok(source) => DocWrite::Index {
                    id,
                    version: last_version,
                    source,
                },
                Err(e) => {
                    failed.push(Failed {
                        index: first,
                        error: format!(
                            "cannot apply {}: document {id:?} does not encode: {e}",
                            describe_event(&batch[first])
                        ),
                    });
                    continue;
                }
            },
            None => DocWrite::Delete {
                id,
                version: last_version,
            },
        };
        plan.writes.push(write);
        plan.first_event.push(first);
    }
    plan.failed = failed;
    plan
}

/// `FlightCancelled (schema v1) at version 3 of stream "flight-…" (position 7.9)`.
fn describe_event(event: &RecordedEvent) -> String {
    format!(
        "{} (schema v{}) at version {} of stream {:?} (position {})",
        event.event_type,
        event.schema_version,
        event.stream_version,
        event.stream_id,
        event.position
    )
}

#[async_trait]
impl<P: ElasticProjection> Projection for ElasticProjector<P> {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn filter(&self) -> EventFilter {
        EventFilter::types(self.projection.event_types())
    }

    async fn apply(&self, batch: &[RecordedEvent]) -> Result<Applied, ProjectionError> {
        let mut failed = Vec::new();
        let groups = group(&*self.projection, batch, &mut failed);
        if groups.is_empty() {
            return Ok(Applied { failed });
        }
        let ids: Vec<&str> = groups.iter().map(|(id, _)| id.as_str()).collect();
        let current = self.current(&ids).await?;
        let plan = plan(&*self.projection, batch, groups, &current, failed);
        let mut failed = plan.failed;
        if !plan.writes.is_empty() {
            let results = self
                .writer
                .write(&self.index, &plan.writes)
                .await
                .map_err(|e| to_projection_error(&self.index, e))?;
            let mut retry = None;
            for ((result, write), &first) in results.iter().zip(&plan.writes).zip(&plan.first_event)
            {
                match result {
                    ItemResult::Written | ItemResult::AlreadyApplied => {}
                    ItemResult::Retryable { status, reason } => {
                        retry.get_or_insert(format!(
                            "writing document {:?} to {:?} answered {status}: {reason}",
                            write.id(),
                            self.index
                        ));
                    }
                    ItemResult::Rejected { error_type, .. }
                        if error_type.as_deref() == Some("index_not_found_exception") =>
                    {
                        return Err(missing_index(&self.index));
                    }
                    ItemResult::Rejected { status, reason, .. } => failed.push(Failed {
                        index: first,
                        error: format!(
                            "cannot apply {}: {:?} refused document {:?} (version {}) with \
                             {status}: {reason}",
                            describe_event(&batch[first]),
                            self.index,
                            write.id(),
                            write.version()
                        ),
                    }),
                }
            }
            if let Some(reason) = retry {
                return Err(ProjectionError::Transient(reason));
            }
        }
        failed.sort_by_key(|f| f.index);
        failed.dedup_by_key(|f| f.index);
        Ok(Applied { failed })
    }
}
