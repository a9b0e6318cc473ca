//! The active policy set and the rule that changes it: load, compile, type-check,
//! `validate-settings`, dry-run on the current inventory — and only then swap, atomically. Any
//! failure keeps the last good set serving.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use crate::convert::PolicyInventory;
use crate::defaults;
use crate::engine::PolicyEngine;
use crate::model::{LogLine, Outcome, Pool, Settings};
use crate::policy::{CallError, LoadError, ModuleKind, Policy, PolicyCallError, PolicyId};

/// Where the policies and the settings come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sources {
    /// The policy directory (`--policy-dir`); `None` or a missing directory: embedded defaults.
    pub policy_dir: Option<PathBuf>,
    /// The config file (`--config-file`); `None`: empty settings.
    pub config_file: Option<PathBuf>,
    /// `--resource-prefix`.
    pub default_resource_prefix: String,
}

/// Where an active policy came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicySource {
    /// Embedded in the binary.
    Embedded,
    /// A file in the policy directory.
    File(PathBuf),
}

/// The policies and settings in force, with the pools they produced when accepted.
#[derive(Debug)]
pub struct ActiveSet {
    /// The selector.
    pub selector: Arc<Policy>,
    /// Where it came from.
    pub selector_source: PolicySource,
    /// The allocator.
    pub allocator: Arc<Policy>,
    /// Where it came from.
    pub allocator_source: PolicySource,
    /// The settings both were validated with.
    pub settings: Settings,
    /// The pools of the acceptance dry run.
    pub pools: Vec<Pool>,
    /// What the selector logged in that dry run (said as the set was accepted): the next
    /// `select` that says the same again can stay quiet.
    pub select_logs: Vec<LogLine>,
    /// Increases with every accepted change, starting at 1.
    pub generation: u64,
    /// What differs from the set before: `config`, `policies`, `policies and config`, or
    /// `first set` (for the log: a config edit is not a policy swap).
    pub what_changed: &'static str,
}

impl ActiveSet {
    /// Whether the module compiled from file `name` with this digest serves a role.
    fn uses(&self, name: &str, digest: &str) -> bool {
        [self.selector.id(), self.allocator.id()]
            .iter()
            .any(|id| id.name == name && id.sha256 == digest)
    }

    /// The roles whose module came from the file at `path`.
    fn roles_from(&self, path: &Path) -> Vec<&'static str> {
        let from = |source: &PolicySource| matches!(source, PolicySource::File(p) if p == path);
        let mut roles = Vec::new();
        if from(&self.selector_source) {
            roles.push("selector");
        }
        if from(&self.allocator_source) {
            roles.push("allocator");
        }
        roles
    }
}

/// Why a reload could not even start.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// An embedded default failed to load: a build defect, never expected at run time.
    #[error("the embedded default policy does not load")]
    Default(#[source] LoadError),
}

/// What a reload did.
#[derive(Debug, Clone)]
pub struct ReloadOutcome {
    /// The set in force after the reload (`None` only before anything was ever accepted).
    pub active: Option<Arc<ActiveSet>>,
    /// A new set was accepted.
    pub changed: bool,
    /// Why the candidate set was refused (empty when accepted or unchanged).
    pub refused: Vec<String>,
    /// The reload before this one was refused and this one was not: what was refused has been
    /// replaced (or put back), so the refusal no longer applies.
    pub recovered: bool,
    /// Refused for exactly the reasons the reload before this one was: when nothing but a retry
    /// of the refused set brought the reload (a changed node, its backoff),
    /// [`crate::watch::log_retried_outcome`] says it at debug.
    pub refused_again: bool,
    /// Files in the policy directory that were skipped, and why.
    pub ignored: Vec<String>,
    /// `.wasm` files in the policy directory that are no policy at all (not WebAssembly, a core
    /// module, a component exporting neither role), ignored: worth a warning, as someone put them
    /// there to be loaded. One that replaced the file an active role came from is refused instead
    /// (in `refused`), so that the role's module keeps serving rather than the embedded default.
    pub not_policies: Vec<String>,
    /// The ones of them cut off before their end (a copy interrupted or still being written):
    /// the agent waits for them to change, an offline check (`vfpool pools`) refuses them.
    pub cut_off: Vec<PathBuf>,
}

/// A refused reload that may succeed without any file changing: the watcher tries it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Try again from then on, even if nothing changed (backing off per failed try).
    pub at: Instant,
    /// The refusal came from the dry run on the inventory (a device the config names is not
    /// there yet, a result the host refuses, a deadline): try again once the inventory is a new
    /// one, from this instant on. Not at once: a busy node's inventory changes with every pod
    /// (its VF's netdev moves), and each try runs the policy (up to its deadlines).
    pub on_inventory_change: Option<Instant>,
}

impl Retry {
    /// Whether to try again at `now`, the inventory having changed since the last try or not.
    pub fn due(&self, now: Instant, inventory_changed: bool) -> bool {
        now >= self.at
            || (inventory_changed && self.on_inventory_change.is_some_and(|from| now >= from))
    }
}

/// The first wait before trying a refused set again on a new inventory; doubles per try, up to
/// `RETRY_FIRST`.
const INVENTORY_RETRY_FIRST: Duration = Duration::from_secs(2);

/// The first wait before trying a refused set again when nothing changed; doubles per try.
const RETRY_FIRST: Duration = Duration::from_secs(30);
/// The longest wait between tries of a refused set when nothing changed.
const RETRY_CAP: Duration = Duration::from_secs(600);

/// The wait after `tries` failed tries: `RETRY_FIRST`, doubling up to `RETRY_CAP`.
fn backoff(tries: u32) -> Duration {
    doubling(RETRY_FIRST, tries, RETRY_CAP)
}

/// `first` after one try, doubling with each further try, at most `cap`.
fn doubling(first: Duration, tries: u32, cap: Duration) -> Duration {
    first
        .saturating_mul(1 << tries.saturating_sub(1).min(16))
        .min(cap)
}

/// What a module's failed load is remembered as.
struct Rejection {
    reason: String,
    /// `None`: the failure is deterministic (not WASM, a core module, imports, exports, types,
    /// a compile limit, wasmtime's refusal in the compiler process), so the file is not compiled
    /// again until it changes. `Some`: a failure the node's state may have caused (wasmtime
    /// refused a component in this process, where a lack of memory can cause it as well as
    /// damaged bytes; the compiler process failed): it is compiled again from then on.
    retry_at: Option<Instant>,
    /// Failed compiles in a row, for the backoff.
    tries: u32,
    /// The bytes are no policy (yet) ([`LoadRefusal::not_a_policy`]).
    not_a_policy: Option<NotAPolicy>,
}

/// What a file that could not be loaded is, when it is no attempt at a policy that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NotAPolicy {
    /// Not WebAssembly, a core module, or a component exporting neither role.
    Stray,
    /// A component cut off before its end.
    CutOff,
}

/// Why a module in the policy directory was not loaded.
struct LoadRefusal {
    /// One line, naming what is wrong.
    reason: String,
    /// When to compile it again (see [`Rejection::retry_at`]).
    retry_at: Option<Instant>,
    /// Not an attempt at a policy that failed: a file left in the directory, or one still being
    /// written.
    not_a_policy: Option<NotAPolicy>,
    /// The refused module's file name and digest (its key among the remembered refusals).
    module: (String, String),
}

