//! Discovery on every shipped fixture: each attribute the issue names, read back from a simulated
//! sysfs tree written by the simulator.

// Test helpers unwrap: a failure there is a failed test with a backtrace.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use tempfile::TempDir;
use vfpool_sysfs::sim::{Fixture, write_tree};
use vfpool_sysfs::{Device, DeviceKind, Inventory, SysfsRoot, discover};

fn node(fixture: &str) -> (TempDir, Inventory) {
    discovered(&Fixture::load(fixture).unwrap())
}

/// A node described inline, as TOML.
fn node_from_toml(text: &str) -> (TempDir, Inventory) {
    discovered(&Fixture::from_toml(text, "inline").unwrap())
}

fn discovered(fixture: &Fixture) -> (TempDir, Inventory) {
    let dir = tempfile::tempdir().unwrap();
    write_tree(fixture, dir.path()).unwrap();
    let inventory = discover(&SysfsRoot::new(dir.path())).unwrap();
    (dir, inventory)
}

fn get<'a>(inventory: &'a Inventory, id: &str) -> &'a Device {
    inventory
        .get(id)
        .unwrap_or_else(|| panic!("{id} was not discovered"))
}

fn ids_of(inventory: &Inventory, kind: DeviceKind) -> Vec<&str> {
    inventory
        .devices
        .iter()
        .filter(|d| d.kind == kind)
        .map(|d| d.id.as_str())
        .collect()
}

#[test]
fn dell_cx5_has_two_pfs_with_twelve_vfs_each_on_numa_0() {
    let (_dir, inv) = node("dell-cx5");
    // 2 management ports + 2 ConnectX-5 ports are PFs; the NVMe drive and the root ports are not
    // network or accelerator functions.
    assert_eq!(
        ids_of(&inv, DeviceKind::Pf),
        [
            "0000:04:00.0",
            "0000:04:00.1",
            "0000:3b:00.0",
            "0000:3b:00.1"
        ]
    );
    assert_eq!(ids_of(&inv, DeviceKind::Vf).len(), 24);
    assert!(inv.get("0000:5e:00.0").is_none(), "NVMe must be ignored");
    let sorted: Vec<&str> = inv.devices.iter().map(|d| d.id.as_str()).collect();
    let mut expected = sorted.clone();
    expected.sort_unstable();
    assert_eq!(sorted, expected, "inventory must be sorted by id");

    let pf = get(&inv, "0000:3b:00.0");
    assert_eq!(pf.kind, DeviceKind::Pf);
    assert_eq!(pf.vendor.as_deref(), Some("15b3"));
    assert_eq!(pf.device.as_deref(), Some("1017"));
    assert_eq!(pf.subsystem_vendor.as_deref(), Some("15b3"));
    assert_eq!(pf.subsystem_device.as_deref(), Some("0007"));
    assert_eq!(pf.class.as_deref(), Some("020000"));
    assert_eq!(pf.driver.as_deref(), Some("mlx5_core"));
    assert_eq!(pf.numa_node, Some(0));
    assert_eq!(pf.sriov_total_vfs, Some(16));
    assert_eq!(pf.sriov_num_vfs, Some(12));
    assert!(pf.has_vfs_enabled());
    assert_eq!(pf.vfs.len(), 12);
    assert_eq!(
        (pf.vfs[0].index, pf.vfs[0].id.as_str()),
        (0, "0000:3b:00.2")
    );
    assert_eq!(
        (pf.vfs[11].index, pf.vfs[11].id.as_str()),
        (11, "0000:3b:01.5")
    );
    assert_eq!(pf.netdev.as_deref(), Some("ens1f0"));
    assert_eq!(pf.rdma_devices, ["mlx5_0"]);
    assert!(!pf.switchdev);
    assert_eq!(pf.pf_name, None);
    assert_eq!(pf.vf_index, None);

    let vf = get(&inv, "0000:3b:00.2");
    assert_eq!(vf.kind, DeviceKind::Vf);
    assert_eq!(vf.vendor.as_deref(), Some("15b3"));
    assert_eq!(vf.device.as_deref(), Some("1018"));
    assert_eq!(vf.driver.as_deref(), Some("mlx5_core"));
    assert_eq!(vf.numa_node, Some(0));
    assert_eq!(vf.pf_id.as_deref(), Some("0000:3b:00.0"));
    assert_eq!(vf.pf_name.as_deref(), Some("ens1f0"));
    assert_eq!(vf.vf_index, Some(0));
    assert_eq!(vf.netdev.as_deref(), Some("ens1f0v0"));
    assert_eq!(vf.link_type.as_deref(), Some("ether"));
    assert_eq!(vf.rdma_devices, ["mlx5_2"]);
    assert!(vf.iommu_group.is_some());
    assert!(!vf.no_iommu);
    assert_eq!(vf.sriov_total_vfs, None);
    let netdev = &vf.netdevs[0];
    assert_eq!(netdev.operstate.as_deref(), Some("up"));
    assert_eq!(netdev.carrier, Some(true));
    assert_eq!(netdev.mtu, Some(1500));
    let mac = netdev.mac.as_deref().unwrap();
    assert_eq!(mac.len(), 17, "{mac}");
    assert_eq!(mac, mac.to_ascii_lowercase());

    // The second port's VF 0 sits right after the first port's VFs.
    let vf = get(&inv, "0000:3b:01.6");
    assert_eq!(vf.pf_name.as_deref(), Some("ens1f1"));
    assert_eq!(vf.vf_index, Some(0));
    assert_eq!(vf.rdma_devices, ["mlx5_14"]);
    assert_eq!(get(&inv, "0000:3b:03.1").vf_index, Some(11));

    // Management ports: acpi index, and a down link with no carrier.
    let eno1 = get(&inv, "0000:04:00.0");
    assert_eq!(eno1.acpi_index, Some(1));
    assert_eq!(eno1.sriov_total_vfs, None);
    let eno2 = get(&inv, "0000:04:00.1");
    assert_eq!(eno2.netdevs[0].operstate.as_deref(), Some("down"));
    assert_eq!(eno2.netdevs[0].carrier, Some(false));

    // Every VF has its own IOMMU group.
    let mut groups: Vec<u32> = inv.devices.iter().filter_map(|d| d.iommu_group).collect();
    let count = groups.len();
    groups.sort_unstable();
    groups.dedup();
    assert_eq!(groups.len(), count);
    assert!(inv.node.vhost_net && inv.node.tun && inv.node.rdma_cm);
}

