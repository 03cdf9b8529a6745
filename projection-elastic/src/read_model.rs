//! Index lifecycle: each read model's alias points at a versioned index, and
//! a changed version is rebuilt blue/green, then swapped in atomically.
//!
//! Names, for a read model `flights` at version 3 behind prefix `p_`:
//!
//! | what | name |
//! |---|---|
//! | alias (what queries use) | `p_flights` |
//! | index of version 3 | `p_flights_v3` |
//! | index of a forced rebuild of version 3 | `p_flights_v3_2`, `p_flights_v3_3`, … |
//! | projection (checkpoint, dead letters, lease) | the index name without the prefix: `flights_v3`, `flights_v3_2` |
//!
//! Each index has its own checkpoint, so a rebuild reads the log from the
//! start while the live index keeps its place.

use std::sync::Arc;
use std::time::Duration;

use annals::Position;
use annals::projection::{
    Projection, ProjectionRunner, ProjectionStore, RunnerError, RunnerOptions,
};
use elasticsearch::Elasticsearch;
use elasticsearch::indices::{
    IndicesCreateParts, IndicesDeleteParts, IndicesGetAliasParts, IndicesPutSettingsParts,
    IndicesRefreshParts,
};
use serde_json::{Map, Value, json};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::bulk::{BulkLimits, RefreshPolicy};
use crate::error::{ElasticError, json_body, refusal, status_and_body};
use crate::index_writer::{IndexWriter, WriterOptions};
use crate::projection::DocumentProjection;
use crate::query::{Page, SearchRequest, get_document, search_documents};

/// How a [`ReadModel`] writes and builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadModelOptions {
    /// How the live index writer writes: [`RefreshPolicy::Immediate`], so that
    /// a saved checkpoint means searchable documents, and 16 MiB of
    /// documents kept in memory (hot documents are not fetched back before
    /// each write).
    pub live: WriterOptions,
    /// The least time between two live batches, and so between two
    /// refreshes ([`RunnerOptions::min_batch_interval`]; 200 ms): each
    /// refresh makes a segment the server must later merge, so under a
    /// steady trickle of events refreshes would cost more than the writes.
    /// A quiet index is written at once, and a live runner behind a backlog
    /// (full batches) is not held back. [`run`](ReadModel::run) uses the
    /// larger of this and its options' interval.
    pub live_batch_interval: Duration,
    /// How a build writes: [`RefreshPolicy::None`] (refresh is off while
    /// building), its documents kept in memory (64 MiB of JSON, so that a
    /// build fetches nothing back), `_bulk` requests of at most 500
    /// documents, two in flight while the next is folded.
    pub build: WriterOptions,
    /// Batching and failure policy of the build's catch-up.
    pub build_runner: RunnerOptions,
    /// How often a process that waits for another process's build looks
    /// again.
    pub build_poll: Duration,
}

impl Default for ReadModelOptions {
    fn default() -> Self {
        Self {
            live: WriterOptions {
                cache_bytes: 16 * 1024 * 1024,
                ..WriterOptions::default()
            },
            live_batch_interval: Duration::from_millis(200),
            build: WriterOptions {
                refresh: RefreshPolicy::None,
                // Requests smaller than a batch's documents, so that the
                // server indexes some while the client folds the next.
                bulk: BulkLimits {
                    max_operations: 500,
                    ..BulkLimits::default()
                },
                concurrent_requests: 2,
                cache_bytes: 64 * 1024 * 1024,
                ..WriterOptions::default()
            },
            // Large batches: a build reads a backlog, so batches fill at
            // once (the delay only matters for the last one). The end of a
            // batch waits for its last `_bulk` request and saves the
            // checkpoint, and a document fed by several events of one batch
            // is written once. 20,000 events of ~0.5 KiB, twice (the batch
            // and the page read ahead), is ~20 MiB.
            build_runner: RunnerOptions {
                batch_size: 20_000,
                batch_delay: Duration::from_millis(50),
                ..RunnerOptions::default()
            },
            build_poll: Duration::from_millis(500),
        }
    }
}

