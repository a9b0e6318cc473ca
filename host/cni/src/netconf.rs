//! The network configuration on stdin (sriov-cni's NetConf), parsed and validated before anything
//! on the node is touched.
//!
//! Keys are matched as Go's `encoding/json` matches them for sriov-cni (exact first, then
//! case-insensitive), so existing NetworkAttachmentDefinitions keep working; values are checked more
//! strictly than upstream (`spoofchk: "yes"` is an error here, not a silent "off").

use serde_json::{Map, Value};
use thiserror::Error;

use crate::mac::MacAddr;
use crate::version::{Version, VersionError};

/// Why a NetConf (or CNI_ARGS) was refused.
#[derive(Debug, Error)]
pub enum NetConfError {
    /// Stdin is not a JSON object.
    #[error("the network configuration on stdin is not a JSON object: {source}")]
    Decode {
        /// The decoder's complaint.
        #[source]
        source: serde_json::Error,
    },
    /// Stdin is valid JSON but not an object.
    #[error("the network configuration on stdin must be a JSON object, got {0}")]
    NotAnObject(&'static str),
    /// The requested `cniVersion` is not one we speak.
    #[error(transparent)]
    Version(#[from] VersionError),
    /// A field has a value this plugin cannot accept.
    #[error("invalid network configuration: field {field:?} = {value}: {reason}")]
    Invalid {
        /// The key as the plugin names it.
        field: &'static str,
        /// The offending value, as JSON.
        value: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// A required field is absent.
    #[error("invalid network configuration: field {field:?} is required: {hint}")]
    Missing {
        /// The key.
        field: &'static str,
        /// How to provide it.
        hint: &'static str,
    },
    /// CNI_ARGS is malformed or has keys we do not know (without `IgnoreUnknown`).
    #[error("invalid CNI_ARGS {value:?}: {reason}")]
    Args {
        /// The whole CNI_ARGS value.
        value: String,
        /// What is wrong.
        reason: String,
    },
}

impl NetConfError {
    /// The CNI error code for this error.
    pub fn code(&self) -> u32 {
        use crate::error::code;
        match self {
            NetConfError::Decode { .. } | NetConfError::NotAnObject(_) => code::DECODE_FAILURE,
            NetConfError::Version(_) => code::INCOMPATIBLE_VERSION,
            NetConfError::Invalid { .. } | NetConfError::Missing { .. } => code::INVALID_CONFIG,
            NetConfError::Args { .. } => code::INVALID_ENV,
        }
    }
}

/// VLAN protocol of a VF VLAN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VlanProto {
    /// 802.1Q (0x8100), the default.
    Dot1Q,
    /// 802.1ad (0x88a8), QinQ.
    Dot1Ad,
}

impl VlanProto {
    /// The ethertype, as netlink and sriov-cni's cache carry it.
    pub fn ethertype(self) -> u16 {
        match self {
            VlanProto::Dot1Q => 0x8100,
            VlanProto::Dot1Ad => 0x88a8,
        }
    }

    /// From an ethertype (0 and unknown values mean 802.1Q, as the kernel's default).
    pub fn from_ethertype(value: u16) -> Self {
        if value == 0x88a8 {
            VlanProto::Dot1Ad
        } else {
            VlanProto::Dot1Q
        }
    }

    /// The NetConf spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            VlanProto::Dot1Q => "802.1q",
            VlanProto::Dot1Ad => "802.1ad",
        }
    }
}

/// The administrative link state of a VF as seen by the VF driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VfLinkState {
    /// Follows the PF link (0).
    Auto,
    /// Always up (1).
    Enable,
    /// Always down (2).
    Disable,
}

impl VfLinkState {
    /// The netlink value (IFLA_VF_LINK_STATE_*), as sriov-cni's cache stores it.
    pub fn as_u32(self) -> u32 {
        match self {
            VfLinkState::Auto => 0,
            VfLinkState::Enable => 1,
            VfLinkState::Disable => 2,
        }
    }

    /// From the netlink value; unknown values are treated as `auto`.
    pub fn from_u32(value: u32) -> Self {
        match value {
            1 => VfLinkState::Enable,
            2 => VfLinkState::Disable,
            _ => VfLinkState::Auto,
        }
    }

