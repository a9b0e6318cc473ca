//! A compiled, type-checked policy module and its calls. Every call runs in a fresh store; every
//! failure — trap, timeout, memory cap, error result, invalid result — comes back as a
//! [`PolicyCallError`] naming the policy and its digest. Nothing here panics on guest behaviour.

use std::fmt::{self, Write as _};
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, ComponentExportIndex};
use wasmtime::{Store, Trap};

use crate::bindings::allocator_world::AllocatorPolicyPre;
use crate::bindings::selector_world::SelectorPolicyPre;
use crate::bindings::wit;
use crate::convert::PolicyInventory;
use crate::engine::{CallState, PolicyEngine};
use crate::isolate::{ChildCompileError, CompileBound, Compiler};
use crate::lowering::{InventoryRef, Lowering};
use crate::model::{LogLine, Outcome, Pool, Settings};
use crate::request::{AllocationRequestRef, SettingsRef};
use crate::validate::{self, BoundedText, guest_text};

/// The selector interface as the host's bindings name it.
const SELECTOR_INTERFACE: &str = "vfpool:policy/selector@0.1.0";

/// The allocator interface as the host's bindings name it (a component exporting a compatible
/// `0.1.x` matches, as the generated bindings do).
const ALLOCATOR_INTERFACE: &str = "vfpool:policy/allocator@0.1.0";

/// An interface name without its `@version`.
fn unversioned(name: &str) -> &str {
    name.split_once('@').map_or(name, |(name, _)| name)
}

/// A policy's identity in every message: its name and the SHA-256 of its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PolicyId {
    /// File name or the embedded default's name.
    pub name: String,
    /// Hex SHA-256 of the module bytes.
    pub sha256: String,
}

impl PolicyId {
    /// The identity of `bytes` called `name`.
    pub fn of(name: &str, bytes: &[u8]) -> Self {
        let digest = Sha256::digest(bytes);
        let sha256 = digest.iter().map(|b| format!("{b:02x}")).collect();
        PolicyId {
            name: name.to_string(),
            sha256,
        }
    }

    /// The first 12 hex digits, enough to tell versions apart in logs.
    pub fn short_digest(&self) -> &str {
        self.sha256.get(..12).unwrap_or(&self.sha256)
    }
}

impl fmt::Display for PolicyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "policy {:?} (sha256:{})", self.name, self.short_digest())
    }
}

/// Which interfaces a module exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    /// Exports `vfpool:policy/selector`.
    pub selector: bool,
    /// Exports `vfpool:policy/allocator`.
    pub allocator: bool,
}

/// What a refused file looks like, judged from its preamble.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModuleKind {
    /// Not WebAssembly.
    NotWasm,
    /// A core WebAssembly module, not a component.
    CoreModule,
    /// A component cut off before its end: a section runs past the last byte (a copy
    /// interrupted, or one still being written in place).
    Incomplete,
    /// A component that parses but that wasmtime refused: invalid contents, or more than the
    /// sandbox allows.
    Component,
}

impl ModuleKind {
    /// Judges `bytes` by their first eight bytes and, for a component, by whether its last
    /// section runs past the end (called when compiling failed, to say why). Only a file that
    /// ran out of bytes is `Incomplete`: a whole one that is damaged, or of another component
    /// encoding, is a `Component` wasmtime refused.
    pub fn of(bytes: &[u8]) -> Self {
        match bytes.get(..8) {
            Some([0, b'a', b's', b'm', 1, 0, 0, 0]) => ModuleKind::CoreModule,
            Some([0, b'a', b's', b'm', _, _, 1, 0]) if cut_short(bytes) => ModuleKind::Incomplete,
            Some([0, b'a', b's', b'm', _, _, 1, 0]) => ModuleKind::Component,
            _ => ModuleKind::NotWasm,
        }
    }

    fn explain(self) -> &'static str {
        match self {
            ModuleKind::NotWasm => {
                "not a valid WebAssembly component: not WebAssembly at all (build policies with a component toolchain, e.g. cargo build --target wasm32-wasip2)"
            }
            ModuleKind::CoreModule => {
                "not a valid WebAssembly component: a core module (build policies with a component toolchain, e.g. cargo build --target wasm32-wasip2, or wrap it with wasm-tools component new)"
            }
            ModuleKind::Incomplete => {
                "not a whole WebAssembly component: it ends in the middle of a section (cut off by an interrupted copy, or still being written in place; write modules elsewhere and rename them into place)"
            }
            ModuleKind::Component => {
                "not a valid WebAssembly component, or one beyond the sandbox's limits (damaged, or a memory larger than the per-call memory cap, or too many instances or tables; wasmtime's reason follows)"
            }
        }
    }
}