/// The candidate of a refused dry run, with how often in a row it was refused: the same
/// candidate refused again backs off longer.
struct Pending {
    /// Selector, allocator and settings of a refused dry run; `None` for a module's load.
    candidate: Option<(PolicyId, PolicyId, Settings)>,
    tries: u32,
    retry: Retry,
}

/// The active set plus everything needed to change it safely. Share it in an `Arc`.
pub struct ActivePolicies {
    engine: PolicyEngine,
    default_selector: Arc<Policy>,
    default_allocator: Arc<Policy>,
    current: RwLock<Option<Arc<ActiveSet>>>,
    /// By file name and digest: the same bytes under two names are two policies (the name is in
    /// their identity and messages), and keying by digest alone made them evict each other, so
    /// both were compiled again on every reload.
    compiled: Mutex<HashMap<(String, String), Arc<Policy>>>,
    /// Why a module could not be loaded, by name and digest as `compiled`: compiling and type-checking are
    /// deterministic, so a bad file is not recompiled on every directory event (a 20 MB component
    /// takes seconds). Forgotten on [`Self::forget_refusals`] (SIGHUP), and at each reload for
    /// the files that are gone.
    rejected: Mutex<HashMap<(String, String), Rejection>>,
    /// The last reload's refusal, when trying again may succeed with the same files.
    pending: Mutex<Option<Pending>>,
    /// Why the last reload was refused, empty if it was not (for [`ReloadOutcome::recovered`]
    /// and [`ReloadOutcome::refused_again`]).
    refused_last: Mutex<Vec<String>>,
    /// The selector, allocator and settings last exercised, whose log lines were passed on.
    last_exercised: Mutex<Option<(PolicyId, PolicyId, Settings)>>,
    reload_lock: Mutex<()>,
}

impl std::fmt::Debug for ActivePolicies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActivePolicies")
            .field("current", &self.current())
            .finish_non_exhaustive()
    }
}

/// A candidate for one role.
struct Candidate {
    policy: Arc<Policy>,
    source: PolicySource,
}

impl ActivePolicies {
    /// Compiles the embedded defaults; nothing is active until the first [`Self::reload`].
    pub fn new(engine: PolicyEngine) -> Result<Self, ReloadError> {
        let default_selector = Policy::compile_embedded(
            &engine,
            defaults::UPSTREAM_SELECTOR_NAME,
            defaults::UPSTREAM_SELECTOR,
        )
        .map_err(ReloadError::Default)?;
        let default_allocator = Policy::compile_embedded(
            &engine,
            defaults::PACKED_ALLOCATOR_NAME,
            defaults::PACKED_ALLOCATOR,
        )
        .map_err(ReloadError::Default)?;
        Ok(ActivePolicies {
            engine,
            default_selector: Arc::new(default_selector),
            default_allocator: Arc::new(default_allocator),
            current: RwLock::new(None),
            compiled: Mutex::new(HashMap::new()),
            rejected: Mutex::new(HashMap::new()),
            pending: Mutex::new(None),
            refused_last: Mutex::new(Vec::new()),
            last_exercised: Mutex::new(None),
            reload_lock: Mutex::new(()),
        })
    }

    /// The set in force, if any.
    pub fn current(&self) -> Option<Arc<ActiveSet>> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Whether the last reload was refused for a reason that may go away with the same files (see
    /// [`Retry`]), and when to try again. `None` after an accepted or unchanged reload, and after a
    /// refusal only a change of the files can lift.
    pub fn pending_retry(&self) -> Option<Retry> {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|p| p.retry)
    }

