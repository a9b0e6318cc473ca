//! Every result a policy returns is hostile input: this module checks it before the agent uses it.
//!
//! Pools: unique, valid Kubernetes extended-resource names; every device id in the inventory, in at
//! most one pool, in a pool of a matching type; bounded sizes. Preferences: exactly the requested
//! number of distinct available ids with every must-include id among them.

use std::collections::HashSet;
use std::fmt::{self, Write as _};

use crate::bindings::wit;
use crate::convert::PolicyInventory;
use crate::model::{DeviceType, Pool, PoolDevice, VdpaType};
pub use crate::request::{AllocationRequest, Candidate, ParentPf};

/// Most pools one selector may return (kubelet runs one plugin server per pool).
pub const MAX_POOLS: usize = 1024;
/// Most `additional-info` pairs per device.
pub const MAX_INFO_PAIRS: usize = 64;
/// Longest `additional-info` key or value, in bytes.
pub const MAX_INFO_BYTES: usize = 4096;

/// Longest text taken from a policy into an error or log line, in bytes (before the cut mark).
/// Errors are logged on every rescan and every GetPreferredAllocation: a policy must not be able
/// to make each of those lines megabytes long.
pub const MAX_GUEST_TEXT_BYTES: usize = 1024;

/// `text` from a policy made safe to log: control characters (newlines above all) and the
/// Unicode line and direction controls escaped, so a policy cannot forge log lines or reorder
/// what a terminal shows; cut at a character boundary to [`MAX_GUEST_TEXT_BYTES`], a `…` marking
/// the cut.
pub fn guest_text(text: &str) -> String {
    bounded_text(text, MAX_GUEST_TEXT_BYTES)
}

/// [`guest_text`] with another length limit.
pub fn bounded_text(text: &str, max_bytes: usize) -> String {
    let mut out = BoundedText::new(max_bytes);
    // An error only says the text was cut, which `finish` marks.
    let _ = out.write_str(text);
    out.finish()
}

/// A `fmt::Write` sink that escapes as [`guest_text`] does and stops at its limit, so text is
/// never formatted whole first (a trap's backtrace may name functions 100 KB long). A write past
/// the limit returns `fmt::Error`, which stops the formatting that feeds it.
pub(crate) struct BoundedText {
    text: String,
    max_bytes: usize,
    cut: bool,
}

impl BoundedText {
    pub(crate) fn new(max_bytes: usize) -> Self {
        BoundedText {
            text: String::new(),
            max_bytes,
            cut: false,
        }
    }

    /// The text, with `…` if it was cut.
    pub(crate) fn finish(mut self) -> String {
        if self.cut {
            self.text.push('…');
        }
        self.text
    }
}

/// Characters that would let a policy's text change the layout of a log: line breaks, other
/// controls (terminal escapes), and bidirectional overrides.
fn forges_layout(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{061c}'
        )
        || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

impl fmt::Write for BoundedText {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if self.cut {
            return Err(fmt::Error);
        }
        for c in s.chars() {
            let before = self.text.len();
            if forges_layout(c) {
                self.text.extend(c.escape_default());
            } else {
                self.text.push(c);
            }
            if self.text.len() > self.max_bytes {
                // Whole characters (and whole escapes) only: the cut is at a char boundary.
                self.text.truncate(before);
                self.cut = true;
                return Err(fmt::Error);
            }
        }
        Ok(())
    }
}

