//! Hot swap: watches the policy directory and the config file's directory and reloads on change.
//!
//! Directories, not files, are watched: a ConfigMap volume updates by swapping its `..data`
//! symlink, and editors replace files by rename, both of which end an inode watch. Every debounced
//! burst of events that concerns the sources (anything in the policy directory; in the config
//! file's directory only the file and `..` entries) triggers one [`ActivePolicies::reload`], which
//! re-reads everything from the paths (so symlinks are re-resolved) and is a cheap no-op when
//! nothing changed. A set refused for a reason the same files may get past is tried again when
//! the inventory changes or its backoff ends; [`PolicyWatcher::reload_now`] (SIGHUP) forgets
//! remembered refusals and reloads.
//!
//! A directory that does not exist yet (the default `/etc/vfpool/policies` on a node where no
//! operator has created it) is waited for by watching its nearest existing ancestor; one that is
//! removed and created again (`rm -rf` + `mkdir`, a volume remounted) is watched again. After
//! every burst the watches are re-armed from the paths, so hot swap never silently stops.

use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecommendedWatcher, RecursiveMode};
use notify_debouncer_full::{
    DebounceEventResult, DebouncedEvent, Debouncer, RecommendedCache, new_debouncer,
};

use crate::convert::PolicyInventory;
use crate::store::{ActivePolicies, ReloadOutcome, Sources, error_chain};

/// Why watching could not start.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The file-system watcher could not be created.
    #[error("cannot create the file-system watcher")]
    Create(#[source] notify::Error),
    /// A directory could not be watched.
    #[error("cannot watch {path}")]
    Watch {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: notify::Error,
    },
    /// The reload thread could not start.
    #[error("cannot start the policy reload thread")]
    Thread(#[source] std::io::Error),
}

type FsDebouncer = Debouncer<RecommendedWatcher, RecommendedCache>;

/// What wakes the reload thread.
enum Wake {
    /// A debounced burst of file-system events (or the watcher's errors).
    Events(DebounceEventResult),
    /// An explicit request (SIGHUP): forget remembered refusals and reload now.
    Reload,
}

/// The longest interval between looks when the watcher polls (no inotify).
const POLL_INTERVAL_CAP: Duration = Duration::from_secs(2);

/// A running watcher; dropping it stops watching and joins the reload thread.
pub struct PolicyWatcher {
    /// Shared with the reload thread, which re-arms the watches; taken (and so dropped, which
    /// closes the event channel and ends that thread) on drop. `None` from the start when the
    /// watcher polls.
    debouncer: Arc<Mutex<Option<FsDebouncer>>>,
    arming: Arc<Mutex<Arming>>,
    /// Requests to the reload thread; also keeps its channel open while polling (no debouncer
    /// holds a sender then). Taken on drop.
    requests: Option<mpsc::Sender<Wake>>,
    /// No inotify: the files are polled.
    polling: bool,
    /// Tells the reload thread to end at its next wake (within `recheck`).
    stop: Arc<AtomicBool>,
    worker: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for PolicyWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyWatcher")
            .field("watched", &self.watched())
            .finish_non_exhaustive()
    }
}

