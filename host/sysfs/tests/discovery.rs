//! Discovery against what real kernels put next to a PCI function: vDPA devices named by their
//! creator, auxiliary devices that are not sub-functions, InfiniBand VFs whose netdev is in a pod,
//! unreadable SR-IOV attributes and PFs missing from the bus.

// Test helpers unwrap: a failure there is a failed test with a backtrace.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use tempfile::TempDir;
use vfpool_sysfs::sim::{Fixture, write_tree};
use vfpool_sysfs::{DeviceKind, Inventory, SysfsRoot, discover, discover_pci_device};

fn tree(fixture: &Fixture) -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    write_tree(fixture, dir.path()).unwrap();
    let root = dir.path().to_owned();
    (dir, root)
}

fn shipped(name: &str) -> (TempDir, PathBuf) {
    tree(&Fixture::load(name).unwrap())
}

fn scan(root: &Path) -> Inventory {
    discover(&SysfsRoot::new(root)).unwrap()
}

fn device_dir(root: &Path, id: &str) -> PathBuf {
    // The bus entry is a link to the real directory; resolve it so that children are created in
    // the device's own directory, as the kernel does.
    fs::canonicalize(root.join("bus/pci/devices").join(id)).unwrap()
}

/// A relative `subsystem` link from `dir` to `<root>/bus/<bus>`, as the kernel writes in every
/// device directory.
fn link_subsystem(root: &Path, dir: &Path, bus: &str) {
    let link = dir.join("subsystem");
    if fs::symlink_metadata(&link).is_ok() {
        fs::remove_file(&link).unwrap();
    }
    fs::create_dir_all(root.join("bus").join(bus)).unwrap();
    symlink(root.join("bus").join(bus), link).unwrap();
}

/// `vdpa dev add name vdpa:0000:03:00.2 mgmtdev pci/0000:03:00.2`, as sriov-network-operator does:
/// the kernel uses the given name, so the device is found by its bus, not by a `vdpaN` name.
#[test]
fn a_vdpa_device_with_an_operator_style_name_is_found_by_its_bus() {
    let (_dir, root) = shipped("switchdev-sf");
    let vf = device_dir(&root, "0000:03:00.2");
    let named = vf.join("vdpa:0000:03:00.2");
    fs::rename(vf.join("vdpa0"), &named).unwrap();
    link_subsystem(&root, &named, "vdpa");
    // Directories that are not vDPA devices, whatever their name says, are left alone.
    let decoy = vf.join("vdpa7");
    fs::create_dir(&decoy).unwrap();
    link_subsystem(&root, &decoy, "pci");

    let inv = scan(&root);
    let dev = inv.get("0000:03:00.2").unwrap();
    assert_eq!(dev.vdpa_devices.len(), 1, "{:?}", dev.vdpa_devices);
    let vdpa = &dev.vdpa_devices[0];
    assert_eq!(vdpa.name, "vdpa:0000:03:00.2");
    assert_eq!(vdpa.driver.as_deref(), Some("vhost_vdpa"));
    assert_eq!(vdpa.vhost_device.as_deref(), Some("vhost-vdpa-0"));
    // The CNI plugin's one-device lookup sees the same.
    let one = discover_pci_device(&SysfsRoot::new(&root), "0000:03:00.2").unwrap();
    assert_eq!(one.vdpa_devices, dev.vdpa_devices);
}

