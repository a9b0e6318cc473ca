//! The sandbox: one wasmtime `Engine` and one `Linker` for the process, an epoch ticker, the
//! per-call `Store` with its deadline, memory cap and bounded buffers, and the pool of instance
//! slots calls run in.

use std::future::Future;
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use wasmtime::component::{HasSelf, Linker, Resource, ResourceTable};
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ResourceLimiter,
    Store,
};
use wasmtime_wasi::p2::pipe::{ClosedInputStream, SinkOutputStream};
use wasmtime_wasi::p2::{DynPollable, Pollable, subscribe};
use wasmtime_wasi::random::Deterministic;
use wasmtime_wasi::{
    HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView,
};

use crate::bindings::{WitLogLevel, selector_world};
use crate::cache::CompileCache;
use crate::isolate::Compiler;
use crate::model::LogLine;

/// The sandbox limits. The defaults suit the default policies with a wide margin and still stop a
/// runaway policy quickly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Deadline of a `select` or `validate-settings` call, the wait for an instance slot and
    /// instantiation included.
    pub select_deadline: Duration,
    /// Deadline of a `prefer` call (kubelet waits on it), slot wait and instantiation included.
    pub prefer_deadline: Duration,
    /// Linear memory a call may use, summed over the component's memories (tables count too).
    ///
    /// Besides it, a call's instances hold runtime state on the host heap (wasmtime's
    /// `VMContext`s: globals, function references), which grows with what the component
    /// declares, not with what it does. With the instance pool, a component needing more than
    /// 2 MiB of it in all, or 1 MiB for one core instance, is refused when compiled (the example
    /// policies need at most 400 KB), so calls hold at most `concurrent_calls` x 2 MiB of it.
    /// Without the pool (`pool_instances: false`, or a refused reservation) only the count of
    /// core instances (32) is capped, not their size.
    pub memory_bytes: usize,
    /// Largest module file accepted.
    pub max_module_bytes: usize,
    /// Log lines kept per call; more are counted and dropped.
    pub max_log_lines: usize,
    /// Longest log line kept (bytes); longer lines are cut.
    pub max_log_line_bytes: usize,
    /// Bytes of guest stderr kept per call: the last ones written (where a panic message is);
    /// every write is accepted, so a chatty policy works on a big node as on a small one. Stdout
    /// is discarded:
    /// a `print` left in a policy must never stop it; the `log` import is the way to be heard.
    pub max_output_bytes: usize,
    /// Bytes a policy may hand the host in one transfer: the strings and lists of a call's result,
    /// or of one `log` call. wasmtime copies them into the agent's memory before any check can
    /// look at them, and strings of a result may all point at the same guest bytes, so without
    /// this a policy well within its memory cap could make the agent allocate far more than it
    /// (wasmtime's own default is 128 MiB). 16 MiB holds the pools of a node with tens of
    /// thousands of devices.
    pub max_result_bytes: usize,
    /// Epoch ticker period: the deadline resolution.
    pub tick: Duration,
    /// Calls that may run at once. The engine keeps this many pre-reserved instance slots (a call
    /// reuses a warm slot instead of mapping fresh memory); a call beyond waits for a free slot,
    /// within its deadline.
    pub concurrent_calls: usize,
    /// Reserve the instance slots up front (wasmtime's pooling allocator; a few hundred GiB of
    /// address space, no memory) so a call reuses a warm slot. `false`, or a pool the process
    /// cannot reserve: every call maps and unmaps fresh memory (slower; see BENCHMARKS.md).
    pub pool_instances: bool,
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
            max_result_bytes: 16 << 20,
            tick: Duration::from_millis(5),
            concurrent_calls: 16,
            pool_instances: true,
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
    /// A limit is out of range.
    #[error("invalid policy limits: {0}")]
    Limits(&'static str),
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
    /// Free instance slots; a call takes one before it instantiates (see [`CallSlots`]).
    slots: CallSlots,
    stop_ticker: Arc<AtomicBool>,
    /// Where compiled components are kept across restarts, if anywhere.
    pub(crate) cache: Option<CompileCache>,
    /// Where modules that are not embedded are compiled.
    pub(crate) compiler: Compiler,
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
        Self::with_compiler(limits, cache, Compiler::InProcess)
    }

    /// Like [`PolicyEngine::with_cache`], compiling modules with `compiler` (the agent: in a
    /// child process under limits, see [`crate::isolate`]).
    pub fn with_compiler(
        limits: Limits,
        cache: Option<CompileCache>,
        compiler: Compiler,
    ) -> Result<Self, EngineError> {
        if limits.concurrent_calls == 0 {
            return Err(EngineError::Limits("concurrent_calls must be at least 1"));
        }
        let mut config = compile_config();
        if limits.pool_instances {
            config.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling(&limits)));
        }
        let engine = match Engine::new(&config) {
            Ok(engine) => engine,
            Err(error) if limits.pool_instances => {
                // An address-space limit (`ulimit -v`) can refuse the reservation; calls still
                // work without it, only slower.
                tracing::warn!(
                    error = format!("{error:#}"),
                    "cannot reserve the policy instance pool; every call will map its own memory"
                );
                config.allocation_strategy(InstanceAllocationStrategy::OnDemand);
                Engine::new(&config).map_err(EngineError::Engine)?
            }
            Err(error) => return Err(EngineError::Engine(error)),
        };

        let mut linker: Linker<CallState> = Linker::new(&engine);
        // Guests built for wasm32-wasip2 (Rust std, componentize-py, componentize-js) import WASI
        // even when they never use it; the context below grants nothing.
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(EngineError::Link)?;
        frozen_sleep(&mut linker).map_err(EngineError::Link)?;
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
                slots: CallSlots::new(limits.concurrent_calls),
                limits,
                stop_ticker,
                cache,
                compiler,
            }),
        })
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// Waits, until `deadline` from now at the latest, for an instance slot. Hold the slot until
    /// the call's store is dropped: the store's instances occupy it until then.
    pub(crate) fn slot(&self, deadline: Duration) -> Option<CallSlot<'_>> {
        self.inner.slots.take(deadline)
    }

    /// A fresh store for one call: no capabilities, frozen clocks, deterministic randomness,
    /// stdout discarded, bounded stderr, the memory cap, and a deadline `deadline` from now.
    pub(crate) fn store(&self, policy: &str, deadline: Duration) -> Store<CallState> {
        let limits = &self.inner.limits;
        let stderr = StderrTail::new(limits.max_output_bytes);
        let wasi = WasiCtxBuilder::new()
            .stdin(ClosedInputStream)
            .stdout(SinkOutputStream)
            .stderr(stderr.clone())
            .wall_clock(FrozenClock)
            .monotonic_clock(FrozenClock)
            .secure_random(Deterministic::new(SEED.to_vec()))
            .insecure_random(Deterministic::new(SEED.to_vec()))
            .insecure_random_seed(0x7666_706f_6f6c)
            // Random bytes are made on the host, outside the memory cap, and a deadline cannot
            // interrupt host code: wasmtime-wasi's default allows 64 MiB per call.
            .max_random_size(MAX_RANDOM_BYTES)
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let state = CallState {
            wasi,
            table: {
                let mut table = ResourceTable::new();
                table.set_max_capacity(MAX_HOST_RESOURCES);
                table
            },
            memory: MemoryCap::new(limits.memory_bytes),
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
        store.set_hostcall_fuel(limits.max_result_bytes);
        store.set_max_component_handles(MAX_COMPONENT_HANDLES);
        let tick_nanos = limits.tick.as_nanos().max(1);
        // +1: the current epoch period is already partly over.
        let ticks = u64::try_from(deadline.as_nanos().div_ceil(tick_nanos)).unwrap_or(u64::MAX);
        store.set_epoch_deadline(ticks.saturating_add(1));
        store
    }
}

