//! The simulator against a stub device plugin over real unix sockets: what kubelet checks when a
//! plugin registers (it connects back and reads the options before answering), what it refuses
//! at admission, and what deleting a plugin-watcher socket does. Waits are on observed state;
//! timeouts only guard hangs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_stream::Stream;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::{Request, Response, Status};
use vfpool_kubelet_sim::{KubeletSim, SimError, SimOptions};
use vfpool_proto::deviceplugin::v1beta1 as api;
use vfpool_proto::deviceplugin::v1beta1::device_plugin_server::{DevicePlugin, DevicePluginServer};
use vfpool_proto::deviceplugin::v1beta1::registration_client::RegistrationClient;
use vfpool_proto::pluginregistration::v1 as reg;
use vfpool_proto::pluginregistration::v1::registration_server::{Registration, RegistrationServer};

const GUARD: Duration = Duration::from_secs(60);
const NAME: &str = "example.com/stub";

/// A device plugin that serves two healthy devices and records the calls kubelet makes.
#[derive(Clone)]
struct Stub {
    /// `GetInfo`'s endpoint (plugin-watcher mode); empty: the socket itself.
    endpoint: String,
    /// Allocate answers without container responses.
    empty_allocate: bool,
    /// The devices listed.
    devices: Vec<String>,
    /// GetPreferredAllocation's answer; none when empty.
    preference: Vec<String>,
    calls: Arc<Mutex<Vec<String>>>,
}

impl Stub {
    fn new() -> Stub {
        Stub {
            endpoint: String::new(),
            empty_allocate: false,
            devices: vec!["a".to_string(), "b".to_string()],
            preference: Vec::new(),
            calls: Arc::default(),
        }
    }

    fn called(&self, call: impl Into<String>) {
        self.calls.lock().unwrap().push(call.into());
    }

    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    /// Serves on `path` until the returned task is aborted.
    fn serve(&self, path: &Path) -> tokio::task::JoinHandle<()> {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let listener = tokio::net::UnixListener::bind(path).unwrap();
        let stub = self.clone();
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(DevicePluginServer::new(stub.clone()))
                .add_service(RegistrationServer::new(stub))
                .serve_with_incoming(UnixListenerStream::new(listener))
                .await
                .unwrap();
        })
    }
}

type ListStream = Pin<Box<dyn Stream<Item = Result<api::ListAndWatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl DevicePlugin for Stub {
    async fn get_device_plugin_options(
        &self,
        _request: Request<api::Empty>,
    ) -> Result<Response<api::DevicePluginOptions>, Status> {
        self.called("GetDevicePluginOptions");
        Ok(Response::new(api::DevicePluginOptions {
            pre_start_required: false,
            get_preferred_allocation_available: true,
        }))
    }

    type ListAndWatchStream = ListStream;

    async fn list_and_watch(
        &self,
        _request: Request<api::Empty>,
    ) -> Result<Response<Self::ListAndWatchStream>, Status> {
        use tokio_stream::StreamExt as _;
        self.called("ListAndWatch");
        let devices = self
            .devices
            .iter()
            .map(|id| api::Device {
                id: id.clone(),
                health: api::HEALTHY.to_string(),
                topology: None,
            })
            .collect();
        let list = tokio_stream::once(Ok(api::ListAndWatchResponse { devices }));
        Ok(Response::new(Box::pin(list.chain(tokio_stream::pending()))))
    }

    async fn get_preferred_allocation(
        &self,
        _request: Request<api::PreferredAllocationRequest>,
    ) -> Result<Response<api::PreferredAllocationResponse>, Status> {
        if self.preference.is_empty() {
            return Ok(Response::new(api::PreferredAllocationResponse::default()));
        }
        Ok(Response::new(api::PreferredAllocationResponse {
            container_responses: vec![api::ContainerPreferredAllocationResponse {
                device_i_ds: self.preference.clone(),
            }],
        }))
    }

    async fn allocate(
        &self,
        request: Request<api::AllocateRequest>,
    ) -> Result<Response<api::AllocateResponse>, Status> {
        self.called("Allocate");
        let containers = if self.empty_allocate {
            Vec::new()
        } else {
            request
                .into_inner()
                .container_requests
                .iter()
                .map(|_| api::ContainerAllocateResponse::default())
                .collect()
        };
        Ok(Response::new(api::AllocateResponse {
            container_responses: containers,
        }))
    }

    async fn pre_start_container(
        &self,
        _request: Request<api::PreStartContainerRequest>,
    ) -> Result<Response<api::PreStartContainerResponse>, Status> {
        Ok(Response::new(api::PreStartContainerResponse {}))
    }
}

