//! [`Netlink`] over rtnetlink: netlink-packet-route messages on synchronous netlink-sys sockets.
//!
//! A netlink socket belongs to the namespace of the thread that created it, so each namespace gets
//! its own socket, created on a short-lived thread inside it (see [`crate::netns`]); after that the
//! socket is used from the main thread. No async runtime.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
use netlink_packet_route::link::{
    LinkAttribute, LinkExtentMask, LinkFlags, LinkMessage, LinkVfInfo, Prop, VfInfo,
    VfInfoLinkState, VfInfoMac, VfInfoRate, VfInfoSpoofCheck, VfInfoTrust, VfVlan, VfVlanInfo,
    VlanProtocol,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteMetric, RouteProtocol,
    RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

use super::{LinkInfo, LinkRef, Netlink, NetlinkError, NsId, VfSetting, VfState};
use crate::mac::MacAddr;
use crate::netconf::{VfLinkState, VlanProto};
use crate::netns;
use crate::result::{IpNet, Route};

struct Conn {
    socket: Socket,
    ns_fd: OwnedFd,
    label: String,
    seq: u32,
    /// A thread parked inside the namespace for later work there (sysctls); none for the host.
    resident: Option<netns::Resident>,
}

/// The real kernel.
pub struct RealNetlink {
    conns: HashMap<u32, Conn>,
    next: u32,
}

fn new_socket() -> io::Result<Socket> {
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    Ok(socket)
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

impl RealNetlink {
    /// Connects to the calling thread's namespace as [`NsId::HOST`].
    pub fn new() -> Result<Self, NetlinkError> {
        let ns_fd = netns::current()?;
        let socket = new_socket().map_err(|source| NetlinkError::Netns {
            what: "open a netlink socket".into(),
            source,
        })?;
        let mut conns = HashMap::new();
        conns.insert(
            0,
            Conn {
                socket,
                ns_fd,
                label: "the host network namespace".into(),
                seq: 0,
                resident: None,
            },
        );
        Ok(RealNetlink { conns, next: 1 })
    }

    fn conn(&mut self, ns: NsId) -> Result<&mut Conn, NetlinkError> {
        self.conns
            .get_mut(&ns.0)
            .ok_or(NetlinkError::UnknownNs(ns.0))
    }

    fn add_conn(
        &mut self,
        socket: Socket,
        ns_fd: OwnedFd,
        label: String,
        resident: Option<netns::Resident>,
    ) -> NsId {
        let id = self.next;
        self.next += 1;
        self.conns.insert(
            id,
            Conn {
                socket,
                ns_fd,
                label,
                seq: 0,
                resident,
            },
        );
        NsId(id)
    }

    /// Sends one request and collects the answers until the ACK (or DONE for dumps).
    fn request(
        &mut self,
        ns: NsId,
        op: &dyn Fn() -> String,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>, NetlinkError> {
        let conn = self.conn(ns)?;
        conn.seq = conn.seq.wrapping_add(1);
        let seq = conn.seq;
        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let mut nl = NetlinkMessage::from(msg);
        nl.header.flags = NLM_F_REQUEST | flags | if dump { 0 } else { NLM_F_ACK };
        nl.header.sequence_number = seq;
        nl.finalize();
        let mut buf = vec![0u8; nl.buffer_len()];
        nl.serialize(&mut buf);
        let kernel = |source: io::Error| NetlinkError::Kernel { op: op(), source };
        conn.socket.send(&buf, 0).map_err(kernel)?;
        let mut out = Vec::new();
        loop {
            let (data, _) = conn.socket.recv_from_full().map_err(kernel)?;
            let mut offset = 0;
            while offset < data.len() {
                let chunk = &data[offset..];
                let msg =
                    NetlinkMessage::<RouteNetlinkMessage>::deserialize(chunk).map_err(|e| {
                        NetlinkError::Decode {
                            op: op(),
                            detail: e.to_string(),
                        }
                    })?;
                let len = msg.header.length as usize;
                if len == 0 {
                    break;
                }
                offset += align4(len);
                if msg.header.sequence_number != seq {
                    continue;
                }
                match msg.payload {
                    NetlinkPayload::Done(_) => return Ok(out),
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            None => Ok(out),
                            Some(_) => Err(kernel(e.to_io())),
                        };
                    }
                    NetlinkPayload::InnerMessage(m) => {
                        out.push(m);
                    }
                    _ => {}
                }
            }
        }
    }

    fn get_link(
        &mut self,
        ns: NsId,
        name: &str,
        vfs: bool,
    ) -> Result<Option<LinkMessage>, NetlinkError> {
        let msg = link_query(name, vfs);
        let op = || format!("looking up link {name:?}");
        match self.request(ns, &op, RouteNetlinkMessage::GetLink(msg), 0) {
            Ok(msgs) => Ok(msgs.into_iter().find_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(l),
                _ => None,
            })),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn index(&mut self, ns: NsId, name: &str) -> Result<u32, NetlinkError> {
        match self.get_link(ns, name, false)? {
            Some(l) => Ok(l.header.index),
            None => Err(NetlinkError::NoSuchLink {
                ns: self.conn(ns)?.label.clone(),
                name: name.to_owned(),
            }),
        }
    }

    fn set_link(
        &mut self,
        ns: NsId,
        name: &str,
        op: &dyn Fn() -> String,
        build: impl FnOnce(&mut LinkMessage),
    ) -> Result<(), NetlinkError> {
        let index = self.index(ns, name)?;
        self.set_link_index(ns, index, op, build)
    }

    fn set_link_index(
        &mut self,
        ns: NsId,
        index: u32,
        op: &dyn Fn() -> String,
        build: impl FnOnce(&mut LinkMessage),
    ) -> Result<(), NetlinkError> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        build(&mut msg);
        self.request(ns, op, RouteNetlinkMessage::SetLink(msg), 0)
            .map(drop)
    }
}