/// Host resources (WASI streams, pollables, ...) a call may hold at once. Each lives on the host
/// heap, outside the memory cap; wasmtime's default is a million per store, ~100 MB that a guest
/// can fill within its deadline (a loop of `subscribe-duration`). The examples in every language
/// hold a handful.
const MAX_HOST_RESOURCES: usize = 4096;

/// The most bytes one `get-random-bytes` (or its insecure twin) may ask for: enough for any
/// seed or id a policy needs; a larger request fails the call (see `WasiCtxBuilder::max_random_size`).
const MAX_RANDOM_BYTES: u64 = 64 << 10;

/// Component-model handles a call may hold at once (wasmtime's default: 100,000), for the same
/// reason.
const MAX_COMPONENT_HANDLES: usize = 4096;

/// The WASI version `add_to_linker_sync` defines; components importing any earlier 0.2.x resolve
/// to it.
const WASI_MONOTONIC_CLOCK: &str = "wasi:clocks/monotonic-clock@0.2.12";

/// Replaces WASI's sleeps (`subscribe-duration`, `subscribe-instant`) with ones that are ready at
/// once. wasmtime-wasi's own block the calling thread in host code, where the epoch deadline is
/// never checked: a policy calling `sleep` (Rust `thread::sleep`, Python `time.sleep`) held a
/// call slot, and the caller, for as long as it asked. With policy time frozen, a sleep that
/// returns at once is the consistent answer; a policy sleeping in a loop spins into its deadline.
fn frozen_sleep(linker: &mut Linker<CallState>) -> wasmtime::Result<()> {
    fn ready_now(
        mut store: wasmtime::StoreContextMut<'_, CallState>,
    ) -> wasmtime::Result<(Resource<DynPollable>,)> {
        let table = &mut store.data_mut().table;
        let ready = table.push(ReadyNow)?;
        Ok((subscribe(table, ready)?,))
    }
    linker.allow_shadowing(true);
    let mut clock = linker.instance(WASI_MONOTONIC_CLOCK)?;
    clock.func_wrap("subscribe-duration", |store, (_,): (u64,)| ready_now(store))?;
    clock.func_wrap("subscribe-instant", |store, (_,): (u64,)| ready_now(store))?;
    linker.allow_shadowing(false);
    Ok(())
}

