//! Native unit tests of the configuration decoder and the selection (the same scenarios also run
//! through the real WASM host in `host/policy/tests`).

use super::*;

fn vf(id: &str, pf: &str, pf_name: &str, index: u32) -> PlainDevice {
    PlainDevice {
        id: id.into(),
        kind: Some(Kind::Vf),
        vendor: Some("15b3".into()),
        device: Some("1018".into()),
        class_code: Some("020000".into()),
        driver: Some("mlx5_core".into()),
        pf_id: Some(pf.into()),
        pf_name: Some(pf_name.into()),
        vf_index: Some(index),
        link_type: Some("ether".into()),
        ..PlainDevice::default()
    }
}

/// A Mellanox sub-function `mlx5_core.sf.<num>` of PF `p0`.
fn sf(num: u32) -> PlainDevice {
    PlainDevice {
        id: format!("mlx5_core.sf.{num}"),
        kind: Some(Kind::Aux),
        vendor: Some("15b3".into()),
        class_code: Some("020000".into()),
        driver: Some("mlx5_core".into()),
        pf_id: Some("0000:01:00.0".into()),
        pf_name: Some("p0".into()),
        aux_type: Some("sf".into()),
        sf_num: Some(num),
        ..PlainDevice::default()
    }
}

fn ids(devices: &[PlainDevice], pool: &Pool) -> Vec<String> {
    pool.members
        .iter()
        .map(|m| devices[m.index].id.clone())
        .collect()
}

