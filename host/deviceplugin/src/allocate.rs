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
    // Ids come from the pool, but never let one walk out of the device directories.
    if id.is_empty() || id.contains('/') || id.starts_with('.') {
        return found;
    }
    // A PCI address (`0000:3b:00.2`) lives on the PCI bus, anything else (`mlx5_core.sf.4`) on
    // the auxiliary bus.
    let bus = if id.contains(':') {
        "bus/pci/devices"
    } else {
        "bus/auxiliary/devices"
    };
    {
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

/// Writes `contents` to `dir/name` atomically for readers (a temporary file in the same
/// directory, mode 0444, renamed over the old file), creating `dir` if needed.
pub fn write_device_info(dir: &Path, name: &str, contents: &str) -> Result<PathBuf, AllocateError> {
    let path = dir.join(name);
    let fail = |source| AllocateError::DeviceInfo {
        path: path.clone(),
        source,
    };
    fs::create_dir_all(dir).map_err(fail)?;
    let tmp = dir.join(format!(".{name}.tmp"));
    let result = (|| {
        let mut file = match fs::File::create(&tmp) {
            Ok(file) => file,
            // A read-only leftover of an interrupted write (only root could reopen it).
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                fs::remove_file(&tmp)?;
                fs::File::create(&tmp)?
            }
            Err(e) => return Err(e),
        };
        file.write_all(contents.as_bytes())?;
        // No fsync: the directory is a tmpfs under /var/run, readers only need the rename to be
        // atomic, and an fsync costs milliseconds on the pod start path.
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
            "umad2".to_string(),
            "uverbs2".to_string(),
        ];
        let plain = grant(&member(d.clone()), &node(), &chars).unwrap();
        assert!(!plain.info.contains_key("rdma"));
        let mut m = member(d);
        m.hints.rdma = true;
        let g = grant(&m, &node(), &chars).unwrap();
        let rdma = &g.info["rdma"];
        assert_eq!(rdma["uverbs"], "/dev/infiniband/uverbs2");
        assert_eq!(rdma["umad"], "/dev/infiniband/umad2");
        assert_eq!(rdma["issm"], "/dev/infiniband/issm2");
        assert_eq!(rdma["rdma_cm"], "/dev/infiniband/rdma_cm");
        assert_eq!(rdma["rdma_dev"], "mlx5_2");
        let hosts: Vec<&str> = g.specs.iter().map(|(h, _)| h.as_str()).collect();
        assert_eq!(
            hosts,
            [
                "/dev/infiniband/issm2",
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
            vhost_net: true,
            tun: false,
        };
        assert!(grant(&m, &no_tun, &[]).unwrap().specs.is_empty());
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
        remove_device_info(&dir, "a/b", "c");
        assert!(!path.exists());
        remove_device_info(&dir, "a/b", "c");
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
}
