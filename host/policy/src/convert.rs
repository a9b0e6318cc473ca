//! From the discovery model (`vfpool_sysfs`) to the WIT records policies see.
//!
//! Every field of [`vfpool_sysfs::Device`] is passed on; the agent adds facts discovery cannot know
//! ([`HostFacts`]: which netdevs carry the default route, DDP profiles, devlink `enable_rdma`).

use std::collections::{BTreeMap, BTreeSet};

use rustc_hash::FxHashMap;

use vfpool_sysfs::{Device, DeviceKind, Inventory};

use crate::bindings::wit;
use crate::lowering::ImageCache;

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
    /// Whether a netdev of `device` carries the host's default route (WIT
    /// `carries-default-route`). A netdev known only by a lossy name (its kernel name is not
    /// UTF-8) matches no route table entry, whatever it carries: it counts as carrying the
    /// default route, so that the uplink is never pooled for want of a name to match.
    pub fn carries_default_route(&self, device: &Device) -> bool {
        device
            .netdevs
            .iter()
            .any(|n| n.name_is_lossy() || self.default_route_netdevs.contains(&n.name))
    }

    /// Reads the default-route netdevs from the text of `/proc/net/route` (the main IPv4 table):
    /// rows whose destination and mask are both `00000000`. Malformed rows are skipped.
    pub fn default_routes_from_proc(route_table: &str) -> BTreeSet<String> {
        route_table
            .lines()
            .skip(1)
            .filter_map(|line| {
                // ASCII whitespace only: the kernel refuses it in interface names, but not Unicode
                // spaces, and `eth\u{2003}0` split on those would hide its default route.
                let fields: Vec<&str> = line.split_ascii_whitespace().collect();
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
    /// `wit.devices` laid out for a selector that takes its arguments in one allocation: made on
    /// the first such `select`, copied into the guest on every one after (~0.5 MB for the
    /// 1,032 records of the 1,024-VF node).
    image: ImageCache,
}

impl PolicyInventory {
    /// Where the one-allocation image of the devices is kept (it depends on them alone: nothing
    /// changes a `PolicyInventory` once made).
    pub(crate) fn argument_image(&self) -> &ImageCache {
        &self.image
    }

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
        let (parents, parent_of) = parents(&devices, &index, inventory);
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
            image: ImageCache::new(),
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

/// What a PF's children say about it.
#[derive(Default)]
struct Children<'a> {
    /// The `pf-name` its first VF that has one carries.
    vf_pf_name: Option<&'a str>,
    /// The `pf-name` its first sub-function that has one carries (the uplink representor).
    sf_pf_name: Option<&'a str>,
    /// Its sub-functions' netdevs, which are never its name (upstream #645).
    sf_netdevs: Vec<&'a str>,
}

/// The distinct parent PFs of `devices` (sorted by id, so a PF's index orders like its PCI
/// address) and each device's entry among them. A parent's name is the `pf-name` its VFs carry
/// (the uplink representor in switchdev mode, its own netdev in legacy mode), else the one its
/// sub-functions carry (the uplink representor), else, when no child names it, the same name
/// derived from the PF's own record. Never simply the PF's first netdev: with sub-functions that
/// is often an SF representor (`en3f0pf0sf1` sorts before `p0`).
fn parents(
    devices: &[wit::Device],
    index: &FxHashMap<String, usize>,
    inventory: &Inventory,
) -> (Vec<wit::ParentPf>, Vec<Option<usize>>) {
    let mut children: BTreeMap<&str, Children> = BTreeMap::new();
    for d in devices {
        if let Some(pf_id) = d.pf_id.as_deref() {
            let entry = children.entry(pf_id).or_default();
            if d.kind == wit::DeviceKind::Aux {
                entry.sf_pf_name = entry.sf_pf_name.or(d.pf_name.as_deref());
                entry
                    .sf_netdevs
                    .extend(d.netdevs.iter().map(|n| n.name.as_str()));
            } else {
                entry.vf_pf_name = entry.vf_pf_name.or(d.pf_name.as_deref());
            }
        }
    }
    let parents: Vec<wit::ParentPf> = children
        .iter()
        .map(|(pf_id, c)| {
            // A PF no child names is rare (only sub-functions without an uplink): its discovery
            // record (own netdevs, switchdev) is looked up then only.
            let name = c.vf_pf_name.or(c.sf_pf_name).or_else(|| {
                let pf = inventory.devices.iter().find(|d| d.id == *pf_id)?;
                vfpool_sysfs::pf_netdev_name(pf, &c.sf_netdevs)
            });
            wit::ParentPf {
                id: (*pf_id).to_string(),
                name: name.map(str::to_string),
                numa_node: index
                    .get(*pf_id)
                    .and_then(|&i| devices.get(i))
                    .and_then(|pf| pf.numa_node),
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
        carries_default_route: facts.carries_default_route(d),
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

    /// The kernel allows any byte in an interface name but `/`, `:`, NUL and ASCII whitespace, so
    /// a name may hold a Unicode space; the table used to be split on those too, and the default
    /// route of `eth\u{2003}0` went unseen (its PF poolable).
    #[test]
    fn a_default_route_on_a_name_with_a_unicode_space_is_seen() {
        let table = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
eth\u{2003}0\t00000000\t0102A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0       \n";
        let routes = HostFacts::default_routes_from_proc(table);
        assert_eq!(routes.into_iter().collect::<Vec<_>>(), ["eth\u{2003}0"]);
    }

    fn netdev(name: &str, port: Option<&str>, switch: Option<&str>) -> vfpool_sysfs::Netdev {
        vfpool_sysfs::Netdev {
            name: name.into(),
            link_type: Some("ether".into()),
            operstate: Some("up".into()),
            carrier: Some(true),
            mac: None,
            mtu: Some(1500),
            phys_port_name: port.map(Into::into),
            phys_switch_id: switch.map(Into::into),
            bond: None,
        }
    }

    fn child(id: &str, kind: DeviceKind, pf_id: &str, pf_name: Option<&str>) -> Device {
        let mut d = Device::unknown(id, kind);
        d.pf_id = Some(pf_id.into());
        d.pf_name = pf_name.map(Into::into);
        d
    }

    /// The parent PF's name is the name its VFs and sub-functions carry (the uplink representor in
    /// switchdev mode), not its first netdev by name: the switchdev-sf node's port 1 lists the SF
    /// representor `en3f0pf0sf1` first. A PF whose children name none (port 2's sub-function has
    /// no uplink to name) gets the same name derived from its own record: its netdev, never its
    /// sub-function's.
    #[test]
    fn a_parent_pf_is_named_as_its_children_name_it() {
        let switch = Some("0300e8030000c4");
        let mut pf1 = Device::unknown("0000:03:00.0", DeviceKind::Pf);
        pf1.switchdev = true;
        pf1.netdevs = vec![
            netdev("en3f0pf0sf1", Some("pf0sf1"), switch),
            netdev("p0", Some("p0"), switch),
            netdev("p0_0", Some("pf0vf0"), switch),
        ];
        pf1.netdev = Some("en3f0pf0sf1".into());
        let mut pf2 = Device::unknown("0000:03:00.1", DeviceKind::Pf);
        pf2.netdevs = vec![netdev("enp3s0f1np1", None, None)];
        pf2.netdev = Some("enp3s0f1np1".into());
        let mut pf3 = Device::unknown("0000:04:00.0", DeviceKind::Pf);
        pf3.switchdev = true;
        pf3.netdevs = vec![
            netdev("en4f0pf0sf1", Some("pf0sf1"), switch),
            netdev("p4", Some("p0"), switch),
        ];
        pf3.netdev = Some("en4f0pf0sf1".into());
        let mut orphan_sf = child("mlx5_core.sf.5", DeviceKind::Aux, "0000:03:00.1", None);
        // Sorts before the PF's own netdev: a fallback must skip it.
        orphan_sf.netdevs = vec![netdev("enp3s0f1s1", None, None)];
        let mut devices = vec![
            pf1,
            child("0000:03:00.2", DeviceKind::Vf, "0000:03:00.0", Some("p0")),
            pf2,
            pf3,
            child(
                "mlx5_core.sf.2",
                DeviceKind::Aux,
                "0000:03:00.0",
                Some("p0"),
            ),
            orphan_sf,
            child(
                "mlx5_core.sf.9",
                DeviceKind::Aux,
                "0000:04:00.0",
                Some("p4"),
            ),
        ];
        devices.sort_by(|a, b| a.id.cmp(&b.id));
        let inventory = Inventory {
            devices,
            node: Default::default(),
        };
        let converted = PolicyInventory::new(&inventory, &HostFacts::default());
        let names: Vec<(&str, Option<&str>)> = converted
            .parents()
            .iter()
            .map(|p| (p.id.as_str(), p.name.as_deref()))
            .collect();
        assert_eq!(
            names,
            [
                ("0000:03:00.0", Some("p0")),
                ("0000:03:00.1", Some("enp3s0f1np1")),
                ("0000:04:00.0", Some("p4")),
            ]
        );
    }

    /// Discovery keeps a netdev whose kernel name is not UTF-8 under a lossy name, which no route
    /// table entry can match: the device must count as carrying the default route (never pooled),
    /// not as safe because nothing matched.
    #[test]
    fn a_device_with_a_lossy_netdev_name_counts_as_carrying_the_default_route() {
        let mut pf = Device::unknown("0000:3b:00.0", DeviceKind::Pf);
        pf.netdevs = vec![netdev("ens\u{fffd}0", None, None)];
        let mut vf = Device::unknown("0000:3b:00.2", DeviceKind::Vf);
        vf.netdevs = vec![netdev("ens1f0v0", None, None)];
        let inventory = Inventory {
            devices: vec![pf, vf],
            node: Default::default(),
        };
        let converted = PolicyInventory::new(&inventory, &HostFacts::default());
        assert!(
            converted
                .device("0000:3b:00.0")
                .unwrap()
                .carries_default_route
        );
        assert!(
            !converted
                .device("0000:3b:00.2")
                .unwrap()
                .carries_default_route
        );
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
            bond: None,
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
