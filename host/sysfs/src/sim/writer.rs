//! Lays a [`Fixture`] out on disk as a sysfs tree.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Component, Path, PathBuf};

use super::SimError;
use super::fixture::{
    Fixture, FunctionSpec, LinkType, VdpaKind, first_match_by_index, named_by_index,
    vdpa_device_name, vf_address,
};
use crate::address::PciAddress;

/// Counts of what a simulated node holds, for a one-line report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Physical functions (including non-network ones).
    pub physical_functions: usize,
    /// Virtual functions.
    pub virtual_functions: usize,
    /// Sub-functions.
    pub sub_functions: usize,
}

/// Writes `fixture` as a sysfs tree into `out`, which must not exist or be empty. The fixture is
/// checked first, as [`Fixture::from_toml`] checks it: one built or changed in code may describe a
/// node that cannot be laid out.
pub fn write_tree(fixture: &Fixture, out: &Path) -> Result<Summary, SimError> {
    let origin = if fixture.description.is_empty() {
        "(no description)".to_owned()
    } else {
        format!("{:?}", fixture.description)
    };
    fixture.validate(&origin)?;
    if let Ok(mut entries) = fs::read_dir(out)
        && entries.next().is_some()
    {
        return Err(SimError::OutputNotEmpty(out.to_owned()));
    }
    let mut tree = Tree::new(out, fixture);
    tree.dir("bus/pci/devices")?;
    tree.dir("bus/pci/drivers")?;
    tree.dir("bus/auxiliary/devices")?;
    tree.dir("bus/vdpa/devices")?;
    tree.dir("class/net")?;
    tree.dir("kernel/iommu_groups")?;
    if fixture.vhost_net {
        tree.file("class/misc/vhost-net/dev", "10:238")?;
    }
    if fixture.tun {
        tree.file("class/misc/tun/dev", "10:200")?;
    }
    if fixture.rdma_cm {
        tree.file("class/misc/rdma_cm/dev", "10:122")?;
    }
    let mut summary = Summary::default();
    for spec in &fixture.functions {
        let counts = tree.physical_function(spec)?;
        summary.physical_functions += 1;
        summary.virtual_functions += counts.0;
        summary.sub_functions += counts.1;
    }
    Ok(summary)
}

/// Drivers that take a function away from the kernel's network stack: no netdev.
fn is_userspace_driver(driver: &str) -> bool {
    matches!(
        driver,
        "vfio-pci" | "igb_uio" | "uio_pci_generic" | "pci-pf-stub" | "none"
    )
}

fn is_uio_driver(driver: &str) -> bool {
    matches!(driver, "igb_uio" | "uio_pci_generic")
}

/// What the simulator writes for one function, PF or VF.
struct FunctionFiles<'a> {
    address: PciAddress,
    vendor: &'a str,
    device: &'a str,
    subsystem_vendor: &'a str,
    subsystem_device: &'a str,
    class: &'a str,
    driver: Option<&'a str>,
    numa_node: i32,
    acpi_index: Option<u32>,
    iommu_group: Option<u32>,
    no_iommu: bool,
    netdevs: Vec<NetdevFiles>,
    link_type: LinkType,
    rdma: Vec<String>,
}

struct NetdevFiles {
    name: String,
    operstate: String,
    carrier: bool,
    mtu: u32,
    phys_port_name: Option<String>,
    phys_switch_id: Option<String>,
}

struct Tree<'f> {
    root: PathBuf,
    fixture: &'f Fixture,
    root_ports: BTreeSet<String>,
    /// Every address the fixture's functions occupy (root ports go elsewhere).
    functions: BTreeSet<PciAddress>,
    used_groups: BTreeSet<u32>,
    next_group: u32,
    next_uio: u32,
    next_rdma_char: u32,
    next_vdpa: u32,
    next_ifindex: u32,
    mac_serial: u32,
}

