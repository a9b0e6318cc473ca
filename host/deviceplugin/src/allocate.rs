//! Allocate, as the upstream SR-IOV device plugin answers it (`pkg/resources/pool_stub.go`,
//! `pkg/infoprovider/*`, `pkg/netdevice/netResourcePool.go`): the `PCIDEVICE_<PREFIX>_<NAME>`
//! environment variable and its `_INFO` twin, the device nodes a pod needs, and the device-info
//! file Multus and the CNI plugin read.
//!
//! Everything here is plain data in, plain data out (plus reading a few sysfs entries and writing
//! the device-info files), so it is unit-tested without gRPC. The JSON (`_INFO`, device-info
//! files) is byte for byte what Go's `encoding/json` writes, `<`, `>`, `&`, U+2028 and U+2029
//! escaped included ([`go_json`]).
//!
//! Deliberate differences from upstream:
//! - an id that is not in the pool is an error naming it, for every pool type. Upstream fails
//!   Allocate only for a netDevice pool (its `StoreDeviceInfoFile` refuses the id: "Only
//!   pciNetDevices are supported"); an accelerator or auxNetDevice pool skips the id silently and
//!   starts the pod without it;
//! - the `uio`/`vdpa` info is present on the first allocation too (upstream adds it only after the
//!   device specs were computed once);
//! - a device bound to `uio_pci_generic` gets its `/dev/uioN` and a `"uio"` `_INFO` entry, like one
//!   bound to `uio` or `igb_uio`. Upstream adds its uio provider only for the drivers `uio` and
//!   `igb_uio` (`factory.go` `GetDefaultInfoProvider`), so a `uio_pci_generic` device gets neither
//!   and DPDK in an unprivileged pod cannot open it;
//! - a vfio-pci device without an IOMMU group fails the allocation (upstream logs and starts the
//!   pod with `/dev/vfio/vfio` alone, where DPDK cannot open the device).
//!
//! Upstream reads a device's RDMA devices and character devices at every Allocate; vfpool reads
//! them when a snapshot is published ([`prepare`]) and again at Allocate only for a member whose
//! prepared answer may lack them ([`Prepared::recheck_rdma`]).

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read as _, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use serde::Serialize;
use vfpool_policy::{DeviceType, VdpaType};
use vfpool_proto::deviceplugin::v1beta1::{ContainerAllocateResponse, DeviceSpec};
use vfpool_sysfs::{NodeFacts, SysfsRoot};

use crate::model::Member;

/// The device-info specification version the files follow.
pub const DEVICE_INFO_VERSION: &str = "1.1.0";
/// The vfio container device every vfio user needs.
pub const VFIO_CONTAINER: &str = "/dev/vfio/vfio";
/// `/dev/vhost-net`.
pub const VHOST_NET: &str = "/dev/vhost-net";
/// `/dev/net/tun`.
pub const TUN: &str = "/dev/net/tun";
/// The RDMA connection-manager device, added for every RDMA device when the node has it.
pub const RDMA_CM: &str = "/dev/infiniband/rdma_cm";

/// The longest id an error message quotes in full. Device ids are PCI addresses (12 characters)
/// or auxiliary device names (a few dozen); a longer one is hostile or garbage, and quoting a
/// megabyte of it would flood the log and kubelet's event for the pod.
const SHOWN_ID_MAX: usize = 128;

/// A requested device id as an error message quotes it: escaped (`{:?}`: control characters and
/// quotes cannot forge log lines), and cut at [`SHOWN_ID_MAX`] bytes with its full length given.
struct ShownId<'a>(&'a str);

impl std::fmt::Display for ShownId<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let id = self.0;
        if id.len() <= SHOWN_ID_MAX {
            return write!(f, "{id:?}");
        }
        let mut end = SHOWN_ID_MAX;
        while !id.is_char_boundary(end) {
            end -= 1;
        }
        write!(f, "{:?}… ({} bytes)", &id[..end], id.len())
    }
}

/// Why a container's allocation cannot be answered.
#[derive(Debug, thiserror::Error)]
pub enum AllocateError {
    /// The request names a device the pool does not advertise.
    #[error(
        "device {} is not in pool {resource} (it advertises {count} devices): it left the pool (a config or policy change, or it is gone from the node) before kubelet asked for it, or kubelet's checkpoint is stale; restart the pod",
        ShownId(.id)
    )]
    UnknownDevice {
        /// The requested id.
        id: String,
        /// The pool's resource name.
        resource: String,
        /// How many devices the pool advertises.
        count: usize,
    },
    /// The same device appears twice in one container request.
    #[error("device {} is requested twice in one container request", ShownId(.id))]
    Duplicate {
        /// The repeated id.
        id: String,
    },
    /// The same device is requested for two containers of one pod: kubelet gives a device to
    /// one container only.
    #[error(
        "device {} is requested for two containers of one Allocate request; a device goes to one container",
        ShownId(.id)
    )]
    InTwoContainers {
        /// The repeated id.
        id: String,
    },
    /// A container request lists no device.
    #[error("a container request for {resource} lists no devices")]
    Empty {
        /// The pool's resource name.
        resource: String,
    },
    /// A vfio-bound device has no IOMMU group, so there is no `/dev/vfio/<group>` to hand out.
    #[error(
        "device {id} is bound to vfio-pci but has no IOMMU group (iommu_group link missing); enable the IOMMU or vfio no-IOMMU mode"
    )]
    NoIommuGroup {
        /// The device.
        id: String,
    },
    /// The device-info file could not be written.
    #[error("cannot write the device-info file {path}")]
    DeviceInfo {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// `PCIDEVICE_<PREFIX>_<NAME>` for `prefix/name`: only `.` becomes `_` (a `-` stays), upper case.
pub fn env_key(resource_name: &str) -> String {
    let (prefix, name) = resource_name.split_once('/').unwrap_or(("", resource_name));
    format!("PCIDEVICE_{prefix}_{name}")
        .replace('.', "_")
        .to_uppercase()
}

/// One device's `_INFO` entry: provider name → key → value, all sorted (Go marshals maps sorted).
pub type DeviceInfoMap = BTreeMap<&'static str, BTreeMap<String, String>>;

/// What Allocate hands out for one device: its `_INFO` providers and device nodes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeviceGrant {
    /// The `_INFO` providers.
    pub info: DeviceInfoMap,
    /// Device nodes (host path, container path), in provider order.
    pub specs: Vec<(String, String)>,
}

fn entry(pairs: &[(&str, String)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), v.clone()))
        .collect()
}