fn link_info(msg: &LinkMessage) -> LinkInfo {
    let mut info = LinkInfo {
        index: msg.header.index,
        name: String::new(),
        mac: None,
        mtu: 0,
        up: msg.header.flags.contains(LinkFlags::Up),
        carrier: msg.header.flags.contains(LinkFlags::LowerUp),
        altnames: Vec::new(),
        parent: None,
    };
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => info.name.clone_from(n),
            LinkAttribute::Address(a) => info.mac = MacAddr::from_slice(a),
            LinkAttribute::Mtu(m) => info.mtu = *m,
            LinkAttribute::ParentDevName(p) => info.parent = Some(p.clone()),
            LinkAttribute::PropList(props) => {
                for p in props {
                    if let Prop::AltIfName(n) = p {
                        info.altnames.push(n.clone());
                    }
                }
            }
            _ => {}
        }
    }
    info
}

fn vf_state(info: &LinkVfInfo) -> Option<VfState> {
    let mut state = VfState {
        vf: u32::MAX,
        mac: MacAddr::ZERO,
        vlan: 0,
        qos: 0,
        proto: VlanProto::Dot1Q,
        spoofchk: false,
        trust: false,
        min_tx_rate: 0,
        max_tx_rate: 0,
        link_state: VfLinkState::Auto,
    };
    for item in &info.0 {
        match item {
            VfInfo::Mac(m) => {
                state.vf = m.vf_id;
                state.mac = MacAddr::from_slice(&m.mac).unwrap_or(MacAddr::ZERO);
            }
            VfInfo::Vlan(v) => {
                state.vlan = v.vlan_id as u16;
                state.qos = v.qos as u8;
            }
            VfInfo::VlanList(list) => {
                if let Some(VfVlan::Info(v)) = list.first() {
                    state.vlan = v.vlan_id as u16;
                    state.qos = v.qos as u8;
                    state.proto = VlanProto::from_ethertype(u16::from(v.protocol));
                }
            }
            VfInfo::Rate(r) => {
                state.min_tx_rate = r.min_tx_rate;
                state.max_tx_rate = r.max_tx_rate;
            }
            VfInfo::SpoofCheck(s) => state.spoofchk = s.enabled,
            VfInfo::Trust(t) => state.trust = t.enabled,
            VfInfo::LinkState(l) => {
                state.link_state = match l.state {
                    netlink_packet_route::link::VfLinkState::Enable => VfLinkState::Enable,
                    netlink_packet_route::link::VfLinkState::Disable => VfLinkState::Disable,
                    _ => VfLinkState::Auto,
                }
            }
            _ => {}
        }
    }
    (state.vf != u32::MAX).then_some(state)
}

