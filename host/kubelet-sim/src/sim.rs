//! The simulator itself.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use notify::event::{ModifyKind, RenameMode};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher as _};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};
use vfpool_proto::deviceplugin::v1beta1 as api;
use vfpool_proto::deviceplugin::v1beta1::device_plugin_client::DevicePluginClient;
use vfpool_proto::deviceplugin::v1beta1::registration_server::{Registration, RegistrationServer};
use vfpool_proto::pluginregistration::v1 as reg;
use vfpool_proto::pluginregistration::v1::registration_client::RegistrationClient as WatcherClient;
use vfpool_proto::podresources::v1 as pr;
use vfpool_proto::podresources::v1::pod_resources_lister_server::{
    PodResourcesLister, PodResourcesListerServer,
};

use crate::uds;

/// Why a simulator operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// A socket could not be bound.
    #[error("cannot listen on {path}")]
    Bind {
        /// The socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A directory could not be created or watched.
    #[error("cannot prepare {path}: {message}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// No plugin serves the resource.
    #[error("no device plugin serves {0}")]
    UnknownResource(String),
    /// Not enough healthy free devices.
    #[error("{resource}: {wanted} devices requested, {free} healthy and free")]
    Insufficient {
        /// The resource.
        resource: String,
        /// Requested.
        wanted: usize,
        /// Available.
        free: usize,
    },
    /// No such pod.
    #[error("no pod {0}")]
    UnknownPod(String),
    /// A pod admitted again (after a kubelet restart, its container not running) holds devices of
    /// a resource no plugin serves now: kubelet fails its admission.
    #[error("cannot allocate unregistered device {0}")]
    Unregistered(String),
    /// A pod admitted again holds devices its plugin no longer lists as healthy: kubelet fails
    /// its admission.
    #[error(
        "previously allocated devices are no longer healthy; cannot allocate unhealthy devices {resource} ({devices:?})"
    )]
    NoLongerHealthy {
        /// The resource.
        resource: String,
        /// The pod's devices that are missing from the plugin's list or not Healthy.
        devices: Vec<String>,
    },
    /// The pod already exists.
    #[error("pod {0} already exists")]
    PodExists(String),
    /// A pod the simulator does not model: its app container asks for none of its init
    /// container's devices, or for more than it got.
    #[error(
        "pod {pod}: an app container reusing {app} of its init container's {init} devices is not simulated"
    )]
    NotModelled {
        /// The pod.
        pod: String,
        /// The init container's devices.
        init: usize,
        /// The app container's.
        app: usize,
    },
    /// A call to the plugin failed.
    #[error("{call} on {resource} failed")]
    Plugin {
        /// The RPC.
        call: &'static str,
        /// The resource.
        resource: String,
        /// The status.
        #[source]
        source: Status,
    },
    /// The plugin's Allocate answer has no container response: kubelet fails the pod's admission.
    #[error("Allocate on {resource}: no containers return in allocation response")]
    EmptyAllocation {
        /// The resource.
        resource: String,
    },
    /// A condition was not reached in time (tests use this as a failure guard).
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(Duration, String),
}

/// Simulator options.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Also run the plugin watcher (creates `plugins_registry`, so plugins use that mode). On by
    /// default, as on every real node: kubelet always makes that directory. Off, only
    /// `device-plugins/kubelet.sock` takes registrations (the legacy mode, for tests of it).
    pub plugin_watcher: bool,
}

impl SimOptions {
    /// Registration on `device-plugins/kubelet.sock` only (no plugin watcher): the pools'
    /// sockets are in `device-plugins/`.
    pub const LEGACY: SimOptions = SimOptions {
        plugin_watcher: false,
    };
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            plugin_watcher: true,
        }
    }
}

/// One device as kubelet last heard of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceView {
    /// `Healthy` or `Unhealthy`.
    pub health: String,
    /// NUMA nodes from the topology (empty when none was sent).
    pub numa: Vec<i64>,
}

/// What kubelet knows of a resource.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResourceView {
    /// The plugin's socket.
    pub endpoint: PathBuf,
    /// The plugin's `GetDevicePluginOptions` answer, read when it registered (kubelet ignores
    /// the options a `RegisterRequest` claims).
    pub options: Option<(bool, bool)>,
    /// The ListAndWatch stream is open.
    pub connected: bool,
    /// Devices from the last list.
    pub devices: BTreeMap<String, DeviceView>,
    /// ListAndWatch messages received since registration.
    pub updates: u64,
    /// How it registered: `legacy` or `plugin-watcher`.
    pub mode: &'static str,
}

impl ResourceView {
    /// Devices in the last list.
    pub fn capacity(&self) -> usize {
        self.devices.len()
    }

    /// Healthy devices while connected (kubelet's allocatable before pods are subtracted).
    pub fn allocatable(&self) -> usize {
        if !self.connected {
            return 0;
        }
        self.devices
            .values()
            .filter(|d| d.health == api::HEALTHY)
            .count()
    }
}

/// One registration attempt, accepted or refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationRecord {
    /// The resource name the plugin asked for.
    pub resource_name: String,
    /// The endpoint.
    pub endpoint: String,
    /// `legacy` or `plugin-watcher`.
    pub mode: &'static str,
    /// `None` when accepted, else kubelet's error.
    pub error: Option<String>,
}

/// A simulated pod's devices.
#[derive(Debug, Clone)]
pub struct PodAllocation {
    /// Pod name.
    pub pod: String,
    /// The resource.
    pub resource: String,
    /// The devices kubelet chose, in the order it sent them to Allocate (arbitrary, as kubelet's
    /// set): the free ones of the plugin's preference, the rest filled from other free devices.
    pub device_ids: Vec<String>,
    /// The plugin's preferred answer, if it was asked.
    pub preferred: Option<Vec<String>>,
    /// The Allocate response for the pod's one container.
    pub response: api::ContainerAllocateResponse,
}

/// A simulated pod's devices in kubelet's books.
struct SimPod {
    resource: String,
    /// Its app container's devices (what PodResources reports).
    app: Vec<String>,
    /// Its init container's devices, if it has one asking for any: those the app container did
    /// not reuse are the pod's until it ends, in the checkpoint, but not in PodResources
    /// (kubelet's `List` skips init containers).
    init: Vec<String>,
}

impl SimPod {
    /// Every device the pod holds, each once.
    fn devices(&self) -> BTreeSet<&String> {
        self.app.iter().chain(&self.init).collect()
    }
}

