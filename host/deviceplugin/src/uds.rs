//! gRPC over unix sockets: a tonic client channel to a socket path, and binding a listener
//! (removing a stale socket file first, as kubelet and upstream do). Pool servers get their
//! connections through the [`Listen`] seam, so a test can make a server's accept loop fail and
//! check that the server is restarted, and track them ([`Connections`]) so that a stop can end
//! them.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd as _, RawFd};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{UnixListener, UnixStream};
use tokio_stream::Stream;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::server::Connected;
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

/// The connections one server instance accepted and that are still open, so that a stop can end
/// them.
///
/// tonic runs each connection in a task of its own: aborting the server's task after its
/// graceful-stop timeout leaves a connection whose client stopped reading (a wedged kubelet, a
/// closed HTTP/2 window) running for good, holding its socket, its ListAndWatch stream and the
/// pool's state. [`Connections::end_all`] shuts the sockets down instead, which wakes those tasks
/// with an end of stream.
#[derive(Clone, Default)]
pub struct Connections(Arc<Mutex<OpenConnections>>);

#[derive(Default)]
struct OpenConnections {
    next: u64,
    open: HashMap<u64, RawFd>,
}

impl Connections {
    /// `stream`, tracked until it is dropped.
    pub fn track(&self, stream: UnixStream) -> TrackedStream {
        let mut open = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let key = open.next;
        open.next += 1;
        open.open.insert(key, stream.as_raw_fd());
        TrackedStream {
            stream,
            key,
            connections: self.clone(),
        }
    }

    /// Shuts down (both directions) every connection still open; returns how many there were.
    pub fn end_all(&self) -> usize {
        let open = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        for &fd in open.open.values() {
            // The descriptor is open: a stream leaves the map (under this lock) before it closes.
            let _ = nix::sys::socket::shutdown(fd, nix::sys::socket::Shutdown::Both);
        }
        open.open.len()
    }
}

/// An accepted connection that [`Connections`] can end.
pub struct TrackedStream {
    stream: UnixStream,
    key: u64,
    connections: Connections,
}

impl Drop for TrackedStream {
    fn drop(&mut self) {
        // Before `stream` closes its descriptor (fields drop after this), so `end_all` never
        // shuts down a descriptor number the process has reused.
        self.connections
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .open
            .remove(&self.key);
    }
}

impl AsyncRead for TrackedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TrackedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

impl Connected for TrackedStream {
    type ConnectInfo = <UnixStream as Connected>::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

/// A channel to the gRPC server on the unix socket `path`. The connection is made lazily by the
/// first call, and re-made by tonic when it breaks.
pub fn channel(path: &Path) -> Channel {
    channel_with(endpoint(), path)
}

/// The endpoint [`channel`] uses, to configure (HTTP/2 windows, timeouts) for [`channel_with`].
/// Its URI is required by tonic but unused: the connector ignores it.
pub fn endpoint() -> Endpoint {
    Endpoint::from_static("http://[::1]:50051")
}

/// [`channel`] with the settings of `endpoint` (from [`endpoint`]).
pub fn channel_with(endpoint: Endpoint, path: &Path) -> Channel {
    let path = path.to_path_buf();
    endpoint.connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
        let path = path.clone();
        async move { Ok::<_, io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
    }))
}

/// A random number drawn once per process (std's hash keys are random per process).
fn instance_token() -> u32 {
    use std::hash::{BuildHasher as _, Hasher as _};
    static TOKEN: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *TOKEN.get_or_init(|| {
        let hash = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        // The high and low halves folded: any 32 bits of a random 64 will do.
        (hash ^ (hash >> 32)) as u32
    })
}

/// The longest path a client can connect to: `sun_path` holds 108 bytes on Linux, the last one the
/// terminating NUL.
pub const MAX_SOCKET_PATH: usize = 107;

/// Whether a client can connect to a socket at `path` by that path. A longer one can still be
/// bound (under a short name, renamed into place), and a kubelet that sees the directory under a
/// shorter path (the agent's `--kubelet-dir` a host mount such as `/host/var/lib/kubelet`) can
/// still connect to it.
pub fn fits_socket_address(path: &Path) -> bool {
    path.as_os_str().len() <= MAX_SOCKET_PATH
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
    // 107 bytes). The pid alone does not tell two instances apart: each runs as pid 1, or the
    // same low pid, in its own container's pid namespace, and during a rolling update both bind
    // the same pools' sockets; one would remove the other's temporary socket as a leftover, or
    // rename it into place as its own.
    let temporary = dir.join(format!(
        ".{}-{:08x}-{}",
        std::process::id(),
        instance_token(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    // A leftover of a crashed earlier bind with the same name.
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
    use super::{MAX_SOCKET_PATH, bind, fits_socket_address};

    /// [`fits_socket_address`] is exactly what a client can connect to: the longest path that fits
    /// is bound and connected to; one byte more is still bound (by the rename), but no client can
    /// connect to it by that path.
    #[tokio::test]
    async fn a_socket_path_fits_a_socket_address_or_no_client_connects() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().as_os_str().len() + 1;
        assert!(base + 20 < MAX_SOCKET_PATH, "temporary directory too deep");
        let name = |length: usize| format!("intel.com_{}.sock", "x".repeat(length - base - 15));
        let fits = dir.path().join(name(MAX_SOCKET_PATH));
        assert_eq!(fits.as_os_str().len(), MAX_SOCKET_PATH);
        assert!(fits_socket_address(&fits));
        let _listener = bind(&fits).unwrap();
        std::os::unix::net::UnixStream::connect(&fits).unwrap();

        let too_long = dir.path().join(name(MAX_SOCKET_PATH + 1));
        assert!(!fits_socket_address(&too_long));
        let _listener = bind(&too_long).unwrap();
        std::os::unix::net::UnixStream::connect(&too_long).unwrap_err();
    }

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

    /// Another instance with the same pid (pid 1 in its own container, during a rolling update)
    /// binding at the same moment: its temporary socket is not ours to remove. Named by pid and
    /// counter alone, the two instances' temporary names were the same, and ours removed theirs.
    #[tokio::test]
    async fn another_instances_temporary_socket_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("intel.com_x.sock");
        // What the other instance would have bound by now under the pid-and-counter names.
        let theirs: Vec<_> = (0..64)
            .map(|n| dir.path().join(format!(".{}-{n}", std::process::id())))
            .collect();
        for name in &theirs {
            std::fs::write(name, "theirs").unwrap();
        }
        let _ours = bind(&path).unwrap();
        for name in &theirs {
            assert!(name.exists(), "{} was removed", name.display());
        }
    }
}
