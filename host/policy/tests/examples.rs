//! The example policies of `policies/examples/` (Python, JavaScript, Rust) through the real host:
//! each loads with the right exports, its `validate-settings` refuses bad settings with a message
//! that names the field, and it produces the expected pools or preferences on the shipped
//! simulated nodes (`host/sysfs/fixtures/`).
//!
//! The Python and JavaScript components are built by `make policies` (scripts/build-policies.sh;
//! `make test` runs it first). A missing one fails the test and says so: never a silent skip.
//! Each big component is compiled once per test binary and shared.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::OnceLock;

use vfpool_policy::{
    HostFacts, Limits, Policy, PolicyEngine, PolicyInventory, Pool, Settings, defaults,
};
use vfpool_sysfs::{Device, DeviceKind, SysfsRoot};

fn engine() -> &'static PolicyEngine {
    static ENGINE: OnceLock<PolicyEngine> = OnceLock::new();
    ENGINE.get_or_init(|| PolicyEngine::new(Limits::default()).expect("engine"))
}

/// Where scripts/build-policies.sh puts the example components.
fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../policies/examples/target")
}

/// Reads a built example, failing with the fix when it is missing.
fn example_bytes(file: &str) -> Vec<u8> {
    let path = examples_dir().join(file);
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "the example policy {} is missing ({e}): run `make policies` (scripts/build-policies.sh) \
             to build the example policies from source, then run the tests again",
            path.display()
        )
    })
}

fn compile(name: &str, bytes: &[u8]) -> Policy {
    Policy::compile(engine(), name, bytes).unwrap_or_else(|e| panic!("{name} does not load: {e}"))
}

fn python() -> &'static Policy {
    static P: OnceLock<Policy> = OnceLock::new();
    P.get_or_init(|| {
        compile(
            "python_selector.wasm",
            &example_bytes("python_selector.wasm"),
        )
    })
}

fn js() -> &'static Policy {
    static P: OnceLock<Policy> = OnceLock::new();
    P.get_or_init(|| compile("js_allocator.wasm", &example_bytes("js_allocator.wasm")))
}

fn rust_starter() -> &'static Policy {
    static P: OnceLock<Policy> = OnceLock::new();
    P.get_or_init(|| {
        let path = PathBuf::from(defaults::BUILT_COMPONENTS_DIR).join("rust_starter.wasm");
        compile(
            "rust_starter.wasm",
            &std::fs::read(path).expect("built by build.rs"),
        )
    })
}

fn packed() -> &'static Policy {
    static P: OnceLock<Policy> = OnceLock::new();
    P.get_or_init(|| compile("packed", defaults::PACKED_ALLOCATOR))
}

/// A shipped fixture's devices, discovered from a simulated sysfs tree (as `--fixture` does).
fn fixture(name: &str) -> (Vec<Device>, PolicyInventory) {
    let fixture = vfpool_sysfs::sim::Fixture::load(name).unwrap();
    let dir = tempfile::tempdir().unwrap();
    vfpool_sysfs::sim::write_tree(&fixture, dir.path()).unwrap();
    let inventory = vfpool_sysfs::discover(&SysfsRoot::new(dir.path())).unwrap();
    let policy_inventory = PolicyInventory::new(&inventory, &HostFacts::default());
    (inventory.devices, policy_inventory)
}

fn settings(config: &str) -> Settings {
    Settings {
        config: config.to_string(),
        default_resource_prefix: "intel.com".to_string(),
    }
}

/// The VFs of the PF whose netdev is `pf`, sorted by id (discovery's order).
fn vfs_of(devices: &[Device], pf: &str) -> Vec<String> {
    devices
        .iter()
        .filter(|d| d.kind == DeviceKind::Vf && d.pf_name.as_deref() == Some(pf))
        .map(|d| d.id.clone())
        .collect()
}

fn pools_by_name(pools: &[Pool]) -> BTreeMap<String, Vec<String>> {
    pools
        .iter()
        .map(|p| {
            (
                p.resource_name.clone(),
                p.devices.iter().map(|d| d.id.clone()).collect(),
            )
        })
        .collect()
}

