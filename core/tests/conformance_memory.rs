//! The conformance suites against the in-memory store, and proof that the
//! event store suite catches broken stores.

use std::panic::AssertUnwindSafe;

use annals::memory::MemoryStore;
use annals::testing::{Faulty, conformance};
use annals::{AppendCondition, ExpectedVersion, Query};
use futures::FutureExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_store_passes_the_suite() {
    conformance::run(|| async { MemoryStore::new() }).await;
}

#[tokio::test(flavor = "current_thread")]
async fn memory_store_passes_on_a_single_thread() {
    conformance::run(|| async { MemoryStore::new() }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_store_passes_the_projection_store_suite() {
    conformance::run_projection_store(|| async { MemoryStore::new() }).await;
}

#[tokio::test(flavor = "current_thread")]
async fn memory_store_passes_the_projection_store_suite_on_a_single_thread() {
    conformance::run_projection_store(|| async { MemoryStore::new() }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cases_run_alone() {
    let store = MemoryStore::new();
    conformance::expected_version_exact(&store).await;
    conformance::idempotent_command(&store).await;
    conformance::repository_retries_conflicts(&store).await;
    assert!(conformance::CASES.contains(&"subscribe_with_concurrent_writers"));
    conformance::dcb_append_if_fails_at_the_first_match(&store).await;
    conformance::dcb_decider_combines_states(&store).await;
    assert!(conformance::CASES.contains(&"dcb_concurrent_claims_have_one_winner"));
    conformance::claim_takes_due_deadlines_earliest_first(&store).await;
    assert!(
        conformance::PROJECTION_STORE_CASES.contains(&"concurrent_claims_never_share_a_deadline")
    );
}

#[tokio::test]
#[should_panic(expected = "no conformance case was selected")]
async fn selecting_nothing_fails() {
    conformance::run_matching(|| async { MemoryStore::new() }, |_| false).await;
}

#[tokio::test]
#[should_panic(expected = "no conformance case was selected")]
async fn selecting_no_projection_store_case_fails() {
    conformance::run_projection_store_matching(|| async { MemoryStore::new() }, |_| false).await;
}

/// What a broken store breaks.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Appends as if every expectation were `Any`.
    IgnoresExpectedVersion,
    /// `read_all` (and so `subscribe`) loses every fifth event.
    DropsEvents,
    /// `read_all` (and so `subscribe`) returns the first event of every page twice.
    DuplicatesEvents,
    /// `append_if` appends whatever its condition.
    IgnoresAppendCondition,
    /// `append_if` checks its condition against the whole log, not only
    /// after the position given.
    IgnoresConditionPosition,
}

/// A `MemoryStore` with one deliberate bug.
fn broken(fault: Fault) -> Faulty<MemoryStore> {
    let store = Faulty::new(MemoryStore::new());
    match fault {
        Fault::IgnoresExpectedVersion => store.rewrite_append(|_| ExpectedVersion::Any),
        Fault::DropsEvents => store.rewrite_read_all(|mut events, _| {
            events.retain(|e| e.position.sequence() % 5 != 0);
            events
        }),
        Fault::DuplicatesEvents => store.rewrite_read_all(|mut events, limit| {
            if let Some(first) = events.first().cloned() {
                events.insert(0, first);
                events.truncate(limit.max(1));
            }
            events
        }),
        Fault::IgnoresAppendCondition => store.rewrite_append_if(|condition| AppendCondition {
            fail_if_events_match: Query::new(),
            ..condition
        }),
        Fault::IgnoresConditionPosition => store.rewrite_append_if(|condition| AppendCondition {
            after: None,
            ..condition
        }),
    }
    store
}

/// Runs the whole suite against a broken store; returns the failure report.
async fn suite_failure(fault: Fault) -> String {
    cases_failure(fault, |_| true).await
}

/// Runs the cases `select` accepts against a broken store; returns the
/// failure report.
async fn cases_failure(fault: Fault, select: fn(&str) -> bool) -> String {
    let factory = move || async move { broken(fault) };
    let outcome = AssertUnwindSafe(conformance::run_matching(factory, select))
        .catch_unwind()
        .await;
    match outcome {
        Ok(()) => panic!("the conformance suite passed a broken store"),
        Err(panic) => match panic.downcast::<String>() {
            Ok(report) => *report,
            Err(_) => panic!("the suite failed without a report"),
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn suite_fails_a_store_that_ignores_expected_versions() {
    let report = suite_failure(Fault::IgnoresExpectedVersion).await;
    for case in [
        "expected_version_no_stream",
        "expected_version_exact",
        "expected_version_exact_zero",
        "conflict_error_names_stream_and_versions",
        "failed_append_writes_nothing",
        "concurrent_appends_have_one_winner",
        "idempotent_command",
    ] {
        assert!(report.contains(case), "{case} did not fail:\n{report}");
    }
    assert!(!report.contains("snapshots_save_replace_load"), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn suite_fails_a_store_whose_log_drops_events() {
    let report = suite_failure(Fault::DropsEvents).await;
    for case in [
        "read_all_orders_across_streams",
        "read_all_after_position_and_limit",
        "subscribe_with_concurrent_writers",
    ] {
        assert!(report.contains(case), "{case} did not fail:\n{report}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn suite_fails_a_store_whose_log_repeats_events() {
    let report = suite_failure(Fault::DuplicatesEvents).await;
    for case in [
        "read_all_orders_across_streams",
        "subscribe_catches_up_then_follows_live",
        "subscribe_with_concurrent_writers",
    ] {
        assert!(report.contains(case), "{case} did not fail:\n{report}");
    }
}

fn dcb_case(case: &str) -> bool {
    case.starts_with("dcb_")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dcb_cases_fail_a_store_that_ignores_append_conditions() {
    let report = cases_failure(Fault::IgnoresAppendCondition, dcb_case).await;
    for case in [
        "dcb_append_if_fails_at_the_first_match",
        "dcb_append_if_after_bounds_the_condition",
        "dcb_append_if_is_idempotent",
        "dcb_concurrent_claims_have_one_winner",
        "dcb_decider_decides_again_after_a_conflict",
    ] {
        assert!(report.contains(case), "{case} did not fail:\n{report}");
    }
    for case in [
        "dcb_tags_round_trip",
        "dcb_read_query_matches_types_and_tags",
    ] {
        assert!(!report.contains(case), "{case} failed:\n{report}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dcb_cases_fail_a_store_that_ignores_the_condition_position() {
    let report = cases_failure(Fault::IgnoresConditionPosition, dcb_case).await;
    for case in [
        "dcb_append_if_succeeds_when_nothing_matches",
        "dcb_append_if_fails_at_the_first_match",
        "dcb_append_if_after_bounds_the_condition",
        "dcb_append_if_is_idempotent",
        "dcb_concurrent_reservations_respect_capacity",
        "dcb_decider_decides_again_after_a_conflict",
    ] {
        assert!(report.contains(case), "{case} did not fail:\n{report}");
    }
    for case in [
        "dcb_concurrent_claims_have_one_winner",
        "dcb_decider_command_idempotency",
    ] {
        assert!(!report.contains(case), "{case} failed:\n{report}");
    }
}
