//! `vfpool run`: the node agent daemon. Discovers the node, asks the selector policy for pools,
//! serves them to kubelet (`vfpool-deviceplugin`), and keeps them current: a rescan every
//! `--rescan-interval` (health, VF count changes, driver rebinds), policy and config hot swap (the
//! policy directory and the config file's directory are watched), SIGHUP reloads both, SIGTERM,
//! SIGINT and SIGQUIT stop serving, remove sockets and device-info files and exit 0 — also while a
//! rescan is stuck in the kernel.

use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use vfpool_deviceplugin::events::{self, KernelEvents};
use vfpool_deviceplugin::{DevicePlugins, Ids, PluginConfig, PolicyAllocator};
use vfpool_policy::{
    ActivePolicies, CompileCache, HostFacts, Limits, PolicyEngine, PolicyInventory, PolicyWatcher,
    Pool, Sources,
};
use vfpool_sysfs::{Inventory, SysfsRoot};

use crate::cli::RunArgs;
use crate::exit::{CmdResult, Code, Failure, WithCode};
use crate::facts::FactsGatherer;

pub fn run(args: &RunArgs) -> CmdResult {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .code(Code::Failure)?;
    let result = runtime.block_on(daemon(args));
    // Dropping the runtime would wait for every blocking task, and one stuck in the kernel (a
    // sysfs read or devlink in a wedged driver) would keep a stopping agent alive until kubelet's
    // SIGKILL: the sockets and device-info files are already removed, so exit regardless.
    runtime.shutdown_timeout(Duration::from_secs(2));
    result
}

/// How long a rescan's discovery may take before the agent says it is stuck (and again every
/// as long). Discovery of a 1,024-VF node takes tens of milliseconds.
const DISCOVERY_STUCK_AFTER: Duration = Duration::from_secs(60);

/// Awaits `work`, logging an error every `DISCOVERY_STUCK_AFTER` while it has not finished: a
/// blocking read in a wedged driver cannot be cancelled, but the SRE must learn that the pools
/// are no longer updated, and why.
async fn warn_while_stuck<T>(work: impl std::future::Future<Output = T>, what: &str) -> T {
    tokio::pin!(work);
    let started = tokio::time::Instant::now();
    loop {
        match tokio::time::timeout(DISCOVERY_STUCK_AFTER, &mut work).await {
            Ok(value) => return value,
            Err(_) => tracing::error!(
                waiting = ?started.elapsed(),
                "{what} has not finished: a sysfs read or devlink is probably stuck in the kernel \
                 (a wedged driver or firmware); pools are not updated until it returns, \
                 SIGTERM still stops the agent"
            ),
        }
    }
}

/// Refuses a `--devinfo-dir` that cannot hold device-info files before anything is served: the
/// agent would otherwise run, fail every Allocate's device-info write and warn once per device at
/// every pool change. A missing directory is created, as the first Allocate would.
fn check_devinfo_dir(dir: &Path) -> anyhow::Result<()> {
    let reason = match std::fs::create_dir_all(dir) {
        // An existing directory may still refuse files (a read-only mount, another owner): a
        // file made and removed there is the proof.
        Ok(()) => match probe_writable(dir) {
            Ok(()) => return Ok(()),
            Err(e) => format!("cannot write files in it: {e}"),
        },
        Err(_) if dir.symlink_metadata().is_ok() && !dir.is_dir() => {
            "it is not a directory".to_string()
        }
        Err(e) => format!("cannot create it: {e}"),
    };
    anyhow::bail!(
        "--devinfo-dir {} (VFPOOL_DEVINFO_DIR): {reason}; give the directory Multus and the CNI \
         plugin read device-info files from (by default /var/run/k8s.cni.cncf.io/devinfo/dp), \
         or remove what is in its place",
        dir.display()
    )
}

/// Refuses a `--kubelet-dir` that names something other than a directory: the agent failed later
/// with "cannot create the device-plugin socket directory", naming neither the flag nor the fix.
/// A missing one is made (kubelet may not have started yet), with a warning, as a typo there makes
/// the agent wait for a kubelet that never comes.
fn check_kubelet_dir(dir: &Path) -> anyhow::Result<()> {
    match dir.metadata() {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => anyhow::bail!(
            "--kubelet-dir {} (VFPOOL_KUBELET_DIR): it is not a directory; give kubelet's root directory (by default /var/lib/kubelet)",
            dir.display()
        ),
        Err(_) => {
            tracing::warn!(
                kubelet_dir = %dir.display(),
                "--kubelet-dir does not exist: creating it and waiting for kubelet there; check the flag if kubelet runs with another --root-dir"
            );
            Ok(())
        }
    }
}

/// Creates and removes a hidden file in `dir` (named for this process, never an existing file).
fn probe_writable(dir: &Path) -> std::io::Result<()> {
    let probe = dir.join(format!(".vfpool-write-check-{}", std::process::id()));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)?;
    std::fs::remove_file(&probe)
}

/// The first of SIGTERM, SIGINT and SIGQUIT (SIGQUIT stops the agent like SIGTERM, as upstream).
async fn stop_signal(
    mut terminate: tokio::signal::unix::Signal,
    mut interrupt: tokio::signal::unix::Signal,
    mut quit: tokio::signal::unix::Signal,
) -> &'static str {
    tokio::select! {
        _ = terminate.recv() => "SIGTERM",
        _ = interrupt.recv() => "SIGINT",
        _ = quit.recv() => "SIGQUIT",
    }
}

