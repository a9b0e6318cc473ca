//! The fixture format: a TOML description of a node's PCI functions that a person can read, copy and
//! edit. `fixtures/*.toml` in this crate are the shipped examples and document every key.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::path::Path;

use serde::Deserialize;

use super::SimError;
use crate::address::PciAddress;

/// A simulated node.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fixture {
    /// One line about the node, printed by `vfpool sim`.
    #[serde(default)]
    pub description: String,
    /// Whether `/dev/vhost-net` exists (`class/misc/vhost-net`).
    #[serde(default = "yes")]
    pub vhost_net: bool,
    /// Whether `/dev/net/tun` exists (`class/misc/tun`).
    #[serde(default = "yes")]
    pub tun: bool,
    /// Whether `/dev/infiniband/rdma_cm` exists (`class/misc/rdma_cm`).
    #[serde(default = "yes")]
    pub rdma_cm: bool,
    /// The node's PCI functions that are not VFs (VFs are described inside their PF).
    #[serde(default, rename = "function")]
    pub functions: Vec<FunctionSpec>,
}

fn yes() -> bool {
    true
}
fn default_operstate() -> String {
    "up".to_owned()
}
fn default_mtu() -> u32 {
    1500
}
fn default_link_type() -> LinkType {
    LinkType::Ether
}
fn one() -> u16 {
    1
}

/// A physical PCI function: an SR-IOV PF, a plain NIC, an accelerator or any other device.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunctionSpec {
    /// PCI address in the long form (`0000:3b:00.0`).
    pub address: String,
    /// Vendor id, 4 hex digits.
    pub vendor: String,
    /// Device id, 4 hex digits.
    pub device: String,
    /// Subsystem vendor id (defaults to `vendor`).
    pub subsystem_vendor: Option<String>,
    /// Subsystem device id (defaults to `0000`).
    pub subsystem_device: Option<String>,
    /// Class code, 6 hex digits: `020000` Ethernet, `020700` InfiniBand, `120000` accelerator,
    /// `010802` NVMe.
    pub class: String,
    /// Bound driver; omit for an unbound function.
    pub driver: Option<String>,
    /// NUMA node; omit for "unknown" (the kernel writes -1).
    pub numa_node: Option<i32>,
    /// `acpi_index`, if the firmware provides one.
    pub acpi_index: Option<u32>,
    /// IOMMU group number; omit to have one assigned.
    pub iommu_group: Option<u32>,
    /// Whether the IOMMU group is a vfio no-IOMMU group.
    #[serde(default)]
    pub no_iommu: bool,
    /// The function's netdevs (the first is the main one).
    #[serde(default)]
    pub netdevs: Vec<String>,
    /// Link type of the netdevs.
    #[serde(default = "default_link_type")]
    pub link_type: LinkType,
    /// `operstate` of the netdevs: `up`, `down`, `lowerlayerdown`, ...
    #[serde(default = "default_operstate")]
    pub operstate: String,
    /// `carrier` of the netdevs.
    #[serde(default = "yes")]
    pub carrier: bool,
    /// MTU of the netdevs.
    #[serde(default = "default_mtu")]
    pub mtu: u32,
    /// RDMA devices on the function (`mlx5_0`).
    #[serde(default)]
    pub rdma: Vec<String>,
    /// Eswitch in switchdev mode: the first netdev becomes the uplink representor (`p<N>`) and every
    /// VF and SF gets a representor netdev on the PF.
    #[serde(default)]
    pub switchdev: bool,
    /// The first netdev is a devlink physical port in legacy mode too: it gets `phys_port_name`
    /// `p<N>` and a `phys_switch_id`, as ice (E810) and recent mlx5 PFs have, but no VF or SF gets
    /// a representor. Implied by `switchdev`.
    #[serde(default)]
    pub physical_port: bool,
    /// `sriov_totalvfs`; present only on SR-IOV capable functions.
    pub total_vfs: Option<u32>,
    /// The VFs currently enabled (`sriov_numvfs` = `vfs.count`).
    pub vfs: Option<VfSpec>,
    /// Sub-functions (auxiliary devices) created on this function.
    #[serde(default)]
    pub sfs: Vec<SfSpec>,
}

/// Link types the simulator writes (`net/<if>/type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkType {
    /// ARPHRD_ETHER (1).
    Ether,
    /// ARPHRD_INFINIBAND (32).
    Infiniband,
}

impl LinkType {
    pub(crate) fn arphrd(self) -> u32 {
        match self {
            LinkType::Ether => 1,
            LinkType::Infiniband => 32,
        }
    }
}

