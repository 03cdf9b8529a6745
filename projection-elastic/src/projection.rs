//! The read model author's trait, and the projector that runs it through
//! `_mget` and `_bulk`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use annals::EventFilter;
use annals::RecordedEvent;
use annals::projection::{Applied, Failed, Projection, ProjectionError};
use async_trait::async_trait;
use elasticsearch::indices::IndicesExistsParts;
use elasticsearch::{Elasticsearch, MgetParts};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::bulk::{BulkLimits, BulkWriter, ItemResult, Op, RefreshPolicy};
use crate::error::{ElasticError, describe_error, json_body, refusal, status_and_body};

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
    /// `_bulk` requests of one batch in flight at once (at least 1; 1 by
    /// default).
    pub concurrent_requests: usize,
    /// Memory for the documents this projector wrote, in bytes of their
    /// JSON (0, the default: none kept). A document kept here at version
    /// `v` is not fetched again when its next events start at `v + 1`: the
    /// projector folds on from its own copy, which is exact because the fold
    /// is pure. The oldest documents are dropped first when the budget is
    /// full, and are fetched with `_mget` again when needed. Builds keep
    /// documents (see [`ReadModelOptions`](crate::ReadModelOptions)), so a
    /// build does no `_mget` at all while its documents fit.
    pub cache_bytes: usize,
}

