//! ADD/DEL logic against the recording fake netlink and fake IPAM: which VF settings are applied
//! and in what order, what DEL restores, and that a failure at any step leaves nothing behind.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use vfpool_cni::env::CniEnv;
use vfpool_cni::error::{CniError, code};
use vfpool_cni::ipam::FakeIpam;
use vfpool_cni::log::Logger;
use vfpool_cni::mac::MacAddr;
use vfpool_cni::netconf::{VfLinkState, VlanProto};
use vfpool_cni::netlink::fake::{FakeLink, FakeNetlink};
use vfpool_cni::netlink::{Netlink, NsId, VfState};
use vfpool_cni::plugin::{DEL_ATTEMPTS, Deps, run};

const PF: &str = "pf0";
const VF_NETDEV: &str = "pf0v1";
const VF_PCI: &str = "0000:3b:00.2";
const VF_MAC: MacAddr = MacAddr([0x02, 0xaa, 0, 0, 0, 0x01]);
const POD: &str = "/run/netns/fakepod";

struct World {
    dir: tempfile::TempDir,
    netlink: FakeNetlink,
    ipam: FakeIpam,
    log: Logger,
}

fn sysfs_fixture(vf_driver: &str, vf_netdev: bool) -> String {
    format!(
        r#"
[[function]]
address = "0000:3b:00.0"
vendor = "15b3"
device = "1017"
class = "020000"
driver = "mlx5_core"
netdevs = ["{PF}"]
total_vfs = 4
[function.vfs]
count = 2
device = "1018"
driver = "{vf_driver}"
{}
"#,
        if vf_netdev {
            format!("netdev = \"{PF}v{{index}}\"")
        } else {
            String::new()
        }
    )
}

impl World {
    fn new() -> World {
        Self::with_sysfs(&sysfs_fixture("mlx5_core", true), Some(4))
    }

    fn with_sysfs(fixture: &str, vfs: Option<u32>) -> World {
        let dir = tempfile::tempdir().unwrap();
        let fixture = vfpool_sysfs::sim::Fixture::from_toml(fixture, "test").unwrap();
        vfpool_sysfs::sim::write_tree(&fixture, &dir.path().join("sys")).unwrap();
        let mut netlink = FakeNetlink::new();
        netlink.add_pf(PF, vfs);
        netlink.add_link(NsId::HOST, VF_NETDEV, VF_MAC, 1500);
        netlink.add_netns(Path::new(POD));
        World {
            dir,
            netlink,
            ipam: FakeIpam {
                add_result: json!({
                    "cniVersion": "1.0.0",
                    "ips": [{"address": "10.1.0.5/24", "gateway": "10.1.0.1"}],
                    "routes": [{"dst": "0.0.0.0/0"}]
                })
                .to_string(),
                ..FakeIpam::default()
            },
            log: Logger::capture(),
        }
    }

