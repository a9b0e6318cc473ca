//! `vfpool pools` and `vfpool policy check` as users and scripts see them: the real binary, real
//! simulated nodes, real WASM components (built from `policies/` by vfpool-policy's build script).

// Test helpers unwrap: a failure there is a failed test with a backtrace.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const CONFIG: &str = r#"{"resourceList":[{"resourceName":"mlnx_sriov","selectors":{"vendors":["15b3"],"devices":["1018"],"isRdma":true}}]}"#;

fn vfpool(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vfpool"))
        .args(args)
        .env_remove("VFPOOL_SYSFS_ROOT")
        .env_remove("VFPOOL_CONFIG_FILE")
        .env_remove("VFPOOL_POLICY_DIR")
        .output()
        .unwrap()
}

fn component(name: &str) -> PathBuf {
    Path::new(vfpool_policy::defaults::BUILT_COMPONENTS_DIR).join(format!("{name}.wasm"))
}

struct Node {
    dir: tempfile::TempDir,
}

impl Node {
    fn dell_cx5(config: &str) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let out = vfpool(&[
            "sim",
            "--out",
            dir.path().join("node").to_str().unwrap(),
            "--fixture",
            "dell-cx5",
        ]);
        assert!(out.status.success(), "{out:?}");
        std::fs::write(dir.path().join("config.json"), config).unwrap();
        std::fs::create_dir(dir.path().join("policies")).unwrap();
        Node { dir }
    }
    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_owned()
    }
    /// `vfpool policy check` of the built components `names` on this node with its config.
    fn check(&self, names: &[&str]) -> Output {
        let mut args = vec!["policy".to_string(), "check".into()];
        args.extend(
            names
                .iter()
                .map(|n| component(n).to_str().unwrap().to_owned()),
        );
        args.extend([
            "--config-file".into(),
            self.path("config.json"),
            "--sysfs-root".into(),
            self.path("node"),
        ]);
        vfpool(&args.iter().map(String::as_str).collect::<Vec<_>>())
    }
    fn pools(&self, extra: &[&str]) -> Output {
        let mut args = vec![
            "pools".to_string(),
            "--sysfs-root".into(),
            self.path("node"),
            "--config-file".into(),
            self.path("config.json"),
            "--policy-dir".into(),
            self.path("policies"),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        vfpool(&args.iter().map(String::as_str).collect::<Vec<_>>())
    }
}

