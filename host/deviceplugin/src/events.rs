//! Kernel events that may change devices or their health, so the agent rescans at once instead of
//! at the next `--rescan-interval` tick: rtnetlink link events (a PF's carrier or operstate
//! changing, netdevs appearing and vanishing) and uevents (PCI functions added or removed when
//! `sriov_numvfs` changes, drivers bound and unbound).
//!
//! The sources are behind [`EventSource`], read each on its own thread by [`KernelEvents`], which
//! turns a burst (a VF count change is hundreds of events) into one rescan. The agent passes the
//! real sources ([`NetlinkSource`]); tests pass fakes.

use std::io;
use std::time::Duration;

use tokio::time::Instant;

use netlink_sys::{Socket, SocketAddr, protocols};
use tokio::sync::mpsc;

/// One kernel notification channel.
pub trait EventSource: Send + 'static {
    /// Its name, for logs.
    fn name(&self) -> &'static str;
    /// Blocks until the kernel reports something. An error ends the source.
    fn wait(&mut self) -> io::Result<()>;
}

/// A netlink multicast subscription: the real [`EventSource`].
#[derive(Debug)]
pub struct NetlinkSource {
    name: &'static str,
    socket: Socket,
}

/// `RTMGRP_LINK`: link created, deleted, or changed (flags, carrier, operstate).
const RTMGRP_LINK: u32 = 1;
/// The kernel's uevent multicast group.
const UEVENT_GROUP: u32 = 1;
/// Linux `ENOBUFS`: a netlink socket's receive buffer overflowed.
const ENOBUFS: i32 = 105;

impl NetlinkSource {
    /// rtnetlink link events of the caller's network namespace.
    pub fn link_events() -> io::Result<Self> {
        Self::open("netlink link events", protocols::NETLINK_ROUTE, RTMGRP_LINK)
    }

    /// Kernel uevents (`NETLINK_KOBJECT_UEVENT`).
    pub fn uevents() -> io::Result<Self> {
        Self::open("uevents", protocols::NETLINK_KOBJECT_UEVENT, UEVENT_GROUP)
    }

    fn open(name: &'static str, protocol: isize, groups: u32) -> io::Result<Self> {
        let mut socket = Socket::new(protocol)?;
        socket.bind(&SocketAddr::new(0, groups))?;
        Ok(NetlinkSource { name, socket })
    }
}

