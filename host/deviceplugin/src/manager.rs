//! All pools of a node: starts, updates and stops pool servers as the pools change, watches the
//! kubelet directory for restarts (kubelet.sock recreated, pool sockets deleted) and asks
//! PodResources which devices pods hold before every change.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinHandle;
use vfpool_policy::{Pool, PoolDevice};
use vfpool_sysfs::{Inventory, SysfsRoot};

use crate::allocator::Allocator;
use crate::checkpoint;
use crate::health;
use crate::logs::{Ids, Took};
use crate::model::{Health, PoolSnapshot, Snapshot};
use crate::plan::{self, InUse};
use crate::podresources;
use crate::registration::Mode;
use crate::server::{self, Command, PoolHandle, PoolState};
use crate::serving::{ServingError, ServingThread};
use crate::uds;

/// Where the device plugin reads and writes.
#[derive(Debug, Clone)]
pub struct PluginConfig {
    /// Where pool servers get their connections (the real unix sockets, [`uds::UnixSocket`]).
    pub listen: Arc<dyn uds::Listen>,
    /// How many allocator calls may run at once, across all pools (default: one per core).
    pub allocator_concurrency: usize,
    /// kubelet's directory (`/var/lib/kubelet`).
    pub kubelet_dir: PathBuf,
    /// Where device-info files go (`/var/run/k8s.cni.cncf.io/devinfo/dp`).
    pub devinfo_dir: PathBuf,
    /// The sysfs root (for RDMA character devices at Allocate time).
    pub sysfs: SysfsRoot,
    /// How long GetPreferredAllocation waits for the allocator before the built-in order. Keep
    /// it, plus [`KUBELET_PREFERENCE_TO_ALLOCATE`], within half of `move_settle`: kubelet chooses
    /// a pod's devices from a list, asks for the preference, then calls Allocate with them, and a
    /// device a pool change withdrew meanwhile is granted only for the first half of
    /// `move_settle` (a longer preference call let that window close before its Allocate came,
    /// and the pod failed admission).
    pub allocator_timeout: Duration,
    /// How long a PodResources query may take.
    pub pod_resources_timeout: Duration,
    /// How long a device withdrawn from one pool stays out of every pool before it joins
    /// another: time for kubelet to take the old pool's new list, and for an Allocate it had
    /// already started from the old list to return and show in PodResources.
    pub move_settle: Duration,
    /// How long a registered pool may go without a ListAndWatch stream from kubelet before it
    /// registers again (kubelet dials a plugin only when it registers, and drops one for good when
    /// its stream ends: kubernetes#121994 drops the newest registration of a name when an older
    /// one's stream ends). Doubles while kubelet keeps not connecting, up to 5 minutes.
    pub stream_grace: Duration,
    /// Poll the socket directory at this interval instead of watching it with inotify. Polling
    /// (every second) is used anyway when inotify is unavailable (`fs.inotify.max_user_instances`
    /// exhausted by other pods), so the agent keeps following kubelet restarts instead of failing
    /// to start.
    pub poll_sockets: Option<Duration>,
    /// How long the first apply waits for PodResources to answer when it is expected (its
    /// directory is there) but cannot answer yet, as while kubelet restarts: with nothing served
    /// yet, a device a pod holds can only be kept out of other pools if its pod is known.
    pub pod_resources_first_wait: Duration,
    /// How long after a kubelet restart (its PodResources socket made anew) a device pods held
    /// before it counts as held whatever PodResources says: a restarted kubelet answers before it
    /// has learnt its pods from the API server, and an answer without a pod that still runs would
    /// free its devices for another pool (and another pod).
    pub kubelet_restart_grace: Duration,
    /// How long `Register` (legacy mode) may keep failing before it is logged as an error, once:
    /// see [`crate::registration::ESCALATE_AFTER`], the default.
    pub registration_error_after: Duration,
}

impl PluginConfig {
    /// Defaults for everything but the paths.
    pub fn new(kubelet_dir: PathBuf, devinfo_dir: PathBuf, sysfs: SysfsRoot) -> Self {
        PluginConfig {
            listen: Arc::new(uds::UnixSocket),
            allocator_concurrency: std::thread::available_parallelism().map_or(2, |n| n.get()),
            kubelet_dir,
            devinfo_dir,
            sysfs,
            allocator_timeout: Duration::from_millis(400),
            pod_resources_timeout: Duration::from_secs(2),
            move_settle: Duration::from_secs(1),
            stream_grace: Duration::from_secs(10),
            poll_sockets: None,
            pod_resources_first_wait: Duration::from_secs(30),
            kubelet_restart_grace: Duration::from_secs(60),
            registration_error_after: crate::registration::ESCALATE_AFTER,
        }
    }
}

/// How long kubelet takes from a GetPreferredAllocation answer to the Allocate it makes with it,
/// at most (it calls Allocate at once; the rest is scheduling on a busy node).
pub const KUBELET_PREFERENCE_TO_ALLOCATE: Duration = Duration::from_millis(100);

/// Why the device plugin could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The socket directory could not be created.
    #[error("cannot create the device-plugin socket directory {path}")]
    SocketDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The kubelet directory could not be watched.
    #[error("cannot watch {path} for kubelet restarts")]
    Watch {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: notify::Error,
    },
    /// The thread that serves kubelet's calls could not start.
    #[error("cannot start the thread that serves kubelet's calls")]
    Serving(#[source] ServingError),
}

/// What an [`DevicePlugins::apply`] changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ApplyReport {
    /// Pools that started serving.
    pub started: Vec<String>,
    /// Pools whose advertised devices changed (ListAndWatch updates sent).
    pub updated: Vec<String>,
    /// Pools that stopped serving.
    pub stopped: Vec<String>,
    /// Decisions worth logging (held devices, duplicates).
    pub notes: Vec<String>,
    /// Devices withdrawn from their pool to join another, out of every pool for now: apply again
    /// after `PluginConfig::move_settle` (an apply places them once they have waited that long
    /// and PodResources confirms no pod took them meanwhile).
    pub moving: Vec<String>,
    /// Devices that left their pool in this apply (for another pool or for none). For a moment
    /// Allocate may still grant one (kubelet chose it from the pool's previous list): apply again
    /// after `PluginConfig::move_settle`, so that one a pod got is listed again, held, in its
    /// pool (a kubelet restarting meanwhile readmits a pod only with its devices listed).
    pub departed: Vec<String>,
    /// Devices kept for the pod holding them in a pool the policy no longer puts them in: once
    /// released, such a device is free in that pool until the next apply moves it, so the caller
    /// should apply again soon (kubelet may otherwise hand it to a new pod of the old pool).
    pub holding: Vec<String>,
    /// PodResources answered this apply (or kubelet has no such API). While it cannot, moving
    /// devices wait: retrying every `move_settle` gains nothing, so the caller may back off.
    pub pod_resources_current: bool,
}

type Senders = Arc<Mutex<HashMap<PathBuf, mpsc::UnboundedSender<Command>>>>;

