//! The facts gatherer against a recording fake devlink, the parsers against hostile JSON, and the
//! real runner against real processes (stand-in scripts, and the machine's own `devlink`).

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::time::{Duration, Instant};

use vfpool_sysfs::{Device, DeviceKind, Inventory};

use super::devlink::fake::RecordingDevlink;
use super::devlink::{
    Devlink, DevlinkCli, DevlinkError, Query, parse_ddp_name, parse_devices, parse_enable_rdma,
};
use super::*;

const ROUTES: &str = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
eno1\t00000000\t0102A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
ens1f0\t0000000A\t00000000\t0001\t0\t0\t0\t000000FF\t0\t0\t0\n";

fn device(id: &str, kind: DeviceKind, class: &str, driver: &str) -> Device {
    let mut d = Device::unknown(id, kind);
    d.class = Some(class.into());
    d.driver = Some(driver.into());
    d
}

fn vf(id: &str, pf: &str, driver: &str) -> Device {
    let mut d = device(id, DeviceKind::Vf, "020000", driver);
    d.pf_id = Some(pf.into());
    d
}

/// An ice PF with two VFs, an mlx5 PF with one VF and one SF, an unbound network PF, an
/// accelerator PF and the host's virtio NIC (no devlink instance).
fn node() -> Inventory {
    let mut aux = device("mlx5_core.sf.4", DeviceKind::Aux, "020000", "mlx5_core");
    aux.pf_id = Some("0000:5e:00.0".into());
    let mut unbound = Device::unknown("0000:af:00.0", DeviceKind::Pf);
    unbound.class = Some("020000".into());
    Inventory {
        devices: vec![
            device("0000:00:03.0", DeviceKind::Pf, "020000", "virtio-pci"),
            device("0000:3b:00.0", DeviceKind::Pf, "020000", "ice"),
            vf("0000:3b:01.0", "0000:3b:00.0", "iavf"),
            vf("0000:3b:01.1", "0000:3b:00.0", "iavf"),
            device("0000:5e:00.0", DeviceKind::Pf, "020000", "mlx5_core"),
            vf("0000:5e:00.2", "0000:5e:00.0", "mlx5_core"),
            device("0000:86:00.0", DeviceKind::Pf, "120000", "qat_4xxx"),
            unbound,
            aux,
        ],
        node: Default::default(),
    }
}

const DEVICES: &str = r#"{"dev":{"pci/0000:3b:00.0":{},"pci/0000:5e:00.0":{},"pci/0000:5e:00.2":{},
"pci/0000:86:00.0":{},"pci/0000:af:00.0":{},"auxiliary/mlx5_core.sf.4":{}}}"#;

const PARAMS: &str = r#"{"param":{
"pci/0000:3b:00.0":[{"name":"enable_roce","type":"generic","values":[{"cmode":"runtime","value":false}]}],
"pci/0000:5e:00.0":[{"name":"enable_roce","type":"generic","values":[{"cmode":"driverinit","value":true}]},
                    {"name":"enable_rdma","type":"generic","values":[{"cmode":"driverinit","value":true}]}],
"pci/0000:5e:00.2":[{"name":"enable_rdma","type":"generic","values":[{"cmode":"driverinit","value":true}]}],
"auxiliary/mlx5_core.sf.4":[{"name":"enable_rdma","type":"generic","values":[{"cmode":"driverinit","value":false}]}],
"pci/0000:99:00.0":[{"name":"enable_rdma","type":"generic","values":[{"cmode":"driverinit","value":true}]}]
}}"#;

const ICE_INFO: &str = r#"{"info":{"pci/0000:3b:00.0":{"driver":"ice","serial_number":"00-01-02-ff-ff-03-04-05",
"versions":{"fixed":{"board.id":"K91258-000"},"running":{"fw.mgmt":"6.1.2","fw.app.name":"ICE COMMS Package","fw.app":"1.3.37.0"},
"stored":{"fw.mgmt":"6.1.2"}}}}}"#;

const MLX_INFO: &str = r#"{"info":{"pci/0000:5e:00.0":{"driver":"mlx5_core","versions":{"fixed":{"fw.psid":"MT_0000000080"},
"running":{"fw.version":"22.36.1010","fw":"22.36.1010"}}}}}"#;

