//! The benchmarks behind `BENCHMARKS.md`, as binaries (`src/bin/`) and a
//! criterion bench (`benches/rehydrate.rs`). Not published: a workspace
//! member of its own, so that the libraries and the airline do not depend
//! on what only the benchmarks need.
