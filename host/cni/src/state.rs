//! The plugin's state on disk, in sriov-cni's layout so either plugin can DEL what the other ADDed:
//!
//! - `<dir>/<containerID>-<ifname>`: the attachment cache (NetConf + `OrigVfState`, `Master`, `VFID`);
//! - `<dir>/pci/<pci>`: the allocation marker, holding the pod's netns path;
//! - `<dir>/pci/vf_lock/<pci>.lock`: the per-VF lock file (`flock`).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};
use serde_json::Value;
use thiserror::Error;

/// Why the state directory could not be used.
#[derive(Debug, Error)]
pub enum StateError {
    /// A file or directory operation failed.
    #[error("cannot {what} {path}")]
    Io {
        /// What was attempted.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Another operation holds the VF's lock for longer than we wait.
    #[error(
        "VF {pci} is locked by another CNI operation (waited {waited:?} for {path}); try again later"
    )]
    Locked {
        /// The VF.
        pci: String,
        /// The lock file.
        path: PathBuf,
        /// How long we waited.
        waited: Duration,
    },
    /// A cache file is not JSON.
    #[error("the cache file {path} is corrupt: {source}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The decoder's complaint.
        #[source]
        source: serde_json::Error,
    },
}

/// A held per-VF lock; released when dropped (or when the process exits).
#[derive(Debug)]
pub struct VfLock {
    _lock: Flock<File>,
}

/// The state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StateError + 'a {
    move |source| StateError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

/// The name of an attachment's cache file, as sriov-cni names it: `<containerID>-<ifname>`.
pub fn cache_name(container_id: &str, ifname: &str) -> String {
    format!("{container_id}-{ifname}")
}

impl StateDir {
    /// The state directory at `root` (created on first write).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        StateDir { root: root.into() }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The cache file of an attachment.
    pub fn cache_path(&self, container_id: &str, ifname: &str) -> PathBuf {
        self.root.join(cache_name(container_id, ifname))
    }

    fn marker_path(&self, pci: &str) -> PathBuf {
        self.root.join("pci").join(pci)
    }