fn routes_file() -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), ROUTES).unwrap();
    file
}

fn full_fake() -> RecordingDevlink {
    RecordingDevlink::default()
        .answer(Query::Devices, DEVICES)
        .answer(Query::AllParams, PARAMS)
        .answer(Query::Info("pci/0000:3b:00.0".into()), ICE_INFO)
        .answer(Query::Info("pci/0000:5e:00.0".into()), MLX_INFO)
}

/// A gatherer over a shared fake so the test can read the recorded calls afterwards.
struct Shared(std::sync::Arc<RecordingDevlink>);

impl Devlink for Shared {
    fn query(&self, query: &Query) -> Result<Vec<u8>, DevlinkError> {
        self.0.query(query)
    }
}

fn gatherer(
    fake: RecordingDevlink,
    routes: &Path,
) -> (FactsGatherer, std::sync::Arc<RecordingDevlink>) {
    let fake = std::sync::Arc::new(fake);
    let gatherer = FactsGatherer::new(routes, Box::new(Shared(fake.clone())));
    (gatherer, fake)
}

fn map<V: Clone>(pairs: &[(&str, V)]) -> BTreeMap<String, V> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

/// The default route keeps the node's uplink out of every pool: a route table that cannot be read
/// keeps the last one read instead of excluding nothing (which would pool the uplink).
#[test]
fn an_unreadable_route_table_keeps_the_last_default_routes() {
    let dir = tempfile::tempdir().unwrap();
    let routes = dir.path().join("route");
    std::fs::write(&routes, ROUTES).unwrap();
    let (gatherer, _) = gatherer(full_fake(), &routes);
    let inventory = Inventory::default();
    let before = gatherer.gather(&inventory).default_route_netdevs;
    assert!(!before.is_empty());
    std::fs::remove_file(&routes).unwrap();
    assert_eq!(gatherer.gather(&inventory).default_route_netdevs, before);
    // A table read again replaces it (here: no default route any more).
    std::fs::write(&routes, "Iface\tDestination\tGateway\n").unwrap();
    assert!(gatherer.gather(&inventory).default_route_netdevs.is_empty());

    // Also on a node whose devlink lists no instances (no devlink-capable NIC): that resets the
    // devlink facts, not the routes.
    std::fs::write(&routes, ROUTES).unwrap();
    let none = RecordingDevlink::default().answer(Query::Devices, r#"{"dev":{}}"#);
    let (gatherer, _) = self::gatherer(none, &routes);
    let before = gatherer.gather(&inventory).default_route_netdevs;
    assert!(!before.is_empty());
    std::fs::remove_file(&routes).unwrap();
    assert_eq!(gatherer.gather(&inventory).default_route_netdevs, before);
}

/// An interface whose name is not UTF-8 (the kernel allows any byte but `/`, `:`, whitespace and
/// NUL) used to make the whole table unreadable, so a default route on it, or on any other
/// interface, was not known.
#[test]
fn a_route_table_naming_a_non_utf8_interface_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let routes = dir.path().join("route");
    let mut table =
        b"Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
            .to_vec();
    table.extend_from_slice(b"eno\xff\t00000000\t0102A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n");
    std::fs::write(&routes, table).unwrap();
    let (gatherer, _) = gatherer(full_fake(), &routes);
    let routes = gatherer.gather(&Inventory::default()).default_route_netdevs;
    assert!(routes.contains("eno\u{fffd}"), "{routes:?}");
}

