//! The devlink kernel seam: the [`Devlink`] trait, the real implementation ([`DevlinkCli`], iproute2's
//! `devlink -j`), and the parsers for the JSON it prints.
//!
//! Why the iproute2 program and not generic netlink from Rust: the agent needs two read-only
//! queries (`dev param show`, `dev info`) per rescan, not a devlink library. The Rust devlink
//! clients we found are young and async-only (`nlink`) or generated and mostly undocumented
//! (`netlink-bindings`); hand-writing the nested `DEVLINK_ATTR_INFO_VERSION_*` and typed
//! `DEVLINK_ATTR_PARAM_VALUE_DATA` decoding is code that could not be checked against a real kernel
//! on our build machines (their kernel has no devlink family at all). iproute2's `-j` output is the
//! interface operators and the kernel selftests script against, the node image already ships
//! iproute2, and a bulk query is one process per rescan (see `facts` for the cost).
//!
//! Every output is hostile input: bounded in size and time, parsed into `serde_json::Value` (whose
//! recursion limit turns absurd nesting into an error), and every shape mismatch is an error or a
//! skipped entry, never a panic.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use serde_json::Value;

/// What the agent asks devlink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    /// `devlink -j dev show`: every devlink instance (`pci/0000:3b:00.0`, `auxiliary/mlx5_core.sf.4`).
    Devices,
    /// `devlink -j dev param show`: every parameter of every instance, in one dump.
    AllParams,
    /// `devlink -j dev info <handle>`: one instance's driver, serial and firmware versions.
    Info(String),
}

impl Query {
    /// The arguments after `devlink -j`.
    pub fn args(&self) -> Vec<&str> {
        match self {
            Query::Devices => vec!["dev", "show"],
            Query::AllParams => vec!["dev", "param", "show"],
            Query::Info(handle) => vec!["dev", "info", handle.as_str()],
        }
    }

    fn command_line(&self) -> String {
        self.args().join(" ")
    }
}

/// Runs devlink queries. The real one is [`DevlinkCli`]; tests pass a recording fake. Callers get
/// the program's standard output (JSON) and parse it with [`parse_devices`], [`parse_enable_rdma`]
/// and [`parse_ddp_name`].
pub trait Devlink: Send + Sync {
    /// Runs `query` and returns what it printed on standard output.
    fn query(&self, query: &Query) -> Result<Vec<u8>, DevlinkError>;
}

/// Why a devlink query or its output could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DevlinkError {
    /// The devlink program is not installed (the image has no iproute2).
    #[error("the devlink program {program:?} is not installed")]
    NotInstalled {
        /// The program the agent tried to run.
        program: PathBuf,
        /// The spawn error (not found).
        #[source]
        source: std::io::Error,
    },
    /// The devlink program exists but could not be started.
    #[error("cannot start {program:?}")]
    Spawn {
        /// The program the agent tried to run.
        program: PathBuf,
        /// The spawn error.
        #[source]
        source: std::io::Error,
    },
    /// The running kernel has no devlink support (no `devlink` generic netlink family).
    #[error("the kernel has no devlink support (`devlink {args}`: {stderr})")]
    NoKernelSupport {
        /// The query's arguments.
        args: String,
        /// What devlink printed on standard error.
        stderr: String,
    },
    /// devlink ran and failed: an unknown device, an operation the driver does not support, ...
    #[error("`devlink {args}` failed ({status}): {stderr}")]
    Failed {
        /// The query's arguments.
        args: String,
        /// The exit status.
        status: ExitStatus,
        /// What devlink printed on standard error (truncated).
        stderr: String,
    },
    /// devlink did not finish in time and was killed.
    #[error("`devlink {args}` did not finish within {timeout:?}; killed it")]
    Timeout {
        /// The query's arguments.
        args: String,
        /// The deadline it missed.
        timeout: Duration,
    },
    /// devlink printed more than the agent accepts and was killed.
    #[error("`devlink {args}` printed more than {limit} bytes; killed it")]
    OutputTooLarge {
        /// The query's arguments.
        args: String,
        /// The byte limit.
        limit: usize,
    },
    /// Waiting for the devlink process or reading its output failed.
    #[error("`devlink {args}`: cannot wait for the process or read its output")]
    Io {
        /// The query's arguments.
        args: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A thread to read devlink's output could not be started (out of memory, thread limit); the
    /// devlink process was killed.
    #[error("`devlink {args}`: cannot start a thread to read its output")]
    Thread {
        /// The query's arguments.
        args: String,
        /// The thread creation error.
        #[source]
        source: std::io::Error,
    },
    /// A devlink killed earlier has still not exited: it is stuck in the kernel (a wedged driver
    /// holds the devlink lock), so another query would only hang too.
    #[error(
        "not running `devlink {args}`: devlink (pid {pid}) killed {ago:?} ago has still not exited; the kernel is stuck in a driver (check dmesg); devlink facts keep their last known values until it exits"
    )]
    Stuck {
        /// The query's arguments.
        args: String,
        /// The stuck process.
        pid: u32,
        /// How long ago it was killed.
        ago: Duration,
    },
    /// The output is not JSON.
    #[error("`devlink {args}` printed invalid JSON")]
    InvalidJson {
        /// The query's arguments.
        args: String,
        /// The parse error (line and column).
        #[source]
        source: serde_json::Error,
    },
    /// The output is JSON but not shaped as iproute2 prints it.
    #[error("`devlink {args}` printed unexpected JSON: {reason}")]
    UnexpectedShape {
        /// The query's arguments.
        args: String,
        /// What was expected and what was found.
        reason: String,
    },
}

