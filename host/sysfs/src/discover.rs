//! Discovery: one pass over `bus/pci/devices` that reads every attribute once, then links VFs and
//! auxiliary devices to their PFs in memory.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};

use crate::address::{AddressError, PciAddress};
use crate::model::{BondLink, Device, DeviceKind, Inventory, Netdev, NodeFacts, VdpaDevice, VfRef};
use crate::read::{self, Entry, Modalias, SysDir};

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
    /// Where device nodes are (`/dev`), looked at for node facts; `None` for a simulated tree.
    dev: Option<PathBuf>,
}

impl Default for SysfsRoot {
    fn default() -> Self {
        SysfsRoot::new("/sys")
    }
}

/// Whether `path` is a sysfs mount, this machine's own sysfs (not a simulated node), wherever it
/// is mounted. Decided by the filesystem type, not the path: a DaemonSet mounts the host's sysfs
/// elsewhere (`--sysfs-root /host/sys`), and a simulated tree is never a sysfs mount (nobody can
/// write one), so a path comparison would take the real node for a simulated one.
pub fn is_sysfs_mount(path: &Path) -> bool {
    const SYSFS_MAGIC: u64 = 0x6265_6572;
    rustix::fs::statfs(path).is_ok_and(|fs| u64::try_from(fs.f_type) == Ok(SYSFS_MAGIC))
}