/// A pollable that is always ready (see [`frozen_sleep`]).
struct ReadyNow;

impl Pollable for ReadyNow {
    // The trait is declared with `async_trait`; this is its expansion for a future that is ready.
    fn ready<'a, 'b>(&'a mut self) -> Pin<Box<dyn Future<Output = ()> + Send + 'b>>
    where
        'a: 'b,
        Self: 'b,
    {
        Box::pin(std::future::ready(()))
    }
}

/// The engine configuration that decides how code is compiled: the agent's engine and the
/// compiler process ([`crate::isolate`]) both start from it, so what one compiles the other loads.
/// How instances are allocated is not part of it (it does not change the code).
pub(crate) fn compile_config() -> Config {
    let mut config = Config::new();
    config.epoch_interruption(true);
    config.wasm_component_model(true);
    // A trap's backtrace becomes part of its error, which is logged; wasmtime's default is 20
    // frames, each naming a guest function (up to 100 KB from the name section). The first
    // frames locate a bug; the error text is cut anyway (`policy::error_text`).
    config.wasm_backtrace_max_frames(NonZeroUsize::new(MAX_BACKTRACE_FRAMES));
    config
}

/// Frames a trap's backtrace keeps.
const MAX_BACKTRACE_FRAMES: usize = 8;

/// Per-component ceilings of the instance pool; a component beyond them is refused when it is
/// compiled, with wasmtime naming the limit. Measured (wasmtime 48, x86-64): the Rust policies
/// instantiate 3 core modules, the componentize-py example 14, the componentize-js one 4.
const MAX_CORE_INSTANCES_PER_COMPONENT: u32 = 32;
const MAX_MEMORIES_PER_COMPONENT: u32 = 4;
const MAX_TABLES_PER_COMPONENT: u32 = 16;
const MAX_TABLE_ELEMENTS: usize = 1 << 20;
/// Runtime state (`VMContext`: globals, function references, table and memory descriptors) of
/// one core instance. wasmtime allocates it on the host heap per call, outside the memory cap
/// and uninterruptible by the deadline, so it is bounded here instead. Measured (wasmtime 48,
/// x86-64): the Rust policies need at most 5.5 KB, componentize-js 202 KB, componentize-py
/// 242 KB; 1 MiB leaves 4x the largest.
pub(crate) const MAX_CORE_INSTANCE_STATE_BYTES: usize = 1 << 20;
/// Runtime state of one call: the component's own context plus all its core instances' (wasmtime
/// checks the sum when it compiles a component). Measured: Rust policies 7.8 KB, componentize-js
/// 208 KB, componentize-py 399 KB; 2 MiB leaves 5x the largest. This, not
/// `MAX_CORE_INSTANCES_PER_COMPONENT` times the per-instance size, bounds a call: with the
/// instance pool, `concurrent_calls` x 2 MiB in all.
const MAX_COMPONENT_STATE_BYTES: usize = 2 << 20;
/// Linear memory (and table) bytes a slot keeps mapped between calls, zeroing them instead of
/// returning them to the kernel: a call then writes its inputs without a page fault per page.
/// 1 MiB covers the default policies' working set on a 1,024-VF node. It applies to each memory
/// and each table slot a call used, up to the size the call left it at: the default policies use
/// one memory and a few KiB of tables, so idle slots hold about `concurrent_calls` MiB; the
/// ceiling, every memory and table slot of the pool filled by large components, is
/// `concurrent_calls` x (`MAX_MEMORIES_PER_COMPONENT` + `MAX_TABLES_PER_COMPONENT`) MiB.
const KEEP_RESIDENT_BYTES: usize = 1 << 20;

/// The pooling allocator sized for `limits.concurrent_calls` calls: every slot is reserved when
/// the engine is created (address space only), so an instantiation is a slot reuse, not an
/// `mmap`/`munmap` pair plus a page fault for every page the call touches.
fn pooling(limits: &Limits) -> PoolingAllocationConfig {
    let calls = u32::try_from(limits.concurrent_calls).unwrap_or(u32::MAX);
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(calls)
        .total_core_instances(calls.saturating_mul(MAX_CORE_INSTANCES_PER_COMPONENT))
        .total_memories(calls.saturating_mul(MAX_MEMORIES_PER_COMPONENT))
        .total_tables(calls.saturating_mul(MAX_TABLES_PER_COMPONENT))
        .max_core_instances_per_component(MAX_CORE_INSTANCES_PER_COMPONENT)
        .max_memories_per_component(MAX_MEMORIES_PER_COMPONENT)
        .max_tables_per_component(MAX_TABLES_PER_COMPONENT)
        .table_elements(MAX_TABLE_ELEMENTS)
        .max_component_instance_size(MAX_COMPONENT_STATE_BYTES)
        .max_core_instance_size(MAX_CORE_INSTANCE_STATE_BYTES)
        // The memory cap is enforced per call by `MemoryCap`; a slot never needs to be larger.
        .max_memory_size(limits.memory_bytes)
        .linear_memory_keep_resident(KEEP_RESIDENT_BYTES)
        .table_keep_resident(KEEP_RESIDENT_BYTES)
        // Where the kernel can tell which pages a call dirtied (PAGEMAP_SCAN), reset only those:
        // 30% off `prefer` (180 against 260 µs). But in wasmtime 48 that scan resets only dirty
        // pages that are resident, and a page swapped out keeps one call's data for the next
        // instance in the slot, which may be another policy's (bytecodealliance/wasmtime#14357):
        // on a node with swap, every page a call touched is reset instead.
        .pagemap_scan(if swap_configured() {
            Enabled::No
        } else {
            Enabled::Auto
        });
    pool
}

/// Whether the machine has swap space (`SwapTotal` in `/proc/meminfo`), counting an unreadable
/// answer as yes. Swap turned on after the agent started is not seen: restart the agent then.
fn swap_configured() -> bool {
    std::fs::read_to_string("/proc/meminfo").map_or(true, |text| swap_in_meminfo(&text))
}

/// [`swap_configured`] on the text of `/proc/meminfo`.
fn swap_in_meminfo(meminfo: &str) -> bool {
    meminfo
        .lines()
        .find_map(|line| line.strip_prefix("SwapTotal:"))
        .and_then(|rest| rest.split_ascii_whitespace().next())
        .and_then(|kib| kib.parse::<u64>().ok())
        .is_none_or(|kib| kib > 0)
}

/// A counting gate over the instance slots: a call that would find the pool exhausted waits
/// instead of failing to instantiate (which would read as a broken policy).
struct CallSlots {
    free: Mutex<usize>,
    freed: Condvar,
}

impl CallSlots {
    fn new(slots: usize) -> Self {
        CallSlots {
            free: Mutex::new(slots),
            freed: Condvar::new(),
        }
    }

