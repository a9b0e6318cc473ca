//! Shared test helpers: a test node inventory, engines, components.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use vfpool_policy::{
    HostFacts, Limits, Policy, PolicyEngine, PolicyInventory, Pool, Settings, defaults,
};
use vfpool_sysfs::{Device, DeviceKind, Inventory, Netdev, VdpaDevice};

/// An engine with short deadlines and a small memory cap, shared by the tests of one binary.
pub fn engine() -> &'static PolicyEngine {
    static ENGINE: OnceLock<PolicyEngine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        PolicyEngine::new(Limits {
            select_deadline: Duration::from_millis(500),
            prefer_deadline: Duration::from_millis(300),
            memory_bytes: 32 << 20,
            ..Limits::default()
        })
        .expect("engine")
    })
}

pub fn component_path(name: &str) -> PathBuf {
    PathBuf::from(defaults::BUILT_COMPONENTS_DIR).join(format!("{name}.wasm"))
}

pub fn component(name: &str) -> Vec<u8> {
    std::fs::read(component_path(name)).expect("built component")
}

pub fn selector() -> &'static Policy {
    static SELECTOR: OnceLock<Policy> = OnceLock::new();
    SELECTOR.get_or_init(|| {
        Policy::compile(engine(), "upstream-selector", defaults::UPSTREAM_SELECTOR)
            .expect("default selector compiles")
    })
}

pub fn settings(config: &str) -> Settings {
    Settings {
        config: config.to_string(),
        default_resource_prefix: "intel.com".to_string(),
    }
}

fn netdev(name: &str, link: &str) -> Netdev {
    Netdev {
        name: name.to_string(),
        link_type: Some(link.to_string()),
        operstate: Some("up".to_string()),
        carrier: Some(true),
        mac: None,
        mtu: Some(1500),
        phys_port_name: None,
        phys_switch_id: None,
        bond: None,
    }
}

fn pci(id: &str, kind: DeviceKind, vendor: &str, device: &str, class: &str) -> Device {
    let mut d = Device::unknown(id, kind);
    d.vendor = Some(vendor.to_string());
    d.device = Some(device.to_string());
    d.class = Some(class.to_string());
    d.numa_node = Some(0);
    d
}

fn vf(id: &str, pf: &str, pf_name: Option<&str>, index: u32, vendor: &str, device: &str) -> Device {
    let mut d = pci(id, DeviceKind::Vf, vendor, device, "020000");
    d.pf_id = Some(pf.to_string());
    d.pf_name = pf_name.map(str::to_string);
    d.vf_index = Some(index);
    d.link_type = Some("ether".to_string());
    d
}

