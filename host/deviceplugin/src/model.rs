//! The served model: pools as the selector policy returned them ([`vfpool_policy::Pool`]), resolved
//! against the inventory into members with their health. Independent of the v1beta1 wire types
//! (they are derived in `server.rs`), so a DRA driver can serve the same model later.

use std::collections::HashMap;
use std::sync::Arc;

use vfpool_policy::{DeviceType, PoolDevice};
use vfpool_sysfs::{Device, NodeFacts};

/// Whether kubelet may hand a device to a new pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Health {
    /// Usable.
    Healthy,
    /// Present in the pool but not usable now (PF link down, driver lost, vanished while in use).
    Unhealthy,
}

impl Health {
    /// The v1beta1 spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Healthy => vfpool_proto::deviceplugin::v1beta1::HEALTHY,
            Health::Unhealthy => vfpool_proto::deviceplugin::v1beta1::UNHEALTHY,
        }
    }
}

/// One advertised device: what discovery knows of it, what the pool asked for, its health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The discovered device (the last record seen, when it has vanished while in use).
    pub device: Device,
    /// The pool's Allocate hints for it.
    pub hints: PoolDevice,
    /// Current health.
    pub health: Health,
    /// Kept in this pool only because a pod uses it (the current pools would not put it here).
    pub held: bool,
}

impl Member {
    /// The device id.
    pub fn id(&self) -> &str {
        &self.device.id
    }
}

/// A pool as it is served at one moment: immutable, shared by every RPC and stream.
#[derive(Debug, Clone)]
pub struct PoolSnapshot {
    /// Full resource name (`intel.com/mlnx_sriov`).
    pub resource_name: String,
    /// How devices are handed out.
    pub device_type: DeviceType,
    /// Do not report NUMA topology (upstream `excludeTopology`, #320).
    pub exclude_topology: bool,
    /// Members sorted by id.
    pub members: Vec<Member>,
    /// Node facts at the time of the snapshot (`/dev/vhost-net`, `/dev/net/tun`).
    pub node: NodeFacts,
    index: HashMap<String, usize>,
}

impl PoolSnapshot {
    /// Builds a snapshot; members are sorted by id.
    pub fn new(
        resource_name: String,
        device_type: DeviceType,
        exclude_topology: bool,
        mut members: Vec<Member>,
        node: NodeFacts,
    ) -> Self {
        members.sort_by(|a, b| a.device.id.cmp(&b.device.id));
        members.dedup_by(|a, b| a.device.id == b.device.id);
        let index = members
            .iter()
            .enumerate()
            .map(|(i, m)| (m.device.id.clone(), i))
            .collect();
        PoolSnapshot {
            resource_name,
            device_type,
            exclude_topology,
            members,
            node,
            index,
        }
    }

    /// An empty snapshot for `resource_name` (what a stopping pool advertises last).
    pub fn empty(resource_name: &str, device_type: DeviceType) -> Self {
        PoolSnapshot::new(
            resource_name.to_string(),
            device_type,
            false,
            Vec::new(),
            NodeFacts::default(),
        )
    }

    /// The member with this id.
    pub fn get(&self, id: &str) -> Option<&Member> {
        self.index.get(id).and_then(|&i| self.members.get(i))
    }

    /// What kubelet sees: (id, health, NUMA node unless topology is excluded), in id order. Two
    /// snapshots with equal views need no ListAndWatch update.
    pub fn view(&self) -> Vec<(&str, Health, Option<u32>)> {
        self.members
            .iter()
            .map(|m| {
                (
                    m.id(),
                    m.health,
                    if self.exclude_topology {
                        None
                    } else {
                        m.device.numa_node
                    },
                )
            })
            .collect()
    }

    /// Number of healthy members.
    pub fn healthy(&self) -> usize {
        self.members
            .iter()
            .filter(|m| m.health == Health::Healthy)
            .count()
    }
}

/// A shared snapshot.
pub type Snapshot = Arc<PoolSnapshot>;
