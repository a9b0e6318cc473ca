//! Registration with kubelet, in both modes kubelet supports (upstream `pkg/resources/server.go`):
//!
//! - **plugin watcher**: when `<kubelet-dir>/plugins_registry` exists, the pool's socket lives there
//!   and also serves `pluginregistration.v1.Registration`; kubelet finds the socket, calls `GetInfo`
//!   and reports back with `NotifyRegistrationStatus`. kubelet does not try a socket again once its
//!   registration has failed (only one that failed validation, `GetInfo`, is retried with backoff):
//!   the pool's supervisor serves a new one after a pause ([`crate::server`]).
//! - **legacy**: otherwise the socket lives in `<kubelet-dir>/device-plugins/` and the plugin calls
//!   `Register` on `device-plugins/kubelet.sock`, retrying with backoff until kubelet accepts.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use vfpool_proto::deviceplugin::v1beta1 as api;
use vfpool_proto::deviceplugin::v1beta1::registration_client::RegistrationClient;
use vfpool_proto::pluginregistration::v1 as reg;

use crate::logs::Took;
use vfpool_policy::error_chain;

use crate::server::{Backoff, PoolState};
use crate::uds;

/// Where sockets live and how pools register.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// kubelet's plugin watcher (`plugins_registry`).
    PluginWatcher {
        /// `<kubelet-dir>/plugins_registry`.
        dir: PathBuf,
    },
    /// `Register` on `device-plugins/kubelet.sock`.
    Legacy {
        /// `<kubelet-dir>/device-plugins`.
        dir: PathBuf,
    },
}

impl Mode {
    /// The plugin watcher when `<kubelet_dir>/plugins_registry` is a directory, else legacy.
    pub fn detect(kubelet_dir: &Path) -> Mode {
        let registry = kubelet_dir.join("plugins_registry");
        if registry.is_dir() {
            Mode::PluginWatcher { dir: registry }
        } else {
            Mode::Legacy {
                dir: kubelet_dir.join("device-plugins"),
            }
        }
    }

    /// The mode as a log field (`plugin-watcher`, `legacy`): the `Debug` form
    /// (`Legacy { dir: "…" }`) is Rust syntax, not something to grep a log for.
    pub fn name(&self) -> &'static str {
        match self {
            Mode::PluginWatcher { .. } => "plugin-watcher",
            Mode::Legacy { .. } => "legacy",
        }
    }

    /// The directory the pool sockets live in.
    pub fn dir(&self) -> &Path {
        match self {
            Mode::PluginWatcher { dir } | Mode::Legacy { dir } => dir,
        }
    }

    /// The socket of `resource_name`: `<prefix>_<name>.sock`.
    pub fn socket(&self, resource_name: &str) -> PathBuf {
        self.dir().join(socket_name(resource_name))
    }

    /// kubelet's registration socket (legacy mode only).
    pub fn kubelet_socket(&self) -> Option<PathBuf> {
        match self {
            Mode::Legacy { dir } => Some(dir.join(api::KUBELET_SOCKET)),
            Mode::PluginWatcher { .. } => None,
        }
    }
}

/// `<prefix>_<name>.sock` for `prefix/name`.
pub fn socket_name(resource_name: &str) -> String {
    format!("{}.sock", resource_name.replace('/', "_"))
}

/// The options every pool registers with: preferred allocation available, no PreStartContainer.
pub fn options() -> api::DevicePluginOptions {
    api::DevicePluginOptions {
        pre_start_required: false,
        get_preferred_allocation_available: true,
    }
}

/// The plugin-watcher `GetInfo` answer.
///
/// The endpoint is left empty: kubelet then dials the socket path its plugin watcher found
/// (`operation_generator.go`: an empty `Endpoint` becomes the socket path). The agent's own path
/// to the socket is the wrong thing to send when the agent sees the kubelet directory somewhere
/// else than kubelet does (`--kubelet-dir` pointing at a host mount inside a container): kubelet
/// would dial a path that does not exist on the host and fail the registration.
pub fn plugin_info(state: &PoolState) -> reg::PluginInfo {
    reg::PluginInfo {
        r#type: api::DEVICE_PLUGIN_TYPE.to_string(),
        name: state.resource_name.clone(),
        endpoint: String::new(),
        supported_versions: vec![api::VERSION.to_string()],
    }
}

