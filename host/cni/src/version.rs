//! CNI spec versions: which ones we speak and how they compare.

use thiserror::Error;

/// The newest spec version this plugin implements.
pub const LATEST: &str = "1.1.0";

/// Every spec version we accept in a request and can format a result for (as `version.All` in
/// libcni, so a runtime that worked with sriov-cni keeps working).
pub const SUPPORTED: [&str; 7] = [
    "0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0",
];

/// Why a version string was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum VersionError {
    /// The string is not `MAJOR.MINOR.PATCH`.
    #[error("cniVersion {0:?} is not a version (expected MAJOR.MINOR.PATCH such as \"1.0.0\")")]
    Malformed(String),
    /// A well-formed version this plugin does not implement.
    #[error(
        "cniVersion {0:?} is not supported by this plugin (supported: 0.1.0, 0.2.0, 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0)"
    )]
    Unsupported(String),
}

/// A parsed spec version, ordered numerically.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    /// Major.
    pub major: u32,
    /// Minor.
    pub minor: u32,
    /// Patch.
    pub patch: u32,
}

impl Version {
    /// Version from its three numbers.
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        Version {
            major,
            minor,
            patch,
        }
    }

    /// Parses `MAJOR.MINOR.PATCH` (any well-formed version, supported or not).
    pub fn parse(text: &str) -> Result<Self, VersionError> {
        let malformed = || VersionError::Malformed(text.to_owned());
        let mut parts = text.split('.');
        let mut next = || -> Result<u32, VersionError> {
            let part = parts.next().ok_or_else(malformed)?;
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(malformed());
            }
            part.parse().map_err(|_| malformed())
        };
        let version = Version::new(next()?, next()?, next()?);
        if parts.next().is_some() {
            return Err(malformed());
        }
        Ok(version)
    }

    /// Parses a version and checks that this plugin implements it.
    pub fn parse_supported(text: &str) -> Result<Self, VersionError> {
        let version = Version::parse(text)?;
        if SUPPORTED.contains(&text) {
            Ok(version)
        } else {
            Err(VersionError::Unsupported(text.to_owned()))
        }
    }

    /// 0.4.0 and later know CHECK.
    pub fn supports_check(self) -> bool {
        self >= Version::new(0, 4, 0)
    }

    /// 1.1.0 and later know STATUS and GC.
    pub fn supports_status_and_gc(self) -> bool {
        self >= Version::new(1, 1, 0)
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// The VERSION command's answer.
pub fn version_json() -> String {
    let list = SUPPORTED
        .iter()
        .map(|v| format!("\"{v}\""))
        .collect::<Vec<_>>()
        .join(",");
    format!("{{\"cniVersion\":\"{LATEST}\",\"supportedVersions\":[{list}]}}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_orders_versions() {
        assert!(Version::parse("0.3.1").unwrap() < Version::parse("0.4.0").unwrap());
        assert!(Version::parse("0.10.0").unwrap() > Version::parse("0.4.0").unwrap());
        assert_eq!(Version::parse("1.1.0").unwrap().to_string(), "1.1.0");
    }

    #[test]
    fn refuses_malformed_and_unsupported() {
        for bad in ["", "1", "1.0", "1.0.0.0", "a.b.c", "1.-1.0", "1..0"] {
            assert!(
                matches!(Version::parse(bad), Err(VersionError::Malformed(_))),
                "{bad}"
            );
        }
        assert_eq!(
            Version::parse_supported("2.0.0"),
            Err(VersionError::Unsupported("2.0.0".into()))
        );
        for good in SUPPORTED {
            assert!(Version::parse_supported(good).is_ok());
        }
    }

    #[test]
    fn version_answer_lists_every_supported_version() {
        let v: serde_json::Value = serde_json::from_str(&version_json()).unwrap();
        assert_eq!(v["cniVersion"], "1.1.0");
        assert_eq!(
            v["supportedVersions"].as_array().unwrap().len(),
            SUPPORTED.len()
        );
    }
}