/// Asserts that `validate-settings` refuses `config` naming `field`, with `words` in the message.
fn assert_refused(
    validate: impl Fn(&Settings) -> Result<(), vfpool_policy::PolicyCallError>,
    config: &str,
    field: &str,
    words: &str,
) {
    let error = validate(&settings(config)).expect_err(config);
    let (got_field, message) = error
        .invalid_settings()
        .unwrap_or_else(|| panic!("{config}: not an invalid-settings error: {error}"));
    assert_eq!(got_field, field, "{config}: {message}");
    assert!(
        message.contains(words),
        "{config}: message {message:?} lacks {words:?}"
    );
}

// ---- Python selector ----

const PY_CONFIG: &str = r#"{"pools":[
    {"name":"fast_numa0","pf":["ens1f0"],"numa":0},
    {"name":"{pf}_numa{numa}","pf":["ens1f1","ens2f0","ens2f1"],"rdma":true}
]}"#;

#[test]
fn python_selector_exports_only_the_selector() {
    let roles = python().roles();
    assert!(roles.selector && !roles.allocator, "{roles:?}");
}

#[test]
fn python_selector_refuses_bad_settings_naming_the_field() {
    let validate = |s: &Settings| python().validate_selector_settings(s).map(|_| ());
    for (config, field, words) in [
        ("", "", "no settings"),
        ("{", "", "not valid JSON"),
        ("[]", "", "JSON object"),
        (r#"{"pools":[]}"#, "pools", "non-empty list"),
        (r#"{"resourceList":[]}"#, "pools", "non-empty list"),
        (
            r#"{"pools":[{"pf":["ens1f0"]}]}"#,
            "pools[0].name",
            "missing",
        ),
        (
            r#"{"pools":[{"name":"{port}","pf":["x"]}]}"#,
            "pools[0].name",
            "unknown placeholder {port}",
        ),
        (
            r#"{"pools":[{"name":"-bad","pf":["x"]}]}"#,
            "pools[0].name",
            "valid resource name",
        ),
        (
            r#"{"pools":[{"name":"a","pf":"ens1f0"}]}"#,
            "pools[0].pf",
            "non-empty list",
        ),
        (
            r#"{"pools":[{"name":"a","pf":["x"],"numa":"0"}]}"#,
            "pools[0].numa",
            "NUMA node number",
        ),
        (
            r#"{"pools":[{"name":"a","pf":["x"],"numa":[0,-1]}]}"#,
            "pools[0].numa[1]",
            "-1",
        ),
        (
            r#"{"pools":[{"name":"a","pf":["x"],"numaNode":0}]}"#,
            "pools[0].numaNode",
            "unknown key",
        ),
        (
            r#"{"pools":[{"name":"a","pf":["x"]},{"name":"a","pf":["y"]}]}"#,
            "pools[1].name",
            "unique",
        ),
        (
            r#"{"resourcePrefix":"Example.com","pools":[{"name":"a","pf":["x"]}]}"#,
            "resourcePrefix",
            "DNS subdomain",
        ),
    ] {
        assert_refused(validate, config, field, words);
    }
    python()
        .validate_selector_settings(&settings(PY_CONFIG))
        .expect("the README's settings are valid");
}

#[test]
fn python_selector_builds_pools_by_pf_and_numa_on_dell_cx5() {
    let (devices, inventory) = fixture("dell-cx5");
    let outcome = python().select(&settings(PY_CONFIG), &inventory).unwrap();
    let pools = pools_by_name(&outcome.value);
    let ens1f0 = vfs_of(&devices, "ens1f0");
    let ens1f1 = vfs_of(&devices, "ens1f1");
    assert_eq!(
        (ens1f0.len(), ens1f1.len()),
        (12, 12),
        "the fixture changed"
    );
    let expected: BTreeMap<String, Vec<String>> = [
        ("intel.com/fast_numa0".to_string(), ens1f0),
        ("intel.com/ens1f1_numa0".to_string(), ens1f1),
    ]
    .into();
    assert_eq!(pools, expected);
    // `rdma: true` hands out each VF's RDMA device (the fixture gives every VF one).
    for pool in &outcome.value {
        let rdma = pool.resource_name.ends_with("ens1f1_numa0");
        assert!(pool.devices.iter().all(|d| d.rdma == rdma), "{pool:?}");
    }
    // The policy's log line reaches the host.
    assert!(
        outcome
            .logs
            .iter()
            .any(|l| l.level == "info" && l.message.contains("24 of")),
        "{:?}",
        outcome.logs
    );
}

/// A VF whose RDMA device is in a pod's network namespace shows no RDMA devices to discovery;
/// devlink's `enable_rdma` still says it has one, and the pool must keep handing RDMA out.
#[test]
fn python_selector_keeps_rdma_for_a_vf_whose_rdma_device_is_in_a_pod() {
    let fixture = vfpool_sysfs::sim::Fixture::load("dell-cx5").unwrap();
    let dir = tempfile::tempdir().unwrap();
    vfpool_sysfs::sim::write_tree(&fixture, dir.path()).unwrap();
    let mut inventory = vfpool_sysfs::discover(&SysfsRoot::new(dir.path())).unwrap();
    let in_pod = vfs_of(&inventory.devices, "ens1f1").remove(0);
    let mut facts = HostFacts::default();
    for device in &mut inventory.devices {
        if device.id == in_pod {
            device.rdma_devices.clear();
        }
        if device.pf_name.as_deref() == Some("ens1f1") {
            facts.rdma_enabled.insert(device.id.clone(), true);
        }
    }
    let inventory = PolicyInventory::new(&inventory, &facts);
    let outcome = python().select(&settings(PY_CONFIG), &inventory).unwrap();
    let pool = outcome
        .value
        .iter()
        .find(|p| p.resource_name == "intel.com/ens1f1_numa0")
        .unwrap();
    let member = pool.devices.iter().find(|d| d.id == in_pod).unwrap();
    assert!(member.rdma, "{member:?}");
}

#[test]
fn python_selector_names_pools_by_template_and_keeps_empty_named_pools() {
    // intel-x710: every PF is on NUMA node 1, so the fixed-name NUMA-0 pool is empty (returned
    // with no members) and the template makes one pool per PF on node 1.
    let (devices, inventory) = fixture("intel-x710");
    let pools = python()
        .select(&settings(PY_CONFIG), &inventory)
        .unwrap()
        .value;
    let pools = pools_by_name(&pools);
    let ens2f0 = vfs_of(&devices, "ens2f0");
    let ens2f1 = vfs_of(&devices, "ens2f1");
    assert!(!ens2f0.is_empty() && !ens2f1.is_empty());
    let expected: BTreeMap<String, Vec<String>> = [
        ("intel.com/fast_numa0".to_string(), vec![]),
        ("intel.com/ens2f0_numa1".to_string(), ens2f0),
        ("intel.com/ens2f1_numa1".to_string(), ens2f1),
    ]
    .into();
    assert_eq!(pools, expected);
}

#[test]
fn python_selector_splits_a_large_node_by_numa_node() {
    // large: 8 PFs with 128 VFs each, on NUMA nodes 0 and 1. One templated entry over every PF
    // but the first makes one pool per node; the first PF's VFs stay out of every pool.
    let (devices, inventory) = fixture("large");
    let pfs: BTreeSet<String> = devices
        .iter()
        .filter(|d| d.kind == DeviceKind::Vf)
        .filter_map(|d| d.pf_name.clone())
        .collect();
    let chosen: Vec<&String> = pfs.iter().skip(1).collect();
    let config = format!(
        r#"{{"resourcePrefix":"example.com","pools":[{{"name":"numa{{numa}}","pf":{}}}]}}"#,
        serde_json_list(&chosen)
    );
    let pools = python()
        .select(&settings(&config), &inventory)
        .unwrap()
        .value;
    let mut expected: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for d in &devices {
        if d.kind == DeviceKind::Vf && d.pf_name.as_ref().is_some_and(|p| chosen.contains(&p)) {
            let node = d.numa_node.expect("large has NUMA nodes");
            expected
                .entry(format!("example.com/numa{node}"))
                .or_default()
                .push(d.id.clone());
        }
    }
    assert_eq!(expected.len(), 2, "{pfs:?}");
    assert_eq!(pools_by_name(&pools), expected);
}

/// `["a","b"]` (the names are plain interface names: no escaping needed).
fn serde_json_list(items: &[&String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("\"{s}\"")).collect();
    format!("[{}]", quoted.join(","))
}

// ---- JavaScript allocator ----

/// The whole node's VFs as one pool, the way the upstream selector would make it.
fn all_vfs(devices: &[Device]) -> Vec<String> {
    devices
        .iter()
        .filter(|d| d.kind == DeviceKind::Vf)
        .map(|d| d.id.clone())
        .collect()
}

fn pf_of<'a>(devices: &'a [Device], id: &str) -> &'a str {
    devices
        .iter()
        .find(|d| d.id == id)
        .and_then(|d| d.pf_id.as_deref())
        .unwrap()
}