fn vf_attr(vf: u32, setting: VfSetting) -> VfInfo {
    match setting {
        VfSetting::Vlan { id, qos, proto } => {
            VfInfo::VlanList(vec![VfVlan::Info(VfVlanInfo::new(
                vf,
                u32::from(id),
                u32::from(qos),
                VlanProtocol::from(proto.ethertype()),
            ))])
        }
        VfSetting::Mac(mac) => VfInfo::Mac(VfInfoMac::new(vf, &mac.0)),
        VfSetting::Rate { min, max } => VfInfo::Rate(VfInfoRate::new(vf, min, max)),
        VfSetting::SpoofChk(on) => VfInfo::SpoofCheck(VfInfoSpoofCheck::new(vf, on)),
        VfSetting::Trust(on) => VfInfo::Trust(VfInfoTrust::new(vf, on)),
        VfSetting::LinkState(state) => VfInfo::LinkState(VfInfoLinkState::new(
            vf,
            match state {
                VfLinkState::Auto => netlink_packet_route::link::VfLinkState::Auto,
                VfLinkState::Enable => netlink_packet_route::link::VfLinkState::Enable,
                VfLinkState::Disable => netlink_packet_route::link::VfLinkState::Disable,
            },
        )),
    }
}

fn family(addr: IpAddr) -> AddressFamily {
    if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    }
}

impl Netlink for RealNetlink {
    fn is_host_netns(&mut self, path: &Path) -> Result<bool, NetlinkError> {
        // No namespace there is not the host's: opening it for real says what is wrong.
        let fd = match netns::open(path) {
            Ok(fd) => fd,
            Err(NetlinkError::NetnsNotFound { .. } | NetlinkError::NotANetns { .. }) => {
                return Ok(false);
            }
            Err(e) => return Err(e),
        };
        let host = self.conn(NsId::HOST)?;
        netns::same(fd.as_fd(), host.ns_fd.as_fd())
    }

    fn open_netns(&mut self, path: &Path) -> Result<NsId, NetlinkError> {
        let fd = netns::open(path)?;
        // One thread enters the namespace, opens the socket there and stays for later work.
        let resident = netns::Resident::enter(fd.as_fd())?;
        let socket = resident
            .run(new_socket)?
            .map_err(|source| NetlinkError::Netns {
                what: format!("open a netlink socket in {}", path.display()),
                source,
            })?;
        Ok(self.add_conn(
            socket,
            fd,
            format!("network namespace {}", path.display()),
            Some(resident),
        ))
    }

    fn create_temp_netns(&mut self) -> Result<NsId, NetlinkError> {
        let (fd, socket) = netns::run_in_new(new_socket)?;
        let socket = socket.map_err(|source| NetlinkError::Netns {
            what: "open a netlink socket in the temporary network namespace".into(),
            source,
        })?;
        Ok(self.add_conn(socket, fd, "the temporary network namespace".into(), None))
    }

    fn close_netns(&mut self, ns: NsId) {
        if ns != NsId::HOST {
            self.conns.remove(&ns.0);
        }
    }

    fn link(&mut self, ns: NsId, name: &str) -> Result<Option<LinkInfo>, NetlinkError> {
        Ok(self.get_link(ns, name, false)?.as_ref().map(link_info))
    }

    fn vfs(&mut self, pf: &str) -> Result<Option<Vec<VfState>>, NetlinkError> {
        let Some(msg) = self.get_link(NsId::HOST, pf, true)? else {
            return Err(NetlinkError::NoSuchLink {
                ns: "the host network namespace".into(),
                name: pf.to_owned(),
            });
        };
        Ok(msg.attributes.iter().find_map(|a| match a {
            LinkAttribute::VfInfoList(list) => Some(list.iter().filter_map(vf_state).collect()),
            _ => None,
        }))
    }