/// Whether the top-level sections after the 8-byte preamble run past the end of `bytes`: a
/// section id with no size after it, a size cut off, or a section longer than what is left.
fn cut_short(bytes: &[u8]) -> bool {
    let mut at = 8;
    while at < bytes.len() {
        // The section id, then its size as unsigned LEB128 (at most 5 bytes for 32 bits).
        at += 1;
        let mut size: u64 = 0;
        let mut shift = 0;
        loop {
            let Some(&byte) = bytes.get(at) else {
                return true;
            };
            at += 1;
            size |= u64::from(byte & 0x7f) << shift;
            shift += 7;
            if byte & 0x80 == 0 {
                break;
            }
            if shift >= 35 {
                // Not a size a whole file can have: damaged, not cut off.
                return false;
            }
        }
        match usize::try_from(size).ok().and_then(|s| at.checked_add(s)) {
            Some(end) if end <= bytes.len() => at = end,
            _ => return true,
        }
    }
    false
}

/// Why a module was not accepted as a policy.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file is larger than the limit.
    #[error("{id}: the module is {size} bytes, more than the {limit}-byte limit")]
    TooLarge {
        /// The module.
        id: PolicyId,
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// A core module of the component would need more host-side runtime state per instance
    /// (globals, imports, function references) than the sandbox allows.
    #[error(
        "{id}: core module #{module} of the component would need about {needs} bytes of runtime state per instance (globals, imports, function references), more than the sandbox's {limit}"
    )]
    InstanceState {
        /// The module.
        id: PolicyId,
        /// The core module's position among the file's core modules (0-based).
        module: usize,
        /// Its estimated state per instance.
        needs: usize,
        /// The limit.
        limit: usize,
    },
    /// A core module declares more initial linear memory than a call may use: every
    /// instantiation would fail. Refused before compiling (which could cost seconds of CPU and
    /// hundreds of MiB for nothing), and not retried.
    #[error(
        "{id}: core module #{module} of the component declares {bytes} bytes of initial memory, more than the {limit} a call may use"
    )]
    InitialMemory {
        /// The module.
        id: PolicyId,
        /// The core module's position among the file's core modules (0-based).
        module: usize,
        /// Its largest memory's initial size.
        bytes: u64,
        /// The sandbox's memory cap.
        limit: usize,
    },
    /// wasmtime refused the bytes: not WASM at all, a core module, a component cut off before
    /// its end, a damaged one, or one beyond the sandbox's limits.
    #[error("{id}: {}", .what.explain())]
    Compile {
        /// The module.
        id: PolicyId,
        /// What the file looks like, for the message.
        what: ModuleKind,
        /// Whether compiling it again may succeed: wasmtime's refusal of a component in this
        /// process may be for want of memory (code memory, a big module's compile), one in the
        /// compiler process is not (running out of memory there is [`LoadError::CompileLimit`]).
        may_pass_later: bool,
        /// wasmtime's reason.
        #[source]
        source: wasmtime::Error,
    },
    /// Compiling the module ran into a limit of the compiler process ([`crate::isolate`]): a
    /// verdict on the module, not compiled again until the file changes.
    #[error(
        "{id}: compiling it needs more than the {bound} the compiler process may use (a module shaped to stall the compiler, or far beyond any policy; the agent's --policy-compile-cpu and --policy-compile-memory-mib set the limits)"
    )]
    CompileLimit {
        /// The module.
        id: PolicyId,
        /// The limit it ran into.
        bound: CompileBound,
    },
    /// The compiler process failed in a way that says nothing about the module (it could not
    /// start, was killed from outside, or ran past its wall-clock time on a busy node): compiled
    /// again later.
    #[error("{id}: could not be compiled")]
    CompileProcess {
        /// The module.
        id: PolicyId,
        /// What happened.
        #[source]
        source: ChildCompileError,
    },
    /// The component imports something the host does not provide.
    #[error(
        "{id}: its imports cannot be satisfied; policies may import only vfpool:policy/log@0.1.x and WASI 0.2"
    )]
    Imports {
        /// The module.
        id: PolicyId,
        /// wasmtime's reason.
        #[source]
        source: wasmtime::Error,
    },
    /// The component exports `vfpool:policy/selector` or `vfpool:policy/allocator`, but with
    /// types other than the contract's (built against another version of the WIT).
    #[error(
        "{id}: exports {interface} with types other than vfpool's ({reason}); rebuild it against wit/policy.wit"
    )]
    WrongExportType {
        /// The module.
        id: PolicyId,
        /// The interface whose export does not type-check.
        interface: &'static str,
        /// wasmtime's reason.
        reason: String,
    },
    /// The component exports neither `vfpool:policy/selector` nor `vfpool:policy/allocator`
    /// (with the expected types).
    #[error(
        "{id}: exports neither vfpool:policy/selector@0.1.x nor vfpool:policy/allocator@0.1.x with the expected types ({selector_reason}; {allocator_reason})"
    )]
    NoPolicyExport {
        /// The module.
        id: PolicyId,
        /// Why the selector export did not type-check.
        selector_reason: String,
        /// Why the allocator export did not type-check.
        allocator_reason: String,
    },
}

