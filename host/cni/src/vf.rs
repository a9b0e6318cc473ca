//! Which PF and VF index a `deviceID` is, and how its driver is bound, from sysfs (through
//! `vfpool-sysfs`, the same reader the agent uses).

use std::path::Path;

use thiserror::Error;
use vfpool_sysfs::{DeviceKind, DiscoveryError, SysfsRoot, discover_pci_device};

/// Drivers that take a VF away from the kernel's network stack (no netdev; user-space I/O).
pub const DPDK_DRIVERS: [&str; 3] = ["vfio-pci", "uio_pci_generic", "igb_uio"];

/// Why a VF could not be resolved.
#[derive(Debug, Error)]
pub enum VfError {
    /// sysfs could not be read or has no such device.
    #[error(
        "cannot resolve deviceID {pci} under {root}: it must be a VF on this node (Multus takes it from the pod's device allocation; check the NetworkAttachmentDefinition's resourceName)"
    )]
    Discovery {
        /// The VF.
        pci: String,
        /// The sysfs root.
        root: String,
        /// What went wrong.
        #[source]
        source: DiscoveryError,
    },
    /// The device is not a VF.
    #[error(
        "deviceID {pci} is not an SR-IOV VF (it has no physfn link); give the PCI address of a VF"
    )]
    NotAVf {
        /// The device.
        pci: String,
    },
    /// The VF's PF has no netdev to configure the VF through.
    #[error("VF {pci} has no PF network interface to configure it through (PF {pf:?})")]
    NoPfNetdev {
        /// The VF.
        pci: String,
        /// The PF's address.
        pf: Option<String>,
    },
    /// The VF index could not be found among the PF's `virtfnN` links.
    #[error("VF {pci} is not listed among the virtfn links of PF {pf}")]
    NoVfIndex {
        /// The VF.
        pci: String,
        /// The PF.
        pf: String,
    },
    /// The VF has neither a netdev in the host nor a DPDK driver.
    #[error(
        "VF {pci} has no network interface in the host namespace and no DPDK driver (driver {driver:?}); is it still attached to another pod?"
    )]
    NoNetdev {
        /// The VF.
        pci: String,
        /// Its driver.
        driver: Option<String>,
    },
}

/// A resolved VF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vf {
    /// PCI address.
    pub pci: String,
    /// The PF's netdev name.
    pub pf: String,
    /// VF index under the PF.
    pub index: u32,
    /// The VF's netdev in the host namespace, when it has one.
    pub netdev: Option<String>,
    /// The bound driver.
    pub driver: Option<String>,
}

impl Vf {
    /// True when bound to a DPDK (user-space) driver.
    pub fn is_dpdk(&self) -> bool {
        self.driver
            .as_deref()
            .is_some_and(|d| DPDK_DRIVERS.contains(&d))
    }
}

/// Reads the VF's PF, index, netdev and driver from the sysfs tree at `root`.
pub fn resolve(root: &Path, pci: &str) -> Result<Vf, VfError> {
    let sysfs = SysfsRoot::new(root);
    let device = discover_pci_device(&sysfs, pci).map_err(|source| VfError::Discovery {
        pci: pci.to_owned(),
        root: root.display().to_string(),
        source,
    })?;
    if device.kind != DeviceKind::Vf {
        return Err(VfError::NotAVf {
            pci: pci.to_owned(),
        });
    }
    let pf = device.pf_name.clone().ok_or_else(|| VfError::NoPfNetdev {
        pci: pci.to_owned(),
        pf: device.pf_id.clone(),
    })?;
    let index = device.vf_index.ok_or_else(|| VfError::NoVfIndex {
        pci: pci.to_owned(),
        pf: pf.clone(),
    })?;
    Ok(Vf {
        pci: device.id,
        pf,
        index,
        netdev: device.netdev,
        driver: device.driver,
    })
}
