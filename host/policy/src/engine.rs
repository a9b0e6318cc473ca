//! The sandbox: one wasmtime `Engine` and one `Linker` for the process, an epoch ticker, and the
//! per-call `Store` with its deadline, memory cap and bounded buffers.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Engine, ResourceLimiter, Store};
use wasmtime_wasi::p2::pipe::{ClosedInputStream, MemoryOutputPipe, SinkOutputStream};
use wasmtime_wasi::random::Deterministic;
use wasmtime_wasi::{
    HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView,
};

use crate::bindings::{WitLogLevel, selector_world};
use crate::cache::CompileCache;
use crate::model::LogLine;

/// The sandbox limits. The defaults suit the default policies with a wide margin and still stop a
/// runaway policy quickly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Deadline of a `select` or `validate-settings` call, instantiation included.
    pub select_deadline: Duration,
    /// Deadline of a `prefer` call (kubelet waits on it), instantiation included.
    pub prefer_deadline: Duration,
    /// Linear memory a call may use, summed over the component's memories.
    pub memory_bytes: usize,
    /// Largest module file accepted.
    pub max_module_bytes: usize,
    /// Log lines kept per call; more are counted and dropped.
    pub max_log_lines: usize,
    /// Longest log line kept (bytes); longer lines are cut.
    pub max_log_line_bytes: usize,
    /// Bytes of guest stderr kept per call (a write beyond traps the guest). Stdout is discarded:
    /// a `print` left in a policy must never stop it; the `log` import is the way to be heard.
    pub max_output_bytes: usize,
    /// Epoch ticker period: the deadline resolution.
    pub tick: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            select_deadline: Duration::from_secs(2),
            prefer_deadline: Duration::from_millis(500),
            memory_bytes: 128 << 20,
            max_module_bytes: 64 << 20,
            max_log_lines: 100,
            max_log_line_bytes: 2048,
            max_output_bytes: 64 << 10,
            tick: Duration::from_millis(5),
        }
    }
}

