//! Step 4: the real `vfpool-cni` plugs the pod's VF into a pod network namespace.
//!
//! Everything happens inside a network namespace the demo creates to stand in for the node, so
//! the simulated node's interface names (`ens1f0`, `ens1f0v0`) can never meet this machine's
//! links: in it, veths stand in for the PF and the VF (the CNI plugin reads the PF's VF table and
//! moves the VF's netdev, which a veth end allows), and the plugin runs there via
//! `ip netns exec`, the way Multus runs it in the host namespace on a real node.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use crate::output::say;

/// Where Debian's containernetworking-plugins installs `host-local`.
pub const CNI_PLUGIN_DIR: &str = "/usr/lib/cni";
/// The pod network's subnet (the one upstream's sriov-cni examples use).
const SUBNET: &str = "10.56.217.0/24";
const GATEWAY: &str = "10.56.217.1";

/// Network namespaces the demo created; deleting them removes every link in them.
#[derive(Debug, Default)]
pub struct Namespaces {
    names: Vec<String>,
}

impl Namespaces {
    /// Creates a named network namespace and remembers it for clean-up.
    pub fn add(&mut self, name: &str) -> anyhow::Result<()> {
        run(&["ip", "netns", "add", name])?;
        self.names.push(name.to_string());
        Ok(())
    }

    /// The namespaces still there.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Deletes them all (pod namespace first); returns the ones deleted.
    pub fn delete_all(&mut self) -> anyhow::Result<Vec<String>> {
        let mut deleted = Vec::new();
        let mut errors = Vec::new();
        while let Some(name) = self.names.pop() {
            match run(&["ip", "netns", "del", &name]) {
                Ok(_) => deleted.push(name),
                Err(e) => errors.push(format!("{e:#}")),
            }
        }
        if !errors.is_empty() {
            bail!("{}", errors.join("; "));
        }
        Ok(deleted)
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        let _ = self.delete_all();
    }
}

/// Runs a command; its stdout, or an error with its output.
fn run(args: &[&str]) -> anyhow::Result<String> {
    let (program, rest) = args.split_first().context("empty command")?;
    let out = Command::new(program)
        .args(rest)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {program}"))?;
    if !out.status.success() {
        bail!(
            "`{}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Why the CNI step cannot run here, or `None` when it can. `cni` is the plugin binary.
pub fn cannot_run(cni: &Path) -> Option<String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Some(
            "it needs root (network namespaces); run the demo as root to see it".to_string(),
        );
    }
    if run(&["ip", "-V"]).is_err() {
        return Some("the `ip` command is missing (Debian: apt-get install iproute2)".to_string());
    }
    let host_local = Path::new(CNI_PLUGIN_DIR).join("host-local");
    if !host_local.exists() {
        return Some(format!(
            "{} is missing (Debian: apt-get install containernetworking-plugins)",
            host_local.display()
        ));
    }
    if !cni.exists() {
        let release = cni
            .parent()
            .and_then(Path::file_name)
            .is_some_and(|d| d == "release");
        return Some(format!(
            "vfpool-cni is not built next to this vfpool ({}); build it with `cargo build{} -p vfpool-cni` (`make demo` does)",
            cni.display(),
            if release { " --release" } else { "" }
        ));
    }
    None
}

/// What the step needs to know.
pub struct Plan<'a> {
    /// The plugin binary.
    pub cni: &'a Path,
    /// The demo's temporary directory.
    pub tmp: &'a Path,
    /// The simulated sysfs root.
    pub sysfs: &'a Path,
    /// The VF's PCI address (from the allocation).
    pub vf: &'a str,
    /// Its netdev name in sysfs.
    pub vf_netdev: &'a str,
    /// Its PF's netdev name in sysfs.
    pub pf_netdev: &'a str,
    /// The resource the pod got it from.
    pub resource: &'a str,
    /// The pod (container id for CNI).
    pub pod: &'a str,
}

