//! One pool's gRPC server: the v1beta1 `DevicePlugin` service (and the plugin-watcher
//! `Registration` service on the same socket), and the supervisor task that binds the socket,
//! registers with kubelet, re-binds when the socket is deleted, re-registers when kubelet
//! restarts or keeps no ListAndWatch stream open after registering (it dropped the plugin), serves
//! a new socket after a pause when kubelet's plugin watcher refused the registration (it does not
//! try that socket again), and restarts the server when it fails.

use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinHandle;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use vfpool_proto::deviceplugin::v1beta1 as api;
use vfpool_proto::deviceplugin::v1beta1::device_plugin_server::{DevicePlugin, DevicePluginServer};
use vfpool_proto::pluginregistration::v1 as reg;
use vfpool_proto::pluginregistration::v1::registration_server::{
    Registration as WatcherRegistration, RegistrationServer as WatcherRegistrationServer,
};
use vfpool_sysfs::SysfsRoot;

use crate::allocate;
use crate::allocator::{self, Allocator, PreferenceRequest};
use crate::logs::Took;
use crate::model::{Member, Snapshot};
use crate::registration::{self, Mode};
use crate::serving::ServingThread;
use crate::uds;

/// What every server of one pool shares: the current snapshot (a watch channel: every
/// ListAndWatch stream subscribes), the allocator and the paths.
pub struct PoolState {
    /// Full resource name.
    pub resource_name: String,
    /// The socket this pool serves on.
    pub socket: PathBuf,
    /// How the pool registers.
    pub mode: Mode,
    pub(crate) snapshot: watch::Sender<Snapshot>,
    pub(crate) allocator: Arc<dyn Allocator>,
    /// Bounds how many allocator calls run at once, across all pools (see [`PoolService::prefer`]).
    pub(crate) allocator_permits: Arc<Semaphore>,
    pub(crate) allocator_timeout: Duration,
    /// Where the server's connections come from.
    pub(crate) listen: Arc<dyn uds::Listen>,
    pub(crate) devinfo_dir: PathBuf,
    pub(crate) sysfs: SysfsRoot,
    /// Set by NotifyRegistrationStatus (plugin-watcher mode) or a successful Register; cleared
    /// when the server starts again (a new socket needs a new registration).
    pub(crate) registered: Mutex<Option<Result<(), String>>>,
    /// Whether kubelet's plugin watcher has called (GetInfo or NotifyRegistrationStatus) on any
    /// of the pool's sockets: never cleared.
    pub(crate) watcher_called: std::sync::atomic::AtomicBool,
    /// How many ListAndWatch streams are open (kubelet keeps one per registered plugin).
    pub(crate) open_streams: watch::Sender<usize>,
    /// See [`crate::PluginConfig::stream_grace`].
    pub(crate) stream_grace: Duration,
    /// See [`crate::PluginConfig::registration_error_after`].
    pub(crate) registration_error_after: Duration,
    /// Since when, and in how many attempts, `Register` has been failing; kept across the
    /// registration tasks (a kubelet.sock event starts a new one) so that the error is said once
    /// and the success says how long it took.
    pub(crate) registration_failing: Mutex<Option<registration::Failing>>,
    /// The device and inode of the socket file the supervisor made last: whoever removes the
    /// socket path removes it only while it is still this file (see [`remove_own_socket`]).
    pub(crate) socket_made: Mutex<Option<SocketIdentity>>,
}

impl std::fmt::Debug for PoolState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolState")
            .field("resource_name", &self.resource_name)
            .field("socket", &self.socket)
            .finish_non_exhaustive()
    }
}

impl PoolState {
    /// Removes the socket path if it is still the file this pool's server made, for the paths
    /// that end a server from outside its supervisor (a stop that timed out, an interrupted one).
    pub(crate) fn remove_own_socket(&self) {
        remove_own_socket(&self.socket, self.made());
    }

    /// Whether another agent instance has bound the socket path since this pool's server did
    /// (see [`taken_over`]): kubelet now follows that instance's list for the resource.
    pub(crate) fn superseded(&self) -> bool {
        taken_over(&self.socket, self.made())
    }