/// The node's device plugin: one server per pool.
pub struct DevicePlugins {
    /// Where the pools' servers run. Its thread outlives it until the stops under way (sent by
    /// `Drop` or `shutdown`) have finished, so the field's place in the drop order does not matter.
    serving: ServingThread,
    config: PluginConfig,
    mode: Mode,
    allocator: Arc<dyn Allocator>,
    allocator_permits: Arc<Semaphore>,
    pools: BTreeMap<String, PoolHandle>,
    senders: Senders,
    in_use: InUse,
    /// kubelet's PodResources socket was there at some point: its absence now means kubelet is
    /// restarting, not that it has no such API.
    pod_resources_seen: bool,
    /// An apply has run: only the first waits for PodResources (see
    /// [`PluginConfig::pod_resources_first_wait`]); later ones keep served devices where they are.
    applied: bool,
    /// The first apply waited in vain for a socket that never appeared in an existing
    /// `pod-resources` directory (a hostPath the runtime created, PodResources turned off): from
    /// then on the directory alone does not mean the API is there.
    pod_resources_absent: bool,
    /// The `pod-resources` directory is not there and that has been said (once: it is how the
    /// agent was deployed, not an outage).
    pod_resources_missing_said: bool,
    /// The last PodResources query failed: the warning is logged once per outage.
    pod_resources_failing: bool,
    /// The last read of kubelet's device-manager checkpoint failed (warned once per failure).
    checkpoint_failing: bool,
    /// kubelet's `pods` directory is not visible, and that has been said (once).
    pods_dir_missing_said: bool,
    /// The PodResources socket that last answered ([`kubelet_identity`]): another one means
    /// kubelet restarted.
    pod_resources_socket: Option<KubeletIdentity>,
    /// Until when what pods held before kubelet's restart stays held (see
    /// [`PluginConfig::kubelet_restart_grace`]).
    holding_through_restart: Option<Instant>,
    /// Devices withdrawn from a pool to move them elsewhere (id → when), kept out of every pool
    /// for `move_settle` and, while PodResources cannot answer, until it can (devices still on
    /// the node only: [`still_settling`]).
    withdrawn: BTreeMap<String, Instant>,
    /// What the previous apply said (planner notes, pools without devices): said again, it is a
    /// debug line, so a node in steady state is quiet at info level however long a pod holds a
    /// device or a resource matches nothing here.
    said: BTreeSet<String>,
    /// Pools being stopped, until their stop has finished: if the apply that stops them is
    /// abandoned half-way (the agent stopped meanwhile), the stops go on in their tasks and
    /// [`Self::shutdown`] waits for them, then cleans up what is left.
    stopping: BTreeMap<String, Stopping>,
    /// Some pool was served since the node last advertised nothing (for the one warning when
    /// no pool is left).
    advertising: bool,
    /// The inotify watcher, or the poller's task guard: dropped to stop following the directory.
    watcher: Option<Box<dyn Send>>,
    events: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for DevicePlugins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevicePlugins")
            .field("mode", &self.mode)
            .field("pools", &self.pools.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl DevicePlugins {
    /// Detects the registration mode and starts watching the socket directory. No pool is served
    /// until [`Self::apply`].
    pub fn start(config: PluginConfig, allocator: Arc<dyn Allocator>) -> Result<Self, StartError> {
        let mode = Mode::detect(&config.kubelet_dir);
        let dir = mode.dir().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|source| StartError::SocketDir {
            path: dir.clone(),
            source,
        })?;
        let senders: Senders = Arc::default();
        let (tx, rx) = mpsc::unbounded_channel();
        let handler = {
            let tx = tx.clone();
            move |event| {
                let _ = tx.send(event);
            }
        };
        let poll = |interval| -> Box<dyn Send> {
            Box::new(AbortOnDrop(tokio::spawn(poll_sockets(
                interval,
                mode.kubelet_socket(),
                Arc::clone(&senders),
                tx.clone(),
            ))))
        };
        let watcher = if let Some(interval) = config.poll_sockets {
            poll(interval)
        } else {
            match inotify_watcher(&dir, handler) {
                Ok(watcher) => watcher,
                Err(e) => {
                    tracing::warn!(
                        error = %vfpool_policy::error_chain(&e),
                        "cannot watch the socket directory with inotify (fs.inotify.max_user_instances or max_user_watches exhausted?); polling it every second instead"
                    );
                    poll(SOCKET_POLL_INTERVAL)
                }
            }
        };
        let events = tokio::spawn(watch_events(rx, mode.clone(), Arc::clone(&senders)));
        tracing::info!(
            mode = %mode.name(),
            registration_dir = %mode.dir().display(),
            "device plugin started"
        );
        let allocator_permits = Arc::new(Semaphore::new(config.allocator_concurrency.max(1)));
        let serving = ServingThread::start().map_err(StartError::Serving)?;
        Ok(DevicePlugins {
            serving,
            config,
            mode,
            allocator,
            allocator_permits,
            pools: BTreeMap::new(),
            senders,
            in_use: InUse::new(),
            pod_resources_seen: false,
            applied: false,
            pod_resources_absent: false,
            pod_resources_missing_said: false,
            withdrawn: BTreeMap::new(),
            said: BTreeSet::new(),
            stopping: BTreeMap::new(),
            advertising: false,
            pod_resources_failing: false,
            checkpoint_failing: false,
            pods_dir_missing_said: false,
            pod_resources_socket: None,
            holding_through_restart: None,
            watcher: Some(watcher),
            events: Some(events),
        })
    }

    /// The registration mode in use.
    pub fn mode(&self) -> &Mode {
        &self.mode
    }

    /// The snapshots being served, by resource name.
    pub fn snapshots(&self) -> BTreeMap<String, Snapshot> {
        self.pools
            .iter()
            .map(|(name, handle)| (name.clone(), handle.state.current()))
            .collect()
    }

    /// Asks PodResources which devices pods hold (by resource name) and keeps the answer; returns
    /// whether it is current. Not current: the query failed, or the socket is missing although
    /// kubelet has the API (it was there before, or its directory is: kubelet is restarting); the
    /// last answer is kept. A kubelet without the API (no directory, as when the DaemonSet does not
    /// mount it) has nothing to tell: current, and empty.
    pub async fn refresh_in_use(&mut self) -> bool {
        let dir = self.config.kubelet_dir.join(podresources::DIR);
        let socket = self.config.kubelet_dir.join(podresources::SOCKET);
        let failure = if !socket.exists() {
            if !self.pod_resources_seen && self.pod_resources_absent {
                return true;
            }
            if !self.pod_resources_seen && !dir.is_dir() {
                // Safe only while pools keep their devices: without it, a device a pod holds
                // looks free, and a pool change may offer it to another pod in another pool.
                if !std::mem::replace(&mut self.pod_resources_missing_said, true) {
                    tracing::warn!(
                        dir = %dir.display(),
                        "kubelet's pod-resources directory is not there (not mounted into the agent's pod, or a kubelet without the PodResources API): which devices pods hold is not known, so a pool change may move a device a pod holds into another pool; mount the directory to protect them"
                    );
                }
                return true;
            }
            "kubelet's PodResources socket is missing".to_string()
        } else {
            self.pod_resources_seen = true;
            match podresources::in_use(&socket, self.config.pod_resources_timeout).await {
                Ok(used) => {
                    let used = self.with_init_containers(used).await;
                    self.in_use = self.through_restarts(&socket, used);
                    if std::mem::take(&mut self.pod_resources_failing) {
                        tracing::info!("PodResources answers again; devices may move");
                    }
                    return true;
                }
                Err(e) => format!(
                    "cannot ask PodResources which devices are in use: {}",
                    vfpool_policy::error_chain(&e)
                ),
            }
        };
        // Once per outage (a kubelet restart is many applies long).
        if std::mem::replace(&mut self.pod_resources_failing, true) {
            tracing::debug!("{failure}; no served device moves");
        } else {
            tracing::warn!("{failure}; until it answers, no served device moves");
        }
        false
    }

    /// `used` (a PodResources answer) with the devices kubelet's device-manager checkpoint gives
    /// pods that are still there: PodResources does not report init containers, and a device
    /// only an init container got is the pod's until it ends ([`checkpoint`]). Without the
    /// checkpoint (unreadable, or kubelet's `pods` directory not visible to tell live pods from
    /// ended ones), `used` as it is, said once.
    async fn with_init_containers(&mut self, mut used: InUse) -> InUse {
        let kubelet_dir = self.config.kubelet_dir.clone();
        // Bounded like the PodResources call: a filesystem that hangs holds a blocking thread,
        // not the apply.
        let timeout = self.config.pod_resources_timeout;
        let read = tokio::time::timeout(
            timeout,
            tokio::task::spawn_blocking(move || checkpoint::held_by_live_pods(&kubelet_dir)),
        )
        .await;
        let failure = match read {
            Ok(Ok(Ok(Some(held)))) => {
                if std::mem::take(&mut self.checkpoint_failing) {
                    tracing::info!("kubelet's device-manager checkpoint is readable again");
                }
                for (resource, ids) in held {
                    used.entry(resource).or_default().extend(ids);
                }
                return used;
            }
            Ok(Ok(Ok(None))) => {
                if !std::mem::replace(&mut self.pods_dir_missing_said, true) {
                    tracing::info!(
                        dir = %self.config.kubelet_dir.join(checkpoint::PODS_DIR).display(),
                        "kubelet's pods directory is not visible: a device that only a pod's init container got (PodResources does not report init containers) is not known to be in use, and a pool change may move it; mount the directory read-only, with mountPropagation HostToContainer, to protect such devices"
                    );
                }
                return used;
            }
            Ok(Ok(Err(e))) => vfpool_policy::error_chain(&e),
            Ok(Err(join)) => format!("reading kubelet's device-manager checkpoint failed: {join}"),
            Err(_) => format!(
                "reading kubelet's device-manager checkpoint did not finish within {}",
                Took(timeout)
            ),
        };
        if !std::mem::replace(&mut self.checkpoint_failing, true) {
            tracing::warn!(
                error = %failure,
                "devices that only pods' init containers got are not known (PodResources does not report init containers); a pool change may move them"
            );
        }
        used
    }

    /// `used` (a PodResources answer from `socket`), or — within
    /// [`PluginConfig::kubelet_restart_grace`] of kubelet's restart, told by a new socket — `used`
    /// with every device pods held before: a restarted kubelet answers before it has learnt its
    /// pods again, and a pod missing from its answer has not let go of its devices.
    fn through_restarts(&mut self, socket: &Path, mut used: InUse) -> InUse {
        // Not the inode alone: a socket made right after one was deleted may get the same one.
        // A socket gone by the time it is looked at (kubelet stopping) says nothing: the next
        // kubelet's socket is compared with the last one seen, and its first answer starts the
        // grace, however long kubelet was away.
        if let Some(identity) = kubelet_identity(socket) {
            if self
                .pod_resources_socket
                .is_some_and(|seen| seen != identity)
            {
                let grace = self.config.kubelet_restart_grace;
                self.holding_through_restart = Some(Instant::now() + grace);
                tracing::info!(
                    grace = %Took(grace),
                    "kubelet restarted (a new PodResources socket): the devices its pods held stay held meanwhile, as it may not know all its pods again yet"
                );
            }
            self.pod_resources_socket = Some(identity);
        }
        match self.holding_through_restart {
            Some(until) if Instant::now() < until => {
                for (resource, ids) in &self.in_use {
                    used.entry(resource.clone())
                        .or_default()
                        .extend(ids.iter().cloned());
                }
            }
            Some(_) => self.holding_through_restart = None,
            None => {}
        }
        used
    }

    /// The first apply's wait for PodResources (see [`PluginConfig::pod_resources_first_wait`]):
    /// asks again, backing off up to 2 s, until it answers or the wait is over.
    async fn wait_for_pod_resources(&mut self) -> bool {
        let until = Instant::now() + self.config.pod_resources_first_wait;
        let mut backoff = server::Backoff::new(Duration::from_secs(2));
        while Instant::now() < until {
            let pause = backoff.next();
            tokio::time::sleep(pause.min(until.saturating_duration_since(Instant::now()))).await;
            if self.refresh_in_use().await {
                return true;
            }
        }
        if !self.pod_resources_seen {
            tracing::warn!(
                waited = %Took(self.config.pod_resources_first_wait),
                "kubelet's pod-resources directory has no socket; serving as without the PodResources API (which devices pods hold is not known)"
            );
            self.pod_resources_absent = true;
            self.pod_resources_failing = false;
            return true;
        }
        tracing::warn!(
            waited = %Took(self.config.pod_resources_first_wait),
            "PodResources still cannot answer; serving without knowing which devices pods hold (a device a pod got before this agent started may be offered in another pool if the pools changed)"
        );
        false
    }

    /// Serves `desired` (the selector policy's pools) over `inventory`: starts new pools, updates
    /// changed ones (ListAndWatch sends only on change), stops removed and emptied ones (as
    /// upstream, an empty pool gets no server; it first advertises an empty list), never moving a
    /// device a pod holds.
    pub async fn apply(&mut self, desired: &[Pool], inventory: &Inventory) -> ApplyReport {
        // What pods hold is read now, and a device's pool may change seconds later (pools stop,
        // answers are prepared): an Allocate in between gives a pod a device the plan thinks free.
        // Its device-info file, written then, is the pod's; the next apply sees the pod and keeps
        // the device where it is. A second before the read covers an Allocate kubelet had not
        // recorded yet when PodResources answered.
        let in_use_read_at = SystemTime::now()
            .checked_sub(Duration::from_secs(1))
            .unwrap_or(std::time::UNIX_EPOCH);
        let mut current = self.refresh_in_use().await;
        if !current && !self.applied {
            current = self.wait_for_pod_resources().await;
        }
        self.applied = true;
        let previous: BTreeMap<String, Snapshot> = self
            .pools
            .iter()
            .map(|(name, handle)| (name.clone(), handle.state.current()))
            .collect();
        // A withdrawn device served again (held where it was: a pod got it after all) is no longer
        // moving; one that has settled ([`still_settling`]) may join its new pool. The others
        // stay out of every pool this time.
        let settle = self.config.move_settle;
        self.withdrawn.retain(|id, since| {
            previous.values().all(|snapshot| snapshot.get(id).is_none())
                && still_settling(
                    inventory.get(id).is_some(),
                    current,
                    since.elapsed(),
                    settle,
                )
        });
        let mut in_use = self.in_use.clone();
        if !current {
            // Which devices pods hold is unknown: every served device counts as held where it is.
            // Nothing moves; nothing is handed out twice.
            for (name, snapshot) in &previous {
                let held = in_use.entry(name.clone()).or_default();
                held.extend(snapshot.members.iter().map(|m| m.id().to_owned()));
            }
        }
        let kept_out: Cow<'_, [Pool]> = if self.withdrawn.is_empty() {
            Cow::Borrowed(desired)
        } else {
            let moving = |d: &&PoolDevice| self.withdrawn.contains_key(&d.id);
            Cow::Owned(
                desired
                    .iter()
                    .map(|pool| Pool {
                        resource_name: pool.resource_name.clone(),
                        device_type: pool.device_type,
                        exclude_topology: pool.exclude_topology,
                        devices: pool
                            .devices
                            .iter()
                            .filter(|d| !moving(d))
                            .cloned()
                            .collect(),
                    })
                    .collect(),
            )
        };
        let plan = plan::plan(&kept_out, inventory, &previous, &in_use);
        // Moving from now; their settle time counts from when the old pools' lists are published
        // (below), not from now: stopping pools and preparing answers can take seconds.
        let newly_withdrawn = plan.withdrawn;
        // Moving: on its way to a pool that wants it. A device that left every pool and is not
        // wanted anywhere now is only settling (see below), with nothing to wait for.
        let wanted: HashSet<&str> = desired
            .iter()
            .flat_map(|pool| pool.devices.iter().map(|d| d.id.as_str()))
            .collect();
        let moving: BTreeSet<String> = self
            .withdrawn
            .keys()
            .chain(&newly_withdrawn)
            .filter(|id| wanted.contains(id.as_str()))
            .cloned()
            .collect();
        let mut report = ApplyReport {
            notes: plan.notes,
            moving: moving.into_iter().collect(),
            pod_resources_current: current,
            ..ApplyReport::default()
        };
        let mut said = BTreeSet::new();
        for note in &report.notes {
            self.say(&mut said, note.clone());
        }
        let incoming_by_pool = incoming(desired, &report.moving);
        let incoming = |name: &str| incoming_by_pool.get(name).copied().unwrap_or(0);

        let stopping: Vec<String> = self
            .pools
            .keys()
            .filter(|name| plan.pools.get(*name).is_none_or(|p| p.members.is_empty()))
            .cloned()
            .collect();
        for name in &stopping {
            // Emptied rather than removed from the pools: capacity drops to zero and pods asking
            // for the resource stay Pending. The cause goes before the stop it leads to.
            if plan.pools.contains_key(name) {
                self.say_empty(&mut said, name, incoming(name));
            }
        }
        self.stop_pools(&stopping, Some(in_use_read_at)).await;
        report.stopped.extend(stopping);

        // Preparing reads sysfs (three directories per RDMA member, a thousand members on a big
        // node): off the runtime's worker threads, which serve Allocate meanwhile.
        let sysfs = self.config.sysfs.clone();
        let pools = plan.pools;
        let prepared = tokio::task::spawn_blocking(move || {
            pools
                .into_iter()
                .map(|(name, mut snapshot)| {
                    snapshot.prepare(&sysfs);
                    (name, snapshot)
                })
                .collect::<Vec<_>>()
        })
        .await;
        let prepared = match prepared {
            Ok(prepared) => prepared,
            Err(e) => {
                tracing::error!(error = %e, "preparing the pools' Allocate answers failed; the pools are unchanged");
                // Still served where they were: nothing is moving.
                report.moving.retain(|id| self.withdrawn.contains_key(id));
                return report;
            }
        };
        // A member leaving its pool is in no pool until it settles: Allocate may still grant it
        // for the first half of that time (`PoolSnapshot::keep_departed`); the second half leaves
        // kubelet time to record the grant, so the apply after the settle time sees it in
        // PodResources and keeps the device where it was granted.
        let placed: HashSet<String> = prepared
            .iter()
            .flat_map(|(_, snapshot)| snapshot.members.iter().map(|m| m.id().to_owned()))
            .collect();
        let in_no_pool = |member: &crate::model::Member| {
            let device = &member.device;
            !placed.contains(&device.id)
                && inventory.get(&device.id).is_some_and(|now| {
                    now.kind == device.kind
                        && now.driver == device.driver
                        && now.aux_driver == device.aux_driver
                })
        };
        let departed_at = Instant::now();
        let grantable_until = departed_at + self.config.move_settle / 2;
        for (name, mut snapshot) in prepared {
            if let Some(handle) = self.pools.get(&name) {
                snapshot.keep_departed(
                    &handle.state.current(),
                    in_no_pool,
                    grantable_until,
                    departed_at,
                );
            }
            let snapshot: Snapshot = Arc::new(snapshot);
            match self.pools.get(&name) {
                Some(handle) => {
                    let before = handle.state.current();
                    let gone = before
                        .members
                        .iter()
                        .filter(|m| snapshot.get(m.id()).is_none())
                        .map(|m| m.id());
                    server::remove_device_infos(
                        &self.config.devinfo_dir,
                        &name,
                        gone,
                        Some(in_use_read_at),
                    );
                    if handle.state.update(Arc::clone(&snapshot)) {
                        log_pool_change(&name, &before, &snapshot, inventory);
                        report.updated.push(name);
                    }
                }
                None if snapshot.members.is_empty() => {
                    self.say_empty(&mut said, &name, incoming(&name));
                }
                None => {
                    self.start_pool(&name, Arc::clone(&snapshot));
                    log_health_changes(&name, None, &snapshot, inventory);
                    report.started.push(name);
                }
            }
        }
        // Every device that left its pool settles, timed from now (see `move_settle`): one the
        // plan withdrew for another pool, and one that left for none, as the next apply may want
        // it in another pool (a SIGHUP's reload and rescan, a policy that drops a device and then
        // picks it for another pool) while an Allocate from the old pool's list is on its way (it
        // used to join the other pool at once).
        let published = Instant::now();
        let now_served: HashSet<String> = self.served_ids(|_| true).into_iter().collect();
        for snapshot in previous.values() {
            for member in &snapshot.members {
                if !now_served.contains(member.id()) {
                    report.departed.push(member.id().to_owned());
                    self.withdrawn
                        .entry(member.id().to_owned())
                        .or_insert(published);
                }
            }
        }
        report.holding = self.served_ids(|m| m.held);
        if !self.pools.is_empty() {
            self.advertising = true;
        } else if self.advertising && report.moving.is_empty() {
            // Each stop was an info line, as one pool leaving is routine; the node advertising
            // nothing at all is what an emptied ConfigMap, or devices gone from the node, look
            // like. Said once it is so, not while devices are still on their way to a pool.
            self.advertising = false;
            tracing::warn!(
                "no pool is left: this node advertises no devices now (the active policies make no pool with devices, or the devices are gone; check the config and `vfpool discover`)"
            );
        }
        self.said = said;
        report
    }

