//! NetConf and CNI_ARGS parsing: every sriov-cni field, its validation, and the messages that name
//! the field, the value and the fix.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{Value, json};
use vfpool_cni::error::code;
use vfpool_cni::mac::MacAddr;
use vfpool_cni::netconf::{CniArgs, LogLevel, NetConf, NetConfError, VfLinkState, VlanProto};

fn base() -> Value {
    json!({"cniVersion": "1.0.0", "name": "sriov-net", "type": "sriov", "deviceID": "0000:3B:00.2"})
}

fn with(extra: Value) -> Value {
    let mut c = base();
    if let (Value::Object(c), Value::Object(e)) = (&mut c, extra) {
        c.extend(e);
    }
    c
}

fn parse(v: &Value) -> Result<NetConf, NetConfError> {
    NetConf::parse(v.to_string().as_bytes(), &CniArgs::default())
}

#[test]
fn minimal_config_touches_nothing() {
    let c = parse(&base()).unwrap();
    assert_eq!(c.device_id.as_deref(), Some("0000:3b:00.2"));
    assert!(
        c.vf.is_empty(),
        "absent VLAN etc. must mean untouched (PR #296)"
    );
    assert_eq!(c.ipam_type, None);
    assert_eq!(c.log_level, LogLevel::Info);
}

#[test]
fn every_field_is_read_with_go_style_key_matching() {
    let c = parse(&with(json!({
        "VLAN": 100, "vlanqos": 5, "VlanProto": "802.1AD",
        "MAC": "AA:BB:CC:DD:EE:FF", "min_tx_rate": 10, "max_tx_rate": 0,
        "spoofchk": "off", "trust": "on", "link_state": "disable", "mtu": 9000,
        "logLevel": "debug", "logFile": "/var/log/x.log",
        "ipam": {"type": "host-local"}
    })))
    .unwrap();
    assert_eq!(c.vf.vlan, Some((100, 5, VlanProto::Dot1Ad)));
    assert_eq!(c.mac, Some("aa:bb:cc:dd:ee:ff".parse::<MacAddr>().unwrap()));
    assert_eq!(
        c.vf.rate,
        Some((10, 0)),
        "max 0 means no limit, so min 10 is fine"
    );
    assert_eq!((c.vf.spoofchk, c.vf.trust), (Some(false), Some(true)));
    assert_eq!(c.vf.link_state, Some(VfLinkState::Disable));
    assert_eq!(c.mtu, Some(9000));
    assert_eq!(c.ipam_type.as_deref(), Some("host-local"));
    assert_eq!(c.log_level, LogLevel::Debug);
}

#[test]
fn mac_priority_is_runtime_config_then_cni_args_then_netconf() {
    let args = CniArgs::parse("IgnoreUnknown=true;K8S_POD_NAME=p;MAC=02:00:00:00:00:02").unwrap();
    let c = NetConf::parse(
        with(json!({"mac": "02:00:00:00:00:01"}))
            .to_string()
            .as_bytes(),
        &args,
    )
    .unwrap();
    assert_eq!(c.mac.unwrap().to_string(), "02:00:00:00:00:02");
    let c = NetConf::parse(
        with(json!({"mac": "02:00:00:00:00:01", "runtimeConfig": {"mac": "02:00:00:00:00:03"}}))
            .to_string()
            .as_bytes(),
        &args,
    )
    .unwrap();
    assert_eq!(c.mac.unwrap().to_string(), "02:00:00:00:00:03");
    assert_eq!(
        c.vf.mac, c.mac,
        "the VF admin MAC follows the effective choice"
    );
}

/// A group (multicast, broadcast) or all-zero MAC is refused up front, naming the field it came
/// from: the PF took it and the VF driver refused it later, after other settings were applied,
/// with a code that blamed the driver.
#[test]
fn a_mac_that_is_not_unicast_is_refused_naming_its_source() {
    let field_of = |conf: Value, args: &str| match NetConf::parse(
        conf.to_string().as_bytes(),
        &CniArgs::parse(args).unwrap(),
    ) {
        Err(NetConfError::Invalid { field, reason, .. }) => {
            assert!(reason.contains("unicast"), "{reason}");
            field
        }
        other => panic!("accepted: {other:?}"),
    };
    for bad in [
        "01:00:5e:00:00:01",
        "ff:ff:ff:ff:ff:ff",
        "00:00:00:00:00:00",
    ] {
        assert_eq!(field_of(with(json!({ "mac": bad })), ""), "mac");
        assert_eq!(
            field_of(with(json!({"runtimeConfig": { "mac": bad }})), ""),
            "runtimeConfig.mac"
        );
        assert_eq!(field_of(base(), &format!("MAC={bad}")), "CNI_ARGS MAC");
    }
    let err = parse(&with(json!({"mac": "03:00:00:00:00:01"}))).unwrap_err();
    assert_eq!(err.code(), code::INVALID_CONFIG);
    // DEL still cleans up after such an ADD.
    let args = CniArgs::parse("MAC=01:00:5e:00:00:01").unwrap();
    let (conf, warnings) = NetConf::parse_for_del(base().to_string().as_bytes(), &args).unwrap();
    assert_eq!(conf.mac, None);
    assert!(warnings[0].contains("CNI_ARGS MAC"), "{warnings:?}");
}

