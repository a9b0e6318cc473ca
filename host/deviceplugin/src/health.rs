//! Device health from what discovery saw: a device is unhealthy when it lost its driver, when it
//! vanished (and is only still listed because a pod holds it), or when its PF's link is down
//! (carrier or operstate, upstream PR #640's `checkHealthOnPf`). A VF whose own netdev is gone is
//! healthy: its netdev is in a pod's network namespace (upstream #565).

use vfpool_sysfs::{Device, DeviceKind, Inventory};

use crate::model::Health;

/// Why a device is unhealthy, for logs; `None` when it is healthy.
pub fn unhealthy_reason(device: &Device, inventory: &Inventory) -> Option<String> {
    let Some(current) = inventory.get(&device.id) else {
        return Some("the device vanished".to_string());
    };
    if current.driver.is_none() {
        return Some("the device has no driver bound".to_string());
    }
    if matches!(current.kind, DeviceKind::Vf | DeviceKind::Aux)
        && let Some(pf) = current.pf_id.as_deref().and_then(|id| inventory.get(id))
    {
        let uplink = current
            .pf_name
            .as_deref()
            .and_then(|name| pf.netdevs.iter().find(|n| n.name == name))
            .or_else(|| pf.netdevs.first());
        if let Some(link) = uplink {
            let oper_down = matches!(
                link.operstate.as_deref(),
                Some("down" | "lowerlayerdown" | "notpresent")
            );
            if oper_down || link.carrier == Some(false) {
                return Some(format!(
                    "PF {} link {} is down (operstate {}, carrier {})",
                    pf.id,
                    link.name,
                    link.operstate.as_deref().unwrap_or("unknown"),
                    link.carrier
                        .map_or("unknown", |c| if c { "1" } else { "0" })
                ));
            }
        }
    }
    None
}

/// The device's health in `inventory`.
pub fn health(device: &Device, inventory: &Inventory) -> Health {
    match unhealthy_reason(device, inventory) {
        None => Health::Healthy,
        Some(_) => Health::Unhealthy,
    }
}
