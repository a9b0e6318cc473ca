//! A recording, failure-injecting model of the kernel for unit tests of the ADD/DEL logic.
//!
//! It keeps namespaces with their links, PFs with their VF state, and records every call as one
//! line of text (`set_vf pf0 3 vlan 100 qos 0 proto 802.1q`). A test can make any call fail by
//! prefix, and after the operation inspect the calls and the final state to prove what happened and
//! that nothing leaked.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{LinkInfo, LinkRef, Netlink, NetlinkError, NsId, VfSetting, VfState};
use crate::mac::MacAddr;
use crate::result::{IpNet, Route};

/// A link in the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeLink {
    /// ifindex.
    pub index: u32,
    /// Name.
    pub name: String,
    /// Hardware address.
    pub mac: MacAddr,
    /// MTU.
    pub mtu: u32,
    /// Admin up.
    pub up: bool,
    /// Alternative names.
    pub altnames: Vec<String>,
    /// Addresses.
    pub addrs: Vec<IpNet>,
    /// Routes as `dst via gw`.
    pub routes: Vec<String>,
    /// Parent device (PCI address).
    pub parent: Option<String>,
}

/// A namespace in the model.
#[derive(Debug, Clone, Default)]
pub struct FakeNs {
    /// Links by creation order.
    pub links: Vec<FakeLink>,
    /// Sysctls written.
    pub sysctls: BTreeMap<String, String>,
}

/// The recording fake.
#[derive(Debug, Default)]
pub struct FakeNetlink {
    /// Namespaces by handle; 0 is the host.
    pub namespaces: HashMap<u32, FakeNs>,
    /// Pod namespaces that "exist", by path.
    pub paths: HashMap<PathBuf, u32>,
    /// PFs by name: `None` when the PF reports no VF information (like a veth).
    pub pfs: HashMap<String, Option<Vec<VfState>>>,
    /// Every call, in order.
    pub calls: Vec<String>,
    /// Calls that fail once: (prefix of the call line, errno, how many matching calls to let pass
    /// first).
    pub failures: Vec<(String, i32, usize)>,
    /// Temporary namespaces that were closed while links were still in them (a leak).
    pub leaked_in_temp: Vec<String>,
    /// Model kernels that keep the old name as an altname on rename.
    pub altname_on_rename: bool,
    /// Model a VF driver that applies a netdev MAC asynchronously (iavf before the PF
    /// acknowledges): this many `set_mac` calls succeed without changing the MAC.
    pub mac_writes_lost: usize,
    /// Model a PF driver that accepts admin MAC writes but never reports them.
    pub mac_never_reported: bool,
    /// Model i40e/ice with iavf: the VF netdev with this ifindex (the PF and VF index it is) may
    /// take only its admin MAC while the PF has one set and the VF is not trusted; any other
    /// `set_mac` fails with EACCES.
    pub admin_mac_enforced: HashMap<u32, (String, u32)>,
    /// Links (by ifindex) whose renames in the host show in a simulated sysfs `net/` directory,
    /// as the kernel's do.
    pub sysfs_net: HashMap<u32, PathBuf>,
    /// Paths that are there but are no network namespace (a runtime unmounted the netns and left
    /// the file): opening them fails with `NotANetns`.
    pub not_netns: Vec<PathBuf>,
    /// A log shared with other fakes (the IPAM one), to check the order across them.
    pub timeline: Option<std::rc::Rc<std::cell::RefCell<Vec<String>>>>,
    temps: Vec<u32>,
    next_ns: u32,
    next_index: u32,
}

impl FakeNetlink {
    /// An empty host namespace.
    pub fn new() -> Self {
        let mut fake = FakeNetlink {
            next_ns: 1,
            next_index: 10,
            ..FakeNetlink::default()
        };
        fake.namespaces.insert(0, FakeNs::default());
        fake
    }

    /// Adds a link to a namespace.
    pub fn add_link(&mut self, ns: NsId, name: &str, mac: MacAddr, mtu: u32) {
        self.next_index += 1;
        let link = FakeLink {
            index: self.next_index,
            name: name.to_owned(),
            mac,
            mtu,
            up: false,
            altnames: Vec::new(),
            addrs: Vec::new(),
            routes: Vec::new(),
            parent: None,
        };
        self.namespaces.entry(ns.0).or_default().links.push(link);
    }