impl PolicyWatcher {
    /// Watches the policy directory and the config file's directory (or, until they exist, their
    /// nearest existing ancestors) and, after each debounced burst of changes, reloads with the
    /// inventory `inventory()` returns and hands the outcome to `on_reload` (which also logs it).
    /// Looks at the files every `recheck` too (see the module documentation); without inotify,
    /// polls them every `recheck` (at most 2 s).
    ///
    /// A set refused for a reason the same files may get past ([`ActivePolicies::pending_retry`])
    /// is tried again at one of these looks: once its backoff has passed, or, for a refused dry
    /// run, once `inventory()` returns another `Arc` than the one it was refused on. Return the
    /// same `Arc` while the inventory is unchanged (a function returning a fresh inventory each
    /// time makes every look count as a change).
    pub fn spawn<I>(
        active: Arc<ActivePolicies>,
        sources: Sources,
        debounce: Duration,
        recheck: Duration,
        inventory: impl Fn() -> I + Send + 'static,
        mut on_reload: impl FnMut(&ReloadOutcome) + Send + 'static,
    ) -> Result<Self, WatchError>
    where
        I: Into<Arc<PolicyInventory>>,
    {
        let (tx, rx) = mpsc::channel::<Wake>();
        let config_dir = sources.config_file.as_deref().map(|file| {
            match file.parent() {
                Some(dir) if !dir.as_os_str().is_empty() => dir,
                _ => Path::new("."),
            }
            .to_path_buf()
        });
        let mut arming = Arming::new(
            sources.policy_dir.clone(),
            config_dir.zip(
                sources
                    .config_file
                    .as_deref()
                    .and_then(Path::file_name)
                    .map(OsString::from),
            ),
        );
        let events_tx = tx.clone();
        let events = new_debouncer(debounce, None, move |result| {
            // The reload thread gone (the watcher dropped): nothing left to tell.
            let _ = events_tx.send(Wake::Events(result));
        })
        .map_err(WatchError::Create)
        .and_then(|mut debouncer| {
            arming.arm(&mut debouncer)?;
            Ok(debouncer)
        });
        let (debouncer, recheck) = match events {
            Ok(debouncer) => (Some(debouncer), recheck),
            // No inotify (instances or watches used up by other daemons on the node): poll.
            Err(error) => {
                let every = recheck.min(POLL_INTERVAL_CAP);
                tracing::warn!(
                    error = %error_chain(&error),
                    "cannot watch the policy and config directories (fs.inotify.max_user_instances or max_user_watches used up?); polling them every {every:?} instead"
                );
                arming.watching.clear();
                (None, every)
            }
        };
        let polling = debouncer.is_none();
        // Taken here, before the caller's first load can have read the files: a change made
        // meanwhile differs from it.
        let mut seen = fingerprint(&sources);
        // The inventory the caller's first load is taken to have used (the agent hands it the
        // one this returns now): a refusal is tried again once there is another.
        let mut tried_on: Arc<PolicyInventory> = inventory().into();
        let stop = Arc::new(AtomicBool::new(false));
        let worker_stop = Arc::clone(&stop);
        let debouncer = Arc::new(Mutex::new(debouncer));
        let arming = Arc::new(Mutex::new(arming));
        let worker_debouncer = Arc::clone(&debouncer);
        let worker_arming = Arc::clone(&arming);
        let worker = thread::Builder::new()
            .name("vfpool-policy-watch".to_string())
            .spawn(move || {
                let mut looked = Instant::now();
                let mut arm_failure: Option<String> = None;
                loop {
                    // Ends when told to stop, or when every sender is dropped. (Not only the
                    // latter: a debouncer that failed to start its inotify watcher keeps its
                    // thread, and with it a sender, for the life of the process.)
                    let (result, requested) = match rx.recv_timeout(recheck) {
                        Ok(Wake::Events(result)) => (Some(result), false),
                        Ok(Wake::Reload) => (None, true),
                        Err(mpsc::RecvTimeoutError::Timeout) => (None, false),
                        Err(mpsc::RecvTimeoutError::Disconnected) => break,
                    };
                    if worker_stop.load(Ordering::Relaxed) {
                        break;
                    }
                    if requested {
                        active.forget_refusals();
                    }
                    let rearmed = if polling {
                        false
                    } else {
                        let mut guard = worker_debouncer
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner);
                        let Some(debouncer) = guard.as_mut() else {
                            break;
                        };
                        let mut arming =
                            worker_arming.lock().unwrap_or_else(PoisonError::into_inner);
                        after_arming(arming.arm(debouncer), &mut arm_failure, recheck)
                    };
                    let relevant = match &result {
                        // Reading files (our own reload included) produces access events; only
                        // changes count, or every reload would trigger the next. Events in an
                        // ancestor watched while a directory is missing count only on its path.
                        Some(Ok(events)) => {
                            let arming =
                                worker_arming.lock().unwrap_or_else(PoisonError::into_inner);
                            events
                                .iter()
                                .any(|e| is_change(&e.event.kind) && arming.concerns(e))
                        }
                        Some(Err(errors)) => {
                            for error in errors {
                                tracing::warn!(%error, "policy watcher error; reloading anyway");
                            }
                            true
                        }
                        None => false,
                    };
                    // A look every `recheck`, however many events come meanwhile (they need
                    // not concern the wanted paths). Not on every wake: reading the directory
                    // makes access events itself, which must not lead to another look.
                    let look = result.is_none() || looked.elapsed() >= recheck;
                    let mut files_changed = false;
                    let mut retrying = false;
                    let mut current = None;
                    if look {
                        looked = Instant::now();
                        let now = fingerprint(&sources);
                        files_changed = now != seen;
                        seen = now;
                        // A refusal the same files may get past: the devices it named may have
                        // appeared (a new inventory), or memory or time may be there now.
                        if let Some(retry) = active.pending_retry() {
                            let latest: Arc<PolicyInventory> = inventory().into();
                            retrying =
                                retry.due(Instant::now(), !Arc::ptr_eq(&latest, &tried_on));
                            current = Some(latest);
                        }
                    }
                    // Nothing changed but time or the node: what it says again is not news.
                    let retry_only =
                        retrying && !(relevant || files_changed || rearmed || requested);
                    if !(relevant || files_changed || retrying || rearmed || requested) {
                        continue;
                    }
                    if !look {
                        // What this reload reads, so the next look does not reload it again.
                        seen = fingerprint(&sources);
                    }
                    let current = current.unwrap_or_else(|| inventory().into());
                    tried_on = Arc::clone(&current);
                    // A panic here (a bug) must not end hot swap for the agent's lifetime with
                    // nothing said: the reload is abandoned, the active set is untouched.
                    let reloaded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        let outcome = active.reload(&sources, &current);
                        if requested {
                            log_requested_outcome(&outcome);
                        } else if retry_only {
                            log_retried_outcome(&outcome);
                        } else {
                            log_outcome(&outcome);
                        }
                        on_reload(&outcome);
                    }));
                    if reloaded.is_err() {
                        tracing::error!(
                            "policy watcher: a reload panicked (a bug in vfpool); the previous policies keep serving and watching goes on"
                        );
                    }
                }
            })
            .map_err(WatchError::Thread)?;
        Ok(PolicyWatcher {
            debouncer,
            arming,
            stop,
            requests: Some(tx),
            polling,
            worker: Some(worker),
        })
    }

    /// Whether the watcher polls (no inotify) instead of following events.
    pub fn polling(&self) -> bool {
        self.polling
    }

    /// Asks the reload thread to forget remembered refusals ([`ActivePolicies::forget_refusals`])
    /// and reload now, whatever the files look like (SIGHUP); the outcome goes to `on_reload` like
    /// any other. Returns at once; `false` if the reload thread has ended.
    pub fn reload_now(&self) -> bool {
        self.requests
            .as_ref()
            .is_some_and(|tx| tx.send(Wake::Reload).is_ok())
    }

    /// The directories being watched now: the wanted ones that exist, and the nearest existing
    /// ancestor of each that does not.
    pub fn watched(&self) -> Vec<PathBuf> {
        self.arming
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .watching
            .iter()
            .map(|w| w.path.clone())
            .collect()
    }
}