#[derive(Default)]
struct State {
    resources: BTreeMap<String, ResourceView>,
    /// Per resource: the generation of the client task that owns it (stale tasks must not write).
    owners: BTreeMap<String, u64>,
    pods: BTreeMap<String, SimPod>,
    /// PodResources lists no pod ([`KubeletSim::pods_unknown`]).
    pods_unknown: bool,
    registrations: Vec<RegistrationRecord>,
    next_generation: u64,
    /// Plugin-watcher sockets registered (kubelet's actual state of world): the resource and the
    /// generation of its client, so deleting the socket deregisters that registration only.
    watched: BTreeMap<PathBuf, (String, u64)>,
    /// How many registrations still to fail where kubelet connects to the plugin
    /// ([`KubeletSim::fail_next_registrations`]).
    failing_registrations: usize,
    /// Per resource: the connection kubelet dialled when the plugin registered. kubelet calls
    /// GetPreferredAllocation and Allocate on it (its endpoint), not on whatever now listens at
    /// the socket path.
    plugins: BTreeMap<String, DevicePluginClient<Channel>>,
    /// Checkpoints written (see [`Shared::write_checkpoint`]).
    checkpoints: u64,
    /// Pods get no directory under `pods/` ([`KubeletSim::no_pod_directories`]).
    no_pod_directories: bool,
}

struct Shared {
    state: Mutex<State>,
    changed: watch::Sender<u64>,
    kubelet_dir: PathBuf,
    /// Client tasks (ListAndWatch streams), by resource.
    clients: Mutex<Vec<(String, JoinHandle<()>)>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n += 1);
    }

    /// Rewrites `device-plugins/kubelet_internal_checkpoint` as kubelet's device manager does
    /// when it hears a new list or allocates devices (not when a pod ends: an ended pod's entries
    /// stay until the next rewrite): a temporary file named `.` and a random suffix in the same
    /// directory, renamed over the checkpoint. Plugins watching the directory for kubelet's
    /// restarts see this traffic all the time and must not take it for one. The content is
    /// kubelet's format (`checkpoint.Data`: an entry per container and resource, ids by NUMA
    /// node, and the registered devices); its checksum is not kubelet's.
    fn write_checkpoint(&self) {
        let content = {
            let state = self.lock();
            let mut entries = Vec::new();
            for (pod, sim_pod) in &state.pods {
                let view = state.resources.get(&sim_pod.resource);
                // The init container's entry holds every device it got (the ones the app
                // container reused too), as kubelet's does.
                for (container, ids) in [
                    (INIT_CONTAINER, &sim_pod.init),
                    (APP_CONTAINER, &sim_pod.app),
                ] {
                    if ids.is_empty() {
                        continue;
                    }
                    // Under each of the device's NUMA nodes, or -1 without any (kubelet's
                    // `nodeWithoutTopology`).
                    let mut by_node: BTreeMap<String, Vec<&String>> = BTreeMap::new();
                    for id in ids {
                        let numa = view
                            .and_then(|v| v.devices.get(id))
                            .map(|d| d.numa.as_slice())
                            .unwrap_or_default();
                        if numa.is_empty() {
                            by_node.entry("-1".to_string()).or_default().push(id);
                        }
                        for node in numa {
                            by_node.entry(node.to_string()).or_default().push(id);
                        }
                    }
                    entries.push(serde_json::json!({
                        "PodUID": pod_uid(pod),
                        "ContainerName": container,
                        "ResourceName": sim_pod.resource,
                        "DeviceIDs": by_node,
                        "AllocResp": "",
                    }));
                }
            }
            let registered: BTreeMap<&String, Vec<&String>> = state
                .resources
                .iter()
                .map(|(resource, view)| (resource, view.devices.keys().collect()))
                .collect();
            // Go writes the nil slice of a node where no pod holds a device as `null`.
            let entries = if entries.is_empty() {
                serde_json::Value::Null
            } else {
                serde_json::Value::Array(entries)
            };
            serde_json::json!({
                "Data": {"PodDeviceEntries": entries, "RegisteredDevices": registered},
                "Checksum": 0,
            })
            .to_string()
        };
        let dir = self.kubelet_dir.join("device-plugins");
        let temporary = dir.join(format!(".{}", self.checkpoint_suffix()));
        let written = std::fs::write(&temporary, content)
            .and_then(|()| std::fs::rename(&temporary, dir.join(CHECKPOINT)));
        if written.is_err() {
            let _ = std::fs::remove_file(&temporary);
        }
    }

    /// Records an admitted pod: its directory under `pods/` (kubelet makes one per pod and
    /// removes it once the pod is gone), the checkpoint rewritten.
    fn admit(&self, pod: &str, sim_pod: SimPod) {
        let with_directory = {
            let mut state = self.lock();
            state.pods.insert(pod.to_string(), sim_pod);
            !state.no_pod_directories
        };
        if with_directory {
            let _ = std::fs::create_dir_all(self.pod_dir(pod));
        }
        self.write_checkpoint();
        self.bump();
    }

    /// `pods/<uid>` of a simulated pod.
    fn pod_dir(&self, pod: &str) -> PathBuf {
        self.kubelet_dir.join("pods").join(pod_uid(pod))
    }

    /// A fresh suffix for the checkpoint's temporary file (Go's `os.CreateTemp` pattern).
    fn checkpoint_suffix(&self) -> u64 {
        let mut state = self.lock();
        state.checkpoints += 1;
        splitmix64(state.checkpoints ^ u64::from(std::process::id()))
    }

    /// kubelet's `DeRegisterPlugin` / the end of a plugin's client: the stream is closed and the
    /// resource kept as disconnected (kubelet marks its devices unhealthy: allocatable 0). With
    /// `generation`, only if that registration still owns the resource. Whether it had a client.
    fn deregister(&self, resource: &str, generation: Option<u64>) -> bool {
        {
            let mut state = self.lock();
            if generation.is_some_and(|g| state.owners.get(resource) != Some(&g)) {
                return false;
            }
            state.owners.remove(resource);
            state.plugins.remove(resource);
            if let Some(view) = state.resources.get_mut(resource) {
                view.connected = false;
            }
        }
        let mut dropped = false;
        self.clients
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|(name, task)| {
                if name == resource {
                    task.abort();
                    dropped = true;
                    false
                } else {
                    true
                }
            });
        self.bump();
        dropped
    }
}

/// A running kubelet simulator.
pub struct KubeletSim {
    shared: Arc<Shared>,
    options: SimOptions,
    servers: Vec<(JoinHandle<()>, tokio::sync::oneshot::Sender<()>)>,
    watcher: Option<(RecommendedWatcher, JoinHandle<()>)>,
    /// Held while a pod is admitted: kubelet admits pods one at a time, so two concurrent
    /// [`KubeletSim::allocate_pod`] calls never get the same free device.
    admitting: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for KubeletSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeletSim")
            .field("kubelet_dir", &self.shared.kubelet_dir)
            .finish_non_exhaustive()
    }
}