    fn set_vf(&mut self, pf: &str, vf: u32, setting: VfSetting) -> Result<(), NetlinkError> {
        let op = || format!("setting {setting} on VF {vf} of PF {pf}");
        self.set_link(NsId::HOST, pf, &op, |msg| {
            msg.attributes
                .push(LinkAttribute::VfInfoList(vec![LinkVfInfo(vec![vf_attr(
                    vf, setting,
                )])]));
        })
    }

    fn move_link(
        &mut self,
        from: NsId,
        link: LinkRef<'_>,
        to: NsId,
        new_name: &str,
    ) -> Result<(), NetlinkError> {
        let target_label = self.conn(to)?.label.clone();
        let target_fd = self.conn(to)?.ns_fd.as_raw_fd();
        let name = link.name();
        let op = || format!("moving link {name:?} into {target_label} as {new_name:?}");
        let index = match link {
            LinkRef::Name(name) => self.index(from, name)?,
            LinkRef::Found { index, .. } => index,
        };
        self.set_link_index(from, index, &op, |msg| {
            msg.attributes.push(LinkAttribute::NetNsFd(target_fd));
            msg.attributes
                .push(LinkAttribute::IfName(new_name.to_owned()));
        })
    }

    fn rename(&mut self, ns: NsId, name: &str, new_name: &str) -> Result<(), NetlinkError> {
        let op = || format!("renaming link {name:?} to {new_name:?}");
        self.set_link(ns, name, &op, |msg| {
            msg.attributes
                .push(LinkAttribute::IfName(new_name.to_owned()));
        })
    }

    fn del_altname(&mut self, ns: NsId, name: &str, altname: &str) -> Result<(), NetlinkError> {
        let index = self.index(ns, name)?;
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.attributes
            .push(LinkAttribute::PropList(vec![Prop::AltIfName(
                altname.to_owned(),
            )]));
        let op = || format!("deleting altname {altname:?} of link {name:?}");
        self.request(ns, &op, RouteNetlinkMessage::DelLinkProp(msg), 0)
            .map(drop)
    }

    fn set_up(&mut self, ns: NsId, name: &str, up: bool) -> Result<(), NetlinkError> {
        let op = || format!("setting link {name:?} {}", if up { "up" } else { "down" });
        self.set_link(ns, name, &op, |msg| {
            msg.header.change_mask = LinkFlags::Up;
            if up {
                msg.header.flags = LinkFlags::Up;
            }
        })
    }

    fn set_mac(&mut self, ns: NsId, name: &str, mac: MacAddr) -> Result<(), NetlinkError> {
        let op = || format!("setting the MAC of link {name:?} to {mac}");
        self.set_link(ns, name, &op, |msg| {
            msg.attributes.push(LinkAttribute::Address(mac.0.to_vec()));
        })
    }

    fn set_mtu(&mut self, ns: NsId, name: &str, mtu: u32) -> Result<(), NetlinkError> {
        let op = || format!("setting the MTU of link {name:?} to {mtu}");
        self.set_link(ns, name, &op, |msg| {
            msg.attributes.push(LinkAttribute::Mtu(mtu));
        })
    }

