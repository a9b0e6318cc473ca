//! The device plugin over real unix sockets in temporary directories, driven by the kubelet
//! simulator: ListAndWatch semantics, the allocator fallback, socket re-binding, registration
//! retries and what kubelet refuses. Waits are on observed state; timeouts only guard hangs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use vfpool_deviceplugin::{
    Allocator, AllocatorError, DevicePlugins, PluginConfig, PreferenceRequest,
};
use vfpool_kubelet_sim::{KubeletSim, ResourceView, SimOptions};
use vfpool_policy::{DeviceType, Pool, PoolDevice};
use vfpool_proto::deviceplugin::v1beta1 as api;
use vfpool_proto::deviceplugin::v1beta1::device_plugin_client::DevicePluginClient;
use vfpool_proto::deviceplugin::v1beta1::registration_client::RegistrationClient;
use vfpool_sysfs::{Inventory, SysfsRoot};

const GUARD: Duration = Duration::from_secs(60);
const NAME: &str = "intel.com/mlnx_sriov";

struct Env {
    tmp: tempfile::TempDir,
    inventory: Inventory,
}

impl Env {
    fn new() -> Env {
        let tmp = tempfile::tempdir().unwrap();
        let fixture = vfpool_sysfs::sim::Fixture::load("dell-cx5").unwrap();
        vfpool_sysfs::sim::write_tree(&fixture, &tmp.path().join("sys")).unwrap();
        let inventory = vfpool_sysfs::discover(&SysfsRoot::new(tmp.path().join("sys"))).unwrap();
        std::fs::create_dir_all(tmp.path().join("kubelet")).unwrap();
        Env { tmp, inventory }
    }

    fn kubelet(&self) -> std::path::PathBuf {
        self.tmp.path().join("kubelet")
    }

    /// The kubelet simulator on this environment's kubelet directory (device-plugins mode: the
    /// pool's socket is [`socket`]; the plugin-watcher mode has tests of its own).
    async fn sim(&self) -> KubeletSim {
        KubeletSim::start(&self.kubelet(), SimOptions::LEGACY)
            .await
            .unwrap()
    }

    fn config(&self) -> PluginConfig {
        let mut config = PluginConfig::new(
            self.kubelet(),
            self.tmp.path().join("devinfo"),
            SysfsRoot::new(self.tmp.path().join("sys")),
        );
        config.allocator_timeout = Duration::from_millis(200);
        config
    }

    /// The ids of the 24 Mellanox VFs.
    fn ids(&self) -> Vec<String> {
        self.pool(0)[0]
            .devices
            .iter()
            .map(|d| d.id.clone())
            .collect()
    }

    /// The 24 Mellanox VFs as one RDMA pool, minus `skip`.
    fn pool(&self, skip: usize) -> Vec<Pool> {
        let devices = self
            .inventory
            .devices
            .iter()
            .filter(|d| d.device.as_deref() == Some("1018"))
            .skip(skip)
            .map(|d| PoolDevice {
                id: d.id.clone(),
                rdma: true,
                vhost_net: false,
                vdpa_type: None,
                additional_info: None,
            })
            .collect();
        vec![Pool {
            resource_name: NAME.to_string(),
            device_type: DeviceType::NetDevice,
            exclude_topology: false,
            devices,
        }]
    }
}

struct FnAllocator<F>(F);

impl<F> Allocator for FnAllocator<F>
where
    F: Fn(&PreferenceRequest) -> Result<Vec<String>, AllocatorError> + Send + Sync + 'static,
{
    fn prefer(
        &self,
        request: &PreferenceRequest,
        _within: Duration,
    ) -> Result<Vec<String>, AllocatorError> {
        (self.0)(request)
    }
}

/// An allocator that records the time it was given to answer in; its first call says when it has
/// started and then takes `first_takes`.
struct TimedAllocator {
    within: std::sync::Mutex<Vec<Duration>>,
    first_takes: Duration,
    started: tokio::sync::Notify,
}

impl Allocator for TimedAllocator {
    fn prefer(
        &self,
        request: &PreferenceRequest,
        within: Duration,
    ) -> Result<Vec<String>, AllocatorError> {
        let first = {
            let mut seen = self.within.lock().unwrap();
            seen.push(within);
            seen.len() == 1
        };
        if first {
            self.started.notify_one();
            std::thread::sleep(self.first_takes);
        }
        Ok(request.available[..request.size].to_vec())
    }
}

fn failing() -> Arc<dyn Allocator> {
    Arc::new(FnAllocator(|_: &PreferenceRequest| {
        Err(AllocatorError::NotReady)
    }))
}

/// Waits until kubelet sees every device of [`Env::pool`]`(0)` allocatable; returns its view.
async fn all_allocatable(sim: &KubeletSim) -> BTreeMap<String, ResourceView> {
    sim.wait_for("24 devices", GUARD, |r| {
        r.get(NAME).is_some_and(|v| v.allocatable() == 24)
    })
    .await
    .unwrap()
}