    /// Creates a pod namespace reachable at `path`.
    pub fn add_netns(&mut self, path: &Path) -> NsId {
        let id = self.next_ns;
        self.next_ns += 1;
        self.namespaces.insert(id, FakeNs::default());
        self.paths.insert(path.to_owned(), id);
        NsId(id)
    }

    /// Removes a pod namespace as the runtime does when a pod dies: physical links go back to the
    /// host (keeping their names, as the kernel does when there is no clash).
    pub fn destroy_netns(&mut self, path: &Path) {
        if let Some(id) = self.paths.remove(path)
            && let Some(ns) = self.namespaces.remove(&id)
        {
            let host = self.namespaces.entry(0).or_default();
            for mut link in ns.links {
                link.up = false;
                link.addrs.clear();
                link.routes.clear();
                host.links.push(link);
            }
        }
    }

    /// Adds a PF with `n` VFs in default state (or without VF information when `n` is `None`).
    pub fn add_pf(&mut self, name: &str, n: Option<u32>) {
        self.add_link(NsId::HOST, name, MacAddr([2, 0, 0, 0, 0, 1]), 1500);
        let vfs = n.map(|n| {
            (0..n)
                .map(|vf| VfState {
                    vf,
                    mac: MacAddr::ZERO,
                    vlan: 0,
                    qos: 0,
                    proto: crate::netconf::VlanProto::Dot1Q,
                    spoofchk: true,
                    trust: false,
                    min_tx_rate: 0,
                    max_tx_rate: 0,
                    link_state: crate::netconf::VfLinkState::Auto,
                })
                .collect()
        });
        self.pfs.insert(name.to_owned(), vfs);
    }

    /// Makes the next call starting with `prefix` fail with `errno`.
    pub fn fail(&mut self, prefix: &str, errno: i32) {
        self.failures.push((prefix.to_owned(), errno, 0));
    }

    /// Makes the `nth` (0-based) call starting with `prefix` fail with `errno`.
    pub fn fail_nth(&mut self, prefix: &str, errno: i32, nth: usize) {
        self.failures.push((prefix.to_owned(), errno, nth));
    }

    /// A link by name in a namespace.
    pub fn find(&self, ns: NsId, name: &str) -> Option<&FakeLink> {
        self.namespaces
            .get(&ns.0)?
            .links
            .iter()
            .find(|l| l.name == name)
    }

    /// The VF state of a PF's VF.
    pub fn vf(&self, pf: &str, vf: u32) -> Option<VfState> {
        self.pfs
            .get(pf)?
            .as_ref()?
            .iter()
            .find(|s| s.vf == vf)
            .copied()
    }

    /// Calls whose line starts with `prefix`.
    pub fn calls_starting(&self, prefix: &str) -> Vec<&str> {
        self.calls
            .iter()
            .filter(|c| c.starts_with(prefix))
            .map(String::as_str)
            .collect()
    }

    fn record(&mut self, call: String) -> Result<(), NetlinkError> {
        self.calls.push(call.clone());
        if let Some(timeline) = &self.timeline {
            timeline.borrow_mut().push(call.clone());
        }
        let mut fire = None;
        for (i, (prefix, errno, skip)) in self.failures.iter_mut().enumerate() {
            if call.starts_with(prefix.as_str()) {
                if *skip > 0 {
                    *skip -= 1;
                    continue;
                }
                fire = Some((i, *errno));
                break;
            }
        }
        // An injected failure fires once, like a transient kernel refusal; the rollback that
        // follows must be able to use the same operation.
        if let Some((i, errno)) = fire {
            self.failures.remove(i);
            return Err(NetlinkError::Kernel {
                op: call,
                source: io::Error::from_raw_os_error(errno),
            });
        }
        Ok(())
    }

    fn ns_mut(&mut self, ns: NsId) -> Result<&mut FakeNs, NetlinkError> {
        self.namespaces
            .get_mut(&ns.0)
            .ok_or(NetlinkError::UnknownNs(ns.0))
    }

    fn link_mut(&mut self, ns: NsId, name: &str) -> Result<&mut FakeLink, NetlinkError> {
        let label = format!("ns{}", ns.0);
        self.ns_mut(ns)?
            .links
            .iter_mut()
            .find(|l| l.name == name)
            .ok_or(NetlinkError::NoSuchLink {
                ns: label,
                name: name.to_owned(),
            })
    }
}

