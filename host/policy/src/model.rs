//! Host-side results of policy calls, independent of the WIT bindings and of any wire format
//! (kubelet v1beta1, DRA), so the agent can derive each of those from them.

use std::fmt;

/// The operator's settings handed to every policy call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The configuration text, verbatim (the upstream device plugin's `config.json`).
    pub config: String,
    /// Prefix for resources that do not name one (`--resource-prefix`, default `intel.com`).
    pub default_resource_prefix: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            config: String::new(),
            default_resource_prefix: "intel.com".to_string(),
        }
    }
}

/// How a pool's devices are handed to pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceType {
    /// PCI network function.
    NetDevice,
    /// PCI accelerator.
    Accelerator,
    /// Auxiliary network device (sub-function).
    AuxNetDevice,
}

impl DeviceType {
    /// The upstream spelling (`netDevice`, `accelerator`, `auxNetDevice`).
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceType::NetDevice => "netDevice",
            DeviceType::Accelerator => "accelerator",
            DeviceType::AuxNetDevice => "auxNetDevice",
        }
    }
}

impl fmt::Display for DeviceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The vDPA bus driver a pool hands out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VdpaType {
    /// `vhost_vdpa`.
    Vhost,
    /// `virtio_vdpa`.
    Virtio,
}

/// A pool member and its Allocate hints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolDevice {
    /// Device id (PCI address or auxiliary device name), present in the inventory.
    pub id: String,
    /// Mount the device's RDMA character devices.
    pub rdma: bool,
    /// Mount `/dev/vhost-net` and `/dev/net/tun`.
    pub vhost_net: bool,
    /// Hand out the device's vDPA device of this type.
    pub vdpa_type: Option<VdpaType>,
    /// Extra `_INFO` key/values (provider `extra`); `Some(empty)` still emits `"extra":{}`.
    pub additional_info: Option<Vec<(String, String)>>,
}

/// One schedulable resource, as a selector policy returned it (after validation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    /// Full resource name (`intel.com/mlnx_sriov`).
    pub resource_name: String,
    /// Device type.
    pub device_type: DeviceType,
    /// Do not report NUMA topology.
    pub exclude_topology: bool,
    /// Members, no device twice, each in the inventory.
    pub devices: Vec<PoolDevice>,
}

/// A line a policy logged during a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// `trace`, `debug`, `info`, `warn` or `error`.
    pub level: &'static str,
    /// The message: cut to the host's limit, control characters (newlines) escaped.
    pub message: String,
}

/// A successful call's value plus what the policy logged on the way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome<T> {
    /// The validated result.
    pub value: T,
    /// Log lines, up to the host's limit.
    pub logs: Vec<LogLine>,
    /// Log lines dropped beyond the limit.
    pub logs_dropped: usize,
}
