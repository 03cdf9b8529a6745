//! The conformance suites every store must pass: one for the [`EventStore`]
//! contract, one for the [`ProjectionStore`] contract.
//!
//! A store crate runs a suite from a test, with a factory that makes a
//! fresh, isolated store (an empty database or schema) on every call:
//!
//! ```
//! use annals::memory::MemoryStore;
//! use annals::testing::conformance;
//!
//! # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
//! // In a store crate: #[tokio::test(flavor = "multi_thread")] async fn conformance() { ... }
//! conformance::run_matching(|| async { MemoryStore::new() }, |case| case.starts_with("expected_version")).await;
//! conformance::run_projection_store_matching(|| async { MemoryStore::new() }, |case| case.contains("lease")).await;
//! # });
//! ```
//!
//! [`run`] (and [`run_projection_store`]) runs every case with a store of
//! its own, printing each case's name to stderr, and panics at the end
//! naming every case that failed and why. Each case is also a public
//! function that takes the store, so that a failing case can be run alone
//! while debugging:
//!
//! ```
//! # use annals::memory::MemoryStore;
//! # use annals::testing::conformance;
//! # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
//! conformance::idempotent_append_by_event_id(&MemoryStore::new()).await;
//! conformance::claimed_deadline_is_held_then_claimable_again(&MemoryStore::new()).await;
//! # });
//! ```
//!
//! The store the factory makes must be empty (some cases check the whole
//! log and the head) and use [`AppendLimits::default`] (the invalid-input
//! case sends input just beyond those limits). Run the suites inside a Tokio
//! runtime with time enabled; a multi-threaded runtime makes the concurrency
//! cases meaningful (`#[tokio::test(flavor = "multi_thread")]`).
//!
//! # What the event store suite covers ([`CASES`])
//!
//! - Appends and expected versions: every [`ExpectedVersion`], conflicts and
//!   their error, atomicity of refused appends, racing writers, input
//!   validation.
//! - Idempotency: appends that repeat stored event ids, duplicate ids
//!   elsewhere, command ids and [`EventStore::command_outcome`].
//! - Reading: stream reads (from a version, limits, unknown streams), the
//!   global log (order, positions, paging, type filters), the head, and
//!   payloads and metadata as written.
//! - Subscriptions: catch-up then live, filtered, after a position, under
//!   many concurrent writers.
//! - Snapshots and checkpoints: saved, replaced and loaded per stream or name.
//! - A [`Repository`] over the store: execution, retry on conflict,
//!   idempotent commands, snapshots.
//! - Dynamic consistency boundaries (the `dcb_` cases): tags stored and read
//!   back untouched, invalid tags refused; [`EventStore::read_query`]
//!   semantics (types OR'd, tags AND'd within an item, items OR'd) and
//!   paging; [`EventStore::append_if`] conditions that pass, fail at the
//!   first matching event after `after` and write nothing, idempotent
//!   retries, racing claims and reservations; a [`Decider`] over the store
//!   (appends, refusals, decisions of nothing, retries after a conflict,
//!   combined states, command ids). Select them with
//!   `run_matching(factory, |case| case.starts_with("dcb_"))`.
//!
//! # What the projection store suite covers ([`PROJECTION_STORE_CASES`])
//!
//! - Dead letters: listed in log order, dead-lettered again without duplicates, kept
//!   per projection, marked for a retry, removed from the dead letters by id.
//! - The single-runner lease: one holder per name, free again once released,
//!   not lost while held (past the time to live it renews).
//! - Claims on partitions: shared among live owners (none above
//!   `ceil(partitions / owners)`), taken over once expired with a new
//!   generation, fenced checkpoint saves and dead letters (a former owner
//!   writes nothing), released claims free at once, draining owners.
//! - Process managers' deadlines: idempotent scheduling, listing, the next
//!   firing time, claims (due ones only, earliest first, per process, held
//!   for a while, never shared by concurrent claimers), completion,
//!   cancellation of deadlines not yet claimed, failures retried later or
//!   dead-lettered, and dead letters revived by a retry request.
//!
//! [`Repository`]: crate::repository::Repository
//! [`Decider`]: crate::decision::Decider
//! [`AppendLimits::default`]: crate::store::AppendLimits::default
//! [`ExpectedVersion`]: crate::store::ExpectedVersion

mod append;
mod claims;
mod dcb;
mod deadlines;
mod helpers;
mod idempotency;
mod projection_store;
mod reads;
mod repository;
mod snapshots;
mod subscriptions;

