//! From the pools the selector policy wants to what is served, without ever breaking a pod:
//!
//! - a device is advertised in at most one pool (the first pool that lists it wins);
//! - a device a pod uses (kubelet's PodResources) stays in the pool it was allocated from, even
//!   when the policy now puts it elsewhere or nowhere, even when it vanished (then Unhealthy), and
//!   is not advertised in any other pool until the pod releases it;
//! - a pool that no longer exists keeps being served while one of its devices is in use;
//! - a device held that way is advertised with its real health: kubelet never hands a device it
//!   has allocated to another pod, and an Unhealthy one would fail the pod's admission when
//!   kubelet restarts while its container is not running ("previously allocated devices are no
//!   longer healthy"), and lower the pool's allocatable below what its pods hold;
//! - a free device the policy moves from one pool to another moves in two plans: this one
//!   withdraws it from its old pool, the next one (after kubelet has stopped offering it there,
//!   and after an Allocate already under way shows up in PodResources) places it in the new one.
//!
//! Pure: the caller supplies the PodResources view and the previous plan.

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use vfpool_policy::{Pool, PoolDevice};
use vfpool_sysfs::Inventory;

use crate::health;
use crate::logs::Ids;
use crate::model::{Health, Member, PoolSnapshot};

/// Devices kubelet reports as assigned to pods: resource name → device ids.
pub type InUse = BTreeMap<String, BTreeSet<String>>;

/// The outcome of [`plan`]: the pools to serve and what to tell the operator.
#[derive(Debug, Default)]
pub struct Plan {
    /// Pools to serve, by resource name.
    pub pools: BTreeMap<String, PoolSnapshot>,
    /// Decisions worth a log line (held devices, duplicates dropped).
    pub notes: Vec<String>,
    /// Devices withdrawn from the pool they were served in because the policy now puts them in
    /// another: a later plan places them there. Plan again soon.
    pub withdrawn: Vec<String>,
}

