//! Test support: the store conformance suites (event store and projection
//! store), given/when/then for aggregates, and a store wrapper that injects
//! faults.

pub mod conformance;
mod faulty;
mod given_when_then;

pub use faulty::{Faulty, Operation};
pub use given_when_then::{Given, When, given};
