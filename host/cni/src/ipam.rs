//! IPAM delegation: run the IPAM plugin named in `ipam.type` from CNI_PATH with the same stdin and
//! environment (spec §4 "delegated plugins"), behind a trait so the ADD/DEL logic can be tested
//! with a recording fake.

use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command as Process, Stdio};

use serde::Deserialize;
use thiserror::Error;

use crate::env::CniEnv;

/// Why the IPAM plugin could not do its job.
#[derive(Debug, Error)]
pub enum IpamError {
    /// No executable of that name in any CNI_PATH directory.
    #[error(
        "IPAM plugin {plugin:?} not found in CNI_PATH {path:?}; install it there or fix ipam.type"
    )]
    NotFound {
        /// The plugin type.
        plugin: String,
        /// The searched directories.
        path: Vec<PathBuf>,
    },
    /// It could not be started or talked to.
    #[error("cannot run IPAM plugin {binary}")]
    Exec {
        /// The binary.
        binary: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// It answered with a CNI error.
    #[error("IPAM plugin {plugin:?} {command} failed with code {code}: {msg}{}", if details.is_empty() { String::new() } else { format!(" ({details})") })]
    Plugin {
        /// The plugin type.
        plugin: String,
        /// The command.
        command: &'static str,
        /// Its error code.
        code: u32,
        /// Its message.
        msg: String,
        /// Its details.
        details: String,
    },
    /// It failed without a CNI error on stdout.
    #[error("IPAM plugin {plugin:?} {command} exited with {status} and printed {output:?}")]
    Crashed {
        /// The plugin type.
        plugin: String,
        /// The command.
        command: &'static str,
        /// Exit status.
        status: String,
        /// What it printed.
        output: String,
    },
}

/// An IPAM plugin run that has been started: its answer is collected with [`Pending::wait`].
/// ADD and DEL start the IPAM plugin first and wait for it only when they need its answer, so
/// the plugin's run overlaps the kernel's netns move (each takes 10–20 ms).
#[derive(Debug)]
pub struct Pending(PendingKind);

#[derive(Debug)]
enum PendingKind {
    Running {
        child: Child,
        plugin: String,
        command: &'static str,
        binary: PathBuf,
    },
    Done(Result<String, IpamError>),
}

impl Pending {
    /// An answer that is already known (fakes, and plugins that could not be started).
    pub fn ready(result: Result<String, IpamError>) -> Self {
        Pending(PendingKind::Done(result))
    }

    /// Waits for the plugin and returns its stdout on success.
    pub fn wait(self) -> Result<String, IpamError> {
        let (child, plugin, command, binary) = match self.0 {
            PendingKind::Done(result) => return result,
            PendingKind::Running {
                child,
                plugin,
                command,
                binary,
            } => (child, plugin, command, binary),
        };
        let output = child
            .wait_with_output()
            .map_err(|source| IpamError::Exec { binary, source })?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if output.status.success() {
            return Ok(stdout);
        }
        match serde_json::from_str::<ErrorReply>(&stdout) {
            Ok(reply) => Err(IpamError::Plugin {
                plugin,
                command,
                code: reply.code,
                msg: reply.msg,
                details: reply.details,
            }),
            Err(_) => Err(IpamError::Crashed {
                plugin,
                command,
                status: output.status.to_string(),
                output: stdout,
            }),
        }
    }
}