    /// The ids of the members every pool serves now that `keep` keeps.
    fn served_ids(&self, keep: impl Fn(&crate::model::Member) -> bool) -> Vec<String> {
        self.pools
            .values()
            .flat_map(|handle| {
                handle
                    .state
                    .current()
                    .members
                    .iter()
                    .filter(|m| keep(m))
                    .map(|m| m.id().to_owned())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Logs `note` at info, or at debug if the previous apply said it too — by its topic, so that
    /// "97 devices stay in X …" after "98 devices stay in X …" (a pod released one) is not news;
    /// collects the topic in `said` for the next apply.
    fn say(&self, said: &mut BTreeSet<String>, note: String) {
        let topic = note_topic(&note).to_string();
        if self.said.contains(&topic) {
            tracing::debug!("{note}");
        } else {
            tracing::info!("{note}");
        }
        said.insert(topic);
    }

    /// Warns that pool `name` has no devices (pods asking for it stay Pending), once until it has
    /// some again: at debug if the previous apply said it, not at all if this one already did
    /// (when it stopped the pool). Only a debug line while `incoming` devices are on their way
    /// into it (a policy or config change moving them from another pool waits out the settle
    /// time first): that is a pool about to fill, and the move itself is logged.
    fn say_empty(&self, said: &mut BTreeSet<String>, name: &str, incoming: usize) {
        if incoming > 0 {
            tracing::debug!(resource = %name, incoming, "no devices in the pool until the devices moving into it settle");
            return;
        }
        let key = format!("no devices in the pool {name}");
        if said.contains(&key) {
            return;
        }
        if self.said.contains(&key) {
            tracing::debug!(resource = %name, "no devices in the pool; not advertising it");
        } else {
            tracing::warn!(
                resource = %name,
                "no devices in the pool; not advertising it (pods requesting the resource stay Pending)"
            );
        }
        said.insert(key);
    }

    fn start_pool(&mut self, name: &str, snapshot: Snapshot) {
        server::remove_device_infos(
            &self.config.devinfo_dir,
            name,
            snapshot.members.iter().map(|m| m.id()),
            None,
        );
        tracing::info!(
            resource = %name,
            devices = snapshot.members.len(),
            healthy = snapshot.healthy(),
            unhealthy = snapshot.members.len() - snapshot.healthy(),
            "starting pool"
        );
        let socket = self.mode.socket(name);
        if !crate::uds::fits_socket_address(&socket) {
            // Bound all the same (renamed into place): a kubelet that sees the directory under a
            // shorter path (the agent's a host mount) can still connect.
            tracing::warn!(
                resource = %name,
                socket = %socket.display(),
                bytes = socket.as_os_str().len(),
                "the pool's socket path is longer than the {} bytes a unix socket address holds: if kubelet sees this directory at this path (its --root-dir is --kubelet-dir), it cannot connect and the resource never appears; shorten the resource name",
                crate::uds::MAX_SOCKET_PATH
            );
        }
        let (tx, _) = watch::channel(snapshot);
        let state = Arc::new(PoolState {
            resource_name: name.to_string(),
            socket: socket.clone(),
            mode: self.mode.clone(),
            snapshot: tx,
            allocator: Arc::clone(&self.allocator),
            allocator_permits: Arc::clone(&self.allocator_permits),
            allocator_timeout: self.config.allocator_timeout,
            listen: Arc::clone(&self.config.listen),
            devinfo_dir: self.config.devinfo_dir.clone(),
            sysfs: self.config.sysfs.clone(),
            registered: Mutex::new(None),
            watcher_called: std::sync::atomic::AtomicBool::new(false),
            open_streams: watch::channel(0).0,
            stream_grace: self.config.stream_grace,
            registration_error_after: self.config.registration_error_after,
            socket_made: Mutex::new(None),
            registration_failing: Mutex::new(None),
        });
        let handle = server::spawn(state, &self.serving);
        self.senders
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(socket, handle.commands.clone());
        self.pools.insert(name.to_string(), handle);
    }

    /// Stops the pools named, all at once: each waits up to a few seconds for its streams and
    /// server to end, and a node with many pools (or kubelet holding every stream) must not wait
    /// that long once per pool — at shutdown, kubelet's grace period is running out.
    ///
    /// `kept_since`: device-info files written at or after it stay (see
    /// [`allocate::remove_device_info`](crate::allocate::remove_device_info)); `None` at shutdown.
    async fn stop_pools(&mut self, names: &[String], kept_since: Option<SystemTime>) {
        for name in names {
            self.begin_stop(name, kept_since);
        }
        // The stops run in their own tasks, all at once; waiting for one after another takes as
        // long as the slowest.
        for name in names {
            if let Some(stopping) = self.stopping.get_mut(name) {
                wait_for_stop(&self.config.devinfo_dir, name, stopping).await;
            }
            self.stopping.remove(name);
        }
    }

    /// Starts stopping pool `name`: it leaves the maps, kubelet hears it is empty, its server is
    /// told to stop, and a task waits for the server to end and removes the pool's files (but
    /// those written at or after `kept_since`: an Allocate from the pool's last list raced the
    /// change that stops it, and its pod reads the file at its CNI ADD).
    fn begin_stop(&mut self, name: &str, kept_since: Option<SystemTime>) {
        let Some(handle) = self.pools.remove(name) else {
            return;
        };
        self.senders
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&handle.state.socket);
        let last = handle.state.current();
        let superseded = handle.state.superseded();
        if superseded {
            // Another agent instance (a rolling update) serves the resource now, and kubelet
            // takes every list it gets for the resource name as the resource's devices, from
            // whichever stream: an empty list from this instance would wipe the new one's
            // devices. Its streams just end.
            tracing::info!(resource = %name, "another agent instance serves the pool's socket now; ending this one's streams without withdrawing the devices");
        } else {
            // Tell kubelet the pool is empty before going away, so no pod is admitted onto it
            // during kubelet's grace period (upstream PR #502).
            handle
                .state
                .update(Arc::new(PoolSnapshot::empty(name, last.device_type)));
        }
        let _ = handle.commands.send(Command::Stop);
        let ids: Vec<String> = last.members.iter().map(|m| m.id().to_owned()).collect();
        let state = Arc::clone(&handle.state);
        let finish = tokio::spawn(finish_stop(
            name.to_string(),
            handle,
            ids.clone(),
            self.config.devinfo_dir.clone(),
            kept_since,
        ));
        self.stopping.insert(
            name.to_string(),
            Stopping {
                state,
                ids,
                kept_since,
                finish,
            },
        );
    }

    /// Stops every pool: ends the streams, stops the servers, removes sockets and the device-info
    /// files of the devices the pools serve. (A file an earlier pool change kept for a racing
    /// Allocate's pod, of a device that then left the pool, is not swept: nothing reads it, and
    /// telling it from another instance's during a rolling update would need a listing of the
    /// directory.)
    pub async fn shutdown(mut self) {
        let names: Vec<String> = self.pools.keys().cloned().collect();
        self.stop_pools(&names, None).await;
        // Stops an abandoned apply began: their tasks went on; wait for them too. They kept the
        // files written during that apply, for pods; at shutdown every file of the agent's goes.
        for (name, mut stopping) in std::mem::take(&mut self.stopping) {
            wait_for_stop(&self.config.devinfo_dir, &name, &mut stopping).await;
            if !stopping.state.superseded() {
                server::remove_device_infos(
                    &self.config.devinfo_dir,
                    &name,
                    stopping.ids.iter().map(String::as_str),
                    None,
                );
            }
        }
        self.watcher.take();
        if let Some(events) = self.events.take() {
            events.abort();
        }
    }

    /// Whether the socket of `resource_name` is registered (legacy: Register succeeded; plugin
    /// watcher: kubelet notified success).
    pub fn registration(&self, resource_name: &str) -> Option<Result<(), String>> {
        self.pools.get(resource_name).and_then(|h| {
            h.state
                .registered
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()
        })
    }
}

impl Drop for DevicePlugins {
    fn drop(&mut self) {
        if let Some(events) = self.events.take() {
            events.abort();
        }
        for handle in self.pools.values() {
            let _ = handle.commands.send(Command::Stop);
        }
    }
}

/// Logs what changed in pool `name` from `before` to `after` (what kubelet sees changed): health
/// transitions as their own lines ([`log_health_changes`]), and the new counts, at info when
/// devices joined or left the pool and at debug when only health changed (the transition lines
/// said it).
fn log_pool_change(name: &str, before: &PoolSnapshot, after: &PoolSnapshot, inventory: &Inventory) {
    log_health_changes(name, Some(before), after, inventory);
    let added: Vec<&str> = after
        .members
        .iter()
        .filter(|m| before.get(m.id()).is_none())
        .map(|m| m.id())
        .collect();
    let removed: Vec<&str> = before
        .members
        .iter()
        .filter(|m| after.get(m.id()).is_none())
        .map(|m| m.id())
        .collect();
    let healthy = after.healthy();
    let unhealthy = after.members.len() - healthy;
    if added.is_empty() && removed.is_empty() {
        tracing::debug!(resource = %name, healthy, unhealthy, "pool changed");
    } else {
        // A list that is empty is left out (`added=` reads as a field gone wrong).
        let listed = |ids| (!<[&str]>::is_empty(ids)).then(|| tracing::field::display(Ids(ids)));
        tracing::info!(
            resource = %name,
            healthy,
            unhealthy,
            added = listed(&added),
            removed = listed(&removed),
            "pool changed"
        );
    }
}

/// Logs the devices of pool `name` that turned Unhealthy since `before` (or are Unhealthy as the
/// pool starts), a warning per reason naming them, and those that are Healthy again, at info.
/// kubelet stops handing out an Unhealthy device, so a pool's capacity drops with no other sign.
fn log_health_changes(
    name: &str,
    before: Option<&PoolSnapshot>,
    after: &PoolSnapshot,
    inventory: &Inventory,
) {
    let was = |id: &str| before.and_then(|b| b.get(id)).map(|m| m.health);
    let mut unhealthy: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    let mut recovered = Vec::new();
    for member in &after.members {
        match (member.health, was(member.id())) {
            (Health::Unhealthy, Some(Health::Unhealthy)) | (Health::Healthy, None) => {}
            (Health::Unhealthy, _) => {
                let reason = health::unhealthy_reason(&member.device, inventory)
                    .map_or_else(|| "unknown".to_string(), |r| r.to_string());
                unhealthy.entry(reason).or_default().push(member.id());
            }
            (Health::Healthy, Some(Health::Unhealthy)) => recovered.push(member.id()),
            (Health::Healthy, Some(Health::Healthy)) => {}
        }
    }
    for (reason, ids) in &unhealthy {
        tracing::warn!(
            resource = %name,
            count = ids.len(),
            devices = %Ids(ids),
            %reason,
            "devices Unhealthy; kubelet no longer hands them to new pods"
        );
    }
    if !recovered.is_empty() {
        tracing::info!(
            resource = %name,
            count = recovered.len(),
            devices = %Ids(&recovered),
            "devices Healthy again"
        );
    }
}

/// What a planner note is about, without its device count and ids: the planner says "N devices
/// <verb> …: id, id and M more" for a group of devices (see `plan`), which shrinks apply by apply
/// as pods release them.
fn note_topic(note: &str) -> &str {
    let counted = note.strip_prefix("1 device ").or_else(|| {
        note.split_once(" devices ")
            .filter(|(count, _)| !count.is_empty() && count.bytes().all(|b| b.is_ascii_digit()))
            .map(|(_, rest)| rest)
    });
    match counted {
        Some(rest) => rest.rsplit_once(": ").map_or(rest, |(topic, _)| topic),
        None => note,
    }
}

/// How often the socket directory is polled when inotify is unavailable.
const SOCKET_POLL_INTERVAL: Duration = Duration::from_secs(1);

fn inotify_watcher(
    dir: &Path,
    handler: impl notify::EventHandler,
) -> Result<Box<dyn Send>, StartError> {
    let watch_error = |source| StartError::Watch {
        path: dir.to_path_buf(),
        source,
    };
    let mut watcher = notify::recommended_watcher(handler).map_err(watch_error)?;
    watcher
        .watch(dir, RecursiveMode::NonRecursive)
        .map_err(watch_error)?;
    Ok(Box::new(watcher))
}

/// Aborts a task when dropped.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Which file kubelet's socket is: device, inode and modification time. A socket made right after
/// one was deleted may get the same inode (ext4), but not the same modification time. Not the
/// change time: `chmod` and `chown` change it, and a changed mode is not a kubelet restart (nor is
/// anything written through the socket: that changes no time of the file).
type KubeletIdentity = (u64, u64, i64, i64);

fn kubelet_identity(path: &Path) -> Option<KubeletIdentity> {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino(), m.mtime(), m.mtime_nsec()))
}

