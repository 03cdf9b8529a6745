//! The code generated from `proto/flights.proto` at build time (see
//! `build.rs`): the messages, the server ([`flight_service_server`]) and the
//! client ([`flight_service_client`]). Its documentation is the proto's.
#![allow(missing_docs)]
// Generated code: its lints are prost's and tonic's business.
#![allow(clippy::all, clippy::pedantic)]

tonic::include_proto!("flights");

/// The proto's file descriptor set (with its imports), as server reflection
/// serves it.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("flights_descriptor");