    fn take(&self, deadline: Duration) -> Option<CallSlot<'_>> {
        let until = Instant::now().checked_add(deadline);
        let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
        while *free == 0 {
            free = match until {
                Some(until) => {
                    let left = until.checked_duration_since(Instant::now())?;
                    self.freed
                        .wait_timeout(free, left)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
                None => self
                    .freed
                    .wait(free)
                    .unwrap_or_else(PoisonError::into_inner),
            };
        }
        *free -= 1;
        Some(CallSlot { slots: self })
    }
}

/// One instance slot, returned when dropped.
pub(crate) struct CallSlot<'a> {
    slots: &'a CallSlots,
}

impl Drop for CallSlot<'_> {
    fn drop(&mut self) {
        let mut free = self
            .slots
            .free
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *free += 1;
        self.slots.freed.notify_one();
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
    pub(crate) stderr: StderrTail,
}

/// A guest's stderr: every write accepted (a write that fails traps the guest, and a policy that
/// prints a line per device would fail on a big node only), the last `keep` bytes kept.
#[derive(Clone)]
pub(crate) struct StderrTail {
    kept: Arc<Mutex<StderrKept>>,
    keep: usize,
}

#[derive(Default)]
struct StderrKept {
    bytes: std::collections::VecDeque<u8>,
    /// Bytes written before the kept ones.
    dropped: usize,
}