fn errno(op: String, code: i32) -> NetlinkError {
    NetlinkError::Kernel {
        op,
        source: io::Error::from_raw_os_error(code),
    }
}

impl Netlink for FakeNetlink {
    /// A query, not recorded: the recorded calls are what changes the fake kernel's state.
    fn is_host_netns(&mut self, path: &Path) -> Result<bool, NetlinkError> {
        Ok(self.paths.get(path) == Some(&NsId::HOST.0))
    }

    fn open_netns(&mut self, path: &Path) -> Result<NsId, NetlinkError> {
        self.record(format!("open_netns {}", path.display()))?;
        if self.not_netns.iter().any(|p| p == path) {
            return Err(NetlinkError::NotANetns {
                path: path.to_owned(),
            });
        }
        self.paths
            .get(path)
            .map(|id| NsId(*id))
            .ok_or(NetlinkError::NetnsNotFound {
                path: path.to_owned(),
            })
    }

    fn create_temp_netns(&mut self) -> Result<NsId, NetlinkError> {
        self.record("create_temp_netns".into())?;
        let id = self.next_ns;
        self.next_ns += 1;
        self.namespaces.insert(id, FakeNs::default());
        self.temps.push(id);
        Ok(NsId(id))
    }

    fn close_netns(&mut self, ns: NsId) {
        self.calls.push(format!("close_netns {}", ns.0));
        if self.temps.contains(&ns.0)
            && let Some(gone) = self.namespaces.remove(&ns.0)
        {
            self.leaked_in_temp
                .extend(gone.links.into_iter().map(|l| l.name));
        }
    }

    fn link(&mut self, ns: NsId, name: &str) -> Result<Option<LinkInfo>, NetlinkError> {
        self.record(format!("link {} {name}", ns.0))?;
        let ns = self.ns_mut(ns)?;
        Ok(ns
            .links
            .iter()
            .find(|l| l.name == name || l.altnames.iter().any(|a| a == name))
            .map(|l| LinkInfo {
                index: l.index,
                name: l.name.clone(),
                mac: Some(l.mac),
                mtu: l.mtu,
                up: l.up,
                carrier: l.up,
                altnames: l.altnames.clone(),
                parent: l.parent.clone(),
            }))
    }

    fn vfs(&mut self, pf: &str) -> Result<Option<Vec<VfState>>, NetlinkError> {
        self.record(format!("vfs {pf}"))?;
        match self.pfs.get(pf) {
            Some(v) => Ok(v.clone()),
            None => Err(NetlinkError::NoSuchLink {
                ns: "host".into(),
                name: pf.into(),
            }),
        }
    }

    fn set_vf(&mut self, pf: &str, vf: u32, setting: VfSetting) -> Result<(), NetlinkError> {
        let call = format!("set_vf {pf} {vf} {setting}");
        self.record(call.clone())?;
        let Some(Some(vfs)) = self.pfs.get_mut(pf) else {
            return Err(errno(call, nix::libc::EOPNOTSUPP));
        };
        let Some(state) = vfs.iter_mut().find(|s| s.vf == vf) else {
            return Err(errno(call, nix::libc::EINVAL));
        };
        match setting {
            VfSetting::Vlan { id, qos, proto } => {
                state.vlan = id;
                state.qos = qos;
                state.proto = proto;
            }
            VfSetting::Mac(m) => {
                if !self.mac_never_reported {
                    state.mac = m;
                }
            }
            VfSetting::Rate { min, max } => {
                state.min_tx_rate = min;
                state.max_tx_rate = max;
            }
            VfSetting::SpoofChk(on) => state.spoofchk = on,
            VfSetting::Trust(on) => state.trust = on,
            VfSetting::LinkState(s) => state.link_state = s,
        }
        Ok(())
    }

