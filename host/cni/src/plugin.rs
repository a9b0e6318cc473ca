//! The CNI commands: ADD, DEL, CHECK, STATUS, GC, VERSION, with rollback of every ADD step.
//!
//! ADD records what it is about to change (the cache) *before* it changes anything, then keeps a
//! journal of every step it completed; any failure replays the journal backwards, so a failed ADD
//! leaves the VF, its netdev and the IPAM store exactly as they were (sriov-cni #119 left partial
//! config behind).

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use serde_json::{Map, Value, json};
use thiserror::Error;

use crate::env::{CniEnv, Command, EnvError};
use crate::error::{CniError, code};
use crate::ipam::{Ipam, IpamError};
use crate::log::Logger;
use crate::mac::MacAddr;
use crate::netconf::{CniArgs, NetConf, NetConfError, VfLinkState, VfRequest, VlanProto};
use crate::netlink::real::RealNetlink;
use crate::netlink::{LinkInfo, LinkRef, Netlink, NetlinkError, NsId, VfSetting, VfState};
use crate::netns;
use crate::result::{CniResult, Interface, ResultError};
use crate::state::{StateDir, StateError, cache_name};
use crate::version;
use crate::vf::{self, VfError};

/// How long ADD waits for the VF's carrier before announcing its addresses (sriov-cni's value).
pub const CARRIER_WAIT: Duration = Duration::from_millis(200);

/// How long ADD/DEL wait for another operation on the same VF (sriov-cni waits 60 s).
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a command failed.
#[derive(Debug, Error)]
pub enum PluginError {
    /// Bad NetConf or CNI_ARGS.
    #[error(transparent)]
    NetConf(#[from] NetConfError),
    /// Bad environment.
    #[error(transparent)]
    Env(#[from] EnvError),
    /// State directory trouble (or the VF lock is busy).
    #[error(transparent)]
    State(#[from] StateError),
    /// The VF could not be resolved from sysfs.
    #[error(transparent)]
    Vf(#[from] VfError),
    /// A netlink or netns step failed.
    #[error("{context}")]
    Netlink {
        /// The step.
        context: String,
        /// The kernel's answer.
        #[source]
        source: NetlinkError,
    },
    /// The IPAM plugin failed.
    #[error(transparent)]
    Ipam(#[from] IpamError),
    /// The IPAM plugin's result is unusable.
    #[error("the IPAM plugin {plugin:?} returned a result this plugin cannot read")]
    IpamResult {
        /// The plugin.
        plugin: String,
        /// Why.
        #[source]
        source: ResultError,
    },
    /// The IPAM plugin returned no address.
    #[error("the IPAM plugin {0:?} returned no IP address; check its ranges")]
    IpamNoIp(String),
    /// The VF is allocated to a live netns.
    #[error(
        "VF {pci} is already allocated to network namespace {netns}, which still exists; try again once that pod's DEL has run"
    )]
    AlreadyAllocated {
        /// The VF.
        pci: String,
        /// The netns holding it.
        netns: String,
    },
    /// `deviceID` is required for ADD.
    #[error(
        "invalid network configuration: field \"deviceID\" is required: Multus sets it from the pod's device allocation; check the NetworkAttachmentDefinition's k8s.v1.cni.cncf.io/resourceName annotation and the pod's resource request"
    )]
    NoDeviceId,
    /// CNI_NETNS is the plugin's own network namespace (the host's): the VF, its addresses and
    /// routes would go to the host.
    #[error(
        "CNI_NETNS {netns} is the plugin's own network namespace, not a pod's; nothing was done (set CNI_NETNS_OVERRIDE=1 if that is meant)"
    )]
    OwnNetns {
        /// The path given.
        netns: String,
    },
    /// The pod's netns is gone but the kernel has not handed the VF's netdev back to the host
    /// yet (it does so asynchronously, and not while something still holds the netns): its name,
    /// MAC and MTU can only be given back once it is there.
    #[error(
        "VF {pci}'s netdev is not back in the host yet (its pod's network namespace is still being torn down, or something holds it); try again"
    )]
    NetdevNotBack {
        /// The VF.
        pci: String,
    },
    /// The pod already has an interface with the requested name.
    #[error(
        "interface {ifname:?} already exists in network namespace {netns}; pick another CNI_IFNAME (the interface name in the pod's network annotation)"
    )]
    IfnameTaken {
        /// The name.
        ifname: String,
        /// The netns.
        netns: String,
    },
    /// The netdev sysfs named for the VF was gone, or another device's, when it was looked up:
    /// renamed in between (udev renames new netdevs), so the name is not the VF's any more.
    #[error(
        "the netdev {netdev:?} that sysfs named for VF {pci} {now} (renamed while ADD ran, by udev or a network manager); nothing was changed: try again"
    )]
    NetdevRenamed {
        /// The VF.
        pci: String,
        /// The name sysfs gave.
        netdev: String,
        /// What the name is now: "is the netdev of 0000:3b:00.3 by now", "is gone".
        now: String,
    },
    /// VF settings were requested but the PF reports no VF information.
    #[error(
        "PF {pf} reports no VF information (its driver does not support VF configuration), so {fields} cannot be applied to VF {vf}; remove these fields from the NetConf or use an SR-IOV capable PF"
    )]
    VfSettingsUnsupported {
        /// The PF.
        pf: String,
        /// The VF index.
        vf: u32,
        /// The requested NetConf fields.
        fields: String,
    },
    /// The PF reports VFs but not this one.
    #[error("PF {pf} does not report VF {vf} (is sriov_numvfs large enough?)")]
    VfNotReported {
        /// The PF.
        pf: String,
        /// The index.
        vf: u32,
    },
    /// A VF setting was refused by the PF driver.
    #[error(
        "PF {pf} refused {setting} for VF {vf} (NetConf field {field:?}); remove the field or use a PF driver that supports it"
    )]
    VfSetting {
        /// The PF.
        pf: String,
        /// The VF.
        vf: u32,
        /// The setting.
        setting: String,
        /// The NetConf field.
        field: &'static str,
        /// The kernel's answer.
        #[source]
        source: NetlinkError,
    },
    /// The command needs a newer cniVersion.
    #[error("config version {got} does not allow {command} (needs cniVersion {min} or later)")]
    VersionTooOld {
        /// The command.
        command: &'static str,
        /// Minimum version.
        min: &'static str,
        /// The version given.
        got: String,
    },
    /// CHECK found a difference.
    #[error("CHECK failed: {0}")]
    Check(String),
    /// The cache file is not an attachment record.
    #[error("the cache file for {name} has an invalid field {field:?}")]
    BadCache {
        /// The file name.
        name: String,
        /// The field.
        field: &'static str,
    },
    /// DEL could not put every part of the VF back (the cache is kept for the retry, up to
    /// [`DEL_ATTEMPTS`] DELs).
    #[error("releasing VF {pci} failed: {failures}")]
    Release {
        /// The VF.
        pci: String,
        /// What failed.
        failures: String,
    },
    /// STATUS: not ready.
    #[error("not ready: {0}")]
    NotReady(String),
    /// An ADD step failed and so did part of its rollback.
    #[error("{error}; rolling back also failed: {rollback}")]
    RollbackFailed {
        /// The original failure.
        #[source]
        error: Box<PluginError>,
        /// What could not be undone.
        rollback: String,
    },
}

impl PluginError {
    /// The CNI error code.
    pub fn code(&self) -> u32 {
        match self {
            PluginError::NetConf(e) => e.code(),
            PluginError::Env(_) => code::INVALID_ENV,
            PluginError::State(StateError::Locked { .. }) => code::TRY_AGAIN_LATER,
            PluginError::State(_) | PluginError::BadCache { .. } => code::STATE,
            // A PF named as the device: the configuration's mistake (a pool of PFs behind a
            // NetworkAttachmentDefinition for VFs), not a failure to find the VF.
            PluginError::Vf(VfError::NotAVf { .. }) => code::INVALID_CONFIG,
            PluginError::Vf(_) => code::VF_RESOLUTION,
            PluginError::Netlink { source, .. } => match source {
                NetlinkError::NetnsNotFound { .. }
                | NetlinkError::NotANetns { .. }
                | NetlinkError::Netns { .. } => code::NETNS,
                _ => code::NETLINK,
            },
            // A well-known code (below 100) from the IPAM plugin is the runtime's to act on, as
            // sriov-cni passes it on: "try again later" (11) must not read as a hard failure.
            PluginError::Ipam(IpamError::Plugin { code, .. }) if (1..100).contains(code) => *code,
            PluginError::Ipam(_) | PluginError::IpamResult { .. } | PluginError::IpamNoIp(_) => {
                code::IPAM
            }
            PluginError::AlreadyAllocated { .. } => code::TRY_AGAIN_LATER,
            PluginError::NoDeviceId => code::INVALID_CONFIG,
            PluginError::IfnameTaken { .. } => code::IFNAME_TAKEN,
            PluginError::OwnNetns { .. } => code::INVALID_NETNS,
            PluginError::NetdevNotBack { .. } => code::TRY_AGAIN_LATER,
            PluginError::NetdevRenamed { .. } => code::TRY_AGAIN_LATER,
            PluginError::VfSettingsUnsupported { .. } | PluginError::VfSetting { .. } => {
                code::VF_SETTING_UNSUPPORTED
            }
            PluginError::VfNotReported { .. } => code::VF_RESOLUTION,
            PluginError::VersionTooOld { .. } => code::INCOMPATIBLE_VERSION,
            PluginError::Check(_) => code::CHECK_FAILED,
            PluginError::Release { .. } => code::NETLINK,
            PluginError::NotReady(_) => code::PLUGIN_NOT_AVAILABLE,
            PluginError::RollbackFailed { error, .. } => error.code(),
        }
    }
}

fn nl(context: impl Into<String>) -> impl FnOnce(NetlinkError) -> PluginError {
    let context = context.into();
    move |source| PluginError::Netlink { context, source }
}

/// Hands out the kernel seam only to commands that need it (VERSION and STATUS never open a
/// netlink socket, which keeps them fast).
pub trait NetlinkProvider {
    /// The netlink implementation.
    fn get(&mut self) -> Result<&mut dyn Netlink, NetlinkError>;
}

impl NetlinkProvider for crate::netlink::fake::FakeNetlink {
    fn get(&mut self) -> Result<&mut dyn Netlink, NetlinkError> {
        Ok(self)
    }
}

/// Connects to the real kernel on first use.
#[derive(Default)]
pub struct LazyRealNetlink(Option<RealNetlink>);

impl NetlinkProvider for LazyRealNetlink {
    fn get(&mut self) -> Result<&mut dyn Netlink, NetlinkError> {
        if self.0.is_none() {
            self.0 = Some(RealNetlink::new()?);
        }
        match &mut self.0 {
            Some(real) => Ok(real),
            None => Err(NetlinkError::UnknownNs(0)),
        }
    }
}

/// What the commands need from outside.
pub struct Deps<'a> {
    /// The kernel.
    pub netlink: &'a mut dyn NetlinkProvider,
    /// IPAM plugins.
    pub ipam: &'a mut dyn Ipam,
    /// The log.
    pub log: &'a mut Logger,
    /// How long to wait for a VF lock.
    pub lock_timeout: Duration,
}

