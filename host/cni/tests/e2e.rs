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

/// The host as a test can see it: the VF netdev's facts, host-local's store and our state.
fn host_snapshot(node: &Node, vf: &str) -> Result<(serde_json::Value, Vec<String>, Vec<String>)> {
    let mut facts = link_facts(None, vf)?;
    // Counters and the like change by themselves; keep what ADD could have changed.
    let keep = ["ifname", "address", "mtu", "flags", "altnames"];
    if let Some(obj) = facts.as_object_mut() {
        obj.retain(|k, _| keep.contains(&k.as_str()));
    }
    Ok((facts, node.allocated_ips(), node.state_files()))
}

#[test]
fn failures_leave_the_host_exactly_as_before() -> Result<()> {
    require_root!();
    let node = Node::new(1)?;
    let pod = Netns::new("pod")?;
    let vf = node.vf_netdevs[0].clone();
    let before = host_snapshot(&node, &vf)?;

    // (what is wrong, config change, netns, expected code)
    let missing_ns = format!("/run/netns/{}", common::unique("gone"));
    let cases: Vec<(&str, serde_json::Value, String, u64)> = vec![
        (
            "IPAM failure",
            json!({"ipam": {"type": "host-local", "dataDir": node.ipam_dir(), "ranges": [[{"subnet": "10.77.0.0/30"}]], "routes": [{"dst": "10.78.0.0/16", "gw": "192.0.2.99"}]}}),
            pod.path(),
            101,
        ),
        (
            "unknown IPAM plugin",
            json!({"ipam": {"type": "no-such-ipam"}}),
            pod.path(),
            103,
        ),
        (
            "a VF setting the veth PF cannot do",
            json!({"vlan": 100}),
            pod.path(),
            105,
        ),
        (
            "a MAC the veth PF cannot set",
            json!({"mac": "02:00:00:00:00:55"}),
            pod.path(),
            105,
        ),
        ("a missing netns", json!({}), missing_ns, 102),
        ("bad vlan", json!({"vlan": 5000}), pod.path(), 7),
        ("bad spoofchk", json!({"spoofchk": "maybe"}), pod.path(), 7),
        (
            "bad deviceID",
            json!({"deviceID": "0000:99:00.7"}),
            pod.path(),
            100,
        ),
        ("no deviceID", json!({"deviceID": null}), pod.path(), 7),
        (
            "unsupported cniVersion",
            json!({"cniVersion": "7.0.0"}),
            pod.path(),
            1,
        ),
    ];
    for (what, change, netns, code) in cases {
        let conf = node.netconf(0, change);
        let out = node.cni("ADD", "c1", &netns, "net1", &conf)?;
        assert!(!out.ok, "{what}: ADD succeeded: {:?}", out.json);
        assert_eq!(out.code(), Some(code), "{what}: {:?}", out.json);
        assert!(!out.msg().is_empty());
        assert_eq!(
            host_snapshot(&node, &vf)?,
            before,
            "{what}: the host changed"
        );
        assert!(
            pod.ip(&["link", "show", "dev", "net1"]).is_err(),
            "{what}: net1 left in the pod"
        );
        // The runtime always DELs after a failed ADD; that must succeed too.
        let del = node.cni("DEL", "c1", &netns, "net1", &conf)?;
        assert!(
            del.ok || code == 1,
            "{what}: DEL after failed ADD: {:?}",
            del.json
        );
    }

    // Garbage on stdin and a missing env var.
    let out = node.cni_raw("ADD", "c1", &pod.path(), "net1", b"{nope", &[])?;
    assert_eq!(out.code(), Some(6), "{:?}", out.json);
    let out = node.cni_raw("ADD", "", &pod.path(), "net1", b"{}", &[])?;
    assert_eq!(out.code(), Some(4), "{:?}", out.json);
    assert!(out.msg().contains("CNI_CONTAINERID"), "{}", out.msg());
    assert_eq!(host_snapshot(&node, &vf)?, before);
    Ok(())
}

