//! The default selector policy: the upstream sriov-network-device-plugin's `config.json` semantics
//! as a WebAssembly component (`vfpool:policy/selector`).
//!
//! Owns: decoding the configuration with Go `encoding/json` quirks ([`json`], [`config`]), the `#`
//! range syntax ([`range`]) and the selection itself ([`select`]) — all plain Rust, unit-tested
//! natively. The component glue (`component`, wasm32 only) only converts WIT records to and from
//! these types. Must not touch: anything outside its inputs (it has no capabilities anyway).

pub mod config;
pub mod json;
pub mod range;
pub mod select;

#[cfg(target_arch = "wasm32")]
mod component;

pub use config::{Config, DeviceType, SettingsProblem, VdpaType, parse};
pub use select::{DeviceView, Kind, Pool, select};

/// A plain device record implementing [`DeviceView`], for native tests and the host's native
/// baseline benchmark.
#[derive(Debug, Clone, Default)]
#[allow(missing_docs)]
pub struct PlainDevice {
    pub id: String,
    pub kind: Option<Kind>,
    pub vendor: Option<String>,
    pub device: Option<String>,
    pub class_code: Option<String>,
    pub driver: Option<String>,
    pub acpi_index: Option<u32>,
    pub sriov_total_vfs: Option<u32>,
    pub sriov_num_vfs: Option<u32>,
    pub pf_id: Option<String>,
    pub pf_name: Option<String>,
    pub vf_index: Option<u32>,
    pub link_type: Option<String>,
    pub has_rdma: bool,
    pub devlink_enable_rdma: Option<bool>,
    pub pkey: Option<String>,
    pub first_vdpa_driver: Option<String>,
    pub aux_type: Option<String>,
    pub sf_num: Option<u32>,
    pub carries_default_route: bool,
    pub ddp_profile: Option<String>,
}

impl DeviceView for PlainDevice {
    fn id(&self) -> &str {
        &self.id
    }
    fn kind(&self) -> Kind {
        self.kind.unwrap_or(Kind::Pf)
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
        self.has_rdma
    }
    fn devlink_enable_rdma(&self) -> Option<bool> {
        self.devlink_enable_rdma
    }
    fn pkey(&self) -> Option<&str> {
        self.pkey.as_deref()
    }
    fn first_vdpa_driver(&self) -> Option<&str> {
        self.first_vdpa_driver.as_deref()
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

#[cfg(test)]
mod tests;
