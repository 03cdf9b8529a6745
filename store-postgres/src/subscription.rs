//! Subscriptions ([`EventStore::subscribe`](annals::EventStore::subscribe)):
//! catch up, then follow the log, woken by `LISTEN/NOTIFY`.
//!
//! Every append notifies the store's channel once its events are committed
//! (see [`NotifyMode`](crate::NotifyMode) for when exactly). One
//! background task per store holds a `PgListener` on its own connection and
//! bumps a [`watch`] counter on every notification; each subscription (built
//! by [`catch_up_then_live`]) reads the log after its last position whenever
//! the counter moves, and every poll interval anyway, so a lost notification
//! (a dropped connection, a listener reconnecting) costs at most one poll
//! interval. The task reconnects by itself and bumps the counter after every
//! reconnect, because notifications sent meanwhile are lost. It ends when the
//! last subscription is dropped.

use std::sync::PoisonError;
use std::time::Duration;

use annals::subscription::catch_up_then_live;
use annals::{EventFilter, EventStream, Position};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use tokio::sync::watch;

use crate::handle::PgEventStore;
use crate::notify::NotifyMode;

/// How long the listener waits before reconnecting after a failure.
const RECONNECT_DELAY: Duration = Duration::from_millis(500);

/// Catches up after `after`, then follows the log (the trait's `subscribe`).
pub(crate) fn subscribe(store: &PgEventStore, after: Position, filter: EventFilter) -> EventStream {
    catch_up_then_live(
        store.clone(),
        after,
        filter,
        wake_receiver(store),
        store.inner.subscription,
    )
}

/// A receiver of the shared listener's wake-ups, starting the listener
/// task when none runs. Without a channel or a Tokio runtime the
/// receiver never changes and subscriptions poll.
fn wake_receiver(store: &PgEventStore) -> watch::Receiver<u64> {
    let inner = &store.inner;
    if inner.notify == NotifyMode::Off {
        return watch::channel(0).1;
    }
    let channel = inner.channel.clone();
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return watch::channel(0).1;
    };
    let mut slot = inner.wake.lock().unwrap_or_else(PoisonError::into_inner);
    // The task ends once no receiver is left; a sender with receivers
    // still has its task.
    if let Some(sender) = slot.as_ref().filter(|s| s.receiver_count() > 0) {
        return sender.subscribe();
    }
    let (sender, receiver) = watch::channel(0);
    let options = (*inner.pool.connect_options())
        .clone()
        .application_name(&inner.listener_application_name);
    runtime.spawn(listen(options, channel, sender.clone()));
    *slot = Some(sender);
    receiver
}

fn bump(sender: &watch::Sender<u64>) {
    sender.send_modify(|n| *n = n.wrapping_add(1));
}

/// The listener task: wakes subscriptions on every notification until no
/// subscription is left.
async fn listen(options: PgConnectOptions, channel: String, sender: watch::Sender<u64>) {
    // Its own small pool, so the listener's connection has its own
    // application_name and never competes with the store's pool.
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .min_connections(0)
        .idle_timeout(None)
        .max_lifetime(None)
        .acquire_timeout(Duration::from_secs(10))
        .connect_lazy_with(options);
    let mut listener: Option<PgListener> = None;
    loop {
        let current = match listener.as_mut() {
            Some(current) => current,
            None => {
                let connect = async {
                    let mut fresh = PgListener::connect_with(&pool).await?;
                    fresh.listen(&channel).await?;
                    Ok::<_, sqlx::Error>(fresh)
                };
                let connected = tokio::select! {
                    () = sender.closed() => break,
                    connected = connect => connected,
                };
                match connected {
                    Ok(fresh) => {
                        // Anything committed before LISTEN took effect
                        // notified nobody: have subscriptions look.
                        bump(&sender);
                        listener.insert(fresh)
                    }
                    Err(error) => {
                        tracing::warn!(%error, %channel, "annals listener cannot connect; retrying");
                        tokio::select! {
                            () = sender.closed() => break,
                            () = tokio::time::sleep(RECONNECT_DELAY) => continue,
                        }
                    }
                }
            }
        };
        let received = tokio::select! {
            () = sender.closed() => break,
            received = current.try_recv() => received,
        };
        match received {
            Ok(Some(_notification)) => bump(&sender),
            // The connection was lost; the listener has reconnected and
            // listens again, but notifications sent meanwhile are lost.
            Ok(None) => {
                tracing::debug!(%channel, "annals listener reconnected");
                bump(&sender);
            }
            Err(error) => {
                tracing::warn!(%error, %channel, "annals listener lost its connection; reconnecting");
                listener = None;
                bump(&sender);
                tokio::select! {
                    () = sender.closed() => break,
                    () = tokio::time::sleep(RECONNECT_DELAY) => {}
                }
            }
        }
    }
    drop(listener);
    pool.close().await;
}