#[test]
fn an_interface_name_taken_in_the_pod_is_refused_and_nothing_moves() -> Result<()> {
    require_root!();
    let node = Node::new(1)?;
    let pod = Netns::new("pod")?;
    pod.ip(&[
        "link", "add", "net1", "type", "veth", "peer", "name", "other",
    ])?;
    let vf = node.vf_netdevs[0].clone();
    let before = host_snapshot(&node, &vf)?;
    let out = node.cni(
        "ADD",
        "c1",
        &pod.path(),
        "net1",
        &node.netconf(0, json!({})),
    )?;
    assert_eq!(out.code(), Some(107), "{:?}", out.json);
    assert!(out.msg().contains("net1"));
    assert_eq!(host_snapshot(&node, &vf)?, before);
    Ok(())
}

#[test]
fn the_vf_host_name_may_equal_the_pod_name_without_collisions() -> Result<()> {
    // Upstream #40/#49: a VF called like the pod interface. The temporary netns keeps the two
    // names apart on the way in and out.
    require_root!();
    let node = Node::new(1)?;
    let pod = Netns::new("pod")?;
    let vf = node.vf_netdevs[0].clone();
    let out = node.cni("ADD", "c1", &pod.path(), &vf, &node.netconf(0, json!({})))?;
    assert!(out.ok, "{:?}", out.json);
    link_facts(Some(&pod), &vf)?;
    let del = node.cni("DEL", "c1", &pod.path(), &vf, &node.netconf(0, json!({})))?;
    assert!(del.ok, "{:?}", del.json);
    assert!(host_has(&vf));
    Ok(())
}

#[test]
fn mtu_is_applied_in_the_pod_and_restored_on_del() -> Result<()> {
    require_root!();
    let node = Node::new(1)?;
    let pod = Netns::new("pod")?;
    let vf = node.vf_netdevs[0].clone();
    let conf = node.netconf(0, json!({"mtu": 1400, "cniVersion": "0.4.0"}));
    let add = node.cni("ADD", "c1", &pod.path(), "net1", &conf)?;
    assert!(add.ok, "{:?}", add.json);
    assert_eq!(link_facts(Some(&pod), "net1")?["mtu"], 1400);
    // 0.4.0 results carry ips[].version and no interface mtu.
    assert_eq!(add.json["cniVersion"], "0.4.0");
    assert_eq!(add.json["ips"][0]["version"], "4");
    assert!(add.json["interfaces"][0].get("mtu").is_none());
    let del = node.cni("DEL", "c1", &pod.path(), "net1", &conf)?;
    assert!(del.ok, "{:?}", del.json);
    assert_eq!(link_facts(None, &vf)?["mtu"], 1500);
    Ok(())
}

#[test]
fn del_copes_with_a_gone_netns_an_empty_netns_and_a_lost_cache() -> Result<()> {
    require_root!();
    let node = Node::new(3)?;
    let conf = |vf| node.netconf(vf, json!({}));

    // Netns deleted before DEL (kubelet #43014): IP released, state cleaned, success.
    let mut pod = Netns::new("pod")?;
    let path = pod.path();
    assert!(node.cni("ADD", "c1", &path, "net1", &conf(0))?.ok);
    pod.delete()?;
    let del = node.cni("DEL", "c1", &path, "net1", &conf(0))?;
    assert!(del.ok, "{:?}", del.json);
    assert!(
        node.allocated_ips().is_empty(),
        "{:?}",
        node.allocated_ips()
    );
    assert!(node.state_files().is_empty(), "{:?}", node.state_files());

    // Empty CNI_NETNS: the cache knows the netns; the VF comes home.
    let pod = Netns::new("pod")?;
    assert!(node.cni("ADD", "c2", &pod.path(), "net1", &conf(1))?.ok);
    let del = node.cni("DEL", "c2", "", "net1", &conf(1))?;
    assert!(del.ok, "{:?}", del.json);
    assert!(host_has(&node.vf_netdevs[1]));
    assert!(node.allocated_ips().is_empty());

    // Cache lost: DEL still releases the IP and the allocation (deviceID from stdin).
    assert!(node.cni("ADD", "c3", &pod.path(), "net2", &conf(2))?.ok);
    std::fs::remove_file(node.state_dir().join("c3-net2"))?;
    let del = node.cni("DEL", "c3", &pod.path(), "net2", &conf(2))?;
    assert!(del.ok, "{:?}", del.json);
    assert!(node.allocated_ips().is_empty());
    assert!(node.state_files().is_empty(), "{:?}", node.state_files());
    Ok(())
}

