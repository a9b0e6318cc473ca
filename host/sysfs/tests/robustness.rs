//! What real nodes do to sysfs, and what a careless reader gets wrong: moved netdevs, unbound and
//! half-configured devices, missing, unreadable and garbage files, broken roots.

// Test helpers unwrap: a failure there is a failed test with a backtrace.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::{Path, PathBuf};

use tempfile::TempDir;
use vfpool_sysfs::sim::{Fixture, write_tree};
use vfpool_sysfs::{DeviceKind, DiscoveryError, SysfsRoot, discover, discover_pci_device};

const SMALL_NODE: &str = r#"
description = "one ConnectX-5 port with 4 VFs; VF 3's netdev is in a pod"

[[function]]
address = "0000:3b:00.0"
vendor = "15b3"
device = "1017"
class = "020000"
driver = "mlx5_core"
numa_node = 0
netdevs = ["ens1f0"]
rdma = ["mlx5_0"]
total_vfs = 8

[function.vfs]
count = 4
device = "1018"
driver = "mlx5_core"
offset = 2
netdev = "ens1f0v{index}"
moved_to_pod = "3"
rdma = { prefix = "mlx5_", first = 2 }
"#;

fn small_node() -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let fixture = Fixture::from_toml(SMALL_NODE, "test").unwrap();
    write_tree(&fixture, dir.path()).unwrap();
    let root = dir.path().to_owned();
    (dir, root)
}

fn device_dir(root: &Path, id: &str) -> PathBuf {
    root.join("bus/pci/devices").join(id)
}

/// A PF port in a bond (mlx5 VF-LAG) reports the bond's link with its netdev, so that health can
/// follow the bond (one port down is not its VFs down); a master that is no bond (a bridge, an OVS
/// datapath) is not reported. VFs' netdevs are never looked at for it.
#[test]
fn a_pf_port_in_a_bond_reports_the_bonds_link() {
    let (_dir, root) = small_node();
    let bond = root.join("devices/virtual/net/bond0");
    fs::create_dir_all(bond.join("bonding")).unwrap();
    fs::write(bond.join("operstate"), "up\n").unwrap();
    fs::write(bond.join("carrier"), "1\n").unwrap();
    fs::write(bond.join("bonding/slaves"), "ens1f0 ens1f1\n").unwrap();
    let port = device_dir(&root, "0000:3b:00.0").join("net/ens1f0");
    std::os::unix::fs::symlink(&bond, port.join("master")).unwrap();
    let vf_port = device_dir(&root, "0000:3b:00.2").join("net/ens1f0v0");
    std::os::unix::fs::symlink(&bond, vf_port.join("master")).unwrap();

    let inv = discover(&SysfsRoot::new(&root)).unwrap();
    let pf = inv.get("0000:3b:00.0").unwrap();
    let link = pf.netdevs[0].bond.as_ref().expect("the PF port's bond");
    assert_eq!(link.name, "bond0");
    assert_eq!(link.operstate.as_deref(), Some("up"));
    assert_eq!(link.carrier, Some(true));
    assert_eq!(link.ports, ["ens1f0", "ens1f1"]);
    assert!(inv.get("0000:3b:00.2").unwrap().netdevs[0].bond.is_none());

    fs::remove_dir_all(bond.join("bonding")).unwrap();
    let inv = discover(&SysfsRoot::new(&root)).unwrap();
    assert!(inv.get("0000:3b:00.0").unwrap().netdevs[0].bond.is_none());
}

/// Replaces a file with a directory: reading it then fails with EISDIR, like an attribute the
/// kernel refuses to show (root bypasses permission bits, so chmod cannot simulate that here).
fn make_unreadable(path: &Path) {
    fs::remove_file(path).unwrap();
    fs::create_dir(path).unwrap();
}

