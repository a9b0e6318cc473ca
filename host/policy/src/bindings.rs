//! Host bindings generated from `wit/` — one module per world, sharing the `types` and `log`
//! interfaces so a device record converted once can be passed to either export.

#![allow(missing_docs)] // generated code

/// The `selector-policy` world (also the home of the shared `types` and `log` interfaces).
pub mod selector_world {
    wasmtime::component::bindgen!({
        world: "selector-policy",
        path: "../../wit",
    });
}

/// The `allocator-policy` world.
pub mod allocator_world {
    wasmtime::component::bindgen!({
        world: "allocator-policy",
        path: "../../wit",
        with: {
            "vfpool:policy/types": super::selector_world::vfpool::policy::types,
            "vfpool:policy/log": super::selector_world::vfpool::policy::log,
        },
    });
}

pub use selector_world::vfpool::policy::log::Level as WitLogLevel;
pub use selector_world::vfpool::policy::types as wit;
