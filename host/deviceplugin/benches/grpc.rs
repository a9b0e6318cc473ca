//! Device-plugin round trips over the unix socket on a 1,024-VF pool (the `large` simulated node),
//! with the kubelet simulator as the client side:
//!
//! - Allocate (1 device per call) and GetPreferredAllocation (1,024 available, size 4) latency,
//!   p50/p99, 1 and 16 concurrent callers (sharing one connection, as kubelet does, and with a
//!   connection each), next to a baseline measured in the same run: the empty
//!   GetDevicePluginOptions call (gRPC over the socket and scheduling on this machine, nothing
//!   else) with the same callers, and for GetPreferredAllocation the same request with size 0
//!   (the 1,024-id payload, answered without any choosing);
//! - GetPreferredAllocation through the real allocator policy (the embedded default, WebAssembly)
//!   and through the built-in fallback order;
//! - pool change → ListAndWatch update: from the start of `apply` (PodResources query, planning,
//!   publishing) to the new list arriving on a kubelet-side stream;
//! - for every latency row, the CPU time per call on the agent's side and on the kubelet
//!   stand-in's, and the mean latency those imply with that many callers on this machine's cores
//!   (Little's law): the floor no scheduling gets a p99 under.
//!
//! The agent and kubelet are separate processes on a node, so the two sides run on separate tokio
//! runtimes with their own threads: the agent's side as `vfpool run` builds it (a 2-worker runtime
//! for the agent's own work, and the device plugin's serving thread, which `DevicePlugins` starts
//! for the pools' servers), the client (the kubelet stand-in) on another 2-worker runtime. They
//! still share the machine's cores, as they do on a node; only the tokio scheduler is no longer
//! shared (a client task ready to encode the next request used to sit in the server's run queue).
//!
//! Run: `cargo bench -p vfpool-deviceplugin --bench grpc`. Prints one table; no assertions.
//! `VFPOOL_BENCH_CALLS=allocate,prefer,change` and `VFPOOL_BENCH_CALLERS=1,16` pick rows (for
//! profiling one of them).
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
const CALLS: usize = 8000;

struct NoAllocator;

impl Allocator for NoAllocator {
    fn prefer(&self, _: &PreferenceRequest, _: Duration) -> Result<Vec<String>, AllocatorError> {
        Err(AllocatorError::NotReady)
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// CPU time used so far by this process's threads, split by side: the agent's threads (the
/// `agent` runtime, the device plugin's `vfpool-serve*` threads) and the kubelet stand-in's (its
/// runtime and the main thread that drives it). Read from each thread's schedstat (nanoseconds on
/// a CPU); a thread that ended is missing from both, so rows compare deltas over threads that
/// live through them (tokio keeps an idle blocking thread for 10 s).
#[derive(Clone, Copy, Default)]
struct SideCpu {
    agent: Duration,
    kubelet: Duration,
}

fn side_cpu() -> SideCpu {
    let mut cpu = SideCpu::default();
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let path = task.path();
        let (Ok(comm), Ok(schedstat)) = (
            std::fs::read_to_string(path.join("comm")),
            std::fs::read_to_string(path.join("schedstat")),
        ) else {
            continue; // ended meanwhile
        };
        let on_cpu = Duration::from_nanos(
            schedstat
                .split_whitespace()
                .next()
                .and_then(|ns| ns.parse().ok())
                .unwrap_or(0),
        );
        if comm.starts_with("vfpool") || comm.starts_with("agent") {
            cpu.agent += on_cpu;
        } else {
            cpu.kubelet += on_cpu;
        }
    }
    cpu
}

/// One row's calls: their latencies, and for concurrent calls how many callers there were and
/// the CPU time per call on each side.
struct Measured {
    samples: Vec<Duration>,
    cpu: Option<(SideCpu, usize)>,
}

/// Prints a row; returns the p50 and p99.
///
/// Next to the latencies: the CPU time per call on the agent's side and on the kubelet
/// stand-in's (both in this process, on the same cores, as on a node), and what it implies: with
/// `callers` calls always in flight on `cores` busy cores, a call takes on average
/// `callers × CPU per call / cores` (Little's law), and no p99 can be below that mean, whatever
/// the scheduling.
fn report(
    what: &str,
    measured: Measured,
    baseline: Option<(Duration, Duration)>,
) -> (Duration, Duration) {
    let Measured { mut samples, cpu } = measured;
    let cpu = cpu.map_or_else(String::new, |(per_call, callers)| {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get()) as u32;
        let total = per_call.agent + per_call.kubelet;
        let floor = total * callers as u32 / cores;
        format!(
            " cpu/call agent={:>8.1?} kubelet={:>8.1?} mean floor={floor:>8.3?}",
            per_call.agent, per_call.kubelet
        )
    });
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
        "{what:<80} n={:<5} p50={:>9.3?} p99={:>9.3?} max={:>9.3?}{cpu}{ratio}",
        samples.len(),
        p50,
        p99,
        samples[samples.len() - 1],
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

/// How the callers reach the server.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Conn {
    /// One connection that every caller shares, as kubelet's device manager has one gRPC client
    /// connection per plugin socket and multiplexes its calls over it.
    Shared,
    /// A connection per caller (a stress case: more connections than kubelet makes).
    PerCaller,
}

