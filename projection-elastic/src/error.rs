//! What can go wrong: talking to the search server ([`ElasticError`]), and
//! applying one event (`EventFailure`, the message of a failed event).

use annals::projection::{FailedEvent, RunnerError};
use annals::{EventError, StoreError};
use elasticsearch::http::response::Response;
use serde_json::Value;

/// Errors of setup (indexes, aliases, rebuilds) and queries.
///
/// Errors met while *projecting* are not these: the index writer reports
/// them to the runner as [`annals::projection::ProjectionError`] (transient
/// or fatal) or as failed events.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ElasticError {
    /// The server could not be reached, or the connection broke.
    #[error("cannot reach the search server ({operation}): {source}")]
    Unreachable {
        /// What was being done.
        operation: String,
        /// The client's error.
        #[source]
        source: elasticsearch::Error,
    },
    /// The server answered with an error status.
    #[error("the search server refused {operation} with status {status}: {reason}")]
    Refused {
        /// What was being done.
        operation: String,
        /// The HTTP status.
        status: u16,
        /// The server's error type, e.g. `mapper_parsing_exception`.
        error_type: Option<String>,
        /// The server's reason.
        reason: String,
    },
    /// The index or alias does not exist (yet): a read model that was never
    /// opened, or a query before the first build finished.
    #[error("index or alias {0:?} does not exist")]
    MissingIndex(String),
    /// A search cursor that this sort did not produce.
    #[error("invalid search cursor: {0}")]
    InvalidCursor(String),
    /// The server's answer did not have the expected shape, or a document did
    /// not decode into the projection's document type.
    #[error("unexpected answer to {operation}: {reason}")]
    Unexpected {
        /// What was being done.
        operation: String,
        /// What was wrong.
        reason: String,
    },
    /// The alias serves an index built by a newer version of the projection:
    /// this process runs older code and must not rebuild over it.
    #[error(
        "alias {alias:?} serves {live:?} (version {live_version}), newer than this \
         code's version {ours}; refusing to rebuild an older version over it"
    )]
    NewerVersionLive {
        /// The alias.
        alias: String,
        /// The index it serves.
        live: String,
        /// That index's projection version.
        live_version: u32,
        /// This code's projection version.
        ours: u32,
    },
    /// Building an index from the log failed.
    #[error("building {index:?} failed: {source}")]
    Build {
        /// The index being built.
        index: String,
        /// The runner's error.
        #[source]
        source: Box<RunnerError>,
    },
    /// The live projection stopped (a fatal error, or the stop policy).
    #[error("projection {projection:?} stopped: {source}")]
    Projection {
        /// The projection.
        projection: String,
        /// The runner's error.
        #[source]
        source: Box<RunnerError>,
    },
    /// The event store failed (checkpoints and dead letters of a build).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The server URL is not usable.
    #[error("invalid search server URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL given.
        url: String,
        /// Why it is not usable.
        reason: String,
    },
}

impl ElasticError {
    /// Whether retrying later may succeed: the server was unreachable,
    /// overloaded (429) or failing (5xx), or a request timed out (408).
    pub fn is_transient(&self) -> bool {
        match self {
            ElasticError::Unreachable { .. } => true,
            ElasticError::Refused { status, .. } => is_transient_status(*status),
            ElasticError::Store(error) => error.is_transient(),
            _ => false,
        }
    }
}