impl LoadError {
    /// How a component compiled in the compiler process failed to load, in these terms.
    fn from_child(id: PolicyId, error: ChildCompileError) -> Self {
        let what = ModuleKind::Component;
        match error {
            // Loading its answer here: code memory may be short now and not later.
            ChildCompileError::Load(source) => LoadError::Compile {
                id,
                what,
                may_pass_later: true,
                source,
            },
            // Out of memory there is a `Limit`: this is the module's own fault.
            ChildCompileError::Refused(reason) => LoadError::Compile {
                id,
                what,
                may_pass_later: false,
                source: wasmtime::format_err!("{reason}"),
            },
            ChildCompileError::Limit(bound) => LoadError::CompileLimit { id, bound },
            source => LoadError::CompileProcess { id, source },
        }
    }
}

/// What went wrong in one call.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The deadline passed (epoch interruption).
    #[error("did not finish within its {0:?} deadline")]
    Timeout(Duration),
    /// The deadline passed, but the call had spent most of it waiting for a slot while
    /// `Limits::concurrent_calls` other calls ran: the host was overloaded, and the policy had
    /// little time of its own.
    // The wait is not in the message: it differs on every call, and a refusal repeated word for
    // word is said once.
    #[error(
        "ran out of its {deadline:?} deadline after waiting half of it or more for a call slot (the host is overloaded; the policy had only the rest)"
    )]
    Starved {
        /// The call's whole deadline.
        deadline: Duration,
        /// How long it waited for a slot before it started.
        waited: Duration,
    },
    /// Every instance slot stayed busy until the call's deadline (`Limits::concurrent_calls`
    /// calls were already running): the host was overloaded, the policy did not run.
    #[error("did not start: all {0} call slots stayed busy until its deadline")]
    Busy(usize),
    /// The policy tried to use more memory than the cap.
    #[error("exceeded its memory cap of {0} bytes")]
    MemoryCap(usize),
    /// The guest trapped (panic, abort, unreachable, ...): a bug in the policy.
    ///
    /// What the guest wrote to stderr comes first in the message: a Rust panic message or a
    /// Python traceback's last line says what went wrong, where the trap and its backtrace of
    /// runtime frames only say where.
    #[error("trapped: {}", trap_text(.message, .stderr, .stderr_cut))]
    Trap {
        /// The trap, with the wasm backtrace when available.
        message: String,
        /// What the guest wrote to stderr (a Rust panic message lands here), bounded.
        stderr: String,
        /// The guest wrote more to stderr than the host keeps (this many bytes): `stderr` is the
        /// end of what it wrote.
        stderr_cut: Option<usize>,
    },
    /// The policy handed the host data it refuses to read: a result (or log message) larger than
    /// `Limits::max_result_bytes`, or one that is malformed (out-of-bounds pointers, invalid
    /// UTF-8).
    #[error("handed the host data it refuses to read: {0}")]
    Refused(String),
    /// The component could not be instantiated.
    #[error("could not be instantiated: {0}")]
    Instantiate(String),
    /// The policy returned an error result.
    #[error("returned an error: {0}")]
    Returned(PolicyFailure),
    /// The policy returned a result the host refuses.
    #[error("returned an invalid result: {0}")]
    InvalidResult(#[from] validate::ResultError),
    /// The host could not build the request (a caller bug).
    #[error("bad request: {0}")]
    Request(#[from] validate::RequestError),
    /// The module does not export the interface for this call.
    #[error("does not export {0}")]
    NotExported(&'static str),
}

fn trap_text(message: &str, stderr: &str, stderr_cut: &Option<usize>) -> String {
    let stderr = stderr.trim_end();
    let cut = match stderr_cut {
        Some(limit) => format!(
            " [stderr cut: the policy wrote more than the {limit} bytes the host keeps; this is the end of it]"
        ),
        None => String::new(),
    };
    if stderr.is_empty() {
        format!("{message}{cut}")
    } else {
        format!("{stderr}{cut} ({message})")
    }
}

/// An error result a policy returned (`policy-error`). Its strings are the policy's, made safe to
/// log by [`validate::guest_text`]: at most [`validate::MAX_GUEST_TEXT_BYTES`] each, no line
/// breaks or other control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyFailure {
    /// `invalid-settings`: the field and the message.
    InvalidSettings {
        /// Path of the field (`resourceList[0].selectors.vendors`), empty for the whole text.
        field: String,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// `invalid-request`.
    InvalidRequest(String),
    /// `unsupported`.
    Unsupported(String),
    /// `internal`.
    Internal(String),
}

impl fmt::Display for PolicyFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PolicyFailure::InvalidSettings { field, message } if field.is_empty() => {
                write!(f, "invalid settings: {message}")
            }
            PolicyFailure::InvalidSettings { field, message } => {
                write!(f, "invalid settings: {field}: {message}")
            }
            PolicyFailure::InvalidRequest(m) => write!(f, "invalid request: {m}"),
            PolicyFailure::Unsupported(m) => write!(f, "unsupported: {m}"),
            PolicyFailure::Internal(m) => write!(f, "internal error: {m}"),
        }
    }
}

