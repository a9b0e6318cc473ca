//! End-to-end tests of `vfpool run`: the real binary against the kubelet simulator
//! (`vfpool-kubelet-sim`) on simulated nodes (`vfpool-sysfs::sim`), each test in its own temporary
//! directories. Waits are on observed state; the timeouts are only guards against hangs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Agent, Node, allocatable, wait_for_log};
use vfpool_kubelet_sim::{KubeletSim, SimError, SimOptions};

const GUARD: Duration = Duration::from_secs(120);

/// The pools' sockets, wherever the registration mode puts them (`plugins_registry` with
/// kubelet's plugin watcher, `device-plugins` without).
fn pool_sockets(node: &Node) -> Vec<String> {
    let mut names = sockets(&node.kubelet().join("device-plugins"));
    names.extend(sockets(&node.kubelet().join("plugins_registry")));
    names.sort();
    names
}

fn sockets(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".sock") && n != "kubelet.sock")
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

const MLNX_CONFIG: &str = r#"{"resourceList":[{"resourceName":"mlnx_sriov","selectors":{"vendors":["15b3"],"devices":["1018"],"drivers":["mlx5_core"],"isRdma":true}}]}"#;

/// The 24-VF Mellanox node: registration (legacy), allocatable 24 with NUMA 0, preferred
/// allocation packing one PF, Allocate env/specs/device-info for RDMA netdevs, an unknown id
/// refused by name, SIGTERM cleanup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mellanox_node_legacy_registration_allocate_and_sigterm() {
    let node = Node::shipped("dell-cx5", MLNX_CONFIG);
    let sim = KubeletSim::start(&node.kubelet(), SimOptions::LEGACY)
        .await
        .unwrap();
    let mut agent = node.agent("30s");
    let name = "intel.com/mlnx_sriov";
    let resources = sim
        .wait_for("24 allocatable mlnx_sriov", GUARD, |r| {
            allocatable(r, name) == 24
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
    let view = &resources[name];
    assert_eq!(view.mode, "legacy");
    assert_eq!(view.options, Some((false, true)));
    // A log for a file or a container runtime: plain text (no colour escapes, which it used to
    // carry), the registration mode as a word (it used to be `Legacy { dir: "…" }`).
    wait_for_log(&agent, "vfpool agent running");
    let log = agent.log();
    assert!(!log.contains('\x1b'), "{log}");
    let running = log
        .lines()
        .find(|l| l.contains("vfpool agent running"))
        .unwrap();
    assert!(
        running.contains("mode=legacy") && !running.contains("Legacy {"),
        "{running}"
    );
    assert!(!log.contains("Legacy {"), "{log}");
    assert!(view.devices.values().all(|d| d.numa == vec![0]));
    assert_eq!(pool_sockets(&node), ["intel.com_mlnx_sriov.sock"]);
    let accepted: Vec<_> = sim
        .registrations()
        .into_iter()
        .filter(|r| r.resource_name == name && r.error.is_none())
        .collect();
    assert_eq!(accepted[0].endpoint, "intel.com_mlnx_sriov.sock");

    // A pod asks for 4: the allocator packs them on one PF.
    let pod = sim.allocate_pod("pod-a", name, 4).await.unwrap();
    let preferred = pod
        .preferred
        .clone()
        .expect("GetPreferredAllocation was offered");
    let set = |ids: &[String]| {
        ids.iter()
            .cloned()
            .collect::<std::collections::BTreeSet<_>>()
    };
    assert_eq!(
        set(&preferred),
        set(&pod.device_ids),
        "kubelet took the preference"
    );
    let pf_of = |id: &str| {
        fs::read_link(node.sysfs().join("bus/pci/devices").join(id).join("physfn"))
            .unwrap()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned()
    };
    let pfs: std::collections::BTreeSet<String> =
        pod.device_ids.iter().map(|id| pf_of(id)).collect();
    assert_eq!(pfs.len(), 1, "not packed on one PF: {:?}", pod.device_ids);

    let envs = &pod.response.envs;
    assert_eq!(
        envs["PCIDEVICE_INTEL_COM_MLNX_SRIOV"],
        pod.device_ids.join(",")
    );
    let info: serde_json::Value =
        serde_json::from_str(&envs["PCIDEVICE_INTEL_COM_MLNX_SRIOV_INFO"]).unwrap();
    let first = &pod.device_ids[0];
    assert_eq!(info[first]["generic"]["deviceID"], first.as_str());
    let uverbs = info[first]["rdma"]["uverbs"].as_str().unwrap();
    assert!(uverbs.starts_with("/dev/infiniband/uverbs"), "{info}");
    assert_eq!(info[first]["rdma"]["rdma_cm"], "/dev/infiniband/rdma_cm");
    let host_paths: Vec<&str> = pod
        .response
        .devices
        .iter()
        .map(|d| d.host_path.as_str())
        .collect();
    assert!(host_paths.contains(&uverbs));
    assert!(host_paths.contains(&"/dev/infiniband/rdma_cm"));
    assert_eq!(
        host_paths
            .iter()
            .filter(|p| **p == "/dev/infiniband/rdma_cm")
            .count(),
        1,
        "specs are de-duplicated by host path"
    );
    assert!(pod.response.devices.iter().all(|d| d.permissions == "rw"));
    let devinfo = node
        .devinfo()
        .join(format!("intel.com-mlnx_sriov-{first}-device.json"));
    let doc: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&devinfo).unwrap()).unwrap();
    assert_eq!(doc["type"], "pci");
    assert_eq!(doc["version"], "1.1.0");
    assert_eq!(doc["pci"]["pci-address"], first.as_str());
    assert!(
        doc["pci"]["rdma-device"]
            .as_str()
            .unwrap()
            .starts_with("mlx5_")
    );

    // kubelet never sends an unknown id; if it did, the error names it.
    let err = sim
        .allocate_raw(name, vec!["0000:ff:1f.7".to_string()])
        .await
        .unwrap_err();
    assert!(format!("{err:?}").contains("0000:ff:1f.7"), "{err:?}");

    let status = agent.signal_and_wait("TERM");
    assert!(status.success(), "exit status {status}");
    assert!(pool_sockets(&node).is_empty());
    assert!(
        files(&node.devinfo()).is_empty(),
        "{:?}",
        files(&node.devinfo())
    );
    sim.shutdown();
}