/// Computes what one device gets. `rdma_chars` is the device's RDMA character devices
/// ([`rdma_char_devices`]); only read when the pool asked for RDMA.
pub fn grant(
    member: &Member,
    node: &NodeFacts,
    rdma_chars: &[String],
) -> Result<DeviceGrant, AllocateError> {
    let device = &member.device;
    let mut grant = DeviceGrant::default();
    grant
        .info
        .insert("generic", entry(&[("deviceID", device.id.clone())]));

    match device.driver.as_deref() {
        Some("vfio-pci") => {
            let group = device
                .iommu_group
                .ok_or_else(|| AllocateError::NoIommuGroup {
                    id: device.id.clone(),
                })?;
            let container = format!("/dev/vfio/{group}");
            let host = if device.no_iommu {
                format!("/dev/vfio/noiommu-{group}")
            } else {
                container.clone()
            };
            grant.info.insert(
                "vfio",
                entry(&[
                    ("mount", VFIO_CONTAINER.to_string()),
                    ("dev-mount", container.clone()),
                ]),
            );
            grant
                .specs
                .push((VFIO_CONTAINER.to_string(), VFIO_CONTAINER.to_string()));
            grant.specs.push((host, container));
        }
        _ => {
            if let Some(uio) = &device.uio_device {
                let path = format!("/dev/{uio}");
                grant.info.insert("uio", entry(&[("mount", path.clone())]));
                grant.specs.push((path.clone(), path));
            }
        }
    }

    if member.hints.rdma && device.rdma_devices.is_empty() {
        // Taken for `isRdma` by its devlink `enable_rdma` while its RDMA device is elsewhere (in
        // a pod's namespace, exclusive mode): upstream's provider is attached all the same and
        // names nothing, `"rdma":{}`; there is nothing to mount.
        grant.info.insert("rdma", BTreeMap::new());
    } else if member.hints.rdma {
        let mut rdma = BTreeMap::new();
        for char_dev in rdma_chars {
            let path = format!("/dev/infiniband/{char_dev}");
            // Upstream's `_INFO` names these three (plus rdma_cm and rdma_dev below); the ucm
            // device is mounted but has no key there.
            for key in ["uverbs", "umad", "issm"] {
                if char_dev.starts_with(key) {
                    rdma.entry(key.to_string()).or_insert_with(|| path.clone());
                }
            }
            grant.specs.push((path.clone(), path));
        }
        if let Some(first) = device.rdma_devices.first() {
            rdma.insert("rdma_dev".to_string(), first.clone());
        }
        // Upstream hands out the connection manager only when the node has it (`rdma_ucm`
        // loaded): a device spec whose host path is missing fails the container's creation.
        if node.rdma_cm {
            rdma.insert("rdma_cm".to_string(), RDMA_CM.to_string());
            grant.specs.push((RDMA_CM.to_string(), RDMA_CM.to_string()));
        }
        grant.info.insert("rdma", rdma);
    }

    // Upstream adds the vhost provider only when `/dev/vhost-net` exists, so without it the
    // `_INFO` names no device the container does not get.
    if member.hints.vhost_net && node.vhost_net {
        grant.info.insert(
            "vhost",
            entry(&[
                ("net-mount", VHOST_NET.to_string()),
                ("tun-mount", TUN.to_string()),
            ]),
        );
        // Upstream mounts them only when both exist at that moment.
        if node.tun {
            grant
                .specs
                .push((VHOST_NET.to_string(), VHOST_NET.to_string()));
            grant.specs.push((TUN.to_string(), TUN.to_string()));
        }
    }

    // Upstream's vdpa provider exists for both types whenever the device has a vDPA device; only
    // a vhost one names (and mounts) a character device, a virtio one is `"vdpa":{}`.
    if let Some(vdpa_type) = member.hints.vdpa_type
        && !device.vdpa_devices.is_empty()
    {
        let mut vdpa = BTreeMap::new();
        if vdpa_type == VdpaType::Vhost
            && let Some(path) = vhost_vdpa_path(member)
        {
            vdpa.insert("mount".to_string(), path.clone());
            grant.specs.push((path.clone(), path));
        }
        grant.info.insert("vdpa", vdpa);
    }

    if let Some(extra) = &member.hints.additional_info {
        let extra: BTreeMap<String, String> = extra.iter().cloned().collect();
        grant.info.insert("extra", extra);
    }
    Ok(grant)
}

/// A member's Allocate answer computed when its snapshot is published rather than per call: the
/// grant, with the RDMA character devices read from sysfs (the largest per-call cost before:
/// three directory reads per RDMA device), and the device-info document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    /// What the device gets.
    pub grant: DeviceGrant,
    /// Its device-info document, when the pool type has one ([`device_info_json`]).
    pub device_info: Option<String>,
    /// Its `_INFO` entry, serialised: `"<id>":{...}` ([`prepared_response`] joins them).
    pub info_entry: String,
    /// Its device nodes as the response carries them.
    pub specs: Vec<DeviceSpec>,
    /// The pool asked for RDMA but no RDMA device (or none of its character devices) was visible
    /// when this was prepared: in exclusive RDMA mode a VF's RDMA device is in the netns of the pod
    /// that had the VF, and comes back only when that pod ends, which can be after the last rescan
    /// and before the next pod's Allocate. Allocate then answers from sysfs ([`prepare_live`]),
    /// as upstream does on every call; every other member is answered from this.
    pub recheck_rdma: bool,
}

/// Prepares `member` of a pool of `device_type`; `None` when its grant is an error, which Allocate
/// then computes and reports itself.
pub fn prepare(
    member: &Member,
    device_type: DeviceType,
    node: &NodeFacts,
    sysfs: &SysfsRoot,
) -> Option<Prepared> {
    let rdma_chars = if member.hints.rdma {
        rdma_char_devices(sysfs, member.id())
    } else {
        Vec::new()
    };
    // Only an RDMA-capable device is in an RDMA pool (the selector's `isRdma` takes a device with
    // RDMA devices, or with devlink `enable_rdma` set: one whose RDMA device is in a pod), so an
    // RDMA member without them is one whose answer the next Allocate must check.
    let recheck_rdma =
        member.hints.rdma && (member.device.rdma_devices.is_empty() || rdma_chars.is_empty());
    answer(member, device_type, node, &rdma_chars, recheck_rdma).ok()
}

/// `member`'s answer from sysfs now: its RDMA devices and their character devices are read again
/// (four directories of the device under `sysfs`, a bounded number of entries each) when the pool
/// asked for RDMA; nothing is read otherwise. For Allocate, when the prepared answer may be stale
/// ([`Prepared::recheck_rdma`]) or there is none.
pub fn prepare_live(
    member: &Member,
    device_type: DeviceType,
    node: &NodeFacts,
    sysfs: &SysfsRoot,
) -> Result<Prepared, AllocateError> {
    if !member.hints.rdma {
        return answer(member, device_type, node, &[], false);
    }
    let mut live = member.clone();
    live.device.rdma_devices = rdma_devices(sysfs, member.id());
    let rdma_chars = rdma_char_devices(sysfs, member.id());
    answer(&live, device_type, node, &rdma_chars, false)
}

