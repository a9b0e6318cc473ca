//! Hot swap of an example policy in another language into a running agent: the real `vfpool run`
//! binary on the simulated `dell-cx5` node, registered with the kubelet simulator, gets the Python
//! selector (`policies/examples/python-selector`, built by `make policies`) dropped into its policy
//! directory, and the simulated kubelet sees the Python policy's pools replace the default's; removing
//! it while a pod holds one of its VFs returns to the default without moving that VF.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Node, allocatable, wait_for_log};
use vfpool_kubelet_sim::{KubeletSim, SimOptions};

/// Generous: the agent compiles an 18 MB component (seconds; longer on a busy CI machine).
const GUARD: Duration = Duration::from_secs(300);

/// One config for both selectors: the default reads `resourceList`, the Python selector `pools`;
/// each ignores the other's key, so the swap needs no config change.
const CONFIG: &str = r#"{
  "resourceList": [{"resourceName": "mlnx_sriov", "selectors": {"vendors": ["15b3"], "devices": ["1018"]}}],
  "pools": [
    {"name": "fast_numa0", "pf": ["ens1f0"], "numa": 0},
    {"name": "{pf}_numa{numa}", "pf": ["ens1f1"], "rdma": true}
  ]
}"#;

fn python_selector() -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../policies/examples/target/python_selector.wasm");
    fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{} is missing ({e}): run `make policies` (scripts/build-policies.sh) to build the example policies, then run the tests again",
            path.display()
        )
    })
}

/// Writes `bytes` as `dir/name` the way an operator should: elsewhere, then rename into place.
fn drop_in(dir: &Path, name: &str, bytes: &[u8]) {
    let tmp = dir.join(format!(".{name}.tmp"));
    fs::write(&tmp, bytes).unwrap();
    fs::rename(tmp, dir.join(name)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_selector_hot_swaps_into_a_running_agent() {
    let wasm = python_selector();
    let node = Node::shipped("dell-cx5", CONFIG);
    let path = |rel: &str| node.path(rel);
    fs::create_dir_all(path("policies")).unwrap();

    let sim = KubeletSim::start(&node.kubelet(), SimOptions::default())
        .await
        .unwrap();
    let mut agent = node.agent_with(
        "1s",
        &["--policy-cache-dir".as_ref(), path("cache").as_os_str()],
    );

    sim.wait_for("the default selector's 24 VFs", GUARD, |r| {
        allocatable(r, "intel.com/mlnx_sriov") == 24
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));

    drop_in(&path("policies"), "python_selector.wasm", &wasm);
    sim.wait_for(
        "the Python selector's pools replace the default's",
        GUARD,
        |r| {
            allocatable(r, "intel.com/fast_numa0") == 12
                && allocatable(r, "intel.com/ens1f1_numa0") == 12
                && allocatable(r, "intel.com/mlnx_sriov") == 0
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));

    // A pod gets a VF of the PF the Python policy put in the pool.
    let pod = sim
        .allocate_pod("p", "intel.com/fast_numa0", 1)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
    let ens1f0_vfs: Vec<String> = fixture_vfs(&path("sys"), "0000:3b:00.0");
    assert!(
        pod.device_ids.iter().all(|id| ens1f0_vfs.contains(id)),
        "{:?} not VFs of ens1f0 {ens1f0_vfs:?}",
        pod.device_ids
    );
    // The compiled component went into the cache, for the next start.
    let cached: Vec<_> = fs::read_dir(path("cache"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".cwasm"))
        .collect();
    assert!(!cached.is_empty(), "nothing cached\n{}", agent.log());

    // Removing the module returns to the embedded default, except for the VF the pod holds: a
    // policy swap never moves a device in use. It stays alone in the Python policy's pool, out of
    // the default's, until the pod lets it go; then the next rescan moves it.
    let held = pod.device_ids[0].clone();
    fs::remove_file(path("policies/python_selector.wasm")).unwrap();
    let resources = sim
        .wait_for("the default selector, minus the VF in use", GUARD, |r| {
            r.get("intel.com/mlnx_sriov")
                .is_some_and(|v| v.capacity() == 23)
                && r.get("intel.com/fast_numa0")
                    .is_some_and(|v| v.capacity() == 1)
                && allocatable(r, "intel.com/ens1f1_numa0") == 0
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
    assert!(
        !resources["intel.com/mlnx_sriov"]
            .devices
            .contains_key(&held)
    );
    assert_eq!(
        resources["intel.com/fast_numa0"]
            .devices
            .keys()
            .collect::<Vec<_>>(),
        [&held]
    );

    assert!(sim.release_pod("p"));
    let resources = sim
        .wait_for("the released VF joins the default's pool", GUARD, |r| {
            allocatable(r, "intel.com/mlnx_sriov") == 24
                && allocatable(r, "intel.com/fast_numa0") == 0
                && allocatable(r, "intel.com/ens1f1_numa0") == 0
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
    assert!(
        resources["intel.com/mlnx_sriov"]
            .devices
            .contains_key(&held)
    );

    let status = agent.signal_and_wait("TERM");
    assert!(status.success(), "{status}\n{}", agent.log());
    sim.shutdown();
}

/// The VF addresses of the PF `pf` in a simulated sysfs tree (its `virtfnN` links).
fn fixture_vfs(sysfs: &Path, pf: &str) -> Vec<String> {
    let dir = sysfs.join("bus/pci/devices").join(pf);
    let mut vfs: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("virtfn"))
        .map(|e| {
            let target = fs::read_link(e.path()).unwrap();
            target.file_name().unwrap().to_string_lossy().into_owned()
        })
        .collect();
    vfs.sort_unstable();
    assert_eq!(vfs.len(), 12, "{}", dir.display());
    vfs
}

/// A stop signal wins over whatever the agent is doing: here compiling an 18 MB component at
/// start-up (seconds), standing in for any blocking work that does not return soon (a sysfs read
/// or devlink stuck in a wedged driver). The agent used to finish starting before it looked at the
/// signal (or never, if the work never returned), and kubelet's SIGKILL then left its sockets
/// behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_long_start_stops_the_agent_at_once() {
    let node = Node::shipped("dell-cx5", CONFIG);
    fs::create_dir_all(node.path("policies")).unwrap();
    drop_in(
        &node.path("policies"),
        "python_selector.wasm",
        &python_selector(),
    );
    let sim = KubeletSim::start(&node.kubelet(), SimOptions::default())
        .await
        .unwrap();
    let mut agent = node.agent("1h");
    wait_for_log(&agent, "vfpool agent starting");
    let status = agent.signal_and_wait("TERM");
    let log = agent.log();
    assert!(status.success(), "exit status {status}\n{log}");
    assert!(log.contains("stopping"), "{log}");
    assert!(
        !log.contains("vfpool agent running"),
        "the agent finished starting before it stopped:\n{log}"
    );
    assert!(sim.resources().is_empty());
    // Neither where the plugin watcher finds pools' sockets nor where legacy registration puts
    // them.
    for dir in ["plugins_registry", "device-plugins"] {
        assert!(
            fs::read_dir(node.kubelet().join(dir))
                .unwrap()
                .filter_map(Result::ok)
                .filter(|e| e.file_name() != "kubelet_internal_checkpoint")
                .all(|e| e.file_name() == "kubelet.sock"),
            "plugin sockets left behind in {dir}"
        );
    }
    sim.shutdown();
}
