//! Network namespace handles and running code inside one.
//!
//! `setns(2)` and `unshare(CLONE_NEWNET)` change the namespace of the calling *thread* only, so
//! every switch happens on a dedicated thread — short-lived ([`run_in`], [`run_in_new`]) or parked
//! in the namespace for the life of a handle ([`Resident`]) — and the main thread never leaves
//! the host namespace (the IPAM plugin we fork inherits the main thread's namespace).

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use nix::sched::CloneFlags;
use nix::sys::statfs::{NSFS_MAGIC, fstatfs};

use crate::netlink::NetlinkError;

/// Opens a network namespace file and checks that it is one (an nsfs inode).
pub fn open(path: &Path) -> Result<OwnedFd, NetlinkError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(NetlinkError::NetnsNotFound {
                path: path.to_owned(),
            });
        }
        Err(source) => {
            return Err(NetlinkError::Netns {
                what: format!("open network namespace {}", path.display()),
                source,
            });
        }
    };
    let fs = fstatfs(&file).map_err(|e| NetlinkError::Netns {
        what: format!("statfs {}", path.display()),
        source: e.into(),
    })?;
    if fs.filesystem_type() != NSFS_MAGIC {
        return Err(NetlinkError::NotANetns {
            path: path.to_owned(),
        });
    }
    Ok(OwnedFd::from(file))
}

/// Whether two namespace descriptors are the same namespace (the same nsfs inode).
pub fn same(a: BorrowedFd<'_>, b: BorrowedFd<'_>) -> Result<bool, NetlinkError> {
    use std::os::unix::fs::MetadataExt as _;
    let identity = |fd: BorrowedFd<'_>| {
        fd.try_clone_to_owned()
            .map(File::from)
            .and_then(|f| f.metadata())
            .map(|m| (m.dev(), m.ino()))
            .map_err(|source| NetlinkError::Netns {
                what: "stat a network namespace".into(),
                source,
            })
    };
    Ok(identity(a)? == identity(b)?)
}

/// True when `path` is a live network namespace.
pub fn exists(path: &Path) -> bool {
    open(path).is_ok()
}

/// The calling thread's network namespace.
pub fn current() -> Result<OwnedFd, NetlinkError> {
    File::open("/proc/thread-self/ns/net")
        .map(OwnedFd::from)
        .map_err(|source| NetlinkError::Netns {
            what: "open /proc/thread-self/ns/net".into(),
            source,
        })
}

/// A helper thread: small stack (it only makes a few syscalls), named for debuggers.
fn helper() -> std::thread::Builder {
    std::thread::Builder::new()
        .name("netns".into())
        .stack_size(256 * 1024)
}

/// Runs `f` on a new thread that has entered the namespace `ns`.
pub fn run_in<T: Send>(
    ns: BorrowedFd<'_>,
    f: impl FnOnce() -> T + Send,
) -> Result<T, NetlinkError> {
    std::thread::scope(|scope| {
        let handle = helper().spawn_scoped(scope, move || {
            nix::sched::setns(ns.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|e| {
                NetlinkError::Netns {
                    what: "enter a network namespace (setns)".into(),
                    source: e.into(),
                }
            })?;
            Ok(f())
        });
        let handle = handle.map_err(|source| NetlinkError::Netns {
            what: "start a thread to enter a network namespace".into(),
            source,
        })?;
        handle.join().unwrap_or_else(|_| {
            Err(NetlinkError::Netns {
                what: "run a task in a network namespace: the thread panicked".into(),
                source: io::Error::other("thread panicked"),
            })
        })
    })
}

/// Runs `f` on a new thread inside a brand-new network namespace, and returns a handle to that
/// namespace with `f`'s result. The namespace lives as long as the handle (or anything `f` created
/// in it, such as a socket).
pub fn run_in_new<T: Send>(f: impl FnOnce() -> T + Send) -> Result<(OwnedFd, T), NetlinkError> {
    std::thread::scope(|scope| {
        let handle = helper().spawn_scoped(scope, move || {
            nix::sched::unshare(CloneFlags::CLONE_NEWNET).map_err(|e| NetlinkError::Netns {
                what: "create a temporary network namespace (unshare)".into(),
                source: e.into(),
            })?;
            let fd = current()?;
            Ok((fd, f()))
        });
        let handle = handle.map_err(|source| NetlinkError::Netns {
            what: "start a thread to create a network namespace".into(),
            source,
        })?;
        handle.join().unwrap_or_else(|_| {
            Err(NetlinkError::Netns {
                what: "create a temporary network namespace: the thread panicked".into(),
                source: io::Error::other("thread panicked"),
            })
        })
    })
}

type Job = Box<dyn FnOnce() + Send>;

/// A thread that stays inside one network namespace and runs jobs there, so repeated work in a
/// namespace (a netlink socket, then sysctls) pays for one thread and one `setns` only. The
/// thread ends when the `Resident` is dropped.
pub struct Resident {
    jobs: Option<std::sync::mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Resident {
    /// Starts a thread inside the namespace `ns`.
    pub fn enter(ns: BorrowedFd<'_>) -> Result<Resident, NetlinkError> {
        let ns = ns
            .try_clone_to_owned()
            .map_err(|source| NetlinkError::Netns {
                what: "duplicate a network namespace handle".into(),
                source,
            })?;
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let (ready_tx, ready) = std::sync::mpsc::channel();
        let thread = helper()
            .spawn(move || {
                let entered = nix::sched::setns(&ns, CloneFlags::CLONE_NEWNET);
                let ok = entered.is_ok();
                // The receiver only goes away if `enter` already returned.
                let _ = ready_tx.send(entered);
                if ok {
                    for job in queue {
                        job();
                    }
                }
            })
            .map_err(|source| NetlinkError::Netns {
                what: "start a thread to enter a network namespace".into(),
                source,
            })?;
        let entered = ready.recv().map_err(|_| NetlinkError::Netns {
            what: "enter a network namespace: the thread died".into(),
            source: io::Error::other("thread died"),
        })?;
        let mut resident = Resident {
            jobs: Some(jobs),
            thread: Some(thread),
        };
        if let Err(e) = entered {
            resident.stop();
            return Err(NetlinkError::Netns {
                what: "enter a network namespace (setns)".into(),
                source: e.into(),
            });
        }
        Ok(resident)
    }

    /// Runs `f` inside the namespace and returns its result.
    pub fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, NetlinkError> {
        let gone = || NetlinkError::Netns {
            what: "run a task in a network namespace: its thread is gone".into(),
            source: io::Error::other("thread gone"),
        };
        let (tx, rx) = std::sync::mpsc::channel();
        let jobs = self.jobs.as_ref().ok_or_else(gone)?;
        jobs.send(Box::new(move || {
            let _ = tx.send(f());
        }))
        .map_err(|_| gone())?;
        rx.recv().map_err(|_| gone())
    }

    fn stop(&mut self) {
        self.jobs.take();
        if let Some(thread) = self.thread.take() {
            // A job that panicked has already reported through its channel.
            let _ = thread.join();
        }
    }
}

impl Drop for Resident {
    fn drop(&mut self) {
        self.stop();
    }
}

impl std::fmt::Debug for Resident {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Resident")
    }
}