    /// Forgets every remembered refusal, so that the next reload compiles and tries everything
    /// again: an operator's explicit request (SIGHUP) after fixing what the agent cannot see
    /// (memory, a device) must not be answered from the cache.
    pub fn forget_refusals(&self) {
        self.rejected
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        *self.pending.lock().unwrap_or_else(PoisonError::into_inner) = None;
        // What the policies log when validating is said again too.
        *self
            .last_exercised
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// Reads the sources and, if anything changed, validates the candidate set against
    /// `inventory` and swaps it in. Blocking (compiles modules): call it off any async runtime.
    pub fn reload(&self, sources: &Sources, inventory: &PolicyInventory) -> ReloadOutcome {
        // One reload at a time; readers are never blocked by it.
        let _serial = self
            .reload_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (mut outcome, pending) = self.reload_serial(sources, inventory);
        *self.pending.lock().unwrap_or_else(PoisonError::into_inner) = pending;
        let before = std::mem::replace(
            &mut *self
                .refused_last
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
            outcome.refused.clone(),
        );
        outcome.recovered = !before.is_empty() && outcome.refused.is_empty();
        outcome.refused_again = !outcome.refused.is_empty() && outcome.refused == before;
        outcome
    }

    /// [`Self::reload`] under its lock; also what to remember for a retry.
    fn reload_serial(
        &self,
        sources: &Sources,
        inventory: &PolicyInventory,
    ) -> (ReloadOutcome, Option<Pending>) {
        let active = self.current();
        let refuse = |refused: Vec<String>, notes: Notes| ReloadOutcome {
            active: active.clone(),
            changed: false,
            refused,
            recovered: false,
            refused_again: false,
            ignored: notes.ignored,
            not_policies: notes.not_policies,
            cut_off: notes.cut_off,
        };

        // Unreadable files: their change (an event, the fingerprint) is what brings a reload.
        let settings = match read_settings(sources) {
            Ok(s) => s,
            Err(reason) => return (refuse(vec![reason], Notes::default()), None),
        };
        let scan = match self.scan(sources.policy_dir.as_deref(), active.as_deref()) {
            Ok(scan) => scan,
            Err(reason) => return (refuse(vec![reason], Notes::default()), None),
        };
        // Compiled modules kept: the active set's and the directory's, whatever this reload
        // decides (refused reloads used to keep every module ever compiled, each a few MB).
        self.prune_cache(|name, digest| {
            listed(&scan.present, name, digest)
                || active.as_ref().is_some_and(|a| a.uses(name, digest))
        });
        // Refusals kept: the directory's files only, so the bound below is about what is there
        // now, not about every bad file the directory ever held.
        self.rejected
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|(name, digest), _| listed(&scan.refused_modules, name, digest));
        if !scan.refused.is_empty() {
            // Only a component wasmtime refused may load on another try (see `Rejection`).
            let pending = scan.retry_at.map(|at| Pending {
                candidate: None,
                tries: 0,
                retry: Retry {
                    at,
                    on_inventory_change: None,
                },
            });
            return (refuse(scan.refused, scan.notes), pending);
        }
        let selector = scan.selector.unwrap_or_else(|| Candidate {
            policy: Arc::clone(&self.default_selector),
            source: PolicySource::Embedded,
        });
        let allocator = scan.allocator.unwrap_or_else(|| Candidate {
            policy: Arc::clone(&self.default_allocator),
            source: PolicySource::Embedded,
        });

        if let Some(current) = &active
            && current.selector.id() == selector.policy.id()
            && current.allocator.id() == allocator.policy.id()
            && current.selector_source == selector.source
            && current.allocator_source == allocator.source
            && current.settings == settings
        {
            let unchanged = ReloadOutcome {
                active: active.clone(),
                changed: false,
                refused: Vec::new(),
                recovered: false,
                refused_again: false,
                ignored: scan.notes.ignored,
                not_policies: scan.notes.not_policies,
                cut_off: scan.notes.cut_off,
            };
            return (unchanged, None);
        }

        // The same candidate exercised before (a refused set tried again): its validation's
        // warnings were said then.
        let candidate = (
            selector.policy.id().clone(),
            allocator.policy.id().clone(),
            settings.clone(),
        );
        let repeated = {
            let mut last = self
                .last_exercised
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let repeated = last.as_ref() == Some(&candidate);
            *last = Some(candidate.clone());
            repeated
        };
        let (pools, select_logs) = match exercise_again(
            &selector.policy,
            &allocator.policy,
            &settings,
            inventory,
            repeated,
        ) {
            Ok(exercised) => exercised,
            Err(e) => {
                let pending = depends_on_inventory(&e).then(|| {
                    // The same candidate refused again: wait longer before the next try.
                    let tries = self
                        .pending
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .as_ref()
                        .filter(|p| p.candidate.as_ref() == Some(&candidate))
                        .map_or(1, |p| p.tries.saturating_add(1));
                    let now = Instant::now();
                    Pending {
                        candidate: Some(candidate),
                        tries,
                        retry: Retry {
                            at: now + backoff(tries),
                            on_inventory_change: Some(
                                now + doubling(INVENTORY_RETRY_FIRST, tries, RETRY_FIRST),
                            ),
                        },
                    }
                });
                return (refuse(vec![refusal(&e, sources)], scan.notes), pending);
            }
        };
        let what_changed = match &active {
            None => "first set",
            Some(before) => {
                let policies = before.selector.id() != selector.policy.id()
                    || before.allocator.id() != allocator.policy.id()
                    || before.selector_source != selector.source
                    || before.allocator_source != allocator.source;
                match (policies, before.settings != settings) {
                    (true, true) => "policies and config",
                    (true, false) => "policies",
                    _ => "config",
                }
            }
        };
        let next = Arc::new(ActiveSet {
            what_changed,
            selector: selector.policy,
            selector_source: selector.source,
            allocator: allocator.policy,
            allocator_source: allocator.source,
            settings,
            pools,
            select_logs,
            generation: active.as_ref().map_or(1, |a| a.generation + 1),
        });
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::clone(&next));
        // The directory's other modules stay compiled too: every reload (a config change, a
        // no-op event) checks them all, and recompiling a Python module takes seconds.
        self.prune_cache(|name, digest| {
            next.uses(name, digest) || listed(&scan.present, name, digest)
        });
        let accepted = ReloadOutcome {
            active: Some(next),
            changed: true,
            refused: Vec::new(),
            recovered: false,
            refused_again: false,
            ignored: scan.notes.ignored,
            not_policies: scan.notes.not_policies,
            cut_off: scan.notes.cut_off,
        };
        (accepted, None)
    }

    /// Compiles `bytes` or returns the already compiled module (or the load error) with the same
    /// name and digest. Errors are returned as one-line messages, with when a load that may have
    /// failed for want of memory is due to be tried again.
    fn compile_cached(&self, name: &str, bytes: &[u8]) -> Result<Arc<Policy>, LoadRefusal> {
        let id = PolicyId::of(name, bytes);
        let key = (id.name, id.sha256);
        if let Some(policy) = self
            .compiled
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
        {
            return Ok(Arc::clone(policy));
        }
        let mut tries = 0;
        if let Some(rejection) = self
            .rejected
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
        {
            match rejection.retry_at {
                Some(at) if Instant::now() >= at => tries = rejection.tries,
                retry_at => {
                    return Err(LoadRefusal {
                        reason: rejection.reason.clone(),
                        retry_at,
                        not_a_policy: rejection.not_a_policy,
                        module: key,
                    });
                }
            }
        }
        match Policy::compile(&self.engine, name, bytes) {
            Ok(policy) => {
                let policy = Arc::new(policy);
                self.rejected
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&key);
                self.compiled
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(key, Arc::clone(&policy));
                Ok(policy)
            }
            Err(error) => {
                let reason = match &error {
                    // Not a component at all: what the parser choked on (`bad magic number -
                    // expected=[ 0x0, 0x61, ...]`) says nothing the message does not.
                    LoadError::Compile {
                        what: ModuleKind::NotWasm | ModuleKind::CoreModule,
                        ..
                    } => error.to_string(),
                    _ => error_chain(&error),
                };
                // A file cut off before its end is no policy yet: ignored like a stray file
                // (unless it replaced an active role), and read again when it changes.
                let not_a_policy = match error {
                    LoadError::Compile {
                        what: ModuleKind::Incomplete,
                        ..
                    } => Some(NotAPolicy::CutOff),
                    LoadError::Compile {
                        what: ModuleKind::NotWasm | ModuleKind::CoreModule,
                        ..
                    }
                    | LoadError::NoPolicyExport { .. } => Some(NotAPolicy::Stray),
                    _ => None,
                };
                let tries = tries.saturating_add(1);
                // Tried again later: what may have failed for want of memory, or for the
                // compiler process (not for a limit it ran into: that is the module's shape).
                let retry_at = matches!(
                    error,
                    LoadError::Compile {
                        may_pass_later: true,
                        ..
                    } | LoadError::CompileProcess { .. }
                )
                .then(|| Instant::now() + backoff(tries));
                let mut rejected = self.rejected.lock().unwrap_or_else(PoisonError::into_inner);
                // Bounded: refusals of files that are gone are dropped at every reload, so only a
                // directory holding more bad modules than this at once starts over (and compiles
                // them all again: each compile is bounded by the compile limits).
                if rejected.len() >= MAX_REMEMBERED_REFUSALS {
                    rejected.clear();
                }
                rejected.insert(
                    key.clone(),
                    Rejection {
                        reason: reason.clone(),
                        retry_at,
                        tries,
                        not_a_policy,
                    },
                );
                Err(LoadRefusal {
                    reason,
                    retry_at,
                    not_a_policy,
                    module: key,
                })
            }
        }
    }

    /// Keeps only the compiled modules `keep` names by file name and digest (bounded memory across
    /// many swaps and renames).
    fn prune_cache(&self, keep: impl Fn(&str, &str) -> bool) {
        let mut cache = self.compiled.lock().unwrap_or_else(PoisonError::into_inner);
        cache.retain(|(name, digest), _| keep(name, digest));
    }

    /// How many compiled modules are kept for reuse.
    pub fn compiled_count(&self) -> usize {
        self.compiled
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Reads the policy directory: every `*.wasm` regular file (symlinks followed, as ConfigMap
    /// volumes use them), in name order; the first module per role wins. A file that is no
    /// policy at all is passed over, unless a role of the `active` set came from it.
    fn scan(&self, dir: Option<&Path>, active: Option<&ActiveSet>) -> Result<Scan, String> {
        let mut scan = Scan::default();
        let Some(dir) = dir else {
            return Ok(scan);
        };
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(scan),
            Err(e) => {
                return Err(format!(
                    "cannot read the policy directory {}: {e}",
                    dir.display()
                ));
            }
        };
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        let max = self.engine.limits().max_module_bytes;
        for path in paths {
            let Some(name) = path
                .file_name()
                .and_then(|n| n.to_str())
                .map(str::to_string)
            else {
                scan.notes
                    .ignored
                    .push(format!("{}: the file name is not UTF-8", path.display()));
                continue;
            };
            match skipped_policy_name(&name) {
                Some(SkippedName::Hidden) => continue,
                Some(SkippedName::NotWasm) => {
                    scan.notes.ignored.push(format!(
                        "{}: not a .wasm file (temporary and editor files are skipped; install modules as NAME.wasm, written elsewhere and renamed into place)",
                        path.display()
                    ));
                    continue;
                }
                None => {}
            }
            let bytes = match read_regular_file(&path, max as u64) {
                Ok(bytes) => bytes,
                Err(FileProblem::TooLarge(len)) => {
                    scan.refused.push(format!(
                        "{}: {len} bytes, more than the {max}-byte limit; not loaded",
                        path.display(),
                    ));
                    continue;
                }
                Err(FileProblem::NotRegular) => {
                    scan.notes
                        .ignored
                        .push(format!("{}: not a regular file", path.display()));
                    continue;
                }
                // A dangling symlink mid-swap, or the file vanished: the next event re-reads.
                Err(FileProblem::Io(e)) => {
                    scan.refused
                        .push(format!("{}: cannot read: {e}; not loaded", path.display()));
                    continue;
                }
            };
            let policy = match self.compile_cached(&name, &bytes) {
                Ok(p) => p,
                Err(refusal) => {
                    scan.refused_modules.push(refusal.module.clone());
                    let replaced = active.map(|a| a.roles_from(&path)).unwrap_or_default();
                    let reason = &refusal.reason;
                    if let Some(kind) = refusal.not_a_policy
                        && replaced.is_empty()
                    {
                        scan.notes.not_policies.push(format!(
                            "{}: {reason}; ignored (not loaded: it is no policy, or not a whole one yet)",
                            path.display()
                        ));
                        if kind == NotAPolicy::CutOff {
                            scan.notes.cut_off.push(path.clone());
                        }
                        continue;
                    }
                    scan.retry_at = match (scan.retry_at, refusal.retry_at) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                    scan.refused.push(if replaced.is_empty() {
                        format!("{}: {reason}; not loaded", path.display())
                    } else {
                        format!(
                            "{}: {reason}; not loaded, and the {} it replaced keeps serving",
                            path.display(),
                            replaced.join(" and ")
                        )
                    });
                    continue;
                }
            };
            scan.present
                .push((policy.id().name.clone(), policy.id().sha256.clone()));
            let roles = policy.roles();
            let source = PolicySource::File(path.clone());
            if roles.selector {
                match &scan.selector {
                    None => {
                        scan.selector = Some(Candidate {
                            policy: Arc::clone(&policy),
                            source: source.clone(),
                        });
                    }
                    Some(first) => scan.notes.ignored.push(format!(
                        "{}: exports a selector, but {} already provides it (the first file by name wins)",
                        path.display(),
                        source_name(&first.source)
                    )),
                }
            }
            if roles.allocator {
                match &scan.allocator {
                    None => {
                        scan.allocator = Some(Candidate {
                            policy: Arc::clone(&policy),
                            source,
                        });
                    }
                    Some(first) => scan.notes.ignored.push(format!(
                        "{}: exports an allocator, but {} already provides it (the first file by name wins)",
                        path.display(),
                        source_name(&first.source)
                    )),
                }
            }
        }
        Ok(scan)
    }
}