    fn ensure_dir(path: &Path) -> Result<(), StateError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
            .map_err(io_err("create directory", path))
    }

    /// Takes the VF's lock, waiting up to `timeout`.
    pub fn lock(&self, pci: &str, timeout: Duration) -> Result<VfLock, StateError> {
        let dir = self.root.join("pci").join("vf_lock");
        Self::ensure_dir(&dir)?;
        let path = dir.join(format!("{pci}.lock"));
        let start = Instant::now();
        loop {
            let file = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .mode(0o600)
                .open(&path)
                .map_err(io_err("open lock file", &path))?;
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => return Ok(VfLock { _lock: lock }),
                Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                    if start.elapsed() >= timeout {
                        return Err(StateError::Locked {
                            pci: pci.to_owned(),
                            path,
                            waited: start.elapsed(),
                        });
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((_, errno)) => {
                    return Err(StateError::Io {
                        what: "lock",
                        path,
                        source: errno.into(),
                    });
                }
            }
        }
    }

    /// Writes `path` atomically with mode 0600 (a crash never leaves half a file behind).
    fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
        if let Some(parent) = path.parent() {
            Self::ensure_dir(parent)?;
        }
        let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io_err("create", &tmp))?;
        file.write_all(bytes).map_err(io_err("write", &tmp))?;
        // No fsync: the state only has to survive a crash of this process (the page cache
        // does), not of the node: a reboot takes every pod netns and VF setting with it. An
        // fsync costs tens of milliseconds on the pod start path.
        fs::rename(&tmp, path).map_err(io_err("rename into place", path))
    }

    fn remove(path: &Path) -> Result<(), StateError> {
        match fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err("remove", path)(e)),
            _ => Ok(()),
        }
    }

    /// Writes an attachment's cache.
    pub fn write_cache(
        &self,
        container_id: &str,
        ifname: &str,
        value: &Value,
    ) -> Result<(), StateError> {
        self.write_cache_named(&cache_name(container_id, ifname), value)
    }

    /// Reads an attachment's cache, `None` when there is none.
    pub fn read_cache(
        &self,
        container_id: &str,
        ifname: &str,
    ) -> Result<Option<Value>, StateError> {
        Self::read_json(&self.cache_path(container_id, ifname))
    }

    fn read_json(path: &Path) -> Result<Option<Value>, StateError> {
        match fs::read(path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|source| StateError::Corrupt {
                        path: path.to_owned(),
                        source,
                    })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("read", path)(e)),
        }
    }

    /// Removes an attachment's cache (absent is fine).
    pub fn remove_cache(&self, container_id: &str, ifname: &str) -> Result<(), StateError> {
        Self::remove(&self.cache_path(container_id, ifname))
    }

    /// The netns path a VF is allocated to, if any.
    pub fn marker(&self, pci: &str) -> Result<Option<String>, StateError> {
        let path = self.marker_path(pci);
        match fs::read_to_string(&path) {
            Ok(s) => Ok(Some(s.trim().to_owned())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("read", &path)(e)),
        }
    }

    /// Marks a VF allocated to `netns`.
    pub fn write_marker(&self, pci: &str, netns: &str) -> Result<(), StateError> {
        Self::write_atomic(&self.marker_path(pci), netns.as_bytes())
    }

    /// Clears a VF's allocation marker.
    pub fn remove_marker(&self, pci: &str) -> Result<(), StateError> {
        Self::remove(&self.marker_path(pci))
    }

    /// Every cache file name (`<containerID>-<ifname>`) in the directory.
    pub fn cache_names(&self) -> Result<Vec<String>, StateError> {
        let entries = match fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("list", &self.root)(e)),
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let is_file = entry.file_type().map(|t| t.is_file()).unwrap_or(false);
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if is_file && !name.contains(".tmp.") {
                out.push(name);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Reads a cache file by its name.
    pub fn read_cache_named(&self, name: &str) -> Result<Option<Value>, StateError> {
        Self::read_json(&self.root.join(name))
    }

    /// Writes a cache file by its name.
    pub fn write_cache_named(&self, name: &str, value: &Value) -> Result<(), StateError> {
        let path = self.root.join(name);
        let bytes = serde_json::to_vec(value).map_err(|e| StateError::Corrupt {
            path: path.clone(),
            source: e,
        })?;
        Self::write_atomic(&path, &bytes)
    }

    /// Removes a cache file by its name.
    pub fn remove_cache_named(&self, name: &str) -> Result<(), StateError> {
        Self::remove(&self.root.join(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_is_exclusive_and_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        let held = state.lock("0000:3b:00.2", Duration::from_secs(1)).unwrap();
        let err = state
            .lock("0000:3b:00.2", Duration::from_millis(30))
            .unwrap_err();
        assert!(matches!(err, StateError::Locked { .. }), "{err}");
        // A different VF is not blocked.
        state
            .lock("0000:3b:00.3", Duration::from_millis(30))
            .unwrap();
        drop(held);
        state
            .lock("0000:3b:00.2", Duration::from_millis(30))
            .unwrap();
    }

    #[test]
    fn cache_and_marker_round_trip_with_private_modes() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path().join("sriov"));
        assert!(state.read_cache("c1", "net1").unwrap().is_none());
        state
            .write_cache(
                "c1",
                "net1",
                &serde_json::json!({"deviceID": "0000:3b:00.2"}),
            )
            .unwrap();
        assert_eq!(
            state.read_cache("c1", "net1").unwrap().unwrap()["deviceID"],
            "0000:3b:00.2"
        );
        let mode = fs::metadata(state.cache_path("c1", "net1"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(state.cache_names().unwrap(), vec!["c1-net1".to_owned()]);
        state.write_marker("0000:3b:00.2", "/run/netns/x").unwrap();
        assert_eq!(
            state.marker("0000:3b:00.2").unwrap().as_deref(),
            Some("/run/netns/x")
        );
        state.remove_marker("0000:3b:00.2").unwrap();
        state.remove_marker("0000:3b:00.2").unwrap();
        state.remove_cache("c1", "net1").unwrap();
        assert!(state.read_cache("c1", "net1").unwrap().is_none());
        fs::write(state.cache_path("c2", "net1"), b"{not json").unwrap();
        assert!(matches!(
            state.read_cache("c2", "net1"),
            Err(StateError::Corrupt { .. })
        ));
    }
}
