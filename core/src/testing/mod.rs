//! Test support: the store conformance suite and given/when/then for aggregates.

pub mod conformance;
