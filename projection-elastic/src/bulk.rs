//! Document writes through `_bulk`, with external versions, split by count
//! and size, and per-item results.

use std::collections::VecDeque;
use std::time::Duration;

use elasticsearch::params::Refresh;
use elasticsearch::{BulkParts, Elasticsearch};
use serde::Serialize;
use serde_json::Value;
use tokio::task::JoinHandle;

use crate::error::{ElasticError, describe_error, is_transient_status, json_body};

/// Limits on one `_bulk` request; larger batches are split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BulkLimits {
    /// Most operations in one request.
    pub max_operations: usize,
    /// Largest request body, in bytes. An operation larger than this on its
    /// own is sent alone.
    pub max_bytes: usize,
}

impl Default for BulkLimits {
    /// 1000 operations, 5 MiB.
    fn default() -> Self {
        Self {
            max_operations: 1000,
            max_bytes: 5 * 1024 * 1024,
        }
    }
}

/// When written documents become visible to searches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RefreshPolicy {
    /// Let the index's refresh interval decide (the choice for rebuilds,
    /// where refresh is switched off).
    None,
    /// Each `_bulk` returns once its documents are searchable
    /// (`refresh=wait_for`), which takes until the index's next scheduled
    /// refresh (up to `refresh_interval`, 1 s by default). Fine for a single
    /// write; a writer that waits for each request before sending the next
    /// (like the index writer) writes at most one request per refresh
    /// interval. Never use it on an index whose `refresh_interval` is `-1`:
    /// it would wait for a refresh that never comes.
    #[default]
    WaitFor,
    /// Refresh the shards written right after each `_bulk`
    /// (`refresh=true`): the documents are searchable when it returns,
    /// without waiting for the next scheduled refresh. The index writer's
    /// default: a checkpoint saved after it promises that searches see the
    /// documents (read-your-writes relies on that), at the cost of one
    /// refresh per batch, and the runner's batching bounds how often that
    /// happens.
    Immediate,
}

impl RefreshPolicy {
    fn param(self) -> Option<Refresh> {
        match self {
            RefreshPolicy::None => None,
            RefreshPolicy::WaitFor => Some(Refresh::WaitFor),
            RefreshPolicy::Immediate => Some(Refresh::True),
        }
    }
}

/// One document write, versioned externally.
///
/// The version is the stream version of the last event the document state
/// includes. Elasticsearch keeps a write only when its version is higher than
/// the stored one, so a re-delivered write is refused (409) instead of
/// rolling the document back.
#[derive(Debug, Clone, PartialEq)]
pub enum DocWrite {
    /// Index (create or replace) the document.
    Index {
        /// Document id.
        id: String,
        /// External version.
        version: u64,
        /// The whole document.
        source: Value,
    },
    /// Delete the document.
    ///
    /// Elasticsearch remembers a deleted document's version only for
    /// `index.gc_deletes` (60 s by default); a replay of older events after
    /// that brings the document back. Prefer a soft delete (a status field).
    Delete {
        /// Document id.
        id: String,
        /// External version.
        version: u64,
    },
}

impl DocWrite {
    /// The document id.
    pub fn id(&self) -> &str {
        match self {
            DocWrite::Index { id, .. } | DocWrite::Delete { id, .. } => id,
        }
    }

    /// The external version.
    pub fn version(&self) -> u64 {
        match self {
            DocWrite::Index { version, .. } | DocWrite::Delete { version, .. } => *version,
        }
    }

    fn encode(&self) -> Result<Op, serde_json::Error> {
        match self {
            DocWrite::Index {
                id,
                version,
                source,
            } => Op::index(id, *version, source),
            DocWrite::Delete { id, version } => Op::delete(id, *version),
        }
    }
}

/// One operation encoded as its NDJSON lines, each ending in a newline.
///
/// Documents are serialised straight into the request body, once (no
/// intermediate `Value`).
#[derive(Debug, Clone)]
pub(crate) struct Op {
    delete: bool,
    lines: Vec<u8>,
}

impl Op {
    /// Index (create or replace) `source` as document `id` at external
    /// version `version`.
    pub(crate) fn index<T: Serialize + ?Sized>(
        id: &str,
        version: u64,
        source: &T,
    ) -> Result<Self, serde_json::Error> {
        let mut lines = Vec::with_capacity(256);
        action_line(&mut lines, "index", id, version)?;
        serde_json::to_writer(&mut lines, source)?;
        lines.push(b'\n');
        Ok(Self {
            delete: false,
            lines,
        })
    }

