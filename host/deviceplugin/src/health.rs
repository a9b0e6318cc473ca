//! Device health from what discovery saw: a device is unhealthy when it lost its driver, when it
//! vanished (and is only still listed because a pod holds it), or when its PF's link is down
//! (carrier or operstate, upstream PR #640's `checkHealthOnPf`) — or, for a PF port in a bond
//! (VF-LAG), when the bond's link is down. A VF whose own netdev is gone is healthy: its netdev is
//! in a pod's network namespace (upstream #565).

use std::fmt;

use vfpool_sysfs::{BondLink, Device, DeviceKind, Inventory};

use crate::model::Health;

/// Why a device is unhealthy: what the operator is told when a pool's devices turn Unhealthy.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Unhealthy {
    /// The device is no longer in the inventory (listed only because a pod holds it).
    Vanished,
    /// No driver is bound to the device (unbound, or rebound and not yet probed).
    NoDriver,
    /// The link of the device's PF is down (or, for a PF port in a bond, the bond's link: the
    /// port's own link is then not the VFs' way to the wire alone).
    PfLinkDown {
        /// The PF's id (PCI address).
        pf: String,
        /// The PF netdev whose link is down.
        link: String,
        /// Its operstate, if known.
        operstate: Option<String>,
        /// Its carrier, if known.
        carrier: Option<bool>,
    },
}

impl fmt::Display for Unhealthy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unhealthy::Vanished => f.write_str("the device vanished"),
            Unhealthy::NoDriver => f.write_str("the device has no driver bound"),
            Unhealthy::PfLinkDown {
                pf,
                link,
                operstate,
                carrier,
            } => write!(
                f,
                "PF {pf} link {link} is down (operstate {}, carrier {})",
                operstate.as_deref().unwrap_or("unknown"),
                carrier.map_or("unknown", |c| if c { "1" } else { "0" })
            ),
        }
    }
}

/// Why a device is unhealthy, for logs; `None` when it is healthy.
pub fn unhealthy_reason(device: &Device, inventory: &Inventory) -> Option<Unhealthy> {
    let Some(current) = inventory.get(&device.id) else {
        return Some(Unhealthy::Vanished);
    };
    // A sub-function's `driver` is its parent's (what selectors match on); its own is apart.
    if current.driver.is_none() || (current.kind == DeviceKind::Aux && current.aux_driver.is_none())
    {
        return Some(Unhealthy::NoDriver);
    }
    if matches!(current.kind, DeviceKind::Vf | DeviceKind::Aux)
        && let Some(pf) = current.pf_id.as_deref().and_then(|id| inventory.get(id))
    {
        let uplink = current
            .pf_name
            .as_deref()
            .and_then(|name| pf.netdevs.iter().find(|n| n.name == name))
            .or_else(|| pf.netdevs.first());
        // A port of a VF-LAG bond leaves its VFs usable while the bond's link is up: that link
        // decides, not the port's. Any other bond does not carry the VFs' traffic.
        let state = uplink.map(|link| match &link.bond {
            Some(bond) if vf_lag(pf, bond, inventory) => {
                (&bond.name, &bond.operstate, bond.carrier)
            }
            _ => (&link.name, &link.operstate, link.carrier),
        });
        if let Some((link, operstate, carrier)) = state {
            let oper_down = matches!(
                operstate.as_deref(),
                Some("down" | "lowerlayerdown" | "notpresent")
            );
            if oper_down || carrier == Some(false) {
                return Some(Unhealthy::PfLinkDown {
                    pf: pf.id.clone(),
                    link: link.clone(),
                    operstate: operstate.clone(),
                    carrier,
                });
            }
        }
    }
    None
}