impl SysfsRoot {
    /// A root at `path` (`/sys` on a real node). When `path` is this machine's sysfs, mounted
    /// anywhere ([`is_sysfs_mount`]), node facts also look at `/dev` (see
    /// [`SysfsRoot::with_dev_root`]): a privileged pod has the host's `/dev`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        let host = is_sysfs_mount(&path);
        SysfsRoot {
            path,
            dev: host.then(|| PathBuf::from("/dev")),
        }
    }

    /// Looks at `dev` for device nodes as well: `/dev/vhost-net` and `/dev/net/tun` exist from
    /// boot (static device names that load their module on first open), while their
    /// `class/misc` entries appear only once the module is loaded. Upstream checks the nodes.
    pub fn with_dev_root(mut self, dev: impl Into<PathBuf>) -> Self {
        self.dev = Some(dev.into());
        self
    }

    /// Where node facts look for device nodes too, if anywhere (see [`SysfsRoot::with_dev_root`]).
    pub fn dev_root(&self) -> Option<&Path> {
        self.dev.as_deref()
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
    /// The process ran out of file descriptors or memory, opening the bus or reading a device
    /// under it: the root is fine, the agent is not, and what it read is not the node.
    #[error(
        "cannot read {path}: {source}; the agent is out of file descriptors or memory (raise its open-files limit, e.g. LimitNOFILE or the container's ulimit, or its memory limit)"
    )]
    OutOfResources {
        /// The directory that could not be read (the bus, or the device looked up).
        path: PathBuf,
        /// The exhaustion the kernel reported.
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

/// Why `bus/pci/devices` could not be opened, told as what the operator should fix: the agent
/// running out of descriptors or memory is not a wrong `--sysfs-root`.
fn bus_error(root: &SysfsRoot, bus_path: &Path, errno: rustix::io::Errno) -> DiscoveryError {
    let source = io::Error::from(errno);
    if read::is_exhaustion(errno) {
        return DiscoveryError::OutOfResources {
            path: bus_path.to_owned(),
            source,
        };
    }
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
}

/// Discovers every network (class 0x02) and accelerator (class 0x12) PCI function under `root`, and
/// the auxiliary devices (sub-functions) of the network functions.
///
/// A function whose class cannot be read is kept when it shows SR-IOV or network traits (a `physfn`
/// or `sriov_totalvfs` file, or a `net/` directory): dropping a VF because one file is unreadable
/// would shrink a pool silently.
///
/// A VF being added or removed (its directory there, its `physfn` link not yet or no longer) is
/// left out rather than reported as a standalone PF, which a policy could pool as a plain NIC: a
/// function without `physfn` or `sriov_totalvfs` at an address where an SR-IOV PF of the node
/// places its VFs (`sriov_offset`, `sriov_stride`, `sriov_totalvfs`). The next scan, once the
/// kernel is done, sees it as a VF or not at all.
pub fn discover(root: &SysfsRoot) -> Result<Inventory, DiscoveryError> {
    let mark = read::exhaustion_mark();
    let bus_path = root.pci_devices();
    let bus =
        SysDir::open_or_error(&bus_path).map_err(|errno| bus_error(root, &bus_path, errno))?;

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

    let mut devices = link(records, &|id: &str| bus.link_parent(id));
    devices.sort_unstable_by(|a, b| a.id.cmp(&b.id));
    let node = read_node_facts(root);
    // Devices unread for want of descriptors are not gone: no inventory rather than a short one.
    if let Some(source) = read::exhausted_since(mark) {
        return Err(DiscoveryError::OutOfResources {
            path: bus_path,
            source,
        });
    }
    Ok(Inventory { devices, node })
}

/// Reads one PCI function by address, with its PF facts (PF name, VF index) resolved, whatever its
/// class. This is the CNI plugin's fast path: it reads the function and its PF, nothing else, and
/// of a switchdev PF's VF and SF representors only their port names (29 → 6 ms on a PF with 1,024
/// VFs, measured in a release build).
pub fn discover_pci_device(root: &SysfsRoot, address: &str) -> Result<Device, DiscoveryError> {
    let mark = read::exhaustion_mark();
    let found = read_pci_device(root, address);
    // A device unread for want of descriptors is not missing (nor without its driver).
    match read::exhausted_since(mark) {
        Some(source) => Err(DiscoveryError::OutOfResources {
            path: root.pci_device(address),
            source,
        }),
        None => found,
    }
}

fn read_pci_device(root: &SysfsRoot, address: &str) -> Result<Device, DiscoveryError> {
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
    let bus = SysDir::open(&bus_path);
    link(records, &|id: &str| bus.as_ref()?.link_parent(id))
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
    /// For an SR-IOV PF: where its VFs sit, to recognise one that has lost its links (or not yet
    /// gained them).
    vf_placement: Option<VfPlacement>,
    /// Names of the netdevs that belong to this function's auxiliary devices (sub-functions); they are
    /// never the PF's name (upstream #645).
    sf_netdevs: Vec<String>,
    /// For a PF: the eswitch mode its driver reports in `net/<if>/compat/devlink/mode`
    /// (`legacy`/`switchdev`), a file only MLNX_OFED's mlx5 creates.
    compat_eswitch_mode: Option<String>,
    aux: Vec<Device>,
    /// Where the function was read, for a second look; the directory itself is closed so that a node
    /// with thousands of functions never holds thousands of descriptors.
    dir: PathBuf,
}

fn read_function(id: &str, dir: SysDir, filter: ClassFilter) -> Option<Record> {
    let entries = dir.entries();
    let has = |name: &str| {
        entries
            .binary_search_by(|e| e.name.as_str().cmp(name))
            .is_ok()
    };

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
    // The kernel's `physfn` always leads to the PF's function directory; anything else (a
    // hand-built or damaged tree) would tie the VF to a PF that does not exist.
    let physfn = has("physfn")
        .then(|| dir.link_name("physfn"))
        .flatten()
        .filter(|target| {
            let valid = PciAddress::is_valid(target);
            if !valid {
                tracing::debug!(path = %dir.path().join("physfn").display(), target = %target, "physfn does not lead to a PCI function; the VF is not tied to a PF");
            }
            valid
        });
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
    let mut vfs: Vec<VfRef> = entries
        .iter()
        .filter_map(|e| {
            let index = virtfn_index(&e.name)?;
            let id = dir.link_name(&e.name)?;
            // Like `physfn`: a link that does not lead to a PCI function (a hand-built or damaged
            // tree) would name a VF that does not exist.
            if !PciAddress::is_valid(&id) {
                tracing::debug!(path = %dir.path().join(&e.name).display(), target = %id, "virtfn link does not lead to a PCI function; not a VF");
                return None;
            }
            Some(VfRef { index, id })
        })
        .collect();
    vfs.sort_unstable_by_key(|vf| vf.index);
    device.vfs = vfs;

    // `virtfnN` links exist exactly while VFs are enabled, whatever `sriov_numvfs` says: the
    // kernel updates the count after adding the VFs, a driver may garble it, and a damaged tree
    // may lack the files. A PF with links therefore always counts as SR-IOV capable with at least
    // that many VFs enabled; taking its word for "none" would let it be pooled itself while its
    // VFs are in use.
    let linked = u32::try_from(device.vfs.len()).unwrap_or(u32::MAX);
    let mut vf_placement = None;
    if has("sriov_totalvfs") || linked > 0 {
        let num_vfs = has("sriov_numvfs")
            .then(|| dir.unsigned("sriov_numvfs"))
            .flatten();
        if linked > 0 && num_vfs.is_none_or(|n| n < linked) {
            tracing::debug!(device = %id, sriov_numvfs = ?num_vfs, virtfn_links = linked, "sriov_numvfs is unreadable or below the VFs linked; counting the links");
        }
        device.sriov_num_vfs = match num_vfs {
            Some(n) => Some(n.max(linked)),
            None => (linked > 0).then_some(linked),
        };
        device.sriov_total_vfs = has("sriov_totalvfs")
            .then(|| dir.unsigned("sriov_totalvfs"))
            .flatten()
            .or_else(|| {
                // Like upstream's IsSriovPF, the file's existence (or here, VFs linked) is what
                // makes a function SR-IOV capable. `None` would say "not capable" and let a PF
                // whose VFs are in use be pooled itself, so an unreadable total becomes what is
                // known for sure: at least the VFs that are enabled.
                tracing::debug!(device = %id, "sriov_totalvfs is missing or unreadable; using the enabled VFs as its lower bound");
                Some(device.sriov_num_vfs.unwrap_or(0))
            });
        if has("sriov_offset") && has("sriov_stride") {
            vf_placement = VfPlacement::read(id, &dir, device.sriov_total_vfs);
        }
    }

    let mut compat_eswitch_mode = None;
    if has("net") {
        // Representor facts matter only on a PF's netdevs (switchdev uplink and VF representors).
        // The one-device lookup (the CNI plugin's, on every ADD) needs a PF's own netdev, not the
        // state of each of its representors: on a switchdev PF with 1,024 VFs, reading every
        // representor's attributes cost ~23,000 syscalls (30 ms) per lookup.
        let representors = match (kind == DeviceKind::Pf, filter) {
            (false, _) => Representors::NotAPf,
            (true, ClassFilter::NetworkOrAccelerator) => Representors::Full,
            (true, ClassFilter::Any) => Representors::PortFactsOnly,
        };
        let netdevs = read_netdevs(&dir, "net", representors);
        // The compat file hangs off the PF's own netdev (the uplink in switchdev mode), never off
        // a representor; elsewhere it does not exist and costs one failed open per PF.
        if kind == DeviceKind::Pf
            && let Some((kernel_name, _)) =
                netdevs.iter().find(|(_, n)| !is_function_representor(n))
        {
            let path = Path::new("net")
                .join(kernel_name)
                .join("compat/devlink/mode");
            compat_eswitch_mode = dir.trimmed(path);
        }
        device.netdevs = netdevs.into_iter().map(|(_, netdev)| netdev).collect();
    }
    device.netdev = device.netdevs.first().map(|n| n.name.clone());
    device.link_type = device.netdevs.first().and_then(|n| n.link_type.clone());

    if has("infiniband") {
        read_rdma(&dir, &mut device);
    }

    let mut aux = Vec::new();
    let mut sf_netdevs = Vec::new();
    for entry in entries.iter().filter(|e| may_be_child_device(e)) {
        let name = entry.name.as_str();
        match child_device(&dir, name) {
            Some(ChildDevice::Vdpa) => {
                if let Some(vdpa_dir) = dir.sub(name) {
                    device.vdpa_devices.push(read_vdpa(vdpa_dir, name));
                }
            }
            // Sub-functions are created on PFs only; a VF's auxiliary devices are its own
            // eth/rdma halves, never pool members.
            Some(ChildDevice::Aux(aux_type)) if kind == DeviceKind::Pf => {
                if let Some(aux_dir) = dir.sub(name)
                    && let Some(child) = read_sub_function(aux_dir, name, aux_type, &device)
                {
                    sf_netdevs.extend(child.netdevs.iter().map(|n| n.name.clone()));
                    device.aux_devices.push(child.id.clone());
                    aux.push(child);
                }
            }
            Some(ChildDevice::Aux(_)) | None => {}
        }
    }

    Some(Record {
        device,
        physfn,
        vf_placement,
        sf_netdevs,
        compat_eswitch_mode,
        aux,
        dir: dir.path().to_owned(),
    })
}

/// The index `N` of a `virtfnN` entry, only in the form the kernel writes: decimal without a sign
/// or leading zeros. Any other spelling (`virtfn01`, `virtfn+1`) is not a kernel link, and taking
/// its number would list the VF it names twice.
fn virtfn_index(name: &str) -> Option<u32> {
    let digits = name.strip_prefix("virtfn")?;
    let canonical = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'));
    canonical.then(|| digits.parse().ok()).flatten()
}

/// Where an SR-IOV PF's VFs sit: VF `i` at routing id `PF + sriov_offset + i * sriov_stride`, in
/// the PF's domain, for `i` below `sriov_totalvfs`.
#[derive(Debug, Clone, Copy)]
struct VfPlacement {
    domain: u32,
    /// The routing id of VF 0.
    first: u32,
    stride: u32,
    total: u32,
}

impl VfPlacement {
    /// `None` when the PF's address, `sriov_offset`, `sriov_stride` or its total is unknown, or
    /// the placement is one the kernel refuses (an offset of 0, a stride of 0 for more than one
    /// VF): with no VF enabled, a device may report those, as the PCIe specification leaves them
    /// undefined then, and they would place "VFs" on the PF's siblings.
    fn read(id: &str, dir: &SysDir, total: Option<u32>) -> Option<Self> {
        let pf: PciAddress = id.parse().ok()?;
        let offset = dir.unsigned("sriov_offset")?;
        let stride = dir.unsigned("sriov_stride")?;
        let total = total?;
        if offset == 0 || (stride == 0 && total > 1) {
            return None;
        }
        Some(VfPlacement {
            domain: pf.domain,
            first: u32::from(pf.routing_id()).saturating_add(offset),
            stride,
            total,
        })
    }

    /// The index of the VF that sits at `address`, if a VF of this PF can.
    fn index_of(&self, address: PciAddress) -> Option<u32> {
        if address.domain != self.domain {
            return None;
        }
        let distance = u32::from(address.routing_id()).checked_sub(self.first)?;
        let index = match self.stride {
            // A stride of 0 places a single VF.
            0 => (distance == 0).then_some(0)?,
            stride => (distance % stride == 0).then_some(distance / stride)?,
        };
        (index < self.total).then_some(index)
    }
}

/// The records without the VFs caught between their directory and their links. Enabling VFs
/// creates each VF's directory before the `virtfnN`/`physfn` links, and disabling them removes the
/// links before it unbinds the driver and removes the directory; a scan in between sees a network
/// function, perhaps bound and with a netdev, and no `physfn`. Taken for a standalone PF, it would
/// be pooled as a plain NIC; as a VF it would lack its PF. It is neither yet (or any more), so it
/// is left out, like a VF added a moment later or removed a moment earlier, and the next scan
/// sees it settled. Such a function is one with neither `physfn` nor `sriov_totalvfs` at an address
/// in the VF range of an SR-IOV PF of the scan (see [`VfPlacement`]) and below the same bridge as
/// that PF in `/sys/devices` (`parent_of`: the kernel gives a VF its PF's parent, whatever bus its
/// routing id puts it on). The range spans every VF the PF could have, not only those enabled, so
/// the bridge tells a plain NIC behind another port apart from a VF. Where the PF's placement is
/// unknown (no `sriov_offset`/`sriov_stride`) or either parent cannot be read, nothing can be told
/// and the function stays a PF.
fn without_vfs_in_transition(
    records: Vec<Record>,
    parent_of: &dyn Fn(&str) -> Option<PathBuf>,
) -> Vec<Record> {
    let placements: Vec<(&str, VfPlacement)> = records
        .iter()
        .filter_map(|r| Some((r.device.id.as_str(), r.vf_placement?)))
        .collect();
    if placements.is_empty() {
        return records;
    }
    let keep: Vec<bool> = records
        .iter()
        .map(|record| {
            let device = &record.device;
            if device.kind != DeviceKind::Pf || device.sriov_total_vfs.is_some() {
                return true;
            }
            let Ok(address) = device.id.parse::<PciAddress>() else {
                return true;
            };
            let Some((pf, index)) = placements
                .iter()
                .find_map(|(pf, placement)| Some((*pf, placement.index_of(address)?)))
            else {
                return true;
            };
            let beside_its_pf = parent_of(&device.id).is_some_and(|own| parent_of(pf) == Some(own));
            if !beside_its_pf {
                return true;
            }
            tracing::debug!(device = %device.id, pf = %pf, vf_index = index, "a VF in transition (being added or removed: it has no physfn link) is left out of this scan");
            false
        })
        .collect();
    records
        .into_iter()
        .zip(keep)
        .filter_map(|(record, keep)| keep.then_some(record))
        .collect()
}

/// How much [`read_netdevs`] reads of the netdevs of a function.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Representors {
    /// Not a PF: no representor facts (`phys_port_name`, `phys_switch_id`) at all.
    NotAPf,
    /// A PF: every netdev in full, with its representor facts.
    Full,
    /// A PF in a one-device lookup: every netdev's `phys_port_name`; the rest only of netdevs
    /// that are not representors of VFs or SFs (whose other attributes are left unknown: the
    /// lookup's caller needs the PF's own netdev, which they never are).
    PortFactsOnly,
}