/// Why a policy's result was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResultError {
    /// More pools than [`MAX_POOLS`].
    #[error("{count} pools, more than the limit of {MAX_POOLS}")]
    TooManyPools {
        /// How many were returned.
        count: usize,
    },
    /// A resource name kubelet would refuse.
    #[error("resource name {name:?} is invalid: {reason}")]
    BadResourceName {
        /// The name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Two pools with one name.
    #[error("resource name {0:?} is used by two pools")]
    DuplicatePool(String),
    /// A device id that discovery did not report.
    #[error("pool {pool:?} contains {device:?}, which is not a device of this node")]
    UnknownDevice {
        /// The pool.
        pool: String,
        /// The id.
        device: String,
    },
    /// A device in two pools (or twice in one).
    #[error(
        "device {device:?} is in pool {first:?} and again in pool {second:?}; a device may be in one pool only"
    )]
    DeviceInTwoPools {
        /// The id.
        device: String,
        /// Where it was first.
        first: String,
        /// Where it was again.
        second: String,
    },
    /// An auxiliary device outside an aux-net-device pool, or a PCI function inside one.
    #[error("pool {pool:?} is of type {device_type} but {device:?} is {what}")]
    WrongDeviceType {
        /// The pool.
        pool: String,
        /// Its type.
        device_type: DeviceType,
        /// The device.
        device: String,
        /// What the device is.
        what: &'static str,
    },
    /// `additional-info` too large.
    #[error(
        "device {device:?} in pool {pool:?} has additional-info beyond the limits ({MAX_INFO_PAIRS} pairs of at most {MAX_INFO_BYTES} bytes)"
    )]
    InfoTooLarge {
        /// The pool.
        pool: String,
        /// The device.
        device: String,
    },
    /// A preference of the wrong length.
    #[error("returned {got} devices, the request asked for exactly {want}")]
    WrongCount {
        /// Returned.
        got: usize,
        /// Requested.
        want: usize,
    },
    /// A preferred id that was not offered.
    #[error("returned {0:?}, which is not among the available devices")]
    NotAvailable(String),
    /// A preferred id twice.
    #[error("returned {0:?} twice")]
    Repeated(String),
    /// A must-include id missing from the answer.
    #[error("left out must-include device {0:?}")]
    MissingMustInclude(String),
}

/// Why the host could not even build an allocation request (a caller bug, not the policy's).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// An available id unknown to the inventory.
    #[error("available device {0:?} is not in the inventory")]
    UnknownAvailable(String),
    /// A must-include id not among the available ones.
    #[error("must-include device {0:?} is not among the available devices")]
    MustIncludeNotAvailable(String),
    /// More must-include devices than the request's size: no answer can satisfy it.
    #[error("{must_include} must-include devices do not fit in a request for {size}")]
    MustIncludeExceedsSize {
        /// Distinct must-include ids.
        must_include: usize,
        /// Requested.
        size: u32,
    },
    /// More devices asked for than available.
    #[error("asked for {size} devices but only {available} are available")]
    TooFew {
        /// Requested.
        size: u32,
        /// Available.
        available: usize,
    },
}

/// A device the host kept out of the pool a policy put it in ([`pools`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Withheld {
    /// The pool.
    pub pool: String,
    /// The device.
    pub device: String,
    /// What the device is to the node.
    pub why: &'static str,
}

impl std::fmt::Display for Withheld {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the host keeps {:?} out of pool {:?}: it {} (a pod given it would take it from the node)",
            self.device, self.pool, self.why
        )
    }
}

/// What the node itself needs, in a pool of `device_type`: a PCI function carrying the host's
/// default route (the uplink), in a network or an accelerator pool (upstream's accelerator
/// provider only sees class 0x12 devices, which carry no route; a policy could otherwise hand the
/// uplink out by calling its pool an accelerator one), and, in a network pool, a PF with VFs
/// enabled (its VFs' traffic goes through it), as upstream. Auxiliary pools keep both, as
/// upstream's (a BlueField's SF may carry the route), and accelerator PFs with VFs (QAT) stay.
fn needed_by_the_node(device: &wit::Device, device_type: DeviceType) -> Option<&'static str> {
    if device_type == DeviceType::AuxNetDevice {
        return None;
    }
    if device.carries_default_route {
        Some("carries the host's default route")
    } else if device_type == DeviceType::NetDevice
        && device.kind == wit::DeviceKind::Pf
        && device.sriov_num_vfs.is_some_and(|n| n > 0)
    {
        Some("is a PF with VFs enabled")
    } else {
        None
    }
}

