//! Hot swap: watches the policy directory and the config file's directory and reloads on change.
//!
//! Directories, not files, are watched: a ConfigMap volume updates by swapping its `..data`
//! symlink, and editors replace files by rename, both of which end an inode watch. Every debounced
//! burst of events triggers one [`ActivePolicies::reload`], which re-reads everything from the
//! paths (so symlinks are re-resolved) and is a cheap no-op when nothing changed.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecommendedWatcher, RecursiveMode};
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};

use crate::convert::PolicyInventory;
use crate::store::{ActivePolicies, ReloadOutcome, Sources};

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

/// A running watcher; dropping it stops watching and joins the reload thread.
pub struct PolicyWatcher {
    debouncer: Option<Debouncer<RecommendedWatcher, RecommendedCache>>,
    worker: Option<JoinHandle<()>>,
    watched: Vec<PathBuf>,
}

impl std::fmt::Debug for PolicyWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyWatcher")
            .field("watched", &self.watched)
            .finish_non_exhaustive()
    }
}

impl PolicyWatcher {
    /// Watches the policy directory and the config file's directory (those that exist) and, after
    /// each debounced burst of changes, reloads with the inventory `inventory()` returns and hands
    /// the outcome to `on_reload` (which also logs it).
    pub fn spawn(
        active: Arc<ActivePolicies>,
        sources: Sources,
        debounce: Duration,
        inventory: impl Fn() -> PolicyInventory + Send + 'static,
        mut on_reload: impl FnMut(&ReloadOutcome) + Send + 'static,
    ) -> Result<Self, WatchError> {
        let (tx, rx) = mpsc::channel::<DebounceEventResult>();
        let mut debouncer = new_debouncer(debounce, None, tx).map_err(WatchError::Create)?;
        let mut watched = Vec::new();
        let config_dir = sources
            .config_file
            .as_deref()
            .and_then(Path::parent)
            .map(|p| {
                if p.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    p
                }
            });
        for dir in [sources.policy_dir.as_deref(), config_dir]
            .into_iter()
            .flatten()
        {
            if watched.iter().any(|w: &PathBuf| w == dir) {
                continue;
            }
            if !dir.is_dir() {
                tracing::warn!(path = %dir.display(), "not watching: the directory does not exist");
                continue;
            }
            debouncer
                .watch(dir, RecursiveMode::NonRecursive)
                .map_err(|source| WatchError::Watch {
                    path: dir.to_path_buf(),
                    source,
                })?;
            watched.push(dir.to_path_buf());
        }
        let worker = thread::Builder::new()
            .name("vfpool-policy-watch".to_string())
            .spawn(move || {
                // Ends when the debouncer (the sender) is dropped.
                for result in rx {
                    match result {
                        // Reading files (our own reload included) produces access events; only
                        // changes count, or every reload would trigger the next.
                        Ok(events) if !events.iter().any(|e| is_change(&e.event.kind)) => continue,
                        Ok(_) => {}
                        Err(errors) => {
                            for error in errors {
                                tracing::warn!(%error, "policy watcher error; reloading anyway");
                            }
                        }
                    }
                    let outcome = active.reload(&sources, &inventory());
                    log_outcome(&outcome);
                    on_reload(&outcome);
                }
            })
            .map_err(WatchError::Thread)?;
        Ok(PolicyWatcher {
            debouncer: Some(debouncer),
            worker: Some(worker),
            watched,
        })
    }

    /// The directories being watched.
    pub fn watched(&self) -> &[PathBuf] {
        &self.watched
    }
}

impl Drop for PolicyWatcher {
    fn drop(&mut self) {
        if let Some(debouncer) = self.debouncer.take() {
            debouncer.stop();
        }
        if let Some(worker) = self.worker.take() {
            // A reload in progress finishes first (bounded by the policy deadlines).
            let _ = worker.join();
        }
    }
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

/// Logs what a reload did: accepted sets at info, refusals at warn, ignored files at info.
pub fn log_outcome(outcome: &ReloadOutcome) {
    for note in &outcome.ignored {
        tracing::info!("policy directory: ignored {note}");
    }
    for reason in &outcome.refused {
        tracing::warn!("policy reload refused, the previous policies keep serving: {reason}");
    }
    if outcome.changed
        && let Some(active) = &outcome.active
    {
        tracing::info!(
            generation = active.generation,
            selector = %active.selector.id(),
            allocator = %active.allocator.id(),
            pools = active.pools.len(),
            "policies activated"
        );
    }
}