impl From<wit::PolicyError> for PolicyFailure {
    fn from(e: wit::PolicyError) -> Self {
        match e {
            wit::PolicyError::InvalidSettings(p) => PolicyFailure::InvalidSettings {
                field: guest_text(&p.field),
                message: guest_text(&p.message),
            },
            wit::PolicyError::InvalidRequest(m) => PolicyFailure::InvalidRequest(guest_text(&m)),
            wit::PolicyError::Unsupported(m) => PolicyFailure::Unsupported(guest_text(&m)),
            wit::PolicyError::Internal(m) => PolicyFailure::Internal(guest_text(&m)),
        }
    }
}

/// A failed call: which policy, which call, what happened.
#[derive(Debug, thiserror::Error)]
#[error("{policy} {call}: {error}")]
pub struct PolicyCallError {
    /// The policy.
    pub policy: PolicyId,
    /// `select`, `prefer`, `validate-settings`, ...
    pub call: &'static str,
    /// What happened (boxed: results stay small on the hot path).
    #[source]
    pub error: Box<CallError>,
    /// What the policy logged in this call before it failed (bounded like every call's lines):
    /// often what explains the failure. Not part of the message; the engine forwarded the lines
    /// at debug as they came.
    pub logs: Vec<LogLine>,
}

impl PolicyCallError {
    /// Whether the policy reported the settings as invalid (as opposed to misbehaving).
    pub fn invalid_settings(&self) -> Option<(&str, &str)> {
        match self.error.as_ref() {
            CallError::Returned(PolicyFailure::InvalidSettings { field, message }) => {
                Some((field, message))
            }
            _ => None,
        }
    }
}

/// A compiled, type-checked policy, ready to be instantiated per call. Cheap to share (`Arc`).
pub struct Policy {
    id: PolicyId,
    engine: PolicyEngine,
    selector: Option<Selector>,
    allocator: Option<Allocator>,
    /// How `select` passes the inventory and `prefer` its candidates: in one allocation when the
    /// module declares it may ([`crate::lowering::ARENA_ARGUMENTS_SECTION`]), else as the
    /// canonical ABI lays it down.
    argument_lowering: Lowering,
    compile_time: Duration,
}

/// The selector export: the generated bindings (type-checked at load) and the index of `select`,
/// which is called with the inventory lowering of [`crate::lowering`].
struct Selector {
    pre: SelectorPolicyPre<CallState>,
    select: ComponentExportIndex,
}

impl Selector {
    fn new(pre: SelectorPolicyPre<CallState>) -> wasmtime::Result<Self> {
        let select = function_index(pre.instance_pre().component(), SELECTOR_INTERFACE, "select")?;
        Ok(Selector { pre, select })
    }
}

/// The allocator export: the generated bindings (type-checked at load) and the index of `prefer`,
/// which is called through the borrowing request types of [`crate::request`].
struct Allocator {
    pre: AllocatorPolicyPre<CallState>,
    prefer: ComponentExportIndex,
}

impl Allocator {
    fn new(pre: AllocatorPolicyPre<CallState>) -> wasmtime::Result<Self> {
        let prefer = function_index(
            pre.instance_pre().component(),
            ALLOCATOR_INTERFACE,
            "prefer",
        )?;
        Ok(Allocator { pre, prefer })
    }
}

/// The export index of `function` in the exported `interface`.
fn function_index(
    component: &Component,
    interface: &str,
    function: &str,
) -> wasmtime::Result<ComponentExportIndex> {
    component
        .get_export_index(None, interface)
        .and_then(|interface| component.get_export_index(Some(&interface), function))
        .ok_or_else(|| wasmtime::format_err!("no function `{function}` in `{interface}`"))
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policy")
            .field("id", &self.id)
            .field("roles", &self.roles())
            .finish_non_exhaustive()
    }
}

impl Policy {
    /// Compiles `bytes` (blocking; seconds for multi-megabyte components: call it off any async
    /// runtime) or loads it from the engine's precompiled-module cache, links it and type-checks
    /// its exports.
    ///
    /// A component is compiled by the engine's [`Compiler`] (the agent's: a child process under
    /// limits); bytes that are no component fail in the caller's process, at once, on their
    /// preamble.
    pub fn compile(engine: &PolicyEngine, name: &str, bytes: &[u8]) -> Result<Policy, LoadError> {
        Self::compile_with(engine, name, bytes, &engine.inner.compiler)
    }

    /// [`Policy::compile`] for modules embedded in the caller's binary (the defaults): in this process,
    /// which needs no child to start (they are as trusted as the binary).
    pub fn compile_embedded(
        engine: &PolicyEngine,
        name: &str,
        bytes: &[u8],
    ) -> Result<Policy, LoadError> {
        Self::compile_with(engine, name, bytes, &Compiler::InProcess)
    }