/// Runs ADD `c<i>` for every pod `i` at once, each on VF `vf(i)`, and returns the outcomes in pod
/// order.
fn concurrent_adds(
    node: &Node,
    pods: &[Netns],
    vf: impl Fn(usize) -> usize + Sync,
) -> Result<Vec<common::Outcome>> {
    std::thread::scope(|s| {
        let handles: Vec<_> = pods
            .iter()
            .enumerate()
            .map(|(i, pod)| {
                let vf = &vf;
                s.spawn(move || {
                    node.cni(
                        "ADD",
                        &format!("c{i}"),
                        &pod.path(),
                        "net1",
                        &node.netconf(vf(i), json!({})),
                    )
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect::<Result<Vec<_>>>()
    })
}

#[test]
fn concurrent_adds_on_different_vfs_all_succeed() -> Result<()> {
    require_root!();
    let node = Node::new(4)?;
    let pods: Vec<Netns> = (0..4).map(|_| Netns::new("pod")).collect::<Result<_>>()?;
    let outs = concurrent_adds(&node, &pods, |i| i)?;
    let mut ips: Vec<String> = outs
        .iter()
        .map(|o| {
            assert!(o.ok, "{:?}", o.json);
            o.json["ips"][0]["address"].as_str().unwrap().to_owned()
        })
        .collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 4, "duplicate IPs: {ips:?}");
    for (i, pod) in pods.iter().enumerate() {
        assert!(
            node.cni(
                "DEL",
                &format!("c{i}"),
                &pod.path(),
                "net1",
                &node.netconf(i, json!({}))
            )?
            .ok
        );
    }
    assert!(node.allocated_ips().is_empty());
    Ok(())
}

#[test]
fn two_adds_racing_for_one_vf_one_wins_one_gets_try_again_later() -> Result<()> {
    require_root!();
    let node = Node::new(1)?;
    let pods = [Netns::new("pod")?, Netns::new("pod")?];
    let outs = concurrent_adds(&node, &pods, |_| 0)?;
    let winners: Vec<usize> = (0..2).filter(|i| outs[*i].ok).collect();
    assert_eq!(winners.len(), 1, "{outs:?}");
    let loser = 1 - winners[0];
    assert_eq!(outs[loser].code(), Some(11), "{:?}", outs[loser].json);
    assert_eq!(
        node.allocated_ips().len(),
        1,
        "the loser must not hold an IP"
    );
    // The loser's DEL (the runtime always sends one) must not disturb the winner.
    let del = node.cni(
        "DEL",
        &format!("c{loser}"),
        &pods[loser].path(),
        "net1",
        &node.netconf(0, json!({})),
    )?;
    assert!(del.ok);
    link_facts(Some(&pods[winners[0]]), "net1")?;
    assert_eq!(node.allocated_ips().len(), 1);
    Ok(())
}

#[test]
fn version_answers_fast_and_status_and_gc_work() -> Result<()> {
    require_root!();
    let node = Node::new(2)?;
    let start = std::time::Instant::now();
    let out = node.cni_raw("VERSION", "", "", "", b"{\"cniVersion\":\"1.1.0\"}", &[])?;
    let took = start.elapsed();
    assert!(out.ok);
    assert_eq!(out.json["supportedVersions"].as_array().unwrap().len(), 7);
    assert!(
        took < std::time::Duration::from_millis(200),
        "VERSION took {took:?}"
    );

    let mut conf11 = node.netconf(0, json!({"cniVersion": "1.1.0"}));
    let status = node.cni("STATUS", "", "", "", &conf11)?;
    assert!(status.ok, "{:?}", status.json);
    conf11["ipam"]["type"] = json!("no-such-ipam");
    let status = node.cni("STATUS", "", "", "", &conf11)?;
    assert_eq!(status.code(), Some(50), "{:?}", status.json);
    let old = node.cni("STATUS", "", "", "", &node.netconf(0, json!({})))?;
    assert_eq!(old.code(), Some(1), "STATUS needs 1.1.0: {:?}", old.json);

    // GC: two attachments, only one still valid.
    let pod = Netns::new("pod")?;
    let other = Netns::new("pod")?;
    assert!(
        node.cni(
            "ADD",
            "keep",
            &pod.path(),
            "net1",
            &node.netconf(0, json!({}))
        )?
        .ok
    );
    let stale = node.cni(
        "ADD",
        "stale",
        &other.path(),
        "net2",
        &node.netconf(1, json!({})),
    )?;
    assert!(stale.ok, "{:?} {}", stale.json, stale.stderr);
    let mut gc = node.netconf(0, json!({"cniVersion": "1.1.0"}));
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "keep", "ifname": "net1"}]);
    let out = node.cni("GC", "", "", "", &gc)?;
    assert!(out.ok, "{:?}", out.json);
    assert!(
        host_has(&node.vf_netdevs[1]),
        "the stale VF is back in the host"
    );
    link_facts(Some(&pod), "net1")?;
    assert_eq!(node.state_files().len(), 2, "{:?}", node.state_files());
    assert_eq!(node.allocated_ips().len(), 1, "{:?}", node.allocated_ips());
    Ok(())
}