const X710_CONFIG: &str = r#"{"resourceList":[
  {"resourceName":"intel_sriov_netdevice","selectors":{"vendors":["8086"],"devices":["154c"],"drivers":["iavf"]}},
  {"resourceName":"intel_sriov_dpdk","selectors":{"vendors":["8086"],"devices":["154c"],"drivers":["vfio-pci"]}},
  {"resourceName":"intel_uio","selectors":{"drivers":["igb_uio"]}}
]}"#;

/// Plugin-watcher registration on the Intel node; vfio and uio device specs; netdev VFs get no
/// device nodes; the uio info is there on the first allocation (upstream's bug is not copied).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intel_node_plugin_watcher_vfio_and_uio() {
    let node = Node::shipped("intel-x710", X710_CONFIG);
    let sim = KubeletSim::start(
        &node.kubelet(),
        SimOptions {
            plugin_watcher: true,
        },
    )
    .await
    .unwrap();
    let agent = node.agent("30s");
    let resources = sim
        .wait_for("the three Intel pools", GUARD, |r| {
            allocatable(r, "intel.com/intel_sriov_netdevice") == 10
                && allocatable(r, "intel.com/intel_sriov_dpdk") == 4
                && allocatable(r, "intel.com/intel_uio") == 1
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
    for view in resources.values() {
        assert_eq!(view.mode, "plugin-watcher");
        assert!(view.devices.values().all(|d| d.numa == vec![1]));
    }
    assert_eq!(
        sockets(&node.kubelet().join("plugins_registry")),
        [
            "intel.com_intel_sriov_dpdk.sock",
            "intel.com_intel_sriov_netdevice.sock",
            "intel.com_intel_uio.sock"
        ]
    );
    assert!(sockets(&node.kubelet().join("device-plugins")).is_empty());

    let dpdk = sim
        .allocate_pod("dpdk", "intel.com/intel_sriov_dpdk", 2)
        .await
        .unwrap();
    let info: serde_json::Value =
        serde_json::from_str(&dpdk.response.envs["PCIDEVICE_INTEL_COM_INTEL_SRIOV_DPDK_INFO"])
            .unwrap();
    let mut expected_paths = vec!["/dev/vfio/vfio".to_string()];
    for id in &dpdk.device_ids {
        let group = fs::read_link(
            node.sysfs()
                .join("bus/pci/devices")
                .join(id)
                .join("iommu_group"),
        )
        .unwrap()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
        assert_eq!(info[id]["vfio"]["mount"], "/dev/vfio/vfio");
        assert_eq!(info[id]["vfio"]["dev-mount"], format!("/dev/vfio/{group}"));
        expected_paths.push(format!("/dev/vfio/{group}"));
    }
    let paths: Vec<String> = dpdk
        .response
        .devices
        .iter()
        .map(|d| d.host_path.clone())
        .collect();
    assert_eq!(paths, expected_paths);

    let uio = sim
        .allocate_pod("uio", "intel.com/intel_uio", 1)
        .await
        .unwrap();
    let id = &uio.device_ids[0];
    let info: serde_json::Value =
        serde_json::from_str(&uio.response.envs["PCIDEVICE_INTEL_COM_INTEL_UIO_INFO"]).unwrap();
    let mount = info[id]["uio"]["mount"].as_str().unwrap();
    assert!(mount.starts_with("/dev/uio"), "{info}");
    assert_eq!(uio.response.devices[0].host_path, mount);

    let net = sim
        .allocate_pod("net", "intel.com/intel_sriov_netdevice", 1)
        .await
        .unwrap();
    assert!(net.response.devices.is_empty());
    assert!(net.response.mounts.is_empty());
    let id = &net.device_ids[0];
    assert!(
        node.devinfo()
            .join(format!("intel.com-intel_sriov_netdevice-{id}-device.json"))
            .exists()
    );
    sim.shutdown();
}

/// vfio no-IOMMU accelerator VFs: the host path is /dev/vfio/noiommu-N, the container sees
/// /dev/vfio/N; accelerator pools write no device-info file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accelerator_no_iommu_device_specs() {
    let config = r#"{"resourceList":[{"resourceName":"acc100","deviceType":"accelerator","selectors":{"vendors":["8086"],"devices":["0d5d"]}}]}"#;
    let node = Node::shipped("accelerator", config);
    let sim = KubeletSim::start(&node.kubelet(), SimOptions::default())
        .await
        .unwrap();
    let agent = node.agent("30s");
    let resources = sim
        .wait_for("16 accelerator VFs", GUARD, |r| {
            allocatable(r, "intel.com/acc100") == 16
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
    // VFs 12-15 are in no-IOMMU groups.
    let noiommu: Vec<String> = resources["intel.com/acc100"]
        .devices
        .keys()
        .filter(|id| {
            let group = node
                .sysfs()
                .join("bus/pci/devices")
                .join(id)
                .join("iommu_group/name");
            fs::read_to_string(group).is_ok_and(|n| n.trim() == "vfio-noiommu")
        })
        .cloned()
        .collect();
    assert_eq!(noiommu.len(), 4);
    let response = sim
        .allocate_raw("intel.com/acc100", vec![noiommu[0].clone()])
        .await
        .unwrap();
    let container = &response.container_responses[0];
    let group = fs::read_link(
        node.sysfs()
            .join("bus/pci/devices")
            .join(&noiommu[0])
            .join("iommu_group"),
    )
    .unwrap()
    .file_name()
    .unwrap()
    .to_string_lossy()
    .into_owned();
    let specs: Vec<(String, String)> = container
        .devices
        .iter()
        .map(|d| (d.host_path.clone(), d.container_path.clone()))
        .collect();
    assert_eq!(
        specs,
        [
            ("/dev/vfio/vfio".to_string(), "/dev/vfio/vfio".to_string()),
            (
                format!("/dev/vfio/noiommu-{group}"),
                format!("/dev/vfio/{group}")
            ),
        ]
    );
    assert!(files(&node.devinfo()).is_empty());
    sim.shutdown();
}

/// kubelet restarts (sockets deleted, kubelet.sock recreated): every pool registers again and
/// kubelet sees all devices again, in both registration modes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubelet_restart_reregisters() {
    for options in [SimOptions::LEGACY, SimOptions::default()] {
        kubelet_restart_reregisters_in(options).await;
    }
}

async fn kubelet_restart_reregisters_in(options: SimOptions) {
    let node = Node::shipped("dell-cx5", MLNX_CONFIG);
    let socket_dir = node.kubelet().join(if options.plugin_watcher {
        "plugins_registry"
    } else {
        "device-plugins"
    });
    let mut sim = KubeletSim::start(&node.kubelet(), options).await.unwrap();
    let mut agent = node.agent("30s");
    let name = "intel.com/mlnx_sriov";
    sim.wait_for("24 allocatable", GUARD, |r| allocatable(r, name) == 24)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
    // The restart deletes every socket in device-plugins/ (legacy: the agent re-binds its own at
    // once and registers on the new kubelet.sock; with the plugin watcher, kubelet finds the
    // socket in plugins_registry again).
    sim.restart().await.unwrap();
    sim.wait_for("re-registration after the restart", GUARD, |r| {
        allocatable(r, name) == 24
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
    let accepted = sim
        .registrations()
        .iter()
        .filter(|r| r.resource_name == name && r.error.is_none())
        .count();
    assert!(accepted >= 2, "{:?}", sim.registrations());
    assert_eq!(sockets(&socket_dir), ["intel.com_mlnx_sriov.sock"]);
    // SIGQUIT stops it cleanly, as SIGTERM does (upstream handles it; it used to kill the agent
    // with its sockets left behind).
    let status = agent.signal_and_wait("QUIT");
    assert!(status.success(), "exit status {status}");
    assert!(sockets(&socket_dir).is_empty());
    sim.shutdown();
}

/// A node whose inotify instances are used up (`fs.inotify.max_user_instances`, 128 by default, is
/// shared by every daemon of the user): the agent starts anyway, polling the directories it
/// watches, and still sees a kubelet restart and a config change. It used to refuse to start,
/// and kubelet's restarts of it crash-looped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_inotify_the_agent_polls() {
    let node = Node::shipped("dell-cx5", MLNX_CONFIG);
    let mut sim = KubeletSim::start(&node.kubelet(), SimOptions::default())
        .await
        .unwrap();
    let mut agent = node.agent_without_inotify("30s");
    let name = "intel.com/mlnx_sriov";
    sim.wait_for("24 allocatable", GUARD, |r| allocatable(r, name) == 24)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
    assert!(
        agent.log().contains("polling it every second instead"),
        "{}",
        agent.log()
    );
    sim.restart().await.unwrap();
    sim.wait_for("re-registration after the restart", GUARD, |r| {
        allocatable(r, name) == 24
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
    node.rewrite_config(
        r#"{"resourceList":[{"resourceName":"mlnx_port1","selectors":{"pfNames":["ens1f0"]}}]}"#,
    );
    sim.wait_for("the new pool", GUARD, |r| {
        allocatable(r, "intel.com/mlnx_port1") > 0
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
    assert!(agent.signal_and_wait("TERM").success());
    assert!(pool_sockets(&node).is_empty());
    sim.shutdown();
}

/// A node in steady state is quiet at info level: what every rescan finds again (a resource that
/// matches no device here, as a cluster-wide config has for other NIC models) is said once. It
/// used to be logged at info on every rescan.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_state_says_things_once() {
    let config = r#"{"resourceList":[
        {"resourceName":"mlnx_sriov","selectors":{"vendors":["15b3"],"devices":["1018"]}},
        {"resourceName":"other_nic","selectors":{"vendors":["dead"]}}]}"#;
    let node = Node::shipped("dell-cx5", config);
    let sim = KubeletSim::start(&node.kubelet(), SimOptions::default())
        .await
        .unwrap();
    let mut agent = node.agent("1s");
    sim.wait_for("24 allocatable", GUARD, |r| {
        allocatable(r, "intel.com/mlnx_sriov") == 24
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
    // Several rescans (one a second).
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let log = agent.log();
    let said = log
        .lines()
        .filter(|l| l.contains("no devices in the pool"))
        .collect::<Vec<_>>();
    assert_eq!(said.len(), 1, "{log}");
    assert!(said[0].contains("intel.com/other_nic"), "{log}");
    assert!(agent.signal_and_wait("TERM").success());
    sim.shutdown();
}

/// A config file caught empty (rewritten in place, or a writer that died half-way) is refused and
/// the pools keep serving; it used to be taken for "no pools" and stopped them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_config_file_keeps_the_pools() {
    let node = Node::shipped("dell-cx5", MLNX_CONFIG);
    let sim = KubeletSim::start(&node.kubelet(), SimOptions::default())
        .await
        .unwrap();
    let mut agent = node.agent("1h");
    let name = "intel.com/mlnx_sriov";
    sim.wait_for("24 allocatable", GUARD, |r| allocatable(r, name) == 24)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
    fs::write(node.config(), "").unwrap();
    wait_for_log(&agent, "is empty");
    assert_eq!(allocatable(&sim.resources(), name), 24, "{}", agent.log());
    assert_eq!(pool_sockets(&node), ["intel.com_mlnx_sriov.sock"]);
    assert!(agent.signal_and_wait("TERM").success());
    sim.shutdown();
}

/// Config hot swap: one pool replaced by two; the removed pool's socket goes away and kubelet's
/// stream for it ends; SIGHUP reloads instead of exiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_hot_swap_adds_and_removes_pools() {
    let node = Node::shipped("dell-cx5", MLNX_CONFIG);
    let sim = KubeletSim::start(&node.kubelet(), SimOptions::default())
        .await
        .unwrap();
    let mut agent = node.agent("30s");
    sim.wait_for("24 allocatable", GUARD, |r| {
        allocatable(r, "intel.com/mlnx_sriov") == 24
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
    node.rewrite_config(
        r#"{"resourceList":[
          {"resourceName":"port0","selectors":{"pfNames":["ens1f0"],"isRdma":true}},
          {"resourceName":"port1","selectors":{"pfNames":["ens1f1"]}}
        ]}"#,
    );
    sim.wait_for("port0 and port1 replace mlnx_sriov", GUARD, |r| {
        allocatable(r, "intel.com/port0") == 12
            && allocatable(r, "intel.com/port1") == 12
            && allocatable(r, "intel.com/mlnx_sriov") == 0
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
    assert_eq!(
        pool_sockets(&node),
        ["intel.com_port0.sock", "intel.com_port1.sock"]
    );
    agent.signal("HUP");
    // The agent reloads (nothing changed) and keeps serving.
    let pod = sim.allocate_pod("p", "intel.com/port1", 1).await.unwrap();
    assert_eq!(pod.device_ids.len(), 1);
    assert!(agent.alive(), "SIGHUP must not stop the agent");
    assert!(agent.signal_and_wait("INT").success());
    assert!(pool_sockets(&node).is_empty());
    sim.shutdown();
}

/// A module dropped into the policy directory that would make the compiler take gigabytes is
/// compiled in a child process that runs into its memory limit: refused with that reason, the
/// pools keep serving, and the agent's own memory never held the compile (it took about 600 MB
/// in the agent before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_that_would_stall_the_compiler_leaves_the_agent_serving() {
    let node = Node::shipped("dell-cx5", MLNX_CONFIG);
    let sim = KubeletSim::start(&node.kubelet(), SimOptions::default())
        .await
        .unwrap();
    let agent = node.agent_with(
        "30s",
        &["--policy-compile-memory-mib".as_ref(), "256".as_ref()],
    );
    sim.wait_for("24 allocatable", GUARD, |r| {
        allocatable(r, "intel.com/mlnx_sriov") == 24
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
    let policies = node.path("policies");
    fs::create_dir_all(&policies).unwrap();
    fs::write(policies.join(".bomb.tmp"), common::compiler_bomb(4000)).unwrap();
    fs::rename(policies.join(".bomb.tmp"), policies.join("selector.wasm")).unwrap();
    wait_for_log(&agent, "256 MiB of memory the compiler process may use");
    let pod = sim
        .allocate_pod("p", "intel.com/mlnx_sriov", 1)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
    assert_eq!(pod.device_ids.len(), 1);
    let status = fs::read_to_string(format!("/proc/{}/status", agent.pid())).unwrap();
    let peak_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    assert!(
        peak_kib < 200 << 10,
        "the agent's peak RSS is {peak_kib} KiB: did it compile the module itself?"
    );
    sim.shutdown();
}

/// What a selector logs is said once per accepted set: the acceptance dry run says it, and the
/// selects that repeat it (every rescan, the one right after a hot swap) say it at debug. The
/// first select after the dry run, at start and after each swap, used to say it again at info.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_selectors_log_lines_are_said_once_per_accepted_set() {
    let node = Node::shipped("dell-cx5", MLNX_CONFIG);
    let policies = node.path("policies");
    fs::create_dir_all(&policies).unwrap();
    let starter =
        Path::new(vfpool_policy::defaults::BUILT_COMPONENTS_DIR).join("rust_starter.wasm");
    fs::copy(&starter, policies.join("selector.wasm")).unwrap();
    // The starter logs "N pools of VFs" on every select.
    let said = |agent: &Agent| {
        agent
            .log()
            .lines()
            .filter(|l| l.contains("pools of VFs"))
            .count()
    };
    let mut agent = node.agent("200ms");
    wait_for_log(&agent, "policies activated generation=1");
    // Several rescans, each selecting again on the same node.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(said(&agent), 1, "{}", agent.log());

    // Back to the default selector, then the starter again: a new set, said once more.
    fs::remove_file(policies.join("selector.wasm")).unwrap();
    wait_for_log(&agent, "policies activated generation=2");
    fs::copy(&starter, policies.join(".selector.tmp")).unwrap();
    fs::rename(
        policies.join(".selector.tmp"),
        policies.join("selector.wasm"),
    )
    .unwrap();
    wait_for_log(&agent, "policies activated generation=3");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(said(&agent), 2, "{}", agent.log());
    assert!(agent.signal_and_wait("TERM").success());
}

/// A config change made while the agent is still starting (its first pool socket is bound, the
/// registration may be in flight) is not lost: the watch is in place before the first load, so
/// nothing written after it goes unnoticed until the next restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_change_during_startup_is_picked_up() {
    let node = Node::shipped("dell-cx5", MLNX_CONFIG);
    let sim = KubeletSim::start(&node.kubelet(), SimOptions::default())
        .await
        .unwrap();
    let agent = node.agent("30s");
    let deadline = std::time::Instant::now() + GUARD;
    while pool_sockets(&node).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "no pool socket\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_micros(200));
    }
    node.rewrite_config(
        r#"{"resourceList":[{"resourceName":"port1","selectors":{"pfNames":["ens1f1"]}}]}"#,
    );
    sim.wait_for("port1 replaces mlnx_sriov", GUARD, |r| {
        allocatable(r, "intel.com/port1") == 12 && allocatable(r, "intel.com/mlnx_sriov") == 0
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
    sim.shutdown();
}

/// The dual-port Mellanox node with a pool per port (`pool_a`: ens1f0's 12 VFs, `pool_b`:
/// ens1f1's), served by an agent rescanning every `rescan`, both pools allocatable in kubelet.
async fn one_pool_per_port(rescan: &str) -> (Node, KubeletSim, Agent) {
    let node = Node::shipped(
        "dell-cx5",
        r#"{"resourceList":[
          {"resourceName":"pool_a","selectors":{"pfNames":["ens1f0"]}},
          {"resourceName":"pool_b","selectors":{"pfNames":["ens1f1"]}}
        ]}"#,
    );
    let sim = KubeletSim::start(&node.kubelet(), SimOptions::default())
        .await
        .unwrap();
    // A kubelet restart in a test holds released devices for a second, not a minute.
    let agent = node.agent_with(rescan, &["--kubelet-restart-grace".as_ref(), "1s".as_ref()]);
    sim.wait_for("both pools", GUARD, |r| {
        allocatable(r, "intel.com/pool_a") == 12 && allocatable(r, "intel.com/pool_b") == 12
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
    (node, sim, agent)
}

/// A pool change never moves a device a pod holds: it stays in its pool (and out of the new
/// one) until the pod releases it; then the next rescan moves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_in_use_does_not_move() {
    let (node, mut sim, agent) = one_pool_per_port("300ms").await;
    // PodResources alone tells the agent the pod holds the device (kubelet's checkpoint is only
    // believed for pods whose directory it sees).
    sim.no_pod_directories();
    let pod = sim
        .allocate_pod("holder", "intel.com/pool_a", 1)
        .await
        .unwrap();
    let held = pod.device_ids[0].clone();

    // Every Mellanox VF now belongs to pool_b (first match wins), pool_a selects nothing.
    node.rewrite_config(
        r#"{"resourceList":[
          {"resourceName":"pool_b","selectors":{"vendors":["15b3"],"devices":["1018"]}},
          {"resourceName":"pool_a","selectors":{"pfNames":["ens1f0"]}}
        ]}"#,
    );
    let resources = sim
        .wait_for("pool_b takes every free VF", GUARD, |r| {
            r.get("intel.com/pool_b")
                .is_some_and(|b| b.capacity() == 23)
                && r.get("intel.com/pool_a").is_some_and(|a| a.capacity() == 1)
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
    assert!(!resources["intel.com/pool_b"].devices.contains_key(&held));
    let a = &resources["intel.com/pool_a"];
    assert!(a.connected);
    assert_eq!(a.devices.keys().collect::<Vec<_>>(), [&held]);
    // Held for its pod with its real health: counted in kubelet's allocatable (which the pod's
    // request uses up, so nothing is free to another pod), and a re-admission after a kubelet
    // restart finds it healthy.
    assert_eq!(a.allocatable(), 1);
    match sim.allocate_pod("other", "intel.com/pool_a", 1).await {
        Err(SimError::Insufficient { free: 0, .. }) => {}
        other => panic!("the held device was given to a second pod: {other:?}"),
    }
    // kubelet restarts while the pod's container is not running: it admits the pod again, which
    // needs pool_a registered and the held device listed as Healthy.
    sim.restart().await.unwrap();
    sim.wait_for("both pools again after the kubelet restart", GUARD, |r| {
        r.get("intel.com/pool_a").is_some_and(|a| a.connected)
            && allocatable(r, "intel.com/pool_b") == 23
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
    sim.readmit_pod("holder")
        .unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));

    sim.release_pod("holder");
    let resources = sim
        .wait_for("the released VF moves to pool_b", GUARD, |r| {
            r.get("intel.com/pool_b")
                .is_some_and(|b| b.capacity() == 24)
                && allocatable(r, "intel.com/pool_a") == 0
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
    assert!(resources["intel.com/pool_b"].devices.contains_key(&held));
    assert_eq!(pool_sockets(&node), ["intel.com_pool_b.sock"]);
    sim.shutdown();
}

/// Devices on their way to another pool join it at the next apply, even when the rescan that was
/// to place them cannot discover the node (here its sysfs tree is gone): they stayed out of every
/// pool until a discovery worked again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_devices_are_placed_when_a_rescan_fails() {
    // No periodic rescan during the test: only the one that places the moving devices.
    let (node, sim, agent) = one_pool_per_port("1h").await;
    // Discovery fails from now on; the config reload selects on the last good inventory.
    std::fs::rename(node.sysfs(), node.path("sys.away")).unwrap();
    node.rewrite_config(
        r#"{"resourceList":[
          {"resourceName":"pool_b","selectors":{"vendors":["15b3"],"devices":["1018"]}}
        ]}"#,
    );
    sim.wait_for("pool_b takes every VF", GUARD, |r| {
        allocatable(r, "intel.com/pool_b") == 24
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
    assert!(agent.log().contains("rescan failed"), "{}", agent.log());
    std::fs::rename(node.path("sys.away"), node.sysfs()).unwrap();
    sim.shutdown();
}

/// Health and rediscovery from the rescan: a PF link going down makes its VFs Unhealthy; a
/// changed sriov_numvfs changes the pool without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pf_link_down_and_vf_count_change() {
    let text = vfpool_sysfs::sim::fixture_text("dell-cx5").unwrap();
    let node = Node::new(text, MLNX_CONFIG);
    let sim = KubeletSim::start(&node.kubelet(), SimOptions::default())
        .await
        .unwrap();
    let agent = node.agent("300ms");
    let name = "intel.com/mlnx_sriov";
    sim.wait_for("24 allocatable", GUARD, |r| allocatable(r, name) == 24)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));

    let down = text.replacen(
        "netdevs = [\"ens1f0\"]",
        "netdevs = [\"ens1f0\"]\noperstate = \"down\"\ncarrier = false",
        1,
    );
    assert_ne!(down, text);
    node.rewrite_sysfs(&down);
    let resources = sim
        .wait_for("PF 0's VFs unhealthy", GUARD, |r| {
            r.get(name)
                .is_some_and(|v| v.capacity() == 24 && v.allocatable() == 12)
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
    let unhealthy: Vec<&String> = resources[name]
        .devices
        .iter()
        .filter(|(_, d)| d.health == "Unhealthy")
        .map(|(id, _)| id)
        .collect();
    assert!(
        unhealthy
            .iter()
            .all(|id| id.starts_with("0000:3b:00.") || id.starts_with("0000:3b:01."))
    );

    // Link back up, and port 2 goes from 12 to 8 VFs.
    let fewer = port_2_with_8_vfs(text);
    node.rewrite_sysfs(&fewer);
    sim.wait_for("20 healthy VFs", GUARD, |r| {
        r.get(name)
            .is_some_and(|v| v.capacity() == 20 && v.allocatable() == 20)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
    sim.shutdown();
}

/// The dell-cx5 fixture `text` with port 2's 12 VFs cut to 8 (20 VFs on the node).
fn port_2_with_8_vfs(text: &str) -> String {
    let mut counts = 0;
    let fewer: String = text
        .lines()
        .map(|line| {
            if line.trim() == "count = 12" {
                counts += 1;
                if counts == 2 {
                    return "count = 8".to_string();
                }
            }
            line.to_string()
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(counts, 2, "the fixture changed: no second \"count = 12\"");
    fewer
}

/// Deletes a network namespace when dropped.
struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// The host's sysfs mounted somewhere other than `/sys` (a DaemonSet's `--sysfs-root /host/sys`)
/// is the host's: host facts and kernel events are on, and the agent says so at startup. A
/// simulated tree is not, and the agent says that too. (A path comparison with `/sys` used to
/// treat the mounted host sysfs as simulated, silently dropping uplink protection, devlink facts
/// and kernel events.) Needs root for the bind mount.
#[test]
fn the_host_sysfs_mounted_elsewhere_is_the_host() {
    let node = Node::shipped("dell-cx5", MLNX_CONFIG);
    let mut agent = node.agent_on_mounted_host_sysfs("1h");
    wait_for_log(&agent, "the sysfs root is");
    let log = agent.log();
    assert!(
        log.contains("host facts (default routes, devlink) and kernel events are on"),
        "{log}"
    );
    wait_for_log(&agent, "kernel events: watching");
    assert!(agent.signal_and_wait("TERM").success(), "{}", agent.log());

    let simulated = Node::shipped("dell-cx5", MLNX_CONFIG);
    let mut agent = simulated.agent("1h");
    wait_for_log(&agent, "the sysfs root is");
    let log = agent.log();
    assert!(
        log.contains("not a sysfs mount (a simulated node): host facts (default routes, devlink) and kernel events are off"),
        "{log}"
    );
    assert!(agent.signal_and_wait("TERM").success(), "{}", agent.log());
}

/// On a real sysfs root the agent subscribes to rtnetlink link events and uevents; a device link
/// changing triggers a rescan long before the (1 h) rescan interval, a pod's veth pair does not. Runs the agent in its own
/// network namespace so the test's link changes touch nothing else.
#[test]
fn kernel_link_events_trigger_a_rescan() {
    let ns = Netns(format!("vfpool-ev-{}", std::process::id()));
    let added = Command::new("ip")
        .args(["netns", "add", &ns.0])
        .status()
        .expect("iproute2 (`ip`) is needed: make setup installs it");
    assert!(added.success(), "ip netns add failed (the test needs root)");
    let node = Node::shipped("dell-cx5", MLNX_CONFIG);
    let log = node.path("agent.log");
    let child = Command::new("ip")
        .args(["netns", "exec", &ns.0])
        .arg(env!("CARGO_BIN_EXE_vfpool"))
        .arg("run")
        .args([
            "--sysfs-root",
            "/sys",
            "--rescan-interval",
            "1h",
            // The event-triggered rescan is logged at debug level (steady state is quiet at info).
            "--log-level",
            "info,vfpool::cmd::run=debug",
        ])
        .arg("--config-file")
        .arg(node.config())
        .arg("--kubelet-dir")
        .arg(node.kubelet())
        .arg("--devinfo-dir")
        .arg(node.devinfo())
        .arg("--policy-dir")
        .arg(node.path("policies"))
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut agent = Agent {
        child: Some(child),
        log,
    };
    wait_for_log(&agent, "kernel events: watching");
    assert!(
        agent.log().contains("netlink link events"),
        "{}",
        agent.log()
    );
    wait_for_log(&agent, "vfpool agent running");
    assert!(!agent.log().contains("kernel events: rescanning"));
    // A veth pair (every pod start makes one) is no reason to rescan.
    let link = Command::new("ip")
        .args([
            "-n", &ns.0, "link", "add", "vfpev0", "type", "veth", "peer", "name", "vfpev1",
        ])
        .status()
        .unwrap();
    assert!(link.success());
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        !agent.log().contains("kernel events: rescanning"),
        "a veth pair made the agent rescan: {}",
        agent.log()
    );
    // A link without a kind changing state (as a PF's carrier does) is.
    let up = Command::new("ip")
        .args(["-n", &ns.0, "link", "set", "lo", "up"])
        .status()
        .unwrap();
    assert!(up.success());
    wait_for_log(&agent, "kernel events: rescanning");
    let log = agent.log();
    assert!(
        log.lines()
            .filter(|l| l.contains("kernel events: rescanning"))
            .all(|l| l.contains("DEBUG")),
        "the rescan is a debug line: {log}"
    );
    assert!(agent.signal_and_wait("TERM").success());
}

/// Upstream #565: after an agent restart, a VF whose netdev moved into a pod's network namespace
/// is still advertised (and healthy), so capacity does not drop under running pods.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_restart_still_counts_devices_in_pods() {
    let node = Node::shipped("dell-cx5", MLNX_CONFIG);
    let sim = KubeletSim::start(&node.kubelet(), SimOptions::default())
        .await
        .unwrap();
    let name = "intel.com/mlnx_sriov";
    let mut agent = node.agent("30s");
    sim.wait_for("24 allocatable", GUARD, |r| allocatable(r, name) == 24)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
    let pod = sim.allocate_pod("in-pod", name, 1).await.unwrap();
    let id = pod.device_ids[0].clone();
    // The CNI plugin moved the VF's netdev into the pod: it is gone from the host's sysfs.
    let net = node.sysfs().join("bus/pci/devices").join(&id).join("net");
    let netdev = fs::read_dir(&net)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .file_name();
    fs::remove_dir_all(net.join(&netdev)).unwrap();
    fs::remove_file(node.sysfs().join("class/net").join(&netdev)).unwrap();
    assert!(agent.signal_and_wait("TERM").success());
    sim.wait_for("the old agent's stream ended", GUARD, |r| {
        r.get(name).is_some_and(|v| !v.connected)
    })
    .await
    .unwrap();

    let agent = node.agent("30s");
    let resources = sim
        .wait_for("24 allocatable again", GUARD, |r| {
            allocatable(r, name) == 24
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
    assert_eq!(resources[name].devices[&id].health, "Healthy");
    // kubelet, admitting the pod again (its container not running), finds its device healthy.
    sim.readmit_pod("in-pod").unwrap();
    sim.shutdown();
}

/// SIGHUP reloads the config even where the watcher cannot see it (its directory did not exist
/// when the agent started); upstream exits on SIGHUP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_config() {
    let node = Node::shipped("dell-cx5", MLNX_CONFIG);
    let sim = KubeletSim::start(&node.kubelet(), SimOptions::default())
        .await
        .unwrap();
    let late = node.path("late/config.json");
    let log = node.path("agent.log");
    let child = Command::new(env!("CARGO_BIN_EXE_vfpool"))
        .arg("run")
        .arg("--sysfs-root")
        .arg(node.sysfs())
        .arg("--config-file")
        .arg(&late)
        .arg("--kubelet-dir")
        .arg(node.kubelet())
        .arg("--devinfo-dir")
        .arg(node.devinfo())
        .arg("--policy-dir")
        .arg(node.path("policies"))
        .args(["--rescan-interval", "1h", "--log-level", "info"])
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut agent = Agent {
        child: Some(child),
        log,
    };
    wait_for_log(&agent, "vfpool agent running");
    assert!(sim.resources().is_empty());
    fs::create_dir_all(late.parent().unwrap()).unwrap();
    fs::write(&late, MLNX_CONFIG).unwrap();
    agent.signal("HUP");
    sim.wait_for("the pool after SIGHUP", GUARD, |r| {
        allocatable(r, "intel.com/mlnx_sriov") == 24
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
    assert!(agent.alive());
    assert!(agent.signal_and_wait("TERM").success());
    sim.shutdown();
}

/// SIGHUP is a refresh: devices are rediscovered, and the pools it leaves are those of the node as
/// it is now. It used to put back the pools computed when the policy set was accepted (an unchanged
/// reload hands that set back): after a VF count rise, every later SIGHUP took the new VFs away
/// until the next rescan.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_rediscovers_and_never_restores_stale_pools() {
    let text = vfpool_sysfs::sim::fixture_text("dell-cx5").unwrap();
    // Port 2 starts with 8 VFs instead of 12.
    let fewer = port_2_with_8_vfs(text);
    let node = Node::new(&fewer, MLNX_CONFIG);
    let sim = KubeletSim::start(&node.kubelet(), SimOptions::default())
        .await
        .unwrap();
    // No periodic rescan within the test: only SIGHUP can make the agent look again.
    let mut agent = node.agent("1h");
    let name = "intel.com/mlnx_sriov";
    sim.wait_for("20 allocatable", GUARD, |r| allocatable(r, name) == 20)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));

    // Back to 12: SIGHUP rediscovers.
    node.rewrite_sysfs(text);
    agent.signal("HUP");
    let seen = sim
        .wait_for("24 VFs after SIGHUP", GUARD, |r| {
            r.get(name)
                .is_some_and(|v| v.capacity() == 24 && v.allocatable() == 24)
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
    let updates = seen[name].updates;

    // A second SIGHUP, nothing changed: no list is sent at all (it used to send the start-up
    // pools of 20, then the rescan's 24 again).
    agent.signal("HUP");
    for _ in 0..600 {
        if agent.log().matches("SIGHUP: reloading").count() == 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(agent.log().matches("SIGHUP: reloading").count(), 2);
    // The reload and the rescan it triggers take milliseconds; a stale list would show by then.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let now = &sim.resources()[name];
    assert_eq!(
        (now.capacity(), now.updates),
        (24, updates),
        "{}",
        agent.log()
    );
    assert!(agent.alive());
    sim.shutdown();
}

/// A SIGHUP reload runs off the agent's loop: while it takes its time (here a policy that loops
/// until its 2 s `validate-settings` deadline), the rescan SIGHUP asks for runs and the pools
/// follow the node. The loop used to wait for the reload, so nothing was rescanned, no kernel event
/// or health change handled, until the reload (seconds for a Python module) was done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_sighup_reload_does_not_stop_rescans() {
    let text = vfpool_sysfs::sim::fixture_text("dell-cx5").unwrap();
    let node = Node::shipped("dell-cx5", MLNX_CONFIG);
    fs::create_dir_all(node.path("policies")).unwrap();
    fs::copy(
        Path::new(vfpool_policy::defaults::BUILT_COMPONENTS_DIR).join("probe.wasm"),
        node.path("policies/selector.wasm"),
    )
    .unwrap();
    let sim = KubeletSim::start(&node.kubelet(), SimOptions::default())
        .await
        .unwrap();
    // No periodic rescan within the test: only SIGHUP makes the agent look again.
    let mut agent = node.agent("1h");
    let name = "example.com/probe";
    sim.wait_for("24 allocatable", GUARD, |r| allocatable(r, name) == 24)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
    // Settings under which every call of the probe loops: each reload takes its deadline, and is
    // refused (the watcher's reload first).
    let refused = "policy reload refused";
    node.rewrite_config("probe:loop");
    wait_for_log(&agent, refused);
    assert_eq!(agent.log().matches(refused).count(), 1, "{}", agent.log());

    // Port 2 down to 8 VFs, then SIGHUP: the rescan it asks for finds 20 VFs while the reload it
    // started still runs (which takes the 2 s deadline, a rescan milliseconds).
    node.rewrite_sysfs(&port_2_with_8_vfs(text));
    agent.signal("HUP");
    sim.wait_for("20 VFs after SIGHUP", GUARD, |r| allocatable(r, name) == 20)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
    let log = agent.log();
    assert_eq!(
        log.matches(refused).count(),
        1,
        "the rescan waited for the SIGHUP reload:\n{log}"
    );
    // The reload itself still happens, and is refused like the watcher's.
    for _ in 0..2400 {
        if agent.log().matches(refused).count() == 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(agent.log().matches(refused).count(), 2, "{}", agent.log());
    assert!(agent.alive());
    assert!(agent.signal_and_wait("TERM").success());
    sim.shutdown();
}

/// `vfpool run` takes DESIGN.md's flags, each with its environment twin and upstream's defaults,
/// and refuses a bad value naming it.
#[test]
fn run_flags_have_env_twins_and_defaults() {
    let out = Command::new(env!("CARGO_BIN_EXE_vfpool"))
        .args(["run", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for (flag, env, default) in [
        (
            "--config-file",
            "VFPOOL_CONFIG_FILE",
            "/etc/pcidp/config.json",
        ),
        ("--resource-prefix", "VFPOOL_RESOURCE_PREFIX", "intel.com"),
        ("--sysfs-root", "VFPOOL_SYSFS_ROOT", "/sys"),
        ("--kubelet-dir", "VFPOOL_KUBELET_DIR", "/var/lib/kubelet"),
        (
            "--devinfo-dir",
            "VFPOOL_DEVINFO_DIR",
            "/var/run/k8s.cni.cncf.io/devinfo/dp",
        ),
        ("--policy-dir", "VFPOOL_POLICY_DIR", "/etc/vfpool/policies"),
        ("--rescan-interval", "VFPOOL_RESCAN_INTERVAL", "30s"),
    ] {
        assert!(help.contains(flag), "{flag} missing:\n{help}");
        assert!(help.contains(env), "{env} missing:\n{help}");
        assert!(help.contains(default), "{default} missing:\n{help}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_vfpool"))
        .args(["run", "--rescan-interval", "0s"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("0s") && err.contains("rescan-interval"),
        "{err}"
    );
}

/// A regular file as `--devinfo-dir` used to start the agent, which then warned once per device
/// that it could not remove a device-info file ("Not a directory"). It is refused at startup, exit
/// 2, naming the flag and the path, before anything is served.
#[test]
fn a_devinfo_dir_that_is_a_file_is_refused_at_startup() {
    let node = Node::shipped("dell-cx5", MLNX_CONFIG);
    fs::write(node.devinfo(), "").unwrap();
    let mut agent = node.agent("30s");
    let mut status = None;
    for _ in 0..1200 {
        status = agent.child.as_mut().unwrap().try_wait().unwrap();
        if status.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = agent.log();
    let status = status.unwrap_or_else(|| panic!("the agent started serving:\n{log}"));
    agent.child = None;
    assert_eq!(status.code(), Some(2), "{log}");
    assert!(
        log.contains("--devinfo-dir")
            && log.contains(&*node.devinfo().to_string_lossy())
            && log.contains("not a directory"),
        "{log}"
    );
    assert!(
        files(&node.kubelet().join("device-plugins")).is_empty(),
        "{log}"
    );
}