/// Runs one CNI invocation. `Ok(Some(json))` is printed on stdout; `Err` becomes the error JSON.
pub fn run(env: &CniEnv, stdin: &[u8], deps: &mut Deps<'_>) -> Result<Option<String>, CniError> {
    if env.command == Command::Version {
        return Ok(Some(version::version_json()));
    }
    // The version to report errors in: the request's, if stdin says which.
    let requested_version = serde_json::from_slice::<Value>(stdin)
        .ok()
        .and_then(|v| {
            v.get("cniVersion")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .filter(|v| version::SUPPORTED.contains(&v.as_str()))
        .unwrap_or_else(|| version::LATEST.to_owned());
    let fail = |e: PluginError| CniError::from_error(e.code(), &e).with_version(&requested_version);

    // A refused NetConf is said in the log too: the runtime shows the error result, but the
    // node's CNI log is where one looks (it used to hold nothing for the commonest mistake).
    let refused = |log: &mut Logger, e: PluginError| {
        log_refused_netconf(log, env, stdin, &e);
        fail(e)
    };
    let conf = if env.command == Command::Del {
        // DEL is best effort: bad CNI_ARGS or a bad VF field must not block the cleanup.
        let args = CniArgs::parse(&env.args).unwrap_or_default();
        let (conf, warnings) =
            NetConf::parse_for_del(stdin, &args).map_err(|e| refused(deps.log, e.into()))?;
        for w in warnings {
            deps.log.warn(&w);
        }
        conf
    } else {
        let args = CniArgs::parse(&env.args).map_err(|e| refused(deps.log, e.into()))?;
        NetConf::parse(stdin, &args).map_err(|e| refused(deps.log, e.into()))?
    };
    deps.log
        .configure(conf.log_level, conf.log_file.as_deref(), log_context(env));
    for w in &conf.log_warnings {
        deps.log.settings_warning(w);
    }
    let outcome = match env.command {
        Command::Add => {
            cmd_add(env, stdin, &conf, deps).map(|r| Some(r.to_value(conf.version).to_string()))
        }
        Command::Del => cmd_del(env, stdin, &conf, deps).map(|()| None),
        Command::Check => cmd_check(env, stdin, &conf, deps).map(|()| None),
        Command::Status => cmd_status(env, stdin, &conf, deps).map(|()| None),
        Command::Gc => cmd_gc(env, stdin, &conf, deps).map(|()| None),
        Command::Version => Ok(Some(version::version_json())),
    };
    outcome.map_err(|e| {
        deps.log
            .error(&format!("{} failed: {e}", env.command.as_str()));
        fail(e)
    })
}

/// What every log line of this invocation starts with: the pod too when the runtime names it in
/// CNI_ARGS (`K8S_POD_NAMESPACE`, `K8S_POD_NAME`, which kubelet's runtimes and Multus send), as
/// the on-call engineer looks a pod up by its name, not by its sandbox id.
fn log_context(env: &CniEnv) -> String {
    let arg = |key: &str| {
        env.args
            .split(';')
            .find_map(|pair| pair.strip_prefix(key)?.strip_prefix('='))
            .filter(|value| !value.is_empty())
    };
    let pod = match (arg("K8S_POD_NAMESPACE"), arg("K8S_POD_NAME")) {
        (Some(namespace), Some(name)) => format!(" pod={namespace}/{name}"),
        _ => String::new(),
    };
    format!(
        "containerID={} netns={} ifname={}{pod}",
        env.container_id, env.netns, env.ifname
    )
}

/// Logs a refused NetConf, at the `logLevel` and into the `logFile` it asks for when those can be
/// read from it (they never fail an attachment themselves), else at info on stderr.
fn log_refused_netconf(log: &mut Logger, env: &CniEnv, stdin: &[u8], error: &PluginError) {
    let raw = serde_json::from_slice::<Value>(stdin).ok();
    // Keys matched as the NetConf matches them (case-insensitively, as Go does).
    let setting = |key: &str| {
        raw.as_ref()
            .and_then(Value::as_object)
            .and_then(|object| crate::netconf::lookup(object, key))
            .and_then(Value::as_str)
    };
    let level = setting("logLevel")
        .and_then(crate::netconf::LogLevel::parse)
        .unwrap_or(crate::netconf::LogLevel::Info);
    let file = setting("logFile").filter(|path| path.starts_with('/'));
    log.configure(level, file, log_context(env));
    log.error(&format!(
        "{} refused the network configuration: {error}",
        env.command.as_str()
    ));
}

/// What an ADD recorded about a VF, and what DEL needs to undo it. Stored in sriov-cni's cache
/// layout (plus a few `vfpool*` keys the Go plugin ignores).
#[derive(Debug, Clone, PartialEq)]
pub struct Attachment {
    /// VF PCI address.
    pub pci: String,
    /// PF netdev name.
    pub pf: String,
    /// VF index.
    pub vf_index: u32,
    /// Whether `pf` and `vf_index` are a record to fall back on: false when a cache's `Master`
    /// is absent or its `VFID` is not a non-negative integer, where both are placeholders (DEL
    /// resolves the VF from sysfs by `pci` first; see `vf_target`).
    pub vf_known: bool,
    /// DPDK-bound (no netdev work).
    pub dpdk: bool,
    /// The VF netdev's name in the host ("" for DPDK).
    pub host_ifname: String,
    /// The VF's state before ADD; `None` when the PF reports no VF information.
    pub orig: Option<VfState>,
    /// The netdev's MAC before ADD.
    pub effective_mac: Option<MacAddr>,
    /// The netdev's MTU before ADD (0 = unknown).
    pub mtu: u32,
    /// The VF settings ADD applied (their kinds tell DEL what to restore).
    pub applied: Vec<VfSetting>,
    /// Whether `applied` holds the values ADD set, not only their kinds (a cache of an older
    /// vfpool recorded only the kinds, so CHECK cannot compare them with the PF).
    pub applied_values_known: bool,
    /// The pod's netns path.
    pub netns: String,
    /// The network name.
    pub network: String,
    /// Container id and ifname (for GC, which only has the cache).
    pub container_id: String,
    /// Interface name in the pod.
    pub ifname: String,
    /// What it left on the VF was undone when a new pod got the VF ([`VF_UNDONE_KEY`]): its
    /// DEL or GC has only the IP address left to release.
    pub vf_undone: bool,
    /// The IPAM configuration that made its allocation (the cached NetConf's `ipam` object, with
    /// a `type` that names a plugin): DEL and GC release through it, as sriov-cni does, whatever
    /// the request's configuration says now.
    pub ipam: Option<Map<String, Value>>,
}

fn mac_text(mac: Option<MacAddr>) -> String {
    mac.map(|m| m.to_string()).unwrap_or_default()
}

impl Attachment {
    /// The cached `ipam` section, if it holds the plugin's configuration and not its `type`
    /// alone: sriov-cni caches Go's `types.IPAM`, which has nothing but `type`, so its caches can
    /// name the plugin but not configure it (host-local without its ranges fails DEL).
    pub fn ipam_config(&self) -> Option<&Map<String, Value>> {
        self.ipam
            .as_ref()
            .filter(|ipam| ipam.keys().any(|key| !key.eq_ignore_ascii_case("type")))
    }

    /// The IPAM plugin that made the allocation ([`Attachment::ipam`]'s `type`).
    pub fn ipam_type(&self) -> Option<&str> {
        self.ipam
            .as_ref()
            .and_then(|ipam| crate::netconf::lookup(ipam, "type"))
            .and_then(Value::as_str)
    }

    /// The cache JSON: the NetConf as given, with sriov-cni's record keys on top.
    pub fn to_cache(&self, raw: &Map<String, Value>) -> Value {
        let orig = self.orig.unwrap_or(VfState {
            vf: self.vf_index,
            mac: MacAddr::ZERO,
            vlan: 0,
            qos: 0,
            proto: VlanProto::Dot1Q,
            spoofchk: false,
            trust: false,
            min_tx_rate: 0,
            max_tx_rate: 0,
            link_state: VfLinkState::Auto,
        });
        let admin_mac = if self.orig.is_some() {
            orig.mac.to_string()
        } else {
            String::new()
        };
        // sriov-cni's CmdAdd puts the MAC it applies (runtimeConfig.mac over CNI_ARGS MAC= over
        // `mac`, lower-cased) in NetConf.MAC, which Go caches under "MAC" (the field has no json
        // tag), and its DEL restores the admin and effective MAC only when that is non-empty.
        // Recording ours there lets a downgraded Go plugin DEL what we ADDed; "" (Go's zero
        // value) when no MAC was applied.
        let applied_mac = self
            .applied
            .iter()
            .find_map(|s| match s {
                VfSetting::Mac(mac) => Some(mac.to_string()),
                _ => None,
            })
            .unwrap_or_default();
        let ours = json!({
            "MAC": applied_mac,
            "OrigVfState": {
                "HostIFName": self.host_ifname,
                "SpoofChk": orig.spoofchk,
                "Trust": orig.trust,
                "AdminMAC": admin_mac,
                "EffectiveMAC": mac_text(self.effective_mac),
                "Vlan": orig.vlan,
                "VlanQoS": orig.qos,
                "VlanProto": orig.proto.ethertype(),
                "MinTxRate": orig.min_tx_rate,
                "MaxTxRate": orig.max_tx_rate,
                "LinkState": orig.link_state.as_u32(),
                "MTU": self.mtu,
            },
            "Master": self.pf,
            "VFID": self.vf_index,
            "deviceID": self.pci,
            "vfpoolDpdk": self.dpdk,
            "vfpoolVfInfo": self.orig.is_some(),
            "vfpoolApplied": self.applied.iter().map(|s| s.field()).collect::<Vec<_>>(),
            "vfpoolAppliedValues": applied_values(&self.applied),
            "vfpoolNetns": self.netns,
            "vfpoolContainerID": self.container_id,
            "vfpoolIfname": self.ifname,
        });
        let mut out = raw.clone();
        // A fresh attachment has failed no DEL and has left its VF as it is, whatever the NetConf
        // it came from carries.
        out.retain(|k, _| {
            !k.eq_ignore_ascii_case(DEL_FAILURES_KEY) && !k.eq_ignore_ascii_case(VF_UNDONE_KEY)
        });
        if let Value::Object(ours) = ours {
            for (k, v) in ours {
                // Go matches keys case-insensitively; drop any differently-cased twin first so the
                // Go plugin reads our value.
                out.retain(|existing, _| !existing.eq_ignore_ascii_case(&k));
                out.insert(k, v);
            }
        }
        Value::Object(out)
    }

    /// Reads a cache written by this plugin or by sriov-cni.
    pub fn from_cache(name: &str, value: &Value) -> Result<Attachment, PluginError> {
        let bad = |field| PluginError::BadCache {
            name: name.to_owned(),
            field,
        };
        let obj = value.as_object().ok_or_else(|| bad("<root>"))?;
        let get = |k: &str| -> Option<&Value> {
            obj.get(k).or_else(|| {
                obj.iter()
                    .find(|(key, _)| key.eq_ignore_ascii_case(k))
                    .map(|(_, v)| v)
            })
        };
        let text = |k: &str| get(k).and_then(Value::as_str).unwrap_or("").to_owned();
        let num = |v: Option<&Value>| v.and_then(Value::as_u64).unwrap_or(0);
        let pci = text("deviceID");
        if pci.is_empty() {
            return Err(bad("deviceID"));
        }
        let orig_obj = get("OrigVfState").and_then(Value::as_object);
        let o = |k: &str| orig_obj.and_then(|m| m.get(k));
        let host_ifname = o("HostIFName")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let admin_mac: Option<MacAddr> = o("AdminMAC")
            .and_then(Value::as_str)
            .and_then(|s| s.parse().ok());
        // A VFID that is absent, negative, not a number or too large names no VF; reading it as 0
        // would point DEL at VF 0 of the PF, possibly another pod's.
        let cached_vf = get("VFID")
            .and_then(Value::as_u64)
            .and_then(|n| u32::try_from(n).ok());
        let pf = text("Master");
        let vf_known = cached_vf.is_some() && !pf.is_empty();
        let vf_index = cached_vf.unwrap_or(0);
        // A Go cache always had VF info (sriov-cni fails ADD without it).
        let vf_info = get("vfpoolVfInfo").and_then(Value::as_bool).unwrap_or(true);
        let orig = vf_info.then(|| VfState {
            vf: vf_index,
            mac: admin_mac.unwrap_or(MacAddr::ZERO),
            vlan: num(o("Vlan")) as u16,
            qos: num(o("VlanQoS")) as u8,
            proto: VlanProto::from_ethertype(num(o("VlanProto")) as u16),
            spoofchk: o("SpoofChk").and_then(Value::as_bool).unwrap_or(false),
            trust: o("Trust").and_then(Value::as_bool).unwrap_or(false),
            min_tx_rate: num(o("MinTxRate")) as u32,
            max_tx_rate: num(o("MaxTxRate")) as u32,
            link_state: VfLinkState::from_u32(num(o("LinkState")) as u32),
        });
        // What was applied: our own list, or (Go cache) the NetConf fields that were set.
        let applied_fields: Vec<String> = match get("vfpoolApplied").and_then(Value::as_array) {
            Some(list) => list
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            None => {
                let mut f = Vec::new();
                let set = |k: &str| get(k).is_some_and(|v| !v.is_null() && v != "");
                if set("vlan") {
                    f.push("vlan".to_owned());
                }
                if set("MAC") {
                    f.push("mac".to_owned());
                }
                if set("min_tx_rate") || set("max_tx_rate") {
                    f.push("min_tx_rate/max_tx_rate".to_owned());
                }
                for k in ["spoofchk", "trust", "link_state"] {
                    if set(k) {
                        f.push(k.to_owned());
                    }
                }
                f
            }
        };
        let zero = VfSetting::Mac(MacAddr::ZERO);
        let kinds: Vec<VfSetting> = applied_fields
            .iter()
            .filter_map(|f| {
                Some(match f.as_str() {
                    "vlan" => VfSetting::Vlan {
                        id: 0,
                        qos: 0,
                        proto: VlanProto::Dot1Q,
                    },
                    "mac" => zero,
                    "min_tx_rate/max_tx_rate" => VfSetting::Rate { min: 0, max: 0 },
                    "spoofchk" => VfSetting::SpoofChk(false),
                    "trust" => VfSetting::Trust(false),
                    "link_state" => VfSetting::LinkState(VfLinkState::Auto),
                    _ => return None,
                })
            })
            .collect();
        // The values ADD set, for CHECK: ours are recorded in NetConf spelling; a Go cache is the
        // NetConf ADD applied, with the MAC it chose (CNI_ARGS, runtimeConfig) under "MAC".
        let values = match get("vfpoolAppliedValues") {
            Some(Value::Object(m)) => NetConf::vf_request(m).ok(),
            Some(_) => None,
            None if get("vfpoolApplied").is_none() => NetConf::vf_request(obj).ok(),
            None => None,
        }
        .map(|r| settings_of(&r));
        let same_kind =
            |a: &VfSetting, b: &VfSetting| std::mem::discriminant(a) == std::mem::discriminant(b);
        let (applied, applied_values_known) = match values {
            Some(values) if kinds.iter().all(|k| values.iter().any(|v| same_kind(k, v))) => (
                kinds
                    .iter()
                    .filter_map(|k| values.iter().find(|v| same_kind(k, v)).copied())
                    .collect(),
                true,
            ),
            _ => (kinds, false),
        };
        Ok(Attachment {
            pci,
            pf,
            vf_index,
            vf_known,
            dpdk: get("vfpoolDpdk")
                .and_then(Value::as_bool)
                .unwrap_or(host_ifname.is_empty()),
            host_ifname,
            orig,
            effective_mac: o("EffectiveMAC")
                .and_then(Value::as_str)
                .and_then(|s| s.parse().ok()),
            mtu: num(o("MTU")) as u32,
            applied,
            applied_values_known,
            netns: text("vfpoolNetns"),
            network: text("name"),
            container_id: text("vfpoolContainerID"),
            ifname: text("vfpoolIfname"),
            vf_undone: get(VF_UNDONE_KEY).and_then(Value::as_bool).unwrap_or(false),
            ipam: get("ipam")
                .and_then(Value::as_object)
                .filter(|ipam| {
                    crate::netconf::lookup(ipam, "type")
                        .and_then(Value::as_str)
                        .is_some_and(crate::netconf::is_plugin_name)
                })
                .cloned(),
        })
    }

    /// The settings that put the VF back as it was, in sriov-cni's DEL order: VLAN, spoofchk,
    /// admin MAC (always, when known: #214, PR #397), trust, rate, link state.
    pub fn restore_settings(&self) -> Vec<VfSetting> {
        let Some(orig) = self.orig else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let was = |kind: fn(&VfSetting) -> bool| self.applied.iter().any(kind);
        if was(|s| matches!(s, VfSetting::Vlan { .. })) {
            out.push(VfSetting::Vlan {
                id: orig.vlan,
                qos: orig.qos,
                proto: orig.proto,
            });
        }
        if was(|s| matches!(s, VfSetting::SpoofChk(_))) {
            out.push(VfSetting::SpoofChk(orig.spoofchk));
        }
        out.push(VfSetting::Mac(orig.mac));
        if was(|s| matches!(s, VfSetting::Trust(_))) {
            out.push(VfSetting::Trust(orig.trust));
        }
        if was(|s| matches!(s, VfSetting::Rate { .. })) {
            out.push(VfSetting::Rate {
                min: orig.min_tx_rate,
                max: orig.max_tx_rate,
            });
        }
        if was(|s| matches!(s, VfSetting::LinkState(_))) {
            out.push(VfSetting::LinkState(orig.link_state));
        }
        out
    }
}

/// One completed ADD step, and how to undo it.
enum Undo {
    /// A VF setting was applied; this is the original value.
    VfSetting(VfSetting),
    /// The netdev is in the pod netns under this name.
    InPodAs(NsId, String),
    /// IPAM was asked for addresses (the run, while it has not been waited for).
    Ipam(String, Option<crate::ipam::Pending>),
}

/// IPAM plugins that only hand out addresses and never touch the interface or the netns, so
/// they can run before the interface is in the pod. Any other plugin (dhcp talks DHCP on the
/// interface) runs with the interface in place, as in sriov-cni.
pub fn ipam_only_allocates(plugin: &str) -> bool {
    matches!(plugin, "host-local" | "static" | "whereabouts")
}

/// The requested VF settings in application order (sriov-cni's ApplyVFConfig order).
fn requested_settings(conf: &NetConf) -> Vec<VfSetting> {
    settings_of(&conf.vf)
}

/// The settings a request asks for, in sriov-cni's ApplyVFConfig order.
fn settings_of(r: &VfRequest) -> Vec<VfSetting> {
    let mut out = Vec::new();
    if let Some((id, qos, proto)) = r.vlan {
        out.push(VfSetting::Vlan { id, qos, proto });
    }
    if let Some(mac) = r.mac {
        out.push(VfSetting::Mac(mac));
    }
    if let Some((min, max)) = r.rate {
        out.push(VfSetting::Rate { min, max });
    }
    if let Some(on) = r.spoofchk {
        out.push(VfSetting::SpoofChk(on));
    }
    if let Some(on) = r.trust {
        out.push(VfSetting::Trust(on));
    }
    if let Some(s) = r.link_state {
        out.push(VfSetting::LinkState(s));
    }
    out
}

/// `applied` in NetConf spelling (`NetConf::vf_request` reads it back).
fn applied_values(applied: &[VfSetting]) -> Value {
    let on_off = |on: bool| if on { "on" } else { "off" };
    let mut out = Map::new();
    for setting in applied {
        match *setting {
            VfSetting::Vlan { id, qos, proto } => {
                out.insert("vlan".into(), json!(id));
                out.insert("vlanQoS".into(), json!(qos));
                out.insert("vlanProto".into(), json!(proto.as_str()));
            }
            VfSetting::Mac(mac) => {
                out.insert("mac".into(), json!(mac.to_string()));
            }
            VfSetting::Rate { min, max } => {
                out.insert("min_tx_rate".into(), json!(min));
                out.insert("max_tx_rate".into(), json!(max));
            }
            VfSetting::SpoofChk(on) => {
                out.insert("spoofchk".into(), json!(on_off(on)));
            }
            VfSetting::Trust(on) => {
                out.insert("trust".into(), json!(on_off(on)));
            }
            VfSetting::LinkState(state) => {
                out.insert("link_state".into(), json!(state.as_str()));
            }
        }
    }
    Value::Object(out)
}

fn apply_vf_setting(
    netlink: &mut dyn Netlink,
    pf: &str,
    vf: u32,
    setting: VfSetting,
) -> Result<(), PluginError> {
    let refused = |source| PluginError::VfSetting {
        pf: pf.to_owned(),
        vf,
        setting: setting.to_string(),
        field: setting.field(),
        source,
    };
    netlink.set_vf(pf, vf, setting).map_err(refused)?;
    verify_vf_setting(netlink, pf, vf, setting)
}

/// Waits until the PF reports an admin MAC that was just set: some drivers apply it
/// asynchronously. Other settings need no check.
fn verify_vf_setting(
    netlink: &mut dyn Netlink,
    pf: &str,
    vf: u32,
    setting: VfSetting,
) -> Result<(), PluginError> {
    let VfSetting::Mac(mac) = setting else {
        return Ok(());
    };
    retry_mac(|| {
        let reported = netlink
            .vfs(pf)
            .map_err(nl(format!("reading VF {vf} of PF {pf} back")))?
            .and_then(|vfs| vfs.into_iter().find(|s| s.vf == vf))
            .map(|s| s.mac);
        if reported == Some(mac) {
            return Ok(MacAttempt::Done);
        }
        Ok(MacAttempt::Again(PluginError::VfSetting {
            pf: pf.to_owned(),
            vf,
            setting: setting.to_string(),
            field: "mac",
            source: NetlinkError::Kernel {
                op: format!("verifying MAC {mac} on VF {vf}"),
                source: std::io::Error::other("the PF keeps reporting a different MAC"),
            },
        }))
    })
}

/// The outcome of one try at a MAC change.
enum MacAttempt {
    Done,
    /// Not (yet) in effect; the error to report if it never is.
    Again(PluginError),
}

/// sriov-cni's `Retry(20, 100ms)` around MAC changes: some VF drivers apply a MAC
/// asynchronously (the PF acknowledges later: iavf), so the change is read back and tried again.
fn retry_mac(
    mut attempt: impl FnMut() -> Result<MacAttempt, PluginError>,
) -> Result<(), PluginError> {
    const ATTEMPTS: u32 = 20;
    let mut tried = 1;
    loop {
        match attempt()? {
            MacAttempt::Done => return Ok(()),
            MacAttempt::Again(e) if tried >= ATTEMPTS => return Err(e),
            MacAttempt::Again(_) => {
                std::thread::sleep(Duration::from_millis(100));
                tried += 1;
            }
        }
    }
}

/// Sets a netdev's (effective) MAC and reads it back, trying again while the driver has not
/// applied it, as sriov-cni's SetVFEffectiveMAC: iavf answers EAGAIN when the PF is slow to
/// acknowledge, and older iavf accepts the change before the PF has.
fn set_effective_mac(
    netlink: &mut dyn Netlink,
    ns: NsId,
    ifname: &str,
    mac: MacAddr,
    context: &str,
) -> Result<(), PluginError> {
    retry_mac(|| {
        if let Err(e) = netlink.set_mac(ns, ifname, mac) {
            // Any other refusal (a driver that forbids MAC changes) will not change in 2 s.
            let transient = matches!(&e, NetlinkError::Kernel { source, .. }
                if matches!(source.raw_os_error(), Some(nix::libc::EAGAIN | nix::libc::EBUSY)));
            let e = nl(context)(e);
            return if transient {
                Ok(MacAttempt::Again(e))
            } else {
                Err(e)
            };
        }
        let now = netlink
            .link(ns, ifname)
            .map_err(nl(format!("{context}: reading it back")))?
            .and_then(|l| l.mac);
        if now == Some(mac) {
            return Ok(MacAttempt::Done);
        }
        Ok(MacAttempt::Again(PluginError::Netlink {
            context: context.to_owned(),
            source: NetlinkError::Kernel {
                op: format!("verifying MAC {mac} on {ifname:?}"),
                source: std::io::Error::other(format!(
                    "the driver keeps reporting {}",
                    now.map_or_else(|| "no MAC".to_owned(), |m| m.to_string())
                )),
            },
        }))
    })
}

/// Moves a netdev from `from` (named `ifname`) back into the host as `host_ifname`, restoring
/// its MAC and MTU and leaving it down: renamed inside `from` and moved once, or through an empty
/// temporary netns when `from` has its own interface with the host name, so no name collides on
/// the way (#40, #321) and the pod name never lingers as an altname (#445).
fn return_to_host(
    netlink: &mut dyn Netlink,
    from: NsId,
    ifname: &str,
    att: &Attachment,
) -> Result<(), PluginError> {
    let ctx = |what: &str| {
        format!(
            "returning {ifname:?} to the host as {:?}: {what}",
            att.host_ifname
        )
    };
    let link = netlink
        .link(from, ifname)
        .map_err(nl(ctx("looking it up")))?
        .ok_or_else(|| PluginError::Netlink {
            context: ctx("looking it up"),
            source: NetlinkError::NoSuchLink {
                ns: att.netns.clone(),
                name: ifname.to_owned(),
            },
        })?;
    let restore_mac = att
        .effective_mac
        .filter(|m| !m.is_zero() && link.mac != Some(*m));
    let host_name = att.host_ifname.as_str();
    let taken_in_pod = from != NsId::HOST
        && ifname != host_name
        && netlink
            .link(from, host_name)
            .map_err(nl(ctx("checking the name in the pod")))?
            .is_some();
    // Renamed where it is (not through a move, which closes the link first).
    let renamed_in_place = ifname != host_name && !taken_in_pod;
    // Kernels before 6.2 refuse to rename an up device (EBUSY), as some VF drivers refuse a MAC
    // change while up: sriov-cni's ReleaseVF sets it down first. A bare move closes the link
    // anyway, and an extra down would cost another RCU grace period on the DEL path.
    if link.up && (restore_mac.is_some() || renamed_in_place || from == NsId::HOST) {
        netlink
            .set_up(from, ifname, false)
            .map_err(nl(ctx("setting it down")))?;
    }
    if let Some(mac) = restore_mac {
        set_effective_mac(netlink, from, ifname, mac, &ctx("restoring its MAC"))?;
    }
    if att.mtu != 0 && link.mtu != att.mtu {
        netlink
            .set_mtu(from, ifname, att.mtu)
            .map_err(nl(ctx("restoring its MTU")))?;
    }
    if from == NsId::HOST {
        // The kernel already brought it home (its netns died): a rename is all that is left.
        netlink
            .rename(from, ifname, host_name)
            .map_err(nl(ctx("renaming it")))?;
        return drop_altname(netlink, from, host_name, ifname);
    }
    if taken_in_pod {
        // The pod has its own interface with the VF's host name (#40/#49): rename on the way
        // through an empty temporary netns instead.
        return via_temp(netlink, from, ifname, NsId::HOST, host_name);
    }
    // One move (each move costs the kernel RCU grace periods): rename inside the pod, drop the
    // pod name from the altnames (#445), then move home under the original name.
    if ifname != host_name {
        netlink
            .rename(from, ifname, host_name)
            .map_err(nl(ctx("renaming it in the pod")))?;
    }
    let moved = drop_altname(netlink, from, host_name, ifname).and_then(|()| {
        netlink
            .move_link(from, LinkRef::Name(host_name), NsId::HOST, host_name)
            .map_err(nl(ctx("moving it")))
    });
    if moved.is_err() && ifname != host_name {
        // Leave it as it was found rather than under a half-changed name.
        let _ = netlink.rename(from, host_name, ifname);
    }
    moved
}

/// Moves `name` from `from` to `to` as `new_name` through a fresh temporary netns, dropping the
/// old name from the altnames on the way. On failure the link is put back where it was.
fn via_temp(
    netlink: &mut dyn Netlink,
    from: NsId,
    name: &str,
    to: NsId,
    new_name: &str,
) -> Result<(), PluginError> {
    let temp = netlink
        .create_temp_netns()
        .map_err(nl("creating a temporary network namespace"))?;
    let result = (|| {
        netlink
            .move_link(from, LinkRef::Name(name), temp, new_name)
            .map_err(nl(format!(
                "moving {name:?} into a temporary network namespace as {new_name:?}"
            )))?;
        let second = (|| {
            drop_altname(netlink, temp, new_name, name)?;
            netlink
                .move_link(temp, LinkRef::Name(new_name), to, new_name)
                .map_err(nl(format!(
                    "moving {new_name:?} out of the temporary network namespace"
                )))
        })();
        if let Err(e) = second {
            // Never let the link die with the temporary namespace.
            let _ = netlink.move_link(temp, LinkRef::Name(new_name), from, name);
            return Err(e);
        }
        Ok(())
    })();
    netlink.close_netns(temp);
    result
}

fn drop_altname(
    netlink: &mut dyn Netlink,
    ns: NsId,
    name: &str,
    altname: &str,
) -> Result<(), PluginError> {
    if name == altname {
        return Ok(());
    }
    let link = netlink
        .link(ns, name)
        .map_err(nl(format!("looking up {name:?}")))?;
    if link.is_some_and(|l| l.altnames.iter().any(|a| a == altname)) {
        netlink.del_altname(ns, name, altname).map_err(nl(format!(
            "deleting the stale altname {altname:?} of {name:?}"
        )))?;
    }
    Ok(())
}

fn ipam_result(plugin: &str, out: &str) -> Result<CniResult, PluginError> {
    let result = CniResult::parse(out).map_err(|source| PluginError::IpamResult {
        plugin: plugin.to_owned(),
        source,
    })?;
    if result.ips.is_empty() {
        return Err(PluginError::IpamNoIp(plugin.to_owned()));
    }
    Ok(result)
}

/// Undoes what attachments of VF `pci` whose pods are gone left on it — its PF-side settings, its
/// netdev under the pod's name where the kernel returned it — before a new pod records the VF's
/// state as its own: a pod whose netns vanished before its DEL (a runtime crash) left its VLAN,
/// trust and MAC on the VF, and the next pod took them for the VF's original state, ran with them
/// and "restored" them on its DEL. Their caches stay, so their own DEL still releases their IP
/// addresses (and, finding the VF taken, leaves it alone). Best effort: a failure is logged.
fn undo_dead_attachments(
    env: &CniEnv,
    state: &StateDir,
    pci: &str,
    deps: &mut Deps<'_>,
) -> Result<(), PluginError> {
    let own = cache_name(&env.container_id, &env.ifname);
    let Some(records) = other_records_of_vf(state, pci, &own) else {
        return Ok(());
    };
    for (name, mut value, att) in records {
        // A Go cache records no netns; the stale marker just cleared was its pod's.
        if !att.netns.is_empty() && netns::exists(Path::new(&att.netns)) {
            continue;
        }
        deps.log.info(&format!(
            "undoing what {name} left on VF {pci} (its pod's netns is gone) before reusing it"
        ));
        let undone = deps
            .netlink
            .get()
            .map_err(nl("connecting to netlink"))
            .and_then(|netlink| release("", &env.sysfs_root, &att, netlink, deps.log));
        match undone {
            // Once: a later reuse, or this attachment's own late DEL, must not restore its
            // state over what came since.
            Ok(()) => {
                if let Value::Object(record) = &mut value {
                    record.insert(VF_UNDONE_KEY.to_owned(), Value::Bool(true));
                }
                if let Err(e) = state.write_cache_named(&name, &value) {
                    deps.log.warn(&format!(
                        "could not mark {name} as undone: {}",
                        error_chain(&e)
                    ));
                }
            }
            // The netdev comes back later: ADD fails "try again later", with the marker kept so
            // that the retry undoes it then.
            Err(e @ PluginError::NetdevNotBack { .. }) => return Err(e),
            Err(e) => deps.log.warn(&format!(
                "could not undo what {name} left on VF {pci}: {}",
                error_chain(&e)
            )),
        }
    }
    Ok(())
}

fn cmd_add(
    env: &CniEnv,
    stdin: &[u8],
    conf: &NetConf,
    deps: &mut Deps<'_>,
) -> Result<CniResult, PluginError> {
    let pci = conf.device_id.clone().ok_or(PluginError::NoDeviceId)?;
    let state = StateDir::new(&env.state_dir);
    let _lock = state.lock(&pci, deps.lock_timeout)?;
    if let Some(holder) = state.marker(&pci)? {
        // A marker naming the plugin's own netns names no pod: a `/proc/<pid>/ns/net` whose pod
        // is gone and whose pid a host process has now.
        if !holder.is_empty()
            && netns::exists(Path::new(&holder))
            && !deps
                .netlink
                .get()
                .map_err(nl("connecting to netlink"))?
                .is_host_netns(Path::new(&holder))
                .unwrap_or(false)
        {
            return Err(PluginError::AlreadyAllocated { pci, netns: holder });
        }
        deps.log.info(&format!(
            "clearing the stale allocation of {pci} to {holder:?} (its pod is gone)"
        ));
        undo_dead_attachments(env, &state, &pci, deps)?;
        state.remove_marker(&pci)?;
    }
    let vf = vf::resolve(&env.sysfs_root, &pci)?;
    let dpdk = vf.netdev.is_none() && vf.is_dpdk();
    let host_ifname = match (&vf.netdev, dpdk) {
        (Some(n), _) => n.clone(),
        (None, true) => String::new(),
        (None, false) => {
            return Err(VfError::NoNetdev {
                pci,
                driver: vf.driver.clone(),
            }
            .into());
        }
    };
    deps.log.debug(&format!(
        "VF {pci}: PF {} index {}, netdev {:?}, driver {:?}{}",
        vf.pf,
        vf.index,
        vf.netdev,
        vf.driver,
        if dpdk { " (DPDK: no netns work)" } else { "" }
    ));
    let netlink = deps.netlink.get().map_err(nl("connecting to netlink"))?;
    // skel refuses it (ErrInvalidNetNS): the VF, its addresses and a default route would be the
    // host's.
    if !env.netns_override
        && netlink
            .is_host_netns(Path::new(&env.netns))
            .map_err(nl(format!(
                "opening the pod network namespace {}",
                env.netns
            )))?
    {
        return Err(PluginError::OwnNetns {
            netns: env.netns.clone(),
        });
    }

    // Record the original state before touching anything.
    let requested = requested_settings(conf);
    let orig = match netlink
        .vfs(&vf.pf)
        .map_err(nl(format!("reading the VF information of PF {}", vf.pf)))?
    {
        Some(list) => Some(list.into_iter().find(|s| s.vf == vf.index).ok_or_else(|| {
            PluginError::VfNotReported {
                pf: vf.pf.clone(),
                vf: vf.index,
            }
        })?),
        None => None,
    };
    if orig.is_none() && !requested.is_empty() {
        return Err(PluginError::VfSettingsUnsupported {
            pf: vf.pf.clone(),
            vf: vf.index,
            fields: conf.vf.requested_fields().join(", "),
        });
    }
    let host_link = if dpdk {
        None
    } else {
        Some(
            netlink
                .link(NsId::HOST, &host_ifname)
                .map_err(nl(format!("looking up the VF netdev {host_ifname:?}")))?
                .ok_or_else(|| PluginError::NetdevRenamed {
                    pci: pci.clone(),
                    netdev: host_ifname.clone(),
                    now: "is gone".to_owned(),
                })?,
        )
    };
    // The name came from sysfs a moment ago; a kernel that names the link's parent device
    // (IFLA_PARENT_DEV_NAME, Linux 5.14 and later) tells whether it is still the VF's. From here
    // on the link is acted on by its ifindex.
    if let Some(parent) = host_link.as_ref().and_then(|l| l.parent.as_deref())
        && !parent.eq_ignore_ascii_case(&pci)
    {
        return Err(PluginError::NetdevRenamed {
            pci,
            netdev: host_ifname,
            now: format!("is the netdev of {parent} by now"),
        });
    }
    let pod = netlink
        .open_netns(Path::new(&env.netns))
        .map_err(nl(format!(
            "opening the pod network namespace {}",
            env.netns
        )))?;
    if !dpdk
        && netlink
            .link(pod, &env.ifname)
            .map_err(nl(format!("looking up {:?} in the pod", env.ifname)))?
            .is_some()
    {
        netlink.close_netns(pod);
        return Err(PluginError::IfnameTaken {
            ifname: env.ifname.clone(),
            netns: env.netns.clone(),
        });
    }
    let attachment = Attachment {
        pci: pci.clone(),
        pf: vf.pf.clone(),
        vf_index: vf.index,
        vf_known: true,
        dpdk,
        host_ifname: host_ifname.clone(),
        orig,
        effective_mac: host_link.as_ref().and_then(|l| l.mac),
        mtu: host_link.as_ref().map_or(0, |l| l.mtu),
        applied: requested.clone(),
        applied_values_known: true,
        netns: env.netns.clone(),
        network: conf.name.clone(),
        container_id: env.container_id.clone(),
        ifname: env.ifname.clone(),
        vf_undone: false,
        ipam: conf
            .ipam_type
            .as_ref()
            .and_then(|_| crate::netconf::lookup(&conf.raw, "ipam"))
            .and_then(Value::as_object)
            .cloned(),
    };
    deps.log.debug(&format!(
        "original state: VF {:?}, netdev MAC {:?} MTU {}; applying {:?}",
        attachment.orig, attachment.effective_mac, attachment.mtu, attachment.applied
    ));
    state.write_cache(
        &env.container_id,
        &env.ifname,
        &attachment.to_cache(&conf.raw),
    )?;
    if let Err(e) = state.write_marker(&pci, &env.netns) {
        let _ = state.remove_cache(&env.container_id, &env.ifname);
        return Err(e.into());
    }

    let mut journal = Vec::new();
    let outcome = add_steps(
        env,
        stdin,
        conf,
        &attachment,
        host_link.as_ref(),
        pod,
        &requested,
        netlink,
        deps.ipam,
        &mut journal,
    );
    match outcome {
        Ok(result) => {
            netlink.close_netns(pod);
            deps.log.info(&format!(
                "attached VF {pci} ({host_ifname}) as {}",
                env.ifname
            ));
            Ok(result)
        }
        Err(error) => {
            let failures = rollback(env, stdin, &attachment, netlink, deps.ipam, journal);
            netlink.close_netns(pod);
            if failures.is_empty() {
                // Everything is undone: forget the attachment.
                let _ = state.remove_marker(&pci);
                let _ = state.remove_cache(&env.container_id, &env.ifname);
                Err(error)
            } else {
                // Keep the cache so the runtime's DEL can finish the job.
                for f in &failures {
                    deps.log.error(&format!("rollback: {f}"));
                }
                Err(PluginError::RollbackFailed {
                    error: Box::new(error),
                    rollback: failures.join("; "),
                })
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn add_steps(
    env: &CniEnv,
    stdin: &[u8],
    conf: &NetConf,
    att: &Attachment,
    host_link: Option<&LinkInfo>,
    pod: NsId,
    requested: &[VfSetting],
    netlink: &mut dyn Netlink,
    ipam: &mut dyn Ipam,
    journal: &mut Vec<Undo>,
) -> Result<CniResult, PluginError> {
    // 0. An IPAM plugin that only allocates starts first and runs while the VF is configured
    // and moved (the kernel's netns move takes as long as the plugin). Journaled at once: the
    // spec asks a plugin whose delegate failed ADD to call its DEL too, so a half-done allocation
    // is released.
    if let Some(plugin) = conf.ipam_type.as_deref().filter(|p| ipam_only_allocates(p)) {
        let pending = ipam.start("ADD", plugin, stdin, env);
        journal.push(Undo::Ipam(plugin.to_owned(), Some(pending)));
    }

    // 1. VF settings through the PF, only those requested.
    if let Some(orig) = att.orig {
        for setting in requested {
            netlink
                .set_vf(&att.pf, att.vf_index, *setting)
                .map_err(|source| PluginError::VfSetting {
                    pf: att.pf.clone(),
                    vf: att.vf_index,
                    setting: setting.to_string(),
                    field: setting.field(),
                    source,
                })?;
            // Journal as soon as the kernel took it: a MAC that is slow to show up may still
            // land, and must be undone if ADD fails.
            journal.push(Undo::VfSetting(setting.current_in(&orig)));
            verify_vf_setting(netlink, &att.pf, att.vf_index, *setting)?;
        }
    }

    // 2. The netdev into the pod under its pod name, in one move: the kernel renames it inside
    // the pod (taking the pod name directly if the host name is taken there), so nothing is ever
    // renamed in the host (#321) and the pod name never collides with a host interface.
    let ifname = env.ifname.as_str();
    if !att.dpdk {
        let vf_link = host_link.map_or(LinkRef::Name(&att.host_ifname), LinkRef::found);
        if let Err(e) = netlink.move_link(NsId::HOST, vf_link, pod, ifname) {
            // A move can succeed and the rename after it fail; then the link is in the pod
            // under its host name and must come back too.
            if let Ok(Some(_)) = netlink.link(pod, &att.host_ifname) {
                journal.push(Undo::InPodAs(pod, att.host_ifname.clone()));
            }
            return Err(nl(format!(
                "moving {:?} into the pod network namespace {} as {ifname:?}",
                att.host_ifname, env.netns
            ))(e));
        }
        journal.push(Undo::InPodAs(pod, ifname.to_owned()));
        drop_altname(netlink, pod, ifname, &att.host_ifname)?;

        // Announce addresses when the link comes up (gratuitous ARP / unsolicited NA) and let
        // IPv6 addresses be used during DAD, as sriov-cni does; a failure only costs the
        // announcement (IPv6 may be disabled in the pod).
        let _ = netlink.set_sysctls(
            pod,
            &[
                (format!("net/ipv4/conf/{ifname}/arp_notify"), "1"),
                (format!("net/ipv6/conf/{ifname}/ndisc_notify"), "1"),
                (format!("net/ipv6/conf/{ifname}/optimistic_dad"), "1"),
            ],
        );
        if let Some(mac) = conf.mac {
            set_effective_mac(
                netlink,
                pod,
                ifname,
                mac,
                &format!("setting the MAC of {ifname:?} to {mac} (NetConf field \"mac\")"),
            )?;
        }
        if let Some(mtu) = conf.mtu {
            netlink.set_mtu(pod, ifname, mtu).map_err(nl(format!(
                "setting the MTU of {ifname:?} to {mtu} (NetConf field \"mtu\")"
            )))?;
        }
    }

    // 3. IPAM. Any other plugin (dhcp, or one we do not know) may work on the interface, so it
    // runs now, as in sriov-cni: with the interface in the pod, under its name, and up.
    let mut result = CniResult::default();
    if let Some(plugin) = conf
        .ipam_type
        .as_deref()
        .filter(|p| !ipam_only_allocates(p))
    {
        if !att.dpdk {
            netlink
                .set_up(pod, ifname, true)
                .map_err(nl(format!("setting {ifname:?} up")))?;
        }
        let pending = ipam.start("ADD", plugin, stdin, env);
        journal.push(Undo::Ipam(plugin.to_owned(), Some(pending)));
    }
    if let Some(plugin) = &conf.ipam_type {
        let pending = journal.iter_mut().find_map(|step| match step {
            Undo::Ipam(_, pending) => pending.take(),
            _ => None,
        });
        let out = match pending {
            Some(pending) => pending.wait()?,
            None => ipam.exec("ADD", plugin, stdin, env)?,
        };
        let ipam = ipam_result(plugin, &out)?;
        result.ips = ipam.ips;
        result.routes = ipam.routes;
        result.dns = ipam.dns;
        for ip in &mut result.ips {
            ip.interface = Some(0);
        }
    }

    // 4. Addresses, link up, routes (addresses first so the kernel announces them on up).
    let mut final_mac = conf.mac.or(att.effective_mac);
    let mut final_mtu = att.mtu;
    if att.dpdk {
        final_mac = conf
            .mac
            .or(att.orig.map(|o| o.mac).filter(|m| !m.is_zero()));
        // No netdev to read: sriov-cni reports the PF's MTU. Only informational, so a PF that
        // cannot be read costs the MTU in the result, not the ADD.
        final_mtu = match netlink.link(NsId::HOST, &att.pf) {
            Ok(Some(pf)) => pf.mtu,
            _ => 0,
        };
    } else {
        let mut ipv6_enabled = false;
        for ip in &result.ips {
            if !ip.address.is_ipv4() && !ipv6_enabled {
                // The pod netns may have IPv6 disabled by default (the interface inherits it on
                // the move), and then the kernel refuses the address: upstream's ConfigureIface
                // enables it on lo and the interface first. Writing the value it already has
                // changes nothing.
                netlink
                    .set_sysctls(
                        pod,
                        &[
                            ("net/ipv6/conf/lo/disable_ipv6".to_owned(), "0"),
                            (format!("net/ipv6/conf/{ifname}/disable_ipv6"), "0"),
                        ],
                    )
                    .map_err(nl(format!(
                        "enabling IPv6 on lo and {ifname:?} in the pod (writing 0 to \
                         net/ipv6/conf/<if>/disable_ipv6) before adding {}: the IPAM result has an \
                         IPv6 address, so the node must not boot with ipv6.disable=1",
                        ip.address
                    )))?;
                ipv6_enabled = true;
            }
            netlink
                .add_address(pod, ifname, ip.address)
                .map_err(nl(format!("adding address {} to {ifname:?}", ip.address)))?;
        }
        netlink
            .set_up(pod, ifname, true)
            .map_err(nl(format!("setting {ifname:?} up")))?;
        for route in &result.routes {
            // As upstream's ConfigureIface: the first gateway of the route's family among the
            // IPs, skipping IPs without one.
            let gw = route.gw.or_else(|| {
                result
                    .ips
                    .iter()
                    .filter_map(|ip| ip.gateway)
                    .find(|gw| gw.is_ipv4() == route.dst.is_ipv4())
            });
            netlink
                .add_route(pod, ifname, route, gw)
                .map_err(nl(format!("adding route {} to {ifname:?}", route.dst)))?;
        }
        // Refresh the neighbours' caches now that the link has carrier: an IP reused by a new
        // pod must not keep pointing at the old pod's MAC. The kernel's own announcement at link
        // up is lost when carrier comes later, as it does on real VFs. A failure only costs the
        // announcement, as in sriov-cni.
        if !result.ips.is_empty() {
            let _ = netlink.announce(pod, ifname, CARRIER_WAIT);
        }
        if let Some(link) = netlink
            .link(pod, ifname)
            .map_err(nl(format!("reading {ifname:?} back")))?
        {
            final_mac = link.mac.or(final_mac);
            final_mtu = link.mtu;
        }
    }
    result.interfaces = vec![Interface {
        name: ifname.to_owned(),
        mac: final_mac.map(|m| m.to_string()),
        mtu: (final_mtu != 0).then_some(final_mtu),
        sandbox: Some(env.netns.clone()),
        socket_path: None,
        pci_id: Some(att.pci.clone()),
    }];
    Ok(result)
}

/// Undoes completed ADD steps: the VF's PF-side settings first, as DEL does, then the rest newest
/// first. Returns what could not be undone. The PF side goes first because a VF driver may refuse
/// to change its netdev's MAC to anything but the admin MAC the PF set (iavf under i40e or ice,
/// untrusted): returning the netdev first failed to restore its MAC and left it in the pod.
fn rollback(
    env: &CniEnv,
    stdin: &[u8],
    att: &Attachment,
    netlink: &mut dyn Netlink,
    ipam: &mut dyn Ipam,
    journal: Vec<Undo>,
) -> Vec<String> {
    let mut failures = Vec::new();
    let (pf_side, rest): (Vec<Undo>, Vec<Undo>) = journal
        .into_iter()
        .partition(|step| matches!(step, Undo::VfSetting(_)));
    for step in pf_side.into_iter().rev().chain(rest.into_iter().rev()) {
        let outcome = match step {
            Undo::Ipam(plugin, pending) => {
                // Its ADD must be over before its DEL runs.
                if let Some(pending) = pending {
                    let _ = pending.wait();
                }
                match ipam.exec("DEL", &plugin, stdin, env) {
                    // A plugin that is not installed cannot have allocated anything.
                    Ok(_) | Err(IpamError::NotFound { .. }) => Ok(()),
                    Err(e) => Err(e.into()),
                }
            }
            Undo::InPodAs(pod, name) => return_to_host(netlink, pod, &name, att),
            Undo::VfSetting(orig) => apply_vf_setting(netlink, &att.pf, att.vf_index, orig),
        };
        if let Err(e) = outcome {
            failures.push(error_chain(&e));
        }
    }
    failures
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The PF and VF index to restore a cached attachment's VF settings through. sysfs, from the
/// cached `deviceID`, comes first: `Master` and `VFID` are only what the cache says (corrupt,
/// edited, or a PF renamed since ADD), and a wrong index resets another pod's VF. The cache serves
/// only when sysfs cannot resolve the VF and it records both; otherwise `None` (with a warning):
/// leaving the settings is better than changing some other VF's.
fn vf_target(sysfs_root: &Path, att: &Attachment, log: &mut Logger) -> Option<(String, u32)> {
    match vf::resolve(sysfs_root, &att.pci) {
        Ok(v) => {
            if att.vf_known && (v.pf != att.pf || v.index != att.vf_index) {
                log.info(&format!(
                    "VF {} is VF {} of PF {} in sysfs, the cache says VF {} of PF {}; going by sysfs",
                    att.pci, v.index, v.pf, att.vf_index, att.pf
                ));
            }
            Some((v.pf, v.index))
        }
        Err(e) if att.vf_known => {
            log.info(&format!(
                "{e}; restoring VF {} of PF {} as the cache records it",
                att.vf_index, att.pf
            ));
            Some((att.pf.clone(), att.vf_index))
        }
        Err(e) => {
            log.warn(&format!(
                "{e}; the cache has no valid \"Master\" and \"VFID\" either, so VF {}'s settings are not restored (reset them through its PF by hand if needed)",
                att.pci
            ));
            None
        }
    }
}

/// Puts a VF back as the cache describes: VF settings through the PF, then the netdev from
/// wherever it is now (the pod netns, or the host if the kernel already returned it when the pod
/// netns was destroyed — #126, #349) back under its original name.
fn release(
    env_netns: &str,
    sysfs_root: &Path,
    att: &Attachment,
    netlink: &mut dyn Netlink,
    log: &mut Logger,
) -> Result<(), PluginError> {
    if att.vf_undone {
        // Undone when a new pod got the VF; restoring it again would undo what came since.
        log.info(&format!(
            "VF {}: what this attachment left on it was undone when a new pod got it",
            att.pci
        ));
        return Ok(());
    }
    // VF settings first: some drivers refuse to reset a VF whose netdev is elsewhere with trust
    // off (sriov-cni PR #232/#239).
    let mut errors = Vec::new();
    let restores: Vec<VfSetting> = att
        .restore_settings()
        .into_iter()
        .filter(|setting| {
            // Nothing to restore when the VF had no admin MAC and none was set (writing zeros is
            // refused by some drivers).
            !(*setting == VfSetting::Mac(MacAddr::ZERO)
                && att.orig.is_some_and(|o| o.mac.is_zero())
                && !att.applied.iter().any(|s| matches!(s, VfSetting::Mac(_))))
        })
        .collect();
    let target = if restores.is_empty() {
        None
    } else {
        vf_target(sysfs_root, att, log)
    };
    // A PF that is gone, reports no VF information or no longer reports this VF (sriov_numvfs
    // lowered) holds no VF settings to restore; failing DEL for it would make the runtime retry
    // forever.
    let pf_has_vfs = match &target {
        None => false,
        Some((pf, index)) => match netlink.vfs(pf) {
            Ok(Some(list)) if list.iter().any(|s| s.vf == *index) => true,
            Ok(Some(_)) => {
                log.warn(&format!(
                    "PF {pf} no longer reports VF {index}; it is gone, settings not restored"
                ));
                false
            }
            Ok(None) => {
                log.warn(&format!(
                    "PF {pf} reports no VF information; VF {index} settings not restored"
                ));
                false
            }
            Err(e) if e.is_not_found() => {
                log.warn(&format!(
                    "PF {pf} is gone; VF {index} settings not restored"
                ));
                false
            }
            Err(e) => {
                errors.push(error_chain(&nl(format!("reading PF {pf}"))(e)));
                false
            }
        },
    };
    if let (Some((pf, index)), true) = (&target, pf_has_vfs) {
        for setting in restores {
            match apply_vf_setting(netlink, pf, *index, setting) {
                Ok(()) => {}
                // A setting the driver does not support cannot have been applied.
                Err(PluginError::VfSetting { source, .. }) if source.is_unsupported() => {
                    log.warn(&format!(
                        "PF {pf} does not support {setting} for VF {index}; not restored"
                    ));
                }
                Err(e) => errors.push(error_chain(&e)),
            }
        }
    }
    if !att.dpdk {
        let netns = if env_netns.is_empty() {
            att.netns.as_str()
        } else {
            env_netns
        };
        let mut done = false;
        let mut netns_gone = false;
        if !netns.is_empty() {
            match netlink.open_netns(Path::new(netns)) {
                Ok(pod) => {
                    let present = netlink
                        .link(pod, &att.ifname)
                        .map_err(nl("looking up the pod interface"));
                    let r = match present {
                        Ok(Some(_)) => {
                            return_to_host(netlink, pod, &att.ifname, att).map(|()| true)
                        }
                        Ok(None) => Ok(false),
                        Err(e) => Err(e),
                    };
                    netlink.close_netns(pod);
                    match r {
                        Ok(d) => done = d,
                        Err(e) => errors.push(error_chain(&e)),
                    }
                }
                // A file left where the netns was mounted (the runtime unmounted it, and did not
                // remove it) is a netns gone too: the kernel returned the netdev to the host.
                Err(NetlinkError::NetnsNotFound { .. } | NetlinkError::NotANetns { .. }) => {
                    log.info(&format!(
                        "netns {netns} is gone; looking for the VF netdev in the host"
                    ));
                    netns_gone = true;
                }
                Err(e) => errors.push(error_chain(&nl(format!("opening {netns}"))(e))),
            }
        }
        if !done && errors.is_empty() {
            // The kernel returns a physical netdev to the host when its netns dies, under the pod
            // name (or dev%d): find it through sysfs and give it its name, MAC and MTU back.
            // A VF gone itself (sriov_numvfs lowered) has no netdev to give back.
            if let Ok(v) = vf::resolve(sysfs_root, &att.pci) {
                match &v.netdev {
                    Some(current) if *current != att.host_ifname => {
                        log.info(&format!(
                            "VF {} is in the host as {current:?}; renaming it to {:?}",
                            att.pci, att.host_ifname
                        ));
                        if let Err(e) = return_to_host(netlink, NsId::HOST, current, att) {
                            errors.push(error_chain(&e));
                        }
                    }
                    Some(_) => {}
                    // Still bound to its network driver, so a netdev is coming: forgetting the
                    // attachment now would leave it under the pod's name, MAC and MTU, and the
                    // next pod would take those for the VF's own.
                    None if netns_gone && v.driver.is_some() && !v.is_dpdk() => {
                        return Err(PluginError::NetdevNotBack {
                            pci: att.pci.clone(),
                        });
                    }
                    // Unbound, or rebound to a userspace driver since: no netdev to give back.
                    None => {}
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(PluginError::Release {
            pci: att.pci.clone(),
            failures: errors.join("; "),
        })
    }
}

/// How many failed DELs of one attachment it takes to give up on what could not be released.
/// Every earlier failure fails DEL so the runtime retries (most failures are transient: a busy
/// device, an IPAM daemon restarting); a failure that outlasts them (CNI_NETNS naming something
/// that is not a netns, a driver refusing the original MTU, an IPAM plugin that always fails)
/// would otherwise block the pod's teardown for ever, which costs more than the leak.
pub const DEL_ATTEMPTS: u64 = 3;

/// The cache key counting failed DELs of the attachment. A `vfpool*` key: sriov-cni decodes the
/// cache with Go's `json.Unmarshal`, which ignores keys of no field, and older vfpool versions
/// read only the keys they know, so either can still DEL the attachment.
pub const DEL_FAILURES_KEY: &str = "vfpoolDelFailures";

/// The cache key marking an attachment whose pod died before its DEL and whose VF settings and
/// netdev were undone when a new pod got the VF ([`Attachment::vf_undone`]). A `vfpool*` key, for
/// the reason given at [`DEL_FAILURES_KEY`].
pub const VF_UNDONE_KEY: &str = "vfpoolVfUndone";

fn cmd_del(
    env: &CniEnv,
    stdin: &[u8],
    conf: &NetConf,
    deps: &mut Deps<'_>,
) -> Result<(), PluginError> {
    let state = StateDir::new(&env.state_dir);
    let cache_name = cache_name(&env.container_id, &env.ifname);
    if let Some(netns) = &env.netns_ignored {
        deps.log.warn(&format!(
            "CNI_NETNS {netns:?} is not an absolute path; cleaning up as without a netns"
        ));
    }
    // An unreadable cache, or one that names no VF, cannot be replayed; DEL then does what it
    // can without it (IPAM DEL with the NetConf, the no-cache release) and removes it, since
    // failing would leave the IP allocated and the runtime retrying forever.
    let mut unusable = None;
    let cached = match state.read_cache(&env.container_id, &env.ifname) {
        Ok(v) => v,
        Err(StateError::Corrupt { path, source }) => {
            deps.log.warn(&format!(
                "ignoring corrupt cache {}: {source}",
                path.display()
            ));
            unusable = Some(path);
            None
        }
        Err(e) => return Err(e.into()),
    };
    let mut att = match &cached {
        Some(v) => match Attachment::from_cache(&cache_name, v) {
            Ok(a) => Some(a),
            Err(e @ PluginError::BadCache { .. }) => {
                let path = state.cache_path(&env.container_id, &env.ifname);
                deps.log
                    .warn(&format!("ignoring unusable cache {}: {e}", path.display()));
                unusable = Some(path);
                None
            }
            Err(e) => return Err(e),
        },
        None => None,
    };
    if let Some(a) = &mut att {
        if a.ifname.is_empty() {
            a.ifname.clone_from(&env.ifname);
        }
        if a.netns.is_empty() {
            // A Go cache does not record the netns; CNI_NETNS does. The allocation marker must
            // not stand in for it: by now it may name another live pod that got the VF, which
            // would then pass for this one (release_for_del leaves such a VF alone).
            a.netns.clone_from(&env.netns);
        }
    }
    let pci = att
        .as_ref()
        .map(|a| a.pci.clone())
        .or_else(|| conf.device_id.clone());
    let _lock = match &pci {
        Some(p) => Some(state.lock(p, deps.lock_timeout)?),
        None => None,
    };

    // Whether an ADD of ours got far enough to have allocated something: a cache (written
    // before ADD changes anything), or an allocation marker naming this attachment's netns.
    // Without either, this DEL is for an attachment that never was (ADD failed before its first
    // step, was rolled back, or a DEL already finished): sriov-cni then returns success at once,
    // and so does this DEL, after trying its releases anyway.
    let has_cache = cached.is_some() || unusable.is_some();
    let proven = has_cache
        || match &pci {
            Some(p) => !env.netns.is_empty() && state.marker(p)?.as_deref() == Some(&*env.netns),
            None => false,
        };
    let failed_before = cached
        .as_ref()
        .and_then(|v| v.get(DEL_FAILURES_KEY))
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let attempt = failed_before.saturating_add(1);
    // The last try does every step whatever failed before it, to release all it can.
    let last_try = !proven || attempt >= DEL_ATTEMPTS;
    let outcome = del_steps(
        env,
        stdin,
        conf,
        &state,
        &cache_name,
        att.as_ref(),
        pci.as_deref(),
        last_try,
        deps,
    );
    match outcome {
        Ok(()) => {}
        Err(e) if !proven => {
            deps.log.warn(&format!(
                "DEL of {cache_name}: {}; ignored: there is no cache and no allocation marker of this attachment, so no ADD of this plugin got far enough to hold anything",
                error_chain(&e)
            ));
        }
        // Something still holds the dead pod's netns, so the netdev is not coming back soon. The
        // record stays, with the allocation marker: the next ADD of the VF finds the marker
        // stale, undoes this attachment from it (the netdev's name, MAC and MTU among it) and
        // then marks it undone. DEL itself is done (its address was released).
        Err(PluginError::NetdevNotBack { pci: vf }) if attempt >= DEL_ATTEMPTS => {
            deps.log.warn(&format!(
                "DEL of {cache_name}: VF {vf}'s netdev is still not back in the host after {attempt} tries (something holds its pod's network namespace); keeping the record for the VF's next ADD, which gives the netdev its name, MAC and MTU back"
            ));
            return Ok(());
        }
        Err(e) if attempt >= DEL_ATTEMPTS => {
            deps.log.error(&format!(
                "DEL of {cache_name} failed {attempt} times; giving up and forgetting the attachment. Not released: {}. Release it by hand",
                error_chain(&e)
            ));
            if let Some(p) = &pci {
                forget_marker_on_give_up(env, &state, att.as_ref(), p, deps.log)?;
            }
        }
        Err(e) => {
            // Count the failure in the cache for the retry; a cache that is not a JSON object
            // (corrupt) is replaced by one holding only the count, which reads as unusable.
            let mut record = match &cached {
                Some(Value::Object(m)) => m.clone(),
                _ => Map::new(),
            };
            record.insert(DEL_FAILURES_KEY.to_owned(), json!(attempt));
            if let Err(w) =
                state.write_cache(&env.container_id, &env.ifname, &Value::Object(record))
            {
                deps.log.warn(&format!(
                    "cannot count the failed DEL of {cache_name}: {}",
                    error_chain(&w)
                ));
            }
            deps.log.warn(&format!(
                "DEL of {cache_name} failed (attempt {attempt} of {DEL_ATTEMPTS}); the cache is kept for the retry"
            ));
            return Err(e);
        }
    }
    if att.is_some() {
        state.remove_cache(&env.container_id, &env.ifname)?;
    }
    if let Some(path) = unusable {
        deps.log
            .warn(&format!("removing unusable cache {}", path.display()));
        state.remove_cache(&env.container_id, &env.ifname)?;
    }
    Ok(())
}

/// DEL's IPAM release and VF release, and the allocation marker's removal once the VF is back.
/// Without `last_try`, a failed IPAM DEL of a plugin that needs the interface (dhcp) stops here,
/// so the retry still finds the interface in the pod; on the last try every step runs and all
/// failures are reported together.
#[allow(clippy::too_many_arguments)]
fn del_steps(
    env: &CniEnv,
    stdin: &[u8],
    conf: &NetConf,
    state: &StateDir,
    cache_name: &str,
    att: Option<&Attachment>,
    pci: Option<&str>,
    last_try: bool,
    deps: &mut Deps<'_>,
) -> Result<(), PluginError> {
    // IPAM DEL runs even when the netns is gone (PR #164); its failure keeps the cache and the
    // allocation for the retry, which finds the VF already home. An IPAM plugin that only
    // allocates runs while the VF is released (the kernel's netns move takes as long as the
    // plugin); any other one (dhcp releases its lease on the interface) runs first, while the
    // interface is still in the pod, as in sriov-cni.
    // The cache says which plugin allocated (sriov-cni's DEL reads it there): a
    // NetworkAttachmentDefinition edited since, or re-derived without `ipam`, must not leak the
    // address. The plugin reads its own section from stdin: the request with the cached `ipam`
    // in it when the cache has the whole section (vfpool's do), else the request as it is (a Go
    // cache names the type only, and sriov-cni passes the request) unless it has no section at
    // all. Without a cache, the request.
    let cached_request;
    let (plugin, stdin) = match att {
        Some(att) => match att
            .ipam_config()
            .or_else(|| att.ipam.as_ref().filter(|_| conf.ipam_type.is_none()))
        {
            Some(ipam) => {
                let mut request = conf.raw.clone();
                request.retain(|key, _| !key.eq_ignore_ascii_case("ipam"));
                request.insert("ipam".to_owned(), Value::Object(ipam.clone()));
                cached_request =
                    serde_json::to_vec(&Value::Object(request)).unwrap_or_else(|_| stdin.to_vec());
                (att.ipam_type(), cached_request.as_slice())
            }
            None => (att.ipam_type(), stdin),
        },
        None => (conf.ipam_type.as_deref(), stdin),
    };
    let ipam_done = |outcome: Result<String, IpamError>, log: &mut Logger| match outcome {
        Ok(_) => Ok(()),
        // A plugin that is not installed cannot hold an allocation; failing here would make the
        // runtime retry DEL forever.
        Err(e @ IpamError::NotFound { .. }) => {
            log.warn(&format!("IPAM DEL skipped: {e}"));
            Ok(())
        }
        Err(e) => Err(PluginError::from(e)),
    };
    let mut ipam_error = None;
    let mut pending = None;
    if let Some(plugin) = plugin {
        if ipam_only_allocates(plugin) {
            pending = Some(deps.ipam.start("DEL", plugin, stdin, env));
        } else if let Err(e) = ipam_done(deps.ipam.exec("DEL", plugin, stdin, env), deps.log) {
            if !last_try {
                return Err(e);
            }
            ipam_error = Some(e);
        }
    }
    let released = release_for_del(env, state, cache_name, att, pci, deps);
    if let Some(pending) = pending
        && let Err(e) = ipam_done(pending.wait(), deps.log)
    {
        ipam_error = Some(e);
    }
    match (ipam_error, released) {
        (None, Ok(forget_marker)) => {
            if let (Some(p), true) = (pci, forget_marker) {
                state.remove_marker(p)?;
            }
            Ok(())
        }
        (Some(e), Ok(_)) | (None, Err(e)) => Err(e),
        (Some(ipam), Err(release)) => Err(PluginError::Release {
            pci: pci.unwrap_or("(unknown)").to_owned(),
            failures: format!("{}; {}", error_chain(&ipam), error_chain(&release)),
        }),
    }
}

/// On giving up, clears the VF's allocation marker unless it belongs to another pod (a live
/// netns that is not this attachment's), whose VF it must keep (#219).
fn forget_marker_on_give_up(
    env: &CniEnv,
    state: &StateDir,
    att: Option<&Attachment>,
    pci: &str,
    log: &mut Logger,
) -> Result<(), PluginError> {
    let Some(holder) = state.marker(pci)? else {
        return Ok(());
    };
    let own_netns = att.map_or("", |a| a.netns.as_str());
    let own_cache = cache_name(&env.container_id, &env.ifname);
    if marker_may_go(state, &holder, own_netns, &env.netns, pci, &own_cache) {
        return Ok(state.remove_marker(pci)?);
    }
    if let Some(h) = new_owner(Some(&holder), own_netns, &env.netns) {
        log.warn(&format!(
            "VF {pci} is allocated to the live netns {h}, not this attachment's; its allocation marker is kept"
        ));
    }
    Ok(())
}

/// Whether a DEL or GC may clear the VF's allocation marker `holder`: it names this attachment's
/// netns (as its cache, `own_netns`, or CNI_NETNS, `env_netns`, gives it), or none; or another
/// attachment's netns that is gone, with no record but `own_cache` (the attachment being
/// released) naming the VF. A marker naming another pod's netns stays otherwise, live or dead: a
/// dead one tells the next ADD to undo what that pod left on the VF (its VLAN, trust, MAC), and
/// without it the next pod took those for the VF's own state. One that no record can serve goes:
/// kept, a marker naming `/proc/<pid>/ns/net` would read as a live pod's once the pid is reused,
/// and the VF would be refused to every pod.
fn marker_may_go(
    state: &StateDir,
    holder: &str,
    own_netns: &str,
    env_netns: &str,
    pci: &str,
    own_cache: &str,
) -> bool {
    let ours = holder.is_empty()
        || (!own_netns.is_empty() && holder == own_netns)
        || (!env_netns.is_empty() && holder == env_netns);
    // Unreadable records: the marker stays (the next ADD clears a dead one anyway).
    ours || (!netns::exists(Path::new(holder))
        && other_records_of_vf(state, pci, own_cache).is_some_and(|records| records.is_empty()))
}

/// The records of the attachments of VF `pci` but `except` that have not been undone: each
/// record's name, its JSON and the attachment. Unreadable records are left out; `None` when the
/// state directory cannot be listed.
fn other_records_of_vf(
    state: &StateDir,
    pci: &str,
    except: &str,
) -> Option<Vec<(String, Value, Attachment)>> {
    let names = state.cache_names().ok()?;
    Some(
        names
            .into_iter()
            .filter(|name| name != except)
            .filter_map(|name| {
                let value = state.read_cache_named(&name).ok()??;
                let att = Attachment::from_cache(&name, &value).ok()?;
                (att.pci == pci && !att.vf_undone).then_some((name, value, att))
            })
            .collect(),
    )
}

/// The live netns that holds a VF by its allocation marker when that is not the attachment's own
/// pod. A late DEL or a GC must not reset such a VF (#219): a new ADD found the attachment's netns
/// dead, took the VF (perhaps under another network name) and re-marked it. `own_netns` is the
/// attachment's netns as its cache or the request's CNI_NETNS gives it, never as the marker
/// does, and "" when neither knows it: then any live holder counts as another pod, since
/// touching another pod's interface is worse than leaving this pod's VF to the kernel (it comes
/// home when the netns dies).
fn new_owner<'h>(holder: Option<&'h str>, own_netns: &str, env_netns: &str) -> Option<&'h str> {
    let ours = |h: &str| {
        (!own_netns.is_empty() && h == own_netns) || (!env_netns.is_empty() && h == env_netns)
    };
    holder.filter(|h| !h.is_empty() && !ours(h) && netns::exists(Path::new(h)))
}

/// DEL's release of the VF; returns whether its allocation marker is to be cleared.
fn release_for_del(
    env: &CniEnv,
    state: &StateDir,
    cache_name: &str,
    att: Option<&Attachment>,
    pci: Option<&str>,
    deps: &mut Deps<'_>,
) -> Result<bool, PluginError> {
    match (att, pci) {
        (Some(a), _) => {
            let holder = state.marker(&a.pci)?;
            match new_owner(holder.as_deref(), &a.netns, &env.netns) {
                Some(h) if a.netns.is_empty() => {
                    deps.log.warn(&format!(
                        "VF {} is allocated to the live netns {h}, and neither {cache_name} nor CNI_NETNS says whether that is this pod's; leaving the VF alone and forgetting {cache_name}",
                        a.pci
                    ));
                    Ok(false)
                }
                Some(h) => {
                    deps.log.warn(&format!(
                        "VF {} now belongs to {h}; leaving it alone and forgetting {cache_name}",
                        a.pci
                    ));
                    Ok(false)
                }
                None => {
                    let netlink = deps.netlink.get().map_err(nl("connecting to netlink"))?;
                    release(&env.netns, &env.sysfs_root, a, netlink, deps.log)?;
                    Ok(holder.is_some_and(|h| {
                        marker_may_go(state, &h, &a.netns, &env.netns, &a.pci, cache_name)
                    }))
                }
            }
        }
        (None, Some(p)) => {
            deps.log.info(&format!(
                "no cache for {cache_name}; the VF {p}'s original settings are unknown, so only its netdev and allocation are released"
            ));
            if !env.netns.is_empty() {
                let netlink = deps.netlink.get().map_err(nl("connecting to netlink"))?;
                bring_home_without_cache(netlink, &env.netns, &env.ifname, p, deps.log)?;
            }
            Ok(state
                .marker(p)?
                .is_some_and(|holder| marker_may_go(state, &holder, "", &env.netns, p, cache_name)))
        }
        (None, None) => {
            deps.log.info(&format!(
                "no cache for {cache_name} and no deviceID; nothing to release"
            ));
            Ok(false)
        }
    }
}

/// DEL without a cache: the pod interface is brought home only if the kernel confirms it is
/// this VF's netdev (its parent device is the VF's PCI address); its host name is unknown, so it
/// gets the kernel's `dev%d` name, as when a netns dies.
fn bring_home_without_cache(
    netlink: &mut dyn Netlink,
    netns: &str,
    ifname: &str,
    pci: &str,
    log: &mut Logger,
) -> Result<(), PluginError> {
    let pod = match netlink.open_netns(Path::new(netns)) {
        Ok(pod) => pod,
        // Gone, or only the file left where it was mounted: nothing of it to bring home.
        Err(NetlinkError::NetnsNotFound { .. } | NetlinkError::NotANetns { .. }) => return Ok(()),
        Err(e) => return Err(nl(format!("opening {netns}"))(e)),
    };
    let result = (|| {
        let Some(link) = netlink
            .link(pod, ifname)
            .map_err(nl(format!("looking up {ifname:?} in {netns}")))?
        else {
            return Ok(());
        };
        if link.parent.as_deref() != Some(pci) {
            log.info(&format!(
                "{ifname:?} in {netns} is not VF {pci}'s netdev (parent {:?}); leaving it",
                link.parent
            ));
            return Ok(());
        }
        netlink
            .move_link(pod, LinkRef::found(&link), NsId::HOST, "dev%d")
            .map_err(nl(format!(
                "moving VF {pci}'s netdev {ifname:?} back to the host"
            )))
    })();
    netlink.close_netns(pod);
    result
}

fn cmd_check(
    env: &CniEnv,
    stdin: &[u8],
    conf: &NetConf,
    deps: &mut Deps<'_>,
) -> Result<(), PluginError> {
    if !conf.version.supports_check() {
        return Err(PluginError::VersionTooOld {
            command: "CHECK",
            min: "0.4.0",
            got: conf.cni_version.clone(),
        });
    }
    let mut prev = conf
        .prev_result
        .clone()
        .ok_or_else(|| PluginError::Check("no prevResult in the configuration".into()))?;
    if let Value::Object(m) = &mut prev {
        m.entry("cniVersion")
            .or_insert_with(|| json!(conf.cni_version));
    }
    let prev = CniResult::parse(&prev.to_string())
        .map_err(|e| PluginError::Check(format!("prevResult is unreadable: {e}")))?;
    let (index, iface) = prev
        .interfaces
        .iter()
        .enumerate()
        .find(|(_, i)| i.name == env.ifname && i.sandbox.as_deref() == Some(env.netns.as_str()))
        .ok_or_else(|| {
            PluginError::Check(format!(
                "prevResult has no interface {:?} in {}",
                env.ifname, env.netns
            ))
        })?;
    let state = StateDir::new(&env.state_dir);
    let cache = state
        .read_cache(&env.container_id, &env.ifname)?
        .ok_or_else(|| {
            PluginError::Check(format!(
                "no attachment is recorded for {}/{}",
                env.container_id, env.ifname
            ))
        })?;
    let mut att = Attachment::from_cache(&cache_name(&env.container_id, &env.ifname), &cache)?;
    if !att.dpdk {
        let netlink = deps.netlink.get().map_err(nl("connecting to netlink"))?;
        let pod = netlink
            .open_netns(Path::new(&env.netns))
            .map_err(nl(format!("opening {}", env.netns)))?;
        let checked = (|| {
            let link = netlink
                .link(pod, &env.ifname)
                .map_err(nl("looking up the interface"))?
                .ok_or_else(|| {
                    PluginError::Check(format!(
                        "interface {:?} is missing from {}",
                        env.ifname, env.netns
                    ))
                })?;
            // A kernel that names the parent device tells whether this is still the VF ADD
            // attached (another plugin may have replaced it under the same name).
            if let Some(parent) = link.parent.as_deref()
                && !parent.eq_ignore_ascii_case(&att.pci)
            {
                return Err(PluginError::Check(format!(
                    "{:?} in {} is the netdev of {parent}, not of VF {} that ADD attached",
                    env.ifname, env.netns, att.pci
                )));
            }
            if let Some(want) = &iface.mac {
                let have = mac_text(link.mac);
                if !want.eq_ignore_ascii_case(&have) {
                    return Err(PluginError::Check(format!(
                        "{:?} has MAC {have}, prevResult says {want}",
                        env.ifname
                    )));
                }
            }
            let addrs = netlink
                .addresses(pod, &env.ifname)
                .map_err(nl("listing addresses"))?;
            for ip in prev
                .ips
                .iter()
                .filter(|ip| ip.interface.is_none_or(|i| i == index))
            {
                if !addrs.contains(&ip.address) {
                    return Err(PluginError::Check(format!(
                        "{:?} lacks address {} from prevResult (has {:?})",
                        env.ifname,
                        ip.address,
                        addrs.iter().map(ToString::to_string).collect::<Vec<_>>()
                    )));
                }
            }
            Ok(())
        })();
        netlink.close_netns(pod);
        checked?;
    }
    if !att.applied.is_empty() {
        // The same VF DEL would restore: a corrupt cache must not compare another VF's settings.
        if let Some((pf, index)) = vf_target(&env.sysfs_root, &att, deps.log) {
            att.pf = pf;
            att.vf_index = index;
            let netlink = deps.netlink.get().map_err(nl("connecting to netlink"))?;
            check_vf_settings(&att, netlink, deps.log)?;
        }
    }
    if let Some(plugin) = &conf.ipam_type {
        deps.ipam.exec("CHECK", plugin, stdin, env)?;
    }
    Ok(())
}

/// Compares every VF setting ADD applied with what the PF reports now: anyone with access to the
/// PF (`ip link set pf0 vf 1 vlan 0`) can move the pod to another network without touching its
/// netns. Settings the NetConf left alone are the operator's and are not checked.
fn check_vf_settings(
    att: &Attachment,
    netlink: &mut dyn Netlink,
    log: &mut Logger,
) -> Result<(), PluginError> {
    if !att.applied_values_known {
        log.info(&format!(
            "the cache of VF {} records which settings ADD applied but not their values; not comparing them with PF {}",
            att.pci, att.pf
        ));
        return Ok(());
    }
    let reported = match netlink.vfs(&att.pf) {
        // The PF netdev renamed (or gone) since ADD: nothing to compare against by that name, and
        // a pod that may be fine must not fail CHECK for it.
        Err(e) if e.is_not_found() => {
            log.warn(&format!(
                "PF {} (named at ADD) is not found; VF {} settings not checked",
                att.pf, att.vf_index
            ));
            return Ok(());
        }
        other => other.map_err(nl(format!("reading the VF information of PF {}", att.pf)))?,
    };
    let Some(list) = reported else {
        log.warn(&format!(
            "PF {} reports no VF information; VF {} settings not checked",
            att.pf, att.vf_index
        ));
        return Ok(());
    };
    let now = list
        .into_iter()
        .find(|s| s.vf == att.vf_index)
        .ok_or_else(|| {
            PluginError::Check(format!(
                "PF {} no longer reports VF {} ({}); is sriov_numvfs lower than at ADD?",
                att.pf, att.vf_index, att.pci
            ))
        })?;
    for want in &att.applied {
        let have = want.current_in(&now);
        if have != *want {
            return Err(PluginError::Check(format!(
                "VF {} ({}) of PF {} is not as ADD left it: setting {:?} expected {want}, PF reports {have}",
                att.vf_index,
                att.pci,
                att.pf,
                want.field()
            )));
        }
    }
    Ok(())
}

fn cmd_status(
    env: &CniEnv,
    stdin: &[u8],
    conf: &NetConf,
    deps: &mut Deps<'_>,
) -> Result<(), PluginError> {
    if !conf.version.supports_status_and_gc() {
        return Err(PluginError::VersionTooOld {
            command: "STATUS",
            min: "1.1.0",
            got: conf.cni_version.clone(),
        });
    }
    let Some(plugin) = &conf.ipam_type else {
        return Ok(());
    };
    // An IPAM plugin older than spec 1.1.0 does not know STATUS: answering VERSION (being
    // installed and runnable) is all it can tell us.
    match ipam_speaks_1_1(deps.ipam, plugin, env) {
        Ok(false) => return Ok(()),
        Ok(true) => {}
        Err(e) => return Err(PluginError::NotReady(error_chain(&e))),
    }
    match deps.ipam.exec("STATUS", plugin, stdin, env) {
        Ok(_) => Ok(()),
        Err(e) => Err(PluginError::NotReady(error_chain(&e))),
    }
}

/// Whether a delegated plugin implements spec 1.1.0 (STATUS, GC), from its VERSION answer.
fn ipam_speaks_1_1(ipam: &mut dyn Ipam, plugin: &str, env: &CniEnv) -> Result<bool, IpamError> {
    let out = ipam.exec("VERSION", plugin, br#"{"cniVersion":"1.1.0"}"#, env)?;
    let answer: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
    Ok(answer
        .get("supportedVersions")
        .and_then(Value::as_array)
        .is_some_and(|list| list.iter().any(|v| v == "1.1.0")))
}

/// The key of GC's list of attachments that are still in use (CNI spec 1.1.0).
const VALID_ATTACHMENTS: &str = "cni.dev/valid-attachments";

/// GC's valid attachments as cache names (`<containerID>-<ifname>`). The spec requires the list;
/// an absent or unreadable one, or an entry without both ids, is refused rather than read as
/// "fewer valid attachments": everything missing from the set is released, so a misread list would
/// pull VFs out of live pods.
/// The runtime's valid attachments, as `(containerID, ifname)`.
fn valid_attachments(raw: &Map<String, Value>) -> Result<Vec<(String, String)>, NetConfError> {
    let list = match raw.get(VALID_ATTACHMENTS) {
        None => {
            return Err(NetConfError::Missing {
                field: VALID_ATTACHMENTS,
                hint: "GC needs the list of attachments still in use (CNI spec 1.1.0); the container runtime sets it, an empty array if there are none",
            });
        }
        Some(Value::Array(list)) => list,
        Some(other) => {
            return Err(NetConfError::Invalid {
                field: VALID_ATTACHMENTS,
                value: other.to_string(),
                reason: "must be an array of {\"containerID\": ..., \"ifname\": ...} objects (an empty array if no attachment is in use)".into(),
            });
        }
    };
    let id = |entry: &Value, key: &str| {
        entry
            .get(key)
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    list.iter()
        .enumerate()
        .map(|(i, entry)| match (id(entry, "containerID"), id(entry, "ifname")) {
            (Some(cid), Some(ifname)) => Ok((cid, ifname)),
            _ => Err(NetConfError::Invalid {
                field: VALID_ATTACHMENTS,
                value: entry.to_string(),
                reason: format!(
                    "entry {i} must be an object with non-empty string \"containerID\" and \"ifname\"; fix the container runtime's GC request"
                ),
            }),
        })
        .collect()
}

fn cmd_gc(
    env: &CniEnv,
    stdin: &[u8],
    conf: &NetConf,
    deps: &mut Deps<'_>,
) -> Result<(), PluginError> {
    if !conf.version.supports_status_and_gc() {
        return Err(PluginError::VersionTooOld {
            command: "GC",
            min: "1.1.0",
            got: conf.cni_version.clone(),
        });
    }
    let listed = valid_attachments(&conf.raw)?;
    let valid: HashSet<String> = listed
        .iter()
        .map(|(cid, ifname)| cache_name(cid, ifname))
        .collect();
    // Containers the runtime still has: their attachments stay, even one the list leaves out.
    // The list names a container's interfaces as the runtime knows them; one passed on by a
    // meta-plugin names its own (`eth0`), and taken literally would pull the VF out of every
    // live pod. A pod's networks do not change while it runs.
    let live: HashSet<&str> = listed.iter().map(|(cid, _)| cid.as_str()).collect();
    let state = StateDir::new(&env.state_dir);
    let names = state.cache_names()?;
    // VFs that a valid attachment holds: a stale record of the same VF (a late DEL that never
    // came, then a new pod got the VF) must not take it away (#219).
    let held: HashSet<String> = names
        .iter()
        .filter(|n| valid.contains(*n))
        .filter_map(|n| state.read_cache_named(n).ok().flatten())
        .filter_map(|v| v.get("deviceID").and_then(Value::as_str).map(str::to_owned))
        .collect();
    for name in names {
        if valid.contains(&name) {
            continue;
        }
        let Ok(Some(value)) = state.read_cache_named(&name) else {
            continue;
        };
        let Ok(mut att) = Attachment::from_cache(&name, &value) else {
            continue;
        };
        // GC is per network: leave other networks' attachments alone.
        if att.network != conf.name {
            continue;
        }
        if att.container_id.is_empty() || att.ifname.is_empty() {
            // A Go cache does not record them; its name is `<containerID>-<ifname>`. Container
            // ids from the runtimes are hex, and a pod interface name may hold a '-' (Multus
            // takes `sriov-a` from the pod's annotation), so split at the first one.
            if let Some((cid, ifname)) = name.split_once('-') {
                cid.clone_into(&mut att.container_id);
                ifname.clone_into(&mut att.ifname);
            }
        }
        let container = att.container_id.as_str();
        if live.contains(container) {
            // The usual case with a list passed on by a meta-plugin: not worth a warning.
            deps.log.info(&format!(
                "GC: {name} is not in the runtime's list, but its container {container} is; leaving VF {} with it",
                att.pci
            ));
            continue;
        }
        if held.contains(&att.pci) {
            deps.log.info(&format!(
                "GC: {name} is stale but VF {} now belongs to a valid attachment; forgetting the record only",
                att.pci
            ));
            let _ = state.remove_cache_named(&name);
            continue;
        }
        // A Go cache records no netns. A marker naming a netns that is gone may stand in for it
        // (IPAM DEL gets it); a live one may be another pod that got the VF, and must pass
        // neither for this attachment's netns (new_owner below) nor be handed to IPAM.
        if att.netns.is_empty()
            && let Ok(Some(holder)) = state.marker(&att.pci)
            && !netns::exists(Path::new(&holder))
        {
            att.netns = holder;
        }
        deps.log.info(&format!(
            "GC: releasing stale attachment {name} (VF {})",
            att.pci
        ));
        let Ok(_lock) = state.lock(&att.pci, deps.lock_timeout) else {
            deps.log
                .warn(&format!("GC: VF {} is busy; skipping {name}", att.pci));
            continue;
        };
        if let (Some(plugin), false) = (att.ipam_type(), att.container_id.is_empty()) {
            let mut owner = env.clone();
            owner.container_id.clone_from(&att.container_id);
            owner.ifname.clone_from(&att.ifname);
            owner.netns.clone_from(&att.netns);
            // DEL with the configuration that made the allocation (the cache), not the GC
            // request's: the IPAM plugin may not speak the GC request's cniVersion. A Go cache's
            // `ipam` names the type only: then the GC request's section (the same network's, if
            // it has one), at the cached version.
            let cached_conf = match (att.ipam_config(), &value) {
                (None, Value::Object(cache)) if conf.ipam_type.is_some() => {
                    let mut request = conf.raw.clone();
                    request.retain(|key, _| key != "cni.dev/valid-attachments");
                    if let Some(version) = crate::netconf::lookup(cache, "cniVersion") {
                        request.insert("cniVersion".to_owned(), version.clone());
                    }
                    serde_json::to_vec(&Value::Object(request))
                }
                _ => serde_json::to_vec(&value),
            }
            .unwrap_or_else(|_| stdin.to_vec());
            if let Err(e) = deps.ipam.exec("DEL", plugin, &cached_conf, &owner) {
                deps.log
                    .warn(&format!("GC: IPAM DEL for {name} failed: {e}"));
            }
        }
        // The held set above only covers this network's valid attachments; the marker also
        // catches a live pod that got the VF through another network name.
        let holder = match state.marker(&att.pci) {
            Ok(h) => h,
            Err(e) => {
                deps.log.warn(&format!(
                    "GC: {e}; cannot tell who owns VF {}; skipping {name}",
                    att.pci
                ));
                continue;
            }
        };
        if let Some(h) = new_owner(holder.as_deref(), &att.netns, "") {
            deps.log.warn(&format!(
                "GC: VF {} now belongs to {h}; leaving it alone and forgetting {name}",
                att.pci
            ));
            let _ = state.remove_cache_named(&name);
            continue;
        }
        let netlink = match deps.netlink.get() {
            Ok(n) => n,
            Err(e) => return Err(nl("connecting to netlink")(e)),
        };
        if let Err(e) = release("", &env.sysfs_root, &att, netlink, deps.log) {
            deps.log.warn(&format!("GC: releasing {name}: {e}"));
            continue;
        }
        if let Ok(Some(holder)) = state.marker(&att.pci)
            && marker_may_go(&state, &holder, &att.netns, "", &att.pci, &name)
        {
            let _ = state.remove_marker(&att.pci);
        }
        let _ = state.remove_cache_named(&name);
    }
    if let Some(plugin) = &conf.ipam_type {
        // Forward GC to an IPAM plugin that knows it; older ones had their DEL above.
        if let Ok(true) = ipam_speaks_1_1(deps.ipam, plugin, env)
            && let Err(e) = deps.ipam.exec("GC", plugin, stdin, env)
        {
            deps.log.warn(&format!("GC: IPAM GC failed: {e}"));
        }
    }
    Ok(())
}