impl DevlinkError {
    /// Devlink cannot work on this node at all (no program, no kernel support): asking again for
    /// another device in the same round is pointless.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            DevlinkError::NotInstalled { .. }
                | DevlinkError::Spawn { .. }
                | DevlinkError::NoKernelSupport { .. }
        )
    }

    /// A short stable name for the kind of failure (log de-duplication and structured fields).
    pub fn kind(&self) -> &'static str {
        match self {
            DevlinkError::NotInstalled { .. } => "not-installed",
            DevlinkError::Spawn { .. } => "spawn",
            DevlinkError::NoKernelSupport { .. } => "no-kernel-support",
            DevlinkError::Failed { .. } => "failed",
            DevlinkError::Timeout { .. } => "timeout",
            DevlinkError::Stuck { .. } => "stuck",
            DevlinkError::OutputTooLarge { .. } => "output-too-large",
            DevlinkError::Io { .. } => "io",
            DevlinkError::Thread { .. } => "thread",
            DevlinkError::InvalidJson { .. } => "invalid-json",
            DevlinkError::UnexpectedShape { .. } => "unexpected-shape",
        }
    }
}

/// What iproute2's devlink prints when it cannot resolve the `devlink` generic netlink family,
/// i.e. the kernel was built without devlink.
const NO_FAMILY_MESSAGE: &str = "Failed to connect to devlink Netlink";

/// At most this much of standard error is kept for messages.
const STDERR_LIMIT: usize = 4096;

/// How long a killed devlink gets to exit before the agent stops waiting for it.
const REAP_GRACE: Duration = Duration::from_secs(1);

/// The real devlink: iproute2's `devlink -j`, with a deadline and an output cap.
#[derive(Debug, Clone)]
pub struct DevlinkCli {
    program: PathBuf,
    timeout: Duration,
    output_limit: usize,
    /// A killed devlink that has not exited (pid, when it was killed), shared by clones. SIGKILL
    /// does not end a process blocked in the kernel; waiting for it would hang the rescan, and
    /// starting another would pile up stuck processes, so while one is stuck no query runs.
    stuck: Arc<Mutex<Option<(u32, Instant)>>>,
}

impl Default for DevlinkCli {
    fn default() -> Self {
        DevlinkCli {
            program: PathBuf::from("devlink"),
            // A dump walks every devlink instance in the kernel; a healthy one answers in
            // milliseconds even with a thousand VFs. Seconds mean a wedged driver.
            timeout: Duration::from_secs(5),
            // `dev param show` on a 1,024-VF mlx5 node is a few hundred KiB.
            output_limit: 16 << 20,
            stuck: Arc::default(),
        }
    }
}

// The agent runs the defaults; the knobs exist so tests can run stand-in programs (a hung one, a
// flooding one) through the real runner.
#[cfg_attr(not(test), allow(dead_code))]
impl DevlinkCli {
    /// `devlink` from `PATH`, 5 s deadline, 16 MiB output cap.
    pub fn new() -> Self {
        DevlinkCli::default()
    }

    /// Runs `program` instead of `devlink` from `PATH`.
    pub fn with_program(mut self, program: impl AsRef<Path>) -> Self {
        self.program = program.as_ref().to_path_buf();
        self
    }

    /// Kills a query that runs longer than `timeout`.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Records a killed devlink `pid` as stuck, as the killer does when it does not exit.
    #[cfg(test)]
    pub fn mark_stuck_for_test(&self, pid: u32) {
        *self.stuck.lock().unwrap_or_else(PoisonError::into_inner) = Some((pid, Instant::now()));
    }