impl<'f> Tree<'f> {
    fn new(root: &Path, fixture: &'f Fixture) -> Self {
        let used_groups: BTreeSet<u32> = fixture
            .functions
            .iter()
            .filter_map(|f| f.iommu_group)
            .collect();
        Tree {
            root: root.to_owned(),
            fixture,
            root_ports: BTreeSet::new(),
            functions: fixture.function_addresses(),
            next_group: used_groups.last().map_or(10, |g| g + 1),
            used_groups,
            next_uio: 0,
            next_rdma_char: 0,
            next_vdpa: 0,
            next_ifindex: 2,
            mac_serial: 0,
        }
    }

    /// `rel` under the root, refused unless every component is a normal name (no `..`, `.`, root
    /// or empty path): fixture names end up in these paths, and the simulator writes only inside
    /// the directory it is given.
    fn under_root(&self, rel: &str) -> Result<PathBuf, SimError> {
        let plain = !rel.is_empty()
            && Path::new(rel)
                .components()
                .all(|c| matches!(c, Component::Normal(_)));
        if !plain {
            return Err(SimError::UnsafeName {
                path: rel.to_owned(),
            });
        }
        Ok(self.root.join(rel))
    }

    fn dir(&self, rel: &str) -> Result<PathBuf, SimError> {
        let path = self.under_root(rel)?;
        create_dirs(&path)?;
        Ok(path)
    }

    fn file(&self, rel: &str, contents: &str) -> Result<(), SimError> {
        let path = self.under_root(rel)?;
        if let Some(parent) = path.parent() {
            create_dirs(parent)?;
        }
        fs::write(&path, format!("{contents}\n")).map_err(|source| SimError::Write { path, source })
    }

    /// A relative symlink at `link` (relative to the root) pointing at `target` (relative to the
    /// root), like the kernel's.
    fn link(&self, link: &str, target: &str) -> Result<(), SimError> {
        let link_path = self.under_root(link)?;
        self.under_root(target)?;
        if let Some(parent) = link_path.parent() {
            create_dirs(parent)?;
        }
        let relative = relative_path(Path::new(link).parent().unwrap_or(Path::new("")), target);
        symlink(&relative, &link_path).map_err(|source| SimError::Write {
            path: link_path,
            source,
        })
    }

    fn allocate_group(&mut self, wanted: Option<u32>) -> u32 {
        if let Some(group) = wanted {
            return group;
        }
        while self.used_groups.contains(&self.next_group) {
            self.next_group += 1;
        }
        let group = self.next_group;
        self.used_groups.insert(group);
        group
    }

    /// The directory of a function under `devices/`, below a root port on the bus before it. The
    /// port takes the first device number on that bus that no function of the fixture uses (a
    /// fixture may well put a function at `<bus-1>:00.0`, whose `bus/pci/devices` entry the port
    /// would otherwise collide with); with none free, the function sits below the host bridge.
    fn device_dir(&mut self, address: PciAddress) -> Result<String, SimError> {
        let upstream_bus = address.bus.saturating_sub(1);
        let host_bridge = format!("pci{:04x}:{upstream_bus:02x}", address.domain);
        let free = (0..32u8)
            .map(|device| PciAddress {
                domain: address.domain,
                bus: upstream_bus,
                device,
                function: 0,
            })
            .find(|port| !self.functions.contains(port));
        let Some(port) = free.map(|p| p.to_string()) else {
            return Ok(format!("devices/{host_bridge}/{address}"));
        };
        let port_dir = format!("devices/{host_bridge}/{port}");
        if self.root_ports.insert(port.clone()) {
            // The PCIe root port: a bridge (class 0604) that discovery must skip.
            self.file(&format!("{port_dir}/class"), "0x060400")?;
            self.file(&format!("{port_dir}/vendor"), "0x8086")?;
            self.file(&format!("{port_dir}/device"), "0x2030")?;
            self.link(&format!("bus/pci/devices/{port}"), &port_dir)?;
        }
        Ok(format!("{port_dir}/{address}"))
    }

