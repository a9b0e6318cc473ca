//! End-to-end tests of `vfpool demo`: the real binary, run the way a newcomer runs it, checked
//! step by step from its output, and checked to leave nothing behind (temporary directories,
//! network namespaces, the agent process), also when interrupted and with `--keep`.
//!
//! The CNI step needs root, iproute2 and `/usr/lib/cni/host-local`; without them the demo skips
//! it (and these tests accept the skip), except under CI, where a skip is a failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const GUARD: Duration = Duration::from_secs(180);

/// True when the CNI step can run here (the CNI tests' rule).
fn can_run_cni() -> bool {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    root && Path::new("/usr/lib/cni/host-local").exists()
        && Command::new("ip")
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success())
}

/// The demo finds `vfpool-cni` next to itself; `cargo test -p vfpool-agent` alone does not build
/// it, so build it when it is missing (a workspace test run builds it anyway).
fn ensure_cni_built() {
    let vfpool = PathBuf::from(env!("CARGO_BIN_EXE_vfpool"));
    if vfpool.with_file_name("vfpool-cni").exists() {
        return;
    }
    let mut build = Command::new(env!("CARGO"));
    build.args(["build", "-p", "vfpool-cni", "--bin", "vfpool-cni"]);
    if vfpool
        .parent()
        .and_then(Path::file_name)
        .is_some_and(|d| d == "release")
    {
        build.arg("--release");
    }
    let status = build.status().unwrap();
    assert!(status.success(), "building vfpool-cni failed");
}

fn demo_namespaces() -> Vec<String> {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with("vfpool-demo-"))
        .map(str::to_string)
        .collect()
}

/// One run of `vfpool demo` with its own TMPDIR, its output in files.
struct Run {
    child: Child,
    tmpdir: tempfile::TempDir,
    out: PathBuf,
    err: PathBuf,
    _files: tempfile::TempDir,
}

impl Run {
    fn start(args: &[&str]) -> Run {
        Run::start_with_stdout(args, None)
    }

    /// A run whose standard output is `stdout` instead of the file [`Run::stdout`] reads.
    fn start_with_stdout(args: &[&str], stdout: Option<fs::File>) -> Run {
        ensure_cni_built();
        let tmpdir = tempfile::tempdir().unwrap();
        let files = tempfile::tempdir().unwrap();
        let out = files.path().join("stdout");
        let err = files.path().join("stderr");
        let stdout = stdout.unwrap_or_else(|| fs::File::create(&out).unwrap());
        let child = Command::new(env!("CARGO_BIN_EXE_vfpool"))
            .arg("demo")
            .args(args)
            .env("TMPDIR", tmpdir.path())
            // An operator's JSON log setting must not reach the agent the demo starts: the demo
            // reads its log lines as text (it used to time out waiting for them).
            .env("VFPOOL_LOG_FORMAT", "json")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(fs::File::create(&err).unwrap())
            .spawn()
            .unwrap();
        Run {
            child,
            tmpdir,
            out,
            err,
            _files: files,
        }
    }

    fn stdout(&self) -> String {
        fs::read_to_string(&self.out).unwrap_or_default()
    }

    fn output(&self) -> String {
        format!(
            "--- stdout\n{}\n--- stderr\n{}",
            self.stdout(),
            fs::read_to_string(&self.err).unwrap_or_default()
        )
    }

