//! The WIT glue: converts `vfpool:policy` records to the plain types and back. No logic here.
#![allow(unsafe_code)] // wit-bindgen's generated export shims

// A fresh instance per call: never free, and take arguments in one allocation (see `bump_alloc`).
bump_alloc::global_allocator!();

wit_bindgen::generate!({
    path: "../../wit",
    world: "selector-policy",
});

use exports::vfpool::policy::selector::Guest;
use vfpool::policy::log::{Level, log};
use vfpool::policy::types::{
    Device, DeviceKind, DeviceType as WitDeviceType, Inventory, PolicyError, Pool as WitPool,
    PoolDevice, Settings, SettingsProblem as WitProblem, VdpaType as WitVdpaType,
};

use crate::{DeviceType, DeviceView, Kind, SettingsProblem, VdpaType};

struct UpstreamSelector;

/// Most configuration notes (warnings) logged per config.
const MAX_NOTES: usize = 16;

impl DeviceView for Device {
    fn id(&self) -> &str {
        &self.id
    }
    fn kind(&self) -> Kind {
        match self.kind {
            DeviceKind::Pf => Kind::Pf,
            DeviceKind::Vf => Kind::Vf,
            DeviceKind::Aux => Kind::Aux,
        }
    }
    fn vendor(&self) -> Option<&str> {
        self.vendor.as_deref()
    }
    fn device(&self) -> Option<&str> {
        self.device.as_deref()
    }
    fn class_code(&self) -> Option<&str> {
        self.class_code.as_deref()
    }
    fn driver(&self) -> Option<&str> {
        self.driver.as_deref()
    }
    fn acpi_index(&self) -> Option<u32> {
        self.acpi_index
    }
    fn sriov_total_vfs(&self) -> Option<u32> {
        self.sriov_total_vfs
    }
    fn sriov_num_vfs(&self) -> Option<u32> {
        self.sriov_num_vfs
    }
    fn pf_id(&self) -> Option<&str> {
        self.pf_id.as_deref()
    }
    fn pf_name(&self) -> Option<&str> {
        self.pf_name.as_deref()
    }
    fn vf_index(&self) -> Option<u32> {
        self.vf_index
    }
    fn link_type(&self) -> Option<&str> {
        self.link_type.as_deref()
    }
    fn has_rdma(&self) -> bool {
        !self.rdma_devices.is_empty()
    }
    fn devlink_enable_rdma(&self) -> Option<bool> {
        self.devlink_enable_rdma
    }
    fn pkey(&self) -> Option<&str> {
        self.pkey.as_deref()
    }
    fn first_vdpa_driver(&self) -> Option<&str> {
        self.vdpa_devices.first().and_then(|v| v.driver.as_deref())
    }
    fn aux_type(&self) -> Option<&str> {
        self.aux_type.as_deref()
    }
    fn sf_num(&self) -> Option<u32> {
        self.sf_num
    }
    fn carries_default_route(&self) -> bool {
        self.carries_default_route
    }
    fn ddp_profile(&self) -> Option<&str> {
        self.ddp_profile.as_deref()
    }
}

fn settings_error(problem: SettingsProblem) -> PolicyError {
    PolicyError::InvalidSettings(WitProblem {
        field: problem.field,
        message: problem.message,
    })
}

impl Guest for UpstreamSelector {
    fn validate_settings(settings: Settings) -> Result<(), PolicyError> {
        let config = crate::parse(&settings.config, &settings.default_resource_prefix)
            .map_err(settings_error)?;
        // Once per config change (the host validates a config before it takes it), not on every
        // selection.
        for note in config.notes.iter().take(MAX_NOTES) {
            log(Level::Warn, note);
        }
        if let Some(more) = config.notes.len().checked_sub(MAX_NOTES).filter(|&n| n > 0) {
            log(
                Level::Warn,
                &format!("and {more} more configuration warnings"),
            );
        }
        Ok(())
    }

    fn select(settings: Settings, inventory: Inventory) -> Result<Vec<WitPool>, PolicyError> {
        let config = crate::parse(&settings.config, &settings.default_resource_prefix)
            .map_err(settings_error)?;
        let devices = inventory.devices;
        let pools = crate::select(&config, &devices);
        Ok(pools
            .into_iter()
            .map(|pool| WitPool {
                resource_name: pool.resource_name,
                device_type: match pool.device_type {
                    DeviceType::NetDevice => WitDeviceType::NetDevice,
                    DeviceType::Accelerator => WitDeviceType::Accelerator,
                    DeviceType::AuxNetDevice => WitDeviceType::AuxNetDevice,
                },
                exclude_topology: pool.exclude_topology,
                devices: pool
                    .members
                    .into_iter()
                    .filter_map(|m| {
                        Some(PoolDevice {
                            id: devices.get(m.index)?.id.clone(),
                            rdma: m.rdma,
                            vhost_net: m.vhost_net,
                            vdpa_type: m.vdpa_type.map(|t| match t {
                                VdpaType::Vhost => WitVdpaType::Vhost,
                                VdpaType::Virtio => WitVdpaType::Virtio,
                            }),
                            additional_info: m.additional_info,
                        })
                    })
                    .collect(),
            })
            .collect())
    }
}

export!(UpstreamSelector);