// A section's public functions are its cases, registered below.
pub use append::*;
pub use claims::*;
pub use dcb::*;
pub use deadlines::*;
pub use idempotency::*;
pub use projection_store::*;
pub use reads::*;
pub use repository::*;
pub use snapshots::*;
pub use subscriptions::*;

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures::FutureExt;

use crate::projection::ProjectionStore;
use crate::store::EventStore;

/// How long one case may run before it counts as failed.
const CASE_TIMEOUT: Duration = Duration::from_secs(120);

/// Declares a registry: the constant listing its cases' names, and a
/// function running the selected ones against stores of the given trait,
/// through [`Outcome::case`].
macro_rules! suite {
    (
        $(#[$doc:meta])*
        $names:ident, $run_cases:ident, $store:ident: [$($case:ident),* $(,)?]
    ) => {
        $(#[$doc])*
        pub const $names: &[&str] = &[$(stringify!($case)),*];

        /// Runs the cases `select` accepts, each with a fresh store from
        /// `factory`.
        async fn $run_cases<S, F, Fut>(factory: &F, select: &dyn Fn(&str) -> bool) -> Outcome
        where
            S: $store + Clone,
            F: Fn() -> Fut,
            Fut: Future<Output = S>,
        {
            let mut outcome = Outcome::default();
            $(
                outcome
                    .case(stringify!($case), select, factory, |store: S| async move {
                        $case(&store).await
                    })
                    .await;
            )*
            outcome
        }
    };
}

suite! {
    /// The names of the event store cases, in the order [`run`] runs them.
    CASES, run_event_store_cases, EventStore: [
        append_to_new_stream,
        expected_version_any,
        expected_version_no_stream,
        expected_version_exact,
        expected_version_exact_zero,
        conflict_error_names_stream_and_versions,
        failed_append_writes_nothing,
        concurrent_appends_have_one_winner,
        invalid_input_is_refused,
        idempotent_append_by_event_id,
        duplicate_event_id_is_refused,
        idempotent_command,
        read_stream_from_version,
        read_stream_with_limit,
        read_unknown_stream,
        read_all_orders_across_streams,
        read_all_after_position_and_limit,
        read_all_filters_by_type,
        head_tracks_the_last_event,
        appended_positions_match_read_back,
        payload_and_metadata_round_trip,
        subscribe_catches_up_then_follows_live,
        subscribe_with_concurrent_writers,
        subscribe_with_filter,
        subscribe_after_position,
        snapshots_save_replace_load,
        checkpoints_save_overwrite_load,
        repository_executes_commands,
        repository_retries_conflicts,
        repository_command_idempotency,
        repository_snapshots,
        dcb_tags_round_trip,
        dcb_invalid_tags_are_refused,
        dcb_read_query_matches_types_and_tags,
        dcb_read_query_all_and_nothing,
        dcb_read_query_pages_with_after_and_limit,
        dcb_append_if_succeeds_when_nothing_matches,
        dcb_append_if_fails_at_the_first_match,
        dcb_append_if_after_bounds_the_condition,
        dcb_append_if_is_idempotent,
        dcb_concurrent_claims_have_one_winner,
        dcb_concurrent_disjoint_claims_all_succeed,
        dcb_concurrent_reservations_respect_capacity,
        dcb_decider_appends_refuses_and_decides_nothing,
        dcb_decider_decides_again_after_a_conflict,
        dcb_decider_concurrent_claims_have_one_winner,
        dcb_decider_combines_states,
        dcb_decider_command_idempotency,
    ]
}

suite! {
    /// The names of the projection store cases, in the order
    /// [`run_projection_store`] runs them.
    PROJECTION_STORE_CASES, run_projection_store_cases, ProjectionStore: [
        dead_letters_are_listed_in_log_order,
        dead_lettering_again_updates_without_duplicating,
        dead_letters_are_kept_per_projection,
        request_retry_marks_every_dead_letter,
        removing_dead_letters_removes_only_the_given_events,
        lease_admits_one_holder_per_name,
        released_lease_is_free_again,
        held_lease_is_not_lost,
        claims_share_partitions_among_live_owners,
        expired_claims_go_to_another_owner,
        fenced_checkpoint_save_writes_nothing,
        released_claims_are_free_at_once,
        a_draining_owner_gives_its_partitions_back,
        scheduling_a_deadline_is_idempotent,
        deadlines_are_listed_earliest_first,
        next_deadline_is_the_earliest_live_firing_time,
        claim_takes_due_deadlines_earliest_first,
        claimed_deadline_is_held_then_claimable_again,
        concurrent_claims_never_share_a_deadline,
        completed_deadline_is_removed,
        cancel_removes_only_unclaimed_deadlines_of_that_instance_and_name,
        failed_deadline_fires_again_at_its_retry_time,
        failed_deadline_without_retry_is_dead_lettered,
        request_retry_revives_dead_lettered_deadlines,
    ]
}

/// Runs every event store case, each against a fresh store from `factory`,
/// and panics naming each case that failed.
///
/// The factory must return an empty, isolated store with the default
/// [`AppendLimits`](crate::store::AppendLimits). Case names go to stderr as
/// they run.
pub async fn run<S, F, Fut>(factory: F)
where
    S: EventStore + Clone,
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
{
    run_matching(factory, |_| true).await;
}

/// Runs the event store cases whose name (see [`CASES`]) `select` accepts,
/// and panics naming each one that failed, or when `select` accepts none.
pub async fn run_matching<S, F, Fut>(factory: F, select: impl Fn(&str) -> bool)
where
    S: EventStore + Clone,
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
{
    run_event_store_cases(&factory, &select)
        .await
        .report("event store conformance");
}

/// Runs every projection store case, each against a fresh store from
/// `factory`, and panics naming each case that failed.
///
/// The factory must return an empty, isolated store: leases, dead letters
/// and deadlines of one case must not be seen by another. Case names go to
/// stderr as they run.
pub async fn run_projection_store<S, F, Fut>(factory: F)
where
    S: ProjectionStore + Clone,
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
{
    run_projection_store_matching(factory, |_| true).await;
}

/// Runs the projection store cases whose name (see
/// [`PROJECTION_STORE_CASES`]) `select` accepts, and panics naming each one
/// that failed, or when `select` accepts none.
pub async fn run_projection_store_matching<S, F, Fut>(factory: F, select: impl Fn(&str) -> bool)
where
    S: ProjectionStore + Clone,
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
{
    run_projection_store_cases(&factory, &select)
        .await
        .report("projection store conformance");
}

/// How the cases of one run went.
#[derive(Default)]
struct Outcome {
    ran: usize,
    /// Each failed case and why.
    failures: Vec<(&'static str, String)>,
}

impl Outcome {
    /// Runs one case, if `select` accepts its name, on a fresh store from
    /// `factory`; a panic or a timeout counts as its failure.
    async fn case<S, F, Fut, C, Run>(
        &mut self,
        name: &'static str,
        select: &dyn Fn(&str) -> bool,
        factory: &F,
        case: C,
    ) where
        F: Fn() -> Fut,
        Fut: Future<Output = S>,
        C: FnOnce(S) -> Run,
        Run: Future<Output = ()>,
    {
        if !select(name) {
            return;
        }
        self.ran += 1;
        eprintln!("conformance: {name} ...");
        let store = factory().await;
        let outcome = AssertUnwindSafe(tokio::time::timeout(CASE_TIMEOUT, case(store)))
            .catch_unwind()
            .await;
        match outcome {
            Ok(Ok(())) => eprintln!("conformance: {name} ok"),
            Ok(Err(_)) => {
                eprintln!("conformance: {name} FAILED (timed out)");
                self.failures
                    .push((name, format!("timed out after {CASE_TIMEOUT:?}")));
            }
            Err(panic) => {
                let message = panic_message(panic);
                eprintln!("conformance: {name} FAILED: {message}");
                self.failures.push((name, message));
            }
        }
    }

    /// Panics naming every failed case, or when no case ran.
    fn report(self, suite: &str) {
        let Self { ran, failures } = self;
        assert!(ran > 0, "no conformance case was selected");
        if !failures.is_empty() {
            let mut report = format!("{suite}: {} of {ran} cases failed:", failures.len());
            for (case, message) in &failures {
                report.push_str(&format!("\n  {case}: {}", shorten(message)));
            }
            panic!("{report}");
        }
        eprintln!("conformance: all {ran} cases passed");
    }
}

/// A failure message cut to a readable length for the final report (the
/// whole message was printed when the case failed).
fn shorten(message: &str) -> String {
    const MAX: usize = 1500;
    match message.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}... (cut; see the case's output above)", &message[..cut]),
        None => message.to_owned(),
    }
}

fn panic_message(panic: Box<dyn Any + Send>) -> String {
    match panic.downcast::<String>() {
        Ok(message) => *message,
        Err(panic) => match panic.downcast::<&'static str>() {
            Ok(message) => (*message).to_owned(),
            Err(_) => "panicked with a non-string payload".to_owned(),
        },
    }
}