    fn next_mac(&mut self, address: PciAddress) -> String {
        self.mac_serial += 1;
        let s = self.mac_serial;
        format!(
            "0c:42:{:02x}:{:02x}:{:02x}:{:02x}",
            address.bus,
            (address.device << 3) | address.function,
            (s >> 8) & 0xff,
            s & 0xff
        )
    }

    fn write_function(&mut self, dir: &str, f: &FunctionFiles<'_>) -> Result<(), SimError> {
        let bdf = f.address.to_string();
        self.file(&format!("{dir}/vendor"), &format!("0x{}", f.vendor))?;
        self.file(&format!("{dir}/device"), &format!("0x{}", f.device))?;
        self.file(
            &format!("{dir}/subsystem_vendor"),
            &format!("0x{}", f.subsystem_vendor),
        )?;
        self.file(
            &format!("{dir}/subsystem_device"),
            &format!("0x{}", f.subsystem_device),
        )?;
        self.file(&format!("{dir}/class"), &format!("0x{}", f.class))?;
        self.file(&format!("{dir}/revision"), "0x00")?;
        self.file(&format!("{dir}/numa_node"), &f.numa_node.to_string())?;
        self.file(&format!("{dir}/enable"), "1")?;
        let class = f.class.to_ascii_uppercase();
        self.file(
            &format!("{dir}/modalias"),
            &format!(
                "pci:v0000{}d0000{}sv0000{}sd0000{}bc{}sc{}i{}",
                f.vendor.to_ascii_uppercase(),
                f.device.to_ascii_uppercase(),
                f.subsystem_vendor.to_ascii_uppercase(),
                f.subsystem_device.to_ascii_uppercase(),
                &class[0..2],
                &class[2..4],
                &class[4..6],
            ),
        )?;
        if let Some(index) = f.acpi_index {
            self.file(&format!("{dir}/acpi_index"), &index.to_string())?;
        }
        self.link(&format!("bus/pci/devices/{bdf}"), dir)?;
        if let Some(driver) = f.driver.filter(|d| *d != "none") {
            let driver_dir = format!("bus/pci/drivers/{driver}");
            self.link(&format!("{dir}/driver"), &driver_dir)?;
            self.link(&format!("{driver_dir}/{bdf}"), dir)?;
            if is_uio_driver(driver) {
                let uio = format!("uio{}", self.next_uio);
                self.next_uio += 1;
                self.file(&format!("{dir}/uio/{uio}/name"), driver)?;
                self.link(&format!("class/uio/{uio}"), &format!("{dir}/uio/{uio}"))?;
            }
        }
        let group = self.allocate_group(f.iommu_group);
        let group_dir = format!("kernel/iommu_groups/{group}");
        self.dir(&format!("{group_dir}/devices"))?;
        self.link(&format!("{group_dir}/devices/{bdf}"), dir)?;
        self.link(&format!("{dir}/iommu_group"), &group_dir)?;
        if f.no_iommu {
            self.file(&format!("{group_dir}/name"), "vfio-noiommu")?;
        }
        for netdev in &f.netdevs {
            self.write_netdev(dir, f.address, netdev, f.link_type)?;
        }
        for rdma in &f.rdma {
            self.write_rdma(dir, rdma)?;
        }
        Ok(())
    }

    fn write_netdev(
        &mut self,
        dir: &str,
        address: PciAddress,
        netdev: &NetdevFiles,
        link_type: LinkType,
    ) -> Result<(), SimError> {
        let net = format!("{dir}/net/{}", netdev.name);
        let mac = self.next_mac(address);
        self.file(&format!("{net}/type"), &link_type.arphrd().to_string())?;
        self.file(&format!("{net}/operstate"), &netdev.operstate)?;
        self.file(
            &format!("{net}/carrier"),
            if netdev.carrier { "1" } else { "0" },
        )?;
        self.file(&format!("{net}/address"), &mac)?;
        self.file(&format!("{net}/mtu"), &netdev.mtu.to_string())?;
        self.file(&format!("{net}/ifindex"), &self.next_ifindex.to_string())?;
        self.next_ifindex += 1;
        if let Some(port) = &netdev.phys_port_name {
            self.file(&format!("{net}/phys_port_name"), port)?;
        }
        if let Some(switch) = &netdev.phys_switch_id {
            self.file(&format!("{net}/phys_switch_id"), switch)?;
        }
        self.link(&format!("class/net/{}", netdev.name), &net)
    }

