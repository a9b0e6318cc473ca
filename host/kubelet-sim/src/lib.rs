//! `vfpool-kubelet-sim`: a stand-in for kubelet's device manager, for tests, the demo and
//! benchmarks on machines without a kubelet.
//!
//! It owns, under a kubelet directory it is given: the `v1beta1.Registration` service on
//! `device-plugins/kubelet.sock`; the plugin-watcher side (`plugins_registry`: GetInfo, then
//! NotifyRegistrationStatus; a deleted socket deregisters its plugin), on unless
//! [`SimOptions`] turns it off, as kubelet always makes that directory and a plugin that finds it
//! registers there (so tests exercise the mode real nodes use); for every registered plugin
//! a client that kubelet connects before it answers the registration (dial, then
//! GetDevicePluginOptions: a failure is the registration's error) and that follows ListAndWatch,
//! tracking capacity and allocatable; simulated pods that get devices the way
//! kubelet gives them without a Topology Manager hint (GetPreferredAllocation over the free
//! devices in a set's arbitrary order, the free part of the answer taken and the rest filled, then
//! Allocate with the chosen set, all on the connection dialled at registration); the device
//! manager's checkpoint file, rewritten by rename as lists and admissions come in; the
//! PodResources `v1` service on `pod-resources/kubelet.sock` reporting those pods; and a restart
//! (sockets deleted and recreated, plugins forgotten, pods kept, as kubelet's checkpoint keeps
//! them).
//!
//! It enforces what kubelet enforces: API version `v1beta1`, an extended resource name
//! (`domain/name`, not in the `kubernetes.io` namespace), an Allocate answer with a container
//! response; and one live plugin per resource name, as kubelet keeps it: a newer registration
//! for a name replaces the older (a rolling update), whose stream is no longer followed.
//!
//! Pods have one app container, and may have an init container whose devices the app container
//! partly reuses ([`KubeletSim::allocate_pod_with_init`]): PodResources reports the app
//! container's devices only, the checkpoint (kubelet's format) every container's, and each pod has
//! its directory under `pods/` while it lives.
//!
//! Not modelled: the Topology Manager, GetPreferredAllocation's must-include (an app container
//! that wants more devices than its init container got), the end of
//! an older registration's stream stopping the newest (kubernetes#121994; tests call
//! [`KubeletSim::disconnect`] for it), the five-minute grace before a disconnected resource is
//! removed, and PreStartContainer.
//!
//! It must not touch: anything outside the kubelet directory it is given, and no vfpool crate
//! other than the wire types (`vfpool-proto`): it is a model of kubelet, not of vfpool.

mod sim;
mod uds;

pub use sim::{
    DeviceView, KubeletSim, PodAllocation, RegistrationRecord, ResourceView, SimError, SimOptions,
    validate_resource_name,
};
