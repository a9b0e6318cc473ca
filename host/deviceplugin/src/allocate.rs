//! Allocate, as the upstream SR-IOV device plugin answers it (`pkg/resources/pool_stub.go`,
//! `pkg/infoprovider/*`, `pkg/netdevice/netResourcePool.go`): the `PCIDEVICE_<PREFIX>_<NAME>`
//! environment variable and its `_INFO` twin, the device nodes a pod needs, and the device-info
//! file Multus and the CNI plugin read.
//!
//! Everything here is plain data in, plain data out (plus reading a few sysfs entries and writing
//! the device-info files), so it is unit-tested without gRPC. Two deliberate differences from
//! upstream: an id that is not in the pool is an error naming it (upstream skips it silently), and
//! the `uio`/`vdpa` info is present on the first allocation too (upstream adds it only after the
//! device specs were computed once).

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

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
/// The RDMA connection-manager device, added for every RDMA device.
pub const RDMA_CM: &str = "/dev/infiniband/rdma_cm";

/// Why a container's allocation cannot be answered.
#[derive(Debug, thiserror::Error)]
pub enum AllocateError {
    /// The request names a device the pool does not advertise.
    #[error(
        "device {id:?} is not in pool {resource} (it advertises {count} devices); kubelet's checkpoint may be stale: restart the pod"
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
    #[error("device {id:?} is requested twice in one container request")]
    Duplicate {
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

    if member.hints.rdma && !device.rdma_devices.is_empty() {
        let mut rdma = BTreeMap::new();
        for char_dev in rdma_chars {
            let path = format!("/dev/infiniband/{char_dev}");
            for key in ["uverbs", "umad", "issm", "ucm"] {
                if char_dev.starts_with(key) {
                    rdma.entry(key.to_string()).or_insert_with(|| path.clone());
                }
            }
            grant.specs.push((path.clone(), path));
        }
        rdma.insert("rdma_cm".to_string(), RDMA_CM.to_string());
        if let Some(first) = device.rdma_devices.first() {
            rdma.insert("rdma_dev".to_string(), first.clone());
        }
        grant.specs.push((RDMA_CM.to_string(), RDMA_CM.to_string()));
        grant.info.insert("rdma", rdma);
    }

    if member.hints.vhost_net {
        grant.info.insert(
            "vhost",
            entry(&[
                ("net-mount", VHOST_NET.to_string()),
                ("tun-mount", TUN.to_string()),
            ]),
        );
        // Upstream mounts them only when both exist at that moment.
        if node.vhost_net && node.tun {
            grant
                .specs
                .push((VHOST_NET.to_string(), VHOST_NET.to_string()));
            grant.specs.push((TUN.to_string(), TUN.to_string()));
        }
    }

    if member.hints.vdpa_type == Some(VdpaType::Vhost)
        && let Some(path) = vhost_vdpa_path(member)
    {
        grant.info.insert("vdpa", entry(&[("mount", path.clone())]));
        grant.specs.push((path.clone(), path));
    }

    if let Some(extra) = &member.hints.additional_info {
        let extra: BTreeMap<String, String> = extra.iter().cloned().collect();
        grant.info.insert("extra", extra);
    }
    Ok(grant)
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

/// The RDMA character devices (`uverbsN`, `umadN`, `issmN`, `ucmN`) of device `id`, read from
/// `<sysfs>/bus/{pci,auxiliary}/devices/<id>/infiniband_{verbs,mad,cm}/*`, sorted. Read at Allocate
/// time for the allocated devices only (discovery leaves them out to stay fast).
pub fn rdma_char_devices(root: &SysfsRoot, id: &str) -> Vec<String> {
    let mut found = Vec::new();
    for bus in ["bus/pci/devices", "bus/auxiliary/devices"] {
        let dir = root.path().join(bus).join(id);
        for class in ["infiniband_verbs", "infiniband_mad", "infiniband_cm"] {
            let Ok(entries) = fs::read_dir(dir.join(class)) else {
                continue;
            };
            for entry in entries.flatten() {
                if let Some(name) = entry.file_name().to_str()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                {
                    found.push(name.to_string());
                }
            }
        }
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
    grants: &[(String, DeviceGrant)],
) -> ContainerAllocateResponse {
    let key = env_key(resource_name);
    let mut info: BTreeMap<&str, &DeviceInfoMap> = BTreeMap::new();
    let mut specs: Vec<DeviceSpec> = Vec::new();
    for (id, grant) in grants {
        info.insert(id.as_str(), &grant.info);
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
    // Serialising maps of strings cannot fail; fall back to an empty object rather than panic.
    let info_json = serde_json::to_string(&info).unwrap_or_else(|_| "{}".to_string());
    let mut response = ContainerAllocateResponse::default();
    response.envs.insert(key.clone(), requested.join(","));
    response.envs.insert(format!("{key}_INFO"), info_json);
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
    serde_json::to_string(&doc).ok()
}

/// Writes `contents` to `dir/name` atomically (a temporary file in the same directory, mode 0444,
/// renamed over the old file), creating `dir` if needed.
pub fn write_device_info(dir: &Path, name: &str, contents: &str) -> Result<PathBuf, AllocateError> {
    let path = dir.join(name);
    let fail = |source| AllocateError::DeviceInfo {
        path: path.clone(),
        source,
    };
    fs::create_dir_all(dir).map_err(fail)?;
    let tmp = dir.join(format!(".{name}.tmp"));
    let result = (|| {
        let _ = fs::remove_file(&tmp);
        let mut file = fs::File::create(&tmp)?;
        file.write_all(contents.as_bytes())?;
        file.sync_all()?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o444))?;
        fs::rename(&tmp, &path)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(fail(e));
    }
    Ok(path)
}

/// Removes the device-info file of `id` in pool `resource_name`, if any.
pub fn remove_device_info(dir: &Path, resource_name: &str, id: &str) {
    let path = dir.join(device_info_file_name(resource_name, id));
    match fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove a device-info file")
        }
    }
}