    /// Delete document `id` at external version `version`.
    pub(crate) fn delete(id: &str, version: u64) -> Result<Self, serde_json::Error> {
        let mut lines = Vec::with_capacity(96);
        action_line(&mut lines, "delete", id, version)?;
        Ok(Self {
            delete: true,
            lines,
        })
    }

    /// Bytes in the request body.
    pub(crate) fn len(&self) -> usize {
        self.lines.len()
    }
}

/// `{"<action>":{"_id":<id>,"version":<version>,"version_type":"external"}}\n`
fn action_line(
    out: &mut Vec<u8>,
    action: &str,
    id: &str,
    version: u64,
) -> Result<(), serde_json::Error> {
    out.extend_from_slice(b"{\"");
    out.extend_from_slice(action.as_bytes());
    out.extend_from_slice(b"\":{\"_id\":");
    serde_json::to_writer(&mut *out, id)?; // escaped
    out.extend_from_slice(b",\"version\":");
    out.extend_from_slice(version.to_string().as_bytes());
    out.extend_from_slice(b",\"version_type\":\"external\"}}\n");
    Ok(())
}

/// What became of one [`DocWrite`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemResult {
    /// Written (200 or 201), or a delete of a document that was not there.
    Written,
    /// Refused with 409: the stored document already has this version or a
    /// newer one. Under external versioning this means already applied.
    AlreadyApplied,
    /// Refused for good (a 4xx other than 409 and 429): a mapping or parsing
    /// error, a missing index. Retrying the same write fails the same way.
    Rejected {
        /// The item's status.
        status: u16,
        /// The server's error type, e.g. `mapper_parsing_exception`.
        error_type: Option<String>,
        /// The server's reason.
        reason: String,
    },
    /// Refused for now (429 or 5xx): retry later.
    Retryable {
        /// The item's status.
        status: u16,
        /// The server's reason.
        reason: String,
    },
}

/// Sends [`DocWrite`]s to one index through `_bulk`.
///
/// ```no_run
/// # async fn example(client: elasticsearch::Elasticsearch) -> Result<(), annals_elastic::ElasticError> {
/// use annals_elastic::{BulkWriter, DocWrite, ItemResult};
/// use serde_json::json;
///
/// let writer = BulkWriter::new(client);
/// let results = writer
///     .write("flights_v1", &[DocWrite::Index { id: "1".into(), version: 3, source: json!({"seats": 10}) }])
///     .await?;
/// assert!(matches!(results[0], ItemResult::Written | ItemResult::AlreadyApplied));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct BulkWriter {
    client: Elasticsearch,
    limits: BulkLimits,
    refresh: RefreshPolicy,
    timeout: Duration,
    concurrency: usize,
}

impl BulkWriter {
    /// A writer with default limits, [`RefreshPolicy::WaitFor`] and a 60 s
    /// request timeout.
    pub fn new(client: Elasticsearch) -> Self {
        Self {
            client,
            limits: BulkLimits::default(),
            refresh: RefreshPolicy::default(),
            timeout: Duration::from_secs(60),
            concurrency: 1,
        }
    }

    /// How many `_bulk` requests of one [`write`](Self::write) may be in
    /// flight at once (at least 1, the default). More than one lets the
    /// server index on several threads while the client encodes and sends
    /// the next request; results still come back in order.
    pub fn with_concurrency(mut self, requests: usize) -> Self {
        self.concurrency = requests.max(1);
        self
    }