    fn move_link(
        &mut self,
        from: NsId,
        link: LinkRef<'_>,
        to: NsId,
        new_name: &str,
    ) -> Result<(), NetlinkError> {
        let name = link.name();
        let call = format!("move_link {} {name} {} {new_name}", from.0, to.0);
        self.record(call.clone())?;
        let mut link = {
            let src = self.ns_mut(from)?;
            let pos = src
                .links
                .iter()
                .position(|l| match link {
                    LinkRef::Name(name) => l.name == name,
                    LinkRef::Found { index, .. } => l.index == index,
                })
                .ok_or_else(|| match link {
                    LinkRef::Name(name) => NetlinkError::NoSuchLink {
                        ns: format!("ns{}", from.0),
                        name: name.into(),
                    },
                    LinkRef::Found { .. } => errno(call.clone(), nix::libc::ENODEV),
                })?;
            src.links[pos].clone()
        };
        let moved_index = link.index;
        let altname_on_rename = self.altname_on_rename;
        let dst = self.ns_mut(to)?;
        // A `%d` pattern takes the first free number, as the kernel's dev_alloc_name does.
        let resolved;
        let new_name = if new_name.contains("%d") {
            resolved = (0..)
                .map(|n| new_name.replace("%d", &n.to_string()))
                .find(|n| !dst.links.iter().any(|l| &l.name == n))
                .unwrap_or_default();
            resolved.as_str()
        } else {
            new_name
        };
        let clash = |links: &[FakeLink], n: &str| {
            links
                .iter()
                .any(|l| l.name == n || l.altnames.iter().any(|a| a == n))
        };
        // As the kernel's do_setlink: move keeping the name if it is free in the target, else
        // under `new_name` directly; altnames must be free too.
        let old_free = !clash(&dst.links, &link.name);
        if (!old_free && clash(&dst.links, new_name))
            || link.altnames.iter().any(|a| clash(&dst.links, a))
        {
            return Err(errno(call, nix::libc::EEXIST));
        }
        if !old_free {
            new_name.clone_into(&mut link.name);
        }
        link.addrs.clear();
        link.routes.clear();
        link.up = false;
        let moved_name = link.name.clone();
        let rename_clash = moved_name != new_name && clash(&dst.links, new_name);
        if moved_name != new_name && !rename_clash {
            if altname_on_rename {
                link.altnames.push(moved_name.clone());
            }
            new_name.clone_into(&mut link.name);
        }
        dst.links.push(link);
        let src = self.ns_mut(from)?;
        src.links.retain(|l| l.index != moved_index);
        if rename_clash {
            // Moved, but the rename inside the target failed: the kernel reports the error and
            // leaves the link there under its old name.
            return Err(errno(call, nix::libc::EEXIST));
        }
        Ok(())
    }

    fn rename(&mut self, ns: NsId, name: &str, new_name: &str) -> Result<(), NetlinkError> {
        let call = format!("rename {} {name} {new_name}", ns.0);
        self.record(call.clone())?;
        let altname_on_rename = self.altname_on_rename;
        let space = self.ns_mut(ns)?;
        if name != new_name
            && space
                .links
                .iter()
                .any(|l| l.name == new_name || l.altnames.iter().any(|a| a == new_name))
        {
            return Err(errno(call, nix::libc::EEXIST));
        }
        let link = self.link_mut(ns, name)?;
        // Kernels before 6.2 refuse to rename a device that is up (dev_change_name: EBUSY), and
        // Ubuntu 22.04 and RHEL 8/9 run such kernels: model the strictest.
        if link.up {
            return Err(errno(call, nix::libc::EBUSY));
        }
        if name != new_name {
            if altname_on_rename {
                link.altnames.push(name.to_owned());
            }
            new_name.clone_into(&mut link.name);
            let index = link.index;
            if ns == NsId::HOST
                && let Some(dir) = self.sysfs_net.get(&index)
            {
                let _ = std::fs::rename(dir.join(name), dir.join(new_name));
            }
        }
        Ok(())
    }

    fn del_altname(&mut self, ns: NsId, name: &str, altname: &str) -> Result<(), NetlinkError> {
        self.record(format!("del_altname {} {name} {altname}", ns.0))?;
        let link = self.link_mut(ns, name)?;
        link.altnames.retain(|a| a != altname);
        Ok(())
    }

    fn set_up(&mut self, ns: NsId, name: &str, up: bool) -> Result<(), NetlinkError> {
        self.record(format!("set_up {} {name} {up}", ns.0))?;
        self.link_mut(ns, name)?.up = up;
        Ok(())
    }