/// Discovers the node and gathers the host facts about its devices (default routes, devlink),
/// off the async runtime: both are blocking reads and process spawns. Facts are gathered on every
/// call, so a rescan sees a changed route or devlink parameter.
async fn discover(
    root: &SysfsRoot,
    facts: &Arc<FactsGatherer>,
) -> anyhow::Result<(Inventory, HostFacts)> {
    let root = root.clone();
    let facts = Arc::clone(facts);
    tokio::task::spawn_blocking(move || {
        let inventory = vfpool_sysfs::discover(&root)?;
        let host = facts.gather(&inventory);
        Ok::<_, vfpool_sysfs::DiscoveryError>((inventory, host))
    })
    .await
    .context("the discovery thread failed")?
    .context("discovery failed")
}

/// What the last `select` said, so that a rescan repeating it stays quiet at info.
#[derive(Default)]
struct SelectLog {
    /// The policy's log lines.
    lines: Vec<vfpool_policy::LogLine>,
    /// Why it failed.
    failure: Option<String>,
}

/// Pools the active selector makes of `inventory`; `None` when there is no active set or the
/// call fails (the caller keeps the last good pools). Runs on every rescan: what the policy logs,
/// and a failure, are passed on at their level when they differ from the last call's, at debug
/// when they repeat it.
async fn select(
    policies: &Arc<ActivePolicies>,
    inventory: &Arc<PolicyInventory>,
    said: &mut SelectLog,
) -> Option<Vec<Pool>> {
    let active = policies.current()?;
    let inventory = Arc::clone(inventory);
    let selector = Arc::clone(&active.selector);
    let result =
        tokio::task::spawn_blocking(move || active.selector.select(&active.settings, &inventory))
            .await;
    let failure = match result {
        Ok(Ok(outcome)) => {
            selector.emit_logs("select", &outcome, outcome.logs == said.lines);
            said.lines = outcome.logs;
            if said.failure.take().is_some() {
                tracing::info!("the selector policy works again");
            }
            return Some(outcome.value);
        }
        Ok(Err(e)) => format!("the selector policy failed: {e}"),
        Err(e) => format!("the selector thread failed: {e}"),
    };
    if said.failure.as_ref() == Some(&failure) {
        tracing::debug!(error = %failure, "select failed again; keeping the previous pools");
    } else {
        tracing::warn!(error = %failure, "select failed; keeping the previous pools");
        said.failure = Some(failure);
    }
    None
}

async fn daemon(args: &RunArgs) -> CmdResult {
    // Signals are caught from the start, and a stop signal wins over whatever the agent is doing:
    // one that arrives while it starts (discovery, compiling policies, the first PodResources
    // query) or while a rescan hangs in the kernel stops it with the usual cleanup, instead of
    // being ignored until kubelet's SIGKILL leaves the sockets and device-info files behind.
    let stop = stop_signal(
        signal(SignalKind::terminate()).code(Code::Failure)?,
        signal(SignalKind::interrupt()).code(Code::Failure)?,
        signal(SignalKind::quit()).code(Code::Failure)?,
    );
    let mut hangup = signal(SignalKind::hangup()).code(Code::Failure)?;
    let mut running = Running::default();
    let result = tokio::select! {
        biased;
        name = stop => {
            tracing::info!(signal = name, "stopping");
            Ok(())
        }
        result = serve(args, &mut hangup, &mut running) => result,
    };
    // Whatever `serve` was awaiting has been dropped; what it started is still known here.
    if let Some(plugins) = running.plugins {
        plugins.shutdown().await;
        tracing::info!("stopped: sockets and device-info files removed");
    }
    // Not joined: its thread may be compiling a module for seconds, and the process is ending.
    if let Some(watcher) = running.watcher {
        watcher.detach();
    }
    result
}

/// What `serve` started that must be stopped however `serve` ends.
#[derive(Default)]
struct Running {
    plugins: Option<DevicePlugins>,
    watcher: Option<PolicyWatcher>,
}