#[test]
fn the_pod_ips_are_announced_to_the_neighbours() -> Result<()> {
    // After ADD a neighbour on the VF's wire learns the pod's IPv4 and IPv6 addresses with the
    // VF's MAC without asking (gratuitous ARP, unsolicited NA), so an IP reused by a new pod is
    // not sent to the old MAC.
    require_root!();
    let (node, pod, peer) = listening_wire(true)?;
    let ipam = json!({
        "type": "host-local",
        "dataDir": node.ipam_dir(),
        "ranges": [[{"subnet": "10.77.0.0/24"}], [{"subnet": "fd00:77::/64"}]]
    });
    let add = node.cni(
        "ADD",
        "c1",
        &pod.path(),
        "net1",
        &node.netconf(0, json!({"ipam": ipam})),
    )?;
    assert!(add.ok, "{:?}", add.json);
    let mac = added_mac(&add);
    let neigh = wire_neighbours(&node, &peer, &["10.77.0.2 ", "fd00:77::2 "], 100)?;
    assert!(
        neigh.contains(&format!("10.77.0.2 lladdr {mac}")),
        "wire neighbours: {neigh:?}"
    );
    assert!(
        neigh.contains(&format!("fd00:77::2 lladdr {mac}")),
        "wire neighbours: {neigh:?}"
    );
    Ok(())
}

/// A one-VF node and a pod, with the VF's wire peer addressed in 10.77.0.0/24 (and fd00:77::/64
/// when `ipv6`) and set to keep unsolicited announcements; returns the peer's name too.
fn listening_wire(ipv6: bool) -> Result<(Node, Netns, String)> {
    let node = Node::new(1)?;
    let pod = Netns::new("pod")?;
    let peer = format!("{}w0", node.tag);
    node.wire
        .ip(&["addr", "add", "10.77.0.200/24", "dev", &peer])?;
    wire_sysctl(&node, &format!("net.ipv4.conf.{peer}.arp_accept=1"))?;
    if ipv6 {
        node.wire
            .ip(&["addr", "add", "fd00:77::200/64", "dev", &peer, "nodad"])?;
        // Linux keeps an unsolicited NA only on a router that asks for it.
        wire_sysctl(&node, &format!("net.ipv6.conf.{peer}.forwarding=1"))?;
        wire_sysctl(
            &node,
            &format!("net.ipv6.conf.{peer}.accept_untracked_na=2"),
        )?;
    }
    Ok((node, pod, peer))
}

/// Sets a sysctl inside the wire's network namespace (the neighbour side of the VFs).
fn wire_sysctl(node: &Node, setting: &str) -> Result<()> {
    common::sh(&[
        "ip",
        "netns",
        "exec",
        &node.wire.name,
        "sysctl",
        "-qw",
        setting,
    ])?;
    Ok(())
}