/// The VFs of a PF.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VfSpec {
    /// How many VFs are enabled.
    pub count: u32,
    /// VF device id (`1018` for a ConnectX-5 VF, `154c` for an X710 VF).
    pub device: String,
    /// Routing-id offset of VF 0 from the PF (`sriov_offset`).
    #[serde(default = "one")]
    pub offset: u16,
    /// Routing-id stride between VFs (`sriov_stride`).
    #[serde(default = "one")]
    pub stride: u16,
    /// Driver of every VF unless `drivers` says otherwise; omit for unbound VFs.
    pub driver: Option<String>,
    /// Per-VF driver overrides: VF index ranges (`"8-11"`, `"0,2"`) to a driver, or `none` for
    /// unbound.
    #[serde(default)]
    pub drivers: BTreeMap<String, String>,
    /// Netdev name template for VFs bound to a netdev driver; `{index}` is the VF index.
    pub netdev: Option<String>,
    /// VF indexes (a range) whose netdev has moved into a pod's network namespace: their `net/`
    /// directory is empty.
    pub moved_to_pod: Option<String>,
    /// VF indexes (a range) whose IOMMU group is a vfio no-IOMMU group.
    pub no_iommu: Option<String>,
    /// RDMA device naming for the VFs (Mellanox VFs each have one).
    pub rdma: Option<RdmaNaming>,
    /// VF index ranges to a vDPA device bound to `vhost` or `virtio`.
    #[serde(default)]
    pub vdpa: BTreeMap<String, VdpaKind>,
    /// Name template of the VFs' vDPA devices (`vdpa dev add name <NAME>`): `{index}` is the VF
    /// index, `{address}` its PCI address (sriov-network-operator uses `vdpa:{address}`). Omitted,
    /// devices are named `vdpa<N>`, numbered across the node.
    pub vdpa_name: Option<String>,
    /// `operstate` of the VF netdevs.
    #[serde(default = "default_operstate")]
    pub operstate: String,
}

/// RDMA device names for VFs: `prefix` followed by `first + index`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RdmaNaming {
    /// Name prefix (`mlx5_`).
    pub prefix: String,
    /// Number of VF 0's RDMA device.
    pub first: u32,
}

/// Which vDPA bus driver a simulated vDPA device is bound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VdpaKind {
    /// `vhost_vdpa`: a `/dev/vhost-vdpa-N` character device.
    Vhost,
    /// `virtio_vdpa`: a virtio netdev in the kernel.
    Virtio,
}

/// A sub-function (auxiliary device) on a PF.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SfSpec {
    /// The SF number (`sfnum`), what `pfNames` ranges select for auxNetDevices.
    pub sfnum: u32,
    /// The driver bound to the SF; `mlx5_core.sf` when unset, `"none"` for an unbound SF.
    pub driver: Option<String>,
    /// Auxiliary device name; defaults to `mlx5_core.sf.<sfnum + 1>`.
    pub name: Option<String>,
    /// The SF's netdev.
    pub netdev: Option<String>,
    /// The SF's RDMA device.
    pub rdma: Option<String>,
}

/// Largest fixture file read. The shipped 1,024-VF node is a few kilobytes: fixtures describe
/// functions by counts, not one by one.
const MAX_FIXTURE_BYTES: u64 = 4 << 20;