/// Checks and converts a selector's pools. A violation of the contract refuses the whole result;
/// a device the node needs ([`needed_by_the_node`]) is left out of its pool instead, and named in
/// the second list: whatever a policy says, the host never hands a PCI function that is the
/// node's uplink to a pod, and refusing the result would keep the previous pools — the device
/// too — and freeze every other pool's changes with it.
pub fn pools(
    pools: Vec<wit::Pool>,
    inventory: &PolicyInventory,
) -> Result<(Vec<Pool>, Vec<Withheld>), ResultError> {
    if pools.len() > MAX_POOLS {
        return Err(ResultError::TooManyPools { count: pools.len() });
    }
    let mut names: HashSet<String> = HashSet::with_capacity(pools.len());
    // Which pool (index into `out`, or `out.len()` for the one being checked) holds each device,
    // by inventory position: no id is hashed or cloned twice.
    let mut owner: Vec<Option<usize>> = vec![None; inventory.len()];
    let mut out: Vec<Pool> = Vec::with_capacity(pools.len());
    let mut withheld = Vec::new();
    for pool in pools {
        resource_name(&pool.resource_name)?;
        if !names.insert(pool.resource_name.clone()) {
            return Err(ResultError::DuplicatePool(guest_text(&pool.resource_name)));
        }
        let this_pool = out.len();
        let device_type = match pool.device_type {
            wit::DeviceType::NetDevice => DeviceType::NetDevice,
            wit::DeviceType::Accelerator => DeviceType::Accelerator,
            wit::DeviceType::AuxNetDevice => DeviceType::AuxNetDevice,
        };
        let mut devices = Vec::with_capacity(pool.devices.len());
        for member in pool.devices {
            let known = inventory.position(&member.id).and_then(|position| {
                Some((inventory.devices().get(position)?, owner.get_mut(position)?))
            });
            let Some((device, slot)) = known else {
                return Err(ResultError::UnknownDevice {
                    pool: guest_text(&pool.resource_name),
                    device: guest_text(&member.id),
                });
            };
            let is_aux = device.kind == wit::DeviceKind::Aux;
            if is_aux != (device_type == DeviceType::AuxNetDevice) {
                return Err(ResultError::WrongDeviceType {
                    pool: guest_text(&pool.resource_name),
                    device_type,
                    device: guest_text(&member.id),
                    what: if is_aux {
                        "an auxiliary device"
                    } else {
                        "a PCI function"
                    },
                });
            }
            if let Some(first) = *slot {
                let first = out
                    .get(first)
                    .map_or(&pool.resource_name, |p| &p.resource_name);
                return Err(ResultError::DeviceInTwoPools {
                    device: guest_text(&member.id),
                    first: guest_text(first),
                    second: guest_text(&pool.resource_name),
                });
            }
            *slot = Some(this_pool);
            if let Some(info) = &member.additional_info {
                let too_long = |s: &String| s.len() > MAX_INFO_BYTES;
                if info.len() > MAX_INFO_PAIRS
                    || info.iter().any(|(k, v)| too_long(k) || too_long(v))
                {
                    return Err(ResultError::InfoTooLarge {
                        pool: guest_text(&pool.resource_name),
                        device: guest_text(&member.id),
                    });
                }
            }
            // Checked last: the result is otherwise valid with it (it counts as placed, so it
            // cannot be in a second pool either).
            if let Some(why) = needed_by_the_node(device, device_type) {
                withheld.push(Withheld {
                    pool: guest_text(&pool.resource_name),
                    device: guest_text(&member.id),
                    why,
                });
                continue;
            }
            devices.push(PoolDevice {
                id: member.id,
                rdma: member.rdma,
                vhost_net: member.vhost_net,
                vdpa_type: member.vdpa_type.map(|t| match t {
                    wit::VdpaType::Vhost => VdpaType::Vhost,
                    wit::VdpaType::Virtio => VdpaType::Virtio,
                }),
                additional_info: member.additional_info,
            });
        }
        out.push(Pool {
            resource_name: pool.resource_name,
            device_type,
            exclude_topology: pool.exclude_topology,
            devices,
        });
    }
    Ok((out, withheld))
}

