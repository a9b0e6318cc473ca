//! Host facts: what the agent adds to the inventory that sysfs cannot tell
//! ([`vfpool_policy::HostFacts`]), gathered in one place for `vfpool run` (on every rescan),
//! `vfpool pools` and `vfpool policy check`.
//!
//! - Default-route netdevs, from `/proc/net/route` (upstream never pools them).
//! - `enable_rdma` per function, from one `devlink -j dev param show` dump: upstream's `isRdma`
//!   also accepts a device whose devlink parameter is true, which covers an exclusive-RDMA VF whose
//!   RDMA device sits in a pod's network namespace (upstream #565).
//! - DDP package names, from `devlink -j dev info pci/<PF>` (`fw.app.name`, ice) for network PFs
//!   that have a devlink instance. The package is loaded per adapter and parses the VFs' traffic
//!   too, so a PF's package is also reported for each of its VFs — what upstream's code means to
//!   do (devlink on the device, then on its PF, then ddptool; its devlink check is called with the
//!   wrong arguments so it never gets there, reference §2).
//!
//! Cost on a 1,024-VF node: two bulk queries (`dev show`, `dev param show`) plus one `dev info`
//! per network PF with a devlink instance — never a process per VF. Spawning devlink once per
//! function would be ~1,000 processes (~2 ms each here) per rescan on a 2-core node.
//!
//! Anything devlink cannot answer (no program, no kernel support, unsupported device, a timeout,
//! garbage output) leaves that fact unknown (`None`/absent) and is logged once at debug level per
//! kind of failure: it never stops the agent. Facts describe this machine, so they are gathered only
//! when the sysfs root is the real `/sys`; a simulated node gets none.

pub mod devlink;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use vfpool_policy::HostFacts;
use vfpool_sysfs::{CLASS_NETWORK, DeviceKind, Inventory};

use self::devlink::{Devlink, DevlinkCli, DevlinkError, Query};

/// Gathers [`HostFacts`] for an inventory. Keep one per process: it remembers which problems it
/// has already logged.
pub struct FactsGatherer {
    source: Option<Source>,
    logged: Mutex<BTreeSet<String>>,
}

/// Where the facts of a real node come from.
struct Source {
    route_table: PathBuf,
    devlink: Box<dyn Devlink>,
}

impl FactsGatherer {
    /// Facts for the devices under `sysfs_root`: this machine's (`/proc/net/route`, iproute2's
    /// devlink) when the root is the real `/sys`, none for a simulated node.
    pub fn for_sysfs_root(sysfs_root: &Path) -> Self {
        let real = std::fs::canonicalize(sysfs_root).is_ok_and(|p| p == Path::new("/sys"));
        if real {
            FactsGatherer::new("/proc/net/route", Box::new(DevlinkCli::new()))
        } else {
            FactsGatherer::none()
        }
    }

    /// Facts from the given route table file and devlink.
    pub fn new(route_table: impl Into<PathBuf>, devlink: Box<dyn Devlink>) -> Self {
        FactsGatherer {
            source: Some(Source {
                route_table: route_table.into(),
                devlink,
            }),
            logged: Mutex::new(BTreeSet::new()),
        }
    }

    /// No facts at all (a simulated node).
    pub fn none() -> Self {
        FactsGatherer {
            source: None,
            logged: Mutex::new(BTreeSet::new()),
        }
    }

    /// The facts about `inventory`'s devices now. Never fails: what cannot be learned stays unknown.
    pub fn gather(&self, inventory: &Inventory) -> HostFacts {
        let Some(source) = &self.source else {
            return HostFacts::default();
        };
        let routes = match std::fs::read_to_string(&source.route_table) {
            Ok(text) => text,
            Err(e) => {
                self.once(
                    format!("routes:{}", e.kind()),
                    || tracing::debug!(path = %source.route_table.display(), error = %e, "default routes unknown: cannot read the route table"),
                );
                String::new()
            }
        };
        let mut facts = HostFacts {
            default_route_netdevs: HostFacts::default_routes_from_proc(&routes),
            ..HostFacts::default()
        };
        // Stop asking devlink in this round once it is clearly not there.
        let Some(handles) = self.ask(source, &Query::Devices, devlink::parse_devices) else {
            return facts;
        };
        let handles: BTreeSet<String> = handles.into_iter().collect();
        if handles.is_empty() {
            return facts;
        }
        facts.rdma_enabled = self.enable_rdma(source, inventory);
        facts.ddp_profiles = self.ddp_profiles(source, inventory, &handles);
        facts
    }