/// The netdevs under `parent/net`, each with the name the kernel gave it (what paths below `net/`
/// must use) and the record (whose name is lossy when the kernel's is not UTF-8).
fn read_netdevs(parent: &SysDir, net: &str, representors: Representors) -> Vec<(OsString, Netdev)> {
    let representor_facts = representors != Representors::NotAPf;
    let Some(net_dir) = parent.sub(net) else {
        return Vec::new();
    };
    // Attributes are read as `<ifname>/<attr>` relative to `net/`: one lookup more per read is
    // cheaper than opening and closing every netdev's directory.
    net_dir
        .os_names()
        .into_iter()
        .map(|kernel_name| {
            // Dropping a netdev whose name is not UTF-8 would make its device look netdev-less,
            // and a PF's default route would go unnoticed. It is kept under a lossy name, which
            // `Netdev::name_is_lossy` tells apart, so that it can never pass for a safe one.
            let name = match kernel_name.to_str() {
                Some(name) => name.to_owned(),
                None => {
                    let lossy = kernel_name.to_string_lossy().into_owned();
                    tracing::debug!(path = %net_dir.path().join(&kernel_name).display(), name = %lossy, "netdev name is not UTF-8; kept under a lossy name");
                    lossy
                }
            };
            let attr = |file: &str| Path::new(&kernel_name).join(file);
            let phys_port_name = representor_facts
                .then(|| net_dir.trimmed(attr("phys_port_name")))
                .flatten();
            let is_function_representor = phys_port_name
                .as_deref()
                .is_some_and(is_function_representor_port);
            let name_only = representors == Representors::PortFactsOnly && is_function_representor;
            if name_only {
                return (
                    kernel_name,
                    Netdev {
                        name,
                        link_type: None,
                        operstate: None,
                        carrier: None,
                        mac: None,
                        mtu: None,
                        phys_port_name,
                        phys_switch_id: None,
                        bond: None,
                    },
                );
            }
            let phys_switch_id = representor_facts
                .then(|| net_dir.trimmed(attr("phys_switch_id")))
                .flatten();
            // A PF's own netdev only: a representor is never a bond's port, and a switchdev PF
            // has one per VF (a lookup each would be a thousand more per scan).
            let bond = (representor_facts && !is_function_representor)
                .then(|| kernel_name.to_str().and_then(|ifname| bond_of(&net_dir, ifname)))
                .flatten();
            let netdev = Netdev {
                link_type: net_dir
                    .trimmed(attr("type"))
                    .and_then(|code| read::link_type_name(&code))
                    .map(str::to_owned),
                operstate: net_dir.trimmed(attr("operstate")),
                carrier: net_dir.flag(attr("carrier")),
                mac: net_dir
                    .trimmed(attr("address"))
                    .map(|m| m.to_ascii_lowercase()),
                mtu: net_dir.unsigned(attr("mtu")),
                phys_port_name,
                phys_switch_id,
                bond,
                name,
            };
            (kernel_name, netdev)
        })
        .collect()
}