    /// Replaces the limits.
    pub fn with_limits(mut self, limits: BulkLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Replaces the refresh policy.
    pub fn with_refresh(mut self, refresh: RefreshPolicy) -> Self {
        self.refresh = refresh;
        self
    }

    /// Replaces the timeout of each request.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The limits in force.
    pub fn limits(&self) -> BulkLimits {
        self.limits
    }

    /// Writes, in as many `_bulk` requests as the limits ask (at most
    /// [`with_concurrency`](Self::with_concurrency) of them in flight at
    /// once). Returns one result per write, in order.
    ///
    /// An error means a request failed as a whole (unreachable server, an
    /// error status): writes of other requests may have been applied, which
    /// external versions make harmless to repeat.
    pub async fn write(
        &self,
        index: &str,
        writes: &[DocWrite],
    ) -> Result<Vec<ItemResult>, ElasticError> {
        let mut ops = Vec::with_capacity(writes.len());
        for write in writes {
            let op = write.encode().map_err(|e| ElasticError::Unexpected {
                operation: format!("encoding document {:?}", write.id()),
                reason: e.to_string(),
            })?;
            ops.push(op);
        }
        self.write_ops(index, ops).await
    }

    /// [`write`](Self::write) of operations encoded as they are taken: each
    /// request goes out as soon as it is full, and the next is encoded while
    /// it is in flight (an index writer folds the next documents meanwhile).
    pub(crate) async fn write_ops(
        &self,
        index: &str,
        ops: impl IntoIterator<Item = Op>,
    ) -> Result<Vec<ItemResult>, ElasticError> {
        let mut in_flight = InFlight::default();
        let mut results = Vec::new();
        let mut split = Split::default();
        let mut request = Vec::new();
        for op in ops {
            if split.starts_new(op.len(), self.limits) {
                let full = std::mem::take(&mut request);
                self.dispatch(index, full, &mut in_flight, &mut results)
                    .await?;
            }
            request.push(op);
        }
        if !request.is_empty() {
            self.dispatch(index, request, &mut in_flight, &mut results)
                .await?;
        }
        while let Some(answer) = in_flight.oldest().await {
            results.extend(answer?);
        }
        Ok(results)
    }

    /// Sends one request on a task of its own, once fewer than the allowed
    /// number are in flight (collecting the oldest one's answer if not).
    async fn dispatch(
        &self,
        index: &str,
        request: Vec<Op>,
        in_flight: &mut InFlight,
        results: &mut Vec<ItemResult>,
    ) -> Result<(), ElasticError> {
        if in_flight.len() >= self.concurrency
            && let Some(answer) = in_flight.oldest().await
        {
            results.extend(answer?);
        }
        let writer = self.clone();
        let index = index.to_owned();
        in_flight.push(tokio::spawn(
            async move { writer.send(&index, &request).await },
        ));
        Ok(())
    }

    /// One `_bulk` request.
    async fn send(&self, index: &str, ops: &[Op]) -> Result<Vec<ItemResult>, ElasticError> {
        let mut body = Vec::with_capacity(ops.iter().map(Op::len).sum());
        for op in ops {
            body.extend_from_slice(&op.lines);
        }
        // The body is sent as one NDJSON item, which gets its final newline
        // back from the client.
        body.pop();
        let operation = format!("_bulk of {} documents to {index:?}", ops.len());
        let mut request = self
            .client
            .bulk(BulkParts::Index(index))
            .request_timeout(self.timeout)
            // Only what the item results need: a few bytes per item.
            .filter_path(&[
                "errors",
                "items.*.status",
                "items.*.result",
                "items.*.error",
            ])
            .body(vec![body]);
        if let Some(refresh) = self.refresh.param() {
            request = request.refresh(refresh);
        }
        let response = json_body(&operation, request.send().await).await?;
        item_results(&operation, &response, ops)
    }
}

/// Where requests end: fed the sizes of the operations in order, it says
/// which one opens a new request because the current one is full. Every
/// request holds at least one operation (an oversized one goes alone).
#[derive(Debug, Default)]
struct Split {
    count: usize,
    bytes: usize,
}

impl Split {
    fn starts_new(&mut self, size: usize, limits: BulkLimits) -> bool {
        let full = self.count > 0
            && (self.count >= limits.max_operations.max(1) || self.bytes + size > limits.max_bytes);
        if full {
            self.count = 0;
            self.bytes = 0;
        }
        self.count += 1;
        self.bytes += size;
        full
    }
}

type Answer = Result<Vec<ItemResult>, ElasticError>;

/// Requests in flight, oldest first. Dropping it (an error, or the caller
/// gave up) aborts them; their writes are harmless to repeat.
#[derive(Default)]
struct InFlight(VecDeque<JoinHandle<Answer>>);

impl InFlight {
    fn len(&self) -> usize {
        self.0.len()
    }

    fn push(&mut self, request: JoinHandle<Answer>) {
        self.0.push_back(request);
    }