/// What a build did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Built {
    /// The index built, now behind the alias.
    pub index: String,
    /// The index the alias served before (now deleted), if any.
    pub previous: Option<String>,
    /// The build's checkpoint when the alias was swapped.
    pub checkpoint: Position,
    /// How long it took.
    pub elapsed: Duration,
}

/// A [`DocumentProjection`] with its place on a server: client, alias,
/// versioned indexes, rebuilds and queries.
///
/// ```no_run
/// # use annals_elastic::{DocumentProjection, ReadModel};
/// # async fn example<P: DocumentProjection, S: annals::projection::ProjectionStore + Clone>(
/// #     projection: P, store: S,
/// # ) -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use annals::projection::ProjectionRunner;
/// use tokio_util::sync::CancellationToken;
///
/// let client = annals_elastic::connect("http://127.0.0.1:9200")?;
/// let read_model = ReadModel::new(client, projection);
/// // Makes the alias serve the current version, rebuilding blue/green if needed.
/// let writer = read_model.open(&store).await?;
/// // Then keep it current.
/// ProjectionRunner::new(store, Arc::new(writer))
///     .run(CancellationToken::new())
///     .await?;
/// # Ok(()) }
/// ```
pub struct ReadModel<P: DocumentProjection> {
    client: Elasticsearch,
    projection: Arc<P>,
    prefix: String,
    options: ReadModelOptions,
}

impl<P: DocumentProjection> Clone for ReadModel<P> {
    fn clone(&self) -> Self {
        Self {
            client: self.client.clone(),
            projection: self.projection.clone(),
            prefix: self.prefix.clone(),
            options: self.options,
        }
    }
}

impl<P: DocumentProjection> ReadModel<P> {
    /// A read model with no prefix and default options.
    pub fn new(client: Elasticsearch, projection: P) -> Self {
        Self::from_arc(client, Arc::new(projection))
    }

    /// [`new`](Self::new) with a shared projection.
    pub fn from_arc(client: Elasticsearch, projection: Arc<P>) -> Self {
        Self {
            client,
            projection,
            prefix: String::new(),
            options: ReadModelOptions::default(),
        }
    }

    /// Puts every index and alias name behind a prefix (an environment name,
    /// a test's own namespace). Lowercase.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Replaces the options.
    pub fn with_options(mut self, options: ReadModelOptions) -> Self {
        self.options = options;
        self
    }

    /// The client.
    pub fn client(&self) -> &Elasticsearch {
        &self.client
    }

    /// The document projection it serves.
    pub fn projection(&self) -> &Arc<P> {
        &self.projection
    }

    /// The options in force.
    pub fn options(&self) -> ReadModelOptions {
        self.options
    }

    /// The alias queries use: `<prefix><name>`.
    pub fn alias(&self) -> String {
        format!("{}{}", self.prefix, self.projection.name())
    }

    /// The index of the current version: `<prefix><name>_v<version>`.
    pub fn versioned_index(&self) -> String {
        format!("{}_v{}", self.alias(), self.projection.version())
    }

    /// The projection name (checkpoint, dead letters, lease) of an index: its
    /// name without the prefix, e.g. `flights_v3`.
    pub fn projection_name(&self, index: &str) -> String {
        index.strip_prefix(&self.prefix).unwrap_or(index).to_owned()
    }

    /// An index writer into `index` under that index's projection name,
    /// with the live options.
    pub fn writer_for(&self, index: &str) -> IndexWriter<P> {
        IndexWriter::new(self.client.clone(), self.projection.clone(), index)
            .with_name(self.projection_name(index))
            .with_options(self.options.live)
    }