/// The bond netdev `ifname` (under `net_dir`) is a port of, with the bond's link state: its
/// `master` link leads to a bonding device (one with a `bonding/` directory; a bridge or an OVS
/// datapath is a master too, and no bond).
fn bond_of(net_dir: &SysDir, ifname: &str) -> Option<BondLink> {
    let master_link = format!("{ifname}/master");
    let master = net_dir.sub(&master_link)?;
    master.sub("bonding")?;
    Some(BondLink {
        name: net_dir.link_name(&master_link)?,
        operstate: master.trimmed("operstate"),
        carrier: master.flag("carrier"),
        ports: master
            .trimmed("bonding/slaves")
            .map(|ports| ports.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default(),
    })
}

/// The RDMA devices of a function: the directories under its `infiniband/` (each RDMA device is a
/// kernel object there). A file or a symlink in their place is not one, however it is named.
fn rdma_device_names(dir: &SysDir) -> Vec<String> {
    dir.sub("infiniband")
        .map(|d| d.entries())
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e.maybe_dir)
        .map(|e| e.name)
        .collect()
}

fn read_rdma(dir: &SysDir, device: &mut Device) {
    device.rdma_devices = rdma_device_names(dir);
    // Upstream reads the pkey when the device's effective link type is InfiniBand. Without a link
    // type of its own (a VF whose netdev is in a pod) the device takes its PF's, known only in
    // `link`: read the pkey now, while the directory is open, and let `link` drop it if the
    // effective link type turns out not to be InfiniBand.
    let maybe_infiniband = matches!(device.link_type.as_deref(), None | Some("infiniband"));
    if maybe_infiniband && let Some(first) = device.rdma_devices.first() {
        device.pkey = dir.trimmed(format!("infiniband/{first}/ports/1/pkeys/0"));
    }
}

