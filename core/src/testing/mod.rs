//! Test support: the store conformance suite and given/when/then for aggregates.

pub mod conformance;
mod given_when_then;

pub use given_when_then::{Given, When, given};
