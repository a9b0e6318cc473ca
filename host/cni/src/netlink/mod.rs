//! The seam to the kernel's network stack: every link, address, route, VF and netns operation the
//! plugin performs goes through [`Netlink`], so the ADD/DEL logic can run against the recording
//! [`fake::FakeNetlink`] in unit tests and against [`real::RealNetlink`] (rtnetlink over
//! netlink-sys, one socket per network namespace) in the binary.
//!
//! Namespaces are named by [`NsId`] handles the implementation hands out; [`NsId::HOST`] is the
//! namespace the plugin started in.

pub mod fake;
pub mod real;

use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use thiserror::Error;

use crate::mac::MacAddr;
use crate::netconf::{VfLinkState, VlanProto};
use crate::result::{IpNet, Route};

/// A network namespace known to a [`Netlink`] implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NsId(pub u32);

impl NsId {
    /// The namespace the plugin runs in (the host's).
    pub const HOST: NsId = NsId(0);
}

/// Why a netlink or netns operation failed.
#[derive(Debug, Error)]
pub enum NetlinkError {
    /// The netns path does not exist (the pod is gone).
    #[error("network namespace {path} does not exist")]
    NetnsNotFound {
        /// The path given.
        path: PathBuf,
    },
    /// The path exists but is not a network namespace.
    #[error(
        "{path} is not a network namespace (expected a path such as /run/netns/pod1 or /proc/<pid>/ns/net)"
    )]
    NotANetns {
        /// The path given.
        path: PathBuf,
    },
    /// Opening, creating or entering a network namespace failed.
    #[error("cannot {what}")]
    Netns {
        /// What was attempted.
        what: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A link looked up by name does not exist.
    #[error("no link named {name:?} in {ns}")]
    NoSuchLink {
        /// Namespace description.
        ns: String,
        /// The name.
        name: String,
    },
    /// The kernel refused an operation.
    #[error("{op} failed")]
    Kernel {
        /// The operation, with its arguments.
        op: String,
        /// The errno the kernel returned.
        #[source]
        source: io::Error,
    },
    /// The kernel's answer could not be decoded.
    #[error("cannot decode the kernel's answer to {op}: {detail}")]
    Decode {
        /// The operation.
        op: String,
        /// The decoder's complaint.
        detail: String,
    },
    /// An [`NsId`] that was never handed out or was closed.
    #[error("unknown namespace handle {0}")]
    UnknownNs(u32),
}

impl NetlinkError {
    /// True when the kernel said "no such device" or the link was not found by name.
    pub fn is_not_found(&self) -> bool {
        match self {
            NetlinkError::NoSuchLink { .. } => true,
            NetlinkError::Kernel { source, .. } => source.raw_os_error() == Some(nix::libc::ENODEV),
            _ => false,
        }
    }

    /// True when the kernel said "not supported" (a PF driver without a VF setting).
    pub fn is_unsupported(&self) -> bool {
        matches!(self, NetlinkError::Kernel { source, .. }
            if matches!(source.raw_os_error(), Some(e) if e == nix::libc::EOPNOTSUPP || e == nix::libc::ENOTSUP))
    }
}

/// What the plugin needs to know about a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    /// ifindex.
    pub index: u32,
    /// Current name.
    pub name: String,
    /// Current (effective) hardware address.
    pub mac: Option<MacAddr>,
    /// MTU.
    pub mtu: u32,
    /// Administratively up.
    pub up: bool,
    /// Has carrier (IFF_LOWER_UP).
    pub carrier: bool,
    /// Alternative names.
    pub altnames: Vec<String>,
    /// The parent device (`IFLA_PARENT_DEV_NAME`): a PCI address for a PCI function's netdev.
    pub parent: Option<String>,
}

