//! Network namespace handles and running code inside one.
//!
//! `setns(2)` and `unshare(CLONE_NEWNET)` change the namespace of the calling *thread* only, so
//! every switch happens on a dedicated, short-lived thread and the main thread never leaves the
//! host namespace (the IPAM plugin we fork inherits the main thread's namespace).

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
