//! Discovery benchmark: the 8 PF × 128 VF node, on tmpfs, against a baseline measured in the same
//! run — a plain loop that only reads the same attribute files, links and directories discovery
//! reads, with none of its parsing, linking or allocation.
//!
//! Budget (issue 2): full discovery under 30 ms, and within 2× the baseline.
//! Run: `cargo bench -p vfpool-sysfs --bench discovery` (or `make bench`).

// A benchmark is a test harness: a failed setup step should stop it loudly.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vfpool_sysfs::sim::{Fixture, write_tree};
use vfpool_sysfs::{SysfsRoot, discover, discover_pci_device};

const RUNS: usize = 60;
const BUDGET: Duration = Duration::from_millis(30);
const MAX_RATIO: f64 = 2.0;

enum Read {
    File(PathBuf),
    Link(PathBuf),
    Dir(PathBuf),
}

/// The reads discovery performs on this tree, listed once up front.
fn baseline_reads(root: &Path) -> Vec<Read> {
    let bus = root.join("bus/pci/devices");
    let mut reads = vec![Read::Dir(bus.clone())];
    let mut names: Vec<_> = fs::read_dir(&bus)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    for name in names {
        let dev = bus.join(&name);
        reads.push(Read::Link(dev.clone()));
        reads.push(Read::Dir(dev.clone()));
        let class = fs::read_to_string(dev.join("class")).unwrap_or_default();
        if !(class.starts_with("0x02") || class.starts_with("0x12")) {
            continue;
        }
        for file in ["modalias", "numa_node", "sriov_totalvfs", "sriov_numvfs"] {
            if dev.join(file).exists() {
                reads.push(Read::File(dev.join(file)));
            }
        }
        for link in ["driver", "iommu_group", "physfn"] {
            if dev.join(link).exists() {
                reads.push(Read::Link(dev.join(link)));
            }
        }
        for entry in fs::read_dir(&dev).unwrap() {
            let entry = entry.unwrap().file_name().into_string().unwrap();
            if entry.starts_with("virtfn") {
                reads.push(Read::Link(dev.join(entry)));
            }
        }
        for dir in ["infiniband"] {
            if dev.join(dir).exists() {
                reads.push(Read::Dir(dev.join(dir)));
            }
        }
        let net = dev.join("net");
        if net.exists() {
            reads.push(Read::Dir(net.clone()));
            let is_pf = !dev.join("physfn").exists();
            for netdev in fs::read_dir(&net).unwrap() {
                let netdev = netdev.unwrap().path();
                let representor: &[&str] = if is_pf {
                    &["phys_port_name", "phys_switch_id"]
                } else {
                    &[]
                };
                for file in ["type", "operstate", "carrier", "address", "mtu"]
                    .iter()
                    .chain(representor)
                {
                    reads.push(Read::File(netdev.join(file)));
                }
            }
        }
    }
    reads
}

fn run_baseline(reads: &[Read]) -> usize {
    let mut bytes = 0;
    for read in reads {
        match read {
            Read::File(p) => bytes += fs::read_to_string(p).map(|s| s.len()).unwrap_or(0),
            Read::Link(p) => bytes += fs::read_link(p).map(|t| t.as_os_str().len()).unwrap_or(0),
            Read::Dir(p) => {
                bytes += fs::read_dir(p)
                    .map(|d| d.filter_map(Result::ok).map(|e| e.file_name().len()).sum())
                    .unwrap_or(0)
            }
        }
    }
    bytes
}

fn stats(mut samples: Vec<Duration>) -> (Duration, Duration, Duration) {
    samples.sort();
    let median = samples[samples.len() / 2];
    let p95 = samples[samples.len() * 95 / 100];
    (samples[0], median, p95)
}

/// The CNI plugin's one-device lookup (every ADD) on a switchdev PF with 1,024 VFs, each with a
/// representor netdev on the PF, against a full scan of that node in the same run. No budget: it
/// records what the lookup costs where representors are many (it read every representor's
/// attributes, 29 ms; their port names only now).
fn switchdev_lookup(shm: &Path) {
    const NODE: &str = r#"
[[function]]
address = "0000:03:00.0"
vendor = "15b3"
device = "101d"
class = "020000"
driver = "mlx5_core"
netdevs = ["p0"]
switchdev = true
total_vfs = 1024

[function.vfs]
count = 1024
device = "101e"
driver = "mlx5_core"
offset = 2
stride = 1
netdev = "enp3s0f0v{index}"
"#;
    let dir = if shm.is_dir() {
        tempfile::tempdir_in(shm).unwrap()
    } else {
        tempfile::tempdir().unwrap()
    };
    write_tree(
        &Fixture::from_toml(NODE, "switchdev-1024").unwrap(),
        dir.path(),
    )
    .unwrap();
    let root = SysfsRoot::new(dir.path());
    let (mut lookups, mut scans) = (Vec::new(), Vec::new());
    for _ in 0..RUNS / 2 {
        let t = Instant::now();
        black_box(discover_pci_device(&root, "0000:03:04.1").unwrap());
        lookups.push(t.elapsed());
        let t = Instant::now();
        black_box(discover(&root).unwrap());
        scans.push(t.elapsed());
    }
    let (l_min, l_med, l_p95) = stats(lookups);
    let (_, s_med, _) = stats(scans);
    println!(
        "switchdev PF, 1,024 VFs and representors: one-device lookup min {l_min:>9.2?}  median {l_med:>9.2?}  p95 {l_p95:>9.2?}; full scan median {s_med:.2?} (ratio {:.2})",
        l_med.as_secs_f64() / s_med.as_secs_f64()
    );
}

fn main() {
    let shm = Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        tempfile::tempdir_in(shm).unwrap()
    } else {
        tempfile::tempdir().unwrap()
    };
    let fixture = Fixture::load("large").unwrap();
    let summary = write_tree(&fixture, dir.path()).unwrap();
    let root = SysfsRoot::new(dir.path());
    let reads = baseline_reads(dir.path());

    // Warm the dentry cache for both, then interleave runs so that noise hits both alike.
    let devices = discover(&root).unwrap().devices.len();
    run_baseline(&reads);
    let (mut d_samples, mut b_samples) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        let t = Instant::now();
        black_box(discover(&root).unwrap());
        d_samples.push(t.elapsed());
        let t = Instant::now();
        black_box(run_baseline(&reads));
        b_samples.push(t.elapsed());
    }
    let (d_min, d_med, d_p95) = stats(d_samples);
    let (b_min, b_med, b_p95) = stats(b_samples);
    let ratio = d_med.as_secs_f64() / b_med.as_secs_f64();
    println!(
        "node: {} PFs, {} VFs; discovered {devices} devices; baseline does {} reads",
        summary.physical_functions,
        summary.virtual_functions,
        reads.len()
    );
    println!("discover   min {d_min:>9.2?}  median {d_med:>9.2?}  p95 {d_p95:>9.2?}");
    println!("baseline   min {b_min:>9.2?}  median {b_med:>9.2?}  p95 {b_p95:>9.2?}");
    println!("ratio (median discover / median baseline): {ratio:.2} (budget {MAX_RATIO})");
    switchdev_lookup(shm);
    let ok = d_med <= BUDGET && ratio <= MAX_RATIO;
    println!(
        "budget: median {d_med:.2?} <= {BUDGET:?} and ratio {ratio:.2} <= {MAX_RATIO}: {}",
        if ok { "met" } else { "MISSED" }
    );
    if !ok {
        std::process::exit(1);
    }
}