/// Starts the agent and keeps its pools current; returns only when it cannot start. What it
/// starts is left in `running`, so the caller can stop it whenever it stops this.
async fn serve(
    args: &RunArgs,
    hangup: &mut tokio::signal::unix::Signal,
    running: &mut Running,
) -> CmdResult {
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        sysfs = %args.sysfs.sysfs_root.display(),
        "vfpool agent starting"
    );
    if args.use_cdi {
        tracing::warn!(
            "--use-cdi: CDI is not supported; devices are handed out as device nodes in the Allocate answer (DeviceSpecs), which every container runtime takes"
        );
    }
    check_devinfo_dir(&args.devinfo_dir).code(Code::BadInput)?;
    check_kubelet_dir(&args.kubelet_dir).code(Code::BadInput)?;
    let sources = Sources {
        policy_dir: Some(args.policy_dir.clone()),
        config_file: Some(args.config_file.clone()),
        default_resource_prefix: args.resource_prefix.clone(),
    };
    // Decided once, so that facts and kernel events agree, and said once: a root that is not a
    // sysfs mount silently loses uplink protection and early rescans, which an operator who meant
    // the host's sysfs must be able to see.
    let host_sysfs = vfpool_sysfs::is_sysfs_mount(&args.sysfs.sysfs_root);
    let root = SysfsRoot::new(&args.sysfs.sysfs_root);
    if host_sysfs {
        tracing::info!(
            sysfs = %args.sysfs.sysfs_root.display(),
            "the sysfs root is this host's sysfs: host facts (default routes, devlink) and kernel events are on"
        );
    } else {
        tracing::info!(
            sysfs = %args.sysfs.sysfs_root.display(),
            "the sysfs root is not a sysfs mount (a simulated node): host facts (default routes, devlink) and kernel events are off"
        );
    }
    // Kernel events trigger an early rescan on a real node (a simulated tree has none). Watched
    // from before the first discovery: a VF count written while the agent starts (compiling the
    // policies, waiting for PodResources) is a burst the loop below rescans for at once, instead
    // of a change first seen a whole rescan interval after the start.
    let mut real_sysfs = host_sysfs;
    let mut kernel = real_sysfs.then(|| {
        // A burst (a VF count change is hundreds of events) becomes one rescan once no event came
        // for 200 ms, or 2 s after its first event if it does not settle; rescans for events
        // come at most once a second.
        let events = KernelEvents::spawn(
            events::kernel_sources(),
            Duration::from_millis(200),
            Duration::from_secs(2),
        )
        .min_gap(Duration::from_secs(1));
        tracing::info!(sources = ?events.sources(), "kernel events: watching");
        events
    });
    let gatherer = Arc::new(FactsGatherer::for_host_sysfs(host_sysfs));
    let (inventory, facts) = warn_while_stuck(discover(&root, &gatherer), "the first discovery")
        .await
        .map_err(|error| {
            // A wrong --sysfs-root is the operator's to fix (2); a machine out of descriptors or
            // memory, or a failed thread, is not (1), as for `vfpool discover`.
            let code = error
                .downcast_ref::<vfpool_sysfs::DiscoveryError>()
                .map_or(Code::Failure, super::discover::discovery_code);
            Failure { code, error }
        })?;
    let policy_inventory = Arc::new(PolicyInventory::new(&inventory, &facts));
    let latest: Arc<RwLock<Arc<PolicyInventory>>> =
        Arc::new(RwLock::new(Arc::clone(&policy_inventory)));

    // A cache that cannot be used is refused loudly rather than silently compiling every time.
    let cache = match &args.policy_cache_dir {
        Some(dir) => Some(
            CompileCache::open(dir)
                .with_context(|| {
                    format!(
                        "--policy-cache-dir {} (VFPOOL_POLICY_CACHE_DIR) cannot be used; give a directory, or leave the flag out to compile the policies at every start",
                        dir.display()
                    )
                })
                .code(Code::BadInput)?,
        ),
        None => None,
    };
    let engine = PolicyEngine::with_compiler(Limits::default(), cache, args.compile.compiler())
        .context("cannot start the policy engine")
        .code(Code::Failure)?;
    // Compiling the embedded defaults takes a while: off the runtime, so a stop signal is seen.
    let policies = Arc::new(
        tokio::task::spawn_blocking(move || ActivePolicies::new(engine))
            .await
            .context("the policy loading thread failed")
            .code(Code::Failure)?
            .context("cannot load the embedded policies")
            .code(Code::Failure)?,
    );
    // Policy and config hot swap: the watcher reloads on its own thread and pokes the loop. It
    // watches before the first load, so a change written while the agent starts (a ConfigMap
    // update racing a pod restart) is never lost: reloads are serialised, and one that changes
    // something is applied once the loop runs.
    let (reloaded_tx, mut reloaded) = mpsc::unbounded_channel::<()>();
    let watcher_inventory = Arc::clone(&latest);
    let watcher_reloaded = reloaded_tx.clone();
    running.watcher = PolicyWatcher::spawn(
        Arc::clone(&policies),
        sources.clone(),
        Duration::from_millis(200),
        POLICY_RECHECK,
        // The shared `Arc`, not a copy: the watcher tells a rescan's new inventory by it, to try
        // a set refused on the old one again.
        move || {
            Arc::clone(
                &*watcher_inventory
                    .read()
                    .unwrap_or_else(PoisonError::into_inner),
            )
        },
        move |outcome| {
            if outcome.changed {
                let _ = watcher_reloaded.send(());
            }
        },
    )
    .map_err(
        |e| tracing::error!(error = %e, "policy hot swap is off: cannot start the policy watcher"),
    )
    .ok();

    let outcome = {
        let policies = Arc::clone(&policies);
        let sources = sources.clone();
        let inventory = Arc::clone(&policy_inventory);
        tokio::task::spawn_blocking(move || policies.reload(&sources, &inventory))
            .await
            .context("the policy loading thread failed")
            .code(Code::Failure)?
    };
    vfpool_policy::watch::log_outcome(&outcome);
    if outcome.active.is_none() {
        tracing::error!(
            "no policy set could be accepted; serving no pools until the config or policies are fixed"
        );
    }
    // What the dry run's select said was said as the set was accepted: the first rescan's
    // select, saying the same, stays quiet.
    let (mut desired, accepted_lines): (Vec<Pool>, _) = outcome
        .active
        .map(|a| (a.pools.clone(), a.select_logs.clone()))
        .unwrap_or_default();

    let allocator = Arc::new(PolicyAllocator::new(
        Arc::clone(&policies),
        Arc::clone(&policy_inventory),
    ));
    let mut config = PluginConfig::new(
        args.kubelet_dir.clone(),
        args.devinfo_dir.clone(),
        root.clone(),
    );
    config.kubelet_restart_grace = args.kubelet_restart_grace;
    let mut placing = Placing::new(
        config.move_settle,
        args.rescan_interval.min(PLACING_WAIT_CAP),
    );
    let plugins = running.plugins.insert(
        DevicePlugins::start(config, allocator.clone())
            .context("cannot start the device plugin")
            .code(Code::Failure)?,
    );
    let (mut inventory, mut facts) = (inventory, facts);
    let first = plugins.apply(&desired, &inventory).await;

    let mut rescan = RescanTimer::new(args.rescan_interval);
    // The last rescan's failure: said once while it repeats, and its end said too.
    let mut rescan_failure: Option<String> = None;
    let mut select_log = SelectLog {
        lines: accepted_lines,
        failure: None,
    };
    rescan.tick().await;
    settle(&first, &mut placing, &mut rescan);
    tracing::info!(
        mode = %plugins.mode().name(),
        registration_dir = %plugins.mode().dir().display(),
        pools = desired.len(),
        rescan = ?args.rescan_interval,
        "vfpool agent running"
    );

    loop {
        tokio::select! {
            _ = hangup.recv() => {
                tracing::info!("SIGHUP: reloading the config and policies");
                // Off this loop: compiling a module takes seconds, and rescans, kernel events and
                // kubelet updates must go on meanwhile. The watcher's thread reloads (serialised
                // with its own reloads) and an accepted set arrives through `reloaded`, like a hot
                // swap: selected on the inventory of then, so never a stale set's pools.
                let requested = running.watcher.as_ref().is_some_and(PolicyWatcher::reload_now);
                if !requested {
                    let policies = Arc::clone(&policies);
                    let sources = sources.clone();
                    let latest = Arc::clone(&latest);
                    let reloaded_tx = reloaded_tx.clone();
                    // Detached: `reload` serialises with any other reload itself.
                    drop(tokio::task::spawn_blocking(move || {
                        policies.forget_refusals();
                        let current = Arc::clone(&*latest.read().unwrap_or_else(PoisonError::into_inner));
                        let outcome = policies.reload(&sources, &current);
                        vfpool_policy::watch::log_requested_outcome(&outcome);
                        if outcome.changed {
                            let _ = reloaded_tx.send(());
                        }
                    }));
                }
                // A reload is a refresh: rediscover the devices too, now.
                rescan.now();
            }
            Some(()) = reloaded.recv() => {
                // The new set's dry run used the inventory of when the reload started; a rescan
                // may have replaced it while the module compiled, so select on the current one.
                let current = Arc::clone(&*latest.read().unwrap_or_else(PoisonError::into_inner));
                // The new set's dry run said its select's lines: this select repeating them
                // stays quiet.
                if let Some(active) = policies.current() {
                    select_log.lines = active.select_logs.clone();
                }
                if let Some(pools) = select(&policies, &current, &mut select_log).await {
                    desired = pools;
                    settle(&plugins.apply(&desired, &inventory).await, &mut placing, &mut rescan);
                }
            }
            burst = next_kernel_burst(&mut kernel), if real_sysfs => {
                let Some(events) = burst else {
                    tracing::warn!("kernel events: every source closed; relying on the periodic rescan");
                    real_sysfs = false;
                    continue;
                };
                tracing::debug!(events, "kernel events: rescanning");
                rescan.now();
            }
            _ = rescan.tick() => {
                let discovered = warn_while_stuck(discover(&root, &gatherer), "a rescan's discovery").await;
                note_rescan(&mut rescan_failure, discovered.as_ref().err());
                // A failure is said by `note_rescan`; the current pools stay. Devices on their
                // way to another pool join it only at an apply, though: they are placed with
                // what the last good discovery saw, rather than left out of every pool until a
                // discovery works again.
                let discovered_ok = discovered.is_ok();
                if let Ok((next, next_facts)) = discovered {
                    // An unchanged node keeps its policy inventory, the same `Arc`: nothing is
                    // converted again, and the policy watcher does not take it for a new
                    // inventory to dry-run a refused set on (and warn about) every rescan.
                    let current = if next == inventory && next_facts == facts {
                        Arc::clone(&*latest.read().unwrap_or_else(PoisonError::into_inner))
                    } else {
                        (inventory, facts) = (next, next_facts);
                        let fresh = Arc::new(PolicyInventory::new(&inventory, &facts));
                        *latest.write().unwrap_or_else(PoisonError::into_inner) = Arc::clone(&fresh);
                        allocator.set_inventory(Arc::clone(&fresh));
                        fresh
                    };
                    if let Some(pools) = select(&policies, &current, &mut select_log).await {
                        desired = pools;
                    }
                }
                if discovered_ok || placing.moving {
                    settle(&plugins.apply(&desired, &inventory).await, &mut placing, &mut rescan);
                }
            }
        }
    }
}