#[tonic::async_trait]
impl Registration for Stub {
    async fn get_info(
        &self,
        _request: Request<reg::InfoRequest>,
    ) -> Result<Response<reg::PluginInfo>, Status> {
        self.called("GetInfo");
        Ok(Response::new(reg::PluginInfo {
            r#type: api::DEVICE_PLUGIN_TYPE.to_string(),
            name: NAME.to_string(),
            endpoint: self.endpoint.clone(),
            supported_versions: vec![api::VERSION.to_string()],
        }))
    }

    async fn notify_registration_status(
        &self,
        request: Request<reg::RegistrationStatus>,
    ) -> Result<Response<reg::RegistrationStatusResponse>, Status> {
        let status = request.into_inner();
        self.called(format!(
            "NotifyRegistrationStatus({}) {}",
            status.plugin_registered, status.error
        ));
        Ok(Response::new(reg::RegistrationStatusResponse {}))
    }
}

fn register_request(endpoint: &str) -> api::RegisterRequest {
    api::RegisterRequest {
        version: api::VERSION.to_string(),
        endpoint: endpoint.to_string(),
        resource_name: NAME.to_string(),
        // What the plugin claims; kubelet reads the options from the plugin instead.
        options: Some(api::DevicePluginOptions {
            pre_start_required: true,
            get_preferred_allocation_available: false,
        }),
    }
}

async fn kubelet_client(kubelet: &Path) -> RegistrationClient<tonic::transport::Channel> {
    RegistrationClient::new(unix_channel(kubelet.join("device-plugins/kubelet.sock")).await)
}

/// A gRPC channel to the unix socket at `path`.
async fn unix_channel(path: PathBuf) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_static("http://[::1]:50051")
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(path).await?,
                ))
            }
        }))
        .await
        .unwrap()
}

fn watched_socket(kubelet: &Path) -> PathBuf {
    kubelet.join("plugins_registry/example.com_stub.sock")
}

/// kubelet's `Register` dials the plugin's endpoint and reads its options before answering, and
/// answers a failure to the plugin: an endpoint nobody listens on is an error (after kubelet's
/// dial timeout), not an OK followed by a resource that never connects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_fails_when_nothing_listens_on_the_endpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let sim = KubeletSim::start(tmp.path(), SimOptions::default())
        .await
        .unwrap();
    let mut kubelet = kubelet_client(tmp.path()).await;
    let status = tokio::time::timeout(GUARD, kubelet.register(register_request("nobody.sock")))
        .await
        .expect("Register answers")
        .unwrap_err();
    assert!(
        status.message().contains("failed to dial device plugin"),
        "{status:?}"
    );
    assert_eq!(sim.resource(NAME), None);
    let records = sim.registrations();
    assert_eq!(records.len(), 1);
    assert!(records[0].error.is_some(), "{records:?}");
    sim.shutdown();
}