/// Whether `pf`'s VFs reach the wire through `bond`, whichever of its ports is up (mlx5 VF-LAG):
/// the PF's eswitch is in switchdev mode and the bond's ports are two or more, every one a netdev
/// of a PF of the same NIC (the PCI address but its function). A host bond over ports of two NICs,
/// or over a NIC in legacy mode, leaves each VF to its own port's link.
fn vf_lag(pf: &Device, bond: &BondLink, inventory: &Inventory) -> bool {
    if !pf.switchdev || bond.ports.len() < 2 {
        return false;
    }
    let Some((nic, _function)) = pf.id.rsplit_once('.') else {
        return false;
    };
    // Asked for every VF of the PF on every apply: only the functions of this NIC are looked at,
    // a run of the inventory (sorted by id, as `Inventory::get` needs) found by binary search.
    let prefix = format!("{nic}.");
    let first = inventory
        .devices
        .partition_point(|d| d.id.as_str() < prefix.as_str());
    let this_nic = || {
        inventory
            .devices
            .get(first..)
            .unwrap_or_default()
            .iter()
            .take_while(|d| d.id.starts_with(&prefix))
            .filter(|d| d.kind == DeviceKind::Pf)
    };
    bond.ports
        .iter()
        .all(|port| this_nic().any(|d| d.netdevs.iter().any(|n| n.name == *port)))
}

/// The device's health in `inventory`.
pub fn health(device: &Device, inventory: &Inventory) -> Health {
    match unhealthy_reason(device, inventory) {
        None => Health::Healthy,
        Some(_) => Health::Unhealthy,
    }
}

#[cfg(test)]
mod tests {
    use vfpool_sysfs::{Netdev, NodeFacts};

    use super::*;

    fn link(name: &str, operstate: &str, carrier: Option<bool>) -> Netdev {
        Netdev {
            name: name.to_string(),
            link_type: Some("ether".to_string()),
            operstate: Some(operstate.to_string()),
            carrier,
            mac: None,
            mtu: None,
            phys_port_name: None,
            phys_switch_id: None,
            bond: None,
        }
    }

    fn node(pf_link: Netdev, vf_driver: Option<&str>) -> Inventory {
        let mut pf = Device::unknown("0000:3b:00.0", DeviceKind::Pf);
        pf.driver = Some("mlx5_core".to_string());
        pf.netdevs = vec![pf_link];
        let mut vf = Device::unknown("0000:3b:00.2", DeviceKind::Vf);
        vf.driver = vf_driver.map(str::to_string);
        vf.pf_id = Some(pf.id.clone());
        vf.pf_name = Some("ens1f0".to_string());
        Inventory {
            devices: vec![pf, vf],
            node: NodeFacts::default(),
        }
    }

    #[test]
    fn healthy_with_the_pf_up_even_without_an_own_netdev() {
        let inv = node(link("ens1f0", "up", Some(true)), Some("mlx5_core"));
        assert_eq!(health(&inv.devices[1], &inv), Health::Healthy);
    }

    #[test]
    fn pf_carrier_or_operstate_down_is_unhealthy() {
        for l in [
            link("ens1f0", "down", None),
            link("ens1f0", "up", Some(false)),
            link("ens1f0", "lowerlayerdown", Some(true)),
        ] {
            let inv = node(l, Some("mlx5_core"));
            let reason = unhealthy_reason(&inv.devices[1], &inv).unwrap().to_string();
            assert!(reason.contains("ens1f0"), "{reason}");
        }
        // `unknown` operstate with carrier up (common for virtual links) is fine.
        let inv = node(link("ens1f0", "unknown", Some(true)), Some("mlx5_core"));
        assert_eq!(health(&inv.devices[1], &inv), Health::Healthy);
    }

