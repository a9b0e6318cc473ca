//! `vfpool pools`: what the active policies make of this node — discovery, then the selector from
//! `--policy-dir` (or the embedded default) with `--config-file`, exactly as the agent would accept
//! them — without serving anything.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;
use vfpool_deviceplugin::Health;
use vfpool_deviceplugin::health::health;
use vfpool_policy::{ActivePolicies, Limits, PolicyEngine, PolicyInventory, Sources};
use vfpool_sysfs::{DiscoveryError, Inventory, SysfsRoot};

use crate::cli::PoolsArgs;
use crate::exit::{CmdResult, Code, Failure, WithCode};
use crate::facts::FactsGatherer;

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
    let engine = PolicyEngine::new(Limits::default()).code(Code::Failure)?;
    let policies = ActivePolicies::new(engine).code(Code::Failure)?;
    let sources = Sources {
        policy_dir: Some(args.policy_dir.clone()),
        config_file: Some(args.config_file.clone()),
        default_resource_prefix: args.resource_prefix.clone(),
    };
    let outcome = policies.reload(&sources, &inventory);
    for note in &outcome.ignored {
        eprintln!("vfpool: ignored {note}");
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
    let pools: Vec<PoolJson> = active
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
                        numa_node: inventory.numa_node(&d.id),
                    })
                    .collect();
                devices.sort_by(|a, b| a.id.cmp(&b.id));
                devices
            },
        })
        .collect();
    if args.json {
        let json = serde_json::to_string_pretty(&PoolsJson { pools }).code(Code::Failure)?;
        println!("{json}");
    } else {
        println!("selector:  {}", active.selector.id());
        println!("allocator: {}", active.allocator.id());
        print!("{}", table(&pools));
    }
    Ok(())
}

fn discover(sysfs_root: &Path) -> Result<Inventory, Failure> {
    vfpool_sysfs::discover(&SysfsRoot::new(sysfs_root)).map_err(|error| Failure {
        code: match error {
            DiscoveryError::RootUnreadable { .. } | DiscoveryError::NoPciBus { .. } => {
                Code::BadInput
            }
            _ => Code::Failure,
        },
        error: error.into(),
    })
}

/// One row per pool: name, type, device count, NUMA nodes, then the device ids.
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
        let mut numa: Vec<String> = pool
            .devices
            .iter()
            .map(|d| {
                d.numa_node
                    .map_or_else(|| "-".to_string(), |n| n.to_string())
            })
            .collect();
        numa.sort();
        numa.dedup();
        let ids: Vec<&str> = pool.devices.iter().map(|d| d.id.as_str()).collect();
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
            if ids.is_empty() {
                "-".to_string()
            } else {
                ids.join(" ")
            }
        );
    }
    out
}