impl PolicyWatcher {
    /// Stops watching without waiting for a reload in progress to finish (dropping waits): for a
    /// process that is exiting, where a module being compiled may take seconds.
    pub fn detach(mut self) {
        if let Some(debouncer) = self.take_debouncer() {
            debouncer.stop_nonblocking();
        }
        self.stop.store(true, Ordering::Relaxed);
        self.requests.take();
        // Dropping the handle detaches the thread; it ends once its reload is done.
        self.worker.take();
    }

    /// The debouncer, taken so that the worker's loop ends (it breaks when it finds none).
    fn take_debouncer(&self) -> Option<FsDebouncer> {
        self.debouncer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

impl Drop for PolicyWatcher {
    fn drop(&mut self) {
        if let Some(debouncer) = self.take_debouncer() {
            debouncer.stop();
        }
        self.stop.store(true, Ordering::Relaxed);
        self.requests.take();
        if let Some(worker) = self.worker.take() {
            // A reload in progress finishes first (bounded by the policy deadlines).
            let _ = worker.join();
        }
    }
}

/// A directory under watch, with the identity it had when the watch was placed: a directory
/// removed and created again at the same path is a new inode that the old watch does not see.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Watched {
    path: PathBuf,
    identity: (u64, u64),
}

/// `dir` if it is an existing directory, else its nearest existing ancestor.
fn nearest_existing(dir: &Path) -> Option<Watched> {
    dir.ancestors().find_map(|candidate| {
        let meta = std::fs::metadata(candidate).ok()?;
        meta.is_dir().then(|| Watched {
            path: candidate.to_path_buf(),
            identity: (meta.dev(), meta.ino()),
        })
    })
}

/// Which directories are wanted and which are watched for them.
#[derive(Debug)]
struct Arming {
    wanted: Vec<PathBuf>,
    watching: Vec<Watched>,
    /// The policy directory: every entry in it matters.
    policy_dir: Option<PathBuf>,
    /// The config file's directory and the file's name: only the file and the ConfigMap
    /// machinery's `..` entries matter there (the directory may be a busy one, `/etc` or a
    /// shared hostPath, whose other files must not make the agent re-read every module).
    config: Option<(PathBuf, OsString)>,
}

impl Arming {
    fn new(policy_dir: Option<PathBuf>, config: Option<(PathBuf, OsString)>) -> Self {
        // Absolute, so that events (reported under the watched path) compare with them even
        // when an ancestor is watched in place of a missing directory.
        let absolute = |dir: PathBuf| std::path::absolute(&dir).unwrap_or(dir);
        let policy_dir = policy_dir.map(absolute);
        let config = config.map(|(dir, name)| (absolute(dir), name));
        let mut wanted: Vec<PathBuf> = policy_dir
            .iter()
            .chain(config.iter().map(|(dir, _)| dir))
            .cloned()
            .collect();
        wanted.sort();
        wanted.dedup();
        Arming {
            wanted,
            watching: Vec::new(),
            policy_dir,
            config,
        }
    }

