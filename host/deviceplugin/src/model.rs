//! The served model: pools as the selector policy returned them ([`vfpool_policy::Pool`]), resolved
//! against the inventory into members with their health. Independent of the v1beta1 wire types
//! (they are derived in `server.rs`), so a DRA driver can serve the same model later.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use rustc_hash::FxHashMap;
use vfpool_policy::{DeviceType, PoolDevice};
use vfpool_sysfs::{Device, NodeFacts, SysfsRoot};

use crate::allocate::{self, Prepared};

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
    /// Id → position. FxHash: its keys are the pool's own ids (from sysfs); a request's ids are
    /// only looked up, which crafted ids cannot slow down. Looked up for every id of every
    /// GetPreferredAllocation: steering one 1,024-id request clear of non-members took 38 us with
    /// SipHash, 7 us with FxHash.
    index: FxHashMap<String, usize>,
    /// Per member: its PF's rank among the members' PFs in address order; a member without a PF
    /// ranks after every PF, on its own (see [`Self::pf_rank`]).
    pf_ranks: Vec<u64>,
    /// Per member: its Allocate answer, once [`Self::prepare`] ran (empty before).
    prepared: Vec<Option<Prepared>>,
    /// Members that left the pool a moment ago, are still on the node and in no pool now (see
    /// [`Self::keep_departed`]), by id.
    departed: FxHashMap<String, Departed>,
}