    fn enable_rdma(&self, source: &Source, inventory: &Inventory) -> BTreeMap<String, bool> {
        let Some(scan) = self.ask(source, &Query::AllParams, devlink::parse_enable_rdma) else {
            return BTreeMap::new();
        };
        for problem in &scan.skipped {
            self.once(format!("param:{problem}"), || {
                tracing::debug!(problem = %problem, "devlink: enable_rdma unknown for one device");
            });
        }
        inventory
            .devices
            .iter()
            .filter_map(|d| {
                let value = scan.enable_rdma.get(&handle(d.kind, &d.id))?;
                Some((d.id.clone(), *value))
            })
            .collect()
    }

    fn ddp_profiles(
        &self,
        source: &Source,
        inventory: &Inventory,
        handles: &BTreeSet<String>,
    ) -> BTreeMap<String, String> {
        let mut profiles = BTreeMap::new();
        let pfs = inventory.devices.iter().filter(|d| {
            d.kind == DeviceKind::Pf
                && d.driver.is_some()
                && d.base_class() == Some(CLASS_NETWORK)
                && handles.contains(&handle(d.kind, &d.id))
        });
        for pf in pfs {
            let pci = handle(pf.kind, &pf.id);
            let query = Query::Info(pci.clone());
            let answer = match source.devlink.query(&query) {
                Ok(bytes) => devlink::parse_ddp_name(&bytes, &pci),
                Err(e) => Err(e),
            };
            match answer {
                Ok(Some(name)) => {
                    profiles.insert(pf.id.clone(), name.clone());
                    let vfs = inventory.devices.iter().filter(|d| {
                        d.kind == DeviceKind::Vf && d.pf_id.as_deref() == Some(pf.id.as_str())
                    });
                    for vf in vfs {
                        profiles.insert(vf.id.clone(), name.clone());
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    let stop = e.is_unavailable() || matches!(e, DevlinkError::Timeout { .. });
                    self.note(&query, &e);
                    // A missing program or a wedged driver will not answer the next PF either:
                    // bound the round's cost.
                    if stop {
                        break;
                    }
                }
            }
        }
        profiles
    }

    /// Runs `query` and parses its output; `None` (logged once) if either fails.
    fn ask<T>(
        &self,
        source: &Source,
        query: &Query,
        parse: impl FnOnce(&[u8]) -> Result<T, DevlinkError>,
    ) -> Option<T> {
        match source.devlink.query(query).and_then(|bytes| parse(&bytes)) {
            Ok(value) => Some(value),
            Err(e) => {
                self.note(query, &e);
                None
            }
        }
    }

    fn note(&self, query: &Query, error: &DevlinkError) {
        let key = match error {
            // Per program, not per query: one line says "no devlink here".
            e if e.is_unavailable() => format!("devlink:{}", e.kind()),
            e => format!("{}:{}", query.args().join(" "), e.kind()),
        };
        self.once(key, || {
            tracing::debug!(
                query = %query.args().join(" "),
                kind = error.kind(),
                error = %error_chain(error),
                "devlink: facts unknown"
            );
        });
    }

    /// Runs `log` the first time `key` is seen.
    fn once(&self, key: String, log: impl FnOnce()) {
        let fresh = self
            .logged
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key);
        if fresh {
            log();
        }
    }

    #[cfg(test)]
    fn logged(&self) -> Vec<String> {
        self.logged
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }
}

/// The devlink handle of a device: `pci/<address>` for PCI functions, `auxiliary/<name>` for
/// auxiliary devices (sub-functions), as upstream builds it.
fn handle(kind: DeviceKind, id: &str) -> String {
    match kind {
        DeviceKind::Aux => format!("auxiliary/{id}"),
        DeviceKind::Pf | DeviceKind::Vf => format!("pci/{id}"),
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests;