    fn made(&self) -> Option<SocketIdentity> {
        *self
            .socket_made
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The snapshot being served.
    pub fn current(&self) -> Snapshot {
        self.snapshot.borrow().clone()
    }

    /// Replaces the snapshot; ListAndWatch streams are told only if what kubelet sees changed.
    /// Returns whether they were told.
    pub fn update(&self, next: Snapshot) -> bool {
        self.snapshot.send_if_modified(|current| {
            let changed = current.view() != next.view();
            *current = next;
            changed
        })
    }

    pub(crate) fn set_registered(&self, status: Result<(), String>) {
        *self
            .registered
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(status);
    }

    fn clear_registered(&self) {
        *self
            .registered
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
    }

    fn is_registered(&self) -> bool {
        matches!(
            *self
                .registered
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
            Some(Ok(()))
        )
    }
}

/// Counts an open ListAndWatch stream for as long as it lives.
struct OpenStream(watch::Sender<usize>);

impl OpenStream {
    fn new(streams: &watch::Sender<usize>) -> Self {
        streams.send_modify(|n| *n += 1);
        OpenStream(streams.clone())
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// The v1beta1 device list for a snapshot.
pub fn list_response(snapshot: &Snapshot) -> api::ListAndWatchResponse {
    api::ListAndWatchResponse {
        devices: snapshot
            .view()
            .into_iter()
            .map(|(id, health, numa)| api::Device {
                id: id.to_string(),
                health: health.as_str().to_string(),
                topology: numa.map(|n| api::TopologyInfo {
                    nodes: vec![api::NumaNode { id: i64::from(n) }],
                }),
            })
            .collect(),
    }
}

/// One server instance's view of the pool: the shared state plus the signal that ends this
/// instance's streams when it stops.
#[derive(Clone)]
pub(crate) struct PoolService {
    state: Arc<PoolState>,
    stop: watch::Receiver<bool>,
    /// kubelet's error when it refuses a plugin-watcher registration: the supervisor serves a
    /// new socket after a pause, as kubelet does not retry a socket whose registration failed.
    refused: mpsc::UnboundedSender<String>,
}

type ListStream = Pin<Box<dyn Stream<Item = Result<api::ListAndWatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl DevicePlugin for PoolService {
    async fn get_device_plugin_options(
        &self,
        _request: Request<api::Empty>,
    ) -> Result<Response<api::DevicePluginOptions>, Status> {
        Ok(Response::new(registration::options()))
    }

    type ListAndWatchStream = ListStream;

    async fn list_and_watch(
        &self,
        _request: Request<api::Empty>,
    ) -> Result<Response<Self::ListAndWatchStream>, Status> {
        let mut snapshots = self.state.snapshot.subscribe();
        let mut stop = self.stop.clone();
        let (tx, rx) = mpsc::channel(1);
        let resource = self.state.resource_name.clone();
        let open = OpenStream::new(&self.state.open_streams);
        tokio::spawn(async move {
            let _open = open;
            let first = snapshots.borrow_and_update().clone();
            if tx.send(Ok(list_response(&first))).await.is_err() {
                return;
            }
            loop {
                tokio::select! {
                    // A stopping pool publishes its empty list and then stops: both are often ready
                    // at once, and the empty list must go out first (upstream PR #502), so no pod is
                    // admitted onto the pool during kubelet's grace period.
                    biased;
                    changed = snapshots.changed() => {
                        if changed.is_err() {
                            break;
                        }
                        let next = snapshots.borrow_and_update().clone();
                        if tx.send(Ok(list_response(&next))).await.is_err() {
                            break;
                        }
                    }
                    () = async { let _ = stop.wait_for(|stopped| *stopped).await; } => break,
                    () = tx.closed() => break,
                }
            }
            tracing::debug!(resource = %resource, "ListAndWatch stream ended");
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn get_preferred_allocation(
        &self,
        request: Request<api::PreferredAllocationRequest>,
    ) -> Result<Response<api::PreferredAllocationResponse>, Status> {
        let snapshot = self.state.current();
        let containers = request.into_inner().container_requests;
        // kubelet asks for one container per call; each container costs an allocator call, and a
        // flood of them from another local process would hold the permits kubelet's calls need.
        if containers.len() > MAX_PREFERENCE_CONTAINERS {
            let message = format!(
                "GetPreferredAllocation with {} container requests; at most {MAX_PREFERENCE_CONTAINERS} are answered per call (kubelet sends one)",
                containers.len()
            );
            tracing::warn!(resource = %self.state.resource_name, %message, "GetPreferredAllocation refused");
            return Err(Status::invalid_argument(message));
        }
        let mut responses = Vec::with_capacity(containers.len());
        for container in containers {
            let resource_name = self.state.resource_name.clone();
            let ids_in_request =
                container.available_device_i_ds.len() + container.must_include_device_i_ds.len();
            let normalise = {
                let snapshot = Arc::clone(&snapshot);
                move || {
                    PreferenceRequest::for_pool(
                        resource_name,
                        container.available_device_i_ds,
                        container.must_include_device_i_ds,
                        container.allocation_size,
                        &snapshot,
                    )
                }
            };
            // A node's pool is at most a few thousand devices (~6 us of lookups per thousand
            // member ids, ~17 us with ids the pool does not know, done in place); a request far
            // larger can only come from another local process (the 1 MiB limit lets through
            // ~150,000 short ids, ~25 ms of work) and must not hold the one thread that serves
            // every pool (see `crate::serving`).
            let request = if ids_in_request <= MAX_IDS_NORMALISED_IN_PLACE {
                normalise()
            } else {
                match tokio::task::spawn_blocking(normalise).await {
                    Ok(request) => request,
                    Err(join) => {
                        tracing::error!(resource = %self.state.resource_name, error = %join, "GetPreferredAllocation: reading the request failed");
                        return Err(Status::internal("reading the request failed"));
                    }
                }
            };
            let ids = self.prefer(&snapshot, request).await;
            responses.push(api::ContainerPreferredAllocationResponse { device_i_ds: ids });
        }
        Ok(Response::new(api::PreferredAllocationResponse {
            container_responses: responses,
        }))
    }

    async fn allocate(
        &self,
        request: Request<api::AllocateRequest>,
    ) -> Result<Response<api::AllocateResponse>, Status> {
        let snapshot = self.state.current();
        let refuse = |e: allocate::AllocateError| {
            tracing::warn!(resource = %self.state.resource_name, error = %e, "Allocate refused");
            Status::invalid_argument(vfpool_policy::error_chain(&e))
        };
        let containers = request.into_inner().container_requests;
        if containers.is_empty() {
            // kubelet never sends one; upstream answers it empty, and nothing is granted.
            tracing::debug!(resource = %self.state.resource_name, "Allocate without container requests");
            return Ok(Response::new(api::AllocateResponse::default()));
        }
        // Every container is checked before any file is written (a refused request writes
        // none), and no device goes to two containers.
        let mut granted = std::collections::HashSet::new();
        let mut planned = Vec::with_capacity(containers.len());
        for container in &containers {
            let plan = plan_container(&self.state.sysfs, &snapshot, &container.devices_ids)
                .map_err(refuse)?;
            if let Some(id) = container
                .devices_ids
                .iter()
                .find(|id| !granted.insert(id.as_str()))
            {
                return Err(refuse(allocate::AllocateError::InTwoContainers {
                    id: id.clone(),
                }));
            }
            if !plan.departed().is_empty() {
                tracing::info!(
                    resource = %self.state.resource_name,
                    devices = %plan.departed().join(","),
                    "Allocate grants devices that left the pool a moment ago: kubelet chose them from the pool's previous list; they stay in the pool until the pod releases them"
                );
            }
            planned.push(plan);
        }
        let mut responses = Vec::with_capacity(planned.len());
        for plan in planned {
            responses.push(plan.write(&self.state.devinfo_dir).map_err(refuse)?);
        }
        // One line per pod admission, as upstream: the only record of which device went to which
        // pod once PodResources forgets it (kubelet does not tell a plugin the pod's name; the
        // time and devices match kubelet's own log). Formatted only if the line is written.
        tracing::info!(
            resource = %self.state.resource_name,
            containers = containers.len(),
            devices = %PerContainer(&containers),
            "Allocate granted"
        );
        Ok(Response::new(api::AllocateResponse {
            container_responses: responses,
        }))
    }

    async fn pre_start_container(
        &self,
        _request: Request<api::PreStartContainerRequest>,
    ) -> Result<Response<api::PreStartContainerResponse>, Status> {
        Ok(Response::new(api::PreStartContainerResponse {}))
    }
}

impl PoolService {
    /// The allocator's answer, or the built-in order when it fails, times out or is invalid.
    async fn prefer(&self, snapshot: &Snapshot, request: PreferenceRequest) -> Vec<String> {
        if request.size == 0 {
            return Vec::new();
        }
        let allocator = Arc::clone(&self.state.allocator);
        let permits = Arc::clone(&self.state.allocator_permits);
        let request = Arc::new(request);
        let question = Arc::clone(&request);
        // An allocator call is CPU-bound (a policy runs in WebAssembly). Started all at once on
        // blocking threads, 16 concurrent calls share the cores in time slices, so every one of
        // them finishes late (measured: p99 4x p50); admitted a few at a time (one per core), they
        // finish in arrival order. The wait for a permit counts against the deadline, so an
        // overloaded allocator falls back to the built-in order instead of queueing without bound.
        // The permit moves into the blocking call: a call past its deadline cannot be stopped and
        // keeps its core until it returns.
        let answer_by = tokio::time::Instant::now() + self.state.allocator_timeout;
        let call = async move {
            let permit = permits.acquire_owned().await;
            // What is left of the deadline once a permit is in hand: a call that starts late
            // must stop when the answer is no longer waited for, not hold its permit past that.
            let within = answer_by.saturating_duration_since(tokio::time::Instant::now());
            if within < MIN_ALLOCATOR_TIME {
                // Not worth starting: instantiating the policy alone takes a good part of it.
                return Ok(Err(allocator::AllocatorError::Busy {
                    left_ms: within.as_millis(),
                }));
            }
            tokio::task::spawn_blocking(move || {
                let _permit = permit;
                allocator.prefer(&question, within)
            })
            .await
        };
        let failure = match tokio::time::timeout(self.state.allocator_timeout, call).await {
            Ok(Ok(Ok(ids))) => match allocator::check_answer(&request, &ids) {
                Ok(()) => return ids,
                Err(e) => vfpool_policy::error_chain(&e),
            },
            Ok(Ok(Err(e))) => vfpool_policy::error_chain(&e),
            Ok(Err(join)) => format!("the allocator panicked: {join}"),
            Err(_) => format!(
                "the allocator did not answer within {}",
                Took(self.state.allocator_timeout)
            ),
        };
        // Off the serving thread: the order is cheap for kubelet's requests, but a request may
        // come from any local process, and the one thread serves every pool.
        let pool = Arc::clone(snapshot);
        let ids = match tokio::task::spawn_blocking(move || {
            allocator::builtin_preference(&pool, &request)
        })
        .await
        {
            Ok(ids) => ids,
            Err(join) => {
                tracing::error!(resource = %self.state.resource_name, error = %join, "GetPreferredAllocation: the built-in order failed; answering no preference");
                return Vec::new();
            }
        };
        tracing::warn!(
            resource = %self.state.resource_name,
            reason = %failure,
            "GetPreferredAllocation: using the built-in order"
        );
        ids
    }
}

/// One container's Allocate answer, and the device-info files to write before it is given.
pub struct ContainerPlan {
    response: api::ContainerAllocateResponse,
    /// (file name, contents).
    files: Vec<(String, String)>,
    /// The granted ids that had left the pool a moment ago ([`crate::model::PoolSnapshot::keep_departed`]).
    departed: Vec<String>,
}

impl ContainerPlan {
    /// Writes the device-info files under `devinfo_dir`, then hands out the answer.
    pub fn write(
        self,
        devinfo_dir: &std::path::Path,
    ) -> Result<api::ContainerAllocateResponse, allocate::AllocateError> {
        for (name, doc) in &self.files {
            allocate::write_device_info(devinfo_dir, name, doc)?;
        }
        Ok(self.response)
    }

    /// The granted ids that had left the pool a moment ago: kubelet chose them from the pool's
    /// previous list.
    pub fn departed(&self) -> &[String] {
        &self.departed
    }
}

/// Plans one container's Allocate: env, device specs, device-info files. Uses the answers the
/// snapshot prepared when it was published, except for a member whose prepared answer may lack its
/// RDMA devices ([`allocate::Prepared::recheck_rdma`]), which is answered from `sysfs` now; computes
/// them here for a snapshot that was not prepared or a member whose grant is an error (which is
/// then reported). Grants a device that left the pool a moment ago as a member
/// ([`crate::model::PoolSnapshot::for_allocate`]). Writes nothing.
pub fn plan_container(
    sysfs: &SysfsRoot,
    snapshot: &Snapshot,
    ids: &[String],
) -> Result<ContainerPlan, allocate::AllocateError> {
    if ids.is_empty() {
        return Err(allocate::AllocateError::Empty {
            resource: snapshot.resource_name.clone(),
        });
    }
    let now = std::time::Instant::now();
    // Validate every id first.
    let mut members: Vec<(&str, &Member, Option<&allocate::Prepared>)> =
        Vec::with_capacity(ids.len());
    let mut departed = Vec::new();
    // Requests are usually a handful of ids, for which a scan beats hashing them.
    let mut seen = (ids.len() > 16).then(|| std::collections::HashSet::with_capacity(ids.len()));
    for id in ids {
        let repeated = match &mut seen {
            Some(seen) => !seen.insert(id.as_str()),
            None => members.iter().any(|(other, ..)| *other == id.as_str()),
        };
        if repeated {
            return Err(allocate::AllocateError::Duplicate { id: id.clone() });
        }
        let (member, prepared, has_departed) = snapshot.for_allocate(id, now).ok_or_else(|| {
            allocate::AllocateError::UnknownDevice {
                id: id.clone(),
                resource: snapshot.resource_name.clone(),
                count: snapshot.members.len(),
            }
        })?;
        if has_departed {
            departed.push(id.clone());
        }
        members.push((id.as_str(), member, prepared));
    }
    let file = |id: &str, doc: String| {
        (
            allocate::device_info_file_name(&snapshot.resource_name, id),
            doc,
        )
    };
    let prepared: Option<Vec<(&str, &allocate::Prepared)>> = members
        .iter()
        .map(|&(id, _, prepared)| prepared.map(|p| (id, p)))
        .collect();
    if let Some(prepared) = &prepared
        && !prepared.iter().any(|(_, p)| p.recheck_rdma)
    {
        let files = prepared
            .iter()
            .filter_map(|(id, p)| p.device_info.clone().map(|doc| file(id, doc)))
            .collect();
        return Ok(ContainerPlan {
            response: allocate::prepared_response(&snapshot.resource_name, ids, prepared),
            files,
            departed,
        });
    }
    // Answered from sysfs now: the members whose prepared answer may lack their RDMA devices, or
    // that have none (the snapshot was not prepared, or the grant is an error, reported here).
    let refreshed: Vec<Option<allocate::Prepared>> = members
        .iter()
        .map(|&(_, member, prepared)| match prepared {
            Some(p) if !p.recheck_rdma => Ok(None),
            _ => allocate::prepare_live(member, snapshot.device_type, &snapshot.node, sysfs)
                .map(Some),
        })
        .collect::<Result<_, _>>()?;
    let answers: Vec<(&str, &allocate::Prepared)> = members
        .iter()
        .zip(&refreshed)
        .filter_map(|(&(id, _, prepared), refreshed)| {
            refreshed.as_ref().or(prepared).map(|p| (id, p))
        })
        .collect();
    let files = answers
        .iter()
        .filter_map(|(id, p)| p.device_info.clone().map(|doc| file(id, doc)))
        .collect();
    Ok(ContainerPlan {
        response: allocate::prepared_response(&snapshot.resource_name, ids, &answers),
        files,
        departed,
    })
}

#[tonic::async_trait]
impl WatcherRegistration for PoolService {
    async fn get_info(
        &self,
        _request: Request<reg::InfoRequest>,
    ) -> Result<Response<reg::PluginInfo>, Status> {
        self.state
            .watcher_called
            .store(true, std::sync::atomic::Ordering::Relaxed);
        Ok(Response::new(registration::plugin_info(&self.state)))
    }

    async fn notify_registration_status(
        &self,
        request: Request<reg::RegistrationStatus>,
    ) -> Result<Response<reg::RegistrationStatusResponse>, Status> {
        let status = request.into_inner();
        self.state
            .watcher_called
            .store(true, std::sync::atomic::Ordering::Relaxed);
        if status.plugin_registered {
            tracing::info!(resource = %self.state.resource_name, "registered with kubelet (plugin watcher)");
            self.state.set_registered(Ok(()));
        } else {
            // Keep serving, and let the supervisor put a new socket in place after a pause:
            // kubelet's plugin watcher does not try this socket again (a plugin whose registration
            // failed stays in its actual state of world), but it registers a new one. Upstream
            // stops the server here and never restarts it.
            self.state.set_registered(Err(status.error.clone()));
            let _ = self.refused.send(status.error);
        }
        Ok(Response::new(reg::RegistrationStatusResponse {}))
    }
}

/// The device ids of each container of an Allocate request, containers separated by `; `. Every
/// id, not the first few as elsewhere: this line is the record of which device went to which pod
/// (a 16-VF DPDK pod used to read `… and 8 more`), and a granted request holds only members of
/// the pool, each once.
struct PerContainer<'a>(&'a [api::ContainerAllocateRequest]);

impl std::fmt::Display for PerContainer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (n, container) in self.0.iter().enumerate() {
            if n > 0 {
                f.write_str("; ")?;
            }
            for (i, id) in container.devices_ids.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                f.write_str(id)?;
            }
        }
        Ok(())
    }
}

/// What the supervisor is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Command {
    /// Register again (kubelet restarted).
    Register,
    /// Re-bind the socket if it was deleted.
    Rebind,
    /// Stop serving and remove the socket.
    Stop,
}

/// A running pool: its state and its supervisor.
pub(crate) struct PoolHandle {
    pub(crate) state: Arc<PoolState>,
    pub(crate) commands: mpsc::UnboundedSender<Command>,
    pub(crate) task: JoinHandle<()>,
}

/// Exponential backoff: 100 ms (or another first delay) doubling to a cap.
pub(crate) struct Backoff {
    first: Duration,
    next: Duration,
    cap: Duration,
}

impl Backoff {
    pub(crate) fn new(cap: Duration) -> Self {
        Self::starting(Duration::from_millis(100), cap)
    }

