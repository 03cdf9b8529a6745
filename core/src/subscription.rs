//! Catch-up-then-live subscriptions over any store's `read_all`.

use std::collections::VecDeque;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::watch;

use crate::envelope::RecordedEvent;
use crate::position::Position;
use crate::store::{EventFilter, EventStore, EventStream};

/// How a subscription pages through the log and how often it polls when no
/// wake-up arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscriptionOptions {
    /// Events read per `read_all` call.
    pub page_size: usize,
    /// Poll interval: the fallback when a notification is missed or lost.
    pub poll_interval: Duration,
}

impl Default for SubscriptionOptions {
    fn default() -> Self {
        Self {
            page_size: 512,
            poll_interval: Duration::from_millis(500),
        }
    }
}

/// Builds a subscription from a store's [`EventStore::read_all`] and a wake-up
/// signal that changes whenever new events may be readable.
///
/// Catch-up and live use the same loop: read pages after the last delivered
/// position until one comes back empty, then wait for a wake-up or the poll
/// interval. Because the wake-up is marked seen *before* each read, a commit
/// that lands during a read is never slept through. Stores call this from
/// their `subscribe`; the gap-free guarantee comes from their `read_all`.
pub fn catch_up_then_live<S>(
    store: S,
    after: Position,
    filter: EventFilter,
    wake: watch::Receiver<u64>,
    options: SubscriptionOptions,
) -> EventStream
where
    S: EventStore + Clone,
{
    struct State<S> {
        store: S,
        after: Position,
        filter: EventFilter,
        wake: watch::Receiver<u64>,
        wake_open: bool,
        failed: bool,
        buffer: VecDeque<RecordedEvent>,
        options: SubscriptionOptions,
    }

    let state = State {
        store,
        after,
        filter,
        wake,
        wake_open: true,
        failed: false,
        buffer: VecDeque::new(),
        options,
    };

    futures::stream::unfold(state, |mut s| async move {
        loop {
            if let Some(event) = s.buffer.pop_front() {
                s.after = event.position;
                return Some((Ok(event), s));
            }
            if std::mem::take(&mut s.failed) {
                tokio::time::sleep(s.options.poll_interval).await;
            }
            s.wake.borrow_and_update();
            match s
                .store
                .read_all(s.after, s.options.page_size, &s.filter)
                .await
            {
                Ok(events) if !events.is_empty() => s.buffer.extend(events),
                Ok(_) => {
                    if s.wake_open {
                        tokio::select! {
                            changed = s.wake.changed() => s.wake_open = changed.is_ok(),
                            () = tokio::time::sleep(s.options.poll_interval) => {}
                        }
                    } else {
                        tokio::time::sleep(s.options.poll_interval).await;
                    }
                }
                Err(error) => {
                    // Report at once; the next read waits one poll interval.
                    s.failed = true;
                    return Some((Err(error), s));
                }
            }
        }
    })
    .boxed()
}