    /// The index the alias serves, or `None` when there is no alias yet.
    pub async fn live_index(&self) -> Result<Option<String>, ElasticError> {
        let alias = self.alias();
        let operation = format!("reading alias {alias:?}");
        let response = self
            .client
            .indices()
            .get_alias(IndicesGetAliasParts::Name(&[&alias]))
            .send()
            .await;
        let (status, body) = status_and_body(&operation, response).await?;
        if status == 404 {
            return Ok(None);
        }
        if !(200..300).contains(&status) {
            return Err(refusal(&operation, status, &body));
        }
        let indexes: Vec<&String> = body
            .as_object()
            .map(|o| o.keys().collect())
            .unwrap_or_default();
        match indexes.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some((*one).clone())),
            many => Err(ElasticError::Unexpected {
                operation,
                reason: format!("the alias points at {} indexes: {many:?}", many.len()),
            }),
        }
    }

    /// `(version, generation)` of an index of this read model: `_v3` is
    /// `(3, 1)`, `_v3_2` is `(3, 2)`. `None` for other names.
    pub fn index_generation(&self, index: &str) -> Option<(u32, u32)> {
        let rest = index.strip_prefix(&self.alias())?.strip_prefix("_v")?;
        let (version, generation) = match rest.split_once('_') {
            Some((v, g)) => (v, Some(g)),
            None => (rest, None),
        };
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(version) || !generation.is_none_or(digits) {
            return None;
        }
        let version = version.parse().ok()?;
        let generation = match generation {
            Some(g) => g.parse().ok().filter(|&g| g >= 2)?,
            None => 1,
        };
        Some((version, generation))
    }

    /// Makes the alias serve an index of the current version.
    ///
    /// If it already does, nothing happens (`None`). Otherwise the index
    /// `<name>_v<version>` is built blue/green ([`Built`]): created with the
    /// mappings and settings from code, refresh off and no replicas; filled
    /// by a catch-up from the start of the log (its own checkpoint) while
    /// the alias keeps serving the old index; refresh and replicas restored;
    /// refreshed; then the alias is moved in one atomic `_aliases` call and
    /// the old index deleted. Queries never see a missing or half-built
    /// index (before the very first build there is no alias:
    /// [`ElasticError::MissingIndex`]).
    ///
    /// A build that was interrupted (the process died) is resumed from its
    /// checkpoint. While another process builds (it holds the build's lease),
    /// this one waits for it.
    pub async fn prepare<S>(&self, store: &S) -> Result<Option<Built>, ElasticError>
    where
        S: ProjectionStore + Clone,
    {
        let target = self.versioned_index();
        loop {
            let live = self.live_index().await?;
            if let Some(live) = &live
                && self.is_current(live)?
            {
                return Ok(None);
            }
            let name = self.projection_name(&target);
            let Some(lease) = store.try_lease(&name).await? else {
                tracing::info!(index = %target, "another process is building; waiting");
                tokio::time::sleep(self.options.build_poll).await;
                continue;
            };
            // Another process may have finished the build meanwhile.
            let done = match self.live_index().await {
                Ok(Some(live)) => self.is_current(&live),
                Ok(None) => Ok(false),
                Err(e) => Err(e),
            };
            let built = match done {
                Ok(false) => self.build(store, &target, false).await.map(Some),
                Ok(true) => Ok(None),
                Err(e) => Err(e),
            };
            lease.release().await;
            return built;
        }
    }

    /// [`prepare`](Self::prepare), then an index writer for the live index, to
    /// run with [`ProjectionRunner::run`].
    pub async fn open<S>(&self, store: &S) -> Result<IndexWriter<P>, ElasticError>
    where
        S: ProjectionStore + Clone,
    {
        if let Some(built) = self.prepare(store).await? {
            return Ok(self.writer_for(&built.index));
        }
        match self.live_index().await? {
            Some(live) => Ok(self.writer_for(&live)),
            None => Err(ElasticError::MissingIndex(self.alias())),
        }
    }

    /// Keeps the read model current until `shutdown`: [`open`](Self::open),
    /// then a [`ProjectionRunner::run`] of the live index writer (lease, hot
    /// standby, retries and dead-lettering as `options` say; batches at most once
    /// per [`ReadModelOptions::live_batch_interval`]). When a rebuild in
    /// another process (`rebuild`, or a newer version's start) replaced the
    /// live index, the runner stops at its next batch; this opens the read
    /// model again and goes on with the new index and its checkpoint.
    ///
    /// `observe` sees each runner before it starts, e.g. to publish its
    /// [`name`](ProjectionRunner::name) (for
    /// [`wait_for_checkpoint`](annals::projection::wait_for_checkpoint)) and its
    /// [`progress`](ProjectionRunner::progress) (for health and lag).
    pub async fn run<S, F>(
        &self,
        store: S,
        options: RunnerOptions,
        shutdown: CancellationToken,
        mut observe: F,
    ) -> Result<(), ElasticError>
    where
        S: ProjectionStore + Clone,
        F: FnMut(&ProjectionRunner<S, IndexWriter<P>>) + Send,
    {
        let options = RunnerOptions {
            min_batch_interval: options
                .min_batch_interval
                .max(self.options.live_batch_interval),
            ..options
        };
        loop {
            let writer = self.open(&store).await?;
            let index = writer.index().to_owned();
            let name = writer.name();
            let runner =
                ProjectionRunner::new(store.clone(), Arc::new(writer)).with_options(options);
            observe(&runner);
            let error = match runner.run(shutdown.clone()).await {
                Ok(()) => return Ok(()),
                Err(error) => error,
            };
            let replaced = matches!(error, RunnerError::Fatal { .. })
                && matches!(self.live_index().await, Ok(Some(live)) if live != index);
            if !replaced || shutdown.is_cancelled() {
                return Err(ElasticError::Projection {
                    projection: name,
                    source: Box::new(error),
                });
            }
            tracing::info!(%index, "the live index was replaced; following the alias");
        }
    }

    /// Rebuilds into a fresh index even though the version did not change
    /// (after a fix in the fold that kept the document shape, or to recover
    /// from a damaged index), blue/green as in [`prepare`](Self::prepare).
    ///
    /// The fresh index is `<name>_v<version>_<n>`, `n` one more than the
    /// highest generation of this version on the server (the plain
    /// `_v<version>` counting as 1), so its projection name and checkpoint
    /// are new too. Older indexes of the read model are deleted after the
    /// swap. A live runner of the replaced index stops with a fatal error at
    /// its next batch (its index is gone); reopen to follow the alias.
    pub async fn rebuild<S>(&self, store: &S) -> Result<Built, ElasticError>
    where
        S: ProjectionStore + Clone,
    {
        if let Some(live) = self.live_index().await? {
            // Refuses to replace a newer version.
            self.is_current(&live)?;
        }
        let version = self.projection.version();
        let highest = self
            .family()
            .await?
            .into_iter()
            .filter_map(|(index, _)| self.index_generation(&index))
            .filter(|&(v, _)| v == version)
            .map(|(_, g)| g)
            .max()
            .unwrap_or(1);
        let target = format!("{}_{}", self.versioned_index(), highest + 1);
        let name = self.projection_name(&target);
        let Some(lease) = store.try_lease(&name).await? else {
            return Err(ElasticError::Unexpected {
                operation: format!("rebuilding into {target:?}"),
                reason: format!("another process holds the lease of {name:?}"),
            });
        };
        let built = self.build(store, &target, true).await;
        lease.release().await;
        built
    }

    /// Gets a document by id through the alias.
    pub async fn get(&self, id: &str) -> Result<Option<P::Doc>, ElasticError> {
        get_document(&self.client, &self.alias(), id).await
    }

    /// Searches through the alias.
    pub async fn search(&self, request: &SearchRequest) -> Result<Page<P::Doc>, ElasticError> {
        search_documents(&self.client, &self.alias(), request).await
    }

    /// Makes every write so far searchable (`_refresh` of the live index).
    pub async fn refresh(&self) -> Result<(), ElasticError> {
        refresh(&self.client, &self.alias()).await
    }

    /// Whether the live index belongs to the current version; an error when
    /// it belongs to a newer one.
    fn is_current(&self, live: &str) -> Result<bool, ElasticError> {
        let ours = self.projection.version();
        match self.index_generation(live) {
            Some((version, _)) if version == ours => Ok(true),
            Some((version, _)) if version > ours => Err(ElasticError::NewerVersionLive {
                alias: self.alias(),
                live: live.to_owned(),
                live_version: version,
                ours,
            }),
            _ => Ok(false),
        }
    }

    /// Every index whose name starts with `<alias>_v`, with its aliases.
    async fn family(&self) -> Result<Vec<(String, Vec<String>)>, ElasticError> {
        let pattern = format!("{}_v*", self.alias());
        let operation = format!("listing indexes {pattern:?}");
        let response = self
            .client
            .indices()
            .get_alias(IndicesGetAliasParts::Index(&[&pattern]))
            .send()
            .await;
        let (status, body) = status_and_body(&operation, response).await?;
        if status == 404 {
            return Ok(Vec::new());
        }
        if !(200..300).contains(&status) {
            return Err(refusal(&operation, status, &body));
        }
        Ok(body
            .as_object()
            .map(|indexes| {
                indexes
                    .iter()
                    .map(|(index, entry)| {
                        let aliases = entry["aliases"]
                            .as_object()
                            .map(|a| a.keys().cloned().collect())
                            .unwrap_or_default();
                        (index.clone(), aliases)
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Builds `target` and swaps it in. `fresh`: the index must be new
    /// (forced rebuild); otherwise an existing one is resumed.
    async fn build<S>(&self, store: &S, target: &str, fresh: bool) -> Result<Built, ElasticError>
    where
        S: ProjectionStore + Clone,
    {
        let started = Instant::now();
        let name = self.projection_name(target);
        let settings = flat_settings(&self.projection.settings());
        if self.create_index(target, &settings).await? {
            tracing::info!(index = %target, "building a new index from the start of the log");
            // A new index starts from nothing: forget any earlier progress
            // recorded under its name.
            store.save_checkpoint(&name, Position::START).await?;
            let dead_letters: Vec<_> = store
                .dead_letters(&name)
                .await?
                .into_iter()
                .map(|p| p.event.event_id)
                .collect();
            if !dead_letters.is_empty() {
                store.remove_dead_letters(&name, &dead_letters).await?;
            }
        } else if fresh {
            return Err(ElasticError::Unexpected {
                operation: format!("creating index {target:?}"),
                reason: "it already exists".into(),
            });
        } else {
            tracing::info!(index = %target, "resuming an interrupted build");
            self.put_settings(target, build_settings()).await?;
        }

        let writer = IndexWriter::new(self.client.clone(), self.projection.clone(), target)
            .with_name(name.clone())
            .with_options(self.options.build);
        let runner = ProjectionRunner::new(store.clone(), Arc::new(writer))
            .with_options(self.options.build_runner);
        let build_error = |source| ElasticError::Build {
            index: target.to_owned(),
            source: Box::new(source),
        };
        runner.catch_up().await.map_err(build_error)?;

        // Back to serving settings, then pick up what arrived meanwhile.
        let restore = json!({
            "index.refresh_interval": settings.get("index.refresh_interval").cloned().unwrap_or(Value::Null),
            "index.number_of_replicas": settings.get("index.number_of_replicas").cloned().unwrap_or(Value::Null),
        });
        self.put_settings(target, restore).await?;
        let checkpoint = runner.catch_up().await.map_err(build_error)?;
        refresh(&self.client, target).await?;

        let previous = self.swap(target).await?;
        self.delete_replaced(target).await?;
        let built = Built {
            index: target.to_owned(),
            previous,
            checkpoint,
            elapsed: started.elapsed(),
        };
        tracing::info!(
            index = %built.index, previous = ?built.previous, checkpoint = %built.checkpoint,
            elapsed = ?built.elapsed, "index built and swapped in"
        );
        Ok(built)
    }

    /// Creates the index with the build settings; false when it exists.
    async fn create_index(
        &self,
        index: &str,
        settings: &Map<String, Value>,
    ) -> Result<bool, ElasticError> {
        let mut settings = settings.clone();
        if let Value::Object(build) = build_settings() {
            settings.extend(build);
        }
        let operation = format!("creating index {index:?}");
        let response = self
            .client
            .indices()
            .create(IndicesCreateParts::Index(index))
            .body(json!({ "settings": settings, "mappings": self.projection.mappings() }))
            .send()
            .await;
        let (status, body) = status_and_body(&operation, response).await?;
        if (200..300).contains(&status) {
            return Ok(true);
        }
        let error_type = body["error"]["type"].as_str().unwrap_or_default();
        if status == 400 && error_type == "resource_already_exists_exception" {
            return Ok(false);
        }
        Err(refusal(&operation, status, &body))
    }

    async fn put_settings(&self, index: &str, settings: Value) -> Result<(), ElasticError> {
        let response = self
            .client
            .indices()
            .put_settings(IndicesPutSettingsParts::Index(&[index]))
            .body(settings)
            .send()
            .await;
        json_body(&format!("updating the settings of {index:?}"), response).await?;
        Ok(())
    }

    /// Points the alias at `target` in one `_aliases` call (removing it from
    /// whatever it served). Returns the index it served before.
    async fn swap(&self, target: &str) -> Result<Option<String>, ElasticError> {
        let alias = self.alias();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let previous = self.live_index().await?;
            if previous.as_deref() == Some(target) {
                return Ok(None); // another process swapped it in
            }
            let mut actions = Vec::new();
            if let Some(previous) = &previous {
                actions.push(json!({ "remove": { "index": previous, "alias": alias } }));
            }
            actions.push(json!({ "add": { "index": target, "alias": alias } }));
            let operation = format!("moving alias {alias:?} to {target:?}");
            let response = self
                .client
                .indices()
                .update_aliases()
                .body(json!({ "actions": actions }))
                .send()
                .await;
            match json_body(&operation, response).await {
                Ok(_) => return Ok(previous),
                // The alias moved under us (a concurrent build): look again.
                Err(e) if attempts < 3 && !e.is_transient() => {
                    tracing::warn!(%alias, error = %e, "alias swap refused; retrying");
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Deletes the indexes of this read model that `target` replaces: every
    /// one of an older version, or of the same version and an older
    /// generation, that the alias does not serve.
    async fn delete_replaced(&self, target: &str) -> Result<(), ElasticError> {
        let Some(ours) = self.index_generation(target) else {
            return Ok(());
        };
        let alias = self.alias();
        for (index, aliases) in self.family().await? {
            let replaced = self.index_generation(&index).is_some_and(|g| g < ours);
            if !replaced || aliases.contains(&alias) {
                continue;
            }
            let operation = format!("deleting replaced index {index:?}");
            let response = self
                .client
                .indices()
                .delete(IndicesDeleteParts::Index(&[&index]))
                .send()
                .await;
            match json_body(&operation, response).await {
                Ok(_) | Err(ElasticError::MissingIndex(_)) => {
                    tracing::info!(%index, "replaced index deleted");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Refreshes an index or alias.
pub(crate) async fn refresh(client: &Elasticsearch, index: &str) -> Result<(), ElasticError> {
    let response = client
        .indices()
        .refresh(IndicesRefreshParts::Index(&[index]))
        .send()
        .await;
    json_body(&format!("refreshing {index:?}"), response).await?;
    Ok(())
}

/// Settings while building: no refresh, no replicas.
fn build_settings() -> Value {
    json!({ "index.refresh_interval": "-1", "index.number_of_replicas": 0 })
}

/// Settings as flat `index.`-prefixed keys: `{"number_of_shards": 1}` and
/// `{"index": {"number_of_shards": 1}}` both become
/// `{"index.number_of_shards": 1}`.
pub(crate) fn flat_settings(settings: &Value) -> Map<String, Value> {
    fn walk(path: &str, value: &Value, out: &mut Map<String, Value>) {
        match value {
            Value::Object(map) => {
                for (key, value) in map {
                    let path = if path.is_empty() {
                        key.clone()
                    } else {
                        format!("{path}.{key}")
                    };
                    walk(&path, value, out);
                }
            }
            _ if !path.is_empty() => {
                let key = if path.starts_with("index.") {
                    path.to_owned()
                } else {
                    format!("index.{path}")
                };
                out.insert(key, value.clone());
            }
            _ => {}
        }
    }
    let mut out = Map::new();
    walk("", settings, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flattens_settings() {
        let flat = flat_settings(&json!({
            "number_of_shards": 1,
            "index": { "refresh_interval": "5s" },
            "analysis": { "analyzer": { "a": { "type": "standard", "stopwords": ["x"] } } }
        }));
        assert_eq!(
            Value::Object(flat),
            json!({
                "index.number_of_shards": 1,
                "index.refresh_interval": "5s",
                "index.analysis.analyzer.a.type": "standard",
                "index.analysis.analyzer.a.stopwords": ["x"]
            })
        );
        assert!(flat_settings(&json!({})).is_empty());
    }
}