/// What a scan skipped, as [`ReloadOutcome`] reports it whatever the reload decides.
#[derive(Default)]
struct Notes {
    ignored: Vec<String>,
    not_policies: Vec<String>,
    cut_off: Vec<PathBuf>,
}

#[derive(Default)]
struct Scan {
    selector: Option<Candidate>,
    allocator: Option<Candidate>,
    refused: Vec<String>,
    notes: Notes,
    /// File name and digest of the modules in the directory that compiled: the compiled-module
    /// cache keeps exactly these (and the active set's). By digest alone, the same bytes under
    /// every name they ever had stayed compiled (a deploy that names files after releases).
    present: Vec<(String, String)>,
    /// File name and digest of the modules in the directory that were refused: their refusals
    /// are remembered, the rest forgotten.
    refused_modules: Vec<(String, String)>,
    /// When the earliest refused module that may load on another try is due.
    retry_at: Option<Instant>,
}

/// How many refused modules are remembered (by name and digest) so they are not compiled again
/// on every reload; a policy directory holds a handful.
const MAX_REMEMBERED_REFUSALS: usize = 1024;

/// Whether `present` (a [`Scan`]'s) lists the module compiled from file `name` with `digest`.
fn listed(present: &[(String, String)], name: &str, digest: &str) -> bool {
    present.iter().any(|(n, d)| n == name && d == digest)
}

/// Whether a dry run's failure may go away with the same files: the `select` and `prefer` calls
/// see the inventory (a device the config names is not there yet, a result invalid for this
/// node), and any call may run out of time or slots on a loaded node. A `validate-settings` call
/// sees only the settings: its answer stands until they change.
fn depends_on_inventory(error: &PolicyCallError) -> bool {
    match error.error.as_ref() {
        CallError::Timeout(_) | CallError::Starved { .. } | CallError::Busy(_) => true,
        _ => !error.call.contains("validate-settings"),
    }
}

fn source_name(source: &PolicySource) -> String {
    match source {
        PolicySource::Embedded => "the embedded default".to_string(),
        PolicySource::File(p) => p.display().to_string(),
    }
}

/// The error and its causes on one line (`a: b: c`), each cause once: many errors name their
/// cause in their own message too, and printing the chain as it is repeated it (`... (os error 2):
/// No such file or directory (os error 2)`). The one formatter of the agent's crates, for log
/// fields, gRPC statuses and the CLI's exit message alike. Escaped and bounded as a policy's own
/// text is ([`crate::validate::bounded_text`], at [`MAX_ERROR_BYTES`]): wasmtime's reasons quote
/// names from inside a module (an import name of 100 KB, holding terminal escapes).
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    // Some causes (wasmparser's) span lines; a log line stays one line.
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    crate::validate::bounded_text(&text, MAX_ERROR_BYTES)
}

/// The longest error text [`error_chain`] gives (the rest cut, marked `…`).
pub const MAX_ERROR_BYTES: usize = 8 << 10;

/// The config file may be at most this large (upstream configs are a few KiB).
pub const MAX_CONFIG_BYTES: u64 = 4 << 20;

fn read_settings(sources: &Sources) -> Result<Settings, String> {
    let config = match &sources.config_file {
        None => String::new(),
        Some(path) => read_config_file(path)?,
    };
    Ok(Settings {
        config,
        default_resource_prefix: sources.default_resource_prefix.clone(),
    })
}

/// Why [`read_regular_file`] read nothing.
#[derive(Debug, thiserror::Error)]
pub enum FileProblem {
    /// A directory, FIFO, socket or device.
    #[error("not a regular file")]
    NotRegular,
    /// More bytes than allowed (as far as it was read).
    #[error("{0} bytes, more than allowed")]
    TooLarge(u64),
    /// Opening or reading failed.
    #[error("cannot read: {0}")]
    Io(io::Error),
}