/// Reads a fixture file, refusing what cannot be one before reading it whole: a FIFO (which would
/// block), a device such as `/dev/zero` (which never ends), a huge file, and text that is not
/// UTF-8.
fn read_fixture_file(path: &Path, name: &str) -> Result<String, SimError> {
    use std::io::Read as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let unreadable = |source| SimError::FixtureUnreadable {
        name: name.to_owned(),
        known: super::FIXTURE_NAMES.join(", "),
        source,
    };
    let not_text = |problem: String| SimError::FixtureNotText {
        name: name.to_owned(),
        known: super::FIXTURE_NAMES.join(", "),
        problem,
    };
    // Not opened at all unless it is a regular file: opening some device nodes does something
    // (`/dev/watchdog` arms the watchdog). Checked again on the open file, which may have been
    // replaced meanwhile; NONBLOCK, so that a FIFO put there then does not wait for a writer.
    if !std::fs::metadata(path).map_err(unreadable)?.is_file() {
        return Err(not_text("is not a regular file".to_owned()));
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)
        .map_err(unreadable)?;
    let meta = file.metadata().map_err(unreadable)?;
    if !meta.is_file() {
        return Err(not_text("is not a regular file".to_owned()));
    }
    let mut bytes = Vec::new();
    file.take(MAX_FIXTURE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(unreadable)?;
    if bytes.len() as u64 > MAX_FIXTURE_BYTES {
        return Err(not_text(format!(
            "is larger than {MAX_FIXTURE_BYTES} bytes"
        )));
    }
    String::from_utf8(bytes).map_err(|e| {
        not_text(format!(
            "is not UTF-8 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        ))
    })
}

/// The address of VF `index` of the PF at `pf`, as the kernel places it (first VF offset and
/// stride in routing ids); `None` past bus `ff`.
pub(crate) fn vf_address(pf: PciAddress, vfs: &VfSpec, index: u32) -> Option<PciAddress> {
    let rid = u32::from(pf.routing_id()) + u32::from(vfs.offset) + index * u32::from(vfs.stride);
    u16::try_from(rid).ok().map(|rid| pf.with_routing_id(rid))
}

impl Fixture {
    /// Every PCI address the fixture's functions and their VFs occupy.
    pub(crate) fn function_addresses(&self) -> std::collections::BTreeSet<PciAddress> {
        let mut addresses = std::collections::BTreeSet::new();
        for f in &self.functions {
            let Ok(pf) = f.address.parse::<PciAddress>() else {
                continue;
            };
            addresses.insert(pf);
            if let Some(vfs) = &f.vfs {
                addresses.extend((0..vfs.count).filter_map(|i| vf_address(pf, vfs, i)));
            }
        }
        addresses
    }

    /// Parses a fixture from TOML text; `origin` names the file in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Fixture, SimError> {
        let fixture: Fixture = toml::from_str(text).map_err(|source| SimError::Parse {
            origin: origin.to_owned(),
            source: Box::new(source),
        })?;
        fixture.validate(origin)?;
        Ok(fixture)
    }

    /// A shipped fixture by name (see [`super::FIXTURE_NAMES`]) or a fixture file by path.
    pub fn load(name_or_path: &str) -> Result<Fixture, SimError> {
        if let Some(text) = super::fixture_text(name_or_path) {
            return Fixture::from_toml(text, name_or_path);
        }
        let text = read_fixture_file(Path::new(name_or_path), name_or_path)?;
        Fixture::from_toml(&text, name_or_path)
    }

    /// Checks that the fixture describes a node the writer can lay out; `origin` names it in errors.
    pub(crate) fn validate(&self, origin: &str) -> Result<(), SimError> {
        let invalid = |field: String, message: String| SimError::Invalid {
            origin: origin.to_owned(),
            field,
            message,
        };
        let mut seen = std::collections::BTreeSet::new();
        // vDPA device names are node-wide (`bus/vdpa/devices/<name>`); numbered in the order the
        // writer creates them.
        let mut vdpa_names = std::collections::BTreeSet::new();
        let mut next_vdpa = 0u32;
        for (i, f) in self.functions.iter().enumerate() {
            let at = |key: &str| format!("function[{i}].{key}");
            let pf: PciAddress = f
                .address
                .parse()
                .map_err(|e: crate::AddressError| invalid(at("address"), e.to_string()))?;
            for (key, value, len) in [
                ("vendor", &f.vendor, 4),
                ("device", &f.device, 4),
                ("class", &f.class, 6),
            ] {
                if value.len() != len || !value.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(invalid(
                        at(key),
                        format!("{value:?} must be {len} hex digits"),
                    ));
                }
            }
            if !seen.insert(pf) {
                return Err(invalid(
                    at("address"),
                    format!("{} is listed twice", f.address),
                ));
            }
            if let Some(vfs) = &f.vfs {
                let total = f.total_vfs.ok_or_else(|| {
                    invalid(
                        at("total_vfs"),
                        "a function with vfs must be SR-IOV capable: set total_vfs".to_owned(),
                    )
                })?;
                if vfs.count > total {
                    return Err(invalid(
                        at("vfs.count"),
                        format!("{} VFs exceed total_vfs = {total}", vfs.count),
                    ));
                }
                for (key, range) in vfs
                    .drivers
                    .keys()
                    .map(|k| ("vfs.drivers", Some(k)))
                    .chain(vfs.vdpa.keys().map(|k| ("vfs.vdpa", Some(k))))
                    .chain([
                        ("vfs.moved_to_pod", vfs.moved_to_pod.as_ref()),
                        ("vfs.no_iommu", vfs.no_iommu.as_ref()),
                    ])
                {
                    if let Some(range) = range {
                        parse_index_ranges(range, vfs.count).map_err(|m| invalid(at(key), m))?;
                    }
                }
                if let Some(template) = &vfs.vdpa_name
                    && (template.is_empty() || template.contains('/'))
                {
                    return Err(invalid(
                        at("vfs.vdpa_name"),
                        format!("{template:?} must be a non-empty name without '/'"),
                    ));
                }
                // Ranges, not a table by index: `count` is not known to be sane until the loop
                // below has placed every VF.
                let vdpa_ranges: Vec<RangeInclusive<u32>> = vfs
                    .vdpa
                    .keys()
                    .filter_map(|range| parse_index_ranges(range, vfs.count).ok())
                    .flatten()
                    .collect();
                for index in 0..vfs.count {
                    let vf = vf_address(pf, vfs, index).ok_or_else(|| {
                        invalid(
                            at("vfs"),
                            format!("VF {index} falls beyond bus ff; lower offset or stride"),
                        )
                    })?;
                    if vdpa_ranges.iter().any(|range| range.contains(&index)) {
                        let name = vdpa_device_name(vfs.vdpa_name.as_deref(), index, vf, next_vdpa);
                        next_vdpa += 1;
                        if matches!(name.as_str(), "." | "..") || !vdpa_names.insert(name.clone()) {
                            return Err(invalid(
                                at("vfs.vdpa_name"),
                                format!(
                                    "VF {index}'s vDPA device would be named {name:?}, which is not a usable or not a unique name; use {{index}} or {{address}} in the template"
                                ),
                            ));
                        }
                    }
                    if !seen.insert(vf) {
                        return Err(invalid(
                            at("vfs"),
                            format!(
                                "VF {index} would be at {vf}, which another function already uses; change offset or stride"
                            ),
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

/// The name of VF `index`'s vDPA device: `template` filled in, or `vdpa<serial>`.
pub(crate) fn vdpa_device_name(
    template: Option<&str>,
    index: u32,
    address: PciAddress,
    serial: u32,
) -> String {
    match template {
        Some(template) => template
            .replace("{index}", &index.to_string())
            .replace("{address}", &address.to_string()),
        None => format!("vdpa{serial}"),
    }
}

/// Parses `"0-3,5"` into the ranges it names, each within the `count` VFs. The ranges are checked,
/// not expanded: `"0-4000000000"` would be sixteen gigabytes of indexes.
pub(crate) fn parse_index_ranges(
    text: &str,
    count: u32,
) -> Result<Vec<RangeInclusive<u32>>, String> {
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim) {
        let bad = || format!("{text:?} is not a list of indexes and ranges such as \"0-3,5\"");
        let range = match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (
                    a.trim().parse::<u32>().map_err(|_| bad())?,
                    b.trim().parse::<u32>().map_err(|_| bad())?,
                );
                if a > b {
                    return Err(bad());
                }
                a..=b
            }
            None => {
                let index = part.parse::<u32>().map_err(|_| bad())?;
                index..=index
            }
        };
        if *range.end() >= count {
            let existing = match count {
                0 => "there are none".to_owned(),
                1 => "the only one is 0".to_owned(),
                n => format!("they are 0-{}", n - 1),
            };
            return Err(format!(
                "{text:?} names VF {}, but vfs.count = {count} ({existing}): name only VFs that are enabled",
                range.end()
            ));
        }
        out.push(range);
    }
    Ok(out)
}

/// For each of the `count` VFs, the value of the first entry of `map` (in its order) whose index
/// ranges name it. Ranges that do not parse name nothing: the fixture was validated.
pub(crate) fn first_match_by_index<V>(map: &BTreeMap<String, V>, count: u32) -> Vec<Option<&V>> {
    let mut out = vec![None; count as usize];
    for (ranges, value) in map {
        for range in parse_index_ranges(ranges, count).unwrap_or_default() {
            for index in range {
                if let Some(slot @ None) = out.get_mut(index as usize) {
                    *slot = Some(value);
                }
            }
        }
    }
    out
}

/// For each of the `count` VFs, whether the index ranges `text` name it.
pub(crate) fn named_by_index(text: Option<&str>, count: u32) -> Vec<bool> {
    let mut out = vec![false; count as usize];
    let ranges = text.and_then(|t| parse_index_ranges(t, count).ok());
    for index in ranges.into_iter().flatten().flatten() {
        if let Some(named) = out.get_mut(index as usize) {
            *named = true;
        }
    }
    out
}