impl StderrTail {
    fn new(keep: usize) -> Self {
        StderrTail {
            kept: Arc::default(),
            keep,
        }
    }

    /// How many bytes it keeps ([`Limits::max_output_bytes`]).
    pub(crate) fn keeps(&self) -> usize {
        self.keep
    }

    /// The last bytes written, and how many were written before them.
    pub(crate) fn contents(&self) -> (Vec<u8>, usize) {
        let kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
        (kept.bytes.iter().copied().collect(), kept.dropped)
    }

    fn push(&self, bytes: &[u8]) {
        let mut kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
        // Only the end of a write larger than what is kept can stay.
        let skip = bytes.len().saturating_sub(self.keep);
        kept.dropped = kept.dropped.saturating_add(skip);
        kept.bytes.extend(&bytes[skip..]);
        let excess = kept.bytes.len().saturating_sub(self.keep);
        kept.bytes.drain(..excess);
        kept.dropped = kept.dropped.saturating_add(excess);
    }
}

/// How much one stderr write may carry (`check-write`); the guest splits larger output.
const STDERR_WRITE_BUDGET: usize = 64 << 10;

impl wasmtime_wasi::cli::IsTerminal for StderrTail {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl wasmtime_wasi::cli::StdoutStream for StderrTail {
    fn p2_stream(&self) -> Box<dyn wasmtime_wasi::p2::OutputStream> {
        Box::new(self.clone())
    }

    // The WASI 0.3 (async) interface, which no policy world imports: nothing is kept there.
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(tokio::io::sink())
    }
}

#[wasmtime_wasi::async_trait]
impl wasmtime_wasi::p2::Pollable for StderrTail {
    async fn ready(&mut self) {}
}

impl wasmtime_wasi::p2::OutputStream for StderrTail {
    fn write(&mut self, bytes: bytes::Bytes) -> wasmtime_wasi::p2::StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> wasmtime_wasi::p2::StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> wasmtime_wasi::p2::StreamResult<usize> {
        Ok(STDERR_WRITE_BUDGET)
    }
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

/// Caps the memory of one call — all linear memories plus all tables, at
/// [`TABLE_ELEMENT_BYTES`] per element — and remembers whether the cap was hit, so a memory trap
/// is reported as such rather than as a generic trap. Also caps how many core instances, memories
/// and tables one call may create: the instance pool's per-component ceilings, which hold as well
/// when the engine runs without the pool.
pub(crate) struct MemoryCap {
    limit: usize,
    used: usize,
    pub(crate) exceeded: bool,
}

/// What the cap counts per table element: a function reference is a pointer in wasmtime.
const TABLE_ELEMENT_BYTES: usize = 8;

impl MemoryCap {
    fn new(limit: usize) -> Self {
        MemoryCap {
            limit,
            used: 0,
            exceeded: false,
        }
    }

    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// Charges a memory or table growing from `current` to `desired` bytes.
    fn grow(&mut self, what: &str, current: usize, desired: usize) -> wasmtime::Result<bool> {
        let after = self.used.saturating_sub(current).saturating_add(desired);
        if after > self.limit {
            self.exceeded = true;
            return Err(wasmtime::format_err!(
                "memory cap of {} bytes reached (a {what} asked for {after} in all)",
                self.limit
            ));
        }
        self.used = after;
        Ok(true)
    }
}

impl ResourceLimiter for MemoryCap {
    // A growth past the memory's or table's own maximum fails in wasmtime after the limiter has
    // said yes: refused here, uncharged. A guest repeating such a growth used to run up charges
    // for memory it never got, and then hit the cap with none of it in use. (A growth that fails
    // for another reason after a yes, the system out of memory, stays charged: refunding on
    // `*_grow_failed` cannot be done safely, as wasmtime also calls it for growths it never asked
    // the limiter about, and a refund would then take back an earlier, real growth.)
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if maximum.is_some_and(|maximum| desired > maximum) {
            return Ok(false);
        }
        self.grow("memory", current, desired)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > MAX_TABLE_ELEMENTS || maximum.is_some_and(|maximum| desired > maximum) {
            return Ok(false);
        }
        self.grow(
            "table",
            current.saturating_mul(TABLE_ELEMENT_BYTES),
            desired.saturating_mul(TABLE_ELEMENT_BYTES),
        )
    }