/// Directories the kernel puts in every PCI function's directory that are never devices: skipping
/// them by name saves a `subsystem` lookup each.
const FIXED_SUBDIRS: &[&str] = &[
    "hwmon",
    "infiniband",
    "infiniband_cm",
    "infiniband_mad",
    "infiniband_verbs",
    "link",
    "msi_irqs",
    "net",
    "power",
    "ptp",
    "uio",
    "vfio-dev",
];

/// Whether a function's directory entry may be a child device (a vDPA or auxiliary device): a
/// directory (symlinks such as `virtfnN`, `physfn` or `driver` never are) that is not one of the
/// kernel's fixed ones.
fn may_be_child_device(entry: &Entry) -> bool {
    entry.maybe_dir && !FIXED_SUBDIRS.contains(&entry.name.as_str())
}

/// What a child directory of a PCI function is.
enum ChildDevice<'a> {
    /// A vDPA device, whatever its name.
    Vdpa,
    /// An auxiliary device (`mlx5_core.sf.4`) with its type (`sf`).
    Aux(&'a str),
}

/// Classifies a child directory by its `subsystem` link, as the kernel's buses define it: vDPA
/// devices carry the name their creator gave them (`vdpa dev add name vdpa:0000:03:00.2 ...`), so
/// the name alone cannot tell. A tree without `subsystem` links (built by hand) falls back to the
/// kernel's default names: `vdpaN` and `<module>.<type>.<id>`.
fn child_device<'a>(dir: &SysDir, name: &'a str) -> Option<ChildDevice<'a>> {
    let aux = || parse_aux_name(name).map(|(aux_type, _)| ChildDevice::Aux(aux_type));
    match dir.link_name(&format!("{name}/subsystem")).as_deref() {
        Some("vdpa") => Some(ChildDevice::Vdpa),
        Some("auxiliary") => aux(),
        Some(_) => None,
        None if is_default_vdpa_name(name) => Some(ChildDevice::Vdpa),
        None => aux(),
    }
}