    /// A PF port in a VF-LAG bond (switchdev, the bond's ports all of this NIC): its VFs reach
    /// the wire through whichever port is up, so the bond's link decides. They were Unhealthy
    /// when one port lost its carrier, and with kubelet restarting then, every pod holding one
    /// failed readmission. Any other bond (a NIC in legacy mode, ports of two NICs) does not
    /// carry the VFs' traffic: the port's own link still decides.
    #[test]
    fn a_pf_port_in_a_vf_lag_bond_follows_the_bonds_link() {
        let bonded =
            |port: Netdev, operstate: &str, carrier: Option<bool>, ports: &[&str]| Netdev {
                bond: Some(BondLink {
                    name: "bond0".to_string(),
                    operstate: Some(operstate.to_string()),
                    carrier,
                    ports: ports.iter().map(|p| p.to_string()).collect(),
                }),
                ..port
            };
        // This NIC's second port, and a port of another NIC.
        let with_pf = |mut inv: Inventory, id: &str, netdev: &str| {
            let mut pf = Device::unknown(id, DeviceKind::Pf);
            pf.netdevs = vec![link(netdev, "up", Some(true))];
            inv.devices.push(pf);
            // Inventory lookups are binary searches by id.
            inv.devices.sort_by(|a, b| a.id.cmp(&b.id));
            inv
        };
        let vf = |inv: &Inventory| inv.get("0000:3b:00.2").unwrap().clone();
        let lag = |port: Netdev, switchdev: bool| {
            let mut inv = with_pf(node(port, Some("mlx5_core")), "0000:3b:00.1", "ens1f1");
            inv.devices[0].switchdev = switchdev; // 0000:3b:00.0, first by id
            with_pf(inv, "0000:5e:00.0", "ens2f0")
        };
        let port_down = link("ens1f0", "down", Some(false));
        let ours = ["ens1f0", "ens1f1"];
        let inv = lag(bonded(port_down.clone(), "up", Some(true), &ours), true);
        assert_eq!(health(&vf(&inv), &inv), Health::Healthy);
        for bond in [
            bonded(port_down.clone(), "down", Some(false), &ours),
            bonded(link("ens1f0", "up", Some(true)), "up", Some(false), &ours),
        ] {
            let inv = lag(bond, true);
            let reason = unhealthy_reason(&vf(&inv), &inv).unwrap().to_string();
            assert!(reason.contains("link bond0 is down"), "{reason}");
        }
        for (bond, switchdev) in [
            (bonded(port_down.clone(), "up", Some(true), &ours), false),
            (
                bonded(port_down.clone(), "up", Some(true), &["ens1f0", "ens2f0"]),
                true,
            ),
            (
                bonded(port_down.clone(), "up", Some(true), &["ens1f0"]),
                true,
            ),
        ] {
            let inv = lag(bond, switchdev);
            let reason = unhealthy_reason(&vf(&inv), &inv).unwrap().to_string();
            assert!(reason.contains("link ens1f0 is down"), "{reason}");
        }
    }

    /// A sub-function carries its parent's driver (what selectors match on); unbound from its
    /// own (`mlx5_core.sf`) it has no netdev and is unusable: it used to stay Healthy.
    #[test]
    fn a_sub_function_without_its_own_driver_is_unhealthy() {
        let mut inv = node(link("ens1f0", "up", Some(true)), Some("mlx5_core"));
        let mut sf = Device::unknown("mlx5_core.sf.2", DeviceKind::Aux);
        sf.driver = Some("mlx5_core".to_string());
        sf.pf_id = Some("0000:3b:00.0".to_string());
        sf.pf_name = Some("ens1f0".to_string());
        inv.devices.push(sf.clone());
        assert_eq!(unhealthy_reason(&sf, &inv), Some(Unhealthy::NoDriver));
        inv.devices[2].aux_driver = Some("mlx5_core.sf".to_string());
        assert_eq!(health(&sf, &inv), Health::Healthy);
    }

    #[test]
    fn lost_driver_or_vanished_is_unhealthy() {
        let inv = node(link("ens1f0", "up", Some(true)), None);
        assert_eq!(health(&inv.devices[1], &inv), Health::Unhealthy);
        let gone = Device::unknown("0000:3b:00.7", DeviceKind::Vf);
        assert_eq!(unhealthy_reason(&gone, &inv), Some(Unhealthy::Vanished));
        assert_eq!(
            unhealthy_reason(&inv.devices[1], &inv),
            Some(Unhealthy::NoDriver)
        );
    }
}
