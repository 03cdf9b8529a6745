//! Connections for the hot paths (appends and log reads), kept between
//! operations.
//!
//! sqlx's pool pings every connection when it comes back (a round trip), so
//! a short operation through the pool costs two exchanges with the server
//! instead of one. The store keeps connections that finished an operation
//! cleanly in a small cache of its own and hands them to the next operation
//! directly. The cache holds at most half the pool, returns a connection to
//! the pool once it has been idle for a moment, and empties at once when the
//! pool closes, so the pool stays available to everyone else. A connection
//! whose operation failed or was cancelled goes back through the pool, which
//! checks it.

use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, PgPool, Postgres};

/// How long a cached connection may sit unused before it goes back to the pool.
const IDLE: Duration = Duration::from_millis(100);

/// The cache of connections between operations.
#[derive(Debug)]
pub(crate) struct Connections {
    pool: PgPool,
    idle: Mutex<Vec<(PoolConnection<Postgres>, Instant)>>,
    capacity: usize,
    sweeping: AtomicBool,
}

impl Connections {
    /// A cache of up to half the pool's connections, or none when `enabled`
    /// is false.
    pub(crate) fn new(pool: PgPool, enabled: bool) -> Arc<Self> {
        let capacity = if enabled {
            (pool.options().get_max_connections() as usize / 2).max(1)
        } else {
            0
        };
        Arc::new(Self {
            pool,
            idle: Mutex::new(Vec::with_capacity(capacity)),
            capacity,
            sweeping: AtomicBool::new(false),
        })
    }

    /// A connection: a cached one, or one from the pool.
    pub(crate) async fn get(self: &Arc<Self>) -> Result<LentConnection, sqlx::Error> {
        let cached = self.lock().pop().map(|(conn, _)| conn);
        let conn = match cached {
            Some(conn) => conn,
            None => self.pool.acquire().await?,
        };
        Ok(LentConnection {
            conn,
            owner: Arc::downgrade(self),
        })
    }

    /// Returns every cached connection to the pool.
    pub(crate) fn drain(&self) {
        let drained = std::mem::take(&mut *self.lock());
        drop(drained);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(PoolConnection<Postgres>, Instant)>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn put(self: &Arc<Self>, conn: PoolConnection<Postgres>) {
        if self.capacity == 0 || self.pool.is_closed() || !self.ensure_sweeper() {
            return; // dropping it returns it to the pool
        }
        {
            let mut idle = self.lock();
            if idle.len() < self.capacity {
                idle.push((conn, Instant::now()));
            }
        }
        // Closed meanwhile (after the sweeper drained): give it back, or
        // closing the pool would wait for it forever.
        if self.pool.is_closed() {
            self.drain();
        }
    }

    /// Starts the task that returns idle connections; false when there is no
    /// runtime to run it on (then nothing is cached).
    fn ensure_sweeper(self: &Arc<Self>) -> bool {
        if self.sweeping.load(Ordering::Acquire) {
            return true;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return false;
        };
        if !self.sweeping.swap(true, Ordering::AcqRel) {
            runtime.spawn(sweep(Arc::downgrade(self), self.pool.clone()));
        }
        true
    }
}

/// Returns connections idle for longer than [`IDLE`], and all of them when
/// the pool closes; ends when the store is gone.
async fn sweep(owner: Weak<Connections>, pool: PgPool) {
    let closed = pool.close_event();
    tokio::pin!(closed);
    loop {
        tokio::select! {
            () = &mut closed => {
                if let Some(owner) = owner.upgrade() {
                    owner.drain();
                }
                return;
            }
            () = tokio::time::sleep(IDLE) => {}
        }
        let Some(owner) = owner.upgrade() else { return };
        let stale = {
            let mut idle = owner.lock();
            let now = Instant::now();
            let keep = idle
                .iter()
                .position(|(_, since)| now.duration_since(*since) < IDLE)
                .unwrap_or(idle.len());
            idle.drain(..keep).collect::<Vec<_>>()
        };
        drop(stale);
    }
}

/// A connection lent to one operation. [`release`](Self::release) it once
/// the operation finished cleanly; dropped instead (an error, a cancelled
/// operation), it goes back through the pool, which checks it.
pub(crate) struct LentConnection {
    conn: PoolConnection<Postgres>,
    owner: Weak<Connections>,
}

impl LentConnection {
    /// The operation completed and the connection is in a clean state: keep
    /// it for the next operation.
    pub(crate) fn release(self) {
        if let Some(owner) = self.owner.upgrade() {
            owner.put(self.conn);
        }
    }
}

impl Deref for LentConnection {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        &self.conn
    }
}

impl DerefMut for LentConnection {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.conn
    }
}
