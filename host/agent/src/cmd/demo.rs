//! `vfpool demo`: the whole chain on a temporary simulated node, for a newcomer.
//!
//! Every answer it prints comes from the real parts: the simulated node's sysfs tree read by the
//! real discovery, the real agent (`vfpool run`, a child process of this executable) speaking the
//! kubelet device-plugin API over unix sockets to the in-process kubelet simulator, the real
//! `vfpool-cni` binary in network namespaces, and policy hot swap observed in the agent's own log.
//! Everything it creates lives in one temporary directory and (for the CNI step) two network
//! namespaces, and is removed at the end, on failure and on Ctrl-C, SIGTERM, SIGHUP (the terminal or
//! ssh session closed) and SIGQUIT.

mod agent;
mod cni;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tokio::signal::unix::{Signal, SignalKind, signal};
use vfpool_kubelet_sim::{KubeletSim, PodAllocation, ResourceView, SimOptions};
use vfpool_sysfs::sim::{self, Fixture};
use vfpool_sysfs::{DeviceKind, Inventory, SysfsRoot};

use self::agent::AgentChild;
use self::cni::Namespaces;
use crate::cli::DemoArgs;
use crate::exit::{CmdResult, Code, Failure, WithCode};
use crate::output::{complain, say};

/// The shipped fixture the demo node is written from.
const FIXTURE: &str = "demo";
/// Prefix for the pools (upstream's default).
const PREFIX: &str = "intel.com";
/// The operator's config, in the upstream device plugin's format.
const CONFIG: &str = r#"{"resourceList": [
  {"resourceName": "mlnx_sriov", "selectors": {"vendors": ["15b3"], "devices": ["1018"], "drivers": ["mlx5_core"]}},
  {"resourceName": "intel_sriov_netdevice", "selectors": {"vendors": ["8086"], "devices": ["154c"], "drivers": ["iavf"]}},
  {"resourceName": "intel_sriov_dpdk", "selectors": {"vendors": ["8086"], "devices": ["154c"], "drivers": ["vfio-pci"]}}
]}
"#;
/// The pool the demo's pods ask for, and how many devices.
const POOL: &str = "mlnx_sriov";
const POD_SIZE: usize = 2;
/// Guards against hangs (never reached when things work: each wait is on observed state).
const GUARD: Duration = Duration::from_secs(60);

pub fn run(args: &DemoArgs) -> CmdResult {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .code(Code::Failure)?;
    runtime.block_on(demo(args))
}

/// Everything the demo created, for clean-up in reverse order.
#[derive(Default)]
struct Created {
    tmp: Option<tempfile::TempDir>,
    sim: Option<KubeletSim>,
    agent: Option<AgentChild>,
    namespaces: Namespaces,
}

/// How the steps ended when they did not finish.
enum Stop {
    Signal(&'static str),
    Failed(anyhow::Error),
}

/// The signals that stop the demo. Each of them would otherwise end the process on the spot and
/// leave everything behind: Ctrl-C, SIGTERM, SIGHUP (the terminal or ssh session closed: the most
/// common way a `--keep` demo ends) and SIGQUIT (Ctrl-\).
struct Stops {
    interrupt: Signal,
    terminate: Signal,
    hangup: Signal,
    quit: Signal,
    /// Whether stdout and stderr were terminals when the demo started (a hung-up terminal no
    /// longer says it is one).
    terminal: (bool, bool),
}

impl Stops {
    fn new() -> std::io::Result<Stops> {
        use std::io::IsTerminal as _;
        Ok(Stops {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
            hangup: signal(SignalKind::hangup())?,
            quit: signal(SignalKind::quit())?,
            terminal: (
                std::io::stdout().is_terminal(),
                std::io::stderr().is_terminal(),
            ),
        })
    }

