//! The index writer: runs a [`DocumentProjection`] as an
//! [`annals::projection::Projection`] through `_mget` and `_bulk`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use annals::projection::{BatchOutcome, Projection, ProjectionError};
use annals::{DomainEvent, EventFilter, RecordedEvent};
use async_trait::async_trait;
use elasticsearch::indices::IndicesExistsParts;
use elasticsearch::{Elasticsearch, MgetParts};
use serde_json::{Value, json};

use crate::bulk::{BulkLimits, BulkWriter, ItemResult, RefreshPolicy};
use crate::doc_cache::DocCache;
use crate::error::{
    ElasticError, EventFailure, describe_error, json_body, refusal, status_and_body,
};
use crate::fold::{Start, describe_event, fold_document, group};
use crate::projection::DocumentProjection;

/// How an [`IndexWriter`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterOptions {
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
    /// Memory for the documents this writer wrote, in bytes of their
    /// JSON (0, the default: none kept). A document kept here at version
    /// `v` is not fetched again when its next events start at `v + 1`: the
    /// writer folds on from its own copy, which is exact because the fold
    /// is pure. The oldest documents are dropped first when the budget is
    /// full, and are fetched with `_mget` again when needed. Builds keep
    /// documents (see [`ReadModelOptions`](crate::ReadModelOptions)), so a
    /// build does no `_mget` at all while its documents fit.
    pub cache_bytes: usize,
}