    pub(crate) fn starting(first: Duration, cap: Duration) -> Self {
        Backoff {
            first,
            next: first,
            cap,
        }
    }

    pub(crate) fn next(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.cap);
        delay
    }

    pub(crate) fn reset(&mut self) {
        self.next = self.first;
    }
}

/// Starts a pool's supervisor on the serving thread (its server, connections and calls run there
/// too: see [`crate::serving`]).
pub(crate) fn spawn(state: Arc<PoolState>, serving: &ServingThread) -> PoolHandle {
    let (commands, rx) = mpsc::unbounded_channel();
    let task = serving.spawn(supervise(Arc::clone(&state), rx));
    PoolHandle {
        state,
        commands,
        task,
    }
}

/// The longest wait for kubelet's stream before registering again.
const STREAM_GRACE_CAP: Duration = Duration::from_secs(300);

/// After kubelet refuses a plugin-watcher registration, the pause before a new socket is served
/// (doubling while kubelet keeps refusing, up to [`REFUSED_PAUSE_CAP`]): a refusal may be
/// kubelet-side trouble that passes (its device manager could not connect back), and a new
/// socket at once would repeat it in a tight loop if it does not.
const REFUSED_PAUSE: Duration = Duration::from_secs(1);
/// See [`REFUSED_PAUSE`].
const REFUSED_PAUSE_CAP: Duration = Duration::from_secs(60);