#[test]
fn a_vf_whose_netdev_moved_into_a_pod_keeps_its_pf_and_index() {
    let (_dir, root) = small_node();
    let inv = discover(&SysfsRoot::new(&root)).unwrap();
    let vf = inv.get("0000:3b:00.5").unwrap();
    assert!(vf.netdevs.is_empty());
    assert_eq!(vf.netdev, None);
    assert_eq!(vf.pf_name.as_deref(), Some("ens1f0"), "upstream #565/#521");
    assert_eq!(vf.vf_index, Some(3));
    // The link type comes from the PF when the VF has no netdev (upstream PR #479).
    assert_eq!(vf.link_type.as_deref(), Some("ether"));
    assert_eq!(vf.driver.as_deref(), Some("mlx5_core"));
}

#[test]
fn missing_files_become_nulls_and_the_device_stays() {
    let (_dir, root) = small_node();
    let vf = device_dir(&root, "0000:3b:00.2");
    for file in ["numa_node", "modalias", "vendor", "subsystem_vendor"] {
        fs::remove_file(vf.join(file)).unwrap();
    }
    fs::remove_file(vf.join("driver")).unwrap();
    fs::remove_file(vf.join("iommu_group")).unwrap();
    let inv = discover(&SysfsRoot::new(&root)).unwrap();
    let dev = inv.get("0000:3b:00.2").unwrap();
    assert_eq!(dev.numa_node, None);
    assert_eq!(dev.vendor, None);
    assert_eq!(dev.subsystem_vendor, None);
    assert_eq!(dev.driver, None);
    assert_eq!(dev.iommu_group, None);
    // What is still there is still read: the plain files stand in for the missing modalias.
    assert_eq!(dev.device.as_deref(), Some("1018"));
    assert_eq!(dev.class.as_deref(), Some("020000"));
    assert_eq!(dev.vf_index, Some(0));
}

#[test]
fn a_vf_with_neither_class_nor_modalias_is_kept_by_its_sriov_traits() {
    let (_dir, root) = small_node();
    let vf = device_dir(&root, "0000:3b:00.3");
    fs::remove_file(vf.join("class")).unwrap();
    fs::remove_file(vf.join("modalias")).unwrap();
    let inv = discover(&SysfsRoot::new(&root)).unwrap();
    let dev = inv.get("0000:3b:00.3").unwrap();
    assert_eq!(dev.class, None);
    assert_eq!(dev.vendor.as_deref(), Some("15b3"));
    assert_eq!(dev.pf_name.as_deref(), Some("ens1f0"));
}

#[test]
fn the_modalias_stands_in_for_missing_id_files() {
    let (_dir, root) = small_node();
    let vf = device_dir(&root, "0000:3b:00.2");
    for file in [
        "vendor",
        "device",
        "class",
        "subsystem_vendor",
        "subsystem_device",
    ] {
        fs::remove_file(vf.join(file)).unwrap();
    }
    let inv = discover(&SysfsRoot::new(&root)).unwrap();
    let dev = inv.get("0000:3b:00.2").unwrap();
    assert_eq!(dev.vendor.as_deref(), Some("15b3"));
    assert_eq!(dev.device.as_deref(), Some("1018"));
    assert_eq!(dev.subsystem_vendor.as_deref(), Some("15b3"));
    assert_eq!(dev.class.as_deref(), Some("020000"));
}