/// Reads at most `max` bytes of the regular file at `path`. The path is resolved once, into a
/// descriptor that opens nothing (`O_PATH`: a device's driver is not called, a FIFO does not
/// block), and the file is checked through it; only a regular file is then opened for reading,
/// through that descriptor, so what is read is what was checked even if the path is replaced
/// meanwhile. The read stops past `max` even if the file grows. Public so that tools (`vfpool
/// policy check`) read modules exactly as the agent does.
pub fn read_regular_file(path: &Path, max: u64) -> Result<Vec<u8>, FileProblem> {
    use rustix::fs::{Mode, OFlags};
    use std::io::Read as _;
    // Opening a device has effects of its own (a link to /dev/watchdog arms the watchdog), and a
    // terminal would become the agent's: nothing but a regular file is opened. Links are
    // followed (a ConfigMap volume's files are links).
    let located = rustix::fs::open(path, OFlags::PATH | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| FileProblem::Io(e.into()))?;
    let stat = rustix::fs::fstat(&located).map_err(|e| FileProblem::Io(e.into()))?;
    if rustix::fs::FileType::from_raw_mode(stat.st_mode) != rustix::fs::FileType::RegularFile {
        return Err(FileProblem::NotRegular);
    }
    // The descriptor's own `/proc` link reopens that very file, whatever the path names now.
    let reopened = rustix::fs::open(
        format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&located)
        ),
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| {
        // Not "not found": the file is there (a missing /proc would read as a missing file).
        FileProblem::Io(io::Error::other(format!(
            "reopening it through /proc/self/fd (is /proc mounted?): {}",
            io::Error::from(e)
        )))
    })?;
    let file = fs::File::from(reopened);
    let meta = file.metadata().map_err(FileProblem::Io)?;
    // The same inode, still regular (a /proc without this process's descriptors would name
    // something else).
    if !meta.is_file()
        || std::os::unix::fs::MetadataExt::ino(&meta) != stat.st_ino
        || std::os::unix::fs::MetadataExt::dev(&meta) != stat.st_dev
    {
        return Err(FileProblem::NotRegular);
    }
    if meta.len() > max {
        return Err(FileProblem::TooLarge(meta.len()));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(FileProblem::Io)?;
    if bytes.len() as u64 > max {
        return Err(FileProblem::TooLarge(bytes.len() as u64));
    }
    Ok(bytes)
}

/// Reads the config file, refusing what cannot be a finished config: something other than a
/// regular file (a FIFO would block the reload forever), an oversized file, text that is not
/// UTF-8, and an empty file — a writer that truncates and then writes in place, or one that died
/// or ran out of space half-way, leaves one for a moment, and accepting it as "no pools" would stop
/// every pool until the next event.
pub fn read_config_file(path: &Path) -> Result<String, String> {
    let bytes = read_regular_file(path, MAX_CONFIG_BYTES).map_err(|problem| match problem {
        FileProblem::NotRegular => format!(
            "the config file {} is not a regular file; point --config-file at a JSON file",
            path.display()
        ),
        FileProblem::TooLarge(_) => format!(
            "the config file {} is larger than {MAX_CONFIG_BYTES} bytes; not read (a device plugin config is a few kilobytes: is --config-file the right file?)",
            path.display()
        ),
        FileProblem::Io(e) if e.kind() == std::io::ErrorKind::NotFound => format!(
            "cannot read the config file {}: {e}; pass --config-file (VFPOOL_CONFIG_FILE) with the device plugin's config.json, or write {{\"resourceList\": []}} there for no pools",
            path.display()
        ),
        FileProblem::Io(e) => format!(
            "cannot read the config file {}: {e}; check --config-file (VFPOOL_CONFIG_FILE) and the file's permissions",
            path.display()
        ),
    })?;
    let text = String::from_utf8(bytes).map_err(|e| {
        format!(
            "the config file {} is not UTF-8 text (invalid byte at offset {}); save it as UTF-8 JSON",
            path.display(),
            e.utf8_error().valid_up_to()
        )
    })?;
    if text.trim().is_empty() {
        return Err(format!(
            "the config file {} is empty (a write in progress or cut short?); write {{\"resourceList\": []}} for no pools",
            path.display()
        ));
    }
    Ok(text)
}

#[cfg(test)]
mod refusal_tests {
    use super::*;
    use crate::engine::Limits;

    /// A whole component that no engine takes: its core module's one function returns nothing
    /// where its type says `i32`.
    const INVALID_COMPONENT: &[u8] = &[
        0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00, // component preamble
        0x01, 0x19, // core module section, 25 bytes
        0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // core module preamble
        0x01, 0x05, 0x01, 0x60, 0x00, 0x01, 0x7f, // types: () -> i32
        0x03, 0x02, 0x01, 0x00, // one function of type 0
        0x0a, 0x04, 0x01, 0x02, 0x00, 0x0b, // its body: `end`
    ];

    /// A half-written module (the first kilobyte of one) next to the active set is ignored with
    /// a message like a stray file, and changes next to it are taken: it used to refuse the whole
    /// directory (no config change taken while it was there; at start, no pools at all). A
    /// whole one that is refused still refuses the set.
    #[test]
    fn a_half_written_module_is_ignored_unless_it_replaced_an_active_role() {
        let (dir, sources, active, inventory) = setup();
        fs::write(
            dir.path().join("half.wasm"),
            &defaults::UPSTREAM_SELECTOR[..1000],
        )
        .unwrap();
        let first = active.reload(&sources, &inventory);
        assert!(first.changed && first.refused.is_empty(), "{first:?}");
        assert!(
            first.not_policies.iter().any(|n| n.contains("half.wasm")
                && n.contains("not a whole WebAssembly component")),
            "{first:?}"
        );
        assert_eq!(first.cut_off, [dir.path().join("half.wasm")]);
        assert_eq!(
            active.current().unwrap().selector_source,
            PolicySource::Embedded
        );
        assert!(active.pending_retry().is_none());

        fs::write(dir.path().join("huge.wasm"), INVALID_COMPONENT).unwrap();
        let refused = active.reload(&sources, &inventory);
        assert!(
            refused.refused.iter().any(|r| r.contains("huge.wasm")),
            "{refused:?}"
        );
    }

    fn setup() -> (tempfile::TempDir, Sources, ActivePolicies, PolicyInventory) {
        let dir = tempfile::tempdir().unwrap();
        let sources = Sources {
            policy_dir: Some(dir.path().to_path_buf()),
            config_file: None,
            default_resource_prefix: "intel.com".into(),
        };
        let active = ActivePolicies::new(PolicyEngine::new(Limits::default()).unwrap()).unwrap();
        let inventory = PolicyInventory::new(&Default::default(), &Default::default());
        (dir, sources, active, inventory)
    }

    /// [`setup`] with the probe policy as the selector, given `config`.
    fn with_probe(config: &str) -> (tempfile::TempDir, Sources, ActivePolicies, PolicyInventory) {
        let (dir, mut sources, active, inventory) = setup();
        let probe = Path::new(defaults::BUILT_COMPONENTS_DIR).join("probe.wasm");
        fs::copy(probe, dir.path().join("probe.wasm")).unwrap();
        let file = dir.path().join("config.txt");
        fs::write(&file, config).unwrap();
        sources.config_file = Some(file);
        (dir, sources, active, inventory)
    }

