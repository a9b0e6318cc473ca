//! kubelet's device-manager checkpoint (`device-plugins/kubelet_internal_checkpoint`): the
//! devices held by pods' init containers, which PodResources does not report.
//!
//! kubelet's PodResources `List` reports a pod's app containers (and restartable init
//! containers), not its ordinary init containers. A device kubelet gave an init container and no
//! app container reused stays the pod's in kubelet's books until the pod ends, so a pool change
//! that moved it would let kubelet offer it to another pod under the new resource, and kubelet,
//! restarted, would refuse to admit the pod again (its init container's devices no longer listed
//! as healthy). The checkpoint lists every container's devices, so it covers them.
//!
//! kubelet rewrites the checkpoint when it allocates devices or hears a new device list, not when
//! a pod ends: the entries of a pod that ended stay until the next rewrite. An entry only counts
//! while its pod's directory (`pods/<uid>` under kubelet's directory) is there, which kubelet
//! removes once the pod object is deleted and its volumes are cleaned up: a deleted pod's devices
//! are free at once, but those of a pod that completed and still exists (a finished Job's) stay
//! held until kubelet's next rewrite. Held, a device only stays in the pool it is in (it is still
//! offered there), so what that costs is a pool change that waits. Without the `pods` directory
//! visible to the agent, the checkpoint is not used at all (a deleted pod's devices would be held
//! until a rewrite too).
//!
//! The file is opened without following a symlink or waiting on a FIFO put in its place (any
//! device plugin can write `device-plugins/`): a read must never stall the agent's applies.

use std::io::Read as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;

use serde::Deserialize;

use crate::plan::InUse;

/// The checkpoint relative to kubelet's directory.
pub const FILE: &str = "device-plugins/kubelet_internal_checkpoint";

/// The directory of pods' directories, relative to kubelet's directory.
pub const PODS_DIR: &str = "pods";

/// The largest checkpoint read. kubelet's holds a few hundred bytes per container with devices
/// (most of it the Allocate answer): a node's worth is far below this.
pub const MAX_BYTES: u64 = 32 << 20;

/// Why the checkpoint could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The file is there but could not be read.
    #[error("cannot read kubelet's device-manager checkpoint {path}")]
    Read {
        /// The checkpoint.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Something other than a regular file is at the path.
    #[error("kubelet's device-manager checkpoint {path} is not a regular file; not read")]
    NotAFile {
        /// The checkpoint.
        path: PathBuf,
    },
    /// The file is larger than any kubelet writes.
    #[error("kubelet's device-manager checkpoint {path} is over {} MiB; not read", MAX_BYTES >> 20)]
    TooLarge {
        /// The checkpoint.
        path: PathBuf,
    },
    /// The file is not a checkpoint kubelet writes.
    #[error("kubelet's device-manager checkpoint {path} is not in a format kubelet writes")]
    Format {
        /// The checkpoint.
        path: PathBuf,
        /// What the parser said.
        #[source]
        source: serde_json::Error,
    },
}

/// The devices the checkpoint gives to pods whose directory is still there, by resource name.
/// `None` when kubelet's `pods` directory is not visible (the checkpoint then cannot tell a live
/// pod from one that ended); empty when there is no checkpoint.
pub fn held_by_live_pods(kubelet_dir: &Path) -> Result<Option<InUse>, CheckpointError> {
    let pods = kubelet_dir.join(PODS_DIR);
    if !pods.is_dir() {
        return Ok(None);
    }
    let path = kubelet_dir.join(FILE);
    let Some(text) = read(&path)? else {
        return Ok(Some(InUse::new()));
    };
    let checkpoint: Checkpoint =
        serde_json::from_slice(&text).map_err(|source| CheckpointError::Format {
            path: path.clone(),
            source,
        })?;
    let mut held = InUse::new();
    for entry in checkpoint.data.entries.unwrap_or_default() {
        if !is_one_path_component(&entry.pod_uid) || !pods.join(&entry.pod_uid).is_dir() {
            continue;
        }
        let ids = held.entry(entry.resource_name).or_default();
        match entry.device_ids {
            Some(DeviceIds::PerNumaNode(by_node)) => ids.extend(by_node.into_values().flatten()),
            Some(DeviceIds::Flat(list)) => ids.extend(list),
            None => {}
        }
    }
    held.retain(|_, ids| !ids.is_empty());
    Ok(Some(held))
}