/// Resolves once the pool has been registered with no ListAndWatch stream open for `grace`:
/// kubelet has dropped it and will not dial it again by itself.
async fn kubelet_dropped(state: &PoolState, streams: &mut watch::Receiver<usize>, grace: Duration) {
    loop {
        if streams.wait_for(|open| *open == 0).await.is_err() {
            return std::future::pending().await;
        }
        if !state.is_registered() {
            // Registration is still running (or failing, and retrying by itself).
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        }
        tokio::select! {
            () = tokio::time::sleep(grace) => {
                if *streams.borrow() == 0 && state.is_registered() {
                    return;
                }
            }
            _ = streams.changed() => {}
        }
    }
}

async fn supervise(state: Arc<PoolState>, mut commands: mpsc::UnboundedReceiver<Command>) {
    let mut backoff = Backoff::new(Duration::from_secs(5));
    let mut streams = state.open_streams.subscribe();
    let mut connected = state.open_streams.subscribe();
    let mut grace = state.stream_grace;
    let mut refused_pause = Backoff::starting(REFUSED_PAUSE, REFUSED_PAUSE_CAP);
    // The socket file this supervisor made last (see `socket_identity`).
    let mut bound = None;
    // Plugin-watcher mode registers nothing itself: kubelet finds the socket, or nothing happens
    // at all. Said once (an error), if kubelet's watcher has not called this long after the pool
    // was first served; legacy mode's registration says its own failures.
    let mut unregistered_alarm = match state.mode {
        Mode::PluginWatcher { .. } => {
            Some(Box::pin(tokio::time::sleep(state.registration_error_after)))
        }
        Mode::Legacy { .. } => None,
    };
    'serve: loop {
        state.clear_registered();
        let incoming = match state.listen.bind(&state.socket) {
            Ok(incoming) => incoming,
            Err(e) => {
                tracing::error!(resource = %state.resource_name, error = %vfpool_policy::error_chain(&e), "cannot serve; retrying");
                if wait_or_stop(&mut commands, backoff.next()).await {
                    break 'serve;
                }
                continue 'serve;
            }
        };
        // Which file is ours: another process (a second agent during a rolling update) may bind
        // the same path later, and its socket must not be deleted by this one.
        bound = socket_identity(&state.socket);
        *state
            .socket_made
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = bound;
        let (stop_tx, stop_rx) = watch::channel(false);
        // Per server instance, so that a refusal of an earlier socket is not taken for this one's.
        let (refused_tx, mut refused) = mpsc::unbounded_channel();
        let service = PoolService {
            state: Arc::clone(&state),
            stop: stop_rx.clone(),
            refused: refused_tx,
        };
        let (failed_tx, mut failed) = mpsc::unbounded_channel();
        let connections = uds::Connections::default();
        let incoming = Guarded {
            inner: incoming,
            connections: connections.clone(),
            failed: Some(failed_tx),
            resource: state.resource_name.clone(),
            pause: None,
            exhausted: false,
        };
        let mut server = tokio::spawn(serve(incoming, service, stop_rx));
        tracing::info!(resource = %state.resource_name, socket = %state.socket.display(), "serving");
        let mut registering = start_registration(&state);
        // When this socket is replaced by a new one, after kubelet refused to register it.
        let mut rebind_at: Option<Pin<Box<tokio::time::Sleep>>> = None;
        loop {
            tokio::select! {
                // A broken accept loop usually ends the server too (when no connection is open):
                // look at the failure first, so its error is the one logged.
                biased;
                // The accept loop broke. The server future itself would not end: it waits for
                // open connections (kubelet's ListAndWatch stream) to close first.
                Some(error) = failed.recv() => {
                    tracing::error!(resource = %state.resource_name, error = %error, "gRPC server stopped accepting connections; restarting it");
                    stop_instance(&state, stop_tx, server, registering, &connections).await;
                    if wait_or_stop(&mut commands, backoff.next()).await {
                        break 'serve;
                    }
                    continue 'serve;
                }
                result = &mut server => {
                    if let Some(task) = registering.take() {
                        task.abort();
                    }
                    let reason = match result {
                        Ok(Ok(())) => "the server stopped".to_string(),
                        Ok(Err(e)) => vfpool_policy::error_chain(&e),
                        Err(e) => format!("the server task failed: {e}"),
                    };
                    tracing::error!(resource = %state.resource_name, %reason, "gRPC server exited; restarting it");
                    if wait_or_stop(&mut commands, backoff.next()).await {
                        break 'serve;
                    }
                    continue 'serve;
                }
                Ok(()) = connected.changed() => {
                    if *connected.borrow_and_update() > 0 {
                        grace = state.stream_grace;
                        refused_pause.reset();
                    }
                }
                Some(error) = refused.recv() => {
                    if !matches!(state.mode, Mode::PluginWatcher { .. }) {
                        tracing::warn!(resource = %state.resource_name, %error, "NotifyRegistrationStatus(false) on a socket registered with Register; ignored");
                        continue;
                    }
                    if rebind_at.is_some() {
                        continue;
                    }
                    let pause = refused_pause.next();
                    tracing::warn!(
                        resource = %state.resource_name,
                        %error,
                        retry_in = %Took(pause),
                        "kubelet refused the registration; serving a new socket after a pause (kubelet does not retry a socket whose registration failed)"
                    );
                    rebind_at = Some(Box::pin(tokio::time::sleep(pause)));
                }
                () = async {
                    match rebind_at.as_mut() {
                        Some(pause) => pause.await,
                        None => std::future::pending().await,
                    }
                } => {
                    rebind_at = None;
                    // kubelet may have registered the socket meanwhile (its restart found it).
                    if state.is_registered() {
                        continue;
                    }
                    if left_to_another_instance(&state, bound) {
                        continue;
                    }
                    stop_instance(&state, stop_tx, server, registering, &connections).await;
                    continue 'serve;
                }
                () = async {
                    match unregistered_alarm.as_mut() {
                        Some(alarm) => alarm.await,
                        None => std::future::pending().await,
                    }
                } => {
                    unregistered_alarm = None;
                    // A watcher that called and refused, or a re-served socket, says its own.
                    if !state.watcher_called.load(std::sync::atomic::Ordering::Relaxed) {
                        tracing::error!(
                            resource = %state.resource_name,
                            socket = %state.socket.display(),
                            waited = %Took(state.registration_error_after),
                            "kubelet has not registered the pool: its plugin watcher never called; is --kubelet-dir right? kubelet watches plugins_registry under its root directory, /var/lib/kubelet by default (still serving)"
                        );
                    }
                }
                () = kubelet_dropped(&state, &mut streams, grace) => {
                    tracing::warn!(
                        resource = %state.resource_name,
                        waited = %Took(grace),
                        "no ListAndWatch stream from kubelet since registering (kubelet dropped the plugin, or is restarting); registering again"
                    );
                    grace = (grace * 2).min(STREAM_GRACE_CAP);
                    match &state.mode {
                        // Registering a socket that is gone (deleted by a kubelet restart
                        // whose event was missed) would not help: serve it again first.
                        Mode::Legacy { .. } if socket_identity(&state.socket).is_none() => {
                            stop_instance(&state, stop_tx, server, registering, &connections).await;
                            continue 'serve;
                        }
                        Mode::Legacy { .. } => {
                            if let Some(task) = registering.take() {
                                task.abort();
                            }
                            state.clear_registered();
                            registering = start_registration(&state);
                        }
                        // kubelet's plugin watcher registers a socket when it appears: binding
                        // again puts a new one in place (by a rename, so the path never goes
                        // missing).
                        Mode::PluginWatcher { .. } => {
                            // A socket that is gone (its deletion unseen) is served again like
                            // one of ours.
                            if left_to_another_instance(&state, bound) {
                                continue;
                            }
                            stop_instance(&state, stop_tx, server, registering, &connections).await;
                            continue 'serve;
                        }
                    }
                }
                command = commands.recv() => match command {
                    None | Some(Command::Stop) => {
                        // The socket goes first, so nothing can connect to a stopping server.
                        remove_own_socket(&state.socket, bound);
                        stop_instance(&state, stop_tx, server, registering, &connections).await;
                        break 'serve;
                    }
                    Some(Command::Rebind) => {
                        if state.socket.exists() {
                            continue;
                        }
                        tracing::info!(resource = %state.resource_name, "socket deleted (kubelet restart?); serving it again");
                        stop_instance(&state, stop_tx, server, registering, &connections).await;
                        backoff.reset();
                        continue 'serve;
                    }
                    Some(Command::Register) => {
                        if let Some(task) = registering.take() {
                            task.abort();
                        }
                        registering = start_registration(&state);
                    }
                }
            }
        }
    }
    remove_own_socket(&state.socket, bound);
}