/// Polls what the inotify watcher would report, as the events [`watch_events`] takes: kubelet's
/// socket replaced (by its identity, [`kubelet_identity`]: a new file, however soon; a poll of
/// modification times alone, which have a resolution of a second there, missed a restart within
/// the second the agent started) and pool sockets gone.
async fn poll_sockets(
    interval: Duration,
    kubelet: Option<PathBuf>,
    senders: Senders,
    events: mpsc::UnboundedSender<notify::Result<notify::Event>>,
) {
    let mut kubelet_seen = kubelet.as_deref().and_then(kubelet_identity);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let report = |kind, path: &Path| {
            events
                .send(Ok(notify::Event::new(kind).add_path(path.to_path_buf())))
                .is_ok()
        };
        if let Some(kubelet) = &kubelet {
            let now = kubelet_identity(kubelet);
            if now != kubelet_seen {
                kubelet_seen = now;
                if now.is_some()
                    && !report(EventKind::Create(notify::event::CreateKind::File), kubelet)
                {
                    return;
                }
            }
        }
        let sockets: Vec<PathBuf> = senders
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect();
        for socket in sockets.iter().filter(|s| !path_exists(s)) {
            if !report(EventKind::Remove(notify::event::RemoveKind::File), socket) {
                return;
            }
        }
    }
}