/// Plans the served pools. `previous` is what is served now (by resource name).
pub fn plan(
    desired: &[Pool],
    inventory: &Inventory,
    previous: &BTreeMap<String, impl Borrow<PoolSnapshot>>,
    in_use: &InUse,
) -> Plan {
    let mut notes = Vec::new();
    // Device → the pool a pod holds it in.
    let mut pinned: HashMap<&str, &str> = HashMap::new();
    for (resource, ids) in in_use {
        for id in ids {
            pinned.insert(id.as_str(), resource.as_str());
        }
    }
    // Device → the pool it is served in now.
    let mut served: HashMap<&str, &str> = HashMap::new();
    for (resource, snapshot) in previous {
        for member in &snapshot.borrow().members {
            served.insert(member.id(), resource.as_str());
        }
    }
    let mut withdrawn = Vec::new();
    // Per-device decisions, said once per pair of pools (a policy swap on a large node moves a
    // thousand devices: a line each buried the log): (holder, policy's pool) → ids.
    let mut kept_in_use: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    // (from, to) → ids.
    let mut moves: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    let mut taken: HashMap<String, String> = HashMap::new();
    let mut pools: BTreeMap<String, PoolSnapshot> = BTreeMap::new();

    for pool in desired {
        if pools.contains_key(&pool.resource_name) {
            notes.push(format!(
                "pool {} is listed twice; the first definition wins",
                pool.resource_name
            ));
            continue;
        }
        let mut members = Vec::with_capacity(pool.devices.len());
        for hints in &pool.devices {
            if let Some(holder) = pinned.get(hints.id.as_str())
                && *holder != pool.resource_name
            {
                kept_in_use
                    .entry((holder.to_string(), pool.resource_name.clone()))
                    .or_default()
                    .push(hints.id.clone());
                continue;
            }
            if let Some(first) = taken.get(&hints.id) {
                notes.push(format!(
                    "device {} is already in pool {first}; not advertising it in {} too",
                    hints.id, pool.resource_name
                ));
                continue;
            }
            let Some(device) = inventory.get(&hints.id) else {
                notes.push(format!(
                    "device {} of pool {} is not in the inventory; skipped",
                    hints.id, pool.resource_name
                ));
                continue;
            };
            taken.insert(hints.id.clone(), pool.resource_name.clone());
            if let Some(from) = served.get(hints.id.as_str())
                && *from != pool.resource_name
            {
                // kubelet may still hand it out from `from` until it has our new list, and an
                // Allocate under way now shows in PodResources only once it returns.
                moves
                    .entry((from.to_string(), pool.resource_name.clone()))
                    .or_default()
                    .push(hints.id.clone());
                withdrawn.push(hints.id.clone());
                continue;
            }
            members.push(Member {
                device: device.clone(),
                hints: hints.clone(),
                health: health::health(device, inventory),
                held: false,
            });
        }
        pools.insert(
            pool.resource_name.clone(),
            PoolSnapshot::new(
                pool.resource_name.clone(),
                pool.device_type,
                pool.exclude_topology,
                members,
                inventory.node.clone(),
            ),
        );
    }

    // Held devices the policy wants elsewhere, already noted with that pool.
    let noted_in_use: std::collections::HashSet<(&str, &str)> = kept_in_use
        .iter()
        .flat_map(|((holder, _), ids)| ids.iter().map(move |id| (holder.as_str(), id.as_str())))
        .collect();
    // Devices in use that the desired pools do not place where the pod got them: keep them there.
    for (resource, ids) in in_use {
        let before: Option<&PoolSnapshot> = previous.get(resource).map(Borrow::borrow);
        if before.is_none() && !pools.contains_key(resource) {
            // Not ours (another plugin's resource, or a pool gone before this agent started).
            continue;
        }
        let mut held = Vec::new();
        let mut held_ids = Vec::new();
        for id in ids {
            match taken.get(id) {
                Some(holder) if holder == resource => continue,
                // PodResources names it under two resources: it stays in the first only.
                Some(holder) => {
                    notes.push(format!(
                        "device {id} is reported in use in {resource} and in {holder}; advertising it in {holder} only"
                    ));
                    continue;
                }
                None => {}
            }
            let old = before.and_then(|b| b.get_or_departed(id));
            // Not served here before (the agent restarted): the policy's hints for it, if any.
            let hints = old.map(|m| m.hints.clone()).unwrap_or_else(|| {
                desired
                    .iter()
                    .flat_map(|p| p.devices.iter())
                    .find(|d| d.id == *id)
                    .cloned()
                    .unwrap_or_else(|| PoolDevice {
                        id: id.clone(),
                        rdma: false,
                        vhost_net: false,
                        vdpa_type: None,
                        additional_info: None,
                    })
            });
            let (device, health) = match inventory.get(id) {
                Some(device) => {
                    // Said above, with the pool the policy now wants it in, if it has one.
                    if !noted_in_use.contains(&(resource.as_str(), id.as_str())) {
                        held_ids.push(id.clone());
                    }
                    (device.clone(), health::health(device, inventory))
                }
                None => {
                    let Some(old) = old else {
                        continue;
                    };
                    notes.push(format!(
                        "device {id} vanished while in use; {resource} lists it as Unhealthy until the pod releases it"
                    ));
                    (old.device.clone(), Health::Unhealthy)
                }
            };
            taken.insert(id.clone(), resource.clone());
            held.push(Member {
                device,
                hints,
                health,
                held: true,
            });
        }
        if !held_ids.is_empty() {
            notes.push(format!(
                "{} in {resource} until the pods using them release them: {}",
                devices(held_ids.len(), "stays", "stay"),
                Ids(&held_ids)
            ));
        }
        if held.is_empty() {
            continue;
        }
        match (pools.get_mut(resource), before) {
            (Some(pool), _) => extend(pool, held, inventory),
            (None, Some(before)) => {
                notes.push(format!(
                    "pool {resource} was removed but a pod still uses its devices; serving them until released"
                ));
                pools.insert(
                    resource.clone(),
                    PoolSnapshot::new(
                        resource.clone(),
                        before.device_type,
                        before.exclude_topology,
                        held,
                        inventory.node.clone(),
                    ),
                );
            }
            (None, None) => {}
        }
    }
    // A free device served in a pool the policy still has, bound to no driver now (a driver
    // reload, a rebind under way): policies pool bound devices only (the default selector does),
    // so the policy leaves it out. It stays in its pool, Unhealthy, until it is bound again —
    // then the policy places it, here or elsewhere through a move — or vanishes. It used to leave
    // the pool, and a pool whose devices were all free stopped and registered again around every
    // driver reload. Limits: the policy must still return the pool (the default selector returns
    // every configured resource, even empty; a policy that names pools after what it finds may
    // not), and an agent started while a device is unbound has served nothing to keep it in.
    let wanted: std::collections::HashSet<&str> =
        desired.iter().map(|p| p.resource_name.as_str()).collect();
    let mut unbound: BTreeMap<String, Vec<Member>> = BTreeMap::new();
    for (resource, snapshot) in previous {
        // Not a pool kept only for the devices pods hold in it.
        if !wanted.contains(resource.as_str()) {
            continue;
        }
        for old in &snapshot.borrow().members {
            let id = old.id();
            if taken.contains_key(id) || pinned.contains_key(id) {
                continue;
            }
            let Some(device) = inventory.get(id).filter(|d| d.driver.is_none()) else {
                continue;
            };
            taken.insert(id.to_owned(), resource.clone());
            unbound.entry(resource.clone()).or_default().push(Member {
                device: device.clone(),
                hints: old.hints.clone(),
                health: health::health(device, inventory),
                held: false,
            });
        }
    }
    for (resource, members) in unbound {
        let ids: Vec<String> = members.iter().map(|m| m.id().to_owned()).collect();
        notes.push(format!(
            "{} in {resource} as Unhealthy while bound to no driver: {}",
            devices(ids.len(), "stays", "stay"),
            Ids(&ids)
        ));
        if let Some(pool) = pools.get_mut(&resource) {
            extend(pool, members, inventory);
        }
    }
    for ((holder, wanted), ids) in &kept_in_use {
        notes.push(format!(
            "{} in {holder} while pods use them (the policy now puts them in {wanted}): {}",
            devices(ids.len(), "stays", "stay"),
            Ids(ids)
        ));
    }
    for ((from, to), ids) in &moves {
        notes.push(format!(
            "{} {from}, to join {to} on the next update: {}",
            devices(ids.len(), "leaves", "leave"),
            Ids(ids)
        ));
    }
    Plan {
        pools,
        notes,
        withdrawn,
    }
}