    /// The NetConf spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            VfLinkState::Auto => "auto",
            VfLinkState::Enable => "enable",
            VfLinkState::Disable => "disable",
        }
    }
}

/// The VF settings a NetConf asks for. `None` means "leave as it is" (absent VLAN is untouched,
/// upstream PR #296).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VfRequest {
    /// VLAN id, QoS and protocol.
    pub vlan: Option<(u16, u8, VlanProto)>,
    /// Administrative MAC set through the PF (the same MAC is also set on the netdev).
    pub mac: Option<MacAddr>,
    /// `(min_tx_rate, max_tx_rate)` in Mbps; both are sent when either is given.
    pub rate: Option<(u32, u32)>,
    /// Spoof checking.
    pub spoofchk: Option<bool>,
    /// Trust.
    pub trust: Option<bool>,
    /// Link state.
    pub link_state: Option<VfLinkState>,
}

impl VfRequest {
    /// True when no VF setting is requested at all.
    pub fn is_empty(&self) -> bool {
        *self == VfRequest::default()
    }

    /// The names of the requested settings, as NetConf keys (for error messages).
    pub fn requested_fields(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.vlan.is_some() {
            out.push("vlan");
        }
        if self.mac.is_some() {
            out.push("mac");
        }
        if self.rate.is_some() {
            out.push("min_tx_rate/max_tx_rate");
        }
        if self.spoofchk.is_some() {
            out.push("spoofchk");
        }
        if self.trust.is_some() {
            out.push("trust");
        }
        if self.link_state.is_some() {
            out.push("link_state");
        }
        out
    }
}

/// Log verbosity, cni-log's levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// Only fatal problems.
    Panic,
    /// Errors.
    Error,
    /// Warnings.
    Warning,
    /// The default.
    Info,
    /// Debugging.
    Debug,
    /// Everything.
    Verbose,
}

impl LogLevel {
    pub(crate) fn parse(text: &str) -> Option<Self> {
        Some(match text.to_ascii_lowercase().as_str() {
            "panic" => LogLevel::Panic,
            "error" => LogLevel::Error,
            "warning" | "warn" => LogLevel::Warning,
            "info" => LogLevel::Info,
            "debug" => LogLevel::Debug,
            "verbose" | "trace" => LogLevel::Verbose,
            _ => return None,
        })
    }
}

/// A parsed and validated NetConf.
#[derive(Debug, Clone)]
pub struct NetConf {
    /// The whole stdin object, forwarded to the IPAM plugin and kept in the cache.
    pub raw: Map<String, Value>,
    /// The requested spec version, as written.
    pub cni_version: String,
    /// The requested spec version, parsed.
    pub version: Version,
    /// Network name.
    pub name: String,
    /// IPAM plugin type, when IPAM is delegated.
    pub ipam_type: Option<String>,
    /// PCI address of the VF (`deviceID`, or Multus' `pciBusID`), lower-case long form.
    pub device_id: Option<String>,
    /// VF settings applied through the PF.
    pub vf: VfRequest,
    /// The MAC for the pod interface: `runtimeConfig.mac` over CNI_ARGS `MAC=` over `mac`.
    pub mac: Option<MacAddr>,
    /// MTU for the pod interface.
    pub mtu: Option<u32>,
    /// Log verbosity.
    pub log_level: LogLevel,
    /// Log file; stderr when absent.
    pub log_file: Option<String>,
    /// Why `logLevel` or `logFile` was ignored (to be written to stderr).
    pub log_warnings: Vec<String>,
    /// The previous result (CHECK, DEL).
    pub prev_result: Option<Value>,
}

/// Whether `name` can name a plugin in CNI_PATH: not a path, not `.` or `..` (joined to a CNI_PATH
/// directory, a path would run any binary).
pub(crate) fn is_plugin_name(name: &str) -> bool {
    !name.is_empty() && !name.contains(['/', '\0']) && name != "." && name != ".."
}

