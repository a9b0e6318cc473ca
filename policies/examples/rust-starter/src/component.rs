//! The WIT glue: turns the WIT records into the plain types of `lib.rs` and back. Keep logic out
//! of here, so it stays testable with a plain `cargo test`.
#![allow(unsafe_code)] // wit-bindgen's generated export shims

// Generates Rust types and traits from the WIT contract at compile time (nothing is checked in).
wit_bindgen::generate!({
    path: "../../../wit",
    world: "selector-policy",
});

use exports::vfpool::policy::selector::Guest;
use vfpool::policy::log::{Level, log};
use vfpool::policy::types::{
    DeviceKind, DeviceType, Inventory, PolicyError, Pool, PoolDevice, Settings, SettingsProblem,
};

struct Starter;

fn invalid(problem: crate::SettingsError) -> PolicyError {
    PolicyError::InvalidSettings(SettingsProblem {
        field: problem.field,
        message: problem.message,
    })
}

impl Guest for Starter {
    fn validate_settings(settings: Settings) -> Result<(), PolicyError> {
        crate::StarterSettings::parse(&settings.config).map_err(invalid)?;
        Ok(())
    }

    fn select(settings: Settings, inventory: Inventory) -> Result<Vec<Pool>, PolicyError> {
        let parsed = crate::StarterSettings::parse(&settings.config).map_err(invalid)?;
        let vfs: Vec<crate::Vf> = inventory
            .devices
            .into_iter()
            .filter(|d| d.kind == DeviceKind::Vf)
            .map(|d| crate::Vf {
                id: d.id,
                pf_name: d.pf_name,
                carries_default_route: d.carries_default_route,
            })
            .collect();
        let groups = crate::group_by_pf(&parsed, &vfs);
        log(Level::Info, &format!("{} pools of VFs", groups.len()));
        Ok(groups
            .into_iter()
            .map(|(name, ids)| Pool {
                resource_name: format!("{}/{name}", settings.default_resource_prefix),
                device_type: DeviceType::NetDevice,
                exclude_topology: false,
                devices: ids
                    .into_iter()
                    .map(|id| PoolDevice {
                        id,
                        rdma: false,
                        vhost_net: false,
                        vdpa_type: None,
                        additional_info: None,
                    })
                    .collect(),
            })
            .collect())
    }
}

export!(Starter);