/// Why the engine could not be created.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// wasmtime refused the configuration.
    #[error("cannot create the WebAssembly engine")]
    Engine(#[source] wasmtime::Error),
    /// The host functions (log, WASI) could not be linked.
    #[error("cannot link the host functions")]
    Link(#[source] wasmtime::Error),
    /// The epoch ticker thread could not start.
    #[error("cannot start the epoch ticker thread")]
    Ticker(#[source] std::io::Error),
}

/// One engine, one linker, one ticker; cheap to clone (shared).
#[derive(Clone)]
pub struct PolicyEngine {
    pub(crate) inner: Arc<EngineInner>,
}

pub(crate) struct EngineInner {
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<CallState>,
    pub(crate) limits: Limits,
    stop_ticker: Arc<AtomicBool>,
    /// Where compiled components are kept across restarts, if anywhere.
    pub(crate) cache: Option<CompileCache>,
}

impl Drop for EngineInner {
    fn drop(&mut self) {
        self.stop_ticker.store(true, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for PolicyEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyEngine")
            .field("limits", &self.inner.limits)
            .finish_non_exhaustive()
    }
}

impl PolicyEngine {
    /// Creates the engine (epoch interruption on), the linker (the `log` import and a WASI with no
    /// capabilities) and the ticker thread.
    pub fn new(limits: Limits) -> Result<Self, EngineError> {
        Self::with_cache(limits, None)
    }

    /// Like [`PolicyEngine::new`], with a precompiled-module cache for [`crate::Policy::compile`]
    /// (`None`: compile every module every time).
    pub fn with_cache(limits: Limits, cache: Option<CompileCache>) -> Result<Self, EngineError> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        config.wasm_component_model(true);
        let engine = Engine::new(&config).map_err(EngineError::Engine)?;

        let mut linker: Linker<CallState> = Linker::new(&engine);
        // Guests built for wasm32-wasip2 (Rust std, componentize-py, componentize-js) import WASI
        // even when they never use it; the context below grants nothing.
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(EngineError::Link)?;
        selector_world::vfpool::policy::log::add_to_linker::<CallState, HasSelf<CallState>>(
            &mut linker,
            |state| state,
        )
        .map_err(EngineError::Link)?;

        let stop_ticker = Arc::new(AtomicBool::new(false));
        let weak = engine.weak();
        let stop = Arc::clone(&stop_ticker);
        let tick = limits.tick;
        thread::Builder::new()
            .name("vfpool-policy-epoch".to_string())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    thread::sleep(tick);
                    match weak.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })
            .map_err(EngineError::Ticker)?;

        Ok(PolicyEngine {
            inner: Arc::new(EngineInner {
                engine,
                linker,
                limits,
                stop_ticker,
                cache,
            }),
        })
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// A fresh store for one call: no capabilities, frozen clocks, deterministic randomness,
    /// stdout discarded, bounded stderr, the memory cap, and a deadline `deadline` from now.
    pub(crate) fn store(&self, policy: &str, deadline: Duration) -> Store<CallState> {
        let limits = &self.inner.limits;
        let stderr = MemoryOutputPipe::new(limits.max_output_bytes);
        let wasi = WasiCtxBuilder::new()
            .stdin(ClosedInputStream)
            .stdout(SinkOutputStream)
            .stderr(stderr.clone())
            .wall_clock(FrozenClock)
            .monotonic_clock(FrozenClock)
            .secure_random(Deterministic::new(SEED.to_vec()))
            .insecure_random(Deterministic::new(SEED.to_vec()))
            .insecure_random_seed(0x7666_706f_6f6c)
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let state = CallState {
            wasi,
            table: ResourceTable::new(),
            memory: MemoryCap {
                limit: limits.memory_bytes,
                used: 0,
                exceeded: false,
            },
            logs: LogBuffer {
                policy: policy.to_string(),
                lines: Vec::new(),
                dropped: 0,
                max_lines: limits.max_log_lines,
                max_line_bytes: limits.max_log_line_bytes,
            },
            stderr,
        };
        let mut store = Store::new(&self.inner.engine, state);
        store.limiter(|state| &mut state.memory);
        let tick_nanos = limits.tick.as_nanos().max(1);
        // +1: the current epoch period is already partly over.
        let ticks = u64::try_from(deadline.as_nanos().div_ceil(tick_nanos)).unwrap_or(u64::MAX);
        store.set_epoch_deadline(ticks.saturating_add(1));
        store
    }
}

/// A fixed byte cycle for the guest's random numbers: the same input gives the same answer.
const SEED: [u8; 33] = *b"vfpool policies are deterministic";

/// Clocks that never move: a policy has no business reading the time.
struct FrozenClock;

impl HostWallClock for FrozenClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl HostMonotonicClock for FrozenClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

/// Per-call store data.
pub(crate) struct CallState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) memory: MemoryCap,
    pub(crate) logs: LogBuffer,
    pub(crate) stderr: MemoryOutputPipe,
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl selector_world::vfpool::policy::log::Host for CallState {
    fn log(&mut self, level: WitLogLevel, message: String) {
        self.logs.push(level, message);
    }
}

/// Caps the sum of all linear memories of one call and remembers whether the cap was hit, so a
/// memory trap is reported as such rather than as a generic trap.
pub(crate) struct MemoryCap {
    limit: usize,
    used: usize,
    pub(crate) exceeded: bool,
}

impl MemoryCap {
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let after = self.used.saturating_sub(current).saturating_add(desired);
        if after > self.limit {
            self.exceeded = true;
            return Err(wasmtime::format_err!(
                "memory cap of {} bytes reached (asked for {after})",
                self.limit
            ));
        }
        self.used = after;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Tables hold function references; a million is far beyond any real policy.
        Ok(desired <= 1_000_000)
    }
}

/// The policy's log lines for one call: forwarded to `tracing` and kept (bounded) for the caller.
pub(crate) struct LogBuffer {
    policy: String,
    pub(crate) lines: Vec<LogLine>,
    pub(crate) dropped: usize,
    max_lines: usize,
    max_line_bytes: usize,
}

impl LogBuffer {
    fn push(&mut self, level: WitLogLevel, mut message: String) {
        if self.lines.len() >= self.max_lines {
            self.dropped += 1;
            return;
        }
        if message.len() > self.max_line_bytes {
            let mut cut = self.max_line_bytes;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        let level = match level {
            WitLogLevel::Trace => "trace",
            WitLogLevel::Debug => "debug",
            WitLogLevel::Info => "info",
            WitLogLevel::Warn => "warn",
            WitLogLevel::Error => "error",
        };
        let policy = self.policy.as_str();
        match level {
            "error" => tracing::error!(policy, "{message}"),
            "warn" => tracing::warn!(policy, "{message}"),
            "info" => tracing::info!(policy, "{message}"),
            "debug" => tracing::debug!(policy, "{message}"),
            _ => tracing::trace!(policy, "{message}"),
        }
        self.lines.push(LogLine { level, message });
    }
}