#[test]
fn unreadable_and_garbage_attributes_become_nulls() {
    let (_dir, root) = small_node();
    let vf = device_dir(&root, "0000:3b:00.2");
    make_unreadable(&vf.join("numa_node"));
    make_unreadable(&vf.join("net/ens1f0v0/mtu"));
    fs::write(vf.join("net/ens1f0v0/carrier"), "maybe\n").unwrap();
    fs::write(vf.join("net/ens1f0v0/type"), "not-a-number\n").unwrap();
    fs::write(vf.join("modalias"), "pci:garbage\n").unwrap();
    fs::write(vf.join("vendor"), "0xzzzz\n").unwrap();
    let other = device_dir(&root, "0000:3b:00.3");
    fs::write(other.join("numa_node"), "-1\n").unwrap();
    fs::write(other.join("net/ens1f0v1/mtu"), "").unwrap();

    let inv = discover(&SysfsRoot::new(&root)).unwrap();
    let dev = inv.get("0000:3b:00.2").unwrap();
    assert_eq!(dev.numa_node, None);
    assert_eq!(dev.vendor, None);
    assert_eq!(dev.device.as_deref(), Some("1018"));
    let netdev = &dev.netdevs[0];
    assert_eq!(netdev.mtu, None);
    assert_eq!(netdev.carrier, None);
    assert_eq!(netdev.link_type, None);
    assert_eq!(netdev.operstate.as_deref(), Some("up"));
    let other = inv.get("0000:3b:00.3").unwrap();
    assert_eq!(
        other.numa_node, None,
        "-1 means unknown, never -1 in the output"
    );
    assert_eq!(other.netdevs[0].mtu, None);
}

/// A FIFO where an attribute should be (never in a kernel's sysfs, possible in a tree someone built
/// by hand): opened without `O_NONBLOCK` it blocked discovery forever, and with it `vfpool run`'s
/// rescans and its signal handling. Now it reads as empty, like any attribute without a value.
#[test]
fn a_fifo_in_place_of_an_attribute_does_not_block_discovery() {
    let (_dir, root) = small_node();
    let vf = device_dir(&root, "0000:3b:00.2");
    fs::remove_file(vf.join("numa_node")).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(vf.join("numa_node"))
        .status()
        .unwrap();
    assert!(made.success(), "mkfifo failed");

    // On a thread, so that a regression fails this test instead of hanging the test run.
    let (tx, rx) = std::sync::mpsc::channel();
    let scan_root = root.clone();
    std::thread::spawn(move || {
        let _ = tx.send(discover(&SysfsRoot::new(&scan_root)));
    });
    let inv = rx
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("discovery blocked on a FIFO")
        .unwrap();
    let dev = inv.get("0000:3b:00.2").unwrap();
    assert_eq!(dev.numa_node, None);
    assert_eq!(dev.device.as_deref(), Some("1018"));
}

#[test]
fn a_vf_without_a_pf_netdev_has_no_pf_name_but_keeps_its_index() {
    let (_dir, root) = small_node();
    fs::remove_dir_all(device_dir(&root, "0000:3b:00.0").join("net")).unwrap();
    let inv = discover(&SysfsRoot::new(&root)).unwrap();
    let vf = inv.get("0000:3b:00.4").unwrap();
    assert_eq!(vf.pf_name, None);
    assert_eq!(vf.pf_id.as_deref(), Some("0000:3b:00.0"));
    assert_eq!(vf.vf_index, Some(2));
}

#[test]
fn a_vf_whose_pf_is_not_listed_on_the_bus_still_finds_its_index() {
    let (_dir, root) = small_node();
    // The PF's bus link is gone (a half-removed device); the VF's physfn link still leads to it.
    fs::remove_file(root.join("bus/pci/devices/0000:3b:00.0")).unwrap();
    let inv = discover(&SysfsRoot::new(&root)).unwrap();
    assert!(inv.get("0000:3b:00.0").is_none());
    let vf = inv.get("0000:3b:00.4").unwrap();
    assert_eq!(vf.vf_index, Some(2));
    assert_eq!(vf.pf_id.as_deref(), Some("0000:3b:00.0"));
    // Upstream reads `<vf>/physfn/net`: the PF name does not depend on the PF being listed.
    assert_eq!(vf.pf_name.as_deref(), Some("ens1f0"));
    assert_eq!(vf.link_type.as_deref(), Some("ether"));
    let moved = inv.get("0000:3b:00.5").unwrap();
    assert_eq!(
        (moved.pf_name.as_deref(), moved.vf_index),
        (Some("ens1f0"), Some(3))
    );
    // The one-device lookup takes the same way when the PF's bus entry is gone.
    let one = discover_pci_device(&SysfsRoot::new(&root), "0000:3b:00.4").unwrap();
    assert_eq!(one.pf_name.as_deref(), Some("ens1f0"));
    assert_eq!(one.vf_index, Some(2));
}

