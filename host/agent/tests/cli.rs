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
                && err.contains("VFPOOL_LOG")
                && err.contains("trace, debug, info, warn, error, off"),
            "{typo}: {err}"
        );
        assert!(out.stdout.is_empty(), "{typo}: {out:?}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_vfpool"))
        .args(["discover", "--sysfs-root", &node])
        .env("VFPOOL_LOG", "verbose")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("\"verbose\"") && err.contains("VFPOOL_LOG"),
        "{err}"
    );
    for good in ["WARN", "10", "info,vfpool=debug", "error"] {
        let out = vfpool(&["--log-level", good, "discover", "--sysfs-root", &node]);
        assert!(out.status.success(), "{good}: {out:?}");
    }
}
