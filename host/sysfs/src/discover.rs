//! Discovery: one pass over `bus/pci/devices` that reads every attribute once, then links VFs and
//! auxiliary devices to their PFs in memory.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};

use crate::address::{AddressError, PciAddress};
use crate::model::{Device, DeviceKind, Inventory, Netdev, NodeFacts, VdpaDevice, VfRef};
use crate::read::{self, Modalias, SysDir};

/// PCI base class of network controllers.
pub const CLASS_NETWORK: u8 = 0x02;
/// PCI base class of processing accelerators.
pub const CLASS_ACCELERATOR: u8 = 0x12;

/// Upper bound on discovery threads: beyond a few, the kernel's locks, not the CPUs, limit it.
const MAX_THREADS: usize = 4;
/// Below this many functions per thread, a thread costs more than it saves.
const FUNCTIONS_PER_THREAD: usize = 128;

/// The directory that stands for `/sys`. Every path the agent reads is below it, so a test, the
/// demo or a benchmark can point the whole agent at a simulated node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SysfsRoot {
    path: PathBuf,
}

impl Default for SysfsRoot {
    fn default() -> Self {
        SysfsRoot::new("/sys")
    }
}

impl SysfsRoot {
    /// A root at `path` (`/sys` on a real node).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        SysfsRoot { path: path.into() }
    }

    /// The root directory itself.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `bus/pci/devices`, the directory of links to every PCI function.
    pub fn pci_devices(&self) -> PathBuf {
        self.path.join("bus/pci/devices")
    }

    /// The sysfs directory of one PCI function (through its `bus/pci/devices` link).
    pub fn pci_device(&self, address: &str) -> PathBuf {
        self.pci_devices().join(address)
    }
}

/// Why discovery could not run at all. Problems with single devices or files never end up here:
/// they become `None` fields on the device.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// The sysfs root does not exist or cannot be listed.
    #[error(
        "cannot read the sysfs root {path}: {source} (pass --sysfs-root with the directory that stands for /sys)"
    )]
    RootUnreadable {
        /// The root that was given.
        path: PathBuf,
        /// Why it could not be read.
        #[source]
        source: io::Error,
    },
    /// The root exists but has no readable `bus/pci/devices` directory.
    #[error(
        "{path} is not a sysfs root: it has no readable bus/pci/devices ({source}); pass --sysfs-root with the directory that stands for /sys"
    )]
    NoPciBus {
        /// The root that was given.
        path: PathBuf,
        /// Why `bus/pci/devices` could not be listed.
        #[source]
        source: io::Error,
    },
    /// A device was asked for by an address that is not a PCI address.
    #[error(transparent)]
    InvalidAddress(#[from] AddressError),
    /// A device was asked for that is not on this node.
    #[error("PCI device {address} is not present under {dir}")]
    DeviceNotFound {
        /// The requested address.
        address: String,
        /// The directory where it was looked for.
        dir: PathBuf,
    },
}

