//! [`PgEventStore`], the handle on the store: a pool and the state its
//! clones share (connection cache, group commit, notifier, listener).
//!
//! The operations live in the modules named as core's (see the [crate
//! documentation](crate#where-things-live)); the store is built by
//! [`PgStoreOptions`](crate::PgStoreOptions) (`options.rs`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use annals::AppendLimits;
use annals::subscription::SubscriptionOptions;
use sqlx::postgres::PgPool;
use tokio::sync::{Notify, watch};

use crate::append::conditional_group::ConditionalGroup;
use crate::append::group::GroupCommit;
use crate::connections::Connections;
use crate::error::PgError;
use crate::notify::{Notifier, NotifyMode};

/// An event store on PostgreSQL.
///
/// Cheap to clone: clones share one connection pool and one notification
/// listener. See the [crate documentation](crate) for the design.
#[derive(Clone)]
pub struct PgEventStore {
    pub(crate) inner: Arc<Inner>,
}

/// What the clones of a store share.
pub(crate) struct Inner {
    pub(crate) pool: PgPool,
    /// Connections kept between appends and log reads.
    pub(crate) conns: Arc<Connections>,
    pub(crate) limits: AppendLimits,
    pub(crate) channel: String,
    pub(crate) notify: NotifyMode,
    pub(crate) notifier: Notifier,
    /// Group commit of concurrent pooled appends; `None` when turned off.
    pub(crate) group: Option<GroupCommit>,
    /// Group commit of concurrent conditional appends; `None` when turned off.
    pub(crate) conditional: Option<ConditionalGroup>,
    /// Signalled whenever an append of this store ends: conditional appends
    /// waiting for older transactions look again.
    pub(crate) ended: Arc<Notify>,
    /// How long a conditional append may wait and retry.
    pub(crate) append_if_timeout: Duration,
    pub(crate) subscription: SubscriptionOptions,
    pub(crate) listener_application_name: String,
    /// The wake-up signal of the shared listener task, while it runs.
    pub(crate) wake: Mutex<Option<watch::Sender<u64>>>,
}

impl std::fmt::Debug for PgEventStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgEventStore")
            .field("limits", &self.inner.limits)
            .field("channel", &self.inner.channel)
            .field("notify", &self.inner.notify)
            .field("subscription", &self.inner.subscription)
            .finish_non_exhaustive()
    }
}

impl PgEventStore {
    /// Creates or upgrades the annals tables and functions in the current
    /// schema (the first of the connection's `search_path`), recording the
    /// versions in `annals_migrations` (so an application's own sqlx
    /// migrations in the same schema are not disturbed). Safe to run again,
    /// and from several processes at once (it takes an advisory lock).
    pub async fn migrate(&self) -> Result<(), PgError> {
        crate::migrate::migrate(&self.inner.pool).await
    }

    /// The connection pool, for the application's own queries (for example
    /// to begin a transaction for [`append_in_transaction`](Self::append_in_transaction)).
    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// The limits appends are checked against.
    pub fn limits(&self) -> &AppendLimits {
        &self.inner.limits
    }

    /// The notification channel.
    pub fn notify_channel(&self) -> &str {
        &self.inner.channel
    }

    /// When appends notify.
    pub fn notify_mode(&self) -> NotifyMode {
        self.inner.notify
    }

    /// Closes the pool: waits for checked-out connections to come back and
    /// closes them. Later operations fail with
    /// [`StoreError::Unavailable`](annals::StoreError::Unavailable).
    pub async fn close(&self) {
        self.inner.conns.drain();
        self.inner.pool.close().await;
    }
}