/// Looks a key up as Go's encoding/json does for an untagged or tagged struct field: an exact
/// match first, then the first case-insensitive one.
pub(crate) fn lookup<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).or_else(|| {
        obj.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

fn invalid(field: &'static str, value: &Value, reason: impl Into<String>) -> NetConfError {
    NetConfError::Invalid {
        field,
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// A present, non-null value for `key`.
fn present<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    lookup(obj, key).filter(|v| !v.is_null())
}

fn string_field(
    obj: &Map<String, Value>,
    key: &'static str,
) -> Result<Option<String>, NetConfError> {
    match present(obj, key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(invalid(key, other, "must be a string")),
    }
}

fn int_field(
    obj: &Map<String, Value>,
    key: &'static str,
    min: i64,
    max: i64,
    hint: &str,
) -> Result<Option<i64>, NetConfError> {
    match present(obj, key) {
        None => Ok(None),
        Some(v) => {
            let n = v
                .as_i64()
                .ok_or_else(|| invalid(key, v, format!("must be an integer; {hint}")))?;
            if n < min || n > max {
                return Err(invalid(
                    key,
                    v,
                    format!("must be in the range {min}-{max}; {hint}"),
                ));
            }
            Ok(Some(n))
        }
    }
}

fn on_off(obj: &Map<String, Value>, key: &'static str) -> Result<Option<bool>, NetConfError> {
    match string_field(obj, key)?.as_deref() {
        None | Some("") => Ok(None),
        Some("on") => Ok(Some(true)),
        Some("off") => Ok(Some(false)),
        Some(_) => Err(invalid(
            key,
            lookup(obj, key).unwrap_or(&Value::Null),
            "must be \"on\" or \"off\" (sriov-cni silently treated any other value as off; write \"off\" if that is what you meant)",
        )),
    }
}

/// Checks a PCI address (`0000:3b:00.2`), returning its lower-case form.
pub fn normalize_pci_address(text: &str) -> Option<String> {
    let lower = text.to_ascii_lowercase();
    let b = lower.as_bytes();
    let hex = |r: std::ops::Range<usize>| {
        b.get(r)
            .is_some_and(|s| s.iter().all(u8::is_ascii_hexdigit))
    };
    let ok = b.len() == 12
        && hex(0..4)
        && b[4] == b':'
        && hex(5..7)
        && b[7] == b':'
        && hex(8..10)
        && b[10] == b'.'
        && matches!(b[11], b'0'..=b'7');
    ok.then_some(lower)
}

/// Checks a network name as the spec defines it (`^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`).
pub fn is_valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphanumeric())
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
}

/// How an error names CNI_ARGS' `MAC=`.
const CNI_ARGS_MAC: &str = "CNI_ARGS MAC";

/// CNI_ARGS as sriov-cni reads them: `IgnoreUnknown` and `MAC`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniArgs {
    /// `MAC=` (deprecated by Multus, still sent), as written; an empty one is none. Read only
    /// when it is used: sriov-cni parses it only where `runtimeConfig.mac` does not override it.
    pub mac: Option<String>,
}

impl CniArgs {
    /// Parses `K=V;K=V`. Keys are matched exactly, as libcni's LoadArgs does; unknown keys are an
    /// error unless `IgnoreUnknown=1|true`.
    pub fn parse(text: &str) -> Result<Self, NetConfError> {
        let err = |reason: String| NetConfError::Args {
            value: text.to_owned(),
            reason,
        };
        let mut pairs = Vec::new();
        for pair in text.split(';').filter(|p| !p.is_empty()) {
            let kv: Vec<&str> = pair.split('=').collect();
            let [k, v] = kv[..] else {
                return Err(err(format!("{pair:?} is not KEY=VALUE")));
            };
            pairs.push((k, v));
        }
        let ignore_unknown = pairs
            .iter()
            .any(|(k, v)| *k == "IgnoreUnknown" && (v.eq_ignore_ascii_case("true") || *v == "1"));
        let mut args = CniArgs::default();
        let mut unknown = Vec::new();
        for (k, v) in pairs {
            match k {
                "IgnoreUnknown" => {}
                // sriov-cni: `if MAC != ""`.
                "MAC" if v.is_empty() => {}
                "MAC" => args.mac = Some(v.to_owned()),
                other => unknown.push(other.to_owned()),
            }
        }
        if !unknown.is_empty() && !ignore_unknown {
            return Err(err(format!(
                "unknown keys {unknown:?}; add IgnoreUnknown=true to pass keys this plugin does not read"
            )));
        }
        Ok(args)
    }
}

