//! The read model author's trait: what a document is, which document a
//! stream feeds, and the pure fold that keeps it.

use annals::{DomainEvent, RecordedEvent};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

#[cfg(doc)]
use crate::IndexWriter;

/// A read model kept in an Elasticsearch (or OpenSearch) index, one document
/// per stream, written by a pure fold over the stream's events.
///
/// The fold ([`fold`](Self::fold)) takes the current document and one
/// decoded event and says what the document becomes. It must be pure (no
/// I/O, no clock): the [`IndexWriter`] runs each event exactly once against
/// the stored document, using the document's external version (the stream
/// version of the last event folded into it) to skip events already applied.
/// Counters such as seats left are therefore computed from the document, not
/// incremented blindly.
///
/// The index writer reads only the types of [`Event`](Self::Event)
/// ([`DomainEvent::type_names`]) and decodes each into it, upcasting older
/// schema versions, before the fold sees it. An event that does not decode
/// fails like an event the fold refuses.
///
/// ```
/// use annals::{DomainEvent, RecordedEvent};
/// use annals_elastic::{DocChange, DocumentProjection, FoldError};
/// use serde::{Deserialize, Serialize};
/// use serde_json::{json, Value};
///
/// #[derive(DomainEvent)]
/// enum ButtonEvent {
///     Clicked { times: u64 },
/// }
///
/// #[derive(Clone, Serialize, Deserialize)]
/// struct Counter { id: String, clicks: u64 }
///
/// struct Clicks;
///
/// impl DocumentProjection for Clicks {
///     type Event = ButtonEvent;
///     type Doc = Counter;
///     fn name(&self) -> &str { "clicks" }
///     fn version(&self) -> u32 { 1 }
///     fn mappings(&self) -> Value {
///         json!({ "dynamic": "strict", "properties": {
///             "id": { "type": "keyword" }, "clicks": { "type": "long" } } })
///     }
///     fn document_id(&self, stream_id: &str) -> Option<String> {
///         stream_id.strip_prefix("button-").map(str::to_owned)
///     }
///     fn fold(
///         &self,
///         doc: Option<Counter>,
///         event: &ButtonEvent,
///         envelope: &RecordedEvent,
///     ) -> Result<DocChange<Counter>, FoldError> {
///         let ButtonEvent::Clicked { times } = event;
///         let id = self.document_id(&envelope.stream_id).ok_or("not a button stream")?;
///         let mut doc = doc.unwrap_or(Counter { id, clicks: 0 });
///         doc.clicks += times;
///         Ok(DocChange::Upsert(doc))
///     }
/// }
/// ```
pub trait DocumentProjection: Send + Sync + 'static {
    /// The events this read model reads: only their types are read from the
    /// log, each decoded into this type before the fold sees it.
    type Event: DomainEvent;

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

    /// The document the events of stream `stream_id` feed, or `None` to
    /// ignore the stream.
    ///
    /// A document is fed by one stream, whose version is the document's
    /// external version. (An event of a second stream mapped to the same
    /// document is reported as failed.)
    fn document_id(&self, stream_id: &str) -> Option<String>;

    /// Folds one event into the document (`None`: there is none yet, or it
    /// was deleted). `envelope` is the event as stored, for what the event
    /// itself does not carry (stream, stream version, time, metadata).
    ///
    /// An `Err` marks the event as failed, with a message naming the event
    /// and this error with its causes: the runner retries it and eventually
    /// dead-letters it (or stops), and later events of its stream wait behind it.
    fn fold(
        &self,
        doc: Option<Self::Doc>,
        event: &Self::Event,
        envelope: &RecordedEvent,
    ) -> Result<DocChange<Self::Doc>, FoldError>;
}

/// Why a fold cannot apply an event: any error (`?` converts one, keeping
/// its causes), or a message (`Err("created twice".into())`).
pub type FoldError = Box<dyn std::error::Error + Send + Sync>;

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
