//! Compiling a module from the policy directory in a child process, under a CPU-time limit, a
//! memory limit and a wall-clock timeout.
//!
//! The sandbox bounds what a policy does when it runs, but compiling happens before any of that:
//! Cranelift's time and memory grow with the shape of the code, not its size, and a module of
//! 80 KB (one function with thousands of locals live across thousands of branches) takes a
//! gigabyte and seconds, one of 130 KB several gigabytes. Compiled in the agent's process, such a
//! file in the policy directory would stall the agent, or have the kernel's OOM killer end it
//! and every pool it serves. In a child, the limits end the child instead; the agent refuses
//! the module and keeps serving.
//!
//! The child is a program the embedder names (the agent: its own executable, with a hidden
//! subcommand that calls [`serve_worker`]). It gets the module on standard input and answers on
//! standard output with wasmtime's serialized form of it, compiled by an engine configured as the
//! agent's own; the parent deserializes that, which checks the engine's compatibility again.

use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::os::unix::process::ExitStatusExt as _;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use wasmtime::Engine;
use wasmtime::component::Component;

/// Bounds of one module's compilation in the child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompileLimits {
    /// CPU time the child may use, all its threads together (`RLIMIT_CPU`, whole seconds,
    /// rounded up). The example Python and JavaScript policies need about 11 s on a 2-core VM.
    pub cpu: Duration,
    /// Memory the child may allocate (`RLIMIT_DATA`). The example Python policy needs 370 MiB.
    pub memory_bytes: u64,
    /// Wall-clock time before the child is killed: a backstop for a child starved of CPU or
    /// stuck; unlike the two limits above it depends on the node's load, so a module that ran
    /// into it is compiled again later.
    pub wall: Duration,
}

impl Default for CompileLimits {
    /// The agent's defaults: 60 s of CPU, 1 GiB.
    fn default() -> Self {
        CompileLimits::new(Duration::from_secs(60), 1 << 30)
    }
}

impl CompileLimits {
    /// The limits the agent applies for a CPU-time limit `cpu` and a memory limit: the wall-clock
    /// backstop is three times the CPU time plus ten seconds, room for a node whose cores are
    /// all busy.
    pub fn new(cpu: Duration, memory_bytes: u64) -> Self {
        CompileLimits {
            cpu,
            memory_bytes,
            wall: cpu
                .saturating_mul(3)
                .saturating_add(Duration::from_secs(10)),
        }
    }

    fn cpu_seconds(&self) -> u64 {
        whole_seconds(self.cpu)
    }
}

/// `RLIMIT_CPU` counts whole seconds.
fn whole_seconds(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

/// Where modules from the policy directory are compiled. The embedded default policies are always
/// compiled in the agent's process: they are part of its binary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Compiler {
    /// In the calling process, unbounded: for tools and tests that trust their modules.
    #[default]
    InProcess,
    /// In a child process, bounded.
    Child(ChildCompiler),
}

/// How to start the child that compiles, and its limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildCompiler {
    /// The program: one whose command line `args` then `--cpu-seconds N --memory-bytes N
    /// --parent-pid N` ends in [`serve_worker`] with those limits and this process's id.
    program: PathBuf,
    /// Arguments before the limits (the agent: `policy compile-worker`).
    args: Vec<OsString>,
    limits: CompileLimits,
}

/// The limit a compilation ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompileBound {
    /// The CPU-time limit.
    Cpu(Duration),
    /// The memory limit, in bytes.
    Memory(u64),
}

impl std::fmt::Display for CompileBound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // As the kernel enforces it: whole seconds, rounded up.
            CompileBound::Cpu(limit) => write!(f, "{} s of CPU time", whole_seconds(*limit)),
            CompileBound::Memory(limit) => write!(f, "{} MiB of memory", limit >> 20),
        }
    }
}

