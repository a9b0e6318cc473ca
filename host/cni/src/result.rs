//! CNI results: one internal model (spec 1.1.0), parsed from any version an IPAM plugin prints and
//! converted to the version the runtime asked for.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value, json};
use thiserror::Error;

use crate::version::Version;

/// Why a result could not be read.
#[derive(Debug, Error)]
pub enum ResultError {
    /// The text is not a JSON object of the shape the spec gives for its version.
    #[error("result for cniVersion {version} is malformed: {source}")]
    Malformed {
        /// The version the result claimed.
        version: String,
        /// The decoder's complaint.
        #[source]
        source: serde_json::Error,
    },
    /// The result's `cniVersion` is not one we know.
    #[error(transparent)]
    Version(#[from] crate::version::VersionError),
}

/// An address with a prefix length (`10.1.2.3/24`, `fd00::2/64`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpNet {
    /// The address (host bits kept, as CNI results carry the interface address).
    pub addr: IpAddr,
    /// Prefix length.
    pub prefix: u8,
}

impl IpNet {
    /// True for IPv4.
    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }

    /// The network address (host bits cleared), for routes.
    pub fn network(&self) -> IpAddr {
        match self.addr {
            IpAddr::V4(a) => {
                let bits = u32::from(a);
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u32::MAX << (32 - u32::from(self.prefix))
                };
                IpAddr::V4((bits & mask).into())
            }
            IpAddr::V6(a) => {
                let bits = u128::from(a);
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u128::MAX << (128 - u32::from(self.prefix))
                };
                IpAddr::V6((bits & mask).into())
            }
        }
    }
}

impl FromStr for IpNet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not an address with a prefix length (a.b.c.d/n)"))?;
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{addr:?} in {s:?} is not an IP address"))?;
        let prefix: u8 = prefix
            .parse()
            .map_err(|_| format!("prefix length {prefix:?} in {s:?} is not a number"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(format!(
                "prefix length {prefix} in {s:?} is larger than {max}"
            ));
        }
        Ok(IpNet { addr, prefix })
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Serialize for IpNet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for IpNet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(D::Error::custom)
    }
}

/// One interface of a result.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Interface {
    /// Interface name.
    pub name: String,
    /// Hardware address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// MTU (1.1.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Netns path for interfaces inside the container; absent for host interfaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
    /// vhost-user/memif socket path (1.1.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket_path: Option<String>,
    /// PCI address of the device (1.1.0).
    #[serde(default, rename = "pciID", skip_serializing_if = "Option::is_none")]
    pub pci_id: Option<String>,
}

/// One IP configuration of a result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// Index into `interfaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
    /// Address with prefix length.
    pub address: IpNet,
    /// Gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
}

/// One route of a result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    /// Destination network.
    pub dst: IpNet,
    /// Next hop; absent means the gateway of the matching IP config (or on-link).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
    /// MTU (1.1.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Advertised MSS (1.1.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advmss: Option<u32>,
    /// Metric (1.1.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    /// Routing table (1.1.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<u32>,
    /// Scope (1.1.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<u8>,
}

/// A CNI result in the 1.1.0 model.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CniResult {
    /// Interfaces created or moved.
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    /// IP configurations.
    #[serde(default)]
    pub ips: Vec<IpConfig>,
    /// Routes.
    #[serde(default)]
    pub routes: Vec<Route>,
    /// DNS settings, passed through as the IPAM plugin gave them.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub dns: Value,
}

/// The 0.1.0/0.2.0 `ip4`/`ip6` block.
#[derive(Debug, Deserialize)]
struct LegacyIp {
    ip: IpNet,
    #[serde(default)]
    gateway: Option<IpAddr>,
    #[serde(default)]
    routes: Vec<Route>,
}

#[derive(Debug, Deserialize)]
struct LegacyResult {
    #[serde(default)]
    ip4: Option<LegacyIp>,
    #[serde(default)]
    ip6: Option<LegacyIp>,
    #[serde(default)]
    dns: Value,
}