/// A hand-built or damaged tree: a `physfn` link to something that is not a PCI function, and an
/// `infiniband` entry that is a symlink rather than a device's directory (here a loop back to the
/// device). Both used to be taken at their word: a PF id `garbage` and an RDMA device `loopy`,
/// which would reach the pools and Allocate's `rdma` answer.
#[test]
fn links_that_are_not_what_sysfs_makes_are_not_taken_at_their_word() {
    let (_dir, root) = small_node();
    let vf = device_dir(&root, "0000:3b:00.2");
    fs::remove_file(vf.join("physfn")).unwrap();
    fs::create_dir_all(root.join("devices/garbage")).unwrap();
    std::os::unix::fs::symlink("../../garbage", vf.join("physfn")).unwrap();
    let other = device_dir(&root, "0000:3b:00.3");
    let real: Vec<String> = fs::read_dir(other.join("infiniband"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(!real.is_empty());
    std::os::unix::fs::symlink("../..", other.join("infiniband/loopy")).unwrap();
    let inv = discover(&SysfsRoot::new(&root)).unwrap();
    let vf = inv.get("0000:3b:00.2").unwrap();
    assert_eq!(vf.pf_id, None, "{vf:?}");
    let other = inv.get("0000:3b:00.3").unwrap();
    assert_eq!(other.rdma_devices, real);
    assert_eq!(other.pf_id.as_deref(), Some("0000:3b:00.0"));
}

#[test]
fn junk_entries_on_the_bus_are_ignored() {
    let (_dir, root) = small_node();
    fs::write(root.join("bus/pci/devices/not-a-device"), "").unwrap();
    std::os::unix::fs::symlink("/nonexistent", root.join("bus/pci/devices/0000:99:00.0")).unwrap();
    let inv = discover(&SysfsRoot::new(&root)).unwrap();
    assert_eq!(inv.devices.len(), 5);
}

#[test]
fn a_missing_root_and_a_root_without_a_pci_bus_are_clear_errors() {
    let err = discover(&SysfsRoot::new("/nonexistent/vfpool-root")).unwrap_err();
    assert!(
        matches!(err, DiscoveryError::RootUnreadable { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("--sysfs-root"), "{err}");

    let empty = tempfile::tempdir().unwrap();
    let err = discover(&SysfsRoot::new(empty.path())).unwrap_err();
    assert!(matches!(err, DiscoveryError::NoPciBus { .. }), "{err:?}");
    assert!(err.to_string().contains("bus/pci/devices"), "{err}");

    let file = empty.path().join("file");
    fs::write(&file, "").unwrap();
    let err = discover(&SysfsRoot::new(&file)).unwrap_err();
    assert!(
        matches!(err, DiscoveryError::RootUnreadable { .. }),
        "{err:?}"
    );
}

#[test]
fn one_device_lookup_resolves_the_pf_and_rejects_bad_addresses() {
    let (_dir, root) = small_node();
    let root = SysfsRoot::new(&root);
    let vf = discover_pci_device(&root, "0000:3b:00.4").unwrap();
    assert_eq!(vf.pf_name.as_deref(), Some("ens1f0"));
    assert_eq!(vf.vf_index, Some(2));
    assert_eq!(vf.netdev.as_deref(), Some("ens1f0v2"));

    let moved = discover_pci_device(&root, "0000:3b:00.5").unwrap();
    assert_eq!((moved.netdev, moved.vf_index), (None, Some(3)));

    let err = discover_pci_device(&root, "3b:00.4").unwrap_err();
    assert!(matches!(err, DiscoveryError::InvalidAddress(_)), "{err:?}");
    let err = discover_pci_device(&root, "0000:3b:07.0").unwrap_err();
    assert!(
        matches!(err, DiscoveryError::DeviceNotFound { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("0000:3b:07.0"), "{err}");
}

#[test]
fn json_uses_camel_case_and_null_for_unknown() {
    let (_dir, root) = small_node();
    fs::write(device_dir(&root, "0000:3b:00.2").join("numa_node"), "-1\n").unwrap();
    let inv = discover(&SysfsRoot::new(&root)).unwrap();
    let json = serde_json::to_value(inv.get("0000:3b:00.2").unwrap()).unwrap();
    assert_eq!(json["id"], "0000:3b:00.2");
    assert_eq!(json["kind"], "vf");
    assert_eq!(json["numaNode"], serde_json::Value::Null);
    assert_eq!(json["pfId"], "0000:3b:00.0");
    assert_eq!(json["pfName"], "ens1f0");
    assert_eq!(json["vfIndex"], 0);
    assert_eq!(json["linkType"], "ether");
    assert_eq!(json["rdmaDevices"], serde_json::json!(["mlx5_2"]));
    assert_eq!(json["uioDevice"], serde_json::Value::Null);
    assert!(json["iommuGroup"].is_u64());
}

/// The file descriptors this process has open, lowest first.
fn open_descriptors() -> Vec<u64> {
    let mut fds: Vec<u64> = fs::read_dir("/proc/self/fd")
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().parse().unwrap())
        .collect();
    fds.sort_unstable();
    // The listing's own descriptor is closed by now; it was the lowest free one or above.
    fds
}

const HEADROOM_ENV: &str = "VFPOOL_TEST_FD_HEADROOM";
const ROOT_ENV: &str = "VFPOOL_TEST_SYSFS_ROOT";

/// A process that runs out of file descriptors half-way through a scan (a leak elsewhere, a low
/// `LimitNOFILE`) has not seen the node. Discovery used to return what it had read — here no
/// device's attributes, with one descriptor to spare — and the agent would withdraw devices from
/// their pools or mark them unhealthy. It is an error now, naming the exhaustion.
///
/// Run in a child process (this test binary again) whose open-files limit leaves `headroom`
/// descriptors free: with one, opening `bus/pci/devices` takes the last and the first device
/// cannot be opened.
#[test]
fn running_out_of_descriptors_mid_scan_is_an_error_not_a_short_inventory() {
    if let Ok(headroom) = std::env::var(HEADROOM_ENV) {
        let headroom: u64 = headroom.parse().unwrap();
        let root = SysfsRoot::new(std::env::var(ROOT_ENV).unwrap());
        let open = open_descriptors();
        let lowest_free = (0..).find(|fd| !open.contains(fd)).unwrap();
        let (_, hard) =
            nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
        nix::sys::resource::setrlimit(
            nix::sys::resource::Resource::RLIMIT_NOFILE,
            lowest_free + headroom,
            hard,
        )
        .unwrap();
        match discover(&root) {
            Ok(inv) => println!("RESULT ok {}", serde_json::to_string(&inv).unwrap()),
            Err(e) => println!("RESULT err {e}"),
        }
        return;
    }
    let (_dir, root) = small_node();
    let all = serde_json::to_string(&discover(&SysfsRoot::new(&root)).unwrap()).unwrap();
    for headroom in 1..=4 {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "running_out_of_descriptors_mid_scan_is_an_error_not_a_short_inventory",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(HEADROOM_ENV, headroom.to_string())
            .env(ROOT_ENV, &root)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let result = stdout
            .lines()
            .find_map(|l| l.split_once("RESULT ").map(|(_, result)| result))
            .unwrap_or_else(|| panic!("headroom {headroom}: no result: {out:?}"));
        match result.split_once(' ') {
            Some(("ok", inventory)) => {
                assert_ne!(
                    headroom, 1,
                    "one free descriptor cannot read a device: {result}"
                );
                assert_eq!(inventory, all, "headroom {headroom}: a partial inventory");
            }
            Some(("err", message)) => assert!(
                message.contains("out of file descriptors"),
                "headroom {headroom}: {message}"
            ),
            _ => panic!("headroom {headroom}: {result}"),
        }
    }
}

/// `echo 0 > sriov_numvfs` removes the PF's `virtfnN` link and the VF's `physfn` link before it
/// unbinds the VF's driver and removes its directory (and adding VFs creates the directory before
/// the links). A rescan in that window saw a bound network function without `physfn` and reported
/// it as a standalone PF, which a policy would pool as a plain NIC. Its address in its PF's VF
/// routing-id range gives it away; a plain function outside every such range is still a PF.
#[test]
fn a_vf_being_added_or_removed_is_not_reported_as_a_standalone_pf() {
    const NODE: &str = r#"
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

# Just past the PF's VF range (VF 7 would be 0000:3b:01.1).
[[function]]
address = "0000:3b:01.2"
vendor = "8086"
device = "1572"
class = "020000"
driver = "i40e"
netdevs = ["eno1"]

# The routing id of VF 1, in another PCI domain.
[[function]]
address = "0001:3b:00.3"
vendor = "8086"
device = "1572"
class = "020000"
driver = "i40e"
netdevs = ["eno2"]
"#;
    let dir = tempfile::tempdir().unwrap();
    write_tree(&Fixture::from_toml(NODE, "test").unwrap(), dir.path()).unwrap();
    let root = dir.path();
    fs::remove_file(device_dir(root, "0000:3b:00.3").join("physfn")).unwrap();
    fs::remove_file(device_dir(root, "0000:3b:00.0").join("virtfn1")).unwrap();

    let inv = discover(&SysfsRoot::new(root)).unwrap();
    assert!(
        inv.get("0000:3b:00.3").is_none(),
        "a VF in transition was reported: {:?}",
        inv.get("0000:3b:00.3")
    );
    let pf = inv.get("0000:3b:00.0").unwrap();
    let vfs: Vec<(u32, &str)> = pf.vfs.iter().map(|v| (v.index, v.id.as_str())).collect();
    assert_eq!(
        vfs,
        [
            (0, "0000:3b:00.2"),
            (2, "0000:3b:00.4"),
            (3, "0000:3b:00.5")
        ]
    );
    assert_eq!(inv.get("0000:3b:00.4").unwrap().vf_index, Some(2));
    for plain in ["0000:3b:01.2", "0001:3b:00.3"] {
        let nic = inv.get(plain).unwrap();
        assert_eq!((nic.kind, nic.pf_id.as_deref()), (DeviceKind::Pf, None));
    }
}

/// A PF's VF range spans every VF it could have, so it reaches well past the VFs enabled: here
/// 256 VFs from offset 128 reach bus 3c, where a plain NIC sits behind another port. The kernel
/// gives a VF its PF's parent whatever bus it lands on, so only a function below the PF's own
/// bridge can be one of its VFs; the NIC used to vanish from every scan. And a PF with no VF
/// enabled may report an offset of 0 (undefined then), which placed "VFs" on its own siblings.
#[test]
fn plain_functions_in_a_pf_s_vf_range_are_kept() {
    const NODE: &str = r#"
[[function]]
address = "0000:3b:00.0"
vendor = "15b3"
device = "1017"
class = "020000"
driver = "mlx5_core"
netdevs = ["ens1f0"]
total_vfs = 256

[function.vfs]
count = 2
device = "1018"
driver = "mlx5_core"
offset = 128
netdev = "ens1f0v{index}"

# VF 128's routing id, behind another port.
[[function]]
address = "0000:3c:00.0"
vendor = "8086"
device = "1533"
class = "020000"
driver = "igb"
netdevs = ["eno1"]

[[function]]
address = "0000:5e:00.0"
vendor = "15b3"
device = "1017"
class = "020000"
driver = "mlx5_core"
netdevs = ["ens2f0"]
total_vfs = 8

[function.vfs]
count = 0
device = "1018"
driver = "mlx5_core"
offset = 0

# A sibling function without SR-IOV, where an offset of 0 would put VF 1.
[[function]]
address = "0000:5e:00.1"
vendor = "8086"
device = "1533"
class = "020000"
driver = "igb"
netdevs = ["eno2"]
"#;
    let dir = tempfile::tempdir().unwrap();
    write_tree(&Fixture::from_toml(NODE, "test").unwrap(), dir.path()).unwrap();
    let inv = discover(&SysfsRoot::new(dir.path())).unwrap();
    for plain in ["0000:3c:00.0", "0000:5e:00.1"] {
        let nic = inv
            .get(plain)
            .unwrap_or_else(|| panic!("{plain} was left out"));
        assert_eq!((nic.kind, nic.pf_id.as_deref()), (DeviceKind::Pf, None));
    }
    let pf = inv.get("0000:3b:00.0").unwrap();
    assert_eq!(pf.vfs.len(), 2);
}

/// A netdev name is bytes to the kernel. One that is not UTF-8 used to be dropped: the PF then had
/// no netdev, its VFs no PF name, and nothing tied the PF to the default route it may carry, so
/// the node's uplink could be pooled. It is kept, with a lossy name that says so, and its
/// attributes are read under its real name.
#[test]
fn a_netdev_whose_name_is_not_utf8_is_kept_and_marked_lossy() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let (_dir, root) = small_node();
    let pf = fs::canonicalize(device_dir(&root, "0000:3b:00.0")).unwrap();
    let raw = OsStr::from_bytes(b"ens\xff0");
    fs::rename(pf.join("net/ens1f0"), pf.join("net").join(raw)).unwrap();

    let inv = discover(&SysfsRoot::new(&root)).unwrap();
    let pf = inv.get("0000:3b:00.0").unwrap();
    assert_eq!(pf.netdevs.len(), 1, "{pf:?}");
    let netdev = &pf.netdevs[0];
    assert_eq!(netdev.name, "ens\u{fffd}0");
    assert!(netdev.name_is_lossy());
    assert_eq!(pf.netdev.as_deref(), Some("ens\u{fffd}0"));
    // Read under the name the kernel gave it, not the lossy one.
    assert_eq!(netdev.mtu, Some(1500));
    assert_eq!(netdev.operstate.as_deref(), Some("up"));
    let vf = inv.get("0000:3b:00.2").unwrap();
    assert_eq!(vf.pf_name.as_deref(), Some("ens\u{fffd}0"));
    assert!(!vf.netdevs[0].name_is_lossy());
}

/// The kernel names the links `virtfn<N>` with `N` in plain decimal. Other entries (`virtfn01`,
/// `virtfn+1`, only in a hand-built or damaged tree) used to parse as index 1 and then read the
/// link `virtfn1`, listing VF 1 several times; a link that does not lead to a PCI function was
/// taken as a VF's address.
#[test]
fn only_canonical_virtfn_links_to_pci_functions_are_vfs() {
    let (_dir, root) = small_node();
    let pf = device_dir(&root, "0000:3b:00.0");
    let vf3 = fs::read_link(pf.join("virtfn3")).unwrap();
    std::os::unix::fs::symlink(&vf3, pf.join("virtfn01")).unwrap();
    std::os::unix::fs::symlink(&vf3, pf.join("virtfn+1")).unwrap();
    fs::create_dir_all(root.join("devices/garbage")).unwrap();
    fs::remove_file(pf.join("virtfn2")).unwrap();
    std::os::unix::fs::symlink("../../garbage", pf.join("virtfn2")).unwrap();

    let inv = discover(&SysfsRoot::new(&root)).unwrap();
    let pf = inv.get("0000:3b:00.0").unwrap();
    let vfs: Vec<(u32, &str)> = pf.vfs.iter().map(|v| (v.index, v.id.as_str())).collect();
    assert_eq!(
        vfs,
        [
            (0, "0000:3b:00.2"),
            (1, "0000:3b:00.3"),
            (3, "0000:3b:00.5")
        ]
    );
    assert_eq!(inv.get("0000:3b:00.4").unwrap().vf_index, None);
    assert_eq!(inv.get("0000:3b:00.5").unwrap().vf_index, Some(3));
}