    fn compile_with(
        engine: &PolicyEngine,
        name: &str,
        bytes: &[u8],
        compiler: &Compiler,
    ) -> Result<Policy, LoadError> {
        let id = PolicyId::of(name, bytes);
        let limit = engine.limits().max_module_bytes;
        if bytes.len() > limit {
            return Err(LoadError::TooLarge {
                id,
                size: bytes.len(),
                limit,
            });
        }
        // One read of the sections, before any compiling. The instance state: wasmtime checks it
        // itself with the instance pool, but not without it, so it is checked here in both modes.
        let footprint = crate::footprint::scan(bytes).unwrap_or_default();
        let limit = crate::engine::MAX_CORE_INSTANCE_STATE_BYTES;
        if let Some((module, needs)) = footprint.largest_instance
            && needs > limit
        {
            return Err(LoadError::InstanceState {
                id,
                module,
                needs,
                limit,
            });
        }
        let limit = engine.limits().memory_bytes;
        if footprint.component
            && let Some((module, bytes)) = footprint.largest_memory
            && bytes > u64::try_from(limit).unwrap_or(u64::MAX)
        {
            return Err(LoadError::InitialMemory {
                id,
                module,
                bytes,
                limit,
            });
        }
        let started = std::time::Instant::now();
        // A cache hit skips Cranelift (seconds for a Python or JavaScript component).
        let cache = engine.inner.cache.as_ref();
        // Stored once the module is accepted (below): one refused for its imports or exports
        // would only push useful entries out of the bounded cache.
        let mut compiled_now = false;
        let component = match cache.and_then(|c| c.load(&engine.inner.engine, bytes)) {
            Some(c) => c,
            None => {
                let what = ModuleKind::of(bytes);
                let compiled = match compiler {
                    Compiler::Child(child) if what == ModuleKind::Component => child
                        .compile(&engine.inner.engine, bytes)
                        .map_err(|e| LoadError::from_child(id.clone(), e)),
                    // In this process: trusted bytes, or no whole component (wasmtime refuses
                    // it on its first bytes).
                    _ => Component::new(&engine.inner.engine, bytes).map_err(|source| {
                        LoadError::Compile {
                            id: id.clone(),
                            what,
                            // Here a lack of memory can be why, as well as the bytes.
                            may_pass_later: what == ModuleKind::Component,
                            source,
                        }
                    }),
                };
                let component = compiled?;
                compiled_now = true;
                component
            }
        };
        let compile_time = started.elapsed();
        let pre = match engine.inner.linker.instantiate_pre(&component) {
            Ok(p) => p,
            Err(source) => return Err(LoadError::Imports { id, source }),
        };
        let selector = SelectorPolicyPre::new(pre.clone()).and_then(Selector::new);
        let allocator = AllocatorPolicyPre::new(pre).and_then(Allocator::new);
        // An interface that is exported but does not type-check is a broken policy, not a
        // missing role: serving the module without it would silently swap in the default.
        let exported: Vec<String> = component
            .component_type()
            .exports(&engine.inner.engine)
            .map(|(name, _)| name.to_owned())
            .collect();
        // Any version of the interface: one built against an incompatible version is broken too.
        let exports = |interface: &str| {
            exported
                .iter()
                .any(|name| unversioned(name) == unversioned(interface))
        };
        for (interface, result) in [
            (SELECTOR_INTERFACE, selector.as_ref().err()),
            (ALLOCATOR_INTERFACE, allocator.as_ref().err()),
        ] {
            if let Some(reason) = result
                && exports(interface)
            {
                return Err(LoadError::WrongExportType {
                    id,
                    interface,
                    reason: format!("{reason:#}"),
                });
            }
        }
        match (selector, allocator) {
            (Err(s), Err(a)) => Err(LoadError::NoPolicyExport {
                id,
                selector_reason: format!("{s:#}"),
                allocator_reason: format!("{a:#}"),
            }),
            (selector, allocator) => {
                if let (Some(cache), true) = (cache, compiled_now) {
                    cache.store(&engine.inner.engine, bytes, &component);
                }
                Ok(Policy {
                    id,
                    engine: engine.clone(),
                    selector: selector.ok(),
                    allocator: allocator.ok(),
                    argument_lowering: if footprint.arena_arguments {
                        Lowering::OneAllocation
                    } else {
                        Lowering::PerValue
                    },
                    compile_time,
                })
            }
        }
    }

    /// The policy's name and digest.
    pub fn id(&self) -> &PolicyId {
        &self.id
    }

    /// Which interfaces it exports.
    pub fn roles(&self) -> Roles {
        Roles {
            selector: self.selector.is_some(),
            allocator: self.allocator.is_some(),
        }
    }

    /// The policy with its arguments passed by `lowering`, whatever it declares (the tests
    /// compare lowerings).
    #[cfg(test)]
    pub(crate) fn with_argument_lowering(mut self, lowering: Lowering) -> Self {
        self.argument_lowering = lowering;
        self
    }