/// `pool` with `extra` members too.
fn extend(pool: &mut PoolSnapshot, extra: Vec<Member>, inventory: &Inventory) {
    let mut members = std::mem::take(&mut pool.members);
    members.extend(extra);
    *pool = PoolSnapshot::new(
        pool.resource_name.clone(),
        pool.device_type,
        pool.exclude_topology,
        members,
        inventory.node.clone(),
    );
}

/// "1 device stays", "3 devices stay".
fn devices(count: usize, one: &str, many: &str) -> String {
    if count == 1 {
        format!("1 device {one}")
    } else {
        format!("{count} devices {many}")
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use vfpool_policy::{DeviceType, PoolDevice};
    use vfpool_sysfs::{Device, DeviceKind, Inventory, NodeFacts};

    use super::*;

    /// No pool served yet (the agent's first apply).
    fn nothing_served() -> BTreeMap<String, PoolSnapshot> {
        BTreeMap::new()
    }

    fn inventory(ids: &[&str]) -> Inventory {
        let mut devices: Vec<Device> = ids
            .iter()
            .map(|id| {
                let mut d = Device::unknown(*id, DeviceKind::Vf);
                d.driver = Some("iavf".to_string());
                d.numa_node = Some(0);
                d
            })
            .collect();
        devices.sort_by(|a, b| a.id.cmp(&b.id));
        Inventory {
            devices,
            node: NodeFacts::default(),
        }
    }

    /// A netdev pool `name` of `ids`, without hints.
    pub(crate) fn pool(name: &str, ids: &[&str]) -> Pool {
        Pool {
            resource_name: name.to_string(),
            device_type: DeviceType::NetDevice,
            exclude_topology: false,
            devices: ids
                .iter()
                .map(|id| PoolDevice {
                    id: (*id).to_string(),
                    rdma: false,
                    vhost_net: false,
                    vdpa_type: None,
                    additional_info: None,
                })
                .collect(),
        }
    }

    fn ids(plan: &Plan, name: &str) -> Vec<String> {
        plan.pools[name]
            .members
            .iter()
            .map(|m| m.id().to_string())
            .collect()
    }

    #[test]
    fn a_device_is_never_in_two_pools() {
        let inv = inventory(&["a", "b", "c"]);
        let plan = plan(
            &[pool("x.io/one", &["a", "b"]), pool("x.io/two", &["b", "c"])],
            &inv,
            &nothing_served(),
            &InUse::new(),
        );
        assert_eq!(ids(&plan, "x.io/one"), ["a", "b"]);
        assert_eq!(ids(&plan, "x.io/two"), ["c"]);
        assert!(
            plan.notes
                .iter()
                .any(|n| n.contains("already in pool x.io/one"))
        );
    }

    #[test]
    fn an_in_use_device_stays_where_it_was_allocated() {
        let inv = inventory(&["a", "b", "c"]);
        let first = plan(
            &[pool("x.io/one", &["a", "b"]), pool("x.io/two", &["c"])],
            &inv,
            &nothing_served(),
            &InUse::new(),
        );
        let used: InUse = [("x.io/one".to_string(), ["b".to_string()].into())].into();
        // The policy now moves b to two.
        let second = plan(
            &[pool("x.io/one", &["a"]), pool("x.io/two", &["b", "c"])],
            &inv,
            &first.pools,
            &used,
        );
        assert_eq!(ids(&second, "x.io/one"), ["a", "b"]);
        assert_eq!(ids(&second, "x.io/two"), ["c"]);
        let held = second.pools["x.io/one"].get("b").unwrap();
        assert!(held.held);
        // With its real health: kubelet does not give an allocated device to a second pod, and
        // an Unhealthy one failed the pod's admission after a kubelet restart.
        assert_eq!(held.health, Health::Healthy);
        assert_eq!(
            second.pools["x.io/one"].get("a").unwrap().health,
            Health::Healthy
        );
        // Released: it leaves one now and joins two on the next plan.
        let desired = [pool("x.io/one", &["a"]), pool("x.io/two", &["b", "c"])];
        let third = plan(&desired, &inv, &second.pools, &InUse::new());
        assert_eq!(ids(&third, "x.io/one"), ["a"]);
        assert_eq!(ids(&third, "x.io/two"), ["c"]);
        assert_eq!(third.withdrawn, ["b"]);
        let fourth = plan(&desired, &inv, &third.pools, &InUse::new());
        assert_eq!(ids(&fourth, "x.io/one"), ["a"]);
        assert_eq!(ids(&fourth, "x.io/two"), ["b", "c"]);
        assert!(fourth.withdrawn.is_empty());
    }

    /// A free device the policy moves is never in two pools' lists at once, not even for the time
    /// kubelet takes to read both updates: it leaves its pool in one plan and joins the other in
    /// the next. It used to switch in one step, so an Allocate kubelet had already started from
    /// the old pool's list could hand it to a pod while the new pool offered it to another.
    #[test]
    fn a_free_device_moves_in_two_plans() {
        let inv = inventory(&["a", "b"]);
        let first = plan(
            &[pool("x.io/one", &["a", "b"])],
            &inv,
            &nothing_served(),
            &InUse::new(),
        );
        let desired = [pool("x.io/two", &["a"]), pool("x.io/one", &["b"])];
        let second = plan(&desired, &inv, &first.pools, &InUse::new());
        assert_eq!(ids(&second, "x.io/one"), ["b"]);
        assert!(ids(&second, "x.io/two").is_empty());
        assert_eq!(second.withdrawn, ["a"]);
        // An Allocate under way when `a` was withdrawn shows up in PodResources: it stays.
        let used: InUse = [("x.io/one".to_string(), ["a".to_string()].into())].into();
        let raced = plan(&desired, &inv, &second.pools, &used);
        assert!(ids(&raced, "x.io/two").is_empty());
        assert!(raced.pools["x.io/one"].get("a").unwrap().held);
        // Nobody took it: it joins two.
        let third = plan(&desired, &inv, &second.pools, &InUse::new());
        assert_eq!(ids(&third, "x.io/two"), ["a"]);
        assert_eq!(ids(&third, "x.io/one"), ["b"]);
    }

    /// A policy swap on a large node moved a thousand devices, and the plan said so in a line per
    /// device (held ones twice). One line per pair of pools, naming a few ids and the count.
    #[test]
    fn moves_and_held_devices_are_one_note_per_pair_of_pools() {
        let names: Vec<String> = (0..100).map(|i| format!("d{i:03}")).collect();
        let all: Vec<&str> = names.iter().map(String::as_str).collect();
        let inv = inventory(&all);
        let first = plan(
            &[pool("x.io/one", &all)],
            &inv,
            &nothing_served(),
            &InUse::new(),
        );
        let used: InUse = [(
            "x.io/one".to_string(),
            ["d000".to_string(), "d001".to_string()].into(),
        )]
        .into();
        let second = plan(&[pool("x.io/two", &all)], &inv, &first.pools, &used);
        assert_eq!(second.withdrawn.len(), 98);
        // The third note: pool one, gone from the policy, is served for its held devices.
        assert_eq!(second.notes.len(), 3, "{:#?}", second.notes);
        let said = |start: &str, end: &str| {
            second
                .notes
                .iter()
                .any(|n| n.starts_with(start) && n.ends_with(end))
        };
        assert!(
            said(
                "2 devices stay in x.io/one while pods use them (the policy now puts them in x.io/two): d000, d001",
                "d001"
            ),
            "{:#?}",
            second.notes
        );
        assert!(
            said(
                "98 devices leave x.io/one, to join x.io/two on the next update: d002, d003",
                " and 90 more"
            ),
            "{:#?}",
            second.notes
        );
        // Held in a pool the policy no longer has at all: one line for them too.
        let third = plan(&[], &inv, &first.pools, &used);
        assert_eq!(
            third
                .notes
                .iter()
                .filter(|n| n.contains("until the pods using them release them"))
                .count(),
            1,
            "{:#?}",
            third.notes
        );
    }

    #[test]
    fn a_removed_pool_is_served_while_a_device_is_in_use_and_a_vanished_one_is_unhealthy() {
        let inv = inventory(&["a", "b"]);
        let first = plan(
            &[pool("x.io/one", &["a", "b"])],
            &inv,
            &nothing_served(),
            &InUse::new(),
        );
        let used: InUse = [(
            "x.io/one".to_string(),
            ["a".to_string(), "b".to_string()].into(),
        )]
        .into();
        // Pool removed from the config, and b vanished from the node.
        let gone = inventory(&["a"]);
        let second = plan(&[], &gone, &first.pools, &used);
        assert_eq!(ids(&second, "x.io/one"), ["a", "b"]);
        let one = &second.pools["x.io/one"];
        // Held with their real health: a is fine, b is gone.
        assert_eq!(one.get("a").unwrap().health, Health::Healthy);
        assert_eq!(one.get("b").unwrap().health, Health::Unhealthy);
        assert!(second.notes.iter().any(|n| n.contains("b vanished")));
        let third = plan(&[], &gone, &second.pools, &InUse::new());
        assert!(third.pools.is_empty());
    }

    #[test]
    fn devices_in_use_by_another_resource_are_not_advertised() {
        // After an agent restart nothing was served before, but kubelet knows b is in a pod of
        // x.io/one: the new pools must not offer it elsewhere.
        let inv = inventory(&["a", "b"]);
        let used: InUse = [("x.io/one".to_string(), ["b".to_string()].into())].into();
        let plan = plan(
            &[pool("x.io/two", &["a", "b"])],
            &inv,
            &nothing_served(),
            &used,
        );
        assert_eq!(ids(&plan, "x.io/two"), ["a"]);
    }

    #[test]
    fn after_an_agent_restart_a_device_in_use_is_still_counted_in_its_pool() {
        // The policy now puts b in two, but kubelet says a pod of one holds it.
        let inv = inventory(&["a", "b"]);
        let used: InUse = [("x.io/one".to_string(), ["b".to_string()].into())].into();
        let plan = plan(
            &[pool("x.io/one", &["a"]), pool("x.io/two", &["b"])],
            &inv,
            &nothing_served(),
            &used,
        );
        assert_eq!(ids(&plan, "x.io/one"), ["a", "b"]);
        assert!(!plan.pools.contains_key("x.io/two") || ids(&plan, "x.io/two").is_empty());
    }

    #[test]
    fn pool_devices_missing_from_the_inventory_are_skipped() {
        let inv = inventory(&["a"]);
        let plan = plan(
            &[pool("x.io/one", &["a", "zz"])],
            &inv,
            &nothing_served(),
            &InUse::new(),
        );
        assert_eq!(ids(&plan, "x.io/one"), ["a"]);
    }

    /// PodResources naming one device under two resources (it should not, but it is input) does
    /// not put the device in two pools: it used to be held in both.
    #[test]
    fn a_device_reported_in_two_resources_is_held_in_one() {
        let inv = inventory(&["a", "d"]);
        let first = plan(
            &[pool("x.io/one", &["a"]), pool("x.io/two", &["d"])],
            &inv,
            &nothing_served(),
            &InUse::new(),
        );
        let used: InUse = [
            ("x.io/one".to_string(), ["d".to_string()].into()),
            ("x.io/two".to_string(), ["d".to_string()].into()),
        ]
        .into();
        let second = plan(&[pool("x.io/one", &["a"])], &inv, &first.pools, &used);
        let holders: Vec<&String> = second
            .pools
            .iter()
            .filter(|(_, pool)| pool.get("d").is_some())
            .map(|(name, _)| name)
            .collect();
        assert_eq!(holders.len(), 1, "{:?}", second.pools.keys());
        assert!(second.notes.iter().any(|n| n.contains("reported in use")));
    }

    /// A free device whose driver goes away (a driver reload) stays in its pool as Unhealthy
    /// while the policy leaves it out for having no driver, and is Healthy there again once
    /// rebound: it used to leave the pool, and a pool of free devices stopped and registered
    /// again around every `modprobe -r; modprobe`.
    #[test]
    fn a_free_device_that_loses_its_driver_stays_in_its_pool_as_unhealthy() {
        let bound = inventory(&["a", "b"]);
        let first = plan(
            &[pool("x.io/one", &["a", "b"])],
            &bound,
            &nothing_served(),
            &InUse::new(),
        );
        let mut unbound = bound.clone();
        for device in &mut unbound.devices {
            device.driver = None;
        }
        // The policy pools bound devices only: the pool is still there, with nothing in it.
        let second = plan(
            &[pool("x.io/one", &[])],
            &unbound,
            &first.pools,
            &InUse::new(),
        );
        assert_eq!(ids(&second, "x.io/one"), ["a", "b"]);
        for id in ["a", "b"] {
            let member = second.pools["x.io/one"].get(id).unwrap();
            assert_eq!(member.health, Health::Unhealthy, "{id}");
            assert!(!member.held);
        }
        assert!(second.withdrawn.is_empty());
        assert!(
            second
                .notes
                .iter()
                .any(|n| n.contains("bound to no driver")),
            "{:?}",
            second.notes
        );

        // Bound again: Healthy where it was, nothing moves.
        let third = plan(
            &[pool("x.io/one", &["a", "b"])],
            &bound,
            &second.pools,
            &InUse::new(),
        );
        assert_eq!(ids(&third, "x.io/one"), ["a", "b"]);
        assert_eq!(
            third.pools["x.io/one"].get("a").unwrap().health,
            Health::Healthy
        );
        assert!(third.withdrawn.is_empty());

        // Bound to a driver another pool takes: the usual two-step move.
        let moved = plan(
            &[pool("x.io/one", &["b"]), pool("x.io/two", &["a"])],
            &bound,
            &second.pools,
            &InUse::new(),
        );
        assert_eq!(moved.withdrawn, ["a"]);
        assert!(moved.pools["x.io/one"].get("a").is_none());

        // A pool the policy no longer has keeps no unbound device, not even while a pod holds
        // another of its devices (the pool is served for that one only).
        let removed = plan(&[], &unbound, &first.pools, &InUse::new());
        assert!(removed.pools.is_empty(), "{:?}", removed.pools.keys());
        let used: InUse = [("x.io/one".to_string(), ["b".to_string()].into())].into();
        let held_only = plan(&[], &unbound, &first.pools, &used);
        assert_eq!(ids(&held_only, "x.io/one"), ["b"]);
    }
}