impl NetConf {
    /// Parses and validates stdin. `args` are the parsed CNI_ARGS (their `MAC=` overrides `mac`).
    pub fn parse(stdin: &[u8], args: &CniArgs) -> Result<NetConf, NetConfError> {
        let value: Value =
            serde_json::from_slice(stdin).map_err(|source| NetConfError::Decode { source })?;
        let raw = match value {
            Value::Object(map) => map,
            Value::Array(_) => return Err(NetConfError::NotAnObject("an array")),
            Value::String(_) => return Err(NetConfError::NotAnObject("a string")),
            Value::Number(_) => return Err(NetConfError::NotAnObject("a number")),
            Value::Bool(_) => return Err(NetConfError::NotAnObject("a boolean")),
            Value::Null => return Err(NetConfError::NotAnObject("null")),
        };

        // A missing or empty cniVersion means 0.1.0, as libcni decodes it.
        let cni_version = string_field(&raw, "cniVersion")?
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "0.1.0".to_owned());
        let version = Version::parse_supported(&cni_version)?;

        let name = string_field(&raw, "name")?.ok_or(NetConfError::Missing {
            field: "name",
            hint: "give the network a name such as \"sriov-net\"",
        })?;
        if !is_valid_name(&name) {
            return Err(invalid(
                "name",
                &Value::String(name),
                "must start with a letter or digit and contain only letters, digits, '_', '.' and '-'",
            ));
        }

        let ipam_type = match present(&raw, "ipam") {
            None => None,
            Some(Value::Object(ipam)) => match present(ipam, "type") {
                None => None,
                Some(Value::String(t)) if t.is_empty() => None,
                Some(Value::String(t)) => {
                    if !is_plugin_name(t) {
                        return Err(invalid(
                            "ipam.type",
                            &Value::String(t.clone()),
                            "must be a plugin name found in CNI_PATH, not a path",
                        ));
                    }
                    Some(t.clone())
                }
                Some(other) => return Err(invalid("ipam.type", other, "must be a string")),
            },
            Some(other) => return Err(invalid("ipam", other, "must be an object with a \"type\"")),
        };

        let device_id = Self::device_id(&raw)?;

        // MAC priority: runtimeConfig.mac > CNI_ARGS MAC= > mac (sriov-cni's order). Each is
        // read only if nothing before it in that order chose a MAC.
        let mut chosen: Option<(MacAddr, &'static str)> = None;
        if let Some(rc) = present(&raw, "runtimeConfig") {
            let Value::Object(rc) = rc else {
                return Err(invalid("runtimeConfig", rc, "must be an object"));
            };
            if let Some(v) = present(rc, "mac") {
                let text = v
                    .as_str()
                    .ok_or_else(|| invalid("runtimeConfig.mac", v, "must be a string"))?;
                if !text.is_empty() {
                    let m = text
                        .parse()
                        .map_err(|e: String| invalid("runtimeConfig.mac", v, e))?;
                    chosen = Some((m, "runtimeConfig.mac"));
                }
            }
        }
        if chosen.is_none()
            && let Some(text) = &args.mac
        {
            let m = text
                .parse()
                .map_err(|e: String| invalid(CNI_ARGS_MAC, &Value::String(text.clone()), e))?;
            chosen = Some((m, CNI_ARGS_MAC));
        }
        // An overridden `mac` is never used, so it is not read either (sriov-cni does not parse
        // it then): a bad one must not fail an ADD that would not use it.
        let vf = match chosen {
            Some(_) => {
                let mut without_mac = raw.clone();
                without_mac.retain(|key, _| !key.eq_ignore_ascii_case("mac"));
                Self::vf_request(&without_mac)?
            }
            None => Self::vf_request(&raw)?,
        };
        let chosen = chosen.or(vf.mac.map(|m| (m, "mac")));
        if let Some((m, field)) = chosen {
            // The PF takes a group or all-zero address as a VF's MAC only to have the VF driver
            // refuse it later, after other settings were applied: refused here, naming the field.
            if m.is_zero() || m.is_group() {
                return Err(invalid(
                    field,
                    &Value::String(m.to_string()),
                    "must be a unicast address (lowest bit of the first byte clear) and not all zeros, such as 02:00:00:00:00:01",
                ));
            }
        }
        let mac = chosen.map(|(m, _)| m);
        let mut vf = vf;
        // The admin MAC set through the PF follows the effective choice, so the VF's MAC filter and
        // the netdev agree (sriov-cni sets both to the same value).
        vf.mac = mac;

        let mtu = int_field(
            &raw,
            "mtu",
            68,
            65535,
            "set the MTU in bytes, e.g. 9000, or leave it out to keep the VF's MTU",
        )?
        .map(|m| m as u32);

        // Logging settings never fail the attachment: sriov-cni falls back to info and stderr
        // with a warning, and NetworkAttachmentDefinitions written for it rely on that.
        let mut log_warnings = Vec::new();
        let log_level = match string_field(&raw, "logLevel")? {
            None => LogLevel::Info,
            Some(s) if s.is_empty() => LogLevel::Info,
            Some(s) => LogLevel::parse(&s).unwrap_or_else(|| {
                log_warnings.push(format!(
                    "ignoring logLevel {s:?}: set it to one of panic, error, warning, info, \
                     debug, verbose; logging at info"
                ));
                LogLevel::Info
            }),
        };
        let log_file = match string_field(&raw, "logFile")? {
            None => None,
            Some(s) if s.is_empty() => None,
            Some(s) if !s.starts_with('/') => {
                log_warnings.push(format!(
                    "ignoring logFile {s:?}: set it to an absolute path such as \
                     /var/log/vfpool-cni.log; logging to stderr"
                ));
                None
            }
            Some(s) => Some(s),
        };
        let prev_result = present(&raw, "prevResult").cloned();

        Ok(NetConf {
            raw,
            cni_version,
            version,
            name,
            ipam_type,
            device_id,
            vf,
            mac,
            mtu,
            log_level,
            log_file,
            log_warnings,
            prev_result,
        })
    }

