//! The real netlink seam against the real kernel (as root): every operation the plugin uses,
//! including the ones the veth-based end-to-end tests do not reach (altnames, temporary netns).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use anyhow::Result;
use common::{Netns, Veth, unique};
use vfpool_cni::mac::MacAddr;
use vfpool_cni::netlink::real::RealNetlink;
use vfpool_cni::netlink::{LinkRef, Netlink, NetlinkError, NsId};
use vfpool_cni::result::Route;

/// ADD refuses CNI_NETNS naming the plugin's own namespace (skel's code 8): the real seam tells
/// it apart from a pod's by the namespace itself, whatever path names it.
#[test]
fn the_host_netns_is_told_from_a_pods() -> Result<()> {
    require_root!();
    let pod = Netns::new("own")?;
    let mut nl = RealNetlink::new()?;
    assert!(nl.is_host_netns(Path::new("/proc/self/ns/net"))?);
    assert!(nl.is_host_netns(Path::new("/proc/thread-self/ns/net"))?);
    assert!(!nl.is_host_netns(Path::new(&pod.path()))?);
    // Nothing there, or no namespace: not the host's (opening it says what is wrong).
    assert!(!nl.is_host_netns(Path::new("/run/netns/vfpool-no-such-ns"))?);
    assert!(!nl.is_host_netns(Path::new("/proc/self/status"))?);
    Ok(())
}

#[test]
fn link_operations_across_namespaces() -> Result<()> {
    require_root!();
    let pod = Netns::new("rnl")?;
    let a = unique("ra");
    let b = unique("rb");
    let _veth = Veth::new(&a, &b)?;
    let alt = unique("alt");
    common::sh(&["ip", "link", "property", "add", "dev", &a, "altname", &alt])?;

    let mut nl = RealNetlink::new()?;
    let link = nl.link(NsId::HOST, &a)?.expect("veth end");
    assert!(link.altnames.contains(&alt), "{link:?}");
    // A lookup by altname finds the same link, as the kernel resolves IFLA_IFNAME.
    assert!(nl.link(NsId::HOST, "no-such-link0").unwrap().is_none());
    // A veth reports no VF information.
    assert_eq!(nl.vfs(&a)?, None);

    nl.del_altname(NsId::HOST, &a, &alt)?;
    assert!(nl.link(NsId::HOST, &a)?.unwrap().altnames.is_empty());

    let mac = MacAddr([0x02, 0x11, 0x22, 0x33, 0x44, 0x55]);
    nl.set_mac(NsId::HOST, &a, mac)?;
    nl.set_mtu(NsId::HOST, &a, 1400)?;
    let link = nl.link(NsId::HOST, &a)?.unwrap();
    assert_eq!((link.mac, link.mtu), (Some(mac), 1400));

    // Into the pod under a new name, in one move, as a lookup found it: renamed in between (as
    // udev renames a new netdev, while its old name goes to another), it is that link that moves.
    let found = nl.link(NsId::HOST, &a)?.expect("veth end");
    let renamed = unique("rr");
    nl.rename(NsId::HOST, &a, &renamed)?;
    let ns = nl.open_netns(Path::new(&pod.path()))?;
    nl.move_link(NsId::HOST, LinkRef::found(&found), ns, "net7")?;
    assert!(nl.link(NsId::HOST, &renamed)?.is_none());
    assert_eq!(nl.link(ns, "net7")?.expect("moved").index, found.index);
    nl.set_sysctls(ns, &[("net/ipv4/conf/net7/arp_notify".into(), "1")])?;
    assert_eq!(
        common::sh(&[
            "ip",
            "netns",
            "exec",
            &pod.name,
            "cat",
            "/proc/sys/net/ipv4/conf/net7/arp_notify"
        ])?
        .trim(),
        "1"
    );
    let addr = "10.66.0.5/24".parse().unwrap();
    nl.add_address(ns, "net7", addr)?;
    nl.set_up(ns, "net7", true)?;
    let route = Route {
        dst: "10.67.0.0/16".parse().unwrap(),
        gw: None,
        mtu: Some(1300),
        advmss: None,
        priority: Some(7),
        table: None,
        scope: None,
    };
    nl.add_route(ns, "net7", &route, Some("10.66.0.1".parse()?))?;
    assert_eq!(nl.addresses(ns, "net7")?, vec![addr]);
    let routes = pod.ip(&["route", "show", "10.67.0.0/16"])?;
    assert!(
        routes.contains("via 10.66.0.1")
            && routes.contains("metric 7")
            && routes.contains("mtu 1300"),
        "{routes}"
    );

    // Out again through a temporary namespace, renamed on the way.
    let temp = nl.create_temp_netns()?;
    nl.move_link(ns, LinkRef::Name("net7"), temp, &a)?;
    assert!(nl.link(temp, &a)?.is_some());
    nl.rename(temp, &a, "tmpname0")?;
    nl.move_link(temp, LinkRef::Name("tmpname0"), NsId::HOST, &a)?;
    nl.close_netns(temp);
    let home = nl.link(NsId::HOST, &a)?.expect("home");
    assert_eq!(home.mac, Some(mac));
    assert!(!home.up, "a moved link comes back down");

    // Errors carry the kernel's answer.
    let err = nl.set_mtu(NsId::HOST, &a, 10).unwrap_err();
    assert!(matches!(err, NetlinkError::Kernel { .. }), "{err}");
    let missing = nl
        .open_netns(Path::new("/run/netns/definitely-not-here"))
        .unwrap_err();
    assert!(
        matches!(missing, NetlinkError::NetnsNotFound { .. }),
        "{missing}"
    );
    let not_ns = nl.open_netns(Path::new("/etc/hostname")).unwrap_err();
    assert!(matches!(not_ns, NetlinkError::NotANetns { .. }), "{not_ns}");
    Ok(())
}