/// Which file a socket path names: its device and inode.
pub(crate) type SocketIdentity = (u64, u64);

/// Removes the socket file at `path` if it is still the one this agent made (`bound`), not one
/// another agent instance has bound there since.
pub(crate) fn remove_own_socket(path: &std::path::Path, bound: Option<SocketIdentity>) {
    if bound.is_some() && socket_identity(path) == bound {
        let _ = std::fs::remove_file(path);
    }
}

/// Whether another socket file than the one this agent made (`bound`) is at `path` now: another
/// agent instance (a rolling update) has taken the path over. A path with nothing at it is not.
pub(crate) fn taken_over(path: &std::path::Path, bound: Option<SocketIdentity>) -> bool {
    bound.is_some() && socket_identity(path).is_some_and(|now| Some(now) != bound)
}

/// The device and inode of the file at `path` (without following a symlink), if there is one.
pub(crate) fn socket_identity(path: &std::path::Path) -> Option<SocketIdentity> {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::symlink_metadata(path)
        .ok()
        .map(|meta| (meta.dev(), meta.ino()))
}

fn start_registration(state: &Arc<PoolState>) -> Option<JoinHandle<()>> {
    match &state.mode {
        Mode::Legacy { .. } => Some(tokio::spawn(registration::register_with_retry(Arc::clone(
            state,
        )))),
        // kubelet's plugin watcher finds the socket and calls GetInfo itself.
        Mode::PluginWatcher { .. } => None,
    }
}

