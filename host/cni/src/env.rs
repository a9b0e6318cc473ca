//! The CNI environment (spec §2): which command, for which container, where.
//!
//! Read through a lookup function rather than `std::env` so tests can pass their own environment.

use std::path::PathBuf;

use thiserror::Error;

/// The default state directory, sriov-cni's (`DefaultCNIDir`), so a DEL can find caches it wrote.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/cni/sriov";
/// The default sysfs root.
pub const DEFAULT_SYSFS_ROOT: &str = "/sys";

/// Why the environment was refused (CNI code 4).
#[derive(Debug, Error)]
pub enum EnvError {
    /// Variables the command needs are missing or empty.
    #[error("required environment variables {0:?} are missing (the container runtime sets them)")]
    Missing(Vec<&'static str>),
    /// CNI_COMMAND is not a command we know.
    #[error("CNI_COMMAND={0:?} is not one of ADD, DEL, CHECK, STATUS, GC, VERSION")]
    UnknownCommand(String),
    /// A variable has a value the spec does not allow.
    #[error("{var}={value:?} is invalid: {reason}")]
    Invalid {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
        /// Why.
        reason: &'static str,
    },
}

/// A CNI command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Attach.
    Add,
    /// Detach.
    Del,
    /// Verify an attachment.
    Check,
    /// Readiness.
    Status,
    /// Garbage-collect attachments not listed.
    Gc,
    /// Supported versions.
    Version,
}

impl Command {
    /// The command as `CNI_COMMAND` names it (`ADD`).
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Status => "STATUS",
            Command::Gc => "GC",
            Command::Version => "VERSION",
        }
    }
}

/// The CNI parameters of one invocation, validated.
#[derive(Debug, Clone)]
pub struct CniEnv {
    /// The command.
    pub command: Command,
    /// `CNI_CONTAINERID` (empty for STATUS, GC, VERSION).
    pub container_id: String,
    /// `CNI_NETNS`; empty when not given (allowed for DEL).
    pub netns: String,
    /// A DEL's `CNI_NETNS` that is no absolute path, set aside: `netns` is empty then (see
    /// [`CniEnv::from_lookup`]).
    pub netns_ignored: Option<String>,
    /// `CNI_NETNS_OVERRIDE` is `1` or `true`: CNI_NETNS may be the plugin's own namespace.
    pub netns_override: bool,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// `CNI_ARGS`.
    pub args: String,
    /// `CNI_PATH`, split.
    pub path: Vec<PathBuf>,
    /// `VFPOOL_SYSFS_ROOT` or `/sys`.
    pub sysfs_root: PathBuf,
    /// `VFPOOL_CNI_STATE_DIR` or `/var/lib/cni/sriov`.
    pub state_dir: PathBuf,
}

/// Checks an interface name as the kernel and the spec require.
pub fn valid_ifname(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("an interface name must not be empty");
    }
    if name.len() > 15 {
        return Err("an interface name has at most 15 bytes");
    }
    if name == "." || name == ".." {
        return Err("an interface name must not be . or ..");
    }
    if name
        .bytes()
        .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b == 0)
    {
        return Err("an interface name must not contain '/', ':' or whitespace");
    }
    // The kernel numbers a name holding '%' (`net%d` becomes `net0`), so the interface would
    // not be found under the name the runtime gave, and its ADD, rollback and DEL would miss it.
    if name.contains('%') {
        return Err("an interface name must not contain '%' (the kernel would number it)");
    }
    Ok(())
}