/// Runs IPAM plugins.
pub trait Ipam {
    /// Starts `plugin` with CNI_COMMAND=`command` and `stdin`.
    fn start(&mut self, command: &'static str, plugin: &str, stdin: &[u8], env: &CniEnv)
    -> Pending;

    /// Runs `plugin` to completion; returns its stdout on success.
    fn exec(
        &mut self,
        command: &'static str,
        plugin: &str,
        stdin: &[u8],
        env: &CniEnv,
    ) -> Result<String, IpamError> {
        self.start(command, plugin, stdin, env).wait()
    }
}

/// Finds plugin binaries in CNI_PATH and runs them.
#[derive(Debug, Default, Clone, Copy)]
pub struct ExecIpam;

#[derive(Deserialize)]
struct ErrorReply {
    code: u32,
    #[serde(default)]
    msg: String,
    #[serde(default)]
    details: String,
}

impl ExecIpam {
    fn find(plugin: &str, env: &CniEnv) -> Result<PathBuf, IpamError> {
        for dir in &env.path {
            let candidate = dir.join(plugin);
            if let Ok(meta) = candidate.metadata()
                && meta.is_file()
                && meta.permissions().mode() & 0o111 != 0
            {
                return Ok(candidate);
            }
        }
        Err(IpamError::NotFound {
            plugin: plugin.to_owned(),
            path: env.path.clone(),
        })
    }

    fn spawn(
        command: &'static str,
        plugin: &str,
        stdin: &[u8],
        env: &CniEnv,
    ) -> Result<Pending, IpamError> {
        let binary = Self::find(plugin, env)?;
        let exec_err = |source| IpamError::Exec {
            binary: binary.clone(),
            source,
        };
        let path = env
            .path
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(":");
        let mut child = Process::new(&binary)
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", &env.container_id)
            .env("CNI_NETNS", &env.netns)
            .env("CNI_IFNAME", &env.ifname)
            .env("CNI_ARGS", &env.args)
            .env("CNI_PATH", path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(exec_err)?;
        if let Some(mut pipe) = child.stdin.take() {
            // A plugin reads its whole config before it answers, so this cannot deadlock; one
            // that exits before reading it answers on stdout all the same.
            if let Err(e) = pipe.write_all(stdin)
                && e.kind() != io::ErrorKind::BrokenPipe
            {
                let _ = child.kill();
                let _ = child.wait();
                return Err(exec_err(e));
            }
        }
        Ok(Pending(PendingKind::Running {
            child,
            plugin: plugin.to_owned(),
            command,
            binary,
        }))
    }
}

impl Ipam for ExecIpam {
    fn start(
        &mut self,
        command: &'static str,
        plugin: &str,
        stdin: &[u8],
        env: &CniEnv,
    ) -> Pending {
        Self::spawn(command, plugin, stdin, env).unwrap_or_else(|e| Pending::ready(Err(e)))
    }
}

/// A recording IPAM for unit tests: answers ADD with a fixed result, or fails on request.
#[derive(Debug, Default)]
pub struct FakeIpam {
    /// `(command, plugin)` of every call.
    pub calls: Vec<(String, String)>,
    /// `(CNI_CONTAINERID, CNI_IFNAME)` of every call, in the same order.
    pub owners: Vec<(String, String)>,
    /// The stdin of every call, in the same order.
    pub stdins: Vec<Vec<u8>>,
    /// The ADD answer.
    pub add_result: String,
    /// Commands that fail.
    pub fail: Vec<&'static str>,
    /// The CNI code they fail with (999 when unset).
    pub fail_code: Option<u32>,
    /// A log shared with other fakes (the netlink one), to check the order across them.
    pub timeline: Option<std::rc::Rc<std::cell::RefCell<Vec<String>>>>,
}

impl Ipam for FakeIpam {
    fn start(
        &mut self,
        command: &'static str,
        plugin: &str,
        stdin: &[u8],
        env: &CniEnv,
    ) -> Pending {
        self.calls.push((command.to_owned(), plugin.to_owned()));
        self.stdins.push(stdin.to_vec());
        self.owners
            .push((env.container_id.clone(), env.ifname.clone()));
        if let Some(timeline) = &self.timeline {
            timeline
                .borrow_mut()
                .push(format!("ipam {command} {plugin}"));
        }
        if self.fail.contains(&command) {
            return Pending::ready(Err(IpamError::Plugin {
                plugin: plugin.to_owned(),
                command,
                code: self.fail_code.unwrap_or(999),
                msg: "injected failure".into(),
                details: String::new(),
            }));
        }
        Pending::ready(Ok(if command == "ADD" {
            self.add_result.clone()
        } else {
            String::new()
        }))
    }
}