/// Reacts to the socket directory: kubelet.sock (re)created → every pool registers again; a pool
/// socket removed → that pool re-binds it.
///
/// kubelet.sock counts as recreated when it is created or renamed into place, or when any other
/// event about it (or an overflowed event queue) finds another file there than before
/// ([`kubelet_identity`]). Its mode or owner changing (inotify's `IN_ATTRIB`, a metadata
/// modification) is not a restart: taken for one, a `chmod` made every pool register again.
async fn watch_events(
    mut events: mpsc::UnboundedReceiver<notify::Result<notify::Event>>,
    mode: Mode,
    senders: Senders,
) {
    use notify::event::{ModifyKind, RenameMode};

    let kubelet = mode.kubelet_socket();
    let mut kubelet_seen = kubelet.as_deref().and_then(kubelet_identity);
    while let Some(event) = events.recv().await {
        let event = match event {
            Ok(event) => event,
            Err(e) => {
                tracing::warn!(error = %e, "socket directory watch error");
                continue;
            }
        };
        let senders = senders
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let about_kubelet = event.need_rescan()
            || event
                .paths
                .iter()
                .any(|path| kubelet.as_deref() == Some(path.as_path()));
        // A removal is not looked at: kubelet deletes its socket and listens again within
        // microseconds, so when the removal is handled the new socket is often there already,
        // and taking it for the restart made the creation that follows a second one (every pool
        // registered twice, kubelet rebuilding its streams). The creation, or any later event
        // finding another socket, says it.
        if let Some(kubelet) = kubelet.as_deref()
            && about_kubelet
            && !matches!(event.kind, EventKind::Remove(_))
        {
            let now = kubelet_identity(kubelet);
            // A rename's both-ends event follows its `To` event: the identity check covers it.
            let placed = matches!(
                event.kind,
                EventKind::Create(_) | EventKind::Modify(ModifyKind::Name(RenameMode::To))
            ) && event.paths.iter().any(|path| path == kubelet);
            let recreated = now.is_some() && (placed || now != kubelet_seen);
            kubelet_seen = now;
            if recreated {
                tracing::info!(
                    socket = %kubelet.display(),
                    "kubelet.sock created (kubelet restarted); registering every pool again"
                );
                for sender in senders.values() {
                    let _ = sender.send(Command::Rebind);
                    let _ = sender.send(Command::Register);
                }
            }
        }
        for path in &event.paths {
            if kubelet.as_deref() == Some(path.as_path()) {
                continue;
            }
            if matches!(event.kind, EventKind::Remove(_))
                && !path_exists(path)
                && let Some(sender) = senders.get(path)
            {
                let _ = sender.send(Command::Rebind);
            }
        }
    }
}

/// How many of the `moving` devices (sorted) each pool of `desired` is to get once they settle:
/// as the planner places them, the first definition of a pool name and the first pool listing a
/// device winning.
fn incoming(desired: &[Pool], moving: &[String]) -> HashMap<String, usize> {
    let mut counts: HashMap<String, usize> = HashMap::new();
    if moving.is_empty() {
        return counts;
    }
    let mut placed = std::collections::HashSet::new();
    let mut defined = std::collections::HashSet::new();
    for pool in desired {
        if !defined.insert(pool.resource_name.as_str()) {
            continue;
        }
        let count = pool
            .devices
            .iter()
            .filter(|d| moving.binary_search(&d.id).is_ok() && placed.insert(d.id.as_str()))
            .count();
        if count > 0 {
            counts.insert(pool.resource_name.clone(), count);
        }
    }
    counts
}

/// A pool whose stop has begun ([`DevicePlugins::begin_stop`]).
struct Stopping {
    state: Arc<PoolState>,
    /// The devices it served, whose device-info files go with it.
    ids: Vec<String>,
    /// Files written at or after this time stay ([`finish_stop`]).
    kept_since: Option<SystemTime>,
    /// The task finishing the stop ([`finish_stop`]).
    finish: JoinHandle<()>,
}

/// How long a stop waits for the pool's server to end before aborting it (the server itself
/// gives its connections 2 s, then closes them).
const STOP_WAIT: Duration = Duration::from_secs(5);