impl CniResult {
    /// Parses a result printed by a plugin for `version` (the version it was asked for or the one
    /// its `cniVersion` claims).
    pub fn parse(text: &str) -> Result<Self, ResultError> {
        let value: Value = serde_json::from_str(text).map_err(|source| ResultError::Malformed {
            version: "?".into(),
            source,
        })?;
        let version_text = value
            .get("cniVersion")
            .and_then(Value::as_str)
            .unwrap_or("0.1.0")
            .to_owned();
        let version = Version::parse_supported(&version_text)?;
        let malformed = |source| ResultError::Malformed {
            version: version_text.clone(),
            source,
        };
        if version < Version::new(0, 3, 0) {
            let legacy: LegacyResult = serde_json::from_value(value).map_err(malformed)?;
            let mut result = CniResult {
                dns: legacy.dns,
                ..CniResult::default()
            };
            for ip in [legacy.ip4, legacy.ip6].into_iter().flatten() {
                result.ips.push(IpConfig {
                    interface: None,
                    address: ip.ip,
                    gateway: ip.gateway,
                });
                result.routes.extend(ip.routes);
            }
            Ok(result)
        } else {
            // 0.3.x/0.4.0 carry ips[].version; the 1.x model ignores it (serde skips unknown keys).
            serde_json::from_value(value).map_err(malformed)
        }
    }