/// The simulator writes vDPA devices the way the kernel does (with a `subsystem` link) and under
/// the name a fixture gives them.
#[test]
fn a_fixture_can_name_vdpa_devices_and_discovery_finds_them() {
    let fixture = Fixture::from_toml(
        r#"
[[function]]
address = "0000:03:00.0"
vendor = "15b3"
device = "101d"
class = "020000"
driver = "mlx5_core"
netdevs = ["p0"]
total_vfs = 4

[function.vfs]
count = 3
device = "101e"
driver = "mlx5_core"
offset = 2
netdev = "enp3s0f0v{index}"
vdpa = { "0" = "vhost", "1" = "virtio" }
vdpa_name = "vdpa:{address}"
"#,
        "test",
    )
    .unwrap();
    let (_dir, root) = tree(&fixture);
    let vf0 = device_dir(&root, "0000:03:00.2");
    let subsystem = fs::canonicalize(vf0.join("vdpa:0000:03:00.2/subsystem")).unwrap();
    assert_eq!(subsystem, fs::canonicalize(root.join("bus/vdpa")).unwrap());
    assert!(root.join("bus/vdpa/devices/vdpa:0000:03:00.2").exists());

    let inv = scan(&root);
    let vhost = &inv.get("0000:03:00.2").unwrap().vdpa_devices;
    assert_eq!(vhost.len(), 1);
    assert_eq!(vhost[0].name, "vdpa:0000:03:00.2");
    assert_eq!(vhost[0].driver.as_deref(), Some("vhost_vdpa"));
    assert_eq!(vhost[0].vhost_device.as_deref(), Some("vhost-vdpa-0"));
    let virtio = &inv.get("0000:03:00.3").unwrap().vdpa_devices;
    assert_eq!(virtio[0].name, "vdpa:0000:03:00.3");
    assert_eq!(virtio[0].driver.as_deref(), Some("virtio_vdpa"));
    assert!(inv.get("0000:03:00.4").unwrap().vdpa_devices.is_empty());
}

