//! Compile errors of `#[derive(DomainEvent)]` and `#[derive(AggregateType)]`: each
//! `ui/*.rs` must fail to compile with the message in its `.stderr`.
//!
//! Regenerate the expected output with
//! `TRYBUILD=overwrite cargo test -p annals --test derive_ui`, then read it.

#[test]
fn derive_compile_errors() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
