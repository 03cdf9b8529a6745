//! The queue both group commits ([`super::group`], [`super::conditional_group`])
//! are built on: requests waiting for a group, writer tasks started on the
//! caller's runtime when needed (and again when their runtime has gone
//! away), and closing when the store goes.
//!
//! What makes a group (limits, requests that must not share one) and how it
//! is written stay with each group commit: [`GroupQueue::next_group`] takes a
//! function that picks a group from the waiting requests.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::runtime::Handle;
use tokio::sync::Notify;

/// Requests waiting for a group, and the writer tasks that take them.
pub(super) struct GroupQueue<R, X = ()> {
    state: Mutex<Waiting<R, X>>,
    /// A writer may have work: something was queued, or the queue closed.
    wake: Notify,
}

/// The queue's state, under its lock.
pub(super) struct Waiting<R, X> {
    /// Requests in arrival order.
    pub(super) requests: VecDeque<R>,
    /// What the group commit keeps beside them (the streams in flight, say).
    pub(super) extra: X,
    /// Writer tasks alive.
    writers: usize,
    closed: bool,
}

impl<R, X: Default> GroupQueue<R, X> {
    /// An empty queue, no writers yet.
    pub(super) fn new() -> Self {
        Self {
            state: Mutex::new(Waiting {
                requests: VecDeque::new(),
                extra: X::default(),
                writers: 0,
                closed: false,
            }),
            wake: Notify::new(),
        }
    }
}

impl<R, X> GroupQueue<R, X> {
    /// The state, also after a panic elsewhere held the lock (every change
    /// under it is complete before anything that could panic).
    pub(super) fn lock(&self) -> MutexGuard<'_, Waiting<R, X>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a request, first starting writers with `spawn` on the
    /// caller's runtime until `writers` are alive. Gives the request back
    /// only when no writer is alive and none can be started (no Tokio
    /// runtime): the caller then runs it alone.
    #[must_use]
    pub(super) fn submit(&self, request: R, writers: usize, spawn: impl Fn(&Handle)) -> Option<R> {
        let mut state = self.lock();
        if state.writers < writers {
            match Handle::try_current() {
                Ok(runtime) => {
                    while state.writers < writers {
                        state.writers += 1;
                        spawn(&runtime);
                    }
                }
                Err(_) if state.writers == 0 => return Some(request),
                // The writers alive take it.
                Err(_) => {}
            }
        }
        state.requests.push_back(request);
        drop(state);
        self.wake.notify_one();
        None
    }

    /// Waits until `take` makes a group of the waiting requests (it removes
    /// them and leaves the others in their places); `None` once the queue
    /// is closed.
    pub(super) async fn next_group(
        &self,
        mut take: impl FnMut(&mut Waiting<R, X>) -> Vec<R>,
    ) -> Option<Vec<R>> {
        loop {
            // Registered before looking, so that a request queued in between
            // still wakes this writer.
            let woken = self.wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            {
                let mut state = self.lock();
                if state.closed {
                    return None;
                }
                let group = take(&mut state);
                if !group.is_empty() {
                    return Some(group);
                }
            }
            woken.await;
        }
    }

    /// Counts a writer out (its task ended, or its runtime dropped it);
    /// returns the state for the group commit's own release.
    pub(super) fn writer_ended(&self) -> MutexGuard<'_, Waiting<R, X>> {
        let mut state = self.lock();
        state.writers = state.writers.saturating_sub(1);
        state
    }

    /// Closes the queue: its writers end once they finish their group.
    pub(super) fn close(&self) {
        self.lock().closed = true;
        self.wake.notify_waiters();
    }
}

impl<R, X> std::fmt::Debug for GroupQueue<R, X> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.lock();
        f.debug_struct("GroupQueue")
            .field("waiting", &state.requests.len())
            .field("writers", &state.writers)
            .field("closed", &state.closed)
            .finish_non_exhaustive()
    }
}