/// A VF's state as its PF reports it (IFLA_VFINFO_LIST).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VfState {
    /// VF index.
    pub vf: u32,
    /// Administrative MAC (zero when unset).
    pub mac: MacAddr,
    /// VLAN id (0 = none).
    pub vlan: u16,
    /// VLAN QoS.
    pub qos: u8,
    /// VLAN protocol.
    pub proto: VlanProto,
    /// Spoof checking.
    pub spoofchk: bool,
    /// Trust.
    pub trust: bool,
    /// Minimum TX rate, Mbps.
    pub min_tx_rate: u32,
    /// Maximum TX rate, Mbps.
    pub max_tx_rate: u32,
    /// Link state.
    pub link_state: VfLinkState,
}

/// One VF setting, applied through the PF.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VfSetting {
    /// VLAN id, QoS and protocol.
    Vlan {
        /// Id (0 clears).
        id: u16,
        /// QoS.
        qos: u8,
        /// Protocol.
        proto: VlanProto,
    },
    /// Administrative MAC.
    Mac(MacAddr),
    /// TX rates in Mbps.
    Rate {
        /// Minimum.
        min: u32,
        /// Maximum.
        max: u32,
    },
    /// Spoof checking.
    SpoofChk(bool),
    /// Trust.
    Trust(bool),
    /// Link state.
    LinkState(VfLinkState),
}

impl VfSetting {
    /// The NetConf field this setting comes from (for messages).
    pub fn field(&self) -> &'static str {
        match self {
            VfSetting::Vlan { .. } => "vlan",
            VfSetting::Mac(_) => "mac",
            VfSetting::Rate { .. } => "min_tx_rate/max_tx_rate",
            VfSetting::SpoofChk(_) => "spoofchk",
            VfSetting::Trust(_) => "trust",
            VfSetting::LinkState(_) => "link_state",
        }
    }

    /// The value of this kind of setting in `state` (what to restore).
    pub fn current_in(&self, state: &VfState) -> VfSetting {
        match self {
            VfSetting::Vlan { .. } => VfSetting::Vlan {
                id: state.vlan,
                qos: state.qos,
                proto: state.proto,
            },
            VfSetting::Mac(_) => VfSetting::Mac(state.mac),
            VfSetting::Rate { .. } => VfSetting::Rate {
                min: state.min_tx_rate,
                max: state.max_tx_rate,
            },
            VfSetting::SpoofChk(_) => VfSetting::SpoofChk(state.spoofchk),
            VfSetting::Trust(_) => VfSetting::Trust(state.trust),
            VfSetting::LinkState(_) => VfSetting::LinkState(state.link_state),
        }
    }
}

impl std::fmt::Display for VfSetting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VfSetting::Vlan { id, qos, proto } => {
                write!(f, "vlan {id} qos {qos} proto {}", proto.as_str())
            }
            VfSetting::Mac(m) => write!(f, "mac {m}"),
            VfSetting::Rate { min, max } => write!(f, "min_tx_rate {min} max_tx_rate {max}"),
            VfSetting::SpoofChk(on) => write!(f, "spoofchk {}", if *on { "on" } else { "off" }),
            VfSetting::Trust(on) => write!(f, "trust {}", if *on { "on" } else { "off" }),
            VfSetting::LinkState(s) => write!(f, "link_state {}", s.as_str()),
        }
    }
}

/// The link an operation is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkRef<'a> {
    /// Whatever link has this name when the operation runs.
    Name(&'a str),
    /// The link a lookup found: by its ifindex, which no rename changes. udev renames a new
    /// netdev at any time, and its old name may then belong to another link; an operation that
    /// looked the name up again would act on that one.
    Found {
        /// Its ifindex.
        index: u32,
        /// Its name when it was looked up (for messages).
        name: &'a str,
    },
}

impl<'a> LinkRef<'a> {
    /// The link as `link` found it.
    pub fn found(link: &'a LinkInfo) -> Self {
        LinkRef::Found {
            index: link.index,
            name: &link.name,
        }
    }

    /// The name (for a found link: when it was looked up).
    pub fn name(&self) -> &'a str {
        match *self {
            LinkRef::Name(name) | LinkRef::Found { name, .. } => name,
        }
    }
}