/// A successful `Register` has connected: the options are the plugin's answer (not what the
/// request claimed), read before `Register` returned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_reads_the_plugins_own_options_before_answering() {
    let tmp = tempfile::tempdir().unwrap();
    let sim = KubeletSim::start(tmp.path(), SimOptions::default())
        .await
        .unwrap();
    let stub = Stub::new();
    let server = stub.serve(&tmp.path().join("device-plugins/stub.sock"));
    let mut kubelet = kubelet_client(tmp.path()).await;
    kubelet
        .register(register_request("stub.sock"))
        .await
        .unwrap();
    assert!(
        stub.calls().contains(&"GetDevicePluginOptions".to_string()),
        "{:?}",
        stub.calls()
    );
    assert_eq!(sim.resource(NAME).unwrap().options, Some((false, true)));
    sim.wait_for("two devices", GUARD, |r| {
        r.get(NAME).is_some_and(|v| v.allocatable() == 2)
    })
    .await
    .unwrap();
    server.abort();
    sim.shutdown();
}

/// A second plugin registering a resource name that is served (a rolling update of a plugin
/// DaemonSet: the new pod registers before the old one stops) replaces the first, as kubelet's
/// device manager does. The simulator used to refuse the second registration.
///
/// The older plugin's stream ending afterwards leaves the newer one connected here. kubelet is
/// not that kind (kubernetes#121994: that end calls `PluginDisconnected` for the resource name,
/// which stops the newest endpoint); the simulator does not model it by itself, tests call
/// [`KubeletSim::disconnect`] where they need it, and this test pins the simulator's choice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_newest_registration_of_a_resource_wins() {
    let tmp = tempfile::tempdir().unwrap();
    let sim = KubeletSim::start(tmp.path(), SimOptions::default())
        .await
        .unwrap();
    let (old, new) = (Stub::new(), Stub::new());
    let old_server = old.serve(&tmp.path().join("device-plugins/old.sock"));
    let new_server = new.serve(&tmp.path().join("device-plugins/new.sock"));
    let mut kubelet = kubelet_client(tmp.path()).await;
    kubelet
        .register(register_request("old.sock"))
        .await
        .unwrap();
    sim.wait_for("the old plugin's devices", GUARD, |r| {
        r.get(NAME).is_some_and(|v| v.allocatable() == 2)
    })
    .await
    .unwrap();
    kubelet
        .register(register_request("new.sock"))
        .await
        .unwrap();
    let new_socket = tmp.path().join("device-plugins/new.sock");
    sim.wait_for("the new plugin's devices", GUARD, |r| {
        r.get(NAME)
            .is_some_and(|v| v.endpoint == new_socket && v.connected && v.allocatable() == 2)
    })
    .await
    .unwrap();
    assert!(new.calls().contains(&"ListAndWatch".to_string()));
    // The old plugin goes away; the resource stays with the new one.
    old_server.abort();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let view = sim.resource(NAME).unwrap();
    assert!(view.endpoint == new_socket && view.connected, "{view:?}");
    new_server.abort();
    sim.shutdown();
}

/// kubelet fails a pod's admission when the plugin's Allocate answer has no container response
/// ("no containers return in allocation response"); the simulator used to admit the pod with an
/// empty answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allocate_answer_without_containers_fails_admission() {
    let tmp = tempfile::tempdir().unwrap();
    let sim = KubeletSim::start(tmp.path(), SimOptions::default())
        .await
        .unwrap();
    let stub = Stub {
        empty_allocate: true,
        ..Stub::new()
    };
    let server = stub.serve(&tmp.path().join("device-plugins/stub.sock"));
    let mut kubelet = kubelet_client(tmp.path()).await;
    kubelet
        .register(register_request("stub.sock"))
        .await
        .unwrap();
    sim.wait_for("two devices", GUARD, |r| {
        r.get(NAME).is_some_and(|v| v.allocatable() == 2)
    })
    .await
    .unwrap();
    let error = sim.allocate_pod("pod", NAME, 1).await.unwrap_err();
    assert!(
        matches!(error, SimError::EmptyAllocation { .. }),
        "{error:?}"
    );
    assert!(sim.in_use(NAME).is_empty(), "the pod was admitted");
    server.abort();
    sim.shutdown();
}