/// Discovers every network (class 0x02) and accelerator (class 0x12) PCI function under `root`, and
/// the auxiliary devices (sub-functions) of the network functions.
///
/// A function whose class cannot be read is kept when it shows SR-IOV or network traits (a `physfn`
/// or `sriov_totalvfs` file, or a `net/` directory): dropping a VF because one file is unreadable
/// would shrink a pool silently.
pub fn discover(root: &SysfsRoot) -> Result<Inventory, DiscoveryError> {
    let bus_path = root.pci_devices();
    let bus = SysDir::open_or_error(&bus_path).map_err(|errno| {
        let source = io::Error::from(errno);
        match std::fs::metadata(root.path()) {
            Ok(meta) if meta.is_dir() => DiscoveryError::NoPciBus {
                path: root.path().to_owned(),
                source,
            },
            Ok(_) => DiscoveryError::RootUnreadable {
                path: root.path().to_owned(),
                source: io::Error::new(io::ErrorKind::NotADirectory, "not a directory"),
            },
            Err(source) => DiscoveryError::RootUnreadable {
                path: root.path().to_owned(),
                source,
            },
        }
    })?;

    let names: Vec<String> = bus
        .names()
        .into_iter()
        .filter(|name| {
            let valid = PciAddress::is_valid(name);
            if !valid {
                tracing::debug!(entry = %name, "ignoring a bus/pci/devices entry that is not a PCI address");
            }
            valid
        })
        .collect();
    let read_chunk = |chunk: &[String]| -> Vec<Record> {
        chunk
            .iter()
            .filter_map(|name| {
                let dir = bus.sub(name)?;
                read_function(name, dir, ClassFilter::NetworkOrAccelerator)
            })
            .collect()
    };
    // Discovery is syscall-bound and every function is independent until `link`, so big nodes are
    // read by a few threads at once; small ones are not worth a thread.
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, MAX_THREADS)
        .min(names.len().div_ceil(FUNCTIONS_PER_THREAD));
    let records: Vec<Record> = if threads <= 1 {
        read_chunk(&names)
    } else {
        let chunk_len = names.len().div_ceil(threads);
        std::thread::scope(|scope| {
            let workers: Vec<_> = names
                .chunks(chunk_len)
                .map(|chunk| scope.spawn(move || read_chunk(chunk)))
                .collect();
            workers
                .into_iter()
                .flat_map(|worker| match worker.join() {
                    Ok(records) => records,
                    // A panic in a reader is a bug; re-raise it rather than return a partial node.
                    Err(panic) => std::panic::resume_unwind(panic),
                })
                .collect()
        })
    };

    let mut devices = link(records);
    devices.sort_unstable_by(|a, b| a.id.cmp(&b.id));
    Ok(Inventory {
        devices,
        node: read_node_facts(root),
    })
}