/// The kernel operations the plugin uses.
pub trait Netlink {
    /// Opens the network namespace at `path` (a pod's).
    fn open_netns(&mut self, path: &Path) -> Result<NsId, NetlinkError>;
    /// Whether `path` is the namespace [`NsId::HOST`] stands for: the plugin's own.
    fn is_host_netns(&mut self, path: &Path) -> Result<bool, NetlinkError>;
    /// Creates a fresh, empty, anonymous network namespace (gone when closed).
    fn create_temp_netns(&mut self) -> Result<NsId, NetlinkError>;
    /// Forgets a namespace handle (never [`NsId::HOST`]).
    fn close_netns(&mut self, ns: NsId);
    /// A link by name, `None` when there is none.
    fn link(&mut self, ns: NsId, name: &str) -> Result<Option<LinkInfo>, NetlinkError>;
    /// The VFs a PF (in the host namespace) reports; `None` when it reports no VF information at
    /// all (not an SR-IOV PF, or a driver without VF support).
    fn vfs(&mut self, pf: &str) -> Result<Option<Vec<VfState>>, NetlinkError>;
    /// Applies one VF setting through the PF.
    fn set_vf(&mut self, pf: &str, vf: u32, setting: VfSetting) -> Result<(), NetlinkError>;
    /// Renames a link within its namespace.
    fn rename(&mut self, ns: NsId, name: &str, new_name: &str) -> Result<(), NetlinkError>;
    /// Moves `link` from `from` into `to`, naming it `new_name` there. The kernel moves the
    /// link first and renames it inside `to` (using `new_name` directly if the old name is taken
    /// there), so the link is never renamed in `from`.
    fn move_link(
        &mut self,
        from: NsId,
        link: LinkRef<'_>,
        to: NsId,
        new_name: &str,
    ) -> Result<(), NetlinkError>;
    /// Deletes an alternative name of a link.
    fn del_altname(&mut self, ns: NsId, name: &str, altname: &str) -> Result<(), NetlinkError>;
    /// Sets a link administratively up or down.
    fn set_up(&mut self, ns: NsId, name: &str, up: bool) -> Result<(), NetlinkError>;
    /// Sets a link's hardware address.
    fn set_mac(&mut self, ns: NsId, name: &str, mac: MacAddr) -> Result<(), NetlinkError>;
    /// Sets a link's MTU.
    fn set_mtu(&mut self, ns: NsId, name: &str, mtu: u32) -> Result<(), NetlinkError>;
    /// Adds an address to a link.
    fn add_address(&mut self, ns: NsId, name: &str, addr: IpNet) -> Result<(), NetlinkError>;
    /// The addresses of a link.
    fn addresses(&mut self, ns: NsId, name: &str) -> Result<Vec<IpNet>, NetlinkError>;
    /// Adds a route through a link; `gw` is the next hop (none = on-link).
    fn add_route(
        &mut self,
        ns: NsId,
        name: &str,
        route: &Route,
        gw: Option<IpAddr>,
    ) -> Result<(), NetlinkError>;
    /// Makes the kernel announce every address of link `name` in `ns` to the neighbours
    /// (gratuitous ARP, unsolicited NA; needs `arp_notify`/`ndisc_notify` on the link), once the
    /// link has carrier. Waits at most `carrier_wait`; without carrier nothing is sent.
    fn announce(
        &mut self,
        ns: NsId,
        name: &str,
        carrier_wait: Duration,
    ) -> Result<(), NetlinkError>;
    /// Writes sysctls under `/proc/sys/` in namespace `ns` (keys like
    /// `net/ipv4/conf/net1/arp_notify`), all in one trip into the namespace. Every key is
    /// attempted; the first failure is returned.
    fn set_sysctls(&mut self, ns: NsId, settings: &[(String, &str)]) -> Result<(), NetlinkError>;
}