/// Kubernetes extended resource names: `<DNS subdomain>/<name>`, the name at most 63 characters of
/// alphanumerics, `-`, `_`, `.`, alphanumeric at both ends; not in the `kubernetes.io` namespace.
pub fn resource_name(name: &str) -> Result<(), ResultError> {
    let bad = |reason: &str| ResultError::BadResourceName {
        name: guest_text(name),
        reason: reason.to_string(),
    };
    let Some((prefix, short)) = name.split_once('/') else {
        return Err(bad(
            "it needs a prefix: <domain>/<name>, such as intel.com/sriov",
        ));
    };
    // kubelet's `IsDNS1123Subdomain` checks each label's characters but not its length (for
    // historical reasons, its source says): a 64-character label is accepted.
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    // kubelet checks `requests.<name>` as a qualified name: its prefix, 9 characters longer, must
    // fit in 253.
    if prefix.len() > 244 || !prefix.split('.').all(label_ok) {
        return Err(bad(
            "the prefix must be a lower-case DNS name of at most 244 characters",
        ));
    }
    // kubelet's rules (`IsExtendedResourceName`): a name containing `kubernetes.io/` is native
    // (so `xkubernetes.io/` too), and the `requests.` prefix is the quota syntax.
    if prefix.ends_with("kubernetes.io") {
        return Err(bad(
            "kubelet reserves names containing \"kubernetes.io/\" for native resources",
        ));
    }
    if prefix.starts_with("requests.") {
        return Err(bad("kubelet refuses names starting with \"requests.\""));
    }
    let alnum = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_alphanumeric());
    if short.is_empty()
        || short.len() > 63
        || !short
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        || !alnum(short.bytes().next())
        || !alnum(short.bytes().last())
    {
        return Err(bad(
            "the name must be at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit",
        ));
    }
    Ok(())
}

/// Builds the WIT request from ids, checking the caller's side of the contract. The request
/// borrows the inventory's records and the caller's must-include ids: nothing is cloned per
/// candidate on kubelet's path.
///
/// Candidates carry only what placement decides on (NUMA node, parent PF, VF index), with each
/// parent PF listed once: lowering a full device record into the guest costs ~1.5 µs (a guest
/// `realloc` per string and list), which over a 1,024-device pool would dominate kubelet's
/// GetPreferredAllocation.
pub fn allocation_request<'a>(
    inventory: &'a PolicyInventory,
    pool: &'a str,
    available: &[String],
    must_include: &'a [String],
    size: u32,
) -> Result<AllocationRequest<'a>, RequestError> {
    let mut positions = Vec::with_capacity(available.len());
    for id in available {
        positions.push(
            inventory
                .position(id)
                .ok_or_else(|| RequestError::UnknownAvailable(id.clone()))?,
        );
    }
    // The inventory is sorted by id (`PolicyInventory::new`), so sorting positions sorts by id
    // without comparing strings.
    positions.sort_unstable();
    positions.dedup();
    let all = inventory.devices();
    let devices: Vec<&'a wit::Device> = positions.iter().filter_map(|&i| all.get(i)).collect();
    // Kubelet never repeats a must-include id, but a request is input: an id twice counts once.
    let mut seen: HashSet<&str> = HashSet::with_capacity(must_include.len());
    let must_include: Vec<&'a str> = must_include
        .iter()
        .map(String::as_str)
        .filter(|id| seen.insert(id))
        .collect();
    if must_include.len() > size as usize {
        return Err(RequestError::MustIncludeExceedsSize {
            must_include: must_include.len(),
            size,
        });
    }
    if let Some(missing) = must_include
        .iter()
        .find(|id| devices.binary_search_by(|d| d.id.as_str().cmp(id)).is_err())
    {
        return Err(RequestError::MustIncludeNotAvailable(missing.to_string()));
    }
    if size as usize > devices.len() {
        return Err(RequestError::TooFew {
            size,
            available: devices.len(),
        });
    }

    // The parents of the available devices, in the inventory's order (by id), renumbered densely.
    let mut used = vec![false; inventory.parents().len()];
    for &position in &positions {
        if let Some(parent) = inventory.parent_of(position)
            && let Some(used) = used.get_mut(parent)
        {
            *used = true;
        }
    }
    let mut pfs: Vec<ParentPf<'a>> = Vec::new();
    let mut parent_slot: Vec<Option<u32>> = vec![None; used.len()];
    for ((slot, parent), used) in parent_slot.iter_mut().zip(inventory.parents()).zip(used) {
        if used {
            *slot = u32::try_from(pfs.len()).ok();
            pfs.push(ParentPf {
                id: &parent.id,
                name: parent.name.as_deref(),
                numa_node: parent.numa_node,
            });
        }
    }
    let available = positions
        .iter()
        .zip(&devices)
        .map(|(&position, d)| Candidate {
            id: &d.id,
            numa_node: d.numa_node,
            pf: inventory
                .parent_of(position)
                .and_then(|parent| parent_slot.get(parent).copied().flatten()),
            vf_index: d.vf_index,
            sf_num: d.sf_num,
        })
        .collect();
    Ok(AllocationRequest {
        pool,
        available,
        pfs,
        must_include,
        size,
    })
}