    /// Waits for the next stop signal and names it.
    async fn recv(&mut self) -> &'static str {
        let which = tokio::select! {
            _ = self.interrupt.recv() => "Ctrl-C",
            _ = self.terminate.recv() => "SIGTERM",
            _ = self.hangup.recv() => "SIGHUP",
            _ = self.quit.recv() => "SIGQUIT",
        };
        if which == "SIGHUP" {
            self.leave_hung_up_terminal();
        }
        which
    }

    /// After a hang-up, writing to the terminal fails (EIO), and the clean-up's report of what it
    /// removed is for nobody: what went to the terminal goes nowhere from now on. Output that is
    /// not a terminal (a file, a pipe) is kept.
    fn leave_hung_up_terminal(&self) {
        let Ok(null) = fs::OpenOptions::new().write(true).open("/dev/null") else {
            return;
        };
        if self.terminal.0 {
            let _ = nix::unistd::dup2_stdout(&null);
        }
        if self.terminal.1 {
            let _ = nix::unistd::dup2_stderr(&null);
        }
    }
}

async fn demo(args: &DemoArgs) -> CmdResult {
    let mut stops = Stops::new().code(Code::Failure)?;
    let started = Instant::now();
    let mut created = Created::default();
    let mut outcome = tokio::select! {
        result = steps(&mut created) => result.map_err(Stop::Failed),
        which = stops.recv() => Err(Stop::Signal(which)),
    };
    let took = started.elapsed();
    if outcome.is_ok() && args.keep {
        keep_instructions(&created);
        stops.recv().await;
        say!();
    }
    match &outcome {
        Ok(()) => {}
        Err(Stop::Signal(which)) => say!("\n{which}: stopping the demo and cleaning up."),
        Err(Stop::Failed(error)) => {
            complain!("\nthe demo failed: {error:#}");
            if let Some(agent) = &created.agent {
                complain!(
                    "the agent's log ({}):\n{}",
                    agent.log_path().display(),
                    agent.log()
                );
            }
        }
    }
    heading(6, "Clean-up");
    let cleaned = match cleanup(&mut created) {
        Ok(()) => true,
        Err(e) => {
            say!("   clean-up incomplete: {e:#}");
            if outcome.is_ok() {
                outcome = Err(Stop::Failed(e));
            }
            false
        }
    };
    match outcome {
        Ok(()) => {
            if args.keep {
                say!("\nDone. Nothing of the demo is left on this machine.");
            } else {
                say!(
                    "\nDone in {:.1} s. Nothing of the demo is left on this machine.",
                    took.as_secs_f64()
                );
            }
            // Reported only now: a failed write must not have stopped the clean-up.
            crate::output::said()
        }
        Err(Stop::Signal(which)) => Err(Failure {
            code: Code::Failure,
            error: anyhow::anyhow!(
                "interrupted by {which}; {}",
                if cleaned {
                    "everything the demo created is removed"
                } else {
                    "the clean-up above is incomplete"
                }
            ),
        }),
        Err(Stop::Failed(error)) => Err(Failure {
            code: Code::Failure,
            error,
        }),
    }
}

fn heading(n: u32, title: &str) {
    say!("\n{n}. {title}");
}

/// Paths inside the demo's temporary directory.
struct Paths {
    root: PathBuf,
}

impl Paths {
    fn sysfs(&self) -> PathBuf {
        self.root.join("sys")
    }
    fn kubelet(&self) -> PathBuf {
        self.root.join("kubelet")
    }
    fn devinfo(&self) -> PathBuf {
        self.root.join("devinfo")
    }
    fn policies(&self) -> PathBuf {
        self.root.join("policies")
    }
    fn config(&self) -> PathBuf {
        self.root.join("etc/config.json")
    }
    fn log(&self) -> PathBuf {
        self.root.join("agent.log")
    }
}