/// sriov-cni never reads a `mac` that runtimeConfig or CNI_ARGS overrides, so a bad one does not
/// fail the ADD there; it failed it here.
#[test]
fn an_overridden_mac_is_not_read() {
    let conf = with(json!({"mac": "not-a-mac", "runtimeConfig": {"mac": "02:00:00:00:00:03"}}));
    assert_eq!(
        parse(&conf).unwrap().mac.unwrap().to_string(),
        "02:00:00:00:00:03"
    );
    let args = CniArgs::parse("MAC=02:00:00:00:00:02").unwrap();
    let conf = NetConf::parse(
        with(json!({"mac": "not-a-mac"})).to_string().as_bytes(),
        &args,
    )
    .unwrap();
    assert_eq!(conf.vf.mac.unwrap().to_string(), "02:00:00:00:00:02");
    assert!(parse(&with(json!({"mac": "not-a-mac"}))).is_err());
}

#[test]
fn multus_pci_bus_id_is_accepted_and_must_agree_with_device_id() {
    let mut c = base();
    c.as_object_mut().unwrap().remove("deviceID");
    c["pciBusID"] = json!("0000:3b:00.4");
    assert_eq!(
        parse(&c).unwrap().device_id.as_deref(),
        Some("0000:3b:00.4")
    );
    let err = parse(&with(json!({"pciBusID": "0000:3b:00.4"}))).unwrap_err();
    assert!(err.to_string().contains("pciBusID"), "{err}");
}

/// (config change, field the message must name, expected CNI code)
#[test]
fn each_bad_value_is_refused_with_code_7_naming_field_and_value() {
    let cases: Vec<(Value, &str)> = vec![
        (json!({"vlan": 4095}), "vlan"),
        (json!({"vlan": -1}), "vlan"),
        (json!({"vlan": "100"}), "vlan"),
        (json!({"vlan": 1.5}), "vlan"),
        (json!({"vlan": 10, "vlanQoS": 8}), "vlanQoS"),
        (json!({"vlanQoS": 1}), "vlanQoS"),
        (json!({"vlan": 0, "vlanQoS": 1}), "vlanQoS"),
        (json!({"vlanProto": "802.1ad"}), "vlanProto"),
        (json!({"vlan": 10, "vlanProto": "qinq"}), "vlanProto"),
        (json!({"vlan": 0, "vlanProto": "802.1ad"}), "vlanProto"),
        (json!({"mac": "not-a-mac"}), "mac"),
        (json!({"mac": "02:00:00:00:00"}), "mac"),
        (json!({"spoofchk": "yes"}), "spoofchk"),
        (json!({"trust": "On"}), "trust"),
        (json!({"trust": true}), "trust"),
        (json!({"link_state": "up"}), "link_state"),
        (
            json!({"min_tx_rate": 200, "max_tx_rate": 100}),
            "min_tx_rate",
        ),
        (json!({"max_tx_rate": -5}), "max_tx_rate"),
        (json!({"mtu": 20}), "mtu"),
        (json!({"mtu": 70000}), "mtu"),
        (json!({"deviceID": "3b:00.2"}), "deviceID"),
        (json!({"deviceID": "../../etc"}), "deviceID"),
        (json!({"deviceID": 5}), "deviceID"),
        (json!({"name": "bad name"}), "name"),
        (json!({"ipam": {"type": "../evil"}}), "ipam.type"),
        (json!({"ipam": "host-local"}), "ipam"),
        (json!({"runtimeConfig": {"mac": "zz"}}), "runtimeConfig.mac"),
    ];
    for (change, field) in cases {
        let conf = with(change.clone());
        let err = parse(&conf).expect_err(&change.to_string());
        assert_eq!(err.code(), code::INVALID_CONFIG, "{change}: {err}");
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("\"{field}\"")),
            "{change}: message {msg:?} does not name {field}"
        );
        // The offending value is the last scalar in the change.
        let mut value = change
            .as_object()
            .unwrap()
            .values()
            .next_back()
            .unwrap()
            .clone();
        while let Some(inner) = value
            .as_object()
            .and_then(|o| o.values().next_back())
            .cloned()
        {
            value = inner;
        }
        let value = value.to_string();
        assert!(
            msg.contains(value.trim_matches('"')),
            "{change}: message {msg:?} does not show the value"
        );
    }
}