/// Checks an allocator's answer against its request.
pub fn preference(
    ids: Vec<String>,
    request: &AllocationRequest<'_>,
) -> Result<Vec<String>, ResultError> {
    let want = request.size as usize;
    if ids.len() != want {
        return Err(ResultError::WrongCount {
            got: ids.len(),
            want,
        });
    }
    // `allocation_request` sorted the candidates by id.
    let offered = |id: &str| request.available.binary_search_by(|c| c.id.cmp(id)).is_ok();
    let mut seen: HashSet<&str> = HashSet::with_capacity(ids.len());
    for id in &ids {
        if !offered(id) {
            return Err(ResultError::NotAvailable(guest_text(id)));
        }
        if !seen.insert(id.as_str()) {
            return Err(ResultError::Repeated(guest_text(id)));
        }
    }
    if let Some(missing) = request.must_include.iter().find(|id| !seen.contains(*id)) {
        return Err(ResultError::MissingMustInclude(missing.to_string()));
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::HostFacts;
    use vfpool_sysfs::{Device, DeviceKind, Inventory};

    fn vf(id: &str, pf_id: &str, pf_name: &str, index: u32, numa: u32) -> Device {
        let mut d = Device::unknown(id, DeviceKind::Vf);
        d.pf_id = Some(pf_id.into());
        d.pf_name = Some(pf_name.into());
        d.vf_index = Some(index);
        d.numa_node = Some(numa);
        d
    }

    /// A PF with a netdev and two VFs, and a VF whose PF is not in the inventory.
    fn inventory() -> PolicyInventory {
        let mut pf = Device::unknown("0000:3b:00.0", DeviceKind::Pf);
        pf.netdev = Some("ens1f0".into());
        pf.numa_node = Some(1);
        let devices = vec![
            pf,
            vf("0000:3b:00.2", "0000:3b:00.0", "ens1f0", 0, 1),
            vf("0000:3b:00.3", "0000:3b:00.0", "ens1f0", 1, 1),
            vf("0000:5e:00.2", "0000:5e:00.0", "ens2f0", 0, 0),
        ];
        let inventory = Inventory {
            devices,
            node: Default::default(),
        };
        PolicyInventory::new(&inventory, &HostFacts::default())
    }

    /// An inventory built in any order (a test's, an API user's) still gives candidates in id
    /// order: `PolicyInventory::new` sorts what discovery did not.
    #[test]
    fn candidates_are_in_id_order_whatever_the_inventory_order() {
        let mut devices = vec![
            vf("0000:5e:00.2", "0000:5e:00.0", "ens2f0", 0, 0),
            vf("0000:3b:00.3", "0000:3b:00.0", "ens1f0", 1, 1),
            vf("0000:3b:00.2", "0000:3b:00.0", "ens1f0", 0, 1),
        ];
        devices.push(Device::unknown("0000:3b:00.0", DeviceKind::Pf));
        let inventory = PolicyInventory::new(
            &Inventory {
                devices,
                node: Default::default(),
            },
            &HostFacts::default(),
        );
        let request = allocation_request(
            &inventory,
            "p",
            &ids(&["0000:5e:00.2", "0000:3b:00.2", "0000:3b:00.3"]),
            &[],
            1,
        )
        .unwrap();
        let got: Vec<&str> = request.available.iter().map(|c| c.id).collect();
        assert_eq!(got, ["0000:3b:00.2", "0000:3b:00.3", "0000:5e:00.2"]);
        assert_eq!(
            inventory.devices()[inventory.position("0000:5e:00.2").unwrap()].id,
            "0000:5e:00.2"
        );
    }

    /// Guest text is cut at a character boundary with the cut marked, and nothing in it can
    /// start a new log line or steer a terminal.
    #[test]
    fn guest_text_is_bounded_escaped_and_marked() {
        assert_eq!(guest_text("plain text"), "plain text");
        assert_eq!(
            guest_text("a\nb\r\u{1b}[31m\u{2028}\u{202e}"),
            "a\\nb\\r\\u{1b}[31m\\u{2028}\\u{202e}"
        );
        let long = "é".repeat(MAX_GUEST_TEXT_BYTES);
        let cut = guest_text(&long);
        assert!(cut.len() <= MAX_GUEST_TEXT_BYTES + '…'.len_utf8());
        assert!(cut.ends_with("é…"), "{cut}");
        let newlines = guest_text(&"\n".repeat(10 * MAX_GUEST_TEXT_BYTES));
        assert!(newlines.len() <= MAX_GUEST_TEXT_BYTES + '…'.len_utf8());
        assert!(!newlines.contains('\n'));
    }

    /// An id a policy made up is echoed in the error bounded and on one line.
    #[test]
    fn a_refused_preference_echoes_a_bounded_id() {
        let inventory = inventory();
        let request = allocation_request(&inventory, "p", &ids(&["0000:3b:00.2"]), &[], 1).unwrap();
        let forged = "x\nERROR forged\n".repeat(1 << 16);
        let error = preference(vec![forged], &request).unwrap_err();
        let text = error.to_string();
        assert!(matches!(error, ResultError::NotAvailable(_)));
        assert!(text.len() < 2 * MAX_GUEST_TEXT_BYTES, "{}", text.len());
        assert!(!text.contains('\n'), "{text}");
    }

    fn ids(available: &[&str]) -> Vec<String> {
        available.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn allocation_request_lists_each_parent_pf_once_and_sorts_candidates() {
        let available = ids(&[
            "0000:5e:00.2",
            "0000:3b:00.3",
            "0000:3b:00.2",
            "0000:3b:00.3",
        ]);
        let inventory = inventory();
        let must = ids(&["0000:3b:00.3"]);
        let request = allocation_request(&inventory, "intel.com/x", &available, &must, 2).unwrap();
        let got: Vec<_> = request
            .available
            .iter()
            .map(|c| (c.id, c.numa_node, c.pf, c.vf_index))
            .collect();
        assert_eq!(
            got,
            [
                ("0000:3b:00.2", Some(1), Some(0), Some(0)),
                ("0000:3b:00.3", Some(1), Some(0), Some(1)),
                ("0000:5e:00.2", Some(0), Some(1), Some(0)),
            ]
        );
        let pfs: Vec<_> = request
            .pfs
            .iter()
            .map(|p| (p.id, p.name, p.numa_node))
            .collect();
        // The PF outside the inventory still gets the name its VF knows.
        assert_eq!(
            pfs,
            [
                ("0000:3b:00.0", Some("ens1f0"), Some(1)),
                ("0000:5e:00.0", Some("ens2f0"), None),
            ]
        );
        assert_eq!(request.must_include, ["0000:3b:00.3"]);
    }

    #[test]
    fn allocation_request_refuses_what_the_caller_got_wrong() {
        let inventory = inventory();
        let unknown = allocation_request(&inventory, "p", &ids(&["0000:99:00.2"]), &[], 1);
        assert!(matches!(unknown, Err(RequestError::UnknownAvailable(id)) if id == "0000:99:00.2"));
        let must_ids = ids(&["0000:3b:00.3"]);
        let must = allocation_request(&inventory, "p", &ids(&["0000:3b:00.2"]), &must_ids, 1);
        assert!(matches!(
            must,
            Err(RequestError::MustIncludeNotAvailable(_))
        ));
        // A repeated id counts once.
        let too_few = allocation_request(
            &inventory,
            "p",
            &ids(&["0000:3b:00.2", "0000:3b:00.2"]),
            &[],
            2,
        );
        assert!(matches!(
            too_few,
            Err(RequestError::TooFew {
                size: 2,
                available: 1
            })
        ));
        // A repeated must-include id counts once; more distinct ones than `size` fit nowhere.
        let both = ids(&["0000:3b:00.2", "0000:3b:00.3"]);
        let twice = ids(&["0000:3b:00.3", "0000:3b:00.3"]);
        let repeated = allocation_request(&inventory, "p", &both, &twice, 1).unwrap();
        assert_eq!(repeated.must_include, ["0000:3b:00.3"]);
        let over = allocation_request(&inventory, "p", &both, &both, 1);
        assert!(matches!(
            over,
            Err(RequestError::MustIncludeExceedsSize {
                must_include: 2,
                size: 1
            })
        ));
    }

    #[test]
    fn preference_checks_against_the_sorted_candidates() {
        let inventory = inventory();
        let must = ids(&["0000:5e:00.2"]);
        let request = allocation_request(
            &inventory,
            "p",
            &ids(&["0000:5e:00.2", "0000:3b:00.2"]),
            &must,
            2,
        )
        .unwrap();
        let answer = ids(&["0000:5e:00.2", "0000:3b:00.2"]);
        assert_eq!(preference(answer.clone(), &request).unwrap(), answer);
        assert!(matches!(
            preference(ids(&["0000:3b:00.3", "0000:5e:00.2"]), &request),
            Err(ResultError::NotAvailable(_))
        ));
        assert!(matches!(
            preference(ids(&["0000:3b:00.2", "0000:3b:00.2"]), &request),
            Err(ResultError::Repeated(_))
        ));
        assert!(matches!(
            preference(ids(&["0000:3b:00.2"]), &request),
            Err(ResultError::WrongCount { got: 1, want: 2 })
        ));
    }

    fn wit_pool(name: &str, ids: &[&str]) -> wit::Pool {
        wit::Pool {
            resource_name: name.to_string(),
            device_type: wit::DeviceType::NetDevice,
            exclude_topology: false,
            devices: ids
                .iter()
                .map(|id| wit::PoolDevice {
                    id: id.to_string(),
                    rdma: false,
                    vhost_net: false,
                    vdpa_type: None,
                    additional_info: None,
                })
                .collect(),
        }
    }

    #[test]
    fn a_device_in_two_pools_names_both() {
        let inventory = inventory();
        let pools = vec![
            wit_pool("intel.com/a", &["0000:3b:00.2"]),
            wit_pool("intel.com/b", &["0000:3b:00.3", "0000:3b:00.2"]),
        ];
        match super::pools(pools, &inventory) {
            Err(ResultError::DeviceInTwoPools {
                device,
                first,
                second,
            }) => assert_eq!(
                (device.as_str(), first.as_str(), second.as_str()),
                ("0000:3b:00.2", "intel.com/a", "intel.com/b")
            ),
            other => panic!("{other:?}"),
        }
        let twice = vec![wit_pool("intel.com/a", &["0000:3b:00.2", "0000:3b:00.2"])];
        match super::pools(twice, &inventory) {
            Err(ResultError::DeviceInTwoPools { first, second, .. }) => {
                assert_eq!(
                    (first.as_str(), second.as_str()),
                    ("intel.com/a", "intel.com/a")
                )
            }
            other => panic!("{other:?}"),
        }
        let unknown = vec![wit_pool("intel.com/a", &["0000:99:00.2"])];
        assert!(matches!(
            super::pools(unknown, &inventory),
            Err(ResultError::UnknownDevice { .. })
        ));
        let fine = vec![
            wit_pool("intel.com/a", &["0000:3b:00.2"]),
            wit_pool("intel.com/b", &["0000:3b:00.3"]),
        ];
        let (checked, withheld) = super::pools(fine, &inventory).unwrap();
        assert_eq!(checked[1].devices[0].id, "0000:3b:00.3");
        assert!(withheld.is_empty());
    }

    /// The host keeps what the node needs out of network pools, whatever the policy: a selector
    /// that pooled the uplink (a device carrying the default route) or a PF with VFs enabled was
    /// accepted, and a pod given it cut the node, or every pod on the VFs, off the network. The
    /// device is left out and named; the rest of the result stands (refusing it would keep the
    /// previous pools, the device too). An accelerator pool keeps a PF with VFs, as upstream.
    #[test]
    fn network_pools_never_hold_what_the_node_needs() {
        let mut pf = Device::unknown("0000:3b:00.0", DeviceKind::Pf);
        pf.netdev = Some("ens1f0".into());
        pf.sriov_num_vfs = Some(2);
        let mut lone_pf = Device::unknown("0000:3b:00.1", DeviceKind::Pf);
        lone_pf.netdev = Some("ens1f1".into());
        lone_pf.sriov_num_vfs = Some(0);
        let mut uplink = Device::unknown("0000:5e:00.0", DeviceKind::Pf);
        uplink.netdevs = vec![vfpool_sysfs::Netdev {
            name: "eno1".into(),
            link_type: None,
            operstate: None,
            carrier: None,
            mac: None,
            mtu: None,
            phys_port_name: None,
            phys_switch_id: None,
            bond: None,
        }];
        let inventory = Inventory {
            devices: vec![
                pf,
                lone_pf,
                uplink,
                vf("0000:3b:00.2", "0000:3b:00.0", "ens1f0", 0, 1),
            ],
            node: Default::default(),
        };
        let facts = HostFacts {
            default_route_netdevs: ["eno1".to_string()].into(),
            ..HostFacts::default()
        };
        let inventory = PolicyInventory::new(&inventory, &facts);
        let pools = vec![
            wit_pool(
                "intel.com/a",
                &[
                    "0000:3b:00.2",
                    "0000:3b:00.0",
                    "0000:5e:00.0",
                    "0000:3b:00.1",
                ],
            ),
            wit_pool("intel.com/b", &["0000:5e:00.0"]),
        ];
        // The uplink is still "placed" by the first pool: in a second one it is the policy's
        // mistake, refused as ever.
        assert!(matches!(
            super::pools(pools, &inventory),
            Err(ResultError::DeviceInTwoPools { .. })
        ));
        let pools = vec![wit_pool(
            "intel.com/a",
            &[
                "0000:3b:00.2",
                "0000:3b:00.0",
                "0000:5e:00.0",
                "0000:3b:00.1",
            ],
        )];
        let (pools, withheld) = super::pools(pools, &inventory).unwrap();
        let ids: Vec<&str> = pools[0].devices.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["0000:3b:00.2", "0000:3b:00.1"]);
        let said: Vec<String> = withheld.iter().map(ToString::to_string).collect();
        assert_eq!(said.len(), 2, "{said:?}");
        assert!(
            said[0].contains(
                r#""0000:3b:00.0" out of pool "intel.com/a": it is a PF with VFs enabled"#
            ),
            "{said:?}"
        );
        assert!(
            said[1].contains(
                "\"0000:5e:00.0\" out of pool \"intel.com/a\": it carries the host's default route"
            ),
            "{said:?}"
        );
        // An accelerator pool keeps a PF with VFs (QAT, as upstream) but not the uplink: a policy
        // could otherwise hand it out by calling its pool an accelerator one.
        let mut accelerator = wit_pool("intel.com/qat", &["0000:3b:00.0", "0000:5e:00.0"]);
        accelerator.device_type = wit::DeviceType::Accelerator;
        let (pools, withheld) = super::pools(vec![accelerator], &inventory).unwrap();
        let ids: Vec<&str> = pools[0].devices.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["0000:3b:00.0"]);
        assert_eq!(withheld.len(), 1);
        assert_eq!(withheld[0].device, "0000:5e:00.0");
    }

    #[test]
    fn resource_names_follow_kubernetes_rules() {
        for ok in ["intel.com/sriov", "nvidia.com/bf2_sf", "a.b-c/x.y-z_0"] {
            assert!(resource_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "sriov",
            "Intel.com/sriov",
            "intel.com/",
            "intel.com/-x",
            "intel.com/a b",
            "kubernetes.io/x",
            "foo.kubernetes.io/x",
            "xkubernetes.io/x",
            "requests.intel.com/x",
            "intel.com/x/y",
        ] {
            assert!(resource_name(bad).is_err(), "{bad}");
        }
        // The longest prefix kubelet takes: `requests.<prefix>` within 253 characters.
        let label = "a".repeat(60);
        let longest = format!("{label}.{label}.{label}.{}", "b".repeat(61));
        assert_eq!(longest.len(), 244);
        assert!(resource_name(&format!("{longest}/x")).is_ok());
        assert!(resource_name(&format!("{longest}c/x")).is_err());
        // No limit on one label's length, as kubelet.
        assert!(resource_name(&format!("{}.com/x", "a".repeat(64))).is_ok());
    }
}