fn answer(
    member: &Member,
    device_type: DeviceType,
    node: &NodeFacts,
    rdma_chars: &[String],
    recheck_rdma: bool,
) -> Result<Prepared, AllocateError> {
    let grant = grant(member, node, rdma_chars)?;
    let info_entry = format!("{}:{}", to_go_json(member.id()), to_go_json(&grant.info));
    let specs = grant
        .specs
        .iter()
        .map(|(host, container)| DeviceSpec {
            container_path: container.clone(),
            host_path: host.clone(),
            permissions: "rw".to_string(),
        })
        .collect();
    Ok(Prepared {
        grant,
        device_info: device_info_json(device_type, member),
        info_entry,
        specs,
        recheck_rdma,
    })
}

/// `value` as Go's `json.Marshal` writes it ([`go_json`]). Only strings and maps of strings are
/// serialised here, which cannot fail; an empty object stands in rather than a panic.
fn to_go_json<T: Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).map_or_else(|_| "{}".to_string(), go_json)
}

/// Compact JSON from serde_json made byte-identical to Go's `json.Marshal`, which escapes `<`, `>`
/// and `&` (HTML safety) and U+2028/U+2029 (JavaScript line terminators) as `\u003c`, `\u003e`,
/// `\u0026`, `\u2028`, `\u2029`; serde_json writes them as they are. Every other escape already
/// agrees (Go 1.22+: `\"`, `\\`, `\b`, `\f`, `\n`, `\r`, `\t`, `\u00XX` in lower case, DEL as is).
/// In compact JSON these characters can only stand inside a string (no structural character or
/// literal contains them), so replacing them everywhere is replacing them in strings.
pub fn go_json(json: String) -> String {
    const LS: char = '\u{2028}';
    const PS: char = '\u{2029}';
    // The usual document has none of them: returned without copying.
    if !json.contains(['<', '>', '&', LS, PS]) {
        return json;
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            LS => out.push_str("\\u2028"),
            PS => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

/// The `/dev/vhost-vdpa-N` node of the device's first vDPA device bound to `vhost_vdpa`.
fn vhost_vdpa_path(member: &Member) -> Option<String> {
    member
        .device
        .vdpa_devices
        .iter()
        .filter(|v| v.driver.as_deref() == Some("vhost_vdpa"))
        .find_map(|v| v.vhost_device.as_ref())
        .map(|dev| format!("/dev/{dev}"))
}

/// At most this many entries are taken from one sysfs directory Allocate reads (a function has one
/// RDMA device and four character devices at most): a call on the pod-start path stays bounded.
const MAX_ENTRIES: usize = 64;

#[cfg(test)]
thread_local! {
    /// How many sysfs directories this thread asked for RDMA devices; tests check that an
    /// ordinary Allocate reads none.
    pub(crate) static RDMA_DIR_READS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// The directory of device `id` under `root`, or `None` for an id that could walk out of the
/// device directories. A PCI address (`0000:3b:00.2`) lives on the PCI bus, anything else
/// (`mlx5_core.sf.4`) on the auxiliary bus.
fn device_dir(root: &SysfsRoot, id: &str) -> Option<PathBuf> {
    // Ids come from the pool, but never let one walk out of the device directories.
    if id.is_empty() || id.contains('/') || id.starts_with('.') {
        return None;
    }
    let bus = if id.contains(':') {
        "bus/pci/devices"
    } else {
        "bus/auxiliary/devices"
    };
    Some(root.path().join(bus).join(id))
}

/// The names in `dir` that are plain device names (`mlx5_2`, `uverbs3`), at most [`MAX_ENTRIES`],
/// appended to `found`. A missing directory adds nothing.
fn device_names(dir: &Path, found: &mut Vec<String>) {
    #[cfg(test)]
    RDMA_DIR_READS.with(|n| n.set(n.get() + 1));
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten().take(MAX_ENTRIES) {
        if let Some(name) = entry.file_name().to_str()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            found.push(name.to_string());
        }
    }
}

/// The RDMA devices of device `id` (`mlx5_2`), read from
/// `<sysfs>/bus/{pci,auxiliary}/devices/<id>/infiniband/*`, sorted: what discovery reads, and what
/// upstream's rdmamap reads at Allocate (`GetRdmaDevicesForPcidev`/`GetRdmaDevicesForAuxdev`).
pub fn rdma_devices(root: &SysfsRoot, id: &str) -> Vec<String> {
    let mut found = Vec::new();
    if let Some(dir) = device_dir(root, id) {
        device_names(&dir.join("infiniband"), &mut found);
    }
    found.sort();
    found
}

/// The RDMA character devices (`uverbsN`, `umadN`, `issmN`, `ucmN`) of device `id`, read from
/// `<sysfs>/bus/{pci,auxiliary}/devices/<id>/infiniband_{verbs,mad,cm}/*`, sorted. Read when
/// answers are prepared, for the RDMA pools' members only (discovery leaves them out to stay fast).
pub fn rdma_char_devices(root: &SysfsRoot, id: &str) -> Vec<String> {
    let mut found = Vec::new();
    let Some(dir) = device_dir(root, id) else {
        return found;
    };
    for class in ["infiniband_verbs", "infiniband_mad", "infiniband_cm"] {
        device_names(&dir.join(class), &mut found);
    }
    found.sort();
    found.dedup();
    found
}

/// Builds one container's response: env (`K` = ids in request order, `K_INFO` = compact sorted
/// JSON), device specs de-duplicated by host path with permissions `rw`, no mounts.
pub fn container_response(
    resource_name: &str,
    requested: &[String],
    grants: &[(impl AsRef<str>, impl Borrow<DeviceGrant>)],
) -> ContainerAllocateResponse {
    let key = env_key(resource_name);
    let mut info: BTreeMap<&str, &DeviceInfoMap> = BTreeMap::new();
    let mut specs: Vec<DeviceSpec> = Vec::new();
    for (id, grant) in grants {
        let grant: &DeviceGrant = grant.borrow();
        info.insert(id.as_ref(), &grant.info);
        for (host, container) in &grant.specs {
            if specs.iter().any(|s| &s.host_path == host) {
                continue;
            }
            specs.push(DeviceSpec {
                container_path: container.clone(),
                host_path: host.clone(),
                permissions: "rw".to_string(),
            });
        }
    }
    let info_json = to_go_json(&info);
    let mut response = ContainerAllocateResponse::default();
    response.envs.insert(key.clone(), requested.join(","));
    response.envs.insert(format!("{key}_INFO"), info_json);
    response.devices = specs;
    response
}

/// [`container_response`] from prepared answers (`(id, prepared)` in request order, no id
/// twice): the same bytes, without serialising anything per call. The `_INFO` entries are joined
/// in id order, which is the order of the map [`container_response`] serialises.
pub fn prepared_response(
    resource_name: &str,
    requested: &[String],
    prepared: &[(&str, &Prepared)],
) -> ContainerAllocateResponse {
    let key = env_key(resource_name);
    let mut by_id: Vec<&(&str, &Prepared)> = prepared.iter().collect();
    by_id.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let mut info = String::with_capacity(
        2 + by_id
            .iter()
            .map(|(_, p)| p.info_entry.len() + 1)
            .sum::<usize>(),
    );
    info.push('{');
    for (n, (_, p)) in by_id.iter().enumerate() {
        if n > 0 {
            info.push(',');
        }
        info.push_str(&p.info_entry);
    }
    info.push('}');
    let mut specs: Vec<DeviceSpec> = Vec::new();
    for (_, p) in prepared {
        for spec in &p.specs {
            if !specs.iter().any(|s| s.host_path == spec.host_path) {
                specs.push(spec.clone());
            }
        }
    }
    let mut response = ContainerAllocateResponse::default();
    response.envs.insert(key.clone(), requested.join(","));
    response.envs.insert(format!("{key}_INFO"), info);
    response.devices = specs;
    response
}

/// The device-info file name for `resource_name` and `id`: `<prefix>-<name>-<id>-device.json` with
/// every `/` replaced by `-` (the NAD client's naming).
pub fn device_info_file_name(resource_name: &str, id: &str) -> String {
    format!("{resource_name}-{id}-device.json").replace('/', "-")
}

#[derive(Serialize)]
struct DeviceInfoDoc<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    version: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pci: Option<PciInfo<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    vdpa: Option<VdpaInfo<'a>>,
}

#[derive(Serialize)]
struct PciInfo<'a> {
    #[serde(rename = "pci-address")]
    pci_address: &'a str,
    #[serde(rename = "rdma-device", skip_serializing_if = "Option::is_none")]
    rdma_device: Option<String>,
}