/// Why a `Register` call failed.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// kubelet's socket is not there (kubelet not running or restarting).
    #[error("kubelet's registration socket {0} does not exist")]
    NoSocket(PathBuf),
    /// The socket is there but the call got no answer from kubelet (nobody listening: kubelet
    /// restarting or wedged, a socket left behind; or the connection broke): not a refusal.
    #[error("no answer from kubelet at {socket}: {reason}")]
    Unreachable {
        /// kubelet's registration socket.
        socket: PathBuf,
        /// What the connection said (refused, reset, ...).
        reason: String,
    },
    /// kubelet answered with an error (version, resource name, duplicate): its message, and the
    /// gRPC code when it says more than "unknown" (kubelet's own refusals do not).
    #[error("kubelet refused the registration: {0}")]
    Refused(String),
    /// kubelet did not answer in time.
    #[error("kubelet did not answer Register within {}", Took(*.0))]
    Timeout(Duration),
}

/// One `Register` call.
pub async fn register_once(state: &PoolState) -> Result<(), RegisterError> {
    let Some(kubelet) = state.mode.kubelet_socket() else {
        return Ok(());
    };
    if !kubelet.exists() {
        return Err(RegisterError::NoSocket(kubelet));
    }
    let mut client = RegistrationClient::new(uds::channel(&kubelet));
    let endpoint = state
        .socket
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let request = api::RegisterRequest {
        version: api::VERSION.to_string(),
        endpoint,
        resource_name: state.resource_name.clone(),
        options: Some(options()),
    };
    tokio::time::timeout(REGISTER_TIMEOUT, client.register(request))
        .await
        .map_err(|_| RegisterError::Timeout(REGISTER_TIMEOUT))?
        .map_err(|status| failed_call(&kubelet, &status))?;
    Ok(())
}

/// A failed `Register` call: no answer from kubelet (tonic reports a failed connection or a
/// broken stream as a status with the transport's or HTTP/2's error as its source; a status
/// decoded from kubelet's answer has none), or kubelet's answer.
fn failed_call(socket: &Path, status: &tonic::Status) -> RegisterError {
    if let Some(source) = std::error::Error::source(status) {
        return RegisterError::Unreachable {
            socket: socket.to_path_buf(),
            reason: error_chain(source),
        };
    }
    if status.code() == tonic::Code::Unavailable {
        return RegisterError::Unreachable {
            socket: socket.to_path_buf(),
            reason: status.message().to_string(),
        };
    }
    RegisterError::Refused(match status.code() {
        tonic::Code::Unknown => status.message().to_string(),
        code => format!("{} ({code:?})", status.message()),
    })
}

/// How long a `Register` call may take. kubelet answers only after it has dialled the plugin's
/// socket back (a dial it allows 10 s) and asked for its options: a shorter wait gives up on a slow
/// kubelet that is still completing the call, and the retry can leave kubelet holding a second
/// client for the resource.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(15);

/// How long registration may keep failing, by default, before it is logged as an error (once,
/// naming kubelet's socket; [`crate::PluginConfig::registration_error_after`]). A kubelet restart
/// takes seconds, a slow one a minute or two: five minutes without kubelet is a kubelet that is not
/// coming, most often because `--kubelet-dir` is not kubelet's directory. A time rather than a
/// number of attempts, as the backoff makes attempts uneven. Before it, a failure is a warning at
/// the first and every tenth attempt (about every 50 s at the 5 s backoff cap); after it, at every
/// sixtieth (about every 5 minutes), so the log still shows the agent waiting.
pub const ESCALATE_AFTER: Duration = Duration::from_secs(300);

/// A registration failing since `since`, `attempts` times so far; `escalated` once the error is
/// logged.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Failing {
    since: Instant,
    attempts: u32,
    escalated: bool,
}