    /// What `run` logs at debug and above, as text.
    fn logs_of(run: impl FnOnce()) -> String {
        let buffer = std::sync::Arc::new(Mutex::new(Vec::new()));
        let writer = std::sync::Arc::clone(&buffer);
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || Capture(std::sync::Arc::clone(&writer)))
            .finish();
        tracing::subscriber::with_default(subscriber, run);
        String::from_utf8(buffer.lock().unwrap().clone()).unwrap()
    }

    /// How many lines of `logs` at `level` (`" WARN "`) contain `text`.
    fn said(logs: &str, level: &str, text: &str) -> usize {
        logs.lines()
            .filter(|l| l.contains(level) && l.contains(text))
            .count()
    }

    /// A set refused on the inventory is tried again on every new one; what its validation logs
    /// (upstream-selector's ignored-key warnings) was passed on at its level every time.
    #[test]
    fn a_retried_sets_validation_warnings_are_said_once() {
        let (_dir, sources, active, inventory) = with_probe("probe:validate-warning");
        let logs = logs_of(|| {
            for _ in 0..3 {
                assert!(!active.reload(&sources, &inventory).refused.is_empty());
            }
        });
        assert_eq!(
            said(&logs, " WARN ", "probe validation warning"),
            1,
            "{logs}"
        );
        assert_eq!(
            said(&logs, " DEBUG ", "policy (again): probe validation warning"),
            2,
            "{logs}"
        );
    }

    /// A refused set tried again and refused the same way (on every changed inventory, after
    /// each backoff) is said once at its level, then at debug, with the files that are no policy;
    /// a reload a file change brought, or an operator asked for (SIGHUP), says it again. The same
    /// warning used to come with every try.
    #[test]
    fn a_refusal_repeated_by_a_retry_is_said_once() {
        let (dir, sources, active, inventory) = with_probe("probe:trap");
        fs::write(dir.path().join("notes.wasm"), "not a policy").unwrap();
        fs::write(dir.path().join("README.md"), "how to ship a policy").unwrap();
        let logs = logs_of(|| {
            let outcomes: Vec<_> = (0..3)
                .map(|_| active.reload(&sources, &inventory))
                .collect();
            assert!(!outcomes[0].refused_again && outcomes[1].refused_again);
            crate::watch::log_outcome(&outcomes[0]);
            for retried in &outcomes[1..] {
                assert!(!retried.refused.is_empty(), "{retried:?}");
                crate::watch::log_retried_outcome(retried);
            }
            // The same refusal after a file change, then after SIGHUP: said again.
            crate::watch::log_outcome(&active.reload(&sources, &inventory));
            crate::watch::log_requested_outcome(&active.reload(&sources, &inventory));
        });
        assert_eq!(said(&logs, " ERROR ", "policy set refused"), 3, "{logs}");
        assert_eq!(
            said(&logs, " DEBUG ", "policy reload refused again"),
            2,
            "{logs}"
        );
        assert_eq!(said(&logs, " WARN ", "notes.wasm"), 3, "{logs}");
        assert_eq!(said(&logs, " DEBUG ", "notes.wasm"), 2, "{logs}");
        // A stray file: a note at info each time a reload is asked for, not on every retry.
        assert_eq!(said(&logs, " INFO ", "README.md"), 3, "{logs}");
        assert_eq!(said(&logs, " DEBUG ", "README.md"), 2, "{logs}");
    }

    /// A set refused by its dry run is tried again on a new inventory, but not on every one: a
    /// busy node's inventory changes with every pod, and a try runs the policy (a policy that
    /// times out cost seconds of CPU per pod started). The wait from the refusal starts at 2 s
    /// and doubles with each refusal of the same set.
    #[test]
    fn a_set_refused_by_its_dry_run_waits_before_a_retry_on_a_new_inventory() {
        let (_dir, sources, active, inventory) = with_probe("probe:unknown-device");
        let refused_at = Instant::now();
        assert!(!active.reload(&sources, &inventory).refused.is_empty());
        let retry = active.pending_retry().expect("retried on a new inventory");
        let from = retry.on_inventory_change.expect("on a new inventory");
        assert!(from >= refused_at + Duration::from_secs(2), "{retry:?}");
        assert!(!retry.due(Instant::now(), true), "{retry:?}");
        assert!(retry.due(from, true));
        assert!(!retry.due(from, false));
        assert!(retry.due(retry.at, false));

        let again_at = Instant::now();
        assert!(!active.reload(&sources, &inventory).refused.is_empty());
        let again = active.pending_retry().unwrap();
        assert!(again.on_inventory_change.unwrap() >= again_at + Duration::from_secs(4));
    }

    struct Capture(std::sync::Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Capture {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A file that is not WebAssembly at all is judged in words: the parser's `bad magic number -
    /// expected=[ 0x0, 0x61, ...]` used to follow, and said nothing more.
    #[test]
    fn a_file_that_is_not_webassembly_is_judged_without_the_parsers_details() {
        let (dir, sources, active, inventory) = setup();
        fs::write(dir.path().join("broken.wasm"), "this is not a policy\n").unwrap();
        let outcome = active.reload(&sources, &inventory);
        let reason = outcome
            .not_policies
            .first()
            .expect("ignored with a warning");
        assert!(reason.contains("not WebAssembly at all"), "{reason}");
        assert!(!reason.contains("magic"), "{reason}");
    }

    /// A `.wasm` file that is no policy at all (text, a core module, a component exporting
    /// neither role) is ignored with a message: it used to refuse the whole directory, so an agent
    /// starting next to one served no pools, and no config change was taken while it was there.
    /// One that replaced the file an active role came from is refused instead: the role's module
    /// keeps serving, not the embedded default.
    #[test]
    fn a_file_that_is_no_policy_is_ignored_unless_it_replaced_an_active_role() {
        let (dir, mut sources, active, inventory) = setup();
        fs::write(dir.path().join("notes.wasm"), "not a policy").unwrap();
        fs::write(dir.path().join("core.wasm"), b"\0asm\x01\0\0\0").unwrap();
        let config = dir.path().join("config.json");
        fs::write(&config, r#"{"resourceList":[]}"#).unwrap();
        sources.config_file = Some(config.clone());
        // At start: the defaults serve, and both files are named.
        let first = active.reload(&sources, &inventory);
        assert!(first.changed && first.refused.is_empty(), "{first:?}");
        assert_eq!(active.current().unwrap().what_changed, "first set");
        assert_eq!(first.not_policies.len(), 2, "{:?}", first.not_policies);
        assert!(first.not_policies[0].contains("core.wasm"), "{first:?}");
        assert!(first.not_policies[1].contains("notes.wasm"), "{first:?}");
        // A config change next to them is taken.
        fs::write(
            &config,
            r#"{"resourceList":[{"resourceName":"x","selectors":{"vendors":["15b3"]}}]}"#,
        )
        .unwrap();
        let changed = active.reload(&sources, &inventory);
        assert!(changed.changed, "{changed:?}");
        // Said as a config change in the log, not as a policy swap.
        assert_eq!(active.current().unwrap().what_changed, "config");

        // A selector from a file, then that file overwritten with text: refused, and the selector
        // keeps serving.
        let mine = dir.path().join("mine.wasm");
        fs::write(&mine, defaults::UPSTREAM_SELECTOR).unwrap();
        let accepted = active.reload(&sources, &inventory);
        assert!(accepted.changed, "{accepted:?}");
        let serving = active.current().unwrap();
        assert_eq!(serving.what_changed, "policies");
        assert_eq!(serving.selector_source, PolicySource::File(mine.clone()));
        fs::write(&mine, "oops").unwrap();
        let refused = active.reload(&sources, &inventory);
        assert!(!refused.changed);
        let reason = refused.refused.first().expect("refused");
        assert!(
            reason.contains("mine.wasm")
                && reason.contains("the selector it replaced keeps serving"),
            "{reason}"
        );
        assert_eq!(active.current().unwrap().generation, serving.generation);
        // Removed: the role returns to the embedded default.
        fs::remove_file(&mine).unwrap();
        let back = active.reload(&sources, &inventory);
        assert!(back.changed, "{back:?}");
        assert_eq!(
            active.current().unwrap().selector_source,
            PolicySource::Embedded
        );
    }

    /// A load refused for a reason the agent cannot see (here: remembered as if the compile had
    /// run out of memory) is tried again after SIGHUP (`forget_refusals`): it used to stay
    /// refused, from the cache, until the agent restarted.
    #[test]
    fn a_remembered_load_failure_is_forgotten_on_request() {
        let (dir, sources, active, inventory) = setup();
        let bytes = defaults::UPSTREAM_SELECTOR;
        fs::write(dir.path().join("mine.wasm"), bytes).unwrap();
        let id = PolicyId::of("mine.wasm", bytes);
        active.rejected.lock().unwrap().insert(
            (id.name.clone(), id.sha256.clone()),
            Rejection {
                reason: "simulated: cannot allocate code memory".into(),
                retry_at: None,
                tries: 1,
                not_a_policy: None,
            },
        );
        let refused = active.reload(&sources, &inventory);
        assert!(
            refused.refused.iter().any(|r| r.contains("simulated")),
            "{:?}",
            refused.refused
        );
        active.forget_refusals();
        let accepted = active.reload(&sources, &inventory);
        assert!(accepted.changed, "{:?}", accepted.refused);
        assert_eq!(active.current().unwrap().selector.id().name, "mine.wasm");
    }

    /// A refusal is remembered while its file is there, and forgotten once it is gone: the
    /// memory used to be cleared only when 64 refusals had piled up, files long gone included,
    /// and then every bad module present was compiled again.
    #[test]
    fn a_refusal_is_remembered_only_while_its_file_is_there() {
        let (dir, sources, active, inventory) = setup();
        let junk = dir.path().join("junk.wasm");
        fs::write(&junk, b"not a component").unwrap();
        active.reload(&sources, &inventory);
        let junk_id = PolicyId::of("junk.wasm", b"not a component");
        let remembered = |active: &ActivePolicies| {
            active
                .rejected
                .lock()
                .unwrap()
                .contains_key(&(junk_id.name.clone(), junk_id.sha256.clone()))
        };
        assert!(remembered(&active));
        active.reload(&sources, &inventory);
        assert!(remembered(&active), "still there: still remembered");
        fs::remove_file(&junk).unwrap();
        active.reload(&sources, &inventory);
        assert!(!remembered(&active));
        assert!(active.rejected.lock().unwrap().is_empty());
    }

    /// A component wasmtime refuses is remembered with a retry time (it may have failed for want
    /// of memory) and compiled again once that has passed; bytes that are not a component at all
    /// are remembered for good.
    #[test]
    fn only_refused_components_are_tried_again() {
        let (dir, sources, active, inventory) = setup();
        fs::write(dir.path().join("junk.wasm"), b"not a component").unwrap();
        let ignored = active.reload(&sources, &inventory);
        assert_eq!(ignored.not_policies.len(), 1, "{ignored:?}");
        assert_eq!(active.pending_retry(), None);

        fs::remove_file(dir.path().join("junk.wasm")).unwrap();
        let bytes = defaults::UPSTREAM_SELECTOR;
        fs::write(dir.path().join("mine.wasm"), bytes).unwrap();
        let id = PolicyId::of("mine.wasm", bytes);
        // As a compile that failed earlier, whose backoff has passed.
        active.rejected.lock().unwrap().insert(
            (id.name.clone(), id.sha256.clone()),
            Rejection {
                reason: "simulated".into(),
                retry_at: Some(Instant::now()),
                tries: 1,
                not_a_policy: None,
            },
        );
        let accepted = active.reload(&sources, &inventory);
        assert!(accepted.changed, "{:?}", accepted.refused);

        // A whole component wasmtime refuses: a refusal that may not recur (one beyond the
        // sandbox's limits may load on another try), so it is tried again.
        fs::write(dir.path().join("mine.wasm"), INVALID_COMPONENT).unwrap();
        let refused = active.reload(&sources, &inventory);
        assert!(!refused.refused.is_empty(), "{refused:?}");
        let retry = active
            .pending_retry()
            .expect("a refused component is tried again");
        assert!(retry.on_inventory_change.is_none());
        assert!(retry.at > Instant::now());
    }
}

#[cfg(test)]
mod error_chain_tests {
    use super::error_chain;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot read the sysfs root /x: {source}")]
    struct NamesItsCause {
        #[source]
        source: std::io::Error,
    }

    /// The agent's exit message printed a cause its error had already named (`... (os error 2):
    /// No such file or directory (os error 2)`).
    #[test]
    fn a_cause_already_in_the_message_is_printed_once() {
        let named = NamesItsCause {
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        };
        let cause = named.source.to_string();
        assert_eq!(error_chain(&named).matches(&cause).count(), 1);
        let wrapped = anyhow::Error::new(named).context("discovery failed");
        let text = error_chain(wrapped.as_ref());
        assert!(text.starts_with("discovery failed: cannot read"), "{text}");
        assert_eq!(text.matches(&cause).count(), 1, "{text}");
        // A cause the message does not name is kept; lines are joined.
        let io = anyhow::Error::new(std::io::Error::other("line one\nline two"))
            .context("cannot write to standard output");
        assert_eq!(
            error_chain(io.as_ref()),
            "cannot write to standard output: line one line two"
        );
    }

    /// wasmtime's compile errors quote names from inside a module: an import name holding a
    /// terminal title escape, a bell, a colour code and a right-to-left override reached the
    /// operator's terminal (`vfpool policy check`) and the log as they were, 100 KB of it.
    #[test]
    fn text_from_a_module_is_escaped_and_bounded() {
        let hostile = std::io::Error::other(format!(
            "unknown import `a\u{1b}]0;owned\u{7}b\u{1b}[31mc\u{202e}d{}`",
            "x".repeat(100_000)
        ));
        let text = error_chain(&hostile);
        assert!(
            !text.contains(['\u{1b}', '\u{7}', '\u{202e}']),
            "{:?}",
            &text[..80]
        );
        assert!(
            text.len() <= super::MAX_ERROR_BYTES + '…'.len_utf8(),
            "{}",
            text.len()
        );
        assert!(text.ends_with('…'));
    }
}

#[cfg(test)]
mod config_file_tests {
    use super::*;

    #[test]
    fn what_cannot_be_a_finished_config_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        let refused = |content: &[u8]| {
            fs::write(&path, content).unwrap();
            read_config_file(&path).unwrap_err()
        };
        assert!(refused(b"").contains("is empty"), "{}", refused(b""));
        assert!(refused(b" \n\t").contains("is empty"));
        assert!(refused(b"{\"a\":\xff}").contains("not UTF-8"));
        let big = vec![b' '; usize::try_from(MAX_CONFIG_BYTES).unwrap() + 1];
        assert!(refused(&big).contains("larger than"));
        fs::write(&path, "{\"resourceList\": []}").unwrap();
        assert_eq!(read_config_file(&path).unwrap(), "{\"resourceList\": []}");

        // A FIFO used to block the reload (and with it the agent's start) forever.
        let fifo = dir.path().join("fifo.json");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let err = read_config_file(&fifo).unwrap_err();
        assert!(err.contains("not a regular file"), "{err}");
        // A missing file is the first thing someone trying it by hand meets: the message says
        // which flag to pass.
        let err = read_config_file(&dir.path().join("missing.json")).unwrap_err();
        assert!(
            err.contains("cannot read the config file") && err.contains("--config-file"),
            "{err}"
        );
    }

    /// A FIFO at `path`.
    fn fifo(path: &Path) -> &Path {
        let made = std::process::Command::new("mkfifo")
            .arg(path)
            .status()
            .unwrap();
        assert!(made.success());
        path
    }

    /// Files are checked again through the descriptor they are read from (so what is read is
    /// what was checked), opened without blocking: a FIFO is refused, not waited on. Reads stop
    /// at the limit.
    #[test]
    fn files_are_checked_through_their_descriptor_and_read_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = fifo(&dir.path().join("x.wasm")).to_path_buf();
        assert!(matches!(
            read_regular_file(&fifo, 10),
            Err(FileProblem::NotRegular)
        ));
        assert!(matches!(
            read_regular_file(dir.path(), 10),
            Err(FileProblem::NotRegular)
        ));
        let file = dir.path().join("y.wasm");
        fs::write(&file, [0u8; 11]).unwrap();
        assert!(matches!(
            read_regular_file(&file, 10),
            Err(FileProblem::TooLarge(11))
        ));
        assert_eq!(read_regular_file(&file, 11).unwrap().len(), 11);
    }

    /// What is not a regular file is not even opened (opening a device has effects of its own: a
    /// link to /dev/watchdog arms it). Seen here on a FIFO whose writer waits for a reader: the
    /// open for reading used to let it through.
    #[test]
    fn what_is_not_a_regular_file_is_not_opened() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = fifo(&dir.path().join("x.wasm")).to_path_buf();
        let link = dir.path().join("link.wasm");
        std::os::unix::fs::symlink(&fifo, &link).unwrap();
        let (opened_tx, opened) = std::sync::mpsc::channel();
        let writer_path = fifo.clone();
        let writer = std::thread::spawn(move || {
            // Blocks until someone opens the FIFO for reading.
            let file = fs::OpenOptions::new().write(true).open(&writer_path);
            let _ = opened_tx.send(());
            file
        });
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(matches!(
            read_regular_file(&link, 10),
            Err(FileProblem::NotRegular)
        ));
        assert!(
            opened
                .recv_timeout(std::time::Duration::from_millis(300))
                .is_err(),
            "the FIFO was opened"
        );
        // Let the writer go.
        let reader = fs::File::open(&fifo).unwrap();
        writer.join().unwrap().unwrap();
        drop(reader);
    }
}

