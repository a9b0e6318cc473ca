//! End-to-end tests of the real `vfpool-cni` binary, as root, in real network namespaces, with
//! veth pairs standing in for VFs and the Debian `host-local` IPAM plugin.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use anyhow::Result;
use common::{Netns, Node, host_has, link_facts};
use serde_json::json;

#[test]
fn add_check_del_moves_the_vf_in_and_out_with_ipam() -> Result<()> {
    require_root!();
    let node = Node::new(1)?;
    let pod = Netns::new("pod")?;
    let vf = node.vf_netdevs[0].clone();
    let before = link_facts(None, &vf)?;
    let conf = node.netconf(0, json!({}));

    let add = node.cni("ADD", "c1", &pod.path(), "net1", &conf)?;
    assert!(add.ok, "ADD failed: {:?} {}", add.json, add.stderr);
    assert_eq!(add.json["interfaces"][0]["name"], "net1");
    assert_eq!(add.json["interfaces"][0]["sandbox"], pod.path());
    assert_eq!(add.json["ips"][0]["address"], "10.77.0.2/24");
    assert!(!host_has(&vf), "the VF netdev is still in the host");
    let in_pod = link_facts(Some(&pod), "net1")?;
    assert_eq!(in_pod["address"], before["address"]);
    assert!(
        in_pod["flags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "UP")
    );
    let addrs = pod.ip(&["-j", "addr", "show", "dev", "net1"])?;
    assert!(addrs.contains("10.77.0.2"), "{addrs}");
    let routes = pod.ip(&["route", "show"])?;
    assert!(
        routes.contains("10.78.0.0/16 via 10.77.0.1 dev net1"),
        "{routes}"
    );
    assert_eq!(node.allocated_ips(), vec!["10.77.0.2"]);

    let mut check_conf = conf.clone();
    check_conf["prevResult"] = add.json.clone();
    let check = node.cni("CHECK", "c1", &pod.path(), "net1", &check_conf)?;
    assert!(check.ok, "CHECK failed: {:?}", check.json);

    let del = node.cni("DEL", "c1", &pod.path(), "net1", &check_conf)?;
    assert!(del.ok, "DEL failed: {:?} {}", del.json, del.stderr);
    assert!(
        host_has(&vf),
        "the VF netdev is not back in the host under its name"
    );
    let after = link_facts(None, &vf)?;
    assert_eq!(after["address"], before["address"]);
    assert_eq!(after["mtu"], before["mtu"]);
    assert!(pod.ip(&["link", "show", "dev", "net1"]).is_err());
    assert!(
        node.allocated_ips().is_empty(),
        "host-local still holds {:?}",
        node.allocated_ips()
    );
    assert!(
        node.state_files().is_empty(),
        "state left: {:?}",
        node.state_files()
    );

    // A second DEL is a no-op success.
    let again = node.cni("DEL", "c1", &pod.path(), "net1", &check_conf)?;
    assert!(again.ok, "second DEL failed: {:?}", again.json);
    Ok(())
}