    /// Whether the module declares that its arguments may be passed in one allocation
    /// ([`crate::lowering::ARENA_ARGUMENTS_SECTION`]), and so gets them that way: a large
    /// inventory then costs one guest `realloc` instead of one per string and list.
    pub fn takes_arguments_in_one_allocation(&self) -> bool {
        self.argument_lowering == Lowering::OneAllocation
    }

    /// Passes what the policy logged during `call` on to the agent's log at the policy's own
    /// level, naming the policy (the text is already bounded and escaped): an author's warnings
    /// (a config key the policy ignores) must reach the operator. `repeated`: the caller has
    /// passed on these same lines before (a `select` on every rescan, a refused set tried again),
    /// so they go to debug only: the log stays quiet in steady state.
    pub fn emit_logs<T>(&self, call: &str, outcome: &Outcome<T>, repeated: bool) {
        let policy = &self.id;
        for line in &outcome.logs {
            let message = &line.message;
            if repeated {
                // `policy_level`: a field named `level` would clash with the line's own in JSON logs.
                tracing::debug!(%policy, call, policy_level = line.level, "policy (again): {message}");
                continue;
            }
            match line.level {
                "error" => tracing::error!(%policy, call, "policy: {message}"),
                "warn" => tracing::warn!(%policy, call, "policy: {message}"),
                "info" => tracing::info!(%policy, call, "policy: {message}"),
                "debug" => tracing::debug!(%policy, call, "policy: {message}"),
                _ => tracing::trace!(%policy, call, "policy: {message}"),
            }
        }
        if outcome.logs_dropped > 0 && !repeated {
            tracing::warn!(
                %policy,
                call,
                dropped = outcome.logs_dropped,
                "policy: more log lines than the host keeps per call; the rest were dropped"
            );
        }
    }

    /// How long compiling (or loading from the cache) took.
    pub fn compile_time(&self) -> Duration {
        self.compile_time
    }

    fn fail(&self, call: &'static str, error: CallError) -> PolicyCallError {
        self.fail_after(call, error, Vec::new())
    }

    /// [`Self::fail`] of a call that logged `logs` first.
    fn fail_after(
        &self,
        call: &'static str,
        error: CallError,
        logs: Vec<LogLine>,
    ) -> PolicyCallError {
        PolicyCallError {
            policy: self.id.clone(),
            call,
            error: Box::new(error),
            logs,
        }
    }

    /// Runs one export call in a fresh store: instantiate, call, classify a failure (deadline,
    /// memory cap, trap) and turn an error the policy returned into [`CallError::Returned`].
    fn run<I, R>(
        &self,
        call: &'static str,
        deadline: Duration,
        instantiate: impl FnOnce(&mut Store<CallState>) -> wasmtime::Result<I>,
        invoke: impl FnOnce(I, &mut Store<CallState>) -> wasmtime::Result<Result<R, wit::PolicyError>>,
    ) -> Result<(R, CallState), PolicyCallError> {
        let started = std::time::Instant::now();
        // Declared before the store, so released after it: the store's instances hold the slot.
        let _slot = self.engine.slot(deadline).ok_or_else(|| {
            self.fail(call, CallError::Busy(self.engine.limits().concurrent_calls))
        })?;
        // The wait for a slot counts against the deadline: callers (kubelet) wait on the whole.
        let waited = started.elapsed();
        let left = deadline.saturating_sub(waited);
        let mut store = self.engine.store(&self.id.name, left);
        let result = instantiate(&mut store)
            .map_err(|e| classify(e, &store, deadline, waited, true))
            .and_then(|instance| {
                invoke(instance, &mut store)
                    .map_err(|e| classify(e, &store, deadline, waited, false))
            });
        let state = store.into_data();
        let error = match result {
            Ok(Ok(value)) => return Ok((value, state)),
            Ok(Err(e)) => CallError::Returned(e.into()),
            Err(e) => e,
        };
        Err(self.fail_after(call, error, state.logs.lines))
    }

    fn selector(&self, call: &'static str) -> Result<&Selector, PolicyCallError> {
        self.selector
            .as_ref()
            .ok_or_else(|| self.fail(call, CallError::NotExported("vfpool:policy/selector")))
    }

    fn allocator(&self, call: &'static str) -> Result<&Allocator, PolicyCallError> {
        self.allocator
            .as_ref()
            .ok_or_else(|| self.fail(call, CallError::NotExported("vfpool:policy/allocator")))
    }

    /// `selector.validate-settings`.
    pub fn validate_selector_settings(
        &self,
        settings: &Settings,
    ) -> Result<Outcome<()>, PolicyCallError> {
        const CALL: &str = "selector validate-settings";
        let pre = &self.selector(CALL)?.pre;
        let (value, state) = self.run(
            CALL,
            self.engine.limits().select_deadline,
            |store| pre.instantiate(store),
            |instance, store| {
                instance
                    .vfpool_policy_selector()
                    .call_validate_settings(store, &wit_settings(settings))
            },
        )?;
        Ok(outcome(value, state))
    }

