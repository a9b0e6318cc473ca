//! End-to-end tests of `vfpool run`: the real binary against the kubelet simulator
//! (`vfpool-kubelet-sim`) on simulated nodes (`vfpool-sysfs::sim`), each test in its own temporary
//! directories. Waits are on observed state; the timeouts are only guards against hangs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use vfpool_kubelet_sim::{KubeletSim, ResourceView, SimOptions};
use vfpool_sysfs::sim::{Fixture, write_tree};

const GUARD: Duration = Duration::from_secs(120);

/// A simulated node: sysfs tree, kubelet directory, device-info dir, config, policy dir.
struct Node {
    tmp: tempfile::TempDir,
}

impl Node {
    fn new(fixture_toml: &str, config: &str) -> Node {
        let tmp = tempfile::tempdir().unwrap();
        let node = Node { tmp };
        let fixture = Fixture::from_toml(fixture_toml, "test").unwrap();
        write_tree(&fixture, &node.sysfs()).unwrap();
        fs::create_dir_all(node.path("etc")).unwrap();
        fs::write(node.config(), config).unwrap();
        fs::create_dir_all(node.path("kubelet")).unwrap();
        node
    }

    fn shipped(name: &str, config: &str) -> Node {
        Node::new(vfpool_sysfs::sim::fixture_text(name).unwrap(), config)
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }
    fn sysfs(&self) -> PathBuf {
        self.path("sys")
    }
    fn kubelet(&self) -> PathBuf {
        self.path("kubelet")
    }
    fn devinfo(&self) -> PathBuf {
        self.path("devinfo")
    }
    fn config(&self) -> PathBuf {
        self.path("etc/config.json")
    }

    /// Replaces the sysfs tree with one written from `fixture_toml` (what the kernel would show
    /// after a change), by renaming a complete new tree into place.
    fn rewrite_sysfs(&self, fixture_toml: &str) {
        let fixture = Fixture::from_toml(fixture_toml, "test").unwrap();
        let next = self.path("sys.next");
        write_tree(&fixture, &next).unwrap();
        let old = self.path("sys.old");
        fs::rename(self.sysfs(), &old).unwrap();
        fs::rename(&next, self.sysfs()).unwrap();
        fs::remove_dir_all(old).unwrap();
    }

    /// Replaces the config file atomically (write + rename, as kubectl/ConfigMap updates do).
    fn rewrite_config(&self, config: &str) {
        let tmp = self.path("etc/.config.json.tmp");
        fs::write(&tmp, config).unwrap();
        fs::rename(tmp, self.config()).unwrap();
    }

    fn agent(&self, rescan: &str) -> Agent {
        let log = self.path("agent.log");
        let child = Command::new(env!("CARGO_BIN_EXE_vfpool"))
            .arg("run")
            .arg("--sysfs-root")
            .arg(self.sysfs())
            .arg("--config-file")
            .arg(self.config())
            .arg("--kubelet-dir")
            .arg(self.kubelet())
            .arg("--devinfo-dir")
            .arg(self.devinfo())
            .arg("--policy-dir")
            .arg(self.path("policies"))
            .arg("--rescan-interval")
            .arg(rescan)
            .arg("--log-level")
            .arg("info")
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Agent {
            child: Some(child),
            log,
        }
    }
}

struct Agent {
    child: Option<Child>,
    log: PathBuf,
}

impl Agent {
    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends `signal` and waits for the exit status.
    fn signal_and_wait(&mut self, signal: &str) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
        for _ in 0..1200 {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        panic!("the agent did not exit after SIG{signal}");
    }

    fn signal(&self, signal: &str) {
        let id = self.child.as_ref().unwrap().id();
        assert!(
            Command::new("kill")
                .arg(format!("-{signal}"))
                .arg(id.to_string())
                .status()
                .unwrap()
                .success()
        );
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            eprintln!("agent log:\n{}", fs::read_to_string(&self.log).unwrap_or_default());
        }
    }
}

fn allocatable(resources: &BTreeMap<String, ResourceView>, name: &str) -> usize {
    resources.get(name).map_or(0, ResourceView::allocatable)
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
    let sim = KubeletSim::start(&node.kubelet(), SimOptions::default())
        .await
        .unwrap();
    let mut agent = node.agent("30s");
    let name = "intel.com/mlnx_sriov";
    let resources = sim
        .wait_for("24 allocatable mlnx_sriov", GUARD, |r| allocatable(r, name) == 24)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
    let view = &resources[name];
    assert_eq!(view.mode, "legacy");
    assert_eq!(view.options, Some((false, true)));
    assert!(view.devices.values().all(|d| d.numa == vec![0]));
    assert_eq!(
        sockets(&node.kubelet().join("device-plugins")),
        ["intel.com_mlnx_sriov.sock"]
    );
    let accepted: Vec<_> = sim
        .registrations()
        .into_iter()
        .filter(|r| r.resource_name == name && r.error.is_none())
        .collect();
    assert_eq!(accepted[0].endpoint, "intel.com_mlnx_sriov.sock");

    // A pod asks for 4: the allocator packs them on one PF.
    let pod = sim.allocate_pod("pod-a", name, 4).await.unwrap();
    let preferred = pod.preferred.clone().expect("GetPreferredAllocation was offered");
    assert_eq!(preferred, pod.device_ids);
    let pf_of = |id: &str| {
        fs::read_link(node.sysfs().join("bus/pci/devices").join(id).join("physfn"))
            .unwrap()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned()
    };
    let pfs: std::collections::BTreeSet<String> = pod.device_ids.iter().map(|id| pf_of(id)).collect();
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
        host_paths.iter().filter(|p| **p == "/dev/infiniband/rdma_cm").count(),
        1,
        "specs are de-duplicated by host path"
    );
    assert!(pod.response.devices.iter().all(|d| d.permissions == "rw"));
    let devinfo = node
        .devinfo()
        .join(format!("intel.com-mlnx_sriov-{first}-device.json"));
    let doc: serde_json::Value = serde_json::from_str(&fs::read_to_string(&devinfo).unwrap()).unwrap();
    assert_eq!(doc["type"], "pci");
    assert_eq!(doc["version"], "1.1.0");
    assert_eq!(doc["pci"]["pci-address"], first.as_str());
    assert!(doc["pci"]["rdma-device"].as_str().unwrap().starts_with("mlx5_"));

    // kubelet never sends an unknown id; if it did, the error names it.
    let err = sim
        .allocate_raw(name, vec!["0000:ff:1f.7".to_string()])
        .await
        .unwrap_err();
    assert!(format!("{err:?}").contains("0000:ff:1f.7"), "{err:?}");

    let status = agent.signal_and_wait("TERM");
    assert!(status.success(), "exit status {status}");
    assert!(sockets(&node.kubelet().join("device-plugins")).is_empty());
    assert!(files(&node.devinfo()).is_empty(), "{:?}", files(&node.devinfo()));
    sim.shutdown();
}