    fn set_mac(&mut self, ns: NsId, name: &str, mac: MacAddr) -> Result<(), NetlinkError> {
        let call = format!("set_mac {} {name} {mac}", ns.0);
        self.record(call.clone())?;
        let index = self.link_mut(ns, name)?.index;
        if let Some((pf, vf)) = self.admin_mac_enforced.get(&index)
            && let Some(state) = self.vf(pf, *vf)
            && !state.trust
            && !state.mac.is_zero()
            && state.mac != mac
        {
            return Err(errno(call, nix::libc::EACCES));
        }
        if self.mac_writes_lost > 0 {
            self.mac_writes_lost -= 1;
            self.link_mut(ns, name)?;
            return Ok(());
        }
        self.link_mut(ns, name)?.mac = mac;
        Ok(())
    }

    fn set_mtu(&mut self, ns: NsId, name: &str, mtu: u32) -> Result<(), NetlinkError> {
        self.record(format!("set_mtu {} {name} {mtu}", ns.0))?;
        self.link_mut(ns, name)?.mtu = mtu;
        Ok(())
    }

    fn add_address(&mut self, ns: NsId, name: &str, addr: IpNet) -> Result<(), NetlinkError> {
        let call = format!("add_address {} {name} {addr}", ns.0);
        self.record(call.clone())?;
        // The kernel refuses an IPv6 address on a link with IPv6 disabled (addrconf: EACCES).
        if !addr.is_ipv4()
            && self
                .ns_mut(ns)?
                .sysctls
                .get(&format!("net/ipv6/conf/{name}/disable_ipv6"))
                == Some(&"1".to_owned())
        {
            return Err(errno(call, nix::libc::EACCES));
        }
        self.link_mut(ns, name)?.addrs.push(addr);
        Ok(())
    }

    fn addresses(&mut self, ns: NsId, name: &str) -> Result<Vec<IpNet>, NetlinkError> {
        self.record(format!("addresses {} {name}", ns.0))?;
        Ok(self.link_mut(ns, name)?.addrs.clone())
    }

    fn add_route(
        &mut self,
        ns: NsId,
        name: &str,
        route: &Route,
        gw: Option<IpAddr>,
    ) -> Result<(), NetlinkError> {
        let text = format!(
            "{} via {}",
            route.dst,
            gw.map_or_else(|| "on-link".to_owned(), |g| g.to_string())
        );
        self.record(format!("add_route {} {name} {text}", ns.0))?;
        self.link_mut(ns, name)?.routes.push(text);
        Ok(())
    }

    fn announce(
        &mut self,
        ns: NsId,
        name: &str,
        _carrier_wait: Duration,
    ) -> Result<(), NetlinkError> {
        self.record(format!("announce {} {name}", ns.0))
    }

    fn set_sysctls(&mut self, ns: NsId, settings: &[(String, &str)]) -> Result<(), NetlinkError> {
        let line = settings
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ");
        self.record(format!("set_sysctls {} {line}", ns.0))?;
        let space = self.ns_mut(ns)?;
        for (k, v) in settings {
            space.sysctls.insert(k.clone(), (*v).to_owned());
        }
        Ok(())
    }
}

impl FakeNetlink {
    /// Moves a link without recording a call (test setup: "another plugin did this").
    pub fn move_link_for_test(&mut self, name: &str, to: NsId, new_name: &str) {
        let mut found = None;
        for ns in self.namespaces.values_mut() {
            if let Some(pos) = ns.links.iter().position(|l| l.name == name) {
                found = Some(ns.links.remove(pos));
                break;
            }
        }
        if let (Some(mut link), Some(dst)) = (found, self.namespaces.get_mut(&to.0)) {
            link.name = new_name.to_owned();
            dst.links.push(link);
        }
    }

    /// Sets a link's parent device (test setup: a PCI VF's netdev).
    pub fn set_parent(&mut self, ns: NsId, name: &str, parent: &str) {
        if let Ok(link) = self.link_mut(ns, name) {
            link.parent = Some(parent.to_owned());
        }
    }

    /// Sets VF state without recording a call (test setup).
    pub fn set_vf_for_test(&mut self, pf: &str, vf: u32, vlan: u16, trust: bool, mac: MacAddr) {
        if let Some(Some(vfs)) = self.pfs.get_mut(pf)
            && let Some(s) = vfs.iter_mut().find(|s| s.vf == vf)
        {
            s.vlan = vlan;
            s.trust = trust;
            s.mac = mac;
        }
    }
}