/// Waits for the task finishing `stopping` (it ends within [`STOP_WAIT`] and a little); if it did
/// not finish its work (it panicked, or hung past that), aborts it and does the clean-up it would
/// have done, so no socket or device-info file is left either way.
async fn wait_for_stop(devinfo_dir: &Path, name: &str, stopping: &mut Stopping) {
    let finished = tokio::time::timeout(STOP_WAIT + Duration::from_secs(1), &mut stopping.finish)
        .await
        .is_ok_and(|joined| joined.is_ok());
    if finished {
        return;
    }
    stopping.finish.abort();
    // As in `finish_stop`: a superseded pool's files belong to the new instance.
    if !stopping.state.superseded() {
        server::remove_device_infos(
            devinfo_dir,
            name,
            stopping.ids.iter().map(String::as_str),
            stopping.kept_since,
        );
    }
    stopping.state.remove_own_socket();
    tracing::warn!(resource = %name, "a pool's stop did not finish; cleaned up after it");
}

/// The rest of a stop, in a task of its own: waits for the pool's server to end (aborting it
/// after [`STOP_WAIT`]), then removes the pool's device-info files but those written at or after
/// `kept_since`.
async fn finish_stop(
    name: String,
    handle: PoolHandle,
    ids: Vec<String>,
    devinfo_dir: PathBuf,
    kept_since: Option<SystemTime>,
) {
    let abort = handle.task.abort_handle();
    if tokio::time::timeout(STOP_WAIT, handle.task).await.is_err() {
        abort.abort();
        handle.state.remove_own_socket();
    }
    // The new instance writes device-info files under the same names (the resource's and the
    // device's): they are its now.
    if !handle.state.superseded() {
        server::remove_device_infos(
            &devinfo_dir,
            &name,
            ids.iter().map(String::as_str),
            kept_since,
        );
    }
    tracing::info!(resource = %name, "pool stopped");
}

/// Whether a device withdrawn from its pool `waited` ago still stays out of every pool: for
/// `settle`, and one still on the node (`on_node`) until PodResources answers (`current`) too.
/// One gone from the node waits out `settle` only: it may come back under the same id (VFs do
/// when their count is lowered and raised) while an Allocate from its old pool's list is on its
/// way, but it must not wait for PodResources — while that stays away, ids gone for good
/// (sub-functions destroyed: their ids only grow) piled up.
fn still_settling(on_node: bool, current: bool, waited: Duration, settle: Duration) -> bool {
    waited < settle || (on_node && !current)
}

fn path_exists(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

#[cfg(test)]
mod incoming_tests {
    use super::*;
    use crate::plan::tests::pool;

    /// A moving device counts for the pool the planner will put it in: a second definition of a
    /// pool name, or a second pool listing the device, gets nothing (they used to count, keeping
    /// an empty pool's warning quiet).
    #[test]
    fn moving_devices_count_where_the_planner_places_them() {
        let moving: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let desired = [
            pool("x.io/one", &["a", "z"]),
            pool("x.io/two", &["a", "b"]),
            pool("x.io/one", &["c"]),
            pool("x.io/three", &["z"]),
        ];
        let counts = incoming(&desired, &moving);
        assert_eq!(counts.get("x.io/one"), Some(&1));
        assert_eq!(counts.get("x.io/two"), Some(&1));
        assert_eq!(counts.get("x.io/three"), None);
        assert!(incoming(&desired, &[]).is_empty());
    }
}

#[cfg(test)]
mod config_tests {
    use super::*;

    /// kubelet's Allocate for devices it chose before a pool change comes after the preference
    /// call, which may take the whole allocator timeout: the defaults keep that within the half
    /// of the settle time in which a device that left its pool is still granted. With 800 ms
    /// against 500 ms, a slow allocator let the window close first and the pod failed admission.
    #[test]
    fn the_preference_deadline_leaves_room_for_the_allocate_after_it() {
        let config = PluginConfig::new(PathBuf::new(), PathBuf::new(), SysfsRoot::new("/sys"));
        assert!(
            config.allocator_timeout + KUBELET_PREFERENCE_TO_ALLOCATE <= config.move_settle / 2,
            "{config:?}"
        );
    }
}

#[cfg(test)]
mod note_tests {
    use super::note_topic;

    /// A group note shrinking as pods release devices was said again at info on every apply.
    #[test]
    fn a_group_note_keeps_its_topic_as_its_count_and_ids_change() {
        let topic = |n: &str| note_topic(n).to_string();
        assert_eq!(
            topic(
                "98 devices leave x.io/one, to join x.io/two on the next update: a, b and 96 more"
            ),
            topic(
                "97 devices leave x.io/one, to join x.io/two on the next update: b, c and 95 more"
            )
        );
        assert_ne!(
            topic("2 devices leave x.io/one, to join x.io/two on the next update: a, b"),
            topic("2 devices leave x.io/one, to join x.io/three on the next update: a, b")
        );
        assert_eq!(
            note_topic("pool x.io/a is listed twice; the first definition wins"),
            "pool x.io/a is listed twice; the first definition wins"
        );
        assert_eq!(
            note_topic("1 device stays in x.io/one until the pods using them release them: a"),
            "stays in x.io/one until the pods using them release them"
        );
    }
}

#[cfg(test)]
mod watch_tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use notify::event::{CreateKind, EventKind, RemoveKind};

    use super::*;

    /// kubelet deletes its socket and listens again within microseconds, so the removal is often
    /// handled when the new socket is already there: it used to count as the restart, and the
    /// creation that follows as a second one (every pool registered twice).
    #[tokio::test]
    async fn a_kubelet_restart_is_one_registration_however_late_its_removal_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let kubelet = dir.path().join("kubelet.sock");
        std::fs::write(&kubelet, "old").unwrap();
        let (commands, mut received) = mpsc::unbounded_channel();
        let senders: Senders = Arc::new(Mutex::new(HashMap::from([(
            dir.path().join("intel.com_x.sock"),
            commands,
        )])));
        let (events, rx) = mpsc::unbounded_channel();
        let watching = tokio::spawn(watch_events(
            rx,
            Mode::Legacy {
                dir: dir.path().to_path_buf(),
            },
            senders,
        ));
        // The watcher reads the old socket's identity first.
        tokio::task::yield_now().await;
        // The restart: a new file at the path (another inode) before either event is handled.
        std::fs::remove_file(&kubelet).unwrap();
        std::fs::write(dir.path().join("new"), "new").unwrap();
        std::fs::rename(dir.path().join("new"), &kubelet).unwrap();
        let event = |kind| Ok(notify::Event::new(kind).add_path(kubelet.clone()));
        events
            .send(event(EventKind::Remove(RemoveKind::File)))
            .unwrap();
        events
            .send(event(EventKind::Create(CreateKind::File)))
            .unwrap();
        drop(events);
        watching.await.unwrap();
        let mut registrations = 0;
        while let Ok(command) = received.try_recv() {
            registrations += usize::from(matches!(command, Command::Register));
        }
        assert_eq!(registrations, 1);
    }
}

#[cfg(test)]
mod log_tests {
    //! What the manager and the pool servers log at info and above, read as an operator reads it.
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use vfpool_kubelet_sim::{KubeletSim, SimOptions};
    use vfpool_policy::DeviceType;

    use super::*;
    use crate::allocator::{AllocatorError, PreferenceRequest};
    use crate::logs::capture::{self, lines};

    const NAME: &str = "intel.com/mlnx_sriov";
    const GUARD: Duration = Duration::from_secs(30);

    #[derive(Debug)]
    struct NoPreference;

    impl Allocator for NoPreference {
        fn prefer(
            &self,
            _: &PreferenceRequest,
            _: Duration,
        ) -> Result<Vec<String>, AllocatorError> {
            Err(AllocatorError::NotReady)
        }
    }

    struct Env {
        tmp: tempfile::TempDir,
        inventory: Inventory,
    }

    impl Env {
        fn new() -> Env {
            let tmp = tempfile::tempdir().unwrap();
            let fixture = vfpool_sysfs::sim::Fixture::load("dell-cx5").unwrap();
            vfpool_sysfs::sim::write_tree(&fixture, &tmp.path().join("sys")).unwrap();
            let inventory =
                vfpool_sysfs::discover(&SysfsRoot::new(tmp.path().join("sys"))).unwrap();
            std::fs::create_dir_all(tmp.path().join("kubelet")).unwrap();
            Env { tmp, inventory }
        }

        fn kubelet(&self) -> PathBuf {
            self.tmp.path().join("kubelet")
        }

        fn config(&self) -> PluginConfig {
            PluginConfig::new(
                self.kubelet(),
                self.tmp.path().join("devinfo"),
                SysfsRoot::new(self.tmp.path().join("sys")),
            )
        }

        /// The 24 Mellanox VFs as pool `name`.
        fn pool(&self, name: &str) -> Pool {
            Pool {
                resource_name: name.to_string(),
                device_type: DeviceType::NetDevice,
                exclude_topology: false,
                devices: self
                    .inventory
                    .devices
                    .iter()
                    .filter(|d| d.device.as_deref() == Some("1018"))
                    .map(|d| PoolDevice {
                        id: d.id.clone(),
                        rdma: false,
                        vhost_net: false,
                        vdpa_type: None,
                        additional_info: None,
                    })
                    .collect(),
            }
        }

        fn empty(name: &str) -> Pool {
            Pool {
                resource_name: name.to_string(),
                device_type: DeviceType::NetDevice,
                exclude_topology: false,
                devices: Vec::new(),
            }
        }