/// Registers `stub` (legacy mode) serving `socket` in `device-plugins/` and waits for its devices.
async fn registered_stub(
    sim: &KubeletSim,
    kubelet_dir: &Path,
    stub: &Stub,
    socket: &str,
) -> tokio::task::JoinHandle<()> {
    let server = stub.serve(&kubelet_dir.join("device-plugins").join(socket));
    let mut kubelet = kubelet_client(kubelet_dir).await;
    kubelet.register(register_request(socket)).await.unwrap();
    let count = stub.devices.len();
    sim.wait_for("the stub's devices", GUARD, |r| {
        r.get(NAME).is_some_and(|v| v.allocatable() == count)
    })
    .await
    .unwrap();
    server
}

/// kubelet calls GetPreferredAllocation and Allocate on the connection it dialled when the plugin
/// registered, not on whatever listens at the socket path now (another instance of the plugin
/// that bound the path without registering is never asked). The simulator used to dial the path
/// for every call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_go_to_the_registered_connection() {
    let tmp = tempfile::tempdir().unwrap();
    let sim = start_sim(tmp.path(), false).await;
    let registered = Stub::new();
    let first = registered_stub(&sim, tmp.path(), &registered, "stub.sock").await;
    let path = tmp.path().join("device-plugins/stub.sock");
    std::fs::remove_file(&path).unwrap();
    let squatter = Stub::new();
    let second = squatter.serve(&path);
    sim.allocate_pod("pod", NAME, 1).await.unwrap();
    assert!(registered.calls().contains(&"Allocate".to_string()));
    assert!(squatter.calls().is_empty(), "{:?}", squatter.calls());
    first.abort();
    second.abort();
    sim.shutdown();
}

/// kubelet takes what of a preference is free (a set: an unknown id dropped) and fills the rest
/// from other free devices; the simulator used to ignore an answer of the wrong size or with an
/// unknown id and take the first free devices instead. Allocate gets kubelet's set, in no
/// particular order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partly_usable_preference_is_used_and_filled() {
    let tmp = tempfile::tempdir().unwrap();
    let sim = start_sim(tmp.path(), false).await;
    let stub = Stub {
        devices: ["a", "b", "c"].map(String::from).to_vec(),
        preference: ["c", "zz"].map(String::from).to_vec(),
        ..Stub::new()
    };
    let server = registered_stub(&sim, tmp.path(), &stub, "stub.sock").await;
    let pod = sim.allocate_pod("pod", NAME, 2).await.unwrap();
    assert_eq!(pod.preferred, Some(stub.preference.clone()));
    assert_eq!(pod.device_ids.len(), 2, "{pod:?}");
    assert!(pod.device_ids.contains(&"c".to_string()), "{pod:?}");
    assert!(!pod.device_ids.contains(&"zz".to_string()), "{pod:?}");
    server.abort();
    sim.shutdown();
}