#[derive(Serialize)]
struct VdpaInfo<'a> {
    #[serde(rename = "parent-device", skip_serializing_if = "Option::is_none")]
    parent_device: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    driver: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<String>,
    #[serde(rename = "pci-address")]
    pci_address: &'a str,
}

/// The device-info document (spec 1.1.0) for a member of a pool of `device_type`; `None` for pool
/// types upstream writes no file for (accelerator, auxNetDevice).
pub fn device_info_json(device_type: DeviceType, member: &Member) -> Option<String> {
    if device_type != DeviceType::NetDevice {
        return None;
    }
    let device = &member.device;
    let doc = match member.hints.vdpa_type {
        Some(kind) => {
            let driver_name = match kind {
                VdpaType::Vhost => "vhost_vdpa",
                VdpaType::Virtio => "virtio_vdpa",
            };
            let vdpa = device
                .vdpa_devices
                .iter()
                .find(|v| v.driver.as_deref() == Some(driver_name))
                .or_else(|| device.vdpa_devices.first());
            DeviceInfoDoc {
                kind: "vdpa",
                version: DEVICE_INFO_VERSION,
                pci: None,
                vdpa: Some(VdpaInfo {
                    parent_device: vdpa.map(|v| v.name.as_str()),
                    driver: Some(match kind {
                        VdpaType::Vhost => "vhost",
                        VdpaType::Virtio => "virtio",
                    }),
                    path: match kind {
                        VdpaType::Vhost => vhost_vdpa_path(member),
                        VdpaType::Virtio => None,
                    },
                    pci_address: &device.id,
                }),
            }
        }
        None => DeviceInfoDoc {
            kind: "pci",
            version: DEVICE_INFO_VERSION,
            pci: Some(PciInfo {
                pci_address: &device.id,
                rdma_device: (member.hints.rdma && !device.rdma_devices.is_empty())
                    .then(|| device.rdma_devices.join(",")),
            }),
            vdpa: None,
        },
    };
    // The NAD client writes the file with `json.Marshal`.
    serde_json::to_string(&doc).ok().map(go_json)
}

/// Writes `contents` to `dir/name` atomically for readers (a temporary file in the same
/// directory, mode 0444, renamed over the old file), creating `dir` if needed. A file that already
/// holds exactly `contents` with mode 0444 keeps its bytes (a device allocated again, to the next
/// pod, has the same document): replacing it would cost a create, a write, a rename and freeing
/// the old inode on every Allocate, for readers that would see the same bytes. Its modification
/// time is still set to now, as a write would: a pool change keeps the files written since it
/// began ([`remove_device_info`]), and a file left by an earlier pod and allocated again during
/// the change is the new pod's.
///
/// Writes are serialised within the process: two at once for one file (kubelet never allocates a
/// device twice at once, but nothing else stops it) shared the temporary, and one removed it as a
/// leftover while the other wrote, failing that Allocate or renaming a half-written file into
/// place. Each write takes microseconds on the tmpfs, and Allocates are a pod start's few.
pub fn write_device_info(dir: &Path, name: &str, contents: &str) -> Result<PathBuf, AllocateError> {
    static WRITING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _writing = WRITING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let path = dir.join(name);
    if let Some(file) = holds(&path, contents.as_bytes())
        && file.set_modified(std::time::SystemTime::now()).is_ok()
    {
        return Ok(path);
    }
    let fail = |source| AllocateError::DeviceInfo {
        path: path.clone(),
        source,
    };
    let tmp = dir.join(format!(".{name}.tmp"));
    let create = || {
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            // Created read-only: the open descriptor may still write, and no chmod is needed.
            .mode(0o444)
            .open(&tmp)
    };
    let result = (|| {
        let mut file = match create() {
            Ok(file) => file,
            // The directory is not there yet (first Allocate, or removed under us).
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(dir)?;
                create()?
            }
            // A leftover of an interrupted write.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                fs::remove_file(&tmp)?;
                create()?
            }
            Err(e) => return Err(e),
        };
        file.write_all(contents.as_bytes())?;
        // The umask may have masked bits off the create mode; 0444 is what upstream writes.
        if file.metadata()?.permissions().mode() & 0o777 != 0o444 {
            file.set_permissions(fs::Permissions::from_mode(0o444))?;
        }
        // No fsync: the directory is a tmpfs under /var/run, readers only need the rename to be
        // atomic, and an fsync costs milliseconds on the pod start path.
        fs::rename(&tmp, &path)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(fail(e));
    }
    Ok(path)
}

