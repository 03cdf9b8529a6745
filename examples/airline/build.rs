//! Generates the gRPC flight search (`proto/flights.proto` at the repository
//! root) at build time: the messages, the server and the client, and the
//! encoded file descriptor set that server reflection serves.
//!
//! The proto is parsed by `protox`, in Rust: building needs no `protoc`
//! installed.

use std::error::Error;
use std::path::PathBuf;

use prost::Message;

fn main() -> Result<(), Box<dyn Error>> {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let protos = manifest.join("../../proto");
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    println!("cargo:rerun-if-changed={}", protos.display());

    // Source info keeps the proto's comments, which become the generated
    // items' doc comments; imports (the well-known Timestamp) are included
    // so that reflection can describe every type.
    let descriptors = protox::compile(["flights.proto"], [&protos])?;
    std::fs::write(
        out.join("flights_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(descriptors)?;
    Ok(())
}