impl Conn {
    fn label(self) -> &'static str {
        match self {
            Conn::Shared => "1 connection",
            Conn::PerCaller => "a connection each",
        }
    }
}

/// `CALLS` calls of `call` from `callers` concurrent callers.
async fn concurrent(
    socket: &std::path::Path,
    callers: usize,
    conn: Conn,
    call: Call,
    ids: Arc<Vec<String>>,
) -> Measured {
    let cpu_before = side_cpu();
    let shared = vfpool_deviceplugin::uds::channel(socket);
    let mut tasks = Vec::new();
    for caller in 0..callers {
        let channel = match conn {
            Conn::Shared => shared.clone(),
            Conn::PerCaller => vfpool_deviceplugin::uds::channel(socket),
        };
        let mut client = DevicePluginClient::new(channel);
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
    // The warm-up calls count too: their CPU is in the total.
    let calls = (all.len() + callers) as u32;
    let cpu_after = side_cpu();
    let per_call = SideCpu {
        agent: cpu_after.agent.saturating_sub(cpu_before.agent) / calls,
        kubelet: cpu_after.kubelet.saturating_sub(cpu_before.kubelet) / calls,
    };
    Measured {
        samples: all,
        cpu: Some((per_call, callers)),
    }
}

/// Which rows to run: `VFPOOL_BENCH_CALLS` and `VFPOOL_BENCH_CALLERS` (all by default).
struct Rows {
    calls: Vec<String>,
    callers: Vec<usize>,
}

impl Rows {
    fn from_env() -> Rows {
        let calls = std::env::var("VFPOOL_BENCH_CALLS")
            .unwrap_or_else(|_| "allocate,prefer,change".to_string())
            .split(',')
            .map(str::to_string)
            .collect();
        let callers = std::env::var("VFPOOL_BENCH_CALLERS")
            .unwrap_or_else(|_| "1,16".to_string())
            .split(',')
            .map(|n| n.parse().expect("VFPOOL_BENCH_CALLERS: numbers"))
            .collect();
        Rows { calls, callers }
    }

    fn has(&self, call: &str) -> bool {
        self.calls.iter().any(|c| c == call)
    }
}

/// The client side (kubelet's runtime): `block_on` there.
fn client<F: std::future::Future>(kubelet: &tokio::runtime::Runtime, f: F) -> F::Output {
    kubelet.block_on(f)
}

fn bench_pool(
    kubelet: &tokio::runtime::Runtime,
    rows: &Rows,
    label: &str,
    socket: &std::path::Path,
    ids: &Arc<Vec<String>>,
) {
    for &callers in &rows.callers {
        for conn in [Conn::Shared, Conn::PerCaller] {
            if callers == 1 && conn == Conn::PerCaller {
                continue;
            }
            let run = |call| {
                client(
                    kubelet,
                    concurrent(socket, callers, conn, call, Arc::clone(ids)),
                )
            };
            let how = format!("{callers} callers, {}", conn.label());
            if rows.has("allocate") {
                let baseline = report(
                    &format!("baseline: GetDevicePluginOptions, {how}"),
                    run(Call::Options),
                    None,
                );
                report(
                    &format!("Allocate 1 device [{label}], {how}"),
                    run(Call::Allocate),
                    Some(baseline),
                );
            }
            if rows.has("prefer") {
                let payload = report(
                    &format!("baseline: GetPreferredAllocation 1024 avail size 0, {how}"),
                    run(Call::Prefer(0)),
                    None,
                );
                report(
                    &format!("GetPreferredAllocation 1024 avail size 4 [{label}], {how}"),
                    run(Call::Prefer(4)),
                    Some(payload),
                );
            }
        }
    }
}

fn main() {
    // The agent's runtime, as `vfpool run` builds it.
    let agent = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("agent")
        .enable_all()
        .build()
        .unwrap();
    // kubelet's side: another process on a node, so its own threads here.
    let kubelet = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("kubelet")
        .enable_all()
        .build()
        .unwrap();
    run(&agent, &kubelet);
}

fn run(agent: &tokio::runtime::Runtime, kubelet: &tokio::runtime::Runtime) {
    let rows = Rows::from_env();
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
        .as_ref()
        .unwrap_or_else(|| {
            panic!(
                "the default policies refused the config: {:?}",
                outcome.refused
            )
        })
        .pools
        .clone();
    assert_eq!(pools[0].devices.len(), 1024);
    let ids: Arc<Vec<String>> = Arc::new(pools[0].devices.iter().map(|d| d.id.clone()).collect());

    let policy = || {
        Arc::new(PolicyAllocator::new(
            Arc::clone(&policies),
            Arc::clone(&policy_inventory),
        )) as Arc<dyn Allocator>
    };
    // The third pool is the policy again with every call admitted at once (as before allocator
    // calls were limited to one per core), for comparison in the same run: prefer rows only.
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    for (label, allocator, sub, concurrency) in [
        ("policy", policy(), "policy", cores),
        (
            "built-in fallback order",
            Arc::new(NoAllocator) as Arc<dyn Allocator>,
            "builtin",
            cores,
        ),
        ("policy, calls not limited", policy(), "unlimited", 64),
    ] {
        if sub == "unlimited" && !rows.has("prefer") {
            continue;
        }
        if sub != "builtin" {
            // The policy rows must measure the policy, not the fallback a failing call gets.
            let direct = allocator.prefer(
                &PreferenceRequest {
                    resource_name: NAME.to_string(),
                    available: ids.to_vec(),
                    must_include: Vec::new(),
                    size: 4,
                },
                Duration::from_secs(1),
            );
            assert!(
                direct.as_ref().is_ok_and(|ids| ids.len() == 4),
                "the allocator policy does not answer: {direct:?}"
            );
        }
        let kubelet_dir = tmp.path().join(sub).join("kubelet");
        std::fs::create_dir_all(&kubelet_dir).unwrap();
        let sim = client(
            kubelet,
            // Registered on `device-plugins/kubelet.sock`: the pool's socket is there.
            KubeletSim::start(&kubelet_dir, SimOptions::LEGACY),
        )
        .unwrap();
        let mut config = PluginConfig::new(
            kubelet_dir.clone(),
            tmp.path().join(sub).join("devinfo"),
            root.clone(),
        );
        config.allocator_timeout = Duration::from_secs(2);
        config.allocator_concurrency = concurrency;
        let mut plugins = agent.block_on(async {
            let mut plugins = DevicePlugins::start(config, allocator).unwrap();
            let start = Instant::now();
            plugins.apply(&pools, &inventory).await;
            if sub == "policy" {
                // Includes preparing every member's Allocate answer (RDMA character devices).
                println!(
                    "first apply: start serving 1024 devices                                          {:>9.3?}",
                    start.elapsed()
                );
            }
            plugins
        });
        client(
            kubelet,
            sim.wait_for("1024 devices", Duration::from_secs(60), |r| {
                r.get(NAME).is_some_and(|v| v.allocatable() == 1024)
            }),
        )
        .unwrap();
        let socket = kubelet_dir.join("device-plugins/intel.com_large.sock");
        if sub == "unlimited" {
            let only_prefer = Rows {
                calls: vec!["prefer".to_string()],
                callers: rows.callers.iter().copied().filter(|&c| c > 1).collect(),
            };
            bench_pool(kubelet, &only_prefer, label, &socket, &ids);
        } else {
            bench_pool(kubelet, &rows, label, &socket, &ids);
        }

        if sub == "policy" && rows.has("change") {
            // Pool change → ListAndWatch update: from the start of `apply` on the agent side to
            // the list arriving on a kubelet-side stream.
            let (arrived_tx, arrived) = std::sync::mpsc::channel::<(Instant, usize)>();
            let reader = kubelet.spawn({
                let socket = socket.clone();
                async move {
                    let mut client =
                        DevicePluginClient::new(vfpool_deviceplugin::uds::channel(&socket));
                    let mut stream = client
                        .list_and_watch(api::Empty {})
                        .await
                        .unwrap()
                        .into_inner();
                    while let Ok(Some(list)) = stream.message().await {
                        if arrived_tx
                            .send((Instant::now(), list.devices.len()))
                            .is_err()
                        {
                            break;
                        }
                    }
                }
            });
            arrived.recv().unwrap();
            // Each change takes one more device out: a device put back would wait out the move
            // settle time (1 s) before it may join a pool again, and not be on the list at once.
            let mut next = pools.clone();
            let mut samples = Vec::new();
            for i in 0..200 {
                next[0].devices.pop();
                let start = Instant::now();
                let report = agent.block_on(plugins.apply(&next, &inventory));
                assert_eq!(report.updated.len(), 1, "change {i}: {report:?}");
                let (at, devices) = arrived.recv().unwrap();
                samples.push(at - start);
                assert_eq!(devices, next[0].devices.len());
            }
            report(
                "pool change -> ListAndWatch update (1024 devices)",
                Measured { samples, cpu: None },
                None,
            );
            reader.abort();
        }
        agent.block_on(plugins.shutdown());
        let _guard = kubelet.enter();
        sim.shutdown();
    }
}