/// The file at `path`, open, if it is a regular file with mode 0444 holding exactly `contents`.
/// Opened without following a symlink or waiting on a FIFO put in its place: Allocate must not
/// block on it.
fn holds(path: &Path, contents: &[u8]) -> Option<fs::File> {
    let mut file = fs::OpenOptions::new()
        .read(true)
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK).bits())
        .open(path)
        .ok()?;
    let meta = file.metadata().ok()?;
    if !meta.is_file()
        || meta.permissions().mode() & 0o777 != 0o444
        || meta.len() != contents.len() as u64
    {
        return None;
    }
    let mut existing = Vec::with_capacity(contents.len() + 1);
    // One byte more than expected: a file that grew since the stat must not compare equal.
    (&mut file)
        .take(contents.len() as u64 + 1)
        .read_to_end(&mut existing)
        .ok()?;
    (existing == contents).then_some(file)
}

/// Removes the device-info file of `id` in pool `resource_name`, if any — unless it was last
/// written at or after `kept_since`: then an Allocate of the device has just given it to a pod,
/// and the file is that pod's (kept, and said at debug).
pub fn remove_device_info(
    dir: &Path,
    resource_name: &str,
    id: &str,
    kept_since: Option<std::time::SystemTime>,
) {
    let path = dir.join(device_info_file_name(resource_name, id));
    if let Some(since) = kept_since
        && let Ok(written) = fs::symlink_metadata(&path).and_then(|m| m.modified())
        && written >= since
    {
        tracing::debug!(path = %path.display(), "device-info file written during a pool change (an Allocate raced it); kept for its pod");
        return;
    }
    match fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove a device-info file")
        }
    }
}

#[cfg(test)]
mod tests {
    use vfpool_policy::PoolDevice;
    use vfpool_sysfs::{Device, DeviceKind, VdpaDevice};

    use super::*;
    use crate::model::Health;

    fn member(device: Device) -> Member {
        let id = device.id.clone();
        Member {
            device,
            hints: PoolDevice {
                id,
                rdma: false,
                vhost_net: false,
                vdpa_type: None,
                additional_info: None,
            },
            health: Health::Healthy,
            held: false,
        }
    }

    fn vf(id: &str, driver: &str) -> Device {
        let mut d = Device::unknown(id, DeviceKind::Vf);
        d.driver = Some(driver.to_string());
        d
    }

    fn node() -> NodeFacts {
        NodeFacts {
            vhost_net: true,
            tun: true,
            rdma_cm: true,
        }
    }

    #[test]
    fn env_key_replaces_only_dots_and_upper_cases() {
        assert_eq!(
            env_key("intel.com/mlnx_sriov"),
            "PCIDEVICE_INTEL_COM_MLNX_SRIOV"
        );
        assert_eq!(
            env_key("my-co.com/sriov-net_0"),
            "PCIDEVICE_MY-CO_COM_SRIOV-NET_0"
        );
        assert_eq!(env_key("nvidia.com/bf2.sf"), "PCIDEVICE_NVIDIA_COM_BF2_SF");
    }

    #[test]
    fn vfio_info_json_is_upstreams_exact_shape() {
        let mut d = vf("0000:3b:02.6", "vfio-pci");
        d.iommu_group = Some(169);
        let m = member(d);
        let grant = grant(&m, &node(), &[]).unwrap();
        let response = container_response(
            "intel.com/sriov_dpdk",
            &["0000:3b:02.6".to_string()],
            &[("0000:3b:02.6".to_string(), grant)],
        );
        // The example from upstream's README / #633 log, byte for byte.
        assert_eq!(
            response.envs["PCIDEVICE_INTEL_COM_SRIOV_DPDK_INFO"],
            r#"{"0000:3b:02.6":{"generic":{"deviceID":"0000:3b:02.6"},"vfio":{"dev-mount":"/dev/vfio/169","mount":"/dev/vfio/vfio"}}}"#
        );
        assert_eq!(
            response.envs["PCIDEVICE_INTEL_COM_SRIOV_DPDK"],
            "0000:3b:02.6"
        );
        let specs: Vec<(&str, &str, &str)> = response
            .devices
            .iter()
            .map(|s| {
                (
                    s.host_path.as_str(),
                    s.container_path.as_str(),
                    s.permissions.as_str(),
                )
            })
            .collect();
        assert_eq!(
            specs,
            [
                ("/dev/vfio/vfio", "/dev/vfio/vfio", "rw"),
                ("/dev/vfio/169", "/dev/vfio/169", "rw")
            ]
        );
        assert!(response.mounts.is_empty());
    }

    #[test]
    fn two_vfio_devices_share_the_container_device_once() {
        let mut a = vf("0000:01:10.0", "vfio-pci");
        a.iommu_group = Some(0);
        let mut b = vf("0000:01:10.1", "vfio-pci");
        b.iommu_group = Some(1);
        let ids = vec![b.id.clone(), a.id.clone()];
        let grants = vec![
            (b.id.clone(), grant(&member(b), &node(), &[]).unwrap()),
            (a.id.clone(), grant(&member(a), &node(), &[]).unwrap()),
        ];
        let response = container_response("intel.com/x", &ids, &grants);
        let hosts: Vec<&str> = response
            .devices
            .iter()
            .map(|s| s.host_path.as_str())
            .collect();
        assert_eq!(hosts, ["/dev/vfio/vfio", "/dev/vfio/1", "/dev/vfio/0"]);
        // Request order in the list, sorted keys in _INFO.
        assert_eq!(
            response.envs["PCIDEVICE_INTEL_COM_X"],
            "0000:01:10.1,0000:01:10.0"
        );
        let info = &response.envs["PCIDEVICE_INTEL_COM_X_INFO"];
        assert!(info.find("0000:01:10.0").unwrap() < info.find("0000:01:10.1").unwrap());
    }

    #[test]
    fn no_iommu_uses_the_noiommu_host_node() {
        let mut d = vf("0000:b0:02.4", "vfio-pci");
        d.iommu_group = Some(12);
        d.no_iommu = true;
        let g = grant(&member(d), &node(), &[]).unwrap();
        assert_eq!(
            g.specs[1],
            (
                "/dev/vfio/noiommu-12".to_string(),
                "/dev/vfio/12".to_string()
            )
        );
        assert_eq!(g.info["vfio"]["dev-mount"], "/dev/vfio/12");
    }

    #[test]
    fn vfio_without_iommu_group_is_a_clear_error() {
        let err = grant(&member(vf("0000:b0:02.4", "vfio-pci")), &node(), &[]).unwrap_err();
        assert!(err.to_string().contains("0000:b0:02.4"));
        assert!(err.to_string().contains("IOMMU"));
    }

    #[test]
    fn uio_info_is_present_on_the_first_allocation() {
        let mut d = vf("0000:86:0a.6", "igb_uio");
        d.uio_device = Some("uio0".to_string());
        let g = grant(&member(d), &node(), &[]).unwrap();
        assert_eq!(g.info["uio"]["mount"], "/dev/uio0");
        assert_eq!(
            g.specs,
            [("/dev/uio0".to_string(), "/dev/uio0".to_string())]
        );
    }