async fn steps(created: &mut Created) -> anyhow::Result<()> {
    say!(
        "vfpool demo: the whole chain on a temporary simulated node, with the real agent, the kubelet\n\
         device-plugin protocol (gRPC over unix sockets, to a kubelet simulator) and the real CNI plugin.\n\
         Nothing here touches this machine's devices or its network."
    );
    let exe = std::env::current_exe().context("cannot find this executable")?;
    let tmp = tempfile::Builder::new()
        .prefix("vfpool-demo-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    let paths = Paths {
        root: tmp.path().to_path_buf(),
    };
    created.tmp = Some(tmp);

    // 1. Discovery.
    let fixture = Fixture::load(FIXTURE)?;
    sim::write_tree(&fixture, &paths.sysfs())?;
    let inventory = vfpool_sysfs::discover(&SysfsRoot::new(paths.sysfs()))?;
    heading(1, "Discovery");
    say!(
        "   A simulated node from the shipped fixture {FIXTURE:?} ({}),",
        fixture.description
    );
    say!(
        "   written to {} and read back by vfpool's discovery (`vfpool discover --sysfs-root`):",
        paths.sysfs().display()
    );
    print_pf_table(&inventory);

    // 2. The agent and kubelet.
    fs::create_dir_all(paths.root.join("etc"))?;
    fs::write(paths.config(), CONFIG)?;
    fs::create_dir_all(paths.policies())?;
    let pools = pool_names(CONFIG)?;
    let sim = &*created.sim.insert(
        // Registration through `device-plugins/kubelet.sock` (the legacy mode), so that kubelet's
        // socket and the pools' are in the one directory the directions point at.
        KubeletSim::start(&paths.kubelet(), SimOptions::LEGACY)
            .await
            .context("cannot start the kubelet simulator")?,
    );
    let agent_args: Vec<OsString> = vec![
        "--sysfs-root".into(),
        paths.sysfs().into(),
        "--config-file".into(),
        paths.config().into(),
        "--resource-prefix".into(),
        PREFIX.into(),
        "--kubelet-dir".into(),
        paths.kubelet().into(),
        "--devinfo-dir".into(),
        paths.devinfo().into(),
        "--policy-dir".into(),
        paths.policies().into(),
        "--log-level".into(),
        "info".into(),
    ];
    let started = Instant::now();
    let agent = created
        .agent
        .insert(AgentChild::spawn(&exe, &agent_args, &paths.log())?);
    heading(2, "The agent registers its pools with kubelet");
    say!(
        "   `vfpool run` (pid {}) with the embedded default policies and this config (upstream's format):",
        agent.pid()
    );
    for line in CONFIG.lines() {
        say!("     {line}");
    }
    say!(
        "   (On a real node the agent runs as a DaemonSet pod and registers with the node's kubelet; here\n   \
         kubelet is a simulator inside this process, reached over the same unix sockets and gRPC API.)"
    );
    let resources = tokio::select! {
        r = sim.wait_for("the three pools", GUARD, |r| {
            pools.iter().all(|p| r.get(p).is_some_and(|v| v.connected))
        }) => r?,
        e = exits(agent) => return Err(e),
    };
    let allocator = agent
        .wait_for_log("the agent's policies", 0, GUARD, agent::activated_allocator)
        .await?;
    let modes: BTreeSet<&str> = resources.values().map(|v| v.mode).collect();
    say!(
        "   It registered {} pools with the kubelet simulator in {:.1} s ({} registration, one socket each in {}).",
        resources.len(),
        started.elapsed().as_secs_f64(),
        modes.into_iter().collect::<Vec<_>>().join(", "),
        paths.kubelet().join("device-plugins").display()
    );
    say!(
        "   The node's allocatable, as `kubectl get node -o json | jq .status.allocatable` would show it:"
    );
    let allocatable: BTreeMap<&String, String> = resources
        .iter()
        .map(|(name, view)| (name, view.allocatable().to_string()))
        .collect();
    for line in serde_json::to_string_pretty(&allocatable)?.lines() {
        say!("     {line}");
    }

    // 3. A pod.
    let resource = format!("{PREFIX}/{POOL}");
    let view = resources
        .get(&resource)
        .with_context(|| format!("{resource} is not served"))?;
    heading(
        3,
        &format!("A pod asks for {resource}: {POD_SIZE} (the scheduler picked this node)"),
    );
    let pod = sim
        .allocate_pod("pod-1", &resource, POD_SIZE)
        .await
        .context("kubelet's allocation for pod-1")?;
    say!(
        "   kubelet asks the agent GetPreferredAllocation; the allocator policy ({allocator}) prefers:"
    );
    print_devices(&inventory, view, preferred(&pod)?);
    let (pfs, numas) = spread_of(&inventory, view, &pod.device_ids);
    let first_pfs = pfs.len();
    say!(
        "   -> {} PF{} ({}), {} NUMA node{} ({}).",
        if pfs.len() == 1 { "the same" } else { "across" },
        if pfs.len() == 1 { "" } else { "s" },
        pfs.iter().cloned().collect::<Vec<_>>().join(", "),
        if numas.len() == 1 {
            "the same"
        } else {
            "across"
        },
        if numas.len() == 1 { "" } else { "s" },
        numas.iter().cloned().collect::<Vec<_>>().join(", "),
    );
    say!("   kubelet calls Allocate with them; the container gets these environment variables:");
    let envs: BTreeMap<&String, &String> = pod.response.envs.iter().collect();
    for (name, value) in envs {
        say!("     {name}={value}");
    }
    let specs: Vec<String> = pod
        .response
        .devices
        .iter()
        .map(|d| format!("{} -> {}", d.host_path, d.container_path))
        .collect();
    let mounts: Vec<String> = pod
        .response
        .mounts
        .iter()
        .map(|m| format!("{} -> {}", m.host_path, m.container_path))
        .collect();
    let listed = |items: Vec<String>| {
        if items.is_empty() {
            "none".to_string()
        } else {
            items.join(", ")
        }
    };
    say!(
        "   device nodes: {}; mounts: {}",
        listed(specs),
        listed(mounts)
    );
    say!(
        "   and the agent wrote the device-info files Multus and the CNI plugin read ({}):",
        paths.devinfo().display()
    );
    for name in dir_names(&paths.devinfo()) {
        say!("     {name}");
    }

    // 4. The CNI plugin.
    heading(4, "The pod's network: vfpool-cni moves the VF into the pod");
    // The first the allocator preferred (kubelet's Allocate order is a set's: arbitrary).
    let vf_id = preferred(&pod)?.first().context("the pod got no device")?;
    let vf = inventory
        .get(vf_id)
        .with_context(|| format!("{vf_id} is not in the discovered inventory"))?;
    let cni_bin = exe.with_file_name("vfpool-cni");
    match cni::cannot_run(&cni_bin) {
        Some(reason) => say!("   skipped: {reason}"),
        None => {
            let plan = cni::Plan {
                cni: &cni_bin,
                tmp: &paths.root,
                sysfs: &paths.sysfs(),
                vf: vf_id,
                vf_netdev: vf.netdev.as_deref().context("the VF has no netdev")?,
                pf_netdev: vf.pf_name.as_deref().context("the VF has no PF netdev")?,
                resource: &resource,
                pod: "pod-1",
            };
            cni::step(&plan, &mut created.namespaces)?;
        }
    }

    // 5. Hot swap.
    heading(
        5,
        "Hot swap: a different allocator policy, then a half-copied one",
    );
    let from = agent.log().len();
    install(
        &paths.policies(),
        "spread.wasm",
        vfpool_policy::defaults::SPREAD_ALLOCATOR,
    )?;
    say!(
        "   spread.wasm (the spread allocator example: one device per PF in turn) copied into {}",
        paths.policies().display()
    );
    let swapped = agent
        .wait_for_log("the agent to take spread.wasm", from, GUARD, |line| {
            if line.contains("policy reload refused") {
                Some(Err(line.to_string()))
            } else {
                agent::activated_allocator(line).map(Ok)
            }
        })
        .await?;
    let swapped =
        swapped.map_err(|line| anyhow::anyhow!("the agent refused spread.wasm: {line}"))?;
    say!(
        "   The agent validated it and swapped it in (log: policies activated, allocator {swapped:?})."
    );
    let next = sim
        .allocate_pod("pod-2", &resource, POD_SIZE)
        .await
        .context("kubelet's allocation for pod-2")?;
    say!("   The next pod asking for {resource}: {POD_SIZE} is preferred:");
    print_devices(&inventory, view, preferred(&next)?);
    let (pfs, _) = spread_of(&inventory, view, &next.device_ids);
    say!(
        "   -> {} ({}), where {allocator} put pod-1 on {}.",
        if pfs.len() > 1 {
            format!("spread across {} PFs", pfs.len())
        } else {
            "one PF".to_string()
        },
        pfs.iter().cloned().collect::<Vec<_>>().join(", "),
        if first_pfs == 1 {
            "one PF".to_string()
        } else {
            format!("{first_pfs} PFs")
        }
    );

    let from = agent.log().len();
    // A half-written module, as an interrupted copy leaves it: ignored with a message (never
    // loaded, read again when it changes), and the previous policies keep serving.
    let spread = vfpool_policy::defaults::SPREAD_ALLOCATOR;
    install(
        &paths.policies(),
        "broken.wasm",
        spread.get(..spread.len() / 2).unwrap_or_default(),
    )?;
    say!(
        "   broken.wasm (spread.wasm cut off half-way, as an interrupted copy leaves it) dropped in as well."
    );
    let reason = agent
        .wait_for_log(
            "the agent to judge broken.wasm",
            from,
            GUARD,
            |line| match line.split_once("policy directory: ") {
                Some((_, reason)) if line.contains("broken.wasm") => Some(Ok(reason.to_string())),
                _ => agent::activated_allocator(line).map(Err),
            },
        )
        .await?
        .map_err(|name| anyhow::anyhow!("the agent activated {name:?} with broken.wasm present"))?;
    say!(
        "   The agent ignored it (a module that is not whole is never loaded; it is read again when it changes), and the previous policies keep serving:"
    );
    say!("     {reason}");
    let last = sim
        .allocate_pod("pod-3", &resource, POD_SIZE)
        .await
        .context("kubelet's allocation for pod-3")?;
    let (pfs, _) = spread_of(&inventory, view, &last.device_ids);
    say!(
        "   The next pod is preferred {} -> {}: spread.wasm still serves.",
        preferred(&last)?.join(", "),
        if pfs.len() > 1 {
            format!("across {} PFs", pfs.len())
        } else {
            "one PF".to_string()
        }
    );
    agent.check_alive()?;
    Ok(())
}

