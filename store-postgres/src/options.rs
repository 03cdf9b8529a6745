//! How a [`PgEventStore`] is built: [`PgStoreOptions`] (connection,
//! validation, notification and polling settings) and the constructors.

use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use annals::AppendLimits;
use annals::subscription::SubscriptionOptions;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use tokio::sync::Notify;

use crate::append::conditional_group::ConditionalGroup;
use crate::append::group::GroupCommit;
use crate::connections::Connections;
use crate::error::PgError;
use crate::handle::{Inner, PgEventStore};
use crate::notify::{Notifier, NotifyMode};

/// The default `LISTEN`/`NOTIFY` channel.
pub const DEFAULT_CHANNEL: &str = "annals_events";

/// The default `application_name` of the store's connections.
pub const DEFAULT_APPLICATION_NAME: &str = "annals";

/// The default `application_name` of the subscription listener's connection.
pub const DEFAULT_LISTENER_APPLICATION_NAME: &str = "annals-listener";

/// How long a conditional append waits, by default, for the locks on its
/// tags or for the transactions older than its own (see
/// [`PgStoreOptions::append_if_timeout`]).
pub const DEFAULT_APPEND_IF_TIMEOUT: Duration = Duration::from_secs(10);

/// How [`PgEventStore`] connects, validates, notifies and polls.
///
/// ```
/// use std::time::Duration;
/// use annals::AppendLimits;
/// use annals_postgres::PgStoreOptions;
///
/// let options = PgStoreOptions::new()
///     .max_connections(20)
///     .acquire_timeout(Duration::from_secs(5))
///     .notify_channel("flights_events")
///     .poll_interval(Duration::from_millis(250))
///     .limits(AppendLimits { max_payload_bytes: 64 * 1024, ..AppendLimits::default() });
/// # let _ = options;
/// ```
#[derive(Debug, Clone)]
pub struct PgStoreOptions {
    limits: AppendLimits,
    channel: String,
    notify: NotifyMode,
    subscription: SubscriptionOptions,
    max_connections: u32,
    min_connections: u32,
    acquire_timeout: Duration,
    test_before_acquire: bool,
    cache_connections: bool,
    group_commit: bool,
    append_if_timeout: Duration,
    application_name: String,
    listener_application_name: String,
}

impl Default for PgStoreOptions {
    fn default() -> Self {
        Self {
            limits: AppendLimits::default(),
            channel: DEFAULT_CHANNEL.to_owned(),
            notify: NotifyMode::default(),
            subscription: SubscriptionOptions::default(),
            max_connections: 10,
            min_connections: 0,
            acquire_timeout: Duration::from_secs(10),
            test_before_acquire: false,
            cache_connections: true,
            group_commit: true,
            append_if_timeout: DEFAULT_APPEND_IF_TIMEOUT,
            application_name: DEFAULT_APPLICATION_NAME.to_owned(),
            listener_application_name: DEFAULT_LISTENER_APPLICATION_NAME.to_owned(),
        }
    }
}

impl PgStoreOptions {
    /// The defaults: [`AppendLimits::default`], channel [`DEFAULT_CHANNEL`]
    /// notified in each append's transaction ([`NotifyMode::InTransaction`]),
    /// [`SubscriptionOptions::default`] (pages of 512, polling every 500 ms),
    /// up to 10 connections, 10 s to acquire one, not pinged before use.
    pub fn new() -> Self {
        Self::default()
    }

    /// The limits every append is checked against before it reaches the server.
    pub fn limits(mut self, limits: AppendLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The `LISTEN`/`NOTIFY` channel appends notify and subscriptions listen
    /// on (at most 63 bytes). Stores sharing a database and a schema must
    /// share the channel; stores in different schemas should not.
    pub fn notify_channel(mut self, channel: impl Into<String>) -> Self {
        self.channel = channel.into();
        self
    }

    /// When appends notify: in their transaction (the default), right after
    /// their commit, or not at all. With group commit on, the first two
    /// perform alike; see [`NotifyMode`].
    pub fn notify_mode(mut self, mode: NotifyMode) -> Self {
        self.notify = mode;
        self
    }

    /// Appends send no notification and subscriptions only poll
    /// (`notify_mode(NotifyMode::Off)`).
    pub fn without_notifications(self) -> Self {
        self.notify_mode(NotifyMode::Off)
    }

    /// How often a subscription reads when no notification arrives: the
    /// fallback when a notification is lost (a dropped listener connection).
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.subscription.poll_interval = interval;
        self
    }

