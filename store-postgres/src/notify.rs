//! How appends tell subscriptions that there is something new to read.
//!
//! Subscriptions wake on `LISTEN/NOTIFY` (see the [crate documentation](crate))
//! and poll as a fallback. Appends notify in one of two ways:
//!
//! * [`NotifyMode::InTransaction`] (the default, as the design asks): the
//!   append function calls `pg_notify` inside the append's transaction. The
//!   notification goes out exactly when the events commit. The cost:
//!   PostgreSQL serialises the commits of notifying transactions (a
//!   database-wide lock, taken before the commit record is flushed and held
//!   until after), so concurrent appends cannot share a WAL flush ("group
//!   commit"): with `fsync` on, notifying transactions are capped at about
//!   one flush each. The store's group commit (see the
//!   [crate documentation](crate#group-commit)) makes concurrent appends
//!   share one transaction, so they share that flush and one notification.
//! * [`NotifyMode::AfterCommit`]: the append commits without notifying, and a
//!   background task of the store sends `pg_notify` right after, from its own
//!   short transaction that writes nothing (so it flushes nothing), coalescing
//!   bursts (at most one notification per 5 ms; the first append after a
//!   quiet spell notifies at once). Commits group-flush again, so large
//!   appends skip the store's group commit. A notification
//!   still never precedes the commit it announces; if the process dies
//!   between the two, subscriptions find the events at their next poll.
//!
//! [`PgEventStore::append_in_transaction`](crate::PgEventStore::append_in_transaction)
//! always notifies inside the caller's transaction (the store cannot see the
//! caller's commit), unless notifications are off.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::Notify;

/// When appends send their `NOTIFY`. See the [module documentation](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NotifyMode {
    /// `pg_notify` inside each append's transaction.
    #[default]
    InTransaction,
    /// `pg_notify` right after the append committed, coalesced, from a
    /// background task.
    AfterCommit,
    /// No notifications: subscriptions only poll.
    Off,
}

impl NotifyMode {
    /// The channel an append notifies inside its own transaction: `channel`
    /// with [`NotifyMode::InTransaction`], else '' (none).
    pub(crate) fn in_transaction(self, channel: &str) -> &str {
        match self {
            NotifyMode::InTransaction => channel,
            NotifyMode::AfterCommit | NotifyMode::Off => "",
        }
    }
}

/// The after-commit notifier: one background task per store, started by the
/// first append that needs it, ended when the store is dropped.
#[derive(Debug, Default)]
pub(crate) struct Notifier {
    shared: Arc<Shared>,
    started: AtomicBool,
}

#[derive(Debug, Default)]
struct Shared {
    pending: AtomicBool,
    wake: Notify,
    closed: AtomicBool,
}

impl Notifier {
    /// Asks for a notification on `channel` soon. Cheap: appends in a burst
    /// share one.
    pub(crate) fn poke(&self, pool: &PgPool, channel: &str) {
        if !self.started.load(Ordering::Acquire) && !self.started.swap(true, Ordering::AcqRel) {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    runtime.spawn(notify_loop(
                        Arc::clone(&self.shared),
                        pool.clone(),
                        channel.to_owned(),
                    ));
                }
                Err(_) => {
                    // No runtime to run the task on: subscriptions poll.
                    self.started.store(false, Ordering::Release);
                    return;
                }
            }
        }
        self.shared.pending.store(true, Ordering::Release);
        self.shared.wake.notify_one();
    }
}

impl Drop for Notifier {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
        self.shared.wake.notify_one();
    }
}

/// The least time between two notifications of one store: the first append
/// of a burst notifies at once, the rest of the burst shares one
/// notification per interval (each costs the server a small transaction).
const MIN_INTERVAL: Duration = Duration::from_millis(5);

async fn notify_loop(shared: Arc<Shared>, pool: PgPool, channel: String) {
    loop {
        shared.wake.notified().await;
        if shared.closed.load(Ordering::Acquire) {
            return;
        }
        while shared.pending.swap(false, Ordering::AcqRel) {
            let sent_at = tokio::time::Instant::now();
            let sent = sqlx::query("SELECT pg_notify($1, '')")
                .bind(&channel)
                .execute(&pool)
                .await;
            if let Err(error) = sent {
                // Subscriptions fall back to polling; try again on the next append.
                tracing::debug!(%error, %channel, "annals notifier could not notify");
                if pool.is_closed() || shared.closed.load(Ordering::Acquire) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            tokio::time::sleep_until(sent_at + MIN_INTERVAL).await;
        }
    }
}