/// A member that left its pool a moment ago, as Allocate may still grant it.
#[derive(Debug, Clone)]
struct Departed {
    member: Member,
    prepared: Option<Prepared>,
    /// The end of the time in which kubelet may still ask for it.
    until: Instant,
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
        let pfs: std::collections::BTreeSet<&str> = members
            .iter()
            .filter_map(|m| m.device.pf_id.as_deref())
            .collect();
        let rank: HashMap<&str, u64> = pfs.iter().zip(0u64..).map(|(pf, i)| (*pf, i)).collect();
        let pf_ranks = members
            .iter()
            .zip(0u64..)
            .map(|(m, position)| {
                m.device
                    .pf_id
                    .as_deref()
                    .and_then(|pf| rank.get(pf).copied())
                    .unwrap_or(rank.len() as u64 + position)
            })
            .collect();
        PoolSnapshot {
            resource_name,
            device_type,
            exclude_topology,
            members,
            node,
            index,
            pf_ranks,
            prepared: Vec::new(),
            departed: FxHashMap::default(),
        }
    }

    /// Keeps the members of `before` (this pool's previous snapshot) that are not members of this
    /// one and that `in_no_pool` says are in no pool now and still on the node as they were (the
    /// same driver: one rebound to another is not what the kept answer grants), with their
    /// Allocate answers, for Allocate to grant until `until` ([`Self::for_allocate`]); with those
    /// `before` kept itself that are still in time at `now`.
    ///
    /// Why: kubelet picks a pod's devices from the last list it got, then asks for them in calls
    /// of their own (GetPreferredAllocation, Allocate) without holding its lock, so a new list
    /// can arrive in between; an Allocate for a device that has just left the pool used to be
    /// refused, and the pod failed admission for good. Such a device is in no pool while it
    /// settles ([`crate::PluginConfig::move_settle`]), so granting it is safe while `until` leaves
    /// that settle time room to see the pod in PodResources, which then keeps the device here.
    pub fn keep_departed(
        &mut self,
        before: &PoolSnapshot,
        in_no_pool: impl Fn(&Member) -> bool,
        until: Instant,
        now: Instant,
    ) {
        let departed_now = before
            .members
            .iter()
            .enumerate()
            .map(|(position, member)| (member, before.prepared(position), until));
        let departed_before = before
            .departed
            .values()
            .filter(|d| d.until > now)
            .map(|d| (&d.member, d.prepared.as_ref(), d.until));
        for (member, prepared, until) in departed_now.chain(departed_before) {
            let id = member.id();
            if self.index.contains_key(id) || self.departed.contains_key(id) || !in_no_pool(member)
            {
                continue;
            }
            self.departed.insert(
                id.to_owned(),
                Departed {
                    member: member.clone(),
                    prepared: prepared.cloned(),
                    until,
                },
            );
        }
    }

    /// What Allocate grants for `id` at `now`: the member with this id and its prepared answer, or
    /// one that left the pool a moment ago ([`Self::keep_departed`]) while still in time (the
    /// `bool` says which).
    pub fn for_allocate(
        &self,
        id: &str,
        now: Instant,
    ) -> Option<(&Member, Option<&Prepared>, bool)> {
        if let Some(position) = self.position(id) {
            let member = self.members.get(position)?;
            return Some((member, self.prepared(position), false));
        }
        self.departed
            .get(id)
            .filter(|d| d.until > now)
            .map(|d| (&d.member, d.prepared.as_ref(), true))
    }

    /// The member with this id, or one that left the pool a moment ago and is still kept for
    /// Allocate ([`Self::keep_departed`]), in time or not: what the pool knew of it.
    pub fn get_or_departed(&self, id: &str) -> Option<&Member> {
        self.get(id)
            .or_else(|| self.departed.get(id).map(|d| &d.member))
    }

    /// Computes every member's Allocate answer ahead of the calls, so Allocate only looks it up.
    /// Done on every publish, also for members that did not change: an RDMA member's character
    /// devices (`/dev/infiniband/uverbsN`, `umadN`, ...) are read from `sysfs` here and are not
    /// part of the device record (a driver rebind can renumber them unseen), and for the others
    /// the answer is computed in memory, about what comparing it with the previous one would cost.
    /// An RDMA member whose RDMA device was not visible (in a pod's network namespace) is answered
    /// from sysfs at Allocate instead ([`Prepared::recheck_rdma`]).
    pub fn prepare(&mut self, sysfs: &SysfsRoot) {
        self.prepared = self
            .members
            .iter()
            .map(|member| allocate::prepare(member, self.device_type, &self.node, sysfs))
            .collect();
    }

    /// The prepared Allocate answer of the member at `position`, if [`Self::prepare`] made one.
    pub fn prepared(&self, position: usize) -> Option<&Prepared> {
        self.prepared.get(position).and_then(Option::as_ref)
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

    /// The position of `id` in [`Self::members`].
    pub fn position(&self, id: &str) -> Option<usize> {
        self.index.get(id).copied()
    }

    /// The PF rank of the member at `position`: members of one PF share it, PFs rank in address
    /// order, and a member without a PF has a rank of its own after every PF's.
    pub fn pf_rank(&self, position: usize) -> Option<u64> {
        self.pf_ranks.get(position).copied()
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

#[cfg(test)]
mod tests {
    use vfpool_policy::PoolDevice;
    use vfpool_sysfs::DeviceKind;

    use super::*;

    fn member(id: &str, numa: Option<u32>, health: Health) -> Member {
        let mut device = Device::unknown(id, DeviceKind::Vf);
        device.numa_node = numa;
        Member {
            hints: PoolDevice {
                id: id.to_string(),
                rdma: false,
                vhost_net: false,
                vdpa_type: None,
                additional_info: None,
            },
            device,
            health,
            held: false,
        }
    }

    #[test]
    fn the_view_is_sorted_and_exclude_topology_drops_numa() {
        let members = vec![
            member("b", Some(1), Health::Unhealthy),
            member("a", Some(0), Health::Healthy),
            member("c", None, Health::Healthy),
        ];
        let pool = PoolSnapshot::new(
            "x.io/p".into(),
            DeviceType::NetDevice,
            false,
            members.clone(),
            NodeFacts::default(),
        );
        assert_eq!(
            pool.view(),
            [
                ("a", Health::Healthy, Some(0)),
                ("b", Health::Unhealthy, Some(1)),
                ("c", Health::Healthy, None)
            ]
        );
        assert_eq!(pool.healthy(), 2);
        let excluded = PoolSnapshot::new(
            "x.io/p".into(),
            DeviceType::NetDevice,
            true,
            members,
            NodeFacts::default(),
        );
        assert!(excluded.view().iter().all(|(_, _, numa)| numa.is_none()));
    }

    /// Members that left are kept for Allocate until their time is up, and only those in no pool
    /// now: not one still a member, not one another pool took or that is gone from the node. A
    /// later snapshot keeps them for what is left of their time, not longer; they are never
    /// advertised.
    #[test]
    fn departed_members_are_grantable_for_a_while_only() {
        let pool = |ids: &[&str]| {
            PoolSnapshot::new(
                "x.io/p".into(),
                DeviceType::NetDevice,
                false,
                ids.iter()
                    .map(|id| member(id, None, Health::Healthy))
                    .collect(),
                NodeFacts::default(),
            )
        };
        let start = Instant::now();
        let until = start + std::time::Duration::from_secs(10);
        let before = pool(&["a", "b", "c", "d"]);
        let mut next = pool(&["a"]);
        // "c" joined another pool, "d" is gone from the node.
        next.keep_departed(&before, |m| m.id() == "b", until, start);
        assert!(next.get("b").is_none());
        assert_eq!(next.view().len(), 1);
        assert!(matches!(next.for_allocate("a", start), Some((m, _, false)) if m.id() == "a"));
        assert!(matches!(next.for_allocate("b", start), Some((m, _, true)) if m.id() == "b"));
        assert!(next.for_allocate("c", start).is_none());
        assert!(next.for_allocate("d", start).is_none());
        assert!(next.for_allocate("b", until).is_none(), "past its time");
        assert_eq!(next.get_or_departed("b").map(Member::id), Some("b"));

        // The next snapshot (a rescan soon after) keeps "b" for what is left of its time.
        let later = start + std::time::Duration::from_secs(4);
        let mut after = pool(&["a"]);
        after.keep_departed(
            &next,
            |_| true,
            later + std::time::Duration::from_secs(10),
            later,
        );
        assert!(
            after
                .for_allocate("b", until - std::time::Duration::from_millis(1))
                .is_some()
        );
        assert!(
            after.for_allocate("b", until).is_none(),
            "kept past its time"
        );
        // Past its time when the snapshot is made: not kept at all.
        let mut late = pool(&["a"]);
        late.keep_departed(
            &next,
            |_| true,
            until + std::time::Duration::from_secs(10),
            until,
        );
        assert!(late.get_or_departed("b").is_none());
        // Back in the pool: a member again, not a departed one.
        let mut back = pool(&["a", "b"]);
        back.keep_departed(&next, |_| true, until, start);
        assert!(matches!(back.for_allocate("b", start), Some((_, _, false))));
    }

    /// A dell-cx5 tree in a temporary directory, its root, and a member builder for its devices.
    fn cx5() -> (tempfile::TempDir, SysfsRoot, vfpool_sysfs::Inventory) {
        let tmp = tempfile::tempdir().unwrap();
        let fixture = vfpool_sysfs::sim::Fixture::load("dell-cx5").unwrap();
        vfpool_sysfs::sim::write_tree(&fixture, tmp.path()).unwrap();
        let root = SysfsRoot::new(tmp.path());
        let inventory = vfpool_sysfs::discover(&root).unwrap();
        (tmp, root, inventory)
    }

    fn snapshot(members: Vec<Member>) -> PoolSnapshot {
        PoolSnapshot::new(
            "x.io/p".into(),
            DeviceType::NetDevice,
            false,
            members,
            NodeFacts::default(),
        )
    }

    const IDS: [&str; 2] = ["0000:3b:00.2", "0000:3b:00.3"];

    /// Only a prepared snapshot has answers, one per member.
    #[test]
    fn prepare_answers_every_member() {
        let (_tmp, root, inventory) = cx5();
        let plain = |id: &str| {
            let mut m = member(id, Some(0), Health::Healthy);
            m.device = inventory.get(id).unwrap().clone();
            m
        };
        let mut pool = snapshot(IDS.iter().map(|id| plain(id)).collect());
        assert!(pool.prepared(0).is_none());
        pool.prepare(&root);
        assert!(pool.prepared(0).is_some() && pool.prepared(1).is_some());
        assert!(pool.prepared(2).is_none());
    }

    /// An RDMA member's character devices are read again on every prepare, even when its record
    /// and hints are unchanged: a rebind can renumber `uverbsN`/`umadN` without the record showing it.
    #[test]
    fn prepare_rereads_rdma_character_devices_of_unchanged_members() {
        let (tmp, root, inventory) = cx5();
        let rdma = |id: &str| {
            let mut m = member(id, Some(0), Health::Healthy);
            m.device = inventory.get(id).unwrap().clone();
            m.hints.rdma = true;
            m
        };
        let hosts = |s: &PoolSnapshot, i: usize| -> Vec<String> {
            let mut paths: Vec<String> = s
                .prepared(i)
                .unwrap()
                .grant
                .specs
                .iter()
                .map(|(host, _)| host.clone())
                .collect();
            paths.sort();
            paths
        };
        let mut first = snapshot(IDS.iter().map(|id| rdma(id)).collect());
        first.prepare(&root);
        let before = hosts(&first, 0);
        assert!(
            before
                .iter()
                .any(|p| p.starts_with("/dev/infiniband/uverbs")),
            "{before:?}"
        );

        // The driver is rebound and the kernel numbers the character devices anew; the device
        // record (what discovery reads) stays the same.
        let dir = tmp.path().join("bus/pci/devices").join(IDS[0]);
        let mut renamed = Vec::new();
        for class in ["infiniband_verbs", "infiniband_mad", "infiniband_cm"] {
            let Ok(entries) = std::fs::read_dir(dir.join(class)) else {
                continue;
            };
            for entry in entries {
                let entry = entry.unwrap();
                let name = entry.file_name().into_string().unwrap();
                let stem = name.trim_end_matches(|c: char| c.is_ascii_digit());
                let fresh = format!("{stem}77");
                std::fs::rename(entry.path(), dir.join(class).join(&fresh)).unwrap();
                renamed.push(format!("/dev/infiniband/{fresh}"));
            }
        }
        assert!(
            renamed.iter().any(|p| p.ends_with("uverbs77")),
            "{renamed:?}"
        );
        let rediscovered = vfpool_sysfs::discover(&root).unwrap();
        assert_eq!(rediscovered.get(IDS[0]), inventory.get(IDS[0]));

        let mut next = snapshot(IDS.iter().map(|id| rdma(id)).collect());
        next.prepare(&root);
        let after = hosts(&next, 0);
        for path in &renamed {
            assert!(after.contains(path), "{path} missing from {after:?}");
        }
        assert!(
            before
                .iter()
                .all(|p| !after.contains(p) || p.ends_with("rdma_cm")),
            "stale character devices kept: {after:?}"
        );
        // The other member's devices did not change.
        assert_eq!(hosts(&next, 1), hosts(&first, 1));
    }
}
