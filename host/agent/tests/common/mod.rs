//! What the end-to-end tests of `vfpool run` share: a simulated node in a temporary directory and
//! the agent process on it, killed (with its log printed) if a test fails before stopping it.
// Each test binary uses its own subset of these.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use vfpool_kubelet_sim::ResourceView;
use vfpool_sysfs::sim::{Fixture, write_tree};

/// A simulated node: sysfs tree, kubelet directory, device-info dir, config, policy dir.
pub struct Node {
    tmp: tempfile::TempDir,
}

impl Node {
    pub fn new(fixture_toml: &str, config: &str) -> Node {
        let tmp = tempfile::tempdir().unwrap();
        let node = Node { tmp };
        let fixture = Fixture::from_toml(fixture_toml, "test").unwrap();
        write_tree(&fixture, &node.sysfs()).unwrap();
        fs::create_dir_all(node.path("etc")).unwrap();
        fs::write(node.config(), config).unwrap();
        fs::create_dir_all(node.path("kubelet")).unwrap();
        node
    }

    pub fn shipped(name: &str, config: &str) -> Node {
        Node::new(vfpool_sysfs::sim::fixture_text(name).unwrap(), config)
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }
    pub fn sysfs(&self) -> PathBuf {
        self.path("sys")
    }
    pub fn kubelet(&self) -> PathBuf {
        self.path("kubelet")
    }
    pub fn devinfo(&self) -> PathBuf {
        self.path("devinfo")
    }
    pub fn config(&self) -> PathBuf {
        self.path("etc/config.json")
    }

    /// Replaces the sysfs tree with one written from `fixture_toml` (what the kernel would show
    /// after a change), by renaming a complete new tree into place.
    pub fn rewrite_sysfs(&self, fixture_toml: &str) {
        let fixture = Fixture::from_toml(fixture_toml, "test").unwrap();
        let next = self.path("sys.next");
        write_tree(&fixture, &next).unwrap();
        let old = self.path("sys.old");
        fs::rename(self.sysfs(), &old).unwrap();
        fs::rename(&next, self.sysfs()).unwrap();
        fs::remove_dir_all(old).unwrap();
    }

    /// Replaces the config file atomically (write + rename, as kubectl/ConfigMap updates do).
    pub fn rewrite_config(&self, config: &str) {
        let tmp = self.path("etc/.config.json.tmp");
        fs::write(&tmp, config).unwrap();
        fs::rename(tmp, self.config()).unwrap();
    }

    pub fn agent(&self, rescan: &str) -> Agent {
        self.agent_with(rescan, &[])
    }

    /// `vfpool run` on this node with `extra` arguments after the node's own.
    pub fn agent_with(&self, rescan: &str, extra: &[&std::ffi::OsStr]) -> Agent {
        self.spawn_agent(Command::new(env!("CARGO_BIN_EXE_vfpool")), rescan, extra)
    }

    /// `vfpool run` on this node in a user namespace whose inotify instance limit is 0, as on a
    /// node where other daemons used up `fs.inotify.max_user_instances` (`unshare` keeps the pid:
    /// signals reach the agent).
    #[allow(dead_code)] // not every test binary that includes this module uses it
    pub fn agent_without_inotify(&self, rescan: &str) -> Agent {
        let probe = Command::new("unshare")
            .args([
                "--map-root-user",
                "sh",
                "-c",
                "echo 0 > /proc/sys/user/max_inotify_instances",
            ])
            .output()
            .unwrap();
        assert!(
            probe.status.success(),
            "this test needs user namespaces (unshare --map-root-user, as root in CI) to take inotify away from the agent: {}",
            String::from_utf8_lossy(&probe.stderr)
        );
        let mut command = Command::new("unshare");
        command.args([
            "--map-root-user",
            "sh",
            "-c",
            r#"echo 0 > /proc/sys/user/max_inotify_instances && exec "$0" "$@""#,
            env!("CARGO_BIN_EXE_vfpool"),
        ]);
        self.spawn_agent(command, rescan, &[])
    }

    /// `vfpool run` whose `--sysfs-root` is this host's sysfs bind-mounted over the node's
    /// simulated tree, as a DaemonSet mounts it at `/host/sys`. The mount is made in a private
    /// mount namespace of the agent's own (`unshare` keeps the pid: signals reach the agent), so it
    /// vanishes with the agent even if the test fails. Needs root.
    #[allow(dead_code)] // not every test binary that includes this module uses it
    pub fn agent_on_mounted_host_sysfs(&self, rescan: &str) -> Agent {
        let mut command = Command::new("unshare");
        command
            .args([
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                r#"mount --bind /sys "$1" && shift && exec "$0" "$@""#,
                env!("CARGO_BIN_EXE_vfpool"),
            ])
            .arg(self.sysfs());
        self.spawn_agent(command, rescan, &[])
    }

    fn spawn_agent(&self, mut command: Command, rescan: &str, extra: &[&std::ffi::OsStr]) -> Agent {
        let log = self.path("agent.log");
        let child = command
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
            .args(extra)
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

pub struct Agent {
    pub child: Option<Child>,
    pub log: PathBuf,
}

impl Agent {
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends `signal` and waits for the exit status.
    pub fn signal_and_wait(&mut self, signal: &str) -> std::process::ExitStatus {
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

    pub fn alive(&mut self) -> bool {
        self.child.as_mut().unwrap().try_wait().unwrap().is_none()
    }

    pub fn signal(&self, signal: &str) {
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
            eprintln!(
                "agent log:\n{}",
                fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }
}

/// Waits (up to two minutes) until the agent's log contains `needle`.
#[allow(dead_code)] // not every test binary that includes this module uses it
pub fn wait_for_log(agent: &Agent, needle: &str) {
    for _ in 0..2400 {
        if agent.log().contains(needle) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("the agent never logged {needle:?}:\n{}", agent.log());
}

pub fn allocatable(resources: &BTreeMap<String, ResourceView>, name: &str) -> usize {
    resources.get(name).map_or(0, ResourceView::allocatable)
}
