//! Policy host benchmarks on the simulated 1,024-VF node (`large` fixture), printed as a Markdown
//! table for BENCHMARKS.md. Everything is measured in this run, baseline included: the same
//! selection as native Rust (the default selector's own logic compiled for the host).
//!
//! `cargo bench -p vfpool-policy --bench policy`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use vfpool_policy::{
    ActivePolicies, ChildCompiler, CompileLimits, Compiler, HostFacts, Limits, Policy,
    PolicyEngine, PolicyInventory, PolicyWatcher, ReloadOutcome, Settings, Sources, defaults,
};
use vfpool_sysfs::{DeviceKind, Inventory};

const CONFIG: &str = r#"{"resourceList":[
  {"resourceName":"cx6_numa0","selectors":{"vendors":["15b3"],"devices":["101c"],"drivers":["mlx5_core"],"pfNames":["ens1f0","ens3f0","ens5f0","ens7f0"]}},
  {"resourceName":"cx6_rest","selectors":[{"vendors":["15b3"],"devices":["101c"],"isRdma":true},{"drivers":["vfio-pci"]}]},
  {"resourceName":"intel","selectors":{"vendors":["8086"]}}]}"#;

fn stats(mut samples: Vec<Duration>) -> (Duration, Duration, Duration) {
    samples.sort();
    let median = samples[samples.len() / 2];
    let p99 = samples[(samples.len() * 99 / 100).min(samples.len() - 1)];
    (median, p99, samples[0])
}

