//! The background work of a serving process: projection runners, the
//! booking saga and its deadlines, the integration relay and the
//! notifications' consumer, started together and stopped together.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use annals::projection::{
    PartitionedRunner, Projection, ProjectionRunner, ProjectionStore, RunnerError, RunnerOptions,
    RunnerProgress, checkpoint_name,
};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use annals_postgres::PgEventStore;
use annals_rabbitmq::{Inbox, Subscription};

use crate::app::Airline;
use crate::integration;
use crate::notifications::Notifications;
use crate::search::{ElasticFlights, FLIGHTS_PROJECTION};

/// A projection runner's name and live progress, for `/health` and `/metrics`.
#[derive(Debug, Clone)]
pub struct RunnerInfo {
    /// The projection.
    pub name: String,
    /// Its progress updates.
    pub progress: watch::Receiver<RunnerProgress>,
}

/// The background tasks of a serving process, stopped together.
///
/// Dropping it cancels the tasks; [`Background::shutdown`] also waits for
/// them (runners finish their batch and save their checkpoint).
pub struct Background {
    shutdown: CancellationToken,
    tasks: JoinSet<()>,
    runners: Vec<RunnerInfo>,
}

impl Background {
    /// No tasks yet; they stop when `shutdown` is cancelled.
    pub fn new(shutdown: CancellationToken) -> Self {
        Self {
            shutdown,
            tasks: JoinSet::new(),
            runners: Vec::new(),
        }
    }

    /// Starts a projection runner: with one partition it takes the
    /// projection's lease first; with several, a [`PartitionedRunner`]
    /// claims its share of them, and each partition shows as a runner of its
    /// own (`<name>#<partition>/<partitions>`). Returns the first.
    pub fn projection<S, P>(
        &mut self,
        store: S,
        projection: Arc<P>,
        options: RunnerOptions,
    ) -> RunnerInfo
    where
        S: ProjectionStore + Clone,
        P: Projection,
    {
        let partitions = projection.partitions();
        if partitions > 1 {
            let runner = PartitionedRunner::new(store, projection, options);
            let infos: Vec<RunnerInfo> = runner
                .progress()
                .into_iter()
                .enumerate()
                .map(|(partition, progress)| RunnerInfo {
                    name: checkpoint_name(runner.name(), partition as u32, partitions),
                    progress,
                })
                .collect();
            let name = runner.name().to_owned();
            let stop = self.shutdown.clone();
            self.spawn(name, async move { runner.run(stop).await });
            self.runners.extend(infos.iter().cloned());
            return infos[0].clone();
        }
        let runner = ProjectionRunner::new(store, projection).with_options(options);
        let info = RunnerInfo {
            name: runner.name().to_owned(),
            progress: runner.progress(),
        };
        let stop = self.shutdown.clone();
        self.spawn(info.name.clone(), async move { runner.run(stop).await });
        self.runners.push(info.clone());
        info
    }

    /// Runs a projection's runner, logging how it ended.
    fn spawn(
        &mut self,
        name: String,
        run: impl Future<Output = Result<(), RunnerError>> + Send + 'static,
    ) {
        self.tasks.spawn(async move {
            match run.await {
                Ok(()) => tracing::info!(projection = %name, "projection stopped"),
                Err(error) => tracing::error!(projection = %name, %error, "projection failed"),
            }
        });
    }

    /// Starts the booking saga: its runner and its deadline loop.
    pub fn booking_saga<S>(
        &mut self,
        airline: &Airline<S>,
        options: RunnerOptions,
        deadline_interval: Duration,
        partitions: u32,
    ) -> RunnerInfo
    where
        S: ProjectionStore + Clone,
    {
        let saga = Arc::new(airline.saga().partitions(partitions));
        let info = self.projection(airline.store().clone(), Arc::clone(&saga), options);
        let stop = self.shutdown.clone();
        self.tasks
            .spawn(async move { saga.run_deadlines(deadline_interval, stop).await });
        info
    }

    /// Keeps the Elasticsearch flight read model current: builds it on first
    /// start (blue/green when its version changed), runs its projector, and
    /// follows the alias when a rebuild elsewhere replaced the index. The
    /// status it reports follows whichever runner is current.
    pub fn elastic_flights<S>(
        &mut self,
        store: S,
        flights: Arc<ElasticFlights>,
        options: RunnerOptions,
    ) -> RunnerInfo
    where
        S: ProjectionStore + Clone,
    {
        let (forward, status) = watch::channel(RunnerProgress::default());
        let info = RunnerInfo {
            name: FLIGHTS_PROJECTION.to_owned(),
            progress: status,
        };
        let stop = self.shutdown.clone();
        self.tasks.spawn(async move {
            let observe = |runner: &ProjectionRunner<S, _>| {
                let mut current = runner.progress();
                let forward = forward.clone();
                tokio::spawn(async move {
                    loop {
                        forward.send_replace(current.borrow_and_update().clone());
                        if current.changed().await.is_err() {
                            return;
                        }
                    }
                });
            };
            match flights.run(store, options, stop, observe).await {
                Ok(()) => tracing::info!("flight read model stopped"),
                Err(error) => tracing::error!(%error, "flight read model failed"),
            }
        });
        self.runners.push(info.clone());
        info
    }

    /// Starts the integration relay: the airline's integration events
    /// ([`integration`]) published to `exchange` on the broker at `url`.
    /// Like every projection it takes its lease first, so one process
    /// publishes at a time.
    pub fn relay<S>(
        &mut self,
        store: S,
        url: &str,
        exchange: &str,
        options: RunnerOptions,
    ) -> RunnerInfo
    where
        S: ProjectionStore + Clone,
    {
        let relay = integration::relay(store.clone(), url, exchange);
        self.projection(store, Arc::new(relay), options)
    }

    /// Starts the notifications' consumer: `subscription`'s messages through
    /// `inbox` (migrated already), each notice appended to `store`.
    pub fn notifications(&mut self, inbox: Inbox, store: PgEventStore, subscription: Subscription) {
        let stop = self.shutdown.clone();
        self.tasks.spawn(async move {
            let handler = Arc::new(Notifications::new(store));
            match inbox.consume(subscription, handler, stop).await {
                Ok(()) => tracing::info!("notifications stopped"),
                Err(error) => {
                    tracing::error!(error = %annals::error::report(&error), "notifications failed")
                }
            }
        });
    }

    /// The runners started so far.
    pub fn runners(&self) -> Vec<RunnerInfo> {
        self.runners.clone()
    }

    /// The token that stops the tasks.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops every task and waits for them, at most `grace`; what is still
    /// running then is aborted.
    pub async fn shutdown(mut self, grace: Duration) {
        self.shutdown.cancel();
        let tasks = &mut self.tasks;
        let drained =
            tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            tracing::warn!(
                remaining = self.tasks.len(),
                "background tasks did not stop in time; aborting them"
            );
            self.tasks.abort_all();
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