#[test]
fn gathers_routes_enable_rdma_and_ddp_with_bulk_queries_only() {
    let routes = routes_file();
    let (gatherer, fake) = gatherer(full_fake(), routes.path());
    let facts = gatherer.gather(&node());

    assert_eq!(
        facts.default_route_netdevs.iter().collect::<Vec<_>>(),
        ["eno1"]
    );
    // Only inventory devices, keyed by device id (PCI address or aux name), both values kept.
    assert_eq!(
        facts.rdma_enabled,
        map(&[
            ("0000:5e:00.0", true),
            ("0000:5e:00.2", true),
            ("mlx5_core.sf.4", false),
        ])
    );
    // The PF's package, also for each of its VFs; mlx5 reports no package.
    assert_eq!(
        facts.ddp_profiles,
        map(&[
            ("0000:3b:00.0", "ICE COMMS Package".to_string()),
            ("0000:3b:01.0", "ICE COMMS Package".to_string()),
            ("0000:3b:01.1", "ICE COMMS Package".to_string()),
        ])
    );
    // Two bulk dumps, then `dev info` only for bound ice PFs that have a devlink instance: not
    // the mlx5 PF (no DDP), not the VFs, not the virtio NIC, not the accelerator, not the unbound
    // PF.
    assert_eq!(
        fake.calls(),
        [
            Query::Devices,
            Query::AllParams,
            Query::Info("pci/0000:3b:00.0".into()),
        ]
    );
    assert!(gatherer.logged().is_empty(), "{:?}", gatherer.logged());
}

#[test]
fn a_simulated_node_gets_no_facts_and_no_devlink_queries() {
    let dir = tempfile::tempdir().unwrap();
    let gatherer = FactsGatherer::for_sysfs_root(dir.path());
    assert_eq!(gatherer.gather(&node()), HostFacts::default());
    assert!(gatherer.source.is_none());
}

#[test]
fn a_missing_devlink_program_means_unknown_logged_once_and_no_further_queries() {
    let routes = routes_file();
    let fake = RecordingDevlink::default().fail(Query::Devices, || DevlinkError::NotInstalled {
        program: "devlink".into(),
        source: std::io::Error::from(std::io::ErrorKind::NotFound),
    });
    let (gatherer, fake) = gatherer(fake, routes.path());
    for _ in 0..3 {
        let facts = gatherer.gather(&node());
        assert!(facts.rdma_enabled.is_empty());
        assert!(facts.ddp_profiles.is_empty());
        // The other facts still arrive.
        assert!(facts.default_route_netdevs.contains("eno1"));
    }
    assert_eq!(fake.calls(), vec![Query::Devices; 3]);
    assert_eq!(gatherer.logged(), ["devlink:not-installed"]);
}

#[test]
fn malformed_param_json_loses_only_enable_rdma() {
    let routes = routes_file();
    let fake = full_fake().answer(
        Query::AllParams,
        r#"{"param":{"pci/0000:5e:00.2":[{"name":"#,
    );
    let (gatherer, _) = gatherer(fake, routes.path());
    let facts = gatherer.gather(&node());
    assert!(facts.rdma_enabled.is_empty());
    assert_eq!(facts.ddp_profiles.len(), 3);
    assert_eq!(gatherer.logged(), ["dev param show:invalid-json"]);
}

#[test]
fn one_bad_param_entry_makes_only_that_device_unknown() {
    let routes = routes_file();
    let fake = full_fake().answer(
        Query::AllParams,
        r#"{"param":{
        "pci/0000:5e:00.0":{"oops":1},
        "pci/0000:5e:00.2":[{"name":"enable_rdma","values":[{"cmode":"driverinit","value":"yes"}]}],
        "auxiliary/mlx5_core.sf.4":[{"name":"enable_rdma","values":[{"cmode":"driverinit","value":"true"}]}]}}"#,
    );
    let (gatherer, _) = gatherer(fake, routes.path());
    let facts = gatherer.gather(&node());
    assert_eq!(facts.rdma_enabled, map(&[("mlx5_core.sf.4", true)]));
    assert_eq!(gatherer.logged().len(), 2, "{:?}", gatherer.logged());
}

#[test]
fn a_timeout_stops_the_round_of_info_queries() {
    let routes = routes_file();
    let fake = full_fake().fail(Query::Info("pci/0000:3b:00.0".into()), || {
        DevlinkError::Timeout {
            args: "dev info pci/0000:3b:00.0".into(),
            timeout: Duration::from_secs(5),
        }
    });
    let (gatherer, fake) = gatherer(fake, routes.path());
    let facts = gatherer.gather(&node());
    assert!(facts.ddp_profiles.is_empty());
    // enable_rdma came from the earlier dump and is kept.
    assert_eq!(facts.rdma_enabled.len(), 3);
    assert_eq!(
        fake.calls().last(),
        Some(&Query::Info("pci/0000:3b:00.0".into())),
        "the next PF is not asked after a timeout"
    );
    assert_eq!(gatherer.logged(), ["dev info pci/0000:3b:00.0:timeout"]);
}