/// The file's bytes, `None` when it is not there.
fn read(path: &Path) -> Result<Option<Vec<u8>>, CheckpointError> {
    let read_error = |source| CheckpointError::Read {
        path: path.to_path_buf(),
        source,
    };
    let not_a_file = || CheckpointError::NotAFile {
        path: path.to_path_buf(),
    };
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK).bits())
        .open(path);
    let file = match opened {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        // A symlink (ELOOP with O_NOFOLLOW) is not kubelet's file.
        Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => return Err(not_a_file()),
        Err(e) => return Err(read_error(e)),
    };
    if !file.metadata().map_err(read_error)?.is_file() {
        return Err(not_a_file());
    }
    let mut bytes = Vec::new();
    // One byte over the limit tells a file at the limit from a larger one.
    file.take(MAX_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > MAX_BYTES {
        return Err(CheckpointError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    Ok(Some(bytes))
}

/// A pod UID usable as a directory name under `pods/`: one component, nothing that leads
/// elsewhere.
fn is_one_path_component(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\0'])
}

/// The part of kubelet's checkpoint (`checkpoint.Data`) read here. kubelet's checksum is over
/// Go's printing of the data and is not checked: a checkpoint kubelet is writing is replaced by
/// rename, never seen half-written.
#[derive(Deserialize)]
struct Checkpoint {
    #[serde(rename = "Data")]
    data: Data,
}

#[derive(Deserialize)]
struct Data {
    /// Go writes a nil slice as `null`: kubelet's checkpoint when no pod holds a device.
    #[serde(rename = "PodDeviceEntries", default)]
    entries: Option<Vec<Entry>>,
}

#[derive(Deserialize)]
struct Entry {
    #[serde(rename = "PodUID")]
    pod_uid: String,
    #[serde(rename = "ResourceName")]
    resource_name: String,
    /// Go writes a nil map or slice as `null`.
    #[serde(rename = "DeviceIDs", default)]
    device_ids: Option<DeviceIds>,
}

/// A container's device ids: by NUMA node since kubelet 1.20 (`DevicesPerNUMA`, JSON object keys
/// the node numbers), a plain list before.
#[derive(Deserialize)]
#[serde(untagged)]
enum DeviceIds {
    PerNumaNode(std::collections::BTreeMap<String, Vec<String>>),
    Flat(Vec<String>),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kubelet_dir(checkpoint: Option<&str>, live_pods: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("device-plugins")).unwrap();
        std::fs::create_dir_all(dir.path().join(PODS_DIR)).unwrap();
        for uid in live_pods {
            std::fs::create_dir_all(dir.path().join(PODS_DIR).join(uid)).unwrap();
        }
        if let Some(text) = checkpoint {
            std::fs::write(dir.path().join(FILE), text).unwrap();
        }
        dir
    }

    fn ids(held: &InUse, resource: &str) -> Vec<String> {
        held.get(resource)
            .map(|ids| ids.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// What kubelet 1.20 and later writes: device ids by NUMA node, an `AllocResp` per entry.
    /// An init container's devices count as its pod's; a pod that ended (no directory) holds
    /// nothing, whatever the checkpoint still says.
    #[test]
    fn entries_of_live_pods_count_init_containers_included() {
        let checkpoint = r#"{"Data":{"PodDeviceEntries":[
            {"PodUID":"uid-live","ContainerName":"setup","ResourceName":"intel.com/a","DeviceIDs":{"0":["0000:3b:02.0","0000:3b:02.1"]},"AllocResp":"CgQKAkFCEgA="},
            {"PodUID":"uid-live","ContainerName":"main","ResourceName":"intel.com/a","DeviceIDs":{"0":["0000:3b:02.0"],"-1":["0000:3b:02.4"]},"AllocResp":""},
            {"PodUID":"uid-ended","ContainerName":"main","ResourceName":"intel.com/a","DeviceIDs":{"1":["0000:af:02.0"]},"AllocResp":""}
          ],"RegisteredDevices":{"intel.com/a":["0000:3b:02.0"]}},"Checksum":1234567890,"BootID":"x"}"#;
        let dir = kubelet_dir(Some(checkpoint), &["uid-live"]);
        let held = held_by_live_pods(dir.path()).unwrap().unwrap();
        assert_eq!(
            ids(&held, "intel.com/a"),
            ["0000:3b:02.0", "0000:3b:02.1", "0000:3b:02.4"]
        );
    }

    /// Before kubelet 1.20 an entry's ids were a plain list.
    #[test]
    fn the_flat_list_of_older_kubelets_is_read() {
        let checkpoint = r#"{"Data":{"PodDeviceEntries":[
            {"PodUID":"p","ContainerName":"c","ResourceName":"intel.com/a","DeviceIDs":["x","y"],"AllocResp":null},
            {"PodUID":"p","ContainerName":"d","ResourceName":"intel.com/b","DeviceIDs":null,"AllocResp":null}
          ],"RegisteredDevices":null},"Checksum":1}"#;
        let dir = kubelet_dir(Some(checkpoint), &["p"]);
        let held = held_by_live_pods(dir.path()).unwrap().unwrap();
        assert_eq!(ids(&held, "intel.com/a"), ["x", "y"]);
    }

    /// A UID that would name a directory elsewhere (the checkpoint is kubelet's, but read as
    /// hostile like every input) never makes its devices held.
    #[test]
    fn a_pod_uid_that_leaves_the_pods_directory_is_ignored() {
        let checkpoint = r#"{"Data":{"PodDeviceEntries":[
            {"PodUID":"..","ResourceName":"intel.com/a","DeviceIDs":{"0":["up"]}},
            {"PodUID":".","ResourceName":"intel.com/a","DeviceIDs":{"0":["here"]}},
            {"PodUID":"","ResourceName":"intel.com/a","DeviceIDs":{"0":["empty"]}},
            {"PodUID":"uid/../..","ResourceName":"intel.com/a","DeviceIDs":{"0":["nested"]}}
          ]}}"#;
        let dir = kubelet_dir(Some(checkpoint), &["uid"]);
        let held = held_by_live_pods(dir.path()).unwrap().unwrap();
        assert!(held.is_empty(), "{held:?}");
    }

    /// No `pods` directory: which pods live is unknown, so the checkpoint is not used (its
    /// entries of pods that ended would hold their devices for good). No checkpoint: nothing held.
    #[test]
    fn without_the_pods_directory_or_a_checkpoint() {
        let dir = kubelet_dir(Some(r#"{"Data":{"PodDeviceEntries":[]}}"#), &[]);
        std::fs::remove_dir(dir.path().join(PODS_DIR)).unwrap();
        assert!(held_by_live_pods(dir.path()).unwrap().is_none());
        let dir = kubelet_dir(None, &["p"]);
        assert!(held_by_live_pods(dir.path()).unwrap().unwrap().is_empty());
    }

    /// What kubelet writes when no pod holds a device: Go's nil slice and map are `null`.
    #[test]
    fn kubelets_checkpoint_without_pods_holds_nothing() {
        let checkpoint = r#"{"Data":{"PodDeviceEntries":null,"RegisteredDevices":{"intel.com/a":["x"]}},"Checksum":2891236711}"#;
        let dir = kubelet_dir(Some(checkpoint), &["p"]);
        assert!(held_by_live_pods(dir.path()).unwrap().unwrap().is_empty());
    }

    /// A FIFO or a symlink put in the checkpoint's place (any device plugin can write
    /// `device-plugins/`) is refused at once: opening a FIFO used to wait for a writer for good,
    /// and the agent's applies with it.
    #[test]
    fn a_fifo_or_symlink_in_its_place_is_refused_without_waiting() {
        let dir = kubelet_dir(None, &["p"]);
        nix::unistd::mkfifo(
            &dir.path().join(FILE),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        let e = held_by_live_pods(dir.path()).unwrap_err();
        assert!(matches!(e, CheckpointError::NotAFile { .. }), "{e:?}");
        std::fs::remove_file(dir.path().join(FILE)).unwrap();
        let real = dir.path().join("elsewhere");
        std::fs::write(&real, r#"{"Data":{"PodDeviceEntries":[]}}"#).unwrap();
        std::os::unix::fs::symlink(&real, dir.path().join(FILE)).unwrap();
        let e = held_by_live_pods(dir.path()).unwrap_err();
        assert!(matches!(e, CheckpointError::NotAFile { .. }), "{e:?}");
    }

    /// A file kubelet would not write is an error naming it; so is one far larger than any.
    #[test]
    fn a_damaged_or_oversized_checkpoint_is_an_error_naming_it() {
        for text in ["{", r#"{"Data":{"PodDeviceEntries":[{"PodUID":1}]}}"#, "[]"] {
            let dir = kubelet_dir(Some(text), &["p"]);
            let e = held_by_live_pods(dir.path()).unwrap_err();
            assert!(matches!(e, CheckpointError::Format { .. }), "{text}: {e:?}");
            assert!(e.to_string().contains("kubelet_internal_checkpoint"), "{e}");
        }
        let dir = kubelet_dir(None, &["p"]);
        let file = std::fs::File::create(dir.path().join(FILE)).unwrap();
        file.set_len(MAX_BYTES + 1).unwrap();
        let e = held_by_live_pods(dir.path()).unwrap_err();
        assert!(matches!(e, CheckpointError::TooLarge { .. }), "{e:?}");
    }
}
