//! `vfpool-proto`: the kubelet's gRPC APIs as Rust types, clients and servers.
//!
//! This crate owns the Rust code generated from the protos under the repository's `proto/`
//! directory — kubelet's deviceplugin `v1beta1`, pluginregistration `v1` and podresources `v1`
//! definitions, written down from the published API with kubelet's message and field numbers. The
//! generated code is checked in under `src/gen/` so that building never needs `protoc`;
//! `tests/bootstrap.rs` regenerates it (tonic-prost-build with protox, pure Rust) and fails when
//! the checked-in files differ. Run `VFPOOL_PROTO_BLESS=1 cargo test -p vfpool-proto --test
//! bootstrap` after editing a `.proto` file to rewrite them.
//!
//! It must not touch: anything but the wire types. No device, pool or policy logic lives here; the
//! device plugin and the kubelet simulator build on these types.

/// The device-plugin API, `v1beta1` (`k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1`).
pub mod deviceplugin {
    /// Package `v1beta1`.
    pub mod v1beta1 {
        #![allow(missing_docs, clippy::all, clippy::pedantic)]
        include!("gen/v1beta1.rs");

        /// The API version a plugin registers with.
        pub const VERSION: &str = "v1beta1";
        /// `Device.health` of a usable device.
        pub const HEALTHY: &str = "Healthy";
        /// `Device.health` of an unusable device.
        pub const UNHEALTHY: &str = "Unhealthy";
        /// kubelet's registration socket, relative to the device-plugin directory.
        pub const KUBELET_SOCKET: &str = "kubelet.sock";
        /// The plugin type in `PluginInfo.type` for the plugin-watcher registration.
        pub const DEVICE_PLUGIN_TYPE: &str = "DevicePlugin";
    }
}

/// The plugin-watcher registration API, `v1` (`k8s.io/kubelet/pkg/apis/pluginregistration/v1`).
pub mod pluginregistration {
    /// Package `pluginregistration` (API version v1).
    pub mod v1 {
        #![allow(missing_docs, clippy::all, clippy::pedantic)]
        include!("gen/pluginregistration.rs");
    }
}

/// The PodResources API, `v1` (`k8s.io/kubelet/pkg/apis/podresources/v1`).
pub mod podresources {
    /// Package `v1`.
    pub mod v1 {
        #![allow(missing_docs, clippy::all, clippy::pedantic)]
        include!("gen/v1.rs");
    }
}
