//! gRPC over unix sockets: a tonic client channel to a socket path, and binding a listener
//! (removing a stale socket file first, as kubelet and upstream do). Pool servers get their
//! connections through the [`Listen`] seam, so a test can make a server's accept loop fail and
//! check that the server is restarted.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;

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
    /// A stale file at the socket path could not be removed.
    #[error("cannot remove the stale socket {path}")]
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

/// Binds a listener at `path`, creating its directory and removing a stale socket first.
pub fn bind(path: &Path) -> Result<UnixListener, BindError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| BindError::Dir {
            path: dir.to_path_buf(),
            source,
        })?;
    }
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
    UnixListener::bind(path).map_err(|source| BindError::Bind {
        path: path.to_path_buf(),
        source,
    })
}
