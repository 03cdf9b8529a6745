//! Runner options for tests.

use std::time::Duration;

use crate::projection::{Backoff, FailurePolicy, RunnerOptions};

/// Runner options that make tests quick: batches wait 5 ms to fill, retries
/// back off from 5 to 20 ms, an idle runner looks again every 30 ms.
pub fn fast_runner_options(failure_policy: FailurePolicy) -> RunnerOptions {
    RunnerOptions {
        batch_size: 500,
        batch_delay: Duration::from_millis(5),
        min_batch_interval: Duration::ZERO,
        backoff: Backoff {
            initial: Duration::from_millis(5),
            max: Duration::from_millis(20),
        },
        failure_policy,
        idle_interval: Duration::from_millis(30),
    }
}