/// A test node covering every selector key (ids sorted, as discovery sorts them):
///
/// | id | what |
/// |---|---|
/// | 0000:01:00.0 | X710 PF ens1f0, i40e, 2 VFs enabled, acpi 101 |
/// | 0000:01:00.1 | X710 PF ens1f1, i40e, SR-IOV capable, no VFs, acpi 102 |
/// | 0000:01:02.0 | X710 VF 0 of ens1f0, iavf, netdev ens1f0v0, DDP profile |
/// | 0000:01:02.1 | X710 VF 1 of ens1f0, vfio-pci, no netdev |
/// | 0000:01:02.2 | X710 VF 2 of ens1f0, unbound |
/// | 0000:04:00.0 | Broadcom PF eno1, tg3, carries the default route |
/// | 0000:3b:00.0 | CX-5 PF ens2f0 (15b3:1017), mlx5_core, InfiniBand, 3 VFs enabled |
/// | 0000:3b:00.2..4 | CX-5 VFs 0..2 (15b3:1018), RDMA, InfiniBand, pkeys 0x1, 0x2, 0x3 |
/// | 0000:5e:00.0 | CX-6 Dx PF ens3f0 (15b3:101d), 3 VFs enabled |
/// | 0000:5e:00.2 | VF 0, vDPA vhost_vdpa |
/// | 0000:5e:00.3 | VF 1, vDPA virtio_vdpa |
/// | 0000:5e:00.4 | VF 2, PF name unknown |
/// | 0000:90:00.0 | unparsable class |
/// | 0000:af:00.0 | QAT accelerator PF (8086:0d5c), 1 VF enabled |
/// | 0000:af:00.1 | QAT VF (8086:0d5d), vfio-pci |
/// | mlx5_core.sf.2/3/4 | sub-functions of 0000:3b:00.0, sfnum 1, 5, 2 |
pub fn test_node() -> Inventory {
    let mut devices = Vec::new();

    let mut p = pci("0000:01:00.0", DeviceKind::Pf, "8086", "1572", "020000");
    p.driver = Some("i40e".into());
    p.acpi_index = Some(101);
    p.sriov_total_vfs = Some(8);
    p.sriov_num_vfs = Some(2);
    p.netdevs = vec![netdev("ens1f0", "ether")];
    p.netdev = Some("ens1f0".into());
    p.link_type = Some("ether".into());
    devices.push(p);

    let mut p = pci("0000:01:00.1", DeviceKind::Pf, "8086", "1572", "020000");
    p.driver = Some("i40e".into());
    p.acpi_index = Some(102);
    p.sriov_total_vfs = Some(8);
    p.sriov_num_vfs = Some(0);
    p.netdevs = vec![netdev("ens1f1", "ether")];
    p.netdev = Some("ens1f1".into());
    p.link_type = Some("ether".into());
    devices.push(p);

    let mut v = vf(
        "0000:01:02.0",
        "0000:01:00.0",
        Some("ens1f0"),
        0,
        "8086",
        "154c",
    );
    v.driver = Some("iavf".into());
    v.netdevs = vec![netdev("ens1f0v0", "ether")];
    v.netdev = Some("ens1f0v0".into());
    devices.push(v);
    let mut v = vf(
        "0000:01:02.1",
        "0000:01:00.0",
        Some("ens1f0"),
        1,
        "8086",
        "154c",
    );
    v.driver = Some("vfio-pci".into());
    v.iommu_group = Some(57);
    devices.push(v);
    let v = vf(
        "0000:01:02.2",
        "0000:01:00.0",
        Some("ens1f0"),
        2,
        "8086",
        "154c",
    );
    devices.push(v);

    let mut p = pci("0000:04:00.0", DeviceKind::Pf, "14e4", "165f", "020000");
    p.driver = Some("tg3".into());
    p.netdevs = vec![netdev("eno1", "ether")];
    p.netdev = Some("eno1".into());
    p.link_type = Some("ether".into());
    devices.push(p);

    let mut p = pci("0000:3b:00.0", DeviceKind::Pf, "15b3", "1017", "020000");
    p.driver = Some("mlx5_core".into());
    p.sriov_total_vfs = Some(16);
    p.sriov_num_vfs = Some(3);
    p.netdevs = vec![netdev("ens2f0", "infiniband")];
    p.netdev = Some("ens2f0".into());
    p.link_type = Some("infiniband".into());
    p.rdma_devices = vec!["mlx5_0".into()];
    p.aux_devices = vec![
        "mlx5_core.sf.2".into(),
        "mlx5_core.sf.3".into(),
        "mlx5_core.sf.4".into(),
    ];
    devices.push(p);
    for (i, pkey) in ["0x1", "0x2", "0x3"].iter().enumerate() {
        let id = format!("0000:3b:00.{}", i + 2);
        let mut v = vf(
            &id,
            "0000:3b:00.0",
            Some("ens2f0"),
            i as u32,
            "15b3",
            "1018",
        );
        v.driver = Some("mlx5_core".into());
        v.link_type = Some("infiniband".into());
        v.pkey = Some((*pkey).into());
        v.rdma_devices = vec![format!("mlx5_{}", i + 2)];
        v.numa_node = Some(1);
        devices.push(v);
    }

    let mut p = pci("0000:5e:00.0", DeviceKind::Pf, "15b3", "101d", "020000");
    p.driver = Some("mlx5_core".into());
    p.sriov_total_vfs = Some(8);
    p.sriov_num_vfs = Some(3);
    p.netdevs = vec![netdev("ens3f0", "ether")];
    p.netdev = Some("ens3f0".into());
    p.link_type = Some("ether".into());
    devices.push(p);
    for (i, driver) in [Some("vhost_vdpa"), Some("virtio_vdpa"), None]
        .iter()
        .enumerate()
    {
        let id = format!("0000:5e:00.{}", i + 2);
        let pf_name = if i == 2 { None } else { Some("ens3f0") };
        let mut v = vf(&id, "0000:5e:00.0", pf_name, i as u32, "15b3", "101e");
        v.driver = Some("mlx5_core".into());
        if let Some(driver) = driver {
            v.vdpa_devices = vec![VdpaDevice {
                name: format!("vdpa{i}"),
                driver: Some((*driver).into()),
                vhost_device: None,
            }];
        }
        devices.push(v);
    }

    let mut junk = pci("0000:90:00.0", DeviceKind::Pf, "1234", "5678", "zzzzzz");
    junk.driver = Some("junk".into());
    devices.push(junk);

    let mut qat = pci("0000:af:00.0", DeviceKind::Pf, "8086", "0d5c", "120000");
    qat.driver = Some("qat_4xxx".into());
    qat.sriov_total_vfs = Some(16);
    qat.sriov_num_vfs = Some(1);
    devices.push(qat);
    let mut qat_vf = pci("0000:af:00.1", DeviceKind::Vf, "8086", "0d5d", "120000");
    qat_vf.driver = Some("vfio-pci".into());
    qat_vf.pf_id = Some("0000:af:00.0".into());
    qat_vf.vf_index = Some(0);
    devices.push(qat_vf);

    for (name, sfnum) in [
        ("mlx5_core.sf.2", 1),
        ("mlx5_core.sf.3", 5),
        ("mlx5_core.sf.4", 2),
    ] {
        let mut sf = pci(name, DeviceKind::Aux, "15b3", "1017", "020000");
        sf.driver = Some("mlx5_core".into());
        sf.pf_id = Some("0000:3b:00.0".into());
        sf.pf_name = Some("ens2f0".into());
        sf.aux_type = Some("sf".into());
        sf.sf_num = Some(sfnum);
        sf.link_type = Some("ether".into());
        devices.push(sf);
    }
    devices.sort_by(|a, b| a.id.cmp(&b.id));
    Inventory {
        devices,
        node: Default::default(),
    }
}

/// The test node with `eno1` carrying the default route.
pub fn test_inventory() -> PolicyInventory {
    let mut facts = HostFacts::default();
    facts.default_route_netdevs.insert("eno1".into());
    facts
        .ddp_profiles
        .insert("0000:01:02.0".into(), "GTPv1-C/U IPv4/IPv6 payload".into());
    PolicyInventory::new(&test_node(), &facts)
}

/// Pool names and member ids, for compact assertions.
pub fn summary(pools: &[Pool]) -> Vec<(String, Vec<String>)> {
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

/// Runs the default selector with `config` over the test node.
pub fn select(config: &str) -> Vec<Pool> {
    selector()
        .select(&settings(config), &test_inventory())
        .unwrap_or_else(|e| panic!("select failed: {e}"))
        .value
}

/// Runs the default selector and returns only the members of the single pool.
pub fn members(config: &str) -> Vec<String> {
    let pools = select(config);
    assert_eq!(pools.len(), 1, "{config}");
    pools[0].devices.iter().map(|d| d.id.clone()).collect()
}

/// A one-resource netDevice config with the given selector object.
pub fn net(selector: &str) -> String {
    format!(r#"{{"resourceList":[{{"resourceName":"r","selectors":{selector}}}]}}"#)
}