    /// A device bound to `uio_pci_generic` gets its uio node and `"uio"` entry like one bound to
    /// `igb_uio` (a deliberate difference: upstream adds the uio provider only for `uio` and
    /// `igb_uio`, leaving DPDK in an unprivileged pod unable to open the device).
    #[test]
    fn uio_pci_generic_gets_its_uio_node_and_info() {
        let mut d = vf("0000:86:0a.7", "uio_pci_generic");
        d.uio_device = Some("uio3".to_string());
        let m = member(d);
        let g = grant(&m, &node(), &[]).unwrap();
        assert_eq!(
            g.specs,
            [("/dev/uio3".to_string(), "/dev/uio3".to_string())]
        );
        let response = container_response(
            "intel.com/dpdk",
            std::slice::from_ref(&m.device.id),
            &[(m.id(), &g)],
        );
        assert_eq!(
            response.envs["PCIDEVICE_INTEL_COM_DPDK_INFO"],
            r#"{"0000:86:0a.7":{"generic":{"deviceID":"0000:86:0a.7"},"uio":{"mount":"/dev/uio3"}}}"#
        );
        assert_eq!(response.devices.len(), 1);
        assert_eq!(response.devices[0].host_path, "/dev/uio3");
        assert_eq!(response.devices[0].permissions, "rw");
    }

    /// Go's `json.Marshal` escapes `<`, `>`, `&`, U+2028 and U+2029; every other character it
    /// writes as serde_json does (Go 1.22+ short escapes, lower-case `\u00XX`, DEL and non-ASCII as
    /// they are). The expected strings are what Go writes for these values.
    #[test]
    fn info_json_escapes_what_go_escapes() {
        let mut m = member(vf("0000:3b:00.2", "iavf"));
        m.hints.additional_info = Some(vec![
            ("url".to_string(), "<a href=\"x\">&amp;</a>".to_string()),
            ("k<&>".to_string(), "ls\u{2028}ps\u{2029}".to_string()),
            (
                "rest".to_string(),
                "é\u{1}\u{7f}\\\n\r\t\u{8}\u{c}'".to_string(),
            ),
        ]);
        let expected = concat!(
            r#"{"0000:3b:00.2":{"extra":{"k\u003c\u0026\u003e":"ls\u2028ps\u2029","#,
            r#""rest":"é\u0001"#,
            "\u{7f}",
            r#"\\\n\r\t\b\f'","#,
            r#""url":"\u003ca href=\"x\"\u003e\u0026amp;\u003c/a\u003e"},"#,
            r#""generic":{"deviceID":"0000:3b:00.2"}}}"#
        );
        let g = grant(&m, &node(), &[]).unwrap();
        let ids = [m.device.id.clone()];
        let computed = container_response("a.b/c", &ids, &[(m.id(), &g)]);
        assert_eq!(computed.envs["PCIDEVICE_A_B_C_INFO"], expected);
        // The prepared answer (what Allocate serves) too.
        let tmp = tempfile::tempdir().unwrap();
        let root = SysfsRoot::new(tmp.path());
        let p = prepare(&m, DeviceType::NetDevice, &node(), &root).unwrap();
        let fast = prepared_response("a.b/c", &ids, &[(m.id(), &p)]);
        assert_eq!(fast.envs["PCIDEVICE_A_B_C_INFO"], expected);
        // Still JSON that means the same values.
        let parsed: serde_json::Value = serde_json::from_str(expected).unwrap();
        assert_eq!(
            parsed["0000:3b:00.2"]["extra"]["url"],
            "<a href=\"x\">&amp;</a>"
        );
        assert_eq!(
            go_json("{\"a\":\"plain\"}".to_string()),
            "{\"a\":\"plain\"}"
        );
    }

    /// The device-info file is written by the NAD client with `json.Marshal`: the same escapes.
    #[test]
    fn device_info_json_escapes_what_go_escapes() {
        let mut d = vf("0000:65:00.2", "mlx5_core");
        d.vdpa_devices = vec![VdpaDevice {
            name: "vdpa<0>&".to_string(),
            driver: Some("virtio_vdpa".to_string()),
            vhost_device: None,
        }];
        let mut m = member(d);
        m.hints.vdpa_type = Some(VdpaType::Virtio);
        assert_eq!(
            device_info_json(DeviceType::NetDevice, &m).unwrap(),
            r#"{"type":"vdpa","version":"1.1.0","vdpa":{"parent-device":"vdpa\u003c0\u003e\u0026","driver":"virtio","pci-address":"0000:65:00.2"}}"#
        );
    }

    #[test]
    fn kernel_netdev_vfs_get_no_device_nodes() {
        let g = grant(&member(vf("0000:3b:00.2", "mlx5_core")), &node(), &[]).unwrap();
        assert!(g.specs.is_empty());
        assert_eq!(g.info.keys().copied().collect::<Vec<_>>(), ["generic"]);
    }

    #[test]
    fn rdma_only_when_the_pool_asks() {
        let mut d = vf("0000:3b:00.2", "mlx5_core");
        d.rdma_devices = vec!["mlx5_2".to_string()];
        let chars = [
            "issm2".to_string(),
            "ucm2".to_string(),
            "umad2".to_string(),
            "uverbs2".to_string(),
        ];
        let plain = grant(&member(d.clone()), &node(), &chars).unwrap();
        assert!(!plain.info.contains_key("rdma"));
        // In the pool for its devlink `enable_rdma`, its RDMA device elsewhere: named, empty, as
        // upstream (the key used to be missing), and nothing mounted (not even rdma_cm).
        let mut elsewhere = member(vf("0000:3b:00.3", "mlx5_core"));
        elsewhere.hints.rdma = true;
        let g = grant(&elsewhere, &node(), &[]).unwrap();
        assert!(g.info["rdma"].is_empty(), "{:?}", g.info);
        assert!(g.specs.is_empty(), "{:?}", g.specs);
        let mut m = member(d);
        m.hints.rdma = true;
        let g = grant(&m, &node(), &chars).unwrap();
        let rdma = &g.info["rdma"];
        assert_eq!(rdma["uverbs"], "/dev/infiniband/uverbs2");
        assert_eq!(rdma["umad"], "/dev/infiniband/umad2");
        assert_eq!(rdma["issm"], "/dev/infiniband/issm2");
        assert_eq!(rdma["rdma_cm"], "/dev/infiniband/rdma_cm");
        assert_eq!(rdma["rdma_dev"], "mlx5_2");
        // Exactly upstream's keys: the ucm device is mounted but not named (it used to add "ucm").
        assert_eq!(
            rdma.keys().map(String::as_str).collect::<Vec<_>>(),
            ["issm", "rdma_cm", "rdma_dev", "umad", "uverbs"]
        );
        let hosts: Vec<&str> = g.specs.iter().map(|(h, _)| h.as_str()).collect();
        assert_eq!(
            hosts,
            [
                "/dev/infiniband/issm2",
                "/dev/infiniband/ucm2",
                "/dev/infiniband/umad2",
                "/dev/infiniband/uverbs2",
                "/dev/infiniband/rdma_cm"
            ]
        );
    }