    /// Kills a query that prints more than `limit` bytes.
    pub fn with_output_limit(mut self, limit: usize) -> Self {
        self.output_limit = limit;
        self
    }
}

/// Kills `child` and reaps it; one that has not exited after `REAP_GRACE` (blocked in the kernel)
/// is left to a thread that waits for it, and recorded in `stuck` until it exits.
fn kill_and_reap(mut child: Child, stuck: &Arc<Mutex<Option<(u32, Instant)>>>) {
    let _ = child.kill();
    let killed = Instant::now();
    let mut pause = Duration::from_millis(1);
    while killed.elapsed() < REAP_GRACE {
        match child.try_wait() {
            Ok(None) => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            // Exited, or it cannot be waited for at all: nothing more to do.
            Ok(Some(_)) | Err(_) => return,
        }
    }
    let pid = child.id();
    tracing::error!(
        pid,
        "devlink did not exit after SIGKILL: it is stuck in the kernel (a wedged driver; check dmesg); no devlink query runs until it exits"
    );
    *stuck.lock().unwrap_or_else(PoisonError::into_inner) = Some((pid, killed));
    // One waiting thread at most: no query starts another devlink while `stuck` is set.
    let flag = Arc::clone(stuck);
    let reaper = std::thread::Builder::new()
        .name("vfpool-devlink-reap".into())
        .spawn(move || {
            let _ = child.wait();
            *flag.lock().unwrap_or_else(PoisonError::into_inner) = None;
            tracing::info!(pid, "the stuck devlink has exited; devlink queries resume");
        });
    if reaper.is_err() {
        // No thread to wait with: the flag stays set rather than blocking a rescan here.
        tracing::warn!(
            pid,
            "cannot start a thread to wait for the stuck devlink: devlink stays off until the agent restarts"
        );
    }
}

/// Reads at most `limit + 1` bytes (so the caller can tell "exactly at the limit" from "over it").
fn read_bounded(mut from: impl Read, limit: usize) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    from.by_ref()
        .take(u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1))
        .read_to_end(&mut out)?;
    Ok(out)
}

impl Devlink for DevlinkCli {
    fn query(&self, query: &Query) -> Result<Vec<u8>, DevlinkError> {
        let args = query.command_line();
        if let Some((pid, killed)) = *self.stuck.lock().unwrap_or_else(PoisonError::into_inner) {
            return Err(DevlinkError::Stuck {
                args,
                pid,
                ago: killed.elapsed(),
            });
        }
        let io = |source| DevlinkError::Io {
            args: args.clone(),
            source,
        };
        let spawn = || {
            Command::new(&self.program)
                .arg("-j")
                .args(query.args())
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
        };
        // ETXTBSY: the program file is open for writing somewhere — being replaced (an iproute2
        // upgrade), or inherited for an instant by a process another thread is forking. Brief.
        let mut spawned = spawn();
        for _ in 0..5 {
            match &spawned {
                Err(e) if e.raw_os_error() == Some(Errno::ETXTBSY as i32) => {
                    std::thread::sleep(Duration::from_millis(20));
                    spawned = spawn();
                }
                _ => break,
            }
        }
        let mut child = spawned.map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                DevlinkError::NotInstalled {
                    program: self.program.clone(),
                    source,
                }
            } else {
                DevlinkError::Spawn {
                    program: self.program.clone(),
                    source,
                }
            }
        })?;
        let deadline = Instant::now() + self.timeout;

        // Readers on their own threads so a chatty child never blocks on a full pipe while we
        // wait for it; each reads a bounded amount and reports once.
        let (out_tx, out_rx) = mpsc::channel();
        let (err_tx, err_rx) = mpsc::channel();
        let limit = self.output_limit;
        let kill = |child: std::process::Child| kill_and_reap(child, &self.stuck);
        // A thread that cannot be created (out of memory, thread limit) fails the query; the child
        // is not left running. An already started reader ends when the killed child's pipe closes.
        let thread_error = |source| DevlinkError::Thread {
            args: args.clone(),
            source,
        };
        if let Some(stdout) = child.stdout.take() {
            let started = std::thread::Builder::new()
                .name("vfpool-devlink-out".into())
                .spawn(move || {
                    let _ = out_tx.send(read_bounded(stdout, limit));
                });
            if let Err(e) = started {
                kill(child);
                return Err(thread_error(e));
            }
        }
        if let Some(stderr) = child.stderr.take() {
            let started = std::thread::Builder::new()
                .name("vfpool-devlink-err".into())
                .spawn(move || {
                    let _ = err_tx.send(read_bounded(stderr, STDERR_LIMIT));
                });
            if let Err(e) = started {
                kill(child);
                return Err(thread_error(e));
            }
        }

        let mut stdout: Option<std::io::Result<Vec<u8>>> = None;
        let mut pause = Duration::from_micros(200);
        let status = loop {
            if stdout.is_none() {
                stdout = out_rx.try_recv().ok();
            }
            if let Some(Ok(bytes)) = &stdout
                && bytes.len() > limit
            {
                kill(child);
                return Err(DevlinkError::OutputTooLarge { args, limit });
            }
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() >= deadline => {
                    kill(child);
                    return Err(DevlinkError::Timeout {
                        args,
                        timeout: self.timeout,
                    });
                }
                Ok(None) => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(10));
                }
                Err(e) => {
                    kill(child);
                    return Err(io(e));
                }
            }
        };
        // The child has exited; its pipes close unless it left a process holding them, which the
        // deadline still bounds.
        let remaining = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(50));
        let stdout = match stdout {
            Some(result) => result,
            None => out_rx
                .recv_timeout(remaining)
                .map_err(|_| DevlinkError::Timeout {
                    args: args.clone(),
                    timeout: self.timeout,
                })?,
        }
        .map_err(io)?;
        if stdout.len() > limit {
            return Err(DevlinkError::OutputTooLarge { args, limit });
        }
        let stderr = err_rx
            .recv_timeout(Duration::from_millis(50))
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        let stderr = String::from_utf8_lossy(&stderr).trim().to_string();
        if status.success() {
            return Ok(stdout);
        }
        if stderr.contains(NO_FAMILY_MESSAGE) {
            return Err(DevlinkError::NoKernelSupport { args, stderr });
        }
        Err(DevlinkError::Failed {
            args,
            status,
            stderr,
        })
    }
}