/// When the next rescan comes: every `--rescan-interval`, sooner after an apply that asks for it
/// ([`settle`]), and at once when kernel events or SIGHUP ask for it — which no later apply's
/// request postpones: a policy swap applied meanwhile used to push a rescan asked for a burst of
/// kernel events (new VFs) back by up to the interval.
struct RescanTimer {
    interval: tokio::time::Interval,
    /// A rescan is due at once and has not run yet.
    now: bool,
}

impl RescanTimer {
    fn new(period: Duration) -> Self {
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        RescanTimer {
            interval,
            now: false,
        }
    }

    /// The rescan interval.
    fn period(&self) -> Duration {
        self.interval.period()
    }

    /// Rescans at once.
    fn now(&mut self) {
        self.interval.reset_immediately();
        self.now = true;
    }

    /// Rescans `delay` from now, unless one is due at once already.
    fn after(&mut self, delay: Duration) {
        if !self.now {
            self.interval.reset_after(delay);
        }
    }

    /// Waits for the next rescan. Cancel-safe.
    async fn tick(&mut self) {
        self.interval.tick().await;
        self.now = false;
    }
}

/// Logs a rescan's failure once while the same one repeats (every rescan, 30 s by default, would
/// otherwise warn again), a different one when it changes, and the end of it.
fn note_rescan(last: &mut Option<String>, error: Option<&anyhow::Error>) {
    match (error, last.as_deref()) {
        (None, None) => {}
        (None, Some(_)) => {
            tracing::info!("rescans work again");
            *last = None;
        }
        (Some(e), previous) => {
            let text = vfpool_policy::error_chain(e.as_ref());
            if previous == Some(text.as_str()) {
                tracing::debug!(error = %text, "rescan failed again; keeping the current pools");
            } else {
                tracing::warn!(
                    error = %text,
                    "rescan failed; keeping the current pools (said again only if the error changes)"
                );
                *last = Some(text);
            }
        }
    }
}

