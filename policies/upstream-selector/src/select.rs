//! Pool selection with upstream semantics: resources in order, selectors in order, first match
//! wins; AND across a selector's keys, OR within a key's list.

use std::collections::BTreeMap;

use crate::config::{Config, DeviceType, Resource, Selector, VdpaType};
use crate::range;

/// PF, VF or auxiliary device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Physical (or plain) PCI function.
    Pf,
    /// SR-IOV virtual function.
    Vf,
    /// Auxiliary device.
    Aux,
}

/// What the selector reads from a device. Implemented for the WIT record in the component and for
/// plain structs in tests and benchmarks, so the logic is the same everywhere.
pub trait DeviceView {
    /// PCI address or auxiliary device name.
    fn id(&self) -> &str;
    /// PF, VF or aux.
    fn kind(&self) -> Kind;
    /// Vendor id (`15b3`).
    fn vendor(&self) -> Option<&str>;
    /// Device id (`1018`).
    fn device(&self) -> Option<&str>;
    /// Class code (`020000`).
    fn class_code(&self) -> Option<&str>;
    /// Bound driver.
    fn driver(&self) -> Option<&str>;
    /// ACPI index.
    fn acpi_index(&self) -> Option<u32>;
    /// `sriov_totalvfs`.
    fn sriov_total_vfs(&self) -> Option<u32>;
    /// `sriov_numvfs`.
    fn sriov_num_vfs(&self) -> Option<u32>;
    /// PF (or parent) PCI address.
    fn pf_id(&self) -> Option<&str>;
    /// PF netdev name.
    fn pf_name(&self) -> Option<&str>;
    /// VF index.
    fn vf_index(&self) -> Option<u32>;
    /// Link type.
    fn link_type(&self) -> Option<&str>;
    /// Whether the function has RDMA devices.
    fn has_rdma(&self) -> bool;
    /// The function's devlink `enable_rdma` parameter, when the agent could read it.
    fn devlink_enable_rdma(&self) -> Option<bool>;
    /// Default InfiniBand pkey.
    fn pkey(&self) -> Option<&str>;
    /// Driver of the first vDPA device.
    fn first_vdpa_driver(&self) -> Option<&str>;
    /// Auxiliary device type (`sf`).
    fn aux_type(&self) -> Option<&str>;
    /// Sub-function number.
    fn sf_num(&self) -> Option<u32>;
    /// A netdev of the device carries the host's default route.
    fn carries_default_route(&self) -> bool;
    /// DDP profile name.
    fn ddp_profile(&self) -> Option<&str>;
}

/// A pool member: the device's index in the inventory plus the Allocate hints of the selector that
/// took it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Index into the inventory slice given to [`select`].
    pub index: usize,
    /// `isRdma` of the selector.
    pub rdma: bool,
    /// `needVhostNet` of the selector.
    pub vhost_net: bool,
    /// `vdpaType` of the selector.
    pub vdpa_type: Option<VdpaType>,
    /// `additionalInfo` merged for this device (`*`, then its PCI address).
    pub additional_info: Option<Vec<(String, String)>>,
}

/// A selected pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    /// `<prefix>/<name>`.
    pub resource_name: String,
    /// Device type.
    pub device_type: DeviceType,
    /// `excludeTopology`.
    pub exclude_topology: bool,
    /// Members in inventory order.
    pub members: Vec<Member>,
}

/// Groups `devices` into the configured pools. Every resource yields a pool, possibly empty.
pub fn select<D: DeviceView>(config: &Config, devices: &[D]) -> Vec<Pool> {
    let mut claimed = vec![false; devices.len()];
    let mut pools = Vec::with_capacity(config.resources.len());
    for resource in &config.resources {
        let mut members = Vec::new();
        for selector in &resource.selectors {
            for (index, device) in devices.iter().enumerate() {
                if claimed[index]
                    || !eligible(resource.device_type, device)
                    || !matches(resource.device_type, selector, device)
                {
                    continue;
                }
                claimed[index] = true;
                members.push(Member {
                    index,
                    rdma: selector.is_rdma,
                    vhost_net: selector.need_vhost_net,
                    vdpa_type: selector.vdpa_type,
                    additional_info: additional_info(resource, device),
                });
            }
        }
        members.sort_by_key(|m| m.index);
        pools.push(Pool {
            resource_name: resource.resource_name.clone(),
            device_type: resource.device_type,
            exclude_topology: resource.exclude_topology,
            members,
        });
    }
    pools
}

