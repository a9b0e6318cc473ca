//! `vfpool-sysfs`: what the node's kernel says about its SR-IOV hardware, read from sysfs.
//!
//! This crate owns:
//! - the device inventory model ([`Inventory`], [`Device`]) that policies, the device plugin and the
//!   CNI plugin all share;
//! - discovery ([`discover`], [`discover_pci_device`]): one read-only pass over a sysfs root that is
//!   always a parameter ([`SysfsRoot`], `/sys` on a real node), robust to missing and unreadable
//!   files (they become `None`, never a panic or a dropped device);
//! - simulated nodes ([`sim`]): a writer that lays out kernel-shaped sysfs trees from editable
//!   fixture files, for tests, the demo and benchmarks.
//!
//! It must not touch: netlink, network namespaces, policies, gRPC or any async runtime. It never
//! writes under a real sysfs root; the simulator writes only into the directory it is given.
//! Decisions such as "this netdev carries the default route, exclude it" belong to the agent and to
//! policies, not here.

mod address;
mod discover;
mod model;
mod read;
pub mod sim;

pub use address::{AddressError, PciAddress};
pub use discover::{
    CLASS_ACCELERATOR, CLASS_NETWORK, DiscoveryError, SysfsRoot, discover, discover_pci_device,
    is_sysfs_mount, pf_netdev_name,
};
pub use model::{BondLink, Device, DeviceKind, Inventory, Netdev, NodeFacts, VdpaDevice, VfRef};