/// Sleeps `delay` unless a Stop arrives first; true when stopping.
async fn wait_or_stop(commands: &mut mpsc::UnboundedReceiver<Command>, delay: Duration) -> bool {
    let sleep = tokio::time::sleep(delay);
    tokio::pin!(sleep);
    loop {
        tokio::select! {
            () = &mut sleep => return false,
            command = commands.recv() => match command {
                None | Some(Command::Stop) => return true,
                Some(_) => {}
            }
        }
    }
}

async fn stop_instance(
    state: &PoolState,
    stop: watch::Sender<bool>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    registering: Option<JoinHandle<()>>,
    connections: &uds::Connections,
) {
    if let Some(task) = registering {
        task.abort();
    }
    let _ = stop.send(true);
    let abort = server.abort_handle();
    if tokio::time::timeout(Duration::from_secs(2), server)
        .await
        .is_err()
    {
        // Aborting the server leaves its connections' tasks running: a client that stopped
        // reading would hold its connection, stream and this pool's state for good.
        abort.abort();
        let ended = connections.end_all();
        tracing::warn!(resource = %state.resource_name, connections = ended, "server did not stop within 2s (a client stopped reading?); aborted it and closed its connections");
    }
}

/// A server instance's connections, ended on an accept error that retrying does not cure.
///
/// tonic logs accept errors at trace level and polls again, so a listener that broke (the socket
/// closed under it) would leave a server that accepts nothing, silently, or spins on the error
/// (upstream #648). This ends the stream instead and tells the supervisor, which restarts the
/// server with backoff. Running out of file descriptors or memory ([`resource_exhausted`]) is not
/// the listener's fault and a new server would not cure it: the stream pauses briefly
/// ([`EXHAUSTED_PAUSE`]) and accepts again, so the open connections (kubelet's ListAndWatch)
/// are kept.
struct Guarded {
    inner: uds::Incoming,
    /// Every accepted connection is tracked here, for a stop to end.
    connections: uds::Connections,
    /// Taken when the failure is reported; the stream has ended from then on.
    failed: Option<mpsc::UnboundedSender<io::Error>>,
    /// The pool, for logs.
    resource: String,
    /// While set, the stream waits before accepting again (resources ran out).
    pause: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Resources ran out at the last accept and no connection was accepted since (one warning
    /// per episode).
    exhausted: bool,
}

/// How long accepting pauses after running out of file descriptors or memory.
const EXHAUSTED_PAUSE: Duration = Duration::from_millis(100);

impl Stream for Guarded {
    type Item = io::Result<uds::TrackedStream>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if this.failed.is_none() {
                return Poll::Ready(None);
            }
            if let Some(pause) = &mut this.pause {
                if pause.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.pause = None;
            }
            let error = match this.inner.as_mut().poll_next(cx) {
                Poll::Ready(Some(Err(e))) if resource_exhausted(&e) => {
                    if !std::mem::replace(&mut this.exhausted, true) {
                        tracing::warn!(resource = %this.resource, error = %e, pause = %Took(EXHAUSTED_PAUSE), "cannot accept a connection: out of resources; retrying");
                    }
                    this.pause = Some(Box::pin(tokio::time::sleep(EXHAUSTED_PAUSE)));
                    continue;
                }
                Poll::Ready(Some(Err(e))) if !transient_accept_error(&e) => e,
                Poll::Ready(None) => {
                    io::Error::new(io::ErrorKind::BrokenPipe, "the listener closed")
                }
                Poll::Ready(Some(Ok(stream))) => {
                    if std::mem::take(&mut this.exhausted) {
                        tracing::info!(resource = %this.resource, "accepting connections again");
                    }
                    return Poll::Ready(Some(Ok(this.connections.track(stream))));
                }
                // A transient error about one connection: tonic logs it and accepts again.
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Pending => return Poll::Pending,
            };
            if let Some(failed) = this.failed.take() {
                let _ = failed.send(error);
            }
            return Poll::Ready(None);
        }
    }
}

