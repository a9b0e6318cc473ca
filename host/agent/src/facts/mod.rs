//! Host facts: what the agent adds to the inventory that sysfs cannot tell
//! ([`vfpool_policy::HostFacts`]), gathered in one place for `vfpool run` (on every rescan),
//! `vfpool pools` and `vfpool policy check`.
//!
//! - Default-route netdevs, from `/proc/net/route` (upstream never pools them).
//! - `enable_rdma` per function, from one `devlink -j dev param show` dump: upstream's `isRdma`
//!   also accepts a device whose devlink parameter is true, which covers an exclusive-RDMA VF whose
//!   RDMA device sits in a pod's network namespace (upstream #565).
//! - DDP package names, from `devlink -j dev info pci/<PF>` (`fw.app.name`) for bound network PFs
//!   driven by `ice` that have a devlink instance: ice is the driver that reports the running DDP
//!   package through devlink (other drivers have no `fw.app.name`, so asking them only costs a
//!   process). The package is loaded per adapter and parses the VFs' traffic too, so a PF's package
//!   is also reported for each of its VFs — what upstream's code means to do (devlink on the
//!   device, then on its PF, then ddptool; its devlink check is called with the wrong arguments so
//!   it never gets there, reference §2).
//!
//! Cost on a 1,024-VF node: two bulk queries (`dev show`, `dev param show`) plus one `dev info`
//! per ice PF with a devlink instance — never a process per VF. Spawning devlink once per
//! function would be ~1,000 processes (~2 ms each here) per rescan on a 2-core node.
//!
//! Anything devlink cannot answer (no program, no kernel support, unsupported device, a timeout,
//! garbage output) never stops the agent. A fact devlink has answered before keeps its last good
//! value when a later query fails (so pools do not flap on a transient failure); one it never
//! answered stays unknown (`None`/absent). A timeout or an unavailable devlink ends the round's
//! devlink queries: the next would most likely fail the same way. Failures are logged once at debug
//! level per kind, except that devlink being unavailable on a node whose devices have devlink facts
//! (see [`DEVLINK_FACT_DRIVERS`]) is one warning per process. Facts describe this machine, so they
//! are gathered only when the sysfs root is a sysfs mount (`/sys`, or the host's sysfs mounted
//! elsewhere in a pod); a simulated node gets none.

pub mod devlink;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

use vfpool_policy::HostFacts;
use vfpool_sysfs::{CLASS_NETWORK, Device, DeviceKind, Inventory};

use self::devlink::{Devlink, DevlinkCli, DevlinkError, Query};

/// The drivers whose devices devlink has facts about: `ice` (the DDP package, `enable_rdma` for
/// irdma) and `mlx5_core` (`enable_rdma`). A node with a bound network PF of one of them is told
/// loudly when devlink is unavailable, since `isRdma`/`ddpProfiles` selectors may rely on it.
pub const DEVLINK_FACT_DRIVERS: [&str; 2] = ["ice", "mlx5_core"];

/// The driver whose PFs report the running DDP package (`fw.app.name`) through devlink.
const DDP_DRIVER: &str = "ice";

/// Gathers [`HostFacts`] for an inventory. Keep one per process: it remembers which problems it
/// has already logged and the last good devlink answers.
pub struct FactsGatherer {
    source: Option<Source>,
    logged: Mutex<BTreeSet<String>>,
    /// Whether the "devlink is unavailable" warning was given (once per process).
    warned_unavailable: AtomicBool,
    last: Mutex<LastGood>,
}

/// The last devlink answers that could be used, for a round in which a query fails.
#[derive(Debug, Default)]
struct LastGood {
    /// Netdevs carrying a default route, from the last route table that could be read.
    default_routes: Option<BTreeSet<String>>,
    /// `enable_rdma` by devlink handle, from the last `dev param show` that parsed.
    enable_rdma: Option<BTreeMap<String, bool>>,
    /// The DDP package (or none) by PF id, from each PF's last `dev info` that parsed.
    ddp: BTreeMap<String, Option<String>>,
}

/// Where the facts of a real node come from.
struct Source {
    route_table: PathBuf,
    devlink: Box<dyn Devlink>,
}

/// One round of devlink queries.
struct Round<'a> {
    source: &'a Source,
    /// Whether the inventory has devices devlink has facts about ([`DEVLINK_FACT_DRIVERS`]).
    needed: bool,
    /// A query timed out or devlink is unavailable: ask nothing more this round.
    stopped: bool,
}

