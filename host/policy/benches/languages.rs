//! Policies in other languages: compile time, load time from the precompiled-module cache,
//! first-call and per-call latency, and resident memory, for the example policies in Rust, Python
//! and JavaScript (`policies/examples/`, built by `make policies`).
//!
//! Each measurement runs in a fresh child process (this binary, re-executed) so that the memory
//! numbers belong to one policy alone: `VmRSS` after the calls and `VmHWM` (the peak, which
//! includes Cranelift's working memory while compiling).
//!
//! Run: `make policies && cargo bench -p vfpool-policy --bench languages`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use vfpool_policy::{
    CompileCache, HostFacts, Limits, Policy, PolicyEngine, PolicyInventory, Settings, defaults,
};
use vfpool_sysfs::{DeviceKind, SysfsRoot};

const CALLS: usize = 30;

struct Case {
    language: &'static str,
    file: &'static str,
    selector: bool,
    config: &'static str,
}

const CASES: &[Case] = &[
    Case {
        language: "Rust (rust-starter)",
        file: "rust_starter.wasm",
        selector: true,
        config: "",
    },
    Case {
        language: "Python (python-selector)",
        file: "python_selector.wasm",
        selector: true,
        config: r#"{"pools":[{"name":"{pf}_numa{numa}","pf":["ens1f0","ens2f0","ens3f0","ens4f0","ens5f0","ens6f0","ens7f0","ens8f0"]}]}"#,
    },
    Case {
        language: "Rust (packed-allocator, default)",
        file: "packed_allocator.wasm",
        selector: false,
        config: "",
    },
    Case {
        language: "JavaScript (js-allocator)",
        file: "js_allocator.wasm",
        selector: false,
        config: "",
    },
];

fn path_of(file: &str) -> PathBuf {
    let built = PathBuf::from(defaults::BUILT_COMPONENTS_DIR).join(file);
    if built.exists() {
        return built;
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../policies/examples/target")
        .join(file)
}

fn main() {
    // `cargo bench` passes `--bench`; the child gets its case through the environment.
    if let Ok(spec) = std::env::var("VFPOOL_BENCH_CHILD") {
        child(&spec);
        return;
    }
    let cache_dir = tempfile::tempdir().unwrap();
    println!(
        "| policy | component | compile | load from cache | first call | per call (median of {CALLS}) | RSS after calls | peak RSS |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (index, case) in CASES.iter().enumerate() {
        let path = path_of(case.file);
        let size = std::fs::metadata(&path)
            .unwrap_or_else(|e| panic!("{}: {e}: run `make policies` first", path.display()))
            .len();
        for mode in ["compile", "cached"] {
            let out = Command::new(std::env::current_exe().unwrap())
                .env("VFPOOL_BENCH_CHILD", format!("{index}:{mode}"))
                .env("VFPOOL_BENCH_CACHE", cache_dir.path().join("c"))
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let line = String::from_utf8(out.stdout).unwrap();
            let f: Vec<&str> = line.trim().split('\t').collect();
            let (load, first, per_call, rss, hwm) = (f[0], f[1], f[2], f[3], f[4]);
            let (compile, cached) = if mode == "compile" {
                (load, "-")
            } else {
                ("-", load)
            };
            println!(
                "| {} | {:.1} MB | {compile} | {cached} | {first} | {per_call} | {rss} | {hwm} |",
                case.language,
                size as f64 / 1e6
            );
        }
    }
}

/// One measurement: `index:mode`, mode `compile` (no cache; fills the cache) or `cached`.
fn child(spec: &str) {
    let (index, mode) = spec.split_once(':').unwrap();
    let case = &CASES[index.parse::<usize>().unwrap()];
    let bytes = std::fs::read(path_of(case.file)).unwrap();
    let cache =
        CompileCache::open(&PathBuf::from(std::env::var("VFPOOL_BENCH_CACHE").unwrap())).unwrap();
    let engine = PolicyEngine::with_cache(Limits::default(), Some(cache.clone())).unwrap();
    if mode == "compile" {
        // A cold compile: whatever an earlier run left is removed first.
        for entry in std::fs::read_dir(cache.dir()).unwrap().flatten() {
            std::fs::remove_file(entry.path()).unwrap();
        }
    }

    // The `large` node: 8 PFs x 128 VFs.
    let fixture = vfpool_sysfs::sim::Fixture::load("large").unwrap();
    let dir = tempfile::tempdir().unwrap();
    vfpool_sysfs::sim::write_tree(&fixture, dir.path()).unwrap();
    let devices = vfpool_sysfs::discover(&SysfsRoot::new(dir.path())).unwrap();
    let inventory = PolicyInventory::new(&devices, &HostFacts::default());
    let available: Vec<String> = devices
        .devices
        .iter()
        .filter(|d| d.kind == DeviceKind::Vf)
        .map(|d| d.id.clone())
        .collect();
    let settings = Settings {
        config: case.config.to_string(),
        default_resource_prefix: "intel.com".to_string(),
    };

    let started = Instant::now();
    let policy = Policy::compile(&engine, case.file, &bytes).unwrap();
    let load = started.elapsed();
    let call = || {
        if case.selector {
            let pools = policy.select(&settings, &inventory).unwrap().value;
            assert!(!pools.is_empty());
        } else {
            let ids = policy
                .prefer(&settings, &inventory, "intel.com/p", &available, &[], 4)
                .unwrap()
                .value;
            assert_eq!(ids.len(), 4);
        }
    };
    let started = Instant::now();
    call();
    let first = started.elapsed();
    let mut times: Vec<Duration> = (0..CALLS)
        .map(|_| {
            let started = Instant::now();
            call();
            started.elapsed()
        })
        .collect();
    times.sort();
    let median = times[CALLS / 2];
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .map(|kb| format!("{:.0} MB", kb.parse::<f64>().unwrap() / 1024.0))
            .unwrap()
    };
    println!(
        "{}\t{}\t{}\t{}\t{}",
        human(load),
        human(first),
        human(median),
        field("VmRSS:"),
        field("VmHWM:")
    );
}

fn human(d: Duration) -> String {
    if d >= Duration::from_secs(1) {
        format!("{:.2} s", d.as_secs_f64())
    } else {
        format!("{:.2} ms", d.as_secs_f64() * 1e3)
    }
}