/// `vdpa0`: the name the kernel's vDPA tools suggest when the user gives none.
fn is_default_vdpa_name(name: &str) -> bool {
    name.strip_prefix("vdpa")
        .is_some_and(|index| !index.is_empty() && index.bytes().all(|b| b.is_ascii_digit()))
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

/// An auxiliary device that is a sub-function, or `None` for the other auxiliary devices a function
/// carries (`mlx5_core.eth.0`, `mlx5_core.rdma.0`, `ice.roce.0`): only sub-functions have an
/// `sfnum`, and upstream drops an auxiliary device without one.
fn read_sub_function(dir: SysDir, name: &str, aux_type: &str, parent: &Device) -> Option<Device> {
    let entries = dir.names();
    if !entries.iter().any(|e| e == "sfnum") {
        return None;
    }
    let mut aux = Device::unknown(name, DeviceKind::Aux);
    aux.aux_type = Some(aux_type.to_owned());
    aux.sf_num = dir.unsigned("sfnum");
    aux.vendor = parent.vendor.clone();
    aux.device = parent.device.clone();
    aux.subsystem_vendor = parent.subsystem_vendor.clone();
    aux.subsystem_device = parent.subsystem_device.clone();
    aux.class = parent.class.clone();
    aux.driver = parent.driver.clone();
    aux.aux_driver = entries
        .iter()
        .any(|e| e == "driver")
        .then(|| dir.link_name("driver"))
        .flatten();
    aux.numa_node = parent.numa_node;
    aux.pf_id = Some(parent.id.clone());
    if entries.iter().any(|e| e == "net") {
        aux.netdevs = read_netdevs(&dir, "net", Representors::NotAPf)
            .into_iter()
            .map(|(_, netdev)| netdev)
            .collect();
    }
    aux.netdev = aux.netdevs.first().map(|n| n.name.clone());
    aux.link_type = aux.netdevs.first().and_then(|n| n.link_type.clone());
    if entries.iter().any(|e| e == "infiniband") {
        aux.rdma_devices = rdma_device_names(&dir);
    }
    Some(aux)
}

/// An uplink-shaped netdev, as sriovnet's `GetUplinkRepresentor` recognises one: on an eswitch
/// (`phys_switch_id` non-empty) with a port name `p<N>`. Not proof of switchdev mode: ice (and
/// recent mlx5) register the PF's netdev as a devlink physical port in legacy mode too, so it has
/// both attributes there as well.
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
        .is_some_and(is_function_representor_port)
}

/// Whether a `phys_port_name` is a VF's or SF's representor's (see [`is_function_representor`]).
fn is_function_representor_port(port: &str) -> bool {
    port.contains("vf") || port.contains("sf")
}

/// `s` without its leading decimal digits, or `None` when it does not start with one.
fn after_number(s: &str) -> Option<&str> {
    let rest = s.trim_start_matches(|c: char| c.is_ascii_digit());
    (rest.len() < s.len()).then_some(rest)
}

/// The port names the kernel gives representors of functions behind an eswitch, which exist only
/// in switchdev mode: `pf0vf3` and `pf0sf88` (with a controller, `c1pf0vf3`, on a SmartNIC), ice's
/// pre-devlink `pf0vfr3`, and a host PF's representor `pf0`/`c1pf0`. These are sriovnet's VF, SF
/// and PF representor shapes plus ice's.
fn is_eswitch_function_port(port: &str) -> bool {
    let port = port
        .strip_prefix('c')
        .and_then(after_number)
        .unwrap_or(port);
    let Some(rest) = port.strip_prefix("pf").and_then(after_number) else {
        return false;
    };
    if rest.is_empty() {
        return true;
    }
    let Some(rest) = rest.strip_prefix("vf").or_else(|| rest.strip_prefix("sf")) else {
        return false;
    };
    after_number(rest.strip_prefix('r').unwrap_or(rest)) == Some("")
}

/// Whether a PF's eswitch is in switchdev mode, from what sysfs shows (the mode itself is a
/// devlink attribute, which sysfs does not carry):
/// - `compat/devlink/mode` of the PF's netdev, where the driver provides it (MLNX_OFED), decides;
/// - otherwise switchdev means an uplink-shaped netdev plus at least one representor of a VF, SF
///   or host PF on the same switch (`phys_switch_id`). An uplink shape alone is not enough: legacy
///   ice and mlx5 PFs have one too, but legacy mode never creates representors. A switchdev PF
///   with no VF or SF yet therefore reads as legacy; it has no VF or SF to name it either.
fn eswitch_is_switchdev(netdevs: &[Netdev], compat_mode: Option<&str>) -> bool {
    match compat_mode {
        Some("switchdev") => return true,
        Some("legacy") => return false,
        _ => {}
    }
    let Some(switch) = netdevs
        .iter()
        .find(|n| is_uplink_representor(n))
        .and_then(|n| n.phys_switch_id.as_deref())
    else {
        return false;
    };
    netdevs.iter().any(|n| {
        n.phys_switch_id.as_deref() == Some(switch)
            && n.phys_port_name
                .as_deref()
                .is_some_and(is_eswitch_function_port)
    })
}

/// The PF's name as its VFs see it, as upstream's `GetPfName` computes it: in switchdev mode the
/// uplink representor; otherwise the first netdev, skipping sub-functions' netdevs (upstream #645)
/// and representors.
fn pf_netdev(
    netdevs: &[Netdev],
    switchdev: bool,
    is_sf_netdev: impl Fn(&str) -> bool,
) -> Option<&Netdev> {
    if switchdev && let Some(uplink) = netdevs.iter().find(|n| is_uplink_representor(n)) {
        return Some(uplink);
    }
    netdevs
        .iter()
        .find(|n| !is_function_representor(n) && !is_sf_netdev(&n.name))
}