fn parse_json(query: &Query, bytes: &[u8]) -> Result<Value, DevlinkError> {
    serde_json::from_slice(bytes).map_err(|source| DevlinkError::InvalidJson {
        args: query.command_line(),
        source,
    })
}

fn shape(query: &Query, reason: impl Into<String>) -> DevlinkError {
    DevlinkError::UnexpectedShape {
        args: query.command_line(),
        reason: reason.into(),
    }
}

/// The object under `key` of the top-level object (iproute2 prints `{"dev":{...}}`,
/// `{"param":{...}}`, `{"info":{...}}`).
fn section<'a>(
    query: &Query,
    value: &'a Value,
    key: &str,
) -> Result<&'a serde_json::Map<String, Value>, DevlinkError> {
    let top = value
        .as_object()
        .ok_or_else(|| shape(query, "the top level is not an object"))?;
    match top.get(key) {
        Some(Value::Object(map)) => Ok(map),
        Some(other) => Err(shape(
            query,
            format!("{key:?} is {}, not an object", type_name(other)),
        )),
        None => Err(shape(query, format!("no {key:?} key at the top level"))),
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The devlink handles in `devlink -j dev show` output (`{"dev":{"pci/0000:3b:00.0":{},...}}`).
pub fn parse_devices(bytes: &[u8]) -> Result<Vec<String>, DevlinkError> {
    let query = Query::Devices;
    let value = parse_json(&query, bytes)?;
    Ok(section(&query, &value, "dev")?.keys().cloned().collect())
}

/// The `enable_rdma` parameter per devlink handle, from `devlink -j dev param show`:
/// `{"param":{"pci/0000:3b:00.2":[{"name":"enable_rdma","type":"generic",
/// "values":[{"cmode":"driverinit","value":true}]}]}}`.
///
/// Like upstream (netlink `Values[0]`), the first value is the one that counts; mlx5 exposes only
/// `driverinit`. Booleans printed as `"true"`/`"false"` strings are accepted. An entry that is
/// malformed makes only its own handle unknown: it is listed in [`ParamScan::skipped`].
pub fn parse_enable_rdma(bytes: &[u8]) -> Result<ParamScan, DevlinkError> {
    let query = Query::AllParams;
    let value = parse_json(&query, bytes)?;
    let mut scan = ParamScan::default();
    for (handle, params) in section(&query, &value, "param")? {
        let Some(params) = params.as_array() else {
            scan.skipped
                .push(format!("{handle}: parameters are {}", type_name(params)));
            continue;
        };
        let Some(param) = params
            .iter()
            .find(|p| p.get("name").and_then(Value::as_str) == Some("enable_rdma"))
        else {
            continue;
        };
        let first = param
            .get("values")
            .and_then(Value::as_array)
            .and_then(|values| values.first())
            .and_then(|v| v.get("value"));
        match first {
            Some(Value::Bool(b)) => {
                scan.enable_rdma.insert(handle.clone(), *b);
            }
            Some(Value::String(s)) if s == "true" || s == "false" => {
                scan.enable_rdma.insert(handle.clone(), s == "true");
            }
            Some(other) => scan.skipped.push(format!(
                "{handle}: enable_rdma value is {}, not a boolean",
                type_name(other)
            )),
            None => scan
                .skipped
                .push(format!("{handle}: enable_rdma has no values[0].value")),
        }
    }
    Ok(scan)
}

/// What [`parse_enable_rdma`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParamScan {
    /// `enable_rdma` by devlink handle.
    pub enable_rdma: BTreeMap<String, bool>,
    /// Handles whose entry could not be read, with the reason.
    pub skipped: Vec<String>,
}

