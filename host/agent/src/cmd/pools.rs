//! `vfpool pools`: what the active policies make of this node — discovery, then the selector from
//! `--policy-dir` (or the embedded default) with `--config-file`, exactly as the agent would accept
//! them — without serving anything. What it shows is what the agent would serve: pools sorted by
//! resource name, devices by id, with the health and NUMA node kubelet would be told (none for a
//! pool with `excludeTopology`).

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;
use vfpool_deviceplugin::Health;
use vfpool_deviceplugin::health::health;
use vfpool_policy::{ActivePolicies, Limits, PolicyEngine, PolicyInventory, Sources};
use vfpool_sysfs::{Inventory, SysfsRoot};

use crate::cli::PoolsArgs;
use crate::exit::{CmdResult, Code, Failure, WithCode};
use crate::facts::FactsGatherer;
use crate::output::{Output, complain};

/// `{"pools":[{"resourceName":..,"deviceType":..,"devices":[{"id","health","numaNode"}]}]}`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PoolsJson {
    pools: Vec<PoolJson>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PoolJson {
    resource_name: String,
    device_type: &'static str,
    devices: Vec<PoolDeviceJson>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PoolDeviceJson {
    id: String,
    health: &'static str,
    numa_node: Option<u32>,
}

pub fn run(args: &PoolsArgs) -> CmdResult {
    let inventory = discover(&args.sysfs.sysfs_root)?;
    let facts = FactsGatherer::for_sysfs_root(&args.sysfs.sysfs_root).gather(&inventory);
    let devices = inventory;
    let inventory = PolicyInventory::new(&devices, &facts);
    let engine = PolicyEngine::with_compiler(Limits::default(), None, args.compile.compiler())
        .code(Code::Failure)?;
    let policies = ActivePolicies::new(engine).code(Code::Failure)?;
    let sources = Sources {
        policy_dir: Some(args.policy_dir.clone()),
        config_file: Some(args.config_file.clone()),
        default_resource_prefix: args.resource_prefix.clone(),
    };
    let outcome = policies.reload(&sources, &inventory);
    for note in &outcome.not_policies {
        complain!("vfpool: warning: {note}");
    }
    for note in &outcome.ignored {
        complain!("vfpool: ignored {note}");
    }
    // The agent ignores a module cut off before its end (it may be being written); here nothing
    // is, so it is a broken artifact, and this command is the check before shipping one.
    if !outcome.cut_off.is_empty() {
        let files: Vec<String> = outcome
            .cut_off
            .iter()
            .map(|path| path.display().to_string())
            .collect();
        return Err(Failure {
            code: Code::BadInput,
            error: anyhow::anyhow!(
                "not whole WebAssembly components (they end in the middle of a section; a running agent would ignore them): {}",
                files.join(", ")
            ),
        });
    }
    let active = match (outcome.refused.is_empty(), outcome.active) {
        (true, Some(active)) => active,
        _ => {
            return Err(Failure {
                code: Code::BadInput,
                error: anyhow::anyhow!(
                    "the policies or the config were refused:\n  {}",
                    outcome.refused.join("\n  ")
                ),
            });
        }
    };
    let mut pools: Vec<PoolJson> = active
        .pools
        .iter()
        .map(|p| PoolJson {
            resource_name: p.resource_name.clone(),
            device_type: p.device_type.as_str(),
            devices: {
                // The health the agent would advertise (PF link down, driver gone: Unhealthy).
                let mut devices: Vec<PoolDeviceJson> = p
                    .devices
                    .iter()
                    .map(|d| PoolDeviceJson {
                        id: d.id.clone(),
                        health: devices
                            .get(&d.id)
                            .map_or(Health::Unhealthy, |device| health(device, &devices))
                            .as_str(),
                        // As the agent advertises it: kubelet gets no topology for such a pool,
                        // so its Topology Manager does not align it (the deviceplugin's
                        // `PoolSnapshot::view`).
                        numa_node: if p.exclude_topology {
                            None
                        } else {
                            inventory.numa_node(&d.id)
                        },
                    })
                    .collect();
                devices.sort_by(|a, b| a.id.cmp(&b.id));
                devices
            },
        })
        .collect();
    // Stable output whatever the order of the config's resourceList or the policy's pools.
    pools.sort_by(|a, b| a.resource_name.cmp(&b.resource_name));
    let text = if args.json {
        let json = serde_json::to_string_pretty(&PoolsJson { pools }).code(Code::Failure)?;
        json + "\n"
    } else {
        format!(
            "selector:  {}\nallocator: {}\n{}",
            active.selector.id(),
            active.allocator.id(),
            table(&pools)
        )
    };
    Output::stdout().print(&text)
}

fn discover(sysfs_root: &Path) -> Result<Inventory, Failure> {
    vfpool_sysfs::discover(&SysfsRoot::new(sysfs_root)).map_err(super::discover::discovery_failure)
}

/// How many device ids a table row lists; `--json` lists them all.
const TABLE_IDS: usize = 4;

/// One row per pool: name, type, device count, NUMA nodes, then the first [`TABLE_IDS`] device
/// ids (a catch-all pool on a large node would otherwise be one row of thousands of characters).
fn table(pools: &[PoolJson]) -> String {
    let mut out = String::new();
    let name_width = pools
        .iter()
        .map(|p| p.resource_name.len())
        .max()
        .unwrap_or(0)
        .max("RESOURCE".len());
    let _ = writeln!(
        out,
        "{:<name_width$}  {:<12}  {:>5}  {:<6}  DEVICES",
        "RESOURCE", "TYPE", "COUNT", "NUMA"
    );
    for pool in pools {
        // Nodes in numeric order (2 before 10), an unknown node ("-") last.
        let nodes: std::collections::BTreeSet<Option<u32>> =
            pool.devices.iter().map(|d| d.numa_node).collect();
        let numa: Vec<String> = nodes
            .iter()
            .flatten()
            .map(u32::to_string)
            .chain(nodes.contains(&None).then(|| "-".to_string()))
            .collect();
        let _ = writeln!(
            out,
            "{:<name_width$}  {:<12}  {:>5}  {:<6}  {}",
            pool.resource_name,
            pool.device_type,
            pool.devices.len(),
            if numa.is_empty() {
                "-".to_string()
            } else {
                numa.join(",")
            },
            device_ids(&pool.devices)
        );
    }
    out
}

/// "id1 id2 id3 id4 … and N more", or "-" for none.
fn device_ids(devices: &[PoolDeviceJson]) -> String {
    if devices.is_empty() {
        return "-".to_string();
    }
    let mut ids = devices
        .iter()
        .take(TABLE_IDS)
        .map(|d| d.id.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    if let Some(more) = devices.len().checked_sub(TABLE_IDS).filter(|&n| n > 0) {
        let _ = write!(ids, " … and {more} more");
    }
    ids
}

#[cfg(test)]
mod tests {
    use super::{PoolDeviceJson, PoolJson, TABLE_IDS, table};

    fn pool(name: &str, count: usize) -> PoolJson {
        PoolJson {
            resource_name: name.to_string(),
            device_type: "netDevice",
            devices: (0..count)
                .map(|i| PoolDeviceJson {
                    id: format!("0000:3b:{:02x}.{}", i / 8, i % 8),
                    health: "Healthy",
                    numa_node: Some(0),
                })
                .collect(),
        }
    }

    /// A catch-all pool on the 1,024-VF node used to be one row of 13,355 characters.
    #[test]
    fn a_large_pool_lists_its_first_ids_and_counts_the_rest() {
        let text = table(&[pool("intel.com/all", 1024)]);
        let row = text.lines().nth(1).unwrap();
        assert!(row.len() < 200, "{row}");
        assert!(row.contains(" 1024 "), "{row}");
        assert!(
            row.contains("0000:3b:00.0 0000:3b:00.1 0000:3b:00.2 0000:3b:00.3 … and 1020 more"),
            "{row}"
        );
        assert!(!row.contains("0000:3b:00.4"), "{row}");
    }

    /// NUMA nodes were sorted as text ("10,2"); an unknown one comes last.
    #[test]
    fn numa_nodes_are_listed_in_numeric_order() {
        let mut spread = pool("intel.com/spread", 4);
        for (device, node) in spread
            .devices
            .iter_mut()
            .zip([Some(10), None, Some(2), Some(10)])
        {
            device.numa_node = node;
        }
        let text = table(&[spread]);
        let row = text.lines().nth(1).unwrap();
        assert!(row.contains(" 2,10,-  "), "{row}");
    }

    #[test]
    fn a_small_pool_lists_every_id_and_an_empty_one_a_dash() {
        let text = table(&[pool("intel.com/a", TABLE_IDS), pool("intel.com/none", 0)]);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[1].ends_with("0000:3b:00.0 0000:3b:00.1 0000:3b:00.2 0000:3b:00.3"));
        assert!(!lines[1].contains("more"), "{}", lines[1]);
        assert!(lines[2].ends_with(" -"), "{}", lines[2]);
    }
}