/// The next burst of kernel events (how many it held); never without sources. Cancel-safe.
async fn next_kernel_burst(kernel: &mut Option<KernelEvents>) -> Option<usize> {
    match kernel {
        Some(events) => events.next_rescan().await,
        None => std::future::pending().await,
    }
}

/// How often the policy watcher looks at the policy and config files besides following events (a
/// retargeted symlinked directory has none); without inotify, it polls them every 2 s.
const POLICY_RECHECK: Duration = Duration::from_secs(10);

/// How soon to look again once a device is held for its pod outside the pool the policy puts it
/// in: the time a released device stays offered in its old pool. While the same devices stay held
/// the wait doubles up to the rescan interval: each look is a whole rescan (sysfs, devlink, the
/// selector, PodResources), and a pod may hold its device for weeks.
const HOLDING_RECHECK: Duration = Duration::from_secs(2);

/// The longest wait between tries to place moving devices while PodResources cannot answer: once
/// kubelet is back, they join their new pool within this long.
const PLACING_WAIT_CAP: Duration = Duration::from_secs(8);

/// When to apply again to place devices that are moving between pools.
struct Placing {
    /// `PluginConfig::move_settle`: how long a moving device stays out of every pool.
    settle: Duration,
    /// The next delay while PodResources cannot answer (doubling up to `cap`).
    wait: Duration,
    /// The longest wait (`PLACING_WAIT_CAP`, or the rescan interval if shorter).
    cap: Duration,
    /// The devices held outside their policy's pool at the last apply, and the wait before the
    /// next look at them (see [`HOLDING_RECHECK`]).
    held: Vec<String>,
    held_wait: Duration,
    /// The last apply left devices out of every pool on their way to another: the next apply
    /// places them, so one must come even when the rescan before it fails.
    moving: bool,
}

impl Placing {
    fn new(settle: Duration, cap: Duration) -> Self {
        Placing {
            settle,
            wait: settle,
            cap,
            held: Vec::new(),
            held_wait: HOLDING_RECHECK,
            moving: false,
        }
    }

    /// The wait before looking again at `holding` (not empty): [`HOLDING_RECHECK`] when the set
    /// is new, doubling while it stays the same, at most `longest` (the rescan interval).
    fn holding_recheck(&mut self, holding: &[String], longest: Duration) -> Duration {
        if self.held == holding {
            self.held_wait = (self.held_wait * 2).min(longest);
        } else {
            self.held = holding.to_vec();
            self.held_wait = HOLDING_RECHECK.min(longest);
        }
        self.held_wait
    }
}

/// Logs an apply; while devices are moving between pools (kept out of every pool for
/// `PluginConfig::move_settle`, which the device plugin enforces), rescans once that has passed to
/// place them. While PodResources cannot answer (a kubelet restart), rescans sooner than the
/// interval, backing off, so that what pods hold is known again soon: moving devices wait for it,
/// and an agent that started during the outage serves without it until then. Returns the delay
/// the next rescan was moved to, `None` when it keeps to the interval.
fn settle(
    report: &vfpool_deviceplugin::ApplyReport,
    placing: &mut Placing,
    rescan: &mut RescanTimer,
) -> Option<Duration> {
    log_report(report);
    placing.moving = !report.moving.is_empty();
    let delay = if report.pod_resources_current {
        placing.wait = placing.settle;
        if report.moving.is_empty() {
            if !report.departed.is_empty() {
                // Left for no pool: Allocate may still grant one for a moment (kubelet chose it
                // from the pool's previous list); once that has settled, an apply lists one a pod
                // got again, held, in its pool.
                rescan.after(placing.settle);
                return Some(placing.settle);
            }
            if report.holding.is_empty() {
                placing.held.clear();
            } else {
                // Released, a held device is free in its old pool until an apply moves it:
                // ask PodResources soon, then less and less often while the pod keeps it.
                let wait = placing.holding_recheck(&report.holding, rescan.period());
                rescan.after(wait);
                return Some(wait);
            }
            return None;
        }
        // The manager said which devices leave which pool for which, once; this is the timing,
        // said again on every apply while they move.
        tracing::debug!(
            count = report.moving.len(),
            devices = %Ids(&report.moving),
            settle = ?placing.settle,
            "moving devices to another pool"
        );
        placing.settle
    } else {
        // Devices waiting to move are placed soon once kubelet answers again; with none, only
        // pool changes wait for it, and a PodResources that stays away (a kubelet without the
        // service, a stale socket) must not make the node rescan everything every few seconds
        // for good: the wait keeps doubling, up to the rescan interval.
        let cap = if report.moving.is_empty() {
            rescan.period().max(placing.cap)
        } else {
            placing.cap
        };
        let delay = placing.wait.min(cap);
        placing.wait = (delay * 2).min(cap);
        tracing::debug!(
            devices = %Ids(&report.moving),
            retry_in = ?delay,
            "PodResources cannot answer: asking again"
        );
        delay
    };
    rescan.after(delay);
    Some(delay)
}

