//! kubelet's PodResources API: which devices pods hold, so a pool change never takes a device from
//! under a running pod (and an agent restart still counts devices already in pods, upstream #565).

use std::path::{Path, PathBuf};
use std::time::Duration;

use vfpool_proto::podresources::v1::ListPodResourcesRequest;
use vfpool_proto::podresources::v1::pod_resources_lister_client::PodResourcesListerClient;

use crate::logs::Took;
use crate::plan::InUse;
use crate::uds;

/// The PodResources socket relative to the kubelet directory.
pub const SOCKET: &str = "pod-resources/kubelet.sock";

/// The directory of [`SOCKET`], relative to kubelet's directory: kubelet makes it when it has the
/// API, so it being there means the socket is expected.
pub const DIR: &str = "pod-resources";

/// Why the in-use devices could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PodResourcesError {
    /// The List call failed.
    #[error("PodResources List on {path} failed")]
    List {
        /// The socket.
        path: PathBuf,
        /// The gRPC status.
        #[source]
        source: tonic::Status,
    },
    /// The call did not answer in time.
    #[error("PodResources List on {path} did not answer within {}", Took(*.timeout))]
    Timeout {
        /// The socket.
        path: PathBuf,
        /// The deadline.
        timeout: Duration,
    },
}

/// Asks kubelet which devices are assigned to pods, by resource name.
pub async fn in_use(path: &Path, timeout: Duration) -> Result<InUse, PodResourcesError> {
    let mut client = PodResourcesListerClient::new(uds::channel(path));
    let call = client.list(ListPodResourcesRequest {});
    let response = tokio::time::timeout(timeout, call)
        .await
        .map_err(|_| PodResourcesError::Timeout {
            path: path.to_path_buf(),
            timeout,
        })?
        .map_err(|source| PodResourcesError::List {
            path: path.to_path_buf(),
            source,
        })?
        .into_inner();
    let mut used = InUse::new();
    for pod in response.pod_resources {
        for container in pod.containers {
            for devices in container.devices {
                used.entry(devices.resource_name)
                    .or_default()
                    .extend(devices.device_ids);
            }
        }
    }
    Ok(used)
}
