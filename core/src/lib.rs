//! # annals
//!
//! CQRS and event sourcing for Rust. Model the domain as aggregates that
//! decide on commands and emit versioned domain events; keep the events in an
//! [`EventStore`] with optimistic concurrency; keep read models current with
//! projections over the global, ordered log.
//!
//! This crate holds the model and the contracts: events ([`DomainEvent`]),
//! aggregates ([`Aggregate`], [`Handle`]), envelopes ([`RecordedEvent`]), the
//! [`EventStore`] trait, command execution ([`Repository`]), an in-memory
//! store ([`memory::MemoryStore`]) and the test kit (`testing`, behind the
//! `testing` feature: enable it in dev-dependencies). Storage
//! and read-model backends live in their own crates (`annals-postgres`,
//! `annals-elastic`).
#![warn(missing_docs)]

// Lets the derive macros' `::annals::...` paths resolve inside this crate too.
extern crate self as annals;

pub mod aggregate;
pub mod decision;
pub mod envelope;
pub mod error;
pub mod event;
pub mod memory;
pub mod payload;
pub mod position;
pub mod process;
pub mod projection;
pub mod query;
pub mod repository;
pub mod store;
pub mod subscription;
#[cfg(feature = "testing")]
pub mod testing;

pub use aggregate::{Aggregate, AggregateType, Handle};
pub use annals_derive::{AggregateType, DomainEvent};
pub use envelope::{Metadata, NewEvent, RecordedEvent};
pub use event::{DomainEvent, EventError, EventType, UpcastError, Upcaster};
pub use payload::Payload;
pub use position::{ParsePositionError, Position};
pub use query::{Query, QueryItem};
pub use repository::{CommandContext, ExecuteError, Executed, Loaded, Repository};
pub use store::{
    AppendCondition, AppendLimits, AppendOptions, Appended, EventFilter, EventStore, EventStream,
    ExpectedVersion, Snapshot, StoreError,
};

/// Re-exports for the derive macros' generated code. Not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use serde;
    pub use serde_json;
}

/// The repository README's examples, compiled and run as doctests.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