/// Waits until the pool [`NAME`] is registered with kubelet (legacy: Register succeeded; plugin
/// watcher: kubelet notified success).
async fn registered(plugins: &DevicePlugins) {
    tokio::time::timeout(GUARD, async {
        while plugins.registration(NAME) != Some(Ok(())) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the pool registers with kubelet");
}

/// `ids` sorted: kubelet sends a set, in no particular order.
fn sorted(ids: &[String]) -> Vec<String> {
    let mut ids = ids.to_vec();
    ids.sort();
    ids
}

fn socket(env: &Env) -> std::path::PathBuf {
    env.kubelet()
        .join("device-plugins/intel.com_mlnx_sriov.sock")
}

/// Waits (up to [`GUARD`]) for the pool's socket to exist; `what` names the wait in a failure.
async fn serving(env: &Env, what: &str) {
    tokio::time::timeout(GUARD, async {
        while !socket(env).exists() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what}: no socket after {GUARD:?}"));
}

async fn raw_client(path: &Path) -> DevicePluginClient<tonic::transport::Channel> {
    DevicePluginClient::new(vfpool_deviceplugin::uds::channel(path))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_and_watch_sends_only_on_change_to_every_stream() {
    let env = Env::new();
    let sim = env.sim().await;
    let mut plugins = DevicePlugins::start(env.config(), failing()).unwrap();
    let report = plugins.apply(&env.pool(0), &env.inventory).await;
    assert_eq!(report.started, [NAME]);
    let r = all_allocatable(&sim).await;
    assert_eq!(r[NAME].updates, 1);

    // A second, concurrent stream (kubelet reconnecting) gets the list too.
    let mut client = raw_client(&socket(&env)).await;
    let mut stream = client
        .list_and_watch(api::Empty {})
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(first.devices.len(), 24);
    assert!(
        first
            .devices
            .iter()
            .all(|d| { d.health == "Healthy" && d.topology.as_ref().unwrap().nodes[0].id == 0 })
    );

    // The same pools again: nothing to send. Then one device fewer: exactly one update each.
    let report = plugins.apply(&env.pool(0), &env.inventory).await;
    assert!(report.updated.is_empty());
    let report = plugins.apply(&env.pool(1), &env.inventory).await;
    assert_eq!(report.updated, [NAME]);
    let next = tokio::time::timeout(GUARD, stream.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        next.devices.len(),
        23,
        "the unchanged apply must not have sent a list"
    );
    let r = sim
        .wait_for("23 devices", GUARD, |r| {
            r.get(NAME).is_some_and(|v| v.capacity() == 23)
        })
        .await
        .unwrap();
    assert_eq!(r[NAME].updates, 2);

    // Stopping: the last list is empty (no pod admitted during kubelet's grace), then the end.
    // (Without `biased` in the stream task the stop won the race about half the time and the
    // stream ended without the empty list.)
    plugins.shutdown().await;
    let mut last = None;
    while let Ok(Some(message)) = stream.message().await {
        last = Some(message);
    }
    let last = last.expect("an empty list before the stream ends");
    assert!(last.devices.is_empty(), "{} devices", last.devices.len());
    assert!(!socket(&env).exists());
    sim.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preferred_allocation_uses_the_allocator_and_falls_back() {
    let env = Env::new();
    let sim = env.sim().await;
    let calls = Arc::new(AtomicUsize::new(0));
    let mode = Arc::new(AtomicUsize::new(0));
    let (c, m) = (Arc::clone(&calls), Arc::clone(&mode));
    let allocator = Arc::new(FnAllocator(move |req: &PreferenceRequest| {
        c.fetch_add(1, Ordering::SeqCst);
        match m.load(Ordering::SeqCst) {
            // A valid answer: the last `size` available ids (kubelet's list is in no order).
            0 => {
                let mut ids = req.available.clone();
                ids.sort();
                Ok(ids[ids.len() - req.size..].to_vec())
            }
            1 => Err(AllocatorError::InvalidAnswer("boom".to_string())),
            2 => Ok(vec!["0000:ff:00.0".to_string()]),
            _ => {
                std::thread::sleep(Duration::from_secs(3));
                Ok(req.available[..req.size].to_vec())
            }
        }
    }));
    let mut plugins = DevicePlugins::start(env.config(), allocator).unwrap();
    plugins.apply(&env.pool(0), &env.inventory).await;
    all_allocatable(&sim).await;

    let pod = sim.allocate_pod("valid", NAME, 2).await.unwrap();
    assert_eq!(sorted(&pod.device_ids), ["0000:3b:03.0", "0000:3b:03.1"]);
    let pf = |id: &str| env.inventory.get(id).unwrap().pf_id.clone();
    for (n, failure) in [(1, "error"), (2, "invalid"), (3, "timeout")] {
        mode.store(n, Ordering::SeqCst);
        let pod = sim.allocate_pod(failure, NAME, 3).await.unwrap();
        let preferred = pod.preferred.clone().unwrap();
        assert_eq!(
            sorted(&preferred),
            sorted(&pod.device_ids),
            "{failure}: the fallback answer is used"
        );
        assert_eq!(preferred.len(), 3);
        assert!(
            preferred.iter().all(|id| pf(id) == pf(&preferred[0])),
            "{failure}: packed on one PF"
        );
    }
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    plugins.shutdown().await;
    sim.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_socket_is_served_again_and_reregistered() {
    let env = Env::new();
    let sim = env.sim().await;
    let mut plugins = DevicePlugins::start(env.config(), failing()).unwrap();
    plugins.apply(&env.pool(0), &env.inventory).await;
    all_allocatable(&sim).await;
    let before = sim.registrations().len();
    std::fs::remove_file(socket(&env)).unwrap();
    sim.wait_for("registered again", GUARD, |r| {
        r.get(NAME).is_some_and(|v| v.allocatable() == 24)
    })
    .await
    .unwrap();
    // Wait for the re-registration itself (the old stream may still have been counted above).
    let sim_ref = &sim;
    tokio::time::timeout(GUARD, async move {
        while sim_ref.registrations().len() == before
            || !sim_ref.resource(NAME).is_some_and(|v| v.connected)
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
    assert!(socket(&env).exists());
    let response = sim
        .allocate_raw(NAME, vec!["0000:3b:00.2".to_string()])
        .await
        .unwrap();
    assert_eq!(
        response.container_responses[0].envs["PCIDEVICE_INTEL_COM_MLNX_SRIOV"],
        "0000:3b:00.2"
    );
    plugins.shutdown().await;
    sim.shutdown();
}

/// kubelet dials a plugin only when it registers, and never again once its stream ends
/// (kubernetes#121994 even ends the newest registration of a name when an older one's stream
/// does). A registered pool without a stream registers again: `Register` in device-plugins mode,
/// a new socket in plugin-watcher mode. Before, the resource stayed at 0 allocatable for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_kubelet_dropped_registers_again() {
    for plugin_watcher in [false, true] {
        let env = Env::new();
        let sim = KubeletSim::start(&env.kubelet(), SimOptions { plugin_watcher })
            .await
            .unwrap();
        let mut config = env.config();
        config.stream_grace = Duration::from_millis(300);
        let mut plugins = DevicePlugins::start(config, failing()).unwrap();
        plugins.apply(&env.pool(0), &env.inventory).await;
        all_allocatable(&sim).await;
        registered(&plugins).await;
        let before = sim.registrations().len();
        assert!(sim.disconnect(NAME));
        assert_eq!(sim.resource(NAME).unwrap().allocatable(), 0);
        let sim_ref = &sim;
        tokio::time::timeout(GUARD, async move {
            while sim_ref.registrations().len() == before
                || !sim_ref
                    .resource(NAME)
                    .is_some_and(|v| v.connected && v.allocatable() == 24)
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .unwrap_or_else(|_| {
            panic!(
                "never registered again (plugin watcher: {plugin_watcher}): registrations {:?}, resource {:?}, ours {:?}",
                sim.registrations(),
                sim.resource(NAME),
                plugins.registration(NAME)
            )
        });
        plugins.shutdown().await;
        sim.shutdown();
    }
}

/// kubelet dropped the plugin and its socket is gone too, the deletion unseen (a poll that missed
/// it, here a poll that never comes): the watchdog serves the socket again before registering,
/// instead of registering a path nobody listens on, over and over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_pool_whose_socket_is_gone_serves_it_again() {
    let env = Env::new();
    let sim = env.sim().await;
    let mut config = env.config();
    config.stream_grace = Duration::from_millis(300);
    config.poll_sockets = Some(Duration::from_secs(3600));
    let mut plugins = DevicePlugins::start(config, failing()).unwrap();
    plugins.apply(&env.pool(0), &env.inventory).await;
    all_allocatable(&sim).await;
    registered(&plugins).await;
    std::fs::remove_file(socket(&env)).unwrap();
    assert!(sim.disconnect(NAME));
    let sim_ref = &sim;
    tokio::time::timeout(GUARD, async move {
        while !sim_ref
            .resource(NAME)
            .is_some_and(|v| v.connected && v.allocatable() == 24)
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("never served again: {:?}", sim.resource(NAME)));
    assert!(socket(&env).exists());
    plugins.shutdown().await;
    sim.shutdown();
}

/// Two agent instances on one node (a rolling update): the other bound the pool's socket path after
/// this one. When this one's watchdog re-registers in plugin-watcher mode it must not delete the
/// other's socket (the two would take the path from each other).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watchdog_leaves_another_agents_socket_alone() {
    use std::os::unix::fs::MetadataExt as _;
    let env = Env::new();
    let sim = KubeletSim::start(
        &env.kubelet(),
        SimOptions {
            plugin_watcher: true,
        },
    )
    .await
    .unwrap();
    let mut config = env.config();
    config.stream_grace = Duration::from_millis(200);
    let mut plugins = DevicePlugins::start(config, failing()).unwrap();
    plugins.apply(&env.pool(0), &env.inventory).await;
    all_allocatable(&sim).await;
    registered(&plugins).await;
    let path = env
        .kubelet()
        .join("plugins_registry/intel.com_mlnx_sriov.sock");
    // The other instance binds the same path, as every instance binds (the path never goes
    // missing, so this one sees no deletion to re-bind after).
    let _other = vfpool_deviceplugin::uds::bind(&path).unwrap();
    let other = std::fs::metadata(&path).unwrap().ino();
    sim.disconnect(NAME);
    // Several grace periods.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let now = std::fs::metadata(&path).map(|m| m.ino()).ok();
    assert_eq!(now, Some(other), "the other agent's socket was replaced");
    // Stopping this instance leaves the other's socket too.
    plugins.shutdown().await;
    let now = std::fs::metadata(&path).map(|m| m.ino()).ok();
    assert_eq!(
        now,
        Some(other),
        "shutdown removed the other agent's socket"
    );
    sim.shutdown();
}

/// Without inotify (exhausted by other pods on the node) the socket directory is polled: a deleted
/// pool socket is served again and a kubelet restart registers every pool again. The agent used to
/// fail to start there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_the_socket_directory_follows_kubelet() {
    let env = Env::new();
    let mut sim = env.sim().await;
    let mut config = env.config();
    config.poll_sockets = Some(Duration::from_millis(100));
    let mut plugins = DevicePlugins::start(config, failing()).unwrap();
    plugins.apply(&env.pool(0), &env.inventory).await;
    all_allocatable(&sim).await;
    let reregistered = |sim: &KubeletSim, before: usize| {
        sim.registrations().len() > before
            && sim
                .resource(NAME)
                .is_some_and(|v| v.connected && v.allocatable() == 24)
    };
    let before = sim.registrations().len();
    // A poll sees the socket first (one created and deleted between two polls goes unseen).
    tokio::time::sleep(Duration::from_secs(1)).await;
    std::fs::remove_file(socket(&env)).unwrap();
    tokio::time::timeout(GUARD, async {
        while !(reregistered(&sim, before) && socket(&env).exists()) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("a deleted socket is served again");
    let before = sim.registrations().len();
    sim.restart().await.unwrap();
    tokio::time::timeout(GUARD, async {
        while !reregistered(&sim, before) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("registered again after kubelet restarted");
    plugins.shutdown().await;
    sim.shutdown();
}

/// A mode change of kubelet.sock (`chmod 0755`) is not a kubelet restart: no pool registers
/// again, with inotify or polling; a real restart after it still registers every pool. inotify's
/// attribute event used to be taken for a new socket, and the poller compared change times,
/// which a chmod changes too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chmod_of_kubelet_sock_is_not_a_restart() {
    use std::os::unix::fs::PermissionsExt as _;

    for poll in [None, Some(Duration::from_millis(50))] {
        let env = Env::new();
        let mut sim = env.sim().await;
        let mut config = env.config();
        config.poll_sockets = poll;
        let mut plugins = DevicePlugins::start(config, failing()).unwrap();
        plugins.apply(&env.pool(0), &env.inventory).await;
        all_allocatable(&sim).await;
        registered(&plugins).await;
        // A poll sees the socket as it is first.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let before = sim.registrations().len();
        let kubelet_sock = env.kubelet().join("device-plugins/kubelet.sock");
        std::fs::set_permissions(&kubelet_sock, std::fs::Permissions::from_mode(0o755)).unwrap();
        // Many polls, and time for an inotify event's registration to reach kubelet.
        tokio::time::sleep(Duration::from_millis(1000)).await;
        assert_eq!(sim.registrations().len(), before, "poll: {poll:?}");

        sim.restart().await.unwrap();
        tokio::time::timeout(GUARD, async {
            while sim.registrations().len() == before
                || !sim
                    .resource(NAME)
                    .is_some_and(|v| v.connected && v.allocatable() == 24)
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("poll {poll:?}: registered again after kubelet restarted"));
        plugins.shutdown().await;
        sim.shutdown();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_retries_until_kubelet_is_up() {
    let env = Env::new();
    let mut plugins = DevicePlugins::start(env.config(), failing()).unwrap();
    plugins.apply(&env.pool(0), &env.inventory).await;
    assert!(matches!(plugins.registration(NAME), None | Some(Err(_))));
    // kubelet starts later: kubelet.sock appears and the pool registers.
    let sim = env.sim().await;
    all_allocatable(&sim).await;
    plugins.shutdown().await;
    sim.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubelet_refuses_bad_versions_names_and_an_endpoint_it_cannot_dial() {
    let env = Env::new();
    let sim = env.sim().await;
    let mut plugins = DevicePlugins::start(env.config(), failing()).unwrap();
    plugins.apply(&env.pool(0), &env.inventory).await;
    all_allocatable(&sim).await;
    let mut kubelet = RegistrationClient::new(vfpool_deviceplugin::uds::channel(
        &env.kubelet().join("device-plugins/kubelet.sock"),
    ));
    let register = |version: &str, name: &str, endpoint: &str| api::RegisterRequest {
        version: version.to_string(),
        endpoint: endpoint.to_string(),
        resource_name: name.to_string(),
        options: None,
    };
    for (request, expect) in [
        (
            register("v1alpha", "intel.com/a", "a.sock"),
            "not supported",
        ),
        (register("v1beta1", "sriov", "a.sock"), "fully qualified"),
        (
            register("v1beta1", "kubernetes.io/a", "a.sock"),
            "kubernetes.io",
        ),
        (
            register("v1beta1", "Intel.com/a", "a.sock"),
            "DNS subdomain",
        ),
        // A second plugin for the name would replace this one (kubelet takes the newest), but
        // kubelet dials it first, and nothing listens there.
        (register("v1beta1", NAME, "other.sock"), "other.sock"),
        (
            register("v1beta1", "intel.com/a", "../a.sock"),
            "socket file name",
        ),
    ] {
        let status = kubelet.register(request).await.unwrap_err();
        assert!(status.message().contains(expect), "{}", status.message());
    }
    assert_eq!(sim.resource(NAME).unwrap().endpoint, socket(&env));
    plugins.shutdown().await;
    sim.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_watcher_mode_registers_through_get_info() {
    let env = Env::new();
    let mut sim = KubeletSim::start(
        &env.kubelet(),
        SimOptions {
            plugin_watcher: true,
        },
    )
    .await
    .unwrap();
    let mut plugins = DevicePlugins::start(env.config(), failing()).unwrap();
    assert!(matches!(
        plugins.mode(),
        vfpool_deviceplugin::Mode::PluginWatcher { .. }
    ));
    plugins.apply(&env.pool(0), &env.inventory).await;
    let r = all_allocatable(&sim).await;
    assert_eq!(r[NAME].mode, "plugin-watcher");
    assert_eq!(
        r[NAME].endpoint,
        env.kubelet()
            .join("plugins_registry/intel.com_mlnx_sriov.sock")
    );
    // NotifyRegistrationStatus arrived.
    registered(&plugins).await;
    // GetInfo names no endpoint: kubelet dials the socket where its watcher found it (the agent's
    // own path to it may not exist for kubelet, e.g. inside the agent's container).
    let mut watcher =
        vfpool_proto::pluginregistration::v1::registration_client::RegistrationClient::new(
            vfpool_deviceplugin::uds::channel(
                &env.kubelet()
                    .join("plugins_registry/intel.com_mlnx_sriov.sock"),
            ),
        );
    let info = watcher
        .get_info(vfpool_proto::pluginregistration::v1::InfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.endpoint, "");
    assert_eq!(info.name, NAME);
    // kubelet restarts: its plugin watcher finds the socket again and re-registers it.
    let before = sim.registrations().len();
    sim.restart().await.unwrap();
    sim.wait_for("registered again after the restart", GUARD, |r| {
        r.get(NAME).is_some_and(|v| v.allocatable() == 24)
    })
    .await
    .unwrap();
    assert!(sim.registrations().len() > before);
    plugins.shutdown().await;
    sim.shutdown();
}

/// The real unix socket, except that the first server instance's listener breaks after its first
/// connection (as `accept` failing with EBADF would, the socket closed under it) and accepts
/// nothing more.
#[derive(Debug, Default)]
struct BreaksOnce {
    binds: AtomicUsize,
}

impl vfpool_deviceplugin::uds::Listen for BreaksOnce {
    fn bind(
        &self,
        path: &Path,
    ) -> Result<vfpool_deviceplugin::uds::Incoming, vfpool_deviceplugin::uds::BindError> {
        use tokio_stream::StreamExt as _;
        let real = vfpool_deviceplugin::uds::UnixSocket.bind(path)?;
        if self.binds.fetch_add(1, Ordering::SeqCst) > 0 {
            return Ok(real);
        }
        let ebadf = std::io::Error::from_raw_os_error(nix::errno::Errno::EBADF as i32);
        Ok(Box::pin(
            real.take(1)
                .chain(tokio_stream::once(Err(ebadf)))
                .chain(tokio_stream::pending()),
        ))
    }
}

/// The real unix socket, except that each server instance's accept first fails with every
/// out-of-resources error (EMFILE, ENFILE, ENOMEM, ENOBUFS), a few times each.
#[derive(Debug, Default)]
struct OutOfResources {
    binds: AtomicUsize,
}

impl vfpool_deviceplugin::uds::Listen for OutOfResources {
    fn bind(
        &self,
        path: &Path,
    ) -> Result<vfpool_deviceplugin::uds::Incoming, vfpool_deviceplugin::uds::BindError> {
        use nix::errno::Errno;
        use tokio_stream::StreamExt as _;
        self.binds.fetch_add(1, Ordering::SeqCst);
        let real = vfpool_deviceplugin::uds::UnixSocket.bind(path)?;
        let errors: Vec<std::io::Result<tokio::net::UnixStream>> =
            [Errno::EMFILE, Errno::ENFILE, Errno::ENOMEM, Errno::ENOBUFS]
                .iter()
                .cycle()
                .take(8)
                .map(|errno| Err(std::io::Error::from_raw_os_error(*errno as i32)))
                .collect();
        Ok(Box::pin(tokio_stream::iter(errors).chain(real)))
    }
}

/// Running out of file descriptors or memory at accept is not a broken listener: the server pauses
/// and accepts again, without a restart (which would not help and would drop kubelet's stream).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_out_of_resources_pauses_instead_of_restarting() {
    let env = Env::new();
    let sim = env.sim().await;
    let listen = Arc::new(OutOfResources::default());
    let mut config = env.config();
    config.listen = Arc::clone(&listen) as Arc<dyn vfpool_deviceplugin::uds::Listen>;
    let mut plugins = DevicePlugins::start(config, failing()).unwrap();
    plugins.apply(&env.pool(0), &env.inventory).await;
    all_allocatable(&sim).await;
    let response = tokio::time::timeout(
        GUARD,
        sim.allocate_raw(NAME, vec!["0000:3b:00.2".to_string()]),
    )
    .await
    .expect("a new connection was not served")
    .unwrap();
    assert_eq!(
        response.container_responses[0].envs["PCIDEVICE_INTEL_COM_MLNX_SRIOV"],
        "0000:3b:00.2"
    );
    assert_eq!(
        listen.binds.load(Ordering::SeqCst),
        1,
        "the server was restarted"
    );
    plugins.shutdown().await;
    sim.shutdown();
}

/// Upstream #648 (#411): a gRPC server whose accept loop fails is restarted, re-registers, and
/// serves new connections. tonic on its own swallows accept errors and would leave a server that
/// accepts nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_whose_listener_fails_is_restarted() {
    let env = Env::new();
    let sim = env.sim().await;
    let listen = Arc::new(BreaksOnce::default());
    let mut config = env.config();
    config.listen = Arc::clone(&listen) as Arc<dyn vfpool_deviceplugin::uds::Listen>;
    let mut plugins = DevicePlugins::start(config, failing()).unwrap();
    plugins.apply(&env.pool(0), &env.inventory).await;
    // The first instance takes kubelet's connection, then its listener fails. (The old
    // instance's stream may still count as connected when the second instance is bound: the
    // restarted instance's own registration is waited for too. The first instance's may never
    // complete: kubelet connects back before it answers, and that instance stops meanwhile.)
    let listen_ref = &listen;
    let sim_ref = &sim;
    let plugins_ref = &plugins;
    tokio::time::timeout(GUARD, async move {
        while listen_ref.binds.load(Ordering::SeqCst) < 2
            || plugins_ref.registration(NAME) != Some(Ok(()))
            || !sim_ref
                .resource(NAME)
                .is_some_and(|v| v.connected && v.allocatable() == 24)
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "the failed server was not restarted and registered again: binds {}, registrations {:?}, resource {:?}",
            listen.binds.load(Ordering::SeqCst),
            sim.registrations(),
            sim.resource(NAME).map(|v| (v.connected, v.allocatable()))
        )
    });
    // A new connection is served (the broken instance would never accept it).
    let response = tokio::time::timeout(
        GUARD,
        sim.allocate_raw(NAME, vec!["0000:3b:00.2".to_string()]),
    )
    .await
    .expect("a new connection was not served")
    .unwrap();
    assert_eq!(
        response.container_responses[0].envs["PCIDEVICE_INTEL_COM_MLNX_SRIOV"],
        "0000:3b:00.2"
    );
    assert!(
        sim.registrations().iter().any(|r| r.error.is_none()),
        "registered again after the restart"
    );
    plugins.shutdown().await;
    assert!(!socket(&env).exists());
    sim.shutdown();
}

/// A refused Allocate (an id twice, an id not in the pool) names the id and writes no
/// device-info file; a two-device request gets both, in request order, `rdma_cm` once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocate_refuses_repeats_and_strangers_without_writing_files() {
    let env = Env::new();
    let sim = env.sim().await;
    let mut plugins = DevicePlugins::start(env.config(), failing()).unwrap();
    plugins.apply(&env.pool(0), &env.inventory).await;
    all_allocatable(&sim).await;
    let devinfo = env.tmp.path().join("devinfo");
    let files = || -> Vec<String> {
        std::fs::read_dir(&devinfo)
            .map(|d| {
                d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let (a, b) = ("0000:3b:00.2".to_string(), "0000:3b:00.3".to_string());
    let twice = sim
        .allocate_raw(NAME, vec![a.clone(), b.clone(), a.clone()])
        .await
        .unwrap_err();
    assert!(format!("{twice:?}").contains("twice"), "{twice:?}");
    let stranger = sim
        .allocate_raw(NAME, vec![a.clone(), "0000:ff:1f.7".to_string()])
        .await
        .unwrap_err();
    assert!(
        format!("{stranger:?}").contains("0000:ff:1f.7"),
        "{stranger:?}"
    );
    assert!(files().is_empty(), "a refused request wrote {:?}", files());

    let response = sim
        .allocate_raw(NAME, vec![b.clone(), a.clone()])
        .await
        .unwrap();
    let container = &response.container_responses[0];
    assert_eq!(
        container.envs["PCIDEVICE_INTEL_COM_MLNX_SRIOV"],
        format!("{b},{a}")
    );
    let info: serde_json::Value =
        serde_json::from_str(&container.envs["PCIDEVICE_INTEL_COM_MLNX_SRIOV_INFO"]).unwrap();
    assert_eq!(info[&a]["generic"]["deviceID"], a.as_str());
    assert_eq!(info[&b]["generic"]["deviceID"], b.as_str());
    assert!(info[&a]["rdma"]["rdma_dev"].is_string());
    let cm = container
        .devices
        .iter()
        .filter(|d| d.host_path == "/dev/infiniband/rdma_cm")
        .count();
    assert_eq!(cm, 1);
    let mut written = files();
    written.sort();
    assert_eq!(
        written,
        [
            format!("intel.com-mlnx_sriov-{a}-device.json"),
            format!("intel.com-mlnx_sriov-{b}-device.json"),
        ]
    );
    plugins.shutdown().await;
    assert!(files().is_empty(), "stopping removes the files");
    sim.shutdown();
}

/// Exclusive RDMA mode: the last rescan ran while a VF's RDMA device was in the network namespace
/// of the pod that had it, so the pool was prepared without it; the pod ended and the RDMA device
/// is back before the next rescan. Allocate hands the next pod the RDMA device as it is now (its
/// uverbs node, the `rdma` `_INFO` entry, the device-info file's `rdma-device`), as upstream,
/// which reads them at every Allocate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocate_reads_an_rdma_device_the_last_rescan_did_not_see() {
    let env = Env::new();
    let sys = env.tmp.path().join("sys");
    let id = "0000:3b:00.2";
    let dir = std::fs::canonicalize(sys.join("bus/pci/devices").join(id)).unwrap();
    let stash = env.tmp.path().join("in-the-pod");
    std::fs::create_dir_all(&stash).unwrap();
    let rdma_dirs = ["infiniband", "infiniband_verbs", "infiniband_mad"];
    let rdma_dev = std::fs::read_dir(dir.join("infiniband"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .file_name()
        .into_string()
        .unwrap();
    for d in rdma_dirs {
        std::fs::rename(dir.join(d), stash.join(d)).unwrap();
    }
    let inventory = vfpool_sysfs::discover(&SysfsRoot::new(&sys)).unwrap();
    assert!(inventory.get(id).unwrap().rdma_devices.is_empty());

    let sim = env.sim().await;
    let mut plugins = DevicePlugins::start(env.config(), failing()).unwrap();
    plugins.apply(&env.pool(0), &inventory).await;
    all_allocatable(&sim).await;
    // The pod ended: its network namespace is gone and the RDMA device is back on the host.
    for d in rdma_dirs {
        std::fs::rename(stash.join(d), dir.join(d)).unwrap();
    }

    let response = sim.allocate_raw(NAME, vec![id.to_string()]).await.unwrap();
    let container = &response.container_responses[0];
    let info: serde_json::Value =
        serde_json::from_str(&container.envs["PCIDEVICE_INTEL_COM_MLNX_SRIOV_INFO"]).unwrap();
    let rdma = &info[id]["rdma"];
    assert_eq!(rdma["rdma_dev"], rdma_dev.as_str(), "{info}");
    let uverbs = rdma["uverbs"].as_str().expect("a uverbs node");
    assert!(uverbs.starts_with("/dev/infiniband/uverbs"), "{info}");
    assert!(
        container.devices.iter().any(|d| d.host_path == uverbs),
        "{:?}",
        container.devices
    );
    let doc = std::fs::read_to_string(
        env.tmp
            .path()
            .join("devinfo")
            .join(format!("intel.com-mlnx_sriov-{id}-device.json")),
    )
    .unwrap();
    assert_eq!(
        doc,
        format!(
            r#"{{"type":"pci","version":"1.1.0","pci":{{"pci-address":"{id}","rdma-device":"{rdma_dev}"}}}}"#
        )
    );
    plugins.shutdown().await;
    sim.shutdown();
}

/// Allocator calls run at most `allocator_concurrency` at a time (a CPU-bound policy on every
/// blocking thread at once makes all of them late), and every one is still answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocator_calls_are_admitted_one_per_permit() {
    let env = Env::new();
    let sim = env.sim().await;
    let in_flight = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let calls = Arc::new(AtomicUsize::new(0));
    let (f, m, c) = (
        Arc::clone(&in_flight),
        Arc::clone(&most),
        Arc::clone(&calls),
    );
    let allocator = Arc::new(FnAllocator(move |req: &PreferenceRequest| {
        let now = f.fetch_add(1, Ordering::SeqCst) + 1;
        m.fetch_max(now, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(100));
        f.fetch_sub(1, Ordering::SeqCst);
        c.fetch_add(1, Ordering::SeqCst);
        Ok(req.available[..req.size].to_vec())
    }));
    let mut config = env.config();
    config.allocator_concurrency = 1;
    config.allocator_timeout = GUARD;
    let mut plugins = DevicePlugins::start(config, allocator).unwrap();
    plugins.apply(&env.pool(0), &env.inventory).await;
    all_allocatable(&sim).await;
    let available: Vec<String> = env.pool(0)[0]
        .devices
        .iter()
        .map(|d| d.id.clone())
        .collect();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let mut client = raw_client(&socket(&env)).await;
        let available = available.clone();
        tasks.push(tokio::spawn(async move {
            client
                .get_preferred_allocation(api::PreferredAllocationRequest {
                    container_requests: vec![api::ContainerPreferredAllocationRequest {
                        available_device_i_ds: available.clone(),
                        must_include_device_i_ds: Vec::new(),
                        allocation_size: 2,
                    }],
                })
                .await
                .unwrap()
                .into_inner()
        }));
    }
    for task in tasks {
        let answer = task.await.unwrap();
        assert_eq!(answer.container_responses[0].device_i_ds, available[..2]);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    assert_eq!(most.load(Ordering::SeqCst), 1, "calls overlapped");
    plugins.shutdown().await;
    sim.shutdown();
}

/// An Allocate for several containers is checked whole before any device-info file is written:
/// a refused container used to leave the files of the containers before it, and one device could
/// go to two containers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_container_allocate_is_checked_whole() {
    let env = Env::new();
    let mut plugins = DevicePlugins::start(env.config(), failing()).unwrap();
    plugins.apply(&env.pool(0), &env.inventory).await;
    serving(&env, "the pool serves").await;
    let id = env.ids()[0].clone();
    let devinfo = env.tmp.path().join("devinfo");
    let mut client = raw_client(&socket(&env)).await;
    let containers = |lists: &[&[&str]]| api::AllocateRequest {
        container_requests: lists
            .iter()
            .map(|ids| api::ContainerAllocateRequest {
                devices_ids: ids.iter().map(|id| id.to_string()).collect(),
            })
            .collect(),
    };
    let unknown = client
        .allocate(containers(&[&[&id], &["0000:ff:1f.7"]]))
        .await
        .unwrap_err();
    assert!(unknown.message().contains("0000:ff:1f.7"), "{unknown:?}");
    assert!(
        std::fs::read_dir(&devinfo).map_or(true, |mut d| d.next().is_none()),
        "a refused Allocate wrote device-info files"
    );
    let twice = client
        .allocate(containers(&[&[&id], &[&id]]))
        .await
        .unwrap_err();
    assert!(
        twice.message().contains(&id) && twice.message().contains("two containers"),
        "{twice:?}"
    );
    // A hostile id of 256 KiB (within the request size limit): the refusal quotes its start,
    // escaped, and says how long it was, instead of all of it in the log and the pod's event.
    let huge = format!("evil\n{}", "x".repeat(256 << 10));
    let refused = client.allocate(containers(&[&[&huge]])).await.unwrap_err();
    assert!(
        refused.message().len() < 1024
            && refused.message().contains(r#""evil\nxxx"#)
            && refused
                .message()
                .contains(&format!("({} bytes)", huge.len())),
        "{}",
        &refused.message()[..refused.message().len().min(2048)]
    );
    let both = client
        .allocate(containers(&[&[&id], &[&env.ids()[1]]]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(both.container_responses.len(), 2);
    assert_eq!(std::fs::read_dir(&devinfo).unwrap().count(), 2);
    plugins.shutdown().await;
}

/// `pool` (a name) with `ids` (netdev pool, no hints).
fn named_pool(name: &str, ids: &[String]) -> Pool {
    Pool {
        resource_name: name.to_string(),
        device_type: DeviceType::NetDevice,
        exclude_topology: false,
        devices: ids
            .iter()
            .map(|id| PoolDevice {
                id: id.clone(),
                rdma: false,
                vhost_net: false,
                vdpa_type: None,
                additional_info: None,
            })
            .collect(),
    }
}

/// While PodResources cannot answer (here its socket is gone, as while kubelet restarts), which
/// devices pods hold is unknown, so no served device moves: a pool change keeps them where they
/// are (held) instead of offering a device a pod holds in a second pool. It used to
/// plan with the last answer, from before the pod got the device, and moved it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_device_moves_while_pod_resources_cannot_answer() {
    let env = Env::new();
    let sim = env.sim().await;
    let mut plugins = DevicePlugins::start(env.config(), failing()).unwrap();
    let ids = env.ids();
    let (a, b) = ("intel.com/pool_a", "intel.com/pool_b");
    plugins.apply(&[named_pool(a, &ids)], &env.inventory).await;
    sim.wait_for("pool_a", GUARD, |r| {
        r.get(a).is_some_and(|v| v.allocatable() == 24)
    })
    .await
    .unwrap();
    let pod = sim.allocate_pod("holder", a, 1).await.unwrap();
    let held = pod.device_ids[0].clone();

    std::fs::remove_file(env.kubelet().join("pod-resources/kubelet.sock")).unwrap();
    // The policy now puts every device in pool_b.
    let report = plugins.apply(&[named_pool(b, &ids)], &env.inventory).await;
    assert!(!report.pod_resources_current, "{report:?}");
    let served = plugins.snapshots();
    assert!(
        served.get(b).is_none_or(|s| s.get(&held).is_none()),
        "a held device offered in a second pool: {report:?}"
    );
    let kept = served[a]
        .get(&held)
        .expect("the held device stays in pool_a");
    assert!(kept.held);
    assert_eq!(kept.health, vfpool_deviceplugin::Health::Healthy);
    // Reported (with every device kept where it is while PodResources cannot say), so the agent
    // asks again soon: released, a held device is free in pool_a until then.
    assert!(report.holding.contains(&held), "{report:?}");
    sim.shutdown();
}

/// A device that leaves its pool for none settles before another pool gets it, as one moved in a
/// single apply does: the next apply may want it elsewhere (a SIGHUP's reload and rescan, a policy
/// that drops a device and then picks it for another pool) while an Allocate from the old pool's
/// list is still on its way. It used to join the other pool at the very next apply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_dropped_then_wanted_elsewhere_settles_first() {
    let env = Env::new();
    let sim = env.sim().await;
    let ids = env.ids();
    let (a, b) = ("intel.com/pool_a", "intel.com/pool_b");
    let mut config = env.config();
    // Long enough that the next apply comes well within it on a loaded machine.
    config.move_settle = Duration::from_secs(2);
    let mut plugins = DevicePlugins::start(config, failing()).unwrap();
    plugins.apply(&[named_pool(a, &ids)], &env.inventory).await;
    let dropped = ids[0].clone();
    let report = plugins
        .apply(&[named_pool(a, &ids[1..])], &env.inventory)
        .await;
    assert!(
        report.moving.is_empty(),
        "wanted nowhere, so not moving: {report:?}"
    );
    let wanted = [named_pool(a, &ids[1..]), named_pool(b, &ids[..1])];
    let report = plugins.apply(&wanted, &env.inventory).await;
    assert_eq!(report.moving, std::slice::from_ref(&dropped), "{report:?}");
    assert!(
        !plugins.snapshots().contains_key(b),
        "the dropped device joined another pool at once"
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let report = plugins.apply(&wanted, &env.inventory).await;
    assert!(report.moving.is_empty(), "{report:?}");
    assert!(plugins.snapshots()[b].get(&dropped).is_some());
    plugins.shutdown().await;
    sim.shutdown();
}

/// kubelet chooses a pod's devices from the last list it got, then calls GetPreferredAllocation
/// and Allocate without holding its lock: a pool change in between (here half the pool moves to
/// another pool) had Allocate refuse the devices that left, and the pod failed admission for
/// good. They are granted while they settle (in no pool), and stay with the pod: the apply after
/// the settle time sees them in PodResources and keeps them in their pool, held, instead of
/// moving them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_kubelet_chose_before_a_pool_change_are_granted_and_stay() {
    let env = Env::new();
    let sim = env.sim().await;
    let ids = env.ids();
    let (a, b) = ("intel.com/pool_a", "intel.com/pool_b");
    let mut config = env.config();
    // Allocate may grant a departed device for half of it: room on a loaded machine.
    config.move_settle = Duration::from_secs(2);
    let mut plugins = serving_pool_a(&env, &sim, config).await;
    let (staying, leaving) = ids.split_at(12);
    let changed = [named_pool(a, staying), named_pool(b, leaving)];
    // The pod wants every device, so its Allocate names both kinds.
    let (pod, report) = sim
        .allocate_pod_meanwhile("racer", a, 24, plugins.apply(&changed, &env.inventory))
        .await
        .expect("the devices chosen from the list before the change were refused");
    assert_eq!(report.moving, leaving, "{report:?}");
    assert_eq!(pod.device_ids.len(), 24);
    let info = pod
        .response
        .envs
        .get("PCIDEVICE_INTEL_COM_POOL_A")
        .expect("the pool's env var");
    assert!(
        leaving.iter().all(|id| info.contains(id.as_str())),
        "{info}"
    );
    assert!(
        leaving
            .iter()
            .all(|id| device_info_file(&env, a, id).exists()),
        "device-info files of the departed devices"
    );

    tokio::time::sleep(Duration::from_millis(2100)).await;
    let report = plugins.apply(&changed, &env.inventory).await;
    assert!(report.moving.is_empty(), "{report:?}");
    let snapshots = plugins.snapshots();
    for id in leaving {
        assert!(
            snapshots[a].get(id).is_some_and(|m| m.held),
            "{id} left the pod's pool: {report:?}"
        );
        assert!(
            snapshots.get(b).is_none_or(|pool| pool.get(id).is_none()),
            "{id} is in two pools"
        );
    }
    plugins.shutdown().await;
    sim.shutdown();
}

/// kubelet's PodResources does not report init containers: a device that only a pod's init
/// container got (its app container reused the other) looked free, so a pool change moved it
/// into another pool, where kubelet could hand it to a second pod, and a restarted kubelet
/// refused to admit the pod again (its init container's device no longer listed as healthy).
/// kubelet's checkpoint lists it: it stays in its pool, held, while the pod lives; once the pod
/// has ended (its directory gone, the checkpoint not rewritten yet) it moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_only_an_init_container_got_stays_while_its_pod_lives() {
    let env = Env::new();
    let sim = env.sim().await;
    let (a, b) = ("intel.com/pool_a", "intel.com/pool_b");
    let mut config = env.config();
    config.move_settle = Duration::from_millis(200);
    let mut plugins = serving_pool_a(&env, &sim, config).await;
    let (init, app) = sim.allocate_pod_with_init("pod-i", a, 2, 1).await.unwrap();
    let only_init: Vec<&String> = init
        .device_ids
        .iter()
        .filter(|id| !app.contains(id))
        .collect();
    assert_eq!(only_init.len(), 1, "{init:?} {app:?}");
    // Every device now wanted in pool_b; a second apply after the settle time places them.
    let everything = [named_pool(b, &env.ids())];
    let apply_twice = async |plugins: &mut DevicePlugins| {
        plugins.apply(&everything, &env.inventory).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        plugins.apply(&everything, &env.inventory).await;
        plugins.snapshots()
    };
    let snapshots = apply_twice(&mut plugins).await;
    for id in &init.device_ids {
        assert!(
            snapshots[a].get(id).is_some_and(|m| m.held),
            "{id} left its pod's pool (init container only: {only_init:?})"
        );
        assert!(snapshots[b].get(id).is_none(), "{id} is in two pools");
    }
    assert_eq!(snapshots[b].members.len(), 22);
    sim.wait_for("pool_b listed", GUARD, |r| {
        r.get(b).is_some_and(|v| v.allocatable() == 22)
    })
    .await
    .unwrap();
    // kubelet restarted, the pod admitted again: all its devices must still be listed healthy.
    sim.readmit_pod("pod-i").unwrap();

    // The pod ends: kubelet removes its directory but leaves the checkpoint as it was.
    assert!(sim.release_pod("pod-i"));
    let snapshots = apply_twice(&mut plugins).await;
    assert!(
        !snapshots.contains_key(a),
        "pool_a kept for a pod that ended"
    );
    for id in &init.device_ids {
        assert!(
            snapshots[b].get(id).is_some(),
            "{id} not moved after its pod ended"
        );
    }
    plugins.shutdown().await;
    sim.shutdown();
}

/// A device that left its pool because it is no longer what the pool granted (rebound to another
/// driver) is not granted from the pool's previous list: the kept answer would hand the pod the
/// old kind of device. One that left unchanged is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_rebound_to_another_driver_is_not_granted_from_the_previous_list() {
    let env = Env::new();
    let sim = env.sim().await;
    let ids = env.ids();
    let a = "intel.com/pool_a";
    let mut config = env.config();
    config.move_settle = Duration::from_secs(2);
    let mut plugins = serving_pool_a(&env, &sim, config).await;
    let (rebound, dropped) = (ids[0].clone(), ids[1].clone());
    let mut inventory = env.inventory.clone();
    let device = inventory
        .devices
        .iter_mut()
        .find(|d| d.id == rebound)
        .unwrap();
    device.driver = Some("vfio-pci".to_string());
    device.netdevs.clear();
    device.netdev = None;
    let report = plugins.apply(&[named_pool(a, &ids[2..])], &inventory).await;
    assert!(report.departed.contains(&rebound) && report.departed.contains(&dropped));
    let refused = sim
        .allocate_raw(a, vec![rebound.clone()])
        .await
        .unwrap_err();
    let refused = format!("{refused:?}");
    assert!(refused.contains("left the pool"), "{refused}");
    sim.allocate_raw(a, vec![dropped.clone()])
        .await
        .expect("a device that left unchanged is granted");
    plugins.shutdown().await;
    sim.shutdown();
}

/// A restarted kubelet answers PodResources before it has learnt its pods again from the API
/// server: a pod that still holds a device is missing from the answer. Within a grace after the
/// restart (a new PodResources socket) what pods held stays held; the device used to be freed at
/// once for the pool the policy now wants it in, where another pod could get it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_kubelet_that_does_not_list_a_pod_yet_frees_nothing() {
    let env = Env::new();
    let mut sim = env.sim().await;
    // The pod's directory and kubelet's checkpoint would hold the device through the restart
    // too: without them, the grace is all that does.
    sim.no_pod_directories();
    let ids = env.ids();
    let (a, b) = ("intel.com/pool_a", "intel.com/pool_b");
    let mut config = env.config();
    config.move_settle = Duration::from_millis(100);
    config.kubelet_restart_grace = Duration::from_millis(1500);
    let mut plugins = DevicePlugins::start(config, failing()).unwrap();
    plugins.apply(&[named_pool(a, &ids)], &env.inventory).await;
    sim.wait_for("pool_a", GUARD, |r| {
        r.get(a).is_some_and(|v| v.allocatable() == 24)
    })
    .await
    .unwrap();
    let held = sim.allocate_pod("holder", a, 1).await.unwrap().device_ids[0].clone();
    let report = plugins.apply(&[named_pool(b, &ids)], &env.inventory).await;
    assert_eq!(report.holding, std::slice::from_ref(&held), "{report:?}");
    // The other devices settle and join pool_b.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let report = plugins.apply(&[named_pool(b, &ids)], &env.inventory).await;
    assert!(report.moving.is_empty(), "{report:?}");

    sim.restart().await.unwrap();
    sim.pods_unknown(true);
    let report = plugins.apply(&[named_pool(b, &ids)], &env.inventory).await;
    assert!(report.pod_resources_current, "{report:?}");
    assert_eq!(
        report.holding,
        std::slice::from_ref(&held),
        "the held device was freed: {report:?}"
    );
    assert!(report.moving.is_empty(), "{report:?}");

    // Past the grace, PodResources is believed again: the pod really has ended now.
    sim.pods_unknown(false);
    sim.release_pod("holder");
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let report = plugins.apply(&[named_pool(b, &ids)], &env.inventory).await;
    assert_eq!(report.moving, std::slice::from_ref(&held), "{report:?}");
    plugins.shutdown().await;
    sim.shutdown();
}

/// Serves every device in `pool_a` and allocates two of them without kubelet recording a pod (as
/// if its PodResources answer came first); the second one's device-info file is made an hour old,
/// as one left by an earlier pod. Returns the plugins and the two ids (racing, earlier).
async fn pool_a_with_two_allocated(env: &Env, sim: &KubeletSim) -> (DevicePlugins, String, String) {
    let ids = env.ids();
    let a = "intel.com/pool_a";
    let plugins = serving_pool_a(env, sim, env.config()).await;
    let (racing, earlier) = (ids[0].clone(), ids[1].clone());
    sim.allocate_raw(a, vec![racing.clone(), earlier.clone()])
        .await
        .unwrap();
    make_an_hour_old(&device_info_file(env, a, &earlier));
    (plugins, racing, earlier)
}

/// Plugins with `config` serving every device in `pool_a`, once kubelet lists all 24.
async fn serving_pool_a(env: &Env, sim: &KubeletSim, config: PluginConfig) -> DevicePlugins {
    let a = "intel.com/pool_a";
    let mut plugins = DevicePlugins::start(config, failing()).unwrap();
    plugins
        .apply(&[named_pool(a, &env.ids())], &env.inventory)
        .await;
    sim.wait_for("pool_a", GUARD, |r| {
        r.get(a).is_some_and(|v| v.allocatable() == 24)
    })
    .await
    .unwrap();
    plugins
}

/// The device-info file of `id` in pool `resource`.
fn device_info_file(env: &Env, resource: &str, id: &str) -> std::path::PathBuf {
    env.tmp
        .path()
        .join("devinfo")
        .join(vfpool_deviceplugin::allocate::device_info_file_name(
            resource, id,
        ))
}

fn make_an_hour_old(file: &Path) {
    std::fs::File::options()
        .write(true)
        .open(file)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - Duration::from_secs(3600))
        .unwrap();
}

/// A pool change reads what pods hold first and withdraws devices seconds later (pools stop,
/// answers are prepared); an Allocate in between gives a pod a device the plan took for free. The
/// device-info file that Allocate wrote is the pod's (Multus reads it at the pod's CNI ADD): it
/// used to be deleted with the device's departure. A file written before the change still goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_info_file_written_during_a_pool_change_is_kept() {
    let env = Env::new();
    let sim = env.sim().await;
    let ids = env.ids();
    let a = "intel.com/pool_a";
    let (mut plugins, racing, earlier) = pool_a_with_two_allocated(&env, &sim).await;
    let file = |id: &str| device_info_file(&env, a, id);
    // Both leave pool_a (no pod holds them, as far as PodResources says).
    let report = plugins
        .apply(&[named_pool(a, &ids[2..])], &env.inventory)
        .await;
    assert!(report.pod_resources_current, "{report:?}");
    assert!(plugins.snapshots()[a].get(&racing).is_none());
    assert!(
        file(&racing).exists(),
        "the racing Allocate's file was deleted"
    );
    assert!(
        !file(&earlier).exists(),
        "a file from before the change was kept"
    );
    plugins.shutdown().await;
    sim.shutdown();
}

/// The same race for a device allocated before, to a pod long gone: its device-info file was
/// left with the same bytes, so the racing Allocate kept the file as it was — and its old
/// modification time told the pool change it was a leftover, and deleted it under the new pod.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_info_file_allocated_again_during_a_pool_change_is_kept() {
    let env = Env::new();
    let sim = env.sim().await;
    let ids = env.ids();
    let a = "intel.com/pool_a";
    let mut plugins = serving_pool_a(&env, &sim, env.config()).await;
    let racing = ids[0].clone();
    let file = device_info_file(&env, a, &racing);
    // An earlier pod's Allocate, an hour ago; its pod is gone, its file stays.
    sim.allocate_raw(a, vec![racing.clone()]).await.unwrap();
    let before = std::fs::read(&file).unwrap();
    make_an_hour_old(&file);
    // The racing Allocate gives the device to the next pod: the same document.
    sim.allocate_raw(a, vec![racing.clone()]).await.unwrap();
    assert_eq!(std::fs::read(&file).unwrap(), before);
    let report = plugins
        .apply(&[named_pool(a, &ids[1..])], &env.inventory)
        .await;
    assert!(report.pod_resources_current, "{report:?}");
    assert!(plugins.snapshots()[a].get(&racing).is_none());
    assert!(
        file.exists(),
        "the racing Allocate's file (same bytes as the last pod's) was deleted"
    );
    plugins.shutdown().await;
    sim.shutdown();
}

/// A pool that a change stops (its devices all go elsewhere) removes its device-info files, but
/// not one an Allocate from its last list wrote during the change: it used to remove every file,
/// whenever written, and the pod's network attachment came up without its `device-info`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_info_file_written_while_its_pool_stops_is_kept() {
    let env = Env::new();
    let sim = env.sim().await;
    let ids = env.ids();
    let (a, b) = ("intel.com/pool_a", "intel.com/pool_b");
    let (mut plugins, racing, earlier) = pool_a_with_two_allocated(&env, &sim).await;
    let file = |id: &str| device_info_file(&env, a, id);
    // Every device moves to pool_b: pool_a stops.
    let report = plugins.apply(&[named_pool(b, &ids)], &env.inventory).await;
    assert!(report.stopped.iter().any(|s| s == a), "{report:?}");
    assert!(
        file(&racing).exists(),
        "the racing Allocate's file was deleted with its pool"
    );
    assert!(
        !file(&earlier).exists(),
        "a file from before the change was kept"
    );
    plugins.shutdown().await;
    sim.shutdown();
}

/// An agent (re)started while PodResources cannot answer yet (kubelet restarting: its old socket
/// refuses connections) waits for the answer before serving: with nothing served yet, a device a
/// pod got before the restart could be kept out of other pools only if its pod is known. It used
/// to serve at once, and a changed config offered the held device in a second pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_agent_waits_for_pod_resources_before_serving() {
    let env = Env::new();
    let sim = env.sim().await;
    let ids = env.ids();
    let (a, b) = ("intel.com/pool_a", "intel.com/pool_b");
    let mut before = DevicePlugins::start(env.config(), failing()).unwrap();
    before.apply(&[named_pool(a, &ids)], &env.inventory).await;
    sim.wait_for("pool_a", GUARD, |r| {
        r.get(a).is_some_and(|v| v.allocatable() == 24)
    })
    .await
    .unwrap();
    let held = sim.allocate_pod("holder", a, 1).await.unwrap().device_ids[0].clone();
    before.shutdown().await;

    // kubelet restarting: a socket file nobody listens on, its server back a moment later.
    let socket = env.kubelet().join("pod-resources/kubelet.sock");
    let aside = env.kubelet().join("pod-resources/aside.sock");
    std::fs::rename(&socket, &aside).unwrap();
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    let back = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(600)).await;
        std::fs::rename(&aside, &socket).unwrap();
    });
    let mut after = DevicePlugins::start(env.config(), failing()).unwrap();
    // The new config puts every device in pool_b.
    let report = after.apply(&[named_pool(b, &ids)], &env.inventory).await;
    back.await.unwrap();
    assert!(report.pod_resources_current, "{report:?}");
    let served = after.snapshots();
    assert!(
        served[b].get(&held).is_none(),
        "the device a pod holds is offered in a second pool: {report:?}"
    );
    assert_eq!(served[b].members.len(), 23);
    after.shutdown().await;
    sim.shutdown();
}

/// A `pod-resources` directory whose socket never appears (a hostPath the runtime created, the
/// API turned off) costs one wait, at the first apply: after it the agent serves as without the
/// API. It used to count as "kubelet restarting" forever (no device ever moved).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_resources_directory_without_a_socket_costs_one_wait() {
    let env = Env::new();
    std::fs::create_dir_all(env.kubelet().join("pod-resources")).unwrap();
    let mut config = env.config();
    config.pod_resources_first_wait = Duration::from_millis(300);
    let mut plugins = DevicePlugins::start(config, failing()).unwrap();
    let first = plugins.apply(&env.pool(0), &env.inventory).await;
    assert!(first.pod_resources_current, "{first:?}");
    assert_eq!(first.started, [NAME]);
    let again = plugins.apply(&env.pool(1), &env.inventory).await;
    assert!(again.pod_resources_current, "{again:?}");
    plugins.shutdown().await;
}

/// A device moving between pools stays out of every pool for `move_settle`, however soon the next
/// apply comes (a SIGHUP or a kernel event used to place it at once), and for as long as
/// PodResources cannot confirm that no pod took it; then it joins its new pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moving_device_waits_out_the_settle_time_and_pod_resources() {
    let env = Env::new();
    let sim = env.sim().await;
    let mut config = env.config();
    config.move_settle = Duration::from_millis(300);
    let mut plugins = DevicePlugins::start(config, failing()).unwrap();
    let ids = env.ids();
    let (a, b) = ("intel.com/pool_a", "intel.com/pool_b");
    plugins.apply(&[named_pool(a, &ids)], &env.inventory).await;
    let (moved, stay) = ids.split_at(1);
    let desired = [named_pool(b, moved), named_pool(a, stay)];
    let in_b = |plugins: &DevicePlugins| {
        plugins
            .snapshots()
            .get(b)
            .is_some_and(|s| s.get(&moved[0]).is_some())
    };
    let in_a = |plugins: &DevicePlugins| plugins.snapshots()[a].get(&moved[0]).is_some();

    let first = plugins.apply(&desired, &env.inventory).await;
    assert_eq!(first.moving, moved);
    // Applied again at once: still in neither pool, still moving.
    let again = plugins.apply(&desired, &env.inventory).await;
    assert_eq!(again.moving, moved);
    assert!(!in_a(&plugins) && !in_b(&plugins));

    // PodResources cannot answer: it stays out (not pinned back into pool_a), however long.
    let socket = env.kubelet().join("pod-resources/kubelet.sock");
    let hidden = env.kubelet().join("pod-resources/hidden.sock");
    std::fs::rename(&socket, &hidden).unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let stale = plugins.apply(&desired, &env.inventory).await;
    assert_eq!(stale.moving, moved);
    assert!(!in_a(&plugins) && !in_b(&plugins));

    // It answers again, and the time has passed: the device joins pool_b.
    std::fs::rename(&hidden, &socket).unwrap();
    let placed = plugins.apply(&desired, &env.inventory).await;
    assert!(placed.moving.is_empty(), "{placed:?}");
    assert!(in_b(&plugins) && !in_a(&plugins));
    sim.shutdown();
}

/// A pool whose stop is abandoned half-way (the agent is told to stop while an apply waits for the
/// pool's server to end) is still cleaned up by `shutdown`: it used to be forgotten, leaving its
/// device-info files (and possibly its socket) behind. A current-thread runtime makes the
/// interruption deterministic: the apply is polled once, which leaves it waiting in the stop.
#[tokio::test(flavor = "current_thread")]
async fn an_interrupted_pool_stop_is_finished_by_shutdown() {
    let env = Env::new();
    // No kubelet: nothing to register with, and no PodResources to ask.
    let mut plugins = DevicePlugins::start(env.config(), failing()).unwrap();
    plugins.apply(&env.pool(0), &env.inventory).await;
    let devinfo = env.tmp.path().join("devinfo");
    std::fs::create_dir_all(&devinfo).unwrap();
    let file = devinfo.join(vfpool_deviceplugin::allocate::device_info_file_name(
        NAME,
        "0000:3b:00.2",
    ));
    std::fs::write(&file, "{}").unwrap();
    interrupt_stop(&env, &mut plugins).await;
    plugins.shutdown().await;
    assert!(!file.exists(), "device-info file left behind");
    assert!(!socket(&env).exists(), "socket left behind");
}

/// The same interrupted stop, when another agent instance (a rolling update) has bound the path
/// since: `shutdown` finishes the stop but leaves that instance's socket alone (it used to delete
/// whatever was at the path, cutting the new instance off from kubelet).
#[tokio::test(flavor = "current_thread")]
async fn an_interrupted_pool_stop_leaves_another_instances_socket() {
    let env = Env::new();
    let mut plugins = DevicePlugins::start(env.config(), failing()).unwrap();
    plugins.apply(&env.pool(0), &env.inventory).await;
    interrupt_stop(&env, &mut plugins).await;
    let path = socket(&env);
    let other = path.with_extension("other");
    let _other_instance = std::os::unix::net::UnixListener::bind(&other).unwrap();
    std::fs::rename(&other, &path).unwrap();
    plugins.shutdown().await;
    assert!(path.exists(), "another instance's socket was deleted");
}

/// Waits until the pool serves, then starts stopping it (an apply without pools) and abandons the
/// stop after one poll, as a stop signal arriving mid-apply does.
async fn interrupt_stop(env: &Env, plugins: &mut DevicePlugins) {
    tokio::time::timeout(GUARD, async {
        while !socket(env).exists() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the pool serves");
    let stopping = plugins.apply(&[], &env.inventory);
    tokio::pin!(stopping);
    let polled = std::future::poll_fn(|cx| {
        std::task::Poll::Ready(std::future::Future::poll(stopping.as_mut(), cx))
    })
    .await;
    assert!(polled.is_pending(), "the stop waits for the server");
}

/// kubelet's plugin watcher does not try a socket again once its registration failed (the device
/// manager could not connect back, here simulated once): the pool serves a new socket after a
/// pause, which kubelet registers. It used to stay unregistered for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_plugin_watcher_registration_serves_a_new_socket() {
    let env = Env::new();
    let sim = KubeletSim::start(
        &env.kubelet(),
        SimOptions {
            plugin_watcher: true,
        },
    )
    .await
    .unwrap();
    sim.fail_next_registrations(1);
    let mut plugins = DevicePlugins::start(env.config(), failing()).unwrap();
    plugins.apply(&env.pool(0), &env.inventory).await;
    let sim_ref = &sim;
    tokio::time::timeout(GUARD, async move {
        while !sim_ref
            .resource(NAME)
            .is_some_and(|v| v.connected && v.allocatable() == 24)
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "never registered after the refusal: registrations {:?}, ours {:?}",
            sim.registrations(),
            plugins.registration(NAME)
        )
    });
    registered(&plugins).await;
    let records = sim.registrations();
    assert!(records[0].error.is_some(), "{records:?}");
    assert!(records.last().unwrap().error.is_none(), "{records:?}");
    plugins.shutdown().await;
    sim.shutdown();
}

/// In plugin-watcher mode too, a pool socket that was deleted is served again, and kubelet
/// (which deregisters a deleted socket: allocatable 0) registers it again: found by the socket
/// poller, or, when the deletion went unseen, by the watchdog once kubelet's stream is gone. The
/// watchdog used to take a missing socket for another agent's and leave the pool unserved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_plugin_watcher_socket_is_served_again() {
    for poll in [Duration::from_secs(3600), Duration::from_millis(100)] {
        let env = Env::new();
        let sim = KubeletSim::start(
            &env.kubelet(),
            SimOptions {
                plugin_watcher: true,
            },
        )
        .await
        .unwrap();
        let mut config = env.config();
        config.poll_sockets = Some(poll);
        config.stream_grace = Duration::from_millis(300);
        let mut plugins = DevicePlugins::start(config, failing()).unwrap();
        plugins.apply(&env.pool(0), &env.inventory).await;
        all_allocatable(&sim).await;
        registered(&plugins).await;
        let path = env
            .kubelet()
            .join("plugins_registry/intel.com_mlnx_sriov.sock");
        let before = sim.registrations().len();
        std::fs::remove_file(&path).unwrap();
        let sim_ref = &sim;
        let path_ref = &path;
        tokio::time::timeout(GUARD, async move {
            while !(path_ref.exists()
                && sim_ref.registrations().len() > before
                && sim_ref
                    .resource(NAME)
                    .is_some_and(|v| v.connected && v.allocatable() == 24))
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .unwrap_or_else(|_| {
            panic!(
                "never served again (poll {poll:?}): socket {}, registrations {:?}, resource {:?}",
                path.exists(),
                sim.registrations(),
                sim.resource(NAME)
            )
        });
        plugins.shutdown().await;
        sim.shutdown();
    }
}

/// Two agent instances on one node (a rolling update): the second has bound the pool's socket
/// path. Stopping the first must not publish an empty list (kubelet takes every list for the
/// resource name as its devices, whichever stream it came on: the new instance's devices would be
/// wiped); its streams just end. A first instance not superseded does publish the empty list
/// (see `list_and_watch_sends_only_on_change_to_every_stream`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_superseded_instance_stops_without_an_empty_list() {
    use std::os::unix::fs::MetadataExt as _;
    let env = Env::new();
    // No kubelet: the instances serve, and keep trying to register meanwhile.
    let mut first = DevicePlugins::start(env.config(), failing()).unwrap();
    first.apply(&env.pool(0), &env.inventory).await;
    serving(&env, "the first instance serves").await;
    let first_socket = std::fs::metadata(socket(&env)).unwrap().ino();
    // kubelet's stream on the first instance.
    let mut client = raw_client(&socket(&env)).await;
    let mut stream = client
        .list_and_watch(api::Empty {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stream.message().await.unwrap().unwrap().devices.len(), 24);

    let mut second = DevicePlugins::start(env.config(), failing()).unwrap();
    second.apply(&env.pool(0), &env.inventory).await;
    tokio::time::timeout(GUARD, async {
        while std::fs::metadata(socket(&env)).map(|m| m.ino()).ok() == Some(first_socket) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the second instance takes the socket path over");
    // A device-info file as the second instance's Allocate writes it: both instances use the
    // same file names.
    let devinfo = env.tmp.path().join("devinfo");
    std::fs::create_dir_all(&devinfo).unwrap();
    let file = devinfo.join(vfpool_deviceplugin::allocate::device_info_file_name(
        NAME,
        "0000:3b:00.2",
    ));
    std::fs::write(&file, "{}").unwrap();

    first.shutdown().await;
    assert!(
        file.exists(),
        "the superseded instance removed a device-info file the new one serves"
    );
    let mut lists = Vec::new();
    while let Ok(Some(message)) = stream.message().await {
        lists.push(message.devices.len());
    }
    assert!(
        !lists.contains(&0),
        "the superseded instance published an empty list: {lists:?}"
    );
    assert!(
        socket(&env).exists(),
        "the second instance's socket is gone"
    );
    second.shutdown().await;
}

/// A ListAndWatch client that never reads (a kubelet wedged, or one whose flow-control window is
/// closed) holds a pool's server for its 2 s stop timeout. Pools used to be stopped one after
/// another, so shutdown (and an apply removing pools) waited that long once per pool, past
/// kubelet's grace period on a node with many pools. They stop together now: shutdown takes one
/// timeout, not four; and the stalled connections are closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_streams_do_not_make_pools_stop_one_after_another() {
    let env = Env::new();
    let ids = env.ids();
    let names: Vec<String> = (0..4).map(|i| format!("intel.com/stalled_{i}")).collect();
    let pools: Vec<Pool> = names
        .iter()
        .zip(ids.chunks(6))
        .map(|(name, ids)| named_pool(name, ids))
        .collect();
    let mut plugins = DevicePlugins::start(env.config(), failing()).unwrap();
    plugins.apply(&pools, &env.inventory).await;
    let socket_of = |name: &str| {
        env.kubelet()
            .join("device-plugins")
            .join(format!("{}.sock", name.replace('/', "_")))
    };
    let mut stalled = Vec::new();
    for name in &names {
        let path = socket_of(name);
        tokio::time::timeout(GUARD, async {
            while !path.exists() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the pool serves");
        // A window of zero: the server can send the stream's headers but not one byte of a list,
        // nor the end of the stream when it stops.
        let channel = vfpool_deviceplugin::uds::channel_with(
            vfpool_deviceplugin::uds::endpoint().initial_stream_window_size(0),
            &path,
        );
        let stream = DevicePluginClient::new(channel)
            .list_and_watch(api::Empty {})
            .await
            .unwrap()
            .into_inner();
        stalled.push(stream);
    }
    let started = std::time::Instant::now();
    plugins.shutdown().await;
    let took = started.elapsed();
    // Four stops in a row take at least 8 s; together, one 2 s timeout plus scheduling.
    assert!(
        took < Duration::from_secs(6),
        "shutdown took {took:?} for 4 pools with stalled streams"
    );
    for name in &names {
        assert!(!socket_of(name).exists(), "{name}: socket left behind");
    }
    // And the stalled connections are closed, not left running with their streams: aborting the
    // server's task does not end the tasks tonic runs each connection in (they used to stay).
    for mut stream in stalled {
        let ended = tokio::time::timeout(GUARD, stream.message()).await;
        assert!(
            matches!(ended, Ok(Err(_) | Ok(None))),
            "a stalled connection outlived its pool: {ended:?}"
        );
    }
}

/// A request far larger than kubelet ever sends (here a GetPreferredAllocation of 2 MiB of ids)
/// is refused before it is decoded: decoded, it takes about ten times its size, and tonic's
/// default limit (4 MiB) let any local caller make the agent hold tens of MiB per call. The pool
/// keeps serving kubelet's requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_request_is_refused_and_the_pool_keeps_serving() {
    let env = Env::new();
    let mut plugins = DevicePlugins::start(env.config(), failing()).unwrap();
    plugins.apply(&env.pool(0), &env.inventory).await;
    serving(&env, "the pool serves").await;
    let mut client = raw_client(&socket(&env))
        .await
        .max_encoding_message_size(64 << 20);
    let request = |available: Vec<String>| api::PreferredAllocationRequest {
        container_requests: vec![api::ContainerPreferredAllocationRequest {
            available_device_i_ds: available,
            must_include_device_i_ds: Vec::new(),
            allocation_size: 1,
        }],
    };
    let huge: Vec<String> = (0..(2 << 20) / 16).map(|n| format!("{n:014}")).collect();
    let refused = client
        .get_preferred_allocation(request(huge))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::OutOfRange, "{refused:?}");
    let answer = client
        .get_preferred_allocation(request(env.ids()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.container_responses[0].device_i_ds.len(), 1);
    plugins.shutdown().await;
}

/// Pool 0 served with an allocator that prefers the first available ids (what it was handed,
/// in order), once it serves.
async fn serving_first_available(env: &Env) -> DevicePlugins {
    let first = Arc::new(FnAllocator(|req: &PreferenceRequest| {
        Ok(req.available[..req.size].to_vec())
    }));
    let mut plugins = DevicePlugins::start(env.config(), first).unwrap();
    plugins.apply(&env.pool(0), &env.inventory).await;
    serving(env, "the pool serves").await;
    plugins
}

/// kubelet's list may still name a device the pool withdrew a moment ago (its ListAndWatch update
/// not yet taken), and Allocate refuses a device that is not a member: the preference leaves such
/// an id out while enough members remain. It used to hand the allocator every id kubelet sent, and
/// an allocator taking the first ones preferred the withdrawn device.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_no_longer_in_the_pool_is_not_preferred() {
    let env = Env::new();
    let plugins = serving_first_available(&env).await;
    let client = raw_client(&socket(&env)).await;
    let members = env.ids();
    let request = |available: Vec<String>, size| {
        let request = api::PreferredAllocationRequest {
            container_requests: vec![api::ContainerPreferredAllocationRequest {
                available_device_i_ds: available,
                must_include_device_i_ds: Vec::new(),
                allocation_size: size,
            }],
        };
        let mut client = client.clone();
        async move {
            client
                .get_preferred_allocation(request)
                .await
                .map(|a| a.into_inner().container_responses[0].device_i_ds.clone())
        }
    };
    let withdrawn = "0000:3b:7f.7".to_string();
    let mut available = vec![withdrawn.clone()];
    available.extend(members[..3].iter().cloned());
    let answer = request(available.clone(), 2).await.unwrap();
    assert_eq!(answer, members[..2], "the withdrawn device was preferred");
    // With no member to spare it is still offered: a preference never fails the pod.
    let answer = request(available, 4).await.unwrap();
    assert_eq!(answer.len(), 4);
    assert!(answer.contains(&withdrawn), "{answer:?}");
    plugins.shutdown().await;
}

/// A request with far more ids than a node has devices (another local process's: strangers,
/// repeats) is put in order off the serving thread, and is answered as a small one is: repeats
/// removed, strangers steered clear of while members remain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_with_many_thousand_ids_is_answered_as_a_small_one() {
    let env = Env::new();
    let plugins = serving_first_available(&env).await;
    let mut client = raw_client(&socket(&env)).await;
    let members = env.ids();
    // 20,000 strangers first, then each member twice, then the strangers again.
    let strangers: Vec<String> = (0..20_000).map(|n| format!("9999:{n:05x}.0")).collect();
    let mut available = strangers.clone();
    available.extend(members.iter().cloned());
    available.extend(members.iter().cloned());
    available.extend(strangers);
    let answer = client
        .get_preferred_allocation(api::PreferredAllocationRequest {
            container_requests: vec![api::ContainerPreferredAllocationRequest {
                available_device_i_ds: available,
                must_include_device_i_ds: vec![members[2].clone()],
                allocation_size: 3,
            }],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        answer.container_responses[0].device_i_ds,
        members[..3],
        "members only, each once"
    );
    plugins.shutdown().await;
}

/// A request that waited for the allocator's permit gives the allocator only what is left of its
/// deadline: the allocator policy used to get its full deadline whenever its call started, so
/// under load it kept computing answers no one waited for any more, holding the permit the next
/// request needed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_allocator_call_gets_only_what_is_left_of_the_deadline() {
    let env = Env::new();
    let allocator = Arc::new(TimedAllocator {
        within: std::sync::Mutex::new(Vec::new()),
        first_takes: Duration::from_secs(2),
        started: tokio::sync::Notify::new(),
    });
    let mut config = env.config();
    config.allocator_concurrency = 1;
    // Long enough that the second request is still waited for on a loaded machine.
    config.allocator_timeout = Duration::from_secs(5);
    let mut plugins =
        DevicePlugins::start(config, Arc::clone(&allocator) as Arc<dyn Allocator>).unwrap();
    plugins.apply(&env.pool(0), &env.inventory).await;
    serving(&env, "the pool serves").await;
    let ask = |mut client: DevicePluginClient<tonic::transport::Channel>, ids: Vec<String>| async move {
        client
            .get_preferred_allocation(api::PreferredAllocationRequest {
                container_requests: vec![api::ContainerPreferredAllocationRequest {
                    available_device_i_ds: ids,
                    must_include_device_i_ds: Vec::new(),
                    allocation_size: 1,
                }],
            })
            .await
            .unwrap()
    };
    let second_client = raw_client(&socket(&env)).await;
    let first = tokio::spawn(ask(raw_client(&socket(&env)).await, env.ids()));
    // The second asks once the first holds the only permit: it waits for the first to finish.
    allocator.started.notified().await;
    let second = tokio::spawn(ask(second_client, env.ids()));
    first.await.unwrap();
    second.await.unwrap();
    let within = allocator.within.lock().unwrap().clone();
    assert_eq!(within.len(), 2, "{within:?}");
    // The second got what its wait for the first (2 s) left of its deadline.
    assert!(
        within[1] + Duration::from_secs(1) < within[0],
        "the late call got the whole deadline: {within:?}"
    );
    plugins.shutdown().await;
}

/// kubelet asks for one container per GetPreferredAllocation; each container is an allocator
/// call, so a flood of container requests from another local process (a hundred thousand fit in
/// the size limit) is refused whole instead of holding the allocator's permits for minutes. The
/// pool keeps answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preference_for_too_many_containers_is_refused() {
    let env = Env::new();
    let mut plugins = DevicePlugins::start(env.config(), failing()).unwrap();
    plugins.apply(&env.pool(0), &env.inventory).await;
    serving(&env, "the pool serves").await;
    let mut client = raw_client(&socket(&env)).await;
    let container = api::ContainerPreferredAllocationRequest {
        available_device_i_ds: env.ids(),
        must_include_device_i_ds: Vec::new(),
        allocation_size: 1,
    };
    let refused = client
        .get_preferred_allocation(api::PreferredAllocationRequest {
            container_requests: vec![container.clone(); 17],
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    assert!(
        refused.message().contains("17 container requests"),
        "{refused:?}"
    );
    let answer = client
        .get_preferred_allocation(api::PreferredAllocationRequest {
            container_requests: vec![container; 16],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.container_responses.len(), 16);
    plugins.shutdown().await;
}

/// kubelet admits a pod holding devices again after it restarts (its container not running) only
/// if their plugin is registered and lists them Healthy; the simulator enforces that, so a device
/// whose PF link went down fails the re-admission and passes it once the link is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readmission_needs_the_pods_devices_healthy() {
    let env = Env::new();
    let sim = env.sim().await;
    let mut plugins = DevicePlugins::start(env.config(), failing()).unwrap();
    plugins.apply(&env.pool(0), &env.inventory).await;
    all_allocatable(&sim).await;
    let pod = sim.allocate_pod("holder", NAME, 1).await.unwrap();
    sim.readmit_pod("holder").unwrap();
    assert!(matches!(
        sim.readmit_pod("nobody"),
        Err(vfpool_kubelet_sim::SimError::UnknownPod(_))
    ));

    // The link of the held device's PF goes down.
    let pf = env
        .inventory
        .get(&pod.device_ids[0])
        .and_then(|d| d.pf_id.clone())
        .unwrap();
    let mut down = env.inventory.clone();
    for device in &mut down.devices {
        if device.id == pf {
            device.netdevs[0].operstate = Some("down".to_string());
        }
    }
    plugins.apply(&env.pool(0), &down).await;
    sim.wait_for("the PF's VFs Unhealthy", GUARD, |r| {
        r.get(NAME).is_some_and(|v| v.allocatable() == 12)
    })
    .await
    .unwrap();
    match sim.readmit_pod("holder") {
        Err(vfpool_kubelet_sim::SimError::NoLongerHealthy { devices, .. }) => {
            assert_eq!(devices, pod.device_ids);
        }
        other => panic!("re-admitted with an Unhealthy device: {other:?}"),
    }

    plugins.apply(&env.pool(0), &env.inventory).await;
    all_allocatable(&sim).await;
    sim.readmit_pod("holder").unwrap();
    plugins.shutdown().await;
    sim.shutdown();
}

/// kubelet admits pods one at a time, so two pods admitted together never share a device; the
/// simulator read the free devices for both before either was recorded, and gave both the same.
/// A pod asking for none gets none, without a call to the plugin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_admitted_together_never_share_a_device() {
    let env = Env::new();
    let sim = env.sim().await;
    let mut plugins = DevicePlugins::start(env.config(), failing()).unwrap();
    plugins.apply(&env.pool(0), &env.inventory).await;
    all_allocatable(&sim).await;
    let (a, b) = tokio::join!(
        sim.allocate_pod("a", NAME, 1),
        sim.allocate_pod("b", NAME, 1)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_ne!(a.device_ids, b.device_ids);
    let none = sim.allocate_pod("none", NAME, 0).await.unwrap();
    assert!(none.device_ids.is_empty() && none.preferred.is_none());
    plugins.shutdown().await;
    sim.wait_for("the pool gone", GUARD, |r| {
        r.get(NAME).is_none_or(|v| !v.connected)
    })
    .await
    .unwrap();
    // Nothing to check for a pod that uses no device of the resource, served or not.
    sim.readmit_pod("none").unwrap();
    assert!(sim.readmit_pod("a").is_err());
    sim.shutdown();
}