    fn env(&self, command: &str, netns: &str) -> CniEnv {
        let mut map = HashMap::from([
            ("CNI_COMMAND", command.to_owned()),
            ("CNI_CONTAINERID", "ctr1".to_owned()),
            ("CNI_NETNS", netns.to_owned()),
            ("CNI_IFNAME", "net1".to_owned()),
            ("CNI_PATH", "/opt/cni/bin".to_owned()),
            (
                "VFPOOL_SYSFS_ROOT",
                self.dir.path().join("sys").display().to_string(),
            ),
            (
                "VFPOOL_CNI_STATE_DIR",
                self.state_dir().display().to_string(),
            ),
        ]);
        map.retain(|_, v| !v.is_empty());
        CniEnv::from_lookup(|k| map.get(k).cloned()).unwrap()
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn run(
        &mut self,
        command: &str,
        netns: &str,
        conf: &Value,
    ) -> Result<Option<String>, CniError> {
        let env = self.env(command, netns);
        let mut deps = Deps {
            netlink: &mut self.netlink,
            ipam: &mut self.ipam,
            log: &mut self.log,
            lock_timeout: Duration::from_millis(200),
        };
        run(&env, conf.to_string().as_bytes(), &mut deps)
    }

    fn state_files(&self) -> Vec<String> {
        let mut out = Vec::new();
        for sub in [self.state_dir(), self.state_dir().join("pci")] {
            if let Ok(entries) = std::fs::read_dir(sub) {
                for e in entries.flatten() {
                    if e.file_type().unwrap().is_file() {
                        out.push(e.file_name().to_string_lossy().into_owned());
                    }
                }
            }
        }
        out
    }

    fn pod(&self) -> NsId {
        NsId(self.netlink.paths[Path::new(POD)])
    }

    /// The host looks exactly as before ADD: VF netdev home under its name, MAC and MTU, down;
    /// VF settings original; nothing in the pod; no temp-netns leak; no IPAM allocation left.
    /// The VF's `net/` directory in the simulated sysfs.
    fn vf_net_dir(&self) -> PathBuf {
        self.dir
            .path()
            .join("sys/bus/pci/devices")
            .join(VF_PCI)
            .join("net")
    }

    /// The pod's netns dies without a DEL: the kernel returns the VF's netdev to the host under
    /// its pod name (net1), and sysfs shows it so.
    fn pod_netns_dies(&mut self) {
        self.netlink.destroy_netns(Path::new(POD));
        let net = self.vf_net_dir();
        std::fs::rename(net.join(VF_NETDEV), net.join("net1")).unwrap();
    }

    /// Renames of the VF's netdev in the host show in the simulated sysfs, as the kernel's do.
    fn renames_show_in_sysfs(&mut self) {
        let index = self.netlink.find(NsId::HOST, VF_NETDEV).unwrap().index;
        let net = self.vf_net_dir();
        self.netlink.sysfs_net.insert(index, net);
    }

    /// Attaches the VF to the pod with settings of its own (VLAN 5, MTU 9000, a MAC), then the
    /// pod's netns dies with the netdev not back yet (see [`World::pod_netns_dies_netdev_pending`]).
    fn attached_then_netdev_pending(&mut self) -> FakeLink {
        self.renames_show_in_sysfs();
        self.run(
            "ADD",
            POD,
            &conf(json!({"vlan": 5, "mtu": 9000, "mac": "02:00:00:00:00:42"})),
        )
        .unwrap();
        self.pod_netns_dies_netdev_pending()
    }

    /// The pod's netns dies, but the kernel has not handed the VF's netdev back to the host yet
    /// (it does so asynchronously, and not while something holds the netns): it is in no
    /// namespace the plugin sees, and not in sysfs. [`World::netdev_comes_back`] ends that.
    fn pod_netns_dies_netdev_pending(&mut self) -> FakeLink {
        self.netlink.destroy_netns(Path::new(POD));
        let host = self.netlink.namespaces.get_mut(&NsId::HOST.0).unwrap();
        let at = host.links.iter().position(|l| l.name == "net1").unwrap();
        let link = host.links.remove(at);
        std::fs::rename(
            self.vf_net_dir().join(VF_NETDEV),
            self.dir.path().join("pending"),
        )
        .unwrap();
        link
    }

    /// The pending netdev arrives in the host under the pod's interface name, as the kernel
    /// returns it.
    fn netdev_comes_back(&mut self, link: FakeLink) {
        std::fs::rename(
            self.dir.path().join("pending"),
            self.vf_net_dir().join("net1"),
        )
        .unwrap();
        let index = link.index;
        self.netlink
            .namespaces
            .get_mut(&NsId::HOST.0)
            .unwrap()
            .links
            .push(link);
        self.netlink.sysfs_net.insert(index, self.vf_net_dir());
    }

    fn assert_pristine(&self, orig_vf: VfState) {
        let link = self.netlink.find(NsId::HOST, VF_NETDEV).unwrap_or_else(|| {
            panic!(
                "VF netdev not back in the host; calls: {:#?}",
                self.netlink.calls
            )
        });
        assert_eq!(link.mac, VF_MAC);
        assert_eq!(link.mtu, 1500);
        assert!(!link.up);
        assert!(
            link.altnames.is_empty(),
            "stale altnames {:?}",
            link.altnames
        );
        assert_eq!(
            self.netlink.vf(PF, 1),
            Some(orig_vf),
            "VF settings not restored"
        );
        assert!(
            self.netlink.namespaces[&self.pod().0].links.is_empty(),
            "left in the pod"
        );
        assert!(
            self.netlink.leaked_in_temp.is_empty(),
            "died in a temp netns: {:?}",
            self.netlink.leaked_in_temp
        );
        let adds = self.ipam.calls.iter().filter(|c| c.0 == "ADD").count();
        let dels = self.ipam.calls.iter().filter(|c| c.0 == "DEL").count();
        assert!(dels >= adds, "IPAM ADD without DEL: {:?}", self.ipam.calls);
        assert!(
            self.state_files().is_empty(),
            "state left: {:?}",
            self.state_files()
        );
    }
}

fn conf(extra: Value) -> Value {
    let mut c = json!({
        "cniVersion": "1.0.0",
        "name": "net-a",
        "type": "sriov",
        "deviceID": VF_PCI,
        "ipam": {"type": "host-local"}
    });
    if let (Value::Object(c), Value::Object(e)) = (&mut c, extra) {
        c.extend(e);
    }
    c
}

fn all_settings() -> Value {
    json!({
        "vlan": 100, "vlanQoS": 3, "vlanProto": "802.1ad",
        "mac": "02:00:00:00:00:99",
        "min_tx_rate": 10, "max_tx_rate": 100,
        "spoofchk": "off", "trust": "on", "link_state": "enable"
    })
}

#[test]
fn add_applies_only_requested_settings_in_upstream_order_and_del_restores_them() {
    let mut w = World::new();
    let orig = w.netlink.vf(PF, 1).unwrap();
    let out = w.run("ADD", POD, &conf(all_settings())).unwrap().unwrap();
    let result: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(result["interfaces"][0]["mac"], "02:00:00:00:00:99");
    // cniVersion 1.0.0 carries the MTU too (libcni's types100; Multus copies it).
    assert_eq!(result["interfaces"][0]["mtu"], 1500);
    assert_eq!(result["ips"][0]["interface"], 0);

    let sets = w.netlink.calls_starting("set_vf");
    assert_eq!(
        sets,
        vec![
            "set_vf pf0 1 vlan 100 qos 3 proto 802.1ad",
            "set_vf pf0 1 mac 02:00:00:00:00:99",
            "set_vf pf0 1 min_tx_rate 10 max_tx_rate 100",
            "set_vf pf0 1 spoofchk off",
            "set_vf pf0 1 trust on",
            "set_vf pf0 1 link_state enable",
        ]
    );
    let now = w.netlink.vf(PF, 1).unwrap();
    assert_eq!((now.vlan, now.qos, now.proto), (100, 3, VlanProto::Dot1Ad));
    assert_eq!(now.link_state, VfLinkState::Enable);
    let pod = w.pod();
    let link = w.netlink.find(pod, "net1").unwrap();
    assert!(link.up);
    assert_eq!(link.mac.to_string(), "02:00:00:00:00:99");
    assert_eq!(link.addrs[0].to_string(), "10.1.0.5/24");
    assert_eq!(link.routes, vec!["0.0.0.0/0 via 10.1.0.1"]);
    // One move, host -> pod, renamed by the kernel inside the pod: nothing is renamed or
    // changed in the host (#321), and no temporary netns is needed.
    let moves = w.netlink.calls_starting("move_link");
    assert_eq!(moves, vec![format!("move_link 0 pf0v1 {} net1", pod.0)]);
    assert!(w.netlink.calls_starting("rename 0 ").is_empty());
    assert!(
        w.netlink.calls_starting("set_mac 0 ").is_empty(),
        "host-side MAC change"
    );

    w.netlink.calls.clear();
    w.run("DEL", POD, &conf(all_settings())).unwrap();
    let restores = w.netlink.calls_starting("set_vf");
    assert_eq!(
        restores,
        vec![
            "set_vf pf0 1 vlan 0 qos 0 proto 802.1q",
            "set_vf pf0 1 spoofchk on",
            "set_vf pf0 1 mac 00:00:00:00:00:00",
            "set_vf pf0 1 trust off",
            "set_vf pf0 1 min_tx_rate 0 max_tx_rate 0",
            "set_vf pf0 1 link_state auto",
        ]
    );
    w.assert_pristine(orig);
}

#[test]
fn absent_vlan_is_left_untouched_and_no_settings_means_no_pf_calls() {
    let mut w = World::new();
    w.run("ADD", POD, &conf(json!({}))).unwrap();
    assert!(
        w.netlink.calls_starting("set_vf").is_empty(),
        "{:?}",
        w.netlink.calls
    );
    w.run("DEL", POD, &conf(json!({}))).unwrap();
    assert!(
        w.netlink.calls_starting("set_vf").is_empty(),
        "{:?}",
        w.netlink.calls
    );
}

/// The netdev name sysfs gives for the VF can belong to another device by the time ADD looks it
/// up (udev renames new netdevs, and the old name goes to the next one): ADD used to move that
/// other device into the pod. It now refuses with "try again later" and touches nothing; with the
/// name back on the VF's netdev the same ADD goes through.
#[test]
fn a_netdev_name_that_now_belongs_to_another_device_is_not_moved() {
    let mut w = World::new();
    w.netlink.set_parent(NsId::HOST, VF_NETDEV, "0000:3b:00.3");
    let err = w.run("ADD", POD, &conf(json!({}))).unwrap_err();
    assert_eq!(err.code, code::TRY_AGAIN_LATER, "{}", err.msg);
    assert!(
        err.msg.contains(VF_NETDEV) && err.msg.contains("0000:3b:00.3"),
        "{}",
        err.msg
    );
    assert!(w.netlink.calls_starting("move_link").is_empty());
    assert!(w.netlink.find(NsId::HOST, VF_NETDEV).is_some());
    assert!(w.state_files().is_empty(), "{:?}", w.state_files());

    w.netlink.set_parent(NsId::HOST, VF_NETDEV, VF_PCI);
    w.run("ADD", POD, &conf(json!({}))).unwrap();
    assert!(w.netlink.find(w.pod(), "net1").is_some());
}

/// A refused NetConf is said in the plugin's log too, with the invocation's context: the log held
/// nothing for the commonest mistake (the error went to the runtime only).
#[test]
fn a_refused_netconf_is_logged() {
    let mut w = World::new();
    let err = w.run("ADD", POD, &conf(json!({"vlan": 5000}))).unwrap_err();
    assert_eq!(err.code, code::INVALID_CONFIG, "{}", err.msg);
    let lines = w.log.captured.clone().unwrap();
    assert!(
        lines.iter().any(|l| l.contains("[error]")
            && l.contains("ADD refused the network configuration")
            && l.contains("vlan")
            && l.contains("containerID=ctr1")),
        "{lines:?}"
    );

    // The pod, when the runtime names it in CNI_ARGS, is in every line's context.
    let mut env = w.env("ADD", POD);
    env.args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=team-a;K8S_POD_NAME=dpdk-0".to_owned();
    let mut deps = Deps {
        netlink: &mut w.netlink,
        ipam: &mut w.ipam,
        log: &mut w.log,
        lock_timeout: Duration::from_millis(200),
    };
    let bad = conf(json!({"vlan": 5000})).to_string();
    run(&env, bad.as_bytes(), &mut deps).unwrap_err();
    let lines = w.log.captured.clone().unwrap();
    assert!(
        lines
            .last()
            .is_some_and(|l| l.contains("pod=team-a/dpdk-0")),
        "{lines:?}"
    );
}

/// The other way round: the VF's netdev renamed away from the name sysfs gave, and nothing has
/// that name now. A passing race, so "try again later" (it was a hard netlink error).
#[test]
fn a_netdev_name_gone_during_add_is_worth_another_try() {
    let mut w = World::new();
    w.netlink.rename(NsId::HOST, VF_NETDEV, "renamed0").unwrap();
    let err = w.run("ADD", POD, &conf(json!({}))).unwrap_err();
    assert_eq!(err.code, code::TRY_AGAIN_LATER, "{}", err.msg);
    assert!(
        err.msg.contains(VF_NETDEV) && err.msg.contains("is gone"),
        "{}",
        err.msg
    );
    assert!(w.netlink.calls_starting("move_link").is_empty());
    assert!(w.state_files().is_empty(), "{:?}", w.state_files());
}

#[test]
fn a_pf_without_vf_info_is_fine_without_settings_and_refuses_them_cleanly() {
    let mut w = World::with_sysfs(&sysfs_fixture("mlx5_core", true), None);
    let err = w
        .run("ADD", POD, &conf(json!({"vlan": 10, "trust": "on"})))
        .unwrap_err();
    assert_eq!(err.code, code::VF_SETTING_UNSUPPORTED);
    assert!(err.msg.contains("vlan, trust"), "{}", err.msg);
    assert!(w.netlink.calls_starting("move_link").is_empty());
    assert!(w.state_files().is_empty());

    w.run("ADD", POD, &conf(json!({}))).unwrap();
    assert!(w.netlink.find(w.pod(), "net1").is_some());
    w.run("DEL", POD, &conf(json!({}))).unwrap();
    assert!(w.netlink.find(NsId::HOST, VF_NETDEV).is_some());
    assert!(w.state_files().is_empty());
}

/// Every step of ADD that can fail, as (fake call prefix, nth matching call). The failure must be
/// rolled back completely: this is the fix for sriov-cni #119.
#[test]
fn a_failure_at_any_add_step_rolls_everything_back() {
    let steps: &[(&str, usize)] = &[
        ("set_vf pf0 1 vlan", 0),
        ("set_vf pf0 1 mac", 0),
        ("set_vf pf0 1 min_tx_rate", 0),
        ("set_vf pf0 1 spoofchk", 0),
        ("set_vf pf0 1 trust", 0),
        ("set_vf pf0 1 link_state", 0),
        ("move_link", 0),
        ("set_mac 1", 0),
        ("set_mtu 1", 0),
        ("ipam", 0),
        ("add_address", 0),
        ("set_up 1 net1 true", 0),
        ("add_route", 0),
    ];
    // host-local starts before everything else (it overlaps the netns move); dhcp starts once
    // the interface is in the pod and up. Either way a started IPAM ADD must be released after
    // it finished, and one that never started must not be.
    for plugin in ["host-local", "dhcp"] {
        for (step, nth) in steps {
            let mut w = World::new();
            w.netlink.altname_on_rename = true;
            let orig = w.netlink.vf(PF, 1).unwrap();
            if *step == "ipam" {
                w.ipam.fail.push("ADD");
            } else {
                w.netlink.fail_nth(step, nix::libc::EOPNOTSUPP, *nth);
            }
            let mut c = conf(all_settings());
            c["mtu"] = json!(9000);
            c["ipam"] = json!({"type": plugin});
            let err = w.run("ADD", POD, &c).expect_err(step);
            assert!(err.code >= 100, "{plugin} {step}: {err}");
            w.assert_pristine(orig);
            let started = plugin == "host-local"
                || ["ipam", "add_address", "add_route"]
                    .iter()
                    .any(|s| step.starts_with(s));
            let calls: Vec<&str> = w.ipam.calls.iter().map(|c| c.0.as_str()).collect();
            let expected: &[&str] = if started { &["ADD", "DEL"] } else { &[] };
            assert_eq!(calls, expected, "{plugin} {step}");
        }
    }
}

/// With iavf under i40e or ice, an untrusted VF's netdev takes no MAC but the admin MAC the PF
/// set. ADD sets both to the pod's MAC; a rollback that returned the netdev first could not give
/// it its own MAC back and left it in the failing pod. The PF side is undone first now, as DEL
/// does.
#[test]
fn a_rollback_undoes_the_pf_side_first_so_the_vf_takes_its_mac_back() {
    let mut w = World::new();
    let index = w.netlink.find(NsId::HOST, VF_NETDEV).unwrap().index;
    w.netlink
        .admin_mac_enforced
        .insert(index, (PF.to_string(), 1));
    let orig = w.netlink.vf(PF, 1).unwrap();
    w.netlink.fail("add_route", nix::libc::ENETUNREACH);
    let err = w
        .run("ADD", POD, &conf(json!({"mac": "02:00:00:00:00:99"})))
        .unwrap_err();
    assert!(!err.msg.contains("rolling back also failed"), "{}", err.msg);
    w.assert_pristine(orig);
    // The model bites: the netdev cannot take another MAC while the admin MAC is set.
    w.netlink
        .set_vf_for_test(PF, 1, 0, false, MacAddr([2, 0, 0, 0, 0, 0x99]));
    assert!(
        vfpool_cni::netlink::Netlink::set_mac(&mut w.netlink, NsId::HOST, VF_NETDEV, VF_MAC)
            .is_err()
    );
}

#[test]
fn a_failed_rollback_keeps_the_cache_so_del_can_finish() {
    let mut w = World::new();
    let orig = w.netlink.vf(PF, 1).unwrap();
    w.netlink.fail("add_route", nix::libc::ENETUNREACH);
    // The rollback's move back out of the pod fails too (the move after the forward one).
    w.netlink.fail_nth("move_link", nix::libc::EBUSY, 1);
    let err = w.run("ADD", POD, &conf(json!({"vlan": 5}))).unwrap_err();
    assert!(err.msg.contains("rolling back also failed"), "{}", err.msg);
    assert!(
        !w.state_files().is_empty(),
        "the cache must survive for DEL"
    );
    w.netlink.failures.clear();
    w.ipam.fail.clear();
    w.run("DEL", POD, &conf(json!({"vlan": 5}))).unwrap();
    w.assert_pristine(orig);
}

#[test]
fn stale_altnames_are_dropped_both_ways() {
    let mut w = World::new();
    w.netlink.altname_on_rename = true;
    w.run("ADD", POD, &conf(json!({}))).unwrap();
    let pod = w.pod();
    assert!(w.netlink.find(pod, "net1").unwrap().altnames.is_empty());
    assert_eq!(w.netlink.calls_starting("del_altname").len(), 1);
    w.run("DEL", POD, &conf(json!({}))).unwrap();
    assert!(
        w.netlink
            .find(NsId::HOST, VF_NETDEV)
            .unwrap()
            .altnames
            .is_empty()
    );
}

/// Kernels before 6.2 (Ubuntu 22.04, RHEL 8/9) refuse to rename an up device with EBUSY, and
/// the fake refuses likewise: DEL and an ADD rollback must set the pod interface down before
/// renaming it inside the pod, as sriov-cni's ReleaseVF does.
#[test]
fn the_pod_interface_is_set_down_before_it_is_renamed_on_del_and_rollback() {
    let mut w = World::new();
    let orig = w.netlink.vf(PF, 1).unwrap();
    // No MAC to restore: nothing else asks for the link to go down.
    w.run("ADD", POD, &conf(json!({}))).unwrap();
    let pod = w.pod();
    assert!(w.netlink.find(pod, "net1").unwrap().up);
    w.netlink.calls.clear();
    w.run("DEL", POD, &conf(json!({}))).unwrap();
    let down = format!("set_up {} net1 false", pod.0);
    let rename = format!("rename {} net1 {VF_NETDEV}", pod.0);
    let order: Vec<&str> = w
        .netlink
        .calls
        .iter()
        .map(String::as_str)
        .filter(|c| *c == down || *c == rename)
        .collect();
    assert_eq!(order, vec![down.as_str(), rename.as_str()]);
    w.assert_pristine(orig);

    // ADD fails after the link came up: the rollback renames it too.
    let mut w = World::new();
    w.netlink.fail("add_route", nix::libc::ENETUNREACH);
    let err = w.run("ADD", POD, &conf(json!({}))).unwrap_err();
    assert!(!err.msg.contains("rolling back also failed"), "{}", err.msg);
    w.assert_pristine(orig);
}

/// A route without `gw` takes the first gateway of its family among the IPs, skipping IPs
/// without one, as upstream's ConfigureIface.
#[test]
fn a_route_without_gw_takes_the_first_gateway_of_its_family() {
    let mut w = World::new();
    w.ipam.add_result = json!({
        "cniVersion": "1.0.0",
        "ips": [
            {"address": "10.1.0.5/24"},
            {"address": "fd00::5/64", "gateway": "fd00::1"},
            {"address": "10.2.0.5/24", "gateway": "10.2.0.1"},
            {"address": "10.3.0.5/24", "gateway": "10.3.0.1"}
        ],
        "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}, {"dst": "10.9.0.0/16", "gw": "10.1.0.9"}]
    })
    .to_string();
    w.run("ADD", POD, &conf(json!({}))).unwrap();
    let pod = w.pod();
    assert_eq!(
        w.netlink.find(pod, "net1").unwrap().routes,
        vec![
            "0.0.0.0/0 via 10.2.0.1",
            "::/0 via fd00::1",
            "10.9.0.0/16 via 10.1.0.9"
        ]
    );
}

/// A pod netns with IPv6 disabled by default (the moved interface inherits it): IPv6 is
/// enabled on lo and the interface before the first IPv6 address, as upstream's ConfigureIface.
#[test]
fn ipv6_is_enabled_in_the_pod_before_the_first_ipv6_address() {
    let mut w = World::new();
    w.ipam.add_result = json!({
        "cniVersion": "1.0.0",
        "ips": [
            {"address": "10.1.0.5/24", "gateway": "10.1.0.1"},
            {"address": "fd00::5/64", "gateway": "fd00::1"},
            {"address": "fd01::5/64"}
        ]
    })
    .to_string();
    let pod = w.pod();
    let sysctls = &mut w.netlink.namespaces.get_mut(&pod.0).unwrap().sysctls;
    for iface in ["lo", "net1"] {
        sysctls.insert(format!("net/ipv6/conf/{iface}/disable_ipv6"), "1".into());
    }
    w.run("ADD", POD, &conf(json!({}))).unwrap();
    let link = w.netlink.find(pod, "net1").unwrap();
    assert_eq!(link.addrs.len(), 3, "{:?}", link.addrs);
    let sysctls = &w.netlink.namespaces[&pod.0].sysctls;
    for iface in ["lo", "net1"] {
        assert_eq!(sysctls[&format!("net/ipv6/conf/{iface}/disable_ipv6")], "0");
    }
    // Once, before the first IPv6 address.
    let enabling = w.netlink.calls_starting(&format!(
        "set_sysctls {} net/ipv6/conf/lo/disable_ipv6=0",
        pod.0
    ));
    assert_eq!(enabling.len(), 1);
    let pos = |prefix: &str| w.netlink.calls.iter().position(|c| c.starts_with(prefix));
    assert!(pos(enabling[0]) < pos(&format!("add_address {} net1 fd00::5", pod.0)));
    assert!(pos(&format!("add_address {} net1 10.1.0.5", pod.0)) < pos(enabling[0]));
}

/// A bad `logLevel` or a relative `logFile` does not fail ADD (sriov-cni falls back to info and
/// stderr); the warning says which field to fix.
#[test]
fn a_bad_log_level_or_log_file_does_not_fail_add() {
    let mut w = World::new();
    w.run(
        "ADD",
        POD,
        &conf(json!({"logLevel": "loud", "logFile": "relative.log"})),
    )
    .unwrap();
    let lines = w.log.captured.as_ref().unwrap();
    for field in ["logLevel \"loud\"", "logFile \"relative.log\""] {
        assert!(
            lines
                .iter()
                .any(|l| l.contains("[warning]") && l.contains(field)),
            "{field}: {lines:#?}"
        );
    }
}

/// A VF driver that applies the netdev MAC late (iavf): the MAC is read back and set again,
/// 20 × 100 ms as sriov-cni's SetVFEffectiveMAC, on ADD and when DEL restores it.
#[test]
fn the_pod_mac_is_set_again_until_the_driver_applies_it() {
    let mut w = World::new();
    let orig = w.netlink.vf(PF, 1).unwrap();
    let mac = "02:00:00:00:00:77";
    w.netlink.mac_writes_lost = 2;
    let out = w
        .run("ADD", POD, &conf(json!({"mac": mac})))
        .unwrap()
        .unwrap();
    let pod = w.pod();
    assert_eq!(w.netlink.find(pod, "net1").unwrap().mac.to_string(), mac);
    let result: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(result["interfaces"][0]["mac"], mac);
    assert_eq!(
        w.netlink
            .calls_starting(&format!("set_mac {} net1 {mac}", pod.0))
            .len(),
        3
    );
    w.netlink.mac_writes_lost = 1;
    w.run("DEL", POD, &conf(json!({"mac": mac}))).unwrap();
    w.assert_pristine(orig);
}

#[test]
fn del_is_idempotent_and_works_without_netns_or_cache() {
    let mut w = World::new();
    let orig = w.netlink.vf(PF, 1).unwrap();
    // Twice, and with an empty CNI_NETNS: the cache's netns is used.
    w.run("ADD", POD, &conf(json!({"vlan": 7}))).unwrap();
    w.run("DEL", "", &conf(json!({"vlan": 7}))).unwrap();
    w.assert_pristine(orig);
    w.run("DEL", "", &conf(json!({"vlan": 7}))).unwrap();
    w.run("DEL", POD, &conf(json!({"vlan": 7}))).unwrap();

    // No cache at all, no deviceID: IPAM is still released.
    let mut c = conf(json!({}));
    c.as_object_mut().unwrap().remove("deviceID");
    w.ipam.calls.clear();
    w.run("DEL", POD, &c).unwrap();
    assert_eq!(
        w.ipam.calls,
        vec![("DEL".to_owned(), "host-local".to_owned())]
    );
}

/// DEL releases the address through the IPAM plugin that allocated it, as the cache records it
/// (sriov-cni reads `ipam.type` from its cache): a DEL whose configuration lost its `ipam` (a
/// NetworkAttachmentDefinition edited since the pod started) skipped IPAM DEL and then deleted the
/// cache, and the address leaked. Without a cache, the request's plugin is used, as before.
#[test]
fn del_releases_through_the_cached_ipam_plugin() {
    let mut w = World::new();
    w.run("ADD", POD, &conf(json!({}))).unwrap();
    let mut edited = conf(json!({}));
    edited.as_object_mut().unwrap().remove("ipam");
    w.ipam.calls.clear();
    w.ipam.stdins.clear();
    w.run("DEL", POD, &edited).unwrap();
    assert_eq!(
        w.ipam.calls,
        vec![("DEL".to_owned(), "host-local".to_owned())]
    );
    // The plugin reads its own section from stdin: the cached one, in the request.
    let sent: Value = serde_json::from_slice(&w.ipam.stdins[0]).unwrap();
    assert_eq!(sent["ipam"], json!({"type": "host-local"}), "{sent}");
    assert_eq!(sent["name"], "net-a", "{sent}");
    assert!(w.state_files().is_empty());

    // A plugin named differently now: the one that allocated still releases.
    w.run(
        "ADD",
        POD,
        &conf(json!({"ipam": {"type": "host-local", "subnet": "10.1.0.0/24"}})),
    )
    .unwrap();
    w.ipam.calls.clear();
    w.ipam.stdins.clear();
    w.run(
        "DEL",
        POD,
        &conf(json!({"IPAM": {"type": "whereabouts", "range": "10.2.0.0/24"}})),
    )
    .unwrap();
    assert_eq!(
        w.ipam.calls,
        vec![("DEL".to_owned(), "host-local".to_owned())]
    );
    let sent: Value = serde_json::from_slice(&w.ipam.stdins[0]).unwrap();
    assert_eq!(
        sent["ipam"],
        json!({"type": "host-local", "subnet": "10.1.0.0/24"}),
        "{sent}"
    );
    assert!(sent.get("IPAM").is_none(), "{sent}");
    // No cache: the request's.
    w.ipam.calls.clear();
    w.run("DEL", POD, &conf(json!({"ipam": {"type": "whereabouts"}})))
        .unwrap();
    assert_eq!(
        w.ipam.calls,
        vec![("DEL".to_owned(), "whereabouts".to_owned())]
    );
    // A cached type that is a path (the cache edited on the node) is never run: the request's
    // configuration had its plugin name checked, the cache's had not.
    w.run("ADD", POD, &conf(json!({}))).unwrap();
    let cache_file = w.state_dir().join("ctr1-net1");
    let mut cache: Value = serde_json::from_slice(&std::fs::read(&cache_file).unwrap()).unwrap();
    cache["ipam"]["type"] = json!("../../bin/sh");
    std::fs::write(&cache_file, cache.to_string()).unwrap();
    w.ipam.calls.clear();
    w.run("DEL", POD, &conf(json!({}))).unwrap();
    assert!(w.ipam.calls.is_empty(), "{:?}", w.ipam.calls);
}

/// CNI_NETNS naming the plugin's own namespace (`/proc/1/ns/net`, a runtime's mistake) was taken
/// for a pod's: the VF got the pod's settings and name in the host, and the IPAM addresses and
/// routes, a default route among them, went into the host's tables. skel refuses it with code 8;
/// so does ADD now, before anything is done, unless CNI_NETNS_OVERRIDE says it is meant.
#[test]
fn an_add_into_the_plugins_own_netns_is_refused() {
    let mut w = World::new();
    let orig = w.netlink.vf(PF, 1).unwrap();
    let host = "/proc/1/ns/net";
    w.netlink.paths.insert(PathBuf::from(host), NsId::HOST.0);
    let err = w.run("ADD", host, &conf(json!({"vlan": 7}))).unwrap_err();
    assert_eq!(err.code, code::INVALID_NETNS, "{}", err.msg);
    assert!(err.msg.contains("own network namespace"), "{}", err.msg);
    w.assert_pristine(orig);
    assert!(w.state_files().is_empty());
    assert!(w.ipam.calls.is_empty(), "{:?}", w.ipam.calls);

    let mut env = w.env("ADD", host);
    env.netns_override = true;
    let mut deps = Deps {
        netlink: &mut w.netlink,
        ipam: &mut w.ipam,
        log: &mut w.log,
        lock_timeout: Duration::from_millis(200),
    };
    let meant = run(&env, conf(json!({})).to_string().as_bytes(), &mut deps);
    assert!(
        meant.as_ref().is_ok() || meant.as_ref().is_err_and(|e| e.code != code::INVALID_NETNS),
        "{meant:?}"
    );
}

/// A DEL whose CNI_NETNS is no absolute path failed with code 4 before any clean-up, every time
/// the runtime retried it, and the VF kept the pod's settings. It cleans up from the cache now.
#[test]
fn a_del_with_a_relative_netns_cleans_up_from_the_cache() {
    let mut w = World::new();
    let orig = w.netlink.vf(PF, 1).unwrap();
    w.run("ADD", POD, &conf(json!({"vlan": 7}))).unwrap();
    w.run("DEL", "run/netns/pod1", &conf(json!({"vlan": 7})))
        .unwrap();
    w.assert_pristine(orig);
    assert!(w.state_files().is_empty());
    let logged = w.log.captured.as_ref().unwrap().join("\n");
    assert!(
        logged.contains(r#"CNI_NETNS "run/netns/pod1" is not an absolute path"#),
        "{logged}"
    );
}

#[test]
fn del_after_the_pod_netns_died_renames_the_returned_netdev() {
    // The kernel hands a physical netdev back to the host under its pod name when the netns dies
    // (#126, #349); DEL must find it and give it its name, MAC and MTU back.
    let mut w = World::new();
    let orig = w.netlink.vf(PF, 1).unwrap();
    w.run(
        "ADD",
        POD,
        &conf(json!({"vlan": 9, "mtu": 9000, "mac": "02:00:00:00:00:42"})),
    )
    .unwrap();
    w.pod_netns_dies();
    w.run("DEL", POD, &conf(json!({"vlan": 9}))).unwrap();
    let link = w.netlink.find(NsId::HOST, VF_NETDEV).expect("renamed back");
    assert_eq!(link.mac, VF_MAC);
    assert_eq!(link.mtu, 1500);
    assert_eq!(w.netlink.vf(PF, 1), Some(orig));
    assert!(w.state_files().is_empty());
}

/// A pod whose netns vanished before its DEL (a runtime crash) left its VLAN, trust and MAC on
/// the VF, and its netdev in the host under its pod name. The next pod's ADD took all that for
/// the VF's own state: it ran on the dead pod's VLAN with trust on, and its DEL "restored" them.
/// ADD now undoes a dead pod's attachment of the VF first; the dead pod's late DEL still finds
/// its cache (to release its IP) and leaves the VF, now the new pod's, alone.
#[test]
fn a_dead_pods_settings_are_undone_before_the_vf_is_reused() {
    let mut w = World::new();
    let orig = w.netlink.vf(PF, 1).unwrap();
    let a = conf(json!({"vlan": 5, "trust": "on", "mac": "02:00:00:00:00:42"}));
    // Pod B asks for no VF settings.
    let b = pod_b_took_the_vf_of_dead_pod_a(&mut w, &a, &conf(json!({})));
    assert_eq!(
        w.netlink.vf(PF, 1),
        Some(orig),
        "pod B runs on pod A's settings"
    );
    let in_b = w.netlink.find(b, "net1").expect("the VF in pod B");
    assert_eq!(in_b.mac, VF_MAC);
    let cache: Value =
        serde_json::from_slice(&std::fs::read(w.state_dir().join("ctr2-net1")).unwrap()).unwrap();
    assert_eq!(cache["OrigVfState"]["HostIFName"], VF_NETDEV, "{cache:#}");
    assert_eq!(cache["OrigVfState"]["Vlan"], 0, "{cache:#}");

    // Undone once: pod A's cache says so, for its own late DEL and any later reuse.
    let a_cache: Value =
        serde_json::from_slice(&std::fs::read(w.state_dir().join("ctr1-net1")).unwrap()).unwrap();
    assert_eq!(a_cache["vfpoolVfUndone"], true, "{a_cache:#}");
    // Pod B's DEL gives the VF back as it was before pod A.
    let b_path = "/proc/self/ns/net";
    run_as(&mut w, "DEL", "ctr2", b_path, "net1", &conf(json!({}))).unwrap();
    assert!(w.netlink.find(b, "net1").is_none());
    assert_eq!(w.netlink.vf(PF, 1), Some(orig));
    let home = w
        .netlink
        .find(NsId::HOST, VF_NETDEV)
        .expect("home under its name");
    assert_eq!(home.mac, VF_MAC);
    // The VF is set up by hand while free; pod A's late DEL then forgets its cache and does not
    // restore its old state over that.
    w.netlink.set_vf_for_test(PF, 1, 42, false, MacAddr::ZERO);
    w.run("DEL", POD, &a).unwrap();
    assert_eq!(
        w.netlink.vf(PF, 1).unwrap().vlan,
        42,
        "{:?}",
        w.netlink.calls
    );
    assert!(!w.state_dir().join("ctr1-net1").exists());
}

/// Pod A died without a DEL; pod B's first sandbox failed before sriov ran, and the runtime's DEL
/// of it (no cache, the VF's deviceID) cleared the VF's allocation marker — pod A's, naming its
/// dead netns. B's retried ADD then found no marker, undid nothing, and ran on (and recorded as
/// the VF's own state) pod A's VLAN, trust and MAC. A DEL clears only its own attachment's marker.
#[test]
fn a_del_without_a_cache_leaves_a_dead_pods_marker_for_the_next_add() {
    let mut w = World::new();
    let orig = w.netlink.vf(PF, 1).unwrap();
    w.renames_show_in_sysfs();
    let a = conf(json!({"vlan": 5, "trust": "on", "mac": "02:00:00:00:00:42"}));
    w.run("ADD", POD, &a).unwrap();
    w.pod_netns_dies();
    let pod_b = "/proc/self/ns/net";
    let b = w.netlink.add_netns(Path::new(pod_b));
    run_as(&mut w, "DEL", "ctr2", pod_b, "net1", &conf(json!({}))).unwrap();
    let state = vfpool_cni::state::StateDir::new(w.state_dir());
    assert_eq!(state.marker(VF_PCI).unwrap().as_deref(), Some(POD));
    run_as(&mut w, "ADD", "ctr2", pod_b, "net1", &conf(json!({}))).unwrap();
    assert_eq!(
        w.netlink.vf(PF, 1),
        Some(orig),
        "pod B runs on pod A's settings"
    );
    assert!(w.netlink.find(b, "net1").is_some());
    let cache: Value =
        serde_json::from_slice(&std::fs::read(w.state_dir().join("ctr2-net1")).unwrap()).unwrap();
    assert_eq!(cache["OrigVfState"]["Vlan"], 0, "{cache:#}");
    assert_eq!(cache["OrigVfState"]["Trust"], false, "{cache:#}");
}

/// A DEL right after the pod's netns died, before the kernel handed the VF's netdev back: it
/// found no netdev, reported success and forgot the attachment, and the netdev then came back
/// under the pod's name, MAC and MTU for good (the next ADD recorded `net1` as the VF's own
/// name). It is "try again later" now, with the cache kept; the retry gives the netdev back.
#[test]
fn del_before_the_netdev_is_back_is_retried() {
    let mut w = World::new();
    let orig = w.netlink.vf(PF, 1).unwrap();
    w.run(
        "ADD",
        POD,
        &conf(json!({"vlan": 9, "mtu": 9000, "mac": "02:00:00:00:00:42"})),
    )
    .unwrap();
    let pending = w.pod_netns_dies_netdev_pending();
    let err = w.run("DEL", POD, &conf(json!({"vlan": 9}))).unwrap_err();
    assert_eq!(err.code, code::TRY_AGAIN_LATER, "{}", err.msg);
    assert!(err.msg.contains("not back in the host yet"), "{}", err.msg);
    assert!(
        w.state_dir().join("ctr1-net1").exists(),
        "the cache was forgotten"
    );
    w.netdev_comes_back(pending);
    w.run("DEL", POD, &conf(json!({"vlan": 9}))).unwrap();
    let home = w.netlink.find(NsId::HOST, VF_NETDEV).expect("renamed back");
    assert_eq!((home.mac, home.mtu), (VF_MAC, 1500));
    assert_eq!(w.netlink.vf(PF, 1), Some(orig));
    assert!(w.state_files().is_empty());
}

/// The same for the next pod's ADD, which undoes a dead pod's attachment first: the netdev not
/// back yet failed the ADD "VF has no network interface" (100) with the dead pod's marker already
/// cleared, so the retry undid nothing and took the pod's name, MAC and MTU for the VF's own. It
/// is "try again later" now, with the marker kept; the retry undoes the dead pod's attachment.
#[test]
fn an_add_reusing_a_vf_whose_netdev_is_not_back_is_retried() {
    let mut w = World::new();
    let orig = w.netlink.vf(PF, 1).unwrap();
    let pending = w.attached_then_netdev_pending();
    let pod_b = "/proc/self/ns/net";
    let b = w.netlink.add_netns(Path::new(pod_b));
    let err = run_as(&mut w, "ADD", "ctr2", pod_b, "net1", &conf(json!({}))).unwrap_err();
    assert_eq!(err.code, code::TRY_AGAIN_LATER, "{}", err.msg);
    let state = vfpool_cni::state::StateDir::new(w.state_dir());
    assert_eq!(state.marker(VF_PCI).unwrap().as_deref(), Some(POD));
    w.netdev_comes_back(pending);
    run_as(&mut w, "ADD", "ctr2", pod_b, "net1", &conf(json!({}))).unwrap();
    assert_eq!(w.netlink.vf(PF, 1), Some(orig));
    let in_b = w.netlink.find(b, "net1").expect("the VF in pod B");
    assert_eq!((in_b.mac, in_b.mtu), (VF_MAC, 1500));
    let cache: Value =
        serde_json::from_slice(&std::fs::read(w.state_dir().join("ctr2-net1")).unwrap()).unwrap();
    assert_eq!(cache["OrigVfState"]["HostIFName"], VF_NETDEV, "{cache:#}");
}

/// A runtime that unmounted the pod's netns but left the file there: DEL took the file for a
/// broken netns and failed (three times, then gave up with the VF's netdev still under its pod
/// name in the host). It is a netns gone, like a missing one.
#[test]
fn del_with_a_leftover_netns_file_brings_the_vf_home() {
    let mut w = World::new();
    let orig = w.netlink.vf(PF, 1).unwrap();
    w.run("ADD", POD, &conf(json!({"vlan": 9}))).unwrap();
    w.pod_netns_dies();
    w.netlink.not_netns.push(PathBuf::from(POD));
    w.run("DEL", POD, &conf(json!({"vlan": 9}))).unwrap();
    assert!(
        w.netlink.find(NsId::HOST, VF_NETDEV).is_some(),
        "renamed back"
    );
    assert_eq!(w.netlink.vf(PF, 1), Some(orig));
    assert!(w.state_files().is_empty());
}

/// The same without a cache (lost, or written by nobody): DEL failed on the leftover file too.
#[test]
fn del_without_a_cache_and_with_a_leftover_netns_file_succeeds() {
    let mut w = World::new();
    w.run("ADD", POD, &conf(json!({}))).unwrap();
    std::fs::remove_file(w.state_dir().join("ctr1-net1")).unwrap();
    w.netlink.destroy_netns(Path::new(POD));
    w.netlink.not_netns.push(PathBuf::from(POD));
    w.run("DEL", POD, &conf(json!({}))).unwrap();
    assert!(w.state_files().is_empty(), "{:?}", w.state_files());
}

#[test]
fn a_vf_allocated_to_a_live_netns_is_refused_with_try_again_later() {
    let mut w = World::new();
    let state = vfpool_cni::state::StateDir::new(w.state_dir());
    // A real, live netns path: our own.
    state.write_marker(VF_PCI, "/proc/self/ns/net").unwrap();
    let err = w.run("ADD", POD, &conf(json!({}))).unwrap_err();
    assert_eq!(err.code, code::TRY_AGAIN_LATER, "{err}");
    assert!(err.msg.contains(VF_PCI));
    // A marker naming a dead netns is stale and cleared.
    state.write_marker(VF_PCI, "/run/netns/long-gone").unwrap();
    w.run("ADD", POD, &conf(json!({}))).unwrap();
    assert_eq!(state.marker(VF_PCI).unwrap().as_deref(), Some(POD));
}

#[test]
fn a_locked_vf_is_try_again_later() {
    let mut w = World::new();
    let state = vfpool_cni::state::StateDir::new(w.state_dir());
    let _held = state.lock(VF_PCI, Duration::from_secs(1)).unwrap();
    let err = w.run("ADD", POD, &conf(json!({}))).unwrap_err();
    assert_eq!(err.code, code::TRY_AGAIN_LATER, "{err}");
}

#[test]
fn ifname_taken_in_the_pod_is_refused_before_anything_changes() {
    let mut w = World::new();
    let pod = w.pod();
    w.netlink
        .add_link(pod, "net1", MacAddr([2, 0, 0, 0, 0, 7]), 1500);
    let err = w.run("ADD", POD, &conf(json!({"vlan": 3}))).unwrap_err();
    assert_eq!(err.code, code::IFNAME_TAKEN);
    assert!(w.netlink.calls_starting("set_vf").is_empty());
    assert!(w.state_files().is_empty());
}

#[test]
fn dpdk_vfs_get_settings_and_ipam_but_no_netns_work() {
    let mut w = World::with_sysfs(&sysfs_fixture("vfio-pci", false), Some(4));
    let out = w
        .run("ADD", POD, &conf(json!({"vlan": 12})))
        .unwrap()
        .unwrap();
    let result: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(result["ips"][0]["address"], "10.1.0.5/24");
    // No netdev: the PF's MTU is reported, as sriov-cni does (Multus shows it).
    assert_eq!(result["interfaces"][0]["mtu"], 1500);
    assert!(w.netlink.calls_starting("move_link").is_empty());
    assert!(w.netlink.calls_starting("add_address").is_empty());
    assert_eq!(w.netlink.vf(PF, 1).unwrap().vlan, 12);
    w.run("DEL", POD, &conf(json!({"vlan": 12}))).unwrap();
    assert_eq!(w.netlink.vf(PF, 1).unwrap().vlan, 0);
    assert!(w.state_files().is_empty());
}

#[test]
fn del_reads_a_cache_written_by_the_go_plugin() {
    // Layout of sriov-cni's SaveNetConf: the NetConf plus OrigVfState/Master/VFID, no vfpool keys.
    let mut w = World::new();
    go_plugin_attached(&mut w);
    let request = conf(json!({"ipam": {"type": "host-local", "subnet": "10.1.0.0/24"}}));
    w.run("DEL", POD, &request).unwrap();
    let vf = w.netlink.vf(PF, 1).unwrap();
    assert_eq!((vf.vlan, vf.trust, vf.mac), (0, false, MacAddr::ZERO));
    assert!(w.netlink.find(NsId::HOST, VF_NETDEV).is_some());
    assert!(w.state_files().is_empty());
    // A Go cache's `ipam` is Go's `types.IPAM`, the type alone: the IPAM plugin gets the request
    // as it is, with its own configuration (as sriov-cni passes it), not the bare type.
    assert_eq!(
        w.ipam.calls,
        vec![("DEL".to_owned(), "host-local".to_owned())]
    );
    let sent: Value = serde_json::from_slice(&w.ipam.stdins[0]).unwrap();
    assert_eq!(sent["ipam"]["subnet"], "10.1.0.0/24", "{sent}");
}

/// GC of a stale attachment the Go plugin made: its cache's `ipam` names the type only, so the
/// IPAM plugin gets the GC request's section (the same network's) at the cached cniVersion; it
/// used to get the bare type, and host-local failed without its ranges.
#[test]
fn gc_of_a_go_cache_releases_with_the_networks_ipam_section() {
    let mut w = World::new();
    go_plugin_attached(&mut w);
    let mut gc = conf(json!({
        "cniVersion": "1.1.0",
        "ipam": {"type": "host-local", "subnet": "10.1.0.0/24"}
    }));
    gc["cni.dev/valid-attachments"] = json!([]);
    run_as(&mut w, "GC", "", "", "", &gc).unwrap();
    let del = w
        .ipam
        .calls
        .iter()
        .position(|c| c.0 == "DEL")
        .expect("IPAM DEL");
    let sent: Value = serde_json::from_slice(&w.ipam.stdins[del]).unwrap();
    assert_eq!(sent["ipam"]["subnet"], "10.1.0.0/24", "{sent}");
    assert_eq!(sent["cniVersion"], "1.0.0", "{sent}");
    assert!(sent.get("cni.dev/valid-attachments").is_none(), "{sent}");
}

/// sriov-cni #219: pod A (`ctr1`, `a_conf`) attaches the VF, its netns dies (the kernel returns
/// the netdev to the host as net1), and pod B (`ctr2`, a live netns, `b_conf`) gets the same VF as
/// net1. Returns B's netns.
fn pod_b_took_the_vf_of_dead_pod_a(w: &mut World, a_conf: &Value, b_conf: &Value) -> NsId {
    w.renames_show_in_sysfs();
    w.run("ADD", POD, a_conf).unwrap();
    w.pod_netns_dies();
    // Pod B: a live netns (the fake's) whose path also exists on the host, so the marker is live.
    let pod_b = "/proc/self/ns/net";
    let b = w.netlink.add_netns(Path::new(pod_b));
    run_as(w, "ADD", "ctr2", pod_b, "net1", b_conf).unwrap();
    b
}

/// After A's late DEL or GC: B still has its net1, its vlan 6 and its allocation marker; A's cache
/// is gone.
fn pod_b_keeps_the_vf(w: &World, b: NsId) {
    assert_eq!(
        w.netlink.vf(PF, 1).unwrap().vlan,
        6,
        "pod B's VLAN was reset; calls: {:?}",
        w.netlink.calls
    );
    assert!(
        w.netlink.find(b, "net1").is_some(),
        "pod B lost its interface"
    );
    let state = vfpool_cni::state::StateDir::new(w.state_dir());
    assert_eq!(
        state.marker(VF_PCI).unwrap().as_deref(),
        Some("/proc/self/ns/net")
    );
    assert!(state.read_cache("ctr1", "net1").unwrap().is_none());
}

#[test]
fn a_late_del_does_not_reset_a_vf_a_new_pod_already_owns() {
    let mut w = World::new();
    let b = pod_b_took_the_vf_of_dead_pod_a(
        &mut w,
        &conf(json!({"vlan": 5})),
        &conf(json!({"vlan": 6})),
    );
    w.netlink.calls.clear();
    w.run("DEL", POD, &conf(json!({"vlan": 5}))).unwrap();
    assert!(
        w.netlink.calls_starting("set_vf").is_empty(),
        "{:?}",
        w.netlink.calls
    );
    pod_b_keeps_the_vf(&w, b);
}

#[test]
fn del_takes_a_detour_when_the_pod_has_an_interface_with_the_vf_host_name() {
    // The pod has its own interface called like the VF in the host (#40/#49): renaming the VF
    // back inside the pod would clash, so it is renamed in an empty temporary netns instead.
    let mut w = World::new();
    w.netlink.altname_on_rename = true;
    let orig = w.netlink.vf(PF, 1).unwrap();
    let pod = w.pod();
    w.netlink
        .add_link(pod, VF_NETDEV, MacAddr([2, 0, 0, 0, 0, 9]), 1500);
    w.run("ADD", POD, &conf(json!({}))).unwrap();
    assert!(w.netlink.find(pod, "net1").is_some());
    w.run("DEL", POD, &conf(json!({}))).unwrap();
    assert_eq!(w.netlink.calls_starting("create_temp_netns").len(), 1);
    let home = w.netlink.find(NsId::HOST, VF_NETDEV).expect("VF home");
    assert_eq!(home.mac, VF_MAC);
    assert!(home.altnames.is_empty(), "{:?}", home.altnames);
    assert!(
        w.netlink.find(pod, VF_NETDEV).is_some(),
        "the pod's own interface was touched"
    );
    assert!(w.netlink.leaked_in_temp.is_empty());
    assert_eq!(w.netlink.vf(PF, 1), Some(orig));
}

fn run_as(
    w: &mut World,
    command: &str,
    container: &str,
    netns: &str,
    ifname: &str,
    c: &Value,
) -> Result<Option<String>, CniError> {
    let mut env = w.env(command, netns);
    env.container_id = container.to_owned();
    env.ifname = ifname.to_owned();
    let mut deps = Deps {
        netlink: &mut w.netlink,
        ipam: &mut w.ipam,
        log: &mut w.log,
        lock_timeout: Duration::from_millis(200),
    };
    run(&env, c.to_string().as_bytes(), &mut deps)
}

/// GC leaves an attachment of a container the list still names, even when it leaves out the
/// attachment's interface: a list passed on by a meta-plugin names the runtime's interfaces
/// (`eth0`), and used to pull the VF out of every live pod of the network.
#[test]
fn gc_leaves_the_attachments_of_containers_the_list_names() {
    let mut w = World::new();
    let orig = w.netlink.vf(PF, 1).unwrap();
    let live = "/proc/self/ns/net";
    let pod = w.netlink.add_netns(Path::new(live));
    run_as(
        &mut w,
        "ADD",
        "ctr1",
        live,
        "net1",
        &conf(json!({"vlan": 7})),
    )
    .unwrap();
    let mut gc = conf(json!({"cniVersion": "1.1.0"}));
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "ctr1", "ifname": "eth0"}]);
    w.ipam.calls.clear();
    run_as(&mut w, "GC", "", "", "", &gc).unwrap();
    assert!(
        w.netlink.find(pod, "net1").is_some(),
        "the live pod lost its VF"
    );
    assert_eq!(w.netlink.vf(PF, 1).unwrap().vlan, 7);
    assert!(
        w.ipam.calls.iter().all(|(c, _)| c != "DEL"),
        "{:?}",
        w.ipam.calls
    );
    assert!(w.state_dir().join("ctr1-net1").exists());
    // Its DEL still releases everything.
    run_as(
        &mut w,
        "DEL",
        "ctr1",
        live,
        "net1",
        &conf(json!({"vlan": 7})),
    )
    .unwrap();
    assert_eq!(w.netlink.vf(PF, 1), Some(orig));
}

