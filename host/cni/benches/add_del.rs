//! ADD+DEL latency of `vfpool-cni` against the Debian `host-device` plugin doing the same move
//! (same host-local IPAM, same kind of netns), and VERSION latency. Needs root; prints a skip
//! line otherwise. Run with `cargo bench -p vfpool-cni --bench add_del`.
//!
//! Each round runs one ADD+DEL of ours and one of host-device, alternating so that machine noise
//! hits both alike; the numbers are wall-clock times of the whole plugin processes, as a runtime
//! sees them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use common::{Netns, Node, Veth};
use serde_json::{Value, json};

const ROUNDS: usize = 100;

fn run_plugin(
    binary: &str,
    command: &str,
    netns: &str,
    ifname: &str,
    conf: &Value,
    env: &[(&str, String)],
) -> Result<Duration> {
    let start = Instant::now();
    let mut cmd = Command::new(binary);
    cmd.env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", "bench")
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", ifname)
        .env("CNI_PATH", common::CNI_PLUGIN_DIR);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    // A process that exits without reading stdin (the /bin/true floor) is not an error.
    if let Err(e) = child
        .stdin
        .take()
        .context("stdin")?
        .write_all(conf.to_string().as_bytes())
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        return Err(e.into());
    }
    let out = child.wait_with_output()?;
    let took = start.elapsed();
    ensure!(
        out.status.success(),
        "{binary} {command} failed: {} {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(took)
}

fn stats(mut v: Vec<Duration>) -> (Duration, Duration, Duration) {
    v.sort();
    let p = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    (p(0.5), p(0.9), v[0])
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn main() -> Result<()> {
    if !common::can_run() || !std::path::Path::new("/usr/lib/cni/host-device").exists() {
        println!("add_del: skipped (needs root, iproute2 and Debian containernetworking-plugins)");
        return Ok(());
    }
    let ours = env!("CARGO_BIN_EXE_vfpool-cni");
    let host_device = format!("{}/host-device", common::CNI_PLUGIN_DIR);

    let node = Node::new(1)?;
    let pod = Netns::new("bpod")?;
    let hd_pod = Netns::new("bpod")?;
    let hd_dev = common::unique("hd");
    let _hd_veth = Veth::new(&hd_dev, &common::unique("hdp"))?;
    let hd_ipam = node.dir.path().join("hd-ipam");

    let our_conf = node.netconf(0, json!({}));
    let hd_conf = json!({
        "cniVersion": "1.0.0",
        "name": "hd-bench",
        "type": "host-device",
        "device": hd_dev,
        "ipam": {
            "type": "host-local",
            "dataDir": hd_ipam,
            "ranges": [[{"subnet": "10.79.0.0/24", "gateway": "10.79.0.1"}]],
            "routes": [{"dst": "10.80.0.0/16"}]
        }
    });
    let our_env = [
        ("VFPOOL_SYSFS_ROOT", node.sysfs().display().to_string()),
        (
            "VFPOOL_CNI_STATE_DIR",
            node.state_dir().display().to_string(),
        ),
    ];

    let (mut our_add, mut our_del, mut hd_add, mut hd_del) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS + 5 {
        let a = run_plugin(ours, "ADD", &pod.path(), "net1", &our_conf, &our_env)?;
        let d = run_plugin(ours, "DEL", &pod.path(), "net1", &our_conf, &our_env)?;
        let ha = run_plugin(&host_device, "ADD", &hd_pod.path(), "net1", &hd_conf, &[])?;
        let hdd = run_plugin(&host_device, "DEL", &hd_pod.path(), "net1", &hd_conf, &[])?;
        if round >= 5 {
            // The first rounds warm the page cache and the binaries.
            our_add.push(a);
            our_del.push(d);
            hd_add.push(ha);
            hd_del.push(hdd);
        }
    }
    let total =
        |a: &[Duration], d: &[Duration]| a.iter().zip(d).map(|(a, d)| *a + *d).collect::<Vec<_>>();
    let our_med = stats(total(&our_add, &our_del)).0;
    let hd_med = stats(total(&hd_add, &hd_del)).0;

    let version_conf = json!({"cniVersion": "1.1.0"});
    let mut version = Vec::new();
    for _ in 0..200 {
        version.push(run_plugin(ours, "VERSION", "", "", &version_conf, &[])?);
    }
    let v_med = stats(version.clone()).0;
    // The floor: starting a process that does nothing, with the same harness (spawn, pipes,
    // wait), interleaved with VERSION runs so load affects both alike.
    let mut floor = Vec::new();
    for _ in 0..200 {
        floor.push(run_plugin(
            "/bin/true",
            "VERSION",
            "",
            "",
            &version_conf,
            &[],
        )?);
    }

    let row = |name: &str, v: Vec<Duration>| {
        let (med, p90, min) = stats(v);
        println!("| {name} | {} | {} | {} |", ms(med), ms(p90), ms(min));
    };
    println!("| measurement ({ROUNDS} rounds) | median | p90 | min |");
    println!("|---|---|---|---|");
    row(
        "vfpool-cni ADD+DEL (veth VF, host-local)",
        total(&our_add, &our_del),
    );
    row(
        "host-device ADD+DEL (veth, host-local)",
        total(&hd_add, &hd_del),
    );
    row("vfpool-cni ADD", our_add);
    row("host-device ADD", hd_add);
    row("vfpool-cni DEL", our_del);
    row("host-device DEL", hd_del);
    row("vfpool-cni VERSION (200 runs)", version);
    row("/bin/true, same harness (200 runs)", floor);
    let ratio = our_med.as_secs_f64() / hd_med.as_secs_f64();
    println!();
    println!("ADD+DEL median ratio vfpool-cni / host-device = {ratio:.2} (target <= 1.00)");
    println!("VERSION median {} (target < 2 ms)", ms(v_med));
    Ok(())
}