    /// The answer of the oldest request, once it is in.
    async fn oldest(&mut self) -> Option<Answer> {
        let answer = self.0.front_mut()?.await;
        self.0.pop_front();
        Some(answer.unwrap_or_else(|e| {
            Err(ElasticError::Unexpected {
                operation: "_bulk".into(),
                reason: format!("the request's task ended: {e}"),
            })
        }))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        for request in &self.0 {
            request.abort();
        }
    }
}

/// Reads the per-item results of a `_bulk` answer.
fn item_results(
    operation: &str,
    response: &Value,
    writes: &[Op],
) -> Result<Vec<ItemResult>, ElasticError> {
    let unexpected = |reason: String| ElasticError::Unexpected {
        operation: operation.to_owned(),
        reason,
    };
    let items = response["items"]
        .as_array()
        .ok_or_else(|| unexpected(format!("no items in {response}")))?;
    if items.len() != writes.len() {
        return Err(unexpected(format!(
            "{} items answer {} operations",
            items.len(),
            writes.len()
        )));
    }
    Ok(items
        .iter()
        .zip(writes)
        .map(|(item, write)| {
            let (action, result) = if write.delete {
                ("delete", &item["delete"])
            } else {
                ("index", &item["index"])
            };
            classify(action, result)
        })
        .collect())
}

fn classify(action: &str, item: &Value) -> ItemResult {
    let status = item["status"]
        .as_u64()
        .and_then(|s| u16::try_from(s).ok())
        .unwrap_or(0);
    match status {
        200 | 201 => ItemResult::Written,
        404 if action == "delete" && item["result"] == "not_found" => ItemResult::Written,
        409 => ItemResult::AlreadyApplied,
        s if s == 0 || is_transient_status(s) => ItemResult::Retryable {
            status,
            reason: describe_error(&item["error"]).1,
        },
        _ => {
            let (error_type, reason) = describe_error(&item["error"]);
            ItemResult::Rejected {
                status,
                error_type,
                reason,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn encodes_operations() {
        let write = DocWrite::Index {
            id: "a\"b".into(),
            version: 7,
            source: json!({"n": 1}),
        };
        let op = write.encode().unwrap();
        assert_eq!(
            String::from_utf8(op.lines).unwrap(),
            "{\"index\":{\"_id\":\"a\\\"b\",\"version\":7,\"version_type\":\"external\"}}\n{\"n\":1}\n"
        );
        let op = DocWrite::Delete {
            id: "x".into(),
            version: 2,
        }
        .encode()
        .unwrap();
        assert!(op.delete);
        assert_eq!(
            String::from_utf8(op.lines).unwrap(),
            "{\"delete\":{\"_id\":\"x\",\"version\":2,\"version_type\":\"external\"}}\n"
        );
    }

    /// The requests `Split` makes of operations of these sizes.
    fn split(sizes: &[usize], limits: BulkLimits) -> Vec<std::ops::Range<usize>> {
        let mut split = Split::default();
        let mut ranges = Vec::new();
        let mut start = 0;
        for (i, &size) in sizes.iter().enumerate() {
            if split.starts_new(size, limits) {
                ranges.push(start..i);
                start = i;
            }
        }
        if start < sizes.len() {
            ranges.push(start..sizes.len());
        }
        ranges
    }

    fn limits(max_operations: usize, max_bytes: usize) -> BulkLimits {
        BulkLimits {
            max_operations,
            max_bytes,
        }
    }

    #[test]
    fn splits_by_count() {
        assert_eq!(split(&[1; 5], limits(2, 1000)), vec![0..2, 2..4, 4..5]);
        assert_eq!(
            split(&[], limits(2, 1000)),
            Vec::<std::ops::Range<usize>>::new()
        );
        assert_eq!(split(&[1; 3], limits(0, 1000)), vec![0..1, 1..2, 2..3]);
    }

    #[test]
    fn splits_by_bytes_and_sends_oversized_alone() {
        assert_eq!(
            split(&[40, 40, 40, 200, 10, 10], limits(100, 100)),
            vec![0..2, 2..3, 3..4, 4..6]
        );
    }

    #[test]
    fn classifies_items() {
        let ok = json!({"status": 201});
        assert_eq!(classify("index", &ok), ItemResult::Written);
        let conflict = json!({"status": 409, "error": {"type": "version_conflict_engine_exception", "reason": "x"}});
        assert_eq!(classify("index", &conflict), ItemResult::AlreadyApplied);
        let gone = json!({"status": 404, "result": "not_found"});
        assert_eq!(classify("delete", &gone), ItemResult::Written);
        let busy = json!({"status": 429, "error": {"type": "es_rejected_execution_exception", "reason": "queue full"}});
        assert!(matches!(
            classify("index", &busy),
            ItemResult::Retryable { status: 429, .. }
        ));
        let bad = json!({"status": 400, "error": {"type": "mapper_parsing_exception", "reason": "failed to parse field [n]",
            "caused_by": {"type": "number_format_exception", "reason": "For input string: \"x\""}}});
        match classify("index", &bad) {
            ItemResult::Rejected {
                status,
                error_type,
                reason,
            } => {
                assert_eq!(status, 400);
                assert_eq!(error_type.as_deref(), Some("mapper_parsing_exception"));
                assert!(reason.contains("failed to parse field [n]"), "{reason}");
                assert!(reason.contains("number_format_exception"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }
}