impl FactsGatherer {
    /// Facts for the devices under `sysfs_root`: this machine's (`/proc/net/route`, iproute2's
    /// devlink) when the root is a sysfs mount ([`vfpool_sysfs::is_sysfs_mount`]: only then do
    /// host facts describe its devices), none for a simulated node.
    pub fn for_sysfs_root(sysfs_root: &Path) -> Self {
        FactsGatherer::for_host_sysfs(vfpool_sysfs::is_sysfs_mount(sysfs_root))
    }

    /// This machine's facts (`/proc/net/route`, iproute2's devlink) when the sysfs root is its own
    /// (`host_sysfs`, as [`vfpool_sysfs::is_sysfs_mount`] decided it), none otherwise.
    pub fn for_host_sysfs(host_sysfs: bool) -> Self {
        if host_sysfs {
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
            warned_unavailable: AtomicBool::new(false),
            last: Mutex::new(LastGood::default()),
        }
    }

    /// No facts at all (a simulated node).
    pub fn none() -> Self {
        FactsGatherer {
            source: None,
            logged: Mutex::new(BTreeSet::new()),
            warned_unavailable: AtomicBool::new(false),
            last: Mutex::new(LastGood::default()),
        }
    }

    /// The facts about `inventory`'s devices now. Never fails: what cannot be learned keeps its
    /// last good value, or stays unknown.
    pub fn gather(&self, inventory: &Inventory) -> HostFacts {
        let Some(source) = &self.source else {
            return HostFacts::default();
        };
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        // The default route is a safety fact (the uplink is never pooled): a table that cannot be
        // read keeps the last one that could, and says so at warning level.
        let default_route_netdevs = match std::fs::read(&source.route_table) {
            Ok(bytes) => {
                // Interface names are bytes: one that is not UTF-8 reads lossily, as discovery
                // names such a netdev (and keeps it out of pools), instead of the whole table
                // failing to read.
                let routes = HostFacts::default_routes_from_proc(&String::from_utf8_lossy(&bytes));
                last.default_routes = Some(routes.clone());
                // A later outage is worth a warning again.
                self.logged
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .retain(|key| !key.starts_with("routes:"));
                routes
            }
            Err(e) => {
                self.once(
                    format!("routes:{}", e.kind()),
                    || tracing::warn!(
                        path = %source.route_table.display(),
                        error = %e,
                        kept_from_before = last.default_routes.is_some(),
                        "cannot read the route table: the netdevs carrying the default route are those last read, or none (then the uplink may be pooled)"
                    ),
                );
                last.default_routes.clone().unwrap_or_default()
            }
        };
        let mut facts = HostFacts {
            default_route_netdevs,
            ..HostFacts::default()
        };
        let mut round = Round {
            source,
            needed: inventory.devices.iter().any(|d| {
                is_bound_network_pf(d)
                    && d.driver
                        .as_deref()
                        .is_some_and(|driver| DEVLINK_FACT_DRIVERS.contains(&driver))
            }),
            stopped: false,
        };
        // `None`: the instances are unknown this round (the query failed).
        let handles = self
            .ask(&mut round, &Query::Devices, devlink::parse_devices)
            .map(|handles| handles.into_iter().collect::<BTreeSet<String>>());
        if handles.is_none() {
            // Whatever went wrong, the other queries would not do better this round.
            round.stopped = true;
        }
        if handles.as_ref().is_some_and(BTreeSet::is_empty) {
            // Devlink answered: no instances, so no devlink facts (and none to keep); the default
            // routes are not devlink's.
            last.enable_rdma = None;
            last.ddp.clear();
            return facts;
        }
        self.enable_rdma(&mut round, &mut last);
        facts.rdma_enabled = last
            .enable_rdma
            .as_ref()
            .map(|by_handle| by_device(inventory, by_handle))
            .unwrap_or_default();
        facts.ddp_profiles = self.ddp_profiles(&mut round, &mut last, inventory, handles.as_ref());
        facts
    }

    /// Asks for `enable_rdma` of every instance, and records it as the last good answer.
    fn enable_rdma(&self, round: &mut Round<'_>, last: &mut LastGood) {
        if round.stopped {
            return;
        }
        let Some(scan) = self.ask(round, &Query::AllParams, devlink::parse_enable_rdma) else {
            return;
        };
        for problem in &scan.skipped {
            self.once(format!("param:{problem}"), || {
                tracing::debug!(problem = %problem, "devlink: enable_rdma unknown for one device");
            });
        }
        last.enable_rdma = Some(scan.enable_rdma);
    }