/// Why compiling in the child gave no component.
#[derive(Debug, thiserror::Error)]
pub enum ChildCompileError {
    /// wasmtime refused the module (the child said why and exited 1).
    #[error("{0}")]
    Refused(String),
    /// The child ran into a limit; the same module would run into it again.
    #[error("compiling it needs more than the {0} the compiler process may use")]
    Limit(CompileBound),
    /// The child was still running at the wall-clock timeout and was killed.
    #[error("the compiler process was still running after {} s and was killed", .0.as_secs_f64())]
    Timeout(Duration),
    /// The child could not be started or talked to.
    #[error("cannot run the compiler process {program}")]
    Spawn {
        /// The program.
        program: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The child ended otherwise: killed by someone else (the kernel's OOM killer), crashed, or
    /// answered with nothing.
    #[error("the compiler process failed ({status}){}", detail(.stderr))]
    Crashed {
        /// How it ended.
        status: String,
        /// The start of what it wrote on standard error.
        stderr: String,
    },
    /// The child's answer is not a component this engine can load.
    #[error("cannot load what the compiler process produced")]
    Load(#[source] wasmtime::Error),
}

fn detail(stderr: &str) -> String {
    if stderr.is_empty() {
        String::new()
    } else {
        format!(": {stderr}")
    }
}

/// What the parent keeps of the child's standard error: wasmtime's reason for refusing a module,
/// or a panic message.
const MAX_STDERR_BYTES: u64 = 16 << 10;

/// Where Rust's default allocation-failure handler says it ran out (then aborts).
const ALLOCATION_FAILED: &str = "memory allocation of ";

/// How `io::Error` describes ENOMEM.
const OUT_OF_MEMORY: &str = "(os error 12)";

/// The threads the child compiles on (where the measured compile times and memory come from: a
/// 2-core VM).
const COMPILE_THREADS: usize = 2;

/// Exit code of a worker that compiled nothing for a reason other than the module (a limit it
/// could not set, its parent gone, its pipes).
const EXIT_NOT_COMPILED: i32 = 3;

impl ChildCompiler {
    /// A compiler that runs `program` with `args`, then `--cpu-seconds N --memory-bytes N
    /// --parent-pid N`.
    ///
    /// # Safety
    ///
    /// What the program writes on its standard output is loaded as native code
    /// (`Component::deserialize`, which checks only that it claims to come from this wasmtime
    /// build and configuration). So the program must be one that answers as [`serve_worker`]
    /// does, built with this crate: the agent's own executable, never a path someone else
    /// chooses.
    #[allow(unsafe_code)]
    pub unsafe fn new(program: PathBuf, args: Vec<OsString>, limits: CompileLimits) -> Self {
        ChildCompiler {
            program,
            args,
            limits,
        }
    }

    /// Compiles `bytes` in a child and loads the result into `engine`. Blocking, for up to the
    /// wall-clock limit.
    pub fn compile(&self, engine: &Engine, bytes: &[u8]) -> Result<Component, ChildCompileError> {
        let limits = self.limits;
        let spawn_error = |source| ChildCompileError::Spawn {
            program: self.program.clone(),
            source,
        };
        let mut child = Reaped(
            Command::new(&self.program)
                .args(&self.args)
                .arg("--cpu-seconds")
                .arg(limits.cpu_seconds().to_string())
                .arg("--memory-bytes")
                .arg(limits.memory_bytes.to_string())
                .arg("--parent-pid")
                .arg(std::process::id().to_string())
                // Nothing of the agent's environment is needed, nor should reach the compiler.
                .env_clear()
                // Cranelift compiles functions on a thread per core; its memory (each thread's
                // stack, the functions compiled at once) grows with the threads, and the memory
                // verdict on a module must not depend on the node's core count.
                .env("RAYON_NUM_THREADS", COMPILE_THREADS.to_string())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(spawn_error)?,
        );
        let outcome = talk(&mut child.0, bytes, limits);
        let _ = child.0.kill();
        let status = child.0.wait().map_err(spawn_error)?;
        let Talk {
            artifact,
            stderr,
            timed_out,
        } = outcome.map_err(spawn_error)?;
        if timed_out {
            return Err(ChildCompileError::Timeout(limits.wall));
        }
        let stderr = String::from_utf8_lossy(&stderr).trim().to_string();
        if status.success() && !artifact.is_empty() {
            return deserialize(engine, &artifact).map_err(ChildCompileError::Load);
        }
        Err(classify(status, stderr, limits))
    }
}

/// The child, killed and reaped when dropped: gone on every way out of
/// [`ChildCompiler::compile`], a panic included. (After `wait`, `kill` signals nothing.)
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Turns the child's answer into a component.
#[allow(unsafe_code)]
fn deserialize(engine: &Engine, artifact: &[u8]) -> wasmtime::Result<Component> {
    // SAFETY: `Component::deserialize` trusts its input to be wasmtime's own output. These bytes
    // are: the child is the program the embedder promised, when it called the unsafe
    // `ChildCompiler::new`, answers as `serve_worker` does (the agent's own executable), it
    // serialized them with this wasmtime build (`Engine::precompile_component`), and they came
    // through a pipe only this process and the child held. They are an in-memory copy. wasmtime
    // itself also refuses an artifact from another version or configuration.
    unsafe { Component::deserialize(engine, artifact) }
}

/// What came back from the child.
struct Talk {
    artifact: Vec<u8>,
    stderr: Vec<u8>,
    timed_out: bool,
}

/// Writes the module to the child and reads its answer, until the child has exited or the
/// wall-clock limit (then kills it). The pipes are served by threads, so a child that stops
/// reading or writing cannot block the caller past the limit; on any error the child is killed
/// first, so that no thread is left blocked on it.
fn talk(child: &mut Child, bytes: &[u8], limits: CompileLimits) -> io::Result<Talk> {
    let deadline = Instant::now() + limits.wall;
    let (Some(mut stdin), Some(mut stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(io::Error::other("the child's pipes were not set up"));
    };
    // The artifact is bounded by what the child may allocate.
    let max_artifact = limits.memory_bytes;
    thread::scope(|scope| {
        let spawned = (|| {
            thread::Builder::new().spawn_scoped(scope, move || {
                // A child that died early closes its end: the write fails, and its status says
                // why.
                let _ = stdin.write_all(bytes);
            })?;
            let stderr_reader = thread::Builder::new().spawn_scoped(scope, move || {
                let mut kept = Vec::new();
                let mut stderr = stderr;
                let _ = (&mut stderr).take(MAX_STDERR_BYTES).read_to_end(&mut kept);
                // Drained to the end, so the child never blocks on a full pipe.
                let _ = io::copy(&mut stderr, &mut io::sink());
                kept
            })?;
            let (done, finished) = mpsc::channel();
            thread::Builder::new().spawn_scoped(scope, move || {
                let mut artifact = Vec::new();
                let read = (&mut stdout)
                    .take(max_artifact)
                    .read_to_end(&mut artifact)
                    .map(|_| artifact);
                let _ = done.send(read);
            })?;
            io::Result::Ok((stderr_reader, finished))
        })();
        let (stderr_reader, finished) = match spawned {
            Ok(threads) => threads,
            Err(error) => {
                let _ = child.kill();
                return Err(error);
            }
        };
        let read = finished.recv_timeout(deadline.saturating_duration_since(Instant::now()));
        // Its standard output closed: the child is exiting, given the rest of the time.
        let timed_out = read.is_err() || !exited_by(child, deadline);
        if timed_out {
            let _ = child.kill();
        }
        // The child is gone, its pipes closed: the threads end.
        let stderr = stderr_reader.join().unwrap_or_default();
        let artifact = match read {
            Ok(artifact) => artifact?,
            Err(_) => Vec::new(),
        };
        Ok(Talk {
            artifact,
            stderr,
            timed_out,
        })
    })
}

/// Whether `child` exits by `deadline` (its status is kept for `wait`).
fn exited_by(child: &mut Child, deadline: Instant) -> bool {
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return true,
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(1)),
            // Past the deadline, or the child cannot be waited for: killed either way.
            _ => return false,
        }
    }
}

/// Names how a child that gave no component ended.
fn classify(status: ExitStatus, stderr: String, limits: CompileLimits) -> ChildCompileError {
    const SIGKILL: i32 = 9;
    const SIGABRT: i32 = 6;
    const SIGXCPU: i32 = 24;
    match (status.code(), status.signal()) {
        // wasmtime's own allocations that fail (the compiled code's memory) are errors it
        // returns, with the kernel's ENOMEM.
        (Some(1), _) if stderr.contains(OUT_OF_MEMORY) => {
            ChildCompileError::Limit(CompileBound::Memory(limits.memory_bytes))
        }
        (Some(1), _) if !stderr.is_empty() => ChildCompileError::Refused(stderr),
        // The kernel sends SIGXCPU at the soft CPU limit, SIGKILL at the hard one a second later.
        (_, Some(SIGXCPU)) => ChildCompileError::Limit(CompileBound::Cpu(limits.cpu)),
        (_, Some(SIGABRT)) if stderr.contains(ALLOCATION_FAILED) => {
            ChildCompileError::Limit(CompileBound::Memory(limits.memory_bytes))
        }
        (_, Some(SIGKILL)) => ChildCompileError::Crashed {
            status: "killed (by the kernel's OOM killer, or by hand)".to_string(),
            stderr,
        },
        _ => ChildCompileError::Crashed {
            status: status.to_string(),
            stderr,
        },
    }
}

/// Why [`serve_worker`] compiled nothing.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// A limit or safeguard could not be set; nothing was compiled without it.
    #[error("cannot set up the compiler process's {what}")]
    Limit {
        /// Which one.
        what: &'static str,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The module could not be read from standard input, or the answer not written.
    #[error("cannot read the module or write the compiled form")]
    Io(#[source] io::Error),
    /// The process that started this one had already exited when the parent-death signal was
    /// set up (so it would never come): nothing is compiled for no one.
    #[error("the process that started the compiler (pid {0}) is gone")]
    ParentGone(u32),
    /// The engine could not be created.
    #[error("cannot create the WebAssembly engine")]
    Engine(#[source] wasmtime::Error),
    /// wasmtime refused the module.
    #[error("{0:#}")]
    Compile(wasmtime::Error),
}

impl WorkerError {
    /// The exit code the worker ends with: 1 for a refused module (the parent passes the message
    /// on as the reason), 3 for anything else.
    pub fn exit_code(&self) -> i32 {
        match self {
            WorkerError::Compile(_) => 1,
            _ => EXIT_NOT_COMPILED,
        }
    }
}

/// The child's side: sets `limits` on this process (the CPU time and memory; the wall-clock limit
/// is the parent's to enforce), reads a module from standard input, compiles it and writes the
/// serialized form to standard output. `parent_pid` is the process that started it
/// (`--parent-pid`). Call it first thing in a process started
/// for it, with nothing else running: the limits are the whole process's. On error, write the
/// error's text to standard error and exit with [`WorkerError::exit_code`].
pub fn serve_worker(limits: CompileLimits, parent_pid: u32) -> Result<(), WorkerError> {
    use rustix::process::{Resource, Rlimit, setrlimit};
    let set = |what, resource, current: u64, maximum: u64| {
        setrlimit(
            resource,
            Rlimit {
                current: Some(current),
                maximum: Some(maximum),
            },
        )
        .map_err(|e| WorkerError::Limit {
            what,
            source: e.into(),
        })
    };
    // If memory runs short on the node, the kernel's OOM killer takes this process before the
    // agent. Best effort: a read-only /proc leaves the default.
    let _ = std::fs::write("/proc/self/oom_score_adj", "1000");
    // No core file of a child killed by a limit (it would be as large as the memory it took, and
    // a piped `core_pattern` ignores RLIMIT_CORE; dumping it would keep the pipes open past the
    // wall-clock limit).
    set("core file limit", Resource::Core, 0, 0)?;
    rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
        .map_err(|e| WorkerError::Limit {
            what: "non-dumpable flag",
            source: e.into(),
        })?;
    // SIGXCPU at the soft limit ends the process (its default action); SIGKILL a second later
    // if it did not.
    default_cpu_limit_signal()?;
    let cpu = limits.cpu_seconds().max(1);
    set("CPU time limit", Resource::Cpu, cpu, cpu.saturating_add(1))?;
    set(
        "memory limit",
        Resource::Data,
        limits.memory_bytes,
        limits.memory_bytes,
    )?;
    // A compiler outliving an agent that was killed would only burn CPU.
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL)).map_err(
        |e| WorkerError::Limit {
            what: "parent-death signal",
            source: e.into(),
        },
    )?;
    // A parent that died before the line above sent no signal, and none will come: this
    // process has been handed to another.
    let parent = rustix::process::Pid::as_raw(rustix::process::getppid());
    if u32::try_from(parent).ok() != Some(parent_pid) {
        return Err(WorkerError::ParentGone(parent_pid));
    }
    let mut module = Vec::new();
    io::stdin()
        .lock()
        .read_to_end(&mut module)
        .map_err(WorkerError::Io)?;
    let artifact = compile_serialized(&module)?;
    let mut stdout = io::stdout().lock();
    stdout.write_all(&artifact).map_err(WorkerError::Io)?;
    stdout.flush().map_err(WorkerError::Io)
}

/// Gives SIGXCPU its default action (end the process) and unblocks it. `exec` keeps an ignored
/// or blocked signal: an agent started with SIGXCPU ignored (a shell's `trap '' XCPU`) or blocked
/// handed that on, the soft CPU limit passed unnoticed, and the SIGKILL at the hard one a second
/// later read as a crash instead of the CPU limit (and the module, as one to try again).
fn default_cpu_limit_signal() -> Result<(), WorkerError> {
    use nix::sys::signal::{SigHandler, SigSet, Signal, signal};
    let failed = |e: nix::Error| WorkerError::Limit {
        what: "CPU time limit signal",
        source: io::Error::from(e),
    };
    // SAFETY: the default action installs no handler, so no code of this process runs in signal
    // context; the previous disposition returned is not a handler either way (dropped).
    #[allow(unsafe_code)]
    unsafe { signal(Signal::SIGXCPU, SigHandler::SigDfl) }.map_err(failed)?;
    // This is the only thread (see `serve_worker`): the compiler's threads inherit its mask.
    SigSet::from(Signal::SIGXCPU)
        .thread_unblock()
        .map_err(failed)
}

/// Compiles `module` with an engine configured as the agent's, to wasmtime's serialized form.
pub(crate) fn compile_serialized(module: &[u8]) -> Result<Vec<u8>, WorkerError> {
    let engine = Engine::new(&crate::engine::compile_config()).map_err(WorkerError::Engine)?;
    engine
        .precompile_component(module)
        .map_err(WorkerError::Compile)
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::engine::{Limits, PolicyEngine};
    use crate::policy::{LoadError, Policy};
    use crate::{ActivePolicies, PolicyInventory, Sources, defaults, error_chain};

    /// A whole component (an empty one, then a custom section of `padding` bytes).
    fn component(padding: usize) -> Vec<u8> {
        let mut bytes = b"\0asm\x0d\0\x01\0".to_vec();
        if padding > 0 {
            let mut payload = vec![1, b'x'];
            payload.resize(padding, 0);
            bytes.push(0);
            let mut size = payload.len();
            loop {
                let low = u8::try_from(size & 0x7f).unwrap();
                size >>= 7;
                bytes.push(if size > 0 { low | 0x80 } else { low });
                if size == 0 {
                    break;
                }
            }
            bytes.extend_from_slice(&payload);
        }
        assert_eq!(
            crate::policy::ModuleKind::of(&bytes),
            crate::policy::ModuleKind::Component
        );
        bytes
    }

    /// A compiler that runs `script` in `sh` (the limits the parent appends are its `$0`...).
    fn shell(script: &str, wall: Duration) -> ChildCompiler {
        ChildCompiler {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            limits: CompileLimits {
                cpu: Duration::from_secs(5),
                memory_bytes: 256 << 20,
                wall,
            },
        }
    }

    fn engine_with(compiler: ChildCompiler) -> PolicyEngine {
        PolicyEngine::with_compiler(Limits::default(), None, Compiler::Child(compiler)).unwrap()
    }

    fn compile_error(compiler: ChildCompiler, bytes: &[u8]) -> LoadError {
        match Policy::compile(&engine_with(compiler), "p.wasm", bytes) {
            Ok(_) => panic!("compiled"),
            Err(e) => e,
        }
    }

    /// What the worker writes, handed back through the parent's pipes by a stand-in child,
    /// loads into the agent's engine (instance pool and all) and runs: the worker's engine
    /// compiles what the agent's can load.
    #[test]
    fn what_the_worker_compiles_the_agent_loads_and_runs() {
        let artifact = compile_serialized(defaults::UPSTREAM_SELECTOR).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("artifact");
        fs::write(&path, &artifact).unwrap();
        // Reads the module to its end first, as the worker does.
        let script = format!("cat >/dev/null; cat '{}'", path.display());
        let engine = engine_with(shell(&script, Duration::from_secs(60)));
        let policy = Policy::compile(&engine, "mine.wasm", defaults::UPSTREAM_SELECTOR).unwrap();
        assert!(policy.roles().selector);
        let inventory = PolicyInventory::new(&Default::default(), &Default::default());
        let settings = crate::Settings {
            config: r#"{"resourceList":[]}"#.into(),
            default_resource_prefix: "intel.com".into(),
        };
        let outcome = policy.select(&settings, &inventory).unwrap();
        assert!(outcome.value.is_empty());
    }

    /// A module the worker refuses is refused with the worker's reason, as one wasmtime refused
    /// in this process.
    #[test]
    fn the_workers_reason_for_refusing_a_module_is_the_reason_given() {
        let error = compile_error(
            shell(
                "echo 'invalid leading byte (0x77) for component defined type (at offset 0x9)' >&2; exit 1",
                Duration::from_secs(60),
            ),
            &component(0),
        );
        assert!(matches!(error, LoadError::Compile { .. }), "{error:?}");
        let text = error_chain(&error);
        assert!(text.contains("invalid leading byte (0x77)"), "{text}");
    }

    /// A child killed at its CPU-time limit, or aborted when an allocation failed at its memory
    /// limit, is a verdict on the module, said with the limit; one killed from outside is not.
    #[test]
    fn the_limit_a_child_ran_into_is_named() {
        let error = compile_error(
            shell("kill -XCPU $$", Duration::from_secs(60)),
            &component(0),
        );
        assert!(
            matches!(error, LoadError::CompileLimit { bound: CompileBound::Cpu(cpu), .. } if cpu == Duration::from_secs(5)),
            "{error:?}"
        );
        assert!(error.to_string().contains("5 s of CPU time"), "{error}");

        let error = compile_error(
            shell(
                "echo 'memory allocation of 1048576 bytes failed' >&2; kill -ABRT $$",
                Duration::from_secs(60),
            ),
            &component(0),
        );
        assert!(
            matches!(error, LoadError::CompileLimit { bound: CompileBound::Memory(m), .. } if m == 256 << 20),
            "{error:?}"
        );
        assert!(error.to_string().contains("256 MiB of memory"), "{error}");

        for script in ["kill -KILL $$", "exit 0", "echo boom >&2; exit 101"] {
            let error = compile_error(shell(script, Duration::from_secs(60)), &component(0));
            assert!(
                matches!(&error, LoadError::CompileProcess { .. }),
                "{script}: {error:?}"
            );
        }
        let missing = ChildCompiler {
            program: "/nonexistent/vfpool".into(),
            ..shell("", Duration::from_secs(1))
        };
        let error = compile_error(missing, &component(0));
        assert!(
            error_chain(&error).contains("/nonexistent/vfpool"),
            "{error:?}"
        );
    }

    /// A child that neither reads its input nor answers is killed at the wall-clock limit, even
    /// while the parent is still writing a module larger than a pipe holds; so is one that
    /// closed its output but did not exit.
    #[test]
    fn a_stuck_child_is_killed_at_the_wall_clock_limit() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        for stuck in ["exec sleep 600", "exec >&-; exec sleep 600"] {
            let script = format!("echo $$ > '{}'; {stuck}", pid_file.display());
            let started = Instant::now();
            let error = compile_error(
                shell(&script, Duration::from_millis(300)),
                &component(4 << 20),
            );
            // A liveness bound, not a speed check: the child sleeps for ten minutes.
            assert!(started.elapsed() < Duration::from_secs(120), "{stuck}");
            assert!(
                matches!(
                    &error,
                    LoadError::CompileProcess {
                        source: ChildCompileError::Timeout(_),
                        ..
                    }
                ),
                "{stuck}: {error:?}"
            );
            let pid = fs::read_to_string(&pid_file).unwrap();
            assert!(
                !std::path::Path::new(&format!("/proc/{}", pid.trim())).exists(),
                "{stuck}: the child is still there"
            );
        }
    }