    fn add_address(&mut self, ns: NsId, name: &str, addr: IpNet) -> Result<(), NetlinkError> {
        let index = self.index(ns, name)?;
        let mut msg = AddressMessage::default();
        msg.header.family = family(addr.addr);
        msg.header.prefix_len = addr.prefix;
        msg.header.scope = AddressScope::Universe;
        msg.header.index = index;
        msg.attributes.push(AddressAttribute::Local(addr.addr));
        msg.attributes.push(AddressAttribute::Address(addr.addr));
        if let IpAddr::V4(v4) = addr.addr
            && addr.prefix < 31
        {
            let host_mask = u32::MAX >> addr.prefix;
            msg.attributes.push(AddressAttribute::Broadcast(
                (u32::from(v4) | host_mask).into(),
            ));
        }
        let op = || format!("adding address {addr} to link {name:?}");
        self.request(
            ns,
            &op,
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
    }

    fn addresses(&mut self, ns: NsId, name: &str) -> Result<Vec<IpNet>, NetlinkError> {
        let index = self.index(ns, name)?;
        let op = || format!("listing the addresses of link {name:?}");
        let msgs = self.request(
            ns,
            &op,
            RouteNetlinkMessage::GetAddress(AddressMessage::default()),
            NLM_F_DUMP,
        )?;
        let mut out = Vec::new();
        for m in msgs {
            let RouteNetlinkMessage::NewAddress(a) = m else {
                continue;
            };
            if a.header.index != index {
                continue;
            }
            let addr = a.attributes.iter().find_map(|attr| match attr {
                AddressAttribute::Address(ip) => Some(*ip),
                _ => None,
            });
            if let Some(addr) = addr {
                out.push(IpNet {
                    addr,
                    prefix: a.header.prefix_len,
                });
            }
        }
        Ok(out)
    }

    fn add_route(
        &mut self,
        ns: NsId,
        name: &str,
        route: &Route,
        gw: Option<IpAddr>,
    ) -> Result<(), NetlinkError> {
        let index = self.index(ns, name)?;
        let mut msg = RouteMessage::default();
        msg.header.address_family = family(route.dst.addr);
        msg.header.destination_prefix_length = route.dst.prefix;
        msg.header.protocol = RouteProtocol::Boot;
        msg.header.kind = RouteType::Unicast;
        msg.header.scope = if gw.is_some() {
            RouteScope::Universe
        } else {
            RouteScope::Link
        };
        let table = route.table.unwrap_or(u32::from(RouteHeader::RT_TABLE_MAIN));
        msg.header.table = u8::try_from(table).unwrap_or(RouteHeader::RT_TABLE_UNSPEC);
        if table > 255 {
            msg.attributes.push(RouteAttribute::Table(table));
        }
        if route.dst.prefix > 0 {
            msg.attributes
                .push(RouteAttribute::Destination(RouteAddress::from(
                    route.dst.network(),
                )));
        }
        if let Some(gw) = gw {
            msg.attributes
                .push(RouteAttribute::Gateway(RouteAddress::from(gw)));
        }
        msg.attributes.push(RouteAttribute::Oif(index));
        if let Some(p) = route.priority {
            msg.attributes.push(RouteAttribute::Priority(p));
        }
        let mut metrics = Vec::new();
        if let Some(m) = route.mtu {
            metrics.push(RouteMetric::Mtu(m));
        }
        if let Some(m) = route.advmss {
            metrics.push(RouteMetric::Advmss(m));
        }
        if !metrics.is_empty() {
            msg.attributes.push(RouteAttribute::Metrics(metrics));
        }
        let op = || {
            format!(
                "adding route {} via {} dev {name:?}",
                route.dst,
                gw.map_or_else(|| "on-link".to_owned(), |g| g.to_string())
            )
        };
        // NLM_F_CREATE without NLM_F_EXCL, as upstream's ConfigureIface (RouteAddEcmp): a route
        // to a destination the pod already reaches another way (the primary network's default
        // route) is added beside it; only an exact duplicate is EEXIST.
        self.request(ns, &op, RouteNetlinkMessage::NewRoute(msg), NLM_F_CREATE)
            .map(drop)
    }

    fn announce(
        &mut self,
        ns: NsId,
        name: &str,
        carrier_wait: Duration,
    ) -> Result<(), NetlinkError> {
        // A frame sent before carrier is dropped; sriov-cni waits up to 200 ms, polling with a
        // backoff from 2 ms.
        let deadline = Instant::now() + carrier_wait;
        let mut delay = Duration::from_millis(2);
        let mac = loop {
            let link = self.get_link(ns, name, false)?.map(|m| link_info(&m));
            match link {
                Some(l) if l.carrier => break l.mac,
                Some(_) if Instant::now() < deadline => {
                    std::thread::sleep(delay);
                    delay = (delay * 3 / 2).min(Duration::from_millis(50));
                }
                Some(_) => return Ok(()),
                None => {
                    return Err(NetlinkError::NoSuchLink {
                        ns: self.conn(ns)?.label.clone(),
                        name: name.to_owned(),
                    });
                }
            }
        };
        // Setting the link's own MAC again raises NETDEV_CHANGEADDR, on which the kernel sends a
        // gratuitous ARP for every IPv4 address (arp_notify) and an unsolicited NA for every IPv6
        // one (ndisc_notify). Cheaper than a packet socket, whose close waits for an RCU grace
        // period (~10 ms), and it covers both families.
        match mac {
            Some(mac) => self.set_mac(ns, name, mac),
            None => Ok(()),
        }
    }

    fn set_sysctls(&mut self, ns: NsId, settings: &[(String, &str)]) -> Result<(), NetlinkError> {
        for (key, _) in settings {
            if key.split('/').any(|part| part == ".." || part.is_empty()) {
                return Err(NetlinkError::Netns {
                    what: format!("write sysctl {key:?}"),
                    source: io::Error::new(io::ErrorKind::InvalidInput, "not a sysctl key"),
                });
            }
        }
        let paths: Vec<(PathBuf, String)> = settings
            .iter()
            .map(|(key, value)| (PathBuf::from("/proc/sys").join(key), (*value).to_owned()))
            .collect();
        let write_all = move || {
            paths
                .into_iter()
                .map(|(path, value)| {
                    fs::write(&path, &value).map_err(|source| NetlinkError::Netns {
                        what: format!("write {value:?} to {}", path.display()),
                        source,
                    })
                })
                .collect::<Vec<_>>()
        };
        // /proc/sys/net shows the namespace of the thread that opens it: use the thread parked
        // in the namespace, or a one-off one.
        let conn = self.conn(ns)?;
        let results = match &conn.resident {
            Some(resident) => resident.run(write_all)?,
            None => netns::run_in(conn.ns_fd.as_fd(), write_all)?,
        };
        results.into_iter().find(Result::is_err).unwrap_or(Ok(()))
    }
}

/// The RTM_GETLINK request for the link `name`, with its VFs when `vfs`. Without their
/// statistics: with them a VF takes about 330 bytes of the VF list, whose 16-bit length overflows
/// near 200 VFs, and the kernel then truncates the list or refuses the request ("message too
/// long"), so every ADD, CHECK and DEL on a PF with 256 VFs (an E810) failed. Kernels before 4.20
/// ignore the flag.
fn link_query(name: &str, vfs: bool) -> LinkMessage {
    let mut msg = LinkMessage::default();
    msg.attributes.push(LinkAttribute::IfName(name.to_owned()));
    if vfs {
        msg.attributes.push(LinkAttribute::ExtMask(vec![
            LinkExtentMask::Vf,
            LinkExtentMask::SkipStats,
        ]));
    }
    msg
}

#[cfg(test)]
mod tests {
    use netlink_packet_core::{NlaBuffer, ParseableParametrized};

