//! The real `vfpool run` binary on the 1,024-VF simulated node (`large`) against the kubelet
//! simulator: time to advertise all devices, agent RSS (steady, after 256 allocations, peak),
//! kubelet restart → every device allocatable again (the issue asks for re-registration within a
//! second), and config change → kubelet sees the new pool end to end (includes the watcher's
//! 200 ms debounce).
//!
//! Run: `cargo bench -p vfpool-agent --bench agent`. Prints one table; no assertions on numbers.
//! `VFPOOL_BENCH_BIN=PATH` runs another build of `vfpool` instead of this one (to compare two
//! builds in the same session, on the same machine state).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vfpool_kubelet_sim::{KubeletSim, SimOptions};

const GUARD: Duration = Duration::from_secs(120);

fn status_kib(pid: u32, key: &str) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

async fn run() {
    let tmp = tempfile::tempdir().unwrap();
    let sys = tmp.path().join("sys");
    let fixture = vfpool_sysfs::sim::Fixture::load("large").unwrap();
    vfpool_sysfs::sim::write_tree(&fixture, &sys).unwrap();
    let config = tmp.path().join("etc/config.json");
    fs::create_dir_all(config.parent().unwrap()).unwrap();
    fs::write(
        &config,
        r#"{"resourceList":[{"resourceName":"large","selectors":{"vendors":["15b3"],"devices":["101c"],"isRdma":true}}]}"#,
    )
    .unwrap();
    let kubelet = tmp.path().join("kubelet");
    fs::create_dir_all(&kubelet).unwrap();
    // Registration on `device-plugins/kubelet.sock`, as in the rows measured before (a kubelet
    // restart then deletes the pools' sockets and the agent must notice and register again).
    let mut sim = KubeletSim::start(&kubelet, SimOptions::LEGACY)
        .await
        .unwrap();
    let start = Instant::now();
    let binary = std::env::var_os("VFPOOL_BENCH_BIN").map_or_else(
        || env!("CARGO_BIN_EXE_vfpool").into(),
        std::path::PathBuf::from,
    );
    let mut child = Command::new(&binary)
        .arg("run")
        .arg("--sysfs-root")
        .arg(&sys)
        .arg("--config-file")
        .arg(&config)
        .arg("--kubelet-dir")
        .arg(&kubelet)
        .arg("--devinfo-dir")
        .arg(tmp.path().join("devinfo"))
        .arg("--policy-dir")
        .arg(tmp.path().join("policies"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let name = "intel.com/large";
    sim.wait_for("1024 devices", GUARD, |r| {
        r.get(name).is_some_and(|v| v.allocatable() == 1024)
    })
    .await
    .unwrap();
    let startup = start.elapsed();
    let steady = status_kib(pid, "VmRSS:");
    for i in 0..256 {
        sim.allocate_pod(&format!("pod-{i}"), name, 1)
            .await
            .unwrap();
    }
    let after = status_kib(pid, "VmRSS:");

    // kubelet restarts (its sockets deleted and made again): every device allocatable again.
    let mut restarts = Vec::new();
    for _ in 0..5 {
        let restart = Instant::now();
        sim.restart().await.unwrap();
        assert!(
            sim.resource(name).is_none_or(|v| !v.connected),
            "kubelet's view survived its restart"
        );
        let before = sim.registrations().len();
        sim.wait_for("1024 devices after a kubelet restart", GUARD, |r| {
            r.get(name)
                .is_some_and(|v| v.connected && v.allocatable() == 1024)
        })
        .await
        .unwrap();
        restarts.push(restart.elapsed());
        assert!(sim.registrations().len() > before, "no new registration");
    }
    restarts.sort();

    // Config change → the new pool is visible to kubelet.
    let tmp_config = tmp.path().join("etc/.config.tmp");
    fs::write(
        &tmp_config,
        r#"{"resourceList":[{"resourceName":"large2","selectors":{"vendors":["15b3"],"devices":["101c"]}}]}"#,
    )
    .unwrap();
    let swap = Instant::now();
    fs::rename(&tmp_config, &config).unwrap();
    sim.wait_for("the renamed pool", GUARD, |r| {
        r.contains_key("intel.com/large2")
    })
    .await
    .unwrap();
    let swap_latency = swap.elapsed();
    let peak = status_kib(pid, "VmHWM:");

    Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    sim.shutdown();

    println!("vfpool run on the 1,024-VF node (release build)");
    println!("  start -> 1024 devices allocatable in kubelet      {startup:>10.1?}");
    println!(
        "  RSS steady (1024 devices served)                   {:>7.1} MiB",
        steady as f64 / 1024.0
    );
    println!(
        "  RSS after 256 Allocate calls                       {:>7.1} MiB",
        after as f64 / 1024.0
    );
    println!(
        "  RSS peak (VmHWM, incl. policy compile + hot swap)  {:>7.1} MiB",
        peak as f64 / 1024.0
    );
    println!(
        "  kubelet restart -> 1024 allocatable again          {:>10.1?} median, {:.1?} max of {}",
        restarts[restarts.len() / 2],
        restarts[restarts.len() - 1],
        restarts.len()
    );
    println!(
        "  config change -> kubelet sees the new pool         {swap_latency:>10.1?} (incl. 200 ms debounce)"
    );
    println!("  SIGTERM exit status                                {status}");
}