    /// `selector.select` over `inventory`, with the result checked by [`validate::pools`].
    pub fn select(
        &self,
        settings: &Settings,
        inventory: &PolicyInventory,
    ) -> Result<Outcome<Vec<Pool>>, PolicyCallError> {
        self.select_lowered(settings, inventory, self.argument_lowering)
    }

    /// [`Self::select`] with the inventory passed in by `lowering`.
    pub(crate) fn select_lowered(
        &self,
        settings: &Settings,
        inventory: &PolicyInventory,
        lowering: Lowering,
    ) -> Result<Outcome<Vec<Pool>>, PolicyCallError> {
        const CALL: &str = "select";
        let (pools, mut state) = self.select_unchecked(settings, inventory, lowering)?;
        let pools = match validate::pools(pools, inventory) {
            Ok((pools, withheld)) => {
                // Said with the policy's own lines: once, then at debug while it keeps doing it.
                state
                    .logs
                    .lines
                    .extend(withheld.iter().map(|w| crate::model::LogLine {
                        level: "warn",
                        message: w.to_string(),
                    }));
                pools
            }
            Err(e) => return Err(self.fail_after(CALL, e.into(), state.logs.lines)),
        };
        Ok(outcome(pools, state))
    }

    /// `selector.select`, its answer as the guest gave it: not yet checked against the inventory
    /// (see [`validate::pools`]).
    pub(crate) fn select_unchecked(
        &self,
        settings: &Settings,
        inventory: &PolicyInventory,
        lowering: Lowering,
    ) -> Result<(Vec<wit::Pool>, CallState), PolicyCallError> {
        const CALL: &str = "select";
        let selector = self.selector(CALL)?;
        self.run(
            CALL,
            self.engine.limits().select_deadline,
            |store| selector.pre.instance_pre().instantiate(store),
            |instance, store| {
                let select = instance.get_typed_func::<
                    (SettingsRef<'_>, InventoryRef<'_>),
                    (Result<Vec<wit::Pool>, wit::PolicyError>,),
                >(&mut *store, &selector.select)?;
                let (answer,) = select.call(
                    &mut *store,
                    (
                        SettingsRef::new(settings),
                        InventoryRef::new(inventory, lowering),
                    ),
                )?;
                Ok(answer)
            },
        )
    }

    /// `allocator.validate-settings`.
    pub fn validate_allocator_settings(
        &self,
        settings: &Settings,
    ) -> Result<Outcome<()>, PolicyCallError> {
        const CALL: &str = "allocator validate-settings";
        let pre = &self.allocator(CALL)?.pre;
        let (value, state) = self.run(
            CALL,
            self.engine.limits().select_deadline,
            |store| pre.instantiate(store),
            |instance, store| {
                instance
                    .vfpool_policy_allocator()
                    .call_validate_settings(store, &wit_settings(settings))
            },
        )?;
        Ok(outcome(value, state))
    }

    /// `allocator.prefer`: the preferred ids for `size` devices of pool `pool` among `available`
    /// (ids in `inventory`), `must_include` among them; the answer is checked by
    /// [`validate::preference`].
    pub fn prefer(
        &self,
        settings: &Settings,
        inventory: &PolicyInventory,
        pool: &str,
        available: &[String],
        must_include: &[String],
        size: u32,
    ) -> Result<Outcome<Vec<String>>, PolicyCallError> {
        self.prefer_within(
            settings,
            inventory,
            pool,
            available,
            must_include,
            size,
            self.engine.limits().prefer_deadline,
        )
    }

    /// [`Self::prefer`] for a caller that needs the answer `within` from now, if that is sooner
    /// than the engine's `prefer` deadline (the device plugin, whose request has waited for a
    /// permit): a call that could only answer too late stops when the caller stops waiting,
    /// instead of keeping its slot and a core for nothing.
    #[allow(clippy::too_many_arguments)] // prefer's own, plus the deadline
    pub fn prefer_within(
        &self,
        settings: &Settings,
        inventory: &PolicyInventory,
        pool: &str,
        available: &[String],
        must_include: &[String],
        size: u32,
        within: Duration,
    ) -> Result<Outcome<Vec<String>>, PolicyCallError> {
        const CALL: &str = "prefer";
        let allocator = self.allocator(CALL)?;
        let request = validate::allocation_request(inventory, pool, available, must_include, size)
            .map_err(|e| self.fail(CALL, e.into()))?;
        let (ids, state) = self.run(
            CALL,
            within.min(self.engine.limits().prefer_deadline),
            |store| allocator.pre.instance_pre().instantiate(store),
            |instance, store| {
                let prefer = instance.get_typed_func::<
                    (SettingsRef<'_>, AllocationRequestRef<'_>),
                    (Result<Vec<String>, wit::PolicyError>,),
                >(&mut *store, &allocator.prefer)?;
                let (answer,) = prefer.call(
                    &mut *store,
                    (
                        SettingsRef::new(settings),
                        request.lowered(self.argument_lowering),
                    ),
                )?;
                Ok(answer)
            },
        )?;
        let ids = match validate::preference(ids, &request) {
            Ok(ids) => ids,
            Err(e) => return Err(self.fail_after(CALL, e.into(), state.logs.lines)),
        };
        Ok(outcome(ids, state))
    }
}

