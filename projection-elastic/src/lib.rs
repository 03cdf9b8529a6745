//! # annals-elastic
//!
//! Elasticsearch and OpenSearch read models for annals projections.
//!
//! A read model author implements [`DocumentProjection`]: a name, a version,
//! mappings, the [`DomainEvent`](annals::DomainEvent) type it reads, which
//! document a stream feeds, and a pure fold from (document, event) to a
//! [`DocChange`]. This crate does the rest:
//!
//! * [`IndexWriter`] runs the fold as an [`annals::projection::Projection`]:
//!   it reads only the types the event enum holds; one `_mget` per batch;
//!   events already in a document skipped by its external version, the
//!   others decoded (and upcast) and folded; the new states written through
//!   `_bulk` with `version_type=external` (so re-delivery is harmless:
//!   exactly-once effect), item errors handled one by one ([`BulkWriter`]).
//! * [`ReadModel`] keeps the alias `<name>` pointing at the index
//!   `<name>_v<version>`; a new version is built blue/green from the start of
//!   the log while the old index serves, then swapped in atomically
//!   ([`ReadModel::open`], [`ReadModel::rebuild`]).
//! * [`SearchRequest`] and [`Page`] read it back: typed documents, sorted,
//!   paged with `search_after` and an opaque cursor.
//!
//! Only the API that Elasticsearch 7.10+, 8, 9 and OpenSearch 2+ share is
//! used: typeless documents, explicit index creation, `_bulk`, `_mget`,
//! `_aliases`, `search_after`, external versions.
//!
//! ```no_run
//! use std::sync::Arc;
//!
//! use annals::projection::ProjectionRunner;
//! use annals::{DomainEvent, RecordedEvent};
//! use annals_elastic::{DocChange, DocumentProjection, FoldError, ReadModel, SearchRequest};
//! use serde::{Deserialize, Serialize};
//! use serde_json::{Value, json};
//!
//! #[derive(DomainEvent)]
//! enum AccountEvent {
//!     Opened { owner: String },
//!     Deposited { amount: i64 },
//! }
//!
//! #[derive(Clone, Serialize, Deserialize)]
//! struct Account {
//!     id: String,
//!     balance: i64,
//! }
//!
//! struct Accounts;
//!
//! impl DocumentProjection for Accounts {
//!     type Event = AccountEvent;
//!     type Doc = Account;
//!     fn name(&self) -> &str { "accounts" }
//!     fn version(&self) -> u32 { 1 }
//!     fn mappings(&self) -> Value {
//!         json!({ "dynamic": "strict", "properties": {
//!             "id": { "type": "keyword" }, "balance": { "type": "long" } } })
//!     }
//!     fn document_id(&self, stream_id: &str) -> Option<String> {
//!         stream_id.strip_prefix("account-").map(str::to_owned)
//!     }
//!     fn fold(
//!         &self,
//!         doc: Option<Account>,
//!         event: &AccountEvent,
//!         envelope: &RecordedEvent,
//!     ) -> Result<DocChange<Account>, FoldError> {
//!         match (doc, event) {
//!             (None, AccountEvent::Opened { .. }) => {
//!                 let id = self.document_id(&envelope.stream_id).ok_or("not an account")?;
//!                 Ok(DocChange::Upsert(Account { id, balance: 0 }))
//!             }
//!             (Some(mut account), AccountEvent::Deposited { amount }) => {
//!                 account.balance += amount;
//!                 Ok(DocChange::Upsert(account))
//!             }
//!             (None, _) => Err("no account opened before it".into()),
//!             (Some(_), AccountEvent::Opened { .. }) => Err("opened twice".into()),
//!         }
//!     }
//! }
//!
//! # async fn example(store: impl annals::projection::ProjectionStore + Clone) -> Result<(), Box<dyn std::error::Error>> {
//! let client = annals_elastic::connect("http://127.0.0.1:9200")?;
//! let accounts = ReadModel::new(client, Accounts);
//! let writer = accounts.open(&store).await?; // builds `accounts_v1` behind `accounts`
//! ProjectionRunner::new(store, Arc::new(writer)).catch_up().await?;
//!
//! let richest = accounts
//!     .search(&SearchRequest::new(
//!         json!({ "range": { "balance": { "gt": 0 } } }),
//!         vec![json!({ "balance": "desc" }), json!({ "id": "asc" })],
//!         10,
//!     ))
//!     .await?;
//! for account in richest.docs {
//!     println!("{}: {}", account.id, account.balance);
//! }
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

mod bulk;
mod doc_cache;
mod error;
mod fold;
mod index_writer;
mod projection;
mod query;
mod read_model;

pub use bulk::{BulkLimits, BulkWriter, DocWrite, ItemResult, RefreshPolicy};
pub use error::ElasticError;
pub use index_writer::{IndexWriter, WriterOptions};
pub use projection::{DocChange, DocumentProjection, FoldError};
pub use query::{
    Page, SearchRequest, decode_cursor, encode_cursor, get_document, search_documents,
};
pub use read_model::{Built, ReadModel, ReadModelOptions};

/// The `elasticsearch` client crate this one is built on.
pub use elasticsearch;

use std::time::Duration;

use elasticsearch::Elasticsearch;
use elasticsearch::auth::Credentials;
use elasticsearch::http::Url;
use elasticsearch::http::transport::{SingleNodeConnectionPool, TransportBuilder};

/// How long a request to the search server may take by default before it
/// fails (and, for a projection, is retried): a frozen server must not hang
/// its callers.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// A client for the server at `url` (e.g. `ELASTICSEARCH_URL`), Elasticsearch
/// or OpenSearch alike, whose requests time out after [`DEFAULT_TIMEOUT`].
/// Credentials in the URL become basic auth.
pub fn connect(url: &str) -> Result<Elasticsearch, ElasticError> {
    connect_with_timeout(url, DEFAULT_TIMEOUT)
}

/// [`connect`] with requests that time out after `timeout`.
pub fn connect_with_timeout(url: &str, timeout: Duration) -> Result<Elasticsearch, ElasticError> {
    let invalid = |reason: String| ElasticError::InvalidUrl {
        url: url.to_owned(),
        reason,
    };
    let mut parsed = Url::parse(url).map_err(|e| invalid(e.to_string()))?;
    // Credentials travel as basic auth, not in the URL (which would send
    // them twice).
    let credentials = match (parsed.username(), parsed.password()) {
        ("", _) | (_, None) => None,
        (user, Some(password)) => Some(Credentials::Basic(user.to_owned(), password.to_owned())),
    };
    if credentials.is_some() {
        parsed
            .set_username("")
            .and_then(|()| parsed.set_password(None))
            .map_err(|()| invalid("cannot strip its credentials".into()))?;
    }
    let mut builder = TransportBuilder::new(SingleNodeConnectionPool::new(parsed)).timeout(timeout);
    if let Some(credentials) = credentials {
        builder = builder.auth(credentials);
    }
    let transport = builder.build().map_err(|e| invalid(e.to_string()))?;
    Ok(Elasticsearch::new(transport))
}