impl EventSource for NetlinkSource {
    fn name(&self) -> &'static str {
        self.name
    }

    fn wait(&mut self) -> io::Result<()> {
        loop {
            match self.socket.recv_from_full() {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // The receive buffer overflowed (a burst larger than it): events were lost, which
                // is itself a reason to rescan.
                Err(e) if e.raw_os_error() == Some(ENOBUFS) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }
}

/// The real sources that could be opened (link events and uevents); one that cannot is logged
/// and left out, and the periodic rescan still covers what it would have reported.
pub fn kernel_sources() -> Vec<Box<dyn EventSource>> {
    let mut sources: Vec<Box<dyn EventSource>> = Vec::new();
    for (name, open) in [
        (
            "netlink link events",
            NetlinkSource::link_events as fn() -> io::Result<NetlinkSource>,
        ),
        ("uevents", NetlinkSource::uevents),
    ] {
        match open() {
            Ok(source) => sources.push(Box::new(source)),
            Err(e) => tracing::warn!(source = name, error = %e, "kernel events: cannot subscribe"),
        }
    }
    sources
}

/// The sources, read on their own threads, as rescan requests.
#[derive(Debug)]
pub struct KernelEvents {
    events: mpsc::UnboundedReceiver<&'static str>,
    debounce: Duration,
    sources: Vec<&'static str>,
    /// Events of the burst being collected, and when it is over.
    pending: usize,
    settled_at: Instant,
}

impl KernelEvents {
    /// Starts a reader thread per source. A burst of events within `debounce` of its first
    /// becomes one rescan.
    pub fn spawn(sources: Vec<Box<dyn EventSource>>, debounce: Duration) -> Self {
        let (tx, events) = mpsc::unbounded_channel();
        let mut names = Vec::new();
        for mut source in sources {
            let name = source.name();
            let tx = tx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("vfpool-{}", name.replace(' ', "-")))
                .spawn(move || {
                    loop {
                        if let Err(e) = source.wait() {
                            tracing::warn!(source = name, error = %e, "kernel events: receive failed; source closed");
                            return;
                        }
                        // The receiver is gone: the agent is stopping.
                        if tx.send(name).is_err() {
                            return;
                        }
                    }
                });
            match spawned {
                Ok(_) => names.push(name),
                Err(e) => {
                    tracing::warn!(source = name, error = %e, "kernel events: cannot start the reader thread");
                }
            }
        }
        KernelEvents {
            events,
            debounce,
            sources: names,
            pending: 0,
            settled_at: Instant::now(),
        }
    }

    /// The sources being read.
    pub fn sources(&self) -> &[&'static str] {
        &self.sources
    }

    /// Waits for an event, lets its burst settle for the debounce time and returns how many
    /// events it held: one rescan for all of them. `None` once every source has ended.
    ///
    /// Cancel-safe (the agent's loop `select!`s on it next to signals and timers): a burst that
    /// started is remembered and reported by the next call.
    pub async fn next_rescan(&mut self) -> Option<usize> {
        if self.pending == 0 {
            self.events.recv().await?;
            self.pending = 1;
            self.settled_at = Instant::now() + self.debounce;
        }
        tokio::time::sleep_until(self.settled_at).await;
        while self.events.try_recv().is_ok() {
            self.pending += 1;
        }
        Some(std::mem::take(&mut self.pending))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A source fed by the test; it records every event it delivered.
    struct Fake {
        name: &'static str,
        feed: std::sync::mpsc::Receiver<io::Result<()>>,
        delivered: Arc<Mutex<usize>>,
    }

    impl EventSource for Fake {
        fn name(&self) -> &'static str {
            self.name
        }

        fn wait(&mut self) -> io::Result<()> {
            let next = self
                .feed
                .recv()
                .unwrap_or_else(|_| Err(io::Error::other("feed closed")));
            if next.is_ok() {
                *self.delivered.lock().unwrap() += 1;
            }
            next
        }
    }

    /// A fake source, the sender feeding it, and its count of delivered events.
    type Fed = (
        Box<dyn EventSource>,
        std::sync::mpsc::Sender<io::Result<()>>,
        Arc<Mutex<usize>>,
    );

    fn fake(name: &'static str) -> Fed {
        let (tx, feed) = std::sync::mpsc::channel();
        let delivered = Arc::new(Mutex::new(0));
        let source = Fake {
            name,
            feed,
            delivered: Arc::clone(&delivered),
        };
        (Box::new(source), tx, delivered)
    }

    #[tokio::test]
    async fn a_burst_is_one_rescan_and_a_later_event_another() {
        let (source, feed, delivered) = fake("fake");
        let mut events = KernelEvents::spawn(vec![source], Duration::from_millis(300));
        assert_eq!(events.sources(), ["fake"]);
        for _ in 0..100 {
            feed.send(Ok(())).unwrap();
        }
        assert_eq!(events.next_rescan().await, Some(100));
        assert_eq!(*delivered.lock().unwrap(), 100);
        // Nothing more is pending: no second rescan for the same burst.
        let quiet = tokio::time::timeout(Duration::from_millis(100), events.next_rescan()).await;
        assert!(quiet.is_err(), "a burst must give exactly one rescan");
        feed.send(Ok(())).unwrap();
        assert_eq!(events.next_rescan().await, Some(1));
    }

    #[tokio::test]
    async fn a_burst_interrupted_by_another_branch_is_still_reported() {
        let (source, feed, _) = fake("fake");
        let mut events = KernelEvents::spawn(vec![source], Duration::from_millis(300));
        feed.send(Ok(())).unwrap();
        // The agent's loop picks another branch while the burst settles: the future is dropped.
        let cut = tokio::time::timeout(Duration::from_millis(100), events.next_rescan()).await;
        assert!(cut.is_err());
        feed.send(Ok(())).unwrap();
        let next = tokio::time::timeout(Duration::from_secs(30), events.next_rescan()).await;
        assert_eq!(next.unwrap(), Some(2));
    }

    #[tokio::test]
    async fn a_failed_source_leaves_the_others_and_all_failed_ends() {
        let (links, link_feed, _) = fake("links");
        let (uevents, uevent_feed, _) = fake("uevents");
        let mut events = KernelEvents::spawn(vec![links, uevents], Duration::from_millis(10));
        link_feed
            .send(Err(io::Error::other("socket closed")))
            .unwrap();
        uevent_feed.send(Ok(())).unwrap();
        assert_eq!(events.next_rescan().await, Some(1));
        drop(uevent_feed);
        let end = tokio::time::timeout(Duration::from_secs(30), events.next_rescan()).await;
        assert_eq!(end.unwrap(), None);
    }

    /// The real sources in a network namespace of their own (needs root): a link added there is a
    /// link event and a uevent.
    #[tokio::test]
    async fn netlink_sources_report_a_new_link() {
        let opened = std::thread::spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
                .expect("unshare(CLONE_NEWNET): the test needs root");
            // The sockets belong to this thread's new namespace (and keep it alive).
            let links = NetlinkSource::link_events().unwrap();
            let uevents = NetlinkSource::uevents().unwrap();
            // A child forked from this thread is in this thread's network namespace.
            let added = std::process::Command::new("ip")
                .args([
                    "link", "add", "vfpdp0", "type", "veth", "peer", "name", "vfpdp1",
                ])
                .status()
                .expect("iproute2 (`ip`) is needed");
            assert!(added.success());
            (links, uevents)
        })
        .join()
        .unwrap();
        let (links, uevents) = opened;
        for source in [Box::new(links) as Box<dyn EventSource>, Box::new(uevents)] {
            let name = source.name();
            let mut events = KernelEvents::spawn(vec![source], Duration::from_millis(10));
            let got = tokio::time::timeout(Duration::from_secs(30), events.next_rescan()).await;
            assert!(
                matches!(got, Ok(Some(n)) if n >= 1),
                "{name}: no event for the new link"
            );
        }
    }
}