fn time_n(n: usize, mut f: impl FnMut()) -> Vec<Duration> {
    (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect()
}

fn rss_kib() -> u64 {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn plain(inventory: &Inventory) -> Vec<upstream_selector::PlainDevice> {
    use upstream_selector::{Kind, PlainDevice};
    inventory
        .devices
        .iter()
        .map(|d| PlainDevice {
            id: d.id.clone(),
            kind: Some(match d.kind {
                DeviceKind::Pf => Kind::Pf,
                DeviceKind::Vf => Kind::Vf,
                DeviceKind::Aux => Kind::Aux,
            }),
            vendor: d.vendor.clone(),
            device: d.device.clone(),
            class_code: d.class.clone(),
            driver: d.driver.clone(),
            acpi_index: d.acpi_index,
            sriov_total_vfs: d.sriov_total_vfs,
            sriov_num_vfs: d.sriov_num_vfs,
            pf_id: d.pf_id.clone(),
            pf_name: d.pf_name.clone(),
            vf_index: d.vf_index,
            link_type: d.link_type.clone(),
            has_rdma: !d.rdma_devices.is_empty(),
            devlink_enable_rdma: None,
            pkey: d.pkey.clone(),
            first_vdpa_driver: d.vdpa_devices.first().and_then(|v| v.driver.clone()),
            aux_type: d.aux_type.clone(),
            sf_num: d.sf_num,
            carries_default_route: false,
            ddp_profile: None,
        })
        .collect()
}

/// The bench binary is also the compiler process of the hot-swap measurement (as the agent's
/// binary is the agent's): `BENCH compile-worker --cpu-seconds N --memory-bytes N --parent-pid N`.
fn serve_compile_worker(args: &[String]) -> bool {
    if args.get(1).map(String::as_str) != Some("compile-worker") {
        return false;
    }
    let value = |flag: &str| -> u64 {
        let at = args.iter().position(|a| a == flag).unwrap();
        args[at + 1].parse().unwrap()
    };
    let limits = CompileLimits::new(
        Duration::from_secs(value("--cpu-seconds")),
        value("--memory-bytes"),
    );
    if let Err(e) =
        vfpool_policy::isolate::serve_worker(limits, u32::try_from(value("--parent-pid")).unwrap())
    {
        eprintln!("{e}");
        std::process::exit(e.exit_code());
    }
    true
}

/// Compiles modules as the agent does: in a child process, this binary.
#[allow(unsafe_code)]
fn child_compiler() -> Compiler {
    // SAFETY: the program is this bench binary, whose `compile-worker` is
    // `serve_compile_worker` above.
    Compiler::Child(unsafe {
        ChildCompiler::new(
            std::env::current_exe().unwrap(),
            vec!["compile-worker".into()],
            CompileLimits::default(),
        )
    })
}

fn main() {
    if serve_compile_worker(&std::env::args().collect::<Vec<_>>()) {
        return;
    }
    let rss_start = rss_kib();
    let node = tempfile::tempdir().unwrap();
    let fixture = vfpool_sysfs::sim::Fixture::load("large").unwrap();
    vfpool_sysfs::sim::write_tree(&fixture, node.path()).unwrap();
    let inventory = vfpool_sysfs::discover(&vfpool_sysfs::SysfsRoot::new(node.path())).unwrap();
    let vfs: Vec<String> = inventory
        .devices
        .iter()
        .filter(|d| d.kind == DeviceKind::Vf)
        .map(|d| d.id.clone())
        .collect();
    let policy_inventory = PolicyInventory::new(&inventory, &HostFacts::default());
    let settings = Settings {
        config: CONFIG.to_string(),
        default_resource_prefix: "intel.com".to_string(),
    };
    let mut rows: Vec<(String, String)> = Vec::new();
    let fmt = |d: Duration| format!("{:.1} µs", d.as_secs_f64() * 1e6);

    let rss_before_engine = rss_kib();
    let t = Instant::now();
    let engine = PolicyEngine::new(Limits::default()).unwrap();
    rows.push(("engine + linker + ticker".into(), fmt(t.elapsed())));
    let selector =
        Policy::compile(&engine, "upstream-selector", defaults::UPSTREAM_SELECTOR).unwrap();
    rows.push((
        format!(
            "compile upstream-selector ({} KiB)",
            defaults::UPSTREAM_SELECTOR.len() / 1024
        ),
        fmt(selector.compile_time()),
    ));
    let allocator =
        Policy::compile(&engine, "packed-allocator", defaults::PACKED_ALLOCATOR).unwrap();
    rows.push((
        format!(
            "compile packed-allocator ({} KiB)",
            defaults::PACKED_ALLOCATOR.len() / 1024
        ),
        fmt(allocator.compile_time()),
    ));

    // For profiles: `VFPOOL_BENCH_LOOP=prefer perf record -g target/release/deps/policy-* --bench`
    // runs only that call for 5 s, so the profile holds nothing else.
    if let Ok(call) = std::env::var("VFPOOL_BENCH_LOOP") {
        let until = Instant::now() + Duration::from_secs(5);
        let mut calls = 0u64;
        while Instant::now() < until {
            match call.as_str() {
                "select" => drop(selector.select(&settings, &policy_inventory).unwrap()),
                "prefer" => drop(
                    allocator
                        .prefer(&settings, &policy_inventory, "intel.com/x", &vfs, &[], 4)
                        .unwrap(),
                ),
                other => panic!("VFPOOL_BENCH_LOOP: unknown call {other:?} (select, prefer)"),
            }
            calls += 1;
        }
        println!("{call}: {calls} calls in 5 s");
        return;
    }

    let t = Instant::now();
    let pools = selector.select(&settings, &policy_inventory).unwrap().value;
    rows.push(("first select (1,024 VFs)".into(), fmt(t.elapsed())));
    let selected: usize = pools.iter().map(|p| p.devices.len()).sum();
    assert!(
        selected >= 1024,
        "the benchmark config selects every VF ({selected})"
    );

    let wasm = stats(time_n(300, || {
        selector.select(&settings, &policy_inventory).unwrap();
    }));
    let devices = plain(&inventory);
    let native = stats(time_n(300, || {
        let config = upstream_selector::parse(&settings.config, "intel.com").unwrap();
        std::hint::black_box(upstream_selector::select(&config, &devices));
    }));
    rows.push((
        format!("select, WASM (median / p99 / min), {selected} devices pooled"),
        format!("{} / {} / {}", fmt(wasm.0), fmt(wasm.1), fmt(wasm.2)),
    ));
    rows.push((
        "select, same logic native (median / p99 / min)".into(),
        format!("{} / {} / {}", fmt(native.0), fmt(native.1), fmt(native.2)),
    ));
    rows.push((
        "select WASM / native (median)".into(),
        format!("{:.2}×", wasm.0.as_secs_f64() / native.0.as_secs_f64()),
    ));
    let empty = Settings {
        config: String::new(),
        default_resource_prefix: "intel.com".to_string(),
    };
    let passing = stats(time_n(300, || {
        selector.select(&empty, &policy_inventory).unwrap();
    }));
    rows.push((
        "select with an empty config: instantiate + pass 1,032 records in, nothing out (median)"
            .into(),
        fmt(passing.0),
    ));
    let tiny = PolicyInventory::new(&Inventory::default(), &HostFacts::default());
    let bare = stats(time_n(300, || {
        selector.select(&settings, &tiny).unwrap();
    }));
    rows.push((
        "select on an empty inventory: instantiate + config parse (median)".into(),
        fmt(bare.0),
    ));
    let validate = stats(time_n(300, || {
        selector.validate_selector_settings(&settings).unwrap();
    }));
    rows.push(("validate-settings (median)".into(), fmt(validate.0)));

    let t = Instant::now();
    allocator
        .prefer(&settings, &policy_inventory, "intel.com/x", &vfs, &[], 4)
        .unwrap();
    rows.push((
        "first prefer (1,024 available, size 4)".into(),
        fmt(t.elapsed()),
    ));
    let prefer = stats(time_n(300, || {
        allocator
            .prefer(&settings, &policy_inventory, "intel.com/x", &vfs, &[], 4)
            .unwrap();
    }));
    rows.push((
        "prefer, 1,024 available, size 4 (median / p99 / min)".into(),
        format!("{} / {} / {}", fmt(prefer.0), fmt(prefer.1), fmt(prefer.2)),
    ));
    let small: Vec<String> = vfs.iter().take(128).cloned().collect();
    let prefer_small = stats(time_n(300, || {
        allocator
            .prefer(&settings, &policy_inventory, "intel.com/x", &small, &[], 4)
            .unwrap();
    }));
    rows.push((
        "prefer, 128 available, size 4 (median)".into(),
        fmt(prefer_small.0),
    ));
    let rss_loaded = rss_kib();

    // The same calls with every instance mapping fresh memory (no pre-reserved slots), for the
    // effect of the instance pool.
    let unpooled_engine = PolicyEngine::new(Limits {
        pool_instances: false,
        ..Limits::default()
    })
    .unwrap();
    let unpooled_selector = Policy::compile(
        &unpooled_engine,
        "upstream-selector",
        defaults::UPSTREAM_SELECTOR,
    )
    .unwrap();
    let unpooled_allocator = Policy::compile(
        &unpooled_engine,
        "packed-allocator",
        defaults::PACKED_ALLOCATOR,
    )
    .unwrap();
    let unpooled_select = stats(time_n(300, || {
        unpooled_selector
            .select(&settings, &policy_inventory)
            .unwrap();
    }));
    let unpooled_prefer = stats(time_n(300, || {
        unpooled_allocator
            .prefer(&settings, &policy_inventory, "intel.com/x", &vfs, &[], 4)
            .unwrap();
    }));
    rows.push((
        "without the instance pool: select / prefer 1,024 (median)".into(),
        format!(
            "{} ({:.2}× pooled) / {} ({:.2}× pooled)",
            fmt(unpooled_select.0),
            unpooled_select.0.as_secs_f64() / wasm.0.as_secs_f64(),
            fmt(unpooled_prefer.0),
            unpooled_prefer.0.as_secs_f64() / prefer.0.as_secs_f64(),
        ),
    ));
    drop((unpooled_selector, unpooled_allocator, unpooled_engine));

    rows.push((
        "RSS: process / added by engine + both defaults + calls".into(),
        format!(
            "{} MiB / {} MiB (before: {} MiB)",
            rss_loaded / 1024,
            rss_loaded.saturating_sub(rss_before_engine) / 1024,
            rss_start / 1024
        ),
    ));

    // Hot swap: rename a module into the watched directory → the new pools computed.
    let policies_dir = tempfile::tempdir().unwrap();
    let config_dir = tempfile::tempdir().unwrap();
    let config = config_dir.path().join("config.json");
    fs::write(&config, CONFIG).unwrap();
    let sources = Sources {
        policy_dir: Some(policies_dir.path().to_path_buf()),
        config_file: Some(config),
        default_resource_prefix: "intel.com".into(),
    };
    // As the agent compiles a module from the policy directory: in a child process.
    let agent_engine =
        PolicyEngine::with_compiler(Limits::default(), None, child_compiler()).unwrap();
    let active = Arc::new(ActivePolicies::new(agent_engine).unwrap());
    let shared_inventory = Arc::new(policy_inventory.clone());
    assert!(active.reload(&sources, &shared_inventory).changed);
    let (tx, rx) = mpsc::channel::<Instant>();
    let debounce = Duration::from_millis(50);
    let inventory_for_watcher = Arc::clone(&shared_inventory);
    let _watcher = PolicyWatcher::spawn(
        Arc::clone(&active),
        sources,
        debounce,
        Duration::from_secs(30),
        move || (*inventory_for_watcher).clone(),
        move |outcome: &ReloadOutcome| {
            if outcome.changed {
                let _ = tx.send(Instant::now());
            }
        },
    )
    .unwrap();
    let probe = fs::read(format!("{}/probe.wasm", defaults::BUILT_COMPONENTS_DIR)).unwrap();
    let target = policies_dir.path().join("selector.wasm");
    let mut swaps = Vec::new();
    for round in 0..6 {
        let started = if round % 2 == 0 {
            let tmp = policies_dir.path().join(".selector.wasm.tmp");
            fs::write(&tmp, &probe).unwrap();
            let t = Instant::now();
            fs::rename(&tmp, &target).unwrap();
            t
        } else {
            let t = Instant::now();
            fs::remove_file(&target).unwrap();
            t
        };
        let done = rx.recv_timeout(Duration::from_secs(30)).unwrap();
        swaps.push(done - started);
    }
    let swap = stats(swaps);
    rows.push((
        format!(
            "hot swap: rename → new pools computed (compiled in a child process, as the agent does), debounce {} ms (median / max of 6)",
            debounce.as_millis()
        ),
        format!("{} / {}", fmt(swap.0), fmt(swap.1)),
    ));

    println!("| measurement (1,024-VF `large` node) | value |");
    println!("|---|---|");
    for (what, value) in rows {
        println!("| {what} | {value} |");
    }
}