    #[test]
    fn vhost_net_specs_only_when_both_nodes_exist() {
        let mut m = member(vf("0000:3b:00.2", "iavf"));
        m.hints.vhost_net = true;
        let g = grant(&m, &node(), &[]).unwrap();
        assert_eq!(g.info["vhost"]["net-mount"], "/dev/vhost-net");
        assert_eq!(g.info["vhost"]["tun-mount"], "/dev/net/tun");
        assert_eq!(g.specs.len(), 2);
        let no_tun = NodeFacts {
            tun: false,
            ..node()
        };
        assert!(grant(&m, &no_tun, &[]).unwrap().specs.is_empty());
        // Without /dev/vhost-net upstream adds no vhost provider: `_INFO` must not name devices
        // the container does not get.
        let no_vhost_net = NodeFacts {
            vhost_net: false,
            ..node()
        };
        let g = grant(&m, &no_vhost_net, &[]).unwrap();
        assert!(g.specs.is_empty());
        assert!(!g.info.contains_key("vhost"), "{:?}", g.info);
    }

    #[test]
    fn rdma_cm_only_when_the_node_has_it() {
        let mut d = vf("0000:3b:00.2", "mlx5_core");
        d.rdma_devices = vec!["mlx5_2".to_string()];
        let mut m = member(d);
        m.hints.rdma = true;
        let without = NodeFacts {
            rdma_cm: false,
            ..node()
        };
        let g = grant(&m, &without, &["uverbs2".to_string()]).unwrap();
        assert_eq!(
            g.info["rdma"]
                .keys()
                .map(String::as_str)
                .collect::<Vec<_>>(),
            ["rdma_dev", "uverbs"]
        );
        let hosts: Vec<&str> = g.specs.iter().map(|(h, _)| h.as_str()).collect();
        assert_eq!(hosts, ["/dev/infiniband/uverbs2"]);
    }

    #[test]
    fn vdpa_virtio_is_named_with_no_mount() {
        let mut d = vf("0000:65:00.3", "mlx5_core");
        d.vdpa_devices = vec![VdpaDevice {
            name: "vdpa1".to_string(),
            driver: Some("virtio_vdpa".to_string()),
            vhost_device: None,
        }];
        let mut m = member(d);
        m.hints.vdpa_type = Some(VdpaType::Virtio);
        let g = grant(&m, &node(), &[]).unwrap();
        assert!(g.info["vdpa"].is_empty(), "{:?}", g.info);
        assert!(g.specs.is_empty());
        // No vDPA device at all: upstream adds no provider.
        let mut bare = member(vf("0000:65:00.4", "mlx5_core"));
        bare.hints.vdpa_type = Some(VdpaType::Virtio);
        assert!(
            !grant(&bare, &node(), &[])
                .unwrap()
                .info
                .contains_key("vdpa")
        );
    }

    #[test]
    fn vdpa_vhost_node_and_device_info() {
        let mut d = vf("0000:65:00.2", "mlx5_core");
        d.vdpa_devices = vec![VdpaDevice {
            name: "vdpa0".to_string(),
            driver: Some("vhost_vdpa".to_string()),
            vhost_device: Some("vhost-vdpa-0".to_string()),
        }];
        let mut m = member(d);
        m.hints.vdpa_type = Some(VdpaType::Vhost);
        let g = grant(&m, &node(), &[]).unwrap();
        assert_eq!(g.info["vdpa"]["mount"], "/dev/vhost-vdpa-0");
        assert_eq!(
            device_info_json(DeviceType::NetDevice, &m).unwrap(),
            r#"{"type":"vdpa","version":"1.1.0","vdpa":{"parent-device":"vdpa0","driver":"vhost","path":"/dev/vhost-vdpa-0","pci-address":"0000:65:00.2"}}"#
        );
    }

    #[test]
    fn extra_info_is_emitted_even_when_empty() {
        let mut m = member(vf("0000:3b:00.2", "iavf"));
        m.hints.additional_info = Some(Vec::new());
        let g = grant(&m, &node(), &[]).unwrap();
        let response =
            container_response("a.b/c", &[m.device.id.clone()], &[(m.device.id.clone(), g)]);
        assert_eq!(
            response.envs["PCIDEVICE_A_B_C_INFO"],
            r#"{"0000:3b:00.2":{"extra":{},"generic":{"deviceID":"0000:3b:00.2"}}}"#
        );
        m.hints.additional_info = Some(vec![("vlan".to_string(), "100".to_string())]);
        let g = grant(&m, &node(), &[]).unwrap();
        assert_eq!(g.info["extra"]["vlan"], "100");
    }

    #[test]
    fn pci_device_info_file_name_and_contents() {
        assert_eq!(
            device_info_file_name("intel.com/mlnx_sriov", "0000:3b:00.2"),
            "intel.com-mlnx_sriov-0000:3b:00.2-device.json"
        );
        let mut d = vf("0000:3b:00.2", "mlx5_core");
        d.rdma_devices = vec!["mlx5_2".to_string()];
        let mut m = member(d);
        assert_eq!(
            device_info_json(DeviceType::NetDevice, &m).unwrap(),
            r#"{"type":"pci","version":"1.1.0","pci":{"pci-address":"0000:3b:00.2"}}"#
        );
        m.hints.rdma = true;
        assert_eq!(
            device_info_json(DeviceType::NetDevice, &m).unwrap(),
            r#"{"type":"pci","version":"1.1.0","pci":{"pci-address":"0000:3b:00.2","rdma-device":"mlx5_2"}}"#
        );
        assert!(device_info_json(DeviceType::Accelerator, &m).is_none());
    }

