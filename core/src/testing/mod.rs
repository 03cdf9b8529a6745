//! Test support: the store conformance suites (event store and projection
//! store), given/when/then for aggregates, and a store wrapper that injects
//! faults.

pub mod conformance;
mod events;
mod faulty;
mod given_when_then;
mod runner;
mod wait;

pub use events::{new_event, tagged_event};
pub use faulty::{Faulty, Operation};
pub use given_when_then::{Given, When, given};
pub use runner::fast_runner_options;
pub use wait::{PATIENCE, eventually, eventually_async};