/// Registers, retrying with backoff (100 ms doubling to 5 s) until kubelet accepts.
pub async fn register_with_retry(state: Arc<PoolState>) {
    let mut backoff = Backoff::new(Duration::from_secs(5));
    loop {
        let result = register_once(&state).await;
        let done = result.is_ok();
        record(&state, result);
        if done {
            return;
        }
        tokio::time::sleep(backoff.next()).await;
    }
}

/// Logs a `Register` outcome and keeps it in the pool's state.
fn record(state: &PoolState, result: Result<(), RegisterError>) {
    let mut failing = state
        .registration_failing
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let status = match result {
        Ok(()) => {
            match failing.take() {
                None => tracing::info!(resource = %state.resource_name, "registered with kubelet"),
                Some(failed) => tracing::info!(
                    resource = %state.resource_name,
                    attempts = failed.attempts + 1,
                    failing_for = %Took(failed.since.elapsed()),
                    "registered with kubelet after failed attempts"
                ),
            }
            Ok(())
        }
        Err(e) => {
            let text = error_chain(&e);
            let failed = failing.get_or_insert(Failing {
                since: Instant::now(),
                attempts: 0,
                escalated: false,
            });
            failed.attempts += 1;
            let (attempts, failing_for) = (failed.attempts, failed.since.elapsed());
            if !failed.escalated && failing_for >= state.registration_error_after {
                failed.escalated = true;
                escalate(state, &e, attempts, failing_for);
            } else if attempts == 1
                || attempts.is_multiple_of(if failed.escalated { 60 } else { 10 })
            {
                tracing::warn!(
                    resource = %state.resource_name,
                    attempts,
                    failing_for = %Took(failing_for),
                    error = %text,
                    "registration failed; retrying"
                );
            }
            Err(text)
        }
    };
    drop(failing);
    state.set_registered(status);
}

/// The one error of a registration that has failed for [`ESCALATE_AFTER`] (by default): unlike
/// the warnings, which a kubelet restart causes too, it says that kubelet is not coming back by
/// itself.
fn escalate(state: &PoolState, error: &RegisterError, attempts: u32, failing_for: Duration) {
    let socket = state.mode.kubelet_socket().unwrap_or_default();
    let what = match error {
        RegisterError::NoSocket(_) => {
            "kubelet's registration socket has not appeared; is --kubelet-dir right? kubelet's default is /var/lib/kubelet (still retrying)"
        }
        RegisterError::Unreachable { .. } => {
            "no kubelet answers on its registration socket; is kubelet running, and is --kubelet-dir right? kubelet's default is /var/lib/kubelet (still retrying)"
        }
        RegisterError::Refused(_) | RegisterError::Timeout(_) => {
            "kubelet keeps refusing or not answering the registration (still retrying)"
        }
    };
    tracing::error!(
        resource = %state.resource_name,
        socket = %socket.display(),
        attempts,
        failing_for = %Took(failing_for),
        error = %error_chain(error),
        "{what}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket with no kubelet behind it (left behind, or kubelet restarting) is "no answer from
    /// kubelet at …", not a refusal: it used to read "kubelet refused the registration" with
    /// tonic's Debug text, which sent people to kubelet's resource-name checks.
    #[tokio::test]
    async fn no_kubelet_on_the_socket_is_not_a_refusal() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("kubelet.sock");
        // Bound, then closed: the file stays, nobody listens.
        drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
        let mut client = RegistrationClient::new(uds::channel(&socket));
        let status = client
            .register(api::RegisterRequest::default())
            .await
            .unwrap_err();
        let error = failed_call(&socket, &status);
        assert!(
            matches!(&error, RegisterError::Unreachable { socket: s, .. } if *s == socket),
            "{error:?}"
        );
        let text = error.to_string();
        assert!(
            text.starts_with("no answer from kubelet at") && !text.contains("code:"),
            "{text}"
        );

        // kubelet's own answer is a refusal, in its words.
        let refused = failed_call(
            &socket,
            &tonic::Status::unknown("the ResourceName \"x\" is invalid"),
        );
        assert_eq!(
            refused.to_string(),
            "kubelet refused the registration: the ResourceName \"x\" is invalid"
        );
    }
}
