//! A read side that answers fast when its backend does not: a timeout on
//! every call and a circuit breaker over them.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use failsafe::futures::CircuitBreaker as _;
use uuid::Uuid;

use super::{FlightPage, FlightReads, FlightSearch, FlightView, ReadError};

type Breaker = failsafe::StateMachine<
    failsafe::failure_policy::ConsecutiveFailures<failsafe::backoff::Constant>,
    (),
>;

/// When [`GuardedReads`] gives up on a call, and on the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadGuard {
    /// Longest a call may take (keep it below the HTTP request timeout).
    pub timeout: Duration,
    /// Consecutive failures (timeouts, unreachable backend) that open the circuit.
    pub failures: u32,
    /// How long the circuit stays open before one call probes the backend again.
    pub open_for: Duration,
}

impl Default for ReadGuard {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(3),
            failures: 3,
            open_for: Duration::from_secs(5),
        }
    }
}

/// A [`FlightReads`] whose calls time out after [`ReadGuard::timeout`], and
/// which, once the backend failed [`ReadGuard::failures`] times in a row,
/// answers [`ReadError::Unavailable`] at once (a 503 `read_side_unavailable`)
/// until a probe after [`ReadGuard::open_for`] succeeds. Answers that are not
/// about the backend (a bad cursor, a read side behind a position) do not
/// count as failures.
pub struct GuardedReads {
    inner: Arc<dyn FlightReads>,
    guard: ReadGuard,
    breaker: Breaker,
}

impl GuardedReads {
    /// Guards `inner`.
    pub fn new(inner: Arc<dyn FlightReads>, guard: ReadGuard) -> Self {
        let policy = failsafe::failure_policy::consecutive_failures(
            guard.failures.max(1),
            failsafe::backoff::constant(guard.open_for),
        );
        Self {
            inner,
            guard,
            breaker: failsafe::Config::new().failure_policy(policy).build(),
        }
    }

    async fn call<T>(
        &self,
        what: &str,
        call: impl Future<Output = Result<T, ReadError>>,
    ) -> Result<T, ReadError> {
        let timeout = self.guard.timeout;
        let timed = async {
            tokio::time::timeout(timeout, call)
                .await
                .unwrap_or_else(|_| {
                    Err(ReadError::Unavailable(format!(
                        "{what} took longer than {timeout:?}"
                    )))
                })
        };
        let unavailable = |e: &ReadError| matches!(e, ReadError::Unavailable(_));
        match self.breaker.call_with(unavailable, timed).await {
            Ok(value) => Ok(value),
            Err(failsafe::Error::Inner(error)) => Err(error),
            Err(failsafe::Error::Rejected) => Err(ReadError::Unavailable(format!(
                "the read side failed {} times in a row; not asking it again for {:?} \
                 (circuit open)",
                self.guard.failures, self.guard.open_for
            ))),
        }
    }
}

#[async_trait]
impl FlightReads for GuardedReads {
    async fn flight(&self, id: Uuid) -> Result<Option<FlightView>, ReadError> {
        self.call("reading a flight", self.inner.flight(id)).await
    }

    async fn search(&self, search: &FlightSearch) -> Result<FlightPage, ReadError> {
        self.call("a search", self.inner.search(search)).await
    }

    fn projection_name(&self) -> String {
        self.inner.projection_name()
    }

    /// Asks the backend itself (bounded by the timeout), whatever the
    /// circuit says, and is not counted by it: health probes must report
    /// the truth, and must not open the circuit for readers (an index
    /// still being built at start would).
    async fn health(&self) -> Result<String, ReadError> {
        let timeout = self.guard.timeout;
        tokio::time::timeout(timeout, self.inner.health())
            .await
            .unwrap_or_else(|_| {
                Err(ReadError::Unavailable(format!(
                    "the health check took longer than {timeout:?}"
                )))
            })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

    use super::*;

    /// A backend that hangs while told to.
    #[derive(Default)]
    struct Frozen {
        frozen: AtomicBool,
        calls: AtomicU32,
    }

    #[async_trait]
    impl FlightReads for Frozen {
        async fn flight(&self, _: Uuid) -> Result<Option<FlightView>, ReadError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if self.frozen.load(Ordering::SeqCst) {
                std::future::pending::<()>().await;
            }
            Ok(None)
        }
        async fn search(&self, _: &FlightSearch) -> Result<FlightPage, ReadError> {
            Err(ReadError::BadCursor("x".into()))
        }
        fn projection_name(&self) -> String {
            "flights".into()
        }
        async fn health(&self) -> Result<String, ReadError> {
            Ok("fine".into())
        }
    }

    #[tokio::test]
    async fn timeouts_open_the_circuit_and_a_probe_closes_it() {
        let backend = Arc::new(Frozen::default());
        let guard = ReadGuard {
            timeout: Duration::from_millis(50),
            failures: 2,
            open_for: Duration::from_millis(200),
        };
        let reads = GuardedReads::new(backend.clone(), guard);
        assert_eq!(reads.flight(Uuid::nil()).await, Ok(None));
        // Answers that are not about the backend do not count.
        for _ in 0..3 {
            assert!(matches!(
                reads.search(&FlightSearch::default()).await,
                Err(ReadError::BadCursor(_))
            ));
        }

        backend.frozen.store(true, Ordering::SeqCst);
        for _ in 0..2 {
            let started = tokio::time::Instant::now();
            let error = reads.flight(Uuid::nil()).await.unwrap_err();
            assert!(started.elapsed() < Duration::from_millis(150));
            assert!(error.to_string().contains("longer than"), "{error}");
        }
        // Open: answered at once, the backend not asked.
        let calls = backend.calls.load(Ordering::SeqCst);
        let started = tokio::time::Instant::now();
        let error = reads.flight(Uuid::nil()).await.unwrap_err();
        assert!(started.elapsed() < Duration::from_millis(20));
        assert!(error.to_string().contains("circuit open"), "{error}");
        assert_eq!(backend.calls.load(Ordering::SeqCst), calls);

        // The backend is back: after the open time, a probe closes it.
        backend.frozen.store(false, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(reads.flight(Uuid::nil()).await, Ok(None));
        assert_eq!(reads.flight(Uuid::nil()).await, Ok(None));
    }
}