    #[test]
    fn device_info_is_written_atomically_read_only_and_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("devinfo/dp");
        let path = write_device_info(&dir, "a-b-c-device.json", "{\"v\":1}").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "{\"v\":1}");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o444
        );
        // Rewriting a read-only file works (rename over it) and leaves no temporary behind.
        write_device_info(&dir, "a-b-c-device.json", "{\"v\":2}").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "{\"v\":2}");
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
        remove_device_info(&dir, "a/b", "c", None);
        assert!(!path.exists());
        remove_device_info(&dir, "a/b", "c", None);
    }

    #[test]
    fn an_identical_device_info_file_is_left_alone_anything_else_is_replaced() {
        use std::os::unix::fs::MetadataExt as _;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("devinfo");
        let inode = |p: &Path| fs::metadata(p).unwrap().ino();
        let path = write_device_info(&dir, "f.json", "{\"v\":1}").unwrap();
        let first = inode(&path);
        // The same document again (the device's next pod): the file is not replaced.
        write_device_info(&dir, "f.json", "{\"v\":1}").unwrap();
        assert_eq!(inode(&path), first);
        // Same length, other bytes: replaced.
        write_device_info(&dir, "f.json", "{\"v\":2}").unwrap();
        assert_ne!(inode(&path), first);
        assert_eq!(fs::read_to_string(&path).unwrap(), "{\"v\":2}");
        // Same bytes but writable (not what we write): replaced, read-only again.
        let second = inode(&path);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        write_device_info(&dir, "f.json", "{\"v\":2}").unwrap();
        assert_ne!(inode(&path), second);
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o444
        );
        // A symlink in place of the file is not followed (and not mistaken for it): replaced.
        let elsewhere = tmp.path().join("elsewhere.json");
        fs::write(&elsewhere, "{\"v\":2}").unwrap();
        fs::set_permissions(&elsewhere, fs::Permissions::from_mode(0o444)).unwrap();
        fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &path).unwrap();
        write_device_info(&dir, "f.json", "{\"v\":2}").unwrap();
        assert!(fs::symlink_metadata(&path).unwrap().is_file());
        // A leftover temporary from an interrupted write does not block the next one.
        fs::write(dir.join(".g.json.tmp"), "junk").unwrap();
        write_device_info(&dir, "g.json", "{}").unwrap();
        assert_eq!(fs::read_to_string(dir.join("g.json")).unwrap(), "{}");
        assert!(!dir.join(".g.json.tmp").exists());
    }

    /// Two writes of one file at once (concurrent Allocates of one device) shared the temporary
    /// file: one removed it as a leftover while the other wrote, and failed (`File exists`) or
    /// renamed the other's half-written file into place.
    #[test]
    fn concurrent_writes_of_one_file_all_succeed() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("devinfo");
        let documents = ["{\"v\":1}", "{\"v\":22}", "{\"v\":333}"];
        std::thread::scope(|scope| {
            for document in documents {
                let dir = &dir;
                scope.spawn(move || {
                    for _ in 0..300 {
                        write_device_info(dir, "f.json", document).unwrap();
                    }
                });
            }
        });
        let last = fs::read_to_string(dir.join("f.json")).unwrap();
        assert!(documents.contains(&last.as_str()), "{last}");
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
    }

    #[test]
    fn prepared_answers_are_what_allocate_would_compute() {
        let tmp = tempfile::tempdir().unwrap();
        let fixture = vfpool_sysfs::sim::Fixture::load("dell-cx5").unwrap();
        vfpool_sysfs::sim::write_tree(&fixture, tmp.path()).unwrap();
        let root = SysfsRoot::new(tmp.path());
        let inventory = vfpool_sysfs::discover(&root).unwrap();
        let mut m = member(inventory.get("0000:3b:00.2").unwrap().clone());
        m.hints.rdma = true;
        let prepared = prepare(&m, DeviceType::NetDevice, &node(), &root).unwrap();
        let chars = rdma_char_devices(&root, "0000:3b:00.2");
        assert_eq!(prepared.grant, grant(&m, &node(), &chars).unwrap());
        assert!(
            prepared.grant.specs.len() >= 4,
            "{:?}",
            prepared.grant.specs
        );
        assert_eq!(
            prepared.device_info,
            device_info_json(DeviceType::NetDevice, &m)
        );
        // The response from prepared answers is byte for byte the computed one, in any order.
        let mut other = member(inventory.get("0000:3b:00.3").unwrap().clone());
        other.hints.rdma = true;
        other.hints.additional_info = Some(vec![("k".to_string(), "v\"q".to_string())]);
        let other_prepared = prepare(&other, DeviceType::NetDevice, &node(), &root).unwrap();
        let ids = vec![other.id().to_string(), m.id().to_string()];
        let computed = container_response(
            "intel.com/x",
            &ids,
            &[
                (other.id(), &other_prepared.grant),
                (m.id(), &prepared.grant),
            ],
        );
        let fast = prepared_response(
            "intel.com/x",
            &ids,
            &[(other.id(), &other_prepared), (m.id(), &prepared)],
        );
        assert_eq!(fast, computed);
        assert!(
            fast.devices
                .iter()
                .filter(|d| d.host_path == RDMA_CM)
                .count()
                == 1
        );
        // A grant that is an error is not prepared (Allocate reports it).
        let mut d = vf("0000:3b:02.6", "vfio-pci");
        d.iommu_group = None;
        assert!(prepare(&member(d), DeviceType::NetDevice, &node(), &root).is_none());
    }

    #[test]
    fn rdma_char_devices_are_read_for_the_device_only() {
        let tmp = tempfile::tempdir().unwrap();
        let fixture = vfpool_sysfs::sim::Fixture::load("dell-cx5").unwrap();
        vfpool_sysfs::sim::write_tree(&fixture, tmp.path()).unwrap();
        let root = SysfsRoot::new(tmp.path());
        let chars = rdma_char_devices(&root, "0000:3b:00.2");
        assert_eq!(chars.len(), 3, "{chars:?}");
        assert!(chars.iter().any(|c| c.starts_with("uverbs")));
        assert!(chars.iter().any(|c| c.starts_with("umad")));
        assert!(chars.iter().any(|c| c.starts_with("issm")));
        assert!(rdma_char_devices(&root, "0000:04:00.0").is_empty());
        assert!(rdma_char_devices(&root, "../../etc").is_empty());
    }

    /// A sub-function's RDMA character devices sit under the SF on the auxiliary bus, as the
    /// kernel puts them under the ib_device's parent. The simulated tree had none there, so an SF
    /// in an RDMA pool was never shown to get its `uverbsN`.
    #[test]
    fn a_sub_functions_rdma_char_devices_are_found_on_the_auxiliary_bus() {
        let tmp = tempfile::tempdir().unwrap();
        let fixture = vfpool_sysfs::sim::Fixture::load("switchdev-sf").unwrap();
        vfpool_sysfs::sim::write_tree(&fixture, tmp.path()).unwrap();
        let root = SysfsRoot::new(tmp.path());
        let inventory = vfpool_sysfs::discover(&root).unwrap();
        let sf = inventory
            .devices
            .iter()
            .find(|d| d.kind == vfpool_sysfs::DeviceKind::Aux && !d.rdma_devices.is_empty())
            .expect("an SF with an RDMA device");
        let chars = rdma_char_devices(&root, &sf.id);
        assert!(chars.iter().any(|c| c.starts_with("uverbs")), "{chars:?}");
        assert_eq!(chars.len(), 3, "{chars:?}");
    }
}
