//! Real-parts test harness: network namespaces, veth pairs standing in for a PF and its VFs, a
//! simulated sysfs tree naming them, the Debian `host-local` IPAM plugin, and the real
//! `vfpool-cni` binary driven by env + stdin. Every name is unique per test and process, and every
//! resource is removed by a Drop guard, so tests run in parallel and leave nothing behind.

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// Where Debian's containernetworking-plugins installs host-local.
pub const CNI_PLUGIN_DIR: &str = "/usr/lib/cni";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A short name unique to this process and call: `<tag><pid % 100000><n>`, at most 15 bytes.
pub fn unique(tag: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let name = format!("{tag}{}x{n}", std::process::id() % 100_000);
    assert!(name.len() <= 15, "{name} is too long for an interface name");
    name
}

/// Runs a command, failing with its output when it fails.
pub fn sh(args: &[&str]) -> Result<String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .with_context(|| format!("running {args:?}"))?;
    if !out.status.success() {
        bail!(
            "{args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// True when the real-parts tests can run here (root, `ip`, host-local).
pub fn can_run() -> bool {
    sh(&["id", "-u"]).is_ok_and(|u| u.trim() == "0")
        && Path::new(&format!("{CNI_PLUGIN_DIR}/host-local")).exists()
        && sh(&["ip", "-V"]).is_ok()
}

/// Skips the calling test (with a message) when the machine cannot run real-parts tests.
#[macro_export]
macro_rules! require_root {
    () => {
        if !common::can_run() {
            // CI runs as root after `make setup`: a skip there would hide a broken setup.
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must run the real-parts tests: needs root, iproute2 and /usr/lib/cni/host-local"
            );
            eprintln!("skipping: needs root, iproute2 and /usr/lib/cni/host-local (run `make setup` as root)");
            return Ok(());
        }
    };
}

/// A named network namespace, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Result<Netns> {
        let name = unique(tag);
        sh(&["ip", "netns", "add", &name])?;
        Ok(Netns { name })
    }

    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// `ip -n <ns> ...`
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut full = vec!["ip", "-n", self.name.as_str()];
        full.extend_from_slice(args);
        sh(&full)
    }

    /// Deletes it now (as a runtime does when a pod dies before DEL).
    pub fn delete(&mut self) -> Result<()> {
        sh(&["ip", "netns", "del", &self.name])?;
        self.name.clear();
        Ok(())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if !self.name.is_empty() {
            let _ = sh(&["ip", "netns", "del", &self.name]);
        }
    }
}

/// A veth pair in the host namespace; deleting one end deletes both. Removed on drop from
/// wherever the named end went.
pub struct Veth {
    pub name: String,
    pub peer: String,
}

impl Veth {
    pub fn new(name: &str, peer: &str) -> Result<Veth> {
        sh(&[
            "ip", "link", "add", name, "type", "veth", "peer", "name", peer,
        ])?;
        Ok(Veth {
            name: name.to_owned(),
            peer: peer.to_owned(),
        })
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        let _ = sh(&["ip", "link", "del", &self.name]);
        let _ = sh(&["ip", "link", "del", &self.peer]);
    }
}

/// True when a link of that name exists in the host namespace.
pub fn host_has(name: &str) -> bool {
    sh(&["ip", "link", "show", "dev", name]).is_ok()
}

/// One simulated node: a PF (a veth end) with `vfs` VFs (veth ends whose peers sit in a "wire"
/// namespace), the sysfs tree that names them, a state dir and a host-local store.
pub struct Node {
    pub dir: tempfile::TempDir,
    pub pf: String,
    pub vf_netdevs: Vec<String>,
    pub vf_pci: Vec<String>,
    pub wire: Netns,
    _pf_veth: Veth,
    _vf_veths: Vec<Veth>,
    pub tag: String,
}

impl Node {
    pub fn new(vfs: u32) -> Result<Node> {
        let tag = unique("n");
        let pf = format!("{tag}p");
        let pf_veth = Veth::new(&pf, &format!("{tag}q"))?;
        let wire = Netns::new("w")?;
        let mut vf_netdevs = Vec::new();
        let mut vf_veths = Vec::new();
        for i in 0..vfs {
            let name = format!("{tag}v{i}");
            let peer = format!("{tag}w{i}");
            let veth = Veth::new(&name, &peer)?;
            sh(&["ip", "link", "set", &peer, "netns", &wire.name])?;
            wire.ip(&["link", "set", &peer, "up"])?;
            vf_netdevs.push(name);
            vf_veths.push(veth);
        }
        let dir = tempfile::tempdir()?;
        let fixture = format!(
            r#"
description = "cni test node"
[[function]]
address = "0000:3b:00.0"
vendor = "15b3"
device = "1017"
class = "020000"
driver = "mlx5_core"
netdevs = ["{pf}"]
total_vfs = 8
[function.vfs]
count = {vfs}
device = "1018"
driver = "mlx5_core"
netdev = "{tag}v{{index}}"
"#
        );
        let fixture = vfpool_sysfs::sim::Fixture::from_toml(&fixture, "cni-test")?;
        vfpool_sysfs::sim::write_tree(&fixture, &dir.path().join("sys"))?;
        let vf_pci = (0..vfs).map(|i| format!("0000:3b:00.{}", i + 1)).collect();
        Ok(Node {
            dir,
            pf,
            vf_netdevs,
            vf_pci,
            wire,
            _pf_veth: pf_veth,
            _vf_veths: vf_veths,
            tag,
        })
    }