impl Default for WriterOptions {
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

/// Runs a [`DocumentProjection`] as an [`annals::projection::Projection`]
/// writing into one concrete index.
///
/// Each batch: the events are grouped by document, in log order; one `_mget`
/// fetches the current documents with their `_version`; per document, events
/// with `stream_version <= _version` are skipped (already applied), the rest
/// are decoded and folded; the resulting documents go out through `_bulk` with
/// `version_type=external` and the stream version of the last event folded.
/// So a batch delivered twice, or written concurrently by two runners, has
/// the effect of one delivery. Documents are folded as their request fills:
/// a full request goes out at once, and the next one is folded while it is in
/// flight ([`WriterOptions::concurrent_requests`] of them at most).
///
/// The `_mget` is skipped for a document whose events in the batch start at
/// its stream's first version (it is folded from nothing), and for one kept
/// in memory at the version just before its first event in the batch
/// ([`WriterOptions::cache_bytes`]). Both are exact: the fold is pure, so
/// the state at a version is the same whoever computed it, and the write's
/// external version still decides against what is stored.
///
/// Failures:
/// * an event that does not decode into the projection's event type, or
///   that the fold refuses, is reported as [`FailedEvent`](annals::projection::FailedEvent),
///   naming the event and the error with its causes; the document keeps the
///   state reached before it, and later events of the document in the batch
///   are not applied (the runner dead-letters them behind it). Events are decoded
///   only when folded: one the document already has is not read again;
/// * a bulk item refused with a 4xx (a mapping or parsing error) reports the
///   document's first folded event as failed with the server's reason;
///   a 409 counts as already applied;
/// * a 429 or 5xx item, an unreachable server or an error status of a whole
///   request is [`ProjectionError::Transient`]: the runner retries the batch;
/// * a missing index (deleted, or replaced by a rebuild in another process)
///   is [`ProjectionError::Fatal`]: restart to follow the alias.
///
/// Normally built by [`ReadModel::open`](crate::ReadModel::open); build one
/// directly to write into an index you manage yourself.
pub struct IndexWriter<P: DocumentProjection> {
    client: Elasticsearch,
    projection: Arc<P>,
    index: String,
    name: String,
    options: WriterOptions,
    bulk: BulkWriter,
    cache: Mutex<DocCache<P::Doc>>,
}

impl<P: DocumentProjection> IndexWriter<P> {
    /// A writer into `index`, with checkpoint name
    /// `<name>_v<version>` and default options.
    pub fn new(client: Elasticsearch, projection: Arc<P>, index: impl Into<String>) -> Self {
        let name = format!("{}_v{}", projection.name(), projection.version());
        let options = WriterOptions::default();
        Self {
            bulk: bulk_writer(&client, options),
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
    pub fn with_options(mut self, options: WriterOptions) -> Self {
        self.options = options;
        self.bulk = bulk_writer(&self.client, options);
        self.cache = Mutex::new(DocCache::new(options.cache_bytes));
        self
    }

    /// Documents kept in memory and the bytes they take (see
    /// [`WriterOptions::cache_bytes`]).
    pub fn cached(&self) -> (usize, usize) {
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .usage()
    }

    /// The index written to.
    pub fn index(&self) -> &str {
        &self.index
    }

    /// The document projection it runs.
    pub fn projection(&self) -> &Arc<P> {
        &self.projection
    }

    /// The options in force.
    pub fn options(&self) -> WriterOptions {
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
            ProjectionError::Transient(format!("unexpected answer to {operation}: {body}").into())
        })?;
        let mut current = HashMap::new();
        for doc in docs {
            if let Some(error) = doc.get("error") {
                let (ty, reason) = describe_error(error);
                return Err(if ty.as_deref() == Some("index_not_found_exception") {
                    missing_index(&self.index)
                } else {
                    ProjectionError::Transient(format!("{operation}: {reason}").into())
                });
            }
            if doc["found"] != true {
                continue;
            }
            let (Some(id), Some(version)) = (doc["_id"].as_str(), doc["_version"].as_u64()) else {
                return Err(ProjectionError::Transient(
                    format!("unexpected document in the answer to {operation}: {doc}").into(),
                ));
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

fn bulk_writer(client: &Elasticsearch, options: WriterOptions) -> BulkWriter {
    BulkWriter::new(client.clone())
        .with_limits(options.bulk)
        .with_refresh(options.refresh)
        .with_timeout(options.request_timeout)
        .with_concurrency(options.concurrent_requests)
}

fn missing_index(index: &str) -> ProjectionError {
    ProjectionError::Fatal(
        format!(
            "index {index:?} does not exist (deleted, or replaced by a rebuild): \
         reopen the read model to follow its alias"
        )
        .into(),
    )
}

fn to_projection_error(index: &str, error: ElasticError) -> ProjectionError {
    match error {
        ElasticError::MissingIndex(_) => missing_index(index),
        e if e.is_transient() => ProjectionError::Transient(Box::new(e)),
        e => ProjectionError::Fatal(Box::new(e)),
    }
}

/// A document as stored: its external version and `_source`.
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    pub(crate) version: u64,
    pub(crate) source: Value,
}

#[async_trait]
impl<P: DocumentProjection> Projection for IndexWriter<P> {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn filter(&self) -> EventFilter {
        EventFilter::types(P::Event::type_names())
    }

    async fn apply(&self, batch: &[RecordedEvent]) -> Result<BatchOutcome, ProjectionError> {
        let started = Instant::now();
        let mut failed = Vec::new();
        let groups = group(&*self.projection, batch, &mut failed);
        if groups.is_empty() {
            return Ok(BatchOutcome { failed });
        }

        // The state each document starts from: folded from nothing, kept in
        // memory, or else fetched.
        let mut starts: HashMap<String, Start<P::Doc>> = HashMap::with_capacity(groups.len());
        let mut fetch: Vec<&str> = Vec::new();
        {
            let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            for (id, events) in &groups {
                let first_version = batch[events[0]].stream_version;
                if let Some(base) = cache.get(id, first_version) {
                    starts.insert(id.clone(), Start::Known(base));
                } else if first_version > 1 {
                    fetch.push(id);
                }
            }
        }
        let fetched = fetch.len();
        if fetch.is_empty() {
            // The `_mget` is what notices a deleted index; without it, a
            // `_bulk` would create the index anew with guessed mappings.
            self.check_index().await?;
        } else {
            for (id, stored) in self.current(&fetch).await? {
                let start = match serde_json::from_value::<P::Doc>(stored.source) {
                    Ok(doc) => Start::Known((stored.version, Some(doc))),
                    Err(error) => Start::Undecodable {
                        version: stored.version,
                        error,
                    },
                };
                starts.insert(id, start);
            }
        }
        let fetched_in = started.elapsed();

        // Each document is folded as its `_bulk` request is filled, so the
        // next request is folded while the previous one is in flight.
        let mut writes = Vec::with_capacity(groups.len());
        let written_in = Instant::now();
        let ops = groups.into_iter().filter_map(|(id, events)| {
            let start = starts.remove(&id).unwrap_or_default();
            let (write, op) =
                fold_document(&*self.projection, batch, id, &events, start, &mut failed)?;
            writes.push(write);
            Some(op)
        });
        let results = self
            .bulk
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
                // The server had something this writer did not know:
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
                ItemResult::Rejected { status, reason, .. } => {
                    let failure = EventFailure::Refused {
                        event: describe_event(&batch[write.first_event]),
                        index: self.index.clone(),
                        id: write.id,
                        version: write.version,
                        status: *status,
                        reason: reason.clone(),
                    };
                    failed.push(failure.at(write.first_event));
                }
            }
        }
        if let Some(reason) = retry {
            return Err(ProjectionError::Transient(reason.into()));
        }
        tracing::debug!(
            index = %self.index, events = batch.len(), fetched, failed = failed.len(),
            fetch_ms = fetched_in.as_secs_f64() * 1e3,
            write_ms = written_in.elapsed().as_secs_f64() * 1e3,
            "batch applied"
        );
        failed.sort_by_key(|f| f.index);
        failed.dedup_by_key(|f| f.index);
        Ok(BatchOutcome { failed })
    }
}