#[test]
fn empty_text_and_null_list_mean_no_resources() {
    assert!(parse("", "intel.com").unwrap().resources.is_empty());
    assert!(parse("  \n", "intel.com").unwrap().resources.is_empty());
    assert!(
        parse(r#"{"resourceList":null}"#, "intel.com")
            .unwrap()
            .resources
            .is_empty()
    );
    assert!(
        parse(r#"{"resourceList":[]}"#, "intel.com")
            .unwrap()
            .resources
            .is_empty()
    );
}

#[test]
fn operator_style_capitalised_and_junk_keys() {
    let text = r#"{"resourceList":[{"resourceName":"sriovnics","selectors":{"pfNames":["ens785f0#0-4","ens785f1#0-9"],"IsRdma":false,"NeedVhostNet":false},"SelectorObj":null}]}"#;
    let config = parse(text, "intel.com").unwrap();
    assert_eq!(config.resources.len(), 1);
    assert_eq!(config.resources[0].resource_name, "intel.com/sriovnics");
    assert_eq!(config.resources[0].selectors[0].pf_names.len(), 2);
}

#[test]
fn keys_are_case_insensitive_and_last_duplicate_wins() {
    let text = r#"{"ResourceList":[{"RESOURCENAME":"a","selectors":{"Vendors":["8086"],"vendors":["15b3"]}}]}"#;
    let config = parse(text, "intel.com").unwrap();
    assert_eq!(config.resources[0].selectors[0].vendors, ["15b3"]);
}

#[test]
fn object_or_list_selectors() {
    let object = parse(
        r#"{"resourceList":[{"resourceName":"a","selectors":{"drivers":["iavf"]}}]}"#,
        "p.io",
    )
    .unwrap();
    let list = parse(
        r#"{"resourceList":[{"resourceName":"a","selectors":[{"drivers":["iavf"]}]}]}"#,
        "p.io",
    )
    .unwrap();
    assert_eq!(object, list);
}

#[test]
fn missing_or_null_or_empty_selectors_are_errors() {
    for text in [
        r#"{"resourceList":[{"resourceName":"a"}]}"#,
        r#"{"resourceList":[{"resourceName":"a","selectors":null}]}"#,
        r#"{"resourceList":[{"resourceName":"a","selectors":[]}]}"#,
    ] {
        let err = parse(text, "intel.com").unwrap_err();
        assert_eq!(err.field, "resourceList[0].selectors", "{text}");
    }
}

#[test]
fn type_errors_name_the_field_and_the_fix() {
    let err = parse(
        r#"{"resourceList":[{"resourceName":"a","selectors":[{},{"vendors":"8086"}]}]}"#,
        "intel.com",
    )
    .unwrap_err();
    assert_eq!(err.field, "resourceList[0].selectors[1].vendors");
    assert!(err.message.contains(r#"["8086"]"#), "{}", err.message);
    let err = parse(
        r#"{"resourceList":[{"resourceName":"a","selectors":{"isRdma":"true"}}]}"#,
        "intel.com",
    )
    .unwrap_err();
    assert_eq!(err.field, "resourceList[0].selectors.isRdma");
}

#[test]
fn resource_name_validation() {
    let name = |n: &str| {
        parse(
            &format!(r#"{{"resourceList":[{{"resourceName":"{n}","selectors":{{}}}}]}}"#),
            "intel.com",
        )
    };
    assert!(
        name("sriov-net_0").is_ok(),
        "upstream allows hyphens and underscores"
    );
    let err = name("invalid.name").unwrap_err();
    assert_eq!(err.field, "resourceList[0].resourceName");
    assert!(name("junk.net.0").is_err());
    assert!(name("").is_err());
    assert!(name("-leading").is_err(), "kubelet refuses it");
}

#[test]
fn duplicate_names_are_refused_but_prefix_disambiguates() {
    let dup = r#"{"resourceList":[{"resourceName":"a","selectors":{}},{"resourceName":"a","selectors":{}}]}"#;
    assert_eq!(
        parse(dup, "intel.com").unwrap_err().field,
        "resourceList[1].resourceName"
    );
    let ok = r#"{"resourceList":[{"resourceName":"a","selectors":{}},{"resourceName":"a","resourcePrefix":"nvidia.com","selectors":{}}]}"#;
    let config = parse(ok, "intel.com").unwrap();
    assert_eq!(config.resources[1].resource_name, "nvidia.com/a");
}

#[test]
fn bad_prefix_and_device_type_are_errors() {
    let text =
        r#"{"resourceList":[{"resourceName":"a","resourcePrefix":"Intel.com","selectors":{}}]}"#;
    assert_eq!(
        parse(text, "intel.com").unwrap_err().field,
        "resourceList[0].resourcePrefix"
    );
    // Prefixes kubelet refuses are refused here too, naming the field (the host would refuse
    // the whole selection otherwise).
    let long = format!(
        "{}.com",
        "a".repeat(60) + "." + &"b".repeat(60) + "." + &"c".repeat(60) + "." + &"d".repeat(60)
    );
    assert!(long.len() > 244 && long.len() <= 253);
    for prefix in [
        "sriov.kubernetes.io",
        "kubernetes.io",
        "requests.intel.com",
        long.as_str(),
    ] {
        let text = format!(
            r#"{{"resourceList":[{{"resourceName":"a","resourcePrefix":"{prefix}","selectors":{{}}}}]}}"#
        );
        assert_eq!(
            parse(&text, "intel.com").unwrap_err().field,
            "resourceList[0].resourcePrefix",
            "{prefix}"
        );
    }
    // A label longer than 63 characters is not one: kubelet does not limit labels.
    let text = format!(
        r#"{{"resourceList":[{{"resourceName":"a","resourcePrefix":"{}.com","selectors":{{}}}}]}}"#,
        "a".repeat(64)
    );
    assert!(parse(&text, "intel.com").is_ok());
    // ... and so is a default prefix kubelet refuses.
    let text = r#"{"resourceList":[{"resourceName":"a","selectors":{}}]}"#;
    assert!(parse(text, "example.kubernetes.io").is_err());
    assert!(parse(text, "nvidia.com").is_ok());
    let text = r#"{"resourceList":[{"resourceName":"a","deviceType":"netdevice","selectors":{}}]}"#;
    assert_eq!(
        parse(text, "intel.com").unwrap_err().field,
        "resourceList[0].deviceType"
    );
}

#[test]
fn rdma_with_vdpa_rejected_in_one_selector_allowed_in_two() {
    let same =
        r#"{"resourceList":[{"resourceName":"a","selectors":{"isRdma":true,"vdpaType":"vhost"}}]}"#;
    assert!(parse(same, "intel.com").is_err());
    let split = r#"{"resourceList":[{"resourceName":"a","selectors":[{"isRdma":true},{"vdpaType":"vhost"}]}]}"#;
    assert!(parse(split, "intel.com").is_ok());
}

#[test]
fn aux_types_required_and_only_sf() {
    let aux = |sel: &str| {
        parse(
            &format!(
                r#"{{"resourceList":[{{"resourceName":"a","deviceType":"auxNetDevice","selectors":[{{}},{sel}]}}]}}"#
            ),
            "intel.com",
        )
    };
    // The first selector `{}` has no auxTypes either.
    assert_eq!(
        aux(r#"{"auxTypes":["sf"]}"#).unwrap_err().field,
        "resourceList[0].selectors[0].auxTypes"
    );
    let ok = parse(
        r#"{"resourceList":[{"resourceName":"a","deviceType":"auxNetDevice","selectors":[{"auxTypes":["sf"]},{"auxTypes":["sf"]}]}]}"#,
        "intel.com",
    );
    assert!(ok.is_ok());
    let bad = parse(
        r#"{"resourceList":[{"resourceName":"a","deviceType":"auxNetDevice","selectors":[{"auxTypes":["sf"]},{"auxTypes":["eth"]}]}]}"#,
        "intel.com",
    );
    assert_eq!(
        bad.unwrap_err().field,
        "resourceList[0].selectors[1].auxTypes"
    );
}

#[test]
fn keys_unknown_to_the_device_type_are_ignored() {
    // Accelerators have no pfNames: even a wrongly typed one is skipped, as Go skips unknown keys.
    let text = r#"{"resourceList":[{"resourceName":"a","deviceType":"accelerator","selectors":{"pfNames":5,"acpiIndexes":["1"]}}]}"#;
    let config = parse(text, "intel.com").unwrap();
    assert!(config.resources[0].selectors[0].pf_names.is_empty());
    assert!(config.resources[0].selectors[0].acpi_indexes.is_empty());
}

#[test]
fn additional_info_duplicates_merge_like_go_maps() {
    let text = r#"{"resourceList":[{"resourceName":"a","selectors":{},"additionalInfo":{"*":{"k":"1"}},"additionalinfo":{"0000:01:00.1":{"k":"2"}}}]}"#;
    let config = parse(text, "intel.com").unwrap();
    let info = config.resources[0].additional_info.as_ref().unwrap();
    assert_eq!(info.len(), 2);
}

#[test]
fn invalid_json_is_an_error() {
    assert!(parse(r#"{"resourceList":[{"resourceName":"a",}]}"#, "intel.com").is_err());
    assert!(parse("[]", "intel.com").is_err());
}

#[test]
fn first_match_wins_across_resources_and_selectors() {
    let devices = vec![
        vf("0000:01:00.2", "0000:01:00.0", "ens1f0", 0),
        vf("0000:01:00.3", "0000:01:00.0", "ens1f0", 1),
        vf("0000:01:00.4", "0000:01:00.0", "ens1f0", 2),
    ];
    let text = r#"{"resourceList":[
        {"resourceName":"first","selectors":[{"pfNames":["ens1f0#1"]},{"pfNames":["ens1f0#0"],"isRdma":false,"needVhostNet":true}]},
        {"resourceName":"rest","selectors":{"vendors":["15b3"]}}]}"#;
    let config = parse(text, "intel.com").unwrap();
    let pools = select(&config, &devices);
    assert_eq!(ids(&devices, &pools[0]), ["0000:01:00.2", "0000:01:00.3"]);
    assert!(
        pools[0].members[0].vhost_net,
        "hints come from the selector that took the device"
    );
    assert!(!pools[0].members[1].vhost_net);
    assert_eq!(ids(&devices, &pools[1]), ["0000:01:00.4"]);
}

#[test]
fn pf_with_vfs_and_default_route_devices_are_never_net_devices() {
    let mut pf = vf("0000:01:00.0", "", "", 0);
    pf.kind = Some(Kind::Pf);
    pf.pf_id = None;
    pf.pf_name = None;
    pf.vf_index = None;
    pf.sriov_total_vfs = Some(8);
    pf.sriov_num_vfs = Some(2);
    let mut plain_pf = pf.clone();
    plain_pf.id = "0000:02:00.0".into();
    plain_pf.sriov_num_vfs = Some(0);
    let mut uplink = plain_pf.clone();
    uplink.id = "0000:03:00.0".into();
    uplink.carries_default_route = true;
    let mut unbound = vf("0000:01:00.3", "0000:01:00.0", "ens1f0", 1);
    unbound.driver = None;
    let devices = vec![
        pf,
        vf("0000:01:00.2", "0000:01:00.0", "ens1f0", 0),
        unbound,
        plain_pf,
        uplink,
    ];
    let config = parse(
        r#"{"resourceList":[{"resourceName":"all","selectors":{}}]}"#,
        "intel.com",
    )
    .unwrap();
    let pools = select(&config, &devices);
    assert_eq!(ids(&devices, &pools[0]), ["0000:01:00.2", "0000:02:00.0"]);
}

/// Four VFs: RDMA devices on the host; none but devlink `enable_rdma` true (an exclusive-RDMA VF
/// inside a pod); `enable_rdma` false; parameter unknown.
fn rdma_vfs() -> Vec<PlainDevice> {
    let mut with_devices = vf("0000:01:00.2", "0000:01:00.0", "ens1f0", 0);
    with_devices.has_rdma = true;
    let mut devlink_only = vf("0000:01:00.3", "0000:01:00.0", "ens1f0", 1);
    devlink_only.devlink_enable_rdma = Some(true);
    let mut disabled = vf("0000:01:00.4", "0000:01:00.0", "ens1f0", 2);
    disabled.devlink_enable_rdma = Some(false);
    let unknown = vf("0000:01:00.5", "0000:01:00.0", "ens1f0", 3);
    vec![with_devices, devlink_only, disabled, unknown]
}

#[test]
fn is_rdma_also_takes_devices_whose_devlink_enable_rdma_is_true() {
    let devices = rdma_vfs();
    let config = parse(
        r#"{"resourceList":[{"resourceName":"rdma","selectors":{"isRdma":true}}]}"#,
        "intel.com",
    )
    .unwrap();
    let pools = select(&config, &devices);
    assert_eq!(ids(&devices, &pools[0]), ["0000:01:00.2", "0000:01:00.3"]);
    assert!(pools[0].members.iter().all(|m| m.rdma));
}

#[test]
fn is_rdma_false_or_absent_is_no_filter() {
    let devices = rdma_vfs();
    for selectors in [r#"{"isRdma":false}"#, "{}"] {
        let config = parse(
            &format!(r#"{{"resourceList":[{{"resourceName":"any","selectors":{selectors}}}]}}"#),
            "intel.com",
        )
        .unwrap();
        let pools = select(&config, &devices);
        assert_eq!(pools[0].members.len(), 4, "{selectors}");
        assert!(pools[0].members.iter().all(|m| !m.rdma), "{selectors}");
    }
}

/// `pfNames: [""]` (an empty name rendered by a template) is a filter that names no PF: nothing is
/// selected, as upstream. Dropping empty entries would have made it no filter at all.
#[test]
fn only_empty_pf_names_select_nothing() {
    let devices = vec![vf("0000:01:00.2", "0000:01:00.0", "ens1f0", 0)];
    for list in [r#"[""]"#, "[null]", r#"["", null]"#] {
        for key in ["pfNames", "rootDevices"] {
            let config = parse(
                &format!(
                    r#"{{"resourceList":[{{"resourceName":"x","selectors":{{"{key}":{list}}}}}]}}"#
                ),
                "intel.com",
            )
            .unwrap();
            let pools = select(&config, &devices);
            assert!(pools[0].members.is_empty(), "{key}: {list}");
        }
    }
}

/// Upstream's auxNetDevice selectors have no `needVhostNet`: the key is ignored there (a value of
/// any type), so a sub-function never gets `/dev/vhost-net`.
#[test]
fn aux_ignores_need_vhost_net() {
    let sf = sf(2);
    for value in ["true", "\"yes\""] {
        let config = parse(
            &format!(
                r#"{{"resourceList":[{{"resourceName":"sf","deviceType":"auxNetDevice","selectors":{{"auxTypes":["sf"],"needVhostNet":{value}}}}}]}}"#
            ),
            "intel.com",
        )
        .unwrap();
        let pools = select(&config, std::slice::from_ref(&sf));
        assert_eq!(
            ids(std::slice::from_ref(&sf), &pools[0]),
            ["mlx5_core.sf.2"]
        );
        assert!(!pools[0].members[0].vhost_net, "needVhostNet {value}");
    }
}

#[test]
fn aux_is_rdma_also_takes_devlink_enable_rdma() {
    let sf = |num: u32, enable: Option<bool>| PlainDevice {
        devlink_enable_rdma: enable,
        ..sf(num)
    };
    let devices = vec![sf(2, Some(true)), sf(3, Some(false)), sf(4, None)];
    let config = parse(
        r#"{"resourceList":[{"resourceName":"sf","deviceType":"auxNetDevice","selectors":{"auxTypes":["sf"],"isRdma":true}}]}"#,
        "intel.com",
    )
    .unwrap();
    let pools = select(&config, &devices);
    assert_eq!(ids(&devices, &pools[0]), ["mlx5_core.sf.2"]);
}

#[test]
fn ddp_profiles_match_exactly_and_skip_unknown_profiles() {
    let mut gtp = vf("0000:01:00.2", "0000:01:00.0", "ens1f0", 0);
    gtp.ddp_profile = Some("GTPv1-C/U IPv4/IPv6 payload".into());
    let mut comms = vf("0000:01:00.3", "0000:01:00.0", "ens1f0", 1);
    comms.ddp_profile = Some("ICE COMMS Package".into());
    let unknown = vf("0000:01:00.4", "0000:01:00.0", "ens1f0", 2);
    let devices = vec![gtp, comms, unknown];
    let config = parse(
        r#"{"resourceList":[{"resourceName":"gtp","selectors":{"ddpProfiles":["GTPv1-C/U IPv4/IPv6 payload","ice comms package"]}}]}"#,
        "intel.com",
    )
    .unwrap();
    let pools = select(&config, &devices);
    // Case-sensitive, like upstream's `contains`.
    assert_eq!(ids(&devices, &pools[0]), ["0000:01:00.2"]);
}

/// Upstream names a sub-function's PF by its uplink representor only and drops a sub-function
/// whose PF has none (`NewGenNetDevice` fails, the provider skips it with a warning): without a PF
/// name it is never pooled, whatever the selector.
#[test]
fn aux_without_a_pf_name_is_never_pooled() {
    let orphan = PlainDevice {
        pf_name: None,
        ..sf(3)
    };
    let devices = vec![sf(2), orphan];
    for selectors in [
        r#"{"auxTypes":["sf"]}"#,
        r#"{"auxTypes":["sf"],"rootDevices":["0000:01:00.0"]}"#,
    ] {
        let config = parse(
            &format!(
                r#"{{"resourceList":[{{"resourceName":"sf","deviceType":"auxNetDevice","selectors":{selectors}}}]}}"#
            ),
            "intel.com",
        )
        .unwrap();
        let pools = select(&config, &devices);
        assert_eq!(ids(&devices, &pools[0]), ["mlx5_core.sf.2"], "{selectors}");
    }
}

/// Unknown keys are ignored as upstream ignores them, but each is noted for a warning: a
/// misspelled selector key (`pfNamez`) silently widened a pool, with nothing in the log.
#[test]
fn ignored_keys_are_noted_with_a_hint() {
    let text = r#"{"resourceList":[
        {"resourceName":"a","selectors":{"pfNamez":["ens1f0"],"vendors":["15b3"]}},
        {"resourceName":"b","deviceType":"accelerator","vendors":["8086"],
         "selectors":{"pfNames":["ens1f1"]}},
        {"resourceName":"c","selectorz":{},"selectors":{}}
    ],"version":1,"resourceLists":[],"spread":{"numaLocal":true}}"#;
    let config = parse(text, "intel.com").unwrap();
    assert_eq!(config.resources.len(), 3);
    let notes = &config.notes;
    let has = |path: &str, part: &str| {
        notes
            .iter()
            .any(|n| n.starts_with(path) && n.contains(part))
    };
    // A near miss of `resourceList` is a typo; other top-level keys are other policies' settings
    // (`spread` is the spread allocator's), which used to be warned about on every load.
    assert!(
        has(
            "the configuration:",
            "unknown key \"resourceLists\" (did you mean \"resourceList\"?)"
        ),
        "{notes:#?}"
    );
    assert!(
        !notes
            .iter()
            .any(|n| n.contains("\"version\"") || n.contains("\"spread\"")),
        "{notes:#?}"
    );
    assert!(
        has(
            "resourceList[0].selectors:",
            "\"pfNamez\" (did you mean \"pfNames\"?)"
        ),
        "{notes:#?}"
    );
    assert!(
        has(
            "resourceList[1]:",
            "\"vendors\" is a selector key; put it inside \"selectors\""
        ),
        "{notes:#?}"
    );
    assert!(
        has(
            "resourceList[1].selectors:",
            "\"pfNames\" is not a selector of this resource's deviceType"
        ),
        "{notes:#?}"
    );
    assert!(
        has(
            "resourceList[2]:",
            "\"selectorz\" (did you mean \"selectors\"?)"
        ),
        "{notes:#?}"
    );
    assert_eq!(notes.len(), 5, "{notes:#?}");
    assert!(
        notes
            .iter()
            .all(|n| n.ends_with("ignored, as the upstream plugin ignores it"))
    );
    // A config with only known keys (any case) has nothing to say.
    let clean = r#"{"ResourceList":[{"ResourceName":"a","Selectors":{"PfNames":["x"]}}]}"#;
    assert!(parse(clean, "intel.com").unwrap().notes.is_empty());
}

/// Values Go's decoder only scans for syntax (it skips the values of keys it does not use) but that
/// serde_json refuses to decode: a number beyond `f64`, a lone surrogate escape, nesting deeper
/// than serde_json's recursion limit of 128.
fn skipped_only_values() -> Vec<(&'static str, String)> {
    vec![
        ("a number beyond f64", "1e400".to_string()),
        ("a lone surrogate", r#""\ud800""#.to_string()),
        (
            "deep nesting",
            format!("{}1{}", "[{\"a\":".repeat(150), "}]".repeat(150)),
        ),
    ]
}

/// Such values under keys upstream ignores — another policy's top-level section, an unknown key in
/// a resource or in a selector, a selector key the resource's device type does not have — used to
/// refuse the whole configuration as "not valid JSON", so nothing was served.
#[test]
fn values_of_ignored_keys_are_only_checked_for_syntax() {
    let devices = vec![
        vf("0000:01:00.2", "0000:01:00.0", "ens1f0", 0),
        vf("0000:01:00.3", "0000:01:00.0", "ens1f0", 1),
    ];
    for (what, value) in skipped_only_values() {
        for text in [
            format!(
                r#"{{"other":{value},"resourceList":[{{"resourceName":"a","selectors":{{"pfNames":["ens1f0#1"]}}}}],"spread":{value}}}"#
            ),
            format!(
                r#"{{"resourceList":[{{"resourceName":"a","note":{value},"selectors":{{"pfNames":["ens1f0#1"]}}}}]}}"#
            ),
            format!(
                r#"{{"resourceList":[{{"resourceName":"a","selectors":[{{"pfNames":["ens1f0#1"],"comment":{value}}}]}}]}}"#
            ),
        ] {
            let config = parse(&text, "intel.com").unwrap_or_else(|e| panic!("{what}: {e}"));
            let pools = select(&config, &devices);
            assert_eq!(ids(&devices, &pools[0]), ["0000:01:00.3"], "{what}: {text}");
        }
        // Upstream decodes `selectors` for the resource's device type: an accelerator has no
        // `pfNames`, so Go skips its value.
        let text = format!(
            r#"{{"resourceList":[{{"resourceName":"a","deviceType":"accelerator","selectors":{{"pfNames":{value},"vendors":["8086"]}}}}]}}"#
        );
        let config = parse(&text, "intel.com").unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(config.resources[0].selectors[0].vendors, ["8086"], "{what}");
    }
    // Still strict JSON: a syntax error anywhere refuses the configuration, as Go does.
    for bad in [
        r#"{"other":[1,],"resourceList":[]}"#,
        r#"{"other":"\x","resourceList":[]}"#,
        r#"{"other":01,"resourceList":[]}"#,
        r#"{"resourceList":[{"resourceName":"a","x":[1,2,],"selectors":{}}]}"#,
        r#"{"resourceList":[{"resourceName":"a","selectors":{"x":nul}}]}"#,
    ] {
        let err = parse(bad, "intel.com").unwrap_err();
        assert!(err.message.contains("not valid JSON"), "{bad}: {err}");
    }
}

/// Go reads a lone surrogate escape in a key as U+FFFD: the key is merely unknown.
#[test]
fn keys_with_lone_surrogates_are_unknown_keys() {
    let text = r#"{"\ud800":1,"resourceList":[{"resourceName":"a","selectors":{"vendors\udc00":["x"],"vendors":["15b3"]}}]}"#;
    let config = parse(text, "intel.com").unwrap();
    assert_eq!(config.resources[0].selectors[0].vendors, ["15b3"]);
    assert!(
        config
            .notes
            .iter()
            .any(|n| n.contains("unknown key \"vendors\u{fffd}\"")),
        "{:#?}",
        config.notes
    );
}

/// A `rootDevices` PF written as `lspci` shows it (`3b:00.0`, no domain) silently gave an empty
/// pool, with no note as `pciAddresses` gets one; the long form in any case is not noted.
#[test]
fn root_devices_that_can_never_match_are_noted() {
    let text = r##"{"resourceList":[{"resourceName":"a","selectors":{
        "rootDevices":["3b:00.0#0-3","0000:3B:00.0#4"," 0000:3b:00.1","#2","0000:3b:00.0"]}}]}"##;
    let config = parse(text, "intel.com").unwrap();
    let notes = &config.notes;
    for expected in [
        r#"resourceList[0].selectors: rootDevices PF "3b:00.0" of resource "intel.com/a" can never match: sysfs PCI addresses are in the long lower-case form; write "0000:3b:00.0""#,
        r#"rootDevices PF " 0000:3b:00.1" of resource "intel.com/a" can never match: sysfs PCI addresses are in the long lower-case form; write "0000:3b:00.1""#,
        r#"rootDevices PF "" of resource "intel.com/a" can never match"#,
    ] {
        assert!(
            notes.iter().any(|n| n.contains(expected)),
            "{expected}\n{notes:#?}"
        );
    }
    assert_eq!(notes.len(), 3, "{notes:#?}");
    // As upstream, the short form selects nothing; the long form matches whatever its case.
    let devices = vec![
        vf("0000:3b:00.2", "0000:3b:00.0", "ens1f0", 0),
        vf("0000:3b:00.6", "0000:3b:00.0", "ens1f0", 4),
    ];
    let pools = select(&config, &devices);
    assert_eq!(ids(&devices, &pools[0]), ["0000:3b:00.2", "0000:3b:00.6"]);
    let short_only = parse(
        r#"{"resourceList":[{"resourceName":"a","selectors":{"rootDevices":["3b:00.0"]}}]}"#,
        "intel.com",
    )
    .unwrap();
    assert!(select(&short_only, &devices)[0].members.is_empty());
}

/// Upstream compares `vendors`, `devices`, `pciAddresses` and `pKeys` exactly with what sysfs
/// holds, so `"15B3"`, `"0x15b3"`, `"3b:00.2"` or `"0x1"` silently gave an empty pool. They are
/// still accepted (they select nothing, as upstream), but each is noted, with the form that would
/// match.
#[test]
fn values_that_can_never_match_are_noted() {
    let text = r#"{"resourceList":[
        {"resourceName":"a","selectors":[{"vendors":["15b3","15B3"]},
            {"vendors":["0x15b3"," 8086 "],"devices":["0X1018","101"],"pciAddresses":["3b:00.2","0000:3B:00.2"],
             "pKeys":["0x1","7fff","0xABCD","0xffff"]}]},
        {"resourceName":"b","deviceType":"accelerator","resourcePrefix":"nvidia.com",
         "selectors":{"vendors":["8086"],"devices":["0d5c"],"pciAddresses":["0000:3b:00.2","10000:e1:00.1",""]}}
    ]}"#;
    let config = parse(text, "intel.com").unwrap();
    let notes = &config.notes;
    let has = |part: &str| notes.iter().any(|n| n.contains(part));
    for expected in [
        r#"resourceList[0].selectors[0]: vendors "15B3" of resource "intel.com/a" can never match: sysfs vendor ids are 4 lower-case hex digits without "0x"; write "15b3""#,
        r#"resourceList[0].selectors[1]: vendors "0x15b3" of resource "intel.com/a" can never match: sysfs vendor ids are 4 lower-case hex digits without "0x"; write "15b3""#,
        r#"devices "0X1018" of resource "intel.com/a" can never match: sysfs device ids are 4 lower-case hex digits without "0x"; write "1018""#,
        r#"devices "101" of resource "intel.com/a" can never match: sysfs device ids are 4 lower-case hex digits without "0x", such as "1018""#,
        r#"pciAddresses "3b:00.2" of resource "intel.com/a" can never match: sysfs PCI addresses are in the long lower-case form; write "0000:3b:00.2""#,
        r#"pciAddresses "0000:3B:00.2" of resource "intel.com/a" can never match: sysfs PCI addresses are in the long lower-case form; write "0000:3b:00.2""#,
        r#"pKeys "0x1" of resource "intel.com/a" can never match: the kernel writes pkeys as "0x" and 4 lower-case hex digits; write "0x0001""#,
        r#"pKeys "7fff" of resource "intel.com/a" can never match: the kernel writes pkeys as "0x" and 4 lower-case hex digits; write "0x7fff""#,
        r#"pKeys "0xABCD" of resource "intel.com/a" can never match: the kernel writes pkeys as "0x" and 4 lower-case hex digits; write "0xabcd""#,
        r#"vendors " 8086 " of resource "intel.com/a" can never match: sysfs vendor ids are 4 lower-case hex digits without "0x"; write "8086""#,
        r#"resourceList[1].selectors: pciAddresses "" of resource "nvidia.com/b" can never match"#,
    ] {
        assert!(has(expected), "{expected}\n{notes:#?}");
    }
    // Values in the sysfs form (a PCI domain may have more than 4 digits) are not noted.
    assert_eq!(notes.len(), 11, "{notes:#?}");
    // As upstream, they select nothing.
    let mut upper = vf("0000:3b:00.2", "0000:3b:00.0", "ens1f0", 0);
    upper.pkey = Some("0x0001".into());
    let devices = vec![upper];
    let pools = select(&config, &devices);
    assert_eq!(
        ids(&devices, &pools[0]),
        ["0000:3b:00.2"],
        "by the first selector"
    );
    let only_wrong = parse(
        r#"{"resourceList":[{"resourceName":"a","selectors":[{"vendors":["15B3"]},{"pciAddresses":["3b:00.2"]},{"pKeys":["0x1"]}]}]}"#,
        "intel.com",
    )
    .unwrap();
    assert!(select(&only_wrong, &devices)[0].members.is_empty());
    // Keys the device type does not have are ignored, values and all: no second note.
    let aux = parse(
        r#"{"resourceList":[{"resourceName":"a","deviceType":"auxNetDevice","selectors":{"auxTypes":["sf"],"pKeys":["1"],"pciAddresses":["x"]}}]}"#,
        "intel.com",
    )
    .unwrap();
    assert_eq!(aux.notes.len(), 2, "{:#?}", aux.notes);
    assert!(!aux.notes.iter().any(|n| n.contains("can never match")));
}
