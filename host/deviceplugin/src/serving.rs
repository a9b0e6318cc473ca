//! The serving thread: every pool's supervisor, gRPC server, connections and calls run on one
//! thread of their own, a single-threaded tokio runtime, apart from the agent's runtime.
//!
//! Why one thread: a kubelet call is a few tens of microseconds of work, and on the agent's
//! multi-threaded runtime each one also woke the other worker (hyper spawns a task per HTTP/2
//! stream, and a spawn unparks an idle worker to steal it), which found nothing to do and slept
//! again. On a 2-core node those wake-ups cost about as much as the calls: measured with 16
//! concurrent callers in alternating runs of both builds, Allocate's p99 is 35-50% lower on the
//! one thread and the whole run takes ~8% less CPU (BENCHMARKS.md, 2026-12-07 17:00). The work
//! that is not a few microseconds never runs on it: allocator calls go to the blocking pool
//! (`spawn_blocking`), and the agent's own work (rescans, policy reloads, PodResources queries)
//! stays on the agent's runtime, so a kubelet call never waits in a run queue behind it (they
//! still share the cores).
//!
//! The thread outlives [`ServingThread`] until the tasks spawned on it have finished (a pool's
//! stop removes its socket and device-info files), bounded by [`FINISH_GRACE`]. It logs to the
//! subscriber that was the default where it was started.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// How long the thread waits, once its owner is gone, for the tasks still running on it (pool
/// stops end their connections within a few seconds).
const FINISH_GRACE: Duration = Duration::from_secs(30);
/// How long blocking calls (an allocator call past its deadline) are waited for at the end.
const BLOCKING_GRACE: Duration = Duration::from_secs(2);

/// Why the serving thread could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServingError {
    /// The tokio runtime could not be built (no epoll or timer descriptors left).
    #[error("cannot build the serving runtime")]
    Runtime(#[source] std::io::Error),
    /// The thread could not be spawned.
    #[error("cannot start the serving thread")]
    Thread(#[source] std::io::Error),
}

/// The handle to the serving thread; the thread ends once this is dropped and every task spawned
/// on it ([`ServingThread::spawn`]) has finished.
#[derive(Debug)]
pub(crate) struct ServingThread {
    handle: Handle,
    /// Each spawned task holds a clone until it ends; the thread waits for all to be gone.
    running: mpsc::Sender<()>,
    /// Dropped with this handle: the thread then waits for the tasks and ends.
    _owner: oneshot::Sender<()>,
}

/// Starts a thread running the closure it is given, named `vfpool-serve` ([`std_thread`]); a
/// seam, so a test can make the spawn fail.
type SpawnThread = fn(Box<dyn FnOnce() + Send>) -> std::io::Result<()>;

/// The real [`SpawnThread`].
fn std_thread(body: Box<dyn FnOnce() + Send>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("vfpool-serve".to_string())
        .spawn(body)
        .map(drop)
}

impl ServingThread {
    /// Starts the thread, named `vfpool-serve`.
    pub(crate) fn start() -> Result<Self, ServingError> {
        Self::start_with(std_thread)
    }

    fn start_with(spawn_thread: SpawnThread) -> Result<Self, ServingError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name("vfpool-serve-blocking")
            .build()
            .map_err(ServingError::Runtime)?;
        let handle = runtime.handle().clone();
        // The runtime goes to the thread through a slot the caller keeps too: a spawn that fails
        // drops the closure on this thread, and a runtime dropped here (an async context: the
        // agent starts the plugins from a task) would panic instead of reporting the failure.
        let slot = Arc::new(Mutex::new(Some(runtime)));
        let (running, mut finished) = mpsc::channel::<()>(1);
        let (owner, owner_gone) = oneshot::channel::<()>();
        // The thread logs where its starter's thread logs: the agent's global subscriber, or a
        // test's own (a thread-local default would otherwise not reach it).
        let dispatch = tracing::dispatcher::get_default(tracing::Dispatch::clone);
        let in_thread = Arc::clone(&slot);
        let spawned = spawn_thread(Box::new(move || {
            let Some(runtime) = in_thread
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take()
            else {
                return;
            };
            let _logs = tracing::dispatcher::set_default(&dispatch);
            runtime.block_on(async move {
                // Ok or Err: either way the owner is gone.
                let _ = owner_gone.await;
                // `recv` answers `None` once every task's sender is dropped. Nothing is ever
                // sent: the channel only counts its senders.
                if tokio::time::timeout(FINISH_GRACE, finished.recv())
                    .await
                    .is_err()
                {
                    tracing::warn!(
                        grace_s = FINISH_GRACE.as_secs(),
                        "device-plugin tasks still running after the grace; ending them"
                    );
                }
            });
            runtime.shutdown_timeout(BLOCKING_GRACE);
        }));
        if let Err(e) = spawned {
            if let Some(runtime) = slot.lock().unwrap_or_else(PoisonError::into_inner).take() {
                // Nothing runs on it yet; this does not block.
                runtime.shutdown_background();
            }
            return Err(ServingError::Thread(e));
        }
        Ok(ServingThread {
            handle,
            running,
            _owner: owner,
        })
    }

    /// Runs `task` on the serving thread.
    pub(crate) fn spawn<F>(&self, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let running = self.running.clone();
        self.handle.spawn(async move {
            let output = task.await;
            drop(running);
            output
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    /// Tasks run on the one named thread, not on the caller's runtime.
    #[tokio::test]
    async fn tasks_run_on_the_serving_thread() {
        let serving = ServingThread::start().unwrap();
        let name = serving
            .spawn(async { std::thread::current().name().map(str::to_string) })
            .await
            .unwrap();
        assert_eq!(name.as_deref(), Some("vfpool-serve"));
        // Tasks they spawn run there too (hyper's per-stream tasks).
        let nested = serving
            .spawn(async {
                tokio::spawn(async { std::thread::current().name().map(str::to_string) })
                    .await
                    .unwrap()
            })
            .await
            .unwrap();
        assert_eq!(nested.as_deref(), Some("vfpool-serve"));
    }

    /// A thread that cannot be spawned (pids limit, RLIMIT_NPROC) is an error for the agent to
    /// report, also when the plugins are started from a task: the runtime the thread would have
    /// run was dropped in that async context, and tokio panicked.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_thread_that_cannot_start_is_an_error_not_a_panic() {
        fn no_threads(_: Box<dyn FnOnce() + Send>) -> std::io::Result<()> {
            Err(std::io::Error::from(nix::errno::Errno::EAGAIN))
        }
        let error = ServingThread::start_with(no_threads).unwrap_err();
        assert!(matches!(error, ServingError::Thread(_)), "{error:?}");
    }

    /// Dropping the handle does not cut a running task short: a pool's stop, under way when the
    /// plugins are dropped, still removes its socket.
    #[test]
    fn a_task_under_way_finishes_after_the_handle_is_dropped() {
        let serving = ServingThread::start().unwrap();
        let done = Arc::new(AtomicBool::new(false));
        let (started_tx, started) = std::sync::mpsc::channel();
        let task = serving.spawn({
            let done = Arc::clone(&done);
            async move {
                let _ = started_tx.send(());
                tokio::time::sleep(Duration::from_millis(200)).await;
                done.store(true, Ordering::SeqCst);
            }
        });
        started.recv().unwrap();
        drop(serving);
        drop(task);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !done.load(Ordering::SeqCst) {
            assert!(
                std::time::Instant::now() < deadline,
                "the task was dropped with the handle"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