/// Pool names for a log field; an empty list is left out (`started=` reads as a field gone wrong).
fn listed(names: &[String]) -> Option<tracing::field::DisplayValue<Ids<'_, String>>> {
    (!names.is_empty()).then(|| tracing::field::display(Ids(names)))
}

fn log_report(report: &vfpool_deviceplugin::ApplyReport) {
    if !report.started.is_empty() || !report.updated.is_empty() || !report.stopped.is_empty() {
        tracing::info!(
            started = listed(&report.started),
            updated = listed(&report.updated),
            stopped = listed(&report.stopped),
            "pools applied"
        );
    }
}

/// The shortest rescan interval: each rescan rereads the whole sysfs tree (and asks devlink), so
/// anything shorter only burns CPU on the node; kernel events already make changes quick.
const MIN_RESCAN_INTERVAL: Duration = Duration::from_millis(100);
/// The longest rescan interval (a year): longer is a typo, and beyond what timers take.
const MAX_RESCAN_SECONDS: f64 = 86_400.0 * 365.0;

/// Parses `30s`, `500ms`, `2m`, `1h` or a bare number of seconds, from [`MIN_RESCAN_INTERVAL`] to
/// a year.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let (duration, seconds) = parse_span(text, "interval")?;
    if seconds <= 0.0 {
        return Err(format!("{:?}: the interval must be positive", text.trim()));
    }
    // Checked on the Duration as it will be used: a tiny positive number rounds to zero, on which
    // tokio's interval panics once the pools are served.
    if duration < MIN_RESCAN_INTERVAL {
        return Err(format!(
            "{:?}: the interval must be at least {MIN_RESCAN_INTERVAL:?} (every rescan rereads the whole sysfs tree)",
            text.trim()
        ));
    }
    Ok(duration)
}

/// Parses `--kubelet-restart-grace`: as [`parse_duration`], but 0 is allowed (PodResources is
/// believed at once after a kubelet restart).
pub fn parse_grace(text: &str) -> Result<Duration, String> {
    parse_span(text, "grace").map(|(duration, _)| duration)
}

/// Parses `--policy-compile-cpu`: as [`parse_duration`], at least a second (the kernel counts
/// CPU-time limits in whole seconds) and at most an hour.
pub fn parse_compile_cpu(text: &str) -> Result<Duration, String> {
    let (duration, _) = parse_span(text, "CPU time")?;
    if !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&duration) {
        return Err(format!(
            "{:?}: give between 1s and 1h (compiling the example Python policy takes about 11s of CPU)",
            text.trim()
        ));
    }
    Ok(duration)
}

/// `30s`, `500ms`, `2m`, `1h` or a bare number of seconds, from 0 to under a year, as a Duration
/// and as the seconds written; `what` names the value in messages.
fn parse_span(text: &str, what: &str) -> Result<(Duration, f64), String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration; write e.g. 30s, 500ms or 2m"))?;
    let seconds = match unit {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => {
            return Err(format!(
                "{text:?}: unknown unit {unit:?}; use ms, s, m or h"
            ));
        }
    };
    if !seconds.is_finite() || seconds >= MAX_RESCAN_SECONDS {
        return Err(format!("{text:?}: the {what} must be shorter than a year"));
    }
    Duration::try_from_secs_f64(seconds)
        .map(|duration| (duration, seconds))
        .map_err(|_| format!("{text:?}: the {what} must not be negative"))
}

#[cfg(test)]
mod tests {
    use super::{
        Placing, RescanTimer, SelectLog, check_devinfo_dir, check_kubelet_dir, note_rescan,
        parse_duration, parse_grace, select, settle,
    };
    use std::sync::Arc;
    use std::time::Duration;

    use vfpool_policy::{
        ActivePolicies, HostFacts, Limits, PolicyEngine, PolicyInventory, Sources,
    };

    /// The delays `times` applies in a row reporting `report` ask of the rescan, in seconds.
    fn settle_waits(
        report: &vfpool_deviceplugin::ApplyReport,
        times: usize,
        placing: &mut Placing,
        rescan: &mut RescanTimer,
    ) -> Vec<Option<u64>> {
        (0..times)
            .map(|_| settle(report, placing, rescan).map(|d| d.as_secs()))
            .collect()
    }

    /// A device a pod keeps outside the pool its policy now wants it in is looked at again soon
    /// (released, it is free in its old pool until then), then less and less often: every 2 s for
    /// the pod's whole life made the node rescan everything every 2 s for weeks.
    #[tokio::test]
    async fn a_held_device_is_looked_at_soon_then_less_and_less_often() {
        let mut rescan = RescanTimer::new(Duration::from_secs(30));
        let mut placing = Placing::new(Duration::from_secs(1), Duration::from_secs(8));
        let holding = |ids: &[&str]| vfpool_deviceplugin::ApplyReport {
            holding: ids.iter().map(|id| id.to_string()).collect(),
            pod_resources_current: true,
            ..Default::default()
        };
        let mut waits = |report: &vfpool_deviceplugin::ApplyReport, times: usize| {
            settle_waits(report, times, &mut placing, &mut rescan)
        };
        let a = holding(&["0000:3b:00.2"]);
        assert_eq!(
            waits(&a, 7),
            [
                Some(2),
                Some(4),
                Some(8),
                Some(16),
                Some(30),
                Some(30),
                Some(30)
            ]
        );
        // Another device held too: soon again.
        let ab = holding(&["0000:3b:00.2", "0000:3b:00.3"]);
        assert_eq!(waits(&ab, 2), [Some(2), Some(4)]);
        // Both released: the rescan keeps to its interval, and a later hold starts over.
        assert_eq!(waits(&holding(&[]), 1), [None]);
        assert_eq!(waits(&a, 1), [Some(2)]);
    }

