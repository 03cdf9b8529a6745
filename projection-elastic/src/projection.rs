//! The read model author's trait: what a document is, which document an event
//! feeds, and the pure fold that keeps it.

use annals::RecordedEvent;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

#[cfg(doc)]
use crate::IndexWriter;

/// A read model kept in an Elasticsearch (or OpenSearch) index, one document
/// per stream, written by a pure fold over the stream's events.
///
/// The fold ([`apply`](Self::apply)) takes the current document and one
/// event and says what the document becomes. It must be pure (no I/O, no
/// clock): the [`IndexWriter`] runs each event exactly once against the
/// stored document, using the document's external version (the stream
/// version of the last event folded into it) to skip events already applied.
/// Counters such as seats left are therefore computed from the document, not
/// incremented blindly.
///
/// ```
/// use annals::RecordedEvent;
/// use annals_elastic::{DocChange, DocumentProjection};
/// use serde::{Deserialize, Serialize};
/// use serde_json::{json, Value};
///
/// #[derive(Clone, Serialize, Deserialize)]
/// struct Counter { id: String, clicks: u64 }
///
/// struct Clicks;
///
/// impl DocumentProjection for Clicks {
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
pub trait DocumentProjection: Send + Sync + 'static {
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
