//! From the discovery model (`vfpool_sysfs`) to the WIT records policies see.
//!
//! Every field of [`vfpool_sysfs::Device`] is passed on; the agent adds facts discovery cannot know
//! ([`HostFacts`]: which netdevs carry the default route, DDP profiles, devlink `enable_rdma`).

use std::collections::{BTreeMap, BTreeSet};

use rustc_hash::FxHashMap;

use vfpool_sysfs::{Device, DeviceKind, Inventory};

use crate::bindings::wit;

/// Facts the agent adds to the inventory (not readable from sysfs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostFacts {
    /// Names of the netdevs that carry an IPv4 default route in the host's network namespace.
    pub default_route_netdevs: BTreeSet<String>,
    /// DDP profile name by device id, for devices whose profile the agent knows.
    pub ddp_profiles: BTreeMap<String, String>,
    /// The devlink parameter `enable_rdma` by device id, for devices where the agent could read it.
    pub rdma_enabled: BTreeMap<String, bool>,
}

impl HostFacts {
    /// Reads the default-route netdevs from the text of `/proc/net/route` (the main IPv4 table):
    /// rows whose destination and mask are both `00000000`. Malformed rows are skipped.
    pub fn default_routes_from_proc(route_table: &str) -> BTreeSet<String> {
        route_table
            .lines()
            .skip(1)
            .filter_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                match fields.as_slice() {
                    [
                        iface,
                        destination,
                        _gateway,
                        _flags,
                        _refcnt,
                        _use,
                        _metric,
                        mask,
                        ..,
                    ] if *destination == "00000000" && *mask == "00000000" => {
                        Some((*iface).to_string())
                    }
                    _ => None,
                }
            })
            .collect()
    }
}

/// An inventory converted once to WIT records, with an index by id and the parent PFs resolved,
/// so allocation requests can be assembled without converting or comparing ids again.
#[derive(Debug, Clone)]
pub struct PolicyInventory {
    pub(crate) wit: wit::Inventory,
    /// Position in `wit.devices` by id. Keys come from discovery, so a fast non-keyed hash is safe.
    index: FxHashMap<String, usize>,
    /// Every distinct `pf-id` a device names, sorted by id, with its netdev name and NUMA node.
    parents: Vec<wit::ParentPf>,
    /// For each device (same positions as `wit.devices`), its entry in `parents`.
    parent_of: Vec<Option<usize>>,
}

impl PolicyInventory {
    /// Converts `inventory` plus the agent's `facts`.
    pub fn new(inventory: &Inventory, facts: &HostFacts) -> Self {
        let mut devices: Vec<wit::Device> =
            inventory.devices.iter().map(|d| device(d, facts)).collect();
        // Sorted by id, as discovery sorts them, whoever built the inventory: allocation requests
        // order candidates by position instead of comparing ids on every call.
        if !devices.is_sorted_by(|a, b| a.id <= b.id) {
            devices.sort_by(|a, b| a.id.cmp(&b.id));
        }
        let index: FxHashMap<String, usize> = devices
            .iter()
            .enumerate()
            .map(|(i, d)| (d.id.clone(), i))
            .collect();
        let (parents, parent_of) = parents(&devices, &index);
        PolicyInventory {
            wit: wit::Inventory {
                devices,
                node: wit::NodeFacts {
                    vhost_net: inventory.node.vhost_net,
                    tun: inventory.node.tun,
                },
            },
            index,
            parents,
            parent_of,
        }
    }

    /// Whether a device with this id exists.
    pub fn contains(&self, id: &str) -> bool {
        self.index.contains_key(id)
    }

    /// Number of devices.
    pub fn len(&self) -> usize {
        self.wit.devices.len()
    }

    /// No devices at all.
    pub fn is_empty(&self) -> bool {
        self.wit.devices.is_empty()
    }

    /// The NUMA node of a device, if known.
    pub fn numa_node(&self, id: &str) -> Option<u32> {
        self.device(id).and_then(|d| d.numa_node)
    }

    pub(crate) fn device(&self, id: &str) -> Option<&wit::Device> {
        self.position(id).and_then(|i| self.wit.devices.get(i))
    }

    /// Where the device is in `wit.devices` (sorted by id).
    pub(crate) fn position(&self, id: &str) -> Option<usize> {
        self.index.get(id).copied()
    }

    pub(crate) fn devices(&self) -> &[wit::Device] {
        &self.wit.devices
    }

    /// The parent PFs, sorted by id.
    pub(crate) fn parents(&self) -> &[wit::ParentPf] {
        &self.parents
    }

    /// The device at `position`'s entry in [`Self::parents`].
    pub(crate) fn parent_of(&self, position: usize) -> Option<usize> {
        self.parent_of.get(position).copied().flatten()
    }
}