/// Checks an extended resource name the way kubelet does: `domain/name`, a DNS-subdomain domain
/// outside `kubernetes.io`, a qualified-name `name` (alphanumerics, `-`, `_`, `.`, at most 63,
/// starting and ending alphanumeric).
pub fn validate_resource_name(name: &str) -> Result<(), String> {
    let Some((domain, short)) = name.split_once('/') else {
        return Err(format!(
            "resource name {name:?} is not fully qualified (want domain/name)"
        ));
    };
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    // `requests.<name>` must be a qualified name too: the domain, 9 characters longer, fits 253.
    // `IsDNS1123Subdomain` checks each label's characters, not its length.
    let domain_ok = !domain.is_empty()
        && domain.len() <= 244
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && alnum(label.chars().next())
                && alnum(label.chars().last())
        });
    if !domain_ok {
        return Err(format!(
            "resource name {name:?}: {domain:?} is not a DNS subdomain"
        ));
    }
    // kubelet's `IsExtendedResourceName`: containing `kubernetes.io/` makes a name native, and
    // `requests.` is the quota prefix.
    if name.contains("kubernetes.io/") {
        return Err(format!(
            "resource name {name:?} is in the reserved kubernetes.io namespace"
        ));
    }
    if name.starts_with("requests.") {
        return Err(format!(
            "resource name {name:?} starts with the reserved \"requests.\" prefix"
        ));
    }
    let short_ok = !short.is_empty()
        && short.len() <= 63
        && short
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && alnum(short.chars().next())
        && alnum(short.chars().last());
    if !short_ok {
        return Err(format!(
            "resource name {name:?}: {short:?} is not a valid name (alphanumerics, '-', '_', '.', at most 63)"
        ));
    }
    Ok(())
}