    /// The result as the JSON object of spec version `version`.
    pub fn to_value(&self, version: Version) -> Value {
        let version_text = version.to_string();
        if version < Version::new(0, 3, 0) {
            let legacy = |v4: bool| -> Option<Value> {
                let ip = self.ips.iter().find(|ip| ip.address.is_ipv4() == v4)?;
                let routes: Vec<Value> = self
                    .routes
                    .iter()
                    .filter(|r| r.dst.is_ipv4() == v4)
                    .map(|r| {
                        let mut o = json!({"dst": r.dst});
                        if let Some(gw) = r.gw {
                            o["gw"] = json!(gw);
                        }
                        o
                    })
                    .collect();
                let mut o = json!({"ip": ip.address});
                if let Some(gw) = ip.gateway {
                    o["gateway"] = json!(gw);
                }
                if !routes.is_empty() {
                    o["routes"] = Value::Array(routes);
                }
                Some(o)
            };
            let mut out = Map::new();
            out.insert("cniVersion".into(), json!(version_text));
            if let Some(v) = legacy(true) {
                out.insert("ip4".into(), v);
            }
            if let Some(v) = legacy(false) {
                out.insert("ip6".into(), v);
            }
            if !self.dns.is_null() {
                out.insert("dns".into(), self.dns.clone());
            }
            return Value::Object(out);
        }
        // libcni's types100 serves 1.0.0 and 1.1.0 alike, with interfaces[].mtu/socketPath/pciID
        // and the route attributes: sriov-cni reports the MTU to a 1.0.0 runtime and Multus
        // copies it into the network-status annotation.
        let full = version >= Version::new(1, 0, 0);
        let interfaces: Vec<Value> = self
            .interfaces
            .iter()
            .map(|i| {
                let mut i = i.clone();
                if !full {
                    i.mtu = None;
                    i.socket_path = None;
                    i.pci_id = None;
                }
                json!(i)
            })
            .collect();
        let ips: Vec<Value> = self
            .ips
            .iter()
            .map(|ip| {
                let mut o = json!(ip);
                if version < Version::new(1, 0, 0) {
                    o["version"] = json!(if ip.address.is_ipv4() { "4" } else { "6" });
                }
                o
            })
            .collect();
        let routes: Vec<Value> = self
            .routes
            .iter()
            .map(|r| {
                if full {
                    json!(r)
                } else {
                    let mut o = json!({"dst": r.dst});
                    if let Some(gw) = r.gw {
                        o["gw"] = json!(gw);
                    }
                    o
                }
            })
            .collect();
        let mut out = Map::new();
        out.insert("cniVersion".into(), json!(version_text));
        if !interfaces.is_empty() {
            out.insert("interfaces".into(), Value::Array(interfaces));
        }
        if !ips.is_empty() {
            out.insert("ips".into(), Value::Array(ips));
        }
        if !routes.is_empty() {
            out.insert("routes".into(), Value::Array(routes));
        }
        out.insert(
            "dns".into(),
            if self.dns.is_null() {
                json!({})
            } else {
                self.dns.clone()
            },
        );
        Value::Object(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CniResult {
        CniResult {
            interfaces: vec![Interface {
                name: "net1".into(),
                mac: Some("02:00:00:00:00:01".into()),
                mtu: Some(1500),
                sandbox: Some("/run/netns/p".into()),
                socket_path: None,
                pci_id: Some("0000:3b:00.2".into()),
            }],
            ips: vec![
                IpConfig {
                    interface: Some(0),
                    address: "10.1.2.3/24".parse().unwrap(),
                    gateway: Some("10.1.2.1".parse().unwrap()),
                },
                IpConfig {
                    interface: Some(0),
                    address: "fd00::3/64".parse().unwrap(),
                    gateway: None,
                },
            ],
            routes: vec![Route {
                dst: "0.0.0.0/0".parse().unwrap(),
                gw: Some("10.1.2.1".parse().unwrap()),
                mtu: Some(1400),
                advmss: None,
                priority: Some(5),
                table: None,
                scope: None,
            }],
            dns: Value::Null,
        }
    }

    #[test]
    fn ipnet_parses_and_rejects() {
        let n: IpNet = "10.1.2.3/24".parse().unwrap();
        assert_eq!(n.network().to_string(), "10.1.2.0");
        assert_eq!(
            "fd00::5/64".parse::<IpNet>().unwrap().network().to_string(),
            "fd00::"
        );
        for bad in [
            "10.1.2.3",
            "10.1.2.3/33",
            "x/24",
            "10.1.2.3/x",
            "fd00::/129",
        ] {
            assert!(bad.parse::<IpNet>().is_err(), "{bad}");
        }
    }

    #[test]
    fn converts_down_to_each_version() {
        let r = sample();
        let v110 = r.to_value(Version::new(1, 1, 0));
        assert_eq!(v110["interfaces"][0]["mtu"], 1500);
        assert_eq!(v110["interfaces"][0]["pciID"], "0000:3b:00.2");
        assert_eq!(v110["routes"][0]["priority"], 5);
        assert!(v110["ips"][0].get("version").is_none());

        // types100 (libcni) serves 1.0.0 like 1.1.0: sriov-cni reports the MTU to both.
        let v100 = r.to_value(Version::new(1, 0, 0));
        assert_eq!(v100["interfaces"][0]["mtu"], 1500);
        assert_eq!(v100["interfaces"][0]["pciID"], "0000:3b:00.2");
        assert_eq!(v100["routes"][0]["priority"], 5);
        assert_eq!(v100["cniVersion"], "1.0.0");

        let v040 = r.to_value(Version::new(0, 4, 0));
        assert!(v040["interfaces"][0].get("mtu").is_none());
        assert!(v040["interfaces"][0].get("pciID").is_none());
        assert!(v040["routes"][0].get("priority").is_none());

        assert_eq!(v040["ips"][0]["version"], "4");
        assert_eq!(v040["ips"][1]["version"], "6");
        assert_eq!(v040["ips"][0]["interface"], 0);

        let v020 = r.to_value(Version::new(0, 2, 0));
        assert_eq!(v020["ip4"]["ip"], "10.1.2.3/24");
        assert_eq!(v020["ip4"]["gateway"], "10.1.2.1");
        assert_eq!(v020["ip4"]["routes"][0]["dst"], "0.0.0.0/0");
        assert_eq!(v020["ip6"]["ip"], "fd00::3/64");
        assert!(v020.get("interfaces").is_none());
    }

    #[test]
    fn parses_every_result_shape_back() {
        let r = sample();
        for v in ["0.2.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"] {
            let version = Version::parse(v).unwrap();
            let text = r.to_value(version).to_string();
            let back = CniResult::parse(&text).unwrap();
            assert_eq!(back.ips.len(), 2, "{v}");
            assert_eq!(back.ips[0].address, r.ips[0].address, "{v}");
            assert_eq!(back.routes[0].dst, r.routes[0].dst, "{v}");
        }
        assert!(CniResult::parse("{\"cniVersion\":\"9.9.9\"}").is_err());
        assert!(
            CniResult::parse("{\"cniVersion\":\"1.0.0\",\"ips\":[{\"address\":\"nope\"}]}")
                .is_err()
        );
    }
}
