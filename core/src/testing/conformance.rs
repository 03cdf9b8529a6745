//! The conformance suite every `EventStore` must pass (being written).