    /// What should be watched now: each wanted directory if it exists, else its nearest existing
    /// ancestor.
    fn desired(&self) -> Vec<Watched> {
        let mut desired: Vec<Watched> = Vec::new();
        for dir in &self.wanted {
            match nearest_existing(dir) {
                Some(found) if !desired.contains(&found) => desired.push(found),
                Some(_) => {}
                None => {
                    tracing::warn!(path = %dir.display(), "not watching: neither the directory nor any parent exists");
                }
            }
        }
        desired
    }

    /// The wanted directories that `watched`, an existing ancestor, is watched in place of
    /// (none when `watched` is itself wanted).
    fn stood_in_for<'a>(&'a self, watched: &'a Path) -> impl Iterator<Item = &'a Path> + 'a {
        self.wanted
            .iter()
            .filter(move |w| {
                w.as_path() != watched
                    && nearest_existing(w).is_some_and(|found| found.path == watched)
            })
            .map(PathBuf::as_path)
    }

    /// Brings the watches in line with [`Arming::desired`]; whether anything changed (a
    /// directory appeared or was replaced, so its contents must be read again).
    fn arm(&mut self, debouncer: &mut FsDebouncer) -> Result<bool, WatchError> {
        let desired = self.desired();
        let mut changed = false;
        for stale in self.watching.iter().filter(|w| !desired.contains(w)) {
            // A removed directory's watch is already gone; nothing to report then.
            let _ = debouncer.unwatch(&stale.path);
            changed = true;
        }
        self.watching.retain(|w| desired.contains(w));
        for want in desired {
            if self.watching.contains(&want) {
                continue;
            }
            for missing in self.stood_in_for(&want.path) {
                tracing::info!(
                    directory = %missing.display(),
                    watching = %want.path.display(),
                    "a directory to watch does not exist yet; watching its nearest existing parent until it does"
                );
            }
            debouncer
                .watch(&want.path, RecursiveMode::NonRecursive)
                .map_err(|source| WatchError::Watch {
                    path: want.path.clone(),
                    source,
                })?;
            self.watching.push(want);
            changed = true;
        }
        Ok(changed)
    }