#[test]
fn vdpa_names_that_leave_the_tree_or_collide_are_refused() {
    let base = r#"
[[function]]
address = "0000:03:00.0"
vendor = "15b3"
device = "101d"
class = "020000"
total_vfs = 4

[function.vfs]
count = 2
device = "101e"
driver = "mlx5_core"
vdpa = { "0-1" = "vhost" }
"#;
    for (name, why) in [("a/{index}", "'/'"), ("vdpa-fixed", "vdpa-fixed")] {
        let err = Fixture::from_toml(&format!("{base}vdpa_name = \"{name}\"\n"), "t.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("vdpa_name") && err.contains(why), "{err}");
    }
}

/// Real mlx5 functions, VFs included, carry `mlx5_core.eth.N`, `mlx5_core.rdma.N` and
/// `mlx5_core.eth-rep.N` auxiliary devices; ice carries `ice.roce.N`. Only sub-functions (which have
/// an `sfnum`) are devices a pool can hold.
#[test]
fn only_sub_functions_become_aux_devices() {
    let (_dir, root) = shipped("switchdev-sf");
    let pf = device_dir(&root, "0000:03:00.0");
    let vf = device_dir(&root, "0000:03:00.2");
    for (dir, name) in [
        (&pf, "mlx5_core.eth.0"),
        (&pf, "mlx5_core.rdma.0"),
        (&pf, "mlx5_core.eth-rep.0"),
        (&pf, "ice.roce.0"),
        (&vf, "mlx5_core.eth.2"),
        (&vf, "mlx5_core.rdma.2"),
    ] {
        let aux = dir.join(name);
        fs::create_dir(&aux).unwrap();
        link_subsystem(&root, &aux, "auxiliary");
    }
    // Even an sfnum under a VF is not a sub-function: SFs are created on PFs.
    fs::create_dir(vf.join("mlx5_core.sf.9")).unwrap();
    fs::write(vf.join("mlx5_core.sf.9/sfnum"), "9\n").unwrap();

    let inv = scan(&root);
    let mut aux: Vec<&str> = inv
        .devices
        .iter()
        .filter(|d| d.kind == DeviceKind::Aux)
        .map(|d| d.id.as_str())
        .collect();
    aux.sort_unstable();
    assert_eq!(
        aux,
        [
            "mlx5_core.sf.2",
            "mlx5_core.sf.3",
            "mlx5_core.sf.4",
            "mlx5_core.sf.5"
        ]
    );
    assert_eq!(inv.get("0000:03:00.0").unwrap().aux_devices.len(), 3);
    assert!(inv.get("0000:03:00.2").unwrap().aux_devices.is_empty());
    // The SFs keep their PF name: the eth/rdma aux devices change nothing about the PF.
    assert_eq!(
        inv.get("mlx5_core.sf.2").unwrap().pf_name.as_deref(),
        Some("p0")
    );
}

/// Upstream reads the pkey when the link type the device ends up with is InfiniBand, and a VF
/// without a netdev takes its PF's.
#[test]
fn an_infiniband_vf_without_a_netdev_keeps_its_pkey() {
    let (_dir, root) = shipped("accelerator");
    // The VF's netdev moved into a pod; its RDMA device is still in the host's view (shared mode).
    fs::remove_dir_all(device_dir(&root, "0000:d8:00.2").join("net")).unwrap();
    let inv = scan(&root);
    let vf = inv.get("0000:d8:00.2").unwrap();
    assert_eq!(vf.netdev, None);
    assert!(!vf.rdma_devices.is_empty());
    assert_eq!(vf.link_type.as_deref(), Some("infiniband"));
    assert_eq!(vf.pkey.as_deref(), Some("0xffff"));
    let one = discover_pci_device(&SysfsRoot::new(&root), "0000:d8:00.2").unwrap();
    assert_eq!(one.pkey.as_deref(), Some("0xffff"));
}

#[test]
fn an_ethernet_vf_without_a_netdev_has_no_pkey() {
    let (_dir, root) = shipped("dell-cx5");
    let inv = scan(&root);
    let vf = inv
        .devices
        .iter()
        .find(|d| d.kind == DeviceKind::Vf && !d.rdma_devices.is_empty() && d.netdev.is_some())
        .expect("a VF with an RDMA device and a netdev")
        .id
        .clone();
    fs::remove_dir_all(device_dir(&root, &vf).join("net")).unwrap();
    let inv = scan(&root);
    let dev = inv.get(&vf).unwrap();
    assert_eq!(dev.link_type.as_deref(), Some("ether"));
    assert_eq!(dev.pkey, None);
}

const SMALL_NODE: &str = r#"
[[function]]
address = "0000:3b:00.0"
vendor = "15b3"
device = "1017"
class = "020000"
driver = "mlx5_core"
netdevs = ["ens1f0"]
total_vfs = 8

[function.vfs]
count = 4
device = "1018"
driver = "mlx5_core"
offset = 2
netdev = "ens1f0v{index}"
"#;

/// Upstream's `IsSriovPF` only asks whether `sriov_totalvfs` exists: a PF whose file cannot be
/// read or parsed is still SR-IOV capable, so with VFs enabled it is never pooled itself.
#[test]
fn a_pf_with_an_unreadable_sriov_totalvfs_is_still_sriov_capable() {
    for broken in ["unreadable", "garbage", "empty"] {
        let (_dir, root) = tree(&Fixture::from_toml(SMALL_NODE, "test").unwrap());
        let file = device_dir(&root, "0000:3b:00.0").join("sriov_totalvfs");
        match broken {
            "unreadable" => {
                // EISDIR on read: root bypasses permission bits, so chmod cannot stand in.
                fs::remove_file(&file).unwrap();
                fs::create_dir(&file).unwrap();
            }
            "garbage" => fs::write(&file, "lots\n").unwrap(),
            _ => fs::write(&file, "").unwrap(),
        }
        let inv = scan(&root);
        let pf = inv.get("0000:3b:00.0").unwrap();
        let total = pf
            .sriov_total_vfs
            .unwrap_or_else(|| panic!("{broken}: None"));
        // What is known for sure: at least the enabled VFs.
        assert_eq!(total, 4, "{broken}");
        assert!(pf.has_vfs_enabled(), "{broken}");
        assert_eq!(pf.sriov_num_vfs, Some(4), "{broken}");
    }
}

/// Some drivers' attributes end in a NUL before the newline (`4\0\n`). Left in, it made the
/// number unparsable: `sriov_numvfs` read as unknown and a PF with four VFs in use as having none.
#[test]
fn sriov_counts_ending_in_a_nul_are_read() {
    let (_dir, root) = tree(&Fixture::from_toml(SMALL_NODE, "test").unwrap());
    let pf_dir = device_dir(&root, "0000:3b:00.0");
    fs::write(pf_dir.join("sriov_numvfs"), "4\0\n").unwrap();
    fs::write(pf_dir.join("sriov_totalvfs"), "8\0\n").unwrap();
    let inv = scan(&root);
    let pf = inv.get("0000:3b:00.0").unwrap();
    assert_eq!((pf.sriov_num_vfs, pf.sriov_total_vfs), (Some(4), Some(8)));
    assert!(pf.has_vfs_enabled());
}

/// `virtfnN` links exist only while VFs are enabled. A PF whose `sriov_numvfs` could not be read
/// (or read 0 mid-change, or was missing along with `sriov_totalvfs` in a damaged tree) counted as
/// having no VFs enabled, so it could be pooled itself while its VFs were in use.
#[test]
fn a_pf_with_virtfn_links_has_vfs_enabled_whatever_sriov_numvfs_says() {
    for broken in ["unreadable", "garbage", "zero", "missing", "no-sriov-files"] {
        let (_dir, root) = tree(&Fixture::from_toml(SMALL_NODE, "test").unwrap());
        let pf_dir = device_dir(&root, "0000:3b:00.0");
        let numvfs = pf_dir.join("sriov_numvfs");
        match broken {
            "unreadable" => {
                fs::remove_file(&numvfs).unwrap();
                fs::create_dir(&numvfs).unwrap();
            }
            "garbage" => fs::write(&numvfs, "four\n").unwrap(),
            "zero" => fs::write(&numvfs, "0\n").unwrap(),
            "missing" => fs::remove_file(&numvfs).unwrap(),
            _ => {
                fs::remove_file(&numvfs).unwrap();
                fs::remove_file(pf_dir.join("sriov_totalvfs")).unwrap();
            }
        }
        let inv = scan(&root);
        let pf = inv.get("0000:3b:00.0").unwrap();
        assert_eq!(pf.sriov_num_vfs, Some(4), "{broken}");
        assert!(pf.sriov_total_vfs.is_some_and(|t| t >= 4), "{broken}");
        assert!(pf.has_vfs_enabled(), "{broken}");
    }
}

#[test]
fn a_function_without_sriov_totalvfs_is_not_sriov_capable() {
    let (_dir, root) = tree(&Fixture::from_toml(SMALL_NODE, "test").unwrap());
    let vf = scan(&root).get("0000:3b:00.2").unwrap().clone();
    assert_eq!(vf.sriov_total_vfs, None);
    assert!(!vf.has_vfs_enabled());
}

/// A VF whose PF is not on the bus (a half-removed device) still gets the PF name, read through its
/// `physfn` link with the same rules as a listed PF: in switchdev mode the uplink representor, never
/// a VF or SF representor that sorts first.
#[test]
fn a_vf_whose_switchdev_pf_is_not_listed_still_gets_the_uplink_name() {
    let (_dir, root) = shipped("switchdev-sf");
    fs::remove_file(root.join("bus/pci/devices/0000:03:00.0")).unwrap();
    let inv = scan(&root);
    assert!(inv.get("0000:03:00.0").is_none());
    for (id, index) in [("0000:03:00.2", 0), ("0000:03:00.5", 3)] {
        let vf = inv.get(id).unwrap();
        assert_eq!(vf.pf_name.as_deref(), Some("p0"), "{id}");
        assert_eq!(vf.vf_index, Some(index), "{id}");
        assert_eq!(vf.pf_id.as_deref(), Some("0000:03:00.0"), "{id}");
    }
    let one = discover_pci_device(&SysfsRoot::new(&root), "0000:03:00.3").unwrap();
    assert_eq!(one.pf_name.as_deref(), Some("p0"));
    assert_eq!(one.vf_index, Some(1));
}

/// `/dev/vhost-net` and `/dev/net/tun` exist from boot, their `class/misc` entries only once the
/// module is loaded (on first open): on the host, the device nodes count too, as upstream checks
/// them. A node where nothing had opened vhost-net yet gave `needVhostNet` pods neither device.
#[test]
fn device_nodes_count_for_vhost_net_and_tun() {
    let (_dir, root) = shipped("dell-cx5");
    for misc in ["vhost-net", "tun"] {
        let _ = fs::remove_dir_all(root.join("class/misc").join(misc));
        let _ = fs::remove_file(root.join("class/misc").join(misc));
    }
    let without = discover(&SysfsRoot::new(&root)).unwrap();
    assert!(!without.node.vhost_net && !without.node.tun);
    let dev = tempfile::tempdir().unwrap();
    fs::write(dev.path().join("vhost-net"), "").unwrap();
    fs::create_dir(dev.path().join("net")).unwrap();
    fs::write(dev.path().join("net/tun"), "").unwrap();
    let with = discover(&SysfsRoot::new(&root).with_dev_root(dev.path())).unwrap();
    assert!(with.node.vhost_net && with.node.tun);
}

/// An E810 (ice) PF in legacy mode: ice registers the PF's netdev as a devlink physical port, so it
/// has `phys_port_name` `p0` and a `phys_switch_id` exactly like a switchdev uplink, while
/// `devlink dev eswitch show` says legacy. Legacy mode creates no representors.
const ICE_LEGACY: &str = r#"
[[function]]
address = "0000:51:00.0"
vendor = "8086"
device = "1593"
class = "020000"
driver = "ice"
netdevs = ["ens785f0np0"]
physical_port = true
total_vfs = 64

[function.vfs]
count = 2
device = "1889"
driver = "iavf"
offset = 16
netdev = "ens785f0v{index}"
"#;

#[test]
fn a_legacy_pf_with_an_uplink_shaped_netdev_is_not_switchdev() {
    let (_dir, root) = tree(&Fixture::from_toml(ICE_LEGACY, "test").unwrap());
    let inv = scan(&root);
    let pf = inv.get("0000:51:00.0").unwrap();
    // The simulator writes what ice shows: the uplink shape without representors.
    assert_eq!(pf.netdevs.len(), 1);
    assert_eq!(pf.netdevs[0].phys_port_name.as_deref(), Some("p0"));
    assert!(pf.netdevs[0].phys_switch_id.is_some());
    assert!(!pf.switchdev);
    for vf in [&pf.vfs[0].id, &pf.vfs[1].id] {
        assert_eq!(inv.get(vf).unwrap().pf_name.as_deref(), Some("ens785f0np0"));
    }
}

/// In legacy mode upstream names a VF's PF by the first entry of `physfn/net`, not by an
/// uplink-shaped netdev that sorts later; in switchdev mode (representors present) by the uplink.
#[test]
fn a_legacy_pf_name_is_its_first_netdev_even_when_a_later_one_is_uplink_shaped() {
    let fixture = ICE_LEGACY.replace(
        r#"netdevs = ["ens785f0np0"]"#,
        r#"netdevs = ["ens785f0np0", "ens785f0"]"#,
    );
    let (_dir, root) = tree(&Fixture::from_toml(&fixture, "test").unwrap());
    let inv = scan(&root);
    let pf = inv.get("0000:51:00.0").unwrap();
    assert!(!pf.switchdev);
    let vf = inv.get(&pf.vfs[0].id).unwrap();
    assert_eq!(vf.pf_name.as_deref(), Some("ens785f0"));
}

/// A switchdev PF with VFs: the uplink plus VF representors on the same switch.
#[test]
fn a_switchdev_pf_is_told_by_its_representors() {
    let fixture = ICE_LEGACY.replace("physical_port = true", "switchdev = true");
    let (_dir, root) = tree(&Fixture::from_toml(&fixture, "test").unwrap());
    let inv = scan(&root);
    let pf = inv.get("0000:51:00.0").unwrap();
    assert!(pf.switchdev);
    assert_eq!(
        inv.get(&pf.vfs[0].id).unwrap().pf_name.as_deref(),
        Some("ens785f0np0")
    );

    // Representors on another switch (or none) do not make this PF switchdev.
    let pf_dir = device_dir(&root, "0000:51:00.0");
    for rep in ["ens785f0np0_0", "ens785f0np0_1"] {
        fs::write(
            pf_dir.join("net").join(rep).join("phys_switch_id"),
            "ffff\n",
        )
        .unwrap();
    }
    assert!(!scan(&root).get("0000:51:00.0").unwrap().switchdev);
}

/// MLNX_OFED's mlx5 reports the eswitch mode in `net/<if>/compat/devlink/mode`; where it exists it
/// decides, even for a switchdev PF that has no VF or SF (so no representor) yet.
#[test]
fn the_compat_devlink_mode_file_decides_where_it_exists() {
    let (_dir, root) = tree(&Fixture::from_toml(ICE_LEGACY, "test").unwrap());
    let compat = device_dir(&root, "0000:51:00.0").join("net/ens785f0np0/compat/devlink");
    fs::create_dir_all(&compat).unwrap();
    fs::write(compat.join("mode"), "switchdev\n").unwrap();
    assert!(scan(&root).get("0000:51:00.0").unwrap().switchdev);

    let (_dir, root) = shipped("switchdev-sf");
    let compat = device_dir(&root, "0000:03:00.0").join("net/p0/compat/devlink");
    fs::create_dir_all(&compat).unwrap();
    fs::write(compat.join("mode"), "legacy\n").unwrap();
    assert!(!scan(&root).get("0000:03:00.0").unwrap().switchdev);
}