    /// A device that left its pool for none may still be granted for a moment (kubelet chose it
    /// from the previous list): the apply after the settle time lists it again, held, if a pod
    /// got it. Nothing asked for that apply, and the pool went without the pod's device until the
    /// next rescan (30 s), when a kubelet restarting meanwhile could not readmit the pod.
    #[tokio::test]
    async fn a_device_that_left_for_no_pool_is_looked_at_once_it_settled() {
        let mut rescan = RescanTimer::new(Duration::from_secs(30));
        let mut placing = Placing::new(Duration::from_secs(1), Duration::from_secs(8));
        let departed = vfpool_deviceplugin::ApplyReport {
            departed: vec!["0000:3b:00.2".to_string()],
            pod_resources_current: true,
            ..Default::default()
        };
        assert_eq!(
            settle_waits(&departed, 1, &mut placing, &mut rescan),
            [Some(1)]
        );
        let quiet = vfpool_deviceplugin::ApplyReport {
            pod_resources_current: true,
            ..Default::default()
        };
        assert_eq!(settle_waits(&quiet, 1, &mut placing, &mut rescan), [None]);
    }

    /// While PodResources cannot answer, rescans come sooner than the interval so that what pods
    /// hold is known again soon; with no device moving they back off up to the interval. They
    /// stayed at 8 s forever, whatever `--rescan-interval` said, on a node whose PodResources
    /// never answered.
    #[tokio::test]
    async fn without_pod_resources_rescans_back_off_to_the_interval_unless_devices_move() {
        let mut rescan = RescanTimer::new(Duration::from_secs(60));
        let mut placing = Placing::new(Duration::from_secs(1), Duration::from_secs(8));
        let blind = |moving: &[&str]| vfpool_deviceplugin::ApplyReport {
            moving: moving.iter().map(|id| id.to_string()).collect(),
            pod_resources_current: false,
            ..Default::default()
        };
        let mut waits = |report: &vfpool_deviceplugin::ApplyReport, times: usize| {
            settle_waits(report, times, &mut placing, &mut rescan)
        };
        let idle = blind(&[]);
        assert_eq!(
            waits(&idle, 8),
            [1, 2, 4, 8, 16, 32, 60, 60].map(Some).to_vec()
        );
        // A device on its way to another pool: back to the placing cap at most.
        assert_eq!(waits(&blind(&["0000:3b:00.2"]), 2), [Some(8), Some(8)]);
    }

    /// A rescan asked for at once (kernel events, SIGHUP) is not pushed back by an apply's request
    /// for a later one (a policy swap applied meanwhile, with a device held): new VFs waited up to
    /// the rescan interval.
    #[tokio::test]
    async fn an_apply_does_not_postpone_a_rescan_asked_for_now() {
        let mut rescan = RescanTimer::new(Duration::from_secs(30));
        rescan.tick().await;
        let mut placing = Placing::new(Duration::from_secs(1), Duration::from_secs(8));
        let held = vfpool_deviceplugin::ApplyReport {
            holding: vec!["0000:3b:00.2".to_string()],
            pod_resources_current: true,
            ..Default::default()
        };
        rescan.now();
        settle(&held, &mut placing, &mut rescan);
        tokio::time::timeout(Duration::from_secs(1), rescan.tick())
            .await
            .expect("the rescan asked for at once comes at once");
        // Once it ran, an apply's request counts again.
        settle(&held, &mut placing, &mut rescan);
        assert!(
            tokio::time::timeout(Duration::from_millis(300), rescan.tick())
                .await
                .is_err()
        );
    }

    /// `select` runs on every rescan (30 s by default): what a policy logs there (the probe says
    /// "probe selecting from N devices" at info) was passed on at info every time.
    #[test]
    fn a_selectors_repeated_log_lines_are_said_once() {
        let dir = tempfile::tempdir().unwrap();
        let probe =
            std::path::Path::new(vfpool_policy::defaults::BUILT_COMPONENTS_DIR).join("probe.wasm");
        std::fs::copy(probe, dir.path().join("probe.wasm")).unwrap();
        let sources = Sources {
            policy_dir: Some(dir.path().to_path_buf()),
            config_file: None,
            default_resource_prefix: "intel.com".into(),
        };
        let policies =
            Arc::new(ActivePolicies::new(PolicyEngine::new(Limits::default()).unwrap()).unwrap());
        let inventory = Arc::new(PolicyInventory::new(
            &Default::default(),
            &HostFacts::default(),
        ));
        assert!(policies.reload(&sources, &inventory).changed);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut said = SelectLog::default();
        let logs = crate::test_logs::logs_of(|| {
            runtime.block_on(async {
                for _ in 0..3 {
                    assert!(select(&policies, &inventory, &mut said).await.is_some());
                }
            });
        });
        let said_at = |level: &str, text: &str| {
            logs.lines()
                .filter(|l| l.contains(level) && l.contains(text))
                .count()
        };
        assert_eq!(
            said_at(" INFO ", "probe selecting from 0 devices"),
            1,
            "{logs}"
        );
        assert_eq!(
            said_at(" DEBUG ", "policy (again): probe selecting from 0 devices"),
            2,
            "{logs}"
        );
    }