impl Default for ProjectorOptions {
    fn default() -> Self {
        Self {
            bulk: BulkLimits::default(),
            refresh: RefreshPolicy::Immediate,
            request_timeout: Duration::from_secs(60),
            concurrent_requests: 1,
            cache_bytes: 0,
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
/// the effect of one delivery. Documents are folded as their request fills:
/// a full request goes out at once, and the next one is folded while it is in
/// flight ([`ProjectorOptions::concurrent_requests`] of them at most).
///
/// The `_mget` is skipped for a document whose events in the batch start at
/// its stream's first version (it is folded from nothing), and for one kept
/// in memory at the version just before its first event in the batch
/// ([`ProjectorOptions::cache_bytes`]). Both are exact: the fold is pure, so
/// the state at a version is the same whoever computed it, and the write's
/// external version still decides against what is stored.
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
    cache: Mutex<DocCache<P::Doc>>,
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
            cache: Mutex::new(DocCache::new(options.cache_bytes)),
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
        self.cache = Mutex::new(DocCache::new(options.cache_bytes));
        self
    }

    /// Documents kept in memory and the bytes they take (see
    /// [`ProjectorOptions::cache_bytes`]).
    pub fn cached(&self) -> (usize, usize) {
        let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        (cache.entries.len(), cache.used)
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

    /// A [`ProjectionError::Fatal`] when the index does not exist.
    async fn check_index(&self) -> Result<(), ProjectionError> {
        let operation = format!("checking that {:?} exists", self.index);
        let response = self
            .client
            .indices()
            .exists(IndicesExistsParts::Index(&[&self.index]))
            .request_timeout(self.options.request_timeout)
            .send()
            .await;
        let (status, body) = status_and_body(&operation, response)
            .await
            .map_err(|e| to_projection_error(&self.index, e))?;
        match status {
            200..=299 => Ok(()),
            404 => Err(missing_index(&self.index)),
            _ => Err(to_projection_error(
                &self.index,
                refusal(&operation, status, &body),
            )),
        }
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
        .with_concurrency(options.concurrent_requests)
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

/// A document's state before a batch: its version (0: none yet) and the
/// document (`None`: none, or deleted).
pub(crate) type Base<D> = (u64, Option<D>);

/// One document write a batch needs.
#[derive(Debug)]
pub(crate) struct Write<D> {
    pub(crate) id: String,
    /// The stream version of the last event folded in.
    pub(crate) version: u64,
    /// The new state (`None`: deleted).
    pub(crate) doc: Option<D>,
    /// Bytes of its `_bulk` operation.
    pub(crate) bytes: usize,
    /// The batch index of the first event folded into it.
    pub(crate) first_event: usize,
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

/// Folds one document's new events (`events`: batch indexes, in log order)
/// onto its state before the batch (pure: no I/O), and encodes its write.
/// `base` is the state known (`None`: none yet); `undecodable` holds the
/// stored documents that no longer decode. `None` when the document is
/// unchanged, or failed at its first new event (pushed to `failed`).
pub(crate) fn fold_document<P: ElasticProjection>(
    projection: &P,
    batch: &[RecordedEvent],
    id: String,
    events: &[usize],
    base: Option<Base<P::Doc>>,
    undecodable: &HashMap<String, (u64, String)>,
    failed: &mut Vec<Failed>,
) -> Option<(Write<P::Doc>, Op)> {
    if let Some((version, error)) = undecodable.get(&id) {
        // The stored document no longer decodes: a fold changed shape
        // without a version bump. Fail its first new event.
        if let Some(&i) = events.iter().find(|&&i| batch[i].stream_version > *version) {
            failed.push(Failed {
                index: i,
                error: format!(
                    "cannot apply {}: stored document {id:?} (version {version}) does \
                     not decode: {error}",
                    describe_event(&batch[i]),
                ),
            });
        }
        return None;
    }
    let (stored_version, base) = base.unwrap_or((0, None));
    let mut doc = base.clone();
    let mut changed = false;
    let mut first = None;
    let mut last_version = stored_version;
    // The fold takes the document by value. It is handed over without a
    // copy while every step changes it; the first step that does not
    // (unchanged, or failed) gets the state back by folding again from
    // the base, and from then on each step gets a copy.
    let mut folded: Vec<usize> = Vec::new();
    let mut copying = false;
    for &i in events {
        let event = &batch[i];
        if event.stream_version <= stored_version {
            continue; // already in the document
        }
        let input = if copying { doc.clone() } else { doc.take() };
        let outcome = projection.apply(input, event);
        if !copying && !matches!(outcome, Ok(DocChange::Upsert(_) | DocChange::Delete)) {
            doc = refold(projection, &base, &folded, batch);
            copying = true;
        }
        match outcome {
            Ok(DocChange::Upsert(new)) => {
                doc = Some(new);
                changed = true;
                folded.push(i);
            }
            Ok(DocChange::Delete) => {
                doc = None;
                changed = true;
                folded.push(i);
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
    let first = first.filter(|_| changed)?;
    let op = match &doc {
        Some(doc) => Op::index(&id, last_version, doc),
        None => Op::delete(&id, last_version),
    };
    match op {
        Ok(op) => Some((
            Write {
                id,
                version: last_version,
                doc,
                bytes: op.len(),
                first_event: first,
            },
            op,
        )),
        Err(e) => {
            failed.push(Failed {
                index: first,
                error: format!(
                    "cannot apply {}: document {id:?} does not encode: {e}",
                    describe_event(&batch[first])
                ),
            });
            None
        }
    }
}

/// The document after folding the events at `folded` (which all changed it
/// before) onto `base` again.
fn refold<P: ElasticProjection>(
    projection: &P,
    base: &Option<P::Doc>,
    folded: &[usize],
    batch: &[RecordedEvent],
) -> Option<P::Doc> {
    let mut doc = base.clone();
    for &i in folded {
        match projection.apply(doc.clone(), &batch[i]) {
            Ok(DocChange::Upsert(new)) => doc = Some(new),
            Ok(DocChange::Delete) => doc = None,
            // A pure fold repeats itself; keep what there is otherwise.
            Ok(DocChange::Unchanged) | Err(_) => {}
        }
    }
    doc
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
        let started = Instant::now();
        let mut failed = Vec::new();
        let groups = group(&*self.projection, batch, &mut failed);
        if groups.is_empty() {
            return Ok(Applied { failed });
        }

        // The state each document starts from: folded from nothing, kept in
        // memory, or else fetched.
        let mut bases: HashMap<String, Base<P::Doc>> = HashMap::with_capacity(groups.len());
        let mut fetch: Vec<&str> = Vec::new();
        {
            let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            for (id, events) in &groups {
                let first_version = batch[events[0]].stream_version;
                if let Some(base) = cache.get(id, first_version) {
                    bases.insert(id.clone(), base);
                } else if first_version > 1 {
                    fetch.push(id);
                }
            }
        }
        let mut undecodable = HashMap::new();
        let fetched = fetch.len();
        if fetch.is_empty() {
            // The `_mget` is what notices a deleted index; without it, a
            // `_bulk` would create the index anew with guessed mappings.
            self.check_index().await?;
        } else {
            for (id, stored) in self.current(&fetch).await? {
                match serde_json::from_value::<P::Doc>(stored.source) {
                    Ok(doc) => {
                        bases.insert(id, (stored.version, Some(doc)));
                    }
                    Err(e) => {
                        undecodable.insert(id, (stored.version, e.to_string()));
                    }
                }
            }
        }
        let fetched_in = started.elapsed();

        // Each document is folded as its `_bulk` request is filled, so the
        // next request is folded while the previous one is in flight.
        let mut writes = Vec::with_capacity(groups.len());
        let written_in = Instant::now();
        let ops = groups.into_iter().filter_map(|(id, events)| {
            let base = bases.remove(&id);
            let (write, op) = fold_document(
                &*self.projection,
                batch,
                id,
                &events,
                base,
                &undecodable,
                &mut failed,
            )?;
            writes.push(write);
            Some(op)
        });
        let results = self
            .writer
            .write_ops(&self.index, ops)
            .await
            .map_err(|e| to_projection_error(&self.index, e))?;
        let mut retry = None;
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        for (result, write) in results.iter().zip(writes) {
            match result {
                ItemResult::Written => {
                    cache.insert(write.id, write.version, write.doc, write.bytes);
                }
                // The server had something this projector did not know:
                // fetch the document the next time.
                ItemResult::AlreadyApplied => cache.remove(&write.id),
                ItemResult::Retryable { status, reason } => {
                    retry.get_or_insert(format!(
                        "writing document {:?} to {:?} answered {status}: {reason}",
                        write.id, self.index
                    ));
                }
                ItemResult::Rejected { error_type, .. }
                    if error_type.as_deref() == Some("index_not_found_exception") =>
                {
                    return Err(missing_index(&self.index));
                }
                ItemResult::Rejected { status, reason, .. } => failed.push(Failed {
                    index: write.first_event,
                    error: format!(
                        "cannot apply {}: {:?} refused document {:?} (version {}) with \
                         {status}: {reason}",
                        describe_event(&batch[write.first_event]),
                        self.index,
                        write.id,
                        write.version
                    ),
                }),
            }
        }
        if let Some(reason) = retry {
            return Err(ProjectionError::Transient(reason));
        }
        tracing::debug!(
            index = %self.index, events = batch.len(), fetched, failed = failed.len(),
            fetch_ms = fetched_in.as_secs_f64() * 1e3,
            write_ms = written_in.elapsed().as_secs_f64() * 1e3,
            "batch applied"
        );
        failed.sort_by_key(|f| f.index);
        failed.dedup_by_key(|f| f.index);
        Ok(Applied { failed })
    }
}

/// Documents a projector wrote, by id, within a budget of bytes; the oldest
/// written are dropped first.
struct DocCache<D> {
    budget: usize,
    used: usize,
    entries: HashMap<String, Cached<D>>,
    /// Ids in the order they were written, with the write's sequence number;
    /// an id written again has a newer pair, and its older pairs are skipped.
    order: VecDeque<(String, u64)>,
    next: u64,
}

struct Cached<D> {
    version: u64,
    doc: Option<D>,
    bytes: usize,
    seq: u64,
}

impl<D: Clone> DocCache<D> {
    fn new(budget: usize) -> Self {
        Self {
            budget,
            used: 0,
            entries: HashMap::new(),
            order: VecDeque::new(),
            next: 0,
        }
    }

    /// The document as kept, if it is kept at a version the events from
    /// `first_version` on can be folded onto (no event between missing: one
    /// another process applied, or one of a type this projection does not
    /// read, which the fold must then see through the stored document).
    fn get(&self, id: &str, first_version: u64) -> Option<Base<D>> {
        let cached = self.entries.get(id)?;
        (first_version <= cached.version.saturating_add(1))
            .then(|| (cached.version, cached.doc.clone()))
    }

    fn insert(&mut self, id: String, version: u64, doc: Option<D>, bytes: usize) {
        if self.budget == 0 {
            return;
        }
        // Rough size: the JSON, the id twice, the bookkeeping.
        let bytes = bytes + 2 * id.len() + 64;
        let seq = self.next;
        self.next += 1;
        self.order.push_back((id.clone(), seq));
        let cached = Cached {
            version,
            doc,
            bytes,
            seq,
        };
        if let Some(old) = self.entries.insert(id, cached) {
            self.used -= old.bytes;
        }
        self.used += bytes;
        while self.used > self.budget {
            let Some((id, seq)) = self.order.pop_front() else {
                break;
            };
            if self.entries.get(&id).is_some_and(|c| c.seq == seq) {
                if let Some(old) = self.entries.remove(&id) {
                    self.used -= old.bytes;
                }
            }
        }
        // Drop the pairs of ids written again since, now and then.
        if self.order.len() > 2 * self.entries.len() + 1024 {
            let entries = &self.entries;
            self.order
                .retain(|(id, seq)| entries.get(id).is_some_and(|c| c.seq == *seq));
        }
    }

    fn remove(&mut self, id: &str) {
        if let Some(old) = self.entries.remove(id) {
            self.used -= old.bytes;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use annals::{Metadata, Position};
    use uuid::Uuid;

    /// Sums `n` of stream `s-<id>`; `n == 0` changes nothing, `n < 0` fails.
    struct Sum;

    impl ElasticProjection for Sum {
        type Doc = i64;
        fn name(&self) -> &str {
            "sum"
        }
        fn version(&self) -> u32 {
            1
        }
        fn mappings(&self) -> Value {
            json!({})
        }
        fn event_types(&self) -> Vec<String> {
            vec!["N".into()]
        }
        fn document_id(&self, event: &RecordedEvent) -> Option<String> {
            event.stream_id.strip_prefix("s-").map(str::to_owned)
        }
        fn apply(&self, doc: Option<i64>, event: &RecordedEvent) -> Result<DocChange<i64>, String> {
            match event.payload.decode::<i64>().unwrap_or_default() {
                0 => Ok(DocChange::Unchanged),
                n if n < 0 => Err("negative".into()),
                n => Ok(DocChange::Upsert(doc.unwrap_or_default() + n)),
            }
        }
    }

    fn event(stream: &str, version: u64, n: i64) -> RecordedEvent {
        RecordedEvent {
            event_id: Uuid::new_v4(),
            stream_id: format!("s-{stream}"),
            stream_version: version,
            position: Position::START,
            event_type: "N".into(),
            schema_version: 1,
            payload: json!(n).into(),
            metadata: Metadata::default(),
            recorded_at: chrono::Utc::now(),
        }
    }

    /// The writes a batch needs, and the events that failed.
    fn run(
        batch: &[RecordedEvent],
        mut bases: HashMap<String, Base<i64>>,
    ) -> (Vec<Write<i64>>, Vec<Failed>) {
        let mut failed = Vec::new();
        let groups = group(&Sum, batch, &mut failed);
        let writes = groups
            .into_iter()
            .filter_map(|(id, events)| {
                let base = bases.remove(&id);
                fold_document(&Sum, batch, id, &events, base, &HashMap::new(), &mut failed)
            })
            .map(|(write, _)| write)
            .collect();
        (writes, failed)
    }

    #[test]
    fn folds_through_unchanged_and_failed_steps() {
        let batch = [
            event("a", 1, 1),
            event("a", 2, 0), // unchanged: the sum so far must survive it
            event("a", 3, 2),
            event("b", 4, 5),
            event("b", 5, -1), // fails: b keeps 5 + 10
            event("b", 6, 7),
        ];
        let bases = HashMap::from([("b".to_owned(), (3, Some(10)))]);
        let (writes, failed) = run(&batch, bases);
        let writes: Vec<_> = writes
            .iter()
            .map(|w| (w.id.as_str(), w.version, w.doc, w.first_event))
            .collect();
        assert_eq!(writes, [("a", 3, Some(3), 0), ("b", 4, Some(15), 3)]);
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].index, 4);
    }

    #[test]
    fn keeps_documents_within_its_budget_oldest_out_first() {
        let mut cache = DocCache::new(3 * (10 + 2 + 64));
        for (i, id) in ["a", "b", "c", "d"].into_iter().enumerate() {
            cache.insert(id.into(), 2, Some(i), 10);
        }
        assert!(cache.get("a", 3).is_none(), "the oldest went first");
        assert_eq!(cache.get("d", 3), Some((2, Some(3))));
        // Only when the next events follow on, or re-deliver.
        assert_eq!(cache.get("d", 1), Some((2, Some(3))));
        assert!(cache.get("d", 4).is_none());
        // Writing one again makes it the newest.
        cache.insert("b".into(), 3, Some(9), 10);
        cache.insert("e".into(), 1, None, 10);
        assert!(cache.get("c", 1).is_none());
        assert_eq!(cache.get("b", 4), Some((3, Some(9))));
        assert_eq!(cache.get("e", 2), Some((1, None)));
        assert!(cache.used <= cache.budget);
        cache.remove("b");
        assert!(cache.get("b", 4).is_none());
        // No budget: nothing kept.
        let mut none = DocCache::new(0);
        none.insert("a".into(), 1, Some(1), 10);
        assert!(none.get("a", 2).is_none());
    }
}