/// Runs the step; prints as it goes. `Ok(false)` when it had to be skipped (the reason printed).
pub fn step(plan: &Plan<'_>, namespaces: &mut Namespaces) -> anyhow::Result<bool> {
    let pid = std::process::id();
    let node = format!("vfpool-demo-{pid}-node");
    let pod = format!("vfpool-demo-{pid}-pod");
    let ip = |args: &[&str]| -> anyhow::Result<String> {
        let mut full = vec!["ip", "-n", node.as_str()];
        full.extend_from_slice(args);
        run(&full)
    };
    // The stand-ins: the PF (the plugin reads its VF table through netlink) and the VF's netdev,
    // each a veth whose other end stays up in the node namespace (so the VF has carrier in the
    // pod). A machine that cannot do this (a container without the privilege, no veth support)
    // skips the step; the plugin's own failures are failures.
    let mut setup = || -> anyhow::Result<Value> {
        namespaces.add(&node)?;
        namespaces.add(&pod)?;
        for (link, peer) in [(plan.pf_netdev, "pf-wire"), (plan.vf_netdev, "vf-wire")] {
            ip(&["link", "add", link, "type", "veth", "peer", "name", peer])?;
        }
        for link in [plan.pf_netdev, "pf-wire", "vf-wire"] {
            ip(&["link", "set", link, "up"])?;
        }
        link_json(&ip(&["-j", "link", "show", "dev", plan.vf_netdev])?)
    };
    let before = match setup() {
        Ok(before) => before,
        Err(e) => {
            say!("   skipped: cannot set up network namespaces and veths here ({e:#})");
            return Ok(false);
        }
    };
    let mac = before["address"].as_str().unwrap_or("?").to_string();
    say!(
        "   In network namespace {node} (standing in for the node, so these names never meet this machine's links):"
    );
    say!(
        "   veths named {} (the PF) and {} (VF {}, MAC {mac}); the pod's namespace is {pod}.",
        plan.pf_netdev,
        plan.vf_netdev,
        plan.vf
    );

    let ipam_dir = plan.tmp.join("cni/host-local");
    let state_dir = plan.tmp.join("cni/state");
    let conf = json!({
        "cniVersion": "1.0.0",
        "name": "sriov-net1",
        "type": "sriov",
        "deviceID": plan.vf,
        "ipam": {
            "type": "host-local",
            "subnet": SUBNET,
            "gateway": GATEWAY,
            "dataDir": ipam_dir,
        }
    });
    say!(
        "   Multus finds the NetworkAttachmentDefinition for {} (annotation k8s.v1.cni.cncf.io/resourceName),",
        plan.resource
    );
    say!("   adds the pod's deviceID and calls the plugin (`type: sriov`) with:");
    say!("     {conf}");

    let netns_path = format!("/run/netns/{pod}");
    let env = CniEnv {
        cni: plan.cni,
        node: &node,
        netns: &netns_path,
        container: plan.pod,
        sysfs: plan.sysfs,
        state_dir: &state_dir,
    };
    let started = Instant::now();
    let add = env.call("ADD", &conf)?;
    let add_ms = started.elapsed().as_millis();
    let address = add["ips"][0]["address"].as_str().unwrap_or("?").to_string();
    say!(
        "   vfpool-cni ADD: ok in {add_ms} ms, net1 got {address} from host-local. The pod's `ip addr show net1`:"
    );
    let addr = run(&["ip", "-n", &pod, "addr", "show", "dev", "net1"])?;
    for line in addr.lines().filter(|l| !l.contains("valid_lft")) {
        say!("     {line}");
    }

    let mut del_conf = conf.clone();
    del_conf["prevResult"] = add;
    let started = Instant::now();
    env.call("DEL", &del_conf)?;
    let del_ms = started.elapsed().as_millis();
    let back = link_json(&ip(&["-j", "link", "show", "dev", plan.vf_netdev])?)?;
    let back_mac = back["address"].as_str().unwrap_or("?");
    let pod_has_net1 = run(&["ip", "-n", &pod, "link", "show", "dev", "net1"]).is_ok();
    let leases = leases(&ipam_dir.join("sriov-net1"));
    say!(
        "   vfpool-cni DEL: ok in {del_ms} ms; {} is back in the node namespace (MAC {back_mac}{}), \
         the pod has {}, host-local holds {}.",
        plan.vf_netdev,
        if back_mac == mac {
            ", as before"
        } else {
            ", CHANGED"
        },
        if pod_has_net1 {
            "net1 still"
        } else {
            "no net1"
        },
        if leases.is_empty() {
            "no address".to_string()
        } else {
            leases.join(", ")
        }
    );
    if pod_has_net1 || back_mac != mac || !leases.is_empty() {
        bail!("the VF did not come back as it was before ADD");
    }
    Ok(true)
}

fn link_json(text: &str) -> anyhow::Result<Value> {
    let value: Value = serde_json::from_str(text).context("`ip -j link` printed no JSON")?;
    Ok(value.get(0).cloned().unwrap_or(Value::Null))
}

/// The addresses host-local has handed out (files named after the address).
fn leases(dir: &Path) -> Vec<String> {
    let mut ips: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
                .collect()
        })
        .unwrap_or_default();
    ips.sort();
    ips
}

/// The CNI environment a container runtime would set, for the plugin run in the node namespace.
struct CniEnv<'a> {
    cni: &'a Path,
    node: &'a str,
    netns: &'a str,
    container: &'a str,
    sysfs: &'a Path,
    state_dir: &'a PathBuf,
}

impl CniEnv<'_> {
    /// Runs `CNI_COMMAND=command` with `conf` on stdin; the parsed result (Null when empty).
    fn call(&self, command: &str, conf: &Value) -> anyhow::Result<Value> {
        use std::os::unix::process::CommandExt as _;
        let mut child = Command::new("ip")
            .args(["netns", "exec", self.node])
            .arg(self.cni)
            .env_clear()
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", self.container)
            .env("CNI_NETNS", self.netns)
            .env("CNI_IFNAME", "net1")
            .env("CNI_PATH", CNI_PLUGIN_DIR)
            .env("VFPOOL_SYSFS_ROOT", self.sysfs)
            .env("VFPOOL_CNI_STATE_DIR", self.state_dir)
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // A Ctrl-C reaches the demo, which cleans up after the plugin has finished.
            .process_group(0)
            .spawn()
            .context("cannot run vfpool-cni through `ip netns exec`")?;
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(conf.to_string().as_bytes());
        }
        let out = child
            .wait_with_output()
            .context("cannot wait for vfpool-cni")?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let result: Value = if stdout.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&stdout)
                .with_context(|| format!("vfpool-cni {command} printed no JSON: {stdout}"))?
        };
        if !out.status.success() {
            bail!(
                "vfpool-cni {command} failed ({}): {} {}",
                out.status,
                result,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(result)
    }
}
