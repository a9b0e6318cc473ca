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

/// An inventory converted once to WIT records, with an index by id so allocation requests can be
/// assembled without converting again.
#[derive(Debug, Clone)]
pub struct PolicyInventory {
    pub(crate) wit: wit::Inventory,
    /// Position in `wit.devices` by id. Keys come from discovery, so a fast non-keyed hash is safe.
    index: FxHashMap<String, usize>,
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
        let index = devices
            .iter()
            .enumerate()
            .map(|(i, d)| (d.id.clone(), i))
            .collect();
        PolicyInventory {
            wit: wit::Inventory {
                devices,
                node: wit::NodeFacts {
                    vhost_net: inventory.node.vhost_net,
                    tun: inventory.node.tun,
                },
            },
            index,
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

    /// Whether the device is an auxiliary device (`None`: unknown id).
    pub fn is_aux(&self, id: &str) -> Option<bool> {
        self.device(id).map(|d| d.kind == wit::DeviceKind::Aux)
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