#[test]
fn decode_version_and_args_errors_have_their_own_codes() {
    let err = NetConf::parse(b"{not json", &CniArgs::default()).unwrap_err();
    assert_eq!(err.code(), code::DECODE_FAILURE);
    let err = NetConf::parse(b"[1,2]", &CniArgs::default()).unwrap_err();
    assert_eq!(err.code(), code::DECODE_FAILURE);
    let err = parse(&with(json!({"cniVersion": "9.0.0"}))).unwrap_err();
    assert_eq!(err.code(), code::INCOMPATIBLE_VERSION);
    let mut no_name = base();
    no_name.as_object_mut().unwrap().remove("name");
    assert_eq!(parse(&no_name).unwrap_err().code(), code::INVALID_CONFIG);

    let err = CniArgs::parse("K8S_POD_NAME=p").unwrap_err();
    assert_eq!(err.code(), code::INVALID_ENV);
    assert!(err.to_string().contains("IgnoreUnknown"), "{err}");
    assert!(CniArgs::parse("MAC").is_err());
    assert!(CniArgs::parse("MAC=1=2").is_err());
    assert_eq!(CniArgs::parse("").unwrap(), CniArgs::default());
}

/// sriov-cni reads CNI_ARGS `MAC=` as text and parses it only where it is used: an empty one is
/// none, and one that `runtimeConfig.mac` overrides is never read. Both failed the ADD here, the
/// empty one as a bad environment (code 4). One that is used and malformed still fails, naming it.
#[test]
fn cni_args_mac_is_read_only_where_it_is_used() {
    let empty = CniArgs::parse("IgnoreUnknown=1;MAC=").unwrap();
    assert_eq!(empty, CniArgs::default());
    let conf = NetConf::parse(base().to_string().as_bytes(), &empty).unwrap();
    assert_eq!(conf.mac, None);

    let bad = CniArgs::parse("IgnoreUnknown=1;MAC=zz").unwrap();
    let overridden = with(json!({"runtimeConfig": {"mac": "02:00:00:00:00:03"}}));
    let conf = NetConf::parse(overridden.to_string().as_bytes(), &bad).unwrap();
    assert_eq!(conf.mac.unwrap().to_string(), "02:00:00:00:00:03");

    let err = NetConf::parse(base().to_string().as_bytes(), &bad).unwrap_err();
    assert_eq!(err.code(), code::INVALID_CONFIG, "{err}");
    assert!(err.to_string().contains("CNI_ARGS MAC"), "{err}");
    // DEL drops it with a warning, as any bad value.
    let (conf, warnings) = NetConf::parse_for_del(base().to_string().as_bytes(), &bad).unwrap();
    assert_eq!(conf.mac, None);
    assert!(warnings[0].contains("CNI_ARGS MAC"), "{warnings:?}");
}

#[test]
fn missing_cni_version_means_0_1_0() {
    let mut c = base();
    c.as_object_mut().unwrap().remove("cniVersion");
    assert_eq!(parse(&c).unwrap().cni_version, "0.1.0");
    // libcni's decoder reads an empty one the same way; it was refused with code 1.
    let empty = parse(&with(json!({"cniVersion": ""}))).unwrap();
    assert_eq!(empty.cni_version, "0.1.0");
}

/// sriov-cni falls back to info and stderr, with a warning, for a bad `logLevel` or a relative
/// `logFile`; so does the README ("an absolute path (else stderr)"). Never error code 7.
#[test]
fn a_bad_log_level_or_relative_log_file_falls_back_with_a_warning() {
    let c = parse(&with(
        json!({"logLevel": "loud", "logFile": "relative.log"}),
    ))
    .unwrap();
    assert_eq!(c.log_level, LogLevel::Info);
    assert_eq!(c.log_file, None);
    assert_eq!(c.log_warnings.len(), 2, "{:?}", c.log_warnings);
    assert!(c.log_warnings[0].contains("logLevel") && c.log_warnings[0].contains("loud"));
    assert!(c.log_warnings[1].contains("logFile") && c.log_warnings[1].contains("absolute"));
    let good = parse(&with(
        json!({"logLevel": "debug", "logFile": "/var/log/x.log"}),
    ))
    .unwrap();
    assert!(good.log_warnings.is_empty());
}

#[test]
fn macs_in_go_dotted_notation_are_accepted_everywhere_a_mac_is() {
    // Go's net.ParseMAC (sriov-cni, Multus) reads 0200.0000.0001 as 02:00:00:00:00:01.
    let c = parse(&with(json!({"mac": "0200.0000.00AA"}))).unwrap();
    assert_eq!(c.mac.unwrap().to_string(), "02:00:00:00:00:aa");
    assert_eq!(c.vf.mac, c.mac);
    let c = parse(&with(json!({"runtimeConfig": {"mac": "0200.0000.00bb"}}))).unwrap();
    assert_eq!(c.mac.unwrap().to_string(), "02:00:00:00:00:bb");
    let args = CniArgs::parse("IgnoreUnknown=1;MAC=0200.0000.00cc").unwrap();
    let c = NetConf::parse(base().to_string().as_bytes(), &args).unwrap();
    assert_eq!(c.mac.unwrap().to_string(), "02:00:00:00:00:cc");
    // An EUI-64 is a valid ParseMAC address but no Ethernet VF MAC: a config error naming it.
    let err = parse(&with(json!({"mac": "0200.5e10.0000.0001"}))).unwrap_err();
    assert_eq!(err.code(), code::INVALID_CONFIG, "{err}");
    assert!(err.to_string().contains("8-byte"), "{err}");
}