    /// A failing rescan warned on every rescan (every 2 s in the report), its cause printed twice,
    /// and its end was never said.
    #[test]
    fn a_failing_rescan_is_one_warning_and_its_end_is_said() {
        let error = || {
            anyhow::Error::new(std::io::Error::from(std::io::ErrorKind::NotFound))
                .context("discovery failed")
        };
        let mut last = None;
        let logs = crate::test_logs::logs_of(|| {
            for _ in 0..3 {
                note_rescan(&mut last, Some(&error()));
            }
            note_rescan(&mut last, None);
            note_rescan(&mut last, None);
        });
        assert_eq!(logs.matches("WARN").count(), 1, "{logs}");
        assert_eq!(logs.matches("rescan failed again").count(), 2, "{logs}");
        assert_eq!(logs.matches("rescans work again").count(), 1, "{logs}");
        assert!(last.is_none());
    }

    /// A regular file as --devinfo-dir used to start the agent, which then warned once per device
    /// that it could not remove a device-info file.
    #[test]
    fn a_devinfo_dir_that_is_not_a_directory_is_refused_naming_the_flag() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("afile");
        std::fs::write(&file, "").unwrap();
        for bad in [file.clone(), file.join("under")] {
            let err = format!("{:#}", check_devinfo_dir(&bad).unwrap_err());
            assert!(
                err.contains("--devinfo-dir")
                    && err.contains("VFPOOL_DEVINFO_DIR")
                    && err.contains(&*bad.to_string_lossy()),
                "{err}"
            );
        }
        let err = format!("{:#}", check_devinfo_dir(&file).unwrap_err());
        assert!(err.contains("is not a directory"), "{err}");
        let missing = tmp.path().join("a/b");
        check_devinfo_dir(&missing).unwrap();
        assert!(missing.is_dir());
        check_devinfo_dir(&missing).unwrap();
        assert_eq!(
            std::fs::read_dir(&missing).unwrap().count(),
            0,
            "the probe stayed"
        );
    }

    /// A file as --kubelet-dir failed the start with "cannot create the device-plugin socket
    /// directory", naming neither the flag nor the fix (and with exit code 1).
    #[test]
    fn a_kubelet_dir_that_is_not_a_directory_is_refused_naming_the_flag() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("afile");
        std::fs::write(&file, "").unwrap();
        let err = format!("{:#}", check_kubelet_dir(&file).unwrap_err());
        assert!(
            err.contains("--kubelet-dir")
                && err.contains("VFPOOL_KUBELET_DIR")
                && err.contains("not a directory"),
            "{err}"
        );
        check_kubelet_dir(tmp.path()).unwrap();
        check_kubelet_dir(&tmp.path().join("missing")).unwrap();
    }

    /// An existing directory that refuses files (a read-only mount; here sysfs, which refuses
    /// them even to root) used to pass: the agent started, and every Allocate failed its
    /// device-info write.
    #[test]
    fn a_devinfo_dir_that_refuses_files_is_refused_naming_the_flag() {
        let err = format!(
            "{:#}",
            check_devinfo_dir(std::path::Path::new("/sys/kernel")).unwrap_err()
        );
        assert!(
            err.contains("--devinfo-dir") && err.contains("cannot write files in it"),
            "{err}"
        );
    }

    #[test]
    fn durations_parse_with_units_and_refuse_nonsense() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("15"), Ok(Duration::from_secs(15)));
        for bad in ["", "0s", "-1s", "10x", "s", "1e400s"] {
            let err = parse_duration(bad).unwrap_err();
            assert!(err.contains(bad) || bad.is_empty(), "{bad}: {err}");
        }
    }

    /// `--kubelet-restart-grace 0` believes PodResources at once after a kubelet restart; a
    /// grace otherwise reads like an interval.
    #[test]
    fn a_kubelet_restart_grace_may_be_zero() {
        assert_eq!(parse_grace("0"), Ok(Duration::ZERO));
        assert_eq!(parse_grace("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_grace("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_grace("-1s").is_err());
        assert!(parse_grace("1 fortnight").is_err());
    }

    /// A positive number too small for a Duration used to pass as zero (and tokio's interval
    /// panicked after the pools were served); one just above zero hammered sysfs.
    #[test]
    fn durations_below_the_floor_are_refused_naming_the_minimum() {
        assert_eq!(parse_duration("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_duration("0.1"), Ok(Duration::from_millis(100)));
        for bad in [
            "0.0000000001s",
            "0.0000000000001",
            "0.000001ms",
            "0.001ms",
            "1ms",
            "99ms",
            "0.05s",
        ] {
            let err = parse_duration(bad).unwrap_err();
            assert!(
                err.contains(bad) && err.contains("at least 100ms"),
                "{bad}: {err}"
            );
        }
        for zero in ["0", "0.0s", "0ms", "0h"] {
            let err = parse_duration(zero).unwrap_err();
            assert!(err.contains("must be positive"), "{zero}: {err}");
        }
    }

    /// Too long has its own message (it used to say "must be positive").
    #[test]
    fn durations_above_a_year_are_refused_as_too_long() {
        for bad in ["8760h", "9000h", "600000m", "99999999999999999999"] {
            let err = parse_duration(bad).unwrap_err();
            assert!(err.contains("shorter than a year"), "{bad}: {err}");
            assert!(!err.contains("positive"), "{bad}: {err}");
        }
        assert_eq!(
            parse_duration("8759h"),
            Ok(Duration::from_secs(8759 * 3600))
        );
    }
}
