//! gRPC over unix sockets: a tonic client channel to a socket path, and binding a listener
//! (removing a stale socket file first, as kubelet and upstream do). Pool servers get their
//! connections through the [`Listen`] seam, so a test can make a server's accept loop fail and
//! check that the server is restarted.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};

use hyper_util::rt::TokioIo;
use tokio::net::{UnixListener, UnixStream};
use tokio_stream::Stream;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::{Channel, Endpoint, Uri};

/// The connections one server instance accepts.
pub type Incoming = Pin<Box<dyn Stream<Item = io::Result<UnixStream>> + Send>>;

/// Where a pool server's connections come from. The agent uses [`UnixSocket`]; tests pass one
/// whose accept loop fails, to check that the server is restarted (upstream #648).
pub trait Listen: Send + Sync + std::fmt::Debug + 'static {
    /// Binds `path` (replacing a stale socket) and returns the connections made to it.
    fn bind(&self, path: &Path) -> Result<Incoming, BindError>;
}

/// The real [`Listen`]: a unix socket at the path ([`bind`]).
#[derive(Debug, Default, Clone, Copy)]
pub struct UnixSocket;

impl Listen for UnixSocket {
    fn bind(&self, path: &Path) -> Result<Incoming, BindError> {
        Ok(Box::pin(UnixListenerStream::new(bind(path)?)))
    }
}

/// Why a socket could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// The directory could not be created.
    #[error("cannot create the socket directory {path}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The socket could not be put in place of whatever is at the path.
    #[error("cannot put the socket in place at {path}")]
    Stale {
        /// The socket path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// `bind` failed.
    #[error("cannot listen on {path}")]
    Bind {
        /// The socket path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// A channel to the gRPC server on the unix socket `path`. The connection is made lazily by the
/// first call, and re-made by tonic when it breaks.
pub fn channel(path: &Path) -> Channel {
    let path = path.to_path_buf();
    // The URI is required by the API but unused: the connector ignores it.
    Endpoint::from_static("http://[::1]:50051").connect_with_connector_lazy(tower::service_fn(
        move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        },
    ))
}

/// Binds a listener at `path`, creating its directory; a stale socket there is replaced.
///
/// The socket is bound under a hidden temporary name next to `path` and renamed into place, so
/// the path never goes missing: another process watching it (a second agent instance during a
/// rolling update, which re-binds its own socket when the file is deleted) never sees a deletion
/// to react to. kubelet's plugin watcher ignores hidden files and sees the rename as a new socket.
pub fn bind(path: &Path) -> Result<UnixListener, BindError> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|source| BindError::Dir {
        path: dir.to_path_buf(),
        source,
    })?;
    let bind_error = |source| BindError::Bind {
        path: path.to_path_buf(),
        source,
    };
    // Short, so that it fits wherever the socket's own name fits (a unix socket path has at most
    // 107 bytes).
    let temporary = dir.join(format!(
        ".{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    // A leftover of a crashed earlier bind with the same name (same pid after a restart).
    let _ = std::fs::remove_file(&temporary);
    match UnixListener::bind(&temporary) {
        Ok(listener) => {
            if let Err(source) = std::fs::rename(&temporary, path) {
                let _ = std::fs::remove_file(&temporary);
                return Err(BindError::Stale {
                    path: path.to_path_buf(),
                    source,
                });
            }
            Ok(listener)
        }
        // The temporary name did not fit (the socket's own name is shorter): bind in place.
        Err(_) => {
            match std::fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(BindError::Stale {
                        path: path.to_path_buf(),
                        source,
                    });
                }
            }
            UnixListener::bind(path).map_err(bind_error)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::bind;

    /// A socket replaces whatever is at its path, by a rename: no temporary file is left, and a
    /// second bind of the same path (another instance) takes it over.
    #[tokio::test]
    async fn bind_replaces_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/intel.com_x.sock");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "stale").unwrap();
        let _first = bind(&path).unwrap();
        let first = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&path).unwrap());
        let _second = bind(&path).unwrap();
        let second = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&path).unwrap());
        assert_ne!(first, second);
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["intel.com_x.sock"]);
    }
}
