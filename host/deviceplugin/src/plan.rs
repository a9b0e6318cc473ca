//! From the pools the selector policy wants to what is served, without ever breaking a pod:
//!
//! - a device is advertised in at most one pool (the first pool that lists it wins);
//! - a device a pod uses (kubelet's PodResources) stays in the pool it was allocated from, even
//!   when the policy now puts it elsewhere or nowhere, even when it vanished (then Unhealthy), and
//!   is not advertised in any other pool until the pod releases it;
//! - a pool that no longer exists keeps being served while one of its devices is in use.
//!
//! Pure: the caller supplies the PodResources view and the previous plan.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use vfpool_policy::Pool;
use vfpool_sysfs::Inventory;

use crate::health;
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
}

/// Plans the served pools. `previous` is what is served now (by resource name).
pub fn plan(
    desired: &[Pool],
    inventory: &Inventory,
    previous: &BTreeMap<String, PoolSnapshot>,
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
                notes.push(format!(
                    "device {} stays in {} while a pod uses it (the policy now puts it in {})",
                    hints.id, holder, pool.resource_name
                ));
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

    // Devices in use that the desired pools do not place where the pod got them: keep them there.
    for (resource, ids) in in_use {
        let Some(before) = previous.get(resource) else {
            continue;
        };
        let mut held = Vec::new();
        for id in ids {
            if taken.get(id).is_some_and(|r| r == resource) {
                continue;
            }
            let Some(old) = before.get(id) else {
                continue;
            };
            let device = inventory
                .get(id)
                .cloned()
                .unwrap_or_else(|| old.device.clone());
            let health = health::health(&old.device, inventory);
            if health == Health::Unhealthy && inventory.get(id).is_none() {
                notes.push(format!(
                    "device {id} vanished while in use; {resource} lists it as Unhealthy until the pod releases it"
                ));
            } else {
                notes.push(format!(
                    "device {id} is held in {resource} until the pod using it releases it"
                ));
            }
            taken.insert(id.clone(), resource.clone());
            held.push(Member {
                device,
                hints: old.hints.clone(),
                health,
                held: true,
            });
        }
        if held.is_empty() {
            continue;
        }
        match pools.get_mut(resource) {
            Some(pool) => {
                let mut members = std::mem::take(&mut pool.members);
                members.extend(held);
                *pool = PoolSnapshot::new(
                    pool.resource_name.clone(),
                    pool.device_type,
                    pool.exclude_topology,
                    members,
                    inventory.node.clone(),
                );
            }
            None => {
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
        }
    }
    Plan { pools, notes }
}