    /// Parses stdin for DEL, which must clean up even after an ADD that was refused for a bad
    /// value: a field that fails validation is dropped (and named in the returned warnings)
    /// instead of failing the DEL, so the runtime does not retry it forever. Decode and version
    /// errors still fail.
    pub fn parse_for_del(
        stdin: &[u8],
        args: &CniArgs,
    ) -> Result<(NetConf, Vec<String>), NetConfError> {
        let mut warnings = Vec::new();
        let mut text = stdin.to_vec();
        let mut args = args.clone();
        for _ in 0..32 {
            match NetConf::parse(&text, &args) {
                Ok(conf) => return Ok((conf, warnings)),
                // Not in stdin: the runtime's CNI_ARGS.
                Err(NetConfError::Invalid {
                    field: CNI_ARGS_MAC,
                    value,
                    reason,
                }) if args.mac.is_some() => {
                    warnings.push(format!(
                        "ignoring invalid {CNI_ARGS_MAC} = {value} for DEL: {reason}"
                    ));
                    args.mac = None;
                }
                Err(NetConfError::Invalid {
                    field,
                    value,
                    reason,
                }) => {
                    let key = field.split('.').next().unwrap_or(field);
                    let mut obj: Map<String, Value> = serde_json::from_slice(&text)
                        .map_err(|source| NetConfError::Decode { source })?;
                    let before = obj.len();
                    obj.retain(|k, _| !k.eq_ignore_ascii_case(key));
                    if obj.len() == before || key == "name" {
                        return Err(NetConfError::Invalid {
                            field,
                            value,
                            reason,
                        });
                    }
                    warnings.push(format!(
                        "ignoring invalid field {field:?} = {value} for DEL: {reason}"
                    ));
                    text = serde_json::to_vec(&obj)
                        .map_err(|source| NetConfError::Decode { source })?;
                }
                Err(e) => return Err(e),
            }
        }
        NetConf::parse(&text, &args).map(|c| (c, warnings))
    }