    fn write_rdma(&mut self, dir: &str, name: &str) -> Result<(), SimError> {
        let ib = format!("{dir}/infiniband/{name}");
        self.file(&format!("{ib}/node_type"), "1: CA")?;
        self.file(&format!("{ib}/ports/1/pkeys/0"), "0xffff")?;
        self.link(&format!("class/infiniband/{name}"), &ib)?;
        let n = self.next_rdma_char;
        self.next_rdma_char += 1;
        for (class, dev) in [
            ("infiniband_verbs", format!("uverbs{n}")),
            ("infiniband_mad", format!("umad{n}")),
            ("infiniband_mad", format!("issm{n}")),
        ] {
            let char_dir = format!("{dir}/{class}/{dev}");
            self.file(&format!("{char_dir}/ibdev"), name)?;
            self.link(&format!("class/{class}/{dev}"), &char_dir)?;
        }
        Ok(())
    }

    /// Writes a PF (or plain function) with its VFs and SFs; returns (VFs, SFs) written.
    fn physical_function(&mut self, spec: &FunctionSpec) -> Result<(usize, usize), SimError> {
        let address: PciAddress =
            spec.address
                .parse()
                .map_err(|e: crate::AddressError| SimError::Invalid {
                    origin: self.fixture.description.clone(),
                    field: "address".to_owned(),
                    message: e.to_string(),
                })?;
        let dir = self.device_dir(address)?;
        // A legacy PF registered as a devlink physical port shows the same two attributes as a
        // switchdev uplink; only the representors below tell the modes apart.
        let eswitch_port = spec.switchdev || spec.physical_port;
        let switch_id =
            eswitch_port.then(|| format!("{:02x}{:02x}e8030000c4", address.bus, address.device));
        let port = address.function;
        let netdev_files = |name: &str, port_name: Option<String>| NetdevFiles {
            name: name.to_owned(),
            operstate: spec.operstate.clone(),
            carrier: spec.carrier,
            mtu: spec.mtu,
            phys_switch_id: port_name.as_ref().and(switch_id.clone()),
            phys_port_name: port_name,
        };
        let mut netdevs: Vec<NetdevFiles> = spec
            .netdevs
            .iter()
            .enumerate()
            .map(|(i, name)| {
                netdev_files(name, (eswitch_port && i == 0).then(|| format!("p{port}")))
            })
            .collect();
        let uplink = spec.netdevs.first().cloned().unwrap_or_default();
        if spec.switchdev {
            if let Some(vfs) = &spec.vfs {
                netdevs.extend((0..vfs.count).map(|i| {
                    netdev_files(&format!("{uplink}_{i}"), Some(format!("pf{port}vf{i}")))
                }));
            }
            netdevs.extend(spec.sfs.iter().map(|sf| {
                // Named the way udev names SF representors; they sort before the uplink (`p0`).
                netdev_files(
                    &format!("en{:x}f{port}pf{port}sf{}", address.bus, sf.sfnum),
                    Some(format!("pf{port}sf{}", sf.sfnum)),
                )
            }));
        }
        let subsystem_device = spec.subsystem_device.as_deref().unwrap_or("0000");
        let subsystem_vendor = spec.subsystem_vendor.as_deref().unwrap_or(&spec.vendor);
        let numa_node = spec.numa_node.unwrap_or(-1);
        self.write_function(
            &dir,
            &FunctionFiles {
                address,
                vendor: &spec.vendor,
                device: &spec.device,
                subsystem_vendor,
                subsystem_device,
                class: &spec.class,
                driver: spec.driver.as_deref(),
                numa_node,
                acpi_index: spec.acpi_index,
                iommu_group: spec.iommu_group,
                no_iommu: spec.no_iommu,
                netdevs,
                link_type: spec.link_type,
                rdma: spec.rdma.clone(),
            },
        )?;

        let mut vf_count = 0;
        if let Some(total) = spec.total_vfs {
            let vfs = spec.vfs.as_ref();
            let count = vfs.map_or(0, |v| v.count);
            self.file(&format!("{dir}/sriov_totalvfs"), &total.to_string())?;
            self.file(&format!("{dir}/sriov_numvfs"), &count.to_string())?;
            self.file(&format!("{dir}/sriov_drivers_autoprobe"), "1")?;
            if let Some(vfs) = vfs {
                self.file(&format!("{dir}/sriov_offset"), &vfs.offset.to_string())?;
                self.file(&format!("{dir}/sriov_stride"), &vfs.stride.to_string())?;
                self.file(&format!("{dir}/sriov_vf_device"), &vfs.device)?;
                // Looked up by index once here rather than parsed again for every VF.
                let moved = named_by_index(vfs.moved_to_pod.as_deref(), vfs.count);
                let no_iommu = named_by_index(vfs.no_iommu.as_deref(), vfs.count);
                let drivers = first_match_by_index(&vfs.drivers, vfs.count);
                let vdpa = first_match_by_index(&vfs.vdpa, vfs.count);
                let at = |table: &[bool], index: u32| table.get(index as usize) == Some(&true);
                for index in 0..vfs.count {
                    // The fixture was validated: every VF fits below bus ff.
                    let Some(vf_address) = vf_address(address, vfs, index) else {
                        continue;
                    };
                    let driver = drivers
                        .get(index as usize)
                        .copied()
                        .flatten()
                        .map(String::as_str)
                        .or(vfs.driver.as_deref());
                    let kernel_netdev = driver.is_some_and(|d| !is_userspace_driver(d));
                    let in_pod = at(&moved, index);
                    let netdevs = match (&vfs.netdev, kernel_netdev && !in_pod) {
                        (Some(template), true) => vec![NetdevFiles {
                            name: template.replace("{index}", &index.to_string()),
                            operstate: vfs.operstate.clone(),
                            carrier: true,
                            mtu: spec.mtu,
                            phys_port_name: None,
                            phys_switch_id: None,
                        }],
                        _ => Vec::new(),
                    };
                    // An exclusive-RDMA VF keeps its RDMA device in the host's view only while its
                    // netdev is in the host namespace too.
                    let rdma = match &vfs.rdma {
                        Some(naming) if kernel_netdev && !in_pod => {
                            vec![format!("{}{}", naming.prefix, naming.first + index)]
                        }
                        _ => Vec::new(),
                    };
                    let vf_dir = self.device_dir(vf_address)?;
                    self.write_function(
                        &vf_dir,
                        &FunctionFiles {
                            address: vf_address,
                            vendor: &spec.vendor,
                            device: &vfs.device,
                            subsystem_vendor,
                            subsystem_device,
                            class: &spec.class,
                            driver,
                            numa_node,
                            acpi_index: None,
                            iommu_group: None,
                            no_iommu: at(&no_iommu, index),
                            netdevs,
                            link_type: spec.link_type,
                            rdma,
                        },
                    )?;
                    let vf_bdf = vf_address.to_string();
                    self.link(&format!("{dir}/virtfn{index}"), &vf_dir)?;
                    self.link(&format!("{vf_dir}/physfn"), &dir)?;
                    if let Some(kind) = vdpa.get(index as usize).copied().flatten() {
                        let name = vdpa_device_name(
                            vfs.vdpa_name.as_deref(),
                            index,
                            vf_address,
                            self.next_vdpa,
                        );
                        self.write_vdpa(&vf_dir, &name, *kind)?;
                    }
                    tracing::trace!(vf = %vf_bdf, "simulated VF written");
                    vf_count += 1;
                }
            }
        }

        for (i, sf) in spec.sfs.iter().enumerate() {
            let name = sf
                .name
                .clone()
                .unwrap_or_else(|| format!("mlx5_core.sf.{}", i + 2));
            let sf_dir = format!("{dir}/{name}");
            self.file(&format!("{sf_dir}/sfnum"), &sf.sfnum.to_string())?;
            let driver = sf.driver.as_deref().unwrap_or("mlx5_core.sf");
            if driver != "none" {
                let driver_dir = format!("bus/auxiliary/drivers/{driver}");
                self.dir(&driver_dir)?;
                self.link(&format!("{sf_dir}/driver"), &driver_dir)?;
            }
            if let Some(netdev) = &sf.netdev {
                let files = NetdevFiles {
                    name: netdev.clone(),
                    operstate: spec.operstate.clone(),
                    carrier: spec.carrier,
                    mtu: spec.mtu,
                    phys_port_name: None,
                    phys_switch_id: None,
                };
                self.write_netdev(&sf_dir, address, &files, spec.link_type)?;
            }
            // Under the SF, as the kernel puts an ib_device's character devices under the
            // ib_device's parent (`infiniband_verbs/uverbsN` too, which Allocate hands out).
            if let Some(rdma) = &sf.rdma {
                self.write_rdma(&sf_dir, rdma)?;
            }
            self.link(&format!("{sf_dir}/subsystem"), "bus/auxiliary")?;
            self.link(&format!("bus/auxiliary/devices/{name}"), &sf_dir)?;
        }
        Ok((vf_count, spec.sfs.len()))
    }

