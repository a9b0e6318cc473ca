//! `vfpool-deviceplugin`: the kubelet device-plugin API (v1beta1) for vfpool's pools.
//!
//! This crate owns: one tonic server per pool on a unix socket `<prefix>_<name>.sock`
//! ([`server`]); registration in both modes kubelet supports, plugin watcher and legacy `Register`
//! ([`registration`]); kubelet restart handling (the socket directory is watched: a recreated
//! `kubelet.sock` re-registers every pool at once, a deleted pool socket is re-bound), retries with
//! backoff, restart of a failed server; ListAndWatch with health and NUMA topology, sent only on
//! change to every stream; GetPreferredAllocation through a pluggable [`Allocator`] with a
//! deterministic fallback (the default allocator policy's packing, `packed-allocator`'s plain-Rust
//! plan run natively); Allocate exactly as upstream answers it ([`allocate`]: env, `_INFO`,
//! device specs, device-info files); in-use safety through kubelet's PodResources API and, for
//! init containers' devices, its device-manager checkpoint ([`podresources`], [`checkpoint`],
//! [`plan`]); the kernel events (rtnetlink link events, uevents) that make the
//! agent rescan early ([`events`]).
//!
//! The served model ([`model`]) is independent of the wire types: pools are the selector policy's
//! [`vfpool_policy::Pool`] resolved against a [`vfpool_sysfs::Inventory`], so a DRA driver can
//! serve the same pools later.
//!
//! Kubelet's calls are served on a thread of the crate's own (`serving`: a single-threaded
//! runtime for every pool's server), apart from the runtime the agent calls it from; allocator
//! calls run on that thread's blocking pool.
//!
//! It must not touch: sysfs discovery (it receives inventories; it only reads the RDMA devices and
//! RDMA character devices of RDMA pools' members), policy decisions (it asks the [`Allocator`] and takes pools as
//! given), the command line, signals or the process (the agent owns them), and network namespaces.

pub mod allocate;
pub mod allocator;
pub mod checkpoint;
pub mod events;
pub mod health;
mod logs;
mod manager;
pub mod model;
pub mod plan;
pub mod podresources;
pub mod registration;
pub mod server;
mod serving;
pub mod uds;

pub use allocator::{Allocator, AllocatorError, PolicyAllocator, PreferenceRequest};
pub use logs::Ids;
pub use manager::{
    ApplyReport, DevicePlugins, KUBELET_PREFERENCE_TO_ALLOCATE, PluginConfig, StartError,
};
pub use model::{Health, Member, PoolSnapshot, Snapshot};
pub use registration::Mode;
pub use serving::ServingError;