impl CniEnv {
    /// Reads the environment through `get` (`std::env::var` in the binary).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<CniEnv, EnvError> {
        let var = |name: &str| get(name).unwrap_or_default();
        let command_text = var("CNI_COMMAND");
        let command = match command_text.as_str() {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            "VERSION" => Command::Version,
            "" => return Err(EnvError::Missing(vec!["CNI_COMMAND"])),
            _ => return Err(EnvError::UnknownCommand(command_text)),
        };
        let mut env = CniEnv {
            command,
            container_id: var("CNI_CONTAINERID"),
            netns: var("CNI_NETNS"),
            netns_ignored: None,
            netns_override: matches!(
                var("CNI_NETNS_OVERRIDE").to_ascii_lowercase().as_str(),
                "1" | "true"
            ),
            ifname: var("CNI_IFNAME"),
            args: var("CNI_ARGS"),
            path: var("CNI_PATH")
                .split(':')
                .filter(|p| !p.is_empty())
                .map(PathBuf::from)
                .collect(),
            sysfs_root: get("VFPOOL_SYSFS_ROOT")
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| DEFAULT_SYSFS_ROOT.into())
                .into(),
            state_dir: get("VFPOOL_CNI_STATE_DIR")
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| DEFAULT_STATE_DIR.into())
                .into(),
        };

        let mut missing = Vec::new();
        let needs_container = matches!(command, Command::Add | Command::Del | Command::Check);
        if needs_container {
            if env.container_id.is_empty() {
                missing.push("CNI_CONTAINERID");
            }
            if env.ifname.is_empty() {
                missing.push("CNI_IFNAME");
            }
        }
        if matches!(command, Command::Add | Command::Check) && env.netns.is_empty() {
            missing.push("CNI_NETNS");
        }
        if matches!(
            command,
            Command::Add | Command::Del | Command::Check | Command::Gc
        ) && env.path.is_empty()
        {
            missing.push("CNI_PATH");
        }
        if !missing.is_empty() {
            // Keep skel's order: CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME, CNI_PATH.
            let order = ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"];
            missing.sort_by_key(|m| order.iter().position(|o| o == m));
            return Err(EnvError::Missing(missing));
        }
        if needs_container {
            if !crate::netconf::is_valid_name(&env.container_id) {
                return Err(EnvError::Invalid {
                    var: "CNI_CONTAINERID",
                    value: env.container_id,
                    reason: "must start with a letter or digit and contain only letters, digits, '_', '.' and '-'",
                });
            }
            if let Err(reason) = valid_ifname(&env.ifname) {
                return Err(EnvError::Invalid {
                    var: "CNI_IFNAME",
                    value: env.ifname,
                    reason,
                });
            }
        }
        if !env.netns.is_empty() && !env.netns.starts_with('/') {
            // A DEL must clean up whatever it is given, or the runtime retries it forever: it
            // goes on as without a netns (as skel, which does not check the path, would find
            // none there), from the cache.
            if command == Command::Del {
                env.netns_ignored = Some(std::mem::take(&mut env.netns));
                return Ok(env);
            }
            return Err(EnvError::Invalid {
                var: "CNI_NETNS",
                value: env.netns,
                reason: "must be an absolute path to a network namespace such as /run/netns/pod1",
            });
        }
        Ok(env)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Result<CniEnv, EnvError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        CniEnv::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn add_needs_every_variable_and_names_the_missing_ones() {
        let err = env(&[("CNI_COMMAND", "ADD")]).unwrap_err();
        let EnvError::Missing(m) = err else {
            panic!("{err}")
        };
        assert_eq!(
            m,
            vec!["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"]
        );
        let err = env(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_IFNAME", "net1"),
        ])
        .unwrap_err();
        assert!(err.to_string().contains("CNI_PATH"), "{err}");
    }

    #[test]
    fn del_accepts_an_empty_netns() {
        let e = env(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_IFNAME", "net1"),
            ("CNI_PATH", "/opt/cni/bin"),
        ])
        .unwrap();
        assert_eq!(e.netns, "");
        assert_eq!(e.state_dir, PathBuf::from(DEFAULT_STATE_DIR));
        assert_eq!(e.sysfs_root, PathBuf::from("/sys"));
    }

    #[test]
    fn refuses_bad_values() {
        let base = [
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_NETNS", "/run/netns/x"),
            ("CNI_IFNAME", "net1"),
            ("CNI_PATH", "/opt/cni/bin"),
        ];
        let with = |k: &str, v: &str| {
            let mut pairs: Vec<(&str, &str)> =
                base.iter().filter(|(bk, _)| *bk != k).copied().collect();
            let owned_k = k.to_string();
            let owned_v = v.to_string();
            let pairs_owned: Vec<(String, String)> = pairs
                .drain(..)
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .chain(std::iter::once((owned_k, owned_v)))
                .collect();
            let map: HashMap<String, String> = pairs_owned.into_iter().collect();
            CniEnv::from_lookup(|key| map.get(key).cloned())
        };
        assert!(env(&base).is_ok());
        assert!(matches!(
            with("CNI_COMMAND", "ATTACH"),
            Err(EnvError::UnknownCommand(_))
        ));
        assert!(with("CNI_IFNAME", "a-very-long-ifname0").is_err());
        assert!(with("CNI_IFNAME", "net/1").is_err());
        assert!(with("CNI_IFNAME", "..").is_err());
        assert!(with("CNI_IFNAME", "net%d").is_err());
        assert!(with("CNI_CONTAINERID", "-bad").is_err());
        assert!(with("CNI_NETNS", "relative/ns").is_err());
    }

    /// A DEL with a relative CNI_NETNS failed with code 4, before any clean-up and every time it
    /// was retried; skel does not check the path, and the DEL finds no netns there. It goes on
    /// without one now, the path set aside to be logged.
    #[test]
    fn a_del_with_a_relative_netns_goes_on_without_one() {
        let e = env(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_NETNS", "proc/1/ns/net"),
            ("CNI_IFNAME", "net1"),
            ("CNI_PATH", "/opt/cni/bin"),
        ])
        .unwrap();
        assert_eq!(e.netns, "");
        assert_eq!(e.netns_ignored.as_deref(), Some("proc/1/ns/net"));
        let e = env(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_NETNS", "/run/netns/x"),
            ("CNI_IFNAME", "net1"),
            ("CNI_PATH", "/opt/cni/bin"),
        ])
        .unwrap();
        assert_eq!((e.netns.as_str(), e.netns_ignored), ("/run/netns/x", None));
    }
}
