//! The Elasticsearch (or OpenSearch) flight read model: [`ElasticFlights`]
//! serves [`FlightReads`] from the index that [`FlightIndex`] keeps.

use std::sync::{PoisonError, RwLock};

use annals::projection::{ProjectionRunner, ProjectionStore, RunnerOptions};
use annals_elastic::elasticsearch::Elasticsearch;
use annals_elastic::{Built, ElasticError, IndexWriter, ReadModel};
use async_trait::async_trait;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{FlightIndex, FlightPage, FlightReads, FlightSearch, ReadError, search_request};

#[cfg(doc)]
use super::FlightView;
#[cfg(doc)]
use annals_elastic::DocumentProjection;

/// The flight read side on Elasticsearch or OpenSearch: the alias `flights`
/// (behind a prefix) over `flights_v<version>`.
///
/// ```no_run
/// # async fn example(store: annals::memory::MemoryStore) -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use airline::search::{FlightReads, FlightSearch};
/// use airline::search::ElasticFlights;
/// use annals::projection::ProjectionRunner;
///
/// let flights = ElasticFlights::new(annals_elastic::connect("http://127.0.0.1:9200")?, "");
/// // Builds (or rebuilds, blue/green) the index, then hands out its index writer.
/// let writer = flights.open(&store).await?;
/// tokio::spawn(async move {
///     ProjectionRunner::new(store, Arc::new(writer))
///         .run(tokio_util::sync::CancellationToken::new())
///         .await
/// });
/// let page = flights
///     .search(&FlightSearch { from: Some("JFK".parse()?), limit: 20, ..FlightSearch::default() })
///     .await?;
/// # Ok(()) }
/// ```
pub struct ElasticFlights {
    read_model: ReadModel<FlightIndex>,
    projection: RwLock<String>,
}

impl ElasticFlights {
    /// The read model on `client`, its indexes and alias behind `prefix`.
    pub fn new(client: Elasticsearch, prefix: &str) -> Self {
        let read_model = ReadModel::new(client, FlightIndex).with_prefix(prefix);
        let projection = read_model.projection_name(&read_model.versioned_index());
        Self {
            read_model,
            projection: RwLock::new(projection),
        }
    }

    /// [`new`](Self::new) around a configured read model.
    pub fn from_read_model(read_model: ReadModel<FlightIndex>) -> Self {
        let projection = read_model.projection_name(&read_model.versioned_index());
        Self {
            read_model,
            projection: RwLock::new(projection),
        }
    }

    /// The underlying read model (alias, indexes, generic queries).
    pub fn read_model(&self) -> &ReadModel<FlightIndex> {
        &self.read_model
    }

    /// Makes the alias serve the current version (building it blue/green if
    /// needed) and returns the index writer that keeps it current, to run with
    /// [`annals::projection::ProjectionRunner::run`].
    pub async fn open<S>(&self, store: &S) -> Result<IndexWriter<FlightIndex>, ElasticError>
    where
        S: ProjectionStore + Clone,
    {
        let writer = self.read_model.open(store).await?;
        self.set_projection(annals::projection::Projection::name(&writer));
        Ok(writer)
    }

    /// Keeps the index current until `shutdown` ([`ReadModel::run`]): opens
    /// it, runs its index writer, and follows the alias when a rebuild elsewhere
    /// replaced the index. `observe` sees each runner before it starts (its
    /// name and progress, for health and metrics); [`FlightReads::projection_name`]
    /// follows too.
    pub async fn run<S, F>(
        &self,
        store: S,
        options: RunnerOptions,
        shutdown: CancellationToken,
        mut observe: F,
    ) -> Result<(), ElasticError>
    where
        S: ProjectionStore + Clone,
        F: FnMut(&ProjectionRunner<S, IndexWriter<FlightIndex>>) + Send,
    {
        self.read_model
            .run(store, options, shutdown, |runner| {
                self.set_projection(runner.name().to_owned());
                observe(runner);
            })
            .await
    }

    /// Rebuilds into a fresh index and swaps it in (`airline rebuild flights`).
    /// A runner of the replaced index stops at its next batch; open again.
    pub async fn rebuild<S>(&self, store: &S) -> Result<Built, ElasticError>
    where
        S: ProjectionStore + Clone,
    {
        let built = self.read_model.rebuild(store).await?;
        self.set_projection(self.read_model.projection_name(&built.index));
        Ok(built)
    }

    fn set_projection(&self, name: String) {
        *self
            .projection
            .write()
            .unwrap_or_else(PoisonError::into_inner) = name;
    }
}

fn read_error(error: ElasticError) -> ReadError {
    match error {
        ElasticError::InvalidCursor(why) => ReadError::BadCursor(why),
        ElasticError::MissingIndex(index) => {
            ReadError::Unavailable(format!("the flight index {index:?} is not built yet"))
        }
        other => ReadError::Unavailable(other.to_string()),
    }
}

#[async_trait]
impl FlightReads for ElasticFlights {
    async fn flight(&self, id: Uuid) -> Result<Option<super::FlightView>, ReadError> {
        let doc = self
            .read_model
            .get(&id.to_string())
            .await
            .map_err(read_error)?;
        Ok(doc.map(|d| d.view))
    }

    async fn search(&self, search: &FlightSearch) -> Result<FlightPage, ReadError> {
        let request = search_request(search);
        let page = self.read_model.search(&request).await.map_err(read_error)?;
        Ok(FlightPage {
            flights: page.docs.into_iter().map(|d| d.view).collect(),
            next: page.next,
        })
    }

    fn projection_name(&self) -> String {
        self.projection
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    async fn health(&self) -> Result<String, ReadError> {
        match self.read_model.live_index().await {
            Ok(Some(index)) => Ok(format!(
                "elasticsearch, alias {} on {index}",
                self.read_model.alias()
            )),
            Ok(None) => Err(ReadError::Unavailable(format!(
                "alias {} does not exist yet",
                self.read_model.alias()
            ))),
            Err(error) => Err(read_error(error)),
        }
    }
}
