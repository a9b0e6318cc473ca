//! Integration tests of the policy host with real WASM components built from `policies/` (one test
//! binary, several modules, to link wasmtime once).
// Test helpers may unwrap: a panic there is a failed test with a backtrace.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod host {
    pub mod common;
    mod faults;
    mod hot_swap;
    mod packed_allocator;
    mod upstream_selector;
}