/// GC of a stale attachment cleared the VF's allocation marker whenever it named a netns that is
/// gone, also when it was another network's pod's (whose record this GC leaves alone): the next
/// ADD of the VF then found no marker, undid nothing, and ran on that pod's VLAN.
#[test]
fn gc_leaves_the_marker_of_another_networks_dead_pod() {
    let mut w = World::new();
    let orig = w.netlink.vf(PF, 1).unwrap();
    w.renames_show_in_sysfs();
    // Pod A (this network) dies without a DEL; pod B of another network gets the VF and dies
    // too (its path is no netns on this host, so it reads as gone).
    w.run("ADD", POD, &conf(json!({"vlan": 5}))).unwrap();
    w.pod_netns_dies();
    let pod_b = "/run/netns/vfpool-test-gone-b";
    w.netlink.add_netns(Path::new(pod_b));
    let mut other = conf(json!({"vlan": 6}));
    other["name"] = json!("net-b");
    run_as(&mut w, "ADD", "ctr2", pod_b, "net1", &other).unwrap();
    assert_eq!(w.netlink.vf(PF, 1).unwrap().vlan, 6);

    let mut gc = conf(json!({"cniVersion": "1.1.0"}));
    gc["cni.dev/valid-attachments"] = json!([]);
    run_as(&mut w, "GC", "", "", "", &gc).unwrap();
    let state = vfpool_cni::state::StateDir::new(w.state_dir());
    assert_eq!(state.marker(VF_PCI).unwrap().as_deref(), Some(pod_b));

    // The next pod's ADD undoes pod B first.
    let pod_c = "/proc/self/ns/net";
    w.netlink.add_netns(Path::new(pod_c));
    run_as(&mut w, "ADD", "ctr3", pod_c, "net1", &conf(json!({}))).unwrap();
    assert_eq!(
        w.netlink.vf(PF, 1),
        Some(orig),
        "pod C runs on pod B's VLAN"
    );
}