fn wit_settings(settings: &Settings) -> wit::Settings {
    wit::Settings {
        config: settings.config.clone(),
        default_resource_prefix: settings.default_resource_prefix.clone(),
    }
}

fn outcome<T>(value: T, state: CallState) -> Outcome<T> {
    Outcome {
        value,
        logs: state.logs.lines,
        logs_dropped: state.logs.dropped,
    }
}

/// Classifies a wasmtime error by type (never by message text): deadline, memory cap, trap.
/// `waited`: how much of `deadline` went by before the call got its slot.
fn classify(
    error: wasmtime::Error,
    store: &Store<CallState>,
    deadline: Duration,
    waited: Duration,
    instantiating: bool,
) -> CallError {
    if let Some(Trap::Interrupt) = error.downcast_ref::<Trap>() {
        return out_of_time(deadline, waited);
    }
    if store.data().memory.exceeded {
        return CallError::MemoryCap(store.data().memory.limit());
    }
    let (written, dropped) = store.data().stderr.contents();
    let stderr_cut = (dropped > 0).then_some(store.data().stderr.keeps());
    let stderr = String::from_utf8_lossy(&written).into_owned();
    // The end of stderr (where a panic message is), escaped and bounded like all guest text.
    let stderr = guest_text(&tail(&stderr, validate::MAX_GUEST_TEXT_BYTES));
    if let Some(wasmtime_wasi::I32Exit(status)) = error.downcast_ref::<wasmtime_wasi::I32Exit>() {
        // `process::exit`, a Go `log.Fatal`: the reason is on stderr.
        return CallError::Trap {
            message: format!("exited with status {status} instead of returning"),
            stderr,
            stderr_cut,
        };
    }
    if error.downcast_ref::<Trap>().is_none() {
        // Not a trap: wasmtime refused what the guest handed over (or, while instantiating, the
        // component itself).
        return if instantiating {
            CallError::Instantiate(error_text(&error))
        } else {
            CallError::Refused(error_text(&error))
        };
    }
    CallError::Trap {
        message: error_text(&error),
        stderr,
        stderr_cut,
    }
}

/// A call interrupted at its deadline: [`CallError::Starved`] when waiting for a slot took half of
/// it or more (the policy is not to blame then), [`CallError::Timeout`] otherwise.
fn out_of_time(deadline: Duration, waited: Duration) -> CallError {
    if waited >= deadline / 2 {
        CallError::Starved { deadline, waited }
    } else {
        CallError::Timeout(deadline)
    }
}

/// Longest text of a wasmtime error kept in a [`CallError`], in bytes: a trap's reason and the
/// first frames of its backtrace (see `MAX_BACKTRACE_FRAMES` in the engine).
const MAX_ERROR_TEXT_BYTES: usize = 2048;

/// A wasmtime error as one bounded line. Its text carries guest data (a backtrace names the
/// guest's functions, up to 100 KB each, from its name section), so it is escaped and cut like
/// any guest text, and formatted straight into the bounded buffer, never whole first. The root
/// cause (the trap's reason) comes first so the cut never removes it.
fn error_text(error: &wasmtime::Error) -> String {
    let mut text = BoundedText::new(MAX_ERROR_TEXT_BYTES);
    let root = error.root_cause();
    // A write error only means the text reached its limit, which `finish` marks.
    let _ = write!(text, "{root}");
    for cause in error
        .chain()
        .filter(|cause| !std::ptr::addr_eq(*cause, root))
    {
        let _ = write!(text, "; {cause}");
    }
    text.finish()
}

fn tail(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &text[start..])
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{CallError, out_of_time};

    /// A call that waited most of its deadline for a slot and was then interrupted was reported
    /// as a policy too slow for its deadline, though it had run for milliseconds: the host was
    /// overloaded, and the message now says so.
    #[test]
    fn a_deadline_spent_waiting_for_a_slot_blames_the_wait() {
        let deadline = Duration::from_secs(2);
        let starved = out_of_time(deadline, Duration::from_millis(1990));
        assert!(matches!(starved, CallError::Starved { .. }), "{starved}");
        let text = starved.to_string();
        assert!(
            text.contains("for a call slot") && text.contains("overloaded"),
            "{text}"
        );
        // Word for word the same however long it waited, so a retry refused so is said once.
        assert_eq!(
            text,
            out_of_time(deadline, Duration::from_secs(1)).to_string()
        );
        let slow = out_of_time(deadline, Duration::from_millis(3));
        assert!(matches!(slow, CallError::Timeout(_)), "{slow}");
    }
}