/// [`node`] with a second ice PF (with a devlink instance) and a VF of it.
fn two_ice_node() -> (Inventory, &'static str) {
    let mut inventory = node();
    inventory
        .devices
        .push(device("0000:d8:00.0", DeviceKind::Pf, "020000", "ice"));
    inventory
        .devices
        .push(vf("0000:d8:01.0", "0000:d8:00.0", "iavf"));
    let devices = r#"{"dev":{"pci/0000:3b:00.0":{},"pci/0000:5e:00.0":{},"pci/0000:5e:00.2":{},
"pci/0000:86:00.0":{},"pci/0000:af:00.0":{},"pci/0000:d8:00.0":{},"auxiliary/mlx5_core.sf.4":{}}}"#;
    (inventory, devices)
}

const ICE2_INFO: &str = r#"{"info":{"pci/0000:d8:00.0":{"driver":"ice",
"versions":{"running":{"fw.app.name":"ICE OS Default Package"}}}}}"#;

#[test]
fn an_unsupported_device_is_unknown_and_the_others_still_answer() {
    let routes = routes_file();
    let (inventory, devices) = two_ice_node();
    // No scripted answer for the first ice PF: the fake fails like devlink on a device without
    // info.
    let fake = RecordingDevlink::default()
        .answer(Query::Devices, devices)
        .answer(Query::AllParams, PARAMS)
        .answer(Query::Info("pci/0000:d8:00.0".into()), ICE2_INFO);
    let (gatherer, fake) = gatherer(fake, routes.path());
    let facts = gatherer.gather(&inventory);
    assert_eq!(
        facts.ddp_profiles,
        map(&[
            ("0000:d8:00.0", "ICE OS Default Package".to_string()),
            ("0000:d8:01.0", "ICE OS Default Package".to_string()),
        ])
    );
    assert_eq!(fake.calls().len(), 4, "the second ice PF is still asked");
    assert_eq!(gatherer.logged(), ["dev info pci/0000:3b:00.0:failed"]);
}

#[test]
fn a_timeout_of_the_param_dump_skips_the_rest_of_the_round() {
    let routes = routes_file();
    let fake = full_fake().fail(Query::AllParams, || DevlinkError::Timeout {
        args: "dev param show".into(),
        timeout: Duration::from_secs(5),
    });
    let (gatherer, fake) = gatherer(fake, routes.path());
    let facts = gatherer.gather(&node());
    assert!(facts.rdma_enabled.is_empty() && facts.ddp_profiles.is_empty());
    assert_eq!(fake.calls(), [Query::Devices, Query::AllParams]);
    assert_eq!(gatherer.logged(), ["dev param show:timeout"]);
}

/// A query that fails after good answers keeps the last good facts instead of emptying them (which
/// would make pools built on `isRdma` or `ddpProfiles` flap).
#[test]
fn a_failed_query_keeps_the_last_good_facts() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let routes = routes_file();
    // Round 1 answers everything; round 2 fails the dumps' and the ice PF's answers; round 3
    // times out at once.
    let round = Arc::new(AtomicUsize::new(1));
    let answer = |json: &'static str, fails_in: &'static [usize]| {
        let round = Arc::clone(&round);
        move || {
            let now = round.load(Ordering::Relaxed);
            if now == 3 {
                return Err(DevlinkError::Timeout {
                    args: "dev".into(),
                    timeout: Duration::from_secs(5),
                });
            }
            if fails_in.contains(&now) {
                return Err(DevlinkError::Failed {
                    args: "dev".into(),
                    status: std::os::unix::process::ExitStatusExt::from_raw(1 << 8),
                    stderr: "devlink answers: Resource temporarily unavailable".into(),
                });
            }
            Ok(json.as_bytes().to_vec())
        }
    };
    let fake = RecordingDevlink::default()
        .script(Query::Devices, answer(DEVICES, &[]))
        .script(Query::AllParams, answer(PARAMS, &[2]))
        .script(
            Query::Info("pci/0000:3b:00.0".into()),
            answer(ICE_INFO, &[2]),
        );
    let (gatherer, fake) = gatherer(fake, routes.path());
    let first = gatherer.gather(&node());
    assert_eq!(first.rdma_enabled.len(), 3);
    assert_eq!(first.ddp_profiles.len(), 3);

    round.store(2, Ordering::Relaxed);
    assert_eq!(
        gatherer.gather(&node()),
        first,
        "failed queries keep the facts"
    );
    round.store(3, Ordering::Relaxed);
    let calls = fake.calls().len();
    assert_eq!(gatherer.gather(&node()), first, "a timeout keeps the facts");
    assert_eq!(
        fake.calls().len(),
        calls + 1,
        "nothing is asked after a timeout"
    );

    // The kept facts follow the inventory: a VF that went away is not reported.
    let mut smaller = node();
    smaller.devices.retain(|d| d.id != "0000:3b:01.1");
    let facts = gatherer.gather(&smaller);
    assert!(!facts.ddp_profiles.contains_key("0000:3b:01.1"));
    assert_eq!(facts.ddp_profiles.len(), 2);

    // devlink answers again.
    round.store(1, Ordering::Relaxed);
    assert_eq!(gatherer.gather(&node()), first);
}

