//! The upstream device plugin's selector scenarios (`deviceSelectors_test.go`,
//! `netDeviceProvider_test.go`, `pciNetDevice_test.go`, `factory_test.go`, `manager_test.go`,
//! `pKeySelector_test.go`, `ddpSelector_test.go`, the aux and accelerator providers) and its example
//! configs, run through the real host against the embedded `upstream-selector` component.

use vfpool_policy::{CallError, DeviceType, PolicyFailure, VdpaType};

use super::common::*;

const ALL_NET: [&str; 9] = [
    "0000:01:00.1",
    "0000:01:02.0",
    "0000:01:02.1",
    "0000:3b:00.2",
    "0000:3b:00.3",
    "0000:3b:00.4",
    "0000:5e:00.2",
    "0000:5e:00.3",
    "0000:5e:00.4",
];

/// `{}` takes every eligible net device: not PFs with VFs enabled (01:00.0, 3b:00.0, 5e:00.0), not
/// the unbound VF, not the default-route uplink, not the unparsable class, not accelerators or aux.
#[test]
fn empty_selector_takes_every_eligible_net_device() {
    assert_eq!(members(&net("{}")), ALL_NET);
}

#[test]
fn filters_by_each_key() {
    let cases: &[(&str, &[&str])] = &[
        (
            r#"{"vendors":["8086"]}"#,
            &["0000:01:00.1", "0000:01:02.0", "0000:01:02.1"],
        ),
        (
            r#"{"devices":["1018"]}"#,
            &["0000:3b:00.2", "0000:3b:00.3", "0000:3b:00.4"],
        ),
        (r#"{"drivers":["vfio-pci"]}"#, &["0000:01:02.1"]),
        (
            r#"{"drivers":["iavf","vfio-pci"]}"#,
            &["0000:01:02.0", "0000:01:02.1"],
        ),
        (
            r#"{"pciAddresses":["0000:01:02.1","0000:5e:00.3"]}"#,
            &["0000:01:02.1", "0000:5e:00.3"],
        ),
        // No normalisation: the short form does not match, as upstream.
        (r#"{"pciAddresses":["01:02.1"]}"#, &[]),
        (r#"{"acpiIndexes":["102"]}"#, &["0000:01:00.1"]),
        // 101 is the PF with VFs enabled, never a net device.
        (r#"{"acpiIndexes":["101"]}"#, &[]),
        (
            r#"{"pfNames":["ens1f0"]}"#,
            &["0000:01:02.0", "0000:01:02.1"],
        ),
        (
            r#"{"pfNames":["ens2f0#0,2"]}"#,
            &["0000:3b:00.2", "0000:3b:00.4"],
        ),
        // PF names compare case-insensitively; a VF without a PF name never matches pfNames.
        (
            r#"{"pfNames":["ENS3F0"]}"#,
            &["0000:5e:00.2", "0000:5e:00.3"],
        ),
        (
            r#"{"rootDevices":["0000:5e:00.0"]}"#,
            &["0000:5e:00.2", "0000:5e:00.3", "0000:5e:00.4"],
        ),
        (
            r#"{"rootDevices":["0000:3b:00.0#1-2"]}"#,
            &["0000:3b:00.3", "0000:3b:00.4"],
        ),
        (
            r#"{"linkTypes":["infiniband"]}"#,
            &["0000:3b:00.2", "0000:3b:00.3", "0000:3b:00.4"],
        ),
        (
            r#"{"linkTypes":["ether"]}"#,
            &[
                "0000:01:00.1",
                "0000:01:02.0",
                "0000:01:02.1",
                "0000:5e:00.2",
                "0000:5e:00.3",
                "0000:5e:00.4",
            ],
        ),
        (r#"{"linkTypes":["ether","infiniband"]}"#, &ALL_NET),
        (
            r#"{"ddpProfiles":["GTPv1-C/U IPv4/IPv6 payload"]}"#,
            &["0000:01:02.0"],
        ),
        (
            r#"{"pKeys":["0x1","0x2"]}"#,
            &["0000:3b:00.2", "0000:3b:00.3"],
        ),
        (
            r#"{"isRdma":true}"#,
            &["0000:3b:00.2", "0000:3b:00.3", "0000:3b:00.4"],
        ),
        (r#"{"vdpaType":"vhost"}"#, &["0000:5e:00.2"]),
        (r#"{"vdpaType":"virtio"}"#, &["0000:5e:00.3"]),
        // AND across keys.
        (
            r#"{"vendors":["15b3"],"pfNames":["ens3f0"]}"#,
            &["0000:5e:00.2", "0000:5e:00.3"],
        ),
        (r#"{"vendors":["8086"],"linkTypes":["infiniband"]}"#, &[]),
        // Vendor ids are compared exactly, as upstream (lower-case from modalias).
        (r#"{"vendors":["15B3"]}"#, &[]),
    ];
    for (selector, expected) in cases {
        assert_eq!(members(&net(selector)), *expected, "selector {selector}");
    }
}

/// The agent's devlink facts through the host: `isRdma` also takes a function whose devlink
/// `enable_rdma` is true although it has no RDMA device on the host (an exclusive-RDMA VF inside a
/// pod, upstream #565), for netDevice and auxNetDevice alike; `false` or unknown does not count;
/// `isRdma: false` filters nothing. `ddpProfiles` matches the profile the agent reports for a PF
/// and its VFs.
#[test]
fn devlink_facts_feed_is_rdma_and_ddp_profiles() {
    let mut facts = vfpool_policy::HostFacts::default();
    facts.default_route_netdevs.insert("eno1".into());
    for (id, enabled) in [
        ("0000:5e:00.2", true),
        ("0000:5e:00.3", false),
        ("mlx5_core.sf.3", true),
        ("mlx5_core.sf.4", false),
    ] {
        facts.rdma_enabled.insert(id.into(), enabled);
    }
    for id in [
        "0000:01:00.0",
        "0000:01:02.0",
        "0000:01:02.1",
        "0000:01:02.2",
    ] {
        facts
            .ddp_profiles
            .insert(id.into(), "ICE COMMS Package".into());
    }
    let inventory = vfpool_policy::PolicyInventory::new(&test_node(), &facts);
    let run = |config: &str| -> Vec<(String, Vec<String>)> {
        summary(
            &selector()
                .select(&settings(config), &inventory)
                .unwrap_or_else(|e| panic!("select failed: {e}"))
                .value,
        )
    };
    let only = |config: String| -> Vec<String> {
        let mut pools = run(&config);
        assert_eq!(pools.len(), 1, "{config}");
        pools.remove(0).1
    };

    assert_eq!(
        only(net(r#"{"isRdma":true}"#)),
        [
            "0000:3b:00.2",
            "0000:3b:00.3",
            "0000:3b:00.4",
            "0000:5e:00.2"
        ]
    );
    assert_eq!(only(net(r#"{"isRdma":false}"#)), ALL_NET);
    assert_eq!(
        only(r#"{"resourceList":[{"resourceName":"sf","deviceType":"auxNetDevice","selectors":{"auxTypes":["sf"],"isRdma":true}}]}"#.into()),
        ["mlx5_core.sf.3"]
    );
    // The pool's Allocate hint says rdma for the devlink-only member too.
    let pools = selector()
        .select(&settings(&net(r#"{"isRdma":true}"#)), &inventory)
        .unwrap()
        .value;
    assert!(pools[0].devices.iter().all(|d| d.rdma));
    // The PF has VFs enabled, so only its bound, eligible VFs are pooled.
    assert_eq!(
        only(net(r#"{"ddpProfiles":["ICE COMMS Package"]}"#)),
        ["0000:01:02.0", "0000:01:02.1"]
    );
    assert_eq!(
        only(net(r#"{"ddpProfiles":["GTPv1-C/U IPv4/IPv6 payload"]}"#)),
        Vec::<String>::new()
    );
}

/// deviceSelectors_test.go: `["ens0","ens2f0#1","ens2f1#0,3-5,7"]` style ranges, here on ens2f0.
#[test]
fn pf_name_ranges() {
    assert_eq!(
        members(&net(r#"{"pfNames":["ens0","ens2f0#1","eth0#0-7"]}"#)),
        ["0000:3b:00.3"]
    );
}

/// Upstream never selects the second entry's VFs (`getItem` takes the first matching entry); we
/// take every matching entry.
#[test]
fn repeated_pf_entries_all_count() {
    assert_eq!(
        members(&net(r#"{"pfNames":["ens2f0#0","ens2f0#2"]}"#)),
        ["0000:3b:00.2", "0000:3b:00.4"]
    );
}

#[test]
fn accelerators_only_know_generic_keys() {
    let config = r#"{"resourceList":[{"resourceName":"qat","deviceType":"accelerator","selectors":{"isRdma":true,"pfNames":["x"]}}]}"#;
    let pools = select(config);
    assert_eq!(summary(&pools)[0].1, ["0000:af:00.0", "0000:af:00.1"]);
    assert_eq!(pools[0].device_type, DeviceType::Accelerator);
    assert!(
        pools[0].devices.iter().all(|d| !d.rdma),
        "isRdma is not an accelerator key"
    );
    let config = r#"{"resourceList":[{"resourceName":"qat","deviceType":"accelerator","selectors":{"drivers":["vfio-pci"]}}]}"#;
    assert_eq!(members(config), ["0000:af:00.1"]);
}

#[test]
fn aux_devices_by_sfnum_ranges_and_parent_attributes() {
    let aux = |selector: &str| {
        members(&format!(
            r#"{{"resourceList":[{{"resourceName":"sf","deviceType":"auxNetDevice","selectors":{selector}}}]}}"#
        ))
    };
    let all = ["mlx5_core.sf.2", "mlx5_core.sf.3", "mlx5_core.sf.4"];
    assert_eq!(aux(r#"{"auxTypes":["sf"]}"#), all);
    assert_eq!(
        aux(r#"{"auxTypes":["sf"],"vendors":["15b3"],"devices":["1017"]}"#),
        all
    );
    assert_eq!(
        aux(r#"{"auxTypes":["sf"],"pfNames":["ens2f0#1-2"]}"#),
        ["mlx5_core.sf.2", "mlx5_core.sf.4"]
    );
    assert_eq!(
        aux(r#"{"auxTypes":["sf"],"rootDevices":["0000:3b:00.0#5"]}"#),
        ["mlx5_core.sf.3"]
    );
    assert!(aux(r#"{"auxTypes":["sf"],"isRdma":true}"#).is_empty());
    let pools = select(
        r#"{"resourceList":[{"resourceName":"sf","deviceType":"auxNetDevice","selectors":{"auxTypes":["sf"]}}]}"#,
    );
    assert_eq!(pools[0].device_type, DeviceType::AuxNetDevice);
}

/// manager_test.go / factory_test.go: resources in order, selectors in order, first match wins,
/// hints from the selector that took the device; union without duplicates.
#[test]
fn first_match_wins_and_hints_come_from_the_matching_selector() {
    let config = r#"{"resourceList":[
        {"resourceName":"mlx","selectors":[{"isRdma":true},{"vendors":["15b3"],"needVhostNet":true},{"vendors":["15b3"]}]},
        {"resourceName":"rest","selectors":{}}]}"#;
    let pools = select(config);
    let s = summary(&pools);
    assert_eq!(
        s[0].1,
        [
            "0000:3b:00.2",
            "0000:3b:00.3",
            "0000:3b:00.4",
            "0000:5e:00.2",
            "0000:5e:00.3",
            "0000:5e:00.4"
        ]
    );
    assert_eq!(s[1].1, ["0000:01:00.1", "0000:01:02.0", "0000:01:02.1"]);
    for d in &pools[0].devices {
        let from_rdma_selector = d.id.starts_with("0000:3b");
        assert_eq!(d.rdma, from_rdma_selector, "{}", d.id);
        assert_eq!(d.vhost_net, !from_rdma_selector, "{}", d.id);
    }
    let vdpa = select(&net(r#"[{"vdpaType":"vhost"},{"vdpaType":"virtio"}]"#));
    let types: Vec<Option<VdpaType>> = vdpa[0].devices.iter().map(|d| d.vdpa_type).collect();
    assert_eq!(types, [Some(VdpaType::Vhost), Some(VdpaType::Virtio)]);
}

#[test]
fn additional_info_prefix_and_topology() {
    let config = r#"{"resourceList":[{"resourceName":"x710","resourcePrefix":"example.org","excludeTopology":true,
        "selectors":{"vendors":["8086"]},
        "additionalInfo":{"*":{"a":"1"},"0000:01:02.0":{"a":"2","b":"3"}}}]}"#;
    let pools = select(config);
    assert_eq!(pools[0].resource_name, "example.org/x710");
    assert!(pools[0].exclude_topology);
    let info: Vec<_> = pools[0]
        .devices
        .iter()
        .map(|d| d.additional_info.clone())
        .collect();
    let pair = |k: &str, v: &str| (k.to_string(), v.to_string());
    assert_eq!(
        info,
        [
            Some(vec![pair("a", "1")]),
            Some(vec![pair("a", "2"), pair("b", "3")]),
            Some(vec![pair("a", "1")])
        ]
    );
    // additionalInfo set but no key matching: an empty `extra`, not none.
    let pools = select(
        r#"{"resourceList":[{"resourceName":"r","selectors":{"drivers":["iavf"]},"additionalInfo":{"x":{"k":"v"}}}]}"#,
    );
    assert_eq!(pools[0].devices[0].additional_info, Some(vec![]));
    let pools = select(&net(r#"{"drivers":["iavf"]}"#));
    assert_eq!(pools[0].devices[0].additional_info, None);
    // Aux devices key additionalInfo on the parent PCI address.
    let pools = select(
        r#"{"resourceList":[{"resourceName":"sf","deviceType":"auxNetDevice","selectors":{"auxTypes":["sf"]},"additionalInfo":{"0000:3b:00.0":{"p":"q"}}}]}"#,
    );
    assert_eq!(
        pools[0].devices[0].additional_info,
        Some(vec![pair("p", "q")])
    );
}

/// The upstream docs' examples, verbatim: docs/rdma/configMap.yaml (object and list selectors
/// mixed), docs/subfunctions, docs/config-file (operator style: capitalised keys, junk keys).
#[test]
fn upstream_example_configs() {
    let rdma = r#"{
    "resourceList": [
        {
            "resourceName": "mlnx_rdma",
            "resourcePrefix": "mellanox.com",
            "selectors": [{
                "vendors": ["15b3"],
                "devices": ["1016", "1018"],
                "drivers": ["mlx5_core"],
                "isRdma": true
            }]
        },
        {
          "resourceName": "intel_rdma",
            "selectors": {
                "vendors": ["8086"],
                "devices": ["1889"],
                "drivers": ["iavf"],
                "isRdma": true
            }
        }
    ]
}"#;
    assert_eq!(
        summary(&select(rdma)),
        [
            (
                "mellanox.com/mlnx_rdma".to_string(),
                vec![
                    "0000:3b:00.2".to_string(),
                    "0000:3b:00.3".into(),
                    "0000:3b:00.4".into()
                ]
            ),
            ("intel.com/intel_rdma".to_string(), vec![])
        ]
    );
    let subfunctions = r#"{
    "resourceList": [
        {
            "resourceName": "bf2_sf",
            "resourcePrefix": "nvidia.com",
            "deviceType": "auxNetDevice",
            "selectors": [{
                "vendors": ["15b3"],
                "devices": ["a2d6"],
                "pfNames": ["p0#1-5"],
                "auxTypes": ["sf"]
            }]
        }
    ]
}"#;
    assert_eq!(
        summary(&select(subfunctions)),
        [("nvidia.com/bf2_sf".to_string(), vec![])]
    );
    let on_this_node = subfunctions
        .replace("a2d6", "1017")
        .replace("p0#1-5", "ens2f0#1-5");
    assert_eq!(
        members(&on_this_node),
        ["mlx5_core.sf.2", "mlx5_core.sf.3", "mlx5_core.sf.4"]
    );

    let operator = r#"{"resourceList":[{"resourceName":"sriovnics","selectors":{"pfNames":["ens785f0#0-4","ens785f1#0-9"],"IsRdma":false,"NeedVhostNet":false},"SelectorObj":null}]}"#;
    assert_eq!(
        summary(&select(operator)),
        [("intel.com/sriovnics".to_string(), vec![])]
    );
    let on_this_node = operator.replace("ens785f0", "ens1f0");
    assert_eq!(members(&on_this_node), ["0000:01:02.0", "0000:01:02.1"]);
}

#[test]
fn no_resources_means_no_pools() {
    assert!(select("").is_empty());
    assert!(select(r#"{"resourceList":[]}"#).is_empty());
}

fn settings_error(config: &str) -> (String, String) {
    let error = selector()
        .select(&settings(config), &test_inventory())
        .expect_err("config should be refused");
    let validate = selector()
        .validate_selector_settings(&settings(config))
        .expect_err("validate-settings should refuse it too");
    assert_eq!(
        error.to_string(),
        validate
            .to_string()
            .replace("selector validate-settings", "select")
    );
    match *error.error {
        CallError::Returned(PolicyFailure::InvalidSettings { field, message }) => (field, message),
        other => panic!("expected invalid settings, got {other}"),
    }
}

/// manager_test.go validation table plus the crashes upstream has (missing selectors).
#[test]
fn invalid_configs_are_refused_naming_the_field() {
    let (field, message) = settings_error(&net(r#"{"vendors":"8086"}"#).replace("\"r\"", "\"x\""));
    assert_eq!(field, "resourceList[0].selectors.vendors");
    assert!(message.contains(r#"["8086"]"#), "{message}");
    let (field, _) =
        settings_error(r#"{"resourceList":[{"resourceName":"invalid.name","selectors":{}}]}"#);
    assert_eq!(field, "resourceList[0].resourceName");
    let (field, _) = settings_error(
        r#"{"resourceList":[{"resourceName":"a","selectors":{}},{"resourceName":"a","selectors":{}}]}"#,
    );
    assert_eq!(field, "resourceList[1].resourceName");
    let (field, _) = settings_error(&net(r#"{"isRdma":true,"vdpaType":"vhost"}"#));
    assert_eq!(field, "resourceList[0].selectors");
    assert_eq!(
        members(&net(r#"[{"isRdma":true},{"vdpaType":"vhost"}]"#)).len(),
        4
    );
    let (field, _) = settings_error(r#"{"resourceList":[{"resourceName":"a"}]}"#);
    assert_eq!(field, "resourceList[0].selectors");
    let (field, _) = settings_error(
        r#"{"resourceList":[{"resourceName":"sf","deviceType":"auxNetDevice","selectors":[{"auxTypes":["sf"]},{"auxTypes":[]}]}]}"#,
    );
    assert_eq!(field, "resourceList[0].selectors[1].auxTypes");
    let (field, _) = settings_error(&net(r#"{"pfNames":["ens1f0#1-x"]}"#));
    assert_eq!(field, "resourceList[0].selectors.pfNames[0]");
    let (field, message) = settings_error("junk");
    assert_eq!(field, "");
    assert!(message.contains("not valid JSON"), "{message}");
}

/// The full chain on a simulated node: fixture → sysfs tree → discovery → policy.
#[test]
fn discovered_dell_cx5_node() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = vfpool_sysfs::sim::Fixture::load("dell-cx5").unwrap();
    vfpool_sysfs::sim::write_tree(&fixture, dir.path()).unwrap();
    let inventory = vfpool_sysfs::discover(&vfpool_sysfs::SysfsRoot::new(dir.path())).unwrap();
    let mut facts = vfpool_policy::HostFacts::default();
    facts.default_route_netdevs.insert("eno1".into());
    let inventory = vfpool_policy::PolicyInventory::new(&inventory, &facts);
    let pools = selector()
        .select(
            &settings(r#"{"resourceList":[{"resourceName":"mlnx_sriov","selectors":{"vendors":["15b3"],"devices":["1018"],"isRdma":true}},{"resourceName":"lom","selectors":{"vendors":["14e4"]}}]}"#),
            &inventory,
        )
        .unwrap()
        .value;
    assert_eq!(pools[0].devices.len(), 24);
    assert!(pools[0].devices.iter().all(|d| d.rdma));
    // eno1 carries the default route; eno2 does not.
    let lom: Vec<&str> = pools[1].devices.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(lom, ["0000:04:00.1"]);
}

/// A misspelled selector key is ignored as upstream ignores it, but the policy warns about it when
/// it validates the config (the host passes the warning on to the agent's log at reload).
#[test]
fn ignored_keys_are_warned_about_through_the_real_host() {
    let text = r#"{"resourceList":[{"resourceName":"a","selectors":{"pfNamez":["ens1f0"]}}]}"#;
    let outcome = selector()
        .validate_selector_settings(&settings(text))
        .expect("the config is valid");
    let warnings: Vec<&str> = outcome
        .logs
        .iter()
        .filter(|l| l.level == "warn")
        .map(|l| l.message.as_str())
        .collect();
    assert_eq!(warnings.len(), 1, "{:?}", outcome.logs);
    assert!(
        warnings[0].contains("resourceList[0].selectors")
            && warnings[0].contains("did you mean \"pfNames\"?"),
        "{warnings:?}"
    );
    // A clean config says nothing.
    let clean = r#"{"resourceList":[{"resourceName":"a","selectors":{"pfNames":["ens1f0"]}}]}"#;
    let outcome = selector()
        .validate_selector_settings(&settings(clean))
        .unwrap();
    assert!(outcome.logs.is_empty(), "{:?}", outcome.logs);
}
