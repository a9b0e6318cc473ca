//! `vfpool-cni`: the CNI plugin Multus calls for `type: "sriov"` networks, a drop-in replacement
//! for sriov-cni.
//!
//! This crate owns the CNI side of a VF attachment: the NetConf and CNI protocol (env, stdin,
//! results and errors for spec 0.1.0–1.1.0), VF settings through the PF over netlink, moving the
//! VF netdev between network namespaces, IPAM delegation, and the on-disk state (sriov-cni
//! compatible cache, allocation markers, per-VF locks) with rollback of every step.
//!
//! It must not touch: pools, policies, gRPC, kubelet, or any async runtime (it is a short-lived,
//! synchronous, single-threaded binary apart from the netns helper threads). It reads sysfs only
//! through `vfpool-sysfs` and never writes it. Kernel access goes through the [`netlink::Netlink`]
//! trait and IPAM through [`ipam::Ipam`], both passed in by the caller.

pub mod env;
pub mod error;
pub mod ipam;
pub mod log;
pub mod mac;
pub mod netconf;
pub mod netlink;
pub mod netns;
pub mod plugin;
pub mod result;
pub mod state;
pub mod version;
pub mod vf;