        /// Serving the pool, registered on `device-plugins/kubelet.sock` (the legacy mode): its
        /// socket is in `device-plugins/`.
        async fn serving(&self) -> (KubeletSim, DevicePlugins) {
            let sim = KubeletSim::start(&self.kubelet(), SimOptions::LEGACY)
                .await
                .unwrap();
            let mut plugins = DevicePlugins::start(self.config(), Arc::new(NoPreference)).unwrap();
            plugins.apply(&[self.pool(NAME)], &self.inventory).await;
            sim.wait_for("24 allocatable", GUARD, |r| {
                r.get(NAME).is_some_and(|v| v.allocatable() == 24)
            })
            .await
            .unwrap();
            (sim, plugins)
        }
    }

    /// No Rust Debug syntax in lines at info and above.
    fn assert_plain(log: &str) {
        for line in log.lines().filter(|l| !l.trim_start().starts_with("DEBUG")) {
            for debug in ["{\"", "Some(", "\":", "Legacy {"] {
                assert!(!line.contains(debug), "Debug syntax in {line}");
            }
        }
    }

    /// A PF link going down: one warning naming the pool, the PF's VFs (twelve: eight listed and
    /// "4 more") and the PF's link; the count line only at debug. Back up: one info line naming
    /// them. A VF deleted: the count line at info, naming it. All used to be one info line of
    /// counts, `devices={"Healthy": 12, "Unhealthy": 12}`, naming no device and no reason.
    #[tokio::test]
    async fn health_changes_name_the_devices_and_the_reason() {
        let env = Env::new();
        let (sim, mut plugins) = env.serving().await;

        let (log, guard) = capture::start();
        let mut down = env.inventory.clone();
        for device in &mut down.devices {
            if device.id == "0000:3b:00.0" {
                device.netdevs[0].operstate = Some("down".to_string());
            }
        }
        let report = plugins.apply(&[env.pool(NAME)], &down).await;
        assert_eq!(report.updated, [NAME]);
        let text = log.text();
        let warned = lines(&text, "WARN", "devices Unhealthy");
        assert_eq!(warned.len(), 1, "{text}");
        for part in [
            "resource=intel.com/mlnx_sriov",
            "count=12",
            "0000:3b:00.2, 0000:3b:00.3",
            "and 4 more",
            "PF 0000:3b:00.0 link ens1f0 is down (operstate down",
        ] {
            assert!(warned[0].contains(part), "{part} missing: {text}");
        }
        assert!(lines(&text, "INFO", "pool changed").is_empty(), "{text}");
        let changed = lines(&text, "DEBUG", "pool changed");
        assert_eq!(changed.len(), 1, "{text}");
        assert!(changed[0].contains("healthy=12 unhealthy=12"), "{text}");
        assert_plain(&text);

        let (log, guard) = {
            drop(guard);
            capture::start()
        };
        plugins.apply(&[env.pool(NAME)], &env.inventory).await;
        let text = log.text();
        let back = lines(&text, "INFO", "devices Healthy again");
        assert_eq!(back.len(), 1, "{text}");
        assert!(back[0].contains("count=12"), "{text}");
        assert!(back[0].contains("0000:3b:00.2"), "{text}");
        assert!(lines(&text, "WARN", "").is_empty(), "{text}");

        let (log, _guard) = {
            drop(guard);
            capture::start()
        };
        let mut fewer = env.inventory.clone();
        fewer.devices.retain(|d| d.id != "0000:3b:00.5");
        plugins.apply(&[env.pool(NAME)], &fewer).await;
        let text = log.text();
        let changed = lines(&text, "INFO", "pool changed");
        assert_eq!(changed.len(), 1, "{text}");
        assert!(
            changed[0].contains("healthy=23 unhealthy=0 removed=0000:3b:00.5"),
            "{text}"
        );
        assert_plain(&text);
        plugins.shutdown().await;
        sim.shutdown();
    }

    /// A device withdrawn from its pool waits out the settle time, and one still on the node
    /// waits for PodResources too; one gone from the node does not (while PodResources stayed
    /// away, ids gone for good — destroyed sub-functions — piled up).
    #[test]
    fn a_device_gone_from_the_node_does_not_wait_for_pod_resources() {
        let settle = Duration::from_secs(1);
        let (early, late) = (Duration::from_millis(10), Duration::from_secs(5));
        for on_node in [true, false] {
            for current in [true, false] {
                assert!(still_settling(on_node, current, early, settle));
            }
        }
        assert!(still_settling(true, false, late, settle));
        assert!(!still_settling(true, true, late, settle));
        assert!(!still_settling(false, false, late, settle));
        assert!(!still_settling(false, true, late, settle));
    }

    /// A PodResources socket gone by the time it is looked at (kubelet stopping right after it
    /// answered) is no restart: it used to start the grace then, and forget the socket, so the
    /// next kubelet's first answer (after however long an upgrade took) started none.
    #[tokio::test]
    async fn a_socket_gone_after_its_answer_starts_no_grace() {
        let env = Env::new();
        let (sim, mut plugins) = env.serving().await;
        let seen = plugins.pod_resources_socket;
        assert!(seen.is_some());
        let used = plugins.through_restarts(&env.kubelet().join("gone.sock"), InUse::new());
        assert!(used.is_empty());
        assert_eq!(plugins.pod_resources_socket, seen);
        assert!(plugins.holding_through_restart.is_none());
        plugins.shutdown().await;
        sim.shutdown();
    }

    /// A pool that loses every device: one warning naming it, before the stop it causes, and not
    /// again on the next applies; a pool that matches nothing from the start: one warning too.
    /// Both used to be info lines, the emptied pool's after its "pool stopped".
    #[tokio::test]
    async fn an_empty_pool_is_one_warning_before_its_stop() {
        let env = Env::new();
        let (sim, mut plugins) = env.serving().await;
        let (log, _guard) = capture::start();
        let other = "intel.com/other_nic";
        for _ in 0..3 {
            let report = plugins
                .apply(&[Env::empty(NAME), Env::empty(other)], &env.inventory)
                .await;
            assert!(report.started.is_empty());
        }
        let text = log.text();
        let warned = lines(&text, "WARN", "no devices in the pool");
        assert_eq!(warned.len(), 2, "{text}");
        assert!(
            warned[0].contains("resource=intel.com/mlnx_sriov"),
            "{text}"
        );
        assert!(warned[1].contains("resource=intel.com/other_nic"), "{text}");
        let warned_at = text.find(warned[0]).unwrap();
        let stopped_at = text.find("pool stopped").unwrap();
        assert!(warned_at < stopped_at, "{text}");
        assert!(
            lines(&text, "INFO", "no devices in the pool").is_empty(),
            "{text}"
        );
        plugins.shutdown().await;
        sim.shutdown();
    }

    /// Every device moving to another pool (a policy or config change): the new pool is empty
    /// until the move settles, which is no cause for a warning — the move is logged, and the pool
    /// fills a second later. It used to warn "no devices in the pool" on every such move.
    #[tokio::test]
    async fn a_pool_waiting_for_devices_moving_into_it_is_not_a_warning() {
        let env = Env::new();
        let (sim, mut plugins) = env.serving().await;
        let (log, _guard) = capture::start();
        let other = "intel.com/other_nic";
        let report = plugins
            .apply(&[Env::empty(NAME), env.pool(other)], &env.inventory)
            .await;
        assert_eq!(report.moving.len(), 24, "{report:?}");
        assert!(report.started.is_empty(), "{report:?}");
        let text = log.text();
        let warned = lines(&text, "WARN", "no devices in the pool");
        // The pool the devices leave is empty for good and says so; the one they go to does not.
        assert!(warned.iter().all(|l| !l.contains(other)), "{text}");
        assert_eq!(warned.len(), 1, "{text}");
        assert!(lines(&text, "WARN", "no pool is left").is_empty(), "{text}");
        plugins.shutdown().await;
        sim.shutdown();
    }

    /// A config that leaves no pool at all (an emptied ConfigMap, `{"resourceList":[]}`) used to
    /// be info lines only, one "pool stopped" per pool: it is one warning now (said once).
    #[tokio::test]
    async fn losing_every_pool_is_one_warning() {
        let env = Env::new();
        let (sim, mut plugins) = env.serving().await;
        let (log, _guard) = capture::start();
        plugins.apply(&[], &env.inventory).await;
        plugins.apply(&[], &env.inventory).await;
        let text = log.text();
        let warned = lines(&text, "WARN", "no pool is left");
        assert_eq!(warned.len(), 1, "{text}");
        plugins.shutdown().await;
        sim.shutdown();
    }

    /// The config emptied while every device is on its way to another pool: the devices are
    /// wanted nowhere any more, so nothing is moving and the warning comes at once, once (it used
    /// to be lost: the apply that stopped the last pool had devices moving, and later applies
    /// stopped nothing).
    #[tokio::test]
    async fn losing_every_pool_mid_move_is_still_one_warning() {
        let env = Env::new();
        let mut config = env.config();
        config.move_settle = Duration::from_millis(200);
        let sim = KubeletSim::start(&env.kubelet(), SimOptions::default())
            .await
            .unwrap();
        let mut plugins = DevicePlugins::start(config, Arc::new(NoPreference)).unwrap();
        plugins.apply(&[env.pool(NAME)], &env.inventory).await;
        let (log, _guard) = capture::start();
        let other = "intel.com/other_nic";
        let moving = plugins
            .apply(&[Env::empty(NAME), env.pool(other)], &env.inventory)
            .await;
        assert_eq!(moving.moving.len(), 24, "{moving:?}");
        let emptied = plugins.apply(&[], &env.inventory).await;
        assert!(emptied.moving.is_empty(), "{emptied:?}");
        assert_eq!(lines(&log.text(), "WARN", "no pool is left").len(), 1);
        tokio::time::sleep(Duration::from_millis(300)).await;
        plugins.apply(&[], &env.inventory).await;
        let text = log.text();
        assert_eq!(lines(&text, "WARN", "no pool is left").len(), 1, "{text}");
        plugins.shutdown().await;
        sim.shutdown();
    }

