//! The `vfpool` command line as users and scripts see it: the real binary, real simulated nodes.

// Test helpers unwrap: a failure there is a failed test with a backtrace.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output};

fn vfpool(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vfpool"))
        .args(args)
        .env_remove("VFPOOL_SYSFS_ROOT")
        .output()
        .unwrap()
}

fn simulated(fixture: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("node");
    let result = vfpool(&["sim", "--out", out.to_str().unwrap(), "--fixture", fixture]);
    assert!(result.status.success(), "{result:?}");
    let stdout = String::from_utf8(result.stdout).unwrap();
    assert!(
        stdout.contains("24 VFs") || fixture != "dell-cx5",
        "{stdout}"
    );
    dir
}

fn node_path(dir: &tempfile::TempDir) -> String {
    dir.path().join("node").to_str().unwrap().to_owned()
}

#[test]
fn discover_json_is_the_documented_shape() {
    let dir = simulated("dell-cx5");
    let out = vfpool(&["discover", "--sysfs-root", &node_path(&dir), "--json"]);
    assert!(out.status.success(), "{out:?}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let devices = json["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 28);
    let ids: Vec<&str> = devices.iter().map(|d| d["id"].as_str().unwrap()).collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    assert_eq!(ids, sorted);
    let vf = devices.iter().find(|d| d["id"] == "0000:3b:00.2").unwrap();
    for (key, value) in [
        ("kind", serde_json::json!("vf")),
        ("vendor", serde_json::json!("15b3")),
        ("device", serde_json::json!("1018")),
        ("class", serde_json::json!("020000")),
        ("driver", serde_json::json!("mlx5_core")),
        ("numaNode", serde_json::json!(0)),
        ("pfId", serde_json::json!("0000:3b:00.0")),
        ("pfName", serde_json::json!("ens1f0")),
        ("vfIndex", serde_json::json!(0)),
        ("netdev", serde_json::json!("ens1f0v0")),
        ("linkType", serde_json::json!("ether")),
        ("rdmaDevices", serde_json::json!(["mlx5_2"])),
    ] {
        assert_eq!(vf[key], value, "{key}");
    }
    assert!(vf["iommuGroup"].is_u64());
    // Unknown values are null, never -1 or "".
    assert_eq!(vf["uioDevice"], serde_json::Value::Null);
    // What the agent adds for policies: nothing on a simulated node (the facts are this
    // machine's), but the fields are there, as are the node-wide facts.
    assert_eq!(vf["carriesDefaultRoute"], false);
    assert_eq!(vf["devlinkEnableRdma"], serde_json::Value::Null);
    assert_eq!(vf["ddpProfile"], serde_json::Value::Null);
    assert!(json["node"]["vhostNet"].is_boolean(), "{}", json["node"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(!text.contains("-1") && !text.contains("\"\""), "{text}");
}

#[test]
fn discover_table_is_for_people_and_the_env_twin_works() {
    let dir = simulated("intel-x710");
    let out = Command::new(env!("CARGO_BIN_EXE_vfpool"))
        .args(["discover"])
        .env("VFPOOL_SYSFS_ROOT", node_path(&dir))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let table = String::from_utf8(out.stdout).unwrap();
    let mut lines = table.lines();
    assert!(lines.next().unwrap().starts_with("ID "), "{table}");
    let vfio = table
        .lines()
        .find(|l| l.starts_with("0000:86:02.4"))
        .unwrap();
    assert!(
        vfio.contains("vfio-pci") && vfio.contains("ens2f0"),
        "{vfio}"
    );
    // No netdev on a vfio VF: a dash, not an empty column.
    assert!(vfio.split_whitespace().any(|c| c == "-"), "{vfio}");
}

#[test]
fn a_missing_sysfs_root_is_a_clear_error_with_exit_code_2() {
    let out = vfpool(&["discover", "--sysfs-root", "/nonexistent/node"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("/nonexistent/node"), "{stderr}");
    assert!(stderr.contains("--sysfs-root"), "{stderr}");
    // The cause once, though the error names it in its own message too.
    assert_eq!(stderr.matches("os error 2").count(), 1, "{stderr}");
    assert!(out.stdout.is_empty());

    let empty = tempfile::tempdir().unwrap();
    let out = vfpool(&["discover", "--sysfs-root", empty.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[test]
fn sim_refuses_bad_fixtures_and_occupied_directories() {
    let dir = tempfile::tempdir().unwrap();
    let out = vfpool(&[
        "sim",
        "--out",
        dir.path().to_str().unwrap(),
        "--fixture",
        "nope",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8(out.stderr).unwrap().contains("dell-cx5"));

    std::fs::write(dir.path().join("keep"), "").unwrap();
    let out = vfpool(&["sim", "--out", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8(out.stderr).unwrap().contains("not empty"));
}

#[test]
fn sim_print_gives_a_fixture_to_copy_that_loads_back() {
    let out = vfpool(&["sim", "--print", "--fixture", "switchdev-sf"]);
    assert!(out.status.success());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mine.toml");
    std::fs::write(&file, &out.stdout).unwrap();
    let node = dir.path().join("node");
    let out = vfpool(&[
        "sim",
        "--out",
        node.to_str().unwrap(),
        "--fixture",
        file.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        Path::new(&node)
            .join("bus/auxiliary/devices/mlx5_core.sf.2")
            .exists()
    );
}

/// The upstream plugin's DaemonSet passes `--log-dir=sriovdp --log-level=10`: accepted (the
/// directory ignored, with a note), and the number read as glog verbosity. `--log-dir` used to be
/// refused (exit 2: a crash loop), and `--log-level=10` silenced every log line.
#[test]
fn upstream_daemonset_log_arguments_are_accepted() {
    let dir = simulated("dell-cx5");
    let out = vfpool(&[
        "discover",
        "--sysfs-root",
        &node_path(&dir),
        "--log-dir=sriovdp",
        "--log-level=10",
    ]);
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("--log-dir is ignored"), "{stderr}");
}

/// Log collectors read `--log-format json` (or `VFPOOL_LOG_FORMAT=json`): every stderr line one
/// JSON object with the level, the message and the event's fields at the top level; stdout is
/// unchanged. An unknown format is a usage error.
#[test]
fn log_lines_can_be_json() {
    let dir = simulated("dell-cx5");
    let node = node_path(&dir);
    let text = vfpool(&["discover", "--sysfs-root", &node, "--json"]);
    let check = |out: &Output| {
        assert!(out.status.success(), "{out:?}");
        assert_eq!(out.stdout, text.stdout);
        let stderr = String::from_utf8(out.stderr.clone()).unwrap();
        let lines: Vec<serde_json::Value> = stderr
            .lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
            .collect();
        let ignored = lines
            .iter()
            .find(|l| {
                l["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("--log-dir is ignored"))
            })
            .unwrap_or_else(|| panic!("{stderr}"));
        assert_eq!(ignored["level"], "INFO", "{ignored}");
        assert_eq!(ignored["log_dir"], "sriovdp", "{ignored}");
        assert!(ignored["timestamp"].is_string(), "{ignored}");
    };
    let flag = vfpool(&[
        "--log-format",
        "json",
        "--log-level",
        "info",
        "--log-dir=sriovdp",
        "discover",
        "--sysfs-root",
        &node,
        "--json",
    ]);
    check(&flag);
    let twin = Command::new(env!("CARGO_BIN_EXE_vfpool"))
        .args([
            "--log-level",
            "info",
            "--log-dir=sriovdp",
            "discover",
            "--sysfs-root",
            &node,
            "--json",
        ])
        .env("VFPOOL_LOG_FORMAT", "json")
        .env_remove("VFPOOL_SYSFS_ROOT")
        .output()
        .unwrap();
    check(&twin);
    // Why the command failed is a JSON line too (for `vfpool run`, why the agent exited).
    let failed = vfpool(&[
        "--log-format",
        "JSON",
        "--log-level",
        "error",
        "discover",
        "--sysfs-root",
        "/nonexistent/node",
    ]);
    assert_eq!(failed.status.code(), Some(2), "{failed:?}");
    let stderr = String::from_utf8(failed.stderr).unwrap();
    let line: serde_json::Value =
        serde_json::from_str(stderr.trim()).unwrap_or_else(|e| panic!("{e}: {stderr}"));
    assert_eq!(line["level"], "ERROR", "{line}");
    assert!(
        line["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("vfpool: ") && m.contains("/nonexistent/node")),
        "{line}"
    );
    // A filter that would swallow it: said anyway, as text.
    let silenced = vfpool(&[
        "--log-format",
        "json",
        "--log-level",
        "off",
        "discover",
        "--sysfs-root",
        "/nonexistent/node",
    ]);
    assert_eq!(silenced.status.code(), Some(2), "{silenced:?}");
    assert!(
        String::from_utf8_lossy(&silenced.stderr).starts_with("vfpool: "),
        "{silenced:?}"
    );
    let bad = vfpool(&["--log-format", "yaml", "discover", "--sysfs-root", &node]);
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("text"),
        "{bad:?}"
    );
}

/// A typo in the log level used to become a filter for a target of that name, silencing every log
/// line, errors included. It is refused as a usage error, naming the flag, its environment twin
/// and the valid values; level names in any case, glog numbers and `target=level` still work.
#[test]
fn a_log_level_typo_is_refused_with_exit_code_2() {
    let dir = simulated("dell-cx5");
    let node = node_path(&dir);
    for typo in ["warning", "verbose", "inf", "info,vfpool=warning"] {
        let out = vfpool(&["--log-level", typo, "discover", "--sysfs-root", &node]);
        assert_eq!(out.status.code(), Some(2), "{typo}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("--log-level")
                && err.contains("VFPOOL_LOG_LEVEL")
                && err.contains("trace, debug, info, warn, error, off"),
            "{typo}: {err}"
        );
        assert!(out.stdout.is_empty(), "{typo}: {out:?}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_vfpool"))
        .args(["discover", "--sysfs-root", &node])
        .env("VFPOOL_LOG_LEVEL", "verbose")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("\"verbose\"") && err.contains("VFPOOL_LOG_LEVEL"),
        "{err}"
    );
    for good in ["WARN", "10", "info,vfpool=debug", "error"] {
        let out = vfpool(&["--log-level", good, "discover", "--sysfs-root", &node]);
        assert!(out.status.success(), "{good}: {out:?}");
    }
}

/// `RUST_LOG` is the filter when neither `--log-level` nor `VFPOOL_LOG_LEVEL` is given; a typo there
/// (`warning`) silenced every line, errors included. It is refused the same way, naming RUST_LOG;
/// a valid one still works, and `--log-level` still wins over it.
#[test]
fn a_rust_log_typo_is_refused_naming_it() {
    let dir = simulated("dell-cx5");
    let node = node_path(&dir);
    let args = ["discover", "--sysfs-root", &node];
    let out = vfpool_env(&args, &[("RUST_LOG", "warning")]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("\"warning\"") && err.contains("RUST_LOG"),
        "{err}"
    );
    assert!(
        vfpool_env(&args, &[("RUST_LOG", "vfpool=debug")])
            .status
            .success()
    );
    let flag_wins = vfpool_env(
        &["--log-level", "warn", "discover", "--sysfs-root", &node],
        &[("RUST_LOG", "warning")],
    );
    assert!(flag_wins.status.success(), "{flag_wins:?}");
}

/// The agent's first discovery failing for want of file descriptors is the machine's problem
/// (exit 1, as for `vfpool discover`), not a wrong `--sysfs-root` (2): every failure of the
/// first discovery used to exit 2.
#[test]
fn an_agent_out_of_descriptors_at_start_exits_1() {
    let dir = simulated("large");
    let node = node_path(&dir);
    let kubelet = dir.path().join("kubelet");
    let out = Command::new("prlimit")
        .arg("--nofile=12")
        .arg(env!("CARGO_BIN_EXE_vfpool"))
        .args(["run", "--sysfs-root", &node, "--kubelet-dir"])
        .arg(&kubelet)
        .arg("--devinfo-dir")
        .arg(dir.path().join("devinfo"))
        .arg("--policy-dir")
        .arg(dir.path().join("policies"))
        .env_remove("VFPOOL_SYSFS_ROOT")
        .output()
        .expect("prlimit (util-linux) runs the agent");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("out of file descriptors"), "{err}");
    assert_eq!(out.status.code(), Some(1), "{err}");
}

/// A file where `--policy-cache-dir` should be said "policy cache directory X: File exists",
/// naming neither the flag nor what is wrong.
#[test]
fn a_policy_cache_dir_that_is_a_file_is_refused_naming_the_flag() {
    let dir = simulated("dell-cx5");
    let node = node_path(&dir);
    let file = dir.path().join("afile");
    std::fs::write(&file, "").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_vfpool"))
        .args(["run", "--sysfs-root", &node, "--kubelet-dir"])
        .arg(dir.path().join("kubelet"))
        .arg("--devinfo-dir")
        .arg(dir.path().join("devinfo"))
        .arg("--policy-cache-dir")
        .arg(&file)
        .env_remove("VFPOOL_SYSFS_ROOT")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--policy-cache-dir") && err.contains("VFPOOL_POLICY_CACHE_DIR"),
        "{err}"
    );
}

/// `vfpool` with `env` set (and `VFPOOL_SYSFS_ROOT` not inherited).
fn vfpool_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_vfpool"));
    command.args(args).env_remove("VFPOOL_SYSFS_ROOT");
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().unwrap()
}

/// A reader that stops early (`vfpool discover | head -1`) used to make the command panic with a
/// backtrace (exit 101). Now its output ends quietly and the command exits 0. The output is
/// larger than a pipe holds, so the command is still writing when the reader goes.
#[test]
fn a_reader_that_stops_early_ends_the_output_quietly() {
    let dir = simulated("large");
    let node = node_path(&dir);
    let config = dir.path().join("config.json");
    std::fs::write(
        &config,
        r#"{"resourceList":[{"resourceName":"all","selectors":{}}]}"#,
    )
    .unwrap();
    let policies = dir.path().join("policies");
    for args in [
        vec!["discover", "--json", "--sysfs-root", &node],
        vec![
            "pools",
            "--json",
            "--sysfs-root",
            &node,
            "--config-file",
            config.to_str().unwrap(),
            "--policy-dir",
            policies.to_str().unwrap(),
        ],
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_vfpool"))
            .args(&args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(stderr.is_empty(), "{args:?}: {stderr}");
    }
}

/// Any other write error (a full disk) is an error message and exit 1; it used to be a panic.
#[test]
fn a_full_stdout_is_an_error_not_a_panic() {
    let dir = simulated("dell-cx5");
    let node = node_path(&dir);
    let fresh = dir.path().join("fresh");
    for args in [
        vec!["discover", "--sysfs-root", &node],
        vec!["discover", "--json", "--sysfs-root", &node],
        vec!["sim", "--print"],
        vec!["sim", "--out", fresh.to_str().unwrap()],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_vfpool"))
            .args(&args)
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

/// A closed or full stderr (a container runtime's log pipe gone) used to turn the failure
/// message, and any log line, into a panic and exit 101. The exit code must still say what
/// happened: 2 for bad input, 0 for success even with debug logging on.
#[test]
fn a_full_stderr_is_not_a_panic() {
    let dir = simulated("dell-cx5");
    let node = node_path(&dir);
    let missing = dir.path().join("missing");
    for (args, code) in [
        (
            vec!["discover", "--sysfs-root", missing.to_str().unwrap()],
            2,
        ),
        (
            vec!["--log-level", "debug", "discover", "--sysfs-root", &node],
            0,
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_vfpool"))
            .args(&args)
            .env_remove("VFPOOL_SYSFS_ROOT")
            .env_remove("RUST_BACKTRACE")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create("/dev/full").unwrap())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(code), "{args:?}");
    }
}

/// `VFPOOL_JSON=1` (and `0`, `yes`, empty) used to be refused: clap's flags take only `true` and
/// `false`.
#[test]
fn boolean_environment_twins_take_1_0_yes_and_empty() {
    let dir = simulated("dell-cx5");
    let node = node_path(&dir);
    for (value, json) in [
        ("1", true),
        ("yes", true),
        ("true", true),
        ("0", false),
        ("off", false),
        ("", false),
    ] {
        let out = vfpool_env(
            &["discover", "--sysfs-root", &node],
            &[("VFPOOL_JSON", value)],
        );
        assert!(out.status.success(), "VFPOOL_JSON={value:?}: {out:?}");
        assert_eq!(
            out.stdout.starts_with(b"{"),
            json,
            "VFPOOL_JSON={value:?}: {out:?}"
        );
    }
    let out = vfpool_env(
        &["discover", "--sysfs-root", &node],
        &[("VFPOOL_JSON", "jsn")],
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

/// A valid `--log-level` used to be refused because of an invalid `VFPOOL_LOG_LEVEL`: clap parsed the
/// global flag's twin at the level the flag was not given at.
#[test]
fn a_log_level_flag_beats_an_invalid_environment_value() {
    let dir = simulated("dell-cx5");
    let node = node_path(&dir);
    for args in [
        ["discover", "--log-level", "warn", "--sysfs-root", &node],
        ["--log-level", "warn", "discover", "--sysfs-root", &node],
    ] {
        let out = vfpool_env(&args, &[("VFPOOL_LOG_LEVEL", "warning")]);
        assert!(out.status.success(), "{args:?}: {out:?}");
    }
}

/// `--log-level debug` used to print 1,500 lines of wasmtime's compiler ("translated to CLIF")
/// while compiling the embedded policies: wasmtime 48 renamed the target that was quieted.
#[test]
fn debug_logs_leave_out_the_wasm_compiler() {
    let dir = simulated("dell-cx5");
    let config = dir.path().join("config.json");
    std::fs::write(
        &config,
        r#"{"resourceList":[{"resourceName":"all","selectors":{}}]}"#,
    )
    .unwrap();
    let out = vfpool(&[
        "--log-level",
        "debug",
        "pools",
        "--sysfs-root",
        &node_path(&dir),
        "--config-file",
        config.to_str().unwrap(),
        "--policy-dir",
        dir.path().join("policies").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("CLIF") && stderr.lines().count() < 50,
        "{} lines: {}",
        stderr.lines().count(),
        stderr.lines().take(20).collect::<Vec<_>>().join("\n")
    );
}

/// `sim` counted every PCI function of the fixture, the NVMe drive `discover` ignores included
/// ("5 physical functions" on dell-cx5, where `discover` lists 4).
#[test]
fn sim_counts_the_functions_discover_lists() {
    let dir = tempfile::tempdir().unwrap();
    let out = vfpool(&[
        "sim",
        "--out",
        dir.path().join("node").to_str().unwrap(),
        "--fixture",
        "dell-cx5",
    ]);
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains(": 4 physical functions, 24 VFs, 0 sub-functions"),
        "{stdout}"
    );
}

/// The twins added for DESIGN.md's "every flag has an environment twin" show in --help as the
/// others do.
#[test]
fn new_environment_twins_show_in_help() {
    for (args, twin) in [
        (vec!["run", "--help"], "VFPOOL_LOG_DIR"),
        (
            vec!["policy", "check", "--help"],
            "VFPOOL_POLICY_CHECK_FIXTURE",
        ),
        (vec!["sim", "--help"], "VFPOOL_SIM_PRINT"),
        (vec!["demo", "--help"], "VFPOOL_DEMO_KEEP"),
    ] {
        let out = vfpool(&args);
        let help = String::from_utf8(out.stdout).unwrap();
        assert!(help.contains(&format!("[env: {twin}=")), "{args:?}: {help}");
    }
}

/// A `--resource-prefix` kubelet would refuse is a usage error naming the flag (exit 2) for every
/// command that takes it; it used to pass, and `vfpool run` then served no pools with a refused
/// config that no config change or SIGHUP could fix. An empty one is the default, as upstream.
#[test]
fn a_bad_resource_prefix_is_refused_when_the_command_starts() {
    let dir = simulated("dell-cx5");
    let node = node_path(&dir);
    for bad in [
        "Intel.com",
        "example.kubernetes.io",
        "-x.com",
        "a b",
        "intel.com/sriov",
    ] {
        let flag = format!("--resource-prefix={bad}");
        let out = vfpool(&["pools", "--sysfs-root", &node, &flag]);
        assert_eq!(out.status.code(), Some(2), "{bad}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("--resource-prefix") && err.contains(bad),
            "{bad}: {err}"
        );
        // The agent must refuse before it starts anything; it used to start and keep running,
        // serving no pools.
        let kubelet = dir.path().join("kubelet");
        let devinfo = dir.path().join("devinfo");
        let mut agent = Command::new(env!("CARGO_BIN_EXE_vfpool"))
            .args(["run", "--sysfs-root", &node, &flag, "--kubelet-dir"])
            .arg(&kubelet)
            .arg("--devinfo-dir")
            .arg(&devinfo)
            .env_remove("VFPOOL_SYSFS_ROOT")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let status = loop {
            if let Some(status) = agent.try_wait().unwrap() {
                break Some(status);
            }
            if std::time::Instant::now() > until {
                agent.kill().unwrap();
                agent.wait().unwrap();
                break None;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        assert_eq!(
            status.and_then(|s| s.code()),
            Some(2),
            "{bad}: vfpool run did not refuse the flag"
        );
    }
    let config = dir.path().join("config.json");
    std::fs::write(
        &config,
        r#"{"resourceList":[{"resourceName":"mlx","selectors":{"vendors":["15b3"]}}]}"#,
    )
    .unwrap();
    let out = vfpool(&[
        "pools",
        "--sysfs-root",
        &node,
        "--config-file",
        config.to_str().unwrap(),
        "--resource-prefix=",
    ]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("intel.com/mlx"),
        "{out:?}"
    );
}
