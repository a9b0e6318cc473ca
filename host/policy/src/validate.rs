//! Every result a policy returns is hostile input: this module checks it before the agent uses it.
//!
//! Pools: unique, valid Kubernetes extended-resource names; every device id in the inventory, in at
//! most one pool, in a pool of a matching type; bounded sizes. Preferences: exactly the requested
//! number of distinct available ids with every must-include id among them.

use std::collections::{HashMap, HashSet};

use crate::bindings::wit;
use crate::convert::PolicyInventory;
use crate::model::{DeviceType, Pool, PoolDevice, VdpaType};

/// Most pools one selector may return (kubelet runs one plugin server per pool).
pub const MAX_POOLS: usize = 1024;
/// Most `additional-info` pairs per device.
pub const MAX_INFO_PAIRS: usize = 64;
/// Longest `additional-info` key or value, in bytes.
pub const MAX_INFO_BYTES: usize = 4096;

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
    /// More devices asked for than available.
    #[error("asked for {size} devices but only {available} are available")]
    TooFew {
        /// Requested.
        size: u32,
        /// Available.
        available: usize,
    },
}

/// Checks and converts a selector's pools.
pub fn pools(pools: Vec<wit::Pool>, inventory: &PolicyInventory) -> Result<Vec<Pool>, ResultError> {
    if pools.len() > MAX_POOLS {
        return Err(ResultError::TooManyPools { count: pools.len() });
    }
    let mut names: HashSet<String> = HashSet::with_capacity(pools.len());
    let mut owner: HashMap<String, String> = HashMap::new();
    let mut out = Vec::with_capacity(pools.len());
    for pool in pools {
        resource_name(&pool.resource_name)?;
        if !names.insert(pool.resource_name.clone()) {
            return Err(ResultError::DuplicatePool(pool.resource_name));
        }
        let device_type = match pool.device_type {
            wit::DeviceType::NetDevice => DeviceType::NetDevice,
            wit::DeviceType::Accelerator => DeviceType::Accelerator,
            wit::DeviceType::AuxNetDevice => DeviceType::AuxNetDevice,
        };
        let mut devices = Vec::with_capacity(pool.devices.len());
        for member in pool.devices {
            let Some(is_aux) = inventory.is_aux(&member.id) else {
                return Err(ResultError::UnknownDevice {
                    pool: pool.resource_name,
                    device: member.id,
                });
            };
            if is_aux != (device_type == DeviceType::AuxNetDevice) {
                return Err(ResultError::WrongDeviceType {
                    pool: pool.resource_name,
                    device_type,
                    device: member.id,
                    what: if is_aux {
                        "an auxiliary device"
                    } else {
                        "a PCI function"
                    },
                });
            }
            if let Some(first) = owner.get(&member.id) {
                return Err(ResultError::DeviceInTwoPools {
                    device: member.id,
                    first: first.clone(),
                    second: pool.resource_name,
                });
            }
            if let Some(info) = &member.additional_info {
                let too_long = |s: &String| s.len() > MAX_INFO_BYTES;
                if info.len() > MAX_INFO_PAIRS
                    || info.iter().any(|(k, v)| too_long(k) || too_long(v))
                {
                    return Err(ResultError::InfoTooLarge {
                        pool: pool.resource_name,
                        device: member.id,
                    });
                }
            }
            owner.insert(member.id.clone(), pool.resource_name.clone());
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
    Ok(out)
}

/// Kubernetes extended resource names: `<DNS subdomain>/<name>`, the name at most 63 characters of
/// alphanumerics, `-`, `_`, `.`, alphanumeric at both ends; not in the `kubernetes.io` namespace.
pub fn resource_name(name: &str) -> Result<(), ResultError> {
    let bad = |reason: &str| ResultError::BadResourceName {
        name: name.to_string(),
        reason: reason.to_string(),
    };
    let Some((prefix, short)) = name.split_once('/') else {
        return Err(bad(
            "it needs a prefix: <domain>/<name>, such as intel.com/sriov",
        ));
    };
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if prefix.len() > 253 || !prefix.split('.').all(label_ok) {
        return Err(bad("the prefix must be a lower-case DNS name"));
    }
    if prefix == "kubernetes.io" || prefix.ends_with(".kubernetes.io") {
        return Err(bad("the kubernetes.io namespace is reserved"));
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

/// Builds the WIT request from ids, checking the caller's side of the contract.
pub fn allocation_request(
    inventory: &PolicyInventory,
    pool: &str,
    available: &[String],
    must_include: &[String],
    size: u32,
) -> Result<wit::AllocationRequest, RequestError> {
    let mut devices = Vec::with_capacity(available.len());
    for id in available {
        let device = inventory
            .device(id)
            .ok_or_else(|| RequestError::UnknownAvailable(id.clone()))?;
        devices.push(device.clone());
    }
    if let Some(missing) = must_include.iter().find(|id| !available.contains(id)) {
        return Err(RequestError::MustIncludeNotAvailable(missing.clone()));
    }
    if size as usize > available.len() {
        return Err(RequestError::TooFew {
            size,
            available: available.len(),
        });
    }
    devices.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(wit::AllocationRequest {
        pool: pool.to_string(),
        available: devices,
        must_include: must_include.to_vec(),
        size,
    })
}

/// Checks an allocator's answer against its request.
pub fn preference(
    ids: Vec<String>,
    request: &wit::AllocationRequest,
) -> Result<Vec<String>, ResultError> {
    let want = request.size as usize;
    if ids.len() != want {
        return Err(ResultError::WrongCount {
            got: ids.len(),
            want,
        });
    }
    let available: HashSet<&str> = request.available.iter().map(|d| d.id.as_str()).collect();
    let mut seen: HashSet<&str> = HashSet::with_capacity(ids.len());
    for id in &ids {
        if !available.contains(id.as_str()) {
            return Err(ResultError::NotAvailable(id.clone()));
        }
        if !seen.insert(id.as_str()) {
            return Err(ResultError::Repeated(id.clone()));
        }
    }
    if let Some(missing) = request
        .must_include
        .iter()
        .find(|id| !seen.contains(id.as_str()))
    {
        return Err(ResultError::MissingMustInclude(missing.clone()));
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

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
            "intel.com/x/y",
        ] {
            assert!(resource_name(bad).is_err(), "{bad}");
        }
    }
}