    use super::*;

    /// VF statistics would overflow the VF list of a PF with some 200 VFs or more.
    #[test]
    fn a_pf_query_asks_for_its_vfs_without_their_statistics() {
        let masks: Vec<_> = link_query("ens1f0", true)
            .attributes
            .into_iter()
            .filter_map(|a| match a {
                LinkAttribute::ExtMask(mask) => Some(mask),
                _ => None,
            })
            .collect();
        assert_eq!(masks, [vec![LinkExtentMask::Vf, LinkExtentMask::SkipStats]]);
        assert!(
            !link_query("ens1f0", false)
                .attributes
                .iter()
                .any(|a| matches!(a, LinkAttribute::ExtMask(_)))
        );
    }

    /// IFLA_VFINFO_LIST of a PF with 2 VFs, as the kernel sends it: the Wireshark capture of
    /// nlmon from netlink-packet-route 0.34's own SR-IOV test (`src/link/tests/sriov.rs`, MIT).
    #[rustfmt::skip]
    const VFINFO_LIST: [u8; 596] = [
        0x54, 0x02, 0x16, 0x00, 0x28, 0x01, 0x01, 0x00, 0x28, 0x00, 0x01, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x4e, 0x60, 0x71, 0x72, 0xbd, 0x1d, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x24, 0x00, 0x0d, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x10, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x06, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0c, 0x00, 0x03, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0c, 0x00, 0x04, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x0c, 0x00, 0x05, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0c, 0x00, 0x07, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0c, 0x00, 0x09, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x18, 0x00, 0x0c, 0x00,
        0x14, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x81, 0x00, 0x00, 0x00, 0x64, 0x00, 0x08, 0x00,
        0x0c, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x0c, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x0c, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x0c, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x0c, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x0c, 0x00, 0x05, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x0c, 0x00, 0x07, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x0c, 0x00, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x28, 0x01, 0x01, 0x00, 0x28, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00,
        0xde, 0x48, 0xe1, 0xe0, 0xbb, 0xec, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x24, 0x00, 0x0d, 0x00,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x02, 0x00,
        0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x10, 0x00, 0x06, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x0c, 0x00, 0x03, 0x00, 0x01, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x0c, 0x00, 0x04, 0x00, 0x01, 0x00, 0x00, 0x00,
        0x01, 0x00, 0x00, 0x00, 0x0c, 0x00, 0x05, 0x00, 0x01, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x0c, 0x00, 0x07, 0x00, 0x01, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x0c, 0x00, 0x09, 0x00, 0x01, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x18, 0x00, 0x0c, 0x00, 0x14, 0x00, 0x01, 0x00,
        0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x81, 0x00, 0x00, 0x00, 0x64, 0x00, 0x08, 0x00, 0x0c, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0c, 0x00, 0x01, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0c, 0x00, 0x02, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0c, 0x00, 0x03, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0c, 0x00, 0x04, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0c, 0x00, 0x05, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0c, 0x00, 0x07, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0c, 0x00, 0x08, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    ];