/// The running DDP package name (`versions.running."fw.app.name"`, ice) of `handle` in
/// `devlink -j dev info <handle>` output. `None` when the device reports no such version (not an
/// ice device, or no package loaded) or reports it empty.
pub fn parse_ddp_name(bytes: &[u8], handle: &str) -> Result<Option<String>, DevlinkError> {
    let query = Query::Info(handle.to_string());
    let value = parse_json(&query, bytes)?;
    let info = section(&query, &value, "info")?;
    let device = match info.get(handle) {
        Some(Value::Object(device)) => device,
        Some(other) => {
            return Err(shape(
                &query,
                format!("info.{handle:?} is {}, not an object", type_name(other)),
            ));
        }
        None => return Err(shape(&query, format!("no info for {handle:?}"))),
    };
    let running = match device.get("versions").map(|v| (v, v.get("running"))) {
        None | Some((_, None)) => return Ok(None),
        Some((_, Some(Value::Object(running)))) => running,
        Some((_, Some(other))) => {
            return Err(shape(
                &query,
                format!("versions.running is {}, not an object", type_name(other)),
            ));
        }
    };
    match running.get("fw.app.name") {
        None => Ok(None),
        Some(Value::String(name)) if name.trim().is_empty() => Ok(None),
        Some(Value::String(name)) => Ok(Some(name.clone())),
        Some(other) => Err(shape(
            &query,
            format!(
                "versions.running.\"fw.app.name\" is {}, not a string",
                type_name(other)
            ),
        )),
    }
}

/// Test doubles for the devlink seam.
#[cfg(test)]
pub mod fake {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use super::{Devlink, DevlinkError, Query};

    /// A scripted answer.
    pub type Answer = Box<dyn Fn() -> Result<Vec<u8>, DevlinkError> + Send + Sync>;

    /// Answers queries from a script and records every query it was asked, in order. A query
    /// without a scripted answer fails like devlink on an unknown device.
    #[derive(Default)]
    pub struct RecordingDevlink {
        answers: BTreeMap<String, Answer>,
        calls: Mutex<Vec<Query>>,
    }

    impl RecordingDevlink {
        /// Answers `query` with `json`.
        pub fn answer(mut self, query: Query, json: &str) -> Self {
            let bytes = json.as_bytes().to_vec();
            self.answers
                .insert(query.command_line(), Box::new(move || Ok(bytes.clone())));
            self
        }

        /// Answers `query` with the error `make()` returns.
        pub fn fail(
            mut self,
            query: Query,
            make: impl Fn() -> DevlinkError + Send + Sync + 'static,
        ) -> Self {
            self.answers
                .insert(query.command_line(), Box::new(move || Err(make())));
            self
        }

        /// Answers `query` with whatever `answer()` returns at the time (a changing answer).
        pub fn script(
            mut self,
            query: Query,
            answer: impl Fn() -> Result<Vec<u8>, DevlinkError> + Send + Sync + 'static,
        ) -> Self {
            self.answers.insert(query.command_line(), Box::new(answer));
            self
        }

        /// Every query asked so far.
        pub fn calls(&self) -> Vec<Query> {
            self.calls
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone()
        }
    }

    impl Devlink for RecordingDevlink {
        fn query(&self, query: &Query) -> Result<Vec<u8>, DevlinkError> {
            self.calls
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(query.clone());
            match self.answers.get(&query.command_line()) {
                Some(answer) => answer(),
                None => Err(DevlinkError::Failed {
                    args: query.command_line(),
                    status: std::os::unix::process::ExitStatusExt::from_raw(1 << 8),
                    stderr: "devlink answers: No such device".into(),
                }),
            }
        }
    }
}