    /// A module refused for a limit, or refused by wasmtime in the compiler process, waits for
    /// its file to change; a compiler process that failed otherwise (killed from outside, timed
    /// out) is tried again later. Either way the set in force keeps serving.
    #[test]
    fn only_a_failed_compiler_process_is_tried_again() {
        let dir = tempfile::tempdir().unwrap();
        let sources = Sources {
            policy_dir: Some(dir.path().to_path_buf()),
            config_file: None,
            default_resource_prefix: "intel.com".into(),
        };
        let inventory = PolicyInventory::new(&Default::default(), &Default::default());
        for (script, retried) in [
            ("kill -XCPU $$", false),
            // wasmtime's refusal: out of memory is told apart (above), so it is the module's.
            ("echo 'type mismatch' >&2; exit 1", false),
            ("kill -KILL $$", true),
        ] {
            let active =
                ActivePolicies::new(engine_with(shell(script, Duration::from_secs(60)))).unwrap();
            assert!(active.reload(&sources, &inventory).changed);
            fs::write(dir.path().join("mine.wasm"), component(0)).unwrap();
            let refused = active.reload(&sources, &inventory);
            assert!(
                refused.refused.iter().any(|r| r.contains("mine.wasm")),
                "{script}: {refused:?}"
            );
            assert_eq!(active.pending_retry().is_some(), retried, "{script}");
            assert_eq!(
                active.current().unwrap().selector.id().name,
                defaults::UPSTREAM_SELECTOR_NAME
            );
            fs::remove_file(dir.path().join("mine.wasm")).unwrap();
        }
    }
}
