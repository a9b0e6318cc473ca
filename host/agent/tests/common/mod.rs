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

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
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

/// A component whose one function is built to make the compiler (Cranelift) take time and memory
/// growing with the square of `locals`: that many locals, each assigned in its own branch inside
/// a loop, so every local is live across every branch. 2,000 locals (26 KB) need about 130 MB
/// and half a second of CPU, 6,000 (78 KB) about 1 GB and 3 s. It is no policy: compiling it is
/// the point.
pub fn compiler_bomb(locals: u32) -> Vec<u8> {
    fn leb(mut n: u32, out: &mut Vec<u8>) {
        loop {
            let low = (n & 0x7f) as u8;
            n >>= 7;
            out.push(if n > 0 { low | 0x80 } else { low });
            if n == 0 {
                break;
            }
        }
    }
    fn section(id: u8, payload: &[u8], out: &mut Vec<u8>) {
        out.push(id);
        leb(u32::try_from(payload.len()).unwrap(), out);
        out.extend_from_slice(payload);
    }
    let mut body = Vec::new();
    // One group of `locals` i64 locals.
    leb(1, &mut body);
    leb(locals, &mut body);
    body.push(0x7e);
    // loop
    body.extend_from_slice(&[0x03, 0x40]);
    for i in 0..locals {
        // local.get i; i32.wrap_i64; if; local.get i+1; local.set i; end
        body.push(0x20);
        leb(i, &mut body);
        body.extend_from_slice(&[0xa7, 0x04, 0x40, 0x20]);
        leb((i + 1) % locals, &mut body);
        body.push(0x21);
        leb(i, &mut body);
        body.push(0x0b);
    }
    // br 0; end (loop); end (function)
    body.extend_from_slice(&[0x0c, 0x00, 0x0b, 0x0b]);
    let mut code = Vec::new();
    leb(1, &mut code);
    leb(u32::try_from(body.len()).unwrap(), &mut code);
    code.extend_from_slice(&body);
    let mut module = b"\0asm\x01\0\0\0".to_vec();
    // One type () -> (), one function of it, its code.
    section(1, &[1, 0x60, 0, 0], &mut module);
    section(3, &[1, 0], &mut module);
    section(10, &code, &mut module);
    let mut component = b"\0asm\x0d\0\x01\0".to_vec();
    section(1, &module, &mut component);
    component
}