/// Resolves when the agent has exited (polling), with the error to report.
async fn exits(agent: &mut AgentChild) -> anyhow::Error {
    loop {
        if let Err(e) = agent.check_alive() {
            return e;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The fully qualified pool names the config asks for.
fn pool_names(config: &str) -> anyhow::Result<Vec<String>> {
    let doc: serde_json::Value = serde_json::from_str(config)?;
    let list = doc["resourceList"]
        .as_array()
        .context("the demo config has no resourceList")?;
    list.iter()
        .map(|r| {
            r["resourceName"]
                .as_str()
                .map(|n| format!("{PREFIX}/{n}"))
                .context("a resource without a name")
        })
        .collect()
}

/// Writes a policy file the way an operator should: elsewhere (a hidden name the agent skips),
/// then renamed into place.
fn install(dir: &Path, name: &str, bytes: &[u8]) -> anyhow::Result<()> {
    let staging = dir.join(format!(".{name}.tmp"));
    fs::write(&staging, bytes).with_context(|| format!("cannot write {}", staging.display()))?;
    fs::rename(&staging, dir.join(name))
        .with_context(|| format!("cannot install {name} in {}", dir.display()))
}

/// Whether two lists name the same devices (kubelet sends Allocate a set, in no set order).
fn same_devices(a: &[String], b: &[String]) -> bool {
    a.iter().collect::<BTreeSet<_>>() == b.iter().collect::<BTreeSet<_>>()
}

fn preferred(pod: &PodAllocation) -> anyhow::Result<&[String]> {
    match &pod.preferred {
        Some(ids) if same_devices(ids, &pod.device_ids) => Ok(ids),
        Some(ids) => bail!(
            "the agent preferred {ids:?}, which kubelet could not use; it allocated {:?}",
            pod.device_ids
        ),
        None => bail!("the agent does not offer GetPreferredAllocation"),
    }
}

/// The NUMA nodes kubelet was told for a device (ListAndWatch topology).
fn numa_of(view: &ResourceView, id: &str) -> String {
    view.devices.get(id).map_or_else(
        || "?".to_string(),
        |d| {
            d.numa
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(",")
        },
    )
}

fn print_devices(inventory: &Inventory, view: &ResourceView, ids: &[String]) {
    for id in ids {
        let device = inventory.get(id);
        say!(
            "     {id}  netdev {:<9} VF {:<2} of PF {:<7} NUMA node {}",
            device.and_then(|d| d.netdev.as_deref()).unwrap_or("-"),
            device
                .and_then(|d| d.vf_index)
                .map_or_else(|| "?".to_string(), |i| i.to_string()),
            device.and_then(|d| d.pf_name.as_deref()).unwrap_or("?"),
            numa_of(view, id)
        );
    }
}

/// The PFs (from sysfs) and NUMA nodes (as the agent reported them to kubelet) of `ids`.
fn spread_of(
    inventory: &Inventory,
    view: &ResourceView,
    ids: &[String],
) -> (BTreeSet<String>, BTreeSet<String>) {
    let pfs = ids
        .iter()
        .map(|id| {
            inventory
                .get(id)
                .and_then(|d| d.pf_name.clone())
                .unwrap_or_else(|| "?".to_string())
        })
        .collect();
    let numas = ids.iter().map(|id| numa_of(view, id)).collect();
    (pfs, numas)
}

fn print_pf_table(inventory: &Inventory) {
    let mut rows = vec![[
        "PF".to_string(),
        "ADDRESS".to_string(),
        "VENDOR:DEVICE".to_string(),
        "DRIVER".to_string(),
        "NUMA".to_string(),
        "VFS".to_string(),
        "VF DRIVERS".to_string(),
    ]];
    for pf in inventory
        .devices
        .iter()
        .filter(|d| d.kind == DeviceKind::Pf)
    {
        let mut drivers: BTreeMap<String, usize> = BTreeMap::new();
        for vf in &pf.vfs {
            let driver = inventory
                .get(&vf.id)
                .and_then(|d| d.driver.clone())
                .unwrap_or_else(|| "none".to_string());
            *drivers.entry(driver).or_default() += 1;
        }
        rows.push([
            pf.netdev.clone().unwrap_or_else(|| "-".to_string()),
            pf.id.clone(),
            format!(
                "{}:{}",
                pf.vendor.as_deref().unwrap_or("?"),
                pf.device.as_deref().unwrap_or("?")
            ),
            pf.driver.clone().unwrap_or_else(|| "-".to_string()),
            pf.numa_node
                .map_or_else(|| "-".to_string(), |n| n.to_string()),
            pf.vfs.len().to_string(),
            drivers
                .iter()
                .map(|(d, n)| format!("{n} {d}"))
                .collect::<Vec<_>>()
                .join(", "),
        ]);
    }
    let mut widths = [0usize; 7];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    for row in &rows {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        say!("     {}", line.join("  ").trim_end());
    }
}

fn dir_names(dir: &Path) -> Vec<String> {
    dir_names_where(dir, |_| true)
}

fn socket_names(dir: &Path) -> Vec<String> {
    use std::os::unix::fs::FileTypeExt as _;
    dir_names_where(dir, |t| t.is_socket())
}

/// The sorted names in `dir` whose file type `keep` keeps.
fn dir_names_where(dir: &Path, keep: impl Fn(fs::FileType) -> bool) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_type().is_ok_and(&keep))
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Stops and removes everything, in reverse order of creation, saying what it did.
fn cleanup(created: &mut Created) -> anyhow::Result<()> {
    let mut problems = Vec::new();
    if let Some(mut agent) = created.agent.take() {
        let pid = agent.pid();
        match agent.stop() {
            Ok(Some(status)) => {
                let root = created.tmp.as_ref().map(|t| t.path().to_path_buf());
                // kubelet keeps its checkpoint file there too.
                let sockets: Vec<String> = root
                    .as_ref()
                    .map(|r| socket_names(&r.join("kubelet/device-plugins")))
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|n| n != "kubelet.sock")
                    .collect();
                let devinfo = root
                    .as_ref()
                    .map(|r| dir_names(&r.join("devinfo")))
                    .unwrap_or_default();
                let status_text = status
                    .code()
                    .map_or_else(|| status.to_string(), |c| format!("exit code {c}"));
                say!(
                    "   agent (pid {pid}) stopped by SIGTERM: {status_text}; plugin sockets left: {}, device-info files left: {}",
                    sockets.len(),
                    devinfo.len()
                );
                if !status.success() {
                    problems.push(format!("the agent exited with {status}"));
                }
            }
            Ok(None) => {}
            Err(e) => problems.push(format!("{e:#}")),
        }
    }
    if let Some(sim) = created.sim.take() {
        sim.shutdown();
        say!("   kubelet simulator stopped, its sockets removed");
    }
    match created.namespaces.delete_all() {
        Ok(deleted) if !deleted.is_empty() => say!(
            "   network namespaces {} deleted, with the veths in them",
            deleted.join(" and ")
        ),
        Ok(_) => {}
        Err(e) => problems.push(format!("{e:#}")),
    }
    if let Some(tmp) = created.tmp.take() {
        let path = tmp.path().display().to_string();
        match tmp.close() {
            Ok(()) => say!("   {path} removed"),
            Err(e) => problems.push(format!("cannot remove {path}: {e}")),
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        bail!("{}", problems.join("; "))
    }
}

/// `--keep`: what is running and how to poke at it.
fn keep_instructions(created: &Created) {
    let Some(root) = created.tmp.as_ref().map(|t| t.path().to_path_buf()) else {
        return;
    };
    let exe =
        std::env::current_exe().map_or_else(|_| "vfpool".to_string(), |p| p.display().to_string());
    let paths = Paths { root };
    say!("\n--keep: the agent and the kubelet simulator keep running until you press Ctrl-C.");
    if fs::remove_file(paths.policies().join("broken.wasm")).is_ok() {
        say!(
            "   (broken.wasm is removed again, so that the policy directory holds only spread.wasm)"
        );
    }
    if let Some(agent) = &created.agent {
        say!(
            "   the agent: pid {}, its log: tail -f {}",
            agent.pid(),
            agent.log_path().display()
        );
    }
    say!(
        "   sockets (kubelet.sock and one per pool, device plugin API v1beta1): ls {}",
        paths.kubelet().join("device-plugins").display()
    );
    say!(
        "   what the policies make of the node: {exe} pools --sysfs-root {} --config-file {} --policy-dir {}",
        paths.sysfs().display(),
        paths.config().display(),
        paths.policies().display()
    );
    say!(
        "   every device: {exe} discover --sysfs-root {}",
        paths.sysfs().display()
    );
    say!(
        "   hot swap: drop a policy into {} (or remove spread.wasm and broken.wasm) and watch the log",
        paths.policies().display()
    );
    say!(
        "   config hot swap: edit {} (upstream's format)",
        paths.config().display()
    );
    say!("   device-info files: ls {}", paths.devinfo().display());
    for ns in created.namespaces.names() {
        say!("   network namespace: ip netns exec {ns} ip addr");
    }
}