/// A sub-function's own driver is read apart from its parent's (which selectors match on): an
/// unbound SF has no netdev and is unusable, and health must be able to tell.
#[test]
fn a_sub_functions_own_driver_is_read() {
    let (_dir, inv) = node_from_toml(
        r#"
[[function]]
address = "0000:03:00.0"
vendor = "15b3"
device = "101d"
class = "020000"
driver = "mlx5_core"
netdevs = ["p0"]

[[function.sfs]]
sfnum = 1

[[function.sfs]]
sfnum = 2
driver = "none"
"#,
    );
    let bound = get(&inv, "mlx5_core.sf.2");
    assert_eq!(bound.aux_driver.as_deref(), Some("mlx5_core.sf"));
    let unbound = get(&inv, "mlx5_core.sf.3");
    assert_eq!(unbound.aux_driver, None);
    assert_eq!(unbound.driver.as_deref(), Some("mlx5_core"));
}

#[test]
fn node_facts_follow_the_misc_devices() {
    let (_dir, inv) = node_from_toml("vhost_net = false\nrdma_cm = false\n");
    assert!(!inv.node.vhost_net && inv.node.tun && !inv.node.rdma_cm);
}

#[test]
fn intel_x710_has_kernel_dpdk_and_unbound_vfs_on_numa_1() {
    let (_dir, inv) = node("intel-x710");
    let iavf = get(&inv, "0000:86:02.0");
    assert_eq!(iavf.device.as_deref(), Some("154c"));
    assert_eq!(iavf.driver.as_deref(), Some("iavf"));
    assert_eq!(iavf.numa_node, Some(1));
    assert_eq!(iavf.netdev.as_deref(), Some("ens2f0v0"));

    // vfio-pci VFs have no netdev, but still know their PF and index, and inherit its link type.
    let vfio = get(&inv, "0000:86:02.4");
    assert_eq!(vfio.driver.as_deref(), Some("vfio-pci"));
    assert!(vfio.netdevs.is_empty());
    assert_eq!(vfio.netdev, None);
    assert_eq!(vfio.pf_name.as_deref(), Some("ens2f0"));
    assert_eq!(vfio.vf_index, Some(4));
    assert_eq!(vfio.link_type.as_deref(), Some("ether"));
    assert!(vfio.iommu_group.is_some());
    assert!(!vfio.no_iommu);
    assert_eq!(vfio.uio_device, None);

    // Port 2: VF 6 on igb_uio has a uio device, VF 7 is unbound.
    let uio = get(&inv, "0000:86:0a.6");
    assert_eq!(uio.driver.as_deref(), Some("igb_uio"));
    assert_eq!(uio.uio_device.as_deref(), Some("uio0"));
    assert_eq!(uio.vf_index, Some(6));
    let unbound = get(&inv, "0000:86:0a.7");
    assert_eq!(unbound.driver, None);
    assert_eq!(unbound.vf_index, Some(7));
    assert_eq!(unbound.pf_name.as_deref(), Some("ens2f1"));

    // The XXV710 is SR-IOV capable with no VFs: a PF that can be advertised itself.
    let xxv = get(&inv, "0000:af:00.0");
    assert_eq!(xxv.sriov_total_vfs, Some(64));
    assert_eq!(xxv.sriov_num_vfs, Some(0));
    assert!(xxv.vfs.is_empty());
    assert!(!xxv.has_vfs_enabled());
}