/// Everything a running agent does before it accepts a set: both `validate-settings` calls, a
/// `select` dry run on the inventory, and a `prefer` on the first non-empty pool it produced (or,
/// without one, on the inventory's devices).
pub fn exercise(
    selector: &Policy,
    allocator: &Policy,
    settings: &Settings,
    inventory: &PolicyInventory,
) -> Result<Vec<Pool>, PolicyCallError> {
    exercise_again(selector, allocator, settings, inventory, false).map(|(pools, _)| pools)
}

/// [`exercise`], with what `select` logged; `repeated`: the same policies and settings were
/// exercised before, so what they log goes to debug (a refused set is tried again on every new
/// inventory).
fn exercise_again(
    selector: &Policy,
    allocator: &Policy,
    settings: &Settings,
    inventory: &PolicyInventory,
    repeated: bool,
) -> Result<(Vec<Pool>, Vec<LogLine>), PolicyCallError> {
    selector.emit_logs(
        "validate-settings",
        &selector.validate_selector_settings(settings)?,
        repeated,
    );
    allocator.emit_logs(
        "validate-settings",
        &allocator.validate_allocator_settings(settings)?,
        repeated,
    );
    // Its lines too: the devices the host keeps out of pools are said here, where
    // `vfpool pools` and an agent's start see them.
    let selected = selector.select(settings, inventory)?;
    selector.emit_logs("select", &selected, repeated);
    let pools = selected.value;
    exercise_allocator(allocator, settings, inventory, &pools)?;
    Ok((pools, selected.logs))
}