/// A VF's allocation marker naming a netns that is gone, with no record left of any attachment
/// of the VF, serves no ADD: kept, a `/proc/<pid>/ns/net` path would read as a live pod's once
/// the pid is reused, and the VF would be refused to every pod. A DEL (here one without a cache)
/// clears it. And ADD takes a marker naming the plugin's own netns (such a reused path) for stale.
#[test]
fn a_dead_marker_nothing_can_use_is_cleared() {
    let mut w = World::new();
    let state = vfpool_cni::state::StateDir::new(w.state_dir());
    std::fs::create_dir_all(w.state_dir().join("pci")).unwrap();
    state
        .write_marker(VF_PCI, "/run/netns/vfpool-test-gone")
        .unwrap();
    let pod_b = "/proc/self/ns/net";
    w.netlink.add_netns(Path::new(pod_b));
    run_as(&mut w, "DEL", "ctr2", pod_b, "net1", &conf(json!({}))).unwrap();
    assert_eq!(state.marker(VF_PCI).unwrap(), None);

    // A marker naming the host's own netns: no pod holds the VF. (The path must be one this
    // process can open, to read as a live netns.)
    let host = "/proc/self/ns/net";
    w.netlink.paths.insert(PathBuf::from(host), NsId::HOST.0);
    state.write_marker(VF_PCI, host).unwrap();
    w.run("ADD", POD, &conf(json!({}))).unwrap();
    assert_eq!(state.marker(VF_PCI).unwrap().as_deref(), Some(POD));
}

