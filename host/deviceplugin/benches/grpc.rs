//! Device-plugin round trips over the unix socket on a 1,024-VF pool (the `large` simulated node),
//! with the kubelet simulator as the client side:
//!
//! - Allocate (1 device per call) and GetPreferredAllocation (1,024 available, size 4) latency,
//!   p50/p99, 1 and 16 concurrent callers each on its own connection, next to a baseline measured
//!   in the same run: the empty GetDevicePluginOptions call (gRPC over the socket and scheduling
//!   on this machine, nothing else) with the same callers, and for GetPreferredAllocation the same
//!   request with size 0 (the 1,024-id payload, answered without any choosing);
//! - GetPreferredAllocation through the real allocator policy (the embedded default, WebAssembly)
//!   and through the built-in fallback order;
//! - pool change → ListAndWatch update: from the start of `apply` (PodResources query, planning,
//!   publishing) to the new list arriving on a kubelet-side stream.
//!
//! Run: `cargo bench -p vfpool-deviceplugin --bench grpc`. Prints one table; no assertions.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use vfpool_deviceplugin::{
    Allocator, AllocatorError, DevicePlugins, PluginConfig, PolicyAllocator, PreferenceRequest,
};
use vfpool_kubelet_sim::{KubeletSim, SimOptions};
use vfpool_policy::{
    ActivePolicies, HostFacts, Limits, PolicyEngine, PolicyInventory, Pool, Sources,
};
use vfpool_proto::deviceplugin::v1beta1 as api;
use vfpool_proto::deviceplugin::v1beta1::device_plugin_client::DevicePluginClient;
use vfpool_sysfs::SysfsRoot;

const NAME: &str = "intel.com/large";
/// Calls per measurement row, spread over the callers.
const CALLS: usize = 4000;

struct NoAllocator;