/// Why a candidate set was refused, in the operator's terms: settings a policy calls invalid are
/// the config file's problem, named with the field (they used to read as the policy failing:
/// `policy "builtin:upstream-selector" (sha256:…) selector validate-settings: returned an error:
/// invalid settings: …`, with no file).
fn refusal(error: &PolicyCallError, sources: &Sources) -> String {
    match (error.invalid_settings(), &sources.config_file) {
        (Some((field, message)), Some(path)) => {
            let field = if field.is_empty() {
                String::new()
            } else {
                format!("{field}: ")
            };
            format!(
                "the config file {} is refused: {field}{message} (as {} reads it in {})",
                path.display(),
                error.policy,
                error.call
            )
        }
        _ => error.to_string(),
    }
}

/// A `prefer` call on a sample request, as kubelet asks it: in the first non-empty pool (with
/// none, among every device of the inventory, under the resource name `vfpool.io/dry-run`), two
/// devices (one if only one is available), the first available one as must-include.
pub fn exercise_allocator(
    allocator: &Policy,
    settings: &Settings,
    inventory: &PolicyInventory,
    pools: &[Pool],
) -> Result<Option<Outcome<Vec<String>>>, PolicyCallError> {
    let (name, available): (&str, Vec<String>) = match pools.iter().find(|p| !p.devices.is_empty())
    {
        Some(pool) => (
            &pool.resource_name,
            pool.devices.iter().map(|d| d.id.clone()).collect(),
        ),
        None => (
            "vfpool.io/dry-run",
            inventory.wit.devices.iter().map(|d| d.id.clone()).collect(),
        ),
    };
    if available.is_empty() {
        return Ok(None);
    }
    let size = available.len().min(2) as u32;
    let must = available.first().cloned().into_iter().collect::<Vec<_>>();
    allocator
        .prefer(settings, inventory, name, &available, &must, size)
        .map(Some)
}

/// Why a file in the policy directory is not a policy the agent loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkippedName {
    /// Starts with `.`: the ConfigMap machinery (`..data`, `..2026_11_28...`) and editor swap
    /// files. Skipped without a word.
    Hidden,
    /// Does not end in `.wasm` (a temporary or editor file). Skipped with a message.
    NotWasm,
}

/// Whether the agent skips a policy-directory entry named `name`, and why; `None` means it loads it.
pub fn skipped_policy_name(name: &str) -> Option<SkippedName> {
    if name.starts_with('.') {
        Some(SkippedName::Hidden)
    } else if !name.ends_with(".wasm") {
        Some(SkippedName::NotWasm)
    } else {
        None
    }
}
