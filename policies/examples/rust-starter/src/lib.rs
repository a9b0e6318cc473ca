//! A starter selector policy (`vfpool:policy/selector`): one pool of VFs per PF, named
//! `<pf><suffix>` (`ens1f0_vfs`). Copy this crate to start your own policy in Rust.
//!
//! Settings (the `--config-file` text, JSON; empty means the defaults):
//! `{"starter": {"suffix": "_vfs", "pfs": ["ens1f0"]}}` — `suffix` is appended to the PF name,
//! `pfs` limits the pools to these PFs (all PFs when absent). Other top-level keys are ignored,
//! because every policy gets the same configuration text.
//!
//! The decisions live here, in plain Rust with unit tests; `component.rs` is the WIT glue.

#[cfg(target_arch = "wasm32")]
mod component;

use std::collections::BTreeMap;

/// This policy's settings, from the `starter` key of the configuration.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StarterSettings {
    /// Appended to the PF name to make the pool name.
    #[serde(default = "default_suffix")]
    pub suffix: String,
    /// Only these PFs get a pool; `None`: every PF.
    #[serde(default)]
    pub pfs: Option<Vec<String>>,
}

/// 63 (a resource name's longest) minus 15 (a Linux interface name's longest).
const MAX_SUFFIX_LEN: usize = 48;

fn default_suffix() -> String {
    "_vfs".to_string()
}

impl Default for StarterSettings {
    fn default() -> Self {
        StarterSettings {
            suffix: default_suffix(),
            pfs: None,
        }
    }
}

/// A settings problem: the field (a JSON path) and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingsError {
    /// Where: `starter.suffix`, or empty for the whole text.
    pub field: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl StarterSettings {
    /// Reads the `starter` key of the configuration text.
    pub fn parse(config: &str) -> Result<StarterSettings, SettingsError> {
        if config.trim().is_empty() {
            return Ok(StarterSettings::default());
        }
        let document: serde_json::Value =
            serde_json::from_str(config).map_err(|e| SettingsError {
                field: String::new(),
                message: format!("not valid JSON: {e}"),
            })?;
        let Some(starter) = document.get("starter") else {
            return Ok(StarterSettings::default());
        };
        let settings: StarterSettings =
            serde_json::from_value(starter.clone()).map_err(|e| SettingsError {
                field: "starter".to_string(),
                message: format!("{e}; expected {{\"suffix\": \"_vfs\", \"pfs\": [\"ens1f0\"]}}"),
            })?;
        // The pool name must stay a valid Kubernetes resource name (at most 63 characters, ending
        // in a letter or digit) for any PF name (at most 15 characters on Linux).
        let suffix = &settings.suffix;
        let refuse = |why: &str| SettingsError {
            field: "starter.suffix".to_string(),
            message: format!("{suffix:?} {why}"),
        };
        if !suffix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(refuse("may only have letters, digits, '-', '_' and '.'"));
        }
        if suffix.len() > MAX_SUFFIX_LEN {
            return Err(refuse(&format!(
                "is longer than {MAX_SUFFIX_LEN} characters (the pool name, PF name included, must fit in 63)"
            )));
        }
        if suffix.ends_with(['-', '_', '.']) {
            return Err(refuse(
                "must end with a letter or digit, as resource names do",
            ));
        }
        Ok(settings)
    }
}

/// What the grouping needs to know about a VF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vf {
    /// PCI address.
    pub id: String,
    /// The PF's netdev name, when known.
    pub pf_name: Option<String>,
    /// The VF carries the node's default route: never pool it.
    pub carries_default_route: bool,
}

/// The pools: pool name → VF ids, sorted by pool name. VFs whose PF has no netdev name are
/// left out (there is nothing to name their pool after).
pub fn group_by_pf(settings: &StarterSettings, vfs: &[Vf]) -> BTreeMap<String, Vec<String>> {
    let mut pools: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for vf in vfs {
        let Some(pf) = &vf.pf_name else { continue };
        if vf.carries_default_route {
            continue;
        }
        if let Some(only) = &settings.pfs
            && !only.contains(pf)
        {
            continue;
        }
        pools
            .entry(format!("{pf}{}", settings.suffix))
            .or_default()
            .push(vf.id.clone());
    }
    pools
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn vf(id: &str, pf: &str) -> Vf {
        Vf {
            id: id.to_string(),
            pf_name: Some(pf.to_string()),
            carries_default_route: false,
        }
    }

    #[test]
    fn one_pool_per_pf() {
        let vfs = [vf("a", "ens1f0"), vf("b", "ens1f1"), vf("c", "ens1f0")];
        let pools = group_by_pf(&StarterSettings::default(), &vfs);
        assert_eq!(pools["ens1f0_vfs"], ["a", "c"]);
        assert_eq!(pools["ens1f1_vfs"], ["b"]);
    }

    #[test]
    fn settings_limit_and_rename() {
        let settings =
            StarterSettings::parse(r#"{"starter":{"suffix":"-x","pfs":["ens1f1"]}}"#).unwrap();
        let pools = group_by_pf(&settings, &[vf("a", "ens1f0"), vf("b", "ens1f1")]);
        assert_eq!(pools.keys().collect::<Vec<_>>(), ["ens1f1-x"]);
    }

    #[test]
    fn bad_settings_name_the_field() {
        let e = StarterSettings::parse(r#"{"starter":{"sufix":"_x"}}"#).unwrap_err();
        assert_eq!(e.field, "starter");
        assert!(e.message.contains("sufix"), "{}", e.message);
        let e = StarterSettings::parse(r#"{"starter":{"suffix":"/x"}}"#).unwrap_err();
        assert_eq!(e.field, "starter.suffix");
        // Every pool name would be refused by the host: caught here, naming the field.
        for suffix in ["_", "x-", &"x".repeat(49)] {
            let e = StarterSettings::parse(&format!(r#"{{"starter":{{"suffix":"{suffix}"}}}}"#))
                .unwrap_err();
            assert_eq!(e.field, "starter.suffix", "{suffix}: {}", e.message);
        }
        assert!(
            StarterSettings::parse(&format!(
                r#"{{"starter":{{"suffix":"{}"}}}}"#,
                "x".repeat(48)
            ))
            .is_ok()
        );
        assert!(StarterSettings::parse("{").is_err());
        assert_eq!(
            StarterSettings::parse("").unwrap(),
            StarterSettings::default()
        );
    }
}