    fn device_id(raw: &Map<String, Value>) -> Result<Option<String>, NetConfError> {
        let check = |field: &'static str| -> Result<Option<String>, NetConfError> {
            match string_field(raw, field)? {
                None => Ok(None),
                Some(s) if s.is_empty() => Ok(None),
                Some(s) => normalize_pci_address(&s).map(Some).ok_or_else(|| {
                    invalid(
                        field,
                        &Value::String(s),
                        "must be the VF's PCI address in the form 0000:3b:00.2 (Multus fills it in from the pod's device allocation)",
                    )
                }),
            }
        };
        let device_id = check("deviceID")?;
        let pci_bus_id = check("pciBusID")?;
        match (device_id, pci_bus_id) {
            (Some(d), Some(p)) if d != p => Err(invalid(
                "pciBusID",
                &Value::String(p.clone()),
                format!("differs from deviceID {d:?}; they must name the same VF"),
            )),
            (Some(d), _) => Ok(Some(d)),
            (None, p) => Ok(p),
        }
    }

    pub(crate) fn vf_request(raw: &Map<String, Value>) -> Result<VfRequest, NetConfError> {
        let vlan = int_field(
            raw,
            "vlan",
            0,
            4094,
            "use 1-4094 to tag, 0 to clear, or leave it out to keep the VF's VLAN",
        )?;
        let qos = int_field(raw, "vlanQoS", 0, 7, "the 802.1p priority is 0-7")?;
        let proto = match string_field(raw, "vlanProto")? {
            None => None,
            Some(p) => match p.to_ascii_lowercase().as_str() {
                "802.1q" => Some(VlanProto::Dot1Q),
                "802.1ad" => Some(VlanProto::Dot1Ad),
                _ => {
                    return Err(invalid(
                        "vlanProto",
                        &Value::String(p),
                        "must be \"802.1q\" or \"802.1ad\"",
                    ));
                }
            },
        };
        let vlan = match vlan {
            None => {
                if let Some(q) = qos {
                    return Err(invalid(
                        "vlanQoS",
                        &Value::from(q),
                        "needs \"vlan\" to be set as well",
                    ));
                }
                if let Some(p) = proto {
                    return Err(invalid(
                        "vlanProto",
                        &Value::String(p.as_str().into()),
                        "needs \"vlan\" to be set as well",
                    ));
                }
                None
            }
            Some(id) => {
                let qos = qos.unwrap_or(0);
                let proto = proto.unwrap_or(VlanProto::Dot1Q);
                if id == 0 && qos != 0 {
                    return Err(invalid(
                        "vlanQoS",
                        &Value::from(qos),
                        "a non-zero QoS needs a non-zero \"vlan\"",
                    ));
                }
                if id == 0 && proto == VlanProto::Dot1Ad {
                    return Err(invalid(
                        "vlanProto",
                        &Value::String("802.1ad".into()),
                        "802.1ad needs a non-zero \"vlan\"",
                    ));
                }
                Some((id as u16, qos as u8, proto))
            }
        };

        let mac = match string_field(raw, "mac")? {
            None => None,
            Some(s) if s.is_empty() => None,
            Some(s) => Some(
                s.parse()
                    .map_err(|e: String| invalid("mac", &Value::String(s.clone()), e))?,
            ),
        };

        let max_rate_hint = "rates are in Mbps, 0 means no limit";
        let min = int_field(raw, "min_tx_rate", 0, i64::from(u32::MAX), max_rate_hint)?;
        let max = int_field(raw, "max_tx_rate", 0, i64::from(u32::MAX), max_rate_hint)?;
        let rate = match (min, max) {
            (None, None) => None,
            (min, max) => {
                let (min, max) = (min.unwrap_or(0) as u32, max.unwrap_or(0) as u32);
                if max != 0 && min > max {
                    return Err(invalid(
                        "min_tx_rate",
                        &Value::from(min),
                        format!(
                            "must not exceed max_tx_rate ({max}); raise max_tx_rate or set it to 0 for no limit"
                        ),
                    ));
                }
                Some((min, max))
            }
        };

        let link_state = match string_field(raw, "link_state")?.as_deref() {
            None | Some("") => None,
            Some("auto") => Some(VfLinkState::Auto),
            Some("enable") => Some(VfLinkState::Enable),
            Some("disable") => Some(VfLinkState::Disable),
            Some(other) => {
                return Err(invalid(
                    "link_state",
                    &Value::String(other.into()),
                    "must be \"auto\", \"enable\" or \"disable\"",
                ));
            }
        };

        Ok(VfRequest {
            vlan,
            mac,
            rate,
            spoofchk: on_off(raw, "spoofchk")?,
            trust: on_off(raw, "trust")?,
            link_state,
        })
    }
}