#[test]
fn unavailable_devlink_is_one_warning_per_process_where_devices_need_it() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let routes = routes_file();
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    // Not installed, then no kernel support: one warning for both.
    let fake = RecordingDevlink::default().script(Query::Devices, move || {
        if counted.fetch_add(1, Ordering::Relaxed) == 0 {
            Err(DevlinkError::NotInstalled {
                program: "devlink".into(),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            })
        } else {
            Err(DevlinkError::NoKernelSupport {
                args: "dev show".into(),
                stderr: "Failed to connect to devlink Netlink".into(),
            })
        }
    });
    let (needing, _) = gatherer(fake, routes.path());
    let logs = crate::test_logs::logs_of(|| {
        for _ in 0..4 {
            needing.gather(&node());
        }
    });
    let warnings: Vec<&str> = logs.lines().filter(|l| l.contains("WARN")).collect();
    assert_eq!(warnings.len(), 1, "{logs}");
    assert!(warnings[0].contains("devlink is unavailable"), "{logs}");

    // A node without devices that have devlink facts gets no warning.
    let fake = RecordingDevlink::default().fail(Query::Devices, || DevlinkError::NotInstalled {
        program: "devlink".into(),
        source: std::io::Error::from(std::io::ErrorKind::NotFound),
    });
    let (gatherer, _) = gatherer(fake, routes.path());
    let mut plain = node();
    plain
        .devices
        .retain(|d| !DEVLINK_FACT_DRIVERS.contains(&d.driver.as_deref().unwrap_or("")));
    let logs = crate::test_logs::logs_of(|| {
        gatherer.gather(&plain);
        gatherer.gather(&plain);
    });
    assert!(!logs.contains("WARN"), "{logs}");
    assert_eq!(logs.lines().count(), 1, "{logs}");
}