/// When something holds a dead pod's netns past every DEL retry, the netdev is not coming back
/// soon. Giving up used to forget the record and the marker, and the netdev came back later under
/// the pod's name, MAC and MTU for good. DEL now succeeds keeping both: the VF's next ADD undoes
/// the attachment then.
#[test]
fn a_del_given_up_on_a_netdev_not_back_leaves_it_to_the_next_add() {
    let mut w = World::new();
    let orig = w.netlink.vf(PF, 1).unwrap();
    let pending = w.attached_then_netdev_pending();
    for _ in 1..DEL_ATTEMPTS {
        let err = w.run("DEL", POD, &conf(json!({}))).unwrap_err();
        assert_eq!(err.code, code::TRY_AGAIN_LATER, "{}", err.msg);
    }
    w.run("DEL", POD, &conf(json!({}))).unwrap();
    assert!(
        w.state_dir().join("ctr1-net1").exists(),
        "the record was forgotten"
    );
    let state = vfpool_cni::state::StateDir::new(w.state_dir());
    assert_eq!(state.marker(VF_PCI).unwrap().as_deref(), Some(POD));

    w.netdev_comes_back(pending);
    let pod_b = "/proc/self/ns/net";
    let b = w.netlink.add_netns(Path::new(pod_b));
    run_as(&mut w, "ADD", "ctr2", pod_b, "net1", &conf(json!({}))).unwrap();
    assert_eq!(w.netlink.vf(PF, 1), Some(orig));
    let in_b = w.netlink.find(b, "net1").expect("the VF in pod B");
    assert_eq!((in_b.mac, in_b.mtu), (VF_MAC, 1500));
}