    #[test]
    fn reads_vf_state_from_a_kernel_capture() {
        let attr = LinkAttribute::parse_with_param(
            &NlaBuffer::new(&VFINFO_LIST[..]),
            AddressFamily::Unspec,
        )
        .unwrap();
        let LinkAttribute::VfInfoList(list) = attr else {
            panic!("not a VF info list: {attr:?}")
        };
        let vfs: Vec<VfState> = list.iter().filter_map(vf_state).collect();
        assert_eq!(vfs.len(), 2);
        assert_eq!(vfs[0].vf, 0);
        assert_eq!(vfs[0].mac.to_string(), "4e:60:71:72:bd:1d");
        assert_eq!(vfs[1].vf, 1);
        assert_eq!(vfs[1].mac.to_string(), "de:48:e1:e0:bb:ec");
        for vf in &vfs {
            assert!(vf.spoofchk);
            assert!(!vf.trust);
            assert_eq!((vf.vlan, vf.qos, vf.proto), (0, 0, VlanProto::Dot1Q));
            assert_eq!(vf.link_state, VfLinkState::Auto);
            assert_eq!((vf.min_tx_rate, vf.max_tx_rate), (0, 0));
        }
    }

    #[test]
    fn vf_settings_become_the_attributes_iproute2_sends() {
        let vlan = vf_attr(
            3,
            VfSetting::Vlan {
                id: 100,
                qos: 2,
                proto: VlanProto::Dot1Ad,
            },
        );
        assert_eq!(
            vlan,
            VfInfo::VlanList(vec![VfVlan::Info(VfVlanInfo::new(
                3,
                100,
                2,
                VlanProtocol::Ieee8021Ad
            ))])
        );
        assert_eq!(
            vf_attr(3, VfSetting::LinkState(VfLinkState::Disable)),
            VfInfo::LinkState(VfInfoLinkState::new(
                3,
                netlink_packet_route::link::VfLinkState::Disable
            ))
        );
        assert_eq!(
            vf_attr(1, VfSetting::Rate { min: 5, max: 50 }),
            VfInfo::Rate(VfInfoRate::new(1, 5, 50))
        );
    }
}