#[test]
fn no_devlink_devices_means_no_further_queries() {
    let routes = routes_file();
    let fake = RecordingDevlink::default().answer(Query::Devices, r#"{"dev":{}}"#);
    let (gatherer, fake) = gatherer(fake, routes.path());
    let facts = gatherer.gather(&node());
    assert!(facts.rdma_enabled.is_empty() && facts.ddp_profiles.is_empty());
    assert_eq!(fake.calls(), [Query::Devices]);
}

#[test]
fn an_unreadable_route_table_is_logged_once_and_devlink_still_asked() {
    let dir = tempfile::tempdir().unwrap();
    let (gatherer, _) = gatherer(full_fake(), &dir.path().join("missing"));
    let facts = gatherer.gather(&node());
    let facts_again = gatherer.gather(&node());
    assert!(facts.default_route_netdevs.is_empty());
    assert_eq!(facts.ddp_profiles.len(), 3);
    assert_eq!(facts, facts_again);
    assert_eq!(gatherer.logged(), ["routes:entity not found"]);
}

// ---- parsers against hostile input ----

fn shape_error(result: Result<impl std::fmt::Debug, DevlinkError>) -> String {
    match result {
        Err(e @ DevlinkError::UnexpectedShape { .. }) => e.to_string(),
        other => panic!("expected a shape error, got {other:?}"),
    }
}

#[test]
fn devices_parser_refuses_wrong_shapes_with_clear_errors() {
    assert_eq!(
        parse_devices(br#"{"dev":{"pci/0000:3b:00.0":{}}}"#).unwrap(),
        ["pci/0000:3b:00.0"]
    );
    assert!(parse_devices(br#"{"dev":{}}"#).unwrap().is_empty());
    assert!(shape_error(parse_devices(b"[]")).contains("top level is not an object"));
    assert!(shape_error(parse_devices(br#"{"dev":[]}"#)).contains("\"dev\" is an array"));
    assert!(shape_error(parse_devices(br#"{"port":{}}"#)).contains("no \"dev\" key"));
    for garbage in [
        &b""[..],
        b"not json",
        b"{\"dev\":",
        b"\xff\xfe",
        b"{\"dev\":{}} trailing",
    ] {
        match parse_devices(garbage) {
            Err(e @ DevlinkError::InvalidJson { .. }) => {
                assert!(e.to_string().contains("dev show"), "{e}")
            }
            other => panic!("{garbage:?}: {other:?}"),
        }
    }
}

#[test]
fn absurd_nesting_is_an_error_not_a_stack_overflow() {
    let deep = format!(
        r#"{{"param":{{"pci/x":{}{}}}}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    assert!(matches!(
        parse_enable_rdma(deep.as_bytes()),
        Err(DevlinkError::InvalidJson { .. })
    ));
}

#[test]
fn param_parser_reads_the_first_value_and_skips_bad_entries() {
    let scan = parse_enable_rdma(PARAMS.as_bytes()).unwrap();
    assert_eq!(scan.enable_rdma.len(), 4);
    assert_eq!(scan.enable_rdma.get("pci/0000:3b:00.0"), None);
    assert!(scan.skipped.is_empty());

    let scan = parse_enable_rdma(
        br#"{"param":{
        "pci/a":[{"name":"enable_rdma","values":[{"cmode":"runtime","value":false},{"cmode":"driverinit","value":true}]}],
        "pci/b":"text",
        "pci/c":[{"name":"enable_rdma","values":[]}],
        "pci/d":[{"name":"enable_rdma","values":[{"value":7}]}],
        "pci/e":[{"name":"enable_rdma"}],
        "pci/f":[1, null, {"name":5}, {"name":"enable_rdma","values":[{"value":true}]}]}}"#,
    )
    .unwrap();
    assert_eq!(scan.enable_rdma, map(&[("pci/a", false), ("pci/f", true)]));
    assert_eq!(scan.skipped.len(), 4, "{:?}", scan.skipped);
    assert!(
        scan.skipped
            .iter()
            .any(|s| s.contains("pci/d") && s.contains("a number"))
    );
    assert!(shape_error(parse_enable_rdma(br#"{"param":null}"#)).contains("null"));
}

#[test]
fn info_parser_finds_the_package_or_nothing() {
    let ice = "pci/0000:3b:00.0";
    assert_eq!(
        parse_ddp_name(ICE_INFO.as_bytes(), ice).unwrap().as_deref(),
        Some("ICE COMMS Package")
    );
    assert_eq!(
        parse_ddp_name(MLX_INFO.as_bytes(), "pci/0000:5e:00.0").unwrap(),
        None
    );
    let no_versions = format!(r#"{{"info":{{"{ice}":{{"driver":"ice"}}}}}}"#);
    assert_eq!(parse_ddp_name(no_versions.as_bytes(), ice).unwrap(), None);
    let empty =
        format!(r#"{{"info":{{"{ice}":{{"versions":{{"running":{{"fw.app.name":"  "}}}}}}}}}}"#);
    assert_eq!(parse_ddp_name(empty.as_bytes(), ice).unwrap(), None);

    let number =
        format!(r#"{{"info":{{"{ice}":{{"versions":{{"running":{{"fw.app.name":3}}}}}}}}}}"#);
    assert!(shape_error(parse_ddp_name(number.as_bytes(), ice)).contains("not a string"));
    let running = format!(r#"{{"info":{{"{ice}":{{"versions":{{"running":[]}}}}}}}}"#);
    assert!(shape_error(parse_ddp_name(running.as_bytes(), ice)).contains("running is an array"));
    assert!(
        shape_error(parse_ddp_name(ICE_INFO.as_bytes(), "pci/0000:3b:00.1"))
            .contains("no info for")
    );
    let device = format!(r#"{{"info":{{"{ice}":"ice"}}}}"#);
    assert!(shape_error(parse_ddp_name(device.as_bytes(), ice)).contains("a string"));
}

// ---- the real runner, with stand-in programs ----

fn script(dir: &Path, name: &str, body: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[test]
fn cli_passes_json_flag_and_arguments_and_returns_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let echo = script(dir.path(), "devlink", r#"printf '{"args":"%s"}' "$*""#);
    let cli = DevlinkCli::new().with_program(&echo);
    let out = cli.query(&Query::Info("pci/0000:3b:00.0".into())).unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        r#"{"args":"-j dev info pci/0000:3b:00.0"}"#
    );
}

#[test]
fn cli_missing_program_is_not_installed() {
    let dir = tempfile::tempdir().unwrap();
    let cli = DevlinkCli::new().with_program(dir.path().join("no-such-devlink"));
    let err = cli.query(&Query::Devices).unwrap_err();
    assert!(matches!(err, DevlinkError::NotInstalled { .. }), "{err:?}");
    assert!(err.is_unavailable());
}

/// While a killed devlink has not exited (blocked in the kernel; SIGKILL cannot end that), no
/// other starts: each would hang in the same place. A process stuck in the kernel cannot be made
/// in a test, so the record the killer leaves is set directly.
#[test]
fn cli_runs_nothing_while_a_killed_devlink_is_stuck() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");
    let program = script(
        dir.path(),
        "devlink",
        &format!("touch {}; echo '{{}}'", marker.display()),
    );
    let cli = DevlinkCli::new().with_program(&program);
    cli.mark_stuck_for_test(4242);
    let err = cli.clone().query(&Query::Devices).unwrap_err();
    assert!(
        matches!(err, DevlinkError::Stuck { pid: 4242, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("stuck in a driver"), "{err}");
    assert!(!marker.exists(), "a devlink was started");
}

#[test]
fn cli_kills_a_hung_program_at_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let hang = script(dir.path(), "devlink", "exec sleep 30");
    let cli = DevlinkCli::new()
        .with_program(&hang)
        .with_timeout(Duration::from_millis(300));
    let started = Instant::now();
    let err = cli.query(&Query::AllParams).unwrap_err();
    assert!(matches!(err, DevlinkError::Timeout { .. }), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // The killed process exited, so the next query runs (it is not taken for a stuck one).
    let err = cli.query(&Query::AllParams).unwrap_err();
    assert!(matches!(err, DevlinkError::Timeout { .. }), "{err:?}");
}

#[test]
fn cli_kills_a_program_that_prints_without_end() {
    let dir = tempfile::tempdir().unwrap();
    let flood = script(dir.path(), "devlink", "exec yes '{\"param\":{}}'");
    let cli = DevlinkCli::new()
        .with_program(&flood)
        .with_output_limit(64 << 10);
    let started = Instant::now();
    let err = cli.query(&Query::AllParams).unwrap_err();
    assert!(
        matches!(err, DevlinkError::OutputTooLarge { limit, .. } if limit == 64 << 10),
        "{err:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn cli_tells_a_kernel_without_devlink_from_an_ordinary_failure() {
    let dir = tempfile::tempdir().unwrap();
    let no_family = script(
        dir.path(),
        "no-family",
        "echo 'Failed to connect to devlink Netlink' >&2; exit 1",
    );
    let err = DevlinkCli::new()
        .with_program(&no_family)
        .query(&Query::Devices)
        .unwrap_err();
    assert!(
        matches!(err, DevlinkError::NoKernelSupport { .. }),
        "{err:?}"
    );
    assert!(err.is_unavailable());

    let no_device = script(
        dir.path(),
        "no-device",
        "echo 'devlink answers: No such device' >&2; exit 1",
    );
    let err = DevlinkCli::new()
        .with_program(&no_device)
        .query(&Query::Info("pci/0000:00:03.0".into()))
        .unwrap_err();
    match &err {
        DevlinkError::Failed { stderr, status, .. } => {
            assert_eq!(stderr, "devlink answers: No such device");
            assert_eq!(status.code(), Some(1));
        }
        other => panic!("{other:?}"),
    }
    assert!(!err.is_unavailable());
}

// ---- the machine's own devlink ----

/// Asks the kernel's generic netlink controller whether the `devlink` family exists
/// (`CTRL_CMD_GETFAMILY`), independently of iproute2.
fn kernel_has_devlink_family() -> bool {
    use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_GENERIC};
    const GENL_ID_CTRL: u16 = 0x10;
    const CTRL_CMD_GETFAMILY: u8 = 3;
    const CTRL_ATTR_FAMILY_NAME: u16 = 2;
    const NLM_F_REQUEST: u16 = 1;
    const NLM_F_ACK: u16 = 4;
    const NLMSG_ERROR: u16 = 2;

    let name = b"devlink\0";
    let attr_len = 4 + name.len(); // 12, already 4-aligned
    let total = 16 + 4 + attr_len;
    let mut msg = Vec::with_capacity(total);
    msg.extend_from_slice(&(total as u32).to_ne_bytes());
    msg.extend_from_slice(&GENL_ID_CTRL.to_ne_bytes());
    msg.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes()); // sequence
    msg.extend_from_slice(&0u32.to_ne_bytes()); // port id
    msg.extend_from_slice(&[CTRL_CMD_GETFAMILY, 1, 0, 0]);
    msg.extend_from_slice(&(attr_len as u16).to_ne_bytes());
    msg.extend_from_slice(&CTRL_ATTR_FAMILY_NAME.to_ne_bytes());
    msg.extend_from_slice(name);

    let mut socket = Socket::new(NETLINK_GENERIC).unwrap();
    socket.bind_auto().unwrap();
    socket.send_to(&msg, &SocketAddr::new(0, 0), 0).unwrap();
    let (reply, _) = socket.recv_from_full().unwrap();
    let kind = u16::from_ne_bytes([reply[4], reply[5]]);
    if kind == NLMSG_ERROR {
        let errno = i32::from_ne_bytes([reply[16], reply[17], reply[18], reply[19]]);
        // 0 would be the ACK after a successful reply; the reply itself comes first.
        assert_eq!(errno, -2, "unexpected genetlink error {errno}");
        return false;
    }
    assert_eq!(kind, GENL_ID_CTRL, "unexpected reply type {kind}");
    true
}

/// The real `devlink -j dev` on this machine. A machine with devlink must print JSON the parser
/// accepts (no devices is `{"dev":{}}`); a kernel without the devlink family must be classified as
/// such, which the test checks against the kernel directly. A missing program fails the test: the
/// image is expected to ship iproute2.
#[test]
fn real_devlink_on_this_machine_parses_or_is_classified() {
    let kernel_has_devlink = kernel_has_devlink_family();
    match DevlinkCli::new().query(&Query::Devices) {
        Ok(out) => {
            assert!(
                kernel_has_devlink,
                "devlink answered without a kernel family?"
            );
            let handles = parse_devices(&out)
                .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out)));
            // With devices, the bulk parameter dump must parse too.
            if !handles.is_empty() {
                let params = DevlinkCli::new().query(&Query::AllParams).unwrap();
                parse_enable_rdma(&params).unwrap();
            }
        }
        Err(DevlinkError::NoKernelSupport { stderr, .. }) => {
            assert!(
                !kernel_has_devlink,
                "devlink said no kernel support: {stderr}"
            );
            // And the gatherer turns that into "unknown" rather than an error.
            let inventory = vfpool_sysfs::discover(&vfpool_sysfs::SysfsRoot::new("/sys")).unwrap();
            let gatherer = FactsGatherer::for_sysfs_root(Path::new("/sys"));
            let facts = gatherer.gather(&inventory);
            assert!(facts.rdma_enabled.is_empty() && facts.ddp_profiles.is_empty());
            assert_eq!(gatherer.logged(), ["devlink:no-kernel-support"]);
        }
        Err(other) => panic!("the machine's devlink: {other:?}"),
    }
}