/// Accept errors about one connection (the peer gave up) rather than the listener.
fn transient_accept_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
            | io::ErrorKind::TimedOut
    )
}

/// Accept errors of a process or system out of file descriptors or memory (`EMFILE`, `ENFILE`,
/// `ENOMEM`, `ENOBUFS`): the listener is fine, and accepting again later may succeed.
fn resource_exhausted(error: &io::Error) -> bool {
    use nix::errno::Errno;
    error.raw_os_error().is_some_and(|code| {
        [Errno::EMFILE, Errno::ENFILE, Errno::ENOMEM, Errno::ENOBUFS]
            .iter()
            .any(|errno| *errno as i32 == code)
    })
}

/// Whether another agent instance has taken the socket path over (see [`taken_over`]), in which
/// case this server leaves the path alone instead of serving a new socket there; logged.
fn left_to_another_instance(state: &PoolState, bound: Option<SocketIdentity>) -> bool {
    let taken = taken_over(&state.socket, bound);
    if taken {
        tracing::warn!(
            resource = %state.resource_name,
            socket = %state.socket.display(),
            "the socket is no longer this agent's (another agent instance on this node?); leaving it alone"
        );
    }
    taken
}

/// The largest request a pool's server decodes. A decoded request takes about ten times its
/// size in memory (each id becomes a `String` of its own), and tonic's default of 4 MiB let one
/// local caller make the agent hold tens of MiB per request in flight. kubelet's largest request,
/// a GetPreferredAllocation listing a whole pool, takes about 16 bytes per device: 1 MiB is room
/// for a pool of 65,000 devices, past any node's.
pub(crate) const MAX_REQUEST_BYTES: usize = 1 << 20;
/// The least time an allocator call is started with (see `PoolService::prefer`).
const MIN_ALLOCATOR_TIME: Duration = Duration::from_millis(20);

/// The most ids (available and must-include) of one container request that GetPreferredAllocation
/// puts in order (removes repeats, steers clear of non-members) on the serving thread; a larger
/// request is put in order on a blocking thread. 4x the largest pool a node has today (1,024 VFs).
const MAX_IDS_NORMALISED_IN_PLACE: usize = 4096;

/// The most container requests one GetPreferredAllocation answers (kubelet sends one).
const MAX_PREFERENCE_CONTAINERS: usize = 16;

/// How many calls one connection may have in flight. kubelet makes one at a time per resource
/// (its device manager serializes admissions) plus the ListAndWatch stream; the cap bounds what a
/// misbehaving local client can hold open at once, with room to spare for kubelet.
const MAX_STREAMS_PER_CONNECTION: u32 = 64;

async fn serve(
    incoming: Guarded,
    service: PoolService,
    mut stop: watch::Receiver<bool>,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        .add_service(
            DevicePluginServer::new(service.clone()).max_decoding_message_size(MAX_REQUEST_BYTES),
        )
        .add_service(
            WatcherRegistrationServer::new(service).max_decoding_message_size(MAX_REQUEST_BYTES),
        )
        .serve_with_incoming_shutdown(incoming, async move {
            let _ = stop.wait_for(|stopped| *stopped).await;
        })
        .await
}