#[test]
fn gc_releases_only_stale_attachments_of_its_own_network() {
    let mut w = World::new();
    w.netlink
        .add_link(NsId::HOST, "pf0v0", MacAddr([2, 0xbb, 0, 0, 0, 1]), 1500);
    let pod = w.pod();
    let vf0 = |extra: Value| {
        let mut c = conf(extra);
        c["deviceID"] = json!("0000:3b:00.1");
        c
    };
    run_as(&mut w, "ADD", "keep", POD, "net1", &vf0(json!({}))).unwrap();
    run_as(
        &mut w,
        "ADD",
        "stale",
        POD,
        "net2",
        &conf(json!({"vlan": 4})),
    )
    .unwrap();
    // Another network's attachment is none of this GC's business.
    let other_state = w.state_dir().join("other-net9");
    std::fs::write(
        &other_state,
        json!({"name": "net-b", "deviceID": "0000:3b:00.7"}).to_string(),
    )
    .unwrap();

    let mut gc = conf(json!({"cniVersion": "1.1.0"}));
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "keep", "ifname": "net1"}]);
    w.ipam.calls.clear();
    run_as(&mut w, "GC", "", "", "", &gc).unwrap();

    assert!(
        w.netlink.find(NsId::HOST, VF_NETDEV).is_some(),
        "stale VF not brought home"
    );
    assert_eq!(
        w.netlink.vf(PF, 1).unwrap().vlan,
        0,
        "stale VF's VLAN not restored"
    );
    assert!(
        w.netlink.find(pod, "net1").is_some(),
        "valid attachment touched"
    );
    assert!(
        w.ipam
            .calls
            .contains(&("DEL".to_owned(), "host-local".to_owned())),
        "{:?}",
        w.ipam.calls
    );
    let mut files = w.state_files();
    files.sort();
    assert_eq!(files, vec!["0000:3b:00.1", "keep-net1", "other-net9"]);
}

#[test]
fn gc_forgets_a_stale_record_of_a_vf_a_valid_attachment_holds() {
    let mut w = World::new();
    run_as(&mut w, "ADD", "new", POD, "net1", &conf(json!({"vlan": 8}))).unwrap();
    // A record for the same VF from a pod whose DEL never came (written by the Go plugin).
    let old = json!({"name": "net-a", "deviceID": VF_PCI, "Master": PF, "VFID": 1,
        "vlan": 3, "OrigVfState": {"HostIFName": VF_NETDEV, "Vlan": 0}});
    std::fs::write(w.state_dir().join("old-net1"), old.to_string()).unwrap();
    let mut gc = conf(json!({"cniVersion": "1.1.0"}));
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "new", "ifname": "net1"}]);
    w.netlink.calls.clear();
    run_as(&mut w, "GC", "", "", "", &gc).unwrap();
    assert!(
        w.netlink.calls_starting("set_vf").is_empty(),
        "{:?}",
        w.netlink.calls
    );
    assert_eq!(w.netlink.vf(PF, 1).unwrap().vlan, 8);
    assert!(w.netlink.find(w.pod(), "net1").is_some());
    assert!(!w.state_dir().join("old-net1").exists());
}

#[test]
fn del_without_cache_brings_home_only_a_netdev_proven_to_be_the_vf() {
    let mut w = World::new();
    let pod = w.pod();
    w.run("ADD", POD, &conf(json!({}))).unwrap();
    std::fs::remove_file(w.state_dir().join("ctr1-net1")).unwrap();
    // Not provably ours (no parent device): left alone.
    w.run("DEL", POD, &conf(json!({}))).unwrap();
    assert!(w.netlink.find(pod, "net1").is_some());
    // The kernel says its parent is the VF: it comes home under a kernel-style name.
    w.netlink.set_parent(pod, "net1", VF_PCI);
    w.run("DEL", POD, &conf(json!({}))).unwrap();
    assert!(w.netlink.find(pod, "net1").is_none());
    assert!(
        w.netlink.find(NsId::HOST, "dev0").is_some(),
        "{:?}",
        w.netlink.namespaces[&0].links
    );
    assert!(w.state_files().is_empty(), "{:?}", w.state_files());
}

#[test]
fn an_admin_mac_the_pf_never_reports_fails_add_and_is_undone() {
    // The kernel took the MAC but the PF keeps reporting another one (sriov-cni retries and then
    // fails); the write must still be undone, since it may land later.
    let mut w = World::new();
    w.netlink.mac_never_reported = true;
    let orig = w.netlink.vf(PF, 1).unwrap();
    let err = w
        .run("ADD", POD, &conf(json!({"mac": "02:00:00:00:00:77"})))
        .unwrap_err();
    assert_eq!(err.code, code::VF_SETTING_UNSUPPORTED, "{err}");
    assert_eq!(
        w.netlink.calls_starting("set_vf"),
        vec![
            "set_vf pf0 1 mac 02:00:00:00:00:77",
            "set_vf pf0 1 mac 00:00:00:00:00:00"
        ]
    );
    w.assert_pristine(orig);
}

#[test]
fn only_allocating_ipam_plugins_overlap_the_move_others_see_the_interface() {
    // host-local only hands out addresses, so it runs while the VF moves; dhcp works on the
    // interface, so it runs once the interface is in the pod and up (ADD) and before it leaves
    // (DEL), as in sriov-cni.
    let position = |timeline: &[String], prefix: &str| {
        timeline
            .iter()
            .position(|c| c.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} in {timeline:#?}"))
    };
    for (plugin, overlaps) in [
        ("host-local", true),
        ("whereabouts", true),
        ("dhcp", false),
        ("my-ipam", false),
    ] {
        let mut w = World::new();
        let timeline = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        w.netlink.timeline = Some(timeline.clone());
        w.ipam.timeline = Some(timeline.clone());
        let c = conf(json!({"ipam": {"type": plugin}}));
        w.run("ADD", POD, &c).unwrap();
        let pod = w.pod().0;
        {
            let t = timeline.borrow();
            let ipam = position(&t, "ipam ADD");
            let moved = position(&t, "move_link 0 pf0v1");
            let up = position(&t, &format!("set_up {pod} net1 true"));
            if overlaps {
                assert!(ipam < moved, "{plugin}: {t:#?}");
            } else {
                assert!(moved < ipam && up < ipam, "{plugin}: {t:#?}");
            }
        }
        timeline.borrow_mut().clear();
        w.run("DEL", POD, &c).unwrap();
        let t = timeline.borrow();
        let ipam = position(&t, "ipam DEL");
        let out = position(&t, &format!("move_link {pod} pf0v1"));
        assert!(ipam < out, "{plugin}: {t:#?}");
        if !overlaps {
            // Nothing of the release starts before a non-allocating plugin's DEL is over.
            assert_eq!(ipam, 0, "{plugin}: {t:#?}");
        }
    }
}

#[test]
fn del_skips_a_setting_the_pf_does_not_support_and_restores_the_rest() {
    // Failing DEL for a setting the driver cannot do would make the runtime retry it forever.
    let mut w = World::new();
    w.run("ADD", POD, &conf(json!({"vlan": 30, "trust": "on"})))
        .unwrap();
    w.netlink.fail("set_vf pf0 1 trust", nix::libc::EOPNOTSUPP);
    w.run("DEL", POD, &conf(json!({"vlan": 30, "trust": "on"})))
        .unwrap();
    let vf = w.netlink.vf(PF, 1).unwrap();
    assert_eq!(vf.vlan, 0, "the VLAN is restored all the same");
    assert!(w.netlink.find(NsId::HOST, VF_NETDEV).is_some());
    assert!(w.state_files().is_empty());
    // Any other refusal keeps the cache so the retry can finish.
    w.run("ADD", POD, &conf(json!({"vlan": 31}))).unwrap();
    w.netlink.fail("set_vf pf0 1 vlan", nix::libc::EBUSY);
    assert_eq!(
        w.run("DEL", POD, &conf(json!({"vlan": 31})))
            .unwrap_err()
            .code,
        code::NETLINK
    );
    assert!(!w.state_files().is_empty());
    w.run("DEL", POD, &conf(json!({"vlan": 31}))).unwrap();
    assert_eq!(w.netlink.vf(PF, 1).unwrap().vlan, 0);
    assert!(w.state_files().is_empty());
}

#[test]
fn del_succeeds_when_the_pf_no_longer_reports_the_vf() {
    // The operator lowered sriov_numvfs after ADD: the VF is gone, so there is nothing to restore,
    // and failing DEL would keep the pod Terminating forever.
    let mut w = World::new();
    w.run("ADD", POD, &conf(json!({"vlan": 5}))).unwrap();
    w.netlink.pfs.insert(PF.to_owned(), Some(vec![]));
    let pod = w.pod();
    w.netlink
        .namespaces
        .get_mut(&pod.0)
        .unwrap()
        .links
        .retain(|l| l.name != "net1");
    w.run("DEL", POD, &conf(json!({"vlan": 5}))).unwrap();
    assert!(w.state_files().is_empty(), "{:?}", w.state_files());
    w.run("DEL", POD, &conf(json!({"vlan": 5}))).unwrap();
    assert!(w.state_files().is_empty(), "{:?}", w.state_files());
}

#[test]
fn gc_does_not_reset_a_vf_a_live_pod_of_another_network_owns() {
    // Pod B gets the VF through another network name (same resource); A's record is stale for
    // net-a's GC, but the VF's settings are B's now.
    let mut w = World::new();
    let b = pod_b_took_the_vf_of_dead_pod_a(
        &mut w,
        &conf(json!({"vlan": 5})),
        &conf(json!({"name": "net-b", "vlan": 6})),
    );
    let mut gc = conf(json!({"cniVersion": "1.1.0"}));
    gc["cni.dev/valid-attachments"] = json!([]);
    w.netlink.calls.clear();
    run_as(&mut w, "GC", "", "", "", &gc).unwrap();
    pod_b_keeps_the_vf(&w, b);
    let state = vfpool_cni::state::StateDir::new(w.state_dir());
    assert!(state.read_cache("ctr2", "net1").unwrap().is_some());
}

#[test]
fn del_removes_a_corrupt_cache() {
    let mut w = World::new();
    std::fs::create_dir_all(w.state_dir()).unwrap();
    std::fs::write(w.state_dir().join("ctr1-net1"), "{trunc").unwrap();
    w.run("DEL", POD, &conf(json!({}))).unwrap();
    assert!(!w.state_dir().join("ctr1-net1").exists());
    assert!(
        w.ipam
            .calls
            .contains(&("DEL".to_owned(), "host-local".to_owned()))
    );
}

#[test]
fn del_with_a_cache_without_device_id_releases_what_it_can() {
    // A record that names no VF cannot be replayed, but the IPAM allocation and the NetConf's
    // deviceID still can be released, as with no cache at all.
    let mut w = World::new();
    w.run("ADD", POD, &conf(json!({"vlan": 5}))).unwrap();
    let path = w.state_dir().join("ctr1-net1");
    let mut cache: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    cache.as_object_mut().unwrap().remove("deviceID");
    std::fs::write(&path, cache.to_string()).unwrap();
    let pod = w.pod();
    w.netlink.set_parent(pod, "net1", VF_PCI);
    w.ipam.calls.clear();
    w.run("DEL", POD, &conf(json!({"vlan": 5}))).unwrap();
    assert_eq!(
        w.ipam.calls,
        vec![("DEL".to_owned(), "host-local".to_owned())]
    );
    assert!(w.netlink.find(pod, "net1").is_none());
    assert!(w.state_files().is_empty(), "{:?}", w.state_files());
}

/// CHECK's NetConf: the ADD's with its result as prevResult.
fn check_conf(add_conf: &Value, add_out: &str) -> Value {
    let mut c = add_conf.clone();
    c["prevResult"] = serde_json::from_str(add_out).unwrap();
    c
}

#[test]
fn check_fails_when_the_vf_vlan_drifted_after_add() {
    // `ip link set pf0 vf 1 vlan 0` puts the pod on the untagged network: CHECK must notice.
    let mut w = World::new();
    let c = conf(json!({"vlan": 100}));
    let out = w.run("ADD", POD, &c).unwrap().unwrap();
    let check = check_conf(&c, &out);
    w.run("CHECK", POD, &check).unwrap();
    let now = w.netlink.vf(PF, 1).unwrap();
    w.netlink.set_vf_for_test(PF, 1, 0, now.trust, now.mac);
    let err = w.run("CHECK", POD, &check).unwrap_err();
    assert_eq!(err.code, code::CHECK_FAILED, "{}", err.msg);
    assert!(err.msg.contains("\"vlan\""), "{}", err.msg);
    assert!(err.msg.contains("vlan 100"), "{}", err.msg);
    assert!(err.msg.contains("vlan 0"), "{}", err.msg);

    // A cache of an older vfpool names the settings but not their values: nothing to compare.
    let path = w.state_dir().join("ctr1-net1");
    let mut cache: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    cache.as_object_mut().unwrap().remove("vfpoolAppliedValues");
    std::fs::write(&path, cache.to_string()).unwrap();
    w.run("CHECK", POD, &check).unwrap();
}

#[test]
fn check_passes_after_add_and_checks_only_the_settings_add_applied() {
    let mut w = World::new();
    let c = conf(json!({
        "vlan": 100, "spoofchk": "off", "trust": "on", "mac": "02:00:00:00:00:99"
    }));
    let out = w.run("ADD", POD, &c).unwrap().unwrap();
    let check = check_conf(&c, &out);
    w.run("CHECK", POD, &check).unwrap();

    // A setting the NetConf left alone may change without CHECK caring.
    if let Some(Some(vfs)) = w.netlink.pfs.get_mut(PF) {
        let vf = vfs.iter_mut().find(|s| s.vf == 1).unwrap();
        vf.link_state = VfLinkState::Disable;
        vf.max_tx_rate = 5;
    }
    w.run("CHECK", POD, &check).unwrap();

    // One it applied may not.
    let now = w.netlink.vf(PF, 1).unwrap();
    w.netlink.set_vf_for_test(PF, 1, now.vlan, false, now.mac);
    let err = w.run("CHECK", POD, &check).unwrap_err();
    assert_eq!(err.code, code::CHECK_FAILED, "{}", err.msg);
    assert!(err.msg.contains("\"trust\""), "{}", err.msg);
    assert!(err.msg.contains("trust on"), "{}", err.msg);
    assert!(err.msg.contains("trust off"), "{}", err.msg);

    // A PF that stops reporting VF information cannot be checked, which is not a failure.
    w.netlink.pfs.insert(PF.to_owned(), None);
    w.run("CHECK", POD, &check).unwrap();
    // Nor is a PF netdev renamed since ADD (it used to fail CHECK with a netlink error).
    w.netlink.pfs.remove(PF);
    w.run("CHECK", POD, &check).unwrap();
}

#[test]
fn check_fails_when_the_pod_interface_is_not_the_cached_vf() {
    let mut w = World::new();
    let c = conf(json!({}));
    let out = w.run("ADD", POD, &c).unwrap().unwrap();
    let check = check_conf(&c, &out);
    let pod = w.pod();
    w.netlink.set_parent(pod, "net1", VF_PCI);
    w.run("CHECK", POD, &check).unwrap();
    w.netlink.set_parent(pod, "net1", "0000:3b:00.3");
    let err = w.run("CHECK", POD, &check).unwrap_err();
    assert_eq!(err.code, code::CHECK_FAILED, "{}", err.msg);
    assert!(err.msg.contains(VF_PCI), "{}", err.msg);
    assert!(err.msg.contains("0000:3b:00.3"), "{}", err.msg);
}

#[test]
fn check_compares_a_go_cache_with_the_pf() {
    // A pod attached by the Go plugin before the upgrade: its cache holds the NetConf values.
    let mut w = World::new();
    go_plugin_attached(&mut w);
    let mut check = conf(json!({"vlan": 300, "trust": "on"}));
    check["prevResult"] = json!({
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "net1", "sandbox": POD}]
    });
    check["ipam"] = json!({});
    w.run("CHECK", POD, &check).unwrap();
    w.netlink
        .set_vf_for_test(PF, 1, 300, true, MacAddr([2, 0, 0, 0, 0, 0x34]));
    let err = w.run("CHECK", POD, &check).unwrap_err();
    assert_eq!(err.code, code::CHECK_FAILED, "{}", err.msg);
    assert!(err.msg.contains("02:00:00:00:00:33"), "{}", err.msg);
}

