//! The in-memory event store (being written).