/// The name a PF's VFs carry as `pf_name` (see [`Device::pf_name`]), from the PF's record and the
/// netdevs of its sub-functions. For a PF outside discovery's own output, this is how callers
/// derive the same name.
pub fn pf_netdev_name<'a>(pf: &'a Device, sf_netdevs: &[&str]) -> Option<&'a str> {
    pf_netdev(&pf.netdevs, pf.switchdev, |name| sf_netdevs.contains(&name)).map(|n| n.name.as_str())
}

/// What VFs and sub-functions take from their PF.
struct PfFacts {
    /// The PF's name as its VFs see it ([`pf_netdev`]).
    netdev: Option<Netdev>,
    /// The uplink representor (sriovnet's `GetUplinkRepresentor`): a sub-function's PF name.
    uplink: Option<String>,
    switchdev: bool,
}

impl PfFacts {
    fn of(record: &Record) -> Self {
        let netdevs = &record.device.netdevs;
        let switchdev = eswitch_is_switchdev(netdevs, record.compat_eswitch_mode.as_deref());
        PfFacts {
            netdev: pf_netdev(netdevs, switchdev, |name| {
                record.sf_netdevs.iter().any(|sf| sf == name)
            })
            .cloned(),
            uplink: netdevs
                .iter()
                .find(|n| is_uplink_representor(n))
                .map(|n| n.name.clone()),
            switchdev,
        }
    }
}

/// Ties VFs and aux devices to their PFs, in memory, and flattens the records into devices. VFs
/// caught between their directory and their links are left out ([`without_vfs_in_transition`],
/// which asks `parent_of` where a function sits in `/sys/devices`).
fn link(records: Vec<Record>, parent_of: &dyn Fn(&str) -> Option<PathBuf>) -> Vec<Device> {
    let records = without_vfs_in_transition(records, parent_of);
    let by_id: HashMap<&str, usize> = records
        .iter()
        .enumerate()
        .map(|(i, r)| (r.device.id.as_str(), i))
        .collect();
    let pf_facts: Vec<PfFacts> = records.iter().map(PfFacts::of).collect();

    // PFs that were not part of this pass (not on the bus, filtered, or a one-device lookup whose PF
    // could not be read by address), read once each through a VF's `physfn` link.
    let mut unlisted_pfs: HashMap<&str, Option<UnlistedPf>> = HashMap::new();
    // Each PF's VF indexes by VF id, built when its first VF asks: a search of the PF's list per
    // VF would cost a million comparisons for a PF with 1,024 VFs.
    let mut listed_indexes: HashMap<usize, VfIndexes> = HashMap::new();
    let mut vf_links: Vec<(Option<String>, Option<u32>, Option<String>)> = Vec::new();
    for record in &records {
        let Some(pf_id) = record.physfn.as_deref() else {
            vf_links.push((None, None, None));
            continue;
        };
        let id = record.device.id.as_str();
        let (vf_index, pf_netdev) = match by_id.get(pf_id).copied() {
            Some(i) => (
                listed_indexes
                    .entry(i)
                    .or_insert_with(|| VfIndexes::of(&records[i].device.vfs))
                    .get(id),
                pf_facts[i].netdev.clone(),
            ),
            None => match unlisted_pfs
                .entry(pf_id)
                .or_insert_with(|| read_unlisted_pf(&record.dir, pf_id))
            {
                Some(pf) => (pf.vf_indexes.get(id), pf.netdev.clone()),
                None => (None, None),
            },
        };
        let pf_name = pf_netdev.as_ref().map(|n| n.name.clone());
        let pf_link_type = pf_netdev.and_then(|n| n.link_type);
        vf_links.push((pf_name, vf_index, pf_link_type));
    }

    let mut devices = Vec::with_capacity(records.len());
    for ((record, (pf_name, vf_index, pf_link_type)), own) in
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
            device.switchdev = own.switchdev;
        }
        // `read_rdma` read the pkey while the effective link type was still open; now it is known.
        if device.link_type.as_deref() != Some("infiniband") {
            device.pkey = None;
        }
        for mut aux in record.aux {
            // Upstream names a sub-function's PF by its uplink representor only
            // (`GetUplinkRepresentorFromAux`) and drops the sub-function when there is none; here
            // it stays in the inventory without a PF name, and the default selector skips it.
            aux.pf_name = own.uplink.clone();
            if aux.link_type.is_none() {
                aux.link_type = own.netdev.as_ref().and_then(|n| n.link_type.clone());
            }
            devices.push(aux);
        }
        devices.push(device);
    }
    devices
}

/// A PF's VF indexes by VF id.
struct VfIndexes(HashMap<String, u32>);

impl VfIndexes {
    fn of(vfs: &[VfRef]) -> Self {
        VfIndexes(vfs.iter().map(|vf| (vf.id.clone(), vf.index)).collect())
    }

    fn get(&self, id: &str) -> Option<u32> {
        self.0.get(id).copied()
    }
}

/// What a VF needs from a PF that is not among the records.
struct UnlistedPf {
    /// The PF's name as VFs see it ([`pf_netdev`]).
    netdev: Option<Netdev>,
    vf_indexes: VfIndexes,
}