/// Why an index writer could not apply one event. `event` is the event's
/// description (`describe_event`). The runner keeps only a message per failed
/// event, so [`at`](Self::at) turns this into one, causes included.
#[derive(Debug, thiserror::Error)]
pub(crate) enum EventFailure {
    /// The payload does not decode into the projection's event type.
    #[error("cannot decode {event} into {target}: {source}")]
    Decode {
        event: String,
        /// The projection's event type.
        target: &'static str,
        #[source]
        source: EventError,
    },
    /// The fold refused the event.
    #[error("cannot apply {event}: {source}")]
    Fold {
        event: String,
        #[source]
        source: crate::FoldError,
    },
    /// The event's stream maps to a document another stream feeds.
    #[error(
        "{event} feeds document {id:?}, which stream {other:?} already feeds: \
         a document of {projection:?} must be fed by one stream only"
    )]
    SecondStream {
        event: String,
        id: String,
        other: String,
        projection: String,
    },
    /// The stored document no longer decodes into the document type.
    #[error(
        "cannot apply {event}: stored document {id:?} (version {version}) does not decode: \
         {source}"
    )]
    StoredUndecodable {
        event: String,
        id: String,
        version: u64,
        #[source]
        source: serde_json::Error,
    },
    /// The new document state does not encode as JSON.
    #[error("cannot apply {event}: document {id:?} does not encode: {source}")]
    Unencodable {
        event: String,
        id: String,
        #[source]
        source: serde_json::Error,
    },
    /// The server refused the document write (a mapping or parsing error).
    #[error(
        "cannot apply {event}: {index:?} refused document {id:?} (version {version}) with \
         {status}: {reason}"
    )]
    Refused {
        event: String,
        index: String,
        id: String,
        version: u64,
        status: u16,
        reason: String,
    },
}

impl EventFailure {
    /// The failed event at `index` of the batch.
    pub(crate) fn at(self, index: usize) -> FailedEvent {
        FailedEvent {
            index,
            error: Box::new(self),
        }
    }
}

/// 408, 429 and 5xx: worth retrying.
pub(crate) fn is_transient_status(status: u16) -> bool {
    status == 408 || status == 429 || status >= 500
}

/// The `type` and a readable reason of an Elasticsearch error object
/// (`{"type", "reason", "caused_by": {...}}`), or of a plain string error.
pub(crate) fn describe_error(error: &Value) -> (Option<String>, String) {
    match error {
        Value::String(text) => (None, text.clone()),
        Value::Object(_) => {
            let ty = error["type"].as_str().map(str::to_owned);
            let mut reason = match (&ty, error["reason"].as_str()) {
                (Some(ty), Some(reason)) => format!("{ty}: {reason}"),
                (Some(ty), None) => ty.clone(),
                (None, Some(reason)) => reason.to_owned(),
                (None, None) => error.to_string(),
            };
            let mut cause = &error["caused_by"];
            let mut depth = 0;
            while cause.is_object() && depth < 4 {
                let ty = cause["type"].as_str().unwrap_or("cause");
                let why = cause["reason"].as_str().unwrap_or("");
                reason.push_str(&format!(" (caused by {ty}: {why})"));
                cause = &cause["caused_by"];
                depth += 1;
            }
            (ty, reason)
        }
        other => (None, other.to_string()),
    }
}

/// Reads a response as JSON, turning transport failures and error statuses
/// into [`ElasticError`]s. A 404 becomes [`ElasticError::MissingIndex`] when
/// the server says an index is missing.
pub(crate) async fn json_body(
    operation: &str,
    response: Result<Response, elasticsearch::Error>,
) -> Result<Value, ElasticError> {
    let (status, body) = status_and_body(operation, response).await?;
    if (200..300).contains(&status) {
        return Ok(body);
    }
    Err(refusal(operation, status, &body))
}

/// The status and JSON body of a response (an empty or non-JSON body reads as
/// `null` or a string), or the transport error.
pub(crate) async fn status_and_body(
    operation: &str,
    response: Result<Response, elasticsearch::Error>,
) -> Result<(u16, Value), ElasticError> {
    let unreachable = |source| ElasticError::Unreachable {
        operation: operation.to_owned(),
        source,
    };
    let response = response.map_err(unreachable)?;
    let status = response.status_code().as_u16();
    let text = response.text().await.map_err(unreachable)?;
    let body = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    Ok((status, body))
}

/// The error an error status with this body means.
pub(crate) fn refusal(operation: &str, status: u16, body: &Value) -> ElasticError {
    let (error_type, reason) = match body.get("error") {
        Some(error) => describe_error(error),
        None => (None, body.to_string()),
    };
    if status == 404 && error_type.as_deref() == Some("index_not_found_exception") {
        let index = body["error"]["index"]
            .as_str()
            .or_else(|| body["error"]["resource.id"].as_str())
            .unwrap_or_default();
        return ElasticError::MissingIndex(index.to_owned());
    }
    ElasticError::Refused {
        operation: operation.to_owned(),
        status,
        error_type,
        reason,
    }
}
