//! The default allocator through the real host.

use vfpool_policy::{CallError, Policy, defaults, validate::RequestError};

use super::common::*;

fn packed() -> Policy {
    Policy::compile(engine(), "packed", defaults::PACKED_ALLOCATOR).unwrap()
}

fn ids(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// On the test node the ens1f0 VFs are on NUMA 0, the CX-5 VFs on NUMA 1, the CX-6 VFs on NUMA 0.
#[test]
fn packs_by_numa_then_pf() {
    let available = ids(&[
        "0000:01:02.0",
        "0000:01:02.1",
        "0000:3b:00.2",
        "0000:3b:00.3",
        "0000:3b:00.4",
        "0000:5e:00.2",
        "0000:5e:00.3",
        "0000:5e:00.4",
    ]);
    let prefer = |must: &[&str], size: u32| {
        packed()
            .prefer(
                &settings(""),
                &test_inventory(),
                "intel.com/x",
                &available,
                &ids(must),
                size,
            )
            .map(|o| o.value)
    };
    // NUMA 0 has 5 free; the fullest PF there (ens1f0, 2 free) is filled first.
    assert_eq!(
        prefer(&[], 3).unwrap(),
        ["0000:01:02.0", "0000:01:02.1", "0000:5e:00.2"]
    );
    // A must-include device on NUMA 1 pulls the rest there, same PF.
    assert_eq!(
        prefer(&["0000:3b:00.4"], 2).unwrap(),
        ["0000:3b:00.4", "0000:3b:00.2"]
    );
    let error = prefer(&[], 9).unwrap_err();
    assert!(matches!(*error.error, CallError::Request(_)), "{error}");
}

/// More must-include devices than the size fit no answer: the host refuses the request (a
/// caller's error) before any policy runs, instead of blaming the policy's answer.
#[test]
fn impossible_requests_are_refused_before_the_policy_runs() {
    let available = ids(&["0000:01:02.0", "0000:01:02.1"]);
    let error = packed()
        .prefer(
            &settings(""),
            &test_inventory(),
            "intel.com/x",
            &available,
            &available,
            1,
        )
        .unwrap_err();
    assert!(
        matches!(
            error.error.as_ref(),
            CallError::Request(RequestError::MustIncludeExceedsSize {
                must_include: 2,
                size: 1
            })
        ),
        "{error}"
    );
}

#[test]
fn spread_example_round_robins_pfs() {
    let spread = Policy::compile(engine(), "spread.wasm", &component("spread_allocator")).unwrap();
    let available = ids(&[
        "0000:01:02.0",
        "0000:01:02.1",
        "0000:5e:00.2",
        "0000:5e:00.3",
        "0000:5e:00.4",
    ]);
    let answer = spread
        .prefer(
            &settings(""),
            &test_inventory(),
            "intel.com/x",
            &available,
            &[],
            2,
        )
        .unwrap()
        .value;
    // One VF from each PF: the emptiest PF (CX-6, 3 free) first.
    assert_eq!(answer, ["0000:5e:00.2", "0000:01:02.0"]);
}

/// Sub-functions of one PF are preferred in SF-number order, not in their names' string order
/// (`mlx5_core.sf.10` sorts before `mlx5_core.sf.9` as a string).
#[test]
fn sub_functions_are_preferred_by_sf_number() {
    let mut node = test_node();
    for (id, sf_num) in [("mlx5_core.sf.10", 10), ("mlx5_core.sf.9", 9)] {
        let mut sf = vfpool_sysfs::Device::unknown(id, vfpool_sysfs::DeviceKind::Aux);
        sf.pf_id = Some("0000:01:00.0".into());
        sf.sf_num = Some(sf_num);
        sf.numa_node = Some(0);
        node.devices.push(sf);
    }
    node.devices.sort_by(|a, b| a.id.cmp(&b.id));
    let inventory =
        vfpool_policy::PolicyInventory::new(&node, &vfpool_policy::HostFacts::default());
    let available = ids(&["mlx5_core.sf.9", "mlx5_core.sf.10"]);
    for (name, policy) in [
        ("packed", packed()),
        (
            "spread",
            Policy::compile(engine(), "spread.wasm", &component("spread_allocator")).unwrap(),
        ),
    ] {
        let answer = policy
            .prefer(
                &settings(""),
                &inventory,
                "intel.com/sf",
                &available,
                &[],
                1,
            )
            .unwrap()
            .value;
        assert_eq!(answer, ["mlx5_core.sf.9"], "{name}");
    }
}