/// Reads the PF of the VF at `vf_dir` through the VF's `physfn` link, as upstream reads
/// `<vf>/physfn/net`, with the same rules as for a listed PF.
fn read_unlisted_pf(vf_dir: &Path, pf_id: &str) -> Option<UnlistedPf> {
    let dir = SysDir::open(&vf_dir.join("physfn"))?;
    let pf = read_function(pf_id, dir, ClassFilter::Any)?;
    Some(UnlistedPf {
        netdev: PfFacts::of(&pf).netdev,
        vf_indexes: VfIndexes::of(&pf.device.vfs),
    })
}

fn read_node_facts(root: &SysfsRoot) -> NodeFacts {
    let misc = root.path().join("class/misc");
    let present = |misc_name: &str, node: &str| {
        misc.join(misc_name).exists()
            || root.dev.as_ref().is_some_and(|dev| dev.join(node).exists())
    };
    NodeFacts {
        vhost_net: present("vhost-net", "vhost-net"),
        tun: present("tun", "net/tun"),
        rdma_cm: present("rdma_cm", "infiniband/rdma_cm"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The decision is the filesystem type: `/sys` (and anything that resolves to a sysfs mount)
    /// is the host's; a tree written into a directory or a tmpfs is simulated, whatever its name.
    /// (The host's sysfs bind-mounted elsewhere is checked end to end in the agent's
    /// `tests/run.rs`.)
    #[test]
    fn only_a_sysfs_mount_is_the_host_sysfs() {
        assert!(is_sysfs_mount(Path::new("/sys")));
        assert!(is_sysfs_mount(Path::new("/sys/bus/pci/..")));
        let dir = tempfile::tempdir().unwrap();
        assert!(!is_sysfs_mount(dir.path()));
        let named_sys = dir.path().join("sys");
        std::fs::create_dir(&named_sys).unwrap();
        assert!(!is_sysfs_mount(&named_sys));
        assert!(!is_sysfs_mount(Path::new("/dev/shm")));
        assert!(!is_sysfs_mount(&dir.path().join("missing")));
    }

    /// The host's sysfs looks at `/dev` for device nodes wherever it is mounted (a DaemonSet's
    /// `--sysfs-root /host/sys`; here a path into it that is not `/sys` itself): only the path
    /// `/sys` did, and `/dev/vhost-net` (there from boot) went unseen until its module was
    /// loaded. A simulated tree never does.
    #[test]
    fn the_host_sysfs_looks_at_dev_wherever_it_is_mounted() {
        assert_eq!(
            SysfsRoot::new("/sys/bus").dev_root(),
            Some(Path::new("/dev"))
        );
        let tree = tempfile::tempdir().unwrap();
        assert_eq!(SysfsRoot::new(tree.path()).dev_root(), None);
    }

    /// Running out of descriptors (a leak elsewhere, a low `ulimit -n`) used to be reported as
    /// "not a sysfs root", sending the operator to check a flag that was right.
    #[test]
    fn exhaustion_is_not_blamed_on_the_root() {
        use rustix::io::Errno;
        let dir = std::env::temp_dir();
        let root = SysfsRoot::new(&dir);
        let bus = root.pci_devices();
        for errno in [Errno::MFILE, Errno::NFILE, Errno::NOMEM] {
            let err = bus_error(&root, &bus, errno);
            assert!(
                matches!(err, DiscoveryError::OutOfResources { .. }),
                "{errno:?}: {err}"
            );
            let text = err.to_string();
            assert!(
                text.contains("out of file descriptors") && !text.contains("not a sysfs root"),
                "{text}"
            );
        }
        assert!(matches!(
            bus_error(&root, &bus, Errno::NOENT),
            DiscoveryError::NoPciBus { .. }
        ));
    }

    #[test]
    fn virtfn_indexes_are_plain_decimal_only() {
        assert_eq!(virtfn_index("virtfn0"), Some(0));
        assert_eq!(virtfn_index("virtfn1023"), Some(1023));
        for name in [
            "virtfn", "virtfn01", "virtfn00", "virtfn+1", "virtfn-1", "virtfn1a", "virtfn 1",
            "physfn", "virtfn٣",
        ] {
            assert_eq!(virtfn_index(name), None, "{name}");
        }
    }

    #[test]
    fn aux_names_need_three_tokens_and_a_number() {
        assert_eq!(parse_aux_name("mlx5_core.sf.4"), Some(("sf", 4)));
        assert_eq!(parse_aux_name("mlx5_core.eth-rep.0"), Some(("eth-rep", 0)));
        assert_eq!(parse_aux_name("0000:3b:00.2"), None);
        assert_eq!(parse_aux_name("sf.4"), None);
        assert_eq!(parse_aux_name("mlx5_core.sf.x"), None);
        assert_eq!(parse_aux_name("mlx5_core.sf.-1"), None);
    }

    #[test]
    fn eswitch_function_ports_are_representor_shapes_only() {
        for port in [
            "pf0vf3", "pf1sf88", "c1pf0vf3", "c1pf0sf2", "pf0vfr3", "pf0", "c1pf1",
        ] {
            assert!(is_eswitch_function_port(port), "{port}");
        }
        for port in [
            "p0", "p1", "", "pf", "pfvf1", "pf0vf", "pf0vf3x", "c1", "cpf0vf1", "vf0",
        ] {
            assert!(!is_eswitch_function_port(port), "{port}");
        }
    }
}