/// An IPAM route the pod already has (a default route from the primary network) is added next
/// to it, as upstream's ConfigureIface (RouteAddEcmp: NLM_F_CREATE without NLM_F_EXCL) does,
/// instead of failing ADD with EEXIST.
#[test]
fn a_route_the_pod_already_has_is_added_beside_it() -> Result<()> {
    require_root!();
    let pod = Netns::new("rrt")?;
    let a = unique("rr");
    let b = unique("rs");
    let _veth = Veth::new(&a, &b)?;
    // The primary network's interface and default route; gone with the netns.
    pod.ip(&[
        "link", "add", "prim0", "type", "veth", "peer", "name", "prim1",
    ])?;
    pod.ip(&["addr", "add", "10.70.0.2/24", "dev", "prim0"])?;
    pod.ip(&["link", "set", "prim0", "up"])?;
    pod.ip(&[
        "route",
        "add",
        "default",
        "via",
        "10.70.0.1",
        "dev",
        "prim0",
    ])?;

    let mut nl = RealNetlink::new()?;
    let ns = nl.open_netns(Path::new(&pod.path()))?;
    nl.move_link(NsId::HOST, LinkRef::Name(&a), ns, "net8")?;
    nl.add_address(ns, "net8", "10.71.0.5/24".parse().unwrap())?;
    nl.set_up(ns, "net8", true)?;
    let route = Route {
        dst: "0.0.0.0/0".parse().unwrap(),
        gw: None,
        mtu: None,
        advmss: None,
        priority: None,
        table: None,
        scope: None,
    };
    nl.add_route(ns, "net8", &route, Some("10.71.0.1".parse()?))?;
    let routes = pod.ip(&["route", "show", "default"])?;
    assert!(
        routes.contains("via 10.70.0.1 dev prim0") && routes.contains("via 10.71.0.1 dev net8"),
        "{routes}"
    );
    Ok(())
}
