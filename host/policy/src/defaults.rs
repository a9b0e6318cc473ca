//! The default policies, built from `policies/` by `build.rs` and embedded in the binary. They are
//! what runs when the policy directory has no module for a role.

/// Name under which the embedded selector appears in messages.
pub const UPSTREAM_SELECTOR_NAME: &str = "builtin:upstream-selector";
/// Name under which the embedded allocator appears in messages.
pub const PACKED_ALLOCATOR_NAME: &str = "builtin:packed-allocator";

/// The upstream-compatible selector component.
pub const UPSTREAM_SELECTOR: &[u8] = include_bytes!(concat!(
    env!("VFPOOL_POLICY_WASM_DIR"),
    "/upstream_selector.wasm"
));

/// The packed allocator component.
pub const PACKED_ALLOCATOR: &[u8] = include_bytes!(concat!(
    env!("VFPOOL_POLICY_WASM_DIR"),
    "/packed_allocator.wasm"
));

/// The spread allocator, an example policy (one device per PF in turn): not a default, embedded
/// so that `vfpool demo` can show a hot swap without a build directory.
pub const SPREAD_ALLOCATOR: &[u8] = include_bytes!(concat!(
    env!("VFPOOL_POLICY_WASM_DIR"),
    "/spread_allocator.wasm"
));

/// Where `build.rs` put every component it built (the defaults, the `spread` example and the test
/// policies), for tests and benchmarks.
pub const BUILT_COMPONENTS_DIR: &str = env!("VFPOOL_POLICY_WASM_DIR");
