//! `vfpool discover`: what the agent sees on this node.

use std::fmt::Write as _;

use serde::Serialize;
use vfpool_policy::HostFacts;
use vfpool_sysfs::{Device, DiscoveryError, Inventory, NodeFacts, SysfsRoot};

use crate::cli::DiscoverArgs;
use crate::exit::{CmdResult, Code, WithCode};
use crate::facts::FactsGatherer;
use crate::output::Output;

/// The JSON document `discover --json` prints: `{"devices":[...],"node":{...}}`, devices sorted
/// by id.
#[derive(Serialize)]
struct DiscoverJson<'a> {
    devices: Vec<DeviceJson<'a>>,
    node: &'a NodeFacts,
}

/// One device as policies get it: what sysfs tells, plus the facts the agent adds
/// ([`HostFacts`]; on a simulated node there are none).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DeviceJson<'a> {
    #[serde(flatten)]
    device: &'a Device,
    carries_default_route: bool,
    devlink_enable_rdma: Option<bool>,
    ddp_profile: Option<&'a str>,
}

impl<'a> DiscoverJson<'a> {
    fn new(inventory: &'a Inventory, facts: &'a HostFacts) -> Self {
        DiscoverJson {
            devices: inventory
                .devices
                .iter()
                .map(|device| DeviceJson {
                    device,
                    carries_default_route: facts.carries_default_route(device),
                    devlink_enable_rdma: facts.rdma_enabled.get(&device.id).copied(),
                    ddp_profile: facts.ddp_profiles.get(&device.id).map(String::as_str),
                })
                .collect(),
            node: &inventory.node,
        }
    }
}

/// A discovery that could not run, as a command's failure: exit 2 when the `--sysfs-root` given
/// is wrong, 1 when the machine is (out of descriptors or memory).
pub(crate) fn discovery_failure(error: DiscoveryError) -> crate::exit::Failure {
    crate::exit::Failure {
        code: discovery_code(&error),
        error: error.into(),
    }
}

/// The exit code of a discovery that could not run (see [`discovery_failure`]).
pub(crate) fn discovery_code(error: &DiscoveryError) -> Code {
    match error {
        DiscoveryError::RootUnreadable { .. } | DiscoveryError::NoPciBus { .. } => Code::BadInput,
        _ => Code::Failure,
    }
}

pub fn run(args: &DiscoverArgs) -> CmdResult {
    let root = SysfsRoot::new(&args.sysfs.sysfs_root);
    let inventory = vfpool_sysfs::discover(&root).map_err(discovery_failure)?;
    let facts = FactsGatherer::for_sysfs_root(&args.sysfs.sysfs_root).gather(&inventory);
    let document = DiscoverJson::new(&inventory, &facts);
    let text = if args.json {
        let json = serde_json::to_string_pretty(&document).code(Code::Failure)?;
        json + "\n"
    } else {
        table(&document.devices)
    };
    Output::stdout().print(&text)
}

/// A table for people: one line per device, `-` where the kernel says nothing.
fn table(devices: &[DeviceJson<'_>]) -> String {
    let header = [
        "ID",
        "KIND",
        "VENDOR:DEVICE",
        "DRIVER",
        "NUMA",
        "PF",
        "VF",
        "NETDEV",
        "LINK",
        "RDMA",
        "FACTS",
    ];
    let rows: Vec<[String; 11]> = devices
        .iter()
        .map(|row| {
            let d = row.device;
            let opt = |v: Option<&str>| v.unwrap_or("-").to_owned();
            let num = |v: Option<u32>| v.map_or_else(|| "-".to_owned(), |n| n.to_string());
            let vf = match (d.vf_index, d.sf_num) {
                (Some(i), _) => i.to_string(),
                (None, Some(sf)) => format!("sf{sf}"),
                (None, None) => "-".to_owned(),
            };
            let rdma = if d.rdma_devices.is_empty() {
                "-".to_owned()
            } else {
                d.rdma_devices.join(",")
            };
            [
                d.id.clone(),
                d.kind.as_str().to_owned(),
                format!(
                    "{}:{}",
                    d.vendor.as_deref().unwrap_or("????"),
                    d.device.as_deref().unwrap_or("????")
                ),
                opt(d.driver.as_deref()),
                num(d.numa_node),
                opt(d.pf_name.as_deref().or(d.pf_id.as_deref())),
                vf,
                opt(d.netdev.as_deref()),
                opt(d.link_type.as_deref()),
                rdma,
                agent_facts(row),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (cell, w) in cells.zip(widths) {
            let _ = write!(text, "{cell:<w$}  ");
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for row in &rows {
        line(&mut row.iter().map(String::as_str));
    }
    if devices.is_empty() {
        out.push_str("(no network or accelerator devices found)\n");
    }
    out
}

/// What the agent adds to a device for policies, as words: `default-route`, `enable_rdma=…`,
/// `ddp=…`; `-` when none.
fn agent_facts(row: &DeviceJson<'_>) -> String {
    let mut facts = Vec::new();
    if row.carries_default_route {
        facts.push("default-route".to_owned());
    }
    if let Some(enabled) = row.devlink_enable_rdma {
        facts.push(format!("enable_rdma={enabled}"));
    }
    if let Some(ddp) = row.ddp_profile {
        facts.push(format!("ddp={ddp}"));
    }
    if facts.is_empty() {
        "-".to_owned()
    } else {
        facts.join(",")
    }
}

#[cfg(test)]
mod tests {
    use vfpool_sysfs::{DeviceKind, Netdev};

    use super::*;

    /// `discover` shows the facts the agent adds for policies (a policy author could not see
    /// why the default selector left the uplink out), beside what sysfs tells and the node facts.
    #[test]
    fn discover_shows_what_the_agent_adds_for_policies() {
        let mut uplink = Device::unknown("0000:19:00.0", DeviceKind::Pf);
        uplink.netdevs = vec![Netdev {
            name: "eno1".into(),
            link_type: Some("ether".into()),
            operstate: Some("up".into()),
            carrier: Some(true),
            mac: None,
            mtu: Some(1500),
            phys_port_name: None,
            phys_switch_id: None,
            bond: None,
        }];
        let other = Device::unknown("0000:3b:00.0", DeviceKind::Pf);
        let inventory = Inventory {
            devices: vec![uplink, other],
            node: NodeFacts {
                vhost_net: true,
                ..NodeFacts::default()
            },
        };
        let mut facts = HostFacts::default();
        facts.default_route_netdevs.insert("eno1".into());
        facts.rdma_enabled.insert("0000:3b:00.0".into(), false);
        facts
            .ddp_profiles
            .insert("0000:3b:00.0".into(), "ICE COMMS Package".into());

        let document = DiscoverJson::new(&inventory, &facts);
        let json = serde_json::to_value(&document).unwrap();
        let devices = json["devices"].as_array().unwrap();
        assert_eq!(devices[0]["id"], "0000:19:00.0");
        assert_eq!(devices[0]["kind"], "pf");
        assert_eq!(devices[0]["carriesDefaultRoute"], true);
        assert_eq!(devices[0]["devlinkEnableRdma"], serde_json::Value::Null);
        assert_eq!(devices[1]["carriesDefaultRoute"], false);
        assert_eq!(devices[1]["devlinkEnableRdma"], false);
        assert_eq!(devices[1]["ddpProfile"], "ICE COMMS Package");
        assert_eq!(json["node"]["vhostNet"], true);

        let text = table(&document.devices);
        assert!(text.contains("default-route"), "{text}");
        assert!(
            text.contains("enable_rdma=false,ddp=ICE COMMS Package"),
            "{text}"
        );
    }
}
