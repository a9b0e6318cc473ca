//! The CNI error result (spec §5) and the codes this plugin uses.
//!
//! Every module has its own `thiserror` enum; each of them knows which CNI code its variants map to
//! ([`CniError::code`] is chosen where the error is turned into a CNI error, in `plugin`), so the
//! runtime can tell "fix your config" (7) from "try again later" (11) from "the node is broken" (≥100).

use serde::Serialize;

/// Error codes from the CNI spec (0–99 reserved) and this plugin's own (≥100).
pub mod code {
    /// Incompatible CNI version.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// Unsupported field in the network configuration.
    pub const UNSUPPORTED_FIELD: u32 = 2;
    /// Container unknown or does not exist.
    pub const UNKNOWN_CONTAINER: u32 = 3;
    /// Invalid necessary environment variables.
    pub const INVALID_ENV: u32 = 4;
    /// I/O failure.
    pub const IO_FAILURE: u32 = 5;
    /// Failed to decode content (stdin is not the JSON we expect).
    pub const DECODE_FAILURE: u32 = 6;
    /// Invalid network config.
    pub const INVALID_CONFIG: u32 = 7;
    /// Invalid network namespace: CNI_NETNS is the plugin's own (skel's `ErrInvalidNetNS`).
    pub const INVALID_NETNS: u32 = 8;
    /// Try again later: the VF is locked by another operation or allocated to a live netns.
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// STATUS: the plugin is not available (its IPAM plugin is missing or not ready).
    pub const PLUGIN_NOT_AVAILABLE: u32 = 50;
    /// The VF could not be resolved from sysfs (no such device, not a VF, no netdev and no DPDK driver).
    pub const VF_RESOLUTION: u32 = 100;
    /// A netlink operation (VF settings through the PF, link moves, addresses, routes) failed.
    pub const NETLINK: u32 = 101;
    /// A network namespace could not be opened, created or entered.
    pub const NETNS: u32 = 102;
    /// The delegated IPAM plugin failed or returned something unusable.
    pub const IPAM: u32 = 103;
    /// The plugin's state directory (cache, allocation markers, locks) could not be used.
    pub const STATE: u32 = 104;
    /// The PF driver does not report or support a VF setting the NetConf asks for.
    pub const VF_SETTING_UNSUPPORTED: u32 = 105;
    /// CHECK found the attachment different from `prevResult`.
    pub const CHECK_FAILED: u32 = 106;
    /// The interface name asked for already exists in the pod network namespace.
    pub const IFNAME_TAKEN: u32 = 107;
}

/// A CNI error result, printed as JSON on stdout with a non-zero exit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CniError {
    /// The CNI version of the request (or the newest we speak when it could not be read).
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    /// The error code (see [`code`]).
    pub code: u32,
    /// What went wrong, naming the field and value, and the fix.
    pub msg: String,
    /// Extra detail: the underlying cause chain.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl CniError {
    /// A new error with no details, for the newest CNI version (callers set the request's version).
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        CniError {
            cni_version: crate::version::LATEST.to_owned(),
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    /// An error built from any `std::error::Error`: its message and the chain of its sources.
    pub fn from_error(code: u32, err: &(dyn std::error::Error + 'static)) -> Self {
        let mut details = Vec::new();
        let mut source = err.source();
        while let Some(cause) = source {
            details.push(cause.to_string());
            source = cause.source();
        }
        CniError {
            cni_version: crate::version::LATEST.to_owned(),
            code,
            msg: err.to_string(),
            details: details.join(": "),
        }
    }

    /// The same error reported for CNI version `version`.
    pub fn with_version(mut self, version: &str) -> Self {
        version.clone_into(&mut self.cni_version);
        self
    }

    /// The JSON text the runtime reads from stdout.
    pub fn to_json(&self) -> String {
        // Serializing a struct of strings and an integer cannot fail; fall back to a hand-made
        // object anyway rather than panic.
        serde_json::to_string(self).unwrap_or_else(|_| {
            format!(
                "{{\"cniVersion\":\"{}\",\"code\":{},\"msg\":\"internal error\"}}",
                crate::version::LATEST,
                self.code
            )
        })
    }
}

impl std::fmt::Display for CniError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CNI error {}: {}", self.code, self.msg)?;
        if !self.details.is_empty() {
            write!(f, " ({})", self.details)?;
        }
        Ok(())
    }
}

impl std::error::Error for CniError {}