impl KubeletSim {
    /// Starts the simulator under `kubelet_dir`.
    pub async fn start(kubelet_dir: &Path, options: SimOptions) -> Result<Self, SimError> {
        let (changed, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed,
            kubelet_dir: kubelet_dir.to_path_buf(),
            clients: Mutex::new(Vec::new()),
        });
        let mut sim = KubeletSim {
            shared,
            options,
            servers: Vec::new(),
            watcher: None,
            admitting: tokio::sync::Mutex::new(()),
        };
        sim.serve()?;
        Ok(sim)
    }

    /// The kubelet directory.
    pub fn kubelet_dir(&self) -> &Path {
        &self.shared.kubelet_dir
    }

    fn dir(&self, sub: &str) -> Result<PathBuf, SimError> {
        let dir = self.shared.kubelet_dir.join(sub);
        std::fs::create_dir_all(&dir).map_err(|e| SimError::Dir {
            path: dir.clone(),
            message: e.to_string(),
        })?;
        Ok(dir)
    }

    fn serve(&mut self) -> Result<(), SimError> {
        // kubelet's pods' directories (see `Shared::admit`).
        self.dir("pods")?;
        let pr_dir = self.dir("pod-resources")?;
        let pr_socket = pr_dir.join("kubelet.sock");
        let listener = uds::bind(&pr_socket).map_err(|source| SimError::Bind {
            path: pr_socket.clone(),
            source,
        })?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let service = PodResourcesListerServer::new(PodResourcesService {
            shared: Arc::clone(&self.shared),
        });
        let task = tokio::spawn(async move {
            let result = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async {
                    let _ = rx.await;
                })
                .await;
            if let Err(e) = result {
                tracing::warn!(error = %e, "kubelet-sim: PodResources server failed");
            }
        });
        self.servers.push((task, tx));

        if self.options.plugin_watcher {
            let registry = self.dir("plugins_registry")?;
            self.watch_registry(&registry)?;
        }
        // kubelet.sock last: plugins treat its creation as "kubelet is up".
        let dp_dir = self.dir("device-plugins")?;
        let socket = dp_dir.join(api::KUBELET_SOCKET);
        let listener = uds::bind(&socket).map_err(|source| SimError::Bind {
            path: socket.clone(),
            source,
        })?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let service = RegistrationServer::new(RegistrationService {
            shared: Arc::clone(&self.shared),
        });
        let task = tokio::spawn(async move {
            let result = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async {
                    let _ = rx.await;
                })
                .await;
            if let Err(e) = result {
                tracing::warn!(error = %e, "kubelet-sim: Registration server failed");
            }
        });
        self.servers.push((task, tx));
        Ok(())
    }

    fn watch_registry(&mut self, registry: &Path) -> Result<(), SimError> {
        let (tx, mut rx) = mpsc::unbounded_channel::<(SocketEvent, PathBuf)>();
        let events_tx = tx.clone();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                // kubelet's watcher (fsnotify) reports a file renamed into the directory as
                // created, once, as it does a new one; it skips names starting with '.'. (notify
                // reports such a rename as `To`, and again as `Both` with the old name: `To` is
                // the one counted.) A deletion removes the plugin; a file renamed away is not a
                // deletion to kubelet (fsnotify's Rename, which it ignores).
                let Ok(event) = event else {
                    return;
                };
                let kind = match event.kind {
                    EventKind::Create(_) | EventKind::Modify(ModifyKind::Name(RenameMode::To)) => {
                        SocketEvent::Created
                    }
                    EventKind::Remove(_) => SocketEvent::Removed,
                    _ => return,
                };
                for path in event.paths {
                    let hidden = path
                        .file_name()
                        .is_some_and(|name| name.to_string_lossy().starts_with('.'));
                    if !hidden {
                        let _ = events_tx.send((kind, path));
                    }
                }
            })
            .map_err(|e| SimError::Dir {
                path: registry.to_path_buf(),
                message: e.to_string(),
            })?;
        watcher
            .watch(registry, RecursiveMode::NonRecursive)
            .map_err(|e| SimError::Dir {
                path: registry.to_path_buf(),
                message: e.to_string(),
            })?;
        // Sockets already there (kubelet scans the directory on start).
        if let Ok(entries) = std::fs::read_dir(registry) {
            for entry in entries.flatten() {
                let _ = tx.send((SocketEvent::Created, entry.path()));
            }
        }
        let shared = Arc::clone(&self.shared);
        let task = tokio::spawn(async move {
            while let Some((kind, path)) = rx.recv().await {
                if path.extension().is_none_or(|e| e != "sock") {
                    continue;
                }
                match kind {
                    SocketEvent::Created => {
                        let shared = Arc::clone(&shared);
                        tokio::spawn(async move { watcher_register(shared, path).await });
                    }
                    // kubelet's reconciler unregisters a plugin whose socket left the desired
                    // state of world: `DeRegisterPlugin` disconnects its client, which marks the
                    // resource's devices unhealthy.
                    SocketEvent::Removed => {
                        let registered = shared.lock().watched.remove(&path);
                        if let Some((resource, generation)) = registered
                            && shared.deregister(&resource, Some(generation))
                        {
                            tracing::info!(resource, socket = %path.display(), "kubelet-sim: plugin socket deleted; plugin deregistered");
                        }
                    }
                }
            }
        });
        self.watcher = Some((watcher, task));
        Ok(())
    }

    fn stop_all(&mut self) {
        for (task, stop) in self.servers.drain(..) {
            let _ = stop.send(());
            task.abort();
        }
        if let Some((watcher, task)) = self.watcher.take() {
            drop(watcher);
            task.abort();
        }
        for client in self
            .shared
            .clients
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
        {
            client.1.abort();
        }
    }

    /// Drops the plugin of `resource` as kubelet does when its endpoint's stream ends or when
    /// kubernetes#121994 disconnects the newest registration of a name: the stream is closed, the
    /// resource is kept as disconnected (allocatable 0), and kubelet never dials the plugin again
    /// by itself — only a new registration brings it back. Whether it had a client.
    pub fn disconnect(&self, resource: &str) -> bool {
        self.shared.deregister(resource, None)
    }

    /// While `unknown`, PodResources `List` answers without any pod, as a restarted kubelet does
    /// before it has learnt its pods from the API server (its device manager still has their
    /// devices, from its checkpoint: admission is unchanged).
    pub fn pods_unknown(&self, unknown: bool) {
        self.shared.lock().pods_unknown = unknown;
        self.shared.bump();
    }

    /// Makes the next `count` registrations (either mode) fail where kubelet's device manager
    /// connects back to the plugin, as when its dial or `GetDevicePluginOptions` fails: `Register`
    /// answers the error; the plugin watcher notifies `NotifyRegistrationStatus(false)` and, as
    /// kubelet, never tries that socket again (only a new socket file is registered).
    pub fn fail_next_registrations(&self, count: usize) {
        self.shared.lock().failing_registrations = count;
    }

    /// Simulates a kubelet restart: sockets deleted (including every plugin socket in
    /// `device-plugins/`, as kubelet cleans that directory of sockets, keeping its checkpoint),
    /// plugins forgotten, pods kept, then the sockets recreated.
    pub async fn restart(&mut self) -> Result<(), SimError> {
        use std::os::unix::fs::FileTypeExt as _;
        self.stop_all();
        let dp_dir = self.shared.kubelet_dir.join("device-plugins");
        if let Ok(entries) = std::fs::read_dir(&dp_dir) {
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_socket()) {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        let _ = std::fs::remove_file(self.shared.kubelet_dir.join("pod-resources/kubelet.sock"));
        {
            let mut state = self.shared.lock();
            state.resources.clear();
            state.owners.clear();
            state.plugins.clear();
            state.watched.clear();
        }
        self.shared.bump();
        self.serve()
    }

    /// From now on pods have no directory under `pods/` (those there are removed), as for an
    /// agent that cannot see kubelet's `pods` directory: the checkpoint then tells a plugin
    /// nothing, and only PodResources says which devices pods hold (tests of that path use it).
    pub fn no_pod_directories(&self) {
        let pods: Vec<String> = {
            let mut state = self.shared.lock();
            state.no_pod_directories = true;
            state.pods.keys().cloned().collect()
        };
        for pod in pods {
            let _ = std::fs::remove_dir_all(self.shared.pod_dir(&pod));
        }
    }

    /// Stops serving and removes the simulator's sockets.
    pub fn shutdown(mut self) {
        self.stop_all();
        let _ = std::fs::remove_file(
            self.shared
                .kubelet_dir
                .join("device-plugins")
                .join(api::KUBELET_SOCKET),
        );
        let _ = std::fs::remove_file(self.shared.kubelet_dir.join("pod-resources/kubelet.sock"));
    }

    /// What kubelet knows of every resource.
    pub fn resources(&self) -> BTreeMap<String, ResourceView> {
        self.shared.lock().resources.clone()
    }

    /// What kubelet knows of `resource`.
    pub fn resource(&self, resource: &str) -> Option<ResourceView> {
        self.shared.lock().resources.get(resource).cloned()
    }

    /// Every registration attempt so far.
    pub fn registrations(&self) -> Vec<RegistrationRecord> {
        self.shared.lock().registrations.clone()
    }

    /// Devices of `resource` assigned to pods.
    pub fn in_use(&self, resource: &str) -> BTreeSet<String> {
        self.shared
            .lock()
            .pods
            .values()
            .filter(|p| p.resource == resource)
            .flat_map(|p| p.devices().into_iter().cloned())
            .collect()
    }

    /// Waits until `condition` holds for the resources (checked after every change), failing
    /// after `timeout` (a guard against hangs, not a timing assertion).
    pub async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        condition: impl Fn(&BTreeMap<String, ResourceView>) -> bool,
    ) -> Result<BTreeMap<String, ResourceView>, SimError> {
        let mut changes = self.shared.changed.subscribe();
        let wait = async {
            loop {
                {
                    let state = self.shared.lock();
                    if condition(&state.resources) {
                        return state.resources.clone();
                    }
                }
                if changes.changed().await.is_err() {
                    // The sender lives in `self`; keep polling the state on a slow tick.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| SimError::Timeout(timeout, what.to_string()))
    }

    /// Admits a pod asking for `count` devices of `resource`, as kubelet's device manager does:
    /// the healthy devices not held by other pods are available; the plugin is asked for its
    /// preference (when it offers one) and then to Allocate. Pods are admitted one at a time; a
    /// pod asking for no device gets none, and the plugin is not called (kubelet's
    /// `devicesToAllocate` returns before it).
    pub async fn allocate_pod(
        &self,
        pod: &str,
        resource: &str,
        count: usize,
    ) -> Result<PodAllocation, SimError> {
        self.allocate_pod_meanwhile(pod, resource, count, std::future::ready(()))
            .await
            .map(|(allocation, ())| allocation)
    }

    /// [`Self::allocate_pod`], running `meanwhile` once the devices are chosen and before
    /// Allocate is called; returns what it returned too. kubelet chooses from the last list it
    /// got and calls the plugin without holding its device manager's lock, so a new list (a pool
    /// change) can arrive in between, and the plugin gets an Allocate for devices it no longer
    /// lists. With no device wanted, nothing is chosen and `meanwhile` runs before the pod is
    /// recorded.
    pub async fn allocate_pod_meanwhile<F: std::future::Future>(
        &self,
        pod: &str,
        resource: &str,
        count: usize,
        meanwhile: F,
    ) -> Result<(PodAllocation, F::Output), SimError> {
        let _admitting = self.admitting.lock().await;
        if self.shared.lock().pods.contains_key(pod) {
            return Err(SimError::PodExists(pod.to_string()));
        }
        let ((chosen, preferred, response), output) = if count == 0 {
            (
                (Vec::new(), None, api::ContainerAllocateResponse::default()),
                meanwhile.await,
            )
        } else {
            self.ask_plugin(pod, resource, count, meanwhile).await?
        };
        let sim_pod = SimPod {
            resource: resource.to_string(),
            app: chosen.clone(),
            init: Vec::new(),
        };
        Ok((
            self.record(pod, sim_pod, chosen, preferred, response),
            output,
        ))
    }

    /// Records an admitted pod ([`Shared::admit`]) and returns what the plugin was asked and
    /// answered for `chosen`.
    fn record(
        &self,
        pod: &str,
        sim_pod: SimPod,
        chosen: Vec<String>,
        preferred: Option<Vec<String>>,
        response: api::ContainerAllocateResponse,
    ) -> PodAllocation {
        let resource = sim_pod.resource.clone();
        self.shared.admit(pod, sim_pod);
        PodAllocation {
            pod: pod.to_string(),
            resource,
            device_ids: chosen,
            preferred,
            response,
        }
    }

    /// Admits a pod whose init container asks for `init` devices of `resource` and whose app
    /// container asks for `app` (at most `init`), as kubelet's device manager does: the init
    /// container's devices are chosen and allocated as for [`Self::allocate_pod`]; the app
    /// container reuses `app` of them (kubelet's `devicesToReuse`: no GetPreferredAllocation,
    /// an Allocate with the reused ids). The devices the app container did not reuse stay the
    /// pod's until it ends, in the checkpoint but not in PodResources, which does not report
    /// init containers. Returns the init container's allocation and the app container's ids.
    pub async fn allocate_pod_with_init(
        &self,
        pod: &str,
        resource: &str,
        init: usize,
        app: usize,
    ) -> Result<(PodAllocation, Vec<String>), SimError> {
        if !(1..=init).contains(&app) {
            return Err(SimError::NotModelled {
                pod: pod.to_string(),
                init,
                app,
            });
        }
        let _admitting = self.admitting.lock().await;
        if self.shared.lock().pods.contains_key(pod) {
            return Err(SimError::PodExists(pod.to_string()));
        }
        let ((chosen, preferred, response), ()) = self
            .ask_plugin(pod, resource, init, std::future::ready(()))
            .await?;
        let mut reused = chosen.clone();
        go_set_order(&mut reused, &format!("{pod}/reused"));
        reused.truncate(app);
        // kubelet asks the plugin to Allocate the reused devices for the app container too.
        self.allocate_raw(resource, reused.clone()).await?;
        let sim_pod = SimPod {
            resource: resource.to_string(),
            app: reused.clone(),
            init: chosen.clone(),
        };
        Ok((
            self.record(pod, sim_pod, chosen, preferred, response),
            reused,
        ))
    }

    /// [`Self::allocate_pod`]'s calls to the plugin for `count` (at least one) devices, as
    /// kubelet's `devicesToAllocate` makes them without a Topology Manager hint: the free healthy
    /// devices go to GetPreferredAllocation in arbitrary order (a Go set); what of the answer is
    /// free is taken (unknown and duplicate ids dropped, at most `count`), the rest filled from the
    /// other free devices; `meanwhile` runs; Allocate gets the chosen ids in arbitrary order
    /// again. The calls go to the connection kubelet dialled when the plugin registered. Returns
    /// the ids in the order Allocate got them, the plugin's preference if it was asked, and the
    /// Allocate answer; and what `meanwhile` returned.
    async fn ask_plugin<F: std::future::Future>(
        &self,
        pod: &str,
        resource: &str,
        count: usize,
        meanwhile: F,
    ) -> Result<
        (
            (
                Vec<String>,
                Option<Vec<String>>,
                api::ContainerAllocateResponse,
            ),
            F::Output,
        ),
        SimError,
    > {
        let (mut client, mut available, preferred_available) = {
            let state = self.shared.lock();
            let view = state
                .resources
                .get(resource)
                .filter(|v| v.connected)
                .ok_or_else(|| SimError::UnknownResource(resource.to_string()))?;
            let client = state
                .plugins
                .get(resource)
                .cloned()
                .ok_or_else(|| SimError::UnknownResource(resource.to_string()))?;
            let used: BTreeSet<&String> = state
                .pods
                .values()
                .filter(|p| p.resource == resource)
                .flat_map(|p| p.app.iter().chain(&p.init))
                .collect();
            let available: Vec<String> = view
                .devices
                .iter()
                .filter(|(id, d)| d.health == api::HEALTHY && !used.contains(id))
                .map(|(id, _)| id.clone())
                .collect();
            (
                client,
                available,
                view.options.is_some_and(|(_, preferred)| preferred),
            )
        };
        if available.len() < count {
            return Err(SimError::Insufficient {
                resource: resource.to_string(),
                wanted: count,
                free: available.len(),
            });
        }
        go_set_order(&mut available, &format!("{pod}/available"));
        let plugin_error = |call, source| SimError::Plugin {
            call,
            resource: resource.to_string(),
            source,
        };
        let mut chosen: Vec<String> = Vec::with_capacity(count);
        let mut preferred = None;
        if preferred_available {
            let answer = client
                .get_preferred_allocation(api::PreferredAllocationRequest {
                    container_requests: vec![api::ContainerPreferredAllocationRequest {
                        available_device_i_ds: available.clone(),
                        must_include_device_i_ds: Vec::new(),
                        allocation_size: i32::try_from(count).unwrap_or(i32::MAX),
                    }],
                })
                .await
                .map_err(|s| plugin_error("GetPreferredAllocation", s))?
                .into_inner();
            if let Some(ids) = answer.container_responses.into_iter().next() {
                let free: BTreeSet<&String> = available.iter().collect();
                let mut usable: Vec<String> = ids
                    .device_i_ds
                    .iter()
                    .filter(|id| free.contains(id))
                    .cloned()
                    .collect::<BTreeSet<String>>()
                    .into_iter()
                    .collect();
                go_set_order(&mut usable, &format!("{pod}/preferred"));
                usable.truncate(count);
                chosen = usable;
                preferred = Some(ids.device_i_ds);
            }
        }
        let taken: BTreeSet<String> = chosen.iter().cloned().collect();
        let missing = count - chosen.len();
        chosen.extend(
            available
                .iter()
                .filter(|id| !taken.contains(*id))
                .take(missing)
                .cloned(),
        );
        go_set_order(&mut chosen, &format!("{pod}/allocate"));
        let output = meanwhile.await;
        let response = client
            .allocate(api::AllocateRequest {
                container_requests: vec![api::ContainerAllocateRequest {
                    devices_ids: chosen.clone(),
                }],
            })
            .await
            .map_err(|s| plugin_error("Allocate", s))?
            .into_inner();
        // kubelet fails the pod's admission on an answer without container responses.
        let Some(response) = response.container_responses.into_iter().next() else {
            return Err(SimError::EmptyAllocation {
                resource: resource.to_string(),
            });
        };
        Ok(((chosen, preferred, response), output))
    }

    /// Admits a pod that holds devices again, as kubelet does for a pod whose container is not
    /// running when kubelet has restarted (`devicesToAllocate` with devices already allocated):
    /// no plugin call, but the resource must be registered and every device the pod holds listed
    /// as Healthy, or the admission fails. This is why a device held for its pod must keep its
    /// real health in whatever pool still lists it.
    pub fn readmit_pod(&self, pod: &str) -> Result<(), SimError> {
        let state = self.shared.lock();
        let sim_pod = state
            .pods
            .get(pod)
            .ok_or_else(|| SimError::UnknownPod(pod.to_string()))?;
        let resource = &sim_pod.resource;
        // Every container's, the init container's too: it is not running, so kubelet checks
        // its devices as well.
        let ids = sim_pod.devices();
        // kubelet looks at no resource a pod does not use.
        if ids.is_empty() {
            return Ok(());
        }
        let view = state
            .resources
            .get(resource)
            .filter(|v| v.connected)
            .ok_or_else(|| SimError::Unregistered(resource.clone()))?;
        let unhealthy: Vec<String> = ids
            .into_iter()
            .filter(|id| {
                view.devices
                    .get(*id)
                    .is_none_or(|d| d.health != api::HEALTHY)
            })
            .cloned()
            .collect();
        if unhealthy.is_empty() {
            Ok(())
        } else {
            Err(SimError::NoLongerHealthy {
                resource: resource.clone(),
                devices: unhealthy,
            })
        }
    }

    /// Calls Allocate on `resource`'s plugin with exactly `ids` (kubelet never sends unknown ids;
    /// tests use this to check that the plugin refuses them). Records nothing.
    pub async fn allocate_raw(
        &self,
        resource: &str,
        ids: Vec<String>,
    ) -> Result<api::AllocateResponse, SimError> {
        let mut client = self
            .shared
            .lock()
            .plugins
            .get(resource)
            .cloned()
            .ok_or_else(|| SimError::UnknownResource(resource.to_string()))?;
        client
            .allocate(api::AllocateRequest {
                container_requests: vec![api::ContainerAllocateRequest { devices_ids: ids }],
            })
            .await
            .map(tonic::Response::into_inner)
            .map_err(|source| SimError::Plugin {
                call: "Allocate",
                resource: resource.to_string(),
                source,
            })
    }

    /// The pod ends: its devices are free again (and gone from PodResources), and its directory
    /// under `pods/` is removed. The checkpoint keeps its entries until kubelet next rewrites it
    /// (a new list or an admission), as kubelet's does.
    pub fn release_pod(&self, pod: &str) -> bool {
        let removed = self.shared.lock().pods.remove(pod).is_some();
        let _ = std::fs::remove_dir_all(self.shared.pod_dir(pod));
        self.shared.bump();
        removed
    }
}

impl Drop for KubeletSim {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// kubelet's device-manager checkpoint in `device-plugins/`.
const CHECKPOINT: &str = "kubelet_internal_checkpoint";

/// The container names of every simulated pod: an init container (when it asks for devices) and
/// one app container.
const INIT_CONTAINER: &str = "init";
const APP_CONTAINER: &str = "main";

/// A simulated pod's UID: the same for the same name, shaped like kubelet's (a UUID).
fn pod_uid(pod: &str) -> String {
    let hash = pod.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let (high, low) = (splitmix64(hash), splitmix64(hash ^ 0x5bd1_e995));
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        high >> 32,
        (high >> 16) & 0xffff,
        high & 0xfff,
        low >> 52,
        low & 0xffff_ffff_ffff
    )
}

/// One step of the splitmix64 generator: the simulator's orders are pseudo-random but the same
/// from run to run, so a test that fails on one fails again.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Puts `ids` in the order Go gives a set's members (kubelet's `sets.Set.UnsortedList`, a map's
/// iteration): arbitrary. Seeded by `seed` (the pod), so a run repeats itself.
fn go_set_order(ids: &mut [String], seed: &str) {
    let mut state = seed.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    for i in (1..ids.len()).rev() {
        state = splitmix64(state);
        let bound = u64::try_from(i + 1).unwrap_or(u64::MAX);
        let j = usize::try_from(state % bound).unwrap_or(0);
        ids.swap(i, j);
    }
}

/// What kubelet's plugin watcher reacts to in `plugins_registry`.
#[derive(Debug, Clone, Copy)]
enum SocketEvent {
    Created,
    Removed,
}

/// kubelet's dial timeout, for the plugin-watcher socket and for a device plugin's endpoint (grpc
/// `WithBlock`: it retries the connection until then).
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// kubelet's timeout for the plugin watcher's `GetInfo`.
const GET_INFO_TIMEOUT: Duration = Duration::from_secs(1);
/// kubelet's timeout for `NotifyRegistrationStatus`.
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(5);

/// kubelet's device-manager side of a registration (`connectClient`: dial the endpoint, then
/// `PluginConnected` reads `GetDevicePluginOptions`), before it answers `Register` or notifies the
/// plugin watcher. The options are the plugin's answer, never what a `RegisterRequest` claimed.
async fn connect(
    shared: &Shared,
    endpoint: &Path,
) -> Result<(DevicePluginClient<Channel>, (bool, bool)), String> {
    {
        let mut state = shared.lock();
        if state.failing_registrations > 0 {
            state.failing_registrations -= 1;
            return Err(
                "failed to get device plugin options: simulated failure (KubeletSim::fail_next_registrations)"
                    .to_string(),
            );
        }
    }
    let channel = uds::dial(endpoint, DIAL_TIMEOUT)
        .await
        .map_err(|e| format!("failed to dial device plugin: {e}"))?;
    let mut client = DevicePluginClient::new(channel);
    // kubelet waits without a deadline; the simulator gives up rather than hang a test.
    let options = tokio::time::timeout(
        DIAL_TIMEOUT,
        client.get_device_plugin_options(api::Empty {}),
    )
    .await
    .map_err(|_| format!("failed to get device plugin options: no answer within {DIAL_TIMEOUT:?}"))?
    .map_err(|status| format!("failed to get device plugin options: {status}"))?
    .into_inner();
    Ok((
        client,
        (
            options.pre_start_required,
            options.get_preferred_allocation_available,
        ),
    ))
}

struct RegistrationService {
    shared: Arc<Shared>,
}

/// Checks a registration the way kubelet does; the error text is what kubelet would answer.
fn admit(resource: &str, versions: &[String]) -> Result<(), String> {
    if !versions.iter().any(|v| v == api::VERSION) {
        return Err(format!(
            "requested device plugin API versions {versions:?} are not supported by kubelet; supported: [\"{}\"]",
            api::VERSION
        ));
    }
    validate_resource_name(resource)?;
    // A second plugin for a resource name is not refused: kubelet's device manager takes the
    // newest registration as the resource's endpoint (`PluginConnected` replaces the entry; a
    // rolling update of a plugin DaemonSet relies on it), and the simulator's client for the
    // older one stops following it (`start_client`). kubelet keeps following the older stream,
    // and its end stops the newest endpoint (kubernetes#121994); not modelled: see
    // `KubeletSim::disconnect`.
    Ok(())
}

fn record(
    shared: &Shared,
    resource: &str,
    endpoint: &str,
    mode: &'static str,
    error: Option<String>,
) {
    shared.lock().registrations.push(RegistrationRecord {
        resource_name: resource.to_string(),
        endpoint: endpoint.to_string(),
        mode,
        error,
    });
    shared.bump();
}

#[tonic::async_trait]
impl Registration for RegistrationService {
    async fn register(
        &self,
        request: Request<api::RegisterRequest>,
    ) -> Result<Response<api::Empty>, Status> {
        let request = request.into_inner();
        // Every answer is recorded, as the registration kubelet saw.
        let outcome = |error: Option<String>| {
            record(
                &self.shared,
                &request.resource_name,
                &request.endpoint,
                "legacy",
                error,
            );
        };
        let endpoint_name = Path::new(&request.endpoint);
        if endpoint_name.components().count() != 1 {
            let error = format!(
                "endpoint {:?} must be a socket file name in device-plugins/",
                request.endpoint
            );
            outcome(Some(error.clone()));
            return Err(Status::invalid_argument(error));
        }
        let endpoint = self
            .shared
            .kubelet_dir
            .join("device-plugins")
            .join(endpoint_name);
        if let Err(error) = admit(
            &request.resource_name,
            std::slice::from_ref(&request.version),
        ) {
            outcome(Some(error.clone()));
            return Err(Status::invalid_argument(error));
        }
        // kubelet connects back before it answers, and answers the failure to the plugin.
        let (client, options) = match connect(&self.shared, &endpoint).await {
            Ok(connected) => connected,
            Err(error) => {
                outcome(Some(error.clone()));
                return Err(Status::unknown(error));
            }
        };
        outcome(None);
        start_client(
            Arc::clone(&self.shared),
            request.resource_name,
            endpoint,
            client,
            options,
            "legacy",
        );
        Ok(Response::new(api::Empty {}))
    }
}

/// The plugin-watcher side for one socket, in kubelet's order (`operation_generator.go`):
/// GetInfo, validation, the device manager's connect (dial the endpoint, GetDevicePluginOptions)
/// and its ListAndWatch client, then NotifyRegistrationStatus. A refused registration is notified
/// and not tried again: kubelet keeps the socket in its actual state of world and registers only
/// a new socket file at that path.
async fn watcher_register(shared: Arc<Shared>, socket: PathBuf) {
    let channel = match uds::dial(&socket, DIAL_TIMEOUT).await {
        Ok(channel) => channel,
        Err(e) => {
            tracing::warn!(socket = %socket.display(), error = %e, "kubelet-sim: cannot dial the plugin socket");
            return;
        }
    };
    let mut client = WatcherClient::new(channel);
    let info = match tokio::time::timeout(GET_INFO_TIMEOUT, client.get_info(reg::InfoRequest {}))
        .await
    {
        Ok(Ok(answer)) => answer.into_inner(),
        Ok(Err(e)) => {
            tracing::warn!(socket = %socket.display(), error = %e, "kubelet-sim: GetInfo failed");
            return;
        }
        Err(_) => {
            tracing::warn!(socket = %socket.display(), "kubelet-sim: GetInfo did not answer");
            return;
        }
    };
    // kubelet dials the socket it found when the plugin names no endpoint.
    let endpoint = if info.endpoint.is_empty() {
        socket.clone()
    } else {
        PathBuf::from(&info.endpoint)
    };
    let verdict = if info.r#type != api::DEVICE_PLUGIN_TYPE {
        Err(format!(
            "RegisterPlugin error -- no handler registered for plugin type: {} at socket {}",
            info.r#type,
            socket.display()
        ))
    } else {
        admit(&info.name, &info.supported_versions)
            .map_err(|e| format!("RegisterPlugin error -- plugin validation failed with err: {e}"))
    };
    let verdict = match verdict {
        Ok(()) => connect(&shared, &endpoint).await.map_err(|e| {
            format!("RegisterPlugin error -- plugin registration failed with err: {e}")
        }),
        Err(e) => Err(e),
    };
    let error = verdict.as_ref().err().cloned();
    record(
        &shared,
        &info.name,
        &endpoint.display().to_string(),
        "plugin-watcher",
        error.clone(),
    );
    if let Ok((plugin, options)) = verdict {
        let generation = start_client(
            Arc::clone(&shared),
            info.name.clone(),
            endpoint,
            plugin,
            options,
            "plugin-watcher",
        );
        shared
            .lock()
            .watched
            .insert(socket.clone(), (info.name, generation));
    }
    let notified = tokio::time::timeout(
        NOTIFY_TIMEOUT,
        client.notify_registration_status(reg::RegistrationStatus {
            plugin_registered: error.is_none(),
            error: error.unwrap_or_default(),
        }),
    )
    .await;
    if !matches!(notified, Ok(Ok(_))) {
        tracing::warn!(socket = %socket.display(), "kubelet-sim: NotifyRegistrationStatus failed");
    }
}

/// kubelet's endpoint client for a connected plugin: ListAndWatch until the stream ends. Returns
/// the registration's generation.
fn start_client(
    shared: Arc<Shared>,
    resource: String,
    endpoint: PathBuf,
    mut client: DevicePluginClient<Channel>,
    options: (bool, bool),
    mode: &'static str,
) -> u64 {
    let generation = {
        let mut state = shared.lock();
        state.next_generation += 1;
        let generation = state.next_generation;
        state.owners.insert(resource.clone(), generation);
        state.plugins.insert(resource.clone(), client.clone());
        state.resources.insert(
            resource.clone(),
            ResourceView {
                endpoint: endpoint.clone(),
                options: Some(options),
                connected: false,
                devices: BTreeMap::new(),
                updates: 0,
                mode,
            },
        );
        generation
    };
    shared.bump();
    let resource_name = resource.clone();
    let task_shared = Arc::clone(&shared);
    let task = tokio::spawn(async move {
        let shared = task_shared;
        let owned = |state: &State| state.owners.get(&resource) == Some(&generation);
        let mut stream = match client.list_and_watch(api::Empty {}).await {
            Ok(stream) => stream.into_inner(),
            Err(e) => {
                tracing::warn!(resource, error = %e, "kubelet-sim: ListAndWatch failed");
                return;
            }
        };
        loop {
            let message = stream.message().await;
            let mut state = shared.lock();
            if !owned(&state) {
                return;
            }
            let Some(view) = state.resources.get_mut(&resource) else {
                return;
            };
            match message {
                Ok(Some(list)) => {
                    view.connected = true;
                    view.updates += 1;
                    view.devices = list
                        .devices
                        .into_iter()
                        .map(|d| {
                            (
                                d.id,
                                DeviceView {
                                    health: d.health,
                                    numa: d
                                        .topology
                                        .map(|t| t.nodes.into_iter().map(|n| n.id).collect())
                                        .unwrap_or_default(),
                                },
                            )
                        })
                        .collect();
                }
                Ok(None) | Err(_) => {
                    // kubelet keeps the devices (as unhealthy) for a grace period; the simulator
                    // reports the endpoint as disconnected (allocatable 0).
                    view.connected = false;
                    drop(state);
                    shared.bump();
                    return;
                }
            }
            drop(state);
            shared.write_checkpoint();
            shared.bump();
        }
    });
    shared
        .clients
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push((resource_name, task));
    generation
}

struct PodResourcesService {
    shared: Arc<Shared>,
}

#[tonic::async_trait]
impl PodResourcesLister for PodResourcesService {
    async fn list(
        &self,
        _request: Request<pr::ListPodResourcesRequest>,
    ) -> Result<Response<pr::ListPodResourcesResponse>, Status> {
        let state = self.shared.lock();
        let pod_resources = state
            .pods
            .iter()
            .filter(|_| !state.pods_unknown)
            .map(|(pod, sim_pod)| pod_resources(&state, pod, &sim_pod.resource, &sim_pod.app))
            .collect();
        Ok(Response::new(pr::ListPodResourcesResponse {
            pod_resources,
        }))
    }

    async fn get_allocatable_resources(
        &self,
        _request: Request<pr::AllocatableResourcesRequest>,
    ) -> Result<Response<pr::AllocatableResourcesResponse>, Status> {
        let state = self.shared.lock();
        // A disconnected plugin's devices are unhealthy to kubelet, so none is allocatable.
        let devices = state
            .resources
            .iter()
            .filter(|(_, view)| view.connected)
            .flat_map(|(resource, view)| {
                view.devices
                    .iter()
                    .filter(|(_, d)| d.health == api::HEALTHY)
                    .map(|(id, d)| device_entry(resource, id, &d.numa))
            })
            .collect();
        Ok(Response::new(pr::AllocatableResourcesResponse {
            devices,
            ..Default::default()
        }))
    }

    async fn get(
        &self,
        request: Request<pr::GetPodResourcesRequest>,
    ) -> Result<Response<pr::GetPodResourcesResponse>, Status> {
        let request = request.into_inner();
        let state = self.shared.lock();
        let not_found = || {
            Status::not_found(format!(
                "pod {} in namespace {} not found",
                request.pod_name, request.pod_namespace
            ))
        };
        if request.pod_namespace != POD_NAMESPACE {
            return Err(not_found());
        }
        let sim_pod = state.pods.get(&request.pod_name).ok_or_else(not_found)?;
        Ok(Response::new(pr::GetPodResourcesResponse {
            pod_resources: Some(pod_resources(
                &state,
                &request.pod_name,
                &sim_pod.resource,
                &sim_pod.app,
            )),
        }))
    }
}

/// The namespace of every simulated pod.
const POD_NAMESPACE: &str = "default";

/// A pod as PodResources reports it: its app container (kubelet's `List` skips init containers),
/// one entry per device (kubelet's `getContainerDevices`), with the device's NUMA node as the
/// plugin listed it.
fn pod_resources(state: &State, pod: &str, resource: &str, ids: &[String]) -> pr::PodResources {
    let view = state.resources.get(resource);
    let devices = ids
        .iter()
        .map(|id| {
            let numa = view
                .and_then(|v| v.devices.get(id))
                .map(|d| d.numa.as_slice())
                .unwrap_or_default();
            device_entry(resource, id, numa)
        })
        .collect();
    pr::PodResources {
        name: pod.to_string(),
        namespace: POD_NAMESPACE.to_string(),
        containers: vec![pr::ContainerResources {
            name: APP_CONTAINER.to_string(),
            devices,
            ..Default::default()
        }],
    }
}

/// One device of `resource` as PodResources reports it: alone in its entry, with its NUMA
/// nodes when the plugin sent any.
fn device_entry(resource: &str, id: &str, numa: &[i64]) -> pr::ContainerDevices {
    pr::ContainerDevices {
        resource_name: resource.to_string(),
        device_ids: vec![id.to_string()],
        topology: (!numa.is_empty()).then(|| pr::TopologyInfo {
            nodes: numa.iter().map(|&id| pr::NumaNode { id }).collect(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::validate_resource_name;

    /// kubelet's `IsExtendedResourceName`, as the device manager applies it at registration.
    #[test]
    fn resource_names_are_checked_as_kubelet_checks_them() {
        for ok in ["intel.com/sriov", "nvidia.com/bf2_sf", "a.b-c/x.y-z_0"] {
            assert_eq!(validate_resource_name(ok), Ok(()), "{ok}");
        }
        for bad in [
            "sriov",
            "Intel.com/sriov",
            "intel.com/",
            "intel.com/-x",
            "kubernetes.io/x",
            "foo.kubernetes.io/x",
            // `Contains(name, "kubernetes.io/")`, not a domain match.
            "xkubernetes.io/x",
            "requests.intel.com/x",
        ] {
            assert!(validate_resource_name(bad).is_err(), "{bad}");
        }
        let label = "a".repeat(60);
        let longest = format!("{label}.{label}.{label}.{}", "b".repeat(61));
        assert_eq!(validate_resource_name(&format!("{longest}/x")), Ok(()));
        assert!(validate_resource_name(&format!("{longest}c/x")).is_err());
        let long_label = format!("{}.com/x", "a".repeat(64));
        assert_eq!(validate_resource_name(&long_label), Ok(()));
    }
}