    fn wait_for_output(&mut self, needle: &str) {
        let deadline = Instant::now() + GUARD;
        while !self.stdout().contains(needle) {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "the demo ended ({status}) before printing {needle:?}\n{}",
                    self.output()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in time\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + GUARD;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("the demo did not finish in time\n{}", self.output());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Nothing left: no temporary directory, no demo network namespace, no agent process.
    fn assert_nothing_left(&self) {
        let output = self.output();
        let left: Vec<_> = fs::read_dir(self.tmpdir.path())
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        assert!(left.is_empty(), "left in TMPDIR: {left:?}\n{output}");
        // The demo names its namespaces after its process id (tests run in parallel).
        let mine = format!("vfpool-demo-{}-", self.child.id());
        let namespaces: Vec<String> = demo_namespaces()
            .into_iter()
            .filter(|n| n.starts_with(&mine))
            .collect();
        assert!(
            namespaces.is_empty(),
            "network namespaces left: {namespaces:?}\n{output}"
        );
        if let Some(pid) = agent_pid(&self.stdout()) {
            assert!(
                !Path::new(&format!("/proc/{pid}")).exists(),
                "the agent (pid {pid}) is still running\n{output}"
            );
        }
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn agent_pid(stdout: &str) -> Option<u32> {
    let (_, rest) = stdout.split_once("`vfpool run` (pid ")?;
    rest.split(')').next()?.parse().ok()
}

/// The text of step `n` (from its heading to the next one).
fn step(stdout: &str, n: u32) -> String {
    let start = stdout
        .find(&format!("\n{n}. "))
        .unwrap_or_else(|| panic!("no step {n} in:\n{stdout}"));
    let rest = &stdout[start + 1..];
    let end = rest.find(&format!("\n{}. ", n + 1)).unwrap_or(rest.len());
    rest[..end].to_string()
}

/// The device ids listed one per line (`     0000:3b:00.2  netdev ...`) after `after` in `text`.
fn listed_ids(text: &str, after: &str) -> Vec<String> {
    let (_, rest) = text.split_once(after).unwrap();
    rest.lines()
        .skip(1)
        .map(str::trim)
        .take_while(|l| l.starts_with("0000:"))
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .collect()
}

fn pf_of(line_text: &str, id: &str) -> String {
    let line = line_text
        .lines()
        .find(|l| l.trim().starts_with(id))
        .unwrap();
    let (_, rest) = line.split_once("of PF ").unwrap();
    rest.split_whitespace().next().unwrap().to_string()
}

/// The whole demo: every step's outcome, exit 0, nothing left behind.
#[test]
fn the_demo_runs_every_step_and_leaves_nothing_behind() {
    let cni = can_run_cni();
    assert!(
        cni || std::env::var_os("CI").is_none(),
        "CI must run the demo's CNI step: needs root, iproute2 and /usr/lib/cni/host-local"
    );
    let mut run = Run::start(&[]);
    let status = run.wait();
    let stdout = run.stdout();
    let output = run.output();
    assert!(status.success(), "exit {status}\n{output}");

    // 1. Discovery: the PF table from the demo fixture.
    let s1 = step(&stdout, 1);
    let row = |pf: &str| {
        s1.lines()
            .find(|l| l.split_whitespace().next() == Some(pf))
            .unwrap_or_else(|| panic!("no row for {pf}\n{output}"))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(
        row("ens1f0"),
        "ens1f0 0000:3b:00.0 15b3:1017 mlx5_core 0 12 12 mlx5_core"
    );
    assert_eq!(
        row("ens1f1"),
        "ens1f1 0000:3b:00.1 15b3:1017 mlx5_core 0 12 12 mlx5_core"
    );
    assert_eq!(
        row("ens2f0"),
        "ens2f0 0000:86:00.0 8086:1572 i40e 1 8 4 iavf, 4 vfio-pci"
    );

    // 2. The agent registered the three pools; allocatable as kubectl shows it.
    let s2 = step(&stdout, 2);
    assert!(s2.contains("registered 3 pools"), "{output}");
    let json_start = s2.find("     {\n").expect("allocatable JSON");
    let json_end = s2[json_start..].find("     }").unwrap() + json_start + 6;
    let allocatable: serde_json::Value = serde_json::from_str(&s2[json_start..json_end]).unwrap();
    assert_eq!(
        allocatable,
        serde_json::json!({
            "intel.com/intel_sriov_dpdk": "4",
            "intel.com/intel_sriov_netdevice": "4",
            "intel.com/mlnx_sriov": "24"
        })
    );

    // 3. Preferred allocation packs one PF and one NUMA node; Allocate's env names them.
    let s3 = step(&stdout, 3);
    assert!(s3.contains("builtin:packed-allocator"), "{output}");
    let first = listed_ids(&s3, "prefers:");
    assert_eq!(first.len(), 2, "{output}");
    assert_eq!(pf_of(&s3, &first[0]), pf_of(&s3, &first[1]), "{output}");
    assert!(
        s3.contains("-> the same PF (") && s3.contains("the same NUMA node (0)"),
        "{output}"
    );
    // Allocate got them in kubelet's (arbitrary) set order, which the variable keeps.
    let env = s3
        .lines()
        .find_map(|l| l.trim().strip_prefix("PCIDEVICE_INTEL_COM_MLNX_SRIOV="))
        .unwrap_or_else(|| panic!("no PCIDEVICE variable\n{output}"));
    let mut named: Vec<&str> = env.split(',').collect();
    named.sort_unstable();
    let mut preferred: Vec<&str> = first.iter().map(String::as_str).collect();
    preferred.sort_unstable();
    assert_eq!(named, preferred, "{output}");
    assert!(
        s3.contains(&format!(
            "PCIDEVICE_INTEL_COM_MLNX_SRIOV_INFO={{\"{}\":{{\"generic\":{{\"deviceID\":\"{}\"}}",
            first[0], first[0]
        )),
        "{output}"
    );
    assert!(
        s3.contains(&format!("intel.com-mlnx_sriov-{}-device.json", first[0])),
        "{output}"
    );

    // 4. The CNI plugin: net1 with its address in the pod, then the VF back as it was.
    let s4 = step(&stdout, 4);
    if cni {
        assert!(s4.contains("vfpool-cni ADD: ok"), "{output}");
        assert!(
            s4.contains(&format!("\"deviceID\":\"{}\"", first[0])),
            "{output}"
        );
        assert!(s4.contains("net1 got 10.56.217.2/24"), "{output}");
        assert!(
            s4.lines()
                .any(|l| l.contains(": net1@") && l.contains("UP")),
            "{output}"
        );
        assert!(
            s4.contains("inet 10.56.217.2/24") && s4.contains("scope global net1"),
            "{output}"
        );
        assert!(
            s4.contains("vfpool-cni DEL: ok")
                && s4.contains(", as before)")
                && s4.contains("the pod has no net1")
                && s4.contains("host-local holds no address"),
            "{output}"
        );
    } else {
        assert!(s4.contains("   skipped: "), "{output}");
        assert_eq!(
            s4.lines().filter(|l| !l.trim().is_empty()).count(),
            2,
            "the skip is one line\n{output}"
        );
    }

    // 5. Hot swap: the spread allocator changes the next preference; a half-written module is
    //    ignored and the spread allocator keeps serving.
    let s5 = step(&stdout, 5);
    assert!(
        s5.contains("policies activated, allocator \"spread.wasm\""),
        "{output}"
    );
    let second = listed_ids(&s5, "is preferred:");
    assert_eq!(second.len(), 2, "{output}");
    assert_ne!(pf_of(&s5, &second[0]), pf_of(&s5, &second[1]), "{output}");
    assert!(s5.contains("-> spread across 2 PFs"), "{output}");
    assert!(
        s5.contains("The agent ignored it") && s5.contains("broken.wasm: policy \"broken.wasm\""),
        "{output}"
    );
    assert!(
        s5.contains("-> across 2 PFs: spread.wasm still serves."),
        "{output}"
    );

    // 6. Clean-up, reported and real.
    let s6 = step(&stdout, 6);
    assert!(
        s6.contains(
            "stopped by SIGTERM: exit code 0; plugin sockets left: 0, device-info files left: 0"
        ),
        "{output}"
    );
    assert!(s6.contains("kubelet simulator stopped"), "{output}");
    if cni {
        assert!(s6.contains("network namespaces vfpool-demo-"), "{output}");
    }
    assert!(
        stdout.contains("Nothing of the demo is left on this machine."),
        "{output}"
    );
    run.assert_nothing_left();
}

/// Ctrl-C in the middle: the demo stops, cleans everything up and exits non-zero.
#[test]
fn ctrl_c_cleans_up() {
    let mut run = Run::start(&[]);
    run.wait_for_output("\n3. ");
    run.signal("INT");
    let status = run.wait();
    let output = run.output();
    assert_eq!(status.code(), Some(1), "{output}");
    let stdout = run.stdout();
    assert!(
        stdout.contains("Ctrl-C: stopping the demo and cleaning up."),
        "{output}"
    );
    assert!(
        stdout.contains("stopped by SIGTERM: exit code 0; plugin sockets left: 0"),
        "{output}"
    );
    assert!(output.contains("interrupted by Ctrl-C"), "{output}");
    run.assert_nothing_left();
}

/// A full disk under the demo's output used to panic at its first line (exit 101). The demo runs
/// and cleans up, then fails naming the reason.
#[test]
fn a_full_stdout_fails_the_demo_after_cleaning_up() {
    let mut run = Run::start_with_stdout(&[], Some(fs::File::create("/dev/full").unwrap()));
    let status = run.wait();
    let output = run.output();
    assert_eq!(status.code(), Some(1), "{output}");
    assert!(
        output.contains("cannot write to standard output") && !output.contains("panicked"),
        "{output}"
    );
    run.assert_nothing_left();
}

/// A closed terminal or ssh session (SIGHUP) and Ctrl-\ (SIGQUIT) stop the demo as Ctrl-C does:
/// everything is cleaned up, including the agent, which runs in its own process group and so gets
/// no signal from the terminal. (They used to kill the demo on the spot and leave the agent
/// serving forever, with the temporary directory.)
fn stop_signal_cleans_up(signal: &str, name: &str) {
    let mut run = Run::start(&[]);
    run.wait_for_output("\n3. ");
    run.signal(signal);
    let status = run.wait();
    let output = run.output();
    assert_eq!(status.code(), Some(1), "{output}");
    let stdout = run.stdout();
    assert!(
        stdout.contains(&format!("{name}: stopping the demo and cleaning up.")),
        "{output}"
    );
    assert!(
        stdout.contains("stopped by SIGTERM: exit code 0; plugin sockets left: 0"),
        "{output}"
    );
    assert!(
        output.contains(&format!("interrupted by {name}")),
        "{output}"
    );
    run.assert_nothing_left();
}

#[test]
fn sighup_cleans_up() {
    stop_signal_cleans_up("HUP", "SIGHUP");
}

#[test]
fn sigquit_cleans_up() {
    stop_signal_cleans_up("QUIT", "SIGQUIT");
}

/// A demo killed outright cannot clean up, but its agent (in its own process group) must not
/// outlive it: the parent-death signal stops the agent, which removes its sockets.
#[test]
fn the_agent_does_not_outlive_a_killed_demo() {
    let mut run = Run::start(&[]);
    run.wait_for_output("\n3. ");
    let pid = agent_pid(&run.stdout()).expect("the agent's pid is printed in step 2");
    run.signal("KILL");
    run.wait();
    // The demo cannot remove what it made (the test's TMPDIR goes with the test): the network
    // namespaces of step 4, if it got that far, are the test's to delete.
    let mine = format!("vfpool-demo-{}-", run.child.id());
    for ns in demo_namespaces().iter().filter(|n| n.starts_with(&mine)) {
        let _ = Command::new("ip").args(["netns", "del", ns]).status();
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let gone = loop {
        // Gone, or a zombie nobody reaps (its parent, the demo, is dead: init reaps it soon).
        let state = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let zombie = state
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
        if state.is_empty() || zombie {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    if !gone {
        // Do not leave it serving: the test has failed anyway.
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    }
    assert!(
        gone,
        "the agent (pid {pid}) outlived the killed demo\n{}",
        run.output()
    );
    // The agent stopped as on any SIGTERM: it removed its sockets.
    let sockets = run
        .tmpdir
        .path()
        .read_dir()
        .unwrap()
        .flatten()
        .map(|e| e.path().join("kubelet/device-plugins"))
        .flat_map(|d| fs::read_dir(d).into_iter().flatten().flatten())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".sock") && n != "kubelet.sock")
        .collect::<Vec<_>>();
    assert!(
        sockets.is_empty(),
        "plugin sockets left: {sockets:?}\n{}",
        run.output()
    );
}

/// `--keep`: the agent keeps serving after the steps, with directions; Ctrl-C then cleans up and
/// exits 0.
#[test]
fn keep_leaves_the_agent_running_until_ctrl_c() {
    let mut run = Run::start(&["--keep"]);
    run.wait_for_output("config hot swap: edit ");
    let stdout = run.stdout();
    let pid = agent_pid(&stdout).unwrap();
    assert!(Path::new(&format!("/proc/{pid}")).exists(), "{stdout}");
    let (_, rest) = stdout.split_once("sockets (kubelet.sock").unwrap();
    let (_, rest) = rest.split_once(": ls ").unwrap();
    let socket_dir = PathBuf::from(rest.lines().next().unwrap().trim());
    let mut sockets: Vec<String> = fs::read_dir(&socket_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        // kubelet's own file there.
        .filter(|n| n != "kubelet_internal_checkpoint")
        .collect();
    sockets.sort();
    assert_eq!(
        sockets,
        [
            "intel.com_intel_sriov_dpdk.sock",
            "intel.com_intel_sriov_netdevice.sock",
            "intel.com_mlnx_sriov.sock",
            "kubelet.sock"
        ]
    );
    // The first poke the directions suggest works while the agent serves.
    let (_, rest) = stdout
        .split_once("what the policies make of the node: ")
        .unwrap();
    let pools_cmd: Vec<&str> = rest.lines().next().unwrap().split_whitespace().collect();
    let pools = Command::new(pools_cmd[0])
        .args(&pools_cmd[1..])
        .output()
        .unwrap();
    let pools_out = String::from_utf8_lossy(&pools.stdout);
    assert!(
        pools.status.success() && pools_out.contains("intel.com/mlnx_sriov"),
        "{pools_cmd:?}: {pools_out}{}",
        String::from_utf8_lossy(&pools.stderr)
    );
    run.signal("INT");
    let status = run.wait();
    let output = run.output();
    assert!(status.success(), "{output}");
    assert!(run.stdout().contains("\n6. Clean-up"), "{output}");
    run.assert_nothing_left();
}