#[test]
fn switchdev_pf_name_is_the_uplink_and_sub_functions_are_aux_devices() {
    let (_dir, inv) = node("switchdev-sf");
    let pf = get(&inv, "0000:03:00.0");
    assert!(pf.switchdev);
    // The PF carries the uplink, the VF representors and the SF representors; the SF
    // representor `en3f0pf0sf1` sorts first, which is what upstream picked (#645).
    assert_eq!(pf.netdevs[0].name, "en3f0pf0sf1");
    assert_eq!(pf.aux_devices.len(), 3);

    let vf = get(&inv, "0000:03:00.2");
    assert_eq!(vf.pf_name.as_deref(), Some("p0"));
    assert_eq!(vf.device.as_deref(), Some("101e"));
    // vDPA: VFs 0-1 on vhost_vdpa with a character device, VF 2 on virtio_vdpa, VF 3 none.
    assert_eq!(vf.vdpa_devices.len(), 1);
    assert_eq!(vf.vdpa_devices[0].name, "vdpa0");
    assert_eq!(vf.vdpa_devices[0].driver.as_deref(), Some("vhost_vdpa"));
    assert_eq!(
        vf.vdpa_devices[0].vhost_device.as_deref(),
        Some("vhost-vdpa-0")
    );
    let virtio = &get(&inv, "0000:03:00.4").vdpa_devices[0];
    assert_eq!(virtio.driver.as_deref(), Some("virtio_vdpa"));
    assert_eq!(virtio.vhost_device, None);
    assert!(get(&inv, "0000:03:00.5").vdpa_devices.is_empty());

    let sf = get(&inv, "mlx5_core.sf.2");
    assert_eq!(sf.kind, DeviceKind::Aux);
    assert_eq!(sf.aux_type.as_deref(), Some("sf"));
    assert_eq!(sf.sf_num, Some(1));
    assert_eq!(sf.pf_id.as_deref(), Some("0000:03:00.0"));
    assert_eq!(sf.pf_name.as_deref(), Some("p0"));
    assert_eq!(sf.netdev.as_deref(), Some("enp3s0f0s1"));
    assert_eq!(sf.rdma_devices, ["mlx5_6"]);
    // Parent PCI identity, as upstream's auxNetDevice selectors match on it.
    assert_eq!(sf.vendor.as_deref(), Some("15b3"));
    assert_eq!(sf.device.as_deref(), Some("101d"));
    assert_eq!(sf.driver.as_deref(), Some("mlx5_core"));
    // Its own driver, apart.
    assert_eq!(sf.aux_driver.as_deref(), Some("mlx5_core.sf"));
    assert_eq!(sf.numa_node, Some(0));
    assert_eq!(sf.vf_index, None);

    // Port 2 has no uplink representor (its netdev has no `phys_switch_id`): upstream names a
    // sub-function's PF by the uplink representor only and drops the SF when there is none. The
    // SF stays in the inventory, without a PF name, never with the PF's plain netdev.
    let pf2 = get(&inv, "0000:03:00.1");
    assert!(!pf2.switchdev);
    let sf2 = get(&inv, "mlx5_core.sf.5");
    assert_eq!(sf2.sf_num, Some(1));
    assert_eq!(sf2.pf_id.as_deref(), Some("0000:03:00.1"));
    assert_eq!(sf2.pf_name, None);
    assert_eq!(ids_of(&inv, DeviceKind::Aux).len(), 4);
}