/// The MAC of the first interface in an ADD result.
fn added_mac(add: &common::Outcome) -> String {
    add.json["interfaces"][0]["mac"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Polls the wire peer's neighbour table (IPv6 too when an entry to wait for is an IPv6 address)
/// every 20 ms, up to `tries` times, until every `entries` text appears; returns the last table
/// for the caller's assertions.
fn wire_neighbours(node: &Node, peer: &str, entries: &[&str], tries: usize) -> Result<String> {
    let ipv6 = entries.iter().any(|e| e.contains(':'));
    let mut neigh = String::new();
    for _ in 0..tries {
        neigh = node.wire.ip(&["neigh", "show", "dev", peer])?;
        if ipv6 {
            neigh += &node.wire.ip(&["-6", "neigh", "show", "dev", peer])?;
        }
        if entries.iter().all(|e| neigh.contains(e)) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Ok(neigh)
}

#[test]
fn the_pod_may_own_an_interface_named_like_the_vf_in_the_host() -> Result<()> {
    // #40/#49: the pod has its own interface with the VF's host name. ADD must not clash with
    // it on the way in, DEL must bring the VF home through a temporary netns and leave the
    // pod's interface alone.
    require_root!();
    let node = Node::new(1)?;
    let pod = Netns::new("pod")?;
    let vf = node.vf_netdevs[0].clone();
    pod.ip(&["link", "add", &vf, "type", "veth", "peer", "name", "mine"])?;
    let before = link_facts(None, &vf)?;
    let conf = node.netconf(0, json!({}));
    let add = node.cni("ADD", "c1", &pod.path(), "net1", &conf)?;
    assert!(add.ok, "{:?}", add.json);
    assert_eq!(
        link_facts(Some(&pod), "net1")?["address"],
        before["address"]
    );
    let del = node.cni("DEL", "c1", &pod.path(), "net1", &conf)?;
    assert!(del.ok, "{:?} {}", del.json, del.stderr);
    assert_eq!(link_facts(None, &vf)?["address"], before["address"]);
    assert_ne!(
        link_facts(Some(&pod), &vf)?["address"],
        before["address"],
        "the pod's own interface"
    );
    assert!(pod.ip(&["link", "show", "dev", "net1"]).is_err());
    Ok(())
}

#[test]
fn dual_stack_legacy_results_logging_and_check_failures() -> Result<()> {
    require_root!();
    let node = Node::new(2)?;
    let pod = Netns::new("pod")?;
    let log = node.dir.path().join("cni.log");
    let ipam = json!({
        "type": "host-local",
        "dataDir": node.ipam_dir(),
        "ranges": [
            [{"subnet": "10.77.0.0/24", "gateway": "10.77.0.1"}],
            [{"subnet": "fd00:77::/64", "gateway": "fd00:77::1"}]
        ],
        "routes": [{"dst": "10.78.0.0/16"}, {"dst": "fd00:78::/64"}]
    });
    let conf = node.netconf(
        0,
        json!({"ipam": ipam, "logLevel": "debug", "logFile": log}),
    );
    let add = node.cni("ADD", "c1", &pod.path(), "net1", &conf)?;
    assert!(add.ok, "{:?} {}", add.json, add.stderr);
    assert!(
        add.stderr.is_empty(),
        "logs must go to logFile: {:?}",
        add.stderr
    );
    let logged = std::fs::read_to_string(&log)?;
    assert!(logged.contains("attached VF 0000:3b:00.1"), "{logged}");
    assert!(
        logged.contains("[debug]") && logged.contains("original state:"),
        "{logged}"
    );
    let addrs = pod.ip(&["addr", "show", "dev", "net1"])?;
    assert!(
        addrs.contains("10.77.0.2/24") && addrs.contains("fd00:77::2/64"),
        "{addrs}"
    );
    let routes6 = pod.ip(&["-6", "route", "show"])?;
    assert!(
        routes6.contains("fd00:78::/64 via fd00:77::1 dev net1"),
        "{routes6}"
    );

    // CHECK notices an address that went away.
    let mut check = conf.clone();
    check["prevResult"] = add.json.clone();
    assert!(node.cni("CHECK", "c1", &pod.path(), "net1", &check)?.ok);
    pod.ip(&["addr", "del", "10.77.0.2/24", "dev", "net1"])?;
    let bad = node.cni("CHECK", "c1", &pod.path(), "net1", &check)?;
    assert_eq!(bad.code(), Some(106), "{:?}", bad.json);
    assert!(bad.msg().contains("10.77.0.2/24"), "{}", bad.msg());
    // CHECK is not allowed before 0.4.0.
    let mut old = check.clone();
    old["cniVersion"] = json!("0.3.1");
    assert_eq!(
        node.cni("CHECK", "c1", &pod.path(), "net1", &old)?.code(),
        Some(1)
    );
    assert!(node.cni("DEL", "c1", &pod.path(), "net1", &conf)?.ok);

    // A 0.2.0 runtime gets the legacy ip4/ip6 shape.
    let legacy = node.netconf(1, json!({"cniVersion": "0.2.0"}));
    let add = node.cni("ADD", "c2", &pod.path(), "net2", &legacy)?;
    assert!(add.ok, "{:?}", add.json);
    assert_eq!(add.json["cniVersion"], "0.2.0");
    let ip4 = add.json["ip4"]["ip"].as_str().unwrap_or_default();
    assert!(
        ip4.starts_with("10.77.0.") && ip4.ends_with("/24"),
        "{:?}",
        add.json
    );
    assert_eq!(add.json["ip4"]["gateway"], "10.77.0.1");
    assert!(add.json.get("interfaces").is_none());
    assert!(node.cni("DEL", "c2", &pod.path(), "net2", &legacy)?.ok);
    assert!(
        node.allocated_ips().is_empty(),
        "{:?}",
        node.allocated_ips()
    );
    Ok(())
}

#[test]
fn an_ip_is_announced_even_when_carrier_comes_after_link_up() -> Result<()> {
    // Real VFs get carrier some milliseconds after they are set up, so the kernel's own
    // announcement at link-up is lost; ADD waits for carrier (up to 200 ms) and sends one.
    require_root!();
    let (node, pod, peer) = listening_wire(false)?;
    node.wire.ip(&["link", "set", &peer, "down"])?;
    let add = std::thread::scope(|s| -> Result<common::Outcome> {
        let add = s.spawn(|| {
            node.cni(
                "ADD",
                "c1",
                &pod.path(),
                "net1",
                &node.netconf(0, json!({})),
            )
        });
        // Give the VF carrier as soon as ADD has set it up.
        let start = std::time::Instant::now();
        while start.elapsed() < std::time::Duration::from_secs(5) {
            if pod
                .ip(&["link", "show", "dev", "net1"])
                .is_ok_and(|l| l.contains(",UP"))
            {
                node.wire.ip(&["link", "set", &peer, "up"])?;
                break;
            }
        }
        add.join().unwrap()
    })?;
    assert!(add.ok, "{:?}", add.json);
    let mac = added_mac(&add);
    let neigh = wire_neighbours(&node, &peer, &["10.77.0.2 "], 50)?;
    assert!(
        neigh.contains(&format!("10.77.0.2 lladdr {mac}")),
        "wire neighbours: {neigh:?}"
    );
    Ok(())
}

#[test]
fn del_finishes_an_attachment_made_by_the_go_plugin() -> Result<()> {
    // An upgrade: sriov-cni ADDed this pod (moved the VF in as net1, changed its MAC and MTU, wrote
    // its cache and allocation marker); vfpool-cni gets the DEL.
    require_root!();
    let node = Node::new(1)?;
    let pod = Netns::new("pod")?;
    let vf = node.vf_netdevs[0].clone();
    let before = link_facts(None, &vf)?;
    common::sh(&["ip", "link", "set", &vf, "netns", &pod.name, "name", "net1"])?;
    pod.ip(&[
        "link",
        "set",
        "net1",
        "address",
        "02:00:00:00:00:99",
        "mtu",
        "1400",
        "up",
    ])?;
    let go_cache = json!({
        "cniVersion": "1.0.0", "name": "sriov-test", "type": "sriov",
        "OrigVfState": {"HostIFName": vf, "SpoofChk": false, "Trust": false,
            "AdminMAC": "", "EffectiveMAC": before["address"], "Vlan": 0, "VlanQoS": 0,
            "VlanProto": 0, "MinTxRate": 0, "MaxTxRate": 0, "LinkState": 0, "MTU": 1500},
        "Master": node.pf, "MAC": "02:00:00:00:00:99", "MTU": 1500, "vlan": null,
        "deviceID": node.vf_pci[0], "VFID": 0, "runtimeConfig": {}
    });
    std::fs::create_dir_all(node.state_dir().join("pci"))?;
    std::fs::write(node.state_dir().join("goctr-net1"), go_cache.to_string())?;
    std::fs::write(
        node.state_dir().join("pci").join(&node.vf_pci[0]),
        pod.path(),
    )?;

    let mut conf = node.netconf(0, json!({}));
    conf.as_object_mut().unwrap().remove("ipam");
    let del = node.cni("DEL", "goctr", &pod.path(), "net1", &conf)?;
    assert!(del.ok, "{:?} {}", del.json, del.stderr);
    let home = link_facts(None, &vf)?;
    assert_eq!(home["address"], before["address"]);
    assert_eq!(home["mtu"], 1500);
    assert!(pod.ip(&["link", "show", "dev", "net1"]).is_err());
    assert!(node.state_files().is_empty(), "{:?}", node.state_files());
    Ok(())
}

#[test]
fn del_without_a_cache_succeeds_though_the_ipam_del_fails() -> Result<()> {
    require_root!();
    let node = Node::new(1)?;
    let pod = Netns::new("nocache")?;
    // host-local with a config it refuses, and dhcp without its daemon: both fail every DEL.
    // No ADD of ours ran, so there is nothing to retry for (sriov-cni returns success).
    for ipam in [
        json!({"type": "host-local", "dataDir": node.ipam_dir()}),
        json!({"type": "dhcp"}),
    ] {
        let conf = node.netconf(0, json!({ "ipam": ipam }));
        let del = node.cni("DEL", "c1", &pod.path(), "net1", &conf)?;
        assert!(del.ok, "{ipam}: {:?} {}", del.json, del.stderr);
        assert!(del.stderr.contains("[warning]"), "{}", del.stderr);
        assert!(node.state_files().is_empty(), "{:?}", node.state_files());
    }
    Ok(())
}

#[test]
fn a_del_that_keeps_failing_gives_up_and_forgets_the_attachment() -> Result<()> {
    require_root!();
    let node = Node::new(1)?;
    let pod = Netns::new("giveup")?;
    let conf = node.netconf(0, json!({}));
    let add = node.cni("ADD", "c1", &pod.path(), "net1", &conf)?;
    assert!(add.ok, "{:?} {}", add.json, add.stderr);
    // A CNI_NETNS that cannot even be opened (a unix socket: ENXIO) fails every release. (A
    // plain file there is a netns gone: what a runtime that unmounted it leaves behind.)
    let not_netns = node.dir.path().join("not-a-netns");
    let _socket = std::os::unix::net::UnixListener::bind(&not_netns)?;
    let not_netns = not_netns.display().to_string();
    for attempt in 1..vfpool_cni::plugin::DEL_ATTEMPTS {
        let del = node.cni("DEL", "c1", &not_netns, "net1", &conf)?;
        assert!(!del.ok, "attempt {attempt} succeeded");
        assert!(del.msg().contains(&not_netns), "{}", del.msg());
        assert_eq!(node.state_files().len(), 2, "{:?}", node.state_files());
    }
    let del = node.cni("DEL", "c1", &not_netns, "net1", &conf)?;
    assert!(del.ok, "{:?} {}", del.json, del.stderr);
    assert!(
        del.stderr.contains("[error]") && del.stderr.contains("giving up"),
        "{}",
        del.stderr
    );
    assert!(del.stderr.contains(&not_netns), "{}", del.stderr);
    assert!(node.state_files().is_empty(), "{:?}", node.state_files());
    assert!(
        node.allocated_ips().is_empty(),
        "{:?}",
        node.allocated_ips()
    );
    Ok(())
}