impl Allocator for NoAllocator {
    fn prefer(&self, _: &PreferenceRequest) -> Result<Vec<String>, AllocatorError> {
        Err(AllocatorError::NotReady)
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// Prints a row; returns the p50 and p99.
fn report(
    what: &str,
    mut samples: Vec<Duration>,
    baseline: Option<(Duration, Duration)>,
) -> (Duration, Duration) {
    samples.sort();
    let p50 = percentile(&samples, 0.50);
    let p99 = percentile(&samples, 0.99);
    let ratio = baseline.map_or_else(String::new, |(b50, b99)| {
        format!(
            "  ratio to baseline p50 {:.1}x p99 {:.1}x",
            p50.as_secs_f64() / b50.as_secs_f64(),
            p99.as_secs_f64() / b99.as_secs_f64()
        )
    });
    println!(
        "{what:<62} n={:<5} p50={:>9.3?} p99={:>9.3?} max={:>9.3?}{ratio}",
        samples.len(),
        p50,
        p99,
        samples[samples.len() - 1]
    );
    (p50, p99)
}

#[derive(Clone, Copy)]
enum Call {
    Options,
    Allocate,
    Prefer(i32),
}

async fn one(
    client: &mut DevicePluginClient<tonic::transport::Channel>,
    call: Call,
    ids: &[String],
    n: usize,
) {
    match call {
        Call::Options => {
            client
                .get_device_plugin_options(api::Empty {})
                .await
                .unwrap();
        }
        Call::Allocate => {
            client
                .allocate(api::AllocateRequest {
                    container_requests: vec![api::ContainerAllocateRequest {
                        devices_ids: vec![ids[n % ids.len()].clone()],
                    }],
                })
                .await
                .unwrap();
        }
        Call::Prefer(size) => {
            let answer = client
                .get_preferred_allocation(api::PreferredAllocationRequest {
                    container_requests: vec![api::ContainerPreferredAllocationRequest {
                        available_device_i_ds: ids.to_vec(),
                        must_include_device_i_ds: Vec::new(),
                        allocation_size: size,
                    }],
                })
                .await
                .unwrap()
                .into_inner();
            assert_eq!(
                answer.container_responses[0].device_i_ds.len(),
                size as usize
            );
        }
    }
}

/// `CALLS` calls of `call` from `callers` concurrent callers, each on its own connection.
async fn concurrent(
    socket: &std::path::Path,
    callers: usize,
    call: Call,
    ids: Arc<Vec<String>>,
) -> Vec<Duration> {
    let mut tasks = Vec::new();
    for caller in 0..callers {
        let mut client = DevicePluginClient::new(vfpool_deviceplugin::uds::channel(socket));
        let ids = Arc::clone(&ids);
        tasks.push(tokio::spawn(async move {
            one(&mut client, call, &ids, caller).await; // connect + warm up
            let per = CALLS / callers;
            let mut samples = Vec::with_capacity(per);
            for i in 0..per {
                let start = Instant::now();
                one(&mut client, call, &ids, caller * per + i).await;
                samples.push(start.elapsed());
            }
            samples
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all
}

async fn bench_pool(label: &str, socket: std::path::PathBuf, ids: Arc<Vec<String>>) {
    for callers in [1, 16] {
        let baseline = report(
            &format!("baseline: GetDevicePluginOptions, {callers} callers"),
            concurrent(&socket, callers, Call::Options, Arc::clone(&ids)).await,
            None,
        );
        report(
            &format!("Allocate 1 device, {callers} callers"),
            concurrent(&socket, callers, Call::Allocate, Arc::clone(&ids)).await,
            Some(baseline),
        );
        let payload = report(
            &format!("baseline: GetPreferredAllocation 1024 avail size 0, {callers} callers"),
            concurrent(&socket, callers, Call::Prefer(0), Arc::clone(&ids)).await,
            None,
        );
        report(
            &format!("GetPreferredAllocation 1024 avail size 4 [{label}], {callers} callers"),
            concurrent(&socket, callers, Call::Prefer(4), Arc::clone(&ids)).await,
            Some(payload),
        );
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

async fn run() {
    // tmpfs, as /sys and /var/run (the device-info directory) are on a node.
    let shm = std::path::Path::new("/dev/shm");
    let tmp = if shm.is_dir() {
        tempfile::tempdir_in(shm).unwrap()
    } else {
        tempfile::tempdir().unwrap()
    };
    let sys = tmp.path().join("sys");
    let fixture = vfpool_sysfs::sim::Fixture::load("large").unwrap();
    vfpool_sysfs::sim::write_tree(&fixture, &sys).unwrap();
    let root = SysfsRoot::new(&sys);
    let inventory = vfpool_sysfs::discover(&root).unwrap();
    let config = tmp.path().join("config.json");
    std::fs::write(
        &config,
        r#"{"resourceList":[{"resourceName":"large","selectors":{"vendors":["15b3"],"devices":["101c"],"isRdma":true}}]}"#,
    )
    .unwrap();
    let policy_inventory = Arc::new(PolicyInventory::new(&inventory, &HostFacts::default()));
    let policies =
        Arc::new(ActivePolicies::new(PolicyEngine::new(Limits::default()).unwrap()).unwrap());
    let outcome = policies.reload(
        &Sources {
            policy_dir: None,
            config_file: Some(config),
            default_resource_prefix: "intel.com".to_string(),
        },
        &policy_inventory,
    );
    let pools: Vec<Pool> = outcome
        .active
        .expect("the default policies accept the config")
        .pools
        .clone();
    assert_eq!(pools[0].devices.len(), 1024);
    let ids: Arc<Vec<String>> = Arc::new(pools[0].devices.iter().map(|d| d.id.clone()).collect());

    for (label, allocator, sub) in [
        (
            "policy",
            Arc::new(PolicyAllocator::new(
                Arc::clone(&policies),
                Arc::clone(&policy_inventory),
            )) as Arc<dyn Allocator>,
            "policy",
        ),
        (
            "built-in fallback order",
            Arc::new(NoAllocator) as Arc<dyn Allocator>,
            "builtin",
        ),
    ] {
        let kubelet = tmp.path().join(sub).join("kubelet");
        std::fs::create_dir_all(&kubelet).unwrap();
        let sim = KubeletSim::start(&kubelet, SimOptions::default())
            .await
            .unwrap();
        let mut config = PluginConfig::new(
            kubelet.clone(),
            tmp.path().join(sub).join("devinfo"),
            root.clone(),
        );
        config.allocator_timeout = Duration::from_secs(2);
        let mut plugins = DevicePlugins::start(config, allocator).unwrap();
        plugins.apply(&pools, &inventory).await;
        sim.wait_for("1024 devices", Duration::from_secs(60), |r| {
            r.get(NAME).is_some_and(|v| v.allocatable() == 1024)
        })
        .await
        .unwrap();
        let socket = kubelet.join("device-plugins/intel.com_large.sock");
        bench_pool(label, socket.clone(), Arc::clone(&ids)).await;

        if sub == "policy" {
            // Pool change → ListAndWatch update, seen by a kubelet-side stream.
            let mut client = DevicePluginClient::new(vfpool_deviceplugin::uds::channel(&socket));
            let mut stream = client
                .list_and_watch(api::Empty {})
                .await
                .unwrap()
                .into_inner();
            stream.message().await.unwrap().unwrap();
            let mut smaller = pools.clone();
            smaller[0].devices.pop();
            let mut samples = Vec::new();
            for i in 0..200 {
                let next = if i % 2 == 0 { &smaller } else { &pools };
                let start = Instant::now();
                let report = plugins.apply(next, &inventory).await;
                assert_eq!(report.updated.len(), 1);
                let list = stream.message().await.unwrap().unwrap();
                samples.push(start.elapsed());
                assert_eq!(list.devices.len(), next[0].devices.len());
            }
            report(
                "pool change -> ListAndWatch update (1024 devices)",
                samples,
                None,
            );
        }
        plugins.shutdown().await;
        sim.shutdown();
    }
}