    /// A kubelet directory without `pod-resources` (the agent's pod mounts only `device-plugins`,
    /// as upstream's DaemonSet does) turns the in-use protection off: one warning says so and what
    /// to mount. Nothing was said, and pool changes moved devices pods held as if they were free.
    #[tokio::test]
    async fn serving_without_pod_resources_is_said_once() {
        let env = Env::new();
        let sim = KubeletSim::start(&env.kubelet(), SimOptions::default())
            .await
            .unwrap();
        std::fs::remove_dir_all(env.kubelet().join("pod-resources")).unwrap();
        let (log, _guard) = capture::start();
        let mut plugins = DevicePlugins::start(env.config(), Arc::new(NoPreference)).unwrap();
        for _ in 0..3 {
            let report = plugins.apply(&[env.pool(NAME)], &env.inventory).await;
            assert!(report.pod_resources_current, "{report:?}");
        }
        let text = log.text();
        let warned = lines(&text, "WARN", "pod-resources directory is not there");
        assert_eq!(warned.len(), 1, "{text}");
        assert!(warned[0].contains("kubelet/pod-resources"), "{text}");
        assert!(warned[0].contains("mount the directory"), "{text}");
        plugins.shutdown().await;
        sim.shutdown();
    }

    /// Every granted Allocate is an info line naming the pool and the devices, so which VF a pod
    /// got can be read from the log. It was not logged at all; an empty request is not logged.
    #[tokio::test]
    async fn a_granted_allocate_names_its_devices() {
        let env = Env::new();
        // Before the plugins start: their serving thread logs to the subscriber current then.
        let (log, _guard) = capture::start();
        let (sim, plugins) = env.serving().await;
        let pod = sim.allocate_pod("pod-a", NAME, 2).await.unwrap();
        // A request without containers (kubelet never sends one) is answered empty, and grants
        // nothing to log: it used to be an info line "Allocate granted containers=0".
        let mut client =
            vfpool_proto::deviceplugin::v1beta1::device_plugin_client::DevicePluginClient::new(
                crate::uds::channel(
                    &env.kubelet()
                        .join("device-plugins/intel.com_mlnx_sriov.sock"),
                ),
            );
        let empty = client
            .allocate(vfpool_proto::deviceplugin::v1beta1::AllocateRequest {
                container_requests: Vec::new(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(empty.container_responses.is_empty());
        let text = log.text();
        let granted = lines(&text, "INFO", "Allocate granted");
        assert_eq!(granted.len(), 1, "{text}");
        let ids = pod.device_ids.join(", ");
        assert!(
            granted[0].contains(&format!("devices={ids}")),
            "{ids} missing: {text}"
        );
        assert!(
            granted[0].contains("resource=intel.com/mlnx_sriov"),
            "{text}"
        );
        plugins.shutdown().await;
        sim.shutdown();
    }

    /// In plugin-watcher mode the agent registers nothing itself: with `plugins_registry` where
    /// no kubelet watches (a wrong --kubelet-dir, a hostPath made by `DirectoryOrCreate`), the
    /// pool was served forever with nothing but "serving" in the log. Past
    /// `registration_error_after` that is one error naming the socket and the likely cause.
    #[tokio::test]
    async fn a_plugin_watcher_that_never_calls_is_one_error() {
        let env = Env::new();
        std::fs::create_dir_all(env.kubelet().join("plugins_registry")).unwrap();
        let mut config = env.config();
        config.registration_error_after = Duration::from_millis(300);
        let (log, _guard) = capture::start();
        let mut plugins = DevicePlugins::start(config, Arc::new(NoPreference)).unwrap();
        plugins.apply(&[env.pool(NAME)], &env.inventory).await;
        tokio::time::sleep(Duration::from_millis(900)).await;
        let text = log.text();
        let errors = lines(&text, "ERROR", "");
        assert_eq!(errors.len(), 1, "{text}");
        assert!(errors[0].contains("is --kubelet-dir right?"), "{text}");
        assert!(
            errors[0].contains(&format!(
                "socket={}",
                env.kubelet()
                    .join("plugins_registry/intel.com_mlnx_sriov.sock")
                    .display()
            )),
            "{text}"
        );
        plugins.shutdown().await;

        // A plugin watcher that registers the pool in time: no error.
        let env = Env::new();
        let mut config = env.config();
        config.registration_error_after = Duration::from_secs(2);
        let started = tokio::time::Instant::now();
        let sim = KubeletSim::start(
            &env.kubelet(),
            SimOptions {
                plugin_watcher: true,
            },
        )
        .await
        .unwrap();
        let (log, _guard) = capture::start();
        let mut plugins = DevicePlugins::start(config, Arc::new(NoPreference)).unwrap();
        plugins.apply(&[env.pool(NAME)], &env.inventory).await;
        tokio::time::timeout(GUARD, async {
            while !log
                .text()
                .contains("registered with kubelet (plugin watcher)")
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .unwrap();
        tokio::time::sleep_until(started + Duration::from_millis(2300)).await;
        let text = log.text();
        assert!(lines(&text, "ERROR", "").is_empty(), "{text}");
        plugins.shutdown().await;
        sim.shutdown();
    }

    /// A socket path longer than a unix socket address holds (a 63-character resource name under
    /// a deep kubelet directory) was served with nothing but "serving" in the log, and kubelet
    /// could not connect to it. It is still bound (a kubelet that sees the directory under a
    /// shorter path can connect), with one warning naming the socket and the fix.
    #[tokio::test]
    async fn a_socket_path_too_long_to_connect_to_is_a_warning() {
        let env = Env::new();
        let (log, _guard) = capture::start();
        let mut plugins = DevicePlugins::start(env.config(), Arc::new(NoPreference)).unwrap();
        let long = format!("intel.com/{}", "x".repeat(63));
        plugins.apply(&[env.pool(&long)], &env.inventory).await;
        let socket = env
            .kubelet()
            .join(format!("device-plugins/intel.com_{}.sock", "x".repeat(63)));
        assert!(socket.as_os_str().len() > crate::uds::MAX_SOCKET_PATH);
        tokio::time::timeout(GUARD, async {
            while !socket.exists() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .unwrap();
        let text = log.text();
        let warnings = lines(&text, "WARN", "longer than the 107 bytes");
        assert_eq!(warnings.len(), 1, "{text}");
        assert!(warnings[0].contains("shorten the resource name"), "{text}");
        assert!(
            warnings[0].contains(&format!("socket={}", socket.display())),
            "{text}"
        );
        // A pool whose socket fits: no such warning.
        plugins.apply(&[env.pool(NAME)], &env.inventory).await;
        assert_eq!(
            lines(&log.text(), "WARN", "longer than the 107 bytes").len(),
            1
        );
        plugins.shutdown().await;
    }

    /// Registration failing past `registration_error_after` (no kubelet.sock: a wrong
    /// --kubelet-dir) is one error naming the socket and the likely cause, however long it goes
    /// on; when kubelet comes, the success says how long it took. It used to be a warning every
    /// 50 s forever, like a kubelet restart's.
    #[tokio::test]
    async fn registration_failing_for_long_is_one_error() {
        let env = Env::new();
        let mut config = env.config();
        config.registration_error_after = Duration::from_millis(300);
        let (log, _guard) = capture::start();
        let mut plugins = DevicePlugins::start(config, Arc::new(NoPreference)).unwrap();
        plugins.apply(&[env.pool(NAME)], &env.inventory).await;
        // Attempts at 0, 0.1, 0.3 (the error), 0.7 and 1.5 s.
        tokio::time::sleep(Duration::from_millis(1700)).await;
        let text = log.text();
        let errors = lines(&text, "ERROR", "");
        assert_eq!(errors.len(), 1, "{text}");
        let socket = env.kubelet().join("device-plugins/kubelet.sock");
        assert!(
            errors[0].contains(&format!("socket={}", socket.display())),
            "{text}"
        );
        assert!(errors[0].contains("is --kubelet-dir right?"), "{text}");
        assert!(
            errors[0].contains("resource=intel.com/mlnx_sriov"),
            "{text}"
        );

        let sim = KubeletSim::start(&env.kubelet(), SimOptions::default())
            .await
            .unwrap();
        tokio::time::timeout(GUARD, async {
            while plugins.registration(NAME) != Some(Ok(())) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .unwrap();
        let text = log.text();
        let registered = lines(
            &text,
            "INFO",
            "registered with kubelet after failed attempts",
        );
        assert_eq!(registered.len(), 1, "{text}");
        assert!(registered[0].contains("failing_for="), "{text}");
        assert_eq!(lines(&text, "ERROR", "").len(), 1, "{text}");
        plugins.shutdown().await;
        sim.shutdown();
    }
}