    /// The DDP package of each ice PF with a devlink instance (`handles`, `None` when unknown this
    /// round), and of its VFs. A PF whose query fails or is skipped keeps its last good answer.
    fn ddp_profiles(
        &self,
        round: &mut Round<'_>,
        last: &mut LastGood,
        inventory: &Inventory,
        handles: Option<&BTreeSet<String>>,
    ) -> BTreeMap<String, String> {
        let pfs = inventory
            .devices
            .iter()
            .filter(|d| is_bound_network_pf(d) && d.driver.as_deref() == Some(DDP_DRIVER));
        let mut by_pf: BTreeMap<String, Option<String>> = BTreeMap::new();
        for pf in pfs {
            let pci = handle(pf.kind, &pf.id);
            if handles.is_some_and(|handles| !handles.contains(&pci)) {
                continue;
            }
            let answer = if round.stopped {
                None
            } else {
                let query = Query::Info(pci.clone());
                self.ask(round, &query, |bytes| devlink::parse_ddp_name(bytes, &pci))
            };
            let package = match answer {
                Some(package) => package,
                None => match last.ddp.get(&pf.id) {
                    Some(package) => package.clone(),
                    None => continue,
                },
            };
            by_pf.insert(pf.id.clone(), package);
        }
        let mut profiles = BTreeMap::new();
        for (pf, package) in &by_pf {
            let Some(name) = package else { continue };
            profiles.insert(pf.clone(), name.clone());
            let vfs = inventory
                .devices
                .iter()
                .filter(|d| d.kind == DeviceKind::Vf && d.pf_id.as_deref() == Some(pf.as_str()));
            for vf in vfs {
                profiles.insert(vf.id.clone(), name.clone());
            }
        }
        last.ddp = by_pf;
        profiles
    }

    /// Runs `query` and parses its output; `None` (logged once) if either fails. A timeout or an
    /// unavailable devlink stops the round.
    fn ask<T>(
        &self,
        round: &mut Round<'_>,
        query: &Query,
        parse: impl FnOnce(&[u8]) -> Result<T, DevlinkError>,
    ) -> Option<T> {
        match round
            .source
            .devlink
            .query(query)
            .and_then(|bytes| parse(&bytes))
        {
            Ok(value) => Some(value),
            Err(e) => {
                if e.is_unavailable()
                    || matches!(e, DevlinkError::Timeout { .. } | DevlinkError::Stuck { .. })
                {
                    round.stopped = true;
                }
                self.note(query, &e, round.needed);
                None
            }
        }
    }

    /// Logs a failed query: once per kind at debug level, but devlink being unavailable on a node
    /// that has devices with devlink facts (`needed`) is one warning per process.
    fn note(&self, query: &Query, error: &DevlinkError, needed: bool) {
        let key = match error {
            // Per program, not per query: one line says "no devlink here".
            e if e.is_unavailable() => format!("devlink:{}", e.kind()),
            e => format!("{}:{}", query.args().join(" "), e.kind()),
        };
        if error.is_unavailable()
            && needed
            && !self.warned_unavailable.swap(true, Ordering::Relaxed)
        {
            self.once(key, || {});
            tracing::warn!(
                kind = error.kind(),
                error = %vfpool_policy::error_chain(error),
                "devlink is unavailable: enable_rdma and DDP package facts are unknown, so isRdma and ddpProfiles selectors see only what sysfs shows"
            );
            return;
        }
        self.once(key, || {
            tracing::debug!(
                query = %query.args().join(" "),
                kind = error.kind(),
                error = %vfpool_policy::error_chain(error),
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

/// A PF of network class bound to a driver.
fn is_bound_network_pf(device: &Device) -> bool {
    device.kind == DeviceKind::Pf
        && device.driver.is_some()
        && device.base_class() == Some(CLASS_NETWORK)
}

/// Per-handle values as per-device values, for the devices of `inventory`.
fn by_device<V: Clone>(
    inventory: &Inventory,
    by_handle: &BTreeMap<String, V>,
) -> BTreeMap<String, V> {
    inventory
        .devices
        .iter()
        .filter_map(|d| {
            let value = by_handle.get(&handle(d.kind, &d.id))?;
            Some((d.id.clone(), value.clone()))
        })
        .collect()
}

/// The devlink handle of a device: `pci/<address>` for PCI functions, `auxiliary/<name>` for
/// auxiliary devices (sub-functions), as upstream builds it.
fn handle(kind: DeviceKind, id: &str) -> String {
    match kind {
        DeviceKind::Aux => format!("auxiliary/{id}"),
        DeviceKind::Pf | DeviceKind::Vf => format!("pci/{id}"),
    }
}

#[cfg(test)]
mod tests;