/// Reads one PCI function by address, with its PF facts (PF name, VF index) resolved, whatever its
/// class. This is the CNI plugin's fast path: it reads the function and its PF, nothing else.
pub fn discover_pci_device(root: &SysfsRoot, address: &str) -> Result<Device, DiscoveryError> {
    let parsed: PciAddress = address.parse()?;
    let canonical = parsed.to_string();
    let bus_path = root.pci_devices();
    if let Err(source) = std::fs::metadata(root.path()) {
        return Err(DiscoveryError::RootUnreadable {
            path: root.path().to_owned(),
            source,
        });
    }
    let not_found = || DiscoveryError::DeviceNotFound {
        address: canonical.clone(),
        dir: bus_path.clone(),
    };
    let dir = SysDir::open(&bus_path.join(&canonical)).ok_or_else(not_found)?;
    let record = read_function(&canonical, dir, ClassFilter::Any).ok_or_else(not_found)?;
    let mut records = vec![record];
    if let Some(pf_id) = records[0].physfn.clone()
        && let Some(pf_dir) = SysDir::open(&bus_path.join(&pf_id))
        && let Some(pf) = read_function(&pf_id, pf_dir, ClassFilter::Any)
    {
        records.push(pf);
    }
    link(records)
        .into_iter()
        .find(|d| d.id == canonical)
        .ok_or_else(not_found)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum ClassFilter {
    NetworkOrAccelerator,
    Any,
}

/// What one function's directory says, before VFs and aux devices are tied to their PFs.
struct Record {
    device: Device,
    /// For a VF: the PF's address from the `physfn` link.
    physfn: Option<String>,
    /// Names of the netdevs that belong to this function's auxiliary devices (sub-functions); they are
    /// never the PF's name (upstream #645).
    sf_netdevs: Vec<String>,
    aux: Vec<Device>,
    /// Where the function was read, for a second look; the directory itself is closed so that a node
    /// with thousands of functions never holds thousands of descriptors.
    dir: PathBuf,
}

fn read_function(id: &str, dir: SysDir, filter: ClassFilter) -> Option<Record> {
    let entries = dir.names();
    let has = |name: &str| entries.binary_search_by(|e| e.as_str().cmp(name)).is_ok();

    // Like upstream (ghw), the ids come from `modalias`: one read instead of five. The plain files
    // fill in whatever a missing or malformed modalias lacks.
    let modalias = has("modalias")
        .then(|| dir.trimmed("modalias"))
        .flatten()
        .map(|text| Modalias::parse(&text))
        .unwrap_or_default();
    let plain = |value: Option<String>, file: &str| {
        value.or_else(|| has(file).then(|| dir.hex_id(file)).flatten())
    };
    let class = plain(modalias.class, "class");
    if filter == ClassFilter::NetworkOrAccelerator {
        let base = class
            .as_deref()
            .and_then(|c| c.get(..2))
            .and_then(|b| u8::from_str_radix(b, 16).ok());
        match base {
            Some(CLASS_NETWORK | CLASS_ACCELERATOR) => {}
            Some(_) => return None,
            None if has("physfn") || has("sriov_totalvfs") || has("net") => {}
            None => return None,
        }
    }

    let kind = if has("physfn") {
        DeviceKind::Vf
    } else {
        DeviceKind::Pf
    };
    let physfn = has("physfn").then(|| dir.link_name("physfn")).flatten();
    let mut device = Device::unknown(id, kind);
    device.class = class;
    device.vendor = plain(modalias.vendor, "vendor");
    device.device = plain(modalias.device, "device");
    device.subsystem_vendor = plain(modalias.subsystem_vendor, "subsystem_vendor");
    device.subsystem_device = plain(modalias.subsystem_device, "subsystem_device");
    device.driver = has("driver").then(|| dir.link_name("driver")).flatten();
    device.numa_node = has("numa_node")
        .then(|| dir.unsigned("numa_node"))
        .flatten();
    device.acpi_index = has("acpi_index")
        .then(|| dir.unsigned("acpi_index"))
        .flatten();
    if has("iommu_group") {
        device.iommu_group = dir
            .link_name("iommu_group")
            .and_then(|g| g.parse::<u32>().ok());
        // Only vfio creates no-IOMMU groups, and only those have a `name` attribute.
        if device.driver.as_deref() == Some("vfio-pci") {
            device.no_iommu = dir.trimmed("iommu_group/name").as_deref() == Some("vfio-noiommu");
        }
    }
    if has("uio") {
        device.uio_device = dir.sub("uio").and_then(|d| d.names().into_iter().next());
    }
    if has("sriov_totalvfs") {
        device.sriov_total_vfs = dir.unsigned("sriov_totalvfs");
        device.sriov_num_vfs = dir.unsigned("sriov_numvfs");
    }

    let mut vfs: Vec<VfRef> = entries
        .iter()
        .filter_map(|name| name.strip_prefix("virtfn")?.parse::<u32>().ok())
        .filter_map(|index| {
            let id = dir.link_name(&format!("virtfn{index}"))?;
            Some(VfRef { index, id })
        })
        .collect();
    vfs.sort_unstable_by_key(|vf| vf.index);
    device.vfs = vfs;

    if has("net") {
        // Representor facts matter only on a PF's netdevs (switchdev uplink and VF representors).
        device.netdevs = read_netdevs(&dir, "net", kind == DeviceKind::Pf);
    }
    device.netdev = device.netdevs.first().map(|n| n.name.clone());
    device.link_type = device.netdevs.first().and_then(|n| n.link_type.clone());

    if has("infiniband") {
        read_rdma(&dir, &mut device);
    }

    let mut aux = Vec::new();
    let mut sf_netdevs = Vec::new();
    for name in &entries {
        if let Some(index) = name.strip_prefix("vdpa")
            && !index.is_empty()
            && index.bytes().all(|b| b.is_ascii_digit())
        {
            if let Some(vdpa_dir) = dir.sub(name) {
                device.vdpa_devices.push(read_vdpa(vdpa_dir, name));
            }
        } else if let Some((aux_type, _)) = parse_aux_name(name)
            && let Some(aux_dir) = dir.sub(name)
        {
            let child = read_aux(aux_dir, name, aux_type, &device);
            sf_netdevs.extend(child.netdevs.iter().map(|n| n.name.clone()));
            device.aux_devices.push(child.id.clone());
            aux.push(child);
        }
    }

    Some(Record {
        device,
        physfn,
        sf_netdevs,
        aux,
        dir: dir.path().to_owned(),
    })
}

fn read_netdevs(parent: &SysDir, net: &str, representor_facts: bool) -> Vec<Netdev> {
    let Some(net_dir) = parent.sub(net) else {
        return Vec::new();
    };
    // Attributes are read as `<ifname>/<attr>` relative to `net/`: one lookup more per read is
    // cheaper than opening and closing every netdev's directory.
    net_dir
        .names()
        .into_iter()
        .map(|name| {
            let attr = |file: &str| format!("{name}/{file}");
            Netdev {
                link_type: net_dir
                    .trimmed(&attr("type"))
                    .and_then(|code| read::link_type_name(&code))
                    .map(str::to_owned),
                operstate: net_dir.trimmed(&attr("operstate")),
                carrier: net_dir.flag(&attr("carrier")),
                mac: net_dir
                    .trimmed(&attr("address"))
                    .map(|m| m.to_ascii_lowercase()),
                mtu: net_dir.unsigned(&attr("mtu")),
                phys_port_name: representor_facts
                    .then(|| net_dir.trimmed(&attr("phys_port_name")))
                    .flatten(),
                phys_switch_id: representor_facts
                    .then(|| net_dir.trimmed(&attr("phys_switch_id")))
                    .flatten(),
                name,
            }
        })
        .collect()
}

fn read_rdma(dir: &SysDir, device: &mut Device) {
    device.rdma_devices = dir.sub("infiniband").map(|d| d.names()).unwrap_or_default();
    let infiniband = device.link_type.as_deref() == Some("infiniband");
    if infiniband && let Some(first) = device.rdma_devices.first() {
        device.pkey = dir.trimmed(&format!("infiniband/{first}/ports/1/pkeys/0"));
    }
}

fn read_vdpa(dir: SysDir, name: &str) -> VdpaDevice {
    VdpaDevice {
        name: name.to_owned(),
        driver: dir.link_name("driver"),
        vhost_device: dir
            .names()
            .into_iter()
            .find(|entry| entry.starts_with("vhost-vdpa-")),
    }
}

/// `mlx5_core.sf.4` → (`sf`, 4). The last token must be a number and there must be at least three.
fn parse_aux_name(name: &str) -> Option<(&str, u32)> {
    let (rest, number) = name.rsplit_once('.')?;
    let number = number.parse::<u32>().ok()?;
    let (driver, aux_type) = rest.rsplit_once('.')?;
    (!driver.is_empty() && !aux_type.is_empty() && !driver.contains(':'))
        .then_some((aux_type, number))
}

fn read_aux(dir: SysDir, name: &str, aux_type: &str, parent: &Device) -> Device {
    let entries = dir.names();
    let mut aux = Device::unknown(name, DeviceKind::Aux);
    aux.aux_type = Some(aux_type.to_owned());
    aux.sf_num = dir.unsigned("sfnum");
    aux.vendor = parent.vendor.clone();
    aux.device = parent.device.clone();
    aux.subsystem_vendor = parent.subsystem_vendor.clone();
    aux.subsystem_device = parent.subsystem_device.clone();
    aux.class = parent.class.clone();
    aux.driver = parent.driver.clone();
    aux.numa_node = parent.numa_node;
    aux.pf_id = Some(parent.id.clone());
    if entries.iter().any(|e| e == "net") {
        aux.netdevs = read_netdevs(&dir, "net", false);
    }
    aux.netdev = aux.netdevs.first().map(|n| n.name.clone());
    aux.link_type = aux.netdevs.first().and_then(|n| n.link_type.clone());
    if entries.iter().any(|e| e == "infiniband") {
        aux.rdma_devices = dir.sub("infiniband").map(|d| d.names()).unwrap_or_default();
    }
    aux
}

/// A switchdev uplink representor: on the eswitch (`phys_switch_id` set) with a port name `p<N>`.
fn is_uplink_representor(netdev: &Netdev) -> bool {
    let on_switch = netdev
        .phys_switch_id
        .as_deref()
        .is_some_and(|id| !id.is_empty());
    let uplink_port = netdev
        .phys_port_name
        .as_deref()
        .and_then(|p| p.strip_prefix('p'))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    on_switch && uplink_port
}

/// A VF or SF representor (`pf0vf3`, `pf0sf88`, `c1pf0vf3`): never the PF's name.
fn is_function_representor(netdev: &Netdev) -> bool {
    netdev
        .phys_port_name
        .as_deref()
        .is_some_and(|p| p.contains("vf") || p.contains("sf"))
}

/// The PF's name as VFs and SFs see it: the uplink representor in switchdev mode, otherwise the
/// first netdev that is neither a representor nor a sub-function's.
fn pf_netdev(pf: &Device, sf_netdevs: &[String]) -> Option<Netdev> {
    if let Some(uplink) = pf.netdevs.iter().find(|n| is_uplink_representor(n)) {
        return Some(uplink.clone());
    }
    pf.netdevs
        .iter()
        .find(|n| !is_function_representor(n) && !sf_netdevs.contains(&n.name))
        .cloned()
}

/// Ties VFs and aux devices to their PFs, in memory, and flattens the records into devices.
fn link(records: Vec<Record>) -> Vec<Device> {
    let by_id: HashMap<&str, usize> = records
        .iter()
        .enumerate()
        .map(|(i, r)| (r.device.id.as_str(), i))
        .collect();
    let pf_facts: Vec<(Option<Netdev>, bool)> = records
        .iter()
        .map(|r| {
            let netdev = pf_netdev(&r.device, &r.sf_netdevs);
            let switchdev = r.device.netdevs.iter().any(is_uplink_representor);
            (netdev, switchdev)
        })
        .collect();

    let mut vf_links: Vec<(Option<String>, Option<u32>, Option<String>)> = Vec::new();
    for record in &records {
        let Some(pf_id) = record.physfn.as_deref() else {
            vf_links.push((None, None, None));
            continue;
        };
        let pf_index = by_id.get(pf_id).copied();
        let vf_index = match pf_index {
            Some(i) => records[i]
                .device
                .vfs
                .iter()
                .find(|vf| vf.id == record.device.id)
                .map(|vf| vf.index),
            // The PF was not part of this pass (filtered or unreadable): ask its links directly.
            None => vf_index_via_physfn(&record.dir, &record.device.id),
        };
        let pf_netdev = pf_index.and_then(|i| pf_facts[i].0.clone());
        let pf_name = pf_netdev.as_ref().map(|n| n.name.clone());
        let pf_link_type = pf_netdev.and_then(|n| n.link_type);
        vf_links.push((pf_name, vf_index, pf_link_type));
    }

    let mut devices = Vec::with_capacity(records.len());
    for ((record, (pf_name, vf_index, pf_link_type)), (own_pf_netdev, switchdev)) in
        records.into_iter().zip(vf_links).zip(pf_facts)
    {
        let mut device = record.device;
        if device.kind == DeviceKind::Vf {
            device.pf_id = record.physfn;
            device.pf_name = pf_name;
            device.vf_index = vf_index;
            if device.link_type.is_none() {
                device.link_type = pf_link_type;
            }
        } else {
            device.switchdev = switchdev;
        }
        for mut aux in record.aux {
            aux.pf_name = own_pf_netdev.as_ref().map(|n| n.name.clone());
            if aux.link_type.is_none() {
                aux.link_type = own_pf_netdev.as_ref().and_then(|n| n.link_type.clone());
            }
            devices.push(aux);
        }
        devices.push(device);
    }
    devices
}

fn vf_index_via_physfn(vf_dir: &Path, id: &str) -> Option<u32> {
    let physfn = SysDir::open(&vf_dir.join("physfn"))?;
    physfn
        .names()
        .into_iter()
        .filter_map(|name| name.strip_prefix("virtfn")?.parse::<u32>().ok())
        .find(|index| physfn.link_name(&format!("virtfn{index}")).as_deref() == Some(id))
}

fn read_node_facts(root: &SysfsRoot) -> NodeFacts {
    let misc = root.path().join("class/misc");
    NodeFacts {
        vhost_net: misc.join("vhost-net").exists(),
        tun: misc.join("tun").exists(),
        rdma_cm: misc.join("rdma_cm").exists(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aux_names_need_three_tokens_and_a_number() {
        assert_eq!(parse_aux_name("mlx5_core.sf.4"), Some(("sf", 4)));
        assert_eq!(parse_aux_name("mlx5_core.eth-rep.0"), Some(("eth-rep", 0)));
        assert_eq!(parse_aux_name("0000:3b:00.2"), None);
        assert_eq!(parse_aux_name("sf.4"), None);
        assert_eq!(parse_aux_name("mlx5_core.sf.x"), None);
        assert_eq!(parse_aux_name("mlx5_core.sf.-1"), None);
    }
}