    /// A vDPA device on a VF: a child directory on the vDPA bus (its `subsystem` link says so, its
    /// name is whatever its creator chose), and the `vhost-vdpa-N` character device for `vhost`.
    fn write_vdpa(&mut self, vf_dir: &str, name: &str, kind: VdpaKind) -> Result<(), SimError> {
        let n = self.next_vdpa;
        self.next_vdpa += 1;
        let dir = format!("{vf_dir}/{name}");
        let driver = match kind {
            VdpaKind::Vhost => "vhost_vdpa",
            VdpaKind::Virtio => "virtio_vdpa",
        };
        self.dir(&dir)?;
        self.link(&format!("{dir}/subsystem"), "bus/vdpa")?;
        self.link(
            &format!("{dir}/driver"),
            &format!("bus/vdpa/drivers/{driver}"),
        )?;
        self.dir(&format!("bus/vdpa/drivers/{driver}"))?;
        self.link(&format!("bus/vdpa/devices/{name}"), &dir)?;
        if kind == VdpaKind::Vhost {
            self.file(&format!("{dir}/vhost-vdpa-{n}/dev"), &format!("235:{n}"))?;
        }
        Ok(())
    }
}

fn create_dirs(path: &Path) -> Result<(), SimError> {
    fs::create_dir_all(path).map_err(|source| SimError::Write {
        path: path.to_owned(),
        source,
    })
}

/// The path from directory `from` to `to`, both relative to the same root.
fn relative_path(from: &Path, to: &str) -> PathBuf {
    let from: Vec<Component<'_>> = from.components().collect();
    let to_path = Path::new(to);
    let to: Vec<Component<'_>> = to_path.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut out = PathBuf::new();
    for _ in common..from.len() {
        out.push("..");
    }
    for component in &to[common..] {
        out.push(component.as_os_str());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_climb_then_descend() {
        assert_eq!(
            relative_path(
                Path::new("bus/pci/devices"),
                "devices/pci0000:3a/0000:3a:00.0/0000:3b:00.0"
            ),
            PathBuf::from("../../../devices/pci0000:3a/0000:3a:00.0/0000:3b:00.0")
        );
        assert_eq!(
            relative_path(Path::new("devices/a/b"), "devices/a/c"),
            PathBuf::from("../c")
        );
    }
}
