//! The policy host: runs vfpool's decisions — pool selection and allocation preference — as
//! sandboxed WebAssembly components that implement the `vfpool:policy` WIT contract (`wit/`).
//!
//! Owns: the wasmtime engine and its sandbox (one [`PolicyEngine`]: one `Engine`, one `Linker`,
//! an epoch ticker; a fresh `Store` per call, in one of a fixed number of pre-reserved instance
//! slots, with a deadline, a memory cap and bounded host buffers), compiling and type-checking
//! modules ([`Policy`]; those from the policy directory in a child process under CPU and memory
//! limits, [`isolate`]), the allocator request lowered from borrowed data (`request`), the
//! hand-written lowering of the inventory and the candidates, per value or in one allocation
//! (`lowering`), checking
//! every result a policy returns ([`validate`]), the conversion of the discovery model to the WIT
//! records ([`convert`]), the embedded default policies ([`defaults`]), the precompiled-module
//! cache ([`cache`]), the active policy set with its validate-then-swap rule ([`ActivePolicies`])
//! and the policy directory watcher ([`watch`]).
//!
//! Must not touch: gRPC, kubelet, netlink, tokio. It knows devices (from `vfpool-sysfs`) but not
//! how pools are served. Calls are synchronous and may block for up to their deadline: call them
//! from a blocking thread (`spawn_blocking`), never from an async task.

mod bindings;
pub mod cache;
pub mod convert;
pub mod defaults;
mod engine;
mod footprint;
pub mod isolate;
mod lowering;
pub mod model;
mod policy;
mod request;
mod store;
pub mod validate;
pub mod watch;

pub use cache::{CacheError, CompileCache};
pub use convert::{HostFacts, PolicyInventory};
pub use engine::{EngineError, Limits, PolicyEngine};
pub use isolate::{ChildCompiler, CompileLimits, Compiler};
pub use model::{DeviceType, LogLine, Outcome, Pool, PoolDevice, Settings, VdpaType};
pub use policy::{
    CallError, LoadError, ModuleKind, Policy, PolicyCallError, PolicyFailure, PolicyId, Roles,
};
pub use store::{
    ActivePolicies, ActiveSet, FileProblem, MAX_CONFIG_BYTES, PolicySource, ReloadError,
    ReloadOutcome, Retry, SkippedName, Sources, error_chain, exercise, exercise_allocator,
    read_config_file, read_regular_file, skipped_policy_name,
};
pub use watch::{PolicyWatcher, WatchError};