/// Which devices a device type may ever pool (upstream's provider `AddTargetDevices`).
pub fn eligible<D: DeviceView>(device_type: DeviceType, device: &D) -> bool {
    // Unbound devices are dropped by every upstream provider.
    if device.driver().is_none() {
        return false;
    }
    let class = device
        .class_code()
        .and_then(|c| c.get(..2))
        .and_then(|b| u8::from_str_radix(b, 16).ok());
    match device_type {
        DeviceType::NetDevice => {
            device.kind() != Kind::Aux
                && class == Some(0x02)
                // A PF with VFs enabled is never advertised.
                && !(device.kind() == Kind::Pf
                    && device.sriov_total_vfs().is_some()
                    && device.sriov_num_vfs().unwrap_or(0) > 0)
                // Pooling the node's uplink would cut the node off.
                && !device.carries_default_route()
        }
        DeviceType::Accelerator => device.kind() != Kind::Aux && class == Some(0x12),
        // Upstream (`NewGenNetDevice`) fails a sub-function whose PF has no uplink representor
        // and skips it with a warning; discovery leaves such a sub-function without a PF name.
        DeviceType::AuxNetDevice => {
            device.kind() == Kind::Aux && class == Some(0x02) && device.pf_name().is_some()
        }
    }
}

fn listed(list: &[String], value: Option<&str>) -> bool {
    list.is_empty() || value.is_some_and(|v| list.iter().any(|x| x == v))
}

/// Whether one selector object takes the device (AND across keys, OR within a list).
pub fn matches<D: DeviceView>(device_type: DeviceType, selector: &Selector, device: &D) -> bool {
    let generic = listed(&selector.vendors, device.vendor())
        && listed(&selector.devices, device.device())
        && listed(&selector.drivers, device.driver());
    if !generic {
        return false;
    }
    let index = match device.kind() {
        Kind::Aux => device.sf_num(),
        _ => device.vf_index(),
    };
    let pf_filters = |s: &Selector| {
        (s.pf_names.is_empty() || range::selects(&s.pf_names, device.pf_name(), index))
            && (s.root_devices.is_empty() || range::selects(&s.root_devices, device.pf_id(), index))
            && listed(&s.link_types, device.link_type())
            && (!s.is_rdma || rdma_capable(device))
    };
    match device_type {
        DeviceType::Accelerator => listed(&selector.pci_addresses, Some(device.id())),
        DeviceType::AuxNetDevice => {
            pf_filters(selector) && listed(&selector.aux_types, device.aux_type())
        }
        DeviceType::NetDevice => {
            // Upstream compares acpi_index as text, "" when the file is absent.
            let acpi = device.acpi_index().map(|i| i.to_string());
            listed(&selector.pci_addresses, Some(device.id()))
                && listed(
                    &selector.acpi_indexes,
                    Some(acpi.as_deref().unwrap_or_default()),
                )
                && pf_filters(selector)
                && listed(&selector.ddp_profiles, device.ddp_profile())
                && listed(&selector.pkeys, device.pkey())
                && match selector.vdpa_type {
                    None => true,
                    Some(VdpaType::Vhost) => device.first_vdpa_driver() == Some("vhost_vdpa"),
                    Some(VdpaType::Virtio) => device.first_vdpa_driver() == Some("virtio_vdpa"),
                }
        }
    }
}

/// Upstream's `isRdma` test (`rdmaSpec.IsRdma`): RDMA devices under the function, or else the
/// devlink parameter `enable_rdma` — an exclusive-RDMA VF whose RDMA device has moved into a pod's
/// network namespace has none left on the host but still counts (upstream #565), so a restarted
/// agent keeps advertising it. An unknown parameter counts as false, as upstream's error path does.
pub fn rdma_capable<D: DeviceView>(device: &D) -> bool {
    device.has_rdma() || device.devlink_enable_rdma() == Some(true)
}

fn additional_info<D: DeviceView>(
    resource: &Resource,
    device: &D,
) -> Option<Vec<(String, String)>> {
    let info = resource.additional_info.as_ref()?;
    // For auxiliary devices upstream keys on the parent PCI address.
    let address = match device.kind() {
        Kind::Aux => device.pf_id().unwrap_or_default(),
        _ => device.id(),
    };
    let mut merged: BTreeMap<&str, &str> = BTreeMap::new();
    for key in ["*", address] {
        if let Some(values) = info.get(key) {
            merged.extend(values.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        }
    }
    Some(
        merged
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}