/// kubelet rewrites its device-manager checkpoint in `device-plugins/` (a temporary file renamed
/// over it) as lists and admissions come in, so a plugin watching that directory for kubelet's
/// restarts sees this traffic; a restart removes the sockets there and keeps the checkpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checkpoint_is_rewritten_and_survives_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let mut sim = start_sim(tmp.path(), false).await;
    let stub = Stub::new();
    let server = registered_stub(&sim, tmp.path(), &stub, "stub.sock").await;
    let checkpoint = tmp
        .path()
        .join("device-plugins/kubelet_internal_checkpoint");
    // Written when the plugin's first list arrives, which may come a moment after the
    // registration (CI saw it missing when asserted at once).
    tokio::time::timeout(GUARD, async {
        while !checkpoint.is_file() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the checkpoint is written once the first list arrives");
    let before = std::fs::metadata(&checkpoint).unwrap();
    sim.allocate_pod("pod", NAME, 1).await.unwrap();
    let after = std::fs::metadata(&checkpoint).unwrap();
    {
        use std::os::unix::fs::MetadataExt as _;
        assert_ne!(before.ino(), after.ino(), "not replaced by a rename");
    }
    sim.restart().await.unwrap();
    assert!(checkpoint.is_file(), "the restart removed the checkpoint");
    assert!(!tmp.path().join("device-plugins/stub.sock").exists());
    let names: Vec<String> = std::fs::read_dir(tmp.path().join("device-plugins"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n.starts_with('.')), "{names:?}");
    server.abort();
    sim.shutdown();
}

/// A pod whose init container got devices the app container did not reuse, as kubelet keeps it:
/// PodResources reports the app container's device only; the checkpoint (kubelet's format)
/// lists both containers' under the pod's UID, whose directory is under `pods/`; the devices are
/// not free for another pod. When the pod ends its directory goes but the checkpoint is not
/// rewritten (kubelet rewrites it on the next list or admission).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_container_devices_are_in_the_checkpoint_not_in_pod_resources() {
    use vfpool_proto::podresources::v1 as pr;
    let tmp = tempfile::tempdir().unwrap();
    let sim = start_sim(tmp.path(), false).await;
    let stub = Stub {
        devices: ["a", "b", "c"].map(String::from).to_vec(),
        ..Stub::new()
    };
    let server = registered_stub(&sim, tmp.path(), &stub, "stub.sock").await;
    let (init, app) = sim.allocate_pod_with_init("pod", NAME, 2, 1).await.unwrap();
    assert_eq!(init.device_ids.len(), 2);
    assert_eq!(app.len(), 1);
    assert!(init.device_ids.contains(&app[0]));
    assert_eq!(sim.in_use(NAME).len(), 2);
    // Only one device is left for another pod.
    let err = sim.allocate_pod("other", NAME, 2).await.unwrap_err();
    assert!(
        matches!(err, SimError::Insufficient { free: 1, .. }),
        "{err}"
    );

    let channel = unix_channel(tmp.path().join("pod-resources/kubelet.sock")).await;
    let listed = pr::pod_resources_lister_client::PodResourcesListerClient::new(channel)
        .list(pr::ListPodResourcesRequest {})
        .await
        .unwrap()
        .into_inner();
    let reported: Vec<&String> = listed
        .pod_resources
        .iter()
        .flat_map(|p| &p.containers)
        .flat_map(|c| &c.devices)
        .flat_map(|d| &d.device_ids)
        .collect();
    assert_eq!(reported, [&app[0]]);

    let read_checkpoint = || -> serde_json::Value {
        let text = std::fs::read_to_string(
            tmp.path()
                .join("device-plugins/kubelet_internal_checkpoint"),
        )
        .unwrap();
        serde_json::from_str(&text).unwrap()
    };
    let checkpoint = read_checkpoint();
    let entries = checkpoint["Data"]["PodDeviceEntries"].as_array().unwrap();
    let uid = entries[0]["PodUID"].as_str().unwrap().to_string();
    assert!(tmp.path().join("pods").join(&uid).is_dir());
    let mut listed: Vec<(String, String)> = entries
        .iter()
        .flat_map(|e| {
            assert_eq!(e["PodUID"], uid.as_str());
            assert_eq!(e["ResourceName"], NAME);
            let container = e["ContainerName"].as_str().unwrap().to_string();
            e["DeviceIDs"]
                .as_object()
                .unwrap()
                .values()
                .flat_map(|ids| ids.as_array().unwrap().clone())
                .map(move |id| (container.clone(), id.as_str().unwrap().to_string()))
        })
        .collect();
    listed.sort();
    let mut expected: Vec<(String, String)> = init
        .device_ids
        .iter()
        .map(|id| ("init".to_string(), id.clone()))
        .chain([("main".to_string(), app[0].clone())])
        .collect();
    expected.sort();
    assert_eq!(listed, expected);

    assert!(sim.release_pod("pod"));
    assert!(!tmp.path().join("pods").join(&uid).exists());
    assert_eq!(
        read_checkpoint(),
        checkpoint,
        "rewritten when the pod ended"
    );
    server.abort();
    sim.shutdown();
}