/// sriov-cni's cache for `ctr1-net1`: vlan `vlan`, trust on, admin MAC 02:00:00:00:00:33; no
/// `vfpool*` keys, so no netns of its own.
fn go_cache(vlan: u16) -> Value {
    json!({
        "cniVersion": "1.0.0", "name": "net-a", "type": "sriov",
        "ipam": {"type": "host-local"},
        "OrigVfState": {"HostIFName": VF_NETDEV, "SpoofChk": true, "Trust": false,
            "AdminMAC": "00:00:00:00:00:00", "EffectiveMAC": VF_MAC.to_string(),
            "Vlan": 0, "VlanQoS": 0, "VlanProto": 33024, "MinTxRate": 0, "MaxTxRate": 0,
            "LinkState": 0, "MTU": 1500},
        "Master": PF, "MAC": "02:00:00:00:00:33", "MTU": 1500, "vlan": vlan, "vlanQoS": 0,
        "vlanProto": "802.1q", "deviceID": VF_PCI, "VFID": 1, "trust": "on",
        "min_tx_rate": null, "max_tx_rate": null,
        "runtimeConfig": {}
    })
}

/// The Go plugin attached the VF to the pod as net1 with vlan 300, trust on and an admin MAC, and
/// left its cache `ctr1-net1`. Returns the pod.
fn go_plugin_attached(w: &mut World) -> NsId {
    let pod = w.pod();
    w.netlink.move_link_for_test(VF_NETDEV, pod, "net1");
    w.netlink
        .set_vf_for_test(PF, 1, 300, true, MacAddr([2, 0, 0, 0, 0, 0x33]));
    std::fs::create_dir_all(w.state_dir()).unwrap();
    std::fs::write(w.state_dir().join("ctr1-net1"), go_cache(300).to_string()).unwrap();
    pod
}

/// Pod B holds the VF as net1 with vlan 6 and the allocation marker names B's (live) netns,
/// while the Go plugin's cache of pod A (`ctr1-net1`) is still there.
fn go_cache_and_a_live_new_owner(w: &mut World) -> NsId {
    let pod_b = "/proc/self/ns/net";
    let b = w.netlink.add_netns(Path::new(pod_b));
    w.netlink.move_link_for_test(VF_NETDEV, b, "net1");
    w.netlink.set_vf_for_test(PF, 1, 6, false, MacAddr::ZERO);
    std::fs::create_dir_all(w.state_dir()).unwrap();
    let state = vfpool_cni::state::StateDir::new(w.state_dir());
    state.write_marker(VF_PCI, pod_b).unwrap();
    std::fs::write(w.state_dir().join("ctr1-net1"), go_cache(5).to_string()).unwrap();
    b
}

#[test]
fn del_without_netns_of_a_go_cache_leaves_alone_the_vf_the_marker_holder_has() {
    // Upgrade window: the Go cache records no netns and CNI_NETNS is empty, so the marker's
    // netns (pod B's) must not pass for pod A's.
    let mut w = World::new();
    let b = go_cache_and_a_live_new_owner(&mut w);
    w.netlink.calls.clear();
    w.run("DEL", "", &conf(json!({"vlan": 5}))).unwrap();
    pod_b_keeps_the_vf(&w, b);
}

/// GC of a Go cache whose pod interface name holds a '-' releases the IP under the attachment's
/// own container id and interface name: the cache name was split at its last '-', so IPAM DEL got
/// `ctr1-sriov` and `a` and the address leaked.
#[test]
fn gc_of_a_go_cache_splits_its_name_at_the_container_id() {
    let mut w = World::new();
    std::fs::create_dir_all(w.state_dir()).unwrap();
    std::fs::write(w.state_dir().join("ctr1-sriov-a"), go_cache(5).to_string()).unwrap();
    let mut gc = conf(json!({"cniVersion": "1.1.0"}));
    gc["cni.dev/valid-attachments"] = json!([]);
    run_as(&mut w, "GC", "", "", "", &gc).unwrap();
    let del = w.ipam.calls.iter().position(|(c, _)| c == "DEL").unwrap();
    assert_eq!(
        w.ipam.owners[del],
        ("ctr1".to_string(), "sriov-a".to_string()),
        "{:?}",
        w.ipam.calls
    );
}

#[test]
fn gc_of_a_go_cache_leaves_alone_the_vf_the_marker_holder_has() {
    let mut w = World::new();
    let b = go_cache_and_a_live_new_owner(&mut w);
    let mut gc = conf(json!({"cniVersion": "1.1.0"}));
    gc["cni.dev/valid-attachments"] = json!([]);
    w.netlink.calls.clear();
    run_as(&mut w, "GC", "", "", "", &gc).unwrap();
    pod_b_keeps_the_vf(&w, b);
}

/// The cache `ctr1-net1` as JSON.
fn read_cache(w: &World) -> Value {
    serde_json::from_slice(&std::fs::read(w.state_dir().join("ctr1-net1")).unwrap()).unwrap()
}

/// Sets (or, with `None`, removes) `key` in the attachment's cache file, as a corrupt or foreign
/// cache would have it.
fn corrupt_cache(w: &World, key: &str, value: Option<&Value>) {
    let mut cache = read_cache(w);
    match value {
        Some(v) => cache[key] = v.clone(),
        None => {
            cache.as_object_mut().unwrap().remove(key);
        }
    }
    std::fs::write(w.state_dir().join("ctr1-net1"), cache.to_string()).unwrap();
}

#[test]
fn the_cache_records_the_mac_add_applied_under_upstreams_mac_key() {
    // sriov-cni's CmdAdd stores the MAC it applies (runtimeConfig.mac over CNI_ARGS MAC= over
    // mac, lower-cased) in NetConf.MAC, cached as "MAC", and its DEL restores the VF's MACs only
    // when that is non-empty: after a downgrade the Go plugin must find ours there.
    let keys = |cache: &Value| {
        cache
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| k.eq_ignore_ascii_case("mac"))
            .cloned()
            .collect::<Vec<_>>()
    };

    // runtimeConfig.mac wins over the NetConf's mac.
    let mut w = World::new();
    let c = conf(json!({"mac": "02:00:00:00:00:99",
        "runtimeConfig": {"mac": "02:00:00:00:00:AB"}}));
    w.run("ADD", POD, &c).unwrap();
    let cache = read_cache(&w);
    assert_eq!(cache["MAC"], "02:00:00:00:00:ab", "{cache:#}");
    assert_eq!(keys(&cache), vec!["MAC"], "a case twin would confuse Go");
    w.run("DEL", POD, &c).unwrap();

    // CNI_ARGS MAC= wins over the NetConf's mac.
    let mut w = World::new();
    let c = conf(json!({"mac": "02:00:00:00:00:99"}));
    let mut env = w.env("ADD", POD);
    env.args = "IgnoreUnknown=true;MAC=02:00:00:00:00:CD".to_owned();
    let mut deps = Deps {
        netlink: &mut w.netlink,
        ipam: &mut w.ipam,
        log: &mut w.log,
        lock_timeout: Duration::from_millis(200),
    };
    run(&env, c.to_string().as_bytes(), &mut deps).unwrap();
    assert_eq!(read_cache(&w)["MAC"], "02:00:00:00:00:cd");

    // No MAC applied: the Go plugin's empty string (it restores no MAC then).
    let mut w = World::new();
    w.run("ADD", POD, &conf(json!({}))).unwrap();
    assert_eq!(read_cache(&w)["MAC"], "");
}

#[test]
fn gc_refuses_a_missing_or_malformed_valid_attachments_list() {
    // A list GC cannot read must not make every attachment of the network stale: that would pull
    // the VFs out of live pods.
    let bad_lists = [
        None,
        Some(json!(null)),
        Some(json!({"containerID": "ctr1", "ifname": "net1"})),
        Some(json!("ctr1-net1")),
        Some(json!(["ctr1-net1"])),
        Some(json!([{"containerID": "ctr1"}])),
        Some(json!([{"ifname": "net1"}])),
        Some(json!([{"containerID": 7, "ifname": "net1"}])),
        Some(json!([{"containerID": "", "ifname": "net1"}])),
        Some(json!([{"containerID": "other", "ifname": "net1"}, {"containerID": "ctr1"}])),
    ];
    for list in bad_lists {
        let mut w = World::new();
        w.run("ADD", POD, &conf(json!({"vlan": 5}))).unwrap();
        let mut gc = conf(json!({"cniVersion": "1.1.0"}));
        if let Some(list) = &list {
            gc["cni.dev/valid-attachments"] = list.clone();
        }
        w.netlink.calls.clear();
        let err = run_as(&mut w, "GC", "", "", "", &gc).unwrap_err();
        assert_eq!(err.code, code::INVALID_CONFIG, "{list:?}: {err:?}");
        assert!(
            err.msg.contains("cni.dev/valid-attachments"),
            "{list:?}: {}",
            err.msg
        );
        assert!(w.netlink.find(w.pod(), "net1").is_some(), "{list:?}");
        assert_eq!(w.netlink.vf(PF, 1).unwrap().vlan, 5, "{list:?}");
        assert!(
            w.netlink.calls.is_empty(),
            "{list:?}: {:?}",
            w.netlink.calls
        );
        assert!(w.state_dir().join("ctr1-net1").exists(), "{list:?}");
        assert!(w.ipam.calls.iter().all(|c| c.0 != "DEL"), "{list:?}");
    }
}