#[test]
fn accelerators_no_iommu_groups_and_infiniband() {
    let (_dir, inv) = node("accelerator");
    let acc = get(&inv, "0000:b0:00.0");
    assert_eq!(acc.class.as_deref(), Some("120000"));
    assert_eq!(acc.base_class(), Some(0x12));
    assert_eq!(acc.driver.as_deref(), Some("pci-pf-stub"));
    assert_eq!(acc.vfs.len(), 16);
    for vf in &acc.vfs {
        let dev = get(&inv, &vf.id);
        assert_eq!(dev.driver.as_deref(), Some("vfio-pci"));
        assert_eq!(dev.no_iommu, vf.index >= 12, "{}", vf.id);
        assert_eq!(dev.pf_name, None, "an accelerator PF has no netdev");
        assert_eq!(dev.vf_index, Some(vf.index));
    }
    // QAT (class 0b40) and the GPU (class 0302) are not vfpool devices.
    assert!(inv.get("0000:6b:00.0").is_none());
    assert!(inv.get("0000:17:00.0").is_none());

    let hca = get(&inv, "0000:d8:00.0");
    assert_eq!(hca.link_type.as_deref(), Some("infiniband"));
    assert_eq!(hca.pkey.as_deref(), Some("0xffff"));
    assert_eq!(hca.netdevs[0].mtu, Some(4092));
    let ib_vf = get(&inv, "0000:d8:00.2");
    assert_eq!(ib_vf.link_type.as_deref(), Some("infiniband"));
    assert_eq!(ib_vf.pkey.as_deref(), Some("0xffff"));
}

#[test]
fn large_node_has_1024_vfs_with_alternating_numa() {
    let (_dir, inv) = node("large");
    assert_eq!(ids_of(&inv, DeviceKind::Vf).len(), 1024);
    assert_eq!(ids_of(&inv, DeviceKind::Pf).len(), 8);
    let last = get(&inv, "0000:d8:10.0");
    assert_eq!(last.vf_index, Some(127));
    assert_eq!(last.numa_node, Some(1));
    assert_eq!(last.pf_name.as_deref(), Some("ens8f0"));
}

#[test]
fn every_shipped_fixture_writes_and_discovers() {
    for name in vfpool_sysfs::sim::FIXTURE_NAMES {
        let dir = tempfile::tempdir().unwrap();
        let fixture = Fixture::load(name).unwrap();
        assert!(
            !fixture.description.is_empty(),
            "{name} needs a description"
        );
        let summary = write_tree(&fixture, dir.path()).unwrap();
        let inv = discover(&SysfsRoot::new(dir.path())).unwrap();
        assert!(!inv.devices.is_empty(), "{name}");
        assert!(summary.physical_functions > 0, "{name}");
        // The shipped files on disk are the ones embedded in the binary.
        let on_disk = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures")
            .join(format!("{name}.toml"));
        assert!(on_disk.exists(), "{name} must be a file users can copy");
    }
}

#[test]
fn the_tree_is_kernel_shaped_and_relocatable() {
    let dir = tempfile::tempdir().unwrap();
    write_tree(&Fixture::load("dell-cx5").unwrap(), dir.path()).unwrap();
    let root = dir.path();
    let link = std::fs::read_link(root.join("bus/pci/devices/0000:3b:00.2")).unwrap();
    assert!(link.is_relative());
    assert!(
        link.to_str()
            .unwrap()
            .starts_with("../../../devices/pci0000:3a/"),
        "{}",
        link.display()
    );
    let driver = std::fs::read_link(root.join("bus/pci/devices/0000:3b:00.2/driver")).unwrap();
    assert!(
        driver.ends_with("bus/pci/drivers/mlx5_core"),
        "{}",
        driver.display()
    );
    assert!(root.join("bus/pci/drivers/mlx5_core/0000:3b:00.2").exists());
    assert!(root.join("class/net/ens1f0v0/address").exists());
    assert!(
        root.join("bus/pci/devices/0000:3b:00.0/virtfn0/physfn/virtfn11")
            .exists()
    );
    let group = std::fs::read_link(root.join("bus/pci/devices/0000:3b:00.2/iommu_group")).unwrap();
    let group = group.file_name().unwrap().to_str().unwrap();
    assert!(
        root.join(format!("kernel/iommu_groups/{group}/devices/0000:3b:00.2"))
            .exists()
    );

    // Copy the tree elsewhere: relative links keep it whole.
    let moved = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", root.display()))
        .arg(moved.path())
        .status()
        .unwrap();
    assert!(status.success());
    drop(dir);
    let inv = discover(&SysfsRoot::new(moved.path())).unwrap();
    assert_eq!(inv.get("0000:3b:01.5").unwrap().vf_index, Some(11));
}
