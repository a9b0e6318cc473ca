//! Unix-socket plumbing for tonic: a client channel to a path and a bound listener.

use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::{UnixListener, UnixStream};
use tonic::transport::{Channel, Endpoint, Uri};

/// A channel to the gRPC server on `path`, connected now, as kubelet dials a plugin (grpc
/// `WithBlock`): a socket that is missing or refuses connections is tried again until `timeout`,
/// then it is an error. The channel uses the connection made here (a plugin's listener sees one
/// connection, as with kubelet) and reconnects by itself if it breaks.
pub(crate) async fn dial(path: &Path, timeout: Duration) -> Result<Channel, String> {
    let deadline = tokio::time::Instant::now() + timeout;
    let first = loop {
        match UnixStream::connect(path).await {
            Ok(stream) => break stream,
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(format!(
                    "cannot connect to {} within {timeout:?}: {e}",
                    path.display()
                ));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    let first = Arc::new(Mutex::new(Some(first)));
    let owned = path.to_path_buf();
    let endpoint = Endpoint::from_static("http://[::1]:50051");
    let connect = endpoint.connect_with_connector(tower::service_fn(move |_: Uri| {
        let first = first.lock().unwrap_or_else(PoisonError::into_inner).take();
        let path = owned.clone();
        async move {
            let stream = match first {
                Some(stream) => stream,
                None => UnixStream::connect(path).await?,
            };
            Ok::<_, io::Error>(TokioIo::new(stream))
        }
    }));
    match tokio::time::timeout(timeout, connect).await {
        Ok(Ok(channel)) => Ok(channel),
        Ok(Err(e)) => Err(format!("cannot connect to {}: {e}", path.display())),
        Err(_) => Err(format!(
            "cannot connect to {} within {timeout:?}",
            path.display()
        )),
    }
}

/// Binds `path`, replacing a stale socket file.
pub(crate) fn bind(path: &Path) -> io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    UnixListener::bind(path)
}