    fn instances(&self) -> usize {
        MAX_CORE_INSTANCES_PER_COMPONENT as usize
    }

    fn tables(&self) -> usize {
        MAX_TABLES_PER_COMPONENT as usize
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES_PER_COMPONENT as usize
    }
}

/// The policy's log lines for one call: kept (bounded) for the caller to pass on, and forwarded to
/// `tracing` at debug as they come.
pub(crate) struct LogBuffer {
    policy: String,
    pub(crate) lines: Vec<LogLine>,
    pub(crate) dropped: usize,
    max_lines: usize,
    max_line_bytes: usize,
}

impl LogBuffer {
    fn push(&mut self, level: WitLogLevel, message: String) {
        if self.lines.len() >= self.max_lines {
            self.dropped += 1;
            return;
        }
        // Cut, and escaped so that a newline in a message cannot forge a log line of the agent.
        let message = crate::validate::bounded_text(&message, self.max_line_bytes);
        let level = match level {
            WitLogLevel::Trace => "trace",
            WitLogLevel::Debug => "debug",
            WitLogLevel::Info => "info",
            WitLogLevel::Warn => "warn",
            WitLogLevel::Error => "error",
        };
        // At once, at debug (the lines of a call that then fails are seen there too); the caller
        // passes them on at their own level, once while they repeat (`Policy::emit_logs`): a
        // select's lines here at info were said again on every rescan.
        let policy = self.policy.as_str();
        tracing::debug!(policy, level, "policy log: {message}");
        self.lines.push(LogLine { level, message });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The dirty-page scan is kept only where no page can be swapped out (see `pooling`): swap
    /// configured, or not known, means every touched page is reset.
    #[test]
    fn swap_is_read_from_meminfo_and_unknown_counts_as_swap() {
        let meminfo = |swap: &str| format!("MemTotal:       24683640 kB\n{swap}\nSwapFree: 0 kB\n");
        assert!(!swap_in_meminfo(&meminfo("SwapTotal:             0 kB")));
        assert!(swap_in_meminfo(&meminfo("SwapTotal:       2097148 kB")));
        assert!(swap_in_meminfo(&meminfo("SwapTotal: lots")));
        assert!(swap_in_meminfo("MemTotal: 1 kB\n"));
    }

    #[test]
    fn a_call_beyond_the_slots_waits_only_until_its_deadline() {
        let slots = CallSlots::new(2);
        let first = slots.take(Duration::ZERO).expect("a free slot");
        let _second = slots.take(Duration::ZERO).expect("a free slot");
        assert!(slots.take(Duration::from_millis(20)).is_none());
        drop(first);
        assert!(
            slots.take(Duration::ZERO).is_some(),
            "a returned slot is free"
        );
    }

    #[test]
    fn a_waiting_call_gets_the_slot_that_is_returned() {
        let slots = Arc::new(CallSlots::new(1));
        let held = slots.take(Duration::ZERO).expect("a free slot");
        let waiter = {
            let slots = Arc::clone(&slots);
            thread::spawn(move || slots.take(Duration::from_secs(60)).is_some())
        };
        thread::sleep(Duration::from_millis(20));
        drop(held);
        assert!(waiter.join().expect("waiter"), "the waiter got the slot");
    }

    #[test]
    fn a_call_holds_a_bounded_number_of_host_resources() {
        let engine = PolicyEngine::new(Limits::default()).unwrap();
        let mut store = engine.store("probe.wasm", Duration::from_secs(1));
        assert_eq!(store.max_component_handles(), MAX_COMPONENT_HANDLES);
        let table = &mut store.data_mut().table;
        let mut held = Vec::new();
        let refused = loop {
            match table.push(ReadyNow) {
                Ok(handle) => held.push(handle),
                Err(error) => break error,
            }
            assert!(held.len() <= MAX_HOST_RESOURCES, "no limit");
        };
        assert_eq!(held.len(), MAX_HOST_RESOURCES, "{refused}");
    }

    #[test]
    fn zero_concurrent_calls_is_refused() {
        let limits = Limits {
            concurrent_calls: 0,
            ..Limits::default()
        };
        assert!(matches!(
            PolicyEngine::new(limits),
            Err(EngineError::Limits(_))
        ));
    }

    /// Tables count against the memory cap: a policy growing tables to their element limit used
    /// to get 8 MiB per table on top of the cap, unbounded in number without the instance pool.
    #[test]
    fn tables_count_against_the_memory_cap() {
        let mut cap = MemoryCap::new(16 << 20);
        assert!(cap.memory_growing(0, 8 << 20, None).unwrap());
        let elements = (8 << 20) / TABLE_ELEMENT_BYTES;
        assert!(cap.table_growing(0, elements / 2, None).unwrap());
        assert!(cap.table_growing(elements / 2, elements, None).unwrap());
        assert!(!cap.exceeded);
        let error = cap.table_growing(0, 1, None).unwrap_err();
        assert!(cap.exceeded);
        assert!(error.to_string().contains("memory cap"), "{error}");
        assert!(
            !MemoryCap::new(usize::MAX)
                .table_growing(0, MAX_TABLE_ELEMENTS + 1, None)
                .unwrap()
        );
    }

    /// A growth past a table's or memory's own maximum, which wasmtime fails after asking, is not
    /// charged: repeated, such growths used to run up the cap with nothing in use. A failure
    /// wasmtime reports later takes nothing back (it may be about a growth never asked about).
    #[test]
    fn growths_past_their_maximum_are_not_charged() {
        let mut cap = MemoryCap::new(1 << 20);
        for _ in 0..1000 {
            assert!(!cap.table_growing(10, 20, Some(10)).unwrap());
            assert!(!cap.memory_growing(1 << 16, 2 << 16, Some(1 << 16)).unwrap());
        }
        assert_eq!(cap.used, 0);
        assert!(!cap.exceeded);
        assert!(cap.memory_growing(0, 1 << 16, None).unwrap());
        cap.memory_grow_failed(wasmtime::format_err!("not about that growth"))
            .unwrap();
        assert_eq!(cap.used, 1 << 16);
    }

    /// A policy's log message is one line of the agent's log: its line breaks are escaped.
    #[test]
    fn a_log_message_cannot_forge_log_lines() {
        let mut logs = LogBuffer {
            policy: "probe".to_string(),
            lines: Vec::new(),
            dropped: 0,
            max_lines: 10,
            max_line_bytes: 64,
        };
        logs.push(WitLogLevel::Info, "one\nERROR forged\r\n".repeat(100));
        let message = &logs.lines[0].message;
        assert!(message.starts_with("one\\nERROR forged"), "{message}");
        assert!(!message.contains(['\n', '\r']), "{message}");
        assert!(message.len() <= 64 + '…'.len_utf8() && message.ends_with('…'));
    }

    /// Without the instance pool (its reservation refused, or turned off) a call is held to the
    /// pool's per-component ceilings, not wasmtime's defaults of 10,000 each.
    #[test]
    fn instance_counts_are_capped_without_the_pool() {
        let cap = MemoryCap::new(0);
        assert_eq!(cap.instances(), MAX_CORE_INSTANCES_PER_COMPONENT as usize);
        assert_eq!(cap.tables(), MAX_TABLES_PER_COMPONENT as usize);
        assert_eq!(cap.memories(), MAX_MEMORIES_PER_COMPONENT as usize);
    }
}