    /// Events a subscription reads per query.
    pub fn page_size(mut self, page_size: usize) -> Self {
        self.subscription.page_size = page_size.max(1);
        self
    }

    /// Most connections of the pool [`connect`](Self::connect) builds.
    pub fn max_connections(mut self, max: u32) -> Self {
        self.max_connections = max;
        self
    }

    /// Connections the pool keeps open even when idle.
    pub fn min_connections(mut self, min: u32) -> Self {
        self.min_connections = min;
        self
    }

    /// How long an operation waits for a connection before it fails with
    /// [`StoreError::Unavailable`](annals::StoreError::Unavailable).
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// Whether a pooled connection is pinged before each use (off by
    /// default). The ping costs a round trip per operation; without it, a
    /// connection the server dropped while idle fails its next operation
    /// at once, and the store runs that operation again on another
    /// connection (reads, and appends, which are idempotent by event id), so
    /// callers see the loss only when every connection is gone.
    pub fn test_before_acquire(mut self, test: bool) -> Self {
        self.test_before_acquire = test;
        self
    }

    /// Whether appends and log reads keep their connections between
    /// operations (the default): at most half the pool, each returned to the
    /// pool after 100 ms unused and when the pool closes. It saves the round
    /// trip sqlx's pool spends checking every connection that comes back.
    /// Turn it off when every connection of a small shared pool must be
    /// available to other code at all times.
    pub fn cache_connections(mut self, cache: bool) -> Self {
        self.cache_connections = cache;
        self
    }

    /// Whether concurrent appends share one statement and one commit (on by
    /// default). Each append is still checked and answered on its own; an
    /// idle store writes a lone append at once. Grouping lets appends that
    /// arrive together share one WAL flush and one notification, which
    /// PostgreSQL cannot do for transactions that notify (see
    /// [`NotifyMode`]). Turn it off to give each append its own transaction
    /// (for example to compare).
    ///
    /// Conditional appends ([`EventStore::append_if`](annals::EventStore::append_if))
    /// are grouped too, in groups of their own (see the [crate
    /// documentation](crate#conditional-appends)).
    pub fn group_commit(mut self, group: bool) -> Self {
        self.group_commit = group;
        self
    }

    /// How long a conditional append ([`EventStore::append_if`](annals::EventStore::append_if))
    /// may wait for the locks on its tags (held by transactions that
    /// appended events with them), or for the transactions older than its
    /// own to end (a condition with an item without a tag), and try again
    /// when its stream moved, before it fails with
    /// [`StoreError::Unavailable`](annals::StoreError::Unavailable) holding an
    /// [`AppendIfTimeout`](crate::AppendIfTimeout) that says which (naming
    /// the oldest running transaction when it waited for one; see the
    /// [crate documentation](crate#conditional-appends)).
    /// [`DEFAULT_APPEND_IF_TIMEOUT`] (10 s) by default.
    pub fn append_if_timeout(mut self, timeout: Duration) -> Self {
        self.append_if_timeout = timeout;
        self
    }

    /// The `application_name` of the pool's connections (as seen in
    /// `pg_stat_activity`).
    pub fn application_name(mut self, name: impl Into<String>) -> Self {
        self.application_name = name.into();
        self
    }

    /// The `application_name` of the subscription listener's connection.
    pub fn listener_application_name(mut self, name: impl Into<String>) -> Self {
        self.listener_application_name = name.into();
        self
    }

    fn validate(&self) -> Result<(), PgError> {
        let channel = &self.channel;
        if channel.is_empty() || channel.len() > 63 || channel.contains('\0') {
            return Err(PgError::InvalidOption(format!(
                "notify channel {channel:?} must be 1 to 63 bytes without NUL"
            )));
        }
        if self.max_connections == 0 {
            return Err(PgError::InvalidOption(
                "max_connections must be at least 1".into(),
            ));
        }
        Ok(())
    }