#[test]
fn js_allocator_exports_only_the_allocator() {
    let roles = js().roles();
    assert!(roles.allocator && !roles.selector, "{roles:?}");
}

#[test]
fn js_allocator_refuses_bad_settings_and_ignores_other_policies_keys() {
    let validate = |s: &Settings| js().validate_allocator_settings(s).map(|_| ());
    for (config, field, words) in [
        ("{", "", "not valid JSON"),
        ("[1]", "", "JSON object"),
        (r#"{"spread":[]}"#, "spread", "must be an object"),
        (
            r#"{"spread":{"numaLocal":"yes"}}"#,
            "spread.numaLocal",
            "true or false",
        ),
        (
            r#"{"spread":{"maxPerPf":1}}"#,
            "spread.maxPerPf",
            "unknown key",
        ),
    ] {
        assert_refused(validate, config, field, words);
    }
    for ok in [
        "",
        r#"{"resourceList":[{"resourceName":"r","selectors":{}}]}"#,
        r#"{"pools":[],"spread":{"numaLocal":false}}"#,
    ] {
        validate(&settings(ok)).unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
}

#[test]
fn js_allocator_spreads_where_the_default_packs_on_dell_cx5() {
    let (devices, inventory) = fixture("dell-cx5");
    let available = all_vfs(&devices);
    let s = settings("");
    let spread = js()
        .prefer(&s, &inventory, "intel.com/cx5", &available, &[], 4)
        .unwrap();
    let pfs: Vec<&str> = spread.value.iter().map(|id| pf_of(&devices, id)).collect();
    // Alternating between the two ports, lowest VF index first on each.
    assert_eq!(
        pfs,
        [
            "0000:3b:00.0",
            "0000:3b:00.1",
            "0000:3b:00.0",
            "0000:3b:00.1"
        ],
        "{:?}",
        spread.value
    );
    assert_eq!(spread.value[0], vfs_of(&devices, "ens1f0")[0]);
    assert_eq!(spread.value[1], vfs_of(&devices, "ens1f1")[0]);
    // The default packs the same request onto one PF: the opposite.
    let packed = packed()
        .prefer(&s, &inventory, "intel.com/cx5", &available, &[], 4)
        .unwrap()
        .value;
    let packed_pfs: BTreeSet<&str> = packed.iter().map(|id| pf_of(&devices, id)).collect();
    assert_eq!(packed_pfs.len(), 1, "{packed:?}");
}

#[test]
fn js_allocator_keeps_must_include_and_balances_around_it() {
    let (devices, inventory) = fixture("dell-cx5");
    let available = all_vfs(&devices);
    let must = vec![vfs_of(&devices, "ens1f1")[3].clone()];
    let answer = js()
        .prefer(
            &settings(""),
            &inventory,
            "intel.com/cx5",
            &available,
            &must,
            3,
        )
        .unwrap()
        .value;
    assert_eq!(answer[0], must[0]);
    // ens1f1 already has one, so the next comes from ens1f0, then they are even again.
    assert_eq!(pf_of(&devices, &answer[1]), "0000:3b:00.0", "{answer:?}");
    assert_eq!(answer.len(), 3);
    let distinct: BTreeSet<&String> = answer.iter().collect();
    assert_eq!(distinct.len(), 3);
}

#[test]
fn js_allocator_stays_on_one_numa_node_unless_told_not_to() {
    // large: 8 PFs, alternating NUMA nodes 0 and 1, 128 VFs each.
    let (devices, inventory) = fixture("large");
    let available = all_vfs(&devices);
    let numa_of = |id: &str| {
        devices
            .iter()
            .find(|d| d.id == id)
            .and_then(|d| d.numa_node)
    };
    let pfs_on = |node: u32| {
        devices
            .iter()
            .filter(|d| d.kind == DeviceKind::Pf && d.sriov_total_vfs.is_some())
            .filter(|d| d.numa_node == Some(node))
            .count()
    };
    let size = u32::try_from(pfs_on(0)).unwrap();
    let local = js()
        .prefer(&settings(""), &inventory, "p", &available, &[], size)
        .unwrap()
        .value;
    let local_pfs: BTreeSet<&str> = local.iter().map(|id| pf_of(&devices, id)).collect();
    assert!(local.iter().all(|id| numa_of(id) == Some(0)), "{local:?}");
    assert_eq!(
        local_pfs.len(),
        local.len(),
        "one VF per NUMA-0 PF: {local:?}"
    );

    // A must-include device on node 1 moves the whole answer there.
    let on_one: Vec<String> = available
        .iter()
        .filter(|id| numa_of(id) == Some(1))
        .take(1)
        .cloned()
        .collect();
    let moved = js()
        .prefer(&settings(""), &inventory, "p", &available, &on_one, 3)
        .unwrap()
        .value;
    assert!(moved.iter().all(|id| numa_of(id) == Some(1)), "{moved:?}");

    // numaLocal off: as many PFs as devices, whatever their node.
    let wide = js()
        .prefer(
            &settings(r#"{"spread":{"numaLocal":false}}"#),
            &inventory,
            "p",
            &available,
            &[],
            size + 2,
        )
        .unwrap()
        .value;
    let wide_pfs: BTreeSet<&str> = wide.iter().map(|id| pf_of(&devices, id)).collect();
    assert_eq!(wide_pfs.len(), wide.len(), "{wide:?}");
}

#[test]
fn js_allocator_reports_an_impossible_request_as_an_error() {
    let (devices, inventory) = fixture("dell-cx5");
    let available: Vec<String> = all_vfs(&devices).into_iter().take(2).collect();
    let error = js()
        .prefer(&settings(""), &inventory, "p", &available, &[], 3)
        .expect_err("3 of 2");
    // The host checks the request before the policy sees it; either way it is an error, not a trap.
    let text = error.to_string();
    assert!(!text.contains("trapped"), "{text}");
}

// ---- Rust starter ----

#[test]
fn rust_starter_makes_one_pool_per_pf_on_intel_x710() {
    let (devices, inventory) = fixture("intel-x710");
    let pools = rust_starter()
        .select(&settings(""), &inventory)
        .unwrap()
        .value;
    let mut expected = BTreeMap::new();
    for pf in ["ens2f0", "ens2f1"] {
        expected.insert(format!("intel.com/{pf}_vfs"), vfs_of(&devices, pf));
    }
    assert_eq!(pools_by_name(&pools), expected);
    let limited = rust_starter()
        .select(
            &settings(r#"{"starter":{"suffix":"-dpdk","pfs":["ens2f1"]}}"#),
            &inventory,
        )
        .unwrap()
        .value;
    assert_eq!(
        pools_by_name(&limited).into_keys().collect::<Vec<_>>(),
        ["intel.com/ens2f1-dpdk"]
    );
}

#[test]
fn rust_starter_refuses_bad_settings() {
    let validate = |s: &Settings| rust_starter().validate_selector_settings(s).map(|_| ());
    assert_refused(
        validate,
        r#"{"starter":{"suffix":"/x"}}"#,
        "starter.suffix",
        "'-'",
    );
    assert_refused(validate, r#"{"starter":{"sufix":"x"}}"#, "starter", "sufix");
    assert_refused(validate, "nope", "", "not valid JSON");
}