/// Device-info files of `ids` in pool `resource`, removed, except those written at or after
/// `kept_since` (see [`allocate::remove_device_info`]).
pub(crate) fn remove_device_infos<'a>(
    devinfo_dir: &std::path::Path,
    resource: &str,
    ids: impl IntoIterator<Item = &'a str>,
    kept_since: Option<std::time::SystemTime>,
) {
    for id in ids {
        allocate::remove_device_info(devinfo_dir, resource, id, kept_since);
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::sync::Arc;

    use vfpool_policy::{DeviceType, PoolDevice};
    use vfpool_sysfs::{Inventory, NodeFacts, SysfsRoot};

    use super::plan_container;
    use crate::allocate::{self, RDMA_DIR_READS};
    use crate::model::{Health, Member, PoolSnapshot, Snapshot};

    const RDMA_VF: &str = "0000:3b:00.2";
    const OTHER_VF: &str = "0000:3b:00.3";
    const RDMA_DIRS: [&str; 3] = ["infiniband", "infiniband_verbs", "infiniband_mad"];

    fn cx5() -> (tempfile::TempDir, SysfsRoot) {
        let tmp = tempfile::tempdir().unwrap();
        let fixture = vfpool_sysfs::sim::Fixture::load("dell-cx5").unwrap();
        vfpool_sysfs::sim::write_tree(&fixture, tmp.path()).unwrap();
        let root = SysfsRoot::new(tmp.path());
        (tmp, root)
    }

    /// The function's own directory (`bus/pci/devices/<id>` is a link to it).
    fn function_dir(root: &SysfsRoot, id: &str) -> PathBuf {
        std::fs::canonicalize(root.path().join("bus/pci/devices").join(id)).unwrap()
    }

    /// Moves the function's RDMA directories from `from` to `to`, as the kernel hides them from
    /// the host while the RDMA device is in a pod's network namespace (exclusive RDMA mode).
    fn move_rdma_dirs(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for dir in RDMA_DIRS {
            if from.join(dir).exists() {
                std::fs::rename(from.join(dir), to.join(dir)).unwrap();
            }
        }
    }

    fn snapshot(inventory: &Inventory, device_type: DeviceType, rdma: bool) -> Snapshot {
        let members = [RDMA_VF, OTHER_VF]
            .iter()
            .map(|id| Member {
                device: inventory.get(id).unwrap().clone(),
                hints: PoolDevice {
                    id: id.to_string(),
                    rdma,
                    vhost_net: false,
                    vdpa_type: None,
                    additional_info: None,
                },
                health: Health::Healthy,
                held: false,
            })
            .collect();
        Arc::new(PoolSnapshot::new(
            "intel.com/mlnx_sriov".to_string(),
            device_type,
            false,
            members,
            NodeFacts {
                vhost_net: false,
                tun: false,
                rdma_cm: true,
            },
        ))
    }

    fn prepared(mut snapshot: Snapshot, root: &SysfsRoot) -> Snapshot {
        Arc::make_mut(&mut snapshot).prepare(root);
        snapshot
    }

    fn info(plan: &super::ContainerPlan) -> serde_json::Value {
        serde_json::from_str(&plan.response.envs["PCIDEVICE_INTEL_COM_MLNX_SRIOV_INFO"]).unwrap()
    }

    fn hosts(plan: &super::ContainerPlan) -> Vec<String> {
        plan.response
            .devices
            .iter()
            .map(|d| d.host_path.clone())
            .collect()
    }

    fn reads() -> usize {
        RDMA_DIR_READS.with(|n| n.replace(0))
    }

    /// An RDMA member prepared with its RDMA device is answered from the prepared answer: no sysfs
    /// directory is read, and what is there now (its RDMA directories gone) does not matter.
    #[test]
    fn an_ordinary_allocate_reads_no_sysfs() {
        let (tmp, root) = cx5();
        let inventory = vfpool_sysfs::discover(&root).unwrap();
        let pool = prepared(snapshot(&inventory, DeviceType::NetDevice, true), &root);
        move_rdma_dirs(&function_dir(&root, RDMA_VF), &tmp.path().join("stash"));
        reads();
        let ids = vec![RDMA_VF.to_string(), OTHER_VF.to_string()];
        let plan = plan_container(&root, &pool, &ids).unwrap();
        assert_eq!(reads(), 0, "an Allocate of prepared members read sysfs");
        let info = info(&plan);
        assert!(info[RDMA_VF]["rdma"]["uverbs"].is_string(), "{info}");
        assert!(
            hosts(&plan)
                .iter()
                .any(|h| h.starts_with("/dev/infiniband/uverbs")),
            "{:?}",
            hosts(&plan)
        );
        // Nor does a pool that asked for no RDMA.
        let plain = prepared(snapshot(&inventory, DeviceType::NetDevice, false), &root);
        reads();
        plan_container(&root, &plain, &ids).unwrap();
        assert_eq!(reads(), 0);
    }

    /// Exclusive RDMA mode: the last rescan ran while the VF's RDMA device was in the previous
    /// pod's network namespace; that pod has ended, and the next pod's Allocate comes before the
    /// next rescan. The answer has the RDMA device as it is now (upstream reads it at Allocate),
    /// read for that member only.
    #[test]
    fn a_member_prepared_without_its_rdma_device_is_answered_from_sysfs() {
        let (tmp, root) = cx5();
        let dir = function_dir(&root, RDMA_VF);
        let stash = tmp.path().join("stash");
        move_rdma_dirs(&dir, &stash);
        let inventory = vfpool_sysfs::discover(&root).unwrap();
        assert!(inventory.get(RDMA_VF).unwrap().rdma_devices.is_empty());
        let pool = prepared(snapshot(&inventory, DeviceType::NetDevice, true), &root);
        assert!(pool.prepared(0).unwrap().recheck_rdma);
        assert!(!pool.prepared(1).unwrap().recheck_rdma);

        // The pod ended: the RDMA device is back on the host.
        move_rdma_dirs(&stash, &dir);
        let rdma_dev = allocate::rdma_devices(&root, RDMA_VF);
        assert_eq!(rdma_dev.len(), 1, "{rdma_dev:?}");
        reads();
        let ids = vec![OTHER_VF.to_string(), RDMA_VF.to_string()];
        let plan = plan_container(&root, &pool, &ids).unwrap();
        // Four directories of the one stale member: its RDMA devices and character devices.
        assert_eq!(reads(), 4);
        let info = info(&plan);
        let rdma = &info[RDMA_VF]["rdma"];
        assert_eq!(rdma["rdma_dev"], rdma_dev[0].as_str(), "{info}");
        let uverbs = rdma["uverbs"].as_str().unwrap();
        assert!(uverbs.starts_with("/dev/infiniband/uverbs"), "{info}");
        assert!(
            hosts(&plan).iter().any(|h| h == uverbs),
            "{:?}",
            hosts(&plan)
        );
        assert!(info[OTHER_VF]["rdma"]["uverbs"].is_string(), "{info}");
        let doc = plan
            .files
            .iter()
            .find(|(name, _)| name.contains(RDMA_VF))
            .map(|(_, doc)| doc.as_str())
            .unwrap();
        assert!(
            doc.contains(&format!(r#""rdma-device":"{}""#, rdma_dev[0])),
            "{doc}"
        );
        // The env and `_INFO` are what a snapshot prepared now would answer, byte for byte.
        let fresh = prepared(
            snapshot(
                &vfpool_sysfs::discover(&root).unwrap(),
                DeviceType::NetDevice,
                true,
            ),
            &root,
        );
        let now = plan_container(&root, &fresh, &ids).unwrap();
        assert_eq!(plan.response, now.response);
        assert_eq!(plan.files, now.files);

        // Still in a pod (or RDMA gone for good): answered from what is there — upstream's
        // `"rdma":{}`, nothing mounted for it.
        move_rdma_dirs(&dir, &stash);
        let plan = plan_container(&root, &pool, &ids).unwrap();
        let gone = self::info(&plan);
        assert_eq!(gone[RDMA_VF]["rdma"], serde_json::json!({}), "{gone}");
    }

    /// An id the pool does not advertise fails Allocate for every pool type (upstream fails only a
    /// netDevice pool's, and starts the pod without the device for the others).
    #[test]
    fn an_unknown_id_is_refused_for_every_pool_type() {
        let (_tmp, root) = cx5();
        let inventory = vfpool_sysfs::discover(&root).unwrap();
        for device_type in [
            DeviceType::NetDevice,
            DeviceType::Accelerator,
            DeviceType::AuxNetDevice,
        ] {
            let pool = prepared(snapshot(&inventory, device_type, false), &root);
            let ids = vec![RDMA_VF.to_string(), "0000:ff:1f.7".to_string()];
            let err = plan_container(&root, &pool, &ids).err().unwrap();
            assert!(
                matches!(err, allocate::AllocateError::UnknownDevice { ref id, .. } if id == "0000:ff:1f.7"),
                "{device_type:?}: {err}"
            );
        }
    }

    /// The Allocate record names every device of every container: it used to stop at eight
    /// (`… and 2 more`), and it is the only record of which device went to which pod.
    #[test]
    fn the_allocate_record_names_every_device() {
        let ids: Vec<String> = (0..10).map(|i| format!("0000:3b:01.{i}")).collect();
        let containers = [
            super::api::ContainerAllocateRequest {
                devices_ids: ids.clone(),
            },
            super::api::ContainerAllocateRequest {
                devices_ids: vec!["0000:3b:02.0".to_string()],
            },
        ];
        assert_eq!(
            super::PerContainer(&containers).to_string(),
            format!("{}; 0000:3b:02.0", ids.join(", "))
        );
    }
}