    fn pool_options(&self) -> PgPoolOptions {
        PgPoolOptions::new()
            .max_connections(self.max_connections)
            .min_connections(self.min_connections.min(self.max_connections))
            .acquire_timeout(self.acquire_timeout)
            .test_before_acquire(self.test_before_acquire)
    }

    fn connect_options(&self, url: &str) -> Result<PgConnectOptions, PgError> {
        Ok(self.session(PgConnectOptions::from_str(url).map_err(PgError::InvalidUrl)?))
    }

    /// The store's session settings on `options`: its `application_name`,
    /// and no JIT (the store's statements run in a fraction of a
    /// millisecond; on a large log their estimated cost can pass
    /// `jit_above_cost`, and compiling them took up to a second each).
    fn session(&self, options: PgConnectOptions) -> PgConnectOptions {
        options
            .application_name(&self.application_name)
            .options([("jit", "off")])
    }

    /// Opens a pool on `url` (a `postgres://` URL, as in `DATABASE_URL`) and
    /// checks that the server answers.
    pub async fn connect(self, url: &str) -> Result<PgEventStore, PgError> {
        self.validate()?;
        let pool = self
            .pool_options()
            .connect_with(self.connect_options(url)?)
            .await
            .map_err(PgError::Connect)?;
        Ok(self.build(pool))
    }

    /// Like [`connect`](Self::connect), with connect options built in code
    /// (the `application_name` set here applies).
    pub async fn connect_with(self, options: PgConnectOptions) -> Result<PgEventStore, PgError> {
        self.validate()?;
        let pool = self
            .pool_options()
            .connect_with(self.session(options))
            .await
            .map_err(PgError::Connect)?;
        Ok(self.build(pool))
    }

    /// Like [`connect`](Self::connect), but connects on first use: the store
    /// can be built while the server is still starting.
    pub fn connect_lazy(self, url: &str) -> Result<PgEventStore, PgError> {
        self.validate()?;
        let pool = self
            .pool_options()
            .connect_lazy_with(self.connect_options(url)?);
        Ok(self.build(pool))
    }

    /// Uses an existing pool (its own settings apply; the pool options here
    /// are ignored, and so is the session setting the store's own pools
    /// have: `jit = off`, which such a pool's connections should set too).
    pub fn from_pool(self, pool: PgPool) -> Result<PgEventStore, PgError> {
        self.validate()?;
        Ok(self.build(pool))
    }

    fn build(self, pool: PgPool) -> PgEventStore {
        let conns = Connections::new(pool.clone(), self.cache_connections);
        let ended = Arc::new(Notify::new());
        let channel = self.notify.in_transaction(&self.channel);
        let group = self
            .group_commit
            .then(|| GroupCommit::new(conns.clone(), channel.to_owned(), ended.clone()));
        let conditional = self.group_commit.then(|| {
            ConditionalGroup::new(
                conns.clone(),
                channel.to_owned(),
                ended.clone(),
                self.append_if_timeout,
            )
        });
        PgEventStore {
            inner: Arc::new(Inner {
                conns,
                group,
                conditional,
                ended,
                append_if_timeout: self.append_if_timeout,
                pool,
                limits: self.limits,
                channel: self.channel,
                notify: self.notify,
                notifier: Notifier::default(),
                subscription: self.subscription,
                listener_application_name: self.listener_application_name,
                wake: Mutex::new(None),
            }),
        }
    }
}

impl PgEventStore {
    /// Connects to `url` with the default [`PgStoreOptions`].
    pub async fn connect(url: &str) -> Result<Self, PgError> {
        PgStoreOptions::new().connect(url).await
    }

    /// A store on an existing pool, with the default [`PgStoreOptions`].
    pub fn from_pool(pool: PgPool) -> Self {
        PgStoreOptions::new().build(pool)
    }

    /// Options to build a store with.
    pub fn options() -> PgStoreOptions {
        PgStoreOptions::new()
    }
}