    /// Whether an event can concern what is watched: anything inside the policy directory; in the
    /// config file's directory, the file itself or a `..` entry (a ConfigMap's `..data` swap);
    /// or something on the way to a wanted directory (the directory itself, or a missing
    /// component whose creation its ancestor's watch reports).
    fn concerns(&self, event: &DebouncedEvent) -> bool {
        event.paths.is_empty()
            || event.paths.iter().any(|path| {
                self.wanted.iter().any(|dir| dir.starts_with(path))
                    || self
                        .policy_dir
                        .as_ref()
                        .is_some_and(|dir| path.starts_with(dir))
                    || self.config.as_ref().is_some_and(|(dir, name)| {
                        path.parent() == Some(dir.as_path())
                            && path.file_name().is_some_and(|entry| {
                                entry == name.as_os_str()
                                    || entry.as_encoded_bytes().starts_with(b"..")
                            })
                    })
            })
    }
}

/// Size, modification time (seconds, nanoseconds), device and inode of a file.
type FileStamp = (u64, i64, i64, u64, u64);

/// What the watched files look like: for the policy directory's entries and the config file
/// (symlinks followed, so a retargeted one differs), name, size, modification time and inode.
/// Equal fingerprints mean nothing to reload (a file rewritten in place within the same
/// nanosecond at the same size would be missed; its close-after-write event is not).
fn fingerprint(sources: &Sources) -> Vec<(PathBuf, Option<FileStamp>)> {
    let stamp = |path: &Path| {
        std::fs::metadata(path)
            .ok()
            .map(|m| (m.len(), m.mtime(), m.mtime_nsec(), m.dev(), m.ino()))
    };
    let mut seen = Vec::new();
    if let Some(dir) = &sources.policy_dir {
        seen.push((dir.clone(), stamp(dir)));
        if let Ok(entries) = std::fs::read_dir(dir) {
            let mut files: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
            files.sort();
            seen.extend(files.into_iter().map(|file| {
                let stamped = stamp(&file);
                (file, stamped)
            }));
        }
    }
    if let Some(file) = &sources.config_file {
        seen.push((file.clone(), stamp(file)));
    }
    seen
}