#[test]
fn del_resolves_the_vf_from_sysfs_not_from_a_corrupt_cache() {
    // VFID absent, negative, a string, too large, or Master wrong: sysfs names deviceID's PF and
    // index, so VF 1 is restored and VF 0 (perhaps another pod's) is never touched.
    let corruptions: [(&str, Option<Value>); 6] = [
        ("VFID", None),
        ("VFID", Some(json!(-1))),
        ("VFID", Some(json!("1"))),
        ("VFID", Some(json!(u64::from(u32::MAX) + 1))),
        ("Master", None),
        ("Master", Some(json!("pf9"))),
    ];
    for (key, value) in corruptions {
        let mut w = World::new();
        let vf0 = w.netlink.vf(PF, 0).unwrap();
        w.run("ADD", POD, &conf(json!({"vlan": 5, "trust": "on"})))
            .unwrap();
        corrupt_cache(&w, key, value.as_ref());
        w.netlink.calls.clear();
        w.run("DEL", POD, &conf(json!({"vlan": 5, "trust": "on"})))
            .unwrap();
        assert_eq!(
            w.netlink.calls_starting("set_vf"),
            vec![
                "set_vf pf0 1 vlan 0 qos 0 proto 802.1q",
                "set_vf pf0 1 trust off",
            ],
            "{key} = {value:?}"
        );
        assert_eq!(w.netlink.vf(PF, 0), Some(vf0), "{key} = {value:?}");
        assert!(w.netlink.find(NsId::HOST, VF_NETDEV).is_some());
        assert!(w.state_files().is_empty(), "{:?}", w.state_files());
    }
}

#[test]
fn del_skips_the_vf_reset_when_neither_sysfs_nor_the_cache_names_the_vf() {
    for (key, value) in [("VFID", None), ("VFID", Some(json!(-1))), ("Master", None)] {
        let mut w = World::new();
        let vf0 = w.netlink.vf(PF, 0).unwrap();
        w.run("ADD", POD, &conf(json!({"vlan": 5}))).unwrap();
        corrupt_cache(&w, key, value.as_ref());
        // The VF is no longer in sysfs (hot-unplugged, sriov_numvfs changed).
        std::fs::remove_file(w.dir.path().join("sys/bus/pci/devices").join(VF_PCI)).unwrap();
        w.netlink.calls.clear();
        w.run("DEL", POD, &conf(json!({"vlan": 5}))).unwrap();
        assert!(
            w.netlink.calls_starting("set_vf").is_empty(),
            "{key} = {value:?}: {:?}",
            w.netlink.calls
        );
        assert_eq!(w.netlink.vf(PF, 0), Some(vf0));
        // The rest of DEL still happens: the netdev comes home, the state is gone.
        assert!(w.netlink.find(NsId::HOST, VF_NETDEV).is_some());
        assert!(w.state_files().is_empty(), "{:?}", w.state_files());
        let logged = w.log.captured.as_ref().unwrap().join("\n");
        assert!(
            logged.contains("not restored") && logged.contains(VF_PCI),
            "{logged}"
        );
    }

    // A valid cache still serves when sysfs cannot.
    let mut w = World::new();
    w.run("ADD", POD, &conf(json!({"vlan": 5}))).unwrap();
    std::fs::remove_file(w.dir.path().join("sys/bus/pci/devices").join(VF_PCI)).unwrap();
    w.netlink.calls.clear();
    w.run("DEL", POD, &conf(json!({"vlan": 5}))).unwrap();
    assert_eq!(
        w.netlink.calls_starting("set_vf"),
        vec!["set_vf pf0 1 vlan 0 qos 0 proto 802.1q"]
    );
}

#[test]
fn del_without_cache_or_marker_succeeds_when_ipam_del_fails() {
    // No ADD of ours got far enough to hold anything: sriov-cni returns success without a
    // cache, so a dhcp without its daemon, or a host-local with a broken config, must not make
    // every DEL fail. IPAM DEL is still tried (an allocation may exist).
    for plugin in ["host-local", "dhcp"] {
        for device_id in [true, false] {
            let mut w = World::new();
            w.ipam.fail.push("DEL");
            let mut c = conf(json!({"ipam": {"type": plugin}}));
            if !device_id {
                c.as_object_mut().unwrap().remove("deviceID");
            }
            w.run("DEL", POD, &c)
                .unwrap_or_else(|e| panic!("{plugin} deviceID={device_id}: {e}"));
            assert_eq!(
                w.ipam.calls,
                vec![("DEL".to_owned(), plugin.to_owned())],
                "{plugin}"
            );
            let logged = w.log.captured.as_ref().unwrap().join("\n");
            assert!(
                logged.contains("[warning]") && logged.contains("injected failure"),
                "{logged}"
            );
            assert!(w.state_files().is_empty(), "{:?}", w.state_files());
        }
    }
}

/// A PF given as the device is the configuration's mistake (code 7, naming deviceID), not a VF
/// that could not be found (100).
#[test]
fn a_pf_as_the_device_is_an_invalid_config() {
    let mut w = World::new();
    let err = w
        .run("ADD", POD, &conf(json!({"deviceID": "0000:3b:00.0"})))
        .unwrap_err();
    assert_eq!(err.code, code::INVALID_CONFIG, "{err}");
    assert!(err.to_string().contains("deviceID"), "{err}");
}

/// A well-known code from the IPAM plugin reaches the runtime, as sriov-cni passes it on: "try
/// again later" (11) read as a hard IPAM failure (103). Codes of its own stay 103.
#[test]
fn an_ipam_plugins_well_known_error_code_is_passed_on() {
    for (ipam_code, expected) in [(11, 11), (7, 7), (999, code::IPAM)] {
        let mut w = World::new();
        w.ipam.fail.push("ADD");
        w.ipam.fail_code = Some(ipam_code);
        let c = conf(json!({"ipam": {"type": "host-local"}}));
        let err = w.run("ADD", POD, &c).unwrap_err();
        assert_eq!(err.code, expected, "{err}");
    }
}

#[test]
fn del_without_cache_still_fails_when_the_marker_proves_an_add() {
    // An allocation marker naming this pod's netns proves an ADD got that far: the IPAM
    // failure is worth a retry.
    let mut w = World::new();
    let state = vfpool_cni::state::StateDir::new(w.state_dir());
    state.write_marker(VF_PCI, POD).unwrap();
    w.ipam.fail.push("DEL");
    let err = w.run("DEL", POD, &conf(json!({}))).unwrap_err();
    assert_eq!(err.code, code::IPAM, "{err}");
    assert_eq!(state.marker(VF_PCI).unwrap().as_deref(), Some(POD));
    w.ipam.fail.clear();
    w.run("DEL", POD, &conf(json!({}))).unwrap();
    assert!(w.state_files().is_empty(), "{:?}", w.state_files());
}

fn del_failures(w: &World) -> Option<u64> {
    read_cache(w)
        .get(vfpool_cni::plugin::DEL_FAILURES_KEY)
        .and_then(Value::as_u64)
}

#[test]
fn a_del_that_keeps_failing_gives_up_after_a_few_attempts() {
    // The driver refuses the original MTU back on every DEL: the first DELs fail (the runtime
    // retries), the last one logs what was not released, forgets the attachment and succeeds.
    let mut w = World::new();
    let c = conf(json!({"vlan": 5, "mtu": 9000}));
    w.run("ADD", POD, &c).unwrap();
    for _ in 0..vfpool_cni::plugin::DEL_ATTEMPTS {
        w.netlink.fail("set_mtu", nix::libc::EINVAL);
    }
    for attempt in 1..vfpool_cni::plugin::DEL_ATTEMPTS {
        let err = w.run("DEL", POD, &c).unwrap_err();
        assert_eq!(err.code, code::NETLINK, "{err}");
        assert!(err.msg.contains("restoring its MTU"), "{}", err.msg);
        assert_eq!(del_failures(&w), Some(attempt));
        // The counted cache is still an attachment record, for this plugin and for Go's.
        vfpool_cni::plugin::Attachment::from_cache("ctr1-net1", &read_cache(&w)).unwrap();
        assert_eq!(w.state_files().len(), 2, "{:?}", w.state_files());
    }
    w.run("DEL", POD, &c).unwrap();
    assert!(w.state_files().is_empty(), "{:?}", w.state_files());
    let logged = w.log.captured.as_ref().unwrap().join("\n");
    let give_up = logged
        .lines()
        .find(|l| l.contains("[error]") && l.contains("giving up"))
        .unwrap_or_else(|| panic!("no give-up error in {logged}"));
    assert!(give_up.contains("restoring its MTU"), "{give_up}");
    // The VF settings were restored on every try; only the netdev stayed in the pod.
    assert_eq!(w.netlink.vf(PF, 1).unwrap().vlan, 0);
    // A later DEL is a no-op success.
    w.run("DEL", POD, &c).unwrap();
}

#[test]
fn a_transient_del_failure_is_retried_and_the_retry_finishes_cleanly() {
    let mut w = World::new();
    let orig = w.netlink.vf(PF, 1).unwrap();
    let c = conf(json!({"vlan": 5, "mtu": 9000}));
    w.run("ADD", POD, &c).unwrap();
    w.netlink.fail("set_mtu", nix::libc::EBUSY);
    w.run("DEL", POD, &c).unwrap_err();
    assert_eq!(del_failures(&w), Some(1));
    w.run("DEL", POD, &c).unwrap();
    w.assert_pristine(orig);
    // A new ADD of the same attachment starts with no failures counted.
    w.run("ADD", POD, &c).unwrap();
    assert_eq!(del_failures(&w), None);
}

#[test]
fn an_ipam_del_that_keeps_failing_gives_up_after_releasing_the_vf() {
    // dhcp's DEL runs before the VF leaves the pod and, while it fails, the VF stays there for
    // its retry; the last try releases the VF anyway and then gives up on the lease.
    for plugin in ["dhcp", "host-local"] {
        let mut w = World::new();
        let orig = w.netlink.vf(PF, 1).unwrap();
        let c = conf(json!({"vlan": 5, "ipam": {"type": plugin}}));
        w.run("ADD", POD, &c).unwrap();
        w.ipam.fail.push("DEL");
        for attempt in 1..vfpool_cni::plugin::DEL_ATTEMPTS {
            let err = w.run("DEL", POD, &c).unwrap_err();
            assert_eq!(err.code, code::IPAM, "{plugin}: {err}");
            assert_eq!(del_failures(&w), Some(attempt), "{plugin}");
        }
        w.run("DEL", POD, &c).unwrap();
        assert!(
            w.state_files().is_empty(),
            "{plugin}: {:?}",
            w.state_files()
        );
        assert!(w.netlink.find(NsId::HOST, VF_NETDEV).is_some(), "{plugin}");
        assert_eq!(w.netlink.vf(PF, 1), Some(orig), "{plugin}");
        let logged = w.log.captured.as_ref().unwrap().join("\n");
        assert!(
            logged
                .lines()
                .any(|l| l.contains("giving up") && l.contains("injected failure")),
            "{plugin}: {logged}"
        );
    }
}

#[test]
fn giving_up_keeps_the_marker_of_a_live_pod_that_got_the_vf() {
    // Pod B holds the VF; pod A's late DEL keeps failing in IPAM: A's record goes, B's marker
    // stays (#219).
    let mut w = World::new();
    let b = go_cache_and_a_live_new_owner(&mut w);
    w.ipam.fail.push("DEL");
    for _ in 1..vfpool_cni::plugin::DEL_ATTEMPTS {
        w.run("DEL", POD, &conf(json!({}))).unwrap_err();
    }
    w.run("DEL", POD, &conf(json!({}))).unwrap();
    let state = vfpool_cni::state::StateDir::new(w.state_dir());
    assert!(state.read_cache("ctr1", "net1").unwrap().is_none());
    assert_eq!(
        state.marker(VF_PCI).unwrap().as_deref(),
        Some("/proc/self/ns/net")
    );
    assert!(w.netlink.find(b, "net1").is_some());
}