    pub fn sysfs(&self) -> PathBuf {
        self.dir.path().join("sys")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn ipam_dir(&self) -> PathBuf {
        self.dir.path().join("host-local")
    }

    /// A NetConf for VF `vf` with host-local IPAM on 10.77.<subnet>.0/24.
    pub fn netconf(&self, vf: usize, extra: Value) -> Value {
        let mut conf = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": "sriov-test",
            "type": "sriov",
            "deviceID": self.vf_pci[vf],
            "ipam": {
                "type": "host-local",
                "dataDir": self.ipam_dir(),
                "ranges": [[{"subnet": "10.77.0.0/24", "gateway": "10.77.0.1"}]],
                "routes": [{"dst": "10.78.0.0/16"}]
            }
        });
        if let (Value::Object(c), Value::Object(e)) = (&mut conf, extra) {
            for (k, v) in e {
                if v.is_null() {
                    c.remove(&k);
                } else {
                    c.insert(k, v);
                }
            }
        }
        conf
    }

    /// Runs the plugin binary. Returns (exit ok, stdout parsed as JSON or Null when empty, stderr).
    pub fn cni(
        &self,
        command: &str,
        container: &str,
        netns: &str,
        ifname: &str,
        conf: &Value,
    ) -> Result<Outcome> {
        self.cni_raw(
            command,
            container,
            netns,
            ifname,
            conf.to_string().as_bytes(),
            &[],
        )
    }

    pub fn cni_raw(
        &self,
        command: &str,
        container: &str,
        netns: &str,
        ifname: &str,
        stdin: &[u8],
        extra_env: &[(&str, &str)],
    ) -> Result<Outcome> {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_vfpool-cni"));
        cmd.env_clear()
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", container)
            .env("CNI_NETNS", netns)
            .env("CNI_IFNAME", ifname)
            .env("CNI_PATH", CNI_PLUGIN_DIR)
            .env("VFPOOL_SYSFS_ROOT", self.sysfs())
            .env("VFPOOL_CNI_STATE_DIR", self.state_dir())
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        // A plugin may exit without reading stdin (a bad environment): that is its answer, not
        // a harness error.
        if let Err(e) = child.stdin.take().context("stdin")?.write_all(stdin)
            && e.kind() != std::io::ErrorKind::BrokenPipe
        {
            return Err(e.into());
        }
        let out = child.wait_with_output()?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let json = if stdout.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&stdout)
                .with_context(|| format!("stdout is not JSON: {stdout:?}"))?
        };
        Ok(Outcome {
            ok: out.status.success(),
            json,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// IPs host-local has handed out (files named after the IP in its store).
    pub fn allocated_ips(&self) -> Vec<String> {
        let dir = self.ipam_dir().join("sriov-test");
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        let mut ips: Vec<String> = entries
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
            .collect();
        ips.sort();
        ips
    }

    /// Files left in the state dir (cache and allocation markers), lock files excluded.
    pub fn state_files(&self) -> Vec<String> {
        let mut out = Vec::new();
        let root = self.state_dir();
        for sub in [root.clone(), root.join("pci")] {
            if let Ok(entries) = std::fs::read_dir(&sub) {
                for e in entries.flatten() {
                    if e.file_type().map(|t| t.is_file()).unwrap_or(false) {
                        out.push(e.file_name().to_string_lossy().into_owned());
                    }
                }
            }
        }
        out.sort();
        out
    }
}

/// The result of one plugin run.
#[derive(Debug)]
pub struct Outcome {
    pub ok: bool,
    pub json: Value,
    pub stderr: String,
}

impl Outcome {
    /// The CNI error code, if this is an error.
    pub fn code(&self) -> Option<u64> {
        if self.ok {
            None
        } else {
            self.json.get("code").and_then(Value::as_u64)
        }
    }

    pub fn msg(&self) -> String {
        self.json
            .get("msg")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    }
}

/// A link's (name, mac, mtu, up) as `ip -j link show` reports it, in the host or a netns.
pub fn link_facts(netns: Option<&Netns>, name: &str) -> Result<Value> {
    let text = match netns {
        Some(ns) => ns.ip(&["-j", "link", "show", "dev", name])?,
        None => sh(&["ip", "-j", "link", "show", "dev", name])?,
    };
    let v: Value = serde_json::from_str(&text)?;
    Ok(v[0].clone())
}