/// Whether an event can mean new content: anything but opening or reading a file (a close after
/// writing counts: it is how a writer that does not rename signals the end of its write).
fn is_change(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

/// Whether to reload after arming the watches (`arm`'s result): when the watches changed, and
/// once when arming fails, as a change may have gone unseen. A failure (inotify watches used up)
/// repeats on every wake until it clears: said once while it stays the same, with its end, and not
/// a reload each time — the look at the files every `recheck` still notices changes meanwhile.
fn after_arming(
    arm: Result<bool, WatchError>,
    failure: &mut Option<String>,
    recheck: Duration,
) -> bool {
    match arm {
        Ok(changed) => {
            if failure.take().is_some() {
                tracing::info!("policy watcher: watching again");
            }
            changed
        }
        Err(error) => {
            let text = error_chain(&error);
            if failure.as_deref() == Some(text.as_str()) {
                return false;
            }
            tracing::warn!(
                error = %text,
                "policy watcher: cannot watch; looking at the files every {recheck:?} until it can"
            );
            *failure = Some(text);
            true
        }
    }
}

/// Logs what a reload did: accepted sets at info; refusals at warn (error before any set was
/// accepted); skipped files at info, `.wasm` files that are no policy at warn.
pub fn log_outcome(outcome: &ReloadOutcome) {
    log_outcome_as(outcome, false);
}

/// [`log_outcome`] for a reload that only retried a refused set (no file changed, nobody asked):
/// a refusal the same as the last one, the files that are no policy and the files ignored are
/// said at debug — they stand from the reload that first said them.
pub fn log_retried_outcome(outcome: &ReloadOutcome) {
    log_outcome_as(outcome, true);
}

/// [`log_outcome`]; `retried`: see [`log_retried_outcome`].
fn log_outcome_as(outcome: &ReloadOutcome, retried: bool) {
    for note in &outcome.ignored {
        if retried {
            tracing::debug!("policy directory: ignored {note}");
        } else {
            tracing::info!("policy directory: ignored {note}");
        }
    }
    for note in &outcome.not_policies {
        if retried {
            tracing::debug!("policy directory: {note}");
        } else {
            tracing::warn!("policy directory: {note}");
        }
    }
    for reason in &outcome.refused {
        if outcome.refused_again && retried {
            // A refused set tried again (a changed node, its backoff) and refused the same way:
            // the warning stands from the first time.
            tracing::debug!("policy reload refused again: {reason}");
        } else if outcome.active.is_some() {
            tracing::warn!("policy reload refused, the previous policies keep serving: {reason}");
        } else {
            // At start there is no previous set: nothing serves until this is fixed.
            tracing::error!("policy set refused, and no earlier set to keep serving: {reason}");
        }
    }
    if outcome.recovered
        && !outcome.changed
        && let Some(active) = &outcome.active
    {
        // The refused change was taken back: without a line, the refusal's warning would stay
        // the last word in the log (and in alerts built on it).
        tracing::info!(
            generation = active.generation,
            "policy reload: what was refused is gone; the active policies and config match the files again"
        );
    }
    if outcome.changed
        && let Some(active) = &outcome.active
    {
        tracing::info!(
            generation = active.generation,
            changed = active.what_changed,
            selector = %active.selector.id(),
            allocator = %active.allocator.id(),
            pools = active.pools.len(),
            "policies activated"
        );
    }
}

/// [`log_outcome`] for a reload an operator asked for (SIGHUP): it also says when nothing changed,
/// so every request gets an answer in the log.
pub fn log_requested_outcome(outcome: &ReloadOutcome) {
    log_outcome_as(outcome, false);
    if !outcome.changed
        && outcome.refused.is_empty()
        && !outcome.recovered
        && let Some(active) = &outcome.active
    {
        tracing::info!(
            generation = active.generation,
            "reload: nothing changed; the active policies and config stay"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::{Arming, WatchError, after_arming};
    use std::time::Duration;

    /// Arming that keeps failing (inotify watches used up) was a reload and a warning on every
    /// wake (every 10 s and every burst of events): now one of each, and a line when it works.
    #[test]
    fn a_watch_that_keeps_failing_is_said_and_reloaded_for_once() {
        let failing = || {
            Err(WatchError::Watch {
                path: "/etc/vfpool/policies".into(),
                source: notify::Error::generic("no space left on device"),
            })
        };
        let every = Duration::from_secs(10);
        let mut failure = None;
        assert!(after_arming(failing(), &mut failure, every));
        assert!(!after_arming(failing(), &mut failure, every));
        assert!(!after_arming(failing(), &mut failure, every));
        assert!(!after_arming(Ok(false), &mut failure, every));
        assert!(failure.is_none());
        assert!(after_arming(failing(), &mut failure, every));
        assert!(after_arming(Ok(true), &mut failure, every));
    }

    use std::path::{Path, PathBuf};

    /// The line about waiting for a missing directory named the parent watched in its place,
    /// not the directory (`/etc/vfpool/policies` missing read as "watching /etc").
    #[test]
    fn a_missing_directory_is_named_not_only_the_parent_watched_for_it() {
        let root = tempfile::tempdir().unwrap();
        let policies = root.path().join("vfpool/policies");
        let config_dir = root.path().join("config");
        std::fs::create_dir(&config_dir).unwrap();
        let arming = Arming::new(
            Some(policies.clone()),
            Some((config_dir.clone(), "config.json".into())),
        );
        let desired: Vec<PathBuf> = arming.desired().into_iter().map(|w| w.path).collect();
        let root_path = std::path::absolute(root.path()).unwrap();
        assert!(desired.contains(&root_path), "{desired:?}");
        let missing: Vec<&Path> = arming.stood_in_for(&root_path).collect();
        assert_eq!(missing, [std::path::absolute(&policies).unwrap().as_path()]);
        let config_dir = std::path::absolute(&config_dir).unwrap();
        assert_eq!(arming.stood_in_for(&config_dir).count(), 0);
    }
}