/// The plugin watcher registers in kubelet's order: the device manager connects (options read)
/// before the plugin is told it is registered. The simulator used to notify
/// first and connect afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plugin_watcher_connects_before_notifying() {
    let tmp = tempfile::tempdir().unwrap();
    let sim = start_sim(tmp.path(), true).await;
    let stub = Stub::new();
    let server = stub.serve(&watched_socket(tmp.path()));
    let stub_ref = &stub;
    tokio::time::timeout(GUARD, async move {
        while !stub_ref
            .calls()
            .iter()
            .any(|c| c.starts_with("NotifyRegistrationStatus"))
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the plugin is notified");
    let calls = stub.calls();
    let position = |call: &str| calls.iter().position(|c| c == call);
    let notified = calls
        .iter()
        .position(|c| c.starts_with("NotifyRegistrationStatus(true)"))
        .expect("registered");
    assert!(
        position("GetDevicePluginOptions").is_some_and(|p| p < notified),
        "{calls:?}"
    );
    server.abort();
    sim.shutdown();
}

/// A plugin-watcher registration whose endpoint cannot be connected is notified as failed, and
/// (as kubelet) not tried again: the socket stays unregistered until a new socket file appears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_registration_that_cannot_connect_is_notified_as_failed() {
    let tmp = tempfile::tempdir().unwrap();
    let sim = start_sim(tmp.path(), true).await;
    sim.fail_next_registrations(1);
    let stub = Stub::new();
    let server = stub.serve(&watched_socket(tmp.path()));
    let stub_ref = &stub;
    tokio::time::timeout(GUARD, async move {
        while !stub_ref
            .calls()
            .iter()
            .any(|c| c.starts_with("NotifyRegistrationStatus"))
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the plugin is notified");
    let calls = stub.calls();
    assert!(
        calls
            .iter()
            .any(|c| c.starts_with("NotifyRegistrationStatus(false)")
                && c.contains("failed to get device plugin options")),
        "{calls:?}"
    );
    assert!(!calls.contains(&"ListAndWatch".to_string()), "{calls:?}");
    assert_eq!(sim.resource(NAME), None);
    // Not tried again: kubelet keeps the socket in its actual state of world (this only checks
    // that nothing came within a while).
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(sim.registrations().len(), 1, "{:?}", sim.registrations());
    server.abort();
    sim.shutdown();
}

/// Deleting a registered plugin-watcher socket deregisters the plugin, as kubelet's reconciler
/// does (`DeRegisterPlugin`: the client is disconnected and the resource's devices are marked
/// unhealthy): allocatable drops to 0. The simulator used to ignore deletions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_watched_socket_deregisters_the_plugin() {
    let tmp = tempfile::tempdir().unwrap();
    let sim = start_sim(tmp.path(), true).await;
    let stub = Stub::new();
    let socket = watched_socket(tmp.path());
    let server = stub.serve(&socket);
    sim.wait_for("two devices", GUARD, |r| {
        r.get(NAME).is_some_and(|v| v.allocatable() == 2)
    })
    .await
    .unwrap();
    std::fs::remove_file(&socket).unwrap();
    let r = sim
        .wait_for("the plugin deregistered", GUARD, |r| {
            r.get(NAME).is_some_and(|v| !v.connected)
        })
        .await
        .unwrap();
    assert_eq!(r[NAME].allocatable(), 0);
    assert_eq!(
        r[NAME].capacity(),
        2,
        "kubelet keeps the devices, unhealthy"
    );
    server.abort();
    sim.shutdown();
}

/// A simulator on `kubelet_dir`, in plugin-watcher mode or the legacy one.
async fn start_sim(kubelet_dir: &std::path::Path, plugin_watcher: bool) -> KubeletSim {
    KubeletSim::start(kubelet_dir, SimOptions { plugin_watcher })
        .await
        .unwrap()
}