/// The distinct parent PFs of `devices` (sorted by id, so a PF's index orders like its PCI
/// address) and each device's entry among them. A parent's name is its netdev when the PF is in
/// the inventory and shows one, else the `pf-name` its first VF knows (the uplink representor in
/// switchdev mode, a PF outside this inventory).
fn parents(
    devices: &[wit::Device],
    index: &FxHashMap<String, usize>,
) -> (Vec<wit::ParentPf>, Vec<Option<usize>>) {
    let mut vf_pf_names: BTreeMap<&str, Option<&str>> = BTreeMap::new();
    for d in devices {
        if let Some(pf_id) = d.pf_id.as_deref() {
            let name = vf_pf_names.entry(pf_id).or_default();
            if name.is_none() {
                *name = d.pf_name.as_deref();
            }
        }
    }
    let parents: Vec<wit::ParentPf> = vf_pf_names
        .iter()
        .map(|(pf_id, vf_pf_name)| {
            let pf = index.get(*pf_id).and_then(|&i| devices.get(i));
            wit::ParentPf {
                id: (*pf_id).to_string(),
                name: pf
                    .and_then(|pf| pf.netdev.clone())
                    .or_else(|| vf_pf_name.map(str::to_string)),
                numa_node: pf.and_then(|pf| pf.numa_node),
            }
        })
        .collect();
    let parent_of = devices
        .iter()
        .map(|d| {
            let pf_id = d.pf_id.as_deref()?;
            parents.binary_search_by(|p| p.id.as_str().cmp(pf_id)).ok()
        })
        .collect();
    (parents, parent_of)
}

fn device(d: &Device, facts: &HostFacts) -> wit::Device {
    wit::Device {
        id: d.id.clone(),
        kind: match d.kind {
            DeviceKind::Pf => wit::DeviceKind::Pf,
            DeviceKind::Vf => wit::DeviceKind::Vf,
            DeviceKind::Aux => wit::DeviceKind::Aux,
        },
        vendor: d.vendor.clone(),
        device: d.device.clone(),
        subsystem_vendor: d.subsystem_vendor.clone(),
        subsystem_device: d.subsystem_device.clone(),
        class_code: d.class.clone(),
        driver: d.driver.clone(),
        numa_node: d.numa_node,
        acpi_index: d.acpi_index,
        iommu_group: d.iommu_group,
        no_iommu: d.no_iommu,
        uio_device: d.uio_device.clone(),
        sriov_total_vfs: d.sriov_total_vfs,
        sriov_num_vfs: d.sriov_num_vfs,
        vfs: d
            .vfs
            .iter()
            .map(|v| wit::VfRef {
                index: v.index,
                id: v.id.clone(),
            })
            .collect(),
        pf_id: d.pf_id.clone(),
        pf_name: d.pf_name.clone(),
        vf_index: d.vf_index,
        switchdev: d.switchdev,
        netdevs: d
            .netdevs
            .iter()
            .map(|n| wit::Netdev {
                name: n.name.clone(),
                link_type: n.link_type.clone(),
                operstate: n.operstate.clone(),
                carrier: n.carrier,
                mac: n.mac.clone(),
                mtu: n.mtu,
                phys_port_name: n.phys_port_name.clone(),
                phys_switch_id: n.phys_switch_id.clone(),
            })
            .collect(),
        netdev: d.netdev.clone(),
        link_type: d.link_type.clone(),
        rdma_devices: d.rdma_devices.clone(),
        pkey: d.pkey.clone(),
        devlink_enable_rdma: facts.rdma_enabled.get(&d.id).copied(),
        vdpa_devices: d
            .vdpa_devices
            .iter()
            .map(|v| wit::VdpaDevice {
                name: v.name.clone(),
                driver: v.driver.clone(),
                vhost_device: v.vhost_device.clone(),
            })
            .collect(),
        aux_type: d.aux_type.clone(),
        sf_num: d.sf_num,
        aux_devices: d.aux_devices.clone(),
        carries_default_route: d
            .netdevs
            .iter()
            .any(|n| facts.default_route_netdevs.contains(&n.name)),
        ddp_profile: facts.ddp_profiles.get(&d.id).cloned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_routes_from_proc_net_route() {
        let table = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
eno1\t00000000\t0102A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
eno1\t0002A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0\n\
ens1f0\t0000000A\t00000000\t0001\t0\t0\t0\t000000FF\t0\t0\t0\n";
        let routes = HostFacts::default_routes_from_proc(table);
        assert_eq!(routes.into_iter().collect::<Vec<_>>(), ["eno1"]);
    }

    #[test]
    fn every_model_field_reaches_the_wit_record() {
        let mut d = Device::unknown("0000:3b:00.2", DeviceKind::Vf);
        d.vendor = Some("15b3".into());
        d.class = Some("020000".into());
        d.numa_node = Some(1);
        d.pf_name = Some("ens1f0".into());
        d.vf_index = Some(0);
        d.netdevs.push(vfpool_sysfs::Netdev {
            name: "ens1f0v0".into(),
            link_type: Some("ether".into()),
            operstate: Some("up".into()),
            carrier: Some(true),
            mac: None,
            mtu: Some(1500),
            phys_port_name: None,
            phys_switch_id: None,
        });
        let inventory = Inventory {
            devices: vec![d],
            node: Default::default(),
        };
        let mut facts = HostFacts::default();
        facts.default_route_netdevs.insert("ens1f0v0".into());
        facts
            .ddp_profiles
            .insert("0000:3b:00.2".into(), "GTPv1-C/U IPv4/IPv6 payload".into());
        facts.rdma_enabled.insert("0000:3b:00.2".into(), true);
        let converted = PolicyInventory::new(&inventory, &facts);
        let w = converted.device("0000:3b:00.2").unwrap();
        assert_eq!(w.class_code.as_deref(), Some("020000"));
        assert_eq!(w.numa_node, Some(1));
        assert_eq!(w.netdevs[0].mtu, Some(1500));
        assert!(w.carries_default_route);
        assert!(w.ddp_profile.is_some());
        assert_eq!(w.devlink_enable_rdma, Some(true));
        assert_eq!(converted.numa_node("0000:3b:00.2"), Some(1));
        assert!(!converted.contains("0000:3b:00.3"));
    }
}