#[test]
fn pools_json_is_the_documented_shape() {
    let node = Node::dell_cx5(CONFIG);
    let out = node.pools(&["--json"]);
    assert!(out.status.success(), "{out:?}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let pools = json["pools"].as_array().unwrap();
    assert_eq!(pools.len(), 1);
    assert_eq!(pools[0]["resourceName"], "intel.com/mlnx_sriov");
    assert_eq!(pools[0]["deviceType"], "netDevice");
    let devices = pools[0]["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 24);
    assert_eq!(
        devices[0],
        serde_json::json!({"id":"0000:3b:00.2","health":"Healthy","numaNode":0})
    );
    let table = node.pools(&["--resource-prefix", "example.com"]);
    assert!(table.status.success(), "{table:?}");
    let text = String::from_utf8(table.stdout).unwrap();
    assert!(text.contains("example.com/mlnx_sriov"), "{text}");
    assert!(text.contains("builtin:upstream-selector"), "{text}");
}

/// `pools` shows the health `vfpool run` would advertise (it used to print every device Healthy),
/// devices sorted by id as DESIGN.md's JSON contract says.
#[test]
fn pools_report_the_health_the_agent_would_advertise() {
    let node = Node::dell_cx5(CONFIG);
    let pf0 = node
        .dir
        .path()
        .join("node/bus/pci/devices/0000:3b:00.0/net/ens1f0");
    std::fs::write(pf0.join("operstate"), "down\n").unwrap();
    std::fs::write(pf0.join("carrier"), "0\n").unwrap();
    let out = node.pools(&["--json"]);
    assert!(out.status.success(), "{out:?}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let devices = json["pools"][0]["devices"].as_array().unwrap();
    let ids: Vec<&str> = devices.iter().map(|d| d["id"].as_str().unwrap()).collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    assert_eq!(ids, sorted);
    let unhealthy: Vec<&str> = devices
        .iter()
        .filter(|d| d["health"] == "Unhealthy")
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(unhealthy.len(), 12, "{unhealthy:?}");
    assert!(
        unhealthy
            .iter()
            .all(|id| id.starts_with("0000:3b:00.") || id.starts_with("0000:3b:01.")),
        "{unhealthy:?}"
    );
}

#[test]
fn pools_with_a_bad_config_exits_2_naming_the_field() {
    let node = Node::dell_cx5(
        r#"{"resourceList":[{"resourceName":"mlnx","selectors":{"vendors":"15b3"}}]}"#,
    );
    let out = node.pools(&[]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("resourceList[0].selectors.vendors"),
        "{stderr}"
    );
    assert!(stderr.contains(r#"["15b3"]"#), "{stderr}");
}

#[test]
fn pools_use_the_policy_directory() {
    let node = Node::dell_cx5(CONFIG);
    std::fs::copy(
        component("probe"),
        node.dir.path().join("policies/selector.wasm"),
    )
    .unwrap();
    let out = node.pools(&["--json"]);
    assert!(out.status.success(), "{out:?}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["pools"][0]["resourceName"], "example.com/probe");
    // A broken module in the directory (its allocator export has the wrong types): refused,
    // exit 2, the file named.
    std::fs::copy(
        component("mistyped_allocator"),
        node.dir.path().join("policies/selector.wasm"),
    )
    .unwrap();
    let out = node.pools(&[]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains("selector.wasm")
    );
    // A module cut off half-way: the agent would ignore it (it may be being written), but here,
    // the check before shipping, it is a broken artifact: exit 2, the file named.
    let bytes = std::fs::read(component("probe")).unwrap();
    std::fs::write(
        node.dir.path().join("policies/selector.wasm"),
        &bytes[..bytes.len() / 2],
    )
    .unwrap();
    let out = node.pools(&[]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("not whole") && stderr.contains("selector.wasm"),
        "{stderr}"
    );
    // A file that is no policy at all (a core module): ignored with a warning naming it, as the
    // agent ignores it; the embedded defaults make the pools.
    std::fs::write(
        node.dir.path().join("policies/selector.wasm"),
        b"\0asm\x01\0\0\0",
    )
    .unwrap();
    let out = node.pools(&[]);
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("warning: ")
            && stderr.contains("selector.wasm")
            && stderr.contains("ignored"),
        "{stderr}"
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("intel.com/mlnx_sriov"),
        "{out:?}"
    );
}

#[test]
fn policy_check_accepts_good_modules_and_refuses_bad_ones() {
    let node = Node::dell_cx5(CONFIG);
    let good = node.check(&["spread_allocator", "upstream_selector"]);
    assert!(good.status.success(), "{good:?}");
    let text = String::from_utf8(good.stdout).unwrap();
    assert!(
        text.contains("intel.com/mlnx_sriov (netDevice, 24 devices)"),
        "{text}"
    );
    assert!(text.contains("sample preference: 0000:3b:00.2 "), "{text}");

    let truncated = node.dir.path().join("half.wasm");
    let bytes = std::fs::read(component("upstream_selector")).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let bad = vfpool(&[
        "policy",
        "check",
        component("wrong_exports").to_str().unwrap(),
        truncated.to_str().unwrap(),
        "--fixture",
        "dell-cx5",
    ]);
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
    let text = String::from_utf8(bad.stdout).unwrap();
    assert!(
        text.contains("wrong_exports.wasm: REFUSED") && text.contains("exports neither"),
        "{text}"
    );
    assert!(
        text.contains("half.wasm: REFUSED") && text.contains("not a whole WebAssembly component"),
        "{text}"
    );

    // A good module under a name the agent skips: refused, so that "ACCEPTED" always means a
    // running agent would load it (it used to be accepted).
    let temporary = node.dir.path().join("selector.wasm.tmp");
    std::fs::copy(component("upstream_selector"), &temporary).unwrap();
    let skipped = vfpool(&[
        "policy",
        "check",
        temporary.to_str().unwrap(),
        "--fixture",
        "dell-cx5",
    ]);
    assert_eq!(skipped.status.code(), Some(2), "{skipped:?}");
    // Without a config file the check says what it checked with.
    let errors = String::from_utf8_lossy(&skipped.stderr);
    assert!(
        errors.contains("empty settings") && errors.contains("/etc/pcidp/config.json"),
        "{errors}"
    );
    let text = String::from_utf8(skipped.stdout).unwrap();
    assert!(
        text.contains("selector.wasm.tmp: REFUSED") && text.contains("NAME.wasm"),
        "{text}"
    );
}

#[test]
fn policy_check_reports_a_runaway_policy() {
    let node = Node::dell_cx5("probe:loop");
    let out = vfpool(&[
        "policy",
        "check",
        component("probe").to_str().unwrap(),
        "--config-file",
        &node.path("config.json"),
        "--fixture",
        "dell-cx5",
    ]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("deadline") && text.contains("sha256:"),
        "{text}"
    );
}

/// A module shaped to make the compiler take gigabytes or minutes is refused for the limit it
/// ran into, named with the flag that sets it: it is compiled in a child process under limits,
/// not in the agent's (where, before, it took whatever it needed). A real policy still compiles
/// in the child, and loads in the agent (the other tests).
#[test]
fn a_module_that_would_stall_the_compiler_is_refused_for_the_limit_it_ran_into() {
    let dir = tempfile::tempdir().unwrap();
    let bomb = dir.path().join("bomb.wasm");
    // About 600 MB and 1.5 s of CPU to compile (release build).
    std::fs::write(&bomb, common::compiler_bomb(4000)).unwrap();
    // Some 12 s of CPU: past a 1 s limit on any machine.
    let slow_bomb = dir.path().join("slow-bomb.wasm");
    std::fs::write(&slow_bomb, common::compiler_bomb(12_000)).unwrap();
    let check = |bomb: &std::path::Path, limits: &[&str]| {
        let mut args = vec![
            "policy",
            "check",
            bomb.to_str().unwrap(),
            "--fixture",
            "dell-cx5",
        ];
        args.extend_from_slice(limits);
        let out = vfpool(&args);
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let text = check(&bomb, &["--policy-compile-memory-mib", "64"]);
    assert!(
        text.contains("bomb.wasm: REFUSED")
            && text.contains("more than the 64 MiB of memory the compiler process may use")
            && text.contains("--policy-compile-memory-mib"),
        "{text}"
    );
    let text = check(
        &slow_bomb,
        &[
            "--policy-compile-memory-mib",
            "8192",
            "--policy-compile-cpu",
            "1s",
        ],
    );
    assert!(
        text.contains("more than the 1 s of CPU time the compiler process may use"),
        "{text}"
    );
    // The flags are checked as the agent starts, not when a module is compiled.
    let out = vfpool(&["pools", "--policy-compile-cpu", "0s"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("between 1s and 1h"),
        "{out:?}"
    );
}

/// An agent started with SIGXCPU ignored (a shell's `trap '' XCPU`, a supervisor that ignores it)
/// or blocked hands that on through `exec` to the compiler process, which then let the soft CPU
/// limit pass and was killed by the hard one a second later: "killed (by the kernel's OOM killer,
/// or by hand)", not the CPU limit with the flag that raises it.
#[test]
fn the_cpu_limit_is_named_when_the_agent_was_started_with_sigxcpu_ignored_or_blocked() {
    use std::os::unix::process::CommandExt as _;
    let dir = tempfile::tempdir().unwrap();
    let slow_bomb = dir.path().join("slow-bomb.wasm");
    std::fs::write(&slow_bomb, common::compiler_bomb(12_000)).unwrap();
    let check = |mut command: Command| {
        let out = command
            .args([
                "policy",
                "check",
                slow_bomb.to_str().unwrap(),
                "--fixture",
                "dell-cx5",
                "--policy-compile-memory-mib",
                "8192",
                "--policy-compile-cpu",
                "1s",
            ])
            .env_remove("VFPOOL_LOG_LEVEL")
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("more than the 1 s of CPU time the compiler process may use"),
            "{text}"
        );
    };
    let mut ignored = Command::new("sh");
    ignored
        .arg("-c")
        .arg(r#"trap '' XCPU && exec "$@""#)
        .arg("sh")
        .arg(env!("CARGO_BIN_EXE_vfpool"));
    check(ignored);
    let mut blocked = Command::new(env!("CARGO_BIN_EXE_vfpool"));
    // SAFETY: sigprocmask is async-signal-safe, and nothing else runs between fork and exec.
    #[allow(unsafe_code)]
    unsafe {
        blocked.pre_exec(|| {
            nix::sys::signal::SigSet::from(nix::sys::signal::Signal::SIGXCPU)
                .thread_block()
                .map_err(std::io::Error::from)
        });
    }
    check(blocked);
}

/// The compiler process compiles only for the process that started it: one whose parent is
/// already gone when it sets up the parent-death signal (the signal would never come) exits at
/// once instead of compiling with no one to answer.
#[test]
fn the_compiler_process_exits_when_the_process_that_started_it_is_gone() {
    let worker = |parent: u32| {
        vfpool(&[
            "policy",
            "compile-worker",
            "--cpu-seconds",
            "5",
            "--memory-bytes",
            "268435456",
            "--parent-pid",
            &parent.to_string(),
        ])
    };
    // Started by this test: it reads the module (none) and says why wasmtime refused it.
    let out = worker(std::process::id());
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    // Claiming another parent, as a worker reparented after its parent died would see it.
    let out = worker(std::process::id() + 1);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is gone"),
        "{out:?}"
    );
}

/// Under an address-space limit (`ulimit -v`) the policy instance pool cannot be reserved: the
/// agent says so once and serves without it, instead of failing to start.
#[test]
fn pools_work_without_the_instance_pool_under_an_address_space_limit() {
    let node = Node::dell_cx5(CONFIG);
    let out = Command::new("sh")
        .arg("-c")
        .arg(r#"ulimit -v 8388608 && exec "$@""#)
        .arg("sh")
        .arg(env!("CARGO_BIN_EXE_vfpool"))
        .args([
            "pools",
            "--json",
            "--sysfs-root",
            &node.path("node"),
            "--config-file",
            &node.path("config.json"),
            "--policy-dir",
            &node.path("policies"),
        ])
        .env_remove("VFPOOL_LOG_LEVEL")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot reserve the policy instance pool"),
        "{stderr}"
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["pools"][0]["devices"].as_array().unwrap().len(), 24);
}

/// `VFPOOL_SYSFS_ROOT` is set in the agent's pod; `policy check --fixture` run there must use the
/// fixture (clap used to count the environment variable as a conflicting `--sysfs-root`). Both
/// flags on the command line still conflict.
#[test]
fn policy_check_fixture_wins_over_the_sysfs_root_environment_variable() {
    let module = component("spread_allocator");
    let out = Command::new(env!("CARGO_BIN_EXE_vfpool"))
        .args([
            "policy",
            "check",
            module.to_str().unwrap(),
            "--fixture",
            "demo",
        ])
        .env("VFPOOL_SYSFS_ROOT", "/sys")
        .env_remove("VFPOOL_CONFIG_FILE")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    // The fixture's devices (a Mellanox VF), not this machine's.
    assert!(
        text.contains("spread_allocator.wasm: ACCEPTED")
            && text.contains("sample preference: ")
            && text.contains(" 0000:3b:00."),
        "{text}"
    );

    let both = Command::new(env!("CARGO_BIN_EXE_vfpool"))
        .args([
            "policy",
            "check",
            module.to_str().unwrap(),
            "--fixture",
            "demo",
            "--sysfs-root",
            "/sys",
        ])
        .env_remove("VFPOOL_SYSFS_ROOT")
        .output()
        .unwrap();
    assert_eq!(both.status.code(), Some(2), "{both:?}");
    let err = String::from_utf8_lossy(&both.stderr);
    assert!(
        err.contains("--fixture")
            && err.contains("--sysfs-root")
            && err.contains("cannot be used with"),
        "{err}"
    );
}

/// A FIFO under a module's name is refused at once, as the agent refuses it, instead of blocking
/// `policy check` forever (it used to read the module with an unbounded, blocking read).
#[test]
fn policy_check_refuses_a_fifo_promptly() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("x.wasm");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let mut child = Command::new(env!("CARGO_BIN_EXE_vfpool"))
        .args([
            "policy",
            "check",
            fifo.to_str().unwrap(),
            "--fixture",
            "demo",
        ])
        .env_remove("VFPOOL_SYSFS_ROOT")
        .env_remove("VFPOOL_CONFIG_FILE")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Compiling the embedded defaults takes a few seconds in a debug build; a blocked read never
    // ends.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("policy check blocked on a FIFO: {out:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("x.wasm: REFUSED: not a regular file"),
        "{text}"
    );
}

/// `pools` is what the agent would serve: pools sorted by resource name whatever the config's
/// order (they came in config order), and no NUMA node for a pool with `excludeTopology` (the
/// agent advertises none; `pools` showed the device's), in the JSON and the table.
#[test]
fn pools_are_sorted_and_show_no_numa_node_where_topology_is_excluded() {
    let node = Node::dell_cx5(
        r#"{"resourceList":[
            {"resourceName":"zz_mlnx","selectors":{"vendors":["15b3"],"devices":["1018"]}},
            {"resourceName":"aa_lom","excludeTopology":true,"selectors":{"vendors":["14e4"]}}
        ]}"#,
    );
    let out = node.pools(&["--json"]);
    assert!(out.status.success(), "{out:?}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let pools = json["pools"].as_array().unwrap();
    let names: Vec<&str> = pools
        .iter()
        .map(|p| p["resourceName"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["intel.com/aa_lom", "intel.com/zz_mlnx"]);
    let lom = pools[0]["devices"].as_array().unwrap();
    assert_eq!(lom.len(), 2, "{lom:?}");
    assert!(lom.iter().all(|d| d["numaNode"].is_null()), "{lom:?}");
    assert!(
        pools[1]["devices"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["numaNode"] == 0)
    );

    let table = node.pools(&[]);
    assert!(table.status.success(), "{table:?}");
    let text = String::from_utf8(table.stdout).unwrap();
    let rows: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("intel.com/"))
        .collect();
    assert_eq!(rows.len(), 2, "{text}");
    assert!(rows[0].starts_with("intel.com/aa_lom"), "{text}");
    // RESOURCE TYPE COUNT NUMA DEVICES: no topology is a dash.
    assert_eq!(rows[0].split_whitespace().nth(3), Some("-"), "{text}");
    assert_eq!(rows[1].split_whitespace().nth(3), Some("0"), "{text}");
}

/// A full disk under `pools` and `policy check` used to be a panic (exit 101).
#[test]
fn pools_and_policy_check_report_a_full_stdout() {
    let node = Node::dell_cx5(CONFIG);
    let module = component("spread_allocator");
    for args in [
        vec![
            "pools".to_string(),
            "--sysfs-root".into(),
            node.path("node"),
            "--config-file".into(),
            node.path("config.json"),
            "--policy-dir".into(),
            node.path("policies"),
        ],
        vec![
            "policy".to_string(),
            "check".into(),
            module.to_str().unwrap().into(),
            "--sysfs-root".into(),
            node.path("node"),
        ],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_vfpool"))
            .args(&args)
            .env_remove("VFPOOL_CONFIG_FILE")
            .stdout(std::fs::File::create("/dev/full").unwrap())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains("cannot write to standard output") && !stderr.contains("panicked"),
            "{args:?}: {stderr}"
        );
    }
}

/// `policy check --fixture` has an environment twin, `VFPOOL_POLICY_CHECK_FIXTURE`, and as for
/// every flag, `--sysfs-root` on the command line beats it (no conflict, the given node is used).
#[test]
fn policy_check_fixture_twin_yields_to_a_sysfs_root_flag() {
    let node = Node::dell_cx5(CONFIG);
    let module = component("spread_allocator");
    let check = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_vfpool"))
            .args(["policy", "check", module.to_str().unwrap()])
            .args(extra)
            .env("VFPOOL_POLICY_CHECK_FIXTURE", "intel-x710")
            .env_remove("VFPOOL_SYSFS_ROOT")
            .env_remove("VFPOOL_CONFIG_FILE")
            .output()
            .unwrap();
        assert!(out.status.success(), "{extra:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    // The X710 fixture's devices are on bus 0x86, the ConnectX-5 node's on 0x3b.
    let text = check(&[]);
    assert!(text.contains(" 0000:86:"), "{text}");
    let text = check(&["--sysfs-root", &node.path("node")]);
    assert!(
        text.contains(" 0000:3b:") && !text.contains("0000:86:"),
        "{text}"
    );
}

/// `policy check` is where a policy's author looks, and it showed nothing the module logged: its
/// lines went to the log at their own level, below the command's default (warn) unless warnings.
/// They are part of the report now, each with the call that logged it.
#[test]
fn policy_check_shows_what_the_module_logged() {
    let node = Node::dell_cx5(
        r#"{"resourceList":[{"resourceName":"mlnx_sriov","colour":"red","selectors":{"vendors":["15b3"]}}]}"#,
    );
    let out = node.check(&["rust_starter", "upstream_selector"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let (starter, upstream) = text.split_at(text.find("upstream_selector.wasm: ").unwrap());
    assert!(
        starter.contains("policy log (1 line):") && starter.contains("select: info: "),
        "{text}"
    );
    assert!(
        upstream.contains("validate-settings: warn: ") && upstream.contains("colour"),
        "{text}"
    );
    // An allocator is checked with the embedded selector, whose lines (about the config) are
    // shown under its name.
    let out = node.check(&["spread_allocator"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("builtin:upstream-selector validate-settings: warn: ")
            && text.contains("colour"),
        "{text}"
    );
}

/// `policy check` says when a module gets its arguments in one allocation (it declares that it
/// may, as modules built with `policies/bump-alloc` do), so an author can see whether `select`
/// gets the fast hand-over of the inventory: the default selector does; the Rust starter, whose
/// allocator frees, does not.
#[test]
fn policy_check_says_whether_arguments_come_in_one_allocation() {
    let node = Node::dell_cx5(
        r#"{"resourceList":[{"resourceName":"mlnx_sriov","selectors":{"vendors":["15b3"]}}]}"#,
    );
    let out = node.check(&["rust_starter", "upstream_selector"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let (starter, upstream) = text.split_at(text.find("upstream_selector.wasm: ").unwrap());
    assert!(
        starter.contains("ACCEPTED") && !starter.contains("one allocation"),
        "{text}"
    );
    assert!(
        upstream.contains("ACCEPTED") && upstream.contains("; arguments passed in one allocation)"),
        "{text}"
    );
}

/// A refused module's report shows what was logged before the refusal too: a warning about the
/// settings may be what explains it (the lines used to be printed only for an accepted module).
/// A module with both roles labels each `validate-settings` with its role.
#[test]
fn a_refusal_shows_what_was_logged_before_it() {
    // The probe warns in validate-settings, then selects a device the node does not have.
    let node = Node::dell_cx5("probe:validate-warning");
    let out = node.check(&["probe"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("probe.wasm: REFUSED")
            && text.contains("selector validate-settings: warn: probe validation warning")
            // What the failing call logged before it failed is kept too.
            && text.contains("selector select: info: probe selecting from"),
        "{text}"
    );
}

/// A selector that pools PFs with VFs enabled in a network pool: `vfpool pools` lists the pools
/// without them and says why on standard error (a warning per device, naming the policy), where
/// it used to print the pools with the devices silently missing.
#[test]
fn pools_say_which_devices_the_host_keeps_out() {
    let node = Node::dell_cx5("probe:echo");
    std::fs::copy(
        component("probe"),
        node.dir.path().join("policies/selector.wasm"),
    )
    .unwrap();
    let out = node.pools(&["--json"]);
    assert!(out.status.success(), "{out:?}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let echo = json["pools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["resourceName"] == "example.com/echo")
        .expect("the echo pool");
    let ids: Vec<&str> = echo["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    // dell-cx5: two ConnectX-5 PFs, 0000:3b:00.0 and 0000:3b:00.1, with 12 VFs each.
    let stderr = String::from_utf8(out.stderr).unwrap();
    for pf in ["0000:3b:00.0", "0000:3b:00.1"] {
        assert!(!ids.contains(&pf), "{ids:?}");
        assert!(
            stderr.contains(&format!(
                r#"the host keeps "{pf}" out of pool "example.com/echo": it is a PF with VFs enabled"#
            )),
            "{stderr}"
        );
    }
    // The 24 VFs and the two onboard ports (PFs without VFs) stay.
    assert_eq!(ids.len(), 26, "{ids:?}");
    assert!(ids.contains(&"0000:04:00.0"), "{ids:?}");
}
